"""Reasoning-step segmentation and the step -> response-token map.

A completion is cut into steps by one of :data:`SPLITTERS`:

- ``line``: one step per non-empty line;
- ``blank_line``: blocks separated by one or more blank lines;
- ``step_prefix``: a new step starts at each line beginning with ``Step <k>:`` (or
  ``Step <k>.``, any case); text before the first prefix is a step of its own;
- ``tag``: steps end at each occurrence of a tag string (a PRM's own step tag).

Step texts are stripped of surrounding whitespace; whitespace-only pieces are dropped, so
an empty completion has zero steps and a completion without any separator is one step.
At most ``max_steps`` steps are returned: everything from the ``max_steps``-th step on
is merged into the last one, which keeps the work bounded and the last step ending
where the answer is.

Each step's reward goes on the response token holding the step's last character. The
map is computed from the response token ids themselves (not by re-tokenising), via
cumulative decoded lengths built once per sample, so it is exact for tokens that
straddle a separator (``".\\n\\n"``) and for any tokenizer.
"""
from __future__ import annotations

import re
from typing import NamedTuple, Optional

import numpy as np
from transformers import PreTrainedTokenizerBase

SPLITTERS = ("line", "blank_line", "step_prefix", "tag")
DEFAULT_MAX_STEPS = 64
#: tokens of left context when measuring what one token adds to the decoded text
#: (covers a UTF-8 character split over up to 4 byte tokens, and SentencePiece spaces)
_DECODE_CONTEXT = 4

_BOUNDARIES = {
    "line": re.compile(r"\n\s*"),
    "blank_line": re.compile(r"\n[ \t\r\f\v]*\n\s*"),
    "step_prefix": re.compile(r"^[ \t]*(?=step\s*\d+\s*[:.])", re.IGNORECASE | re.MULTILINE),
}


class StepSpan(NamedTuple):
    """One step: its stripped text and its character span ``[start, end)`` in the completion."""

    text: str
    start: int
    end: int


def _boundary(mode: str, tag: Optional[str]) -> re.Pattern[str]:
    if mode == "tag":
        if not tag:
            raise ValueError("reward.step_tag must be set when reward.step_split is 'tag'")
        return re.compile(re.escape(tag))
    if mode not in _BOUNDARIES:
        raise ValueError(f"unknown reward.step_split {mode!r}; expected one of {SPLITTERS}")
    return _BOUNDARIES[mode]


def _append_piece(spans: list[StepSpan], text: str, start: int, end: int) -> None:
    piece = text[start:end]
    body = piece.strip()
    if body:
        first = start + len(piece) - len(piece.lstrip())
        spans.append(StepSpan(body, first, first + len(body)))


def split_steps(text: str, mode: str = "line", tag: Optional[str] = None,
                max_steps: int = DEFAULT_MAX_STEPS) -> list[StepSpan]:
    """Cut ``text`` into at most ``max_steps`` steps (see the module docstring)."""
    if max_steps < 1:
        raise ValueError("reward.max_steps must be >= 1")
    spans: list[StepSpan] = []
    start = 0
    for match in _boundary(mode, tag).finditer(text):
        if len(spans) == max_steps - 1:
            break
        _append_piece(spans, text, start, match.start())
        start = match.end()
    _append_piece(spans, text, start, len(text))
    return spans


def token_char_ends(response_ids: list[int], tokenizer: PreTrainedTokenizerBase) -> np.ndarray:
    """``[T]`` int64: characters of ``decode(response_ids[:t + 1])`` for every ``t``.

    Each token's contribution is ``len(decode(ctx + [tok])) - len(decode(ctx))`` with
    ``ctx`` the :data:`_DECODE_CONTEXT` tokens before it, all in one ``batch_decode``
    (O(T) work). Special tokens decode to nothing (``skip_special_tokens``), matching a
    completion detokenised the usual way; a character split over several byte tokens
    counts on its first one.
    """
    T = len(response_ids)
    if T == 0:
        return np.zeros(0, dtype=np.int64)
    before = [response_ids[max(0, t - _DECODE_CONTEXT):t] for t in range(T)]
    through = [response_ids[max(0, t - _DECODE_CONTEXT):t + 1] for t in range(T)]
    texts = tokenizer.batch_decode(before + through, skip_special_tokens=True,
                                   clean_up_tokenization_spaces=False)
    lengths = np.fromiter(map(len, texts), dtype=np.int64, count=2 * T)
    return np.cumsum(np.maximum(lengths[T:] - lengths[:T], 0))


def step_end_tokens(spans: list[StepSpan], char_ends: np.ndarray) -> list[int]:
    """Index of the response token holding each step's last character.

    ``char_ends`` is :func:`token_char_ends`'s ``[T]`` output. A step ending past the
    decoded text (completion and ids disagree) maps to the last token; with no tokens
    the result is empty.
    """
    if not spans or len(char_ends) == 0:
        return []
    last_chars = np.fromiter((s.end - 1 for s in spans), dtype=np.int64, count=len(spans))
    idx = np.searchsorted(char_ends, last_chars, side="right")
    return np.minimum(idx, len(char_ends) - 1).tolist()


def locate_step_ends(spans: list[StepSpan], response_ids: list[int],
                     tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """:func:`step_end_tokens` for the completion decoded from ``response_ids``."""
    if not spans:
        return []
    return step_end_tokens(spans, token_char_ends(response_ids, tokenizer))
