"""Replica state, planner configuration, decisions and the per-tick DecisionRecord."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from planner.observation import Observation

ROLES = ("prefill", "decode")


@dataclass(frozen=True)
class RoleState:
    """One role's replicas as the connector sees them.

    desired: the replica count last requested; ready: serving; starting: requested
    but not ready yet (pending, pulling, loading); draining: finishing in-flight work
    before release; stuck: starting for longer than the connector's timeout;
    startup_s: the observed decision-to-ready times, most recent last.
    """

    desired: int
    ready: int
    starting: int = 0
    draining: int = 0
    stuck: int = 0
    startup_s: tuple[float, ...] = ()

    @property
    def startup_estimate_s(self) -> float | None:
        if not self.startup_s:
            return None
        recent = sorted(self.startup_s[-5:])
        return recent[len(recent) // 2]


@dataclass(frozen=True)
class ReplicaState:
    prefill: RoleState
    decode: RoleState
    # Set by a connector that saw someone else change a replica count since its last write.
    external_change: str | None = None

    def role(self, name: str) -> RoleState:
        return getattr(self, name)


@dataclass(frozen=True)
class PlannerConfig:
    """Everything a policy needs besides the profile. Seconds unless a name says otherwise."""

    policy: str = "dynamo"
    interval_s: float = 180.0
    ttft_ms: float = 500.0
    itl_ms: float = 50.0
    target_attainment: float = 0.99
    predictor: str = "arima"
    predictor_options: tuple[tuple[str, Any], ...] = ()
    max_gpu_budget: int | None = None
    min_replicas: int = 1
    max_replicas: int | None = None
    gpus_per_prefill: int = 1
    gpus_per_decode: int = 1
    correction: bool = True
    startup_prefill_s: float = 0.0
    startup_decode_s: float = 0.0
    # Link between prefill and decode (KV cache transfer), when the policy should count it.
    kv_bandwidth_gbps: float | None = None
    kv_latency_ms: float = 0.0
    # Engine limits a policy may size with (vLLM's max_num_batched_tokens and max_num_seqs
    # of each role); None: the policy's own default (Dynamo 1.6: 8192 and 256).
    prefill_max_batch_tokens: int | None = None
    prefill_max_num_seqs: int | None = None
    decode_max_num_seqs: int | None = None
    # Policy-specific settings (threshold, slaplan, static counts), as (key, value) pairs.
    options: tuple[tuple[str, Any], ...] = ()

    def option(self, key: str, default: Any = None) -> Any:
        return dict(self.options).get(key, default)

    def gpus(self, prefill: int, decode: int) -> int:
        return prefill * self.gpus_per_prefill + decode * self.gpus_per_decode


@dataclass(frozen=True)
class Decision:
    """What a policy wants, and why. `rule` is a short tag (scale, idle, hold-missing, ...);
    `reason` the same in words; `arithmetic` the formulas with numbers, one per line."""

    prefill: int
    decode: int
    rule: str
    reason: str
    prediction: dict[str, float | None] = field(default_factory=dict)
    demand: dict[str, float | None] = field(default_factory=dict)
    capacity: dict[str, float | None] = field(default_factory=dict)
    expected_ttft_ms: float | None = None
    expected_itl_ms: float | None = None
    arithmetic: tuple[str, ...] = ()


def _clean(value: Any) -> Any:
    """JSON-safe: NaN and infinities become null; tuples become lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


@dataclass(frozen=True)
class DecisionRecord:
    """One planner tick, identical in sim and live; one JSON object per line."""

    t_s: float
    policy: str
    observation: Observation
    decision: Decision
    current: ReplicaState
    applied: bool
    note: str | None = None

    def to_dict(self) -> dict:
        d = self.decision
        cur = self.current
        return _clean(
            {
                "t_s": self.t_s,
                "policy": self.policy,
                "observation": self.observation.to_dict(),
                "prediction": d.prediction,
                "demand": d.demand,
                "capacity": d.capacity,
                "current": {
                    "prefill": asdict(cur.prefill),
                    "decode": asdict(cur.decode),
                    "external_change": cur.external_change,
                },
                "target": {"prefill": d.prefill, "decode": d.decode},
                "rule": d.rule,
                "reason": d.reason,
                "expected_ttft_ms": d.expected_ttft_ms,
                "expected_itl_ms": d.expected_itl_ms,
                "arithmetic": list(d.arithmetic),
                "applied": self.applied,
                "note": self.note,
            }
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=False, separators=(",", ":"))
