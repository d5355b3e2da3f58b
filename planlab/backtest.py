"""`planlab backtest`: a cluster's frontend history read from Prometheus (`query_range`),
turned into a workload (a piecewise request rate and per-step ISL/OSL histograms), replayed
in the simulator under each policy, and set beside the replicas the cluster really ran.

The history is read on a grid of steps: at every grid time t_k, `last_over_time(x[step])`
gives each series' last sample in (t_k - step, t_k] (the range is one millisecond short of a
step, so Prometheus 2.x's closed ranges do not reach back to t_(k-1)), so the increase of a counter over step
k is the difference of two such values (exact, no extrapolation: the steps add up to the
counter's own increase). What the history lacks is reported, never made zero:

* a counter that drops (a frontend restart) counts its value after the drop as the step's
  increase (what Prometheus' increase() does); what was counted between the last sample
  and the restart is lost, and said so;
* a series without samples for some steps (a scrape gap) whose value is known on both sides
  has the increase across the gap spread evenly over its steps;
* a step no series knows anything about gets the rate interpolated between the nearest known
  steps (and the length distribution of the nearest step with counts);
* a metric that is absent altogether (the replica counts, a histogram) is named in the report.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from planner import metrics as M
from planner.errors import ConfigError
from scenario import (
    AnalyticSpec,
    ArrivalSpec,
    ClusterSpec,
    LengthDist,
    ModelSpec,
    PiecewiseRate,
    PlannerSpec,
    RoleSpec,
    Scenario,
    SLASpec,
    WorkloadSpec,
)

log = logging.getLogger(__name__)

# Replica counts, when the cluster recorded them, tried in order: kube-state-metrics'
# Deployment spec (https://github.com/kubernetes/kube-state-metrics/blob/main/docs/metrics/
# workload/deployment-metrics.md), then Dynamo's planner gauges (`planner:num_p_workers`,
# `planner:num_d_workers`, the planner's Prometheus metrics in Dynamo's planner docs); any
# other series can be named with --replicas ROLE=PROMQL.
DEFAULT_REPLICA_QUERIES: dict[str, tuple[str, ...]] = {
    "prefill": (
        'sum(kube_deployment_spec_replicas{deployment=~".*prefill.*"})',
        "sum(planner:num_p_workers)",
    ),
    "decode": (
        'sum(kube_deployment_spec_replicas{deployment=~".*decode.*"})',
        "sum(planner:num_d_workers)",
    ),
}
ROLES = ("prefill", "decode")


# --- input ----------------------------------------------------------------------------------


def _utc(t_s: float) -> datetime:
    return datetime.fromtimestamp(t_s, tz=UTC)


def parse_time(text: str, key: str) -> float:
    """RFC 3339 (2026-03-01T12:00:00Z, with an offset or Z) or Unix seconds -> Unix seconds."""
    s = str(text).strip()
    try:
        return float(s)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(s.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        dt = None
    if dt is None or dt.tzinfo is None:
        raise ConfigError(
            f"got {text!r}; expected an RFC 3339 time with a zone (2026-03-01T12:00:00Z) or "
            "Unix seconds",
            key=key,
        )
    return dt.timestamp()


@dataclass(frozen=True)
class Issue:
    """One thing the history lacked, and what was done about it."""

    kind: str  # reset | gap | starts | ends | filled | missing | borrowed
    metric: str
    start_s: float  # Unix seconds
    end_s: float
    detail: str
    amount: float = 0.0  # the count it concerns (to pick the telling one of many series)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class PrometheusRange:
    """query_range over HTTP (httpx), the answer as {labels: values on the grid}."""

    def __init__(self, url: str, *, timeout_s: float = 30.0, token: str | None = None):
        import httpx

        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.Client(timeout=timeout_s, headers=headers)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> PrometheusRange:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # Prometheus answers at most 11,000 points per series in one query_range
    # (promql/engine: "exceeded maximum resolution of 11,000 points per timeseries").
    MAX_POINTS = 10_000

    def grid(
        self, promql: str, grid_s: np.ndarray, step_s: float
    ) -> list[tuple[dict[str, str], np.ndarray]]:
        """Each series' values at the grid times (NaN where Prometheus has none), asked in
        pieces of at most MAX_POINTS grid times."""
        merged: dict[tuple, tuple[dict[str, str], np.ndarray]] = {}
        for a in range(0, len(grid_s), self.MAX_POINTS):
            piece = grid_s[a : a + self.MAX_POINTS]
            for labels, values in self._grid(promql, piece, step_s):
                key = tuple(sorted(labels.items()))
                if key not in merged:
                    merged[key] = (labels, np.full(len(grid_s), np.nan))
                merged[key][1][a : a + len(piece)] = values
        return list(merged.values())

    def _grid(
        self, promql: str, grid_s: np.ndarray, step_s: float
    ) -> list[tuple[dict[str, str], np.ndarray]]:
        import httpx

        params = {
            "query": promql,
            "start": f"{grid_s[0]:.3f}",
            "end": f"{grid_s[-1]:.3f}",
            "step": f"{step_s:g}s",
        }
        try:
            resp = self._client.get(f"{self.url}/api/v1/query_range", params=params)
        except httpx.HTTPError as exc:
            raise ConfigError(
                f"no answer from Prometheus at {self.url}: {exc}", key="--prometheus"
            ) from exc
        try:
            body = resp.json()
        except ValueError:
            body = {}
        if resp.status_code != 200 or body.get("status") != "success":
            raise ConfigError(
                f"Prometheus at {self.url} refused {promql!r}: HTTP {resp.status_code} "
                f"{body.get('error') or resp.text[:200]}",
                key="--prometheus",
            )
        out = []
        for series in body["data"]["result"]:
            values = np.full(len(grid_s), np.nan)
            for t, v in series["values"]:
                k = int(round((float(t) - grid_s[0]) / step_s))
                if 0 <= k < len(grid_s):
                    values[k] = float(v)
            out.append((dict(series["metric"]), values))
        return out


# --- counters on a grid ---------------------------------------------------------------------


def _label_text(labels: dict[str, str]) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "__name__")
    return f"{{{inner}}}" if inner else ""


def series_increase(
    values: np.ndarray, grid_s: np.ndarray, metric: str, issues: list[Issue]
) -> np.ndarray:
    """Per-step increase of one counter series sampled on the grid (len(grid) - 1 steps; NaN
    where unknown), with its resets, gaps, start and end reported in issues."""
    n = len(values) - 1
    inc = np.full(n, np.nan)
    have = np.flatnonzero(~np.isnan(values))
    if len(have) == 0:
        return inc
    if have[0] > 0:
        issues.append(
            Issue("starts", metric, grid_s[0], grid_s[have[0]],
                  "no samples before this; its first value is the baseline, not an increase")
        )  # fmt: skip
    for a, b in zip(have, have[1:], strict=False):
        d = values[b] - values[a]
        if d < 0:
            issues.append(
                Issue("reset", metric, grid_s[a], grid_s[b],
                      f"counter fell from {values[a]:g} to {values[b]:g} (a restart); counted "
                      f"{values[b]:g} after it, what came between the last sample and the "
                      "restart is lost", float(values[a]))
            )  # fmt: skip
            d = values[b]
        if b > a + 1:
            issues.append(
                Issue("gap", metric, grid_s[a], grid_s[b],
                      f"no samples for {b - a - 1} grid point(s); the increase across the gap "
                      f"({d:g}) is spread evenly over its {b - a} steps", float(d))
            )  # fmt: skip
        inc[a:b] = d / (b - a)
    if have[-1] < n:
        issues.append(
            Issue("ends", metric, grid_s[have[-1]], grid_s[-1],
                  "no samples after this; those steps are unknown for this series")
        )  # fmt: skip
    return inc


def summed_increase(
    series: Sequence[tuple[dict[str, str], np.ndarray]],
    grid_s: np.ndarray,
    name: str,
    issues: list[Issue],
) -> np.ndarray:
    """The increase per step summed over series; NaN at a step no series knows."""
    n = len(grid_s) - 1
    if not series:
        return np.full(n, np.nan)
    incs = np.array(
        [series_increase(v, grid_s, name + _label_text(lab), issues) for lab, v in series]
    )
    known = ~np.isnan(incs)
    total = np.where(known, incs, 0.0).sum(axis=0)
    return np.where(known.any(axis=0), total, np.nan)


@dataclass(frozen=True)
class StepHistogram:
    """Per-step bucket counts of one histogram: le (upper bounds, without +Inf), counts of
    shape (steps, len(le) + 1) with the last column above the last bound (NaN rows: unknown),
    and the per-step sum of the observations (NaN: unknown)."""

    le: tuple[float, ...]
    counts: np.ndarray
    sums: np.ndarray

    def means(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.sums / self.counts.sum(axis=1)


def _le(labels: dict[str, str]) -> float:
    return math.inf if labels.get("le") in ("+Inf", "Inf", "inf") else float(labels["le"])


def step_histogram(
    buckets: Sequence[tuple[dict[str, str], np.ndarray]],
    sums: Sequence[tuple[dict[str, str], np.ndarray]],
    grid_s: np.ndarray,
    name: str,
    issues: list[Issue],
) -> StepHistogram | None:
    """Per-step counts from cumulative bucket counters (summed over every label but le)."""
    by_le: dict[float, list] = {}
    for labels, values in buckets:
        by_le.setdefault(_le(labels), []).append((labels, values))
    if not by_le:
        return None
    bounds = sorted(by_le)
    if bounds[-1] != math.inf:
        raise ConfigError(f'{name}_bucket has no le="+Inf" series; expected a histogram')
    cumulative = np.array(
        [summed_increase(by_le[b], grid_s, f"{name}_bucket", issues) for b in bounds]
    )
    per_bucket = np.diff(cumulative, axis=0, prepend=0.0).T  # (steps, buckets)
    bad = np.nan_to_num(per_bucket) < -1e-9
    if bad.any():
        issues.append(
            Issue("filled", f"{name}_bucket", grid_s[0], grid_s[-1],
                  f"{int(bad.any(axis=1).sum())} step(s) whose cumulative buckets decrease "
                  "with le (series scraped apart); those buckets are counted as 0")
        )  # fmt: skip
    per_bucket = np.where(bad, 0.0, per_bucket)
    unknown = np.isnan(per_bucket).any(axis=1)
    per_bucket[unknown] = np.nan
    return StepHistogram(
        tuple(bounds[:-1]), per_bucket, summed_increase(sums, grid_s, f"{name}_sum", issues)
    )


# --- the history ----------------------------------------------------------------------------


@dataclass(frozen=True)
class History:
    """What Prometheus holds for [start_s, end_s] on a grid of step_s: grid_s has one time
    more than there are steps; step k is (grid_s[k], grid_s[k + 1]]."""

    url: str
    start_s: float
    end_s: float
    step_s: float
    grid_s: np.ndarray
    requests: np.ndarray  # per step, NaN unknown
    isl: StepHistogram | None
    osl: StepHistogram | None
    replicas: dict[str, np.ndarray | None]  # per grid time, NaN unknown; None: not recorded
    issues: tuple[Issue, ...] = field(default=())
    ttft: StepHistogram | None = None
    itl: StepHistogram | None = None
    replica_queries: dict[str, str | None] = field(default_factory=dict)  # the ones that answered

    @property
    def n_steps(self) -> int:
        return len(self.grid_s) - 1


def read_history(
    url: str,
    start_s: float,
    end_s: float,
    step_s: float = 60.0,
    *,
    replica_queries: dict[str, str] | None = None,
    token: str | None = None,
) -> History:
    """The frontend's request counter, ISL and OSL histograms and (when recorded) the
    replica counts for [start_s, end_s], read with query_range on a grid of step_s."""
    if not (step_s > 0 and math.isfinite(step_s)):
        raise ConfigError(f"--step {step_s!r}: expected a positive duration")
    if not end_s > start_s:
        raise ConfigError(f"--end must be after --start (got {start_s:g} .. {end_s:g})")
    n = int(math.floor((end_s - start_s) / step_s + 1e-9))
    if n < 2:
        raise ConfigError(
            f"the window is {end_s - start_s:g} s, fewer than two steps of {step_s:g} s; "
            "expected a longer window or a shorter --step",
            key="--end",
        )
    grid = start_s + step_s * np.arange(n + 1)
    # one millisecond short of a step: Prometheus 2.x ranges are closed at both ends, and a
    # sample exactly on the previous grid time must not hide a gap behind it
    w = f"[{max(1, int(round(step_s * 1000)) - 1)}ms]"
    issues: list[Issue] = []
    queries = dict(DEFAULT_REPLICA_QUERIES)
    queries.update({role: (q,) for role, q in (replica_queries or {}).items()})
    used: dict[str, str | None] = {}
    with PrometheusRange(url, token=token) as prom:

        def last(metric: str) -> list[tuple[dict[str, str], np.ndarray]]:
            return prom.grid(f"last_over_time({metric}{w})", grid, step_s)

        requests = summed_increase(last(M.REQUESTS_TOTAL), grid, M.REQUESTS_TOTAL, issues)
        hists = {}
        for key, name in (("isl", M.ISL), ("osl", M.OSL)):
            hists[key] = step_histogram(
                last(f"{name}_bucket"), last(f"{name}_sum"), grid, name, issues
            )
            if hists[key] is None:
                issues.append(
                    Issue("missing", name, grid[0], grid[-1],
                          "no such histogram in the window; the base scenario's "
                          f"{key.upper()} distribution is used")
                )  # fmt: skip
        for key, name in (("ttft", M.TTFT), ("itl", M.ITL)):
            # only for the cluster's own attainment; absent is said, nothing else needs it
            hists[key] = step_histogram(last(f"{name}_bucket"), last(f"{name}_sum"), grid, name, [])
            if hists[key] is None:
                issues.append(
                    Issue("missing", name, grid[0], grid[-1],
                          "no such histogram in the window; the cluster's attainment is "
                          "not shown")
                )  # fmt: skip
        if np.isnan(requests).all():
            if hists["isl"] is not None and not np.isnan(hists["isl"].counts).all():
                requests = hists["isl"].counts.sum(axis=1)
                issues.append(
                    Issue("missing", M.REQUESTS_TOTAL, grid[0], grid[-1],
                          f"no such counter in the window; the request count is {M.ISL}'s "
                          "count (successful requests only)")
                )  # fmt: skip
            else:
                raise ConfigError(
                    f"Prometheus at {url} has no samples of {M.REQUESTS_TOTAL} or {M.ISL} "
                    f"between {start_s:g} and {end_s:g}; expected the frontend's metrics "
                    "(is the window right?)",
                    key="--start",
                )
        replicas: dict[str, np.ndarray | None] = {}
        for role in ROLES:
            got, used[role] = [], None
            for query in queries[role]:
                got = prom.grid(query, grid, step_s)
                if got:
                    used[role] = query
                    break
            if not got:
                replicas[role] = None
                issues.append(
                    Issue("missing", f"{role} replicas", grid[0], grid[-1],
                          f"{' and '.join(queries[role])} have no samples; the cluster's "
                          "replicas are not shown")
                )  # fmt: skip
                continue
            values = np.nansum([v for _, v in got], axis=0)
            values[np.isnan(np.array([v for _, v in got])).all(axis=0)] = np.nan
            replicas[role] = values
            missing = int(np.isnan(values).sum())
            if missing:
                issues.append(
                    Issue("gap", f"{role} replicas", grid[0], grid[-1],
                          f"{missing} grid point(s) without a value; the cluster's GPU-hours "
                          "hold the last known count across them")
                )  # fmt: skip
    return History(
        url, start_s, end_s, step_s, grid, requests, hists["isl"], hists["osl"], replicas,
        tuple(issues), hists["ttft"], hists["itl"], used,
    )  # fmt: skip


# --- the workload ---------------------------------------------------------------------------


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) index ranges where mask is True."""
    out, k = [], 0
    while k < len(mask):
        if mask[k]:
            j = k
            while j < len(mask) and mask[j]:
                j += 1
            out.append((k, j))
            k = j
        else:
            k += 1
    return out


