"""Engine timing model shared by the simulator and the emulator: prefill step, decode step
and KV-transfer times from a PerfProfile, precomputed into lookup tables.

The model (docs/simulator.md): the profile's single-request TTFT(l) is split into a fixed
per-step overhead `a` (TTFT extrapolated to ISL 0) and a marginal cost F(l) = TTFT(l) - a.
A prefill step over chunks costs a + sum of F(end) - F(start) over its chunks, so one whole
prompt costs exactly the profile's TTFT, batching amortises the overhead, and attention is
charged per prompt (not as one prompt of the batch's total length). A decode step costs the profile's ITL at the batch's KV
usage (tokens in use / max_kv_tokens) and mean context. The profile is evaluated once on
a grid so the simulator's hot loop does a list lookup instead of a scattered interpolation.
"""

from __future__ import annotations

import math

import numpy as np

DEFAULT_KV_BYTES_PER_TOKEN = 131072.0
"""Used when neither the profile nor an analytic model gives it: Llama-3.1-8B with a bf16
KV cache, 32 layers x 8 KV heads x 128 head dim x 2 (K and V) x 2 bytes."""

_KV_GRID = 201  # KV usage 0..1 in steps of 0.005
_CTX_GRID = 97  # mean context, log-spaced
_CTX_MIN = 16.0
_CTX_MAX = 262144.0
_KV_LAST = _KV_GRID - 1
_CTX_LAST = _CTX_GRID - 1
_log = math.log
_PREFILL_TABLE_MAX = 65536


