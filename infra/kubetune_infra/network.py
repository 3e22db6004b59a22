"""VPC with a public and a private subnet per availability zone, NAT for the private ones."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
from pulumi import ComponentResource, Output, ResourceOptions


@dataclass(frozen=True)
class SubnetPlan:
    availability_zone: str
    private_cidr: str
    public_cidr: str


def plan_subnets(vpc_cidr: ipaddress.IPv4Network, availability_zones: list[str]) -> list[SubnetPlan]:
    """Splits the VPC into eighths: the first ones become large private subnets (nodes and pods take
    one VPC address each with the AWS CNI), the last eighth is cut into small public subnets (load
    balancers and NAT gateways only)."""
    if len(availability_zones) > 7:
        raise ValueError("at most 7 availability zones fit this subnet plan")
    eighths = list(vpc_cidr.subnets(prefixlen_diff=3))
    public_blocks = list(eighths[-1].subnets(prefixlen_diff=3))
    return [
        SubnetPlan(zone, str(eighths[index]), str(public_blocks[index]))
        for index, zone in enumerate(availability_zones)
    ]


class Network(ComponentResource):
    vpc_id: Output[str]
    private_subnet_ids: list[Output[str]]
    public_subnet_ids: list[Output[str]]

    def __init__(
        self,
        name: str,
        *,
        cluster_name: str,
        vpc_cidr: ipaddress.IPv4Network,
        availability_zone_count: int,
        nat_gateway_per_az: bool,
        opts: ResourceOptions | None = None,
    ) -> None:
        super().__init__("kubetune:infra:Network", name, None, opts)
        child = ResourceOptions(parent=self)
        # EKS discovers its subnets and load balancer targets by these tags.
        cluster_tag = {f"kubernetes.io/cluster/{cluster_name}": "shared"}

        zones = aws.get_availability_zones(
            state="available",
            filters=[{"name": "opt-in-status", "values": ["opt-in-not-required"]}],
            opts=pulumi.InvokeOptions(parent=self),
        ).names
        if len(zones) < availability_zone_count:
            raise ValueError(
                f"kubetune:availabilityZoneCount is {availability_zone_count} but the region offers "
                f"only {len(zones)} zones"
            )
        plan = plan_subnets(vpc_cidr, sorted(zones)[:availability_zone_count])

        vpc = aws.ec2.Vpc(
            f"{name}-vpc",
            cidr_block=str(vpc_cidr),
            enable_dns_hostnames=True,  # required for the EKS private endpoint and EFS mount names
            enable_dns_support=True,
            tags={"Name": f"{cluster_name}-vpc", **cluster_tag},
            opts=child,
        )
        gateway = aws.ec2.InternetGateway(
            f"{name}-igw", vpc_id=vpc.id, tags={"Name": f"{cluster_name}-igw"}, opts=child
        )
        public_routes = aws.ec2.RouteTable(
            f"{name}-public",
            vpc_id=vpc.id,
            routes=[{"cidr_block": "0.0.0.0/0", "gateway_id": gateway.id}],
            tags={"Name": f"{cluster_name}-public"},
            opts=child,
        )

        public_subnets: list[aws.ec2.Subnet] = []
        private_subnets: list[aws.ec2.Subnet] = []
        for subnet in plan:
            zone = subnet.availability_zone
            public = aws.ec2.Subnet(
                f"{name}-public-{zone}",
                vpc_id=vpc.id,
                cidr_block=subnet.public_cidr,
                availability_zone=zone,
                map_public_ip_on_launch=False,  # nothing public runs here but load balancers and NAT
                tags={"Name": f"{cluster_name}-public-{zone}", "kubernetes.io/role/elb": "1", **cluster_tag},
                opts=child,
            )
            aws.ec2.RouteTableAssociation(
                f"{name}-public-{zone}", subnet_id=public.id, route_table_id=public_routes.id, opts=child
            )
            public_subnets.append(public)
            private_subnets.append(
                aws.ec2.Subnet(
                    f"{name}-private-{zone}",
                    vpc_id=vpc.id,
                    cidr_block=subnet.private_cidr,
                    availability_zone=zone,
                    tags={
                        "Name": f"{cluster_name}-private-{zone}",
                        "kubernetes.io/role/internal-elb": "1",
                        **cluster_tag,
                    },
                    opts=child,
                )
            )

        nat_count = len(plan) if nat_gateway_per_az else 1
        nat_gateways = []
        for index in range(nat_count):
            zone = plan[index].availability_zone
            address = aws.ec2.Eip(
                f"{name}-nat-{zone}", domain="vpc", tags={"Name": f"{cluster_name}-nat-{zone}"}, opts=child
            )
            nat_gateways.append(
                aws.ec2.NatGateway(
                    f"{name}-nat-{zone}",
                    allocation_id=address.id,
                    subnet_id=public_subnets[index].id,
                    tags={"Name": f"{cluster_name}-nat-{zone}"},
                    opts=ResourceOptions(parent=self, depends_on=[gateway]),
                )
            )

        for index, private in enumerate(private_subnets):
            zone = plan[index].availability_zone
            nat = nat_gateways[index if nat_gateway_per_az else 0]
            routes = aws.ec2.RouteTable(
                f"{name}-private-{zone}",
                vpc_id=vpc.id,
                routes=[{"cidr_block": "0.0.0.0/0", "nat_gateway_id": nat.id}],
                tags={"Name": f"{cluster_name}-private-{zone}"},
                opts=child,
            )
            aws.ec2.RouteTableAssociation(
                f"{name}-private-{zone}", subnet_id=private.id, route_table_id=routes.id, opts=child
            )

        self.vpc_id = vpc.id
        self.vpc_cidr = str(vpc_cidr)
        self.private_subnet_ids = [subnet.id for subnet in private_subnets]
        self.public_subnet_ids = [subnet.id for subnet in public_subnets]
        self.register_outputs(
            {
                "vpcId": self.vpc_id,
                "privateSubnetIds": self.private_subnet_ids,
                "publicSubnetIds": self.public_subnet_ids,
            }
        )
