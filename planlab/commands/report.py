"""`planlab report RUN_DIR`: plots and a self-contained HTML report for a results directory."""

from __future__ import annotations

import argparse

EXAMPLES = """examples:
  planlab report results/quickstart-dynamo-20250101-120000
  planlab report /tmp/qs /tmp/qs-static
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="write plots/*.png and report.html for results directories",
        description="Read a results directory (simulated or live) and write plots/*.png, "
        "their plotted series as plots/*.json, and a self-contained report.html into it.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="a results directory")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from planlab.report import write_report

    for run_dir in args.run_dirs:
        print(write_report(run_dir))
    return 0
