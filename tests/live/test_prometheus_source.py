"""PrometheusSource against a real Prometheus scraping a prometheus-client exporter on
loopback whose counters and histograms the test feeds by hand."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from live.prometheus import VLLM_MODEL_LABEL, VLLM_NAMES, PrometheusSource
from planner import metrics as m
from planner.observation import build_observation

pytestmark = [pytest.mark.live, pytest.mark.timeout(120)]

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
SCRAPE_S = 1.0
# Few, round buckets so the expected quantiles are easy to work out by hand.
LAT_BUCKETS = (0.1, 0.2, 0.5, 1.0)
TOK_BUCKETS = (100.0, 1000.0, 10000.0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Prom:
    """A real Prometheus on loopback scraping one target every SCRAPE_S, data in a tmpdir."""

    def __init__(self, target_port: int):
        self.dir = Path(tempfile.mkdtemp(prefix="planlab-prom-"))
        self.port = _free_port()
        cfg = self.dir / "prometheus.yml"
        cfg.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            "  - job_name: frontend\n"
            f"    static_configs: [{{targets: ['127.0.0.1:{target_port}']}}]\n"
        )
        self.proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={cfg}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("prometheus did not become ready in 30 s")

    def wait_scrapes(self, n: int) -> None:
        """Until n scrapes of the target have landed (counted from Prometheus' own samples)."""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            r = httpx.get(
                f"{self.url}/api/v1/query", params={"query": "count_over_time(up[5m])"}
            ).json()
            res = r["data"]["result"]
            if res and float(res[0]["value"][1]) >= n:
                return
            time.sleep(0.2)
        raise RuntimeError(f"fewer than {n} scrapes in 20 s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def _after_next_scrape(prom: Prom) -> None:
    """Wait until two more scrapes have happened, so the last change is in Prometheus."""
    time.sleep(2.5 * SCRAPE_S)


def _serve(registry: CollectorRegistry) -> ThreadingHTTPServer:
    """/metrics in the classic text format whatever the scraper asks for: recent
    prometheus-client versions rewrite `vllm:` names to `vllm_` under OpenMetrics
    negotiation, which real vLLM servers scraped by Prometheus 2.x do not show."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = generate_latest(registry)
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE_LATEST)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class Exporter:
    """Dynamo-named and vLLM-named frontend metrics on one loopback /metrics endpoint."""

    def __init__(self):
        reg = self.registry = CollectorRegistry()
        self.requests = Counter(
            m.REQUESTS_TOTAL.removesuffix("_total"), "requests", ["model", "status"], registry=reg
        )
        self.hists = {
            name: Histogram(
                name,
                name,
                ["model"],
                buckets=TOK_BUCKETS if name in (m.ISL, m.OSL) else LAT_BUCKETS,
                registry=reg,
            )
            for name in m.HISTOGRAMS
        }
        self.inflight = Gauge(m.INFLIGHT, "inflight", ["model"], registry=reg)
        self.queued = Gauge(m.QUEUED, "queued", ["model"], registry=reg)
        # labelled as Dynamo's operator-managed scrape labels it
        self.started = Counter(
            m.REQUESTS_STARTED_TOTAL.removesuffix("_total"),
            "started",
            ["model", "dynamo_namespace"],
            registry=reg,
        )
        self.vllm_requests = Counter(
            VLLM_NAMES[m.REQUESTS_TOTAL].removesuffix("_total"),
            "finished",
            [VLLM_MODEL_LABEL, "finished_reason"],
            registry=reg,
        )
        self.vllm_hists = {
            key: Histogram(
                VLLM_NAMES[key],
                key,
                [VLLM_MODEL_LABEL],
                buckets=TOK_BUCKETS if key in (m.ISL, m.OSL) else LAT_BUCKETS,
                registry=reg,
            )
            for key in m.HISTOGRAMS
        }
        # vLLM's batch and queue: in flight (running + waiting) is 3 + 2.
        for name, value in (("vllm:num_requests_running", 3), ("vllm:num_requests_waiting", 2)):
            Gauge(name, name, [VLLM_MODEL_LABEL], registry=reg).labels("v").set(value)
        self.server = _serve(reg)
        self.port = self.server.server_port

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _create_series(exp: Exporter, model: str) -> None:
    """Make the labelled series exist at 0 before any request, as a warmed-up frontend."""
    exp.requests.labels(model, "success")
    for h in exp.hists.values():
        h.labels(model)
    exp.inflight.labels(model).set(0)
    exp.queued.labels(model).set(0)
    exp.started.labels(model, "ns1")


def _feed(exp: Exporter, model: str) -> None:
    """100 requests: 50 with TTFT 0.15 s, ISL 500; 50 with TTFT 0.4 s, ISL 5000."""
    exp.requests.labels(model, "success").inc(100)
    for i in range(100):
        fast = i < 50
        exp.hists[m.TTFT].labels(model).observe(0.15 if fast else 0.4)
        exp.hists[m.ITL].labels(model).observe(0.05)
        exp.hists[m.REQUEST_DURATION].labels(model).observe(0.9)
        exp.hists[m.ISL].labels(model).observe(500 if fast else 5000)
        exp.hists[m.OSL].labels(model).observe(200)
    exp.inflight.labels(model).set(7)
    exp.queued.labels(model).set(3)
    exp.started.labels(model, "ns1").inc(120)  # 20 admitted and not finished yet


@pytest.fixture(scope="module")
def cluster():
    exp = Exporter()
    prom = Prom(exp.port)
    try:
        _create_series(exp, "llama")
        exp.vllm_requests.labels("v", "stop")
        for h in exp.vllm_hists.values():
            h.labels("v")
        # Enough zero samples that a 12 s window starts before the feed.
        prom.wait_scrapes(14)
        _feed(exp, "llama")
        # vLLM-named metrics: 40 finished requests, TTFT all 0.3 s.
        exp.vllm_requests.labels("v", "stop").inc(40)
        for _ in range(40):
            exp.vllm_hists[m.TTFT].labels("v").observe(0.3)
            exp.vllm_hists[m.ITL].labels("v").observe(0.02)
            exp.vllm_hists[m.REQUEST_DURATION].labels("v").observe(2.0)
            exp.vllm_hists[m.ISL].labels("v").observe(800)
            exp.vllm_hists[m.OSL].labels("v").observe(50)
        _after_next_scrape(prom)
        yield exp, prom
    finally:
        prom.stop()
        exp.stop()


def test_counts_means_and_quantiles_match_what_was_fed(cluster):
    exp, prom = cluster
    src = PrometheusSource(prom.url, model="llama", job="frontend")
    window_s = 12.0
    stats = src.window(time.time(), window_s)
    assert stats.errors == ()
    # increase() extrapolates towards the window end by at most ~one scrape interval, and
    # not below zero at the start (the counter was 0 at the first sample in the window).
    assert 100.0 <= stats.requests <= 100.0 * window_s / (window_s - 2 * SCRAPE_S)
    obs = build_observation(stats)
    # sum and count are scraped together, so the extrapolation factor cancels in means.
    assert obs.ttft_mean_ms == pytest.approx((50 * 150 + 50 * 400) / 100)
    assert obs.isl_mean == pytest.approx((50 * 500 + 50 * 5000) / 100)
    assert obs.osl_mean == pytest.approx(200)
    assert obs.itl_mean_ms == pytest.approx(50)
    assert obs.request_duration_mean_s == pytest.approx(0.9)
    # p90: rank 90 of 100 falls in (0.2, 0.5] holding ranks 51..100: 0.2 + 0.3 * 40/50.
    assert obs.ttft_p90_ms == pytest.approx(440.0)
    # p50: rank 50 is the top of (0.1, 0.2] holding ranks 1..50.
    assert obs.ttft_p50_ms == pytest.approx(200.0)
    assert stats.inflight == 7 and stats.queued == 3
    assert obs.missing == ()


def test_flat_counter_is_zero_and_unseen_model_is_zero(cluster):
    _, prom = cluster
    # The feed ended > 2 scrapes ago: a 2 s window sees the counter flat -> 0, not None.
    src = PrometheusSource(prom.url, model="llama")
    stats = src.window(time.time(), 2.0)
    assert stats.requests == 0.0
    assert stats.ttft_s is not None and stats.ttft_s.count == 0.0
    assert build_observation(stats).idle
    # A model the frontend never served: the target is alive, the series never existed.
    other = PrometheusSource(prom.url, model="never-served").window(time.time(), 10.0)
    assert other.requests == 0.0 and other.errors == ()
    assert build_observation(other).idle


def test_window_shorter_than_a_scrape_is_missing_not_zero(cluster):
    _, prom = cluster
    # Half a scrape interval holds at most one sample: increase() is empty although the
    # series exists, so the count is unknown.
    stats = PrometheusSource(prom.url, model="llama").window(time.time(), 0.4)
    assert stats.requests is None
    assert any("fewer than two samples" in e for e in stats.errors)


def test_wrong_names_give_missing_fields_with_a_reason(cluster):
    _, prom = cluster
    names = {k: f"nonexistent_{i}" for i, k in enumerate((*m.COUNTERS, *m.HISTOGRAMS, *m.GAUGES))}
    stats = PrometheusSource(prom.url, model="llama", metric_names=names).window(time.time(), 10)
    assert stats.requests is None and stats.ttft_s is None and stats.itl_s is None
    assert "no fresh series" in stats.errors[0]
    obs = build_observation(stats)
    assert "num_req" in obs.missing and not obs.idle


def test_unknown_job_is_missing(cluster):
    _, prom = cluster
    stats = PrometheusSource(prom.url, model="llama", job="nope").window(time.time(), 10)
    assert stats.requests is None
    assert "job='nope'" in stats.errors[0]


def test_vllm_names(cluster):
    _, prom = cluster
    src = PrometheusSource(
        prom.url, model="v", metric_names=VLLM_NAMES, model_label=VLLM_MODEL_LABEL
    )
    stats = src.window(time.time(), 12.0)
    assert stats.errors == ()
    assert 40.0 <= stats.requests <= 40.0 * 12 / 10
    obs = build_observation(stats)
    assert obs.ttft_mean_ms == pytest.approx(300)
    assert obs.itl_mean_ms == pytest.approx(20)
    assert obs.isl_mean == pytest.approx(800) and obs.osl_mean == pytest.approx(50)
    assert stats.inflight == 5 and stats.queued == 2
    assert stats.requests_started is None  # vLLM exports no admitted-requests counter
    # The Dynamo names on the vLLM model label find nothing of model "v": zero, not vLLM's.
    dyn = PrometheusSource(prom.url, model="v").window(time.time(), 12.0)
    assert dyn.requests == 0.0


def test_nan_is_missing():
    exp = Exporter()
    prom = Prom(exp.port)
    try:
        _create_series(exp, "x")
        prom.wait_scrapes(3)
        exp.requests.labels("x", "success").inc(5)
        for _ in range(5):
            exp.hists[m.TTFT].labels("x").observe(float("nan"))
            exp.hists[m.ITL].labels("x").observe(0.01)
        exp.inflight.labels("x").set(float("nan"))
        _after_next_scrape(prom)
        stats = PrometheusSource(prom.url, model="x").window(time.time(), 8.0)
        assert stats.requests is not None and stats.requests >= 5
        assert stats.ttft_s is None and stats.inflight is None
        assert any("NaN" in e and m.TTFT in e for e in stats.errors)
        assert "ttft" in build_observation(stats).missing
        assert stats.itl_s is not None and stats.itl_s.mean == pytest.approx(0.01)

        # The exporter goes away: Prometheus marks its series stale at the next scrape.
        exp.stop()
        time.sleep(2.5 * SCRAPE_S)
        gone = PrometheusSource(prom.url, model="x", job="frontend").window(time.time(), 8.0)
        assert gone.requests is None
        assert "down" in gone.errors[0]

        # Prometheus itself stops: connection refused, every field missing, no exception.
        prom.stop()
        down = PrometheusSource(prom.url, model="x", retries=2, backoff_s=0.05).window(
            time.time(), 8.0
        )
        assert down.requests is None and down.ttft_s is None and down.inflight is None
        assert "unreachable" in down.errors[0] and "3 attempts" in down.errors[0]
    finally:
        prom.stop()


def test_bearer_token_file_and_retries_on_5xx(tmp_path):
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    seen: list[tuple[str, str | None]] = []
    answers = iter([503, 502, 200])

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.params["query"], request.headers.get("authorization")))
        status = next(answers, 200)
        if status != 200:
            return httpx.Response(status, text="busy")
        return httpx.Response(
            200, json={"status": "success", "data": {"resultType": "vector", "result": []}}
        )

    src = PrometheusSource(
        "http://prom.invalid:9090",
        bearer_token_file=token,
        backoff_s=0.0,
        transport=httpx.MockTransport(handler),
    )
    res = src.query("up", 1000.0)
    assert res.empty
    assert len(seen) == 3 and all(auth == "Bearer s3cret" for _, auth in seen)
    # A 4xx is not retried; it becomes an error in words.
    src4 = PrometheusSource(
        "http://prom.invalid:9090",
        transport=httpx.MockTransport(
            lambda r: httpx.Response(
                400, json={"status": "error", "errorType": "bad_data", "error": "parse error"}
            )
        ),
    )
    stats = src4.window(1000.0, 10.0)
    assert stats.requests is None and "parse error" in stats.errors[0]


def test_requests_started_with_and_without_the_dynamo_namespace_label(cluster):
    _, prom = cluster
    t = time.time()
    plain = PrometheusSource(prom.url, model="llama").window(t, 120.0)
    scoped = PrometheusSource(prom.url, model="llama", dynamo_namespace="ns1").window(t, 120.0)
    # requests_total has no dynamo_namespace label (a plain scrape): the scoped source
    # still counts admitted requests from the labelled counter.
    assert plain.requests_started == pytest.approx(scoped.requests_started)
    # a window longer than the series' life: increase() is the whole 120, stretched by the
    # extrapolation to the window's end (at most 1.1 scrape intervals over a series of ~30)
    assert 120.0 <= plain.requests_started <= 120.0 * 1.1
    assert build_observation(plain).num_req_started == plain.requests_started
    other = PrometheusSource(prom.url, model="llama", dynamo_namespace="ns2").window(t, 120.0)
    assert other.requests_started is None
