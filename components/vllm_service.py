"""VllmService: one model (optionally a base model serving LoRA adapters) on a GpuCluster's EKS nodes.

What it creates, in its own namespace (restricted Pod Security Standard):
- the workload: an `apps/v1 Deployment`, or, when the model spans nodes (pipeline parallelism, pp > 1), a
  `LeaderWorkerSet` (leaderworkerset.x-k8s.io/v1) of `pp` pods per replica: TP inside a node, PP across the nodes,
  over a Ray cluster the leader starts (docs.vllm.ai deployment/frameworks/lws and examples/online_serving/
  multi-node-serving.sh, which the vllm-openai image ships under /vllm-workspace/examples);
- a ClusterIP Service on 8000, a PodDisruptionBudget, a KEDA ScaledObject on vLLM's queue length
  (`vllm:num_requests_waiting`) or an autoscaling/v2 HPA, a ServiceMonitor for /metrics, a NetworkPolicy
  (ingress on 8000 only from namespaces/pods labelled as clients and from the monitoring namespace), and a
  ServiceAccount without an API token;
- with `target_group_arn` (RegionalEndpointLB.vllm_service_args()), a TargetGroupBinding (elbv2.k8s.aws/v1beta1)
  through which the cluster's AWS Load Balancer Controller registers the serving pods (ip targets, port 8000)
  in the NLB's target group and opens port 8000 on the nodes' security group to the NLB's security group; the
  NetworkPolicy then also admits `load_balancer_source_cidrs` (default: the VPC CIDR) on 8000, because the
  NLB connects from its own private addresses (RegionalEndpointLB turns client IP preservation off). The VPC
  CIDR also holds the pods (VPC CNI), so that rule admits any pod in the VPC on 8000: the API key (required by
  default) stays the guard there. The namespace is labelled for the controller's pod readiness gate, so a
  rollout waits until new pods pass the NLB's health check.

The pod: image pinned, probes sized from the model's cold-start budget, a preStop drain that fits the
2-minute spot notice, /dev/shm in memory sized for TP, a node-local model cache (or the Run:ai streamer
from S3), secrets only through secretKeyRef (an existing Secret, or one created here from `api_key_value`),
a hardened securityContext, requests = limits (GPUs = TP, CPU/memory a share of the node minus daemonset
headroom), GPU tolerations, node affinity on the pool's GPU label and a zone spread. With `lora` (a
LoraStore's serving settings) the engine gets LoRA slots, the pod the lora-sync sidecar and its volume, and
the service account an IAM role (EKS Pod Identity) with the store's read policy.

Fit first: the constructor refuses a model that does not fit the pool's GPUs (DoesNotFit, saying what would
fit) before it registers anything.
"""

from __future__ import annotations

import ipaddress
import math
import shlex
from typing import Any, Literal

import pulumi
from pydantic import BaseModel, ConfigDict, Field

from .sizing.engine import component_args
from .lora_store import resolve_lora_engine
from .sizing.errors import InputError
from .sizing.instances import InstanceType
from .spot_node_pool import disk_holds_download, k8s_name, root_volume_gib
from .vllm import API_KEY_ENV, HF_TOKEN_ENV, MODEL_CACHE_PATH, SPOT_NOTICE_SECONDS, VLLM_PORT, VllmEngine, engine_props

HEALTH_PATH = "/health"
METRICS_PATH = "/metrics"
PORT_NAME = "http"
PROBE_PERIOD_SECONDS = 10
# Where the vllm-openai image keeps vLLM's examples (its Dockerfile copies examples/ into /vllm-workspace).
MULTI_NODE_SCRIPT = "/vllm-workspace/examples/online_serving/multi-node-serving.sh"
LWS_API_VERSION = "leaderworkerset.x-k8s.io/v1"
LWS_GROUP_KEY = "leaderworkerset.sigs.k8s.io/group-key"
# AWS Load Balancer Controller (docs: guide/targetgroupbinding/spec.md, deploy/pod_readiness_gate.md).
TGB_API_VERSION = "elbv2.k8s.aws/v1beta1"
READINESS_GATE_LABEL = "elbv2.k8s.aws/pod-readiness-gate-inject"
LB_CONTROLLER_ADDON = "aws-load-balancer-controller"  # GpuCluster.addons key (components.eks_addons.LB_CONTROLLER_CHART)
PROMETHEUS_STACK_ADDON = "kube-prometheus-stack"  # GpuCluster.addons key (components.eks_addons.PROMETHEUS_STACK_CHART)
ZONE_KEY = "topology.kubernetes.io/zone"
# Share of a node's CPU and memory a pod may take (kubelet/system reservations, eviction thresholds) and what
# is left for daemonsets (VPC CNI, kube-proxy, pod identity agent, device plugin, DCGM exporter).
CPU_SHARE, CPU_DAEMONSETS = 0.9, 0.5
MEMORY_SHARE, MEMORY_DAEMONSETS_GIB = 0.85, 1.0
# Spot: EC2 gives 120 s. The kubelet needs some of it to start the drain and the node to shut down.
SHUTDOWN_MARGIN_SECONDS = 20
# checkov findings accepted on the rendered workload; each is justified next to the setting it is about.
CHECKOV_ACCEPTED = {
    "CKV_K8S_43": "image pinned to a version tag (engine.image); a digest is accepted there but not required",
    "CKV_K8S_35": "VLLM_API_KEY can only be read from the environment by vLLM; it comes from a Secret (secretKeyRef)",
}
# Karpenter v1 pod annotation (GA) that opts a pod's node out of voluntary disruption.
DO_NOT_DISRUPT_ANNOTATION = "karpenter.sh/do-not-disrupt"


