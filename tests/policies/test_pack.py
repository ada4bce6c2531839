"""The pack: every policy is well formed, and each one's validate callable reports through pulumi_policy's own
args objects (resource inputs behind pulumi_policy's read-only proxies, as the engine passes them)."""

from pathlib import Path

import pytest
import yaml
from pulumi_policy import (
    EnforcementLevel,
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from policies.unknowns import checking_view as unknown_checking_proxy  # props behind read-only views, as pulumi_policy serves them

from components.sizing import prices
from policies import pack
from policies.rules import budget, gpu_memory_fit
from policy_builders import container, deployment, ecs_container, pod_spec, res, task_definition, urn

POLICIES_DIR = Path(pack.__file__).resolve().parent
L70B = "meta-llama/Llama-3.1-70B-Instruct"
DEP = "kubernetes:apps/v1:Deployment"


@pytest.fixture(autouse=True)
def bundled_prices_only(monkeypatch, tmp_path):
    monkeypatch.setenv("VLLM_FLEET_PRICES", str(tmp_path / "none.json"))
    prices.reload_prices()
    yield
    prices.reload_prices()


def options(parent=None):
    return PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [], parent)


def resource_args(type_, props, *, stack="dev", config=None, name="r"):
    return ResourceValidationArgs(type_, unknown_checking_proxy(props), urn(type_, name, stack), name, options(), None, config or {})


def stack_args(resources, config=None):
    objects = [PolicyResource(r.type, unknown_checking_proxy(dict(r.props)), r.urn, r.name, options(r.parent), None, None, [], {}) for r in resources]
    return StackValidationArgs(objects, config or {})


def run(policy, args):
    reported = []
    policy.validate(args, lambda message, urn=None: reported.append((message, urn)))
    return reported


def by_name(name):
    return next(p for p in pack.POLICIES if p.name == name)


def test_every_policy_is_well_formed():
    names = [p.name for p in pack.POLICIES]
    assert len(names) == len(set(names))
    for policy in pack.POLICIES:
        assert policy.name and policy.description
        assert policy.enforcement_level in (EnforcementLevel.MANDATORY, EnforcementLevel.ADVISORY)
        assert isinstance(policy, (ResourceValidationPolicy, StackValidationPolicy))


def test_levels_follow_the_design():
    advisory = {p.name for p in pack.POLICIES if p.enforcement_level == EnforcementLevel.ADVISORY}
    assert advisory == {"gpu-memory-fit-unverified", "monthly-budget-advisory", "crd-prerequisites"}
    assert by_name("gpu-memory-fit").enforcement_level == EnforcementLevel.MANDATORY
    assert by_name("monthly-budget").enforcement_level == EnforcementLevel.MANDATORY


def test_config_schemas():
    fit_schema = by_name("gpu-memory-fit").config_schema.properties
    assert fit_schema["gpuMemoryUtilizationMax"]["default"] == 0.95
    for name in ("monthly-budget", "monthly-budget-advisory"):
        props = by_name(name).config_schema.properties
        assert props["monthlyBudgetUsd"]["type"] == "number"
        assert props["advisoryShare"]["default"] == 0.8


def test_pack_files():
    meta = yaml.safe_load((POLICIES_DIR / "PulumiPolicy.yaml").read_text())
    # the venv `pulumi install` creates is the one the pack runs in only when PulumiPolicy.yaml names it
    assert meta["runtime"] == {"name": "python", "options": {"virtualenv": "venv"}} and meta["description"]
    main = (POLICIES_DIR / "__main__.py").read_text()
    assert "PolicyPack(name=PACK_NAME, policies=POLICIES" in main


def _requirement_lines() -> list[str]:
    lines = [line.split("#", 1)[0].strip() for line in (POLICIES_DIR / "requirements.txt").read_text().splitlines()]
    return [line for line in lines if line]


def test_requirements_install_the_project_from_the_pack_directory():
    """pip runs with the pack directory as working directory (Pulumi's pip toolchain sets cmd.Dir), where `..`
    is the repository root: the project whose packages the pack imports."""
    import tomllib

    lines = _requirement_lines()
    assert "-e .." in lines
    root = (POLICIES_DIR / "..").resolve()
    pyproject = tomllib.loads((root / "pyproject.toml").read_text())
    include = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    assert {"components*", "policies*"} <= set(include)
    assert any(d.startswith("pulumi-policy") for d in pyproject["project"]["dependencies"])


