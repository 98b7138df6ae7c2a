"""`critic-free-rl report` over synthetic run directories whose TensorBoard event files are
written here: the table equals the logged values, the PNGs and the TensorBoard layout exist."""
from __future__ import annotations

import csv
import json
import zlib
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


# ---------------------------------------------------------------- results.csv and intervals
from critic_free_rl.report.stats import BOOTSTRAP_REPLICATES, BOOTSTRAP_SEED, interval, paired_difference  # noqa: E402

N_PROBLEMS = 40


def make_grid_run(root: Path, arm: str, algorithm: str, reward: str, seed: int, p_correct: float, prm: str | None = None,
                  noise: float = 0.0) -> Path:
    """A finished ``compare`` run of ``arm``: config with extra.arm, summary with held-out
    accuracies and provenance, and ``final_outcomes.jsonl`` over the same N_PROBLEMS problems."""
    run = root / f"{arm}-s{seed}"
    run.mkdir(parents=True)
    name = "success" if reward == "success_overlong" else reward
    cfg = {"algorithm": {"name": algorithm}, "reward": {"name": name, "prm": prm, "prm_noise": noise}, "trainer": {"seed": seed},
           "data": {"final_split": "heldout", "test_split": "test"}, "extra": {"arm": arm, "reward_group": reward}}
    (run / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(cfg)))
    with SummaryWriter(str(run)) as w:
        w.add_scalar("eval/greedy_accuracy", p_correct, 2)
    rng = np.random.default_rng(zlib.crc32(f"{arm}-{seed}".encode()))
    correct = rng.random(N_PROBLEMS) < p_correct
    rows = [{"index": i, "id": f"heldout-{i}", "prompt_sha256": f"h{i}", "reference": str(i), "correct": bool(c)} for i, c in enumerate(correct)]
    (run / "final_outcomes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "summary.json").write_text(json.dumps({"steps": 2, "wall_seconds": 5.0, "initial_accuracy": 0.1, "final_accuracy": 0.2,
                                                  "initial_heldout_accuracy": 0.3, "final_heldout_accuracy": float(correct.mean()),
                                                  "clip_eta": 0.5, "machine": "Test CPU x 2", "policy_sha256": "a" * 64,
                                                  "prm_sha256": None if prm is None else "b" * 64}))
    return run


def reference_interval(y: np.ndarray) -> tuple[float, float, float]:
    """The documented scheme (report/stats.py), written out replicate by replicate."""
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    s, n = y.shape
    seed_idx = rng.integers(0, s, size=(BOOTSTRAP_REPLICATES, s))
    prob_idx = rng.integers(0, n, size=(BOOTSTRAP_REPLICATES, n))
    stats = [np.mean([[y[i, j] for j in prob_idx[b]] for i in seed_idx[b]]) for b in range(BOOTSTRAP_REPLICATES)]
    low, high = np.percentile(stats, [2.5, 97.5])
    return float(y.mean()), float(low), float(high)


@pytest.fixture
def grid_runs(tmp_path) -> Path:
    root = tmp_path / "compare-g"
    for seed in (0, 1, 2):
        make_grid_run(root, "grpo-success", "grpo", "success", seed, 0.5)
        make_grid_run(root, "grpo-pr_clip_delta", "grpo", "pr_clip_delta", seed, 0.7, prm="/cache/prm-x")
        make_grid_run(root, "grpo-success_overlong", "grpo", "success_overlong", seed, 0.5)
        for noise in (0.0, 0.3):
            make_grid_run(root, f"grpo-pr-prm_exact-reward.prm_noise_{noise}", "grpo", "pr", seed, 0.9 - noise, prm="exact", noise=noise)
    make_grid_run(root, "ppo-success", "ppo", "success", 0, 0.4)  # another algorithm, one seed block only
    return root


def test_results_csv_has_a_row_per_run_with_provenance(grid_runs, tmp_path):
    """Catches a missing column, an arm's reward taken from reward.name (success_overlong is
    reward.name=success), a wrong prm kind or a noise given to a learned PRM."""
    (grid_runs / "compare.json").write_text(json.dumps({"overrides": ["algorithm.kl_coef=0.01"], "per_algorithm": {"ppo": ["algorithm.ppo_epochs=2"]}}))
    report = write_report([grid_runs], "g", tmp_path / "reports")
    assert "- `algorithm.kl_coef=0.01`\n- ppo only: `algorithm.ppo_epochs=2`" in report.read_text()  # the protocol, printed
    rows = list(csv.DictReader((report.parent / "results.csv").open()))
    assert len(rows) == 16
    need = {"algorithm", "reward", "prm", "prm_noise", "seed", "steps", "initial_accuracy", "final_accuracy", "machine", "policy_sha256", "prm_sha256"}
    assert need <= set(rows[0])
    by = {(r["arm"], r["seed"]): r for r in rows}
    assert by[("grpo-success_overlong", "1")]["reward"] == "success_overlong"
    assert (by[("grpo-pr_clip_delta", "0")]["prm"], by[("grpo-pr_clip_delta", "0")]["prm_noise"]) == ("learned", "")
    exact = by[("grpo-pr-prm_exact-reward.prm_noise_0.3", "2")]
    assert (exact["prm"], exact["prm_noise"], exact["initial_accuracy"], exact["eval_split"]) == ("exact", "0.3", "0.3", "heldout")
    assert (by[("grpo-success", "0")]["prm"], by[("grpo-success", "0")]["prm_sha256"]) == ("", "")
    assert by[("ppo-success", "0")]["machine"] == "Test CPU x 2"


