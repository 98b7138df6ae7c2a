"""Step segmentation and the step -> token map, including BPE tokens that straddle separators."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from critic_free_rl.models.tiny import build_char_tokenizer
from critic_free_rl.rewards.steps import locate_step_ends, split_steps, token_char_ends

EXAMPLE = "17 + 25 = 42\n42 - 8 = 34\n34 + 4 = 38\n\\boxed{38}"
PROSE = "First add the numbers.\n\nThen subtract é€.\n\nSo the answer is 38."


@pytest.fixture(scope="module")
def bpe_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE trained here without pre-splitting, so merges cross newlines (``"s.\\n\\n"``)."""
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tk.decoder = decoders.ByteLevel()
    corpus = [PROSE + "\n\n", "12 + 5 = 17.\n\n17 - 3 = 14.\n\n"] * 30
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<eos>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<eos>")


def texts(text: str, mode: str, **kw) -> list[str]:
    return [s.text for s in split_steps(text, mode, **kw)]


def test_splitters_on_hand_examples() -> None:
    assert texts(EXAMPLE, "line") == ["17 + 25 = 42", "42 - 8 = 34", "34 + 4 = 38", "\\boxed{38}"]
    assert texts("a\n  \n\nb\r\n c ", "line") == ["a", "b", "c"]
    assert texts("a\nb\n\n \n\nc\nd", "blank_line") == ["a\nb", "c\nd"]
    assert texts("Intro\nStep 1: x\ny\nstep 2. z\nnot Step 3: inline", "step_prefix") == [
        "Intro", "Step 1: x\ny", "step 2. z\nnot Step 3: inline"]
    assert texts("a ки b ки\nc ки ", "tag", tag="ки") == ["a", "b", "c"]


@pytest.mark.parametrize("mode", ["line", "blank_line", "step_prefix"])
def test_empty_blank_and_separator_free_completions(mode: str) -> None:
    assert split_steps("", mode) == []
    assert split_steps(" \n\n\t ", mode) == []
    assert texts("  just one answer \\boxed{3}  ", mode) == ["just one answer \\boxed{3}"]


def test_spans_index_the_completion() -> None:
    for span in split_steps(PROSE, "blank_line"):
        assert PROSE[span.start:span.end] == span.text


def test_max_steps_merges_the_tail_into_the_last_step() -> None:
    text = "\n".join(f"{i} + 1 = {i + 1}" for i in range(5000))
    spans = split_steps(text, "line", max_steps=5)
    assert len(spans) == 5
    assert spans[3].text == "3 + 1 = 4"
    assert spans[4].start == text.index("4 + 1 = 5") and spans[4].end == len(text)


def test_bad_splitter_config() -> None:
    with pytest.raises(ValueError, match="step_tag"):
        split_steps("a", "tag")
    with pytest.raises(ValueError, match="step_split"):
        split_steps("a", "sentence")


def test_char_tokenizer_maps_steps_to_their_last_character() -> None:
    tok = build_char_tokenizer()
    ids = tok(EXAMPLE, add_special_tokens=False).input_ids + [tok.eos_token_id]
    spans = split_steps(EXAMPLE, "line")
    assert locate_step_ends(spans, ids, tok) == [s.end - 1 for s in spans] == [11, 23, 35, 46]
    assert token_char_ends(ids, tok)[-1] == len(EXAMPLE)  # EOS adds no characters


def _assert_each_step_end_holds_its_last_char(text: str, tok: PreTrainedTokenizerFast, mode: str) -> list[int]:
    ids = tok.encode(text)
    spans = split_steps(text, mode)
    ends = locate_step_ends(spans, ids, tok)
    for span, t in zip(spans, ends, strict=True):
        assert len(tok.decode(ids[:t])) <= span.end - 1 < len(tok.decode(ids[:t + 1]))
    return ends


def test_bpe_tokens_straddling_the_separator(bpe_tokenizer: PreTrainedTokenizerFast) -> None:
    ids = bpe_tokenizer.encode(PROSE)
    pieces = [bpe_tokenizer.decode([i]) for i in ids]
    assert any("\n\n" in p and p.strip() for p in pieces), "the tokenizer must merge across the separator"
    slow = [len(bpe_tokenizer.decode(ids[:t + 1])) for t in range(len(ids))]  # O(T^2) reference
    assert token_char_ends(ids, bpe_tokenizer).tolist() == slow
    ends = _assert_each_step_end_holds_its_last_char(PROSE, bpe_tokenizer, "blank_line")
    assert "\n\n" in bpe_tokenizer.decode([ids[ends[0]]])  # step 1 ends inside "s.\n\n"


@given(st.lists(st.text(alphabet="abé€ 1+=.\n", min_size=1, max_size=15), min_size=1, max_size=8),
       st.sampled_from(["line", "blank_line"]))
@settings(max_examples=60, deadline=None)
def test_bpe_step_ends_property(bpe_tokenizer: PreTrainedTokenizerFast, lines: list[str], mode: str) -> None:
    _assert_each_step_end_holds_its_last_char("\n".join(lines), bpe_tokenizer, mode)
