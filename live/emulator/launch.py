"""Start and stop a whole emulated cluster (workers, frontend, optional Prometheus) as one unit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass

from live.emulator.cluster import EmulatedCluster
from live.emulator.connector import LocalConnector
from live.emulator.frontend import DEFAULT_MODEL, Frontend
from live.emulator.prometheus_server import PrometheusServer
from live.emulator.tokens import PromptCounter
from planner.errors import ConfigError
from scenario import Scenario

log = logging.getLogger(__name__)


@dataclass
class EmulatorHandle:
    """What a running emulated cluster offers to its user."""

    frontend_url: str  # http://127.0.0.1:PORT (OpenAI base URL is frontend_url + "/v1")
    metrics_url: str
    prometheus_url: str | None
    connector: LocalConnector
    cluster: EmulatedCluster
    frontend: Frontend
    model: str


def scenario_profile(scenario: Scenario, profile=None):
    """`profile` when given, else the scenario's analytic profile; a scenario whose model is
    a profile directory must be loaded by the caller (live/ reads no profile files)."""
    if profile is not None:
        return profile
    spec = scenario.model
    if spec.analytic is None:
        raise ConfigError(
            "the scenario's model is a profile directory: load it first and pass "
            "profile=planlab.profiles.resolve_model(scenario.model)",
            source=str(scenario.source) if scenario.source else None,
            key="model.profile",
        )
    from planner.analytic import analytic_profile

    a = spec.analytic
    return analytic_profile(a.model, a.gpu, dtype=a.dtype, tp=a.tp, ep=a.ep)


def _timing_for(source, profile, scenario: Scenario | None):
    """An EngineTiming (or any object with the Timing methods) for the source given."""
    if hasattr(source, "decode_step_s") and hasattr(source, "prefill_step_s"):
        return source
    from sim.timing import EngineTiming

    kv = {}
    if scenario is not None:
        kv = {
            "bandwidth_gbps": scenario.cluster.kv_transfer.bandwidth_gbps,
            "latency_ms": scenario.cluster.kv_transfer.latency_ms,
        }
        profile = scenario_profile(scenario, profile)
    else:
        profile = profile or source
    return EngineTiming(profile, **kv)


@contextlib.asynccontextmanager
async def start_emulated_cluster(
    source,
    *,
    profile=None,
    port: int = 0,
    prometheus: bool = False,
    prometheus_port: int = 0,
    scrape_interval_s: float | None = None,
    prefill: int | None = None,
    decode: int | None = None,
    startup_s: dict[str, float] | None = None,
    speedup: float = 1.0,
    model: str | None = None,
    router: str | None = None,
    tokenizer=None,
    max_kv_tokens: int | None = None,
) -> AsyncIterator[EmulatorHandle]:
    """Run an emulated cluster on the current loop for the body of an `async with`.

    source: a Scenario (its cluster section sets replicas, startup delays, batch limits,
    KV transfer and router; its model section the profile, unless `profile` is given),
    a PerfProfile, or a timing object (e.g. workers.FixedTiming). Keyword arguments
    override the scenario. prometheus=True also starts a real Prometheus scraping the
    frontend every scrape_interval_s (default: the scenario's, else 1 s). model: the
    served model id (default: the analytic model's name, else "planlab-emulated");
    tokenizer: a Hugging Face tokenizer directory (or a tokens.PromptCounter) to count
    input tokens with; max_kv_tokens: a decode worker's KV capacity (default: the
    profile's).
    """
    scenario = source if isinstance(source, Scenario) else None
    timing = _timing_for(source, profile, scenario)
    options: dict = {}
    if scenario is not None:
        c = scenario.cluster
        options = {
            "prefill_replicas": c.prefill.replicas,
            "decode_replicas": c.decode.replicas,
            "prefill_startup_s": c.prefill.startup_s,
            "decode_startup_s": c.decode.startup_s,
            "router": c.router,
        }
        if c.prefill.max_batch_tokens:
            options["max_batch_tokens"] = c.prefill.max_batch_tokens
        if c.prefill.max_num_seqs:
            options["prefill_max_num_seqs"] = c.prefill.max_num_seqs
        if c.decode.max_num_seqs:
            options["max_num_seqs"] = c.decode.max_num_seqs
        if scrape_interval_s is None:
            scrape_interval_s = scenario.prometheus.scrape_interval_s
        if model is None and scenario.model.analytic is not None:
            model = scenario.model.analytic.model
    if prefill is not None:
        options["prefill_replicas"] = prefill
    if decode is not None:
        options["decode_replicas"] = decode
    for role, seconds in (startup_s or {}).items():
        options[f"{role}_startup_s"] = seconds
    if router is not None:
        options["router"] = router
    if max_kv_tokens is not None:
        options["max_kv_tokens"] = max_kv_tokens
    model = model or DEFAULT_MODEL
    if tokenizer is not None and not isinstance(tokenizer, PromptCounter):
        tokenizer = PromptCounter(tokenizer)

    cluster = EmulatedCluster(timing, speedup=speedup, **options)
    await cluster.start()
    frontend = Frontend(cluster, model=model, tokenizer=tokenizer)
    prom: PrometheusServer | None = None
    try:
        url = await frontend.start(port)
        prom_url = None
        if prometheus:
            prom = PrometheusServer(
                [f"127.0.0.1:{frontend.port}"],
                scrape_interval_s=scrape_interval_s or 1.0,
                port=prometheus_port,
            )
            prom_url = await asyncio.to_thread(prom.start)
        yield EmulatorHandle(
            frontend_url=url,
            metrics_url=f"{url}/metrics",
            prometheus_url=prom_url,
            connector=LocalConnector(cluster),
            cluster=cluster,
            frontend=frontend,
            model=model,
        )
    finally:
        if prom is not None:
            await asyncio.to_thread(prom.stop)
        # The cluster first: it ends every request still held, so the frontend's
        # handlers return and its shutdown does not wait on them.
        await cluster.stop()
        await frontend.stop()


class EmulatorThread:
    """start_emulated_cluster on its own event loop in a daemon thread, for sync callers.

    `with EmulatorThread(profile, prometheus=True) as handle: ...`; the handle's
    connector may be called from the caller's thread.
    """

    def __init__(self, source, **kwargs):
        self._source = source
        self._kwargs = kwargs
        self.handle: EmulatorHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="planlab-emulator", daemon=True)

    def _main(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            async with start_emulated_cluster(self._source, **self._kwargs) as handle:
                self.handle = handle
                self._started.set()
                await self._stop.wait()
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
            self._started.set()

    def __enter__(self) -> EmulatorHandle:
        self._thread.start()
        self._started.wait()
        if self._error is not None:
            raise self._error
        return self.handle

    def __exit__(self, *exc) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)
