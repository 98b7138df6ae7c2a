"""Advantage estimators: hand-computed examples, textbook equality, baseline properties."""
from __future__ import annotations

import math
import statistics
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from critic_free_rl.algorithms import AdvantageInput, estimator_names, get_estimator
from critic_free_rl.algorithms.common import discounted_cumsum, group_moments, group_sizes, zero_variance_groups
from critic_free_rl.algorithms.grpo import step_ends, step_rewards
from critic_free_rl.config.schema import AlgorithmConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "algorithm"
#: (estimator, dense_mode) pairs that are valid
FORMS = [
    ("grpo", "process"), ("grpo", "return_to_go"), ("dr_grpo", "process"),
    ("dr_grpo", "return_to_go"), ("rloo", "return_to_go"), ("reinforce_pp", "return_to_go"),
    ("reinforce_pp_baseline", "return_to_go"), ("gae", "process"),
]
S3 = math.sqrt(3) / 2  # GRPO advantage of a [1, 0, 0, 1] group: 0.5 / std = 0.8660...


def cfg(estimator: str, dense_mode: str = "return_to_go", **kw) -> AlgorithmConfig:
    return AlgorithmConfig(name=estimator, estimator=estimator, dense_mode=dense_mode, **kw)


def run(estimator: str, batch: AdvantageInput, dense_mode: str = "return_to_go", **kw):
    return get_estimator(estimator)(batch, cfg(estimator, dense_mode, **kw))


def make_batch(rewards, reward_mask, lengths, group_ids, values=None):
    """Right-padded float32 batch from nested lists; T = len(rewards[0])."""
    rewards = torch.tensor(rewards)
    response_mask = torch.arange(rewards.shape[1]) < torch.tensor(lengths)[:, None]
    return AdvantageInput(
        token_rewards=rewards * response_mask,
        reward_mask=torch.tensor(reward_mask, dtype=torch.bool) & response_mask,
        response_mask=response_mask,
        group_ids=torch.tensor(group_ids),
        values=None if values is None else torch.tensor(values),
    )


def outcome_batch(scores, lengths, group_ids):
    """Sequence-level rewards: score i on the last token of sample i."""
    flags = [[t == n - 1 for t in range(max(lengths))] for n in lengths]
    rewards = [[s * f for f in row] for s, row in zip(scores, flags)]
    return make_batch(rewards, flags, lengths, group_ids)


def per_token(batch: AdvantageInput, per_sample) -> torch.Tensor:
    """Broadcast one value per sample over its response tokens."""
    return torch.as_tensor(per_sample, dtype=batch.token_rewards.dtype)[:, None] * batch.response_mask


def assert_close(actual: torch.Tensor, expected, atol: float = 1e-5) -> None:
    torch.testing.assert_close(actual, torch.as_tensor(expected, dtype=actual.dtype), atol=atol, rtol=0)


# ----------------------------------------------------------------------- hand examples
ONE_GROUP = dict(scores=[1.0, 0.0, 0.0, 1.0], lengths=[3, 2, 1, 3], group_ids=[7, 7, 7, 7])


@pytest.mark.parametrize("dense_mode", ["process", "return_to_go"])
def test_grpo_outcome_hand(dense_mode):
    batch = outcome_batch(**ONE_GROUP)
    assert_close(run("grpo", batch, dense_mode).advantages, per_token(batch, [S3, -S3, -S3, S3]))
    no_std = run("grpo", batch, dense_mode, norm_by_std=False).advantages
    assert_close(no_std, per_token(batch, [0.5, -0.5, -0.5, 0.5]))
    assert_close(run("dr_grpo", batch, dense_mode).advantages, no_std)


def test_rloo_outcome_hand():
    batch = outcome_batch(**ONE_GROUP)  # b_0 = (0 + 0 + 1) / 3, b_1 = (1 + 0 + 1) / 3
    assert_close(run("rloo", batch).advantages, per_token(batch, [2 / 3, -2 / 3, -2 / 3, 2 / 3]))


def test_reinforce_pp_outcome_hand():
    batch = outcome_batch(**ONE_GROUP)  # tokens: six 1s and three 0s -> mean 2/3, std sqrt(2)/3
    r2 = math.sqrt(2)
    out = run("reinforce_pp", batch)
    assert_close(out.advantages, per_token(batch, [1 / r2, -r2, -r2, 1 / r2]))
    assert_close(out.returns, per_token(batch, ONE_GROUP["scores"]))


