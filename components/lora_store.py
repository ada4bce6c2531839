"""LoraStore: the S3 store of tenants' LoRA adapters and the wiring that serves them without a redeploy.

What it builds (a fixed set: the resource count does not grow with tenants or adapters):
- a KMS key with yearly rotation (or the key you give), an S3 bucket with versioning, SSE-KMS + bucket key,
  all four public-access blocks, BucketOwnerEnforced ownership, a bucket policy that denies plain HTTP,
  TLS < 1.2, puts without SSE-KMS and puts naming another KMS key (and, optionally, writes by anyone but
  the given writer principals), and a lifecycle that expires noncurrent versions after N days and aborts
  incomplete multipart uploads;
- a read-only IAM policy (s3:ListBucket on `adapters/`, s3:GetObject on `adapters/*` and the manifest,
  kms:Decrypt through S3 only) for the serving plane: ECS task roles and EKS Pod Identity / IRSA roles
  attach it (`read_policy_arn`), optionally attached here to `reader_role_names`.

How adapters reach vLLM (`serving_settings()`), chosen from vLLM's documented run-time LoRA loading
(docs.vllm.ai "LoRA Resolver Plugins"; vllm/plugins/lora_resolvers/filesystem_resolver.py):
- vLLM runs with `--enable-lora`, `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`,
  `VLLM_PLUGINS=lora_filesystem_resolver` and `VLLM_LORA_RESOLVER_CACHE_DIR=/models/loras`. A request whose
  `model` names an adapter vLLM has not loaded makes the resolver look for `/models/loras/<model>/`, check
  its adapter_config.json (peft_type LORA, base_model_name_or_path == the served model) and load it.
- a sidecar (`lora-sync`, amazon/aws-cli pinned) shares that directory with vLLM (an emptyDir on EKS, a
  task volume on ECS). It polls `adapters/.generation` (one HEAD per interval), and when it changes (or
  every full-resync period) syncs `s3://bucket/adapters/` into `/models/loras/.store/`, points
  `/models/loras/<tenant>--<adapter>` at the revision named by each adapter's CURRENT object (an atomic
  rename), and asks vLLM to unload an adapter whose revision changed or that was removed
  (`POST /v1/unload_lora_adapter`), so the next request loads the new files or none.
Why not `/v1/load_lora_adapter` per adapter: the resolver loads only what is requested, so 2,000 adapters
cost nothing until used and vLLM's LRU (max_loras on the GPU, max_cpu_loras in RAM) keeps the hot ones.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import pulumi
import pulumi_aws as aws
from pydantic import BaseModel, ConfigDict, Field, field_validator

from .lora_adapters import ADAPTERS_PREFIX, GENERATION_KEY, MANIFEST_KEY
from .sizing.engine import EngineConfig, component_args
from .sizing.errors import InputError
from .vllm import API_KEY_ENV, MODEL_CACHE_PATH, VLLM_PORT, VllmEngine, require_pinned_image

# Pinned, never latest (AWS publishes every CLI release as amazon/aws-cli:<version> on Docker Hub / ECR Public).
DEFAULT_SYNC_IMAGE = "amazon/aws-cli:2.32.8"
SIDECAR_NAME = "lora-sync"
VOLUME_NAME = "lora-adapters"
SIDECAR_TMP_VOLUME = "lora-sync-tmp"
# The directory vLLM's filesystem resolver reads; the same path VllmEngine.environment() sets when
# lora_modules_uri is given (components/vllm.py), so both agree.
LORA_CACHE_DIR = f"{MODEL_CACHE_PATH}/loras"
SYNCED_MARKER = f"{LORA_CACHE_DIR}/.synced"
SIDECAR_RESOURCES = {"cpu": "250m", "memory": "512Mi"}  # the Kubernetes sidecar's requests and limits
SIDECAR_UID = 65532  # the conventional "nonroot" uid; files it writes are world-readable (umask 022)
# Headroom on the adapter cache: a replaced adapter keeps its old revision until the next --delete pass.
CACHE_HEADROOM = 1.25
CACHE_MIN_GIB = 1

_BUCKET_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")

# The sidecar's program (bash in amazon/aws-cli, which ships bash, coreutils and curl). One round:
#   1. sync s3://bucket/adapters/ -> .store/ (no deletes yet: the old revision stays until relinked)
#   2. for each .store/<tenant>/<adapter>/CURRENT: atomically point <tenant>--<adapter> at that revision;
#      if it pointed elsewhere before, unload it from vLLM so the next request loads the new revision
#   3. sync again with --delete (drops removed adapters and replaced revisions), remove the emptied
#      folders and the links left without an adapter (removed adapters), and unload those
#   4. touch .synced (the readiness signal)
# A round runs when adapters/.generation changes (one HEAD per interval) or every FULL_RESYNC_SECONDS.
SYNC_SCRIPT = r"""set -o pipefail
store="${LORA_DIR}/.store"
mkdir -p "$store" || exit 1
last_gen=""
last_full=0

