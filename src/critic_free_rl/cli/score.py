"""``critic-free-rl score --input FILE.jsonl --output OUT.jsonl [overrides]``: offline
reward scoring of ``{prompt, completion, reference}`` rows through
:func:`~critic_free_rl.rewards.pipeline.score_records` (the training code path)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from critic_free_rl.cli.hydra_app import QUIET_HYDRA, run_hydra
from critic_free_rl.config.environment import setup_environment
from critic_free_rl.config.loading import to_train_config

SCORE_FIELDS = ("prompt", "completion", "reference")


def read_score_input(path: Path) -> list[dict]:
    """Rows of a ``score`` input jsonl; ``SystemExit`` naming the file, line and field on bad input."""
    if not path.is_file():
        sys.exit(f"critic-free-rl score: {path}: no such file")
    rows = []
    with path.open("rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
                row = json.loads(line) if line.strip() else None
            except UnicodeDecodeError:
                sys.exit(f"critic-free-rl score: {path}:{n}: not UTF-8 text")
            except json.JSONDecodeError as e:
                sys.exit(f"critic-free-rl score: {path}:{n}: invalid JSON ({e.msg} at column {e.colno})")
            if row is None:  # blank line
                continue
            if not isinstance(row, dict):
                sys.exit(f"critic-free-rl score: {path}:{n}: expected a JSON object with {', '.join(SCORE_FIELDS)}")
            for field in SCORE_FIELDS:
                if field not in row:
                    sys.exit(f"critic-free-rl score: {path}:{n}: missing field {field!r} (rows need {', '.join(SCORE_FIELDS)})")
                if not isinstance(row[field], str):
                    sys.exit(f"critic-free-rl score: {path}:{n}: field {field!r} must be a string, got {type(row[field]).__name__}")
            rows.append(row)
    return rows


def _score_task(cfg, records: list[dict], output: Path) -> None:
    import dataclasses

    tc = to_train_config(cfg)
    setup_environment()
    from critic_free_rl.logging.tracker import atomic_write_text
    from critic_free_rl.rewards.pipeline import RewardPipeline, score_records
    from critic_free_rl.rewards.prm_train import resolve_prm_path

    if tc.model.embedded:  # the embedded policy's tokenizer, without building the policy
        from critic_free_rl.models.tiny import build_char_tokenizer

        tokenizer = build_char_tokenizer()
    else:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tc.model.name_or_path, trust_remote_code=tc.model.trust_remote_code)
    rcfg = dataclasses.replace(tc.reward, prm=resolve_prm_path(tc.reward, tc.data))
    with RewardPipeline(rcfg, tokenizer) as pipeline:
        scored = [row for lo in range(0, len(records), 256) for row in score_records(records[lo:lo + 256], pipeline)]
    atomic_write_text(output, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in scored))
    correct = sum(row["correct"] for row in scored)
    print(f"[critic-free-rl] scored {len(scored)} rows with reward={rcfg.name} ({correct} correct) -> {output}")


def run(args: list[str]) -> None:
    """Parse ``--input`` / ``--output``, read and check the input before any model loads, score."""
    paths, overrides, it = {}, [], iter(args)
    for arg in it:
        key, eq, value = arg.partition("=")
        if key in ("--input", "--output"):
            paths[key[2:]] = value if eq else next(it, "")
            if not paths[key[2:]]:
                sys.exit(f"critic-free-rl score: {key} needs a file name")
        else:
            overrides.append(arg)
    for key in ("input", "output"):
        if key not in paths:
            sys.exit(f"critic-free-rl score: --{key} is required (usage: score --input FILE.jsonl --output OUT.jsonl [overrides])")
    records = read_score_input(Path(paths["input"]))  # before any model loads
    output = Path(paths["output"])
    if not output.parent.is_dir():
        sys.exit(f"critic-free-rl score: {output}: the folder {output.parent} does not exist")
    run_hydra("score", overrides + QUIET_HYDRA, lambda cfg: _score_task(cfg, records, output))
