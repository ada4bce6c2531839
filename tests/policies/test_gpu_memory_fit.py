"""gpu_memory_fit: our components' props and raw Deployments / LeaderWorkerSets / ECS task definitions."""

import pytest

from components.sizing.engine import EngineConfig
from components.sizing.fit_search import what_would_fit
from components.sizing.gpus import get_gpu
from components.sizing.memory import estimate_memory
from components.sizing.models import resolve_model
from policies.rules import gpu_memory_fit as fit
from policy_builders import container, deployment, ecs_container, leader_worker_set, pod_spec, task_definition

DEP = "kubernetes:apps/v1:Deployment"
STS = "kubernetes:apps/v1:StatefulSet"
LWS = "kubernetes:leaderworkerset.x-k8s.io/v1:LeaderWorkerSet"
TD = "aws:ecs/taskDefinition:TaskDefinition"
SERVICE = "vllm-fleet:index:VllmService"
ECS_TASK = "vllm-fleet:index:EcsVllmTask"
L8B = "meta-llama/Llama-3.1-8B-Instruct"
L70B = "meta-llama/Llama-3.1-70B-Instruct"
L405B = "meta-llama/Llama-3.1-405B-Instruct"
NO_GPU_TYPE = (
    "the pod names no GPU type; add a nodeSelector or required node affinity on vllm-fleet/gpu, nvidia.com/gpu.product, "
    "node.kubernetes.io/instance-type or karpenter.k8s.aws/instance-gpu-name"
)


def misfit(model: str, gpu_name: str, gpus_per_node: int | None = None, **flags) -> str:
    """The message for a model that does not fit, built from the sizing core the rule must reuse."""
    arch, gpu, engine = resolve_model(model), get_gpu(gpu_name), EngineConfig(**flags)
    est = estimate_memory(arch, gpu.memory_gib, engine, gpu_name=gpu.name)
    assert not est.fits
    shape = f"x{engine.tp * engine.pp} (TP {engine.tp} x PP {engine.pp})"
    return f"{model} does not fit {gpu.name} {shape}: {est.reason.removeprefix('does not fit: ')}. {what_would_fit(arch, gpu, engine, gpus_per_node)}"


def on(node_selector: dict, *containers: dict) -> dict:
    return deployment(pod_spec(*containers, node_selector=node_selector))


def karpenter_affinity(values: list[str]) -> dict:
    term = {"matchExpressions": [{"key": "karpenter.k8s.aws/instance-gpu-name", "operator": "In", "values": values}]}
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}}


LEADER_405B = "ray start --head --port=6379 && vllm serve " + L405B + " --tensor-parallel-size 8 --pipeline-parallel-size 2 --max-model-len 16384"
WORKER = "ray start --address=$(LWS_LEADER_ADDRESS):6379 --block"


def lws_on(instance_type: str, leader_gpus: int = 8, worker_gpus: int = 8) -> dict:
    sel = {"node.kubernetes.io/instance-type": instance_type}
    return leader_worker_set(
        pod_spec(container(command=["sh", "-c", LEADER_405B], gpus=leader_gpus), node_selector=sel),
        pod_spec(container(command=["sh", "-c", WORKER], gpus=worker_gpus), node_selector=sel),
    )