def step_rates(history: History) -> tuple[np.ndarray, list[Issue]]:
    """Requests per second per step; unknown steps interpolated between known neighbours."""
    counts = history.requests
    known = ~np.isnan(counts)
    idx = np.arange(len(counts))
    filled = np.interp(idx, idx[known], counts[known])
    issues = [
        Issue("filled", M.REQUESTS_TOTAL, history.grid_s[a], history.grid_s[b],
              f"no data for {b - a} step(s); the rate is interpolated between the nearest "
              "known steps")
        for a, b in _runs(~known)
    ]  # fmt: skip
    return filled / history.step_s, issues


def _length_dist(
    hist: StepHistogram | None, history: History, fallback: LengthDist | None, metric: str
) -> tuple[LengthDist, list[Issue]]:
    if hist is None:
        if fallback is None:
            raise ConfigError(f"no {metric} history and no base distribution to use instead")
        return fallback, []
    counts = hist.counts
    usable = ~np.isnan(counts).any(axis=1) & (np.nan_to_num(counts).sum(axis=1) > 0)
    if not usable.any():
        if fallback is None:
            raise ConfigError(f"{metric} has no observations in the window")
        return fallback, [
            Issue("missing", metric, history.grid_s[0], history.grid_s[-1],
                  "no observations in the window; the base distribution is used")
        ]  # fmt: skip
    need = (history.requests > 0) | np.isnan(history.requests)
    issues = [
        Issue("borrowed", metric, history.grid_s[a], history.grid_s[b],
              f"{b - a} step(s) with requests but no histogram counts; lengths are drawn from "
              "the nearest step with counts")
        for a, b in _runs(need & ~usable)
    ]  # fmt: skip
    rows = np.where(usable[:, None], np.nan_to_num(counts), 0.0)
    steps = tuple(
        (float(k * history.step_s), tuple(float(round(c, 6)) for c in row))
        for k, row in enumerate(rows)
    )
    top = int(math.ceil(hist.le[-1] * 2))
    return LengthDist("histogram", le=tuple(hist.le), steps=steps, min=1, max=top), issues


