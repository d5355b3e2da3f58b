"""A 200-run study (tiny two-minute scenarios: 2 policies x 100 seeds) in local processes
(`--jobs 2`) and on a LocalCluster of 2 Dask workers (`--cluster local --jobs 2`), with the
overhead per task that Dask adds, and the bytes a task sends and receives.

Target (issue 15): the overhead per task stays small against a simulation's seconds. Run
with `python -m pytest benchmarks/test_distributed_bench.py -s` (it prints the figures).
"""

from __future__ import annotations

import pickle
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "planlab"))

from tiny_scenario import tiny_yaml  # noqa: E402

import planlab.compare as cmp  # noqa: E402
from planlab.distributed import Backend  # noqa: E402
from scenario import load_scenario  # noqa: E402

pytest.importorskip("distributed", reason="dask.distributed is not installed (planlab[dask])")

SEEDS = 100
POLICIES = ["static", "dynamo"]
_WALL: dict[str, float] = {}


@pytest.fixture(scope="module")
def scenario(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bench") / "tiny.yaml"
    path.write_text(tiny_yaml(seed=1))
    return path


def _study(scenario: Path, out: Path, backend: Backend) -> None:
    t0 = time.perf_counter()
    df = cmp.compare([scenario], POLICIES, SEEDS, out, backend=backend)
    key = backend.cluster or "processes"
    _WALL[key] = time.perf_counter() - t0
    runs = df[df["kind"] == "run"]
    assert len(runs) == SEEDS * len(POLICIES) and (runs["status"] == "ok").all()


@pytest.mark.benchmark(group="distributed")
def test_200_runs_processes(benchmark, scenario, tmp_path):
    benchmark.pedantic(
        _study, args=(scenario, tmp_path / "p", Backend(jobs=2)), rounds=1, iterations=1
    )


@pytest.mark.benchmark(group="distributed")
def test_200_runs_dask_local(benchmark, scenario, tmp_path):
    benchmark.pedantic(
        _study,
        args=(scenario, tmp_path / "d", Backend(jobs=2, cluster="local")),
        rounds=1,
        iterations=1,
    )
    out = tmp_path / "d" / "runs"
    sizes = [sum(f.stat().st_size for f in d.iterdir()) for d in out.iterdir()]
    sc = load_scenario(scenario)
    sent = len(pickle.dumps((cmp._run_one, (sc, "dynamo", 1, out / "x", False))))
    n = SEEDS * len(POLICIES)
    print(
        f"\n{n} runs: processes {_WALL.get('processes', float('nan')):.1f} s, "
        f"dask local {_WALL['local']:.1f} s "
        f"(overhead {(_WALL['local'] - _WALL.get('processes', float('nan'))) / n * 1000:.0f} "
        f"ms per task with 2 workers, cluster start included); per task "
        f"{sent / 1024:.1f} KiB sent, {sum(sizes) / len(sizes) / 1024:.0f} KiB of run files back"
    )


def _noop(i: int) -> int:
    return i


@pytest.mark.benchmark(group="distributed-overhead")
@pytest.mark.parametrize("cluster", [None, "local"])
def test_200_empty_tasks(benchmark, cluster):
    """The bare cost of a task (no simulation), cluster start and stop included."""
    from planlab.distributed import run_tasks

    backend = Backend(jobs=2, cluster=cluster)

    def study() -> list[int]:
        return list(run_tasks(_noop, [(i,) for i in range(200)], backend))

    assert benchmark.pedantic(study, rounds=1, iterations=1) == list(range(200))
