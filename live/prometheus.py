"""The live MetricsSource: window statistics of the frontend metrics from Prometheus'
HTTP API (`/api/v1/query`), with every failure reported as a missing field, never a 0.

How a field is decided, in order (the "missing vs zero" rule):

1. Prometheus unreachable (connection refused, timeout, 5xx after the retries) or the
   query rejected: every field is None and `errors` says so.
2. Liveness: the newest sample of a configured frontend metric (`timestamp()` of the
   request counter, else of the next metric that exists, within Prometheus' 5-minute
   lookback and honouring staleness markers). None at all: every field is
   None ("no series": the target was never scraped, or the names are wrong). Older than
   `staleness_s` before t: every field is None ("stale target"). With `job` set, `up{job}`
   must also be 1.
3. A counter or histogram whose `increase()` has a value uses it (NaN: None).
4. An empty `increase()` for the request counter: if the counter has no series at all at
   t (instant selector, 5-minute lookback, staleness markers honoured) while the target
   is alive (step 2), the frontend has not counted a request of this model since it
   started, so requests = 0 (prometheus-client creates a labelled series at its first
   increment). If the series exists but has fewer than two samples in the window (it
   appeared inside the window, or the window is shorter than two scrapes): None.
5. An empty histogram (or gauge) result counts as zero only when requests == 0 in the
   same window; with requests > 0 its absence is a real gap: None.
6. requests_started_total (Dynamo 1.6's admitted requests) is read when the server
   exports it; otherwise `requests_started` is None and a policy falls back to requests.

Labels: Dynamo's own planner filters the frontend series on `dynamo_namespace`, a label
Dynamo's operator-managed scrape adds (its PodMonitor relabelling) and a plain Prometheus
scrape of the frontend does not. With `dynamo_namespace` set, the source filters on it too;
unset (the default), it matches series with or without the label.
vLLM: `vllm:num_requests_running` is only the running batch; in flight for the planner is
running + waiting, so with vLLM's names `inflight` is the sum of both gauges.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from planner import metrics as m
from planner.observation import HistogramDelta, WindowStats

if TYPE_CHECKING:
    import httpx  # imported where a client is made: METRIC_SETS alone costs nothing

log = logging.getLogger(__name__)

# vLLM's own metric names for planlab's (Dynamo's) frontend metrics (vLLM V1 engine,
# `vllm:` prefix, label `model_name`). vLLM counts finished requests in
# request_success_total; its per-token gap histogram is inter_token_latency_seconds
# (time_per_output_token_seconds is the older name for the same thing).
VLLM_NAMES: dict[str, str] = {
    m.REQUESTS_TOTAL: "vllm:request_success_total",
    m.TTFT: "vllm:time_to_first_token_seconds",
    m.ITL: "vllm:inter_token_latency_seconds",
    m.REQUEST_DURATION: "vllm:e2e_request_latency_seconds",
    m.ISL: "vllm:request_prompt_tokens",
    m.OSL: "vllm:request_generation_tokens",
    # In flight in Dynamo's sense (admitted, not finished): vLLM's running gauge is only
    # the batch, so add the queue. A gauge name may be "a + b" (each summed, then added).
    m.INFLIGHT: "vllm:num_requests_running + vllm:num_requests_waiting",
    m.QUEUED: "vllm:num_requests_waiting",
    m.OUTPUT_TOKENS_TOTAL: "vllm:generation_tokens_total",
    m.ACTIVE: "vllm:num_requests_running",
}
VLLM_MODEL_LABEL = "model_name"

METRIC_SETS: dict[str, tuple[dict[str, str], str]] = {
    "dynamo": ({}, "model"),
    "vllm": (VLLM_NAMES, VLLM_MODEL_LABEL),
}


class PrometheusError(Exception):
    """One query failed; the message says how, in words."""


@dataclass(frozen=True)
class _Result:
    """An instant-vector result: (labels, value) pairs."""

    samples: tuple[tuple[dict[str, str], float], ...]

    @property
    def empty(self) -> bool:
        return not self.samples

    def scalar(self) -> float | None:
        return self.samples[0][1] if self.samples else None


def _duration(seconds: float) -> str:
    """A PromQL range duration; milliseconds keep fractional windows exact."""
    return f"{max(1, round(seconds * 1000))}ms"


def _prom_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


class PrometheusSource:
    """MetricsSource over Prometheus' instant-query API.

    `window(t_s, window_s)` evaluates at the Unix time t_s: `sum(increase(X[W]))` for the
    counters, `sum by (le) (increase(X_bucket[W]))`, `_sum` and `_count` for histograms,
    `sum(X)` for gauges, all filtered by `model_label="model"` when a model is given.
    `metric_names` maps planner.metrics names to the ones the server exports
    (`VLLM_NAMES` with `model_label=VLLM_MODEL_LABEL` for vLLM).
    """

    def __init__(
        self,
        url: str,
        *,
        model: str | None = None,
        bearer_token: str | None = None,
        bearer_token_file: str | Path | None = None,
        verify_tls: bool = True,
        ca_file: str | Path | None = None,
        timeout_s: float = 5.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        metric_names: Mapping[str, str] | None = None,
        model_label: str = "model",
        staleness_s: float = 30.0,
        job: str | None = None,
        transport: httpx.BaseTransport | None = None,
        dynamo_namespace: str | None = None,
    ):
        self.url = url.rstrip("/")
        self.model = model
        self.dynamo_namespace = dynamo_namespace
        self.model_label = model_label
        self.names = {name: name for name in (*m.COUNTERS, *m.HISTOGRAMS, *m.GAUGES)}
        self.names.update(metric_names or {})
        # vLLM exports no admitted-requests counter; and its running gauge excludes waiting.
        self.has_started = self.names[m.REQUESTS_STARTED_TOTAL] == m.REQUESTS_STARTED_TOTAL
        self.staleness_s = staleness_s
        self.job = job
        self.retries = retries
        self.backoff_s = backoff_s
        self._bearer_token = bearer_token
        self._bearer_token_file = Path(bearer_token_file) if bearer_token_file else None
        import httpx

        verify: bool | str = str(ca_file) if ca_file else verify_tls
        self._client = httpx.Client(timeout=timeout_s, verify=verify, transport=transport)

    # -- HTTP ---------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        token = self._bearer_token
        if self._bearer_token_file is not None:
            # Re-read every time: in-cluster service-account tokens are rotated.
            token = self._bearer_token_file.read_text().strip()
        return {"Authorization": f"Bearer {token}"} if token else {}

    def query(self, promql: str, t_s: float) -> _Result:
        """One instant query at t_s; retries connection errors, timeouts and 5xx."""
        import httpx

        params = {"query": promql, "time": f"{t_s:.3f}"}
        last: str = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                resp = self._client.get(
                    f"{self.url}/api/v1/query", params=params, headers=self._headers()
                )
            except httpx.TransportError as exc:
                last = f"Prometheus at {self.url} unreachable ({type(exc).__name__}: {exc})"
                continue
            if resp.status_code >= 500:
                last = f"Prometheus at {self.url} answered HTTP {resp.status_code}"
                continue
            if resp.status_code in (401, 403):
                raise PrometheusError(
                    f"Prometheus at {self.url} refused the query (HTTP {resp.status_code}); "
                    "check the bearer token"
                )
            try:
                body = resp.json()
            except ValueError as exc:
                raise PrometheusError(
                    f"Prometheus at {self.url} answered HTTP {resp.status_code} "
                    "with a body that is not JSON"
                ) from exc
            if resp.status_code != 200 or body.get("status") != "success":
                raise PrometheusError(
                    f"query {promql!r} failed: HTTP {resp.status_code} "
                    f"{body.get('errorType', '')}: {body.get('error', '')}".strip()
                )
            return self._parse(body.get("data", {}), promql)
        raise PrometheusError(f"{last} after {self.retries + 1} attempts")

    @staticmethod
    def _parse(data: dict, promql: str) -> _Result:
        kind = data.get("resultType")
        result = data.get("result")
        if kind == "scalar":
            return _Result((({}, float(result[1])),))
        if kind != "vector":
            raise PrometheusError(f"query {promql!r} returned {kind!r}, expected a vector")
        return _Result(tuple((s.get("metric", {}), float(s["value"][1])) for s in result))

    def close(self) -> None:
        self._client.close()

    # -- PromQL -------------------------------------------------------------------------

    def _sel(self, extra: str = "") -> str:
        parts = []
        if self.model is not None:
            parts.append(f'{self.model_label}="{_prom_escape(self.model)}"')
        if self.dynamo_namespace is not None:
            parts.append(f'dynamo_namespace="{_prom_escape(self.dynamo_namespace)}"')
        if extra:
            parts.append(extra)
        return "{" + ",".join(parts) + "}" if parts else ""

    def _liveness(self, t_s: float) -> str | None:
        """None when the target is alive at t_s; otherwise why not, in words."""
        series = [
            n
            for k in (*m.COUNTERS, *m.GAUGES)
            if k != m.REQUESTS_STARTED_TOTAL or self.has_started
            for n in self.names[k].split(" + ")
        ]
        series += [f"{self.names[k]}_count" for k in m.HISTOGRAMS]
        if self.job is not None:
            up = self.query(f'max(up{{job="{_prom_escape(self.job)}"}})', t_s).scalar()
            if up is None:
                return f"no target with job={self.job!r} in Prometheus"
            if up < 1:
                return f"target job={self.job!r} is down (up == 0)"
        # One name at a time: timestamp() drops __name__, so a regex over several names
        # would collide on equal label sets. The first name found usually answers.
        newest = None
        for name in dict.fromkeys(series):
            newest = self.query(f"max(timestamp({name}))", t_s).scalar()
            if newest is not None:
                break
        if newest is None:
            return (
                f"no fresh series of the frontend metrics ({self.names[m.REQUESTS_TOTAL]}, ...) "
                f"in Prometheus at t={t_s:.0f}: the target is down or was never scraped, "
                "or the metric names are wrong"
            )
        age = t_s - newest
        if age > self.staleness_s:
            return (
                f"stale target: the newest frontend sample is {age:.1f} s old "
                f"(more than staleness_s={self.staleness_s:g})"
            )
        return None

    def _increase(self, name: str, w: str, t_s: float, by_le: bool = False) -> _Result:
        agg = "sum by (le)" if by_le else "sum"
        return self.query(f"{agg}(increase({name}{self._sel()}[{w}]))", t_s)

    def _requests(self, w: str, t_s: float, errors: list[str]) -> float | None:
        name = self.names[m.REQUESTS_TOTAL]
        value = self._increase(name, w, t_s).scalar()
        if value is not None:
            if math.isnan(value):
                errors.append(f"requests: increase({name}) is NaN")
                return None
            return value
        exists = self.query(f"count({name}{self._sel()})", t_s).scalar()
        if exists is None:
            # Rule 4: the target is alive but has no series of this counter (within the
            # lookback): it never counted a request of this model since it (re)started.
            return 0.0
        errors.append(
            f"requests: {name} exists but has fewer than two samples in the {w} window "
            "(series new, or the window is shorter than two scrapes)"
        )
        return None

    def _started(self, w: str, t_s: float) -> float | None:
        """Increase of requests_started_total; None where it is not exported (or NaN)."""
        if not self.has_started:
            return None
        value = self._increase(self.names[m.REQUESTS_STARTED_TOTAL], w, t_s).scalar()
        return None if value is None or math.isnan(value) else value

    def _histogram(
        self, key: str, w: str, t_s: float, requests: float | None, errors: list[str]
    ) -> HistogramDelta | None:
        name = self.names[key]
        buckets = self._increase(f"{name}_bucket", w, t_s, by_le=True)
        total = self._increase(f"{name}_sum", w, t_s).scalar()
        count = self._increase(f"{name}_count", w, t_s).scalar()
        if buckets.empty or total is None or count is None:
            if requests == 0:
                # Rule 5: nothing was observed because nothing arrived.
                bounds = m.BUCKETS.get(key, ())
                return HistogramDelta(bounds, (0.0,) * (len(bounds) + 1), 0.0, 0.0)
            errors.append(f"{key}: no increase of {name} in the {w} window")
            return None
        pairs = []
        for labels, value in buckets.samples:
            le = labels.get("le")
            if le is None:
                continue
            pairs.append((math.inf if le == "+Inf" else float(le), value))
        pairs.sort()
        if not pairs or not math.isinf(pairs[-1][0]):
            errors.append(f"{key}: {name}_bucket has no +Inf bucket")
            return None
        values = [v for _, v in pairs] + [total, count]
        if any(math.isnan(v) for v in values):
            errors.append(f"{key}: increase of {name} is NaN")
            return None
        return HistogramDelta(
            upper_bounds=tuple(b for b, _ in pairs[:-1]),
            cumulative=tuple(v for _, v in pairs),
            sum=total,
            count=count,
        )

    def _sum(self, name: str) -> str:
        """`sum(X{model})`, or `sum(a{model}) + sum(b{model})` for a name "a + b"."""
        return " + ".join(f"sum({part}{self._sel()})" for part in name.split(" + "))

    def _gauge(self, key: str, t_s: float, requests: float | None, errors: list[str]):
        name = self.names[key]
        value = self.query(self._sum(name), t_s).scalar()
        if value is None:
            if requests == 0:
                return 0.0
            errors.append(f"{key}: no sample of {name} at t")
            return None
        if math.isnan(value):
            errors.append(f"{key}: {name} is NaN")
            return None
        return value

    def current(self, key: str, t_s: float) -> float | None:
        """The value of a metric (planner.metrics name) at t_s, summed over its series:
        a counter's running total or a gauge. None when Prometheus has no such series."""
        return self.query(self._sum(self.names[key]), t_s).scalar()

    # -- MetricsSource ------------------------------------------------------------------

    def window(self, t_s: float, window_s: float) -> WindowStats:
        """Window statistics over (t_s - window_s, t_s], t_s a Unix time in seconds."""
        empty = dict(
            t_s=t_s,
            window_s=window_s,
            requests=None,
            ttft_s=None,
            itl_s=None,
            duration_s=None,
            isl_tokens=None,
            osl_tokens=None,
        )
        try:
            dead = self._liveness(t_s)
        except (PrometheusError, OSError) as exc:
            log.warning("prometheus: %s", exc)
            return WindowStats(**empty, errors=(str(exc),))
        if dead is not None:
            log.warning("prometheus: %s", dead)
            return WindowStats(**empty, errors=(dead,))
        w = _duration(window_s)
        errors: list[str] = []
        try:
            requests = self._requests(w, t_s, errors)
            hists = {
                field: self._histogram(key, w, t_s, requests, errors)
                for field, key in (
                    ("ttft_s", m.TTFT),
                    ("itl_s", m.ITL),
                    ("duration_s", m.REQUEST_DURATION),
                    ("isl_tokens", m.ISL),
                    ("osl_tokens", m.OSL),
                )
            }
            inflight = self._gauge(m.INFLIGHT, t_s, requests, errors)
            queued = self._gauge(m.QUEUED, t_s, requests, errors)
            started = self._started(w, t_s)
        except (PrometheusError, OSError) as exc:
            # Prometheus went away mid-window: report nothing rather than half a window.
            log.warning("prometheus: %s", exc)
            return WindowStats(**empty, errors=(*errors, str(exc)))
        for e in errors:
            log.info("prometheus: %s", e)
        return WindowStats(
            t_s=t_s,
            window_s=window_s,
            requests=requests,
            **hists,
            inflight=inflight,
            queued=queued,
            errors=tuple(errors),
            requests_started=started,
        )
