"""Engine performance profiles: prefill ISL -> TTFT and throughput, decode (KV usage,
context) -> ITL and throughput, interpolated monotonically from precomputed tables.

Interpolation rules (docs/profiles.md has the long version):

- Prefill, 1-D in ISL: linear between measured points. Above the range TTFT continues
  the line through the last two points; below it continues the line through the first
  two points, never under the proportional bound ttft0 * isl / isl0. Throughput is held
  at the edge value on both sides.
- Decode, points scattered over (kv_usage, context) as Dynamo stores them: the points of
  each measured context form one curve in kv usage, made non-decreasing with a running
  maximum (a busier engine is never faster). Below a curve's first point its ITL is held;
  above its last point it continues with the curve's average slope. Between measured
  contexts the curves are blended linearly in log(context); outside the measured contexts
  the edge curve is used (at fixed KV usage ITL depends mostly on the KV bytes read, which
  is what kv usage measures).
- Decode throughput per GPU is min(batch / ITL, measured): batch = kv * max_kv_tokens /
  context is the throughput the ITL implies for one engine; the measured throughput
  (interpolated as throughput * context, i.e. in KV-token units, held at the edges) caps
  it where the engine ran fewer sequences than nominal (vLLM's max_num_seqs) and converts
  to per-GPU units for tensor-parallel engines.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from planner.errors import ConfigError

# Dynamo's raw_data.npz keys, in the order they are checked.
PREFILL_KEYS = ("prefill_isl", "prefill_ttft", "prefill_thpt_per_gpu")
DECODE_KEYS = ("x_kv_usage", "y_context_length", "z_itl", "z_thpt_per_gpu", "max_kv_tokens")
ARRAY_KEYS = PREFILL_KEYS + DECODE_KEYS

# Dataclass field -> file key, so every message names the key a user finds in the file.
_FIELD_KEY = {
    "prefill_isl": "prefill_isl",
    "prefill_ttft_ms": "prefill_ttft",
    "prefill_thpt_per_gpu": "prefill_thpt_per_gpu",
    "decode_kv_usage": "x_kv_usage",
    "decode_context": "y_context_length",
    "decode_itl_ms": "z_itl",
    "decode_thpt_per_gpu": "z_thpt_per_gpu",
}

# Spacing of the kv-usage grid searched by best_decode_point (plus every measured kv).
_KV_GRID = np.linspace(0.0, 1.0, 401)
_BEST_CACHE_SIZE = 512


def _is_scalar(x: Any) -> bool:
    return isinstance(x, float | int) and not isinstance(x, bool)


def _out(x: np.ndarray, scalar: bool) -> float | np.ndarray:
    return float(x) if scalar else x


@dataclass(frozen=True, eq=False)
class _DecodeTables:
    """Per measured context: monotone ITL curve and KV-token throughput curve in kv usage."""

    contexts: list[float]
    log_contexts: list[float]
    kv: list[list[float]]
    itl_ms: list[list[float]]
    slope_ms: list[float]  # ITL growth per unit kv above a curve's last point
    g: list[list[float]]  # measured throughput * context (KV-token units), held at the edges
    kv_np: list[np.ndarray]
    itl_np: list[np.ndarray]
    g_np: list[np.ndarray]
    kv_grid: np.ndarray  # for best_decode_point: uniform grid plus every measured kv


@dataclass(frozen=True, eq=False)
class PerfProfile:
    """Measured or computed engine performance (one prefill engine, one decode engine).

    Arrays are 1-D float64 and read-only. Decode points are scattered: point i was
    measured at kv usage decode_kv_usage[i] (0..1 of max_kv_tokens) with every sequence at
    context decode_context[i]. Query methods take floats or arrays and return the same.
    """

    prefill_isl: np.ndarray
    prefill_ttft_ms: np.ndarray
    prefill_thpt_per_gpu: np.ndarray
    decode_kv_usage: np.ndarray
    decode_context: np.ndarray
    decode_itl_ms: np.ndarray
    decode_thpt_per_gpu: np.ndarray
    max_kv_tokens: int
    kv_bytes_per_token: float | None = None
    name: str = ""
    source: str = ""
    _pre: tuple = field(init=False, repr=False)
    _dec: _DecodeTables = field(init=False, repr=False)
    _best_cache: dict = field(init=False, repr=False)

    # -- construction -------------------------------------------------------------------

    def __post_init__(self) -> None:
        src = self.source or self.name or "profile"
        for f in _FIELD_KEY:
            arr = np.array(getattr(self, f), dtype=np.float64).reshape(-1)
            arr.setflags(write=False)
            object.__setattr__(self, f, arr)
        _validate(self, src)
        object.__setattr__(self, "max_kv_tokens", int(self.max_kv_tokens))
        object.__setattr__(self, "_pre", _prefill_tables(self))
        object.__setattr__(self, "_dec", _decode_tables(self, src))
        object.__setattr__(self, "_best_cache", {})

    @classmethod
    def from_arrays(
        cls,
        data: dict[str, Any],
        source: str,
        *,
        name: str | None = None,
        kv_bytes_per_token: float | None = None,
    ) -> PerfProfile:
        """Build from Dynamo's keys (npz or JSON ConfigMap form); ConfigError naming source
        and key on a missing key, a non-numeric, NaN/inf or out-of-range value, empty or
        mismatched arrays, or an ISL that is not strictly increasing."""
        arrays: dict[str, np.ndarray] = {}
        for key in ARRAY_KEYS:
            if key not in data:
                raise ConfigError(
                    f"missing key; expected all of {', '.join(ARRAY_KEYS)}", source=source, key=key
                )
            try:
                arr = np.asarray(data[key], dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise ConfigError(
                    f"value is not numeric ({exc}); expected a list of numbers",
                    source=source,
                    key=key,
                ) from None
            if arr.ndim > 1:
                raise ConfigError(
                    f"array has shape {arr.shape}; expected a 1-D list of numbers",
                    source=source,
                    key=key,
                )
            arrays[key] = arr.reshape(-1)
        mkv = arrays["max_kv_tokens"]
        if mkv.size != 1 or not np.isfinite(mkv[0]) or mkv[0] <= 0 or mkv[0] != round(mkv[0]):
            raise ConfigError(
                f"got {data['max_kv_tokens']!r}; expected one positive integer (or a 1-element list)",
                source=source,
                key="max_kv_tokens",
            )
        return cls(
            prefill_isl=arrays["prefill_isl"],
            prefill_ttft_ms=arrays["prefill_ttft"],
            prefill_thpt_per_gpu=arrays["prefill_thpt_per_gpu"],
            decode_kv_usage=arrays["x_kv_usage"],
            decode_context=arrays["y_context_length"],
            decode_itl_ms=arrays["z_itl"],
            decode_thpt_per_gpu=arrays["z_thpt_per_gpu"],
            max_kv_tokens=int(mkv[0]),
            kv_bytes_per_token=kv_bytes_per_token,
            name=name if name is not None else source,
            source=source,
        )

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Dynamo's keys (what np.savez writes for a raw_data.npz)."""
        return {
            "prefill_isl": self.prefill_isl.copy(),
            "prefill_ttft": self.prefill_ttft_ms.copy(),
            "prefill_thpt_per_gpu": self.prefill_thpt_per_gpu.copy(),
            "x_kv_usage": self.decode_kv_usage.copy(),
            "y_context_length": self.decode_context.copy(),
            "z_itl": self.decode_itl_ms.copy(),
            "z_thpt_per_gpu": self.decode_thpt_per_gpu.copy(),
            "max_kv_tokens": np.array([self.max_kv_tokens], dtype=np.int64),
        }

    # -- prefill --------------------------------------------------------------------------

    def prefill_ttft_ms_at(self, isl: float | np.ndarray) -> float | np.ndarray:
        """Time to first token (ms) of one request of `isl` tokens on an idle engine."""
        xs, ys, _, lo_slope, hi_slope = self._pre
        if _is_scalar(isl):
            if isl <= xs[0]:
                return max(ys[0] + lo_slope * (isl - xs[0]), ys[0] * max(isl, 0.0) / xs[0])
            if isl >= xs[-1]:
                return ys[-1] + hi_slope * (isl - xs[-1])
            i = bisect.bisect_right(xs, isl)
            x0, x1 = xs[i - 1], xs[i]
            return ys[i - 1] + (ys[i] - ys[i - 1]) * (isl - x0) / (x1 - x0)
        x = np.asarray(isl, dtype=np.float64)
        y = np.interp(x, self.prefill_isl, self.prefill_ttft_ms)
        y = np.where(x > xs[-1], ys[-1] + hi_slope * (x - xs[-1]), y)
        below = np.maximum(ys[0] + lo_slope * (x - xs[0]), ys[0] * np.maximum(x, 0.0) / xs[0])
        return _out(np.where(x < xs[0], below, y), False)

    def prefill_thpt_per_gpu_at(self, isl: float | np.ndarray) -> float | np.ndarray:
        """Prefill throughput (tokens/s/GPU) at `isl`; held at the edge values outside."""
        xs, _, ts, _, _ = self._pre
        if _is_scalar(isl):
            if isl <= xs[0]:
                return ts[0]
            if isl >= xs[-1]:
                return ts[-1]
            i = bisect.bisect_right(xs, isl)
            x0, x1 = xs[i - 1], xs[i]
            return ts[i - 1] + (ts[i] - ts[i - 1]) * (isl - x0) / (x1 - x0)
        return np.interp(
            np.asarray(isl, dtype=np.float64), self.prefill_isl, self.prefill_thpt_per_gpu
        )

    # -- decode ---------------------------------------------------------------------------

    def decode_itl_ms_at(
        self, kv_usage: float | np.ndarray, context: float | np.ndarray
    ) -> float | np.ndarray:
        """Inter-token latency (ms) of a decode step at `kv_usage` (0..1) with every
        sequence at `context` tokens. Non-decreasing in kv_usage; always positive."""
        t = self._dec
        if _is_scalar(kv_usage) and _is_scalar(context):
            j, w = _ctx_weight(t, context)
            a = _curve(t.kv[j], t.itl_ms[j], t.slope_ms[j], kv_usage)
            if w == 0.0:
                return a
            b = _curve(t.kv[j + 1], t.itl_ms[j + 1], t.slope_ms[j + 1], kv_usage)
            return a + w * (b - a)
        kv, ctx = np.broadcast_arrays(
            np.asarray(kv_usage, dtype=np.float64), np.asarray(context, dtype=np.float64)
        )
        return self._itl_vec(kv, ctx)

    def decode_thpt_per_gpu_at(
        self, kv_usage: float | np.ndarray, context: float | np.ndarray
    ) -> float | np.ndarray:
        """Output tokens/s/GPU at (kv_usage, context): min(batch / ITL, measured)."""
        t = self._dec
        if _is_scalar(kv_usage) and _is_scalar(context):
            if kv_usage <= 0.0:
                return 0.0
            ctx = max(float(context), 1.0)
            itl_ms = self.decode_itl_ms_at(kv_usage, context)
            implied = kv_usage * self.max_kv_tokens / ctx / (itl_ms / 1000.0)
            j, w = _ctx_weight(t, context)
            a = _hold(t.kv[j], t.g[j], kv_usage)
            g = a if w == 0.0 else a + w * (_hold(t.kv[j + 1], t.g[j + 1], kv_usage) - a)
            return min(implied, g / max(ctx, t.contexts[0]))
        kv, ctx = np.broadcast_arrays(
            np.asarray(kv_usage, dtype=np.float64), np.asarray(context, dtype=np.float64)
        )
        return self._thpt_vec(kv, ctx, self._itl_vec(kv, ctx))

    def decode_itl_ms_at_concurrency(
        self, concurrency: float | np.ndarray, context: float | np.ndarray
    ) -> float | np.ndarray:
        """ITL (ms) with `concurrency` sequences of `context` tokens on one decode engine."""
        if _is_scalar(concurrency) and _is_scalar(context):
            return self.decode_itl_ms_at(concurrency * context / self.max_kv_tokens, context)
        c = np.asarray(concurrency, dtype=np.float64)
        ctx = np.asarray(context, dtype=np.float64)
        return self.decode_itl_ms_at(c * ctx / self.max_kv_tokens, ctx)

    def best_decode_point(self, itl_ms: float, context: float) -> tuple[float, float, float]:
        """(thpt_per_gpu, itl_ms, kv_usage) of the highest-throughput kv usage whose ITL is
        at most `itl_ms` at `context`. When even one sequence misses the target, the
        lowest-ITL point (one sequence) is returned; its ITL exceeds the target."""
        kv, itl, thpt, pm_arg = self._best_curve(float(context))
        n = int(np.searchsorted(itl, itl_ms, side="right"))
        if n == 0:
            return float(thpt[0]), float(itl[0]), float(kv[0])
        k = int(pm_arg[n - 1])
        best = (float(thpt[k]), float(itl[k]), float(kv[k]))
        if n < len(kv):
            # The exact crossing inside the next segment; throughput linear on the segment
            # keeps the result non-decreasing in the target.
            f = (itl_ms - itl[n - 1]) / (itl[n] - itl[n - 1])
            t_cross = float(thpt[n - 1] + f * (thpt[n] - thpt[n - 1]))
            if t_cross > best[0]:
                best = (t_cross, float(itl_ms), float(kv[n - 1] + f * (kv[n] - kv[n - 1])))
        return best

    def best_decode_throughput_per_gpu(self, itl_ms: float, context: float) -> float:
        """Highest decode tokens/s/GPU meeting `itl_ms` at `context`; non-decreasing in
        itl_ms (the one-sequence throughput when nothing meets the target)."""
        return self.best_decode_point(itl_ms, context)[0]

    # -- internals --------------------------------------------------------------------------

    def _itl_vec(self, kv: np.ndarray, ctx: np.ndarray) -> np.ndarray:
        t = self._dec
        m = len(t.contexts)
        curves = np.empty((m,) + kv.shape)
        for j in range(m):
            xs, ys = t.kv_np[j], t.itl_np[j]
            c = np.interp(kv, xs, ys)
            curves[j] = np.where(kv > xs[-1], ys[-1] + t.slope_ms[j] * (kv - xs[-1]), c)
        return _blend(t, curves, ctx)

    def _thpt_vec(self, kv: np.ndarray, ctx: np.ndarray, itl_ms: np.ndarray) -> np.ndarray:
        t = self._dec
        m = len(t.contexts)
        curves = np.empty((m,) + kv.shape)
        for j in range(m):
            curves[j] = np.interp(kv, t.kv_np[j], t.g_np[j])
        g = _blend(t, curves, ctx)
        c = np.maximum(ctx, 1.0)
        implied = kv * self.max_kv_tokens / c / (itl_ms / 1000.0)
        out = np.minimum(implied, g / np.maximum(c, t.contexts[0]))
        return np.where(kv <= 0.0, 0.0, out)

    def _best_curve(self, context: float) -> tuple[np.ndarray, ...]:
        hit = self._best_cache.get(context)
        if hit is not None:
            return hit
        kv_one = min(max(context, 1.0) / self.max_kv_tokens, 1.0)
        grid = self._dec.kv_grid
        kv = np.concatenate(([kv_one], grid[grid > kv_one]))
        ctx = np.full_like(kv, context)
        itl = self._itl_vec(kv, ctx)
        thpt = self._thpt_vec(kv, ctx, itl)
        # Running argmax of throughput (earliest, i.e. lowest-ITL, point on ties).
        prev_max = np.concatenate(([-np.inf], np.maximum.accumulate(thpt)[:-1]))
        idx = np.arange(len(kv))
        pm_arg = np.maximum.accumulate(np.where(thpt > prev_max, idx, 0))
        out = (kv, itl, thpt, pm_arg)
        if len(self._best_cache) >= _BEST_CACHE_SIZE:
            self._best_cache.clear()
        self._best_cache[context] = out
        return out


