"""Randomly initialised benchmark models, saved with ``save_pretrained`` (cached).

``tiny``: the embedded policy's architecture (hidden 128, 4 layers, 2 heads, intermediate
512), character tokenizer. ``mid``: a ~25M-parameter Qwen2 (hidden 512, 8 layers),
same tokenizer. ``gpu``: the 1.5B preset's architecture (Qwen2.5-Math-1.5B) with a
byte-level tokenizer whose vocabulary is filled up to the preset's 151936 ids (prompts
still encode one token per character; every id decodes), so no download is needed.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

#: Qwen2.5-Math-1.5B(-Instruct) config.json
QWEN25_MATH_15B = dict(
    vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
    num_attention_heads=12, num_key_value_heads=2, max_position_embeddings=4096,
    rope_theta=10000.0, tie_word_embeddings=True, rms_norm_eps=1e-6,
)

#: size -> tiny_qwen2_config overrides (on the character tokenizer)
CHAR_ARCHS: dict[str, dict] = {
    "tiny": dict(hidden_size=128, num_layers=4, num_heads=2, intermediate_size=512),
    "mid": dict(hidden_size=512, num_layers=8, num_heads=8, intermediate_size=1408),
}


def _cache() -> Path:
    from critic_free_rl.models.cache import cache_root

    return cache_root() / "bench"


def filled_char_tokenizer(vocab_size: int):
    """The character tokenizer with extra never-merged byte-string entries up to ``vocab_size``."""
    from itertools import product

    from transformers import Qwen2Tokenizer

    from critic_free_rl.models.tiny import EOS, PAD, byte_level_alphabet

    alphabet = byte_level_alphabet()
    vocab = {tok: i for i, tok in enumerate([PAD, EOS] + alphabet)}
    width = 2
    while len(vocab) < vocab_size:
        for combo in product(alphabet, repeat=width):
            vocab.setdefault("".join(combo), len(vocab))
            if len(vocab) >= vocab_size:
                break
        width += 1
    return Qwen2Tokenizer(vocab=vocab, merges=[], unk_token=None, eos_token=EOS, pad_token=PAD,
                          clean_up_tokenization_spaces=False, padding_side="left")


def build_model(size: str, dtype: str = "float32", arch: dict | None = None, seed: int = 0) -> Path:
    """Path of the (cached) randomly initialised model ``size`` (tiny | mid | gpu)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from critic_free_rl.models.tiny import build_char_tokenizer, tiny_qwen2_config

    if size not in (*CHAR_ARCHS, "gpu"):
        raise ValueError(f"unknown bench size {size!r}")
    spec = {"size": size, "dtype": dtype, "arch": arch or {}, "seed": seed, "v": 1}
    out = _cache() / f"{size}-{hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:10]}"
    if (out / "config.json").is_file():
        return out
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    torch.manual_seed(seed)
    if size == "gpu":
        a = {**QWEN25_MATH_15B, **(arch or {})}
        tok = filled_char_tokenizer(a["vocab_size"])
        cfg = Qwen2Config(**a, eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    else:
        tok = build_char_tokenizer()
        cfg = tiny_qwen2_config(len(tok), eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **{**CHAR_ARCHS[size], **(arch or {})})
    cfg.dtype = dtype
    model = Qwen2ForCausalLM(cfg).to(getattr(torch, dtype))
    tmp.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    (tmp / "bench_model.json").write_text(json.dumps({**spec, "params": sum(p.numel() for p in model.parameters())}))
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp, out)
    except OSError:  # another process built it first
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def num_params(path: Path) -> int:
    return int(json.loads((Path(path) / "bench_model.json").read_text())["params"])
