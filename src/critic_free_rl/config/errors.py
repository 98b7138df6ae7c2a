"""The start-up error type of the config checks and its closed-set helper."""
from __future__ import annotations

from typing import Collection


class ConfigError(ValueError):
    """A configuration that cannot run (names the key and, where closed, the valid choices)."""


def choice(key: str, value: object, valid: Collection[object]) -> None:
    """Raise :class:`ConfigError` unless ``value`` is one of ``valid``."""
    if value not in valid:
        raise ConfigError(f"{key}={value!r} is not valid; valid choices: {sorted(valid)}")
