"""One vLLM server's settings -> its command line, environment, probes and start-up budget.

Shared by VllmService (EKS) and EcsVllmTask (ECS) so both platforms run the same engine the same way.
No pulumi import: policies and the CLI use it too.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .sizing.engine import EngineConfig
from .sizing.errors import DoesNotFit, InputError
from .sizing.gpus import Gpu
from .sizing.memory import GIB, MemoryEstimate, checkpoint_bytes, estimate_memory, weights_bytes_per_gpu
from .sizing.model_config import ModelArch
from .sizing.models import resolve_model

# Pinned, never "latest": v0.29.0 was released 2026-09 (github.com/coreweave/ml-containers/pull/225 bumps to it).
DEFAULT_IMAGE = "vllm/vllm-openai:v0.29.0"
VLLM_PORT = 8000
API_KEY_ENV = "VLLM_API_KEY"  # vLLM reads it and then requires `Authorization: Bearer <key>` on /v1
HF_TOKEN_ENV = "HF_TOKEN"
MODEL_CACHE_PATH = "/models"
# The 2-minute EC2 spot interruption notice; drain and exit must finish inside it.
SPOT_NOTICE_SECONDS = 120


def require_pinned_image(image: str) -> str:
    """Return `image` if it is pinned to a version tag or a digest; raise ValueError for no tag or `:latest`.

    One rule for every image the fleet runs (the vLLM server, the LoRA sync sidecar): an unpinned image can
    change under a running service at the next pull. Raises ValueError so pydantic validators can call it.
    """
    tag = image.rsplit("/", 1)[-1]
    if "@sha256:" not in image and (":" not in tag or tag.endswith(":latest")):
        raise ValueError(f"image {image!r} must be pinned to a version tag or digest, not latest")
    return image


class VllmEngine(BaseModel):
    """Everything that decides how one vLLM server starts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(description="Hugging Face id (or catalog alias) served; also the model the fit check sizes.")
    model_config_path: str | None = Field(
        None, description="Path to the model's config.json when the model is not in the catalog (sizing only)."
    )
    served_model_name: str | None = Field(None, description="Name clients send in `model`; default the HF id.")
    engine: EngineConfig = Field(default_factory=EngineConfig, description="The vLLM engine flags that decide memory and speed.")
    image: str = Field(DEFAULT_IMAGE, description="Container image, pinned to a version tag or a digest.")
    port: int = Field(VLLM_PORT, ge=1024, le=65535, description="Container port of the OpenAI-compatible server.")
    enable_prefix_caching: bool = Field(True, description="Reuse KV of shared prompt prefixes (system prompts).")
    load_format: str = Field("auto", description="auto (download from the Hub into the cache) or runai_streamer (stream from S3).")
    model_uri: str | None = Field(None, description="s3://bucket/prefix of the weights when load_format is runai_streamer.")
    lora_modules_uri: str | None = Field(None, description="s3:// or local path the LoRA resolver loads adapters from.")
    extra_args: tuple[str, ...] = Field((), description="More `vllm serve` flags, appended verbatim.")

    @field_validator("image")
    @classmethod
    def _pinned(cls, image: str) -> str:
        return require_pinned_image(image)

    @field_validator("load_format")
    @classmethod
    def _load_format(cls, value: str) -> str:
        if value not in ("auto", "safetensors", "runai_streamer"):
            raise ValueError("load_format must be auto, safetensors or runai_streamer")
        return value

    # ----- sizing ---------------------------------------------------------------------------------------
    def arch(self) -> ModelArch:
        if self.model_config_path:
            from .sizing.models import load_config_file

            return load_config_file(self.model_config_path, field="model_config_path")
        return resolve_model(self.model, field="model")

    @property
    def gpus_per_replica(self) -> int:
        return self.engine.tp * self.engine.pp

    def estimate(self, gpu: Gpu) -> MemoryEstimate:
        return estimate_memory(self.arch(), gpu.memory_gib, self.engine, gpu_name=gpu.name)

    def require_fit(self, gpu: Gpu, gpus_per_node: int | None = None) -> MemoryEstimate:
        """Raise DoesNotFit (by how much, and what would fit) unless the model fits `gpu`."""
        return require_fit(self, gpu, gpus_per_node)

    def weights_gib_total(self) -> float:
        """All weights of one replica as they sit in GPU memory (after any load-time quantization)."""
        arch = self.arch()
        return weights_bytes_per_gpu(arch, self.engine.model_copy(update={"tp": 1, "pp": 1})) / GIB

    def checkpoint_gib(self) -> float:
        """The checkpoint on disk (sizing.memory.checkpoint_bytes): what a cold start downloads and reads."""
        return checkpoint_bytes(self.arch()) / GIB

    def download_gib(self) -> float:
        """What lands in the node-local model cache: the checkpoint, or nothing when it streams from S3."""
        return 0.0 if self.load_format == "runai_streamer" else self.checkpoint_gib()

    def model_cache_gib(self) -> int:
        """Size of the model cache volume: the download plus the compile caches (model_cache_gib())."""
        return model_cache_gib(self.download_gib())

    # ----- what the container runs ------------------------------------------------------------------------
    def args(self) -> list[str]:
        """`vllm serve` arguments (the image's entrypoint is `vllm serve`)."""
        e = self.engine
        est_seqs, est_tokens = e.max_num_seqs, e.max_num_batched_tokens
        args = [self.model_uri if self.load_format == "runai_streamer" and self.model_uri else self.model]
        args += ["--served-model-name", self.served_model_name or self.model]
        args += ["--host", "0.0.0.0", "--port", str(self.port)]
        args += ["--tensor-parallel-size", str(e.tp), "--pipeline-parallel-size", str(e.pp)]
        if e.dtype != "auto":
            args += ["--dtype", e.dtype]
        if e.quantization:
            args += ["--quantization", e.quantization]
        if e.kv_cache_dtype != "auto":
            args += ["--kv-cache-dtype", e.kv_cache_dtype]
        if e.max_model_len:
            args += ["--max-model-len", str(e.max_model_len)]
        if est_seqs:
            args += ["--max-num-seqs", str(est_seqs)]
        if est_tokens:
            args += ["--max-num-batched-tokens", str(est_tokens)]
        args += ["--gpu-memory-utilization", f"{e.gpu_memory_utilization:g}"]
        if e.enforce_eager:
            args.append("--enforce-eager")
        if self.enable_prefix_caching:
            args.append("--enable-prefix-caching")
        if self.load_format != "auto":
            args += ["--load-format", self.load_format]
        else:
            args += ["--download-dir", f"{MODEL_CACHE_PATH}/hub"]
        if e.enable_lora:
            args += ["--enable-lora", "--max-loras", str(e.max_loras), "--max-lora-rank", str(e.max_lora_rank)]
            args += ["--max-cpu-loras", str(e.max_cpu_loras or e.max_loras)]
        args += list(self.extra_args)
        return args

    def environment(self) -> dict[str, str]:
        """Plain (non-secret) environment. Secrets (HF token, API key) are injected by the platform."""
        env = {
            "HF_HOME": f"{MODEL_CACHE_PATH}/hf",
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
            # Read-only root filesystem: caches that vLLM, Triton and torch.compile write go to the cache volume.
            "XDG_CACHE_HOME": f"{MODEL_CACHE_PATH}/cache",
            "VLLM_CACHE_ROOT": f"{MODEL_CACHE_PATH}/cache/vllm",
            "TRITON_CACHE_DIR": f"{MODEL_CACHE_PATH}/cache/triton",
        }
        if self.engine.enable_lora:
            # Adapters are loaded at run time by name from the LoRA store, without a redeploy.
            env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
            if self.lora_modules_uri:
                env["VLLM_PLUGINS"] = "lora_filesystem_resolver"
                env["VLLM_LORA_RESOLVER_CACHE_DIR"] = f"{MODEL_CACHE_PATH}/loras"
        return env

    def startup_seconds(self, network_gbps: float = 25.0) -> int:
        """Cold-start budget: pull the image, download the checkpoint, load it, compile and capture CUDA graphs."""
        checkpoint = self.checkpoint_gib()
        return startup_seconds(checkpoint, self.gpus_per_replica, network_gbps, download_gib=self.download_gib())


