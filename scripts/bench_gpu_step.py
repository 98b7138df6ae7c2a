"""One RL update step on a GPU with the 1.5B preset's architecture (random weights).

Runs the project's real update path (``backends.learner.Learner``: DeepSpeed ZeRO-2, bf16,
reference forward + clipped-surrogate GRPO loss with k3 KL) on a randomly initialised
Qwen2 shaped like Qwen2.5-Math-1.5B-Instruct, and prints tokens per second and model FLOPs
utilisation (MFU). No download: the architecture numbers below are the preset model's
published config.

    python scripts/bench_gpu_step.py [--prompts 16] [--group 8] [--prompt-len 128] [--response-len 512]
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import torch

#: Qwen2.5-Math-1.5B(-Instruct) config.json
QWEN25_MATH_15B = dict(
    vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
    num_attention_heads=12, num_key_value_heads=2, max_position_embeddings=4096,
    rope_theta=10000.0, tie_word_embeddings=True, rms_norm_eps=1e-6,
)
#: dense bf16 peak (TFLOP/s) by device name fragment
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--response-len", type=int, default=512)
    ap.add_argument("--micro", type=int, default=16)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--grad-ckpt", action="store_true")
    args = ap.parse_args()

    from transformers import Qwen2Config, Qwen2ForCausalLM

    from critic_free_rl.algorithms import AdvantageInput, get_estimator
    from critic_free_rl.backends.distributed import init_world
    from critic_free_rl.backends.learner import Learner, UpdateInputs
    from critic_free_rl.backends.sequences import pack
    from critic_free_rl.config.schema import AlgorithmConfig, ModelConfig, TrainerConfig

    world = init_world("deepspeed")
    path = tempfile.mkdtemp(prefix="qwen15b-random-")
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = Qwen2ForCausalLM(Qwen2Config(**QWEN25_MATH_15B, torch_dtype="bfloat16")).to(torch.bfloat16)
    n_params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(path)
    del model
    torch.cuda.empty_cache()

    algo = AlgorithmConfig(name="grpo", estimator="grpo", kl_coef=0.05, kl_in="loss")
    tcfg = TrainerConfig(zero_stage=2, micro_batch_size=args.micro, lr=1e-6)
    mcfg = ModelConfig(name_or_path=path, dtype="bfloat16", gradient_checkpointing=args.grad_ckpt)
    b = args.prompts * args.group
    learner = Learner(path, mcfg, tcfg, algo, b, world.device)

    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(100, 150000, (args.prompt_len,), generator=g).tolist() for _ in range(args.prompts)]
    prompt_ids = [p for p in prompts for _ in range(args.group)]
    responses = [torch.randint(100, 150000, (args.response_len,), generator=g).tolist() for _ in range(b)]
    packed = pack(prompt_ids, responses, 0)
    rewards = torch.zeros(packed.response_mask.shape)
    rewards[:, -1] = torch.randint(0, 2, (b,), generator=g).float()
    reward_mask = torch.zeros_like(packed.response_mask)
    reward_mask[:, -1] = True
    adv = get_estimator("grpo")(AdvantageInput(rewards, reward_mask, packed.response_mask, torch.arange(b) // args.group), algo)

    tokens = b * (args.prompt_len + args.response_len)
    times = []
    for step in range(args.steps + 1):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        ref = learner.logprobs(packed, "ref")
        learner.update(UpdateInputs(packed, adv.advantages, adv.returns, None, ref, None, packed.response_mask), g)
        torch.cuda.synchronize()
        if step:  # first step is warm-up
            times.append(time.perf_counter() - t0)
    sec = sorted(times)[len(times) // 2]
    # forward+backward of the policy = 6 N per token, reference forward = 2 N per token
    flops = 8 * n_params * tokens
    name = torch.cuda.get_device_name()
    peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), float("nan"))
    out = {
        "device": name, "params": n_params, "sequences": b, "tokens_per_step": tokens,
        "seconds_per_step": round(sec, 3), "tokens_per_s": round(tokens / sec, 1),
        "achieved_tflops": round(flops / sec / 1e12, 1), "mfu": round(flops / sec / 1e12 / peak, 4),
        "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2), "zero_stage": 2, "dtype": "bfloat16",
        "grad_checkpointing": args.grad_ckpt,
    }
    print(json.dumps(out, indent=2))
    if os.environ.get("OUT"):
        with open(os.path.join(os.environ["OUT"], "gpu_step.json"), "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
