"""Every preset under configs/ composes and validates, offline (nothing is downloaded):

* model presets name Qwen2 causal LMs whose architecture (a local copy of the hub
  config.json fields) builds as ``Qwen2ForCausalLM`` with the LoRA target modules present;
  their chat template + system prompt wrap the data template's ``{question}``;
* PRM presets carry their step separator / tag / label tokens, and the remote-code
  loading path Qwen2.5-Math-PRM needs works (a local stand-in with its head layout);
* data presets read their fields from local rows in the hub format;
* experiment presets reproduce the paper's settings.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import REPO, SHARED_DATA, compose_train

from critic_free_rl.config.loading import to_train_config

CONFIGS = REPO / "configs"
GROUPS = ["model", "data", "rollout", "algorithm", "reward", "prm", "trainer", "experiment"]
PRESETS = [(g, p.stem) for g in GROUPS for p in sorted((CONFIGS / g).glob("*.yaml"))]
EXPERIMENTS = {"ppo_success": ("success", None), "ppo_pr_clip": ("pr_clip", "clip"),
               "ppo_pr_delta": ("pr_delta", "delta"), "ppo_pr_clip_delta": ("pr_clip_delta", "clip_delta")}
# architecture fields of the hub config.json of each model preset (Qwen2 family)
HUB_ARCH = {
    "qwen2.5-math-1.5b-instruct": dict(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                                       num_attention_heads=12, num_key_value_heads=2, max_position_embeddings=4096,
                                       tie_word_embeddings=True, params=(1.4e9, 1.7e9)),
    "qwen2.5-math-7b-instruct": dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                                     num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=4096,
                                     tie_word_embeddings=False, params=(7.0e9, 8.0e9)),
}


def _compose(*overrides: str):
    return to_train_config(compose_train(*overrides))


def test_every_group_file_is_covered():
    assert {"experiment", "prm"} <= {g for g, _ in PRESETS}
    assert {n for g, n in PRESETS if g == "experiment"} == set(EXPERIMENTS)
    assert {"qwen2.5-math-1.5b-instruct", "qwen2.5-math-7b-instruct"} <= {n for g, n in PRESETS if g == "model"}
    assert {"qwen2.5-math-prm-7b", "math-shepherd"} <= {n for g, n in PRESETS if g == "prm"}
    assert {"gsm8k", "math", "math500"} <= {n for g, n in PRESETS if g == "data"}


@pytest.mark.parametrize("group, name", PRESETS, ids=[f"{g}={n}" for g, n in PRESETS])
def test_preset_composes_and_validates(group, name):
    """Catches a preset YAML that no longer composes with the schema (a renamed or removed key)
    or that fails the start-up validation (a shaping its reward does not declare, a rule an
    estimator's declared needs break): every option of every group must start."""
    extra = {"prm": ["reward=pr_clip_delta"], "reward": ["reward.orm=some/orm"] if name == "orm" else []}.get(group, [])
    tc = _compose(f"{group}={name}", *extra)
    assert "{question}" in tc.data.prompt_template
    if group == "experiment":
        assert tc.experiment == name


@pytest.mark.parametrize("name", sorted(HUB_ARCH))
def test_model_preset(name, tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM, Qwen2Config

    m = _compose(f"model={name}").model
    size = "1.5B" if "1.5b" in name else "7B"
    assert m.name_or_path == f"Qwen/Qwen2.5-Math-{size}-Instruct" and not m.embedded
    assert m.dtype == "bfloat16" and m.gradient_checkpointing and m.use_chat_template
    assert "\\boxed{}" in m.system_prompt
    # the hub architecture, from a local config.json, builds (on the meta device) as the
    # class the learner, vLLM and the LoRA targets expect
    arch = dict(HUB_ARCH[name])
    lo, hi = arch.pop("params")
    Qwen2Config(architectures=["Qwen2ForCausalLM"], **arch).save_pretrained(tmp_path)
    config = AutoConfig.from_pretrained(tmp_path)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    assert type(model).__name__ == "Qwen2ForCausalLM" and config.architectures == ["Qwen2ForCausalLM"]
    assert lo < sum(p.numel() for p in model.parameters()) < hi
    # the figures `critic-free-rl plan` reads are the same architecture, parameter for parameter
    f = m.figures
    assert (f.vocab_size, f.hidden_size, f.intermediate_size, f.num_layers, f.num_heads, f.num_kv_heads, f.tie_word_embeddings) == (
        arch["vocab_size"], arch["hidden_size"], arch["intermediate_size"], arch["num_hidden_layers"], arch["num_attention_heads"],
        arch["num_key_value_heads"], arch["tie_word_embeddings"])
    assert f.num_params == sum(p.numel() for p in model.parameters())
    assert model.supports_gradient_checkpointing
    leaf_names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    assert set(m.lora_target_modules) <= leaf_names


def test_chat_template_wraps_the_data_template():
    """``model.use_chat_template``: the data template is the user turn, the system prompt
    comes first, and the prompt ends where the assistant starts (Qwen's ChatML layout)."""
    from critic_free_rl.data.chat import chat_prompt
    from critic_free_rl.models.tiny import build_char_tokenizer

    tok = build_char_tokenizer()
    tok.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                         "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    tc = _compose("model=qwen2.5-math-7b-instruct", "data=gsm8k")
    user = tc.data.prompt_template.format(question="What is 2 + 3?")
    prompt = chat_prompt(tok, user, tc.model.system_prompt)
    assert prompt.startswith(f"<|im_start|>system\n{tc.model.system_prompt}<|im_end|>\n<|im_start|>user\n{user}")
    assert prompt.endswith("<|im_end|>\n<|im_start|>assistant\n")
    exp = _compose("experiment=ppo_pr_clip_delta")
    assert exp.data.prompt_template == "{question}" and exp.model.use_chat_template


def test_prm_presets():
    q = _compose("reward=pr_clip_delta", "prm=qwen2.5-math-prm-7b").reward
    assert (q.prm, q.prm_kind, q.prm_separator, q.prm_trust_remote_code) == ("Qwen/Qwen2.5-Math-PRM-7B", "token_cls", "<extra_0>", True)
    assert q.step_split == "blank_line" and q.shaping == "clip_delta"  # the reward group keeps the shaping
    s = _compose("reward=pr", "prm=math-shepherd").reward
    assert (s.prm, s.prm_kind, s.step_tag, s.prm_separator) == ("peiyi9979/math-shepherd-mistral-7b-prm", "tag_lm", "ки", "ки")
    assert (s.prm_positive_token, s.prm_negative_token) == ("+", "-")


def test_prm_preset_figures_count_the_real_architectures():
    """``reward.prm_figures`` (read by ``critic-free-rl plan``) built on the meta device: the
    Qwen2.5-Math-PRM backbone plus its two-layer score head, and Mistral-7B for Math-Shepherd."""
    from torch import nn
    from transformers import MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2Model

    q = _compose("reward=pr", "prm=qwen2.5-math-prm-7b").reward.prm_figures
    s = _compose("reward=pr", "prm=math-shepherd").reward.prm_figures
    with torch.device("meta"):
        backbone = Qwen2Model(Qwen2Config(vocab_size=q.vocab_size, hidden_size=q.hidden_size, intermediate_size=q.intermediate_size,
                                          num_hidden_layers=q.num_layers, num_attention_heads=q.num_heads, num_key_value_heads=q.num_kv_heads))
        head = nn.Sequential(nn.Linear(q.hidden_size, q.hidden_size), nn.ReLU(), nn.Linear(q.hidden_size, 2))
        mistral = MistralForCausalLM(MistralConfig(vocab_size=s.vocab_size, hidden_size=s.hidden_size, intermediate_size=s.intermediate_size,
                                                   num_hidden_layers=s.num_layers, num_attention_heads=s.num_heads, num_key_value_heads=s.num_kv_heads))
    assert q.num_params == sum(p.numel() for m in (backbone, head) for p in m.parameters())
    assert s.num_params == sum(p.numel() for p in mistral.parameters())


_REMOTE_PRM = '''
import torch
from torch import nn
from transformers import Qwen2Config, Qwen2Model, Qwen2PreTrainedModel


class StandInProcessRewardModel(Qwen2PreTrainedModel):
    """The layout of Qwen2ForProcessRewardModel: backbone + a 2-layer score head, tuple output."""
    config_class = Qwen2Config

    def __init__(self, config):
        super().__init__(config)
        self.model = Qwen2Model(config)
        self.score = nn.Sequential(nn.Linear(config.hidden_size, config.hidden_size), nn.ReLU(), nn.Linear(config.hidden_size, 2))
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        return (self.score(self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state),)
'''


def test_remote_code_token_cls_prm_loads_its_own_head(tmp_path):
    """A PRM whose class is registered only as ``AutoModel`` (auto_map), like
    Qwen2.5-Math-PRM: with ``prm_trust_remote_code`` its trained head is used (scores equal
    a direct forward); the token-classification loader would have put a random head on it."""
    import importlib.util
    import sys

    from critic_free_rl.models.tiny import build_char_tokenizer, tiny_qwen2_config
    from critic_free_rl.rewards.prm import ProcessRewardModel

    d = tmp_path / "prm"
    d.mkdir()
    (d / "modeling_standin.py").write_text(_REMOTE_PRM)
    spec = importlib.util.spec_from_file_location("modeling_standin", d / "modeling_standin.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["modeling_standin"] = mod
    spec.loader.exec_module(mod)
    tok = build_char_tokenizer(extra_tokens=["<extra_0>"])
    cfg = tiny_qwen2_config(len(tok), num_layers=1, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = mod.StandInProcessRewardModel(cfg).eval()
    model.config.auto_map = {"AutoModel": "modeling_standin.StandInProcessRewardModel"}
    model.save_pretrained(d)
    tok.save_pretrained(d)
    config = json.loads((d / "config.json").read_text())
    assert "AutoModelForTokenClassification" not in config["auto_map"]

    prm = ProcessRewardModel(str(d), "token_cls", "<extra_0>", device="cpu", trust_remote_code=True)
    assert type(prm.model).__name__ == "StandInProcessRewardModel"
    scores = prm.score(["What is 2 + 3?\n"], [["2 + 3 = 5", "The answer is 5"]])
    ids, pos = prm.build_inputs(["What is 2 + 3?\n"], [["2 + 3 = 5", "The answer is 5"]])
    with torch.no_grad():
        direct = model(input_ids=torch.tensor(ids))[0][0, pos[0]].softmax(-1)[:, 1]
    assert torch.allclose(torch.tensor(scores[0]), direct, atol=1e-5)


def test_data_presets_read_local_rows_in_hub_format(tmp_path):
    from critic_free_rl.data.datasets import load_examples

    math = _compose("data=math").data
    assert (math.path, math.question_field, math.answer_field, math.answer_format) == ("DigitalLearningGmbH/MATH-lighteval", "problem", "solution", "boxed")
    rows = [{"problem": "Compute $1+1$.", "solution": "We have $1+1=\\boxed{2}$.", "level": "Level 1", "type": "Algebra"},
            {"problem": "Find $x$ if $2x=1$.", "solution": "So $x=\\boxed{\\frac{1}{2}}$.", "level": "Level 2", "type": "Algebra"}]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    ex = load_examples(_compose("data=math", f"data.path={tmp_path}").data, "train")
    assert [e.reference for e in ex] == ["2", "\\frac{1}{2}"] and ex[0].prompt.startswith("Problem: Compute $1+1$.")
    for name in ("gsm8k", "math500"):  # the local copies in ../shared/data use the hub fields
        if not (SHARED_DATA / name).is_dir():
            pytest.skip(f"{SHARED_DATA / name} not present")
        d = _compose(f"data={name}", f"data.path={SHARED_DATA / name}", "data.max_test_rows=5", "data.max_train_rows=5").data
        assert len(load_examples(d, d.test_split)) == 5


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_experiment_presets_match_the_paper(name):
    reward, shaping = EXPERIMENTS[name]
    tc = _compose(f"experiment={name}")
    assert tc.model.name_or_path == "Qwen/Qwen2.5-Math-7B-Instruct"
    assert tc.algorithm.name == "ppo" and tc.algorithm.use_critic and tc.algorithm.estimator == "gae"
    assert tc.algorithm.kl_coef == 0.1 and tc.reward.success_coef == 5.0 and tc.trainer.weight_decay == 0.05
    assert tc.reward.name == reward and tc.data.name == "math"
    if shaping is None:
        assert tc.reward.dense_coef == 0.0 and tc.reward.prm is None
    else:
        assert tc.reward.shaping == shaping and tc.reward.dense_coef == 1.0
        assert tc.reward.prm == "Qwen/Qwen2.5-Math-PRM-7B" and tc.reward.prm_separator == "<extra_0>"
    # overridable like any preset
    assert _compose(f"experiment={name}", "model=qwen2.5-math-1.5b-instruct", "trainer.num_ranks=4").model.name_or_path.endswith("1.5B-Instruct")
