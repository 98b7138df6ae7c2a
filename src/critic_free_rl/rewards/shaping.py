"""Shaped PRM step rewards through the shape registry, and the reward config's checks.

``reward.name`` selects the reward: ``success`` and ``orm`` have no step term; every other
name belongs to one registered shape (:mod:`critic_free_rl.rewards.shapes`: ``pr`` ->
``none``, ``pr_clip`` -> ``clip``, ``pr_delta`` -> ``delta``, ``pr_clip_delta`` ->
``clip_delta``, ``pr_min`` -> ``min``, ``pr_progress`` -> ``progress``), which also sets
``reward.shaping``. ``prime`` has step terms but no shape and no PRM: its implicit PRM is
trained online (:mod:`~critic_free_rl.rewards.implicit_prm`). What a shape declares it needs is what :func:`validate_reward` checks
and what :func:`shape_step_rewards` passes it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import torch

from critic_free_rl.rewards.shapes import get_shape, shape_names

if TYPE_CHECKING:
    from critic_free_rl.config.schema import RewardConfig

#: reward.name -> the reward.shaping it requires (None: no shape, no PRM)
REWARD_MODES: dict[str, Optional[str]] = {"success": None, "orm": None, "prime": None,
                                          **{get_shape(s).reward: s for s in shape_names()}}


def shape_step_rewards(scores: torch.Tensor, mode: str, eta: float = 0.0, mask: Optional[torch.Tensor] = None, *,
                       prompt_score: Optional[torch.Tensor] = None, temperature: Optional[float] = None) -> torch.Tensor:
    """Refine step scores ``[K]`` or ``[B, K]`` (float) into shaped rewards of the same shape.

    ``mask`` (``[B, K]`` bool, optional) marks real steps of a padded batch; real steps
    must come first in each row (a prefix). Padded entries come back as 0 and never take
    part in a shape. ``eta`` (Clip threshold), ``prompt_score`` (``[B]`` or a scalar for
    ``[K]`` input: the PRM's score of the prompt) and ``temperature`` reach only the shapes
    that declare them.
    """
    shape = get_shape(mode)
    squeeze = scores.dim() == 1
    r = scores.float().unsqueeze(0) if squeeze else scores.float()
    valid = torch.ones_like(r, dtype=torch.bool) if mask is None else (mask.unsqueeze(0) if squeeze else mask).bool()
    given = {"eta": eta, "temperature": temperature,
             "prompt_score": None if prompt_score is None else torch.as_tensor(prompt_score, dtype=torch.float32).reshape(-1)}
    if "prompt_score" in shape.needs and prompt_score is None:
        raise ValueError(f"reward.shaping={mode!r} needs the PRM's prompt scores (prompt_score)")
    out = shape.fn(torch.where(valid, r, 0.0), valid, **{need: given[need] for need in shape.needs})
    out = torch.where(valid, out, 0.0)
    return out.squeeze(0) if squeeze else out


def validate_reward(r: RewardConfig) -> None:
    """Cross-field checks of ``cfg.reward``, from the selected shape's declared needs;
    raises :class:`~critic_free_rl.config.errors.ConfigError` naming the key."""
    from critic_free_rl.config.errors import ConfigError
    from critic_free_rl.config.errors import choice as _choice

    _choice("reward.name", r.name, set(REWARD_MODES))
    shaping = REWARD_MODES[r.name]
    if r.overlong_buffer:
        if not isinstance(r.overlong_max_tokens, int) or not 0 < r.overlong_buffer <= r.overlong_max_tokens:
            raise ConfigError(f"reward.overlong_buffer={r.overlong_buffer} must be 0 (off) or in [1, reward.overlong_max_tokens="
                              f"{r.overlong_max_tokens!r}] (the rollout's max_new_tokens)")
        if r.overlong_coef < 0:
            raise ConfigError(f"reward.overlong_coef={r.overlong_coef} must be >= 0 (the penalty is -coef at the limit)")
    if r.name == "orm" and not r.orm:
        raise ConfigError("reward.name='orm' needs reward.orm (an outcome reward model name or path)")
    if r.name == "prime":
        _validate_prime(r)
    if shaping is None:
        return
    if r.shaping != shaping:
        raise ConfigError(f"reward.name={r.name!r} needs reward.shaping={shaping!r}, got {r.shaping!r}")
    needs = get_shape(shaping).needs
    if "eta" in needs and not 0.0 <= r.clip_eta <= 1.0:
        raise ConfigError(f"reward.clip_eta={r.clip_eta} must lie in [0, 1] (PRM scores do) for reward.shaping={shaping!r}")
    if "temperature" in needs and r.min_temperature is not None and not r.min_temperature > 0:
        raise ConfigError(f"reward.min_temperature={r.min_temperature} must be > 0, or null for the exact min")
    if not r.prm:
        raise ConfigError(f"reward.name={r.name!r} needs a PRM: set reward.prm (a hub name, a path, 'embedded' or 'exact')")
    if r.prm == "exact":  # the oracle judges steps by the task's rule: no model, no prompt-only score
        if "prompt_score" in needs:
            raise ConfigError(f"reward.name={r.name!r} needs the PRM's score of the prompt alone; reward.prm=exact has none")
        return
    _choice("reward.prm_kind", r.prm_kind, {"token_cls", "tag_lm"})
    if r.prm_kind == "token_cls" and not r.prm_separator:
        raise ConfigError("reward.prm_kind=token_cls needs reward.prm_separator (the token the PRM is read at)")
    if r.prm_kind == "tag_lm" and not (r.step_tag and r.prm_positive_token and r.prm_negative_token):
        raise ConfigError("reward.prm_kind=tag_lm needs reward.step_tag, reward.prm_positive_token and reward.prm_negative_token")


def _validate_prime(r: RewardConfig) -> None:
    """``reward=prime``: its keys, and no PRM besides its own implicit one."""
    from critic_free_rl.config.errors import ConfigError
    from critic_free_rl.config.errors import choice as _choice

    if r.shaping != "none":
        raise ConfigError(f"reward.name='prime' gives raw implicit step rewards: reward.shaping must be 'none', got {r.shaping!r}")
    if r.prm is not None:
        raise ConfigError(f"reward.name='prime' trains its own implicit PRM from the policy: unset reward.prm (got {r.prm!r})")
    for key in ("prime_beta", "prime_lr", "prime_grad_clip"):
        if not getattr(r, key) > 0:
            raise ConfigError(f"reward.{key}={getattr(r, key)} must be > 0")
    if r.prime_batch_size < 1:
        raise ConfigError(f"reward.prime_batch_size={r.prime_batch_size} must be >= 1")
    _choice("reward.prime_dtype", r.prime_dtype, {"float32", "bfloat16", "float16"})
