"""The report of one run: plots/*.png with their data as plots/*.json, and a self-contained
report.html (images inlined as data URIs, inline CSS, no scripts), for simulated and live
runs alike."""

from __future__ import annotations

import base64
import html
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402

from planlab.results import ROLES, STATUS_IN_FLIGHT, STATUS_OK, RunData, read_run  # noqa: E402

log = logging.getLogger(__name__)

DPI = 110
PLOTS = ("attainment", "load_capacity", "latency_cdf", "gpus")
MAX_DECISION_ROWS = 200  # longer logs show their first and last rows with a note
CDF_POINTS = 1000  # a CDF is drawn through at most this many quantiles
ROLE_COLORS = {"prefill": "tab:blue", "decode": "tab:orange"}
PART_COLORS = {"startup": "#f2b134", "serving": "#4c9a2a", "drain": "#9e9e9e"}
DEFAULT_INTERVAL_S = 60.0


# --- numbers from the run -----------------------------------------------------------------


def _col(df: pd.DataFrame, name: str) -> np.ndarray:
    """A column as float64, NaN where missing or empty (live runs leave some columns empty)."""
    if name not in df.columns:
        return np.full(len(df), np.nan)
    return pd.to_numeric(df[name], errors="coerce").to_numpy(dtype=np.float64)


def _finite(x: Any) -> float | None:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _jsonable(values: Any) -> Any:
    """Lists of floats with NaN as None, recursively."""
    if isinstance(values, Mapping):
        return {str(k): _jsonable(v) for k, v in values.items()}
    if isinstance(values, np.ndarray):
        return [_jsonable(v) for v in values.tolist()]
    if isinstance(values, list | tuple):
        return [_jsonable(v) for v in values]
    if isinstance(values, bool | np.bool_):
        return bool(values)
    if isinstance(values, int | np.integer):
        return int(values)
    if isinstance(values, float | np.floating):
        return _finite(values)
    return values


def run_interval_s(run: RunData) -> float:
    """The planner interval: scenario.yaml, else the decisions' observation window, else the
    spacing of the decisions, else 60 s."""
    path = run.path / "scenario.yaml"
    if path.is_file():
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
            value = _finite(data["planner"]["interval"])
            if value and value > 0:
                return value
        except (yaml.YAMLError, KeyError, TypeError, OSError):
            pass
    for rec in run.decisions:
        value = _finite((rec.get("observation") or {}).get("interval_s"))
        if value and value > 0:
            return value
    times = [t for t in (_finite(r.get("t_s")) for r in run.decisions) if t is not None]
    if len(times) >= 2:
        gaps = np.diff(sorted(times))
        gaps = gaps[gaps > 0]
        if len(gaps):
            return float(np.median(gaps))
    return DEFAULT_INTERVAL_S


def sla_flags(requests: pd.DataFrame, ttft_ms: float, itl_ms: float) -> dict[str, np.ndarray]:
    """Per request: finished (ok or failed), and TTFT, ITL, joint met (docs/results.md rules:
    a failed request misses all, in-flight ones are left out, no TPOT meets ITL)."""
    status = requests["status"].astype(str).to_numpy()
    ok = status == STATUS_OK
    finished = ok | (status != STATUS_IN_FLIGHT)
    ttft = _col(requests, "ttft_ms")
    tpot = _col(requests, "tpot_ms")
    osl = _col(requests, "osl")
    ttft_ok = ok & (ttft <= ttft_ms)
    itl_ok = ok & ((osl <= 1) | np.isnan(tpot) | (tpot <= itl_ms))
    return {"finished": finished, "ttft": ttft_ok, "itl": itl_ok, "joint": ttft_ok & itl_ok}


