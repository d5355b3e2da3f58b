"""Parameter sweeps over scenario keys (a resumable Cartesian grid, sweep.csv and a line plot
or heat-map) and the DistServe-style goodput search for the highest sustainable rate."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import logging
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from planlab.compare import Progress, _write_text, run_jobs  # noqa: E402
from planlab.distributed import Backend  # noqa: E402
from planlab.report import _finite, _jsonable, save_figure  # noqa: E402
from planner.errors import ConfigError  # noqa: E402
from scenario import (  # noqa: E402
    PiecewiseRate,
    RateSchedule,
    Scenario,
    SineRate,
    SpikeRate,
    StepRate,
    WorkloadSpec,
    load_scenario,
)

log = logging.getLogger(__name__)

RESULT_COLUMNS = (
    "status",
    "reused",
    "joint_attainment",
    "ttft_attainment",
    "itl_attainment",
    "target_attainment",
    "ttft_p99_ms",
    "tpot_p99_ms",
    "gpu_hours",
    "goodput_rps",
    "goodput_per_gpu_hour",
    "scaling_events",
    "run_dir",
    "error",
)


# --- the grid -------------------------------------------------------------------------------


def split_values(text: str) -> list[str]:
    """`30s,60s,[[0,1],[60,2]]` -> ['30s', '60s', '[[0,1],[60,2]]']: commas inside brackets
    or braces belong to the value."""
    values, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            values.append(text[start:i].strip())
            start = i + 1
    values.append(text[start:].strip())
    return values


def parse_sets(items: Sequence[str]) -> list[tuple[str, list[str]]]:
    """`--set key=v1,v2` arguments -> [(key, [v1, v2]), ...]; ConfigError on bad syntax."""
    axes: list[tuple[str, list[str]]] = []
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip()
        vals = split_values(values) if sep else []
        if not key or not vals or any(v == "" for v in vals):
            raise ConfigError(
                f"got {item!r}; expected KEY=V1,V2,... e.g. planner.interval=30s,60s",
                key="--set",
            )
        if any(k == key for k, _ in axes):
            raise ConfigError(
                f"{key} is swept twice; give it once with all its values", key="--set"
            )
        axes.append((key, vals))
    return axes


def grid(axes: Sequence[tuple[str, Sequence[str]]]) -> list[dict[str, str]]:
    """The Cartesian product, first key slowest."""
    keys = [k for k, _ in axes]
    return [
        dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(v for _, v in axes))
    ]


def point_name(point: dict[str, str]) -> str:
    """A directory name from the point's values; a short hash is added when the values
    needed cleaning (so that distinct points never share a directory)."""
    raw = "__".join(f"{k}={v}" for k, v in point.items())
    clean = re.sub(r"[^A-Za-z0-9._=-]+", "-", raw).strip("-")
    if clean == raw and len(clean) <= 120:
        return clean
    digest = hashlib.sha1(json.dumps(point, sort_keys=True).encode()).hexdigest()[:8]
    return f"{clean[:110]}-{digest}"


def load_points(
    scenario_path: str | Path, points: Sequence[dict[str, str]], policy: str | None
) -> list[Scenario]:
    """Every grid point parsed and validated before anything runs (ConfigError names the key
    and value of the first bad one)."""
    out = []
    for point in points:
        overrides = dict(point)
        if policy is not None:
            overrides["planner.policy"] = policy
        out.append(load_scenario(scenario_path, overrides))
    return out


def _summary_row(summary: dict[str, Any], run_dir: Path, reused: bool) -> dict[str, Any]:
    att = summary.get("attainment") or {}
    return {
        "status": "ok",
        "reused": reused,
        "joint_attainment": _finite(att.get("joint")),
        "ttft_attainment": _finite(att.get("ttft")),
        "itl_attainment": _finite(att.get("itl")),
        "target_attainment": _finite(att.get("target")),
        "ttft_p99_ms": _finite((summary.get("ttft_ms") or {}).get("p99")),
        "tpot_p99_ms": _finite((summary.get("tpot_ms") or {}).get("p99")),
        "gpu_hours": _finite((summary.get("gpu_hours") or {}).get("total")),
        "goodput_rps": _finite(summary.get("goodput_rps")),
        "goodput_per_gpu_hour": _finite(summary.get("goodput_per_gpu_hour")),
        "scaling_events": summary.get("scaling_events"),
        "run_dir": str(run_dir),
        "error": "",
    }


def _run_point(scenario: Scenario, run_dir: Path) -> dict[str, Any]:
    from planlab.runner import run_scenario

    outcome = run_scenario(scenario, out_dir=run_dir, force=True)  # inside the sweep's own folder
    return _summary_row(outcome.summary, run_dir, reused=False)


def sweep(
    scenario_path: str | Path,
    axes: Sequence[tuple[str, Sequence[str]]],
    out_dir: str | Path,
    *,
    policy: str | None = None,
    jobs: int | None = None,
    progress: Progress | None = None,
    backend: Backend | None = None,
) -> pd.DataFrame:
    """Run every grid point into out_dir/points/<values>/ and write sweep.csv and
    plots/sweep.png (+ .json): a line plot for one key, a heat-map for two.

    Resumable: a point whose directory already holds summary.json is read, not re-run
    (reused=True in its row). Every point is validated before any runs (ConfigError)."""
    out_dir = Path(out_dir)
    if not axes:
        raise ConfigError("nothing to sweep; expected --set KEY=V1,V2,...")
    points = grid(axes)
    scenarios = load_points(scenario_path, points, policy)
    rows: list[dict[str, Any] | None] = [None] * len(points)
    todo = []
    for i, (point, scenario) in enumerate(zip(points, scenarios, strict=True)):
        run_dir = out_dir / "points" / point_name(point)
        summary_path = run_dir / "summary.json"
        if summary_path.is_file():
            try:
                summary = json.loads(summary_path.read_text(encoding="utf-8"))
                rows[i] = _summary_row(summary, run_dir, reused=True)
                log.info("point %s already done; kept", run_dir.name)
                continue
            except json.JSONDecodeError:
                log.warning("unreadable %s; running the point again", summary_path)
        todo.append(
            (
                i,
                (
                    _run_point,
                    (scenario, run_dir),
                    {"run_dir": str(run_dir), "label": run_dir.name},
                    1,
                ),
            )
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    done = run_jobs([job for _, job in todo], jobs, progress, backend=backend)
    for (i, _), row in zip(todo, done, strict=True):
        row.setdefault("reused", False)
        rows[i] = row
    keys = [k for k, _ in axes]
    df = pd.DataFrame(
        [{**point, **row} for point, row in zip(points, rows, strict=True)],
        columns=keys + list(RESULT_COLUMNS),
    )
    _write_text(out_dir / "sweep.csv", df.to_csv(index=False, lineterminator="\n"))
    if len(keys) <= 2:
        plot_sweep(df, axes, out_dir / "plots")
    else:
        log.info("no plot for a sweep over %d keys (one or two can be drawn)", len(keys))
    return df


def plot_sweep(
    df: pd.DataFrame, axes: Sequence[tuple[str, Sequence[str]]], plots_dir: Path
) -> Path:
    plots_dir.mkdir(parents=True, exist_ok=True)
    joint = pd.to_numeric(df["joint_attainment"], errors="coerce").to_numpy(dtype=float)
    gpu = pd.to_numeric(df["gpu_hours"], errors="coerce").to_numpy(dtype=float)
    target = _finite(pd.to_numeric(df["target_attainment"], errors="coerce").dropna().max())
    data: dict[str, Any] = {"keys": [k for k, _ in axes], "target_attainment": target}
    if len(axes) == 1:
        key, values = axes[0]
        x = np.arange(len(values))
        fig, ax = plt.subplots(figsize=(8.5, 4.6))
        ax.plot(x, joint, marker="o", lw=2, color="black", label="joint attainment")
        if target is not None:
            ax.axhline(target, color="red", ls="--", lw=1.2, label=f"target {target:g}")
        ax.set_xticks(x, list(values))
        ax.set_xlabel(key)
        ax.set_ylabel("joint SLA attainment")
        ax.grid(alpha=0.3)
        ax2 = ax.twinx()
        ax2.plot(x, gpu, marker="s", lw=1.5, ls="--", color="tab:blue", label="GPU-hours")
        ax2.set_ylabel("GPU-hours", color="tab:blue")
        ax2.set_ylim(bottom=0)
        lines = ax.get_legend_handles_labels()
        lines2 = ax2.get_legend_handles_labels()
        ax.legend(
            lines[0] + lines2[0],
            lines[1] + lines2[1],
            loc="upper center",
            bbox_to_anchor=(0.5, -0.16),
            ncol=3,
            frameon=False,
        )
        ax.set_title(f"Sweep over {key}")
        data.update({key: list(values), "joint_attainment": joint, "gpu_hours": gpu})
    else:
        (k1, v1), (k2, v2) = axes
        z = joint.reshape(len(v1), len(v2))
        g = gpu.reshape(len(v1), len(v2))
        fig, ax = plt.subplots(figsize=(1.6 * len(v2) + 4, 1.0 * len(v1) + 2.6))
        finite = z[np.isfinite(z)]
        vmin = min(float(finite.min()) if len(finite) else 0.0, (target or 1.0) - 0.05)
        im = ax.imshow(z, cmap="RdYlGn", vmin=vmin, vmax=1.0, aspect="auto")
        for i in range(len(v1)):
            for j in range(len(v2)):
                text = "-" if not np.isfinite(z[i, j]) else f"{z[i, j]:.3f}\n{g[i, j]:.2f} GPU-h"
                dark = np.isfinite(z[i, j]) and (z[i, j] - vmin) < 0.2 * (1.0 - vmin)
                color = "white" if dark else "black"
                ax.text(j, i, text, ha="center", va="center", fontsize=9, color=color)
        ax.set_xticks(np.arange(len(v2)), list(v2))
        ax.set_yticks(np.arange(len(v1)), list(v1))
        ax.set_xlabel(k2)
        ax.set_ylabel(k1)
        fig.colorbar(im, ax=ax, label="joint SLA attainment")
        ax.set_title("Joint SLA attainment (and GPU-hours) per point")
        data.update(
            {k1: list(v1), k2: list(v2), "joint_attainment": z.tolist(), "gpu_hours": g.tolist()}
        )
    fig.tight_layout()
    return save_figure(fig, plots_dir, "sweep", data)


# --- goodput search -------------------------------------------------------------------------


def scale_schedule(rate: RateSchedule, factor: float) -> RateSchedule:
    """The same shape with every rate multiplied by factor."""
    if isinstance(rate, PiecewiseRate):
        return PiecewiseRate(tuple((t, r * factor) for t, r in rate.points))
    if isinstance(rate, SineRate):
        return dataclasses.replace(rate, mean=rate.mean * factor, amplitude=rate.amplitude * factor)
    if isinstance(rate, StepRate):
        return dataclasses.replace(rate, before=rate.before * factor, after=rate.after * factor)
    if isinstance(rate, SpikeRate):
        return dataclasses.replace(rate, base=rate.base * factor, peak=rate.peak * factor)
    raise TypeError(f"unknown rate schedule {type(rate).__name__}")


def scale_workload(workload: WorkloadSpec, factor: float) -> WorkloadSpec:
    """The workload with its arrival rate multiplied by factor (generated: the schedule;
    trace: trace.rate_scale). A closed loop has no rate: ConfigError."""
    if not (factor > 0 and math.isfinite(factor)):
        raise ConfigError(f"rate scale {factor!r}: expected a positive number")
    if workload.arrival is not None:
        arrival = dataclasses.replace(
            workload.arrival, rate=scale_schedule(workload.arrival.rate, factor)
        )
        return dataclasses.replace(workload, arrival=arrival)
    if workload.trace is not None:
        trace = dataclasses.replace(workload.trace, rate_scale=workload.trace.rate_scale * factor)
        return dataclasses.replace(workload, trace=trace)
    raise ConfigError(
        "a closed-loop workload has no arrival rate to scale; expected workload.arrival or "
        "workload.trace",
        key="workload.closed_loop",
    )


def scale_scenario(scenario: Scenario, factor: float) -> Scenario:
    return dataclasses.replace(scenario, workload=scale_workload(scenario.workload, factor))


@dataclass(frozen=True)
class MaxRateResult:
    """The highest rate scale that met the target (scale, with its offered rate in req/s),
    the lowest that missed it (upper_scale; None when the search hit max_scale), and every
    evaluated step in order."""

    scale: float | None
    rate_rps: float | None
    attainment: float | None
    upper_scale: float | None
    target: float
    tolerance: float
    steps: tuple[dict[str, Any], ...]

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(dataclasses.asdict(self))


def _evaluate(scenario: Scenario) -> dict[str, Any]:
    from planlab.runner import run_scenario

    return run_scenario(scenario, write=False).summary


def find_max_rate(
    scenario: Scenario,
    *,
    policy: str = "static",
    tolerance: float = 0.02,
    min_scale: float = 1 / 64,
    max_scale: float = 64.0,
    evaluate: Callable[[Scenario], dict[str, Any]] | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> MaxRateResult:
    """Bisect the arrival-rate scale for the highest one at which the scenario's fixed
    cluster (policy static by default) keeps joint attainment >= the SLA target.

    From scale 1, double (or halve) until the target flips, then bisect until the failing
    scale is within (1 + tolerance) of the passing one. evaluate(scenario) -> summary
    defaults to a simulated run that writes nothing."""
    if not 0 < tolerance < 1:
        raise ConfigError(f"tolerance {tolerance!r}: expected a number between 0 and 1")
    base = dataclasses.replace(
        scenario, planner=dataclasses.replace(scenario.planner, policy=policy)
    )
    evaluate = evaluate or _evaluate
    target = float(base.sla.target_attainment)
    steps: list[dict[str, Any]] = []

    def run(scale: float) -> bool:
        summary = evaluate(scale_scenario(base, scale))
        joint = _finite((summary.get("attainment") or {}).get("joint"))
        arrived = (summary.get("requests") or {}).get("arrived") or 0
        duration = _finite(summary.get("duration_s")) or base.duration_s
        step = {
            "step": len(steps) + 1,
            "scale": scale,
            "rate_rps": arrived / duration if duration else None,
            "joint_attainment": joint,
            "meets_target": joint is not None and joint >= target,
        }
        steps.append(step)
        if progress:
            progress(step)
        return step["meets_target"]

    lo: float | None = None
    hi: float | None = None
    scale = 1.0
    if run(scale):
        lo = scale
        while hi is None and lo < max_scale:
            scale = min(lo * 2, max_scale)
            if run(scale):
                lo = scale
            else:
                hi = scale
    else:
        hi = scale
        while lo is None and hi > min_scale:
            scale = max(hi / 2, min_scale)
            if run(scale):
                lo = scale
            else:
                hi = scale
    if lo is not None and hi is not None:
        while hi > lo * (1 + tolerance):
            mid = (lo + hi) / 2
            if run(mid):
                lo = mid
            else:
                hi = mid
    best = next((s for s in steps if lo is not None and s["scale"] == lo), None)
    return MaxRateResult(
        scale=lo,
        rate_rps=None if best is None else best["rate_rps"],
        attainment=None if best is None else best["joint_attainment"],
        upper_scale=hi,
        target=target,
        tolerance=tolerance,
        steps=tuple(steps),
    )


def write_max_rate(result: MaxRateResult, out_dir: str | Path) -> Path:
    """max_rate.json (the result with its steps) and max_rate_steps.csv into out_dir."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_text(
        out_dir / "max_rate_steps.csv",
        pd.DataFrame(list(result.steps)).to_csv(
            index=False, float_format="%.6f", lineterminator="\n"
        ),
    )
    path = out_dir / "max_rate.json"
    _write_text(path, json.dumps(result.to_dict(), indent=2, allow_nan=False) + "\n")
    return path
