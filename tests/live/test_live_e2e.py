"""End to end on loopback: `planlab run --live --emulate` on a compressed load step (scrape
1 s, interval 10 s, startup 3 s, two minutes) with the real Prometheus. The planner must
go from 1 prefill + 1 decode to 2 prefill workers, and its decisions, the emulator's worker
counts and what Prometheus counted must agree."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from live_step import live_step_run

pytestmark = [pytest.mark.live, pytest.mark.timeout(240)]

STEP_S = 40.0  # the load steps from 8 to 26 req/s here (scenarios/live-step.yaml)
STARTUP_S = 3.0
INTERVAL_S = 10.0


@pytest.fixture(scope="module")
def run():
    out = live_step_run()
    return {
        "out": out,
        "requests": pd.read_csv(out / "requests.csv", keep_default_na=False, na_values=[""]),
        "timeline": pd.read_csv(out / "timeline.csv"),
        "records": [json.loads(x) for x in (out / "decisions.jsonl").read_text().splitlines()],
        "summary": json.loads((out / "summary.json").read_text()),
    }


def test_every_request_served_and_counted_by_prometheus(run):
    req, summary = run["requests"], run["summary"]
    # 8 req/s for 40 s, then 26 req/s for 80 s, constant spacing.
    assert len(req) == 8 * 40 + 26 * 80
    assert (req["status"] == "ok").all()
    # Prometheus' own count of the frontend's requests counter equals the client's count.
    assert summary["extra"]["prometheus_requests_total"] == len(req)
    assert summary["extra"]["planner_ticks"] == len(run["records"])


def test_planner_scales_prefill_after_the_step(run):
    recs = run["records"]
    before = [r for r in recs if r["t_s"] <= STEP_S + 0.5]
    after = [r for r in recs if r["t_s"] >= STEP_S + INTERVAL_S - 0.5]
    assert before and after
    assert all(r["target"] == {"prefill": 1, "decode": 1} for r in before)
    # The first tick after the step sees the 26 req/s window: 2 prefill, decode stays 1.
    assert all(r["target"] == {"prefill": 2, "decode": 1} for r in after)
    assert all(r["applied"] for r in recs)


def test_prometheus_windows_match_the_client_counts(run):
    """Each tick's num_req (Prometheus' increase() of the request counter) against the
    requests the client saw complete in that window; the first window is left out
    (Prometheus' first scrape comes after the counter's first increments)."""
    req = run["requests"]
    done_at = (req["arrival_s"] + req["e2e_s"]).to_numpy()
    for r in run["records"][1:]:
        t = r["t_s"]
        client = int(np.sum((done_at > t - INTERVAL_S) & (done_at <= t)))
        observed = r["observation"]["num_req"]
        # increase() extrapolates by up to ~one scrape interval at each edge.
        assert abs(observed - client) <= 0.12 * client + 2, (t, observed, client)


def test_emulator_worker_counts_follow_the_decisions(run):
    tl, recs = run["timeline"], run["records"]
    t_up = min(r["t_s"] for r in recs if r["target"]["prefill"] == 2)
    early = tl[tl["t_s"] < t_up]
    late = tl[tl["t_s"] > t_up + STARTUP_S + 1.5]
    assert (early["prefill_desired"] == 1).all() and (early["prefill_ready"] == 1).all()
    assert (late["prefill_desired"] == 2).all() and (late["prefill_ready"] == 2).all()
    # In between, the new worker is starting for its startup time (1 s samples).
    starting = tl[(tl["t_s"] > t_up) & (tl["prefill_starting"] == 1)]
    assert 1 <= len(starting) <= STARTUP_S + 1
    assert (tl["decode_ready"] == 1).all()
    # Records taken after the worker came up see it ready, as the timeline does.
    for r in recs:
        if r["t_s"] > t_up + STARTUP_S + 1:
            assert r["current"]["prefill"]["ready"] == 2
    # Requests are spread over both prefill workers only once the second is ready.
    req = run["requests"]
    served_early = set(req.loc[req["arrival_s"] < t_up, "prefill_worker"])
    served_late = set(req.loc[req["arrival_s"] > t_up + STARTUP_S + 1, "prefill_worker"])
    assert len(served_early) == 1 and len(served_late) == 2


def test_gpu_hours_integrate_the_timeline(run):
    """Prefill GPU-seconds: 1 GPU over the whole run plus a second from the decision on
    (its startup included), within the 1 s timeline resolution."""
    tl, summary, recs = run["timeline"], run["summary"], run["records"]
    t_up = min(r["t_s"] for r in recs if r["target"]["prefill"] == 2)
    end = tl["t_s"].iloc[-1]
    expected_s = end + (end - t_up)
    got_s = summary["gpu_hours"]["prefill"]["total"] * 3600
    assert got_s == pytest.approx(expected_s, abs=2.0)
    assert summary["gpu_hours"]["prefill"]["startup"] * 3600 == pytest.approx(STARTUP_S, abs=1.5)


def test_gpu_seconds_by_hand():
    from live.driver import gpu_seconds

    def row(t, ready, starting=0, draining=0):
        return {
            "t_s": t,
            "prefill_ready": ready,
            "prefill_starting": starting,
            "prefill_draining": draining,
            "decode_ready": 1,
            "decode_starting": 0,
            "decode_draining": 0,
        }

    # A sample's state holds until the next sample (the first one also from t=0):
    # 0-5 s: 1 ready; 5-7 s: 1 ready + 1 starting; 7-8 s: 1 ready + 1 draining.
    # Prefill engines have 2 GPUs each.
    rows = [row(2, 1), row(5, 1, starting=1), row(7, 1, draining=1), row(8, 2)]
    got = gpu_seconds(rows, {"prefill": 2, "decode": 1})
    assert got["prefill"] == {"startup": 2 * 2, "serving": 2 * 8, "drain": 2 * 1}
    assert got["decode"]["serving"] == 8


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--live"], "--frontend and --prometheus"),
        (["--live", "--emulate", "--frontend", "http://x"], "drop --frontend"),
        (
            [
                "--live",
                "--frontend",
                "http://127.0.0.1:1",
                "--prometheus",
                "http://127.0.0.1:1",
                "--kube-namespace",
                "llm",
            ],
            "go together",
        ),
    ],
)
def test_live_flags_are_checked(argv, needle, capsys):
    from live_step import SCENARIO

    from planlab.cli import main

    assert main(["run", str(SCENARIO), *argv, "--no-report"]) == 2
    assert needle in capsys.readouterr().err
