"""`planlab decide`: what a policy would do for one observed interval, with its arithmetic."""

from __future__ import annotations

import argparse
import json
import math

from planner.errors import ConfigError

EXAMPLES = """examples:
  # Dynamo's own e2e expectation on the shared H200 profile: 20 req/s -> 2 prefill + 1 decode
  planlab decide --profile ../shared/profiles/h200-llama3.1-8b-fp8-tp1 \\
      --num-req 1200 --isl 3000 --osl 150 --interval 60 --ttft 200 --itl 10
  # the embedded analytic profile (llama-3.1-8b, h200, fp8, tp1), JSON decision record
  planlab decide --num-req 600 --isl 3000 --osl 150 --interval 60 --json
  # Dynamo 1.6 engine limits, 2 GPUs per engine, 16 GPUs
  planlab decide --num-req 5000 --isl 3000 --osl 150 --interval 60 --max-num-seqs 512 \\
      --max-num-batched-tokens 16384 --gpus-per-prefill 2 --gpus-per-decode 2 --budget 16
  # the planner of Dynamo's original guide, corrected by observed latencies
  planlab decide --policy dynamo-legacy --num-req 1200 --isl 3000 --osl 150 --interval 60 \\
      --observed-ttft 350 --observed-itl 12 --request-duration 3 --decode-replicas 2 --budget 4
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "decide",
        help="what a policy would do for one observed interval",
        description="Print the decision a policy takes for one observed interval, each formula "
        "with its numbers. Defaults are Dynamo 1.6's: interval 180 s, TTFT 500 ms, ITL 50 ms, "
        "min 1 endpoint, 1 GPU per engine, max_gpu_budget 8 (for the dynamo policies; no "
        "budget for the others), max_num_batched_tokens 8192, max_num_seqs 256, at most 8 "
        "replicas changed per role per tick.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument(
        "--profile", metavar="DIR", help="a profile directory (Dynamo or planlab format)"
    )
    src.add_argument(
        "--analytic", metavar="MODEL", help="analytic profile model (default llama-3.1-8b)"
    )
    p.add_argument("--gpu", default="h200", help="GPU for --analytic (default h200)")
    p.add_argument("--dtype", default="fp8", help="dtype for --analytic (default fp8)")
    p.add_argument("--tp", type=int, default=1, help="tensor parallel degree for --analytic")
    p.add_argument(
        "--num-req", type=finite, required=True, help="requests observed in the interval"
    )
    p.add_argument("--isl", type=finite, required=True, help="mean input length (tokens)")
    p.add_argument("--osl", type=finite, required=True, help="mean output length (tokens)")
    # Second names are Dynamo planner's flags, for users who type those.
    p.add_argument(
        "--interval",
        "--adjustment-interval",
        type=finite,
        default=180.0,
        help="adjustment interval, s (180)",
    )
    p.add_argument("--ttft", type=finite, default=500.0, help="TTFT target, ms (500)")
    p.add_argument("--itl", type=finite, default=50.0, help="ITL target, ms (50)")
    p.add_argument("--policy", default="dynamo", help="policy name (dynamo)")
    p.add_argument(
        "--budget",
        "--max-gpu-budget",
        type=int,
        default=None,
        help="max GPU budget (8 for dynamo*, Dynamo's default; else none)",
    )
    p.add_argument("--min-replicas", "--min-endpoint", type=int, default=1)
    p.add_argument(
        "--prefill-min-endpoint", type=int, help="dynamo: prefill minimum (min-replicas)"
    )
    p.add_argument("--decode-min-endpoint", type=int, help="dynamo: decode minimum (min-replicas)")
    p.add_argument(
        "--max-num-batched-tokens", type=int, help="prefill engine token budget per step (8192)"
    )
    p.add_argument("--max-num-seqs", type=int, help="engine sequence limit, both roles (256)")
    p.add_argument(
        "--max-scaling-replicas",
        "--max-throughput-scaling-replicas",
        type=int,
        help="dynamo: most replicas added or removed per role per tick (8)",
    )
    p.add_argument(
        "--requests-started",
        type=finite,
        help="requests admitted in the interval (requests_started_total); default: --num-req",
    )
    p.add_argument("--gpus-per-prefill", "--prefill-engine-num-gpu", type=int, default=1)
    p.add_argument("--gpus-per-decode", "--decode-engine-num-gpu", type=int, default=1)
    p.add_argument(
        "--no-correction",
        action="store_true",
        help="no correction from observed latencies, even with --observed-ttft/--observed-itl",
    )
    p.add_argument(
        "--observed-ttft", type=finite, help="observed mean TTFT, ms (turns correction on)"
    )
    p.add_argument(
        "--observed-itl", type=finite, help="observed mean ITL, ms (turns correction on)"
    )
    p.add_argument("--request-duration", type=finite, help="observed mean request duration, s")
    p.add_argument("--prefill-replicas", type=int, default=1, help="current ready prefill replicas")
    p.add_argument("--decode-replicas", type=int, default=1, help="current ready decode replicas")
    p.add_argument("--prefill-starting", type=int, default=0, help="prefill replicas starting")
    p.add_argument("--decode-starting", type=int, default=0, help="decode replicas starting")
    p.add_argument("--json", action="store_true", help="print the DecisionRecord as JSON")
    p.set_defaults(func=run)


ANALYTIC_FLAGS = {"model": "--analytic", "gpu": "--gpu", "dtype": "--dtype", "tp": "--tp"}


def finite(text: str) -> float:
    """An argparse type: a finite number (nan and inf are bad input, exit 2)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def check_in_profile(profile, isl: float, osl: float) -> None:
    """An ISL the profile does not cover is bad input, not an extrapolation to trust."""
    top = float(profile.prefill_isl.max())
    if isl > top:
        raise ConfigError(
            f"{isl:g} tokens is outside the profile {profile.name} (prefill measured up to "
            f"{top:g} tokens); expected an ISL within the profile",
            key="--isl",
        )
    if isl + osl > profile.max_kv_tokens:
        raise ConfigError(
            f"ISL + OSL = {isl + osl:g} tokens exceed the profile's KV capacity of one decode "
            f"engine ({profile.max_kv_tokens} tokens): no engine can serve such a request",
            key="--osl",
        )


