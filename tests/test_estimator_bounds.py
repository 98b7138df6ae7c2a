"""Estimators keep the bound of shaped step rewards (issue 18).

Property, for every critic-free estimator and every dense mode it declares, on the
advantages before any batch-wide whitening (REINFORCE++'s whitening is applied to
:func:`pre_whitening`'s quantity, checked below), with shaped step rewards given as input:

(a) appending to one sample steps whose shaped reward is 0 changes no advantage of any
    original token of the batch;
(b) appending to one sample steps with a negative shaped reward never raises an advantage
    of that sample's original tokens.

The outcome (success) term stays on the sample's last token, so it moves to the new last
token when steps are appended, as it would for the same solution written longer. The
KL-in-reward penalty is on every original token (appended tokens carry none: the property
is about the shaped rewards). DeepSeekMath's process form, the form this project used
before, is kept below ONLY as the counter-example that the property catches.
"""
from __future__ import annotations

import math
from typing import Callable

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from critic_free_rl.algorithms import AdvantageInput, estimator_names, estimator_spec, get_estimator
from critic_free_rl.algorithms.common import (
    GROUP_STD_EPS,
    discounted_cumsum,
    group_moments,
    masked_whiten,
    returns_to_go,
)
from critic_free_rl.algorithms.reinforce_pp import baselined_returns
from critic_free_rl.config.schema import AlgorithmConfig

#: a sample: (steps [(n_tokens, shaped reward)], outcome)
Sample = tuple[list[tuple[int, float]], float]


def build(samples: list[Sample], group_ids: list[int], kl: torch.Tensor, T: int) -> AdvantageInput:
    """float64 batch padded to T: step rewards on step ends, the outcome added on the last
    token, ``kl`` [B, T] on every response token (reward_mask unset there)."""
    B = len(samples)
    rewards = torch.zeros(B, T, dtype=torch.float64)
    reward_mask = torch.zeros(B, T, dtype=torch.bool)
    lengths = []
    for i, (steps, outcome) in enumerate(samples):
        t = 0
        for n, r in steps:
            t += n
            rewards[i, t - 1] += r
            reward_mask[i, t - 1] = True
        rewards[i, t - 1] += outcome
        lengths.append(t)
    response_mask = torch.arange(T) < torch.tensor(lengths)[:, None]
    return AdvantageInput(rewards + kl[:, :T] * response_mask, reward_mask, response_mask, torch.tensor(group_ids),
                          outcome=torch.tensor([o for _, o in samples], dtype=torch.float64))


def pre_whitening(name: str, mode: str) -> Callable[[AdvantageInput], torch.Tensor]:
    """Advantages before any batch-wide whitening: REINFORCE++'s own quantity, else global_norm off."""
    cfg = AlgorithmConfig(name=name, estimator=name, dense_mode=mode, global_norm=False)
    if name == "reinforce_pp":
        return lambda batch: returns_to_go(batch, cfg.gamma)
    if name == "reinforce_pp_baseline":
        return lambda batch: baselined_returns(batch, cfg.gamma)
    return lambda batch: get_estimator(name)(batch, cfg).advantages


def critic_free_forms() -> list[tuple[str, str]]:
    return [(n, m) for n in estimator_names() if not estimator_spec(n).critic for m in estimator_spec(n).dense_modes]


def violations(form: Callable[[AdvantageInput], torch.Tensor], samples: list[Sample], group_ids: list[int], k: int,
               extra: list[tuple[int, float]], kl: torch.Tensor) -> list[str]:
    """What breaks (a) (``extra`` rewards all 0) or (b) (all < 0) when ``extra`` steps are
    appended to sample k; [] when the property holds."""
    lengths = torch.tensor([sum(n for n, _ in steps) for steps, _ in samples])
    T0 = int(lengths.max())
    kl = kl * (torch.arange(kl.shape[1]) < lengths[:, None])  # appended tokens pay no KL
    longer = [(steps + extra, o) if i == k else (steps, o) for i, (steps, o) in enumerate(samples)]
    T1 = max(T0, sum(n for n, _ in longer[k][0]))
    before_batch = build(samples, group_ids, kl, T0)
    before, after = form(before_batch), form(build(longer, group_ids, kl, T1))[:, :T0]
    orig = before_batch.response_mask
    if all(r == 0 for _, r in extra):
        diff = ((after - before).abs() * orig).max().item()
        return [f"(a) a step worth 0 moved an original advantage by {diff:.4g}"] if diff > 1e-9 else []
    raised = ((after[k] - before[k]) * orig[k]).max().item()
    return [f"(b) a negative step raised sample {k}'s advantage by {raised:.4g}"] if raised > 1e-9 else []


