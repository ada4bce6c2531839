"""The network GpuCluster runs in: a new VPC over >= 2 Availability Zones, or an existing VPC's subnets.

A new VPC gets, per AZ, one public subnet (load balancers, NAT) and one private subnet (GPU instances,
ECS tasks, pods), an internet gateway, NAT gateways (one per AZ by default, so losing an AZ does not cut
the others off the internet; `single_nat_gateway` trades that for cost in dev), route tables, VPC flow logs
to CloudWatch Logs with a retention, an S3 gateway endpoint (model weights and LoRA adapters come from S3
without paying NAT data processing) and a default security group stripped of every rule.

An existing VPC (`vpc_id` + `private_subnet_ids`) creates nothing: its subnets are used as they are.

The address plan is decided by pure functions (`subnet_cidrs`, `nat_gateway_count`) tested table-driven.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws
from pydantic import BaseModel, ConfigDict, Field

from .iam import service_trust_policy
from .sizing.errors import InputError

# AWS limits a VPC's primary CIDR to /16../28; below /24 there is no room for useful private subnets here.
MIN_VPC_PREFIX = 16
MAX_VPC_PREFIX = 24
# The smallest subnet AWS allows is /28 (16 addresses, 5 reserved by AWS).
SMALLEST_SUBNET_PREFIX = 28
MAX_AZS = 6
# RFC 1918 and the RFC 6598 shared space AWS accepts for VPCs.
PRIVATE_RANGES = tuple(
    ipaddress.IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10")
)  # the most AZs any commercial region has (us-east-1)


class NetworkArgs(BaseModel):
    """Where the cluster's instances and load balancers live."""

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    vpc_id: Any = Field(None, description="Use this existing VPC (pulumi.Input[str]); None creates a new VPC.")
    private_subnet_ids: list[Any] | None = Field(
        None, description="Existing VPC: private subnets (>= 2, one per AZ) for instances and tasks. Required with vpc_id."
    )
    public_subnet_ids: list[Any] | None = Field(
        None, description="Existing VPC: public subnets, needed only for an internet-facing load balancer."
    )
    cidr_block: str = Field("10.0.0.0/16", description="New VPC: its IPv4 CIDR, /16 to /24.")
    availability_zones: int = Field(2, description="New VPC: how many AZs to span (>= 2; use 3 in prod).")
    single_nat_gateway: bool = Field(
        False, description="New VPC: one NAT gateway for all AZs (cheaper, dev only) instead of one per AZ."
    )
    flow_logs: bool = Field(True, description="New VPC: send VPC flow logs (all traffic) to CloudWatch Logs.")
    flow_log_retention_days: int = Field(90, description="New VPC: flow log retention in days (CloudWatch allowed values).")
    s3_gateway_endpoint: bool = Field(True, description="New VPC: S3 gateway endpoint on the private route tables.")


@dataclass
class Network:
    """What other components wire to. Ids are Outputs for a new VPC, the given Inputs for an existing one."""

    vpc_id: Any
    private_subnet_ids: list[Any]
    public_subnet_ids: list[Any]
    availability_zones: int  # plain count of AZs the private subnets cover
    cidr_block: str | None = None  # plain, new VPC only (None: an existing VPC's CIDR is not known here)
    nat_gateway_count: int = 0  # plain, for cost estimates
    created: bool = False  # True when this module created the VPC
    vpc: aws.ec2.Vpc | None = None
    resources: dict[str, Any] = field(default_factory=dict)


# ----- pure rules ----------------------------------------------------------------------------------------

# CloudWatch Logs accepts only these retention values (PutRetentionPolicy).
LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653)


def validate_log_retention(days: int, field: str) -> int:
    if days not in LOG_RETENTION_DAYS:
        allowed = ", ".join(str(d) for d in LOG_RETENTION_DAYS)
        raise InputError(field, f"{days} is not a CloudWatch Logs retention; allowed days: {allowed}")
    return days


def validate_az_count(count: int) -> int:
    if count < 2 or count > MAX_AZS:
        raise InputError(
            "availability_zones",
            f"{count} AZs requested; a cluster needs 2 to {MAX_AZS} AZs (2 survives one AZ outage, use 3 in prod)",
        )
    return count


