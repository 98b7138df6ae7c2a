"""``critic-free-rl plan [overrides]``: the memory each GPU will hold for a train config, and
whether it fits (:mod:`critic_free_rl.backends.memory_plan`); ``train`` runs the same check on CUDA."""
from __future__ import annotations

from critic_free_rl.cli.hydra_app import QUIET_HYDRA, run_hydra
from critic_free_rl.config.loading import to_train_config


def visible_gpu_gib() -> float | None:
    """Memory of the first visible GPU in GiB, None without one."""
    import torch

    return torch.cuda.get_device_properties(0).total_memory / 1024**3 if torch.cuda.is_available() else None


def check_memory_plan(tc) -> None:
    """``train`` on CUDA: print the memory plan and stop before anything loads when it does
    not fit (``plan.check=false`` skips it; a model without architecture figures is not planned)."""
    from critic_free_rl.backends.memory_plan import PlanError, plan_memory, resolve_gpu_gib

    gib = visible_gpu_gib() if tc.plan.check else None
    if gib is None:
        return
    try:
        plan = plan_memory(tc, resolve_gpu_gib(tc, gib))
    except PlanError as e:
        print(f"[critic-free-rl] memory plan skipped: {e}", flush=True)
        return
    print(plan.render(), flush=True)
    if not plan.fits:
        raise SystemExit(f"critic-free-rl train: {plan.verdict()} (plan.check=false starts anyway)")


def _task(cfg) -> None:
    from critic_free_rl.backends.memory_plan import PlanError, plan_memory, resolve_gpu_gib

    tc = to_train_config(cfg)
    try:
        plan = plan_memory(tc, resolve_gpu_gib(tc, visible_gpu_gib()))
    except PlanError as e:
        raise SystemExit(f"critic-free-rl plan: {e}") from None
    print(plan.render(), flush=True)
    if not plan.fits:
        big = plan.largest
        raise SystemExit(f"critic-free-rl plan: does not fit on {plan.gpu_gib:g} GiB ({plan.total_gib:.1f} GiB per GPU); "
                         f"largest item: {big.name} ({big.gib:.1f} GiB)")


def run(args: list[str]) -> None:
    run_hydra("plan", args + QUIET_HYDRA, _task)
