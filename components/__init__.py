"""vllm-fleet components: reusable Pulumi ComponentResources that run vLLM on AWS.

    from components import GpuCluster, SpotNodePool, VllmService, EcsVllmTask, LoraStore, MultiRegionLB

Exports load lazily, so `components.sizing` (pure Python) can be used without importing the Pulumi SDKs.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "GpuCluster": "components.gpu_cluster",
    "GpuClusterArgs": "components.gpu_cluster",
    "SpotNodePool": "components.spot_node_pool",
    "SpotNodePoolArgs": "components.spot_node_pool",
    "VllmService": "components.vllm_service",
    "VllmServiceArgs": "components.vllm_service",
    "EcsVllmTask": "components.ecs_vllm_task",
    "EcsVllmTaskArgs": "components.ecs_vllm_task",
    "LoraStore": "components.lora_store",
    "LoraStoreArgs": "components.lora_store",
    "MultiRegionLB": "components.multi_region_lb",
    "MultiRegionLBArgs": "components.multi_region_lb",
    "ImageCache": "components.image_cache",
    "ImageCacheArgs": "components.image_cache",
    "VllmEngine": "components.vllm",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'components' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
