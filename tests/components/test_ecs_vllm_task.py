"""components/ecs_vllm_task.py: EcsVllmTask on a GpuCluster(platform="ecs") and an ECS node pool, under the mock runtime.

The builders at the top (build_stack / run_stack / StandInPool) are reused by test_ecs_api_shapes.py.
SpotNodePool is used when it exists; until then a stand-in ComponentResource calls build_ecs_capacity with the
contract's arguments and exposes the same attributes (platform, gpu, gpus_per_node, instance_types, instance,
capacity_provider_name).
"""
from __future__ import annotations

from typing import Any

import pulumi

from components.ecs_capacity import build_ecs_capacity
from components.ecs_vllm_task import EcsVllmTask, EcsVllmTaskArgs
from components.gpu_cluster import GpuCluster, GpuClusterArgs
from components.sizing.engine import EngineConfig
from components.sizing.instances import get_instance
from components.vllm import VllmEngine
from stacks.offline import run_offline

CERT = "arn:aws:acm:us-east-1:123456789012:certificate/0000"
API_KEY = "arn:aws:secretsmanager:us-east-1:123456789012:secret:vllm/api-key-AbCdEf"
HF_TOKEN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:vllm/hf-token-GhIjKl"


class StandInPool(pulumi.ComponentResource):
    """What SpotNodePool(platform='ecs') exposes, built through the same build_ecs_capacity call."""

    def __init__(self, name: str, cluster: GpuCluster, instance_types: list[str], environment: str,
                 min_size: int = 0, max_size: int = 4, on_demand_base: int = 0, spot_percentage: int = 70,
                 root_volume_gib: int = 500, attach_to_cluster: bool = True):
        super().__init__("vllm-fleet:test:StandInPool", name, {}, None)
        self.platform = "ecs"
        self.instance_types = instance_types
        self.instance = min((get_instance(t) for t in instance_types), key=lambda i: i.vcpus)
        self.gpu = self.instance.gpu
        self.gpus_per_node = self.instance.gpu_count
        self.root_volume_gib = root_volume_gib
        self.parts = build_ecs_capacity(
            self, name, cluster_name=cluster.cluster_name, network=cluster.network, instance_types=instance_types,
            min_size=min_size, max_size=max_size, on_demand_base=on_demand_base, spot_percentage=spot_percentage,
            root_volume_gib=root_volume_gib, environment=environment, attach_to_cluster=attach_to_cluster,
        )
        self.capacity_provider_name = self.parts.capacity_provider.name
        self.register_outputs({})


def make_engine(model: str, **engine: Any) -> VllmEngine:
    return VllmEngine(model=model, engine=EngineConfig(**engine))


def build_stack(
    engine: VllmEngine,
    instance_types: list[str],
    *,
    environment: str = "prod",
    task_name: str = "llm",
    cluster_options: dict | None = None,
    lora_store: dict | None = None,
    pool_args: dict | None = None,
    **task_args: Any,
) -> dict[str, Any]:
    """The Pulumi program: GpuCluster(ecs) + pool + EcsVllmTask. Returns the objects it made (filled when run).

    `lora_store`: LoraStoreArgs fields; a LoraStore is built too and its serving settings passed as `lora`."""
    made: dict[str, Any] = {}

    def program():
        cluster = GpuCluster(
            "gpu",
            GpuClusterArgs(platform="ecs", environment=environment, ecs=cluster_options or {"certificate_arn": CERT}),
        )
        pool = StandInPool("pool", cluster, instance_types, environment, **(pool_args or {}))
        args = dict(cluster=cluster, node_pool=pool, engine=engine, api_key_secret_arn=API_KEY, hf_token_secret_arn=HF_TOKEN)
        if lora_store is not None:
            from components.lora_store import LoraStore, LoraStoreArgs

            made["store"] = LoraStore("adapters", LoraStoreArgs(**lora_store))
            args["lora"] = made["store"].serving_settings()
        args.update(task_args)
        made["cluster"], made["pool"] = cluster, pool
        made["task"] = EcsVllmTask(task_name, EcsVllmTaskArgs(**args))

    made["program"] = program
    return made


def run_stack(engine: VllmEngine, instance_types: list[str], **kw: Any):
    made = build_stack(engine, instance_types, **kw)
    run = run_offline(made["program"], region="us-east-1")
    return run, made


# =====================================================================================================================
# tests
# =====================================================================================================================

import json  # noqa: E402

import pytest  # noqa: E402

from components.ecs_vllm_task import (  # noqa: E402
    STOP_TIMEOUT_SECONDS,
    container_health_check,
    default_min_healthy_percent,
    default_request_target,
    execution_policy,
    listener_conditions,
    secret_resource_arn,
    shared_memory_mib,
    task_cpu_memory,
)
from components.sizing.errors import DoesNotFit, InputError  # noqa: E402

LLAMA_8B = "meta-llama/Llama-3.1-8B-Instruct"
LLAMA_70B = "meta-llama/Llama-3.1-70B-Instruct"
TD = "aws:ecs/taskDefinition:TaskDefinition"


def _container(run) -> dict:
    defs = json.loads(run.one(TD).inputs["containerDefinitions"])
    assert len(defs) == 1
    return defs[0]


@pytest.fixture(scope="module")
def small():
    """Llama-3.1-8B on one L40S (g6e.xlarge), prod."""
    return run_stack(make_engine(LLAMA_8B, max_model_len=8192), ["g6e.xlarge", "g6e.2xlarge"], min_count=2, max_count=6)


# ----- pure rules ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "instance, gpus, cpu, memory",
    [
        ("g6e.xlarge", 1, 3584, 27443),  # 4 vCPU, 32 GiB: all but the agent's share
        ("p4d.24xlarge", 2, 24448, 264908),  # a quarter of 96 vCPU / 1152 GiB
        ("p5.48xlarge", 8, 196096, 1885388),  # the whole instance
        ("g6e.12xlarge", 1, 12160, 87961),
    ],
)
def test_task_cpu_memory(instance, gpus, cpu, memory):
    inst = get_instance(instance)
    assert task_cpu_memory(inst, gpus) == (cpu, memory)
    # never more than the instance registers, per GPU share
    assert cpu <= inst.vcpus * 1024 * gpus / inst.gpu_count
    assert memory <= inst.memory_gib * 1024 * gpus / inst.gpu_count


@pytest.mark.parametrize("gpus, memory, shm", [(1, 27443, 6860), (1, 200000, 8192), (8, 1885388, 16384), (2, 264929, 16384)])
def test_shared_memory(gpus, memory, shm):
    assert shared_memory_mib(gpus, memory) == shm


