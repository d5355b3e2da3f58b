"""The results directory: summary numbers by hand, file formats, atomic writing, reading back."""

from __future__ import annotations

import json
import math
from datetime import datetime

import numpy as np
import pandas as pd
import pytest

from planlab.results import (
    REQUEST_COLUMNS,
    TIMELINE_COLUMNS,
    compute_summary,
    default_run_dir,
    read_run,
    write_run,
)
from planner.errors import ConfigError
from planner.observation import WindowStats, build_observation
from planner.types import Decision, DecisionRecord, ReplicaState, RoleState
from scenario import SLASpec

NAN = math.nan


def _requests() -> pd.DataFrame:
    # SLA 200 ms TTFT, 20 ms ITL. Row by row:
    # 0 meets both; 1 misses TTFT; 2 misses ITL; 3 has one output token (no TPOT: ITL met);
    # 4 failed and 6 timed out (miss all); 5 still in flight (left out of attainment).
    return pd.DataFrame(
        {
            "id": [0, 1, 2, 3, 4, 5, 6],
            "arrival_s": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            "isl": [100, 100, 100, 100, 100, 100, 100],
            "osl": [10, 10, 10, 1, 10, 10, 10],
            "ttft_ms": [50.0, 250.0, 100.0, 80.0, NAN, NAN, NAN],
            "tpot_ms": [10.0, 5.0, 30.0, NAN, NAN, NAN, NAN],
            "e2e_s": [0.14, 0.3, 0.37, 0.08, NAN, NAN, NAN],
            "prefill_worker": [0, 1, 0, 1, NAN, 0, NAN],
            "decode_worker": [2, 2, 3, 3, NAN, NAN, NAN],
            "status": ["ok", "ok", "ok", "ok", "failed", "in_flight", "timeout"],
            "error": ["", "", "", "", "worker died", "", "no token in 30 s"],
        }
    )


GPU_S = {
    "prefill": {"startup": 360.0, "serving": 3600.0, "drain": 0.0},
    "decode": {"startup": 720.0, "serving": 7200.0, "drain": 1800.0},
}


def _summary(**over) -> dict:
    kw = dict(
        sla=SLASpec(ttft_ms=200, itl_ms=20, target_attainment=0.99),
        duration_s=10.0,
        gpu_seconds=GPU_S,
        scaling_events=3,
        preemptions=2,
        wall_s=2.0,
        policy="dynamo",
        scenario_name="tiny",
    )
    kw.update(over)
    return compute_summary(_requests(), **kw)


def test_counts_and_attainment_by_hand():
    s = _summary()
    r = s["requests"]
    assert (r["arrived"], r["completed"], r["failed"], r["in_flight"]) == (7, 4, 2, 1)
    assert r["by_status"] == {"failed": 1, "in_flight": 1, "ok": 4, "timeout": 1}
    a = s["attainment"]
    # Six finished: TTFT met by 0, 2, 3; ITL by 0, 1, 3; both by 0 and 3.
    assert a["finished"] == 6
    assert a["ttft"] == pytest.approx(3 / 6)
    assert a["itl"] == pytest.approx(3 / 6)
    assert a["joint"] == pytest.approx(2 / 6)
    assert a["meets_target"] is False
    assert s["goodput_rps"] == pytest.approx(2 / 10)
    assert s["throughput_rps"] == pytest.approx(4 / 10)


def test_latency_statistics_by_hand():
    s = _summary()
    # TTFT of completed requests, sorted 50, 80, 100, 250; linear quantiles at ranks
    # 0.5*3 = 1.5, 0.9*3 = 2.7, 0.99*3 = 2.97.
    assert s["ttft_ms"] == pytest.approx({"mean": 120.0, "p50": 90.0, "p90": 205.0, "p99": 245.5})
    # TPOT of the three with one: 5, 10, 30; ranks 1, 1.8, 1.98.
    assert s["tpot_ms"] == pytest.approx({"mean": 15.0, "p50": 10.0, "p90": 26.0, "p99": 29.6})
    assert s["e2e_s"] == pytest.approx({"mean": 0.2225, "p50": 0.22, "p90": 0.349, "p99": 0.3679})


