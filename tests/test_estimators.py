"""Advantage estimators: hand-computed examples, textbook equality, baseline properties, and the
needs each declares to start-up validation. (The shaping-bound property: test_estimator_bounds.py.)"""
from __future__ import annotations

import math
import statistics
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from conftest import compose_train
from omegaconf import OmegaConf

from critic_free_rl.algorithms import AdvantageInput, estimator_names, estimator_spec, get_estimator
from critic_free_rl.algorithms.common import discounted_cumsum, group_moments
from critic_free_rl.config.schema import AlgorithmConfig
from critic_free_rl.config.validate import ConfigError, validate

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


def make_batch(rewards, reward_mask, lengths, group_ids, values=None, outcome=None):
    """Right-padded float32 batch from nested lists; T = len(rewards[0]). ``outcome`` [B] is
    the part of each sample's last-token reward that is the outcome (already in ``rewards``)."""
    rewards = torch.tensor(rewards)
    response_mask = torch.arange(rewards.shape[1]) < torch.tensor(lengths)[:, None]
    return AdvantageInput(
        token_rewards=rewards * response_mask,
        reward_mask=torch.tensor(reward_mask, dtype=torch.bool) & response_mask,
        response_mask=response_mask,
        group_ids=torch.tensor(group_ids),
        values=None if values is None else torch.tensor(values),
        outcome=None if outcome is None else torch.tensor(outcome),
    )


def outcome_batch(scores, lengths, group_ids):
    """Sequence-level rewards: score i on the last token of sample i (the outcome)."""
    flags = [[t == n - 1 for t in range(max(lengths))] for n in lengths]
    rewards = [[s * f for f in row] for s, row in zip(scores, flags)]
    return make_batch(rewards, flags, lengths, group_ids, outcome=scores)


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
    """Outcome [1, 0] z-scored on its own (+-1/sqrt(2)); step rewards {-1 at t=1 | -.5 at t=0}
    added as plain returns-to-go, never centred or scaled (old form: pooled with the outcome)."""
    batch = make_batch([[0, -1, 0, 1], [-0.5, 0, 0, 0]], [[0, 1, 0, 1], [1, 0, 1, 0]], [4, 3], [0, 0], outcome=[1.0, 0.0])
    a = 0.5 / (1 / math.sqrt(2) + 1e-6)  # (1 - mean .5) / (std 1/sqrt(2) + eps)
    assert_close(run("grpo", batch, "process").advantages, [[a - 1, a - 1, a, a], [-a - 0.5, -a, -a, 0]])
    assert_close(run("dr_grpo", batch, "process").advantages, [[-0.5, -0.5, 0.5, 0.5], [-1, -0.5, -0.5, 0]])


def test_grpo_process_puts_kl_tokens_in_the_dense_part():
    """KL penalty -0.1 on every token, outcome [1, 0]: the outcome term is z-scored alone and the
    KL stays on its tokens as a return-to-go (catches KL pooled into the outcome statistics)."""
    kl = -0.1
    batch = make_batch([[kl, kl, kl, 1 + kl], [kl, kl, kl, kl]], [[0, 0, 0, 1], [0, 0, 0, 1]], [4, 4], [0, 0], outcome=[1.0, 0.0])
    a = 0.5 / (1 / math.sqrt(2) + 1e-6)
    kl_to_go = [4 * kl, 3 * kl, 2 * kl, kl]
    assert_close(run("grpo", batch, "process").advantages, [[a + k for k in kl_to_go], [-a + k for k in kl_to_go]])
    # return-to-go: equal KL in both samples cancels against the leave-one-out baseline
    assert_close(run("grpo", batch, "return_to_go").advantages, [[a + (k - 4 * kl) / 2 for k in kl_to_go],
                                                                [-a + (k - 4 * kl) / 2 for k in kl_to_go]])


def test_issue_example_padded_solution_gets_the_same_advantage():
    """Issue 18: PRM scores [.8, .3] and the same solution padded to [.8, .3, .8, .8], Clip
    eta=.5 -> steps [0, -.2] and [0, -.2, 0, 0], no correct answer. Their clipped returns are
    equal, so every form gives both the same first-token advantage (old process GRPO: +-0.645)."""
    batch = make_batch([[0, -0.2, 0, 0], [0, -0.2, 0, 0]], [[1, 1, 0, 0], [1, 1, 1, 1]], [2, 4], [0, 0], outcome=[0.0, 0.0])
    for name in ("grpo", "dr_grpo"):
        for mode in ("process", "return_to_go"):
            first = run(name, batch, mode).advantages[:, 0]
            assert_close(first[0], first[1])
    assert_close(run("grpo", batch, "process").advantages, [[-0.2, -0.2, 0, 0], [-0.2, -0.2, 0, 0]])


