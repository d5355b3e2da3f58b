"""`slaplan`: plans for the SLA as users state it ("99% of requests with TTFT <= X and
ITL <= Y"), not for averages. docs/planner.md has the long version.

Per tick and role:
1. Forecast one startup ahead: plan for the highest point forecast over the intervals until
   capacity asked for now is ready (the startup the connector measured, else the
   configured one), plus the predictor's own one-step upper-quantile headroom. Arrivals are
   finished requests + growth of the in-flight gauge; a queue left at the window's end is
   added as a rate to drain.
2. Prefill from the TTFT tail: each replica a FIFO queue fed every c-th request by a
   round-robin router, work per request ISL / tokens-per-s (profile), Gamma-distributed
   with the ISL's CV; waiting time with the Cramer-Lundberg tail P(W > x) ~ rho exp(-g x),
   g solving Lindley's equation E[exp(gS)] E[exp(-gA)] = 1 (exact for M/M/1). A request's
   TTFT is that wait plus its own prefill time, the KV transfer and one decode step,
   averaged over the observed ISL distribution. The fewest replicas keeping TTFT misses
   within their share of the miss budget (above the floor of prompts too long on their own),
   plus what the last hour left unspent of it (the error budget, read from the TTFT
   histogram).
3. Decode from ITL at the KV load: in-flight per replica from Little's law with the
   profile's ITL at that load (a fixed point), its compound-Poisson KV quantile within the
   batch that still meets the ITL target at context ISL + OSL/2.
4. Corrections both ways, EMA-smoothed and bounded, from settled windows only: prefill
   speed and arrival burstiness fitted to the observed TTFT p50 and p90; decode ITL
   against the profile at the observed concurrency.
5. Stability: scale up at once within a step cap; scale down only to the highest
   recommendation of a window, not within one interval of a scale-up.
6. A binding GPU budget: each role first gets what keeps up at all, then each next GPU
   goes where the expected SLA misses drop most.
Missing metrics hold; an idle service decays to the minimum after a grace period;
replicas starting past the connector's timeout are counted missing and replaced. Each
record's rule says which applied.
"""

from __future__ import annotations

import copy
import math
from collections import deque
from dataclasses import dataclass
from statistics import NormalDist

from planner.errors import number_in
from planner.observation import QUANTILE_SLICES, Observation, cdf_fraction_above
from planner.policies.base import (
    apply_budget,
    clamp_min_max,
    hold,
    numeric_options,
    register,
    validate_budget,
)
from planner.predictors import make_predictor
from planner.profile import PerfProfile
from planner.types import Decision, PlannerConfig, ReplicaState

DEFAULTS: dict[str, float] = {
    "headroom_quantile": 0.9,  # upper quantile of the load forecast to plan for
    # Share of the SLA miss budget given to the TTFT tail; decode is sized with headroom
    # (decode_z) and a request's TPOT averages its ITL over many batches, so few requests
    # miss ITL and most of the budget goes to TTFT.
    "ttft_miss_share": 0.8,
    # KV-load quantile (z-score) a decode replica must absorb at the ITL target. Modest: a
    # request's ITL averages the batch over its whole decode, so short peaks of the
    # instantaneous KV load barely move it (1.28 gives the same ITL attainment as 0.5 on
    # every suite scenario, for up to 2% more GPU-hours).
    "decode_z": 0.5,
    "correction_alpha": 0.5,  # EMA weight of a new correction ratio
    "correction_min": 0.7,
    "correction_max": 2.0,
    "correction_min_requests": 30,  # fewer requests in the window: no update
    # Scale down to the highest need of this window: the need already looks one startup
    # ahead, so a short window is enough to keep a noisy tick from releasing capacity.
    "scale_down_window_s": 120.0,
    "min_lifetime_s": 0.0,  # no scale-down this soon after a scale-up (0: one interval)
    "max_step_up_fraction": 2.0,  # per tick: + max(4, 200% of current)
    "max_step_down_fraction": 0.5,  # per tick: - max(1, 50% of current)
    "idle_grace_s": 300.0,
    "max_rho": 0.95,  # never plan a replica above this utilisation
    "max_arrival_cv2": 30.0,  # bound on the fitted arrival burstiness
    # The TTFT error budget: misses are counted over a decaying window (time constant in
    # seconds, as an SLA is judged over a period); what was not spent there may be spent
    # over the next budget_spend_s of requests. An overspend is paid back only with
    # budget_min_factor < 1 (chasing a past miss with replicas is costly; default off).
    "budget_window_s": 3600.0,
    "budget_spend_s": 600.0,
    "budget_min_factor": 1.0,  # the allowance stays within these multiples of the target
    "budget_max_factor": 3.0,
}
# Where an option needs more than ">= 0" (a share, a divisor, a bound of a fit).
_OPEN_UNIT = (0.0, 1.0, True, True)
BOUNDS = {
    "headroom_quantile": _OPEN_UNIT,
    "ttft_miss_share": (0.0, 1.0, True, False),
    "correction_alpha": (0.0, 1.0, True, False),
    "correction_min": (0.0, 1.0, True, False),
    "correction_max": (1.0, math.inf, False, False),
    "max_step_down_fraction": (0.0, 1.0, False, False),
    "max_rho": _OPEN_UNIT,
    "max_arrival_cv2": (0.25, math.inf, False, False),
    "budget_window_s": (0.0, math.inf, True, False),
    "budget_spend_s": (0.0, math.inf, True, False),
    "budget_min_factor": (0.0, 1.0, False, False),
    "budget_max_factor": (1.0, math.inf, False, False),
}


@dataclass(frozen=True)
class _Plan:
    """What one tick plans for: request rates over each role's horizon and the lengths."""

    prefill_rate: float  # req/s
    decode_rate: float  # req/s
    isl: float  # mean input length for prefill
    decode_isl: float  # mean input length for the decode context
    osl: float