def engine_props(engine: VllmEngine) -> dict[str, Any]:
    """The engine settings a serving component records in its props, the same keys on EKS and ECS.

    VllmService and EcsVllmTask both publish them (policies and `pulumi stack output` read them); one list
    keeps the two platforms from drifting. Each component adds its own platform keys around these.
    """
    e = engine.engine
    return {
        "model": engine.model,
        "tp": e.tp,
        "pp": e.pp,
        "dtype": e.dtype,
        "quantization": e.quantization,
        "kv_cache_dtype": e.kv_cache_dtype,
        "max_model_len": e.max_model_len,
        "max_num_seqs": e.max_num_seqs,
        "gpu_memory_utilization": e.gpu_memory_utilization,
        "enable_lora": e.enable_lora,
        "max_loras": e.max_loras,
        "max_lora_rank": e.max_lora_rank,
        "max_cpu_loras": e.max_cpu_loras,
        "image": engine.image,
    }


# Cache volume headroom over the download: torch.compile, Triton and CUDA-graph caches, the HF lock/metadata files.
COMPILE_CACHE_GIB = 20
# Download bandwidth the budgets assume: at most 1 GB/s (the Hub's CDN or S3 on one client seldom does more,
# whatever the NIC), less when the NIC is slower (network_gbps / 8).
MAX_DOWNLOAD_GBS = 1.0