CASES = [
    # id, resource type, props, violations, advisories
    ("8b-fits-a10g", DEP, on({"vllm-fleet/gpu": "A10G"}, container(args=[L8B, "--max-model-len", "8192"])), [], []),
    (
        "70b-tp4-a10g-does-not-fit",
        DEP,
        on(
            {"node.kubernetes.io/instance-type": "g5.12xlarge"},
            container(command=["python3", "-m", "vllm.entrypoints.openai.api_server"], args=["--model", L70B, "--tensor-parallel-size", "4"], gpus=4),
        ),
        [misfit(L70B, "A10G", tp=4)],
        [],
    ),
    (
        "karpenter-a100-checks-the-40gb-worst-case",
        DEP,
        deployment(pod_spec(container(args=[L70B, "-tp", "2", "--max-model-len", "16384"], gpus=2), affinity=karpenter_affinity(["a100"]))),
        [misfit(L70B, "A100-40GB", tp=2, max_model_len=16384)],
        [],
    ),
    (
        "statefulset-pod-gets-fewer-gpus-than-tp",
        STS,
        on({"vllm-fleet/gpu": "L4"}, container(args=[L8B, "--tensor-parallel-size", "2", "--max-model-len", "8192"], gpus=1)),
        [f"{L8B} needs 2 GPUs (TP 2 x PP 1) but container 'vllm' gets 1"],
        [],
    ),
    ("lws-405b-tp8-pp2-fits-two-p5", LWS, lws_on("p5.48xlarge"), [], []),
    (
        "lws-405b-does-not-fit-two-p4d",
        LWS,
        lws_on("p4d.24xlarge"),
        [misfit(L405B, "A100-40GB", tp=8, pp=2, max_model_len=16384)],
        [],
    ),
    (
        "lws-group-too-small-for-tp-x-pp",
        LWS,
        lws_on("p5.48xlarge", worker_gpus=4),
        [f"{L405B} needs 16 GPUs (TP 8 x PP 2) but container 'vllm' gets 12"],
        [],
    ),
    (
        "ecs-8b-tp2-on-g5-fits",
        TD,
        task_definition(
            ecs_container(command=["--model", "meta-llama/Meta-Llama-3.1-8B-Instruct", "--tensor-parallel-size", "2", "--dtype", "float16"], gpus=2),
            tags={"vllm-fleet:instance-type": "g5.12xlarge"},
        ),
        [],
        [],
    ),
    (
        "ecs-placement-regex-checks-every-matching-instance",
        TD,
        task_definition(
            ecs_container(command=["--model", L70B, "--tensor-parallel-size", "4", "--max-model-len", "8192"], gpus=4),
            placement=[{"type": "memberOf", "expression": "attribute:ecs.instance-type =~ g6.*"}],
        ),
        [misfit(L70B, "L4", tp=4, max_model_len=8192)],
        [],
    ),
    (
        "component-tp-wider-than-a-node",
        ECS_TASK,
        {"model": L70B, "instance_type": "g6e.12xlarge", "tp": 8.0, "pp": 1.0, "max_model_len": 32768},
        ["meta-llama/Llama-3.1-70B-Instruct needs TP 8 inside one node but L40S nodes have 4 GPUs; use pipeline parallelism (pp) across nodes or a larger instance"],
        [],
    ),
    (
        "component-does-not-fit",
        SERVICE,
        {"model": L70B, "gpu": "L40S", "tp": 2, "pp": 1, "max_model_len": 131072, "gpus_per_node": 4},
        [misfit(L70B, "L40S", gpus_per_node=4, tp=2, max_model_len=131072)],
        [],
    ),
    (
        "component-engine-keys-in-a-nested-dict",
        SERVICE,
        {"model": L70B, "gpu": "H100-80GB", "gpus_per_node": 8, "engine": {"tp": 4, "max_model_len": 8192}},
        [],
        [],
    ),
    (
        "component-tp-vllm-refuses",
        SERVICE,
        {"model": L8B, "gpu": "H100", "tp": 3, "gpus_per_node": 8},
        [f"{L8B} cannot start on H100-80GB x3 (TP 3 x PP 1): --tp: 3 does not divide the model's 32 attention heads; use one of [1, 2, 4, 8, 16, 32]"],
        [],
    ),
    (
        "component-utilization-above-the-limit",
        SERVICE,
        {"model": L8B, "gpu": "H100", "tp": 1, "pp": 1, "gpu_memory_utilization": 0.98},
        [f"{L8B}: gpu_memory_utilization 0.98 is above the policy maximum 0.95"],
        [],
    ),
    # what cannot be checked is an advisory, never a silent pass
    ("no-gpu-type", DEP, deployment(pod_spec(container(args=[L8B]))), [], [f"cannot check GPU memory fit for {L8B}: {NO_GPU_TYPE}"]),
    (
        "no-gpu-request",
        DEP,
        on({"vllm-fleet/gpu": "H100"}, container(args=[L8B], gpus=None)),
        [],
        [f"cannot check GPU memory fit for {L8B}: container 'vllm' requests no nvidia.com/gpu"],
    ),
    (
        "unknown-gpu-label",
        DEP,
        on({"vllm-fleet/gpu": "TPU-v5"}, container(args=[L8B])),
        [],
        [f"cannot check GPU memory fit for {L8B}: node label vllm-fleet/gpu: 'TPU-v5' is not a GPU in the catalog"],
    ),
    (
        "unknown-model",
        DEP,
        on({"vllm-fleet/gpu": "L4"}, container(args=["acme/private-model"])),
        [],
        ["cannot check GPU memory fit for acme/private-model: the model is not in the catalog (add its config.json to components/sizing/data/models, or give model_config_path)"],
    ),
    (
        "flag-value-our-engine-config-does-not-know",
        DEP,
        on({"vllm-fleet/gpu": "H100"}, container(args=[L8B, "--dtype", "float8"])),
        [],
        [f"cannot check GPU memory fit for {L8B}: --dtype: got 'float8'; input should be 'auto', 'bfloat16', 'float16' or 'float32'"],
    ),
    (
        "model-from-a-variable",
        DEP,
        on({"vllm-fleet/gpu": "H100"}, container(args=["$(MODEL_ID)", "--max-model-len", "8192"])),
        [],
        ["cannot check GPU memory fit for $(MODEL_ID): container 'vllm' sets model from a variable the policy cannot read"],
    ),
    (
        "vllm-image-without-a-server-command",
        DEP,
        on({"vllm-fleet/gpu": "H100"}, container(command=["/bin/sh", "-c", "sleep infinity"])),
        [],
        ["cannot check GPU memory fit: container 'vllm' runs a vLLM image but no `vllm serve MODEL` or `--model MODEL` was found in its command"],
    ),
    (
        "ecs-no-instance-type",
        TD,
        task_definition(ecs_container(command=["--model", L8B])),
        [],
        [
            f"cannot check GPU memory fit for {L8B}: the task definition names no instance type; tag it vllm-fleet:instance-type "
            "or add a memberOf placement constraint on attribute:ecs.instance-type"
        ],
    ),
    (
        "component-unknown-instance-type",
        ECS_TASK,
        {"model": L8B, "instance_type": "x9.huge", "tp": 1},
        [],
        [f"cannot check GPU memory fit for {L8B}: instance_type: unknown instance type 'x9.huge'"],
    ),
    ("component-without-gpu", SERVICE, {"model": L8B, "tp": 1}, [], [f"cannot check GPU memory fit for {L8B}: its props name no gpu or instance_type"]),
    # not a vLLM server: nothing to say
    ("other-image", DEP, on({}, container(image="nginx:1.27.2", gpus=None)), [], []),
    ("other-type", "aws:s3/bucket:Bucket", {"bucket": "x"}, [], []),
]


