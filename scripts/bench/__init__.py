"""Step-time benchmark support (``scripts/bench_step.py``): model builders and the
per-trainer worker processes. Outside the package: nothing in the library imports it. TRL
is only needed by the ``trl`` workers (``pip install -e .[bench]`` / ``scripts/install.sh --bench``)."""
