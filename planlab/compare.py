"""Policies side by side: run every scenario x policy x seed (in parallel processes) or read
existing run directories, and write compare.csv, a Pareto plot, overlaid GPU timelines and
compare.html."""

from __future__ import annotations

import html
import logging
import os
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from planlab.distributed import Backend  # noqa: E402
from planlab.report import _col, _finite, _img, _time_axis, save_figure  # noqa: E402
from planlab.results import read_run  # noqa: E402
from planner.errors import ConfigError  # noqa: E402
from scenario import Scenario, load_scenario  # noqa: E402

log = logging.getLogger(__name__)

# Columns of compare.csv, in order. kind is "run" (one simulated or given run) or "mean"
# (the runs of one scenario and policy aggregated: means, with min and max over seeds).
COLUMNS = (
    "kind",
    "scenario",
    "policy",
    "seed",
    "runs",
    "status",
    "joint_attainment",
    "joint_attainment_min",
    "joint_attainment_max",
    "ttft_attainment",
    "itl_attainment",
    "target_attainment",
    "ttft_p99_ms",
    "tpot_p99_ms",
    "gpu_hours",
    "gpu_hours_min",
    "gpu_hours_max",
    "scaling_events",
    "goodput_rps",
    "goodput_per_gpu_hour",
    "requests",
    "run_dir",
    "error",
)
_METRICS = (
    "joint_attainment",
    "ttft_attainment",
    "itl_attainment",
    "target_attainment",
    "ttft_p99_ms",
    "tpot_p99_ms",
    "gpu_hours",
    "scaling_events",
    "goodput_rps",
    "goodput_per_gpu_hour",
    "requests",
)
ORACLE = "oracle"
ORACLE_SLA = "oracle-sla"
POLICY_COLORS = {
    "static": "tab:gray",
    "dynamo": "tab:blue",
    "dynamo-legacy": "tab:cyan",
    "threshold": "tab:orange",
    "slaplan": "tab:green",
    "oracle": "tab:purple",
    "oracle-sla": "tab:red",
}

Progress = Callable[[int, int, str], None]


# --- inputs ---------------------------------------------------------------------------------


def resolve_inputs(items: Sequence[str | Path]) -> tuple[list[Path], list[Path]]:
    """Split command-line inputs into scenario files and existing run directories.

    A YAML file is a scenario; a directory holding summary.json is a run; any other
    directory contributes every *.yaml in it (sorted). Anything else is a ConfigError."""
    scenarios: list[Path] = []
    runs: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_file() and path.suffix in (".yaml", ".yml"):
            scenarios.append(path)
        elif path.is_dir() and (path / "summary.json").is_file():
            runs.append(path)
        elif path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml"))
            if not found:
                raise ConfigError(
                    "no *.yaml scenarios and no summary.json in this directory; expected "
                    "a scenario file, a folder of scenarios or a results directory",
                    source=str(path),
                )
            scenarios.extend(found)
        else:
            raise ConfigError(
                "not found or not a scenario; expected a scenario .yaml file, a folder of "
                "scenarios or a results directory",
                source=str(path),
            )
    return scenarios, runs


def load_for_policies(paths: Iterable[str | Path], policies: Sequence[str]) -> list[Scenario]:
    """Load each scenario and check it parses with every policy (ConfigError otherwise),
    so that bad input stops the comparison before anything runs."""
    out = []
    for path in paths:
        scenario = load_scenario(path)
        for policy in policies:
            load_scenario(path, {"planner.policy": policy})
        out.append(scenario)
    return out


def _check_policies(policies: Sequence[str]) -> None:
    from planner.policies import all as _all  # noqa: F401  (registers every policy)
    from planner.policies.base import POLICIES

    if not policies:
        raise ConfigError("no policies given; expected e.g. --policies dynamo,slaplan")
    for p in policies:
        if p not in POLICIES:
            raise ConfigError(
                f"unknown policy {p!r}; expected one of {', '.join(sorted(POLICIES))}",
                key="--policies",
            )


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "-", text).strip("-") or "x"


# --- one run --------------------------------------------------------------------------------


