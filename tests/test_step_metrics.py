"""The step's scalars (logging/step_metrics.py): ``reward/mean`` is the return each sample is
optimised for, under the paper's reward (success coefficient 5, PR-Clip-Delta dense rewards)
scored by the real reward pipeline, with and without KL in the reward."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import compose_train

from critic_free_rl.algorithms.reward_terms import add_kl_penalty, flat_groups
from critic_free_rl.config.loading import to_train_config
from critic_free_rl.logging.step_metrics import step_metrics
from critic_free_rl.models.tiny import build_char_tokenizer, build_tiny_model
from critic_free_rl.rewards.pipeline import RewardPipeline

SEP = "<extra_0>"
PROMPT = "17 + 25 - 8 + 4 = ?\n"
COMPLETIONS = ["17 + 25 = 42\n42 - 8 = 34\n34 + 4 = 38\n\\boxed{38}",  # correct
               "17 + 25 = 42\n42 - 8 = 30\n\\boxed{34}",  # wrong
               "\\boxed{38}",  # correct, one step
               "no idea"]  # wrong
TOK = build_char_tokenizer()


@pytest.fixture(scope="module")
def paper_batch(tmp_path_factory):
    """The paper preset's reward config (its PRM swapped for a tiny random one) and a batch
    it scored: 2 groups of 2."""
    reward = to_train_config(compose_train("reward=paper")).reward
    assert (reward.success_coef, reward.dense_coef, reward.shaping) == (5.0, 1.0, "clip_delta")
    tiny = dict(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
    prm = build_tiny_model(tmp_path_factory.mktemp("prm"), token_classification=True, extra_tokens=[SEP], **tiny)
    reward = dataclasses.replace(reward, prm=str(prm), prm_separator=SEP, prm_device="cpu", verify_workers=1)
    ids = [TOK(c, add_special_tokens=False).input_ids + [TOK.eos_token_id] for c in COMPLETIONS]
    with RewardPipeline(reward, TOK) as pipe:
        scored = pipe.score([PROMPT] * 4, COMPLETIONS, ids, ["38"] * 4)
    mask = torch.zeros(scored.token_rewards.shape, dtype=torch.bool)
    for i, row in enumerate(ids):
        mask[i, : len(row)] = True
    return reward, scored, mask


def _metrics(reward, scored, mask, kl_return, flat):
    return step_metrics(success=scored.success, dense_return=scored.dense_return, kl_return=kl_return,
                        success_coef=reward.success_coef, flat=flat, response_mask=mask, finished=[True] * 4,
                        reward_metrics=scored.metrics, update=None, lr=0.0, times={"time/generate_s": 1.0})


def test_reward_mean_is_the_optimised_return_under_the_paper_reward(paper_batch):
    """Catches ``reward/mean`` that adds the success reward without its coefficient (5 here)
    to the dense return: it must equal the mean over samples of the token rewards the
    estimator receives, ``success_coef * success + dense_coef * dense``."""
    reward, scored, mask = paper_batch
    assert scored.correct.tolist() == [True, False, True, False] and bool(scored.dense_return.ne(0).any())
    group_ids = torch.tensor([0, 0, 1, 1])
    flat = flat_groups(reward.success_coef * scored.success + scored.dense_return, group_ids)
    m = _metrics(reward, scored, mask, torch.zeros(4), flat)
    optimised = scored.token_rewards.sum(1)
    assert m["reward/mean"] == pytest.approx(float(optimised.mean()), abs=1e-5)
    assert m["reward/std"] == pytest.approx(float(optimised.std()), abs=1e-5)
    unscaled = float((scored.success + scored.dense_return).mean())  # the old, wrong figure
    assert abs(m["reward/mean"] - unscaled) > 1.0
    assert m["train/update_skipped"] == 1.0 and m["reward/zero_variance_group_frac"] == 0.0


def test_reward_mean_includes_the_kl_penalty_in_the_reward(paper_batch):
    """With ``algorithm.kl_in=reward`` the return includes the summed penalty: ``reward/mean``
    is the mean row sum of the penalised token rewards and ``reward/kl_mean`` the penalty's."""
    reward, scored, mask = paper_batch
    g = torch.Generator().manual_seed(0)
    old, ref = torch.randn(mask.shape, generator=g), torch.randn(mask.shape, generator=g)
    rewards, kl = add_kl_penalty(scored.token_rewards, old, ref, mask, coef=0.1)
    assert torch.allclose(kl, ((old - ref) * mask).sum(1), atol=1e-6)  # summed k1; the return pays -coef * kl
    kl_return = -0.1 * kl
    m = _metrics(reward, scored, mask, kl_return, torch.zeros(4, dtype=torch.bool))
    assert m["reward/mean"] == pytest.approx(float(rewards.sum(1).mean()), abs=1e-5)
    assert m["reward/kl_mean"] == pytest.approx(float(kl_return.mean()), abs=1e-6) and float(kl.abs().sum()) > 0
