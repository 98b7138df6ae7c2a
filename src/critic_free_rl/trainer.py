"""The RL loop. One step, top to bottom:

    prompts -> rollout (G per prompt) -> rewards [B, T] -> ref / old log-probs, values
            -> (KL into reward) -> advantages (estimator by name) -> update -> weight sync

Every phase is timed under its own name and logged to TensorBoard.
"""
from __future__ import annotations

import dataclasses
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from critic_free_rl.algorithms import AdvantageInput, get_estimator
from critic_free_rl.algorithms.reward_terms import add_kl_penalty, flat_groups
from critic_free_rl.backends.distributed import World, any_rank
from critic_free_rl.backends.learner import Learner, UpdateInputs
from critic_free_rl.backends.sequences import pack
from critic_free_rl.backends.sync_check import engine_sync_check
from critic_free_rl.checkpointing import Checkpointer, save_final
from critic_free_rl.config.environment import budget_threads
from critic_free_rl.config.schema import TrainConfig
from critic_free_rl.data.chat import apply_chat_template
from critic_free_rl.data.datasets import Example, load_split
from critic_free_rl.data.order import step_batch
from critic_free_rl.evaluation import EvalResult, calibrate_clip_eta, evaluate, final_split_eval
from critic_free_rl.logging.progress import StepProgress, eval_progress, process_start_time
from critic_free_rl.logging.provenance import provenance
from critic_free_rl.logging.step_metrics import step_metrics
from critic_free_rl.logging.study_stats import logprob_gap
from critic_free_rl.logging.tracker import PhaseTimer, Tracker
from critic_free_rl.models import eval_cache
from critic_free_rl.models.loading import resolve_model_path
from critic_free_rl.rewards.pipeline import RewardPipeline
from critic_free_rl.models.reward_models import resolve_orm_path, resolve_prm_path
from critic_free_rl.rollout import RolloutBatch, SamplingSpec, flatten_groups, make_engine
from critic_free_rl.shutdown import StopRequest, TrainingInterrupted

log = logging.getLogger(__name__)


@dataclass
class RunState:
    step: int = 0
    initial_accuracy: Optional[float] = None
    final_accuracy: Optional[float] = None
    evals: list[dict] = field(default_factory=list)
    skipped_updates: int = 0
    initial_heldout_accuracy: Optional[float] = None
    final_heldout_accuracy: Optional[float] = None
    clip_eta: Optional[float] = None
    #: process start to the first step, evaluation of step 0, end of the last step to summary
    timing: dict[str, Optional[float]] = field(default_factory=dict)




