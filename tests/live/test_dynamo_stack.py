"""The real Dynamo 1.6 stack (frontend + mocker workers + Prometheus) scaled by planlab.

Needs the planlab[dynamo] extra; skipped with the reason otherwise. The tables check reads
planlab's npz back through Dynamo's own offline replay; the end-to-end test runs
`planlab run --live --stack dynamo` on a load step up and down (about two minutes) and
follows the prefill worker the planner adds from its start to its drain, by PID."""

from __future__ import annotations

import contextlib
import json
import shutil
import time
import urllib.parse
import urllib.request

import pandas as pd
import pytest

pytest.importorskip(
    "dynamo.mocker",
    reason="needs the planlab[dynamo] extra: pip install 'planlab[dynamo]' && "
    "pip install --no-deps ai-dynamo==1.6.1",
)

from live.processes import pid_alive  # noqa: E402
from live.stacks import dynamo  # noqa: E402
from planner.analytic import analytic_profile  # noqa: E402


def test_mocker_reads_planlabs_tables_as_the_profile(tmp_path):
    """One request through Dynamo's own mocker engine (its offline replay, same Rust engine
    as the live worker) takes the profile's TTFT and ITL: the npz layout and units are read
    as planlab means them."""
    from dynamo._core import run_mocker_synthetic_trace_replay
    from dynamo.mocker.config import normalize_mocker_config
    from dynamo.mocker.utils.planner_profiler_perf_data_converter import is_mocker_format_npz

    profile = analytic_profile("llama-3.1-8b", "l40s", dtype="fp8")
    npz = dynamo.write_mocker_npz(profile, tmp_path / "perf.npz")
    assert is_mocker_format_npz(npz)
    timing = {"type": "external", "provider": "dynamo_profile", "config": {"path": str(npz)}}
    cfg = normalize_mocker_config(
        {"engine": {"timing_model": timing, "enable_prefix_caching": False}}
    )
    for isl in (500, 3000):
        osl = 20
        out = run_mocker_synthetic_trace_replay(
            isl, osl, 1, extra_engine_args=cfg, arrival_interval_ms=10
        )
        s = out.summary
        assert s["mean_ttft_ms"] == pytest.approx(float(profile.prefill_ttft_ms_at(isl)), rel=0.01)
        # One sequence: active KV tokens = its context, about isl + osl / 2 over the decode.
        ctx = isl + osl / 2
        itl = float(profile.decode_itl_ms_at(ctx / profile.max_kv_tokens, ctx))
        assert s["mean_tpot_ms"] == pytest.approx(itl, rel=0.02)


def test_local_tokenizer_counts_words_and_decodes_every_id(tmp_path):
    from tokenizers import Tokenizer

    path = dynamo.write_model_dir(tmp_path / "model")
    tok = Tokenizer.from_file(str(path / "tokenizer.json"))
    assert tok.get_vocab_size() == dynamo.VOCAB_SIZE
    assert len(tok.encode("the " * 700).ids) == 700
    # Every id past the specials decodes to a word (the mocker emits random ids).
    assert all(tok.decode([i]) for i in (3, 4, 1000, dynamo.VOCAB_SIZE - 1))
    stamp = (path / "tokenizer.json").stat().st_mtime_ns
    dynamo.write_model_dir(tmp_path / "model")  # cached: not rewritten
    assert (path / "tokenizer.json").stat().st_mtime_ns == stamp


STEP_UP_S, STEP_DOWN_S, INTERVAL_S, STARTUP_S = 30.0, 70.0, 10.0, 3.0
RATES = ((0.0, 8.0), (STEP_UP_S, 26.0), (STEP_DOWN_S, 3.0))
DURATION_S = 100.0
# Sizing as scenarios/live-step.yaml: 8 and 3 req/s need 1 prefill worker, 26 need 2.
SCENARIO = f"""
name: dynamo-step
seed: 4
duration: {DURATION_S:g}s
model:
  analytic: {{model: llama-3.1-8b, gpu: l40s, dtype: fp8, tp: 1}}
cluster:
  prefill: {{replicas: 1, gpus_per_replica: 1, startup: {STARTUP_S:g}s}}
  decode: {{replicas: 1, gpus_per_replica: 1, startup: {STARTUP_S:g}s}}
  kv_transfer: {{bandwidth_gbps: 200, latency_ms: 1}}
workload:
  arrival:
    process: constant
    rate: [{", ".join(f"[{t:g}s, {r:g}]" for t, r in RATES)}]
  isl: {{dist: fixed, value: 500}}
  osl: {{dist: fixed, value: 50}}
sla: {{ttft_ms: 200, itl_ms: 30, target_attainment: 0.99}}
planner:
  policy: dynamo-legacy  # as scenarios/live-step.yaml: it adds a worker at 26 req/s
  interval: {INTERVAL_S:g}s
  predictor: constant
  correction: false
  min_replicas: 1
prometheus: {{scrape_interval: 1s}}
"""


