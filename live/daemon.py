"""The long-running planner daemon behind `planlab planner`: the real-time planner loop
against Prometheus and a connector, its own gauges on /metrics, a clean stop on SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import math
import signal
from collections.abc import Callable
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from live.driver import PlannerDriver
from planner.loop import PlannerLoop
from planner.ports import Connector, MetricsSource
from planner.types import ROLES, DecisionRecord, ReplicaState, RoleState

log = logging.getLogger(__name__)


class EmulatorConnector:
    """Read-only Connector over a running emulator's HTTP API (`/health` reports the ready
    workers per role). The emulator has no scaling endpoint, so scale() is refused: use it
    with an advisory daemon."""

    def __init__(self, url: str, *, timeout_s: float = 5.0):
        self.url = url.rstrip("/")
        self._client = httpx.Client(timeout=timeout_s)

    def state(self) -> ReplicaState:
        resp = self._client.get(f"{self.url}/health")
        resp.raise_for_status()
        body = resp.json()
        roles = {}
        for role in ROLES:
            ready = int(body[f"{role}_ready"])
            roles[role] = RoleState(desired=ready, ready=ready)
        return ReplicaState(**roles)

    def scale(self, prefill: int, decode: int) -> bool:
        log.warning("the emulator's HTTP API cannot scale; %dP + %dD not applied", prefill, decode)
        return False

    def close(self) -> None:
        self._client.close()


class PlannerGauges:
    """The daemon's own metrics (its registry, not the process-global one)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.observed = Gauge(
            "planlab_planner_observed_num_req",
            "requests observed in the last planner interval (NaN when missing)",
            registry=r,
        )
        self.predicted = Gauge(
            "planlab_planner_predicted_num_req",
            "requests predicted for the next planner interval (NaN when none)",
            registry=r,
        )
        self.target = Gauge(
            "planlab_planner_target_replicas", "replicas the planner wants", ["role"], registry=r
        )
        self.current = Gauge(
            "planlab_planner_current_replicas",
            "replicas ready when the planner last looked",
            ["role"],
            registry=r,
        )
        self.ticks = Counter(
            "planlab_planner_ticks", "planner ticks by the rule that decided", ["rule"], registry=r
        )
        self.applied = Gauge(
            "planlab_planner_last_applied", "1 when the last target was applied", registry=r
        )
        for role in ROLES:
            self.target.labels(role).set(math.nan)
            self.current.labels(role).set(math.nan)
        self.observed.set(math.nan)
        self.predicted.set(math.nan)

    def update(self, record: DecisionRecord) -> None:
        num_req = record.observation.num_req
        self.observed.set(math.nan if num_req is None else num_req)
        pred = record.decision.prediction.get("num_req")
        self.predicted.set(math.nan if pred is None else float(pred))
        d = record.decision
        for role, target in zip(ROLES, (d.prefill, d.decode), strict=True):
            self.target.labels(role).set(target)
            self.current.labels(role).set(record.current.role(role).ready)
        self.ticks.labels(d.rule).inc()
        self.applied.set(1.0 if record.applied else 0.0)


class PlannerDaemon:
    """Tick every interval until stopped; each record goes to the log, the gauges and,
    with `decisions_path`, one JSON line appended (and flushed) per tick."""

    def __init__(
        self,
        planner: PlannerLoop,
        source: MetricsSource,
        connector: Connector,
        *,
        interval_s: float,
        advisory: bool,
        metrics_address: str = "127.0.0.1",
        metrics_port: int | None = 9091,
        decisions_path: Path | None = None,
        on_record: Callable[[DecisionRecord], None] | None = None,
    ):
        self.gauges = PlannerGauges()
        self.metrics_address = metrics_address
        self.metrics_port = metrics_port
        self.decisions_path = decisions_path
        self.on_record = on_record
        self._file = None
        # Ticks fall on multiples of the interval in Unix time; records carry Unix times.
        self.driver = PlannerDriver(
            planner,
            source,
            connector,
            interval_s=interval_s,
            advisory=advisory,
            t0_epoch=0.0,
            on_record=self._record,
        )
        self._server = None
        self.bound_port: int | None = None

    def _record(self, record: DecisionRecord) -> None:
        self.gauges.update(record)
        if self._file is not None:
            self._file.write(record.to_json() + "\n")
            self._file.flush()
        if self.on_record is not None:
            self.on_record(record)

    def start_metrics(self) -> int | None:
        if self.metrics_port is None:
            return None
        self._server, _ = start_http_server(
            self.metrics_port, addr=self.metrics_address, registry=self.gauges.registry
        )
        self.bound_port = self._server.server_port
        log.info("planner metrics on http://%s:%d/metrics", self.metrics_address, self.bound_port)
        return self.bound_port

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Until `stop` is set or SIGTERM/SIGINT arrives; the metrics server and the
        decisions file are closed on the way out."""
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        handled = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, stop.set)
                handled.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):
                pass  # not the main thread: the caller stops us through `stop`
        if self.decisions_path is not None:
            self.decisions_path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.decisions_path.open("a", encoding="utf-8")
        try:
            if self._server is None:
                self.start_metrics()
            log.info(
                "planner daemon: every %.0f s%s",
                self.driver.interval_s,
                " (advisory: never scales)" if self.driver.advisory else "",
            )
            await self.driver.run(stop)
        finally:
            for sig in handled:
                loop.remove_signal_handler(sig)
            if self._server is not None:
                self._server.shutdown()
                self._server.server_close()
                self._server = None
            if self._file is not None:
                self._file.close()
                self._file = None
            log.info("planner daemon stopped after %d ticks", len(self.driver.records))
