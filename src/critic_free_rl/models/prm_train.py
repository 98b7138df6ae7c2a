"""The embedded PRM (``reward.prm: embedded``): a generative verifier
(:mod:`critic_free_rl.models.step_verifier`) on the warm-started embedded policy, calibrated
on labelled steps of the embedded arithmetic task and read as a ``token_cls`` PRM.

Recipe (a verifier that scores a step by its likelihood under a model of correct solutions,
with a calibration learned on balanced synthetic labels):

- backbone: the embedded policy (``init: policy``, :data:`POLICY`, SFT on correct
  solutions), or a fresh tiny Qwen2 (``init: scratch``, the shape of ``arch``: tests);
- data: :func:`~critic_free_rl.data.arithmetic_steps.labelled_solutions` on train-split
  problems: clean solutions and solutions with one mistake of each kind, labelled
  "correct so far" by :func:`~critic_free_rl.data.arithmetic_steps.label_steps`;
- inputs built by :meth:`ProcessRewardModel.build_inputs`, so the model is trained on
  exactly the sequences it is read on; the step cross-entropy (class 1 = good) is taken
  at the SEP positions, plus (weight ``dense``) the
  :func:`~critic_free_rl.data.arithmetic_steps.prefix_labels` of every step character;
  both train the calibration only;
- (weight ``lm``) next-character prediction of the good steps: the only loss that moves
  the LM, keeping it a model of correct solutions (0: the policy's LM as it is).

The held-out measure (:mod:`critic_free_rl.models.prm_eval`) runs on test-split problems,
disjoint from the training ones, and is kept in the cache record ``prm_eval.json`` with the
training seconds and the machine's load (docs/embedded_reward_models.md has the figures).
"""
from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import Any, Callable, Optional

from critic_free_rl.config.schema import DataConfig
from critic_free_rl.data.arithmetic_steps import LabelledSolution, prefix_labels

SEPARATOR = "<extra_0>"
#: tiny Qwen2 of an embedded PRM started from scratch (``init: scratch``)
DEFAULT_ARCH: dict[str, int] = {"hidden_size": 128, "num_layers": 4, "num_heads": 4, "intermediate_size": 512}
#: AdamW steps / batch / lr, auxiliary weights, solutions sampled per train problem, seed, and
#: the backbone: ``policy`` (the warm-started embedded policy of :data:`POLICY`) or ``scratch``
DEFAULT_TRAIN: dict[str, Any] = {"steps": 100, "batch_size": 32, "lr": 2e-2, "dense": 0.0, "lm": 0.0,
                                 "per_problem": 1, "seed": 0, "init": "policy"}
#: the embedded policy (``configs/model/tiny.yaml``: ``model.arch`` / ``model.warmstart``) the PRM starts from
POLICY: dict[str, dict[str, float]] = {
    "arch": {"hidden_size": 128, "num_layers": 4, "num_heads": 2, "intermediate_size": 512},
    "warmstart": {"steps": 900.0, "batch_size": 64.0, "lr": 0.002, "seed": 0.0, "stop_at_accuracy": 0.3,
                  "eval_every": 25.0, "eval_problems": 200.0, "early_answer_frac": 0.7}}
INITS = ("policy", "scratch")
_VERSION = 3


def _aux_targets(prm: Any, data: list[LabelledSolution], seqs: list[list[int]],
                 positions: list[list[int]]) -> tuple[list[list[int]], list[list[int]]]:
    """Per position of each sequence: the :func:`prefix_labels` class (0 / 1) of a step-text
    token, and the next token when that token belongs to a good step (the LM target);
    -100 elsewhere (prompt, SEP, a step whose tokens are not its characters)."""
    flat = [s for d in data for s in d.steps]
    step_ids = iter(prm.tokenizer(flat, add_special_tokens=False)["input_ids"] if flat else [])
    prefix, lm = [], []
    for d, ids, pos in zip(data, seqs, positions):
        cls, nxt = [-100] * len(ids), [-100] * len(ids)
        for k, (chars, good) in enumerate(zip(prefix_labels(d.prompt, d.steps), d.labels)):
            n = len(next(step_ids))
            if k < len(pos) and n == len(chars):
                cls[pos[k] - n:pos[k]] = [int(c) for c in chars]
            if k < len(pos) and good:
                lo = max(1, pos[k] - n)
                nxt[lo - 1:pos[k] - 1] = ids[lo:pos[k]]
        prefix.append(cls)
        lm.append(nxt)
    return prefix, lm


