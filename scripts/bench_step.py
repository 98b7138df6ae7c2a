#!/usr/bin/env python
"""Seconds per RL step: ours (``critic-free-rl train``'s Trainer) vs TRL's GRPOTrainer vs our floor.

    .venv/bin/python scripts/bench_step.py                       # tiny + mid, all trainers (CPU)
    .venv/bin/python scripts/bench_step.py --sizes mid --steps 3 --trainers ours,trl,floor
    .venv/bin/python scripts/bench_step.py --gpu                 # GPU mode: bf16, 1.5B preset architecture
    .venv/bin/python scripts/bench_step.py --gpu --gpu-arch tiny --steps 1 --warmup 0   # GPU code path on CPU

Every trainer runs in its own worker process (``scripts/bench/worker.py``), all
started before timing; then the steps are interleaved (step k of every worker, in a
rotating order, before step k + 1 of any), so load from other users of the machine
hits all of them alike. Identical work: the same randomly initialised model (same
weights for every trainer), the embedded task's prompts in the order our trainer
draws them, group size 8, 16 prompts per step, temperature 1, fp32, k3 KL (coefficient
0.05) against a frozen reference, the success reward (math-verify worker pool), one
optimizer step per rollout batch, in micro-batches of the rows ours picks on its own
(``trainer.cpu_micro_batch_tokens`` on CPU; ``--micro`` sets them; TRL, which needs equal
micro-batches, gets the largest divisor of the batch not above them). ``tiny``: the embedded policy's
architecture, at most 64 new tokens; ``mid``: a ~25M-parameter Qwen2 (hidden 512, 8
layers), exactly 128 new tokens (EOS ignored).

``floor``: a bare ``vllm.LLM.generate`` of the same prompts and group size (vLLM's
default threads) plus a bare forward + backward of the HF model over the generated
tokens (same micro-batches, right-padded rows without an attention mask).

Every trainer runs with its defaults (torch's / vLLM's intra-op threads: one per core).
Step times are wall seconds minus the seconds the worker process was
stopped (a load governor here SIGSTOPs busy processes; see ``StallClock``).

TRL's vLLM colocate mode needs one shim with vLLM 0.32 (TRL 1.16 supports <= 0.31): its
weight sync goes through the model runner's ``reload_weights``, as ours does.
``scripts/bench_gpu_step.py`` stays the update-only MFU benchmark.

Reported per trainer: the median seconds per step over the timed steps (after
``--warmup`` untimed ones; medians across ``--repeats`` fresh sets of workers), ratios
to ours, and the peak RSS of the worker's process tree (sampled every 0.1 s, its reward
workers included; the tree is looked up every 2 s). The last line is::

    ratio_vs_trl=<mid ours/trl> ratio_vs_trl_vllm=<mid ours/trl_vllm or na> ratio_vs_floor=<mid ours/floor> tiny_ratio_vs_trl=<tiny ours/trl>

TRL is an optional extra: ``bash scripts/install.sh --bench`` (``pip install -e .[bench]``);
without it the TRL columns read ``na``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "scripts")]

#: size -> (max_new_tokens, ignore_eos)
SIZES = {"tiny": (64, False), "mid": (128, True), "gpu": (512, True)}
ALL_TRAINERS = ("ours", "trl", "trl_vllm", "floor")


@dataclass
class WorkerResult:
    name: str
    steps: list[float] = field(default_factory=list)  # wall seconds minus stopped seconds
    wall: list[float] = field(default_factory=list)  # wall seconds
    raw: list[float] = field(default_factory=list)  # every timed step of every repeat (steps: per-repeat medians)
    phases: list[dict] = field(default_factory=list)
    peak_rss: int = 0
    error: Optional[str] = None
    startup_s: float = 0.0


class Worker:
    """A worker process, its stdout reader and its process-tree RSS sampler."""

    def __init__(self, name: str, spec: dict, log_dir: Path, env: dict) -> None:
        self.name, self.result = name, WorkerResult(name)
        self.log = open(log_dir / f"{name}.log", "w")
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.worker", json.dumps(spec)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True, bufsize=1, env=env, cwd=str(ROOT),
        )
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _sample(self, every_s: float = 0.1, tree_every_s: float = 2.0) -> None:
        """Peak RSS of the worker's process tree: the tree's RSS every ``every_s``, the
        tree itself (its children, found by scanning every process on the machine) every
        ``tree_every_s``. Scanning at every sample cost the parent 13% of a core with four
        workers, taken from whichever worker was being timed."""
        import psutil

        try:
            root = psutil.Process(self.proc.pid)
        except psutil.Error:
            return
        tree, found_at = [root], float("-inf")
        while not self._stop.is_set() and self.proc.poll() is None:
            if time.monotonic() - found_at >= tree_every_s:
                try:
                    tree, found_at = [root, *root.children(recursive=True)], time.monotonic()
                except psutil.Error:
                    break
            total = 0
            for p in tree:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.result.peak_rss = max(self.result.peak_rss, total)
            self._stop.wait(every_s)

    def read(self) -> dict:
        """The next ``@@BENCH`` message (other stdout lines go to the log)."""
        while True:
            line = self.proc.stdout.readline()
            if not line:
                return {"event": "error", "message": f"worker exited (rc={self.proc.wait()}); see {self.log.name}"}
            if line.startswith("@@BENCH "):
                return json.loads(line[8:])
            self.log.write(line)

    def wait_ready(self) -> dict:
        """The worker's ``ready`` message ({} when it failed to start)."""
        msg = self.read()
        self.result.startup_s = time.perf_counter() - self.t0
        if msg.get("event") != "ready":
            self.result.error = msg.get("message", str(msg))
            return {}
        return msg

    def step(self) -> Optional[dict]:
        if self.result.error:
            return None
        try:
            self.proc.stdin.write("step\n")
            self.proc.stdin.flush()
        except OSError:
            self.result.error = "worker pipe closed"
            return None
        msg = self.read()
        if msg.get("event") != "step":
            self.result.error = msg.get("message", str(msg))
            return None
        return msg

    def close(self) -> None:
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._stop.set()
        self._sampler.join(timeout=5)
        self.log.close()


