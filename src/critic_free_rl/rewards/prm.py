"""Process reward model: one score in [0, 1] per reasoning step.

Input format (both conventions), tokenised piece by piece so that separator positions
are exact whatever the tokenizer merges::

    [BOS] prompt  step_1 SEP  step_2 SEP  ...  step_K SEP

``prompt`` is the policy prompt verbatim, ``step_k`` the stripped step texts (nothing is
inserted between a SEP and the next step), ``SEP`` the single token ``prm_separator``
and ``BOS`` the tokenizer's BOS token when it defines one. Step ``k`` is scored from the
model's output at its SEP:

- ``token_cls`` (Qwen2.5-Math-PRM style): an ``AutoModelForTokenClassification`` with
  2 labels; score = ``softmax(logits)[1]`` (class 1 = good step).
- ``tag_lm`` (Math-Shepherd style): a causal LM; score = ``softmax([z_pos, z_neg])[0]``
  where ``z_pos`` / ``z_neg`` are the next-token logits of ``prm_positive_token`` /
  ``prm_negative_token`` at the tag. Only those two rows of the LM head are applied.

Inputs longer than ``max_length`` (capped by the model's positions) lose prompt tokens from the left first; steps whose
SEP still falls beyond the limit score 0 (unverifiable counts as bad).

``reward.prm=exact`` is no model: :class:`ExactStepJudge` is an ORACLE that scores each
step of the embedded task 1 or 0 by the task's own rule, optionally made noisy
(``reward.prm_noise``) to dial the quality of the process reward.
"""
from __future__ import annotations

import hashlib
from typing import Optional, Union

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoModelForTokenClassification, AutoTokenizer

from critic_free_rl.config.schema import RewardConfig
from critic_free_rl.data.arithmetic_steps import label_steps
from critic_free_rl.models import step_verifier  # noqa: F401  (registers the embedded PRM's model class)
from critic_free_rl.rewards.hf_scoring import (encode_prompts, fit_prompt_response, load_model, output_logits, pad_token_id,
                                               padded_batches, resolve_device, single_token_id, usable_length)

PRM_KINDS = ("tag_lm", "token_cls")
EXACT = "exact"


class ProcessRewardModel:
    """Scores every step of a batch of responses in batches of ``batch_size`` sequences."""

    def __init__(self, name_or_path: str, kind: str = "token_cls", separator: Optional[str] = None,
                 positive_token: Optional[str] = None, negative_token: Optional[str] = None,
                 device: str = "auto", batch_size: int = 64, max_length: int = 4096, trust_remote_code: bool = False) -> None:
        if kind not in PRM_KINDS:
            raise ValueError(f"unknown reward.prm_kind {kind!r}; expected one of {PRM_KINDS}")
        self.kind, self.batch_size = kind, batch_size
        self.tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
        self.separator_id = single_token_id(self.tokenizer, separator, "prm_separator")
        self.label_ids: list[int] = []
        if kind == "tag_lm":
            self.label_ids = [single_token_id(self.tokenizer, positive_token, "prm_positive_token"),
                              single_token_id(self.tokenizer, negative_token, "prm_negative_token")]
        self.device = resolve_device(device)
        auto_cls = AutoModelForTokenClassification if kind == "token_cls" else AutoModelForCausalLM
        self.model = load_model(auto_cls, name_or_path, self.device, trust_remote_code)
        if kind == "token_cls" and self.model.config.num_labels != 2:
            raise ValueError(f"token_cls PRM {name_or_path!r} has {self.model.config.num_labels} labels, expected 2")
        self.pad_id = pad_token_id(self.tokenizer, self.model)
        self.max_length = usable_length(self.model, max_length)

    @classmethod
    def from_config(cls, cfg: RewardConfig) -> "ProcessRewardModel":
        if not cfg.prm:
            raise ValueError(f"reward.prm must be set for reward.name={cfg.name!r}")
        return cls(cfg.prm, cfg.prm_kind, cfg.prm_separator, cfg.prm_positive_token, cfg.prm_negative_token,
                   cfg.prm_device, cfg.prm_batch_size, cfg.rm_max_length, trust_remote_code=cfg.prm_trust_remote_code)

    def build_inputs(self, prompts: list[str], steps: list[list[str]]) -> tuple[list[list[int]], list[list[int]]]:
        """Token ids of each PRM input and the positions of its SEP tokens (one per scored step).

        Exposed so a PRM can be trained on exactly the sequences it is later read on.
        """
        flat = [s for sample in steps for s in sample]
        step_ids = iter(self.tokenizer(flat, add_special_tokens=False)["input_ids"] if flat else [])
        seqs, positions = [], []
        for prompt_ids, sample in zip(encode_prompts(self.tokenizer, prompts), steps):
            response, ends = [], []
            for _ in sample:
                response += next(step_ids)
                response.append(self.separator_id)
                ends.append(len(response) - 1)
            ids, kept = fit_prompt_response(prompt_ids, response, self.max_length)
            seqs.append(ids)
            positions.append([kept + e for e in ends if kept + e < len(ids)])
        return seqs, positions

    @torch.inference_mode()
    def _step_probs(self, ids: torch.Tensor, mask: torch.Tensor, rows: list[int], cols: list[int]) -> torch.Tensor:
        """``[N]`` good-step probabilities at ``(rows, cols)`` of a padded batch ``[b, L]``."""
        if self.kind == "token_cls":
            logits = output_logits(self.model(input_ids=ids, attention_mask=mask))[rows, cols]  # [N, 2]
            return logits.float().softmax(-1)[:, 1]
        hidden = self.model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state[rows, cols]  # [N, H]
        head = self.model.get_output_embeddings()
        bias = None if head.bias is None else head.bias[self.label_ids]
        return F.linear(hidden, head.weight[self.label_ids], bias).float().softmax(-1)[:, 0]  # [N]

    def score_prompts(self, prompts: list[str]) -> list[float]:
        """``r_0`` per prompt: the score at a SEP right after the prompt (one empty step),
        the PRM's estimate of success before any step (``reward=pr_progress``)."""
        return [sample[0] for sample in self.score(prompts, [[""] for _ in prompts])]

    def score(self, prompts: list[str], steps: list[list[str]]) -> list[list[float]]:
        """Per-sample step scores in [0, 1], ``len(scores[i]) == len(steps[i])``."""
        if len(prompts) != len(steps):
            raise ValueError(f"{len(prompts)} prompts but {len(steps)} step lists")
        seqs, positions = self.build_inputs(prompts, steps)
        scores = [[0.0] * len(sample) for sample in steps]
        scored = [i for i, pos in enumerate(positions) if pos]
        for idx, ids, mask in padded_batches([seqs[i] for i in scored], self.batch_size, self.pad_id, self.device):
            samples = [scored[j] for j in idx]
            rows = [row for row, i in enumerate(samples) for _ in positions[i]]
            cols = [p for i in samples for p in positions[i]]
            probs = iter(self._step_probs(ids, mask, rows, cols).tolist())
            for i in samples:
                scores[i][:len(positions[i])] = [next(probs) for _ in positions[i]]
        return scores


