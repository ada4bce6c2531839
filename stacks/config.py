"""The stack configuration (`Pulumi.<stack>.yaml`, namespace `vllm-fleet`), validated into one pydantic model.

Keys: tier, platform, regions, environment, monthlyBudgetUsd, models, lora, domain (DESIGN.md section 5).
A bad value raises InputError naming the key as written in the YAML (`vllm-fleet:tier`), so `preview` can
print one line and exit 2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from components.sizing.errors import InputError
from components.sizing.prices import regions as priced_regions

NAMESPACE = "vllm-fleet"


class ModelEntry(BaseModel):
    """One model to serve. Only `model` is required: the planner picks the rest unless you pin it."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    model: str = Field(description="Hugging Face id (or catalog alias), or a path to its config.json.")
    instance_type: str | None = Field(None, alias="instanceType", description="Pin the GPU instance type (else planned).")
    tensor_parallel_size: int | None = Field(None, alias="tensorParallelSize", ge=1, le=64, description="Pin TP.")
    pipeline_parallel_size: int | None = Field(None, alias="pipelineParallelSize", ge=1, le=16, description="Pin PP (EKS only).")
    quantization: Literal["fp8"] | None = Field(None, description="fp8 at load time; quantized checkpoints need nothing here.")
    max_model_len: int | None = Field(None, alias="maxModelLen", ge=256, description="Longest sequence (default 8192).")
    users: int | None = Field(None, gt=0, description="Users of this model (default: the tier's users split evenly).")


