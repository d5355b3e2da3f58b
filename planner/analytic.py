"""Analytic (roofline) engine profiles from a model config and GPU specs: the embedded default.

The model, per engine of `tp` GPUs (docs/profiles.md has the derivation):

- prefill of T tokens (one sequence, causal attention):
  overhead + max(compute, memory) + all-reduce, where compute is the linear-layer FLOPs
  2 * P_layers * T at the weight dtype's peak plus the attention FLOPs 2 * L * H * d * T^2
  (QK^T and AV over the causal half) at the bf16 peak, both / (eff * tp); memory is the
  weights plus activation traffic / (eff * bandwidth * tp).
- one decode step of B sequences at context C:
  overhead + (weights read + B * C * kv_bytes_per_token) / (eff_m * bandwidth * tp)
  + B * (2 * P_layers+lm_head + 4 * L * H * d * C) FLOPs / (eff_c * peak * tp) + all-reduce.
- max_kv_tokens = (tp * HBM * gpu_mem_utilization - weights - tp * reserve) / kv_bytes_per_token.

The efficiency factors and overheads were fitted once (least squares on log error) to the
measured Dynamo profile of Llama-3.1-8B FP8 on one H200 (vLLM); they are reused for every
model and GPU, which is the model's main limit: other kernels, GPUs and sizes will differ.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from planner.errors import ConfigError
from planner.profile import PerfProfile

GIB = 1024**3

# Weight/KV bytes per element.
DTYPE_BYTES = {"fp8": 1, "bf16": 2}


@dataclass(frozen=True)
class ModelConfig:
    """A dense decoder-only transformer (Llama / Qwen3 layout: GQA attention, SwiGLU MLP)."""

    name: str
    hf_id: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tie_embeddings: bool = False

    @property
    def layer_params(self) -> int:
        """Parameters of the decoder layers' linear projections (norms are negligible)."""
        q_o = 2 * self.hidden * self.heads * self.head_dim
        k_v = 2 * self.hidden * self.kv_heads * self.head_dim
        mlp = 3 * self.hidden * self.intermediate
        return self.layers * (q_o + k_v + mlp)

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden

    @property
    def params(self) -> int:
        lm_head = 0 if self.tie_embeddings else self.embedding_params
        return self.layer_params + self.embedding_params + lm_head


# Facts from each model's Hugging Face config.json (huggingface.co/<hf_id>/blob/main/config.json):
# num_hidden_layers, hidden_size, num_attention_heads, num_key_value_heads, head_dim
# (hidden_size / num_attention_heads for Llama), intermediate_size, vocab_size,
# tie_word_embeddings.
MODELS: dict[str, ModelConfig] = {
    m.name: m
    for m in (
        ModelConfig("llama-3.1-8b", "meta-llama/Llama-3.1-8B-Instruct",
                    32, 4096, 32, 8, 128, 14336, 128256),
        ModelConfig("llama-3.1-70b", "meta-llama/Llama-3.1-70B-Instruct",
                    80, 8192, 64, 8, 128, 28672, 128256),
        ModelConfig("qwen3-0.6b", "Qwen/Qwen3-0.6B",
                    28, 1024, 16, 8, 128, 3072, 151936, tie_embeddings=True),
        ModelConfig("qwen3-8b", "Qwen/Qwen3-8B",
                    36, 4096, 32, 8, 128, 12288, 151936),
        ModelConfig("qwen3-32b", "Qwen/Qwen3-32B",
                    64, 5120, 64, 8, 128, 25600, 151936),
    )
}  # fmt: skip


@dataclass(frozen=True)
class GPUSpec:
    """Dense (no sparsity) tensor-core peaks, memory bandwidth and size, GPU-to-GPU link.

    fp8_tflops is None where the GPU has no FP8 tensor cores (A100): FP8 there means
    weight-only FP8 (1-byte weights, as vLLM's Marlin kernels run it) computed at the
    bf16 rate.
    """

    name: str
    bf16_tflops: float
    fp8_tflops: float | None
    hbm_gbps: float  # GB/s (1e9 bytes)
    hbm_gib: float  # as the driver reports it (nvidia-smi total / 1024)
    link_gbps: float  # GB/s per direction to the peer GPUs (NVLink; PCIe on L40S)


