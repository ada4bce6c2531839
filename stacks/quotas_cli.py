"""`vllm-fleet quotas check --stack S`: the EC2 vCPU quotas the stack's plan needs at maximum scale, per region
and quota family, against what the account has (Service Quotas API, boto3).

Exit 0 when every quota covers the need, 1 when one is short (each shortfall printed, with the request to
file), 2 on bad input or when AWS cannot be asked (no credentials, access denied): one line on stderr.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any, Callable

from components.sizing.errors import InputError
from components.sizing.quotas import PoolAtMax, QuotaNeed, quota_needs, shortfall

EXIT_OK, EXIT_SHORT, EXIT_BAD_INPUT = 0, 1, 2
SERVICE_CODE = "ec2"


def plan_quota_needs(plan) -> list[QuotaNeed]:
    """The quota needs of a StackPlan (stacks.plan): every model's GPU pool at its maximum nodes."""
    return quota_needs(PoolAtMax(m.region, m.instance_type, m.nodes_max, m.spot_fraction > 0) for m in plan.models)


@dataclass(frozen=True)
class QuotaCheck:
    need: QuotaNeed
    have: float
    default: bool  # True when the account has no applied value and AWS's default was used

    @property
    def short(self) -> int:
        return shortfall(self.need.vcpus, self.have)


class AwsUnavailable(InputError):
    """AWS could not be asked (credentials, permissions, endpoint): the check did not run."""


def _client_factory() -> Callable[[str], Any]:
    import boto3

    # A fresh session: the credentials of the environment at the time of the check, not a cached default session's.
    session = boto3.session.Session()
    return lambda region: session.client("service-quotas", region_name=region)


def account_quota(client, code: str) -> tuple[float, bool]:
    """(value, is_default) of an EC2 quota: the applied value, else AWS's default (a never-changed quota
    has no applied value in some accounts: GetServiceQuota answers NoSuchResourceException)."""
    from botocore.exceptions import ClientError

    try:
        return float(client.get_service_quota(ServiceCode=SERVICE_CODE, QuotaCode=code)["Quota"]["Value"]), False
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "NoSuchResourceException":
            raise
    return float(client.get_aws_default_service_quota(ServiceCode=SERVICE_CODE, QuotaCode=code)["Quota"]["Value"]), True


def check_quotas(needs: list[QuotaNeed], client_for: Callable[[str], Any] | None = None) -> list[QuotaCheck]:
    """Ask each region's Service Quotas endpoint for each quota the plan needs."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError

    client_for = client_for or _client_factory()
    clients: dict[str, Any] = {}
    checks = []
    for need in needs:
        try:
            if need.region not in clients:  # one client per region
                clients[need.region] = client_for(need.region)
            client = clients[need.region]
            have, default = account_quota(client, need.quota.code)
        except NoCredentialsError:
            raise AwsUnavailable(
                "credentials", "no AWS credentials found; set AWS_PROFILE (or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY) for the target account"
            ) from None
        except ClientError as exc:
            err = exc.response.get("Error", {})
            raise AwsUnavailable(
                "servicequotas", f"{need.region}: {err.get('Code', 'error')}: {err.get('Message', exc)} (needs servicequotas:GetServiceQuota)"
            ) from None
        except (BotoCoreError, NoRegionError) as exc:
            raise AwsUnavailable("servicequotas", f"{need.region}: {exc}") from None
        checks.append(QuotaCheck(need, have, default))
    return checks


def _print(stack: str, checks: list[QuotaCheck]) -> None:
    print(f"EC2 vCPU quotas for stack {stack} at maximum scale (spot-first pools are counted on-demand too: they fall back):")
    for c in checks:
        n = c.need
        status = "ok" if not c.short else f"SHORT by {c.short:,}"
        source = " (AWS default)" if c.default else ""
        print(f"  {n.region:<15} {n.quota.code}  {n.quota.name:<38} need {n.vcpus:>7,}  have {int(c.have):>7,}{source}  {status}")
        print(f"  {'':<15} {'':<10}  for {n.gpus} GPUs")
    short = [c for c in checks if c.short]
    if short:
        print("\nrequest increases before `pulumi up` (Service Quotas console, or):")
        for c in short:
            print(
                f"  aws service-quotas request-service-quota-increase --region {c.need.region} --service-code {SERVICE_CODE} "
                f"--quota-code {c.need.quota.code} --desired-value {c.need.vcpus}"
            )


def _cmd_quotas_check(args, client_for: Callable[[str], Any] | None = None) -> int:
    from .config import parse_stack_config, read_stack_file
    from .plan import plan_stack
    from .preview_cli import stack_file

    name, raw = read_stack_file(stack_file(args.stack))
    plan = plan_stack(parse_stack_config(raw))
    checks = check_quotas(plan_quota_needs(plan), client_for)
    if args.json:
        print(json.dumps({
            "stack": name,
            "ok": not any(c.short for c in checks),
            "quotas": [
                {"region": c.need.region, "code": c.need.quota.code, "name": c.need.quota.name, "need_vcpus": c.need.vcpus,
                 "have_vcpus": c.have, "aws_default": c.default, "short_vcpus": c.short, "instances": c.need.instances}
                for c in checks
            ],
        }, indent=2))
    else:
        _print(name, checks)
    return EXIT_SHORT if any(c.short for c in checks) else EXIT_OK


def add_quotas_parser(sub) -> None:
    q = sub.add_parser("quotas", help="EC2 GPU vCPU quotas the stack needs vs the account's (Service Quotas API)")
    qsub = q.add_subparsers(dest="quotas_command", required=True, parser_class=type(q))
    c = qsub.add_parser("check", help="compare the plan's quota needs per region with the account; exit 1 when short")
    c.add_argument("--stack", required=True, help="dev | prod | PATH/Pulumi.<stack>.yaml")
    c.add_argument("--json", action="store_true", help="print one JSON object")
    c.set_defaults(handler=_cmd_quotas_check)


__all__ = ["QuotaCheck", "account_quota", "add_quotas_parser", "check_quotas", "plan_quota_needs"]
