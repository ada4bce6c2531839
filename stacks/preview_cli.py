"""`vllm-fleet preview` and `vllm-fleet synth`: the real stack program, offline, with every policy.

preview: prints the resource tree, the plan and its cost, and every policy result; exit 1 on a mandatory
violation (or a model that does not fit), 2 on bad config.
synth: writes OUT/resources.json, OUT/kubernetes/*.yaml and OUT/ecs/*.json (RegisterTaskDefinition requests).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.sizing.errors import DoesNotFit, InputError

from .config import as_pulumi_config, parse_stack_config, read_stack_file

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
PROJECT_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class OfflineStack:
    name: str
    config: Any
    plan: Any
    run: Any
    results: list
    seconds: float

    @property
    def mandatory_failures(self) -> list:
        return [r for r in self.results if r.enforcement_level == "mandatory"]


def stack_file(stack: str) -> Path:
    """`dev` -> Pulumi.dev.yaml in the current folder (or the project's); a path is taken as it is."""
    if stack.endswith((".yaml", ".yml")) or "/" in stack:
        return Path(stack)
    for folder in (Path.cwd(), PROJECT_ROOT):
        candidate = folder / f"Pulumi.{stack}.yaml"
        if candidate.is_file():
            return candidate
    raise InputError("--stack", f"no Pulumi.{stack}.yaml in {Path.cwd()} or {PROJECT_ROOT}; give a stack name or a path")


def policy_config(config) -> dict:
    """The policy pack's config for this stack: the budget from the stack's own monthlyBudgetUsd."""
    if config.monthly_budget_usd is None:
        return {}
    budget = {"monthlyBudgetUsd": config.monthly_budget_usd}
    return {"monthly-budget": budget, "monthly-budget-advisory": budget}


def run_stack(stack: str) -> OfflineStack:
    """Parse, plan, run the program under the mock runtime, and run the policies over what it built."""
    from policies.pack import run_policies
    from policies.resource_views import Resource

    from .offline import run_offline
    from .plan import plan_stack
    from .program import main as program

    name, raw = read_stack_file(stack_file(stack))
    config = parse_stack_config(raw)
    plan = plan_stack(config)
    started = time.perf_counter()
    run = run_offline(program, project="vllm-fleet", stack=name, config=as_pulumi_config(raw), region=config.regions[0])
    results = run_policies([Resource.from_record(r) for r in run.resources], policy_config(config))
    return OfflineStack(name, config, plan, run, results, time.perf_counter() - started)


def _tree(run) -> list[str]:
    children: dict[str | None, list] = {}
    urns = {r.urn for r in run.resources}
    for r in run.resources:
        parent = r.parent if r.parent in urns else None
        children.setdefault(parent, []).append(r)
    lines: list[str] = []

    def walk(parent, depth):
        for r in children.get(parent, []):
            lines.append(f"{'  ' * depth}{r.type}  {r.name}")
            walk(r.urn, depth + 1)

    walk(None, 0)
    return lines


def _quota_needs(plan):
    from .quotas_cli import plan_quota_needs

    return plan_quota_needs(plan)


def _teardown_notes(run) -> list[str]:
    """What `pulumi destroy` does to data the stack holds (from the components' props)."""
    notes = []
    for store in run.of_type("vllm-fleet:index:LoraStore"):
        if store.inputs.get("retain_on_delete"):
            notes.append(f"{store.name}: the adapter bucket and its KMS key are RETAINED in AWS (delete them by hand)")
        elif store.inputs.get("force_destroy"):
            notes.append(f"{store.name}: DELETES the adapter bucket and every adapter in it (dev: force_destroy)")
    return notes


def _print_preview(result: OfflineStack) -> None:
    plan = result.plan.summary()
    print(f"stack {result.name}: tier {plan['tier']}, {plan['platform']}, {plan['environment']}, regions {', '.join(plan['regions'])}")
    print(f"\nresources ({len(result.run.resources)}):")
    for line in _tree(result.run):
        print(f"  {line}")
    print("\nplan:")
    for m in plan["models"]:
        print(
            f"  {m['region']}  {m['model']}: {m['nodes']}-{m['max_nodes']} x {m['instance_type']} ({m['gpu']}), "
            f"{m['replicas']}-{m['max_replicas']} replicas of TP {m['tp']} x PP {m['pp']}, "
            f"quantization {m['quantization'] or 'none'}, {m['users']:,} users, ${m['cost_per_hour_usd']:,.2f}/h"
        )
    budget = plan["monthly_budget_usd"]
    print(
        f"\ncost: ${plan['cost_per_hour_usd']:,.2f}/h (GPUs ${plan['gpu_cost_per_hour_usd']:,.2f}, platform "
        f"${plan['platform_cost_per_hour_usd']:,.2f}); ${plan['cost_per_month_usd']:,.0f}/month steady, "
        f"${plan['cost_per_month_at_max_scale_usd']:,.0f}/month at maximum scale"
        + (f"; budget ${budget:,.0f}/month" if budget else "; no budget set")
    )
    from .quotas_cli import plan_quota_needs

    print(f"\nquotas (EC2 vCPUs at maximum scale; compare with the account: vllm-fleet quotas check --stack {result.name}):")
    for need in plan_quota_needs(result.plan):
        print(f"  {need.describe()}")
    teardown = _teardown_notes(result.run)
    if teardown:
        print("\nteardown (pulumi destroy):")
        for line in teardown:
            print(f"  {line}")
    print("\npolicies:")
    if not result.results:
        print("  all policies passed")
    for r in result.results:
        where = r.urn.split("::")[-1] if r.urn else "stack"
        print(f"  [{r.enforcement_level}] {r.policy}: {r.message} ({where})")
    verdict = "FAILED: mandatory policy violations" if result.mandatory_failures else "ok"
    print(f"\n{verdict} ({result.seconds:.1f} s offline)")


def _cmd_preview(args) -> int:
    try:
        result = run_stack(args.stack)
    except DoesNotFit as exc:
        if args.json:
            print(json.dumps({"ok": False, "error": str(exc)}))
        print(f"vllm-fleet preview: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(
            json.dumps(
                {
                    "ok": not result.mandatory_failures,
                    "stack": result.name,
                    "plan": result.plan.summary(),
                    "resources": [{"type": r.type, "name": r.name, "parent": r.parent} for r in result.run.resources],
                    "resource_count": len(result.run.resources),
                    "quotas": [
                        {"region": n.region, "code": n.quota.code, "name": n.quota.name, "need_vcpus": n.vcpus, "instances": n.instances}
                        for n in _quota_needs(result.plan)
                    ],
                    "teardown": _teardown_notes(result.run),
                    "policies": [r._asdict() if hasattr(r, "_asdict") else vars(r) for r in result.results],
                    "outputs": result.run.outputs,
                },
                indent=2,
                default=str,
            )
        )
    else:
        _print_preview(result)
    return EXIT_FAILED if result.mandatory_failures else EXIT_OK


SYNTH_MARKER = ".vllm-fleet-synth"  # in every folder synth writes: the files it wrote, one per line


def synth_target(out: Path) -> Path:
    """The folder `synth --out` may write, or InputError: a new folder, an empty one, or one synth wrote before
    that holds nothing else. synth never deletes what it did not write (`--out .` in a checkout is refused)."""
    if not out.exists():
        if not out.parent.is_dir():
            raise InputError("--out", f"{out.parent} does not exist; give a folder whose parent exists")
        return out
    if not out.is_dir():
        raise InputError("--out", f"{out} is a file; give a new or empty folder")
    present = {p.relative_to(out).as_posix() for p in out.rglob("*") if not p.is_dir()}
    if not present and not any(out.iterdir()):
        return out
    marker = out / SYNTH_MARKER
    written = set(marker.read_text().split()) | {SYNTH_MARKER} if marker.is_file() else set()
    foreign = sorted(present - written)
    if not written or foreign:
        example = f" (e.g. {foreign[0]})" if foreign else ""
        raise InputError("--out", f"{out} holds files synth did not write{example}; give a new or empty folder")
    return out


def _write_synth(staging: Path, result) -> tuple[int, int]:
    from .render_ecs import task_definition_requests
    from .render_k8s import kubernetes_manifests

    files: list[str] = []

    def write(rel: str, text: str) -> None:
        path = staging / rel
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
        files.append(rel)

    write("resources.json", json.dumps([r.as_dict() for r in result.run.resources], indent=2, default=str))
    manifests = kubernetes_manifests(result.run)
    if manifests:
        import yaml

        for manifest in manifests:
            meta = manifest.get("metadata", {})
            fname = f"{manifest['kind'].lower()}-{meta.get('namespace', 'cluster')}-{meta.get('name', 'unnamed')}.yaml"
            write(f"kubernetes/{fname}", yaml.safe_dump(manifest, sort_keys=False))
    tasks = task_definition_requests(result.run)
    for name, request in tasks.items():
        write(f"ecs/{name}.json", json.dumps(request, indent=2))
    (staging / SYNTH_MARKER).write_text("\n".join(files) + "\n")
    return len(manifests), len(tasks)


def _cmd_synth(args) -> int:
    out = synth_target(Path(args.out).absolute())  # refuse before the (slow) run, and before writing anything
    try:
        result = run_stack(args.stack)
    except DoesNotFit as exc:
        print(f"vllm-fleet synth: {exc}", file=sys.stderr)
        return EXIT_FAILED
    out = synth_target(out)
    # Written into a temporary sibling and moved into place: a failure leaves nothing half-written. A previous
    # output (only files synth wrote, checked above) is moved aside first and removed once the new one is in place.
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.synth-", dir=out.parent))
    previous = None
    try:
        n_manifests, n_tasks = _write_synth(staging, result)
        if out.exists():
            previous = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            previous.rmdir()
            out.rename(previous)
        staging.rename(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
        if previous is not None:
            if out.exists():
                shutil.rmtree(previous)
            else:
                previous.rename(out)  # the move failed: put the previous output back
    print(f"wrote {out}: {len(result.run.resources)} resources, {n_manifests} Kubernetes objects, {n_tasks} ECS task definitions")
    if result.mandatory_failures:
        for r in result.mandatory_failures:
            print(f"[mandatory] {r.policy}: {r.message}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def add_preview_parsers(sub) -> None:
    p = sub.add_parser("preview", help="run the stack program offline: resource tree, plan, cost, policy results")
    p.add_argument("--stack", required=True, help="dev | prod | PATH/Pulumi.<stack>.yaml")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=_cmd_preview)
    s = sub.add_parser("synth", help="write the stack's resources, Kubernetes YAML and ECS task definitions")
    s.add_argument("--stack", required=True, help="dev | prod | PATH/Pulumi.<stack>.yaml")
    s.add_argument("--out", required=True, help="output folder: new, empty, or one synth wrote before (nothing else in it is ever deleted)")
    s.set_defaults(handler=_cmd_synth)