def _positive(name: str, value: float | None) -> None:
    if value is not None and not value > 0:
        raise ConfigError(f"got {value:g}, expected a number > 0", key=f"--{name}")


def run(args: argparse.Namespace) -> int:
    from planlab.profiles import load_profile
    from planner.analytic import analytic_profile
    from planner.observation import Observation
    from planner.policies import make_policy
    from planner.types import DecisionRecord, PlannerConfig, ReplicaState, RoleState

    for name in (
        "isl",
        "osl",
        "interval",
        "ttft",
        "itl",
        "observed-ttft",
        "observed-itl",
        "request-duration",
    ):
        _positive(name, getattr(args, name.replace("-", "_")))
    if args.num_req < 0:
        raise ConfigError(f"got {args.num_req:g}, expected a count >= 0", key="--num-req")
    if args.profile:
        profile = load_profile(args.profile)
    else:
        try:
            profile = analytic_profile(
                args.analytic or "llama-3.1-8b", args.gpu, args.dtype, args.tp
            )
        except ConfigError as exc:  # name the flag the user typed, not the scenario key
            flag = ANALYTIC_FLAGS.get((exc.key or "").rpartition(".")[2], exc.key)
            raise ConfigError(exc.detail, key=flag) from None
    check_in_profile(profile, args.isl, args.osl)

    observed = args.observed_ttft is not None and args.observed_itl is not None
    correction = observed and not args.no_correction
    if (args.observed_ttft is None) != (args.observed_itl is None):
        raise ConfigError(
            "give both --observed-ttft and --observed-itl, or neither", key="--observed-ttft"
        )
    for name in (
        "max-num-batched-tokens",
        "max-num-seqs",
        "max-scaling-replicas",
    ):
        _positive(name, getattr(args, name.replace("-", "_")))
    for name in (
        "prefill-replicas",
        "decode-replicas",
        "prefill-starting",
        "decode-starting",
        "prefill-min-endpoint",
        "decode-min-endpoint",
    ):
        value = getattr(args, name.replace("-", "_"))
        if value is not None and value < 0:
            raise ConfigError(f"got {value}, expected a count >= 0", key=f"--{name}")
    if args.requests_started is not None and args.requests_started < 0:
        raise ConfigError(
            f"got {args.requests_started:g}, expected a count >= 0", key="--requests-started"
        )
    budget = args.budget
    if budget is None and args.policy.startswith("dynamo"):
        budget = 8  # dynamo/planner/config/defaults.py: max_gpu_budget = 8
    options = {
        key: value
        for key, value in (
            ("prefill_min_endpoint", args.prefill_min_endpoint),
            ("decode_min_endpoint", args.decode_min_endpoint),
            ("max_throughput_scaling_replicas", args.max_scaling_replicas),
        )
        if value is not None
    }
    cfg = PlannerConfig(
        policy=args.policy,
        interval_s=args.interval,
        ttft_ms=args.ttft,
        itl_ms=args.itl,
        predictor="constant",
        max_gpu_budget=budget,
        min_replicas=args.min_replicas,
        gpus_per_prefill=args.gpus_per_prefill,
        gpus_per_decode=args.gpus_per_decode,
        correction=correction,
        prefill_max_batch_tokens=args.max_num_batched_tokens,
        prefill_max_num_seqs=args.max_num_seqs,
        decode_max_num_seqs=args.max_num_seqs,
        options=tuple(sorted(options.items())),
    )
    policy = make_policy(cfg, profile)
    duration = args.request_duration
    if duration is None:
        duration = args.osl * args.itl / 1000.0  # what the ITL target implies
    obs = Observation(
        t_s=args.interval,
        interval_s=args.interval,
        num_req=args.num_req,
        request_rate=args.num_req / args.interval,
        isl_mean=args.isl,
        osl_mean=args.osl,
        ttft_mean_ms=args.observed_ttft
        if observed
        else float(profile.prefill_ttft_ms_at(args.isl)),
        ttft_p50_ms=None,
        ttft_p90_ms=None,
        ttft_p99_ms=None,
        itl_mean_ms=args.observed_itl if observed else args.itl,
        itl_p50_ms=None,
        itl_p90_ms=None,
        itl_p99_ms=None,
        request_duration_mean_s=duration,
        num_req_started=args.requests_started,
    )
    state = ReplicaState(
        prefill=RoleState(
            desired=args.prefill_replicas + args.prefill_starting,
            ready=args.prefill_replicas,
            starting=args.prefill_starting,
        ),
        decode=RoleState(
            desired=args.decode_replicas + args.decode_starting,
            ready=args.decode_replicas,
            starting=args.decode_starting,
        ),
    )
    decision = policy.decide(obs, state, obs.t_s)
    record = DecisionRecord(
        t_s=obs.t_s,
        policy=cfg.policy,
        observation=obs,
        decision=decision,
        current=state,
        applied=False,
        note="planlab decide: advisory, nothing scaled",
    )
    if args.json:
        print(json.dumps(record.to_dict(), indent=2))
        return 0
    print(f"profile: {profile.name} ({profile.source})")
    print(
        f"policy:  {cfg.policy}   interval {cfg.interval_s:g} s   SLA TTFT {cfg.ttft_ms:g} ms, "
        f"ITL {cfg.itl_ms:g} ms   GPU budget {budget if budget is not None else 'none'}"
    )
    for line in decision.arithmetic:
        print(f"  {line}")
    print(
        f"decision: {decision.prefill} prefill + {decision.decode} decode "
        f"({cfg.gpus(decision.prefill, decision.decode)} GPUs) [{decision.rule}]"
    )
    print(f"reason:   {decision.reason}")
    if decision.expected_ttft_ms is not None:
        print(
            f"expected: TTFT {decision.expected_ttft_ms:.1f} ms (no queueing), "
            f"ITL {decision.expected_itl_ms:.2f} ms"
        )
    return 0
