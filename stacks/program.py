"""The Pulumi program: stack config -> plan -> components, per region; then one endpoint over the regions.

`__main__.py` calls `main()` under `pulumi up` / `pulumi preview`; `vllm-fleet preview` and `synth` run the
same `main()` under the mock runtime (stacks/offline.py).
"""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_random as random

from components.ecs_cluster import EcsClusterOptions
from components.gpu_cluster import GpuCluster, GpuClusterArgs
from components.lora_store import LoraStore, LoraStoreArgs
from components.multi_region_lb import MultiRegionLB, MultiRegionLBArgs, RegionalEndpoint
from components.spot_node_pool import SpotNodePool, SpotNodePoolArgs
from components.vllm import VllmEngine

from .config import NAMESPACE, StackConfig, parse_stack_config
from .plan import ModelDeployment, StackPlan, plan_stack
from .tiers import lora_for



class Deployment(pulumi.ComponentResource):
    """The root of a vllm-fleet stack: its props carry what the budget policy needs (plain values)."""

    def __init__(self, name: str, plan: StackPlan, opts: pulumi.ResourceOptions | None = None):
        summary = plan.summary()
        props = {
            "tier": plan.config.tier,
            "platform": plan.config.platform,
            "environment": plan.config.environment,
            "regions": plan.config.regions,
            "monthly_budget_usd": plan.config.monthly_budget_usd,
            "cost_per_month_usd": summary["cost_per_month_usd"],
            "cost_per_month_at_max_scale_usd": summary["cost_per_month_at_max_scale_usd"],
        }
        super().__init__("vllm-fleet:index:Deployment", name, props, opts)
        self.props = props


def _region_code(region: str) -> str:
    """AWS's short region code (use1, usw2, euw1, apne1): short physical names, stable for any region."""
    from .offline import region_code

    return region_code(region)


def _api_key(name: str, parent: pulumi.Resource, opts: pulumi.ResourceOptions) -> tuple[random.RandomPassword, aws.secretsmanager.Secret]:
    """A generated API key kept in Secrets Manager: clients send it as `Authorization: Bearer ...`."""
    key = random.RandomPassword(f"{name}-api-key", length=48, special=False, opts=pulumi.ResourceOptions(parent=parent))
    secret = aws.secretsmanager.Secret(
        f"{name}-api-key",
        description="vLLM API key (VLLM_API_KEY) clients must send",
        recovery_window_in_days=7,
        opts=opts,
    )
    aws.secretsmanager.SecretVersion(f"{name}-api-key", secret_id=secret.id, secret_string=key.result, opts=opts)
    return key, secret


def _engine(md: ModelDeployment, lora_serving: Any, image_cache: Any = None) -> VllmEngine:
    engine = VllmEngine(model=md.model, served_model_name=md.served_model_name, engine=md.engine)
    if image_cache is not None:
        engine = engine.model_copy(update={"image": image_cache.image_uri(engine.image)})
    if lora_serving is not None:
        engine = lora_serving.apply_to_engine(engine)
    return engine


def _image_cache(base: str, stack: str, region: str, cluster: GpuCluster, config: StackConfig, opts):
    """The region's ECR pull-through cache of Docker Hub (prod default), with the EKS node roles allowed to pull
    through it (ECS task execution roles get the same actions from EcsVllmTask, scoped to their image)."""
    if not config.effective_image_cache:
        return None
    from components.image_cache import ImageCache, ImageCacheArgs, repository_prefix

    cache = ImageCache(
        f"{base}-image-cache",
        ImageCacheArgs(region=region, credential_secret_name=config.docker_hub_credential_secret, repository_prefix=repository_prefix(stack)),
        opts=opts,
    )
    if config.platform == "eks":
        karpenter = getattr(cluster, "karpenter", None)
        if karpenter is not None:
            cache.allow(f"{base}-karpenter-node", karpenter.node_role.name)
        if getattr(cluster, "node_role", None) is not None:
            cache.allow(f"{base}-node", cluster.node_role.name)
    return cache


