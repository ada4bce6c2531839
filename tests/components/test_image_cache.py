"""components/image_cache.py and the pull-through helpers in components/vllm.py: the ECR pull-through cache rule
for Docker Hub, its IAM, the rewritten image URIs, and the stack wiring (on by default in prod, per region)."""

from __future__ import annotations

import json
from pathlib import Path

import pulumi
import pulumi_aws as aws
import pytest
import yaml

from components.ecs_vllm_task import execution_policy
from components.image_cache import ImageCache, ImageCacheArgs, pull_policy, repository_prefix
from components.sizing.errors import InputError
from components.vllm import ecr_repository_arn, is_docker_hub_image, pull_through_image
from stacks.cli import main as cli
from stacks.config import parse_stack_config
from stacks.offline import ACCOUNT_ID, run_offline
from stacks.preview_cli import run_stack

ROOT = Path(__file__).resolve().parents[2]
SECRET = "ecr-pullthroughcache/docker-hub"


@pytest.mark.parametrize(
    "image, uri",
    [
        ("vllm/vllm-openai:v0.29.0", "123456789012.dkr.ecr.eu-west-1.amazonaws.com/p/vllm/vllm-openai:v0.29.0"),
        ("docker.io/vllm/vllm-openai:v0.29.0", "123456789012.dkr.ecr.eu-west-1.amazonaws.com/p/vllm/vllm-openai:v0.29.0"),
        ("ubuntu:24.04", "123456789012.dkr.ecr.eu-west-1.amazonaws.com/p/library/ubuntu:24.04"),
    ],
)
def test_pull_through_image(image, uri):
    assert pull_through_image(image, "123456789012", "eu-west-1", "p") == uri
    assert ecr_repository_arn(uri) == "arn:aws:ecr:eu-west-1:123456789012:repository/" + uri.split("/", 1)[1].rsplit(":", 1)[0]


@pytest.mark.parametrize("image", ["public.ecr.aws/x/y:1", "ghcr.io/a/b:1", "localhost:5000/a:1", "1.dkr.ecr.us-east-1.amazonaws.com/a:1"])
def test_only_docker_hub_images_are_rewritten(image):
    assert not is_docker_hub_image(image)
    with pytest.raises(ValueError):
        pull_through_image(image, "1", "us-east-1", "p")


@pytest.mark.parametrize("stack, prefix", [("prod", "prod-docker-hub"), ("a-very-long-stack-name-for-acme", "a-very-long-stack-n-docker-hub")])
def test_repository_prefix_fits_ecr(stack, prefix):
    assert repository_prefix(stack) == prefix and 2 <= len(prefix) <= 30


class _Region(pulumi.ComponentResource):
    def __init__(self, **kw):
        super().__init__("vllm-fleet:test:Region", "r", {}, None)
        provider = aws.Provider("aws-euw1", region="eu-west-1", opts=pulumi.ResourceOptions(parent=self))
        self.cache = ImageCache("c", ImageCacheArgs(region="eu-west-1", credential_secret_name=SECRET, **kw),
                                opts=pulumi.ResourceOptions(parent=self, providers={"aws": provider}))
        self.cache.allow("node", "node-role")
        self.register_outputs({})


def test_rule_policy_and_attachment():
    made = {}
    run = run_offline(lambda: made.setdefault("r", _Region(repository_prefix="prod-docker-hub")))
    rule = run.one("aws:ecr/pullThroughCacheRule:PullThroughCacheRule", "c-rule").inputs
    assert rule["ecrRepositoryPrefix"] == "prod-docker-hub"
    assert rule["upstreamRegistryUrl"] == "registry-1.docker.io"
    # ECR needs the secret in the rule's own region: it is looked up through the region's provider.
    assert rule["credentialArn"] == f"arn:aws:secretsmanager:eu-west-1:{ACCOUNT_ID}:secret:{SECRET}-AbCdEf"
    doc = json.loads(run.one("aws:iam/policy:Policy", "c-pull").inputs["policy"])
    assert doc == pull_policy(f"arn:aws:ecr:eu-west-1:{ACCOUNT_ID}:repository/prod-docker-hub")
    assert doc["Statement"][0]["Action"] == ["ecr:BatchImportUpstreamImage", "ecr:CreateRepository"]
    att = run.one("aws:iam/rolePolicyAttachment:RolePolicyAttachment", "node-image-cache").inputs
    assert att["role"] == "node-role" and att["policyArn"].endswith("c-pull")
    assert made["r"].cache.image_uri("vllm/vllm-openai:v0.29.0") == (
        f"{ACCOUNT_ID}.dkr.ecr.eu-west-1.amazonaws.com/prod-docker-hub/vllm/vllm-openai:v0.29.0"
    )


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"credential_secret_name": "docker-hub"}, ("credential_secret_name", "must start with 'ecr-pullthroughcache/'")),
        ({"repository_prefix": "Docker_Hub!"}, ("repository_prefix", "must be 2-30 lower-case letters, digits and . _ - /")),
    ],
)
def test_args_refused(kw, message):
    with pytest.raises(InputError) as err:
        run_offline(lambda: ImageCache("c", {"region": "us-east-1", "credential_secret_name": SECRET, **kw}))
    assert err.value.field == message[0] and message[1] in err.value.message


