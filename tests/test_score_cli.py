"""``critic-free-rl score``: offline reward scoring end to end (a tiny PRM built in
tmp_path, never the cached embedded one), atomic output, and clear bad-input errors."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from conftest import run_cli
from critic_free_rl.cli import score as score_command
from critic_free_rl.models.tiny import build_tiny_model

SEP = "<extra_0>"
ROWS = [
    {"prompt": "What is 17 + 5 - 8?\n", "completion": "17 + 5 = 22\n22 - 8 = 14\n\\boxed{14}", "reference": "14", "id": 1},
    {"prompt": "What is 40 - 3 + 6?\n", "completion": "40 - 3 = 37\n37 + 6 = 42\n\n\\boxed{42}", "reference": "43", "id": 2},
    {"prompt": "What is 9 + 9 + 9?\n", "completion": "27", "reference": "27", "id": 3},
]


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


@pytest.fixture(scope="module")
def tiny_prm(tmp_path_factory: pytest.TempPathFactory) -> str:
    tiny = dict(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
    return str(build_tiny_model(tmp_path_factory.mktemp("prm"), token_classification=True, extra_tokens=[SEP], **tiny))


def test_score_end_to_end_with_pr_delta(tmp_path: Path, tiny_prm: str) -> None:
    src = _write(tmp_path / "in.jsonl", [json.dumps(r) for r in ROWS])
    out = tmp_path / "out.jsonl"
    out.write_text("stale output\n")
    proc = run_cli("score", "--input", str(src), f"--output={out}", "reward=pr_delta", f"reward.prm={tiny_prm}",
                   "reward.prm_device=cpu", "reward.dense_coef=2.0", "reward.verify_workers=1",
                   cwd=tmp_path, env={"CFRL_CACHE": str(tmp_path / "cache")}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "scored 3 rows" in proc.stdout
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [1, 2, 3]
    for row, src_row in zip(rows, ROWS):
        assert {k: row[k] for k in src_row} == src_row  # input fields kept as they were
        assert {"correct", "success", "steps", "prm_scores", "shaped", "dense_return", "return"} <= set(row)
        assert len(row["prm_scores"]) == len(row["shaped"]) == len(row["steps"])
        assert all(0.0 <= s <= 1.0 for s in row["prm_scores"])
        # Delta: the rewards from step k on add up to the PRM score of step k (they telescope)
        for k in range(len(row["steps"])):
            assert sum(row["shaped"][k:]) == pytest.approx(row["prm_scores"][k], abs=1e-5)
        assert row["dense_return"] == pytest.approx(2.0 * row["prm_scores"][0], abs=1e-5)
        assert row["return"] == pytest.approx(row["success"] + row["dense_return"], abs=1e-5)
    assert [r["steps"] for r in rows] == [["17 + 5 = 22", "22 - 8 = 14", "\\boxed{14}"],
                                         ["40 - 3 = 37", "37 + 6 = 42", "\\boxed{42}"], ["27"]]
    assert [r["correct"] for r in rows] == [True, False, True]
    assert [r["success"] for r in rows] == [1.0, 0.0, 1.0]
    assert not (tmp_path / "outputs").exists() and not (tmp_path / ".hydra").exists()
    assert not (tmp_path / "cache").exists()  # a PRM path given: nothing trained or cached
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "out.jsonl"]  # no temp file left


def _min_form(r: list[float]) -> list[float]:
    m = [min(r[k:]) for k in range(len(r))]
    return [a - b for a, b in zip(m, m[1:])] + m[-1:]


@pytest.mark.parametrize("reward", ["pr_min", "pr_progress"])
def test_score_writes_each_shape_of_the_prm_scores(tmp_path: Path, tiny_prm: str, reward: str) -> None:
    """Rows keep steps, prm_scores and shaped aligned (one per non-empty line) and shaped is
    the shape of those scores to 1e-5: min form, or progress from prm_prompt_score."""
    src = _write(tmp_path / "in.jsonl", [json.dumps(r) for r in ROWS])
    out = tmp_path / "out.jsonl"
    proc = run_cli("score", "--input", str(src), "--output", str(out), f"reward={reward}", f"reward.prm={tiny_prm}",
                   "reward.prm_device=cpu", "reward.verify_workers=1", "reward.overlong_buffer=8",
                   cwd=tmp_path, env={"CFRL_CACHE": str(tmp_path / "cache")}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    for row, src_row in zip(rows, ROWS):
        lines = [line.strip() for line in src_row["completion"].splitlines() if line.strip()]
        assert row["steps"] == lines and len(row["prm_scores"]) == len(row["shaped"]) == len(lines)
        r = row["prm_scores"]
        if reward == "pr_min":
            assert "prm_prompt_score" not in row
            assert row["shaped"] == pytest.approx(_min_form(r), abs=1e-5)
        else:
            r0 = row["prm_prompt_score"]
            assert 0.0 <= r0 <= 1.0
            assert row["shaped"] == pytest.approx([b - a for a, b in zip([r0] + r[:-1], r)], abs=1e-5)
            assert sum(row["shaped"]) == pytest.approx(r[-1] - r0, abs=1e-5)
        assert row["overlong_penalty"] == 0.0  # short rows; limit 64, buffer 8
        assert row["dense_return"] == pytest.approx(sum(row["shaped"]), abs=1e-5)
    if reward == "pr_progress":  # read per prompt, not once per batch
        assert len({row["prm_prompt_score"] for row in rows}) == len(ROWS)


def test_a_failing_score_leaves_an_existing_output_untouched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = _write(tmp_path / "in.jsonl", [json.dumps(ROWS[0])])
    out = tmp_path / "out.jsonl"
    out.write_text("previous results\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # run_hydra rewrites sys.argv
    with pytest.raises((SystemExit, OSError)):  # the PRM cannot be loaded: fails while scoring
        score_command.run(["--input", str(src), "--output", str(out), "reward=pr_delta",
                             f"reward.prm={tmp_path / 'no-such-prm'}", "reward.prm_device=cpu", "reward.verify_workers=1"])
    assert out.read_text() == "previous results\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "out.jsonl"]


def _score_error(args: list[str], monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # run_hydra rewrites sys.argv
    with pytest.raises(SystemExit) as info:
        score_command.run(args)
    return str(info.value.code)


def test_bad_arguments_fail_before_any_model_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A missing input file, a missing option or an output folder that does not exist stop the
    command at once, naming the file or option (bad rows inside a file are reported row by
    row while the good ones are scored: tests/test_score_stream_cli.py, tests/test_score_file.py)."""
    out = tmp_path / "out.jsonl"
    out.write_text("keep me\n")
    msg = _score_error(["--input", str(tmp_path / "missing.jsonl"), "--output", str(out)], monkeypatch)
    assert "missing.jsonl" in msg and "no such file" in msg
    ok = _write(tmp_path / "ok.jsonl", [json.dumps(ROWS[0])])
    assert "--output is required" in _score_error(["--input", str(ok)], monkeypatch)
    assert "--input needs a file name" in _score_error(["--output", str(out), "--input"], monkeypatch)
    msg = _score_error(["--input", str(ok), "--output", str(tmp_path / "nodir" / "o.jsonl")], monkeypatch)
    assert "nodir" in msg and "does not exist" in msg
    assert out.read_text() == "keep me\n"
