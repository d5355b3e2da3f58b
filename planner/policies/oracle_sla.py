"""`oracle-sla`: replays a per-interval replica schedule found offline (planlab.oracle_search),
the cheapest schedule the search found whose simulated joint attainment meets the SLA.

The schedule says how many replicas of each role must be serving in each interval
`[j * interval_s, (j + 1) * interval_s)`. A replica asked for now serves one startup later,
so at the tick at `now` the policy asks for the most any interval from now through one
startup ahead needs (the same placement as the throughput `oracle`): capacity is bought one
startup before it is needed and held while a later interval within reach still needs it.
Past the schedule's end it asks for the minimum. Min replicas, max replicas and the GPU
budget are applied as in every policy (the search only proposes schedules within them).

The schedule is `planner.options.schedule` (what `planlab oracle` writes into the run's
scenario.yaml) or the `schedule` argument: `{interval_s: S, prefill: [n0, n1, ...],
decode: [m0, m1, ...]}`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from planner.errors import ConfigError
from planner.observation import Observation
from planner.policies.base import (
    apply_budget,
    clamp_min_max,
    numeric_options,
    register,
    validate_budget,
)
from planner.types import ROLES, Decision, PlannerConfig, ReplicaState

KEY = "planner.options.schedule"


@dataclass(frozen=True)
class Schedule:
    """Replicas that must be serving per interval and role (index j covers
    [j * interval_s, (j + 1) * interval_s))."""

    interval_s: float
    prefill: tuple[int, ...]
    decode: tuple[int, ...]

    def role(self, name: str) -> tuple[int, ...]:
        return self.prefill if name == "prefill" else self.decode

    def replace(self, role: str, values: Sequence[int]) -> Schedule:
        vals = tuple(int(v) for v in values)
        if role == "prefill":
            return Schedule(self.interval_s, vals, self.decode)
        return Schedule(self.interval_s, self.prefill, vals)

    def to_dict(self) -> dict[str, Any]:
        return {
            "interval_s": self.interval_s,
            "prefill": list(self.prefill),
            "decode": list(self.decode),
        }

    @staticmethod
    def from_dict(value: Any, key: str = KEY) -> Schedule:
        """Parse and check a schedule mapping; a ConfigError names what is wrong."""
        if isinstance(value, Schedule):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(
                f"got {value!r}; expected a mapping {{interval_s: S, prefill: [...], "
                "decode: [...]}} (written by `planlab oracle SCENARIO`)",
                key=key,
            )
        unknown = set(value) - {"interval_s", "prefill", "decode"}
        if unknown:
            raise ConfigError(
                f"unknown key(s) {sorted(unknown)}; expected interval_s, prefill, decode", key=key
            )
        interval = value.get("interval_s")
        if isinstance(interval, bool) or not isinstance(interval, (int, float)):
            raise ConfigError(f"interval_s {interval!r}: expected seconds > 0", key=key)
        if not math.isfinite(interval) or interval <= 0:
            raise ConfigError(f"interval_s {interval!r}: expected seconds > 0", key=key)
        lists = {}
        for role in ROLES:
            seq = value.get(role)
            if not isinstance(seq, (list, tuple)) or not seq:
                raise ConfigError(
                    f"{role}: got {seq!r}; expected a non-empty list of replica counts", key=key
                )
            for i, n in enumerate(seq):
                if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                    raise ConfigError(
                        f"{role}[{i}] = {n!r}: expected a whole number of replicas >= 0", key=key
                    )
            lists[role] = tuple(seq)
        if len(lists["prefill"]) != len(lists["decode"]):
            raise ConfigError(
                f"prefill has {len(lists['prefill'])} intervals and decode "
                f"{len(lists['decode'])}; expected the same number",
                key=key,
            )
        return Schedule(float(interval), lists["prefill"], lists["decode"])


def lead_intervals(startup_s: float, interval_s: float) -> int:
    """Intervals between asking for a replica and the first interval it serves in full."""
    return max(0, math.ceil(startup_s / interval_s - 1e-9))


def desired_at(schedule: Schedule, role: str, k: int, lead: int, floor: int) -> int:
    """What to ask for at the tick starting interval k: the most that intervals k..k+lead
    need (past the end of the schedule: `floor`)."""
    need = schedule.role(role)
    window = [need[j] for j in range(k, k + lead + 1) if 0 <= j < len(need)]
    return max([floor, *window])


def desired_series(schedule: Schedule, cfg: PlannerConfig) -> dict[str, list[int]]:
    """The replica counts the policy asks for at every tick k = 1..len (index k-1), per role,
    before min/max/budget clamps: what the search checks against the budget."""
    out = {}
    for role, startup in (("prefill", cfg.startup_prefill_s), ("decode", cfg.startup_decode_s)):
        lead = lead_intervals(startup, schedule.interval_s)
        out[role] = [
            desired_at(schedule, role, k, lead, cfg.min_replicas)
            for k in range(1, len(schedule.role(role)) + 1)
        ]
    return out


# schedule: the replayed schedule; search_budget_s: how long `planlab compare` may search
# for one when none is given (planlab.compare), checked here like every option
@register("oracle-sla", options=("schedule", "search_budget_s"))
class OracleSLAPolicy:
    name = "oracle-sla"

    def __init__(self, cfg: PlannerConfig, profile=None, schedule: Any = None, **_):
        validate_budget(cfg)
        numeric_options(
            cfg, {"search_budget_s": 300.0}, {"search_budget_s": (0.0, math.inf, True, False)}
        )
        raw = schedule if schedule is not None else cfg.option("schedule")
        if raw is None:
            raise ConfigError(
                "oracle-sla replays a schedule found offline; expected planner.options.schedule "
                "(run `planlab oracle SCENARIO`, which searches for one and writes its run, "
                "or include oracle-sla in `planlab compare`, which does the same)",
                key="planner.policy",
            )
        self.schedule = Schedule.from_dict(raw)
        self.cfg = cfg
        self.lead = {
            "prefill": lead_intervals(cfg.startup_prefill_s, self.schedule.interval_s),
            "decode": lead_intervals(cfg.startup_decode_s, self.schedule.interval_s),
        }

    def decide(self, obs: Observation, state: ReplicaState, now_s: float) -> Decision:
        cfg = self.cfg
        k = int(math.floor(now_s / self.schedule.interval_s + 1e-9))
        want = {
            role: desired_at(self.schedule, role, k, self.lead[role], cfg.min_replicas)
            for role in ROLES
        }
        p, d = clamp_min_max(want["prefill"], want["decode"], cfg)
        p, d, note = apply_budget(p, d, cfg)
        lines = [
            f"{role}: most needed over intervals {k}..{k + self.lead[role]} = {want[role]}"
            for role in ROLES
        ]
        if note:
            lines.append(note)
        return Decision(
            prefill=p,
            decode=d,
            rule="oracle-sla",
            reason=f"schedule interval {k} -> {p}P + {d}D (" + "; ".join(lines) + ")",
            arithmetic=tuple(lines),
        )
