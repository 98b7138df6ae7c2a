"""``critic-free-rl score --input FILE.jsonl --output OUT.jsonl [overrides]``: offline
reward scoring of ``{prompt, completion, reference}`` rows through
:func:`~critic_free_rl.rewards.pipeline.score_records` (the training code path), streamed
row by row (:mod:`critic_free_rl.rewards.score_file`): each bad row is named with its line
number and skipped, and the exit code is the number of bad rows."""
from __future__ import annotations

import sys
from pathlib import Path

from critic_free_rl.cli.hydra_app import QUIET_HYDRA, run_hydra
from critic_free_rl.config.environment import setup_environment
from critic_free_rl.config.loading import to_train_config


def _score_task(cfg, src: Path, output: Path) -> None:
    import dataclasses

    tc = to_train_config(cfg)
    setup_environment()
    from critic_free_rl.rewards.pipeline import RewardPipeline
    from critic_free_rl.models.loading import resolve_model_path
    from critic_free_rl.models.reward_models import resolve_orm_path, resolve_prm_path
    from critic_free_rl.rewards.score_file import score_file

    if tc.model.embedded:  # the embedded policy's tokenizer, without building the policy
        from critic_free_rl.models.tiny import build_char_tokenizer

        tokenizer = build_char_tokenizer()
    else:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tc.model.name_or_path, trust_remote_code=tc.model.trust_remote_code)
    rcfg = dataclasses.replace(tc.reward, prm=resolve_prm_path(tc.reward, tc.data), orm=resolve_orm_path(tc.reward, tc.data))
    # reward=prime scores with an implicit PRM that starts from the policy's weights (the warm start)
    policy = resolve_model_path(tc.model, tc.data) if rcfg.name == "prime" else None
    with RewardPipeline(rcfg, tokenizer, policy, tc.model.trust_remote_code) as pipeline:
        scored, failed = score_file(src, output, pipeline)
    print(f"[critic-free-rl] scored {scored} rows with reward={rcfg.name}, {failed} bad row(s) skipped -> {output}", flush=True)
    if failed:  # the exit code counts the bad rows (255 at most)
        sys.exit(min(failed, 255))


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
    src, output = Path(paths["input"]), Path(paths["output"])
    if not src.is_file():  # before any model loads
        sys.exit(f"critic-free-rl score: {src}: no such file")
    if not output.parent.is_dir():
        sys.exit(f"critic-free-rl score: {output}: the folder {output.parent} does not exist")
    run_hydra("score", overrides + QUIET_HYDRA, lambda cfg: _score_task(cfg, src, output))
