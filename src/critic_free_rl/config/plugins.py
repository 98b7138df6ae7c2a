"""``plugins:``: modules imported at start-up, before validation, so that what they register
(an estimator, with its declared needs) is known to every process of a run.

An entry is a dotted module name importable from ``sys.path`` (``my_lab.estimators``) or
the path of a ``.py`` file (absolute, or relative to the directory the command starts in;
the ranks start there too). Importing twice in one process is a no-op.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path

from critic_free_rl.config.errors import ConfigError


def import_plugins(entries: list[str]) -> None:
    """Import every entry of ``plugins`` (see the module docstring); a ConfigError names a missing one."""
    for entry in entries:
        if entry.endswith(".py") or "/" in entry:
            _import_file(entry)
        else:
            _import_module(entry)


def _import_module(name: str) -> None:
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not (name == exc.name or name.startswith(exc.name + ".")):
            raise  # the plugin exists but one of its own imports is missing
        raise ConfigError(f"plugins: cannot import module {name!r} (no module named {exc.name!r} on sys.path)") from exc


def _import_file(entry: str) -> None:
    path = Path(entry).expanduser().resolve()
    if not path.is_file():
        raise ConfigError(f"plugins: {entry!r}: no such file ({path})")
    # one module per file, whatever path spelling names it
    name = f"critic_free_rl_plugin_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
    if name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
