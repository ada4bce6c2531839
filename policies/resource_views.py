"""Small pure helpers that read Kubernetes and ECS resource inputs the way Pulumi hands them to policies.

Props arrive as camelCase dicts (pulumi_aws / pulumi_kubernetes inputs), or as pulumi_policy's read-only
proxies over them (Mapping / Sequence, never dict / list), so every helper here tests for Mapping and
Sequence, never for dict and list. The offline engine records Pulumi secrets as {"secret": value};
`scalar` unwraps that.

Also here: `parse_vllm_command`, the small parser that turns a container's command and args
(`vllm serve MODEL --tensor-parallel-size 8 ...`, `python -m vllm.entrypoints.openai.api_server --model M`,
or a `sh -c "ray start ... && vllm serve ..."` script) into the model id and the engine flags.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

# ---- resource types ------------------------------------------------------------------------------------
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
STATEFUL_SET = "kubernetes:apps/v1:StatefulSet"
LEADER_WORKER_SET = "kubernetes:leaderworkerset.x-k8s.io/v1:LeaderWorkerSet"
NETWORK_POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
POD_DISRUPTION_BUDGET = "kubernetes:policy/v1:PodDisruptionBudget"
EC2_NODE_CLASS = "kubernetes:karpenter.k8s.aws/v1:EC2NodeClass"
ECS_TASK_DEFINITION = "aws:ecs/taskDefinition:TaskDefinition"
ECS_SERVICE = "aws:ecs/service:Service"

VLLM_SERVICE = "vllm-fleet:index:VllmService"
ECS_VLLM_TASK = "vllm-fleet:index:EcsVllmTask"
SPOT_NODE_POOL = "vllm-fleet:index:SpotNodePool"
GPU_CLUSTER = "vllm-fleet:index:GpuCluster"
DEPLOYMENT_COMPONENT = "vllm-fleet:index:Deployment"

DAEMON_SET = "kubernetes:apps/v1:DaemonSet"
JOB = "kubernetes:batch/v1:Job"
CRON_JOB = "kubernetes:batch/v1:CronJob"
POD = "kubernetes:core/v1:Pod"

K8S_WORKLOADS = (DEPLOYMENT, STATEFUL_SET, LEADER_WORKER_SET)  # what serves vLLM
POD_BEARING = K8S_WORKLOADS + (DAEMON_SET, JOB, CRON_JOB, POD)  # everything that runs containers

# Node labels a pod can target that name its GPU, most specific first.
GPU_LABEL = "vllm-fleet/gpu"
KARPENTER_GPU_NAME_LABEL = "karpenter.k8s.aws/instance-gpu-name"
KARPENTER_GPU_MEMORY_LABEL = "karpenter.k8s.aws/instance-gpu-memory"  # MiB per GPU
INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
# NVIDIA GPU feature discovery: the NVML device name with spaces as dashes ("NVIDIA-A10G",
# "NVIDIA-H100-80GB-HBM3"), "-MIG-<profile>" appended under the MIG single strategy and "-SHARED" when time-sliced
# (NVIDIA/k8s-device-plugin internal/lm/resource.go getProductName + sanitise, and
# docs/gpu-feature-discovery/README.md "Generated Labels"; checked 2026-12-04).
GFD_PRODUCT_LABEL = "nvidia.com/gpu.product"
INSTANCE_TYPE_TAG = "vllm-fleet:instance-type"
GPU_RESOURCE = "nvidia.com/gpu"
API_KEY_ENV = "VLLM_API_KEY"  # same name as components.vllm.API_KEY_ENV (kept here so policies stay import-light)


@dataclass(frozen=True)
class Resource:
    """One resource of a stack as the stack policies see it: plain values only.

    `parent` is the parent's URN. `id` is the physical id when it is known (the offline engine's mocks
    make it f"{name}-id"; Pulumi's stack policies do not pass ids, so matching also uses the props).
    """

    type: str
    name: str
    props: Mapping[str, Any]
    urn: str = ""
    parent: str | None = None
    id: str | None = None
    dependencies: tuple[str, ...] = ()  # URNs it waits for (depends_on and inputs), as the engine records them

    @classmethod
    def from_record(cls, record: Any, id: str | None = None) -> "Resource":
        """From any recorded resource with type, name, urn, parent and inputs (e.g. the offline engine's
        `stacks.offline.RecordedResource`; its mocks make ids f"{name}-id")."""
        return cls(
            type=record.type,
            name=record.name,
            props=record.inputs,
            urn=record.urn,
            parent=record.parent,
            id=id,
            dependencies=tuple(getattr(record, "dependencies", ()) or ()),
        )


class Finding(NamedTuple):
    """A stack policy's violation: the message and the URN of the resource it is about ("" = the stack)."""

    urn: str
    message: str


