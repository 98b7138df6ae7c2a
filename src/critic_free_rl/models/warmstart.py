"""Short supervised warm start (SFT) of a causal LM on (prompt, solution) pairs.

Used to turn the randomly initialised embedded policy into a model that solves part of
the held-out problems, so RL has room to improve it. Loss is next-token cross-entropy on
solution tokens only (prompt tokens masked), plus EOS after the solution.
"""
from __future__ import annotations

import math
import random
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def _encode(tok, prompt: str, solution: str) -> tuple[list[int], list[int]]:
    p = tok(prompt, add_special_tokens=False)["input_ids"]
    s = tok(solution, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    return p + s, [-100] * len(p) + s


def sft(
    model_dir: str | Path,
    out_dir: str | Path,
    pairs: list[tuple[str, str]],
    steps: int,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    log_every: int = 100,
) -> Path:
    """Fine-tune ``model_dir`` on ``pairs`` of (prompt, solution) for ``steps`` AdamW steps
    (cosine schedule with warm-up) and ``save_pretrained`` the result to ``out_dir``."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    encoded = [_encode(tok, p, s) for p, s in pairs]
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
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if log_every and (step % log_every == 0 or step == steps - 1):
            print(f"[warmstart] step {step + 1}/{steps} loss {loss.item():.4f}", flush=True)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out
