"""The memory model against what vLLM itself printed (tests/data/vllm_memory_observations.json, sources per record).

Which records hold to which tolerance, and why:
- weights per GPU, every record whose model we can describe: within 5%. Weights do not depend on the engine.
- KV cache tokens, the V1 records of vLLM 0.17-0.19 (the generation memory.py models): within 20%, and in
  practice within ~6%. We subtract CUDA-graph memory that 0.19 takes from the slack after sizing the KV cache
  (0.21+ reserves it up front), so our KV is slightly lower, never higher by more than rounding.
- V1 records of 0.10 (smaller default batches: 256 sequences, 2,048 tokens) and 0.15/0.16 (a larger activation
  profile, 5.64 GiB for Qwen3-14B instead of 2.23 GiB from 0.17 on): also within 20%, asserted separately so a
  change in either is visible.
- The llm-d "empirical" record ran vllm-openai:latest (~0.11) with --block-size 128 and prefix caching; the
  0.8.3 Qwen2.5-VL record profiles a vision encoder: KV not compared, weights are.
- V0 records (vLLM <= 0.8): weights only. V0 profiled a max_model_len-long prefill, so its activation (and
  therefore KV and the fit verdict) differs from V1 at long contexts: see test_v0_long_context_verdict_differs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from components.sizing.engine import EngineConfig
from components.sizing.memory import estimate_memory
from components.sizing.model_config import parse_model_config
from components.sizing.models import model_catalog

DATA = Path(__file__).resolve().parents[1] / "data"  # the project's copies, with sources (tests/data/README.md)
OBSERVATIONS = DATA / "vllm_memory_observations.json"
CONFIGS = DATA / "model-configs"


def _catalog(hf_id: str) -> dict:
    return model_catalog()[hf_id].config


def _data_config(name: str) -> dict:
    return json.loads((CONFIGS / name).read_text())


# Models not in the catalog, described by their published config.json values (architecture keys only).
GEMMA_2_2B = {  # https://huggingface.co/google/gemma-2-2b-it/blob/main/config.json
    "model_type": "gemma2", "hidden_size": 2304, "num_hidden_layers": 26, "num_attention_heads": 8,
    "num_key_value_heads": 4, "head_dim": 256, "intermediate_size": 9216, "vocab_size": 256000,
    "sliding_window": 4096, "torch_dtype": "float32", "max_position_embeddings": 8192,
}
GEMMA_7B = {  # https://huggingface.co/google/gemma-7b/blob/main/config.json
    "model_type": "gemma", "hidden_size": 3072, "num_hidden_layers": 28, "num_attention_heads": 16,
    "num_key_value_heads": 16, "head_dim": 256, "intermediate_size": 24576, "vocab_size": 256000,
    "torch_dtype": "bfloat16", "max_position_embeddings": 8192,
}
QWEN3_14B = {  # https://huggingface.co/Qwen/Qwen3-14B/blob/main/config.json
    "model_type": "qwen3", "hidden_size": 5120, "num_hidden_layers": 40, "num_attention_heads": 40,
    "num_key_value_heads": 8, "head_dim": 128, "intermediate_size": 17408, "vocab_size": 151936,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16", "max_position_embeddings": 40960,
}
W8A8 = {"quant_method": "compressed-tensors", "ignore": ["lm_head"], "config_groups": {"group_0": {
    "targets": ["Linear"], "weights": {"num_bits": 8, "type": "int", "strategy": "channel", "symmetric": True}}}}
W4A16 = {"quant_method": "compressed-tensors", "ignore": ["lm_head"], "config_groups": {"group_0": {
    "targets": ["Linear"], "weights": {"num_bits": 4, "type": "int", "strategy": "group", "group_size": 128, "symmetric": True}}}}
FP8_DYNAMIC = {"quant_method": "compressed-tensors", "ignore": ["lm_head"], "config_groups": {"group_0": {
    "targets": ["Linear"], "weights": {"num_bits": 8, "type": "float", "strategy": "channel", "symmetric": True}}}}


def _with_quant(cfg: dict, quant: dict) -> dict:
    return {**cfg, "quantization_config": quant}


def config_for(model: str) -> dict | None:
    """The config.json describing a record's model, or None when we cannot describe it (said per record)."""
    table = {
        "meta-llama/Llama-3.1-8B-Instruct": lambda: _catalog("meta-llama/Llama-3.1-8B-Instruct"),
        "meta-llama/Meta-Llama-3-8B-Instruct": lambda: {**_catalog("meta-llama/Llama-3.1-8B-Instruct"), "max_position_embeddings": 8192},
        "Qwen/Qwen2.5-7B-Instruct": lambda: _catalog("Qwen/Qwen2.5-7B-Instruct"),
        # Qwen2-7B has the same shapes as Qwen2.5-7B (hidden 3584, 28 layers, 4 KV heads, vocab 152,064).
        "Qwen/Qwen2-7B-Instruct": lambda: _catalog("Qwen/Qwen2.5-7B-Instruct"),
        "Qwen/Qwen3-8B": lambda: _catalog("Qwen/Qwen3-8B"),
        "Qwen/Qwen3-14B": lambda: QWEN3_14B,
        "google/gemma-2-9b-it": lambda: _catalog("google/gemma-2-9b-it"),
        "google/gemma-2-2b-it": lambda: GEMMA_2_2B,
        "google/gemma-7b": lambda: GEMMA_7B,
        "microsoft/phi-2": lambda: _data_config("microsoft--phi-2.config.json"),
        "facebook/opt-125m": lambda: _data_config("facebook--opt-125m.config.json"),
        "teknium/OpenHermes-2.5-Mistral-7B": lambda: {**_data_config("mistralai--Mistral-7B-v0.1.config.json"), "vocab_size": 32002},
        "RedHatAI/Llama-3.3-70B-Instruct-fp8-dynamic": lambda: _catalog("RedHatAI/Llama-3.3-70B-Instruct-FP8-dynamic"),
        "RedHatAI/Llama-3.3-70B-Instruct-FP8-dynamic": lambda: _catalog("RedHatAI/Llama-3.3-70B-Instruct-FP8-dynamic"),
        "redhatai/Llama-3.3-70B-Instruct-quantized.w8a8": lambda: _with_quant(_catalog("meta-llama/Llama-3.3-70B-Instruct"), W8A8),
        "RedHatAI/Qwen2.5-7B-Instruct-fp8-dynamic": lambda: _with_quant(_catalog("Qwen/Qwen2.5-7B-Instruct"), FP8_DYNAMIC),
        "RedHatAI/Qwen2.5-7B-Instruct-quantized.w8a8": lambda: _with_quant(_catalog("Qwen/Qwen2.5-7B-Instruct"), W8A8),
        "RedHatAI/Meta-Llama-3.1-8B-Instruct-quantized.w8a8": lambda: _with_quant(_catalog("meta-llama/Llama-3.1-8B-Instruct"), W8A8),
        "RedHatAI/Meta-Llama-3.1-8B-Instruct-quantized.w4a16": lambda: _with_quant(_catalog("meta-llama/Llama-3.1-8B-Instruct"), W4A16),
        "Qwen/Qwen2.5-VL-72B-Instruct (local copy)": lambda: _catalog("Qwen/Qwen2.5-72B-Instruct"),
    }
    maker = table.get(model)
    return maker() if maker else None


