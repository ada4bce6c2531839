"""The vllm-fleet policies as pulumi_policy objects, and a runner that applies them to a recorded stack offline.

Each policy wraps one pure rule from `policies.rules`. A rule that has two severities is two policies (the
enforcement level belongs to a policy, not to a violation): `gpu-memory-fit` (mandatory) and
`gpu-memory-fit-unverified` (advisory: servers the policy could not size); `monthly-budget` (mandatory)
and `monthly-budget-advisory`. Importing this module starts nothing: `policies/__main__.py` serves the pack.

Policy config (`pulumi preview --policy-pack policies --policy-pack-config config.json`), per policy name:
    {"gpu-memory-fit": {"gpuMemoryUtilizationMax": 0.95, "minKvSequences": 1},
     "monthly-budget": {"monthlyBudgetUsd": 25000},
     "monthly-budget-advisory": {"monthlyBudgetUsd": 25000, "advisoryShare": 0.8}}
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from policies import resource_views as rv
from policies.unknowns import UnknownValueError, checking_view
from policies.rules import (
    budget,
    crd_installers,
    ebs_encryption,
    ecs_minimum_healthy,
    gpu_memory_fit,
    imdsv2,
    model_cache_size,
    multi_az,
    pinned_images,
    pinned_node_ami,
    plaintext_secrets,
    pod_disruption_budget,
    s3_encryption,
    s3_public_access,
    startup_probes,
    vllm_api_access,
)

PACK_NAME = "vllm-fleet"
MANDATORY = EnforcementLevel.MANDATORY
ADVISORY = EnforcementLevel.ADVISORY

FIT_CONFIG = PolicyConfigSchema(
    properties={
        "gpuMemoryUtilizationMax": {
            "type": "number",
            "default": gpu_memory_fit.FitLimits.gpu_memory_utilization_max,
            "minimum": 0.1,
            "maximum": 0.99,
            "description": "Highest --gpu-memory-utilization allowed.",
        },
        "minKvSequences": {
            "type": "number",
            "default": gpu_memory_fit.FitLimits.min_kv_sequences,
            "minimum": 1,
            "description": "Full max_model_len sequences the KV cache must hold at once (vLLM itself needs 1).",
        },
    }
)
BUDGET_CONFIG = PolicyConfigSchema(
    properties={
        "monthlyBudgetUsd": {
            "type": "number",
            "minimum": 0,
            "description": "Monthly budget in USD; else a vllm-fleet:index:Deployment's monthly_budget_usd prop.",
        },
        "advisoryShare": {
            "type": "number",
            "default": budget.DEFAULT_ADVISORY_SHARE,
            "minimum": 0,
            "maximum": 1,
            "description": "Share of the budget above which the advisory policy reports.",
        },
        "defaultRegion": {
            "type": "string",
            "default": "us-east-1",
            "description": "Region used to price capacity whose props name none.",
        },
    }
)


# ---- adapters from pulumi_policy args to the pure rules -------------------------------------------------
def fit_limits(config: Mapping[str, Any]) -> gpu_memory_fit.FitLimits:
    defaults = gpu_memory_fit.FitLimits()
    return gpu_memory_fit.FitLimits(
        gpu_memory_utilization_max=float(config.get("gpuMemoryUtilizationMax", defaults.gpu_memory_utilization_max)),
        min_kv_sequences=float(config.get("minKvSequences", defaults.min_kv_sequences)),
    )


def stack_resources(args: StackValidationArgs) -> list[rv.Resource]:
    return [
        rv.Resource(
            type=r.resource_type,
            name=r.name,
            props=r.props,
            urn=r.urn,
            parent=r.parent.urn if r.parent else None,
            dependencies=tuple(d.urn for d in (r.dependencies or [])),
        )
        for r in args.resources
    ]


def _configured_budget(args: StackValidationArgs) -> tuple[budget.StackCost, float | None]:
    config = args.get_config()
    resources = stack_resources(args)
    cost = budget.stack_cost(resources, default_region=str(config.get("defaultRegion", "us-east-1")))
    configured = config.get("monthlyBudgetUsd")
    return cost, budget.budget_from(resources, float(configured) if configured is not None else None)


def _budget_violations(args: StackValidationArgs) -> list[rv.Finding]:
    cost, limit = _configured_budget(args)
    return [rv.Finding("", m) for m in budget.violations(cost, limit)]


def _budget_advisories(args: StackValidationArgs) -> list[rv.Finding]:
    cost, limit = _configured_budget(args)
    share = float(args.get_config().get("advisoryShare", budget.DEFAULT_ADVISORY_SHARE))
    return [rv.Finding("", m) for m in budget.advisories(cost, limit, share)]


def resource_policy(
    name: str, description: str, level: EnforcementLevel, rule: Callable[[ResourceValidationArgs], list[str]], **kwargs
) -> ResourceValidationPolicy:
    def validate(args: ResourceValidationArgs, report_violation) -> None:
        for message in rule(args):
            report_violation(message, None)

    return ResourceValidationPolicy(name=name, description=description, validate=validate, enforcement_level=level, **kwargs)


def stack_policy(
    name: str, description: str, level: EnforcementLevel, rule: Callable[[StackValidationArgs], list[rv.Finding]], **kwargs
) -> StackValidationPolicy:
    def validate(args: StackValidationArgs, report_violation) -> None:
        for finding in rule(args):
            report_violation(finding.message, finding.urn or None)

    return StackValidationPolicy(name=name, description=description, validate=validate, enforcement_level=level, **kwargs)


def _stacked(rule: Callable[[list[rv.Resource]], list[rv.Finding]]) -> Callable[[StackValidationArgs], list[rv.Finding]]:
    return lambda args: rule(stack_resources(args))


POLICIES: list = [
    resource_policy(
        "gpu-memory-fit",
        "A vLLM server's model, context and batch fit its GPUs' memory (the sizing core's start-up check).",
        MANDATORY,
        lambda args: gpu_memory_fit.violations(args.resource_type, args.props, fit_limits(args.get_config())),
        config_schema=FIT_CONFIG,
    ),
    resource_policy(
        "gpu-memory-fit-unverified",
        "vLLM servers whose GPU memory fit could not be checked (unknown model, GPU type or GPU count).",
        ADVISORY,
        lambda args: gpu_memory_fit.advisories(args.resource_type, args.props),
    ),
    stack_policy(
        "monthly-budget",
        "The stack's projected monthly cost at maximum scale stays within the monthly budget.",
        MANDATORY,
        _budget_violations,
        config_schema=BUDGET_CONFIG,
    ),
    stack_policy(
        "monthly-budget-advisory",
        "Warns when the projected monthly cost at maximum scale is above advisoryShare of the budget.",
        ADVISORY,
        _budget_advisories,
        config_schema=BUDGET_CONFIG,
    ),
    stack_policy(
        "s3-no-public-access",
        "S3 buckets block public access (all four settings) and grant nothing to everyone.",
        MANDATORY,
        _stacked(s3_public_access.check),
    ),
    stack_policy(
        "s3-encryption",
        "S3 buckets declare default server-side encryption.",
        MANDATORY,
        _stacked(s3_encryption.check),
    ),
    resource_policy(
        "ebs-encryption",
        "EBS volumes (launch templates, instances, volumes, Karpenter node classes) are encrypted.",
        MANDATORY,
        lambda args: ebs_encryption.check(args.resource_type, args.props),
    ),
    resource_policy(
        "imdsv2-required",
        "Instances require IMDSv2 session tokens (metadataOptions.httpTokens required).",
        MANDATORY,
        lambda args: imdsv2.check(args.resource_type, args.props),
    ),
    resource_policy(
        "no-plaintext-secrets",
        "Tokens, keys and passwords reach containers from secrets, never as plain environment values or flags.",
        MANDATORY,
        lambda args: plaintext_secrets.check(args.resource_type, args.props),
    ),
    stack_policy(
        "vllm-api-access",
        "vLLM servers require an API key from a secret, or (Kubernetes) sit behind a NetworkPolicy.",
        MANDATORY,
        _stacked(vllm_api_access.check),
    ),
    resource_policy(
        "multi-az-in-prod",
        "Production clusters, services and node groups span at least two availability zones.",
        MANDATORY,
        lambda args: multi_az.check(args.resource_type, args.props, rv.stack_of(args.urn)),
    ),
    stack_policy(
        "vllm-pod-disruption-budget",
        "Every vLLM Deployment, StatefulSet and LeaderWorkerSet has a PodDisruptionBudget.",
        MANDATORY,
        _stacked(pod_disruption_budget.check),
    ),
    resource_policy(
        "ecs-minimum-healthy",
        "ECS services keep deploymentMinimumHealthyPercent above 0.",
        MANDATORY,
        lambda args: ecs_minimum_healthy.check(args.resource_type, args.props),
    ),
    resource_policy(
        "startup-probe-covers-model-load",
        "Kubernetes startup (or liveness) probes give a vLLM server time to load its model.",
        MANDATORY,
        lambda args: startup_probes.check(args.resource_type, args.props),
    ),
    stack_policy(
        "ecs-grace-period-covers-model-load",
        "ECS services running vLLM have a health-check grace period long enough to load the model.",
        MANDATORY,
        _stacked(startup_probes.check_ecs),
    ),
    stack_policy(
        "crd-installers",
        "Every custom resource's CRD is installed by a Helm release of the stack it waits for, or a declared prerequisite.",
        MANDATORY,
        _stacked(crd_installers.check),
    ),
    stack_policy(
        "crd-prerequisites",
        "Lists the CRDs the stack relies on but declares installed outside it (bring-your-own operators).",
        ADVISORY,
        _stacked(crd_installers.declared_prerequisites),
    ),
    resource_policy(
        "model-cache-holds-checkpoint",
        "A Kubernetes vLLM server's emptyDir model cache holds the checkpoint it downloads (not the in-GPU weights).",
        MANDATORY,
        lambda args: model_cache_size.check(args.resource_type, args.props),
    ),
    stack_policy(
        "node-disk-holds-checkpoint",
        "vLLM components' model cache and node root volume hold the checkpoint they download.",
        MANDATORY,
        _stacked(model_cache_size.check_components),
    ),
    resource_policy(
        "pinned-node-ami",
        "GPU nodes in production run a pinned AMI release whose NVIDIA driver can run their images.",
        MANDATORY,
        lambda args: pinned_node_ami.check(args.resource_type, args.props, rv.stack_of(args.urn)),
    ),
    resource_policy(
        "pinned-images",
        "Container images are pinned to a version tag or digest, never latest or untagged.",
        MANDATORY,
        lambda args: pinned_images.check(args.resource_type, args.props),
    ),
]


# ---- offline runner (the CLI's `preview` and the stack tests) --------------------------------------------
@dataclass(frozen=True)
class PolicyResult:
    policy: str
    enforcement_level: str  # "mandatory" | "advisory" | "skipped" (a value was unknown, as Pulumi skips it)
    message: str
    urn: str = ""


def enforcement_level(policy, config: Mapping[str, Any] | None = None) -> EnforcementLevel:
    """The policy's level, overridden by config {"<policy>": {"enforcementLevel": ...}} or {"all": ...}."""
    config = config or {}
    own = config.get(policy.name)
    if isinstance(own, Mapping) and "enforcementLevel" in own:
        return EnforcementLevel(own["enforcementLevel"])
    if isinstance(own, str):
        return EnforcementLevel(own)
    if "all" in config:
        return EnforcementLevel(config["all"])
    return policy.enforcement_level or MANDATORY


