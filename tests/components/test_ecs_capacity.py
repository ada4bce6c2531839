"""components/ecs_capacity.py: GPU launch template, mixed-instances ASG and ECS capacity provider."""

from __future__ import annotations

import base64

import pulumi
import pytest

from components.ecs_capacity import (
    CONTAINER_STOP_TIMEOUT_SECONDS,
    attach_capacity_providers,
    default_capacity_provider_strategy,
    ECS_GPU_AMI_PARAMETER,
    EcsCapacityParts,
    build_ecs_capacity,
    ecs_agent_config,
    instances_distribution,
    user_data,
    validate_capacity_provider_name,
    validate_instance_types,
    validate_root_volume,
    validate_sizes,
)
from components.network import NetworkArgs, build_network
from components.sizing.errors import InputError
from stacks.offline import run_offline


# ----- pure rules ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "types, first",
    [(["p5.48xlarge"], "p5.48xlarge"), (["g6e.xlarge", "g6e.2xlarge", "g6e.4xlarge"], "g6e.xlarge"), (["p4d.24xlarge"], "p4d.24xlarge")],
)
def test_instance_types_of_one_gpu_class(types, first):
    assert validate_instance_types(types)[0].name == first


@pytest.mark.parametrize(
    "types, message",
    [
        ([], "instance_types: give at least one GPU instance type, e.g. ['g6e.xlarge']"),
        (["g6e.xlarge", "g5.xlarge"],
         "instance_types: g5.xlarge has 1 x A10G but g6e.xlarge has 1 x L40S; one pool holds one GPU class and count (make another pool for the other)"),
        (["g6e.xlarge", "g6e.12xlarge"],
         "instance_types: g6e.12xlarge has 4 x L40S but g6e.xlarge has 1 x L40S; one pool holds one GPU class and count (make another pool for the other)"),
        (["p5.48xlarge", "p5.48xlarge"], "instance_types: duplicate instance types in ['p5.48xlarge', 'p5.48xlarge']"),
    ],
)
def test_instance_types_rejected(types, message):
    with pytest.raises(InputError) as err:
        validate_instance_types(types)
    assert str(err.value) == message


def test_unknown_instance_type_names_the_field():
    with pytest.raises(InputError, match=r"^instance_types: unknown instance type 'p9.huge'"):
        validate_instance_types(["p9.huge"])


@pytest.mark.parametrize(
    "sizes, message",
    [
        ((-1, 2, 0, 50), "min_size: -1; must be >= 0"),
        ((0, 0, 0, 50), "max_size: 0; must be >= 1 and >= min_size (0)"),
        ((3, 2, 0, 50), "max_size: 2; must be >= 1 and >= min_size (3)"),
        ((0, 2, 3, 50), "on_demand_base: 3; must be 0..max_size (2)"),
        ((0, 2, 0, 101), "spot_percentage: 101; must be 0..100"),
    ],
)
def test_sizes_rejected(sizes, message):
    with pytest.raises(InputError) as err:
        validate_sizes(*sizes)
    assert str(err.value) == message


@pytest.mark.parametrize("gib, ok", [(29, False), (30, True), (500, True), (16384, True), (16385, False)])
def test_root_volume(gib, ok):
    if ok:
        assert validate_root_volume(gib) == gib
    else:
        with pytest.raises(InputError, match=rf"^root_volume_gib: {gib} GiB; must be 30-16384 GiB \(gp3\)$"):
            validate_root_volume(gib)


@pytest.mark.parametrize("name, ok", [("gpu-pool", True), ("ecs-pool", False), ("AWSpool", False), ("fargate1", False), ("my-ecs", True)])
def test_capacity_provider_name(name, ok):
    if ok:
        assert validate_capacity_provider_name(name) == name
    else:
        with pytest.raises(InputError, match="cannot start with 'aws', 'ecs' or 'fargate'"):
            validate_capacity_provider_name(name)


@pytest.mark.parametrize(
    "base, spot, above_base",
    [(0, 100, 0), (1, 70, 30), (2, 0, 100), (0, 50, 50)],
)
def test_instances_distribution(base, spot, above_base):
    dist = instances_distribution(base, spot)
    assert dist["on_demand_base_capacity"] == base
    assert dist["on_demand_percentage_above_base_capacity"] == above_base
    assert dist["spot_allocation_strategy"] == "price-capacity-optimized"


