"""GPU memory fit: refuse a vLLM server whose model does not fit its GPUs, before anything is deployed.

The check is the sizing core's (`components.sizing.memory.estimate_memory`, and `fit_search.what_would_fit`
for the hint): the same numbers the CLI `fit` command and the components' constructors use.

Where the server is described:
- our components, `vllm-fleet:index:VllmService` and `vllm-fleet:index:EcsVllmTask`; props read:
  model, model_config_path (optional), gpu (GPU name) or instance_type / instance_types, gpus_per_node
  (default: the instance's GPU count), tp, pp, dtype, quantization, kv_cache_dtype, max_model_len,
  max_num_seqs, max_num_batched_tokens, gpu_memory_utilization, enforce_eager, enable_lora, max_loras,
  max_lora_rank, max_cpu_loras (the engine keys may also sit in a nested `engine` dict);
- raw `kubernetes:apps/v1:Deployment` / `StatefulSet` / `leaderworkerset.x-k8s.io/v1:LeaderWorkerSet` and
  `aws:ecs/taskDefinition:TaskDefinition` whose container image contains "vllm": the model and flags come
  from the command line, the GPU type from the node selector / required node affinity
  (`vllm-fleet/gpu`, `nvidia.com/gpu.product`, `node.kubernetes.io/instance-type`,
  `karpenter.k8s.aws/instance-gpu-name`; nodeSelector AND any one required affinity term) or, on ECS,
  the `vllm-fleet:instance-type` tag or an `attribute:ecs.instance-type` placement constraint, and the GPU
  count from `nvidia.com/gpu` limits / ECS `resourceRequirements`.

`check` returns mandatory violations and advisories apart: a server the policy cannot size (unknown model,
no GPU type, a flag from a variable) is reported as an advisory "cannot check GPU memory fit: ..." rather
than passed silently. A flag value our EngineConfig does not know (say a dtype newer vLLM added) is also an
advisory: refusing a deployment on our lagging list would be worse than not sizing it.
When a pod may land on several GPU types, the smallest one is checked.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from components.sizing.engine import EngineConfig
from components.sizing.errors import InputError
from components.sizing.fit_search import what_would_fit
from components.sizing.gpus import Gpu, get_gpu, gpu_catalog
from components.sizing.instances import InstanceType, get_instance, instance_catalog
from components.sizing.memory import estimate_memory
from components.sizing.model_config import ModelArch
from components.sizing.models import load_config_file, resolve_model
from policies import resource_views as rv

COMPONENT_TYPES = (rv.VLLM_SERVICE, rv.ECS_VLLM_TASK)
RAW_TYPES = (rv.DEPLOYMENT, rv.STATEFUL_SET, rv.LEADER_WORKER_SET, rv.ECS_TASK_DEFINITION)
ENGINE_KEYS = (
    "tp", "pp", "dtype", "quantization", "kv_cache_dtype", "max_model_len", "max_num_seqs", "max_num_batched_tokens",
    "gpu_memory_utilization", "enforce_eager", "enable_lora", "max_loras", "max_lora_rank", "max_cpu_loras",
)
CANNOT = "cannot check GPU memory fit"


@dataclass(frozen=True)
class FitLimits:
    """The pack's limits (policy config of `gpu-memory-fit`)."""

    gpu_memory_utilization_max: float = 0.95  # above this, other processes and fragmentation OOM the server
    min_kv_sequences: float = 1.0  # full max_model_len sequences the KV cache must hold (vLLM itself needs 1)


@dataclass
class FitReport:
    violations: list[str] = field(default_factory=list)  # mandatory
    advisories: list[str] = field(default_factory=list)  # could not check

    def extend(self, other: "FitReport") -> None:
        self.violations += other.violations
        self.advisories += other.advisories


