"""`critic-free-rl evaluate`: a tiny random model through vLLM on 20 embedded examples
writes eval.json and the same numbers to TensorBoard; dataset / model resolution."""
from __future__ import annotations

import json

import pytest
from conftest import SHARED_DATA, run_cli
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from critic_free_rl.config.schema import DataConfig, EvalConfig, TrainConfig
from critic_free_rl.data.datasets import load_examples
from critic_free_rl.cli.evaluate import dataset_config, model_path


@pytest.mark.slow
def test_evaluate_writes_json_and_tensorboard(tiny_model_dir, tmp_path):
    out = tmp_path / "eval"
    res = run_cli("evaluate", "model.embedded=false", f"model.name_or_path={tiny_model_dir}", "eval.datasets=[embedded]",
                  "eval.max_examples=20", "eval.num_samples=2", "eval.max_new_tokens=24", f"run_dir={out}")
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads((out / "eval.json").read_text())
    assert report["model"] == str(tiny_model_dir) and report["engine"] == "vllm"
    got = report["datasets"]["embedded"]
    assert got["n"] == 20
    assert 0.0 <= got["greedy_accuracy"] <= 1.0 and 0.0 <= got["sampling_accuracy"] <= 1.0
    acc = EventAccumulator(str(out))
    acc.Reload()
    for key in ("greedy_accuracy", "sampling_accuracy"):
        assert acc.Scalars(f"eval/embedded/{key}")[0].value == pytest.approx(got[key], abs=1e-6)


def _cfg(**eval_kwargs) -> TrainConfig:
    return TrainConfig(data=DataConfig(name="embedded", path="embedded"), eval=EvalConfig(**eval_kwargs))


@pytest.mark.skipif(not (SHARED_DATA / "math500").is_dir(), reason="../shared/data not present")
def test_dataset_config_reads_local_data_root_with_limit():
    dc = dataset_config("math500", _cfg(data_root=str(SHARED_DATA), max_examples=3))
    assert dc.path == str(SHARED_DATA / "math500")
    assert len(load_examples(dc, dc.test_split)) == 3  # math500's test split is also its train split


def test_dataset_config_errors_and_composed_data():
    cfg = _cfg(max_examples=5)
    assert dataset_config("embedded", cfg).max_test_rows == 5
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        dataset_config("nope", cfg)


def test_model_path_of_a_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="no final/ checkpoint"):
        model_path(_cfg(run=str(tmp_path)))
    (tmp_path / "final").mkdir()
    (tmp_path / "final" / "config.json").write_text("{}")
    assert model_path(_cfg(run=str(tmp_path))) == str(tmp_path / "final")
