"""components/gpu_cluster.py (platform "eks") and components/eks_addons.py: pure rules table-driven, then the
recorded inputs of every child that makes the cluster correct, under the mock runtime."""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pytest

from components import eks_addons
from components.eks_addons import (
    CHARTS,
    INTERRUPTION_EVENTS,
    interruption_queue_policy,
    karpenter_controller_policy,
    load_balancer_controller_policy,
    load_balancer_controller_values,
)
from components.gpu_cluster import (
    GpuCluster,
    GpuClusterArgs,
    default_network,
    public_endpoint,
    validate_chart_versions,
    validate_cluster_name,
    validate_network,
)
from components.network import NetworkArgs
from components.sizing.errors import InputError
from stacks.offline import OfflineRun, run_offline

RELEASE = "kubernetes:helm.sh/v3:Release"
POD_IDENTITY = "aws:eks/podIdentityAssociation:PodIdentityAssociation"


def build(**kw: Any) -> tuple[OfflineRun, GpuCluster]:
    made: dict[str, GpuCluster] = {}

    def program():
        made["cluster"] = GpuCluster("gpu", GpuClusterArgs(**kw))

    run = run_offline(program, region="us-east-1")
    return run, made["cluster"]


@pytest.fixture(scope="module")
def prod() -> tuple[OfflineRun, GpuCluster]:
    return build()


# ----- pure rules ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["gpu", "vllm-prod_1", "A" * 80])
def test_valid_cluster_names(name):
    assert validate_cluster_name(name) == name


@pytest.mark.parametrize("name", ["-gpu", "gpu.prod", "a" * 81, "", "gpu prod"])
def test_invalid_cluster_names(name):
    with pytest.raises(InputError) as err:
        validate_cluster_name(name)
    assert err.value.field == "cluster_name"
    assert "1-80 letters, digits, '-' or '_'" in str(err.value)


@pytest.mark.parametrize("env, azs, single_nat", [("prod", 3, False), ("dev", 2, True)])
def test_default_network(env, azs, single_nat):
    net = default_network(env)
    assert (net.availability_zones, net.single_nat_gateway) == (azs, single_nat)


def test_prod_refuses_a_new_vpc_over_two_azs():
    with pytest.raises(InputError) as err:
        validate_network(NetworkArgs(availability_zones=2), "prod")
    assert str(err.value) == (
        "availability_zones: 2 AZs in prod; prod needs >= 3 so one AZ outage keeps most capacity"
    )
    # dev may use 2; an existing VPC's subnets are taken as given
    assert validate_network(NetworkArgs(availability_zones=2), "dev").availability_zones == 2
    existing = NetworkArgs(vpc_id="vpc-1", private_subnet_ids=["subnet-a", "subnet-b"])
    assert validate_network(existing, "prod") is existing


@pytest.mark.parametrize(
    "env, explicit, expected",
    [("prod", None, False), ("dev", None, True), ("prod", True, True), ("dev", False, False)],
)
def test_public_endpoint(env, explicit, expected):
    assert public_endpoint(GpuClusterArgs(environment=env, endpoint_public_access=explicit)) is expected


def test_unknown_chart_override():
    with pytest.raises(InputError) as err:
        validate_chart_versions({"karpenter": "1.14.2", "cilium": "1.0"})
    assert str(err.value) == (
        "chart_versions: unknown chart(s) ['cilium']; "
        "known: aws-load-balancer-controller, dcgm-exporter, karpenter, keda, kube-prometheus-stack, lws, nvidia-device-plugin"
    )


def test_every_chart_is_pinned():
    for key, pin in CHARTS.items():
        assert pin.version and pin.version[0].isdigit(), key
        assert pin.repo or pin.chart.startswith("oci://"), key


POLICY = karpenter_controller_policy(
    cluster_name="gpu",
    region="us-east-1",
    partition="aws",
    account_id="123456789012",
    queue_arn="arn:aws:sqs:us-east-1:123456789012:gpu",
    node_role_arn="arn:aws:iam::123456789012:role/gpu-karpenter-node",
)


def _statements(policy: dict) -> dict[str, dict]:
    return {s["Sid"]: s for s in policy["Statement"]}