# Records we cannot describe, and why (so "every usable record" is accounted for).
UNDESCRIBED = {
    "openai/gpt-oss-20b": "GPU memory variant not stated (A100 40 or 80 GB) and no config.json in the catalog",
    "google/gemma-4-26B-A4B": "GPU memory variant not stated; Gemma-4 config not in the catalog",
    "cyankiwi/gemma-4-31B-it-AWQ-4bit": "user-rounded figures only; Gemma-4 config not in the catalog",
    "meta-llama/Llama-3.2-11B-Vision": "vision model run with --load-format dummy; its encoder dominates activation",
    "TheBloke/Llama-2-7B-GPTQ": "no weights or GPU memory printed (blocks only, V0)",
    "TheBloke/zephyr-7B-beta-AWQ": "no weights or GPU memory printed (blocks only, V0)",
    "mgoin/phi-2-super-marlin": "no weights or GPU memory printed (blocks only, V0)",
    "Llama-2-7B (exact HF id not stated; meta-llama/Llama-2-7b-hf family)": "no weights or GPU memory printed (blocks only, V0)",
}


def _records() -> list[dict]:
    if not OBSERVATIONS.is_file():
        pytest.fail(f"calibration data missing: {OBSERVATIONS}")
    return json.loads(OBSERVATIONS.read_text())["records"]


def _gpu_memory(record: dict) -> float | None:
    return record.get("gpu_memory_total_gib") or record.get("gpu_memory_total_reported_GiB")


def _weights_reported(record: dict) -> float | None:
    rep = record["reported"]
    for key in ("model_loading_gib_per_gpu", "model_weights_GiB_per_gpu", "model_loading_gib", "model_weights_GiB", "loading_model_weights_GB"):
        if rep.get(key) is not None:
            return float(rep[key])
    return None


def _engine(record: dict) -> EngineConfig:
    dtype = str(record.get("dtype") or "auto").split(" ")[0]
    quant = record.get("quantization")
    quantization = "fp8" if quant == "fp8" else None  # other methods come from the checkpoint's own config
    kv = str(record.get("kv_cache_dtype") or "auto").split(" ")[0]
    return EngineConfig(
        tp=record["tensor_parallel_size"],
        pp=record["pipeline_parallel_size"],
        dtype=dtype if dtype in ("bfloat16", "float16", "float32") else "auto",
        quantization=quantization,
        kv_cache_dtype=kv if kv in ("fp8", "auto") else "auto",
        max_model_len=record.get("max_model_len") or None,
        max_num_seqs=record.get("max_num_seqs"),
        max_num_batched_tokens=record.get("max_num_batched_tokens"),
        gpu_memory_utilization=record["gpu_memory_utilization"],
        enforce_eager=bool(record.get("enforce_eager")),
    )


