"""components/lora_store.py: the store's resources under the mock runtime, its policies, the serving
contract for VllmService / EcsVllmTask (validated as Kubernetes and ECS objects), and the sync sidecar's
script run for real against a fake `aws` and `curl`."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import botocore.session
import kubernetes_validate
import pytest
from botocore.validate import ParamValidator

from components.lora_store import (
    DEFAULT_SYNC_IMAGE,
    LORA_CACHE_DIR,
    SYNC_SCRIPT,
    LoraStore,
    LoraStoreArgs,
    bucket_policy_document,
    cache_size_gib,
    default_max_cpu_loras,
    lora_serving,
    read_policy_document,
)
from components.sizing.errors import InputError
from components.vllm import VllmEngine
from stacks.offline import run_offline

BASE = "meta-llama/Llama-3.1-8B-Instruct"
KEY = "arn:aws:kms:us-east-1:123456789012:key/abcd"
BUCKET_ARN = "arn:aws:s3:::lora-bucket"


def build(**kw):
    return run_offline(lambda: LoraStore("lora", LoraStoreArgs(**{"base_model": BASE, **kw})))


def policy(run, type_, name) -> dict:
    return json.loads(run.one(type_, name).inputs["policy"])


# ----- resources -----------------------------------------------------------------------------------------

EXPECTED = [
    ("vllm-fleet:index:LoraStore", "lora"),
    ("aws:kms/key:Key", "lora-key"),
    ("aws:s3/bucket:Bucket", "lora-bucket"),
    ("aws:s3/bucketOwnershipControls:BucketOwnershipControls", "lora-ownership"),
    ("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", "lora-public-access-block"),
    ("aws:s3/bucketVersioning:BucketVersioning", "lora-versioning"),
    ("aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration", "lora-encryption"),
    ("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration", "lora-lifecycle"),
    ("aws:s3/bucketPolicy:BucketPolicy", "lora-policy"),
    ("aws:iam/policy:Policy", "lora-read"),
]


def test_resource_count_does_not_grow_with_tenants():
    small = build(tenants=10)
    large = build(tenants=2000, adapters_per_tenant=3)
    listing = lambda run: sorted((r.type, r.name) for r in run.resources)  # noqa: E731
    assert listing(small) == listing(large) == sorted(EXPECTED)
    component = small.one("vllm-fleet:index:LoraStore")
    assert all(r.parent == component.urn for r in small.resources if r is not component)
    # tenants only change sizing figures the policies can read
    assert small.one("vllm-fleet:index:LoraStore").inputs["max_cpu_loras"] == 10
    assert large.one("vllm-fleet:index:LoraStore").inputs["max_cpu_loras"] == 64


def test_bucket_is_private_versioned_and_kms_encrypted():
    run = build()
    key = run.one("aws:kms/key:Key").inputs
    assert key["enableKeyRotation"] is True and key["deletionWindowInDays"] == 30
    assert run.one("aws:s3/bucket:Bucket").inputs["forceDestroy"] is False
    pab = run.one("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock").inputs
    assert {k: pab[k] for k in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")} == {
        "blockPublicAcls": True, "blockPublicPolicy": True, "ignorePublicAcls": True, "restrictPublicBuckets": True,
    }
    assert run.one("aws:s3/bucketOwnershipControls:BucketOwnershipControls").inputs["rule"] == {"objectOwnership": "BucketOwnerEnforced"}
    assert run.one("aws:s3/bucketVersioning:BucketVersioning").inputs["versioningConfiguration"] == {"status": "Enabled"}
    sse = run.one("aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration").inputs["rules"]
    assert sse == [{
        "applyServerSideEncryptionByDefault": {"sseAlgorithm": "aws:kms", "kmsMasterKeyId": "arn:aws:kms:us-east-1:123456789012:lora-key"},
        "bucketKeyEnabled": True,
    }]
    rules = run.one("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration").inputs["rules"]
    assert rules == [
        {"id": "expire-noncurrent-versions", "status": "Enabled", "filter": {"prefix": ""},
         "noncurrentVersionExpiration": {"noncurrentDays": 30}, "expiration": {"expiredObjectDeleteMarker": True}},
        {"id": "abort-incomplete-multipart-uploads", "status": "Enabled", "filter": {"prefix": ""},
         "abortIncompleteMultipartUpload": {"daysAfterInitiation": 7}},
    ]
    assert build(noncurrent_version_days=90).one(
        "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration").inputs["rules"][0]["noncurrentVersionExpiration"] == {"noncurrentDays": 90}


def test_bucket_policy_denies_plain_http_and_unencrypted_puts():
    doc = policy(build(), "aws:s3/bucketPolicy:BucketPolicy", "lora-policy")
    by_sid = {s["Sid"]: s for s in doc["Statement"]}
    assert sorted(by_sid) == ["DenyInsecureTransport", "DenyOldTls", "DenyPutWithOtherKmsKey", "DenyPutWithoutSseKms"]
    assert by_sid["DenyInsecureTransport"]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert by_sid["DenyInsecureTransport"]["Effect"] == "Deny" and by_sid["DenyInsecureTransport"]["Principal"] == "*"
    assert by_sid["DenyPutWithoutSseKms"]["Condition"] == {"StringNotEquals": {"s3:x-amz-server-side-encryption": "aws:kms"}}
    assert by_sid["DenyPutWithOtherKmsKey"]["Condition"] == {
        "StringNotEqualsIfExists": {"s3:x-amz-server-side-encryption-aws-kms-key-id": "arn:aws:kms:us-east-1:123456789012:lora-key"}
    }


def test_writers_only_when_asked():
    doc = bucket_policy_document(BUCKET_ARN, KEY, ["arn:aws:iam::123456789012:role/ci-push"])
    last = doc["Statement"][-1]
    assert last == {
        "Sid": "DenyWritesExceptWriters",
        "Effect": "Deny",
        "Principal": "*",
        "Action": ["s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion", "s3:AbortMultipartUpload"],
        "Resource": f"{BUCKET_ARN}/*",
        "Condition": {"ArnNotLike": {"aws:PrincipalArn": ["arn:aws:iam::123456789012:role/ci-push"]}},
    }
    run = build(writer_principal_arns=["arn:aws:iam::123456789012:role/ci-push"])
    assert policy(run, "aws:s3/bucketPolicy:BucketPolicy", "lora-policy")["Statement"][-1]["Sid"] == "DenyWritesExceptWriters"


def test_read_policy_is_read_only_and_scoped():
    run = build(reader_role_names=["vllm-task-role", "vllm-pod-identity"])
    doc = policy(run, "aws:iam/policy:Policy", "lora-read")
    bucket = "arn:aws:s3:us-east-1:123456789012:lora-bucket"
    assert doc == read_policy_document(bucket, "arn:aws:kms:us-east-1:123456789012:lora-key", "us-east-1")
    actions = {s["Action"] for s in doc["Statement"]}
    assert actions == {"s3:ListBucket", "s3:GetObject", "kms:Decrypt"}  # nothing that writes
    listing = next(s for s in doc["Statement"] if s["Action"] == "s3:ListBucket")
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["adapters/", "adapters/*"]}}
    get = next(s for s in doc["Statement"] if s["Action"] == "s3:GetObject")
    assert get["Resource"] == [f"{bucket}/adapters/*", f"{bucket}/manifest.json"]
    decrypt = next(s for s in doc["Statement"] if s["Action"] == "kms:Decrypt")
    assert decrypt["Condition"] == {"StringEquals": {"kms:ViaService": "s3.us-east-1.amazonaws.com"}}
    attachments = run.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
    assert sorted((a.name, a.inputs["role"], a.inputs["policyArn"]) for a in attachments) == [
        ("lora-read-0", "vllm-task-role", "arn:aws:iam:us-east-1:123456789012:lora-read"),
        ("lora-read-1", "vllm-pod-identity", "arn:aws:iam:us-east-1:123456789012:lora-read"),
    ]


def test_bring_your_own_key():
    run = build(kms_key_arn=KEY, bucket_name="acme-lora-adapters")
    assert run.of_type("aws:kms/key:Key") == []
    sse = run.one("aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration").inputs["rules"]
    assert sse[0]["applyServerSideEncryptionByDefault"]["kmsMasterKeyId"] == KEY
    assert run.one("aws:s3/bucket:Bucket").inputs["bucket"] == "acme-lora-adapters"
    assert policy(run, "aws:iam/policy:Policy", "lora-read")["Statement"][2]["Resource"] == KEY


def test_outputs():
    captured = {}

    def program():
        store = LoraStore("lora", LoraStoreArgs(base_model=BASE))
        captured["store"] = store
        import pulumi

        pulumi.export("bucket", store.bucket_name)
        pulumi.export("policy", store.read_policy_arn)
        pulumi.export("uri", store.adapters_uri)
        pulumi.export("key", store.kms_key_arn)

    run = run_offline(program)
    assert run.outputs == {
        "bucket": "lora-bucket-bucket",
        "policy": "arn:aws:iam:us-east-1:123456789012:lora-read",
        "uri": "s3://lora-bucket-bucket/adapters/",
        "key": "arn:aws:kms:us-east-1:123456789012:lora-key",
    }
    assert captured["store"].manifest_key == "manifest.json"


# ----- validation ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw, field, message",
    [
        ({"max_loras": 8, "max_cpu_loras": 4}, "max_cpu_loras", "4 is below max_loras 8; vLLM needs max_cpu_loras >= max_loras"),
        ({"max_loras": 0}, "max_loras", "0; expected 1 to 256 adapters per GPU"),
        ({"tenants": 0}, "tenants", "0; expected 1 to 1,000,000"),
        ({"bucket_name": "Acme_Bucket"}, "bucket_name", "'Acme_Bucket' is not an S3 bucket name (3-63 lowercase letters, digits, '.', '-')"),
        ({"noncurrent_version_days": 0}, "noncurrent_version_days", "0; expected 1 to 3650 days"),
        ({"sync_interval_seconds": 1}, "sync_interval_seconds", "1; expected 5 to 3600 seconds"),
        ({"full_resync_seconds": 10}, "full_resync_seconds", "10 is shorter than sync_interval_seconds 30"),
        ({"adapter_size_mib": -1}, "adapter_size_mib", "-1.0; must be positive"),
        ({"force_destroy": True, "retain_on_delete": True}, "retain_on_delete",
         "cannot be combined with force_destroy: keep the adapters (prod) or let destroy delete them (dev)"),
    ],
)
def test_invalid_args(kw, field, message):
    with pytest.raises(InputError) as err:
        build(**kw)
    assert (err.value.field, err.value.message) == (field, message)


def test_invalid_args_from_dict_and_unknown_model():
    with pytest.raises(InputError) as err:
        run_offline(lambda: LoraStore("lora", {"max_lora_rank": 24}))
    assert err.value.field == "max_lora_rank"
    assert err.value.message.startswith("got 24; input should be 8, 16, 32, 64, 128, 256, 320 or 512")
    with pytest.raises(InputError) as err:
        build(base_model="acme/unknown-model")
    assert err.value.field == "base_model"
    with pytest.raises(ValueError, match="must be pinned"):
        LoraStoreArgs(sidecar_image="amazon/aws-cli:latest")


# ----- sizing rules --------------------------------------------------------------------------------------


@pytest.mark.parametrize("max_loras, total, expected", [(8, 10, 10), (8, 2000, 64), (8, 4, 8), (1, 1, 1), (64, 100, 100)])
def test_default_max_cpu_loras(max_loras, total, expected):
    assert default_max_cpu_loras(max_loras, total) == expected


@pytest.mark.parametrize(
    "total, mib, expected",
    [(10, 80, 1), (100, 80, 10), (2000, 80, 196), (2000, 8, 20), (1, 0.001, 1)],
)
def test_cache_size_gib(total, mib, expected):
    assert cache_size_gib(total, mib * 1024**2) == expected


def test_cache_is_sized_from_the_model_worst_case():
    # Llama-3.1-8B, rank 16 on q,k,v,o,gate,up,down: 16 x 81,920 x 32 layers x 2 bytes = 80 MiB per adapter.
    serving = lora_serving(LoraStoreArgs(base_model=BASE, tenants=2000), bucket="b", region="us-east-1")
    assert serving.cache_size_gib == 196
    assert lora_serving(LoraStoreArgs(base_model=BASE, tenants=2000, adapter_size_mib=8), bucket="b", region="r").cache_size_gib == 20


# ----- serving contract ----------------------------------------------------------------------------------


def serving(**kw):
    return lora_serving(LoraStoreArgs(**{"base_model": BASE, "tenants": 100, **kw}), bucket="acme-lora", region="us-east-1",
                        read_policy_arn="arn:aws:iam::123456789012:policy/lora-read")


def test_engine_updates_and_environment_match_vllm_engine():
    s = serving(max_loras=4, max_lora_rank=32)
    assert s.engine_updates == {"enable_lora": True, "max_loras": 4, "max_lora_rank": 32, "max_cpu_loras": 32}
    engine = s.apply_to_engine(VllmEngine(model=BASE))
    assert engine.engine.enable_lora and engine.engine.max_lora_rank == 32
    args = engine.args()
    assert args[args.index("--max-loras") + 1] == "4"
    assert args[args.index("--max-lora-rank") + 1] == "32"
    assert args[args.index("--max-cpu-loras") + 1] == "32"
    env = engine.environment()
    # what VllmEngine sets for the resolver is exactly what the contract says the vLLM container needs
    assert {k: env[k] for k in s.environment} == s.environment == {
        "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
        "VLLM_PLUGINS": "lora_filesystem_resolver",
        "VLLM_LORA_RESOLVER_CACHE_DIR": LORA_CACHE_DIR,
    }


def test_runai_streamer_cannot_resolve_adapters():
    engine = VllmEngine(model=BASE, load_format="runai_streamer", model_uri="s3://weights/llama")
    with pytest.raises(InputError) as err:
        serving().apply_to_engine(engine)
    assert err.value.field == "load_format"


def test_kubernetes_pod_with_the_sidecar_is_valid():
    s = serving()
    sidecar = s.kubernetes_init_container(api_key_secret=("vllm-api-key", "key"))
    assert sidecar["image"] == DEFAULT_SYNC_IMAGE and ":" in sidecar["image"] and not sidecar["image"].endswith(":latest")
    assert sidecar["restartPolicy"] == "Always"
    # hardened like the vLLM container: pull policy, requests = limits (CPU too), non-root and read-only
    assert sidecar["imagePullPolicy"] == "Always"
    assert sidecar["resources"] == {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"cpu": "250m", "memory": "512Mi"}}
    assert sidecar["securityContext"] == {
        "runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532, "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
    }
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in sidecar["env"]}
    assert env["LORA_BUCKET"] == "acme-lora" and env["LORA_DIR"] == LORA_CACHE_DIR and env["LORA_PREFIX"] == "adapters/"
    assert env["VLLM_API_KEY"] == {"secretKeyRef": {"name": "vllm-api-key", "key": "key"}}
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "vllm"},
        "spec": {
            "securityContext": {"fsGroup": 65532},
            "initContainers": [sidecar],
            "containers": [{
                "name": "vllm",
                "image": "vllm/vllm-openai:v0.29.0",
                "env": [{"name": k, "value": v} for k, v in s.environment.items()],
                "volumeMounts": [s.kubernetes_vllm_volume_mount()],
            }],
            "volumes": s.kubernetes_volumes(),
        },
    }
    kubernetes_validate.validate(pod, "1.33", strict=True)
    assert s.kubernetes_volumes()[0] == {"name": "lora-adapters", "emptyDir": {"sizeLimit": "10Gi"}}
    assert s.kubernetes_vllm_volume_mount() == {"name": "lora-adapters", "mountPath": "/models/loras", "readOnly": True}


def test_ecs_task_with_the_sidecar_is_a_valid_register_task_definition_request():
    s = serving()
    sidecar = s.ecs_container_definition(
        api_key_secret_arn="arn:aws:secretsmanager:us-east-1:123456789012:secret:vllm-key",
        log_configuration={"logDriver": "awslogs", "options": {"awslogs-group": "vllm", "awslogs-region": "us-east-1",
                                                                "awslogs-stream-prefix": "lora-sync"}},
    )
    assert sidecar["essential"] is False and sidecar["restartPolicy"] == {"enabled": True, "restartAttemptPeriod": 60}
    assert sidecar["entryPoint"] == ["/bin/bash", "-c"] and sidecar["command"] == [SYNC_SCRIPT]
    request = {
        "family": "vllm",
        "networkMode": "awsvpc",
        "requiresCompatibilities": ["EC2"],
        "containerDefinitions": [
            {
                "name": "vllm",
                "image": "vllm/vllm-openai:v0.29.0",
                "essential": True,
                "memory": 30000,
                "environment": [{"name": k, "value": v} for k, v in s.environment.items()],
                "mountPoints": [s.ecs_vllm_mount_point()],
                "dependsOn": s.ecs_vllm_depends_on(),
            },
            sidecar,
        ],
        "volumes": s.ecs_volumes(),
    }
    model = botocore.session.get_session().get_service_model("ecs").operation_model("RegisterTaskDefinition").input_shape
    report = ParamValidator().validate(request, model)
    assert not report.has_errors(), report.generate_report()


def test_ecs_sidecar_from_the_component_outputs():
    def program():
        import pulumi

        store = LoraStore("lora", LoraStoreArgs(base_model=BASE))
        pulumi.export("sidecar", store.serving_settings().ecs_container_definition_output())

    run = run_offline(program)
    env = {e["name"]: e["value"] for e in run.outputs["sidecar"]["environment"]}
    assert env["LORA_BUCKET"] == "lora-bucket-bucket" and env["AWS_REGION"] == "us-east-1"
    assert run.outputs["sidecar"]["name"] == "lora-sync"


# ----- the sidecar's script, run for real ---------------------------------------------------------------

FAKE_AWS = textwrap.dedent(
    """\
    #!%s
    # A stand-in for the AWS CLI: s3://BUCKET/... is the folder $FAKE_S3/BUCKET/... (same sync semantics:
    # newer or different files are copied; --delete removes files, never folders).
    import filecmp, os, shutil, sys
    args = sys.argv[1:]
    root = os.environ["FAKE_S3"]
    if args[:2] == ["s3", "sync"]:
        src = os.path.join(root, args[2][len("s3://"):])
        dst = args[3]
        wanted = set()
        for base, _dirs, files in os.walk(src):
            for f in files:
                rel = os.path.relpath(os.path.join(base, f), src)
                wanted.add(rel)
                target = os.path.join(dst, rel)
                if not os.path.exists(target) or not filecmp.cmp(os.path.join(src, rel), target, shallow=False):
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    shutil.copyfile(os.path.join(src, rel), target)
        if "--delete" in args:
            for base, _dirs, files in os.walk(dst):
                for f in files:
                    rel = os.path.relpath(os.path.join(base, f), dst)
                    if rel not in wanted:
                        os.remove(os.path.join(base, f))
        sys.exit(0)
    if args[:2] == ["s3api", "head-object"]:
        key = os.path.join(root, args[args.index("--bucket") + 1], args[args.index("--key") + 1])
        if not os.path.exists(key):
            sys.exit(254)
        print(open(key).read().strip())
        sys.exit(0)
    sys.exit(2)
    """
)

FAKE_CURL = textwrap.dedent(
    """\
    #!/bin/bash
    echo "$@" >> "$FAKE_CURL_LOG"
    """
)


@pytest.fixture
def sidecar_env(tmp_path):
    if shutil.which("bash") is None:
        pytest.skip("bash is needed to run the sidecar script")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (("aws", FAKE_AWS % sys.executable), ("curl", FAKE_CURL)):
        path = bin_dir / name
        path.write_text(body)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    s3 = tmp_path / "s3"
    lora_dir = tmp_path / "loras"
    lora_dir.mkdir()
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "FAKE_S3": str(s3),
        "FAKE_CURL_LOG": str(tmp_path / "curl.log"),
        "LORA_SYNC_ONESHOT": "1",
        "VLLM_API_KEY": "sk-test",
    }
    env.update({k: v for k, v in serving().sidecar_environment().items()})
    env.update({"LORA_DIR": str(lora_dir), "LORA_BUCKET": "acme-lora"})
    return env, s3 / "acme-lora", lora_dir, tmp_path / "curl.log"


def _publish(bucket: Path, tenant: str, adapter: str, rev: str, generation: str):
    folder = bucket / "adapters" / tenant / adapter / rev
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "rev": rev}))
    (folder / "adapter_model.safetensors").write_bytes(rev.encode())
    (bucket / "adapters" / tenant / adapter / "CURRENT").write_text(rev)
    (bucket / "adapters" / ".generation").write_text(generation)


def _round(env):
    result = subprocess.run(["bash", "-c", SYNC_SCRIPT], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_sync_script_links_replaces_and_removes(sidecar_env):
    env, bucket, lora_dir, curl_log = sidecar_env
    _publish(bucket, "acme", "legal", "aaaa1111", "g1")
    _publish(bucket, "globex", "sales", "bbbb2222", "g2")

    out = _round(env)
    assert "lora-sync: acme--legal -> aaaa1111" in out
    assert os.readlink(lora_dir / "acme--legal") == ".store/acme/legal/aaaa1111"
    assert json.loads((lora_dir / "acme--legal" / "adapter_config.json").read_text())["rev"] == "aaaa1111"
    assert (lora_dir / "globex--sales" / "adapter_model.safetensors").read_bytes() == b"bbbb2222"
    assert (lora_dir / ".synced").exists()
    assert not curl_log.exists()  # nothing was loaded before: nothing to unload

    # A new revision of acme--legal: the link moves atomically, vLLM is told to drop the old one, the old files go.
    shutil.rmtree(bucket / "adapters" / "acme" / "legal" / "aaaa1111")
    _publish(bucket, "acme", "legal", "cccc3333", "g3")
    _round(env)
    assert os.readlink(lora_dir / "acme--legal") == ".store/acme/legal/cccc3333"
    assert not (lora_dir / ".store" / "acme" / "legal" / "aaaa1111").exists()
    calls = curl_log.read_text().splitlines()
    assert len(calls) == 1
    assert "http://127.0.0.1:8000/v1/unload_lora_adapter" in calls[0]
    assert "Authorization: Bearer sk-test" in calls[0]
    assert '{"lora_name": "acme--legal"}' in calls[0]

    # Removed from the store: the link disappears and vLLM unloads it.
    shutil.rmtree(bucket / "adapters" / "globex")
    (bucket / "adapters" / ".generation").write_text("g4")
    out = _round(env)
    assert "lora-sync: removed globex--sales" in out
    assert not os.path.lexists(lora_dir / "globex--sales")
    assert not (lora_dir / ".store" / "globex").exists()
    assert '{"lora_name": "globex--sales"}' in curl_log.read_text().splitlines()[-1]
    assert sorted(p.name for p in lora_dir.iterdir()) == [".store", ".synced", "acme--legal"]


def test_sync_script_ignores_a_revision_not_fully_there(sidecar_env):
    env, bucket, lora_dir, _ = sidecar_env
    (bucket / "adapters" / "acme" / "legal").mkdir(parents=True)
    (bucket / "adapters" / "acme" / "legal" / "CURRENT").write_text("dddd4444")  # files not uploaded (yet)
    _round(env)
    assert not os.path.lexists(lora_dir / "acme--legal")


@pytest.mark.parametrize("retain", [True, False])
def test_bucket_and_key_retained_on_delete_when_asked(monkeypatch, retain):
    """The mock runtime does not record resource options: capture what the component passes to the bucket and key."""
    import pulumi_aws as aws

    seen: dict[str, object] = {}
    for module, cls_name in ((aws.s3, "Bucket"), (aws.kms, "Key")):
        original = getattr(module, cls_name)

        class Spy(original):  # type: ignore[misc, valid-type]
            def __init__(self, name, *args, opts=None, **kw):
                seen[name] = opts.retain_on_delete if opts else None
                super().__init__(name, *args, opts=opts, **kw)

        monkeypatch.setattr(module, cls_name, Spy)
    run = build(retain_on_delete=retain)
    expected = True if retain else None
    assert seen == {"lora-key": expected, "lora-bucket": expected}
    props = run.one("vllm-fleet:index:LoraStore").inputs
    assert (props["retain_on_delete"], props["force_destroy"]) == (retain, False)
