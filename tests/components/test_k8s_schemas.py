"""Every Kubernetes object a VllmService creates, rendered to YAML, against the real schemas: core kinds with
kubernetes-validate (strict: unknown fields fail) at the cluster's Kubernetes version, custom resources
(KEDA, LeaderWorkerSet, ServiceMonitor, and the pool's Karpenter objects) with validate_crs.py against the
upstream CRDs; then checkov over the rendered workload. Also stacks/render_k8s.py's own rules.

The AWS Load Balancer Controller's TargetGroupBinding is checked against its upstream CRD and, so that the check
also runs where the upstream CRDs are absent, against the field names and types the controller documents (TGB_SPEC
below). The CRD checks skip, with the reason in the summary, where the upstream texts are absent (tests/conftest.py)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from components import vllm_service
from components.gpu_cluster import GpuClusterArgs
from stacks.offline import RecordedResource
from stacks.render_k8s import is_manifest, kubernetes_manifests, to_manifest
from test_vllm_service import ENGINES, build_service, service_resources

K8S_VERSION = f"{GpuClusterArgs().kubernetes_version}.0"  # the EKS version the cluster runs
CORE_KINDS = {"Namespace", "ServiceAccount", "Service", "PodDisruptionBudget", "NetworkPolicy", "Deployment", "HorizontalPodAutoscaler",
              "Secret"}

CASES = {
    "deployment": (ENGINES["llama-8b"], ["g5.xlarge"], {}),
    "lora-api-key-value": (ENGINES["llama-8b"], ["g6e.xlarge"], {"lora": "store", "api_key_secret": None, "api_key_value": "k"}),
    "leader-worker-set": (ENGINES["llama-405b"], ["p5.48xlarge"], {"min_replicas": 2}),
    "hpa": (ENGINES["llama-8b"], ["g6.xlarge"], {"autoscaling": "hpa"}),
    "load-balanced": (ENGINES["llama-8b"], ["g5.xlarge"], {"endpoint": {"domain": "llm.example.com", "hosted_zone_id": "Z0123"}}),
}


def _lora():
    from components.lora_store import LoraStoreArgs, lora_serving

    return lora_serving(
        LoraStoreArgs(base_model="meta-llama/Llama-3.1-8B-Instruct"),
        bucket="adapters", region="us-east-1", read_policy_arn="arn:aws:iam::123456789012:policy/lora-read",
    )


def service_manifests(case: str) -> list[dict]:
    engine, types, extra = CASES[case]
    extra = {**extra, "lora": _lora()} if extra.get("lora") == "store" else extra
    run, _ = build_service(engine, types, **extra)
    ours = {r.urn for r in service_resources(run)}
    return [to_manifest(r) for r in run.resources if r.urn in ours and is_manifest(r)]


# ----- render_k8s ------------------------------------------------------------------------------------------


def _rec(type_: str, inputs: dict, name: str = "x") -> RecordedResource:
    return RecordedResource(type=type_, name=name, urn=f"urn:{name}", parent=None, custom=True, provider=None, inputs=inputs)


@pytest.mark.parametrize(
    "type_, api_version, kind",
    [
        ("kubernetes:core/v1:Service", "v1", "Service"),
        ("kubernetes:apps/v1:Deployment", "apps/v1", "Deployment"),
        ("kubernetes:networking.k8s.io/v1:NetworkPolicy", "networking.k8s.io/v1", "NetworkPolicy"),
        ("kubernetes:keda.sh/v1alpha1:ScaledObject", "keda.sh/v1alpha1", "ScaledObject"),
    ],
)
def test_api_version_from_the_type(type_, api_version, kind):
    m = to_manifest(_rec(type_, {"metadata": {"name": "a"}, "spec": {"replicas": 2.0, "ratio": 0.5, "x": None}}))
    assert list(m)[:3] == ["apiVersion", "kind", "metadata"]
    assert (m["apiVersion"], m["kind"]) == (api_version, kind)
    assert m["spec"] == {"replicas": 2, "ratio": 0.5}  # whole floats back to ints, nulls dropped
    assert isinstance(m["spec"]["replicas"], int)


def test_helm_releases_and_providers_are_not_manifests():
    assert not is_manifest(_rec("kubernetes:helm.sh/v3:Release", {"chart": "keda"}))
    assert not is_manifest(_rec("pulumi:providers:kubernetes", {}))
    assert not is_manifest(_rec("aws:iam/role:Role", {}))
    assert is_manifest(_rec("kubernetes:karpenter.sh/v1:NodePool", {}))


def test_secret_values_are_redacted():
    wrapped = _rec("kubernetes:core/v1:Secret", {"metadata": {"name": "k"}, "stringData": {"secret": {"api-key": "hunter2"}}})
    plain = _rec("kubernetes:core/v1:Secret", {"metadata": {"name": "k"}, "data": {"api-key": "aHVudGVyMg=="}})
    assert to_manifest(wrapped)["stringData"] == {"api-key": "REDACTED"}
    assert to_manifest(plain)["data"] == {"api-key": "UkVEQUNURUQ="}
    kubernetes_validate.validate(to_manifest(wrapped), K8S_VERSION, strict=True)
    kubernetes_validate.validate(to_manifest(plain), K8S_VERSION, strict=True)


def test_whole_run_renders_without_helm():
    engine, types, extra = CASES["deployment"]
    run, _ = build_service(engine, types, **extra)
    kinds = [m["kind"] for m in kubernetes_manifests(run)]
    assert sorted(kinds) == sorted(
        ["Namespace", "ServiceAccount", "Deployment", "Service", "PodDisruptionBudget", "ScaledObject", "ServiceMonitor",
         "NetworkPolicy", "NodePool", "EC2NodeClass"]
    )
    assert run.of_type("kubernetes:helm.sh/v3:Release")  # there were releases, and they were skipped


# ----- schemas ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
def test_core_objects_pass_kubernetes_schemas(case):
    docs = [m for m in service_manifests(case) if m["kind"] in CORE_KINDS]
    expected = {"Namespace", "ServiceAccount", "Service", "PodDisruptionBudget", "NetworkPolicy"}
    expected |= {"Deployment"} if case != "leader-worker-set" else set()
    expected |= {"HorizontalPodAutoscaler"} if case == "hpa" else set()
    expected |= {"Secret"} if case == "lora-api-key-value" else set()
    assert {d["kind"] for d in docs} == expected
    for doc in docs:
        # through YAML, as kubectl would read it
        kubernetes_validate.validate(yaml.safe_load(yaml.safe_dump(doc)), K8S_VERSION, strict=True)


@pytest.mark.parametrize("case", sorted(CASES))
def test_custom_resources_pass_the_crds(case, tmp_path, validate_crs):
    docs = [m for m in service_manifests(case) if m["kind"] not in CORE_KINDS]
    kinds = sorted(d["kind"] for d in docs)
    expected = {"deployment": ["ScaledObject", "ServiceMonitor"], "leader-worker-set": ["LeaderWorkerSet", "ScaledObject", "ServiceMonitor"],
                "hpa": ["ServiceMonitor"], "lora-api-key-value": ["ScaledObject", "ServiceMonitor"],
                "load-balanced": ["ScaledObject", "ServiceMonitor", "TargetGroupBinding"]}[case]
    assert kinds == expected
    path = tmp_path / f"{case}.yaml"
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    out = validate_crs(path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"{len(docs)} validated" in out.stdout and "0 error(s)" in out.stdout


def test_validators_are_strict(tmp_path, validate_crs):
    """Negative controls: an unknown field fails both validators, so the passes above mean something."""
    docs = service_manifests("leader-worker-set")
    svc = next(d for d in docs if d["kind"] == "Service")
    svc["spec"]["clusterIp"] = "None"  # wrong case: the field is clusterIP
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(svc, K8S_VERSION, strict=True)
    lws = next(d for d in docs if d["kind"] == "LeaderWorkerSet")
    lws["spec"]["leaderWorkerTemplate"]["groupSize"] = 2
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(lws))
    out = validate_crs(path)
    assert out.returncode == 1 and "groupSize" in out.stdout


# ----- TargetGroupBinding, against the controller's documentation -----------------------------------------

# The fields of elbv2.k8s.aws/v1beta1 TargetGroupBinding as the AWS Load Balancer Controller documents them:
# docs/guide/targetgroupbinding/spec.md (the generated API reference: targetGroupARN, targetType, serviceRef{name,
# port}, networking.ingress[]{from[]{ipBlock{cidr} | securityGroup{groupID}}, ports[]{protocol, port}}) and
# docs/guide/targetgroupbinding/targetgroupbinding.md (targetGroupName, vpcID, nodeSelector, multiClusterTargetGroup,
# iamRoleArnToAssume, assumeRoleExternalId), kubernetes-sigs/aws-load-balancer-controller. A dict is a nested object,
# a one-item list a list of that shape, a tuple the allowed scalar types, a set the allowed values.
INT_OR_STRING = (int, str)
PEER = {"ipBlock": {"cidr": (str,)}, "securityGroup": {"groupID": (str,)}}
TGB_SPEC = {
    "targetGroupARN": (str,),
    "targetGroupName": (str,),
    "targetType": {"instance", "ip"},
    "serviceRef": {"name": (str,), "port": INT_OR_STRING},
    "networking": {"ingress": [{"from": [PEER], "ports": [{"protocol": (str,), "port": INT_OR_STRING}]}]},
    "vpcID": (str,),
    "nodeSelector": (dict,),
    "multiClusterTargetGroup": (bool,),
    "iamRoleArnToAssume": (str,),
    "assumeRoleExternalId": (str,),
}


def shape_errors(value, schema, path: str = "spec") -> list[str]:
    if isinstance(schema, tuple):
        # bool is an int in Python, not in JSON: a bool passes only where bool is allowed
        ok = isinstance(value, bool) if bool in schema else isinstance(value, schema) and not isinstance(value, bool)
        return [] if ok else [f"{path}: {type(value).__name__} is not {'/'.join(t.__name__ for t in schema)}"]
    if isinstance(schema, set):
        return [] if value in schema else [f"{path}: {value!r} not in {sorted(schema)}"]
    if isinstance(schema, list):
        if not isinstance(value, list):
            return [f"{path}: not a list"]
        return [e for i, item in enumerate(value) for e in shape_errors(item, schema[0], f"{path}[{i}]")]
    if not isinstance(value, dict):
        return [f"{path}: not an object"]
    errors = [f"{path}.{key}: not a documented field" for key in value if key not in schema]
    return errors + [e for key, item in value.items() if key in schema for e in shape_errors(item, schema[key], f"{path}.{key}")]


def tgb_errors(doc: dict) -> list[str]:
    errors = []
    if (doc["apiVersion"], doc["kind"]) != ("elbv2.k8s.aws/v1beta1", "TargetGroupBinding"):
        errors.append(f"{doc['apiVersion']} {doc['kind']}")
    spec = doc.get("spec", {})
    errors += shape_errors(spec, TGB_SPEC)
    # required: the Service and its port, and the target group (by ARN or by name)
    if not {"name", "port"} <= set(spec.get("serviceRef", {})):
        errors.append("spec.serviceRef: name and port are required")
    if not ({"targetGroupARN", "targetGroupName"} & set(spec)):
        errors.append("spec: targetGroupARN or targetGroupName is required")
    # a networking peer is an ipBlock or a securityGroup, never both
    for rule in spec.get("networking", {}).get("ingress", []):
        errors += [f"spec.networking peer {p}: exactly one of ipBlock, securityGroup" for p in rule.get("from", []) if len(p) != 1]
        if not rule.get("from"):
            errors.append("spec.networking.ingress: from needs at least one peer")
    return errors


def test_target_group_binding_matches_the_controller_docs():
    docs = [m for m in service_manifests("load-balanced") if m["kind"] == "TargetGroupBinding"]
    assert len(docs) == 1
    doc = yaml.safe_load(yaml.safe_dump(docs[0]))  # through YAML, as kubectl would read it
    assert tgb_errors(doc) == []
    assert doc["spec"]["targetType"] == "ip" and doc["spec"]["networking"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 8000}]
    assert doc["metadata"] == {k: doc["metadata"][k] for k in ("name", "namespace", "labels", "annotations")}


@pytest.mark.parametrize(
    "change, error",
    [
        (lambda s: s.update(targetGroupArn=s.pop("targetGroupARN")), "spec.targetGroupArn: not a documented field"),
        (lambda s: s.update(targetType="pod"), "spec.targetType: 'pod' not in ['instance', 'ip']"),
        (lambda s: s["serviceRef"].pop("port"), "spec.serviceRef: name and port are required"),
        (lambda s: s["networking"]["ingress"][0]["from"][0].update(ipBlock={"cidr": "10.0.0.0/16"}),
         "exactly one of ipBlock, securityGroup"),
        (lambda s: s["networking"]["ingress"][0]["from"][0]["securityGroup"].update(groupId="sg-1"),
         "spec.networking.ingress[0].from[0].securityGroup.groupId: not a documented field"),
        (lambda s: s.update(vpcId="vpc-1"), "spec.vpcId: not a documented field"),
        (lambda s: s["serviceRef"].update(port=True), "spec.serviceRef.port: bool is not int/str"),
    ],
)
def test_target_group_binding_check_is_strict(change, error):
    """Negative controls: a misspelt or missing field fails the documentation check."""
    doc = next(m for m in service_manifests("load-balanced") if m["kind"] == "TargetGroupBinding")
    change(doc["spec"])
    assert any(error in e for e in tgb_errors(doc)), tgb_errors(doc)


# ----- checkov ---------------------------------------------------------------------------------------------


def _checkov() -> str | None:
    """checkov lives in its own virtualenv (scripts/test makes it and sets CHECKOV_BIN): its pins would
    downgrade pulumi and boto3 in ours. In CI it must be there: a missing checkov fails instead of skipping."""
    explicit = os.environ.get("CHECKOV_BIN")
    if explicit:
        return explicit
    beside = Path(sys.executable).parent / "checkov"
    found = str(beside) if beside.exists() else shutil.which("checkov")
    if found is None and os.environ.get("CI"):
        pytest.fail("CI=true but checkov is not installed (scripts/test installs it and sets CHECKOV_BIN)")
    return found


@pytest.mark.skipif(_checkov() is None, reason="checkov is not installed (pip install checkov)")
@pytest.mark.parametrize("case", ["deployment", "lora-api-key-value"])  # the second adds the lora-sync sidecar
def test_checkov_on_the_rendered_workload(tmp_path, case):
    docs = [m for m in service_manifests(case) if m["kind"] in ("Deployment", "Service", "NetworkPolicy")]
    assert len(docs) == 3
    for doc in docs:
        (tmp_path / f"{doc['kind'].lower()}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    out = subprocess.run(
        [_checkov(), "-d", str(tmp_path), "--framework", "kubernetes", "-o", "json", "--quiet", "--skip-download"],
        capture_output=True, text=True, check=False, timeout=300,
    )
    assert out.returncode in (0, 1), out.stderr[-2000:]
    report = json.loads(out.stdout)
    reports = report if isinstance(report, list) else [report]
    failed = [c for r in reports for c in r["results"]["failed_checks"]]
    passed = sum(r["summary"]["passed"] for r in reports)
    assert passed > 50  # checkov really ran the Kubernetes checks
    ids = sorted(c["check_id"] for c in failed)
    assert len(ids) <= 2, ids
    assert set(ids) <= set(vllm_service.CHECKOV_ACCEPTED), ids
    # each accepted finding is justified next to the setting it is about
    source = Path(vllm_service.__file__).read_text()
    for check in ids:
        assert re.search(rf"# checkov {check}\b", source), check
