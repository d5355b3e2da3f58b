"""planlab backtest against a real Prometheus holding a real history: the simulator's own
scrape store (planner.metrics names) written as OpenMetrics, backfilled into a TSDB block with
`promtool tsdb create-blocks-from openmetrics`, served by the `prometheus` binary on
127.0.0.1; the derived per-step request counts and ISL/OSL histograms are checked against the
requests that made the history, the derived workload against the distributions that
generated it, and a restart (counter reset) and a scrape gap are reported, not read as zero."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from live.emulator.prometheus_server import free_port
from planlab.backtest import (
    BASE,
    PrometheusRange,
    backtest,
    derive_scenario,
    export_scenario,
    read_history,
)
from planlab.cli import main as cli_main
from planlab.profiles import resolve_model
from planner import metrics as M
from planner.errors import ConfigError
from planner.policies import make_policy
from scenario import load_scenario
from scenario.workload import generate, histogram_lengths, make_rng
from sim.prometheus import STATUSES
from sim.simulate import SimOptions, Simulation

pytestmark = pytest.mark.live

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None or PROMTOOL is None,
    reason="prometheus and promtool not found (Debian: apt-get install prometheus)",
)

DURATION_S = 20 * 60
RATE = [[0, 3.0], [300, 8.0], [720, 4.0]]  # req/s from t (s)
ISL_MEAN, ISL_CV, OSL_MEAN, OSL_CV = 3000.0, 0.5, 150.0, 0.5
ISL_SCALE_AT_S = 600  # ISLs double from here on (isl_scale)

GENERATOR = f"""
name: history
seed: 21
duration: {DURATION_S}s
model:
  analytic: {{model: llama-3.1-8b, gpu: h200, dtype: fp8, tp: 1}}
cluster:
  prefill: {{replicas: 3, gpus_per_replica: 1, startup: 30s}}
  decode: {{replicas: 2, gpus_per_replica: 1, startup: 30s}}
workload:
  arrival: {{process: poisson, rate: {RATE}}}
  isl: {{dist: lognormal, mean: {ISL_MEAN}, cv: {ISL_CV}, max: 60000}}
  osl: {{dist: lognormal, mean: {OSL_MEAN}, cv: {OSL_CV}, max: 4000}}
  isl_scale: [[0, 1.0], [{ISL_SCALE_AT_S}s, 2.0]]
