"""GPU memory fit: the check vLLM makes at start-up, done before anything is deployed.

Engine generation modelled: vLLM's V1 engine as of 0.17-0.19 (the current line we deploy), calibrated on the
V1 records of vllm_memory_observations.json (see tests/unit/test_memory_calibration.py). Per GPU:

    budget     = memory the driver reports x gpu_memory_utilization
    kv memory  = budget - weights - activation peak - non-torch memory - CUDA graphs - LoRA slots
    kv tokens  = whole blocks of `block_size` tokens that fit in kv memory
    fits       iff one max_model_len sequence fits in kv memory (what vLLM's start-up check refuses)

Two choices to know about:
- CUDA graphs: vLLM 0.19 captures them after sizing the KV cache, out of the (1 - utilization) slack; from
  about 0.21 it reserves them up front. We always subtract them, so a plan that fits here fits in both.
- Activation: from 0.17 the profile peak is set by the sampler over max_num_seqs x vocabulary logits, not by
  max_model_len (the V0 engine profiled a max_model_len-long prefill; its records need more activation).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache

from .engine import EngineConfig
from .errors import InputError
from .model_config import DTYPE_BYTES, ModelArch

GIB = 1024**3

# Calibrated on the vLLM 0.19 H100 records (llm-d planner sweep): torch peak over the weights was 1.89 GiB at
# vocab 128,256, 2.21 GiB at 151,936-152,064 and 3.62-3.65 GiB at 256,000, all with max_num_seqs 1024 ->
# 14.3 bytes per (sequence x vocabulary entry) plus 0.14 GiB, the same at TP 1, 2 and 4.
ACTIVATION_BASE_GIB = 0.14
SAMPLER_BYTES_PER_SEQ_VOCAB = 14.3
# Non-torch memory (CUDA context, cuBLAS workspaces; NCCL and custom all-reduce buffers under TP):
# 0.24-0.25 GiB on one GPU, 2.06-2.21 GiB per GPU at TP 2-4 in the same records.
NON_TORCH_SINGLE_GIB = 0.25
NON_TORCH_TP_GIB = 2.2
# CUDA graph pool: 0.64-1.85 GiB in those records, growing with the layers on the GPU.
CUDA_GRAPH_BASE_GIB = 0.25
CUDA_GRAPH_PER_LAYER_GIB = 0.02


@dataclass(frozen=True)
class MemoryEstimate:
    """What vLLM would report at start-up, per GPU (every GPU of a TP x PP replica holds the same share)."""

    fits: bool
    reason: str
    model: str
    gpu_memory_gib: float
    gpu_memory_utilization: float
    tp: int
    pp: int
    budget_gib: float
    weights_gib_per_gpu: float
    activation_gib: float
    non_torch_gib: float
    cuda_graph_gib: float
    lora_gib: float
    kv_cache_gib_per_gpu: float
    kv_bytes_per_token_per_gpu: int
    kv_cache_tokens: int
    max_model_len: int
    max_concurrency: float  # sequences of max_model_len that fit at once
    max_num_seqs: int
    max_num_batched_tokens: int
    shortfall_gib: float  # memory per GPU missing for one max_model_len sequence; 0 when it fits
    max_model_len_that_fits: int  # the longest max_model_len this memory would take (0 if none)

    @property
    def gpus(self) -> int:
        return self.tp * self.pp

    def as_dict(self) -> dict:
        out = asdict(self)
        out["gpus"] = self.gpus
        return out


def default_batch_limits(gpu_memory_gib: float, gpu_name: str = "") -> tuple[int, int]:
    """vLLM's defaults for `vllm serve` (EngineArgs): larger batches on >= 70 GiB GPUs other than A100."""
    if gpu_memory_gib >= 70 and "a100" not in gpu_name.lower():
        return 1024, 8192
    return 256, 2048


def weight_dtype_bytes(arch: ModelArch, engine: EngineConfig) -> int:
    dtype = arch.torch_dtype if engine.dtype == "auto" else engine.dtype
    if dtype == "float32" and engine.dtype == "auto":
        dtype = "bfloat16"  # vLLM serves float32 checkpoints in 16-bit unless float32 is asked for
    return DTYPE_BYTES[dtype]


