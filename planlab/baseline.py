"""The CI regression baseline: per suite scenario and policy, the joint attainment and
GPU-hours of a deterministic simulated run, recorded on purpose (`planlab baseline update`)
and checked on every CI run (`planlab baseline check`, tests/test_regression.py).

It also holds the suite's headline claim as a check: on every scenario `slaplan` beats
`static`, `dynamo`, `dynamo-legacy` and `threshold` (joint attainment at least as high with
GPU-hours no more than 5% above, or attainment at least 2 points higher, or both meeting the
target and slaplan cheaper).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from planner.errors import ConfigError
from scenario import Scenario, load_scenario

SUITE_DIR = Path(__file__).resolve().parents[1] / "scenarios" / "suite"
BASELINE_FILE = SUITE_DIR / "baseline.json"
POLICIES = ("static", "threshold", "dynamo-legacy", "dynamo", "slaplan", "oracle")

# Tolerances of the regression check.
MAX_ATTAINMENT_DROP = 0.005  # half a point of joint attainment
MAX_GPU_HOURS_GROWTH = 0.03  # 3%
# The headline claim: slaplan vs each reactive or Dynamo baseline.
BEAT_GPU_HOURS_SLACK = 0.05
BEAT_ATTAINMENT_MARGIN = 0.02


@dataclass(frozen=True)
class SuiteScenario:
    path: Path
    scenario: Scenario | None  # None when it cannot load here
    skipped: str | None  # why it cannot load (reference data from ../shared absent)


def suite_scenarios(suite_dir: Path = SUITE_DIR) -> list[SuiteScenario]:
    """Every *.yaml of the suite; one that needs ../shared data that is absent is kept with
    the reason, so callers can skip it visibly. Other errors are the user's to fix."""
    out = []
    for path in sorted(Path(suite_dir).glob("*.yaml")):
        try:
            out.append(SuiteScenario(path, load_scenario(path), None))
        except ConfigError as exc:
            if "shared" not in str(exc):
                raise
            out.append(SuiteScenario(path, None, f"reference data absent: {exc}"))
    if not out:
        raise ConfigError(f"no *.yaml scenarios in {suite_dir}", source=str(suite_dir))
    return out


def _summary_row(scenario: Scenario, policy: str) -> dict[str, Any]:
    """One run without files (in a worker process): its compare row."""
    from planlab.compare import row_from_summary
    from planlab.runner import run_scenario

    return row_from_summary(run_scenario(scenario, policy=policy, write=False).summary, None)


def run_suite(
    scenarios: Sequence[Scenario],
    policies: Sequence[str] = POLICIES,
    jobs: int | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> dict[str, dict[str, dict[str, float]]]:
    """{scenario: {policy: {joint_attainment, gpu_hours, ttft_attainment, itl_attainment}}}
    for every scenario x policy at the scenario's own seed. A crashed run raises."""
    jobs_list = [
        (_summary_row, (s, p), {"scenario": s.name, "policy": p, "label": f"{s.name} {p}"})
        for s in scenarios
        for p in policies
    ]
    from planlab.compare import run_jobs  # matplotlib: only when the suite runs

    rows = run_jobs(jobs_list, jobs, progress)
    crashed = [r for r in rows if r.get("status") != "ok"]
    if crashed:
        raise RuntimeError(
            "; ".join(f"{r['scenario']}/{r['policy']}: {r.get('error')}" for r in crashed)
        )
    table: dict[str, dict[str, dict[str, float]]] = {}
    for r in rows:
        table.setdefault(r["scenario"], {})[r["policy"]] = {
            k: float(r[k])
            for k in ("joint_attainment", "gpu_hours", "ttft_attainment", "itl_attainment")
        }
    return table


def write_baseline(table: dict, path: Path = BASELINE_FILE) -> Path:
    doc = {
        "about": "planlab CI regression baseline: `planlab baseline update` rewrites it",
        "tolerance": {
            "max_attainment_drop": MAX_ATTAINMENT_DROP,
            "max_gpu_hours_growth": MAX_GPU_HOURS_GROWTH,
        },
        "results": {s: dict(sorted(table[s].items())) for s in sorted(table)},
    }
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)
    return path