def _pad(rows: list[list[int]], width: int, fill: int):
    import torch

    out = torch.full((len(rows), width), fill, dtype=torch.long)
    for r, row in enumerate(rows):
        out[r, :len(row)] = torch.tensor(row, dtype=torch.long)
    return out


def train_prm(init_dir: str | Path, out_dir: str | Path, data: list[LabelledSolution], steps: int,
              batch_size: int = 64, lr: float = 2e-3, seed: int = 0, separator: str = SEPARATOR,
              device: str = "auto", dense: float = 0.0, lm: float = 0.0, log: Callable[[str], None] = print,
              log_every: int = 100, check: Optional[Callable[[Any], str]] = None) -> Path:
    """Fine-tune the :class:`~critic_free_rl.models.step_verifier.StepVerifierForTokenClassification`
    in ``init_dir`` on ``data`` (module docstring) and ``save_pretrained`` it (with its tokenizer) to ``out_dir``.

    AdamW with a linear warm-up and cosine decay (:class:`~critic_free_rl.models.warmstart.CosineAdamW`);
    shuffled epochs. The step and ``dense`` losses train the calibration only; the LM learns
    from the ``lm`` loss alone (next character of good steps: a model of correct solutions),
    and stays as given when ``lm`` is 0. ``check(model)``, when given, is called at each log line and its text
    logged with it (a held-out figure during a long run).
    """
    import torch
    import torch.nn.functional as F

    from critic_free_rl.models.warmstart import CosineAdamW
    from critic_free_rl.rewards.prm import ProcessRewardModel

    prm = ProcessRewardModel(str(init_dir), "token_cls", separator, device=device)
    seqs, positions = prm.build_inputs([d.prompt for d in data], [d.steps for d in data])
    labels = [d.labels[:len(pos)] for d, pos in zip(data, positions)]
    prefix_targets, lm_targets = _aux_targets(prm, data, seqs, positions) if dense > 0 or lm > 0 else ([], [])
    model, pad, dev = prm.model, prm.pad_id, prm.device
    model.model.requires_grad_(lm > 0)
    torch.manual_seed(seed)
    rng = random.Random(seed)
    model.train()
    optimizer = CosineAdamW(model, lr, steps)
    order: list[int] = []
    started = time.monotonic()
    log(f"[train-prm] {len(seqs)} sequences ready")
    for step in range(steps):
        if len(order) < batch_size:  # a fresh shuffled epoch (length-sorted batches would skew the labels)
            order = rng.sample(range(len(seqs)), len(seqs))
        idx, order = order[:batch_size], order[batch_size:]
        width = max(len(seqs[j]) for j in idx)
        ids = _pad([seqs[j] for j in idx], width, pad).to(dev)
        mask = _pad([[1] * len(seqs[j]) for j in idx], width, 0).to(dev)
        rows = [row for row, j in enumerate(idx) for _ in positions[j]]
        cols = [p for j in idx for p in positions[j]]
        target = torch.tensor([int(y) for j in idx for y in labels[j]], device=dev)
        all_logits, hidden = model.step_logits(ids, mask, detach=True)  # [b, W, 2], [b, W, H]
        logits = all_logits[rows, cols]  # [N, 2]
        loss = F.cross_entropy(logits, target)
        parts = [f"step {loss.item():.4f}"]
        for weight, targets, name in ((dense, prefix_targets, "prefix"), (lm, lm_targets, "lm")):
            if weight <= 0:
                continue
            tok = _pad([targets[j] for j in idx], width, -100).to(dev)
            keep = tok >= 0
            out = all_logits[keep] if name == "prefix" else model.lm_logits(hidden[keep]).float()
            aux = F.cross_entropy(out, tok[keep])
            loss = loss + weight * aux
            parts.append(f"{name} {aux.item():.4f}")
        optimizer.step(loss)
        if log_every and (step % log_every == 0 or step == steps - 1):
            acc = float((logits.argmax(-1) == target).float().mean())
            if check is not None:
                model.eval()
                parts.append(check(model))
                model.train()
            log(f"[train-prm] step {step + 1}/{steps} losses: {' '.join(parts)}; batch step-acc {acc:.3f} "
                f"({time.monotonic() - started:.0f} s)")
    out_path = Path(out_dir)
    out_path.mkdir(parents=True, exist_ok=True)
    model.eval().save_pretrained(out_path, safe_serialization=True)
    prm.tokenizer.save_pretrained(out_path)
    return out_path


