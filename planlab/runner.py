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

from planlab.results import TIMELINE_COLUMNS, compute_summary, default_run_dir, write_run
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


def run_scenario(
    scenario: Scenario,
    out_dir: str | Path | None = None,
    policy: str | None = None,
    seed: int | None = None,
    progress: Callable[[float, float], None] | None = None,
    *,
    write: bool = True,
    profile=None,
    options: SimOptions | None = None,
) -> RunOutcome:
    """Simulate scenario (policy and seed override the file's) and write results/<run>/.

    out_dir None: results/<scenario>-<policy>-<timestamp>. progress(t_s, duration_s) is
    called at every scrape. write=False skips the files (sweeps that keep summaries only).
    Raises ConfigError on bad input before anything is written.
    """
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
    result = simulate(
        scenario, profile, cfg, seed=scenario.seed, options=options, progress=progress
    )
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
    if out_dir is None:
        out_dir = default_run_dir(RESULTS_ROOT, scenario.name, cfg.policy, datetime.now())
    out = write_run(
        out_dir,
        requests,
        timeline_frame(result, cfg.interval_s),
        result.records,
        summary,
        scenario=scenario,
    )
    return RunOutcome(Path(out), summary, result)