def _trl_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("trl") is not None


def _vllm_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def worker_env() -> dict:
    """A worker's environment; the rest of it each worker sets itself (``worker.setup_env``)."""
    env = os.environ.copy()
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT / "scripts"), env.get("PYTHONPATH", "")])
    # the floor's and TRL's vLLM engines reserve 1 GiB of KV cache; ours sizes its own cache
    # to its rollout (rollout.cpu_kvcache_gib=null: a block count, which this does not change)
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    return env


def run_size(size: str, args, log_root: Path) -> dict[str, WorkerResult]:
    """Start every worker of ``size``, interleave their steps, return their results."""
    from bench.models import build_model, num_params

    dtype = args.dtype or ("bfloat16" if args.gpu else "float32")
    if dtype == "auto":  # the same resolution as model.dtype=auto (native bf16 CPU or bf16 GPU)
        from critic_free_rl.config.environment import resolve_dtype

        dtype = resolve_dtype("auto")
    arch = None
    model_size = size
    if args.gpu:
        model_size = "gpu" if args.gpu_arch == "preset" else args.gpu_arch
    model = build_model(model_size, dtype=dtype, arch=arch)
    max_new, ignore_eos = SIZES["gpu" if args.gpu else size]
    if args.max_new_tokens:
        max_new = args.max_new_tokens
    engine = "vllm" if _vllm_available() and (not args.gpu or _cuda()) else "hf"
    trainers = [t for t in args.trainers if (t == "ours" or t == "floor" or _trl_available())]
    if engine != "vllm":
        trainers = [t for t in trainers if t != "trl_vllm"]
    total = args.warmup + args.steps
    print(f"\n== {size}: {model} ({num_params(model) / 1e6:.1f}M params, {dtype}), {max_new} new tokens"
          f"{' (EOS ignored)' if ignore_eos else ' at most'}, rollout engine {engine}, trainers {', '.join(trainers)}", flush=True)
    env = worker_env()
    results: dict[str, list[WorkerResult]] = {t: [] for t in trainers}
    # rows per micro-batch for every trainer: --micro, else what ours picks (it starts first)
    micro = {"rows": args.micro or (8 if args.gpu else 64), "from_ours": not args.micro}
    for rep in range(args.repeats):
        log_dir = log_root / f"{size}-r{rep}"
        log_dir.mkdir(parents=True, exist_ok=True)
        groups = [[t] for t in trainers] if args.sequential else [trainers]
        for group in groups:
            _run_group(group, size, args, model, max_new, ignore_eos, dtype, engine, total, log_dir, env, results, micro)
    print(f"  micro-batches of {micro['rows']} rows{' (as ours sized them)' if micro['from_ours'] and 'ours' in trainers else ''}; "
          f"TRL: the largest divisor of the batch not above that", flush=True)
    return _merge(results)


