"""The study statistics (logging/study_stats.py) against hand-computed values, the dtype
switch (config/environment.py), the step-0 evaluation cache key (models/eval_cache.py) and
the plain progress lines (logging/progress.py)."""
from __future__ import annotations

import logging
import math

import pytest
import torch

from critic_free_rl.config.environment import cpu_has_native_bf16, resolve_dtype
from critic_free_rl.data.datasets import Example
from critic_free_rl.logging.progress import StepProgress, process_start_time
from critic_free_rl.logging.study_stats import RatioStats, explained_variance, logprob_gap, masked_summary, study_metrics
from critic_free_rl.models import eval_cache

MASK = torch.tensor([[True, True, False], [True, False, False]])


def test_masked_summary_ignores_masked_out_tokens():
    """Catches statistics over padding: the 99s lie outside the mask. Tokens 1, 3, -2:
    mean 2/3, population std sqrt(((1/3)^2 + (7/3)^2 + (8/3)^2) / 3) = sqrt(114/27)."""
    x = torch.tensor([[1.0, 3.0, 99.0], [-2.0, 99.0, 99.0]])
    out = masked_summary(x, MASK, "adv")
    assert out["adv/mean"] == pytest.approx(2 / 3)
    assert out["adv/std"] == pytest.approx(math.sqrt(114 / 27))
    assert (out["adv/min"], out["adv/max"]) == (-2.0, 3.0)
    assert all(math.isnan(v) for v in masked_summary(x, torch.zeros_like(MASK), "adv").values())


def test_explained_variance_hand_computed():
    """R = 1, 3, -2 (Var 114/27); V = 0, 3, -1: R - V = 1, 0, -1 (Var 2/3); EV = 1 - (2/3)/(114/27)
    = 1 - 18/114. A perfect critic gives 1, a constant-mean one 0; flat returns give NaN."""
    r = torch.tensor([[1.0, 3.0, 7.0], [-2.0, 7.0, 7.0]])
    v = torch.tensor([[0.0, 3.0, 0.0], [-1.0, 0.0, 0.0]])
    assert explained_variance(v, r, MASK) == pytest.approx(1 - 18 / 114)
    assert explained_variance(r, r, MASK) == pytest.approx(1.0)
    assert explained_variance(torch.full_like(r, 2 / 3), r, MASK) == pytest.approx(0.0)
    assert math.isnan(explained_variance(v, torch.ones_like(r), MASK))


def test_ratio_stats_is_a_token_mean_over_the_whole_update():
    """Catches a mean of micro-batch means: micro-batch 1 has ratios e^0, e^ln2 (= 1, 2),
    micro-batch 2 one token of ratio 4 plus a masked 100: mean (1 + 2 + 4) / 3, not (1.5 + 4) / 2."""
    stats = RatioStats()
    stats.add(torch.log(torch.tensor([[1.0, 2.0]])), torch.zeros(1, 2), torch.tensor([[True, True]]))
    stats.add(torch.log(torch.tensor([[4.0, 100.0]])), torch.zeros(1, 2), torch.tensor([[True, False]]))
    out = stats.metrics()
    assert out["ratio/mean"] == pytest.approx(7 / 3)
    assert (out["ratio/min"], out["ratio/max"]) == (pytest.approx(1.0), pytest.approx(4.0))
    assert math.isnan(RatioStats().metrics()["ratio/mean"])


def test_logprob_gap_and_study_metrics():
    """The gap is |engine - learner| over response tokens only; explained variance appears
    only with a critic's values."""
    eng = torch.tensor([[-1.0, -2.0, 0.0], [-0.5, 0.0, 0.0]])
    lrn = torch.tensor([[-1.25, -1.0, -9.0], [-0.5, -9.0, 0.0]])
    assert logprob_gap(eng, lrn, MASK) == {"logprob/engine_gap_mean": pytest.approx(1.25 / 3), "logprob/engine_gap_max": 1.0}
    adv = torch.tensor([[1.0, 3.0, 0.0], [-2.0, 0.0, 0.0]])
    assert "value/explained_variance" not in study_metrics(adv, adv, None, MASK)
    out = study_metrics(adv, adv, adv, MASK)
    assert out["value/explained_variance"] == pytest.approx(1.0) and out["return/std"] == out["adv/std"]


