"""EcsVllmTask: one vLLM model served by an ECS service on a GpuCluster's GPU capacity, behind its ALB.

    task = EcsVllmTask("llama-8b", EcsVllmTaskArgs(
        cluster=cluster, node_pool=pool, engine=VllmEngine(model="meta-llama/Llama-3.1-8B-Instruct"),
        hf_token_secret_arn=hf_secret.arn, api_key_secret_arn=api_key.arn, min_count=2, max_count=6))

Before anything is registered, the constructor checks the model fits the pool's GPUs (the shared fit rule) and
refuses what ECS cannot run (pipeline parallelism: an ECS task lives on one instance). Then it builds:
- the task definition: GPUs = TP, CPU/memory = the task's share of the instance minus the agent's headroom,
  `vllm serve` with the engine's flags, /dev/shm sized for NCCL, memlock/nofile ulimits, a health check on
  /health, secrets (HF token, API key) from Secrets Manager (never plain environment), awslogs to a log group
  with retention, a read-only root filesystem with writable mounts for the model cache and /tmp, and a stop
  timeout inside the 2-minute spot notice;
- the execution role (logs, secrets: exactly these ARNs; ECR only for ECR images) and a task role with nothing
  attached by default;
- the service: capacity-provider strategy on the pool, spread over AZs, circuit breaker with rollback, minimum
  healthy > 0 (100 in prod), a health-check grace period of the model's whole cold start, private subnets, a
  task security group that admits only the ALB on the vLLM port, ECS Exec off;
- target group (ip targets, /health, least outstanding requests, long deregistration delay), listener rule,
  target-tracking autoscaling (ALB requests per target, optionally a custom CloudWatch metric) and alarms
  (5xx rate, p99 response time, unhealthy hosts).

LoRA (`lora=store.serving_settings()`, a components.lora_store.LoraServing): tenants' adapters are served
without a redeploy. The engine must serve LoRA through the store's resolver; an engine without LoRA gets
`lora.apply_to_engine(engine)` here (so the fit check counts the LoRA slots), an engine that enables LoRA
without the resolver is refused (the store's settings would silently replace its own). The task gains the
non-essential `lora-sync` sidecar (same awslogs configuration as vLLM, the API key to unload replaced
adapters), two task-scoped volumes, the adapters volume mounted read-only into vLLM, a START dependency on the
sidecar, and the store's read policy attached to the task role (the sidecar reads S3 with the task role).

Props (plain values, also registered as outputs: under the Pulumi CLI stack policies see a component's
registered outputs) carry what the policies read, among them `region`, `spot_fraction`, `gpus_per_task` and
`instance_type` for the budget policy (policies/rules/budget.py).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import pulumi
import pulumi_aws as aws
from pydantic import BaseModel, ConfigDict, Field

from .iam import service_trust_policy
from .lora_store import resolve_lora_engine
from .sizing.errors import InputError
from .sizing.instances import InstanceType
from .vllm import (
    API_KEY_ENV,
    HF_TOKEN_ENV,
    MODEL_CACHE_PATH,
    PULL_THROUGH_ACTIONS,
    SPOT_NOTICE_SECONDS,
    VllmEngine,
    ecr_repository_arn,
    engine_props,
)

CONTAINER_NAME = "vllm"
# ECS caps a container health check's startPeriod at 300 s (HealthCheck.startPeriod, ECS API reference). A model
# that loads for longer is covered by the service's healthCheckGracePeriodSeconds, which ECS applies to container
# health checks as well as to the load balancer's (CreateService API reference).
ECS_MAX_START_PERIOD_SECONDS = 300
# The container gets SIGTERM, then SIGKILL after this: inside the 2-minute spot notice, leaving the agent 10 s.
STOP_TIMEOUT_SECONDS = SPOT_NOTICE_SECONDS - 10
# What the instance keeps for itself: the ECS agent, Docker, the CloudWatch and SSM agents, the kernel.
AGENT_CPU_UNITS = 512
HOST_MEMORY_FRACTION = 0.90  # the ECS agent registers somewhat less than physical RAM; stay under it
HOST_MEMORY_RESERVE_MIB = 2048
HOST_CACHE_PATH = "/opt/vllm-fleet/models"  # on the instance's root volume, sized for the weights
ALB_DEREGISTRATION_MAX_SECONDS = 3600
_REGION_RE = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")


class CustomMetricScaling(BaseModel):
    """A target-tracking policy on a CloudWatch metric you publish (e.g. vLLM's queue depth via the CloudWatch agent)."""

    model_config = ConfigDict(extra="forbid")

    namespace: str = Field(description="CloudWatch namespace, e.g. 'vllm'.")
    metric_name: str = Field(description="Metric name, e.g. 'num_requests_waiting'.")
    statistic: str = Field("Average", description="Average, Maximum, Minimum, Sum or SampleCount.")
    dimensions: dict[str, str] = Field(default_factory=dict, description="Metric dimensions.")
    target_value: float = Field(description="Value the policy holds the metric at, per task.")


class EcsVllmTaskArgs(BaseModel):
    """One model on ECS. Secure defaults: API key required, secrets from Secrets Manager, exec off, private subnets."""

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    cluster: Any = Field(description="The GpuCluster (platform 'ecs') whose cluster, ALB and network the service uses.")
    node_pool: Any = Field(description="The SpotNodePool (platform 'ecs') whose capacity provider runs the tasks.")
    engine: VllmEngine = Field(description="Model and vLLM engine settings.")
    hf_token_secret_arn: Any = Field(None, description="Secrets Manager ARN of the Hugging Face token (gated models).")
    api_key_secret_arn: Any = Field(None, description="Secrets Manager ARN of the API key clients must send (VLLM_API_KEY).")
    require_api_key: bool = Field(True, description="Refuse to deploy without api_key_secret_arn; opt out only behind other auth.")
    secrets_kms_key_arn: Any = Field(None, description="Customer-managed KMS key of the secrets, if any (kms:Decrypt is granted).")
    desired_count: int | None = Field(None, description="Tasks at first deploy; None = min_count. Autoscaling owns it afterwards.")
    min_count: int = Field(1, ge=0, description="Fewest tasks autoscaling keeps (>= 2 for high availability).")
    max_count: int = Field(4, ge=1, description="Most tasks autoscaling runs.")
    min_healthy_percent: int | None = Field(
        None, description="Deployment minimum healthy percent, 1-100; None = 100 in prod, 50 in dev."
    )
    log_retention_days: int = Field(30, description="CloudWatch Logs retention of the container logs.")
    log_kms_key_arn: Any = Field(None, description="KMS key ARN to encrypt the log group; None = CloudWatch's own encryption.")
    path_pattern: str | None = Field(None, description="Listener-rule path condition, e.g. '/llama-8b/*'; default '/*' without host_header.")
    host_header: str | None = Field(None, description="Listener-rule host condition, e.g. 'llama-8b.llm.example.com'.")
    strip_path_prefix: str | None = Field(
        None, description="Prefix the ALB removes before forwarding (e.g. '/llama-8b'), so vLLM sees /v1/..."
    )
    priority: int = Field(100, description="Listener-rule priority, 1-50000, unique per listener.")
    deregistration_delay_seconds: int = Field(
        300, description="Seconds the ALB lets in-flight (streamed) requests finish on a deregistering task (>= the longest request)."
    )
    requests_per_target_per_minute: int | None = Field(
        None, description="ALBRequestCountPerTarget target; None = derived from the engine's concurrency (see default_request_target)."
    )
    custom_metric_scaling: CustomMetricScaling | None = Field(None, description="An extra target-tracking policy on your metric.")
    alarm_topic_arn: Any = Field(None, description="SNS topic the alarms notify; None = alarms without actions.")
    alarm_5xx_percent: float = Field(5.0, gt=0, le=100, description="Alarm when target 5xx exceed this % of requests (5 min).")
    alarm_p99_seconds: float = Field(60.0, gt=0, description="Alarm when p99 TargetResponseTime exceeds this (5 min).")
    task_role_policy_arns: list[Any] = Field(default_factory=list, description="Managed policies for the task role (none by default).")
    read_only_root_filesystem: bool = Field(True, description="Root filesystem read-only; the cache and /tmp are writable mounts.")
    capacity_provider_association: Any = Field(
        None,
        description="The aws.ecs.ClusterCapacityProviders associating the pool's capacity provider with the cluster, when "
        "the stack attaches several pools at once (components.ecs_capacity.attach_capacity_providers); None = the pool's own.",
    )
    lora: Any = Field(
        None,
        description="LoRA adapters to serve (components.lora_store.LoraServing, from LoraStore.serving_settings()): adds the "
        "sync sidecar, its volumes and the store's read policy on the task role; an engine without LoRA gets "
        "lora.apply_to_engine(engine).",
    )
    region: str | None = Field(
        None,
        description="Region of the provider the task is built with, recorded in props for policies (budget pricing); "
        "None = the aws:region config. Resources use the provider's own region either way.",
    )
    spot_fraction: float | None = Field(
        None,
        description="Share (0-1) of the pool's instances that are spot, recorded in props for the budget policy; "
        "None = read from the node pool when it states one (spot_fraction, or args spot/spot_percentage), else unstated.",
    )


# ----- pure rules ----------------------------------------------------------------------------------------


def refuse_pipeline_parallel(engine: VllmEngine) -> None:
    if engine.engine.pp > 1:
        raise InputError(
            "pipeline_parallel_size",
            f"pp={engine.engine.pp}: an ECS task runs on one instance and cannot span nodes; "
            "use tensor parallelism inside one instance, or platform 'eks' (LeaderWorkerSet) for multi-node models",
        )


def lora_root_volume_gib(weights_gib: float, lora_cache_gib: int) -> int:
    """Root volume an instance needs with the adapter cache: the node pool's own rule for the weights and image
    (components.spot_node_pool.root_volume_gib) plus the cache. ECS task volumes without a host path are Docker
    volumes on the instance's root volume, like the model cache."""
    from .spot_node_pool import root_volume_gib

    return root_volume_gib(weights_gib) + lora_cache_gib


def spot_fraction_of(spot: bool, spot_percentage: int, on_demand_base: int, nodes: int) -> float:
    """Share of `nodes` instances that are spot: the ASG keeps `on_demand_base` on demand, then `spot_percentage` % spot."""
    if not spot or nodes <= 0:
        return 0.0
    above = max(nodes - on_demand_base, 0)
    return round(above * spot_percentage / 100 / nodes, 4)


def pool_spot_fraction(pool: Any) -> float | None:
    """The node pool's spot share when it states one as plain values (a `spot_fraction` number, or SpotNodePoolArgs
    on `.args`: at max_nodes, the scale the budget checks), else None."""
    value = getattr(pool, "spot_fraction", None)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    pool_args = getattr(pool, "args", None)
    spot = getattr(pool_args, "spot", None)
    if isinstance(spot, bool):
        return spot_fraction_of(
            spot,
            int(getattr(pool_args, "spot_percentage", 100)),
            int(getattr(pool_args, "on_demand_base", 0)),
            int(getattr(pool_args, "max_nodes", 1)),
        )
    return None


def validate_region(region: str | None) -> str | None:
    if region is not None and not _REGION_RE.match(region):
        raise InputError("region", f"{region!r} is not an AWS region name such as 'us-east-1'")
    return region


def validate_spot_fraction(value: float | None) -> float | None:
    if value is not None and not (0.0 <= value <= 1.0 and math.isfinite(value)):
        raise InputError("spot_fraction", f"{value}; must be 0 (on demand) to 1 (all spot)")
    return value


def task_cpu_memory(instance: InstanceType, gpus_per_task: int) -> tuple[int, int]:
    """(CPU units, MiB) of a task using `gpus_per_task` of the instance's GPUs: its GPU share of what the host can give."""
    share = gpus_per_task / instance.gpu_count
    cpu = int((instance.vcpus * 1024 - AGENT_CPU_UNITS) * share) // 128 * 128
    memory = int((instance.memory_gib * 1024 * HOST_MEMORY_FRACTION - HOST_MEMORY_RESERVE_MIB) * share)
    return max(cpu, 128), memory


def shared_memory_mib(gpus_per_task: int, task_memory_mib: int) -> int:
    """/dev/shm: vLLM's multiprocessing and NCCL use it (Docker's 64 MiB default breaks TP); capped at a quarter of the task."""
    wanted = 8 * 1024 if gpus_per_task == 1 else 16 * 1024
    return min(wanted, task_memory_mib // 4)


def container_health_check(startup_seconds: int, port: int) -> dict[str, Any]:
    """GET /health from inside the container. Python is always in the vLLM image; curl is not guaranteed."""
    probe = f"python3 -c \"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{port}/health', timeout=5)\""
    return {
        "command": ["CMD-SHELL", f"{probe} || exit 1"],
        "interval": 30,
        "timeout": 10,
        "retries": 3,
        "startPeriod": min(startup_seconds, ECS_MAX_START_PERIOD_SECONDS),
    }


def default_min_healthy_percent(environment: str) -> int:
    """prod: never below the running count during a deploy (the capacity provider adds instances); dev: half."""
    return 100 if environment == "prod" else 50


def default_request_target(engine: VllmEngine) -> int:
    """Requests per task per minute to hold: half the engine's concurrent sequences busy, ~30 s per request.

    vLLM's default max_num_seqs is 256 on datacenter GPUs; a request streaming a few hundred tokens takes tens of
    seconds, so a task completes about concurrency * 2 requests a minute. Half of that leaves headroom for bursts
    while new GPU capacity (minutes) comes up.
    """
    concurrency = engine.engine.max_num_seqs or 256
    return max(10, int(concurrency * 0.5 * 60 / 30))


def secret_resource_arn(value_from: str) -> str:
    """The IAM resource of a `valueFrom`: ECS accepts 'arn:...:secret:name-AbCdEf[:json-key:version-stage:version-id]'."""
    return ":".join(value_from.split(":")[:7])


def validate_secret_arn(value: Any, field: str) -> None:
    if isinstance(value, str) and not re.match(r"^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:.+", value):
        raise InputError(field, f"{value!r} is not a Secrets Manager secret ARN (arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME)")


def listener_conditions(path_pattern: str | None, host_header: str | None) -> list[dict[str, Any]]:
    conditions: list[dict[str, Any]] = []
    if path_pattern:
        conditions.append({"path_pattern": {"values": [path_pattern]}})
    if host_header:
        conditions.append({"host_header": {"values": [host_header]}})
    return conditions or [{"path_pattern": {"values": ["/*"]}}]


def execution_policy(log_group_arn: str, secret_arns: list[str], kms_key_arns: list[str], ecr: bool | str) -> dict[str, Any]:
    """What ECS needs to start the task: write its logs, read exactly its secrets, pull from ECR if the image is there."""
    statements: list[dict[str, Any]] = [
        {"Sid": "Logs", "Effect": "Allow", "Action": ["logs:CreateLogStream", "logs:PutLogEvents"], "Resource": f"{log_group_arn}:*"}
    ]
    if secret_arns:
        statements.append(
            {"Sid": "Secrets", "Effect": "Allow", "Action": "secretsmanager:GetSecretValue",
             "Resource": sorted({secret_resource_arn(a) for a in secret_arns})}
        )
    if kms_key_arns:
        statements.append({"Sid": "SecretsKms", "Effect": "Allow", "Action": "kms:Decrypt", "Resource": sorted(kms_key_arns)})
    if ecr:
        statements.append({"Sid": "EcrAuth", "Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"})
        statements.append(
            {"Sid": "EcrPull", "Effect": "Allow", "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"], "Resource": "*"}
        )
        repository = ecr_repository_arn(ecr) if isinstance(ecr, str) else None
        if repository:
            # A pull-through-cache image: the first pull imports it and creates its repository (ECR pull-through IAM).
            statements.append({"Sid": "EcrPullThroughCache", "Effect": "Allow", "Action": list(PULL_THROUGH_ACTIONS), "Resource": repository})
    return {"Version": "2012-10-17", "Statement": statements}


def is_ecr_image(image: str) -> bool:
    return ".dkr.ecr." in image


def awslogs_configuration(log_group: str, region: str) -> dict[str, Any]:
    """The awslogs driver settings every container of the task uses (streams: vllm/<container>/<task id>)."""
    return {
        "logDriver": "awslogs",
        "options": {
            "awslogs-group": log_group,
            "awslogs-region": region,
            "awslogs-stream-prefix": CONTAINER_NAME,
            "mode": "non-blocking",  # a slow log pipe must never stall token streaming
            "max-buffer-size": "25m",
        },
    }


def container_definition(
    engine: VllmEngine,
    *,
    log_group: str,
    region: str,
    secrets: dict[str, str],
    gpus: int,
    task_memory_mib: int,
    startup_seconds: int,
    read_only_root: bool,
    lora: Any = None,
) -> dict[str, Any]:
    """The vLLM container, in the RegisterTaskDefinition shape (camelCase). With `lora` (a LoraServing) it mounts
    the adapters volume read-only and starts after the sync sidecar."""
    env = dict(engine.environment())
    if read_only_root:
        env["HOME"] = "/tmp"  # ~/.cache, ~/.config, ~/.triton of libraries that ignore XDG land on the writable /tmp
    forbidden = set(env) & {API_KEY_ENV, HF_TOKEN_ENV}
    if forbidden:  # the secrets only ever come through `secrets`
        raise InputError("engine", f"{sorted(forbidden)} must not be plain environment; pass them as secret ARNs")
    definition = {
        "name": CONTAINER_NAME,
        "image": engine.image,
        "essential": True,
        "command": engine.args(),
        "portMappings": [{"containerPort": engine.port, "hostPort": engine.port, "protocol": "tcp", "name": "http", "appProtocol": "http"}],
        "resourceRequirements": [{"type": "GPU", "value": str(gpus)}],
        "environment": [{"name": k, "value": v} for k, v in sorted(env.items())],
        "secrets": [{"name": k, "valueFrom": v} for k, v in sorted(secrets.items())],
        "healthCheck": container_health_check(startup_seconds, engine.port),
        "linuxParameters": {"sharedMemorySize": shared_memory_mib(gpus, task_memory_mib), "initProcessEnabled": True},
        "ulimits": [
            {"name": "memlock", "softLimit": -1, "hardLimit": -1},  # pinned host memory for NCCL / CUDA
            {"name": "nofile", "softLimit": 65535, "hardLimit": 65535},
            {"name": "stack", "softLimit": 67108864, "hardLimit": 67108864},
        ],
        "stopTimeout": STOP_TIMEOUT_SECONDS,
        "readonlyRootFilesystem": read_only_root,
        "mountPoints": [
            {"sourceVolume": "model-cache", "containerPath": MODEL_CACHE_PATH, "readOnly": False},
            {"sourceVolume": "tmp", "containerPath": "/tmp", "readOnly": False},
        ],
        "logConfiguration": awslogs_configuration(log_group, region),
    }
    if lora is not None:
        definition["mountPoints"].append(lora.ecs_vllm_mount_point())
        definition["dependsOn"] = lora.ecs_vllm_depends_on()
    return definition


def task_volumes() -> list[dict[str, Any]]:
    """Model cache on the instance (kept across task restarts on the same instance), /tmp per task."""
    return [
        {"name": "model-cache", "host_path": HOST_CACHE_PATH},
        {"name": "tmp", "docker_volume_configuration": {"scope": "task", "driver": "local"}},
    ]


def instance_type_constraint(instance_types: list[str]) -> dict[str, str]:
    """memberOf constraint in the ECS cluster query language: `attribute:ecs.instance-type in [a, b]`."""
    return {"type": "memberOf", "expression": f"attribute:ecs.instance-type in [{', '.join(instance_types)}]"}


def family_name(stack: str, name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "-", f"{stack}-{name}")[:255]


# ----- the component ---------------------------------------------------------------------------------------


class EcsVllmTask(pulumi.ComponentResource):
    """A vLLM model served by an ECS service behind the cluster's ALB (see module docstring)."""

    def __init__(self, name: str, args: EcsVllmTaskArgs, opts: pulumi.ResourceOptions | None = None):
        plan = _validate(name, args)
        props = plan["props"]
        super().__init__("vllm-fleet:index:EcsVllmTask", name, props, opts)
        self.props = props
        self.engine = plan["engine"]  # the engine served: with LoRA, the store's settings applied
        self._build(name, args, plan)
        # Under the Pulumi CLI, stack policies see a component's registered outputs, not its inputs: props go too.
        self.register_outputs(
            {
                **props,
                "serviceName": self.service.name,
                "taskDefinitionArn": self.task_definition.arn,
                "targetGroupArn": self.target_group.arn,
                "logGroupName": self.log_group.name,
            }
        )

    # -- resources
    def _build(self, name: str, args: EcsVllmTaskArgs, plan: dict[str, Any]) -> None:
        cluster, pool, engine, lora = args.cluster, args.node_pool, plan["engine"], args.lora
        ecs = cluster.ecs
        network = cluster.network
        child = pulumi.ResourceOptions(parent=self)
        invoke = pulumi.InvokeOutputOptions(parent=self)
        account = aws.get_caller_identity_output(opts=invoke).account_id
        region = aws.get_region_output(opts=invoke).region

        self.log_group = aws.cloudwatch.LogGroup(
            f"{name}-logs",
            name=f"/vllm-fleet/{plan['family']}",
            retention_in_days=args.log_retention_days,
            kms_key_id=args.log_kms_key_arn,
            tags={"Name": f"{name}-logs"},
            opts=child,
        )

        secrets: dict[str, Any] = {}
        if args.hf_token_secret_arn is not None:
            secrets[HF_TOKEN_ENV] = args.hf_token_secret_arn
        if args.api_key_secret_arn is not None:
            secrets[API_KEY_ENV] = args.api_key_secret_arn
        secret_names = sorted(secrets)

        trust = account.apply(lambda a: service_trust_policy("ecs-tasks.amazonaws.com", a))
        self.execution_role = aws.iam.Role(f"{name}-execution-role", assume_role_policy=trust, tags={"Name": f"{name}-execution-role"}, opts=child)
        kms = [k for k in [args.secrets_kms_key_arn] if k is not None]
        # The image itself when it is in ECR (its repository scopes the pull-through actions), else False.
        ecr = engine.image if is_ecr_image(engine.image) else False
        policy = pulumi.Output.all(self.log_group.arn, [secrets[k] for k in secret_names], kms).apply(
            lambda a: json.dumps(execution_policy(a[0], list(a[1]), list(a[2]), ecr))
        )
        self.execution_policy = aws.iam.RolePolicy(f"{name}-execution-policy", role=self.execution_role.id, policy=policy, opts=child)

        self.task_role = aws.iam.Role(f"{name}-task-role", assume_role_policy=trust, tags={"Name": f"{name}-task-role"}, opts=child)
        for i, arn in enumerate(args.task_role_policy_arns):
            aws.iam.RolePolicyAttachment(f"{name}-task-policy-{i}", role=self.task_role.name, policy_arn=arn, opts=child)
        self.lora_read_attachment = None
        if lora is not None:
            # The sync sidecar lists and reads the adapters with the task role (awsvpc tasks never see the instance role).
            self.lora_read_attachment = aws.iam.RolePolicyAttachment(
                f"{name}-lora-read", role=self.task_role.name, policy_arn=lora.read_policy_arn, opts=child
            )

        def definitions(a: list[Any]) -> Any:
            log_group, log_region, secret_values = a[0], a[1], dict(zip(secret_names, a[2]))
            vllm = container_definition(
                engine,
                log_group=log_group,
                region=log_region,
                secrets=secret_values,
                gpus=plan["gpus"],
                task_memory_mib=plan["memory"],
                startup_seconds=plan["startup_seconds"],
                read_only_root=args.read_only_root_filesystem,
                lora=lora,
            )
            if lora is None:
                return json.dumps([vllm])
            sidecar = lora.ecs_container_definition_output(
                api_key_secret_arn=secret_values.get(API_KEY_ENV),
                log_configuration=awslogs_configuration(log_group, log_region),
            )
            return sidecar.apply(lambda side: json.dumps([vllm, side]))

        container = pulumi.Output.all(self.log_group.name, region, [secrets[k] for k in secret_names]).apply(definitions)
        volumes = task_volumes() + (lora.ecs_volumes() if lora is not None else [])
        self.task_definition = aws.ecs.TaskDefinition(
            f"{name}-task",
            family=plan["family"],
            requires_compatibilities=["EC2"],
            network_mode="awsvpc",
            cpu=str(plan["cpu"]),
            memory=str(plan["memory"]),
            execution_role_arn=self.execution_role.arn,
            task_role_arn=self.task_role.arn,
            container_definitions=container,
            volumes=volumes,
            # Only on the pool's instance types: the capacity provider already places there, this also holds if the
            # cluster gains other capacity, and the GPU-memory-fit policy reads the instance types from it. (Not a
            # comma-separated tag: ECS tag values do not allow commas.)
            placement_constraints=[instance_type_constraint(plan["instance_types"])],
            tags={"Name": f"{name}-task"},
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[self.execution_policy] + ([self.lora_read_attachment] if self.lora_read_attachment else []),
            ),
        )

        self.task_security_group = aws.ec2.SecurityGroup(
            f"{name}-task-sg",
            description=f"{name} vLLM tasks: only the load balancer in, HTTPS out",
            vpc_id=network.vpc_id,
            ingress=[
                {"protocol": "tcp", "from_port": engine.port, "to_port": engine.port,
                 "security_groups": [ecs.alb_security_group.id], "description": "ALB to vLLM"}
            ],
            egress=[{"protocol": "tcp", "from_port": 443, "to_port": 443, "cidr_blocks": ["0.0.0.0/0"],
                     "description": "model hub, S3, Secrets Manager, CloudWatch"}],
            tags={"Name": f"{name}-task-sg"},
            opts=child,
        )

        self.target_group = aws.lb.TargetGroup(
            f"{name}-tg",
            target_type="ip",
            protocol="HTTP",
            protocol_version="HTTP1",
            port=engine.port,
            vpc_id=network.vpc_id,
            # Long, uneven LLM requests: send new ones to the task with the fewest in flight, not round robin.
            load_balancing_algorithm_type="least_outstanding_requests",
            deregistration_delay=args.deregistration_delay_seconds,
            slow_start=0,
            stickiness={"type": "lb_cookie", "enabled": False},
            health_check={
                "enabled": True,
                "path": "/health",
                "port": "traffic-port",
                "protocol": "HTTP",
                "matcher": "200",
                "interval": 15,
                "timeout": 5,
                "healthy_threshold": 2,
                "unhealthy_threshold": 3,
            },
            tags={"Name": f"{name}-tg"},
            opts=child,
        )

        rule_args: dict[str, Any] = {}
        if args.strip_path_prefix:
            prefix = re.escape(args.strip_path_prefix.rstrip("/"))
            rule_args["transforms"] = [
                {"type": "url-rewrite", "url_rewrite_config": {"rewrite": {"regex": f"^{prefix}/(.*)$", "replace": "/$1"}}}
            ]
        self.listener_rule = aws.lb.ListenerRule(
            f"{name}-rule",
            listener_arn=ecs.listener.arn,
            priority=args.priority,
            conditions=listener_conditions(args.path_pattern, args.host_header),
            actions=[{"type": "forward", "target_group_arn": self.target_group.arn}],
            tags={"Name": f"{name}-rule"},
            opts=child,
            **rule_args,
        )

        self.service = aws.ecs.Service(
            f"{name}-service",
            cluster=ecs.cluster.arn,
            task_definition=self.task_definition.arn,
            desired_count=plan["desired_count"],
            capacity_provider_strategies=[{"capacity_provider": pool.capacity_provider_name, "weight": 1, "base": 0}],
            ordered_placement_strategies=[
                {"type": "spread", "field": "attribute:ecs.availability-zone"},
                {"type": "binpack", "field": "memory"},  # then fill instances, so empty ones can scale in
            ],
            availability_zone_rebalancing="ENABLED",
            deployment_circuit_breaker={"enable": True, "rollback": True},
            deployment_minimum_healthy_percent=plan["min_healthy_percent"],
            deployment_maximum_percent=200,
            health_check_grace_period_seconds=plan["grace_period_seconds"],
            load_balancers=[{"target_group_arn": self.target_group.arn, "container_name": CONTAINER_NAME, "container_port": engine.port}],
            network_configuration={
                "subnets": list(network.private_subnet_ids),
                "security_groups": [self.task_security_group.id],
                "assign_public_ip": False,
            },
            enable_execute_command=False,
            enable_ecs_managed_tags=True,
            propagate_tags="SERVICE",
            wait_for_steady_state=False,  # a cold start can take longer than a deploy should block
            tags={"Name": f"{name}-service"},
            # The target group must be attached to the ALB (by the rule) before ECS registers tasks in it; the
            # capacity provider must be associated with the cluster before a service names it in its strategy
            # (the pool component: its children include its own association). Autoscaling owns desired_count
            # after the first deploy.
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=[self.listener_rule, *_association(args)], ignore_changes=["desiredCount"]
            ),
        )

        resource_id = pulumi.Output.concat("service/", ecs.cluster.name, "/", self.service.name)
        self.scaling_target = aws.appautoscaling.Target(
            f"{name}-scaling",
            service_namespace="ecs",
            scalable_dimension="ecs:service:DesiredCount",
            resource_id=resource_id,
            min_capacity=args.min_count,
            max_capacity=args.max_count,
            opts=child,
        )
        self.request_policy = aws.appautoscaling.Policy(
            f"{name}-requests-per-target",
            policy_type="TargetTrackingScaling",
            service_namespace=self.scaling_target.service_namespace,
            scalable_dimension=self.scaling_target.scalable_dimension,
            resource_id=self.scaling_target.resource_id,
            target_tracking_scaling_policy_configuration={
                "target_value": plan["request_target"],
                "predefined_metric_specification": {
                    "predefined_metric_type": "ALBRequestCountPerTarget",
                    "resource_label": pulumi.Output.concat(ecs.alb.arn_suffix, "/", self.target_group.arn_suffix),
                },
                "scale_out_cooldown": 60,
                # Scale in slowly: a new GPU task costs a cold start of minutes.
                "scale_in_cooldown": max(300, plan["startup_seconds"]),
            },
            opts=child,
        )
        self.custom_policy = None
        if args.custom_metric_scaling is not None:
            m = args.custom_metric_scaling
            self.custom_policy = aws.appautoscaling.Policy(
                f"{name}-custom-metric",
                policy_type="TargetTrackingScaling",
                service_namespace=self.scaling_target.service_namespace,
                scalable_dimension=self.scaling_target.scalable_dimension,
                resource_id=self.scaling_target.resource_id,
                target_tracking_scaling_policy_configuration={
                    "target_value": m.target_value,
                    "customized_metric_specification": {
                        "namespace": m.namespace,
                        "metric_name": m.metric_name,
                        "statistic": m.statistic,
                        "dimensions": [{"name": k, "value": v} for k, v in sorted(m.dimensions.items())],
                    },
                    "scale_out_cooldown": 60,
                    "scale_in_cooldown": max(300, plan["startup_seconds"]),
                },
                opts=child,
            )

        self.alarms = self._alarms(name, args, ecs.alb.arn_suffix, self.target_group.arn_suffix, child)

    def _alarms(self, name: str, args: EcsVllmTaskArgs, alb_suffix, tg_suffix, child) -> dict[str, aws.cloudwatch.MetricAlarm]:
        actions = [args.alarm_topic_arn] if args.alarm_topic_arn is not None else []
        dims = {"LoadBalancer": alb_suffix, "TargetGroup": tg_suffix}
        common = dict(alarm_actions=actions, ok_actions=actions, opts=child)
        alarms = {}
        alarms["5xx"] = aws.cloudwatch.MetricAlarm(
            f"{name}-5xx-rate",
            alarm_description=f"{name}: target 5xx above {args.alarm_5xx_percent:g}% of requests",
            comparison_operator="GreaterThanThreshold",
            threshold=args.alarm_5xx_percent,
            evaluation_periods=3,
            datapoints_to_alarm=2,
            treat_missing_data="notBreaching",
            metric_queries=[
                {"id": "errors", "return_data": False, "metric": {"namespace": "AWS/ApplicationELB",
                 "metric_name": "HTTPCode_Target_5XX_Count", "stat": "Sum", "period": 300, "dimensions": dims}},
                {"id": "requests", "return_data": False, "metric": {"namespace": "AWS/ApplicationELB",
                 "metric_name": "RequestCount", "stat": "Sum", "period": 300, "dimensions": dims}},
                {"id": "rate", "return_data": True, "label": "5xx %", "expression": "IF(requests > 0, 100 * errors / requests, 0)"},
            ],
            **common,
        )
        alarms["p99"] = aws.cloudwatch.MetricAlarm(
            f"{name}-p99-latency",
            alarm_description=f"{name}: p99 target response time above {args.alarm_p99_seconds:g} s",
            namespace="AWS/ApplicationELB",
            metric_name="TargetResponseTime",
            extended_statistic="p99",
            dimensions=dims,
            period=300,
            evaluation_periods=3,
            datapoints_to_alarm=2,
            threshold=args.alarm_p99_seconds,
            comparison_operator="GreaterThanThreshold",
            treat_missing_data="notBreaching",
            **common,
        )
        alarms["unhealthy"] = aws.cloudwatch.MetricAlarm(
            f"{name}-unhealthy-hosts",
            alarm_description=f"{name}: tasks failing the load balancer's /health check",
            namespace="AWS/ApplicationELB",
            metric_name="UnHealthyHostCount",
            statistic="Maximum",
            dimensions=dims,
            period=60,
            evaluation_periods=5,
            datapoints_to_alarm=3,
            threshold=0,
            comparison_operator="GreaterThanThreshold",
            treat_missing_data="notBreaching",
            **common,
        )
        return alarms


