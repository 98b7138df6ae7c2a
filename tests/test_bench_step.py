"""The step benchmark (scripts/bench_step.py) and the learner fast paths it measures."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import torch

from conftest import REPO


def test_learner_logprobs_equal_masked_full_forward(tiny_model_dir):
    """Dropping the attention mask of right-padded rows, keeping only response-position
    logits and grouping micro-batches by length give the plain masked forward's log-probs."""
    from transformers import AutoModelForCausalLM

    from critic_free_rl.backends.learner import Learner
    from critic_free_rl.backends.sequences import pack, response_logprobs
    from critic_free_rl.config.schema import AlgorithmConfig, ModelConfig, TrainerConfig

    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(3, 200, (int(n),), generator=g).tolist() for n in (5, 9, 3, 7, 5, 12)]
    responses = [torch.randint(3, 200, (int(n),), generator=g).tolist() for n in (4, 11, 0, 7, 1, 9)]
    packed = pack(prompts, responses, 0)
    algo = AlgorithmConfig(name="grpo", estimator="grpo")
    learner = Learner(str(tiny_model_dir), ModelConfig(name_or_path=str(tiny_model_dir)), TrainerConfig(backend="torch", micro_batch_size=4), algo, 6, torch.device("cpu"))
    got = learner.logprobs(packed, "ref")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    with torch.no_grad():
        logits = model(input_ids=packed.input_ids, attention_mask=packed.attention_mask).logits
    want, _ = response_logprobs(logits, packed)
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()


@pytest.mark.slow
def test_bench_gpu_mode_code_path_on_cpu(tmp_path):
    """GPU mode (bf16, HF generation without vLLM on a GPU) with a tiny architecture runs on CPU.
    Catches a trainer that errors or times no step, a ratio that is not ours / floor of the
    measured medians, and a summary line that does not carry the same figure."""
    env = {**os.environ, "CFRL_CACHE": str(tmp_path / "cache")}
    r = subprocess.run(
        [sys.executable, "scripts/bench_step.py", "--gpu", "--gpu-arch", "tiny", "--max-new-tokens", "8", "--steps", "1",
         "--warmup", "0", "--trainers", "ours,floor", "--micro", "64", "--json", str(tmp_path / "out.json")],
        cwd=REPO, capture_output=True, text=True, timeout=900, env=env, stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    last = r.stdout.strip().splitlines()[-1]
    m = re.fullmatch(r"ratio_vs_trl=\S+ ratio_vs_trl_vllm=\S+ ratio_vs_floor=([0-9.]+) tiny_ratio_vs_trl=\S+", last)
    assert m, last
    row = json.loads((tmp_path / "out.json").read_text())["sizes"]["gpu"]
    ours, floor = row["ours"], row["floor"]
    assert ours["error"] is None and floor["error"] is None
    assert ours["seconds_per_step"] > 0 and floor["seconds_per_step"] > 0 and len(ours["steps"]) >= 1
    assert floor["ratio_ours_to"] == pytest.approx(ours["seconds_per_step"] / floor["seconds_per_step"])
    assert float(m.group(1)) == pytest.approx(floor["ratio_ours_to"], abs=5e-4)