def test_reinforce_pp_baseline_outcome_hand():
    # groups [1, 0] and [1, 1], 2 tokens each: centred [.5, -.5, 0, 0], std over tokens 1/sqrt(8)
    batch = outcome_batch([1.0, 0.0, 1.0, 1.0], [2, 2, 2, 2], [0, 0, 5, 5])
    r2 = math.sqrt(2)
    assert_close(run("reinforce_pp_baseline", batch).advantages, per_token(batch, [r2, -r2, 0, 0]))


def test_gae_hand():
    # gamma 1, lam .5, r = [0, 0, 1], V = .5: deltas [0, 0, .5] -> A = [.125, .25, .5]
    batch = make_batch([[0, 0, 1, 0]], [[0, 0, 1, 0]], [3], [0], values=[[0.5, 0.5, 0.5, 9.0]])
    out = run("gae", batch, gamma=1.0, lam=0.5)
    assert_close(out.returns, [[0.625, 0.75, 1.0, 0.0]])
    assert_close(out.advantages, [[-4 / math.sqrt(14), -1 / math.sqrt(14), 5 / math.sqrt(14), 0.0]])


def test_grpo_process_hand():
    # step rewards of the group {1, 4 | 0, 3}: mean 2, std sqrt(10/3) -> +-0.5477, +-1.0954
    batch = make_batch([[0, 1, 0, 4], [0, 0, 3, 0]], [[0, 1, 0, 1], [1, 0, 1, 0]], [4, 3], [0, 0])
    a, b = 1 / math.sqrt(10 / 3), 2 / math.sqrt(10 / 3)
    assert_close(run("grpo", batch, "process").advantages, [[a, a, b, b], [-a, a, a, 0]])
    assert_close(run("dr_grpo", batch, "process").advantages, [[1, 1, 2, 2], [-1, 1, 1, 0]])


def test_grpo_process_folds_kl_tokens_into_their_step():
    # KL penalty -0.1 on every token; steps end at t=1 and t=3 -> step rewards 0.8 and 0.8
    kl = -0.1
    batch = make_batch([[kl, 1 + kl, kl, 1 + kl], [kl, kl, kl, kl]], [[0, 1, 0, 1], [0, 0, 0, 1]], [4, 4], [0, 0])
    # pool {0.8, 0.8 | -0.4}: mean 0.4, std sqrt(0.48)
    s = math.sqrt(0.48)
    assert_close(run("grpo", batch, "process").advantages, [[0.8 / s] * 2 + [0.4 / s] * 2, [-0.8 / s] * 4])


DENSE = dict(
    rewards=[[0.5, 0, 1.0], [0, 0.5, 0]], reward_mask=[[1, 0, 1], [0, 1, 0]], lengths=[3, 2], group_ids=[1, 1]
)


def test_return_to_go_hand():
    # G_0 = [1.5, 1, 1], G_1 = [.5, .5]; leave-one-out baselines b_0 = .5, b_1 = 1.5
    batch = make_batch(**DENSE)
    assert_close(run("rloo", batch).advantages, [[1.0, 0.5, 0.5], [-1.0, -1.0, 0]])
    assert_close(run("dr_grpo", batch).advantages, [[0.5, 0.25, 0.25], [-0.5, -0.5, 0]])
    r = 1 / math.sqrt(2)  # (n-1)/n / std{1.5, .5}
    assert_close(run("grpo", batch).advantages, [[r, r / 2, r / 2], [-r, -r, 0]])
    # REINFORCE++: whiten G over 5 tokens (mean .9, std sqrt(.14)); baseline: whiten dr_grpo's
    s = math.sqrt(0.14)
    assert_close(run("reinforce_pp", batch).advantages, [[0.6 / s, 0.1 / s, 0.1 / s], [-0.4 / s, -0.4 / s, 0]])
    s = math.sqrt(0.175)
    expected = [[0.5 / s, 0.25 / s, 0.25 / s], [-0.5 / s, -0.5 / s, 0]]
    assert_close(run("reinforce_pp_baseline", batch).advantages, expected)