# ---------------------------------------------------------------------------------------
# Validation and table construction


def _validate(p: PerfProfile, src: str) -> None:
    for f, key in _FIELD_KEY.items():
        arr = getattr(p, f)
        if arr.size == 0:
            raise ConfigError("array is empty; expected at least 2 values", source=src, key=key)
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:
            i = int(bad[0])
            raise ConfigError(
                f"value {arr[i]} at index {i} is not finite; expected a finite number",
                source=src,
                key=key,
            )
    for group in (
        ("prefill_isl", "prefill_ttft_ms", "prefill_thpt_per_gpu"),
        ("decode_kv_usage", "decode_context", "decode_itl_ms", "decode_thpt_per_gpu"),
    ):
        sizes = {_FIELD_KEY[f]: getattr(p, f).size for f in group}
        if len(set(sizes.values())) > 1:
            desc = ", ".join(f"{k}={n}" for k, n in sizes.items())
            raise ConfigError(
                f"array lengths differ ({desc}); expected equal lengths",
                source=src,
                key=next(k for k, n in sizes.items() if n != sizes[_FIELD_KEY[group[0]]]),
            )

    isl = p.prefill_isl
    if isl.size < 2:
        raise ConfigError(
            f"{isl.size} point; expected at least 2 ISL points", source=src, key="prefill_isl"
        )
    _positive(isl, src, "prefill_isl")
    steps = np.flatnonzero(np.diff(isl) <= 0)
    if steps.size:
        i = int(steps[0]) + 1
        raise ConfigError(
            f"value {isl[i]:g} at index {i} follows {isl[i - 1]:g}; expected strictly "
            "increasing ISLs (no duplicates)",
            source=src,
            key="prefill_isl",
        )
    _positive(p.prefill_ttft_ms, src, "prefill_ttft")
    _positive(p.prefill_thpt_per_gpu, src, "prefill_thpt_per_gpu")

    kv = p.decode_kv_usage
    out = np.flatnonzero((kv < 0.0) | (kv > 1.0))
    if out.size:
        i = int(out[0])
        raise ConfigError(
            f"value {kv[i]} at index {i}; expected a KV usage in [0, 1]",
            source=src,
            key="x_kv_usage",
        )
    _positive(p.decode_context, src, "y_context_length")
    _positive(p.decode_itl_ms, src, "z_itl")
    neg = np.flatnonzero(p.decode_thpt_per_gpu < 0)
    if neg.size:
        i = int(neg[0])
        raise ConfigError(
            f"value {p.decode_thpt_per_gpu[i]} at index {i}; expected >= 0",
            source=src,
            key="z_thpt_per_gpu",
        )
    mkv = p.max_kv_tokens
    if not isinstance(mkv, int | np.integer) or isinstance(mkv, bool) or mkv <= 0:
        raise ConfigError(
            f"got {mkv!r}; expected a positive integer", source=src, key="max_kv_tokens"
        )


