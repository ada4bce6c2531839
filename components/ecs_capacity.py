"""The ECS side of SpotNodePool: GPU instances for an ECS cluster, spot first, drained before they go.

`build_ecs_capacity` is called by SpotNodePool (platform "ecs"). It creates:
- an instance role + profile (AmazonEC2ContainerServiceforEC2Role for the ECS agent, AmazonSSMManagedInstanceCore
  for Session Manager instead of SSH) and a security group with no ingress (awsvpc tasks have their own ENIs
  and security groups; the instance only needs HTTPS out to ECS, ECR and SSM);
- a launch template: the ECS GPU-optimized AMI of a pinned release (found by its AMI name; `latest` in dev reads
  the `recommended` SSM parameter), IMDSv2 required, an
  encrypted gp3 root volume sized for the image and weights cache, and user data that joins the cluster with
  GPU support, spot draining, and IMDS blocked for awsvpc tasks;
- an Auto Scaling group with a mixed-instances policy (on-demand base, spot share, price-capacity-optimized,
  one override per instance type of the same GPU), capacity rebalancing and scale-in protection;
- an ECS capacity provider with managed scaling, managed termination protection and managed draining, and the
  cluster association (`aws.ecs.ClusterCapacityProviders`).

Several pools on one cluster: ECS keeps ONE capacity-provider list per cluster (PutClusterCapacityProviders
replaces it whole), so each pool attaching itself would have the pools overwrite each other. Build those pools
with `attach_to_cluster=False` and call `attach_capacity_providers` once with all their capacity providers.

IMDS choice: awsvpc tasks get credentials from the ECS agent (169.254.170.2), never from IMDS, and
ECS_AWSVPC_BLOCK_IMDS=true cuts them off IMDS anyway; the agent runs with host networking, so a hop limit of 1
is enough and keeps any bridge-mode container (one extra hop) off the instance role too.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from .network import Network
from .sizing import node_images
from .sizing.errors import InputError
from .sizing.instances import InstanceType, get_instance
from .vllm import SPOT_NOTICE_SECONDS

# docs.aws.amazon.com/AmazonECS/latest/developerguide/retrieve-ecs-optimized_AMI.html (GPU variant, AL2023):
# `recommended` moves with every ECS AMI release, so only ami_version="latest" (dev) reads it; a pinned release is
# found by its exact AMI name (owner amazon), the name its release notes give (components/sizing/node_images.py).
ECS_GPU_AMI_PARAMETER = "/aws/service/ecs/optimized-ami/amazon-linux-2023/gpu/recommended/image_id"
ROOT_DEVICE = "/dev/xvda"  # root device name of the ECS-optimized AL2023 AMIs
MIN_ROOT_VOLUME_GIB = 30  # the ECS GPU AMI's own snapshot is 30 GiB
MAX_ROOT_VOLUME_GIB = 16384  # gp3 limit
IMDS_HOP_LIMIT = 1
# How long the agent lets a container stop before SIGKILL: inside the 2-minute spot notice, with 10 s left for
# the agent to deregister and the instance to go.
CONTAINER_STOP_TIMEOUT_SECONDS = SPOT_NOTICE_SECONDS - 10
# A GPU instance boots, joins the cluster and pulls a ~10 GB image before its tasks run; managed scaling should
# not count it as capacity (and launch more) before that.
INSTANCE_WARMUP_SECONDS = 300
ENVIRONMENTS = ("dev", "prod")
# CapacityProviderStrategyItem (botocore's ECS service model): weight 0-1000, base 0-100000, only one item with a
# base, at least one weight > 0 when there are several, at most 20 capacity providers in a strategy.
MAX_STRATEGY_WEIGHT = 1000
MAX_STRATEGY_BASE = 100000
MAX_STRATEGY_PROVIDERS = 20


@dataclass
class EcsCapacityParts:
    launch_template: aws.ec2.LaunchTemplate
    auto_scaling_group: aws.autoscaling.Group
    capacity_provider: aws.ecs.CapacityProvider
    instance_role: aws.iam.Role
    security_group: aws.ec2.SecurityGroup
    instance_profile: aws.iam.InstanceProfile | None = None
    cluster_capacity_providers: aws.ecs.ClusterCapacityProviders | None = None
    instance: InstanceType | None = None  # plain: the first (preferred) instance type


# ----- pure rules ----------------------------------------------------------------------------------------


def validate_instance_types(instance_types: list[str]) -> list[InstanceType]:
    """All the same GPU and GPU count: a task asks for N GPUs, and a smaller type could never run it."""
    if not instance_types:
        raise InputError("instance_types", "give at least one GPU instance type, e.g. ['g6e.xlarge']")
    found = [get_instance(t, field="instance_types") for t in instance_types]
    if len({t.name for t in found}) != len(found):
        raise InputError("instance_types", f"duplicate instance types in {instance_types}")
    first = found[0]
    for other in found[1:]:
        if (other.gpu_name, other.gpu_count) != (first.gpu_name, first.gpu_count):
            raise InputError(
                "instance_types",
                f"{other.name} has {other.gpu_count} x {other.gpu_name} but {first.name} has {first.gpu_count} x {first.gpu_name}; "
                "one pool holds one GPU class and count (make another pool for the other)",
            )
    return found


def validate_capacity_provider_name(name: str) -> str:
    """ECS rejects capacity provider names that start with aws, ecs or fargate (CreateCapacityProvider)."""
    if name.lower().startswith(("aws", "ecs", "fargate")):
        raise InputError("name", f"{name!r}: an ECS capacity provider name cannot start with 'aws', 'ecs' or 'fargate'")
    return name


def validate_sizes(min_size: int, max_size: int, on_demand_base: int, spot_percentage: int) -> None:
    if min_size < 0:
        raise InputError("min_size", f"{min_size}; must be >= 0")
    if max_size < 1 or max_size < min_size:
        raise InputError("max_size", f"{max_size}; must be >= 1 and >= min_size ({min_size})")
    if not 0 <= on_demand_base <= max_size:
        raise InputError("on_demand_base", f"{on_demand_base}; must be 0..max_size ({max_size})")
    if not 0 <= spot_percentage <= 100:
        raise InputError("spot_percentage", f"{spot_percentage}; must be 0..100")


def validate_root_volume(gib: int) -> int:
    if not MIN_ROOT_VOLUME_GIB <= gib <= MAX_ROOT_VOLUME_GIB:
        raise InputError("root_volume_gib", f"{gib} GiB; must be {MIN_ROOT_VOLUME_GIB}-{MAX_ROOT_VOLUME_GIB} GiB (gp3)")
    return gib


def instances_distribution(on_demand_base: int, spot_percentage: int) -> dict[str, Any]:
    """The ASG's on-demand/spot split: a fixed on-demand base, then `spot_percentage` % of the rest on spot."""
    return {
        "on_demand_base_capacity": on_demand_base,
        "on_demand_percentage_above_base_capacity": 100 - spot_percentage,
        # Spot from the pools least likely to be interrupted, weighed against price (AWS's recommended strategy).
        "spot_allocation_strategy": "price-capacity-optimized",
        # On-demand in the order given: the first instance type is the preferred one.
        "on_demand_allocation_strategy": "prioritized",
    }


