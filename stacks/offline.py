"""The offline engine: run a real Pulumi program under Pulumi's mock runtime and record every resource.

This is what `vllm-fleet preview` and `synth` run, and what the component tests use. Nothing here fakes a
resource type: the program builds the real pulumi_aws / pulumi_kubernetes / pulumi_eks classes, and the
monitor records what the engine would receive (type, name, parent, inputs). Provider outputs that only AWS
would know (ids, ARNs, AZ names, AMI ids) come back as plausible placeholders.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable

import pulumi
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc
from pulumi.runtime.proto import resource_pb2
from pulumi.runtime.sync_await import _sync_await

ACCOUNT_ID = "123456789012"


def region_code(region: str) -> str:
    """AWS's own short code of a region, the prefix of its zone ids: us-east-1 -> use1, ap-northeast-1 -> apne1,
    us-gov-west-1 -> usgw1 (docs.aws.amazon.com/ram/latest/userguide/working-with-az-ids.html)."""
    parts = region.split("-")
    geo, middle, number = parts[0], parts[1:-1], parts[-1]
    if "gov" in middle:
        geo, middle = geo + "g", [m for m in middle if m != "gov"]
    direction = ""
    for word in middle:
        for full, short in (("north", "n"), ("south", "s"), ("east", "e"), ("west", "w"), ("central", "c")):
            word = word.replace(full, short)
        direction += word
    return f"{geo}{direction}{number}"


@dataclass
class RecordedResource:
    type: str
    name: str
    urn: str
    parent: str | None
    custom: bool
    provider: str | None
    inputs: dict[str, Any]
    dependencies: list[str] = field(default_factory=list)  # URNs the resource waits for (depends_on, inputs)

    def as_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "name": self.name,
            "urn": self.urn,
            "parent": self.parent,
            "custom": self.custom,
            "inputs": self.inputs,
        }


@dataclass
class OfflineRun:
    resources: list[RecordedResource] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)

    def of_type(self, type_: str) -> list[RecordedResource]:
        return [r for r in self.resources if r.type == type_]

    def one(self, type_: str, name: str | None = None) -> RecordedResource:
        found = [r for r in self.of_type(type_) if name is None or r.name == name]
        if len(found) != 1:
            names = [r.name for r in self.of_type(type_)]
            raise AssertionError(f"expected one {type_} named {name!r}, found {len(found)} among {names}")
        return found[0]

    def named(self, name: str) -> RecordedResource:
        found = [r for r in self.resources if r.name == name]
        if len(found) != 1:
            raise AssertionError(f"expected one resource named {name!r}, found {len(found)}")
        return found[0]

    def children_of(self, urn: str) -> list[RecordedResource]:
        return [r for r in self.resources if r.parent == urn]


class OfflineMocks(pulumi.runtime.Mocks):
    """Answers the engine's questions the way AWS would, shape for shape, with placeholder values."""

    def __init__(self, region: str = "us-east-1"):
        self.region = region
        self.provider_regions: dict[str, str] = {}  # explicit aws provider's id -> its region input

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        state = dict(args.inputs)
        rid = f"{args.name}-id"
        if args.typ == "pulumi:providers:aws" and args.inputs.get("region"):
            self.provider_regions[rid] = str(args.inputs["region"])
        if args.typ.startswith("aws:"):
            service = args.typ.split(":")[1].split("/")[0]
            state.setdefault("arn", f"arn:aws:{service}:{self.region}:{ACCOUNT_ID}:{args.name}")
        extra = _TYPE_OUTPUTS.get(args.typ)
        if extra:
            for key, value in extra(args).items():
                state.setdefault(key, value)
        return rid, state

    def call(self, args: pulumi.runtime.MockCallArgs):
        handler = _CALLS.get(args.token)
        if handler:
            # Every invoke is answered in the region of the provider it went through, as AWS would: an invoke
            # that forgot its parent runs on the default provider (aws:region) and its answer shows it.
            return handler(args.args, self.provider_region(args.provider))
        return {}

    def provider_region(self, provider_ref: str | None) -> str:
        """The region of the explicit provider an invoke went through ("URN::ID"; an invoke with a parent inherits
        the parent's provider), else the mock's default region."""
        if provider_ref:
            return self.provider_regions.get(provider_ref.rsplit("::", 1)[-1], self.region)
        return self.region