def _positive(arr: np.ndarray, src: str, key: str) -> None:
    bad = np.flatnonzero(arr <= 0)
    if bad.size:
        i = int(bad[0])
        raise ConfigError(f"value {arr[i]} at index {i}; expected > 0", source=src, key=key)


def _prefill_tables(p: PerfProfile) -> tuple:
    xs = p.prefill_isl.tolist()
    ys = p.prefill_ttft_ms.tolist()
    ts = p.prefill_thpt_per_gpu.tolist()
    lo_slope = (ys[1] - ys[0]) / (xs[1] - xs[0])
    hi_slope = max((ys[-1] - ys[-2]) / (xs[-1] - xs[-2]), 0.0)
    return xs, ys, ts, lo_slope, hi_slope


def _decode_tables(p: PerfProfile, src: str) -> _DecodeTables:
    contexts = np.unique(p.decode_context)
    kv_l, itl_l, slope_l, g_l = [], [], [], []
    for c in contexts:
        sel = p.decode_context == c
        kv = p.decode_kv_usage[sel]
        itl = p.decode_itl_ms[sel]
        g = p.decode_thpt_per_gpu[sel] * c
        order = np.argsort(kv, kind="stable")
        kv, itl, g = kv[order], itl[order], g[order]
        # Repeated kv usages at one context: keep the slower ITL and the lower throughput.
        ukv, first = np.unique(kv, return_index=True)
        if ukv.size < kv.size:
            itl = np.maximum.reduceat(itl, first)
            g = np.minimum.reduceat(g, first)
            kv = ukv
        if kv.size < 2:
            raise ConfigError(
                f"context {c:g} has {kv.size} distinct kv usage(s); expected at least 2 "
                "points per context",
                source=src,
                key="y_context_length",
            )
        itl = np.maximum.accumulate(itl)
        slope = max((itl[-1] - itl[0]) / (kv[-1] - kv[0]), 0.0)
        kv_l.append(kv)
        itl_l.append(itl)
        slope_l.append(float(slope))
        g_l.append(g)
    grid = np.unique(np.concatenate([_KV_GRID, p.decode_kv_usage]))
    return _DecodeTables(
        contexts=contexts.tolist(),
        log_contexts=np.log(contexts).tolist(),
        kv=[a.tolist() for a in kv_l],
        itl_ms=[a.tolist() for a in itl_l],
        slope_ms=slope_l,
        g=[a.tolist() for a in g_l],
        kv_np=kv_l,
        itl_np=itl_l,
        g_np=g_l,
        kv_grid=grid[grid > 0.0],
    )