def test_gpu_hours_scaling_and_wall():
    s = _summary(extra={"note": "x"})
    g = s["gpu_hours"]
    assert g["prefill"] == pytest.approx(
        {"startup": 0.1, "serving": 1.0, "drain": 0.0, "total": 1.1}
    )
    assert g["decode"] == pytest.approx(
        {"startup": 0.2, "serving": 2.0, "drain": 0.5, "total": 2.7}
    )
    assert g["total"] == pytest.approx(3.8)
    assert s["goodput_per_gpu_hour"] == pytest.approx(2 / 3.8)
    assert (s["scaling_events"], s["preemptions"]) == (3, 2)
    assert s["wall"] == pytest.approx({"wall_s": 2.0, "sim_requests_per_wall_s": 3.5})
    assert s["extra"] == {"note": "x"}
    assert s["sla"] == {"ttft_ms": 200.0, "itl_ms": 20.0, "target_attainment": 0.99}


def test_no_finished_requests_gives_null_attainment():
    empty = _requests().iloc[[5]]
    s = compute_summary(
        empty,
        sla={"ttft_ms": 200, "itl_ms": 20, "target_attainment": 0.9},
        duration_s=10.0,
        gpu_seconds={},
        scaling_events=0,
        preemptions=0,
        wall_s=0.0,
        policy="static",
        scenario_name="e",
    )
    assert s["attainment"]["joint"] is None and s["attainment"]["meets_target"] is None
    assert s["ttft_ms"]["p99"] is None
    assert s["wall"]["sim_requests_per_wall_s"] is None
    json.dumps(s, allow_nan=False)  # nothing non-finite left


def _record(t_s: float) -> DecisionRecord:
    stats = WindowStats(t_s, 60.0, None, None, None, None, None, None, errors=("down",))
    state = ReplicaState(RoleState(1, 1), RoleState(2, 1, starting=1))
    return DecisionRecord(
        t_s=t_s,
        policy="dynamo",
        observation=build_observation(stats),
        decision=Decision(1, 2, "hold-missing", "metrics missing"),
        current=state,
        applied=False,
    )


def _timeline() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "t_s": [0.0, 60.0],
            "request_rate": [1.5, 2.25],
            "prefill_desired": [1, 1],
            "prefill_ready": [1, 1],
            "prefill_starting": [0, 0],
            "prefill_draining": [0, 0],
            "decode_desired": [1, 2],
            "decode_ready": [1, 1],
            "decode_starting": [0, 1],
            "decode_draining": [0, 0],
            "gpus": [2, 3],
            "predicted_num_req": [NAN, 120.0],
            "predicted_rate": [NAN, 2.0],
        }
    )


def _write(out, records=None, scenario=None, **kw):
    recs = [_record(60.0), {"t_s": 120.0, "x": NAN}] if records is None else records
    return write_run(out, _requests(), _timeline(), recs, _summary(), scenario=scenario, **kw)


def test_file_formats(tmp_path):
    out = _write(tmp_path / "run", scenario={"name": "tiny", "duration": 10.0})
    assert sorted(p.name for p in out.iterdir()) == [
        "decisions.jsonl",
        "requests.csv",
        "scenario.yaml",
        "summary.json",
        "timeline.csv",
    ]
    lines = (out / "requests.csv").read_text().splitlines()
    assert lines[0] == ",".join(REQUEST_COLUMNS)
    # Floats fixed at 6 decimals, integer ids stay integers, missing values are empty.
    assert lines[1] == "0,0.000000,100,10,50.000000,10.000000,0.140000,0,2,ok,"
    assert lines[4] == "3,3.000000,100,1,80.000000,,0.080000,1,3,ok,"
    assert lines[5] == "4,4.000000,100,10,,,,,,failed,worker died"
    tl = (out / "timeline.csv").read_text().splitlines()
    assert tl[0] == ",".join(TIMELINE_COLUMNS)
    assert tl[1] == "0.000000,1.500000,1,1,0,0,1,1,0,0,2,,"
    decisions = [json.loads(x) for x in (out / "decisions.jsonl").read_text().splitlines()]
    assert decisions[0]["target"] == {"prefill": 1, "decode": 2}
    assert decisions[0]["current"]["decode"]["starting"] == 1
    assert decisions[1] == {"t_s": 120.0, "x": None}
    text = (out / "summary.json").read_text()
    assert text == json.dumps(json.loads(text), sort_keys=True, indent=2) + "\n"
    assert "tiny" in (out / "scenario.yaml").read_text()


