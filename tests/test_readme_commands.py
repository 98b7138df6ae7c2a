"""The README's commands as written, with small step counts and row limits added (and a tiny
random policy and PRM in place of the embedded ones, whose warm start and PRM training take
minutes): every command exits 0 and leaves what the README says it leaves. One module, the
runs shared: `evaluate` and `train resume=` use the plain `train` run, `report` the `compare`.

Catches a README command that no longer parses or crashes (e.g. `evaluate` on benchmark
prompts longer than the policy's 512-position context ending in a vLLM stack trace)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import SHARED_DATA, run_cli

from critic_free_rl.models.tiny import build_tiny_model

pytestmark = pytest.mark.slow

SEP = "<extra_0>"
#: added to every command: 2 steps, tiny batches and test sets, no sampled evaluation
SMALL = ["trainer.total_steps=2", "trainer.eval_every=0", "eval.num_samples=0", "eval.max_new_tokens=16",
         "rollout.prompts_per_step=2", "rollout.group_size=2", "rollout.max_new_tokens=16", "data.max_test_rows=4",
         "data.num_train=32"]


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict:
    """A cache of this module's own (no embedded assets are built: every command names its model)."""
    return {"CFRL_CACHE": str(tmp_path_factory.mktemp("cache"))}


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("readme")


@pytest.fixture(scope="module")
def policy(tiny_model_dir) -> list[str]:
    return ["model.embedded=false", f"model.name_or_path={tiny_model_dir}"]


@pytest.fixture(scope="module")
def prm(tmp_path_factory) -> str:
    tiny = dict(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
    return str(build_tiny_model(tmp_path_factory.mktemp("prm"), token_classification=True, extra_tokens=[SEP], **tiny))


def _ok(*args: str, env: dict, timeout: int = 900):
    res = run_cli(*args, env=env, timeout=timeout)
    assert res.returncode == 0, (args, res.stdout[-3000:], res.stderr[-3000:])
    return res


def _summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


@pytest.fixture(scope="module")
def plain_run(root, policy, env) -> Path:
    """`critic-free-rl train` (vLLM + DeepSpeed), a checkpoint per step for `resume=`."""
    run = root / "train"
    _ok("train", *policy, *SMALL, "trainer.checkpoint_every=1", f"run_dir={run}", env=env)
    return run


def test_train(plain_run):
    assert _summary(plain_run)["steps"] == 2 and (plain_run / "final" / "config.json").is_file()


def test_train_rollout_hf(root, policy, env):
    _ok("train", "rollout=hf", *policy, *SMALL, f"run_dir={root / 'hf'}", env=env)
    assert _summary(root / "hf")["steps"] == 2


def test_train_two_ranks(root, policy, env):
    _ok("train", "trainer.num_ranks=2", *policy, *SMALL, f"run_dir={root / 'ranks2'}", env=env)
    assert _summary(root / "ranks2")["steps"] == 2


def test_train_multirun(root, policy, prm, env):
    """The README's `-m` grid cut to 2 runs (grpo x success,pr_delta), the PRM one on a tiny PRM."""
    sweep = root / "multirun"
    _ok("train", "-m", "algorithm=grpo", "reward=success,pr_delta", "trainer.seed=0", f"reward.prm={prm}",
        "reward.prm_device=cpu", *policy, *SMALL, f"hydra.sweep.dir={sweep}",
        "hydra.sweep.subdir=${hydra.job.num}", env=env)  # the default subdir holds the model path's slashes
    runs = sorted(p for p in sweep.iterdir() if (p / "summary.json").is_file())
    assert len(runs) == 2 and all(_summary(r)["steps"] == 2 for r in runs)


def test_train_resume(plain_run, env):
    _ok("train", f"resume={plain_run}", "trainer.total_steps=3", env=env)
    assert _summary(plain_run)["steps"] == 3


@pytest.mark.skipif(not (SHARED_DATA / "math500").is_dir(), reason="../shared/data not present")
def test_evaluate_three_datasets(plain_run, root, env):
    """As in the README (run from the repository root, `eval.data_root=../shared/data`, the
    default `eval.max_new_tokens`): every dataset reports an accuracy and how many of its
    prompts were skipped for length; the first 6 rows of gsm8k and of math500 each hold a
    prompt too long for the policy's 512 positions (the README's stack trace before)."""
    out = root / "eval"
    res = _ok("evaluate", f"eval.run={plain_run}", "eval.datasets=[embedded,gsm8k,math500]", "eval.data_root=../shared/data",
              "eval.max_examples=6", "eval.num_samples=0", f"run_dir={out}", env=env)
    got = json.loads((out / "eval.json").read_text())["datasets"]
    assert set(got) == {"embedded", "gsm8k", "math500"}
    for name, d in got.items():
        assert d["n"] + d["skipped_for_length"] == 6 and f"{name}: " in res.stdout
        assert d["n"] == 0 or 0.0 <= d["greedy_accuracy"] <= 1.0
    assert got["embedded"]["skipped_for_length"] == 0
    assert got["gsm8k"]["skipped_for_length"] >= 1 and got["math500"]["skipped_for_length"] >= 1


def test_score(root, prm, env):
    rows = root / "rows.jsonl"
    rows.write_text(json.dumps({"prompt": "What is 17 + 5 - 8?\n", "completion": "17 + 5 = 22\n22 - 8 = 14\n\\boxed{14}",
                                "reference": "14"}) + "\n")
    out = root / "scored.jsonl"
    _ok("score", "--input", str(rows), "--output", str(out), "reward=pr_clip_delta", f"reward.prm={prm}",
        "reward.prm_device=cpu", env=env)
    assert len(out.read_text().splitlines()) == 1


def test_compare_and_report(root, policy, env):
    runs, reports = root / "runs", root / "reports"
    _ok("compare", "compare.name=readme", f"compare.runs={runs}", f"compare.reports={reports}", "algorithm=grpo,rloo",
        "reward=success", "trainer.seed=0", *policy, *SMALL, env=env)
    assert (reports / "readme" / "report.md").is_file()
    _ok("report", str(runs / "compare-readme"), "--name", "again", "--out", str(reports), env=env)
    text = (reports / "again" / "report.md").read_text()
    assert "`grpo-success`" in text and "`rloo-success`" in text
