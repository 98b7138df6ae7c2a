"""Hugging Face ``generate`` rollout engine (``rollout=hf``): same batch structure as vLLM,
for debugging and for machines without vLLM. It samples from its own copy of the
weights, refreshed in place by :meth:`sync_weights`."""
from __future__ import annotations

from typing import Iterable

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from critic_free_rl.rollout.base import Completion, SamplingSpec


class HFEngine:
    def __init__(self, model_path: str, dtype: str = "float32", seed: int = 0, batch_size: int = 256, **_: object) -> None:
        self.tok = AutoTokenizer.from_pretrained(model_path)
        self.tok.padding_side = "left"
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, dtype)).eval()
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model.to(self.device)
        self.generator = torch.Generator().manual_seed(seed)
        self.batch_size = batch_size

    @torch.no_grad()
    def generate(self, prompts: list[str], spec: SamplingSpec) -> list[list[Completion]]:
        if spec.seed is not None:
            torch.manual_seed(spec.seed)
        flat = [p for p in prompts for _ in range(spec.n)]
        comps: list[Completion] = []
        eos, pad = self.tok.eos_token_id, self.tok.pad_token_id
        for s in range(0, len(flat), self.batch_size):
            enc = self.tok(flat[s : s + self.batch_size], return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
            out = self.model.generate(
                **enc,
                max_new_tokens=spec.max_new_tokens,
                do_sample=not spec.greedy,
                temperature=spec.temperature if not spec.greedy else None,
                top_p=spec.top_p if not spec.greedy else None,
                top_k=0,  # off, as in vLLM: transformers' default of 50 samples from (and scores) a truncated policy
                pad_token_id=pad,
                eos_token_id=None if spec.ignore_eos else eos,
                output_scores=spec.logprobs,
                return_dict_in_generate=True,
            )
            new = out.sequences[:, enc["input_ids"].shape[1] :]
            logp = torch.stack(out.scores, 1).log_softmax(-1).gather(-1, new.unsqueeze(-1)).squeeze(-1).tolist() if spec.logprobs else None
            for i, row in enumerate(new.tolist()):
                stopped = not spec.ignore_eos and eos in row
                n = row.index(eos) + 1 if stopped else len(row)  # keep EOS, as vLLM does
                ids = row[:n]
                comps.append(Completion(ids, self.tok.decode(ids, skip_special_tokens=True), logp[i][:n] if logp else None, stopped))
        return [comps[i * spec.n : (i + 1) * spec.n] for i in range(len(prompts))]

    @torch.no_grad()
    def sync_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        params = dict(self.model.named_parameters(remove_duplicate=False))  # tied names too
        for name, t in named_tensors:
            params[name].copy_(t.to(params[name].device, params[name].dtype))

    def release_memory(self) -> None:
        """Nothing to free: ``generate`` allocates its cache per call."""

    def close(self) -> None:
        del self.model
