"""Analytic (roofline) engine profiles from a model config and GPU specs: the embedded default.

The model, per engine of `tp` GPUs (docs/profiles.md has the derivation):

- prefill of T tokens (one sequence, causal attention):
  overhead + max(compute, memory) + communication, where compute is the linear-layer FLOPs
  2 * P_active * T at the weight dtype's peak plus the attention FLOPs
  L * H * (d_qk + d_v) * T^2 (QK^T and AV over the causal half) at the bf16 peak, both
  / (eff * tp); memory is the weights (of the routed experts, those T tokens touch) plus
  activation traffic / (eff * bandwidth * tp).
- one decode step of B sequences at context C:
  overhead + (weights read + B * C * kv_bytes_per_token) / (eff_m * bandwidth * tp)
  + B * (2 * P_active+lm_head + 2 * L * H * (d_qk + d_v) * C) FLOPs / (eff_c * peak * tp)
  + communication; a mixture of experts reads the experts B sequences touch.
- max_kv_tokens = (tp * HBM * gpu_mem_utilization - weights - tp * reserve) / kv_bytes_per_token.
- overheads = a fixed part + a part per layer.

Active parameters drive compute, total parameters weight memory (MoE); MLA (DeepSeek-V3)
stores one latent per layer. The efficiency factors and the fixed overheads were fitted once
(least squares on log error) to the measured Dynamo profile of Llama-3.1-8B FP8 on one H200
(vLLM) and serve H100 and H200; A100, B200, B300, GB200 and L40S have efficiencies fitted
against NVIDIA AIConfigurator (GPU_EFFICIENCY). Other kernels, GPUs and sizes will differ:
docs/profiles.md says where the model is not to be trusted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from planner.errors import ConfigError
from planner.profile import PerfProfile

GIB = 1024**3

# Weight/KV bytes per element.
DTYPE_BYTES = {"fp8": 1, "bf16": 2}


@dataclass(frozen=True)
class ModelConfig:
    """A decoder-only transformer: GQA attention (Llama, Qwen3, gpt-oss) or DeepSeek's MLA,
    SwiGLU MLP, optionally a mixture of experts in some or all layers."""

    name: str
    hf_id: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int  # MLA: qk_nope_head_dim
    intermediate: int  # the dense MLP's (MoE models: of their dense layers)
    vocab: int
    tie_embeddings: bool = False
    # Mixture of experts (experts == 0: dense): routed experts per MoE layer, experts each
    # token is routed to, one expert's intermediate size, always-on shared experts, and
    # leading layers that keep a dense MLP.
    experts: int = 0
    experts_per_token: int = 0
    expert_intermediate: int = 0
    shared_experts: int = 0
    dense_layers: int = 0
    # Bytes per routed-expert weight when the checkpoint fixes the format (gpt-oss: MXFP4,
    # 32 4-bit E2M1 values sharing one 8-bit scale = 4.25 bits, OCP Microscaling spec);
    # None: the engine's weight dtype.
    expert_weight_bytes: float | None = None
    # Multi-head latent attention (kv_lora_rank == 0: GQA): the compressed KV latent, the
    # query's low-rank size, the decoupled RoPE key dims and the value head dims.
    kv_lora_rank: int = 0
    q_lora_rank: int = 0
    rope_dim: int = 0
    v_head_dim: int = 0

    @property
    def is_moe(self) -> bool:
        return self.experts > 0

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank > 0

    @property
    def moe_layers(self) -> int:
        return self.layers - self.dense_layers if self.is_moe else 0

    @property
    def attn_params_per_layer(self) -> int:
        h, n = self.hidden, self.heads
        if self.is_mla:
            qk = self.head_dim + self.rope_dim
            q = h * self.q_lora_rank + self.q_lora_rank * n * qk if self.q_lora_rank else h * n * qk
            kv = h * (self.kv_lora_rank + self.rope_dim)
            kv += self.kv_lora_rank * n * (self.head_dim + self.v_head_dim)
            return q + kv + n * self.v_head_dim * h
        return 2 * h * n * self.head_dim + 2 * h * self.kv_heads * self.head_dim

    @property
    def expert_params(self) -> int:
        """One expert's SwiGLU projections."""
        return 3 * self.hidden * self.expert_intermediate

    @property
    def routed_expert_params(self) -> int:
        """All routed experts of all MoE layers: what weight memory holds beyond the rest."""
        return self.moe_layers * self.experts * self.expert_params

    @property
    def layer_params(self) -> int:
        """Parameters of the decoder layers' linear projections (norms are negligible)."""
        dense = self.layers - self.moe_layers
        moe = self.moe_layers * (
            self.experts * self.expert_params
            + self.shared_experts * self.expert_params
            + self.hidden * self.experts  # the router
        )
        return (
            self.layers * self.attn_params_per_layer
            + dense * 3 * self.hidden * self.intermediate
            + moe
        )

    @property
    def active_layer_params(self) -> int:
        """Decoder parameters one token passes through: compute per token is 2 x this."""
        if not self.is_moe:
            return self.layer_params
        unused = self.moe_layers * (self.experts - self.experts_per_token) * self.expert_params
        return self.layer_params - unused

    @property
    def mlp_width(self) -> int:
        """Intermediate activations per token in an MLP (sizes activation traffic)."""
        if not self.is_moe:
            return self.intermediate
        return (self.experts_per_token + self.shared_experts) * self.expert_intermediate

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden

    @property
    def params(self) -> int:
        lm_head = 0 if self.tie_embeddings else self.embedding_params
        return self.layer_params + self.embedding_params + lm_head

    @property
    def active_params(self) -> int:
        lm_head = 0 if self.tie_embeddings else self.embedding_params
        return self.active_layer_params + self.embedding_params + lm_head

    def attention_dims(self, *, decode: bool) -> tuple[int, int]:
        """(q.k dims, value dims) per head in the attention FLOPs. MLA prefill runs on
        the decompressed keys and values; MLA decode on the latent with the up-projections
        absorbed into the query and output (DeepSeek-V3 report, section 2.1.1), so each
        head attends over kv_lora_rank + rope_dim dims and reads the kv_lora_rank latent."""
        if not self.is_mla:
            return self.head_dim, self.head_dim
        if decode:
            return self.kv_lora_rank + self.rope_dim, self.kv_lora_rank
        return self.head_dim + self.rope_dim, self.v_head_dim

    def experts_touched(self, tokens: np.ndarray | float) -> np.ndarray | float:
        """Expected distinct routed experts one MoE layer reads for `tokens` tokens, each
        routed to experts_per_token of `experts` uniformly: E * (1 - (1 - k/E)^T). One token
        reads k experts; a batch of a few hundred reads nearly all of them."""
        if not self.is_moe:
            return 0.0 * np.asarray(tokens, dtype=np.float64)
        e, k = self.experts, self.experts_per_token
        return e * (1.0 - (1.0 - k / e) ** np.asarray(tokens, dtype=np.float64))


