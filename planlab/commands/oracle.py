"""`planlab oracle SCENARIO`: the cheapest per-interval replica schedule found (by full
simulations) whose joint attainment meets the SLA target; writes it and its run."""

from __future__ import annotations

import argparse
from pathlib import Path

from planlab.progress import ProgressBar
from planner.errors import ConfigError

EXAMPLES = """examples:
  planlab oracle scenarios/suite/flash-crowd.yaml --jobs 2 --budget-s 300
  planlab compare scenarios/suite/flash-crowd.yaml results/oracle-flash-crowd/run \\
      --policies dynamo,slaplan,oracle
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "oracle",
        help="search the cheapest replica schedule that meets the SLA (oracle-sla)",
        description="Knowing the whole workload, search a per-interval replica schedule per "
        "role (changes placed one startup ahead, within the GPU budget and min replicas) "
        "whose simulated joint attainment meets the target at the fewest GPU-hours found. "
        "Every candidate is a full simulation. Writes DIR/schedule.json and DIR/run/ (the "
        "run of the schedule, policy oracle-sla); `planlab compare` reads DIR/run and "
        "reports each policy's regret against it.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("scenario", metavar="SCENARIO", help="a scenario YAML file")
    p.add_argument("--jobs", type=int, default=1, help="worker processes (default 1: inline)")
    p.add_argument(
        "--budget-s", type=float, default=600.0, help="wall-clock bound (default %(default)s s)"
    )
    p.add_argument("--max-evals", type=int, help="at most this many simulations")
    p.add_argument("--seed", type=int, help="override the scenario's seed")
    p.add_argument("--out", metavar="DIR", help="output folder (default results/oracle-<name>)")
    p.add_argument("--force", action="store_true", help="replace an earlier search in --out")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    import concurrent.futures as cf
    import dataclasses

    from planlab.oracle_search import search, write_oracle
    from planlab.results import check_out_dir
    from scenario import load_scenario

    if args.jobs < 1:
        raise ConfigError(f"--jobs {args.jobs}: expected a positive number of processes")
    if not args.budget_s > 0:
        raise ConfigError(f"--budget-s {args.budget_s}: expected seconds > 0")
    if args.max_evals is not None and args.max_evals < 1:
        raise ConfigError(f"--max-evals {args.max_evals}: expected a positive number")
    scenario = load_scenario(args.scenario, {"planner.policy": "oracle-sla"})
    if args.seed is not None:
        scenario = dataclasses.replace(scenario, seed=args.seed)
    out = Path(args.out) if args.out else Path("results") / f"oracle-{scenario.name}"
    # before any simulation: an earlier search is replaced only with --force, anything
    # else planlab did not write is never touched
    check_out_dir(
        out,
        force=args.force,
        markers=("schedule.json",),
        entries=frozenset(("schedule.json", "run")),
        what="oracle search",
    )
    bar = ProgressBar(enabled=not args.quiet, delay_s=0.0)

    def progress(fraction: float, text: str) -> None:
        bar.bar(fraction, text, force=True)
        bar.line(f"[{bar.elapsed_s:6.1f} s] {text}")

    pool = cf.ProcessPoolExecutor(max_workers=args.jobs) if args.jobs > 1 else None
    try:
        result = search(
            scenario,
            executor=pool,
            batch=max(2, args.jobs),
            budget_s=args.budget_s,
            max_evals=args.max_evals,
            progress=progress,
        )
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        bar.close()
    run_dir = write_oracle(result, scenario, out, force=True)
    best, thr = result.best, result.throughput
    verdict = "meets" if result.meets_target else "does NOT meet"
    print(
        f"oracle-sla on {scenario.name}: joint attainment {best.joint_attainment:.4f} "
        f"({verdict} the target {best.target:g}) for {best.gpu_hours:.3f} GPU-hours"
    )
    print(
        f"throughput oracle's schedule: {thr.joint_attainment:.4f} for {thr.gpu_hours:.3f} "
        f"GPU-hours; {result.evaluations} simulations in {result.elapsed_s:.0f} s, stopped: "
        f"{result.stopped}"
    )
    if not result.meets_target:
        print(
            "no schedule found within the GPU budget and the search bound meets the target: "
            "compare policies by attainment at equal GPU-hours"
        )
    print(f"wrote {out / 'schedule.json'} and {run_dir}")
    return 0
