"""``reward=prime``: an implicit PRM trained online (PRIME, arXiv 2502.01456).

A causal LM ``pi_phi`` and a frozen reference ``pi_ref``, both loaded from the policy's
starting weights. Token ``t`` of a response ``y`` to prompt ``x`` earns::

    r_phi(y_t) = beta * log( pi_phi(y_t | x, y_<t) / pi_ref(y_t | x, y_<t) )

and step ``k`` (steps as :mod:`~critic_free_rl.rewards.steps` cuts them, ending on tokens
``e_1 < ... < e_K``) the sum over its tokens ``(e_{k-1}, e_k]``, ``e_0 = -1``; the tokens
after ``e_K`` (the EOS, trailing whitespace) count to step K, so the step rewards add up to
the outcome-level implicit reward ``r_phi(y) = sum_t r_phi(y_t)``.

Each batch is scored first, then ``pi_phi`` takes one optimizer step on it with the
cross-entropy of ``sigmoid(r_phi(y))`` against the 0/1 success label (the paper's CE loss;
``pi_ref`` never moves). Its weights and optimizer state are a checkpoint's extra state
(:meth:`ImplicitPRM.state_dict`). The maths are the pure functions below; the class is the
model / optimizer glue.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, PreTrainedTokenizerBase

from critic_free_rl.config.schema import RewardConfig
from critic_free_rl.rewards.hf_scoring import padded_batches, resolve_device


# ---------------------------------------------------------------------------- maths
def implicit_step_rewards(logratio: torch.Tensor, mask: torch.Tensor, step_ends: list[list[int]],
                          beta: float) -> list[list[float]]:
    """Step rewards ``[B][K_i]`` from token log-ratios.

    ``logratio`` [B, T]: ``log pi_phi - log pi_ref`` of each response token; ``mask`` [B, T]
    bool: real tokens; ``step_ends[i]``: the response-token index of each step's last token,
    increasing. Step k of sample i is ``beta * sum_{t in (e_{k-1}, e_k]} logratio[i, t]``,
    the last step running to the end of the response (module docstring).
    """
    cum = torch.cumsum(beta * logratio.double() * mask, dim=1)  # [B, T]; float64 so the differences stay exact
    out: list[list[float]] = []
    for i, ends in enumerate(step_ends):
        if not ends:
            out.append([])
            continue
        last = int(mask[i].sum()) - 1
        upto = cum[i, torch.tensor(ends[:-1] + [max(last, ends[-1])], dtype=torch.long)]
        out.append(torch.diff(upto, prepend=upto.new_zeros(1)).tolist())
    return out


def outcome_implicit_reward(logratio: torch.Tensor, mask: torch.Tensor, beta: float) -> torch.Tensor:
    """``[B]`` ``r_phi(y) = beta * sum_t logratio[:, t]`` over the real tokens (``mask`` [B, T])."""
    return beta * (logratio * mask).sum(1)


def implicit_prm_loss(outcome: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss, accuracy)`` of outcome rewards ``[B]`` as logits of the ``[B]`` 0/1 labels::

        loss = -mean_i [ l_i log sigmoid(r_i) + (1 - l_i) log(1 - sigmoid(r_i)) ]
        accuracy = mean_i [ (r_i > 0) == l_i ]
    """
    labels = labels.to(outcome.dtype)
    loss = F.binary_cross_entropy_with_logits(outcome, labels)
    accuracy = ((outcome.detach() > 0).to(labels.dtype) == labels).float().mean()
    return loss, accuracy


