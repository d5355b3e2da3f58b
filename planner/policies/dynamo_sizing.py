"""The arithmetic of Dynamo 1.6's throughput-based SLA planner, as pure functions: the linear
per-iteration model fitted to a profile, the batch-size search for one engine's request rate,
the per-tick change cap, and the direction-preserving GPU budget fit.

Facts ported from the `ai-dynamo` 1.6.1 wheel (Apache-2.0; the code here is planlab's own):

- dynamo/planner/monitoring/perf_metrics.py (_convert_prefill_profiling,
  _convert_decode_profiling): a profile becomes per-iteration samples. Prefill: wall time =
  TTFT at sum_prefill_tokens = ISL, one request. Decode: sum_decode_kv_tokens =
  round(kv_usage * max_kv_tokens), batch = max(1, round(kv_tokens / context)), wall time = ITL.
  `*_thpt_per_gpu` is not read.
- dynamo/planner/core/perf_model/{prefill,decode,base}.py: a linear regression of wall time,
  prefill on scheduled prefill tokens, decode on [num_decode_requests, sum_decode_kv_tokens];
  negative slopes are physically impossible ("more load, less time") and are not kept.
- dynamo/planner/core/perf_model/engine_query.py (_find_prefill_capacity,
  _find_decode_capacity, _capacity_batch_sizes, _select_capacity, _prefill_chunk_time,
  _prefill_max_batch, _decode_max_batch, _decode_context_length): the capacity search.
- dynamo/planner/core/throughput_scaling.py (_cap_throughput_replicas, _throughput_disagg).
- dynamo/planner/core/budget.py (proportional_clamp_pair, fit_directional_budget_pair,
  guard_disagg_scaling_budget) and core/state_machine.py (_startup_reduction,
  _fit_disagg_throughput_ceiling, _apply_disagg_scaling_budget). planlab has no GPU floor
  (Dynamo's min_gpu_budget, -1 by default), so only the ceiling half is ported.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from planner.profile import PerfProfile

# dynamo/planner/config/defaults.py (BasePlannerDefaults) and core/perf_model/engine_query.py.
DEFAULT_MAX_NUM_BATCHED_TOKENS = 8192
DEFAULT_MAX_NUM_SEQS = 256  # vLLM's default; Dynamo reads the worker's, the brief fixes 256
MAX_THROUGHPUT_SCALING_REPLICAS = 8
MAX_CAPACITY_SEARCH_CANDIDATES = 128


@dataclass(frozen=True)
class LinearFit:
    """wall_s = intercept_s + sum(slope_s[i] * x[i]); every slope >= 0."""

    features: tuple[str, ...]
    intercept_s: float
    slopes_s: tuple[float, ...]
    samples: int
    note: str = ""

    def wall_s(self, *x: float) -> float:
        # engine_query clips an estimate at zero (max(0.0, estimate_ms)).
        return max(
            0.0, self.intercept_s + sum(s * v for s, v in zip(self.slopes_s, x, strict=True))
        )

    def describe(self, unit_scale: float = 1000.0) -> str:
        terms = " + ".join(
            f"{s * unit_scale:.4g} ms x {name}"
            for s, name in zip(self.slopes_s, self.features, strict=True)
        )
        note = f"; {self.note}" if self.note else ""
        return f"{self.intercept_s * unit_scale:.4g} ms + {terms} ({self.samples} profile points{note})"


def fit_nonnegative(x: np.ndarray, y: np.ndarray, features: tuple[str, ...]) -> LinearFit:
    """Least squares with a free intercept and non-negative slopes: the best fit over every
    subset of features whose own unconstrained fit has no negative slope (an exact
    non-negative least squares for the one or two features Dynamo uses)."""
    x = np.asarray(x, dtype=np.float64).reshape(len(y), -1)
    y = np.asarray(y, dtype=np.float64)
    k = x.shape[1]
    best: tuple[float, float, tuple[float, ...]] | None = None
    for r in range(k, -1, -1):
        for keep in itertools.combinations(range(k), r):
            a = np.column_stack([np.ones(len(y))] + [x[:, i] for i in keep])
            coef, *_ = np.linalg.lstsq(a, y, rcond=None)
            if np.any(coef[1:] < 0):
                continue
            sse = float(np.sum((a @ coef - y) ** 2))
            slopes = [0.0] * k
            for i, c in zip(keep, coef[1:], strict=True):
                slopes[i] = float(c)
            if best is None or sse < best[0] - 1e-18:
                best = (sse, float(coef[0]), tuple(slopes))
    assert best is not None  # the intercept-only fit is always feasible
    return LinearFit(features, best[1], best[2], len(y))


def fit_prefill(profile: PerfProfile, max_batched_tokens: int | None = None) -> LinearFit:
    """Per-iteration prefill time on scheduled tokens, one sample per profiled ISL (Dynamo
    seeds its regression with every profile point).

    One exception, stated in the fit's name: when that line gives a non-positive time at
    the shortest profiled ISL (long-context points, quadratic attention, tilt it), the fit
    is redone on the ISLs an engine runs in one iteration (at most max_batched_tokens).
    Dynamo would report its model not ready there until its live tuning (forward-pass
    metrics every 5 s, 64 samples kept) replaced the profile with real iterations, none
    larger than max_num_batched_tokens; planlab has no live tuning and fits that domain."""
    isl = np.array([int(v) for v in profile.prefill_isl], dtype=np.float64)
    ttft_s = profile.prefill_ttft_ms / 1000.0
    fit = fit_nonnegative(isl, ttft_s, ("prefill tokens",))
    if max_batched_tokens is not None and fit.wall_s(float(isl[0])) <= 0:
        keep = isl <= max_batched_tokens
        if int(keep.sum()) >= 2:
            fit = fit_nonnegative(isl[keep], ttft_s[keep], ("prefill tokens",))
            fit = LinearFit(
                fit.features,
                fit.intercept_s,
                fit.slopes_s,
                fit.samples,
                note=f"refit on ISL <= {max_batched_tokens}: the all-points line is negative "
                f"at ISL {isl[0]:.0f}",
            )
    return fit


def fit_decode(profile: PerfProfile) -> LinearFit:
    """Per-iteration decode time on [batch, KV tokens], one sample per profiled point."""
    kv = np.array([round(float(u) * profile.max_kv_tokens) for u in profile.decode_kv_usage])
    ctx = profile.decode_context
    batch = np.array(
        [max(1, round(k / c)) if c > 0 else 1 for k, c in zip(kv, ctx, strict=True)], dtype=float
    )
    x = np.column_stack([batch, kv.astype(np.float64)])
    return fit_nonnegative(x, profile.decode_itl_ms / 1000.0, ("sequences", "KV tokens"))


def batch_candidates(max_batch: int) -> list[int]:
    """1..max_batch, or MAX_CAPACITY_SEARCH_CANDIDATES evenly spread sizes beyond that."""
    if max_batch <= 0:
        return []
    if max_batch <= MAX_CAPACITY_SEARCH_CANDIDATES:
        return list(range(1, max_batch + 1))
    span, den = max_batch - 1, MAX_CAPACITY_SEARCH_CANDIDATES - 1
    return [1 + i * span // den for i in range(MAX_CAPACITY_SEARCH_CANDIDATES)]


@dataclass(frozen=True)
class Capacity:
    """One engine's sustainable request rate at the chosen batch size, and its latency."""

    rps: float
    batch: int
    max_batch: int
    latency_s: float  # prefill: TTFT of the batch; decode: ITL at the batch
    eligible: bool  # the latency meets the target
    searched: int  # batch sizes tried


