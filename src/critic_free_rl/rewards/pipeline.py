"""One reward pipeline for every estimator: success reward + shaped dense rewards.

Per response ``i`` with ``T_i`` tokens and steps ending on tokens ``t_1 < ... < t_K``::

    token_rewards[i, T_i - 1] += success_coef * success_i        (correct_value / wrong_value)
    token_rewards[i, t_k]     += dense_coef * shaped_k           (pr, pr_clip, pr_delta, pr_clip_delta, pr_min, pr_progress)
    token_rewards[i, t_k]     += dense_coef * implicit_k         (prime: the implicit PRM's step rewards)
    token_rewards[i, T_i - 1] += dense_coef * orm_i              (orm)
    token_rewards[i, T_i - 1] += overlong_i                      (any reward, reward.overlong_buffer > 0)

``reward.name`` and the shape it selects are in :mod:`~critic_free_rl.rewards.shaping`;
the overlong penalty (<= 0) in :mod:`~critic_free_rl.rewards.overlong`; ``prime``'s implicit
PRM in :mod:`~critic_free_rl.rewards.implicit_prm`, which :meth:`RewardPipeline.update`
trains on each batch after scoring it. Steps are
segmented in every mode, so the hacking monitors (:mod:`~critic_free_rl.rewards.monitors`)
are always logged.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType
from typing import Any, Optional

import torch
from transformers import PreTrainedTokenizerBase

from critic_free_rl.config.schema import RewardConfig
from critic_free_rl.rewards.implicit_prm import ImplicitPRM, implicit_step_rewards
from critic_free_rl.rewards.monitors import overlong_metrics, shape_metrics, step_metrics
from critic_free_rl.rewards.orm import OutcomeRewardModel
from critic_free_rl.rewards.overlong import overlong_penalty
from critic_free_rl.rewards.prm import load_prm
from critic_free_rl.rewards.shapes import get_shape
from critic_free_rl.rewards.shaping import REWARD_MODES, shape_step_rewards, validate_reward
from critic_free_rl.rewards.steps import locate_step_ends, split_steps
from critic_free_rl.rewards.success import SuccessVerifier, encodable


@dataclass
class ScoredBatch:
    """Rewards of a batch of ``B`` responses padded to ``T = max_i len(response_ids[i])`` tokens."""

    token_rewards: torch.Tensor  # [B, T] float32
    reward_mask: torch.Tensor  # [B, T] bool: last token of each response + each step's last token (PRM modes)
    success: torch.Tensor  # [B] float32: correct_value or wrong_value (coefficient not applied)
    correct: torch.Tensor  # [B] bool
    dense_return: torch.Tensor  # [B] float32: sum of the dense terms placed in token_rewards, overlong penalty included
    steps: list[list[str]]  # [B][K_i] step texts
    step_end_tokens: list[list[int]]  # [B][K_i] response-token index of each step's last character
    prm_scores: Optional[list[list[float]]]  # [B][K_i] in [0, 1]; None without PRM
    shaped: list[list[float]]  # [B][K_i] refined step rewards (dense_coef not applied); zeros without PRM
    orm_scores: Optional[list[float]]  # [B] in [0, 1]; None unless reward.name == orm
    metrics: dict[str, float]
    prm_prompt_scores: Optional[list[float]] = None  # [B] PRM score of the prompt alone, r_0; shapes that need it
    overlong: Optional[torch.Tensor] = None  # [B] float32 overlong penalty (<= 0) on the last token; None when off
    #: reward=prime: (prompt_ids [B][P_i], response_ids [B][T_i], pi_ref log-probs [B, T]) for the update
    prime_inputs: Optional[tuple[list[list[int]], list[list[int]], torch.Tensor]] = None


class RewardPipeline:
    """Scores rollouts; owns the verify worker pool and the PRM / ORM / implicit PRM (call :meth:`close`).

    ``policy_path``: the policy's starting weights, which ``reward=prime`` loads its implicit
    PRM and reference from (the trainer passes the resolved model path)."""

    def __init__(self, cfg: RewardConfig, tokenizer: PreTrainedTokenizerBase, policy_path: Optional[str] = None,
                 trust_remote_code: bool = False) -> None:
        validate_reward(cfg)
        split_steps("", cfg.step_split, cfg.step_tag, cfg.max_steps)  # fail fast on a bad splitter
        self.cfg, self.tokenizer = cfg, tokenizer
        shaping = REWARD_MODES[cfg.name]
        self.needs = get_shape(shaping).needs if shaping is not None else ()
        self.prm = load_prm(cfg) if shaping is not None else None
        self.orm = OutcomeRewardModel.from_config(cfg) if cfg.name == "orm" else None
        if cfg.name == "prime" and not policy_path:
            raise ValueError("reward.name='prime' initialises its implicit PRM from the policy's weights: "
                             "RewardPipeline needs policy_path (critic-free-rl train passes it)")
        self.implicit_prm = (ImplicitPRM.from_config(cfg, policy_path, tokenizer, trust_remote_code)
                             if cfg.name == "prime" else None)
        self.step_term = self.prm is not None or self.implicit_prm is not None  # dense rewards on step ends
        self.verifier = SuccessVerifier(cfg.verify_timeout_s, cfg.verify_workers)

    def score(self, prompts: list[str], completions: list[str], response_ids: list[list[int]],
              references: list[str]) -> ScoredBatch:
        """Score ``B`` responses; ``completions[i]`` must be ``response_ids[i]`` detokenised
        (special tokens skipped), ``references[i]`` the parsed reference answer. Lone
        surrogates in prompts / completions are replaced (see :func:`encodable`)."""
        B = len(completions)
        if B == 0 or not len(prompts) == len(response_ids) == len(references) == B:
            raise ValueError("score() needs equally long, non-empty prompts / completions / response_ids / references")
        cfg = self.cfg
        prompts, completions = [encodable(p) for p in prompts], [encodable(c) for c in completions]
        spans = [split_steps(c, cfg.step_split, cfg.step_tag, cfg.max_steps) for c in completions]
        steps = [[s.text for s in sample] for sample in spans]
        step_ends = [locate_step_ends(sample, ids, self.tokenizer) for sample, ids in zip(spans, response_ids)]
        correct, verify_counts = self.verifier.score(completions, references)
        success = torch.tensor([cfg.correct_value if ok else cfg.wrong_value for ok in correct], dtype=torch.float32)
        prm_scores = self.prm.score(prompts, steps) if self.prm is not None else None
        prompt_scores = self.prm.score_prompts(prompts) if self.prm is not None and "prompt_score" in self.needs else None
        shaped = self._shape(steps, prm_scores, prompt_scores)
        prime_inputs = None
        if self.implicit_prm is not None:
            shaped, prime_inputs = self._implicit(prompts, response_ids, step_ends)
        orm_scores = self.orm.score(prompts, completions) if self.orm is not None else None
        overlong = None
        if cfg.overlong_buffer:
            lengths = torch.tensor([len(ids) for ids in response_ids])
            overlong = overlong_penalty(lengths, cfg.overlong_max_tokens, cfg.overlong_buffer, cfg.overlong_coef)
        token_rewards, reward_mask, dense_return = self._place(response_ids, success, step_ends, shaped, orm_scores, overlong)
        metrics = step_metrics(steps, prm_scores)
        if prm_scores is not None:
            metrics.update(shape_metrics(shaped, prm_scores, cfg.clip_eta if "eta" in self.needs else None, prompt_scores))
        if overlong is not None:
            metrics.update(overlong_metrics(overlong.tolist()))
        metrics.update({
            "reward/success_rate": sum(correct) / B,
            "reward/success_mean": float(success.mean()),
            "reward/dense_mean": float(dense_return.mean()),
            "reward/verify_timeouts": verify_counts["verify_timeouts"],
            "reward/verify_worker_errors": verify_counts["verify_worker_errors"],
            "response/length_chars": sum(map(len, completions)) / B,
        })
        if orm_scores is not None:
            metrics["reward/orm_mean"] = sum(orm_scores) / B
        if prime_inputs is not None:
            metrics["prime/step_reward_mean"] = sum(map(sum, shaped)) / max(1, sum(map(len, shaped)))
        return ScoredBatch(token_rewards, reward_mask, success, torch.tensor(correct, dtype=torch.bool), dense_return,
                           steps, step_ends, prm_scores, shaped, orm_scores, metrics, prompt_scores, overlong, prime_inputs)

    def _implicit(self, prompts: list[str], response_ids: list[list[int]], step_ends: list[list[int]]):
        """``reward=prime``: the implicit PRM's step rewards ``[B][K_i]`` and the update's inputs."""
        # tokenised as the trainer tokenises its prompts, so pi_phi reads what the policy read
        prompt_ids = self.tokenizer(prompts, add_special_tokens=False)["input_ids"]
        phi, ref = self.implicit_prm.logprobs(prompt_ids, response_ids)
        mask = torch.arange(phi.shape[1]) < torch.tensor([len(r) for r in response_ids]).unsqueeze(1)
        return implicit_step_rewards(phi - ref, mask, step_ends, self.cfg.prime_beta), (prompt_ids, response_ids, ref)

    def update(self, scored: ScoredBatch) -> dict[str, float]:
        """After the policy's step: ``reward=prime`` trains its implicit PRM on the batch it
        scored (``prime/loss``, ``prime/accuracy`` of the scoring weights); nothing otherwise."""
        if self.implicit_prm is None or scored.prime_inputs is None:
            return {}
        return self.implicit_prm.update(*scored.prime_inputs, scored.correct)

    def _shape(self, steps: list[list[str]], prm_scores: Optional[list[list[float]]],
               prompt_scores: Optional[list[float]]) -> list[list[float]]:
        """Shaped step rewards per sample, one padded ``[B, K]`` call to :func:`shape_step_rewards`."""
        if prm_scores is None:
            return [[0.0] * len(sample) for sample in steps]
        K = max(map(len, prm_scores))
        scores = torch.zeros(len(prm_scores), K)
        mask = torch.zeros(len(prm_scores), K, dtype=torch.bool)
        for i, sample in enumerate(prm_scores):
            scores[i, :len(sample)] = torch.tensor(sample)
            mask[i, :len(sample)] = True
        shaped = shape_step_rewards(scores, self.cfg.shaping, self.cfg.clip_eta, mask, temperature=self.cfg.min_temperature,
                                    prompt_score=None if prompt_scores is None else torch.tensor(prompt_scores))
        return [row[:len(sample)] for row, sample in zip(shaped.tolist(), prm_scores)]

    def _place(self, response_ids: list[list[int]], success: torch.Tensor, step_ends: list[list[int]],
               shaped: list[list[float]], orm_scores: Optional[list[float]], overlong: Optional[torch.Tensor]
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(token_rewards [B, T], reward_mask [B, T], dense_return [B])``; rewards landing on
        one token add up."""
        cfg = self.cfg
        lengths = [len(ids) for ids in response_ids]
        rows, cols, values, dense = [], [], [], torch.zeros(len(lengths))
        for i, n in enumerate(lengths):
            if n == 0:
                continue
            terms = [(n - 1, cfg.success_coef * float(success[i]))]
            dense_terms = list(zip(step_ends[i], (cfg.dense_coef * s for s in shaped[i]))) if self.step_term else []
            if orm_scores is not None:
                dense_terms.append((n - 1, cfg.dense_coef * orm_scores[i]))
            if overlong is not None:
                dense_terms.append((n - 1, float(overlong[i])))
            dense[i] = sum(v for _, v in dense_terms)
            for t, v in terms + dense_terms:
                rows.append(i)
                cols.append(t)
                values.append(v)
        token_rewards = torch.zeros(len(lengths), max(lengths))
        reward_mask = torch.zeros(len(lengths), max(lengths), dtype=torch.bool)
        index = (torch.tensor(rows, dtype=torch.long), torch.tensor(cols, dtype=torch.long))
        token_rewards.index_put_(index, torch.tensor(values, dtype=torch.float32), accumulate=True)
        reward_mask[index] = True
        return token_rewards, reward_mask, dense

    def close(self) -> None:
        """Stop the verify workers."""
        self.verifier.close()

    def __enter__(self) -> "RewardPipeline":
        return self

    def __exit__(self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.close()


def score_records(records: list[dict[str, Any]], pipeline: RewardPipeline) -> list[dict[str, Any]]:
    """``critic-free-rl score``: each ``{prompt, completion, reference}`` record plus its rewards.

    Same code path as training (completions are tokenised with the pipeline's tokenizer).
    Added keys: ``correct``, ``success``, ``steps``, ``prm_scores``, ``shaped`` (one entry
    per step each), ``prm_prompt_score`` (shapes that use it, e.g. ``pr_progress``),
    ``orm_score``, ``overlong_penalty`` (with ``reward.overlong_buffer`` set),
    ``dense_return`` (overlong penalty included) and ``return``
    (``success_coef * success + dense_return``).
    """
    if not records:
        return []
    completions = [encodable(r["completion"]) for r in records]
    response_ids = pipeline.tokenizer(completions, add_special_tokens=False)["input_ids"]
    batch = pipeline.score([r["prompt"] for r in records], completions, response_ids,
                           [r["reference"] for r in records])
    out = []
    for i, record in enumerate(records):
        success, dense = float(batch.success[i]), float(batch.dense_return[i])
        out.append({
            **record,
            "correct": bool(batch.correct[i]),
            "success": success,
            "steps": batch.steps[i],
            "prm_scores": None if batch.prm_scores is None else batch.prm_scores[i],
            "shaped": batch.shaped[i],
            "orm_score": None if batch.orm_scores is None else batch.orm_scores[i],
            **({} if batch.prm_prompt_scores is None else {"prm_prompt_score": batch.prm_prompt_scores[i]}),
            **({} if batch.overlong is None else {"overlong_penalty": float(batch.overlong[i])}),
            "dense_return": dense,
            "return": pipeline.cfg.success_coef * success + dense,
        })
    return out
