"""The pack through its real gRPC analyzer server, called the way the Pulumi engine calls it
(tests/policies/grpc_harness.py): what the engine learns about the pack, that every policy reports over the wire
what it reports in-process, config and enforcement levels as the engine sends them, unknowns during preview, and
the offline runner agreeing with the server."""

from __future__ import annotations

import pytest
from pulumi_policy import EnforcementLevel, ResourceValidationPolicy

import test_pack as cases
from grpc_harness import UNKNOWN_STRING, Diagnostic, Provider, from_resource, res, secret
from policies import pack
from policy_builders import urn


def test_the_engine_sees_every_policy_with_its_level_and_schema(pack_server):
    info = pack_server.info
    assert info.name == pack.PACK_NAME and info.supportsConfig
    assert pack_server.policy_names == [p.name for p in pack.POLICIES]
    levels = {"mandatory": EnforcementLevel.MANDATORY, "advisory": EnforcementLevel.ADVISORY}
    for served, policy in zip(info.policies, pack.POLICIES):
        assert served.description == policy.description
        assert levels[{0: "advisory", 1: "mandatory"}[served.enforcementLevel]] == policy.enforcement_level
        kind = "POLICY_TYPE_RESOURCE" if isinstance(policy, ResourceValidationPolicy) else "POLICY_TYPE_STACK"
        assert type(served).DESCRIPTOR.fields_by_name["policy_type"].enum_type.values_by_number[served.policy_type].name == kind
    fit = next(p for p in info.policies if p.name == "gpu-memory-fit")
    assert fit.configSchema.properties["gpuMemoryUtilizationMax"]["default"] == 0.95


@pytest.mark.parametrize("name", sorted(cases.RESOURCE_CASES))
def test_resource_policies_over_the_wire(pack_server, name):
    type_, props, config, stack, message = cases.RESOURCE_CASES[name]
    resource = res(type_, "r", props, stack=stack)
    found = [d for d in pack_server.preview([resource], config={name: config} if config else None, stack=stack) if d.policy == name]
    level = "advisory" if name == "gpu-memory-fit-unverified" else "mandatory"
    assert found == [Diagnostic(name, level, message, resource.urn)]


@pytest.mark.parametrize("name", sorted(cases.STACK_CASES))
def test_stack_policies_over_the_wire(pack_server, name):
    resources, config, fragment = cases.STACK_CASES[name]
    pack_server.configure({name: config})
    found = [d for d in pack_server.analyze_stack([from_resource(r) for r in resources]) if d.policy == name]
    assert len(found) == 1 and fragment in found[0].message
    assert found[0].urn in ("", *[r.urn for r in resources])


def test_enforcement_levels_from_the_config_file(pack_server):
    volume = res("aws:ebs/volume:Volume", "v", {"size": 100})
    assert [d.level for d in pack_server.preview([volume], {"ebs-encryption": "advisory"}) if d.policy == "ebs-encryption"] == ["advisory"]
    assert [d for d in pack_server.preview([volume], {"ebs-encryption": {"enforcementLevel": "disabled"}}) if d.policy == "ebs-encryption"] == []
    assert {d.level for d in pack_server.preview([volume], {"all": "advisory"})} == {"advisory"}


def test_policy_config_reaches_the_policy(pack_server):
    props = {"model": cases.L70B, "gpu": "H100", "tp": 4, "gpu_memory_utilization": 0.9, "max_model_len": 8192}
    service = res("vllm-fleet:index:VllmService", "llm", props)
    assert [d for d in pack_server.preview([service]) if d.policy == "gpu-memory-fit"] == []
    assert [d.message for d in pack_server.preview([service], {"gpu-memory-fit": {"gpuMemoryUtilizationMax": 0.8}}) if d.policy == "gpu-memory-fit"] == [
        f"{cases.L70B}: gpu_memory_utilization 0.9 is above the policy maximum 0.8"
    ]