# ---- plain-value access --------------------------------------------------------------------------------
def scalar(value: Any) -> Any:
    """A leaf value with the offline engine's secret wrapper ({"secret": v}) removed."""
    while isinstance(value, Mapping) and len(value) == 1 and "secret" in value:
        value = value["secret"]
    return value


def is_list(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


def as_list(value: Any) -> list:
    value = scalar(value)
    return list(value) if is_list(value) else []


def as_map(value: Any) -> Mapping:
    value = scalar(value)
    return value if isinstance(value, Mapping) else {}


def dig(value: Any, *path: str | int, default: Any = None) -> Any:
    """value[p0][p1]... or `default` when any step is missing or of the wrong shape."""
    for key in path:
        value = scalar(value)
        if isinstance(key, int):
            if not is_list(value) or not -len(value) <= key < len(value):
                return default
            value = value[key]
        else:
            if not isinstance(value, Mapping) or key not in value:
                return default
            value = value[key]
    value = scalar(value)
    return default if value is None else value


def as_int(value: Any, default: int | None = None) -> int | None:
    """Numbers come back from the engine as floats (8.0) and sometimes as strings ("8")."""
    value = scalar(value)
    if value is None or isinstance(value, bool):
        return default
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return default


def as_float(value: Any, default: float | None = None) -> float | None:
    value = scalar(value)
    if value is None or isinstance(value, bool):
        return default
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def as_bool(value: Any) -> bool:
    """True for True and for the strings "true" (launch-template EBS `encrypted` is a string)."""
    value = scalar(value)
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return value is True


def stack_of(urn: str) -> str | None:
    """The stack name out of a URN: urn:pulumi:<stack>::<project>::<type>::<name>."""
    if not urn or not urn.startswith("urn:pulumi:"):
        return None
    return urn[len("urn:pulumi:"):].split("::", 1)[0] or None


# ---- images --------------------------------------------------------------------------------------------
def is_vllm_image(image: Any) -> bool:
    image = scalar(image)
    return isinstance(image, str) and "vllm" in image.lower()


def image_tag(image: str) -> str | None:
    """The tag of an image reference, None if it has none ("registry:5000/repo" has no tag)."""
    last = image.rsplit("/", 1)[-1]
    name = last.split("@", 1)[0]
    if ":" not in name:
        return None
    return name.rsplit(":", 1)[1]


def has_digest(image: str) -> bool:
    return "@sha256:" in image


# ---- Kubernetes ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PodTemplate:
    """A pod template inside a workload. `role` is "pod", or "leader"/"worker" in a LeaderWorkerSet;
    `serves` says whether its containers run the server (an LWS worker only joins the leader's Ray cluster)."""

    role: str
    spec: Mapping
    labels: Mapping
    serves: bool = True


def namespace_of(props: Mapping) -> str:
    return dig(props, "metadata", "namespace", default="default")


def workload_name(resource_type: str, name: str, props: Mapping) -> str:
    """How messages name a workload: its kind and metadata.name (else the Pulumi resource name)."""
    kind = resource_type.rsplit(":", 1)[-1]
    return f"{kind} {dig(props, 'metadata', 'name', default=name)!r}"


def pod_templates(resource_type: str, props: Mapping) -> list[PodTemplate]:
    """The pod templates of a workload (Deployment, StatefulSet, LeaderWorkerSet, DaemonSet, Job, CronJob,
    Pod); [] for anything else."""
    if resource_type in (DEPLOYMENT, STATEFUL_SET, DAEMON_SET, JOB, CRON_JOB, POD):
        if resource_type == POD:
            template = props
        elif resource_type == CRON_JOB:
            template = dig(props, "spec", "jobTemplate", "spec", "template", default={})
        else:
            template = dig(props, "spec", "template", default={})
        return [PodTemplate("pod", as_map(dig(template, "spec", default={})), as_map(dig(template, "metadata", "labels", default={})))]
    if resource_type == LEADER_WORKER_SET:
        lwt = dig(props, "spec", "leaderWorkerTemplate", default={})
        worker = dig(lwt, "workerTemplate", default={})
        leader = dig(lwt, "leaderTemplate")
        out = []
        if leader is not None:
            out.append(PodTemplate("leader", as_map(dig(leader, "spec", default={})), as_map(dig(leader, "metadata", "labels", default={}))))
        # Without a leaderTemplate the leader runs the worker template, so that template serves.
        out.append(
            PodTemplate("worker", as_map(dig(worker, "spec", default={})), as_map(dig(worker, "metadata", "labels", default={})), serves=leader is None)
        )
        return out
    return []


def containers(pod_spec: Mapping, *, init: bool = False) -> list[Mapping]:
    found = [as_map(c) for c in as_list(dig(pod_spec, "containers", default=[]))]
    if init:
        found += [as_map(c) for c in as_list(dig(pod_spec, "initContainers", default=[]))]
    return found


def container_argv(container: Mapping) -> list[str]:
    """command + args (Kubernetes) or command (ECS), as strings."""
    argv = as_list(dig(container, "command", default=[])) + as_list(dig(container, "args", default=[]))
    return [str(scalar(a)) for a in argv]


def env_entries(container: Mapping) -> list[Mapping]:
    return [as_map(e) for e in as_list(dig(container, "env", default=[]))]


def gpu_limit(container: Mapping) -> int | None:
    """nvidia.com/gpu from resources.limits (or requests, which must then equal limits)."""
    for section in ("limits", "requests"):
        count = as_int(dig(container, "resources", section, GPU_RESOURCE))
        if count is not None:
            return count
    return None


def node_label_values(pod_spec: Mapping, key: str) -> list[str]:
    """Values a pod requires for node label `key`: nodeSelector, and `In` terms of required node affinity.

    Several values (or several ORed terms) mean the pod may land on any of them.
    """
    values: list[str] = []
    selected = dig(pod_spec, "nodeSelector", key)
    if selected is not None:
        values.append(str(selected))
    terms = dig(pod_spec, "affinity", "nodeAffinity", "requiredDuringSchedulingIgnoredDuringExecution", "nodeSelectorTerms", default=[])
    for term in as_list(terms):
        for expr in as_list(dig(term, "matchExpressions", default=[])):
            if dig(expr, "key") == key and dig(expr, "operator") == "In":
                values += [str(scalar(v)) for v in as_list(dig(expr, "values", default=[]))]
    return list(dict.fromkeys(values))


def node_requirements(pod_spec: Mapping) -> tuple[dict[str, list[str]], list[dict[str, list[str]]]]:
    """What a pod requires of its node's labels, as the scheduler reads it: (nodeSelector, required affinity terms).

    Each is {label key: allowed values}; within one, every key must match (AND); the affinity terms are ORed
    (a node must match the nodeSelector AND at least one term). Only `In` expressions name values (several `In` on
    one key intersect); NotIn / Exists / Gt / Lt narrow nothing to a value and are left out.
    """
    selector = {str(k): [str(scalar(v))] for k, v in as_map(dig(pod_spec, "nodeSelector", default={})).items()}
    terms: list[dict[str, list[str]]] = []
    raw = dig(pod_spec, "affinity", "nodeAffinity", "requiredDuringSchedulingIgnoredDuringExecution", "nodeSelectorTerms", default=[])
    for term in as_list(raw):
        wanted: dict[str, list[str]] = {}
        for expr in as_list(dig(term, "matchExpressions", default=[])):
            if dig(expr, "operator") != "In":
                continue
            key = str(dig(expr, "key", default=""))
            values = [str(scalar(v)) for v in as_list(dig(expr, "values", default=[]))]
            wanted[key] = [v for v in wanted[key] if v in values] if key in wanted else values
        terms.append(wanted)
    return selector, terms


def selector_matches(selector: Mapping, labels: Mapping) -> bool:
    """A LabelSelector (matchLabels + matchExpressions) against a label set; an empty selector selects all."""
    for key, value in as_map(dig(selector, "matchLabels", default={})).items():
        if str(scalar(labels.get(key))) != str(scalar(value)) or key not in labels:
            return False
    for expr in as_list(dig(selector, "matchExpressions", default=[])):
        key, op = dig(expr, "key"), dig(expr, "operator")
        values = [str(scalar(v)) for v in as_list(dig(expr, "values", default=[]))]
        present = key in labels
        current = str(scalar(labels.get(key))) if present else None
        if op == "In" and current not in values:
            return False
        if op == "NotIn" and current in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True


# ---- ECS -----------------------------------------------------------------------------------------------
def ecs_containers(props: Mapping) -> list[Mapping]:
    """containerDefinitions of an aws.ecs.TaskDefinition: a JSON string in Pulumi (a list is accepted too)."""
    raw = scalar(dig(props, "containerDefinitions"))
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return []
    return [as_map(c) for c in as_list(raw)]


def ecs_gpu_count(container: Mapping) -> int | None:
    for req in as_list(dig(container, "resourceRequirements", default=[])):
        if str(dig(req, "type", default="")).upper() == "GPU":
            return as_int(dig(req, "value"))
    return None


_ECS_EQ = re.compile(r"attribute:ecs\.instance-type\s*==\s*([\w.\-]+)")
_ECS_IN = re.compile(r"attribute:ecs\.instance-type\s+in\s*\[([^\]]*)\]", re.IGNORECASE)
_ECS_MATCH = re.compile(r"attribute:ecs\.instance-type\s*=~\s*([\w.*\-]+)")


def ecs_instance_types(props: Mapping, catalog: Iterable[str] = ()) -> list[str]:
    """Instance types a task definition may run on: the `vllm-fleet:instance-type` tag (comma separated),
    else its memberOf placement constraints on attribute:ecs.instance-type (==, in [...], and =~ regular
    expressions matched against `catalog`)."""
    tag = dig(props, "tags", INSTANCE_TYPE_TAG)
    if tag:
        return [t.strip() for t in str(tag).split(",") if t.strip()]
    found: list[str] = []
    for constraint in as_list(dig(props, "placementConstraints", default=[])):
        expression = str(dig(constraint, "expression", default=""))
        found += _ECS_EQ.findall(expression)
        for group in _ECS_IN.findall(expression):
            found += [t.strip() for t in group.split(",") if t.strip()]
        for pattern in _ECS_MATCH.findall(expression):
            try:
                regex = re.compile(pattern)  # the cluster query language's =~ is a regular expression
            except re.error:
                continue
            found += [name for name in catalog if regex.fullmatch(name)]
    return list(dict.fromkeys(found))


# ---- the vLLM command line -----------------------------------------------------------------------------
# vLLM flags the memory fit depends on -> EngineConfig field. Short forms as vLLM's argparse defines them.
_VALUE_FLAGS = {
    "--tensor-parallel-size": "tp",
    "-tp": "tp",
    "--pipeline-parallel-size": "pp",
    "-pp": "pp",
    "--dtype": "dtype",
    "--quantization": "quantization",
    "-q": "quantization",
    "--kv-cache-dtype": "kv_cache_dtype",
    "--max-model-len": "max_model_len",
    "--max-num-seqs": "max_num_seqs",
    "--max-num-batched-tokens": "max_num_batched_tokens",
    "--gpu-memory-utilization": "gpu_memory_utilization",
    "--max-loras": "max_loras",
    "--max-lora-rank": "max_lora_rank",
    "--max-cpu-loras": "max_cpu_loras",
    "--block-size": "block_size",
}
_BOOL_FLAGS = {"--enforce-eager": "enforce_eager", "--enable-lora": "enable_lora"}
_INT_FIELDS = {"tp", "pp", "max_model_len", "max_num_seqs", "max_num_batched_tokens", "max_loras", "max_lora_rank", "max_cpu_loras", "block_size"}
# vLLM's --dtype also takes the torch spellings "half" and "float".
_DTYPE_ALIASES = {"half": "float16", "float": "float32", "bf16": "bfloat16", "fp16": "float16"}
_SHELL_SEPARATORS = {"&&", "||", ";", "|", "&"}
_VAR = re.compile(r"\$\(|\$\{|\$[A-Za-z_]")


@dataclass
class VllmCommand:
    """What a container's command line serves. `flags` are EngineConfig fields (strings converted);
    `unresolved` lists flags whose value is a shell/Kubernetes variable the policy cannot know."""

    model: str | None
    served_model_name: str | None = None
    flags: dict[str, Any] = field(default_factory=dict)
    api_key_literal: bool = False
    unresolved: list[str] = field(default_factory=list)


def _tokens(argv: Sequence[str]) -> list[str]:
    """Split shell scripts (`sh -c "..."`, or one string "vllm serve ...") into words; keep other args whole
    (a JSON value such as --hf-overrides '{"a": 1}' is one argument)."""
    out: list[str] = []
    previous = ""
    for part in argv:
        script = previous == "-c" or part.lstrip().startswith(("vllm ", "python", "exec "))
        if script and any(ch.isspace() for ch in part):
            text = part.replace("\\\n", " ")
            try:
                out += shlex.split(text, posix=True)
            except ValueError:
                out += text.split()
        else:
            out.append(part)
        previous = part
    return out


def _segments(tokens: list[str]) -> list[list[str]]:
    segments: list[list[str]] = [[]]
    for tok in tokens:
        stripped = tok.rstrip(";")
        if tok in _SHELL_SEPARATORS:
            segments.append([])
            continue
        if stripped:
            segments[-1].append(stripped)
        if stripped != tok:
            segments.append([])
    return [s for s in segments if s]


def _server_args(segment: list[str]) -> list[str] | None:
    for i, tok in enumerate(segment):
        if tok == "serve" and i > 0 and segment[i - 1].rsplit("/", 1)[-1] == "vllm":
            return segment[i + 1:]
        if tok.startswith("vllm.entrypoints.openai.api_server"):
            return segment[i + 1:]
    return None


def _looks_like_model(token: str) -> bool:
    """A model id or location as the first `vllm serve` argument (the image's entrypoint is `vllm serve`)."""
    if token.startswith("-"):
        return False
    if _VAR.search(token):
        return True  # a model named by a variable: a server the policies cannot size, not "no server"
    if "://" in token or token.startswith(("/models", "./")):
        return True
    return "/" in token and not token.startswith("/")  # org/name, not /bin/sh


def _number(text: str) -> int:
    """vLLM accepts 32768, 32k (x1000) and 32K (x1024) for lengths."""
    text = text.strip()
    units = {"k": 1000, "K": 1024, "m": 1000**2, "M": 1024**2}
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(float(text))


def parse_vllm_command(argv: Sequence[str], *, entrypoint_is_vllm: bool = True) -> VllmCommand | None:
    """Parse a container's command line. None when it does not start a vLLM server.

    `entrypoint_is_vllm`: the image's entrypoint is `vllm serve` (the vllm-openai images), so arguments that
    start with a model or a flag are server arguments.
    """
    tokens = _tokens([str(a) for a in argv])
    args = None
    for segment in _segments(tokens):
        args = _server_args(segment)
        if args is not None:
            break
    if args is None:
        if not entrypoint_is_vllm or not tokens or not (tokens[0].startswith("-") or _looks_like_model(tokens[0])):
            return None
        args = tokens
    cmd = VllmCommand(model=None)
    i = 0
    if args and not args[0].startswith("-"):
        cmd.model = args[0]
        i = 1
    while i < len(args):
        tok = args[i]
        if not tok.startswith("-"):
            i += 1
            continue
        name, eq, inline = tok.partition("=")
        if name.startswith("--"):
            name = "--" + name[2:].replace("_", "-")
        has_next = i + 1 < len(args) and not args[i + 1].startswith("-")
        value = inline if eq else (args[i + 1] if has_next else None)
        step = 1 if eq or not has_next else 2
        if name == "--model":
            cmd.model = value
        elif name == "--served-model-name":
            cmd.served_model_name = value
        elif name == "--api-key":
            cmd.api_key_literal = bool(value) and not _VAR.search(value or "")
        elif name in _BOOL_FLAGS:
            cmd.flags[_BOOL_FLAGS[name]] = inline.lower() != "false" if eq else True
            step = 1
        elif name in _VALUE_FLAGS and value is not None:
            key = _VALUE_FLAGS[name]
            if _VAR.search(value):
                cmd.unresolved.append(name)
            elif key in _INT_FIELDS:
                try:
                    cmd.flags[key] = _number(value)
                except ValueError:
                    cmd.flags[key] = value  # EngineConfig reports the bad value
            elif key == "gpu_memory_utilization":
                try:
                    cmd.flags[key] = float(value)
                except ValueError:
                    cmd.flags[key] = value
            elif key == "dtype":
                cmd.flags[key] = _DTYPE_ALIASES.get(value, value)
            else:
                cmd.flags[key] = value
        i += step
    if cmd.model and _VAR.search(cmd.model):
        cmd.unresolved.append("model")
    return cmd


# ---- vLLM servers in a stack ---------------------------------------------------------------------------
LWS_NAME_LABEL = "leaderworkerset.sigs.k8s.io/name"  # LeaderWorkerSet labels every pod of the set with its name


@dataclass(frozen=True)
class VllmContainer:
    """A container that runs a vLLM server (a vLLM image whose command starts one)."""

    template: PodTemplate
    container: Mapping
    command: VllmCommand

    @property
    def name(self) -> str:
        return str(dig(self.container, "name", default="?"))


def pod_label_sets(resource_type: str, name: str, props: Mapping) -> list[Mapping]:
    """Label sets of the pods a workload creates (an LWS adds its name label to every pod)."""
    sets = []
    for template in pod_templates(resource_type, props):
        labels = dict(template.labels.items())
        if resource_type == LEADER_WORKER_SET:
            labels[LWS_NAME_LABEL] = dig(props, "metadata", "name", default=name)
        sets.append(labels)
    return sets


def vllm_containers(resource_type: str, props: Mapping) -> list[VllmContainer]:
    """The serving vLLM containers of a Kubernetes workload."""
    found = []
    for template in pod_templates(resource_type, props):
        if not template.serves:
            continue
        for container in containers(template.spec):
            if not is_vllm_image(dig(container, "image")):
                continue
            cmd = parse_vllm_command(container_argv(container))
            if cmd is not None:
                found.append(VllmContainer(template, container, cmd))
    return found


def ecs_vllm_containers(props: Mapping) -> list[tuple[Mapping, VllmCommand]]:
    """The serving vLLM containers of an ECS task definition."""
    found = []
    for container in ecs_containers(props):
        if not is_vllm_image(dig(container, "image")):
            continue
        argv = [str(scalar(a)) for a in as_list(dig(container, "entryPoint", default=[]))] + container_argv(container)
        cmd = parse_vllm_command(argv)
        if cmd is not None:
            found.append((container, cmd))
    return found
