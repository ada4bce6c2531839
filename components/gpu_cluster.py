"""GpuCluster: the network and the cluster GPU workloads run on, on EKS or on ECS.

EKS (`platform="eks"`): a `pulumi_eks.Cluster` with access-entry (API) authentication, an OIDC provider,
control-plane logs (api, audit, authenticator) kept `log_retention_days`, secrets envelope-encrypted with a
KMS key created here (rotation on), a private API endpoint (public access off in prod unless asked), no default
node group; a small on-demand system node group for the controllers; the EKS Pod Identity agent; and the GPU
add-ons as pinned Helm releases: NVIDIA device plugin, KEDA, Karpenter (with its interruption queue and
EventBridge rules, see components/eks_addons.py), LeaderWorkerSet, the AWS Load Balancer Controller (its IAM
role through EKS Pod Identity: it binds vLLM pods to RegionalEndpointLB's NLB target groups), kube-prometheus-stack
(the Prometheus Operator's CRDs and the Prometheus KEDA queries; `prometheus_url` brings your own instead) and,
optionally, the DCGM exporter.

ECS (`platform="ecs"`): the ECS cluster and its load balancer, built by `components.ecs_cluster.build_ecs_cluster`.

Both start from `components.network.build_network` (a new VPC over >= 2 AZs, 3 in prod, or an existing VPC).
"""

from __future__ import annotations

import re
from typing import Any, Literal

import pulumi
import pulumi_aws as aws
from pydantic import BaseModel, ConfigDict, Field

from . import eks_addons
from .network import Network, NetworkArgs, build_network, validate_log_retention
from .sizing.cost import DEFAULT_SYSTEM_NODE_TYPE
from .sizing.engine import component_args
from .sizing.errors import InputError

# EKS cluster names: 1-100 characters, letters, digits, hyphens and underscores, starting alphanumeric
# (docs.aws.amazon.com/eks/latest/APIReference/API_CreateCluster.html). Karpenter names its SQS queue after
# the cluster, and SQS allows 80 characters: the tighter limit wins.
_CLUSTER_NAME = re.compile(r"^[0-9A-Za-z][A-Za-z0-9_-]{0,79}$")
CONTROL_PLANE_LOGS = ["api", "audit", "authenticator"]
ADMIN_POLICY = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"
PROD_MIN_AZS = 3


