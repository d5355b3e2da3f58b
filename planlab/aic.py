"""Engine profiles from NVIDIA AIConfigurator's performance database (PyPI
`aiconfigurator-core`, Apache-2.0; the optional extra `planlab[aic]`).

AIConfigurator composes measured kernel timings (GEMM, attention, MoE, communication) per
GPU, backend and version into engine step times. `aic_profile` samples it on Dynamo's
profiler grid (planner.analytic.grid_profile, the analytic default's grid) and
`write_aic_profile` stores the result in Dynamo's profiler layout plus planlab's own file,
which every planlab command loads. AIConfigurator times the engine
only; `calibrate_overhead` fits the serving overhead it leaves out (HTTP, scheduling,
sampling) against a measured profile, and `ServingOverhead.apply` adds it.

The calls used (aiconfigurator_core.sdk.engine.EngineHandle and sdk.memory.estimate_kv_cache,
version 0.12): `EngineHandle.compile(model, system, backend, backend_version=..., tp_size=...,
moe_tp_size=..., moe_ep_size=..., gemm_quant_mode=..., moe_quant_mode=...,
kvcache_quant_mode=...)`, `predict_prefill_latency(1, isl)` for one prompt,
`decode_step_latency(batch, context - 2, 2)` for one decode step at `context`, and
`estimate_kv_cache(...)["total_kv_size_tokens"]` for the KV capacity.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from planner.analytic import grid_profile
from planner.errors import ConfigError
from planner.profile import PerfProfile

log = logging.getLogger(__name__)

EXTRA_HINT = "pip install 'planlab[aic]'"

# planlab's analytic model names -> the Hugging Face ids AIConfigurator ships configs for
# (aiconfigurator_core/model_configs/<org>--<name>_config.json).
AIC_MODEL_IDS = {
    "llama-3.1-8b": "meta-llama/Meta-Llama-3.1-8B",
    "llama-3.1-70b": "meta-llama/Meta-Llama-3.1-70B",
    "qwen3-0.6b": "Qwen/Qwen3-0.6B",
    "qwen3-8b": "Qwen/Qwen3-8B",
    "qwen3-32b": "Qwen/Qwen3-32B",
    "qwen3-30b-a3b": "Qwen/Qwen3-30B-A3B",
    "qwen3-235b-a22b": "Qwen/Qwen3-235B-A22B",
    "gpt-oss-20b": "openai/gpt-oss-20b",
    "gpt-oss-120b": "openai/gpt-oss-120b",
    "deepseek-v3": "deepseek-ai/DeepSeek-V3",
}

# planlab's analytic GPU names -> AIConfigurator's system names.
AIC_SYSTEMS = {
    "a100-80g": "a100_sxm",
    "h100-sxm": "h100_sxm",
    "h200": "h200_sxm",
    "b200": "b200_sxm",
    "b300": "b300_sxm",
    "gb200": "gb200",
    "l40s": "l40s",
}

BACKENDS = ("vllm", "sglang", "trtllm")
# planlab dtype -> AIConfigurator quant mode (GEMMQuantMode / MoEQuantMode / KVCacheQuantMode).
QUANTS = {"fp8": "fp8", "bf16": "bfloat16"}
# vLLM's defaults, the same as the analytic model's (gpu_memory_utilization, max_num_seqs,
# max_num_batched_tokens): the KV estimate and the largest decode batch sampled.
GPU_MEM_UTILIZATION = 0.9
MAX_BATCH = 1024
MAX_BATCHED_TOKENS = 8192


@dataclass(frozen=True)
class AicSpec:
    """One engine configuration AIConfigurator is asked about. quant None: the checkpoint's
    own (AIConfigurator reads it from the model config)."""

    model: str  # AIConfigurator's (Hugging Face) id
    system: str
    backend: str = "vllm"
    tp: int = 1
    ep: int = 1  # expert parallel degree of the MoE layers (moe_tp = tp / ep)
    quant: str | None = None
    kv_quant: str = "bf16"
    backend_version: str = "current"

    @property
    def label(self) -> str:
        ep = f"/ep{self.ep}" if self.ep > 1 else ""
        return (
            f"aic:{self.model}/{self.system}/{self.backend}-{self.backend_version}/"
            f"{self.quant or 'native'}/tp{self.tp}{ep}"
        )


def require_aic() -> Any:
    """The aiconfigurator_core module; ConfigError naming the extra when it is missing."""
    try:
        import aiconfigurator_core
    except ImportError:
        raise ConfigError(
            f"needs NVIDIA AIConfigurator, which is not installed: {EXTRA_HINT}",
            key="profile aic",
        ) from None
    return aiconfigurator_core


def _package_dir() -> Path:
    return Path(require_aic().__file__).parent


def known_models() -> list[str]:
    """planlab's names, then every Hugging Face id AIConfigurator ships a config for."""
    ids = sorted(
        f.name.removesuffix("_config.json").replace("--", "/", 1)
        for f in (_package_dir() / "model_configs").glob("*_config.json")
        if not f.name.endswith("_hf_quant_config.json")
    )
    return list(AIC_MODEL_IDS) + ids