def _imports(path: Path) -> set[str]:
    import ast

    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_requirements_bring_everything_the_pack_imports():
    """Every module the pack imports, and every project module those import in turn, is the standard library, a
    project package (`-e ..`), or comes from a distribution the requirements pull in (with their dependencies)."""
    import importlib.metadata as md
    import re
    import sys

    from packaging.requirements import Requirement

    root = POLICIES_DIR.parent
    seen, todo, external = set(), [*POLICIES_DIR.rglob("*.py")], set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _imports(path):
            top = name.split(".")[0]
            if top in sys.stdlib_module_names or top == "__future__":
                continue
            if top in ("components", "policies", "stacks"):
                parts = name.split(".")
                for n in range(len(parts), 0, -1):
                    module = root.joinpath(*parts[:n])
                    candidates = [module.with_suffix(".py"), module / "__init__.py"]
                    todo += [c for c in candidates if c.exists()]
                continue
            external.add(top)
    assert "pulumi_policy" in external and "components" not in external

    pyproject_deps = __import__("tomllib").loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    wanted = [Requirement(r) for r in pyproject_deps + [line for line in _requirement_lines() if not line.startswith("-")]]
    closure: set[str] = set()
    while wanted:
        req = wanted.pop()
        key = re.sub(r"[-_.]+", "-", req.name).lower()
        if key in closure or (req.marker is not None and not req.marker.evaluate({"extra": ""})):
            continue
        closure.add(key)
        wanted += [Requirement(r) for r in (md.requires(req.name) or [])]
    providers = md.packages_distributions()
    for top in sorted(external):
        dists = {re.sub(r"[-_.]+", "-", d).lower() for d in providers.get(top, [])}
        assert dists & closure, f"the pack imports {top} ({dists or 'no distribution'}) but policies/requirements.txt does not bring it"


# ---- each policy through its validate callable ----------------------------------------------------------
def open_deployment(**kw):
    return deployment(pod_spec(container(args=[L70B, "--tensor-parallel-size", "4"], gpus=4, **kw), node_selector={"vllm-fleet/gpu": "H100"}))


SERVICE_PROPS = {"instance_type": "g6e.xlarge", "region": "us-east-1", "min_replicas": 1, "max_replicas": 10, "gpus_per_replica": 1}
BUCKET = res("aws:s3/bucket:Bucket", "bucket", {"bucket": "acme"})

RESOURCE_CASES = {
    "model-cache-holds-checkpoint": (
        "kubernetes:apps/v1:Deployment",
        {
            "spec": {"template": {"spec": {
                "containers": [{"name": "vllm", "image": "vllm/vllm-openai:v0.11.1", "args": [L70B, "--download-dir", "/models/hub"],
                                "resources": {"limits": {"nvidia.com/gpu": 4}},
                                "volumeMounts": [{"name": "cache", "mountPath": "/models"}]}],
                "volumes": [{"name": "cache", "emptyDir": {"sizeLimit": "95Gi"}}],
            }}}
        },
        {},
        "dev",
        f"container 'vllm' downloads {L70B} (131.4 GiB checkpoint) into /models/hub, but volume 'cache' has sizeLimit 95Gi; "
        "the kubelet evicts the pod mid-download: give it at least 132Gi",
    ),
    "gpu-memory-fit": (
        "vllm-fleet:index:VllmService",
        {"model": L70B, "gpu": "H100", "tp": 4, "pp": 1, "max_model_len": 8192, "gpu_memory_utilization": 0.97},
        {},
        "dev",
        f"{L70B}: gpu_memory_utilization 0.97 is above the policy maximum 0.95",
    ),
    "gpu-memory-fit-unverified": (
        "vllm-fleet:index:EcsVllmTask",
        {"model": L70B, "tp": 4},
        {},
        "dev",
        f"cannot check GPU memory fit for {L70B}: its props name no gpu or instance_type",
    ),
    "ebs-encryption": (
        "aws:ebs/volume:Volume", {"size": 100}, {}, "dev", "EBS volume is not encrypted; set encrypted true",
    ),
    "imdsv2-required": (
        "aws:ec2/launchTemplate:LaunchTemplate",
        {"metadataOptions": {"httpTokens": "optional"}},
        {},
        "dev",
        'launch template allows IMDSv1: set metadataOptions.httpTokens "required" (it is \'optional\')',
    ),
    "no-plaintext-secrets": (
        DEP,
        open_deployment(env=[{"name": "HF_TOKEN", "value": "hf_x"}]),
        {},
        "dev",
        "container 'vllm' sets HF_TOKEN as a plain value; take it from a Secret (valueFrom.secretKeyRef)",
    ),
    "multi-az-in-prod": (
        "aws:ecs/service:Service",
        {"networkConfiguration": {"subnets": ["subnet-a"]}},
        {},
        "prod",
        "ECS service runs in 1 subnet(s) in prod; production needs at least 2 availability zones",
    ),
    "ecs-minimum-healthy": (
        "aws:ecs/service:Service",
        {"deploymentMinimumHealthyPercent": 0},
        {},
        "dev",
        "ECS service deploymentMinimumHealthyPercent is 0: a deployment may stop every task before new ones have loaded the model; "
        "keep it above 0 (100 keeps full capacity)",
    ),
    "startup-probe-covers-model-load": (
        DEP,
        open_deployment(startup={"httpGet": {"path": "/health", "port": 8000}, "failureThreshold": 6, "periodSeconds": 10}),
        {},
        "dev",
        f"container 'vllm' serves {L70B}: its startupProbe allows 60s (initialDelaySeconds 0 + failureThreshold 6 x periodSeconds 10) "
        "but loading the model needs about 600s; raise failureThreshold to 60",
    ),
    "pinned-node-ami": (
        "kubernetes:karpenter.k8s.aws/v1:EC2NodeClass",
        {"spec": {"amiSelectorTerms": [{"alias": "al2023@latest"}]}},
        {},
        "prod",
        "EC2NodeClass in prod uses AMI alias al2023@latest; pin a release such as al2023@v20260818",
    ),
    "pinned-images": (
        DEP,
        deployment(pod_spec(container(image="vllm/vllm-openai:latest", args=["x/y"]))),
        {},
        "dev",
        "container 'vllm' image 'vllm/vllm-openai:latest' uses the latest tag: pin a version tag or a digest",
    ),
}

