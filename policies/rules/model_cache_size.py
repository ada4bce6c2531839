"""A vLLM server's model cache and node disk hold the checkpoint it downloads.

vLLM downloads the checkpoint as published (BF16 for Llama-3.1-70B-Instruct: ~131 GiB) into its download
directory and quantizes it while loading (`--quantization fp8`); a cache sized from the in-GPU bytes fills up
mid-download, and the kubelet evicts the pod when an emptyDir passes its sizeLimit. The size is the sizing
core's `components.sizing.memory.checkpoint_bytes` (through `VllmEngine.checkpoint_gib()`).

- Kubernetes (resource rule, any pod-bearing workload running a vLLM image): the volume mounted over the
  download directory (`--download-dir`, else `HF_HOME`/hub, else the image's /root/.cache/huggingface), when it
  is an emptyDir with a sizeLimit, must be at least the checkpoint. Not with `--load-format runai_streamer`
  (weights stream from S3).
- Components (stack rule): a VllmService's `model_cache_gib` and every VllmService's / EcsVllmTask's
  `node_disk_gib` (the node root volume the cache sits on; None on local NVMe) must hold the checkpoint,
  recomputed here from the `model` prop, not read from the component.
A model the catalog does not know is skipped (gpu-memory-fit reports it).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from components.sizing.errors import InputError
from components.vllm import VllmEngine
from policies import resource_views as rv

DEFAULT_HF_HOME = "/root/.cache/huggingface"
_QUANTITY = re.compile(r"^([0-9.]+)([KMGTPE]i?)?$")
_UNIT = {None: 1, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
         "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}


def quantity_gib(value: object) -> float | None:
    """A Kubernetes quantity ("165Gi", "200G", "1Ti") in GiB; None when it is not one."""
    match = _QUANTITY.match(str(value).strip()) if value is not None else None
    if not match:
        return None
    return float(match.group(1)) * _UNIT[match.group(2)] / 2**30


def checkpoint_gib(model: str | None) -> float | None:
    if not model:
        return None
    try:
        return VllmEngine(model=model).checkpoint_gib()
    except (InputError, ValueError):
        return None


def _flag(argv: list[str], name: str) -> str | None:
    for i, token in enumerate(argv):
        if token == name and i + 1 < len(argv):
            return argv[i + 1]
        if token.startswith(name + "="):
            return token.split("=", 1)[1]
    return None


def download_dir(container: Mapping) -> str:
    """Where vLLM writes the checkpoint: --download-dir, else $HF_HOME/hub, else the image's default."""
    argv = [str(t) for t in rv.container_argv(container)]
    given = _flag(argv, "--download-dir")
    if given:
        return given
    env = {str(rv.dig(e, "name")): rv.dig(e, "value") for e in rv.env_entries(container)}
    return f"{env.get('HF_HOME') or DEFAULT_HF_HOME}/hub"


def _cache_volume(container: Mapping, pod_spec: Mapping, path: str) -> Mapping | None:
    """The pod volume mounted at the longest mountPath that contains `path`."""
    best, length = None, -1
    for mount in rv.as_list(rv.dig(container, "volumeMounts", default=[])):
        mount_path = str(rv.dig(mount, "mountPath", default="")).rstrip("/")
        if (path == mount_path or path.startswith(mount_path + "/")) and len(mount_path) > length:
            best, length = rv.dig(mount, "name"), len(mount_path)
    for volume in rv.as_list(rv.dig(pod_spec, "volumes", default=[])):
        if best is not None and rv.dig(volume, "name") == best:
            return volume
    return None


def check(resource_type: str, props: Mapping) -> list[str]:
    out = []
    for server in rv.vllm_containers(resource_type, props):
        argv = [str(t) for t in rv.container_argv(server.container)]
        if _flag(argv, "--load-format") == "runai_streamer":
            continue
        need = checkpoint_gib(server.command.model)
        if need is None:
            continue
        path = download_dir(server.container)
        volume = _cache_volume(server.container, server.template.spec, path)
        empty_dir = rv.dig(volume, "emptyDir") if volume is not None else None
        limit = quantity_gib(rv.dig(empty_dir, "sizeLimit")) if isinstance(empty_dir, Mapping) else None
        if limit is not None and limit < need:
            out.append(
                f"container {server.name!r} downloads {server.command.model} ({need:.1f} GiB checkpoint) into {path}, but volume "
                f"{rv.dig(volume, 'name')!r} has sizeLimit {rv.dig(empty_dir, 'sizeLimit')}; the kubelet evicts the pod mid-download: "
                f"give it at least {int(need) + 1}Gi"
            )
    return out


def check_components(resources: Iterable[rv.Resource]) -> list[rv.Finding]:
    findings = []
    for r in resources:
        if r.type not in (rv.VLLM_SERVICE, rv.ECS_VLLM_TASK) or rv.dig(r.props, "load_format") == "runai_streamer":
            continue
        model = rv.dig(r.props, "model")
        need = checkpoint_gib(model if isinstance(model, str) else None)
        if need is None:
            continue
        for key, what in (("model_cache_gib", "model cache"), ("node_disk_gib", "node root volume")):
            size = rv.as_float(rv.dig(r.props, key))
            if size is not None and size < need:
                findings.append(
                    rv.Finding(
                        r.urn,
                        f"{r.name!r} serves {model}: its {what} is {size:g} GiB but the checkpoint it downloads is "
                        f"{need:.1f} GiB ({key}); size it from the checkpoint, not the in-GPU weights",
                    )
                )
    return findings
