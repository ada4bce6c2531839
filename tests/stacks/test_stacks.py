"""The stack program end to end, offline: every tier x platform, the budget, misfits, bad config, synth."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from stacks.cli import main as cli
from stacks.preview_cli import run_stack

ROOT = Path(__file__).resolve().parents[2]

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
            # prod pulls the vLLM image through an ECR cache of Docker Hub, which needs a Docker Hub credential
            dockerHubCredentialSecret="ecr-pullthroughcache/docker-hub",
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
        ({"tier": "small", "platform": "eks", "environment": "prod", "amiVersion": "latest", "dockerHubCredentialSecret": "ecr-pullthroughcache/d"},
         "vllm-fleet: error: vllm-fleet:amiVersion: 'latest' replaces every prod GPU node at each AMI release; pin a release such as 'v20260818'"),
        ({"tier": "small", "platform": "ecs", "amiVersion": "20240611"},
         "vllm-fleet: error: vllm-fleet:amiVersion: image vllm/vllm-openai:v0.29.0 is a CUDA 13.0 build needing NVIDIA driver R580+"),
        (
            {"tier": "small", "platform": "eks", "prometheusUrl": "http://prom.observability:9090"},
            "vllm-fleet: error: vllm-fleet:prometheusOperatorCrdsInstalled: must be true with vllm-fleet:prometheusUrl",
        ),
        (
            {"tier": "small", "platform": "eks", "prometheusUrl": "prom:9090", "prometheusOperatorCrdsInstalled": True},
            "vllm-fleet: error: vllm-fleet:prometheusUrl: 'prom:9090' is not an http(s) URL",
        ),
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


@pytest.fixture(scope="module")
def synthesized(tmp_path_factory):
    """`synth` once per stack for the module's tests: {stack: output folder}."""
    done: dict[str, Path] = {}

    def get(stack: str) -> Path:
        if stack not in done:
            tmp = tmp_path_factory.mktemp(f"synth-{stack}")
            if stack in ("dev", "prod"):
                path = ROOT / f"Pulumi.{stack}.yaml"
            else:
                tier, platform = stack.split("-")
                path = stack_yaml(tmp, stack, **tier_config(tier, platform))
            assert cli(["synth", "--stack", str(path), "--out", str(tmp / "out")]) == 0
            done[stack] = tmp / "out"
        return done[stack]

    return get


def _custom_resources(out: Path) -> list[Path]:
    manifests = sorted((out / "kubernetes").glob("*.yaml")) if (out / "kubernetes").exists() else []
    return [p for p in manifests if "/" in yaml.safe_load(p.read_text())["apiVersion"] and _group(p) not in CORE_GROUPS]


def _group(path: Path) -> str:
    api = yaml.safe_load(path.read_text())["apiVersion"]
    return api.split("/")[0] if "/" in api else ""


CORE_GROUPS = ("", "apps", "policy", "networking.k8s.io", "autoscaling", "rbac.authorization.k8s.io")


@pytest.mark.parametrize("stack", SYNTH_STACKS)
def test_synth_output_passes_the_schemas(synthesized, stack):
    import botocore.session
    from botocore.validate import ParamValidator

    import kubernetes_validate

    out = synthesized(stack)
    resources = json.loads((out / "resources.json").read_text())
    assert resources and {"type", "name", "parent", "inputs"} <= set(resources[0])
    ecs_model = botocore.session.get_session().get_service_model("ecs")
    shape = ecs_model.operation_model("RegisterTaskDefinition").input_shape
    for task in sorted((out / "ecs").glob("*.json")) if (out / "ecs").exists() else []:
        report = ParamValidator().validate(json.loads(task.read_text()), shape)
        assert not report.has_errors(), report.generate_report()
    manifests = sorted((out / "kubernetes").glob("*.yaml")) if (out / "kubernetes").exists() else []
    for path in manifests:
        if _group(path) in CORE_GROUPS:
            kubernetes_validate.validate(yaml.safe_load(path.read_text()), "1.34", strict=True)
    if stack == "dev" or stack.endswith("ecs"):
        assert list((out / "ecs").glob("*.json"))
    else:
        assert manifests and _custom_resources(out)


@pytest.mark.parametrize("stack", [s for s in SYNTH_STACKS if not (s == "dev" or s.endswith("ecs"))])
def test_synth_custom_resources_pass_the_crds(synthesized, stack, validate_crs):
    custom = _custom_resources(synthesized(stack))
    assert custom
    proc = validate_crs(*custom)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{len(custom)} validated" in proc.stdout, proc.stdout


def test_bring_your_own_prometheus_is_a_printed_prerequisite(tmp_path):
    config = tier_config("small", "eks", prometheusUrl="http://prom.observability:9090", prometheusOperatorCrdsInstalled=True)
    result = run_stack(str(stack_yaml(tmp_path, "byo-prom", **config)))
    assert not result.mandatory_failures
    assert [r.message for r in result.results if r.policy == "crd-prerequisites"] == [
        "prerequisite: the monitoring.coreos.com CRDs must already be in the cluster (declared; the kube-prometheus-stack "
        "chart 88.5.3 installs them)"
    ]
    assert not [r for r in result.run.resources if r.name.endswith("-kube-prometheus-stack")]
    scaled = [r for r in result.run.resources if r.type == "kubernetes:keda.sh/v1alpha1:ScaledObject"]
    assert scaled and all(r.inputs["spec"]["triggers"][0]["metadata"]["serverAddress"] == "http://prom.observability:9090" for r in scaled)
