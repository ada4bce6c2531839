"""components/vllm_service.py: the pure rules (probes, resources, budgets) table-driven, then the Kubernetes
objects a VllmService records under the mock runtime: Deployment (one node) and LeaderWorkerSet (405B over two
8-GPU nodes), and the refusals that must come before anything is registered.

The builders at the top (`build_service`, `ENGINES`) are reused by test_k8s_schemas.py.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from components.gpu_cluster import GpuCluster, GpuClusterArgs
from components.sizing.engine import EngineConfig
from components.sizing.errors import DoesNotFit, InputError
from components.sizing.instances import get_instance
from components.spot_node_pool import SpotNodePool, SpotNodePoolArgs
from components.vllm import SPOT_NOTICE_SECONDS, VllmEngine
from components.vllm_service import (
    VllmService,
    VllmServiceArgs,
    default_scaling_query,
    disruption_budget,
    leader_command,
    pod_resources,
    probes,
    shm_size_gib,
    startup_failure_threshold,
    target_group_binding_spec,
    validate_shutdown,
    worker_command,
)
from stacks.offline import OfflineRun, RecordedResource, run_offline

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
LWS = "kubernetes:leaderworkerset.x-k8s.io/v1:LeaderWorkerSet"
SCALED_OBJECT = "kubernetes:keda.sh/v1alpha1:ScaledObject"
SECRET_ENVS = {"HF_TOKEN", "VLLM_API_KEY"}

ENGINES = {
    "llama-8b": VllmEngine(model="meta-llama/Llama-3.1-8B-Instruct", engine=EngineConfig(max_model_len=8192)),
    "llama-405b": VllmEngine(
        model="meta-llama/Llama-3.1-405B-Instruct", engine=EngineConfig(tp=8, pp=2, max_model_len=8192)
    ),
}


def build_service(
    engine: VllmEngine,
    instance_types: list[str],
    *,
    cluster: dict | None = None,
    catch: bool = False,
    endpoint: dict | None = None,
    **service: Any,
) -> tuple[OfflineRun, dict[str, Any]]:
    """GpuCluster(eks) + SpotNodePool + VllmService("llm"). With catch=True a refusal is returned, not raised.
    With `endpoint` (RegionalEndpointLBArgs fields), a RegionalEndpointLB("ep") for service "llm" whose
    vllm_service_args() the VllmService gets."""
    made: dict[str, Any] = {}
    service.setdefault("api_key_secret", "vllm-api-key")
    service.setdefault("hf_token_secret", "hf-token")

    def program():
        c = GpuCluster("gpu", GpuClusterArgs(**(cluster or {})))
        pool = SpotNodePool("gpus", SpotNodePoolArgs(cluster=c, instance_types=instance_types))
        made["pool"] = pool
        if endpoint is not None:
            from components.regional_endpoint import RegionalEndpointLB, RegionalEndpointLBArgs

            lb = RegionalEndpointLB("ep", RegionalEndpointLBArgs(cluster=c, services=["llm"], **endpoint))
            made["lb"] = lb
            for key, value in lb.vllm_service_args("llm").items():
                service.setdefault(key, value)
        try:
            made["service"] = VllmService("llm", VllmServiceArgs(cluster=c, node_pool=pool, engine=engine, **service))
        except (DoesNotFit, InputError) as exc:
            if not catch:
                raise
            made["error"] = exc

    return run_offline(program), made


def service_resources(run: OfflineRun) -> list[RecordedResource]:
    """The VllmService component and everything under it."""
    comp = [r for r in run.resources if r.type == "vllm-fleet:index:VllmService"]
    urns = {r.urn for r in comp}
    for r in run.resources:
        if r.parent in urns:
            urns.add(r.urn)
    return [r for r in run.resources if r.urn in urns]


@pytest.fixture(scope="module")
def single() -> tuple[OfflineRun, dict[str, Any]]:
    return build_service(ENGINES["llama-8b"], ["g5.xlarge", "g5.2xlarge"])


@pytest.fixture(scope="module")
def multi() -> tuple[OfflineRun, dict[str, Any]]:
    return build_service(ENGINES["llama-405b"], ["p5.48xlarge"], min_replicas=2)


def pod_spec(run: OfflineRun) -> dict[str, Any]:
    return run.one(DEPLOYMENT).inputs["spec"]["template"]["spec"]


# ----- pure rules ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("budget, expected", [(390, 39), (1620, 162), (391, 40), (5, 1), (10, 1)])
def test_startup_failure_threshold_covers_the_budget(budget, expected):
    assert startup_failure_threshold(budget) == expected
    assert startup_failure_threshold(budget) * 10 >= budget


def test_probes():
    p = probes("http", 1620)
    assert p["startupProbe"] == {
        "httpGet": {"path": "/health", "port": "http"},
        "periodSeconds": 10,
        "timeoutSeconds": 5,
        "failureThreshold": 162,
    }
    assert p["readinessProbe"]["httpGet"] == p["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert p["livenessProbe"]["failureThreshold"] * p["livenessProbe"]["periodSeconds"] == 60


@pytest.mark.parametrize("tp, gib", [(1, 2), (2, 4), (4, 8), (8, 16), (16, 16)])
def test_shm_size(tp, gib):
    assert shm_size_gib(tp) == gib


@pytest.mark.parametrize(
    "instance, gpus, cpu, memory",
    [
        ("g5.xlarge", 1, "3", "12Gi"),  # 4 vCPU, 16 GiB: 3.1 / 12.6
        ("g6e.12xlarge", 2, "21", "162Gi"),  # half of 48 vCPU, 384 GiB
        ("p4de.24xlarge", 8, "85", "978Gi"),
        ("p5.48xlarge", 8, "172", "1739Gi"),
    ],
)
def test_pod_resources(instance, gpus, cpu, memory):
    assert pod_resources(get_instance(instance), gpus) == {"cpu": cpu, "memory": memory, "nvidia.com/gpu": str(gpus)}


def test_pod_resources_refuses_more_gpus_than_the_node():
    with pytest.raises(InputError) as err:
        pod_resources(get_instance("g5.12xlarge"), 8)
    assert str(err.value) == "tp: 8 GPUs per pod but g5.12xlarge has 4"


@pytest.mark.parametrize("replicas, budget", [(1, {"maxUnavailable": 1}), (2, {"minAvailable": 1}), (5, {"minAvailable": 1})])
def test_disruption_budget(replicas, budget):
    assert disruption_budget(replicas) == budget


def test_default_scaling_query():
    assert default_scaling_query("llama") == 'sum(vllm:num_requests_waiting{model_name="llama"})'


@pytest.mark.parametrize(
    "grace, pre_stop, message",
    [
        (110, 15, "termination_grace_seconds: 110 s does not fit the 120 s spot notice; use <= 100 s"),
        (30, 30, "pre_stop_sleep_seconds: 30 s leaves no time to drain inside the 30 s grace period"),
    ],
)
def test_shutdown_must_fit_the_spot_notice(grace, pre_stop, message):
    with pytest.raises(InputError) as err:
        validate_shutdown(grace, pre_stop)
    assert str(err.value) == message


def test_multi_node_commands():
    leader = leader_command(["meta-llama/Llama-3.1-405B-Instruct", "--served-model-name", "a b"])
    assert leader[:2] == ["/bin/sh", "-c"]
    assert leader[2].startswith(
        'bash /vllm-workspace/examples/online_serving/multi-node-serving.sh leader --ray_cluster_size="${LWS_GROUP_SIZE}" && exec vllm serve'
    )
    assert "'a b'" in leader[2]  # arguments are shell-quoted
    assert leader[2].endswith("--distributed-executor-backend ray")
    assert worker_command()[2] == (
        'exec bash /vllm-workspace/examples/online_serving/multi-node-serving.sh worker --ray_address="${LWS_LEADER_ADDRESS}"'
    )


# ----- Deployment (one node) -------------------------------------------------------------------------------


def test_deployment_gpu_scheduling(single):
    run, made = single
    spec = pod_spec(run)
    assert spec["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [{"matchExpressions": [{"key": "vllm-fleet/gpu", "operator": "In", "values": ["A10G"]}]}]
    spread = spec["topologySpreadConstraints"][0]
    assert (spread["topologyKey"], spread["maxSkew"], spread["whenUnsatisfiable"]) == ("topology.kubernetes.io/zone", 1, "ScheduleAnyway")
    res = spec["containers"][0]["resources"]
    assert res["requests"] == res["limits"] == {"cpu": "3", "memory": "12Gi", "nvidia.com/gpu": "1"}
    assert made["service"].resources_per_pod == res["limits"]


def test_deployment_probes_cover_the_startup_budget(single):
    run, made = single
    c = pod_spec(run)["containers"][0]
    budget = ENGINES["llama-8b"].startup_seconds(get_instance("g5.xlarge").network_gbps)
    assert made["service"].startup_seconds == budget == 390
    startup = c["startupProbe"]
    assert startup["failureThreshold"] * startup["periodSeconds"] >= budget
    assert startup["httpGet"] == c["readinessProbe"]["httpGet"] == c["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert run.one(DEPLOYMENT).inputs["spec"]["progressDeadlineSeconds"] > budget


def test_deployment_shutdown_fits_the_spot_notice(single):
    run, _ = single
    spec = pod_spec(run)
    assert spec["terminationGracePeriodSeconds"] == 90 < SPOT_NOTICE_SECONDS
    assert spec["containers"][0]["lifecycle"] == {"preStop": {"sleep": {"seconds": 15}}}


def test_deployment_volumes(single):
    run, _ = single
    spec = pod_spec(run)
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "2Gi"}
    assert volumes["model-cache"]["emptyDir"] == {"sizeLimit": f"{math.ceil(ENGINES['llama-8b'].weights_gib_total() * 1.1 + 20)}Gi"}
    assert volumes["tmp"]["emptyDir"] == {"sizeLimit": "4Gi"}
    mounts = {m["mountPath"]: m["name"] for m in spec["containers"][0]["volumeMounts"]}
    assert mounts == {"/dev/shm": "dshm", "/models": "model-cache", "/tmp": "tmp"}


def test_deployment_hardened(single):
    run, _ = single
    spec = pod_spec(run)
    c = spec["containers"][0]
    assert c["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    assert spec["serviceAccountName"] == "llm"
    assert c["image"] == "vllm/vllm-openai:v0.29.0"
    sa = run.one("kubernetes:core/v1:ServiceAccount").inputs
    assert sa["automountServiceAccountToken"] is False
    ns = run.one("kubernetes:core/v1:Namespace").inputs["metadata"]
    assert ns["name"] == "llm"  # one namespace per service: two models in a region never fight over one
    assert ns["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert {r.inputs["metadata"]["namespace"] for r in service_resources(run) if r.type.startswith("kubernetes:")
            and r.type != "kubernetes:core/v1:Namespace"} == {"llm"}


def test_deployment_runs_the_engine(single):
    run, _ = single
    c = pod_spec(run)["containers"][0]
    assert c["args"] == ENGINES["llama-8b"].args()
    assert "command" not in c  # the image's entrypoint is `vllm serve`
    assert c["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    env = {e["name"]: e for e in c["env"]}
    for key, value in ENGINES["llama-8b"].environment().items():
        assert env[key] == {"name": key, "value": value}


def test_no_plaintext_secret_in_the_pod_spec(single):
    run, _ = single
    env = pod_spec(run)["containers"][0]["env"]
    secrets = [e for e in env if e["name"] in SECRET_ENVS]
    assert secrets == [
        {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "token"}}},
        {"name": "VLLM_API_KEY", "valueFrom": {"secretKeyRef": {"name": "vllm-api-key", "key": "api-key"}}},
    ]
    assert all("value" not in e for e in secrets)
    # no token-looking strings anywhere in the rendered workload either
    text = json.dumps(run.one(DEPLOYMENT).inputs)
    assert "hf_" not in text.replace("hf-token", "") and "--api-key" not in text


def test_service_pdb_network_policy_monitor(single):
    run, _ = single
    selector = {"app.kubernetes.io/name": "vllm", "app.kubernetes.io/instance": "llm"}
    svc = run.one("kubernetes:core/v1:Service").inputs["spec"]
    assert svc == {"type": "ClusterIP", "selector": selector, "ports": [{"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}]}
    pdb = run.one("kubernetes:policy/v1:PodDisruptionBudget").inputs["spec"]
    assert pdb == {"selector": {"matchLabels": selector}, "maxUnavailable": 1}
    np = run.one("kubernetes:networking.k8s.io/v1:NetworkPolicy").inputs["spec"]
    assert np["podSelector"] == {"matchLabels": selector} and np["policyTypes"] == ["Ingress"]
    assert np["ingress"] == [
        {
            "from": [
                {"namespaceSelector": {"matchLabels": {"vllm-fleet/client": "true"}}},
                {"podSelector": {"matchLabels": {"vllm-fleet/client": "true"}}},
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}},
            ],
            "ports": [{"port": 8000, "protocol": "TCP"}],
        }
    ]
    sm = run.one("kubernetes:monitoring.coreos.com/v1:ServiceMonitor").inputs["spec"]
    assert sm["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "15s", "scrapeTimeout": "10s"}]
    assert sm["selector"] == {"matchLabels": selector}


def test_keda_scales_on_the_queue(single):
    run, _ = single
    so = run.one(SCALED_OBJECT).inputs["spec"]
    assert so["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "llm"}
    assert (so["minReplicaCount"], so["maxReplicaCount"]) == (1, 4)
    assert so["triggers"] == [
        {
            "type": "prometheus",
            "metadata": {
                "serverAddress": "http://kube-prometheus-stack-prometheus.monitoring.svc.cluster.local:9090",
                "query": 'sum(vllm:num_requests_waiting{model_name="meta-llama/Llama-3.1-8B-Instruct"})',
                "threshold": "5",
            },
        }
    ]


def test_keda_query_and_threshold_configurable():
    run, _ = build_service(
        ENGINES["llama-8b"], ["g5.xlarge"], scaling_query="sum(rate(x[1m]))", scaling_threshold=2.5, min_replicas=2, max_replicas=8
    )
    so = run.one(SCALED_OBJECT).inputs["spec"]
    assert so["triggers"][0]["metadata"]["query"] == "sum(rate(x[1m]))"
    assert so["triggers"][0]["metadata"]["threshold"] == "2.5"
    assert (so["minReplicaCount"], so["maxReplicaCount"]) == (2, 8)
    assert run.one("kubernetes:policy/v1:PodDisruptionBudget").inputs["spec"]["minAvailable"] == 1
    assert run.one(DEPLOYMENT).inputs["spec"]["replicas"] == 2


def test_hpa_when_keda_is_off():
    run, _ = build_service(ENGINES["llama-8b"], ["g5.xlarge"], cluster={"keda": False}, autoscaling="hpa")
    assert not run.of_type(SCALED_OBJECT)
    hpa = run.one("kubernetes:autoscaling/v2:HorizontalPodAutoscaler").inputs["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "llm"}
    assert hpa["metrics"] == [
        {"type": "Pods", "pods": {"metric": {"name": "vllm_num_requests_waiting"}, "target": {"type": "AverageValue", "averageValue": "5"}}}
    ]


def test_component_props(single):
    run, _ = single
    props = run.one("vllm-fleet:index:VllmService").inputs
    expected = {
        "model": "meta-llama/Llama-3.1-8B-Instruct",
        "gpu": "A10G",
        "instance_type": "g5.xlarge",
        "tp": 1,
        "pp": 1,
        "dtype": "auto",
        "max_model_len": 8192,
        "gpu_memory_utilization": 0.9,
        "enable_lora": False,
        "min_replicas": 1,
        "max_replicas": 4,
        "image": "vllm/vllm-openai:v0.29.0",
        "platform": "eks",
        "workload": "Deployment",
        "startup_probe_seconds": 390,
    }
    assert {k: props[k] for k in expected} == expected
    assert (props["kv_cache_dtype"], props["max_loras"], props["max_lora_rank"]) == ("auto", 1, 16)
    assert props["gpu_memory_gib"] == get_instance("g5.xlarge").gpu.memory_gib
    # None values (no quantization, vLLM's default max_num_seqs) are left out of the recorded props
    assert props.get("quantization") is None and props.get("max_num_seqs") is None


def test_lora_and_runai_streamer():
    engine = VllmEngine(
        model="meta-llama/Llama-3.1-8B-Instruct",
        engine=EngineConfig(max_model_len=8192, enable_lora=True, max_loras=8, max_lora_rank=32),
        load_format="runai_streamer",
        model_uri="s3://models/llama-3.1-8b",
        lora_modules_uri="s3://adapters/",
    )
    run, _ = build_service(engine, ["g6e.xlarge"], service_account_role_arn="arn:aws:iam::123456789012:role/s3-read")
    spec = pod_spec(run)
    c = spec["containers"][0]
    assert c["args"][0] == "s3://models/llama-3.1-8b" and "--download-dir" not in c["args"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    cache = next(v for v in spec["volumes"] if v["name"] == "model-cache")
    assert cache["emptyDir"] == {"sizeLimit": "20Gi"}
    assoc = [r for r in service_resources(run) if r.type == "aws:eks/podIdentityAssociation:PodIdentityAssociation"]
    assert [a.inputs["serviceAccount"] for a in assoc] == ["llm"]
    props = run.one("vllm-fleet:index:VllmService").inputs
    assert (props["enable_lora"], props["max_loras"], props["max_lora_rank"]) == (True, 8, 32)


# ----- LeaderWorkerSet: Llama-3.1-405B over two 8-GPU nodes ------------------------------------------------


def test_405b_runs_as_a_leader_worker_set(multi):
    run, _ = multi
    assert not run.of_type(DEPLOYMENT)
    lws = run.one(LWS).inputs
    spec = lws["spec"]
    assert lws["apiVersion"] == "leaderworkerset.x-k8s.io/v1"
    assert spec["replicas"] == 2
    tmpl = spec["leaderWorkerTemplate"]
    assert tmpl["size"] == 2  # PP 2: two pods (nodes) per replica
    assert tmpl["restartPolicy"] == "RecreateGroupOnPodRestart"
    leader, worker = tmpl["leaderTemplate"]["spec"], tmpl["workerTemplate"]["spec"]
    for pod in (leader, worker):
        res = pod["containers"][0]["resources"]
        assert res["limits"]["nvidia.com/gpu"] == res["requests"]["nvidia.com/gpu"] == "8"  # TP 8 inside each node
        assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    script = leader["containers"][0]["command"][2]
    assert "--tensor-parallel-size 8 --pipeline-parallel-size 2" in script
    assert "--distributed-executor-backend ray" in script
    assert "multi-node-serving.sh worker" in worker["containers"][0]["command"][2]
    worker_env = {e["name"] for e in worker["containers"][0]["env"]}
    assert "HF_TOKEN" in worker_env and "VLLM_API_KEY" not in worker_env  # workers download weights, never serve
    for pod in (leader, worker):
        secrets = [e for e in pod["containers"][0]["env"] if e["name"] in SECRET_ENVS]
        assert secrets and all(set(e) == {"name", "valueFrom"} and "secretKeyRef" in e["valueFrom"] for e in secrets)
    # only the leader serves HTTP and is probed
    assert "startupProbe" in leader["containers"][0] and "startupProbe" not in worker["containers"][0]
    assert leader["containers"][0]["startupProbe"]["failureThreshold"] * 10 >= 1620
    # the group's pods stay in one zone
    affinity = worker["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
    assert affinity["matchLabelKeys"] == ["leaderworkerset.sigs.k8s.io/group-key"]
    assert affinity["topologyKey"] == "topology.kubernetes.io/zone"


def test_405b_service_autoscaler_and_policy_target_the_group(multi):
    run, _ = multi
    leader_selector = {"app.kubernetes.io/name": "vllm", "app.kubernetes.io/instance": "llm", "vllm-fleet/role": "leader"}
    assert run.one("kubernetes:core/v1:Service").inputs["spec"]["selector"] == leader_selector
    so = run.one(SCALED_OBJECT).inputs["spec"]
    assert so["scaleTargetRef"] == {"apiVersion": "leaderworkerset.x-k8s.io/v1", "kind": "LeaderWorkerSet", "name": "llm"}
    assert run.one("kubernetes:policy/v1:PodDisruptionBudget").inputs["spec"]["minAvailable"] == 1
    ingress = run.one("kubernetes:networking.k8s.io/v1:NetworkPolicy").inputs["spec"]["ingress"]
    assert ingress[1] == {"from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "vllm", "app.kubernetes.io/instance": "llm"}}}]}
    props = run.one("vllm-fleet:index:VllmService").inputs
    assert (props["tp"], props["pp"], props["workload"], props["gpu"]) == (8, 2, "LeaderWorkerSet", "H100-80GB")


# ----- refusals: nothing registered ------------------------------------------------------------------------


def _refused(engine: VllmEngine, instance_types: list[str], **service: Any) -> Exception:
    run, made = build_service(engine, instance_types, catch=True, **service)
    assert "error" in made
    assert service_resources(run) == []
    assert not [r for r in run.resources if r.name.startswith("llm")]
    return made["error"]


def test_70b_bf16_on_one_a10g_refused():
    engine = VllmEngine(model="meta-llama/Llama-3.1-70B-Instruct", engine=EngineConfig(tp=1, dtype="bfloat16"))
    err = _refused(engine, ["g5.xlarge"])
    assert isinstance(err, DoesNotFit)
    message = str(err)
    assert message.startswith("meta-llama/Llama-3.1-70B-Instruct on A10G (TP 1 x PP 1): does not fit")
    assert "Would fit:" in message


def test_405b_tp8_on_one_p4d_refused():
    engine = VllmEngine(model="meta-llama/Llama-3.1-405B-Instruct", engine=EngineConfig(tp=8))
    err = _refused(engine, ["p4d.24xlarge"])
    assert isinstance(err, DoesNotFit)
    message = str(err)
    assert message.startswith("meta-llama/Llama-3.1-405B-Instruct on A100-40GB (TP 8 x PP 1): does not fit")
    assert "Would fit: TP 8 x PP 4 on A100-40GB (32 GPUs over 4 nodes of 8)" in message


@pytest.mark.parametrize(
    "engine, types, service, message",
    [
        (
            VllmEngine(model="meta-llama/Llama-3.1-8B-Instruct", engine=EngineConfig(max_model_len=8192)),
            ["g5.xlarge"],
            {"api_key_secret": None},
            "api_key_secret: name the Secret holding the API key clients must send (or pass api_key_value), "
            "or set require_api_key=False for internal-only use",
        ),
        (
            VllmEngine(model="meta-llama/Llama-3.1-70B-Instruct", engine=EngineConfig(tp=8, max_model_len=8192)),
            ["g6e.12xlarge"],
            {},
            "tp: TP 8 must fit inside one node but g6e.12xlarge has 4 GPUs; use TP <= 4 and pipeline parallelism (pp) across nodes",
        ),
        (
            VllmEngine(model="meta-llama/Llama-3.1-8B-Instruct", engine=EngineConfig(max_model_len=8192)),
            ["g5.xlarge"],
            {"termination_grace_seconds": 115},
            "termination_grace_seconds: 115 s does not fit the 120 s spot notice; use <= 100 s",
        ),
        (
            VllmEngine(model="meta-llama/Llama-3.1-8B-Instruct", engine=EngineConfig(max_model_len=8192)),
            ["g5.xlarge"],
            {"min_replicas": 5, "max_replicas": 2},
            "min_replicas: 5 is above max_replicas 2",
        ),
    ],
)
def test_input_refusals(engine, types, service, message):
    err = _refused(engine, types, **service)
    assert isinstance(err, InputError)
    assert str(err) == message


def test_service_monitor_waits_for_the_prometheus_stack_release(single):
    run, _ = single
    release = run.one("kubernetes:helm.sh/v3:Release", "gpu-kube-prometheus-stack")
    assert (release.inputs["chart"], release.inputs["version"], release.inputs["namespace"]) == (
        "kube-prometheus-stack", "88.5.3", "monitoring"
    )
    spec = release.inputs["values"]["prometheus"]["prometheusSpec"]
    # Every ServiceMonitor in every namespace, not only those labelled release=<release>.
    assert (spec["serviceMonitorSelectorNilUsesHelmValues"], spec["serviceMonitorSelector"], spec["serviceMonitorNamespaceSelector"]) == (False, {}, {})
    sm = run.one("kubernetes:monitoring.coreos.com/v1:ServiceMonitor")
    assert release.urn in sm.dependencies


def test_bring_your_own_prometheus():
    run, _ = build_service(
        ENGINES["llama-8b"],
        ["g5.xlarge"],
        cluster={"prometheus_url": "http://prom.observability:9090", "prometheus_operator_crds_installed": True},
    )
    assert not [r for r in run.of_type("kubernetes:helm.sh/v3:Release") if r.inputs["chart"] == "kube-prometheus-stack"]
    so = run.one(SCALED_OBJECT).inputs["spec"]
    assert so["triggers"][0]["metadata"]["serverAddress"] == "http://prom.observability:9090"
    assert run.one("vllm-fleet:index:GpuCluster").inputs["crd_prerequisites"] == ["monitoring.coreos.com"]


def test_bring_your_own_prometheus_must_confirm_the_crds():
    from components.gpu_cluster import validate_prometheus

    with pytest.raises(InputError) as err:
        validate_prometheus(GpuClusterArgs(prometheus_url="http://prom.observability:9090"))
    assert str(err.value).startswith(
        "prometheus_operator_crds_installed: with your own prometheus_url, confirm the Prometheus Operator CRDs"
    )


def test_keda_missing_on_the_cluster_refused():
    err = _refused(ENGINES["llama-8b"], ["g5.xlarge"], cluster={"keda": False})
    assert str(err) == "autoscaling: the cluster was built without KEDA; use autoscaling='hpa' or 'none'"


def test_api_key_value_goes_into_a_secret_created_here():
    run, _ = build_service(ENGINES["llama-8b"], ["g5.xlarge"], api_key_secret=None, api_key_value="k3y-from-random")
    secret = run.one("kubernetes:core/v1:Secret").inputs
    assert secret["metadata"]["name"] == "llm-api-key" and secret["metadata"]["namespace"] == "llm"
    assert secret["type"] == "Opaque"
    assert secret["stringData"] == {"secret": {"api-key": "k3y-from-random"}}  # a Pulumi secret in the state
    env = pod_spec(run)["containers"][0]["env"]
    assert {"name": "VLLM_API_KEY", "valueFrom": {"secretKeyRef": {"name": "llm-api-key", "key": "api-key"}}} in env
    assert "k3y-from-random" not in json.dumps(run.one(DEPLOYMENT).inputs)


def test_api_key_given_twice_refused():
    err = _refused(ENGINES["llama-8b"], ["g5.xlarge"], api_key_value="x")
    assert str(err) == "api_key_value: give the API key as api_key_value or as an existing api_key_secret, not both"


def test_lora_store_serving():
    from components.lora_store import LoraStoreArgs, lora_serving

    lora = lora_serving(
        LoraStoreArgs(base_model="meta-llama/Llama-3.1-8B-Instruct", tenants=2000, max_loras=8, max_lora_rank=16),
        bucket="tenant-adapters",
        region="us-east-1",
        read_policy_arn="arn:aws:iam::123456789012:policy/lora-read",
    )
    run, made = build_service(ENGINES["llama-8b"], ["g6e.xlarge"], lora=lora)
    spec = pod_spec(run)
    vllm, sidecar = spec["containers"][0], spec["initContainers"][0]
    assert "--enable-lora" in vllm["args"] and vllm["args"][vllm["args"].index("--max-loras") + 1] == "8"
    env = {e["name"]: e.get("value") for e in vllm["env"]}
    assert env["VLLM_PLUGINS"] == "lora_filesystem_resolver"
    assert env["VLLM_LORA_RESOLVER_CACHE_DIR"] == "/models/loras"
    assert {"name": "lora-adapters", "mountPath": "/models/loras", "readOnly": True} in vllm["volumeMounts"]
    assert sidecar["name"] == "lora-sync" and sidecar["restartPolicy"] == "Always"
    assert {"name": "VLLM_API_KEY", "valueFrom": {"secretKeyRef": {"name": "vllm-api-key", "key": "api-key"}}} in sidecar["env"]
    assert {v["name"] for v in spec["volumes"]} >= {"lora-adapters", "lora-sync-tmp"}
    # the pods read the store through Pod Identity with the store's read policy
    ours = service_resources(run)
    role = next(r for r in ours if r.type == "aws:iam/role:Role")
    assert json.loads(role.inputs["assumeRolePolicy"])["Statement"][0]["Principal"] == {"Service": "pods.eks.amazonaws.com"}
    attach = next(r for r in ours if r.type == "aws:iam/rolePolicyAttachment:RolePolicyAttachment")
    assert attach.inputs["policyArn"] == "arn:aws:iam::123456789012:policy/lora-read"
    assoc = next(r for r in ours if r.type == "aws:eks/podIdentityAssociation:PodIdentityAssociation")
    assert (role.name, assoc.inputs["roleArn"]) == ("llm-pod-role", "arn:aws:iam:us-east-1:123456789012:llm-pod-role")
    props = run.one("vllm-fleet:index:VllmService").inputs
    assert (props["lora"], props["enable_lora"], props["max_loras"], props["lora_cache_gib"]) == (True, True, 8, lora.cache_size_gib)
    assert made["service"].engine.lora_modules_uri == "/models/loras"


def test_shared_namespace_not_created_twice():
    run, _ = build_service(ENGINES["llama-8b"], ["g5.xlarge"], namespace="inference", create_namespace=False)
    assert not run.of_type("kubernetes:core/v1:Namespace")
    assert run.one(DEPLOYMENT).inputs["metadata"]["namespace"] == "inference"


def test_api_key_opt_out():
    run, _ = build_service(ENGINES["llama-8b"], ["g5.xlarge"], api_key_secret=None, require_api_key=False, hf_token_secret=None)
    names = {e["name"] for e in pod_spec(run)["containers"][0]["env"]}
    assert not names & SECRET_ENVS
    assert run.one("vllm-fleet:index:VllmService").inputs["require_api_key"] is False


# ----- behind a RegionalEndpointLB (NLB target group) -------------------------------------------------------

TGB = "kubernetes:elbv2.k8s.aws/v1beta1:TargetGroupBinding"
NETWORK_POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
ENDPOINT = {"domain": "llm.example.com", "hosted_zone_id": "Z0123456789ABC"}


@pytest.fixture(scope="module")
def balanced() -> tuple[OfflineRun, dict[str, Any]]:
    return build_service(ENGINES["llama-8b"], ["g5.xlarge"], endpoint=ENDPOINT)


def test_target_group_binding_spec():
    assert target_group_binding_spec("llm", 8000, "arn:tg", "sg-1", "vpc-1") == {
        "serviceRef": {"name": "llm", "port": 8000},
        "targetGroupARN": "arn:tg",
        "targetType": "ip",
        "networking": {"ingress": [{"from": [{"securityGroup": {"groupID": "sg-1"}}], "ports": [{"protocol": "TCP", "port": 8000}]}]},
        "vpcID": "vpc-1",
    }
    assert "vpcID" not in target_group_binding_spec("llm", 8000, "arn:tg", "sg-1")


def test_target_group_binding(balanced):
    run, made = balanced
    tgb = run.one(TGB, "llm-target-group-binding")
    assert tgb.inputs["metadata"]["name"] == "llm" and tgb.inputs["metadata"]["namespace"] == "llm"
    assert tgb.inputs["spec"] == {
        "serviceRef": {"name": "llm", "port": 8000},  # the ClusterIP Service's port: its endpoints become ip targets
        "targetGroupARN": "arn:aws:lb:us-east-1:123456789012:ep-llm-tg",
        "targetType": "ip",
        "networking": {
            "ingress": [{"from": [{"securityGroup": {"groupID": "ep-sg-id"}}], "ports": [{"protocol": "TCP", "port": 8000}]}]
        },
        "vpcID": "gpu-vpc-id",
    }
    # created once the controller (its CRD and webhooks) and the Service exist, with the cluster's provider
    controller = run.one("kubernetes:helm.sh/v3:Release", "gpu-aws-load-balancer-controller")
    service = run.one("kubernetes:core/v1:Service", "llm-service")
    assert {controller.urn, service.urn} <= set(tgb.dependencies)
    assert tgb.provider.startswith(run.one("pulumi:providers:kubernetes", "gpu-k8s").urn)
    assert tgb.parent == run.one("vllm-fleet:index:VllmService").urn
    assert run.one("vllm-fleet:index:VllmService").inputs["load_balancer"] == "nlb-target-group"
    # the target group is the one the RegionalEndpointLB made for this model
    assert run.one("aws:lb/targetGroup:TargetGroup", "ep-llm-tg").inputs["targetType"] == "ip"


def test_network_policy_admits_the_nlb_from_the_vpc(balanced):
    run, _ = balanced
    ingress = run.one(NETWORK_POLICY).inputs["spec"]["ingress"]
    assert len(ingress) == 2
    # clients and monitoring as before, plus the NLB: it connects from its private VPC addresses (client IPs not kept)
    assert ingress[1] == {"from": [{"ipBlock": {"cidr": "10.0.0.0/16"}}], "ports": [{"port": 8000, "protocol": "TCP"}]}


def test_namespace_gates_readiness_on_the_nlb(balanced):
    run, _ = balanced
    labels = run.one("kubernetes:core/v1:Namespace").inputs["metadata"]["labels"]
    assert labels["elbv2.k8s.aws/pod-readiness-gate-inject"] == "enabled"
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_no_binding_without_a_target_group(single):
    run, _ = single
    assert not run.of_type(TGB)
    assert "elbv2.k8s.aws/pod-readiness-gate-inject" not in run.one("kubernetes:core/v1:Namespace").inputs["metadata"]["labels"]
    assert run.one("vllm-fleet:index:VllmService").inputs.get("load_balancer") is None  # None props are not recorded


def test_given_source_cidrs():
    run, _ = build_service(
        ENGINES["llama-8b"], ["g5.xlarge"], target_group_arn="arn:tg", load_balancer_security_group_id="sg-1",
        load_balancer_source_cidrs=["10.0.96.0/20", "10.0.112.0/20"],
    )
    ingress = run.one(NETWORK_POLICY).inputs["spec"]["ingress"]
    assert ingress[1]["from"] == [{"ipBlock": {"cidr": "10.0.96.0/20"}}, {"ipBlock": {"cidr": "10.0.112.0/20"}}]
    assert run.one(TGB).inputs["spec"]["targetGroupARN"] == "arn:tg"


def test_existing_vpc_cidr_is_looked_up():
    run, _ = build_service(
        ENGINES["llama-8b"], ["g5.xlarge"],
        cluster={"network": {"vpc_id": "vpc-1", "private_subnet_ids": ["s-1", "s-2", "s-3"]}},
        target_group_arn="arn:tg", load_balancer_security_group_id="sg-1",
    )
    assert run.one(NETWORK_POLICY).inputs["spec"]["ingress"][1]["from"] == [{"ipBlock": {"cidr": "10.0.0.0/16"}}]
    assert run.one(TGB).inputs["spec"]["vpcID"] == "vpc-1"


def test_multi_node_model_binds_its_leaders():
    run, _ = build_service(ENGINES["llama-405b"], ["p5.48xlarge"], min_replicas=2, endpoint=ENDPOINT)
    service = run.one("kubernetes:core/v1:Service").inputs["spec"]
    assert service["selector"]["vllm-fleet/role"] == "leader"  # the Service the binding follows selects leaders only
    assert run.one(TGB).inputs["spec"]["serviceRef"] == {"name": "llm", "port": 8000}


@pytest.mark.parametrize(
    "cluster, service, message",
    [
        (
            {"aws_load_balancer_controller": False},
            {"target_group_arn": "arn:tg", "load_balancer_security_group_id": "sg-1"},
            "target_group_arn: the cluster was built without the AWS Load Balancer Controller that registers the pods in the "
            "target group; build it with aws_load_balancer_controller=True",
        ),
        (
            {},
            {"target_group_arn": "arn:tg", "load_balancer_security_group_id": "sg-1", "engine": "port-9000"},
            "target_group_arn: the engine serves on port 9000 but RegionalEndpointLB's target groups and security group "
            "reach pods on 8000; keep the engine's default port",
        ),
        (
            {},
            {"target_group_arn": "arn:tg"},
            "load_balancer_security_group_id: required with target_group_arn: the NLB's security group "
            "(RegionalEndpointLB.security_group_id), allowed to reach the pods on port 8000",
        ),
        (
            {},
            {"load_balancer_security_group_id": "sg-1"},
            "target_group_arn: load_balancer_security_group_id and load_balancer_source_cidrs apply only with target_group_arn; "
            "give it (RegionalEndpointLB.vllm_service_args(<service>)) or drop them",
        ),
        (
            {},
            {"target_group_arn": "arn:tg", "load_balancer_security_group_id": "sg-1", "load_balancer_source_cidrs": ["10.0.0.0/33"]},
            "load_balancer_source_cidrs: '10.0.0.0/33' is not a CIDR block (e.g. 10.0.0.0/16)",
        ),
        (
            {},
            {"target_group_arn": "arn:tg", "load_balancer_security_group_id": "sg-1", "load_balancer_source_cidrs": []},
            "load_balancer_source_cidrs: empty: give the NLB's source CIDRs, or None for the VPC CIDR",
        ),
    ],
)
def test_load_balancer_refusals_register_nothing(cluster, service, message):
    engine = ENGINES["llama-8b"]
    if service.pop("engine", None) == "port-9000":
        engine = engine.model_copy(update={"port": 9000})
    run, made = build_service(engine, ["g5.xlarge"], cluster=cluster, catch=True, **service)
    assert str(made["error"]) == message
    assert not run.of_type("vllm-fleet:index:VllmService")


def test_pods_opt_out_of_karpenter_consolidation(single, multi):
    """Karpenter v1 (karpenter.sh/reference/annotations): karpenter.sh/do-not-disrupt on a Pod keeps its node from
    being consolidated or drifted away while the model loads or serves; only the pod templates carry it."""
    run, _ = single
    dep = run.one(DEPLOYMENT).inputs
    assert dep["spec"]["template"]["metadata"]["annotations"]["karpenter.sh/do-not-disrupt"] == "true"
    assert "karpenter.sh/do-not-disrupt" not in dep["metadata"]["annotations"]
    tmpl = multi[0].one(LWS).inputs["spec"]["leaderWorkerTemplate"]
    for role in ("leaderTemplate", "workerTemplate"):
        assert tmpl[role]["metadata"]["annotations"]["karpenter.sh/do-not-disrupt"] == "true"
