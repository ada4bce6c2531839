"""components/network.py: the address plan (pure, table-driven) and the VPC it builds under the mock runtime."""

from __future__ import annotations

import ipaddress
import json

import pulumi
import pytest

from components.network import (
    Network,
    NetworkArgs,
    build_network,
    discovery_tags,
    nat_gateway_count,
    nat_gateway_for_az,
    subnet_cidrs,
    validate_log_retention,
)
from components.sizing.errors import InputError
from stacks.offline import run_offline


# ----- pure rules ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cidr, azs, expected",
    [
        ("10.0.0.0/16", 2, [("10.0.192.0/19", "10.0.0.0/18"), ("10.0.224.0/19", "10.0.64.0/18")]),
        (
            "10.0.0.0/16",
            3,
            [("10.0.192.0/20", "10.0.0.0/18"), ("10.0.208.0/20", "10.0.64.0/18"), ("10.0.224.0/20", "10.0.128.0/18")],
        ),
        ("10.0.0.0/16", 4, [("10.0.224.0/21", "10.0.0.0/19"), ("10.0.232.0/21", "10.0.32.0/19"),
                            ("10.0.240.0/21", "10.0.64.0/19"), ("10.0.248.0/21", "10.0.96.0/19")]),
        ("172.16.0.0/20", 2, [("172.16.12.0/23", "172.16.0.0/22"), ("172.16.14.0/23", "172.16.4.0/22")]),
        ("192.168.0.0/24", 3, [("192.168.0.192/28", "192.168.0.0/26"), ("192.168.0.208/28", "192.168.0.64/26"),
                               ("192.168.0.224/28", "192.168.0.128/26")]),
        ("100.64.0.0/16", 2, [("100.64.192.0/19", "100.64.0.0/18"), ("100.64.224.0/19", "100.64.64.0/18")]),
    ],
)
def test_subnet_cidrs(cidr, azs, expected):
    plan = subnet_cidrs(cidr, azs)
    assert plan == expected
    nets = [ipaddress.IPv4Network(c) for pair in plan for c in pair]
    vpc = ipaddress.IPv4Network(cidr)
    assert all(n.subnet_of(vpc) for n in nets)
    assert not any(a.overlaps(b) for i, a in enumerate(nets) for b in nets[i + 1 :])
    # private subnets are the big ones: tasks (awsvpc) and pods take one IP each
    assert all(ipaddress.IPv4Network(priv).num_addresses > ipaddress.IPv4Network(pub).num_addresses for pub, priv in plan)


@pytest.mark.parametrize(
    "cidr, azs, message",
    [
        ("10.0.0.0/15", 2, "cidr_block: 10.0.0.0/15 has prefix /15; a VPC here must be /16 to /24"),
        ("10.0.0.0/25", 2, "cidr_block: 10.0.0.0/25 has prefix /25; a VPC here must be /16 to /24"),
        ("10.0.0.1/16", 2, "cidr_block: '10.0.0.1/16' is not an IPv4 network (10.0.0.1/16 has host bits set); e.g. 10.0.0.0/16"),
        ("8.8.0.0/16", 2, "cidr_block: 8.8.0.0/16 is not inside a private range (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 100.64.0.0/10)"),
        ("10.0.0.0/16", 1, "availability_zones: 1 AZs requested; a cluster needs 2 to 6 AZs (2 survives one AZ outage, use 3 in prod)"),
        ("10.0.0.0/16", 7, "availability_zones: 7 AZs requested; a cluster needs 2 to 6 AZs (2 survives one AZ outage, use 3 in prod)"),
        ("192.168.0.0/24", 5, "cidr_block: 192.168.0.0/24 is too small for 5 AZs (public subnets would be /30, smaller than AWS's /28); use a larger block such as /16"),
    ],
)
def test_subnet_cidrs_rejects(cidr, azs, message):
    with pytest.raises(InputError) as err:
        subnet_cidrs(cidr, azs)
    assert str(err.value) == message


