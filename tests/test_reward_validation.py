"""The reward config's checks come from the registered shapes' declarations (validate_reward),
at start-up, naming the key."""
from __future__ import annotations

import pytest
from conftest import compose_train

from critic_free_rl.config.loading import to_train_config
from critic_free_rl.config.validate import ConfigError


def test_new_reward_presets_compose_with_their_shape_and_the_rollout_limit() -> None:
    """success_overlong's limit is the rollout's max_new_tokens (an override included)."""
    r = to_train_config(compose_train("reward=success_overlong", "rollout.max_new_tokens=100")).reward
    assert (r.name, r.overlong_buffer, r.overlong_coef, r.overlong_max_tokens) == ("success", 8, 1.0, 100)
    r = to_train_config(compose_train("reward=pr_min", "reward.overlong_buffer=16")).reward
    assert (r.shaping, r.min_temperature, r.overlong_buffer, r.overlong_max_tokens) == ("min", None, 16, 64)
    assert to_train_config(compose_train("reward=pr_progress")).reward.shaping == "progress"


@pytest.mark.parametrize("overrides, expected", [
    (["reward=pr_clip", "reward.shaping=delta"], "reward.name='pr_clip' needs reward.shaping='clip', got 'delta'"),
    (["reward=pr_min", "reward.min_temperature=0"], "reward.min_temperature=0.0 must be > 0"),
    (["reward=pr_clip_delta", "reward.clip_eta=1.5"], "reward.clip_eta=1.5 must lie in [0, 1]"),
    (["reward=pr_delta", "reward.clip_eta=1.5"], None),  # delta does not declare eta: not checked
    (["reward=success_overlong", "reward.overlong_buffer=65"], "reward.overlong_buffer=65 must be 0 (off) or in [1, reward.overlong_max_tokens=64]"),
    (["reward=success", "reward.overlong_buffer=-1"], "reward.overlong_buffer=-1"),
    (["reward=pr_progress", "reward.prm=null"], "reward.name='pr_progress' needs a PRM"),
    (["reward=pr_bonus"], "Available options in 'reward'"),
    (["reward.name=pr_bonus"], "reward.name='pr_bonus' is not valid; valid choices: ['orm', 'pr', 'pr_clip'"),
])
def test_reward_errors_name_the_key(overrides: list[str], expected: str | None) -> None:
    if expected is None:
        to_train_config(compose_train(*overrides))
        return
    with pytest.raises(Exception) as err:
        to_train_config(compose_train(*overrides))
    assert expected in str(err.value)
    if "Available options" not in expected:
        assert isinstance(err.value, ConfigError)