# Facts from each model's Hugging Face config.json (huggingface.co/<hf_id>/blob/main/config.json):
# num_hidden_layers, hidden_size, num_attention_heads, num_key_value_heads, head_dim
# (hidden_size / num_attention_heads for Llama), intermediate_size, vocab_size,
# tie_word_embeddings; for MoE num_experts (Qwen3) / num_local_experts (gpt-oss) /
# n_routed_experts (DeepSeek), num_experts_per_tok, moe_intermediate_size (gpt-oss:
# intermediate_size is the expert's), n_shared_experts, first_k_dense_replace; for MLA
# kv_lora_rank, q_lora_rank, qk_nope_head_dim, qk_rope_head_dim, v_head_dim.
# gpt-oss alternates full and 128-token sliding-window attention; the model charges every
# layer full attention (as vLLM's KV cache and AIConfigurator's KV estimate do).
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
        ModelConfig("qwen3-30b-a3b", "Qwen/Qwen3-30B-A3B",
                    48, 2048, 32, 4, 128, 6144, 151936,
                    experts=128, experts_per_token=8, expert_intermediate=768),
        ModelConfig("qwen3-235b-a22b", "Qwen/Qwen3-235B-A22B",
                    94, 4096, 64, 4, 128, 12288, 151936,
                    experts=128, experts_per_token=8, expert_intermediate=1536),
        ModelConfig("gpt-oss-20b", "openai/gpt-oss-20b",
                    24, 2880, 64, 8, 64, 2880, 201088,
                    experts=32, experts_per_token=4, expert_intermediate=2880,
                    expert_weight_bytes=4.25 / 8),
        ModelConfig("gpt-oss-120b", "openai/gpt-oss-120b",
                    36, 2880, 64, 8, 64, 2880, 201088,
                    experts=128, experts_per_token=4, expert_intermediate=2880,
                    expert_weight_bytes=4.25 / 8),
        ModelConfig("deepseek-v3", "deepseek-ai/DeepSeek-V3",
                    61, 7168, 128, 128, 128, 18432, 129280,
                    experts=256, experts_per_token=8, expert_intermediate=2048,
                    shared_experts=1, dense_layers=3,
                    kv_lora_rank=512, q_lora_rank=1536, rope_dim=64, v_head_dim=128),
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
# B300 (HGX B300): nvidia.com/en-us/data-center/hgx/ (per GPU: 36 PF bf16 and 72 PF fp8
#   sparse per 8 GPUs -> 2.25 / 4.5 PF dense; Blackwell Ultra raises FP4 only), 8 TB/s,
#   288 GB HBM3e (275,040 MiB as nvidia-smi reports it), NVLink 5 1.8 TB/s
# GB200 (one Blackwell GPU of a GB200 NVL72): nvidia.com/en-us/data-center/gb200-nvl72/
#   (360 PF bf16 and 720 PF fp8 sparse per 72 GPUs -> 2.5 / 5 PF dense, 8 TB/s, 186 GB;
#   189,471 MiB as nvidia-smi reports it), NVLink 5 1.8 TB/s
# L40S: nvidia.com/en-us/data-center/l40s/ (362 TF bf16, 733 TF fp8, 864 GB/s, 48 GB GDDR6,
#   PCIe Gen4 x16 64 GB/s)
# MI300X: amd.com/en/products/accelerators/instinct/mi300/mi300x.html and the MI300X data
#   sheet (1,307.4 TF bf16, 2,614.9 TF fp8 dense, 5.3 TB/s, 192 GB HBM3 of which rocm-smi
#   reports 205,822,885,888 bytes; 7 Infinity Fabric links of 64 GB/s per direction)
# Memory as nvidia-smi reports it: 81,920 / 81,559 / 143,771 / 183,359 / 46,068 MiB.
# (The nvidia-smi figures for B300 and GB200 are the ones AIConfigurator's system files
# record: aiconfigurator_core/systems/{b300_sxm,gb200}.yaml.)
GPUS: dict[str, GPUSpec] = {
    g.name: g
    for g in (
        GPUSpec("a100-80g", 312.0, None, 2039.0, 81920 / 1024, 300.0),
        GPUSpec("h100-sxm", 989.0, 1979.0, 3350.0, 81559 / 1024, 450.0),
        GPUSpec("h200", 989.0, 1979.0, 4800.0, 143771 / 1024, 450.0),
        GPUSpec("b200", 2250.0, 4500.0, 8000.0, 183359 / 1024, 900.0),
        GPUSpec("b300", 2250.0, 4500.0, 8000.0, 275040 / 1024, 900.0),
        GPUSpec("gb200", 2500.0, 5000.0, 8000.0, 189471 / 1024, 900.0),
        GPUSpec("l40s", 362.0, 733.0, 864.0, 46068 / 1024, 32.0),
        GPUSpec("mi300x", 1307.4, 2614.9, 5300.0, 205822885888 / GIB, 448.0),
    )
}