def ecs_agent_config(cluster_name: str) -> dict[str, str]:
    """/etc/ecs/ecs.config (docs.aws.amazon.com/AmazonECS/latest/developerguide/ecs-agent-config.html)."""
    return {
        "ECS_CLUSTER": cluster_name,
        "ECS_ENABLE_GPU_SUPPORT": "true",
        # Spot notice -> the agent sets the instance DRAINING, so services start replacements elsewhere at once.
        "ECS_ENABLE_SPOT_INSTANCE_DRAINING": "true",
        "ECS_CONTAINER_STOP_TIMEOUT": f"{CONTAINER_STOP_TIMEOUT_SECONDS}s",
        # awsvpc tasks get no route to IMDS: they cannot borrow the instance role.
        "ECS_AWSVPC_BLOCK_IMDS": "true",
        # Keep the multi-GB vLLM image between tasks on the same instance.
        "ECS_IMAGE_PULL_BEHAVIOR": "prefer-cached",
        "ECS_ENABLE_CONTAINER_METADATA": "true",
        # awslogs writes with the task's execution role (scoped to its log group), not the instance role.
        "ECS_ENABLE_AWSLOGS_EXECUTIONROLE_OVERRIDE": "true",
    }


def user_data(cluster_name: str) -> str:
    lines = "\n".join(f"{k}={v}" for k, v in ecs_agent_config(cluster_name).items())
    return f"#!/bin/bash\nset -euo pipefail\ncat >> /etc/ecs/ecs.config <<'EOF'\n{lines}\nEOF\n"


