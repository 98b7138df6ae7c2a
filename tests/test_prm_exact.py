"""prm=exact: the embedded task's own step rule as an oracle PRM, with a seeded noise dial."""
from __future__ import annotations

import pytest
from conftest import compose_train

from critic_free_rl.config.loading import to_train_config
from critic_free_rl.config.schema import RewardConfig
from critic_free_rl.config.validate import ConfigError
from critic_free_rl.data.arithmetic import ArithmeticSpec, generate_split
from critic_free_rl.data.arithmetic_steps import first_error_solutions, label_steps, labelled_solutions
from critic_free_rl.models.tiny import build_char_tokenizer
from critic_free_rl.rewards.pipeline import RewardPipeline, score_records
from critic_free_rl.rewards.prm import ExactStepJudge, load_prm

PROMPT = "What is 17 + 5 - 8?\n"


def _solutions():
    prompts = [r["question"] + "\n" for r in generate_split(300, 9, ArithmeticSpec(max_operand=9))]
    return labelled_solutions(prompts, 2, seed=1) + first_error_solutions(prompts, seed=2)


def test_without_noise_the_scores_are_the_rule() -> None:
    data = _solutions()
    scores = ExactStepJudge().score([d.prompt for d in data], [d.steps for d in data])
    assert scores == [[float(y) for y in d.labels] for d in data]
    assert ExactStepJudge().score([PROMPT], [["17 + 5 = 22", "22 - 8 = 15", "\\boxed{14}"]]) == [[1.0, 0.0, 0.0]]


def test_noise_flips_the_expected_share_of_a_known_set_of_steps_reproducibly() -> None:
    """With prm_noise=0.3 about 30% of the judgements are flipped (binomial sd ~0.006 on
    these ~6000 steps), the same ones on every call and whatever the batch, and another
    seed flips other steps. Catches a flip rate off by a factor, per-batch or unseeded draws."""
    data = _solutions()
    prompts, steps = [d.prompt for d in data], [d.steps for d in data]
    judge = ExactStepJudge(noise=0.3, seed=7)
    scores = judge.score(prompts, steps)
    flips = [s != float(y) for d, sample in zip(data, scores) for s, y in zip(sample, d.labels)]
    assert len(flips) > 5000
    assert abs(sum(flips) / len(flips) - 0.3) < 0.025
    assert judge.score(prompts, steps) == scores
    assert [judge.score([p], [s])[0] for p, s in zip(prompts[:50], steps[:50])] == scores[:50]
    other = ExactStepJudge(noise=0.3, seed=8).score(prompts, steps)
    assert other != scores
    assert all(x in (0.0, 1.0) for sample in other for x in sample)
    assert ExactStepJudge(noise=1.0).score(prompts[:20], steps[:20]) == [[1.0 - y for y in d.labels] for d in data[:20]]


def test_load_prm_and_the_pipeline_score_one_value_per_non_empty_line() -> None:
    """reward=pr_clip prm=exact: a right step shapes to 0 and a wrong one to -0.5 (eta 0.5),
    and `score` rows keep steps and prm_scores aligned one per non-empty line."""
    cfg = RewardConfig(name="pr_clip", shaping="clip", dense_coef=1.0, clip_eta=0.5, prm="exact", prm_noise=0.0)
    assert isinstance(load_prm(cfg), ExactStepJudge)
    completion = "17 + 5 = 22\n\n  22 - 8 = 15\n\\boxed{15}\n"
    with RewardPipeline(cfg, build_char_tokenizer()) as pipeline:
        [row] = score_records([{"prompt": PROMPT, "completion": completion, "reference": "14"}], pipeline)
    assert row["steps"] == ["17 + 5 = 22", "22 - 8 = 15", "\\boxed{15}"]
    assert row["prm_scores"] == [1.0, 0.0, 0.0] == [float(y) for y in label_steps(PROMPT, row["steps"])]
    assert row["shaped"] == pytest.approx([0.0, -0.5, -0.5])


@pytest.mark.parametrize("overrides, expected", [
    (["reward=pr_clip", "reward.prm_noise=0.2"], "reward.prm_noise=0.2 flips the judgements of prm=exact only"),
    (["reward=pr_clip", "prm=exact", "reward.prm_noise=1.5"], "reward.prm_noise=1.5 must be a probability"),
])
def test_prm_noise_is_validated_naming_the_key(overrides: list[str], expected: str) -> None:
    with pytest.raises(ConfigError, match=expected.replace(".", r"\.")):
        to_train_config(compose_train(*overrides))


def test_the_exact_preset_selects_the_oracle() -> None:
    cfg = to_train_config(compose_train("reward=pr_clip", "prm=exact", "reward.prm_noise=0.3"))
    assert (cfg.reward.prm, cfg.reward.prm_noise, cfg.reward.shaping) == ("exact", 0.3, "clip")
