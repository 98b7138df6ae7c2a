"""An estimator registered from outside the package (``plugins:`` + ``hydra.searchpath``), as
``docs/adding_an_estimator.md`` describes: the doc's example is the file under
``tests/plugins/``, goes through the same registry and validation, and trains."""
from __future__ import annotations

import json
import math
import re

import pytest
from conftest import REPO, compose_train, run_cli
from omegaconf import OmegaConf

from critic_free_rl.algorithms import estimator_spec
from critic_free_rl.config.validate import ConfigError, validate

PLUGIN = REPO / "tests" / "plugins" / "mean_baseline.py"
YAML = REPO / "tests" / "plugins" / "configs" / "algorithm" / "mean_baseline.yaml"
DOC = REPO / "docs" / "adding_an_estimator.md"
USE = [f"hydra.searchpath=[file://{YAML.parents[1]}]", f"plugins=[{PLUGIN}]", "algorithm=mean_baseline"]


def test_doc_example_is_the_tested_plugin():
    """The doc's Python and YAML blocks are these files, byte for byte (catches a doc that drifts)."""
    blocks = re.findall(r"```(\w+)\n(.*?)```", DOC.read_text(), re.S)
    assert PLUGIN.read_text() in [body for lang, body in blocks if lang == "python"]
    assert YAML.read_text() in [body for lang, body in blocks if lang == "yaml"]


def test_plugin_registers_with_its_needs_and_validates():
    validate(OmegaConf.to_object(compose_train(*USE)))
    spec = estimator_spec("mean_baseline")
    assert (spec.group_baseline, spec.critic, spec.dense_modes) == (True, False, ("return_to_go",))
    validate(OmegaConf.to_object(compose_train(*USE)))  # a second import registers nothing twice


def test_plugin_hand_example():
    """The doc's hand case: one group with sequence rewards [1, 0, 0, 1] -> [.5, -.5, -.5, .5]."""
    import torch

    from critic_free_rl.algorithms import AdvantageInput, get_estimator
    from critic_free_rl.config.plugins import import_plugins
    from critic_free_rl.config.schema import AlgorithmConfig

    import_plugins([str(PLUGIN)])
    rewards = torch.tensor([[0.0, 1.0], [0.0, 0.0], [0.0, 0.0], [0.0, 1.0]])
    mask = torch.ones(4, 2, dtype=torch.bool)
    batch = AdvantageInput(rewards, mask & (torch.arange(2) == 1), mask, torch.zeros(4, dtype=torch.long))
    out = get_estimator("mean_baseline")(batch, AlgorithmConfig(name="mean_baseline", dense_mode="return_to_go"))
    torch.testing.assert_close(out.advantages, torch.tensor([[0.5] * 2, [-0.5] * 2, [-0.5] * 2, [0.5] * 2]))


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["rollout.group_size=1"], "rollout.group_size=1: algorithm 'mean_baseline' (estimator 'mean_baseline') uses a group baseline"),
        (["algorithm.dense_mode=process"], "valid for estimator 'mean_baseline'; valid choices: ['return_to_go']"),
        (["plugins=[no_such_plugin_module]"], "plugins: cannot import module 'no_such_plugin_module'"),
        (["plugins=[tests/plugins/missing.py]"], "plugins: 'tests/plugins/missing.py': no such file"),
    ],
)
def test_plugin_declarations_are_enforced(overrides, expected):
    """The rules the plugin declared fire for it; a missing plugin is named at start-up."""
    with pytest.raises(ConfigError) as err:
        validate(OmegaConf.to_object(compose_train(*USE, *overrides)))
    assert expected in str(err.value)


@pytest.mark.slow
def test_plugin_estimator_trains(tiny_model_dir, tmp_path):
    """``critic-free-rl train`` with the plugin for 2 steps (HF rollout, torch update): the run
    records the plugin and its estimator, and both updates ran with a finite loss."""
    run = tmp_path / "run"
    res = run_cli("train", *USE, "model.embedded=false", f"model.name_or_path={tiny_model_dir}", "rollout=hf",
                  "trainer.backend=torch", "rollout.group_size=2", "rollout.prompts_per_step=2", "rollout.max_new_tokens=8",
                  "data.num_train=16", "data.max_test_rows=2", "trainer.total_steps=2", "trainer.eval_at_start=false",
                  "trainer.eval_every=0", "eval.num_samples=0", "eval.max_new_tokens=4", f"run_dir={run}", timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    saved = OmegaConf.load(run / "config.yaml")
    assert saved.plugins == [str(PLUGIN)] and saved.algorithm.estimator == "mean_baseline"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train/pg_loss"] for r in rows if "train/pg_loss" in r]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    assert json.loads((run / "summary.json").read_text())["steps"] == 2
