"""GPU check: 10 GRPO steps with PR-Clip-Delta rewards on one GPU, offline, against the plan.

The policy is a randomly initialised Qwen2 with the 1.5B preset's architecture (1.54B
parameters, a byte-level tokenizer filled to its 151,936 ids: nothing is downloaded), the
PRM a small randomly initialised token-classification Qwen2; prompts come from the embedded
arithmetic task. The run is the project's own ``Trainer`` (vLLM and DeepSpeed when they
import, else HF generation and the torch backend). Printed at the end: the update's MFU
(policy forward + backward ``6 P`` and reference forward ``2 P`` FLOPs per token over the
update and reference phases), generation tokens/s, and the peak GPU memory next to what
``critic-free-rl plan`` predicted for the same config.

    bash scripts/gpu_check.sh [--steps 10] [--dry-run]

``--dry-run`` (CPU, CI): compose and validate the config and print the plan (for an 80 GiB
GPU unless ``--gpu-gib``); nothing is built or loaded.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: the random PRM: a 2-layer tiny Qwen2 token classifier on the char tokenizer (+ the step tag)
PRM_ARCH = dict(hidden_size=128, num_layers=2, num_heads=2, num_kv_heads=2, intermediate_size=512, vocab_size=259,
                tie_word_embeddings=True, qkv_bias=True, head="cls:2", dtype="float32")
#: dense bf16 peak (TFLOP/s) by device name fragment
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}


def overrides(args, policy: str, prm: str, vllm: bool, deepspeed: bool) -> list[str]:
    return [
        "model=qwen2.5-math-1.5b-instruct", f"model.name_or_path={policy}", "model.use_chat_template=false",
        "data=embedded", "data.max_test_rows=16",
        "algorithm=grpo", "reward=pr_clip_delta", f"reward.prm={prm}", "reward.prm_kind=token_cls",
        "reward.prm_separator='<extra_0>'", "reward.prm_trust_remote_code=false", "reward.step_split=line",
        f"rollout.engine={'vllm' if vllm else 'hf'}", "rollout.group_size=8", f"rollout.prompts_per_step={args.prompts}",
        f"rollout.max_new_tokens={args.max_new_tokens}", "rollout.ignore_eos=true", "rollout.gpu_memory_utilization=0.3",
        f"trainer={'deepspeed' if deepspeed else 'torch'}", f"trainer.total_steps={args.steps}", "trainer.eval_at_start=false",
        "trainer.eval_every=0", "trainer.log_completions=0", "trainer.checkpoint_every=0", "trainer.micro_batch_size=16",
        "eval.num_samples=0", "eval.max_new_tokens=16", f"plan.prompt_tokens={args.prompt_tokens}", "plan.check=false",
        f"run_dir={args.run_dir}", "overwrite=true",
    ] + ([f"plan.gpu_gib={args.gpu_gib}"] if args.gpu_gib else [])


def compose(ov: list[str]):
    from critic_free_rl.backends.memory_plan import count_params
    from critic_free_rl.config.loading import compose as compose_config
    from critic_free_rl.config.loading import to_train_config
    from critic_free_rl.config.schema import ArchFigures

    tc = to_train_config(compose_config(ov))
    tc.reward.prm_figures = ArchFigures(**PRM_ARCH, num_params=0)  # what the plan counts for the PRM
    tc.reward.prm_figures.num_params = count_params(tc.reward.prm_figures)
    return tc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--prompt-tokens", type=int, default=64, help="prompt length the plan assumes (embedded prompts: ~40 chars)")
    ap.add_argument("--gpu-gib", type=float, default=None, help="GPU size for the plan (default: the visible GPU; 80 in --dry-run)")
    ap.add_argument("--run-dir", default=None)
    ap.add_argument("--dry-run", action="store_true", help="plan and config only (CPU): nothing is built or loaded")
    args = ap.parse_args()
    args.run_dir = args.run_dir or tempfile.mkdtemp(prefix="gpu-check-")

    from critic_free_rl.backends.memory_plan import plan_memory
    from critic_free_rl.config.environment import setup_environment

    have = {m: importlib.util.find_spec(m) is not None for m in ("vllm", "deepspeed")}
    if args.dry_run:
        tc = compose(overrides(args, "random-qwen2.5-math-1.5b", "random-token-cls-prm", have["vllm"], have["deepspeed"]))
        plan = plan_memory(tc, args.gpu_gib or 80.0)
        print(f"[gpu-check] dry run: {tc.rollout.engine} rollout, {tc.trainer.backend} update, {tc.algorithm.name} + "
              f"{tc.reward.name}, {tc.trainer.total_steps} steps, {tc.rollout.prompts_per_step} x {tc.rollout.group_size} samples")
        print(plan.render())
        return 0 if plan.fits else 1

    import torch

    if not torch.cuda.is_available():
        print("[gpu-check] no CUDA device visible (use --dry-run on CPU)", file=sys.stderr)
        return 2
    setup_environment()
    from critic_free_rl.backends.distributed import init_world
    from bench.models import build_model  # scripts/bench (this script's folder is on sys.path)
    from critic_free_rl.models.tiny import build_tiny_model
    from critic_free_rl.trainer import Trainer

    policy = build_model("gpu", dtype="bfloat16")
    prm = build_tiny_model(Path(args.run_dir) / "prm", seed=0, token_classification=True, extra_tokens=["<extra_0>"],
                           num_layers=PRM_ARCH["num_layers"])
    tc = compose(overrides(args, str(policy), str(prm), have["vllm"], have["deepspeed"]))
    gpu_gib = args.gpu_gib or torch.cuda.get_device_properties(0).total_memory / 1024**3
    plan = plan_memory(tc, gpu_gib)
    print(plan.render(), flush=True)
    world = init_world(tc.trainer.backend, tc.trainer.dist_timeout_minutes)
    torch.cuda.reset_peak_memory_stats()
    trainer = Trainer(tc, Path(args.run_dir), world)
    try:
        trainer.fit()
        prompt_len = statistics.mean(len(trainer.tokenizer(e.prompt, add_special_tokens=False)["input_ids"]) for e in trainer.train_examples)
    finally:
        trainer.close()
    free, total = torch.cuda.mem_get_info()
    rows = [json.loads(line) for line in (Path(args.run_dir) / "metrics.jsonl").read_text().splitlines() if line.strip()]
    steps = [r for r in rows if "time/update_s" in r][1:] or [r for r in rows if "time/update_s" in r]  # the first step warms up
    P = tc.model.figures.num_params
    seqs = tc.rollout.prompts_per_step * tc.rollout.group_size
    tokens = [seqs * (prompt_len + r["response/length_tokens"]) for r in steps]
    secs = [r["time/update_s"] + r.get("time/ref_logprobs_s", 0.0) for r in steps]
    tflops = statistics.median(8 * P * n / s for n, s in zip(tokens, secs)) / 1e12
    name = torch.cuda.get_device_name()
    peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), float("nan"))
    out = {
        "device": name, "rollout": tc.rollout.engine, "backend": tc.trainer.backend, "steps": len(rows),
        "update_tflops": round(tflops, 1), "update_mfu": round(tflops / peak, 4),
        "generated_tokens_per_s": round(statistics.median(r["perf/generated_tokens_per_s"] for r in steps), 1),
        "peak_allocated_gib": round(torch.cuda.max_memory_allocated() / 1024**3, 2),
        "device_used_gib_at_end": round((total - free) / 1024**3, 2),
        "plan_total_gib": round(plan.total_gib, 2), "plan_verdict": plan.verdict(),
    }
    print(json.dumps(out, indent=2))
    (Path(args.run_dir) / "gpu_check.json").write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
