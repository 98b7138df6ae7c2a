"""The update backend: policy (and PPO critic) in DeepSpeed engines, a frozen reference.

``trainer.backend=deepspeed`` (default) wraps each trainable model in its own
``deepspeed.initialize`` engine (ZeRO stage, offload, gradient accumulation from config);
``trainer.backend=torch`` runs the same code with a plain single-process AdamW, for
debugging. Micro-batch losses are scaled by their share of the global (all-rank)
minibatch, so gradient accumulation and data parallelism reproduce the loss the
algorithm defines (token-mean over all tokens, or mean over all sequences).
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
from dataclasses import dataclass
from typing import Iterator, Optional

import torch
import torch.distributed as dist
from transformers import AutoModelForCausalLM, AutoModelForTokenClassification

from critic_free_rl.algorithms.losses import policy_objective, value_loss
from critic_free_rl.backends.distributed import all_reduce_
from critic_free_rl.backends.engines import make_engine
from critic_free_rl.backends.sequences import Packed, gather_response, response_logprobs, shared_prefix
from critic_free_rl.backends.weights import gathered, lora_merged_weights
from critic_free_rl.config.schema import AlgorithmConfig, ModelConfig, TrainerConfig
from critic_free_rl.logging.study_stats import RatioStats

log = logging.getLogger(__name__)


@dataclass
class UpdateInputs:
    """Everything one PPO-style update needs, aligned on the [B, T] response grid."""

    packed: Packed
    advantages: torch.Tensor
    returns: torch.Tensor
    old_logp: Optional[torch.Tensor]  # None: ppo_epochs == num_minibatches == 1 (old == current)
    ref_logp: Optional[torch.Tensor]
    old_values: Optional[torch.Tensor]
    loss_mask: torch.Tensor  # response_mask minus filtered groups



class Learner:
    """Policy + optional critic + frozen reference, with log-prob, value and update passes.

    ``samples_per_update`` is this rank's number of samples in one rollout batch; it fixes
    the micro-batches per minibatch (DeepSpeed's gradient accumulation steps).
    ``max_row_tokens``: the longest prompt + response a rollout can make (0: unknown); on
    CPU it sizes micro-batches to ``trainer.cpu_micro_batch_tokens``.
    """

    def __init__(self, model_path: str, mcfg: ModelConfig, tcfg: TrainerConfig, acfg: AlgorithmConfig,
                 samples_per_update: int,
                 device: torch.device, max_row_tokens: int = 0):
        self.mcfg, self.tcfg, self.acfg, self.device = mcfg, tcfg, acfg, device
        dtype = getattr(torch, mcfg.dtype)
        self.dtype = dtype
        mb = samples_per_update // acfg.num_minibatches
        if mb * acfg.num_minibatches != samples_per_update or mb == 0:
            raise ValueError(
                f"algorithm.num_minibatches={acfg.num_minibatches} must divide the {samples_per_update} "
                "samples per rank per step"
            )
        # gradient accumulation: micro-batches of trainer.micro_batch_size rows (on CPU at most
        # cpu_micro_batch_tokens padded tokens), or exactly trainer.grad_accum_steps of them
        # per optimizer step when that is > 1
        rows = tcfg.micro_batch_size
        if device.type == "cpu" and tcfg.cpu_micro_batch_tokens and max_row_tokens:
            rows = min(rows, max(1, tcfg.cpu_micro_batch_tokens // max_row_tokens))
        self.micro = -(-mb // tcfg.grad_accum_steps) if tcfg.grad_accum_steps > 1 else min(rows, mb)
        self.gas = -(-mb // self.micro)
        self.minibatch = mb
        self.guard_state = {"skipped": False}

        # freshly initialised tensors (LoRA A, the critic's value head) must be identical on
        # every rank and in every run: ZeRO-3 partitions each rank's own copy, and a resumed
        # run must rebuild the same modules; seed them from trainer.seed, not the global RNG
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(tcfg.seed)
            self._build_models(model_path, mcfg, tcfg, acfg, dtype)

    def _build_models(self, model_path: str, mcfg: ModelConfig, tcfg: TrainerConfig, acfg: AlgorithmConfig,
                      dtype: torch.dtype) -> None:
        policy = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype, trust_remote_code=mcfg.trust_remote_code)
        if mcfg.gradient_checkpointing:
            policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.lora = mcfg.lora_rank > 0
        if self.lora:
            from peft import LoraConfig, get_peft_model

            lora = LoraConfig(r=mcfg.lora_rank, lora_alpha=mcfg.lora_alpha,
                              target_modules=list(mcfg.lora_target_modules), lora_dropout=0.0)
            policy = get_peft_model(policy, lora)
            self.ref = None  # reference = base with the adapter disabled
        else:
            self.ref = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype,
                                                            trust_remote_code=mcfg.trust_remote_code)
            self.ref = self.ref.to(self._ref_device()).eval()
            self.ref.requires_grad_(False)
        self.policy = self._engine(policy, tcfg.lr)
        self.critic = None
        if acfg.use_critic:
            critic = AutoModelForTokenClassification.from_pretrained(model_path, num_labels=1, dtype=dtype,
                                                                     trust_remote_code=mcfg.trust_remote_code)
            if mcfg.gradient_checkpointing:
                critic.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            self.critic = self._engine(critic, acfg.critic_lr, guard=False)

    # ------------------------------------------------------------------ construction
    def _ref_device(self) -> torch.device:
        return self.device if self.tcfg.ref_device == "same" else torch.device(self.tcfg.ref_device)

    def _engine(self, model: torch.nn.Module, lr: float, guard: bool = True):
        model.to(self.device)
        return make_engine(model, lr, self.tcfg, self.micro, self.gas, self.dtype == torch.bfloat16,
                           self.guard_state if guard else {})

    # ------------------------------------------------------------------ forward passes
    def _micro_batches(self, n: int, lengths: Optional[torch.Tensor] = None) -> Iterator[torch.Tensor]:
        """Row indices of each micro-batch (at most ``micro`` rows). With ``lengths`` (row
        lengths) rows of similar length go together, so trimming a micro-batch to its
        longest row (:meth:`Packed.slice`) leaves little padding; the loss is unchanged."""
        order = torch.argsort(lengths, stable=True) if lengths is not None and n > self.micro else torch.arange(n)
        for s in range(0, n, self.micro):
            yield order[s : s + self.micro]

    def _forward_logp(self, model, packed: Packed, with_entropy: bool = False, device: Optional[torch.device] = None,
                      entropy_grad: bool = True):
        """Response log-probs (and entropies) of ``packed`` under ``model``.

        Right-padded rows (all that :func:`pack` makes) need no attention mask under causal
        attention, since no real token attends to the pads after it: the mask is dropped and
        SDPA takes its ``is_causal`` kernel (same values at every real position). Only the
        positions from the first one that predicts a response token get logits
        (``logits_to_keep``), so prompt positions never pay for the LM head.

        Rows that start alike (the G samples of one prompt) compute that start once
        (``trainer.share_prompt_prefix``, :func:`shared_prefix`): one pass over the distinct
        prefixes returns their keys and values, indexed out to the rows, and the rest of
        every row attends to them. Same log-probs; gradients flow back through the index.
        """
        mb, device = packed, device or self.device
        kwargs = {}
        if not _right_padded(mb.attention_mask):
            kwargs["attention_mask"] = mb.attention_mask.to(device)
        elif self._shares_prefix(model) and (split := shared_prefix(mb)) is not None:
            cache = model(input_ids=split.prefixes.to(device), use_cache=True, logits_to_keep=1).past_key_values
            cache.batch_select_indices(split.row_prefix.to(device))
            kwargs["past_key_values"] = cache
            mb = mb.without_prefix(split.length)
        start = int(mb.logit_index[mb.response_mask].min()) if bool(mb.response_mask.any()) else 0
        if start > 0 and _forward_accepts(model, "logits_to_keep"):
            kwargs["logits_to_keep"] = mb.input_ids.shape[1] - start
            mb = dataclasses.replace(mb, logit_index=(mb.logit_index - start).clamp(min=0))
        out = model(input_ids=mb.input_ids.to(device), use_cache=False, **kwargs)
        return response_logprobs(out.logits, _to(mb, device), with_entropy, entropy_grad=entropy_grad)

    def _shares_prefix(self, model) -> bool:
        """Whether ``model`` can run a shared prompt prefix from a key/value cache: a causal
        LM taking ``past_key_values`` and ``logits_to_keep``, without gradient checkpointing
        (which turns the cache off in training)."""
        return (self.tcfg.share_prompt_prefix and not getattr(_hf_model(model), "is_gradient_checkpointing", False)
                and _forward_accepts(model, "past_key_values") and _forward_accepts(model, "logits_to_keep"))

    @torch.no_grad()
    def logprobs(self, packed: Packed, which: str = "policy") -> torch.Tensor:
        """[B, T] log-probs of the response tokens under ``policy`` or ``ref`` (no grad)."""
        b, t = packed.response_mask.shape
        out = torch.zeros(b, t)
        device = self.device
        if which == "ref":
            if self.lora:
                model, ctx = self.policy.module, self.policy.module.disable_adapter()
            else:
                model, ctx = self.ref, contextlib.nullcontext()
                device = self._ref_device()  # trainer.ref_device: the reference may live elsewhere
        else:
            model, ctx = self.policy.module, contextlib.nullcontext()
        was_training = model.training
        model.eval()
        with ctx:
            for idx in self._micro_batches(b, packed.attention_mask.sum(1)):
                sub = packed.slice(idx)
                lp, _ = self._forward_logp(model, sub, device=device)
                out[idx, : lp.shape[1]] = lp.float().cpu()
        model.train(was_training)
        return out

    @torch.no_grad()
    def values(self, packed: Packed) -> torch.Tensor:
        """[B, T] critic values at the positions that predict each response token."""
        b, t = packed.response_mask.shape
        out = torch.zeros(b, t)
        for idx in self._micro_batches(b, packed.attention_mask.sum(1)):
            sub = _to(packed.slice(idx), self.device)
            v = self.critic(input_ids=sub.input_ids, attention_mask=sub.attention_mask).logits.squeeze(-1)
            v = gather_response(v, sub).float().cpu().masked_fill(~sub.response_mask.cpu(), 0)
            out[idx, : sub.response_mask.shape[1]] = v
        return out

    # ------------------------------------------------------------------ update
    def _shares(self, mask: torch.Tensor) -> tuple[torch.Tensor, float]:
        """Per-sample weights whose sums over a micro-batch give its share of the global
        minibatch loss, for the configured aggregation."""
        per_seq = mask.sum(1).float() if self.acfg.loss_agg == "token-mean" else (mask.any(1)).float()
        total = per_seq.sum()
        all_reduce_(total, "mean")  # DeepSpeed averages gradients over ranks
        return per_seq, float(total.clamp(min=1.0))

    def update(self, inp: UpdateInputs, generator: torch.Generator) -> dict[str, float]:
        """``ppo_epochs`` x ``num_minibatches`` optimizer steps over this rank's samples; the
        metrics' means over minibatches, and ``ratio/*`` over all the update's tokens."""
        a = self.acfg
        n = len(inp.packed)
        metrics: dict[str, list[float]] = {}
        ratio = RatioStats()
        self.policy.train()
        for _ in range(a.ppo_epochs):
            perm = torch.randperm(n, generator=generator) if a.num_minibatches > 1 else torch.arange(n)
            for m in range(a.num_minibatches):
                rows = perm[m * self.minibatch : (m + 1) * self.minibatch]
                per_seq, total = self._shares(inp.loss_mask[rows])
                self.guard_state["skipped"] = False
                for idx in self._micro_batches(len(rows), inp.packed.attention_mask[rows].sum(1)):
                    sel = rows[idx]
                    share = float(per_seq[idx].sum()) / total * self.gas
                    self._micro_step(inp, sel, share, metrics, ratio)
                self._record(metrics, "grad_norm", _as_float(self.policy.get_global_grad_norm()))
                self._record(metrics, "update_skipped", float(self._last_step_skipped()))
        return {**{k: sum(v) / len(v) for k, v in metrics.items()}, **ratio.metrics()}

    def _last_step_skipped(self) -> bool:
        """Whether the optimizer step closing the last minibatch was skipped for non-finite
        gradients: by :func:`_guard_step`, or by DeepSpeed's ZeRO overflow check, which
        skips the step (on all ranks) before the guarded ``optimizer.step`` is reached."""
        return self.guard_state["skipped"] or (self.tcfg.backend == "deepspeed" and not self.policy.was_step_applied())

    def _micro_step(self, inp: UpdateInputs, sel: torch.Tensor, share: float, metrics: dict[str, list[float]],
                    ratio: RatioStats) -> None:
        a = self.acfg
        sub = inp.packed.slice(sel)
        t = sub.response_mask.shape[1]
        mask = inp.loss_mask[sel, :t].to(self.device)

        def cut(x: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
            return None if x is None else x[sel, :t].to(self.device)

        logp, ent = self._forward_logp(self.policy, sub, with_entropy=True, entropy_grad=a.entropy_coef > 0)
        old = cut(inp.old_logp) if inp.old_logp is not None else logp.detach()
        ref = cut(inp.ref_logp) if a.kl_coef > 0 or inp.ref_logp is not None else None
        loss, pm = policy_objective(logp, old, cut(inp.advantages), mask, a, ref_logp=ref, entropy=ent)
        ratio.add(logp, old, mask)
        self.policy.backward(loss * share if mask.any() else loss * 0.0)
        self.policy.step()
        for k, v in pm.items():
            self._record(metrics, k, float(v))
        if self.critic is not None:
            s = _to(sub, self.device)
            logits = self.critic(input_ids=s.input_ids, attention_mask=s.attention_mask).logits
            v = gather_response(logits.squeeze(-1), s)
            vl, vm = value_loss(v, cut(inp.old_values), cut(inp.returns), mask, a.value_clip, a.loss_agg,
                                a.loss_norm_len)
            self.critic.backward(a.value_coef * vl * share)
            self.critic.step()
            for k, val in vm.items():
                self._record(metrics, k, float(val))

    @staticmethod
    def _record(metrics: dict[str, list[float]], k: str, v: float) -> None:
        metrics.setdefault(k, []).append(v)

    @property
    def lr(self) -> float:
        if self.tcfg.backend == "torch":
            return float(self.policy.optimizer.param_groups[0]["lr"])
        return float(self.policy.lr_scheduler.get_last_lr()[0])

    # ------------------------------------------------------------------ weights out
    def full_weights(self) -> Iterator[tuple[str, torch.Tensor]]:
        """Yield the policy's full HF-named weights one tensor at a time (for the rollout
        engine). Under ZeRO-3 each parameter is gathered only while it is consumed (every
        rank must iterate, in the same order). With LoRA each adapted weight is yielded as
        ``W + B @ A * scale``, computed out of place: the base weights (= the reference
        policy) are never modified, not even by merge / unmerge rounding."""
        model = self.policy.module
        if self.lora:
            yield from lora_merged_weights(model)
            return
        # remove_duplicate=False: tied weights (lm_head = embed_tokens) are sent under both
        # names, since vLLM's in-place reload does not re-tie them
        for name, p in model.named_parameters(remove_duplicate=False):
            with gathered(p):
                yield name, p.data

    def save(self, out_dir: str, tokenizer, state: Optional[dict] = None) -> None:
        """``save_pretrained`` of the (merged) policy, loadable with ``from_pretrained``.
        ``state``: the weights already gathered from :meth:`full_weights` (ZeRO-3: the other
        ranks must take part in that gather, see :func:`critic_free_rl.checkpointing.save_final`)."""
        model = self.policy.module
        if state is None:
            state = {k: v.detach().cpu().clone() for k, v in self.full_weights()}
        base = model.get_base_model() if self.lora else model
        base.save_pretrained(out_dir, state_dict=state, safe_serialization=True)
        tokenizer.save_pretrained(out_dir)



def _right_padded(attention_mask: torch.Tensor) -> bool:
    """Every row is ``1...1 0...0`` (real tokens first, then padding)."""
    return bool((attention_mask[:, 1:] <= attention_mask[:, :-1]).all())


def _hf_model(model):
    """The Hugging Face model inside a DeepSpeed engine and / or a PEFT wrapper."""
    m = getattr(model, "module", model)
    return m.get_base_model() if hasattr(m, "get_base_model") else m


_FORWARD_ARGS: dict[tuple[type, str], bool] = {}


def _forward_accepts(model, arg: str) -> bool:
    """Whether the (DeepSpeed / PEFT wrapped) model's forward takes the keyword ``arg``."""
    import inspect

    m = _hf_model(model)
    key = (type(m), arg)
    if key not in _FORWARD_ARGS:
        try:
            _FORWARD_ARGS[key] = arg in inspect.signature(m.forward).parameters
        except (TypeError, ValueError):
            _FORWARD_ARGS[key] = False
    return _FORWARD_ARGS[key]


def _to(p: Packed, device: torch.device) -> Packed:
    if device.type == "cpu":
        return p
    fields = ("input_ids", "attention_mask", "response_mask", "logit_index", "response_tokens")
    return Packed(*(getattr(p, f).to(device) for f in fields))


def _as_float(x) -> float:
    if x is None:
        return 0.0
    return float(x.item() if torch.is_tensor(x) else x)