BASE = Scenario(
    name="backtest",
    seed=1,
    duration_s=3600.0,
    model=ModelSpec(analytic=AnalyticSpec("llama-3.1-8b", "h200", "fp8", 1)),
    cluster=ClusterSpec(prefill=RoleSpec(replicas=1), decode=RoleSpec(replicas=1)),
    workload=WorkloadSpec(
        arrival=ArrivalSpec("poisson", PiecewiseRate(((0.0, 1.0),))),
        isl=LengthDist("lognormal", mean=3000, cv=0.5),
        osl=LengthDist("lognormal", mean=150, cv=0.5),
    ),
    sla=SLASpec(),
    planner=PlannerSpec(policy="dynamo", interval_s=60.0, predictor="constant"),
)
"""The cluster assumed when no --scenario is given: one prefill and one decode replica of
Llama-3.1-8B on H200 (the analytic profile), the default SLA."""


def derive_scenario(history: History, base: Scenario = BASE) -> tuple[Scenario, list[Issue]]:
    """base with the history's workload (a Poisson arrival at each step's rate, and each
    step's ISL/OSL histogram), its duration, and the replicas the cluster ran at the start."""
    rates, issues = step_rates(history)
    points = tuple((float(k * history.step_s), float(r)) for k, r in enumerate(rates))
    if max(r for _, r in points) <= 0:
        raise ConfigError("the history has no requests in the window; nothing to replay")
    isl, more = _length_dist(history.isl, history, base.workload.isl, M.ISL)
    issues += more
    osl, more = _length_dist(history.osl, history, base.workload.osl, M.OSL)
    issues += more
    cluster = base.cluster
    for role in ROLES:
        rec = history.replicas.get(role)
        if rec is not None and not np.isnan(rec[0]) and rec[0] >= 1:
            spec = dataclasses.replace(getattr(cluster, role), replicas=int(round(rec[0])))
            cluster = dataclasses.replace(cluster, **{role: spec})
    stamp = _utc(history.start_s).strftime("%Y%m%d-%H%M")
    return (
        dataclasses.replace(
            base,
            name=f"{base.name}-{stamp}",
            duration_s=history.n_steps * history.step_s,
            cluster=cluster,
            workload=WorkloadSpec(
                arrival=ArrivalSpec("poisson", PiecewiseRate(points)), isl=isl, osl=osl
            ),
            source=None,
        ),
        issues,
    )


