"""pinned_node_ami: GPU nodes in production run a pinned AMI whose driver can run their images."""

import pytest

from policies.rules import pinned_node_ami

POOL = "vllm-fleet:index:SpotNodePool"
NODE_CLASS = "kubernetes:karpenter.k8s.aws/v1:EC2NodeClass"
IMAGE = "vllm/vllm-openai:v0.29.0"

CASES = [
    ("prod-pool-pinned", POOL, {"platform": "eks", "ami_version": "v20260818", "images": [IMAGE]}, "prod", []),
    ("prod-pool-latest", POOL, {"platform": "eks", "ami_version": "latest", "images": [IMAGE]}, "prod",
     ["SpotNodePool in prod follows the latest AMI; pin ami_version (vllm-fleet:amiVersion) to a release"]),
    ("dev-pool-latest", POOL, {"platform": "eks", "ami_version": "latest", "images": [IMAGE]}, "dev", []),
    ("old-driver-any-env", POOL, {"platform": "ecs", "ami_version": "20240611", "images": [IMAGE]}, "dev",
     ["SpotNodePool: image vllm/vllm-openai:v0.29.0 is a CUDA 13.0 build needing NVIDIA driver R580+, but the ECS AMI "
      "20240611 ships R535; use an AMI release such as 20261113 (ami_version / vllm-fleet:amiVersion)"]),
    ("cached-image-old-driver", POOL,
     {"platform": "ecs", "ami_version": "20240611", "images": ["1.dkr.ecr.us-east-1.amazonaws.com/p/vllm/vllm-openai:v0.29.0"]}, "dev",
     ["SpotNodePool: image 1.dkr.ecr.us-east-1.amazonaws.com/p/vllm/vllm-openai:v0.29.0 is a CUDA 13.0 build needing NVIDIA "
      "driver R580+, but the ECS AMI 20240611 ships R535; use an AMI release such as 20261113 (ami_version / vllm-fleet:amiVersion)"]),
    ("own-image-unknown", POOL, {"platform": "ecs", "ami_version": "20240611", "images": ["acme/llm:1"]}, "prod", []),
    ("prod-node-class-latest", NODE_CLASS, {"spec": {"amiSelectorTerms": [{"alias": "al2023@latest"}]}}, "prod",
     ["EC2NodeClass in prod uses AMI alias al2023@latest; pin a release such as al2023@v20260818"]),
    ("prod-node-class-pinned", NODE_CLASS, {"spec": {"amiSelectorTerms": [{"alias": "al2023@v20260818"}]}}, "prod", []),
    ("dev-node-class-latest", NODE_CLASS, {"spec": {"amiSelectorTerms": [{"alias": "al2023@latest"}]}}, "dev", []),
]


@pytest.mark.parametrize("resource_type, props, environment, messages", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_pinned_node_ami(resource_type, props, environment, messages):
    assert pinned_node_ami.check(resource_type, props, environment) == messages
