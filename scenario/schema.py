"""Scenario files: YAML read, overridden and validated once at the edge into the frozen
types of scenario.types, and written back to plain data.

Every error names the file, the key path, the bad value and what was expected
(planner.errors.ConfigError); the CLI turns it into one line and exit code 2.
"""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path
from typing import Any

import yaml

from planner.errors import ConfigError
from planner.metrics import BUCKET_SETS
from scenario.types import (
    AnalyticSpec,
    ArrivalSpec,
    ClosedLoopSpec,
    ClusterSpec,
    FaultSpec,
    KVTransferSpec,
    LengthDist,
    ModelSpec,
    PiecewiseRate,
    PlannerSpec,
    PrometheusSpec,
    RateSchedule,
    RoleSpec,
    Scenario,
    SineRate,
    SLASpec,
    SpikeRate,
    StepRate,
    TraceSpec,
    WorkloadSpec,
)

# ---------------------------------------------------------------------------
# Parsing: YAML mapping -> Scenario, one ConfigError naming file, key path, value and
# what was expected. The schema lives in the functions below; docs/scenarios.md mirrors it.

# The simulator's routers (sim.router.ROUTERS) sit above this package: their names are
# listed here and a test keeps the two in step. Policies and predictors are looked up in
# planner's registries, below this package.
ROUTER_NAMES = ("round_robin", "least_loaded")
ROLE_NAMES = ("prefill", "decode")
ON_FAILURE_NAMES = ("retry", "fail")
# Keys each length distribution takes besides `dist`, `min` and `max`; the samplers are
# scenario.workload.LENGTH_DISTS (a test keeps the two in step).
DIST_KEYS: dict[str, tuple[str, ...]] = {
    "fixed": ("value",),
    "uniform": ("low", "high"),
    "lognormal": ("mean", "cv"),
    "empirical": ("path", "column"),
    "histogram": ("le", "steps"),
}
SHAPE_KEYS: dict[str, tuple[str, ...]] = {
    "sine": ("mean", "amplitude", "period", "phase"),
    "step": ("before", "after", "at"),
    "spike": ("base", "peak", "at", "duration"),
}

_NUMBER = r"(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_DURATION_RE = re.compile(rf"^\s*([-+]?)((?:{_NUMBER}\s*(?:ms|s|m|h|d)\s*)+|{_NUMBER}\s*)$")
_PART_RE = re.compile(rf"({_NUMBER})\s*(ms|s|m|h|d)?")
_UNIT_S = {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_DURATION_HINT = "duration like 90s, 5m, 2h, 1.5h, 1h30m, 250ms or a number of seconds"


def _show(value: Any) -> str:
    text = repr(value) if not isinstance(value, dict | list) else str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _fail(source: str, key: str, value: Any, expected: str) -> ConfigError:
    return ConfigError(f"got {_show(value)}; expected {expected}", source=source, key=key)


def _is_number(value: Any) -> bool:
    # YAML's `true` is a bool, and bool is an int in Python: never a number here.
    return isinstance(value, int | float) and not isinstance(value, bool)


def parse_duration(value: Any, key: str, source: str, *, positive: bool = False) -> float:
    """Seconds from `90s`, `5m`, `2h`, `1.5h`, `1h30m`, `250ms`, `1d` or a plain number.

    Negative values are always rejected; zero too when `positive`.
    """
    expected = ("a positive " if positive else "a non-negative ") + _DURATION_HINT
    if _is_number(value):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION_RE.match(value)):
        seconds = sum(float(n) * _UNIT_S[u or None] for n, u in _PART_RE.findall(m.group(2)))
        seconds = -seconds if m.group(1) == "-" else seconds
    else:
        raise _fail(source, key, value, expected)
    if not math.isfinite(seconds) or seconds < 0 or (positive and seconds == 0):
        raise _fail(source, key, value, expected)
    return seconds