@dataclass
class Server:
    """One vLLM server to size: what it serves, with which flags, on which GPUs."""

    model: str | None
    flags: dict[str, Any]
    gpus: list[Gpu]  # the GPU types it may run on (empty: unknown)
    gpus_available: int | None  # GPUs one replica gets, when known
    gpus_per_node: int | None = None  # TP must fit inside one node
    model_config_path: str | None = None
    where: str = ""  # "container 'vllm'": for messages about the command line
    no_gpu_hint: str = ""  # how to name the GPU type, for the advisory
    unresolved: list[str] = field(default_factory=list)


# ---- entry points --------------------------------------------------------------------------------------
def check(resource_type: str, props: Mapping, limits: FitLimits | None = None) -> FitReport:
    """Every vLLM server the resource describes, checked. Other resource types: an empty report."""
    limits = limits or FitLimits()
    report = FitReport()
    for server in servers(resource_type, props):
        report.extend(check_server(server, limits))
    return report


def violations(resource_type: str, props: Mapping, limits: FitLimits | None = None) -> list[str]:
    return check(resource_type, props, limits).violations


def advisories(resource_type: str, props: Mapping, limits: FitLimits | None = None) -> list[str]:
    return check(resource_type, props, limits).advisories


def check_server(server: Server, limits: FitLimits) -> FitReport:
    report = FitReport()
    if server.model is None:
        report.advisories.append(
            f"{CANNOT}: {server.where} runs a vLLM image but no `vllm serve MODEL` or `--model MODEL` was found in its command"
        )
        return report
    model = server.model
    if server.unresolved:
        report.advisories.append(
            f"{CANNOT} for {model}: {server.where} sets {', '.join(server.unresolved)} from a variable the policy cannot read"
        )
        return report
    arch = _arch(server, report)
    if arch is None:
        return report
    try:
        engine = EngineConfig.from_flags(**server.flags)
    except InputError as err:
        report.advisories.append(f"{CANNOT} for {model}: {err}")
        return report
    if engine.gpu_memory_utilization > limits.gpu_memory_utilization_max:
        report.violations.append(
            f"{model}: gpu_memory_utilization {engine.gpu_memory_utilization:g} is above the policy maximum "
            f"{limits.gpu_memory_utilization_max:g}"
        )
    if not server.gpus:
        report.advisories.append(f"{CANNOT} for {model}: {server.no_gpu_hint}")
        return report
    tp, pp = engine.tp, engine.pp
    needed = tp * pp
    shape = f"(TP {tp} x PP {pp})"
    smallest = min(server.gpus, key=lambda g: g.memory_gib)
    if server.gpus_per_node is not None and tp > server.gpus_per_node:
        report.violations.append(
            f"{model} needs TP {tp} inside one node but {smallest.name} nodes have {server.gpus_per_node} GPUs; "
            "use pipeline parallelism (pp) across nodes or a larger instance"
        )
    if server.gpus_available is not None and needed > server.gpus_available:
        report.violations.append(f"{model} needs {needed} GPUs {shape} but {server.where} gets {server.gpus_available}")
    for gpu in sorted(server.gpus, key=lambda g: g.memory_gib):
        try:
            estimate = estimate_memory(arch, gpu.memory_gib, engine, gpu_name=gpu.name)
        except InputError as err:
            report.violations.append(f"{model} cannot start on {gpu.name} x{needed} {shape}: {err}")
            break
        if not estimate.fits:
            reason = estimate.reason.removeprefix("does not fit: ")
            report.violations.append(
                f"{model} does not fit {gpu.name} x{needed} {shape}: {reason}. {what_would_fit(arch, gpu, engine, server.gpus_per_node)}"
            )
            break
        if estimate.max_concurrency < limits.min_kv_sequences:
            report.violations.append(
                f"{model} on {gpu.name} x{needed} {shape} holds {estimate.max_concurrency:g} sequences of "
                f"{estimate.max_model_len:,} tokens in its KV cache; the policy asks for at least {limits.min_kv_sequences:g}"
            )
            break
    return report


def _arch(server: Server, report: FitReport) -> ModelArch | None:
    try:
        if server.model_config_path:
            return load_config_file(server.model_config_path, field="model_config_path")
        return resolve_model(server.model)
    except InputError:
        report.advisories.append(
            f"{CANNOT} for {server.model}: the model is not in the catalog (add its config.json to "
            "components/sizing/data/models, or give model_config_path)"
        )
        return None


