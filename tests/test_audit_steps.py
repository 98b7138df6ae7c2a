"""scripts/audit_steps.py: the step audit of completions, with a real (tiny) embedded PRM."""
from __future__ import annotations

import importlib.util
import math

import pytest
from conftest import REPO
from test_prm_train import SEP, TINY_ARCH, TINY_TRAIN, _data

from critic_free_rl.rewards.prm import ProcessRewardModel
from critic_free_rl.models.prm_train import embedded_prm


def _audit_module():
    spec = importlib.util.spec_from_file_location("audit_steps", REPO / "scripts" / "audit_steps.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_counts_gold_padded_redundant_and_wrong_steps(cache_dir):
    prm = ProcessRewardModel(str(embedded_prm(_data(), SEP, TINY_ARCH, TINY_TRAIN, device="cpu", log=lambda _: None)),
                             "token_cls", SEP, device="cpu")
    prompt = "What is 17 + 5 - 8?\n"  # gold: 2 operations + the box = 3 steps
    completions = [
        "17 + 5 = 22\n22 - 8 = 14\n\\boxed{14}",                            # gold
        "17 + 5 = 22\n22 - 8 = 14\n14 + 0 = 14\n\\boxed{14}",               # one correct but redundant step
        "17 + 5 = 22\n22 - 8 = 15\n15 + 2 = 17\n17 - 3 = 14\n\\boxed{14}",  # wrong from step 2 on, padded
    ]
    out = _audit_module().audit_completions([prompt] * 3, completions, ["14"] * 3, prm)
    assert out["completions"] == 3
    assert out["success"] == pytest.approx(1.0)  # the boxed value is what the success check reads
    assert out["steps"] == pytest.approx((3 + 4 + 5) / 3)
    assert out["extra_steps"] == pytest.approx((0 + 1 + 2) / 3)
    assert out["wrong_frac"] == pytest.approx(4 / 12)  # steps 2-5 of the third completion
    assert out["redundant_frac"] == pytest.approx(1 / 12)
    for key in ("prm_on_wrong", "prm_on_good"):
        assert 0.0 <= out[key] <= 1.0 and not math.isnan(out[key])
