"""`threshold`: the reactive autoscaler users know from Kubernetes' HPA and Knative.

Per role: desired = ceil(current * observed / target) on a utilisation signal, skipped
inside a tolerance band; scale-up at once, scale-down to the highest recommendation of a
stabilization window; step limits per tick. The HPA algorithm and its defaults (10%
tolerance, 300 s scale-down stabilization) are from the Kubernetes docs, "Horizontal Pod
Autoscaling", algorithm details.

Signals, both from frontend metrics only (what an HPA on custom metrics would read):
- prefill: busy fraction = observed prefill tokens/s / (ready x profile tokens/s per replica);
- decode: KV usage per ready worker = (in-flight decode requests by Little's law:
  num_req x mean duration / interval) x context / (ready x max_kv_tokens).
"""

from __future__ import annotations

import math
from collections import deque

from planner.observation import Observation
from planner.policies.base import (
    apply_budget,
    clamp_min_max,
    hold,
    numeric_options,
    register,
    validate_budget,
)
from planner.profile import PerfProfile
from planner.types import Decision, PlannerConfig, ReplicaState

DEFAULTS = {
    "prefill_target": 0.7,  # busy fraction per prefill replica
    # KV usage per decode replica; 0 means "80% of the KV usage at which the profile's ITL
    # reaches the SLA" (where a user would put an HPA target after reading the profile).
    "decode_target": 0.0,
    "tolerance": 0.1,
    "scale_down_window_s": 300.0,
    "max_step_up": 4,  # replicas added per tick at most (HPA: max(4, 100%) per 15 s)
    "max_step_up_fraction": 1.0,
    "max_step_down_fraction": 1.0,
}

BOUNDS = {
    "prefill_target": (0.0, 1.0, True, False),
    "decode_target": (0.0, 1.0, False, False),
    "tolerance": (0.0, 1.0, False, True),
}


@register("threshold", options=tuple(DEFAULTS))
class ThresholdPolicy:
    name = "threshold"

    def __init__(self, cfg: PlannerConfig, profile: PerfProfile, **_):
        validate_budget(cfg)
        self.cfg = cfg
        self.profile = profile
        self.opt = numeric_options(cfg, DEFAULTS, BOUNDS)
        self.history: dict[str, deque[tuple[float, int]]] = {"prefill": deque(), "decode": deque()}
        self.context = 1000.0  # last observed context (ISL + OSL/2), for the decode target

    def _signals(self, obs: Observation, state: ReplicaState) -> dict[str, float]:
        prof, cfg = self.profile, self.cfg
        interval = obs.interval_s
        prefill_tps = obs.num_req * obs.isl_mean / interval
        per_replica = float(prof.prefill_thpt_per_gpu_at(obs.isl_mean)) * cfg.gpus_per_prefill
        p_busy = prefill_tps / (max(1, state.prefill.ready) * per_replica)
        inflight = obs.num_req * obs.request_duration_mean_s / interval
        context = obs.isl_mean + obs.osl_mean / 2
        d_kv = inflight * context / (max(1, state.decode.ready) * prof.max_kv_tokens)
        self.context = context
        return {"prefill": p_busy, "decode": d_kv}

    def _target(self, role: str) -> float:
        target = self.opt[f"{role}_target"]
        if role == "decode" and target <= 0:
            _, _, kv_at_sla = self.profile.best_decode_point(self.cfg.itl_ms, self.context)
            target = max(0.05, 0.8 * kv_at_sla)
        return target

    def _recommend(self, role: str, current: int, observed: float, now_s: float) -> tuple[int, str]:
        target = self._target(role)
        ratio = observed / target
        if abs(ratio - 1.0) <= self.opt["tolerance"]:
            raw = current
        else:
            raw = math.ceil(current * ratio)
        hist = self.history[role]
        if not hist:
            hist.append((now_s, current))  # the starting size, as the HPA starts from it
        hist.append((now_s, raw))
        window = self.opt["scale_down_window_s"]
        while hist and hist[0][0] < now_s - window:
            hist.popleft()
        # Scale up at once; scale down only to the highest recommendation in the window.
        stabilized = raw if raw >= current else max(r for _, r in hist)
        up_cap = current + max(
            self.opt["max_step_up"], math.ceil(current * self.opt["max_step_up_fraction"])
        )
        down_cap = current - max(1, math.floor(current * self.opt["max_step_down_fraction"]))
        final = int(min(max(stabilized, down_cap), up_cap))
        why = f"{role} {observed:.2f} vs target {target:.2f}: raw {raw}, stabilized {stabilized} -> {final}"
        return final, why

    def decide(self, obs: Observation, state: ReplicaState, now_s: float) -> Decision:
        cfg = self.cfg
        if obs.num_req is None or (not obs.idle and obs.missing):
            what = "num_req" if obs.num_req is None else ", ".join(obs.missing)
            return hold(
                state, cfg, "hold-missing", f"{what} missing: holding (HPA skips the metric)"
            )
        if obs.idle:
            signals = {"prefill": 0.0, "decode": 0.0}
        else:
            signals = self._signals(obs, state)
        p, p_why = self._recommend("prefill", state.prefill.desired, signals["prefill"], now_s)
        d, d_why = self._recommend("decode", state.decode.desired, signals["decode"], now_s)
        p, d = clamp_min_max(p, d, cfg)
        p, d, budget_note = apply_budget(p, d, cfg)
        reason = f"{p_why}; {d_why}" + (f"; {budget_note}" if budget_note else "")
        return Decision(
            prefill=p,
            decode=d,
            rule="idle" if obs.idle else "scale",
            reason=reason,
            demand={"prefill_busy": signals["prefill"], "decode_kv_usage": signals["decode"]},
            arithmetic=(p_why, d_why) + ((budget_note,) if budget_note else ()),
        )