def known_systems() -> list[str]:
    """AIConfigurator's systems that come with performance data."""
    root = _package_dir() / "systems"
    return sorted(
        f.stem
        for f in root.glob("*.yaml")
        if (root / "data" / f.stem).is_dir() and any((root / "data" / f.stem).iterdir())
    )


def resolve(
    model: str,
    system: str,
    backend: str = "vllm",
    tp: int = 1,
    *,
    ep: int = 1,
    quant: str | None = None,
    kv_quant: str = "bf16",
    backend_version: str = "current",
) -> AicSpec:
    """An AicSpec from user names (planlab's or AIConfigurator's); ConfigError naming the
    flag and the known values on a bad one."""
    models = known_models()
    if model not in models:
        raise ConfigError(
            f"unknown model {model!r}; expected one of {', '.join(models)}", key="--model"
        )
    system = AIC_SYSTEMS.get(system, system)
    systems = known_systems()
    if system not in systems:
        raise ConfigError(
            f"unknown system {system!r}; expected one of {', '.join(systems)} "
            f"(or planlab's {', '.join(AIC_SYSTEMS)})",
            key="--system",
        )
    if backend not in BACKENDS:
        raise ConfigError(
            f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}",
            key="--backend",
        )
    for flag, value in (("--quant", quant), ("--kv-quant", kv_quant)):
        if value is not None and value not in QUANTS:
            raise ConfigError(
                f"unknown {flag[2:]} {value!r}; expected one of {', '.join(QUANTS)}", key=flag
            )
    for flag, value in (("--tp", tp), ("--ep", ep)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 64:
            raise ConfigError(f"{value!r}; expected an integer 1..64", key=flag)
    if tp % ep:
        raise ConfigError(
            f"ep {ep} does not divide tp {tp}; expected a divisor of --tp (the MoE layers "
            "split over tp GPUs as ep expert groups of tp/ep)",
            key="--ep",
        )
    return AicSpec(
        AIC_MODEL_IDS.get(model, model), system, backend, tp, ep, quant, kv_quant, backend_version
    )


def _quiet_aic_logs() -> None:
    """AIConfigurator logs a warning per fallback data table it loads; keep them at debug
    level unless planlab is asked for them (-vv)."""
    if not log.isEnabledFor(logging.DEBUG):
        logging.getLogger("aiconfigurator_core").setLevel(logging.ERROR)


def _compile_kwargs(spec: AicSpec) -> dict[str, Any]:
    q = QUANTS[spec.quant] if spec.quant else None
    return {
        "backend_version": spec.backend_version,
        "tp_size": spec.tp,
        "moe_tp_size": spec.tp // spec.ep,
        "moe_ep_size": spec.ep,
        "gemm_quant_mode": q,
        "moe_quant_mode": q,
        "kvcache_quant_mode": QUANTS[spec.kv_quant],
    }


def _aic_error(spec: AicSpec, exc: Exception) -> ConfigError:
    return ConfigError(
        f"AIConfigurator cannot model {spec.label}: {type(exc).__name__}: {str(exc)[:400]}; "
        "expected a model, system, backend, quant and parallelism its database covers",
        key="profile aic",
    )


class AicEngine:
    """One compiled AIConfigurator engine: prefill and decode step times, KV capacity."""

    def __init__(self, spec: AicSpec) -> None:
        require_aic()
        _quiet_aic_logs()
        from aiconfigurator_core.sdk.engine import EngineHandle
        from aiconfigurator_core.sdk.memory import estimate_kv_cache

        self.spec = spec
        kw = _compile_kwargs(spec)
        try:
            self._handle = EngineHandle.compile(spec.model, spec.system, spec.backend, **kw)
            kv = estimate_kv_cache(
                spec.model,
                spec.system,
                spec.backend,
                kw.pop("backend_version"),
                max_num_tokens=MAX_BATCHED_TOKENS,
                max_batch_size=MAX_BATCH,
                memory_fraction_kind="of_free" if spec.backend == "trtllm" else "of_total",
                memory_fraction_value=GPU_MEM_UTILIZATION,
                **kw,
            )
        except Exception as exc:  # AIConfigurator raises ValueError and its own DB errors
            raise _aic_error(spec, exc) from None
        # AIConfigurator reports per GPU: each GPU holds its share of every token (or, for
        # MLA and for fewer KV heads than GPUs, a replica), so the engine holds tp times the
        # bytes for the same number of tokens.
        self.max_kv_tokens = int(kv["total_kv_size_tokens"])
        self.kv_bytes_per_token = float(kv["kv_size_per_token_bytes"]) * spec.tp
        self.weight_bytes = float(kv["memory_breakdown"]["weights_bytes"]) * spec.tp

    def prefill_ms(self, isl: np.ndarray | float) -> np.ndarray:
        """TTFT (ms) of one prompt of `isl` tokens on an idle engine."""
        h = self._handle
        return self._ask(lambda: [h.predict_prefill_latency(1, int(t)) for t in np.atleast_1d(isl)])

    def decode_ms(self, batch: np.ndarray | float, context: np.ndarray | float) -> np.ndarray:
        """Time (ms) of one decode step of `batch` sequences at `context` tokens each."""
        b, c = np.broadcast_arrays(np.atleast_1d(batch), np.atleast_1d(context))
        h = self._handle
        pairs = zip(b.ravel(), c.ravel(), strict=True)
        steps = self._ask(
            lambda: [h.decode_step_latency(int(x), max(1, int(y) - 2), 2) for x, y in pairs]
        )
        return steps.reshape(b.shape)

    def _ask(self, query) -> np.ndarray:
        """Run a query; AIConfigurator's missing-data errors surface at query time too."""
        try:
            return np.array(query(), dtype=np.float64)
        except Exception as exc:
            raise _aic_error(self.spec, exc) from None


@dataclass(frozen=True)
class ServingOverhead:
    """What a served engine adds to AIConfigurator's step times: measured = scale * aic +
    fixed_ms, one pair for prefill (TTFT) and one for decode (ITL)."""

    prefill_scale: float = 1.0
    prefill_ms: float = 0.0
    decode_scale: float = 1.0
    decode_ms: float = 0.0
    source: str = ""

    def prefill(self, aic_ms: np.ndarray) -> np.ndarray:
        return self.prefill_scale * np.asarray(aic_ms) + self.prefill_ms

    def decode(self, aic_ms: np.ndarray) -> np.ndarray:
        return self.decode_scale * np.asarray(aic_ms) + self.decode_ms


NO_OVERHEAD = ServingOverhead()


def _fit_scale_fixed(aic: np.ndarray, measured: np.ndarray) -> tuple[float, float]:
    """(scale, fixed) minimising the squared relative error of scale * aic + fixed against
    measured; fixed is held at >= 0 (a served engine is never faster than its kernels)."""
    a = np.column_stack([aic / measured, 1.0 / measured])
    (scale, fixed), *_ = np.linalg.lstsq(a, np.ones_like(measured), rcond=None)
    if fixed < 0:
        scale, fixed = float(np.sum(aic / measured) / np.sum((aic / measured) ** 2)), 0.0
    return float(scale), float(fixed)


def engine_sequences(measured: PerfProfile, tp: int) -> np.ndarray:
    """Sequences each measured decode point really ran: throughput per GPU x GPUs x ITL.
    (Nominal kv * max_kv / context overstates it where the engine hit its sequence cap.)"""
    return np.round(measured.decode_thpt_per_gpu * tp * measured.decode_itl_ms / 1000.0)


def calibrate_overhead(measured: PerfProfile, engine: AicEngine) -> ServingOverhead:
    """Fit the serving overhead on a measured profile of the engine `engine` models (the
    same model, GPU, quantization and TP): prefill on every measured ISL, decode on every
    measured point at the sequences it really ran."""
    isl = measured.prefill_isl
    p_scale, p_ms = _fit_scale_fixed(engine.prefill_ms(isl), measured.prefill_ttft_ms)
    seqs = engine_sequences(measured, engine.spec.tp)
    ok = seqs >= 1
    aic = engine.decode_ms(seqs[ok], measured.decode_context[ok])
    d_scale, d_ms = _fit_scale_fixed(aic, measured.decode_itl_ms[ok])
    return ServingOverhead(p_scale, p_ms, d_scale, d_ms, source=measured.source)


def aic_profile(
    spec: AicSpec, overhead: ServingOverhead = NO_OVERHEAD, engine: AicEngine | None = None
) -> PerfProfile:
    """A PerfProfile on Dynamo's grid from AIConfigurator's predictions for `spec`, plus
    `overhead` (none by default: AIConfigurator's engine times as they are)."""
    eng = engine or AicEngine(spec)
    name = spec.label + ("" if overhead == NO_OVERHEAD else "+overhead")
    try:
        return grid_profile(
            name,
            spec.tp,
            eng.max_kv_tokens,
            eng.kv_bytes_per_token,
            lambda isl: overhead.prefill(eng.prefill_ms(isl)),
            lambda b, c: overhead.decode(eng.decode_ms(b, c)),
            max_batch=MAX_BATCH,
        )
    except ConfigError as exc:
        raise ConfigError(
            f"{spec.label}: AIConfigurator leaves {exc.detail}; raise --tp or use a larger system",
            key="profile aic",
        ) from None


def write_aic_profile(profile: PerfProfile, out_dir: str | os.PathLike, metadata: dict) -> Path:
    """Write `profile` in Dynamo's flat profiler layout (prefill_raw_data.npz,
    decode_raw_data.npz: what Dynamo's planner reads; planlab.profiles.write_dynamo_profile,
    atomic, into a new or empty directory) and then planlab-profile.json beside it, which
    planlab reads first: it also carries the KV bytes per token and where the numbers came
    from. Returns the directory."""
    from planlab.profiles import write_dynamo_profile, write_profile

    out = write_dynamo_profile(profile, out_dir)
    write_profile(profile, out, metadata=metadata)
    return out


# The analytic-vs-AIConfigurator grid: prefill TTFT at these ISLs, decode ITL at these
# (batch, context) points (points beyond either model's KV capacity are left out).
GRID_ISLS = (128, 512, 1000, 2000, 4000, 8000, 16000)
GRID_DECODE = ((1, 1000), (8, 1000), (32, 1000), (128, 1000), (256, 1000),
               (1, 4000), (32, 4000), (128, 4000), (1, 8000), (64, 8000))  # fmt: skip


@dataclass(frozen=True)
class GridErrors:
    """Relative error analytic / reference - 1 at each grid point (NaN where left out)."""

    prefill: np.ndarray
    decode: np.ndarray


def analytic_vs_aic(
    model: str,
    gpu: str,
    dtype: str,
    tp: int,
    overhead: ServingOverhead,
    *,
    backend: str = "vllm",
    ep: int = 1,
    aic_quant: str | None = "same",
) -> GridErrors:
    """Errors of planlab's analytic model against AIConfigurator + `overhead` (the serving
    overhead, fitted once on a measured profile) for one engine both cover; AIConfigurator
    runs with the analytic dtype unless `aic_quant` says otherwise (None: the checkpoint's
    own, e.g. gpt-oss's MXFP4 experts)."""
    from planner.analytic import roofline

    r = roofline(model, gpu, dtype, tp, ep=ep)
    quant = dtype if aic_quant == "same" else aic_quant
    eng = AicEngine(resolve(model, gpu, backend, tp, ep=ep, quant=quant))
    isl = np.array(GRID_ISLS, dtype=np.float64)
    pre = np.asarray(r.prefill_ms(isl)) / overhead.prefill(eng.prefill_ms(isl)) - 1
    cap = min(r.max_kv_tokens, eng.max_kv_tokens)
    dec = np.full(len(GRID_DECODE), np.nan)
    for i, (b, c) in enumerate(GRID_DECODE):
        if b * c <= cap:
            dec[i] = (
                float(r.decode_itl_ms(b, c)) / float(overhead.decode(eng.decode_ms(b, c))[0]) - 1
            )
    return GridErrors(pre, dec)
