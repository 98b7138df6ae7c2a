"""Hostile datasets: every bad row or file fails at start-up with a message naming the file,
the 0-based row and the field, or is skipped and counted with ``data.skip_bad_rows=true``;
the real GSM8K / MATH500 copies under ``../shared/data`` load through the same code."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from conftest import SHARED_DATA, compose_train, run_cli
from omegaconf import OmegaConf

from critic_free_rl.config.schema import DataConfig
from critic_free_rl.data.datasets import DataError, load_examples, load_split


def data_config(path: Path | str, **overrides: Any) -> DataConfig:
    """A validated ``DataConfig`` reading ``path`` (question/answer fields, raw answers)."""
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(DataConfig), {"name": "test", "path": str(path), **overrides}))


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    """``rows`` as JSON lines; a ``str`` row is written verbatim (to plant broken lines)."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


GOOD = {"question": "What is 1+1?", "answer": "2"}


@pytest.mark.parametrize(
    "bad_row, answer_format, expected",
    [
        ({"question": "q"}, "raw", "row 1: field 'answer' is missing"),
        ({"answer": "2"}, "raw", "row 1: field 'question' is missing"),
        ({"question": "  \n", "answer": "2"}, "raw", "row 1: field 'question' is empty"),
        ({"question": "q", "answer": ""}, "raw", "row 1: field 'answer' is empty"),
        ({"question": "q", "answer": 5}, "raw", "row 1: field 'answer' is not a string (int)"),
        ({"question": ["q"], "answer": "2"}, "raw", "row 1: field 'question' is not a string (list)"),
        ({"question": "q", "answer": None}, "raw", "row 1: field 'answer' is not a string (NoneType)"),
        ({"question": "q", "answer": "so the answer is 42"}, "gsm8k", "row 1: field 'answer' has no parsable reference answer for data.answer_format='gsm8k'"),
        ({"question": "q", "answer": "#### "}, "gsm8k", "row 1: field 'answer' has an empty reference answer"),
        ({"question": "q", "answer": "no box here"}, "boxed", "row 1: field 'answer' has no parsable reference answer for data.answer_format='boxed'"),
        ({"question": "q" * 3000, "answer": "2"}, "raw", "row 1: field 'question' is longer than data.max_prompt_chars=2048"),
        ("question,answer", "raw", "row 1: not valid JSON"),
        ('{"question": "q", "answer": "2"', "raw", "row 1: not valid JSON"),
        (["q", "2"], "raw", "row 1: expected an object with fields 'question' and 'answer', got list"),
        ('"just a string"', "raw", "row 1: expected an object with fields 'question' and 'answer', got str"),
    ],
)
def test_bad_row_names_file_row_and_field(tmp_path: Path, bad_row: Any, answer_format: str, expected: str) -> None:
    good = {**GOOD, "answer": "#### 2"} if answer_format == "gsm8k" else {**GOOD, "answer": "\\boxed{2}"} if answer_format == "boxed" else GOOD
    path = write_jsonl(tmp_path / "train.jsonl", [good, bad_row, good])
    with pytest.raises(DataError) as err:
        load_examples(data_config(path, answer_format=answer_format), "train")
    assert str(err.value).startswith(f"{path} {expected}"), str(err.value)


def test_rows_are_numbered_by_line_from_zero_and_keep_their_types(tmp_path: Path) -> None:
    """Blank lines keep their number; a numeric-looking string in one row never changes how
    another row is read (column type inference would blame row 0 here)."""
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps({"question": "q", "answer": "1"}) + "\n\n" + json.dumps({"question": "q", "answer": 5}) + "\n")
    with pytest.raises(DataError, match=r"train\.jsonl row 2: field 'answer' is not a string \(int\)"):
        load_examples(data_config(path), "train")


def test_invalid_utf8_line_is_a_bad_row(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b'\n{"question": "\xff\xfe", "answer": "2"}\n')
    with pytest.raises(DataError, match=r"train\.jsonl row 1: not UTF-8 text"):
        load_examples(data_config(path), "train")


def test_json_array_file_of_arrays_is_rejected_per_row(tmp_path: Path) -> None:
    path = tmp_path / "train.json"
    path.write_text(json.dumps([GOOD, ["What is 1+1?", "2"]]))
    with pytest.raises(DataError, match=r"train\.json row 1: expected an object with fields 'question' and 'answer', got list"):
        load_examples(data_config(path), "train")


def test_json_array_file_of_objects_loads(tmp_path: Path) -> None:
    path = tmp_path / "train.json"
    path.write_text(json.dumps([GOOD, {"question": "What is 2+2?", "answer": "4"}], indent=2))
    examples = load_examples(data_config(path), "train")
    assert [(e.uid, e.reference) for e in examples] == [("train-0", "2"), ("train-1", "4")]


def test_broken_json_array_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "train.json"
    path.write_text('[{"question": "q", "answer": "2"},')
    with pytest.raises(DataError, match=rf"data file {path}: not a valid JSON array of rows"):
        load_examples(data_config(path), "train")


