"""`dynamo`: NVIDIA Dynamo 1.6's SLA planner in throughput mode, so users compare against
the Dynamo they deploy today (`dynamo-legacy` is the planner of the original guide).

One tick, as dynamo/planner/core/throughput_scaling.py (_throughput_disagg) and
core/state_machine.py run it in the `ai-dynamo` 1.6.1 wheel: forecast requests, ISL and OSL
for the next interval; demand = requests / interval; one engine's request rate from a batch
search over a linear per-iteration model fitted to the profile (planner.policies.
dynamo_sizing); replicas = max(ceil(demand / engine rate), min endpoint); at most
max_throughput_scaling_replicas (8) added or removed per role; while replicas are starting
only reductions; then the direction-preserving GPU budget fit. A profile describes one engine:
GPUs per engine enter only the budget. Observed TTFT/ITL do not correct anything (no p_corr,
d_corr); they gate a tick only when missing.

Demand is the increase of dynamo_frontend_requests_started_total (requests admitted) and
falls back to requests_total (finished) only where the first is not exported, as
dynamo/planner/monitoring/traffic_metrics.py (get_avg_request_count) does.

Differences, each stated in the decision: missing metrics hold the current size with a rule
(Dynamo skips the tick); a budget below the endpoint minimum is rejected at load time (Dynamo
answers 0 replicas); planlab's max_replicas, when set, is applied (Dynamo has none); the
predictors are planlab's of the same names. Not modelled: KV-cache hit-rate discount,
speculative-decoding accept length, attention data parallelism, load-based scaling
(`enable_load_scaling`) and a GPU floor (min_gpu_budget).
"""

from __future__ import annotations

import math

from planner.errors import ConfigError
from planner.observation import Observation
from planner.policies import dynamo_sizing as S
from planner.policies.base import numeric_options, register
from planner.predictors import make_predictor
from planner.profile import PerfProfile
from planner.types import Decision, PlannerConfig, ReplicaState

_INT_OPTIONS = ("max_throughput_scaling_replicas", "prefill_min_endpoint", "decode_min_endpoint")