@dataclass(frozen=True)
class Efficiency:
    """Achieved fraction of peak and fixed costs; fitted, see the module docstring."""

    prefill_compute: float = 0.505
    prefill_memory: float = 0.7
    # Fixed costs per prefill and per decode step: a part per request or step (serving,
    # scheduling, sampling) plus a part per layer (kernel launches and small kernels), so
    # that they scale with model depth. The per-layer 60 us: AIConfigurator 0.12's vLLM
    # one-sequence decode step on H200 minus its weight read, per layer, over qwen3-0.6b,
    # llama-3.1-8b, qwen3-8b, qwen3-32b, llama-3.1-70b (45-59 us, mean 52), times the
    # serving factor 1.166 fitted on the measured profile (planlab.aic). The fixed parts
    # keep the measured 8B fit: 15.94 + 32 x 0.06 = 17.86 ms, 0.62 + 1.92 = 2.54 ms.
    prefill_overhead_ms: float = 15.94
    decode_memory: float = 0.95
    decode_compute: float = 0.214
    decode_overhead_ms: float = 0.62
    layer_overhead_us: float = 60.0
    allreduce_latency_us: float = 8.0  # per all-reduce call (two per layer)
    link: float = 1.0  # achieved fraction of the GPU-to-GPU link bandwidth
    gpu_mem_utilization: float = 0.9  # vLLM's default
    reserve_gib: float = 1.39  # per GPU: CUDA context, graphs, non-torch memory
    max_batched_tokens: int = 8192  # vLLM's prefill token budget, sizes activation memory
    max_sampled_seqs: int = 1024  # logits kept for this many sequences (vLLM max_num_seqs)


