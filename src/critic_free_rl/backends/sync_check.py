"""End-of-run check that the rollout engine samples from the policy the learner trained.

The engine samples a few completions (temperature 1, where its log-probs are the raw model
log-probs) and the learner scores the same tokens under the policy and the reference. After
a correct weight sync the engine agrees with the policy to rounding error and disagrees with
the reference (which is where training started). This covers everything between the
optimizer and the sampler: ZeRO-3 gathers, LoRA merging, tied weights, vLLM's fused or
CPU-packed layers and tensor-parallel shards. Collective under ZeRO-3 (every rank runs it).
"""
from __future__ import annotations

import torch

from critic_free_rl.backends.distributed import all_reduce_
from critic_free_rl.backends.sequences import pack
from critic_free_rl.rollout.base import SamplingSpec


def engine_sync_check(engine, learner, tokenizer, prompts: list[str], max_new_tokens: int = 16, seed: int = 12345) -> dict[str, float]:
    """``{"sync/engine_vs_policy_logprob_max_abs_diff", "sync/engine_vs_reference_logprob_max_abs_diff"}``
    over the sampled tokens of ``prompts`` (NaN when the engine reports no log-probs)."""
    groups = engine.generate(prompts, SamplingSpec(n=1, max_new_tokens=max_new_tokens, temperature=1.0, ignore_eos=True, seed=seed, logprobs=True))
    comps = [g[0] for g in groups]
    nan = float("nan")
    if not comps or any(c.logprobs is None for c in comps):  # (the same on every rank: one engine kind)
        return {"sync/engine_vs_policy_logprob_max_abs_diff": nan, "sync/engine_vs_reference_logprob_max_abs_diff": nan}
    prompt_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    packed = pack(prompt_ids, [c.token_ids for c in comps], tokenizer.pad_token_id)
    policy, ref = learner.logprobs(packed, "policy"), learner.logprobs(packed, "ref")
    eng = torch.zeros_like(policy)
    for i, c in enumerate(comps):
        eng[i, : len(c.logprobs)] = torch.tensor(c.logprobs)
    mask = packed.response_mask

    def worst(x: torch.Tensor) -> float:
        return float((eng - x).abs().masked_fill(~mask, 0.0).max())

    worst_over_ranks = torch.tensor([worst(policy), worst(ref)], dtype=torch.float64)
    pol, rf = all_reduce_(worst_over_ranks, "max").tolist()
    return {"sync/engine_vs_policy_logprob_max_abs_diff": pol, "sync/engine_vs_reference_logprob_max_abs_diff": rf}
