"""``reward=prime``: the implicit PRM's maths against hand-computed examples, its model /
optimizer glue on the tiny random model (the update moves the outcome reward toward the
labels; a state_dict round trip continues bit for bit), the config checks and the
pipeline's placement of its step rewards."""
from __future__ import annotations

import copy
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from critic_free_rl.config.errors import ConfigError
from critic_free_rl.config.schema import RewardConfig
from critic_free_rl.models.tiny import build_char_tokenizer
from critic_free_rl.rewards.implicit_prm import (ImplicitPRM, implicit_prm_loss, implicit_step_rewards,
                                                 outcome_implicit_reward)
from critic_free_rl.rewards.pipeline import RewardPipeline
from critic_free_rl.rewards.shaping import validate_reward

PRIME = RewardConfig(name="prime", dense_coef=1.0, prime_beta=0.5, prime_lr=1e-2, prime_batch_size=2,
                     prime_device="cpu", verify_workers=1)


def test_step_rewards_sum_each_steps_tokens_and_the_tail_goes_to_the_last_step():
    """Catches an off-by-one in the step spans (a token counted twice or dropped), a missing
    beta, padding counted as tokens, and trailing tokens (EOS) lost from the last step."""
    logratio = torch.tensor([[0.1, -0.2, 0.3, 0.4, 0.5], [1.0, 2.0, 9.0, 9.0, 9.0], [0.0] * 5])
    mask = torch.tensor([[True] * 5, [True, True, False, False, False], [False] * 5])
    got = implicit_step_rewards(logratio, mask, [[1, 3], [0], []], beta=0.5)
    # sample 0: tokens {0, 1} -> 0.5 * (0.1 - 0.2); tokens {2, 3} + tail {4} -> 0.5 * 1.2
    # sample 1: token {0} + tail {1} -> 0.5 * 3.0 (the 9.0s are padding)
    assert got[0] == pytest.approx([-0.05, 0.6]) and got[1] == pytest.approx([1.5]) and got[2] == []
    outcome = outcome_implicit_reward(logratio, mask, 0.5)
    assert outcome.tolist() == pytest.approx([sum(got[0]), sum(got[1]), 0.0])


def test_loss_and_accuracy_match_the_hand_computed_cross_entropy():
    """Catches a sign flip of the logit, a label/probability mix-up, or accuracy read at the
    wrong threshold: sigmoid(0) = 1/2 is not a positive prediction."""
    outcome = torch.tensor([0.0, math.log(3.0), -math.log(3.0)])
    loss, acc = implicit_prm_loss(outcome, torch.tensor([1.0, 0.0, 0.0]))
    # -log s(0) = ln 2; -log(1 - 3/4) = ln 4; -log(1 - 1/4) = ln 4/3
    assert float(loss) == pytest.approx((math.log(2) + math.log(4) + math.log(4 / 3)) / 3)
    assert float(acc) == pytest.approx(1 / 3)


def _batch() -> tuple[list[list[int]], list[list[int]], torch.Tensor]:
    tok = build_char_tokenizer()
    prompts = tok(["2+3=", "4*2=", "7-1=", "9+9="], add_special_tokens=False)["input_ids"]
    responses = tok(["5\n\\boxed{5}", "9", "6\n6\n\\boxed{6}", "18"], add_special_tokens=False)["input_ids"]
    return prompts, responses, torch.tensor([1.0, 0.0, 1.0, 0.0])