def test_output_is_byte_stable(tmp_path):
    a, b = _write(tmp_path / "a"), _write(tmp_path / "b")
    for name in ("requests.csv", "timeline.csv", "decisions.jsonl", "summary.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def _failing_records():
    yield {"t_s": 60.0}
    raise RuntimeError("disk full, say")


def test_failure_leaves_nothing_behind(tmp_path):
    with pytest.raises(RuntimeError):
        _write(tmp_path / "run", records=_failing_records())
    assert list(tmp_path.iterdir()) == []


def test_failure_keeps_an_existing_run_and_success_replaces_it(tmp_path):
    out = tmp_path / "run"
    _write(out)
    (out / "stale.txt").write_text("from an older run")
    with pytest.raises(RuntimeError):
        _write(out, records=_failing_records(), replace=True)
    assert (out / "stale.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["run"]
    _write(out, replace=True)  # the caller checked the directory (check_out_dir)
    assert not (out / "stale.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_scenario_dataclass_is_written_as_yaml(tmp_path):
    import yaml

    from scenario import load_scenario, scenario_to_dict

    src = tmp_path / "s.yaml"
    src.write_text(
        "name: tiny\nseed: 1\nduration: 60s\n"
        "model: {analytic: {model: llama-3.1-8b, gpu: h200}}\n"
        "cluster: {prefill: {replicas: 1}, decode: {replicas: 1}}\n"
        "workload: {arrival: {process: poisson, rate: 1.0}, isl: {dist: fixed, value: 100},"
        " osl: {dist: fixed, value: 10}}\n"
    )
    try:
        scenario = load_scenario(src)
    except ConfigError as exc:  # the schema is another part's; only the write is tested here
        pytest.skip(f"scenario schema changed: {exc}")
    out = _write(tmp_path / "run", scenario=scenario)
    assert yaml.safe_load((out / "scenario.yaml").read_text()) == scenario_to_dict(scenario)


def test_read_run_round_trip(tmp_path):
    out = _write(tmp_path / "run")
    run = read_run(out)
    assert list(run.requests.columns) == list(REQUEST_COLUMNS)
    assert run.requests["ttft_ms"].iloc[0] == 50.0
    assert np.isnan(run.requests["tpot_ms"].iloc[3])
    assert run.requests["status"].tolist()[-1] == "timeout"
    assert run.timeline["decode_desired"].tolist() == [1, 2]
    assert len(run.decisions) == 2 and run.decisions[0]["policy"] == "dynamo"
    assert run.summary == json.loads(json.dumps(_summary()))


@pytest.mark.parametrize(
    "name, content, where",
    [
        ("summary.json", None, "summary.json"),
        ("summary.json", '{"a": 1,\n', "summary.json: line 2"),
        ("decisions.jsonl", '{"t_s": 1}\nnot json\n', "decisions.jsonl: line 2"),
        ("requests.csv", "id,arrival_s\n1,2.0\n", "requests.csv"),
        ("timeline.csv", None, "timeline.csv"),
    ],
)
def test_read_run_errors_name_the_file(tmp_path, name, content, where):
    out = _write(tmp_path / "run")
    if content is None:
        (out / name).unlink()
    else:
        (out / name).write_text(content)
    with pytest.raises(ConfigError) as exc:
        read_run(out)
    assert where in str(exc.value)
    if name == "requests.csv":
        assert "ttft_ms" in str(exc.value)


def test_default_run_dir(tmp_path):
    when = datetime(2024, 5, 6, 7, 8, 9)
    assert default_run_dir("results", "ramp-8b", "dynamo", when).as_posix() == (
        "results/ramp-8b-dynamo-20240506-070809"
    )
    assert default_run_dir(tmp_path, "a b/c", "x", "t1").name == "a-b-c-x-t1"