def export_scenario(scenario: Scenario, path: str | Path, history: History) -> Path:
    """The derived scenario as YAML that `planlab run` takes (written atomically)."""
    import yaml

    from planlab.compare import _write_text
    from scenario import scenario_to_dict

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    head = (
        f"# Derived by planlab backtest from {history.url}, "
        f"{_utc(history.start_s).isoformat()} .. "
        f"{_utc(history.end_s).isoformat()}, step {history.step_s:g} s.\n"
    )
    body = yaml.safe_dump(scenario_to_dict(scenario), sort_keys=False, default_flow_style=None)
    _write_text(path, head + body)
    return path


# --- the replay and the report --------------------------------------------------------------


def _replicas_at(timeline: pd.DataFrame, role: str, t_s: np.ndarray) -> np.ndarray:
    """The desired replicas of role in force at each time: the last row at or before it
    (before the first row, the first row's: the replicas the run started with)."""
    tl = timeline.dropna(subset=[f"{role}_desired"])
    times = tl["t_s"].to_numpy(dtype=float)
    vals = tl[f"{role}_desired"].to_numpy(dtype=float)
    if len(vals) == 0:
        return np.full(len(t_s), np.nan)
    k = np.searchsorted(times, t_s, side="right") - 1
    return vals[np.clip(k, 0, len(vals) - 1)]