def _estimate(record: dict):
    cfg = config_for(record["model"])
    arch = parse_model_config(cfg, name=record["model"])
    gpu_memory = _gpu_memory(record) or 47.54  # RTX A6000 48 GB reports 47.54 GiB (the 0.4.1 log does not print it)
    return estimate_memory(arch, gpu_memory, _engine(record), gpu_name=record["gpu"])


def _version(record: dict) -> str:
    return str(record.get("vllm_version", ""))


def test_every_usable_record_is_checked_or_explained():
    for record in _records():
        if record.get("usable_for_validation") is False:
            continue
        assert config_for(record["model"]) is not None or record["model"] in UNDESCRIBED, record["id"]


WEIGHT_RECORDS = [r for r in _records() if config_for(r["model"]) is not None and _weights_reported(r) is not None]


@pytest.mark.parametrize("record", WEIGHT_RECORDS, ids=[r["id"] for r in WEIGHT_RECORDS])
def test_weights_per_gpu_within_5_percent(record):
    est = _estimate(record)
    reported = _weights_reported(record)
    assert est.weights_gib_per_gpu == pytest.approx(reported, rel=0.05), (est.weights_gib_per_gpu, reported)


def _kv_records(predicate) -> list[dict]:
    out = []
    for r in _records():
        rep = r["reported"]
        if r["engine"] != "V1" or config_for(r["model"]) is None or "kv_cache_tokens" not in rep:
            continue
        if predicate(_version(r)):
            out.append(r)
    return out


MODELLED = _kv_records(lambda v: v.startswith(("0.17", "0.18", "0.19")))
OLDER_V1 = _kv_records(lambda v: v.startswith(("0.10", "0.15", "0.16")))


@pytest.mark.parametrize("record", MODELLED, ids=[r["id"] for r in MODELLED])
def test_kv_tokens_within_20_percent_for_the_modelled_generation(record):
    est = _estimate(record)
    reported = record["reported"]["kv_cache_tokens"]
    assert est.kv_cache_tokens == pytest.approx(reported, rel=0.20), (est.kv_cache_tokens, reported)
    assert est.fits  # every one of these runs started


@pytest.mark.parametrize("record", OLDER_V1, ids=[r["id"] for r in OLDER_V1])
def test_older_v1_is_never_optimistic_and_close_in_gib(record):
    """0.10 and 0.15/0.16 differ from what we model. We must never promise more KV than they gave, and the gap
    must stay within 1.5 GiB per GPU at TP 1 (CUDA graphs we reserve, 0.19's larger sampler profile). In relative terms
    that is within 20% except at gpu_memory_utilization 0.25, where KV is a ~5 GiB sliver of the budget."""
    est = _estimate(record)
    reported = record["reported"]["kv_cache_tokens"]
    if _version(record).startswith(("0.15", "0.16")):
        # 0.15/0.16 reserved 5.64 GiB of activation for Qwen3-14B where 0.17+ reserves 2.23 GiB: we give
        # ~8% more KV than those two releases did. Our pinned image is newer; still within the 20% floor.
        assert est.kv_cache_tokens == pytest.approx(reported, rel=0.20)
        return
    assert est.kv_cache_tokens <= reported * 1.02
    per_token = est.kv_bytes_per_token_per_gpu
    gap_gib = (reported - est.kv_cache_tokens) * per_token / 1024**3
    # Under TP, 0.19 counts ~2.1 GiB of non-torch memory per GPU (NCCL / custom all-reduce buffers) where 0.10
    # counted ~0.4 GiB: we keep 0.19's figure, so the gap is larger there.
    assert gap_gib < (1.5 if record["tensor_parallel_size"] == 1 else 3.5), gap_gib
    if record["gpu_memory_utilization"] >= 0.5:
        assert est.kv_cache_tokens == pytest.approx(reported, rel=0.20)


def test_modelled_generation_is_well_covered_and_close():
    """Beyond the 20% floor: the 0.17-0.19 records average within 6%."""
    assert len(MODELLED) >= 25
    errors = [abs(_estimate(r).kv_cache_tokens / r["reported"]["kv_cache_tokens"] - 1) for r in MODELLED]
    assert sum(errors) / len(errors) < 0.06, max(errors)


def test_v0_long_context_verdict_differs():
    """The V0 engine refused Llama-3.1-8B at 29,000 tokens on an RTX 3090 (23,648 KV tokens) because it profiled
    a 29,000-token prefill (peak 17.98 GiB). V1 prefills in chunks of max_num_batched_tokens, so the same GPU
    holds ~37,000 tokens: we say it fits, and we say it with V1's numbers."""
    record = next(r for r in _records() if r["id"] == "vllm10517-3090-l31-8b-29k")
    est = _estimate(record)
    assert record["reported"]["error_max_tokens_in_kv_cache"] == 23648
    assert est.fits
    assert 30000 < est.kv_cache_tokens < 45000
