"""Losses: hand-computed aggregation, KL estimators, clipping, value loss, objective."""
from __future__ import annotations

import math

import pytest
import torch

from critic_free_rl.algorithms.losses import (
    aggregate,
    entropy_from_logits,
    kl_penalty,
    policy_loss,
    policy_objective,
    value_loss,
)
from critic_free_rl.algorithms.reward_terms import add_kl_penalty, flat_groups
from critic_free_rl.config.schema import AlgorithmConfig

LN2 = math.log(2.0)


def close(actual, expected, atol: float = 1e-6) -> None:
    expected = torch.as_tensor(expected, dtype=torch.float32)
    torch.testing.assert_close(torch.as_tensor(actual), expected, atol=atol, rtol=0)


def full_mask(*shape: int) -> torch.Tensor:
    return torch.ones(*shape, dtype=torch.bool)


@pytest.mark.parametrize(
    "mode, norm_len, expected",
    [
        ("token-mean", None, 10 / 4),  # (1 + 2 + 3 + 4) / 4 tokens
        ("seq-mean-token-mean", None, (2 + 4) / 2),  # mean(6/3, 4/1)
        ("seq-mean-token-sum", None, (6 + 4) / 2),
        ("seq-mean-token-sum-norm", 4, (6 + 4) / 2 / 4),
        ("seq-mean-token-sum-norm", None, (6 + 4) / 2 / 3),  # padded length T = 3
    ],
)
def test_aggregate_modes(mode, norm_len, expected):
    values = torch.tensor([[1.0, 2.0, 3.0], [4.0, 99.0, 99.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]], dtype=torch.bool)
    close(aggregate(values, mask, mode, norm_len), expected)


def test_aggregate_unknown_mode():
    with pytest.raises(ValueError, match="loss_agg"):
        aggregate(torch.zeros(1, 1), full_mask(1, 1), "sum")


def test_kl_estimators_hand():
    # pi = 0.5, pi_ref = 0.25: log(pi/pi_ref) = ln 2, r = pi_ref/pi = 0.5
    logp, ref = torch.tensor([[math.log(0.5)]]), torch.tensor([[math.log(0.25)]])
    close(kl_penalty(logp, ref, "k1"), [[LN2]])
    close(kl_penalty(logp, ref, "k2"), [[0.5 * LN2**2]])  # 0.240227
    close(kl_penalty(logp, ref, "k3"), [[0.5 - 1 + LN2]])  # 0.193147
    for estimator in ("k1", "k2", "k3"):
        close(kl_penalty(ref, ref, estimator), [[0.0]])
    with pytest.raises(ValueError, match="kl_estimator"):
        kl_penalty(logp, ref, "k4")


def test_policy_loss_clip_fraction_hand():
    # ratios .5, 1, 1.5, 1.1 with A = -1, 1, 1, -1 and clip range [0.8, 1.28]:
    # per-token max(-A rho, -A clip(rho)) = .8 (clipped), -1, -1.28 (clipped), 1.1
    ratio = torch.tensor([[0.5, 1.0, 1.5, 1.1]])
    old = torch.zeros(1, 4)
    logp = ratio.log().requires_grad_()
    adv = torch.tensor([[-1.0, 1.0, 1.0, -1.0]])
    loss, metrics = policy_loss(logp, old, adv, full_mask(1, 4), 0.2, 0.28)
    close(loss, (0.8 - 1.0 - 1.28 + 1.1) / 4)
    close(metrics["clip_frac"], 0.5)
    close(metrics["dual_clip_frac"], 0.0)
    close(metrics["approx_kl"], ((ratio - 1) - ratio.log()).mean())
    loss.backward()  # clipped tokens carry no gradient; d(-A rho)/d logp = -A rho / 4
    close(logp.grad, [[0.0, -0.25, 0.0, 1.1 / 4]])


def test_dual_clip_hand():
    # A = -1 with ratios 5 and 2, c = 3: max(5, 1.2) = 5 -> capped at 3; 2 stays; A = +1, ratio 5 -> -1.2
    logp = torch.tensor([[5.0, 2.0, 5.0]]).log()
    adv = torch.tensor([[-1.0, -1.0, 1.0]])
    loss, metrics = policy_loss(logp, torch.zeros(1, 3), adv, full_mask(1, 3), 0.2, 0.2, dual_clip=3.0)
    close(loss, (3.0 + 2.0 - 1.2) / 3)
    close(metrics["dual_clip_frac"], 1 / 3)
    close(metrics["clip_frac"], 1 / 3)  # only the positive-advantage token is clipped
    with pytest.raises(ValueError, match="dual_clip"):
        policy_loss(logp, torch.zeros(1, 3), adv, full_mask(1, 3), 0.2, 0.2, dual_clip=1.0)


