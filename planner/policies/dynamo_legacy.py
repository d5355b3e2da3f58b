"""`dynamo-legacy`: the planner of Dynamo's original SLA deployment guide (the SLA planner
planlab started from, before Dynamo 1.6; `dynamo` is 1.6's): table-lookup throughput per GPU,
p_corr/d_corr correction from observed TTFT/ITL, demand from finished requests.

Formulas follow Dynamo's planner_core (components/planner/src/dynamo/planner/utils/
planner_core.py, Apache-2.0): prefill sized from predicted prefill tokens/s over the
profile's throughput at the predicted ISL, scaled by min(1, TTFT correction); decode sized
from predicted output tokens/s over the best decode throughput per GPU that meets the
(corrected) ITL target at context ISL + OSL/2. Two deliberate differences, both recorded in
the decision: a budget below the minimum is rejected at load time (Dynamo yields 0
replicas), and missing metrics hold the current size with a stated rule (Dynamo logs and
skips silently).
"""

from __future__ import annotations

import math

from planner.observation import Observation
from planner.policies.base import apply_budget, clamp_min_max, hold, register, validate_budget
from planner.predictors import make_predictor
from planner.profile import PerfProfile
from planner.types import Decision, PlannerConfig, ReplicaState


@register("dynamo-legacy")
class DynamoLegacyPolicy:
    name = "dynamo-legacy"

    def __init__(self, cfg: PlannerConfig, profile: PerfProfile, **_):
        validate_budget(cfg)
        self.cfg = cfg
        self.profile = profile
        opts = dict(cfg.predictor_options)
        self.num_req_predictor = make_predictor(cfg.predictor, **opts)
        self.isl_predictor = make_predictor(cfg.predictor, **opts)
        self.osl_predictor = make_predictor(cfg.predictor, **opts)
        self.p_corr = 1.0
        self.d_corr = 1.0
        self.last_isl: float | None = None
        self.last_osl: float | None = None

    # -- the three steps of a tick -------------------------------------------------

    def decide(self, obs: Observation, state: ReplicaState, now_s: float) -> Decision:
        cfg = self.cfg
        if obs.num_req is None:
            return hold(
                state, self.cfg, "hold-missing", f"request count missing ({_why(obs)}): holding"
            )
        if obs.idle:
            self.num_req_predictor.observe(0.0)
            self.isl_predictor.observe(self.last_isl)
            self.osl_predictor.observe(self.last_osl)
            p, d = clamp_min_max(cfg.min_replicas, cfg.min_replicas, cfg)
            return Decision(
                prefill=p,
                decode=d,
                rule="idle",
                reason=f"no requests in the last {obs.interval_s:g} s: both roles to the minimum",
                prediction={"num_req": 0.0, "isl": self.last_isl, "osl": self.last_osl},
            )
        if obs.missing:
            self.num_req_predictor.observe(obs.num_req)
            return hold(
                state,
                self.cfg,
                "hold-missing",
                f"{obs.num_req:g} requests but {', '.join(obs.missing)} missing ({_why(obs)}): holding",
            )

        self.last_isl, self.last_osl = obs.isl_mean, obs.osl_mean
        self.num_req_predictor.observe(obs.num_req)
        self.isl_predictor.observe(obs.isl_mean)
        self.osl_predictor.observe(obs.osl_mean)
        lines: list[str] = []
        if cfg.correction:
            self._update_correction(obs, state, lines)
        else:
            lines.append("correction off: p_corr = d_corr = 1")

        num_req = self.num_req_predictor.predict()
        isl = self.isl_predictor.predict()
        osl = self.osl_predictor.predict()
        if num_req is None or isl is None or osl is None or isl <= 0 or osl <= 0:
            return hold(state, self.cfg, "hold-predictor", "predictor has no forecast yet: holding")
        return self._size(num_req, isl, osl, state, lines)

    def _update_correction(self, obs: Observation, state: ReplicaState, lines: list[str]) -> None:
        prof, cfg = self.profile, self.cfg
        expected_ttft = float(prof.prefill_ttft_ms_at(obs.isl_mean))
        self.p_corr = obs.ttft_mean_ms / expected_ttft
        lines.append(
            f"p_corr = observed TTFT {obs.ttft_mean_ms:.1f} ms / expected {expected_ttft:.1f} ms "
            f"at ISL {obs.isl_mean:.0f} = {self.p_corr:.3f}"
        )
        n_decode = state.decode.ready
        if n_decode > 0:
            concurrency = obs.num_req / n_decode * obs.request_duration_mean_s / cfg.interval_s
            context = obs.isl_mean + obs.osl_mean / 2
            expected_itl = float(prof.decode_itl_ms_at_concurrency(concurrency, context))
            self.d_corr = obs.itl_mean_ms / expected_itl
            lines.append(
                f"d_corr = observed ITL {obs.itl_mean_ms:.2f} ms / expected {expected_itl:.2f} ms "
                f"at concurrency {concurrency:.1f}/worker, context {context:.0f} = {self.d_corr:.3f}"
            )
        else:
            lines.append("d_corr unchanged: no ready decode worker to attribute ITL to")

    def _size(
        self, num_req: float, isl: float, osl: float, state: ReplicaState, lines: list[str]
    ) -> Decision:
        cfg, prof = self.cfg, self.profile
        interval = cfg.interval_s
        lines.append(
            f"predicted: num_req {num_req:.1f}, ISL {isl:.0f}, OSL {osl:.0f} per {interval:g} s"
        )

        # Prefill: tokens/s to prefill, over what one engine prefills per second at this ISL.
        p_factor = min(1.0, self.p_corr)
        prefill_tps = num_req * isl / interval * p_factor
        p_thpt_gpu = float(prof.prefill_thpt_per_gpu_at(isl))
        p_raw = math.ceil(prefill_tps / p_thpt_gpu / cfg.gpus_per_prefill)
        lines.append(
            f"prefill = ceil({num_req:.1f} x {isl:.0f} / {interval:g} x min(1, {self.p_corr:.3f}) "
            f"/ {p_thpt_gpu:.0f} tok/s/GPU / {cfg.gpus_per_prefill} GPU) = ceil({prefill_tps:.0f} / "
            f"{p_thpt_gpu * cfg.gpus_per_prefill:.0f}) = {p_raw}"
        )

        # Decode: the ITL target corrected by how far observed ITL runs from the profile.
        if self.d_corr > 0 and state.decode.ready > 0 and cfg.correction:
            itl_target = cfg.itl_ms / self.d_corr
            lines.append(f"ITL target = {cfg.itl_ms:g} / {self.d_corr:.3f} = {itl_target:.2f} ms")
        else:
            itl_target = cfg.itl_ms
        context = isl + osl / 2
        d_thpt_gpu, d_itl, d_kv = prof.best_decode_point(itl_target, context)
        decode_tps = num_req * osl / interval
        d_raw = math.ceil(decode_tps / d_thpt_gpu / cfg.gpus_per_decode)
        lines.append(
            f"decode = ceil({num_req:.1f} x {osl:.0f} / {interval:g} / {d_thpt_gpu:.0f} tok/s/GPU "
            f"(best at ITL <= {itl_target:.2f} ms, context {context:.0f}: ITL {d_itl:.2f} ms, "
            f"KV {d_kv:.0%}) / {cfg.gpus_per_decode} GPU) = ceil({decode_tps:.0f} / "
            f"{d_thpt_gpu * cfg.gpus_per_decode:.0f}) = {d_raw}"
        )

        p, d = clamp_min_max(p_raw, d_raw, cfg)
        if (p, d) != (p_raw, d_raw):
            lines.append(f"min/max replicas -> {p}P + {d}D")
        p, d, budget_note = apply_budget(p, d, cfg)
        if budget_note:
            lines.append(budget_note)
        reason = (
            f"predicted {num_req:.0f} req/{interval:g}s at ISL {isl:.0f}/OSL {osl:.0f}: "
            f"{prefill_tps:.0f} prefill tok/s -> {p}P, {decode_tps:.0f} decode tok/s -> {d}D"
        )
        if budget_note:
            reason += f" ({budget_note})"
        return Decision(
            prefill=p,
            decode=d,
            rule="scale",
            reason=reason,
            prediction={"num_req": num_req, "isl": isl, "osl": osl},
            demand={"prefill_tokens_per_s": prefill_tps, "decode_tokens_per_s": decode_tps},
            capacity={
                "prefill_tokens_per_s_per_replica": p_thpt_gpu * cfg.gpus_per_prefill,
                "decode_tokens_per_s_per_replica": d_thpt_gpu * cfg.gpus_per_decode,
                "p_corr": self.p_corr,
                "d_corr": self.d_corr,
            },
            expected_ttft_ms=float(prof.prefill_ttft_ms_at(isl)),
            expected_itl_ms=float(d_itl),
            arithmetic=tuple(lines),
        )


def _why(obs: Observation) -> str:
    return "; ".join(obs.errors) if obs.errors else "no data in the window"