unload() {
  local auth=()
  if [ -n "${VLLM_API_KEY:-}" ]; then auth=(-H "Authorization: Bearer ${VLLM_API_KEY}"); fi
  curl -sS -m 10 -o /dev/null -X POST "http://127.0.0.1:${VLLM_PORT}/v1/unload_lora_adapter" \
    -H 'Content-Type: application/json' "${auth[@]}" -d "{\"lora_name\": \"$1\"}" || true
}

sync_once() {
  aws s3 sync "s3://${LORA_BUCKET}/${LORA_PREFIX}" "$store" --no-progress --only-show-errors || return 1
  for cur in "$store"/*/*/CURRENT; do
    [ -f "$cur" ] || continue
    dir="${cur%/CURRENT}"; adapter="${dir##*/}"; parent="${dir%/*}"; tenant="${parent##*/}"
    rev="$(tr -dc 'a-f0-9' < "$cur")"
    { [ -n "$rev" ] && [ -f "$dir/$rev/adapter_config.json" ]; } || continue
    name="${tenant}--${adapter}"; link="${LORA_DIR}/${name}"; target=".store/${tenant}/${adapter}/${rev}"
    old="$(readlink "$link" 2>/dev/null || true)"
    if [ "$old" != "$target" ]; then
      { ln -sfn "$target" "${link}.tmp" && mv -Tf "${link}.tmp" "$link"; } || continue
      echo "lora-sync: ${name} -> ${rev}"
      [ -z "$old" ] || unload "$name"
    fi
  done
  aws s3 sync "s3://${LORA_BUCKET}/${LORA_PREFIX}" "$store" --delete --no-progress --only-show-errors || return 1
  # s3 sync --delete removes files, not folders: drop the emptied ones, deepest first.
  for d in "$store"/*/*/*/ "$store"/*/*/ "$store"/*/; do rmdir "$d" 2>/dev/null; done
  for link in "${LORA_DIR}"/*--*; do
    if [ -L "$link" ] && [ ! -f "${link}/adapter_config.json" ]; then
      rm -f "$link"; echo "lora-sync: removed ${link##*/}"; unload "${link##*/}"
    fi
  done
  touch "${LORA_DIR}/.synced"
}

while true; do
  gen="$(aws s3api head-object --bucket "$LORA_BUCKET" --key "${LORA_PREFIX}.generation" --query ETag --output text 2>/dev/null || echo none)"
  now="$(date +%s)"
  if [ "$gen" != "$last_gen" ] || [ $((now - last_full)) -ge "${FULL_RESYNC_SECONDS}" ]; then
    if sync_once; then last_gen="$gen"; last_full="$now"; else echo "lora-sync: sync failed, retrying" >&2; fi
  fi
  [ -z "${LORA_SYNC_ONESHOT:-}" ] || exit 0
  sleep "${SYNC_INTERVAL_SECONDS}"
