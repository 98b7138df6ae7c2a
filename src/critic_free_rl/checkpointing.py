"""Resumable training checkpoints and ``train resume=RUN_DIR``.

A checkpoint is written every ``trainer.checkpoint_every`` steps (default 10), also when
``trainer.checkpoint_every_minutes`` of wall time passed since the last one (0 = off), and
at the step reached when the run is stopped by SIGTERM / SIGINT (:mod:`critic_free_rl.shutdown`);
the newest ``trainer.keep_checkpoints`` (default 2) are kept.

Layout under ``RUN_DIR/checkpoints/``::

    latest                 one line: the tag of the newest complete checkpoint ("step_00000004")
    step_00000004/
        policy/            DeepSpeed ``save_checkpoint`` (module, optimizer, LR scheduler; ZeRO
                           partitions one file per rank) -- or ``state.pt`` with the torch backend
        critic/            the same for the PPO critic
        rng/rank<r>.pt     python / numpy / torch (CPU and CUDA) RNG states and the trainer's
                           minibatch generator, one file per rank
        extra_<name>.rank<r>.pt  each ``Checkpointer.extras`` entry's state (reward=prime: its implicit PRM)
        state.json         step, data position, TensorBoard step, the trainer's RunState
                           (initial accuracy, evals so far, skipped updates), phase timers and
                           the wall time spent so far

Crash safety: every rank writes into ``step_N.tmp/``; after a barrier rank 0 fsyncs every
file and folder in it, renames it to ``step_N/`` and only then replaces ``latest`` (temp
file + ``os.replace``, fsynced). A kill at any point leaves complete checkpoints only under
``step_N/`` names; stale ``*.tmp`` folders are removed by the next save. ``resume`` reads
the folder ``latest`` names, or, when that is missing or incomplete (deleted by hand, a
file system that lost it), the newest complete one; with none it refuses to start
(:class:`NoCheckpoint`, exit code :data:`EXIT_NO_CHECKPOINT`) unless ``resume_from_scratch=true``.
Older checkpoints are deleted after the pointer moved. With several nodes, ``RUN_DIR`` must
be on a file system every node sees.

What is *not* stored, because it is a deterministic function of the config: the prompt order
(a seeded permutation per epoch indexed by step), vLLM's sampling seeds (per step and rank)
and the frozen reference / PRM. vLLM's weights are re-synced from the loaded policy.

Torch is imported lazily: :func:`resume_config` runs in the import-light command layer.
It names :class:`~critic_free_rl.trainer.Trainer` for type checkers only (the trainer imports it).
"""
from __future__ import annotations

import json
import logging
import os
import random
import shutil
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:  # pragma: no cover
    from critic_free_rl.trainer import Trainer
log = logging.getLogger(__name__)

POINTER = "latest"
#: exit code of ``train resume=RUN`` when RUN has no complete checkpoint (and
#: ``resume_from_scratch=true`` was not given)
EXIT_NO_CHECKPOINT = 3
#: the keys ``train resume=RUN_DIR`` accepts besides ``resume``: they change how long the run
#: goes on and how it is checkpointed, never what one step computes
RESUME_OVERRIDABLE = ("trainer.total_steps", "trainer.checkpoint_every", "trainer.keep_checkpoints",
                      "trainer.checkpoint_every_minutes",
                      # where the ranks run, not what they compute
                      "trainer.node_rank", "trainer.master_addr", "trainer.master_port", "trainer.hostfile", "trainer.launcher")


