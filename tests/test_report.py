"""`critic-free-rl report` over synthetic run directories whose TensorBoard event files are
written here: the table equals the logged values, the PNGs and the TensorBoard layout exist."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2, metadata
from torch.utils.tensorboard import SummaryWriter

from critic_free_rl.report.events import find_run_dirs, load_run
from critic_free_rl.report.groups import group_runs
from critic_free_rl.report.plots import CURVES
from critic_free_rl.report.report import write_report
from critic_free_rl.report.tables import COLUMNS, summary_rows


def make_run(root: Path, algorithm: str, seed: int, final: dict[str, float], wall: float | None = 10.0, kl_coef: float = 0.05) -> Path:
    """A run directory: config.yaml, 3 training steps of every curve tag, two evaluations
    (the second at ``final``'s values), summary.json unless ``wall`` is None."""
    run = root / f"{algorithm}-s{seed}-kl{kl_coef}"
    run.mkdir(parents=True)
    cfg = {"algorithm": {"name": algorithm, "kl_coef": kl_coef}, "reward": {"name": "success"},
           "trainer": {"seed": seed}, "run_dir": str(run), "extra": {"skip_if_done": True}}
    (run / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(cfg)))
    with SummaryWriter(str(run)) as w:
        for step in (1, 2, 3):
            for tag in ("reward/success_mean", "reward/dense_mean", "reward/kl_mean", "reward/prm_mean", "response/length_tokens",
                        "reward/steps_per_response", "reward/repeated_step_frac", "response/truncated_frac"):
                w.add_scalar(tag, final[tag] if step == 3 and tag in final else 0.1 * step + seed, step)
        for step, scale in ((0, 0.5), (3, 1.0)):
            w.add_scalar("eval/greedy_accuracy", scale * final["eval/greedy_accuracy"], step)
            w.add_scalar("eval/sampling_accuracy", scale * final["eval/sampling_accuracy"], step)
    if wall is not None:
        (run / "summary.json").write_text(json.dumps({"wall_seconds": wall, "algorithm": algorithm, "seed": seed}))
    return run


def final_values(acc: float, length: float) -> dict[str, float]:
    return {"eval/greedy_accuracy": acc, "eval/sampling_accuracy": acc / 2, "response/length_tokens": length,
            "reward/steps_per_response": length / 10, "reward/repeated_step_frac": 0.25}


@pytest.fixture
def runs(tmp_path) -> list[Path]:
    root = tmp_path / "runs"
    return [make_run(root, "grpo", 0, final_values(0.5, 40.0), wall=10.0),
            make_run(root, "grpo", 1, final_values(0.7, 60.0), wall=14.0),
            make_run(root, "rloo", 0, final_values(0.25, 30.0), wall=None)]


def test_table_equals_logged_values(runs, tmp_path):
    report = write_report(runs, "cmp", tmp_path / "reports")
    groups = group_runs([load_run(r) for r in runs])
    assert [g.label for g in groups] == ["grpo-success", "rloo-success"]
    rows = dict((g.label, stats) for g, stats in summary_rows(groups))
    col = {c.key: i for i, c in enumerate(COLUMNS)}
    grpo, rloo = rows["grpo-success"], rows["rloo-success"]
    def tail(final: float, seed: int) -> float:  # training-batch columns: mean of the 3 logged steps
        return (0.1 + seed + 0.2 + seed + final) / 3

    for key, values in {"eval/greedy_accuracy": [0.5, 0.7], "eval/sampling_accuracy": [0.25, 0.35],
                        "response/length_tokens": [tail(40.0, 0), tail(60.0, 1)],
                        "reward/steps_per_response": [tail(4.0, 0), tail(6.0, 1)],
                        "reward/repeated_step_frac": [tail(0.25, 0), tail(0.25, 1)], "wall_seconds": [10.0, 14.0]}.items():
        stat = grpo[col[key]]
        assert stat.n == 2
        assert stat.mean == pytest.approx(np.mean(values), rel=1e-6)
        assert stat.spread == pytest.approx(np.std(values, ddof=1), rel=1e-6, abs=1e-7)
    assert rloo[col["eval/greedy_accuracy"]].mean == pytest.approx(0.25) and rloo[col["eval/greedy_accuracy"]].n == 1
    text = report.read_text()
    assert "| `grpo-success` | 2 | 0.600 ± 0.141 | 0.300 ± 0.071 | 2.10 ± 0.94 | 17.1 ± 5.2 | 0.517 ± 0.471 | 0.700 ± 0.707 | 12 ± 3 |" in text
    assert "| `rloo-success` | 1 | 0.250 ± 0.000 |" in text
    assert "1 run(s) have not finished" in text  # the rloo run has no summary.json


def test_curves_pngs_and_tensorboard_layout(runs, tmp_path):
    report = write_report(runs, "cmp", tmp_path / "reports")
    out = report.parent
    for spec in CURVES:
        png = out / spec.filename
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", spec.tag
        assert f"]({spec.filename})" in report.read_text()
    acc = EventAccumulator(str(out / "tb"))
    acc.Reload()
    layout = layout_pb2.Layout()
    layout.ParseFromString(acc.Tensors(metadata.CONFIG_SUMMARY_TAG)[0].tensor_proto.string_val[0])
    charted = {tag for cat in layout.category for chart in cat.chart for tag in chart.multiline.tag}
    assert charted == {f"^{spec.tag}$" for spec in CURVES}
    mean_curve = EventAccumulator(str(out / "tb" / "grpo-success"))
    mean_curve.Reload()
    final = mean_curve.Scalars("eval/greedy_accuracy")[-1]
    assert (final.step, final.value) == (3, pytest.approx(0.6))
    assert f"tensorboard --logdir {out / 'tb'}" in report.read_text()


def test_other_differing_settings_are_not_pooled(tmp_path):
    root = tmp_path / "runs"
    for kl in (0.01, 0.1):
        make_run(root, "grpo", 0, final_values(0.5, 40.0), kl_coef=kl)
    groups = group_runs([load_run(p) for p in find_run_dirs([root])])  # a folder of runs
    assert [g.label for g in groups] == ["grpo-success,algorithm.kl_coef=0.01", "grpo-success,algorithm.kl_coef=0.1"]


def test_report_cli(runs, tmp_path):
    res = run_cli("report", *map(str, runs), "--out", str(tmp_path / "out"))
    assert res.returncode == 0, res.stderr[-2000:]
    assert (tmp_path / "out" / "runs" / "report.md").is_file()  # default name: the runs' parent folder
    bad = run_cli("report", str(tmp_path / "nothing-here"))
    assert bad.returncode != 0 and "no config.yaml" in bad.stderr


@pytest.mark.parametrize("name", ["../x", "..", "a/b", "/tmp/x", ""])
def test_report_name_cannot_leave_out(tmp_path, name):
    """``report --name ../x`` would write (and rewrite ``tb/``) outside ``--out``."""
    from critic_free_rl.report.report import report_dir_of

    with pytest.raises(ValueError, match="plain folder name"):
        report_dir_of(tmp_path / "out", name)
    assert report_dir_of(tmp_path / "out", "ok-name_1") == tmp_path / "out" / "ok-name_1"
