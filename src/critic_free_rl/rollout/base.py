"""What every rollout engine returns, and the interface the trainer drives.

An engine samples ``n`` completions per prompt in one call and can take new policy
weights in place after each optimizer step (no restart, no disk round trip).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional, Protocol

import torch


@dataclass
class Completion:
    """One sampled continuation: token ids, text, per-token sampling log-probs (or None)
    and whether it stopped on EOS (False = truncated at the token budget)."""

    token_ids: list[int]
    text: str
    logprobs: Optional[list[float]]
    finished: bool


@dataclass
class SamplingSpec:
    n: int = 1
    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    ignore_eos: bool = False
    seed: Optional[int] = None
    #: return each sampled token's log-prob (:attr:`Completion.logprobs`; None otherwise)
    logprobs: bool = False

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


class RolloutEngine(Protocol):
    def generate(self, prompts: list[str], spec: SamplingSpec) -> list[list[Completion]]:
        """``len(prompts)`` lists of ``spec.n`` completions each."""

    def sync_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Load the policy's current (full, HF-named) weights into the engine in place."""

    def release_memory(self) -> None:
        """Free what the engine holds between calls (its KV cache) until the next ``generate``."""

    def close(self) -> None: ...


@dataclass
class RolloutBatch:
    """G completions for each of P prompts, flattened to B = P * G samples.

    ``group_ids`` [B] long identifies the prompt of each sample; ``uids`` name each
    sample (``<example uid>#<k>``) for logs of skipped or non-finite samples.
    """

    prompts: list[str]
    prompt_ids: list[list[int]]
    response_ids: list[list[int]]
    responses: list[str]
    references: list[str]
    uids: list[str]
    group_ids: torch.Tensor
    sample_logprobs: Optional[list[list[float]]]
    finished: list[bool]

    def __len__(self) -> int:
        return len(self.responses)


def flatten_groups(examples: list, groups: list[list[Completion]], prompt_ids: list[list[int]], group_offset: int = 0) -> RolloutBatch:
    """Turn per-prompt completion groups into one flat :class:`RolloutBatch`."""
    b = RolloutBatch([], [], [], [], [], [], torch.empty(0, dtype=torch.long), [], [])
    gid: list[int] = []
    for g, (ex, comps, pids) in enumerate(zip(examples, groups, prompt_ids)):
        for k, c in enumerate(comps):
            b.prompts.append(ex.prompt)
            b.prompt_ids.append(pids)
            b.response_ids.append(list(c.token_ids))
            b.responses.append(c.text)
            b.references.append(ex.reference)
            b.uids.append(f"{ex.uid}#{k}")
            b.finished.append(c.finished)
            b.sample_logprobs.append(c.logprobs)
            gid.append(group_offset + g)
    b.group_ids = torch.tensor(gid, dtype=torch.long)
    if any(lp is None for lp in b.sample_logprobs):
        b.sample_logprobs = None
    return b