def _prom(url: str, query: str) -> list[dict]:
    q = urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(f"{url}/api/v1/query?{q}", timeout=5) as r:
        return json.loads(r.read())["data"]["result"]


@pytest.fixture(scope="module")
def step_run(tmp_path_factory):
    if shutil.which("prometheus") is None:
        pytest.skip("the prometheus binary is not installed (apt-get install prometheus)")
    from planlab.cli import main

    root = tmp_path_factory.mktemp("dynamo-step")
    scenario = root / "dynamo-step.yaml"
    scenario.write_text(SCENARIO)
    seen: dict = {}
    real = dynamo.start_stack

    @contextlib.contextmanager
    def watched(scenario, workdir, **kw):
        with real(scenario, workdir, **kw) as h:
            seen["handle"] = h
            seen["t0"] = time.monotonic()
            yield h
            # Still up: what Prometheus scraped from each prefill worker over the run.
            seen["served"] = {
                r["metric"]["worker_id"]: float(r["value"][1])
                for r in _prom(
                    h.prometheus_url,
                    "max by (worker_id) (max_over_time(dynamo_component_requests_total{"
                    'dynamo_component="prefill",dynamo_endpoint="generate"}[10m]))',
                )
            }
            seen["workers"] = h.connector.all_workers()
            seen["events"] = list(h.connector.events)

    mp = pytest.MonkeyPatch()
    mp.setattr(dynamo, "start_stack", watched)
    out = root / "run"
    try:
        rc = main(
            ["run", str(scenario), "--live", "--stack", "dynamo", "--out", str(out), "--no-report"]
        )
    finally:
        mp.undo()
    assert rc == 0
    h = seen["handle"]
    return {
        "seen": seen,
        "pids": {h.frontend_pid, h.prometheus_pid} | {w.pid for w in seen["workers"]},
        "requests": pd.read_csv(out / "requests.csv", keep_default_na=False, na_values=[""]),
        "records": [json.loads(x) for x in (out / "decisions.jsonl").read_text().splitlines()],
        "summary": json.loads((out / "summary.json").read_text()),
    }


@pytest.mark.live
@pytest.mark.timeout(300)
def test_planner_adds_a_prefill_worker_then_drains_it(step_run):
    recs = step_run["records"]
    target = {round(r["t_s"] / INTERVAL_S): r["target"]["prefill"] for r in recs}
    assert all(r["applied"] for r in recs)
    # Ticks every 10 s (a late one may be skipped under load): the windows of 8, 26 and
    # 3 req/s ask for 1, 2 and 1 prefill workers.
    phases = {"8 req/s": (1, 3, 1), "26 req/s": (4, 7, 2), "3 req/s": (8, 9, 1)}
    for name, (first, last, want) in phases.items():
        got = [v for k, v in target.items() if first <= k <= last]
        assert got and set(got) == {want}, (name, target)

    seen = step_run["seen"]
    prefill = [w for w in seen["workers"] if w.role == "prefill"]
    assert len(prefill) == 2  # the initial one and the one the planner asked for
    added = prefill[1]
    ev = {(e.pid, e.kind): e for e in seen["events"]}
    started, ready = ev[(added.pid, "started")], ev[(added.pid, "ready")]
    # A new process, ready no sooner than its simulated startup, after the step.
    assert ready.t_s - started.t_s >= STARTUP_S
    assert started.t_s - seen["t0"] >= STEP_UP_S
    # It served requests: its own worker id counts them in the metrics Prometheus scraped.
    assert seen["served"][added.info["worker_id"]] > 0
    assert seen["served"][prefill[0].info["worker_id"]] > 0
    # Scaled down by draining, not lost: it left after the step down, of its own accord.
    assert (added.pid, "draining") in ev and ev[(added.pid, "stopped")].detail.startswith("drained")
    assert ev[(added.pid, "draining")].t_s - seen["t0"] >= STEP_DOWN_S
    assert not [e for e in seen["events"] if e.kind == "lost"]


