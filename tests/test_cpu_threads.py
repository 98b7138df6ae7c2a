"""CPU thread sizing (config/environment.py): processes that run at once never hold more
threads than the cores they share. The real 2-job ``compare`` check is in
test_compare_smoke.py (each run's ``cpu_threads`` from its summary.json)."""
from __future__ import annotations

import os

import pytest

from critic_free_rl.config.environment import THREADS_VAR, cpu_thread_env, process_cpu_threads


@pytest.fixture
def two_cores(monkeypatch):
    """A process whose affinity mask holds 2 cores, no thread budget set, not a launched rank."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.delenv(THREADS_VAR, raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)


def test_processes_at_once_never_oversubscribe_their_cores():
    """Catches a sizing that gives each process every core (one thread per core in each of
    ``compare``'s jobs: 10-20x slower on 2 cores) or wastes cores it could use."""
    for cores in range(1, 17):
        for procs in range(1, cores + 1):
            threads = process_cpu_threads(procs, cores=cores)
            assert 1 <= threads and threads * procs <= cores < (threads + 1) * procs, (cores, procs, threads)
    assert process_cpu_threads(3, cores=2) == 1  # more processes than cores: one thread each
    with pytest.raises(ValueError, match="processes=0"):
        process_cpu_threads(0, cores=2)


def test_budget_comes_from_the_affinity_mask_not_the_machine(two_cores, monkeypatch):
    """Catches ``os.cpu_count()`` (the whole machine) where taskset / a cpuset allows fewer cores."""
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert process_cpu_threads() == 2 and process_cpu_threads(2) == 1


def test_compare_job_budget_is_divided_among_its_ranks_once(two_cores, monkeypatch):
    """compare -> train -> ranks: the budget compare gives a job (OMP_NUM_THREADS) is divided
    among the job's ranks by the command, and kept whole inside a launched rank (a second
    division would starve it; none would oversubscribe)."""
    from critic_free_rl.cli.launching import job_env

    assert job_env(2)[THREADS_VAR] == "1"  # 2 jobs on 2 cores
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    assert job_env(4)[THREADS_VAR] == "4"  # 4 jobs on 16 cores
    command = cpu_thread_env(ranks_per_node=2, budget=4)  # one job of 2 ranks
    assert command[THREADS_VAR] == "2"
    monkeypatch.setenv("LOCAL_RANK", "1")  # the rank's own set-up reads what the command set
    assert cpu_thread_env(ranks_per_node=2, budget=int(command[THREADS_VAR]))[THREADS_VAR] == "2"


def test_vllm_never_pins_two_processes_to_the_same_cores(two_cores, monkeypatch):
    """vLLM's automatic CPU binding pins every process of a node to the same cores; the
    environment turns it off unless the user chose a binding."""
    assert cpu_thread_env(budget=2)["VLLM_CPU_OMP_THREADS_BIND"] == "nobind"
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0")
    assert cpu_thread_env(budget=2)["VLLM_CPU_OMP_THREADS_BIND"] == "0"
