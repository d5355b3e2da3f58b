"""`planlab run`: writes a complete results directory, is byte-for-byte deterministic under a
seed, and turns bad input into exit code 2 with one line and nothing written."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from planlab.cli import main

SCENARIO = """\
name: tiny
seed: 3
duration: 4m
model:
  analytic: {model: llama-3.1-8b, gpu: h200, dtype: fp8, tp: 1}
cluster:
  prefill: {replicas: 1, startup: 30s}
  decode: {replicas: 1, startup: 30s}
workload:
  arrival: {process: poisson, rate: [[0, 2.0], [2m, 12.0]]}
  isl: {dist: lognormal, mean: 2000, cv: 0.5, max: 12000}
  osl: {dist: lognormal, mean: 120, cv: 0.5, max: 1000}
sla: {ttft_ms: 300, itl_ms: 25}
planner: {policy: dynamo, interval: 30s, predictor: constant}
prometheus: {scrape_interval: 5s}
"""


@pytest.fixture
def scenario_file(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(SCENARIO)
    return path


def test_run_writes_the_results_directory(scenario_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", str(scenario_file), "--out", str(out), "--no-report", "--quiet"]) == 0
    for name in ("requests.csv", "timeline.csv", "decisions.jsonl", "summary.json"):
        assert (out / name).is_file(), name
    req = pd.read_csv(out / "requests.csv")
    summary = json.loads((out / "summary.json").read_text())
    n = summary["requests"]
    assert len(req) == n["arrived"] > 0
    assert n["completed"] + n["failed"] + n["in_flight"] == n["arrived"]
    # the planner ticks every 30 s over 4 minutes (and on through the drain tail, if any)
    decisions = (out / "decisions.jsonl").read_text().splitlines()
    assert len(decisions) >= 8
    timeline = pd.read_csv(out / "timeline.csv")
    assert timeline["t_s"].iloc[0] == pytest.approx(5.0)
    printed = capsys.readouterr().out
    assert "attainment" in printed and str(out) in printed


def _without_wall(path):
    data = json.loads(path.read_text())
    data.pop("wall")
    return data


def test_same_seed_gives_byte_identical_results(scenario_file, tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for out in (a, b):
        assert main(["run", str(scenario_file), "--out", str(out), "--no-report", "--quiet"]) == 0
    assert (
        main(["run", str(scenario_file), "--out", str(c), "--seed", "4", "--no-report", "--quiet"])
        == 0
    )
    for name in ("requests.csv", "timeline.csv", "decisions.jsonl"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert _without_wall(a / "summary.json") == _without_wall(b / "summary.json")
    assert (a / "requests.csv").read_bytes() != (c / "requests.csv").read_bytes()


@pytest.mark.parametrize(
    "edit, args, needle",
    [
        (("duration: 4m", "duration: -4m"), [], "duration"),
        (("seed: 3", "seed: 3\nbogus: 1"), [], "bogus"),
        ((), ["--policy", "nosuchpolicy"], "nosuchpolicy"),
        ((), ["--set", "planner.interval=fast"], "planner.interval"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, edit, args, needle):
    path = tmp_path / "bad.yaml"
    text = SCENARIO.replace(*edit) if edit else SCENARIO
    path.write_text(text)
    out = tmp_path / "results" / "run"
    code = main(["run", str(path), "--out", str(out), "--no-report", "--quiet", *args])
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err
    assert err.startswith("planlab: error:") and needle in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())


def test_missing_scenario_file_exits_2(tmp_path, capsys):
    code = main(["run", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "r"), "--quiet"])
    assert code == 2
    assert "nope.yaml" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_live_flags_without_live_exit_2(capsys):
    from planlab.cli import main

    assert main(["run", "scenarios/quickstart.yaml", "--emulate"]) == 2
    assert "--emulate: only applies to a live run; add --live" in capsys.readouterr().err
