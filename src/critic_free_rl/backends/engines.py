"""Optimizer engines of the learner: DeepSpeed's, or a plain torch stand-in with its surface,
both behind a guarded optimizer step that never lets a non-finite gradient reach the weights."""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.distributed as dist

from critic_free_rl.backends.distributed import any_rank
from critic_free_rl.config.schema import TrainerConfig


class TorchEngine:
    """The minimal surface of a DeepSpeed engine over a plain optimizer (``trainer.backend=torch``;
    the optimizer clips, see :func:`guard_step`)."""

    def __init__(self, module: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler, gas: int):
        self.module, self.optimizer, self.lr_scheduler = module, optimizer, scheduler
        self.gas, self._micro = gas, 0

    def __call__(self, *a, **k):
        return self.module(*a, **k)

    def backward(self, loss: torch.Tensor) -> None:
        (loss / self.gas).backward()

    def step(self) -> None:
        self._micro += 1
        if self._micro % self.gas:
            return
        self.optimizer.step()
        self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def get_global_grad_norm(self) -> float:
        return getattr(self.optimizer, "_global_grad_norm", 0.0)

    def train(self) -> None:
        self.module.train()

    def eval(self) -> None:
        self.module.eval()


def guard_step(optimizer: torch.optim.Optimizer, state: dict, max_grad_norm: Optional[float] = None) -> None:
    """Make ``optimizer.step`` a no-op (on every rank) when any gradient is non-finite,
    so NaN never reaches the weights. Sets ``state['skipped']``. With ``max_grad_norm``
    (where nothing else clips: the torch backend, DeepSpeed without ZeRO) the step first
    clips the gradients to that global norm and keeps the norm before clipping as
    ``optimizer._global_grad_norm``, where DeepSpeed's ``get_global_grad_norm`` reads it."""
    inner_step = optimizer.step

    def step(*args, **kwargs):
        params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        grads = [p.grad for p in params]
        if max_grad_norm is not None:
            norm = float(torch.nn.utils.clip_grad_norm_(params, max_grad_norm)) if params else 0.0
            optimizer._global_grad_norm = norm
            finite = math.isfinite(norm)  # the global norm is finite iff every entry is
        else:
            finite = all(bool(torch.isfinite(x).all()) for x in grads)
        state["skipped"] = any_rank(not finite)
        if state["skipped"]:
            for x in grads:
                x.zero_()
            return None
        return inner_step(*args, **kwargs)

    optimizer.step = step


def zero_stage(t: TrainerConfig, world_size: int, bf16: bool) -> int:
    """The ZeRO stage a DeepSpeed engine runs with. On one rank stages 1 and 2 partition nothing
    but still copy every gradient through reduce buckets (slower, docs/performance.md), so one
    fp32 rank without optimizer offload runs stage 0 (bf16 keeps the configured stage, whose
    optimizer holds the fp32 master weights)."""
    if t.zero_stage in (1, 2) and world_size == 1 and not t.offload_optimizer and not bf16:
        return 0
    return t.zero_stage


def clips_in_step(stage: int, bf16: bool) -> bool:
    """Whether :func:`guard_step` clips (DeepSpeed fp32 without ZeRO leaves the norm unrecorded)."""
    return stage == 0 and not bf16


def ds_config(t: TrainerConfig, micro: int, gas: int, bf16: bool, stage: int) -> dict:
    zero: dict = {"stage": stage}
    if t.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu"}
    if t.offload_params and stage == 3:
        zero["offload_param"] = {"device": "cpu"}
    if stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    return {
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": gas,
        # fp32 without ZeRO: the guarded optimizer step clips (and records the norm)
        "gradient_clipping": 0.0 if clips_in_step(stage, bf16) else t.max_grad_norm,
        "zero_optimization": zero,
        "bf16": {"enabled": bf16},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
        "zero_allow_untested_optimizer": True,
    }


def make_engine(model: torch.nn.Module, lr: float, t: TrainerConfig, micro: int, gas: int, bf16: bool,
                guard_state: dict):
    """``model`` (already on its device) wrapped for training: AdamW (DeepSpeed's CPU Adam under
    ZeRO-Offload) with linear warm-up, a guarded step (see :func:`guard_step`) recording into
    ``guard_state``, in a DeepSpeed engine of ``micro`` rows x ``gas`` accumulation steps, or
    a :class:`TorchEngine` (``trainer.backend=torch``)."""
    if t.backend not in ("deepspeed", "torch"):
        raise ValueError(f"trainer.backend={t.backend!r} is not one of: deepspeed, torch")
    params = [p for p in model.parameters() if p.requires_grad]
    if t.backend == "deepspeed" and t.offload_optimizer:
        # ZeRO-Offload steps the optimizer on the CPU: DeepSpeed's vectorised CPU Adam
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        opt = DeepSpeedCPUAdam(params, lr=lr, weight_decay=t.weight_decay, betas=(0.9, 0.95), adamw_mode=True)
    else:
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=t.weight_decay, betas=(0.9, 0.95))
    warm = max(1, t.warmup_steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm))
    stage = zero_stage(t, dist.get_world_size() if dist.is_initialized() else 1, bf16)
    clip = t.max_grad_norm if t.backend == "torch" or clips_in_step(stage, bf16) else None
    guard_step(opt, guard_state, clip)
    if t.backend == "torch":
        return TorchEngine(model, opt, sched, gas)
    import deepspeed

    cfg = ds_config(t, micro, gas, bf16, stage)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=opt, lr_scheduler=sched, config=cfg,
                                           model_parameters=params)
    return engine
