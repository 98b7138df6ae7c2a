"""Bad configuration fails at start-up, before any model loads, naming the key."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import compose_train, run_cli

from critic_free_rl.cli.train import prepare_run_dir
from critic_free_rl.config.loading import load_run_config, to_train_config
from critic_free_rl.config.validate import ConfigError


@pytest.mark.parametrize(
    "override, expected",
    [
        ("algorithm.clip_ratio_lo=0.1", "clip_ratio_lo"),
        ("rollout.group_size=eight", "rollout.group_size"),
        ("algorithm=nope", "Available options in 'algorithm'"),
        ("reward=nope", "Available options in 'reward'"),
        ("trainer.zero_stage=7", "trainer.zero_stage=7 is not valid"),
        ("rollout.group_size=1", "rollout.group_size=1"),
        ("rollout.prompts_per_step=15 trainer.num_ranks=2", "not divisible by trainer.num_ranks=2"),
        ("reward=pr reward.prm_separator=null", "reward.prm_separator"),
        ("algorithm.estimator=foo", "valid choices: ['dr_grpo', 'gae', 'grpo'"),
    ],
)
def test_bad_override_fails_fast_naming_the_key(override, expected, tmp_path):
    res = run_cli("train", *override.split(), f"run_dir={tmp_path}/run", timeout=120)
    assert res.returncode != 0
    assert expected in res.stdout + res.stderr
    assert not (tmp_path / "run" / "summary.json").exists()


@pytest.mark.parametrize(
    "override, expected",
    [
        ("algorithm.num_minibatches=0", "algorithm.num_minibatches=0 must be at least 1"),
        ("trainer.num_ranks=0", "trainer.num_ranks=0 must be at least 1"),
        ("algorithm.ppo_epochs=0", "algorithm.ppo_epochs=0 must be at least 1"),
        ("rollout.max_new_tokens=0", "rollout.max_new_tokens=0 must be at least 1"),
        ("rollout.temperature=-0.5", "rollout.temperature=-0.5 must be >= 0"),
        ("rollout.top_p=0", "rollout.top_p=0.0 must be in (0, 1]"),
        ("rollout.top_p=1.5", "rollout.top_p=1.5 must be in (0, 1]"),
        ("reward.step_split=words", "reward.step_split='words' is not valid"),
        ("reward.max_steps=0", "reward.max_steps=0 must be at least 1"),
        ("reward.verify_timeout_s=0", "reward.verify_timeout_s=0.0 must be > 0"),
        ("reward.verify_workers=0", "reward.verify_workers=0 must be at least 1"),
        ("reward=pr_clip reward.shaping=delta", "reward.name='pr_clip' needs reward.shaping='clip'"),
    ],
)
def test_every_range_is_checked_before_anything_loads(override, expected):
    """Catches keys that used to divide by zero (num_minibatches, num_ranks), train nothing
    (ppo_epochs=0) or fail only after the vLLM engine was built (step_split, max_steps, the
    answer check's budget and workers, a shaping that does not match the reward)."""
    with pytest.raises(ConfigError, match=re.escape(expected)):
        to_train_config(compose_train(*override.split()))


def test_existing_run_dir_is_not_overwritten(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text("{}")
    res = run_cli("train", f"run_dir={run}", timeout=120)
    assert res.returncode != 0
    assert "already holds a run" in res.stdout + res.stderr
    assert (run / "summary.json").read_text() == "{}"


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["algorithm.num_minibatches=3"], "algorithm.num_minibatches=3 does not divide the 128 samples per rank per step"),
        (["data.answer_format=latex"], "data.answer_format='latex' is not valid; valid choices: ['boxed', 'gsm8k', 'raw']"),
        (["data.prompt_template='Problem: {problem}'"], "data.prompt_template='Problem: {problem}' is not a valid template"),
        (["reward=pr_clip", "reward.prm_kind=lm"], "reward.prm_kind='lm' is not valid; valid choices: ['tag_lm', 'token_cls']"),
        (["+model.warmstart.stop_at=0.3"], "model.warmstart has unknown key(s) ['stop_at']; valid keys:"),
    ],
)
def test_cross_field_errors_list_the_fix(overrides: list[str], expected: str) -> None:
    """Checks of :func:`validate` without a process start (the CLI cases above show they
    run before anything loads)."""
    with pytest.raises(ConfigError) as err:
        to_train_config(compose_train(*overrides))
    assert expected in str(err.value)


def test_partial_run_is_protected_and_overwrite_replaces_it(tmp_path: Path) -> None:
    """A run that crashed mid-way (its config, TensorBoard events and metrics, no summary) or
    left only a checkpoint is refused; ``overwrite=true`` clears its logs and writes the new
    config, but never empties a folder that holds no config.yaml of a run of this project."""
    from omegaconf import OmegaConf

    run = tmp_path / "run"
    run.mkdir()
    (run / "events.out.tfevents.1.host").write_bytes(b"partial")
    (run / "metrics.jsonl").write_text('{"step": 1}\n')
    with pytest.raises(FileExistsError, match="no config.yaml of a critic-free-rl run"):
        prepare_run_dir(run, to_train_config(compose_train(f"run_dir={run}", "overwrite=true")))
    assert (run / "events.out.tfevents.1.host").read_bytes() == b"partial" and (run / "metrics.jsonl").is_file()
    OmegaConf.save(OmegaConf.structured(to_train_config(compose_train(f"run_dir={run}"))), run / "config.yaml")
    with pytest.raises(FileExistsError, match="already holds a run; pass overwrite=true"):
        prepare_run_dir(run, to_train_config(compose_train(f"run_dir={run}")))
    assert (run / "events.out.tfevents.1.host").read_bytes() == b"partial"

    only_ckpt = tmp_path / "ckpt"
    (only_ckpt / "final").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="already holds a run"):
        prepare_run_dir(only_ckpt, to_train_config(compose_train(f"run_dir={only_ckpt}")))

    tc = to_train_config(compose_train(f"run_dir={run}", "overwrite=true", "trainer.seed=7"))
    assert prepare_run_dir(run, tc)
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml"]
    assert load_run_config(run).trainer.seed == 7