def test_numbers_arrive_as_floats_and_secrets_as_signatures(pack_server):
    """A protobuf Struct has no integers (GPU counts come as 4.0) and the engine keeps secrets wrapped."""
    leaky = cases.open_deployment(env=[{"name": "HF_TOKEN", "value": secret("hf_x")}])
    found = pack_server.preview([res(cases.DEP, "llm", leaky)])
    assert Diagnostic(
        "no-plaintext-secrets",
        "mandatory",
        "container 'vllm' sets HF_TOKEN as a plain value; take it from a Secret (valueFrom.secretKeyRef)",
        urn(cases.DEP, "llm"),
    ) in found
    assert [d for d in found if d.policy.startswith("gpu-memory-fit")] == []  # 4.0 GPUs, TP 4: sized and fits


def test_unknown_values_skip_the_policy_as_pulumi_does(pack_server):
    td = res("aws:ecs/taskDefinition:TaskDefinition", "task", {"family": "llm", "containerDefinitions": UNKNOWN_STRING})
    found = [d for d in pack_server.preview([td]) if d.policy == "pinned-images"]
    assert found == [
        Diagnostic(
            "pinned-images",
            "advisory",
            "can't run policy 'pinned-images' from policy pack 'vllm-fleet@v0.0.1' during preview: "
            "string value at .containerDefinitions can't be known during preview",
            td.urn,
        )
    ]


def test_the_offline_runner_reports_what_the_server_reports(pack_server):
    """`vllm-fleet preview` runs the policies in-process with its own unknown-value views; over the same stack the
    server (pulumi_policy's own proxies) reports the same violations and skips the same policies."""
    store = urn("vllm-fleet:index:LoraStore", "loras")
    recorded = [
        cases.res("vllm-fleet:index:LoraStore", "loras", {}),
        cases.res("aws:s3/bucket:Bucket", "loras-bucket", {"bucket": "acme-loras"}, parent=store),
        cases.res(cases.DEP, "llm", cases.open_deployment(env=[{"name": "HF_TOKEN", "value": "hf_x"}])),
        cases.res("aws:ecs/taskDefinition:TaskDefinition", "task", {"family": "llm", "containerDefinitions": "<unknown>"}),
        cases.res("aws:ebs/volume:Volume", "vol", {"size": 100, "encrypted": True}),
    ]
    offline = pack.run_policies(recorded)
    wire = [from_resource(r) for r in recorded]
    wire = [w if w.name != "task" else res(w.type, w.name, {**w.props, "containerDefinitions": UNKNOWN_STRING}) for w in wire]
    served = pack_server.preview(wire)
    reported = sorted((d.policy, d.level, d.message, d.urn) for d in served if not d.message.startswith("can't run"))
    assert reported == sorted((r.policy, r.enforcement_level, r.message, r.urn) for r in offline if r.enforcement_level != "skipped")
    skipped_served = sorted((d.policy, d.message.split(" during preview: ", 1)[1]) for d in served if d.message.startswith("can't run"))
    skipped_offline = sorted((r.policy, r.message.removeprefix("can't run during preview: ")) for r in offline if r.enforcement_level == "skipped")
    assert skipped_served == skipped_offline and skipped_offline


def test_a_provider_reaches_resource_policies(pack_server):
    """The engine sends each resource's provider; the pack must accept it (region-aware policies read it)."""
    volume = res("aws:ebs/volume:Volume", "v", {"size": 100}, provider=Provider("pulumi:providers:aws", "default_7_12_0", {"region": "eu-west-1"}))
    assert [d.policy for d in pack_server.analyze(volume)] == ["ebs-encryption"]


def test_the_harness_leaves_no_server_behind():
    from grpc_harness import PackServer

    server = PackServer()
    assert server.proc.poll() is None
    server.close()
    assert server.proc.returncode is not None


# ---- the gaps the engine's view showed ---------------------------------------------------------------------
PAB = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
ALL_ON = {"blockPublicAcls": True, "blockPublicPolicy": True, "ignorePublicAcls": True, "restrictPublicBuckets": True}


