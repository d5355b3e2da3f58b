"""LocalConnector: the planner's Connector port over an EmulatedCluster's worker pools."""

from __future__ import annotations

import asyncio
import logging

from live.emulator.cluster import EmulatedCluster
from planner.types import ReplicaState

log = logging.getLogger(__name__)


class LocalConnector:
    """Scale the emulated cluster like a Kubernetes connector scales Deployments.

    scale() starts workers that become ready after the role's startup delay and drains
    surplus ones (no new work, finish in-flight, stop). Both methods are synchronous as
    the port requires; called from another thread than the cluster's loop they hop onto
    it and wait (up to `call_timeout_s`).
    """

    def __init__(self, cluster: EmulatedCluster, *, call_timeout_s: float = 10.0):
        self.cluster = cluster
        self.call_timeout_s = call_timeout_s

    def _on_loop(self, fn, *args):
        loop = self.cluster.loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is None or running is loop:
            return fn(*args)

        async def call():
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(call(), loop).result(self.call_timeout_s)

    def state(self) -> ReplicaState:
        return self._on_loop(self.cluster.replica_state)

    def scale(self, prefill: int, decode: int) -> bool:
        if prefill < 0 or decode < 0:
            return False

        def apply() -> bool:
            self.cluster.scale_role("prefill", prefill)
            self.cluster.scale_role("decode", decode)
            return True

        log.info("scale to %d prefill, %d decode", prefill, decode)
        return self._on_loop(apply)
