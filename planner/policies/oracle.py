"""`oracle`: offline, sees the whole workload in advance; a lower bound on GPU-hours.

Per interval and role it asks for the fewest replicas whose SLA-feasible throughput (from
the profile, at that interval's actual mean ISL/OSL) covers the demand of that interval,
placed one startup time ahead. It plans on throughput alone, with no headroom for queueing
or bursts, so its GPU-hours bound any policy from below; its attainment is not a target.

Options `prefill_utilisation` and `decode_utilisation` (default 1) plan each role at that
share of its throughput instead: the same perfect knowledge with uniform headroom, a ladder
of schedules that shows how many GPU-hours a known future needs to meet the SLA at all.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from planner.errors import ConfigError
from planner.observation import Observation
from planner.policies.base import (
    Bounds,
    apply_budget,
    clamp_min_max,
    numeric_options,
    register,
    validate_budget,
)
from planner.profile import PerfProfile
from planner.types import Decision, PlannerConfig, ReplicaState


@register("oracle", options=("prefill_utilisation", "decode_utilisation"))
class OraclePolicy:
    name = "oracle"

    def __init__(self, cfg: PlannerConfig, profile: PerfProfile, requests: Any = None, **_):
        validate_budget(cfg)
        if requests is None:
            raise ConfigError(
                "the oracle needs the whole workload in advance (an open-loop or trace workload);"
                " a closed-loop workload cannot be known ahead",
                key="planner.policy",
            )
        self.cfg = cfg
        self.profile = profile
        share: Bounds = (0.0, 1.0, True, False)
        opt = numeric_options(
            cfg,
            {"prefill_utilisation": 1.0, "decode_utilisation": 1.0},
            {"prefill_utilisation": share, "decode_utilisation": share},
        )
        self.utilisation = {role: opt[f"{role}_utilisation"] for role in ("prefill", "decode")}
        order = np.argsort(requests.arrival_s, kind="stable")
        self.arrival_s = np.asarray(requests.arrival_s, dtype=float)[order]
        isl = np.asarray(requests.isl, dtype=float)[order]
        osl = np.asarray(requests.osl, dtype=float)[order]
        self.cum_isl = np.concatenate(([0.0], np.cumsum(isl)))
        self.cum_osl = np.concatenate(([0.0], np.cumsum(osl)))

    def need(self, t0: float, t1: float) -> tuple[int, int, dict[str, float]]:
        """Replicas whose SLA-feasible throughput covers the requests arriving in [t0, t1)."""
        cfg, prof = self.cfg, self.profile
        i0, i1 = np.searchsorted(self.arrival_s, [t0, t1], side="left")
        n = int(i1 - i0)
        if n == 0:
            return cfg.min_replicas, cfg.min_replicas, {"num_req": 0.0}
        span = t1 - t0
        isl = (self.cum_isl[i1] - self.cum_isl[i0]) / n
        osl = (self.cum_osl[i1] - self.cum_osl[i0]) / n
        prefill_tps = n * isl / span
        decode_tps = n * osl / span
        p_cap = float(prof.prefill_thpt_per_gpu_at(isl)) * cfg.gpus_per_prefill
        d_cap = (
            float(prof.best_decode_throughput_per_gpu(cfg.itl_ms, isl + osl / 2))
            * cfg.gpus_per_decode
        )
        p = max(cfg.min_replicas, math.ceil(prefill_tps / (p_cap * self.utilisation["prefill"])))
        d = max(cfg.min_replicas, math.ceil(decode_tps / (d_cap * self.utilisation["decode"])))
        return (
            p,
            d,
            {
                "num_req": float(n),
                "isl": isl,
                "osl": osl,
                "prefill_tokens_per_s": prefill_tps,
                "decode_tokens_per_s": decode_tps,
            },
        )

    def decide(self, obs: Observation, state: ReplicaState, now_s: float) -> Decision:
        cfg = self.cfg
        interval = cfg.interval_s
        # Replicas asked for now serve from now + startup; those released now are gone now.
        # So cover every interval from now through one startup time plus one interval ahead.
        p = d = cfg.min_replicas
        lines = []
        for role_start, role in (
            (cfg.startup_prefill_s, "prefill"),
            (cfg.startup_decode_s, "decode"),
        ):
            bins = max(1, math.ceil((role_start + interval) / interval))
            best = cfg.min_replicas
            for k in range(bins):
                np_, nd, _ = self.need(now_s + k * interval, now_s + (k + 1) * interval)
                best = max(best, np_ if role == "prefill" else nd)
            lines.append(f"{role}: max need over the next {bins} interval(s) = {best}")
            if role == "prefill":
                p = best
            else:
                d = best
        _, _, demand = self.need(now_s, now_s + interval)
        p, d = clamp_min_max(p, d, cfg)
        p, d, budget_note = apply_budget(p, d, cfg)
        if budget_note:
            lines.append(budget_note)
        return Decision(
            prefill=p,
            decode=d,
            rule="oracle",
            reason=f"known future demand -> {p}P + {d}D (" + "; ".join(lines) + ")",
            prediction={k: demand.get(k) for k in ("num_req", "isl", "osl")},
            demand={k: demand.get(k) for k in ("prefill_tokens_per_s", "decode_tokens_per_s")},
            arithmetic=tuple(lines),
        )
