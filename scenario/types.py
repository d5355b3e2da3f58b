"""The scenario's typed form: frozen dataclasses that sim/, live/ and planlab/ share.

Parsing and validation (with errors naming the file, key path and value) live in
scenario.schema; the workload generator that turns a WorkloadSpec into requests lives in
scenario.workload.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from planner.types import PlannerConfig

# ---------------------------------------------------------------------------
# Rate schedules: a request rate (req/s) as a function of time (s).


@dataclass(frozen=True)
class PiecewiseRate:
    """Piecewise-constant rate: points ((t0, r0), (t1, r1), ...) with t0 == 0, sorted."""

    points: tuple[tuple[float, float], ...]

    def rate_at(self, t_s: float) -> float:
        rate = self.points[0][1]
        for t, r in self.points:
            if t_s >= t:
                rate = r
            else:
                break
        return rate

    def max_rate(self) -> float:
        return max(r for _, r in self.points)


@dataclass(frozen=True)
class SineRate:
    """mean + amplitude * sin(2 pi (t + phase) / period); never below zero."""

    mean: float
    amplitude: float
    period_s: float
    phase_s: float = 0.0

    def rate_at(self, t_s: float) -> float:
        return max(
            0.0,
            self.mean
            + self.amplitude * math.sin(2 * math.pi * (t_s + self.phase_s) / self.period_s),
        )

    def max_rate(self) -> float:
        return self.mean + abs(self.amplitude)


@dataclass(frozen=True)
class StepRate:
    """`before` req/s until `at_s`, then `after` req/s."""

    before: float
    after: float
    at_s: float

    def rate_at(self, t_s: float) -> float:
        return self.before if t_s < self.at_s else self.after

    def max_rate(self) -> float:
        return max(self.before, self.after)


@dataclass(frozen=True)
class SpikeRate:
    """`base` req/s with `peak` req/s during [at_s, at_s + duration_s)."""

    base: float
    peak: float
    at_s: float
    duration_s: float

    def rate_at(self, t_s: float) -> float:
        return self.peak if self.at_s <= t_s < self.at_s + self.duration_s else self.base

    def max_rate(self) -> float:
        return max(self.base, self.peak)


RateSchedule = PiecewiseRate | SineRate | StepRate | SpikeRate


# ---------------------------------------------------------------------------
# Workload


@dataclass(frozen=True)
class ArrivalSpec:
    """process: poisson | gamma (with cv) | constant."""

    process: str
    rate: RateSchedule
    cv: float = 1.0


@dataclass(frozen=True)
class LengthDist:
    """Token-length distribution. dist: fixed (value) | uniform (low, high) |
    lognormal (mean, cv) | empirical (path: one integer per line, or a CSV column) |
    histogram (le: bucket upper bounds; steps: ((t_s, counts per bucket, the last above the
    last bound), ...), the counts in force from t_s on; a length is drawn uniformly inside
    its bucket, as Prometheus' histogram_quantile interpolates; the open last bucket ends at
    max, or twice the last bound). Samples are rounded and clipped to [min, max]."""

    dist: str
    value: float | None = None
    low: float | None = None
    high: float | None = None
    mean: float | None = None
    cv: float | None = None
    path: Path | None = None
    column: str | None = None
    min: int = 1
    max: int | None = None
    le: tuple[float, ...] | None = None
    steps: tuple[tuple[float, tuple[float, ...]], ...] | None = None


@dataclass(frozen=True)
class TraceSpec:
    """A request trace. format: azure | mooncake | burstgpt. time_scale stretches time
    (0.5 replays twice as fast); rate_scale multiplies the request rate (thinning or
    duplicating arrivals, deterministic under the seed)."""

    path: Path
    format: str
    time_scale: float = 1.0
    rate_scale: float = 1.0
    start_s: float = 0.0
    max_requests: int | None = None


@dataclass(frozen=True)
class ClosedLoopSpec:
    """N users, each sends one request, waits for it to finish, thinks, repeats."""

    users: int
    think_time_s: float = 0.0


@dataclass(frozen=True)
class WorkloadSpec:
    """Exactly one of: arrival (+ isl, osl), trace, closed_loop (+ isl, osl).
    isl_scale optionally multiplies generated ISLs over time (long-context shift)."""

    arrival: ArrivalSpec | None = None
    isl: LengthDist | None = None
    osl: LengthDist | None = None
    trace: TraceSpec | None = None
    closed_loop: ClosedLoopSpec | None = None
    isl_scale: RateSchedule | None = None


# ---------------------------------------------------------------------------
# Model and cluster


@dataclass(frozen=True)
class AnalyticSpec:
    model: str
    gpu: str
    dtype: str = "fp8"
    tp: int = 1
    ep: int = 1  # expert parallel degree of MoE layers (a divisor of tp)


@dataclass(frozen=True)
class ModelSpec:
    """Exactly one of: profile (a directory, resolved against the scenario's folder)
    or analytic."""

    profile: Path | None = None
    analytic: AnalyticSpec | None = None


@dataclass(frozen=True)
class RoleSpec:
    """One worker role. replicas: at start; startup_s: cold start from decision to ready;
    startup_jitter_s: uniform +- jitter; max_batch_tokens: prefill token budget per step,
    or decode max concurrent sequences (None: the profile's KV capacity decides)."""

    replicas: int = 1
    gpus_per_replica: int = 1
    startup_s: float = 120.0
    startup_jitter_s: float = 0.0
    # A start that never becomes ready (image pull back-off, no schedulable node), with this
    # probability per start; the connector reports it as stuck after startup_timeout_s
    # (None: three times startup_s).
    stuck_probability: float = 0.0
    startup_timeout_s: float | None = None
    max_batch_tokens: int | None = None
    max_num_seqs: int | None = None


@dataclass(frozen=True)
class KVTransferSpec:
    bandwidth_gbps: float = 200.0
    latency_ms: float = 1.0


@dataclass(frozen=True)
class FaultSpec:
    """A worker of `role` dies at at_s, or at rate_per_hour (Poisson) per worker.
    on_failure: retry (requeue in-flight requests) | fail (mark them failed)."""

    role: str
    at_s: float | None = None
    rate_per_hour: float | None = None
    on_failure: str = "retry"


@dataclass(frozen=True)
class ClusterSpec:
    prefill: RoleSpec = field(default_factory=RoleSpec)
    decode: RoleSpec = field(default_factory=RoleSpec)
    kv_transfer: KVTransferSpec = field(default_factory=KVTransferSpec)
    router: str = "round_robin"  # round_robin | least_loaded
    faults: tuple[FaultSpec, ...] = ()


# ---------------------------------------------------------------------------
# SLA, planner, Prometheus


@dataclass(frozen=True)
class SLASpec:
    ttft_ms: float = 200.0
    itl_ms: float = 20.0
    target_attainment: float = 0.99


@dataclass(frozen=True)
class PlannerSpec:
    """policy: static | dynamo | threshold | slaplan | oracle. predictor_options and
    options are passed through to the predictor and the policy (validated by them)."""

    policy: str = "dynamo"
    interval_s: float = 60.0
    predictor: str = "arima"
    predictor_options: dict[str, Any] = field(default_factory=dict)
    max_gpu_budget: int | None = None
    min_replicas: int = 1
    max_replicas: int | None = None
    correction: bool = True
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PrometheusSpec:
    scrape_interval_s: float = 5.0
    # Histogram bucket layout of the frontend metrics (planner.metrics.BUCKET_SETS): dynamo
    # (Dynamo 1.6's coarse defaults), vllm (vLLM's), fine (planlab's 40-48 log buckets).
    buckets: str = "dynamo"


@dataclass(frozen=True)
class Scenario:
    name: str
    seed: int
    duration_s: float
    model: ModelSpec
    cluster: ClusterSpec
    workload: WorkloadSpec
    sla: SLASpec = field(default_factory=SLASpec)
    planner: PlannerSpec = field(default_factory=PlannerSpec)
    prometheus: PrometheusSpec = field(default_factory=PrometheusSpec)
    source: Path | None = None  # the file it came from, for messages

    def planner_config(self) -> PlannerConfig:
        p = self.planner
        return PlannerConfig(
            policy=p.policy,
            interval_s=p.interval_s,
            ttft_ms=self.sla.ttft_ms,
            itl_ms=self.sla.itl_ms,
            target_attainment=self.sla.target_attainment,
            predictor=p.predictor,
            predictor_options=tuple(sorted(p.predictor_options.items())),
            max_gpu_budget=p.max_gpu_budget,
            min_replicas=p.min_replicas,
            max_replicas=p.max_replicas,
            gpus_per_prefill=self.cluster.prefill.gpus_per_replica,
            gpus_per_decode=self.cluster.decode.gpus_per_replica,
            correction=p.correction,
            startup_prefill_s=self.cluster.prefill.startup_s,
            startup_decode_s=self.cluster.decode.startup_s,
            kv_bandwidth_gbps=self.cluster.kv_transfer.bandwidth_gbps,
            kv_latency_ms=self.cluster.kv_transfer.latency_ms,
            prefill_max_batch_tokens=self.cluster.prefill.max_batch_tokens,
            prefill_max_num_seqs=self.cluster.prefill.max_num_seqs,
            decode_max_num_seqs=self.cluster.decode.max_num_seqs,
            options=tuple(sorted(p.options.items())),
        )
