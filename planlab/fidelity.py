"""`planlab fidelity`: the same scenario live against a target and in the simulator with the
profile that describes the target, and how far apart they are: per-request TTFT and TPOT
distributions (mean, p50, p90, p99, the KS distance), attainment both ways, and whether the
planner took the same decisions. Writes `fidelity.json` beside the two run directories."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from planlab.results import RunData, read_run

STATS = ("mean", "p50", "p90", "p99")


def _stat(values: np.ndarray, name: str) -> float | None:
    if values.size == 0:
        return None
    if name == "mean":
        return float(values.mean())
    return float(np.percentile(values, float(name[1:])))


def _rel(sim: float | None, live: float | None) -> float | None:
    if sim is None or live is None or live == 0 or not math.isfinite(live):
        return None
    return (sim - live) / live


def _ok(df: pd.DataFrame, col: str) -> np.ndarray:
    vals = pd.to_numeric(df.loc[df["status"].astype(str) == "ok", col], errors="coerce")
    return vals.dropna().to_numpy(dtype=float)


def ks_distance(a: np.ndarray, b: np.ndarray) -> float | None:
    """The two-sample Kolmogorov-Smirnov statistic: the largest gap between the two
    empirical CDFs."""
    if a.size == 0 or b.size == 0:
        return None
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    fa = np.searchsorted(a, grid, side="right") / a.size
    fb = np.searchsorted(b, grid, side="right") / b.size
    return float(np.abs(fa - fb).max())


def _targets(decisions: list[dict]) -> dict[int, tuple[int, int]]:
    return {
        round(float(r["t_s"])): (int(r["target"]["prefill"]), int(r["target"]["decode"]))
        for r in decisions
        if r.get("target")
    }


def compare_runs(sim: RunData, live: RunData) -> dict[str, Any]:
    """fidelity.json's content for a simulated and a live run of one scenario."""
    out: dict[str, Any] = {}
    for col, name in (("ttft_ms", "ttft"), ("tpot_ms", "tpot")):
        s, lv = _ok(sim.requests, col), _ok(live.requests, col)
        for stat in STATS:
            a, b = _stat(s, stat), _stat(lv, stat)
            out[f"{name}_{stat}_ms"] = {"sim": a, "live": b, "rel_error": _rel(a, b)}
        out[f"{name}_ks_distance"] = ks_distance(s, lv)
        # The same workload and seed drive both: pair the requests by id.
        paired = pd.merge(
            sim.requests.loc[sim.requests["status"].astype(str) == "ok", ["id", col]],
            live.requests.loc[live.requests["status"].astype(str) == "ok", ["id", col]],
            on="id",
            suffixes=("_sim", "_live"),
        ).dropna()
        err = (paired[f"{col}_sim"] - paired[f"{col}_live"]) / paired[f"{col}_live"]
        out[f"{name}_paired_median_abs_rel_error"] = float(err.abs().median()) if len(err) else None
    for key in ("ttft", "itl", "joint"):
        out[f"attainment_{key}"] = {
            "sim": sim.summary["attainment"][key],
            "live": live.summary["attainment"][key],
        }
    sim_t, live_t = _targets(sim.decisions), _targets(live.decisions)
    common = sorted(set(sim_t) & set(live_t))
    differ = [t for t in common if sim_t[t] != live_t[t]]
    out["decision_ticks_compared"] = len(common)
    out["decision_ticks_differing"] = [
        {"t_s": t, "sim": list(sim_t[t]), "live": list(live_t[t])} for t in differ
    ]
    out["decisions_identical"] = bool(common) and not differ
    out["requests"] = {
        "sim": sim.summary["requests"]["arrived"],
        "live": live.summary["requests"]["arrived"],
    }
    return out


def write_fidelity(sim_dir: Path, live_dir: Path, out_dir: Path, meta: dict) -> dict:
    doc = {**meta, **compare_runs(read_run(sim_dir), read_run(live_dir))}
    path = Path(out_dir) / "fidelity.json"
    tmp = path.with_name(".fidelity.json.tmp")
    tmp.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n")
    tmp.replace(path)
    return doc


def format_table(doc: dict) -> str:
    lines = [f"{'metric':<14} {'sim':>10} {'live':>10} {'sim vs live':>12}"]
    for name in ("ttft", "tpot"):
        for stat in STATS:
            row = doc[f"{name}_{stat}_ms"]
            rel = row["rel_error"]
            lines.append(
                f"{name + ' ' + stat + ' ms':<14} {_f(row['sim']):>10} {_f(row['live']):>10} "
                f"{'-' if rel is None else format(rel, '+.1%'):>12}"
            )
        lines.append(f"{name + ' KS':<14} {_f(doc[f'{name}_ks_distance'], '.3f'):>10}")
    for key in ("ttft", "itl", "joint"):
        row = doc[f"attainment_{key}"]
        lines.append(
            f"{'attain ' + key:<14} {_f(row['sim'], '.3f'):>10} {_f(row['live'], '.3f'):>10}"
        )
    same = "yes" if doc["decisions_identical"] else "no"
    lines.append(
        f"decisions identical: {same} ({doc['decision_ticks_compared']} ticks compared, "
        f"{len(doc['decision_ticks_differing'])} differ)"
    )
    return "\n".join(lines)


def _f(x: float | None, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)