def _association(args: EcsVllmTaskArgs) -> list[pulumi.Resource]:
    """What the service waits for before naming the pool's capacity provider: the given association, else the
    node pool component (Pulumi expands a component into its children, its own association among them)."""
    if args.capacity_provider_association is not None:
        return [args.capacity_provider_association]
    return [args.node_pool] if isinstance(args.node_pool, pulumi.Resource) else []


def _validate(name: str, args: EcsVllmTaskArgs) -> dict[str, Any]:
    """Every check on plain values, before any resource; returns the plain plan the resources are built from."""
    cluster, pool = args.cluster, args.node_pool
    if getattr(cluster, "platform", None) != "ecs" or getattr(cluster, "ecs", None) is None:
        raise InputError("cluster", "EcsVllmTask needs a GpuCluster with platform 'ecs'; use VllmService on EKS")
    if getattr(pool, "platform", None) != "ecs" or getattr(pool, "capacity_provider_name", None) is None:
        raise InputError("node_pool", "EcsVllmTask needs a SpotNodePool with platform 'ecs' (it provides the capacity provider)")
    engine = resolve_lora_engine(args.engine, args.lora)  # before the fit check: the LoRA slots take GPU memory
    refuse_pipeline_parallel(engine)
    engine.require_fit(pool.gpu, pool.gpus_per_node)
    pool_volume = getattr(pool, "root_volume_gib", None)
    if isinstance(pool_volume, int) and not isinstance(pool_volume, bool):
        # The model cache is a Docker volume on the instance's root volume: it must hold the whole download.
        from .spot_node_pool import disk_holds_download, root_volume_gib

        need = root_volume_gib(engine.download_gib())
        if not disk_holds_download(pool_volume, engine.download_gib()):
            raise InputError(
                "node_pool",
                f"{engine.model} downloads a {engine.checkpoint_gib():.1f} GiB checkpoint into the instances' root volume, and the "
                f"node pool's {pool_volume} GiB cannot hold it with the image; give the node pool root_volume_gib >= {need} "
                f"(or model_weights_gib={engine.download_gib():.1f})",
            )
    if args.lora is not None and isinstance(pool_volume, int) and not isinstance(pool_volume, bool):
        need = lora_root_volume_gib(engine.download_gib(), args.lora.cache_size_gib)
        if pool_volume < need:
            raise InputError(
                "lora",
                f"the adapter cache ({args.lora.cache_size_gib} GiB) lives on the instances' root volume, and the node pool's "
                f"{pool_volume} GiB cannot hold it with the weights and image; give the node pool root_volume_gib >= {need}",
            )
    region = validate_region(args.region if args.region is not None else pulumi.Config("aws").get("region"))
    spot_fraction = validate_spot_fraction(args.spot_fraction if args.spot_fraction is not None else pool_spot_fraction(pool))

    if args.require_api_key and args.api_key_secret_arn is None:
        raise InputError(
            "api_key_secret_arn",
            "vLLM would serve without authentication; give the ARN of a Secrets Manager secret holding the API key, "
            "or set require_api_key=False if something in front authenticates",
        )
    association = args.capacity_provider_association
    if association is not None and not isinstance(association, pulumi.Resource):
        raise InputError(
            "capacity_provider_association",
            f"expected the aws.ecs.ClusterCapacityProviders from attach_capacity_providers, got {type(association).__name__}",
        )
    validate_secret_arn(args.api_key_secret_arn, "api_key_secret_arn")
    validate_secret_arn(args.hf_token_secret_arn, "hf_token_secret_arn")
    from .network import validate_log_retention

    validate_log_retention(args.log_retention_days, "log_retention_days")
    if args.min_count > args.max_count:
        raise InputError("min_count", f"{args.min_count} is above max_count ({args.max_count})")
    desired = args.min_count if args.desired_count is None else args.desired_count
    if not args.min_count <= desired <= args.max_count:
        raise InputError("desired_count", f"{desired}; must be between min_count ({args.min_count}) and max_count ({args.max_count})")
    environment = getattr(cluster, "environment", "dev")
    min_healthy = args.min_healthy_percent if args.min_healthy_percent is not None else default_min_healthy_percent(environment)
    if not 1 <= min_healthy <= 100:
        raise InputError("min_healthy_percent", f"{min_healthy}; must be 1-100 (0 would stop every task before a deploy)")
    if not 1 <= args.priority <= 50000:
        raise InputError("priority", f"{args.priority}; listener rule priorities are 1-50000")
    if not 0 <= args.deregistration_delay_seconds <= ALB_DEREGISTRATION_MAX_SECONDS:
        raise InputError("deregistration_delay_seconds", f"{args.deregistration_delay_seconds}; the ALB allows 0-3600 s")
    if args.path_pattern and not args.path_pattern.startswith("/"):
        raise InputError("path_pattern", f"{args.path_pattern!r} must start with '/', e.g. '/llama-8b/*'")
    if args.strip_path_prefix:
        if not args.strip_path_prefix.startswith("/") or args.strip_path_prefix.rstrip("/") == "":
            raise InputError("strip_path_prefix", f"{args.strip_path_prefix!r} must be a path prefix such as '/llama-8b'")
        if not args.path_pattern or not args.path_pattern.startswith(args.strip_path_prefix.rstrip("/")):
            raise InputError("strip_path_prefix", f"{args.strip_path_prefix!r} needs a path_pattern under it, e.g. '{args.strip_path_prefix.rstrip('/')}/*'")
    if args.requests_per_target_per_minute is not None and args.requests_per_target_per_minute < 1:
        raise InputError("requests_per_target_per_minute", f"{args.requests_per_target_per_minute}; must be >= 1")

    instance: InstanceType = pool.instance
    gpus = engine.engine.tp
    cpu, memory = task_cpu_memory(instance, gpus)
    startup = engine.startup_seconds(instance.network_gbps)
    grace = startup  # the whole cold start: pull, download, load, compile
    family = family_name(pulumi.get_stack(), name)
    props = {
        "platform": "ecs",
        **engine_props(engine),
        "gpu": pool.gpu.name,
        "gpu_memory_gib": pool.gpu.memory_gib,
        "instance_type": instance.name,
        "min_count": args.min_count,
        "max_count": args.max_count,
        "min_healthy_percent": min_healthy,
        "environment": environment,
        "checkpoint_gib": round(engine.checkpoint_gib(), 1),
        "load_format": engine.load_format,
        "node_disk_gib": pool_volume if isinstance(pool_volume, int) and not isinstance(pool_volume, bool) else None,
        "startup_seconds": startup,
        "health_check_grace_period_seconds": grace,
        "api_key_required": args.api_key_secret_arn is not None,
        "gpus_per_task": gpus,
        "region": region,
        "spot_fraction": spot_fraction,
        "lora": args.lora is not None,
        "lora_cache_gib": args.lora.cache_size_gib if args.lora is not None else None,
    }
    return {
        "engine": engine,
        "props": props,
        "gpus": gpus,
        "cpu": cpu,
        "memory": memory,
        "startup_seconds": startup,
        "grace_period_seconds": grace,
        "min_healthy_percent": min_healthy,
        "desired_count": desired,
        "request_target": args.requests_per_target_per_minute or default_request_target(engine),
        "family": family,
        "instance_types": list(getattr(pool, "instance_types", None) or [instance.name]),
    }


__all__ = [
    "EcsVllmTask",
    "EcsVllmTaskArgs",
    "CustomMetricScaling",
    "awslogs_configuration",
    "container_definition",
    "container_health_check",
    "default_min_healthy_percent",
    "default_request_target",
    "execution_policy",
    "listener_conditions",
    "lora_root_volume_gib",
    "pool_spot_fraction",
    "refuse_pipeline_parallel",
    "secret_resource_arn",
    "shared_memory_mib",
    "spot_fraction_of",
    "task_cpu_memory",
    "task_volumes",
    "validate_region",
    "validate_spot_fraction",
]