done
"""


# ----- pure sizing rules ---------------------------------------------------------------------------------


def default_max_cpu_loras(max_loras: int, adapters_total: int) -> int:
    """Adapters vLLM keeps in host RAM: 8x the GPU slots, bounded by how many adapters exist.

    A request for an adapter in the CPU cache only copies it to a GPU slot; one outside it is read from
    the local disk first. vLLM requires max_cpu_loras >= max_loras.
    """
    return max(max_loras, min(adapters_total, 8 * max_loras))


def adapter_bytes_worst_case(base_model: str, max_lora_rank: int) -> float:
    """Bytes of the largest adapter the service accepts: every supported module at max_lora_rank.

    The same arithmetic as one GPU slot (components/sizing/memory.py lora_bytes_per_gpu at TP 1).
    """
    from .sizing.memory import lora_bytes_per_gpu
    from .sizing.models import resolve_model

    arch = resolve_model(base_model, field="base_model")
    engine = EngineConfig(enable_lora=True, max_loras=1, max_lora_rank=max_lora_rank)
    return lora_bytes_per_gpu(arch, engine)


def cache_size_gib(adapters_total: int, adapter_bytes: float) -> int:
    """Local adapter cache (emptyDir / task volume) size: every adapter once, plus replacement headroom."""
    return max(CACHE_MIN_GIB, math.ceil(adapters_total * adapter_bytes * CACHE_HEADROOM / 1024**3))


# ----- args ----------------------------------------------------------------------------------------------


class LoraStoreArgs(BaseModel):
    """Where tenants' adapters live and how the serving plane reads them. Secure by default."""

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    base_model: str | None = Field(
        None, description="Model the adapters are trained from (HF id or catalog alias): sizes the adapter cache; recorded in props."
    )
    tenants: int = Field(100, description="Tenants expected: sizes the cache and max_cpu_loras only; creates nothing per tenant.")
    adapters_per_tenant: int = Field(1, description="Adapters per tenant expected (sizing only).")
    max_loras: int = Field(8, description="Adapters resident on each GPU at once (vLLM --max-loras; each slot costs GPU memory).")
    max_lora_rank: Literal[8, 16, 32, 64, 128, 256, 320, 512] = Field(16, description="Largest rank accepted (vLLM --max-lora-rank).")
    max_cpu_loras: int | None = Field(None, description="Adapters cached in host RAM (vLLM --max-cpu-loras); None: default_max_cpu_loras().")
    adapter_size_mib: float | None = Field(
        None, description="Typical adapter size for cache sizing; None: the worst case for base_model at max_lora_rank."
    )
    kms_key_arn: Any = Field(None, description="Bring your own KMS key (pulumi.Input[str]); None creates one with rotation.")
    bucket_name: str | None = Field(None, description="Exact bucket name; None lets Pulumi name it uniquely.")
    noncurrent_version_days: int = Field(30, description="Days replaced/removed adapter versions stay recoverable.")
    abort_multipart_days: int = Field(7, description="Days before an incomplete multipart upload is aborted.")
    force_destroy: bool = Field(False, description="Let `pulumi destroy` delete a non-empty bucket (dev only).")
    retain_on_delete: bool = Field(
        False,
        description="Keep the bucket and its KMS key in AWS when the stack is destroyed (prod): tenants' adapters outlive "
        "`pulumi destroy` and a re-created stack. Pulumi only forgets them; delete them by hand if you mean to.",
    )
    reader_role_names: list[Any] = Field(
        default_factory=list, description="IAM role names (ECS task roles, EKS Pod Identity/IRSA roles) to attach the read policy to."
    )
    writer_principal_arns: list[Any] = Field(
        default_factory=list,
        description="If set, the bucket policy denies object writes and deletes to every principal but these (CI, the push role).",
    )
    sync_interval_seconds: int = Field(30, description="How often the sidecar checks for changes (one HEAD request).")
    full_resync_seconds: int = Field(600, description="Full sync at least this often, whatever the generation marker says.")
    sidecar_image: str = Field(DEFAULT_SYNC_IMAGE, description="Sync sidecar image (needs aws, bash, curl), pinned.")
    tags: dict[str, str] = Field(default_factory=dict, description="Tags on every resource that takes them.")

    @field_validator("sidecar_image")
    @classmethod
    def _pinned(cls, image: str) -> str:
        return require_pinned_image(image)