@pytest.mark.parametrize("startup, start_period", [(120, 120), (300, 300), (1140, 300)])
def test_health_check_start_period_capped_at_ecs_limit(startup, start_period):
    check = container_health_check(startup, 8000)
    assert check["startPeriod"] == start_period
    assert "http://127.0.0.1:8000/health" in check["command"][1]
    assert check["command"][0] == "CMD-SHELL"


@pytest.mark.parametrize("env, pct", [("prod", 100), ("dev", 50)])
def test_default_min_healthy(env, pct):
    assert default_min_healthy_percent(env) == pct


@pytest.mark.parametrize("seqs, target", [(None, 256), (64, 64), (8, 10)])
def test_default_request_target(seqs, target):
    assert default_request_target(make_engine(LLAMA_8B, max_num_seqs=seqs)) == target


@pytest.mark.parametrize(
    "value, resource",
    [
        ("arn:aws:secretsmanager:us-east-1:123456789012:secret:k-AbCdEf", "arn:aws:secretsmanager:us-east-1:123456789012:secret:k-AbCdEf"),
        ("arn:aws:secretsmanager:us-east-1:123456789012:secret:k-AbCdEf:token::", "arn:aws:secretsmanager:us-east-1:123456789012:secret:k-AbCdEf"),
    ],
)
def test_secret_resource_arn(value, resource):
    assert secret_resource_arn(value) == resource


@pytest.mark.parametrize(
    "path, host, expected",
    [
        (None, None, [{"path_pattern": {"values": ["/*"]}}]),
        ("/llama/*", None, [{"path_pattern": {"values": ["/llama/*"]}}]),
        (None, "llama.example.com", [{"host_header": {"values": ["llama.example.com"]}}]),
        ("/v1/*", "a.example.com", [{"path_pattern": {"values": ["/v1/*"]}}, {"host_header": {"values": ["a.example.com"]}}]),
    ],
)
def test_listener_conditions(path, host, expected):
    assert listener_conditions(path, host) == expected


def test_execution_policy_exact_resources():
    doc = execution_policy("arn:lg", ["arn:aws:secretsmanager:r:1:secret:a-1:key::", "arn:aws:secretsmanager:r:1:secret:b-2"], [], False)
    assert doc["Statement"] == [
        {"Sid": "Logs", "Effect": "Allow", "Action": ["logs:CreateLogStream", "logs:PutLogEvents"], "Resource": "arn:lg:*"},
        {"Sid": "Secrets", "Effect": "Allow", "Action": "secretsmanager:GetSecretValue",
         "Resource": ["arn:aws:secretsmanager:r:1:secret:a-1", "arn:aws:secretsmanager:r:1:secret:b-2"]},
    ]
    with_ecr = execution_policy("arn:lg", [], ["arn:kms"], True)
    assert [s["Sid"] for s in with_ecr["Statement"]] == ["Logs", "SecretsKms", "EcrAuth", "EcrPull"]


# ----- the task definition ----------------------------------------------------------------------------------


def test_task_definition_shape(small):
    run, _ = small
    td = run.one(TD).inputs
    assert td["requiresCompatibilities"] == ["EC2"]
    assert td["networkMode"] == "awsvpc"
    assert td["family"] == "offline-llm"
    assert (td["cpu"], td["memory"]) == ("3584", "27443")
    assert td["executionRoleArn"].endswith(":llm-execution-role") and td["taskRoleArn"].endswith(":llm-task-role")
    assert {v["name"] for v in td["volumes"]} == {"model-cache", "tmp"}


def test_container_gpus_command_port(small):
    run, made = small
    c = _container(run)
    assert c["resourceRequirements"] == [{"type": "GPU", "value": "1"}]
    assert c["command"][0] == LLAMA_8B
    assert c["command"] == make_engine(LLAMA_8B, max_model_len=8192).args()
    assert c["portMappings"][0]["containerPort"] == 8000
    assert c["essential"] is True


def test_secrets_from_secrets_manager_never_environment(small):
    run, _ = small
    c = _container(run)
    env_names = {e["name"] for e in c["environment"]}
    assert not env_names & {"HF_TOKEN", "VLLM_API_KEY", "HUGGING_FACE_HUB_TOKEN"}
    assert c["secrets"] == [{"name": "HF_TOKEN", "valueFrom": HF_TOKEN}, {"name": "VLLM_API_KEY", "valueFrom": API_KEY}]
    assert "hf-token" not in json.dumps(c["environment"])


def test_container_hardening_and_spot_stop(small):
    run, _ = small
    c = _container(run)
    assert c["stopTimeout"] == STOP_TIMEOUT_SECONDS == 110 < 120
    assert {"name": "memlock", "softLimit": -1, "hardLimit": -1} in c["ulimits"]
    assert any(u["name"] == "nofile" and u["softLimit"] >= 65535 for u in c["ulimits"])
    assert c["linuxParameters"]["sharedMemorySize"] == 6860
    assert c["readonlyRootFilesystem"] is True
    assert {m["containerPath"] for m in c["mountPoints"]} == {"/models", "/tmp"}
    assert c["healthCheck"]["startPeriod"] == 300  # ECS's cap; the service grace period covers the rest


def test_logs_to_cloudwatch_with_retention(small):
    run, _ = small
    group = run.one("aws:cloudwatch/logGroup:LogGroup", "llm-logs").inputs
    assert group["retentionInDays"] == 30
    logs = _container(run)["logConfiguration"]
    assert logs["logDriver"] == "awslogs"
    assert logs["options"]["awslogs-group"] == group["name"] == "/vllm-fleet/offline-llm"
    assert logs["options"]["awslogs-region"] == "us-east-1"


def test_execution_role_least_privilege(small):
    run, _ = small
    policy = json.loads(run.one("aws:iam/rolePolicy:RolePolicy", "llm-execution-policy").inputs["policy"])
    by_sid = {s["Sid"]: s for s in policy["Statement"]}
    assert set(by_sid) == {"Logs", "Secrets"}  # Docker Hub image: no ECR
    assert by_sid["Secrets"]["Resource"] == sorted([API_KEY, HF_TOKEN])
    assert by_sid["Logs"]["Resource"].endswith(":llm-logs:*")
    trust = json.loads(run.one("aws:iam/role:Role", "llm-execution-role").inputs["assumeRolePolicy"])["Statement"][0]
    assert trust["Principal"] == {"Service": "ecs-tasks.amazonaws.com"}
    assert trust["Condition"] == {"StringEquals": {"aws:SourceAccount": "123456789012"}}


