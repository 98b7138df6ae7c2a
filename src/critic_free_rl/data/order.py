"""The order in which training prompts are drawn: seeded permutations, one per epoch."""
from __future__ import annotations

import random
from typing import Sequence, TypeVar

T = TypeVar("T")


def step_batch(examples: Sequence[T], prompts_per_step: int, seed: int, step: int, rank: int = 0, world_size: int = 1) -> list[T]:
    """The global batch of step ``step`` (the same on every rank), then rank ``rank``'s shard
    (every ``world_size``-th prompt). Epoch ``e`` visits ``examples`` in the permutation seeded
    by ``seed * 7919 + e``, so the batch of a step depends only on the arguments: a resumed
    run, or a benchmark, sees the prompts the original run saw."""
    n = len(examples)
    start = step * prompts_per_step
    out = []
    for pos in range(start, start + prompts_per_step):
        epoch, i = divmod(pos, n)
        perm = random.Random(seed * 7919 + epoch).sample(range(n), n)
        out.append(examples[perm[i]])
    return out[rank::world_size]
