"""The embedded PRM's model: a generative verifier read as a token classifier.

A causal Qwen2 LM (initialised from the warm-started policy, so trained on correct
solutions) reads ``[prompt] step_1 SEP ... step_K SEP`` as the policy reads its lines
(``SEP`` is embedded as the newline it stands for, and is no candidate of its own in the
LM's softmax). At every position ``t`` the good-class logit is a learned linear map of how
likely the LM found the current line so far::

    lp_t       = log p(x_t | x_<t)            (a SEP counts as the newline ending its line)
    sum_t      = sum of lp_s over the line up to t  (a line starts after SEP or newline)
    logits_t   = [0, w * sum_t + b]                                 [b, L, 2]

so a wrong result, an operand the question does not have or an operation after the chain
is finished (characters a model of correct solutions would not write) score low. A head on
the hidden state (Qwen2.5-Math-PRM style), the line's minimum ``lp`` as a second feature and
tuning the LM on the step labels were each measured to lower the held-out AUC, so there are
none (docs/embedded_reward_models.md). It loads through
``AutoModelForTokenClassification`` (registered here) and is read by
:class:`~critic_free_rl.rewards.prm.ProcessRewardModel` as any ``token_cls`` PRM.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (AutoConfig, AutoModelForTokenClassification, Qwen2Config, Qwen2ForTokenClassification)
from transformers.modeling_outputs import TokenClassifierOutput
from transformers.models.qwen2.modeling_qwen2 import Qwen2Model, Qwen2PreTrainedModel

MODEL_TYPE = "cfrl_step_verifier"


class StepVerifierConfig(Qwen2Config):
    """A Qwen2 config plus the ids of the step separator and of the newline it stands for."""

    model_type = MODEL_TYPE

    def __init__(self, separator_id: int = -1, newline_id: int = -1, **kwargs) -> None:
        super().__init__(**kwargs)
        self.separator_id, self.newline_id = separator_id, newline_id


class StepVerifierForTokenClassification(Qwen2ForTokenClassification):
    """Qwen2 LM read as a token classifier (2 labels, class 1 = good): the good logit is the
    calibrated line likelihood of the module docstring; the LM head is the tied embedding."""

    config_class = StepVerifierConfig

    def __init__(self, config: StepVerifierConfig) -> None:
        Qwen2PreTrainedModel.__init__(self, config)
        self.num_labels = config.num_labels
        self.model = Qwen2Model(config)
        self.verifier = nn.Linear(1, 1)
        self.post_init()
        with torch.no_grad():  # start as "likely lines are good", mildly: the features alone already rank steps
            self.verifier.weight.fill_(0.3)
            self.verifier.bias.fill_(2.0)

    def lm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[..., V]`` next-token logits of hidden states ``[..., H]`` (tied embeddings); the
        separator, which stands for the newline, is never predicted itself."""
        logits = hidden @ self.model.embed_tokens.weight.T
        return logits.index_fill(-1, torch.tensor([self.config.separator_id], device=logits.device), float("-inf"))

    def line_features(self, input_ids: torch.Tensor, hidden: torch.Tensor,
                      attention_mask: Optional[torch.Tensor]) -> torch.Tensor:
        """``[b, L, 1]``: the sum of the token log-likelihoods of the current line up to each position."""
        cfg = self.config
        target = torch.where(input_ids == cfg.separator_id, cfg.newline_id, input_ids)  # [b, L]
        logp = self.lm_logits(hidden[:, :-1]).float().log_softmax(-1)
        lp = torch.zeros(input_ids.shape, dtype=torch.float32, device=input_ids.device)
        lp[:, 1:] = logp.gather(-1, target[:, 1:, None])[..., 0]
        if attention_mask is not None:
            lp = lp * attention_mask
        boundary = (target == cfg.newline_id)
        total = lp.cumsum(1)  # [b, L]
        # a line's sum is the running total minus its value at the last boundary before the line
        pos = torch.arange(lp.shape[1], device=lp.device).expand_as(lp)
        last = torch.cummax(torch.where(boundary, pos, -1), 1).values  # last boundary at or before t
        last = torch.cat([torch.full_like(last[:, :1], -1), last[:, :-1]], 1)  # ... strictly before t
        before = total.gather(1, last.clamp(min=0)) * (last >= 0)
        return (total - before)[..., None]

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """``[b, L, 2]`` class logits of line features ``[b, L, 1]``."""
        good = self.verifier(features)
        return torch.cat([torch.zeros_like(good), good], -1)

    def step_logits(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                    detach: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits [b, L, 2], hidden [b, L, H])`` of a batch; ``detach``: the logits pass
        no gradient to the LM (which then learns from its own LM loss only)."""
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        features = self.line_features(input_ids, hidden.detach() if detach else hidden, attention_mask)
        return self.classify(features), hidden

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                labels: Optional[torch.Tensor] = None, **_) -> TokenClassifierOutput:
        logits, _hidden = self.step_logits(input_ids, attention_mask)
        loss = None if labels is None else F.cross_entropy(logits.view(-1, 2), labels.view(-1), ignore_index=-100)
        return TokenClassifierOutput(loss=loss, logits=logits)


AutoConfig.register(MODEL_TYPE, StepVerifierConfig)
AutoModelForTokenClassification.register(StepVerifierConfig, StepVerifierForTokenClassification)


def step_verifier_from(lm_dir: str, out_dir: str, separator: str) -> str:
    """Save to ``out_dir`` a :class:`StepVerifierForTokenClassification` whose backbone is
    the causal LM (char tokenizer) in ``lm_dir``, with ``separator`` added as a token
    embedded like the newline; the calibration starts as in ``__init__``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(lm_dir)
    tok.add_special_tokens({"additional_special_tokens": [separator]})
    lm = AutoModelForCausalLM.from_pretrained(lm_dir, dtype=torch.float32)
    newline = tok.convert_tokens_to_ids(tok.tokenize("\n"))
    if len(newline) != 1:
        raise ValueError(f"{lm_dir}: the newline is not one token; the step verifier reads character-level models")
    cfg = StepVerifierConfig(separator_id=tok.convert_tokens_to_ids(separator), newline_id=newline[0],
                             **{k: v for k, v in lm.config.to_dict().items() if k not in ("model_type", "architectures")})
    embed = lm.get_input_embeddings().weight.detach()
    rows = max(len(tok), embed.shape[0])
    embed = torch.cat([embed, embed[newline].expand(rows - embed.shape[0], -1)]).clone()
    embed[cfg.separator_id] = embed[newline[0]]
    cfg.num_labels, cfg.vocab_size = 2, rows
    torch.manual_seed(0)
    model = StepVerifierForTokenClassification(cfg)
    state = {k.removeprefix("model."): v for k, v in lm.state_dict().items() if k.startswith("model.")}
    state["embed_tokens.weight"] = embed
    model.model.load_state_dict(state)
    model.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)
    return out_dir
