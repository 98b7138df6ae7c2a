"""``score`` as a stream (rewards.score_file): bad rows are named by line and skipped, every
good row is scored and written in order, and no text can crash the writer."""
from __future__ import annotations

import json

import pytest

from critic_free_rl.config.schema import RewardConfig
from critic_free_rl.models.tiny import build_char_tokenizer
from critic_free_rl.rewards.pipeline import RewardPipeline
from critic_free_rl.rewards.score_file import score_file


@pytest.fixture(scope="module")
def pipeline():
    with RewardPipeline(RewardConfig(name="success", verify_workers=1), build_char_tokenizer()) as p:
        yield p


def _good(i: int, completion: str) -> str:
    return json.dumps({"prompt": f"p{i}", "completion": completion, "reference": "7"})


def test_mixed_file_scores_every_good_row_and_names_each_bad_one(pipeline, tmp_path):
    """Catches: stopping at the first bad row, skipping a bad row silently (``null``), a
    writer that raises on a lone surrogate, output out of input order."""
    lines = [
        _good(0, "3 + 4 = 7\n\\boxed{7}").encode(),
        b'{"prompt": "p1", "completion": "\\ud800 \\\\boxed{7}", "reference": "7"}',  # lone surrogate: a good row
        b"null",
        b'{"prompt": "p3", "completion": "x"}',  # missing field
        b'{"prompt": "p4", "completion": ',  # invalid JSON
        b"",  # blank: skipped silently
        b'\xff\xfe{"prompt": 1}',  # not UTF-8
        json.dumps({"prompt": "p7", "completion": 5, "reference": "7"}).encode(),  # wrong type
        _good(8, "\\boxed{8}").encode(),
    ]
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_bytes(b"\n".join(lines) + b"\n")
    errors: list[tuple[int, str]] = []
    scored, failed = score_file(src, dst, pipeline, on_error=lambda n, r: errors.append((n, r)))
    assert (scored, failed) == (3, 5)
    assert [n for n, _ in errors] == [3, 4, 5, 7, 8]
    assert "JSON object" in errors[0][1] and "missing field 'reference'" in errors[1][1]
    assert "invalid JSON" in errors[2][1] and "not UTF-8" in errors[3][1] and "'completion' must be a string" in errors[4][1]
    rows = [json.loads(line) for line in dst.read_text(encoding="ascii").splitlines()]
    assert [r["prompt"] for r in rows] == ["p0", "p1", "p8"]
    assert rows[1]["completion"] == "\ud800 \\boxed{7}"  # written back as it came, escaped
    assert [r["correct"] for r in rows] == [True, True, False]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "out.jsonl"]  # no temporary file left


def test_more_rows_than_a_chunk(pipeline, tmp_path, monkeypatch):
    """Rows are scored chunk by chunk; none is lost or repeated at chunk borders."""
    import critic_free_rl.rewards.score_file as sf

    monkeypatch.setattr(sf, "CHUNK_ROWS", 2)
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text("\n".join(_good(i, f"\\boxed{{{i}}}") for i in range(5)) + "\n")
    assert score_file(src, dst, pipeline) == (5, 0)
    rows = [json.loads(line) for line in dst.read_text().splitlines()]
    assert [r["prompt"] for r in rows] == [f"p{i}" for i in range(5)]
    assert [r["correct"] for r in rows] == [i == 7 for i in range(5)]