class GpuClusterArgs(BaseModel):
    """The cluster GPU node pools and vLLM services attach to."""

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    platform: Literal["eks", "ecs"] = Field("eks", description="eks (Kubernetes) or ecs (ECS on EC2 GPU instances).")
    environment: Literal["dev", "prod"] = Field(
        "prod", description="prod: 3 AZs, private API endpoint, deletion protection. dev relaxes them for cost."
    )
    network: NetworkArgs | None = Field(
        None, description="The VPC (new or existing). None = a new VPC over 3 AZs in prod, 2 in dev."
    )
    cluster_name: str | None = Field(
        None, description="Physical cluster name (also the Karpenter discovery tag and queue name); None = the component name."
    )
    kubernetes_version: str = Field("1.34", description="EKS Kubernetes version (major.minor).")
    endpoint_public_access: bool | None = Field(
        None, description="Expose the API endpoint publicly (still IAM-authenticated). None = off in prod, on in dev."
    )
    public_access_cidrs: list[str] = Field(
        ["0.0.0.0/0"], description="CIDRs allowed to the public endpoint, when it is on. Narrow it to your CI/VPN egress."
    )
    admin_principal_arns: list[Any] = Field(
        [], description="IAM roles/users given cluster-admin through access entries (pulumi.Input[str] each)."
    )
    system_instance_type: str = Field(DEFAULT_SYSTEM_NODE_TYPE, description="Instance type of the on-demand system node group.")
    system_nodes: int = Field(2, ge=1, le=10, description="System nodes (controllers: Karpenter, KEDA, CoreDNS). >= 2 in prod.")
    karpenter: bool = Field(True, description="Install Karpenter (GPU nodes on demand, spot with on-demand fallback).")
    keda: bool = Field(True, description="Install KEDA (autoscaling on vLLM's queue length).")
    leader_worker_set: bool = Field(True, description="Install LeaderWorkerSet (models spanning nodes with pipeline parallelism).")
    aws_load_balancer_controller: bool = Field(
        True,
        description="Install the AWS Load Balancer Controller (registers vLLM pods in RegionalEndpointLB's NLB target "
        "groups through TargetGroupBindings; without it nothing outside the cluster reaches the models).",
    )
    dcgm_exporter: bool = Field(False, description="Install NVIDIA's DCGM exporter (GPU metrics; needs the Prometheus operator).")
    prometheus_url: str | None = Field(
        None,
        description="Bring your own Prometheus: its in-cluster URL (KEDA queries it). None = install the pinned "
        "kube-prometheus-stack chart (Prometheus Operator, its CRDs and one Prometheus selecting every ServiceMonitor).",
    )
    prometheus_operator_crds_installed: bool = Field(
        False,
        description="With prometheus_url: confirm the Prometheus Operator's CRDs (monitoring.coreos.com) are already in the "
        "cluster. Preview reports them as a prerequisite the stack does not install.",
    )
    chart_versions: dict[str, str] = Field({}, description="Override a pinned chart version, e.g. {'karpenter': '1.14.2'}.")
    log_retention_days: int = Field(90, description="Days the control-plane logs are kept (a CloudWatch Logs retention value).")
    ecs: Any = Field(None, description="ECS only: components.ecs_cluster.EcsClusterOptions (or its fields as a dict).")
    tags: dict[str, str] = Field({}, description="Tags added to the AWS resources that take them.")


# ----- pure rules ----------------------------------------------------------------------------------------


def validate_cluster_name(name: str) -> str:
    if not _CLUSTER_NAME.match(name):
        raise InputError(
            "cluster_name",
            f"{name!r} is not a valid cluster name: 1-80 letters, digits, '-' or '_', starting with a letter or digit",
        )
    return name


def default_network(environment: str) -> NetworkArgs:
    """A new VPC: 3 AZs in prod (a zone outage leaves two thirds of the capacity), 2 in dev (cheaper)."""
    return NetworkArgs(availability_zones=PROD_MIN_AZS if environment == "prod" else 2, single_nat_gateway=environment == "dev")


def validate_network(network: NetworkArgs, environment: str) -> NetworkArgs:
    new_vpc = network.vpc_id is None and network.private_subnet_ids is None
    if environment == "prod" and new_vpc and network.availability_zones < PROD_MIN_AZS:
        raise InputError(
            "availability_zones",
            f"{network.availability_zones} AZs in prod; prod needs >= {PROD_MIN_AZS} so one AZ outage keeps most capacity",
        )
    return network


def public_endpoint(args: GpuClusterArgs) -> bool:
    """Public API endpoint: explicit choice, else off in prod (reach it from the VPC or a VPN) and on in dev."""
    if args.endpoint_public_access is not None:
        return args.endpoint_public_access
    return args.environment == "dev"


def validate_prometheus(args: GpuClusterArgs) -> None:
    """Bring-your-own Prometheus needs its address and the operator CRDs confirmed; installing it needs neither."""
    if args.prometheus_url is None and args.prometheus_operator_crds_installed:
        raise InputError(
            "prometheus_operator_crds_installed", "applies only with prometheus_url (your own Prometheus); drop it or give the URL"
        )
    if args.prometheus_url is not None and not args.prometheus_operator_crds_installed:
        raise InputError(
            "prometheus_operator_crds_installed",
            "with your own prometheus_url, confirm the Prometheus Operator CRDs (monitoring.coreos.com) exist in the cluster "
            "(True), or drop prometheus_url to install kube-prometheus-stack",
        )
    if args.prometheus_url is not None and not args.prometheus_url.startswith(("http://", "https://")):
        raise InputError("prometheus_url", f"{args.prometheus_url!r} is not an http(s) URL, e.g. http://prometheus.monitoring:9090")


