"""EC2 vCPU quotas a plan needs, per region, in the quota families AWS counts GPU instances in.

EC2 limits running instances by vCPUs per region and instance family, on-demand and spot separately. A GPU
plan that does not fit its quota fails at the first scale-out (`InsufficientInstanceCapacity` is capacity;
`VcpuLimitExceeded` / `MaxSpotInstanceCountExceeded` is quota), often hours after `pulumi up`. Preview prints
the need; `vllm-fleet quotas check` compares it with the account (Service Quotas API). No pulumi import.

Counting rule (the worst case at maximum scale, because that is what the autoscalers may ask for):
- on-demand: every pool at its maximum nodes. Spot-first pools fall back to on-demand when spot capacity is gone
  (Karpenter does this itself; on ECS it is the headroom to move spotFraction to 0 during a spot drought).
- spot: every pool that may use spot, at its maximum nodes.
System nodes (m/c families, the Standard quota) are not counted: a few vCPUs within any account's default.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Iterable

from .instances import get_instance


@dataclass(frozen=True)
class QuotaFamily:
    code: str  # Service Quotas code (service `ec2`)
    name: str  # the quota's name in the console
    family: str  # P or G
    market: str  # on-demand or spot


# Service Quotas codes for EC2 (service code `ec2`), as the Service Quotas console and API name them; the same codes
# in aws-samples and user tooling (e.g. `aws service-quotas get-service-quota --service-code ec2 --quota-code
# L-417A185B`), https://docs.aws.amazon.com/ec2/latest/instancetypes/ec2-instance-quotas.html; read 2026-12-04.
FAMILIES: tuple[QuotaFamily, ...] = (
    QuotaFamily("L-417A185B", "Running On-Demand P instances", "P", "on-demand"),
    QuotaFamily("L-DB2E81BA", "Running On-Demand G and VT instances", "G", "on-demand"),
    QuotaFamily("L-7212CCBC", "All P Spot Instance Requests", "P", "spot"),
    QuotaFamily("L-3819A6DF", "All G and VT Spot Instance Requests", "G", "spot"),
)
_FAMILY_OF = ((re.compile(r"^p\d"), "P"), (re.compile(r"^(g|vt)\d"), "G"))


def instance_family(instance_type: str) -> str | None:
    """P or G (the quota family of a GPU instance type), None for other families."""
    for pattern, family in _FAMILY_OF:
        if pattern.match(instance_type):
            return family
    return None


def quota_for(family: str, market: str) -> QuotaFamily:
    return next(q for q in FAMILIES if q.family == family and q.market == market)


@dataclass(frozen=True)
class PoolAtMax:
    """One GPU pool of a plan at maximum scale: what the quota need is computed from."""

    region: str
    instance_type: str
    max_nodes: int
    spot: bool


@dataclass(frozen=True)
class QuotaNeed:
    region: str
    quota: QuotaFamily
    vcpus: int
    instances: dict[str, int]  # instance type -> nodes at maximum scale

    @property
    def gpus(self) -> str:
        """`952 x A100-40GB`: the GPUs behind the vCPUs, so a reader sees what the quota request is for."""
        by_gpu: dict[str, int] = {}
        for t, n in self.instances.items():
            inst = get_instance(t)
            by_gpu[inst.gpu_name] = by_gpu.get(inst.gpu_name, 0) + n * inst.gpu_count
        return ", ".join(f"{n:,} x {g}" for g, n in sorted(by_gpu.items()))

    def describe(self) -> str:
        parts = ", ".join(f"{n} x {t}" for t, n in sorted(self.instances.items()))
        return f"{self.region}  {self.quota.code}  {self.quota.name:<38} {self.vcpus:>7,} vCPUs  ({parts} = {self.gpus} GPUs)"


def quota_needs(pools: Iterable[PoolAtMax]) -> list[QuotaNeed]:
    """vCPUs each region needs in each quota family at maximum scale (vCPUs per instance from the catalog)."""
    totals: dict[tuple[str, str], tuple[int, dict[str, int]]] = {}
    for pool in pools:
        family = instance_family(pool.instance_type)
        if family is None or pool.max_nodes <= 0:
            continue
        vcpus = pool.max_nodes * get_instance(pool.instance_type).vcpus
        markets = ("on-demand", "spot") if pool.spot else ("on-demand",)
        for market in markets:
            code = quota_for(family, market).code
            total, by_type = totals.get((pool.region, code), (0, {}))
            by_type = {**by_type, pool.instance_type: by_type.get(pool.instance_type, 0) + pool.max_nodes}
            totals[(pool.region, code)] = (total + vcpus, by_type)
    order = {q.code: i for i, q in enumerate(FAMILIES)}
    needs = [
        QuotaNeed(region, next(q for q in FAMILIES if q.code == code), total, by_type)
        for (region, code), (total, by_type) in totals.items()
    ]
    return sorted(needs, key=lambda n: (n.region, order[n.quota.code]))


def shortfall(need: int, have: float) -> int:
    """vCPUs missing (0 when the quota covers the need)."""
    return max(0, need - int(math.floor(have)))


__all__ = ["FAMILIES", "PoolAtMax", "QuotaFamily", "QuotaNeed", "instance_family", "quota_for", "quota_needs", "shortfall"]