@register("dynamo")
class DynamoPolicy:
    name = "dynamo"

    def __init__(self, cfg: PlannerConfig, profile: PerfProfile, **_):
        opts = numeric_options(
            cfg,
            {
                "max_throughput_scaling_replicas": S.MAX_THROUGHPUT_SCALING_REPLICAS,
                "prefill_min_endpoint": cfg.min_replicas,
                "decode_min_endpoint": cfg.min_replicas,
            },
        )
        for key in _INT_OPTIONS:
            if opts[key] != int(opts[key]):
                raise ConfigError(
                    f"got {opts[key]:g}; expected a whole number", key=f"planner.options.{key}"
                )
        self.max_delta = int(opts["max_throughput_scaling_replicas"])
        self.min_p = int(opts["prefill_min_endpoint"])
        self.min_d = int(opts["decode_min_endpoint"])
        if self.max_delta < 1:
            raise ConfigError(
                "got 0; expected at least 1", key="planner.options.max_throughput_scaling_replicas"
            )
        if cfg.max_gpu_budget is not None:
            floor = self.min_p * cfg.gpus_per_prefill + self.min_d * cfg.gpus_per_decode
            if cfg.max_gpu_budget < floor:
                raise ConfigError(
                    f"max_gpu_budget {cfg.max_gpu_budget} is below the {floor} GPUs that the minimum "
                    f"endpoints ({self.min_p} prefill x {cfg.gpus_per_prefill} GPU, {self.min_d} "
                    f"decode x {cfg.gpus_per_decode} GPU) need; expected at least {floor}",
                    key="planner.max_gpu_budget",
                )
        self.cfg = cfg
        self.profile = profile
        self.max_batched_tokens = cfg.prefill_max_batch_tokens or S.DEFAULT_MAX_NUM_BATCHED_TOKENS
        self.prefill_max_seqs = cfg.prefill_max_num_seqs or S.DEFAULT_MAX_NUM_SEQS
        self.decode_max_seqs = cfg.decode_max_num_seqs or S.DEFAULT_MAX_NUM_SEQS
        self.prefill_fit = S.fit_prefill(profile, self.max_batched_tokens)
        self.decode_fit = S.fit_decode(profile)
        popts = dict(cfg.predictor_options)
        self.num_req_predictor = make_predictor(cfg.predictor, **popts)
        self.isl_predictor = make_predictor(cfg.predictor, **popts)
        self.osl_predictor = make_predictor(cfg.predictor, **popts)
        self.last_isl: float | None = None
        self.last_osl: float | None = None

    # -- a tick ---------------------------------------------------------------------------

    def decide(self, obs: Observation, state: ReplicaState, now_s: float) -> Decision:
        lines: list[str] = []
        demand_req, source = _demand(obs)
        if demand_req is None:
            return self._hold(
                state, "hold-missing", f"request count missing ({_why(obs)}): holding"
            )
        # requests_total may be absent while requests_started_total is there: not a gap.
        missing = [
            m for m in obs.missing if not (m == "num_req" and obs.num_req_started is not None)
        ]
        if demand_req > 0 and missing:
            return self._hold(
                state,
                "hold-missing",
                f"{demand_req:g} requests but {', '.join(missing)} missing ({_why(obs)}): holding",
            )
        lines.append(f"demand: {demand_req:g} requests in {obs.interval_s:g} s from {source}")
        # An idle window carries the last request shape forward (plugins/builtins/
        # local_planner.py, _observe_load), so the predictors keep one point per interval.
        if demand_req > 0 and obs.isl_mean is not None and obs.osl_mean is not None:
            self.last_isl, self.last_osl = obs.isl_mean, obs.osl_mean
        self.num_req_predictor.observe(demand_req)
        self.isl_predictor.observe(self.last_isl)
        self.osl_predictor.observe(self.last_osl)
        num_req = self.num_req_predictor.predict()
        isl = self.isl_predictor.predict()
        osl = self.osl_predictor.predict()
        if num_req is None or isl is None or osl is None or isl <= 0 or osl <= 0:
            return self._hold(
                state,
                "hold-predictor",
                "predictor has no forecast (no request shape seen yet): holding",
            )
        return self._size(max(0.0, num_req), isl, osl, state, lines)

    def _size(
        self, num_req: float, isl: float, osl: float, state: ReplicaState, lines: list[str]
    ) -> Decision:
        cfg = self.cfg
        demand_rps = num_req / cfg.interval_s
        lines.append(
            f"predicted: {num_req:.1f} requests per {cfg.interval_s:g} s = {demand_rps:.3f} req/s, "
            f"ISL {isl:.0f}, OSL {osl:.0f}"
        )
        lines.append(f"prefill model: wall = {self.prefill_fit.describe()}")
        lines.append(f"decode model:  wall = {self.decode_fit.describe()}")
        pc = S.prefill_capacity(
            self.prefill_fit,
            isl,
            cfg.ttft_ms / 1000.0,
            self.max_batched_tokens,
            self.prefill_max_seqs,
        )
        dc = S.decode_capacity(
            self.decode_fit,
            isl,
            osl,
            cfg.itl_ms / 1000.0,
            self.profile.max_kv_tokens,
            self.decode_max_seqs,
        )
        cur_p, cur_d = state.prefill.ready, state.decode.ready
        if pc is None or dc is None:
            lines.append("perf model cannot size this shape: both roles held at their ready counts")
            raw_p, raw_d, rule = cur_p, cur_d, "hold-model"
        else:
            raw_p = max(math.ceil(demand_rps / pc.rps), self.min_p)
            raw_d = max(math.ceil(demand_rps / dc.rps), self.min_d)
            rule = "scale"
            lines.append(
                f"prefill batch search: B in {pc.searched} sizes up to min(max_num_seqs "
                f"{self.prefill_max_seqs}, {self.max_batched_tokens} tokens // ISL {math.ceil(isl)}) = "
                f"{pc.max_batch}; best B = {pc.batch}: TTFT {pc.latency_s * 1000:.1f} ms "
                f"{'<=' if pc.eligible else '> (none meets)'} {cfg.ttft_ms:g} ms, "
                f"{pc.batch} / {pc.latency_s:.4f} s = {pc.rps:.3f} req/s per engine"
            )
            ctx = S.decode_context_tokens(isl, osl)
            lines.append(
                f"decode batch search: context {math.ceil(isl)} + {max(1, math.ceil(osl))}//2 = {ctx}; "
                f"B in {dc.searched} sizes up to min(max_num_seqs {self.decode_max_seqs}, "
                f"{self.profile.max_kv_tokens} KV // {ctx}) = {dc.max_batch}; best B = {dc.batch}: "
                f"ITL {dc.latency_s * 1000:.2f} ms {'<=' if dc.eligible else '> (none meets)'} "
                f"{cfg.itl_ms:g} ms, {dc.batch} / ({max(1, math.ceil(osl))} x {dc.latency_s:.5f} s) = "
                f"{dc.rps:.3f} req/s per engine"
            )
            lines.append(
                f"prefill = max(ceil({demand_rps:.3f} / {pc.rps:.3f}), min {self.min_p}) = {raw_p}; "
                f"decode = max(ceil({demand_rps:.3f} / {dc.rps:.3f}), min {self.min_d}) = {raw_d}"
            )
        p = max(S.cap_change(raw_p, cur_p, self.max_delta), self.min_p)
        d = max(S.cap_change(raw_d, cur_d, self.max_delta), self.min_d)
        if (p, d) != (raw_p, raw_d):
            lines.append(
                f"change cap {self.max_delta} per role per tick from ready {cur_p}P + {cur_d}D -> {p}P + {d}D"
            )
        if cfg.max_replicas is not None and (p > cfg.max_replicas or d > cfg.max_replicas):
            p, d = min(p, cfg.max_replicas), min(d, cfg.max_replicas)
            lines.append(f"planlab max_replicas {cfg.max_replicas} -> {p}P + {d}D")

        starting = state.prefill.starting + state.decode.starting
        note = None
        if starting:
            if rule != "scale":
                return self._hold(state, "hold-model", lines[-1], lines)
            tp = S.startup_reduction(p, cur_p, state.prefill.starting)
            td = S.startup_reduction(d, cur_d, state.decode.starting)
            p = state.prefill.desired if tp is None else tp
            d = state.decode.desired if td is None else td
            note = f"{starting} replica(s) starting: only reductions apply -> {p}P + {d}D"
            lines.append(note)
        elif cfg.max_gpu_budget is not None:
            p, d, note = S.fit_budget(
                cur_p,
                cur_d,
                p,
                d,
                cfg.gpus_per_prefill,
                cfg.gpus_per_decode,
                cfg.max_gpu_budget,
                self.min_p,
                self.min_d,
            )
            if note:
                note = f"GPU budget {cfg.max_gpu_budget}: {note} -> {p}P + {d}D ({cfg.gpus(p, d)} GPUs)"
                lines.append(note)
        reason = (
            f"predicted {demand_rps:.2f} req/s at ISL {isl:.0f}/OSL {osl:.0f}"
            + (
                f": {pc.rps:.2f} req/s per prefill engine, {dc.rps:.2f} per decode engine"
                if pc and dc
                else ""
            )
            + f" -> {p}P + {d}D"
            + (f" ({note})" if note else "")
        )
        return Decision(
            prefill=p,
            decode=d,
            rule=rule,
            reason=reason,
            prediction={"num_req": num_req, "isl": isl, "osl": osl},
            demand={"requests_per_s": demand_rps},
            capacity={
                "prefill_rps_per_engine": pc.rps if pc else None,
                "decode_rps_per_engine": dc.rps if dc else None,
                "prefill_batch": float(pc.batch) if pc else None,
                "decode_batch": float(dc.batch) if dc else None,
            },
            expected_ttft_ms=pc.latency_s * 1000.0 if pc else None,
            expected_itl_ms=dc.latency_s * 1000.0 if dc else None,
            arithmetic=tuple(lines),
        )

    def _hold(
        self, state: ReplicaState, rule: str, reason: str, lines: list[str] | None = None
    ) -> Decision:
        """Keep the desired counts, lifted to the endpoint minimums (Dynamo's hold keeps
        the endpoint floor) and within the budget."""
        cfg = self.cfg
        p = max(state.prefill.desired, self.min_p)
        d = max(state.decode.desired, self.min_d)
        if cfg.max_replicas is not None:
            p, d = min(p, cfg.max_replicas), min(d, cfg.max_replicas)
        if cfg.max_gpu_budget is not None:
            p, d = S.proportional_clamp(
                p,
                d,
                cfg.gpus_per_prefill,
                cfg.gpus_per_decode,
                cfg.max_gpu_budget,
                self.min_p,
                self.min_d,
            )
        return Decision(
            prefill=p, decode=d, rule=rule, reason=reason, arithmetic=tuple(lines or ())
        )


def _demand(obs: Observation) -> tuple[float | None, str]:
    if obs.num_req_started is not None:
        return obs.num_req_started, "requests_started_total (admitted)"
    if obs.num_req is not None:
        return obs.num_req, "requests_total (finished; requests_started_total not exported)"
    return None, ""


def _why(obs: Observation) -> str:
    return "; ".join(obs.errors) if obs.errors else "no data in the window"
