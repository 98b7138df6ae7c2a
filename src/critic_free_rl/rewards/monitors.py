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
