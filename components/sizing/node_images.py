"""GPU node software: which NVIDIA driver a container image needs and which driver an AMI release ships.

One table (data/node_images.json, each row with its source) answers both; these pure functions are shared by
SpotNodePool (refuses a pool whose AMI cannot run its images), the stack config (refuses `latest` in prod and a
known-bad pair, naming the keys) and preview. No pulumi import.

Why it matters: a CUDA 13 image on a node whose driver is older than R580 starts, then fails at the first CUDA
call ("CUDA driver version is insufficient"), after a 10-20 GB pull, on every node. And an AMI that follows
`latest` replaces every GPU node (and reloads every model) at each AMI release, so prod pins a release.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from .errors import InputError

DATA = Path(__file__).with_name("data") / "node_images.json"
LATEST = "latest"
PLATFORMS = ("eks", "ecs")
# Release names as AWS publishes them: EKS AMI releases `v20260818` (Karpenter alias `al2023@v20260818`),
# ECS-optimized AMI releases `20261113` (AMI name al2023-ami-ecs-gpu-hvm-2023.0.20261113-kernel-6.1-x86_64-ebs).
_VERSION = {"eks": re.compile(r"^v\d{8}$"), "ecs": re.compile(r"^\d{8}$")}
_EXAMPLE = {"eks": "v20260818", "ecs": "20261113"}
# The AL2023 ECS GPU AMI name for a release not in the table (the pattern of every AL2023 GPU release since 2023).
ECS_GPU_AMI_NAME = "al2023-ami-ecs-gpu-hvm-2023.0.{version}-kernel-6.1-x86_64-ebs"
ECS_AMI_OWNER = "amazon"


@lru_cache(maxsize=1)
def table() -> dict[str, Any]:
    return json.loads(DATA.read_text())


def default_ami_version(platform: str) -> str:
    """The pinned AMI release the stacks use unless `vllm-fleet:amiVersion` moves it."""
    return table()["defaults"][platform]


def validate_ami_version(platform: str, version: str, environment: str, field: str = "ami_version") -> str:
    """`version` if well-formed for `platform`; `latest` only outside prod. Raises InputError naming `field`."""
    if platform not in PLATFORMS:
        raise InputError("platform", f"{platform!r}; allowed: {', '.join(PLATFORMS)}")
    if version == LATEST:
        if environment == "prod":
            raise InputError(
                field,
                f"'latest' replaces every prod GPU node at each AMI release; pin a release such as {default_ami_version(platform)!r}",
            )
        return version
    if not _VERSION[platform].match(version):
        raise InputError(field, f"{version!r} is not an {platform.upper()} AMI release like {_EXAMPLE[platform]!r} (or 'latest' in dev)")
    return version


def karpenter_alias(version: str) -> str:
    """EC2NodeClass amiSelectorTerms alias (karpenter.sh/docs/concepts/nodeclasses: `family@version`)."""
    return f"al2023@{version}"


def _ecs_row(version: str) -> dict[str, Any] | None:
    return next((r for r in table()["ecs_ami_releases"] if r["version"] == version), None)


def ecs_ami_name(version: str) -> str:
    """The ECS GPU-optimized AMI name of a release (exact, owner `amazon`): looked up with ec2:DescribeImages."""
    row = _ecs_row(version)
    return row["ami_name"] if row else ECS_GPU_AMI_NAME.format(version=version)


def ami_driver_branch(platform: str, version: str) -> int | None:
    """The NVIDIA driver branch an AMI release ships, or None when the table does not know the release."""
    if version == LATEST:
        return None
    rows = table()["eks_ami_releases"] if platform == "eks" else table()["ecs_ami_releases"]
    row = next((r for r in rows if r["version"] == version), None)
    return row["driver_branch"] if row else None


def _repository_and_tag(image: str) -> str:
    """`vllm/vllm-openai:v0.29.0` from any spelling of it: a registry host or pull-through prefix in front
    (`123.dkr.ecr.us-east-1.amazonaws.com/docker-hub/vllm/vllm-openai:v0.29.0`), a digest behind."""
    image = image.split("@", 1)[0]
    for row in table()["images"]:
        if image == row["image"] or image.endswith("/" + row["image"]):
            return row["image"]
    return image


def image_requirement(image: str) -> tuple[str, int] | None:
    """(CUDA version, minimum driver branch) of a known image, or None."""
    name = _repository_and_tag(image)
    row = next((r for r in table()["images"] if r["image"] == name), None)
    if row is None:
        return None
    need = next(r for r in table()["cuda_min_driver_branch"] if r["cuda"] == row["cuda"])
    return row["cuda"], need["min_driver_branch"]


def image_ami_mismatch(image: str, platform: str, version: str) -> str | None:
    """Why `image` cannot run on `platform`'s AMI release `version`, or None (fits, or not known to the table)."""
    need = image_requirement(image)
    have = ami_driver_branch(platform, version)
    if need is None or have is None:
        return None
    cuda, branch = need
    if have >= branch:
        return None
    fits = [r["version"] for r in table()[f"{platform}_ami_releases"] if r["driver_branch"] >= branch]
    return (
        f"image {image} is a CUDA {cuda} build needing NVIDIA driver R{branch}+, but the {platform.upper()} AMI "
        f"{version} ships R{have}; use an AMI release such as {fits[0] if fits else '(none known)'}"
    )


def image_digest_note(image: str) -> str | None:
    row = next((r for r in table()["images"] if r["image"] == _repository_and_tag(image)), None)
    return None if row is None or row.get("digest") else (row or {}).get("digest_note")


__all__ = [
    "LATEST",
    "ami_driver_branch",
    "default_ami_version",
    "ecs_ami_name",
    "image_ami_mismatch",
    "image_requirement",
    "karpenter_alias",
    "validate_ami_version",
]