CALIBRATED = Efficiency()


# Per-GPU efficiencies where the H200 FP8 fit does not carry over. Fitted (least squares on
# the log error, Nelder-Mead) against NVIDIA AIConfigurator 0.12's vLLM engine model plus the
# serving overhead fitted on the measured H200 profile (planlab.aic), over the dense models
# x the grid of planlab.aic.GRID_ISLS / GRID_DECODE; tests/planner/test_analytic_vs_aic.py
# reprints and bounds the result, docs/profiles.md has the table. H100 and H200 share tensor
# cores and keep the fit on the measured profile. The A100 set was fitted on bf16 and is used
# for fp8 (weight-only) too; on L40S `link` is the achieved fraction of its PCIe bandwidth.
GPU_EFFICIENCY: dict[str, Efficiency] = {
    "a100-80g": replace(CALIBRATED, prefill_compute=0.641, decode_memory=0.685, decode_compute=1.0),
    "b200": replace(CALIBRATED, prefill_compute=0.353, decode_memory=0.668, decode_compute=1.0),
    "b300": replace(CALIBRATED, prefill_compute=0.394, decode_memory=0.713, decode_compute=1.0),
    "gb200": replace(CALIBRATED, prefill_compute=0.328, decode_memory=0.701, decode_compute=1.0),
    "l40s": replace(
        CALIBRATED, prefill_compute=0.377, decode_memory=0.734, decode_compute=0.338, link=0.155
    ),
}


def efficiency(gpu: str, dtype: str) -> Efficiency:
    """The efficiency set for a GPU and weight dtype (GPU_EFFICIENCY, else CALIBRATED)."""
    return GPU_EFFICIENCY.get(gpu, CALIBRATED)


