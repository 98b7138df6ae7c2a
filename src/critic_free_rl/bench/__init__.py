"""Step-time benchmark support (``scripts/bench_step.py``): model builders and the
per-trainer worker processes. Not imported by the trainer; TRL is only needed by the
``trl`` workers (``pip install -e .[bench]`` / ``scripts/install.sh --bench``)."""