sla: {{ttft_ms: 400, itl_ms: 25, target_attainment: 0.95}}
planner: {{policy: static, interval: 60s, predictor: constant}}
prometheus: {{scrape_interval: 5s}}
"""


# --- the history: what the simulator's frontend exported, as Prometheus would hold it -------


@dataclasses.dataclass
class Made:
    scenario: object
    requests: pd.DataFrame  # finish_s, isl, osl, ok
    store: object
    timeline: list


def _simulate(path: Path) -> Made:
    sc = load_scenario(path)
    profile = resolve_model(sc.model)
    cfg = sc.planner_config()
    reqs = generate(sc.workload, sc.duration_s, sc.seed)
    sim = Simulation(
        sc, profile, cfg, make_policy(cfg, profile), reqs, sc.seed, SimOptions(), None, None
    )
    result = sim.run()
    c = result.requests
    frame = pd.DataFrame(
        {"finish_s": c["finish_s"], "isl": c["isl"], "osl": c["osl"], "status": c["status"],
         "ttft_s": c["first_token_s"] - c["arrival_s"]}
    )  # fmt: skip
    return Made(sc, frame, sim.store, result.timeline)


def _fmt(v: float) -> str:
    return "+Inf" if math.isinf(v) else repr(float(v))


def openmetrics(
    made: Made,
    t0_unix: float,
    *,
    reset_after_s: float | None = None,
    gap_s: tuple[float, float] | None = None,
    replicas_as: str = "kube",
) -> str:
    """The frontend's series and kube-state-metrics' replicas at every scrape (a zero sample
    at t0, as a freshly started frontend exports). reset_after_s: the frontend restarts just
    after that scrape (its counters start again from zero). gap_s: no scrapes in (a, b).
    replicas_as: kube (kube-state-metrics' Deployment spec) or dynamo (the planner's gauges)."""
    store = made.store
    times = np.concatenate(([0.0], store.times_ms / 1000.0))
    values = np.vstack([np.zeros(store.width), store.values])
    if reset_after_s is not None:
        r = int(np.searchsorted(times, reset_after_s, side="right"))
        base = values[r - 1].copy()
        values[r:] -= base  # counters (and histograms) count again from the restart
        gauges = [store.cols[g] for g in M.GAUGES]
        values[r:, gauges] += base[gauges]
    keep = np.ones(len(times), dtype=bool)
    if gap_s is not None:
        keep = ~((times > gap_s[0]) & (times < gap_s[1]))
    times, values = times[keep], values[keep]
    stamps = [f"{t0_unix + t:.3f}" for t in times]
    lines = [f"# TYPE {M.REQUESTS_TOTAL[: -len('_total')]} counter"]
    for status in STATUSES:
        col = store.cols[f"{M.REQUESTS_TOTAL}{{status={status}}}"]
        for ts, v in zip(stamps, values[:, col], strict=True):
            lines.append(f'{M.REQUESTS_TOTAL}{{status="{status}"}} {v:.17g} {ts}')
    for name in (M.ISL, M.OSL, M.TTFT, M.ITL):
        lines.append(f"# TYPE {name} histogram")
        sl = store.bucket_cols[name]
        bounds = [*M.BUCKETS[name], math.inf]
        for k, ts in enumerate(stamps):
            for b, v in zip(bounds, values[k, sl], strict=True):
                lines.append(f'{name}_bucket{{le="{_fmt(b)}"}} {v:.17g} {ts}')
            lines.append(f"{name}_sum {values[k, store.cols[name + '_sum']]:.17g} {ts}")
            lines.append(f"{name}_count {values[k, store.cols[name + '_count']]:.17g} {ts}")
    gauge = {"kube": "kube_deployment_spec_replicas", "dynamo": "planner:num_p_workers"}
    lines.append(f"# TYPE {gauge[replicas_as]} gauge")
    tl = pd.DataFrame(made.timeline).drop_duplicates("t_s", keep="last")
    cluster = made.scenario.cluster  # the Deployments exist before the frontend's first scrape
    start = {"t_s": 0.0, "prefill_desired": cluster.prefill.replicas,
             "decode_desired": cluster.decode.replicas}  # fmt: skip
    tl = pd.concat([pd.DataFrame([start]), tl], ignore_index=True)
    for role in ("prefill", "decode"):
        if replicas_as == "kube":
            series = f'kube_deployment_spec_replicas{{deployment="llm-{role}",namespace="serving"}}'
        else:
            series = f"planner:num_{role[0]}_workers"
            if role == "decode":
                lines.append(f"# TYPE {series} gauge")
        for _, row in tl.iterrows():
            lines.append(f"{series} {row[f'{role}_desired']:.17g} {t0_unix + row['t_s']:.3f}")
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


class BackfilledPrometheus:
    """promtool backfills a TSDB from OpenMetrics text; prometheus serves it on 127.0.0.1
    (nothing scraped). Stopped by PID on the way out."""

    def __init__(self, root: Path, text: str):
        self.root = root
        self.text = text
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> BackfilledPrometheus:
        data = self.root / "data"
        om = self.root / "history.om"
        om.write_text(self.text)
        subprocess.run(
            [PROMTOOL, "tsdb", "create-blocks-from", "openmetrics", str(om), str(data)],
            check=True,
            capture_output=True,
            timeout=120,
        )
        config = self.root / "prometheus.yml"
        config.write_text("global:\n  scrape_interval: 15s\nscrape_configs: []\n")
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log = (self.root / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}",
             f"--storage.tsdb.path={data}", "--storage.tsdb.retention.time=30d",
             "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            assert self.proc.poll() is None, (self.root / "prometheus.log").read_text()
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "prometheus not ready"
            time.sleep(0.1)
        return self

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.log.close()


def _t0() -> float:
    """A history that ended an hour ago, on a whole minute (inside the default retention)."""
    return float(int(time.time() // 60 * 60) - DURATION_S - 3600)


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Made:
    path = tmp_path_factory.mktemp("gen") / "history.yaml"
    path.write_text(GENERATOR)
    return _simulate(path)


@pytest.fixture(scope="module")
def served(made, tmp_path_factory):
    t0 = _t0()
    root = tmp_path_factory.mktemp("prom")
    with BackfilledPrometheus(root, openmetrics(made, t0)) as prom:
        yield prom, t0
    assert prom.proc.poll() is not None  # stopped


def _truth(made: Made, t0: float, step_s: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Requests finished per step (the frontend counts a request when it ends) and, per step,
    the ISL histogram of the successful ones, with the exported bucket bounds."""
    finish = made.requests["finish_s"].to_numpy()
    edges = np.arange(n + 1) * step_s
    k = np.searchsorted(edges, finish, side="left") - 1  # step k holds (edge_k, edge_k+1]
    done = ~np.isnan(finish) & (k >= 0) & (k < n)
    counts = np.bincount(k[done], minlength=n)
    ok = done & (made.requests["status"].to_numpy() == 1)
    bounds = np.array(M.BUCKETS[M.ISL])
    bucket = np.searchsorted(bounds, made.requests["isl"].to_numpy(), side="left")
    hist = np.zeros((n, len(bounds) + 1))
    np.add.at(hist, (k[ok], bucket[ok]), 1)
    return counts, hist


