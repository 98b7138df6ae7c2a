"""Rollout engines: vLLM (default) and Hugging Face generate, behind one interface."""
from __future__ import annotations

from critic_free_rl.rollout.base import Completion, RolloutBatch, RolloutEngine, SamplingSpec, flatten_groups  # noqa: F401


def make_engine(kind: str, model_path: str, **kwargs) -> RolloutEngine:
    """``kind`` is ``rollout.engine``: vllm | hf."""
    if kind == "vllm":
        from critic_free_rl.rollout.vllm_engine import VLLMEngine

        return VLLMEngine(model_path, **kwargs)
    if kind == "hf":
        from critic_free_rl.rollout.hf_engine import HFEngine

        return HFEngine(model_path, **kwargs)
    raise ValueError(f"rollout.engine={kind!r} is not one of: vllm, hf")