def read_baseline(path: Path = BASELINE_FILE) -> dict[str, dict[str, dict[str, float]]]:
    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(
            "no baseline yet; expected a file written by `planlab baseline update`",
            source=str(path),
        ) from None
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"not valid JSON (line {exc.lineno}): {exc.msg}", source=str(path)
        ) from None
    results = doc.get("results") if isinstance(doc, dict) else None
    if not isinstance(results, dict):
        raise ConfigError(
            "expected an object with a 'results' mapping", source=str(path), key="results"
        )
    return results


def regressions(current: dict, baseline: dict) -> list[str]:
    """Every (scenario, policy) whose attainment dropped or GPU-hours grew past tolerance,
    in words; scenarios or policies missing from either side are not compared."""
    found = []
    for scen, by_policy in sorted(current.items()):
        for policy, now in sorted(by_policy.items()):
            then = baseline.get(scen, {}).get(policy)
            if then is None:
                continue
            drop = then["joint_attainment"] - now["joint_attainment"]
            if drop > MAX_ATTAINMENT_DROP:
                found.append(
                    f"{scen}/{policy}: joint attainment {now['joint_attainment']:.4f} < baseline "
                    f"{then['joint_attainment']:.4f} (drop {100 * drop:.2f} points > "
                    f"{100 * MAX_ATTAINMENT_DROP:.1f})"
                )
            growth = now["gpu_hours"] / then["gpu_hours"] - 1 if then["gpu_hours"] > 0 else 0.0
            if growth > MAX_GPU_HOURS_GROWTH:
                found.append(
                    f"{scen}/{policy}: GPU-hours {now['gpu_hours']:.3f} > baseline "
                    f"{then['gpu_hours']:.3f} (+{100 * growth:.1f}% > {100 * MAX_GPU_HOURS_GROWTH:.0f}%)"
                )
    return found


def beats(ours: dict[str, float], theirs: dict[str, float], target: float = 0.99) -> bool:
    """The suite's claim for one scenario: as good for at most 5% more GPU-hours, or at
    least 2 points of joint attainment better, or, when both meet the target attainment,
    cheaper (meeting the SLA for fewer GPU-hours is the point; attainment above the
    target is not worth GPUs)."""
    a, b = ours["joint_attainment"], theirs["joint_attainment"]
    cheap_enough = ours["gpu_hours"] <= (1 + BEAT_GPU_HOURS_SLACK) * theirs["gpu_hours"]
    both_meet = a >= target and b >= target and ours["gpu_hours"] < theirs["gpu_hours"]
    return (a >= b and cheap_enough) or a >= b + BEAT_ATTAINMENT_MARGIN or both_meet


def claim_failures(
    table: dict,
    ours: str = "slaplan",
    rivals: Sequence[str] = ("dynamo", "dynamo-legacy", "threshold", "static"),
) -> list[str]:
    found = []
    for scen, by_policy in sorted(table.items()):
        if ours not in by_policy:
            continue
        for rival in rivals:
            if rival in by_policy and not beats(by_policy[ours], by_policy[rival]):
                o, r = by_policy[ours], by_policy[rival]
                found.append(
                    f"{scen}: {ours} {o['joint_attainment']:.4f} / {o['gpu_hours']:.2f} GPU-h does not "
                    f"beat {rival} {r['joint_attainment']:.4f} / {r['gpu_hours']:.2f} GPU-h"
                )
    return found


def format_table(table: dict, policies: Sequence[str] = POLICIES) -> str:
    """Markdown: one row per scenario, 'joint attainment / GPU-hours' per policy, and
    slaplan's GPU-hours over the oracle's bound."""
    head = "| scenario | " + " | ".join(policies) + " | slaplan / oracle GPU-h |"
    sep = "|" + " --- |" * (len(policies) + 2)
    lines = [head, sep]
    for scen in sorted(table):
        row = table[scen]
        cells = []
        for p in policies:
            r = row.get(p)
            cells.append(
                "-" if r is None else f"{r['joint_attainment']:.4f} / {r['gpu_hours']:.2f}"
            )
        ratio = "-"
        if "slaplan" in row and "oracle" in row and row["oracle"]["gpu_hours"] > 0:
            ratio = f"{row['slaplan']['gpu_hours'] / row['oracle']['gpu_hours']:.2f}x"
        lines.append(f"| {scen} | " + " | ".join(cells) + f" | {ratio} |")
    return "\n".join(lines)
