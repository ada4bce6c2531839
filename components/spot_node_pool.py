"""SpotNodePool: GPU capacity of one GPU type, spot first with on-demand fallback.

EKS with Karpenter (default): a Karpenter `NodePool` (karpenter.sh/v1) + `EC2NodeClass` (karpenter.k8s.aws/v1).
The NodePool allows both capacity types; Karpenter launches spot when it can and on-demand when spot is
unavailable (karpenter.sh/docs/concepts/nodepools: "if both are allowed, spot is prioritized"). Nodes carry the
`nvidia.com/gpu` NoSchedule taint and the `vllm-fleet/gpu: <GPU>` label; the pool is capped in GPUs; empty
nodes are consolidated, never busy ones (moving a loaded model costs minutes of GPU time). The node class uses
the EKS-optimized AL2023 AMI alias of a pinned release, al2023@<ami_version> (Karpenter picks its NVIDIA variant
for GPU instance types; `latest` only outside prod), an encrypted
gp3 root volume sized from the model weights, IMDSv2 with hop limit 1, and finds subnets and security groups
by the cluster's `karpenter.sh/discovery` tag.

EKS without Karpenter: two `eks.ManagedNodeGroup`s on the AL2023 NVIDIA AMI, one SPOT and one ON_DEMAND
fallback (min 0). Something must scale them (e.g. cluster-autoscaler with a priority expander preferring spot).

ECS: a launch template + Auto Scaling group + capacity provider, built by `components.ecs_capacity`.
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

import pulumi
import pulumi_aws as aws
from pydantic import BaseModel, ConfigDict, Field

from . import eks_addons
from .sizing.engine import component_args
from .sizing.errors import InputError
from .sizing.gpus import Gpu
from .sizing.instances import InstanceType, get_instance
from .sizing import node_images
from .vllm import DEFAULT_IMAGE

# Root volume: image (~10 GiB compressed vllm-openai, ~30 GiB unpacked with its layers) + the weights twice
# (the Hub download and its safetensors cache can coexist during an upgrade) + headroom for logs, compile caches.
IMAGE_GIB = 30
HEADROOM_GIB = 20
VOLUME_STEP_GIB = 10
MIN_ROOT_VOLUME_GIB = 100
_K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# Karpenter's duration syntax (the NodePool CRD's pattern for consolidateAfter/expireAfter).
_DURATION = re.compile(r"^(([0-9]+(s|m|h))+|Never)$")


class SpotNodePoolArgs(BaseModel):
    """GPU nodes of one GPU type for vLLM services."""

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    cluster: Any = Field(description="The GpuCluster the nodes join (components.gpu_cluster.GpuCluster).")
    instance_types: list[str] = Field(
        description="GPU instance types from the catalog, all with the same GPU (e.g. ['g6e.xlarge', 'g6e.2xlarge'])."
    )
    platform: Literal["eks", "ecs"] | None = Field(None, description="eks or ecs; None = the cluster's platform.")
    karpenter: bool = Field(True, description="EKS: Karpenter NodePool (True) or managed node groups (False).")
    spot: bool = Field(True, description="Spot first with on-demand fallback (True) or on-demand only (False).")
    max_nodes: int = Field(4, ge=1, le=1000, description="Most nodes the pool may run; caps Karpenter's nvidia.com/gpu limit.")
    min_nodes: int = Field(0, ge=0, description="Managed node groups / ECS: nodes kept running (0 scales to zero).")
    model_weights_gib: float = Field(
        0.0,
        ge=0,
        description="Largest model's download: its checkpoint on disk (VllmEngine.download_gib(), not the in-GPU size "
        "after --quantization); sizes the root volume.",
    )
    root_volume_gib: int | None = Field(None, description="Root volume size; None = sized from model_weights_gib.")
    ami_version: str | None = Field(
        None,
        description="AMI release of the GPU nodes: EKS `v20260818` (Karpenter alias al2023@v20260818), ECS `20261113` "
        "(the ECS GPU-optimized AMI of that release). None = the release pinned in components/sizing/data/node_images.json; "
        "'latest' (dev only) follows every AMI release, which replaces every GPU node.",
    )
    images: list[str] = Field(
        [DEFAULT_IMAGE],
        description="Container images the pool's nodes run; each must be able to use the AMI's NVIDIA driver (checked).",
    )
    consolidate_after: str = Field("10m", description="Karpenter: how long a node stays empty before it is removed.")
    expire_after: str = Field("720h", description="Karpenter: node lifetime before replacement (patching); 'Never' to keep.")
    disruption_budget_nodes: str = Field("1", description="Karpenter: nodes (count or %) voluntarily disrupted at once.")
    instance_store_raid0: bool = Field(
        True, description="Karpenter: put ephemeral storage (model cache) on the instance-store NVMe when every type has it."
    )
    on_demand_base: int = Field(0, ge=0, description="ECS: on-demand instances before spot is used.")
    region: str | None = Field(None, description="Region the nodes run in, for pricing (props only); None = the aws:region config.")
    spot_fraction: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Expected share of nodes on spot, for pricing (props only). None: ECS derives it from spot_percentage; "
        "on EKS Karpenter decides at run time, so the budget prices the pool on-demand (the safe side).",
    )
    attach_to_cluster: bool = Field(
        True,
        description="ECS: associate the capacity provider with the cluster here. Set False when a cluster has several "
        "pools and attach them together with components.ecs_capacity.attach_capacity_providers (ECS keeps one list per cluster).",
    )
    spot_percentage: int = Field(100, ge=0, le=100, description="ECS: share of capacity above the base that is spot.")
    tags: dict[str, str] = Field({}, description="Tags added to the instances and volumes.")


# ----- pure rules ----------------------------------------------------------------------------------------


def root_volume_gib(weights_gib: float, *, image_gib: int = IMAGE_GIB, headroom_gib: int = HEADROOM_GIB) -> int:
    """Root volume for a node that downloads `weights_gib` of weights: 2 x weights + image + headroom, rounded up."""
    need = 2 * weights_gib + image_gib + headroom_gib
    return max(MIN_ROOT_VOLUME_GIB, int(math.ceil(need / VOLUME_STEP_GIB)) * VOLUME_STEP_GIB)


def disk_holds_download(volume_gib: int, download_gib: float, *, image_gib: int = IMAGE_GIB) -> bool:
    """The least a node disk must hold for a cold start: the whole checkpoint download plus the image."""
    return volume_gib >= download_gib + image_gib


def resolve_instance_types(names: list[str]) -> list[InstanceType]:
    """Catalog instance types, all with the same GPU (a pool serves one GPU type: fit and labels depend on it)."""
    if not names:
        raise InputError("instance_types", "give at least one GPU instance type, e.g. ['g6e.xlarge']")
    if len(set(names)) != len(names):
        raise InputError("instance_types", f"duplicate instance types in {names}")
    found = [get_instance(n, field="instance_types") for n in names]
    gpus = sorted({i.gpu_name for i in found})
    if len(gpus) > 1:
        by_gpu = "; ".join(f"{g}: {', '.join(i.name for i in found if i.gpu_name == g)}" for g in gpus)
        raise InputError(
            "instance_types",
            f"all instance types must have the same GPU, got {by_gpu}; use one SpotNodePool per GPU type",
        )
    return found


def smallest(instances: list[InstanceType]) -> InstanceType:
    """The instance a pod must fit on: fewest GPUs, then fewest vCPUs and least memory."""
    return min(instances, key=lambda i: (i.gpu_count, i.vcpus, i.memory_gib, i.name))


def k8s_name(name: str, field: str = "name") -> str:
    candidate = name.lower().replace("_", "-")
    if len(candidate) > 63 or not _K8S_NAME.match(candidate):
        raise InputError(field, f"{name!r} must be a DNS label (lower-case letters, digits, '-', <= 63 characters)")
    return candidate


def validate_duration(value: str, field: str) -> str:
    if not _DURATION.match(value):
        raise InputError(field, f"{value!r} is not a duration like 30s, 10m, 720h or Never")
    return value


def gpu_node_labels(gpu: Gpu, pool: str) -> dict[str, str]:
    return {eks_addons.GPU_LABEL: gpu.name, eks_addons.NODE_POOL_LABEL: pool}


def capacity_types(spot: bool) -> list[str]:
    return ["spot", "on-demand"] if spot else ["on-demand"]


def node_pool_spec(
    *,
    pool: str,
    node_class: str,
    instances: list[InstanceType],
    spot: bool,
    max_nodes: int,
    consolidate_after: str,
    expire_after: str,
    budget_nodes: str,
) -> dict[str, Any]:
    """The Karpenter NodePool spec (karpenter.sh/v1) for one GPU type."""
    gpu = instances[0].gpu
    return {
        "template": {
            "metadata": {"labels": gpu_node_labels(gpu, pool)},
            "spec": {
                "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": node_class},
                "requirements": [
                    {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": [i.name for i in instances]},
                    {"key": "karpenter.sh/capacity-type", "operator": "In", "values": capacity_types(spot)},
                    {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]},
                    {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
                ],
                # Only pods that ask for GPUs (and tolerate this) land here; everything else stays on system nodes.
                "taints": [{"key": eks_addons.GPU_TAINT_KEY, "value": "true", "effect": "NoSchedule"}],
                "expireAfter": expire_after,
            },
        },
        "limits": {"nvidia.com/gpu": max_nodes * max(i.gpu_count for i in instances)},
        "disruption": {
            # A GPU node running a model is never consolidated away: reloading weights elsewhere costs minutes.
            "consolidationPolicy": "WhenEmpty",
            "consolidateAfter": consolidate_after,
            "budgets": [{"nodes": budget_nodes}],
        },
    }


def node_class_spec(
    *,
    role: Any,
    ami_alias: str,
    subnet_terms: list[dict[str, Any]],
    security_group_terms: list[dict[str, Any]],
    volume_gib: int,
    instance_store_raid0: bool,
    tags: dict[str, str],
) -> dict[str, Any]:
    """The Karpenter EC2NodeClass spec (karpenter.k8s.aws/v1)."""
    spec: dict[str, Any] = {
        # With an alias Karpenter resolves the EKS-optimized AMI per instance type, the NVIDIA variant for GPU types
        # (karpenter.sh/docs/concepts/nodeclasses, spec.amiSelectorTerms).
        "amiSelectorTerms": [{"alias": ami_alias}],
        "role": role,
        "subnetSelectorTerms": subnet_terms,
        "securityGroupSelectorTerms": security_group_terms,
        "metadataOptions": {
            "httpEndpoint": "enabled",
            "httpProtocolIPv6": "disabled",
            "httpPutResponseHopLimit": 1,  # pods cannot reach the node role's credentials
            "httpTokens": "required",  # IMDSv2 only
        },
        "blockDeviceMappings": [
            {
                "deviceName": "/dev/xvda",
                "rootVolume": True,
                "ebs": {
                    "volumeSize": f"{volume_gib}Gi",
                    "volumeType": "gp3",
                    "encrypted": True,
                    "deleteOnTermination": True,
                    "iops": eks_addons.ROOT_VOLUME_IOPS,
                    "throughput": eks_addons.ROOT_VOLUME_THROUGHPUT_MBS,
                },
            }
        ],
        "tags": tags,
    }
    if instance_store_raid0:
        # Local NVMe as one RAID0 volume for kubelet and containerd: the model cache emptyDir lands there.
        spec["instanceStorePolicy"] = "RAID0"
    return spec


# ----- the component -------------------------------------------------------------------------------------


def pool_spot_fraction(args: SpotNodePoolArgs, platform: str) -> float:
    """The pool's share of spot capacity for pricing: stated, else what ECS's mixed-instances policy buys
    (spot_percentage above the on-demand base), else 0 (on-demand: the budget errs on the safe side)."""
    if args.spot_fraction is not None:
        return args.spot_fraction if args.spot else 0.0
    if platform == "ecs" and args.spot:
        return args.spot_percentage / 100
    return 0.0


class SpotNodePool(pulumi.ComponentResource):
    """GPU nodes of one GPU type: Karpenter NodePool, managed node groups or an ECS capacity provider."""

    def __init__(self, name: str, args: SpotNodePoolArgs | dict, opts: pulumi.ResourceOptions | None = None):
        args = component_args(SpotNodePoolArgs, args)
        cluster = args.cluster
        platform = args.platform or getattr(cluster, "platform", None)
        if platform not in ("eks", "ecs"):
            raise InputError("cluster", "pass a GpuCluster (its platform decides eks or ecs)")
        if getattr(cluster, "platform", platform) != platform:
            raise InputError("platform", f"the pool is {platform} but the cluster is {cluster.platform}")
        instances = resolve_instance_types(args.instance_types)
        needed = root_volume_gib(args.model_weights_gib)
        volume = args.root_volume_gib if args.root_volume_gib is not None else needed
        if volume < needed:
            raise InputError(
                "root_volume_gib",
                f"{volume} GiB cannot hold {args.model_weights_gib:.1f} GiB of weights twice plus the image; use >= {needed}",
            )
        pool = k8s_name(name)
        use_karpenter = platform == "eks" and args.karpenter
        if use_karpenter and getattr(cluster, "karpenter", None) is None:
            raise InputError("karpenter", "the cluster was built with karpenter=False; set karpenter=False here too (managed node groups)")
        for field in ("consolidate_after", "expire_after"):
            validate_duration(getattr(args, field), field)
        if args.min_nodes > args.max_nodes:
            raise InputError("min_nodes", f"{args.min_nodes} is above max_nodes {args.max_nodes}")
        store_raid0 = args.instance_store_raid0 and all(i.local_nvme_gb > 0 for i in instances)
        environment = getattr(cluster, "environment", "dev")
        ami_version = node_images.validate_ami_version(
            platform, args.ami_version or node_images.default_ami_version(platform), environment, "ami_version"
        )
        for image in args.images:
            mismatch = node_images.image_ami_mismatch(image, platform, ami_version)
            if mismatch:
                raise InputError("ami_version", mismatch)

        smallest_instance = smallest(instances)
        gpu = smallest_instance.gpu
        props = {
            "platform": platform,
            "gpu": gpu.name,
            "gpu_memory_gib": gpu.memory_gib,
            "gpus_per_node": smallest_instance.gpu_count,
            "instance_types": [i.name for i in instances],
            "instance_type": smallest_instance.name,
            "capacity_types": capacity_types(args.spot),
            "provisioner": "karpenter" if use_karpenter else ("managed-node-groups" if platform == "eks" else "ecs-asg"),
            "max_nodes": args.max_nodes,
            "min_nodes": args.min_nodes,
            "root_volume_gib": volume,
            "instance_store_raid0": store_raid0,
            "root_volume_encrypted": True,
            "imds_http_tokens": "required",
            "region": args.region or pulumi.Config("aws").get("region"),
            "spot_fraction": pool_spot_fraction(args, platform),
            "ami_version": ami_version,
            "nvidia_driver_branch": node_images.ami_driver_branch(platform, ami_version),
            "images": list(args.images),
        }
        super().__init__("vllm-fleet:index:SpotNodePool", name, props, opts)
        # Set after super().__init__: the component turns each props key into an Output attribute.
        self.platform = platform
        self.instances = instances
        self.instance_types = [i.name for i in instances]
        self.instance = smallest_instance
        self.gpu = self.instance.gpu
        self.gpus_per_node = self.instance.gpu_count
        self.root_volume_gib = volume
        self.instance_store_raid0 = store_raid0  # emptyDir caches land on the local NVMe, not the root volume
        self.pool_name = pool
        self.ami_version = ami_version
        self.capacity_provider_name = None
        self.node_selector: dict[str, str] = {eks_addons.GPU_LABEL: self.gpu.name} if platform == "eks" else {}
        self.tolerations: list[dict[str, str]] = list(eks_addons.GPU_TOLERATIONS) if platform == "eks" else []

        tags = {"vllm-fleet/node-pool": pool, **args.tags}
        outputs: dict[str, Any] = {"instance_types": self.instance_types, "gpu": self.gpu.name}
        if platform == "ecs":
            self._build_ecs(name, args, volume)
            outputs["capacity_provider_name"] = self.capacity_provider_name
        elif use_karpenter:
            self._build_karpenter(name, args, pool, volume, store_raid0, tags)
        else:
            self._build_managed_node_groups(name, args, pool, volume, tags)
        outputs["node_selector"] = self.node_selector
        # Stack policies under the Pulumi CLI see a component's registered outputs: register the props too.
        self.register_outputs({**props, **outputs})

    # ----- EKS: Karpenter ----------------------------------------------------------------------------
    def _build_karpenter(self, name: str, args: SpotNodePoolArgs, pool: str, volume: int, store_raid0: bool, tags: dict) -> None:
        import pulumi_kubernetes as k8s

        cluster = args.cluster
        discovery = [{"tags": {"karpenter.sh/discovery": cluster.physical_name}}]
        # A VPC we created carries the discovery tag on its private subnets; an existing one is selected by id.
        if cluster.network.created:
            subnet_terms: Any = discovery
        else:
            subnet_terms = pulumi.Output.all(*cluster.network.private_subnet_ids).apply(lambda ids: [{"id": i} for i in ids])
        opts = pulumi.ResourceOptions(
            parent=self, provider=cluster.k8s_provider, depends_on=[cluster.addons["karpenter"]]
        )
        node_class = k8s.apiextensions.CustomResource(
            f"{name}-node-class",
            api_version="karpenter.k8s.aws/v1",
            kind="EC2NodeClass",
            metadata={"name": pool, "labels": {eks_addons.NODE_POOL_LABEL: pool}},
            spec=node_class_spec(
                role=cluster.karpenter.node_role.name,
                ami_alias=node_images.karpenter_alias(self.ami_version),
                subnet_terms=subnet_terms,
                security_group_terms=discovery,
                volume_gib=volume,
                instance_store_raid0=store_raid0,
                tags=tags,
            ),
            opts=opts,
        )
        self.node_class = node_class
        self.node_pool = k8s.apiextensions.CustomResource(
            f"{name}-node-pool",
            api_version="karpenter.sh/v1",
            kind="NodePool",
            metadata={"name": pool, "labels": {eks_addons.NODE_POOL_LABEL: pool}},
            spec=node_pool_spec(
                pool=pool,
                node_class=pool,
                instances=self.instances,
                spot=args.spot,
                max_nodes=args.max_nodes,
                consolidate_after=args.consolidate_after,
                expire_after=args.expire_after,
                budget_nodes=args.disruption_budget_nodes,
            ),
            opts=pulumi.ResourceOptions(
                parent=self, provider=cluster.k8s_provider, depends_on=[cluster.addons["karpenter"], node_class]
            ),
        )

    # ----- EKS: managed node groups ------------------------------------------------------------------
    def _build_managed_node_groups(self, name: str, args: SpotNodePoolArgs, pool: str, volume: int, tags: dict) -> None:
        import pulumi_eks as eks

        cluster = args.cluster
        template = eks_addons.node_launch_template(name, "gpu", volume, self, tags)
        labels = gpu_node_labels(self.gpu, pool)
        taint = aws.eks.NodeGroupTaintArgs(key=eks_addons.GPU_TAINT_KEY, value="true", effect="NO_SCHEDULE")
        groups = [("spot", "SPOT", args.min_nodes)] if args.spot else []
        groups.append(("on-demand", "ON_DEMAND", 0 if args.spot else args.min_nodes))
        self.node_groups = {}
        for role, capacity, minimum in groups:
            self.node_groups[role] = eks.ManagedNodeGroup(
                f"{name}-{role}",
                cluster=cluster.eks_cluster,
                node_role=cluster.node_role,
                instance_types=self.instance_types,
                capacity_type=capacity,
                ami_type="AL2023_x86_64_NVIDIA",
                launch_template=aws.eks.NodeGroupLaunchTemplateArgs(id=template.id, version=template.latest_version.apply(str)),
                scaling_config=aws.eks.NodeGroupScalingConfigArgs(min_size=minimum, desired_size=minimum, max_size=args.max_nodes),
                ignore_scaling_changes=True,  # the autoscaler owns desired size after creation
                subnet_ids=cluster.network.private_subnet_ids,
                labels={**labels, "vllm-fleet/capacity": role},
                taints=[taint],
                tags=tags,
                opts=pulumi.ResourceOptions(parent=self),
            )

    # ----- ECS ---------------------------------------------------------------------------------------
    def _build_ecs(self, name: str, args: SpotNodePoolArgs, volume: int) -> None:
        from .ecs_capacity import build_ecs_capacity

        cluster = args.cluster
        parts = build_ecs_capacity(
            self,
            name,
            cluster_name=cluster.cluster_name,
            network=cluster.network,
            instance_types=self.instance_types,
            min_size=args.min_nodes,
            max_size=args.max_nodes,
            on_demand_base=args.on_demand_base,
            spot_percentage=args.spot_percentage if args.spot else 0,
            root_volume_gib=volume,
            environment=cluster.environment,
            attach_to_cluster=args.attach_to_cluster,
            ami_version=self.ami_version,
        )
        self.ecs = parts
        self.capacity_provider_name = parts.capacity_provider.name


__all__ = [
    "SpotNodePool",
    "SpotNodePoolArgs",
    "capacity_types",
    "gpu_node_labels",
    "node_class_spec",
    "node_pool_spec",
    "resolve_instance_types",
    "root_volume_gib",
    "smallest",
]
