"""Cross-field checks run at start-up, before any model is loaded.

Each error names the offending key and, where there is a closed set, the valid choices.
(Unknown keys and wrong types are already rejected by the dataclass schema.)
"""
from __future__ import annotations

from critic_free_rl.config.errors import ConfigError
from critic_free_rl.config.errors import choice as _choice
from critic_free_rl.config.plugins import import_plugins
from critic_free_rl.config.scale_out import validate_scale_out
from critic_free_rl.config.schema import AlgorithmConfig, DataConfig, TrainConfig

__all__ = ["ConfigError", "validate"]


def _validate_data(d: DataConfig) -> None:
    """Dataset settings that would otherwise fail on the first row (or not at all)."""
    from critic_free_rl.data.answers import REFERENCE_FORMATS
    from critic_free_rl.data.arithmetic import HELDOUT

    _choice("data.answer_format", d.answer_format, set(REFERENCE_FORMATS))
    try:
        d.prompt_template.format(question="")
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(f"data.prompt_template={d.prompt_template!r} is not a valid template: the only placeholder is "
                          f"{{question}} and literal braces are written {{{{ }}}} ({type(exc).__name__}: {exc})") from exc
    if d.name == "embedded" and d.final_split not in (None, d.train_split, d.test_split, HELDOUT):
        raise ConfigError(f"data.final_split={d.final_split!r}: the embedded task's splits are {d.train_split!r}, {d.test_split!r}, {HELDOUT!r}")
    if d.max_prompt_chars < 1:
        raise ConfigError(f"data.max_prompt_chars={d.max_prompt_chars} must be at least 1")


#: the keys of ``model.warmstart`` (see :func:`critic_free_rl.models.loading.embedded_policy`)
WARMSTART_KEYS = {"steps", "batch_size", "lr", "seed", "stop_at_accuracy", "eval_every", "eval_problems", "early_answer_frac"}


def _validate_estimator(a: AlgorithmConfig, group_size: int) -> None:
    """The needs the estimator declared when it registered (see ``algorithms/registry.py``)."""
    from critic_free_rl.algorithms import estimator_names, estimator_spec

    _choice("algorithm.estimator", a.estimator, set(estimator_names()))
    spec = estimator_spec(a.estimator)
    if a.dense_mode not in spec.dense_modes:
        raise ConfigError(f"algorithm.dense_mode={a.dense_mode!r} is not valid for estimator {a.estimator!r}; "
                          f"valid choices: {list(spec.dense_modes)}")
    if spec.group_baseline and group_size < 2:
        raise ConfigError(f"rollout.group_size={group_size}: algorithm {a.name!r} (estimator {a.estimator!r}) uses a group "
                          "baseline and needs at least 2 samples per prompt")
    if a.use_critic != spec.critic:
        need = "needs a critic: set algorithm.use_critic=true" if spec.critic else "takes no critic: set algorithm.use_critic=false"
        raise ConfigError(f"algorithm.use_critic={str(a.use_critic).lower()}: estimator {a.estimator!r} {need}")


def _validate_ranges(cfg: TrainConfig) -> None:
    """Numeric keys that would otherwise divide by zero, train nothing, or fail only once the
    engines are built; each error names the key and its valid range."""
    from critic_free_rl.rewards.steps import SPLITTERS

    a, r, ro, t, e = cfg.algorithm, cfg.reward, cfg.rollout, cfg.trainer, cfg.eval
    at_least_one = {"algorithm.ppo_epochs": a.ppo_epochs, "algorithm.num_minibatches": a.num_minibatches,
                    "trainer.num_ranks": t.num_ranks, "rollout.max_new_tokens": ro.max_new_tokens,
                    "eval.max_new_tokens": e.max_new_tokens, "reward.max_steps": r.max_steps,
                    "reward.verify_workers": r.verify_workers}
    for key, value in at_least_one.items():
        if value < 1:
            raise ConfigError(f"{key}={value} must be at least 1")
    if not r.verify_timeout_s > 0:
        raise ConfigError(f"reward.verify_timeout_s={r.verify_timeout_s} must be > 0 (CPU seconds per answer check)")
    for key, value in (("rollout.temperature", ro.temperature), ("eval.temperature", e.temperature)):
        if value < 0:
            raise ConfigError(f"{key}={value} must be >= 0 (0: greedy)")
    if not 0.0 < ro.top_p <= 1.0:
        raise ConfigError(f"rollout.top_p={ro.top_p} must be in (0, 1]")
    if e.num_samples < 0:
        raise ConfigError(f"eval.num_samples={e.num_samples} must be >= 0 (0: greedy accuracy only)")
    _choice("reward.step_split", r.step_split, set(SPLITTERS))
    if r.step_split == "tag" and not r.step_tag:
        raise ConfigError("reward.step_split=tag needs reward.step_tag (the text that ends a step)")


