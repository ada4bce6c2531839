"""GPU nodes in production run a pinned AMI release whose NVIDIA driver can run their container images.

An AMI that follows `latest` (Karpenter alias `al2023@latest`, the ECS `recommended` parameter) replaces every
GPU node, and reloads every model, at each AMI release; a driver older than an image's CUDA needs fails at the
first CUDA call after a 10-20 GB pull. Checked on:
- `vllm-fleet:index:SpotNodePool`: props ami_version (not `latest` in prod) and, with platform and images,
  the image/driver table (components/sizing/node_images.py);
- `kubernetes:karpenter.k8s.aws/v1:EC2NodeClass` (a user's own node class): no `@latest` alias in prod.
The environment: the pool's cluster is not visible here, so the stack's (from the URN), as in multi_az.
"""

from __future__ import annotations

from collections.abc import Mapping

from components.sizing import node_images
from policies import resource_views as rv
from policies.rules.multi_az import is_prod

SPOT_NODE_POOL = "vllm-fleet:index:SpotNodePool"
NODE_CLASS = "kubernetes:karpenter.k8s.aws/v1:EC2NodeClass"


def check(resource_type: str, props: Mapping, stack_environment: str | None = None) -> list[str]:
    if resource_type == SPOT_NODE_POOL:
        version = rv.scalar(rv.dig(props, "ami_version"))
        platform = rv.scalar(rv.dig(props, "platform"))
        out = []
        if version == node_images.LATEST and is_prod(stack_environment):
            out.append(f"SpotNodePool in {stack_environment} follows the latest AMI; pin ami_version (vllm-fleet:amiVersion) to a release")
        images = rv.dig(props, "images")
        if isinstance(version, str) and platform in node_images.PLATFORMS and rv.is_list(images):
            for image in images:
                image = rv.scalar(image)
                mismatch = node_images.image_ami_mismatch(image, platform, version) if isinstance(image, str) else None
                if mismatch:
                    out.append(f"SpotNodePool: {mismatch} (ami_version / vllm-fleet:amiVersion)")
        return out
    if resource_type == NODE_CLASS and is_prod(stack_environment):
        terms = rv.dig(props, "spec", "amiSelectorTerms")
        if rv.is_list(terms):
            for term in terms:
                alias = rv.scalar(rv.dig(term, "alias"))
                if isinstance(alias, str) and alias.endswith("@latest"):
                    return [f"EC2NodeClass in {stack_environment} uses AMI alias {alias}; pin a release such as al2023@{node_images.default_ami_version('eks')}"]
    return []