@pytest.mark.parametrize("resource_type, props, violations, advisories", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_fit(resource_type, props, violations, advisories):
    report = fit.check(resource_type, props)
    assert report.violations == violations
    assert report.advisories == advisories


def test_the_message_users_see_for_70b_on_four_a10g():
    props = on(
        {"node.kubernetes.io/instance-type": "g5.12xlarge"},
        container(args=[L70B, "--tensor-parallel-size", "4", "--max-model-len", "8192"], gpus=4),
    )
    assert fit.violations(DEP, props) == [
        "meta-llama/Llama-3.1-70B-Instruct does not fit A10G x4 (TP 4 x PP 1): weights 32.9 GiB + activation/graphs/overhead "
        "4.6 GiB exceed the 20.0 GiB budget per GPU (22.2 GiB x 0.9) by 17.5 GiB, before any KV cache. "
        "Would fit: TP 8 x PP 2 on A10G (16 GPUs over 2 nodes of 8); or TP 4 on g6e.12xlarge (4 x L40S, $10.49/h in us-east-1)."
    ]


def test_limits_from_config():
    props = {"model": L8B, "gpu": "H100", "tp": 1, "gpu_memory_utilization": 0.9, "max_model_len": 131072}
    assert fit.violations(SERVICE, props, fit.FitLimits(gpu_memory_utilization_max=0.85))[0] == (
        f"{L8B}: gpu_memory_utilization 0.9 is above the policy maximum 0.85"
    )
    est = estimate_memory(resolve_model(L8B), get_gpu("H100").memory_gib, EngineConfig(max_model_len=131072), gpu_name="H100-80GB")
    assert fit.violations(SERVICE, props, fit.FitLimits(min_kv_sequences=64)) == [
        f"{L8B} on H100-80GB x1 (TP 1 x PP 1) holds {est.max_concurrency:g} sequences of 131,072 tokens in its KV cache; "
        "the policy asks for at least 64"
    ]


def test_advisories_and_violations_split():
    props = deployment(pod_spec(container(args=[L8B])))
    assert fit.violations(DEP, props) == []
    assert len(fit.advisories(DEP, props)) == 1


# ---- which GPU a pod's node labels name ------------------------------------------------------------------
GFD = "nvidia.com/gpu.product"
ITYPE = "node.kubernetes.io/instance-type"
KGPU = "karpenter.k8s.aws/instance-gpu-name"
KMEM = "karpenter.k8s.aws/instance-gpu-memory"


def expr(key: str, *values: str, op: str = "In") -> dict:
    return {"key": key, "operator": op, "values": list(values)}


def terms(*exprs_per_term: list[dict]) -> dict:
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": e} for e in exprs_per_term]}}}


LABEL_CASES = [
    # id, nodeSelector, affinity, GPU names (or the reason none)
    ("gfd-a10g", {GFD: "NVIDIA-A10G"}, None, ["A10G"]),
    ("gfd-h100", {GFD: "NVIDIA-H100-80GB-HBM3"}, None, ["H100-80GB"]),
    ("gfd-l40s", {GFD: "NVIDIA-L40S"}, None, ["L40S"]),
    ("gfd-old-driver-name", {GFD: "A100-SXM4-40GB"}, None, ["A100-40GB"]),
    ("gfd-tesla-t4", {GFD: "Tesla-T4"}, None, ["T4"]),
    ("gfd-in-affinity", None, terms([expr(GFD, "NVIDIA-L4", "NVIDIA-A10G")]), ["L4", "A10G"]),
    ("instance-type-in-affinity", None, terms([expr(ITYPE, "g6e.12xlarge", "p5.48xlarge")]), ["L40S", "H100-80GB"]),
    ("karpenter-in-selector", {KGPU: "l40s"}, None, ["L40S"]),
    ("karpenter-h100-in-affinity", None, terms([expr(KGPU, "h100")]), ["H100-80GB"]),
    ("karpenter-a100-sized-by-memory", None, terms([expr(KGPU, "a100"), expr(KMEM, "81920")]), ["A100-80GB"]),
    ("ored-terms-with-different-labels", None, terms([expr(GFD, "NVIDIA-H100-80GB-HBM3")], [expr(ITYPE, "g5.12xlarge")]), ["H100-80GB", "A10G"]),
    ("selector-and-affinity-intersect", {KGPU: "a10g"}, terms([expr(ITYPE, "g5.12xlarge", "g6e.12xlarge")]), ["A10G"]),
    ("labels-in-one-term-and", None, terms([expr(ITYPE, "g5.12xlarge", "p5.48xlarge"), expr(GFD, "NVIDIA-H100-80GB-HBM3")]), ["H100-80GB"]),
    ("notin-names-nothing", None, terms([expr(GFD, "NVIDIA-A10G", op="NotIn"), expr(ITYPE, "g6e.xlarge")]), ["L40S"]),
    (
        "mig-slice-is-not-a-whole-gpu",
        {GFD: "NVIDIA-A100-SXM4-40GB-MIG-1g.5gb"},
        None,
        "node label nvidia.com/gpu.product: 'NVIDIA-A100-SXM4-40GB-MIG-1g.5gb' is a MIG slice (1g.5gb) of NVIDIA-A100-SXM4-40GB, "
        "not a whole GPU; the catalog sizes whole GPUs",
    ),
    (
        "time-sliced-gpu",
        {GFD: "NVIDIA-A10G-SHARED"},
        None,
        "node label nvidia.com/gpu.product: 'NVIDIA-A10G-SHARED' is a time-sliced GPU shared between pods; its memory is not reserved per server",
    ),
    ("unknown-gfd-product", {GFD: "NVIDIA-GeForce-RTX-3070"}, None, "node label nvidia.com/gpu.product: 'NVIDIA-GeForce-RTX-3070' is not a GPU in the catalog"),
    (
        "a-term-without-a-gpu-label-allows-any-gpu",
        None,
        terms([expr(ITYPE, "p5.48xlarge")], [expr("karpenter.sh/capacity-type", "spot")]),
        "a required node affinity term names no GPU, so the pod may land on any GPU node; name the GPU in every term or in the "
        "nodeSelector (vllm-fleet/gpu, nvidia.com/gpu.product, node.kubernetes.io/instance-type or karpenter.k8s.aws/instance-gpu-name)",
    ),
    ("the-selector-still-names-it", {GFD: "NVIDIA-L40S"}, terms([expr("karpenter.sh/capacity-type", "spot")]), ["L40S"]),
    (
        "selector-and-affinity-disagree",
        {GFD: "NVIDIA-A10G"},
        terms([expr(KGPU, "h100")]),
        "the nodeSelector asks for A10G but the node affinity for H100-80GB; no node has both",
    ),
    (
        "one-term-two-gpus",
        None,
        terms([expr(GFD, "NVIDIA-A10G"), expr(KGPU, "h100")]),
        "the node labels ask for A10G and H100-80GB at once; no node has both",
    ),
]


@pytest.mark.parametrize("selector, aff, expected", [c[1:] for c in LABEL_CASES], ids=[c[0] for c in LABEL_CASES])
def test_gpus_from_node_labels(selector, aff, expected):
    spec = pod_spec(container(args=[L8B]), node_selector=selector, affinity=aff)
    gpus, why = fit.gpus_from_node_labels(spec)
    if isinstance(expected, list):
        assert ([g.name for g in gpus], why) == (expected, "")
    else:
        assert (gpus, why) == ([], expected)