def checkpoint_root(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def tag_of(step: int) -> str:
    return f"step_{step:08d}"


class NoCheckpoint(SystemExit):
    """``train resume=RUN`` found no complete checkpoint: message on stderr, exit :data:`EXIT_NO_CHECKPOINT`."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__(EXIT_NO_CHECKPOINT)
        self.message = (f"critic-free-rl: resume={run_dir}: no complete checkpoint under {checkpoint_root(run_dir)}; "
                        "the run would restart from step 0 and lose its metrics. Pass resume_from_scratch=true "
                        "to do that, or start a new run.")
        print(self.message, file=sys.stderr, flush=True)


def is_complete(path: Path) -> bool:
    """A checkpoint folder every rank finished (``state.json`` is written last, and the
    folder only gets its ``step_N`` name after that)."""
    return not path.name.endswith(".tmp") and (path / "state.json").is_file()


def latest_checkpoint(run_dir: Path) -> Optional[Path]:
    """The folder ``latest`` names, else the newest complete ``step_*`` folder, else None."""
    root = checkpoint_root(run_dir)
    try:
        path = root / (root / POINTER).read_text().strip()
    except FileNotFoundError:
        path = None
    if path is not None and is_complete(path):
        return path
    complete = sorted(p for p in root.glob("step_*") if is_complete(p))
    if path is not None:
        log.warning("%s names %s, which is missing or incomplete; using %s", root / POINTER, path,
                    complete[-1] if complete else "none")
    return complete[-1] if complete else None


def latest_step(run_dir: Path) -> int:
    """The step the latest checkpoint was taken after (0 when there is none)."""
    path = latest_checkpoint(run_dir)
    return 0 if path is None else int(json.loads((path / "state.json").read_text())["step"])


def _fsync_tree(path: Path) -> None:
    """fsync every file under ``path``, then the folders (deepest first)."""
    folders = []
    for folder, _, files in os.walk(path):
        folders.append(folder)
        for name in files:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    for folder in reversed(folders):
        _fsync_dir(Path(folder))


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot fsync a folder
        pass
    finally:
        os.close(fd)


def _write_pointer(root: Path, tag: str) -> None:
    tmp = root / f".{POINTER}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(tag + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, root / POINTER)
    _fsync_dir(root)


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def _on_any_rank(flags: list[bool]) -> list[bool]:
    """Each flag OR-ed over the ranks: wall time and signals differ between ranks, a save is collective."""
    import torch
    import torch.distributed as dist

    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return flags
    t = torch.tensor([float(f) for f in flags])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def _save_engine(engine, out: Path, lora: bool) -> None:
    import torch

    if hasattr(engine, "save_checkpoint"):  # DeepSpeed: collective, every rank writes its partitions
        # LoRA: the frozen base is rebuilt from model.name_or_path; only the adapter is stored
        engine.save_checkpoint(str(out.parent), tag=out.name, save_latest=False, exclude_frozen_parameters=lora)
        return
    out.mkdir(parents=True, exist_ok=True)
    torch.save({"module": engine.module.state_dict(), "optimizer": engine.optimizer.state_dict(),
                "lr_scheduler": engine.lr_scheduler.state_dict(), "micro": engine._micro}, out / "state.pt")


def _load_engine(engine, src: Path, lora: bool) -> None:
    import torch

    if hasattr(engine, "load_checkpoint"):
        path, _ = engine.load_checkpoint(str(src.parent), tag=src.name, load_module_strict=not lora,
                                         load_optimizer_states=True, load_lr_scheduler_states=True)
        if path is None:
            raise FileNotFoundError(f"DeepSpeed found no checkpoint in {src}")
        return
    state = torch.load(src / "state.pt", map_location="cpu", weights_only=False)
    engine.module.load_state_dict(state["module"])
    engine.optimizer.load_state_dict(state["optimizer"])
    engine.lr_scheduler.load_state_dict(state["lr_scheduler"])
    engine._micro = state["micro"]


def _rng_state(trainer: "Trainer") -> dict:
    import numpy as np
    import torch

    out = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
           "minibatch_generator": trainer.gen.get_state()}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def _set_rng_state(trainer: "Trainer", state: dict) -> None:
    import numpy as np
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    trainer.gen.set_state(state["minibatch_generator"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------- save / restore
class Checkpointer:
    """Saves every ``every`` steps or ``every_minutes`` of wall time, restores the latest
    checkpoint."""

    def __init__(self, run_dir: Path, every: int, keep: int = 2, every_minutes: float = 0.0) -> None:
        self.root = checkpoint_root(run_dir)
        self.every, self.keep, self.every_minutes = every, max(1, keep), every_minutes
        self.elapsed_before = 0.0  # wall seconds of the earlier processes of this run
        self._last_save_s = 0.0  # this process's elapsed seconds at its last save
        self.extras: dict = {}  # name -> object with state_dict() / load_state_dict(), saved per rank

    def decide(self, step: int, elapsed_s: float, stop_requested: bool) -> tuple[bool, bool]:
        """``(save, stop)`` after ``step``: the schedule's answer, or a stop signal on any rank
        (which saves too). Collective when several ranks run."""
        timed = self.every_minutes > 0 and elapsed_s - self._last_save_s >= 60.0 * self.every_minutes
        timed, stop = _on_any_rank([timed, stop_requested])
        return (self.every > 0 and step % self.every == 0) or timed or stop, stop

    def purge_step(self, from_scratch: bool) -> int:
        """The first step whose logs a resumed run drops: its checkpoint's step + 1 (0 for
        ``from_scratch``). :class:`NoCheckpoint` when there is no complete checkpoint, unless
        ``from_scratch``: call it before truncating any log."""
        path = latest_checkpoint(self.root.parent)
        if path is None and not from_scratch:
            raise NoCheckpoint(self.root.parent)
        return 0 if path is None else int(json.loads((path / "state.json").read_text())["step"]) + 1

    def save(self, trainer: "Trainer", step: int, elapsed_s: float) -> Path:
        """Collective: every rank must call it at the same step."""
        import torch

        world, learner, started, tag = trainer.world, trainer.learner, time.perf_counter(), tag_of(step)
        final, tmp = self.root / tag, self.root / f"{tag}.tmp"
        if world.is_main:
            self.root.mkdir(parents=True, exist_ok=True)
            for stale in self.root.glob("*.tmp"):  # a save killed half-way
                shutil.rmtree(stale, ignore_errors=True)
            tmp.mkdir()
        _barrier()
        _save_engine(learner.policy, tmp / "policy", learner.lora)
        if learner.critic is not None:
            _save_engine(learner.critic, tmp / "critic", False)
        (tmp / "rng").mkdir(exist_ok=True)
        torch.save(_rng_state(trainer), tmp / "rng" / f"rank{world.rank}.pt")
        for name, extra in self.extras.items():
            torch.save(extra.state_dict(), tmp / f"extra_{name}.rank{world.rank}.pt")
        if world.is_main:
            state = {
                "step": step, "data_position": step * trainer.cfg.rollout.prompts_per_step,
                "tensorboard_step": step, "world_size": world.size,
                "run_state": asdict(trainer.state),
                "timer": {"totals": dict(trainer.timer.totals), "counts": dict(trainer.timer.counts)},
                "elapsed_s": self.elapsed_before + elapsed_s,
            }
            (tmp / "state.json").write_text(json.dumps(state, indent=2))
        _barrier()  # every rank's files are written
        if world.is_main:
            _fsync_tree(tmp)
            if final.exists():  # same step saved before by a run that died before moving `latest`
                shutil.rmtree(final)
            os.replace(tmp, final)
            _fsync_dir(self.root)
            _write_pointer(self.root, tag)
            self._prune(keep_tag=tag)
            log.info("checkpoint: step %d -> %s (%.2f s)", step, final, time.perf_counter() - started)
        self._last_save_s = elapsed_s
        _barrier()
        return final

    def _prune(self, keep_tag: str) -> None:
        tags = sorted(p.name for p in self.root.glob("step_*") if p.is_dir() and not p.name.endswith(".tmp"))
        for old in [t for t in tags if t != keep_tag][: max(0, len(tags) - self.keep)]:
            shutil.rmtree(self.root / old, ignore_errors=True)

    def restore(self, trainer: "Trainer") -> bool:
        """Load the latest checkpoint into ``trainer`` (engines, RNG, RunState, timers) and
        re-sync the rollout engine's weights. False when there is none (fresh start)."""
        import torch

        path = latest_checkpoint(self.root.parent)
        if path is None:  # resume_step() let it through: resume_from_scratch=true
            log.warning("resume: no checkpoint in %s; starting from step 0 (resume_from_scratch=true)", self.root)
            return False
        state = json.loads((path / "state.json").read_text())
        if state["world_size"] != trainer.world.size:
            raise RuntimeError(f"resume: {path} was written by {state['world_size']} ranks, this run has {trainer.world.size}; "
                               "trainer.num_ranks cannot change on resume (ZeRO partitions and RNG states are per rank)")
        learner = trainer.learner
        _load_engine(learner.policy, path / "policy", learner.lora)
        if learner.critic is not None:
            _load_engine(learner.critic, path / "critic", False)
        _set_rng_state(trainer, torch.load(path / "rng" / f"rank{trainer.world.rank}.pt", map_location="cpu", weights_only=False))
        for name, extra in self.extras.items():
            extra.load_state_dict(torch.load(path / f"extra_{name}.rank{trainer.world.rank}.pt", map_location="cpu", weights_only=False))
        trainer.state = replace(trainer.state, **state["run_state"])
        trainer.timer.totals.update(state["timer"]["totals"])
        trainer.timer.counts.update(state["timer"]["counts"])
        self.elapsed_before = float(state["elapsed_s"])
        trainer.engine.sync_weights(learner.full_weights())  # vLLM still holds the initial weights
        log.info("resume: restored %s (step %d)", path, state["step"])
        return True


