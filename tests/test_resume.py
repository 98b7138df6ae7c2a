"""Checkpoint / resume: a run SIGKILLed mid-training and resumed with ``resume=RUN_DIR``
ends exactly where the same run without the interruption ends (1 rank, DeepSpeed ZeRO-2,
vLLM rollouts, tiny random model). Plus the crash-safety of the ``latest`` pointer and
the override rules of ``resume=``, which need no training."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, run_cli

from critic_free_rl.checkpointing import (EXIT_NO_CHECKPOINT, Checkpointer, NoCheckpoint, is_run_dir, latest_checkpoint,
                                         latest_step, resume_config, tag_of)
from critic_free_rl.config.validate import ConfigError

STEPS, EVERY = 6, 2
# entropy bonus + a large LR: a random tiny model earns no reward, and the run must still
# move its weights every step for the comparison to mean anything
ARGS = ["model.embedded=false", "rollout.group_size=4", "rollout.prompts_per_step=4", "rollout.max_new_tokens=12",
        "eval.max_new_tokens=12", "eval.num_samples=2", "data.max_test_rows=8", "data.num_train=64",
        "algorithm.entropy_coef=0.01", "trainer.lr=1e-2", "trainer.warmup_steps=2", "trainer.eval_every=2",
        f"trainer.total_steps={STEPS}", f"trainer.checkpoint_every={EVERY}"]


def _metrics(run: Path) -> dict[int, dict[str, float]]:
    """Per-step metrics of ``metrics.jsonl`` without wall-clock ones (time/, perf/)."""
    out: dict[int, dict[str, float]] = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        out.setdefault(row["step"], {}).update({k: v for k, v in row.items() if not k.startswith(("time/", "perf/"))})
    return out


def _tensorboard_steps(run: Path, tag: str) -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run), size_guidance={"scalars": 0})
    acc.Reload()
    return [e.step for e in acc.Scalars(tag)]


@pytest.mark.slow
def test_sigkilled_run_resumes_to_the_uninterrupted_result(tiny_model_dir, tmp_path):
    model = f"model.name_or_path={tiny_model_dir}"
    ref = tmp_path / "ref"
    res = run_cli("train", *ARGS, model, f"run_dir={ref}")
    assert res.returncode == 0, res.stderr[-3000:]

    run = tmp_path / "run"
    log = open(tmp_path / "killed.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "critic_free_rl.cli", "train", *ARGS, model, f"run_dir={run}"], cwd=REPO,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 600
    try:
        # kill once a checkpoint exists and a later step was logged (so the resume must also
        # drop that step's metrics), or at the latest checkpoint if the run is too quick
        while time.time() < deadline and proc.poll() is None:
            if latest_checkpoint(run) is not None and max(_metrics(run), default=0) > latest_step(run):
                break
            time.sleep(0.1)
        assert proc.poll() is None, "the run finished before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    killed_at = latest_step(run)
    assert 0 < killed_at < STEPS and not (run / "summary.json").exists()
    logged_before_kill = max(_metrics(run))

    res = run_cli("train", f"resume={run}")
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"resume from step {killed_at}" in res.stdout

    a, b = _metrics(ref), _metrics(run)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert sorted(r["step"] for r in rows if "reward/mean" in r) == list(range(1, STEPS + 1)), "steps after the checkpoint were not purged"
    assert sorted(a) == sorted(b) == list(range(STEPS + 1))
    for step in a:  # every logged value, bit for bit (fp32 on CPU, seeded sampling)
        assert a[step] == b[step], (step, {k: (a[step].get(k), b[step].get(k)) for k in a[step] if a[step].get(k) != b[step].get(k)})
    sa, sb = json.loads((ref / "summary.json").read_text()), json.loads((run / "summary.json").read_text())
    for key in ("initial_accuracy", "final_accuracy", "evals", "steps", "skipped_updates", "weights_sha256",
                "sync/engine_vs_policy_logprob_max_abs_diff"):
        assert sa[key] == sb[key], key
    assert (ref / "final" / "model.safetensors").read_bytes() == (run / "final" / "model.safetensors").read_bytes()

    # one TensorBoard run: the resumed process appends to the same folder and the steps the
    # killed process logged after its checkpoint are purged, so every step appears once
    assert len(list(run.glob("events.out.tfevents*"))) == 2
    assert _tensorboard_steps(run, "reward/mean") == list(range(1, STEPS + 1))
    assert logged_before_kill >= killed_at
    # checkpoints: the newest two (keep_checkpoints=2 by default), the last at the last step
    root = run / "checkpoints"
    assert (root / "latest").read_text().strip() == tag_of(STEPS)
    assert sorted(p.name for p in root.iterdir()) == ["latest", tag_of(STEPS - EVERY), tag_of(STEPS)]
    # a finished run is not trained again
    again = run_cli("train", f"resume={run}", timeout=300)
    assert again.returncode == 0 and "already finished" in again.stdout


class _FakeWorld:
    rank, size, is_main = 0, 1, True


def test_latest_pointer_survives_a_save_killed_half_way(tmp_path):
    """Only a complete checkpoint is ever named by ``latest``; a killed save leaves a
    ``*.tmp`` folder that the next save removes."""
    run = tmp_path / "run"
    root = run / "checkpoints"
    (root / tag_of(2)).mkdir(parents=True)
    (root / tag_of(2) / "state.json").write_text(json.dumps({"step": 2}))
    (root / "latest").write_text(tag_of(2) + "\n")
    # killed during the save of step 4: files half written, no rename, no pointer update
    (root / f"{tag_of(4)}.tmp" / "policy").mkdir(parents=True)
    assert latest_step(run) == 2 and latest_checkpoint(run) == root / tag_of(2)
    # killed after the rename but before the pointer moved: still step 2
    (root / tag_of(4)).mkdir()
    assert latest_step(run) == 2
    # a pointer to a folder without state.json (hand-edited, or a foreign tool) falls back to
    # the newest complete checkpoint, and so does a pointer to a deleted folder
    (root / "latest").write_text(tag_of(4))
    assert latest_checkpoint(run) == root / tag_of(2) and latest_step(run) == 2
    (root / "latest").write_text(tag_of(10))
    assert latest_checkpoint(run) == root / tag_of(2)
    (root / "latest").unlink()
    assert latest_checkpoint(run) == root / tag_of(2)
    # pruning keeps the newest `keep` complete checkpoints
    ck = Checkpointer(run, every=2, keep=2)
    for s in (6, 8):
        (root / tag_of(s)).mkdir()
    ck._prune(keep_tag=tag_of(8))
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == [f"{tag_of(4)}.tmp", tag_of(6), tag_of(8)]


def test_resume_accepts_only_schedule_overrides(tmp_path):
    from omegaconf import OmegaConf

    from critic_free_rl.config.loading import to_train_config
    from conftest import compose_train

    run = tmp_path / "run"
    run.mkdir()
    tc = to_train_config(compose_train(f"run_dir={run}", "trainer.total_steps=6"))
    (run / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(tc)))
    (run / "checkpoints" / tag_of(2)).mkdir(parents=True)
    (run / "checkpoints" / tag_of(2) / "state.json").write_text(json.dumps({"step": 2}))
    out = resume_config(run, [f"resume={run}", "trainer.total_steps=10", "trainer.checkpoint_every=5"])
    assert out.trainer.total_steps == 10 and out.trainer.checkpoint_every == 5 and out.resume == str(run)
    assert out.algorithm == tc.algorithm and out.model == tc.model
    with pytest.raises(ConfigError, match=r"only trainer.total_steps, .* may be changed, got: algorithm=rloo trainer.lr=0.1"):
        resume_config(run, [f"resume={run}", "algorithm=rloo", "trainer.lr=0.1"])
    res = run_cli("train", f"resume={run}", "model.lora_rank=8", timeout=300)
    assert res.returncode != 0 and "may be changed, got: model.lora_rank=8" in res.stdout + res.stderr


def test_resume_without_a_checkpoint_is_refused_and_logs_are_kept(tmp_path):
    """A run killed before its first checkpoint: ``resume`` must not restart from step 0 (and
    truncate metrics.jsonl) unless resume_from_scratch=true asks for it."""
    from omegaconf import OmegaConf

    from critic_free_rl.config.loading import to_train_config
    from conftest import compose_train

    run = tmp_path / "run"
    run.mkdir()
    tc = to_train_config(compose_train(f"run_dir={run}", "trainer.total_steps=6"))
    (run / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(tc)))
    (run / "metrics.jsonl").write_text('{"step": 0, "eval/greedy_accuracy": 0.5}\n')
    with pytest.raises(NoCheckpoint) as err:
        resume_config(run, [f"resume={run}"])
    assert err.value.code == EXIT_NO_CHECKPOINT and "resume_from_scratch=true" in err.value.message
    with pytest.raises(NoCheckpoint):
        Checkpointer(run, every=2).purge_step(from_scratch=False)
    assert resume_config(run, [f"resume={run}", "resume_from_scratch=true"]).resume_from_scratch
    assert Checkpointer(run, every=2).purge_step(from_scratch=True) == 0
    res = run_cli("train", f"resume={run}", timeout=300)
    assert res.returncode == EXIT_NO_CHECKPOINT and "no complete checkpoint" in res.stderr
    assert (run / "metrics.jsonl").read_text().count("\n") == 1
    assert is_run_dir(run)


def test_is_run_dir_only_for_runs_of_this_project(tmp_path):
    """``overwrite=true`` may delete only folders this check accepts."""
    assert not is_run_dir(tmp_path)
    (tmp_path / "config.yaml").write_text("name: something else\nlayers: 3\n")
    assert not is_run_dir(tmp_path)
    (tmp_path / "config.yaml").write_text("model: [1, 2\n")
    assert not is_run_dir(tmp_path)
