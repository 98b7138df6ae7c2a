"""Outcome reward model: one score in [0, 1] per completion (``reward.name=orm``).

An ``AutoModelForSequenceClassification`` with a single logit reads ``[BOS] prompt
completion`` (prompt verbatim, completion as text; past ``max_length``, capped by the
model's positions, the prompt is cut from the left); score = ``sigmoid(logit)``.
Sequences are right-padded with the model's ``pad_token_id`` (set from the tokenizer
when the config lacks one) so the model pools the last real token.
"""
from __future__ import annotations

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from critic_free_rl.config.schema import RewardConfig
from critic_free_rl.rewards.hf_scoring import (encode_prompts, fit_prompt_response, load_model, pad_token_id,
                                               padded_batches, resolve_device, usable_length)


class OutcomeRewardModel:
    """Scores whole completions in batches of ``batch_size`` sequences."""

    def __init__(self, name_or_path: str, device: str = "auto", batch_size: int = 64, max_length: int = 4096) -> None:
        self.batch_size = batch_size
        self.device = resolve_device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        self.model = load_model(AutoModelForSequenceClassification, name_or_path, self.device)
        if self.model.config.num_labels != 1:
            raise ValueError(f"ORM {name_or_path!r} has {self.model.config.num_labels} labels, expected 1")
        self.pad_id = pad_token_id(self.tokenizer, self.model)
        self.model.config.pad_token_id = self.pad_id
        self.max_length = usable_length(self.model, max_length)

    @classmethod
    def from_config(cls, cfg: RewardConfig) -> "OutcomeRewardModel":
        if not cfg.orm:
            raise ValueError("reward.orm must be set for reward.name='orm'")
        return cls(cfg.orm, cfg.prm_device, cfg.prm_batch_size, cfg.rm_max_length)

    @torch.inference_mode()
    def score(self, prompts: list[str], completions: list[str]) -> list[float]:
        """``[B]`` scores in [0, 1]; an empty input (no prompt, no completion) scores 0."""
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        responses = self.tokenizer(completions, add_special_tokens=False)["input_ids"] if completions else []
        seqs = [fit_prompt_response(p, r, self.max_length)[0]
                for p, r in zip(encode_prompts(self.tokenizer, prompts), responses)]
        scores = [0.0] * len(seqs)
        scored = [i for i, s in enumerate(seqs) if s]
        for idx, ids, mask in padded_batches([seqs[i] for i in scored], self.batch_size, self.pad_id, self.device):
            logits = self.model(input_ids=ids, attention_mask=mask).logits[:, 0]  # [b]
            for j, value in zip(idx, torch.sigmoid(logits.float()).tolist()):
                scores[scored[j]] = value
        return scores
