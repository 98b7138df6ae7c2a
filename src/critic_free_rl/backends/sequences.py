"""Prompt + response packing and per-token log-probs of the response tokens.

Sequences are right-padded ``[prompt | response | pad]`` rows; response quantities are
returned aligned to a ``[B, T]`` grid (T = longest response) with ``response_mask``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from critic_free_rl.algorithms.losses import entropy_from_logits


@dataclass
class Packed:
    """``input_ids``/``attention_mask`` [B, L]; ``response_mask`` [B, T] bool;
    ``logit_index`` [B, T]: position in the row whose logits predict response token t;
    ``response_tokens`` [B, T]."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    response_mask: torch.Tensor
    logit_index: torch.Tensor
    response_tokens: torch.Tensor

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def slice(self, idx: torch.Tensor) -> "Packed":
        """Rows ``idx``, trimmed to their own longest row and response."""
        am = self.attention_mask[idx]
        width = int(am.sum(1).max().item()) if len(idx) else 1
        rm = self.response_mask[idx]
        t = int(rm.sum(1).max().item()) if len(idx) else 1
        t = max(t, 1)
        return Packed(self.input_ids[idx, :width], am[:, :width], rm[:, :t], self.logit_index[idx, :t].clamp(max=width - 1), self.response_tokens[idx, :t])

    def without_prefix(self, n: int) -> "Packed":
        """The rows after their first ``n`` tokens (which a cache then holds): ``logit_index``
        counts from the new first column. Needs ``n`` below every row's prompt length."""
        return Packed(self.input_ids[:, n:], self.attention_mask[:, n:], self.response_mask,
                      (self.logit_index - n).clamp(min=0), self.response_tokens)


@dataclass
class SharedPrefix:
    """The first ``length`` tokens that rows of a micro-batch have in common: ``prefixes``
    [U, length] (distinct), ``row_prefix`` [B] (index of each row's prefix)."""

    length: int
    prefixes: torch.Tensor
    row_prefix: torch.Tensor


def shared_prefix(packed: Packed) -> SharedPrefix | None:
    """How to run ``packed`` (right-padded rows) as one forward over its distinct prompt
    prefixes, whose keys and values every row then reuses, plus one over the rest.

    The prefix is the first ``P = shortest prompt - 1`` tokens of each row, so every
    position whose logits predict a response token stays in the second pass. A group of
    G samples of one prompt computes its prompt once instead of G times (and rows whose
    prompts merely start alike, e.g. under one chat template, share that start). Returns
    None when no two rows share their first ``P`` tokens, i.e. nothing would be saved.
    """
    prompt_len = packed.attention_mask.sum(1) - packed.response_mask.sum(1)
    n = int(prompt_len.min()) - 1 if len(packed) > 1 else 0
    if n < 1:
        return None
    prefixes, row_prefix = torch.unique(packed.input_ids[:, :n], dim=0, return_inverse=True)
    if len(prefixes) == len(packed):
        return None
    return SharedPrefix(n, prefixes, row_prefix)


def pack(prompt_ids: list[list[int]], response_ids: list[list[int]], pad_id: int) -> Packed:
    """Right-pad ``prompt + response`` rows. Empty responses get an all-false mask."""
    b = len(prompt_ids)
    lens = [len(p) + len(r) for p, r in zip(prompt_ids, response_ids)]
    width = max(lens)
    t = max(1, max(len(r) for r in response_ids))
    ids = torch.full((b, width), pad_id, dtype=torch.long)
    am = torch.zeros((b, width), dtype=torch.long)
    rmask = torch.zeros((b, t), dtype=torch.bool)
    lidx = torch.zeros((b, t), dtype=torch.long)
    rtok = torch.full((b, t), pad_id, dtype=torch.long)
    for i, (p, r) in enumerate(zip(prompt_ids, response_ids)):
        row = p + r
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        am[i, : len(row)] = 1
        if r:
            n = len(r)
            rmask[i, :n] = True
            lidx[i, :n] = torch.arange(len(p) - 1, len(p) - 1 + n)
            rtok[i, :n] = torch.tensor(r, dtype=torch.long)
    return Packed(ids, am, rmask, lidx, rtok)


def gather_response(hidden: torch.Tensor, packed: Packed) -> torch.Tensor:
    """``hidden`` [B, L, ...] -> [B, T, ...] at the positions that predict response tokens."""
    idx = packed.logit_index
    if hidden.dim() == 3:
        idx = idx.unsqueeze(-1).expand(-1, -1, hidden.shape[-1])
    return torch.gather(hidden, 1, idx)


def response_logprobs(logits: torch.Tensor, packed: Packed, with_entropy: bool = False,
                      entropy_grad: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs [B, T] of the response tokens (and entropies [B, T]) from ``logits`` [B, L, V].

    Only the T response positions are normalised, so memory is O(B*T*V), not O(B*L*V).
    ``entropy_grad=False``: the entropies are only logged, so no autograd graph is kept for them.
    """
    sel = gather_response(logits, packed).float()
    logz = torch.logsumexp(sel, -1)
    logp = torch.gather(sel, -1, packed.response_tokens.unsqueeze(-1)).squeeze(-1) - logz
    ent = None
    if with_entropy:
        with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
            ent = entropy_from_logits(sel)
    return logp.masked_fill(~packed.response_mask, 0.0), ent
