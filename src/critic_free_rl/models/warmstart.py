"""Short supervised warm start (SFT) of a causal LM on (prompt, solution) pairs.

Used to turn the randomly initialised embedded policy into a model that solves part of
the held-out problems, so RL has room to improve it. Loss is next-token cross-entropy on
solution tokens only (prompt tokens masked), plus EOS after the solution.

SFT accuracy on the embedded task does not rise smoothly: it sits near zero, then climbs
from ~10% to ~80% within a couple of hundred steps, at a step that moves with the data
order. A fixed step count therefore lands anywhere on that climb. With a :class:`StopRule`
the run instead checks greedy accuracy on a validation split every ``eval_every`` steps
and stops at the first check that reaches the rule's accuracy, so the policy handed to RL starts inside a
known accuracy band whatever the seed.
"""
from __future__ import annotations

import functools
import math
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from critic_free_rl.logging.progress import terminal_bar

_BOXED = re.compile(r"\\boxed\{\s*(-?\d+)\s*\}")


@dataclass(frozen=True)
class StopRule:
    """Stop SFT at the first check where greedy accuracy on ``problems`` reaches ``accuracy``."""

    problems: list[tuple[str, str]]  # (prompt, reference answer)
    accuracy: float
    eval_every: int = 25
    max_new_tokens: int = 64


@dataclass(frozen=True)
class WarmStartResult:
    path: Path
    steps: int
    #: greedy accuracy on the stop rule's problems at the last check (None: no rule)
    accuracy: Optional[float]


class CosineAdamW:
    """The supervised recipe shared by the warm start and the embedded PRM: AdamW (weight
    decay 0.01, betas 0.9 / 0.98), linear warm-up over the first 5% of ``steps`` then cosine
    decay to 0, gradient norm clipped at 1."""

    def __init__(self, model: torch.nn.Module, lr: float, steps: int) -> None:
        self.model = model
        self.opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
        warm = max(1, steps // 20)
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
        )

    def step(self, loss: torch.Tensor) -> None:
        """Backward ``loss``, clip, one optimizer and schedule step, clear the gradients."""
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)


def last_boxed_is(text: str, answer: str) -> bool:
    """Whether the last ``\\boxed{n}`` in ``text`` is the integer ``answer`` (the embedded
    task's answers; a regex, never an evaluation of the text)."""
    found = _BOXED.findall(text)
    return bool(found) and found[-1] == answer.strip()


def _encode(tok, prompt: str, solution: str) -> tuple[list[int], list[int]]:
    p = tok(prompt, add_special_tokens=False)["input_ids"]
    s = tok(solution, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    return p + s, [-100] * len(p) + s


@torch.no_grad()
def greedy_accuracy(model, tok, problems: list[tuple[str, str]], max_new_tokens: int = 64, batch_size: int = 256) -> float:
    """Fraction of ``(prompt, answer)`` whose greedy completion's last ``\\boxed{n}`` is ``answer``
    (integer answers of the embedded task; a regex, never an evaluation of the text)."""
    was_training, side = model.training, tok.padding_side
    model.eval()
    tok.padding_side = "left"
    hits = 0
    for s in range(0, len(problems), batch_size):
        chunk = problems[s : s + batch_size]
        enc = tok([p for p, _ in chunk], return_tensors="pt", padding=True, add_special_tokens=False)
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        for text, (_, answer) in zip(tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True), chunk):
            hits += last_boxed_is(text, answer)
    tok.padding_side = side
    model.train(was_training)
    return hits / max(1, len(problems))


def sft(
    model_dir: str | Path,
    out_dir: str | Path,
    pairs: list[tuple[str, str]],
    steps: int,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    log_every: int = 100,
    stop: Optional[StopRule] = None,
) -> WarmStartResult:
    """Fine-tune ``model_dir`` on ``pairs`` of (prompt, solution) for at most ``steps`` AdamW
    steps (cosine schedule over ``steps`` with warm-up; ``stop`` ends it early) and
    ``save_pretrained`` the result to ``out_dir``."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.train()
    optimizer = CosineAdamW(model, lr, steps)
    encoded = [_encode(tok, p, s) for p, s in pairs]
    accuracy, done = None, steps
    bar = terminal_bar(steps, "warmstart")  # a live bar on a terminal, else the plain lines below
    say = bar.write if bar is not None else functools.partial(print, flush=True)
    for step in range(steps):
        batch = [encoded[rng.randrange(len(encoded))] for _ in range(batch_size)]
        width = max(len(ids) for ids, _ in batch)
        ids = torch.full((batch_size, width), tok.pad_token_id, dtype=torch.long)
        labels = torch.full((batch_size, width), -100, dtype=torch.long)
        attn = torch.zeros((batch_size, width), dtype=torch.long)
        for i, (x, y) in enumerate(batch):
            ids[i, : len(x)] = torch.tensor(x)
            labels[i, : len(y)] = torch.tensor(y)
            attn[i, : len(x)] = 1
        loss = model(input_ids=ids, attention_mask=attn, labels=labels).loss
        optimizer.step(loss)
        if bar is not None:
            bar.set_postfix(loss=f"{loss.item():.4f}", val_acc=accuracy)
            bar.update(1)
        elif log_every and (step % log_every == 0 or step == steps - 1):
            say(f"[warmstart] step {step + 1}/{steps} loss {loss.item():.4f}")
        if stop is not None and (step + 1) % stop.eval_every == 0:
            accuracy = greedy_accuracy(model, tok, stop.problems, stop.max_new_tokens)
            say(f"[warmstart] step {step + 1}: validation greedy accuracy {accuracy:.3f} (stop at {stop.accuracy:.3f})")
            if accuracy >= stop.accuracy:
                done = step + 1
                break
    if bar is not None:
        bar.close()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return WarmStartResult(out, done, accuracy)