@dataclass(frozen=True)
class Roofline:
    """One engine of `tp` GPUs running `model` with `dtype` weights and `kv_dtype` KV cache;
    MoE layers split as `ep` expert groups of tp / ep GPUs each.

    The pieces the simulator may reuse: prefill_ms, decode_itl_ms, kv_bytes_per_token,
    max_kv_tokens.
    """

    model: ModelConfig
    gpu: GPUSpec
    dtype: str = "fp8"
    tp: int = 1
    kv_dtype: str = "bf16"
    eff: Efficiency = CALIBRATED
    ep: int = 1

    # -- memory -------------------------------------------------------------------------

    @property
    def _expert_bytes(self) -> float:
        m = self.model
        return m.expert_weight_bytes or DTYPE_BYTES[self.dtype]

    @property
    def weight_bytes(self) -> float:
        """Bytes of weights in one engine: total parameters, every expert included. FP8
        checkpoints (e.g. nvidia/...-FP8) quantise the decoder's linear layers only;
        embeddings and lm_head stay bf16."""
        m = self.model
        lm_head = 0 if m.tie_embeddings else m.embedding_params
        rest = m.layer_params - m.routed_expert_params
        return (
            rest * DTYPE_BYTES[self.dtype]
            + m.routed_expert_params * self._expert_bytes
            + (m.embedding_params + lm_head) * 2
        )

    def _touched_expert_bytes(self, tokens: np.ndarray | float) -> np.ndarray | float:
        """Routed-expert weights read by a forward pass over `tokens` tokens."""
        m = self.model
        return m.moe_layers * m.experts_touched(tokens) * m.expert_params * self._expert_bytes

    def decode_weight_bytes_at(self, batch: np.ndarray | float) -> np.ndarray | float:
        """Weights read per decode step of `batch` sequences: the decoder layers (of the
        routed experts only those the batch touches) and lm_head (the embedding lookup
        reads only B rows)."""
        m = self.model
        rest = m.layer_params - m.routed_expert_params
        return (
            rest * DTYPE_BYTES[self.dtype]
            + self._touched_expert_bytes(batch)
            + m.embedding_params * 2
        )

    @property
    def decode_weight_bytes(self) -> float:
        """Weights read by a decode step of one sequence."""
        return float(self.decode_weight_bytes_at(1.0))

    @property
    def kv_bytes_per_token(self) -> float:
        """KV cache bytes per token for the whole engine. GQA: K and V for every layer; with
        fewer KV heads than GPUs each GPU holds a replica of one head, so the engine stores
        tp heads. MLA: one latent of kv_lora_rank + rope_dim per layer, which every
        tensor-parallel GPU holds whole (vLLM's MLA backends replicate it)."""
        m = self.model
        if m.is_mla:
            return float(
                m.layers * (m.kv_lora_rank + m.rope_dim) * DTYPE_BYTES[self.kv_dtype] * self.tp
            )
        heads = max(m.kv_heads, self.tp)
        return 2.0 * m.layers * heads * m.head_dim * DTYPE_BYTES[self.kv_dtype]

    @property
    def reserve_bytes_per_gpu(self) -> float:
        m, e = self.model, self.eff
        act = e.max_batched_tokens * (4 * m.hidden + 2 * m.mlp_width / self.tp) * 2
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

    def _comm_s(self, tokens: np.ndarray | float) -> np.ndarray | float:
        """Two ring all-reduces of the bf16 hidden state per layer (after attention and
        after the MLP). With expert parallelism the MoE layer's all-reduce becomes a
        dispatch and a combine all-to-all: each GPU's tokens send k copies of their hidden
        state, (ep - 1) / ep of them to other GPUs."""
        if self.tp == 1:
            return 0.0 * tokens
        m, e = self.model, self.eff
        link = self.gpu.link_gbps * 1e9 * e.link
        lat = e.allreduce_latency_us * 1e-6
        nbytes = tokens * m.hidden * 2
        ring = 2 * (self.tp - 1) / self.tp * nbytes / link
        if self.ep == 1 or not m.is_moe:
            return 2 * m.layers * (ring + lat)
        a2a = m.experts_per_token * nbytes / self.tp * (self.ep - 1) / self.ep / link
        dense = m.layers - m.moe_layers
        return (m.layers + dense) * (ring + lat) + m.moe_layers * 2 * (a2a + lat)

    def prefill_ms(self, tokens: np.ndarray | float) -> np.ndarray | float:
        """TTFT (ms) of one sequence of `tokens` prompt tokens on an idle engine."""
        m, e, tp = self.model, self.eff, self.tp
        t = np.asarray(tokens, dtype=np.float64)
        lin_flops = 2.0 * m.active_layer_params * t + 2.0 * m.embedding_params  # one logits row
        d_qk, d_v = m.attention_dims(decode=False)
        attn_flops = m.layers * m.heads * (d_qk + d_v) * t * t
        compute_s = (lin_flops / self._peak_w + attn_flops / self._peak_kv) / (
            e.prefill_compute * tp
        )
        act_bytes = t * m.layers * (4 * m.hidden + 2 * m.mlp_width) * 2 * 2
        weights = self.weight_bytes - m.routed_expert_params * self._expert_bytes
        weights = weights + self._touched_expert_bytes(t)
        mem_bytes = weights + act_bytes + t * self.kv_bytes_per_token
        memory_s = mem_bytes / (e.prefill_memory * self.gpu.hbm_gbps * 1e9 * tp)
        total_s = np.maximum(compute_s, memory_s) + self._comm_s(t)
        return self._overhead_ms(e.prefill_overhead_ms) + 1000.0 * total_s

    def decode_itl_ms(
        self, batch: np.ndarray | float, context: np.ndarray | float
    ) -> np.ndarray | float:
        """Time (ms) of one decode step of `batch` sequences at `context` tokens each."""
        m, e, tp = self.model, self.eff, self.tp
        b = np.asarray(batch, dtype=np.float64)
        c = np.asarray(context, dtype=np.float64)
        mem_bytes = self.decode_weight_bytes_at(b) + b * c * self.kv_bytes_per_token
        memory_s = mem_bytes / (e.decode_memory * self.gpu.hbm_gbps * 1e9 * tp)
        lin_flops = b * 2.0 * (m.active_layer_params + m.embedding_params)
        d_qk, d_v = m.attention_dims(decode=True)
        attn_flops = b * 2.0 * m.layers * m.heads * (d_qk + d_v) * c
        compute_s = (lin_flops / self._peak_w + attn_flops / self._peak_kv) / (
            e.decode_compute * tp
        )
        return self._overhead_ms(e.decode_overhead_ms) + 1000.0 * (
            memory_s + compute_s + self._comm_s(b)
        )

    def _overhead_ms(self, fixed_ms: float) -> float:
        return fixed_ms + self.model.layers * self.eff.layer_overhead_us / 1000.0