# KV bytes per token when the profile does not say (Llama-3.1-8B, bf16 KV cache).
DEFAULT_KV_BYTES_PER_TOKEN = 131072.0


def _lognormal_shape(cv: float) -> tuple[float, ...]:
    """ISL / mean at the middle of each QUANTILE_SLICES slice for a lognormal with this CV
    (the prior until the ISL histogram says otherwise)."""
    sigma = math.sqrt(math.log1p(cv * cv))
    dist = NormalDist()
    return tuple(math.exp(sigma * dist.inv_cdf(p) - sigma * sigma / 2) for p, _ in QUANTILE_SLICES)


_WEIGHTS = tuple(w for _, w in QUANTILE_SLICES)


def _wait_tail(lam: float, mean_s: float, cv2: float, shape: float) -> tuple[float, float] | None:
    """(C, g) with P(W > x) ~ C exp(-g x) for one replica's FIFO queue (Cramer-Lundberg /
    Lindley): arrivals at `lam` req/s with Gamma(shape) inter-arrival times, squared CV
    1/shape (shape 1 is Poisson; a round-robin router hands each of c replicas every c-th
    request, which multiplies the shape by c; bursty traffic has shape < 1), service ~ Gamma(mean_s, cv2) or deterministic when cv2 ~ 0.
    g > 0 solves E[exp(gS)] E[exp(-gA)] = 1; C = rho (exact for M/M/1). None if unstable."""
    rho = lam * mean_s
    if not 0 < rho < 1:
        return None
    rate = lam * shape  # each of the `shape` exponential phases of an inter-arrival

    def log_arrival(g: float) -> float:
        return shape * math.log(rate / (rate + g))

    if cv2 < 1e-6:

        def log_service(g: float) -> float:
            return g * mean_s

        hi = 1.0 / mean_s
        while log_service(hi) + log_arrival(hi) <= 0:
            hi *= 2
    else:
        theta, k = mean_s * cv2, 1.0 / cv2

        def log_service(g: float) -> float:
            return -k * math.log1p(-g * theta)

        hi = (1 - 1e-12) / theta
    lo = 0.0
    for _ in range(80):
        mid = (lo + hi) / 2
        if log_service(mid) + log_arrival(mid) > 0:
            hi = mid
        else:
            lo = mid
    g = (lo + hi) / 2
    return (rho, g) if g > 0 else None


def _cdf_point(
    cdf: tuple[tuple[float, float], ...] | None, q: float, lo: float, hi: float
) -> tuple[float, float] | None:
    """(bound, share above it) of the histogram bound whose share at or below lies in
    (lo, hi) and is nearest q; None when no bound does."""
    best = None
    for bound, share in cdf or ():
        if lo < share < hi and bound > 0 and (best is None or abs(share - q) < abs(best[1] - q)):
            best = (bound, share)
    return None if best is None else (best[0], 1.0 - best[1])


def _solve_increasing(f, target: float, lo: float, hi: float) -> float:
    """x in [lo, hi] with f(x) = target for f increasing, by bisection in log space;
    the bound when the target lies outside f's range there."""
    if f(lo) >= target:
        return lo
    if f(hi) <= target:
        return hi
    a, b = math.log(lo), math.log(hi)
    for _ in range(30):
        m = (a + b) / 2
        if f(math.exp(m)) < target:
            a = m
        else:
            b = m
    return math.exp((a + b) / 2)


def _ema_log(old: float, new: float, alpha: float, max_step: float) -> float:
    """Move old toward new by an EMA in log space, at most a factor max_step."""
    step = math.exp(alpha * (math.log(new) - math.log(old)))
    return old * min(max_step, max(1.0 / max_step, step))


def _kv_quantile(mean: float, z: float, context_cv2: float) -> float:
    """The z-quantile of a decode replica's KV load, in requests of mean context: the
    in-flight count is Poisson (M/G/inf) and each holds a context of squared CV
    context_cv2, so the KV tokens in use are compound Poisson with variance
    mean * (1 + context_cv2) in these units (normal approximation, continuity-corrected)."""
    if mean <= 0:
        return 0.0
    return mean + z * math.sqrt(mean * (1.0 + context_cv2)) + 0.5