def test_common_helpers_hand():
    x = torch.tensor([[1.0, 2.0, 4.0, 8.0]])
    assert_close(discounted_cumsum(x, torch.tensor([[1, 1, 1, 0]]).bool(), 0.5), [[3.0, 4.0, 4.0, 0.0]])
    mean, std, count = group_moments(torch.tensor([1.0, 3.0, 5.0]), torch.tensor([9, 2, 9]))
    assert_close(mean, [3.0, 3.0, 3.0])
    assert_close(std, [2 * math.sqrt(2), 0, 2 * math.sqrt(2)])
    assert_close(count, [2.0, 1.0, 2.0])
    flat = zero_variance_groups(torch.tensor([1.0, 1.0, 0.0, 1.0, 2.0]), torch.tensor([0, 0, 1, 1, 2]))
    assert flat.tolist() == [True, True, False, False, True]


# ----------------------------------------------------------------------- errors, groups of 1
def test_rloo_group_of_one_raises_naming_group_size():
    with pytest.raises(ValueError, match="rollout.group_size"):
        run("rloo", outcome_batch([1.0, 0.0], [2, 2], [0, 1]))


@pytest.mark.parametrize("estimator, dense_mode", [f for f in FORMS if f[0] in ("grpo", "dr_grpo", "reinforce_pp_baseline")])
def test_group_of_one_gets_zero_advantage(estimator, dense_mode):
    assert (run(estimator, outcome_batch([1.0, 0.3], [2, 1], [0, 1]), dense_mode).advantages == 0).all()


def test_bad_config_errors():
    batch = outcome_batch(**ONE_GROUP)
    for name in ("rloo", "reinforce_pp", "reinforce_pp_baseline"):
        with pytest.raises(ValueError, match="algorithm.dense_mode"):
            run(name, batch, "process")
    with pytest.raises(ValueError, match="algorithm.dense_mode"):
        run("grpo", batch, "bogus")
    with pytest.raises(ValueError, match="use_critic"):
        run("gae", batch)


def test_yaml_configs_validate_and_name_registered_estimators():
    files = sorted(CONFIGS.glob("*.yaml"))
    assert {f.stem for f in files} >= {"ppo", "grpo", "dr_grpo", "rloo", "reinforce_pp", "reinforce_pp_baseline"}
    for f in files:
        conf = OmegaConf.merge(OmegaConf.structured(AlgorithmConfig), OmegaConf.load(f))
        assert conf.name == f.stem and conf.estimator in estimator_names()


# ----------------------------------------------------------------------- properties
@st.composite
def batches(draw, dense: bool = True, min_group: int = 2, dtype=torch.float64):
    n_groups, size, T = draw(st.integers(1, 3)), draw(st.integers(min_group, 4)), draw(st.integers(1, 6))
    B = n_groups * size
    lengths = torch.tensor(draw(st.lists(st.integers(1, T), min_size=B, max_size=B)))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31)))
    response_mask = torch.arange(T) < lengths[:, None]
    reward_mask = torch.arange(T) == (lengths - 1)[:, None]
    if dense:
        reward_mask |= (torch.rand(B, T, generator=gen) < 0.4) & response_mask
    rewards = torch.randint(-2, 3, (B, T), generator=gen).to(dtype) / 2 * reward_mask
    if dense and draw(st.booleans()):  # KL-in-reward tokens
        rewards = rewards - 0.05 * torch.rand(B, T, generator=gen, dtype=dtype) * response_mask
    perm = torch.randperm(B, generator=gen)
    return AdvantageInput(
        token_rewards=rewards[perm], reward_mask=reward_mask[perm], response_mask=response_mask[perm],
        group_ids=(torch.arange(n_groups).repeat_interleave(size) * 10 + 3)[perm],
        values=torch.randn(B, T, generator=gen, dtype=dtype)[perm],
    )


def textbook(estimator: str, batch: AdvantageInput) -> torch.Tensor:
    """Per-sample loops over the textbook formulas for sequence-level rewards."""
    scores = batch.token_rewards.sum(-1).tolist()
    gids = batch.group_ids.tolist()
    group = [[scores[j] for j in range(len(scores)) if gids[j] == g] for g in gids]
    others = [[scores[j] for j in range(len(scores)) if gids[j] == g and j != i] for i, g in enumerate(gids)]
    std = [statistics.stdev(gr) if len(gr) > 1 else 0.0 for gr in group]
    centred = [r - statistics.fmean(gr) for r, gr in zip(scores, group)]
    if estimator == "grpo":
        return per_token(batch, [c / (s + 1e-6) for c, s in zip(centred, std)])
    if estimator == "dr_grpo":
        return per_token(batch, centred)
    if estimator == "rloo":
        return per_token(batch, [r - statistics.fmean(o) for r, o in zip(scores, others)])
    if estimator not in ("reinforce_pp", "reinforce_pp_baseline"):
        raise KeyError(f"no textbook formula for {estimator!r}")
    tokens = per_token(batch, scores if estimator == "reinforce_pp" else centred)
    values = tokens[batch.response_mask].tolist()
    mean, var = statistics.fmean(values), statistics.pvariance(values)
    return (tokens - mean) / math.sqrt(var + 1e-8) * batch.response_mask