class VllmServiceArgs(BaseModel):
    """One vLLM model served on EKS."""

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    cluster: Any = Field(description="The GpuCluster (platform eks).")
    node_pool: Any = Field(description="The SpotNodePool whose GPUs serve the model.")
    engine: VllmEngine = Field(description="The vLLM engine settings (model, TP/PP, dtype, LoRA...).")
    namespace: str | None = Field(
        None, description="Namespace of the service's objects; None = one namespace per service, named after it."
    )
    create_namespace: bool = Field(True, description="Create the namespace (restricted Pod Security Standard).")
    min_replicas: int = Field(1, ge=1, le=1000, description="Replicas kept running (each tp x pp GPUs).")
    max_replicas: int = Field(4, ge=1, le=1000, description="Most replicas the autoscaler may run.")
    autoscaling: Literal["keda", "hpa", "none"] = Field(
        "keda", description="keda: ScaledObject on the Prometheus query; hpa: autoscaling/v2 on a custom Pods metric."
    )
    scaling_query: str | None = Field(
        None, description="PromQL the ScaledObject scales on; None = waiting requests of this model summed over replicas."
    )
    scaling_threshold: float = Field(5.0, gt=0, description="Target value per replica (waiting requests per replica).")
    prometheus_url: str | None = Field(
        None,
        description="Prometheus KEDA queries; None = the cluster's (GpuCluster.prometheus_url: its kube-prometheus-stack "
        "release's Service, or the Prometheus the cluster was told to use).",
    )
    hpa_metric: str = Field(
        "vllm_num_requests_waiting", description="HPA: the per-pod custom metric name (as a Prometheus adapter exposes it)."
    )
    hf_token_secret: str | None = Field(None, description="Existing Secret holding the Hugging Face token (gated models).")
    hf_token_secret_key: str = Field("token", description="Key of the token in hf_token_secret.")
    api_key_secret: str | None = Field(None, description="Existing Secret holding the API key clients must send.")
    api_key_secret_key: str = Field("api-key", description="Key of the API key in api_key_secret.")
    api_key_value: Any = Field(
        None,
        description="The API key itself (pulumi.Input[str], e.g. a RandomPassword result): stored in a Secret created "
        "here and read through secretKeyRef. Give this or api_key_secret, not both.",
    )
    require_api_key: bool = Field(True, description="Refuse to deploy without api_key_secret (opt out for internal-only use).")
    client_label: dict[str, str] = Field(
        {"vllm-fleet/client": "true"}, description="Namespaces or pods (same namespace) with this label may call the API."
    )
    monitoring_namespace: str = Field("monitoring", description="Namespace Prometheus scrapes from.")
    service_monitor: bool = Field(True, description="Create a ServiceMonitor (needs the Prometheus operator's CRDs).")
    service_monitor_labels: dict[str, str] = Field({}, description="Labels your Prometheus selects ServiceMonitors by.")
    termination_grace_seconds: int = Field(90, ge=10, description="Pod grace period; must fit the 120 s spot notice.")
    pre_stop_sleep_seconds: int = Field(15, ge=0, description="preStop sleep so endpoints stop routing before SIGTERM.")
    run_as_user: int = Field(10001, ge=10000, description="Non-root uid (>= 10000, clear of host users).")
    zone_spread: Literal["ScheduleAnyway", "DoNotSchedule"] = Field(
        "ScheduleAnyway", description="Spread replicas over zones; DoNotSchedule refuses to stack them in one zone."
    )
    service_account_role_arn: Any = Field(
        None,
        description="IAM role for the pods (EKS Pod Identity), e.g. S3 read for runai_streamer. With `lora` and no role "
        "given, a role carrying the store's read policy is created.",
    )
    lora: Any = Field(
        None,
        description="LoRA adapters to serve (components.lora_store.LoraServing, from LoraStore.serving_settings()): "
        "LoRA slots on the engine, the lora-sync sidecar and its shared volume.",
    )
    labels: dict[str, str] = Field({}, description="Extra labels on every object.")
    region: str | None = Field(None, description="Region the service runs in, for pricing (props only); None = the aws:region config.")
    spot_fraction: float | None = Field(
        None, ge=0, le=1, description="Expected share of its nodes on spot, for pricing (props only); None = the node pool's."
    )
    target_group_arn: Any = Field(
        None,
        description="NLB target group to serve behind (pulumi.Input[str], RegionalEndpointLB.target_group_arns[<service>]): "
        "a TargetGroupBinding registers the serving pods in it (needs the cluster's AWS Load Balancer Controller). The "
        "namespace created here is labelled elbv2.k8s.aws/pod-readiness-gate-inject=enabled; label your own with "
        "create_namespace=False.",
    )
    load_balancer_security_group_id: Any = Field(
        None,
        description="With target_group_arn: the NLB's security group (pulumi.Input[str], RegionalEndpointLB.security_group_id); "
        "the controller opens port 8000 on the nodes' security group to it.",
    )
    load_balancer_source_cidrs: list[Any] | None = Field(
        None,
        description="With target_group_arn: CIDRs the NetworkPolicy admits on port 8000 for the NLB (it connects from its "
        "own private addresses, not the clients'). None = the VPC CIDR.",
    )


