"""End to end against a real vLLM on CPU: `planlab run scenarios/live-vllm.yaml --live
--stack vllm` (90 s of load on the tiny model built here), the planner's observations
built from vLLM's own metrics through a real Prometheus, the client's TTFT/ITL beside
vLLM's histograms, `planlab planner` with a `server:` connector against the same server,
and no process left behind (checked by PID).

One vLLM server at a time (about 1.4 GB resident plus its KV cache): this module starts
exactly one, for one run, and stops it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pandas as pd
import pytest
import yaml

pytestmark = [
    pytest.mark.live,
    pytest.mark.timeout(600),
    pytest.mark.skipif(
        importlib.util.find_spec("vllm") is None,
        reason="needs vLLM on CPU: pip install 'planlab[vllm]'",
    ),
    pytest.mark.skipif(
        shutil.which("prometheus") is None, reason="needs the prometheus binary on PATH"
    ),
]

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "scenarios" / "live-vllm.yaml"


def _metric(text: str, name: str) -> float:
    """Sum of a metric's samples in a /metrics page."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _daemon_config(tmp: Path, prometheus_url: str, server_url: str) -> Path:
    raw = yaml.safe_load(SCENARIO.read_text())
    cfg = {
        "name": "vllm-daemon",
        "model": raw["model"],
        "cluster": raw["cluster"],
        "sla": raw["sla"],
        "planner": {**raw["planner"], "interval": "3s"},
        "prometheus": {"url": prometheus_url, "metric_names": "vllm", "scrape_interval": "1s"},
        "server": {"url": server_url},
        "metrics": {"address": "127.0.0.1", "port": 0},
    }
    path = tmp / "planner.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory, monkeypatch_module):
    """The CLI run, with live.stacks.vllm.start_stack wrapped to keep the handle's PIDs
    and to look at the server (its /metrics, a `planlab planner` daemon) before it stops."""
    import live.stacks.vllm as stack_module
    from planlab.cli import main

    tmp = tmp_path_factory.mktemp("vllm")
    model_dir = tmp / "tiny-llama"
    real_start = stack_module.start_stack
    seen: dict = {}

    @contextlib.contextmanager
    def recording_start(scenario, workdir):
        with real_start(scenario, workdir, model_dir=model_dir) as handle:
            seen["pids"] = list(handle.pids)
            seen["startup_s"] = handle.startup_s
            seen["model"] = handle.model
            seen["server"] = handle.server
            yield handle
            seen["pids"] = list(dict.fromkeys([*seen["pids"], *handle.pids]))
            seen["metrics"] = httpx.get(handle.metrics_url, timeout=10).text
            cfg = _daemon_config(tmp, handle.prometheus_url, handle.frontend_url)
            seen["daemon"] = subprocess.run(
                [sys.executable, "-m", "planlab", "planner", "--config", str(cfg)]
                + ["--max-ticks", "2", "--out", str(tmp / "daemon")],
                capture_output=True,
                text=True,
                timeout=120,
            )

    monkeypatch_module.setattr(stack_module, "start_stack", recording_start)
    out = tmp / "run"
    code = main(
        ["run", str(SCENARIO), "--live", "--stack", "vllm", "--out", str(out), "--no-report"]
        + ["--quiet"]
    )
    seen["code"] = code
    seen["out"] = out
    seen["daemon_dir"] = tmp / "daemon"
    return seen


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def _load(run):
    out = run["out"]
    req = pd.read_csv(out / "requests.csv")
    summary = json.loads((out / "summary.json").read_text())
    records = [json.loads(line) for line in (out / "decisions.jsonl").read_text().splitlines()]
    return req, summary, records


def test_run_completes_every_request_with_its_osl(run):
    from scenario import load_scenario
    from scenario.workload import generate

    assert run["code"] == 0
    s = load_scenario(SCENARIO)
    wanted = generate(s.workload, s.duration_s, s.seed)
    req, summary, _ = _load(run)
    assert len(req) == len(wanted.arrival_s) > 100
    assert (req["status"] == "ok").all(), req.loc[req["status"] != "ok", "error"].head()
    # ignore_eos + min_tokens: the random-weight model produced exactly the OSL asked for.
    assert (req["output_tokens"] == req["osl"]).all()
    assert summary["extra"]["output_tokens"] == int(req["osl"].sum())
    # The run's increase of vLLM's request counter (not its lifetime total) = the client's.
    assert summary["extra"]["prometheus_requests_total"] == len(req)
    assert summary["extra"]["stack"] == "vllm" and summary["extra"]["advisory"] is True
    assert run["model"] == "planlab-tiny-llama"


