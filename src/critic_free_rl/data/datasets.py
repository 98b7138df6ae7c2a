"""Loading prompts with references: the embedded task, local files or hub datasets.

Sources, by ``data.path``:

* ``embedded`` (with ``data.name=embedded``): the seeded arithmetic task;
* a local ``.jsonl`` / ``.json`` / ``.parquet`` file, or a folder holding
  ``<split>.jsonl`` / ``.json`` / ``.parquet`` (``data.path=../shared/data/gsm8k``);
* otherwise a hub dataset name (``data.path=openai/gsm8k``), through ``datasets.load_dataset``.

Local JSON is parsed here record by record, so every value keeps the type the file gives
it (no column type inference that turns ``"1"`` into ``1`` or a missing key into
``None``) and a broken line is reported as that row. Parquet files and hub datasets are
read with ``datasets``.

Every row is validated. A bad row raises :class:`DataError` naming the file (or hub split),
the row and the field, e.g. ``train.jsonl row 12: field 'answer' is missing``. Rows are
numbered from 0: in a JSON lines file row ``n`` is line ``n + 1`` (blank lines are ignored
but keep their number); in a JSON array, a parquet file or a hub split it is the record's
position. With ``data.skip_bad_rows=true`` bad rows (unparsable lines included) are
skipped and counted instead (:attr:`LoadedSplit.skipped`, logged). A split with no usable
row is always an error, so a run stops at start-up, before any model loads.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from critic_free_rl.config.schema import DataConfig
from critic_free_rl.data.answers import parse_reference
from critic_free_rl.data.arithmetic import HELDOUT, ArithmeticSpec, generate_task

log = logging.getLogger(__name__)

LOCAL_EXTENSIONS = ("jsonl", "json", "parquet")


class DataError(ValueError):
    """A dataset problem found at start-up (names the file, row and field)."""


@dataclass(frozen=True)
class Example:
    """One prompt with the reference answer the success reward checks against.

    ``uid`` is ``<split>-<row>`` with the 0-based row number of the source.
    """

    uid: str
    question: str
    prompt: str
    reference: str


@dataclass(frozen=True)
class LoadedSplit:
    """The validated examples of one split, plus how many bad rows were skipped."""

    examples: list[Example]
    skipped: int
    source: str


class _BadRow:
    """Stands in for a row that could not even be parsed (kept so numbering stays exact)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


# ---------------------------------------------------------------------- sources
def _embedded_rows(cfg: DataConfig, split: str) -> tuple[list[Any], str]:
    part = {cfg.train_split: "train", cfg.test_split: "test"}.get(split, split)
    if part not in ("train", "test", HELDOUT):
        raise DataError(f"the embedded task has no split {split!r}; its splits: {cfg.train_split!r}, {cfg.test_split!r}, {HELDOUT!r}")
    task = generate_task(cfg.num_train, cfg.num_test, cfg.seed, ArithmeticSpec(**cfg.spec), cfg.num_heldout if part == HELDOUT else 0)
    return task[part], f"embedded:{split}(seed={cfg.seed})"


def _looks_local(path: str) -> bool:
    """Whether ``data.path`` is meant as a file system path rather than a hub name."""
    return path.startswith(("/", ".", "~")) or path.rsplit(".", 1)[-1] in LOCAL_EXTENSIONS


def _data_file(cfg: DataConfig, split: str) -> Optional[Path]:
    """The local file of ``split``, or None when ``data.path`` names a hub dataset."""
    explicit = cfg.train_file if split == cfg.train_split else cfg.test_file
    if explicit:
        f = Path(explicit).expanduser()
        if not f.is_file():
            raise DataError(f"data file {f} (split {split!r}) does not exist")
        return f
    p = Path(cfg.path).expanduser()
    if p.is_file():
        return p
    if p.is_dir():
        for ext in LOCAL_EXTENSIONS:
            f = p / f"{split}.{ext}"
            if f.is_file():
                return f
        raise DataError(f"data.path={cfg.path}: folder has no {split}.jsonl, {split}.json or {split}.parquet (split {split!r})")
    if _looks_local(cfg.path):
        raise DataError(f"data.path={cfg.path}: no such file or folder")
    return None


def _parse_line(raw: bytes) -> Any:
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return _BadRow(f"not UTF-8 text ({exc.reason} at byte {exc.start})")
    except json.JSONDecodeError as exc:
        return _BadRow(f"not valid JSON ({exc.msg} at column {exc.colno}); expected one JSON object per line")


def _json_rows(path: Path) -> list[Any]:
    """Rows of a JSON lines file, or of a ``.json`` file holding one JSON array.

    Unparsable lines become :class:`_BadRow` so they are reported (or skipped) as rows;
    a blank line becomes None and is ignored.
    """
    data = path.read_bytes()
    if path.suffix == ".json" and data.lstrip()[:1] == b"[":
        try:
            return json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"data file {path}: not a valid JSON array of rows ({exc})") from exc
    return [_parse_line(line) if line.strip() else None for line in data.split(b"\n")]