def _policy_label(policy: Any, extra: dict[str, Any]) -> Any:
    """The policy, marked with where a live run ran (`dynamo @emulator`, `dynamo @dynamo`),
    so simulated and live runs of one scenario stand side by side, never averaged."""
    mode = str(extra.get("mode") or "")
    if not mode.startswith("live"):
        return policy
    where = extra.get("stack") or ("emulator" if mode == "live-emulated" else "live")
    return f"{policy} @{where}"


def row_from_summary(summary: dict[str, Any], run_dir: Path | None) -> dict[str, Any]:
    """A compare.csv run row from a summary.json."""
    att = summary.get("attainment") or {}
    extra = summary.get("extra") or {}
    return {
        "kind": "run",
        "scenario": summary.get("scenario"),
        "policy": _policy_label(summary.get("policy"), extra),
        "seed": extra.get("seed"),
        "runs": 1,
        "status": "ok",
        "joint_attainment": _finite(att.get("joint")),
        "ttft_attainment": _finite(att.get("ttft")),
        "itl_attainment": _finite(att.get("itl")),
        "target_attainment": _finite(att.get("target")),
        "ttft_p99_ms": _finite((summary.get("ttft_ms") or {}).get("p99")),
        "tpot_p99_ms": _finite((summary.get("tpot_ms") or {}).get("p99")),
        "gpu_hours": _finite((summary.get("gpu_hours") or {}).get("total")),
        "scaling_events": summary.get("scaling_events"),
        "goodput_rps": _finite(summary.get("goodput_rps")),
        "goodput_per_gpu_hour": _finite(summary.get("goodput_per_gpu_hour")),
        "requests": (summary.get("requests") or {}).get("arrived"),
        "run_dir": None if run_dir is None else str(run_dir),
        "error": "",
    }


def _run_one(
    scenario: Scenario, policy: str, seed: int, out_dir: Path, report: bool
) -> dict[str, Any]:
    """One simulated run into out_dir (in a worker process); returns its compare row."""
    from planlab.runner import run_scenario

    if policy == ORACLE_SLA and scenario.planner.options.get("schedule") is None:
        return _run_oracle_sla(scenario, seed, out_dir)
    outcome = run_scenario(scenario, out_dir=out_dir, policy=policy, seed=seed, force=True)
    if report:
        from planlab.report import write_report

        write_report(outcome.out_dir)
    return row_from_summary(outcome.summary, outcome.out_dir)


def _run_oracle_sla(scenario: Scenario, seed: int, out_dir: Path) -> dict[str, Any]:
    """oracle-sla without a schedule: search one (inline, bounded by
    planner.options.search_budget_s, default 300 s), then write its run into out_dir."""
    import dataclasses

    from planlab.oracle_search import search, with_schedule
    from planlab.runner import run_scenario
    from planner.errors import number_in

    scenario = dataclasses.replace(scenario, seed=int(seed))
    budget_s = number_in(
        scenario.planner.options.get("search_budget_s", 300.0),
        "planner.options.search_budget_s",
        lo=0.0,
        lo_open=True,
    )
    result = search(scenario, budget_s=budget_s)
    # the run's scenario.yaml holds the schedule (planner.options.schedule)
    outcome = run_scenario(
        with_schedule(scenario, result.best.schedule), out_dir=out_dir, force=True
    )
    return row_from_summary(outcome.summary, outcome.out_dir)


def _seed_list(scenario: Scenario, seeds: int | Sequence[int]) -> list[int]:
    if isinstance(seeds, int):
        if seeds < 1:
            raise ConfigError(f"--seeds {seeds}: expected a positive number of seeds")
        return [scenario.seed + k for k in range(seeds)]
    return [int(s) for s in seeds]