def test_ecs_execution_role_may_pull_through_its_own_cache_repository():
    image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/prod-docker-hub/vllm/vllm-openai:v0.29.0"
    doc = execution_policy("arn:aws:logs:us-east-1:1:log-group:g", [], [], image)
    ptc = [s for s in doc["Statement"] if s["Sid"] == "EcrPullThroughCache"]
    assert ptc == [{
        "Sid": "EcrPullThroughCache", "Effect": "Allow", "Action": ["ecr:BatchImportUpstreamImage", "ecr:CreateRepository"],
        "Resource": "arn:aws:ecr:us-east-1:123456789012:repository/prod-docker-hub/vllm/vllm-openai",
    }]
    assert not [s for s in execution_policy("arn:g", [], [], False)["Statement"] if s["Sid"].startswith("Ecr")]


# ----- the stacks ------------------------------------------------------------------------------------------


def test_prod_pulls_the_vllm_image_through_each_regions_cache():
    result = run_stack(str(ROOT / "Pulumi.prod.yaml"))
    deployments = result.run.of_type("kubernetes:apps/v1:Deployment") + result.run.of_type("kubernetes:leaderworkerset.x-k8s.io/v1:LeaderWorkerSet")
    images = {}
    for d in deployments:
        spec = d.inputs["spec"]
        pod = spec["template"]["spec"] if "template" in spec else spec["leaderWorkerTemplate"]["leaderTemplate"]["spec"]
        vllm = [c["image"] for c in pod["containers"] if "vllm-openai" in c["image"]]
        if vllm:
            images[d.name] = vllm[0]
    assert images, "no vLLM workload found"
    for name, image in images.items():
        region = {"use1": "us-east-1", "usw2": "us-west-2", "euw1": "eu-west-1"}[name.split("-")[1]]
        assert image == f"{ACCOUNT_ID}.dkr.ecr.{region}.amazonaws.com/prod-docker-hub/vllm/vllm-openai:v0.29.0", name
    rules = result.run.of_type("aws:ecr/pullThroughCacheRule:PullThroughCacheRule")
    assert sorted(r.inputs["credentialArn"].split(":")[3] for r in rules) == ["eu-west-1", "us-east-1", "us-west-2"]


def test_dev_pulls_from_docker_hub_by_default():
    result = run_stack(str(ROOT / "Pulumi.dev.yaml"))
    assert not result.run.of_type("aws:ecr/pullThroughCacheRule:PullThroughCacheRule")


BASE = {"vllm-fleet:tier": "small", "vllm-fleet:platform": "eks", "aws:region": "us-east-1"}


def test_prod_without_a_docker_hub_secret_is_one_line(tmp_path, capsys):
    path = tmp_path / "Pulumi.p.yaml"
    path.write_text(yaml.safe_dump({"config": {**BASE, "vllm-fleet:environment": "prod"}}))
    assert cli(["preview", "--stack", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        "vllm-fleet: error: vllm-fleet:dockerHubCredentialSecret: required while imagePullThroughCache is on (the prod default)"
    ) and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "extra, cache",
    [
        ({"vllm-fleet:environment": "prod", "vllm-fleet:imagePullThroughCache": "false"}, False),
        ({"vllm-fleet:imagePullThroughCache": "true", "vllm-fleet:dockerHubCredentialSecret": SECRET}, True),
        ({}, False),
    ],
)
def test_cache_defaults_and_opt_out(extra, cache):
    assert parse_stack_config({**BASE, **extra}).effective_image_cache is cache


def test_secret_name_prefix_refused():
    with pytest.raises(InputError) as err:
        parse_stack_config({**BASE, "vllm-fleet:dockerHubCredentialSecret": "dockerhub"})
    assert str(err.value) == "vllm-fleet:dockerHubCredentialSecret: 'dockerhub' must start with 'ecr-pullthroughcache/' (ECR only uses secrets named so)"