# ---- where the servers are -----------------------------------------------------------------------------
def servers(resource_type: str, props: Mapping) -> list[Server]:
    if resource_type in COMPONENT_TYPES:
        return [component_server(props)]
    if resource_type in (rv.DEPLOYMENT, rv.STATEFUL_SET, rv.LEADER_WORKER_SET):
        return k8s_servers(resource_type, props)
    if resource_type == rv.ECS_TASK_DEFINITION:
        return ecs_servers(props)
    return []


def component_server(props: Mapping) -> Server:
    flags: dict[str, Any] = {}
    nested = rv.as_map(rv.dig(props, "engine", default={}))
    for key in ENGINE_KEYS:
        value = rv.dig(props, key)
        if value is None:
            value = rv.dig(nested, key)
        if value is not None:
            flags[key] = _plain_number(key, value)
    gpus, instances = [], []
    gpu_name = rv.dig(props, "gpu")
    unknown = None
    try:
        if gpu_name:
            gpus = [get_gpu(str(gpu_name), field="gpu")]
        else:
            names = [rv.dig(props, "instance_type")] + rv.as_list(rv.dig(props, "instance_types", default=[]))
            instances = [get_instance(str(n), field="instance_type") for n in dict.fromkeys(n for n in names if n)]
            gpus = [i.gpu for i in instances]
    except InputError as err:
        unknown = f"{err.field}: {err.message.split(';')[0]}"
    per_node = rv.as_int(rv.dig(props, "gpus_per_node"))
    if per_node is None and instances:
        per_node = min(i.gpu_count for i in instances)
    return Server(
        model=rv.dig(props, "model"),
        flags=flags,
        gpus=gpus,
        gpus_available=None,
        gpus_per_node=per_node,
        model_config_path=rv.dig(props, "model_config_path"),
        where="the component",
        no_gpu_hint=unknown or "its props name no gpu or instance_type",
    )


def _plain_number(key: str, value: Any) -> Any:
    if key in ("tp", "pp", "max_model_len", "max_num_seqs", "max_num_batched_tokens", "max_loras", "max_lora_rank", "max_cpu_loras"):
        number = rv.as_int(value)
        return value if number is None else number
    if key == "gpu_memory_utilization":
        number = rv.as_float(value)
        return value if number is None else number
    return rv.scalar(value)


def k8s_servers(resource_type: str, props: Mapping) -> list[Server]:
    templates = rv.pod_templates(resource_type, props)
    size = rv.as_int(rv.dig(props, "spec", "leaderWorkerTemplate", "size"), 1) or 1
    worker_gpus = 0
    for t in templates:
        if t.role == "worker":
            worker_gpus = sum(rv.gpu_limit(c) or 0 for c in rv.containers(t.spec))
    found = []
    for template in templates:
        if not template.serves:
            continue
        gpus, hint = gpus_from_node_labels(template.spec)
        for container in rv.containers(template.spec):
            if not rv.is_vllm_image(rv.dig(container, "image")):
                continue
            name = rv.dig(container, "name", default="?")
            cmd = rv.parse_vllm_command(rv.container_argv(container))
            if cmd is None:
                found.append(Server(model=None, flags={}, gpus=gpus, gpus_available=None, where=f"container {name!r}"))
                continue
            available = rv.gpu_limit(container)
            if resource_type == rv.LEADER_WORKER_SET and available is not None:
                # A group is the leader plus size-1 workers; with no leaderTemplate all pods are alike.
                available += (size - 1) * (worker_gpus if template.role == "leader" else available)
            found.append(_server_from_command(cmd, gpus, available, f"container {name!r}", hint))
    return found


