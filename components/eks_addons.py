"""What GpuCluster (platform "eks") installs on top of the control plane: the GPU add-ons and Karpenter's AWS side.

- Helm releases (`pulumi_kubernetes.helm.v3.Release`, each chart pinned to a version): the NVIDIA device plugin
  (advertises `nvidia.com/gpu`), KEDA (queue-driven autoscaling), Karpenter (GPU nodes on demand),
  LeaderWorkerSet (multi-node models) and, optionally, NVIDIA's DCGM exporter (GPU metrics).
- Karpenter's AWS resources: the controller role (EKS Pod Identity, least privilege), the node role and its
  EC2_LINUX access entry, the interruption queue and the EventBridge rules that feed it.
- The AWS Load Balancer Controller's AWS side: its role (EKS Pod Identity) carrying the controller's published
  IAM policy. The controller registers vLLM pods (ip targets) in the NLB target groups RegionalEndpointLB
  creates, through the TargetGroupBindings VllmService creates.

The policy documents, chart pins, event patterns and chart values are plain data built by pure functions
here, so tests read them without a cloud and reviewers read them without Pulumi.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

# Node labels and taints shared by the cluster, the node pools and the workloads.
SYSTEM_LABEL = "vllm-fleet/role"  # value "system": the on-demand nodes that run controllers
SYSTEM_LABEL_VALUE = "system"
GPU_LABEL = "vllm-fleet/gpu"  # value: canonical GPU name, e.g. "H100-80GB"
NODE_POOL_LABEL = "vllm-fleet/node-pool"
GPU_TAINT_KEY = "nvidia.com/gpu"  # the key the NVIDIA device plugin's own resources use
KARPENTER_NAMESPACE = "kube-system"  # Karpenter's docs install it in kube-system
KARPENTER_SERVICE_ACCOUNT = "karpenter"  # the chart's default service account name
LB_CONTROLLER_CHART = "aws-load-balancer-controller"  # also the release name and GpuCluster.addons key
LB_CONTROLLER_NAMESPACE = "kube-system"  # where the controller's install guide puts it
LB_CONTROLLER_SERVICE_ACCOUNT = "aws-load-balancer-controller"
PROMETHEUS_STACK_CHART = "kube-prometheus-stack"  # also the release name and GpuCluster.addons key
MONITORING_NAMESPACE = "monitoring"
PROMETHEUS_PORT = 9090  # the chart's prometheus.service.port default
# gp3 above its baseline (3000 IOPS, 125 MB/s): image pulls and weight downloads land on the root volume.
ROOT_VOLUME_IOPS = 6000
ROOT_VOLUME_THROUGHPUT_MBS = 500


@dataclass(frozen=True)
class ChartPin:
    """One Helm chart at one version: `repo` is a classic chart repository, or None for an OCI chart URL."""

    chart: str
    version: str
    repo: str | None
    namespace: str
    source: str


# Pinned chart versions; bump deliberately (chart_versions overrides one). Karpenter, KEDA and LWS match the CRD
# releases in shared/data/crds that the tests validate our custom resources against; the device plugin and DCGM
# exporter versions are releases published in their Helm repositories (pinned the same way in public installs).
CHARTS: dict[str, ChartPin] = {
    "nvidia-device-plugin": ChartPin(
        chart="nvidia-device-plugin",
        version="0.17.1",
        repo="https://nvidia.github.io/k8s-device-plugin",
        namespace="kube-system",
        source="github.com/NVIDIA/k8s-device-plugin README (helm repo nvdp)",
    ),
    "keda": ChartPin(
        chart="keda",
        version="2.20.2",  # same release as the ScaledObject CRD the tests validate against
        repo="https://kedacore.github.io/charts",
        namespace="keda",
        source="keda.sh/docs/deploy (Helm)",
    ),
    "karpenter": ChartPin(
        chart="oci://public.ecr.aws/karpenter/karpenter",
        version="1.14.1",  # same release as the NodePool / EC2NodeClass CRDs the tests validate against
        repo=None,
        namespace=KARPENTER_NAMESPACE,
        source="karpenter.sh/docs/getting-started/getting-started-with-karpenter (step08-apply-helm-chart.sh)",
    ),
    "lws": ChartPin(
        chart="oci://registry.k8s.io/lws/charts/lws",
        version="0.10.0",  # same release as the LeaderWorkerSet CRD the tests validate against
        repo=None,
        namespace="lws-system",
        source="lws.sigs.k8s.io/docs/installation (Helm)",
    ),
    # Chart 1.17.1 ships controller v2.17.1 (Dec 2025 / Jan 2026), the last 2.x release: eks-charts moved the chart
    # from 1.17.1 to 3.x with controller v3.0.0 (aws/eks-charts#1297, 2026-01-23; #1312). The IAM policy below is
    # v2.17.1's: bump the chart and the policy together.
    LB_CONTROLLER_CHART: ChartPin(
        chart=LB_CONTROLLER_CHART,
        version="1.17.1",
        repo="https://aws.github.io/eks-charts",
        namespace=LB_CONTROLLER_NAMESPACE,
        source="kubernetes-sigs.github.io/aws-load-balancer-controller/latest/deploy/installation (helm repo eks)",
    ),
    "dcgm-exporter": ChartPin(
        chart="dcgm-exporter",
        version="4.8.2",
        repo="https://nvidia.github.io/dcgm-exporter/helm-charts",
        namespace="monitoring",
        source="github.com/NVIDIA/dcgm-exporter README (Helm)",
    ),
    # The Prometheus Operator (its CRDs: ServiceMonitor, PrometheusRule...) and one Prometheus that KEDA queries.
    # Chart 88.5.3 ships operator v0.93.1, the release of the monitoring.coreos.com CRDs in shared/data/crds
    # (prometheus-community/helm-charts charts/kube-prometheus-stack/Chart.yaml at cf408a2, 2026-08-22).
    PROMETHEUS_STACK_CHART: ChartPin(
        chart=PROMETHEUS_STACK_CHART,
        version="88.5.3",
        repo="https://prometheus-community.github.io/helm-charts",
        namespace=MONITORING_NAMESPACE,
        source="github.com/prometheus-community/helm-charts charts/kube-prometheus-stack (Chart.yaml, values.yaml)",
    ),
}

# API group -> the CHARTS key whose release installs that group's CRDs: the one table the `crd-installers`
# policy checks every rendered custom resource against. Each chart ships its CRDs (crds/ or templates).
CRD_GROUPS: dict[str, str] = {
    "karpenter.sh": "karpenter",  # NodePool, NodeClaim
    "karpenter.k8s.aws": "karpenter",  # EC2NodeClass
    "keda.sh": "keda",  # ScaledObject, ScaledJob, TriggerAuthentication
    "leaderworkerset.x-k8s.io": "lws",  # LeaderWorkerSet
    "elbv2.k8s.aws": LB_CONTROLLER_CHART,  # TargetGroupBinding, IngressClassParams
    "monitoring.coreos.com": PROMETHEUS_STACK_CHART,  # ServiceMonitor, PodMonitor, PrometheusRule (crds.enabled)
}

# EventBridge patterns Karpenter's interruption controller consumes (karpenter.sh getting-started
# cloudformation.yaml, v1.14): spot interruption warnings (the 2-minute notice), rebalance recommendations,
# instance state changes and AWS Health scheduled changes.
INTERRUPTION_EVENTS: dict[str, dict[str, list[str]]] = {
    "spot-interruption": {"source": ["aws.ec2"], "detail-type": ["EC2 Spot Instance Interruption Warning"]},
    "rebalance": {"source": ["aws.ec2"], "detail-type": ["EC2 Instance Rebalance Recommendation"]},
    "instance-state-change": {"source": ["aws.ec2"], "detail-type": ["EC2 Instance State-change Notification"]},
    "scheduled-change": {"source": ["aws.health"], "detail-type": ["AWS Health Event"]},
}

# The node role's managed policies (Karpenter v1.14 getting-started): join the cluster, run the VPC CNI,
# pull images, and SSM Session Manager instead of SSH.
NODE_ROLE_POLICIES = (
    "AmazonEKSWorkerNodePolicy",
    "AmazonEKS_CNI_Policy",
    "AmazonEC2ContainerRegistryPullOnly",
    "AmazonSSMManagedInstanceCore",
)


# ----- pure: policy documents ------------------------------------------------------------------------


def assume_role_policy(service: str, *, tag_session: bool = False) -> dict[str, Any]:
    actions = ["sts:AssumeRole", "sts:TagSession"] if tag_session else "sts:AssumeRole"
    return {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": service}, "Action": actions}],
    }


def karpenter_controller_policy(
    *, cluster_name: str, region: str, partition: str, account_id: str, queue_arn: str, node_role_arn: str
) -> dict[str, Any]:
    """Least privilege for the Karpenter controller, scoped to this cluster's tags, region, queue and node role.

    Follows the statements of Karpenter v1.14's getting-started CloudFormation (NodeLifecycle, IAMIntegration,
    EKSIntegration, Interruption and ResourceDiscovery policies): writes are allowed only on resources tagged
    for this cluster (`kubernetes.io/cluster/<name>: owned` and a `karpenter.sh/nodepool` tag), PassRole only
    for the node role and only to EC2.
    """
    ec2 = f"arn:{partition}:ec2:{region}"
    owned = {f"aws:ResourceTag/kubernetes.io/cluster/{cluster_name}": "owned"}
    request_owned = {
        f"aws:RequestTag/kubernetes.io/cluster/{cluster_name}": "owned",
        "aws:RequestTag/eks:eks-cluster-name": cluster_name,
    }
    tagged_resources = [
        f"{ec2}:*:{kind}/*" for kind in ("fleet", "instance", "volume", "network-interface", "launch-template", "spot-instances-request")
    ]
    instance_profile = f"arn:{partition}:iam::{account_id}:instance-profile/*"
    cluster_arn = f"arn:{partition}:eks:{region}:{account_id}:cluster/{cluster_name}"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "AllowScopedEC2InstanceAccessActions",
                "Effect": "Allow",
                "Action": ["ec2:RunInstances", "ec2:CreateFleet"],
                "Resource": [
                    f"arn:{partition}:ec2:{region}::image/*",
                    f"arn:{partition}:ec2:{region}::snapshot/*",
                    f"{ec2}:*:security-group/*",
                    f"{ec2}:*:subnet/*",
                    f"{ec2}:*:capacity-reservation/*",
                    f"{ec2}:*:placement-group/*",
                ],
            },
            {
                "Sid": "AllowScopedEC2LaunchTemplateAccessActions",
                "Effect": "Allow",
                "Action": ["ec2:RunInstances", "ec2:CreateFleet"],
                "Resource": f"{ec2}:*:launch-template/*",
                "Condition": {"StringEquals": owned, "StringLike": {"aws:ResourceTag/karpenter.sh/nodepool": "*"}},
            },
            {
                "Sid": "AllowScopedEC2InstanceActionsWithTags",
                "Effect": "Allow",
                "Action": ["ec2:RunInstances", "ec2:CreateFleet", "ec2:CreateLaunchTemplate"],
                "Resource": tagged_resources,
                "Condition": {"StringEquals": request_owned, "StringLike": {"aws:RequestTag/karpenter.sh/nodepool": "*"}},
            },
            {
                "Sid": "AllowScopedResourceCreationTagging",
                "Effect": "Allow",
                "Action": "ec2:CreateTags",
                "Resource": tagged_resources,
                "Condition": {
                    "StringEquals": {**request_owned, "ec2:CreateAction": ["RunInstances", "CreateFleet", "CreateLaunchTemplate"]},
                    "StringLike": {"aws:RequestTag/karpenter.sh/nodepool": "*"},
                },
            },
            {
                "Sid": "AllowScopedResourceTagging",
                "Effect": "Allow",
                "Action": "ec2:CreateTags",
                "Resource": f"{ec2}:*:instance/*",
                "Condition": {
                    "StringEquals": owned,
                    "StringLike": {"aws:ResourceTag/karpenter.sh/nodepool": "*"},
                    "StringEqualsIfExists": {"aws:RequestTag/eks:eks-cluster-name": cluster_name},
                    "ForAllValues:StringEquals": {"aws:TagKeys": ["eks:eks-cluster-name", "karpenter.sh/nodeclaim", "Name"]},
                },
            },
            {
                "Sid": "AllowScopedDeletion",
                "Effect": "Allow",
                "Action": ["ec2:TerminateInstances", "ec2:DeleteLaunchTemplate"],
                "Resource": [f"{ec2}:*:instance/*", f"{ec2}:*:launch-template/*"],
                "Condition": {"StringEquals": owned, "StringLike": {"aws:ResourceTag/karpenter.sh/nodepool": "*"}},
            },
            {
                "Sid": "AllowPassingInstanceRole",
                "Effect": "Allow",
                "Action": "iam:PassRole",
                "Resource": node_role_arn,
                "Condition": {"StringEquals": {"iam:PassedToService": ["ec2.amazonaws.com", "ec2.amazonaws.com.cn"]}},
            },
            {
                "Sid": "AllowScopedInstanceProfileCreationActions",
                "Effect": "Allow",
                "Action": "iam:CreateInstanceProfile",
                "Resource": instance_profile,
                "Condition": {
                    "StringEquals": {**request_owned, "aws:RequestTag/topology.kubernetes.io/region": region},
                    "StringLike": {"aws:RequestTag/karpenter.k8s.aws/ec2nodeclass": "*"},
                },
            },
            {
                "Sid": "AllowScopedInstanceProfileTagActions",
                "Effect": "Allow",
                "Action": "iam:TagInstanceProfile",
                "Resource": instance_profile,
                "Condition": {
                    "StringEquals": {
                        **owned,
                        "aws:ResourceTag/topology.kubernetes.io/region": region,
                        **request_owned,
                        "aws:RequestTag/topology.kubernetes.io/region": region,
                    },
                    "StringLike": {
                        "aws:ResourceTag/karpenter.k8s.aws/ec2nodeclass": "*",
                        "aws:RequestTag/karpenter.k8s.aws/ec2nodeclass": "*",
                    },
                },
            },
            {
                "Sid": "AllowScopedInstanceProfileActions",
                "Effect": "Allow",
                "Action": ["iam:AddRoleToInstanceProfile", "iam:RemoveRoleFromInstanceProfile", "iam:DeleteInstanceProfile"],
                "Resource": instance_profile,
                "Condition": {
                    "StringEquals": {**owned, "aws:ResourceTag/topology.kubernetes.io/region": region},
                    "StringLike": {"aws:ResourceTag/karpenter.k8s.aws/ec2nodeclass": "*"},
                },
            },
            {"Sid": "AllowAPIServerEndpointDiscovery", "Effect": "Allow", "Action": "eks:DescribeCluster", "Resource": cluster_arn},
            {
                "Sid": "AllowInterruptionQueueActions",
                "Effect": "Allow",
                "Action": ["sqs:DeleteMessage", "sqs:GetQueueUrl", "sqs:ReceiveMessage"],
                "Resource": queue_arn,
            },
            {
                "Sid": "AllowRegionalReadActions",
                "Effect": "Allow",
                "Action": [
                    "ec2:DescribeCapacityReservations",
                    "ec2:DescribeImages",
                    "ec2:DescribeInstances",
                    "ec2:DescribeInstanceStatus",
                    "ec2:DescribeInstanceTypeOfferings",
                    "ec2:DescribeInstanceTypes",
                    "ec2:DescribeLaunchTemplates",
                    "ec2:DescribePlacementGroups",
                    "ec2:DescribeSecurityGroups",
                    "ec2:DescribeSpotPriceHistory",
                    "ec2:DescribeSubnets",
                ],
                "Resource": "*",  # Describe* calls support no resource-level permissions; scoped by region instead
                "Condition": {"StringEquals": {"aws:RequestedRegion": region}},
            },
            {
                "Sid": "AllowSSMReadActions",
                "Effect": "Allow",
                "Action": "ssm:GetParameter",
                "Resource": f"arn:{partition}:ssm:{region}::parameter/aws/service/*",  # the public EKS AMI parameters only
            },
            {"Sid": "AllowPricingReadActions", "Effect": "Allow", "Action": "pricing:GetProducts", "Resource": "*"},
            {"Sid": "AllowUnscopedInstanceProfileListAction", "Effect": "Allow", "Action": "iam:ListInstanceProfiles", "Resource": "*"},
            {"Sid": "AllowInstanceProfileReadActions", "Effect": "Allow", "Action": "iam:GetInstanceProfile", "Resource": instance_profile},
        ],
    }


# The controller's published IAM policy at the pinned release:
#   https://raw.githubusercontent.com/kubernetes-sigs/aws-load-balancer-controller/v2.17.1/docs/install/iam_policy.json
# (controller v2.17.1 = chart 1.17.1, see CHARTS). Same permissions, regrouped with our own statement ids and the
# partition as a parameter. What it amounts to: read the network, load balancers and certificates anywhere; create
# load balancers, target groups and security groups only when they carry the controller's `elbv2.k8s.aws/cluster`
# tag, and modify or delete only what carries it; register/deregister targets in any target group (that is what
# a TargetGroupBinding to a target group Pulumi created needs); open ingress on security groups (the
# TargetGroupBinding `networking` rules go on the nodes' security group, which the controller did not create).
LB_CONTROLLER_OWNER_TAG = "elbv2.k8s.aws/cluster"


def load_balancer_controller_policy(*, partition: str) -> dict[str, Any]:
    """IAM policy of the AWS Load Balancer Controller v2.17.1 (published policy, see the comment above)."""
    owner_request = f"aws:RequestTag/{LB_CONTROLLER_OWNER_TAG}"
    owner_resource = f"aws:ResourceTag/{LB_CONTROLLER_OWNER_TAG}"
    elb = f"arn:{partition}:elasticloadbalancing:*:*"
    security_groups = f"arn:{partition}:ec2:*:*:security-group/*"
    balancers = [f"{elb}:targetgroup/*/*", f"{elb}:loadbalancer/net/*/*", f"{elb}:loadbalancer/app/*/*"]
    listeners = [f"{elb}:listener/{t}/*/*/*" for t in ("net", "app")] + [f"{elb}:listener-rule/{t}/*/*/*" for t in ("net", "app")]
    tagged_by_controller = {"Null": {owner_resource: "false"}}
    # Retagging: allowed on what the controller owns, but never to change the owner tag itself.
    retag = {"Null": {owner_request: "true", owner_resource: "false"}}
    reads = [
        "ec2:DescribeAccountAttributes",
        "ec2:DescribeAddresses",
        "ec2:DescribeAvailabilityZones",
        "ec2:DescribeInternetGateways",
        "ec2:DescribeVpcs",
        "ec2:DescribeVpcPeeringConnections",
        "ec2:DescribeSubnets",
        "ec2:DescribeSecurityGroups",
        "ec2:DescribeInstances",
        "ec2:DescribeNetworkInterfaces",
        "ec2:DescribeTags",
        "ec2:GetCoipPoolUsage",
        "ec2:DescribeCoipPools",
        "ec2:GetSecurityGroupsForVpc",
        "ec2:DescribeIpamPools",
        "ec2:DescribeRouteTables",
        "elasticloadbalancing:DescribeLoadBalancers",
        "elasticloadbalancing:DescribeLoadBalancerAttributes",
        "elasticloadbalancing:DescribeListeners",
        "elasticloadbalancing:DescribeListenerCertificates",
        "elasticloadbalancing:DescribeSSLPolicies",
        "elasticloadbalancing:DescribeRules",
        "elasticloadbalancing:DescribeTargetGroups",
        "elasticloadbalancing:DescribeTargetGroupAttributes",
        "elasticloadbalancing:DescribeTargetHealth",
        "elasticloadbalancing:DescribeTags",
        "elasticloadbalancing:DescribeTrustStores",
        "elasticloadbalancing:DescribeListenerAttributes",
        "elasticloadbalancing:DescribeCapacityReservation",
    ]
    integrations = [
        "cognito-idp:DescribeUserPoolClient",
        "acm:ListCertificates",
        "acm:DescribeCertificate",
        "iam:ListServerCertificates",
        "iam:GetServerCertificate",
        "waf-regional:GetWebACL",
        "waf-regional:GetWebACLForResource",
        "waf-regional:AssociateWebACL",
        "waf-regional:DisassociateWebACL",
        "wafv2:GetWebACL",
        "wafv2:GetWebACLForResource",
        "wafv2:AssociateWebACL",
        "wafv2:DisassociateWebACL",
        "shield:GetSubscriptionState",
        "shield:DescribeProtection",
        "shield:CreateProtection",
        "shield:DeleteProtection",
    ]
    owned_balancer_changes = [
        "elasticloadbalancing:ModifyLoadBalancerAttributes",
        "elasticloadbalancing:SetIpAddressType",
        "elasticloadbalancing:SetSecurityGroups",
        "elasticloadbalancing:SetSubnets",
        "elasticloadbalancing:DeleteLoadBalancer",
        "elasticloadbalancing:ModifyTargetGroup",
        "elasticloadbalancing:ModifyTargetGroupAttributes",
        "elasticloadbalancing:DeleteTargetGroup",
        "elasticloadbalancing:ModifyListenerAttributes",
        "elasticloadbalancing:ModifyCapacityReservation",
        "elasticloadbalancing:ModifyIpPools",
    ]
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "CreateElbServiceLinkedRole",
                "Effect": "Allow",
                "Action": "iam:CreateServiceLinkedRole",
                "Resource": "*",
                "Condition": {"StringEquals": {"iam:AWSServiceName": "elasticloadbalancing.amazonaws.com"}},
            },
            # Describe*/Get* calls: EC2 and ELB support no resource-level scoping for them.
            {"Sid": "ReadNetworkAndLoadBalancers", "Effect": "Allow", "Action": reads, "Resource": "*"},
            {"Sid": "CertificatesWafShieldCognito", "Effect": "Allow", "Action": integrations, "Resource": "*"},
            {
                "Sid": "SecurityGroupIngressRules",
                "Effect": "Allow",
                "Action": ["ec2:AuthorizeSecurityGroupIngress", "ec2:RevokeSecurityGroupIngress"],
                "Resource": "*",
            },
            {"Sid": "CreateSecurityGroups", "Effect": "Allow", "Action": "ec2:CreateSecurityGroup", "Resource": "*"},
            {
                "Sid": "TagSecurityGroupsOnCreate",
                "Effect": "Allow",
                "Action": "ec2:CreateTags",
                "Resource": security_groups,
                "Condition": {"StringEquals": {"ec2:CreateAction": "CreateSecurityGroup"}, "Null": {owner_request: "false"}},
            },
            {
                "Sid": "RetagOwnedSecurityGroups",
                "Effect": "Allow",
                "Action": ["ec2:CreateTags", "ec2:DeleteTags"],
                "Resource": security_groups,
                "Condition": retag,
            },
            {
                "Sid": "ManageOwnedSecurityGroups",
                "Effect": "Allow",
                "Action": ["ec2:AuthorizeSecurityGroupIngress", "ec2:RevokeSecurityGroupIngress", "ec2:DeleteSecurityGroup"],
                "Resource": "*",
                "Condition": tagged_by_controller,
            },
            {
                "Sid": "CreateOwnedLoadBalancers",
                "Effect": "Allow",
                "Action": ["elasticloadbalancing:CreateLoadBalancer", "elasticloadbalancing:CreateTargetGroup"],
                "Resource": "*",
                "Condition": {"Null": {owner_request: "false"}},
            },
            {
                "Sid": "ListenersAndRules",
                "Effect": "Allow",
                "Action": [
                    "elasticloadbalancing:CreateListener",
                    "elasticloadbalancing:DeleteListener",
                    "elasticloadbalancing:CreateRule",
                    "elasticloadbalancing:DeleteRule",
                ],
                "Resource": "*",
            },
            {
                "Sid": "RetagOwnedLoadBalancers",
                "Effect": "Allow",
                "Action": ["elasticloadbalancing:AddTags", "elasticloadbalancing:RemoveTags"],
                "Resource": balancers,
                "Condition": retag,
            },
            {
                "Sid": "TagListenersAndRules",
                "Effect": "Allow",
                "Action": ["elasticloadbalancing:AddTags", "elasticloadbalancing:RemoveTags"],
                "Resource": listeners,
            },
            {
                "Sid": "ManageOwnedLoadBalancers",
                "Effect": "Allow",
                "Action": owned_balancer_changes,
                "Resource": "*",
                "Condition": tagged_by_controller,
            },
            {
                "Sid": "TagLoadBalancersOnCreate",
                "Effect": "Allow",
                "Action": "elasticloadbalancing:AddTags",
                "Resource": balancers,
                "Condition": {
                    "StringEquals": {"elasticloadbalancing:CreateAction": ["CreateTargetGroup", "CreateLoadBalancer"]},
                    "Null": {owner_request: "false"},
                },
            },
            {
                "Sid": "RegisterTargets",
                "Effect": "Allow",
                "Action": ["elasticloadbalancing:RegisterTargets", "elasticloadbalancing:DeregisterTargets"],
                "Resource": f"{elb}:targetgroup/*/*",
            },
            {
                "Sid": "ListenerSettings",
                "Effect": "Allow",
                "Action": [
                    "elasticloadbalancing:SetWebAcl",
                    "elasticloadbalancing:ModifyListener",
                    "elasticloadbalancing:AddListenerCertificates",
                    "elasticloadbalancing:RemoveListenerCertificates",
                    "elasticloadbalancing:ModifyRule",
                    "elasticloadbalancing:SetRulePriorities",
                ],
                "Resource": "*",
            },
        ],
    }


def interruption_queue_policy(queue_arn: str) -> dict[str, Any]:
    """EventBridge (and SQS itself) may send; nothing may talk to the queue without TLS."""
    return {
        "Version": "2012-10-17",
        "Id": "EC2InterruptionPolicy",
        "Statement": [
            {
                "Sid": "AllowEventBridgeSend",
                "Effect": "Allow",
                "Principal": {"Service": ["events.amazonaws.com", "sqs.amazonaws.com"]},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
            },
            {
                "Sid": "DenyHTTP",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "sqs:*",
                "Resource": queue_arn,
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            },
        ],
    }


# ----- pure: chart values ------------------------------------------------------------------------------

SYSTEM_NODE_SELECTOR = {SYSTEM_LABEL: SYSTEM_LABEL_VALUE}
GPU_TOLERATIONS = [{"key": GPU_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}]
# GPU daemonsets run only where our node pools put GPUs (both Karpenter and managed node groups set the label).
GPU_NODE_AFFINITY = {
    "nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": GPU_LABEL, "operator": "Exists"}]}]
        }
    }
}


def karpenter_values(cluster_name: str, queue_name: Any) -> dict[str, Any]:
    return {
        "settings": {"clusterName": cluster_name, "interruptionQueue": queue_name},
        "serviceAccount": {"name": KARPENTER_SERVICE_ACCOUNT},
        "replicas": 2,
        # Karpenter must never run on nodes it manages: pin it to the on-demand system nodes.
        "nodeSelector": SYSTEM_NODE_SELECTOR,
        "controller": {
            "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
        },
    }


def load_balancer_controller_values(cluster_name: str, region: Any, vpc_id: Any) -> dict[str, Any]:
    """Chart values: region and VPC given explicitly, because nodes require IMDSv2 with a hop limit of 1 and
    pods cannot read them from instance metadata; the chart's service account, whose IAM role comes from
    EKS Pod Identity (no role annotation)."""
    return {
        "clusterName": cluster_name,
        "region": region,
        "vpcId": vpc_id,
        "serviceAccount": {"create": True, "name": LB_CONTROLLER_SERVICE_ACCOUNT},
        "replicaCount": 2,
        "podDisruptionBudget": {"maxUnavailable": 1},
        # It must keep running when GPU nodes come and go: the on-demand system nodes.
        "nodeSelector": SYSTEM_NODE_SELECTOR,
    }


def prometheus_service_url(release: str = PROMETHEUS_STACK_CHART, namespace: str = MONITORING_NAMESPACE) -> str:
    """In-cluster URL of the Prometheus a kube-prometheus-stack release creates.

    The chart names it `<fullname>-prometheus` on port 9090, where fullname is the release name when it contains
    the chart name, else `<release>-kube-prometheus-stack`, truncated to 26 characters with a trailing '-'
    dropped (templates/_helpers.tpl "kube-prometheus-stack.fullname", templates/prometheus/service.yaml).
    """
    full = release if PROMETHEUS_STACK_CHART in release else f"{release}-{PROMETHEUS_STACK_CHART}"
    full = full[:26].rstrip("-")
    return f"http://{full}-prometheus.{namespace}.svc.cluster.local:{PROMETHEUS_PORT}"


def prometheus_stack_values() -> dict[str, Any]:
    """Operator, Prometheus and kube-state-metrics on the system nodes; every ServiceMonitor in every namespace.

    With the chart's default serviceMonitorSelectorNilUsesHelmValues=true, Prometheus selects only
    ServiceMonitors labelled `release: <release>`; false (and the empty selectors) selects all of them, so the
    ServiceMonitors VllmService creates in each model's namespace are scraped (values.yaml, prometheusSpec).
    Grafana and Alertmanager are left off: dashboards and alert routing are the operators' own choice.
    """
    return {
        "crds": {"enabled": True},
        "grafana": {"enabled": False},
        "alertmanager": {"enabled": False},
        "prometheusOperator": {"nodeSelector": SYSTEM_NODE_SELECTOR},
        "kube-state-metrics": {"nodeSelector": SYSTEM_NODE_SELECTOR},
        "prometheus": {
            "prometheusSpec": {
                "nodeSelector": SYSTEM_NODE_SELECTOR,
                "serviceMonitorSelectorNilUsesHelmValues": False,
                "serviceMonitorSelector": {},
                "serviceMonitorNamespaceSelector": {},
                "podMonitorSelectorNilUsesHelmValues": False,
                "ruleSelectorNilUsesHelmValues": False,
                "retention": "15d",
            }
        },
    }


def keda_values() -> dict[str, Any]:
    return {"nodeSelector": SYSTEM_NODE_SELECTOR}


def device_plugin_values() -> dict[str, Any]:
    return {"tolerations": GPU_TOLERATIONS, "affinity": GPU_NODE_AFFINITY}


def lws_values() -> dict[str, Any]:
    return {}


def dcgm_exporter_values() -> dict[str, Any]:
    return {"tolerations": GPU_TOLERATIONS, "affinity": GPU_NODE_AFFINITY, "serviceMonitor": {"enabled": True}}


# ----- resources ---------------------------------------------------------------------------------------


def helm_release(
    name: str,
    key: str,
    values: dict[str, Any],
    *,
    provider: k8s.Provider,
    parent: pulumi.Resource,
    depends_on: list[pulumi.Resource] | None = None,
    version: str | None = None,
) -> k8s.helm.v3.Release:
    """One pinned chart as a Helm Release (a real resource: Pulumi tracks its status, atomic rollbacks on failure)."""
    pin = CHARTS[key]
    return k8s.helm.v3.Release(
        f"{name}-{key}",
        name=key,
        chart=pin.chart,
        version=version or pin.version,
        repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=pin.repo) if pin.repo else None,
        namespace=pin.namespace,
        create_namespace=pin.namespace != "kube-system",
        values=values,
        atomic=True,
        cleanup_on_fail=True,
        timeout=900,
        opts=pulumi.ResourceOptions(parent=parent, provider=provider, depends_on=depends_on or []),
    )


def node_launch_template(name: str, role: str, volume_gib: int, parent: pulumi.Resource, tags: dict[str, str] | None = None) -> aws.ec2.LaunchTemplate:
    """Launch template for a managed node group: encrypted gp3 root volume, IMDSv2 required, hop limit 1.

    Hop limit 1 keeps pods (one network hop away) off the instance role's credentials; pods get their own
    through EKS Pod Identity. `/dev/xvda` is the AL2023 EKS AMIs' root device.
    """
    return aws.ec2.LaunchTemplate(
        f"{name}-{role}-lt",
        block_device_mappings=[
            aws.ec2.LaunchTemplateBlockDeviceMappingArgs(
                device_name="/dev/xvda",
                ebs=aws.ec2.LaunchTemplateBlockDeviceMappingEbsArgs(
                    volume_size=volume_gib,
                    volume_type="gp3",
                    encrypted="true",
                    delete_on_termination="true",
                    iops=ROOT_VOLUME_IOPS,
                    throughput=ROOT_VOLUME_THROUGHPUT_MBS,
                ),
            )
        ],
        metadata_options=aws.ec2.LaunchTemplateMetadataOptionsArgs(
            http_endpoint="enabled", http_tokens="required", http_put_response_hop_limit=1
        ),
        tag_specifications=[
            aws.ec2.LaunchTemplateTagSpecificationArgs(resource_type=kind, tags={"Name": f"{name}-{role}", **(tags or {})})
            for kind in ("instance", "volume")
        ],
        update_default_version=True,
        tags={"Name": f"{name}-{role}-lt", **(tags or {})},
        opts=pulumi.ResourceOptions(parent=parent),
    )


@dataclass
class KarpenterAws:
    node_role: aws.iam.Role
    controller_role: aws.iam.Role
    queue: aws.sqs.Queue
    rules: list[aws.cloudwatch.EventRule]
    access_entry: aws.eks.AccessEntry
    pod_identity: aws.eks.PodIdentityAssociation


def node_role(name: str, parent: pulumi.Resource, role: str) -> aws.iam.Role:
    """An EC2 instance role for EKS nodes with the node policies attached."""
    opts = pulumi.ResourceOptions(parent=parent)
    r = aws.iam.Role(
        f"{name}-{role}",
        assume_role_policy=json.dumps(assume_role_policy("ec2.amazonaws.com")),
        tags={"Name": f"{name}-{role}"},
        opts=opts,
    )
    partition = aws.get_partition_output(opts=pulumi.InvokeOutputOptions(parent=parent))
    for policy in NODE_ROLE_POLICIES:
        aws.iam.RolePolicyAttachment(
            f"{name}-{role}-{policy}",
            role=r.name,
            policy_arn=partition.partition.apply(lambda p, policy=policy: f"arn:{p}:iam::aws:policy/{policy}"),
            opts=opts,
        )
    return r


def karpenter_aws(name: str, cluster_name: str, parent: pulumi.Resource, cluster: pulumi.Resource) -> KarpenterAws:
    """Karpenter's node role + access entry, controller role via Pod Identity, interruption queue and rules."""
    opts = pulumi.ResourceOptions(parent=parent)
    # Invoked with the parent: an invoke with a parent goes through the parent's provider, so a cluster built with
    # another region's provider (multi-region stacks) scopes the policy to that region, not to aws:region.
    invoke_opts = pulumi.InvokeOutputOptions(parent=parent)
    region = aws.get_region_output(opts=invoke_opts)
    identity = aws.get_caller_identity_output(opts=invoke_opts)
    partition = aws.get_partition_output(opts=invoke_opts)

    nrole = node_role(name, parent, "karpenter-node")
    # Nodes Karpenter launches authenticate with this role; EC2_LINUX maps it to system:nodes (API auth mode).
    access_entry = aws.eks.AccessEntry(
        f"{name}-karpenter-node-access",
        cluster_name=cluster_name,
        principal_arn=nrole.arn,
        type="EC2_LINUX",
        opts=pulumi.ResourceOptions(parent=parent, depends_on=[cluster]),
    )

    queue = aws.sqs.Queue(
        f"{name}-karpenter-interruption",
        name=cluster_name,  # Karpenter's settings.interruptionQueue takes the queue name
        message_retention_seconds=300,  # an interruption is stale after the 2-minute notice anyway
        sqs_managed_sse_enabled=True,
        tags={"Name": f"{name}-karpenter-interruption"},
        opts=opts,
    )
    aws.sqs.QueuePolicy(
        f"{name}-karpenter-interruption-policy",
        queue_url=queue.url,
        policy=queue.arn.apply(lambda arn: json.dumps(interruption_queue_policy(arn))),
        opts=opts,
    )
    rules = []
    for key, pattern in INTERRUPTION_EVENTS.items():
        rule = aws.cloudwatch.EventRule(
            f"{name}-karpenter-{key}",
            description=f"Karpenter interruption handling for {cluster_name}: {pattern['detail-type'][0]}",
            event_pattern=json.dumps(pattern),
            tags={"Name": f"{name}-karpenter-{key}"},
            opts=opts,
        )
        aws.cloudwatch.EventTarget(
            f"{name}-karpenter-{key}-target",
            rule=rule.name,
            target_id="KarpenterInterruptionQueueTarget",
            arn=queue.arn,
            opts=opts,
        )
        rules.append(rule)

    controller_role = aws.iam.Role(
        f"{name}-karpenter-controller",
        # EKS Pod Identity: the agent assumes the role for the karpenter service account (no OIDC trust to manage).
        assume_role_policy=json.dumps(assume_role_policy("pods.eks.amazonaws.com", tag_session=True)),
        tags={"Name": f"{name}-karpenter-controller"},
        opts=opts,
    )
    policy = pulumi.Output.all(region.region, partition.partition, identity.account_id, queue.arn, nrole.arn).apply(
        lambda a: json.dumps(
            karpenter_controller_policy(
                cluster_name=cluster_name, region=a[0], partition=a[1], account_id=a[2], queue_arn=a[3], node_role_arn=a[4]
            )
        )
    )
    aws.iam.RolePolicy(f"{name}-karpenter-controller-policy", role=controller_role.id, policy=policy, opts=opts)
    pod_identity = aws.eks.PodIdentityAssociation(
        f"{name}-karpenter-pod-identity",
        cluster_name=cluster_name,
        namespace=KARPENTER_NAMESPACE,
        service_account=KARPENTER_SERVICE_ACCOUNT,
        role_arn=controller_role.arn,
        opts=pulumi.ResourceOptions(parent=parent, depends_on=[cluster]),
    )
    return KarpenterAws(
        node_role=nrole, controller_role=controller_role, queue=queue, rules=rules, access_entry=access_entry, pod_identity=pod_identity
    )