def cluster_gpu_hours(history: History, scenario: Scenario) -> float | None:
    """GPU-hours of the recorded replicas: each grid value held for one step (unknown
    values hold the last known one)."""
    total = 0.0
    for role in ROLES:
        rec = history.replicas.get(role)
        if rec is None or np.isnan(rec).all():
            return None
        held = pd.Series(rec[:-1]).ffill().bfill().to_numpy()
        gpus = getattr(scenario.cluster, role).gpus_per_replica
        total += float(held.sum()) * gpus * history.step_s / 3600.0
    return total


def fraction_at_most(hist: StepHistogram | None, limit: float) -> float | None:
    """The share of a histogram's observations over the whole window at or below limit,
    interpolated linearly inside the bucket that holds it (as histogram_quantile does)."""
    if hist is None:
        return None
    counts = np.nansum(hist.counts, axis=0)
    total = counts.sum()
    if total <= 0:
        return None
    upper = np.array(hist.le)
    lower = np.concatenate(([0.0], upper[:-1]))
    below = counts[:-1][upper <= limit].sum()
    inside = np.flatnonzero((lower < limit) & (limit < upper))
    if len(inside):
        b = inside[0]
        below += counts[b] * (limit - lower[b]) / (upper[b] - lower[b])
    return float(below / total)


