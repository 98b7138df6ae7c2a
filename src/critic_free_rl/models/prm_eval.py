"""The held-out measure of a step scorer on the embedded task: first-error AUC.

Over solutions of held-out problems (:func:`~critic_free_rl.data.arithmetic_steps.first_error_solutions`:
the gold solution and one per first-error kind, cut after the mistake), the scores of
every step that is correct so far (label 1) form one pool and the scores of every first
wrong step (label 0) the other; steps after the first error are left out. The figure is
the AUC of the two pools, the probability that a random good step scores above a random
first wrong step (ties count half): overall, and per kind against the first wrong steps
of that kind only.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import torch

from critic_free_rl.data.arithmetic_steps import FIRST_ERROR_KINDS, LabelledSolution


def auc(positives: list[float], negatives: list[float]) -> float:
    """``P(p > n) + P(p == n) / 2`` over all pairs (Mann-Whitney); NaN when a pool is empty."""
    if not positives or not negatives:
        return float("nan")
    p, n = torch.tensor(positives, dtype=torch.float64), torch.tensor(negatives, dtype=torch.float64)
    greater = sum(int((p[i:i + 1024, None] > n[None]).sum()) for i in range(0, len(p), 1024))
    ties = sum(int((p[i:i + 1024, None] == n[None]).sum()) for i in range(0, len(p), 1024))
    return (greater + 0.5 * ties) / (len(p) * len(n))


def first_error_auc(data: list[LabelledSolution], scores: list[list[float]]) -> dict[str, Any]:
    """The module docstring's AUCs of per-step ``scores`` (one list per solution of ``data``).

    Returns ``{"auc": overall, "auc_by_kind": {kind: auc}, "n_good": ..., "n_first_error": {kind: n}}``.
    """
    good: list[float] = []
    bad: dict[str, list[float]] = defaultdict(list)
    for d, sample in zip(data, scores):
        if len(sample) != len(d.steps):
            raise ValueError(f"{len(sample)} scores for {len(d.steps)} steps")
        for score, cat in zip(sample, d.categories):
            if cat.startswith("good:"):
                good.append(score)
            elif cat.startswith("first_error:"):
                bad[cat.removeprefix("first_error:")].append(score)
    pooled = [x for kind in bad for x in bad[kind]]
    return {
        "auc": auc(good, pooled),
        "auc_by_kind": {kind: auc(good, bad[kind]) for kind in FIRST_ERROR_KINDS},
        "n_good": len(good),
        "n_first_error": {kind: len(bad[kind]) for kind in sorted(bad)},
    }


def evaluate_step_scorer(score: Callable[[list[str], list[list[str]]], list[list[float]]],
                         data: list[LabelledSolution]) -> dict[str, Any]:
    """:func:`first_error_auc` of ``score(prompts, steps)`` on ``data``, plus step accuracy at 0.5."""
    scores = score([d.prompt for d in data], [d.steps for d in data])
    out = first_error_auc(data, scores)
    hits = [(s >= 0.5) == y for d, sample in zip(data, scores) for s, y, c in zip(sample, d.labels, d.categories)
            if c != "after_error"]
    out["step_accuracy"] = sum(hits) / max(1, len(hits))
    return out


def evaluate_prm(model_dir: str | Path, data: list[LabelledSolution], separator: str, device: str = "auto",
                 batch_size: int = 128) -> dict[str, Any]:
    """:func:`evaluate_step_scorer` of the token_cls PRM in ``model_dir``, read through
    :meth:`~critic_free_rl.rewards.prm.ProcessRewardModel.score` as the reward pipeline reads it."""
    from critic_free_rl.rewards.prm import ProcessRewardModel

    prm = ProcessRewardModel(str(model_dir), "token_cls", separator, device=device, batch_size=batch_size)
    return evaluate_step_scorer(prm.score, data)


def format_auc(report: dict[str, Any]) -> str:
    """One line of the figures, as ``critic-free-rl train-prm`` prints them."""
    kinds = ", ".join(f"{k} {v:.3f}" for k, v in report["auc_by_kind"].items())
    return (f"first-error AUC {report['auc']:.3f} (by kind: {kinds}; {report['n_good']} good steps, "
            f"{sum(report['n_first_error'].values())} first wrong steps)")