def resume_config(run_dir: Path, overrides: list[str]):
    """The saved ``config.yaml`` of ``run_dir`` with ``resume`` set and the allowed overrides
    (:data:`RESUME_OVERRIDABLE`) applied; any other override is an error, since a resumed
    run must compute what the original run would have."""
    from omegaconf import OmegaConf

    from critic_free_rl.config.loading import load_run_config
    from critic_free_rl.config.validate import ConfigError

    run_dir = Path(run_dir)
    rejected, accepted = [], []
    for o in overrides:
        key = o.split("=", 1)[0].lstrip("+~")
        if key in ("resume", "run_dir") or key.startswith("hydra."):
            continue
        (accepted if key in RESUME_OVERRIDABLE or key == "resume_from_scratch" else rejected).append(o)
    if rejected:
        raise ConfigError(f"resume={run_dir} continues the run with its saved config.yaml; only {', '.join(RESUME_OVERRIDABLE)} "
                          f"may be changed, got: {' '.join(rejected)}")
    tc = load_run_config(run_dir)
    merged = OmegaConf.merge(OmegaConf.structured(tc), OmegaConf.from_dotlist(accepted))
    tc = OmegaConf.to_object(merged)
    tc.resume = str(run_dir)
    tc.run_dir = str(run_dir)
    if latest_checkpoint(run_dir) is None and not tc.resume_from_scratch:
        raise NoCheckpoint(run_dir)
    return tc


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` holds a run of this project: a ``config.yaml`` that reads as a
    :class:`~critic_free_rl.config.schema.TrainConfig`. ``overwrite=true`` deletes only such
    a folder's outputs."""
    from omegaconf import OmegaConf

    from critic_free_rl.config.schema import TrainConfig

    try:
        saved = OmegaConf.load(Path(path) / "config.yaml")
        OmegaConf.merge(OmegaConf.structured(TrainConfig), saved)
    except Exception:  # missing, unreadable, or not our schema
        return False
    return all(k in saved for k in ("model", "algorithm", "reward", "trainer"))


def save_final(learner, out_dir: Path, tokenizer, world) -> dict:
    """Collective: every rank streams the full policy weights once (ZeRO-3 gathers them one
    tensor at a time) and hashes them; rank 0 also keeps a CPU copy and writes the
    ``save_pretrained`` checkpoint. Returns ``{"weights_sha256", "ranks_in_sync"}``: the
    ranks' hashes must agree, or data-parallel training drifted apart (logged as an error)."""
    import hashlib

    import torch
    import torch.distributed as dist

    digest = hashlib.sha256()
    state: dict = {}
    for name, w in learner.full_weights():
        t = w.detach().to("cpu").contiguous()
        digest.update(name.encode())
        digest.update(t.view(torch.uint8).numpy().tobytes())  # bit-exact, any dtype
        if world.is_main:
            state[name] = t.clone()
    mine = digest.hexdigest()
    digests = [mine]
    if dist.is_initialized() and dist.get_world_size() > 1:
        digests = [None] * dist.get_world_size()
        dist.all_gather_object(digests, mine)
    in_sync = len(set(digests)) == 1
    if world.is_main:
        learner.save(str(out_dir), tokenizer, state=state)
        if not in_sync:
            log.error("ranks hold different policy weights at the end of training: %s", digests)
    return {"weights_sha256": digests[0], "rank_weights_sha256": digests, "ranks_in_sync": in_sync}