def test_padding_garbage_stays_out_of_the_loss():
    # exp(100) overflows float32: the padded token's ratio is inf and its -A * rho is nan
    logp, mask = torch.tensor([[0.0, 100.0]]), torch.tensor([[1, 0]], dtype=torch.bool)
    for mode in ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"):
        adv = torch.tensor([[1.0, 0.0]])
        loss, metrics = policy_loss(logp, torch.zeros(1, 2), adv, mask, 0.2, 0.2, loss_agg=mode)
        assert torch.isfinite(loss) and all(torch.isfinite(m) for m in metrics.values())


def test_value_loss_clipping_hand():
    # old V = 0, clip .2: token 0 V = 1, R = 2 -> max(1, (0.2 - 2)^2 = 3.24); token 1 V = .1, R = .5 -> .16
    values, returns = torch.tensor([[1.0, 0.1, 7.0]]), torch.tensor([[2.0, 0.5, 0.0]])
    mask = torch.tensor([[1, 1, 0]], dtype=torch.bool)
    loss, metrics = value_loss(values, torch.zeros(1, 3), returns, mask, clip=0.2)
    close(loss, 0.5 * (3.24 + 0.16) / 2)
    close(metrics["vf_clip_frac"], 0.5)
    unclipped, metrics = value_loss(values, torch.zeros(1, 3), returns, mask, clip=None)
    close(unclipped, 0.5 * (1.0 + 0.16) / 2)
    close(metrics["vf_clip_frac"], 0.0)


def test_entropy_from_logits_hand():
    logits = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [math.log(0.5), math.log(0.25), math.log(0.25), -1e9]]])
    close(entropy_from_logits(logits), [[math.log(4), 0.5 * LN2 + 0.5 * math.log(4)]])


def test_policy_objective_combines_terms():
    # ratio 1, A = 1 -> pg_loss -1; k3 = 0.193147; entropy 1.0
    logp = torch.full((1, 2), math.log(0.5))
    ref, entropy, mask = torch.full((1, 2), math.log(0.25)), torch.ones(1, 2), full_mask(1, 2)
    cfg = AlgorithmConfig(name="grpo", kl_in="loss", kl_estimator="k3", kl_coef=0.05, entropy_coef=0.01)
    loss, metrics = policy_objective(logp, logp, torch.ones(1, 2), mask, cfg, ref_logp=ref, entropy=entropy)
    close(loss, -1.0 + 0.05 * (LN2 - 0.5) - 0.01 * 1.0)
    close(metrics["pg_loss"], -1.0)
    close(metrics["kl"], LN2 - 0.5)
    close(metrics["entropy"], 1.0)
    assert all(m.dim() == 0 and not m.requires_grad for m in metrics.values())

    cfg = AlgorithmConfig(name="ppo", kl_in="reward", kl_estimator="k1")
    loss, metrics = policy_objective(logp, logp, torch.ones(1, 2), mask, cfg, ref_logp=ref)
    close(loss, -1.0)  # KL is in the reward, only logged
    close(metrics["kl"], LN2)


def test_policy_objective_errors():
    x, mask = torch.zeros(1, 2), full_mask(1, 2)
    with pytest.raises(ValueError, match="ref_logp"):
        policy_objective(x, x, x, mask, AlgorithmConfig(name="grpo", kl_in="loss"))
    with pytest.raises(ValueError, match="entropy"):
        policy_objective(x, x, x, mask, AlgorithmConfig(name="grpo", kl_in="none", entropy_coef=0.1))
    with pytest.raises(ValueError, match="kl_in"):
        policy_objective(x, x, x, mask, AlgorithmConfig(name="grpo", kl_in="both"))


def test_add_kl_penalty_hand():
    """k1 = old_logp - ref_logp on response tokens only, times -coef into the reward; the
    per-sample sum is the KL itself (catches a wrong sign, the coef in the KL, or padding paid)."""
    old = torch.tensor([[math.log(0.5), math.log(0.5), 0.0], [math.log(0.25), 0.0, 0.0]])
    ref = torch.tensor([[math.log(0.25), math.log(0.5), 9.0], [math.log(0.5), 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    rewards = torch.tensor([[0.0, 1.0, 0.0], [2.0, 0.0, 0.0]])
    out, kl = add_kl_penalty(rewards, old, ref, mask, 0.1)
    close(out, [[-0.1 * LN2, 1.0, 0.0], [2.0 + 0.1 * LN2, 0.0, 0.0]])
    close(kl, [LN2, -LN2])


def test_flat_groups_hand():
    """Groups whose scores are all equal (and groups of one) are flat; ids need not be contiguous."""
    flat = flat_groups(torch.tensor([1.0, 1.0, 0.0, 1.0, 2.0, 0.5, 0.5]), torch.tensor([4, 4, 1, 1, 9, 3, 3]))
    assert flat.tolist() == [True, True, False, False, True, True, True]
