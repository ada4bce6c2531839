"""`vllm-fleet` command line (also `python -m stacks`).

Exit codes: 0 fits / planned / done, 1 does not fit / no plan / a mandatory policy failed / AWS error,
2 bad input (one line on stderr naming the flag and what is allowed; never a traceback).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Callable, Sequence

from components.sizing.errors import DoesNotFit, InputError

EXIT_OK, EXIT_NO, EXIT_BAD_INPUT = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad flags as one line and exit 2, like every other input error."""

    def error(self, message: str) -> None:  # pragma: no cover - exercised through main()
        raise InputError(self.prog, _did_you_mean(message))


def _did_you_mean(message: str) -> str:
    """argparse's "invalid choice: 'modls' (choose from ...)" plus the closest choice (stdlib difflib)."""
    import difflib
    import re

    found = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
    if not found:
        return message
    choices = re.findall(r"'([^']*)'", found.group(2))
    close = difflib.get_close_matches(found.group(1), choices, n=1)
    if message.startswith("argument command:"):
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"unknown command {found.group(1)!r}; {hint}commands: {', '.join(choices)}"
    return f"{message}; did you mean {close[0]!r}?" if close else message


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, got {text}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be from 0 to 1, got {text}")
    return value


def _load_model(model: str | None, model_config: str | None):
    """The model from --model or --model-config (errors name the flag)."""
    from components.sizing.models import load_config_file, resolve_model

    return load_config_file(model_config) if model_config else resolve_model(model)


# ----- fit ---------------------------------------------------------------------------------------------------


