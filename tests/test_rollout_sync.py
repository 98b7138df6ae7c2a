"""After an optimizer step and an in-place weight sync, vLLM's greedy output equals
Hugging Face's greedy output for the same weights; the reference policy is untouched.
The engine's CPU KV cache is sized to the sequences it decodes at once."""
from __future__ import annotations

import sys

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from critic_free_rl.algorithms import get_estimator
from critic_free_rl.backends.distributed import init_world
from critic_free_rl.backends.learner import Learner, UpdateInputs
from critic_free_rl.backends.sequences import pack
from critic_free_rl.config.schema import AlgorithmConfig, ModelConfig, TrainerConfig
from critic_free_rl.rollout import SamplingSpec, make_engine
from critic_free_rl.rollout.host_memory import populate
from critic_free_rl.rollout.vllm_engine import cpu_kv_plan

PROMPTS = ["What is 12 + 7 - 3?\n", "What is 55 - 9?\n", "What is 20 + 4 + 1?\n"]


def hf_greedy(model, tok, prompts: list[str], n: int) -> list[list[int]]:
    out = []
    for p in prompts:
        ids = tok(p, return_tensors="pt", add_special_tokens=False).input_ids
        g = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=tok.pad_token_id)
        out.append(g[0, ids.shape[1] :].tolist())
    return out


@pytest.fixture(scope="module")
def setup(tiny_model_dir):
    world = init_world("deepspeed")
    algo = AlgorithmConfig(name="grpo", estimator="grpo", kl_coef=0.1, kl_in="loss")
    learner = Learner(str(tiny_model_dir), ModelConfig(name_or_path=str(tiny_model_dir)), TrainerConfig(lr=5e-3, micro_batch_size=4), algo, 8, world.device)
    # a KV cache sized for 4 sequences: the 8-sample batches below decode in two waves
    engine = make_engine("vllm", str(tiny_model_dir), seed=0, max_model_len=256, max_seqs=4)
    yield learner, engine, algo
    engine.close()