class _Parser:
    """Walks the raw mapping with the file name and base folder at hand."""

    def __init__(self, source: str, base_dir: Path):
        self.source = source
        self.base_dir = base_dir

    # -- primitives ---------------------------------------------------------
    def fail(self, key: str, value: Any, expected: str) -> ConfigError:
        return _fail(self.source, key, value, expected)

    def mapping(
        self, value: Any, key: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()
    ) -> dict[str, Any]:
        where = key or "the top level"
        if not isinstance(value, dict):
            raise self.fail(key, value, f"a mapping with keys {', '.join(allowed)} at {where}")
        for k in value:
            if not isinstance(k, str) or k not in allowed:
                sub = f"{key}.{k}" if key else str(k)
                raise ConfigError(
                    f"unknown key {k!r}; expected one of {', '.join(allowed)}",
                    source=self.source,
                    key=sub,
                )
        for k in required:
            if k not in value:
                sub = f"{key}.{k}" if key else k
                raise ConfigError(f"missing required key {k!r}", source=self.source, key=sub)
        return value

    def number(
        self, value: Any, key: str, *, positive: bool = False, nonneg: bool = False
    ) -> float:
        ok = _is_number(value) and math.isfinite(value)
        ok = ok and not (positive and value <= 0) and not (nonneg and value < 0)
        if not ok:
            what = (
                "a positive number"
                if positive
                else "a non-negative number"
                if nonneg
                else "a number"
            )
            raise self.fail(key, value, what)
        return float(value)

    def integer(self, value: Any, key: str, *, minimum: int | None = None) -> int:
        # 4.0 from YAML is accepted as 4; 4.5 is not.
        ok = _is_number(value) and math.isfinite(value) and float(value).is_integer()
        if not ok or (minimum is not None and value < minimum):
            what = "an integer" + (f" >= {minimum}" if minimum is not None else "")
            raise self.fail(key, value, what)
        return int(value)

    def optional_int(self, value: Any, key: str, *, minimum: int) -> int | None:
        return None if value is None else self.integer(value, key, minimum=minimum)

    def string(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, value, "a non-empty string")
        return value

    def choice(self, value: Any, key: str, names: tuple[str, ...] | list[str]) -> str:
        if not isinstance(value, str) or value not in names:
            raise self.fail(key, value, f"one of {', '.join(names)}")
        return value

    def boolean(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, value, "true or false")
        return value

    def duration(self, value: Any, key: str, *, positive: bool = False) -> float:
        return parse_duration(value, key, self.source, positive=positive)

    def path(self, value: Any, key: str, *, kind: str) -> Path:
        text = self.string(value, key)
        path = Path(text).expanduser()
        if not path.is_absolute():
            path = self.base_dir / path
        path = Path(_normpath(path))
        exists = path.is_dir() if kind == "directory" else path.is_file()
        if not exists:
            raise self.fail(key, value, f"an existing {kind} (looked for {path})")
        return path

    def options(self, value: Any, key: str) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise self.fail(key, value, "a mapping of option names to values")
        return dict(value)

    # -- schedules and distributions -----------------------------------------
    def schedule(self, value: Any, key: str) -> RateSchedule:
        if _is_number(value):
            return PiecewiseRate(((0.0, self.number(value, key, positive=True)),))
        if isinstance(value, list):
            return self.piecewise(value, key)
        if isinstance(value, dict) and len(value) == 1 and next(iter(value)) in SHAPE_KEYS:
            shape, body = next(iter(value.items()))
            k = f"{key}.{shape}"
            if shape == "sine":
                m = self.mapping(body, k, SHAPE_KEYS["sine"], ("mean", "amplitude", "period"))
                return SineRate(
                    mean=self.number(m["mean"], f"{k}.mean", positive=True),
                    amplitude=self.number(m["amplitude"], f"{k}.amplitude", nonneg=True),
                    period_s=self.duration(m["period"], f"{k}.period", positive=True),
                    phase_s=self.duration(m.get("phase", 0.0), f"{k}.phase"),
                )
            if shape == "step":
                m = self.mapping(body, k, SHAPE_KEYS["step"], SHAPE_KEYS["step"])
                rate = StepRate(
                    before=self.number(m["before"], f"{k}.before", nonneg=True),
                    after=self.number(m["after"], f"{k}.after", nonneg=True),
                    at_s=self.duration(m["at"], f"{k}.at"),
                )
            else:
                m = self.mapping(body, k, SHAPE_KEYS["spike"], SHAPE_KEYS["spike"])
                rate = SpikeRate(
                    base=self.number(m["base"], f"{k}.base", nonneg=True),
                    peak=self.number(m["peak"], f"{k}.peak", nonneg=True),
                    at_s=self.duration(m["at"], f"{k}.at"),
                    duration_s=self.duration(m["duration"], f"{k}.duration", positive=True),
                )
            if rate.max_rate() <= 0:
                raise self.fail(k, value, "some rate above zero")
            return rate
        raise self.fail(
            key,
            value,
            "a rate: a number, [[t, rate], ...] with t from 0 increasing, "
            "or one of {sine: {mean, amplitude, period, phase}}, {step: {before, after, at}}, "
            "{spike: {base, peak, at, duration}}",
        )

    def piecewise(self, value: list, key: str) -> PiecewiseRate:
        points: list[tuple[float, float]] = []
        for i, item in enumerate(value):
            k = f"{key}[{i}]"
            if not isinstance(item, list) or len(item) != 2:
                raise self.fail(k, item, "a pair [time, rate]")
            t = self.duration(item[0], f"{k}[0]")
            r = self.number(item[1], f"{k}[1]", nonneg=True)
            if i == 0 and t != 0:
                raise self.fail(f"{k}[0]", item[0], "the first point at time 0")
            if points and t <= points[-1][0]:
                raise self.fail(
                    f"{k}[0]", item[0], f"a time after {points[-1][0]:g} s (increasing)"
                )
            points.append((t, r))
        if not points:
            raise self.fail(key, value, "at least one [time, rate] point")
        if max(r for _, r in points) <= 0:
            raise self.fail(key, value, "some rate above zero")
        return PiecewiseRate(tuple(points))

    def length(self, value: Any, key: str) -> LengthDist:
        if _is_number(value):
            return LengthDist("fixed", value=self.number(value, key, positive=True))
        if not isinstance(value, dict) or "dist" not in value:
            raise self.fail(
                key,
                value,
                "a token count or {dist: fixed|uniform|lognormal|empirical|histogram, ...}",
            )
        dist = self.choice(value["dist"], f"{key}.dist", list(DIST_KEYS))
        keys = DIST_KEYS[dist]
        m = self.mapping(
            value, key, ("dist", *keys, "min", "max"), keys if dist != "empirical" else ("path",)
        )
        if dist == "histogram":
            return self.histogram(m, key)
        lo = self.integer(m.get("min", 1), f"{key}.min", minimum=1)
        hi = self.optional_int(m.get("max"), f"{key}.max", minimum=lo)
        common = {"dist": dist, "min": lo, "max": hi}
        if dist == "fixed":
            return LengthDist(
                value=self.number(m["value"], f"{key}.value", positive=True), **common
            )
        if dist == "uniform":
            low = self.number(m["low"], f"{key}.low", positive=True)
            high = self.number(m["high"], f"{key}.high", positive=True)
            if high < low:
                raise self.fail(f"{key}.high", m["high"], f"a number >= low ({low:g})")
            return LengthDist(low=low, high=high, **common)
        if dist == "lognormal":
            return LengthDist(
                mean=self.number(m["mean"], f"{key}.mean", positive=True),
                cv=self.number(m["cv"], f"{key}.cv", nonneg=True),
                **common,
            )
        column = m.get("column")
        if column is not None:
            column = self.string(column, f"{key}.column")
        return LengthDist(
            path=self.path(m["path"], f"{key}.path", kind="file"), column=column, **common
        )

    def histogram(self, m: dict[str, Any], key: str) -> LengthDist:
        """{dist: histogram, le: [b1, b2, ...], steps: [[t, [c1, ..., c_n, c_above]], ...]}."""
        le_raw = m["le"]
        if not isinstance(le_raw, list) or not le_raw:
            raise self.fail(f"{key}.le", le_raw, "a list of bucket upper bounds (tokens)")
        # Bounds are >= 0: Dynamo's exported length buckets start at 0 (planner/metrics.py).
        le = tuple(self.number(b, f"{key}.le[{i}]", nonneg=True) for i, b in enumerate(le_raw))
        if any(b <= a for a, b in zip(le, le[1:], strict=False)):
            raise self.fail(f"{key}.le", le_raw, "strictly increasing bucket bounds")
        steps_raw = m["steps"]
        if not isinstance(steps_raw, list) or not steps_raw:
            raise self.fail(f"{key}.steps", steps_raw, "a list of [time, [counts]] pairs")
        steps = []
        for i, step in enumerate(steps_raw):
            k = f"{key}.steps[{i}]"
            if not (isinstance(step, list) and len(step) == 2 and isinstance(step[1], list)):
                raise self.fail(k, step, f"[time, [{len(le) + 1} bucket counts]]")
            t = parse_duration(step[0], f"{k}[0]", self.source)
            if steps and t <= steps[-1][0]:
                raise self.fail(f"{k}[0]", step[0], f"a time after {steps[-1][0]:g} s")
            if i == 0 and t != 0:
                raise self.fail(f"{k}[0]", step[0], "0 (the first step starts at 0)")
            if len(step[1]) != len(le) + 1:
                raise self.fail(
                    f"{k}[1]", step[1], f"{len(le) + 1} counts (one per bound, then above)"
                )
            counts = tuple(
                self.number(c, f"{k}[1][{j}]", nonneg=True) for j, c in enumerate(step[1])
            )
            steps.append((t, counts))
        if not any(sum(c) > 0 for _, c in steps):
            raise self.fail(f"{key}.steps", "all zero", "some step with counts above zero")
        lo = self.integer(m.get("min", 1), f"{key}.min", minimum=1)
        hi = self.optional_int(m.get("max"), f"{key}.max", minimum=max(lo, int(le[-1])))
        return LengthDist("histogram", le=le, steps=tuple(steps), min=lo, max=hi)

    # -- sections -------------------------------------------------------------
    def model(self, value: Any) -> ModelSpec:
        m = self.mapping(value, "model", ("profile", "analytic"))
        if ("profile" in m) == ("analytic" in m):
            got = "both profile and analytic" if "profile" in m else "neither profile nor analytic"
            raise ConfigError(
                f"got {got}; expected exactly one of profile (a directory) or analytic",
                source=self.source,
                key="model",
            )
        if "profile" in m:
            return ModelSpec(profile=self.path(m["profile"], "model.profile", kind="directory"))
        a = self.mapping(
            m["analytic"], "model.analytic", ("model", "gpu", "dtype", "tp", "ep"), ("model", "gpu")
        )
        models, gpus, dtypes = _analytic_names()
        spec = AnalyticSpec(
            model=self.choice(a["model"], "model.analytic.model", models)
            if models
            else self.string(a["model"], "model.analytic.model"),
            gpu=self.choice(a["gpu"], "model.analytic.gpu", gpus)
            if gpus
            else self.string(a["gpu"], "model.analytic.gpu"),
            dtype=self.choice(a.get("dtype", "fp8"), "model.analytic.dtype", dtypes),
            tp=self.integer(a.get("tp", 1), "model.analytic.tp", minimum=1),
            ep=self.integer(a.get("ep", 1), "model.analytic.ep", minimum=1),
        )
        return ModelSpec(analytic=spec)

    def role(self, value: Any, key: str) -> RoleSpec:
        keys = (
            "replicas",
            "gpus_per_replica",
            "startup",
            "startup_jitter",
            "max_batch_tokens",
            "max_num_batched_tokens",  # vLLM's and Dynamo's name for max_batch_tokens
            "max_num_seqs",
            "stuck_probability",
            "startup_timeout",
        )
        m = self.mapping({} if value is None else value, key, keys)
        d = RoleSpec()
        batch_key = "max_batch_tokens"
        if "max_num_batched_tokens" in m:
            if "max_batch_tokens" in m:
                raise self.fail(
                    f"{key}.max_num_batched_tokens",
                    m["max_num_batched_tokens"],
                    "one of max_batch_tokens or its alias max_num_batched_tokens, not both",
                )
            batch_key = "max_num_batched_tokens"
        startup = self.duration(m.get("startup", d.startup_s), f"{key}.startup")
        jitter = self.duration(m.get("startup_jitter", d.startup_jitter_s), f"{key}.startup_jitter")
        if jitter > startup:
            raise self.fail(
                f"{key}.startup_jitter",
                m["startup_jitter"],
                f"at most the startup time ({startup:g} s)",
            )
        stuck = self.number(
            m.get("stuck_probability", 0.0), f"{key}.stuck_probability", nonneg=True
        )
        if stuck >= 1.0:
            raise self.fail(f"{key}.stuck_probability", stuck, "a probability in [0, 1)")
        timeout = None
        if m.get("startup_timeout") is not None:
            timeout = self.duration(m["startup_timeout"], f"{key}.startup_timeout")
            if timeout <= startup:
                raise self.fail(
                    f"{key}.startup_timeout",
                    m["startup_timeout"],
                    f"more than startup ({startup:g} s)",
                )
        return RoleSpec(
            replicas=self.integer(m.get("replicas", d.replicas), f"{key}.replicas", minimum=0),
            gpus_per_replica=self.integer(
                m.get("gpus_per_replica", d.gpus_per_replica), f"{key}.gpus_per_replica", minimum=1
            ),
            startup_s=startup,
            startup_jitter_s=jitter,
            max_batch_tokens=self.optional_int(m.get(batch_key), f"{key}.{batch_key}", minimum=1),
            max_num_seqs=self.optional_int(m.get("max_num_seqs"), f"{key}.max_num_seqs", minimum=1),
            stuck_probability=stuck,
            startup_timeout_s=timeout,
        )

    def cluster(self, value: Any) -> ClusterSpec:
        m = self.mapping(
            {} if value is None else value,
            "cluster",
            ("prefill", "decode", "kv_transfer", "router", "faults"),
        )
        kv = self.mapping(
            m.get("kv_transfer") or {}, "cluster.kv_transfer", ("bandwidth_gbps", "latency_ms")
        )
        dkv = KVTransferSpec()
        faults_raw = m.get("faults") or []
        if not isinstance(faults_raw, list):
            raise self.fail(
                "cluster.faults", faults_raw, "a list of {role, at | rate_per_hour, on_failure}"
            )
        return ClusterSpec(
            prefill=self.role(m.get("prefill"), "cluster.prefill"),
            decode=self.role(m.get("decode"), "cluster.decode"),
            kv_transfer=KVTransferSpec(
                bandwidth_gbps=self.number(
                    kv.get("bandwidth_gbps", dkv.bandwidth_gbps),
                    "cluster.kv_transfer.bandwidth_gbps",
                    positive=True,
                ),
                latency_ms=self.number(
                    kv.get("latency_ms", dkv.latency_ms),
                    "cluster.kv_transfer.latency_ms",
                    nonneg=True,
                ),
            ),
            router=self.choice(m.get("router", "round_robin"), "cluster.router", ROUTER_NAMES),
            faults=tuple(self.fault(f, f"cluster.faults[{i}]") for i, f in enumerate(faults_raw)),
        )

    def fault(self, value: Any, key: str) -> FaultSpec:
        m = self.mapping(value, key, ("role", "at", "rate_per_hour", "on_failure"), ("role",))
        if ("at" in m) == ("rate_per_hour" in m):
            raise self.fail(key, value, "exactly one of at (a time) or rate_per_hour")
        return FaultSpec(
            role=self.choice(m["role"], f"{key}.role", ROLE_NAMES),
            at_s=self.duration(m["at"], f"{key}.at") if "at" in m else None,
            rate_per_hour=self.number(m["rate_per_hour"], f"{key}.rate_per_hour", positive=True)
            if "rate_per_hour" in m
            else None,
            on_failure=self.choice(
                m.get("on_failure", "retry"), f"{key}.on_failure", ON_FAILURE_NAMES
            ),
        )

    def workload(self, value: Any) -> WorkloadSpec:
        from scenario.workload import ARRIVALS, TRACE_FORMATS  # the registries are the truth

        m = self.mapping(
            value, "workload", ("arrival", "isl", "osl", "trace", "closed_loop", "isl_scale")
        )
        modes = [k for k in ("arrival", "trace", "closed_loop") if k in m]
        if len(modes) != 1:
            got = " and ".join(modes) if modes else "none of them"
            raise ConfigError(
                f"got {got}; expected exactly one of arrival, trace, closed_loop",
                source=self.source,
                key="workload",
            )
        mode = modes[0]
        isl_scale = (
            self.schedule(m["isl_scale"], "workload.isl_scale") if "isl_scale" in m else None
        )
        if mode == "trace":
            for k in ("isl", "osl"):
                if k in m:
                    raise ConfigError(
                        "a trace gives each request's lengths; remove this key or use arrival",
                        source=self.source,
                        key=f"workload.{k}",
                    )
            t = self.mapping(
                m["trace"],
                "workload.trace",
                ("path", "format", "time_scale", "rate_scale", "start", "max_requests"),
                ("path", "format"),
            )
            trace = TraceSpec(
                path=self.path(t["path"], "workload.trace.path", kind="file"),
                format=self.choice(t["format"], "workload.trace.format", sorted(TRACE_FORMATS)),
                time_scale=self.number(
                    t.get("time_scale", 1.0), "workload.trace.time_scale", positive=True
                ),
                rate_scale=self.number(
                    t.get("rate_scale", 1.0), "workload.trace.rate_scale", positive=True
                ),
                start_s=self.duration(t.get("start", 0.0), "workload.trace.start"),
                max_requests=self.optional_int(
                    t.get("max_requests"), "workload.trace.max_requests", minimum=1
                ),
            )
            return WorkloadSpec(trace=trace, isl_scale=isl_scale)
        for k in ("isl", "osl"):
            if k not in m:
                raise ConfigError(
                    f"missing required key {k!r} (needed with {mode})",
                    source=self.source,
                    key=f"workload.{k}",
                )
        isl, osl = self.length(m["isl"], "workload.isl"), self.length(m["osl"], "workload.osl")
        if mode == "closed_loop":
            c = self.mapping(
                m["closed_loop"], "workload.closed_loop", ("users", "think_time"), ("users",)
            )
            loop = ClosedLoopSpec(
                users=self.integer(c["users"], "workload.closed_loop.users", minimum=1),
                think_time_s=self.duration(
                    c.get("think_time", 0.0), "workload.closed_loop.think_time"
                ),
            )
            return WorkloadSpec(isl=isl, osl=osl, closed_loop=loop, isl_scale=isl_scale)
        a = self.mapping(m["arrival"], "workload.arrival", ("process", "rate", "cv"), ("rate",))
        process = self.choice(
            a.get("process", "poisson"), "workload.arrival.process", sorted(ARRIVALS)
        )
        if "cv" in a and process != "gamma":
            raise ConfigError(
                "cv applies only to process gamma", source=self.source, key="workload.arrival.cv"
            )
        arrival = ArrivalSpec(
            process=process,
            rate=self.schedule(a["rate"], "workload.arrival.rate"),
            cv=self.number(a.get("cv", 1.0), "workload.arrival.cv", positive=True),
        )
        return WorkloadSpec(arrival=arrival, isl=isl, osl=osl, isl_scale=isl_scale)

    def sla(self, value: Any) -> SLASpec:
        m = self.mapping(
            {} if value is None else value, "sla", ("ttft_ms", "itl_ms", "target_attainment")
        )
        d = SLASpec()
        target = m.get("target_attainment", d.target_attainment)
        if not (_is_number(target) and 0 < target <= 1):
            raise self.fail("sla.target_attainment", target, "a fraction in (0, 1], e.g. 0.99")
        return SLASpec(
            ttft_ms=self.number(m.get("ttft_ms", d.ttft_ms), "sla.ttft_ms", positive=True),
            itl_ms=self.number(m.get("itl_ms", d.itl_ms), "sla.itl_ms", positive=True),
            target_attainment=float(target),
        )

    def planner(self, value: Any) -> PlannerSpec:
        keys = (
            "policy",
            "interval",
            "predictor",
            "predictor_options",
            "max_gpu_budget",
            "min_replicas",
            "max_replicas",
            "correction",
            "options",
        )
        m = self.mapping({} if value is None else value, "planner", keys)
        d = PlannerSpec()
        lo = self.integer(m.get("min_replicas", d.min_replicas), "planner.min_replicas", minimum=0)
        return PlannerSpec(
            policy=self.choice(m.get("policy", d.policy), "planner.policy", _policy_names()),
            interval_s=self.duration(
                m.get("interval", d.interval_s), "planner.interval", positive=True
            ),
            predictor=self.choice(
                m.get("predictor", d.predictor), "planner.predictor", _predictor_names()
            ),
            predictor_options=self.options(m.get("predictor_options"), "planner.predictor_options"),
            max_gpu_budget=self.optional_int(
                m.get("max_gpu_budget"), "planner.max_gpu_budget", minimum=1
            ),
            min_replicas=lo,
            max_replicas=self.optional_int(
                m.get("max_replicas"), "planner.max_replicas", minimum=max(1, lo)
            ),
            correction=self.boolean(m.get("correction", d.correction), "planner.correction"),
            options=self.options(m.get("options"), "planner.options"),
        )

    def scenario(self, data: Any) -> Scenario:
        keys = (
            "name",
            "seed",
            "duration",
            "model",
            "cluster",
            "workload",
            "sla",
            "planner",
            "prometheus",
        )
        m = self.mapping(data, "", keys, ("duration", "model", "workload"))
        prom = self.mapping(m.get("prometheus") or {}, "prometheus", ("scrape_interval", "buckets"))
        buckets = prom.get("buckets", PrometheusSpec.buckets)
        if buckets not in BUCKET_SETS:
            raise self.fail(
                "prometheus.buckets", buckets, f"one of {', '.join(sorted(BUCKET_SETS))}"
            )
        default_name = Path(self.source).stem or "scenario"
        scenario = Scenario(
            name=self.string(m.get("name", default_name), "name"),
            seed=self.integer(m.get("seed", 0), "seed", minimum=0),
            duration_s=self.duration(m["duration"], "duration", positive=True),
            model=self.model(m["model"]),
            cluster=self.cluster(m.get("cluster")),
            workload=self.workload(m["workload"]),
            sla=self.sla(m.get("sla")),
            planner=self.planner(m.get("planner")),
            prometheus=PrometheusSpec(
                scrape_interval_s=self.duration(
                    prom.get("scrape_interval", 5.0), "prometheus.scrape_interval", positive=True
                ),
                buckets=buckets,
            ),
            source=Path(self.source),
        )
        self.cross_checks(scenario, m)
        return scenario

    def cross_checks(self, s: Scenario, raw: dict[str, Any]) -> None:
        from planner.policies import check_options
        from planner.policies.base import validate_budget
        from planner.predictors import make_predictor

        try:
            validate_budget(s.planner_config())
            check_options(s.planner.options)
            make_predictor(s.planner.predictor, **s.planner.predictor_options)
        except ConfigError as exc:
            raise ConfigError(exc.detail, source=self.source, key=exc.key) from None
        p = s.planner
        for role in ROLE_NAMES:
            spec: RoleSpec = getattr(s.cluster, role)
            if spec.replicas < p.min_replicas:
                raise self.fail(
                    f"cluster.{role}.replicas",
                    spec.replicas,
                    f"at least planner.min_replicas ({p.min_replicas})",
                )
            if p.max_replicas is not None and spec.replicas > p.max_replicas:
                raise self.fail(
                    f"cluster.{role}.replicas",
                    spec.replicas,
                    f"at most planner.max_replicas ({p.max_replicas})",
                )
        gpus = s.planner_config().gpus(s.cluster.prefill.replicas, s.cluster.decode.replicas)
        if p.max_gpu_budget is not None and gpus > p.max_gpu_budget:
            raise self.fail(
                "cluster",
                f"{s.cluster.prefill.replicas} prefill + {s.cluster.decode.replicas} decode replicas = {gpus} GPUs",
                f"initial replicas within planner.max_gpu_budget ({p.max_gpu_budget} GPUs)",
            )
        if s.prometheus.scrape_interval_s > p.interval_s:
            raise self.fail(
                "prometheus.scrape_interval",
                raw.get("prometheus", {}).get("scrape_interval"),
                f"at most planner.interval ({p.interval_s:g} s), or a planner window may hold no scrape",
            )