CPUINFO = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f {}\nbogomips\t: 4000\n"


def test_dtype_auto_follows_the_cpu_flags():
    """auto -> bfloat16 with amx_bf16 / avx512_bf16 in the flags, float32 without; explicit names kept
    (this test machine has no GPU, where auto asks torch.cuda instead)."""
    assert cpu_has_native_bf16(CPUINFO.format("amx_bf16")) and cpu_has_native_bf16(CPUINFO.format("avx512_bf16"))
    assert not cpu_has_native_bf16(CPUINFO.format("avx512_vnni"))
    if not torch.cuda.is_available():
        assert resolve_dtype("auto", CPUINFO.format("amx_bf16 amx_tile")) == "bfloat16"
        assert resolve_dtype("auto", CPUINFO.format("")) == "float32"
    assert resolve_dtype("float16", CPUINFO.format("amx_bf16")) == "float16"


def test_bf16_logprobs_match_fp32_within_tolerance(tiny_model_dir):
    """The numerics model.dtype=auto can switch on: a tiny model's token log-probs in bf16 stay
    within bf16's precision of fp32 (and are not identical: the switch really changes dtype)."""
    from transformers import AutoModelForCausalLM

    ids = torch.randint(3, 60, (2, 24), generator=torch.Generator().manual_seed(0))
    out = {}
    for dtype in (torch.float32, torch.bfloat16):
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=dtype).eval()
        with torch.no_grad():
            logits = model(input_ids=ids).logits.float()
        out[dtype] = logits[:, :-1].log_softmax(-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    gap = (out[torch.bfloat16] - out[torch.float32]).abs()
    assert gap.max() < 0.1 and gap.mean() < 0.03, gap.max()
    assert gap.max() > 0


def test_eval_cache_key_changes_with_weights_examples_and_settings(tmp_path, monkeypatch):
    """Catches a stale step-0 evaluation reused after the warm start, the split or a setting changed."""
    monkeypatch.setenv("CFRL_CACHE", str(tmp_path / "cache"))
    model = tmp_path / "m"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"a")
    ex = [Example(uid="test-0", question="1 + 1", prompt="1 + 1 = ?", reference="2")]
    base = eval_cache.entry(str(model), ex, {"eval": 1})
    assert base == eval_cache.entry(str(model), ex, {"eval": 1})
    assert base != eval_cache.entry(str(model), ex, {"eval": 2})
    assert base != eval_cache.entry(str(model), ex + ex, {"eval": 1})
    (model / "model.safetensors").write_bytes(b"b")
    assert base != eval_cache.entry(str(model), ex, {"eval": 1})
    eval_cache.store(base, {"greedy_accuracy": 0.5})
    assert eval_cache.load(base) == {"greedy_accuracy": 0.5}


def test_plain_progress_logs_every_n_steps_and_the_last(caplog):
    """Without a terminal: one line every trainer.log_every steps plus the last, with an ETA."""
    log = logging.getLogger("progress-test")
    p = StepProgress(total=5, start=0, every=2, log=log)
    with caplog.at_level(logging.INFO, logger="progress-test"):
        for _ in range(5):
            p.update({"reward/mean": 1.0, "reward/success_rate": 0.5}, 0.1)
    lines = [r.getMessage() for r in caplog.records]
    assert [line.split()[1] for line in lines] == ["2/5", "4/5", "5/5"] and all("eta" in line for line in lines)
    start = process_start_time()
    assert start is not None and start <= __import__("time").time()
