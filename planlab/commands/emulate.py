"""`planlab emulate`: start the local emulated cluster (frontend, workers, Prometheus) and keep it up."""

from __future__ import annotations

import argparse
import signal
import sys

from planner.errors import ConfigError

EXAMPLES = """examples:
  # the embedded analytic profile, 1 prefill + 1 decode worker, Prometheus on 9090
  planlab emulate --analytic llama-3.1-8b --gpu h200
  # a scenario's profile, cluster (replicas, startup delays) and scrape interval
  planlab emulate --scenario scenarios/quickstart.yaml --port 8000
  # serve the model id a client expects, counting prompts with its local tokenizer
  planlab emulate --model my-org/llama-8b --tokenizer ~/tokenizers/llama-8b --no-prometheus
  # then, from another terminal
  curl -N localhost:8000/v1/completions -d '{"prompt": "hi", "max_tokens": 5, "stream": true}'
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "emulate",
        help="start a local emulated cluster and leave it running",
        description="Start an OpenAI-compatible frontend with emulated prefill and decode "
        "workers (timed by the simulator's engine model on the profile) and a real Prometheus "
        "scraping it, all on 127.0.0.1. Runs until Ctrl-C or SIGTERM and stops everything.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument(
        "--scenario", metavar="FILE", help="take the model and cluster from a scenario"
    )
    src.add_argument(
        "--analytic", metavar="MODEL", help="analytic profile model (default llama-3.1-8b)"
    )
    p.add_argument("--gpu", default="h200", help="GPU for --analytic (h200)")
    p.add_argument("--dtype", default="fp8", help="dtype for --analytic (fp8)")
    p.add_argument("--tp", type=int, default=1, help="tensor parallel degree for --analytic (1)")
    p.add_argument("--port", type=int, default=8000, help="frontend port, 0 picks one (8000)")
    p.add_argument(
        "--prometheus-port", type=int, default=9090, help="Prometheus port, 0 picks one (9090)"
    )
    p.add_argument("--no-prometheus", action="store_true", help="do not start Prometheus")
    p.add_argument(
        "--scrape-interval", type=float, default=None, help="seconds (scenario's, else 5)"
    )
    p.add_argument(
        "--prefill", type=int, default=None, metavar="N", help="prefill workers at start"
    )
    p.add_argument("--decode", type=int, default=None, metavar="M", help="decode workers at start")
    p.add_argument(
        "--speedup", type=float, default=1.0, help="divide engine step times by this (1)"
    )
    p.add_argument(
        "--model",
        metavar="ID",
        default=None,
        help="model id served (requests naming another get 404); default: the analytic "
        "model's name, else planlab-emulated",
    )
    p.add_argument(
        "--tokenizer",
        metavar="DIR",
        default=None,
        help="a local Hugging Face tokenizer directory (tokenizer.json, tokenizer_config.json): "
        "count input tokens with it, chat template included (default: characters / 4); "
        "needs the tokenizer extra",
    )
    p.set_defaults(func=run)


def _check(args: argparse.Namespace) -> None:
    for key in ("port", "prometheus_port"):
        value = getattr(args, key)
        if not 0 <= value <= 65535:
            raise ConfigError(
                f"expected a port 0-65535, got {value}", key=f"--{key.replace('_', '-')}"
            )
    for key in ("prefill", "decode"):
        value = getattr(args, key)
        if value is not None and value < 0:
            raise ConfigError(f"expected a worker count >= 0, got {value}", key=f"--{key}")
    if args.speedup <= 0:
        raise ConfigError(f"expected a positive number, got {args.speedup}", key="--speedup")
    if args.scrape_interval is not None and args.scrape_interval <= 0:
        raise ConfigError(
            f"expected positive seconds, got {args.scrape_interval}", key="--scrape-interval"
        )


def run(args: argparse.Namespace) -> int:
    import asyncio

    from planlab.profiles import resolve_model
    from scenario import AnalyticSpec, ModelSpec, load_scenario

    _check(args)
    tokenizer = None
    if args.tokenizer:
        from live.emulator.tokens import PromptCounter

        tokenizer = PromptCounter(args.tokenizer)  # ConfigError (exit 2) for a bad directory
    if args.scenario:
        scenario = load_scenario(args.scenario)
        source, profile = scenario, resolve_model(scenario.model)
    else:
        spec = AnalyticSpec(args.analytic or "llama-3.1-8b", args.gpu, args.dtype, args.tp)
        source = profile = resolve_model(ModelSpec(analytic=spec))
    try:
        asyncio.run(_serve(args, source, profile, tokenizer))
    except OSError as exc:  # a port already in use, mostly
        raise ConfigError(f"cannot listen: {exc}", key="--port") from None
    except RuntimeError as exc:  # Prometheus failed to start
        print(f"planlab: error: {exc}", file=sys.stderr)
        return 1
    return 0


async def _serve(args: argparse.Namespace, source, profile, tokenizer) -> None:
    import asyncio

    from live.emulator import start_emulated_cluster  # aiohttp: only when it serves

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    scrape = args.scrape_interval
    if scrape is None and source is profile:
        scrape = 5.0
    model = args.model or args.analytic
    kwargs = {"model": model} if model else {}
    async with start_emulated_cluster(
        source,
        profile=profile,
        port=args.port,
        prometheus=not args.no_prometheus,
        prometheus_port=args.prometheus_port,
        scrape_interval_s=scrape,
        prefill=args.prefill,
        decode=args.decode,
        speedup=args.speedup,
        tokenizer=tokenizer,
        **kwargs,
    ) as h:
        state = h.connector.state()
        counting = f"tokenizer {args.tokenizer}" if tokenizer else "characters / 4"
        print(f"frontend    {h.frontend_url}/v1   (model {h.model!r}; prompts: {counting})")
        print(f"metrics     {h.metrics_url}")
        print(f"prometheus  {h.prometheus_url or '(not started)'}")
        print(
            f"workers     {state.prefill.ready} prefill, {state.decode.ready} decode; Ctrl-C to stop"
        )
        await stop.wait()
    print("stopped")