def run_jobs(
    jobs_list: Sequence[tuple],
    jobs: int | None,
    progress: Progress | None,
    *,
    backend: Backend | None = None,
) -> list[dict[str, Any]]:
    """Run (fn, args, crash_row[, out_index]) jobs on the backend (default: processes, inline
    when jobs == 1; out_index: where in args the run's results directory is, so that a Dask
    worker can send it back); a job that raises gives its crash_row with status "crashed"
    and the error, the others go on."""
    from planlab.distributed import Task, as_completed

    backend = backend or Backend(jobs=jobs)
    total = len(jobs_list)
    results: list[dict[str, Any] | None] = [None] * total
    tasks = [
        Task(job[0], tuple(job[1]), job[3] if len(job) > 3 else None, str(job[2].get("label", i)))
        for i, job in enumerate(jobs_list)
    ]
    for done, (i, result, exc) in enumerate(as_completed(tasks, backend), start=1):
        if exc is not None:  # a crashed run is reported, the others still run
            log.error("run %s crashed: %s", tasks[i].label, exc)
            result = dict(jobs_list[i][2])
            result.pop("label", None)
            result.update(status="crashed", error=f"{type(exc).__name__}: {exc}")
        results[i] = result
        if progress:
            progress(done, total, f"{tasks[i].label} [{result['status']}]")
    return results  # type: ignore[return-value]


# --- the comparison -------------------------------------------------------------------------


def compare(
    scenarios: Sequence[Scenario | str | Path],
    policies: Sequence[str],
    seeds: int | Sequence[int],
    out_dir: str | Path,
    jobs: int | None = None,
    progress: Progress | None = None,
    *,
    run_dirs: Sequence[str | Path] = (),
    run_reports: bool = False,
    backend: Backend | None = None,
) -> pd.DataFrame:
    """Run every scenario x policy x seed into out_dir/runs/ and write compare.csv,
    plots/pareto.png (+ .json), plots/timelines-<scenario>.png and compare.html.

    seeds: a count (the scenario's seed, seed+1, ...) or explicit seeds. run_dirs: existing
    results directories added to the comparison as they are (not re-run). jobs: worker
    processes (None: os.cpu_count(); 1 runs inline); backend: where the runs go instead
    (planlab.distributed: processes or a Dask cluster). progress(done, total, label) after
    each run. Returns the compare.csv rows: one "run" row per run, one "mean" row per
    scenario and policy. Bad scenarios or policies raise ConfigError before anything runs;
    a crashed run is a row with status "crashed".
    """
    out_dir = Path(out_dir)
    if scenarios:
        _check_policies(policies)
    loaded = [
        s if isinstance(s, Scenario) else load_for_policies([s], policies)[0] for s in scenarios
    ]
    given = [Path(d) for d in run_dirs]
    given_rows = []
    for d in given:
        run = read_run(d)  # ConfigError for a malformed directory, before anything runs
        given_rows.append(row_from_summary(run.summary, d))

    names: dict[str, int] = {}
    jobs_list = []
    for scenario in loaded:
        name = scenario.name
        names[name] = names.get(name, 0) + 1
        tag = name if names[name] == 1 else f"{name}-{names[name]}"
        for policy in policies:
            for seed in _seed_list(scenario, seeds):
                run_dir = out_dir / "runs" / _safe(f"{tag}-{policy}-seed{seed}")
                crash_row = {
                    "kind": "run",
                    "scenario": name,
                    "policy": policy,
                    "seed": seed,
                    "runs": 1,
                    "run_dir": "",
                    "label": f"{name} {policy} seed {seed}",
                }
                jobs_list.append(
                    (_run_one, (scenario, policy, seed, run_dir, run_reports), crash_row, 3)
                )
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = run_jobs(jobs_list, jobs, progress, backend=backend) + given_rows
    df = summarize(rows)
    write_outputs(df, out_dir)
    return df