def test_two_intervals_recomputed_from_results_csv_and_outcomes(grid_runs, tmp_path):
    """report.md's interval of an arm and of a paired difference equal those recomputed
    here from results.csv's run folders and their per-problem files, by the documented
    scheme written out loop by loop (catches a scheme that differs from its documentation,
    problems paired out of order, or seeds that are not blocks)."""
    report = write_report([grid_runs], "g", tmp_path / "reports")
    rows = list(csv.DictReader((report.parent / "results.csv").open()))

    def outcomes(arm: str) -> dict[int, np.ndarray]:
        out = {}
        for r in rows:
            if r["arm"] == arm:
                lines = (Path(r["run_dir"]) / "final_outcomes.jsonl").read_text().splitlines()
                out[int(r["seed"])] = np.array([json.loads(x)["correct"] for x in lines], dtype=float)
        return out

    shaped, base = outcomes("grpo-pr_clip_delta"), outcomes("grpo-success")
    est, low, high = reference_interval(np.stack([shaped[s] for s in sorted(shaped)]))
    text = report.read_text()
    assert f"| `grpo-pr_clip_delta` | grpo | pr_clip_delta | learned |  | 3 | {N_PROBLEMS} | 0.300 | {est:.3f} [{low:.3f}, {high:.3f}] |" in text
    est, low, high = reference_interval(np.stack([shaped[s] - base[s] for s in (0, 1, 2)]))
    mark = "**yes**" if low > 0 or high < 0 else "no"
    assert f"| grpo | `grpo-pr_clip_delta` | `grpo-success` | 3 | {est:+.3f} [{low:+.3f}, {high:+.3f}] | {mark} |" in text
    assert "| ppo | `" not in text  # ppo has no other arm to compare with success-only
    assert (report.parent / "prm_quality_sweep.png").read_bytes()[:4] == b"\x89PNG"


def test_runs_on_different_problems_are_not_pooled(grid_runs, tmp_path):
    run = grid_runs / "grpo-success-s1"
    lines = (run / "final_outcomes.jsonl").read_text().splitlines()
    (run / "final_outcomes.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(ValueError, match="grpo-success-s1.*problems differ"):
        write_report([grid_runs], "g", tmp_path / "reports")


def test_interval_hand_computed_examples():
    """Certain outcomes give a point interval; one seed of two problems [1, 0] has bootstrap
    means 0, 1/2, 1 with probabilities 1/4, 1/2, 1/4, so its 95% interval is [0, 1]; two
    seeds [1, 1] / [0, 0] the same through the seeds alone."""
    iv = interval(np.ones((3, 5)))
    assert (iv.estimate, iv.low, iv.high, iv.seeds, iv.problems, iv.excludes_zero) == (1.0, 1.0, 1.0, 3, 5, True)
    for y in ([[1.0, 0.0]], [[1.0, 1.0], [0.0, 0.0]]):
        iv = interval(np.array(y))
        assert (iv.estimate, iv.low, iv.high, iv.excludes_zero) == (0.5, 0.0, 1.0, False)
    assert interval(np.array([[1.0, 0.0, 1.0]])) == interval(np.array([[1.0, 0.0, 1.0]]))  # seeded


def test_paired_difference_hand_computed_examples():
    """Identical arms differ by exactly 0 (interval [0, 0], not excluding 0); an arm right
    where the other is wrong on every problem by +1; only the common seed blocks count."""
    a = {0: np.array([1.0, 0.0, 1.0]), 1: np.array([0.0, 0.0, 1.0])}
    same = paired_difference(a, a)
    assert (same.estimate, same.low, same.high, same.excludes_zero) == (0.0, 0.0, 0.0, False)
    better = paired_difference({0: np.ones(4), 5: np.ones(4)}, {0: np.zeros(4), 7: np.ones(4)})
    assert (better.estimate, better.low, better.high, better.seeds, better.excludes_zero) == (1.0, 1.0, 1.0, 1, True)
    with pytest.raises(ValueError, match="no common seed"):
        paired_difference({0: np.ones(2)}, {1: np.ones(2)})