def test_karpenter_policy_scopes_writes_to_the_cluster():
    st = _statements(POLICY)
    owned = {"aws:ResourceTag/kubernetes.io/cluster/gpu": "owned"}
    for sid in ("AllowScopedEC2LaunchTemplateAccessActions", "AllowScopedDeletion"):
        assert st[sid]["Condition"]["StringEquals"] == owned
    create = st["AllowScopedEC2InstanceActionsWithTags"]["Condition"]["StringEquals"]
    assert create == {"aws:RequestTag/kubernetes.io/cluster/gpu": "owned", "aws:RequestTag/eks:eks-cluster-name": "gpu"}
    assert st["AllowScopedDeletion"]["Action"] == ["ec2:TerminateInstances", "ec2:DeleteLaunchTemplate"]


def test_karpenter_policy_pass_role_queue_and_cluster():
    st = _statements(POLICY)
    assert st["AllowPassingInstanceRole"]["Resource"] == "arn:aws:iam::123456789012:role/gpu-karpenter-node"
    assert st["AllowPassingInstanceRole"]["Condition"]["StringEquals"]["iam:PassedToService"][0] == "ec2.amazonaws.com"
    assert st["AllowInterruptionQueueActions"]["Resource"] == "arn:aws:sqs:us-east-1:123456789012:gpu"
    assert st["AllowAPIServerEndpointDiscovery"]["Resource"] == "arn:aws:eks:us-east-1:123456789012:cluster/gpu"
    assert st["AllowSSMReadActions"]["Resource"] == "arn:aws:ssm:us-east-1::parameter/aws/service/*"