# --- tests ----------------------------------------------------------------------------------


@needs_prometheus
def test_history_read_back_is_the_requests_that_made_it(made, served, monkeypatch):
    prom, t0 = served
    h = read_history(prom.url, t0, t0 + DURATION_S, 60.0)
    assert h.n_steps == DURATION_S // 60
    counts, isl = _truth(made, t0, 60.0, h.n_steps)
    np.testing.assert_array_equal(h.requests, counts)  # exact: counters on the scrape grid
    np.testing.assert_array_equal(h.isl.counts, isl)
    assert h.isl.le == M.BUCKETS[M.ISL]
    # the histogram's _sum gives each step's exact mean ISL
    finish = made.requests["finish_s"].to_numpy()
    in_step = (finish > 600) & (finish <= 660)
    assert h.isl.means()[10] == pytest.approx(made.requests["isl"][in_step].mean(), rel=1e-9)
    # kube-state-metrics' replicas, as the generating (static) cluster ran them
    np.testing.assert_array_equal(h.replicas["prefill"], 3)
    np.testing.assert_array_equal(h.replicas["decode"], 2)
    assert [i.kind for i in h.issues] == []  # a clean history has nothing to report
    # a long window is asked in pieces (Prometheus answers at most 11,000 points a series)
    monkeypatch.setattr(PrometheusRange, "MAX_POINTS", 7)
    pieces = read_history(prom.url, t0, t0 + DURATION_S, 60.0)
    np.testing.assert_array_equal(pieces.requests, h.requests)
    np.testing.assert_array_equal(pieces.isl.counts, h.isl.counts)
    np.testing.assert_array_equal(pieces.replicas["decode"], h.replicas["decode"])


@needs_prometheus
def test_derived_workload_matches_the_generating_one(made, served):
    prom, t0 = served
    h = read_history(prom.url, t0, t0 + DURATION_S, 60.0)
    derived, issues = derive_scenario(h)
    assert issues == []
    rate = derived.workload.arrival.rate
    for k in range(1, h.n_steps - 1):  # not the first step: requests take a moment to end
        t = k * 60.0
        expected = next(r for s, r in reversed(RATE) if s <= t) * 60
        if any(abs(t - s) < 60 or abs(t + 60 - s) < 60 for s, _ in RATE[1:]):
            continue  # a rate change inside the step
        # Poisson counts: within 4.5 standard deviations of the generating rate
        assert abs(rate.rate_at(t) * 60 - expected) < 4.5 * math.sqrt(expected), k
    # lengths drawn from the derived per-step histograms, against the generating lognormals
    reqs = generate(derived.workload, derived.duration_s, 5)
    sigma = math.sqrt(math.log1p(ISL_CV**2))
    bounds = np.array((0.0, *M.BUCKETS[M.ISL]))
    for lo, hi, scale in ((60, 540, 1.0), (660, 1140, 2.0)):
        sel = (reqs.arrival_s >= lo) & (reqs.arrival_s < hi)
        for q in (0.5, 0.9):
            true = scale * ISL_MEAN * math.exp(-(sigma**2) / 2 + sigma * _z(q))
            got = float(np.quantile(reqs.isl[sel], q))
            b = int(np.searchsorted(bounds, true))  # the bucket holding the true quantile
            # interpolation inside a bucket is all the error allowed (+ 4% sampling noise)
            assert bounds[b - 1] / 1.04 <= got <= bounds[b] * 1.04, (lo, q, true, got)
        # The mean: uniform inside a bucket can miss the truth by at most half the width of
        # the buckets the requests fall in (Dynamo's ISL buckets double at each bound), plus
        # sampling noise.
        isl = reqs.isl[sel]
        b = np.clip(np.searchsorted(bounds, isl), 1, len(bounds) - 1)
        half_width = float(((bounds[b] - bounds[b - 1]) / 2).mean())
        assert abs(isl.mean() - scale * ISL_MEAN) <= half_width + 4 * isl.std() / math.sqrt(
            isl.size
        )
        assert abs(isl.mean() - scale * ISL_MEAN) / (scale * ISL_MEAN) < 0.15
        assert reqs.osl[sel].mean() == pytest.approx(OSL_MEAN, rel=0.15)