def attainment_by_interval(
    requests: pd.DataFrame, interval_s: float, ttft_ms: float, itl_ms: float, duration_s: float
) -> dict[str, Any]:
    """Requests binned by arrival into planner intervals [k*I, (k+1)*I); the share of the
    finished ones meeting each SLA (None for an interval without finished requests)."""
    arrival = _col(requests, "arrival_s")
    end = max(duration_s, float(np.nanmax(arrival)) if np.isfinite(arrival).any() else 0.0)
    n_bins = max(1, math.ceil(end / interval_s - 1e-9))
    idx = np.clip(np.floor(np.nan_to_num(arrival, nan=0.0) / interval_s).astype(int), 0, n_bins - 1)
    flags = sla_flags(requests, ttft_ms, itl_ms)
    fin = flags["finished"]
    finished = np.bincount(idx[fin], minlength=n_bins)
    out: dict[str, Any] = {
        "interval_s": interval_s,
        "t_start_s": (np.arange(n_bins) * interval_s).tolist(),
        "finished": finished.tolist(),
    }
    for key in ("ttft", "itl", "joint"):
        met = np.bincount(idx[fin & flags[key]], minlength=n_bins)
        with np.errstate(invalid="ignore", divide="ignore"):
            share = np.where(finished > 0, met / np.maximum(finished, 1), np.nan)
        out[key] = share
    return out