@pytest.mark.parametrize("flag", [*sorted(ALL_ON), "unset"])
def test_a_public_access_block_with_any_setting_off_is_reported(pack_server, flag):
    settings = {k: v for k, v in ALL_ON.items() if k != "restrictPublicBuckets"} if flag == "unset" else {**ALL_ON, flag: False}
    off = "restrictPublicBuckets" if flag == "unset" else flag
    bucket = res("aws:s3/bucket:Bucket", "store", {"bucket": "acme-store"})
    block = res(PAB, "store-pab", {"bucket": "acme-store", **settings})
    found = [d for d in pack_server.preview([bucket, block]) if d.policy == "s3-no-public-access"]
    assert found == [
        Diagnostic(
            "s3-no-public-access",
            "mandatory",
            f"S3 public access block 'store-pab' for bucket 'acme-store' leaves {off} off (false or unset); set all four true",
            block.urn,
        )
    ]
    # and alone, for a bucket that is not in the stack
    assert [d.urn for d in pack_server.preview([block]) if d.policy == "s3-no-public-access"] == [block.urn]


def test_a_full_public_access_block_passes(pack_server):
    bucket = res("aws:s3/bucket:Bucket", "store", {"bucket": "acme-store"})
    block = res(PAB, "store-pab", {"bucket": "acme-store", **ALL_ON})
    assert [d for d in pack_server.preview([bucket, block]) if d.policy == "s3-no-public-access"] == []


GFD, ITYPE, KGPU = "nvidia.com/gpu.product", "node.kubernetes.io/instance-type", "karpenter.k8s.aws/instance-gpu-name"
A10G_LABELS = {GFD: "NVIDIA-A10G", ITYPE: "g5.12xlarge", KGPU: "a10g"}
H100_LABELS = {GFD: "NVIDIA-H100-80GB-HBM3", ITYPE: "p5.48xlarge", KGPU: "h100"}


def server_on(labels: dict, *, in_affinity: bool) -> dict:
    from policy_builders import container, deployment, pod_spec

    vllm = container(args=[cases.L70B, "--tensor-parallel-size", "4", "--max-model-len", "8192"], gpus=4)
    if not in_affinity:
        return deployment(pod_spec(vllm, node_selector=labels))
    exprs = [{"key": k, "operator": "In", "values": [v]} for k, v in labels.items()]
    required = {"nodeSelectorTerms": [{"matchExpressions": exprs}]}
    return deployment(pod_spec(vllm, affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": required}}))


@pytest.mark.parametrize("in_affinity", [False, True], ids=["nodeSelector", "node-affinity"])
@pytest.mark.parametrize("label", [GFD, ITYPE, KGPU])
def test_gpu_fit_reads_the_labels_clusters_use(pack_server, label, in_affinity):
    """70B at TP 4 does not fit four A10G and fits four H100: the pack must tell which from any of the labels."""
    import test_gpu_memory_fit as fitcases

    on_a10g = res(cases.DEP, "llm", server_on({label: A10G_LABELS[label]}, in_affinity=in_affinity))
    found = [d for d in pack_server.preview([on_a10g]) if d.policy.startswith("gpu-memory-fit")]
    assert found == [
        Diagnostic("gpu-memory-fit", "mandatory", fitcases.misfit(cases.L70B, "A10G", tp=4, max_model_len=8192), on_a10g.urn)
    ]
    on_h100 = res(cases.DEP, "llm", server_on({label: H100_LABELS[label]}, in_affinity=in_affinity))
    assert [d for d in pack_server.preview([on_h100]) if d.policy.startswith("gpu-memory-fit")] == []


def test_a_mig_slice_is_not_sized_as_the_whole_gpu(pack_server):
    sliced = res(cases.DEP, "llm", server_on({GFD: "NVIDIA-H100-80GB-HBM3-MIG-1g.10gb"}, in_affinity=True))
    assert [(d.policy, d.level) for d in pack_server.preview([sliced]) if d.policy.startswith("gpu-memory-fit")] == [
        ("gpu-memory-fit-unverified", "advisory")
    ]