def validate(cfg: TrainConfig) -> None:
    """Cross-field checks of a composed config; raises :class:`ConfigError` on the first problem.

    Imports ``cfg.plugins`` first, so an estimator they register is known (and checked)."""
    from critic_free_rl.algorithms.losses import KL_ESTIMATORS, KL_PLACEMENTS, LOSS_AGG_MODES
    from critic_free_rl.rewards.shaping import validate_reward

    import_plugins(cfg.plugins)
    a, r, ro, t = cfg.algorithm, cfg.reward, cfg.rollout, cfg.trainer
    _validate_ranges(cfg)
    _validate_estimator(a, ro.group_size)
    _choice("algorithm.loss_agg", a.loss_agg, set(LOSS_AGG_MODES))
    _choice("algorithm.kl_in", a.kl_in, set(KL_PLACEMENTS))
    _choice("algorithm.kl_estimator", a.kl_estimator, set(KL_ESTIMATORS))
    validate_reward(r)
    if r.clip_eta_quantile is not None and not 0.0 <= r.clip_eta_quantile <= 1.0:
        raise ConfigError(f"reward.clip_eta_quantile={r.clip_eta_quantile} must be a quantile in [0, 1] (0.5: the median), or null")
    _choice("rollout.engine", ro.engine, {"vllm", "hf"})
    _choice("trainer.backend", t.backend, {"deepspeed", "torch"})
    _choice("trainer.zero_stage", t.zero_stage, {0, 1, 2, 3})
    _validate_data(cfg.data)
    unknown = sorted(set(cfg.model.warmstart) - WARMSTART_KEYS)
    if unknown:
        raise ConfigError(f"model.warmstart has unknown key(s) {unknown}; valid keys: {sorted(WARMSTART_KEYS)}")
    validate_scale_out(cfg)
    if ro.group_size < 1 or ro.prompts_per_step < 1:
        raise ConfigError("rollout.group_size and rollout.prompts_per_step must be positive")
    if ro.cpu_kvcache_gib is not None and not ro.cpu_kvcache_gib > 0:
        raise ConfigError(f"rollout.cpu_kvcache_gib={ro.cpu_kvcache_gib}: give a positive size in GiB, or null to size the KV cache to the rollout")
    if ro.prompts_per_step % t.num_ranks:
        raise ConfigError(f"rollout.prompts_per_step={ro.prompts_per_step} is not divisible by trainer.num_ranks={t.num_ranks}")
    samples = ro.prompts_per_step // t.num_ranks * ro.group_size
    if samples % a.num_minibatches:
        raise ConfigError(f"algorithm.num_minibatches={a.num_minibatches} does not divide the {samples} samples per rank per step (rollout.prompts_per_step / trainer.num_ranks * rollout.group_size)")
    if r.prm_noise and r.prm != "exact":
        raise ConfigError(f"reward.prm_noise={r.prm_noise} flips the judgements of prm=exact only (got reward.prm={r.prm!r})")
    if not 0.0 <= r.prm_noise <= 1.0:
        raise ConfigError(f"reward.prm_noise={r.prm_noise} must be a probability in [0, 1]")
    if r.prm == "exact" and cfg.data.name != "embedded":
        raise ConfigError(f"reward.prm=exact is the embedded task's step rule; data.name={cfg.data.name!r} has none")
    if t.total_steps < 1:
        raise ConfigError(f"trainer.total_steps={t.total_steps} must be at least 1")
    if t.log_every < 1:
        raise ConfigError(f"trainer.log_every={t.log_every} must be at least 1 (a progress line every N steps)")
