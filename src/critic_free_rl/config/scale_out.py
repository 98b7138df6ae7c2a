"""Start-up checks of the scale-out settings (ZeRO / offload, multi-node, rollout placement,
checkpoints, LoRA); called by :func:`critic_free_rl.config.validate.validate`."""
from __future__ import annotations

from critic_free_rl.config.errors import ConfigError
from critic_free_rl.config.errors import choice as _choice
from critic_free_rl.config.schema import TrainConfig

LAUNCHERS = {"pdsh", "openmpi", "mvapich", "slurm", "mpich", "impi"}
DTYPES = {"float32", "bfloat16", "float16", "auto"}


def validate_scale_out(cfg: TrainConfig) -> None:
    m, t, ro = cfg.model, cfg.trainer, cfg.rollout
    _choice("model.dtype", m.dtype, DTYPES)
    if t.offload_params and t.zero_stage != 3:
        raise ConfigError(f"trainer.offload_params=true needs trainer.zero_stage=3 (got {t.zero_stage}); parameters are only partitioned (and offloadable) under ZeRO-3")
    if t.offload_optimizer and (t.zero_stage == 0 or t.backend != "deepspeed"):
        raise ConfigError(f"trainer.offload_optimizer=true needs trainer.backend=deepspeed and trainer.zero_stage 1, 2 or 3 (got {t.backend}, stage {t.zero_stage})")
    if t.grad_accum_steps < 1 or t.micro_batch_size < 1:
        raise ConfigError("trainer.grad_accum_steps and trainer.micro_batch_size must be at least 1")
    if t.cpu_micro_batch_tokens < 0:
        raise ConfigError(f"trainer.cpu_micro_batch_tokens={t.cpu_micro_batch_tokens} must be >= 0 (0: micro_batch_size rows)")
    if t.checkpoint_every < 0 or t.keep_checkpoints < 1:
        raise ConfigError(f"trainer.checkpoint_every={t.checkpoint_every} must be >= 0 and trainer.keep_checkpoints={t.keep_checkpoints} >= 1")
    if t.dist_timeout_minutes <= 0:
        raise ConfigError(f"trainer.dist_timeout_minutes={t.dist_timeout_minutes} must be > 0")
    # multi-node
    _choice("trainer.launcher", t.launcher, LAUNCHERS)
    if t.num_nodes < 1 or t.num_ranks % t.num_nodes:
        raise ConfigError(f"trainer.num_ranks={t.num_ranks} must be a multiple of trainer.num_nodes={t.num_nodes} (ranks per node = num_ranks / num_nodes)")
    if t.num_nodes > 1 and not t.hostfile:
        raise ConfigError(f"trainer.num_nodes={t.num_nodes} needs trainer.hostfile (DeepSpeed hostfile: one 'host slots=N' line per node)")
    if t.node_rank is not None:
        if not t.hostfile or not t.master_addr:
            raise ConfigError("trainer.node_rank (one command per node) needs trainer.hostfile and trainer.master_addr (the address of node 0)")
        if not 0 <= t.node_rank < t.num_nodes:
            raise ConfigError(f"trainer.node_rank={t.node_rank} must be in [0, trainer.num_nodes={t.num_nodes})")
    # rollout placement
    if ro.server_url:
        raise ConfigError("rollout.server_url is not supported: every rank runs its own in-process vLLM engine; "
                          "see docs/scale_out.md ('A shared vLLM server') for why and for the alternatives")
    if ro.tensor_parallel_size < 1 or t.num_ranks % ro.tensor_parallel_size:
        raise ConfigError(f"rollout.tensor_parallel_size={ro.tensor_parallel_size} must divide trainer.num_ranks={t.num_ranks}: "
                          "each group of tensor_parallel_size consecutive ranks shares one vLLM engine (one shard per rank)")
    if ro.tensor_parallel_size > 1 and ro.engine != "vllm":
        raise ConfigError("rollout.tensor_parallel_size > 1 needs rollout.engine=vllm")
    # LoRA
    if m.lora_rank < 0:
        raise ConfigError(f"model.lora_rank={m.lora_rank} must be >= 0 (0 = full fine-tuning)")
    if m.lora_rank > 0 and t.ref_device != "same":
        raise ConfigError(f"trainer.ref_device={t.ref_device!r} has no effect with LoRA (model.lora_rank={m.lora_rank}): "
                          "the reference is the policy with its adapter disabled; leave trainer.ref_device=same")