def _run_group(trainers: list[str], size: str, args, model, max_new: int, ignore_eos: bool, dtype: str, engine: str,
               total: int, log_dir: Path, env: dict, results: dict[str, list[WorkerResult]], micro: dict) -> None:
    """Start the workers of ``trainers`` (all resident at once) and interleave their steps.
    ``micro['rows']``: rows per micro-batch; ours' ``ready`` message sets it when ``micro['from_ours']``."""
    workers: list[Worker] = []
    for t in trainers:  # start one at a time (ours first): start-up is not timed, but it is heavy
        spec = dict(kind=t, model=str(model), max_new_tokens=max_new, ignore_eos=ignore_eos, total_steps=total + 1,
                    dtype=dtype, engine=engine, backend=args.backend, micro_batch_size=micro["rows"], run_dir=str(log_dir / f"run-{t}"),
                    threads=args.threads, overrides=list(args.override) + (["trainer.cpu_micro_batch_tokens=0"] if args.micro else []))
        w = Worker(t, spec, log_dir, env)
        ready = w.wait_ready()
        if t == "ours" and micro["from_ours"] and "micro_batch_size" in ready:
            micro["rows"] = int(ready["micro_batch_size"])
        print(f"  [{t}] {'ready' if ready else 'FAILED: ' + str(w.result.error)} after {w.result.startup_s:.0f} s", flush=True)
        workers.append(w)
    live = [w for w in workers if not w.result.error]
    for k in range(total):
        order = live[k % max(1, len(live)):] + live[: k % max(1, len(live))]
        line = []
        for w in order:
            msg = w.step()
            if msg is None:
                line.append(f"{w.name}=FAILED")
                continue
            stall = float(msg.get("stalled", 0.0))
            line.append(f"{w.name}={msg['seconds']:.2f}s" + (f"(stopped {stall:.1f}s)" if stall else ""))
            if k >= args.warmup:
                w.result.steps.append(float(msg["seconds"]) - stall)
                w.result.wall.append(float(msg["seconds"]))
                w.result.phases.append(msg.get("phases") or {})
        print(f"  step {k}{' (warm-up)' if k < args.warmup else ''}: " + " ".join(line), flush=True)
        live = [w for w in live if not w.result.error]
    for w in workers:
        w.close()
        results[w.name].append(w.result)


def _merge(results: dict[str, list[WorkerResult]]) -> dict[str, WorkerResult]:
    """Median over repeats of each repeat's median step; median peak RSS."""
    out = {}
    for name, reps in results.items():
        ok = [r for r in reps if r.steps]
        m = WorkerResult(name)
        if not ok:
            m.error = next((r.error for r in reps if r.error), "no steps")
        else:
            m.steps = [statistics.median(r.steps) for r in ok]
            m.raw = [x for r in ok for x in r.steps]
            m.wall = [statistics.median(r.wall) for r in ok]
            m.phases = [p for r in ok for p in r.phases]
            m.peak_rss = int(statistics.median(r.peak_rss for r in ok))
            m.error = next((r.error for r in reps if r.error), None)
        m.startup_s = statistics.median(r.startup_s for r in reps) if reps else 0.0
        out[name] = m
    return out


def median_step(r: Optional[WorkerResult]) -> Optional[float]:
    return statistics.median(r.steps) if r and r.steps else None


def report(size: str, res: dict[str, WorkerResult]) -> dict:
    ours = median_step(res.get("ours"))
    print(f"\n-- {size}: seconds per step (median; wall minus time the process was stopped), ratio ours / trainer, peak RSS of the process tree")
    print(f"  {'trainer':<10} {'s/step':>8} {'wall':>8} {'ours/x':>7} {'peak RSS':>10}  steps")
    row = {}
    for name, r in res.items():
        s = median_step(r)
        ratio = ours / s if (ours and s) else None
        wall = statistics.median(r.wall) if r.wall else None
        row[name] = {"seconds_per_step": s, "wall_seconds_per_step": wall, "ratio_ours_to": ratio, "peak_rss_gib": r.peak_rss / 2**30 if r.peak_rss else None,
                     "steps": r.raw or r.steps, "error": r.error, "startup_s": r.startup_s}
        print(f"  {name:<10} {s if s is not None else float('nan'):>8.2f} {wall if wall is not None else float('nan'):>8.2f} {ratio if ratio else float('nan'):>7.3f} "
              f"{r.peak_rss / 2**30:>8.2f} GiB  {' '.join(f'{x:.2f}' for x in (r.raw or r.steps))}{'  ERROR: ' + r.error if r.error else ''}")
    for name in ("ours", "floor"):
        r = res.get(name)
        if r and r.phases:
            keys = sorted({k for p in r.phases for k in p}, key=lambda k: -statistics.median(p.get(k, 0.0) for p in r.phases))
            print(f"  {name} phases (median s): " + ", ".join(f"{k}={statistics.median(p.get(k, 0.0) for p in r.phases):.2f}" for k in keys if statistics.median(p.get(k, 0.0) for p in r.phases) >= 0.005))
    return row