def test_agent_config_and_user_data():
    config = ecs_agent_config("gpu-ecs-123")
    assert config["ECS_CLUSTER"] == "gpu-ecs-123"
    assert config["ECS_ENABLE_GPU_SUPPORT"] == "true"
    assert config["ECS_ENABLE_SPOT_INSTANCE_DRAINING"] == "true"
    assert config["ECS_AWSVPC_BLOCK_IMDS"] == "true"
    assert config["ECS_CONTAINER_STOP_TIMEOUT"] == "110s"
    assert config["ECS_ENABLE_AWSLOGS_EXECUTIONROLE_OVERRIDE"] == "true"
    assert CONTAINER_STOP_TIMEOUT_SECONDS < 120  # inside the spot notice
    script = user_data("gpu-ecs-123")
    assert script.startswith("#!/bin/bash\n")
    assert "ECS_CLUSTER=gpu-ecs-123\n" in script and ">> /etc/ecs/ecs.config" in script


# ----- resources -------------------------------------------------------------------------------------------


class _Holder(pulumi.ComponentResource):
    parts: EcsCapacityParts

    def __init__(self, name: str, **kw):
        super().__init__("vllm-fleet:test:Holder", name, {}, None)
        network = build_network(name, NetworkArgs(), self)
        defaults = dict(
            cluster_name="gpu-ecs-name",
            network=network,
            instance_types=["p5.48xlarge"],
            min_size=0,
            max_size=4,
            on_demand_base=1,
            spot_percentage=70,
            root_volume_gib=500,
            environment="prod",
        )
        defaults.update(kw)
        self.parts = build_ecs_capacity(self, name, **defaults)
        self.register_outputs({})


def _run(**kw):
    return run_offline(lambda: _Holder("pool", **kw))


def test_launch_template_gpu_ami_imdsv2_encrypted_root():
    run = _run()
    lt = run.one("aws:ec2/launchTemplate:LaunchTemplate", "pool-lt").inputs
    assert lt["imageId"] == "ami-0fedcba9876543210"  # the pinned release, found by its AMI name (not `recommended`)
    md = lt["metadataOptions"]
    assert md["httpTokens"] == "required" and md["httpEndpoint"] == "enabled"
    assert md["httpPutResponseHopLimit"] == 1
    ebs = lt["blockDeviceMappings"][0]["ebs"]
    assert lt["blockDeviceMappings"][0]["deviceName"] == "/dev/xvda"
    assert ebs == {"volumeSize": 500, "volumeType": "gp3", "encrypted": "true", "deleteOnTermination": "true"}
    script = base64.b64decode(lt["userData"]).decode()
    assert "ECS_CLUSTER=gpu-ecs-name" in script
    assert "ECS_ENABLE_GPU_SUPPORT=true" in script and "ECS_ENABLE_SPOT_INSTANCE_DRAINING=true" in script
    assert "ECS_AWSVPC_BLOCK_IMDS=true" in script and "ECS_CONTAINER_STOP_TIMEOUT=110s" in script
    assert lt["iamInstanceProfile"]["arn"].endswith("pool-instance-profile")
    assert lt["vpcSecurityGroupIds"] == ["pool-instance-sg-id"]


def test_ami_comes_from_the_public_ssm_parameter():
    assert ECS_GPU_AMI_PARAMETER == "/aws/service/ecs/optimized-ami/amazon-linux-2023/gpu/recommended/image_id"


def test_dev_may_follow_the_recommended_ami():
    run = _run(environment="dev", ami_version="latest")
    lt = run.one("aws:ec2/launchTemplate:LaunchTemplate", "pool-lt").inputs
    assert lt["imageId"] == "ami-0123456789abcdef0"  # the `recommended` SSM parameter's value


@pytest.mark.parametrize(
    "version, environment, message",
    [
        ("latest", "prod", "ami_version: 'latest' replaces every prod GPU node at each AMI release; pin a release such as '20261113'"),
        ("v20260818", "dev", "ami_version: 'v20260818' is not an ECS AMI release like '20261113' (or 'latest' in dev)"),
    ],
)
def test_ami_version_refused(version, environment, message):
    with pytest.raises(InputError) as err:
        build_ecs_capacity(
            None, "pool", cluster_name="c", network=None, instance_types=["g6e.xlarge"], min_size=0, max_size=2,
            on_demand_base=0, spot_percentage=0, root_volume_gib=200, environment=environment, ami_version=version,
        )
    assert str(err.value) == message


def test_asg_can_be_deleted_while_scale_in_protected():
    asg = _run().one("aws:autoscaling/group:Group", "pool-asg").inputs
    assert asg["protectFromScaleIn"] is True and asg["forceDelete"] is True


