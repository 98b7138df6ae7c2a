"""The embedded tiny PRM: a ``Qwen2ForTokenClassification`` trained on automatically
labelled steps of the embedded arithmetic task (``reward.prm: embedded``).

Labels (:func:`label_steps`) follow the PRM800K / Math-Shepherd convention: a step is
good when it is arithmetically right AND follows from the question and the steps before
it; every step after the first bad one is bad ("correct so far"). Concretely, with
``v`` the value derived so far (the question's first number at the start) and ``i`` the
number of question operations applied:

- ``a op_1 b_1 ... = c`` is good when ``c`` is the value of its left side and either
  it *advances* (``a == v`` and its operations are the question's next ones; then
  ``v = c``), *restates* an earlier good advancing step verbatim (numbers), or is an
  *identity* on the current value (``v + 0 = v``);
- ``\\boxed{x}`` is good when every operation has been applied and ``x == v``;
- anything else (unparseable text, a truncated line) is bad.

Training data (:func:`sample_solution`) comes from a noisy solver run on train-split
problems: gold steps, errors (wrong result: off by a little or digits swapped; a wrong
or sign-flipped operand; a step starting from a value that does not follow; a skipped
operation; a wrong or premature ``\\boxed{}``; a truncated line), continuations that
carry the error forward, and correct-but-redundant steps (a repeated line, ``x + 0 = x``,
a repeated box). Inputs are built by :meth:`ProcessRewardModel.build_inputs` and the
cross-entropy is taken at the SEP positions only, so the model is trained on exactly the
sequences it is read on. Held-out step accuracy on test-split problems is measured
through :meth:`ProcessRewardModel.score` and saved as ``prm_eval.json`` in the model
folder. The model is cached under ``cache_root()/prm-<hash>`` like the embedded policy.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from critic_free_rl.config.schema import DataConfig, RewardConfig

EMBEDDED = "embedded"
SEPARATOR = "<extra_0>"
#: tiny Qwen2 of the default embedded PRM
DEFAULT_ARCH: dict[str, int] = {"hidden_size": 128, "num_layers": 3, "num_heads": 2, "intermediate_size": 512}
#: AdamW steps / batch / lr, solutions sampled per train problem, seed
DEFAULT_TRAIN: dict[str, float] = {"steps": 1500, "batch_size": 64, "lr": 3e-3, "dense": 1.0, "per_problem": 4,
                                   "seed": 0}
#: held-out solutions sampled per test problem
EVAL_PER_PROBLEM = 4
_VERSION = 1

_QUESTION = re.compile(r"(\d+)((?:\s*[+-]\s*\d+)+)")
_TERM = re.compile(r"([+-])\s*(\d+)")
_STEP = re.compile(r"^(-?\d+)((?:\s*[+-]\s*\d+)+)\s*=\s*(-?\d+)\s*\.?$")
_BOXED = re.compile(r"^\\boxed\{\s*(-?\d+)\s*\}\.?$")

Ops = tuple[tuple[str, int], ...]


# --------------------------------------------------------------------------- labelling rule
@dataclass(frozen=True)
class Problem:
    """``start op_1 b_1 op_2 b_2 ...`` of an embedded question."""

    start: int
    ops: Ops

    def values(self) -> list[int]:
        """``[v_0, ..., v_K]``: the start and the value after each operation."""
        out = [self.start]
        for op in self.ops:
            out.append(_apply(out[-1], (op,)))
        return out


def parse_problem(prompt: str) -> Problem:
    """The arithmetic chain of an embedded prompt (``What is 17 + 5 - 8?``)."""
    m = _QUESTION.search(prompt)
    if m is None:
        raise ValueError(f"no arithmetic chain in prompt {prompt!r}")
    return Problem(int(m.group(1)), _terms(m.group(2)))


def _terms(text: str) -> Ops:
    return tuple((sign, int(b)) for sign, b in _TERM.findall(text))


def _apply(a: int, ops: Ops) -> int:
    for sign, b in ops:
        a = a + b if sign == "+" else a - b
    return a


def label_steps(prompt: str, steps: list[str]) -> list[bool]:
    """Good (True) / bad label of each step of a solution to ``prompt`` (module docstring)."""
    problem = parse_problem(prompt)
    value, applied, ok = problem.start, 0, True
    established: set[tuple[int, Ops, int]] = set()
    labels = []
    for text in steps:
        text = text.strip()
        good = False
        if ok and (m := _STEP.match(text)):
            a, ops, c = int(m.group(1)), _terms(m.group(2)), int(m.group(3))
            if _apply(a, ops) == c:
                if a == value and ops == problem.ops[applied:applied + len(ops)]:
                    good, value, applied = True, c, applied + len(ops)
                    established.add((a, ops, c))
                else:
                    good = (a, ops, c) in established or (a == value and all(b == 0 for _, b in ops))
        elif ok and (m := _BOXED.match(text)):
            good = applied == len(problem.ops) and int(m.group(1)) == value
        ok = ok and good
        labels.append(ok)
    return labels


def _acceptable(problem: Problem, value: int, applied: int, established: set[tuple[int, Ops, int]]) -> list[str]:
    """Every good step (canonical spelling) in state ``(value, applied, established)``."""
    rest = problem.ops[applied:]
    lines = [_line(value, rest[:m], _apply(value, rest[:m])) for m in range(1, len(rest) + 1)]
    lines += [_line(value, ((sign, 0),), value) for sign in "+-"]
    lines += [_line(a, ops, c) for a, ops, c in established]
    if not rest:
        lines.append(_boxed(value))
    return lines


def prefix_labels(prompt: str, steps: list[str]) -> list[list[bool]]:
    """Per step, per character: is the solution still consistent up to this character, i.e.
    are the steps before good and this step's text so far the start of a good step?

    A dense companion of :func:`label_steps` (which it agrees with at each step's end,
    except for a complete-looking prefix such as a truncated ``17 + 5 = 2``): it tells the
    model *where* a step goes wrong. Canonical spelling (as :func:`sample_solution` writes).
    """
    problem = parse_problem(prompt)
    value, applied, ok = problem.start, 0, True
    established: set[tuple[int, Ops, int]] = set()
    out = []
    for text, good in zip(steps, label_steps(prompt, steps)):
        good_lines = _acceptable(problem, value, applied, established) if ok else []
        chars = [any(line.startswith(text[:j + 1]) for line in good_lines) for j in range(len(text))]
        if good:  # advance the state exactly as label_steps does
            if m := _STEP.match(text):
                a, ops, c = int(m.group(1)), _terms(m.group(2)), int(m.group(3))
                if a == value and ops and ops == problem.ops[applied:applied + len(ops)]:
                    value, applied = c, applied + len(ops)
                    established.add((a, ops, c))
            chars = [True] * len(text)
        ok = ok and good
        out.append(chars)
    return out


# --------------------------------------------------------------------------- noisy solver
def _line(a: int, ops: Ops, c: int) -> str:
    return " ".join([str(a)] + [f"{s} {b}" for s, b in ops]) + f" = {c}"


def _boxed(x: int) -> str:
    return f"\\boxed{{{x}}}"


def _near(x: int, rng: random.Random) -> int:
    """A plausible wrong value for ``x``: off by a little, by ten, or digits swapped."""
    r = rng.random()
    if r < 0.25 and x >= 10:
        s = str(x)
        i = rng.randrange(len(s) - 1)
        swapped = int(s[:i] + s[i + 1] + s[i] + s[i + 2:])
        if swapped != x:
            return swapped
    if r < 0.4:
        y = x + rng.choice((-10, 10))
    else:
        y = x + rng.choice((-3, -2, -1, -1, 1, 1, 2, 3))
    return y if y >= 0 and y != x else x + 1


def _wrong_op(op: tuple[str, int], problem: Problem, rng: random.Random) -> tuple[str, int]:
    """A different operation: sign flipped, or another operand (from the question or random)."""
    sign, b = op
    r = rng.random()
    if r < 0.35:
        return ("-" if sign == "+" else "+", b)
    others = [b2 for _, b2 in problem.ops if b2 != b]
    if r < 0.6 and others:
        return (sign, rng.choice(others))
    b2 = rng.randint(1, 9)
    return (sign, b2) if b2 != b else (sign, b2 % 9 + 1)


def _step_error(kind: str, cur: int, i: int, problem: Problem, history: list[int],
                rng: random.Random) -> tuple[str, int, int]:
    """``(line, believed value after it, operations consumed)`` of one erroneous step."""
    op = problem.ops[i]
    if kind == "result":  # right operation, wrong arithmetic
        c = _near(_apply(cur, (op,)), rng)
        return _line(cur, (op,), c), c, 1
    if kind == "operand":  # a wrong operand / sign, arithmetic right
        wrong = _wrong_op(op, problem, rng)
        c = _apply(cur, (wrong,))
        return _line(cur, (wrong,), c), c, 1
    if kind == "skip" and i + 1 < len(problem.ops):  # applies the next operation instead
        nxt = problem.ops[i + 1]
        return _line(cur, (nxt,), _apply(cur, (nxt,))), _apply(cur, (nxt,)), 2
    if kind == "identity":  # x + 0 = x on a value that was never derived
        a = _near(cur, rng)
        return _line(a, ((rng.choice("+-"), 0),), a), a, 0
    # "follow": arithmetic right, but starts from a value that does not follow
    stale = [h for h in history if h != cur]
    a = rng.choice(stale) if stale and rng.random() < 0.4 else _near(cur, rng)
    return _line(a, (op,), _apply(a, (op,))), _apply(a, (op,)), 1


STEP_ERRORS = ("result", "result", "operand", "follow", "skip", "identity")
BOX_ERRORS = ("near", "stale", "first")


def sample_solution(problem: Problem, rng: random.Random, err_rate: float,
                    redundant_rate: float) -> tuple[list[str], list[str]]:
    """One noisy solution: ``(steps, tags)`` with each step's provenance tag (``gold``,
    ``redundant``, ``merged``, ``box``, ``after`` or ``error:<kind>``). After an error the
    solver carries on from its (wrong) believed value, or stops."""
    K = len(problem.ops)
    cur, i, history = problem.start, 0, [problem.start]
    steps: list[str] = []
    tags: list[str] = []
    erred = False

    def add(line: str, tag: str) -> None:
        steps.append(line.strip())
        tags.append("after" if erred and not tag.startswith("error") else tag)

    while i < K:
        if steps and rng.random() < redundant_rate:
            r = rng.random()
            if r < 0.45:
                add(steps[-1] if _STEP.match(steps[-1]) else _line(cur, (("+", 0),), cur), "redundant")
            elif r < 0.9:
                add(_line(cur, ((rng.choice("+-"), 0),), cur), "redundant")
            else:
                add(rng.choice([s for s in steps if _STEP.match(s)] or [_line(cur, (("+", 0),), cur)]), "redundant")
            continue
        r = rng.random()
        if r < err_rate:
            if rng.random() < 0.1:  # premature box
                add(_boxed(cur), "error:premature_box")
                erred = True
                if rng.random() < 0.5:
                    return steps, tags
                continue
            if rng.random() < 0.06:  # a line cut short (generation budget)
                full = _line(cur, (problem.ops[i],), _apply(cur, (problem.ops[i],)))
                add(full[:rng.randrange(1, len(full) - 1)], "error:truncated")
                return steps, tags
            kind = rng.choice(STEP_ERRORS)
            line, cur, used = _step_error(kind, cur, i, problem, history, rng)
            add(line, f"error:{kind}")
            erred = True
            i += used
            history.append(cur)
            if rng.random() < 0.2:
                return steps, tags
            continue
        if i + 1 < K and rng.random() < 0.05:  # two operations in one correct step
            ops = problem.ops[i:i + 2]
            add(_line(cur, ops, _apply(cur, ops)), "merged")
            cur, i = _apply(cur, ops), i + 2
        else:
            add(_line(cur, (problem.ops[i],), _apply(cur, (problem.ops[i],))), "gold")
            cur, i = _apply(cur, (problem.ops[i],)), i + 1
        history.append(cur)
    if rng.random() < err_rate:
        kind = rng.choice(BOX_ERRORS)
        wrong = {"near": _near(cur, rng), "stale": history[-2] if len(history) > 1 else _near(cur, rng),
                 "first": problem.start}[kind]
        add(_boxed(wrong if wrong != cur else cur + 1), f"error:box_{kind}")
    else:
        add(_boxed(cur), "box")
    while rng.random() < redundant_rate * 0.5:  # correct-but-redundant lines after the answer
        add(_boxed(cur) if rng.random() < 0.5 else _line(cur, (("+", 0),), cur), "redundant")
    return steps, tags


@dataclass
class LabelledSolution:
    prompt: str
    steps: list[str]
    labels: list[bool]
    categories: list[str]  # per step: good:<tag> | first_error:<tag> | after_error


def _categories(labels: list[bool], tags: list[str]) -> list[str]:
    out, seen_bad = [], False
    for good, tag in zip(labels, tags):
        if good:
            out.append(f"good:{tag}")
        elif not seen_bad:
            out.append(f"first_error:{tag.removeprefix('error:')}")
        else:
            out.append("after_error")
        seen_bad = seen_bad or not good
    return out


def labelled_solutions(prompts: list[str], per_problem: int, seed: int) -> list[LabelledSolution]:
    """``per_problem`` noisy solutions of each prompt, labelled by :func:`label_steps`.

    Each solution draws its error rate from {0, 0.15, 0.3, 0.5} and its redundancy rate
    from {0, 0.15, 0.3}, so the set holds clean chains, single errors and messy ones.
    """
    rng = random.Random(seed)
    out = []
    for prompt in prompts:
        problem = parse_problem(prompt)
        for _ in range(per_problem):
            steps, tags = sample_solution(problem, rng, rng.choice((0.0, 0.15, 0.3, 0.5)), rng.choice((0.0, 0.15, 0.3)))
            labels = label_steps(prompt, steps)
            out.append(LabelledSolution(prompt, steps, labels, _categories(labels, tags)))
    return out


# --------------------------------------------------------------------------- training / evaluation
def _dense_targets(prm: Any, data: list[LabelledSolution], seqs: list[list[int]],
                   positions: list[list[int]]) -> list[list[int]]:
    """Per position of each sequence, the :func:`prefix_labels` class (0 / 1) of a
    step-text token; -100 elsewhere (prompt, SEP, a step whose tokens are not its characters)."""
    flat = [s for d in data for s in d.steps]
    step_ids = iter(prm.tokenizer(flat, add_special_tokens=False)["input_ids"] if flat else [])
    prefix = []
    for d, ids, pos in zip(data, seqs, positions):
        cls = [-100] * len(ids)
        for k, chars in enumerate(prefix_labels(d.prompt, d.steps)):
            n = len(next(step_ids))
            if k < len(pos) and n == len(chars):
                cls[pos[k] - n:pos[k]] = [int(c) for c in chars]
        prefix.append(cls)
    return prefix


def train_prm(init_dir: str | Path, out_dir: str | Path, data: list[LabelledSolution], steps: int,
              batch_size: int = 64, lr: float = 3e-3, seed: int = 0, separator: str = SEPARATOR,
              device: str = "auto", dense: float = 0.0, log: Callable[[str], None] = print,
              log_every: int = 250) -> Path:
    """Fine-tune the token-classification model in ``init_dir`` on ``data`` and
    ``save_pretrained`` it (with its tokenizer) to ``out_dir``.

    Inputs and SEP positions come from :meth:`ProcessRewardModel.build_inputs`; the
    step cross-entropy (class 1 = good) is applied at the SEP positions, the only ones
    the reward pipeline reads. With ``dense > 0`` the same head also learns, with that
    weight, the :func:`prefix_labels` of every step character: a dense signal of where a
    step goes wrong, which makes the arithmetic and copying checks learnable in a short
    run. AdamW with a linear warm-up and cosine decay; shuffled epochs.
    """
    import torch
    import torch.nn.functional as F

    from critic_free_rl.models.warmstart import CosineAdamW
    from critic_free_rl.rewards.prm import ProcessRewardModel

    prm = ProcessRewardModel(str(init_dir), "token_cls", separator, device=device)
    seqs, positions = prm.build_inputs([d.prompt for d in data], [d.steps for d in data])
    labels = [d.labels[:len(pos)] for d, pos in zip(data, positions)]
    prefix_targets = _dense_targets(prm, data, seqs, positions)
    model, pad, dev = prm.model, prm.pad_id, prm.device
    torch.manual_seed(seed)
    rng = random.Random(seed)
    model.train()
    optimizer = CosineAdamW(model, lr, steps)
    lengths = [len(s) for s in seqs]
    order: list[int] = []
    for step in range(steps):
        if len(order) < batch_size:  # a fresh shuffled epoch (length-sorted batches would skew the labels)
            order = rng.sample(range(len(seqs)), len(seqs))
        idx, order = order[:batch_size], order[batch_size:]
        width = max(lengths[j] for j in idx)
        ids = torch.full((len(idx), width), pad, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, j in enumerate(idx):
            ids[row, :lengths[j]] = torch.tensor(seqs[j])
            mask[row, :lengths[j]] = 1
        rows = [row for row, j in enumerate(idx) for _ in positions[j]]
        cols = [p for j in idx for p in positions[j]]
        target = torch.tensor([int(y) for j in idx for y in labels[j]], device=dev)
        hidden = model.model(input_ids=ids.to(dev), attention_mask=mask.to(dev)).last_hidden_state  # [b, W, H]
        logits = model.score(hidden[rows, cols])  # [N, 2]
        loss = cls_loss = F.cross_entropy(logits.float(), target)
        parts = [f"step-loss {cls_loss.item():.4f}"]
        if dense > 0:
            tok = torch.full((len(idx), width), -100, dtype=torch.long)
            for row, j in enumerate(idx):
                tok[row, :lengths[j]] = torch.tensor(prefix_targets[j])
            keep = (tok >= 0).to(dev)
            aux = F.cross_entropy(model.score(hidden[keep]).float(), tok.to(dev)[keep])
            loss = loss + dense * aux
            parts.append(f"prefix-loss {aux.item():.4f}")
        optimizer.step(loss)
        if log_every and (step % log_every == 0 or step == steps - 1):
            acc = float((logits.argmax(-1) == target).float().mean())
            log(f"[train-prm] step {step + 1}/{steps} {' '.join(parts)} batch step-acc {acc:.3f}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.eval().save_pretrained(out, safe_serialization=True)
    prm.tokenizer.save_pretrained(out)
    return out


def evaluate_prm(model_dir: str | Path, data: list[LabelledSolution], separator: str = SEPARATOR,
                 device: str = "auto", batch_size: int = 128) -> dict[str, Any]:
    """Step-level accuracy of the PRM in ``model_dir`` on ``data`` (score >= 0.5 = good),
    read through :meth:`ProcessRewardModel.score` exactly as the reward pipeline reads it."""
    from critic_free_rl.rewards.prm import ProcessRewardModel

    prm = ProcessRewardModel(str(model_dir), "token_cls", separator, device=device, batch_size=batch_size)
    scores = prm.score([d.prompt for d in data], [d.steps for d in data])
    hits: dict[str, list[bool]] = defaultdict(list)
    for d, sample in zip(data, scores):
        for label, score, cat in zip(d.labels, sample, d.categories):
            hit = (score >= 0.5) == label
            hits["all"].append(hit)
            hits["good" if label else "bad"].append(hit)
            hits[cat].append(hit)
    rate = {k: sum(v) / len(v) for k, v in hits.items()}
    n_good, n_bad = len(hits["good"]), len(hits["bad"])
    return {
        "steps": len(hits["all"]),
        "solutions": len(data),
        "good_fraction": n_good / len(hits["all"]),
        "majority_baseline": max(n_good, n_bad) / len(hits["all"]),
        "accuracy": rate["all"],
        "balanced_accuracy": 0.5 * (rate.get("good", 0.0) + rate.get("bad", 0.0)),
        "accuracy_good": rate.get("good"),
        "accuracy_bad": rate.get("bad"),
        "by_category": {k: {"n": len(hits[k]), "accuracy": rate[k]}
                        for k in sorted(hits) if k not in ("all", "good", "bad")},
    }


# --------------------------------------------------------------------------- cache / resolution
def _key(parts: dict) -> str:
    from critic_free_rl.models.loading import _key as key

    return key(parts)


def embedded_prm(dcfg: DataConfig, separator: str = SEPARATOR, arch: Optional[dict[str, int]] = None,
                 train: Optional[dict[str, float]] = None, device: str = "auto",
                 log: Callable[[str], None] = print) -> Path:
    """Train (once) the tiny PRM on the embedded task of ``dcfg`` and return its folder.

    Cached under ``cache_root()/prm-<hash of every setting that shapes it>``; built in a
    temporary folder and moved into place with ``os.replace`` so a half-built model never
    looks cached. The folder holds ``prm_eval.json`` (held-out step accuracy on test-split
    problems) and ``prm_train.json`` (the settings).
    """
    from critic_free_rl.models.loading import cache_lock, cache_root

    arch = {**DEFAULT_ARCH, **(arch or {})}
    t = {**DEFAULT_TRAIN, **(train or {})}
    parts = {"arch": arch, "train": t, "separator": separator, "data_seed": dcfg.seed, "spec": dict(dcfg.spec),
             "num_train": dcfg.num_train, "num_test": dcfg.num_test, "template": dcfg.prompt_template,
             "eval_per_problem": EVAL_PER_PROBLEM, "v": _VERSION}
    out = cache_root() / f"prm-{_key(parts)}"
    with cache_lock(out):  # concurrent runs (a parallel compare) train it once
        if not (out / "config.json").is_file():
            _build_prm(out, parts, dcfg, device, log)
    return out


def _build_prm(out: Path, parts: dict, dcfg: DataConfig, device: str, log: Callable[[str], None]) -> None:
    """Train, evaluate and save the PRM described by ``parts`` (see :func:`embedded_prm`) into ``out``."""
    from critic_free_rl.data.arithmetic import ArithmeticSpec, generate_task
    from critic_free_rl.models.tiny import build_tiny_model

    arch, t, separator = parts["arch"], parts["train"], parts["separator"]
    started = time.monotonic()
    seed = int(t["seed"])
    tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        task = generate_task(dcfg.num_train, dcfg.num_test, dcfg.seed, ArithmeticSpec(**dcfg.spec))
        prompts = {split: [dcfg.prompt_template.format(question=r["question"]) for r in rows]
                   for split, rows in task.items()}
        train_data = labelled_solutions(prompts["train"], int(t["per_problem"]), seed)
        test_data = labelled_solutions(prompts["test"], EVAL_PER_PROBLEM, seed + 1)
        counts = Counter(y for d in train_data for y in d.labels)
        log(f"[train-prm] {len(train_data)} solutions, {counts[True]} good / {counts[False]} bad steps -> {out}")
        init = build_tiny_model(tmp / "init", seed=seed, token_classification=True, extra_tokens=[separator], **arch)
        train_prm(init, tmp / "model", train_data, int(t["steps"]), int(t["batch_size"]), float(t["lr"]), seed,
                  separator, device, float(t["dense"]), log)
        train_seconds = time.monotonic() - started
        report = {**evaluate_prm(tmp / "model", test_data, separator, device), "train_seconds": train_seconds}
        (tmp / "model" / "prm_eval.json").write_text(json.dumps(report, indent=2))
        (tmp / "model" / "prm_train.json").write_text(json.dumps(parts, indent=2))
        out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp / "model", out)  # atomic: a half-built model never looks cached
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_eval(model_dir: str | Path) -> dict[str, Any]:
    """The ``prm_eval.json`` saved next to an embedded PRM."""
    return json.loads((Path(model_dir) / "prm_eval.json").read_text())


def embedded_prm_for(rcfg: RewardConfig, dcfg: DataConfig, log: Callable[[str], None] = print) -> Path:
    """:func:`embedded_prm` for a run's reward and data configs (``critic-free-rl train-prm``).

    Raises ``ValueError`` when the data is not the embedded task (the tiny PRM only knows
    its arithmetic) or ``reward.prm_kind`` is not ``token_cls``.
    """
    if dcfg.name != EMBEDDED:
        raise ValueError(f"reward.prm=embedded is the tiny PRM of the embedded arithmetic task, not of "
                         f"data.name={dcfg.name!r}; set reward.prm to a PRM for that data (hub name or path)")
    if rcfg.prm_kind != "token_cls":
        raise ValueError(f"reward.prm=embedded is a token_cls PRM; got reward.prm_kind={rcfg.prm_kind!r}")
    return embedded_prm(dcfg, rcfg.prm_separator or SEPARATOR, log=log)


def resolve_prm_path(rcfg: RewardConfig, dcfg: DataConfig, log: Callable[[str], None] = print) -> Optional[str]:
    """``reward.prm`` as something ``from_pretrained`` can load.

    ``embedded`` becomes the cached tiny PRM (trained on first use, see
    :func:`embedded_prm_for`) when ``reward.name`` uses a PRM, and ``None`` when it does
    not (nothing is trained); any other value (hub name, path, ``None``) is returned as is.
    """
    from critic_free_rl.rewards.pipeline import REWARD_MODES

    if rcfg.prm != EMBEDDED:
        return rcfg.prm
    if REWARD_MODES.get(rcfg.name) is None:
        return None
    return str(embedded_prm_for(rcfg, dcfg, log))