def test_update_moves_the_outcome_reward_toward_the_labels_and_resumes_exactly(tiny_model_dir: Path):
    """Catches an update that leaves pi_phi alone, trains the reference, ascends the loss,
    or a state_dict that misses the optimizer state (a reloaded copy would then diverge)."""
    prompts, responses, labels = _batch()
    prm = ImplicitPRM.from_config(PRIME, str(tiny_model_dir), build_char_tokenizer())
    phi, ref = prm.logprobs(prompts, responses)
    assert torch.equal(phi, ref)  # pi_phi starts as pi_ref: every implicit reward is 0
    first = prm.update(prompts, responses, ref, labels)
    assert first["prime/loss"] == pytest.approx(math.log(2), abs=1e-6) and first["prime/accuracy"] == 0.5
    state = {k: v.clone() if torch.is_tensor(v) else v for k, v in prm.state_dict()["model"].items()}
    saved = {"model": state, "optimizer": copy.deepcopy(prm.optimizer.state_dict())}
    for _ in range(4):
        after = prm.update(prompts, responses, ref, labels)
    assert after["prime/loss"] < first["prime/loss"] and after["prime/accuracy"] == 1.0
    assert torch.equal(prm.logprobs(prompts, responses)[1], ref)  # the reference never moves

    again = ImplicitPRM.from_config(PRIME, str(tiny_model_dir), build_char_tokenizer())
    again.load_state_dict(saved)
    for _ in range(4):
        again_after = again.update(prompts, responses, ref, labels)
    assert again_after == after
    for (name, a), b in zip(prm.model.state_dict().items(), again.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_micro_batches_give_the_same_update(tiny_model_dir: Path):
    """Catches a micro-batch split that weights rows wrongly (the loss is a mean over the batch)."""
    prompts, responses, labels = _batch()
    outs = []
    for bs in (1, 4):
        prm = ImplicitPRM.from_config(replace(PRIME, prime_batch_size=bs), str(tiny_model_dir), build_char_tokenizer())
        ref = prm.logprobs(prompts, responses)[1]
        prm.update(prompts, responses, ref, labels)
        outs.append(prm.logprobs(prompts, responses)[0])
    assert torch.allclose(outs[0], outs[1], atol=1e-5)


@pytest.mark.parametrize("key, value, match", [
    ("prime_beta", 0.0, "reward.prime_beta=0.0 must be > 0"),
    ("prime_lr", -1.0, "reward.prime_lr=-1.0 must be > 0"),
    ("prime_batch_size", 0, "reward.prime_batch_size=0"),
    ("prime_dtype", "int8", "reward.prime_dtype='int8'"),
    ("prm", "embedded", "unset reward.prm"),
    ("shaping", "clip", "reward.shaping must be 'none'"),
])
def test_bad_prime_keys_are_named(key: str, value, match: str):
    """Catches a bad key that would reach model loading instead of failing at start-up."""
    validate_reward(PRIME)
    with pytest.raises(ConfigError, match=match.replace("(", r"\(")):
        validate_reward(replace(PRIME, **{key: value}))


def test_pipeline_places_implicit_step_rewards_on_step_ends(tiny_model_dir: Path):
    """Catches step rewards that miss the reward mask, the dense return or the update's
    inputs, and a pipeline that builds prime without the policy's weights."""
    tok = build_char_tokenizer()
    with pytest.raises(ValueError, match="policy_path"):
        RewardPipeline(PRIME, tok)
    with RewardPipeline(PRIME, tok, str(tiny_model_dir)) as pipe:
        prompts, responses, labels = _batch()
        completions = tok.batch_decode(responses)
        # move pi_phi off pi_ref so the step rewards are not all zero
        pipe.implicit_prm.update(prompts, responses, pipe.implicit_prm.logprobs(prompts, responses)[1], labels)
        scored = pipe.score(tok.batch_decode(prompts), completions, responses, ["5", "8", "6", "18"])
        phi, ref = pipe.implicit_prm.logprobs(prompts, responses)
        for i, ends in enumerate(scored.step_end_tokens):
            assert len(scored.shaped[i]) == len(ends) == len(scored.steps[i])
            assert scored.reward_mask[i, ends].all()
            assert sum(scored.shaped[i]) == pytest.approx(0.5 * float((phi - ref)[i].sum()), abs=1e-5)
        assert scored.dense_return.tolist() == pytest.approx([sum(s) for s in scored.shaped], abs=1e-6)
        assert any(abs(s) > 1e-6 for row in scored.shaped for s in row)
        metrics = pipe.update(scored)
        assert set(metrics) >= {"prime/loss", "prime/accuracy"}
