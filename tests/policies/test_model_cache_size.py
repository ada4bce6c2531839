"""policies/rules/model_cache_size.py and the sizing rule behind it: caches and disks hold the checkpoint that is
downloaded (its own dtype and quantization), not the in-GPU weights after --quantization fp8."""

from __future__ import annotations

import pytest

from components.sizing.engine import EngineConfig
from components.vllm import VllmEngine, model_cache_gib, startup_seconds
from policies.rules import model_cache_size
from tests.policies.policy_builders import container, deployment, pod_spec, res

L70B = "meta-llama/Llama-3.1-70B-Instruct"
DEP = "kubernetes:apps/v1:Deployment"


@pytest.mark.parametrize(
    "model, engine, gib",
    [
        (L70B, EngineConfig(quantization="fp8"), 131.4),  # BF16 on disk, FP8 on the GPU
        (L70B, EngineConfig(), 131.4),
        ("RedHatAI/Llama-3.3-70B-Instruct-FP8-dynamic", EngineConfig(), 67.7),  # an FP8 checkpoint
        ("Qwen/Qwen2.5-72B-Instruct-AWQ", EngineConfig(), 38.7),  # 4-bit AWQ
    ],
)
def test_checkpoint_is_what_is_downloaded(model, engine, gib):
    assert VllmEngine(model=model, engine=engine).checkpoint_gib() == pytest.approx(gib, abs=0.1)


def test_fp8_at_load_sizes_cache_and_startup_from_the_bf16_checkpoint():
    engine = VllmEngine(model=L70B, engine=EngineConfig(quantization="fp8", tp=4))
    assert engine.weights_gib_total() == pytest.approx(67.7, abs=0.1)
    assert engine.model_cache_gib() == model_cache_gib(engine.checkpoint_gib()) == 165  # was 95 from the FP8 size
    assert engine.startup_seconds(400) == startup_seconds(engine.checkpoint_gib(), 4, 400)
    streamed = VllmEngine(model=L70B, load_format="runai_streamer", model_uri="s3://b/llama")
    assert (streamed.download_gib(), streamed.model_cache_gib()) == (0.0, 20)


def vllm_deployment(size_limit: str, *extra_args: str) -> dict:
    c = container(args=[L70B, "--quantization", "fp8", "--download-dir", "/models/hub", *extra_args], gpus=4)
    c["volumeMounts"] = [{"name": "model-cache", "mountPath": "/models"}]
    spec = pod_spec(c)
    spec["volumes"] = [{"name": "model-cache", "emptyDir": {"sizeLimit": size_limit}}]
    return deployment(spec)


def test_emptydir_smaller_than_the_checkpoint_is_refused():
    assert model_cache_size.check(DEP, vllm_deployment("95Gi")) == [
        f"container 'vllm' downloads {L70B} (131.4 GiB checkpoint) into /models/hub, but volume 'model-cache' has "
        "sizeLimit 95Gi; the kubelet evicts the pod mid-download: give it at least 132Gi"
    ]
    assert model_cache_size.check(DEP, vllm_deployment("165Gi")) == []
    assert model_cache_size.check(DEP, vllm_deployment("95Gi", "--load-format", "runai_streamer")) == []


def test_quantities():
    assert model_cache_size.quantity_gib("1Ti") == 1024
    assert model_cache_size.quantity_gib("200G") == pytest.approx(186.3, abs=0.1)
    assert model_cache_size.quantity_gib("lots") is None


def test_component_disks_and_caches():
    ok = res("vllm-fleet:index:VllmService", "llm", {"model": L70B, "model_cache_gib": 165, "node_disk_gib": 320})
    small = res("vllm-fleet:index:EcsVllmTask", "task", {"model": L70B, "node_disk_gib": 100})
    assert model_cache_size.check_components([ok]) == []
    assert [f.message for f in model_cache_size.check_components([small])] == [
        f"'task' serves {L70B}: its node root volume is 100 GiB but the checkpoint it downloads is 131.4 GiB "
        "(node_disk_gib); size it from the checkpoint, not the in-GPU weights"
    ]


def test_the_shipped_prod_stack_passes():
    from stacks.preview_cli import run_stack

    result = run_stack("prod")
    assert not [r for r in result.results if r.policy in ("model-cache-holds-checkpoint", "node-disk-holds-checkpoint")]
    services = [r for r in result.run.resources if r.type == "vllm-fleet:index:VllmService"]
    assert services and all(s.inputs["model_cache_gib"] >= s.inputs["checkpoint_gib"] for s in services)