# Vendor datasheets (dense figures are half the "with sparsity" ones):
# A100 80GB SXM: nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/
#   nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf (312 TF bf16, 2,039 GB/s, NVLink 600 GB/s)
# H100 SXM: nvidia.com/en-us/data-center/h100/ (989 TF bf16, 1,979 TF fp8, 3.35 TB/s, 80 GB,
#   NVLink 900 GB/s)
# H200 SXM: nvidia.com/en-us/data-center/h200/ (same tensor cores as H100, 4.8 TB/s, 141 GB)
# B200 (HGX B200): nvidia.com/en-us/data-center/hgx/ (2.25 PF bf16, 4.5 PF fp8 dense,
#   8 TB/s, 180 GB, NVLink 1.8 TB/s)
# L40S: nvidia.com/en-us/data-center/l40s/ (362 TF bf16, 733 TF fp8, 864 GB/s, 48 GB GDDR6,
#   PCIe Gen4 x16 64 GB/s)
# Memory as nvidia-smi reports it: 81,920 / 81,559 / 143,771 / 183,359 / 46,068 MiB.
GPUS: dict[str, GPUSpec] = {
    g.name: g
    for g in (
        GPUSpec("a100-80g", 312.0, None, 2039.0, 81920 / 1024, 300.0),
        GPUSpec("h100-sxm", 989.0, 1979.0, 3350.0, 81559 / 1024, 450.0),
        GPUSpec("h200", 989.0, 1979.0, 4800.0, 143771 / 1024, 450.0),
        GPUSpec("b200", 2250.0, 4500.0, 8000.0, 183359 / 1024, 900.0),
        GPUSpec("l40s", 362.0, 733.0, 864.0, 46068 / 1024, 32.0),
    )
}


@dataclass(frozen=True)
class Efficiency:
    """Achieved fraction of peak and fixed costs; fitted, see the module docstring."""

    prefill_compute: float = 0.505
    prefill_memory: float = 0.7
    prefill_overhead_ms: float = 17.86
    decode_memory: float = 0.95
    decode_compute: float = 0.214
    decode_overhead_ms: float = 2.54
    allreduce_latency_us: float = 8.0  # per all-reduce call (two per layer)
    gpu_mem_utilization: float = 0.9  # vLLM's default
    reserve_gib: float = 1.39  # per GPU: CUDA context, graphs, non-torch memory
    max_batched_tokens: int = 8192  # vLLM's prefill token budget, sizes activation memory
    max_sampled_seqs: int = 1024  # logits kept for this many sequences (vLLM max_num_seqs)


CALIBRATED = Efficiency()


