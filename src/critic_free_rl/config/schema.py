"""Structured (dataclass) configs behind the Hydra groups in ``configs/``.

Every YAML file under ``configs/<group>/`` is validated against the dataclass of its
group, so a typo (unknown key) or a wrong type fails at start-up with Hydra's message
naming the key. Cross-field rules (group size vs. estimator, batch divisibility, ...)
live in :func:`critic_free_rl.config.validate.validate`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, TypeVar

from omegaconf import II, MISSING, OmegaConf

T = TypeVar("T")


def load_structured(cls: type[T], path: str | Path) -> T:
    """The YAML file ``path`` merged onto the defaults of dataclass ``cls`` (unknown keys and
    wrong types fail naming the key), as an instance of ``cls``."""
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls), OmegaConf.load(path)))


@dataclass
class ArchFigures:
    """A hub model's architecture, copied from its config.json, for ``critic-free-rl plan``
    (backends/memory_plan.py); loading never reads it."""

    hidden_size: int = MISSING
    num_layers: int = MISSING
    num_heads: int = MISSING
    num_kv_heads: int = MISSING
    intermediate_size: int = MISSING
    vocab_size: int = MISSING
    num_params: int = MISSING
    tie_word_embeddings: bool = False
    #: q/k/v projections with bias (Qwen2), without (Mistral, Llama)
    qkv_bias: bool = False
    #: lm | prm (Qwen2.5-Math-PRM's two-layer head) | cls:K (K-label token classification)
    head: str = "lm"
    #: the checkpoint's dtype (config.json torch_dtype): a PRM loads in it
    dtype: str = "bfloat16"


@dataclass
class ModelConfig:
    """Policy model: a hub name or a local path, treated identically."""

    name_or_path: str = MISSING
    #: build the bundled tiny character-level Qwen2 + its SFT warm start (cached) instead
    embedded: bool = False
    #: embedded model architecture overrides (hidden_size, num_layers, num_heads, intermediate_size)
    arch: dict[str, int] = field(default_factory=dict)
    #: embedded warm start: steps, batch_size, lr, seed
    warmstart: dict[str, float] = field(default_factory=dict)
    #: float32 | bfloat16 | float16 | auto (bfloat16 on a CPU with native bf16, amx_bf16 or
    #: avx512_bf16 in /proc/cpuinfo, or a bf16 GPU; float32 elsewhere; config.environment.resolve_dtype)
    dtype: str = "float32"
    gradient_checkpointing: bool = False
    trust_remote_code: bool = False
    #: wrap each prompt (data.prompt_template) in the tokenizer's chat template as the user turn
    use_chat_template: bool = False
    #: system turn of the chat template (null: the template's own default)
    system_prompt: Optional[str] = None
    #: LoRA through PEFT (rank 0 = full fine-tuning)
    lora_rank: int = 0
    lora_alpha: int = 16
    lora_target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    #: architecture figures of the hub model for ``critic-free-rl plan`` (presets carry them)
    figures: Optional[ArchFigures] = None


@dataclass
class DataConfig:
    """Where prompts come from and how a record becomes (prompt, reference)."""

    name: str = MISSING  # embedded | gsm8k | math | any label
    #: hub dataset name, local directory or .jsonl/.json/.parquet file
    path: str = MISSING
    #: hub dataset configuration name (e.g. "main" for openai/gsm8k)
    subset: Optional[str] = None
    train_split: str = "train"
    test_split: str = "test"
    #: local files per split (override ``path`` for json files)
    train_file: Optional[str] = None
    test_file: Optional[str] = None
    question_field: str = "question"
    answer_field: str = "answer"
    #: how the reference answer is read from ``answer_field``: raw | gsm8k (after '#### ') | boxed
    answer_format: str = "raw"
    prompt_template: str = "{question}\n"
    max_prompt_chars: int = 2048
    #: skip bad rows (counted in the log) instead of failing on the first one
    skip_bad_rows: bool = False
    max_train_rows: Optional[int] = None
    max_test_rows: Optional[int] = 200
    #: split of each run's final evaluation, with per-problem outcomes saved in the run
    #: folder (evaluation.final_split_eval); None: none beyond the test split's curve.
    #: The embedded task's ``heldout`` split: ``num_heldout`` problems in neither train nor test
    final_split: Optional[str] = None
    # embedded task generator (ignored for other datasets)
    num_train: int = 4000
    num_test: int = 300
    num_heldout: int = 1000
    seed: int = 1234
    #: ArithmeticSpec overrides (min_ops, max_ops, max_first, max_operand)
    spec: dict[str, Any] = field(default_factory=dict)


@dataclass
class RolloutConfig:
    """Sampling of G completions per prompt."""

    engine: str = "vllm"  # vllm | hf
    group_size: int = 8
    prompts_per_step: int = 16  # global, across ranks
    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    ignore_eos: bool = False
    #: share of accelerator memory vLLM may take (GPU)
    gpu_memory_utilization: float = 0.3
    #: KV cache GiB on CPU; None: exactly what one rollout's sequences need at full length
    #: (evaluations then decode that many sequences at a time)
    cpu_kvcache_gib: Optional[float] = None
    #: free the KV cache's host memory after each training rollout, for the update (CPU vLLM)
    release_kv_cache: bool = True
    tensor_parallel_size: int = 1
    #: point all ranks at a shared vLLM server instead of a colocated engine
    server_url: Optional[str] = None
    enforce_eager: bool = True
    #: reuse the engine's sampling log-probs as the old-policy log-probs (exact at
    #: temperature 1 / top_p 1, where they are the raw model log-probs) instead of a forward pass;
    #: only where engine and learner compute alike (float32 on CPU): elsewhere the learner
    #: recomputes them and logs the engine's gap (logprob/engine_gap_mean|max) each step
    use_engine_logprobs: bool = True
    seed: int = 0


@dataclass
class AlgorithmConfig:
    """Advantage estimator plus loss settings (see ``algorithms/``)."""

    name: str = MISSING  # registry key: ppo | grpo | dr_grpo | rloo | reinforce_pp | ...
    #: estimator registry key (defaults to ``name``)
    estimator: str = "${.name}"
    use_critic: bool = False
    #: how dense step rewards enter critic-free estimators: process | return_to_go
    dense_mode: str = "process"
    norm_by_std: bool = True
    gamma: float = 1.0
    lam: float = 0.95
    # --- policy loss
    clip_ratio_low: float = 0.2
    clip_ratio_high: float = 0.2
    #: dual-clip constant c (>1) for negative advantages; None disables
    dual_clip: Optional[float] = None
    #: token-mean | seq-mean-token-mean | seq-mean-token-sum | seq-mean-token-sum-norm
    loss_agg: str = "token-mean"
    #: constant divisor of seq-mean-token-sum-norm (Dr. GRPO: the max response length);
    #: None = the padded length T of the batch
    loss_norm_len: Optional[int] = None
    entropy_coef: float = 0.0
    # --- KL to the frozen reference
    kl_coef: float = 0.05
    #: loss (k1|k2|k3 added to the loss) | reward (k1 per-token penalty in the reward) | none
    kl_in: str = "loss"
    kl_estimator: str = "k3"
    # --- critic
    value_clip: float = 0.2
    value_coef: float = 0.5
    critic_lr: float = 1e-4
    # --- optimisation schedule per rollout batch
    ppo_epochs: int = 1
    num_minibatches: int = 1
    # --- groups with identical rewards
    filter_zero_variance_groups: bool = False
    #: normalise advantages over the global batch (REINFORCE++)
    global_norm: bool = False


@dataclass
class RewardConfig:
    """Success reward + refined PRM step rewards (arXiv 2410.15115)."""

    name: str = MISSING  # success | orm | pr | pr_clip | pr_delta | pr_clip_delta | pr_min | pr_progress | prime
    #: the shape reward.name selects (rewards/shapes/): none | clip | delta | clip_delta | min | progress
    shaping: str = "none"
    success_coef: float = 1.0
    dense_coef: float = 0.0
    correct_value: float = 1.0
    wrong_value: float = 0.0
    clip_eta: float = 0.5
    #: when set, clip_eta is this quantile (0.5: the median) of the PRM's step scores on the
    #: warm-started policy's samples of training prompts, computed once at start-up
    #: (evaluation.calibrate_clip_eta) and recorded in summary.json; not for prm=exact (0/1 scores)
    clip_eta_quantile: Optional[float] = None
    #: pr_min: softmin temperature of the paper's weighted form; None = the exact min
    min_temperature: Optional[float] = None
    #: DAPO overlong penalty on the last token: 0 up to overlong_max_tokens - overlong_buffer
    #: tokens, then linearly down to -overlong_coef at overlong_max_tokens (buffer 0 = off)
    overlong_buffer: int = 0
    overlong_coef: float = 1.0
    overlong_max_tokens: int = II("rollout.max_new_tokens")
    #: step splitter: line | blank_line | step_prefix | tag
    step_split: str = "line"
    step_tag: Optional[str] = None
    #: steps past this many are merged into the last one (bounds PRM work per response)
    max_steps: int = 64
    #: PRM preset name or path (None = no PRM); "embedded": the tiny PRM trained on the embedded
    #: task; "exact": the embedded task's own step rule (an oracle, not a learned model)
    prm: Optional[str] = None
    #: prm=exact only: each step's 0/1 judgement is flipped with this probability (a PRM-quality dial)
    prm_noise: float = 0.0
    #: seed of the prm_noise flips (each flip is a hash of the seed, the sample's text and the step index)
    prm_noise_seed: int = 0
    #: prm convention: tag_lm | token_cls
    prm_kind: str = "token_cls"
    prm_positive_token: Optional[str] = None
    prm_negative_token: Optional[str] = None
    prm_separator: Optional[str] = None
    prm_device: str = "auto"
    #: load the PRM with remote code (Qwen2.5-Math-PRM ships its own model class)
    prm_trust_remote_code: bool = False
    #: architecture figures of the PRM for ``critic-free-rl plan`` (PRM presets carry them)
    prm_figures: Optional[ArchFigures] = None
    prm_batch_size: int = 64
    #: tokens a reward model (PRM or ORM) reads at most; the prompt is cut from the left first
    rm_max_length: int = 4096
    #: ORM (sequence score) model path when name == orm; "embedded": the tiny ORM of the embedded task
    orm: Optional[str] = None
    #: overrides of the embedded PRM / ORM recipe: {arch: {...}, prm: {steps: ...}, orm: {steps: ...}}
    embedded_rm: dict[str, Any] = field(default_factory=dict)
    #: reward=prime (rewards/implicit_prm.py): the implicit PRM pi_phi, initialised from the policy's
    #: starting weights, trained online; beta of its token reward beta * log(pi_phi / pi_ref)
    prime_beta: float = 0.05
    #: AdamW learning rate of pi_phi (one step per batch on the CE loss of its success labels)
    prime_lr: float = 1.0e-6
    prime_batch_size: int = 8  # rows per forward pass of pi_phi / pi_ref
    prime_grad_clip: float = 1.0
    prime_device: str = "auto"
    prime_dtype: str = "float32"
    # answer checking
    verify_timeout_s: float = 3.0
    verify_workers: int = 2


@dataclass
class TrainerConfig:
    """Update backend and the loop."""

    backend: str = "deepspeed"  # deepspeed | torch
    #: one fp32 rank without optimizer offload runs stage 0 (ZeRO partitions nothing there; backends.learner.zero_stage)
    zero_stage: int = 2
    num_ranks: int = 1
    offload_optimizer: bool = False
    offload_params: bool = False
    lr: float = 1e-5
    weight_decay: float = 0.0
    warmup_steps: int = 0
    max_grad_norm: float = 1.0
    grad_accum_steps: int = 1
    micro_batch_size: int = 64
    #: CPU only: at most this many padded tokens per micro-batch (rows = min(micro_batch_size,
    #: this // longest prompt + response); bounds the update's peak memory at little cost in
    #: speed (docs/performance.md). 0 = micro_batch_size rows; GPUs use micro_batch_size.
    cpu_micro_batch_tokens: int = 1280
    #: run the start that rows of a micro-batch share (the G samples of one prompt) once,
    #: then the rest of each row on its keys and values (backends.sequences.shared_prefix);
    #: off under gradient checkpointing. Same log-probs and gradients, fewer tokens computed.
    share_prompt_prefix: bool = True
    total_steps: int = 100
    eval_every: int = 25
    eval_at_start: bool = True
    #: reuse the step-0 evaluation of a run from the same weights, evaluation split and settings
    #: (models.eval_cache, under the cache root): a grid evaluates its warm start once. Off by
    #: default: greedy accuracy is the same, but a skipped sampled pass leaves the engine's
    #: sampling stream elsewhere, so later sampled evaluations differ from a run that made it
    reuse_initial_eval: bool = False
    #: without a terminal (no progress bar): one progress log line every N steps
    log_every: int = 1
    log_completions: int = 4
    #: resumable checkpoint every N steps into RUN_DIR/checkpoints (0 = none); see checkpointing.py
    checkpoint_every: int = 10
    #: also checkpoint when this many minutes of wall time passed since the last one (0 = off)
    checkpoint_every_minutes: float = 0.0
    #: how many complete checkpoints to keep (the newest)
    keep_checkpoints: int = 2
    seed: int = 0
    #: where the reference model runs: same | cpu | cuda:N
    ref_device: str = "same"
    # --- multi-node (DeepSpeed launcher); see docs/scale_out.md
    #: DeepSpeed hostfile ("host slots=N" per line); null = this node only
    hostfile: Optional[str] = None
    #: nodes to use from the hostfile; num_ranks is the total over nodes (num_ranks / num_nodes per node)
    num_nodes: int = 1
    #: address of the rank-0 node (null: DeepSpeed asks the first host of the hostfile over ssh)
    master_addr: Optional[str] = None
    #: rendezvous port (null: a free port on one node, 29500 with a hostfile)
    master_port: Optional[int] = None
    #: null: start every node from this one with trainer.launcher; K: this is node K of the
    #: hostfile and the same command runs on every node (DeepSpeed --no_ssh)
    node_rank: Optional[int] = None
    #: DeepSpeed multi-node launcher: pdsh | openmpi | mvapich | slurm | mpich | impi
    launcher: str = "pdsh"
    #: a collective that waits longer than this for its peers fails the rank instead of hanging
    dist_timeout_minutes: float = 10.0


@dataclass
class EvalConfig:
    greedy: bool = True
    num_samples: int = 4
    temperature: float = 0.7
    max_new_tokens: int = 64
    #: ``critic-free-rl evaluate``: names of ``configs/data/*.yaml`` to evaluate on
    #: (a name equal to ``data.name`` uses the composed ``data`` config, overrides included)
    datasets: list[str] = field(default_factory=lambda: ["embedded"])
    #: ``critic-free-rl evaluate``: a folder of local datasets, one subfolder per name
    #: (``<data_root>/gsm8k/test.jsonl``); a dataset found there is read from it instead
    #: of its hub ``path`` (e.g. ``eval.data_root=../shared/data`` offline)
    data_root: Optional[str] = None
    #: ``critic-free-rl evaluate``: at most this many test examples per dataset (None: the
    #: dataset config's ``max_test_rows``)
    max_examples: Optional[int] = None
    #: ``critic-free-rl evaluate``: a training run directory whose ``final/`` checkpoint is
    #: evaluated instead of ``model.name_or_path``
    run: Optional[str] = None


@dataclass
class PlanConfig:
    """``critic-free-rl plan`` (and ``train``'s start-up check on CUDA): backends/memory_plan.py."""

    #: GiB of one GPU; None: the visible GPU's (required where none is visible)
    gpu_gib: Optional[float] = None
    #: prompt length assumed in tokens (chat template included)
    prompt_tokens: int = 512
    #: GiB kept for the CUDA context, NCCL buffers and allocator fragmentation
    reserve_gib: float = 2.0
    #: ``train`` on CUDA prints the plan at start-up and stops when it does not fit
    check: bool = True


@dataclass
class TrainConfig:
    """Root config of ``critic-free-rl train``."""

    model: ModelConfig = MISSING
    data: DataConfig = MISSING
    rollout: RolloutConfig = MISSING
    algorithm: AlgorithmConfig = MISSING
    reward: RewardConfig = MISSING
    trainer: TrainerConfig = MISSING
    eval: EvalConfig = field(default_factory=EvalConfig)
    plan: PlanConfig = field(default_factory=PlanConfig)
    run_dir: str = "runs/${now:%Y%m%d-%H%M%S}"
    overwrite: bool = False
    resume: Optional[str] = None
    #: ``train resume=RUN`` on a run without a complete checkpoint: restart it from step 0
    #: (otherwise refused, exit code checkpointing.EXIT_NO_CHECKPOINT)
    resume_from_scratch: bool = False
    experiment: str = "default"
    #: modules (dotted names or .py paths) imported at start-up in every process, before
    #: validation: estimators registered from outside the package (config/plugins.py)
    plugins: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
