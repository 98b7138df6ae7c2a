"""``critic-free-rl score`` as a stream: a jsonl of ``{prompt, completion, reference}`` rows in,
the same rows with their rewards out, in order, one chunk at a time.

A bad row (not UTF-8, invalid JSON, ``null`` or not an object, a missing field, a field that
is not a string) is reported with its line number and skipped; the good rows around it are
still scored. Output rows are appended to a temporary file beside the output, renamed over
it at the end; JSON is written ASCII-escaped, so no text (a lone surrogate ``"\\ud800"``)
can make the writer fail.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, TextIO

from critic_free_rl.rewards.pipeline import RewardPipeline, score_records

SCORE_FIELDS = ("prompt", "completion", "reference")
#: rows scored per call of :func:`score_records`
CHUNK_ROWS = 256


def read_row(raw: bytes) -> dict[str, Any]:
    """One input line as a row; ``ValueError`` saying what is wrong with it."""
    try:
        row = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"invalid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(row, dict):
        raise ValueError(f"expected a JSON object with {', '.join(SCORE_FIELDS)}, got {json.dumps(row)[:40]}")
    for field in SCORE_FIELDS:
        if field not in row:
            raise ValueError(f"missing field {field!r} (rows need {', '.join(SCORE_FIELDS)})")
        if not isinstance(row[field], str):
            raise ValueError(f"field {field!r} must be a string, got {type(row[field]).__name__}")
    return row


def iter_rows(path: Path, on_error: Callable[[int, str], None]) -> Iterator[dict[str, Any]]:
    """The good rows of ``path`` in order; ``on_error(line_number, reason)`` for each bad one.
    Blank lines are skipped silently."""
    with Path(path).open("rb") as f:
        for n, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                yield read_row(raw)
            except ValueError as e:
                on_error(n, str(e))


def _write(rows: list[dict[str, Any]], out: TextIO) -> None:
    for row in rows:
        out.write(json.dumps(row, ensure_ascii=True) + "\n")
    out.flush()


def score_file(src: Path, dst: Path, pipeline: RewardPipeline,
               on_error: Optional[Callable[[int, str], None]] = None) -> tuple[int, int]:
    """Score every good row of ``src`` into ``dst``; returns ``(rows scored, rows failed)``.

    Each bad row is passed to ``on_error(line_number, reason)`` (default: printed as
    ``src:LINE: reason``). ``dst`` appears only complete (temporary file, then rename); a
    crash leaves ``dst`` as it was.
    """
    failed: list[int] = []

    def bad(n: int, reason: str) -> None:
        failed.append(n)
        (on_error or (lambda n, r: print(f"critic-free-rl score: {src}:{n}: {r}", flush=True)))(n, reason)

    dst = Path(dst)
    tmp = dst.with_name(f".{dst.name}.tmp{os.getpid()}")
    scored = 0
    try:
        with tmp.open("w", encoding="ascii") as out:
            chunk: list[dict[str, Any]] = []
            for row in iter_rows(src, bad):
                chunk.append(row)
                if len(chunk) == CHUNK_ROWS:
                    _write(score_records(chunk, pipeline), out)
                    scored, chunk = scored + len(chunk), []
            _write(score_records(chunk, pipeline), out)
            scored += len(chunk)
            os.fsync(out.fileno())
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return scored, len(failed)