@st.composite
def cases(draw, negative: bool):
    """(samples, group_ids, k, extra steps, kl [B, T]) with 1-2 groups of 2-4 samples."""
    n_groups, size = draw(st.integers(1, 2)), draw(st.integers(2, 4))
    reward = st.floats(-1.0, 1.0, allow_nan=False).map(lambda x: round(x, 3))
    step = st.tuples(st.integers(1, 3), reward)
    samples = [(draw(st.lists(step, min_size=1, max_size=4)), draw(st.sampled_from([0.0, 1.0, 5.0])))
               for _ in range(n_groups * size)]
    group_ids = [g * 7 + 2 for g in range(n_groups) for _ in range(size)]
    k = draw(st.integers(0, len(samples) - 1))
    extra_reward = st.floats(-1.0, -0.01).map(lambda x: round(x, 3)) if negative else st.just(0.0)
    extra = draw(st.lists(st.tuples(st.integers(1, 3), extra_reward), min_size=1, max_size=3))
    T = 12 + 9  # longest sample + longest extension
    with_kl = draw(st.booleans())
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31)))
    kl = (torch.rand(len(samples), T, generator=gen, dtype=torch.float64) - 0.5) * 0.1 * with_kl
    return samples, group_ids, k, extra, kl


@settings(max_examples=60, deadline=None)
@given(case=cases(negative=False))
def test_zero_steps_change_no_advantage(case):
    for name, mode in critic_free_forms():
        assert violations(pre_whitening(name, mode), *case) == [], (name, mode)


@settings(max_examples=60, deadline=None)
@given(case=cases(negative=True))
def test_negative_steps_never_raise_own_advantages(case):
    for name, mode in critic_free_forms():
        assert violations(pre_whitening(name, mode), *case) == [], (name, mode)


@settings(max_examples=10, deadline=None)
@given(case=cases(negative=True))
def test_reinforce_pp_whitens_the_tested_quantity(case):
    """The quantity the property checks is the one REINFORCE++ whitens (not a stand-in)."""
    samples, group_ids, _, _, kl = case
    batch = build(samples, group_ids, kl, max(sum(n for n, _ in s) for s, _ in samples))
    for name in ("reinforce_pp", "reinforce_pp_baseline"):
        cfg = AlgorithmConfig(name=name, estimator=name, dense_mode="return_to_go")
        expected = masked_whiten(pre_whitening(name, "return_to_go")(batch), batch.response_mask)
        torch.testing.assert_close(get_estimator(name)(batch, cfg).advantages, expected)


