"""``critic-free-rl score`` on a file mixing good and bad rows (issue 21): every good row is
scored and written, each bad row is named with its line number, and the exit code is
non-zero. Needs the command to stream through :func:`critic_free_rl.rewards.score_file.score_file`
and exit with the count of failed rows."""
from __future__ import annotations

import json

from conftest import run_cli


def test_score_cli_streams_past_bad_rows(tmp_path):
    good = [{"prompt": f"p{i}", "completion": f"\\boxed{{{i}}}", "reference": "1"} for i in range(3)]
    lines = [json.dumps(good[0]), '{"prompt": "p", "completion": "\\ud800", "reference": "1"}', "null",
             '{"prompt": "p"}', '{"prompt": ', json.dumps(good[1]), json.dumps(good[2])]
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text("\n".join(lines) + "\n")
    res = run_cli("score", f"--input={src}", f"--output={dst}", "reward=success", "model.embedded=true", timeout=600)
    assert res.returncode == 3, (res.stdout[-2000:], res.stderr[-2000:])  # three bad rows
    out = res.stdout + res.stderr
    for n in (3, 4, 5):
        assert f"{src}:{n}:" in out
    rows = [json.loads(line) for line in dst.read_text().splitlines()]
    assert [r["prompt"] for r in rows] == ["p0", "p", "p1", "p2"]
    assert [r["correct"] for r in rows] == [False, False, True, False]