def test_instance_role_ecs_and_ssm_only():
    run = _run()
    policies = sorted(a.inputs["policyArn"] for a in run.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment"))
    assert policies == [
        "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore",
        "arn:aws:iam::aws:policy/service-role/AmazonEC2ContainerServiceforEC2Role",
    ]
    sg = run.one("aws:ec2/securityGroup:SecurityGroup", "pool-instance-sg").inputs
    assert sg.get("ingress", []) == []
    assert [(e["fromPort"], e["toPort"]) for e in sg["egress"]] == [(443, 443)]


def test_asg_mixed_instances_spot_share_and_protection():
    run = _run(instance_types=["g6e.xlarge", "g6e.2xlarge"], on_demand_base=1, spot_percentage=70, min_size=1, max_size=6)
    asg = run.one("aws:autoscaling/group:Group", "pool-asg").inputs
    assert asg["minSize"] == 1 and asg["maxSize"] == 6
    assert asg["capacityRebalance"] is True
    assert asg["protectFromScaleIn"] is True
    assert sorted(asg["vpcZoneIdentifiers"]) == ["pool-private-0-id", "pool-private-1-id"]
    mip = asg["mixedInstancesPolicy"]
    dist = mip["instancesDistribution"]
    assert dist["onDemandBaseCapacity"] == 1
    assert dist["onDemandPercentageAboveBaseCapacity"] == 30
    assert dist["spotAllocationStrategy"] == "price-capacity-optimized"
    assert [o["instanceType"] for o in mip["launchTemplate"]["overrides"]] == ["g6e.xlarge", "g6e.2xlarge"]
    spec = mip["launchTemplate"]["launchTemplateSpecification"]
    assert spec["launchTemplateId"] == "pool-lt-id" and spec["version"] == "1"
    assert {"key": "AmazonECSManaged", "value": "true", "propagateAtLaunch": True} in asg["tags"]


def test_capacity_provider_managed_scaling_draining_termination_protection():
    run = _run()
    cp = run.one("aws:ecs/capacityProvider:CapacityProvider", "pool-cp").inputs["autoScalingGroupProvider"]
    assert cp["autoScalingGroupArn"].endswith(":pool-asg")
    assert cp["managedTerminationProtection"] == "ENABLED"
    assert cp["managedDraining"] == "ENABLED"
    assert cp["managedScaling"]["status"] == "ENABLED" and cp["managedScaling"]["targetCapacity"] == 100
    assert cp["managedScaling"]["instanceWarmupPeriod"] == 300
    ccp = run.one("aws:ecs/clusterCapacityProviders:ClusterCapacityProviders").inputs
    assert ccp["clusterName"] == "gpu-ecs-name"
    assert ccp["capacityProviders"] == ["pool-cp"]
    assert ccp["defaultCapacityProviderStrategies"] == [{"capacityProvider": "pool-cp", "weight": 1, "base": 0}]


def test_attachment_can_be_left_to_the_caller():
    run = _run(attach_to_cluster=False)
    assert run.of_type("aws:ecs/clusterCapacityProviders:ClusterCapacityProviders") == []


def test_all_children_under_the_parent():
    run = _run()
    holder = run.one("vllm-fleet:test:Holder")
    assert all(r.parent == holder.urn for r in run.resources if r is not holder)


def test_errors_before_any_resource():
    for kw, field in [
        (dict(instance_types=["g5.xlarge", "p5.48xlarge"]), "instance_types"),
        (dict(spot_percentage=120), "spot_percentage"),
        (dict(root_volume_gib=10), "root_volume_gib"),
        (dict(environment="qa"), "environment"),
    ]:
        with pytest.raises(InputError) as err:
            _run(**kw)
        assert err.value.field == field


# ----- several pools on one cluster: one ClusterCapacityProviders for all ------------------------------------

CCP = "aws:ecs/clusterCapacityProviders:ClusterCapacityProviders"


@pytest.mark.parametrize(
    "names, strategy, expected",
    [
        (["a", "b"], None, [{"capacity_provider": "a", "weight": 1, "base": 0}]),
        (["a", "b"], [], []),
        (["a", "b"], [{"capacity_provider": "b", "weight": 3}, {"capacity_provider": "a", "base": 2}],
         [{"capacity_provider": "b", "weight": 3, "base": 0}, {"capacity_provider": "a", "weight": 1, "base": 2}]),
        (["a"], [{"capacity_provider": "a", "weight": 1000, "base": 100000}], [{"capacity_provider": "a", "weight": 1000, "base": 100000}]),
    ],
)
def test_default_capacity_provider_strategy(names, strategy, expected):
    assert default_capacity_provider_strategy(names, strategy) == expected


@pytest.mark.parametrize(
    "names, strategy, message",
    [
        ([], None, "capacity_provider_names: give at least one capacity provider name (SpotNodePool.capacity_provider_name)"),
        (["a", "a"], None, "capacity_provider_names: duplicate capacity providers in ['a', 'a']"),
        (["a"], [{"capacity_provider": "z"}],
         "default_strategy: 'z' is not among capacity_provider_names; a strategy can only use providers attached to the cluster"),
        (["a"], [{"capacity_provider": "a"}, {"capacity_provider": "a"}], "default_strategy: 'a' appears twice"),
        (["a"], [{"capacity_provider": "a", "weight": 1001}], "default_strategy: weight 1001; must be 0-1000"),
        (["a"], [{"capacity_provider": "a", "base": -1}], "default_strategy: base -1; must be 0-100000"),
        (["a", "b"], [{"capacity_provider": "a", "base": 1}, {"capacity_provider": "b", "base": 1}],
         "default_strategy: only one capacity provider in a strategy can have a base"),
        (["a", "b"], [{"capacity_provider": "a", "weight": 0}, {"capacity_provider": "b", "weight": 0}],
         "default_strategy: at least one capacity provider needs a weight above 0, or no task can be placed"),
        (["a"], [{"provider": "a"}], "default_strategy: items are {capacity_provider, weight, base}, got keys ['provider']"),
        ([f"p{i}" for i in range(21)], [{"capacity_provider": f"p{i}"} for i in range(21)],
         "default_strategy: 21 items; a strategy holds at most 20 capacity providers"),
    ],
)
def test_default_capacity_provider_strategy_refused(names, strategy, message):
    with pytest.raises(InputError) as err:
        default_capacity_provider_strategy(names, strategy)
    assert str(err.value) == message


class _TwoPools(pulumi.ComponentResource):
    """One cluster, two GPU pools built with attach_to_cluster=False, attached together once."""

    def __init__(self, name: str, strategy=None):
        super().__init__("vllm-fleet:test:Holder", name, {}, None)
        network = build_network(name, NetworkArgs(), self)
        common = dict(cluster_name="gpu-ecs-name", network=network, min_size=0, max_size=4, on_demand_base=0,
                      spot_percentage=100, root_volume_gib=500, environment="prod", attach_to_cluster=False)
        self.l40s = build_ecs_capacity(self, "l40s", instance_types=["g6e.xlarge"], **common)
        self.h100 = build_ecs_capacity(self, "h100", instance_types=["p5.48xlarge"], **common)
        names = [self.l40s.capacity_provider.name, self.h100.capacity_provider.name]
        if strategy == "h100-first":  # items may name the Outputs themselves (matched by identity)
            strategy = [{"capacity_provider": names[1], "weight": 1, "base": 1}, {"capacity_provider": names[0], "weight": 2}]
        self.attachment = attach_capacity_providers(self, name, "gpu-ecs-name", names, default_strategy=strategy)
        self.register_outputs({})


def test_several_pools_one_cluster_capacity_providers():
    run = run_offline(lambda: _TwoPools("gpu"))
    (ccp,) = run.of_type(CCP)  # one for the cluster, none per pool
    assert ccp.name == "gpu-cluster-cps"
    assert ccp.parent == run.one("vllm-fleet:test:Holder").urn
    assert ccp.inputs == {
        "clusterName": "gpu-ecs-name",
        "capacityProviders": ["l40s-cp", "h100-cp"],
        "defaultCapacityProviderStrategies": [{"capacityProvider": "l40s-cp", "weight": 1, "base": 0}],
    }
    assert len(run.of_type("aws:ecs/capacityProvider:CapacityProvider")) == 2


def test_several_pools_with_a_default_strategy_of_outputs():
    run = run_offline(lambda: _TwoPools("gpu", strategy="h100-first"))
    assert run.one(CCP).inputs["defaultCapacityProviderStrategies"] == [
        {"capacityProvider": "h100-cp", "weight": 1, "base": 1},
        {"capacityProvider": "l40s-cp", "weight": 2, "base": 0},
    ]


def test_one_pool_attaches_itself_through_the_same_helper():
    run = _run()
    assert run.one(CCP).name == "pool-cluster-cps"
