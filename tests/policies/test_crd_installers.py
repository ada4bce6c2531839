"""policies/rules/crd_installers.py: every rendered custom resource has its CRD installer in the stack (and waits
for it) or is a declared prerequisite; hand-built resource lists first, then the real stacks offline."""

from __future__ import annotations

import dataclasses

import pytest

from components.eks_addons import CHARTS, CRD_GROUPS
from policies.pack import POLICIES, run_policies
from policies.rules import crd_installers
from tests.policies.policy_builders import res

RELEASE = "kubernetes:helm.sh/v3:Release"
SERVICE_MONITOR = "kubernetes:monitoring.coreos.com/v1:ServiceMonitor"
NODE_POOL = "kubernetes:karpenter.sh/v1:NodePool"


def release(key: str, name: str | None = None):
    pin = CHARTS[key]
    return res(RELEASE, name or f"c-{key}", {"chart": pin.chart, "version": pin.version, "name": key})


def cr(type_: str, name: str, *, depends=(), parent=None):
    return dataclasses.replace(res(type_, name, {"metadata": {"name": name}}, parent=parent), dependencies=tuple(depends))


@pytest.mark.parametrize(
    "type_, expected",
    [
        (SERVICE_MONITOR, ("monitoring.coreos.com", "ServiceMonitor")),
        ("kubernetes:karpenter.k8s.aws/v1:EC2NodeClass", ("karpenter.k8s.aws", "EC2NodeClass")),
        ("kubernetes:gateway.networking.k8s.io/v1:HTTPRoute", ("gateway.networking.k8s.io", "HTTPRoute")),
        ("kubernetes:apps/v1:Deployment", None),
        ("kubernetes:core/v1:Secret", None),
        ("kubernetes:networking.k8s.io/v1:NetworkPolicy", None),
        ("kubernetes:helm.sh/v3:Release", None),
        ("aws:ecs/service:Service", None),
        ("vllm-fleet:index:VllmService", None),
    ],
)
def test_api_group_of_a_type(type_, expected):
    assert crd_installers.api_group(type_) == expected


def test_the_table_names_pinned_charts():
    assert set(CRD_GROUPS.values()) <= set(CHARTS)
    assert CRD_GROUPS["monitoring.coreos.com"] == "kube-prometheus-stack"
    assert CHARTS["kube-prometheus-stack"].version == "88.5.3"


def test_service_monitor_without_an_installer_is_refused():
    findings = crd_installers.check([cr(SERVICE_MONITOR, "llm-service-monitor")])
    assert [f.message for f in findings] == [
        "ServiceMonitor (monitoring.coreos.com) 'llm-service-monitor': nothing in this stack installs its CRD; install "
        "the kube-prometheus-stack chart 88.5.3 in the stack and depend on it, or declare monitoring.coreos.com a prerequisite"
    ]


def test_an_installer_the_resource_does_not_wait_for_is_refused():
    rel = release("karpenter")
    findings = crd_installers.check([rel, cr(NODE_POOL, "gpus")])
    assert [f.message for f in findings] == [
        "NodePool (karpenter.sh) 'gpus': does not depend on the release that installs its CRD; add depends_on the "
        "karpenter chart 1.14.1 release (or its component)"
    ]


def test_direct_dependency_dependency_through_the_parent_or_on_the_installers_component():
    component = res("vllm-fleet:index:GpuCluster", "gpu", {})
    rel = dataclasses.replace(release("karpenter"), parent=component.urn)
    holder = dataclasses.replace(res("vllm-fleet:index:SpotNodePool", "pool", {}), dependencies=(rel.urn,))
    direct = cr(NODE_POOL, "a", depends=[rel.urn])
    via_parent = cr(NODE_POOL, "b", parent=holder.urn)
    via_component = cr(NODE_POOL, "c", depends=[component.urn])
    assert crd_installers.check([component, rel, holder, direct, via_parent, via_component]) == []


def test_a_crd_in_the_stack_installs_its_group():
    crd = res("kubernetes:apiextensions.k8s.io/v1:CustomResourceDefinition", "widgets", {"spec": {"group": "example.com"}})
    assert crd_installers.check([crd, cr("kubernetes:example.com/v1:Widget", "w", depends=[crd.urn])]) == []
    [finding] = crd_installers.check([cr("kubernetes:example.com/v1:Widget", "w")])
    assert "a CustomResourceDefinition of example.com (no known chart installs it)" in finding.message


def test_oci_and_repo_prefixed_chart_names_match():
    rel = res(RELEASE, "lbc", {"chart": "eks/aws-load-balancer-controller"})
    tgb = cr("kubernetes:elbv2.k8s.aws/v1beta1:TargetGroupBinding", "tgb", depends=[rel.urn])
    assert crd_installers.check([rel, tgb]) == []


def test_declared_prerequisite_is_accepted_and_reported():
    cluster = res("vllm-fleet:index:GpuCluster", "gpu", {"crd_prerequisites": ["monitoring.coreos.com"]})
    resources = [cluster, cr(SERVICE_MONITOR, "sm")]
    assert crd_installers.check(resources) == []
    assert [f.message for f in crd_installers.declared_prerequisites(resources)] == [
        "prerequisite: the monitoring.coreos.com CRDs must already be in the cluster (declared; the "
        "kube-prometheus-stack chart 88.5.3 installs them)"
    ]


def test_one_finding_per_kind():
    assert len(crd_installers.check([cr(SERVICE_MONITOR, f"sm-{i}") for i in range(3)])) == 1


def test_registered_in_the_pack():
    names = {p.name: p for p in POLICIES}
    assert names["crd-installers"].enforcement_level.value == "mandatory"
    assert names["crd-prerequisites"].enforcement_level.value == "advisory"
    results = run_policies([cr(SERVICE_MONITOR, "sm")], policies=[names["crd-installers"]])
    assert [(r.policy, r.enforcement_level) for r in results] == [("crd-installers", "mandatory")]
    # Dependencies reach the policy through the pack's PolicyResource objects.
    rel = release("kube-prometheus-stack")
    assert run_policies([rel, cr(SERVICE_MONITOR, "sm", depends=[rel.urn])], policies=[names["crd-installers"]]) == []


# ---- the real stacks ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prod_run():
    from stacks.preview_cli import run_stack

    return run_stack("prod")


def test_prod_renders_custom_resources_all_backed(prod_run):
    from policies.resource_views import Resource

    resources = [Resource.from_record(r) for r in prod_run.run.resources]
    groups = {crd_installers.api_group(r.type) for r in resources} - {None}
    # ServiceMonitor, ScaledObject, NodePool, EC2NodeClass, TargetGroupBinding at least.
    assert {g for g, _ in groups} >= {"monitoring.coreos.com", "keda.sh", "karpenter.sh", "karpenter.k8s.aws", "elbv2.k8s.aws"}
    assert crd_installers.check(resources) == []
    assert not [r for r in prod_run.results if r.policy == "crd-installers"]


def test_prod_without_the_monitoring_release_is_refused(prod_run):
    from policies.resource_views import Resource

    resources = [
        Resource.from_record(r) for r in prod_run.run.resources if not r.name.endswith("-kube-prometheus-stack")
    ]
    messages = [f.message for f in crd_installers.check(resources)]
    assert len(messages) == 1 and messages[0].startswith("ServiceMonitor (monitoring.coreos.com) ")
