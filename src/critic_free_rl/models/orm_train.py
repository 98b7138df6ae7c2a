"""The embedded ORM (``reward.orm: embedded``): a tiny ``Qwen2ForSequenceClassification``
(one logit) that reads ``prompt + completion`` and scores whether the final answer is right.

Recipe: the backbone is initialised from the embedded PRM (which already reads the
task's arithmetic; its 2-class head is replaced by a fresh 1-logit one) and fine-tuned
with binary cross-entropy on final-answer labels (the last line is ``\\boxed{v}`` with
``v`` the question's value) of solutions drawn like the PRM's
(:func:`~critic_free_rl.data.arithmetic_steps.labelled_solutions`, half of them clean),
their steps joined by newlines as the policy writes them. The held-out accuracy
(score >= 0.5) on test-split problems is kept in the cache record ``orm_eval.json``.
"""
from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any, Callable, Optional

from critic_free_rl.config.schema import DataConfig
from critic_free_rl.data.arithmetic_steps import LabelledSolution, parse_problem

#: AdamW steps / batch / lr, solutions per train problem, share of clean ones, seed
DEFAULT_ORM_TRAIN: dict[str, float] = {"steps": 300, "batch_size": 32, "lr": 1e-3, "per_problem": 2, "clean": 0.5,
                                       "seed": 0}
_VERSION = 1


def final_answer_correct(d: LabelledSolution) -> bool:
    """Whether the last step of ``d`` boxes the value of its question."""
    return bool(d.steps) and d.steps[-1].replace(" ", "") == f"\\boxed{{{parse_problem(d.prompt).values()[-1]}}}"


def train_orm(init_dir: str | Path, out_dir: str | Path, data: list[LabelledSolution], steps: int, batch_size: int = 32,
              lr: float = 1e-3, seed: int = 0, device: str = "auto", log: Callable[[str], None] = print,
              log_every: int = 50) -> Path:
    """Fine-tune a 1-logit sequence classifier on the backbone in ``init_dir`` (module
    docstring) and ``save_pretrained`` it with its tokenizer to ``out_dir``."""
    import torch
    import torch.nn.functional as F
    from transformers import AutoTokenizer, Qwen2ForSequenceClassification

    from critic_free_rl.models.warmstart import CosineAdamW
    from critic_free_rl.rewards.hf_scoring import encode_prompts, resolve_device

    dev = resolve_device(device)
    tok = AutoTokenizer.from_pretrained(init_dir)
    torch.manual_seed(seed)
    # the PRM's backbone read as a plain Qwen2 (its verifier head is left out), so the ORM loads anywhere
    model = Qwen2ForSequenceClassification.from_pretrained(init_dir, num_labels=1, ignore_mismatched_sizes=True,
                                                           dtype=torch.float32).to(dev)
    model.config.pad_token_id = tok.pad_token_id
    completions = tok(["\n".join(d.steps) for d in data], add_special_tokens=False)["input_ids"]
    seqs = [p + c for p, c in zip(encode_prompts(tok, [d.prompt for d in data]), completions)]
    labels = [float(final_answer_correct(d)) for d in data]
    rng = random.Random(seed)
    model.train()
    optimizer = CosineAdamW(model, lr, steps)
    started = time.monotonic()
    for step in range(steps):
        idx = [rng.randrange(len(seqs)) for _ in range(batch_size)]
        width = max(len(seqs[j]) for j in idx)
        ids = torch.full((len(idx), width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, j in enumerate(idx):  # right padding: the classifier pools the last real token
            ids[row, :len(seqs[j])] = torch.tensor(seqs[j])
            mask[row, :len(seqs[j])] = 1
        logits = model(input_ids=ids.to(dev), attention_mask=mask.to(dev)).logits[:, 0]  # [b]
        target = torch.tensor([labels[j] for j in idx], device=dev)
        loss = F.binary_cross_entropy_with_logits(logits.float(), target)
        optimizer.step(loss)
        if log_every and (step % log_every == 0 or step == steps - 1):
            acc = float(((logits > 0).float() == target).float().mean())
            log(f"[train-orm] step {step + 1}/{steps} loss {loss.item():.4f} batch acc {acc:.3f} "
                f"({time.monotonic() - started:.0f} s)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.eval().save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def evaluate_orm(model_dir: str | Path, data: list[LabelledSolution], device: str = "auto") -> dict[str, Any]:
    """Held-out accuracy (score >= 0.5) and AUC of the ORM in ``model_dir`` on ``data``, read
    through :class:`~critic_free_rl.rewards.orm.OutcomeRewardModel` as the reward pipeline reads it."""
    from critic_free_rl.models.prm_eval import auc
    from critic_free_rl.rewards.orm import OutcomeRewardModel

    orm = OutcomeRewardModel(str(model_dir), device=device, batch_size=128)
    scores = orm.score([d.prompt for d in data], ["\n".join(d.steps) for d in data])
    labels = [final_answer_correct(d) for d in data]
    return {
        "accuracy": sum((s >= 0.5) == y for s, y in zip(scores, labels)) / len(data),
        "auc": auc([s for s, y in zip(scores, labels) if y], [s for s, y in zip(scores, labels) if not y]),
        "correct_fraction": sum(labels) / len(data),
        "solutions": len(data),
    }


def embedded_orm(dcfg: DataConfig, prm_dir: str | Path, prm_settings: dict[str, Any],
                 train: Optional[dict[str, float]] = None, device: str = "auto",
                 log: Callable[[str], None] = print) -> Path:
    """Train (once, cached as ``orm-<key>``) the ORM on the backbone of the embedded PRM in
    ``prm_dir`` (built from ``prm_settings``); its folder holds ``orm_eval.json`` and ``orm_train.json``."""
    from critic_free_rl.models.cache import cached

    settings = {"prm": prm_settings, "train": {**DEFAULT_ORM_TRAIN, **(train or {})}, "v": _VERSION}
    return cached("orm", settings, lambda folder: _build_orm(folder, settings, dcfg, Path(prm_dir), device, log))


def _build_orm(out: Path, settings: dict, dcfg: DataConfig, prm_dir: Path, device: str,
               log: Callable[[str], None]) -> None:
    from critic_free_rl.data.arithmetic_steps import labelled_solutions
    from critic_free_rl.models.cache import write_record
    from critic_free_rl.models.prm_train import task_prompts

    t = settings["train"]
    seed, started = int(t["seed"]), time.monotonic()
    prompts = task_prompts(dcfg)
    data = labelled_solutions(prompts["train"], int(t["per_problem"]), seed, clean=float(t["clean"]))
    train_orm(prm_dir, out, data, int(t["steps"]), int(t["batch_size"]), float(t["lr"]), seed, device, log)
    report = evaluate_orm(out, labelled_solutions(prompts["test"], 2, seed + 1, clean=float(t["clean"])), device)
    report["train_seconds"] = time.monotonic() - started
    log(f"[train-orm] held-out final-answer accuracy {report['accuracy']:.3f} (AUC {report['auc']:.3f}, "
        f"{report['correct_fraction']:.2f} of {report['solutions']} solutions correct)")
    write_record(out, "orm_eval.json", report)
    write_record(out, "orm_train.json", settings)