def validate_lora_store_args(args: LoraStoreArgs) -> None:
    """Refuse settings vLLM or AWS would refuse, naming the field (plain values only)."""
    if args.force_destroy and args.retain_on_delete:
        raise InputError("retain_on_delete", "cannot be combined with force_destroy: keep the adapters (prod) or let destroy delete them (dev)")
    if not 1 <= args.tenants <= 1_000_000:
        raise InputError("tenants", f"{args.tenants}; expected 1 to 1,000,000")
    if not 1 <= args.adapters_per_tenant <= 1000:
        raise InputError("adapters_per_tenant", f"{args.adapters_per_tenant}; expected 1 to 1,000")
    if not 1 <= args.max_loras <= 256:
        raise InputError("max_loras", f"{args.max_loras}; expected 1 to 256 adapters per GPU")
    if args.max_cpu_loras is not None and args.max_cpu_loras < args.max_loras:
        raise InputError(
            "max_cpu_loras", f"{args.max_cpu_loras} is below max_loras {args.max_loras}; vLLM needs max_cpu_loras >= max_loras"
        )
    if args.adapter_size_mib is not None and args.adapter_size_mib <= 0:
        raise InputError("adapter_size_mib", f"{args.adapter_size_mib}; must be positive")
    if args.bucket_name is not None and (not _BUCKET_NAME_RE.match(args.bucket_name) or ".." in args.bucket_name):
        raise InputError("bucket_name", f"{args.bucket_name!r} is not an S3 bucket name (3-63 lowercase letters, digits, '.', '-')")
    if not 1 <= args.noncurrent_version_days <= 3650:
        raise InputError("noncurrent_version_days", f"{args.noncurrent_version_days}; expected 1 to 3650 days")
    if not 1 <= args.abort_multipart_days <= 365:
        raise InputError("abort_multipart_days", f"{args.abort_multipart_days}; expected 1 to 365 days")
    if not 5 <= args.sync_interval_seconds <= 3600:
        raise InputError("sync_interval_seconds", f"{args.sync_interval_seconds}; expected 5 to 3600 seconds")
    if args.full_resync_seconds < args.sync_interval_seconds:
        raise InputError(
            "full_resync_seconds", f"{args.full_resync_seconds} is shorter than sync_interval_seconds {args.sync_interval_seconds}"
        )


# ----- serving contract (plain data for VllmService / EcsVllmTask) ---------------------------------------