@pytest.mark.live
@pytest.mark.timeout(300)
def test_no_request_lost_across_scale_up_and_drain(step_run):
    req, summary = step_run["requests"], step_run["summary"]
    expected = sum(
        rate * (end - start)
        for (start, rate), end in zip(RATES, [t for t, _ in RATES[1:]] + [DURATION_S], strict=True)
    )
    assert len(req) == expected == 240 + 1040 + 90
    assert (req["status"] == "ok").all(), req[req["status"] != "ok"]["error"].head().tolist()
    # Client count = Prometheus' count of the frontend's counter = completed + failed.
    assert summary["extra"]["prometheus_requests_total"] == len(req)
    counts = summary["requests"]
    assert counts["completed"] + counts["failed"] == counts["arrived"] == len(req)
    assert summary["extra"]["stack"] == "dynamo"


@pytest.mark.live
@pytest.mark.timeout(300)
def test_nothing_left_running(step_run):
    pids = step_run["pids"]
    assert None not in pids and len(pids) == 2 + 3  # frontend, Prometheus, 3 workers
    assert not [p for p in pids if pid_alive(p)]


@pytest.mark.live
@pytest.mark.timeout(120)
def test_a_stack_that_does_not_come_up_is_stopped_and_named(tmp_path):
    """Workers that are not ready within the timeout: StackError naming the logs, and
    every process started so far is gone."""
    import live.processes as processes
    from live.stacks import StackError
    from scenario import load_scenario

    path = tmp_path / "slow.yaml"
    path.write_text(SCENARIO.replace(f"startup: {STARTUP_S:g}s", "startup: 60s"))
    started: list[int] = []
    real_spawn = processes.spawn

    def spy(*a, **kw):
        proc = real_spawn(*a, **kw)
        started.append(proc.pid)
        return proc

    mp = pytest.MonkeyPatch()
    mp.setattr(dynamo, "spawn", spy)  # the frontend
    mp.setattr(processes, "spawn", spy)  # the workers
    try:
        with pytest.raises(StackError, match=r"did not come up.*logs in .*logs"):
            with dynamo.start_stack(load_scenario(path), tmp_path / "wd", ready_timeout_s=4):
                pass
    finally:
        mp.undo()
    assert len(started) == 3  # the frontend, one prefill and one decode worker
    assert not [p for p in started if pid_alive(p)]


@pytest.mark.live
@pytest.mark.timeout(120)
@pytest.mark.parametrize("startup, visible_while_starting", [("mocker", 2), ("hidden", 1)])
def test_when_a_starting_worker_is_visible_to_the_frontend(
    tmp_path, startup, visible_while_starting
):
    """The mocker registers in discovery before its --startup-time is over (the frontend
    routes to it while it starts); startup="hidden" keeps it out until it is ready."""
    from scenario import load_scenario

    path = tmp_path / "s.yaml"
    path.write_text(SCENARIO.replace(f"startup: {STARTUP_S:g}s", "startup: 4s"))
    with dynamo.start_stack(
        load_scenario(path), tmp_path / "wd", startup=startup, prometheus=False
    ) as h:
        instances = h.workdir / "kv" / "v1" / "instances"

        def registered() -> int:
            return len(list(instances.glob("dynamo%2Fprefill%2Fgenerate%2F*")))

        assert registered() == 1
        h.connector.scale(prefill=2, decode=1)
        h.connector.wait_until(lambda s: s.prefill.starting == 1, 10)
        time.sleep(2.5)  # well inside its 4 s startup
        assert h.connector.state().prefill.starting == 1
        assert registered() == visible_while_starting
        st = h.connector.wait_until(lambda s: s.prefill.ready == 2, 30)
        assert st.prefill.startup_s[-1] >= 4.0
        time.sleep(0.5)
        assert registered() == 2
        pids = h.pids()
    assert not [p for p in pids if pid_alive(p)]