class ExactStepJudge:
    """``reward.prm=exact``: an oracle, not a learned model. Step ``k`` of a solution to an
    embedded-task prompt scores 1 when it is correct so far by
    :func:`~critic_free_rl.data.arithmetic_steps.label_steps` (the task's own rule) and 0
    otherwise; with ``noise = p`` each judgement is flipped with probability ``p``.

    A flip is decided by ``u < p`` with ``u`` uniform in [0, 1) from a SHA-256 of
    ``(seed, prompt, steps 1..k, k)``: the same step of the same sample is judged the same
    way in every run and whatever batch it is scored in.
    """

    def __init__(self, noise: float = 0.0, seed: int = 0) -> None:
        if not 0.0 <= noise <= 1.0:
            raise ValueError(f"reward.prm_noise={noise} must be a probability in [0, 1]")
        self.noise, self.seed = noise, seed

    def flip_draw(self, prompt: str, steps: list[str], k: int) -> float:
        """The uniform draw ``u`` in [0, 1) of step ``k`` (0-based) of ``steps``."""
        text = "\x1f".join([str(self.seed), prompt, *steps[:k + 1], str(k)])
        return int.from_bytes(hashlib.sha256(text.encode("utf-8", "replace")).digest()[:8], "big") / 2.0 ** 64

    def score(self, prompts: list[str], steps: list[list[str]]) -> list[list[float]]:
        """Per-sample step scores in {0, 1}, ``len(scores[i]) == len(steps[i])``."""
        if len(prompts) != len(steps):
            raise ValueError(f"{len(prompts)} prompts but {len(steps)} step lists")
        out = []
        for prompt, sample in zip(prompts, steps):
            labels = label_steps(prompt, sample)
            out.append([float(good != (self.noise > 0 and self.flip_draw(prompt, sample, k) < self.noise))
                        for k, good in enumerate(labels)])
        return out


def load_prm(cfg: RewardConfig) -> Union[ProcessRewardModel, ExactStepJudge]:
    """The step scorer ``reward.prm`` names: the :class:`ExactStepJudge` oracle for ``exact``,
    else a :class:`ProcessRewardModel`."""
    if cfg.prm == EXACT:
        return ExactStepJudge(cfg.prm_noise, cfg.prm_noise_seed)
    return ProcessRewardModel.from_config(cfg)