@dataclass(frozen=True)
class Roofline:
    """One engine of `tp` GPUs running `model` with `dtype` weights and `kv_dtype` KV cache.

    The pieces the simulator may reuse: prefill_ms, decode_itl_ms, kv_bytes_per_token,
    max_kv_tokens.
    """

    model: ModelConfig
    gpu: GPUSpec
    dtype: str = "fp8"
    tp: int = 1
    kv_dtype: str = "bf16"
    eff: Efficiency = CALIBRATED

    # -- memory -------------------------------------------------------------------------

    @property
    def weight_bytes(self) -> float:
        """Bytes of weights in one engine. FP8 checkpoints (e.g. nvidia/...-FP8) quantise the
        decoder's linear layers only; embeddings and lm_head stay bf16."""
        m = self.model
        lm_head = 0 if m.tie_embeddings else m.embedding_params
        return m.layer_params * DTYPE_BYTES[self.dtype] + (m.embedding_params + lm_head) * 2

    @property
    def decode_weight_bytes(self) -> float:
        """Weights read per decode step: decoder layers and lm_head (the embedding lookup
        reads only B rows)."""
        m = self.model
        return m.layer_params * DTYPE_BYTES[self.dtype] + m.embedding_params * 2

    @property
    def kv_bytes_per_token(self) -> float:
        """K and V for every layer, for the whole engine. With fewer KV heads than GPUs each
        GPU holds a replica of one head, so the engine stores tp heads."""
        m = self.model
        heads = max(m.kv_heads, self.tp)
        return 2.0 * m.layers * heads * m.head_dim * DTYPE_BYTES[self.kv_dtype]

    @property
    def reserve_bytes_per_gpu(self) -> float:
        m, e = self.model, self.eff
        act = e.max_batched_tokens * (4 * m.hidden + 2 * m.intermediate / self.tp) * 2
        logits = e.max_sampled_seqs * m.vocab * 4 / self.tp
        return e.reserve_gib * GIB + act + logits

    @property
    def max_kv_tokens(self) -> int:
        e = self.eff
        free = (
            self.tp * self.gpu.hbm_gib * GIB * e.gpu_mem_utilization
            - self.weight_bytes
            - self.tp * self.reserve_bytes_per_gpu
        )
        return int(free // self.kv_bytes_per_token) if free > 0 else 0

    # -- time ---------------------------------------------------------------------------

    @property
    def _peak_w(self) -> float:
        g = self.gpu
        peak = g.fp8_tflops if (self.dtype == "fp8" and g.fp8_tflops) else g.bf16_tflops
        return peak * 1e12

    @property
    def _peak_kv(self) -> float:
        g = self.gpu
        peak = g.fp8_tflops if (self.kv_dtype == "fp8" and g.fp8_tflops) else g.bf16_tflops
        return peak * 1e12

    def _allreduce_s(self, tokens: np.ndarray | float) -> np.ndarray | float:
        """Two ring all-reduces of the bf16 hidden state per layer."""
        if self.tp == 1:
            return 0.0 * tokens
        m, e = self.model, self.eff
        calls = 2 * m.layers
        nbytes = tokens * m.hidden * 2
        ring = 2 * (self.tp - 1) / self.tp * nbytes / (self.gpu.link_gbps * 1e9)
        return calls * (ring + e.allreduce_latency_us * 1e-6)

    def prefill_ms(self, tokens: np.ndarray | float) -> np.ndarray | float:
        """TTFT (ms) of one sequence of `tokens` prompt tokens on an idle engine."""
        m, e, tp = self.model, self.eff, self.tp
        t = np.asarray(tokens, dtype=np.float64)
        lin_flops = 2.0 * m.layer_params * t + 2.0 * m.embedding_params  # one logits row
        attn_flops = 2.0 * m.layers * m.heads * m.head_dim * t * t
        compute_s = (lin_flops / self._peak_w + attn_flops / self._peak_kv) / (
            e.prefill_compute * tp
        )
        act_bytes = t * m.layers * (4 * m.hidden + 2 * m.intermediate) * 2 * 2
        mem_bytes = self.weight_bytes + act_bytes + t * self.kv_bytes_per_token
        memory_s = mem_bytes / (e.prefill_memory * self.gpu.hbm_gbps * 1e9 * tp)
        total_s = np.maximum(compute_s, memory_s) + self._allreduce_s(t)
        return e.prefill_overhead_ms + 1000.0 * total_s

    def decode_itl_ms(
        self, batch: np.ndarray | float, context: np.ndarray | float
    ) -> np.ndarray | float:
        """Time (ms) of one decode step of `batch` sequences at `context` tokens each."""
        m, e, tp = self.model, self.eff, self.tp
        b = np.asarray(batch, dtype=np.float64)
        c = np.asarray(context, dtype=np.float64)
        mem_bytes = self.decode_weight_bytes + b * c * self.kv_bytes_per_token
        memory_s = mem_bytes / (e.decode_memory * self.gpu.hbm_gbps * 1e9 * tp)
        lin_flops = b * 2.0 * (m.layer_params + m.embedding_params)
        attn_flops = b * 4.0 * m.layers * m.heads * m.head_dim * c
        compute_s = (lin_flops / self._peak_w + attn_flops / self._peak_kv) / (
            e.decode_compute * tp
        )
        return e.decode_overhead_ms + 1000.0 * (memory_s + compute_s + self._allreduce_s(b))


# The grid Dynamo's profiler sweeps (the shared H200 profile): 17 ISLs from 100 in steps of
# 1,017 and six decode contexts from 350 in steps of 2,647; longer ISLs added so the
# quadratic attention term shows beyond 16k.
PREFILL_ISL_GRID = np.concatenate([100 + 1017 * np.arange(17), [32768, 65536, 131072]])
DECODE_CONTEXT_GRID = 350 + 2647 * np.arange(6)
DECODE_KV_LEVELS = np.linspace(0.1, 0.95, 9)


def roofline(
    model: str, gpu: str, dtype: str = "fp8", tp: int = 1, kv_dtype: str = "bf16"
) -> Roofline:
    """The engine model for registry names; ConfigError on an unknown name or value."""
    if model not in MODELS:
        raise ConfigError(
            f"unknown model {model!r}; expected one of {', '.join(MODELS)}",
            key="model.analytic.model",
        )
    if gpu not in GPUS:
        raise ConfigError(
            f"unknown GPU {gpu!r}; expected one of {', '.join(GPUS)}", key="model.analytic.gpu"
        )
    for key, value in (("dtype", dtype), ("kv_dtype", kv_dtype)):
        if value not in DTYPE_BYTES:
            raise ConfigError(
                f"unknown {key} {value!r}; expected one of {', '.join(DTYPE_BYTES)}",
                key=f"model.analytic.{key}",
            )
    if isinstance(tp, bool) or not isinstance(tp, int) or tp < 1 or tp > 64:
        raise ConfigError(f"tp {tp!r}; expected an integer 1..64", key="model.analytic.tp")
    m = MODELS[model]
    if m.heads % tp:
        raise ConfigError(
            f"tp {tp} does not divide the {m.heads} attention heads of {model}; "
            "expected a divisor of the head count",
            key="model.analytic.tp",
        )
    return Roofline(MODELS[model], GPUS[gpu], dtype, tp, kv_dtype)


def analytic_profile(
    model: str, gpu: str, dtype: str = "fp8", tp: int = 1, *, kv_dtype: str = "bf16"
) -> PerfProfile:
    """A PerfProfile on Dynamo's grid shape computed from the roofline model.

    kv_dtype defaults to bf16 for fp8 weights too: vLLM's kv_cache_dtype="auto" keeps the
    activation dtype, and the measured H200 FP8 profile's 945,029 KV tokens only fit the
    memory at 2 bytes per element.
    """
    r = roofline(model, gpu, dtype, tp, kv_dtype)
    name = f"analytic:{model}/{gpu}/{dtype}/tp{tp}" + (
        "" if kv_dtype == "bf16" else f"/kv-{kv_dtype}"
    )
    mkv = r.max_kv_tokens
    if decode_grid(mkv) is None:
        hint = (
            "raise tp or use a larger GPU"
            if dtype == "fp8"
            else "raise tp, use fp8 or a larger GPU"
        )
        raise ConfigError(
            f"{model} with {dtype} weights on {tp} x {gpu} leaves room for {mkv} KV tokens "
            f"(weights {r.weight_bytes / GIB:.1f} GiB of {tp * r.gpu.hbm_gib:.0f} GiB); expected "
            f"room for at least 2 sequences of {int(DECODE_CONTEXT_GRID[0])} tokens: {hint}",
            key="model.analytic",
        )
    return grid_profile(name, tp, mkv, r.kv_bytes_per_token, r.prefill_ms, r.decode_itl_ms)


def decode_grid(
    max_kv_tokens: int, max_batch: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(kv usage, context, batch) of the decode points on Dynamo's grid shape: integer
    batches from one sequence up to the KV levels Dynamo's sweep reaches (and at most
    `max_batch`); a context needs two of them to make a curve. None when no context fits."""
    kv_pts, ctx_pts, batches = [], [], []
    for ctx in DECODE_CONTEXT_GRID:
        b = np.unique(np.maximum(1.0, np.floor(DECODE_KV_LEVELS * max_kv_tokens / ctx)))
        if max_batch is not None:
            b = np.unique(np.minimum(b, float(max_batch)))
        b = np.unique(np.concatenate(([1.0], b)))
        if b.size < 2 or b[-1] * ctx > max_kv_tokens:
            continue
        kv_pts.append(b * ctx / max_kv_tokens)
        ctx_pts.append(np.full(b.size, float(ctx)))
        batches.append(b)
    if not kv_pts:
        return None
    return np.concatenate(kv_pts), np.concatenate(ctx_pts), np.concatenate(batches)


def grid_profile(
    name: str,
    gpus: int,
    max_kv_tokens: int,
    kv_bytes_per_token: float | None,
    prefill_ms: Callable[[np.ndarray], np.ndarray],
    decode_ms: Callable[[np.ndarray, np.ndarray], np.ndarray],
    *,
    max_batch: int | None = None,
    source: str | None = None,
) -> PerfProfile:
    """A PerfProfile on Dynamo's grid shape from an engine's timing functions: prefill TTFT
    (ms) of one sequence of T tokens, and the time (ms) of one decode step of B sequences
    at context C; `gpus` per engine turns engine throughput into per-GPU throughput."""
    grid = decode_grid(max_kv_tokens, max_batch)
    if grid is None:
        raise ConfigError(
            f"room for {max_kv_tokens} KV tokens; expected room for at least 2 sequences of "
            f"{int(DECODE_CONTEXT_GRID[0])} tokens",
            key="max_kv_tokens",
        )
    kv, ctx, batch = grid
    isl = PREFILL_ISL_GRID.astype(np.float64)
    ttft_ms = np.asarray(prefill_ms(isl), dtype=np.float64)
    itl_ms = np.asarray(decode_ms(batch, ctx), dtype=np.float64)
    return PerfProfile(
        prefill_isl=isl,
        prefill_ttft_ms=ttft_ms,
        prefill_thpt_per_gpu=isl / (ttft_ms / 1000.0) / gpus,
        decode_kv_usage=kv,
        decode_context=ctx,
        decode_itl_ms=itl_ms,
        decode_thpt_per_gpu=batch / (itl_ms / 1000.0) / gpus,
        max_kv_tokens=int(max_kv_tokens),
        kv_bytes_per_token=kv_bytes_per_token,
        name=name,
        source=source or name,
    )


def kv_bytes_per_token(model: str, kv_dtype: str = "bf16", tp: int = 1) -> float:
    """KV cache bytes per token for one engine (K and V, every layer)."""
    return roofline(model, "h200", "bf16", tp, kv_dtype).kv_bytes_per_token