def test_update_changes_policy_not_reference_and_vllm_matches_hf(setup, tiny_model_dir):
    learner, engine, algo = setup
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    before = {k: v.detach().clone() for k, v in learner.policy.module.named_parameters()}
    ref_before = {k: v.detach().clone() for k, v in learner.ref.named_parameters()}

    groups = engine.generate(PROMPTS[:2], SamplingSpec(n=4, max_new_tokens=12, temperature=1.0, seed=1))
    prompt_ids = [tok(p, add_special_tokens=False)["input_ids"] for p in PROMPTS[:2]]
    resp = [c.token_ids for g in groups for c in g]
    packed = pack([pi for pi in prompt_ids for _ in range(4)], resp, tok.pad_token_id)
    rewards = torch.zeros(packed.response_mask.shape)
    last = packed.response_mask.sum(1) - 1
    rewards[torch.arange(8), last] = torch.tensor([1.0, 0, 0, 1, 0, 1, 1, 0])
    reward_mask = torch.zeros_like(packed.response_mask)
    reward_mask[torch.arange(8), last] = True
    from critic_free_rl.algorithms import AdvantageInput

    adv = get_estimator("grpo")(AdvantageInput(rewards, reward_mask, packed.response_mask, torch.arange(8) // 4), algo)
    ref_logp = learner.logprobs(packed, "ref")
    metrics = learner.update(UpdateInputs(packed, adv.advantages, adv.returns, None, ref_logp, None, packed.response_mask), torch.Generator().manual_seed(0))
    assert metrics["update_skipped"] == 0.0 and metrics["grad_norm"] > 0

    changed = [k for k, v in learner.policy.module.named_parameters() if not torch.equal(v, before[k])]
    assert len(changed) == len(before), "every policy tensor should move after an AdamW step"
    assert all(torch.equal(v, ref_before[k]) for k, v in learner.ref.named_parameters()), "reference must stay frozen"

    engine.sync_weights(learner.full_weights())
    spec = SamplingSpec(n=1, max_new_tokens=24, temperature=0.0, ignore_eos=True)
    vllm_out = [g[0].token_ids for g in engine.generate(PROMPTS, spec)]
    hf = hf_greedy(learner.policy.module.eval(), tok, PROMPTS, 24)
    assert vllm_out == hf
    # and the reference (old weights) now generates differently from vLLM on at least one prompt
    assert hf_greedy(learner.ref, tok, PROMPTS, 24) != vllm_out


def test_vllm_logprobs_match_learner(setup, tiny_model_dir):
    """vLLM's sampling log-probs agree with the learner's forward pass (same weights)."""
    learner, engine, _ = setup
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    engine.sync_weights(learner.full_weights())
    groups = engine.generate(PROMPTS, SamplingSpec(n=2, max_new_tokens=10, temperature=1.0, seed=3, logprobs=True))
    prompt_ids = [tok(p, add_special_tokens=False)["input_ids"] for p in PROMPTS for _ in range(2)]
    comps = [c for g in groups for c in g]
    packed = pack(prompt_ids, [c.token_ids for c in comps], tok.pad_token_id)
    ours = learner.logprobs(packed, "policy")
    for i, c in enumerate(comps):
        n = len(c.token_ids)
        assert torch.allclose(ours[i, :n], torch.tensor(c.logprobs), atol=1e-3)


@pytest.fixture
def intra_op_threads(request):
    """torch's intra-op threads set to the test's parameter for its duration."""
    before = torch.get_num_threads()
    torch._C.set_num_threads(request.param)  # vLLM's CPU worker stubs out torch.set_num_threads
    yield request.param
    torch._C.set_num_threads(before)


@pytest.mark.parametrize("intra_op_threads", [1, 2], indirect=True)  # two: pages faulted in after the prefill
def test_released_kv_cache_comes_back_for_the_next_generate(setup, intra_op_threads):
    """``release_memory`` frees the KV cache's storage; the next ``generate`` re-allocates it
    and samples exactly what it did before (greedy, same weights)."""
    _, engine, _ = setup
    spec = SamplingSpec(n=1, max_new_tokens=16, temperature=0.0, ignore_eos=True)
    before = [g[0].token_ids for g in engine.generate(PROMPTS, spec)]
    engine.release_memory()
    assert engine._released and all(s.nbytes() == 0 for s, _ in engine._released)
    assert [g[0].token_ids for g in engine.generate(PROMPTS, spec)] == before
    assert not engine._released and all(t.untyped_storage().nbytes() > 0 for t in engine._model_runner().kv_caches)


def _resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise(MADV_POPULATE_WRITE) is Linux's")
def test_populate_faults_pages_in_and_keeps_their_contents():
    x = torch.empty(64 << 20, dtype=torch.uint8)  # mmap-backed, its pages not yet there
    x[::1 << 20] = 7
    before = _resident_bytes()
    assert populate([x.untyped_storage()])
    assert _resident_bytes() - before > 60 << 20
    assert int(x[::1 << 20].sum()) == 7 * 64 and int(x.sum()) == 7 * 64


@pytest.mark.parametrize(
    "seqs, max_len, plan",
    [
        (128, 158, (128, 32, 128 * 5 + 1)),  # blocks of 32 waste 2 tokens a sequence, of 128 98
        (128, 102, (128, 128, 128 * 1 + 1)),  # every size needs 128 tokens: the largest block
        (4, 256, (4, 128, 4 * 2 + 1)),
        (1000, 64, (256, 64, 256 * 1 + 1)),  # at most vLLM's 256 sequences at once
    ],
)
def test_cpu_kv_plan(seqs, max_len, plan):
    assert cpu_kv_plan(seqs, max_len) == plan


def test_kv_cache_holds_max_seqs_and_larger_calls_decode_in_waves(setup, tiny_model_dir):
    """The engine's CPU KV cache is exactly the planned blocks (not vLLM's 1 GiB default);
    9 sequences through its 4 slots give what each gives alone (greedy)."""
    _, engine, _ = setup
    _, block, blocks = cpu_kv_plan(4, 256)
    cfg = AutoConfig.from_pretrained(tiny_model_dir)
    token_bytes = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * (cfg.hidden_size // cfg.num_attention_heads) * 4
    engine.generate(PROMPTS[:1], SamplingSpec(n=1, max_new_tokens=1))  # brings back a cache released by another test
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in engine._model_runner().kv_caches}
    assert sum(storages.values()) == blocks * block * token_bytes
    spec = SamplingSpec(n=1, max_new_tokens=16, temperature=0.0, ignore_eos=True)
    alone = [engine.generate([p], spec)[0][0].token_ids for p in PROMPTS * 3]
    assert [g[0].token_ids for g in engine.generate(PROMPTS * 3, spec)] == alone