def model_cache_gib(download_gib: float) -> int:
    """Model cache volume for `download_gib` of checkpoint: 10% over it plus the compile caches, rounded up."""
    return int(math.ceil(download_gib * 1.1 + COMPILE_CACHE_GIB))


def download_seconds(download_gib: float, network_gbps: float = 25.0) -> float:
    """Seconds to download `download_gib` GiB at min(network_gbps / 8, MAX_DOWNLOAD_GBS) GB/s."""
    return download_gib * 1.074 / min(network_gbps / 8, MAX_DOWNLOAD_GBS)  # 1 GiB = 1.074 GB


def startup_seconds(checkpoint_gib: float, gpus: int, network_gbps: float = 25.0, *, download_gib: float | None = None) -> int:
    """Model load budget with margin (the probes and grace periods are sized from it).

    `checkpoint_gib`: the checkpoint on disk (VllmEngine.checkpoint_gib()), read into the GPUs at load;
    `download_gib`: what is downloaded first (default the checkpoint; 0 when it streams from S3).
    Figures: the vLLM 0.19 H100 runs in vllm_memory_observations.json took 2-170 s to load weights and
    8-60 s for torch.compile + CUDA graphs; the vllm-openai image is ~10 GB to pull. Downloads at the
    bandwidth download_seconds() states.
    """
    image_pull = 120
    download = download_seconds(checkpoint_gib if download_gib is None else download_gib, network_gbps)
    load = checkpoint_gib / max(gpus, 1) / 1.0 + 10  # ~1 GiB/s from page cache into each GPU
    compile_and_graphs = 60 + (30 if gpus > 1 else 0)
    return int(math.ceil((image_pull + download + load + compile_and_graphs) * 1.5 / 10) * 10)