class Trainer:
    def __init__(self, cfg: TrainConfig, run_dir: Path, world: World) -> None:
        self.cfg, self.run_dir, self.world = cfg, run_dir, world
        t = cfg.trainer
        # this process's share of the cores (config.environment); vLLM's CPU worker stubs out
        # torch.set_num_threads, and OMP_NUM_THREADS is read only if set before torch's import
        torch._C.set_num_threads(budget_threads())
        random.seed(t.seed + world.rank)
        torch.manual_seed(t.seed + world.rank)
        # data first: a bad dataset stops the run before any model loads or the run
        # directory gets TensorBoard files (which would make a re-run need overwrite=true)
        train, test = load_split(cfg.data, cfg.data.train_split), load_split(cfg.data, cfg.data.test_split)
        self.train_examples, self.test_examples = train.examples, test.examples
        self.skipped_rows = {"train": train.skipped, "test": test.skipped}
        self.checkpointer = Checkpointer(run_dir, t.checkpoint_every, t.keep_checkpoints, t.checkpoint_every_minutes)
        # resume: TensorBoard and metrics.jsonl drop what was logged after the last checkpoint
        purge = self.checkpointer.purge_step(cfg.resume_from_scratch) if cfg.resume else None
        self.tracker = Tracker(run_dir, enabled=world.is_main, purge_step=purge)
        if not cfg.resume:  # a resumed run logged them at its start
            self.tracker.scalars({f"data/skipped_rows/{k}": float(v) for k, v in self.skipped_rows.items()}, 0)
        self.timer = PhaseTimer()
        self.state = RunState()
        self.model_path = resolve_model_path(cfg.model, cfg.data)
        # reward.prm=embedded: the tiny PRM of the embedded task, trained once and cached;
        # resolved before the rollout engine takes its memory, and failing before it loads
        reward_cfg = dataclasses.replace(cfg.reward, prm=resolve_prm_path(cfg.reward, cfg.data, log.info))
        reward_cfg = dataclasses.replace(reward_cfg, orm=resolve_orm_path(cfg.reward, cfg.data, log.info))
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path, trust_remote_code=cfg.model.trust_remote_code)
        if cfg.model.use_chat_template:
            self.train_examples = apply_chat_template(self.train_examples, self.tokenizer, cfg.model.system_prompt)
            self.test_examples = apply_chat_template(self.test_examples, self.tokenizer, cfg.model.system_prompt)
        self.longest_prompt = max(len(self.tokenizer(e.prompt, add_special_tokens=False)["input_ids"])
                                  for e in self.train_examples + self.test_examples)
        r = cfg.rollout
        self.prompts_per_rank = r.prompts_per_step // world.size
        self.engine = make_engine(
            r.engine, self.model_path, dtype=cfg.model.dtype, seed=r.seed + world.rank,
            max_model_len=self._max_model_len(), gpu_memory_utilization=r.gpu_memory_utilization,
            cpu_kvcache_gib=r.cpu_kvcache_gib, tensor_parallel_size=r.tensor_parallel_size,
            enforce_eager=r.enforce_eager, world_size=world.size, max_seqs=self.prompts_per_rank * r.group_size,
        )
        self.rewards = RewardPipeline(reward_cfg, self.tokenizer, self.model_path, cfg.model.trust_remote_code)
        if self.rewards.implicit_prm is not None:  # reward=prime: its weights and optimizer resume with the run
            self.checkpointer.extras["implicit_prm"] = self.rewards.implicit_prm
        self.learner = Learner(self.model_path, cfg.model, t, cfg.algorithm, self.prompts_per_rank * r.group_size,
                               world.device, max_row_tokens=self.longest_prompt + r.max_new_tokens)
        self.estimator = get_estimator(cfg.algorithm.estimator)
        self.gen = torch.Generator().manual_seed(t.seed)

    def _max_model_len(self) -> int:
        return self.longest_prompt + max(self.cfg.rollout.max_new_tokens, self.cfg.eval.max_new_tokens) + 8

    # ------------------------------------------------------------------ data
    def step_prompts(self, step: int) -> list[Example]:
        """This rank's prompts of step ``step`` (:func:`~critic_free_rl.data.order.step_batch`)."""
        return step_batch(self.train_examples, self.cfg.rollout.prompts_per_step, self.cfg.trainer.seed, step,
                          self.world.rank, self.world.size)

    # ------------------------------------------------------------------ one step
    def rollout(self, step: int) -> RolloutBatch:
        r = self.cfg.rollout
        examples = self.step_prompts(step)
        seed = r.seed * 1_000_003 + step * self.world.size + self.world.rank
        spec = SamplingSpec(n=r.group_size, max_new_tokens=r.max_new_tokens, temperature=r.temperature, top_p=r.top_p,
                            ignore_eos=r.ignore_eos, seed=seed, logprobs=self._engine_logprobs_exact())
        groups = self.engine.generate([e.prompt for e in examples], spec)
        prompt_ids = [self.tokenizer(e.prompt, add_special_tokens=False)["input_ids"] for e in examples]
        return flatten_groups(examples, groups, prompt_ids)

    def _needs_old_logprobs(self) -> bool:
        """Whether the update needs the behaviour policy's log-probs: with one epoch of one
        minibatch they equal the current policy's (detached) and KL-in-reward is off."""
        a = self.cfg.algorithm
        return a.ppo_epochs > 1 or a.num_minibatches > 1 or a.kl_in == "reward"

    def _engine_logprobs_exact(self) -> bool:
        """Whether the engine returns its sampling log-probs for the old log-probs: asked for
        (``rollout.use_engine_logprobs``), needed, and the raw model's (temperature 1, top_p 1)."""
        r = self.cfg.rollout
        return self._needs_old_logprobs() and r.use_engine_logprobs and r.temperature == 1.0 and r.top_p == 1.0

    def _old_from_engine(self) -> bool:
        """Whether the engine's log-probs serve as old log-probs: only where engine and learner
        compute alike (float32 on CPU). In bf16 / fp16 or on a GPU kernels differ (TRL measured
        7.5% of bf16 ratios outside [0.9, 1.1]): the learner recomputes them."""
        same_numerics = self.cfg.model.dtype == "float32" and self.world.device.type == "cpu"
        return self._engine_logprobs_exact() and same_numerics

    def _old_logprobs(self, batch: RolloutBatch, packed) -> tuple[torch.Tensor, dict[str, float]]:
        """[B, T] behaviour-policy log-probs (the engine's own when :meth:`_old_from_engine`, else a
        forward pass) and, when both exist, the engine-vs-learner gap (``logprob/engine_gap_*``)."""
        engine = None
        if batch.sample_logprobs is not None:
            engine = torch.zeros(packed.response_mask.shape)
            for i, lp in enumerate(batch.sample_logprobs):
                engine[i, : len(lp)] = torch.tensor(lp)
            if self._old_from_engine():
                return engine, {}
        old = self.learner.logprobs(packed, "policy")
        return old, ({} if engine is None else logprob_gap(engine, old, packed.response_mask))

    def train_step(self, step: int) -> dict[str, float]:
        """One RL step (module docstring), each phase timed; returns the step's scalars."""
        a, T = self.cfg.algorithm, self.timer
        with T.phase("generate"):
            batch = self.rollout(step)
            if self.cfg.rollout.release_kv_cache:
                self.engine.release_memory()
        with T.phase("score"):
            scored = self.rewards.score(batch.prompts, batch.responses, batch.response_ids, batch.references)
        packed = pack(batch.prompt_ids, batch.response_ids, self.tokenizer.pad_token_id)
        mask = packed.response_mask
        with T.phase("ref_logprobs"):
            ref_logp = self.learner.logprobs(packed, "ref") if a.kl_coef > 0 and a.kl_in != "none" else None
        with T.phase("old_logprobs"):
            old_logp, gap = self._old_logprobs(batch, packed) if self._needs_old_logprobs() else (None, {})
        with T.phase("values"):
            values = self.learner.values(packed) if self.learner.critic is not None else None
        token_rewards, kl_return = scored.token_rewards, torch.zeros(len(batch))
        if a.kl_in == "reward" and ref_logp is not None:
            token_rewards, kl = add_kl_penalty(token_rewards, old_logp, ref_logp, mask, a.kl_coef)
            kl_return = -a.kl_coef * kl
        with T.phase("advantage"):
            adv = self.estimator(AdvantageInput(token_rewards, scored.reward_mask, mask, batch.group_ids, values,
                                                self._outcome(scored)), a)
        flat = flat_groups(self.cfg.reward.success_coef * scored.success + scored.dense_return, batch.group_ids)
        loss_mask = mask & ~flat.unsqueeze(1) if a.filter_zero_variance_groups else mask.clone()
        bad = ~torch.isfinite(token_rewards).all(1) | ~torch.isfinite(adv.advantages).all(1)
        upd = None
        if any_rank(bool(bad.any())):
            self._skip_update(step, [u for u, b in zip(batch.uids, bad.tolist()) if b])
        else:
            inputs = UpdateInputs(packed, adv.advantages, adv.returns, old_logp, ref_logp, values, loss_mask)
            upd = self._update(step, inputs, batch.uids)
        if self.rewards.implicit_prm is not None:
            with T.phase("reward_update"):  # reward=prime: scored first, then its implicit PRM learns from the batch
                scored.metrics.update(self.rewards.update(scored))
        self._log_samples(step, batch, scored)
        return step_metrics(success=scored.success, dense_return=scored.dense_return, kl_return=kl_return,
                            success_coef=self.cfg.reward.success_coef, flat=flat, response_mask=mask,
                            finished=batch.finished, reward_metrics=scored.metrics, update=upd,
                            lr=self.learner.lr, times=T.pop_step(), world_size=self.world.size,
                            advantages=adv.advantages, token_returns=adv.returns, values=values, loss_mask=loss_mask,
                            extra=gap)

    def _outcome(self, scored) -> torch.Tensor:
        """[B] the sequence-level terms on the last token: the weighted success and the ORM's score."""
        rc = self.cfg.reward
        orm = rc.dense_coef * torch.tensor(scored.orm_scores) if scored.orm_scores else 0.0
        return rc.success_coef * scored.success + orm

    def _skip_update(self, step: int, bad_uids: list[str]) -> None:
        """No update this step: a reward or advantage is not finite (on some rank)."""
        log.warning("step %d: non-finite rewards/advantages for samples %s; update skipped", step + 1, bad_uids)
        # logged at step + 1, where fit() logs this step's scalars
        self.tracker.text("nonfinite/samples", ", ".join(bad_uids) or "(other rank)", step + 1)
        self.state.skipped_updates += 1

    def _update(self, step: int, inputs: UpdateInputs, uids: list[str]) -> dict[str, float]:
        """The learner's update, then the weights into the rollout engine; the update's metrics."""
        with self.timer.phase("update"):
            upd = self.learner.update(inputs, self.gen)
        if upd.get("update_skipped"):
            self.state.skipped_updates += 1
            log.warning("step %d: non-finite gradients; optimizer step skipped (ids %s)", step + 1, uids[:4])
        with self.timer.phase("weight_sync"):
            self.engine.sync_weights(self.learner.full_weights())
        return upd

    def _log_samples(self, step: int, batch: RolloutBatch, scored) -> None:
        """The PRM's step scores as a histogram every step; a few completions with their rewards
        as text, at evaluation steps."""
        if scored.prm_scores:
            self.tracker.histogram("reward/prm_step_scores", [x for row in scored.prm_scores for x in row], step + 1)
        n, coef = self.cfg.trainer.log_completions, self.cfg.reward.success_coef
        if not n or step % max(1, self.cfg.trainer.eval_every):
            return
        rows = [f"**{u}** reward={coef * float(scored.success[i]):.2f}+{float(scored.dense_return[i]):.2f}"
                f"\n\n```\n{batch.prompts[i]}{batch.responses[i]}\n```" for i, u in enumerate(batch.uids[:n])]
        self.tracker.text("samples/train", "\n\n".join(rows), step)

    # ------------------------------------------------------------------ evaluation
    def run_eval(self, step: int) -> float:
        e = self.cfg.eval
        cached = self._initial_eval_entry() if step == 0 else None
        fields = eval_cache.load(cached) if cached else None
        reused = not any_rank(fields is None)  # every rank reuses, or every rank evaluates
        with self.timer.phase("eval"):
            if reused:
                res = EvalResult(**{**fields, "samples": [tuple(s) for s in fields["samples"]]})
            else:
                res = evaluate(self.engine, self.rewards.verifier, self.test_examples, e.max_new_tokens, e.num_samples,
                               e.temperature, self.world.rank, self.world.size,
                               progress=eval_progress(f"eval step {step}") if self.world.is_main else None)
        if cached and not reused and self.world.is_main:
            eval_cache.store(cached, res.__dict__)
        self.tracker.scalars(res.metrics("eval"), step)
        samples = (f"{'OK' if c else 'WRONG'} (ref {r})\n```\n{p}{t}\n```" for p, t, r, c in res.samples)
        self.tracker.text("samples/eval", "\n\n".join(samples), step)
        self.state.evals.append({"step": step, **res.metrics("eval")})
        if step == 0:
            self.state.timing["initial_eval_reused"] = reused
        log.info("step %d eval greedy_accuracy=%.3f sampling_accuracy=%s (n=%d)%s", step, res.greedy_accuracy,
                 res.sampling_accuracy, res.num_examples, f" reused from {cached}" if reused else "")
        return res.greedy_accuracy

    def _final_split_eval(self, when: str) -> Optional[float]:
        out = self.run_dir / f"{when}_outcomes.jsonl"
        return final_split_eval(self.cfg, self.engine, self.rewards.verifier, self.tokenizer, self.world.rank,
                                self.world.size, out)

    def _initial_eval_entry(self) -> Optional[Path]:
        """The step-0 evaluation's cache entry (:mod:`~critic_free_rl.models.eval_cache`), or
        None when ``trainer.reuse_initial_eval`` is off."""
        if not self.cfg.trainer.reuse_initial_eval:
            return None
        c = self.cfg
        settings = {"eval": dataclasses.asdict(c.eval), "engine": c.rollout.engine, "dtype": c.model.dtype,
                    "seed": c.rollout.seed, "ranks": self.world.size, "max_model_len": self._max_model_len()}
        return eval_cache.entry(self.model_path, self.test_examples, settings)

    # ------------------------------------------------------------------ loop
    def fit(self) -> dict:
        t = self.cfg.trainer
        t0 = time.time()
        stop = StopRequest().install()  # SIGTERM / SIGINT: checkpoint after this step, then exit
        resumed = bool(self.cfg.resume) and self.checkpointer.restore(self)
        if not resumed:  # reward.clip_eta_quantile: eta from the PRM's scores, once (RunState keeps it across a resume)
            self.state.clip_eta = calibrate_clip_eta(self.cfg, self.engine, self.rewards.prm, self.train_examples,
                                                     self.world.rank, self.world.size)
        if self.state.clip_eta is not None:
            self.rewards.cfg.clip_eta = self.state.clip_eta
        timing = self.state.timing
        t_eval = time.time()
        if t.eval_at_start and not resumed:
            self.state.initial_accuracy = self.run_eval(0)
            self.state.initial_heldout_accuracy = self._final_split_eval("initial")
        timing["initial_eval_seconds"] = time.time() - t_eval if t.eval_at_start and not resumed else None
        start = process_start_time()
        timing["startup_seconds"] = t_eval - start if start else None
        progress = StepProgress(t.total_steps, self.state.step, t.log_every, log, enabled=self.world.is_main)
        for step in range(self.state.step, t.total_steps):
            metrics = self.train_step(step)
            self.tracker.scalars(metrics, step + 1)
            self.state.step = step + 1
            progress.update(metrics, sum(v for k, v in metrics.items() if k.startswith("time/")))
            if t.eval_every and (step + 1) % t.eval_every == 0 and step + 1 < t.total_steps:
                self.run_eval(step + 1)
            save, stopping = self.checkpointer.decide(step + 1, time.time() - t0, stop.requested)
            if save:
                self.checkpointer.save(self, step + 1, time.time() - t0)
            if stopping:
                progress.close()
                self.tracker.close()
                raise TrainingInterrupted(step + 1)
        progress.close()
        t_end = time.time()
        self.state.final_accuracy = self.run_eval(t.total_steps)
        self.state.final_heldout_accuracy = self._final_split_eval("final")
        timing["final_eval_seconds"] = time.time() - t_end
        wall = time.time() - t0 + self.checkpointer.elapsed_before
        final_dir = self.run_dir / "final"
        # the engine samples from the trained policy; ranks hold identical weights
        sync = engine_sync_check(self.engine, self.learner, self.tokenizer, [e.prompt for e in self.step_prompts(0)])
        sync.update(save_final(self.learner, final_dir, self.tokenizer, self.world))  # every rank: ZeRO-3 gathers
        log.info("sync check: %s", {k: v for k, v in sync.items() if k != "rank_weights_sha256"})
        summary = {
            "initial_accuracy": self.state.initial_accuracy,
            "final_accuracy": self.state.final_accuracy,
            "steps": self.state.step,
            "wall_seconds": wall,
            "mean_phase_seconds": self.timer.means(),
            "evals": self.state.evals,
            "skipped_updates": self.state.skipped_updates,
            "skipped_rows": self.skipped_rows,
            "num_ranks": self.world.size,
            "cpu_threads": torch.get_num_threads(),
            "algorithm": self.cfg.algorithm.name,
            "reward": self.cfg.reward.name,
            "seed": t.seed,
            "checkpoint": str(final_dir),
            "initial_heldout_accuracy": self.state.initial_heldout_accuracy,
            "final_heldout_accuracy": self.state.final_heldout_accuracy,
            "clip_eta": self.rewards.cfg.clip_eta,
            **provenance(self.model_path, self.rewards.cfg.prm if self.rewards.prm is not None else None),
            **sync,
        }
        self._log_hparams(summary)
        timing["teardown_seconds"] = time.time() - t_end - timing["final_eval_seconds"]
        summary.update(timing)
        self.tracker.summary(summary)
        self.tracker.close()
        return summary

    def _log_hparams(self, summary: dict) -> None:
        """The run's settings for TensorBoard's HPARAMS view, with its accuracies as the metrics."""
        c = self.cfg
        hp = {"algorithm": c.algorithm.name, "estimator": c.algorithm.estimator, "reward": c.reward.name,
              "seed": c.trainer.seed, "lr": c.trainer.lr, "kl_coef": c.algorithm.kl_coef,
              "group_size": c.rollout.group_size, "prompts_per_step": c.rollout.prompts_per_step,
              "total_steps": c.trainer.total_steps, "temperature": c.rollout.temperature,
              "success_coef": c.reward.success_coef, "dense_coef": c.reward.dense_coef, "dtype": c.model.dtype}
        acc = {"hparams/final_accuracy": summary["final_accuracy"],
               "hparams/initial_accuracy": summary["initial_accuracy"]}
        self.tracker.hparams(hp, {k: v for k, v in acc.items() if v is not None}, self.state.step)

    def close(self) -> None:
        self.rewards.close()
        self.engine.close()
