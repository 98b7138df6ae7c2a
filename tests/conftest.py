"""Shared fixtures: a tiny random Qwen2 with the char tokenizer, the ../shared data folder,
and an environment that keeps vLLM in-process, DeepSpeed on CPU and caches in tmp."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import DictConfig

from critic_free_rl.config.environment import setup_environment

os.environ.setdefault("DS_ACCELERATOR", "cpu")  # tests run on CPU, even beside a GPU
setup_environment()  # a run's environment: in-process vLLM, the venv's torch extensions

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A randomly initialised tiny Qwen2 causal LM + char tokenizer (save_pretrained)."""
    from critic_free_rl.models.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=0)


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv("CFRL_CACHE", str(d))
    return d


@pytest.fixture(autouse=True, scope="module")
def _fresh_world_env():
    """In-process tests (``init_world``) set the rendezvous variables and keep the port;
    restore them after each test module so the processes later tests start pick their own."""
    keys = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    saved = {k: os.environ.get(k) for k in keys}
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def run_cli(*args: str, cwd: Path | None = None, timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``critic-free-rl ARGS`` in a fresh process (as a user would)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "critic_free_rl.cli", *args], cwd=cwd or REPO, capture_output=True, text=True, timeout=timeout, env=full_env)


def compose_train(*overrides: str) -> DictConfig:
    """The ``train`` config composed from ``configs/`` with Hydra overrides, as the CLI
    would compose it (a ``DictConfig``; ``config.loading.to_train_config`` validates it)."""
    from critic_free_rl.config.loading import compose

    return compose(list(overrides))

# shared CI machines stall processes unpredictably: property tests assert behaviour, not speed
from hypothesis import settings as _hyp_settings  # noqa: E402

_hyp_settings.register_profile("ci", deadline=None)
_hyp_settings.load_profile("ci")
