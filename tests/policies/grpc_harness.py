"""Run the policy pack the way the Pulumi engine does, and talk to it over the engine's protocol.

The Pulumi CLI's Python language host starts a policy pack as
`python -u -m pulumi.policy <engine address> <pack directory>` with the pack directory as working directory
(pulumi/pulumi sdk/python/cmd/pulumi-language-python/main.go, RunPlugin, kind analyzer; checked 2026-12-04 at
commit 1b59498). `pulumi.policy` runs the pack's `__main__.py`, whose `PolicyPack(...)` starts a
`pulumirpc.Analyzer` gRPC server on 127.0.0.1 and prints its port on stdout (pulumi_policy/policy.py,
PolicyPack.__init__). The engine then calls GetAnalyzerInfo, Configure (every policy's enforcement level and its
config, schema defaults filled in: pkg/engine/update.go LoadLocalPolicyPackAnalyzers ->
ReconcilePolicyPackConfig), Analyze per resource and AnalyzeStack once, with properties as a protobuf Struct
(numbers become floats; unknowns are sentinel strings; secrets are signature objects).

`PackServer` does exactly that with the stubs shipped in the `pulumi` package, loopback only, every call bounded
by a timeout, and the server process killed on `close()`.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import empty_pb2, json_format, struct_pb2
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc

POLICIES_DIR = Path(__file__).resolve().parents[2] / "policies"
START_TIMEOUT_S = 60.0  # importing pulumi, pulumi_policy and the sizing core takes a few seconds on a busy machine
CALL_TIMEOUT_S = 60.0

# How the engine marshals values the policies cannot see in plain form
# (pulumi/pulumi sdk/go/common/resource/plugin/rpc.go and properties.go; the same sentinels are in
# pulumi_policy/proxy.py and pulumi_policy/deserialize.py).
UNKNOWN_STRING = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"
UNKNOWN_BOOL = "1c4a061d-8072-4f0a-a4cb-0ff528b18fe7"
UNKNOWN_NUMBER = "3eeb2bf0-c639-47a8-9e75-3b44932eb421"
SIG_KEY = "4dabf18193072939515e22adb298388d"
SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"

LEVELS = {"advisory": analyzer_pb2.ADVISORY, "mandatory": analyzer_pb2.MANDATORY, "disabled": analyzer_pb2.DISABLED}
LEVEL_NAMES = {v: k for k, v in LEVELS.items()}


def secret(value: Any) -> dict:
    """A Pulumi secret as the engine marshals it (KeepSecrets)."""
    return {SIG_KEY: SECRET_SIG, "value": value}


@dataclass(frozen=True)
class Diagnostic:
    """One reported violation: `message` without the policy description the server puts in front of it."""

    policy: str
    level: str  # "mandatory" | "advisory"
    message: str
    urn: str


@dataclass(frozen=True)
class Res:
    """A resource as the engine sends it."""

    type: str
    name: str
    props: Mapping[str, Any]
    urn: str
    parent: str = ""
    provider: "Provider | None" = None


@dataclass(frozen=True)
class Provider:
    """The resource's provider as the engine describes it to resource policies (type, name, URN, inputs)."""

    type: str  # "pulumi:providers:aws"
    name: str  # "default_7_12_0" for a default provider
    props: Mapping[str, Any]  # the provider's inputs, e.g. {"region": "eu-west-1"}
    urn: str = ""


def struct(props: Mapping[str, Any]) -> struct_pb2.Struct:
    """Props as the engine sends them: a google.protobuf.Struct (every number a double)."""
    out = struct_pb2.Struct()
    out.update(dict(props))
    return out


class PackServerError(RuntimeError):
    pass