def _next_pow2(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def subnet_cidrs(cidr_block: str, az_count: int) -> list[tuple[str, str]]:
    """(public, private) CIDRs per AZ.

    Private subnets hold the instances and, with awsvpc / VPC CNI, one IP per task or pod: they get the big
    blocks. The VPC is cut into `slots = next_pow2(az_count + 1)` equal blocks; AZ i's private subnet is
    block i, and the last block is cut again into `next_pow2(az_count)` public subnets (load balancers and
    NAT gateways need few addresses). Blocks between the last private one and the public block stay free
    for later (e.g. a database tier). For 10.0.0.0/16 over 3 AZs: private /18s, public /20s.
    """
    try:
        vpc = ipaddress.IPv4Network(cidr_block, strict=True)
    except ValueError as exc:
        raise InputError("cidr_block", f"{cidr_block!r} is not an IPv4 network ({exc}); e.g. 10.0.0.0/16") from None
    if not MIN_VPC_PREFIX <= vpc.prefixlen <= MAX_VPC_PREFIX:
        raise InputError(
            "cidr_block", f"{cidr_block} has prefix /{vpc.prefixlen}; a VPC here must be /{MIN_VPC_PREFIX} to /{MAX_VPC_PREFIX}"
        )
    if not any(vpc.subnet_of(allowed) for allowed in PRIVATE_RANGES):
        raise InputError(
            "cidr_block", f"{cidr_block} is not inside a private range (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 100.64.0.0/10)"
        )
    validate_az_count(az_count)
    slots = _next_pow2(az_count + 1)
    private_prefix = vpc.prefixlen + (slots.bit_length() - 1)
    public_prefix = private_prefix + (_next_pow2(az_count).bit_length() - 1)
    if public_prefix > SMALLEST_SUBNET_PREFIX:
        raise InputError(
            "cidr_block",
            f"{cidr_block} is too small for {az_count} AZs (public subnets would be /{public_prefix}, "
            f"smaller than AWS's /{SMALLEST_SUBNET_PREFIX}); use a larger block such as /16",
        )
    blocks = list(vpc.subnets(new_prefix=private_prefix))
    publics = list(blocks[-1].subnets(new_prefix=public_prefix))
    return [(str(publics[i]), str(blocks[i])) for i in range(az_count)]


def nat_gateway_count(az_count: int, single_nat_gateway: bool) -> int:
    """One NAT gateway per AZ keeps each AZ's egress independent of the others; one is a dev-only saving."""
    return 1 if single_nat_gateway else az_count


def nat_gateway_for_az(az_index: int, nat_count: int) -> int:
    """Which NAT gateway AZ `az_index`'s private route table uses: its own, or the single shared one."""
    return az_index if nat_count > 1 else 0


def discovery_tags(cluster_name: str | None, public: bool) -> dict[str, str]:
    """Tags the AWS Load Balancer Controller and Karpenter use to find subnets (EKS only)."""
    if not cluster_name:
        return {}
    if public:
        return {"kubernetes.io/role/elb": "1"}
    return {"kubernetes.io/role/internal-elb": "1", "karpenter.sh/discovery": cluster_name}


# ----- resources ---------------------------------------------------------------------------------------


def build_network(name: str, args: NetworkArgs, parent: pulumi.Resource, *, cluster_name: str | None = None) -> Network:
    """Use an existing VPC's subnets, or create a new VPC; children are parented to `parent`."""
    if args.vpc_id is not None or args.private_subnet_ids is not None:
        return _existing_network(args)
    return _new_network(name, args, parent, cluster_name)


def _existing_network(args: NetworkArgs) -> Network:
    if args.vpc_id is None:
        raise InputError("vpc_id", "private_subnet_ids were given without vpc_id; give both, or neither for a new VPC")
    subnets = list(args.private_subnet_ids or [])
    if len(subnets) < 2:
        raise InputError(
            "private_subnet_ids",
            f"an existing VPC needs >= 2 private subnets in different AZs, got {len(subnets)}",
        )
    return Network(
        vpc_id=args.vpc_id,
        private_subnet_ids=subnets,
        public_subnet_ids=list(args.public_subnet_ids or []),
        availability_zones=len(subnets),
        created=False,
    )


def _az_name(names: list[str], index: int, wanted: int) -> str:
    if index >= len(names):
        raise InputError("availability_zones", f"{wanted} AZs requested but the region has {len(names)}: {names}")
    return names[index]


def _new_network(name: str, args: NetworkArgs, parent: pulumi.Resource, cluster_name: str | None) -> Network:
    az_count = validate_az_count(args.availability_zones)
    plan = subnet_cidrs(args.cidr_block, az_count)
    validate_log_retention(args.flow_log_retention_days, "flow_log_retention_days")
    nat_count = nat_gateway_count(az_count, args.single_nat_gateway)
    opts = pulumi.ResourceOptions(parent=parent)
    res: dict[str, Any] = {}

    def tags(role: str, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {"Name": f"{name}-{role}", **(extra or {})}

    # Regular AZs only: Local Zones and Wavelength Zones have no GPU instances and no NAT gateways.
    # Invoked with the parent: an invoke goes through its parent's provider (pulumi's _invoke takes
    # opts.parent._providers["aws"]), so a network built with another region's provider gets that region's
    # zones and endpoint names; without it the invoke runs on the default provider (aws:region).
    invoke_opts = pulumi.InvokeOutputOptions(parent=parent)
    zones = aws.get_availability_zones_output(
        state="available", filters=[{"name": "opt-in-status", "values": ["opt-in-not-required"]}], opts=invoke_opts
    )
    region = aws.get_region_output(opts=invoke_opts)

    vpc = aws.ec2.Vpc(
        f"{name}-vpc",
        cidr_block=args.cidr_block,
        enable_dns_support=True,
        enable_dns_hostnames=True,  # needed for private DNS of interface endpoints and EKS nodes
        tags=tags("vpc"),
        opts=opts,
    )
    res["vpc"] = vpc
    # Take over the VPC's default security group and leave it with no rules: nothing can use it by accident.
    res["default_sg"] = aws.ec2.DefaultSecurityGroup(
        f"{name}-default-sg", vpc_id=vpc.id, ingress=[], egress=[], tags=tags("default-sg-unused"), opts=opts
    )
    igw = aws.ec2.InternetGateway(f"{name}-igw", vpc_id=vpc.id, tags=tags("igw"), opts=opts)
    res["igw"] = igw

    public_rt = aws.ec2.RouteTable(
        f"{name}-public-rt",
        vpc_id=vpc.id,
        routes=[aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", gateway_id=igw.id)],
        tags=tags("public-rt"),
        opts=opts,
    )
    res["public_rt"] = public_rt

    public_subnets: list[aws.ec2.Subnet] = []
    private_subnets: list[aws.ec2.Subnet] = []
    for i, (public_cidr, private_cidr) in enumerate(plan):
        az = zones.names.apply(lambda names, i=i: _az_name(names, i, az_count))
        pub = aws.ec2.Subnet(
            f"{name}-public-{i}",
            vpc_id=vpc.id,
            cidr_block=public_cidr,
            availability_zone=az,
            map_public_ip_on_launch=False,  # nothing here should get a public IP by default; the ALB and NAT have their own
            tags=tags(f"public-{i}", {"tier": "public", **discovery_tags(cluster_name, public=True)}),
            opts=opts,
        )
        priv = aws.ec2.Subnet(
            f"{name}-private-{i}",
            vpc_id=vpc.id,
            cidr_block=private_cidr,
            availability_zone=az,
            map_public_ip_on_launch=False,
            tags=tags(f"private-{i}", {"tier": "private", **discovery_tags(cluster_name, public=False)}),
            opts=opts,
        )
        aws.ec2.RouteTableAssociation(f"{name}-public-rta-{i}", subnet_id=pub.id, route_table_id=public_rt.id, opts=opts)
        public_subnets.append(pub)
        private_subnets.append(priv)

    nats: list[aws.ec2.NatGateway] = []
    for i in range(nat_count):
        eip = aws.ec2.Eip(f"{name}-nat-eip-{i}", domain="vpc", tags=tags(f"nat-eip-{i}"), opts=opts)
        nats.append(
            aws.ec2.NatGateway(
                f"{name}-nat-{i}",
                allocation_id=eip.id,
                subnet_id=public_subnets[i].id,
                connectivity_type="public",
                tags=tags(f"nat-{i}"),
                opts=pulumi.ResourceOptions(parent=parent, depends_on=[igw]),
            )
        )
    res["nat_gateways"] = nats

    private_rts = []
    for i, priv in enumerate(private_subnets):
        nat = nats[nat_gateway_for_az(i, nat_count)]
        rt = aws.ec2.RouteTable(
            f"{name}-private-rt-{i}",
            vpc_id=vpc.id,
            routes=[aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", nat_gateway_id=nat.id)],
            tags=tags(f"private-rt-{i}"),
            opts=opts,
        )
        aws.ec2.RouteTableAssociation(f"{name}-private-rta-{i}", subnet_id=priv.id, route_table_id=rt.id, opts=opts)
        private_rts.append(rt)
    res["private_route_tables"] = private_rts

    if args.s3_gateway_endpoint:
        res["s3_endpoint"] = aws.ec2.VpcEndpoint(
            f"{name}-s3-endpoint",
            vpc_id=vpc.id,
            service_name=region.region.apply(lambda r: f"com.amazonaws.{r}.s3"),
            vpc_endpoint_type="Gateway",
            route_table_ids=[rt.id for rt in private_rts],
            tags=tags("s3-endpoint"),
            opts=opts,
        )

    if args.flow_logs:
        res.update(_flow_logs(name, vpc, args.flow_log_retention_days, opts, tags))

    return Network(
        vpc_id=vpc.id,
        private_subnet_ids=[s.id for s in private_subnets],
        public_subnet_ids=[s.id for s in public_subnets],
        availability_zones=az_count,
        cidr_block=args.cidr_block,
        nat_gateway_count=nat_count,
        created=True,
        vpc=vpc,
        resources=res,
    )


def _flow_logs(name: str, vpc: aws.ec2.Vpc, retention_days: int, opts: pulumi.ResourceOptions, tags) -> dict[str, Any]:
    log_group = aws.cloudwatch.LogGroup(
        f"{name}-flow-logs",
        name=f"/vllm-fleet/{name}/vpc-flow-logs",
        retention_in_days=retention_days,
        tags=tags("flow-logs"),
        opts=opts,
    )
    identity = aws.get_caller_identity_output(opts=pulumi.InvokeOutputOptions(parent=opts.parent))
    # The flow-logs service assumes this role; aws:SourceAccount stops other accounts' flow logs using it
    # (confused deputy; docs.aws.amazon.com/vpc/latest/userguide/flow-logs-iam-role.html).
    assume = identity.account_id.apply(lambda account: service_trust_policy("vpc-flow-logs.amazonaws.com", account))
    role = aws.iam.Role(f"{name}-flow-logs-role", assume_role_policy=assume, tags=tags("flow-logs-role"), opts=opts)
    aws.iam.RolePolicy(
        f"{name}-flow-logs-policy",
        role=role.id,
        policy=log_group.arn.apply(
            lambda arn: json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Action": ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
                            "Resource": [arn, f"{arn}:*"],
                        }
                    ],
                }
            )
        ),
        opts=opts,
    )
    flow_log = aws.ec2.FlowLog(
        f"{name}-flow-log",
        vpc_id=vpc.id,
        traffic_type="ALL",
        log_destination_type="cloud-watch-logs",
        log_destination=log_group.arn,
        iam_role_arn=role.arn,
        max_aggregation_interval=60,
        tags=tags("flow-log"),
        opts=opts,
    )
    return {"flow_log_group": log_group, "flow_log_role": role, "flow_log": flow_log}


__all__ = [
    "Network",
    "NetworkArgs",
    "build_network",
    "discovery_tags",
    "nat_gateway_count",
    "nat_gateway_for_az",
    "subnet_cidrs",
    "validate_az_count",
    "validate_log_retention",
    "LOG_RETENTION_DAYS",
]
