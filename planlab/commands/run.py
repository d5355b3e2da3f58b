"""`planlab run SCENARIO`: simulate a scenario, write results/<run>/, print a summary table.

The simulated path is `run_simulated`; `--live` (added by the live driver) branches to its
own function from `main`, so both share the argument parsing and the printed table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from planlab.progress import ProgressBar
from planner.errors import ConfigError
from scenario import load_scenario

EXAMPLES = """examples:
  planlab run scenarios/quickstart.yaml
  planlab run scenarios/ramp.yaml --policy static --seed 3 --out results/ramp-static
  planlab run scenarios/steady.yaml --set planner.interval=30s --no-report
  planlab run scenarios/live-step.yaml --live --stack dynamo   # needs planlab[dynamo]
  planlab run scenarios/live-vllm.yaml --live --stack vllm   (needs planlab[vllm])
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="simulate a scenario and write its results directory",
        description="Simulate SCENARIO (frontend, prefill and decode workers, Prometheus "
        "scraping, the planner loop) and write requests.csv, timeline.csv, decisions.jsonl "
        "and summary.json to a results directory.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("scenario", metavar="SCENARIO", help="a scenario YAML file")
    p.add_argument("--policy", help="override planner.policy (static, dynamo, ...)")
    p.add_argument("--seed", type=int, help="override the scenario's seed")
    p.add_argument(
        "--out",
        metavar="DIR",
        help="results directory (default results/<scenario>-<policy>-<time>); must be new or "
        "empty, or an earlier planlab run with --force",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="replace --out when it holds an earlier planlab run (never other files)",
    )
    p.add_argument(
        "--max-requests",
        type=int,
        metavar="N",
        help="allow a scenario expected to generate more than 5,000,000 requests "
        "(about 0.5 KiB of memory each)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a scenario key, e.g. planner.interval=30s (repeatable)",
    )
    p.add_argument("--no-report", action="store_true", help="skip the HTML report and plots")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    from planlab.live_run import add_live_arguments

    add_live_arguments(p)
    p.set_defaults(func=main)


def overrides_from(args: argparse.Namespace) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. planner.interval=30s")
        out[key.strip()] = value
    if getattr(args, "policy", None) is not None:
        out["planner.policy"] = args.policy
    if getattr(args, "seed", None) is not None:
        out["seed"] = str(args.seed)
    return out


def main(args: argparse.Namespace) -> int:
    live_only = [f for f in ("emulate", "stack", "stack_startup", "frontend", "prometheus",
                             "kube_namespace", "dgd", "advisory") if getattr(args, f, None)]  # fmt: skip
    if live_only and not getattr(args, "live", False):
        flag = "--" + live_only[0].replace("_", "-")
        raise ConfigError("only applies to a live run; add --live", key=flag)
    if getattr(args, "live", False):
        from live.stacks import StackError
        from planlab.live_run import run_live  # the live driver's path

        try:
            outcome = run_live(args, overrides_from(args))
        except StackError as exc:  # a stack that did not come up: its logs are named
            print(f"planlab: error: {exc}", file=sys.stderr)
            return 1
        if not args.no_report:
            _report(outcome.out_dir)
        print_summary(outcome.summary, outcome.out_dir)
        return _live_exit_code(outcome.summary)
    return run_simulated(args)


# A live run in which more than this share of the finished requests failed is a failed run
# (exit 1): the numbers describe the errors, not the serving stack.
LIVE_FAILED_SHARE = 0.5


def _live_exit_code(summary: dict[str, Any]) -> int:
    req = summary["requests"]
    finished = req["completed"] + req["failed"]
    if finished and req["failed"] / finished > LIVE_FAILED_SHARE:
        reasons = _reasons_text(req.get("failure_reasons") or {})
        print(
            f"planlab: the live run failed: {req['failed']} of {finished} requests failed "
            f"({reasons}); the results are kept for diagnosis",
            file=sys.stderr,
        )
        return 1
    return 0


def _reasons_text(reasons: dict[str, int], top: int = 3) -> str:
    items = list(reasons.items())
    text = "; ".join(f"{n} x {why}" for why, n in items[:top])
    return text + (f"; {len(items) - top} other reasons" if len(items) > top else "")


def run_simulated(args: argparse.Namespace) -> int:
    from planlab.runner import run_scenario

    scenario = load_scenario(args.scenario, overrides_from(args) or None)
    bar = ProgressBar(enabled=not args.quiet)
    try:
        outcome = run_scenario(
            scenario,
            out_dir=args.out,
            progress=bar.sim,
            force=args.force,
            max_requests=args.max_requests,
        )
    finally:
        bar.close()
    if not args.no_report:
        _report(outcome.out_dir)
    print_summary(outcome.summary, outcome.out_dir)
    return 0


def _report(out_dir: Path | None) -> None:
    """Draw the report; Ctrl-C here keeps the run's data (they are complete) and says how
    to finish the report later."""
    from planlab.report import write_report

    if out_dir is None:
        return
    try:
        write_report(out_dir)
    except KeyboardInterrupt:
        print(
            f"planlab: interrupted while drawing the report; the run's data in {out_dir} are "
            f"complete; `planlab report {out_dir}` draws the report",
            file=sys.stderr,
        )
        raise SystemExit(130) from None


def _fmt(x: Any, spec: str = ".1f") -> str:
    return "-" if x is None else format(x, spec)


def print_summary(summary: dict[str, Any], out_dir: Path | None) -> None:
    s = summary
    req = s["requests"]
    att = s["attainment"]
    gpu = s["gpu_hours"]
    wall = s.get("wall", {})
    live = str((s.get("extra") or {}).get("mode", "")).startswith("live")
    rows = [
        ("scenario / policy", f"{s['scenario']} / {s['policy']}"),
        (
            "requests",
            f"{req['arrived']} arrived, {req['completed']} completed, "
            f"{req['failed']} failed, {req['in_flight']} in flight",
        ),
        (
            "attainment",
            f"TTFT {_fmt(att['ttft'], '.3f')}  ITL {_fmt(att['itl'], '.3f')}  "
            f"joint {_fmt(att['joint'], '.3f')} (target {att['target']:g})",
        ),
    ]
    for key, label in (("ttft_ms", "TTFT ms"), ("tpot_ms", "TPOT ms"), ("e2e_s", "E2E s")):
        st = s[key]
        rows.append(
            (
                label,
                f"mean {_fmt(st['mean'])}  p50 {_fmt(st['p50'])}  "
                f"p90 {_fmt(st['p90'])}  p99 {_fmt(st['p99'])}",
            )
        )
    rows.append(
        (
            "GPU-hours",
            f"{gpu['total']:.2f} (prefill {gpu['prefill']['total']:.2f}, "
            f"decode {gpu['decode']['total']:.2f})",
        )
    )
    rows.append(
        ("scaling / preemptions", f"{s['scaling_events']} events, {s['preemptions']} preemptions")
    )
    if wall.get("wall_s") is not None:
        rows.append(
            (
                "wall",
                f"{wall['wall_s']:.2f} s ({_fmt(wall.get('sim_requests_per_wall_s'), ',.0f')} "
                + ("requests/s driven)" if live else "simulated requests/s)"),
            )
        )
    if req["failed"]:
        rows.append(("failures", _reasons_text(req.get("failure_reasons") or {})))
    if out_dir is not None:
        rows.append(("results", str(out_dir)))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