def _z(q: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(q))


@needs_prometheus
def test_replay_report_and_export(made, served, tmp_path):
    prom, t0 = served
    h = read_history(prom.url, t0, t0 + DURATION_S, 60.0)
    base = dataclasses.replace(made.scenario, planner=made.scenario.planner)
    out = tmp_path / "bt"
    report = backtest(h, ["static", "dynamo"], out, base=base)
    steps = pd.read_csv(out / "backtest.csv")
    assert len(steps) == h.n_steps
    assert (steps["cluster_prefill"] == 3).all() and (steps["cluster_decode"] == 2).all()
    # static keeps the replicas it started with, which are the cluster's at the start
    assert (steps["static_prefill"] == 3).all() and (steps["static_decode"] == 2).all()
    saved = json.loads((out / "backtest.json").read_text())
    # the cluster: 5 GPUs for 20 minutes
    assert saved["cluster"]["gpu_hours"] == pytest.approx(5 * DURATION_S / 3600)
    assert saved["requests"] == h.requests.sum()
    static = saved["policies"]["static"]
    summary = json.loads((Path(static["run_dirs"][0]) / "summary.json").read_text())
    assert static["gpu_hours"] == pytest.approx(summary["gpu_hours"]["total"])
    assert static["joint_attainment"] == pytest.approx(summary["attainment"]["joint"])
    assert summary["gpu_hours"]["total"] >= 5 * DURATION_S / 3600  # plus the final drain
    assert set(saved["policies"]) == {"static", "dynamo"}
    drawn = json.loads((out / "plots" / "backtest-gpus.json").read_text())
    assert drawn["cluster (recorded)"] == [5.0] * h.n_steps and len(drawn["dynamo"]) == h.n_steps
    # the cluster's own TTFT attainment, from its TTFT histogram: off from the requests' by
    # at most the share of requests in the bucket that holds the SLA (interpolated inside it)
    r = made.requests
    done = (r["status"] == 1) & (r["finish_s"] <= DURATION_S)
    ttft = r["ttft_s"][done].to_numpy()
    limit = base.sla.ttft_ms / 1000
    bounds = np.array((0.0, *M.BUCKETS[M.TTFT]))
    b = int(np.searchsorted(bounds, limit))
    in_bucket = ((ttft > bounds[b - 1]) & (ttft <= bounds[b])).mean()
    true = (ttft <= limit).mean()
    assert 0.3 < true < 0.999  # a history where the SLA is neither always nor never met
    assert abs(saved["cluster"]["ttft_attainment"] - true) <= in_bucket + 1e-9
    assert 0 < saved["cluster"]["itl_gap_fraction"] <= 1
    assert report["policies"]["dynamo"]["gpu_hours"] > 0
    # the export is a scenario `planlab run` takes, with the same workload
    path = export_scenario(report["scenario_obj"], tmp_path / "derived.yaml", h)
    again = load_scenario(path)
    assert again.workload == report["scenario_obj"].workload
    assert again.duration_s == DURATION_S
    rc = cli_main(["run", str(path), "--policy", "static", "--out", str(tmp_path / "run")])
    assert rc == 0
    ran = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert ran["requests"]["arrived"] == pytest.approx(h.requests.sum(), rel=0.05)