_SLUG = re.compile(r"[^A-Za-z0-9._-]+")


def backtest(
    history: History,
    policies: Sequence[str],
    out_dir: str | Path,
    *,
    base: Scenario = BASE,
    seeds: int = 1,
    backend=None,
    progress=None,
) -> dict[str, Any]:
    """Replay the history's workload under each policy (planlab.compare, so processes or a
    Dask cluster), then write backtest.csv (per step: the rate, mean lengths, the cluster's
    replicas and each policy's) and backtest.json (totals per policy and the data issues)."""
    from planlab.compare import _check_policies, _write_text, compare
    from planlab.results import read_run

    out_dir = Path(out_dir)
    _check_policies(policies)
    scenario, issues = derive_scenario(history, base)
    issues = list(history.issues) + issues
    df = compare([scenario], list(policies), seeds, out_dir, backend=backend, progress=progress)
    rates, _ = step_rates(history)
    t_rel = history.grid_s[:-1] - history.start_s
    table: dict[str, Any] = {
        "t": [_utc(t).isoformat() for t in history.grid_s[:-1]],
        "t_s": t_rel,
        "requests": history.requests,
        "rate_rps": rates,
        "isl_mean": history.isl.means() if history.isl else np.nan,
        "osl_mean": history.osl.means() if history.osl else np.nan,
    }
    for role in ROLES:
        rec = history.replicas.get(role)
        table[f"cluster_{role}"] = rec[:-1] if rec is not None else np.nan
    totals: dict[str, Any] = {}
    runs = df[(df["kind"] == "run") & (df["status"] == "ok")]
    for policy in policies:
        mine = runs[runs["policy"] == policy]
        if mine.empty:
            totals[policy] = {"status": "crashed"}
            continue
        first = mine.iloc[0]
        tl = read_run(first["run_dir"]).timeline
        for role in ROLES:
            table[f"{_SLUG.sub('-', policy)}_{role}"] = _replicas_at(tl, role, t_rel)
        totals[policy] = {
            "gpu_hours": float(pd.to_numeric(mine["gpu_hours"]).mean()),
            "joint_attainment": float(pd.to_numeric(mine["joint_attainment"]).mean()),
            "ttft_attainment": float(pd.to_numeric(mine["ttft_attainment"]).mean()),
            "itl_attainment": float(pd.to_numeric(mine["itl_attainment"]).mean()),
            "scaling_events": float(pd.to_numeric(mine["scaling_events"]).mean()),
            "runs": len(mine),
            "run_dirs": [str(d) for d in mine["run_dir"]],
        }
    steps = pd.DataFrame(table)
    _write_text(out_dir / "backtest.csv", steps.to_csv(index=False, lineterminator="\n"))
    plot_gpus(steps, scenario, list(policies), out_dir / "plots")
    report = {
        "prometheus": history.url,
        "start": _utc(history.start_s).isoformat(),
        "end": _utc(history.end_s).isoformat(),
        "start_s": history.start_s,
        "end_s": history.end_s,
        "step_s": history.step_s,
        "steps": history.n_steps,
        "requests": float(np.nansum(history.requests)),
        "scenario": scenario.name,
        "cluster": {
            "gpu_hours": cluster_gpu_hours(history, scenario),
            # from the frontend's histograms, interpolated inside a bucket: TTFT per request;
            # ITL per token gap (not per request's mean gap, as the simulated attainment is)
            "ttft_attainment": fraction_at_most(history.ttft, scenario.sla.ttft_ms / 1000),
            "itl_gap_fraction": fraction_at_most(history.itl, scenario.sla.itl_ms / 1000),
            "replicas_recorded": {r: history.replicas.get(r) is not None for r in ROLES},
            "replica_queries": history.replica_queries,
        },
        "policies": totals,
        "issues": [i.to_dict() for i in issues],
    }
    _write_text(
        out_dir / "backtest.json",
        json.dumps(_jsonable(report), indent=2, sort_keys=False, allow_nan=False) + "\n",
    )
    report["scenario_obj"] = scenario
    report["steps_frame"] = steps
    return report