class LoraConfig(BaseModel):
    """LoRA multi-tenancy: adapters live in a LoraStore and load at run time."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    max_loras: int = Field(8, alias="maxLoras", ge=1, le=256, description="Adapters resident on each GPU at once.")
    max_lora_rank: Literal[8, 16, 32, 64, 128, 256] = Field(64, alias="maxLoraRank", description="Largest adapter rank accepted.")
    tenants: int = Field(0, ge=0, description="Expected tenants (documentation and sizing only: no per-tenant resources).")


class StackConfig(BaseModel):
    """The whole stack's settings."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    tier: Literal["small", "medium", "large"] = Field(description="Workload size from the seed guide: 400 / 4,000 / 40,000 users.")
    platform: Literal["ecs", "eks"] = Field(description="Where vLLM runs.")
    regions: list[str] = Field(description="AWS regions (default: aws:region). More than one puts a MultiRegionLB in front.")
    environment: Literal["dev", "prod"] = Field("dev", description="prod: 3 AZs, NAT per AZ, deletion protection, 100% min healthy.")
    monthly_budget_usd: float | None = Field(None, alias="monthlyBudgetUsd", gt=0, description="Budget the policy pack enforces.")
    models: list[ModelEntry] | None = Field(None, description="Override the tier's models (several side by side is fine).")
    lora: LoraConfig | None = Field(None, description="Turn on LoRA multi-tenancy (the large tier does by default).")
    domain: str | None = Field(None, description="DNS name for the endpoint (HTTPS with an ACM certificate).")
    hosted_zone_id: str | None = Field(None, alias="hostedZoneId", description="Route 53 zone of `domain` (certificate validation, latency records).")
    allowed_cidrs: list[str] = Field(
        ["10.0.0.0/8"], alias="allowedCidrs", description="Client networks allowed to the load balancer (a public service: 0.0.0.0/0, API key still required)."
    )
    allow_plain_http: bool = Field(False, alias="allowPlainHttp", description="Serve plain HTTP on the internal ALB when there is no domain (dev only).")
    hf_token_secret_arn: str | None = Field(None, alias="hfTokenSecretArn", description="Secrets Manager ARN of a Hugging Face token (gated models such as Llama).")
    spot_fraction: float | None = Field(None, alias="spotFraction", ge=0, le=1, description="Share of GPU capacity on spot, with on-demand fallback (default 0.7 in dev, 0.5 in prod).")
    # ---- prerequisites the stack installs or the user brings (CRDs, Prometheus) ----
    prometheus_url: str | None = Field(
        None,
        alias="prometheusUrl",
        description="EKS: bring your own Prometheus (its in-cluster URL, which KEDA queries) instead of the kube-prometheus-stack chart the stack installs.",
    )
    prometheus_operator_crds_installed: bool = Field(
        False,
        alias="prometheusOperatorCrdsInstalled",
        description="With prometheusUrl: confirm the Prometheus Operator CRDs (monitoring.coreos.com) are already in the cluster; preview lists them as a prerequisite.",
    )

    # --- GPU node AMI (operations) ---
    ami_version: str | None = Field(
        None,
        alias="amiVersion",
        description="AMI release of the GPU nodes: EKS `v20260818` (Karpenter al2023@v20260818), ECS `20261113`. Default: "
        "the release pinned in components/sizing/data/node_images.json. 'latest' (dev only) replaces every GPU node at each AMI release.",
        validate_default=True,
    )

    @field_validator("ami_version")
    @classmethod
    def _ami_version(cls, value: str | None, info) -> str | None:
        """The node AMI: pinned in prod, and able to run the vLLM image (the error names vllm-fleet:amiVersion)."""
        from components.sizing import node_images
        from components.vllm import DEFAULT_IMAGE

        platform, environment = info.data.get("platform"), info.data.get("environment", "dev")
        if platform is None:  # already refused
            return value
        version = value or node_images.default_ami_version(platform)
        try:
            node_images.validate_ami_version(platform, version, environment, "amiVersion")
        except InputError as exc:
            raise ValueError(exc.message) from None
        mismatch = node_images.image_ami_mismatch(DEFAULT_IMAGE, platform, version)
        if mismatch:
            raise ValueError(mismatch)
        return value

    # --- container images (operations) ---
    image_pull_through_cache: bool | None = Field(
        None,
        alias="imagePullThroughCache",
        description="Pull the vLLM image through an ECR pull-through cache of Docker Hub in each region (default: on in "
        "prod, off in dev): 100+ GPU nodes pulling anonymously from Docker Hub through NAT hit its pull limits.",
    )
    docker_hub_credential_secret: str | None = Field(
        None,
        alias="dockerHubCredentialSecret",
        description="Name of the Secrets Manager secret (`ecr-pullthroughcache/...`, username + access token) the cache "
        "uses for Docker Hub; it must exist under this name in every serving region (ECR reads it in the rule's region).",
        validate_default=True,
    )

    @field_validator("docker_hub_credential_secret")
    @classmethod
    def _docker_hub_secret(cls, value: str | None, info) -> str | None:
        from components.vllm import PULL_THROUGH_SECRET_PREFIX

        cache = info.data.get("image_pull_through_cache")
        if cache is None:
            cache = info.data.get("environment") == "prod"
        if value is not None and (not value.startswith(PULL_THROUGH_SECRET_PREFIX) or value == PULL_THROUGH_SECRET_PREFIX):
            raise ValueError(f"{value!r} must start with {PULL_THROUGH_SECRET_PREFIX!r} (ECR only uses secrets named so)")
        if cache and value is None:
            raise ValueError(
                f"required while imagePullThroughCache is on (the prod default): the name of a Secrets Manager secret "
                f"'{PULL_THROUGH_SECRET_PREFIX}...' with a Docker Hub username and access token in every serving region, "
                f"or set vllm-fleet:imagePullThroughCache: false"
            )
        return value

    @property
    def effective_image_cache(self) -> bool:
        return self.environment == "prod" if self.image_pull_through_cache is None else self.image_pull_through_cache

    @property
    def effective_ami_version(self) -> str:
        from components.sizing.node_images import default_ami_version

        return self.ami_version or default_ami_version(self.platform)

    @property
    def effective_spot_fraction(self) -> float:
        if self.spot_fraction is not None:
            return self.spot_fraction
        return 0.5 if self.environment == "prod" else 0.7

    @field_validator("regions")
    @classmethod
    def _regions(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one region")
        if len(set(value)) != len(value):
            raise ValueError("regions must be unique")
        unknown = [r for r in value if r not in priced_regions()]
        if unknown:
            raise ValueError(f"{unknown[0]!r} has no price catalog; use {', '.join(priced_regions())}")
        return value

    @model_validator(mode="after")
    def _platform_limits(self) -> "StackConfig":
        if self.allow_plain_http and self.environment == "prod":
            raise ValueError("allowPlainHttp is for dev only; prod serves HTTPS (set domain and hostedZoneId)")
        if self.prometheus_url is not None and not self.prometheus_operator_crds_installed:
            raise ValueError(
                "prometheusOperatorCrdsInstalled: must be true with vllm-fleet:prometheusUrl (confirm the Prometheus "
                "Operator CRDs the ServiceMonitors need are in the cluster), or drop prometheusUrl to install kube-prometheus-stack"
            )
        if self.prometheus_operator_crds_installed and self.prometheus_url is None:
            raise ValueError("prometheusOperatorCrdsInstalled: applies only with vllm-fleet:prometheusUrl (your own Prometheus)")
        if self.prometheus_url is not None and not self.prometheus_url.startswith(("http://", "https://")):
            raise ValueError(f"prometheusUrl: {self.prometheus_url!r} is not an http(s) URL, e.g. http://prometheus.monitoring:9090")
        if self.platform == "ecs":
            for entry in self.models or []:
                if (entry.pipeline_parallel_size or 1) > 1:
                    raise ValueError("pipelineParallelSize > 1 needs several nodes per replica: use platform eks")
        return self


def _key_names(model: type[BaseModel]) -> dict[str, str]:
    """field name and alias -> the key as written in the stack file, from the schema itself (one source of names)."""
    names = {}
    for name, field in model.model_fields.items():
        key = field.alias or name
        names[name] = names[key] = key
    return names


KEY_NAMES = _key_names(StackConfig)


def _unknown_keys(values: dict[str, object]) -> list[str]:
    """One message per misspelt key, at every level, with the closest allowed key (stdlib difflib)."""
    import difflib

    problems = []

    def check(mapping: object, model: type[BaseModel], prefix: str) -> None:
        if not isinstance(mapping, dict):
            return
        allowed = sorted({f.alias or n for n, f in model.model_fields.items()})
        for key in mapping:
            if str(key) in _key_names(model):
                continue
            close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.5)
            hint = f"did you mean {prefix}{close[0]}?" if close else f"allowed: {', '.join(allowed)}"
            problems.append(f"{prefix}{key}: unknown key; {hint}")

    check(values, StackConfig, f"{NAMESPACE}:")
    models = values.get("models")
    if isinstance(models, list):
        for i, entry in enumerate(models):
            check(entry, ModelEntry, f"{NAMESPACE}:models[{i}].")
    check(values.get("lora"), LoraConfig, f"{NAMESPACE}:lora.")
    return problems