def _add_fit(sub) -> None:
    p = sub.add_parser("fit", help="does a model fit these GPUs (vLLM's start-up memory check, offline)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="Hugging Face id or alias from the catalog (vllm-fleet models list)")
    src.add_argument("--model-config", help="path to a config.json (or a folder holding one)")
    gpu = p.add_mutually_exclusive_group(required=True)
    gpu.add_argument("--gpu", help="GPU name: T4, A10G, L4, L40S, A100-40GB, A100-80GB, H100, H200, B200")
    gpu.add_argument("--gpu-memory-gib", type=_positive_float, help="GPU memory as the driver reports it, GiB")
    p.add_argument("--tp", type=_positive_int, default=1, help="tensor parallel size (default 1)")
    p.add_argument("--pp", type=_positive_int, default=1, help="pipeline parallel size (default 1)")
    p.add_argument("--dtype", default="auto", help="auto | bfloat16 | float16 | float32")
    p.add_argument("--quantization", default=None, help="fp8 (at load time) or the checkpoint's method")
    p.add_argument("--kv-cache-dtype", default="auto", help="auto | fp8 | fp8_e4m3 | fp8_e5m2")
    p.add_argument("--max-model-len", type=_positive_int, help="default: the model's maximum context")
    p.add_argument("--max-num-seqs", type=_positive_int, help="default: vLLM's default for the GPU")
    p.add_argument("--max-num-batched-tokens", type=_positive_int, help="default: vLLM's default for the GPU")
    p.add_argument("--gpu-memory-utilization", type=_fraction, default=0.9, help="default 0.9")
    p.add_argument("--enforce-eager", action="store_true", help="no CUDA graphs")
    p.add_argument("--max-loras", type=_positive_int, help="LoRA slots on the GPU (turns LoRA on)")
    p.add_argument("--max-lora-rank", type=_positive_int, help="largest LoRA rank (turns LoRA on; default 16)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=_cmd_fit)


def _cmd_fit(args) -> int:
    from components.sizing.engine import EngineConfig
    from components.sizing.fit_search import fitting_options
    from components.sizing.gpus import Gpu, get_gpu
    from components.sizing.memory import estimate_memory

    arch = _load_model(args.model, args.model_config)
    lora = args.max_loras is not None or args.max_lora_rank is not None
    engine = EngineConfig.from_flags(
        tp=args.tp,
        pp=args.pp,
        dtype=args.dtype,
        quantization=args.quantization,
        kv_cache_dtype=args.kv_cache_dtype,
        max_model_len=args.max_model_len,
        max_num_seqs=args.max_num_seqs,
        max_num_batched_tokens=args.max_num_batched_tokens,
        gpu_memory_utilization=args.gpu_memory_utilization,
        enforce_eager=args.enforce_eager,
        enable_lora=lora,
        max_loras=args.max_loras,
        max_lora_rank=args.max_lora_rank,
    )
    if args.gpu:
        gpu = get_gpu(args.gpu)
    else:
        gpu = Gpu(
            name=f"{args.gpu_memory_gib:g}GiB", aliases=(), memory_gib=args.gpu_memory_gib, marketing_memory_gb=0,
            hbm_bandwidth_gbs=0, bf16_tflops=0, fp8_tflops=None, interconnect="pcie", interconnect_gbs=0,
            compute_capability="8.0", source="--gpu-memory-gib", checked="",
        )
    est = estimate_memory(arch, gpu.memory_gib, engine, gpu_name=gpu.name)
    options = [] if est.fits or not args.gpu else fitting_options(arch, gpu, engine)
    if args.json:
        out = est.as_dict() | {"gpu": gpu.name, "would_fit": options}
        print(json.dumps(out, indent=2))
    else:
        rows = [
            ("model", arch.name),
            ("gpu", f"{gpu.name} ({gpu.memory_gib:g} GiB reported) x {est.gpus} (TP {est.tp} x PP {est.pp})"),
            ("budget per GPU", f"{est.budget_gib:.2f} GiB (utilization {est.gpu_memory_utilization:g})"),
            ("weights per GPU", f"{est.weights_gib_per_gpu:.2f} GiB"),
            ("activation peak", f"{est.activation_gib:.2f} GiB"),
            ("non-torch", f"{est.non_torch_gib:.2f} GiB"),
            ("CUDA graphs", f"{est.cuda_graph_gib:.2f} GiB"),
            ("LoRA slots", f"{est.lora_gib:.2f} GiB"),
            ("KV cache per GPU", f"{est.kv_cache_gib_per_gpu:.2f} GiB = {est.kv_cache_tokens:,} tokens"),
            ("max concurrency", f"{est.max_concurrency:.1f} x {est.max_model_len:,} tokens"),
            ("verdict", est.reason),
        ]
        if options:
            rows.append(("would fit", "; ".join(options)))
        width = max(len(k) for k, _ in rows)
        for key, value in rows:
            print(f"{key:<{width}}  {value}")
    return EXIT_OK if est.fits else EXIT_NO


# ----- plan --------------------------------------------------------------------------------------------------


def _add_plan(sub) -> None:
    p = sub.add_parser("plan", help="cheapest deployment for a workload (instance type x TP x quantization)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", default="meta-llama/Llama-3.1-8B-Instruct", help="Hugging Face id or alias (default Llama-3.1-8B-Instruct)")
    src.add_argument("--model-config", help="path to a config.json")
    p.add_argument("--users", type=_positive_int, default=400, help="users of the service (default 400)")
    p.add_argument("--active-fraction", type=_fraction, help="share of users with a request in flight (default 0.15)")
    p.add_argument("--tokens-per-second", type=_positive_float, help="output tok/s per active request (default 30)")
    p.add_argument("--input-tokens", type=_positive_int, help="average prompt tokens (default 1024)")
    p.add_argument("--output-tokens", type=_positive_int, help="average output tokens (default 256)")
    p.add_argument("--max-model-len", type=_positive_int, help="longest sequence (default 8192)")
    p.add_argument("--ttft-target", type=_positive_float, help="time-to-first-token target, seconds (default 2)")
    p.add_argument("--headroom", type=float, help="spare capacity over steady load (default 0.3)")
    p.add_argument("--no-ha", action="store_true", help="allow a single replica (no high availability)")
    p.add_argument("--platform", default="eks", help="eks | ecs (default eks)")
    p.add_argument("--region", default="us-east-1", help="us-east-1 | us-west-2 | eu-west-1 (default us-east-1)")
    p.add_argument("--spot-fraction", type=_fraction, default=0.0, help="share of instances on spot, 0-1 (default 0)")
    p.add_argument("--instance-type", action="append", help="limit the search to these instance types (repeatable)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=_cmd_plan)


def _cmd_plan(args) -> int:
    from components.sizing.capacity import Workload, plan_deployment
    from components.sizing.instances import get_instance
    from components.sizing.prices import regions

    arch = _load_model(args.model, args.model_config)
    if args.region not in regions():
        raise InputError("--region", f"no prices for {args.region!r}; priced regions: {', '.join(regions())}")
    instance_types = [get_instance(name).name for name in args.instance_type] if args.instance_type else None
    workload = Workload.from_flags(
        users=args.users,
        active_fraction=args.active_fraction,
        tokens_per_second_per_request=args.tokens_per_second,
        input_tokens=args.input_tokens,
        output_tokens=args.output_tokens,
        max_model_len=args.max_model_len,
        ttft_target_s=args.ttft_target,
        headroom=args.headroom,
        high_availability=not args.no_ha,
        spot_fraction=args.spot_fraction,
        region=args.region,
        platform=args.platform,
    )
    try:
        plan = plan_deployment(arch, workload, instance_types=instance_types)
    except DoesNotFit as exc:
        if args.json:
            print(json.dumps({"planned": False, "reason": str(exc)}))
        else:
            print(f"no plan: {exc}", file=sys.stderr)
        return EXIT_NO
    if args.json:
        print(json.dumps(plan.as_dict() | {"planned": True}, indent=2))
        return EXIT_OK
    print(f"{plan.model}: {workload.users:,} users -> {workload.active_requests:,.0f} active requests x "
          f"{workload.tokens_per_second_per_request:g} tok/s = {plan.required_tok_s:,.0f} output tok/s needed")
    rows = [
        ("instances", f"{plan.instances} x {plan.instance_type} ({plan.gpu})"),
        ("replicas", f"{plan.replicas} x TP {plan.tp} x PP {plan.pp} = {plan.gpus_per_replica} GPU(s) each, quantization {plan.quantization or 'none'}"),
        ("per replica", f"{plan.batch_per_replica} concurrent sequences, {plan.kv_cache_tokens:,} KV tokens, max_model_len {plan.max_model_len:,}"),
        ("throughput", f"{plan.throughput_tok_s:,.0f} tok/s at target (need {plan.required_tok_s:,.0f}), TTFT {plan.ttft_s:.2f} s"),
        ("cost", f"${plan.cost_per_hour_usd:,.2f}/h, ${plan.cost_per_month_usd:,.0f}/month (730 h), ${plan.cost_per_million_tokens_usd:,.3f} per 1M output tokens"),
        ("pricing", f"{plan.region}, {plan.spot_fraction:.0%} spot"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
    if plan.alternatives:
        print("  alternatives:")
        for alt in plan.alternatives:
            print(f"    {alt['instances']} x {alt['instance_type']} TP {alt['tp']} PP {alt['pp']} {alt['quantization'] or 'bf16'}: ${alt['cost_per_hour_usd']:,.2f}/h")
    return EXIT_OK


# ----- prices ------------------------------------------------------------------------------------------------


def _add_prices(sub) -> None:
    p = sub.add_parser("prices", help="price catalog")
    psub = p.add_subparsers(dest="prices_command", required=True, parser_class=_Parser)
    r = psub.add_parser("refresh", help="update the local price file from AWS (Pricing API, spot price history)")
    r.add_argument("--region", action="append", help="region to refresh (repeatable; default all catalog regions)")
    r.add_argument("--instance-type", action="append", help="instance type (repeatable; default the whole catalog)")
    r.add_argument("--out", help="file to write (default ~/.config/vllm-fleet/prices.json or $VLLM_FLEET_PRICES)")
    r.set_defaults(handler=_cmd_prices_refresh)
    s = psub.add_parser("show", help="print the price catalog in use (bundled, with any refreshed entries)")
    s.add_argument("--region", default="us-east-1")
    s.set_defaults(handler=_cmd_prices_show)


def _cmd_prices_refresh(args) -> int:
    from components.sizing.instances import get_instance, instance_catalog
    from components.sizing.prices import local_prices_path, regions
    from components.sizing.prices_refresh import refresh_prices, write_prices

    wanted_regions = args.region or regions()
    types = [get_instance(t).name for t in args.instance_type] if args.instance_type else sorted(instance_catalog())
    try:
        data = refresh_prices(wanted_regions, types)
    except RuntimeError as exc:
        print(f"vllm-fleet prices refresh: {exc}", file=sys.stderr)
        return EXIT_NO
    path = args.out or local_prices_path()
    write_prices(data, path)
    count = sum(len(v) for v in data.get("regions", {}).values())
    print(f"wrote {count} prices for {len(wanted_regions)} region(s) to {path}")
    return EXIT_OK


def _cmd_prices_show(args) -> int:
    from components.sizing.prices import price_catalog

    cat = price_catalog()
    entries = cat["regions"].get(args.region)
    if entries is None:
        raise InputError("--region", f"no prices for {args.region!r}; priced regions: {', '.join(sorted(cat['regions']))}")
    print(f"prices as of {cat.get('as_of')} ({cat.get('local_file') or 'bundled catalog'}), {args.region}, USD/hour")
    for name, entry in sorted(entries.items()):
        if entry.get("on_demand") is None:
            continue
        spot = entry.get("spot")
        print(f"  {name:<16} on-demand {entry['on_demand']:>9.3f}   spot {spot if spot is not None else '-':>9}")
    return EXIT_OK


# ----- models ------------------------------------------------------------------------------------------------


def _add_models(sub) -> None:
    p = sub.add_parser("models", help="the bundled model catalog")
    msub = p.add_subparsers(dest="models_command", required=True, parser_class=_Parser)
    ls = msub.add_parser("list", help="list the catalog's models and their aliases (for --model)")
    ls.add_argument("--json", action="store_true", help="print one JSON object")
    ls.set_defaults(handler=_cmd_models_list)


def _cmd_models_list(args) -> int:
    from components.sizing.models import model_catalog

    catalog = model_catalog()
    if args.json:
        print(json.dumps({hf_id: {"aliases": list(e.aliases), "source": e.source} for hf_id, e in catalog.items()}))
        return EXIT_OK
    for hf_id, entry in catalog.items():
        print(f"{hf_id:<48} {', '.join(entry.aliases)}".rstrip())
    return EXIT_OK


def _version() -> str:
    """The installed distribution's version (pyproject.toml), without importing anything heavy."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vllm-fleet")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


# ----- entry point -------------------------------------------------------------------------------------------

_EXTRA_COMMANDS: list[Callable] = []


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vllm-fleet", description="Size, build and policy-check vLLM deployments on AWS.")
    parser.add_argument("--version", action="version", version=f"vllm-fleet {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_fit(sub)
    _add_plan(sub)
    _add_prices(sub)
    _add_models(sub)
    for add in _extra_commands():
        add(sub)
    return parser


def _extra_commands() -> list[Callable]:
    """Commands whose modules pull in heavier dependencies register here, imported only when present."""
    extra = []
    try:
        from stacks.lora_cli import add_lora_parser

        extra.append(add_lora_parser)
    except ImportError:
        pass
    try:
        from stacks.quotas_cli import add_quotas_parser

        extra.append(add_quotas_parser)
    except ImportError:
        pass
    try:
        from stacks.preview_cli import add_preview_parsers

        extra.append(add_preview_parsers)
    except ImportError:
        pass
    return extra


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        return args.handler(args)
    except InputError as exc:
        print(f"vllm-fleet: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except DoesNotFit as exc:
        print(f"vllm-fleet: {exc}", file=sys.stderr)
        return EXIT_NO
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `vllm-fleet plan --json | head`: the reader left; not an error of ours
        sys.stderr.close()
        return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