def test_task_role_has_nothing_by_default(small):
    run, made = small
    task_urn = run.one("vllm-fleet:index:EcsVllmTask").urn
    attached = [r for r in run.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment") if r.parent == task_urn]
    inline = [r for r in run.of_type("aws:iam/rolePolicy:RolePolicy") if r.inputs["role"] == "llm-task-role-id"]
    assert attached == [] and inline == []


def test_task_role_extra_policies():
    run, _ = run_stack(make_engine(LLAMA_8B, max_model_len=8192), ["g6e.xlarge"],
                       task_role_policy_arns=["arn:aws:iam::123456789012:policy/read-loras"])
    att = run.one("aws:iam/rolePolicyAttachment:RolePolicyAttachment", "llm-task-policy-0").inputs
    assert att["policyArn"] == "arn:aws:iam::123456789012:policy/read-loras"


# ----- the service ------------------------------------------------------------------------------------------


def test_service_deployment_safety(small):
    run, made = small
    svc = run.one("aws:ecs/service:Service", "llm-service").inputs
    assert svc["deploymentCircuitBreaker"] == {"enable": True, "rollback": True}
    assert svc["deploymentMinimumHealthyPercent"] == 100  # prod
    assert svc["deploymentMinimumHealthyPercent"] > 0
    startup = make_engine(LLAMA_8B, max_model_len=8192).startup_seconds(get_instance("g6e.xlarge").network_gbps)
    assert svc["healthCheckGracePeriodSeconds"] >= startup
    assert svc["healthCheckGracePeriodSeconds"] == made["task"].props["health_check_grace_period_seconds"] == 390
    assert svc["enableExecuteCommand"] is False
    assert svc["propagateTags"] == "SERVICE"
    assert svc["desiredCount"] == 2


def test_service_grace_period_longer_than_model_load():
    """The 405B-FP8 cold start is far beyond ECS's 300 s startPeriod: the grace period carries it."""
    engine = make_engine("meta-llama/Llama-3.1-405B-Instruct-FP8", tp=8, max_model_len=32768)
    run, made = run_stack(engine, ["p5.48xlarge"])
    svc = run.one("aws:ecs/service:Service").inputs
    load = engine.startup_seconds(3200.0)
    assert load > 300
    assert svc["healthCheckGracePeriodSeconds"] >= load
    # startup_seconds already carries a 1.5x margin over the raw pull + download + load + compile estimate
    assert svc["healthCheckGracePeriodSeconds"] > load / 1.5
    assert _container(run)["healthCheck"]["startPeriod"] == 300


def test_service_placement_capacity_network(small):
    run, _ = small
    svc = run.one("aws:ecs/service:Service").inputs
    assert svc["capacityProviderStrategies"] == [{"capacityProvider": "pool-cp", "weight": 1, "base": 0}]
    assert svc["orderedPlacementStrategies"][0] == {"type": "spread", "field": "attribute:ecs.availability-zone"}
    net = svc["networkConfiguration"]
    assert net["assignPublicIp"] is False
    assert sorted(net["subnets"]) == ["gpu-private-0-id", "gpu-private-1-id", "gpu-private-2-id"]
    assert net["securityGroups"] == ["llm-task-sg-id"]
    assert svc["loadBalancers"] == [{"targetGroupArn": "arn:aws:lb:us-east-1:123456789012:llm-tg", "containerName": "vllm", "containerPort": 8000}]


def test_dev_min_healthy_half():
    run, made = run_stack(make_engine(LLAMA_8B, max_model_len=8192), ["g6e.xlarge"], environment="dev")
    assert run.one("aws:ecs/service:Service").inputs["deploymentMinimumHealthyPercent"] == 50
    assert made["task"].props["min_healthy_percent"] == 50


def test_task_security_group_only_from_the_alb(small):
    run, _ = small
    sg = run.one("aws:ec2/securityGroup:SecurityGroup", "llm-task-sg").inputs
    assert sg["ingress"] == [{"protocol": "tcp", "fromPort": 8000, "toPort": 8000,
                              "securityGroups": ["gpu-alb-sg-id"], "description": "ALB to vLLM"}]
    assert all("cidrBlocks" not in rule for rule in sg["ingress"])


def test_target_group(small):
    run, _ = small
    tg = run.one("aws:lb/targetGroup:TargetGroup", "llm-tg").inputs
    assert (tg["targetType"], tg["protocol"], tg["port"]) == ("ip", "HTTP", 8000)
    hc = tg["healthCheck"]
    assert hc["path"] == "/health" and hc["matcher"] == "200" and hc["protocol"] == "HTTP"
    assert tg["deregistrationDelay"] == 300
    assert tg["slowStart"] == 0
    assert tg["stickiness"]["enabled"] is False
    assert tg["loadBalancingAlgorithmType"] == "least_outstanding_requests"
    assert tg["vpcId"] == "gpu-vpc-id"


def test_listener_rule_forwards(small):
    run, _ = small
    rule = run.one("aws:lb/listenerRule:ListenerRule").inputs
    assert rule["listenerArn"].endswith(":gpu-https")
    assert rule["priority"] == 100
    assert rule["conditions"] == [{"pathPattern": {"values": ["/*"]}}]
    assert rule["actions"] == [{"type": "forward", "targetGroupArn": "arn:aws:lb:us-east-1:123456789012:llm-tg"}]
    assert "transforms" not in rule


def test_listener_rule_path_prefix_rewrite_and_host():
    run, _ = run_stack(make_engine(LLAMA_8B, max_model_len=8192), ["g6e.xlarge"], path_pattern="/llama-8b/*",
                       strip_path_prefix="/llama-8b", host_header="llm.example.com", priority=7)
    rule = run.one("aws:lb/listenerRule:ListenerRule").inputs
    assert rule["priority"] == 7
    assert rule["conditions"] == [{"pathPattern": {"values": ["/llama-8b/*"]}}, {"hostHeader": {"values": ["llm.example.com"]}}]
    assert rule["transforms"] == [{"type": "url-rewrite", "urlRewriteConfig": {"rewrite": {"regex": "^/llama\\-8b/(.*)$", "replace": "/$1"}}}]


def test_autoscaling_on_requests_per_target(small):
    run, _ = small
    target = run.one("aws:appautoscaling/target:Target").inputs
    assert (target["minCapacity"], target["maxCapacity"]) == (2, 6)
    assert target["resourceId"] == "service/gpu-ecs/llm-service"
    assert target["scalableDimension"] == "ecs:service:DesiredCount" and target["serviceNamespace"] == "ecs"
    policy = run.one("aws:appautoscaling/policy:Policy", "llm-requests-per-target").inputs
    assert policy["policyType"] == "TargetTrackingScaling"
    cfg = policy["targetTrackingScalingPolicyConfiguration"]
    assert cfg["predefinedMetricSpecification"] == {
        "predefinedMetricType": "ALBRequestCountPerTarget",
        "resourceLabel": "app/gpu-alb/0123/targetgroup/llm-tg/0123",
    }
    assert cfg["targetValue"] == 256
    assert cfg["scaleInCooldown"] >= 300


def test_custom_metric_scaling():
    from components.ecs_vllm_task import CustomMetricScaling

    run, _ = run_stack(make_engine(LLAMA_8B, max_model_len=8192), ["g6e.xlarge"],
                       custom_metric_scaling=CustomMetricScaling(namespace="vllm", metric_name="num_requests_waiting",
                                                                 dimensions={"service": "llm"}, target_value=5))
    cfg = run.one("aws:appautoscaling/policy:Policy", "llm-custom-metric").inputs["targetTrackingScalingPolicyConfiguration"]
    assert cfg["customizedMetricSpecification"] == {
        "namespace": "vllm", "metricName": "num_requests_waiting", "statistic": "Average",
        "dimensions": [{"name": "service", "value": "llm"}],
    }
    assert cfg["targetValue"] == 5


def test_alarms(small):
    run, _ = small
    alarms = {a.name: a.inputs for a in run.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")}
    assert sorted(alarms) == ["llm-5xx-rate", "llm-p99-latency", "llm-unhealthy-hosts"]
    rate = alarms["llm-5xx-rate"]
    queries = {q["id"]: q for q in rate["metricQueries"]}
    assert queries["errors"]["metric"]["metricName"] == "HTTPCode_Target_5XX_Count"
    assert queries["errors"]["metric"]["dimensions"] == {"LoadBalancer": "app/gpu-alb/0123", "TargetGroup": "targetgroup/llm-tg/0123"}
    assert queries["rate"]["returnData"] is True and rate["threshold"] == 5
    p99 = alarms["llm-p99-latency"]
    assert p99["metricName"] == "TargetResponseTime" and p99["extendedStatistic"] == "p99"
    unhealthy = alarms["llm-unhealthy-hosts"]
    assert unhealthy["metricName"] == "UnHealthyHostCount" and unhealthy["threshold"] == 0
    assert all(not a.get("alarmActions") for a in alarms.values())


def test_alarm_actions_with_topic():
    topic = "arn:aws:sns:us-east-1:123456789012:oncall"
    run, _ = run_stack(make_engine(LLAMA_8B, max_model_len=8192), ["g6e.xlarge"], alarm_topic_arn=topic)
    for alarm in run.of_type("aws:cloudwatch/metricAlarm:MetricAlarm"):
        assert alarm.inputs["alarmActions"] == [topic] and alarm.inputs["okActions"] == [topic]


def test_children_and_props(small):
    run, made = small
    comp = run.one("vllm-fleet:index:EcsVllmTask")
    assert comp.name == "llm"
    children = run.children_of(comp.urn)
    assert {c.type for c in children} >= {TD, "aws:ecs/service:Service", "aws:lb/targetGroup:TargetGroup",
                                          "aws:lb/listenerRule:ListenerRule", "aws:cloudwatch/logGroup:LogGroup"}
    assert all(c.name.startswith("llm-") for c in children)
    props = made["task"].props
    assert comp.inputs["model"] == LLAMA_8B  # props are the component's recorded inputs
    expected_keys = {"model", "gpu", "gpu_memory_gib", "instance_type", "tp", "pp", "dtype", "quantization", "kv_cache_dtype",
                     "max_model_len", "max_num_seqs", "gpu_memory_utilization", "enable_lora", "max_loras", "max_lora_rank",
                     "min_count", "max_count", "image", "platform", "min_healthy_percent"}
    assert expected_keys <= set(props)
    assert props["platform"] == "ecs" and props["gpu"] == "L40S" and props["instance_type"] == "g6e.xlarge"
    assert props["tp"] == 1 and props["pp"] == 1 and props["max_model_len"] == 8192
    assert all(not isinstance(v, pulumi.Output) for v in props.values())


def test_ecr_image_gets_ecr_pull():
    engine = VllmEngine(model=LLAMA_8B, image="123456789012.dkr.ecr.us-east-1.amazonaws.com/vllm:v0.29.0",
                        engine=EngineConfig(max_model_len=8192))
    run, _ = run_stack(engine, ["g6e.xlarge"])
    policy = json.loads(run.one("aws:iam/rolePolicy:RolePolicy", "llm-execution-policy").inputs["policy"])
    assert {"EcrAuth", "EcrPull"} <= {s["Sid"] for s in policy["Statement"]}


def test_no_api_key_when_opted_out():
    run, made = run_stack(make_engine(LLAMA_8B, max_model_len=8192), ["g6e.xlarge"], api_key_secret_arn=None,
                          hf_token_secret_arn=None, require_api_key=False)
    assert _container(run)["secrets"] == []
    policy = json.loads(run.one("aws:iam/rolePolicy:RolePolicy", "llm-execution-policy").inputs["policy"])
    assert [s["Sid"] for s in policy["Statement"]] == ["Logs"]
    assert made["task"].props["api_key_required"] is False


# ----- refusals, before any resource of the task -------------------------------------------------------------


def _refused(engine, instance_types, **kw):
    """Run the program; return the exception and the resources recorded up to it (none of them the task's)."""
    made = build_stack(engine, instance_types, **kw)
    with pytest.raises((InputError, DoesNotFit)) as err:
        run_offline(made["program"])
    return err.value


def test_refuses_pipeline_parallel():
    err = _refused(make_engine("meta-llama/Llama-3.1-405B-Instruct", tp=8, pp=2), ["p5.48xlarge"])
    assert isinstance(err, InputError) and err.field == "pipeline_parallel_size"
    assert str(err) == ("pipeline_parallel_size: pp=2: an ECS task runs on one instance and cannot span nodes; use tensor "
                        "parallelism inside one instance, or platform 'eks' (LeaderWorkerSet) for multi-node models")


def test_refuses_a_model_that_does_not_fit():
    err = _refused(make_engine(LLAMA_70B), ["g6e.xlarge"])
    assert isinstance(err, DoesNotFit)
    assert "L40S" in str(err)


def test_refuses_tp_beyond_the_node():
    err = _refused(make_engine(LLAMA_8B, tp=2), ["g6e.xlarge"])
    assert isinstance(err, InputError) and err.field == "tensor_parallel_size"


@pytest.mark.parametrize(
    "kw, field, message",
    [
        (dict(api_key_secret_arn=None), "api_key_secret_arn",
         "api_key_secret_arn: vLLM would serve without authentication; give the ARN of a Secrets Manager secret holding "
         "the API key, or set require_api_key=False if something in front authenticates"),
        (dict(api_key_secret_arn="my-plain-key"), "api_key_secret_arn",
         "api_key_secret_arn: 'my-plain-key' is not a Secrets Manager secret ARN (arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME)"),
        (dict(min_count=5, max_count=2), "min_count", "min_count: 5 is above max_count (2)"),
        (dict(desired_count=9), "desired_count", "desired_count: 9; must be between min_count (1) and max_count (4)"),
        (dict(min_healthy_percent=0), "min_healthy_percent",
         "min_healthy_percent: 0; must be 1-100 (0 would stop every task before a deploy)"),
        (dict(priority=0), "priority", "priority: 0; listener rule priorities are 1-50000"),
        (dict(deregistration_delay_seconds=4000), "deregistration_delay_seconds", "deregistration_delay_seconds: 4000; the ALB allows 0-3600 s"),
        (dict(log_retention_days=10), "log_retention_days", None),
        (dict(path_pattern="llama/*"), "path_pattern", "path_pattern: 'llama/*' must start with '/', e.g. '/llama-8b/*'"),
        (dict(strip_path_prefix="/llama"), "strip_path_prefix",
         "strip_path_prefix: '/llama' needs a path_pattern under it, e.g. '/llama/*'"),
    ],
)
def test_input_errors(kw, field, message):
    err = _refused(make_engine(LLAMA_8B, max_model_len=8192), ["g6e.xlarge"], **kw)
    assert err.field == field
    if message:
        assert str(err) == message


def test_refusal_registers_nothing_of_the_task():
    made = build_stack(make_engine(LLAMA_8B, max_model_len=8192), ["g6e.xlarge"], api_key_secret_arn=None)
    recorded = []

    def program():
        try:
            made["program"]()
        except InputError:
            recorded.append("refused")

    run = run_offline(program)
    assert recorded == ["refused"]
    assert run.of_type("vllm-fleet:index:EcsVllmTask") == []
    assert not [r for r in run.resources if r.name.startswith("llm-")]


def test_wrong_platform_cluster():
    class Eksish:
        platform = "eks"
        ecs = None

    with pytest.raises(InputError, match=r"^cluster: EcsVllmTask needs a GpuCluster with platform 'ecs'; use VllmService on EKS$"):
        EcsVllmTask("x", EcsVllmTaskArgs(cluster=Eksish(), node_pool=None, engine=make_engine(LLAMA_8B), api_key_secret_arn=API_KEY))


# ----- the seed guide's ECS task definitions, reproduced ------------------------------------------------------

# 000_f9a3412a7dc212e7.txt, "ECS Task Definition" (small scale) and "ECS Task Definition (Tensor Parallelism)".
SEED_8B = {
    "family": "vllm-llama-8b-small-scale", "networkMode": "awsvpc", "requiresCompatibilities": ["EC2"],
    "cpu": "24576", "memory": "288000",
    "containerDefinitions": [{"name": "vllm-server", "image": "vllm/vllm-openai:v0.11.1",
                              "command": ["--model", "meta-llama/Meta-Llama-3.1-8B-Instruct", "--tensor-parallel-size", "2",
                                          "--gpu-memory-utilization", "0.9", "--dtype", "float16"],
                              "resourceRequirements": [{"type": "GPU", "value": "2"}],
                              "portMappings": [{"containerPort": 8000, "protocol": "tcp"}]}],
}
SEED_70B = {
    "family": "vllm-llama-70b-medium-scale", "networkMode": "awsvpc", "requiresCompatibilities": ["EC2"],
    "cpu": "49152", "memory": "524288",
    "containerDefinitions": [{"name": "vllm-server", "image": "vllm/vllm-openai:v0.11.1",
                              "command": ["--model", "meta-llama/Meta-Llama-3.1-70B-Instruct", "--tensor-parallel-size", "8",
                                          "--gpu-memory-utilization", "0.9", "--dtype", "float8", "--max-model-len", "8192"],
                              "resourceRequirements": [{"type": "GPU", "value": "8"}],
                              "environment": [{"name": "NCCL_DEBUG", "value": "INFO"}]}],
}
# Ours: the same models, GPUs and parallelism. "--dtype float8" is not a vLLM dtype (bfloat16/float16/float32/auto);
# FP8 weights are `--quantization fp8`, which is what the seed meant.
SEED_CONFIGS = [
    pytest.param(SEED_8B, make_engine(LLAMA_8B, tp=2, dtype="float16"), "p4d.24xlarge", id="8b-tp2-p4d"),
    pytest.param(SEED_70B, make_engine(LLAMA_70B, tp=8, quantization="fp8", max_model_len=8192), "p5.48xlarge", id="70b-tp8-p5"),
]


@pytest.mark.parametrize("seed, engine, instance", SEED_CONFIGS)
def test_seed_guide_task_definitions_reproduced_and_completed(seed, engine, instance):
    run, made = run_stack(engine, [instance])
    td = run.one(TD).inputs
    ours = _container(run)
    theirs = seed["containerDefinitions"][0]
    # same placement facts
    assert td["networkMode"] == seed["networkMode"] and td["requiresCompatibilities"] == seed["requiresCompatibilities"]
    assert ours["resourceRequirements"] == theirs["resourceRequirements"]
    tp_flag = theirs["command"][theirs["command"].index("--tensor-parallel-size") + 1]
    assert ours["command"][ours["command"].index("--tensor-parallel-size") + 1] == tp_flag
    # what theirs lacks and ours adds
    for key in ("healthCheck", "logConfiguration", "secrets", "stopTimeout", "linuxParameters", "ulimits"):
        assert key not in theirs and key in ours, key
    assert "executionRoleArn" not in seed and td["executionRoleArn"]
    assert "taskRoleArn" not in seed and td["taskRoleArn"]
    svc = run.one("aws:ecs/service:Service").inputs
    assert svc["healthCheckGracePeriodSeconds"] >= engine.startup_seconds(get_instance(instance).network_gbps)
    assert svc["deploymentCircuitBreaker"] == {"enable": True, "rollback": True}
    # the seed's debug-level NCCL logging does not come along; its invalid --dtype float8 does not either
    assert "NCCL_DEBUG" not in {e["name"] for e in ours["environment"]}
    assert "float8" not in ours["command"]
    # CPU/memory: the task's GPU share of the instance, leaving the agent room; the seed's 8B task asks for
    # 288000 MiB of a 294912 MiB quarter (nothing left for the host), its 70B task for a quarter of the CPU and
    # RAM while holding all 8 GPUs (the rest of the instance idles).
    inst = get_instance(instance)
    share = int(ours["resourceRequirements"][0]["value"]) / inst.gpu_count
    assert int(td["memory"]) < inst.memory_gib * 1024 * share
    assert int(td["memory"]) >= 0.85 * inst.memory_gib * 1024 * share
    if share == 1:
        assert int(td["cpu"]) > int(seed["cpu"]) and int(td["memory"]) > int(seed["memory"])
    else:
        assert int(td["memory"]) < int(seed["memory"])


def test_task_definition_pinned_to_the_pool_instance_types(small):
    run, _ = small
    td = run.one(TD).inputs
    assert td["placementConstraints"] == [{"type": "memberOf", "expression": "attribute:ecs.instance-type in [g6e.xlarge, g6e.2xlarge]"}]
    assert td["tags"] == {"Name": "llm-task"}  # no comma-separated tag: ECS tag values do not allow commas


@pytest.mark.parametrize(
    "model, engine, instances",
    [
        (LLAMA_8B, dict(max_model_len=8192), ["g6e.xlarge"]),
        ("meta-llama/Llama-3.1-405B-Instruct-FP8", dict(tp=8, max_model_len=32768), ["p5.48xlarge"]),
    ],
)
def test_the_project_policies_find_nothing(model, engine, instances):
    """The stack this component builds passes the project's own policy pack (fit, IMDSv2, secrets, grace period...)."""
    from policies import resource_views as rv
    from policies.pack import run_policies

    run, _ = run_stack(make_engine(model, **engine), instances, min_count=2)
    results = run_policies([rv.Resource.from_record(r) for r in run.resources])
    assert [(r.policy, r.message) for r in results] == []


# ----- through the real SpotNodePool ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model, engine, instances",
    [
        (LLAMA_8B, dict(max_model_len=8192), ["g6e.xlarge", "g6e.2xlarge"]),
        (LLAMA_70B, dict(tp=8, quantization="fp8", max_model_len=8192), ["p5.48xlarge"]),
    ],
)
def test_through_gpu_cluster_and_spot_node_pool(model, engine, instances):
    from components.spot_node_pool import SpotNodePool, SpotNodePoolArgs
    from stacks.render_ecs import task_definition_requests

    made = {}

    def program():
        cluster = GpuCluster("gpu", GpuClusterArgs(platform="ecs", environment="prod", ecs={"certificate_arn": CERT}))
        # Sized from the checkpoint it downloads (a 100 GiB default cannot hold Llama-3.1-70B's 131 GiB of BF16).
        pool = SpotNodePool("gpus", SpotNodePoolArgs(cluster=cluster, instance_types=instances, on_demand_base=1,
                                                     spot_percentage=70, max_nodes=4,
                                                     model_weights_gib=make_engine(model, **engine).download_gib()))
        made["task"] = EcsVllmTask("llm", EcsVllmTaskArgs(cluster=cluster, node_pool=pool, engine=make_engine(model, **engine),
                                                          api_key_secret_arn=API_KEY, hf_token_secret_arn=HF_TOKEN))

    run = run_offline(program)
    pool = run.one("vllm-fleet:index:SpotNodePool")
    asg = run.one("aws:autoscaling/group:Group")
    assert asg.parent == pool.urn
    dist = asg.inputs["mixedInstancesPolicy"]["instancesDistribution"]
    assert (dist["onDemandBaseCapacity"], dist["onDemandPercentageAboveBaseCapacity"]) == (1, 30)
    lt = run.one("aws:ec2/launchTemplate:LaunchTemplate").inputs
    assert lt["metadataOptions"]["httpTokens"] == "required"
    svc = run.one("aws:ecs/service:Service").inputs
    cp = run.one("aws:ecs/capacityProvider:CapacityProvider")
    assert svc["capacityProviderStrategies"][0]["capacityProvider"] == cp.name
    c = json.loads(run.one(TD).inputs["containerDefinitions"])[0]
    assert c["resourceRequirements"] == [{"type": "GPU", "value": str(engine.get("tp", 1))}]
    assert made["task"].props["instance_type"] == instances[0]
    assert list(task_definition_requests(run)) == ["llm-task"]


# ----- LoRA: the adapter sync sidecar, its volumes and the store's read policy ----------------------------------

from components.lora_store import DEFAULT_SYNC_IMAGE, LoraServing, LoraStoreArgs, lora_serving, resolve_lora_engine  # noqa: E402

from components.ecs_vllm_task import (  # noqa: E402
    awslogs_configuration,
    lora_root_volume_gib,
    pool_spot_fraction,
    spot_fraction_of,
)

LORA_8B = dict(base_model=LLAMA_8B, max_loras=8, max_lora_rank=64)
READ_POLICY = "arn:aws:iam::123456789012:policy/adapters-read"
ROLE_POLICY_ATTACHMENT = "aws:iam/rolePolicyAttachment:RolePolicyAttachment"


def _serving(**kw) -> LoraServing:
    return lora_serving(LoraStoreArgs(**{**LORA_8B, **kw}), bucket="acme-lora", region="us-east-1", read_policy_arn=READ_POLICY)


def _containers(run) -> dict[str, dict]:
    return {c["name"]: c for c in json.loads(run.one(TD).inputs["containerDefinitions"])}


@pytest.fixture(scope="module")
def with_lora():
    """Llama-3.1-8B on one L40S with a LoraStore: 8 adapters per GPU at rank up to 64."""
    return run_stack(make_engine(LLAMA_8B, max_model_len=8192), ["g6e.xlarge"], lora_store=LORA_8B, min_count=2)


def test_lora_engine_applied_when_the_engine_has_none():
    serving = _serving()
    engine = resolve_lora_engine(make_engine(LLAMA_8B), serving)
    assert (engine.engine.enable_lora, engine.engine.max_loras, engine.engine.max_lora_rank) == (True, 8, 64)
    assert engine.lora_modules_uri == serving.mount_path == "/models/loras"


def test_lora_engine_already_applied_is_kept():
    serving = _serving()
    own = serving.apply_to_engine(make_engine(LLAMA_8B)).model_copy(
        update={"engine": EngineConfig(enable_lora=True, max_loras=4, max_lora_rank=16)})
    assert resolve_lora_engine(own, serving) is own  # the caller's slots stand
    plain = make_engine(LLAMA_8B)
    assert resolve_lora_engine(plain, None) is plain


@pytest.mark.parametrize(
    "engine, lora, message",
    [
        (make_engine(LLAMA_8B, enable_lora=True, max_loras=4), _serving(),
         "lora: the engine enables LoRA without the adapter resolver (lora_modules_uri unset); pass the engine without "
         "LoRA or build it with lora.apply_to_engine(engine)"),
        (make_engine(LLAMA_8B), {"bucket": "b"},
         "lora: expected a components.lora_store.LoraServing (LoraStore.serving_settings()), got dict"),
        (make_engine(LLAMA_8B), lora_serving(LoraStoreArgs(**LORA_8B), bucket="b", region="us-east-1"),
         "lora: has no read_policy_arn: the sync sidecar reads the adapters from S3 with the task role; use "
         "LoraStore.serving_settings(), which carries the store's read policy"),
    ],
)
def test_lora_refusals(engine, lora, message):
    with pytest.raises(InputError) as err:
        resolve_lora_engine(engine, lora)
    assert str(err.value) == message


def test_lora_sidecar_container(with_lora):
    run, made = with_lora
    containers = _containers(run)
    assert list(containers) == ["vllm", "lora-sync"]
    side, vllm = containers["lora-sync"], containers["vllm"]
    assert side["image"] == DEFAULT_SYNC_IMAGE and side["essential"] is False
    assert side["secrets"] == [{"name": "VLLM_API_KEY", "valueFrom": API_KEY}]  # to unload replaced adapters
    assert side["logConfiguration"] == vllm["logConfiguration"] == awslogs_configuration(
        "/vllm-fleet/offline-llm", "us-east-1")
    env = {e["name"]: e["value"] for e in side["environment"]}
    assert env["LORA_BUCKET"] == "adapters-bucket-bucket"  # the store's bucket (mock name)
    assert env["AWS_REGION"] == "us-east-1" and env["LORA_DIR"] == "/models/loras" and env["VLLM_PORT"] == "8000"
    assert side["mountPoints"] == [
        {"sourceVolume": "lora-adapters", "containerPath": "/models/loras", "readOnly": False},
        {"sourceVolume": "lora-sync-tmp", "containerPath": "/tmp", "readOnly": False},
    ]


def test_lora_vllm_mount_depends_on_and_flags(with_lora):
    run, _ = with_lora
    vllm = _containers(run)["vllm"]
    assert {"sourceVolume": "lora-adapters", "containerPath": "/models/loras", "readOnly": True} in vllm["mountPoints"]
    assert vllm["dependsOn"] == [{"containerName": "lora-sync", "condition": "START"}]
    cmd = vllm["command"]
    assert cmd[cmd.index("--max-loras") + 1] == "8" and cmd[cmd.index("--max-lora-rank") + 1] == "64"
    assert "--enable-lora" in cmd
    env = {e["name"]: e["value"] for e in vllm["environment"]}
    assert env["VLLM_PLUGINS"] == "lora_filesystem_resolver"
    assert env["VLLM_LORA_RESOLVER_CACHE_DIR"] == "/models/loras"


def test_lora_task_volumes(with_lora):
    run, _ = with_lora
    assert run.one(TD).inputs["volumes"] == [
        {"name": "model-cache", "hostPath": "/opt/vllm-fleet/models"},
        {"name": "tmp", "dockerVolumeConfiguration": {"scope": "task", "driver": "local"}},
        {"name": "lora-adapters"},
        {"name": "lora-sync-tmp"},
    ]


def test_lora_read_policy_on_the_task_role_only(with_lora):
    run, _ = with_lora
    task = run.one("vllm-fleet:index:EcsVllmTask")
    attachment = run.one(ROLE_POLICY_ATTACHMENT, "llm-lora-read")
    assert attachment.parent == task.urn
    assert attachment.inputs == {"role": "llm-task-role", "policyArn": "arn:aws:iam:us-east-1:123456789012:adapters-read"}
    # the execution role gets nothing of it (it only starts the task), and nothing else lands on the task role
    task_role_attachments = [a for a in run.of_type(ROLE_POLICY_ATTACHMENT) if a.inputs.get("role") == "llm-task-role"]
    assert task_role_attachments == [attachment]
    assert not [a for a in run.of_type(ROLE_POLICY_ATTACHMENT) if a.inputs.get("role") == "llm-execution-role"]


def test_lora_props(with_lora):
    run, made = with_lora
    props = made["task"].props
    assert (props["enable_lora"], props["max_loras"], props["max_lora_rank"], props["lora"]) == (True, 8, 64, True)
    assert props["lora_cache_gib"] == made["store"].serving_settings().cache_size_gib == 40
    assert run.one("vllm-fleet:index:EcsVllmTask").inputs["enable_lora"] is True


def test_lora_slots_count_in_the_fit_check():
    """8B fits one L4 alone at 8k context; with 8 rank-64 LoRA slots it does not, and the task is refused."""
    engine = make_engine(LLAMA_8B, max_model_len=8192)
    run_stack(engine, ["g6.xlarge"])  # fits without LoRA
    err = _refused(engine, ["g6.xlarge"], lora_store=LORA_8B)
    assert isinstance(err, DoesNotFit) and "L4" in str(err)


def test_lora_cache_must_fit_the_root_volume():
    need = lora_root_volume_gib(make_engine(LLAMA_8B).weights_gib_total(), 40)
    assert need == 140  # the pool's 100 GiB for 15 GiB of weights and the image, plus the 40 GiB cache
    err = _refused(make_engine(LLAMA_8B, max_model_len=8192), ["g6e.xlarge"], lora_store=LORA_8B,
                   pool_args={"root_volume_gib": 100})
    assert str(err) == ("lora: the adapter cache (40 GiB) lives on the instances' root volume, and the node pool's 100 GiB "
                        "cannot hold it with the weights and image; give the node pool root_volume_gib >= 140")


def test_lora_task_passes_the_project_policies(with_lora):
    from policies import resource_views as rv
    from policies.pack import run_policies

    run, _ = with_lora
    results = run_policies([rv.Resource.from_record(r) for r in run.resources])
    assert [(r.policy, r.message) for r in results] == []


# ----- props for policies: region, spot share, GPUs per task, instance type; registered as outputs too ----------


@pytest.mark.parametrize(
    "spot, pct, base, nodes, fraction",
    [(False, 100, 0, 4, 0.0), (True, 100, 0, 4, 1.0), (True, 70, 1, 4, 0.525), (True, 70, 0, 10, 0.7), (True, 100, 4, 4, 0.0)],
)
def test_spot_fraction_of(spot, pct, base, nodes, fraction):
    assert spot_fraction_of(spot, pct, base, nodes) == fraction


def test_pool_spot_fraction():
    from types import SimpleNamespace

    assert pool_spot_fraction(SimpleNamespace(spot_fraction=0.6)) == 0.6
    pool_args = SimpleNamespace(spot=True, spot_percentage=70, on_demand_base=1, max_nodes=4)
    assert pool_spot_fraction(SimpleNamespace(args=pool_args)) == 0.525
    assert pool_spot_fraction(SimpleNamespace()) is None  # SpotNodePool today: nothing plain to read


def test_policy_props_defaults(small):
    _, made = small
    props = made["task"].props
    assert props["region"] == "us-east-1"  # the aws:region config
    assert props["spot_fraction"] is None  # the pool states none, none given
    assert (props["gpus_per_task"], props["instance_type"]) == (1, "g6e.xlarge")
    assert props["lora"] is False and props["lora_cache_gib"] is None


def test_policy_props_given_and_priced_by_the_budget():
    from policies import resource_views as rv
    from policies.rules.budget import stack_cost

    run, made = run_stack(make_engine(LLAMA_8B, max_model_len=8192), ["g6e.xlarge"], region="us-west-2", spot_fraction=0.7,
                          min_count=2, max_count=6)
    props = made["task"].props
    assert (props["region"], props["spot_fraction"]) == ("us-west-2", 0.7)
    task = [rv.Resource.from_record(r) for r in run.of_type("vllm-fleet:index:EcsVllmTask")]
    (line,) = stack_cost(task, default_region="us-east-1").gpu
    assert (line.region, line.instance_type, line.spot_fraction) == ("us-west-2", "g6e.xlarge", 0.7)
    assert (line.steady_instances, line.max_instances) == (2, 6)


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(spot_fraction=1.5), "spot_fraction: 1.5; must be 0 (on demand) to 1 (all spot)"),
        (dict(region="Europe"), "region: 'Europe' is not an AWS region name such as 'us-east-1'"),
    ],
)
def test_policy_prop_errors(kw, message):
    err = _refused(make_engine(LLAMA_8B, max_model_len=8192), ["g6e.xlarge"], **kw)
    assert str(err) == message