@dataclass(frozen=True)
class LoraServing:
    """What a vLLM server needs to serve this store's adapters, as plain data both platforms embed.

    `bucket` and `region` may be Outputs: the container shapes below take them as given, so EKS code can
    pass the Output inside its pod spec and ECS code calls `ecs_*` inside its `Output.apply` with strings.
    """

    bucket: Any
    region: Any
    engine_updates: dict  # EngineConfig fields: enable_lora, max_loras, max_lora_rank, max_cpu_loras
    environment: dict  # added to the vLLM container's environment
    cache_size_gib: int  # size of the shared adapter volume (add it to node / instance disk sizing)
    read_policy_arn: Any = None
    image: str = DEFAULT_SYNC_IMAGE
    sync_interval_seconds: int = 30
    full_resync_seconds: int = 600
    vllm_port: int = VLLM_PORT
    mount_path: str = LORA_CACHE_DIR
    sidecar_name: str = SIDECAR_NAME
    volume_name: str = VOLUME_NAME
    tmp_volume_name: str = SIDECAR_TMP_VOLUME
    command: tuple[str, ...] = field(default=("/bin/bash", "-c", SYNC_SCRIPT))

    # -- shared --
    def sidecar_environment(self) -> dict:
        return {
            "LORA_BUCKET": self.bucket,
            "LORA_PREFIX": ADAPTERS_PREFIX,
            "LORA_DIR": self.mount_path,
            "SYNC_INTERVAL_SECONDS": str(self.sync_interval_seconds),
            "FULL_RESYNC_SECONDS": str(self.full_resync_seconds),
            "VLLM_PORT": str(self.vllm_port),
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_RETRY_MODE": "adaptive",
            "AWS_MAX_ATTEMPTS": "5",
            "HOME": "/tmp",
        }

    def apply_to_engine(self, engine):
        """A VllmEngine serving these adapters: LoRA slots on, and the resolver pointed at the shared volume."""
        if not isinstance(engine, VllmEngine):
            raise InputError("engine", f"expected a VllmEngine, got {type(engine).__name__}")
        if engine.load_format == "runai_streamer" and engine.model_uri:
            raise InputError(
                "load_format",
                "runai_streamer starts vLLM with model_uri as the model path, and vLLM's LoRA resolver only loads adapters "
                "whose base_model_name_or_path equals that path; serve LoRA with load_format auto or safetensors",
            )
        new_engine = EngineConfig(**{**engine.engine.model_dump(), **self.engine_updates})
        return engine.model_copy(update={"engine": new_engine, "lora_modules_uri": self.mount_path})

    # -- EKS: a native sidecar (an init container with restartPolicy Always, Kubernetes >= 1.29) --
    def kubernetes_init_container(self, *, api_key_secret: tuple[str, str] | None = None, run_as_user: int = SIDECAR_UID) -> dict:
        """The pod spec `initContainers` entry (camelCase). `api_key_secret`: (Secret name, key) of the vLLM API key.

        The pod's service account must carry the read policy (Pod Identity or IRSA), and the pod securityContext
        needs an fsGroup so this non-root container can read the projected web-identity token.
        """
        env = [{"name": k, "value": v} for k, v in sorted(self.sidecar_environment().items())]
        if api_key_secret:
            env.append({"name": API_KEY_ENV, "valueFrom": {"secretKeyRef": {"name": api_key_secret[0], "key": api_key_secret[1]}}})
        return {
            "name": self.sidecar_name,
            "image": self.image,
            # As the vLLM container: a pinned tag whose manifest is re-checked at each start (the image is small).
            "imagePullPolicy": "Always",
            "restartPolicy": "Always",
            "command": list(self.command),
            "env": env,
            "volumeMounts": [
                {"name": self.volume_name, "mountPath": self.mount_path},
                {"name": self.tmp_volume_name, "mountPath": "/tmp"},
            ],
            # Pod Ready waits for the first full sync; vLLM starts in parallel (no startupProbe gating it).
            "readinessProbe": {"exec": {"command": ["test", "-f", SYNCED_MARKER]}, "periodSeconds": 10, "failureThreshold": 3},
            # requests = limits, as the vLLM container's: with every container Guaranteed the pod keeps the
            # Guaranteed QoS class (evicted last under node pressure), and a runaway sync cannot starve vLLM's CPU.
            # One round is a HEAD request and, on a change, an `aws s3 sync` of the changed adapters.
            "resources": {
                "requests": dict(SIDECAR_RESOURCES),
                "limits": dict(SIDECAR_RESOURCES),
            },
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": run_as_user,
                "runAsGroup": run_as_user,
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "capabilities": {"drop": ["ALL"]},
                "seccompProfile": {"type": "RuntimeDefault"},
            },
        }

    def kubernetes_volumes(self) -> list[dict]:
        return [
            {"name": self.volume_name, "emptyDir": {"sizeLimit": f"{self.cache_size_gib}Gi"}},
            {"name": self.tmp_volume_name, "emptyDir": {"sizeLimit": "1Gi"}},
        ]

    def kubernetes_vllm_volume_mount(self) -> dict:
        return {"name": self.volume_name, "mountPath": self.mount_path, "readOnly": True}

    # -- ECS: a non-essential container with a restart policy, in the same awsvpc task --
    def ecs_container_definition(self, *, api_key_secret_arn: str | None = None, log_configuration: dict | None = None) -> dict:
        """A `containerDefinitions` entry in the RegisterTaskDefinition shape (bucket/region must be strings here)."""
        definition = {
            "name": self.sidecar_name,
            "image": self.image,
            "essential": False,  # a sync outage must not stop serving the adapters already here
            "entryPoint": list(self.command[:2]),
            "command": list(self.command[2:]),
            "environment": [{"name": k, "value": v} for k, v in sorted(self.sidecar_environment().items())],
            "mountPoints": [
                {"sourceVolume": self.volume_name, "containerPath": self.mount_path, "readOnly": False},
                {"sourceVolume": self.tmp_volume_name, "containerPath": "/tmp", "readOnly": False},
            ],
            "readonlyRootFilesystem": True,
            "restartPolicy": {"enabled": True, "restartAttemptPeriod": 60},
            "healthCheck": {
                "command": ["CMD-SHELL", f"test -f {SYNCED_MARKER}"],
                "interval": 15,
                "timeout": 5,
                "retries": 3,
                "startPeriod": 300,
            },
            "cpu": 128,
            "memory": 512,
            "memoryReservation": 256,
        }
        if api_key_secret_arn:
            definition["secrets"] = [{"name": API_KEY_ENV, "valueFrom": api_key_secret_arn}]
        if log_configuration:
            definition["logConfiguration"] = log_configuration
        return definition

    def ecs_container_definition_output(self, **kw) -> pulumi.Output:
        """`ecs_container_definition` once bucket and region are known (for a task definition's JSON)."""
        from dataclasses import replace

        return pulumi.Output.all(self.bucket, self.region).apply(
            lambda v: replace(self, bucket=v[0], region=v[1]).ecs_container_definition(**kw)
        )

    def ecs_volumes(self) -> list[dict]:
        """Task volumes with no host path: Docker-managed, scoped to the task (the emptyDir of ECS on EC2)."""
        return [{"name": self.volume_name}, {"name": self.tmp_volume_name}]

    def ecs_vllm_mount_point(self) -> dict:
        return {"sourceVolume": self.volume_name, "containerPath": self.mount_path, "readOnly": True}

    def ecs_vllm_depends_on(self) -> list[dict]:
        return [{"containerName": self.sidecar_name, "condition": "START"}]