def test_observations_come_from_vllm_metrics_with_nothing_missing(run):
    req, _, records = _load(run)
    assert len(records) >= 5  # 90 s at one tick per 15 s
    done_at = req["arrival_s"] + req["e2e_s"]
    for r in records:
        obs = r["observation"]
        assert obs["missing"] == [] and obs["errors"] == [], obs
        assert obs["inflight"] is not None and obs["queued"] is not None
        # num_req is increase() over the window: within a few requests of what the client
        # saw finish in it (Prometheus extrapolates to the window's edges).
        t, w = r["t_s"], obs["interval_s"]
        finished = int(((done_at > t - w) & (done_at <= t)).sum())
        assert abs(obs["num_req"] - finished) <= max(4.0, 0.3 * finished), (t, obs, finished)
        assert obs["osl_mean"] == pytest.approx(32.0)
        assert obs["ttft_mean_ms"] > 0 and obs["itl_mean_ms"] > 0
        assert r["applied"] is False  # advisory: one server, nothing scaled
        assert r["current"]["prefill"]["ready"] == 1 and r["current"]["decode"]["ready"] == 1


def test_client_latencies_beside_vllm_histograms(run):
    req, summary, _ = _load(run)
    server = summary["extra"]["server"]
    assert server["missing"] == []
    # vLLM counts the chat template and the unique tag too: a few tokens more per prompt.
    assert 0 < server["isl_mean"] - req["isl"].mean() < 25
    # The client's TTFT includes HTTP, the API server's tokenizing and the stream: it is
    # never much below vLLM's and, at this light load, not far above it.
    client_ttft_ms = float(req["ttft_ms"].mean())
    assert client_ttft_ms >= 0.9 * server["ttft_mean_ms"] - 2.0
    assert client_ttft_ms - server["ttft_mean_ms"] < 500.0
    # The client's mean gap between chunks vs vLLM's inter-token histogram: same order.
    client_tpot_ms = float(req["tpot_ms"].mean())
    assert 1 / 3 <= client_tpot_ms / server["itl_mean_ms"] <= 3
    print(
        f"\nvLLM startup {run['startup_s']:.1f} s; TTFT client {client_ttft_ms:.1f} ms vs vLLM "
        f"{server['ttft_mean_ms']:.1f} ms; TPOT client {client_tpot_ms:.2f} ms vs vLLM ITL "
        f"{server['itl_mean_ms']:.2f} ms; peak RSS {run['server'].peak_rss_mib or 0:.0f} MiB"
    )


def test_unique_prompts_miss_vllms_prefix_cache(run):
    text = run["metrics"]
    queries = _metric(text, "vllm:prefix_cache_queries_total")
    hits = _metric(text, "vllm:prefix_cache_hits_total")
    assert queries > 100 * 150  # every prompt token was looked up
    # Identical prompts hit 87% of the time; unique ones share only what vLLM's block
    # hashing cannot tell apart (nothing: the first block holds the tag).
    assert hits / queries < 0.05, (hits, queries)


def test_planner_daemon_with_a_server_connector(run):
    proc = run["daemon"]
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "(advisory)" in proc.stdout
    lines = (run["daemon_dir"] / "decisions.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 2
    for r in records:
        assert r["applied"] is False
        assert r["current"]["prefill"]["ready"] == 1  # vLLM's /health answered
        assert r["observation"]["num_req"] is not None  # read from vLLM via Prometheus


def test_nothing_is_left_running(run):
    from live.stacks.vllm import pid_alive

    pids = run["pids"]
    assert len(pids) >= 3  # the API server, its engine core, Prometheus
    assert not [p for p in pids if pid_alive(p)]
