"""`planlab stack NAME`: start a real serving stack on this machine and leave it running."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from planner.errors import ConfigError

EXAMPLES = """examples:
  # Dynamo's frontend + 1 prefill and 1 decode mocker worker + Prometheus (planlab[dynamo])
  planlab stack dynamo
  # a scenario's profile, replicas and startup times; fixed ports
  planlab stack dynamo --scenario scenarios/live-step.yaml --port 8000 --prometheus-port 9090
  # then, from another terminal
  curl -N localhost:8000/v1/chat/completions -H 'content-type: application/json' \\
    -d '{"model": "llama-3.1-8b", "messages": [{"role": "user", "content": "the the"}],
         "max_tokens": 5, "stream": true}'
"""

DEFAULT_SCENARIO = """
name: stack
duration: 60s
model:
  analytic: {model: llama-3.1-8b, gpu: h200, dtype: fp8, tp: 1}
cluster:
  prefill: {replicas: 1, startup: 5s}
  decode: {replicas: 1, startup: 5s}
workload:
  arrival: {process: constant, rate: 1}
  isl: {dist: fixed, value: 500}
  osl: {dist: fixed, value: 50}
prometheus: {scrape_interval: 5s}
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "stack",
        help="start a real serving stack (dynamo) and leave it running",
        description="Start a real serving stack on 127.0.0.1 -- for dynamo: Dynamo's frontend, "
        "mocker prefill and decode workers timed from the profile, and a Prometheus scraping "
        "them -- print where it listens, and stop every process it started on Ctrl-C.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", metavar="NAME", help="the stack: dynamo")
    p.add_argument("--scenario", metavar="FILE", help="take the model and cluster from a scenario")
    p.add_argument("--port", type=int, default=0, help="frontend port (default: a free one)")
    p.add_argument("--prometheus-port", type=int, default=0, help="Prometheus port (a free one)")
    p.add_argument("--workdir", metavar="DIR", help="keep logs, discovery and tables here")
    p.add_argument(
        "--startup",
        choices=("mocker", "hidden"),
        default="mocker",
        help="dynamo: mocker = its --startup-time (routed to while starting, the default); "
        "hidden = start it after the startup (no traffic before ready)",
    )
    p.set_defaults(func=run)


def _scenario(args: argparse.Namespace):
    from scenario import load_scenario

    if args.scenario:
        return load_scenario(args.scenario)
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "stack.yaml"
        path.write_text(DEFAULT_SCENARIO)
        return load_scenario(path)


def run(args: argparse.Namespace) -> int:
    import shutil
    import tempfile
    from contextlib import ExitStack
    from pathlib import Path

    from live.stacks import StackError, load_stack
    from planlab.profiles import resolve_model

    for key in ("port", "prometheus_port"):
        value = getattr(args, key)
        if not 0 <= value <= 65535:
            raise ConfigError(
                f"expected a port 0-65535, got {value}", key=f"--{key.replace('_', '-')}"
            )
    stack = load_stack(args.name)
    check = getattr(stack, "check_installed", None)
    if check is not None:
        check()
    scenario = _scenario(args)
    profile = resolve_model(scenario.model)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with ExitStack() as es:
        # A temporary work directory goes after a clean stop, stays after a failure (logs).
        workdir = Path(args.workdir or tempfile.mkdtemp(prefix="planlab-stack-"))
        options = {"profile": profile, "prometheus_port": args.prometheus_port}
        if args.startup != "mocker":
            options["startup"] = args.startup
        if args.port:
            options["frontend_port"] = args.port
        try:
            h = es.enter_context(stack.start_stack(scenario, workdir, **options))
        except StackError as exc:
            print(f"planlab: error: {exc}", file=sys.stderr)
            return 1
        state = h.connector.state()
        print(f"frontend    {h.frontend_url}/v1   (model {h.model!r})")
        print(f"prometheus  {h.prometheus_url or '(not started)'}")
        print(
            f"workers     {state.prefill.ready} prefill, {state.decode.ready} decode "
            f"(logs in {workdir / 'logs'}); Ctrl-C to stop"
        )
        while not stop.wait(1.0):
            pass
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    print("stopped")
    return 0