def _error(exc: ValidationError) -> InputError:
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    head = KEY_NAMES.get(loc[0], loc[0]) if loc else "config"
    key = f"{NAMESPACE}:{head}" + "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in loc[1:])
    msg = err["msg"].removeprefix("Value error, ")
    named, sep, rest = msg.partition(": ")
    if not loc and sep and named in KEY_NAMES.values():
        # A rule over several keys names the key to change first ("prometheusUrl: ...").
        head, msg = named, rest
        key = f"{NAMESPACE}:{head}"
    if err["type"] not in ("missing", "value_error") and "input" in err:
        msg = f"got {err['input']!r}; {msg[0].lower() + msg[1:]}"
    return InputError(key, msg)


def parse_stack_config(raw: dict[str, str | object]) -> StackConfig:
    """From Pulumi config values (keys `vllm-fleet:tier`, `aws:region`; structured values may be JSON strings)."""
    import difflib

    values: dict[str, object] = {}
    problems: list[str] = []
    for full_key, value in raw.items():
        ns, _, key = str(full_key).partition(":")
        if ns != NAMESPACE:
            # `vllm_fleet:tier` would be silently ignored as another package's key: name the namespace meant.
            if key and difflib.get_close_matches(ns, [NAMESPACE], n=1, cutoff=0.7):
                problems.append(f"{full_key}: unknown namespace {ns!r}; did you mean {NAMESPACE}:{key}?")
            continue
        if isinstance(value, str) and key in ("regions", "models", "lora", "monthlyBudgetUsd", "spotFraction", "allowPlainHttp", "allowedCidrs", "imagePullThroughCache", "prometheusOperatorCrdsInstalled"):
            try:
                value = json.loads(value)
            except ValueError:
                if key == "regions":
                    value = [value]
                else:
                    raise InputError(f"{NAMESPACE}:{key}", f"not valid JSON/YAML: {value!r}") from None
        values[key] = value
    problems += _unknown_keys(values)
    if problems:
        # every misspelling at once, one line each, instead of a bare "Field required" for the key meant
        field, _, message = problems[0].partition(": ")
        raise InputError(field, "\n".join([message, *problems[1:]]))
    if "regions" not in values:
        region = raw.get("aws:region")
        values["regions"] = [region] if region else []
    try:
        return StackConfig.model_validate(values)
    except ValidationError as exc:
        raise _error(exc) from None


def read_stack_file(path: str | Path) -> tuple[str, dict[str, object]]:
    """(stack name, raw config) from a `Pulumi.<stack>.yaml` file."""
    path = Path(path)
    if not path.is_file():
        raise InputError("--stack", f"no stack file {path}")
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise InputError("--stack", f"{path} is not valid YAML ({exc.__class__.__name__})") from None
    config = doc.get("config") or {}
    if not isinstance(config, dict):
        raise InputError("--stack", f"{path}: `config` must be a mapping")
    name = path.name.removeprefix("Pulumi.").removesuffix(".yaml").removesuffix(".yml")
    return name, config


def as_pulumi_config(raw: dict[str, object]) -> dict[str, str]:
    """Config values as the Pulumi engine hands them to a program: strings, structured values as JSON."""
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in raw.items()}