def test_props_are_registered_as_outputs(monkeypatch):
    """Under the Pulumi CLI stack policies read a component's registered outputs: the props are among them."""
    captured = {}
    original = EcsVllmTask.register_outputs

    def capture(self, outputs):
        captured.update(outputs)
        return original(self, outputs)

    monkeypatch.setattr(EcsVllmTask, "register_outputs", capture)
    _, made = run_stack(make_engine(LLAMA_8B, max_model_len=8192), ["g6e.xlarge"], spot_fraction=0.5)
    props = made["task"].props
    assert {k: captured[k] for k in props} == props
    assert {"serviceName", "taskDefinitionArn", "targetGroupArn", "logGroupName"} <= set(captured)
    assert captured["spot_fraction"] == 0.5 and captured["region"] == "us-east-1"


def test_awslogs_region_follows_the_parent_provider():
    """A task built under a component with an eu-west-1 provider logs to eu-west-1, whatever aws:region says."""
    import pulumi_aws as aws

    made = {}

    def program():
        provider = aws.Provider("euw1", region="eu-west-1")
        root = pulumi.ComponentResource("vllm-fleet:test:Region", "r", None, pulumi.ResourceOptions(providers={"aws": provider}))
        opts = pulumi.ResourceOptions(parent=root)
        cluster = GpuCluster("gpu", GpuClusterArgs(platform="ecs", environment="dev", ecs={"certificate_arn": CERT}), opts=opts)
        pool = StandInPool("pool", cluster, ["g6e.xlarge"], "dev")
        made["task"] = EcsVllmTask("llm", EcsVllmTaskArgs(cluster=cluster, node_pool=pool, engine=make_engine(LLAMA_8B, max_model_len=8192),
                                                          api_key_secret_arn=API_KEY, region="eu-west-1"), opts=opts)

    run = run_offline(program, region="us-east-1")
    assert _container(run)["logConfiguration"]["options"]["awslogs-region"] == "eu-west-1"
    assert made["task"].props["region"] == "eu-west-1"


