"""The embedded tiny PRM: the step-labelling rule, the noisy-solver data, a very small
training run that yields a PRM loadable by ProcessRewardModel, caching and reward.prm
resolution. Every model here is tiny and every cache lives in tmp_path."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from critic_free_rl.config.schema import DataConfig, RewardConfig
from critic_free_rl.data.arithmetic import ArithmeticSpec, generate_split
from critic_free_rl.models.tiny import build_tiny_model
from critic_free_rl.rewards import prm_train
from critic_free_rl.rewards.prm import ProcessRewardModel
from critic_free_rl.rewards.prm_train import (LabelledSolution, embedded_prm, label_steps, labelled_solutions,
                                              parse_problem, prefix_labels, resolve_prm_path, train_prm)

SEP = "<extra_0>"
PROMPT = "What is 17 + 5 - 8?\n"
TINY_ARCH = dict(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
TINY_TRAIN = dict(steps=4, batch_size=8, lr=1e-3, dense=1.0, per_problem=2, seed=0)


def _data(**kw) -> DataConfig:
    return DataConfig(name="embedded", path="embedded", num_train=kw.pop("num_train", 24), num_test=kw.pop("num_test", 6),
                      spec={"min_ops": 2, "max_ops": 3, "max_first": 99, "max_operand": 9}, **kw)


# --------------------------------------------------------------------------- labelling rule
def test_parse_problem() -> None:
    p = parse_problem(PROMPT)
    assert (p.start, p.ops) == (17, (("+", 5), ("-", 8)))
    assert p.values() == [17, 22, 14]


@pytest.mark.parametrize("steps, expected", [
    # a good chain
    (["17 + 5 = 22", "22 - 8 = 14", "\\boxed{14}"], [True, True, True]),
    # an arithmetic error, then steps that are locally right: bad after the first error
    (["17 + 5 = 22", "22 - 8 = 13", "\\boxed{13}"], [True, False, False]),
    (["17 + 5 = 23", "23 - 8 = 15", "\\boxed{15}"], [False, False, False]),
    # right arithmetic that does not follow from the previous result
    (["17 + 5 = 22", "21 - 8 = 13", "13 + 0 = 13"], [True, False, False]),
    # a wrong operand copied from the question / a flipped sign / a skipped operation
    (["17 + 8 = 25", "25 - 8 = 17"], [False, False]),
    (["17 - 5 = 12"], [False]),
    (["17 - 8 = 9", "9 + 5 = 14", "\\boxed{14}"], [False, False, False]),
    # correct-but-redundant steps are good: identity, a repeated line, a repeated box
    (["17 + 5 = 22", "22 + 0 = 22", "17 + 5 = 22", "22 - 8 = 14", "14 - 0 = 14", "\\boxed{14}", "\\boxed{14}"],
     [True] * 7),
    # ... but not on a value that was never derived, nor with wrong arithmetic
    (["17 + 5 = 22", "21 + 0 = 21"], [True, False]),
    (["17 + 5 = 22", "22 + 0 = 23"], [True, False]),
    # the box: wrong value, premature, or without the steps
    (["17 + 5 = 22", "22 - 8 = 14", "\\boxed{15}"], [True, True, False]),
    (["17 + 5 = 22", "\\boxed{22}", "22 - 8 = 14"], [True, False, False]),
    (["\\boxed{14}"], [False]),
    # two operations in one step, spacing variants; unparseable / truncated text is bad
    (["17 + 5 - 8 = 14", "\\boxed{ 14 }"], [True, True]),
    (["17+5=22", "22 -8= 14", "\\boxed{14}"], [True, True, True]),
    (["Let us add.", "17 + 5 = 22"], [False, False]),
    (["17 + 5 = 22", "22 - 8 ="], [True, False]),
])
def test_label_steps(steps: list[str], expected: list[bool]) -> None:
    assert label_steps(PROMPT, steps) == expected


def test_prefix_labels_mark_where_a_step_goes_wrong() -> None:
    steps = ["17 + 5 = 22", "22 + 0 = 22", "22 - 8 = 13", "13 + 0 = 13"]
    marks = ["".join("+" if ok else "-" for ok in chars) for chars in prefix_labels(PROMPT, steps)]
    assert marks == ["+" * 11, "+" * 11, "+" * 10 + "-", "-" * 11]
    assert prefix_labels(PROMPT, ["17 + 8 = 25"]) == [[True] * 5 + [False] * 6]  # wrong operand at char 5
    assert prefix_labels(PROMPT, ["17 + 5 = 2"]) == [[True] * 10]  # truncated: a bad step with no bad char


def test_gold_solutions_of_the_generator_are_all_good() -> None:
    for row in generate_split(200, 7, ArithmeticSpec(max_operand=9)):
        steps = row["solution"].split("\n")
        assert label_steps(row["question"] + "\n", steps) == [True] * len(steps)


def test_noisy_solutions_are_seeded_labelled_by_the_rule_and_cover_every_case() -> None:
    prompts = [row["question"] + "\n" for row in generate_split(100, 3, ArithmeticSpec(max_operand=9))]
    data = labelled_solutions(prompts, 4, seed=5)
    assert [(d.steps, d.labels) for d in data] == [(d.steps, d.labels) for d in labelled_solutions(prompts, 4, seed=5)]
    assert len(data) == 400
    for d in data:
        assert d.labels == label_steps(d.prompt, d.steps)
        assert all(s == s.strip() and s for s in d.steps)
        bad = [i for i, ok in enumerate(d.labels) if not ok]
        assert not bad or all(not ok for ok in d.labels[bad[0]:])  # bad after the first error
    cats = {c.split(":")[0] + (":" + c.split(":")[1] if c.startswith("first_error") else "")
            for d in data for c in d.categories}
    assert {"good", "after_error", "first_error:result", "first_error:operand", "first_error:follow",
            "first_error:skip"} <= cats
    tags = {c for d in data for c in d.categories}
    assert {"good:gold", "good:redundant", "good:box"} <= tags
    good = sum(y for d in data for y in d.labels) / sum(len(d.labels) for d in data)
    assert 0.4 < good < 0.8


# --------------------------------------------------------------------------- training
@pytest.mark.parametrize("label", [True, False])
def test_training_reads_labels_at_the_separators(tmp_path: Path, label: bool) -> None:
    """Class 1 = good at each SEP: training on all-good (all-bad) steps drives the scores
    that ProcessRewardModel reads up (down)."""
    prompts = [row["question"] + "\n" for row in generate_split(40, 11, ArithmeticSpec(max_operand=9))]
    data = [LabelledSolution(d.prompt, d.steps, [label] * len(d.steps), ["x"] * len(d.steps))
            for d in labelled_solutions(prompts, 1, seed=0)]
    init = build_tiny_model(tmp_path / "init", token_classification=True, extra_tokens=[SEP], **TINY_ARCH)
    out = train_prm(init, tmp_path / "model", data, steps=25, batch_size=8, lr=1e-2, device="cpu", log_every=0)
    scores = ProcessRewardModel(str(out), "token_cls", SEP, device="cpu").score(
        [d.prompt for d in data[:5]], [d.steps for d in data[:5]])
    flat = [x for s in scores for x in s]
    assert flat and all((x > 0.8) if label else (x < 0.2) for x in flat)


def test_embedded_prm_trains_caches_and_scores_through_process_reward_model(cache_dir: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    dcfg = _data()
    path = embedded_prm(dcfg, SEP, TINY_ARCH, TINY_TRAIN, device="cpu", log=lambda _: None)
    assert path.parent == cache_dir and path.name.startswith("prm-")
    assert sorted(p.name for p in cache_dir.iterdir() if p.suffix != ".lock") == [path.name]  # no temp folder left behind
    report = json.loads((path / "prm_eval.json").read_text())
    assert report["steps"] > 0 and report["solutions"] == dcfg.num_test * prm_train.EVAL_PER_PROBLEM
    for key in ("accuracy", "balanced_accuracy", "accuracy_good", "accuracy_bad", "majority_baseline"):
        assert 0.0 <= report[key] <= 1.0
    assert report["train_seconds"] > 0 and report["by_category"]

    prm = ProcessRewardModel(str(path), "token_cls", SEP, device="cpu")
    assert prm.model.config.num_labels == 2
    scores = prm.score([PROMPT], [["17 + 5 = 22", "22 - 8 = 14", "\\boxed{14}"]])
    assert len(scores[0]) == 3 and all(0.0 <= x <= 1.0 for x in scores[0])

    # cached: same settings -> same folder, no training; other settings -> another folder
    with monkeypatch.context() as patch:  # (monkeypatch.undo() would also undo cache_dir's CFRL_CACHE)
        patch.setattr(prm_train, "train_prm", lambda *a, **k: pytest.fail("retrained a cached PRM"))
        assert embedded_prm(dcfg, SEP, TINY_ARCH, TINY_TRAIN, device="cpu", log=lambda _: None) == path
    other = embedded_prm(_data(seed=99), SEP, TINY_ARCH, TINY_TRAIN, device="cpu", log=lambda _: None)
    assert other != path and other.parent == cache_dir and (other / "config.json").is_file()


def test_resolve_prm_path(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prm_train, "DEFAULT_ARCH", TINY_ARCH)
    monkeypatch.setattr(prm_train, "DEFAULT_TRAIN", TINY_TRAIN)
    dcfg = _data()
    rcfg = RewardConfig(name="pr_delta", shaping="delta", prm="embedded", prm_separator=SEP, prm_device="cpu")
    assert resolve_prm_path(RewardConfig(name="pr", prm="org/some-prm"), dcfg) == "org/some-prm"
    assert resolve_prm_path(RewardConfig(name="success"), dcfg) is None
    assert resolve_prm_path(RewardConfig(name="success", prm="embedded"), dcfg) is None  # unused: not trained
    assert not cache_dir.exists()
    with pytest.raises(ValueError, match="data.name='gsm8k'"):
        resolve_prm_path(rcfg, DataConfig(name="gsm8k", path="openai/gsm8k"))
    path = resolve_prm_path(rcfg, dcfg, log=lambda _: None)
    assert Path(path).parent == cache_dir and (Path(path) / "prm_eval.json").is_file()
    assert resolve_prm_path(rcfg, dcfg, log=lambda _: None) == path
