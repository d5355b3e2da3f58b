"""`planlab backtest --prometheus URL --start T0 --end T1`: the policies replayed on what a
cluster really served, read from its Prometheus, beside the replicas it really ran."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from planlab.progress import ProgressBar
from planner.errors import ConfigError

EXAMPLES = """examples:
  planlab backtest --prometheus http://prometheus:9090 \\
      --start 2026-03-02T00:00:00Z --end 2026-03-03T00:00:00Z --policies dynamo,slaplan
  planlab backtest --prometheus http://127.0.0.1:9090 --start 1772409600 --end 1772413200 \\
      --step 30s --scenario scenarios/steady.yaml --export results/last-hour.yaml
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "backtest",
        help="replay a cluster's recorded traffic (from Prometheus) under each policy",
        description="Read the frontend's request counter and ISL/OSL histograms for "
        "[--start, --end] through Prometheus' query_range, turn them into a workload (the "
        "request rate and length distributions of every --step), replay it in the simulator "
        "under each policy and report the replicas each would have run beside what the "
        "cluster ran (kube_deployment_spec_replicas, or --replicas), with GPU-hours and SLA "
        "attainment. Gaps, counter resets and missing series are reported, not read as zero.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--prometheus", required=True, metavar="URL", help="Prometheus base URL")
    p.add_argument("--start", required=True, metavar="T0", help="RFC 3339 time or Unix seconds")
    p.add_argument("--end", required=True, metavar="T1", help="RFC 3339 time or Unix seconds")
    p.add_argument("--step", default="60s", help="grid step (default 60s)")
    p.add_argument(
        "--policies",
        default="static,dynamo,threshold,slaplan",
        help="comma-separated policies (default: %(default)s)",
    )
    p.add_argument(
        "--scenario",
        metavar="FILE",
        help="the cluster, model, SLA and planner settings (its workload is replaced by the "
        "history's); default: Llama-3.1-8B on H200, analytic profile, default SLA",
    )
    p.add_argument(
        "--replicas",
        action="append",
        default=[],
        metavar="ROLE=PROMQL",
        help="the query of a role's recorded replicas (prefill=... or decode=...; default "
        "kube_deployment_spec_replicas of deployments named *prefill* / *decode*)",
    )
    p.add_argument("--seeds", type=int, default=1, help="seeds per policy (default 1)")
    p.add_argument("--out", metavar="DIR", help="output folder (default results/backtest-<time>)")
    p.add_argument(
        "--force", action="store_true", help="replace --out when it holds an earlier backtest"
    )
    p.add_argument("--export", metavar="FILE", help="write the derived scenario (YAML) here")
    p.add_argument("--no-replay", action="store_true", help="only derive (and --export)")
    p.add_argument("--jobs", type=int, help="worker processes (default: CPU count; 1 inline)")
    p.add_argument(
        "--cluster",
        metavar="tcp://HOST:8786|local",
        help="run the replays on a Dask cluster (needs planlab[dask])",
    )
    p.add_argument("--bearer-token-file", metavar="FILE", help="token for Prometheus")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=main)


def issue_lines(issues) -> list[str]:
    """One line per kind of issue, metric family and time span (the series of one histogram
    share their gaps and resets)."""
    import re
    from datetime import UTC, datetime

    groups: dict[tuple, list] = {}
    for i in issues:
        family = re.sub(r"(_bucket|_sum|_count)$", "", i.metric.split("{")[0])
        groups.setdefault((i.kind, family, i.start_s, i.end_s), []).append(i)
    lines = []
    for (kind, family, a, b), items in groups.items():
        span = (
            f"{datetime.fromtimestamp(a, tz=UTC):%Y-%m-%d %H:%M:%S} .. "
            f"{datetime.fromtimestamp(b, tz=UTC):%H:%M:%S}"
        )
        more = f" (and {len(items) - 1} more series)" if len(items) > 1 else ""
        telling = max(items, key=lambda i: i.amount)
        lines.append(f"{kind} {family} {span}: {telling.detail}{more}")
    return lines


def main(args: argparse.Namespace) -> int:
    from planlab.backtest import (
        BASE,
        backtest,
        derive_scenario,
        export_scenario,
        parse_time,
        read_history,
    )
    from planlab.commands.compare import COMPARE_DIR_ENTRIES, parse_list
    from planlab.distributed import make_backend
    from planlab.results import check_out_dir, claim_new_dir
    from scenario import load_scenario
    from scenario.schema import parse_duration

    backend = make_backend(args.jobs, args.cluster)
    start = parse_time(args.start, "--start")
    end = parse_time(args.end, "--end")
    step = parse_duration(args.step, "--step", "command line", positive=True)
    queries = {}
    for item in args.replicas:
        role, sep, query = item.partition("=")
        if not sep or role not in ("prefill", "decode") or not query.strip():
            raise ConfigError(
                f"got {item!r}; expected prefill=PROMQL or decode=PROMQL", key="--replicas"
            )
        queries[role] = query.strip()
    policies = [] if args.no_replay else parse_list(args.policies, "policies")
    if args.out and not args.no_replay:
        check_out_dir(
            args.out,
            force=args.force,
            markers=("backtest.json",),
            entries=COMPARE_DIR_ENTRIES | {"backtest.csv", "backtest.json"},
            what="backtest",
        )
    base = load_scenario(args.scenario) if args.scenario else BASE
    token = None
    if args.bearer_token_file:
        try:
            token = Path(args.bearer_token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"cannot read it: {exc}", key="--bearer-token-file") from exc
    history = read_history(args.prometheus, start, end, step, replica_queries=queries, token=token)
    scenario, derived_issues = derive_scenario(history, base)
    issues = list(history.issues) + derived_issues
    for line in issue_lines(issues):
        print(f"planlab: data: {line}", file=sys.stderr)
    if args.export:
        path = export_scenario(scenario, args.export, history)
        print(f"wrote the derived scenario to {path} (planlab run {path})")
    if args.no_replay:
        return 0
    out = (
        Path(args.out)
        if args.out
        else claim_new_dir(Path("results") / f"backtest-{scenario.name.removeprefix('backtest-')}")
    )
    bar = ProgressBar(enabled=not args.quiet, delay_s=0.0)
    try:
        report = backtest(
            history, policies, out, base=base, seeds=args.seeds, backend=backend,
            progress=bar.runs,
        )  # fmt: skip
    finally:
        bar.close()
    cluster = report["cluster"]["gpu_hours"]
    ttft = report["cluster"]["ttft_attainment"]
    print(
        f"{history.n_steps} steps of {history.step_s:g} s, {report['requests']:.0f} requests; "
        f"the cluster ran "
        + ("(replicas not recorded)" if cluster is None else f"{cluster:.2f} GPU-hours")
        + ("" if ttft is None else f", TTFT attainment {ttft:.4f} (from its histogram)")
    )
    print(f"{'policy':<16}{'GPU-hours':>10}{'joint att.':>12}{'TTFT att.':>11}{'ITL att.':>10}")
    crashed = 0
    for policy, t in report["policies"].items():
        if t.get("status") == "crashed":
            crashed += 1
            print(f"{policy:<16}{'crashed':>10}")
            continue
        print(
            f"{policy:<16}{t['gpu_hours']:>10.2f}{t['joint_attainment']:>12.4f}"
            f"{t['ttft_attainment']:>11.4f}{t['itl_attainment']:>10.4f}"
        )
    print(f"\nwrote {out / 'backtest.csv'}, {out / 'backtest.json'} and {out / 'compare.html'}")
    return 1 if crashed else 0