def _same_provider(a: Any, b: Any) -> bool:
    """Plain names compare by value; Outputs (names known only at deploy time) by identity."""
    if isinstance(a, str) and isinstance(b, str):
        return a == b
    return a is b


def default_capacity_provider_strategy(
    capacity_provider_names: list[Any], default_strategy: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """The cluster's default capacity provider strategy (pulumi input shape), checked against the ECS limits.

    None: the first capacity provider (weight 1, base 0), what a one-pool cluster gets from build_ecs_capacity;
    services that name their own strategy (EcsVllmTask does) are unaffected. []: no default strategy (ECS
    accepts an empty one; services must then name a capacity provider). Otherwise items
    {"capacity_provider": <one of the names>, "weight": 0-1000 (default 1), "base": 0-100000 (default 0)}.
    """
    names = list(capacity_provider_names)
    if not names:
        raise InputError("capacity_provider_names", "give at least one capacity provider name (SpotNodePool.capacity_provider_name)")
    plain = [n for n in names if isinstance(n, str)]
    if len(set(plain)) != len(plain):
        raise InputError("capacity_provider_names", f"duplicate capacity providers in {plain}")
    if default_strategy is None:
        return [{"capacity_provider": names[0], "weight": 1, "base": 0}]
    if len(default_strategy) > MAX_STRATEGY_PROVIDERS:
        raise InputError("default_strategy", f"{len(default_strategy)} items; a strategy holds at most {MAX_STRATEGY_PROVIDERS} capacity providers")
    out: list[dict[str, Any]] = []
    for item in default_strategy:
        unknown = set(item) - {"capacity_provider", "weight", "base"}
        if unknown or "capacity_provider" not in item:
            raise InputError("default_strategy", f"items are {{capacity_provider, weight, base}}, got keys {sorted(item)}")
        provider, weight, base = item["capacity_provider"], item.get("weight", 1), item.get("base", 0)
        if not any(_same_provider(provider, n) for n in names):
            raise InputError("default_strategy", f"{provider!r} is not among capacity_provider_names; a strategy can only use providers attached to the cluster")
        if any(_same_provider(provider, o["capacity_provider"]) for o in out):
            raise InputError("default_strategy", f"{provider!r} appears twice")
        if not 0 <= weight <= MAX_STRATEGY_WEIGHT:
            raise InputError("default_strategy", f"weight {weight}; must be 0-{MAX_STRATEGY_WEIGHT}")
        if not 0 <= base <= MAX_STRATEGY_BASE:
            raise InputError("default_strategy", f"base {base}; must be 0-{MAX_STRATEGY_BASE}")
        out.append({"capacity_provider": provider, "weight": weight, "base": base})
    if sum(1 for o in out if o["base"] > 0) > 1:
        raise InputError("default_strategy", "only one capacity provider in a strategy can have a base")
    if out and not any(o["weight"] > 0 for o in out):
        raise InputError("default_strategy", "at least one capacity provider needs a weight above 0, or no task can be placed")
    return out


# ----- resources ---------------------------------------------------------------------------------------


def attach_capacity_providers(
    parent: pulumi.Resource,
    name: str,
    cluster_name: Any,
    capacity_provider_names: list[Any],
    *,
    default_strategy: list[dict[str, Any]] | None = None,
) -> aws.ecs.ClusterCapacityProviders:
    """Associate ALL the capacity providers of a cluster with it, in ONE `aws.ecs.ClusterCapacityProviders`.

    ECS holds one capacity-provider list per cluster and PutClusterCapacityProviders replaces it whole, so two
    such resources on one cluster undo each other. A stack with several pools (SpotNodePools) on one cluster
    must build every pool with `attach_to_cluster=False` (build_ecs_capacity) and call this once, with each
    pool's `capacity_provider_name`; services using a pool must depend on the returned resource (ECS refuses a
    strategy naming a provider not yet associated): pass it to EcsVllmTaskArgs.capacity_provider_association.
    `parent` gives the provider (use the GpuCluster, so a regional provider is inherited). `default_strategy`:
    see default_capacity_provider_strategy. Named f"{name}-cluster-cps".
    """
    names = list(capacity_provider_names)
    strategy = default_capacity_provider_strategy(names, default_strategy)
    return aws.ecs.ClusterCapacityProviders(
        f"{name}-cluster-cps",
        cluster_name=cluster_name,
        capacity_providers=names,
        default_capacity_provider_strategies=strategy,
        opts=pulumi.ResourceOptions(parent=parent),
    )


def build_ecs_capacity(
    parent: pulumi.Resource,
    name: str,
    *,
    cluster_name: Any,
    network: Network,
    instance_types: list[str],
    min_size: int,
    max_size: int,
    on_demand_base: int,
    spot_percentage: int,
    root_volume_gib: int,
    environment: str,
    attach_to_cluster: bool = True,
    ami_version: str | None = None,
) -> EcsCapacityParts:
    """GPU capacity for an ECS cluster. `attach_to_cluster=False` leaves the ClusterCapacityProviders to the
    caller (ECS allows one such resource per cluster: a cluster with several pools must attach them together,
    with attach_capacity_providers)."""
    if environment not in ENVIRONMENTS:
        raise InputError("environment", f"{environment!r}; allowed: {', '.join(ENVIRONMENTS)}")
    validate_capacity_provider_name(name)
    types = validate_instance_types(instance_types)
    validate_sizes(min_size, max_size, on_demand_base, spot_percentage)
    validate_root_volume(root_volume_gib)
    ami_version = node_images.validate_ami_version(
        "ecs", ami_version or node_images.default_ami_version("ecs"), environment, "ami_version"
    )
    opts = pulumi.ResourceOptions(parent=parent)
    invoke_opts = pulumi.InvokeOutputOptions(parent=parent)
    partition = aws.get_partition_output(opts=invoke_opts).partition

    role = aws.iam.Role(
        f"{name}-instance-role",
        assume_role_policy=(
            '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},'
            '"Action":"sts:AssumeRole"}]}'
        ),
        tags={"Name": f"{name}-instance-role"},
        opts=opts,
    )
    for role_name, policy in (
        ("ecs", "service-role/AmazonEC2ContainerServiceforEC2Role"),
        ("ssm", "AmazonSSMManagedInstanceCore"),
    ):
        aws.iam.RolePolicyAttachment(
            f"{name}-instance-{role_name}",
            role=role.name,
            policy_arn=partition.apply(lambda p, policy=policy: f"arn:{p}:iam::aws:policy/{policy}"),
            opts=opts,
        )
    profile = aws.iam.InstanceProfile(f"{name}-instance-profile", role=role.name, opts=opts)

    sg = aws.ec2.SecurityGroup(
        f"{name}-instance-sg",
        description=f"{name} GPU instances: no inbound; HTTPS out to ECS, ECR, SSM and registries",
        vpc_id=network.vpc_id,
        ingress=[],
        egress=[{"protocol": "tcp", "from_port": 443, "to_port": 443, "cidr_blocks": ["0.0.0.0/0"], "description": "HTTPS"}],
        tags={"Name": f"{name}-instance-sg"},
        opts=opts,
    )

    if ami_version == node_images.LATEST:
        image_id = aws.ssm.get_parameter_output(name=ECS_GPU_AMI_PARAMETER, opts=invoke_opts).insecure_value
    else:
        image_id = aws.ec2.get_ami_output(
            owners=[node_images.ECS_AMI_OWNER],
            filters=[{"name": "name", "values": [node_images.ecs_ami_name(ami_version)]}],
            most_recent=True,
            opts=invoke_opts,
        ).id
    template = aws.ec2.LaunchTemplate(
        f"{name}-lt",
        image_id=image_id,
        instance_type=None,  # from the ASG's overrides
        iam_instance_profile={"arn": profile.arn},
        vpc_security_group_ids=[sg.id],
        metadata_options={
            "http_endpoint": "enabled",
            "http_tokens": "required",  # IMDSv2 only
            "http_put_response_hop_limit": IMDS_HOP_LIMIT,
            "instance_metadata_tags": "disabled",
        },
        block_device_mappings=[
            {
                "device_name": ROOT_DEVICE,
                "ebs": {
                    "volume_size": root_volume_gib,
                    "volume_type": "gp3",
                    "encrypted": "true",
                    "delete_on_termination": "true",
                },
            }
        ],
        monitoring={"enabled": True},
        user_data=pulumi.Output.from_input(cluster_name).apply(lambda c: base64.b64encode(user_data(c).encode()).decode()),
        update_default_version=True,
        tag_specifications=[
            {"resource_type": "instance", "tags": {"Name": f"{name}-gpu"}},
            {"resource_type": "volume", "tags": {"Name": f"{name}-gpu-root"}},
        ],
        tags={"Name": f"{name}-lt"},
        opts=opts,
    )

    asg = aws.autoscaling.Group(
        f"{name}-asg",
        vpc_zone_identifiers=list(network.private_subnet_ids),
        min_size=min_size,
        max_size=max_size,
        capacity_rebalance=True,  # replace spot instances on a rebalance recommendation, before the notice
        protect_from_scale_in=True,  # required by the capacity provider's managed termination protection
        # Scale-in protected instances block DeleteAutoScalingGroup; force delete terminates them on `pulumi destroy`
        # (the services using them are deleted first: they depend on the capacity provider).
        force_delete=True,
        health_check_type="EC2",
        default_instance_warmup=INSTANCE_WARMUP_SECONDS,
        mixed_instances_policy={
            "instances_distribution": instances_distribution(on_demand_base, spot_percentage),
            "launch_template": {
                "launch_template_specification": {
                    "launch_template_id": template.id,
                    "version": template.latest_version.apply(str),
                },
                "overrides": [{"instance_type": t.name} for t in types],
            },
        },
        tags=[
            # ECS requires this tag on an ASG used by a capacity provider with managed scaling.
            {"key": "AmazonECSManaged", "value": "true", "propagate_at_launch": True},
            {"key": "Name", "value": f"{name}-gpu", "propagate_at_launch": True},
        ],
        # ECS managed scaling owns desired capacity.
        opts=pulumi.ResourceOptions(parent=parent, ignore_changes=["desiredCapacity"]),
    )

    provider = aws.ecs.CapacityProvider(
        f"{name}-cp",
        auto_scaling_group_provider={
            "auto_scaling_group_arn": asg.arn,
            "managed_termination_protection": "ENABLED",  # never scale in an instance that still runs tasks
            "managed_draining": "ENABLED",  # drain tasks before the ASG terminates an instance
            "managed_scaling": {
                "status": "ENABLED",
                "target_capacity": 100,  # no idle GPU instances kept warm beyond what tasks need
                "minimum_scaling_step_size": 1,
                "maximum_scaling_step_size": max(1, min(max_size, 10)),
                "instance_warmup_period": INSTANCE_WARMUP_SECONDS,
            },
        },
        tags={"Name": f"{name}-cp"},
        opts=opts,
    )

    attachment = None
    if attach_to_cluster:
        attachment = attach_capacity_providers(parent, name, cluster_name, [provider.name])

    return EcsCapacityParts(
        launch_template=template,
        auto_scaling_group=asg,
        capacity_provider=provider,
        instance_role=role,
        security_group=sg,
        instance_profile=profile,
        cluster_capacity_providers=attachment,
        instance=types[0],
    )


__all__ = [
    "EcsCapacityParts",
    "attach_capacity_providers",
    "build_ecs_capacity",
    "default_capacity_provider_strategy",
    "ecs_agent_config",
    "instances_distribution",
    "user_data",
    "validate_instance_types",
    "validate_root_volume",
    "validate_sizes",
    "ECS_GPU_AMI_PARAMETER",
    "CONTAINER_STOP_TIMEOUT_SECONDS",
    "IMDS_HOP_LIMIT",
]
