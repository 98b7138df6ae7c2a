"""One benchmark worker process: a trainer (or the floor) that runs one step per command.

    python -m bench.worker '<json spec>'      (PYTHONPATH: src/ and scripts/)

The parent (``scripts/bench_step.py``) writes ``step`` / ``quit`` lines on stdin; the
worker answers with ``@@BENCH {json}`` lines on stdout (``ready``, then one ``step``
record per step with its wall seconds and, where known, its phase seconds). Everything
else a library prints is ignored by the parent. Kinds:

``ours``      the real :class:`~critic_free_rl.trainer.Trainer` (vLLM or HF rollout,
              DeepSpeed or torch update, the success reward's worker pool), one
              ``train_step`` + tracker write per command, as ``Trainer.fit`` does.
``trl``       TRL's ``GRPOTrainer`` with its default (HF ``generate``) rollout, gated
              step by step through a callback; the same prompts, group size, sampling,
              KL term (k3, beta = kl_coef), micro-batching and success reward.
``trl_vllm``  the same with ``use_vllm=True, vllm_mode="colocate"``.
``floor``     a bare ``vllm.LLM.generate`` of the same prompts (n = group size, vLLM's
              default threads) plus a bare forward + backward of the HF model over the
              generated tokens (right-padded rows, no attention mask, same micro-batches).

This module stays import-light at the top: the success reward's workers (forkserver
children) re-import the program's ``__main__`` module.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Optional


@dataclass
class Spec:
    kind: str  # ours | trl | trl_vllm | floor
    model: str  # model directory
    max_new_tokens: int
    ignore_eos: bool
    total_steps: int
    dtype: str = "float32"
    group_size: int = 8
    prompts_per_step: int = 16
    micro_batch_size: int = 64
    kl_coef: float = 0.05
    lr: float = 5e-4
    engine: str = "vllm"  # rollout engine of ours / generator of the floor: vllm | hf
    backend: str = "deepspeed"  # ours: deepspeed | torch
    run_dir: str = ""
    threads: int = 0  # torch threads (0: leave the default)
    overrides: list[str] = field(default_factory=list)  # extra Hydra overrides for ours


class StallClock:
    """Wall time this process spent stopped (SIGSTOP by a load governor, a suspended VM):
    a daemon thread ticks every 50 ms and counts any gap above ``threshold_s``. Busy CPUs
    delay a tick by milliseconds, a stopped process by seconds."""

    def __init__(self, tick_s: float = 0.05, threshold_s: float = 1.0) -> None:
        import threading

        self.tick_s, self.threshold_s, self.total = tick_s, threshold_s, 0.0
        threading.Thread(target=self._run, daemon=True, name="stall-clock").start()

    def _run(self) -> None:
        last = time.monotonic()
        while True:
            time.sleep(self.tick_s)
            now = time.monotonic()
            if now - last > self.threshold_s:
                self.total += now - last - self.tick_s
            last = now


STALLS: Optional[StallClock] = None


def stalled() -> float:
    return STALLS.total if STALLS is not None else 0.0


def emit(**msg) -> None:
    sys.stdout.write("@@BENCH " + json.dumps(msg) + "\n")
    sys.stdout.flush()


def wait_command() -> bool:
    """Block until the parent says ``step`` (True) or ``quit`` / EOF (False)."""
    line = sys.stdin.readline()
    return line.strip() == "step"


def setup_env() -> None:
    from critic_free_rl.config.environment import setup_environment

    setup_environment()
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")


def compose_config(spec: Spec):
    """The validated TrainConfig ``ours`` runs with (the others read data / prompts from it)."""
    from critic_free_rl.config.loading import compose, to_train_config

    ov = [
        "model.embedded=false", f"model.name_or_path={spec.model}", f"model.dtype={spec.dtype}",
        f"rollout.engine={spec.engine}", f"rollout.group_size={spec.group_size}",
        f"rollout.prompts_per_step={spec.prompts_per_step}", f"rollout.max_new_tokens={spec.max_new_tokens}",
        f"rollout.ignore_eos={str(spec.ignore_eos).lower()}", "rollout.temperature=1.0", "rollout.top_p=1.0",
        "algorithm=grpo", f"algorithm.kl_coef={spec.kl_coef}", "reward=success",
        f"trainer.backend={spec.backend}", f"trainer.micro_batch_size={spec.micro_batch_size}",
        f"trainer.lr={spec.lr}", "trainer.warmup_steps=0", f"trainer.total_steps={spec.total_steps}",
        "trainer.eval_every=0", "trainer.eval_at_start=false", "trainer.log_completions=0",
        f"run_dir={spec.run_dir}", "overwrite=true", *spec.overrides,
    ]
    return to_train_config(compose(ov))


def step_examples(tc, examples, step: int):
    """The prompts ``Trainer`` uses at ``step`` (one rank)."""
    from critic_free_rl.data.order import step_batch

    return step_batch(examples, tc.rollout.prompts_per_step, tc.trainer.seed, step)


def _set_threads(spec: Spec) -> None:
    import torch

    if spec.threads:
        torch.set_num_threads(spec.threads)


# ---------------------------------------------------------------------------- ours
def run_ours(spec: Spec) -> None:
    from pathlib import Path

    tc = compose_config(spec)
    from critic_free_rl.backends.distributed import init_world
    from critic_free_rl.trainer import Trainer

    _set_threads(spec)
    world = init_world(tc.trainer.backend, tc.trainer.dist_timeout_minutes)
    Path(spec.run_dir).mkdir(parents=True, exist_ok=True)
    trainer = Trainer(tc, Path(spec.run_dir), world)
    emit(event="ready", micro_batch_size=trainer.learner.micro)
    try:
        step = 0
        while wait_command():
            t0, s0 = time.perf_counter(), stalled()
            metrics = trainer.train_step(step)  # Trainer.fit's loop body, without evals
            trainer.tracker.scalars(metrics, step + 1)
            trainer.state.step = step + 1
            dt = time.perf_counter() - t0
            phases = {k[5:-2]: v for k, v in metrics.items() if k.startswith("time/")}
            emit(event="step", step=step, seconds=dt, stalled=stalled() - s0, phases=phases,
                 tokens=float(metrics["response/length_tokens"]) * spec.group_size * spec.prompts_per_step)
            step += 1
    finally:
        trainer.tracker.close()
        trainer.close()


# ---------------------------------------------------------------------------- floor
def run_floor(spec: Spec) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from critic_free_rl.backends.sequences import pack, response_logprobs
    from critic_free_rl.data.datasets import load_split
    from critic_free_rl.rollout import SamplingSpec, make_engine

    tc = compose_config(spec)
    examples = load_split(tc.data, tc.data.train_split).examples
    tok = AutoTokenizer.from_pretrained(spec.model)
    longest = max(len(tok(e.prompt, add_special_tokens=False)["input_ids"]) for e in examples)
    threads = torch.get_num_threads()
    llm = None
    if spec.engine == "vllm":
        from vllm import LLM, SamplingParams

        llm = LLM(model=spec.model, dtype=spec.dtype, seed=0, max_model_len=longest + spec.max_new_tokens + 8, enforce_eager=True)
        torch.set_num_threads(threads)
    else:  # no vLLM: the project's HF engine is the generator (its generate is plain HF generate)
        engine = make_engine("hf", spec.model, dtype=spec.dtype, seed=0)
    _set_threads(spec)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = AutoModelForCausalLM.from_pretrained(spec.model, dtype=getattr(torch, spec.dtype)).to(device)
    model.train()
    emit(event="ready")
    step = 0
    while wait_command():
        prompts = [e.prompt for e in step_examples(tc, examples, step)]
        t0, s0 = time.perf_counter(), stalled()
        if llm is not None:
            params = SamplingParams(n=spec.group_size, max_tokens=spec.max_new_tokens, temperature=1.0, top_p=1.0,
                                    ignore_eos=spec.ignore_eos, seed=step)
            outs = llm.generate(prompts, params, use_tqdm=False)
            responses = [list(c.token_ids) for o in outs for c in o.outputs]
        else:
            groups = engine.generate(prompts, SamplingSpec(n=spec.group_size, max_new_tokens=spec.max_new_tokens, ignore_eos=spec.ignore_eos, seed=step))
            responses = [list(c.token_ids) for g in groups for c in g]
        if device.type == "cuda":
            torch.cuda.synchronize()
        t1 = time.perf_counter()
        pids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts for _ in range(spec.group_size)]
        packed = pack(pids, responses, tok.pad_token_id)
        for s in range(0, len(packed), spec.micro_batch_size):
            sub = packed.slice(torch.arange(s, min(len(packed), s + spec.micro_batch_size)))
            # rows are right-padded: causal attention needs no mask (as in ours; SDPA's is_causal kernel)
            out = model(input_ids=sub.input_ids.to(device), use_cache=False)
            logp, _ = response_logprobs(out.logits, sub.__class__(*(getattr(sub, f).to(device) for f in ("input_ids", "attention_mask", "response_mask", "logit_index", "response_tokens"))))
            (-logp.sum() / max(1, int(sub.response_mask.sum()))).backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        t2 = time.perf_counter()
        model.zero_grad(set_to_none=True)
        emit(event="step", step=step, seconds=t2 - t0, stalled=stalled() - s0, phases={"generate": t1 - t0, "forward_backward": t2 - t1},
             tokens=float(sum(map(len, responses))))
        step += 1


# ---------------------------------------------------------------------------- TRL
class _Reward:
    """The success reward (math-verify worker pool) as a TRL reward function."""

    __name__ = "success"

    def __init__(self, verifier) -> None:
        self.verifier = verifier

    def __call__(self, prompts, completions, reference, **_):
        correct, _counts = self.verifier.score(list(completions), list(reference))
        return [1.0 if ok else 0.0 for ok in correct]


def _patch_trl_colocate_sync() -> None:
    """TRL 1.16 supports vLLM <= 0.31; its colocate weight sync calls the model's
    ``load_weights`` directly, which vLLM 0.32's CPU backend rejects after start-up
    (``'Parameter' object has no attribute 'weight_loader'``). Route it through the model
    runner's in-place ``reload_weights`` (the call our engine makes); the weights TRL sends
    and when it sends them are unchanged."""
    from trl.generation.vllm_generation import VLLMGeneration

    inner = VLLMGeneration.sync_weights

    def sync_weights(self):
        if self.mode != "colocate":
            return inner(self)
        worker = self.llm.llm_engine.model_executor.driver_worker
        runner = getattr(worker, "worker", worker).model_runner
        runner.reload_weights(weights_iterator=self._iter_named_params())
        self.llm.reset_prefix_cache()

    VLLMGeneration.sync_weights = sync_weights


def run_trl(spec: Spec) -> None:
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from critic_free_rl.data.datasets import load_split
    from critic_free_rl.rewards.success import SuccessVerifier

    tc = compose_config(spec)
    examples = load_split(tc.data, tc.data.train_split).examples
    rows = [{"prompt": e.prompt, "reference": e.reference} for s in range(spec.total_steps) for e in step_examples(tc, examples, s)]
    tok = AutoTokenizer.from_pretrained(spec.model)
    longest = max(len(tok(e.prompt, add_special_tokens=False)["input_ids"]) for e in examples)
    vllm = spec.kind == "trl_vllm"
    b = spec.group_size * spec.prompts_per_step
    # TRL needs equal micro-batches: the largest divisor of the batch not above ours' rows
    micro = max(d for d in range(1, min(spec.micro_batch_size, b) + 1) if b % d == 0)
    gas = b // micro
    cuda = torch.cuda.is_available()
    args = GRPOConfig(
        output_dir=spec.run_dir, use_cpu=not cuda, bf16=spec.dtype == "bfloat16", fp16=False,
        per_device_train_batch_size=micro, gradient_accumulation_steps=gas, steps_per_generation=gas,
        num_generations=spec.group_size, max_completion_length=spec.max_new_tokens,
        temperature=1.0, top_p=1.0, top_k=0, beta=spec.kl_coef, num_iterations=1, epsilon=0.2,
        loss_type="dapo", scale_rewards="group", learning_rate=spec.lr, lr_scheduler_type="constant",
        adam_beta1=0.9, adam_beta2=0.95, weight_decay=0.0, max_grad_norm=1.0, max_steps=spec.total_steps,
        shuffle_dataset=False, seed=0, logging_steps=1, report_to="none", save_strategy="no",
        disable_tqdm=True, log_completions=False, dataloader_num_workers=0,
        model_init_kwargs={"dtype": spec.dtype},
        use_vllm=vllm, vllm_mode="colocate", vllm_max_model_length=longest + spec.max_new_tokens + 8,
        vllm_enable_sleep_mode=False,
        # same work as ours: exactly max_new_tokens per completion when EOS is ignored
        generation_kwargs=({"ignore_eos": True} if vllm else {"min_new_tokens": spec.max_new_tokens}) if spec.ignore_eos else None,
    )
    if vllm:
        _patch_trl_colocate_sync()
    verifier = SuccessVerifier(tc.reward.verify_timeout_s, tc.reward.verify_workers)
    threads = torch.get_num_threads()
    trainer = GRPOTrainer(model=spec.model, reward_funcs=[_Reward(verifier)], args=args,
                          train_dataset=Dataset.from_list(rows), processing_class=tok)
    torch.set_num_threads(threads)  # as ours does after vLLM start-up
    _set_threads(spec)

    class Gate(TrainerCallback):
        def __init__(self) -> None:
            self.t0: Optional[float] = None
            self.s0 = 0.0
            self.step = 0

        def _finish(self) -> None:
            if self.t0 is not None:
                emit(event="step", step=self.step, seconds=time.perf_counter() - self.t0, stalled=stalled() - self.s0, phases={})
                self.step += 1
                self.t0 = None

        def on_step_begin(self, args, state, control, **kw):
            self._finish()
            if not wait_command():
                control.should_training_stop = True
                raise SystemExit(0)
            self.t0, self.s0 = time.perf_counter(), stalled()

        def on_train_end(self, args, state, control, **kw):
            self._finish()

    trainer.add_callback(Gate())
    emit(event="ready")
    try:
        trainer.train()
        while wait_command():  # more steps asked than the dataset holds
            emit(event="error", message="no more TRL steps")
    finally:
        verifier.close()


def main() -> None:
    global STALLS
    spec = Spec(**json.loads(sys.argv[1]))
    STALLS = StallClock()
    setup_env()
    try:
        {"ours": run_ours, "floor": run_floor, "trl": run_trl, "trl_vllm": run_trl}[spec.kind](spec)
    except SystemExit:
        raise
    except BaseException as e:  # tell the parent, then fail
        emit(event="error", message=f"{type(e).__name__}: {e}")
        raise


if __name__ == "__main__":
    main()