def require_fit(engine: VllmEngine, gpu: Gpu, gpus_per_node: int | None = None) -> MemoryEstimate:
    """The fit rule components and policies share: raise DoesNotFit naming the shortfall and what would fit.

    `gpus_per_node`: GPUs in one node. Tensor parallelism must stay inside a node (NVLink/PCIe); pipeline
    stages span nodes, one node per stage.
    """
    if gpus_per_node is not None and engine.engine.tp > gpus_per_node:
        raise InputError(
            "tensor_parallel_size",
            f"TP {engine.engine.tp} needs {engine.engine.tp} GPUs in one node but the node has {gpus_per_node}; "
            "use pipeline parallelism across nodes (pp) or a larger instance",
        )
    estimate = engine.estimate(gpu)
    if not estimate.fits:
        raise DoesNotFit(
            f"{engine.model} on {gpu.name} (TP {engine.engine.tp} x PP {engine.engine.pp}): {estimate.reason}. "
            + suggest_fits(engine, gpu, gpus_per_node),
            estimate,
        )
    return estimate


def suggest_fits(engine: VllmEngine, gpu: Gpu, gpus_per_node: int | None = None) -> str:
    """A short 'what would fit' hint: more GPUs on this GPU type, FP8, or a shorter context."""
    from .sizing.fit_search import what_would_fit

    return what_would_fit(engine.arch(), gpu, engine.engine, gpus_per_node)


# ----- ECR pull-through cache ---------------------------------------------------------------------------------
# 100+ GPU nodes pulling a 10-20 GB image anonymously from Docker Hub through a few NAT gateways hit Docker Hub's
# per-IP pull limits. An ECR pull-through cache rule (docs.aws.amazon.com/AmazonECR/latest/userguide/pull-through-cache.html)
# pulls each layer once per region and serves the nodes from ECR. Docker Hub as upstream needs a Docker Hub credential in
# Secrets Manager whose name starts with `ecr-pullthroughcache/`, in the rule's own account and region
# (.../pull-through-cache-creating-rule.html, read 2026-12-04).
DOCKER_HUB_REGISTRY = "registry-1.docker.io"
PULL_THROUGH_SECRET_PREFIX = "ecr-pullthroughcache/"
# What pulling through a cache needs beyond an ordinary ECR pull (.../pull-through-cache-iam.html, read 2026-12-04):
# import the upstream image, and create its cache repository on the first pull.
PULL_THROUGH_ACTIONS = ("ecr:BatchImportUpstreamImage", "ecr:CreateRepository")


def is_docker_hub_image(image: str) -> bool:
    """True for `vllm/vllm-openai:v1` or `docker.io/...`: no registry host in the first path segment."""
    if "/" not in image:
        return True  # an official image: `ubuntu:24.04`
    first = image.split("/", 1)[0]
    return first in ("docker.io", "registry-1.docker.io", "index.docker.io") or ("." not in first and ":" not in first and first != "localhost")


def pull_through_image(image: str, account_id: str, region: str, prefix: str) -> str:
    """The ECR pull-through-cache URI of a Docker Hub image: ACCOUNT.dkr.ecr.REGION.amazonaws.com/PREFIX/ns/repo:tag.
    Official images (`ubuntu:24.04`) live under `library/` on Docker Hub."""
    if not is_docker_hub_image(image):
        raise ValueError(f"image {image!r} is not on Docker Hub; only Docker Hub images are rewritten to the cache")
    path = image.split("/", 1)[1] if image.split("/", 1)[0].endswith("docker.io") else image
    if "/" not in path.split("@", 1)[0].split(":", 1)[0]:
        path = f"library/{path}"
    return f"{account_id}.dkr.ecr.{region}.amazonaws.com/{prefix}/{path}"


def ecr_repository_arn(image: str, partition: str = "aws") -> str | None:
    """arn:PARTITION:ecr:REGION:ACCOUNT:repository/NAME of an ECR image URI, None for other registries."""
    host, _, rest = image.partition("/")
    parts = host.split(".")
    if len(parts) < 6 or parts[1:3] != ["dkr", "ecr"] or not rest:
        return None
    name = rest.split("@", 1)[0]
    if ":" in name.rsplit("/", 1)[-1]:
        name = name.rsplit(":", 1)[0]
    return f"arn:{partition}:ecr:{parts[3]}:{parts[0]}:repository/{name}"