def task_prompts(dcfg: DataConfig) -> dict[str, list[str]]:
    """The embedded task's train and test prompts (disjoint question sets)."""
    from critic_free_rl.data.arithmetic import ArithmeticSpec, generate_task

    task = generate_task(dcfg.num_train, dcfg.num_test, dcfg.seed, ArithmeticSpec(**dcfg.spec))
    prompts = {split: [dcfg.prompt_template.format(question=r["question"]) for r in rows] for split, rows in task.items()}
    if set(prompts["train"]) & set(prompts["test"]):
        raise RuntimeError("embedded task: train and test prompts overlap")
    return prompts


def prm_settings(dcfg: DataConfig, separator: str = SEPARATOR, arch: Optional[dict[str, int]] = None,
                 train: Optional[dict[str, float]] = None) -> dict[str, Any]:
    """Every setting that shapes the embedded PRM (its cache key and record)."""
    # an architecture override can only shape a fresh model: it means init=scratch unless init is given
    t = {**DEFAULT_TRAIN, **({"init": "scratch"} if arch else {}), **(train or {})}
    backbone = {"policy": POLICY} if t["init"] == "policy" else {"arch": {**DEFAULT_ARCH, **(arch or {})}}
    return {**backbone, "train": t,
            "separator": separator, "data_seed": dcfg.seed, "spec": dict(dcfg.spec), "num_train": dcfg.num_train,
            "num_test": dcfg.num_test, "template": dcfg.prompt_template, "v": _VERSION}


def embedded_prm(dcfg: DataConfig, separator: str = SEPARATOR, arch: Optional[dict[str, int]] = None,
                 train: Optional[dict[str, float]] = None, device: str = "auto",
                 log: Callable[[str], None] = print) -> Path:
    """Train (once, cached as ``prm-<key>``, see :mod:`critic_free_rl.models.cache`) the
    tiny PRM on the embedded task of ``dcfg`` and return its folder. The folder holds
    ``prm_eval.json`` (the held-out first-error AUCs, step accuracy, training seconds) and
    ``prm_train.json`` (the settings)."""
    from critic_free_rl.models.cache import cached

    settings = prm_settings(dcfg, separator, arch, train)
    if settings["train"]["init"] not in INITS:
        raise ValueError(f"reward.embedded_rm.prm.init={settings['train']['init']!r}; expected one of {INITS}")
    return cached("prm", settings, lambda folder: _build_prm(folder, settings, dcfg, device, log))


def _build_prm(out: Path, settings: dict, dcfg: DataConfig, device: str, log: Callable[[str], None]) -> None:
    from critic_free_rl.data.arithmetic_steps import first_error_solutions, labelled_solutions
    from critic_free_rl.models.cache import write_record
    from critic_free_rl.models.prm_eval import evaluate_prm, format_auc
    from critic_free_rl.models.step_verifier import step_verifier_from
    from critic_free_rl.models.tiny import build_tiny_model

    import torch

    t, separator = settings["train"], settings["separator"]
    started, load_start = time.monotonic(), os.getloadavg()[0]
    seed = int(t["seed"])
    prompts = task_prompts(dcfg)
    train_data = labelled_solutions(prompts["train"], int(t["per_problem"]), seed)
    good = sum(y for d in train_data for y in d.labels)
    total = sum(len(d.labels) for d in train_data)
    log(f"[train-prm] {len(train_data)} solutions, {good} good / {total - good} bad steps -> {out}")
    if t["init"] == "policy":
        from critic_free_rl.config.schema import ModelConfig
        from critic_free_rl.models.loading import embedded_policy

        lm = embedded_policy(ModelConfig(name_or_path="embedded", embedded=True, **settings["policy"]), dcfg)
    else:
        lm = build_tiny_model(out.parent / "lm", seed=seed, **settings["arch"])
    init = step_verifier_from(str(lm), str(out.parent / "init"), separator)
    train_prm(init, out, train_data, int(t["steps"]), int(t["batch_size"]), float(t["lr"]), seed, separator, device,
              float(t["dense"]), float(t["lm"]), log)
    train_seconds = time.monotonic() - started
    report = evaluate_prm(out, first_error_solutions(prompts["test"], seed + 1), separator, device)
    report["train_seconds"] = train_seconds
    report["machine"] = {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                         "load_avg_1min_start": load_start, "load_avg_1min_end": os.getloadavg()[0]}
    log(f"[train-prm] held-out {format_auc(report)}; trained in {train_seconds:.0f} s on {os.cpu_count()} CPUs, "
        f"{torch.get_num_threads()} torch threads, load average {load_start:.1f} -> {os.getloadavg()[0]:.1f}")
    write_record(out, "prm_eval.json", report)
    write_record(out, "prm_train.json", settings)