def test_karpenter_policy_wildcards_only_where_aws_has_no_resource_scope():
    unscoped = {s["Sid"] for s in POLICY["Statement"] if s["Resource"] == "*"}
    assert unscoped == {"AllowRegionalReadActions", "AllowPricingReadActions", "AllowUnscopedInstanceProfileListAction"}
    reads = _statements(POLICY)["AllowRegionalReadActions"]
    assert all(a.startswith("ec2:Describe") for a in reads["Action"])
    assert reads["Condition"] == {"StringEquals": {"aws:RequestedRegion": "us-east-1"}}
    assert not any(a.endswith(":*") for s in POLICY["Statement"] for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"]))


def test_interruption_queue_policy():
    st = {s["Sid"]: s for s in interruption_queue_policy("arn:q")["Statement"]}
    assert st["AllowEventBridgeSend"]["Principal"] == {"Service": ["events.amazonaws.com", "sqs.amazonaws.com"]}
    assert st["AllowEventBridgeSend"]["Action"] == "sqs:SendMessage"
    assert st["DenyHTTP"]["Effect"] == "Deny"
    assert st["DenyHTTP"]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


# ----- the cluster under the mock runtime ------------------------------------------------------------------


def test_eks_cluster_inputs(prod):
    run, _ = prod
    c = run.one("eks:index:Cluster").inputs
    assert c["name"] == "gpu"
    assert c["authenticationMode"] == "API"
    assert c["createOidcProvider"] is True
    assert c["enabledClusterLogTypes"] == ["api", "audit", "authenticator"]
    assert c["endpointPrivateAccess"] is True
    assert c["endpointPublicAccess"] is False
    assert "publicAccessCidrs" not in c
    assert c["skipDefaultNodeGroup"] is True
    assert c["deletionProtection"] is True
    assert c["nodeAssociatePublicIpAddress"] is False
    assert c["skipDefaultSecurityGroups"] is True  # control plane, system and GPU nodes share EKS's cluster SG
    assert c["privateSubnetIds"] == ["gpu-private-0-id", "gpu-private-1-id", "gpu-private-2-id"]


def test_cluster_security_group_tagged_for_karpenter(prod):
    run, _ = prod
    tag = run.one("aws:ec2/tag:Tag").inputs
    assert tag == {"resourceId": "sg-cluster", "key": "karpenter.sh/discovery", "value": "gpu"}


def test_secrets_encrypted_with_a_rotating_key(prod):
    run, _ = prod
    key = run.one("aws:kms/key:Key", "gpu-secrets-key").inputs
    assert key["enableKeyRotation"] is True
    assert run.one("eks:index:Cluster").inputs["encryptionConfigKeyArn"] == "arn:aws:kms:us-east-1:123456789012:gpu-secrets-key"


def test_control_plane_logs_have_a_retention(prod):
    run, _ = prod
    logs = run.one("aws:cloudwatch/logGroup:LogGroup", "gpu-control-plane-logs").inputs
    assert logs == {"name": "/aws/eks/gpu/cluster", "retentionInDays": 90, "tags": {"vllm-fleet/cluster": "gpu"}}


def test_prod_network_spans_three_azs_with_discovery_tags(prod):
    run, cluster = prod
    private = [r for r in run.of_type("aws:ec2/subnet:Subnet") if "private" in r.name]
    assert len(private) == 3
    assert all(s.inputs["tags"]["karpenter.sh/discovery"] == "gpu" for s in private)
    assert cluster.network.availability_zones == 3


def test_dev_public_endpoint_and_two_azs():
    run, cluster = build(environment="dev", public_access_cidrs=["203.0.113.0/24"])
    c = run.one("eks:index:Cluster").inputs
    assert (c["endpointPublicAccess"], c["publicAccessCidrs"], c["deletionProtection"]) == (True, ["203.0.113.0/24"], False)
    assert cluster.network.availability_zones == 2


def test_system_node_group(prod):
    run, _ = prod
    ng = run.one("eks:index:ManagedNodeGroup", "gpu-system").inputs
    assert ng["capacityType"] == "ON_DEMAND"
    assert ng["instanceTypes"] == ["m7i.large"]
    assert ng["amiType"] == "AL2023_x86_64_STANDARD"
    assert ng["labels"] == {"vllm-fleet/role": "system"}
    assert ng["scalingConfig"] == {"minSize": 2, "desiredSize": 2, "maxSize": 4}
    assert ng["cluster"].endswith("eks:index:Cluster::gpu-eks")
    lt = run.one("aws:ec2/launchTemplate:LaunchTemplate", "gpu-system-lt").inputs
    ebs = lt["blockDeviceMappings"][0]["ebs"]
    assert (ebs["encrypted"], ebs["volumeType"]) == ("true", "gp3")
    assert lt["metadataOptions"] == {"httpEndpoint": "enabled", "httpTokens": "required", "httpPutResponseHopLimit": 1}


def test_prod_needs_two_system_nodes():
    with pytest.raises(InputError) as err:
        build(system_nodes=1)
    assert str(err.value) == "system_nodes: 1 system node in prod; prod needs >= 2 so controllers survive a node loss"


def test_helm_releases_pinned(prod):
    run, _ = prod
    releases = {r.inputs["name"]: r.inputs for r in run.of_type(RELEASE)}
    assert set(releases) == {"nvidia-device-plugin", "keda", "karpenter", "lws", "aws-load-balancer-controller", "kube-prometheus-stack"}
    for key, rel in releases.items():
        pin = CHARTS[key]
        assert (rel["chart"], rel["version"], rel["namespace"]) == (pin.chart, pin.version, pin.namespace)
        assert rel.get("repositoryOpts", {}).get("repo") == pin.repo
        assert rel["atomic"] is True
    assert releases["karpenter"]["chart"] == "oci://public.ecr.aws/karpenter/karpenter"
    assert releases["keda"]["repositoryOpts"] == {"repo": "https://kedacore.github.io/charts"}
    assert releases["lws"]["chart"] == "oci://registry.k8s.io/lws/charts/lws"


def test_helm_release_values(prod):
    run, _ = prod
    releases = {r.inputs["name"]: r.inputs for r in run.of_type(RELEASE)}
    karpenter = releases["karpenter"]["values"]
    assert karpenter["settings"] == {"clusterName": "gpu", "interruptionQueue": "gpu"}
    assert karpenter["nodeSelector"] == {"vllm-fleet/role": "system"}
    assert karpenter["serviceAccount"] == {"name": "karpenter"}
    plugin = releases["nvidia-device-plugin"]["values"]
    assert plugin["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    terms = plugin["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [{"matchExpressions": [{"key": "vllm-fleet/gpu", "operator": "Exists"}]}]


def test_releases_use_the_cluster_provider(prod):
    run, _ = prod
    provider = run.one("pulumi:providers:kubernetes", "gpu-k8s")
    assert all(r.provider and r.provider.startswith(provider.urn) for r in run.of_type(RELEASE))


def test_optional_addons():
    run, _ = build(
        dcgm_exporter=True, keda=False, leader_worker_set=False, aws_load_balancer_controller=False, chart_versions={"karpenter": "1.14.2"}
    )
    releases = {r.inputs["name"]: r.inputs for r in run.of_type(RELEASE)}
    assert set(releases) == {"nvidia-device-plugin", "karpenter", "dcgm-exporter", "kube-prometheus-stack"}
    # The exporter's ServiceMonitor needs the operator's CRDs: it waits for the release installing them.
    dcgm = run.one(RELEASE, "gpu-dcgm-exporter")
    assert run.one(RELEASE, "gpu-kube-prometheus-stack").urn in dcgm.dependencies
    assert [r.name for r in run.of_type(POD_IDENTITY)] == ["gpu-karpenter-pod-identity"]
    assert releases["karpenter"]["version"] == "1.14.2"
    assert releases["dcgm-exporter"]["values"]["serviceMonitor"] == {"enabled": True}


def test_no_karpenter():
    run, cluster = build(karpenter=False)
    assert not run.of_type("aws:sqs/queue:Queue")
    assert not run.of_type("aws:ec2/tag:Tag")
    assert [r.name for r in run.of_type(POD_IDENTITY)] == ["gpu-lb-controller-pod-identity"]  # the LB controller's only
    assert "karpenter" not in {r.inputs["name"] for r in run.of_type(RELEASE)}
    assert cluster.karpenter is None


def test_karpenter_controller_through_pod_identity(prod):
    run, _ = prod
    role = run.one("aws:iam/role:Role", "gpu-karpenter-controller").inputs
    trust = json.loads(role["assumeRolePolicy"])["Statement"]
    assert trust == [
        {"Effect": "Allow", "Principal": {"Service": "pods.eks.amazonaws.com"}, "Action": ["sts:AssumeRole", "sts:TagSession"]}
    ]
    assoc = run.one(POD_IDENTITY, "gpu-karpenter-pod-identity").inputs
    assert assoc == {
        "clusterName": "gpu",
        "namespace": "kube-system",
        "serviceAccount": "karpenter",
        "roleArn": "arn:aws:iam:us-east-1:123456789012:gpu-karpenter-controller",
    }
    agent = run.one("aws:eks/addon:Addon", "gpu-pod-identity-agent").inputs
    assert agent["addonName"] == "eks-pod-identity-agent"
    policy = json.loads(run.one("aws:iam/rolePolicy:RolePolicy", "gpu-karpenter-controller-policy").inputs["policy"])
    assert policy == karpenter_controller_policy(
        cluster_name="gpu",
        region="us-east-1",
        partition="aws",
        account_id="123456789012",
        queue_arn="arn:aws:sqs:us-east-1:123456789012:gpu-karpenter-interruption",
        node_role_arn="arn:aws:iam:us-east-1:123456789012:gpu-karpenter-node",
    )


def test_karpenter_node_role_and_access_entry(prod):
    run, _ = prod
    role = run.one("aws:iam/role:Role", "gpu-karpenter-node").inputs
    assert json.loads(role["assumeRolePolicy"])["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}
    attached = {
        r.inputs["policyArn"].rsplit("/", 1)[1]
        for r in run.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
        if r.name.startswith("gpu-karpenter-node-")
    }
    assert attached == set(eks_addons.NODE_ROLE_POLICIES)
    entry = run.one("aws:eks/accessEntry:AccessEntry").inputs
    assert entry == {
        "clusterName": "gpu",
        "principalArn": "arn:aws:iam:us-east-1:123456789012:gpu-karpenter-node",
        "type": "EC2_LINUX",
    }


def test_interruption_queue_and_rules(prod):
    run, _ = prod
    queue = run.one("aws:sqs/queue:Queue").inputs
    assert (queue["name"], queue["sqsManagedSseEnabled"], queue["messageRetentionSeconds"]) == ("gpu", True, 300)
    qp = json.loads(run.one("aws:sqs/queuePolicy:QueuePolicy").inputs["policy"])
    assert qp == interruption_queue_policy("arn:aws:sqs:us-east-1:123456789012:gpu-karpenter-interruption")
    rules = {r.name: json.loads(r.inputs["eventPattern"]) for r in run.of_type("aws:cloudwatch/eventRule:EventRule")}
    assert rules == {f"gpu-karpenter-{k}": v for k, v in INTERRUPTION_EVENTS.items()}
    detail_types = {p["detail-type"][0] for p in rules.values()}
    assert detail_types == {
        "EC2 Spot Instance Interruption Warning",
        "EC2 Instance Rebalance Recommendation",
        "EC2 Instance State-change Notification",
        "AWS Health Event",
    }
    targets = run.of_type("aws:cloudwatch/eventTarget:EventTarget")
    assert len(targets) == 4
    assert {t.inputs["arn"] for t in targets} == {"arn:aws:sqs:us-east-1:123456789012:gpu-karpenter-interruption"}


def test_admin_access_entries():
    run, _ = build(admin_principal_arns=["arn:aws:iam::123456789012:role/platform-admin"])
    entries = run.one("eks:index:Cluster").inputs["accessEntries"]
    assert entries == {
        "admin-0": {
            "principalArn": "arn:aws:iam::123456789012:role/platform-admin",
            "accessPolicies": {
                "cluster-admin": {
                    "policyArn": "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy",
                    "accessScope": {"type": "cluster"},
                }
            },
        }
    }


def test_component_contract(prod):
    run, cluster = prod
    import pulumi_eks
    import pulumi_kubernetes

    comp = run.one("vllm-fleet:index:GpuCluster")
    assert comp.inputs == {
        "platform": "eks",
        "environment": "prod",
        "cluster_name": "gpu",
        "kubernetes_version": "1.34",
        "availability_zones": 3,
        "endpoint_public_access": False,
        "karpenter": True,
        "keda": True,
        "leader_worker_set": True,
        "aws_load_balancer_controller": True,
        "dcgm_exporter": False,
        "prometheus_stack": True,
        "crd_prerequisites": [],
    }
    assert (cluster.platform, cluster.environment, cluster.ecs) == ("eks", "prod", None)
    assert isinstance(cluster.eks_cluster, pulumi_eks.Cluster)
    assert isinstance(cluster.k8s_provider, pulumi_kubernetes.Provider)
    assert isinstance(cluster.cluster_name, pulumi.Output)
    assert cluster.subnet_ids == cluster.network.private_subnet_ids
    # every resource hangs under the component
    urns = {comp.urn}
    for r in run.resources:
        if r.parent in urns:
            urns.add(r.urn)
    assert len(urns) == len(run.resources)


def test_ecs_branch_builds_no_eks():
    run, cluster = build(platform="ecs", ecs={"certificate_arn": "arn:aws:acm:us-east-1:123456789012:certificate/0"})
    assert not run.of_type("eks:index:Cluster") and not run.of_type(RELEASE)
    assert run.one("aws:ecs/cluster:Cluster")
    assert cluster.ecs is not None and cluster.k8s_provider is None


# ----- AWS Load Balancer Controller -------------------------------------------------------------------------

LBC_POLICY = load_balancer_controller_policy(partition="aws")
OWNER_REQUEST = "aws:RequestTag/elbv2.k8s.aws/cluster"
OWNER_RESOURCE = "aws:ResourceTag/elbv2.k8s.aws/cluster"


def _actions(statement: dict) -> list[str]:
    return [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]


def test_lb_controller_chart_pin():
    pin = CHARTS["aws-load-balancer-controller"]
    # chart 1.17.1 = controller v2.17.1, whose published IAM policy load_balancer_controller_policy follows
    assert (pin.chart, pin.version, pin.repo, pin.namespace) == (
        "aws-load-balancer-controller", "1.17.1", "https://aws.github.io/eks-charts", "kube-system"
    )


def test_lb_controller_policy_writes_are_scoped_to_what_the_controller_tagged():
    st = _statements(LBC_POLICY)
    assert len(st) == len(LBC_POLICY["Statement"])  # statement ids are unique
    for sid in ("ManageOwnedSecurityGroups", "ManageOwnedLoadBalancers"):
        assert st[sid]["Condition"] == {"Null": {OWNER_RESOURCE: "false"}}, sid
    assert "elasticloadbalancing:DeleteLoadBalancer" in _actions(st["ManageOwnedLoadBalancers"])
    assert "ec2:DeleteSecurityGroup" in _actions(st["ManageOwnedSecurityGroups"])
    # create only with the owner tag in the request; retag only without touching the owner tag
    assert st["CreateOwnedLoadBalancers"]["Condition"] == {"Null": {OWNER_REQUEST: "false"}}
    for sid in ("RetagOwnedSecurityGroups", "RetagOwnedLoadBalancers"):
        assert st[sid]["Condition"] == {"Null": {OWNER_REQUEST: "true", OWNER_RESOURCE: "false"}}, sid
    assert st["TagSecurityGroupsOnCreate"]["Condition"]["StringEquals"] == {"ec2:CreateAction": "CreateSecurityGroup"}
    assert st["TagLoadBalancersOnCreate"]["Condition"]["StringEquals"] == {
        "elasticloadbalancing:CreateAction": ["CreateTargetGroup", "CreateLoadBalancer"]
    }
    assert st["CreateElbServiceLinkedRole"]["Condition"] == {
        "StringEquals": {"iam:AWSServiceName": "elasticloadbalancing.amazonaws.com"}
    }


def test_lb_controller_policy_allows_what_a_target_group_binding_needs():
    """Our target groups are created by Pulumi (no controller tag): registering targets and opening the nodes'
    security group must not depend on the owner tag."""
    st = _statements(LBC_POLICY)
    assert st["RegisterTargets"] == {
        "Sid": "RegisterTargets",
        "Effect": "Allow",
        "Action": ["elasticloadbalancing:RegisterTargets", "elasticloadbalancing:DeregisterTargets"],
        "Resource": "arn:aws:elasticloadbalancing:*:*:targetgroup/*/*",
    }
    assert "Condition" not in st["SecurityGroupIngressRules"]
    assert _actions(st["SecurityGroupIngressRules"]) == ["ec2:AuthorizeSecurityGroupIngress", "ec2:RevokeSecurityGroupIngress"]
    reads = set(_actions(st["ReadNetworkAndLoadBalancers"]))
    assert {"elasticloadbalancing:DescribeTargetGroups", "elasticloadbalancing:DescribeTargetHealth", "ec2:DescribeNetworkInterfaces",
            "ec2:DescribeSecurityGroups", "ec2:DescribeInstances"} <= reads
    assert all(a.split(":")[1].startswith(("Describe", "Get")) for a in reads)


def test_lb_controller_policy_unconditioned_writes():
    """The writes on any resource without a condition are exactly the published ones (listeners, rules,
    security-group ingress, WAF/Shield associations, security-group creation)."""
    unconditioned = {
        a for s in LBC_POLICY["Statement"] if "Condition" not in s for a in _actions(s)
        if not a.split(":")[1].startswith(("Describe", "Get", "List"))
    }
    assert unconditioned == {
        "ec2:AuthorizeSecurityGroupIngress", "ec2:RevokeSecurityGroupIngress", "ec2:CreateSecurityGroup",
        "elasticloadbalancing:CreateListener", "elasticloadbalancing:DeleteListener", "elasticloadbalancing:CreateRule",
        "elasticloadbalancing:DeleteRule", "elasticloadbalancing:AddTags", "elasticloadbalancing:RemoveTags",
        "elasticloadbalancing:RegisterTargets", "elasticloadbalancing:DeregisterTargets", "elasticloadbalancing:SetWebAcl",
        "elasticloadbalancing:ModifyListener", "elasticloadbalancing:AddListenerCertificates",
        "elasticloadbalancing:RemoveListenerCertificates", "elasticloadbalancing:ModifyRule",
        "elasticloadbalancing:SetRulePriorities", "waf-regional:AssociateWebACL", "waf-regional:DisassociateWebACL",
        "wafv2:AssociateWebACL", "wafv2:DisassociateWebACL", "shield:CreateProtection", "shield:DeleteProtection",
    }
    # unconditioned tagging is limited to listeners and rules
    tagging = _statements(LBC_POLICY)["TagListenersAndRules"]
    assert all(":listener" in r for r in tagging["Resource"])
    assert not any(a.endswith(":*") for s in LBC_POLICY["Statement"] for a in _actions(s))


@pytest.mark.parametrize("partition", ["aws", "aws-cn", "aws-us-gov"])
def test_lb_controller_policy_follows_the_partition(partition):
    text = json.dumps(load_balancer_controller_policy(partition=partition))
    arns = [w for w in text.replace('"', " ").split() if w.startswith("arn:")]
    assert arns and all(a.startswith(f"arn:{partition}:") for a in arns)


def test_lb_controller_values():
    values = load_balancer_controller_values("gpu", "eu-west-1", "vpc-1")
    assert values == {
        "clusterName": "gpu",
        "region": "eu-west-1",
        "vpcId": "vpc-1",
        "serviceAccount": {"create": True, "name": "aws-load-balancer-controller"},
        "replicaCount": 2,
        "podDisruptionBudget": {"maxUnavailable": 1},
        "nodeSelector": {"vllm-fleet/role": "system"},
    }


def test_lb_controller_release(prod):
    run, cluster = prod
    rel = run.one(RELEASE, "gpu-aws-load-balancer-controller")
    assert (rel.inputs["chart"], rel.inputs["version"], rel.inputs["namespace"]) == (
        "aws-load-balancer-controller", "1.17.1", "kube-system"
    )
    assert rel.inputs["repositoryOpts"] == {"repo": "https://aws.github.io/eks-charts"}
    assert rel.inputs["values"] == load_balancer_controller_values("gpu", "us-east-1", "gpu-vpc-id")
    assert rel.inputs["createNamespace"] is False  # kube-system exists
    # it starts only once its IAM role is associated and the Pod Identity agent runs
    assoc = run.one(POD_IDENTITY, "gpu-lb-controller-pod-identity")
    agent = run.one("aws:eks/addon:Addon", "gpu-pod-identity-agent")
    assert {assoc.urn, agent.urn} <= set(rel.dependencies)
    assert cluster.addons["aws-load-balancer-controller"] is not None


def test_lb_controller_through_pod_identity(prod):
    run, _ = prod
    role = run.one("aws:iam/role:Role", "gpu-lb-controller").inputs
    assert json.loads(role["assumeRolePolicy"])["Statement"] == [
        {"Effect": "Allow", "Principal": {"Service": "pods.eks.amazonaws.com"}, "Action": ["sts:AssumeRole", "sts:TagSession"]}
    ]
    assert run.one(POD_IDENTITY, "gpu-lb-controller-pod-identity").inputs == {
        "clusterName": "gpu",
        "namespace": "kube-system",
        "serviceAccount": "aws-load-balancer-controller",
        "roleArn": "arn:aws:iam:us-east-1:123456789012:gpu-lb-controller",
    }
    policy = run.one("aws:iam/rolePolicy:RolePolicy", "gpu-lb-controller-policy").inputs
    assert policy["role"] == "gpu-lb-controller-id"
    assert json.loads(policy["policy"]) == LBC_POLICY


def test_no_lb_controller():
    run, cluster = build(aws_load_balancer_controller=False)
    assert "aws-load-balancer-controller" not in {r.inputs["name"] for r in run.of_type(RELEASE)}
    assert not [r for r in run.of_type("aws:iam/role:Role") if r.name == "gpu-lb-controller"]
    assert cluster.lb_controller is None and "aws-load-balancer-controller" not in cluster.addons
    assert run.one("vllm-fleet:index:GpuCluster").inputs["aws_load_balancer_controller"] is False


def test_cluster_in_another_region_configures_its_controllers_for_that_region():
    """A multi-region program builds each region's cluster with that region's provider: the controller's region
    value and Karpenter's policy follow the provider, not aws:region."""
    import pulumi_aws as aws

    def program():
        provider = aws.Provider("eu", region="eu-west-1")
        GpuCluster("gpu", GpuClusterArgs(), opts=pulumi.ResourceOptions(providers={"aws": provider}))

    run = run_offline(program, region="us-east-1")
    assert run.one(RELEASE, "gpu-aws-load-balancer-controller").inputs["values"]["region"] == "eu-west-1"
    policy = json.loads(run.one("aws:iam/rolePolicy:RolePolicy", "gpu-karpenter-controller-policy").inputs["policy"])
    reads = _statements(policy)["AllowRegionalReadActions"]
    assert reads["Condition"] == {"StringEquals": {"aws:RequestedRegion": "eu-west-1"}}
