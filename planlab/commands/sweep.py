"""`planlab sweep SCENARIO --set key=v1,v2 ...`: a resumable grid over scenario keys, or with
`--max-rate` the highest request rate a fixed cluster sustains within the SLA."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from planlab.progress import ProgressBar
from planner.errors import ConfigError

EXAMPLES = """examples:
  planlab sweep scenarios/quickstart.yaml --set planner.interval=30s,60s,180s
  planlab sweep scenarios/ramp.yaml --set planner.interval=30s,60s,180s \\
      --set cluster.decode.startup=60s,300s --policy slaplan
  planlab sweep scenarios/steady.yaml --max-rate --set cluster.prefill.replicas=2
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep",
        help="run a scenario over a grid of key values, or search the highest sustainable rate",
        description="Run SCENARIO at every combination of the --set values (validated before "
        "anything runs) in parallel processes; each point's results directory is named from "
        "its values and kept, so a second invocation only runs what is missing. Writes "
        "sweep.csv and plots/sweep.png (line plot for one key, heat-map for two). With "
        "--max-rate, bisect the arrival-rate scale for the highest rate at which the fixed "
        "cluster (policy static) keeps the target joint attainment.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("scenario", metavar="SCENARIO", help="a scenario YAML file")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="a swept key and its values (repeatable; with --max-rate one value: a fixed override)",
    )
    p.add_argument("--policy", help="override planner.policy (with --max-rate: default static)")
    p.add_argument("--out", metavar="DIR", help="output folder (default results/sweep-<name>)")
    p.add_argument("--jobs", type=int, help="worker processes (default: CPU count; 1 inline)")
    p.add_argument(
        "--cluster",
        metavar="tcp://HOST:8786|local",
        help="run on a Dask cluster (a scheduler address, or local: a LocalCluster of --jobs "
        "worker processes on 127.0.0.1); needs planlab[dask]",
    )
    p.add_argument("--max-rate", action="store_true", help="goodput search instead of a grid")
    p.add_argument(
        "--tolerance",
        type=float,
        default=0.02,
        help="--max-rate: stop when the bracket is within this relative width (default 0.02)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=main)


# What planlab writes into a sweep folder (a sweep there is resumed).
SWEEP_DIR_ENTRIES = frozenset(
    ("sweep.csv", "plots", "points", "max_rate.json", "max_rate_steps.csv")
)


def main(args: argparse.Namespace) -> int:
    from planlab.distributed import make_backend
    from planlab.results import check_out_dir
    from planlab.sweep import find_max_rate, parse_sets, sweep, write_max_rate
    from scenario import load_scenario

    backend = make_backend(args.jobs, args.cluster)
    axes = parse_sets(args.set)
    base = load_scenario(args.scenario)
    out = Path(args.out) if args.out else Path("results") / f"sweep-{base.name}"
    # An earlier sweep there is resumed on purpose; anything else of the user's is refused.
    check_out_dir(
        out,
        force=True,
        markers=("sweep.csv", "points", "max_rate.json"),
        entries=SWEEP_DIR_ENTRIES,
        what="sweep",
    )
    if args.max_rate:
        return _max_rate(args, axes, out, find_max_rate, write_max_rate, load_scenario)
    bar = ProgressBar(enabled=not args.quiet, delay_s=0.0)
    try:
        df = sweep(
            args.scenario,
            axes,
            out,
            policy=args.policy,
            jobs=args.jobs,
            progress=bar.runs,
            backend=backend,
        )
    finally:
        bar.close()
    keys = [k for k, _ in axes]
    shown = df[keys + ["status", "reused", "joint_attainment", "ttft_p99_ms", "tpot_p99_ms",
                       "gpu_hours", "goodput_rps"]]  # fmt: skip
    print(shown.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    reused = int(df["reused"].fillna(False).astype(bool).sum())
    print(f"\n{len(df)} points ({reused} kept from an earlier run); wrote {out / 'sweep.csv'}")
    crashed = df[df["status"] != "ok"]
    for _, r in crashed.iterrows():
        print(f"planlab: point {r['run_dir']} crashed: {r['error']}", file=sys.stderr)
    return 1 if len(crashed) else 0


def _max_rate(args, axes, out, find_max_rate, write_max_rate, load_scenario) -> int:
    overrides = {}
    for key, values in axes:
        if len(values) != 1:
            raise ConfigError(
                f"--set {key}: --max-rate takes one value per key (a fixed override), "
                f"got {len(values)}",
                key="--set",
            )
        overrides[key] = values[0]
    scenario = load_scenario(args.scenario, overrides or None)

    def show(step: dict) -> None:
        if not args.quiet:
            joint = step["joint_attainment"]
            print(
                f"step {step['step']:2d}: scale {step['scale']:8.4f}  "
                f"{step['rate_rps'] or 0:8.2f} req/s  joint "
                f"{'-' if joint is None else format(joint, '.4f')}  "
                f"{'meets' if step['meets_target'] else 'misses'} target",
                file=sys.stderr,
            )

    result = find_max_rate(
        scenario, policy=args.policy or "static", tolerance=args.tolerance, progress=show
    )
    path = write_max_rate(result, out)
    if result.scale is None:
        print(
            f"no rate scale down to {result.steps[-1]['scale']:g} meets the target "
            f"{result.target:g}; see {path}"
        )
        return 0
    bound = (
        f"fails at {result.upper_scale:.4f}"
        if result.upper_scale is not None
        else "search bound reached"
    )
    print(
        f"max rate: scale {result.scale:.4f} = {result.rate_rps:.2f} req/s "
        f"(joint attainment {result.attainment:.4f} >= target {result.target:g}; {bound}); "
        f"wrote {path}"
    )
    return 0