def _policy_document(inputs: dict, region: str) -> dict:
    """aws.iam.get_policy_document, computed for real from its statements (so tests can read the JSON)."""
    statements = []
    for st in inputs.get("statements") or []:
        out: dict[str, Any] = {"Effect": st.get("effect", "Allow")}
        if st.get("sid"):
            out["Sid"] = st["sid"]
        if st.get("actions"):
            out["Action"] = st["actions"] if len(st["actions"]) > 1 else st["actions"][0]
        if st.get("resources"):
            out["Resource"] = st["resources"] if len(st["resources"]) > 1 else st["resources"][0]
        for p in st.get("principals") or []:
            out.setdefault("Principal", {})[p["type"]] = p["identifiers"] if len(p["identifiers"]) > 1 else p["identifiers"][0]
        for c in st.get("conditions") or []:
            out.setdefault("Condition", {}).setdefault(c["test"], {})[c["variable"]] = (
                c["values"] if len(c["values"]) > 1 else c["values"][0]
            )
        statements.append(out)
    doc = {"Version": "2012-10-17", "Statement": statements}
    return {"json": json.dumps(doc), "minifiedJson": json.dumps(doc, separators=(",", ":")), "id": "policy"}


def _load_balancer(inputs: dict, region: str) -> dict:
    """aws.lb.get_load_balancer: name from the ARN (arn:...:loadbalancer/app|net/NAME/ID), a DNS name in its region."""
    arn = str(inputs.get("arn") or "")
    parts = arn.split("/")
    name = parts[-2] if len(parts) >= 3 else (inputs.get("name") or "lb")
    return {
        "arn": arn or f"arn:aws:elasticloadbalancing:{region}:{ACCOUNT_ID}:loadbalancer/app/{name}/0123",
        "id": arn,
        "name": name,
        "dnsName": f"{name}-0123.{inputs.get('region') or region}.elb.amazonaws.com",
        "zoneId": "Z35SXDOTRQ7X7K",
        "loadBalancerType": "network" if "/net/" in arn else "application",
    }


_CALLS: dict[str, Callable[[dict, str], dict]] = {
    "aws:index/getAvailabilityZones:getAvailabilityZones": lambda a, r: {
        "names": [f"{r}a", f"{r}b", f"{r}c"],
        "zoneIds": [f"{region_code(r)}-az{i}" for i in (1, 2, 3)],
        "id": r,
    },
    # `r` is the region of the invoke's explicit provider ; an explicit `region` argument wins.
    "aws:index/getRegion:getRegion": lambda a, r: {
        "name": a.get("region") or r,
        "region": a.get("region") or r,
        "id": a.get("region") or r,
        "endpoint": f"ec2.{a.get('region') or r}.amazonaws.com",
    },
    "aws:index/getCallerIdentity:getCallerIdentity": lambda a, r: {
        "accountId": ACCOUNT_ID,
        "arn": f"arn:aws:iam::{ACCOUNT_ID}:user/offline",
        "userId": "AIDAOFFLINE",
        "id": ACCOUNT_ID,
    },
    "aws:index/getPartition:getPartition": lambda a, r: {"partition": "aws", "dnsSuffix": "amazonaws.com", "id": "aws"},
    "aws:iam/getPolicyDocument:getPolicyDocument": _policy_document,
    "aws:ssm/getParameter:getParameter": lambda a, r: {
        "name": a.get("name"),
        "value": "ami-0123456789abcdef0",
        "insecureValue": "ami-0123456789abcdef0",
        "type": "String",
        "arn": f"arn:aws:ssm:{r}:{ACCOUNT_ID}:parameter{a.get('name')}",
        "id": a.get("name"),
        "version": 1,
    },
    # A pinned ECS GPU AMI release is looked up by its exact name (owner amazon); answer with that name.
    "aws:ec2/getAmi:getAmi": lambda a, r: {
        "id": "ami-0fedcba9876543210",
        "imageId": "ami-0fedcba9876543210",
        "name": next((f["values"][0] for f in a.get("filters") or [] if f.get("name") == "name"), "ami"),
        "ownerId": "591542846629",
        "architecture": "x86_64",
        "arn": f"arn:aws:ec2:{r}::image/ami-0fedcba9876543210",
    },
    # A secret looked up by name answers with an ARN in the region of the provider the invoke went through.
    "aws:secretsmanager/getSecret:getSecret": lambda a, r: {
        "name": a.get("name"),
        "arn": f"arn:aws:secretsmanager:{r}:{ACCOUNT_ID}:secret:{a.get('name')}-AbCdEf",
        "id": f"arn:aws:secretsmanager:{r}:{ACCOUNT_ID}:secret:{a.get('name')}-AbCdEf",
    },
    "aws:ec2/getVpc:getVpc": lambda a, r: {"id": a.get("id", "vpc-0offline"), "cidrBlock": "10.0.0.0/16", "arn": "arn:aws:ec2:vpc"},
    "aws:elb/getServiceAccount:getServiceAccount": lambda a, r: {"arn": "arn:aws:iam::127311923021:root", "id": "127311923021"},
    # MultiRegionLB looks a regional load balancer up by ARN (through that region's provider).
    "aws:lb/getLoadBalancer:getLoadBalancer": lambda a, r: _load_balancer(a, r),
}


