"""planlab compare: rows per run and per policy, Pareto data equal to the runs' summaries,
existing run directories, bad input before anything runs, crashed runs reported."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from tiny_scenario import tiny_yaml

import planlab.compare as cmp
from planlab.cli import main as cli_main
from planner.errors import ConfigError

TINY = tiny_yaml(seed=5)


@pytest.fixture
def scenario(tmp_path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return path


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compare")
    path = tmp / "tiny.yaml"
    path.write_text(TINY)
    out = tmp / "out"
    df = cmp.compare([path], ["static", "dynamo"], 1, out, jobs=1)
    return df, out


def test_compare_csv_rows(compared):
    df, out = compared
    csv = pd.read_csv(out / "compare.csv")
    runs = csv[csv["kind"] == "run"]
    means = csv[csv["kind"] == "mean"]
    assert sorted(runs["policy"]) == ["dynamo", "static"]
    assert sorted(means["policy"]) == ["dynamo", "static"]
    assert (runs["seed"] == 5).all()  # --seeds 1 uses the scenario's own seed
    for _, r in runs.iterrows():
        summary = json.loads((Path(r["run_dir"]) / "summary.json").read_text())
        assert r["joint_attainment"] == pytest.approx(summary["attainment"]["joint"])
        assert r["gpu_hours"] == pytest.approx(summary["gpu_hours"]["total"])
        m = means[means["policy"] == r["policy"]].iloc[0]
        assert m["joint_attainment"] == pytest.approx(r["joint_attainment"])
    static = runs[runs["policy"] == "static"].iloc[0]
    end_s = json.loads((Path(static["run_dir"]) / "summary.json").read_text())["extra"]["end_s"]
    # 1 prefill + 1 decode GPU held from 0 until the backlog is served, never rescaled
    assert static["gpu_hours"] == pytest.approx(2 * end_s / 3600, rel=1e-6)
    assert static["scaling_events"] == 0
    dynamo = runs[runs["policy"] == "dynamo"].iloc[0]
    assert dynamo["scaling_events"] >= 1 and dynamo["gpu_hours"] > static["gpu_hours"]
    assert (out / "compare.html").is_file() and (out / "plots" / "pareto.png").is_file()


def test_pareto_data_matches_runs(compared):
    df, out = compared
    data = json.loads((out / "plots" / "pareto.json").read_text())["tiny"]
    runs = df[df["kind"] == "run"]
    assert set(data["policies"]) == {"static", "dynamo"}
    for policy, p in data["policies"].items():
        r = runs[runs["policy"] == policy].iloc[0]
        assert p["gpu_hours"] == pytest.approx([r["gpu_hours"]])
        assert p["joint_attainment"] == pytest.approx([r["joint_attainment"]])
    assert data["oracle_gpu_hours"] is None
    assert data["target_attainment"] == 0.95
    tl = json.loads((out / "plots" / "timelines-tiny.json").read_text())
    assert set(tl) == {"static", "dynamo"} and max(tl["static"]["gpus"]) == 2


def test_existing_run_dirs_are_compared_without_rerun(compared, tmp_path):
    df, out = compared
    dirs = sorted((out / "runs").iterdir())
    before = {d: (d / "summary.json").stat().st_mtime_ns for d in dirs}
    again = cmp.compare([], [], 1, tmp_path / "again", run_dirs=dirs)
    assert sorted(again[again["kind"] == "run"]["policy"]) == ["dynamo", "static"]
    assert {d: (d / "summary.json").stat().st_mtime_ns for d in dirs} == before
    a = again[again["kind"] == "run"].set_index("policy")["gpu_hours"]
    b = df[df["kind"] == "run"].set_index("policy")["gpu_hours"]
    assert a.to_dict() == pytest.approx(b.to_dict())


def test_bad_scenario_fails_before_anything_runs(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY.replace("interval: 30s", "interval: -3s"))
    with pytest.raises(ConfigError, match="planner.interval"):
        cmp.compare([bad], ["static"], 1, tmp_path / "out", jobs=1)
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match="nosuch"):
        cmp.compare([bad], ["nosuch"], 1, tmp_path / "out", jobs=1)
    assert (
        cli_main(["compare", str(bad), "--policies", "static", "--out", str(tmp_path / "o")]) == 2
    )
    assert not (tmp_path / "o").exists()


def test_crashed_run_is_reported_and_others_written(scenario, tmp_path, monkeypatch, capsys):
    real = cmp._run_one

    def flaky(scenario, policy, seed, out_dir, report):
        if policy == "dynamo":
            raise RuntimeError("boom")
        return real(scenario, policy, seed, out_dir, report)

    monkeypatch.setattr(cmp, "_run_one", flaky)
    out = tmp_path / "out"
    rc = cli_main(
        ["compare", str(scenario), "--policies", "static,dynamo", "--jobs", "1", "--out", str(out)]
    )
    assert rc == 1
    assert "boom" in capsys.readouterr().err
    csv = pd.read_csv(out / "compare.csv")
    runs = csv[csv["kind"] == "run"].set_index("policy")
    assert runs.loc["dynamo", "status"] == "crashed"
    assert runs.loc["static", "status"] == "ok"
    assert (Path(runs.loc["static", "run_dir"]) / "summary.json").is_file()


def test_live_and_simulated_runs_stand_side_by_side():
    """A live run of the same scenario and policy is its own row, not a second seed."""
    from planlab.compare import row_from_summary

    base = {"scenario": "s", "policy": "dynamo", "attainment": {}, "extra": {"seed": 1}}
    assert row_from_summary(base, None)["policy"] == "dynamo"
    emulated = {**base, "extra": {"seed": 1, "mode": "live-emulated"}}
    assert row_from_summary(emulated, None)["policy"] == "dynamo @emulator"
    stack = {**base, "extra": {"seed": 1, "mode": "live", "stack": "dynamo"}}
    assert row_from_summary(stack, None)["policy"] == "dynamo @dynamo"
    cluster = {**base, "extra": {"seed": 1, "mode": "live"}}
    assert row_from_summary(cluster, None)["policy"] == "dynamo @live"