STACK_CASES = {
    "monthly-budget": ([res("vllm-fleet:index:VllmService", "llm", SERVICE_PROPS)], {"monthlyBudgetUsd": 1000}, "exceeds the monthly budget $1,000"),
    "monthly-budget-advisory": (
        [res("vllm-fleet:index:VllmService", "llm", {"min_replicas": 1})],
        {"monthlyBudgetUsd": 1000},
        "cannot price llm: no instance_type in its props; the projected cost leaves it out",
    ),
    "s3-no-public-access": ([BUCKET], {}, "S3 bucket 'bucket' has no public access block with all four settings true"),
    "s3-encryption": ([BUCKET], {}, "S3 bucket 'bucket' declares no default encryption"),
    "vllm-api-access": ([res(DEP, "llm", open_deployment())], {}, "Deployment 'llm' container 'vllm' serves vLLM with no API key and no NetworkPolicy"),
    "vllm-pod-disruption-budget": ([res(DEP, "llm", open_deployment())], {}, "Deployment 'llm' runs vLLM with no PodDisruptionBudget"),
    "ecs-grace-period-covers-model-load": (
        [
            res("aws:ecs/taskDefinition:TaskDefinition", "task", task_definition(ecs_container(command=["--model", L70B, "-tp", "4"], gpus=4), family="llm")),
            res("aws:ecs/service:Service", "svc", {"taskDefinition": "llm:1", "loadBalancers": [{"containerName": "vllm"}], "healthCheckGracePeriodSeconds": 60}),
        ],
        {},
        "ECS service 'svc': healthCheckGracePeriodSeconds is 60",
    ),
    "node-disk-holds-checkpoint": (
        [res("vllm-fleet:index:EcsVllmTask", "task", {"model": L70B, "node_disk_gib": 100})],
        {},
        "its node root volume is 100 GiB but the checkpoint it downloads is 131.4 GiB",
    ),
    "crd-installers": (
        [res("kubernetes:monitoring.coreos.com/v1:ServiceMonitor", "sm", {})],
        {},
        "ServiceMonitor (monitoring.coreos.com) 'sm': nothing in this stack installs its CRD",
    ),
    "crd-prerequisites": (
        [
            res("vllm-fleet:index:GpuCluster", "gpu", {"crd_prerequisites": ["monitoring.coreos.com"]}),
            res("kubernetes:monitoring.coreos.com/v1:ServiceMonitor", "sm", {}),
        ],
        {},
        "prerequisite: the monitoring.coreos.com CRDs must already be in the cluster",
    ),
}


def test_every_policy_has_a_case():
    assert set(RESOURCE_CASES) | set(STACK_CASES) == {p.name for p in pack.POLICIES}


@pytest.mark.parametrize("name", sorted(RESOURCE_CASES))
def test_resource_policies_report_through_validate(name):
    type_, props, config, stack, message = RESOURCE_CASES[name]
    policy = by_name(name)
    assert isinstance(policy, ResourceValidationPolicy)
    assert run(policy, resource_args(type_, props, stack=stack, config=config)) == [(message, None)]
    # and stays quiet on a resource it does not govern
    assert run(policy, resource_args("aws:iam/role:Role", {"assumeRolePolicy": "{}"})) == []