def _select(best: Capacity | None, cand: Capacity) -> Capacity:
    """An eligible candidate beats an ineligible one; otherwise the higher rate wins."""
    if best is None or (cand.eligible and not best.eligible):
        return cand
    if best.eligible and not cand.eligible:
        return best
    return cand if cand.rps > best.rps else best


def chunked_prefill_s(fit: LinearFit, tokens: int, max_batched_tokens: int) -> float:
    """Prefill of `tokens` in max_batched_tokens-sized iterations plus a tail."""
    full, tail = divmod(tokens, max_batched_tokens)
    t = full * fit.wall_s(max_batched_tokens) if full else 0.0
    return t + (fit.wall_s(tail) if tail else 0.0)


def prefill_capacity(
    fit: LinearFit, isl: float, ttft_target_s: float, max_batched_tokens: int, max_num_seqs: int
) -> Capacity | None:
    """Best engine rate B / TTFT(B x ISL) over B up to min(max_num_seqs, tokens // ISL)."""
    isl_tokens = max(1, math.ceil(isl))
    max_batch = (
        1
        if isl_tokens > max_batched_tokens
        else min(max_num_seqs, max_batched_tokens // isl_tokens)
    )
    best = None
    cands = batch_candidates(max_batch)
    for b in cands:
        ttft = chunked_prefill_s(fit, b * isl_tokens, max_batched_tokens)
        if ttft <= 0:
            continue
        best = _select(
            best, Capacity(b / ttft, b, max_batch, ttft, ttft <= ttft_target_s, len(cands))
        )
    return best


def decode_context_tokens(isl: float, osl: float) -> int:
    return max(1, math.ceil(isl) + max(1, math.ceil(osl)) // 2)


def decode_capacity(
    fit: LinearFit,
    isl: float,
    osl: float,
    itl_target_s: float,
    max_kv_tokens: int,
    max_num_seqs: int,
) -> Capacity | None:
    """Best engine rate B / (OSL x ITL(B)) over B up to min(max_num_seqs, KV // context)."""
    osl_tokens = max(1, math.ceil(osl))
    ctx = decode_context_tokens(isl, osl)
    max_batch = min(max_num_seqs, max_kv_tokens // ctx)
    best = None
    cands = batch_candidates(max_batch)
    for b in cands:
        itl = fit.wall_s(b, b * ctx)
        if itl <= 0:
            continue
        cand = Capacity(b / (osl_tokens * itl), b, max_batch, itl, itl <= itl_target_s, len(cands))
        best = _select(best, cand)
    return best


def cap_change(desired: int, current: int, limit: int) -> int:
    """At most `limit` replicas added or removed per tick."""
    return min(max(desired, max(0, current - limit)), current + limit)


def startup_reduction(target: int, ready: int, starting: int) -> int | None:
    """While replicas start, a target counts only as a reduction (cancel pending, or drop
    ready ones); None: leave the role as it is."""
    if target > ready or target >= ready + starting:
        return None
    return target


# -- the GPU budget (ceiling only: planlab has no GPU floor) ------------------------------


def proportional_clamp(
    p: int, d: int, gp: int, gd: int, budget: int, min_p: int, min_d: int
) -> tuple[int, int]:
    """Shrink both roles by budget / total, prefill first, decode takes the rest."""
    total = p * gp + d * gd
    if total <= budget:
        return p, d
    if budget < min_p * gp + min_d * gd:
        return 0, 0  # Dynamo's answer; planlab rejects such a budget at load time
    scale = budget / total
    new_p = max(min_p, min((budget - min_d * gd) // gp, math.floor(p * scale)))
    new_d = max(min_d, (budget - new_p * gp) // gd)
    return new_p, new_d


def fit_directional(
    cur_p: int,
    cur_d: int,
    prop_p: int,
    prop_d: int,
    gp: int,
    gd: int,
    budget: int,
    min_p: int,
    min_d: int,
) -> tuple[int, int]:
    """The pair under the budget, each role between its current and proposed count, closest
    to the proposal (then the most proportional progress); an opposing rebalance moves both
    roles or neither. The current pair when nothing fits."""
    p_low, p_high = max(min(cur_p, prop_p), min_p), max(cur_p, prop_p)
    d_low, d_high = max(min(cur_d, prop_d), min_d), max(cur_d, prop_d)
    p_high = min(p_high, (budget - d_low * gd) // gp)
    d_high = min(d_high, (budget - p_low * gp) // gd)
    if p_low > p_high or d_low > d_high:
        return cur_p, cur_d
    if prop_p >= min_p and prop_d >= min_d and prop_p * gp + prop_d * gd <= budget:
        return prop_p, prop_d
    opposing = (prop_p < cur_p and prop_d > cur_d) or (prop_p > cur_p and prop_d < cur_d)
    want_p, want_d = abs(prop_p - cur_p), abs(prop_d - cur_d)
    best = None
    for cp in range(p_low, p_high + 1):
        lo, hi = d_low, min(d_high, (budget - cp * gp) // gd)
        if opposing:
            if cp == cur_p:
                if lo <= cur_d <= hi:
                    lo = hi = cur_d
                else:
                    continue
            elif prop_d > cur_d:
                lo = max(lo, cur_d + 1)
            else:
                hi = min(hi, cur_d - 1)
        if lo > hi:
            continue
        cd = min(max(prop_d, lo), hi)
        step_p, step_d = abs(cp - cur_p), abs(cd - cur_d)
        score = (
            abs(prop_p - cp) + abs(prop_d - cd),
            abs(step_p * want_d - step_d * want_p),
            -(step_p + step_d),
            cp,
            cd,
        )
        if best is None or score < best[0]:
            best = (score, (cp, cd))
    return (cur_p, cur_d) if best is None else best[1]


def fit_budget(
    cur_p: int,
    cur_d: int,
    prop_p: int,
    prop_d: int,
    gp: int,
    gd: int,
    budget: int,
    min_p: int,
    min_d: int,
) -> tuple[int, int, str | None]:
    """Dynamo's two budget steps for a disaggregated throughput proposal: fit under the
    ceiling without reversing a direction, then guard it (at the ceiling a scale-up happens
    only as an opposing rebalance). Returns the pair and what bound it, or None."""
    if cur_p < min_p or cur_d < min_d:
        p, d = proportional_clamp(
            max(prop_p, min_p), max(prop_d, min_d), gp, gd, budget, min_p, min_d
        )
        return p, d, None if (p, d) == (prop_p, prop_d) else "endpoint recovery under the budget"
    p, d = fit_directional(cur_p, cur_d, prop_p, prop_d, gp, gd, budget, min_p, min_d)
    note = None
    if (p, d) == (cur_p, cur_d) != (prop_p, prop_d):
        note = "at the GPU ceiling: hold"
    elif (p, d) != (prop_p, prop_d):
        note = "fitted under the GPU ceiling"
    total = cur_p * gp + cur_d * gd
    if total > budget:
        rp, rd = proportional_clamp(cur_p, cur_d, gp, gd, budget, min_p, min_d)
        return rp, rd, "current allocation over the budget: reconciled"
    any_up = p > cur_p or d > cur_d
    opposing = (p < cur_p and d > cur_d) or (p > cur_p and d < cur_d)
    if total >= budget and any_up:
        if not opposing:
            return cur_p, cur_d, "at the GPU ceiling: hold"
        fp, fd = fit_directional(cur_p, cur_d, p, d, gp, gd, budget, min_p, min_d)
        if (fp, fd) == (cur_p, cur_d):
            return cur_p, cur_d, "at the GPU ceiling: hold"
        return fp, fd, note
    np_, nd = proportional_clamp(p, d, gp, gd, budget, min_p, min_d)
    within = min(cur_p, p) <= np_ <= max(cur_p, p) and min(cur_d, d) <= nd <= max(cur_d, d)
    if not within or np_ * gp + nd * gd > budget:
        return cur_p, cur_d, "budget would reverse a direction: hold"
    return np_, nd, note