def lora_serving(args: LoraStoreArgs, *, bucket: Any, region: Any, read_policy_arn: Any = None) -> LoraServing:
    """The serving contract for these args (pure: no resource is created)."""
    adapters_total = args.tenants * args.adapters_per_tenant
    if args.adapter_size_mib is not None:
        per_adapter = args.adapter_size_mib * 1024**2
    elif args.base_model:
        per_adapter = adapter_bytes_worst_case(args.base_model, args.max_lora_rank)
    else:
        per_adapter = 64 * 1024**2  # a rank-16 adapter on every linear layer of an 8B model is ~80 MiB; most are smaller
    max_cpu = args.max_cpu_loras or default_max_cpu_loras(args.max_loras, adapters_total)
    return LoraServing(
        bucket=bucket,
        region=region,
        engine_updates={"enable_lora": True, "max_loras": args.max_loras, "max_lora_rank": args.max_lora_rank, "max_cpu_loras": max_cpu},
        environment={
            "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
            "VLLM_PLUGINS": "lora_filesystem_resolver",
            "VLLM_LORA_RESOLVER_CACHE_DIR": LORA_CACHE_DIR,
        },
        cache_size_gib=cache_size_gib(adapters_total, per_adapter),
        read_policy_arn=read_policy_arn,
        image=args.sidecar_image,
        sync_interval_seconds=args.sync_interval_seconds,
        full_resync_seconds=args.full_resync_seconds,
    )


def resolve_lora_engine(engine: VllmEngine, lora: LoraServing | None) -> VllmEngine:
    """The engine that serves `lora`'s adapters: as given when it already uses the store's resolver, else
    `lora.apply_to_engine(engine)` (LoRA slots on, resolver on the shared volume). An engine that enables LoRA
    without the resolver is refused: applying the store would silently replace its max_loras / rank settings."""
    if lora is None:
        return engine
    if not isinstance(lora, LoraServing):
        raise InputError("lora", f"expected a components.lora_store.LoraServing (LoraStore.serving_settings()), got {type(lora).__name__}")
    if lora.read_policy_arn is None:
        raise InputError(
            "lora",
            "has no read_policy_arn: the sync sidecar reads the adapters from S3 with the task role; "
            "use LoraStore.serving_settings(), which carries the store's read policy",
        )
    if not engine.engine.enable_lora:
        return lora.apply_to_engine(engine)
    if not engine.lora_modules_uri:
        raise InputError(
            "lora",
            "the engine enables LoRA without the adapter resolver (lora_modules_uri unset); pass the engine without LoRA "
            "or build it with lora.apply_to_engine(engine)",
        )
    return engine


# ----- policies (pure: JSON documents from ARNs) ---------------------------------------------------------


def bucket_policy_document(bucket_arn: str, kms_key_arn: str, writer_principal_arns: list[str] | None = None) -> dict:
    objects = f"{bucket_arn}/*"
    statements = [
        {
            "Sid": "DenyInsecureTransport",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:*",
            "Resource": [bucket_arn, objects],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        },
        {
            "Sid": "DenyOldTls",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:*",
            "Resource": [bucket_arn, objects],
            "Condition": {"NumericLessThan": {"s3:TlsVersion": "1.2"}},
        },
        {
            # StringNotEquals also matches when the header is absent: a put must ask for SSE-KMS.
            "Sid": "DenyPutWithoutSseKms",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:PutObject",
            "Resource": objects,
            "Condition": {"StringNotEquals": {"s3:x-amz-server-side-encryption": "aws:kms"}},
        },
        {
            "Sid": "DenyPutWithOtherKmsKey",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:PutObject",
            "Resource": objects,
            "Condition": {"StringNotEqualsIfExists": {"s3:x-amz-server-side-encryption-aws-kms-key-id": kms_key_arn}},
        },
    ]
    if writer_principal_arns:
        statements.append(
            {
                "Sid": "DenyWritesExceptWriters",
                "Effect": "Deny",
                "Principal": "*",
                "Action": ["s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion", "s3:AbortMultipartUpload"],
                "Resource": objects,
                "Condition": {"ArnNotLike": {"aws:PrincipalArn": list(writer_principal_arns)}},
            }
        )
    return {"Version": "2012-10-17", "Statement": statements}