@pytest.mark.parametrize("azs, single, expected", [(2, False, 2), (3, False, 3), (3, True, 1), (2, True, 1)])
def test_nat_gateway_count(azs, single, expected):
    assert nat_gateway_count(azs, single) == expected


@pytest.mark.parametrize("az, nats, expected", [(0, 3, 0), (2, 3, 2), (2, 1, 0), (1, 1, 0)])
def test_nat_gateway_for_az(az, nats, expected):
    assert nat_gateway_for_az(az, nats) == expected


@pytest.mark.parametrize(
    "cluster, public, expected",
    [
        (None, True, {}),
        ("gpu", True, {"kubernetes.io/role/elb": "1"}),
        ("gpu", False, {"kubernetes.io/role/internal-elb": "1", "karpenter.sh/discovery": "gpu"}),
    ],
)
def test_discovery_tags(cluster, public, expected):
    assert discovery_tags(cluster, public) == expected


def test_log_retention_must_be_a_cloudwatch_value():
    assert validate_log_retention(30, "x") == 30
    with pytest.raises(InputError, match=r"^flow_log_retention_days: 45 is not a CloudWatch Logs retention; allowed days: 1, 3, 5"):
        validate_log_retention(45, "flow_log_retention_days")


# ----- resources -------------------------------------------------------------------------------------------


class _Holder(pulumi.ComponentResource):
    """A stand-in parent until GpuCluster exists: builds the network under itself."""

    network: Network

    def __init__(self, name: str, args: NetworkArgs, cluster_name: str | None = None, opts=None):
        super().__init__("vllm-fleet:test:Holder", name, {}, opts)
        self.network = build_network(name, args, self, cluster_name=cluster_name)
        self.register_outputs({})


def _run(args: NetworkArgs, cluster_name: str | None = None):
    return run_offline(lambda: _Holder("net", args, cluster_name), region="us-east-1")


def test_new_vpc_two_azs_one_nat_per_az():
    run = _run(NetworkArgs())
    vpc = run.one("aws:ec2/vpc:Vpc")
    assert vpc.name == "net-vpc"
    assert vpc.inputs["cidrBlock"] == "10.0.0.0/16"
    assert vpc.inputs["enableDnsSupport"] is True and vpc.inputs["enableDnsHostnames"] is True
    subnets = {s.name: s.inputs for s in run.of_type("aws:ec2/subnet:Subnet")}
    assert sorted(subnets) == ["net-private-0", "net-private-1", "net-public-0", "net-public-1"]
    assert subnets["net-private-0"]["availabilityZone"] == "us-east-1a"
    assert subnets["net-private-1"]["availabilityZone"] == "us-east-1b"
    assert subnets["net-public-1"]["availabilityZone"] == "us-east-1b"
    assert subnets["net-private-0"]["cidrBlock"] == "10.0.0.0/18"
    assert all(s["mapPublicIpOnLaunch"] is False for s in subnets.values())
    assert len(run.of_type("aws:ec2/internetGateway:InternetGateway")) == 1
    nats = run.of_type("aws:ec2/natGateway:NatGateway")
    assert sorted(n.name for n in nats) == ["net-nat-0", "net-nat-1"]
    assert len(run.of_type("aws:ec2/eip:Eip")) == 2
    assert all(e.inputs["domain"] == "vpc" for e in run.of_type("aws:ec2/eip:Eip"))
    # each AZ's private route table goes out through its own AZ's NAT gateway
    rt0 = run.one("aws:ec2/routeTable:RouteTable", "net-private-rt-0").inputs
    rt1 = run.one("aws:ec2/routeTable:RouteTable", "net-private-rt-1").inputs
    assert rt0["routes"][0]["cidrBlock"] == "0.0.0.0/0"
    assert rt0["routes"][0]["natGatewayId"] == "net-nat-0-id"
    assert rt1["routes"][0]["natGatewayId"] == "net-nat-1-id"
    public_rt = run.one("aws:ec2/routeTable:RouteTable", "net-public-rt").inputs
    assert public_rt["routes"][0]["gatewayId"] == "net-igw-id"
    assocs = run.of_type("aws:ec2/routeTableAssociation:RouteTableAssociation")
    assert len(assocs) == 4
    # default security group taken over and emptied
    dsg = run.one("aws:ec2/defaultSecurityGroup:DefaultSecurityGroup").inputs
    assert dsg.get("ingress", []) == [] and dsg.get("egress", []) == []
    # everything is a child of the holder
    holder = run.one("vllm-fleet:test:Holder")
    assert all(r.parent == holder.urn for r in run.resources if r is not holder)


