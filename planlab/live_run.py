"""`planlab run SCENARIO --live`: the scenario's workload streamed in real time to a real
(or locally emulated) frontend while the planner loop runs against Prometheus and a
connector; writes the same results directory as a simulated run."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from planner import metrics as m
from planner.errors import ConfigError
from planner.types import ReplicaState, RoleState
from scenario import Scenario, load_scenario

# The live stack (httpx, aiohttp, pandas) is imported by the functions that run live, so
# that registering `planlab run`'s --live flags costs a plain run nothing.
if TYPE_CHECKING:
    import pandas as pd

    from live.prometheus import PrometheusSource

log = logging.getLogger(__name__)

RESULTS_ROOT = Path("results")


def add_live_arguments(p: argparse.ArgumentParser) -> None:
    """The --live flags of `planlab run`."""
    from live.prometheus import METRIC_SETS

    g = p.add_argument_group("live mode (--live)")
    g.add_argument("--live", action="store_true", help="drive a real or emulated cluster")
    g.add_argument(
        "--emulate",
        action="store_true",
        help="with --live: start the local emulated cluster and a real Prometheus",
    )
    g.add_argument(
        "--stack",
        metavar="NAME",
        help="with --live: start a real serving stack on this machine and run against it: "
        "dynamo (Dynamo's frontend and mocker workers, scaled for real; planlab[dynamo]) or "
        "vllm (one vLLM on CPU serving a tiny local model, advisory; planlab[vllm])",
    )
    g.add_argument(
        "--stack-startup",
        choices=("mocker", "hidden"),
        default=None,
        help="--stack dynamo: mocker = the mocker's --startup-time, routed to while it starts "
        "(default); hidden = start it after the startup, as the simulator assumes",
    )
    g.add_argument("--frontend", metavar="URL", help="OpenAI-compatible frontend base URL")
    g.add_argument("--prometheus", metavar="URL", help="Prometheus base URL")
    g.add_argument("--model", help="model name sent in requests and matched in metrics")
    g.add_argument(
        "--metric-names",
        choices=sorted(METRIC_SETS),
        default="dynamo",
        help="metric names the frontend exports (default dynamo; vllm for vLLM's own)",
    )
    g.add_argument("--kube-namespace", metavar="NS", help="namespace of the deployments")
    g.add_argument("--prefill-deployment", metavar="NAME", help="prefill Deployment (or service)")
    g.add_argument("--decode-deployment", metavar="NAME", help="decode Deployment (or service)")
    g.add_argument("--dgd", metavar="NAME", help="scale a DynamoGraphDeployment of this name")
    g.add_argument("--advisory", action="store_true", help="decide and record, never scale")


class StaticConnector:
    """The cluster as the scenario describes it, for a live run without a connector: state
    reports the scenario's replicas, scale is refused (the run is advisory)."""

    def __init__(self, scenario: Scenario):
        c = scenario.cluster
        self._state = ReplicaState(
            prefill=RoleState(desired=c.prefill.replicas, ready=c.prefill.replicas),
            decode=RoleState(desired=c.decode.replicas, ready=c.decode.replicas),
        )

    def state(self) -> ReplicaState:
        return self._state

    def scale(self, prefill: int, decode: int) -> bool:
        return False


@dataclass(frozen=True)
class LiveTarget:
    """Where a live run goes: the frontend, Prometheus, the connector, the model name."""

    frontend_url: str
    prometheus_url: str
    connector: Any
    model: str | None
    metric_names: str = "dynamo"
    emulated: bool = False
    # Send ignore_eos + min_tokens so every request produces its OSL (vLLM accepts them).
    ignore_eos: bool = False
    stack: str | None = None


@dataclass(frozen=True)
class LiveOutcome:
    out_dir: Path | None
    summary: dict[str, Any]
    requests: pd.DataFrame
    timeline: pd.DataFrame
    records: tuple


def _requests_frame(rows: list[dict]) -> pd.DataFrame:
    """The fixed columns first, then what the load generator added (output_tokens)."""
    import pandas as pd

    from planlab.results import REQUEST_COLUMNS

    extra = list(dict.fromkeys(k for r in rows for k in r if k not in REQUEST_COLUMNS))
    df = pd.DataFrame(rows, columns=list(REQUEST_COLUMNS) + extra)
    return df.sort_values("id", kind="stable").reset_index(drop=True)


