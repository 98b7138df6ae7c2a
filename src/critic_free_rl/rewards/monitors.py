"""Reward-hacking monitors logged with every scored batch.

The hack the paper reports is a policy padding its responses with repeated, plausible
steps to collect more PRM reward. These metrics make it visible:

- ``reward/steps_per_response``: mean number of steps.
- ``reward/repeated_step_frac``: over all steps of the batch, the share that is an exact
  copy of an earlier step of the same response.
- ``reward/repeated_step_frac_norm``: the same after :func:`normalise_step` (case,
  whitespace, ``$`` and a leading ``Step k:`` label dropped). Digits are kept on
  purpose: ``34 + 4 = 38`` and ``12 + 5 = 17`` are different steps of a legitimate
  chain, whereas digit-blind matching would flag every arithmetic solution.
- ``reward/prm_mean``: mean PRM score over all steps; ``reward/prm_min``: mean over
  responses (with steps) of the response's lowest step score. Both absent without PRM.

With a shape (:func:`shape_metrics`), whichever it is:

- ``reward/shaped_return``: mean over responses of the shaped return from step 1,
  ``R_1 = sum_k s_k`` (``dense_coef`` not applied).
- ``reward/shaped_return_len_corr``: Pearson correlation over the batch between a
  response's number of steps and its ``R_1`` (0 when either is constant). Rising towards
  1 means longer responses collect more step reward, the hack's signature; a bounded shape
  keeps it from paying off.
- ``reward/prm_below_eta_frac`` (shapes that need ``eta``): share of steps scored below
  ``reward.clip_eta``, i.e. that Clip penalises.
- ``reward/prm_prompt_mean`` (shapes that need the prompt score): mean ``r_0``.

With the overlong penalty on (:func:`overlong_metrics`): ``reward/overlong_frac``, the
share of responses inside the penalty zone, and ``reward/overlong_penalty_mean``.
"""
from __future__ import annotations

import re
from typing import Optional

_STEP_LABEL = re.compile(r"^step\s*\d+\s*[:.]", re.IGNORECASE)
_IGNORED = re.compile(r"[\s$]+")


def normalise_step(text: str) -> str:
    """``"Step 3:  34+4 = 38."`` -> ``"34+4=38"``: lower case, no label, no space or ``$``."""
    return _IGNORED.sub("", _STEP_LABEL.sub("", text.strip())).lower().rstrip(".,;")


def repeated_step_fraction(steps: list[list[str]], normalise: bool = False) -> float:
    """Share of all steps that repeat an earlier step of their own response (0 without steps)."""
    repeats = total = 0
    for sample in steps:
        keys = [normalise_step(s) for s in sample] if normalise else sample
        repeats += len(keys) - len(set(keys))
        total += len(keys)
    return repeats / total if total else 0.0


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def step_metrics(steps: list[list[str]], prm_scores: Optional[list[list[float]]]) -> dict[str, float]:
    """The step-level monitors above for one batch."""
    metrics = {
        "reward/steps_per_response": _mean([float(len(s)) for s in steps]),
        "reward/repeated_step_frac": repeated_step_fraction(steps),
        "reward/repeated_step_frac_norm": repeated_step_fraction(steps, normalise=True),
    }
    if prm_scores is not None:
        metrics["reward/prm_mean"] = _mean([x for sample in prm_scores for x in sample])
        metrics["reward/prm_min"] = _mean([min(sample) for sample in prm_scores if sample])
    return metrics


def _correlation(x: list[float], y: list[float]) -> float:
    """Pearson correlation of two equally long lists (0 when either is constant)."""
    n = len(x)
    mx, my = _mean(x), _mean(y)
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx, syy = sum((a - mx) ** 2 for a in x), sum((b - my) ** 2 for b in y)
    return sxy / (sxx * syy) ** 0.5 if n > 1 and sxx > 0 and syy > 0 else 0.0


def shape_metrics(shaped: list[list[float]], prm_scores: list[list[float]], eta: Optional[float] = None,
                  prompt_scores: Optional[list[float]] = None) -> dict[str, float]:
    """The shape monitors above for one batch; ``eta`` / ``prompt_scores`` only for the
    shapes that use them."""
    returns = [sum(sample) for sample in shaped]
    metrics = {
        "reward/shaped_return": _mean(returns),
        "reward/shaped_return_len_corr": _correlation([float(len(s)) for s in shaped], returns),
    }
    if eta is not None:
        scores = [x for sample in prm_scores for x in sample]
        metrics["reward/prm_below_eta_frac"] = _mean([float(x < eta) for x in scores])
    if prompt_scores is not None:
        metrics["reward/prm_prompt_mean"] = _mean(prompt_scores)
    return metrics


def overlong_metrics(penalty: list[float]) -> dict[str, float]:
    """Share of responses the overlong penalty hits and its mean (both <= 0 / in [0, 1])."""
    return {"reward/overlong_frac": _mean([float(p < 0) for p in penalty]),
            "reward/overlong_penalty_mean": _mean(penalty)}