def test_single_nat_gateway_for_dev():
    run = _run(NetworkArgs(availability_zones=3, single_nat_gateway=True))
    assert [n.name for n in run.of_type("aws:ec2/natGateway:NatGateway")] == ["net-nat-0"]
    for i in range(3):
        rt = run.one("aws:ec2/routeTable:RouteTable", f"net-private-rt-{i}").inputs
        assert rt["routes"][0]["natGatewayId"] == "net-nat-0-id"
    assert len(run.of_type("aws:ec2/subnet:Subnet")) == 6


def test_flow_logs_to_cloudwatch_with_retention():
    run = _run(NetworkArgs(flow_log_retention_days=30))
    group = run.one("aws:cloudwatch/logGroup:LogGroup").inputs
    assert group["retentionInDays"] == 30
    flow = run.one("aws:ec2/flowLog:FlowLog").inputs
    assert flow["trafficType"] == "ALL"
    assert flow["logDestinationType"] == "cloud-watch-logs"
    assert flow["vpcId"] == "net-vpc-id"
    role = run.one("aws:iam/role:Role", "net-flow-logs-role").inputs
    trust = json.loads(role["assumeRolePolicy"])["Statement"][0]
    assert trust["Principal"] == {"Service": "vpc-flow-logs.amazonaws.com"}
    assert trust["Condition"] == {"StringEquals": {"aws:SourceAccount": "123456789012"}}
    policy = json.loads(run.one("aws:iam/rolePolicy:RolePolicy").inputs["policy"])["Statement"][0]
    assert "*" not in policy["Resource"]
    assert policy["Action"] == ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]


def test_s3_gateway_endpoint_on_private_route_tables():
    run = _run(NetworkArgs())
    ep = run.one("aws:ec2/vpcEndpoint:VpcEndpoint").inputs
    assert ep["serviceName"] == "com.amazonaws.us-east-1.s3"
    assert ep["vpcEndpointType"] == "Gateway"
    assert sorted(ep["routeTableIds"]) == ["net-private-rt-0-id", "net-private-rt-1-id"]


def test_optional_pieces_can_be_turned_off():
    run = _run(NetworkArgs(flow_logs=False, s3_gateway_endpoint=False))
    assert run.of_type("aws:ec2/flowLog:FlowLog") == []
    assert run.of_type("aws:ec2/vpcEndpoint:VpcEndpoint") == []


def test_eks_discovery_tags_only_with_a_cluster_name():
    run = _run(NetworkArgs(), cluster_name="gpu-eks")
    tags = {s.name: s.inputs["tags"] for s in run.of_type("aws:ec2/subnet:Subnet")}
    assert tags["net-public-0"]["kubernetes.io/role/elb"] == "1"
    assert tags["net-private-0"]["kubernetes.io/role/internal-elb"] == "1"
    assert tags["net-private-1"]["karpenter.sh/discovery"] == "gpu-eks"
    assert "karpenter.sh/discovery" not in tags["net-public-0"]
    plain = _run(NetworkArgs())
    assert all("karpenter.sh/discovery" not in s.inputs["tags"] for s in plain.of_type("aws:ec2/subnet:Subnet"))