_TYPE_OUTPUTS: dict[str, Callable[[pulumi.runtime.MockResourceArgs], dict]] = {
    # A placeholder, marked as what it is: the real value is generated by the random provider at deploy time.
    "random:index/randomPassword:RandomPassword": lambda a: {"result": "offline-placeholder-not-a-secret"},
    "aws:lb/loadBalancer:LoadBalancer": lambda a: {"dnsName": f"{a.name}.{ACCOUNT_ID}.elb.amazonaws.com", "zoneId": "Z35SXDOTRQ7X7K", "arnSuffix": f"app/{a.name}/0123"},
    "aws:lb/targetGroup:TargetGroup": lambda a: {"arnSuffix": f"targetgroup/{a.name}/0123"},
    "aws:kms/key:Key": lambda a: {"keyId": f"{a.name}-key-id"},
    "aws:s3/bucket:Bucket": lambda a: {"bucket": a.inputs.get("bucket") or f"{a.name}-bucket", "bucketRegionalDomainName": f"{a.name}.s3.amazonaws.com"},
    "aws:s3/bucketV2:BucketV2": lambda a: {"bucket": a.inputs.get("bucket") or f"{a.name}-bucket"},
    "aws:sqs/queue:Queue": lambda a: {"name": a.inputs.get("name") or a.name, "url": f"https://sqs.amazonaws.com/{ACCOUNT_ID}/{a.name}"},
    "aws:ecs/cluster:Cluster": lambda a: {"name": a.inputs.get("name") or a.name},
    "aws:cloudwatch/logGroup:LogGroup": lambda a: {"name": a.inputs.get("name") or a.name},
    "aws:iam/role:Role": lambda a: {"name": a.inputs.get("name") or a.name},
    "aws:route53/healthCheck:HealthCheck": lambda a: {"id": f"{a.name}-hc"},
    "aws:acm/certificate:Certificate": lambda a: {
        "domainValidationOptions": [
            {
                "domainName": a.inputs.get("domainName"),
                "resourceRecordName": f"_0123abcd.{a.inputs.get('domainName')}.",
                "resourceRecordType": "CNAME",
                "resourceRecordValue": "_4567efgh.acm-validations.aws.",
            }
        ],
        "status": "PENDING_VALIDATION",
    },
    "aws:route53/record:Record": lambda a: {"fqdn": str(a.inputs.get("name", a.name)).rstrip(".")},
    "aws:ec2/launchTemplate:LaunchTemplate": lambda a: {"latestVersion": 1, "defaultVersion": 1},
    "aws:autoscaling/group:Group": lambda a: {"name": a.inputs.get("name") or a.name},
    "aws:ecs/capacityProvider:CapacityProvider": lambda a: {"name": a.inputs.get("name") or a.name},
    "aws:ecs/service:Service": lambda a: {"name": a.inputs.get("name") or a.name},
    "aws:ecs/taskDefinition:TaskDefinition": lambda a: {
        "revision": 1,
        "arnWithoutRevision": f"arn:aws:ecs:region:{ACCOUNT_ID}:task-definition/{a.inputs.get('family') or a.name}",
    },
    "aws:globalaccelerator/accelerator:Accelerator": lambda a: {"dnsName": f"{a.name}.awsglobalaccelerator.com", "hostedZoneId": "Z2BJ6XQ5FK7U4H"},
    "eks:index:Cluster": lambda a: {
        "kubeconfig": {"apiVersion": "v1", "kind": "Config", "clusters": [], "contexts": [], "users": []},
        "kubeconfigJson": "{}",
        # eksCluster (an aws.eks.Cluster resource reference) is left out: a plain dict there fails output translation.
        "clusterSecurityGroupId": "sg-cluster",
        "nodeSecurityGroupId": "sg-node",
        "oidcProviderArn": f"arn:aws:iam::{ACCOUNT_ID}:oidc-provider/oidc.eks.amazonaws.com/id/OFFLINE",
        "oidcProviderUrl": "oidc.eks.amazonaws.com/id/OFFLINE",
        "oidcIssuer": "oidc.eks.amazonaws.com/id/OFFLINE",
        "clusterOidcProvider": None,
        "core": {},
    },
}


