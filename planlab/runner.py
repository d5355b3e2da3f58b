"""`run_scenario`: simulate one scenario and write its results directory; the one entry
point behind `planlab run`, `compare`, `sweep` and the CI regression."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from planlab.results import (
    TIMELINE_COLUMNS,
    check_out_dir,
    compute_summary,
    default_run_dir,
    write_run,
)
from planner.errors import ConfigError
from scenario import Scenario
from sim.simulate import ERRORS, STATUS_FAILED, STATUS_SUCCESS, SimOptions, SimResult, simulate

log = logging.getLogger(__name__)

RESULTS_ROOT = Path("results")


@dataclass(frozen=True)
class RunOutcome:
    out_dir: Path | None
    summary: dict[str, Any]
    result: SimResult | None = None


def requests_frame(result: SimResult) -> pd.DataFrame:
    """requests.csv rows from the simulator's per-request columns."""
    c = result.requests
    status = c["status"]
    ok = status == STATUS_SUCCESS
    first = c["first_token_s"]
    finish = c["finish_s"]
    arrival = c["arrival_s"]
    osl = c["osl"]
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot_ms = np.where(ok & (osl > 1), (finish - first) / (osl - 1) * 1000.0, np.nan)
    names = np.array(["in_flight", "ok", "failed"], dtype=object)
    err = np.array(ERRORS, dtype=object)[c["error"]]
    err = np.where(status == STATUS_FAILED, err, "")

    def worker(col: str) -> pd.Series:
        return pd.Series(c[col], dtype="Int64").mask(c[col] < 0)

    return pd.DataFrame(
        {
            "id": np.arange(len(arrival)),
            "arrival_s": arrival,
            "isl": c["isl"],
            "osl": osl,
            "ttft_ms": (first - arrival) * 1000.0,
            "tpot_ms": tpot_ms,
            "e2e_s": np.where(ok, finish - arrival, np.nan),
            "prefill_worker": worker("prefill_worker"),
            "decode_worker": worker("decode_worker"),
            "status": names[status],
            "error": err,
            "preemptions": c["preemptions"],
            "retries": c["retries"],
        }
    )


def timeline_frame(result: SimResult, interval_s: float) -> pd.DataFrame:
    df = pd.DataFrame(result.timeline)
    if len(df):
        df["predicted_num_req"] = df["predicted_rate"] * interval_s
    cols = list(TIMELINE_COLUMNS) + [c for c in df.columns if c not in TIMELINE_COLUMNS]
    return df.reindex(columns=cols)


def with_source(exc: ConfigError, scenario: Scenario) -> ConfigError:
    """The error with the scenario's file named, when it names a scenario key but no file
    (a policy or predictor option found bad when the policy is built)."""
    if exc.source is not None or scenario.source is None:
        return exc
    return ConfigError(exc.detail, source=str(scenario.source), key=exc.key)


def check_size(scenario: Scenario, max_requests: int | None = None) -> None:
    """Refuse before any work a scenario whose expected size would exhaust memory."""
    from scenario.workload import expected_requests

    if max_requests is not None and max_requests < 1:
        raise ConfigError(f"got {max_requests}; expected a positive count", key="--max-requests")
    limit = max_requests if max_requests is not None else DEFAULT_MAX_REQUESTS
    n = expected_requests(scenario.workload, scenario.duration_s)
    if n is not None and n > limit:
        gib = n * BYTES_PER_REQUEST / 2**30
        raise ConfigError(
            f"over {scenario.duration_s:,.0f} s expects about {n:,.0f} requests (roughly "
            f"{gib:,.1f} GiB of memory to simulate); "
            f"the limit is {limit:,} requests: shorten duration, lower the rate, or pass "
            f"--max-requests {int(min(n * 1.1, 1e15)):d} to run it anyway",
            source=str(scenario.source) if scenario.source else None,
            key="workload.arrival.rate",
        )
    scrapes = scenario.duration_s / scenario.prometheus.scrape_interval_s
    if scrapes > MAX_SCRAPES:
        raise ConfigError(
            f"{scenario.duration_s:,.0f} s at one scrape every "
            f"{scenario.prometheus.scrape_interval_s:g} s is {scrapes:,.0f} scrapes (more "
            f"than {MAX_SCRAPES:,}, each a timeline row and a metrics sample): shorten "
            "duration or lengthen prometheus.scrape_interval",
            source=str(scenario.source) if scenario.source else None,
            key="duration",
        )


# 115 days at the default 5 s scrape interval; each scrape keeps a few hundred bytes.
MAX_SCRAPES = 2_000_000
# A million-request day peaks at a few hundred MiB (docs/simulator.md): about 0.5 KiB per
# request held in columns, results frames and the written CSV included.
BYTES_PER_REQUEST = 512
DEFAULT_MAX_REQUESTS = 5_000_000


def run_scenario(
    scenario: Scenario,
    out_dir: str | Path | None = None,
    policy: str | None = None,
    seed: int | None = None,
    progress: Callable[[float, float], None] | None = None,
    *,
    write: bool = True,
    force: bool = False,
    max_requests: int | None = None,
    profile=None,
    options: SimOptions | None = None,
) -> RunOutcome:
    """Simulate scenario (policy and seed override the file's) and write results/<run>/.

    out_dir None: results/<scenario>-<policy>-<timestamp>. progress(t_s, duration_s) is
    called at every scrape. write=False skips the files (sweeps that keep summaries only).
    An existing out_dir is refused unless it is an earlier planlab run and `force` is set
    (results.check_out_dir). A scenario expected to generate more than `max_requests`
    (default DEFAULT_MAX_REQUESTS) is refused (check_size). Raises ConfigError on bad input
    before anything is written.
    """
    check_size(scenario, max_requests)
    if write and out_dir is not None:
        check_out_dir(out_dir, force=force)
    if policy is not None:
        scenario = dataclasses.replace(
            scenario, planner=dataclasses.replace(scenario.planner, policy=policy)
        )
    if seed is not None:
        scenario = dataclasses.replace(scenario, seed=int(seed))
    if profile is None:
        from planlab.profiles import resolve_model

        profile = resolve_model(scenario.model)
    cfg = scenario.planner_config()
    try:
        result = simulate(
            scenario, profile, cfg, seed=scenario.seed, options=options, progress=progress
        )
    except ConfigError as exc:
        raise with_source(exc, scenario) from None
    requests = requests_frame(result)
    summary = compute_summary(
        requests,
        sla=scenario.sla,
        duration_s=scenario.duration_s,
        gpu_seconds={
            role: {k: v for k, v in parts.items() if k != "total"}
            for role, parts in result.gpu_seconds.items()
        },
        scaling_events=result.scaling_events,
        preemptions=result.preemptions,
        wall_s=result.wall_s,
        policy=cfg.policy,
        scenario_name=scenario.name,
        extra={
            "seed": scenario.seed,
            "end_s": result.end_s,
            "worker_failures": result.worker_failures,
            "retries": int(result.requests["retries"].sum()),
            "planner_ticks": len(result.records),
        },
    )
    if not write:
        return RunOutcome(None, summary, result)
    unique = out_dir is None
    if unique:
        out_dir = default_run_dir(RESULTS_ROOT, scenario.name, cfg.policy, datetime.now())
    out = write_run(
        out_dir,
        requests,
        timeline_frame(result, cfg.interval_s),
        result.records,
        summary,
        scenario=scenario,
        replace=force,
        unique=unique,
    )
    return RunOutcome(Path(out), summary, result)
