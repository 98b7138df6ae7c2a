"""The policy's weights out of its engine, whole: ZeRO-3 gathering and LoRA folding."""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch


@contextlib.contextmanager
def gathered(*params: torch.nn.Parameter):
    """Full (un-partitioned) ``params`` for the duration, read-only (ZeRO-3; no-op otherwise)."""
    part = [p for p in params if hasattr(p, "ds_id")]  # ZeRO-3 partitioned parameters
    if part:
        import deepspeed

        with deepspeed.zero.GatheredParameters(part):
            yield
    else:
        yield


def lora_merged_weights(model) -> Iterator[tuple[str, torch.Tensor]]:
    """HF-named weights of a PEFT LoRA model with the active adapters folded in, without
    touching the module (ZeRO-3: base weight, A and B are gathered together)."""
    from peft.tuners.lora import LoraLayer

    layers = {n: m for n, m in model.named_modules() if isinstance(m, LoraLayer)}
    for name, p in model.named_parameters(remove_duplicate=False):
        if "lora_" in name:
            continue
        hf_name = name.replace("base_model.model.", "", 1).replace(".base_layer", "")
        owner, _, leaf = name.rpartition(".")
        layer = layers.get(owner[: -len(".base_layer")]) if owner.endswith(".base_layer") and leaf == "weight" else None
        adapters = [] if layer is None else [a for a in layer.active_adapters
                                             if a in layer.lora_A or a in getattr(layer, "lora_embedding_A", {})]
        if not adapters:
            with gathered(p):
                yield hf_name, p.data
            continue
        lora_params = [q for n, q in layer.named_parameters() if "lora_" in n]  # A and B (Linear or Embedding)
        with gathered(p, *lora_params):
            merged = p.data.clone()
            for a in adapters:
                merged += layer.get_delta_weight(a).to(merged.dtype)
            yield hf_name, merged
