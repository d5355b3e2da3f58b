"""The real-time planner loop shared by `planlab run --live` and the `planlab planner`
daemon: every interval, window statistics from a MetricsSource, replica state from a
Connector, one PlannerLoop tick, the target applied (unless advisory) and recorded; plus
a timeline sampler that records the connector's state every scrape interval."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from planner.loop import PlannerLoop
from planner.ports import Connector, MetricsSource
from planner.types import ROLES, DecisionRecord, ReplicaState, RoleState

log = logging.getLogger(__name__)


def _fmt(x: float | None, spec: str = ".0f") -> str:
    return "-" if x is None or not math.isfinite(x) else format(x, spec)


def tick_line(record: DecisionRecord) -> str:
    """One log line per tick: what was observed, the state, the target, the rule."""
    o = record.observation
    c = record.current
    d = record.decision
    applied = "applied" if record.applied else "not applied"
    line = (
        f"t={record.t_s:.0f}s num_req={_fmt(o.num_req, '.1f')} isl={_fmt(o.isl_mean)} "
        f"osl={_fmt(o.osl_mean)} ttft={_fmt(o.ttft_mean_ms, '.1f')}ms "
        f"itl={_fmt(o.itl_mean_ms, '.2f')}ms | now P {c.prefill.ready}/{c.prefill.desired} "
        f"D {c.decode.ready}/{c.decode.desired} (ready/desired) -> target P {d.prefill} "
        f"D {d.decode} [{d.rule}] {applied}"
    )
    if o.missing:
        line += f" missing={','.join(o.missing)}"
    if record.note:
        line += f" note: {record.note}"
    return line


class PlannerDriver:
    """Runs PlannerLoop ticks on the wall clock.

    Times in records are seconds from `t0_epoch` (the start of the run), like the
    simulator's; the MetricsSource is asked at the Unix time. Blocking calls (Prometheus,
    Kubernetes) run in threads so the event loop keeps serving the load generator.
    advisory: decide and record, never call connector.scale().
    """

    def __init__(
        self,
        planner: PlannerLoop,
        source: MetricsSource,
        connector: Connector,
        *,
        interval_s: float,
        advisory: bool = False,
        t0_epoch: float | None = None,
        clock: Callable[[], float] = time.time,
        on_record: Callable[[DecisionRecord], None] | None = None,
    ):
        self.planner = planner
        self.source = source
        self.connector = connector
        self.interval_s = float(interval_s)
        self.advisory = advisory
        self.clock = clock
        self.t0_epoch = clock() if t0_epoch is None else t0_epoch
        self.on_record = on_record
        self.records: list[DecisionRecord] = []
        self.scaling_events = 0
        self.last_prediction: dict[str, Any] = {}

    async def tick(self) -> DecisionRecord | None:
        """One tick now; None when the connector could not say the state (logged)."""
        now = self.clock()
        t_s = now - self.t0_epoch
        stats = await asyncio.to_thread(self.source.window, now, self.interval_s)
        stats = dataclasses.replace(stats, t_s=t_s)
        try:
            state = await asyncio.to_thread(self.connector.state)
        except Exception as exc:  # the connector failing must not stop the planner
            log.warning("t=%.0fs tick skipped: connector state failed: %s", t_s, exc)
            return None
        record = self.planner.tick(stats, state, t_s)
        d = record.decision
        if self.advisory:
            record = PlannerLoop.mark_applied(record, False, "advisory: not applied")
        else:
            try:
                ok = bool(await asyncio.to_thread(self.connector.scale, d.prefill, d.decode))
                note = None if ok else "the connector refused the scale request"
            except Exception as exc:
                ok, note = False, f"scale failed: {exc}"
            if ok:
                self.scaling_events += sum(
                    state.role(r).desired != t
                    for r, t in zip(ROLES, (d.prefill, d.decode), strict=True)
                )
            record = PlannerLoop.mark_applied(record, ok, note)
        self.last_prediction = dict(d.prediction)
        self.records.append(record)
        log.info("%s", tick_line(record))
        if self.on_record is not None:
            self.on_record(record)
        return record

    async def run(self, stop: asyncio.Event) -> None:
        """Tick at t0 + k * interval_s (k = 1, 2, ...) until `stop` is set; a slow tick
        skips the ticks it overran instead of bunching them up."""
        k = 1
        while not stop.is_set():
            due = self.t0_epoch + k * self.interval_s
            delay = due - self.clock()
            if delay > 0:
                try:
                    await asyncio.wait_for(stop.wait(), timeout=delay)
                    return
                except TimeoutError:
                    pass
            await self.tick()
            k = max(k + 1, math.floor((self.clock() - self.t0_epoch) / self.interval_s) + 1)


def timeline_row(
    t_s: float,
    state: ReplicaState,
    *,
    request_rate: float | None,
    gpus_per: dict[str, int],
    prediction: dict[str, Any],
    interval_s: float,
) -> dict[str, Any]:
    """A timeline.csv row (planlab.results.TIMELINE_COLUMNS) from one connector state."""
    row: dict[str, Any] = {"t_s": t_s, "request_rate": request_rate}
    gpus = 0
    for role in ROLES:
        rs: RoleState = state.role(role)
        row[f"{role}_desired"] = rs.desired
        row[f"{role}_ready"] = rs.ready
        row[f"{role}_starting"] = rs.starting
        row[f"{role}_draining"] = rs.draining
        gpus += (rs.ready + rs.starting + rs.draining) * gpus_per[role]
    row["gpus"] = gpus
    num_req = prediction.get("num_req")
    ok = num_req is not None and math.isfinite(num_req)
    row["predicted_num_req"] = num_req if ok else None
    row["predicted_rate"] = num_req / interval_s if ok else None
    return row


class TimelineSampler:
    """Samples the connector every `period_s` into timeline rows.

    arrivals_until(t_s) -> int: how many requests the load generator has sent by t_s
    (its own count, not Prometheus'), for the request-rate column.
    """

    def __init__(
        self,
        connector: Connector,
        *,
        period_s: float,
        gpus_per: dict[str, int],
        interval_s: float,
        t0_epoch: float,
        arrivals_until: Callable[[float], int] | None = None,
        prediction: Callable[[], dict[str, Any]] = dict,
        clock: Callable[[], float] = time.time,
    ):
        self.connector = connector
        self.period_s = float(period_s)
        self.gpus_per = gpus_per
        self.interval_s = interval_s
        self.t0_epoch = t0_epoch
        self.arrivals_until = arrivals_until
        self.prediction = prediction
        self.clock = clock
        self.rows: list[dict[str, Any]] = []
        self._last: tuple[float, int] = (0.0, 0)

    async def sample(self) -> dict[str, Any] | None:
        t_s = self.clock() - self.t0_epoch
        try:
            state = await asyncio.to_thread(self.connector.state)
        except Exception as exc:
            log.warning("timeline: connector state failed: %s", exc)
            return None
        rate = None
        if self.arrivals_until is not None:
            n = self.arrivals_until(t_s)
            t_prev, n_prev = self._last
            rate = (n - n_prev) / (t_s - t_prev) if t_s > t_prev else None
            self._last = (t_s, n)
        row = timeline_row(
            t_s,
            state,
            request_rate=rate,
            gpus_per=self.gpus_per,
            prediction=self.prediction(),
            interval_s=self.interval_s,
        )
        self.rows.append(row)
        return row

    async def run(self, stop: asyncio.Event) -> None:
        k = 1
        while not stop.is_set():
            delay = self.t0_epoch + k * self.period_s - self.clock()
            if delay > 0:
                try:
                    await asyncio.wait_for(stop.wait(), timeout=delay)
                    break
                except TimeoutError:
                    pass
            await self.sample()
            k = max(k + 1, math.floor((self.clock() - self.t0_epoch) / self.period_s) + 1)
        await self.sample()  # the state at the end of the run


def gpu_seconds(rows: list[dict[str, Any]], gpus_per: dict[str, int]) -> dict[str, dict]:
    """GPU-seconds per role from timeline rows: each row's replicas held until the next row
    (starting -> startup, ready -> serving, draining -> drain), from t=0."""
    out = {role: {"startup": 0.0, "serving": 0.0, "drain": 0.0} for role in ROLES}
    prev_t = 0.0
    for i, row in enumerate(rows):
        # The first row's state is taken to hold from t=0 (the run starts in that state).
        start = prev_t if i else 0.0
        end = row["t_s"]
        held_from = rows[i - 1] if i else row
        dt = max(0.0, end - start)
        for role in ROLES:
            g = gpus_per[role]
            out[role]["startup"] += held_from[f"{role}_starting"] * g * dt
            out[role]["serving"] += held_from[f"{role}_ready"] * g * dt
            out[role]["drain"] += held_from[f"{role}_draining"] * g * dt
        prev_t = end
    return out