@register("slaplan", options=(*DEFAULTS, "isl_cv", "arrival_cv2", "router"))
class SlaPlanPolicy:
    name = "slaplan"

    def __init__(self, cfg: PlannerConfig, profile: PerfProfile, **_):
        validate_budget(cfg)
        self.cfg = cfg
        self.profile = profile
        self.opt = numeric_options(cfg, DEFAULTS, BOUNDS)
        opts = dict(cfg.predictor_options)
        self.num_req_pred = make_predictor(cfg.predictor, **opts)
        self.isl_pred = make_predictor(cfg.predictor, **opts)
        self.osl_pred = make_predictor(cfg.predictor, **opts)
        miss = max(1e-4, 1.0 - cfg.target_attainment)
        self.eps_ttft = miss * self.opt["ttft_miss_share"]
        self.eps_itl = miss * (1.0 - self.opt["ttft_miss_share"])
        self.p_corr = 1.0  # multiplies prefill service time
        self.d_corr = 1.0  # multiplies decode ITL
        # The ISL distribution at fixed quantiles, as the ISL histogram shows it (an EMA
        # of absolute values: a trace's prompts can be capped, bimodal, far from any
        # parametric shape), with its mean; before any data, a lognormal prior scaled to
        # the planned mean. tail_stretch scales it when the forecast mean runs ahead.
        isl_cv = number_in(cfg.option("isl_cv", 0.5), "planner.options.isl_cv", lo=0.0)
        self.prior_shape = _lognormal_shape(isl_cv)
        self.isl_tail: tuple[float, ...] | None = None
        self.isl_level: float | None = None
        self.tail_stretch = 1.0
        # Burstiness of arrivals (squared CV of inter-arrival times; 1 for Poisson), fitted
        # to the observed TTFT tail since per-interval counts cannot show it.
        self.arrival_cv2 = number_in(
            cfg.option("arrival_cv2", 1.0), "planner.options.arrival_cv2", lo=0.0, lo_open=True
        )
        # How the frontend spreads requests over prefill replicas (round_robin: each gets
        # every c-th; anything else is modelled as Poisson splitting, the safe side).
        self.router = str(cfg.option("router", "round_robin"))
        self.last_isl: float | None = None
        self.last_osl: float | None = None
        self.idle_since: float | None = None
        self.last_inflight: float | None = None
        self.isl_seen: deque[float] = deque(maxlen=4)  # the last mean ISL and OSL seen
        self.osl_seen: deque[float] = deque(maxlen=4)
        # Ready replicas at the previous tick: a window is settled only if they held.
        self.last_ready: dict[str, int | None] = {"prefill": None, "decode": None}
        self.last_itl_ms: float | None = None  # observed mean ITL: the first token's step
        self.history: dict[str, deque[tuple[float, int]]] = {"prefill": deque(), "decode": deque()}
        self.last_up: dict[str, float] = {"prefill": -math.inf, "decode": -math.inf}
        # Requests and TTFT misses seen, decayed over budget_window_s (the error budget).
        self.budget_requests = 0.0
        self.budget_misses = 0.0
        self.budget_allowed = 0.0  # misses the plans in the window allowed
        self.last_allowed = self.eps_ttft  # what the last plan allowed (before the budget)

    # ------------------------------------------------------------------ the models

    def prefill_service_s(self, isl: float) -> float:
        """Mean work one request puts on a replica (throughput-based), corrected."""
        tps = float(self.profile.prefill_thpt_per_gpu_at(isl)) * self.cfg.gpus_per_prefill
        return isl / tps * self.p_corr

    @property
    def isl_cv(self) -> float:
        values = self.isl_tail or self.prior_shape
        mean = sum(w * x for w, x in zip(_WEIGHTS, values, strict=True))
        second = sum(w * x * x for w, x in zip(_WEIGHTS, values, strict=True))
        return math.sqrt(max(0.0, second / (mean * mean) - 1.0))

    def _own_ttft_ms(self, isl: float) -> list[float]:
        """A request's own TTFT without queueing at each ISL quantile (the observed
        distribution, stretched when the forecast mean runs ahead of it; the prior shape at
        the planned mean before any data): the part that capacity cannot remove."""
        # After prefill: the KV cache crosses the link, then the first decode step emits
        # the first token (at a typical ITL of a loaded decode engine).
        kv_bytes = self.profile.kv_bytes_per_token or DEFAULT_KV_BYTES_PER_TOKEN
        bw = self.cfg.kv_bandwidth_gbps
        per_token_ms = 0.0 if not bw else kv_bytes / (bw * 1e9 / 8) * 1000.0
        first_step_ms = self.last_itl_ms or float(self.profile.decode_itl_ms_at(0.3, isl))
        fixed_ms = self.cfg.kv_latency_ms + first_step_ms
        out = []
        if self.isl_tail is None:
            lengths = [isl * shape for shape in self.prior_shape]
        else:
            lengths = [x * self.tail_stretch for x in self.isl_tail]
        for x in lengths:
            prefill_ms = float(self.profile.prefill_ttft_ms_at(x)) * self.p_corr
            out.append(prefill_ms + x * per_token_ms + fixed_ms)
        return out

    def prefill_miss(
        self, replicas: int, rate: float, isl: float, ttft_ms: float | None = None
    ) -> float:
        """P(TTFT > target) with `replicas` M/G/1 queues sharing `rate` req/s: waiting time
        from the Cramer-Lundberg tail of M/G/1 (service ~ Gamma with the ISL's CV), plus the
        request's own prefill time averaged over the ISL distribution."""
        if replicas <= 0:
            return 1.0
        s = self.prefill_service_s(isl)
        lam = rate / replicas
        rho = lam * s
        if rho >= 1.0:
            return 1.0
        shape = (replicas if self.router == "round_robin" else 1) / self.arrival_cv2
        tail = _wait_tail(lam, s, self.isl_cv**2, shape) if rho > 0 else None
        budget_ms = self.cfg.ttft_ms if ttft_ms is None else ttft_ms
        total = 0.0
        for own, weight in zip(self._own_ttft_ms(isl), _WEIGHTS, strict=True):
            slack_s = (budget_ms - own) / 1000.0
            if slack_s < 0:
                total += weight
            elif tail is not None:
                c, g = tail
                total += weight * min(rho, c * math.exp(-g * slack_s))
        return total

    def prefill_floor_miss(self, isl: float) -> float:
        """P(TTFT > target) with unlimited replicas: requests too long to meet it alone."""
        owns = self._own_ttft_ms(isl)
        return sum(w for own, w in zip(owns, _WEIGHTS, strict=True) if own > self.cfg.ttft_ms)

    def prefill_ttft_quantile_ms(self, replicas: int, rate: float, isl: float, q: float) -> float:
        """The model's q-quantile of TTFT (bisection on the miss probability)."""
        lo, hi = 0.0, 60_000.0
        if self.prefill_miss(replicas, rate, isl, hi) > 1.0 - q:
            return math.inf
        for _ in range(40):
            mid = (lo + hi) / 2
            if self.prefill_miss(replicas, rate, isl, mid) > 1.0 - q:
                lo = mid
            else:
                hi = mid
        return hi

    def decode_limit(self, isl: float, osl: float) -> tuple[float, float, float]:
        """(max in-flight per replica meeting the corrected ITL target, its ITL ms, context)."""
        context = isl + osl / 2
        target = self.cfg.itl_ms / self.d_corr
        _, itl_ms, kv = self.profile.best_decode_point(target, context)
        n_max = kv * self.profile.max_kv_tokens / context  # per engine, whatever its TP
        return max(n_max, 1.0), float(itl_ms), context

    def decode_inflight(self, rate: float, isl: float, osl: float, replicas: int = 1) -> float:
        """Requests decoding at once on one of `replicas`: the fixed point of Little's law
        n = (rate / replicas) x OSL x ITL(n), ITL from the profile at the KV usage n
        requests of context ISL + OSL/2 fill (corrected). ITL grows with n, so iterating
        from below converges to the smallest fixed point; inf when there is none (the
        replica cannot keep up)."""
        context = isl + osl / 2
        per = rate / max(1, replicas) * osl / 1000.0  # requests per ms of ITL
        n = 0.0
        for _ in range(60):
            kv = n * context / self.profile.max_kv_tokens
            if kv >= 1.0:
                return math.inf
            new = per * float(self.profile.decode_itl_ms_at(kv, context)) * self.d_corr
            if abs(new - n) < 1e-3:
                return new
            n = new
        return n

    def decode_miss(self, replicas: int, rate: float, isl: float, osl: float) -> float:
        """P(a replica's concurrency exceeds what meets the ITL target), normal approx."""
        if replicas <= 0:
            return 1.0
        n_max, _, _ = self.decode_limit(isl, osl)
        mean = self.decode_inflight(rate, isl, osl, replicas)
        if not math.isfinite(mean):
            return 1.0
        if mean <= 0:
            return 0.0
        z = (n_max + 0.5 - mean) / math.sqrt(mean * (1.0 + self.context_cv2(isl, osl)))
        return 1.0 - NormalDist().cdf(z)

    def context_cv2(self, isl: float, osl: float) -> float:
        """Squared CV of a decoding request's context, from the ISL spread (the OSL part
        is small and partly averaged over its own decode)."""
        share = isl / (isl + osl / 2)
        return (self.isl_cv * share) ** 2

    def prefill_allowed_miss(self, isl: float) -> float:
        """The share of TTFT misses one interval may have before the error budget: eps_ttft,
        or, when prompts too long to meet the target on their own already take much of
        that (the floor), the floor plus half of eps: chasing the last tenth of a percent
        there would take many times the replicas for almost no attainment."""
        return max(self.eps_ttft, self.prefill_floor_miss(isl) + 0.5 * self.eps_ttft)

    def budget_allowance(self, rate: float, isl: float) -> float:
        """prefill_allowed_miss adjusted by the error budget: the misses the last
        budget_window_s were allowed less those observed (decayed), spread over the
        requests of the next budget_spend_s, within budget_min/max_factor of it. Unspent
        budget (intervals that met the target with room, as integer replicas and the
        minimum size leave) buys fewer replicas at the peaks; an overspend buys more only
        when budget_min_factor is below 1."""
        base = self.prefill_allowed_miss(isl)
        if self.budget_requests <= 0:
            return base
        surplus = self.budget_allowed - self.budget_misses
        spend = max(1.0, rate * self.opt["budget_spend_s"])
        lo, hi = self.opt["budget_min_factor"] * base, self.opt["budget_max_factor"] * base
        return min(hi, max(lo, base + surplus / spend))

    def prefill_needed(
        self, rate: float, isl: float, allowed: float | None = None, max_replicas: int = 1024
    ) -> int:
        """Fewest replicas whose TTFT misses stay within `allowed` (default:
        prefill_allowed_miss, without the error budget)."""
        s = self.prefill_service_s(isl)
        c = max(1, math.ceil(rate * s / self.opt["max_rho"]))
        if allowed is None:
            allowed = self.prefill_allowed_miss(isl)
        while c < max_replicas and self.prefill_miss(c, rate, isl) > allowed:
            c += 1
        return c

    def decode_needed(self, rate: float, isl: float, osl: float, max_replicas: int = 1024) -> int:
        """Fewest replicas whose in-flight count, at its z-quantile, stays within the batch
        that still meets the ITL target."""
        n_max, _, _ = self.decode_limit(isl, osl)
        z = self.opt["decode_z"]
        d = 1
        while d < max_replicas:
            n = self.decode_inflight(rate, isl, osl, d)
            if math.isfinite(n) and _kv_quantile(n, z, self.context_cv2(isl, osl)) <= n_max:
                break
            d += 1
        return d

    # ------------------------------------------------------------------ one tick

    def decide(self, obs: Observation, state: ReplicaState, now_s: float) -> Decision:
        held = self._hold_or_idle(obs, state, now_s)
        if held is not None:
            return held
        lines: list[str] = []
        backlog_rate = self._learn(obs, state, lines)
        plan = self._horizon(obs, state, backlog_rate, lines)
        return self._size(plan, state, now_s, lines)

    def _hold_or_idle(self, obs: Observation, state: ReplicaState, now_s: float) -> Decision | None:
        """The rules for missing metrics and an idle service; None when neither applies."""
        cfg = self.cfg
        if obs.num_req is None or (not obs.idle and obs.missing):
            what = "request count" if obs.num_req is None else ", ".join(obs.missing)
            if obs.num_req is not None:
                self.num_req_pred.observe(obs.num_req)
            return hold(
                state,
                self.cfg,
                "hold-missing",
                f"{what} missing ({'; '.join(obs.errors) or 'no data'}): holding",
            )
        if not obs.idle:
            self.idle_since = None
            return None
        self.num_req_pred.observe(0.0)
        self.isl_pred.observe(self.last_isl)
        self.osl_pred.observe(self.last_osl)
        if self.idle_since is None:
            self.idle_since = now_s - obs.interval_s
        idle_for = now_s - self.idle_since
        if idle_for < self.opt["idle_grace_s"]:
            return hold(
                state,
                self.cfg,
                "idle-grace",
                f"idle for {idle_for:.0f} s, within the {self.opt['idle_grace_s']:.0f} s grace: holding",
            )
        p, d = clamp_min_max(cfg.min_replicas, cfg.min_replicas, cfg)
        return Decision(p, d, "idle-min", f"idle for {idle_for:.0f} s: both roles to the minimum")

    def _learn(self, obs: Observation, state: ReplicaState, lines: list[str]) -> float:
        """Feed the window to the predictors, the ISL distribution and the corrections;
        returns the rate (req/s) needed to drain what was left queued."""
        # The request counter counts finished requests, which an overloaded cluster caps at
        # its capacity: arrivals = finished + growth of the in-flight gauge.
        arrivals = obs.num_req
        if obs.inflight is not None and self.last_inflight is not None:
            arrivals = max(obs.num_req, obs.num_req + obs.inflight - self.last_inflight)
        backlog_rate = 0.0
        if obs.queued is not None and obs.queued > 0:
            backlog_rate = obs.queued / obs.interval_s  # drain what waits within one interval
        self.last_isl, self.last_osl = obs.isl_mean, obs.osl_mean
        self.isl_seen.append(obs.isl_mean)
        self.osl_seen.append(obs.osl_mean)
        self.last_itl_ms = obs.itl_mean_ms
        if obs.isl_quantiles and obs.num_req >= self.opt["correction_min_requests"]:
            if self.isl_tail is None:
                self.isl_tail, self.isl_level = obs.isl_quantiles, obs.isl_mean
            else:
                self.isl_tail = tuple(
                    0.5 * a + 0.5 * b for a, b in zip(self.isl_tail, obs.isl_quantiles, strict=True)
                )
                self.isl_level = 0.5 * self.isl_level + 0.5 * obs.isl_mean
        self._account(obs, max(1, state.prefill.ready), lines)
        if self.cfg.correction:
            self._correct(obs, state, lines)
        self.last_inflight = obs.inflight
        self.last_ready = {"prefill": state.prefill.ready, "decode": state.decode.ready}
        self.num_req_pred.observe(arrivals)
        self.isl_pred.observe(obs.isl_mean)
        self.osl_pred.observe(obs.osl_mean)
        if arrivals > obs.num_req or backlog_rate:
            lines.append(
                f"arrivals {arrivals:.0f} (finished {obs.num_req:.0f} + in-flight growth); "
                f"{obs.queued or 0:.0f} queued -> +{backlog_rate:.2f} req/s to drain"
            )
        return backlog_rate

    def _horizon(
        self, obs: Observation, state: ReplicaState, backlog_rate: float, lines: list[str]
    ) -> _Plan:
        """Per role, the worst interval until capacity asked for now is ready."""
        cfg = self.cfg
        rates, lengths, steps_of = {}, {}, {}
        for role, st in (("prefill", state.prefill), ("decode", state.decode)):
            startup = st.startup_estimate_s
            if startup is None:
                startup = cfg.startup_prefill_s if role == "prefill" else cfg.startup_decode_s
            steps = steps_of[role] = max(1, math.ceil(startup / cfg.interval_s) + 1)
            rates[role] = self._rate_ahead(steps, startup, lines, role) + backlog_rate
            # Lengths: the forecast, but never below the last observation or its steady
            # climb (a smoothing predictor lags a shift, and planning for shorter prompts
            # than the ones arriving costs SLA; planning for longer costs little).
            lengths[role] = (
                max(_max_ahead(self.isl_pred, steps) or 0.0, _trend_ahead(self.isl_seen, steps)),
                max(_max_ahead(self.osl_pred, steps) or 0.0, _trend_ahead(self.osl_seen, steps)),
            )
        # Stretch the observed ISL distribution only on a steady climb of its mean (not
        # on one window's jump: in a trace burst more prompts are mid-length, the long
        # ones are no longer; a cap at 4,096 tokens stays at 4,096).
        forecast_isl = _trend_ahead(self.isl_seen, steps_of["prefill"])
        self.tail_stretch = max(1.0, forecast_isl / self.isl_level) if self.isl_level else 1.0
        return _Plan(
            prefill_rate=rates["prefill"],
            decode_rate=rates["decode"],
            isl=lengths["prefill"][0],
            decode_isl=lengths["decode"][0],
            osl=lengths["decode"][1],
        )

    def _size(self, plan: _Plan, state: ReplicaState, now_s: float, lines: list[str]) -> Decision:
        """Replicas per role for the plan, then stability, stuck starts and the budget."""
        cfg = self.cfg
        isl, d_isl, osl = plan.isl, plan.decode_isl, plan.osl
        self.last_allowed = self.prefill_allowed_miss(isl)
        allowed = self.budget_allowance(plan.prefill_rate, isl)
        p_need = self.prefill_needed(plan.prefill_rate, isl, allowed)
        d_need = self.decode_needed(plan.decode_rate, d_isl, osl)
        lines.append(
            f"prefill: {plan.prefill_rate:.2f} req/s at ISL {isl:.0f}, service "
            f"{1000 * self.prefill_service_s(isl):.1f} ms (x{self.p_corr:.2f}): "
            f"P(TTFT > {cfg.ttft_ms:g} ms) <= {allowed:.3%} "
            f"(error budget; {self.last_allowed:.3%} without) needs {p_need}"
        )
        n_max, itl_at, context = self.decode_limit(d_isl, osl)
        lines.append(
            f"decode: {self.decode_inflight(plan.decode_rate, d_isl, osl, d_need):.1f} in flight "
            f"per replica at context {context:.0f}; <= {n_max:.0f}/replica keeps ITL "
            f"{itl_at:.1f} ms <= {cfg.itl_ms / self.d_corr:.1f} ms (target / {self.d_corr:.2f}) "
            f"at z={self.opt['decode_z']:g}: needs {d_need}"
        )

        # Capacity stuck in start-up is counted missing: ask for replacements on top.
        rules = ["scale"]
        for role, st in (("prefill", state.prefill), ("decode", state.decode)):
            if st.stuck:
                lines.append(
                    f"{role}: {st.stuck} replica(s) stuck starting past the timeout, replaced"
                )
                rules.append("stuck")
        p_want = p_need + state.prefill.stuck
        d_want = d_need + state.decode.stuck

        p = self._stabilize("prefill", p_want, state.prefill.desired, now_s, lines)
        d = self._stabilize("decode", d_want, state.decode.desired, now_s, lines)
        p, d = clamp_min_max(p, d, cfg)
        p, d, budget_note = self._share_budget(p, d, plan)
        if budget_note:
            lines.append(budget_note)
            rules.append("budget")

        return Decision(
            prefill=p,
            decode=d,
            rule="+".join(rules),
            reason=(
                f"plan for {plan.prefill_rate:.2f}/{plan.decode_rate:.2f} req/s "
                f"(prefill/decode horizon) at ISL {isl:.0f}/OSL {osl:.0f}: "
                f"need {p_need}P + {d_need}D -> {p}P + {d}D"
            ),
            prediction={
                "num_req": self.num_req_pred.predict(),
                "isl": isl,
                "osl": osl,
                "rate_prefill_horizon": plan.prefill_rate,
                "rate_decode_horizon": plan.decode_rate,
            },
            demand={
                "prefill_tokens_per_s": plan.prefill_rate * isl,
                "decode_tokens_per_s": plan.decode_rate * osl,
            },
            capacity={
                "prefill_tokens_per_s_per_replica": isl / self.prefill_service_s(isl),
                "decode_max_inflight_per_replica": n_max,
                "p_corr": self.p_corr,
                "d_corr": self.d_corr,
                "prefill_miss": self.prefill_miss(p, plan.prefill_rate, isl),
                "expected_ttft_at_target_quantile_ms": _finite_or_none(
                    self.prefill_ttft_quantile_ms(p, plan.prefill_rate, isl, cfg.target_attainment)
                ),
                "decode_miss": self.decode_miss(d, plan.decode_rate, d_isl, osl),
            },
            # The median, comparable with the observed mean; the tail is in capacity.
            expected_ttft_ms=_finite_or_none(
                self.prefill_ttft_quantile_ms(p, plan.prefill_rate, isl, 0.5)
            ),
            expected_itl_ms=itl_at * self.d_corr,
            arithmetic=tuple(lines),
        )

    # ------------------------------------------------------------------ pieces

    def _rate_ahead(self, steps: int, startup_s: float, lines: list[str], role: str) -> float:
        """Highest point forecast over the intervals until new capacity is ready, plus the
        headroom of the predictor's own one-step error quantile (the trend is in the point
        forecasts; widening the band with the horizon would double-count it). A count of
        Poisson arrivals varies by its own size (variance = mean) around a rate known
        exactly, and the queueing model already has Poisson arrivals: the headroom is only
        the error beyond that, the uncertainty of the rate itself."""
        q = self.opt["headroom_quantile"]
        point_1 = self.num_req_pred.predict(1) or 0.0
        upper_1 = self.num_req_pred.upper(q, 1)
        headroom = 0.0
        z = NormalDist().inv_cdf(q)
        if upper_1 is not None and z > 0:
            sd = max(0.0, upper_1 - point_1) / z
            headroom = z * math.sqrt(max(0.0, sd * sd - max(0.0, point_1)))
        peak = max((self.num_req_pred.predict(k) or 0.0) for k in range(1, steps + 1))
        best = peak + headroom
        lines.append(
            f"{role}: forecast peak over {steps} interval(s) (startup {startup_s:.0f} s) "
            f"{peak:.1f} + q{q:.2f} headroom {headroom:.1f} = {best:.1f} req/interval"
        )
        return best / self.cfg.interval_s

    def _observed_miss(self, obs: Observation, replicas: int) -> float | None:
        """The window's share of TTFTs above the target, from the histogram: exact at its
        bounds; inside the bucket holding the target, split the way the model's own TTFT
        distribution falls across that bucket (linear only where the model is flat there).
        Production buckets are coarse (Dynamo's: .22, .47 s around a 400 ms target), and a
        straight line through a bucket of a falling tail overstates the misses several
        times over, which the error budget would pay for in GPUs."""
        cdf, x = obs.ttft_cdf_ms, self.cfg.ttft_ms
        if cdf is None:
            return None
        lo_b, lo_s = 0.0, 0.0
        for hi_b, hi_s in cdf:
            if x <= hi_b:
                break
            lo_b, lo_s = hi_b, hi_s
        else:
            return 1.0 - lo_s
        if x == hi_b or hi_s <= lo_s or not obs.isl_mean:
            return cdf_fraction_above(cdf, x)
        rate = obs.num_req / obs.interval_s
        s_lo, s_x, s_hi = (
            self.prefill_miss(replicas, rate, obs.isl_mean, t) for t in (lo_b, x, hi_b)
        )
        if s_lo - s_hi <= 1e-9:
            return cdf_fraction_above(cdf, x)
        frac = min(1.0, max(0.0, (s_lo - s_x) / (s_lo - s_hi)))
        return 1.0 - (lo_s + (hi_s - lo_s) * frac)

    def _account(self, obs: Observation, replicas: int, lines: list[str]) -> None:
        """The error budget: this window's TTFT misses (from the TTFT histogram) against
        what the plan allowed, both decayed over budget_window_s."""
        over = self._observed_miss(obs, replicas) if obs.num_req else None
        if over is None or not obs.num_req:
            return
        decay = math.exp(-obs.interval_s / self.opt["budget_window_s"])
        self.budget_requests = self.budget_requests * decay + obs.num_req
        self.budget_misses = self.budget_misses * decay + obs.num_req * over
        self.budget_allowed = self.budget_allowed * decay + obs.num_req * self.last_allowed
        lines.append(
            f"TTFT error budget: {over:.2%} of {obs.num_req:.0f} missed {self.cfg.ttft_ms:g} ms; "
            f"window {self.budget_misses:.1f} missed of {self.budget_allowed:.1f} allowed "
            f"({self.budget_requests:.0f} requests)"
        )

    def _correct(self, obs: Observation, state: ReplicaState, lines: list[str]) -> None:
        """Observed vs expected latency; EMA-smoothed, bounded ratios that go both ways."""
        lo, hi, a = (
            self.opt["correction_min"],
            self.opt["correction_max"],
            self.opt["correction_alpha"],
        )
        if obs.num_req < self.opt["correction_min_requests"]:
            return
        # A backlog (requests piling up or draining, or waiting at the end of the window)
        # makes the window's latencies about the past, not about the model: no update.
        moved = (
            self.last_inflight is not None
            and obs.inflight is not None
            and abs(obs.inflight - self.last_inflight) > 0.05 * obs.num_req
        )
        if moved or (obs.queued or 0) > 2 * max(1, state.prefill.ready):
            lines.append("backlog in the window: corrections unchanged")
            return
        rate = obs.num_req / obs.interval_s
        ready_p = max(1, state.prefill.ready)
        rho = rate * self.prefill_service_s(obs.isl_mean) / ready_p
        # Only a settled window says something about the model: the replica count did not
        # change during it and the queue was stable (near rho = 1 any model error is
        # amplified and a backlog from an earlier interval dominates).
        settled = (
            state.prefill.starting == 0
            and state.prefill.draining == 0
            and state.prefill.ready == self.last_ready["prefill"]
        )
        if settled and rho < 0.9 and obs.ttft_p50_ms and obs.ttft_p90_ms:
            self._fit_prefill(obs, ready_p, rate, lines)
        ready_d = state.decode.ready
        settled_d = (
            state.decode.starting == 0
            and state.decode.draining == 0
            and state.decode.ready == self.last_ready["decode"]
        )
        if ready_d > 0 and obs.itl_mean_ms and obs.request_duration_mean_s and settled_d:
            # Time in decode = request duration less its TTFT (Dynamo counts the whole
            # duration, which overstates decode concurrency whenever prefill queues).
            decode_s = max(0.0, obs.request_duration_mean_s - (obs.ttft_mean_ms or 0.0) / 1000.0)
            concurrency = obs.num_req / ready_d * decode_s / obs.interval_s
            context = obs.isl_mean + obs.osl_mean / 2
            expected = float(self.profile.decode_itl_ms_at_concurrency(concurrency, context))
            if expected > 0:
                ratio = obs.itl_mean_ms / expected
                new = min(hi, max(lo, self.d_corr ** (1 - a) * ratio**a))
                lines.append(
                    f"ITL observed {obs.itl_mean_ms:.2f} ms vs profile {expected:.2f} ms: "
                    f"decode correction {self.d_corr:.2f} -> {new:.2f}"
                )
                self.d_corr = new

    def _fit_prefill(self, obs: Observation, replicas: int, rate: float, lines: list[str]) -> None:
        """Fit the two things the profile cannot know to the observed TTFT quantiles: how
        fast prefill really is (p_corr, from the median, which service time dominates) and
        how bursty arrivals are (arrival_cv2, from p90, which queueing dominates). Each is
        the value that makes the model's quantile equal the observed one; the state moves
        toward it by an EMA in log space, bounded per tick and overall."""
        a = self.opt["correction_alpha"]
        isl = obs.isl_mean
        # The fit matches the model's miss share at a histogram bound, which the histogram
        # counts exactly, not at an interpolated quantile. Production buckets are coarse
        # (Dynamo's are 2.2x wide: .1, .22, .47 s) and a quantile interpolated linearly inside
        # one is off by up to half a bucket. The median: the bound nearest it (the
        # interpolated p50 when none lies in 0.2-0.8). The burstiness: only a bound near p90
        # (share 0.85-0.97) is evidence; without one it stays (a body point or a tail
        # quantile drawn through a wide bucket read as burstiness cost 40% more GPUs).
        mid_ms, mid_miss = _cdf_point(obs.ttft_cdf_ms, 0.5, 0.2, 0.8) or (obs.ttft_p50_ms, 0.5)
        tail = _cdf_point(obs.ttft_cdf_ms, 0.9, 0.85, 0.97)
        if tail is None and obs.ttft_cdf_ms is None:
            tail = (obs.ttft_p90_ms, 0.1)
        fit_p = _solve_increasing(
            lambda v: self._with(p_corr=v, tail_stretch=1.0).prefill_miss(
                replicas, rate, isl, mid_ms
            ),
            mid_miss,
            self.opt["correction_min"],
            self.opt["correction_max"],
        )
        new_p = _ema_log(self.p_corr, fit_p, a, max_step=1.2)
        new_c = self.arrival_cv2
        if tail is not None:
            tail_ms, tail_miss = tail
            fit_c = _solve_increasing(
                lambda v: self._with(p_corr=new_p, arrival_cv2=v, tail_stretch=1.0).prefill_miss(
                    replicas, rate, isl, tail_ms
                ),
                tail_miss,
                0.25,
                self.opt["max_arrival_cv2"],
            )
            new_c = _ema_log(self.arrival_cv2, fit_c, a, max_step=2.0)
        lines.append(
            f"TTFT p50/p90 observed {obs.ttft_p50_ms:.0f}/{obs.ttft_p90_ms:.0f} ms on {replicas} "
            f"replicas: prefill speed x{self.p_corr:.2f} -> x{new_p:.2f}, arrival burstiness "
            f"CV^2 {self.arrival_cv2:.2f} -> {new_c:.2f}"
        )
        self.p_corr, self.arrival_cv2 = new_p, new_c

    def _with(self, **state: float) -> SlaPlanPolicy:
        """A shallow copy with some model parameters replaced (for fitting)."""
        twin = copy.copy(self)
        twin.__dict__.update(state)
        return twin

    def _stabilize(self, role: str, want: int, current: int, now_s: float, lines: list[str]) -> int:
        hist = self.history[role]
        if not hist:
            # The size the cluster started with counts as a recommendation from one
            # interval ago: the first ticks, with no history, do not shrink it at once.
            hist.append((now_s - self.cfg.interval_s, current))
        hist.append((now_s, want))
        window = self.opt["scale_down_window_s"]
        while hist and hist[0][0] < now_s - window:
            hist.popleft()
        if want > current:
            cap = current + max(4, math.ceil(current * self.opt["max_step_up_fraction"]))
            out = min(want, cap)
            self.last_up[role] = now_s
            if out < want:
                lines.append(f"{role}: step cap {cap} this tick")
            return out
        if want == current:
            return current
        lifetime = self.opt["min_lifetime_s"] or self.cfg.interval_s
        if now_s - self.last_up[role] < lifetime:
            lines.append(
                f"{role}: scaled up {now_s - self.last_up[role]:.0f} s ago, keeping {current}"
            )
            return current
        highest = max(w for _, w in hist)
        floor = current - max(1, math.floor(current * self.opt["max_step_down_fraction"]))
        out = max(highest, floor, want)
        if out < current:
            lines.append(
                f"{role}: scale down to the highest need of the last {window:.0f} s ({highest}), step floor {floor}"
            )
        return min(out, current)

    def _share_budget(self, p: int, d: int, plan: _Plan) -> tuple[int, int, str | None]:
        cfg = self.cfg
        budget = cfg.max_gpu_budget
        if budget is None or cfg.gpus(p, d) <= budget:
            return p, d, None
        gp, gd = cfg.gpus_per_prefill, cfg.gpus_per_decode
        # Start each role at the fewest replicas that keep up at all (below that every
        # request misses, so marginal gains are flat); if even that does not fit, share
        # the budget in proportion as Dynamo does.
        bp = max(cfg.min_replicas, min(p, self._stable_prefill(plan.prefill_rate, plan.isl)))
        bd = max(
            cfg.min_replicas,
            min(d, self._stable_decode(plan.decode_rate, plan.decode_isl, plan.osl)),
        )
        if cfg.gpus(bp, bd) > budget:
            bp, bd, _ = apply_budget(bp, bd, cfg)
        # Then give each next engine to the role whose expected misses per GPU drop most;
        # ties go to the role further below what it wants.
        while True:
            options = []
            if bp < p and cfg.gpus(bp + 1, bd) <= budget:
                gain = self.prefill_miss(bp, plan.prefill_rate, plan.isl) - self.prefill_miss(
                    bp + 1, plan.prefill_rate, plan.isl
                )
                options.append((gain / gp, p / bp, "prefill"))
            if bd < d and cfg.gpus(bp, bd + 1) <= budget:
                gain = self.decode_miss(
                    bd, plan.decode_rate, plan.decode_isl, plan.osl
                ) - self.decode_miss(bd + 1, plan.decode_rate, plan.decode_isl, plan.osl)
                options.append((gain / gd, d / bd, "decode"))
            if not options:
                break
            _, _, role = max(options)
            if role == "prefill":
                bp += 1
            else:
                bd += 1
        note = (
            f"GPU budget {budget} < {cfg.gpus(p, d)} wanted ({p}P + {d}D): "
            f"shared by marginal SLA gain -> {bp}P + {bd}D"
        )
        return bp, bd, note

    def _stable_prefill(self, rate: float, isl: float) -> int:
        return max(1, math.floor(rate * self.prefill_service_s(isl)) + 1)

    def _stable_decode(self, rate: float, isl: float, osl: float) -> int:
        d = 1
        while d < 1024 and not math.isfinite(self.decode_inflight(rate, isl, osl, d)):
            d += 1
        return d


def _max_ahead(pred, steps: int) -> float | None:
    """Highest point forecast over the next `steps` intervals (None without data)."""
    values = [v for k in range(1, steps + 1) if (v := pred.predict(k)) is not None]
    return max(values) if values else None


def _trend_ahead(seen: deque[float], steps: int) -> float:
    """The last value, or, when each of the last four rose by more than 2% over the one
    before (a climb, not noise), its linear extrapolation `steps` ahead: a smoothing
    predictor lags a steady climb (of prompt length, say), and planning for shorter
    prompts than arrive costs SLA."""
    if not seen:
        return 0.0
    xs = list(seen)
    if len(xs) == seen.maxlen and all(b > 1.02 * a for a, b in zip(xs, xs[1:], strict=False)):
        return xs[-1] + (xs[-1] - xs[0]) / (len(xs) - 1) * steps
    return xs[-1]


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None
