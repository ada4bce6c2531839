"""ImageCache: an ECR pull-through cache rule for Docker Hub in one region, and the IAM that lets nodes pull
through it.

Why: up to 100+ GPU nodes pulling a 10-20 GB vLLM image anonymously from Docker Hub through a handful of NAT
gateways share a few public IPs and hit Docker Hub's per-IP pull limits; nodes then sit in ImagePullBackOff.
The rule makes ECR fetch each layer once per region and serve every node from ECR (through the VPC's ECR
endpoints where they exist). `image_uri()` rewrites an image to the cache; `allow()` grants a role what a first
pull through the cache needs (import the upstream image, create its cache repository).

Prerequisite (not created here, so no credential ever enters Pulumi state): a Secrets Manager secret holding
a Docker Hub username and access token, named `ecr-pullthroughcache/...`, in every region the cache is used
(ECR requires the secret in the rule's own account and region; a Secrets Manager replica keeps the name).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pulumi
import pulumi_aws as aws
from pydantic import BaseModel, ConfigDict, Field, field_validator

from .sizing.engine import component_args
from .vllm import DOCKER_HUB_REGISTRY, PULL_THROUGH_ACTIONS, PULL_THROUGH_SECRET_PREFIX, pull_through_image

# CreatePullThroughCacheRule ecrRepositoryPrefix: 2-30 characters of this pattern (botocore's ECR service model).
_PREFIX = re.compile(r"^(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*$")
PREFIX_MAX = 30


def repository_prefix(stack: str) -> str:
    """A per-stack prefix (a rule's prefix is unique per account and region; two stacks must not collide)."""
    cleaned = re.sub(r"[^a-z0-9]+", "-", stack.lower()).strip("-")
    prefix = f"{cleaned[: PREFIX_MAX - len('-docker-hub')].rstrip('-')}-docker-hub"
    return prefix if len(prefix) >= 2 else "docker-hub"


class ImageCacheArgs(BaseModel):
    """A Docker Hub pull-through cache in the region of the component's provider."""

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    region: str = Field(description="Region of the cache (the component's provider region); used in the image URI.")
    credential_secret_name: str = Field(
        description="Secrets Manager secret (in `region`) with the Docker Hub username and access token; its name "
        "must start with `ecr-pullthroughcache/` (ECR refuses others)."
    )
    repository_prefix: str = Field("docker-hub", description="ECR repository prefix of the cached images (2-30 characters).")

    @field_validator("credential_secret_name")
    @classmethod
    def _secret(cls, value: str) -> str:
        if not value.startswith(PULL_THROUGH_SECRET_PREFIX) or value == PULL_THROUGH_SECRET_PREFIX:
            raise ValueError(f"{value!r} must start with {PULL_THROUGH_SECRET_PREFIX!r} (ECR only uses secrets named so)")
        return value

    @field_validator("repository_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not 2 <= len(value) <= PREFIX_MAX or not _PREFIX.match(value):
            raise ValueError(f"{value!r} must be 2-{PREFIX_MAX} lower-case letters, digits and . _ - /")
        return value


def pull_policy(repository_arn_prefix: str) -> dict[str, Any]:
    """Identity policy for a role that pulls through the cache: the pull-through actions on its repositories."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "PullThroughCache", "Effect": "Allow", "Action": list(PULL_THROUGH_ACTIONS), "Resource": f"{repository_arn_prefix}/*"}
        ],
    }


class ImageCache(pulumi.ComponentResource):
    """ECR pull-through cache rule for Docker Hub + a pull policy to attach to node / task execution roles."""

    def __init__(self, name: str, args: ImageCacheArgs | dict, opts: pulumi.ResourceOptions | None = None):
        args = component_args(ImageCacheArgs, args)
        props = {"upstream": DOCKER_HUB_REGISTRY, "repository_prefix": args.repository_prefix, "region": args.region}
        super().__init__("vllm-fleet:index:ImageCache", name, props, opts)
        child = pulumi.ResourceOptions(parent=self)
        invoke = pulumi.InvokeOutputOptions(parent=self)
        # A plain value (synchronous invoke): image URIs are plain strings the policies and the fit checks read.
        self.account_id: str = aws.get_caller_identity(opts=pulumi.InvokeOptions(parent=self)).account_id
        self.region = args.region
        self.prefix = args.repository_prefix
        secret = aws.secretsmanager.get_secret_output(name=args.credential_secret_name, opts=invoke)
        self.rule = aws.ecr.PullThroughCacheRule(
            f"{name}-rule",
            ecr_repository_prefix=args.repository_prefix,
            upstream_registry_url=DOCKER_HUB_REGISTRY,
            credential_arn=secret.arn,
            opts=child,
        )
        partition = aws.get_partition_output(opts=invoke).partition
        arn_prefix = partition.apply(lambda p: f"arn:{p}:ecr:{args.region}:{self.account_id}:repository/{args.repository_prefix}")
        self.pull_policy = aws.iam.Policy(
            f"{name}-pull",
            description=f"Pull images through the ECR cache {args.repository_prefix} ({args.region})",
            policy=arn_prefix.apply(lambda a: json.dumps(pull_policy(a))),
            opts=child,
        )
        self.register_outputs({**props, "rule_id": self.rule.id, "pull_policy_arn": self.pull_policy.arn})

    def image_uri(self, image: str) -> str:
        """`image` (a Docker Hub image) as served by this cache."""
        return pull_through_image(image, self.account_id, self.region, self.prefix)

    def allow(self, name: str, role_name: Any) -> aws.iam.RolePolicyAttachment:
        """Let `role_name` pull through the cache (attach the pull policy), as a child of this component."""
        return aws.iam.RolePolicyAttachment(
            f"{name}-image-cache", role=role_name, policy_arn=self.pull_policy.arn, opts=pulumi.ResourceOptions(parent=self, depends_on=[self.rule])
        )


__all__ = ["ImageCache", "ImageCacheArgs", "pull_policy", "repository_prefix"]