def served_model(frontend_url: str, timeout_s: float = 5.0) -> str | None:
    """The model an OpenAI-compatible server serves (`GET /v1/models`), when it serves
    exactly one; None (logged) when it cannot say. ConfigError when it serves several:
    the run must name one (--model)."""
    import httpx

    url = frontend_url.rstrip("/") + "/v1/models"
    try:
        resp = httpx.get(url, timeout=timeout_s)
        resp.raise_for_status()
        ids = [str(d["id"]) for d in resp.json().get("data", []) if "id" in d]
    except (httpx.HTTPError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("no model named and %s did not list one: %s", url, exc)
        return None
    if len(ids) > 1:
        raise ConfigError(
            f"{url} serves {len(ids)} models ({', '.join(ids)}); name one with --model",
            key="--model",
        )
    if not ids:
        log.warning("no model named and %s lists none", url)
        return None
    log.info("model %r (the one %s lists)", ids[0], url)
    return ids[0]


def _prometheus_total(source: PrometheusSource, t_s: float) -> float | None:
    """The frontend's request counter as Prometheus last scraped it before t_s (read at
    the start and the end of a run: the difference cross-checks the client's count)."""
    try:
        return source.current(m.REQUESTS_TOTAL, t_s)
    except Exception as exc:  # a cross-check only
        log.warning("could not read the request total from Prometheus: %s", exc)
        return None


def _run_increase(before: float | None, after: float | None) -> float | None:
    """Requests the frontend counted during the run. A counter with no series before the
    run had counted nothing yet (it appears at its first increment); a counter lower at
    the end was reset (the server restarted), so the run's increase is unknown."""
    if after is None:
        return None
    before = before or 0.0
    if after < before:
        log.warning("the request counter went down during the run (%g -> %g)", before, after)
        return None
    return after - before


def _server_view(source: PrometheusSource, t_end_s: float, span_s: float) -> dict | None:
    """The whole run as the server's own histograms saw it (the Observation over one
    window covering the run), to set beside the client's TTFT and TPOT."""
    from planner.observation import build_observation

    try:
        obs = build_observation(source.window(t_end_s, span_s))
    except Exception as exc:  # a report only
        log.warning("could not read the server's view of the run: %s", exc)
        return None
    keys = ("num_req", "isl_mean", "osl_mean", "ttft_mean_ms", "ttft_p50_ms", "ttft_p90_ms",
            "ttft_p99_ms", "itl_mean_ms", "itl_p50_ms", "itl_p90_ms", "itl_p99_ms",
            "request_duration_mean_s")  # fmt: skip
    view = {k: getattr(obs, k) for k in keys}
    view["window_s"] = span_s
    view["missing"] = list(obs.missing)
    return view


async def run_live_scenario(
    scenario: Scenario,
    target: LiveTarget,
    *,
    profile,
    requests,
    advisory: bool = False,
    settle_s: float | None = None,
) -> LiveOutcome:
    """Stream `requests` (scenario.workload.Requests) to the frontend in real time, run the
    planner every planner.interval against Prometheus and the connector, sample the
    connector every scrape interval. Returns the frames; writes nothing. An unreachable
    frontend or Prometheus, or a frontend that does not serve the model, is a ConfigError
    before the first request (preflight)."""
    import numpy as np
    import pandas as pd

    from live.driver import PlannerDriver, TimelineSampler, gpu_seconds
    from live.loadgen import LoadGenerator
    from live.prometheus import METRIC_SETS, PrometheusSource
    from planlab.results import TIMELINE_COLUMNS, compute_summary
    from planner.loop import PlannerLoop
    from planner.policies import make_policy

    await preflight(target)
    cfg = scenario.planner_config()
    planner = PlannerLoop(make_policy(cfg, profile), cfg)
    names, label = METRIC_SETS[target.metric_names]
    source = PrometheusSource(
        target.prometheus_url,
        model=target.model,
        metric_names=names,
        model_label=label,
        staleness_s=max(30.0, 5 * scenario.prometheus.scrape_interval_s),
    )
    gen = LoadGenerator(
        target.frontend_url,
        model=target.model or "planlab-emulated",
        extensions=target.emulated,
        ignore_eos=target.ignore_eos,
    )
    gpus_per = {
        "prefill": scenario.cluster.prefill.gpus_per_replica,
        "decode": scenario.cluster.decode.gpus_per_replica,
    }
    arrivals = np.asarray(requests.arrival_s, dtype=np.float64)
    # The server's counter before the run (a server counts from its own start).
    prom_before = await asyncio.to_thread(_prometheus_total, source, time.time())
    t0_epoch = time.time()
    t0_perf = time.perf_counter()
    driver = PlannerDriver(
        planner,
        source,
        target.connector,
        interval_s=cfg.interval_s,
        advisory=advisory,
        t0_epoch=t0_epoch,
    )
    sampler = TimelineSampler(
        target.connector,
        period_s=scenario.prometheus.scrape_interval_s,
        gpus_per=gpus_per,
        interval_s=cfg.interval_s,
        t0_epoch=t0_epoch,
        arrivals_until=lambda t: int(np.searchsorted(arrivals, t, side="right")),
        prediction=lambda: driver.last_prediction,
    )
    stop = asyncio.Event()
    background = [
        asyncio.create_task(driver.run(stop), name="planner"),
        asyncio.create_task(sampler.run(stop), name="timeline"),
    ]
    log.info(
        "live run %s: %d requests over %.0f s to %s; planner every %.0f s%s",
        scenario.name,
        len(arrivals),
        scenario.duration_s,
        target.frontend_url,
        cfg.interval_s,
        " (advisory)" if advisory else "",
    )
    try:
        load = await gen.run(requests, start_s=t0_perf)
        stop.set()
        await asyncio.gather(*background)
        wall_s = time.perf_counter() - t0_perf
        # Let Prometheus scrape the final counts before the cross-check.
        await asyncio.sleep(
            settle_s if settle_s is not None else 2 * scenario.prometheus.scrape_interval_s
        )
        t_end = time.time()
        prom_after = await asyncio.to_thread(_prometheus_total, source, t_end)
        server = await asyncio.to_thread(_server_view, source, t_end, t_end - t0_epoch)
    finally:
        stop.set()
        for task in background:
            task.cancel()
        source.close()

    req = _requests_frame(load.rows())
    timeline = pd.DataFrame(sampler.rows)
    timeline = timeline.reindex(
        columns=list(TIMELINE_COLUMNS) + [c for c in timeline.columns if c not in TIMELINE_COLUMNS]
    )
    summary = compute_summary(
        req,
        sla=scenario.sla,
        duration_s=scenario.duration_s,
        gpu_seconds=gpu_seconds(sampler.rows, gpus_per),
        scaling_events=driver.scaling_events,
        preemptions=0,
        wall_s=wall_s,
        policy=cfg.policy,
        scenario_name=scenario.name,
        extra={
            "mode": "live-emulated" if target.emulated else "live",
            "stack": target.stack,
            "seed": scenario.seed,
            "frontend": target.frontend_url,
            "prometheus": target.prometheus_url,
            "advisory": advisory,
            "planner_ticks": len(driver.records),
            # The run's increase of the server's request counter, not its lifetime total.
            "prometheus_requests_total": _run_increase(prom_before, prom_after),
            "output_tokens": load.output_tokens,
            "server": server,
        },
    )
    return LiveOutcome(None, summary, req, timeline, tuple(driver.records))


async def preflight(target: LiveTarget, timeout_s: float = 5.0) -> None:
    """Check that the frontend answers `GET /v1/models` (and lists target.model when one is
    named) and that Prometheus answers its query API, before any request is sent."""
    import httpx

    frontend = target.frontend_url.rstrip("/")
    prometheus = target.prometheus_url.rstrip("/")
    async with httpx.AsyncClient(timeout=timeout_s, trust_env=False) as client:
        models_url = f"{frontend}/v1/models"
        try:
            resp = await client.get(models_url)
            resp.raise_for_status()
            body = resp.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise ConfigError(
                f"the frontend at {models_url} did not answer ({_error_text(exc)}); expected an "
                "OpenAI-compatible server listing its models",
                key="--frontend",
            ) from None
        served = [str(m.get("id")) for m in body.get("data", []) if isinstance(m, dict)]
        if target.model is not None and served and target.model not in served:
            raise ConfigError(
                f"the frontend at {frontend} does not serve model {target.model!r}; it serves "
                f"{', '.join(served)}",
                key="--model",
            )
        query_url = f"{prometheus}/api/v1/query"
        try:
            resp = await client.get(query_url, params={"query": "1"})
            resp.raise_for_status()
            if resp.json().get("status") != "success":
                raise ValueError(f"status {resp.json().get('status')!r}")
        except (httpx.HTTPError, ValueError) as exc:
            raise ConfigError(
                f"Prometheus at {query_url} did not answer ({_error_text(exc)}); expected the "
                "Prometheus HTTP API",
                key="--prometheus",
            ) from None


def _error_text(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]


def _connector_from_args(args: argparse.Namespace, scenario: Scenario):
    kube = (args.kube_namespace, args.prefill_deployment, args.decode_deployment)
    if args.dgd is None and not any(kube):
        log.warning("no --kube-namespace/--dgd given: the run is advisory")
        return StaticConnector(scenario), True
    if not all(kube) and args.dgd is None:
        raise ConfigError(
            "--kube-namespace, --prefill-deployment and --decode-deployment go together; "
            f"got namespace={args.kube_namespace!r}, prefill={args.prefill_deployment!r}, "
            f"decode={args.decode_deployment!r}",
            key="--kube-namespace",
        )
    if args.dgd is not None and not (
        args.kube_namespace and args.prefill_deployment and args.decode_deployment
    ):
        raise ConfigError(
            "--dgd needs --kube-namespace and the DGD's service names in "
            "--prefill-deployment and --decode-deployment",
            key="--dgd",
        )
    from live.kubernetes import KubernetesConnector

    conn = KubernetesConnector(
        args.kube_namespace,
        args.prefill_deployment,
        args.decode_deployment,
        mode="dgd" if args.dgd else "deployment",
        dgd_name=args.dgd,
        startup_timeout_s=max(
            600.0, 3 * max(scenario.cluster.prefill.startup_s, scenario.cluster.decode.startup_s)
        ),
    )
    return conn, args.advisory


def load_stack(name: str):
    """live.stacks.NAME, its extra checked (ConfigError naming it) before anything starts."""
    from live.stacks import load_stack as load_module

    module = load_module(name)
    for check in ("require", "check_installed"):
        if callable(getattr(module, check, None)):
            getattr(module, check)()
    return module


async def _stack_main(args, scenario: Scenario, profile, requests) -> LiveOutcome:
    """`--stack NAME`: start live.stacks.NAME (a sync or async context manager) in a
    temporary directory, run, stop it. The directory (the stack's logs) is removed after a
    run that ended, kept after a failure."""
    import inspect
    import shutil
    import tempfile

    start_stack = load_stack(args.stack).start_stack
    accepted = inspect.signature(start_stack).parameters
    options = {"profile": profile}
    if getattr(args, "stack_startup", None):
        options["startup"] = args.stack_startup
    options = {k: v for k, v in options.items() if k in accepted}
    workdir = Path(tempfile.mkdtemp(prefix=f"planlab-{args.stack}-"))
    try:
        async with contextlib.AsyncExitStack() as stack:
            cm = start_stack(scenario, workdir, **options)
            if hasattr(cm, "__aenter__"):
                h = await stack.enter_async_context(cm)
            else:
                # Starting blocks (real processes, seconds to minutes): off the event loop.
                # A Ctrl-C meanwhile cannot stop the thread: let the start finish, then stop.
                entering = asyncio.ensure_future(asyncio.to_thread(cm.__enter__))
                try:
                    h = await asyncio.shield(entering)
                except asyncio.CancelledError:
                    with contextlib.suppress(Exception):
                        await entering
                        await asyncio.to_thread(cm.__exit__, None, None, None)
                    raise
                stack.push_async_callback(asyncio.to_thread, cm.__exit__, None, None, None)
            target = LiveTarget(
                frontend_url=h.frontend_url,
                prometheus_url=h.prometheus_url,
                connector=h.connector,
                model=args.model or h.model,
                metric_names=getattr(h, "metric_names", "dynamo"),
                ignore_eos=getattr(h, "ignore_eos", False),
                stack=args.stack,
            )
            advisory = args.advisory or getattr(h, "advisory", False)
            outcome = await run_live_scenario(
                scenario, target, profile=profile, requests=requests, advisory=advisory
            )
    except BaseException:
        log.warning("the %s stack's logs are kept in %s", args.stack, workdir)
        raise
    shutil.rmtree(workdir, ignore_errors=True)
    return outcome


async def _live_main(args, scenario: Scenario, profile, requests) -> LiveOutcome:
    if getattr(args, "stack", None):
        return await _stack_main(args, scenario, profile, requests)
    if args.emulate:
        from live.emulator.launch import start_emulated_cluster

        async with start_emulated_cluster(scenario, profile=profile, prometheus=True) as h:
            target = LiveTarget(
                frontend_url=h.frontend_url,
                prometheus_url=h.prometheus_url,
                connector=h.connector,
                model=h.model,
                emulated=True,
            )
            return await run_live_scenario(
                scenario, target, profile=profile, requests=requests, advisory=args.advisory
            )
    connector, advisory = _connector_from_args(args, scenario)
    model = args.model
    if model is None:
        model = await asyncio.to_thread(served_model, args.frontend)
    target = LiveTarget(
        frontend_url=args.frontend,
        prometheus_url=args.prometheus,
        connector=connector,
        model=model,
        metric_names=args.metric_names,
        # vLLM's own metric names: a vLLM server, which accepts ignore_eos and min_tokens.
        ignore_eos=args.metric_names == "vllm",
    )
    return await run_live_scenario(
        scenario, target, profile=profile, requests=requests, advisory=advisory
    )


def check_live_args(args: argparse.Namespace) -> None:
    if getattr(args, "stack_startup", None) and not getattr(args, "stack", None):
        raise ConfigError("only applies with --stack NAME", key="--stack-startup")
    if getattr(args, "stack", None):
        clash = [
            f
            for f in ("emulate", "frontend", "prometheus", "kube_namespace", "dgd")
            if getattr(args, f)
        ]
        if clash:
            raise ConfigError(
                f"--stack starts its own frontend, workers and Prometheus; drop "
                f"--{clash[0].replace('_', '-')}",
                key="--stack",
            )
        load_stack(args.stack)  # an unknown name or a missing extra fails here, first
        return
    if args.emulate:
        clash = [f for f in ("frontend", "prometheus", "kube_namespace", "dgd") if getattr(args, f)]
        if clash:
            raise ConfigError(
                f"--emulate starts its own cluster; drop --{clash[0].replace('_', '-')}",
                key="--emulate",
            )
        return
    missing = [f"--{f}" for f in ("frontend", "prometheus") if not getattr(args, f)]
    if missing:
        raise ConfigError(
            f"--live needs {' and '.join(missing)} (or --emulate for a local emulated cluster, "
            "or --stack dynamo)",
            key="--live",
        )


def run_live(args: argparse.Namespace, overrides: dict[str, str] | None = None) -> LiveOutcome:
    """The `--live` branch of `planlab run`: validate, run, write results/<run>/."""
    from planlab.profiles import resolve_model
    from planlab.results import check_out_dir, default_run_dir
    from planlab.results import write_run as write_results
    from planner.policies.base import validate_budget
    from scenario.workload import generate

    check_live_args(args)
    scenario = load_scenario(args.scenario, overrides or None)
    if scenario.workload.closed_loop is not None:
        raise ConfigError(
            "a closed-loop workload cannot be replayed live yet; use arrival or trace",
            source=str(scenario.source) if scenario.source else None,
            key="workload.closed_loop",
        )
    profile = resolve_model(scenario.model)
    cfg = scenario.planner_config()
    validate_budget(cfg)
    requests = generate(scenario.workload, scenario.duration_s, scenario.seed)
    force = bool(getattr(args, "force", False))
    if args.out:
        check_out_dir(args.out, force=force)
    out_dir = (
        Path(args.out)
        if args.out
        else default_run_dir(RESULTS_ROOT, scenario.name, f"{cfg.policy}-live", datetime.now())
    )
    # Ctrl-C lands here as KeyboardInterrupt after asyncio.run has cancelled the tasks and
    # the emulator and Prometheus have stopped; nothing has been written yet.
    outcome = asyncio.run(_live_main(args, scenario, profile, requests))
    path = write_results(
        out_dir,
        outcome.requests,
        outcome.timeline,
        outcome.records,
        outcome.summary,
        scenario,
        replace=force,
        unique=not args.out,
    )
    return LiveOutcome(path, outcome.summary, outcome.requests, outcome.timeline, outcome.records)