# ----- the service waits for its capacity provider's association with the cluster -------------------------------

SERVICE = "aws:ecs/service:Service"
CCP = "aws:ecs/clusterCapacityProviders:ClusterCapacityProviders"


def test_service_waits_for_the_pool_association(small):
    run, _ = small
    assert run.one(CCP, "pool-cluster-cps").urn in run.one(SERVICE).dependencies


def test_several_pools_on_one_cluster():
    """Two pools built with attach_to_cluster=False, one attach_capacity_providers, a task on each pool."""
    from components.ecs_capacity import attach_capacity_providers

    def program():
        cluster = GpuCluster("gpu", GpuClusterArgs(platform="ecs", environment="prod", ecs={"certificate_arn": CERT}))
        l40s = StandInPool("l40s", cluster, ["g6e.xlarge"], "prod", attach_to_cluster=False)
        h100 = StandInPool("h100", cluster, ["p5.48xlarge"], "prod", attach_to_cluster=False)
        association = attach_capacity_providers(cluster, "gpu", cluster.cluster_name,
                                                [l40s.capacity_provider_name, h100.capacity_provider_name])
        for task, pool, engine, priority in [("small", l40s, make_engine(LLAMA_8B, max_model_len=8192), 100),
                                             ("large", h100, make_engine(LLAMA_70B, tp=8, quantization="fp8", max_model_len=8192), 101)]:
            EcsVllmTask(task, EcsVllmTaskArgs(cluster=cluster, node_pool=pool, engine=engine, api_key_secret_arn=API_KEY,
                                              capacity_provider_association=association, priority=priority,
                                              path_pattern=f"/{task}/*", strip_path_prefix=f"/{task}"))

    run = run_offline(program)
    (ccp,) = run.of_type(CCP)
    assert ccp.parent == run.one("vllm-fleet:index:GpuCluster").urn
    assert ccp.inputs["capacityProviders"] == ["l40s-cp", "h100-cp"]
    assert ccp.inputs["clusterName"] == "gpu-ecs"
    for task, cp in [("small", "l40s-cp"), ("large", "h100-cp")]:
        svc = run.one(SERVICE, f"{task}-service")
        assert svc.inputs["capacityProviderStrategies"] == [{"capacityProvider": cp, "weight": 1, "base": 0}]
        assert ccp.urn in svc.dependencies


def test_capacity_provider_association_must_be_a_resource():
    err = _refused(make_engine(LLAMA_8B, max_model_len=8192), ["g6e.xlarge"], capacity_provider_association="gpu-cluster-cps")
    assert str(err) == ("capacity_provider_association: expected the aws.ecs.ClusterCapacityProviders from "
                        "attach_capacity_providers, got str")