class PackServer:
    """The pack's analyzer server in a subprocess, and a client that calls it as the engine does."""

    def __init__(self, policies_dir: Path = POLICIES_DIR, env: Mapping[str, str] | None = None) -> None:
        self._stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            # the engine address is parsed by pulumi.policy but a policy pack never dials it
            [sys.executable, "-u", "-m", "pulumi.policy", "127.0.0.1:1", str(policies_dir)],
            cwd=policies_dir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env={**os.environ, **(env or {})},
        )
        try:
            self.port = self._read_port()
            self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
            grpc.channel_ready_future(self.channel).result(timeout=START_TIMEOUT_S)
            self.stub = analyzer_pb2_grpc.AnalyzerStub(self.channel)
        except BaseException:
            self.close()
            raise
        self.info = self.stub.GetAnalyzerInfo(empty_pb2.Empty(), timeout=CALL_TIMEOUT_S)

    def _read_port(self) -> int:
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: lines.put(self.proc.stdout.readline()), daemon=True).start()
        try:
            line = lines.get(timeout=START_TIMEOUT_S)
        except queue.Empty:
            raise PackServerError(f"the policy pack printed no port within {START_TIMEOUT_S:g}s{self._stderr_tail()}") from None
        try:
            return int(line.strip())
        except ValueError:
            raise PackServerError(f"the policy pack printed {line!r} instead of its port{self._stderr_tail()}") from None

    def _stderr_tail(self) -> str:
        self._stderr.seek(0)
        text = self._stderr.read().decode(errors="replace").strip()
        return f"; stderr:\n{text[-4000:]}" if text else ""

    def close(self) -> None:
        channel = getattr(self, "channel", None)
        if channel is not None:
            channel.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc.stdout:
            self.proc.stdout.close()
        self._stderr.close()

    # ---- the engine's calls -------------------------------------------------------------------------------
    @property
    def policy_names(self) -> list[str]:
        return [p.name for p in self.info.policies]

    def plugin_version(self) -> str:
        return self.stub.GetPluginInfo(empty_pb2.Empty(), timeout=CALL_TIMEOUT_S).version

    def configure(self, config: Mapping[str, Any] | None = None) -> None:
        """Configure every policy as the engine does for `--policy-pack-config FILE` holding `config`
        ({policy: level | {"enforcementLevel": level, key: value}}, "all": level): the level from the file or the
        policy's own, the properties with the schema's defaults filled in."""
        config = dict(config or {})
        request = analyzer_pb2.ConfigureAnalyzerRequest()
        for policy in self.info.policies:
            own = config.get(policy.name, {})
            if isinstance(own, str):
                own = {"enforcementLevel": own}
            level = own.get("enforcementLevel", config.get("all"))
            props = json_format.MessageToDict(policy.configSchema.properties)
            values = {k: s["default"] for k, s in props.items() if isinstance(s, dict) and "default" in s}
            values.update({k: v for k, v in own.items() if k != "enforcementLevel"})
            entry = request.policyConfig[policy.name]
            entry.enforcementLevel = LEVELS[level] if level else policy.enforcementLevel
            entry.properties.update(values)
        self.stub.Configure(request, timeout=CALL_TIMEOUT_S)

    def configure_stack(self, stack: str = "dev", project: str = "vllm-fleet", dry_run: bool = True) -> None:
        request = analyzer_pb2.AnalyzerStackConfigureRequest(stack=stack, project=project, organization="organization", dry_run=dry_run)
        self.stub.ConfigureStack(request, timeout=CALL_TIMEOUT_S)

    def _diagnostics(self, response: analyzer_pb2.AnalyzeResponse) -> list[Diagnostic]:
        out = []
        for d in response.diagnostics:
            message = d.message.removeprefix(d.description).removeprefix("\n")
            out.append(Diagnostic(d.policyName, LEVEL_NAMES.get(d.enforcementLevel, str(d.enforcementLevel)), message, d.urn))
        return out

    @staticmethod
    def _options(res: Res) -> analyzer_pb2.AnalyzerResourceOptions:
        return analyzer_pb2.AnalyzerResourceOptions(parent=res.parent, protect=False)

    def analyze(self, res: Res) -> list[Diagnostic]:
        """Resource policies on one resource (the engine calls this for every resource it registers)."""
        request = analyzer_pb2.AnalyzeRequest(
            type=res.type, properties=struct(res.props), urn=res.urn, name=res.name, options=self._options(res)
        )
        if res.provider is not None:
            p = res.provider
            request.provider.CopyFrom(
                analyzer_pb2.AnalyzerProviderResource(type=p.type, name=p.name, urn=p.urn or urn(p.type, p.name), properties=struct(p.props))
            )
        # A resource policy's violation is about the resource analyzed; the engine attaches its URN.
        return [d if d.urn else Diagnostic(d.policy, d.level, d.message, res.urn) for d in self._diagnostics(self.stub.Analyze(request, timeout=CALL_TIMEOUT_S))]

    def analyze_stack(self, resources: Iterable[Res]) -> list[Diagnostic]:
        request = analyzer_pb2.AnalyzeStackRequest()
        for res in resources:
            request.resources.append(
                analyzer_pb2.AnalyzerResource(
                    type=res.type, properties=struct(res.props), urn=res.urn, name=res.name, options=self._options(res), parent=res.parent
                )
            )
            if res.provider is not None:
                p = res.provider
                request.resources[-1].provider.CopyFrom(
                    analyzer_pb2.AnalyzerProviderResource(type=p.type, name=p.name, urn=p.urn or urn(p.type, p.name), properties=struct(p.props))
            )
        return self._diagnostics(self.stub.AnalyzeStack(request, timeout=CALL_TIMEOUT_S))

    def preview(self, resources: Iterable[Res], config: Mapping[str, Any] | None = None, stack: str = "dev") -> list[Diagnostic]:
        """What `pulumi preview --policy-pack` reports for a stack: configure, Analyze each resource, then AnalyzeStack."""
        resources = list(resources)
        self.configure_stack(stack=stack)
        self.configure(config)
        found = [d for res in resources for d in self.analyze(res)]
        return found + self.analyze_stack(resources)


def urn(type_: str, name: str, stack: str = "dev", parent_type: str = "") -> str:
    qualified = f"{parent_type}${type_}" if parent_type else type_
    return f"urn:pulumi:{stack}::vllm-fleet::{qualified}::{name}"


def res(type_: str, name: str, props: Mapping[str, Any], *, stack: str = "dev", parent: str = "", provider: Provider | None = None) -> Res:
    return Res(type=type_, name=name, props=props, urn=urn(type_, name, stack), parent=parent, provider=provider)


def from_resource(resource: Any) -> Res:
    """From a `policies.resource_views.Resource` (the tests' hand-built resources and the offline engine's records)."""
    return Res(type=resource.type, name=resource.name, props=dict(resource.props), urn=resource.urn, parent=resource.parent or "")