def ecs_servers(props: Mapping) -> list[Server]:
    names = rv.ecs_instance_types(props, catalog=instance_catalog().keys())
    gpus, hint = _gpus_from_instances(names, "the `vllm-fleet:instance-type` tag / ecs.instance-type placement constraint")
    if not names:
        hint = (
            f"the task definition names no instance type; tag it {rv.INSTANCE_TYPE_TAG} or add a memberOf "
            "placement constraint on attribute:ecs.instance-type"
        )
    found = []
    for container in rv.ecs_containers(props):
        if not rv.is_vllm_image(rv.dig(container, "image")):
            continue
        name = rv.dig(container, "name", default="?")
        argv = [str(rv.scalar(a)) for a in rv.as_list(rv.dig(container, "entryPoint", default=[]))] + rv.container_argv(container)
        cmd = rv.parse_vllm_command(argv)
        if cmd is None:
            found.append(Server(model=None, flags={}, gpus=gpus, gpus_available=None, where=f"container {name!r}"))
            continue
        found.append(_server_from_command(cmd, gpus, rv.ecs_gpu_count(container), f"container {name!r}", hint))
    return found


def _server_from_command(cmd: rv.VllmCommand, gpus: list[Gpu], available: int | None, where: str, hint: str) -> Server:
    model = cmd.model
    # A model streamed from s3:// or a local path is sized by the name clients use, when that is a catalog id.
    if model and ("://" in model or model.startswith("/")) and cmd.served_model_name:
        model = cmd.served_model_name
    if available is None and gpus:
        hint = f"{where} requests no {rv.GPU_RESOURCE}"
    return Server(
        model=model,
        flags=dict(cmd.flags),
        gpus=gpus if available is not None else [],
        gpus_available=available,
        where=where,
        no_gpu_hint=hint,
        unresolved=list(cmd.unresolved),
    )


GPU_LABEL_KEYS = (rv.GPU_LABEL, rv.GFD_PRODUCT_LABEL, rv.INSTANCE_TYPE_LABEL, rv.KARPENTER_GPU_NAME_LABEL)
NO_GPU_LABEL = (
    f"add a nodeSelector or required node affinity on {rv.GPU_LABEL}, {rv.GFD_PRODUCT_LABEL}, "
    f"{rv.INSTANCE_TYPE_LABEL} or {rv.KARPENTER_GPU_NAME_LABEL}"
)


def gpus_from_node_labels(pod_spec: Mapping) -> tuple[list[Gpu], str]:
    """GPU types the pod may land on, from the node labels it requires; ([], why) when they cannot be told.

    Read as the scheduler reads them: the nodeSelector AND any one of the required node affinity terms. Labels
    naming the GPU: ours (`vllm-fleet/gpu`), GPU feature discovery's `nvidia.com/gpu.product`, the well-known
    `node.kubernetes.io/instance-type` (GPU from the instance catalog) and Karpenter's
    `karpenter.k8s.aws/instance-gpu-name` (with `instance-gpu-memory` to tell A100 sizes apart).
    """
    selector, terms = rv.node_requirements(pod_spec)
    from_selector, why = _gpus_required(selector)
    if why:
        return [], why
    from_terms: list[Gpu] | None = None
    if terms:
        results = [_gpus_required(term) for term in terms]
        why = next((w for _, w in results if w), "")
        if why:
            return [], why
        if all(gpus is not None for gpus, _ in results):
            from_terms = _unique([g for gpus, _ in results for g in gpus])
        elif from_selector is None:
            return [], (
                "a required node affinity term names no GPU, so the pod may land on any GPU node; "
                f"name the GPU in every term or in the nodeSelector ({NO_GPU_LABEL.removeprefix('add a nodeSelector or required node affinity on ')})"
            )
    if from_selector is not None and from_terms is not None:
        both = [g for g in from_selector if g.name in {t.name for t in from_terms}]
        if not both:
            return [], (
                f"the nodeSelector asks for {_names(from_selector)} but the node affinity for {_names(from_terms)}; "
                "no node has both"
            )
        return both, ""
    if from_selector is not None:
        return from_selector, ""
    if from_terms is not None:
        return from_terms, ""
    return [], f"the pod names no GPU type; {NO_GPU_LABEL}"