def _ctx_weight(t: _DecodeTables, context: float) -> tuple[int, float]:
    """Index j and weight w of curve j+1 for a context (log-linear; clamped outside)."""
    cs = t.contexts
    if context <= cs[0]:
        return 0, 0.0
    if context >= cs[-1]:
        return len(cs) - 1, 0.0
    j = bisect.bisect_right(cs, context) - 1
    lc = t.log_contexts
    return j, (math.log(context) - lc[j]) / (lc[j + 1] - lc[j])


def _curve(xs: list[float], ys: list[float], slope: float, x: float) -> float:
    if x <= xs[0]:
        return ys[0]
    if x >= xs[-1]:
        return ys[-1] + slope * (x - xs[-1])
    i = bisect.bisect_right(xs, x)
    x0 = xs[i - 1]
    return ys[i - 1] + (ys[i] - ys[i - 1]) * (x - x0) / (xs[i] - x0)


def _hold(xs: list[float], ys: list[float], x: float) -> float:
    if x <= xs[0]:
        return ys[0]
    if x >= xs[-1]:
        return ys[-1]
    i = bisect.bisect_right(xs, x)
    x0 = xs[i - 1]
    return ys[i - 1] + (ys[i] - ys[i - 1]) * (x - x0) / (xs[i] - x0)


def _blend(t: _DecodeTables, curves: np.ndarray, ctx: np.ndarray) -> np.ndarray:
    cs = np.asarray(t.contexts)
    m = len(cs)
    if m == 1:
        return curves[0]
    c = np.clip(ctx, cs[0], cs[-1])
    j = np.clip(np.searchsorted(cs, c, side="right") - 1, 0, m - 2)
    lc = np.asarray(t.log_contexts)
    w = (np.log(c) - lc[j]) / (lc[j + 1] - lc[j])
    a = np.take_along_axis(curves, j[None, ...], axis=0)[0]
    b = np.take_along_axis(curves, (j + 1)[None, ...], axis=0)[0]
    return a + w * (b - a)