# ---------------------------------------------------------------------------- glue
class ImplicitPRM:
    """``pi_phi`` (trained), ``pi_ref`` (frozen) and AdamW over ``pi_phi``, all from ``model_path``.

    Both models stay in eval mode (no dropout), so scoring and the update see the same
    function and a resumed run repeats the same updates.
    """

    def __init__(self, model_path: str, tokenizer: PreTrainedTokenizerBase, beta: float, lr: float,
                 batch_size: int = 8, grad_clip: float = 1.0, device: str = "auto", dtype: str = "float32",
                 trust_remote_code: bool = False) -> None:
        self.beta, self.batch_size, self.grad_clip = beta, batch_size, grad_clip
        self.device = resolve_device(device)

        def load() -> torch.nn.Module:
            return AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, dtype),
                                                        trust_remote_code=trust_remote_code).to(self.device).eval()

        self.model, self.ref = load(), load()
        self.ref.requires_grad_(False)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=lr, weight_decay=0.0)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = int(pad or 0)

    @classmethod
    def from_config(cls, cfg: RewardConfig, model_path: str, tokenizer: PreTrainedTokenizerBase,
                    trust_remote_code: bool = False) -> "ImplicitPRM":
        return cls(model_path, tokenizer, cfg.prime_beta, cfg.prime_lr, cfg.prime_batch_size, cfg.prime_grad_clip,
                   cfg.prime_device, cfg.prime_dtype, trust_remote_code)

    def _logprobs(self, model: torch.nn.Module, prompt_ids: list[list[int]], response_ids: list[list[int]],
                  rows: Optional[list[int]] = None) -> torch.Tensor:
        """``[len(rows), T]`` log-probs of the response tokens of ``rows`` (all by default),
        on this model's device, with the autograd graph when grad is enabled."""
        rows = list(range(len(prompt_ids))) if rows is None else rows
        T = max(1, max(len(response_ids[i]) for i in rows))
        out: list[torch.Tensor] = [torch.empty(0)] * len(rows)
        seqs = [prompt_ids[i] + response_ids[i] for i in rows]
        for idx, ids, attn in padded_batches(seqs, self.batch_size, self.pad_id, self.device):
            logits = model(input_ids=ids, attention_mask=attn).logits
            for row, j in enumerate(idx):
                p, n = len(prompt_ids[rows[j]]), len(response_ids[rows[j]])
                # normalised at the n positions that predict response tokens only: O(n V), not O(L V)
                sel = logits[row, p - 1:p - 1 + n].float()
                lp = sel.gather(1, ids[row, p:p + n].unsqueeze(1)).squeeze(1) - torch.logsumexp(sel, -1)
                out[j] = F.pad(lp, (0, T - n))
        return torch.stack(out)

    @torch.no_grad()
    def logprobs(self, prompt_ids: list[list[int]], response_ids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """``([B, T], [B, T])`` log-probs of every response token under ``pi_phi`` and ``pi_ref``
        (0 past each response), on CPU."""
        return (self._logprobs(self.model, prompt_ids, response_ids).cpu(),
                self._logprobs(self.ref, prompt_ids, response_ids).cpu())

    def update(self, prompt_ids: list[list[int]], response_ids: list[list[int]], ref_logp: torch.Tensor,
               labels: torch.Tensor) -> dict[str, float]:
        """One AdamW step of the CE loss (:func:`implicit_prm_loss`) on a batch of ``B`` responses.

        ``ref_logp`` [B, T]: their ``pi_ref`` log-probs (frozen, so the scoring pass's are
        reused); ``labels`` [B]: 0/1 success. Returns ``prime/loss`` and ``prime/accuracy`` of
        ``pi_phi`` before the step (what scored this batch), and ``prime/grad_norm``. With
        several ranks the gradients are averaged, so every rank keeps the same ``pi_phi``.
        """
        B = len(response_ids)
        mask = torch.zeros(B, ref_logp.shape[1], dtype=torch.bool)
        for i, r in enumerate(response_ids):
            mask[i, :len(r)] = True
        mask, ref_logp, labels = mask.to(self.device), ref_logp.to(self.device), labels.float().to(self.device)
        self.optimizer.zero_grad(set_to_none=True)
        outcome = torch.zeros(B, device=self.device)
        for lo in range(0, B, self.batch_size):
            rows = list(range(lo, min(B, lo + self.batch_size)))
            lp = self._logprobs(self.model, prompt_ids, response_ids, rows)
            r = outcome_implicit_reward(lp - ref_logp[rows, :lp.shape[1]], mask[rows, :lp.shape[1]], self.beta)
            # the mean over B of per-row terms: each micro-batch adds its share of the gradient
            (F.binary_cross_entropy_with_logits(r, labels[rows], reduction="sum") / B).backward()
            outcome[rows] = r.detach()
        _average_gradients(self.model)
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        loss, accuracy = implicit_prm_loss(outcome, labels)
        return {"prime/loss": float(loss), "prime/accuracy": float(accuracy), "prime/grad_norm": float(norm),
                "prime/outcome_reward_mean": float(outcome.mean())}

    def state_dict(self) -> dict:
        """``pi_phi``'s weights and the optimizer state (``pi_ref`` is rebuilt from the model path)."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])


def _average_gradients(model: torch.nn.Module) -> None:
    """All-reduce mean of the gradients when several ranks train (a no-op on one)."""
    import torch.distributed as dist

    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return
    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad /= dist.get_world_size()