def kv_dtype_bytes(arch: ModelArch, engine: EngineConfig) -> int:
    if engine.kv_cache_dtype.startswith("fp8"):
        return 1
    if engine.kv_cache_dtype == "auto":
        return weight_dtype_bytes(arch, engine)
    return DTYPE_BYTES[engine.kv_cache_dtype]


def validate_parallelism(arch: ModelArch, engine: EngineConfig) -> None:
    """The splits vLLM refuses at start-up, as errors naming the flag."""
    tp, pp = engine.tp, engine.pp
    if arch.num_attention_heads % tp:
        divisors = [d for d in range(1, min(arch.num_attention_heads, 64) + 1) if arch.num_attention_heads % d == 0]
        raise InputError(
            "--tp",
            f"{tp} does not divide the model's {arch.num_attention_heads} attention heads; use one of {divisors[:8]}",
        )
    if not arch.is_mla and arch.num_kv_heads % tp and tp % arch.num_kv_heads:
        raise InputError("--tp", f"{tp} and the model's {arch.num_kv_heads} KV heads must divide one another")
    if pp > arch.num_layers:
        raise InputError("--pp", f"{pp} pipeline stages for {arch.num_layers} layers; use at most {arch.num_layers}")


def _layers_on_stage(arch: ModelArch, pp: int) -> int:
    return math.ceil(arch.num_layers / pp)


def weights_bytes_per_gpu(arch: ModelArch, engine: EngineConfig) -> float:
    """Bytes of weights on the busiest GPU of a replica: its stage's layers, sharded over TP."""
    tp, pp = engine.tp, engine.pp
    groups = arch.param_groups
    dense = weight_dtype_bytes(arch, engine)
    quant = arch.quant
    runtime_fp8 = engine.quantization == "fp8" and quant is None

    def linear_bytes(group: str, module: str) -> float:
        if runtime_fp8:
            return 1.0 + 4.0 / max(arch.hidden_size, 1)  # FP8 weight + a per-channel fp32 scale
        if quant is None:
            return float(dense)
        if quant.experts_only and group != "experts":
            return float(dense)
        if quant.unconverted:
            kept = _unconverted_share(arch, module)
            return kept * dense + (1 - kept) * quant.bytes_per_weight
        return quant.bytes_per_weight

    per_layer = (
        groups["attn"] * linear_bytes("attn", "self_attn.q_proj")
        + groups["mlp"] * linear_bytes("mlp", "mlp.down_proj")
        + groups["experts"] * linear_bytes("experts", "mlp.experts.0.down_proj")
    ) / arch.num_layers
    stage_layers = _layers_on_stage(arch, pp)
    # Embeddings and lm_head stay 16-bit. They are vocabulary-parallel (sharded over TP); with PP the
    # embedding sits on the first stage and lm_head on the last, so the busiest stage holds one of them.
    if pp > 1:
        ends = max(groups["embed"], groups["lm_head"] or groups["embed"]) * dense
    else:
        ends = (groups["embed"] + groups["lm_head"]) * dense
    norms = groups["norms"] * dense / arch.num_layers * stage_layers
    return stage_layers * per_layer / tp + ends / tp + norms


def checkpoint_bytes(arch: ModelArch) -> float:
    """Bytes of the checkpoint on disk: what vLLM downloads into its cache before it loads anything.

    The weights in the checkpoint's own dtype (`torch_dtype`, float32 included) and its own quantization
    (`quantization_config` / `hf_quant_config.json`: AWQ, GPTQ, FP8 checkpoints), never the serving flags:
    `--quantization fp8` on a BF16 checkpoint downloads the BF16 files and quantizes them while loading, so
    Llama-3.1-70B-Instruct downloads ~131 GiB however small it is on the GPU. vLLM fetches only the
    safetensors files when a repo has them (weight_utils.download_weights_from_hf allow_patterns), not the
    `original/` consolidated .pth copies some repos also carry.
    """
    dtype = arch.torch_dtype if arch.torch_dtype in ("bfloat16", "float16", "float32") else "auto"
    return weights_bytes_per_gpu(arch, EngineConfig(tp=1, pp=1, dtype=dtype))