@settings(max_examples=25, deadline=None)
@given(batch=batches(dense=False))
def test_sequence_level_rewards_match_textbook(batch):
    for estimator, dense_mode in [form for form in FORMS if form[0] != "gae"]:
        actual = run(estimator, batch, dense_mode).advantages
        torch.testing.assert_close(actual, textbook(estimator, batch), atol=1e-7, rtol=1e-7)


@settings(max_examples=25, deadline=None)
@given(batch=batches(min_group=1, dtype=torch.float32), dtype=st.sampled_from([torch.float32, torch.float64]))
def test_zero_outside_response_and_shapes_dtypes(batch, dtype):
    batch.token_rewards, batch.values = batch.token_rewards.to(dtype), batch.values.to(dtype)
    singleton = bool((group_sizes(batch.group_ids) < 2).any())
    for estimator, dense_mode in FORMS:
        if estimator == "rloo" and singleton:
            continue
        out = run(estimator, batch, dense_mode)
        for t in (out.advantages, out.returns):
            assert t.shape == batch.token_rewards.shape and t.dtype == dtype
            assert (t[~batch.response_mask] == 0).all() and torch.isfinite(t).all()


def loo_baseline(estimator: str, batch: AdvantageInput) -> torch.Tensor:
    """b_{i,t} [B, T] recovered from A_{i,t} = scale_i * (G_{i,t} - b_{i,t}) (return-to-go forms)."""
    out = run(estimator, batch)
    _, std, n = group_moments(batch.token_rewards.sum(-1), batch.group_ids)
    scale = {"rloo": torch.ones_like(n), "dr_grpo": (n - 1) / n, "grpo": (n - 1) / n / (std + 1e-6)}[estimator]
    return (out.returns - out.advantages / scale[:, None]) * batch.response_mask


@settings(max_examples=25, deadline=None)
@given(batch=batches(), data=st.data())
def test_return_to_go_baseline_ignores_own_rewards(batch, data):
    """RLOO, Dr. GRPO and GRPO (return_to_go): at every token b_{i,t} = mean_{j != i} R_j, unchanged
    when sample i's rewards change (for GRPO after undoing its std scale, which depends on them)."""
    i = data.draw(st.integers(0, batch.group_ids.shape[0] - 1))
    changed = AdvantageInput(**vars(batch))
    changed.token_rewards = batch.token_rewards.clone()
    changed.token_rewards[i] += torch.linspace(-1.0, 2.0, batch.token_rewards.shape[1], dtype=torch.float64)
    changed.token_rewards *= batch.response_mask
    scores, gids = batch.token_rewards.sum(-1).tolist(), batch.group_ids.tolist()
    loo = statistics.fmean(r for j, r in enumerate(scores) if gids[j] == gids[i] and j != i)
    for estimator in ("rloo", "dr_grpo", "grpo"):
        before, after = loo_baseline(estimator, batch), loo_baseline(estimator, changed)
        torch.testing.assert_close(before[i], loo * batch.response_mask[i].double(), atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(before[i], after[i], atol=1e-6, rtol=1e-6)


@settings(max_examples=25, deadline=None)
@given(batch=batches())
def test_grpo_process_normalises_step_rewards_per_group(batch):
    """GRPO process form: the per-step terms s~ = A_t - A_{t+1} at step ends have group mean 0
    and group std sigma / (sigma + eps), sigma = std of the group's step rewards s (own included)."""
    adv = run("grpo", batch, "process").advantages
    normalized = adv - torch.nn.functional.pad(adv[:, 1:], (0, 1))
    ends = step_ends(batch.reward_mask, batch.response_mask)
    assert (normalized[~ends].abs() < 1e-9).all()
    mean, std, _ = group_moments(normalized, batch.group_ids, ends)
    sigma = group_moments(step_rewards(batch.token_rewards, ends, batch.response_mask), batch.group_ids, ends)[1]
    torch.testing.assert_close(mean, torch.zeros_like(mean), atol=1e-9, rtol=0)
    torch.testing.assert_close(std, sigma / (sigma + 1e-6), atol=1e-9, rtol=0)
