"""What each GPU will hold for a training config, computed before anything loads.

Pure arithmetic on the composed :class:`TrainConfig` and the architecture figures the
presets carry (``model.figures``, ``reward.prm_figures``: the hub config.json fields); it
imports no vLLM, DeepSpeed or CUDA state and loads no model, so ``critic-free-rl plan``
works offline on any machine. ``train`` runs the same check at start-up on CUDA.

Per GPU (``N = trainer.num_ranks``, ZeRO stage ``z``, ``b`` bytes per weight in
``model.dtype``, ``P`` policy parameters, ``T`` trainable parameters: ``P``, or the LoRA
adapter's ``sum r (d_in + d_out)`` over the target modules and layers):

* vLLM: ``rollout.gpu_memory_utilization * G`` (its share, held through the update: weights
  ``P b / tp`` and, in the rest, the KV cache at ``2 L kv_heads head_dim b / tp`` bytes a
  token); the HF engine instead holds its own weight copy and one rollout's KV cache;
* policy weights ``P b`` (``/ N`` under ZeRO-3, 0 with parameter offload), gradients
  ``T b`` (``/ N`` from ZeRO-2), Adam state ``T (8 + 4 [master weights, b < 4])`` bytes
  (``/ N`` from ZeRO-1, 0 with optimizer offload; ``2 T b`` with the torch backend, whose
  AdamW keeps m and v in the weights' dtype); the PPO critic likewise (backbone plus a value
  head, no LM head);
* reference: a full copy in ``b`` on every rank (none with LoRA: the adapter is switched
  off; none with ``trainer.ref_device=cpu``); PRM: a full copy in its checkpoint dtype
  (none with ``reward.prm_device=cpu``);
* activations of one policy micro-batch of ``M = micro_batch_size x (plan.prompt_tokens +
  max_new_tokens)`` tokens: per layer and token ``b (6 h + 2 kv_dim + 4 i)`` are kept for
  backward (the inputs of both norms, q/k/v, the attention output, the MLP input, gate,
  up, act(gate), their product); with gradient checkpointing only each layer's input
  ``b h`` plus one layer recomputed; plus the logits ``M V (b + 4 + 4)`` (model dtype,
  fp32 copy, fp32 log-softmax for log-probs and entropy). The critic's pass comes after the
  policy's and is smaller (no vocabulary), so it is not added;
* ``plan.reserve_gib``: CUDA context, NCCL buffers, allocator fragmentation.

These are estimates of what the code holds, for the go / no-go before a run; the GPU
check (scripts/gpu_check.sh) prints the measured peak next to them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from critic_free_rl.config.schema import ArchFigures, TrainConfig

GIB = 1024**3
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
#: embedded char tokenizer: pad, eos and the 256 byte symbols (models/tiny.py)
CHAR_VOCAB = 258
#: the Qwen2 LoRA target modules: (d_in, d_out) as functions of (hidden, kv_dim, intermediate)
_LORA_SHAPES = {
    "q_proj": lambda h, kv, i: (h, h), "k_proj": lambda h, kv, i: (h, kv), "v_proj": lambda h, kv, i: (h, kv),
    "o_proj": lambda h, kv, i: (h, h), "gate_proj": lambda h, kv, i: (h, i), "up_proj": lambda h, kv, i: (h, i),
    "down_proj": lambda h, kv, i: (i, h),
}


class PlanError(ValueError):
    """The config cannot be planned (a missing figure or GPU size); names the key."""


@dataclass(frozen=True)
class Item:
    name: str
    bytes: float
    how: str

    @property
    def gib(self) -> float:
        return self.bytes / GIB


@dataclass
class MemoryPlan:
    items: list[Item]
    gpu_gib: float
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def total_gib(self) -> float:
        return sum(i.gib for i in self.items)

    @property
    def largest(self) -> Item:
        return max(self.items, key=lambda i: i.bytes)

    @property
    def fits(self) -> bool:
        return not self.problems and self.total_gib <= self.gpu_gib

    def verdict(self) -> str:
        if self.fits:
            return f"fits: {self.total_gib:.1f} GiB of {self.gpu_gib:.1f} GiB per GPU ({self.gpu_gib - self.total_gib:.1f} GiB free)"
        big = self.largest
        head = (f"does not fit: {self.total_gib:.1f} GiB needed per GPU, {self.gpu_gib:.1f} GiB available; "
                f"largest item: {big.name} ({big.gib:.1f} GiB)")
        return "; ".join([head, *self.problems])

    def render(self) -> str:
        w = max(len(i.name) for i in self.items)
        lines = [f"{'per GPU':<{w}}  {'GiB':>7}  how", "-" * (w + 40)]
        lines += [f"{i.name:<{w}}  {i.gib:7.2f}  {i.how}" for i in self.items]
        lines += ["-" * (w + 40), f"{'total':<{w}}  {self.total_gib:7.2f}  of {self.gpu_gib:.1f} GiB"]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines + [f"verdict: {self.verdict()}"])


def head_dim(f: ArchFigures) -> int:
    return f.hidden_size // f.num_heads


def count_params(f: ArchFigures) -> int:
    """Parameters of a Qwen2 / Mistral / Llama decoder with the head ``f.head``: ``lm``
    (vocabulary, shared with the embedding when tied), ``prm`` (Qwen2.5-Math-PRM: Linear h->h,
    ReLU, Linear h->2), ``cls:K`` (a K-label token-classification Linear h->K with bias)."""
    h, kv, i = f.hidden_size, f.num_kv_heads * head_dim(f), f.intermediate_size
    bias = (h + 2 * kv) if f.qkv_bias else 0
    layer = 2 * h * h + 2 * h * kv + bias + 3 * h * i + 2 * h
    body = f.vocab_size * h + f.num_layers * layer + h
    if f.head == "lm":
        return body + (0 if f.tie_word_embeddings else f.vocab_size * h)
    if f.head == "prm":
        return body + h * h + h + 2 * h + 2
    if f.head.startswith("cls:"):
        k = int(f.head[4:])
        return body + h * k + k
    raise PlanError(f"unknown head {f.head!r} in the architecture figures (lm | prm | cls:K)")


def lora_params(f: ArchFigures, rank: int, targets: list[str]) -> int:
    h, kv, i = f.hidden_size, f.num_kv_heads * head_dim(f), f.intermediate_size
    unknown = sorted(set(targets) - set(_LORA_SHAPES))
    if unknown:
        raise PlanError(f"model.lora_target_modules: {unknown} have no known shape (known: {sorted(_LORA_SHAPES)})")
    return f.num_layers * sum(rank * sum(_LORA_SHAPES[t](h, kv, i)) for t in targets)


def _embedded(arch: dict, vocab: int, head: str) -> ArchFigures:
    f = ArchFigures(hidden_size=arch["hidden_size"], num_layers=arch["num_layers"], num_heads=arch["num_heads"],
                    num_kv_heads=arch["num_heads"], intermediate_size=arch["intermediate_size"], vocab_size=vocab,
                    num_params=0, tie_word_embeddings=True, qkv_bias=True, head=head, dtype="float32")
    f.num_params = count_params(f)
    return f


def policy_figures(cfg: TrainConfig) -> ArchFigures:
    m = cfg.model
    if m.embedded:
        return _embedded({"hidden_size": 128, "num_layers": 4, "num_heads": 2, "intermediate_size": 512, **m.arch}, CHAR_VOCAB, "lm")
    if m.figures is None:
        raise PlanError(f"model.figures is not set for {m.name_or_path!r}: add the architecture figures of its config.json "
                        "(hidden_size, num_layers, num_heads, num_kv_heads, intermediate_size, vocab_size, num_params) to the model preset")
    return m.figures


def prm_figures(cfg: TrainConfig) -> Optional[ArchFigures]:
    r = cfg.reward
    if r.prm == "embedded":
        from critic_free_rl.models.prm_train import DEFAULT_ARCH

        return _embedded(DEFAULT_ARCH, CHAR_VOCAB + 1, "cls:2")  # + the step separator token
    return r.prm_figures


def _gib(x: float) -> str:
    return f"{x / GIB:.2f} GiB"


def _count(x: float) -> str:
    return f"{x / 1e9:.2f}B" if x >= 1e9 else f"{x / 1e6:.2f}M"


def plan_memory(cfg: TrainConfig, gpu_gib: float) -> MemoryPlan:
    """The per-GPU memory of ``cfg`` on GPUs of ``gpu_gib`` GiB (see the module docstring)."""
    m, t, ro, a, r = cfg.model, cfg.trainer, cfg.rollout, cfg.algorithm, cfg.reward
    f = policy_figures(cfg)
    n, tp, b = t.num_ranks, ro.tensor_parallel_size, DTYPE_BYTES[m.dtype]
    stage = 0 if t.backend == "torch" else t.zero_stage
    P = f.num_params
    T = lora_params(f, m.lora_rank, m.lora_target_modules) if m.lora_rank > 0 else P
    L, h, i, V = f.num_layers, f.hidden_size, f.intermediate_size, f.vocab_size
    kv_dim = f.num_kv_heads * head_dim(f)
    seq = cfg.plan.prompt_tokens + ro.max_new_tokens
    kv_per_token = 2 * L * kv_dim * b
    rollout_seqs = ro.prompts_per_step // n * ro.group_size  # this rank's sequences
    items, problems, notes = [], [], []

    # rollout engine
    if ro.engine == "vllm":
        share = ro.gpu_memory_utilization * gpu_gib * GIB
        w = P * b / tp
        items.append(Item("vLLM weights", w, f"{_count(P)} params x {b} B" + (f" / tp {tp}" if tp > 1 else "")))
        items.append(Item("vLLM KV cache", max(share - w, 0.0), f"rest of rollout.gpu_memory_utilization={ro.gpu_memory_utilization} x {gpu_gib:g} GiB"))
        if share <= w:
            problems.append(f"vLLM's share ({_gib(share)}) does not hold the policy's weights ({_gib(w)}): raise rollout.gpu_memory_utilization "
                            "or rollout.tensor_parallel_size")
        else:
            cap, need = (share - w) / (kv_per_token / tp), rollout_seqs * tp * seq
            if cap < seq:
                problems.append(f"vLLM's KV cache holds {cap:.0f} tokens, less than one sequence ({seq})")
            notes.append(f"vLLM KV cache: {cap:,.0f} tokens, the engine's rollout needs {need:,} at full length"
                         + ("" if cap >= need else " (vLLM queues the rest)"))
    else:
        items.append(Item("HF engine weights", P * b, "its own copy of the policy"))
        items.append(Item("HF engine KV cache", rollout_seqs * seq * kv_per_token, f"{rollout_seqs} sequences x {seq} tokens"))

    # trained models
    adam = 2 * b if t.backend == "torch" else 8 + (4 if b < 4 else 0)  # torch's AdamW keeps m, v in the weights' dtype

    def split(from_stage: int) -> tuple[int, str]:
        """Ranks a state is partitioned over from ZeRO stage ``from_stage`` on."""
        return (n, f" / {n} ranks (ZeRO-{stage})") if stage >= from_stage and n > 1 else (1, "")

    def trained(name: str, params: int, trainable: int) -> None:
        (pw, pw_how), (g, g_how), (o, o_how) = split(3), split(2), split(1)
        items.append(Item(f"{name} weights", 0.0 if t.offload_params else params * b / pw,
                          "offloaded to CPU" if t.offload_params else f"{_count(params)} x {b} B{pw_how}"))
        items.append(Item(f"{name} gradients", trainable * b / g, f"{_count(trainable)} x {b} B{g_how}"))
        items.append(Item(f"{name} optimizer", 0.0 if t.offload_optimizer else trainable * adam / o,
                          "offloaded to CPU" if t.offload_optimizer else f"{_count(trainable)} x Adam {adam} B{o_how}"))

    trained("policy", P, T)
    if a.use_critic:
        critic = P - (0 if f.tie_word_embeddings else V * h) + h + 1  # no LM head, a value head h->1
        trained("critic", critic, critic)
    ref_off = m.lora_rank > 0 or t.ref_device == "cpu"
    items.append(Item("reference", 0.0 if ref_off else P * b,
                      "the policy with its adapter off" if m.lora_rank > 0 else "on CPU" if ref_off else "full copy on every rank"))
    pf = prm_figures(cfg) if r.prm else None
    if pf is not None:
        on_cpu = r.prm_device == "cpu"
        items.append(Item("PRM", 0.0 if on_cpu else pf.num_params * DTYPE_BYTES[pf.dtype],
                          "on CPU" if on_cpu else f"{_count(pf.num_params)} x {DTYPE_BYTES[pf.dtype]} B, full copy"))
    elif r.prm:
        notes.append(f"PRM {r.prm!r}: no reward.prm_figures, not counted")

    # activations of one micro-batch
    tokens = t.micro_batch_size * seq
    layer_full = tokens * b * (6 * h + 2 * kv_dim + 4 * i)
    if m.gradient_checkpointing:
        act, how = L * tokens * h * b + layer_full, f"{tokens} tokens, checkpointed: layer inputs + one layer"
    else:
        act, how = L * layer_full, f"{tokens} tokens x {L} layers"
    items.append(Item("activations", act, how))
    items.append(Item("logits", tokens * V * (b + 8), f"{tokens} tokens x {V} vocab x {b}+4+4 B"))
    items.append(Item("reserve", cfg.plan.reserve_gib * GIB, "plan.reserve_gib: CUDA context, NCCL, fragmentation"))
    return MemoryPlan(items, gpu_gib, problems, notes)


def resolve_gpu_gib(cfg: TrainConfig, visible_gib: Optional[float]) -> float:
    """``plan.gpu_gib``, else the visible GPU's memory (``visible_gib``, found by the caller)."""
    if cfg.plan.gpu_gib is not None:
        if cfg.plan.gpu_gib <= 0:
            raise PlanError(f"plan.gpu_gib={cfg.plan.gpu_gib} must be > 0")
        return cfg.plan.gpu_gib
    if visible_gib is None:
        raise PlanError("plan.gpu_gib is required: no GPU is visible here (e.g. plan.gpu_gib=80 for an 80 GB GPU)")
    return visible_gib
