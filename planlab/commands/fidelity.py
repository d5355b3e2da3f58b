"""`planlab fidelity SCENARIO --against emulator|dynamo|vllm|URL`: run the scenario live
against the target and in the simulator with the profile that describes the target, and
report how far apart they are (planlab/fidelity.py)."""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path

from planner.errors import ConfigError

EXAMPLES = """examples:
  planlab fidelity scenarios/live-step.yaml --against emulator
  planlab fidelity scenarios/live-step.yaml --against dynamo          # planlab[dynamo]
  planlab fidelity scenarios/live-step.yaml --against http://127.0.0.1:8000 \\
      --prometheus http://127.0.0.1:9090 --profile profiles/measured
"""

FIDELITY_DIR_ENTRIES = frozenset(("fidelity.json", "sim", "live", "profile"))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fidelity",
        help="the simulator against a live target on one scenario",
        description="Run SCENARIO live against the target (the local emulator, a Dynamo or "
        "vLLM stack, or a running frontend URL) and in the simulator with the profile that "
        "describes the target (the scenario's own for the emulator and the Dynamo mocker, "
        "--profile, or one measured with `profile measure`), then write OUT/fidelity.json: "
        "TTFT and TPOT mean/p50/p90/p99 with the simulator's relative error, KS distances, "
        "attainment both ways, and whether the planner took the same decisions.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("scenario", metavar="SCENARIO", help="a scenario YAML file")
    p.add_argument(
        "--against",
        required=True,
        metavar="TARGET",
        help="emulator, dynamo, vllm, or a frontend base URL",
    )
    p.add_argument("--prometheus", metavar="URL", help="with a URL target: its Prometheus")
    p.add_argument("--model", help="with a URL target: the model name to send")
    p.add_argument("--profile", metavar="DIR", help="the profile describing a URL target")
    p.add_argument(
        "--max-kv-tokens", type=int, help="with a URL target and no --profile: for measuring"
    )
    p.add_argument("--out", metavar="DIR", help="output folder (default results/fidelity-<time>)")
    p.add_argument("--force", action="store_true", help="replace an earlier fidelity folder")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a scenario key for both runs (repeatable)",
    )
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from live.stacks import STACKS
    from planlab.cli import build_parser
    from planlab.commands.run import overrides_from
    from planlab.fidelity import format_table, write_fidelity
    from planlab.live_run import run_live
    from planlab.profiles import load_profile, resolve_model
    from planlab.results import check_out_dir, claim_new_dir
    from planlab.runner import run_scenario
    from scenario import load_scenario

    target = args.against
    is_url = target.startswith(("http://", "https://"))
    if target not in ("emulator", *STACKS) and not is_url:
        raise ConfigError(
            f"got {target!r}; expected emulator, dynamo, vllm or an http:// URL", key="--against"
        )
    if is_url and not args.prometheus:
        raise ConfigError("a URL target needs --prometheus URL", key="--prometheus")
    if not is_url and (args.prometheus or args.profile or args.model):
        raise ConfigError(
            "--prometheus, --profile and --model go with a URL target", key="--against"
        )
    overrides = overrides_from(args)  # the same --set rules as `planlab run`
    scenario = load_scenario(args.scenario, overrides or None)
    if args.out:
        out = Path(args.out)
        check_out_dir(
            out,
            force=args.force,
            markers=("fidelity.json", "sim", "live"),
            entries=FIDELITY_DIR_ENTRIES,
            what="fidelity study",
        )
        out.mkdir(parents=True, exist_ok=True)
    else:
        out = claim_new_dir(Path("results") / datetime.now().strftime("fidelity-%Y%m%d-%H%M%S"))

    # The profile that describes the target: the emulator and the Dynamo mocker are timed
    # by the scenario's own; anything else by --profile or by measuring it first.
    if is_url:
        profile = load_profile(args.profile) if args.profile else _measure(args, target, out)
    elif target == "vllm":
        raise ConfigError(
            "the vLLM stack's engine is not described by the scenario's profile: measure it "
            "(`planlab profile measure`) and pass its URL with --profile",
            key="--against",
        )
    else:
        profile = resolve_model(scenario.model)

    live_argv = ["run", args.scenario, "--live", "--out", str(out / "live"), "--no-report"]
    live_argv += [f"--set={s}" for s in args.set] + (["--force"] if args.force else [])
    if target == "emulator":
        live_argv.append("--emulate")
    elif target in STACKS:
        live_argv += ["--stack", target]
    else:
        live_argv += ["--frontend", target, "--prometheus", args.prometheus]
        live_argv += ["--model", args.model] if args.model else []
    live_args = build_parser().parse_args(live_argv)
    live = run_live(live_args, overrides or None)
    sim = run_scenario(scenario, out_dir=out / "sim", profile=profile, force=args.force)
    doc = write_fidelity(
        sim.out_dir,
        live.out_dir,
        out,
        {"scenario": scenario.name, "against": target, "profile": profile.name},
    )
    print(format_table(doc))
    print(f"\nwrote {out / 'fidelity.json'} (runs in {out / 'sim'} and {out / 'live'})")
    return 0


def _measure(args: argparse.Namespace, url: str, out: Path):
    import asyncio
    import json
    import sys

    from live.profiler import MeasureSpec, measure
    from planlab.profiles import load_profile, write_dynamo_profile

    model = args.model
    if model is None:
        from planlab.commands.profile_measure import _first_model

        model = asyncio.run(_first_model(url))
    print(f"measuring {url} (no --profile given) ...", file=sys.stderr)
    result = asyncio.run(
        measure(url, model, MeasureSpec(max_kv_tokens=args.max_kv_tokens), name=f"measured:{model}")
    )
    target = write_dynamo_profile(
        result.profile,
        out / "profile",
        extra={"measurement.json": json.dumps(result.as_dict(), indent=1) + "\n"},
    )
    return load_profile(target)