@pytest.mark.parametrize("name", sorted(STACK_CASES))
def test_stack_policies_report_through_validate(name):
    resources, config, fragment = STACK_CASES[name]
    policy = by_name(name)
    assert isinstance(policy, StackValidationPolicy)
    reported = run(policy, stack_args(resources, config))
    assert len(reported) == 1
    message, where = reported[0]
    assert fragment in message
    assert where in (None, *[r.urn for r in resources])


def test_budget_policies_read_the_config():
    resources = [res("vllm-fleet:index:VllmService", "llm", SERVICE_PROPS)]
    cost = budget.stack_cost(pack.stack_resources(stack_args(resources)))
    limit = round(cost.max_monthly / 0.85)
    mandatory = run(by_name("monthly-budget"), stack_args(resources, {"monthlyBudgetUsd": limit}))
    advisory = run(by_name("monthly-budget-advisory"), stack_args(resources, {"monthlyBudgetUsd": limit}))
    assert mandatory == []
    assert advisory == [(budget.advisories(cost, float(limit))[0], None)]
    assert "85% of the monthly budget" in advisory[0][0]
    assert run(by_name("monthly-budget"), stack_args(resources)) == []  # no budget anywhere: nothing to check
    from_deployment = [*resources, res("vllm-fleet:index:Deployment", "fleet", {"monthly_budget_usd": 1000.0})]
    assert run(by_name("monthly-budget"), stack_args(from_deployment)) == [(budget.violations(cost, 1000.0)[0], None)]


def test_fit_policy_reads_its_config():
    props = {"model": L70B, "gpu": "H100", "tp": 4, "gpu_memory_utilization": 0.9, "max_model_len": 8192}
    policy = by_name("gpu-memory-fit")
    assert run(policy, resource_args("vllm-fleet:index:VllmService", props)) == []
    assert run(policy, resource_args("vllm-fleet:index:VllmService", props, config={"gpuMemoryUtilizationMax": 0.8})) == [
        (f"{L70B}: gpu_memory_utilization 0.9 is above the policy maximum 0.8", None)
    ]
    assert pack.fit_limits({}) == gpu_memory_fit.FitLimits()


# ---- the offline runner -----------------------------------------------------------------------------------
def test_run_policies_over_a_recorded_stack():
    store = urn("vllm-fleet:index:LoraStore", "loras")
    resources = [
        res("vllm-fleet:index:LoraStore", "loras", {}),
        res("aws:s3/bucket:Bucket", "loras-bucket", {"bucket": "acme-loras"}, parent=store),
        res("aws:ec2/launchTemplate:LaunchTemplate", "lt", {"metadataOptions": {"httpTokens": "required"}, "blockDeviceMappings": [{"deviceName": "/dev/xvda", "ebs": {"encrypted": "true"}}]}),
    ]
    results = pack.run_policies(resources, {"s3-encryption": {"enforcementLevel": "advisory"}, "ebs-encryption": "disabled"})
    assert [(r.policy, r.enforcement_level, r.urn) for r in results] == [
        ("s3-no-public-access", "mandatory", urn("aws:s3/bucket:Bucket", "loras-bucket")),
        ("s3-encryption", "advisory", urn("aws:s3/bucket:Bucket", "loras-bucket")),
    ]
    assert [r.policy for r in pack.mandatory_violations(results)] == ["s3-no-public-access"]


def test_run_policies_skips_what_is_unknown_like_pulumi():
    td = res("aws:ecs/taskDefinition:TaskDefinition", "task", {"family": "llm", "containerDefinitions": "<unknown>"})
    results = pack.run_policies([td], policies=[by_name("pinned-images")])
    assert [(r.policy, r.enforcement_level) for r in results] == [("pinned-images", "skipped")]
    assert results[0].message == "can't run during preview: string value at .containerDefinitions can't be known during preview"


def test_run_policies_budget_from_config():
    resources = [res("vllm-fleet:index:VllmService", "llm", SERVICE_PROPS)]
    results = pack.run_policies(resources, {"monthly-budget": {"monthlyBudgetUsd": 500}})
    (over,) = [r for r in results if r.policy == "monthly-budget"]
    assert over.enforcement_level == "mandatory" and "exceeds the monthly budget $500" in over.message


def test_importing_the_pack_starts_no_server():
    import policies.pack as again

    assert again.PACK_NAME == "vllm-fleet"
