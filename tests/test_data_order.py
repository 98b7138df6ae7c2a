"""The prompt order (``data/order.step_batch``): what resumed runs and the benchmark rely on."""
from __future__ import annotations

from critic_free_rl.data.order import step_batch


def test_each_epoch_visits_every_prompt_once_and_ranks_split_the_global_batch() -> None:
    """Catches an epoch that repeats or skips prompts, a batch that straddles epochs wrongly,
    ranks whose shards overlap or drop prompts, and an order that is not a function of the seed."""
    examples = list(range(10))
    steps = [step_batch(examples, 4, seed=3, step=s) for s in range(5)]  # 20 prompts: two epochs
    flat = [x for batch in steps for x in batch]
    assert sorted(flat[:10]) == examples and sorted(flat[10:]) == examples
    assert flat[:10] != flat[10:]  # each epoch has its own permutation
    assert flat[:10] != examples  # shuffled at all
    for s, batch in enumerate(steps):
        shards = [step_batch(examples, 4, seed=3, step=s, rank=r, world_size=2) for r in range(2)]
        assert shards == [batch[0::2], batch[1::2]]
    assert step_batch(examples, 4, seed=3, step=2) == steps[2]
    assert step_batch(examples, 4, seed=4, step=0) != steps[0]