@needs_prometheus
def test_reset_and_gap_are_reported_not_zero(made, tmp_path):
    """The frontend restarts just after the scrape at 6 min (its counters start again at
    zero) and Prometheus has no samples from 10 to 13 min."""
    t0 = _t0()
    text = openmetrics(made, t0, reset_after_s=360.0, gap_s=(600.0, 780.0), replicas_as="dynamo")
    with BackfilledPrometheus(tmp_path, text) as prom:
        h = read_history(prom.url, t0, t0 + DURATION_S, 60.0)
        missing = read_history(
            prom.url, t0, t0 + DURATION_S, 60.0,
            replica_queries={"prefill": "nosuch_replicas_gauge"},
        )  # fmt: skip
    counts, isl = _truth(made, t0, 60.0, h.n_steps)
    kinds = {(i.kind, i.metric.split("{")[0]) for i in h.issues}
    assert ("reset", M.REQUESTS_TOTAL) in kinds and ("gap", M.REQUESTS_TOTAL) in kinds
    resets = [i for i in h.issues if i.kind == "reset" and i.metric.startswith(M.REQUESTS_TOTAL)]
    assert {(i.start_s - t0, i.end_s - t0) for i in resets} == {(360.0, 420.0)}
    # the restart came right after a grid time: nothing between them is lost
    assert h.requests[6] == counts[6]
    # the gap (grid points 11 and 12 have no samples): the increase across it is known and
    # spread over its three steps, not zero
    np.testing.assert_allclose(h.requests[10:13], counts[10:13].sum() / 3)
    assert (h.requests[10:13] > 0).all()
    np.testing.assert_array_equal(np.delete(h.requests, [10, 11, 12]),
                                  np.delete(counts, [10, 11, 12]))  # fmt: skip
    np.testing.assert_allclose(h.isl.counts[10:13], np.repeat(isl[10:13].sum(0)[None] / 3, 3, 0))
    assert any(i.kind == "missing" and i.metric == "prefill replicas" for i in missing.issues)
    # no kube-state-metrics here: the replicas come from Dynamo's planner gauges
    assert h.replica_queries == {
        "prefill": "sum(planner:num_p_workers)",
        "decode": "sum(planner:num_d_workers)",
    }
    assert np.nanmax(h.replicas["prefill"]) == 3 and np.nanmin(h.replicas["decode"]) == 2
    assert missing.replicas["prefill"] is None


@needs_prometheus
def test_cli_backtest_and_its_errors(served, tmp_path, capsys):
    prom, t0 = served
    out = tmp_path / "o"
    start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0))
    rc = cli_main(
        ["backtest", "--prometheus", prom.url, "--start", start, "--end", str(t0 + 600),
         "--step", "1m", "--policies", "static", "--jobs", "1", "--out", str(out),
         "--export", str(tmp_path / "e.yaml"), "--quiet"]
    )  # fmt: skip
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "10 steps of 60 s" in text and "static" in text
    assert "5.0 GPU-hours" not in text and f"{5 * 600 / 3600:.2f} GPU-hours" in text
    assert (out / "backtest.csv").is_file() and (tmp_path / "e.yaml").is_file()
    # a folder of the user's is never written into; an earlier backtest only with --force
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    again = ["backtest", "--prometheus", prom.url, "--start", str(t0), "--end",
             str(t0 + 600), "--policies", "static", "--jobs", "1", "--quiet"]  # fmt: skip
    assert cli_main([*again, "--out", str(mine)]) == 2
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    assert cli_main([*again, "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert cli_main([*again, "--out", str(out), "--force"]) == 0
    assert cli_main(["backtest", "--prometheus", prom.url, "--start", "yesterday",
                     "--end", "1"]) == 2  # fmt: skip
    assert "RFC 3339" in capsys.readouterr().err
    dead = f"http://127.0.0.1:{free_port()}"
    assert cli_main(["backtest", "--prometheus", dead, "--start", "0", "--end", "600",
                     "--out", str(tmp_path / "x")]) == 2  # fmt: skip
    assert "no answer from Prometheus" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    # a window holding no history
    assert cli_main(["backtest", "--prometheus", prom.url, "--start", "1000000",
                     "--end", "1003600", "--out", str(tmp_path / "y")]) == 2  # fmt: skip
    assert "no samples" in capsys.readouterr().err


def test_histogram_lengths_follow_each_step():
    """The new length distribution: per-step bucket counts, uniform inside a bucket."""
    from scenario import LengthDist

    d = LengthDist("histogram", le=(10.0, 20.0), steps=((0.0, (1.0, 0.0, 0.0)),
                   (60.0, (0.0, 1.0, 1.0)), (120.0, (0.0, 0.0, 0.0))), max=40)  # fmt: skip
    t = np.concatenate([np.full(20000, 30.0), np.full(20000, 90.0), np.full(100, 150.0)])
    x = histogram_lengths(d, len(t), make_rng(1), t)
    first, second = x[:20000], x[20000:40000]
    assert first.min() >= 0 and first.max() <= 10 and abs(first.mean() - 5) < 0.1
    assert (second > 10).all() and second.max() <= 40
    assert abs((second <= 20).mean() - 0.5) < 0.02 and abs(second.mean() - 22.5) < 0.3
    assert (x[40000:] > 10).all()  # an empty step borrows the nearest one with counts


def test_bad_window_is_config_error():
    with pytest.raises(ConfigError, match="after --start"):
        read_history("http://127.0.0.1:9", 100.0, 50.0)
    with pytest.raises(ConfigError, match="fewer than two steps"):
        read_history("http://127.0.0.1:9", 0.0, 90.0, 60.0)
    assert BASE.cluster.prefill.replicas == 1