def _node_pool(name: str, md: ModelDeployment, cluster: GpuCluster, engine: VllmEngine, config: StackConfig, lora_serving, opts) -> SpotNodePool:
    spot = md.spot_fraction > 0
    root_volume = None
    if lora_serving is not None and config.platform == "ecs":
        from components.ecs_vllm_task import lora_root_volume_gib

        # ECS keeps the adapter cache on the instance's root volume: size it for weights + adapters.
        root_volume = lora_root_volume_gib(engine.download_gib(), lora_serving.cache_size_gib)
    return SpotNodePool(
        name,
        SpotNodePoolArgs(
            cluster=cluster,
            instance_types=[md.instance_type],
            spot=spot,
            min_nodes=md.nodes_min if config.platform == "ecs" else 0,
            max_nodes=md.nodes_max,
            # What is downloaded (the checkpoint), not what sits in GPU memory after --quantization fp8.
            model_weights_gib=round(engine.download_gib(), 1),
            root_volume_gib=root_volume,
            attach_to_cluster=False,
            region=md.region,
            spot_fraction=md.spot_fraction,
            # ECS: an on-demand base that keeps half the steady state up whatever spot does.
            on_demand_base=max(1, md.nodes_min // 2) if config.environment == "prod" else 0,
            spot_percentage=int(round(md.spot_fraction * 100)),
            ami_version=config.effective_ami_version,
            images=[engine.image],
        ),
        opts=opts,
    )


def _ecs_service(name, md, cluster, pool, engine, api_secret, hf_token_secret_arn, index, several, lora_serving, association, opts):
    from components.ecs_vllm_task import EcsVllmTask, EcsVllmTaskArgs

    routing: dict[str, Any] = {"priority": 100 + index}
    if several:
        routing.update(path_pattern=f"/{md.key}/*", strip_path_prefix=f"/{md.key}")
    return EcsVllmTask(
        name,
        EcsVllmTaskArgs(
            cluster=cluster,
            node_pool=pool,
            engine=engine,
            api_key_secret_arn=api_secret.arn,
            hf_token_secret_arn=hf_token_secret_arn,
            min_count=md.replicas_min,
            max_count=md.replicas_max,
            region=md.region,
            spot_fraction=md.spot_fraction,
            lora=lora_serving,
            capacity_provider_association=association,
            **routing,
        ),
        opts=opts,
    )


def _eks_service(name, md, cluster, pool, engine, api_key, lora_serving, endpoint, opts):
    from components.vllm_service import VllmService, VllmServiceArgs

    return VllmService(
        name,
        VllmServiceArgs(
            cluster=cluster,
            node_pool=pool,
            engine=engine,
            min_replicas=md.replicas_min,
            max_replicas=md.replicas_max,
            api_key_value=api_key.result,
            lora=lora_serving,
            region=md.region,
            spot_fraction=md.spot_fraction,
            **endpoint.vllm_service_args(md.key),
        ),
        opts=opts,
    )


def build(config: StackConfig, stack: str) -> dict[str, Any]:
    """Create every resource of the stack; returns the stack outputs."""
    plan = plan_stack(config)
    root = Deployment(stack, plan)
    several_models = len({m.key for m in plan.models}) > 1
    lora = lora_for(config)
    endpoints: dict[str, Any] = {}
    # ECS: one ALB per region routes every model; EKS: one NLB per model per region.
    regional: dict[str, list[RegionalEndpoint]] = {}
    for region in config.regions:
        code = _region_code(region)
        base = f"{stack}-{code}"
        provider = aws.Provider(f"aws-{code}", region=region, opts=pulumi.ResourceOptions(parent=root))
        opts = pulumi.ResourceOptions(parent=root, providers={"aws": provider})
        cluster_args: dict[str, Any] = {"platform": config.platform, "environment": config.environment}
        if config.platform == "eks" and config.prometheus_url is not None:
            cluster_args.update(
                prometheus_url=config.prometheus_url,
                prometheus_operator_crds_installed=config.prometheus_operator_crds_installed,
            )
        if config.platform == "ecs":
            cluster_args["ecs"] = EcsClusterOptions(
                domain=config.domain,
                hosted_zone_id=config.hosted_zone_id,
                allow_plain_http=config.allow_plain_http and not config.domain,
                allowed_cidrs=config.allowed_cidrs,
            )
        cluster = GpuCluster(base, GpuClusterArgs(**cluster_args), opts=opts)
        image_cache = _image_cache(base, stack, region, cluster, config, opts)
        lora_serving = None
        if lora is not None:
            served = [m for m in plan.models if m.region == region]
            store = LoraStore(
                f"{base}-lora",
                LoraStoreArgs(
                    base_model=served[0].model,
                    tenants=max(lora.tenants, 1),
                    max_loras=lora.max_loras,
                    max_lora_rank=lora.max_lora_rank,
                    # dev: `pulumi destroy` deletes the adapters with the bucket; prod: bucket and key stay in AWS.
                    force_destroy=config.environment == "dev",
                    retain_on_delete=config.environment == "prod",
                ),
                opts=opts,
            )
            lora_serving = store.serving_settings()
        api_key, api_secret = _api_key(base, root, opts)
        here = [m for m in plan.models if m.region == region]
        engines = [_engine(md, lora_serving, image_cache) for md in here]
        pools = [_node_pool(f"{base}-{md.key}-pool", md, cluster, engine, config, lora_serving, opts) for md, engine in zip(here, engines)]
        association = endpoint = None
        if config.platform == "eks":
            from components.regional_endpoint import RegionalEndpointLB, RegionalEndpointLBArgs

            # One NLB per model (TLS on 443) in front of the pods, bound by the AWS Load Balancer Controller.
            endpoint = RegionalEndpointLB(
                f"{base}-endpoint",
                RegionalEndpointLBArgs(
                    cluster=cluster,
                    services=[md.key for md in here],
                    environment=config.environment,
                    domain=config.domain,
                    hosted_zone_id=config.hosted_zone_id,
                    allowed_cidrs=config.allowed_cidrs,
                    allow_plain_tcp=config.allow_plain_http and not config.domain,
                ),
                opts=opts,
            )
        if config.platform == "ecs":
            from components.ecs_capacity import attach_capacity_providers

            # One association for every pool of the cluster (ECS keeps a single list per cluster).
            association = attach_capacity_providers(cluster, base, cluster.cluster_name, [p.capacity_provider_name for p in pools])
        for index, (md, engine, pool) in enumerate(zip(here, engines, pools)):
            name = f"{base}-{md.key}"
            if config.platform == "ecs":
                _ecs_service(name, md, cluster, pool, engine, api_secret, config.hf_token_secret_arn, index, several_models, lora_serving, association, opts)
            else:
                _eks_service(name, md, cluster, pool, engine, api_key, lora_serving, endpoint, opts)
        if config.platform == "ecs":
            alb = cluster.ecs.alb
            endpoints[region] = alb.dns_name
            regional.setdefault("all", []).append(
                RegionalEndpoint(region=region, dns_name=alb.dns_name, zone_id=alb.zone_id, load_balancer_arn=alb.arn, internal=True)
            )
        else:
            endpoints[region] = {md.key: endpoint.dns_names[md.key] for md in here}
            for md in here:
                regional.setdefault(md.key, []).append(endpoint.regional_endpoint(md.key, region))
    outputs: dict[str, Any] = {"endpoints": endpoints, "plan": plan.summary()}
    if len(config.regions) > 1:
        # The regional load balancers are internal: Global Accelerator reaches them (Route 53 health checkers
        # cannot), keeps a client on one region (prefix cache) and fails over in seconds, not a DNS TTL.
        hostnames = {}
        for key, group in regional.items():
            host = config.domain if key == "all" or len(regional) == 1 else (f"{key}.{config.domain}" if config.domain else None)
            lb = MultiRegionLB(
                f"{stack}-global" if key == "all" else f"{stack}-{key}-global",
                MultiRegionLBArgs(
                    mode="global_accelerator",
                    endpoints=group,
                    hostname=host,
                    hosted_zone_id=config.hosted_zone_id if host else None,
                ),
                opts=pulumi.ResourceOptions(parent=root),
            )
            hostnames[key] = lb.hostname
        outputs["hostname"] = hostnames.get("all") or hostnames
    outputs["cost_per_hour_usd"] = round(plan.cost_per_hour, 2)
    outputs["cost_per_month_usd"] = round(plan.cost_per_month, 2)
    root.register_outputs({**root.props, "plan": plan.summary()})
    return outputs


def read_config() -> StackConfig:
    """This stack's config as the engine gives it (all keys, so a misspelt one is reported, not ignored)."""
    raw = dict(pulumi.runtime.config.CONFIG.get())
    if "aws:region" not in raw:
        region = pulumi.Config("aws").get("region")
        if region:
            raw["aws:region"] = region
    return parse_stack_config({k: v for k, v in raw.items() if k.startswith(f"{NAMESPACE}:") or k == "aws:region"})


def main() -> None:
    config = read_config()
    outputs = build(config, pulumi.get_stack())
    for key, value in outputs.items():
        pulumi.export(key, value)
