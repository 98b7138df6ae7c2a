#!/usr/bin/env bash
# GPU check for a single-GPU machine, offline, at most 5 minutes: 10 GRPO steps with
# PR-Clip-Delta rewards on a randomly initialised policy shaped like the 1.5B preset and a
# small random token-classification PRM, printing the update's MFU, generation tokens/s and
# peak GPU memory next to what `critic-free-rl plan` predicts (scripts/gpu_check.py).
#   bash scripts/gpu_check.sh            # on the GPU machine
#   bash scripts/gpu_check.sh --dry-run  # CPU: config + plan only (CI runs this)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec timeout "${GPU_CHECK_TIMEOUT_S:-300}" "$PY" scripts/gpu_check.py "$@"