def _gpus_required(requirements: Mapping[str, list[str]]) -> tuple[list[Gpu] | None, str]:
    """GPUs a node matching all `requirements` (ANDed label values) may have: None when no GPU label is among
    them, ([], why) when a value is not one the catalog can size."""
    found: list[list[Gpu]] = []
    for key in GPU_LABEL_KEYS:
        values = requirements.get(key)
        if not values:
            continue
        if key == rv.GPU_LABEL:
            unknown = [v for v in values if not _is_gpu(v)]
            if unknown:
                return [], f"node label {key}: {unknown[0]!r} is not a GPU in the catalog"
            gpus = [get_gpu(v) for v in values]
        elif key == rv.GFD_PRODUCT_LABEL:
            gpus = []
            for value in values:
                gpu, why = gfd_gpu(value)
                if gpu is None:
                    return [], why
                gpus.append(gpu)
        elif key == rv.INSTANCE_TYPE_LABEL:
            gpus, why = _gpus_from_instances(values, f"node label {key}")
            if why:
                return [], why
        else:
            memory = [m for m in (rv.as_int(v) for v in requirements.get(rv.KARPENTER_GPU_MEMORY_LABEL, [])) if m]
            gpus = [g for v in values for g in karpenter_gpus(v, memory)]
            if not gpus:
                return [], f"node label {key}: no GPU in the catalog matches {', '.join(values)}"
        found.append(_unique(gpus))
    if not found:
        return None, ""
    common = set.intersection(*({g.name for g in gpus} for gpus in found))
    if not common:
        return [], f"the node labels ask for {' and '.join(_names(g) for g in found)} at once; no node has both"
    return [g for g in found[0] if g.name in common], ""


def gfd_gpu(product: str) -> tuple[Gpu | None, str]:
    """The GPU a GPU-feature-discovery `nvidia.com/gpu.product` value names, or (None, why).

    A MIG slice ("...-MIG-1g.5gb") or a time-sliced GPU ("...-SHARED") is not the whole GPU's memory: sizing the
    server as if it were would pass a model that cannot start, so those are reported as not checkable.
    """
    where = f"node label {rv.GFD_PRODUCT_LABEL}: {product!r}"
    if product.endswith("-SHARED"):
        return None, f"{where} is a time-sliced GPU shared between pods; its memory is not reserved per server"
    if "-MIG-" in product:
        base, profile = product.split("-MIG-", 1)
        return None, f"{where} is a MIG slice ({profile}) of {base}, not a whole GPU; the catalog sizes whole GPUs"
    try:
        return get_gpu(product), ""
    except InputError:
        return None, f"{where} is not a GPU in the catalog"


def _unique(gpus: list[Gpu]) -> list[Gpu]:
    return list({g.name: g for g in gpus}.values())


def _names(gpus: list[Gpu]) -> str:
    return "/".join(g.name for g in gpus)


def _is_gpu(name: str) -> bool:
    try:
        get_gpu(name)
        return True
    except InputError:
        return False


def _gpus_from_instances(names: list[str], source: str) -> tuple[list[Gpu], str]:
    instances: list[InstanceType] = []
    for name in names:
        try:
            instances.append(get_instance(name))
        except InputError:
            return [], f"{source}: {name!r} is not a GPU instance type in the catalog"
    return [i.gpu for i in instances], ""


def karpenter_gpus(value: str, memory_mib: list[int]) -> list[Gpu]:
    """Karpenter's instance-gpu-name is the lower-case model ("h100", "a10g", "a100" for both A100 sizes);
    instance-gpu-memory (MiB per GPU) tells the sizes apart."""
    try:
        candidates = [get_gpu(value)]
    except InputError:
        key = value.lower()
        candidates = [g for g in gpu_catalog().values() if g.name.lower() == key or g.name.lower().startswith(key + "-")]
    if memory_mib:
        candidates = [g for g in candidates if g.marketing_memory_gb * 1024 in memory_mib] or candidates
    return candidates