def plot_gpus(
    steps: pd.DataFrame, scenario: Scenario, policies: Sequence[str], plots_dir: Path
) -> Path:
    """plots/backtest-gpus.png (+ .json): the request rate, and the GPUs the cluster held
    beside the GPUs each policy would have held, step by step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from planlab.compare import _policy_color
    from planlab.report import save_figure

    plots_dir.mkdir(parents=True, exist_ok=True)
    gp = scenario.cluster.prefill.gpus_per_replica
    gd = scenario.cluster.decode.gpus_per_replica
    t_min = steps["t_s"].to_numpy(dtype=float) / 60.0
    edges = np.append(t_min, scenario.duration_s / 60.0)  # the last step drawn to its end

    def held(values: Any) -> np.ndarray:
        v = np.asarray(values, dtype=float)
        return np.append(v, v[-1:])

    series: dict[str, Any] = {"t_min": t_min, "rate_rps": steps["rate_rps"].to_numpy()}
    lines = {"cluster (recorded)": ("cluster_prefill", "cluster_decode")}
    lines.update(
        {p: (f"{_SLUG.sub('-', p)}_prefill", f"{_SLUG.sub('-', p)}_decode") for p in policies}
    )
    fig, (ax_r, ax_g) = plt.subplots(
        2, 1, figsize=(11, 6), sharex=True, gridspec_kw={"height_ratios": [1, 2]}
    )
    ax_r.step(edges, held(series["rate_rps"]), where="post", color="0.35", lw=1)
    ax_r.set_ylabel("request rate\n(req/s)")
    ax_r.set_ylim(bottom=0)
    ax_r.set_title(f"{scenario.name}: GPUs the cluster held and each policy would have")
    ax_r.grid(alpha=0.3)
    for i, (label, (pre, dec)) in enumerate(lines.items()):
        if pre not in steps or dec not in steps:
            continue
        gpus = pd.to_numeric(steps[pre]) * gp + pd.to_numeric(steps[dec]) * gd
        if gpus.isna().all():
            continue
        series[label] = gpus.to_numpy()
        color = "black" if i == 0 else _policy_color(label, i)
        ax_g.step(edges, held(gpus), where="post", color=color, lw=3.0 if i == 0 else 1.5,
                  ls="--" if i == 0 else "-", label=label, alpha=0.85)  # fmt: skip
    ax_g.set_ylabel("GPUs")
    ax_g.set_xlabel("time (min from --start)")
    ax_g.set_ylim(bottom=0)
    ax_g.grid(alpha=0.3)
    ax_g.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    return save_figure(fig, plots_dir, "backtest-gpus", series)


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, float | np.floating):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x
