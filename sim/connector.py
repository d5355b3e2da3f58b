"""SimConnector: the planner's Connector port over the simulated worker pools, with cold
start, graceful drain, fault replacement and GPU-second accounting.

Like a Kubernetes Deployment it is level-triggered: `desired` is what was asked for, and
`reconcile` starts or stops workers until the live (starting + ready) count matches it.
A worker that dies is replaced at once by reconcile (the ReplicaSet controller's job),
paying the full startup time; `desired` does not change.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

import numpy as np

from planner.types import ReplicaState, RoleState
from sim.engine import (
    CANCELLED,
    DRAINING,
    READY,
    STARTING,
    DecodeWorker,
    EngineHost,
    PrefillWorker,
    Req,
    Worker,
)

if TYPE_CHECKING:
    from scenario import RoleSpec

log = logging.getLogger(__name__)

ROLES = ("prefill", "decode")


class RolePool:
    """The workers of one role: those alive (starting, ready, draining) and all ever made."""

    def __init__(self, role: str, spec: RoleSpec):
        self.role = role
        self.spec = spec
        self.desired = spec.replicas
        self.alive: list[Worker] = []
        self.all: list[Worker] = []
        self.startup_observed: list[float] = []
        self.next_id = 0

    def count(self, state: str) -> int:
        return sum(1 for w in self.alive if w.state == state)

    def accepting(self) -> list[Worker]:
        return [w for w in self.alive if w.state == READY]


class PoolHost(EngineHost, Protocol):
    """What the connector is handed by the simulation: the engine port its workers get,
    the engine limits, and the callbacks for a worker that became ready or was lost."""

    prefill_budget: int
    max_skip_steps: int
    max_skip_s: float

    def on_worker_ready(self, w: Worker) -> None: ...

    def on_worker_lost(self, w: Worker, reqs: list[Req]) -> None: ...


class SimConnector:
    """Implements planner.ports.Connector on the simulation's clock."""

    def __init__(self, sim: PoolHost, specs: dict[str, RoleSpec], rng: np.random.Generator):
        self.sim = sim
        self.env = sim.env
        self.rng = rng
        self.pools = {role: RolePool(role, specs[role]) for role in ROLES}
        self.scaling_events = 0
        self.ready_changed = True  # the frontend refreshes its routing lists when set

    # -- the Connector port --------------------------------------------------------

    def state(self) -> ReplicaState:
        def role_state(pool: RolePool) -> RoleState:
            return RoleState(
                desired=pool.desired,
                ready=pool.count(READY),
                starting=pool.count(STARTING),
                draining=pool.count(DRAINING),
                stuck=self._stuck(pool),
                startup_s=tuple(pool.startup_observed[-20:]),
            )

        return ReplicaState(
            prefill=role_state(self.pools["prefill"]), decode=role_state(self.pools["decode"])
        )

    def _stuck(self, pool: RolePool) -> int:
        """Workers starting for longer than the role's startup timeout."""
        timeout = pool.spec.startup_timeout_s or 3.0 * pool.spec.startup_s
        now = self.env.now
        return sum(1 for w in pool.alive if w.state == STARTING and now - w.t_requested > timeout)

    def scale(self, prefill: int, decode: int) -> bool:
        for role, n in (("prefill", prefill), ("decode", decode)):
            pool = self.pools[role]
            if n != pool.desired:
                self.scaling_events += 1
                log.debug("t=%.1f scale %s %d -> %d", self.env.now, role, pool.desired, n)
            pool.desired = max(0, int(n))
            self.reconcile(role)
        return True

    # -- lifecycle -----------------------------------------------------------------

    def start_initial(self) -> None:
        for role in ROLES:
            pool = self.pools[role]
            for _ in range(pool.desired):
                self._new_worker(pool, ready=True)

    def reconcile(self, role: str) -> None:
        pool = self.pools[role]
        live = [w for w in pool.alive if w.state in (STARTING, READY)]
        if len(live) < pool.desired:
            for _ in range(pool.desired - len(live)):
                self._new_worker(pool, ready=False)
        elif len(live) > pool.desired:
            excess = len(live) - pool.desired
            # Starting workers first: they cost GPU time and serve nothing yet. Among them
            # those that will never be ready go first, then the newest (as a ReplicaSet
            # deletes pending pods before running ones, newer before older).
            starting = sorted(
                (w for w in live if w.state == STARTING), key=lambda w: (not w.never_ready, -w.wid)
            )
            for w in starting[:excess]:
                self._cancel(w)
            excess -= min(excess, len(starting))
            ready = sorted((w for w in live if w.state == READY), key=lambda w: (w.load, w.wid))
            for w in ready[:excess]:
                w.drain()
                self.ready_changed = True

    def _new_worker(self, pool: RolePool, ready: bool) -> Worker:
        sim = self.sim
        wid = pool.next_id
        pool.next_id += 1
        if pool.role == "prefill":
            w = PrefillWorker(
                sim, wid, self.env.now, ready, sim.prefill_budget, pool.spec.max_num_seqs
            )
        else:
            w = DecodeWorker(
                sim,
                wid,
                self.env.now,
                ready,
                sim.timing.max_kv_tokens,
                pool.spec.max_num_seqs,
                sim.max_skip_steps,
                sim.max_skip_s,
            )
        pool.alive.append(w)
        pool.all.append(w)
        if ready:
            self.ready_changed = True
        elif pool.spec.stuck_probability and self.rng.random() < pool.spec.stuck_probability:
            # Never ready: it holds its GPUs (counted as startup) until cancelled.
            w.never_ready = True
        else:
            delay = pool.spec.startup_s
            if pool.spec.startup_jitter_s > 0:
                j = pool.spec.startup_jitter_s
                delay = max(0.0, delay + float(self.rng.uniform(-j, j)))
            self.env.call_later(delay, self._on_ready, w)
        return w

    def _on_ready(self, w: Worker) -> None:
        if w.state != STARTING:
            return  # cancelled while starting
        w.state = READY
        w.t_ready = self.env.now
        pool = self.pools[w.role]
        pool.startup_observed.append(w.t_ready - w.t_requested)
        self.ready_changed = True
        self.sim.on_worker_ready(w)

    def _cancel(self, w: Worker) -> None:
        w.state = CANCELLED
        w.t_end = self.env.now
        self.pools[w.role].alive.remove(w)

    def on_gone(self, w: Worker) -> None:
        """A worker finished draining (released) or died."""
        pool = self.pools[w.role]
        if w in pool.alive:
            pool.alive.remove(w)
        self.ready_changed = True

    def kill_one(self, role: str) -> Worker | None:
        """Fault injection: a random ready worker of `role` dies; a replacement starts."""
        pool = self.pools[role]
        ready = pool.accepting()
        if not ready:
            return None
        w = ready[int(self.rng.integers(len(ready)))]
        lost = w.kill()
        self.on_gone(w)
        self.sim.on_worker_lost(w, lost)
        self.reconcile(role)
        return w

    # -- accounting ----------------------------------------------------------------

    def gpu_seconds(self, end_s: float) -> dict[str, dict[str, float]]:
        """GPU-seconds per role from each scale decision to the end of its drain (or its
        death, or end_s for workers still alive), split into startup, serving and drain."""
        out = {}
        for role, pool in self.pools.items():
            gpus = pool.spec.gpus_per_replica
            startup = serving = drain = 0.0
            for w in pool.all:
                end = w.t_end if w.t_end is not None else end_s
                if w.t_ready is None:
                    startup += end - w.t_requested
                    continue
                startup += w.t_ready - w.t_requested
                if w.t_drain is None:
                    serving += end - w.t_ready
                else:
                    serving += w.t_drain - w.t_ready
                    drain += end - w.t_drain
            out[role] = {
                "startup": startup * gpus,
                "serving": serving * gpus,
                "drain": drain * gpus,
                "total": (startup + serving + drain) * gpus,
            }
        return out

    def gpus_in_use(self) -> int:
        return sum(len(pool.alive) * pool.spec.gpus_per_replica for pool in self.pools.values())