class EngineTiming:
    """Step times of one engine type on one profile; seconds in, seconds out.

    kv_bytes_per_token: overrides the profile's value (None: the profile's, else the
    documented default); bandwidth_gbps is in gigabits per second.
    """

    def __init__(
        self,
        profile,
        *,
        kv_bytes_per_token: float | None = None,
        bandwidth_gbps: float = 200.0,
        latency_ms: float = 1.0,
        prefill_table_tokens: int = 16384,
    ):
        self.profile = profile
        self.max_kv_tokens = int(profile.max_kv_tokens)
        kvb = kv_bytes_per_token
        if kvb is None:
            kvb = getattr(profile, "kv_bytes_per_token", None)
        self.kv_bytes_per_token = float(kvb) if kvb else DEFAULT_KV_BYTES_PER_TOKEN
        self.bandwidth_bytes_s = bandwidth_gbps * 1e9 / 8.0
        self.latency_s = latency_ms / 1000.0
        self._kv_per_token_s = self.kv_bytes_per_token / self.bandwidth_bytes_s

        n = int(min(max(prefill_table_tokens, 32768), _PREFILL_TABLE_MAX))
        tokens = np.arange(n + 1, dtype=np.float64)
        tokens[0] = 1.0
        ttft_s = np.maximum(np.asarray(profile.prefill_ttft_ms_at(tokens), dtype=np.float64), 0.0)
        ttft_s /= 1000.0
        self._prefill_s: list[float] = ttft_s.tolist()
        self._prefill_n = n
        isl = np.asarray(profile.prefill_isl, dtype=np.float64)
        ttft0 = np.asarray(profile.prefill_ttft_ms, dtype=np.float64) / 1000.0
        if len(isl) >= 2 and isl[1] > isl[0]:
            slope = (ttft0[1] - ttft0[0]) / (isl[1] - isl[0])
            overhead = ttft0[0] - slope * isl[0]
        else:
            overhead = ttft0[0]
        self.prefill_overhead_s = float(min(max(overhead, 0.0), ttft0[0]))
        marginal = np.maximum(ttft_s - self.prefill_overhead_s, 0.0)
        marginal[0] = 0.0
        self._marginal_s: list[float] = marginal.tolist()

        kv = np.linspace(0.0, 1.0, _KV_GRID)
        self._log_ctx_min = math.log(_CTX_MIN)
        self._log_ctx_step = (math.log(_CTX_MAX) - self._log_ctx_min) / (_CTX_GRID - 1)
        ctx = np.exp(self._log_ctx_min + self._log_ctx_step * np.arange(_CTX_GRID))
        kk, cc = np.meshgrid(kv, ctx, indexing="ij")
        itl_ms = np.asarray(profile.decode_itl_ms_at(kk.ravel(), cc.ravel()), dtype=np.float64)
        itl_s = np.maximum(itl_ms.reshape(kk.shape), 1e-6) / 1000.0
        self._itl_flat: list[float] = itl_s.ravel().tolist()  # row i, column j at i * _CTX_GRID + j
        # decode_step_s interpolates between KV rows i and i + 1: their largest value bounds
        # it (the margin covers the interpolation's rounding, a few ulp).
        rows = itl_s.max(axis=1)
        self._kv_bound_s: list[float] = (np.maximum(rows[:-1], rows[1:]) * (1 + 1e-9)).tolist()

    def prefill_step_s(self, batch_tokens: int) -> float:
        """A prefill step over one prompt of batch_tokens tokens: the profile's TTFT."""
        t = int(batch_tokens)
        if t <= self._prefill_n:
            return self._prefill_s[t if t > 0 else 1]
        return float(self.profile.prefill_ttft_ms_at(float(t))) / 1000.0

    def prefill_marginal_s(self, tokens: int) -> float:
        """F(tokens): the profile's TTFT less the per-step overhead; F(0) = 0."""
        t = int(tokens)
        if t <= self._prefill_n:
            return self._marginal_s[t if t > 0 else 0]
        ttft_s = float(self.profile.prefill_ttft_ms_at(float(t))) / 1000.0
        return max(ttft_s - self.prefill_overhead_s, 0.0)

    def prefill_batch_s(self, chunks) -> float:
        """One prefill step over chunks given as (start, end) token offsets in their prompts."""
        total = self.prefill_overhead_s
        f = self.prefill_marginal_s
        for start, end in chunks:
            total += f(end) - f(start)
        return total

    def decode_step_s(self, batch_size: int, kv_tokens_in_use: float, mean_context: float) -> float:
        """One decode step (one token for each of batch_size requests); bilinear on the grid."""
        if batch_size <= 0:
            return 0.0
        x = kv_tokens_in_use / self.max_kv_tokens * _KV_LAST
        if x < 0.0:
            x = 0.0
        elif x > _KV_LAST:
            x = float(_KV_LAST)
        c = mean_context if mean_context > _CTX_MIN else _CTX_MIN
        y = (_log(c) - self._log_ctx_min) / self._log_ctx_step
        if y > _CTX_LAST:
            y = float(_CTX_LAST)
        i = int(x)
        j = int(y)
        if i >= _KV_LAST:
            i = _KV_LAST - 1
        if j >= _CTX_LAST:
            j = _CTX_LAST - 1
        fx = x - i
        fy = y - j
        itl = self._itl_flat
        k = i * _CTX_GRID + j
        a0 = itl[k]
        a = a0 + (itl[k + 1] - a0) * fy
        k += _CTX_GRID
        b0 = itl[k]
        b = b0 + (itl[k + 1] - b0) * fy
        return a + (b - a) * fx

    def decode_step_bound_s(self, kv_tokens_in_use: float) -> float:
        """An upper bound of decode_step_s at this KV usage, whatever the batch and context
        (cheaper than the step time itself: the simulator's skip-ahead checks against it)."""
        i = int(kv_tokens_in_use / self.max_kv_tokens * _KV_LAST)
        if i < 0:
            i = 0
        elif i >= _KV_LAST:
            i = _KV_LAST - 1
        return self._kv_bound_s[i]

    def kv_transfer_s(self, isl: int) -> float:
        """Moving isl tokens of KV from a prefill to a decode worker."""
        return isl * self._kv_per_token_s + self.latency_s
