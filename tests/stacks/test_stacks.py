"""The stack program end to end, offline: every tier x platform, the budget, misfits, bad config, synth."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from stacks.cli import main as cli
from stacks.preview_cli import run_stack

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"

COMBOS = [(tier, platform) for tier in ("small", "medium", "large") for platform in ("ecs", "eks")]


def stack_yaml(tmp_path: Path, name: str, **config) -> Path:
    """Write Pulumi.<name>.yaml with vllm-fleet keys (camelCase as users write them)."""
    body = {"aws:region": "us-east-1"}
    body.update({f"vllm-fleet:{k}": v for k, v in config.items()})
    path = tmp_path / f"Pulumi.{name}.yaml"
    path.write_text(yaml.safe_dump({"config": body}))
    return path


def tier_config(tier: str, platform: str, **extra) -> dict:
    config = {"tier": tier, "platform": platform}
    if tier == "large":
        config.update(
            environment="prod",
            regions=["us-east-1", "us-west-2", "eu-west-1"],
            domain="llm.example.com",
            hostedZoneId="Z0123456789ABCDEFGHIJ",
        )
    else:
        config.update(environment="dev", allowPlainHttp=True)
    config.update(extra)
    return config


def planned_monthly(tmp_path, tier, platform) -> float:
    result = run_stack(str(stack_yaml(tmp_path, f"{tier}-{platform}-probe", **tier_config(tier, platform))))
    return result.plan.cost_per_month_max


@pytest.mark.parametrize("tier, platform", COMBOS, ids=[f"{t}-{p}" for t, p in COMBOS])
def test_every_tier_and_platform_previews_within_a_budget_with_margin(tmp_path, tier, platform):
    budget = round(planned_monthly(tmp_path, tier, platform) * 1.3)
    result = run_stack(str(stack_yaml(tmp_path, f"{tier}-{platform}", **tier_config(tier, platform, monthlyBudgetUsd=budget))))
    assert result.mandatory_failures == [], [r.message for r in result.mandatory_failures]
    kinds = {r.type for r in result.run.resources}
    assert "vllm-fleet:index:GpuCluster" in kinds and "vllm-fleet:index:SpotNodePool" in kinds
    assert ("vllm-fleet:index:EcsVllmTask" if platform == "ecs" else "vllm-fleet:index:VllmService") in kinds
    if tier == "large":
        assert "vllm-fleet:index:MultiRegionLB" in kinds and "vllm-fleet:index:LoraStore" in kinds
        assert len(result.run.of_type("vllm-fleet:index:GpuCluster")) == 3


@pytest.mark.parametrize("tier, platform", COMBOS, ids=[f"{t}-{p}" for t, p in COMBOS])
def test_a_budget_20_percent_under_the_cost_fails_naming_both(tmp_path, tier, platform):
    cost = planned_monthly(tmp_path, tier, platform)
    budget = round(cost * 0.8)
    result = run_stack(str(stack_yaml(tmp_path, f"{tier}-{platform}", **tier_config(tier, platform, monthlyBudgetUsd=budget))))
    messages = [r.message for r in result.mandatory_failures if r.policy == "monthly-budget"]
    assert messages, [r.message for r in result.results]
    assert f"${budget:,.0f}" in messages[0] or f"${budget:,.2f}" in messages[0]
    assert "exceeds the monthly budget" in messages[0]


def test_a_model_that_does_not_fit_fails_preview_with_the_fit_message(tmp_path, capsys):
    path = stack_yaml(
        tmp_path,
        "misfit",
        **tier_config("small", "ecs", models=[{"model": "meta-llama/Llama-3.1-70B-Instruct", "instanceType": "g5.xlarge", "tensorParallelSize": 1}]),
    )
    code = cli(["preview", "--stack", str(path)])
    err = capsys.readouterr().err
    assert code == 1
    assert "meta-llama/Llama-3.1-70B-Instruct on A10G (TP 1 x PP 1): does not fit" in err
    assert "Would fit:" in err


@pytest.mark.parametrize(
    "config, line",
    [
        ({"tier": "huge", "platform": "ecs"}, "vllm-fleet: error: vllm-fleet:tier: got 'huge'; input should be 'small', 'medium' or 'large'"),
        ({"tier": "small", "platform": "k8s"}, "vllm-fleet: error: vllm-fleet:platform: got 'k8s'; input should be 'ecs' or 'eks'"),
        ({"tier": "small", "platform": "ecs", "monthlyBudgetUsd": -1}, "vllm-fleet: error: vllm-fleet:monthlyBudgetUsd: got -1; input should be greater than 0"),
        ({"tier": "small", "platform": "ecs", "regions": ["mars-1"]}, "vllm-fleet: error: vllm-fleet:regions: 'mars-1' has no price catalog; use eu-west-1, us-east-1, us-west-2"),
        ({"tier": "small", "platform": "ecs", "tiers": "small"}, "vllm-fleet: error: vllm-fleet:tiers: unknown key; did you mean vllm-fleet:tier?"),
        ({"tier": "small", "platform": "ecs", "models": [{"model": "no/such-model"}]}, "vllm-fleet: error: vllm-fleet:models[0].model: unknown model 'no/such-model'"),
    ],
)
def test_bad_config_is_one_line_and_exit_2(tmp_path, capsys, config, line):
    code = cli(["preview", "--stack", str(stack_yaml(tmp_path, "bad", **config))])
    out, err = capsys.readouterr()
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert err.strip().startswith(line)


def test_two_8b_models_side_by_side(tmp_path):
    config = tier_config("small", "ecs", models=[{"model": "meta-llama/Llama-3.1-8B-Instruct"}, {"model": "Qwen/Qwen2.5-7B-Instruct"}])
    result = run_stack(str(stack_yaml(tmp_path, "two", **config)))
    tasks = result.run.of_type("vllm-fleet:index:EcsVllmTask")
    assert sorted(t.name for t in tasks) == ["two-use1-llama-3-1-8b", "two-use1-qwen2-5-7b"]
    # ECS keeps one capacity-provider list per cluster: both pools are attached by one resource.
    assocs = result.run.of_type("aws:ecs/clusterCapacityProviders:ClusterCapacityProviders")
    assert len(assocs) == 1 and len(assocs[0].inputs["capacityProviders"]) == 2
    rules = sorted(r.inputs["conditions"][0]["pathPattern"]["values"][0] for r in result.run.of_type("aws:lb/listenerRule:ListenerRule"))
    assert rules == ["/llama-3-1-8b/*", "/qwen2-5-7b/*"]


def test_resource_count_does_not_depend_on_lora_tenants(tmp_path):
    counts = []
    for tenants in (10, 2000):
        config = tier_config("large", "ecs", lora={"maxLoras": 8, "maxLoraRank": 64, "tenants": tenants})
        result = run_stack(str(stack_yaml(tmp_path, f"t{tenants}", **config)))
        counts.append(sorted((r.type, r.name.replace(f"t{tenants}", "t")) for r in result.run.resources))
    assert counts[0] == counts[1]


def test_the_shipped_stacks_preview_clean(capsys):
    for stack in ("dev", "prod"):
        result = run_stack(str(ROOT / f"Pulumi.{stack}.yaml"))
        assert result.mandatory_failures == [], (stack, [r.message for r in result.mandatory_failures])


SYNTH_STACKS = ["dev", "prod"] + [f"{t}-{p}" for t, p in COMBOS]


@pytest.mark.parametrize("stack", SYNTH_STACKS)
def test_synth_output_passes_the_schemas(tmp_path, stack):
    import botocore.session
    from botocore.validate import ParamValidator

    import kubernetes_validate

    if stack in ("dev", "prod"):
        path = ROOT / f"Pulumi.{stack}.yaml"
    else:
        tier, platform = stack.split("-")
        path = stack_yaml(tmp_path, stack, **tier_config(tier, platform))
    out = tmp_path / "out"
    assert cli(["synth", "--stack", str(path), "--out", str(out)]) == 0
    resources = json.loads((out / "resources.json").read_text())
    assert resources and {"type", "name", "parent", "inputs"} <= set(resources[0])
    ecs_model = botocore.session.get_session().get_service_model("ecs")
    shape = ecs_model.operation_model("RegisterTaskDefinition").input_shape
    for task in sorted((out / "ecs").glob("*.json")) if (out / "ecs").exists() else []:
        report = ParamValidator().validate(json.loads(task.read_text()), shape)
        assert not report.has_errors(), report.generate_report()
    manifests = sorted((out / "kubernetes").glob("*.yaml")) if (out / "kubernetes").exists() else []
    custom = []
    for path in manifests:
        doc = yaml.safe_load(path.read_text())
        group = doc["apiVersion"].split("/")[0] if "/" in doc["apiVersion"] else ""
        if group in ("", "apps", "policy", "networking.k8s.io", "autoscaling", "rbac.authorization.k8s.io"):
            kubernetes_validate.validate(doc, "1.34", strict=True)
        elif group != "elbv2.k8s.aws":  # no upstream CRD for TargetGroupBinding in shared/data/crds
            custom.append(path)
    if custom:
        proc = subprocess.run(
            [sys.executable, str(SHARED / "tools" / "validate_crs.py"), "--crds", str(SHARED / "data" / "crds"), *map(str, custom)],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
    if stack == "dev" or stack.endswith("ecs"):
        assert list((out / "ecs").glob("*.json"))
    else:
        assert manifests and custom