@lru_cache(maxsize=256)
def _unconverted_share(arch: ModelArch, module: str) -> float:
    """Share of layers whose `module` a checkpoint keeps in 16-bit (Llama-3.1-405B-FP8 keeps attention)."""
    kept = sum(1 for i in range(arch.num_layers) if arch.quant.keeps_16bit(f"model.layers.{i}.{module}"))
    return kept / arch.num_layers


def kv_bytes_per_token(arch: ModelArch, engine: EngineConfig) -> tuple[int, int]:
    """(full-attention bytes, sliding-window bytes) per token on the busiest GPU."""
    kv_bytes = kv_dtype_bytes(arch, engine)
    stage_layers = _layers_on_stage(arch, engine.pp)
    if arch.is_mla:
        # MLA caches one compressed latent plus the rope key per layer, replicated on every TP rank.
        per_layer = (arch.kv_lora_rank + arch.qk_rope_head_dim) * kv_bytes
    else:
        heads_per_gpu = max(1, arch.num_kv_heads // engine.tp)
        per_layer = 2 * heads_per_gpu * arch.head_dim * kv_bytes
    sliding = round(arch.sliding_layers * stage_layers / arch.num_layers)
    full = stage_layers - sliding
    return full * per_layer, sliding * per_layer


def lora_bytes_per_gpu(arch: ModelArch, engine: EngineConfig) -> float:
    """vLLM pre-allocates A and B matrices of max_lora_rank for every LoRA-capable linear layer and slot.

    Column-parallel layers (q, k, v, gate, up) keep A whole and shard B over TP; row-parallel layers
    (o, down) shard A and keep B whole.
    """
    if not engine.enable_lora:
        return 0.0
    h, tp, r = arch.hidden_size, engine.tp, engine.max_lora_rank
    q_out = arch.num_attention_heads * (arch.head_dim if not arch.is_mla else arch.v_head_dim)
    kv_out = arch.num_kv_heads * arch.head_dim
    width = arch.intermediate_size if not arch.is_moe else arch.moe_intermediate_size
    column = [(h, q_out), (h, kv_out), (h, kv_out), (h, width), (h, width)]
    row = [(q_out, h), (width, h)]
    per_slot_layer = sum(r * i + r * o / tp for i, o in column) + sum(r * i / tp + r * o for i, o in row)
    stage_layers = _layers_on_stage(arch, engine.pp)
    return engine.max_loras * stage_layers * per_slot_layer * weight_dtype_bytes(arch, engine)


def activation_gib(arch: ModelArch, engine: EngineConfig, max_num_seqs: int, max_num_batched_tokens: int) -> float:
    """Profile peak above the weights: the larger of the sampler's logits and one forward step's tensors."""
    sampler = max_num_seqs * arch.vocab_size * SAMPLER_BYTES_PER_SEQ_VOCAB
    width = arch.intermediate_size if not arch.is_moe else arch.moe_intermediate_size * max(arch.experts_per_token, 1)
    forward = max_num_batched_tokens * (2 * width / engine.tp + 4 * arch.hidden_size) * weight_dtype_bytes(arch, engine)
    return ACTIVATION_BASE_GIB + max(sampler, forward) / GIB


def estimate_memory(
    arch: ModelArch,
    gpu_memory_gib: float,
    engine: EngineConfig | None = None,
    *,
    gpu_name: str = "",
) -> MemoryEstimate:
    """Per-GPU memory breakdown and the start-up verdict for `arch` served with `engine` on that GPU."""
    engine = engine or EngineConfig()
    if not (math.isfinite(gpu_memory_gib) and gpu_memory_gib > 0):
        raise InputError("--gpu-memory-gib", f"must be a positive number, got {gpu_memory_gib}")
    validate_parallelism(arch, engine)
    if engine.quantization and engine.quantization != "fp8" and arch.quant is None:
        raise InputError(
            "--quantization",
            f"{engine.quantization} needs a checkpoint quantized that way; this model's config.json has no "
            "quantization_config (only fp8 quantizes an unquantized checkpoint at load time)",
        )
    max_model_len = engine.max_model_len or arch.max_position_embeddings
    default_seqs, default_tokens = default_batch_limits(gpu_memory_gib, gpu_name)
    max_num_seqs = engine.max_num_seqs or default_seqs
    max_num_batched_tokens = engine.max_num_batched_tokens or default_tokens

    budget = gpu_memory_gib * engine.gpu_memory_utilization
    weights = weights_bytes_per_gpu(arch, engine) / GIB
    activation = activation_gib(arch, engine, max_num_seqs, max_num_batched_tokens)
    non_torch = NON_TORCH_TP_GIB if engine.tp > 1 else NON_TORCH_SINGLE_GIB
    graphs = 0.0 if engine.enforce_eager else CUDA_GRAPH_BASE_GIB + CUDA_GRAPH_PER_LAYER_GIB * _layers_on_stage(arch, engine.pp)
    lora = lora_bytes_per_gpu(arch, engine) / GIB
    kv_gib = budget - weights - activation - non_torch - graphs - lora

    full_bpt, sliding_bpt = kv_bytes_per_token(arch, engine)
    bytes_per_token = full_bpt + sliding_bpt
    kv_bytes = max(kv_gib, 0.0) * GIB
    block_bytes = engine.block_size * bytes_per_token
    kv_tokens = int(kv_bytes // block_bytes) * engine.block_size

    def seq_bytes(length: int) -> float:
        window = min(length, arch.sliding_window) if arch.sliding_window else length
        return full_bpt * length + sliding_bpt * window

    needed = seq_bytes(max_model_len)
    fits = kv_gib > 0 and needed <= kv_bytes
    concurrency = kv_bytes / needed if needed else 0.0
    shortfall = max(0.0, (needed - kv_bytes) / GIB) if kv_gib > 0 else needed / GIB - kv_gib
    longest = _longest_len(kv_bytes, full_bpt, sliding_bpt, arch.sliding_window, engine.block_size) if kv_gib > 0 else 0

    if fits:
        reason = (
            f"fits: {kv_tokens:,} KV tokens per replica hold {concurrency:.1f} sequences of {max_model_len:,} tokens"
        )
    elif kv_gib <= 0:
        lora_part = f" + LoRA slots {lora:.1f} GiB" if lora else ""
        reason = (
            f"does not fit: weights {weights:.1f} GiB + activation/graphs/overhead {activation + non_torch + graphs:.1f} GiB"
            f"{lora_part} exceed the {budget:.1f} GiB budget per GPU ({gpu_memory_gib:.1f} GiB x {engine.gpu_memory_utilization}) "
            f"by {-kv_gib:.1f} GiB, before any KV cache"
        )
    else:
        reason = (
            f"does not fit: one {max_model_len:,}-token sequence needs {needed / GIB:.2f} GiB of KV cache per GPU but only "
            f"{kv_gib:.2f} GiB is left (short by {shortfall:.2f} GiB); the longest max_model_len that fits is {longest:,}"
        )
    return MemoryEstimate(
        fits=fits,
        reason=reason,
        model=arch.name,
        gpu_memory_gib=gpu_memory_gib,
        gpu_memory_utilization=engine.gpu_memory_utilization,
        tp=engine.tp,
        pp=engine.pp,
        budget_gib=round(budget, 3),
        weights_gib_per_gpu=round(weights, 3),
        activation_gib=round(activation, 3),
        non_torch_gib=non_torch,
        cuda_graph_gib=round(graphs, 3),
        lora_gib=round(lora, 3),
        kv_cache_gib_per_gpu=round(max(kv_gib, 0.0), 3),
        kv_bytes_per_token_per_gpu=bytes_per_token,
        kv_cache_tokens=kv_tokens,
        max_model_len=max_model_len,
        max_concurrency=round(concurrency, 2),
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=max_num_batched_tokens,
        shortfall_gib=round(shortfall, 2),
        max_model_len_that_fits=longest,
    )


def _longest_len(kv_bytes: float, full_bpt: int, sliding_bpt: int, window: int, block: int) -> int:
    if full_bpt == 0:
        return 10**9 if sliding_bpt * window <= kv_bytes else 0
    length = (kv_bytes - sliding_bpt * window) / full_bpt if window else kv_bytes / (full_bpt + sliding_bpt)
    if window and length < window:
        length = kv_bytes / (full_bpt + sliding_bpt)
    return max(0, int(length) // block * block)
