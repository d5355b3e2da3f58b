"""AdvisoryConnector: the Connector port over a serving stack planlab cannot scale (one bare
vLLM server, any OpenAI-compatible frontend without a scaling API).

state() reports the configured replicas as ready while the server's health endpoint
answers 200, and as 0 ready (desired unchanged) while it does not, so a dead server shows
in timeline.csv and the planner's state instead of being assumed up. scale() never
scales: it records the target it was asked for (`requested`, and a log line) and returns
False, so a driver that is not advisory still marks the tick "not applied".

One aggregated server does both roles: it is reported as `prefill` ready replicas and
`decode` ready replicas (1 and 1 by default), so GPU-hours count it once per role.
"""

from __future__ import annotations

import logging

import httpx

from planner.types import ReplicaState, RoleState

log = logging.getLogger(__name__)


class AdvisoryConnector:
    def __init__(
        self,
        health_url: str | None,
        *,
        prefill: int = 1,
        decode: int = 1,
        timeout_s: float = 2.0,
        transport: httpx.BaseTransport | None = None,
    ):
        if prefill < 0 or decode < 0:
            raise ValueError(f"replicas must be >= 0, got prefill={prefill}, decode={decode}")
        self.health_url = health_url
        self.replicas = {"prefill": prefill, "decode": decode}
        self.requested: list[tuple[int, int]] = []
        self._client = httpx.Client(timeout=timeout_s, transport=transport)

    def healthy(self) -> bool:
        """True when there is no health URL, or it answers 200."""
        if self.health_url is None:
            return True
        try:
            return self._client.get(self.health_url).status_code == 200
        except httpx.HTTPError as exc:
            log.warning("advisory connector: %s unreachable: %s", self.health_url, exc)
            return False

    def state(self) -> ReplicaState:
        up = self.healthy()
        roles = {
            role: RoleState(desired=n, ready=n if up else 0) for role, n in self.replicas.items()
        }
        return ReplicaState(**roles)

    def scale(self, prefill: int, decode: int) -> bool:
        self.requested.append((int(prefill), int(decode)))
        if (prefill, decode) != (self.replicas["prefill"], self.replicas["decode"]):
            log.info(
                "advisory: the planner wants %d prefill, %d decode; the stack cannot scale "
                "(stays %d + %d)",
                prefill,
                decode,
                self.replicas["prefill"],
                self.replicas["decode"],
            )
        return False

    def close(self) -> None:
        self._client.close()
