"""The `planlab` command line: one module per subcommand under planlab.commands.

Bad input (planner.errors.ConfigError) prints one line and exits 2; a failed run exits 1.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from planner.errors import ConfigError

# One line per subcommand; each module defines register(subparsers) setting `func`.
COMMANDS = (
    "run",
    "decide",
    "compare",
    "sweep",
    "report",
    "emulate",
    "planner",
    "profile",
    "baseline",
    "fidelity",
    "backtest",
    "stack",
)

EPILOG = """examples:
  planlab run scenarios/quickstart.yaml
  planlab decide --num-req 600 --isl 3000 --osl 150 --interval 60 --ttft 200 --itl 10
  planlab compare scenarios/quickstart.yaml --policies dynamo,slaplan
"""


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on bad usage already; keep its one-line message."""


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="planlab",
        description="SLA-driven autoscaling testbed for disaggregated LLM serving.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"planlab.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        try:
            return _run(argv)
        finally:
            sys.stdout.flush()  # a closed pipe shows here, inside the handler below
    except BrokenPipeError:
        # The reader went away (`planlab decide --json | head -1`): stop quietly as Unix
        # tools do. Point stdout at /dev/null so the interpreter's final flush cannot fail.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a tool stopped by the pipe


def _run(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)  # exits 2 on bad usage, 0 after --help
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"planlab: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("planlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