# ----- pure rules ----------------------------------------------------------------------------------------


def startup_failure_threshold(startup_seconds: int, period_seconds: int = PROBE_PERIOD_SECONDS) -> int:
    """Startup probe failures allowed so that failureThreshold x periodSeconds covers the cold-start budget."""
    return max(1, math.ceil(startup_seconds / period_seconds))


def probes(port: str, startup_seconds: int) -> dict[str, dict[str, Any]]:
    """Startup covers the model load; readiness takes a replica out of the Service; liveness restarts a hung one."""

    def http(**extra: Any) -> dict[str, Any]:
        return {"httpGet": {"path": HEALTH_PATH, "port": port}, **extra}

    return {
        "startupProbe": http(
            periodSeconds=PROBE_PERIOD_SECONDS,
            timeoutSeconds=5,
            failureThreshold=startup_failure_threshold(startup_seconds),
        ),
        "readinessProbe": http(periodSeconds=10, timeoutSeconds=5, failureThreshold=3, successThreshold=1),
        "livenessProbe": http(periodSeconds=20, timeoutSeconds=10, failureThreshold=3),
    }


def shm_size_gib(tp: int) -> int:
    """/dev/shm for NCCL and the engine's worker processes: 2 GiB per TP rank, at most 16 GiB."""
    return min(2 * tp, 16)


def pod_resources(instance: InstanceType, gpus: int) -> dict[str, Any]:
    """requests = limits (Guaranteed QoS): `gpus` GPUs and that share of the node's CPU and memory, minus headroom."""
    if gpus > instance.gpu_count:
        raise InputError("tp", f"{gpus} GPUs per pod but {instance.name} has {instance.gpu_count}")
    share = gpus / instance.gpu_count
    cpu = math.floor(instance.vcpus * share * CPU_SHARE - CPU_DAEMONSETS)
    memory = math.floor(instance.memory_gib * share * MEMORY_SHARE - MEMORY_DAEMONSETS_GIB)
    if cpu < 1 or memory < 4:
        raise InputError("node_pool", f"{instance.name} leaves {cpu} CPU / {memory} GiB per pod; use a larger instance")
    return {"cpu": str(cpu), "memory": f"{memory}Gi", "nvidia.com/gpu": str(gpus)}


def disruption_budget(min_replicas: int) -> dict[str, Any]:
    """One replica at a time may be evicted; with two or more, at least one always keeps serving."""
    return {"minAvailable": 1} if min_replicas >= 2 else {"maxUnavailable": 1}


def default_scaling_query(served_model_name: str) -> str:
    return f'sum(vllm:num_requests_waiting{{model_name="{served_model_name}"}})'


def validate_shutdown(grace_seconds: int, pre_stop_seconds: int) -> None:
    limit = SPOT_NOTICE_SECONDS - SHUTDOWN_MARGIN_SECONDS
    if grace_seconds > limit:
        raise InputError(
            "termination_grace_seconds",
            f"{grace_seconds} s does not fit the {SPOT_NOTICE_SECONDS} s spot notice; use <= {limit} s",
        )
    if pre_stop_seconds >= grace_seconds:
        raise InputError(
            "pre_stop_sleep_seconds", f"{pre_stop_seconds} s leaves no time to drain inside the {grace_seconds} s grace period"
        )