def _file_rows(path: Path) -> list[Any]:
    if path.suffix in (".jsonl", ".json"):
        return _json_rows(path)
    if path.suffix == ".parquet":
        import datasets

        try:
            return list(datasets.load_dataset("parquet", data_files=str(path), split="train"))
        except Exception as exc:  # corrupt file: pyarrow raises several types
            raise DataError(f"data file {path}: cannot be read as parquet ({exc})") from exc
    raise DataError(f"data file {path}: unsupported extension {path.suffix!r}; expected one of .jsonl, .json, .parquet")


def _hub_rows(cfg: DataConfig, split: str) -> list[Any]:
    import datasets

    try:
        return list(datasets.load_dataset(cfg.path, cfg.subset, split=split))
    except Exception as exc:  # offline, unknown name or split: datasets raises many types
        raise DataError(
            f"data.path={cfg.path!r} is not a local file or folder, and loading it as a hub dataset "
            f"(subset {cfg.subset!r}, split {split!r}) failed: {exc}"
        ) from exc


# ---------------------------------------------------------------------- validation
def _example(row: Any, i: int, source: str, cfg: DataConfig, split: str) -> Example:
    """Validate row ``i`` of ``source`` into an :class:`Example`; raise :class:`DataError`."""
    fields = (cfg.question_field, cfg.answer_field)
    if isinstance(row, _BadRow):
        raise DataError(f"{source} row {i}: {row.reason}")
    if not isinstance(row, dict):
        raise DataError(f"{source} row {i}: expected an object with fields {fields[0]!r} and {fields[1]!r}, got {type(row).__name__}")
    for key in fields:
        if key not in row:
            raise DataError(f"{source} row {i}: field {key!r} is missing (fields present: {sorted(row)})")
        value = row[key]
        if not isinstance(value, str):
            raise DataError(f"{source} row {i}: field {key!r} is not a string ({type(value).__name__})")
        if not value.strip():
            raise DataError(f"{source} row {i}: field {key!r} is empty")
    question, answer = row[cfg.question_field], row[cfg.answer_field]
    try:
        reference = parse_reference(answer, cfg.answer_format)
    except ValueError as exc:
        raise DataError(f"{source} row {i}: field {cfg.answer_field!r} has no parsable reference answer for data.answer_format={cfg.answer_format!r}: {exc}") from exc
    if not reference:
        raise DataError(f"{source} row {i}: field {cfg.answer_field!r} has an empty reference answer for data.answer_format={cfg.answer_format!r}")
    if len(question) > cfg.max_prompt_chars:
        raise DataError(f"{source} row {i}: field {cfg.question_field!r} is longer than data.max_prompt_chars={cfg.max_prompt_chars}")
    return Example(uid=f"{split}-{i}", question=question, prompt=cfg.prompt_template.format(question=question), reference=reference)


def _validate(rows: list[Any], source: str, cfg: DataConfig, split: str, limit: Optional[int]) -> LoadedSplit:
    out: list[Example] = []
    skipped: list[str] = []
    for i, row in enumerate(rows):
        if limit is not None and len(out) >= limit:
            break
        if row is None:  # a blank line of a JSON lines file
            continue
        try:
            out.append(_example(row, i, source, cfg, split))
        except DataError as exc:
            if not cfg.skip_bad_rows:
                raise
            skipped.append(str(exc))
    if skipped:
        log.warning("%s: skipped %d bad rows (data.skip_bad_rows=true); first: %s", source, len(skipped), skipped[0])
    if not out:
        raise DataError(
            f"{source}: no usable rows in split {split!r} ({sum(r is not None for r in rows)} rows read, "
            f"{len(skipped)} skipped as bad{'; first: ' + skipped[0] if skipped else ''})"
        )
    return LoadedSplit(out, len(skipped), source)


def load_split(cfg: DataConfig, split: str) -> LoadedSplit:
    """Validated examples of ``split`` (``cfg.train_split`` or ``cfg.test_split``) and the
    number of bad rows skipped; raises :class:`DataError` (see the module docstring)."""
    if cfg.name == "embedded":
        rows, source = _embedded_rows(cfg, split)
    else:
        path = _data_file(cfg, split)
        rows, source = (_file_rows(path), str(path)) if path is not None else (_hub_rows(cfg, split), f"{cfg.path}:{split}")
    # the final split is read whole: its size is the point of it (data.num_heldout for the embedded task)
    limit = cfg.max_train_rows if split == cfg.train_split else None if split == cfg.final_split != cfg.test_split else cfg.max_test_rows
    return _validate(rows, source, cfg, split, limit)


def load_examples(cfg: DataConfig, split: str) -> list[Example]:
    """Validated examples of ``split`` (see :func:`load_split`)."""
    return load_split(cfg, split).examples
