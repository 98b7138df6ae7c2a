"""What the final policies of training runs write, step by step, on the embedded task.

    python scripts/audit_steps.py RUN_DIR... [--samples 4] [--out audit.json]

For the warm-started policy the runs start from and each run's ``final/`` checkpoint,
samples ``--samples`` completions per held-out problem at temperature 1 (the training
distribution) with the HF rollout engine, cuts them into steps as the reward pipeline does
(one per line) and reports, per policy:

- ``success``: share of completions whose boxed answer is right (exact integer match, the
  embedded task's answers are integers);
- ``steps``: steps per completion; ``extra_steps``: steps beyond the gold solution's
  (one per operation plus the box);
- ``wrong_frac``: share of steps that the rule labelling the embedded PRM's training data
  (:func:`critic_free_rl.data.arithmetic_steps.label_steps`) calls bad: wrong, not following,
  or after an error; ``redundant_frac``: share of steps that are correct but do not
  advance (good by that rule beyond the ones a solution needs: a restated step,
  ``x + 0 = x``, a repeated box);
- ``prm_on_wrong`` / ``prm_on_good``: the embedded PRM's mean score on those steps (read
  through :class:`~critic_free_rl.rewards.prm.ProcessRewardModel`, as in training).

Run directories are grouped by configuration (seeds pooled) with the report's grouping.
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def audit_policy(path: str, examples, prm, samples: int, max_new_tokens: int, seed: int) -> dict[str, float]:
    """The module docstring's figures for the policy in ``path`` on ``examples``."""
    from critic_free_rl.rollout.base import SamplingSpec
    from critic_free_rl.rollout.hf_engine import HFEngine

    engine = HFEngine(path, seed=seed)
    groups = engine.generate([e.prompt for e in examples], SamplingSpec(n=samples, max_new_tokens=max_new_tokens, seed=seed))
    engine.close()
    rows = [(e.prompt, c.text, e.reference) for e, group in zip(examples, groups) for c in group]
    return audit_completions(*map(list, zip(*rows)), prm)


def audit_completions(prompts: list[str], completions: list[str], references: list[str], prm) -> dict[str, float]:
    """The module docstring's figures for ``completions`` of embedded-task ``prompts``
    (one each), ``prm`` a :class:`~critic_free_rl.rewards.prm.ProcessRewardModel`."""
    from critic_free_rl.models.warmstart import last_boxed_is
    from critic_free_rl.data.arithmetic_steps import label_steps, parse_problem
    from critic_free_rl.rewards.steps import split_steps

    steps = [[s.text.strip() for s in split_steps(text, "line")] for text in completions]
    scores = prm.score(prompts, steps)
    n: dict[str, float] = defaultdict(float)
    for prompt, sample, ref, score in zip(prompts, steps, references, scores):
        labels = label_steps(prompt, sample)
        needed = len(parse_problem(prompt).ops) + 1
        n["success"] += bool(sample) and last_boxed_is(sample[-1], ref)
        n["steps"] += len(sample)
        n["extra_steps"] += max(len(sample) - needed, 0)
        n["wrong"] += labels.count(False)
        n["redundant"] += max(labels.count(True) - needed, 0)
        n["prm_wrong_sum"] += sum(s for s, ok in zip(score, labels) if not ok)
        n["prm_good_sum"] += sum(s for s, ok in zip(score, labels) if ok)
    total, good = len(completions), n["steps"] - n["wrong"]
    return {
        "completions": total,
        "success": n["success"] / total,
        "steps": n["steps"] / total,
        "extra_steps": n["extra_steps"] / total,
        "wrong_frac": n["wrong"] / max(n["steps"], 1),
        "redundant_frac": n["redundant"] / max(n["steps"], 1),
        "prm_on_wrong": n["prm_wrong_sum"] / n["wrong"] if n["wrong"] else float("nan"),
        "prm_on_good": n["prm_good_sum"] / good if good else float("nan"),
    }


def main() -> None:
    import torch

    from critic_free_rl.config.schema import DataConfig, ModelConfig, RewardConfig, load_structured
    from critic_free_rl.data.datasets import load_examples
    from critic_free_rl.models.loading import resolve_model_path
    from critic_free_rl.report.events import find_run_dirs, load_run
    from critic_free_rl.report.groups import group_runs
    from critic_free_rl.rewards.prm import ProcessRewardModel
    from critic_free_rl.models.reward_models import resolve_prm_path

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", nargs="+", type=Path, help="run directories or folders of runs")
    parser.add_argument("--samples", type=int, default=4, help="completions per held-out problem (default 4)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON here")
    ns = parser.parse_args()
    torch.set_num_threads(1)

    data = load_structured(DataConfig, CONFIGS / "data" / "embedded.yaml")
    examples = load_examples(data, data.test_split)
    reward = load_structured(RewardConfig, CONFIGS / "reward" / "pr.yaml")
    prm = ProcessRewardModel(resolve_prm_path(reward, data), reward.prm_kind, reward.prm_separator)
    start = str(resolve_model_path(load_structured(ModelConfig, CONFIGS / "model" / "tiny.yaml"), data))

    policies: dict[str, list[str]] = {"warm start": [start]}
    for group in group_runs([load_run(p) for p in find_run_dirs(ns.run_dirs)]):
        policies[group.label] = [str(r.path / "final") for r in group.runs if (r.path / "final" / "config.json").is_file()]
    results: dict[str, dict[str, float]] = {}
    keys = ("success", "steps", "extra_steps", "wrong_frac", "redundant_frac", "prm_on_wrong", "prm_on_good")
    print("| policy | runs | " + " | ".join(keys) + " |\n|" + "---|" * (len(keys) + 2))
    for label, paths in policies.items():
        per_run = [audit_policy(p, examples, prm, ns.samples, ns.max_new_tokens, ns.seed) for p in paths]
        if not per_run:
            continue
        results[label] = {k: sum(r[k] for r in per_run) / len(per_run) for k in keys}
        print(f"| `{label}` | {len(per_run)} | " + " | ".join(f"{results[label][k]:.3f}" for k in keys) + " |", flush=True)
    if ns.out:
        ns.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