def secret_env(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def target_group_binding_spec(
    service_name: str, port: int, target_group_arn: Any, security_group_id: Any, vpc_id: Any = None
) -> dict[str, Any]:
    """TargetGroupBinding spec: the Service's endpoints (pod IPs) as ip targets of the target group, and an ingress
    rule the controller adds to the pods' (nodes') security group: the NLB's security group on the serving port."""
    spec: dict[str, Any] = {
        "serviceRef": {"name": service_name, "port": port},
        "targetGroupARN": target_group_arn,
        "targetType": "ip",
        "networking": {
            "ingress": [{"from": [{"securityGroup": {"groupID": security_group_id}}], "ports": [{"protocol": "TCP", "port": port}]}]
        },
    }
    if vpc_id is not None:
        spec["vpcID"] = vpc_id  # saves the controller's webhook a lookup of the target group's VPC
    return spec


def leader_command(args: list[str]) -> list[str]:
    """Leader of a LeaderWorkerSet group: start the Ray head, wait for the group, then serve over Ray."""
    serve = shlex.join(["vllm", "serve", *args, "--distributed-executor-backend", "ray"])
    return ["/bin/sh", "-c", f'bash {MULTI_NODE_SCRIPT} leader --ray_cluster_size="${{LWS_GROUP_SIZE}}" && exec {serve}']


def worker_command() -> list[str]:
    """Worker of a LeaderWorkerSet group: join the leader's Ray cluster and hold the GPUs for it."""
    return ["/bin/sh", "-c", f'exec bash {MULTI_NODE_SCRIPT} worker --ray_address="${{LWS_LEADER_ADDRESS}}"']


# ----- the component -------------------------------------------------------------------------------------


class VllmService(pulumi.ComponentResource):
    """A vLLM model on EKS: workload, Service, PDB, autoscaler, ServiceMonitor, NetworkPolicy."""

    def __init__(self, name: str, args: VllmServiceArgs | dict, opts: pulumi.ResourceOptions | None = None):
        args = component_args(VllmServiceArgs, args)
        cluster, pool, lora = args.cluster, args.node_pool, args.lora
        # ----- validation and fit, before anything is registered -----
        if getattr(cluster, "platform", None) != "eks" or getattr(pool, "platform", None) != "eks":
            raise InputError("cluster", "VllmService runs on EKS; use EcsVllmTask on an ECS GpuCluster")
        engine = args.engine
        if lora is not None:
            engine = resolve_lora_engine(engine, lora)  # before the fit check: the LoRA slots take GPU memory
        e = engine.engine
        if e.tp > pool.gpus_per_node:
            raise InputError(
                "tp",
                f"TP {e.tp} must fit inside one node but {pool.instance.name} has {pool.gpus_per_node} GPUs; "
                f"use TP <= {pool.gpus_per_node} and pipeline parallelism (pp) across nodes",
            )
        engine.require_fit(pool.gpu, pool.gpus_per_node * e.pp)
        svc = k8s_name(name)
        namespace = k8s_name(args.namespace or svc, "namespace")
        if args.min_replicas > args.max_replicas:
            raise InputError("min_replicas", f"{args.min_replicas} is above max_replicas {args.max_replicas}")
        validate_shutdown(args.termination_grace_seconds, args.pre_stop_sleep_seconds)
        if args.api_key_secret and args.api_key_value is not None:
            raise InputError("api_key_value", "give the API key as api_key_value or as an existing api_key_secret, not both")
        if args.require_api_key and not args.api_key_secret and args.api_key_value is None:
            raise InputError(
                "api_key_secret",
                "name the Secret holding the API key clients must send (or pass api_key_value), "
                "or set require_api_key=False for internal-only use",
            )
        addons = getattr(cluster, "addons", {})
        if args.autoscaling == "keda" and "keda" not in addons:
            raise InputError("autoscaling", "the cluster was built without KEDA; use autoscaling='hpa' or 'none'")
        if e.pp > 1 and "lws" not in addons:
            raise InputError("pp", f"PP {e.pp} needs LeaderWorkerSet; build the cluster with leader_worker_set=True")
        monitoring_release = addons.get(PROMETHEUS_STACK_ADDON)
        monitoring_declared = "monitoring.coreos.com" in getattr(cluster, "crd_prerequisites", [])
        if args.service_monitor and monitoring_release is None and not monitoring_declared:
            raise InputError(
                "service_monitor",
                "the cluster neither installs kube-prometheus-stack nor declares the Prometheus Operator CRDs installed "
                "(GpuCluster prometheus_url + prometheus_operator_crds_installed); set service_monitor=False or fix the cluster",
            )
        prometheus_url = args.prometheus_url or getattr(cluster, "prometheus_url", None)
        if args.autoscaling == "keda" and not prometheus_url:
            raise InputError("prometheus_url", "KEDA needs the Prometheus it queries: give prometheus_url or a GpuCluster that has one")
        load_balanced = args.target_group_arn is not None
        if load_balanced:
            if LB_CONTROLLER_ADDON not in addons:
                raise InputError(
                    "target_group_arn",
                    "the cluster was built without the AWS Load Balancer Controller that registers the pods in the target group; "
                    "build it with aws_load_balancer_controller=True",
                )
            if engine.port != VLLM_PORT:
                raise InputError(
                    "target_group_arn",
                    f"the engine serves on port {engine.port} but RegionalEndpointLB's target groups and security group reach "
                    f"pods on {VLLM_PORT}; keep the engine's default port",
                )
            if args.load_balancer_security_group_id is None:
                raise InputError(
                    "load_balancer_security_group_id",
                    "required with target_group_arn: the NLB's security group (RegionalEndpointLB.security_group_id), "
                    "allowed to reach the pods on port 8000",
                )
        elif args.load_balancer_security_group_id is not None or args.load_balancer_source_cidrs is not None:
            raise InputError(
                "target_group_arn",
                "load_balancer_security_group_id and load_balancer_source_cidrs apply only with target_group_arn; give it "
                "(RegionalEndpointLB.vllm_service_args(<service>)) or drop them",
            )
        if args.load_balancer_source_cidrs is not None:
            if not args.load_balancer_source_cidrs:
                raise InputError("load_balancer_source_cidrs", "empty: give the NLB's source CIDRs, or None for the VPC CIDR")
            for cidr in args.load_balancer_source_cidrs:
                if isinstance(cidr, str):  # plain values only; Outputs are checked by AWS/Kubernetes
                    try:
                        ipaddress.ip_network(cidr, strict=True)
                    except ValueError:
                        raise InputError("load_balancer_source_cidrs", f"{cidr!r} is not a CIDR block (e.g. 10.0.0.0/16)") from None
        pool_volume = getattr(pool, "root_volume_gib", None)
        if not getattr(pool, "instance_store_raid0", False) and isinstance(pool_volume, int) and not isinstance(pool_volume, bool):
            # Without local NVMe the emptyDir cache sits on the node's root volume, next to the image.
            need = root_volume_gib(engine.download_gib())
            if not disk_holds_download(pool_volume, engine.download_gib()):
                raise InputError(
                    "node_pool",
                    f"{engine.model} downloads a {engine.checkpoint_gib():.1f} GiB checkpoint but the node pool's root volume is "
                    f"{pool_volume} GiB; build the pool with model_weights_gib={engine.download_gib():.1f} (root volume >= {need} GiB)",
                )
        resources = pod_resources(pool.instance, e.tp)
        startup = engine.startup_seconds(pool.instance.network_gbps)
        multi_node = e.pp > 1

        props = {
            "platform": "eks",
            **engine_props(engine),
            "served_model_name": engine.served_model_name or engine.model,
            "gpu": pool.gpu.name,
            "gpu_memory_gib": pool.gpu.memory_gib,
            "instance_type": pool.instance.name,
            "gpus_per_node": pool.gpus_per_node,
            "min_replicas": args.min_replicas,
            "max_replicas": args.max_replicas,
            "gpus_per_replica": e.tp * e.pp,
            "region": args.region or pulumi.Config("aws").get("region"),
            "spot_fraction": args.spot_fraction,
            "workload": "LeaderWorkerSet" if multi_node else "Deployment",
            "namespace": namespace,
            "checkpoint_gib": round(engine.checkpoint_gib(), 1),
            "model_cache_gib": engine.model_cache_gib(),
            "load_format": engine.load_format,
            "node_disk_gib": None if getattr(pool, "instance_store_raid0", False) else getattr(pool, "root_volume_gib", None),
            "startup_seconds": startup,
            "startup_probe_seconds": startup_failure_threshold(startup) * PROBE_PERIOD_SECONDS,
            "termination_grace_seconds": args.termination_grace_seconds,
            "require_api_key": args.require_api_key,
            "network_policy": True,
            "pod_disruption_budget": True,
            "autoscaling": args.autoscaling,
            "lora": lora is not None,
            "lora_cache_gib": lora.cache_size_gib if lora is not None else None,
            "load_balancer": "nlb-target-group" if load_balanced else None,
        }
        super().__init__("vllm-fleet:index:VllmService", name, props, opts)
        # Set after super().__init__: the component turns each props key into an Output attribute.
        self.engine = engine
        self.service_name = svc
        self.namespace = namespace
        self.startup_seconds = startup
        self.resources_per_pod = resources

        import pulumi_kubernetes as k8s

        provider = cluster.k8s_provider
        kopts = pulumi.ResourceOptions(parent=self, provider=provider)
        selector = {"app.kubernetes.io/name": "vllm", "app.kubernetes.io/instance": svc}
        labels = {**args.labels, **selector, "app.kubernetes.io/component": "inference", "app.kubernetes.io/managed-by": "pulumi"}
        annotations = {"vllm-fleet/model": engine.model}
        # Pods only: Karpenter never consolidates or drifts a node away under a loading or serving vLLM pod
        # (karpenter.sh/docs/reference/annotations: karpenter.sh/do-not-disrupt on a Pod blocks consolidation of its
        # node, and drift unless the NodeClaim sets terminationGracePeriod; spot interruption and expiry still apply).
        pod_annotations = {**annotations, DO_NOT_DISRUPT_ANNOTATION: "true"}

        def meta(extra_labels: dict[str, str] | None = None) -> dict[str, Any]:
            return {"name": svc, "namespace": namespace, "labels": {**labels, **(extra_labels or {})}, "annotations": annotations}

        # ----- namespace and service account -----
        depends: list[pulumi.Resource] = []
        if args.create_namespace:
            ns = k8s.core.v1.Namespace(
                f"{name}-namespace",
                metadata={
                    "name": namespace,
                    "labels": {
                        **args.labels,
                        # The pod below meets the restricted profile; enforce it so nothing weaker joins it.
                        "pod-security.kubernetes.io/enforce": "restricted",
                        "pod-security.kubernetes.io/audit": "restricted",
                        "pod-security.kubernetes.io/warn": "restricted",
                        # The controller gates pod readiness on the NLB's health check: rollouts wait for it.
                        **({READINESS_GATE_LABEL: "enabled"} if load_balanced else {}),
                    },
                },
                opts=kopts,
            )
            depends.append(ns)
        opts_ns = pulumi.ResourceOptions(parent=self, provider=provider, depends_on=depends)
        sa = k8s.core.v1.ServiceAccount(
            f"{name}-service-account",
            metadata=meta(),
            automount_service_account_token=False,  # vLLM never talks to the Kubernetes API
            opts=opts_ns,
        )
        role_arn = args.service_account_role_arn
        if role_arn is None and lora is not None:
            role_arn = self._lora_reader_role(name, lora.read_policy_arn)
        if role_arn is not None:
            import pulumi_aws as aws

            aws.eks.PodIdentityAssociation(
                f"{name}-pod-identity",
                cluster_name=cluster.cluster_name,
                namespace=namespace,
                service_account=svc,
                role_arn=role_arn,
                opts=pulumi.ResourceOptions(parent=self, depends_on=[sa]),
            )
        api_key_secret = args.api_key_secret
        if args.api_key_value is not None:
            api_key_secret = f"{svc}-api-key"
            k8s.core.v1.Secret(
                f"{name}-api-key",
                metadata={**meta(), "name": api_key_secret},
                type="Opaque",
                string_data={args.api_key_secret_key: pulumi.Output.secret(args.api_key_value)},
                opts=opts_ns,
            )

        # ----- the pod -----
        plain_env = {**engine.environment(), **(lora.environment if lora is not None else {})}
        env = [{"name": k, "value": v} for k, v in sorted(plain_env.items())]
        env.append({"name": "HOME", "value": "/tmp"})  # read-only root: tools that write under $HOME use the tmp volume
        if args.hf_token_secret:
            env.append(secret_env(HF_TOKEN_ENV, args.hf_token_secret, args.hf_token_secret_key))
        if api_key_secret:
            # checkov CKV_K8S_35 (secrets as files) accepted: vLLM reads the API key only from this variable;
            # the value stays in the Secret (secretKeyRef), never in the pod spec.
            env.append(secret_env(API_KEY_ENV, api_key_secret, args.api_key_secret_key))

        cache_gib = engine.model_cache_gib()
        volumes = [
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": f"{shm_size_gib(e.tp)}Gi"}},
            # Node-local cache: the Hub download (or, with runai_streamer, only compile caches: weights stream from S3).
            {"name": "model-cache", "emptyDir": {"sizeLimit": f"{cache_gib}Gi"}},
            {"name": "tmp", "emptyDir": {"sizeLimit": "4Gi"}},
        ]
        mounts = [
            {"name": "dshm", "mountPath": "/dev/shm"},
            {"name": "model-cache", "mountPath": MODEL_CACHE_PATH},
            {"name": "tmp", "mountPath": "/tmp"},
        ]
        if lora is not None:
            # The adapters the lora-sync sidecar keeps in step with S3; vLLM's resolver reads them (read-only).
            volumes += lora.kubernetes_volumes()
            mounts.append(lora.kubernetes_vllm_volume_mount())
        container_security = {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": args.run_as_user,
            "runAsGroup": args.run_as_user,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        }
        res = {"requests": dict(resources), "limits": dict(resources)}
        node_affinity = {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": k, "operator": "In", "values": [v]} for k, v in sorted(pool.node_selector.items())]}
                ]
            }
        }

        def container(role: str) -> dict[str, Any]:
            c: dict[str, Any] = {
                "name": "vllm" if role != "worker" else "ray-worker",
                # Pinned by VllmEngine: a version tag or a digest, never latest.
                # checkov CKV_K8S_43 (image by digest) accepted: a pinned tag is required, a digest is allowed.
                "image": engine.image,
                # Always re-checks the tag's manifest (cheap); the ~10 GB of layers stay cached on the node.
                "imagePullPolicy": "Always",
                # Ray workers never serve the API: they get no API key.
                "env": env if role != "worker" else [v for v in env if v["name"] != API_KEY_ENV],
                "resources": res,
                "securityContext": container_security,
                "volumeMounts": mounts,
            }
            if role == "server":
                c["args"] = engine.args()
            elif role == "leader":
                c["command"] = leader_command(engine.args())
            else:
                c["command"] = worker_command()
            if role != "worker":
                c["ports"] = [{"name": PORT_NAME, "containerPort": engine.port, "protocol": "TCP"}]
                c.update(probes(PORT_NAME, startup))
                # Endpoints drain (kube-proxy / load balancers stop routing) before vLLM gets SIGTERM.
                c["lifecycle"] = {"preStop": {"sleep": {"seconds": args.pre_stop_sleep_seconds}}}
            return c

        def pod_spec(role: str) -> dict[str, Any]:
            affinity: dict[str, Any] = {"nodeAffinity": node_affinity}
            if role == "worker":
                # A group's pods stay in the leader's zone: pipeline stages talk on every token.
                affinity["podAffinity"] = {
                    "requiredDuringSchedulingIgnoredDuringExecution": [
                        {"labelSelector": {"matchLabels": selector}, "matchLabelKeys": [LWS_GROUP_KEY], "topologyKey": ZONE_KEY}
                    ]
                }
            spec: dict[str, Any] = {
                "serviceAccountName": svc,
                "automountServiceAccountToken": False,
                "terminationGracePeriodSeconds": args.termination_grace_seconds,
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsUser": args.run_as_user,
                    "runAsGroup": args.run_as_user,
                    "fsGroup": args.run_as_user,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "containers": [container(role)],
                "volumes": volumes,
                **(
                    {"initContainers": [lora.kubernetes_init_container(
                        api_key_secret=(api_key_secret, args.api_key_secret_key) if api_key_secret else None
                    )]}
                    if lora is not None and role != "worker"
                    else {}
                ),
                "tolerations": pool.tolerations,
                "affinity": affinity,
            }
            if role != "worker":
                spec["topologySpreadConstraints"] = [
                    {
                        "maxSkew": 1,
                        "topologyKey": ZONE_KEY,
                        # ScheduleAnyway by default: spot GPU capacity is often in one zone only; serving there beats pending.
                        "whenUnsatisfiable": args.zone_spread,
                        "labelSelector": {"matchLabels": {**selector, **({"vllm-fleet/role": "leader"} if role == "leader" else {})}},
                    }
                ]
            return spec

        # Replicas belong to the autoscaler once it runs; Pulumi sets the initial count only.
        workload_opts = pulumi.ResourceOptions(parent=self, provider=provider, depends_on=[sa], ignore_changes=["spec.replicas"])
        if not multi_node:
            self.workload = k8s.apps.v1.Deployment(
                f"{name}-deployment",
                metadata=meta(),
                spec={
                    "replicas": args.min_replicas,
                    "selector": {"matchLabels": selector},
                    # Never below the serving count during a rollout: surge one replica (one more GPU node).
                    "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                    # A new replica may wait for a GPU node and then load the model.
                    "progressDeadlineSeconds": startup + 600,
                    "template": {"metadata": {"labels": labels, "annotations": pod_annotations}, "spec": pod_spec("server")},
                },
                opts=workload_opts,
            )
            target = {"apiVersion": "apps/v1", "kind": "Deployment", "name": svc}
            service_selector = selector
        else:
            leader_labels = {**labels, "vllm-fleet/role": "leader"}
            worker_labels = {**labels, "vllm-fleet/role": "worker"}
            self.workload = k8s.apiextensions.CustomResource(
                f"{name}-leader-worker-set",
                api_version=LWS_API_VERSION,
                kind="LeaderWorkerSet",
                metadata=meta(),
                spec={
                    "replicas": args.min_replicas,
                    "startupPolicy": "LeaderCreated",  # the leader waits for its workers itself (Ray cluster size)
                    "rolloutStrategy": {
                        "type": "RollingUpdate",
                        "rollingUpdateConfiguration": {"maxUnavailable": 0, "maxSurge": 1},
                    },
                    "leaderWorkerTemplate": {
                        "size": e.pp,
                        # A lost pod breaks the pipeline: restart the whole group together.
                        "restartPolicy": "RecreateGroupOnPodRestart",
                        "leaderTemplate": {"metadata": {"labels": leader_labels, "annotations": pod_annotations}, "spec": pod_spec("leader")},
                        "workerTemplate": {"metadata": {"labels": worker_labels, "annotations": pod_annotations}, "spec": pod_spec("worker")},
                    },
                },
                opts=pulumi.ResourceOptions(
                    parent=self, provider=provider, depends_on=[sa, addons["lws"]], ignore_changes=["spec.replicas"]
                ),
            )
            target = {"apiVersion": LWS_API_VERSION, "kind": "LeaderWorkerSet", "name": svc}
            service_selector = {**selector, "vllm-fleet/role": "leader"}

        self.service = k8s.core.v1.Service(
            f"{name}-service",
            metadata=meta(),
            spec={
                "type": "ClusterIP",
                "selector": service_selector,
                "ports": [{"name": PORT_NAME, "port": engine.port, "targetPort": PORT_NAME, "protocol": "TCP"}],
            },
            opts=opts_ns,
        )
        self.pdb = k8s.policy.v1.PodDisruptionBudget(
            f"{name}-pdb",
            metadata=meta(),
            spec={"selector": {"matchLabels": service_selector}, **disruption_budget(args.min_replicas)},
            opts=opts_ns,
        )

        # ----- autoscaling -----
        behavior = {
            # Scale up fast (queues grow in seconds); down slowly (a replica costs minutes to bring back).
            "scaleUp": {"stabilizationWindowSeconds": 0, "policies": [{"type": "Pods", "value": 2, "periodSeconds": 60}]},
            "scaleDown": {"stabilizationWindowSeconds": 600, "policies": [{"type": "Pods", "value": 1, "periodSeconds": 300}]},
        }
        served = engine.served_model_name or engine.model
        self.scaling_query = args.scaling_query or default_scaling_query(served)
        self.autoscaler = None
        if args.autoscaling == "keda":
            self.autoscaler = k8s.apiextensions.CustomResource(
                f"{name}-scaled-object",
                api_version="keda.sh/v1alpha1",
                kind="ScaledObject",
                metadata=meta(),
                spec={
                    "scaleTargetRef": target,
                    "minReplicaCount": args.min_replicas,
                    "maxReplicaCount": args.max_replicas,
                    "pollingInterval": 15,
                    "cooldownPeriod": 300,
                    "advanced": {"horizontalPodAutoscalerConfig": {"behavior": behavior}},
                    "triggers": [
                        {
                            "type": "prometheus",
                            "metadata": {
                                "serverAddress": prometheus_url,
                                "query": self.scaling_query,
                                "threshold": f"{args.scaling_threshold:g}",
                            },
                        }
                    ],
                },
                opts=pulumi.ResourceOptions(parent=self, provider=provider, depends_on=[self.workload, addons["keda"]]),
            )
        elif args.autoscaling == "hpa":
            self.autoscaler = k8s.autoscaling.v2.HorizontalPodAutoscaler(
                f"{name}-hpa",
                metadata=meta(),
                spec={
                    "scaleTargetRef": target,
                    "minReplicas": args.min_replicas,
                    "maxReplicas": args.max_replicas,
                    "metrics": [
                        {
                            "type": "Pods",
                            "pods": {
                                "metric": {"name": args.hpa_metric},
                                "target": {"type": "AverageValue", "averageValue": f"{args.scaling_threshold:g}"},
                            },
                        }
                    ],
                    "behavior": behavior,
                },
                opts=pulumi.ResourceOptions(parent=self, provider=provider, depends_on=[self.workload]),
            )

        # ----- observability and network -----
        self.service_monitor = None
        if args.service_monitor:
            self.service_monitor = k8s.apiextensions.CustomResource(
                f"{name}-service-monitor",
                api_version="monitoring.coreos.com/v1",
                kind="ServiceMonitor",
                metadata=meta(args.service_monitor_labels),
                spec={
                    "selector": {"matchLabels": selector},
                    "namespaceSelector": {"matchNames": [namespace]},
                    "endpoints": [{"port": PORT_NAME, "path": METRICS_PATH, "interval": "15s", "scrapeTimeout": "10s"}],
                },
                # Its CRD comes with the kube-prometheus-stack release (or is a declared prerequisite).
                opts=pulumi.ResourceOptions(
                    parent=self,
                    provider=provider,
                    depends_on=[*depends, *([monitoring_release] if isinstance(monitoring_release, pulumi.Resource) else [])],
                ),
            )
        ingress: list[dict[str, Any]] = [
            {
                "from": [
                    {"namespaceSelector": {"matchLabels": args.client_label}},
                    {"podSelector": {"matchLabels": args.client_label}},
                    {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": args.monitoring_namespace}}},
                ],
                "ports": [{"port": engine.port, "protocol": "TCP"}],
            }
        ]
        self.target_group_binding = None
        if load_balanced:
            source_cidrs = args.load_balancer_source_cidrs or [self._vpc_cidr(cluster)]
            # The NLB's connections and health checks come from its private addresses in the VPC (no client IPs).
            ingress.append(
                {"from": [{"ipBlock": {"cidr": c}} for c in source_cidrs], "ports": [{"port": engine.port, "protocol": "TCP"}]}
            )
            controller = addons.get(LB_CONTROLLER_ADDON)
            self.target_group_binding = k8s.apiextensions.CustomResource(
                f"{name}-target-group-binding",
                api_version=TGB_API_VERSION,
                kind="TargetGroupBinding",
                metadata=meta(),
                spec=target_group_binding_spec(
                    svc, engine.port, args.target_group_arn, args.load_balancer_security_group_id, cluster.network.vpc_id
                ),
                # The CRD and its webhooks come with the controller's chart.
                opts=pulumi.ResourceOptions(
                    parent=self,
                    provider=provider,
                    depends_on=[*depends, self.service, *([controller] if isinstance(controller, pulumi.Resource) else [])],
                ),
            )
        if multi_node:
            # Ray and NCCL between the pods of a group use many ports.
            ingress.append({"from": [{"podSelector": {"matchLabels": selector}}]})
        self.network_policy = k8s.networking.v1.NetworkPolicy(
            f"{name}-network-policy",
            metadata=meta(),
            spec={"podSelector": {"matchLabels": selector}, "policyTypes": ["Ingress"], "ingress": ingress},
            opts=opts_ns,
        )

        self.url = f"http://{svc}.{namespace}.svc.cluster.local:{engine.port}"
        self.target_group_arn = args.target_group_arn
        # Stack policies under the Pulumi CLI see a component's registered outputs: register the props too.
        self.register_outputs({**props, "url": self.url, "namespace": namespace, "service_name": svc, "scaling_query": self.scaling_query})

    def _vpc_cidr(self, cluster: Any) -> Any:
        """The cluster VPC's CIDR: known for a VPC GpuCluster created, looked up (through this component's provider) otherwise."""
        network = cluster.network
        if network.cidr_block:
            return network.cidr_block
        import pulumi_aws as aws

        return aws.ec2.get_vpc_output(id=network.vpc_id, opts=pulumi.InvokeOutputOptions(parent=self)).cidr_block

    def _lora_reader_role(self, name: str, read_policy_arn: Any) -> Any:
        """The pods' IAM role (EKS Pod Identity) with the LoRA store's read-only policy: the sidecar syncs from S3."""
        import json

        import pulumi_aws as aws

        from .eks_addons import assume_role_policy

        opts = pulumi.ResourceOptions(parent=self)
        role = aws.iam.Role(
            f"{name}-pod-role",
            assume_role_policy=json.dumps(assume_role_policy("pods.eks.amazonaws.com", tag_session=True)),
            opts=opts,
        )
        aws.iam.RolePolicyAttachment(f"{name}-lora-read", role=role.name, policy_arn=read_policy_arn, opts=opts)
        return role.arn


__all__ = [
    "CHECKOV_ACCEPTED",
    "VllmService",
    "VllmServiceArgs",
    "default_scaling_query",
    "disruption_budget",
    "leader_command",
    "pod_resources",
    "probes",
    "shm_size_gib",
    "startup_failure_threshold",
    "target_group_binding_spec",
    "validate_shutdown",
    "worker_command",
]
