"""Every custom resource the stack renders has its CRD installed by the same stack, or declared as a prerequisite.

Mocks accept any `kind`; the API server answers "no matches for kind ServiceMonitor in version
monitoring.coreos.com/v1" when nothing installed the CRD, and it does so mid-`pulumi up` when the installer
runs after the custom resource. So, for every resource whose Pulumi type names a non built-in API group
(`kubernetes:<group>/<version>:<Kind>`: `k8s.apiextensions.CustomResource` and typed CRD classes alike):

- an installer of that group is in the stack: a Helm release (`kubernetes:helm.sh/v3:Release`, or a v4 Chart)
  of the chart `components.eks_addons.CRD_GROUPS` maps the group to, or a CustomResourceDefinition of that
  group; and the custom resource waits for it: it, or one of its ancestors, depends on the installer (or on a
  component that holds it), so Pulumi creates the CRD first;
- or a GpuCluster of the stack declares the group installed outside the stack (`crd_prerequisites` prop,
  e.g. a bring-your-own Prometheus Operator): `prerequisites` lists those for preview to print.

Otherwise one finding per kind: the kind, its group and what would install it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from components.eks_addons import CHARTS, CRD_GROUPS
from policies import resource_views as rv

HELM_RELEASE = "kubernetes:helm.sh/v3:Release"
HELM_CHART_V4 = "kubernetes:helm.sh/v4:Chart"
CRD_TYPE = "kubernetes:apiextensions.k8s.io/v1:CustomResourceDefinition"

# API groups the Kubernetes API server serves itself (kubernetes.io/docs/reference/kubernetes-api, v1.34), plus
# pulumi-kubernetes' own pseudo-modules (helm.sh, yaml, kustomize), which are not Kubernetes kinds at all.
BUILT_IN_GROUPS = frozenset(
    {
        "core", "apps", "batch", "autoscaling", "policy",
        "admissionregistration.k8s.io", "apiextensions.k8s.io", "apiregistration.k8s.io", "authentication.k8s.io",
        "authorization.k8s.io", "certificates.k8s.io", "coordination.k8s.io", "discovery.k8s.io", "events.k8s.io",
        "flowcontrol.apiserver.k8s.io", "internal.apiserver.k8s.io", "networking.k8s.io", "node.k8s.io",
        "rbac.authorization.k8s.io", "resource.k8s.io", "scheduling.k8s.io", "storage.k8s.io",
        "storagemigration.k8s.io",
        "helm.sh", "yaml", "kustomize",
    }
)


def api_group(resource_type: str) -> tuple[str, str] | None:
    """(group, kind) of a Kubernetes custom resource's Pulumi type; None for built-in kinds and other providers."""
    provider, _, rest = resource_type.partition(":")
    if provider != "kubernetes" or ":" not in rest:
        return None
    module, _, kind = rest.partition(":")
    group = module.rsplit("/", 1)[0] if "/" in module else "core"
    if group in BUILT_IN_GROUPS:
        return None
    return group, kind


def chart_basename(chart: object) -> str:
    """`oci://public.ecr.aws/karpenter/karpenter` and `eks/aws-load-balancer-controller` -> the chart's own name."""
    return str(chart or "").rstrip("/").rsplit("/", 1)[-1]


def installer_label(group: str) -> str:
    key = CRD_GROUPS.get(group)
    if key is None:
        return f"a CustomResourceDefinition of {group} (no known chart installs it)"
    pin = CHARTS[key]
    return f"the {chart_basename(pin.chart)} chart {pin.version}"


def _installers(resources: Sequence[rv.Resource]) -> dict[str, list[str]]:
    """group -> URNs of the stack's resources that install its CRDs."""
    by_chart: dict[str, list[str]] = {}
    for group, key in CRD_GROUPS.items():
        by_chart.setdefault(chart_basename(CHARTS[key].chart), []).append(group)
    found: dict[str, list[str]] = {}
    for r in resources:
        if r.type in (HELM_RELEASE, HELM_CHART_V4):
            for group in by_chart.get(chart_basename(rv.scalar(r.props.get("chart"))), []):
                found.setdefault(group, []).append(r.urn)
        elif r.type == CRD_TYPE:
            spec = r.props.get("spec")
            group = rv.scalar(spec.get("group")) if isinstance(spec, Mapping) else None
            if isinstance(group, str):
                found.setdefault(group, []).append(r.urn)
    return found


def prerequisites(resources: Iterable[rv.Resource]) -> set[str]:
    """API groups a GpuCluster declares installed outside the stack."""
    declared: set[str] = set()
    for r in resources:
        if r.type == rv.GPU_CLUSTER:
            groups = r.props.get("crd_prerequisites")
            if isinstance(groups, Sequence) and not isinstance(groups, str):
                declared.update(str(g) for g in groups)
    return declared


def _waits_for(resource: rv.Resource, installers: list[str], by_urn: Mapping[str, rv.Resource]) -> bool:
    """The resource, or an ancestor, depends on an installer or on a component holding one."""
    def holds(dep: str, installer: str) -> bool:
        node = by_urn.get(installer)
        while node is not None:
            if node.urn == dep:
                return True
            node = by_urn.get(node.parent) if node.parent else None
        return False

    node: rv.Resource | None = resource
    while node is not None:
        if any(holds(dep, inst) for dep in node.dependencies for inst in installers):
            return True
        node = by_urn.get(node.parent) if node.parent else None
    return False


def check(resources: Iterable[rv.Resource]) -> list[rv.Finding]:
    resources = list(resources)
    by_urn = {r.urn: r for r in resources}
    installers = _installers(resources)
    declared = prerequisites(resources)
    findings: list[rv.Finding] = []
    reported: set[tuple[str, str, str]] = set()
    for r in resources:
        parsed = api_group(r.type)
        if parsed is None:
            continue
        group, kind = parsed
        if group in declared:
            continue
        found = installers.get(group, [])
        if not found:
            problem = "nothing in this stack installs its CRD"
            fix = f"install {installer_label(group)} in the stack and depend on it, or declare {group} a prerequisite"
        elif not _waits_for(r, found, by_urn):
            problem = "does not depend on the release that installs its CRD"
            fix = f"add depends_on {installer_label(group)} release (or its component)"
        else:
            continue
        if (kind, group, problem) in reported:
            continue
        reported.add((kind, group, problem))
        findings.append(rv.Finding(r.urn, f"{kind} ({group}) {r.name!r}: {problem}; {fix}"))
    return findings


def declared_prerequisites(resources: Iterable[rv.Resource]) -> list[rv.Finding]:
    """The advisory list preview prints: CRD groups the stack relies on but does not install."""
    resources = list(resources)
    declared = prerequisites(resources)
    used = {g for g, _ in filter(None, (api_group(r.type) for r in resources))}
    return [
        rv.Finding("", f"prerequisite: the {group} CRDs must already be in the cluster (declared; {installer_label(group)} installs them)")
        for group in sorted(declared & used)
    ]
