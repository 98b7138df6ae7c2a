"""``model.use_chat_template``: wrap each prompt in the policy tokenizer's chat template.

The data preset's ``prompt_template`` still builds the user message; the chat template adds
the system turn (``model.system_prompt``, or the template's own default when null) and the
assistant header, so the policy (and the PRM, which reads the prompt verbatim) see the
format an instruct model was tuned on.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Optional

from critic_free_rl.data.datasets import Example


def chat_prompt(tokenizer, user: str, system_prompt: Optional[str] = None) -> str:
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("model.use_chat_template=true but the policy tokenizer has no chat_template")
    messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [{"role": "user", "content": user}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def apply_chat_template(examples: list[Example], tokenizer, system_prompt: Optional[str] = None) -> list[Example]:
    """``examples`` with ``prompt`` replaced by its chat-formatted version."""
    return [replace(e, prompt=chat_prompt(tokenizer, e.prompt, system_prompt)) for e in examples]