def _policy_names() -> list[str]:
    from planner.policies import policy_names

    return policy_names()


def _predictor_names() -> list[str]:
    from planner.predictors import PREDICTORS

    return sorted(PREDICTORS)


def _normpath(path: Path) -> str:
    import os

    return os.path.normpath(str(path))


def _analytic_names() -> tuple[list[str], list[str], list[str]]:
    """The analytic model, GPU and dtype names, when planner.analytic is there to ask."""
    try:
        from planner.analytic import DTYPE_BYTES, GPUS, MODELS
    except ImportError:
        return [], [], ["fp8", "bf16"]
    return sorted(MODELS), sorted(GPUS), list(DTYPE_BYTES)


def parse_scenario(data: dict[str, Any], source: str, *, base_dir: Path | None = None) -> Scenario:
    """Validate a raw mapping (as read from YAML) into a Scenario.

    Relative paths resolve against `base_dir`, by default the folder of `source`.
    """
    base = Path(base_dir) if base_dir is not None else Path(source).resolve().parent
    return _Parser(str(source), base).scenario(data)


class DuplicateKeyError(yaml.MarkedYAMLError):
    """A mapping that names one key twice (PyYAML keeps the last silently)."""


class YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader, stricter where a typo would otherwise pass: a key given twice
    in one mapping is an error naming both lines, and numbers in exponent form without a
    dot (`1e9`, YAML 1.2's float) are numbers, not strings."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                continue  # PyYAML reports unhashable keys itself
            if key in seen:
                first = seen[key].start_mark.line + 1
                raise DuplicateKeyError(
                    problem=f"key {key!r} is given twice (first on line {first}); "
                    "expected each key once per mapping",
                    problem_mark=key_node.start_mark,
                )
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def load_yaml(text: str) -> Any:
    """YAML text to data with YamlLoader (raises yaml.YAMLError)."""
    return yaml.load(text, Loader=YamlLoader)  # noqa: S506 (a SafeLoader subclass)


def yaml_error_text(exc: yaml.YAMLError) -> str:
    """`line L, column C: invalid YAML (problem)` for one message."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"{where}invalid YAML ({problem})"


def _read_yaml(path: Path) -> Any:
    source = str(path)
    if path.is_dir():
        raise ConfigError("is a directory; expected a scenario YAML file", source=source)
    if not path.is_file():
        raise ConfigError("scenario file not found; expected a YAML file", source=source)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"cannot read the file ({exc}); expected UTF-8 YAML", source=source
        ) from None
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError(yaml_error_text(exc), source=source) from None
    if data is None:
        raise ConfigError("the file is empty; expected a scenario mapping", source=source)
    return data


def load_scenario(path: str | Path, overrides: dict[str, str] | None = None) -> Scenario:
    """Read, override (`--set key=value`, `--policy`) and validate one scenario file."""
    path = Path(path)
    data = _read_yaml(path)
    if overrides:
        if not isinstance(data, dict):
            raise _fail(str(path), "", data, "a scenario mapping")
        for key, value in overrides.items():
            apply_override(data, key, value, source=str(path))
    try:
        return parse_scenario(data, str(path))
    except ConfigError as exc:
        if not overrides:
            raise
        given = ", ".join(f"{k}={v}" for k, v in overrides.items())
        raise ConfigError(
            f"{exc.detail} (with overrides {given})", source=exc.source, key=exc.key
        ) from None


def apply_override(
    data: dict[str, Any], dotted_key: str, value_text: Any, *, source: str | None = None
) -> dict[str, Any]:
    """Set `a.b.c` in the raw mapping to value_text read as a YAML scalar or list.

    Changes `data` in place and returns it. Whether the key exists in the schema and the
    value fits is decided by parsing the result (parse_scenario), which names the key.
    """
    parts = dotted_key.split(".") if isinstance(dotted_key, str) else []
    if not parts or not all(parts):
        raise ConfigError(
            f"got {dotted_key!r}; expected a dotted key like planner.interval",
            source=source,
            key="--set",
        )
    if isinstance(value_text, str):
        try:
            value = load_yaml(value_text)
        except yaml.YAMLError:
            raise ConfigError(
                f"got {value_text!r}; expected a YAML value (number, string, list)",
                source=source,
                key=dotted_key,
            ) from None
    else:
        value = copy.deepcopy(value_text)
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            prefix = ".".join(parts[: i + 1])
            raise ConfigError(
                f"cannot set {dotted_key}: {prefix} is {_show(child)}, not a mapping",
                source=source,
                key=dotted_key,
            )
        node = child
    node[parts[-1]] = value
    return data


# ---------------------------------------------------------------------------
# Back to a plain mapping (scenario.yaml in a results directory, sweeps).


def _schedule_to_raw(rate: RateSchedule) -> Any:
    if isinstance(rate, PiecewiseRate):
        if len(rate.points) == 1:
            return rate.points[0][1]
        return [[t, r] for t, r in rate.points]
    if isinstance(rate, SineRate):
        return {
            "sine": {
                "mean": rate.mean,
                "amplitude": rate.amplitude,
                "period": rate.period_s,
                "phase": rate.phase_s,
            }
        }
    if isinstance(rate, StepRate):
        return {"step": {"before": rate.before, "after": rate.after, "at": rate.at_s}}
    return {
        "spike": {
            "base": rate.base,
            "peak": rate.peak,
            "at": rate.at_s,
            "duration": rate.duration_s,
        }
    }


def _length_to_raw(d: LengthDist) -> dict[str, Any]:
    out: dict[str, Any] = {"dist": d.dist}
    if d.dist == "histogram":
        out["le"] = list(d.le)
        out["steps"] = [[t, list(c)] for t, c in d.steps]
    for k in () if d.dist == "histogram" else DIST_KEYS[d.dist]:
        v = getattr(d, k)
        if v is not None:
            out[k] = str(v) if isinstance(v, Path) else v
    out["min"] = d.min
    if d.max is not None:
        out["max"] = d.max
    return out


def _role_to_raw(r: RoleSpec) -> dict[str, Any]:
    out: dict[str, Any] = {
        "replicas": r.replicas,
        "gpus_per_replica": r.gpus_per_replica,
        "startup": r.startup_s,
        "startup_jitter": r.startup_jitter_s,
    }
    if r.max_batch_tokens is not None:
        out["max_batch_tokens"] = r.max_batch_tokens
    if r.max_num_seqs is not None:
        out["max_num_seqs"] = r.max_num_seqs
    if r.stuck_probability:
        out["stuck_probability"] = r.stuck_probability
    if r.startup_timeout_s is not None:
        out["startup_timeout"] = r.startup_timeout_s
    return out


def scenario_to_dict(scenario: Scenario) -> dict[str, Any]:
    """The scenario as plain YAML-safe data (durations in seconds, absolute paths);
    parse_scenario(scenario_to_dict(s), s.source) == s."""
    s = scenario
    model: dict[str, Any]
    if s.model.profile is not None:
        model = {"profile": str(s.model.profile)}
    else:
        a = s.model.analytic
        model = {"analytic": {"model": a.model, "gpu": a.gpu, "dtype": a.dtype, "tp": a.tp}}
        if a.ep != 1:
            model["analytic"]["ep"] = a.ep
    c = s.cluster
    cluster: dict[str, Any] = {
        "prefill": _role_to_raw(c.prefill),
        "decode": _role_to_raw(c.decode),
        "kv_transfer": {
            "bandwidth_gbps": c.kv_transfer.bandwidth_gbps,
            "latency_ms": c.kv_transfer.latency_ms,
        },
        "router": c.router,
    }
    if c.faults:
        cluster["faults"] = [
            {"role": f.role, "on_failure": f.on_failure}
            | ({"at": f.at_s} if f.at_s is not None else {"rate_per_hour": f.rate_per_hour})
            for f in c.faults
        ]
    w = s.workload
    workload: dict[str, Any] = {}
    if w.arrival is not None:
        workload["arrival"] = {
            "process": w.arrival.process,
            "rate": _schedule_to_raw(w.arrival.rate),
        }
        if w.arrival.process == "gamma":
            workload["arrival"]["cv"] = w.arrival.cv
    if w.closed_loop is not None:
        workload["closed_loop"] = {
            "users": w.closed_loop.users,
            "think_time": w.closed_loop.think_time_s,
        }
    if w.trace is not None:
        t = w.trace
        workload["trace"] = {
            "path": str(t.path),
            "format": t.format,
            "time_scale": t.time_scale,
            "rate_scale": t.rate_scale,
            "start": t.start_s,
        }
        if t.max_requests is not None:
            workload["trace"]["max_requests"] = t.max_requests
    if w.isl is not None:
        workload["isl"] = _length_to_raw(w.isl)
    if w.osl is not None:
        workload["osl"] = _length_to_raw(w.osl)
    if w.isl_scale is not None:
        workload["isl_scale"] = _schedule_to_raw(w.isl_scale)
    p = s.planner
    planner: dict[str, Any] = {
        "policy": p.policy,
        "interval": p.interval_s,
        "predictor": p.predictor,
        "predictor_options": copy.deepcopy(p.predictor_options),
        "min_replicas": p.min_replicas,
        "correction": p.correction,
        "options": copy.deepcopy(p.options),
    }
    if p.max_gpu_budget is not None:
        planner["max_gpu_budget"] = p.max_gpu_budget
    if p.max_replicas is not None:
        planner["max_replicas"] = p.max_replicas
    return {
        "name": s.name,
        "seed": s.seed,
        "duration": s.duration_s,
        "model": model,
        "cluster": cluster,
        "workload": workload,
        "sla": {
            "ttft_ms": s.sla.ttft_ms,
            "itl_ms": s.sla.itl_ms,
            "target_attainment": s.sla.target_attainment,
        },
        "planner": planner,
        "prometheus": {
            "scrape_interval": s.prometheus.scrape_interval_s,
            "buckets": s.prometheus.buckets,
        },
    }
