"""`planlab compare SCENARIO|DIR|RUN_DIR... --policies a,b`: policies side by side on the
same scenarios and seeds, as a table, compare.csv, a Pareto plot and compare.html."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

from planlab.progress import ProgressBar
from planner.errors import ConfigError

EXAMPLES = """examples:
  planlab compare scenarios/quickstart.yaml --policies dynamo,slaplan
  planlab compare scenarios/suite/ --policies static,threshold,dynamo,slaplan,oracle --seeds 3
  planlab compare results/run-a results/run-b --out results/a-vs-b
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="run several policies on the same scenarios and seeds and compare them",
        description="Run every policy x seed on each scenario (a .yaml file, or every *.yaml "
        "in a folder) in parallel processes, or read existing results directories, then "
        "print a table and write compare.csv, plots/pareto.png, plots/timelines-*.png and "
        "compare.html.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "inputs", nargs="+", metavar="SCENARIO|DIR|RUN_DIR", help="scenarios or results dirs"
    )
    p.add_argument(
        "--policies",
        default="static,dynamo,threshold,slaplan,oracle",
        help="comma-separated policies (default: %(default)s)",
    )
    p.add_argument("--seeds", type=int, default=1, help="seeds per policy (default 1)")
    p.add_argument("--jobs", type=int, help="worker processes (default: CPU count; 1 inline)")
    p.add_argument(
        "--cluster",
        metavar="tcp://HOST:8786|local",
        help="run on a Dask cluster (a scheduler address, or local: a LocalCluster of --jobs "
        "worker processes on 127.0.0.1); needs planlab[dask]",
    )
    p.add_argument("--out", metavar="DIR", help="output folder (default results/compare-<time>)")
    p.add_argument(
        "--force",
        action="store_true",
        help="replace --out when it holds an earlier planlab comparison (never other files)",
    )
    p.add_argument("--run-reports", action="store_true", help="also write each run's report")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=main)


def parse_list(text: str, what: str) -> list[str]:
    items = [x.strip() for x in text.split(",") if x.strip()]
    if not items:
        raise ConfigError(f"got {text!r}; expected a comma-separated list of {what}")
    return items


# What planlab writes into a comparison folder: a --force rerun replaces only these.
COMPARE_DIR_ENTRIES = frozenset(("compare.csv", "compare.html", "plots", "runs"))


def main(args: argparse.Namespace) -> int:
    from planlab.compare import compare, format_table, resolve_inputs
    from planlab.distributed import make_backend
    from planlab.results import check_out_dir, claim_new_dir

    backend = make_backend(args.jobs, args.cluster)
    scenarios, run_dirs = resolve_inputs(args.inputs)
    policies = parse_list(args.policies, "policies") if scenarios else []
    if args.out:
        out = Path(args.out)
        check_out_dir(
            out,
            force=args.force,
            markers=("compare.csv", "runs"),
            entries=COMPARE_DIR_ENTRIES,
            what="comparison",
        )
    else:
        out = claim_new_dir(Path("results") / datetime.now().strftime("compare-%Y%m%d-%H%M%S"))
    bar = ProgressBar(enabled=not args.quiet, delay_s=0.0)
    try:
        df = compare(
            scenarios,
            policies,
            args.seeds,
            out,
            jobs=args.jobs,
            progress=bar.runs,
            backend=backend,
            run_dirs=run_dirs,
            run_reports=args.run_reports,
        )
    finally:
        bar.close()
    print(format_table(df))
    print(f"\nwrote {out / 'compare.csv'} and {out / 'compare.html'}")
    crashed = df[(df["kind"] == "run") & (df["status"] != "ok")]
    for _, r in crashed.iterrows():
        print(
            f"planlab: run {r['scenario']} / {r['policy']} / seed {r['seed']} crashed: "
            f"{r['error']}",
            file=sys.stderr,
        )
    return 1 if len(crashed) else 0
