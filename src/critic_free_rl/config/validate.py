"""Cross-field checks run at start-up, before any model is loaded.

Each error names the offending key and, where there is a closed set, the valid choices.
(Unknown keys and wrong types are already rejected by the dataclass schema.)
"""
from __future__ import annotations

from typing import Collection

from critic_free_rl.config.schema import DataConfig, TrainConfig
from critic_free_rl.config.scale_out import validate_scale_out

GROUP_BASELINE_ESTIMATORS = {"grpo", "dr_grpo", "rloo", "reinforce_pp_baseline"}


class ConfigError(ValueError):
    """A configuration that cannot run (names the key and, where closed, the valid choices)."""


def _choice(key: str, value: object, valid: Collection[object]) -> None:
    """Raise :class:`ConfigError` unless ``value`` is one of ``valid``."""
    if value not in valid:
        raise ConfigError(f"{key}={value!r} is not valid; valid choices: {sorted(valid)}")


def _validate_data(d: DataConfig) -> None:
    """Dataset settings that would otherwise fail on the first row (or not at all)."""
    from critic_free_rl.rewards.success import REFERENCE_FORMATS

    _choice("data.answer_format", d.answer_format, set(REFERENCE_FORMATS))
    try:
        d.prompt_template.format(question="")
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(f"data.prompt_template={d.prompt_template!r} is not a valid template: the only placeholder is "
                          f"{{question}} and literal braces are written {{{{ }}}} ({type(exc).__name__}: {exc})") from exc
    if d.max_prompt_chars < 1:
        raise ConfigError(f"data.max_prompt_chars={d.max_prompt_chars} must be at least 1")


#: the keys of ``model.warmstart`` (see :func:`critic_free_rl.models.loading.embedded_policy`)
WARMSTART_KEYS = {"steps", "batch_size", "lr", "seed", "stop_at_accuracy", "eval_every", "eval_problems", "early_answer_frac"}


def validate(cfg: TrainConfig) -> None:
    """Cross-field checks of a composed config; raises :class:`ConfigError` on the first problem."""
    from critic_free_rl.algorithms import estimator_names
    from critic_free_rl.algorithms.losses import KL_ESTIMATORS, KL_PLACEMENTS, LOSS_AGG_MODES
    from critic_free_rl.rewards.pipeline import REWARD_MODES

    a, r, ro, t = cfg.algorithm, cfg.reward, cfg.rollout, cfg.trainer
    _choice("algorithm.estimator", a.estimator, set(estimator_names()))
    _choice("algorithm.loss_agg", a.loss_agg, set(LOSS_AGG_MODES))
    _choice("algorithm.kl_in", a.kl_in, set(KL_PLACEMENTS))
    _choice("algorithm.kl_estimator", a.kl_estimator, set(KL_ESTIMATORS))
    _choice("algorithm.dense_mode", a.dense_mode, {"process", "return_to_go"})
    _choice("reward.name", r.name, set(REWARD_MODES))
    _choice("rollout.engine", ro.engine, {"vllm", "hf"})
    _choice("trainer.backend", t.backend, {"deepspeed", "torch"})
    _choice("trainer.zero_stage", t.zero_stage, {0, 1, 2, 3})
    _validate_data(cfg.data)
    unknown = sorted(set(cfg.model.warmstart) - WARMSTART_KEYS)
    if unknown:
        raise ConfigError(f"model.warmstart has unknown key(s) {unknown}; valid keys: {sorted(WARMSTART_KEYS)}")
    validate_scale_out(cfg)
    if a.estimator in GROUP_BASELINE_ESTIMATORS and ro.group_size < 2:
        raise ConfigError(f"rollout.group_size={ro.group_size}: algorithm {a.name!r} uses a group baseline and needs at least 2 samples per prompt")
    if ro.group_size < 1 or ro.prompts_per_step < 1:
        raise ConfigError("rollout.group_size and rollout.prompts_per_step must be positive")
    if ro.cpu_kvcache_gib is not None and not ro.cpu_kvcache_gib > 0:
        raise ConfigError(f"rollout.cpu_kvcache_gib={ro.cpu_kvcache_gib}: give a positive size in GiB, or null to size the KV cache to the rollout")
    if ro.prompts_per_step % t.num_ranks:
        raise ConfigError(f"rollout.prompts_per_step={ro.prompts_per_step} is not divisible by trainer.num_ranks={t.num_ranks}")
    samples = ro.prompts_per_step // t.num_ranks * ro.group_size
    if samples % a.num_minibatches:
        raise ConfigError(f"algorithm.num_minibatches={a.num_minibatches} does not divide the {samples} samples per rank per step (rollout.prompts_per_step / trainer.num_ranks * rollout.group_size)")
    if a.use_critic and a.estimator != "gae":
        raise ConfigError(f"algorithm.use_critic=true needs algorithm.estimator=gae (got {a.estimator!r})")
    if a.estimator == "gae" and not a.use_critic:
        raise ConfigError("algorithm.estimator=gae needs algorithm.use_critic=true")
    if REWARD_MODES[r.name] is not None:
        if not r.prm:
            raise ConfigError(f"reward.name={r.name!r} needs a PRM: set reward.prm (a hub name, a path, or 'embedded')")
        _choice("reward.prm_kind", r.prm_kind, {"token_cls", "tag_lm"})
        if r.prm_kind == "token_cls" and not r.prm_separator:
            raise ConfigError("reward.prm_kind=token_cls needs reward.prm_separator (the token the PRM is read at)")
        if r.prm_kind == "tag_lm" and not (r.step_tag and r.prm_positive_token and r.prm_negative_token):
            raise ConfigError("reward.prm_kind=tag_lm needs reward.step_tag, reward.prm_positive_token and reward.prm_negative_token")
    if r.prm_noise and r.prm != "exact":
        raise ConfigError(f"reward.prm_noise={r.prm_noise} flips the judgements of prm=exact only (got reward.prm={r.prm!r})")
    if r.prm == "exact" and cfg.data.name != "embedded":
        raise ConfigError(f"reward.prm=exact is the embedded task's step rule; data.name={cfg.data.name!r} has none")
    if not 0.0 <= r.prm_noise <= 1.0:
        raise ConfigError(f"reward.prm_noise={r.prm_noise} must be a probability in [0, 1]")
    if r.name == "orm" and not r.orm:
        raise ConfigError("reward.name='orm' needs reward.orm (an outcome reward model name or path)")
    if t.total_steps < 1:
        raise ConfigError(f"trainer.total_steps={t.total_steps} must be at least 1")
