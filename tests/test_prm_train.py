"""The embedded tiny PRM: the step-labelling rule, the labelled solutions, the held-out
first-error AUC, a very small training run that yields a PRM loadable by
ProcessRewardModel, caching and reward.prm resolution. Every model here is tiny and every
cache lives in tmp_path."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from critic_free_rl.config.schema import DataConfig, RewardConfig
from critic_free_rl.data.arithmetic import ArithmeticSpec, generate_split
from critic_free_rl.data.arithmetic_steps import (FIRST_ERROR_KINDS, LabelledSolution, first_error_solutions,
                                                  label_steps, labelled_solutions, parse_problem, prefix_labels)
from critic_free_rl.models import prm_train
from critic_free_rl.models.prm_eval import auc, first_error_auc
from critic_free_rl.models.prm_train import POLICY, embedded_prm, prm_settings, train_prm
from critic_free_rl.models.step_verifier import StepVerifierForTokenClassification, step_verifier_from
from critic_free_rl.models.reward_models import resolve_prm_path
from critic_free_rl.models.tiny import build_tiny_model
from critic_free_rl.rewards.prm import ExactStepJudge, ProcessRewardModel

SEP = "<extra_0>"
PROMPT = "What is 17 + 5 - 8?\n"
TINY_ARCH = dict(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
TINY_TRAIN = dict(steps=4, batch_size=8, lr=1e-3, dense=1.0, lm=1.0, per_problem=2, seed=0)


def _data(**kw) -> DataConfig:
    return DataConfig(name="embedded", path="embedded", num_train=kw.pop("num_train", 24), num_test=kw.pop("num_test", 6),
                      spec={"min_ops": 2, "max_ops": 3, "max_first": 99, "max_operand": 9}, **kw)


def _prompts(n: int, seed: int) -> list[str]:
    return [row["question"] + "\n" for row in generate_split(n, seed, ArithmeticSpec(max_operand=9))]


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


def test_solutions_are_seeded_labelled_by_the_rule_and_hold_each_mistake_they_claim() -> None:
    """Catches a solver whose mistakes are not the kind it tags (a 'wrong result' that is
    right, an 'extra operation' before the chain ends): the first bad step must carry the tag."""
    prompts = _prompts(200, 3)
    data = labelled_solutions(prompts, 4, seed=5)
    assert [(d.steps, d.labels) for d in data] == [(d.steps, d.labels) for d in labelled_solutions(prompts, 4, seed=5)]
    for d in data:
        assert d.labels == label_steps(d.prompt, d.steps)
        assert all(s == s.strip() and s for s in d.steps)
    first = Counter(c.removeprefix("first_error:") for d in data for c in d.categories if c.startswith("first_error:"))
    claimed = Counter(c.split(":")[-1] for d in data for c in d.categories
                      if c.startswith("first_error:") or c.startswith("good:error:"))
    for kind in FIRST_ERROR_KINDS:
        assert first[kind] >= 0.95 * claimed[kind] > 60  # the four kinds are there, and really wrong
    good = sum(y for d in data for y in d.labels) / sum(len(d.labels) for d in data)
    assert 0.45 < good < 0.75


def test_first_error_solutions_cut_after_the_mistake_one_of_each_kind() -> None:
    prompts = _prompts(50, 4)
    data = first_error_solutions(prompts, seed=1)
    assert len(data) == 5 * len(prompts)
    for i, prompt in enumerate(prompts):
        gold, *wrong = data[5 * i:5 * i + 5]
        problem = parse_problem(prompt)
        assert gold.labels == [True] * (len(problem.ops) + 1)
        for d, kind in zip(wrong, FIRST_ERROR_KINDS):
            assert d.labels[:-1] == [True] * (len(d.steps) - 1) and d.labels[-1] is False
            assert d.categories[-1] == f"first_error:{kind}"
        assert len(wrong[2].steps) == len(problem.ops) and wrong[2].steps[-1].startswith("\\boxed")  # one op early
        assert len(wrong[3].steps) == len(problem.ops) + 1  # an operation after the chain is finished
        operand = int(wrong[1].steps[-1].split(" = ")[0].split()[-1])
        assert operand not in {b for _, b in problem.ops}


def test_auc_by_hand() -> None:
    assert auc([0.9, 0.8, 0.4], [0.5, 0.4]) == pytest.approx(4.5 / 6)
    assert auc([1.0], [0.0]) == 1.0 and auc([0.0], [1.0]) == 0.0


def test_first_error_auc_is_one_for_the_oracle_and_one_half_for_a_constant() -> None:
    """Catches a measure that pools the wrong steps (after-error steps, or good steps as bad)."""
    data = first_error_solutions(_prompts(40, 6), seed=2)
    exact = first_error_auc(data, ExactStepJudge().score([d.prompt for d in data], [d.steps for d in data]))
    assert exact["auc"] == 1.0 and all(v == 1.0 for v in exact["auc_by_kind"].values())
    assert exact["n_first_error"] == {k: 40 for k in sorted(FIRST_ERROR_KINDS)}
    const = first_error_auc(data, [[0.7] * len(d.steps) for d in data])
    assert const["auc"] == 0.5
    # scoring only the premature boxes low separates that kind and no other
    boxes = [[0.0 if c == "first_error:premature_box" else 0.5 for c in d.categories] for d in data]
    by_kind = first_error_auc(data, boxes)["auc_by_kind"]
    assert by_kind["premature_box"] == 1.0 and by_kind["result"] == 0.5


# --------------------------------------------------------------------------- training
@pytest.mark.parametrize("label", [True, False])
def test_training_reads_labels_at_the_separators(tmp_path: Path, label: bool) -> None:
    """Class 1 = good at each SEP: training on all-good (all-bad) steps drives the scores
    that ProcessRewardModel reads up (down)."""
    prompts = [row["question"] + "\n" for row in generate_split(40, 11, ArithmeticSpec(max_operand=9))]
    data = [LabelledSolution(d.prompt, d.steps, [label] * len(d.steps), ["x"] * len(d.steps))
            for d in labelled_solutions(prompts, 1, seed=0)]
    lm = build_tiny_model(tmp_path / "lm", **TINY_ARCH)
    init = step_verifier_from(str(lm), str(tmp_path / "init"), SEP)
    out = train_prm(init, tmp_path / "model", data, steps=40, batch_size=8, lr=0.1, device="cpu", log_every=0)
    scores = ProcessRewardModel(str(out), "token_cls", SEP, device="cpu").score(
        [d.prompt for d in data[:5]], [d.steps for d in data[:5]])
    flat = [x for s in scores for x in s]
    assert flat and all((x > 0.8) if label else (x < 0.2) for x in flat)


def test_step_verifier_reads_the_lm_likelihood_of_each_line(tmp_path: Path) -> None:
    """The verifier started from a causal LM keeps its weights (SEP embedded as the newline
    it stands for) and its line feature is the LM's log-likelihood of the line so far,
    restarting after each newline / SEP. Catches a feature shifted by one token, a line
    that does not restart, or a SEP that the LM reads as a random token."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    lm_dir = build_tiny_model(tmp_path / "lm", seed=3, **TINY_ARCH)
    verifier = StepVerifierForTokenClassification.from_pretrained(step_verifier_from(str(lm_dir), str(tmp_path / "v"), SEP))
    lm = AutoModelForCausalLM.from_pretrained(lm_dir)
    tok = AutoTokenizer.from_pretrained(tmp_path / "v")
    text = ["What is 17 + 5?\n", "17 + 5 = 22", SEP, "\\boxed{22}", SEP]
    ids = torch.tensor([[i for piece in text for i in tok(piece, add_special_tokens=False)["input_ids"]]])
    newline = tok("\n", add_special_tokens=False)["input_ids"][0]
    assert verifier.config.newline_id == newline
    plain = torch.where(ids == tok.convert_tokens_to_ids(SEP), newline, ids)
    with torch.no_grad():
        logp = lm(input_ids=plain).logits[0].log_softmax(-1)
        lp = [0.0] + [float(logp[t - 1, plain[0, t]]) for t in range(1, plain.shape[1])]
        hidden = verifier.model(input_ids=ids).last_hidden_state
        feats = verifier.line_features(ids, hidden, None)[0]
    ends = [t for t in range(plain.shape[1]) if plain[0, t] == newline]
    starts = [0] + [e + 1 for e in ends[:-1]]
    for a, b in zip(starts, ends):
        assert float(feats[b, 0]) == pytest.approx(sum(lp[a:b + 1]), abs=1e-4)
        assert float(feats[(a + b) // 2, 0]) == pytest.approx(sum(lp[a:(a + b) // 2 + 1]), abs=1e-4)


def test_default_prm_starts_from_the_default_embedded_policy() -> None:
    """Catches POLICY drifting from configs/model/tiny.yaml (the PRM would build, and
    cache, a second policy), and an arch override that is silently ignored."""
    import yaml

    tiny = yaml.safe_load((Path(__file__).parents[1] / "configs" / "model" / "tiny.yaml").read_text())
    assert POLICY["arch"] == tiny["arch"] and POLICY["warmstart"] == tiny["warmstart"]
    assert prm_settings(_data())["policy"] == POLICY and prm_settings(_data())["train"]["init"] == "policy"
    assert prm_settings(_data(), SEP, TINY_ARCH)["train"]["init"] == "scratch"
    with pytest.raises(ValueError, match="init"):
        embedded_prm(_data(), SEP, TINY_ARCH, {**TINY_TRAIN, "init": "hub"}, device="cpu", log=lambda _: None)


def test_embedded_prm_trains_caches_and_scores_through_process_reward_model(cache_dir: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    dcfg = _data()
    path = embedded_prm(dcfg, SEP, TINY_ARCH, TINY_TRAIN, device="cpu", log=lambda _: None)
    assert path.parent == cache_dir and path.name.startswith("prm-")
    assert sorted(p.name for p in cache_dir.iterdir() if p.suffix != ".lock") == [path.name]  # no temp folder left behind
    report = json.loads((path / "prm_eval.json").read_text())
    assert report["n_first_error"] == {k: dcfg.num_test for k in sorted(FIRST_ERROR_KINDS)}
    assert 0.0 <= report["auc"] <= 1.0 and set(report["auc_by_kind"]) == set(FIRST_ERROR_KINDS)
    assert report["train_seconds"] > 0 and 0.0 <= report["step_accuracy"] <= 1.0

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


def test_resolve_prm_path(cache_dir: Path) -> None:
    dcfg = _data()
    rcfg = RewardConfig(name="pr_delta", shaping="delta", prm="embedded", prm_separator=SEP, prm_device="cpu",
                        embedded_rm={"arch": TINY_ARCH, "prm": TINY_TRAIN})
    assert resolve_prm_path(RewardConfig(name="pr", prm="org/some-prm"), dcfg) == "org/some-prm"
    assert resolve_prm_path(RewardConfig(name="pr", prm="exact"), dcfg) == "exact"
    assert resolve_prm_path(RewardConfig(name="success"), dcfg) is None
    assert resolve_prm_path(RewardConfig(name="success", prm="embedded"), dcfg) is None  # unused: not trained
    assert not cache_dir.exists()
    with pytest.raises(ValueError, match="data.name='gsm8k'"):
        resolve_prm_path(rcfg, DataConfig(name="gsm8k", path="openai/gsm8k"))
    path = resolve_prm_path(rcfg, dcfg, log=lambda _: None)
    assert Path(path).parent == cache_dir and (Path(path) / "prm_eval.json").is_file()
    assert resolve_prm_path(rcfg, dcfg, log=lambda _: None) == path
