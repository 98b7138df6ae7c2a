"""The study statistics reach TensorBoard for ppo, grpo and rloo (read back with TensorBoard's
own reader), the runs carry hparams, summary.json reports the fixed costs, the step-0
evaluation is computed once per warm start, and a bf16 PPO run logs the engine-vs-learner
log-prob gap. One tiny run per algorithm (HF engine, torch learner), shared by the module."""
from __future__ import annotations

import json
import math

import pytest
from conftest import run_cli

FAST = ["rollout=hf", "trainer=torch", "trainer.total_steps=2", "trainer.eval_every=0", "eval.num_samples=0",
        "eval.max_new_tokens=16", "rollout.prompts_per_step=2", "rollout.group_size=2", "rollout.max_new_tokens=16",
        "data.max_test_rows=8", "data.num_train=64", "trainer.seed=0",
        "trainer.reuse_initial_eval=true"]
RUNS = {  # ppo: a PRM (its step-score histograms), two epochs (ratios away from 1), bf16 (learner recomputes old log-probs)
    "ppo": ["algorithm=ppo", "reward=pr_clip_delta", "reward.prm=exact", "algorithm.ppo_epochs=2", "model.dtype=bfloat16"],
    "grpo": ["algorithm=grpo", "reward=success"],
    "rloo": ["algorithm=rloo", "reward=success"],
}
STUDY = ["adv/mean", "adv/std", "adv/min", "adv/max", "return/mean", "return/std", "ratio/mean", "ratio/min", "ratio/max"]


@pytest.fixture(scope="module")
def runs(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    env = {"CFRL_CACHE": str(root / "cache")}
    out = {}
    for name, overrides in RUNS.items():  # in order: rloo reuses grpo's step-0 evaluation
        run = root / "runs" / name
        res = run_cli("train", "model.embedded=false", f"model.name_or_path={tiny_model_dir}", *FAST, *overrides,
                      f"run_dir={run}", env=env)
        assert res.returncode == 0, (name, res.stdout[-2000:], res.stderr[-3000:])
        out[name] = (run, res.stderr + res.stdout)
    return out


def _events(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    return EventAccumulator(str(run), size_guidance={"scalars": 0, "histograms": 0, "tensors": 0}).Reload()


@pytest.mark.slow
@pytest.mark.parametrize("name", list(RUNS))
def test_study_scalars_in_tensorboard_and_jsonl(runs, name):
    """Catches a statistic computed but never logged, logged under train/, or NaN on real data;
    PPO adds the critic's explained variance, the PRM's step-score histograms and the log-prob gap."""
    run, _ = runs[name]
    acc = _events(run)
    tags = set(acc.Tags()["scalars"])
    expected = STUDY + (["value/explained_variance", "logprob/engine_gap_mean", "logprob/engine_gap_max"]
                        if name == "ppo" else [])
    assert set(expected) <= tags, sorted(set(expected) - tags)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "ratio/mean" in r]
    assert [r["step"] for r in steps] == [1, 2]
    for r in steps:
        assert r["adv/min"] <= r["adv/mean"] <= r["adv/max"] and r["adv/std"] >= 0
        assert 0 < r["ratio/min"] <= r["ratio/mean"] <= r["ratio/max"]
    if name == "ppo":
        assert "reward/prm_step_scores" in acc.Tags()["histograms"]
        # bf16 on both sides: a small gap; HF generate's default top_k=50 made it ~1.3 nats
        assert all(0.1 > r["logprob/engine_gap_max"] >= r["logprob/engine_gap_mean"] >= 0 for r in steps)
        assert any(r["ratio/max"] != 1.0 or r["ratio/min"] != 1.0 for r in steps)  # the second epoch moved them
    else:
        assert "value/explained_variance" not in tags and "logprob/engine_gap_mean" not in tags


@pytest.mark.slow
def test_hparams_view_lists_every_run(runs):
    """TensorBoard's HPARAMS view reads each run's session_start_info: algorithm, reward and seed
    must be there to filter a comparison, and the final accuracy as the metric."""
    from tensorboard.plugins.hparams import metadata

    for name, (run, _) in runs.items():
        acc = _events(run)
        content = acc.PluginTagToContent(metadata.PLUGIN_NAME)
        assert metadata.SESSION_START_INFO_TAG in content, name
        info = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
        hp = {k: v for k, v in info.hparams.items()}
        assert hp["algorithm"].string_value == name and hp["reward"].string_value == RUNS[name][1].split("=")[1]
        assert hp["seed"].number_value == 0
        assert "hparams/final_accuracy" in acc.Tags()["scalars"]


@pytest.mark.slow
def test_fixed_costs_and_step0_evaluation_reuse(runs):
    """summary.json splits the fixed cost; two runs from the same warm start (grpo, rloo) compute
    the step-0 evaluation once: rloo reuses grpo's (same accuracy, marked reused); ppo's bf16
    changes the settings, so it computes its own."""
    s = {n: json.loads((run / "summary.json").read_text()) for n, (run, _) in runs.items()}
    for n, summary in s.items():
        for k in ("startup_seconds", "initial_eval_seconds", "teardown_seconds", "final_eval_seconds"):
            assert summary[k] is not None and summary[k] >= 0 and math.isfinite(summary[k]), (n, k)
    assert s["rloo"]["initial_eval_reused"] and s["rloo"]["initial_accuracy"] == s["grpo"]["initial_accuracy"]
    assert not s["grpo"]["initial_eval_reused"] and not s["ppo"]["initial_eval_reused"]
    assert "reused from" in runs["rloo"][1] and "reused from" not in runs["grpo"][1]