class _RecordingMonitor(pulumi_mocks.MockMonitor):
    def __init__(self, mocks: OfflineMocks, run: OfflineRun):
        super().__init__(mocks)
        self.run = run

    def GetDeploymentInfo(self, request):
        # Without resource references a resource passed as an input (eks.ManagedNodeGroup(cluster=eks.Cluster))
        # is sent as its URN (components) or id (custom resources). With them, the mock monitor rebuilds the
        # referenced remote component on its own thread and deadlocks against the program's event loop.
        info = super().GetDeploymentInfo(request)
        features = [f for f in info.supportedFeatures if f != resource_pb2.RESOURCE_MONITOR_FEATURE_RESOURCE_REFERENCES]
        return resource_pb2.DeploymentInfo(supportedFeatures=features)

    def RegisterResource(self, request):
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            inputs = rpc.deserialize_properties(request.object)
            self.run.resources.append(
                RecordedResource(
                    type=request.type,
                    name=request.name,
                    urn=response.urn,
                    parent=request.parent or None,
                    custom=bool(request.custom),
                    provider=request.provider or None,
                    inputs=_plain(inputs),
                    dependencies=list(request.dependencies),
                )
            )
        return response


def _plain(value: Any) -> Any:
    """Deserialised inputs with unknowns and secrets turned into plain JSON-able values."""
    if isinstance(value, dict):
        if value.get(rpc._special_sig_key) == rpc._special_secret_sig:  # type: ignore[attr-defined]
            return {"secret": _plain(value.get("value"))}
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is rpc.UNKNOWN or type(value).__name__ == "Unknown":
        return "<unknown>"
    return value


def run_offline(
    program: Callable[[], Any],
    *,
    project: str = "vllm-fleet",
    stack: str = "offline",
    config: dict[str, str] | None = None,
    region: str = "us-east-1",
) -> OfflineRun:
    """Run `program` (a Pulumi program) under the mock runtime, with `config` as the stack's config.

    `config` keys are full Pulumi keys ("vllm-fleet:tier", "aws:region") and values are strings, exactly as
    `pulumi config` stores them (structured values as JSON).
    """
    run = OfflineRun()
    mocks = OfflineMocks(region=region)
    monitor = _RecordingMonitor(mocks, run)
    full_config = {"aws:region": region, **(config or {})}
    pulumi.runtime.set_all_config(full_config)
    pulumi.runtime.settings.ROOT.set(None)  # a fresh root stack per run: outputs do not leak between runs
    pulumi.runtime.set_mocks(mocks, project=project, stack=stack, preview=False, monitor=monitor)
    # Each run gets a fresh root stack; errors raised inside the program propagate to the caller.
    pulumi.runtime.settings.SETTINGS.rpc_manager.clear()  # type: ignore[attr-defined]
    pulumi.runtime.settings.SETTINGS.outputs.clear()  # type: ignore[attr-defined]

    from pulumi.runtime.stack import run_pulumi_func

    _sync_await(run_pulumi_func(program))
    root = pulumi.runtime.get_root_resource()
    for key, value in dict(getattr(root, "outputs", {}) or {}).items():
        resolved = _sync_await(pulumi.Output.from_input(value).future())
        run.outputs[key] = _plain(resolved)
    return run


__all__ = ["OfflineMocks", "OfflineRun", "RecordedResource", "run_offline", "ACCOUNT_ID"]
