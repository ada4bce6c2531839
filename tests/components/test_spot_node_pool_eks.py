"""components/spot_node_pool.py on EKS (Karpenter and managed node groups) and its ECS dispatch: pure rules
table-driven, the recorded custom resources and node groups, and the Karpenter objects against the upstream CRDs."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from components.gpu_cluster import GpuCluster, GpuClusterArgs
from components.network import NetworkArgs
from components.sizing.errors import InputError
from components.sizing.instances import get_instance
from components.spot_node_pool import (
    SpotNodePool,
    SpotNodePoolArgs,
    capacity_types,
    resolve_instance_types,
    root_volume_gib,
    smallest,
)
from stacks.offline import OfflineRun, run_offline
from stacks.render_k8s import kubernetes_manifests

NODE_POOL = "kubernetes:karpenter.sh/v1:NodePool"
NODE_CLASS = "kubernetes:karpenter.k8s.aws/v1:EC2NodeClass"
MNG = "eks:index:ManagedNodeGroup"


def build(cluster: dict | None = None, **pool: Any) -> tuple[OfflineRun, SpotNodePool]:
    made: dict[str, SpotNodePool] = {}

    def program():
        c = GpuCluster("gpu", GpuClusterArgs(**(cluster or {})))
        made["pool"] = SpotNodePool("h100", SpotNodePoolArgs(cluster=c, **pool))

    return run_offline(program), made["pool"]


@pytest.fixture(scope="module")
def karpenter() -> tuple[OfflineRun, SpotNodePool]:
    return build(instance_types=["p5.48xlarge"], model_weights_gib=140, max_nodes=3)


# ----- pure rules ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "weights, expected",
    [
        (0, 100),  # floor: image + OS + logs never fit in less
        (15, 100),  # 8B: 2 x 15 + 30 + 20 = 80 -> 100
        (25.5, 110),  # 2 x 25.5 + 50 = 101 -> rounded up to 110
        (131.4, 320),  # 70B bf16: 312.8 -> 320
        (756, 1570),  # 405B bf16: 1562 -> 1570
    ],
)
def test_root_volume_gib(weights, expected):
    assert root_volume_gib(weights) == expected
    assert root_volume_gib(weights) >= 2 * weights + 50


def test_mixed_gpus_refused():
    with pytest.raises(InputError) as err:
        resolve_instance_types(["g5.xlarge", "g6.xlarge", "g5.2xlarge"])
    assert str(err.value) == (
        "instance_types: all instance types must have the same GPU, got A10G: g5.xlarge, g5.2xlarge; L4: g6.xlarge; "
        "use one SpotNodePool per GPU type"
    )


@pytest.mark.parametrize(
    "types, message",
    [
        ([], "instance_types: give at least one GPU instance type, e.g. ['g6e.xlarge']"),
        (["g5.xlarge", "g5.xlarge"], "instance_types: duplicate instance types in ['g5.xlarge', 'g5.xlarge']"),
    ],
)
def test_instance_type_errors(types, message):
    with pytest.raises(InputError) as err:
        resolve_instance_types(types)
    assert str(err.value) == message


def test_unknown_instance_type_names_the_field():
    with pytest.raises(InputError) as err:
        resolve_instance_types(["m7i.large"])
    assert err.value.field == "instance_types"
    assert "unknown instance type 'm7i.large'" in str(err.value)


def test_smallest_is_the_instance_pods_must_fit():
    found = resolve_instance_types(["g5.12xlarge", "g5.2xlarge", "g5.xlarge"])
    assert smallest(found).name == "g5.xlarge"


@pytest.mark.parametrize("spot, expected", [(True, ["spot", "on-demand"]), (False, ["on-demand"])])
def test_capacity_types(spot, expected):
    assert capacity_types(spot) == expected


# ----- Karpenter -------------------------------------------------------------------------------------------


def test_node_pool_spot_first_with_on_demand_fallback(karpenter):
    run, _ = karpenter
    spec = run.one(NODE_POOL).inputs["spec"]
    reqs = {r["key"]: r for r in spec["template"]["spec"]["requirements"]}
    assert reqs["karpenter.sh/capacity-type"] == {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["spot", "on-demand"]}
    assert reqs["node.kubernetes.io/instance-type"]["values"] == ["p5.48xlarge"]
    assert reqs["kubernetes.io/arch"]["values"] == ["amd64"]


def test_node_pool_taint_labels_limits_disruption(karpenter):
    run, pool = karpenter
    res = run.one(NODE_POOL).inputs
    spec = res["spec"]
    assert res["metadata"]["name"] == "h100"
    assert spec["template"]["spec"]["taints"] == [{"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}]
    assert spec["template"]["metadata"]["labels"] == {"vllm-fleet/gpu": "H100-80GB", "vllm-fleet/node-pool": "h100"}
    assert spec["template"]["spec"]["nodeClassRef"] == {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "h100"}
    assert spec["limits"] == {"nvidia.com/gpu": 24}  # 3 nodes x 8 GPUs
    assert spec["disruption"] == {"consolidationPolicy": "WhenEmpty", "consolidateAfter": "10m", "budgets": [{"nodes": "1"}]}
    assert pool.node_selector == {"vllm-fleet/gpu": "H100-80GB"}
    assert pool.tolerations == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def test_node_class(karpenter):
    run, _ = karpenter
    spec = run.one(NODE_CLASS).inputs["spec"]
    # A pinned EKS AMI release (node_images.json), not al2023@latest: every AMI release would replace every GPU node.
    assert spec["amiSelectorTerms"] == [{"alias": "al2023@v20260818"}]
    assert spec["metadataOptions"] == {
        "httpEndpoint": "enabled",
        "httpProtocolIPv6": "disabled",
        "httpPutResponseHopLimit": 1,
        "httpTokens": "required",
    }
    root = spec["blockDeviceMappings"][0]
    assert root["deviceName"] == "/dev/xvda" and root["rootVolume"] is True
    assert root["ebs"]["volumeSize"] == "330Gi"  # 2 x 140 + 30 + 20
    assert (root["ebs"]["volumeType"], root["ebs"]["encrypted"]) == ("gp3", True)
    assert spec["subnetSelectorTerms"] == [{"tags": {"karpenter.sh/discovery": "gpu"}}]
    assert spec["securityGroupSelectorTerms"] == [{"tags": {"karpenter.sh/discovery": "gpu"}}]
    assert spec["role"] == "gpu-karpenter-node"
    assert spec["instanceStorePolicy"] == "RAID0"  # p5 has local NVMe


def test_dev_may_follow_latest_and_props_carry_the_driver(karpenter):
    run, _ = build(cluster={"environment": "dev"}, instance_types=["p5.48xlarge"], ami_version="latest")
    assert run.one(NODE_CLASS).inputs["spec"]["amiSelectorTerms"] == [{"alias": "al2023@latest"}]
    props = karpenter[0].one("vllm-fleet:index:SpotNodePool").inputs
    assert (props["ami_version"], props["nvidia_driver_branch"]) == ("v20260818", 580)


def test_karpenter_objects_use_the_cluster_provider(karpenter):
    run, _ = karpenter
    provider = run.one("pulumi:providers:kubernetes").urn
    assert all(run.one(t).provider.startswith(provider) for t in (NODE_POOL, NODE_CLASS))


def test_component_props_and_attributes(karpenter):
    run, pool = karpenter
    props = run.one("vllm-fleet:index:SpotNodePool").inputs
    assert props["gpu"] == "H100-80GB"
    assert props["capacity_types"] == ["spot", "on-demand"]
    assert props["provisioner"] == "karpenter"
    assert props["root_volume_gib"] == 330
    assert (pool.platform, pool.gpus_per_node, pool.instance_types) == ("eks", 8, ["p5.48xlarge"])
    assert pool.gpu.name == "H100-80GB" and pool.instance == get_instance("p5.48xlarge")
    assert pool.capacity_provider_name is None


def test_on_demand_only_and_no_raid_without_nvme():
    run, _ = build(instance_types=["p5.48xlarge"], spot=False, instance_store_raid0=False)
    reqs = {r["key"]: r for r in run.one(NODE_POOL).inputs["spec"]["template"]["spec"]["requirements"]}
    assert reqs["karpenter.sh/capacity-type"]["values"] == ["on-demand"]
    assert "instanceStorePolicy" not in run.one(NODE_CLASS).inputs["spec"]


def test_existing_vpc_subnets_selected_by_id():
    network = NetworkArgs(vpc_id="vpc-1", private_subnet_ids=["subnet-a", "subnet-b", "subnet-c"])
    run, _ = build(cluster={"network": network}, instance_types=["g6e.xlarge"])
    assert run.one(NODE_CLASS).inputs["spec"]["subnetSelectorTerms"] == [{"id": "subnet-a"}, {"id": "subnet-b"}, {"id": "subnet-c"}]


def test_karpenter_resources_pass_the_crds(tmp_path, karpenter, validate_crs):
    run, _ = karpenter
    docs = [m for m in kubernetes_manifests(run) if m["kind"] in ("NodePool", "EC2NodeClass")]
    assert len(docs) == 2
    path = tmp_path / "karpenter.yaml"
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    out = validate_crs(path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 validated" in out.stdout and "0 error(s)" in out.stdout


# ----- refusals --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cluster, pool, message",
    [
        ({"karpenter": False}, {}, "karpenter: the cluster was built with karpenter=False; set karpenter=False here too (managed node groups)"),
        ({}, {"root_volume_gib": 200, "model_weights_gib": 140},
         "root_volume_gib: 200 GiB cannot hold 140.0 GiB of weights twice plus the image; use >= 330"),
        ({}, {"consolidate_after": "ten minutes"}, "consolidate_after: 'ten minutes' is not a duration like 30s, 10m, 720h or Never"),
        ({}, {"min_nodes": 5, "max_nodes": 2}, "min_nodes: 5 is above max_nodes 2"),
        ({}, {"platform": "ecs"}, "platform: the pool is ecs but the cluster is eks"),
        ({}, {"ami_version": "latest"},  # GpuCluster defaults to prod
         "ami_version: 'latest' replaces every prod GPU node at each AMI release; pin a release such as 'v20260818'"),
        ({}, {"ami_version": "al2023@v20260818"},
         "ami_version: 'al2023@v20260818' is not an EKS AMI release like 'v20260818' (or 'latest' in dev)"),
    ],
)
def test_refusals(cluster, pool, message):
    with pytest.raises(InputError) as err:
        build(cluster=cluster, instance_types=["p5.48xlarge"], **pool)
    assert str(err.value) == message


# ----- managed node groups ---------------------------------------------------------------------------------


def test_managed_node_groups_spot_and_on_demand_fallback():
    run, pool = build(cluster={"karpenter": False}, instance_types=["g6e.xlarge", "g6e.2xlarge"], karpenter=False,
                      min_nodes=1, max_nodes=5, model_weights_gib=15)
    assert not run.of_type(NODE_POOL) and not run.of_type(NODE_CLASS)
    groups = {r.name: r.inputs for r in run.of_type(MNG) if r.name != "gpu-system"}
    assert set(groups) == {"h100-spot", "h100-on-demand"}
    spot, od = groups["h100-spot"], groups["h100-on-demand"]
    assert (spot["capacityType"], od["capacityType"]) == ("SPOT", "ON_DEMAND")
    for g in (spot, od):
        assert g["amiType"] == "AL2023_x86_64_NVIDIA"
        assert g["instanceTypes"] == ["g6e.xlarge", "g6e.2xlarge"]
        assert g["taints"] == [{"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"}]
        assert g["labels"]["vllm-fleet/gpu"] == "L40S"
        assert g["launchTemplate"]["id"] == "h100-gpu-lt-id"
    assert spot["scalingConfig"] == {"minSize": 1, "desiredSize": 1, "maxSize": 5}
    assert od["scalingConfig"] == {"minSize": 0, "desiredSize": 0, "maxSize": 5}
    lt = run.one("aws:ec2/launchTemplate:LaunchTemplate", "h100-gpu-lt").inputs
    assert lt["blockDeviceMappings"][0]["ebs"]["volumeSize"] == 100
    assert lt["blockDeviceMappings"][0]["ebs"]["encrypted"] == "true"
    assert lt["metadataOptions"]["httpTokens"] == "required"
    assert pool.node_selector == {"vllm-fleet/gpu": "L40S"}


# ----- ECS dispatch ----------------------------------------------------------------------------------------


def test_ecs_pool_builds_capacity_provider():
    made: dict[str, SpotNodePool] = {}

    def program():
        c = GpuCluster("gpu", GpuClusterArgs(platform="ecs", ecs={"certificate_arn": "arn:aws:acm:us-east-1:1:certificate/0"}))
        made["pool"] = SpotNodePool("l4", SpotNodePoolArgs(cluster=c, instance_types=["g6.xlarge"], model_weights_gib=15))

    run = run_offline(program)
    pool = made["pool"]
    assert pool.platform == "ecs" and pool.capacity_provider_name is not None
    assert pool.node_selector == {} and pool.tolerations == []
    assert run.of_type("aws:ecs/capacityProvider:CapacityProvider")
    assert run.of_type("aws:autoscaling/group:Group")
    assert not run.of_type(NODE_POOL) and not run.of_type(MNG)


def test_ecs_pool_refuses_an_ami_whose_driver_cannot_run_the_image():
    def program():
        c = GpuCluster("gpu", GpuClusterArgs(platform="ecs", ecs={"certificate_arn": "arn:aws:acm:us-east-1:1:certificate/0"}))
        SpotNodePool("l4", SpotNodePoolArgs(cluster=c, instance_types=["g6.xlarge"], ami_version="20240611"))

    with pytest.raises(InputError) as err:
        run_offline(program)
    assert str(err.value) == (
        "ami_version: image vllm/vllm-openai:v0.29.0 is a CUDA 13.0 build needing NVIDIA driver R580+, but the ECS AMI "
        "20240611 ships R535; use an AMI release such as 20261113"
    )