@dataclass
class LoadBalancerControllerAws:
    role: aws.iam.Role
    policy: aws.iam.RolePolicy
    pod_identity: aws.eks.PodIdentityAssociation


def load_balancer_controller_aws(
    name: str, cluster_name: str, parent: pulumi.Resource, cluster: pulumi.Resource
) -> LoadBalancerControllerAws:
    """The controller's IAM role through EKS Pod Identity: trusted by pods.eks.amazonaws.com, bound to the chart's
    service account in kube-system, carrying the controller's published policy."""
    opts = pulumi.ResourceOptions(parent=parent)
    partition = aws.get_partition_output(opts=pulumi.InvokeOutputOptions(parent=parent))
    role = aws.iam.Role(
        f"{name}-lb-controller",
        assume_role_policy=json.dumps(assume_role_policy("pods.eks.amazonaws.com", tag_session=True)),
        tags={"Name": f"{name}-lb-controller"},
        opts=opts,
    )
    policy = aws.iam.RolePolicy(
        f"{name}-lb-controller-policy",
        role=role.id,
        policy=partition.partition.apply(lambda p: json.dumps(load_balancer_controller_policy(partition=p))),
        opts=opts,
    )
    pod_identity = aws.eks.PodIdentityAssociation(
        f"{name}-lb-controller-pod-identity",
        cluster_name=cluster_name,
        namespace=LB_CONTROLLER_NAMESPACE,
        service_account=LB_CONTROLLER_SERVICE_ACCOUNT,
        role_arn=role.arn,
        opts=pulumi.ResourceOptions(parent=parent, depends_on=[cluster]),
    )
    return LoadBalancerControllerAws(role=role, policy=policy, pod_identity=pod_identity)


__all__ = [
    "CHARTS",
    "CRD_GROUPS",
    "ChartPin",
    "MONITORING_NAMESPACE",
    "PROMETHEUS_STACK_CHART",
    "GPU_LABEL",
    "GPU_TAINT_KEY",
    "GPU_TOLERATIONS",
    "INTERRUPTION_EVENTS",
    "KarpenterAws",
    "LB_CONTROLLER_CHART",
    "LB_CONTROLLER_NAMESPACE",
    "LB_CONTROLLER_OWNER_TAG",
    "LB_CONTROLLER_SERVICE_ACCOUNT",
    "LoadBalancerControllerAws",
    "NODE_POOL_LABEL",
    "SYSTEM_LABEL",
    "helm_release",
    "interruption_queue_policy",
    "karpenter_aws",
    "karpenter_controller_policy",
    "load_balancer_controller_aws",
    "load_balancer_controller_policy",
    "load_balancer_controller_values",
    "node_launch_template",
    "node_role",
    "prometheus_service_url",
    "prometheus_stack_values",
]
