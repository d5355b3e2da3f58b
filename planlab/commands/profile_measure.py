"""`planlab profile measure --endpoint URL`: profile a running OpenAI-compatible server as
Dynamo's pre-deployment profiler would, into a Dynamo-format profile directory that every
planlab command loads (live/profiler.py does the measuring)."""

from __future__ import annotations

import argparse
import json
import sys

from planner.errors import ConfigError

EXAMPLES = """examples:
  # a local emulated cluster (`planlab emulate` prints its URL), KV capacity given
  planlab profile measure --endpoint http://127.0.0.1:8000 --max-kv-tokens 945000 \\
      --out profiles/emulated --budget-s 300
  # a vLLM server: the KV capacity is read from its /metrics
  planlab profile measure --endpoint http://127.0.0.1:8100 --isl 128,512,2048 \\
      --context 256,1024 --concurrency 1,4 --repeats 2 --out profiles/vllm-cpu
"""


def add_measure(ps: argparse._SubParsersAction) -> None:
    m = ps.add_parser(
        "measure",
        help="profile a running OpenAI-compatible endpoint",
        description="Measure prefill TTFT over prompt lengths (one request at a time, unique "
        "random prompts) and decode ITL over concurrency x context at the client, read the "
        "KV capacity from the server's /metrics (vLLM) or --max-kv-tokens, and write a "
        "Dynamo-format profile directory (prefill_raw_data.npz, decode_raw_data.npz) with "
        "measurement.json (every sample and its spread).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    m.add_argument("--endpoint", required=True, metavar="URL", help="server base URL")
    m.add_argument("--model", help="model name to send (default: the first of /v1/models)")
    m.add_argument("--out", required=True, metavar="DIR", help="profile directory to write")
    m.add_argument("--isl", default="128,512,1024,2048,4096,8192", help="prompt lengths")
    m.add_argument("--context", default="512,2048,8192", help="decode context lengths")
    m.add_argument("--concurrency", default="1,4,16,64", help="decode concurrencies")
    m.add_argument("--repeats", type=int, default=3, help="repetitions of each point (3)")
    m.add_argument("--budget-s", type=float, default=600.0, help="stop after this long (600)")
    m.add_argument("--max-kv-tokens", type=int, help="KV capacity of one engine, tokens")
    m.add_argument("--gpus", type=int, default=1, help="GPUs per engine (1)")
    m.add_argument("--metrics-url", help="the server's metrics URL (default ENDPOINT/metrics)")
    m.add_argument("--quiet", action="store_true", help="no progress output")
    m.set_defaults(func=run_measure)


def _ints(text: str, flag: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in str(text).split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"got {text!r}; expected comma-separated integers", key=flag) from None
    if not values or min(values) < 1:
        raise ConfigError(f"got {text!r}; expected positive integers", key=flag)
    return tuple(sorted(set(values)))


def run_measure(args: argparse.Namespace) -> int:
    import asyncio
    from pathlib import Path

    from live.profiler import MeasureSpec, measure
    from planlab.profiles import load_profile, write_dynamo_profile
    from planlab.results import check_out_dir

    for flag, value in (("--repeats", args.repeats), ("--gpus", args.gpus)):
        if value < 1:
            raise ConfigError(f"got {value}; expected a positive integer", key=flag)
    if not args.budget_s > 0:
        raise ConfigError(f"got {args.budget_s}; expected a positive number of s", key="--budget-s")
    if args.max_kv_tokens is not None and args.max_kv_tokens < 1:
        raise ConfigError(f"got {args.max_kv_tokens}; expected tokens > 0", key="--max-kv-tokens")
    out = Path(args.out)
    check_out_dir(out, force=False, markers=(), what="profile")
    spec = MeasureSpec(
        isls=_ints(args.isl, "--isl"),
        contexts=_ints(args.context, "--context"),
        concurrencies=_ints(args.concurrency, "--concurrency"),
        repeats=args.repeats,
        budget_s=args.budget_s,
        gpus=args.gpus,
        max_kv_tokens=args.max_kv_tokens,
    )
    model = args.model or asyncio.run(_first_model(args.endpoint))

    def progress(done: int, total: int, what: str) -> None:
        if not args.quiet:
            print(f"[{done:3d}/{total}] {what}", file=sys.stderr, flush=True)

    result = asyncio.run(
        measure(
            args.endpoint,
            model,
            spec,
            metrics_url=args.metrics_url,
            progress=progress,
            name=f"measured:{model}",
        )
    )
    doc = {"endpoint": args.endpoint, "model": model, **result.as_dict()}
    target = write_dynamo_profile(
        result.profile, out, extra={"measurement.json": json.dumps(doc, indent=1) + "\n"}
    )
    prof = load_profile(target)  # what every planlab command will read
    print(
        f"wrote {target}: {prof.prefill_isl.size} prefill and {prof.decode_itl_ms.size} decode "
        f"points, max_kv_tokens {prof.max_kv_tokens:,} ({result.max_kv_tokens_source}), "
        f"{result.wall_s:.0f} s"
    )
    for what in result.skipped:
        print(f"  not measured: {what}")
    return 0


async def _first_model(endpoint: str) -> str:
    import httpx

    url = endpoint.rstrip("/") + "/v1/models"
    try:
        async with httpx.AsyncClient(timeout=10.0, trust_env=False) as client:
            resp = await client.get(url)
            resp.raise_for_status()
            data = resp.json().get("data") or []
    except (httpx.HTTPError, ValueError) as exc:
        raise ConfigError(f"{url} did not answer ({exc})", key="--endpoint") from None
    if not data:
        raise ConfigError(f"{url} lists no model; expected --model NAME", key="--model")
    return str(data[0]["id"])