def read_policy_document(bucket_arn: str, kms_key_arn: str, region: str) -> dict:
    """Read-only, scoped: list and get under adapters/ (and the manifest), decrypt with the key via S3 only."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ListAdapters",
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": bucket_arn,
                "Condition": {"StringLike": {"s3:prefix": [ADAPTERS_PREFIX, f"{ADAPTERS_PREFIX}*"]}},
            },
            {
                "Sid": "ReadAdapters",
                "Effect": "Allow",
                "Action": "s3:GetObject",
                "Resource": [f"{bucket_arn}/{ADAPTERS_PREFIX}*", f"{bucket_arn}/{MANIFEST_KEY}"],
            },
            {
                "Sid": "DecryptThroughS3",
                "Effect": "Allow",
                "Action": "kms:Decrypt",
                "Resource": kms_key_arn,
                "Condition": {"StringEquals": {"kms:ViaService": f"s3.{region}.amazonaws.com"}},
            },
        ],
    }


# ----- the component -------------------------------------------------------------------------------------


class LoraStore(pulumi.ComponentResource):
    """S3 store of tenants' LoRA adapters, its read-only IAM policy, and the serving contract."""

    bucket: aws.s3.Bucket
    bucket_name: pulumi.Output[str]
    bucket_arn: pulumi.Output[str]
    kms_key_arn: pulumi.Output[str]
    read_policy_arn: pulumi.Output[str]
    manifest_key: str = MANIFEST_KEY

    def __init__(self, name: str, args: LoraStoreArgs | dict | None = None, opts: pulumi.ResourceOptions | None = None):
        args = component_args(LoraStoreArgs, {} if args is None else args)
        validate_lora_store_args(args)
        if args.base_model:
            from .sizing.models import resolve_model

            resolve_model(args.base_model, field="base_model")  # an unknown model is refused before anything is built
        self.args = args
        adapters_total = args.tenants * args.adapters_per_tenant
        props = {
            "base_model": args.base_model,
            "max_loras": args.max_loras,
            "max_lora_rank": args.max_lora_rank,
            "max_cpu_loras": args.max_cpu_loras or default_max_cpu_loras(args.max_loras, adapters_total),
            "tenants": args.tenants,
            "versioning": True,
            "sse_algorithm": "aws:kms",
            "public_access_blocked": True,
            "tls_only": True,
            # What `pulumi destroy` does to the adapters (preview prints it).
            "force_destroy": args.force_destroy,
            "retain_on_delete": args.retain_on_delete,
        }
        super().__init__("vllm-fleet:index:LoraStore", name, props, opts)
        child = pulumi.ResourceOptions(parent=self)
        # The data and the key that decrypts it: retained on delete in prod (a deleted key makes every object unreadable).
        kept = pulumi.ResourceOptions(parent=self, retain_on_delete=args.retain_on_delete or None)
        tags = {"vllm-fleet:component": "LoraStore", **args.tags}

        if args.kms_key_arn is None:
            self.kms_key = aws.kms.Key(
                f"{name}-key",
                description=f"vllm-fleet LoRA adapters ({name})",
                enable_key_rotation=True,
                deletion_window_in_days=30,
                tags=tags,
                opts=kept,
            )
            key_arn = self.kms_key.arn
        else:
            self.kms_key = None
            key_arn = pulumi.Output.from_input(args.kms_key_arn)

        self.bucket = aws.s3.Bucket(
            f"{name}-bucket",
            bucket=args.bucket_name,
            force_destroy=args.force_destroy,
            tags=tags,
            opts=kept,
        )
        self.ownership = aws.s3.BucketOwnershipControls(
            f"{name}-ownership",
            bucket=self.bucket.id,
            rule=aws.s3.BucketOwnershipControlsRuleArgs(object_ownership="BucketOwnerEnforced"),
            opts=child,
        )
        self.public_access_block = aws.s3.BucketPublicAccessBlock(
            f"{name}-public-access-block",
            bucket=self.bucket.id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=child,
        )
        self.versioning = aws.s3.BucketVersioning(
            f"{name}-versioning",
            bucket=self.bucket.id,
            versioning_configuration=aws.s3.BucketVersioningVersioningConfigurationArgs(status="Enabled"),
            opts=child,
        )
        self.encryption = aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-encryption",
            bucket=self.bucket.id,
            rules=[
                aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
                    apply_server_side_encryption_by_default=aws.s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
                        sse_algorithm="aws:kms",
                        kms_master_key_id=key_arn,
                    ),
                    bucket_key_enabled=True,  # one KMS call per bucket key, not per object: cheaper and no KMS throttling
                )
            ],
            opts=child,
        )
        self.lifecycle = aws.s3.BucketLifecycleConfiguration(
            f"{name}-lifecycle",
            bucket=self.bucket.id,
            rules=[
                aws.s3.BucketLifecycleConfigurationRuleArgs(
                    id="expire-noncurrent-versions",
                    status="Enabled",
                    filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=""),
                    noncurrent_version_expiration=aws.s3.BucketLifecycleConfigurationRuleNoncurrentVersionExpirationArgs(
                        noncurrent_days=args.noncurrent_version_days,
                    ),
                    expiration=aws.s3.BucketLifecycleConfigurationRuleExpirationArgs(expired_object_delete_marker=True),
                ),
                aws.s3.BucketLifecycleConfigurationRuleArgs(
                    id="abort-incomplete-multipart-uploads",
                    status="Enabled",
                    filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=""),
                    abort_incomplete_multipart_upload=aws.s3.BucketLifecycleConfigurationRuleAbortIncompleteMultipartUploadArgs(
                        days_after_initiation=args.abort_multipart_days,
                    ),
                ),
            ],
            # AWS applies lifecycle rules to versions only once versioning is on.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.versioning]),
        )
        writers = list(args.writer_principal_arns)
        self.bucket_policy = aws.s3.BucketPolicy(
            f"{name}-policy",
            bucket=self.bucket.id,
            policy=pulumi.Output.all(self.bucket.arn, key_arn, *writers).apply(
                lambda v: json.dumps(bucket_policy_document(v[0], v[1], list(v[2:])))
            ),
            # S3 refuses a bucket policy while the public access block is being set; order them.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.public_access_block]),
        )

        region = aws.get_region_output(opts=pulumi.InvokeOutputOptions(parent=self)).region
        self.read_policy = aws.iam.Policy(
            f"{name}-read",
            description=f"Read-only access to the LoRA adapters of {name} (serving plane)",
            policy=pulumi.Output.all(self.bucket.arn, key_arn, region).apply(
                lambda v: json.dumps(read_policy_document(v[0], v[1], v[2]))
            ),
            tags=tags,
            opts=child,
        )
        self.reader_attachments = [
            aws.iam.RolePolicyAttachment(f"{name}-read-{i}", role=role, policy_arn=self.read_policy.arn, opts=child)
            for i, role in enumerate(args.reader_role_names)
        ]

        self.bucket_name = self.bucket.bucket
        self.bucket_arn = self.bucket.arn
        self.kms_key_arn = key_arn
        self.read_policy_arn = self.read_policy.arn
        self.region = region
        self.adapters_uri = self.bucket.bucket.apply(lambda b: f"s3://{b}/{ADAPTERS_PREFIX}")
        self.register_outputs(
            {
                "bucket_name": self.bucket_name,
                "bucket_arn": self.bucket_arn,
                "kms_key_arn": self.kms_key_arn,
                "read_policy_arn": self.read_policy_arn,
                "manifest_key": MANIFEST_KEY,
                "generation_key": GENERATION_KEY,
                "adapters_uri": self.adapters_uri,
            }
        )

    def serving_settings(self) -> LoraServing:
        """What VllmService (EKS) and EcsVllmTask (ECS) embed to serve these adapters without a redeploy."""
        return lora_serving(self.args, bucket=self.bucket_name, region=self.region, read_policy_arn=self.read_policy_arn)


__all__ = [
    "DEFAULT_SYNC_IMAGE",
    "LORA_CACHE_DIR",
    "LoraServing",
    "LoraStore",
    "LoraStoreArgs",
    "SYNC_SCRIPT",
    "adapter_bytes_worst_case",
    "bucket_policy_document",
    "cache_size_gib",
    "default_max_cpu_loras",
    "lora_serving",
    "read_policy_document",
    "resolve_lora_engine",
    "validate_lora_store_args",
]