def crd_prerequisites(args: GpuClusterArgs) -> list[str]:
    """API groups whose CRDs the user declares installed outside the stack (the crd-installers policy accepts them)."""
    return ["monitoring.coreos.com"] if args.platform == "eks" and args.prometheus_url is not None else []


def validate_chart_versions(versions: dict[str, str]) -> dict[str, str]:
    unknown = sorted(set(versions) - set(eks_addons.CHARTS))
    if unknown:
        raise InputError("chart_versions", f"unknown chart(s) {unknown}; known: {', '.join(sorted(eks_addons.CHARTS))}")
    return versions


# ----- the component -------------------------------------------------------------------------------------


class GpuCluster(pulumi.ComponentResource):
    """A network and an EKS or ECS cluster ready for GPU node pools and vLLM services."""

    platform: str
    environment: str
    network: Network
    ecs: Any
    eks_cluster: Any
    k8s_provider: Any
    oidc_provider_arn: Any
    oidc_provider_url: Any
    cluster_name: pulumi.Output[str]

    def __init__(self, name: str, args: GpuClusterArgs | dict | None = None, opts: pulumi.ResourceOptions | None = None):
        args = component_args(GpuClusterArgs, {} if args is None else args)
        network_args = validate_network(args.network or default_network(args.environment), args.environment)
        validate_chart_versions(args.chart_versions)
        validate_prometheus(args)
        validate_log_retention(args.log_retention_days, "log_retention_days")
        physical_name = validate_cluster_name(args.cluster_name or name)
        if args.platform == "eks" and args.environment == "prod" and args.system_nodes < 2:
            raise InputError("system_nodes", f"{args.system_nodes} system node in prod; prod needs >= 2 so controllers survive a node loss")

        props = {
            "platform": args.platform,
            "environment": args.environment,
            "cluster_name": physical_name,
            "kubernetes_version": args.kubernetes_version if args.platform == "eks" else None,
            "availability_zones": network_args.availability_zones
            if network_args.private_subnet_ids is None
            else len(network_args.private_subnet_ids),
            "endpoint_public_access": public_endpoint(args) if args.platform == "eks" else None,
            "karpenter": args.karpenter and args.platform == "eks",
            "keda": args.keda and args.platform == "eks",
            "leader_worker_set": args.leader_worker_set and args.platform == "eks",
            "aws_load_balancer_controller": args.aws_load_balancer_controller and args.platform == "eks",
            "dcgm_exporter": args.dcgm_exporter and args.platform == "eks",
            "prometheus_stack": args.platform == "eks" and args.prometheus_url is None,
            "crd_prerequisites": crd_prerequisites(args),
        }
        super().__init__("vllm-fleet:index:GpuCluster", name, props, opts)
        self.platform = args.platform
        self.environment = args.environment
        self.physical_name = physical_name
        self.args = args
        self.ecs = None
        self.eks_cluster = None
        self.k8s_provider = None
        self.oidc_provider_arn = None
        self.oidc_provider_url = None
        self.node_role = None
        self.karpenter = None
        self.lb_controller = None
        self.addons: dict[str, Any] = {}
        # Where KEDA's Prometheus triggers query: the installed release's Service, or the user's own.
        self.prometheus_url = args.prometheus_url or eks_addons.prometheus_service_url()
        self.crd_prerequisites = crd_prerequisites(args)

        eks = args.platform == "eks"
        self.network = build_network(name, network_args, self, cluster_name=physical_name if eks else None)
        if eks:
            self._build_eks(name, args)
        else:
            self._build_ecs(name, args)

        outputs = {"cluster_name": self.cluster_name, "private_subnet_ids": self.network.private_subnet_ids}
        if eks:
            outputs.update(
                kubeconfig=self.kubeconfig,
                oidc_provider_arn=self.oidc_provider_arn,
                oidc_provider_url=self.oidc_provider_url,
            )
        self.register_outputs(outputs)

    @property
    def subnet_ids(self) -> list[Any]:
        return self.network.private_subnet_ids

    # ----- ECS ---------------------------------------------------------------------------------------
    def _build_ecs(self, name: str, args: GpuClusterArgs) -> None:
        from .ecs_cluster import EcsClusterOptions, build_ecs_cluster

        options = component_args(EcsClusterOptions, {} if args.ecs is None else args.ecs)
        self.ecs = build_ecs_cluster(self, name, options, self.network, args.environment)
        self.cluster_name = self.ecs.cluster.name

    # ----- EKS ---------------------------------------------------------------------------------------
    def _build_eks(self, name: str, args: GpuClusterArgs) -> None:
        import pulumi_eks as eks
        import pulumi_kubernetes as k8s

        opts = pulumi.ResourceOptions(parent=self)
        cluster_name = self.physical_name
        tags = {"vllm-fleet/cluster": cluster_name, **args.tags}
        prod = args.environment == "prod"

        key = aws.kms.Key(
            f"{name}-secrets-key",
            description=f"EKS secrets envelope encryption for {cluster_name}",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            tags={"Name": f"{name}-secrets-key", **tags},
            opts=opts,
        )
        aws.kms.Alias(f"{name}-secrets-key-alias", name=f"alias/{cluster_name}-eks-secrets", target_key_id=key.key_id, opts=opts)
        # EKS writes control-plane logs here; created first so they get a retention instead of "never expire".
        log_group = aws.cloudwatch.LogGroup(
            f"{name}-control-plane-logs",
            name=f"/aws/eks/{cluster_name}/cluster",
            retention_in_days=args.log_retention_days,
            tags=tags,
            opts=opts,
        )

        public = public_endpoint(args)
        access_entries = {
            f"admin-{i}": eks.AccessEntryArgs(
                principal_arn=arn,
                access_policies={
                    "cluster-admin": eks.AccessPolicyAssociationArgs(
                        policy_arn=ADMIN_POLICY, access_scope=aws.eks.AccessPolicyAssociationAccessScopeArgs(type="cluster")
                    )
                },
            )
            for i, arn in enumerate(args.admin_principal_arns)
        }
        cluster = eks.Cluster(
            f"{name}-eks",
            name=cluster_name,
            version=args.kubernetes_version,
            vpc_id=self.network.vpc_id,
            private_subnet_ids=self.network.private_subnet_ids,
            public_subnet_ids=self.network.public_subnet_ids or None,
            node_associate_public_ip_address=False,
            authentication_mode=eks.AuthenticationMode.API,
            access_entries=access_entries or None,
            create_oidc_provider=True,
            enabled_cluster_log_types=CONTROL_PLANE_LOGS,
            encryption_config_key_arn=key.arn,
            endpoint_private_access=True,
            endpoint_public_access=public,
            public_access_cidrs=args.public_access_cidrs if public else None,
            skip_default_node_group=True,
            deletion_protection=prod,
            # One security group for the control plane and every node: the one EKS creates. Managed node groups
            # use it, and so do Karpenter's nodes (tagged below), so system and GPU nodes reach each other.
            skip_default_security_groups=True,
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[log_group]),
        )
        self.eks_cluster = cluster
        # Consumers of the name wait for the cluster to exist.
        self.cluster_name = cluster.kubeconfig_json.apply(lambda _: cluster_name)
        self.kubeconfig = pulumi.Output.secret(cluster.kubeconfig_json)
        self.oidc_provider_arn = cluster.oidc_provider_arn
        self.oidc_provider_url = cluster.oidc_provider_url

        # EKS Pod Identity: the agent that hands pods their IAM role (Karpenter's controller uses it).
        pod_identity_agent = aws.eks.Addon(
            f"{name}-pod-identity-agent",
            cluster_name=cluster_name,
            addon_name="eks-pod-identity-agent",
            resolve_conflicts_on_create="OVERWRITE",
            opts=pulumi.ResourceOptions(parent=self, depends_on=[cluster]),
        )

        self.node_role = eks_addons.node_role(name, self, "node")
        system_lt = eks_addons.node_launch_template(name, "system", 50, self, tags)
        system = eks.ManagedNodeGroup(
            f"{name}-system",
            cluster=cluster,
            node_role=self.node_role,
            instance_types=[args.system_instance_type],
            capacity_type="ON_DEMAND",  # controllers must not disappear with a spot reclaim
            ami_type="AL2023_x86_64_STANDARD",
            launch_template=aws.eks.NodeGroupLaunchTemplateArgs(id=system_lt.id, version=system_lt.latest_version.apply(str)),
            scaling_config=aws.eks.NodeGroupScalingConfigArgs(
                min_size=args.system_nodes, desired_size=args.system_nodes, max_size=args.system_nodes + 2
            ),
            subnet_ids=self.network.private_subnet_ids,
            labels=dict(eks_addons.SYSTEM_NODE_SELECTOR),
            tags=tags,
            opts=opts,
        )
        self.system_node_group = system

        provider = k8s.Provider(f"{name}-k8s", kubeconfig=cluster.kubeconfig_json, enable_server_side_apply=True, opts=opts)
        self.k8s_provider = provider
        versions = args.chart_versions

        def release(key: str, values: dict, depends: list | None = None):
            self.addons[key] = eks_addons.helm_release(
                name, key, values, provider=provider, parent=self, depends_on=[system, *(depends or [])], version=versions.get(key)
            )

        release("nvidia-device-plugin", eks_addons.device_plugin_values())
        if args.keda:
            release("keda", eks_addons.keda_values())
        if args.karpenter:
            # Karpenter finds the security group for its nodes by this tag (EC2NodeClass securityGroupSelectorTerms).
            aws.ec2.Tag(
                f"{name}-cluster-sg-discovery",
                resource_id=cluster.cluster_security_group_id,
                key="karpenter.sh/discovery",
                value=cluster_name,
                opts=opts,
            )
            self.karpenter = eks_addons.karpenter_aws(name, cluster_name, self, cluster)
            release(
                "karpenter",
                eks_addons.karpenter_values(cluster_name, self.karpenter.queue.name),
                [self.karpenter.pod_identity, self.karpenter.access_entry, pod_identity_agent],
            )
        if args.leader_worker_set:
            release("lws", eks_addons.lws_values())
        if args.aws_load_balancer_controller:
            self.lb_controller = eks_addons.load_balancer_controller_aws(name, cluster_name, self, cluster)
            region = aws.get_region_output(opts=pulumi.InvokeOutputOptions(parent=self)).region  # this cluster's provider
            release(
                eks_addons.LB_CONTROLLER_CHART,
                eks_addons.load_balancer_controller_values(cluster_name, region, self.network.vpc_id),
                # The controller reads its credentials at start-up: the association and the agent come first.
                [self.lb_controller.pod_identity, pod_identity_agent],
            )
        if args.prometheus_url is None:
            release(eks_addons.PROMETHEUS_STACK_CHART, eks_addons.prometheus_stack_values())
        if args.dcgm_exporter:
            # Its ServiceMonitor needs the operator's CRDs: the release that installs them comes first.
            release("dcgm-exporter", eks_addons.dcgm_exporter_values(), [self.addons.get(eks_addons.PROMETHEUS_STACK_CHART)] if args.prometheus_url is None else [])


__all__ = [
    "GpuCluster",
    "GpuClusterArgs",
    "crd_prerequisites",
    "default_network",
    "public_endpoint",
    "validate_chart_versions",
    "validate_cluster_name",
    "validate_network",
    "validate_prometheus",
]