def test_missing_file_and_folder_without_split(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=rf"data.path={tmp_path}/nope.jsonl: no such file or folder"):
        load_examples(data_config(tmp_path / "nope.jsonl"), "train")
    with pytest.raises(DataError, match=rf"data.path={tmp_path}/nope: no such file or folder"):
        load_examples(data_config(tmp_path / "nope"), "train")
    with pytest.raises(DataError, match=rf"data.path={tmp_path}: folder has no train.jsonl, train.json or train.parquet"):
        load_examples(data_config(tmp_path), "train")
    with pytest.raises(DataError, match=rf"data file {tmp_path}/gone.jsonl \(split 'train'\) does not exist"):
        load_examples(data_config(tmp_path, train_file=str(tmp_path / "gone.jsonl")), "train")


def test_unsupported_extension(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    path.write_text("question,answer\nq,2\n")
    with pytest.raises(DataError, match=r"unsupported extension '\.csv'"):
        load_examples(data_config(path), "train")


def test_skip_bad_rows_counts_and_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = [GOOD, {"question": "q"}, "not json", GOOD, {"question": "q", "answer": 3}, ["a", "b"], GOOD]
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    with caplog.at_level(logging.WARNING, logger="critic_free_rl.data.datasets"):
        split = load_split(data_config(path, skip_bad_rows=True), "train")
    assert split.skipped == 4
    assert [e.uid for e in split.examples] == ["train-0", "train-3", "train-6"]
    assert f"{path}: skipped 4 bad rows (data.skip_bad_rows=true); first: {path} row 1: field 'answer' is missing" in caplog.text


def test_limit_counts_usable_rows_only(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", [{"question": "q"}, GOOD, GOOD, GOOD])
    split = load_split(data_config(path, skip_bad_rows=True, max_train_rows=2), "train")
    assert ([e.uid for e in split.examples], split.skipped) == (["train-1", "train-2"], 1)


@pytest.mark.parametrize("skip", [True, False])
def test_empty_after_filtering_is_an_error(tmp_path: Path, skip: bool) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", [{"question": "q"}, {"question": "q", "answer": 1}])
    with pytest.raises(DataError, match=r"no usable rows in split 'train' \(2 rows read, 2 skipped as bad; first: .*row 0: field 'answer' is missing" if skip else r"row 0: field 'answer' is missing"):
        load_examples(data_config(path, skip_bad_rows=skip), "train")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(DataError, match=r"empty\.jsonl: no usable rows in split 'train' \(0 rows read, 0 skipped as bad\)"):
        load_examples(data_config(empty, skip_bad_rows=skip), "train")


def test_train_with_unusable_data_stops_before_the_model_loads(tmp_path: Path) -> None:
    """The model path does not exist: only a data check that runs first can produce this
    error. No TensorBoard file is left, so the same run_dir can be reused without overwrite."""
    path = write_jsonl(tmp_path / "bad.jsonl", [{"question": "q"}, {"question": "q", "answer": ""}])
    run = tmp_path / "run"
    res = run_cli("train", "data.name=bad", f"data.path={path}", "data.skip_bad_rows=true", "model.embedded=false",
                  f"model.name_or_path={tmp_path}/no-model", "rollout=hf", "trainer=torch", f"run_dir={run}", timeout=120)
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert f"{path}: no usable rows in split 'train' (2 rows read, 2 skipped as bad" in out, out[-3000:]
    assert "no-model" not in out.replace(f"model.name_or_path={tmp_path}/no-model", "")
    assert (run / "config.yaml").is_file() and not list(run.glob("events.out.tfevents*"))


# ---------------------------------------------------------------------- real data
def _shipped_data_config(name: str, path: Path) -> DataConfig:
    """``configs/data/<name>.yaml`` composed as ``train data=<name> data.path=<path>`` would."""
    return OmegaConf.to_object(compose_train(f"data={name}", f"data.path={path}").data)


@pytest.mark.skipif(not (SHARED_DATA / "gsm8k" / "train.jsonl").is_file(), reason="../shared/data/gsm8k absent")
def test_real_gsm8k_loads() -> None:
    cfg = _shipped_data_config("gsm8k", SHARED_DATA / "gsm8k")
    train, test = load_split(cfg, "train"), load_split(cfg, "test")
    assert (len(train.examples), len(test.examples), train.skipped, test.skipped) == (7473, 1319, 0, 0)
    first = train.examples[0]
    assert (first.uid, first.reference) == ("train-0", "72")
    assert first.prompt.startswith("Question: Natalia sold clips") and first.prompt.endswith("\\boxed{}.\n")
    assert all(e.reference.lstrip("-").replace(".", "", 1).isdigit() for e in train.examples + test.examples)


@pytest.mark.skipif(not (SHARED_DATA / "math500" / "test.jsonl").is_file(), reason="../shared/data/math500 absent")
def test_real_math500_loads() -> None:
    cfg = _shipped_data_config("math500", SHARED_DATA / "math500")
    test = load_split(cfg, cfg.test_split)
    assert (len(test.examples), test.skipped) == (500, 0)
    assert test.examples[0].reference == "\\left( 3, \\frac{\\pi}{2} \\right)"
