"""planlab sweep: grid rows, resumability, validation before running, rate scaling and the
max-rate bisection."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from tiny_scenario import tiny_yaml

from planlab.cli import main as cli_main
from planlab.runner import run_scenario
from planlab.sweep import find_max_rate, scale_scenario, scale_workload, split_values, sweep
from planner.errors import ConfigError
from scenario import (
    ArrivalSpec,
    ClosedLoopSpec,
    PiecewiseRate,
    SineRate,
    SpikeRate,
    StepRate,
    TraceSpec,
    WorkloadSpec,
    load_scenario,
)

TINY = tiny_yaml(seed=2, rate="4.0", planner="{policy: static, interval: 30s, predictor: constant}")


@pytest.fixture
def scenario(tmp_path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return path


def test_sweep_rows_and_resume(scenario, tmp_path):
    out = tmp_path / "sw"
    df = sweep(scenario, [("cluster.prefill.replicas", ["1", "2"])], out, jobs=1)
    csv = pd.read_csv(out / "sweep.csv")
    assert len(csv) == 2 and list(csv["cluster.prefill.replicas"]) == [1, 2]
    assert not csv["reused"].any()
    for _, r in csv.iterrows():
        run = Path(r["run_dir"])
        used = yaml.safe_load((run / "scenario.yaml").read_text())
        assert used["cluster"]["prefill"]["replicas"] == r["cluster.prefill.replicas"]
        summary = json.loads((run / "summary.json").read_text())
        assert r["gpu_hours"] == pytest.approx(summary["gpu_hours"]["total"])
        # a static cluster holds (P + 1 decode) GPUs from 0 to the end of the run
        gpus = r["cluster.prefill.replicas"] + 1
        assert r["gpu_hours"] == pytest.approx(gpus * summary["extra"]["end_s"] / 3600)
    assert (out / "plots" / "sweep.png").is_file()

    stamps = [(Path(d) / "summary.json").stat().st_mtime_ns for d in df["run_dir"]]
    again = sweep(scenario, [("cluster.prefill.replicas", ["1", "2"])], out, jobs=1)
    assert again["reused"].all()
    assert [(Path(d) / "summary.json").stat().st_mtime_ns for d in again["run_dir"]] == stamps
    assert list(again["joint_attainment"]) == pytest.approx(list(df["joint_attainment"]))


def test_bad_set_key_exits_2_naming_it(scenario, tmp_path, capsys):
    out = tmp_path / "sw"
    rc = cli_main(["sweep", str(scenario), "--set", "planner.intervl=30s,60s", "--out", str(out)])
    assert rc == 2
    assert "planner.intervl" in capsys.readouterr().err
    assert not out.exists()
    rc = cli_main(["sweep", str(scenario), "--set", "planner.interval=30s,-1s", "--out", str(out)])
    assert rc == 2 and "planner.interval" in capsys.readouterr().err
    assert not out.exists()


def test_split_values_keeps_brackets_together():
    assert split_values("30s, 60s") == ["30s", "60s"]
    assert split_values("[[0,1],[60,2]],3") == ["[[0,1],[60,2]]", "3"]


def test_scale_workload_multiplies_every_rate():
    shapes = [
        PiecewiseRate(((0.0, 1.0), (60.0, 3.0))),
        SineRate(mean=2.0, amplitude=1.0, period_s=100.0),
        StepRate(before=1.0, after=5.0, at_s=30.0),
        SpikeRate(base=1.0, peak=4.0, at_s=10.0, duration_s=20.0),
    ]
    for shape in shapes:
        spec = WorkloadSpec(arrival=ArrivalSpec(process="poisson", rate=shape))
        scaled = scale_workload(spec, 2.5).arrival.rate
        for t in (0.0, 15.0, 25.0, 45.0, 70.0):
            assert scaled.rate_at(t) == pytest.approx(2.5 * shape.rate_at(t))
    trace = WorkloadSpec(trace=TraceSpec(path=Path("x.csv"), format="azure", rate_scale=0.5))
    assert scale_workload(trace, 3.0).trace.rate_scale == pytest.approx(1.5)
    with pytest.raises(ConfigError, match="closed-loop"):
        scale_workload(WorkloadSpec(closed_loop=ClosedLoopSpec(users=3)), 2.0)


def test_bisection_on_a_known_threshold(scenario):
    """A fake evaluation that meets the target up to scale 3.3 exactly."""
    base = load_scenario(scenario)

    def evaluate(s):
        rate = s.workload.arrival.rate.rate_at(0.0)
        joint = 0.99 if rate <= 4.0 * 3.3 else 0.5
        return {"attainment": {"joint": joint}, "requests": {"arrived": int(rate * 120)},
                "duration_s": 120.0}  # fmt: skip

    r = find_max_rate(base, tolerance=0.01, evaluate=evaluate)
    assert 3.3 / 1.01 <= r.scale <= 3.3 < r.upper_scale <= r.scale * 1.01
    assert [s["scale"] for s in r.steps[:3]] == [1.0, 2.0, 4.0]


def test_max_rate_on_a_tiny_scenario(scenario):
    base = load_scenario(scenario)
    tol = 0.05
    r = find_max_rate(base, tolerance=tol)
    assert r.scale is not None and r.attainment >= r.target
    assert r.upper_scale is not None and r.upper_scale <= r.scale * (1 + tol)
    # re-run both ends independently: the bracket is real
    ok = run_scenario(scale_scenario(base, r.scale), write=False).summary
    miss = run_scenario(scale_scenario(base, r.upper_scale), write=False).summary
    assert ok["attainment"]["joint"] >= 0.95 > miss["attainment"]["joint"]
    assert r.rate_rps == pytest.approx(ok["requests"]["arrived"] / 120.0)
