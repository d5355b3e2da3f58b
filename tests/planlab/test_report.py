"""planlab report: files, the self-contained HTML, and plotted series checked against the CSVs."""

from __future__ import annotations

import base64
import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tiny_scenario import tiny_yaml

from planlab.report import PLOTS, write_report
from planlab.results import compute_summary
from planlab.runner import run_scenario
from scenario import load_scenario

TINY = tiny_yaml(seed=3)


@pytest.fixture(scope="module")
def sim_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("report")
    path = tmp / "tiny.yaml"
    path.write_text(TINY)
    outcome = run_scenario(load_scenario(path), out_dir=tmp / "run")
    write_report(outcome.out_dir)
    return outcome.out_dir


def test_files_exist_and_html_embeds_every_plot(sim_run):
    html = (sim_run / "report.html").read_text()
    for name in PLOTS:
        png = sim_run / "plots" / f"{name}.png"
        assert png.is_file() and (sim_run / "plots" / f"{name}.json").is_file()
        # embedded byte for byte, so the page works when copied anywhere on its own
        assert base64.b64encode(png.read_bytes()).decode() in html
        assert f'data-file="plots/{name}.png"' in html
    assert "<script" not in html.lower()
    assert 'src="http' not in html and "<link" not in html


def test_replica_series_equal_timeline_csv(sim_run):
    data = json.loads((sim_run / "plots" / "load_capacity.json").read_text())
    tl = pd.read_csv(sim_run / "timeline.csv")
    assert data["t_s"] == pytest.approx(tl["t_s"].tolist())
    for role in ("prefill", "decode"):
        for kind in ("desired", "ready", "starting"):
            assert data[f"{role}_{kind}"] == tl[f"{role}_{kind}"].astype(float).tolist()
    # the load step makes the planner scale prefill up, and the plot marks that decision
    assert max(data["prefill_desired"]) > 1
    assert any(m.get("prefill_to", 0) > 1 for m in data["scaling_decisions"])
    gpus = json.loads((sim_run / "plots" / "gpus.json").read_text())
    assert gpus["gpus"] == tl["gpus"].astype(float).tolist()


def test_attainment_per_interval_by_hand(sim_run):
    data = json.loads((sim_run / "plots" / "attainment.json").read_text())
    assert data["interval_s"] == 30.0
    n_bins = 4  # 2 minutes in 30 s intervals
    fin = [0] * n_bins
    met = {k: [0] * n_bins for k in ("ttft", "itl", "joint")}
    with open(sim_run / "requests.csv") as f:
        for row in csv.DictReader(f):
            if row["status"] == "in_flight":
                continue
            b = min(int(float(row["arrival_s"]) // 30), n_bins - 1)
            fin[b] += 1
            ok = row["status"] == "ok"
            t_ok = ok and row["ttft_ms"] != "" and float(row["ttft_ms"]) <= 200
            gap = row["tpot_ms"]
            i_ok = ok and (gap == "" or int(row["osl"]) <= 1 or float(gap) <= 20)
            met["ttft"][b] += t_ok
            met["itl"][b] += i_ok
            met["joint"][b] += t_ok and i_ok
    assert data["finished"] == fin
    for key in met:
        assert data[key] == pytest.approx([m / n for m, n in zip(met[key], fin, strict=True)])
    # the overload after the step shows as a dip below the target
    assert min(data["joint"]) < 0.95 <= data["joint"][0]


def test_live_style_run_dir_renders(tmp_path):
    """Empty worker and predicted columns, no GPU counts, no decisions, no scenario.yaml."""
    requests = pd.DataFrame(
        {
            "id": [0, 1, 2, 3, 4],
            "arrival_s": [10.0, 20.0, 70.0, 80.0, 90.0],
            "isl": [100, 100, 100, 100, 100],
            "osl": [10, 10, 10, 10, 1],
            "ttft_ms": [100.0, 300.0, np.nan, np.nan, 50.0],
            "tpot_ms": [10.0, 10.0, np.nan, np.nan, np.nan],
            "e2e_s": [0.2, 0.4, np.nan, np.nan, 0.05],
            "prefill_worker": [""] * 5,
            "decode_worker": [""] * 5,
            "status": ["ok", "ok", "failed", "in_flight", "ok"],
            "error": ["", "", "HTTP 500", "", ""],
        }
    )
    requests.to_csv(tmp_path / "requests.csv", index=False)
    timeline = pd.DataFrame({"t_s": [0.0, 60.0, 120.0], "request_rate": [0.05, 0.05, 0.0]})
    for col in (
        "prefill_desired prefill_ready prefill_starting prefill_draining decode_desired "
        "decode_ready decode_starting decode_draining gpus predicted_num_req predicted_rate"
    ).split():
        timeline[col] = ""
    timeline.to_csv(tmp_path / "timeline.csv", index=False)
    (tmp_path / "decisions.jsonl").write_text("")
    summary = compute_summary(
        requests,
        sla={"ttft_ms": 200, "itl_ms": 20, "target_attainment": 0.9},
        duration_s=120,
        gpu_seconds={},
        scaling_events=0,
        preemptions=0,
        wall_s=120,
        policy="dynamo",
        scenario_name="live",
    )
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    html = write_report(tmp_path).read_text()
    assert "No planner decisions" in html
    data = json.loads((tmp_path / "plots" / "attainment.json").read_text())
    # interval falls back to 60 s; bin 0: two finished, one misses TTFT;
    # bin 1: the failed one misses all, in-flight left out, the OSL-1 one meets both
    assert data["interval_s"] == 60.0
    assert data["finished"] == [2, 2]
    assert data["ttft"] == [0.5, 0.5]
    assert data["itl"] == [1.0, 0.5]
    assert data["joint"] == [0.5, 0.5]
    load = json.loads((tmp_path / "plots" / "load_capacity.json").read_text())
    assert all(v is None for v in load["prefill_ready"])
