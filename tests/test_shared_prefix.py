"""Shared prompt prefixes: rows that start alike run that start once, from a key/value cache.

The plan (which prefix, which rows) is a pure function, checked by hand; the learner's
log-probs and gradients with sharing must equal those without it.
"""
from __future__ import annotations

import pytest
import torch

from critic_free_rl.backends.sequences import pack, shared_prefix


def test_shared_prefix_plan_by_hand():
    """Rows ``[5 6 7 | r]`` x2 and ``[5 6 8 9 | r]`` x2: the shortest prompt has 3 tokens, so the
    prefix is their first 2, ``[5 6]``, the same for all four rows (one pass of 2 tokens
    instead of four); the rest of each row starts at column 2 and its logit positions move
    left by 2 (the first response token of row 0, predicted at column 2, now at 0)."""
    packed = pack([[5, 6, 7], [5, 6, 7], [5, 6, 8, 9], [5, 6, 8, 9]], [[1, 2], [3], [4, 4, 4], []], pad_id=0)
    split = shared_prefix(packed)
    assert split is not None and split.length == 2
    assert split.prefixes.tolist() == [[5, 6]] and split.row_prefix.tolist() == [0, 0, 0, 0]
    rest = packed.without_prefix(2)
    assert rest.input_ids.tolist() == [[7, 1, 2, 0, 0], [7, 3, 0, 0, 0], [8, 9, 4, 4, 4], [8, 9, 0, 0, 0]]
    assert rest.logit_index[0, :2].tolist() == [0, 1] and rest.logit_index[2].tolist() == [1, 2, 3]
    # two groups that differ within the prefix get one prefix each
    split = shared_prefix(pack([[5, 6, 7], [5, 6, 7], [9, 6, 7], [9, 6, 7]], [[1], [2], [3], [4]], pad_id=0))
    assert split.prefixes.tolist() == [[5, 6], [9, 6]] and split.row_prefix.tolist() == [0, 0, 1, 1]


@pytest.mark.parametrize(
    "prompts",
    [[[5, 6, 7], [8, 6, 7]],  # no two rows share their first 2 tokens
     [[5], [5]]],  # a 1-token prompt leaves no prefix to share
)
def test_shared_prefix_none_when_nothing_is_saved(prompts):
    assert shared_prefix(pack(prompts, [[1, 2], [3]], pad_id=0)) is None


@pytest.mark.parametrize("backend", ["torch", "deepspeed"])
def test_shared_prefix_gives_the_same_logprobs_and_update(tiny_model_dir, backend, monkeypatch):
    """Three GRPO-style groups (prompts of 6, 9 and 7 tokens, two of them alike in their
    first 4) with responses of 0 to 8 tokens, in micro-batches of 4 rows: reference and
    policy log-probs and the update's gradient norm and loss are the same with and without
    ``trainer.share_prompt_prefix``, and the shared path did run."""
    from critic_free_rl.backends import learner as learner_mod
    from critic_free_rl.backends.distributed import init_world
    from critic_free_rl.backends.learner import Learner, UpdateInputs
    from critic_free_rl.config.schema import AlgorithmConfig, ModelConfig, TrainerConfig

    world = init_world("deepspeed")
    g = torch.Generator().manual_seed(1)
    base = torch.randint(2, 100, (9,), generator=g).tolist()
    group_prompts = [base[:6], base[:4] + torch.randint(2, 100, (5,), generator=g).tolist(), torch.randint(2, 100, (7,), generator=g).tolist()]
    prompts = [p for p in group_prompts for _ in range(4)]
    resp = [torch.randint(2, 100, (int(n),), generator=g).tolist() for n in torch.randint(0, 9, (12,), generator=g)]
    packed = pack(prompts, resp, 0)
    adv = torch.randn(packed.response_mask.shape, generator=g) * packed.response_mask
    algo = AlgorithmConfig(name="grpo", estimator="grpo", kl_coef=0.05, kl_in="loss", entropy_coef=0.01)

    shared_runs = []

    def spy(p):
        out = shared_prefix(p)
        shared_runs.append(out is not None)
        return out

    monkeypatch.setattr(learner_mod, "shared_prefix", spy)
    results = []
    for share in (False, True):
        t = TrainerConfig(backend=backend, lr=1e-2, micro_batch_size=4, max_grad_norm=1e9, cpu_micro_batch_tokens=0, share_prompt_prefix=share)
        learner = Learner(str(tiny_model_dir), ModelConfig(name_or_path=str(tiny_model_dir)), t, algo, 12, world.device)
        ref = learner.logprobs(packed, "ref")
        pol = learner.logprobs(packed, "policy")
        upd = learner.update(UpdateInputs(packed, adv, adv, None, ref, None, packed.response_mask), torch.Generator().manual_seed(0))
        results.append((ref, pol, upd))
        assert any(shared_runs) == share
    (ref0, pol0, upd0), (ref1, pol1, upd1) = results
    assert torch.allclose(ref0, ref1, atol=1e-5) and torch.allclose(pol0, pol1, atol=1e-5)
    assert upd0["grad_norm"] > 0
    assert upd1["grad_norm"] == pytest.approx(upd0["grad_norm"], rel=1e-5)
    assert upd1["loss"] == pytest.approx(upd0["loss"], rel=1e-5, abs=1e-7)
