"""`static`: never scales; holds the replica counts it was given (or the current ones)."""

from __future__ import annotations

from planner.observation import Observation
from planner.policies.base import apply_budget, clamp_min_max, register
from planner.types import Decision, PlannerConfig, ReplicaState


@register("static", options=("prefill", "decode"))
class StaticPolicy:
    """Holds `options.prefill` / `options.decode` when given, else the desired counts it
    first sees, so a worker lost to a fault is replaced but load never changes the size."""

    name = "static"

    def __init__(self, cfg: PlannerConfig, profile=None, **_):
        self.cfg = cfg
        self.prefill = cfg.option("prefill")
        self.decode = cfg.option("decode")

    def decide(self, obs: Observation, state: ReplicaState, now_s: float) -> Decision:
        if self.prefill is None:
            self.prefill = state.prefill.desired
        if self.decode is None:
            self.decode = state.decode.desired
        p, d = clamp_min_max(int(self.prefill), int(self.decode), self.cfg)
        p, d, budget_note = apply_budget(p, d, self.cfg)
        reason = f"static policy holds {p} prefill + {d} decode"
        return Decision(
            prefill=p,
            decode=d,
            rule="static",
            reason=reason + (f" ({budget_note})" if budget_note else ""),
        )