def _fmt(x: Optional[float]) -> str:
    return f"{x:.3f}" if x else "na"


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="tiny,mid", help="comma list of tiny, mid (CPU mode)")
    ap.add_argument("--trainers", default=",".join(ALL_TRAINERS), help=f"comma list of {', '.join(ALL_TRAINERS)}")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per worker (default: tiny 8, mid 3, gpu 3)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed first steps (default: tiny 2, mid 1, gpu 1)")
    ap.add_argument("--repeats", type=int, default=1, help="fresh sets of workers; medians across them")
    ap.add_argument("--max-new-tokens", type=int, default=0, help="override the size's token budget")
    ap.add_argument("--micro", type=int, default=0, help="rows per micro-batch of every trainer (default: those ours picks; without ours 64 on CPU, 8 in GPU mode)")
    ap.add_argument("--backend", default="deepspeed", choices=["deepspeed", "torch"], help="ours: trainer.backend")
    ap.add_argument("--threads", type=int, default=0, help="torch threads in every worker (0: default)")
    ap.add_argument("--override", action="append", default=[], help="extra Hydra override for ours (repeatable)")
    ap.add_argument("--gpu", action="store_true", help="GPU mode: bf16, random model with the 1.5B preset's architecture")
    ap.add_argument("--dtype", default="", choices=["", "float32", "bfloat16", "auto"],
                    help="every trainer's dtype (default: bfloat16 in GPU mode, float32 on CPU; auto: bf16 where native)")
    ap.add_argument("--gpu-arch", default="preset", choices=["preset", "tiny", "mid"], help="GPU mode's architecture (tiny: test the code path on CPU)")
    ap.add_argument("--sequential", action="store_true", default=None,
                    help="run the trainers one after another instead of resident together and interleaved "
                         "(default in GPU mode, where four co-resident trainers would not fit in one GPU's memory)")
    ap.add_argument("--json", default="", help="also write the results here")
    ap.add_argument("--logs", default="", help="folder for worker logs and run dirs (default: a temp folder, removed)")
    args = ap.parse_args(argv)
    args.trainers = [t for t in args.trainers.split(",") if t]
    bad = [t for t in args.trainers if t not in ALL_TRAINERS]
    if bad:
        ap.error(f"unknown trainers {bad}")
    if args.sequential is None:
        args.sequential = args.gpu
    sizes = ["gpu"] if args.gpu else [s for s in args.sizes.split(",") if s]
    log_root = Path(args.logs) if args.logs else Path(tempfile.mkdtemp(prefix="bench-step-"))
    if not _trl_available():
        print("[bench] trl is not installed (bash scripts/install.sh --bench): TRL columns read na", flush=True)
    t_start = time.time()
    rows = {}
    for size in sizes:
        defaults = {"tiny": (8, 2), "mid": (3, 1), "gpu": (3, 1)}[size]
        a = argparse.Namespace(**vars(args))
        a.steps = args.steps if args.steps is not None else defaults[0]
        a.warmup = args.warmup if args.warmup is not None else defaults[1]
        rows[size] = report(size, run_size(size, a, log_root))
    main_size = "gpu" if args.gpu else "mid"

    def ratio(size: str, other: str) -> Optional[float]:
        r = rows.get(size, {})
        return r.get(other, {}).get("ratio_ours_to") if other in r and "ours" in r else None

    if args.json:
        Path(args.json).write_text(json.dumps({"sizes": rows, "args": {k: v for k, v in vars(args).items()}}, indent=2, default=str))
    if not args.logs:
        shutil.rmtree(log_root, ignore_errors=True)
    else:
        print(f"\n[bench] worker logs and run dirs: {log_root}")
    print(f"[bench] total wall {time.time() - t_start:.0f} s")
    print(f"ratio_vs_trl={_fmt(ratio(main_size, 'trl'))} ratio_vs_trl_vllm={_fmt(ratio(main_size, 'trl_vllm'))} "
          f"ratio_vs_floor={_fmt(ratio(main_size, 'floor'))} tiny_ratio_vs_trl={_fmt(ratio('tiny', 'trl'))}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
