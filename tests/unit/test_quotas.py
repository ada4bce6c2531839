"""EC2 GPU vCPU quotas: the plan's need per region and quota family (pure), preview's listing, and
`vllm-fleet quotas check` against the Service Quotas API (botocore Stubber: exact requests, exact output)."""

from __future__ import annotations

import json
from pathlib import Path

import botocore.session
import pytest
import yaml
from botocore.stub import Stubber

import stacks.quotas_cli as quotas_cli
from components.sizing.quotas import PoolAtMax, instance_family, quota_needs, shortfall
from stacks.cli import main as cli

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "instance, family",
    [("p4d.24xlarge", "P"), ("p5.48xlarge", "P"), ("p5en.48xlarge", "P"), ("g6e.xlarge", "G"), ("g5.12xlarge", "G"), ("m7i.large", None)],
)
def test_instance_family(instance, family):
    assert instance_family(instance) == family


def test_needs_count_spot_pools_in_both_markets_and_sum_per_region():
    needs = quota_needs([
        PoolAtMax("eu-west-1", "p4d.24xlarge", 36, spot=True),
        PoolAtMax("eu-west-1", "p5.48xlarge", 2, spot=False),
        PoolAtMax("us-east-1", "g6e.xlarge", 3, spot=True),
    ])
    assert [(n.region, n.quota.code, n.vcpus, n.instances) for n in needs] == [
        ("eu-west-1", "L-417A185B", 36 * 96 + 2 * 192, {"p4d.24xlarge": 36, "p5.48xlarge": 2}),
        ("eu-west-1", "L-7212CCBC", 36 * 96, {"p4d.24xlarge": 36}),
        ("us-east-1", "L-DB2E81BA", 12, {"g6e.xlarge": 3}),
        ("us-east-1", "L-3819A6DF", 12, {"g6e.xlarge": 3}),
    ]
    assert needs[1].gpus == "288 x A100-40GB"


@pytest.mark.parametrize("need, have, short", [(100, 100.0, 0), (100, 96.0, 4), (12, 0.0, 12), (10, 10.9, 0)])
def test_shortfall(need, have, short):
    assert shortfall(need, have) == short


def test_preview_shows_the_eu_west_1_a100_need(capsys):
    assert cli(["preview", "--stack", str(ROOT / "Pulumi.prod.yaml")]) == 0
    out = capsys.readouterr().out
    assert (
        "  eu-west-1  L-417A185B  Running On-Demand P instances           11,424 vCPUs  (119 x p4d.24xlarge = 952 x A100-40GB GPUs)"
        in out.splitlines()
    )
    assert "  prod-euw1-lora: the adapter bucket and its KMS key are RETAINED in AWS (delete them by hand)" in out.splitlines()


def _medium_eu(tmp_path) -> Path:
    path = tmp_path / "Pulumi.eu.yaml"
    config = {"aws:region": "eu-west-1", "vllm-fleet:tier": "medium", "vllm-fleet:platform": "eks", "vllm-fleet:environment": "prod",
              "vllm-fleet:dockerHubCredentialSecret": "ecr-pullthroughcache/docker-hub"}
    path.write_text(yaml.safe_dump({"config": config}))
    return path


def _stubbed(responses: dict[str, dict[str, float | None]]):
    """A client factory: per region, GetServiceQuota answers (None: no applied value -> the AWS default)."""
    stubs = []

    def factory(region):
        client = botocore.session.get_session().create_client(
            "service-quotas", region_name=region, aws_access_key_id="test", aws_secret_access_key="test"
        )
        stub = Stubber(client)
        for code, value in responses[region].items():
            params = {"ServiceCode": "ec2", "QuotaCode": code}
            if value is None:
                stub.add_client_error("get_service_quota", "NoSuchResourceException", "no applied quota", expected_params=params)
                stub.add_response("get_aws_default_service_quota", {"Quota": {"QuotaCode": code, "Value": 0.0}}, params)
            else:
                stub.add_response("get_service_quota", {"Quota": {"QuotaCode": code, "Value": value}}, params)
        stub.activate()
        stubs.append(stub)
        return client

    return factory, stubs


def test_quotas_check_short_exits_1_with_the_request_to_file(tmp_path, capsys, monkeypatch):
    factory, stubs = _stubbed({"eu-west-1": {"L-417A185B": 384.0, "L-7212CCBC": None}})
    monkeypatch.setattr(quotas_cli, "_client_factory", lambda: factory)
    assert cli(["quotas", "check", "--stack", str(_medium_eu(tmp_path))]) == 1
    out = capsys.readouterr().out.splitlines()
    for stub in stubs:
        stub.assert_no_pending_responses()
    assert out[1] == "  eu-west-1       L-417A185B  Running On-Demand P instances          need   3,456  have     384  SHORT by 3,072"
    assert out[2] == "                              for 288 x A100-40GB GPUs"
    assert out[3] == "  eu-west-1       L-7212CCBC  All P Spot Instance Requests           need   3,456  have       0 (AWS default)  SHORT by 3,456"
    assert out[-1] == (
        "  aws service-quotas request-service-quota-increase --region eu-west-1 --service-code ec2 --quota-code L-7212CCBC --desired-value 3456"
    )


def test_quotas_check_enough_exits_0_json(tmp_path, capsys, monkeypatch):
    factory, _ = _stubbed({"eu-west-1": {"L-417A185B": 4000.0, "L-7212CCBC": 3456.0}})
    monkeypatch.setattr(quotas_cli, "_client_factory", lambda: factory)
    assert cli(["quotas", "check", "--stack", str(_medium_eu(tmp_path)), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is True
    assert [(q["code"], q["need_vcpus"], q["have_vcpus"], q["short_vcpus"]) for q in doc["quotas"]] == [
        ("L-417A185B", 3456, 4000.0, 0), ("L-7212CCBC", 3456, 3456.0, 0)
    ]


def test_quotas_check_access_denied_is_one_line_exit_2(tmp_path, capsys, monkeypatch):
    def factory(region):
        client = botocore.session.get_session().create_client(
            "service-quotas", region_name=region, aws_access_key_id="test", aws_secret_access_key="test"
        )
        stub = Stubber(client)
        stub.add_client_error("get_service_quota", "AccessDeniedException", "not allowed")
        stub.activate()
        return client

    monkeypatch.setattr(quotas_cli, "_client_factory", lambda: factory)
    assert cli(["quotas", "check", "--stack", str(_medium_eu(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert err == "vllm-fleet: error: servicequotas: eu-west-1: AccessDeniedException: not allowed (needs servicequotas:GetServiceQuota)\n"


def test_quotas_check_without_credentials_is_one_line_exit_2(tmp_path, capsys, monkeypatch):
    for var in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                "AWS_SECURITY_TOKEN", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    assert cli(["quotas", "check", "--stack", str(_medium_eu(tmp_path))]) == 2
    assert capsys.readouterr().err == (
        "vllm-fleet: error: credentials: no AWS credentials found; set AWS_PROFILE (or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY) "
        "for the target account\n"
    )


@pytest.mark.parametrize(
    "argv, line",
    [
        (["quotas", "check", "--stack", "nosuch"], "vllm-fleet: error: --stack: no Pulumi.nosuch.yaml in"),
        (["quotas", "check"], "vllm-fleet: error: vllm-fleet quotas check: the following arguments are required: --stack"),
    ],
)
def test_quotas_check_bad_input_exit_2(capsys, argv, line):
    assert cli(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(line) and len(err.strip().splitlines()) == 1
