"""`planlab baseline`: record, check or show the suite's CI regression baseline."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXAMPLES = """examples:
  planlab baseline check                 # re-run the suite, compare with the baseline
  planlab baseline update                # re-run the suite and rewrite the baseline
  planlab baseline show                  # print the recorded table (markdown)
  planlab baseline check --suite my/suite --baseline my/baseline.json --jobs 2
"""


def register(sub: argparse._SubParsersAction) -> None:
    from planlab.baseline import BASELINE_FILE, SUITE_DIR

    p = sub.add_parser(
        "baseline",
        help="record or check the suite's regression baseline",
        description="Every suite scenario under every policy at its own seed: joint "
        "attainment and GPU-hours. `check` fails (exit 1) when attainment drops by more "
        "than half a point or GPU-hours grow by more than 3%, or when slaplan no longer "
        "beats static, dynamo and threshold; `update` rewrites the file on purpose.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("action", choices=("check", "update", "show"))
    p.add_argument("--suite", type=Path, default=SUITE_DIR, help=f"scenario folder ({SUITE_DIR})")
    p.add_argument("--baseline", type=Path, default=BASELINE_FILE, help="baseline JSON file")
    p.add_argument("--jobs", type=int, help="worker processes (default: CPU count)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from planlab import baseline as bl
    from planlab.progress import ProgressBar
    from planner.errors import ConfigError

    if args.action == "show":
        print(bl.format_table(bl.read_baseline(args.baseline)))
        return 0
    if args.jobs is not None and args.jobs < 1:
        raise ConfigError(f"got {args.jobs}; expected a positive number of processes", key="--jobs")
    known = bl.read_baseline(args.baseline) if args.action == "check" else None
    suite = bl.suite_scenarios(args.suite)
    for s in suite:
        if s.skipped:
            print(f"planlab: skipping {s.path.name}: {s.skipped}", file=sys.stderr)
    bar = ProgressBar(enabled=not args.quiet, delay_s=0.0)
    try:
        table = bl.run_suite(
            [s.scenario for s in suite if s.scenario], jobs=args.jobs, progress=bar.runs
        )
    finally:
        bar.close()
    print(bl.format_table(table))
    claims = bl.claim_failures(table)
    if args.action == "update":
        path = bl.write_baseline(table, args.baseline)
        print(f"\nwrote {path}")
        for line in claims:
            print(f"planlab: warning: {line}", file=sys.stderr)
        return 0
    problems = bl.regressions(table, known) + claims
    for line in problems:
        print(f"planlab: regression: {line}", file=sys.stderr)
    print("\nbaseline check: " + ("FAILED" if problems else "ok"))
    return 1 if problems else 0