# The grid Dynamo's profiler sweeps (the shared H200 profile): 17 ISLs from 100 in steps of
# 1,017 and six decode contexts from 350 in steps of 2,647; longer ISLs added so the
# quadratic attention term shows beyond 16k.
PREFILL_ISL_GRID = np.concatenate([100 + 1017 * np.arange(17), [32768, 65536, 131072]])
DECODE_CONTEXT_GRID = 350 + 2647 * np.arange(6)
DECODE_KV_LEVELS = np.linspace(0.1, 0.95, 9)


def roofline(
    model: str, gpu: str, dtype: str = "fp8", tp: int = 1, kv_dtype: str = "bf16", ep: int = 1
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
    if isinstance(ep, bool) or not isinstance(ep, int) or ep < 1 or tp % ep:
        raise ConfigError(
            f"ep {ep!r}; expected a divisor of tp {tp} (the MoE layers split as ep expert "
            "groups of tp / ep GPUs)",
            key="model.analytic.ep",
        )
    if ep > 1 and (not m.is_moe or m.experts % ep):
        what = f"{m.experts} experts of {model}" if m.is_moe else f"dense {model} (no experts)"
        raise ConfigError(
            f"ep {ep} does not divide the {what}; expected ep 1 or a divisor of the expert count",
            key="model.analytic.ep",
        )
    return Roofline(m, GPUS[gpu], dtype, tp, kv_dtype, efficiency(gpu, dtype), ep)


def analytic_profile(
    model: str, gpu: str, dtype: str = "fp8", tp: int = 1, *, kv_dtype: str = "bf16", ep: int = 1
) -> PerfProfile:
    """A PerfProfile on Dynamo's grid shape computed from the roofline model.

    kv_dtype defaults to bf16 for fp8 weights too: vLLM's kv_cache_dtype="auto" keeps the
    activation dtype, and the measured H200 FP8 profile's 945,029 KV tokens only fit the
    memory at 2 bytes per element.
    """
    r = roofline(model, gpu, dtype, tp, kv_dtype, ep)
    name = (
        f"analytic:{model}/{gpu}/{dtype}/tp{tp}"
        + (f"/ep{ep}" if ep > 1 else "")
        + ("" if kv_dtype == "bf16" else f"/kv-{kv_dtype}")
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
