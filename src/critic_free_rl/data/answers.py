"""Reference answers inside a dataset's answer field (GSM8K ``#### `` lines, MATH ``\\boxed{}``)."""
from __future__ import annotations

from latex2sympy2_extended.math_normalization import extract_boxed_content

#: the ``data.answer_format`` values :func:`parse_reference` reads
REFERENCE_FORMATS = ("gsm8k", "boxed", "raw")


def parse_reference(text: str, fmt: str) -> str:
    """The reference answer inside a dataset's answer field.

    ``gsm8k``: the line after the last ``#### `` with thousands commas removed;
    ``boxed``: the content of the last ``\\boxed{}`` (a MATH solution); ``raw``: ``text``
    stripped. Raises ``ValueError`` when the marker the format needs is absent.
    """
    if fmt == "gsm8k":
        if "#### " not in text:
            raise ValueError("gsm8k answer has no '#### ' final-answer line")
        return text.rsplit("#### ", 1)[1].strip().split("\n", 1)[0].replace(",", "").strip()
    if fmt == "boxed":
        if "\\boxed" not in text and "\\fbox" not in text:
            raise ValueError("answer has no \\boxed{} to read the reference from")
        return extract_boxed_content(text, mode="last").strip()
    if fmt == "raw":
        return text.strip()
    raise ValueError(f"unknown reference format {fmt!r}; expected one of {REFERENCE_FORMATS}")