DENSE = dict(
    rewards=[[0.5, 0, 1.0], [0, 0.5, 0]], reward_mask=[[1, 0, 1], [0, 1, 0]], lengths=[3, 2], group_ids=[1, 1],
    outcome=[1.0, 0.0],
)


def test_return_to_go_hand():
    # G_0 = [1.5, 1, 1], G_1 = [.5, .5]; leave-one-out baselines b_0 = .5, b_1 = 1.5
    batch = make_batch(**DENSE)
    assert_close(run("rloo", batch).advantages, [[1.0, 0.5, 0.5], [-1.0, -1.0, 0]])
    assert_close(run("dr_grpo", batch).advantages, [[0.5, 0.25, 0.25], [-0.5, -0.5, 0]])
    # GRPO: outcome [1, 0] -> +-a; dense D_0 = [.5, 0, 0], D_1 = [.5, .5] -> (n-1)/n (D - other's D_0)
    a = 0.5 / (1 / math.sqrt(2) + 1e-6)
    assert_close(run("grpo", batch).advantages, [[a, a - 0.25, a - 0.25], [-a, -a, 0]])
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


# ----------------------------------------------------------------------- declared needs, groups of 1
@pytest.mark.parametrize("estimator, dense_mode", [f for f in FORMS if estimator_spec(f[0]).group_baseline])
def test_group_of_one_gets_zero_advantage(estimator, dense_mode):
    """A prompt sampled once has no group to compare with (RLOO used to divide by zero)."""
    assert (run(estimator, outcome_batch([1.0, 0.3], [2, 1], [0, 1]), dense_mode).advantages == 0).all()


def test_forms_are_the_registered_declarations():
    """FORMS (used by the properties here) is every built-in critic-free (estimator, dense mode)
    pair the registry declares, plus GAE (which takes rewards per token, whatever the mode);
    catches a declaration that drifts from what is tested."""
    builtin = [n for n in estimator_names() if get_estimator(n).__module__.startswith("critic_free_rl.")]
    critic_free = [(n, m) for n in builtin if not estimator_spec(n).critic for m in estimator_spec(n).dense_modes]
    assert sorted(FORMS) == sorted([*critic_free, ("gae", "process")])
    assert {n for n in builtin if estimator_spec(n).group_baseline} == {"grpo", "dr_grpo", "rloo", "reinforce_pp_baseline"}
    assert [n for n in builtin if estimator_spec(n).critic] == ["gae"]


def test_direct_call_errors():
    with pytest.raises(ValueError, match="algorithm.dense_mode"):
        run("grpo", outcome_batch(**ONE_GROUP), "bogus")
    with pytest.raises(ValueError, match="use_critic"):
        run("gae", outcome_batch(**ONE_GROUP))


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["algorithm=rloo", "algorithm.dense_mode=process"],
         "algorithm.dense_mode='process' is not valid for estimator 'rloo'; valid choices: ['return_to_go']"),
        (["algorithm=reinforce_pp_baseline", "rollout.group_size=1"], "rollout.group_size=1: algorithm 'reinforce_pp_baseline'"),
        (["algorithm=dr_grpo", "rollout.group_size=1"], "needs at least 2 samples per prompt"),
        (["algorithm=ppo", "algorithm.use_critic=false"], "estimator 'gae' needs a critic: set algorithm.use_critic=true"),
        (["algorithm=grpo", "algorithm.use_critic=true"], "estimator 'grpo' takes no critic: set algorithm.use_critic=false"),
        (["algorithm.estimator=foo"], "algorithm.estimator='foo' is not valid; valid choices: ['dr_grpo', 'gae', 'grpo'"),
    ],
)
def test_validation_reads_the_declared_needs(overrides, expected):
    """Start-up validation applies each estimator's registered needs (no hard-coded lists)."""
    with pytest.raises(ConfigError) as err:
        validate(OmegaConf.to_object(compose_train(*overrides)))
    assert expected in str(err.value)


def test_reinforce_pp_takes_groups_of_one():
    """No group baseline declared, so group_size=1 passes validation."""
    validate(OmegaConf.to_object(compose_train("algorithm=reinforce_pp", "rollout.group_size=1")))