def summarize(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Run rows plus one "mean" row per (scenario, policy) over its successful runs."""
    runs = pd.DataFrame(list(rows), columns=list(COLUMNS))
    runs["kind"] = "run"
    runs["seed"] = pd.to_numeric(runs["seed"], errors="coerce").astype("Int64")
    means = []
    for (scenario, policy), group in runs.groupby(["scenario", "policy"], sort=False):
        ok = group[group["status"] == "ok"]
        row: dict[str, Any] = {
            "kind": "mean",
            "scenario": scenario,
            "policy": policy,
            "runs": len(ok),
            "status": "ok" if len(ok) == len(group) else f"{len(group) - len(ok)} crashed",
            "run_dir": "",
            "error": "",
        }
        for m in _METRICS:
            vals = pd.to_numeric(ok[m], errors="coerce")
            row[m] = float(vals.mean()) if vals.notna().any() else np.nan
        for m in ("joint_attainment", "gpu_hours"):
            vals = pd.to_numeric(ok[m], errors="coerce")
            row[f"{m}_min"] = float(vals.min()) if vals.notna().any() else np.nan
            row[f"{m}_max"] = float(vals.max()) if vals.notna().any() else np.nan
        means.append(row)
    out = pd.concat([runs, pd.DataFrame(means, columns=list(COLUMNS))], ignore_index=True)
    return out


REGRET_COLUMNS = (
    "scenario",
    "policy",
    "joint_attainment",
    "gpu_hours",
    "regret",
    "gpu_hours_vs_oracle_sla",
    "gpu_hours_vs_lower_bound",
    "oracle_sla_gpu_hours",
    "oracle_sla_meets_target",
    "lower_bound_gpu_hours",
    "note",
)


def regret_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per scenario and policy (mean rows): regret = GPU-hours / oracle-sla GPU-hours where
    oracle-sla met the target, and GPU-hours over the throughput oracle's (the lower bound).
    Where oracle-sla ran but no schedule it found met the target, regret is left out and the
    note says so: the comparison is then attainment at equal GPU-hours
    (gpu_hours_vs_oracle_sla beside joint_attainment). Empty when oracle-sla did not run."""
    means = df[df["kind"] == "mean"]
    rows = []
    for scenario in dict.fromkeys(means["scenario"]):
        group = means[means["scenario"] == scenario]
        ref = group[group["policy"] == ORACLE_SLA]
        if not len(ref):
            continue
        ref_h = _finite(ref["gpu_hours"].iloc[0])
        target = _finite(ref["target_attainment"].iloc[0])
        ref_att = _finite(ref["joint_attainment"].iloc[0])
        met = ref_att is not None and target is not None and ref_att >= target
        low = group[group["policy"] == ORACLE]
        low_h = _finite(low["gpu_hours"].iloc[0]) if len(low) else None
        for _, m in group.iterrows():
            h = _finite(m["gpu_hours"])
            ratio = h / ref_h if h is not None and ref_h else None
            rows.append(
                {
                    "scenario": scenario,
                    "policy": m["policy"],
                    "joint_attainment": _finite(m["joint_attainment"]),
                    "gpu_hours": h,
                    "regret": ratio if met else None,
                    "gpu_hours_vs_oracle_sla": ratio,
                    "gpu_hours_vs_lower_bound": h / low_h if h is not None and low_h else None,
                    "oracle_sla_gpu_hours": ref_h,
                    "oracle_sla_meets_target": met,
                    "lower_bound_gpu_hours": low_h,
                    "note": ""
                    if met
                    else f"no schedule within the budget met the target {target:g} (best "
                    f"{ref_att:.4f}): compare attainment at equal GPU-hours",
                }
            )
    return pd.DataFrame(rows, columns=list(REGRET_COLUMNS))


def format_regret(reg: pd.DataFrame) -> str:
    """The regret section of the printed comparison ('' when oracle-sla did not run)."""
    if not len(reg):
        return ""

    def f(x: Any, spec: str) -> str:
        v = _finite(x)
        return "-" if v is None else format(v, spec)

    lines = [
        "regret = GPU-hours / oracle-sla GPU-hours (the cheapest schedule found that meets "
        "the target); lower bound = the throughput oracle's GPU-hours",
        f"{'scenario':<16} {'policy':<14} {'joint':>7} {'GPU-h':>8} {'regret':>7} {'x bound':>8}",
    ]
    for scenario in dict.fromkeys(reg["scenario"]):
        group = reg[reg["scenario"] == scenario]
        for _, r in group.iterrows():
            lines.append(
                f"{str(scenario)[:16]:<16} {str(r['policy'])[:14]:<14} "
                f"{f(r['joint_attainment'], '.4f'):>7} {f(r['gpu_hours'], '.3f'):>8} "
                f"{f(r['regret'], '.2f'):>7} {f(r['gpu_hours_vs_lower_bound'], '.2f'):>8}"
            )
        if group["note"].iloc[0]:
            lines.append(f"  {scenario}: {group['note'].iloc[0]}")
    return "\n".join(lines)


def compare_run_dirs(run_dirs: Sequence[str | Path], out_dir: str | Path) -> pd.DataFrame:
    """Compare existing results directories as they are (nothing is re-run)."""
    return compare([], [], 1, out_dir, run_dirs=run_dirs)


# --- outputs --------------------------------------------------------------------------------


def _seed(value: Any) -> int | None:
    v = _finite(value)
    return None if v is None else int(v)


def _policy_color(policy: str, i: int) -> str:
    return POLICY_COLORS.get(policy, f"C{i % 10}")


def pareto_data(df: pd.DataFrame) -> dict[str, Any]:
    """Per scenario and policy: the runs' GPU-hours and joint attainment, their means and
    ranges, and the oracle's mean GPU-hours (the lower bound) where it ran."""
    data: dict[str, Any] = {}
    runs = df[(df["kind"] == "run") & (df["status"] == "ok")]
    means = df[df["kind"] == "mean"]
    for scenario in dict.fromkeys(df["scenario"]):
        entry: dict[str, Any] = {"policies": {}, "oracle_gpu_hours": None}
        for _, m in means[means["scenario"] == scenario].iterrows():
            r = runs[(runs["scenario"] == scenario) & (runs["policy"] == m["policy"])]
            entry["policies"][m["policy"]] = {
                "seeds": r["seed"].tolist(),
                "gpu_hours": pd.to_numeric(r["gpu_hours"]).tolist(),
                "joint_attainment": pd.to_numeric(r["joint_attainment"]).tolist(),
                "mean_gpu_hours": m["gpu_hours"],
                "mean_joint_attainment": m["joint_attainment"],
                "gpu_hours_range": [m["gpu_hours_min"], m["gpu_hours_max"]],
                "joint_attainment_range": [m["joint_attainment_min"], m["joint_attainment_max"]],
            }
            if m["policy"] == ORACLE:
                entry["oracle_gpu_hours"] = m["gpu_hours"]
        target = pd.to_numeric(runs[runs["scenario"] == scenario]["target_attainment"])
        entry["target_attainment"] = float(target.iloc[0]) if len(target) else None
        data[str(scenario)] = entry
    return data


def _pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Means not beaten by another (fewer or equal GPU-hours and higher or equal
    attainment), sorted by GPU-hours."""
    front = []
    for x, y in sorted(points):
        if not front or y > front[-1][1]:
            front.append((x, y))
    return front


def plot_pareto(df: pd.DataFrame, plots_dir: Path) -> Path:
    data = pareto_data(df)
    n = max(1, len(data))
    ncols = min(2, n)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.2 * ncols + 2.2, 4.6 * nrows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    for ax, (scenario, entry) in zip(axes.flat, data.items(), strict=False):
        means = []
        for i, (policy, p) in enumerate(entry["policies"].items()):
            color = _policy_color(policy, i)
            ax.scatter(p["gpu_hours"], p["joint_attainment"], color=color, alpha=0.35, s=22)
            mx, my = _finite(p["mean_gpu_hours"]), _finite(p["mean_joint_attainment"])
            if mx is None or my is None:
                continue
            means.append((mx, my))
            xr, yr = p["gpu_hours_range"], p["joint_attainment_range"]
            ax.errorbar(
                mx,
                my,
                xerr=[[mx - xr[0]], [xr[1] - mx]],
                yerr=[[my - yr[0]], [yr[1] - my]],
                fmt="*" if policy == ORACLE else "o",
                ms=12 if policy == ORACLE else 8,
                color=color,
                mec="black",
                capsize=3,
                label=policy,
            )
            ax.annotate(policy, (mx, my), textcoords="offset points", xytext=(7, 5), fontsize=9)
        front = _pareto_front(means)
        if len(front) > 1:
            fx, fy = zip(*front, strict=True)
            ax.plot(fx, fy, color="0.5", lw=1, ls="-", zorder=0, label="Pareto front (means)")
        if entry["oracle_gpu_hours"] is not None:
            ax.axvline(
                entry["oracle_gpu_hours"],
                color="tab:purple",
                ls=":",
                lw=1.3,
                label="oracle: GPU-hour lower bound",
            )
        if entry["target_attainment"] is not None:
            ax.axhline(
                entry["target_attainment"],
                color="red",
                ls="--",
                lw=1.2,
                label=f"target {entry['target_attainment']:g}",
            )
        ax.set_title(f"{scenario}: cost vs SLA attainment")
        ax.set_xlabel("GPU-hours (lower is better)")
        ax.set_ylabel("joint SLA attainment (higher is better)")
        ax.margins(x=0.15, y=0.12)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, plots_dir, "pareto", data)


def plot_timelines(df: pd.DataFrame, scenario: str, plots_dir: Path) -> Path | None:
    """Request rate and total GPUs over time, one line per policy (its first seed)."""
    runs = df[(df["kind"] == "run") & (df["status"] == "ok") & (df["scenario"] == scenario)]
    series: dict[str, Any] = {}
    for _, r in runs.drop_duplicates("policy").iterrows():
        try:
            tl = read_run(r["run_dir"]).timeline
        except ConfigError as exc:
            log.warning("no timeline for %s: %s", r["run_dir"], exc)
            continue
        series[r["policy"]] = {
            "seed": _seed(r["seed"]),
            "t_s": _col(tl, "t_s"),
            "gpus": _col(tl, "gpus"),
            "request_rate": _col(tl, "request_rate"),
        }
    if not series:
        return None
    end = max(float(np.nanmax(s["t_s"])) if len(s["t_s"]) else 0.0 for s in series.values())
    scale, unit = _time_axis(end)
    fig, (ax_r, ax_g) = plt.subplots(
        2, 1, figsize=(11, 6), sharex=True, gridspec_kw={"height_ratios": [1, 2]}
    )
    first = next(iter(series.values()))
    ax_r.plot(first["t_s"] / scale, first["request_rate"], color="0.35", lw=1)
    ax_r.set_ylabel("request rate\n(req/s)")
    ax_r.set_ylim(bottom=0)
    ax_r.set_title(f"{scenario}: load and GPUs held per policy")
    ax_r.grid(alpha=0.3)
    n = len(series)
    for i, (policy, s) in enumerate(series.items()):
        # Widest first: where policies hold the same GPUs, every line still shows.
        ax_g.step(
            s["t_s"] / scale,
            s["gpus"],
            where="post",
            lw=1.5 + 2.0 * (n - 1 - i),
            color=_policy_color(policy, i),
            label=f"{policy} (seed {s['seed']})",
            alpha=0.85,
        )
    ax_g.set_ylabel("GPUs held")
    ax_g.set_xlabel(f"time ({unit})")
    ax_g.set_ylim(bottom=0)
    ax_g.yaxis.get_major_locator().set_params(integer=True)
    ax_g.grid(alpha=0.3)
    ax_g.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    return save_figure(fig, plots_dir, f"timelines-{_safe(str(scenario))}", series)


def fmt_spread(mean: Any, lo: Any, hi: Any, spec: str = ".3f") -> str:
    """`mean ± half the range over seeds` (just the mean for one seed)."""
    m, a, b = _finite(mean), _finite(lo), _finite(hi)
    if m is None:
        return "-"
    if a is None or b is None or b - a <= 0:
        return format(m, spec)
    return f"{format(m, spec)} ± {format((b - a) / 2, spec)}"


def table_rows(df: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """The printed/HTML table: one line per scenario and policy."""
    header = [
        "scenario",
        "policy",
        "runs",
        "joint attainment",
        "TTFT p99 ms",
        "TPOT p99 ms",
        "GPU-hours",
        "scaling events",
        "goodput/GPU-h",
    ]

    def f(x: Any, spec: str) -> str:
        v = _finite(x)
        return "-" if v is None else format(v, spec)

    rows = []
    for _, m in df[df["kind"] == "mean"].iterrows():
        rows.append(
            [
                str(m["scenario"]),
                str(m["policy"]) + (f" ({m['status']})" if m["status"] != "ok" else ""),
                str(int(m["runs"])),
                fmt_spread(
                    m["joint_attainment"], m["joint_attainment_min"], m["joint_attainment_max"]
                ),
                f(m["ttft_p99_ms"], ".1f"),
                f(m["tpot_p99_ms"], ".2f"),
                fmt_spread(m["gpu_hours"], m["gpu_hours_min"], m["gpu_hours_max"], ".3f"),
                f(m["scaling_events"], ".0f" if int(m["runs"]) == 1 else ".1f"),  # a mean
                f(m["goodput_per_gpu_hour"], ",.0f"),
            ]
        )
    return header, rows


def format_table(df: pd.DataFrame) -> str:
    header, rows = table_rows(df)
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        lines.append(
            "  ".join(
                (c.ljust(w) if i < 2 else c.rjust(w))
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )
    return "\n".join(lines)


_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:24px auto;
max-width:1280px;padding:0 16px;color:#222;line-height:1.4}
h2{margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0 16px 0;font-size:0.92em}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:right}th{background:#f4f4f4}
td.l{text-align:left}img{max-width:100%;height:auto;border:1px solid #eee}
.note{color:#666;font-size:0.9em}.bad{color:#b00020}
"""


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_outputs(df: pd.DataFrame, out_dir: Path) -> None:
    """compare.csv, the plots and compare.html into out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plots_dir = out_dir / "plots"
    plots_dir.mkdir(exist_ok=True)
    _write_text(
        out_dir / "compare.csv",
        df.to_csv(index=False, lineterminator="\n"),
    )
    pngs = [("Cost vs SLA attainment", plot_pareto(df, plots_dir))]
    for scenario in dict.fromkeys(df["scenario"]):
        png = plot_timelines(df, scenario, plots_dir)
        if png is not None:
            pngs.append((f"{scenario}: GPUs over time", png))
    reg = regret_table(df)
    if len(reg):
        _write_text(out_dir / "regret.csv", reg.to_csv(index=False, lineterminator="\n"))
    header, rows = table_rows(df)
    esc = html.escape
    table = (
        "<table><tr>"
        + "".join(f"<th>{esc(h)}</th>" for h in header)
        + "</tr>"
        + "".join(
            "<tr>"
            + "".join(f'<td class="{"l" if i < 2 else ""}">{esc(c)}</td>' for i, c in enumerate(r))
            + "</tr>"
            for r in rows
        )
        + "</table>"
    )
    runs = df[df["kind"] == "run"]
    run_items = []
    for _, r in runs.iterrows():
        target = str(r["run_dir"]) if isinstance(r["run_dir"], str) and r["run_dir"] else ""
        link = ""
        if target:
            rel = os.path.relpath(target, out_dir)
            report = Path(target) / "report.html"
            href = os.path.relpath(report, out_dir) if report.is_file() else rel
            link = f'<a href="{esc(href)}">{esc(rel)}</a>'
        err = (
            f' <span class="bad">{esc(str(r["status"]))}: {esc(str(r["error"]))}</span>'
            if r["status"] != "ok"
            else ""
        )
        run_items.append(
            f"<li>{esc(str(r['scenario']))} / {esc(str(r['policy']))} / seed "
            f"{_seed(r['seed'])}: {link}{err}</li>"
        )
    body = [
        "<h1>planlab compare</h1>",
        '<p class="note">joint attainment: share of finished requests meeting both TTFT and '
        "ITL SLAs; ± is half the range over seeds. The oracle sees the future: its GPU-hours "
        "are a lower bound for any policy on the scenario.</p>",
        table,
        *(
            [f"<h2>Regret against oracle-sla</h2><pre>{esc(format_regret(reg))}</pre>"]
            if len(reg)
            else []
        ),
        *(f"<h2>{esc(t)}</h2>{_img(p, t)}" for t, p in pngs),
        "<h2>Runs</h2><ul>" + "".join(run_items) + "</ul>",
        '<p class="note">Every number above is in compare.csv.</p>',
    ]
    _write_text(
        out_dir / "compare.html",
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>planlab '
        f"compare</title><style>{_CSS}</style></head><body>{''.join(body)}</body></html>\n",
    )
    log.info("wrote comparison to %s", out_dir)