# ----------------------------------------------------------------------- the counter-example
# OLD FORM, KEPT ONLY AS THE COUNTER-EXAMPLE: DeepSeekMath process supervision as this project
# computed it before issue 18 (every token's reward folded into its step, all step rewards of
# the group, outcome included, normalised by one group mean and std). Not used anywhere else.
def _old_step_ends(reward_mask: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    last = response_mask & ~torch.nn.functional.pad(response_mask[:, 1:], (0, 1), value=False)
    return (reward_mask | last) & response_mask


def _old_step_rewards(token_rewards: torch.Tensor, ends: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    ends_long = ends.long()
    step_index = ends_long.cumsum(-1) - ends_long
    per_step = token_rewards.new_zeros(token_rewards.shape[0], token_rewards.shape[1] + 1)
    per_step.scatter_add_(1, step_index, token_rewards * response_mask)
    return per_step.gather(1, step_index) * ends


def old_process_form(batch: AdvantageInput, scale_by_std: bool = True) -> torch.Tensor:
    ends = _old_step_ends(batch.reward_mask, batch.response_mask)
    steps = _old_step_rewards(batch.token_rewards, ends, batch.response_mask)
    mean, std, _ = group_moments(steps, batch.group_ids, ends)
    normalized = (steps - mean[:, None]) * ends
    if scale_by_std:
        normalized = normalized / (std[:, None] + GROUP_STD_EPS)
    return discounted_cumsum(normalized, batch.response_mask, 1.0)


#: issue 18: PRM scores [.8, .3] under Clip (eta .5) -> shaped [0, -.2]; no correct answer.
ISSUE = dict(samples=[([(1, 0.0), (1, -0.2)], 0.0), ([(1, 0.0), (1, -0.2)], 0.0)], group_ids=[0, 0], k=1,
             extra=[(1, 0.0), (1, 0.0)], kl=torch.zeros(2, 4, dtype=torch.float64))


def test_old_process_form_fails_the_property_on_the_issue_example():
    """Padding sample 1 to PRM scores [.8, .3, .8, .8] (two steps worth 0): the old GRPO process
    form gives it +0.645 at its first token and the short one -0.645 (Dr. GRPO +-0.067); the
    property reports it, and every current form passes the same case."""
    padded = build([ISSUE["samples"][0], (ISSUE["samples"][1][0] + ISSUE["extra"], 0.0)], [0, 0], ISSUE["kl"], 4)
    first = old_process_form(padded)[:, 0]
    assert first.tolist() == pytest.approx([-0.6455, 0.6455], abs=1e-4)
    assert old_process_form(padded, scale_by_std=False)[:, 0].tolist() == pytest.approx([-1 / 15, 1 / 15], abs=1e-6)
    assert violations(old_process_form, **ISSUE) != []
    assert violations(lambda b: old_process_form(b, False), **ISSUE) != []
    for name, mode in critic_free_forms():
        assert violations(pre_whitening(name, mode), **ISSUE) == [], (name, mode)


def test_old_process_form_fails_b():
    """(b) on the old form: a negative step appended to the short sample pulls the group's mean
    step reward down, so the sample's other steps (worth 0) gain; its first token rises."""
    case = dict(ISSUE, k=0, extra=[(1, -0.05)])
    assert any(v.startswith("(b)") for v in violations(old_process_form, **case))
    for name, mode in critic_free_forms():
        assert violations(pre_whitening(name, mode), **case) == [], (name, mode)


def test_hand_example_new_forms():
    """The issue's padded pair by hand, with outcome 1 for the short sample: outcomes [1, 0] have
    mean .5 and std 1/sqrt(2), so z = +-.5 / (1/sqrt(2) + eps); GRPO process A = z + D, the
    shaped rewards' return-to-go (D = [-.2, -.2] and [-.2, -.2, 0, 0]), unshifted."""
    batch = build([([(1, 0.0), (1, -0.2)], 1.0), ([(1, 0.0), (1, -0.2), (1, 0.0), (1, 0.0)], 0.0)], [0, 0],
                  torch.zeros(2, 4, dtype=torch.float64), 4)
    z = 0.5 / (1 / math.sqrt(2) + GROUP_STD_EPS)
    cfg = AlgorithmConfig(name="grpo", estimator="grpo", dense_mode="process")
    torch.testing.assert_close(get_estimator("grpo")(batch, cfg).advantages,
                               torch.tensor([[z - 0.2, z - 0.2, 0, 0], [-z - 0.2, -z - 0.2, -z, -z]], dtype=torch.float64))
    # return-to-go: D centred by the other sample's D_0 = -.2 (both -.2): (n-1)/n * (D_t + .2)
    cfg = AlgorithmConfig(name="grpo", estimator="grpo", dense_mode="return_to_go")
    torch.testing.assert_close(get_estimator("grpo")(batch, cfg).advantages,
                               torch.tensor([[z, z, 0, 0], [-z, -z, -z + 0.1, -z + 0.1]], dtype=torch.float64))


def test_old_return_to_go_grpo_fails_b():
    """OLD FORM, COUNTER-EXAMPLE ONLY: GRPO's return-to-go form used to divide everything by the
    group std of the returns R, which the sample's own steps enter. Sample 0 (steps +.6, -.8,
    R = -.2) against R = 0: one more step worth -.2 doubles the std, halving the tokens' -2.83 to
    -1.77. The current form divides only the outcome term by the outcome's std."""
    def old(b: AdvantageInput) -> torch.Tensor:
        R = (b.token_rewards * b.response_mask).sum(-1)
        n = group_moments(R, b.group_ids)[2]
        return ((n - 1) / n)[:, None] * (returns_to_go(b) - ((R.sum() - R) / (n - 1))[:, None]) * b.response_mask \
            / (group_moments(R, b.group_ids)[1][:, None] + GROUP_STD_EPS)

    case = dict(samples=[([(1, 0.6), (1, -0.8)], 0.0), ([(1, 0.0)], 0.0)], group_ids=[0, 0], k=0, extra=[(1, -0.2)],
                kl=torch.zeros(2, 4, dtype=torch.float64))
    assert any(v.startswith("(b)") for v in violations(old, **case))
    assert violations(pre_whitening("grpo", "return_to_go"), **case) == []
