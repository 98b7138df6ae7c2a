"""The embedded default policy: a tiny Qwen2 causal LM with a character-level tokenizer.

Both are built locally and saved with ``save_pretrained`` so that everything downstream
(vLLM, DeepSpeed, PRM code, ``from_pretrained``) treats them exactly like a hub model.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen2ForTokenClassification, Qwen2Tokenizer

PAD, EOS = "<|pad|>", "<|endoftext|>"


def byte_level_alphabet() -> list[str]:
    """GPT-2's reversible byte -> printable-unicode map, in byte order (256 symbols)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + list(range(ord("\xae"), ord("\xff") + 1))
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return [out[b] for b in range(256)]


def build_char_tokenizer(extra_tokens: Optional[list[str]] = None) -> Qwen2Tokenizer:
    """A character-level tokenizer in Qwen2's own format: byte-level BPE with an empty
    merge list, so every byte (every ASCII character) is exactly one token.

    Being a plain ``Qwen2Tokenizer`` it loads through ``AutoTokenizer`` and in vLLM like any
    Qwen2 checkpoint. ``extra_tokens`` become additional special tokens (a PRM step tag).
    """
    specials = [PAD, EOS]
    vocab = {tok: i for i, tok in enumerate(specials + byte_level_alphabet())}
    tok = Qwen2Tokenizer(vocab=vocab, merges=[], unk_token=None, eos_token=EOS, pad_token=PAD,
                         clean_up_tokenization_spaces=False, padding_side="left")
    if extra_tokens:
        tok.add_special_tokens({"additional_special_tokens": list(extra_tokens)})
    return tok


def tiny_qwen2_config(
    vocab_size: int,
    hidden_size: int = 128,
    num_layers: int = 4,
    num_heads: int = 2,
    intermediate_size: int = 512,
    max_position_embeddings: int = 512,
    eos_token_id: int = 1,
    pad_token_id: int = 0,
    **overrides,
) -> Qwen2Config:
    """A randomly initialisable Qwen2 config (head_dim = hidden / heads = 64 by default)."""
    return Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_position_embeddings,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        eos_token_id=eos_token_id,
        bos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        torch_dtype="float32",
        **overrides,
    )


def build_tiny_model(
    out_dir: str | Path,
    seed: int = 0,
    token_classification: bool = False,
    extra_tokens: Optional[list[str]] = None,
    **config_overrides,
) -> Path:
    """Create and ``save_pretrained`` a random tiny Qwen2 (causal LM, or a 2-class
    token-classification head for PRMs) plus its char tokenizer into ``out_dir``."""
    import torch

    out = Path(out_dir)
    tok = build_char_tokenizer(extra_tokens)
    cfg = tiny_qwen2_config(len(tok), eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **config_overrides)
    torch.manual_seed(seed)
    if token_classification:
        cfg.num_labels = 2
        model = Qwen2ForTokenClassification(cfg)
    else:
        model = Qwen2ForCausalLM(cfg)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out