def test_yaml_configs_validate_and_name_registered_estimators():
    files = sorted(CONFIGS.glob("*.yaml"))
    assert {f.stem for f in files} >= {"ppo", "grpo", "dr_grpo", "rloo", "reinforce_pp", "reinforce_pp_baseline"}
    for f in files:
        conf = OmegaConf.merge(OmegaConf.structured(AlgorithmConfig), OmegaConf.load(f))
        assert conf.name == f.stem and conf.estimator in estimator_names()
        validate(OmegaConf.to_object(compose_train(f"algorithm={f.stem}")))


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
    outcome = torch.randint(-2, 3, (B,), generator=gen).to(dtype) / 2
    rewards = outcome[:, None] * (torch.arange(T) == (lengths - 1)[:, None])
    if dense:  # step rewards (one may share the last token with the outcome) and KL-in-reward tokens
        rewards = rewards + torch.randint(-2, 3, (B, T), generator=gen).to(dtype) / 2 * reward_mask
        if draw(st.booleans()):
            rewards = rewards - 0.05 * torch.rand(B, T, generator=gen, dtype=dtype) * response_mask
    perm = torch.randperm(B, generator=gen)
    return AdvantageInput(
        token_rewards=rewards[perm], reward_mask=reward_mask[perm], response_mask=response_mask[perm],
        group_ids=(torch.arange(n_groups).repeat_interleave(size) * 10 + 3)[perm],
        values=torch.randn(B, T, generator=gen, dtype=dtype)[perm], outcome=outcome[perm],
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
    batch.token_rewards, batch.values, batch.outcome = (x.to(dtype) for x in (batch.token_rewards, batch.values, batch.outcome))
    for estimator, dense_mode in FORMS:
        out = run(estimator, batch, dense_mode)
        for t in (out.advantages, out.returns):
            assert t.shape == batch.token_rewards.shape and t.dtype == dtype
            assert (t[~batch.response_mask] == 0).all() and torch.isfinite(t).all()


def own_return_removed(estimator: str, batch: AdvantageInput) -> torch.Tensor:
    """[B, T]: A_{i,t} - c_i G_{i,t} (return-to-go forms), c = 1 (RLOO) or (n-1)/n (GRPO family):
    what is left is the baseline (times -c), plus GRPO's outcome term."""
    out = run(estimator, batch)
    n = group_moments(batch.token_rewards.sum(-1), batch.group_ids)[2]
    scale = torch.ones_like(n) if estimator == "rloo" else (n - 1) / n
    return (out.advantages - scale[:, None] * out.returns) * batch.response_mask


@settings(max_examples=25, deadline=None)
@given(batch=batches(), data=st.data())
def test_return_to_go_baseline_ignores_own_rewards(batch, data):
    """RLOO, Dr. GRPO and GRPO (return_to_go): changing sample i's step/KL rewards (its outcome
    kept) moves its advantages only through its own G_{i,t}: the baseline is the other samples'
    mean return, b_{i,t} = mean_{j != i} R_j (checked for RLOO and Dr. GRPO)."""
    i = data.draw(st.integers(0, batch.group_ids.shape[0] - 1))
    changed = AdvantageInput(**vars(batch))
    changed.token_rewards = batch.token_rewards.clone()
    changed.token_rewards[i] += torch.linspace(-1.0, 2.0, batch.token_rewards.shape[1], dtype=torch.float64)
    changed.token_rewards *= batch.response_mask
    scores, gids = batch.token_rewards.sum(-1).tolist(), batch.group_ids.tolist()
    loo = statistics.fmean(r for j, r in enumerate(scores) if gids[j] == gids[i] and j != i)
    n = gids.count(gids[i])
    for estimator in ("rloo", "dr_grpo", "grpo"):
        before, after = own_return_removed(estimator, batch), own_return_removed(estimator, changed)
        torch.testing.assert_close(before[i], after[i], atol=1e-6, rtol=1e-6)
        if estimator != "grpo":
            scale = 1.0 if estimator == "rloo" else (n - 1) / n
            torch.testing.assert_close(before[i], -scale * loo * batch.response_mask[i].double(), atol=1e-6, rtol=1e-6)


@settings(max_examples=25, deadline=None)
@given(batch=batches())
def test_grpo_process_is_outcome_zscore_plus_dense_return(batch):
    """GRPO process form: A_{i,t} - D_{i,t} is one value per sample, the z-score of the outcome
    in its group (catches step rewards pooled into, or centred by, the group statistics)."""
    adv = run("grpo", batch, "process").advantages
    last = torch.nn.functional.pad(batch.response_mask[:, 1:], (0, 1), value=False) ^ batch.response_mask
    dense = discounted_cumsum(batch.token_rewards - batch.outcome[:, None] * last, batch.response_mask, 1.0)
    mean, std, _ = group_moments(batch.outcome, batch.group_ids)
    expected = (batch.outcome - mean) / (std + 1e-6)
    torch.testing.assert_close(adv - dense, expected[:, None] * batch.response_mask, atol=1e-9, rtol=0)