def scaling_decisions(decisions: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Ticks whose target differs from the desired count they started from."""
    marks = []
    for rec in decisions:
        target = rec.get("target") or {}
        current = rec.get("current") or {}
        t = _finite(rec.get("t_s"))
        if t is None:
            continue
        changed = {}
        for role in ROLES:
            new = _finite(target.get(role))
            old = _finite((current.get(role) or {}).get("desired"))
            if new is not None and old is not None and new != old:
                changed[role] = (int(old), int(new))
        if changed:
            marks.append(
                {
                    "t_s": t,
                    "applied": bool(rec.get("applied", True)),
                    **{f"{r}_from": v[0] for r, v in changed.items()},
                    **{f"{r}_to": v[1] for r, v in changed.items()},
                }
            )
    return marks


# --- figures --------------------------------------------------------------------------------


def _time_axis(duration_s: float) -> tuple[float, str]:
    """Minutes for runs of ten minutes or more, hours beyond five hours, else seconds."""
    if duration_s >= 5 * 3600:
        return 3600.0, "h"
    if duration_s >= 600:
        return 60.0, "min"
    return 1.0, "s"


def _no_data(ax, text: str = "no data in this run") -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="0.4")


def save_figure(fig, plots_dir: Path, name: str, data: Mapping[str, Any]) -> Path:
    """plots/<name>.png and the series it shows as plots/<name>.json (tests compare them)."""
    png = plots_dir / f"{name}.png"
    fig.savefig(png, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    (plots_dir / f"{name}.json").write_text(
        json.dumps(_jsonable(data), indent=1, allow_nan=False) + "\n", encoding="utf-8"
    )
    return png


def _plot_attainment(run: RunData, ctx: dict, plots_dir: Path) -> Path:
    data = attainment_by_interval(
        run.requests, ctx["interval_s"], ctx["ttft_ms"], ctx["itl_ms"], ctx["duration_s"]
    )
    scale, unit = ctx["time_scale"], ctx["time_unit"]
    fig, (ax, axn) = plt.subplots(
        2, 1, figsize=(11, 5.6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    t = np.asarray(data["t_start_s"]) / scale
    width = ctx["interval_s"] / scale
    mid = t + width / 2
    # The joint line is drawn first and widest: where TTFT or ITL equals it, both stay visible.
    styles = {
        "joint": ("joint (both)", "0.15", "D", 4.0, "-", 6),
        "ttft": ("TTFT ≤ {:g} ms".format(ctx["ttft_ms"]), "tab:cyan", "o", 1.6, "--", 4),
        "itl": ("ITL (TPOT) ≤ {:g} ms".format(ctx["itl_ms"]), "tab:orange", "s", 1.6, ":", 4),
    }
    for key, (label, color, marker, lw, ls, ms) in styles.items():
        ax.plot(mid, data[key], color=color, marker=marker, ms=ms, lw=lw, ls=ls, label=label)
    target = ctx["target"]
    ax.axhline(target, color="red", ls="--", lw=1.3, label=f"target {target:g}")
    finite = [v for k in styles for v in data[k] if np.isfinite(v)]
    low = min(finite + [target]) if finite else 0.0
    ax.set_ylim(max(0.0, low - 0.05 * (1.0 - low + 0.02)) - 0.01, 1.01)
    ax.set_ylabel("share of finished requests\nmeeting the SLA")
    ax.set_title(f"SLA attainment per planner interval ({ctx['interval_s']:g} s)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    axn.bar(t, data["finished"], width=width, align="edge", color="0.7", edgecolor="0.5")
    axn.set_ylabel("requests\nfinished")
    axn.set_xlabel(f"arrival time ({unit})")
    axn.grid(alpha=0.3, axis="y")
    if not finite:
        _no_data(ax, "no finished requests")
    fig.tight_layout()
    data["target"] = target
    return save_figure(fig, plots_dir, "attainment", data)


def _plot_load_capacity(run: RunData, ctx: dict, plots_dir: Path) -> Path:
    tl = run.timeline
    scale, unit = ctx["time_scale"], ctx["time_unit"]
    t_s = _col(tl, "t_s")
    t = t_s / scale
    data: dict[str, Any] = {"t_s": t_s}
    fig, (ax_rate, ax_p, ax_d) = plt.subplots(3, 1, figsize=(11, 8.2), sharex=True)

    rate = _col(tl, "request_rate")
    pred = _col(tl, "predicted_rate")
    data["request_rate"] = rate
    data["predicted_rate"] = pred
    if np.isfinite(rate).any():
        ax_rate.plot(t, rate, color="0.35", lw=1.0, label="observed (arrivals/s)")
    if np.isfinite(pred).any():
        ax_rate.step(t, pred, where="post", color="tab:purple", lw=2, label="predicted by planner")
    if not (np.isfinite(rate).any() or np.isfinite(pred).any()):
        _no_data(ax_rate)
    else:
        ax_rate.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax_rate.set_ylabel("request rate (req/s)")
    ax_rate.set_title("Load and capacity")
    ax_rate.set_ylim(bottom=0)
    ax_rate.grid(alpha=0.3)

    marks = scaling_decisions(run.decisions)
    data["scaling_decisions"] = marks
    for ax, role in ((ax_p, "prefill"), (ax_d, "decode")):
        any_data = False
        # desired last, dashed, so it stays visible where it equals ready
        for kind, style in (
            ("ready", {"color": ROLE_COLORS[role], "lw": 3.0}),
            ("starting", {"color": "tab:green", "lw": 1.4}),
            ("draining", {"color": "0.55", "lw": 1.4, "ls": "-."}),
            ("desired", {"color": "black", "lw": 1.4, "ls": "--"}),
        ):
            y = _col(tl, f"{role}_{kind}")
            data[f"{role}_{kind}"] = y
            if np.isfinite(y).any() and (kind in ("desired", "ready") or np.nansum(y) > 0):
                ax.step(t, y, where="post", label=kind, **style)
                any_data = True
        role_marks = [m for m in marks if f"{role}_to" in m]
        for i, m in enumerate(role_marks):
            ax.axvline(
                m["t_s"] / scale,
                color="red",
                alpha=0.45,
                lw=1,
                ls="-" if m["applied"] else ":",
                label="scaling decision" if i == 0 else None,
            )
            ax.plot(m["t_s"] / scale, m[f"{role}_to"], marker="v", color="red", ms=6)
        if not any_data:
            _no_data(ax)
        else:
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        ax.set_ylabel(f"{role} replicas")
        ax.set_ylim(bottom=0)
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    ax_d.set_xlabel(f"time ({unit})")
    fig.tight_layout()
    return save_figure(fig, plots_dir, "load_capacity", data)


def _cdf_points(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    v = np.sort(values[np.isfinite(values)])
    if len(v) == 0:
        return v, v
    frac = np.arange(1, len(v) + 1) / len(v)
    if len(v) > CDF_POINTS:
        keep = np.unique(np.linspace(0, len(v) - 1, CDF_POINTS).round().astype(int))
        v, frac = v[keep], frac[keep]
    return v, frac


def _plot_latency_cdf(run: RunData, ctx: dict, plots_dir: Path) -> Path:
    req = run.requests
    ok = req["status"].astype(str).to_numpy() == STATUS_OK
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    data: dict[str, Any] = {}
    for ax, col, sla, label in (
        (axes[0], "ttft_ms", ctx["ttft_ms"], "TTFT"),
        (axes[1], "tpot_ms", ctx["itl_ms"], "TPOT (mean ITL per request)"),
    ):
        values = _col(req, col)[ok]
        x, y = _cdf_points(values)
        data[col] = {"x_ms": x, "cdf": y, "sla_ms": sla, "n": int(np.isfinite(values).sum())}
        if len(x):
            ax.plot(x, y, color="tab:blue", lw=2, label="completed requests")
            met = float(np.mean(values[np.isfinite(values)] <= sla))
            data[col]["share_within_sla"] = met
            ax.axvline(
                sla, color="red", ls="--", lw=1.3, label=f"SLA {sla:g} ms ({met:.1%} within)"
            )
            if x[-1] / max(x[0], 1e-9) > 30:
                ax.set_xscale("log")
            ax.legend(loc="lower right", frameon=True, framealpha=0.9)
        else:
            _no_data(ax, "no completed requests with this metric")
        ax.set_xlabel(f"{label.split(' ')[0]} (ms)")
        ax.set_ylabel("fraction of requests")
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{label} CDF")
        ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return save_figure(fig, plots_dir, "latency_cdf", data)


def _plot_gpus(run: RunData, ctx: dict, plots_dir: Path) -> Path:
    tl = run.timeline
    scale, unit = ctx["time_scale"], ctx["time_unit"]
    t_s = _col(tl, "t_s")
    gpus = _col(tl, "gpus")
    fig, (ax_t, ax_b) = plt.subplots(
        1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [2.2, 1]}
    )
    data: dict[str, Any] = {"t_s": t_s, "gpus": gpus}
    per_role = ctx["gpus_per_replica"]
    if per_role:
        bottom = np.zeros(len(tl))
        for role in ROLES:
            held = sum(
                np.nan_to_num(_col(tl, f"{role}_{k}")) for k in ("ready", "starting", "draining")
            )
            y = held * per_role[role]
            data[f"{role}_gpus"] = y
            ax_t.fill_between(
                t_s / scale,
                bottom,
                bottom + y,
                step="post",
                alpha=0.35,
                color=ROLE_COLORS[role],
                label=f"{role}",
            )
            bottom = bottom + y
    if np.isfinite(gpus).any():
        ax_t.step(t_s / scale, gpus, where="post", color="black", lw=1.6, label="total GPUs held")
        ax_t.legend(loc="upper left", frameon=True, framealpha=0.9)
        ax_t.set_ylim(0, np.nanmax(gpus) * 1.25 + 0.5)
    else:
        _no_data(ax_t, "no GPU count in timeline.csv")
    ax_t.set_xlabel(f"time ({unit})")
    ax_t.set_ylabel("GPUs (starting + ready + draining)")
    ax_t.set_title("GPUs in use")
    ax_t.yaxis.get_major_locator().set_params(integer=True)
    ax_t.grid(alpha=0.3)

    hours = run.summary.get("gpu_hours") or {}
    bars: dict[str, dict[str, float]] = {}
    for role in ROLES:
        parts = hours.get(role) or {}
        bars[role] = {p: _finite(parts.get(p)) or 0.0 for p in PART_COLORS}
    data["gpu_hours"] = bars
    data["gpu_hours_total"] = _finite(hours.get("total"))
    x = np.arange(len(ROLES))
    bottom = np.zeros(len(ROLES))
    for part, color in PART_COLORS.items():
        vals = np.array([bars[r][part] for r in ROLES])
        ax_b.bar(x, vals, bottom=bottom, color=color, width=0.6, label=part, edgecolor="white")
        bottom += vals
    for xi, total in zip(x, bottom, strict=True):
        ax_b.text(xi, total, f"{total:.2f}", ha="center", va="bottom", fontsize=9)
    ax_b.set_xticks(x, list(ROLES))
    ax_b.set_ylabel("GPU-hours")
    ax_b.set_ylim(0, max(bottom.max() * 1.3, 1e-3))
    ax_b.set_title("GPU-hours by role")
    ax_b.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3, frameon=False, fontsize=9)
    ax_b.grid(alpha=0.3, axis="y")
    if not hours:
        _no_data(ax_b, "no GPU-hours in summary.json")
    fig.tight_layout()
    return save_figure(fig, plots_dir, "gpus", data)


# --- HTML -----------------------------------------------------------------------------------

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:24px auto;
max-width:1280px;padding:0 16px;color:#222;line-height:1.4}
h1{font-size:1.6em;margin-bottom:4px}h2{margin-top:32px;border-bottom:1px solid #ddd}
.sub{color:#666;margin-top:0}
table{border-collapse:collapse;margin:8px 0 16px 0;font-size:0.92em}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:right;vertical-align:top}
th{background:#f4f4f4}td.l,th.l{text-align:left}
.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{border:1px solid #ddd;border-radius:6px;padding:8px 14px;min-width:150px}
.card .v{font-size:1.5em;font-weight:600}.card .k{color:#666;font-size:0.85em}
.bad{color:#b00020}.good{color:#1b7f1b}
img{max-width:100%;height:auto;border:1px solid #eee}
.note{color:#666;font-size:0.9em}
.decisions td.reason{max-width:460px;text-align:left}.nw{white-space:nowrap}
"""


def _esc(x: Any) -> str:
    return html.escape("" if x is None else str(x))


def _fmt(x: Any, spec: str = ".1f") -> str:
    v = _finite(x)
    return "–" if v is None else format(v, spec)


def _img(png: Path, alt: str) -> str:
    b64 = base64.b64encode(png.read_bytes()).decode("ascii")
    return (
        f'<img src="data:image/png;base64,{b64}" alt="{_esc(alt)}" '
        f'data-file="plots/{_esc(png.name)}">'
    )


def _cards(summary: Mapping[str, Any]) -> str:
    att = summary.get("attainment") or {}
    req = summary.get("requests") or {}
    joint = _finite(att.get("joint"))
    target = _finite(att.get("target")) or 0.0
    cls = "" if joint is None else ("good" if joint >= target else "bad")
    cards = [
        ("joint SLA attainment", f'<span class="{cls}">{_fmt(joint, ".3f")}</span>',
         f"target {target:g}"),
        ("TTFT / ITL attainment", f"{_fmt(att.get('ttft'), '.3f')} / {_fmt(att.get('itl'), '.3f')}",
         ""),
        ("requests", f"{req.get('arrived', '–')}",
         f"{req.get('completed', '–')} ok, {req.get('failed', '–')} failed, "
         f"{req.get('in_flight', '–')} in flight"),
        ("goodput", f"{_fmt(summary.get('goodput_rps'), '.2f')} req/s", "meeting both SLAs"),
        ("GPU-hours", _fmt((summary.get("gpu_hours") or {}).get("total"), ".2f"),
         f"{_fmt(summary.get('goodput_per_gpu_hour'), ',.0f')} good requests per GPU-hour"),
        ("scaling events", f"{summary.get('scaling_events', '–')}",
         f"{summary.get('preemptions', '–')} preemptions"),
    ]  # fmt: skip
    return (
        '<div class="cards">'
        + "".join(
            f'<div class="card"><div class="k">{_esc(k)}</div><div class="v">{v}</div>'
            f'<div class="k">{_esc(note)}</div></div>'
            for k, v, note in cards
        )
        + "</div>"
    )


def _percentile_table(summary: Mapping[str, Any], ctx: dict) -> str:
    rows = []
    for key, label, sla in (
        ("ttft_ms", "TTFT (ms)", f"{ctx['ttft_ms']:g}"),
        ("tpot_ms", "TPOT (ms)", f"{ctx['itl_ms']:g}"),
        ("e2e_s", "E2E (s)", ""),
    ):
        st = summary.get(key) or {}
        cells = "".join(f"<td>{_fmt(st.get(q), '.1f')}</td>" for q in ("mean", "p50", "p90", "p99"))
        rows.append(f'<tr><th class="l">{label}</th>{cells}<td>{sla}</td></tr>')
    return (
        "<table><tr><th></th><th>mean</th><th>p50</th><th>p90</th><th>p99</th><th>SLA</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _decision_table(decisions: Sequence[Mapping[str, Any]]) -> str:
    if not decisions:
        return '<p class="note">No planner decisions were recorded in this run.</p>'
    n = len(decisions)
    if n > MAX_DECISION_ROWS:
        head = MAX_DECISION_ROWS * 3 // 4
        tail = MAX_DECISION_ROWS - head
        shown = list(enumerate(decisions))[:head] + list(enumerate(decisions))[n - tail :]
        note = (
            f'<p class="note">Showing the first {head} and the last {tail} of {n} decisions; '
            "the full log is decisions.jsonl.</p>"
        )
    else:
        shown = list(enumerate(decisions))
        note = ""
    rows = []
    last = -1
    for i, rec in shown:
        if i != last + 1 and last >= 0:
            rows.append(
                f'<tr><td class="l" colspan="11">… {i - last - 1} decisions left out …</td></tr>'
            )
        last = i
        nxt = (decisions[i + 1].get("observation") or {}) if i + 1 < n else {}
        obs = rec.get("observation") or {}
        cur = rec.get("current") or {}
        target = rec.get("target") or {}

        def pd_text(p: Any, d: Any) -> str:
            return f"{_esc(p if p is not None else '–')}P + {_esc(d if d is not None else '–')}D"

        now = pd_text(
            (cur.get("prefill") or {}).get("ready"), (cur.get("decode") or {}).get("ready")
        )
        tgt = pd_text(target.get("prefill"), target.get("decode"))
        applied = rec.get("applied")
        rows.append(
            "<tr>"
            f"<td>{_fmt(rec.get('t_s'), '.0f')}</td>"
            f'<td class="l">{_esc(rec.get("rule"))}</td>'
            f'<td class="reason">{_esc(rec.get("reason"))}'
            + (f"<br><i>{_esc(rec.get('note'))}</i>" if rec.get("note") else "")
            + "</td>"
            f"<td>{_fmt(obs.get('num_req'), '.0f')}</td>"
            f'<td class="l nw">{now}</td><td class="l nw"><b>{tgt}</b>'
            + ("" if applied in (None, True) else " (not applied)")
            + "</td>"
            f"<td>{_fmt(obs.get('ttft_mean_ms'))}</td>"
            f"<td>{_fmt(rec.get('expected_ttft_ms'))}</td>"
            f"<td>{_fmt(nxt.get('ttft_mean_ms'))}</td>"
            f"<td>{_fmt(rec.get('expected_itl_ms'), '.2f')}</td>"
            f"<td>{_fmt(nxt.get('itl_mean_ms'), '.2f')}</td>"
            "</tr>"
        )
    header = (
        '<tr><th rowspan="2">t (s)</th><th rowspan="2" class="l">rule</th>'
        '<th rowspan="2" class="l">reason</th><th rowspan="2">requests<br>last interval</th>'
        '<th rowspan="2" class="l">ready</th><th rowspan="2" class="l">target</th>'
        '<th colspan="3">mean TTFT (ms)</th><th colspan="2">mean ITL (ms)</th></tr>'
        "<tr><th>observed<br>last interval</th><th>expected<br>at target</th>"
        "<th>observed<br>next interval</th><th>expected<br>at target</th>"
        "<th>observed<br>next interval</th></tr>"
    )
    return note + f'<table class="decisions">{header}{"".join(rows)}</table>'


def _context(run: RunData) -> dict[str, Any]:
    s = run.summary
    sla = s.get("sla") or {}
    duration = _finite(s.get("duration_s"))
    if not duration:
        t = _col(run.timeline, "t_s")
        a = _col(run.requests, "arrival_s")
        both = np.concatenate([t[np.isfinite(t)], a[np.isfinite(a)], [0.0]])
        duration = float(both.max())
    per_role: dict[str, int] = {}
    path = run.path / "scenario.yaml"
    if path.is_file():
        try:
            cluster = yaml.safe_load(path.read_text(encoding="utf-8"))["cluster"]
            per_role = {r: int(cluster[r]["gpus_per_replica"]) for r in ROLES}
        except (yaml.YAMLError, KeyError, TypeError, ValueError, OSError):
            per_role = {}
    scale, unit = _time_axis(duration)
    return {
        "ttft_ms": _finite(sla.get("ttft_ms")) or float("nan"),
        "itl_ms": _finite(sla.get("itl_ms")) or float("nan"),
        "target": _finite(sla.get("target_attainment"))
        or _finite((s.get("attainment") or {}).get("target"))
        or 0.99,
        "duration_s": duration,
        "interval_s": run_interval_s(run),
        "time_scale": scale,
        "time_unit": unit,
        "gpus_per_replica": per_role,
    }


def write_report(run_dir: str | Path) -> Path:
    """Write run_dir/plots/*.png (+ .json series) and run_dir/report.html; return the HTML
    path. A malformed run directory is a ConfigError from read_run."""
    run = read_run(run_dir)
    ctx = _context(run)
    plots_dir = run.path / "plots"
    plots_dir.mkdir(exist_ok=True)
    with plt.rc_context({"font.size": 10, "axes.titlesize": 12, "axes.titleweight": "bold"}):
        pngs = {
            "attainment": _plot_attainment(run, ctx, plots_dir),
            "load_capacity": _plot_load_capacity(run, ctx, plots_dir),
            "latency_cdf": _plot_latency_cdf(run, ctx, plots_dir),
            "gpus": _plot_gpus(run, ctx, plots_dir),
        }
    s = run.summary
    title = f"{s.get('scenario', run.path.name)} / {s.get('policy', '?')}"
    body = [
        f"<h1>planlab run: {_esc(title)}</h1>",
        f'<p class="sub">{_esc(run.path.name)} · {ctx["duration_s"]:g} s · SLA TTFT ≤ '
        f"{ctx['ttft_ms']:g} ms and ITL ≤ {ctx['itl_ms']:g} ms for {ctx['target']:.1%} of "
        f"requests · planner interval {ctx['interval_s']:g} s</p>",
        _cards(s),
        "<h2>SLA attainment over time</h2>",
        '<p class="note">Requests are grouped by arrival into planner intervals; failed '
        "requests miss every SLA, requests still in flight at the end are left out.</p>",
        _img(pngs["attainment"], "SLA attainment per planner interval"),
        "<h2>Load and capacity</h2>",
        '<p class="note">Observed arrival rate and the planner\'s forecast; replicas per role '
        "(desired, ready, starting, draining); red lines mark ticks that changed the target "
        "(dotted when not applied).</p>",
        _img(pngs["load_capacity"], "request rate and replicas over time"),
        "<h2>Latency distributions</h2>",
        _percentile_table(s, ctx),
        _img(pngs["latency_cdf"], "TTFT and TPOT CDFs"),
        "<h2>GPUs</h2>",
        '<p class="note">GPU-hours count from the scale decision (startup) through serving to '
        "the end of the drain after a scale-down.</p>",
        _img(pngs["gpus"], "GPUs over time and GPU-hours by role"),
        "<h2>Decision log</h2>",
        _decision_table(run.decisions),
    ]
    doc = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>planlab report: {_esc(title)}</title><style>{CSS}</style></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )
    out = run.path / "report.html"
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    tmp.write_text(doc, encoding="utf-8")
    os.replace(tmp, out)
    log.info("wrote report %s", out)
    return out