def _policy_config(policy, config: Mapping[str, Any]) -> dict:
    own = config.get(policy.name)
    values = {k: v for k, v in own.items() if k != "enforcementLevel"} if isinstance(own, Mapping) else {}
    if policy.config_schema is not None:
        for key, schema in policy.config_schema.properties.items():
            if "default" in schema:
                values.setdefault(key, schema["default"])
    return values


def _options(parent: str | None) -> PolicyResourceOptions:
    return PolicyResourceOptions(
        protect=False,
        ignore_changes=[],
        delete_before_replace=None,
        aliases=[],
        custom_timeouts=PolicyCustomTimeouts(0, 0, 0),
        additional_secret_outputs=[],
        parent=parent,
    )


def run_policies(
    resources: Iterable[rv.Resource], config: Mapping[str, Any] | None = None, policies: list | None = None
) -> list[PolicyResult]:
    """Run the real policy objects over a recorded stack, as `pulumi preview --policy-pack` would.

    `resources`: the stack's resources as `resource_views.Resource` (inputs as props). `config`: the policy
    pack config ({policy name: {key: value, "enforcementLevel": ...}}). Disabled policies do not run.
    """
    config = config or {}
    resources = list(resources)
    results: list[PolicyResult] = []
    proxied = [checking_view(dict(r.props.items())) for r in resources]  # unknowns raise, as under pulumi_policy
    stack_objects: list[PolicyResource] = []
    by_urn: dict[str, PolicyResource] = {}
    for res, props in zip(resources, proxied):
        obj = PolicyResource(res.type, props, res.urn, res.name, _options(res.parent), None, None, [], {})
        stack_objects.append(obj)
        by_urn[res.urn] = obj
    for res, obj in zip(resources, stack_objects):
        obj.parent = by_urn.get(res.parent) if res.parent else None
        obj.dependencies = [by_urn[d] for d in res.dependencies if d in by_urn]

    for policy in policies if policies is not None else POLICIES:
        level = enforcement_level(policy, config)
        if level == EnforcementLevel.DISABLED:
            continue
        policy_config = _policy_config(policy, config)

        def report(message: str, urn: str | None = None, *, _policy=policy, _level=level, _urn="") -> None:
            results.append(PolicyResult(_policy.name, _level.value, message, urn or _urn))

        if isinstance(policy, ResourceValidationPolicy):
            for res, props in zip(resources, proxied):
                args = ResourceValidationArgs(res.type, props, res.urn, res.name, _options(res.parent), None, policy_config)
                try:
                    policy.validate(args, lambda m, u=None, _r=res.urn: report(m, _r))
                except UnknownValueError as err:
                    results.append(PolicyResult(policy.name, "skipped", f"can't run during preview: {err.message}", res.urn))
        else:
            args = StackValidationArgs(stack_objects, policy_config)
            try:
                policy.validate(args, report)
            except UnknownValueError as err:
                results.append(PolicyResult(policy.name, "skipped", f"can't run during preview: {err.message}", ""))
    return results


def mandatory_violations(results: Iterable[PolicyResult]) -> list[PolicyResult]:
    return [r for r in results if r.enforcement_level == "mandatory"]