def test_network_outputs():
    seen = {}

    def program():
        holder = _Holder("net", NetworkArgs(availability_zones=3))
        seen["n"] = holder.network

    run_offline(program)
    net = seen["n"]
    assert net.created and net.availability_zones == 3 and net.nat_gateway_count == 3
    assert net.cidr_block == "10.0.0.0/16"
    assert len(net.private_subnet_ids) == 3 and len(net.public_subnet_ids) == 3


def test_existing_vpc_creates_nothing():
    args = NetworkArgs(vpc_id="vpc-123", private_subnet_ids=["subnet-a", "subnet-b"], public_subnet_ids=["subnet-c"])
    seen = {}

    def program():
        seen["n"] = _Holder("net", args).network

    run = run_offline(program)
    assert [r.type for r in run.resources] == ["vllm-fleet:test:Holder"]
    net = seen["n"]
    assert net.vpc_id == "vpc-123" and net.private_subnet_ids == ["subnet-a", "subnet-b"]
    assert net.public_subnet_ids == ["subnet-c"] and net.availability_zones == 2 and not net.created


@pytest.mark.parametrize(
    "args, message",
    [
        (dict(vpc_id="vpc-1", private_subnet_ids=["subnet-a"]),
         "private_subnet_ids: an existing VPC needs >= 2 private subnets in different AZs, got 1"),
        (dict(vpc_id="vpc-1"), "private_subnet_ids: an existing VPC needs >= 2 private subnets in different AZs, got 0"),
        (dict(private_subnet_ids=["a", "b"]),
         "vpc_id: private_subnet_ids were given without vpc_id; give both, or neither for a new VPC"),
    ],
)
def test_existing_vpc_errors(args, message):
    with pytest.raises(InputError) as err:
        run_offline(lambda: _Holder("net", NetworkArgs(**args)))
    assert str(err.value) == message


def test_more_azs_than_the_region_has():
    # Known only once the region's AZ list resolves, so the engine wraps the InputError in its own ValueError.
    with pytest.raises(ValueError, match=r"availability_zones: 4 AZs requested but the region has 3"):
        _run(NetworkArgs(availability_zones=4))


# ----- region: every invoke runs on the network's own provider ---------------------------------------------


@pytest.mark.parametrize("region", ["us-west-2", "eu-west-1", "ap-northeast-1"])
def test_network_on_another_regions_provider_uses_that_regions_zones_and_endpoints(region):
    """A network built with a non-default region's provider (a multi-region stack's second region) must get that
    region's AZs and S3 endpoint, not those of aws:region (us-east-1): the invokes go through the parent's provider."""

    def program():
        import pulumi_aws as aws

        prov = aws.Provider("regional", region=region)
        _Holder("net", NetworkArgs(availability_zones=3), None, opts=pulumi.ResourceOptions(providers={"aws": prov}))

    run = run_offline(program, region="us-east-1")
    zones = sorted(r.inputs["availabilityZone"] for r in run.of_type("aws:ec2/subnet:Subnet"))
    assert zones == sorted([f"{region}a", f"{region}b", f"{region}c"] * 2)
    endpoint = run.one("aws:ec2/vpcEndpoint:VpcEndpoint")
    assert endpoint.inputs["serviceName"] == f"com.amazonaws.{region}.s3"


@pytest.mark.parametrize(
    "region, code",
    [("us-east-1", "use1"), ("us-west-2", "usw2"), ("eu-west-1", "euw1"), ("ap-northeast-1", "apne1"),
     ("ap-southeast-2", "apse2"), ("eu-central-1", "euc1"), ("us-gov-west-1", "usgw1"), ("ca-central-1", "cac1")],
)
def test_region_code_is_aws_zone_id_prefix(region, code):
    from stacks.offline import region_code

    assert region_code(region) == code
