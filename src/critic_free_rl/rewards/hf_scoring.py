"""Plumbing shared by the learned reward models (PRM, ORM): loading, input fitting, batching.

Models load with ``from_pretrained`` from a hub name or a local directory alike.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Optional

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase


def resolve_device(name: str) -> torch.device:
    """``auto`` -> the first CUDA device when there is one, else CPU; anything else as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_model(auto_cls: type, name_or_path: str, device: torch.device, trust_remote_code: bool = False) -> PreTrainedModel:
    """``auto_cls.from_pretrained`` in the checkpoint's dtype, on ``device``, in eval mode.

    ``trust_remote_code``: the checkpoint's own model class. When its ``auto_map`` registers
    that class only as ``AutoModel`` (Qwen2.5-Math-PRM: ``Qwen2ForProcessRewardModel``, a
    token-classification head), ``AutoModel`` loads it; loading it as ``auto_cls`` without
    remote code would silently put a fresh, random head on the backbone."""
    if not trust_remote_code:
        return auto_cls.from_pretrained(name_or_path, dtype="auto").to(device).eval()
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=True)
    auto_map = getattr(config, "auto_map", None) or {}
    if auto_cls.__name__ not in auto_map and "AutoModel" in auto_map:
        auto_cls = AutoModel
    if getattr(config, "pad_token_id", None) is None:  # older remote code reads it unconditionally
        eos = getattr(config, "eos_token_id", None)
        config.pad_token_id = eos[0] if isinstance(eos, list) else eos
    model = auto_cls.from_pretrained(name_or_path, config=config, dtype="auto", trust_remote_code=True)
    return model.to(device).eval()


def output_logits(out) -> torch.Tensor:
    """``out.logits``, or the first element of a remote model's tuple output."""
    return out.logits if hasattr(out, "logits") else out[0]


def usable_length(model: PreTrainedModel, requested: int) -> int:
    """``requested`` tokens, capped by the model's ``max_position_embeddings`` when it has one."""
    return min(requested, getattr(model.config, "max_position_embeddings", None) or requested)


def single_token_id(tokenizer: PreTrainedTokenizerBase, text: Optional[str], field: str) -> int:
    """The id of ``text`` when it is one token (its encoding or a vocabulary entry).

    Raises ``ValueError`` naming the config ``field`` when ``text`` is unset or is not a
    single token.
    """
    if not text:
        raise ValueError(f"reward.{field} must be set for this reward model")
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) == 1:
        return ids[0]
    vocab_id = tokenizer.convert_tokens_to_ids(text)
    if isinstance(vocab_id, int) and vocab_id != tokenizer.unk_token_id:
        return vocab_id
    raise ValueError(f"reward.{field}={text!r} is not a single token of the reward model's tokenizer")


def encode_prompts(tokenizer: PreTrainedTokenizerBase, prompts: list[str]) -> list[list[int]]:
    """Prompt token ids, behind the tokenizer's BOS when it has one."""
    bos = [] if tokenizer.bos_token_id is None else [tokenizer.bos_token_id]
    if not prompts:
        return []
    return [bos + ids for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]]


def fit_prompt_response(prompt_ids: list[int], response_ids: list[int], max_length: int) -> tuple[list[int], int]:
    """``prompt + response`` cut to ``max_length`` tokens; returns ``(ids, prompt tokens kept)``.

    The prompt is cut from the left first (the response is what is scored); a response
    longer than ``max_length`` on its own keeps its first ``max_length`` tokens.
    """
    keep = max(0, min(len(prompt_ids), max_length - len(response_ids)))
    prompt = prompt_ids[len(prompt_ids) - keep:]
    return (prompt + response_ids)[:max_length], keep


def padded_batches(seqs: list[list[int]], batch_size: int, pad_id: int,
                   device: torch.device) -> Iterator[tuple[list[int], torch.Tensor, torch.Tensor]]:
    """Right-padded batches of ``seqs`` in length order.

    Yields ``(indices into seqs, input_ids [b, L] long, attention_mask [b, L] long)``.
    Sorting by length keeps padding (and compute) low; right padding leaves every real
    position of a causal model unchanged, so batched scores equal unbatched ones.
    """
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    for lo in range(0, len(order), batch_size):
        idx = order[lo:lo + batch_size]
        width = max(len(seqs[i]) for i in idx)
        ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            ids[row, :len(seqs[i])] = torch.tensor(seqs[i], dtype=torch.long)
            mask[row, :len(seqs[i])] = 1
        yield idx, ids.to(device), mask.to(device)


def pad_token_id(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel) -> int:
    """The id batches are padded with: the model's, else the tokenizer's pad, else EOS, else 0."""
    for candidate in (model.config.pad_token_id, tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0
