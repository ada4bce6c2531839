"""components/sizing/node_images.py: image -> CUDA -> driver branch, AMI release -> driver, and the stack key
`vllm-fleet:amiVersion` (pinned in prod, refused when its driver cannot run the vLLM image)."""

from __future__ import annotations

import pytest

from components.sizing import node_images
from components.sizing.errors import InputError
from components.vllm import DEFAULT_IMAGE
from stacks.config import parse_stack_config


def test_every_row_has_a_source_and_defaults_are_in_the_table():
    t = node_images.table()
    for key in ("images", "cuda_min_driver_branch", "eks_ami_releases", "ecs_ami_releases"):
        assert t[key] and all(row["source"] for row in t[key])
    assert t["defaults"]["eks"] in {r["version"] for r in t["eks_ami_releases"]}
    assert t["defaults"]["ecs"] in {r["version"] for r in t["ecs_ami_releases"]}


def test_the_pinned_image_and_default_amis_match():
    assert node_images.image_requirement(DEFAULT_IMAGE) == ("13.0", 580)
    for platform in ("eks", "ecs"):
        assert node_images.image_ami_mismatch(DEFAULT_IMAGE, platform, node_images.default_ami_version(platform)) is None


@pytest.mark.parametrize(
    "image",
    [
        "vllm/vllm-openai:v0.29.0",
        "123456789012.dkr.ecr.us-east-1.amazonaws.com/docker-hub/vllm/vllm-openai:v0.29.0",
        "vllm/vllm-openai:v0.29.0@sha256:" + "0" * 64,
    ],
)
def test_image_is_recognised_behind_a_registry_or_digest(image):
    assert node_images.image_requirement(image) == ("13.0", 580)


def test_unknown_pairs_are_not_refused():
    assert node_images.image_ami_mismatch("example/own-image:1.0", "ecs", "20240611") is None
    assert node_images.image_ami_mismatch(DEFAULT_IMAGE, "eks", "v20991231") is None  # a release the table does not know
    assert node_images.image_ami_mismatch(DEFAULT_IMAGE, "eks", "latest") is None


def test_ecs_ami_name_for_known_and_unknown_releases():
    assert node_images.ecs_ami_name("20261113") == "al2023-ami-ecs-gpu-hvm-2023.0.20261113-kernel-6.1-x86_64-ebs"
    assert node_images.ecs_ami_name("20270105") == "al2023-ami-ecs-gpu-hvm-2023.0.20270105-kernel-6.1-x86_64-ebs"


BASE = {"vllm-fleet:tier": "small", "aws:region": "us-east-1", "vllm-fleet:dockerHubCredentialSecret": "ecr-pullthroughcache/docker-hub"}


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"vllm-fleet:platform": "eks", "vllm-fleet:environment": "prod", "vllm-fleet:amiVersion": "latest"},
         "vllm-fleet:amiVersion: 'latest' replaces every prod GPU node at each AMI release; pin a release such as 'v20260818'"),
        ({"vllm-fleet:platform": "ecs", "vllm-fleet:environment": "prod", "vllm-fleet:amiVersion": "latest"},
         "vllm-fleet:amiVersion: 'latest' replaces every prod GPU node at each AMI release; pin a release such as '20261113'"),
        ({"vllm-fleet:platform": "ecs", "vllm-fleet:amiVersion": "20240611"},
         "vllm-fleet:amiVersion: image vllm/vllm-openai:v0.29.0 is a CUDA 13.0 build needing NVIDIA driver R580+, but the "
         "ECS AMI 20240611 ships R535; use an AMI release such as 20261113"),
        ({"vllm-fleet:platform": "eks", "vllm-fleet:amiVersion": "20261113"},
         "vllm-fleet:amiVersion: '20261113' is not an EKS AMI release like 'v20260818' (or 'latest' in dev)"),
    ],
)
def test_stack_config_refuses(extra, message):
    with pytest.raises(InputError) as err:
        parse_stack_config({**BASE, **extra})
    assert str(err.value) == message


@pytest.mark.parametrize(
    "extra, version",
    [
        ({"vllm-fleet:platform": "eks"}, "v20260818"),
        ({"vllm-fleet:platform": "ecs", "vllm-fleet:environment": "prod"}, "20261113"),
        ({"vllm-fleet:platform": "eks", "vllm-fleet:amiVersion": "latest"}, "latest"),  # dev may follow latest
        ({"vllm-fleet:platform": "eks", "vllm-fleet:environment": "prod", "vllm-fleet:amiVersion": "v20260610"}, "v20260610"),
    ],
)
def test_stack_config_ami_version(extra, version):
    assert parse_stack_config({**BASE, **extra}).effective_ami_version == version


def test_bad_platform_value_is_not_masked():
    with pytest.raises(InputError, match=r"^vllm-fleet:platform:"):
        parse_stack_config({**BASE, "vllm-fleet:platform": "k8s"})
    with pytest.raises(InputError):
        node_images.validate_ami_version("k8s", "v20260818", "dev")
