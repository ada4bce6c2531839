"""Values not known during a preview, handed to the policies as Pulumi hands them, for the offline runner.

During `pulumi preview` an input computed from another resource's output is unknown. pulumi_policy serves
policies their props behind read-only Mapping / Sequence proxies that raise on reading an unknown value, and
reports the policy as "can't run ... during preview" instead of running it on a placeholder
(pulumi_policy/proxy.py `unknown_checking_proxy`, caught in policy.py `_PolicyAnalyzerServicer.Analyze`).
pulumi_policy exports none of that (its `__all__` has no proxy, sentinel or exception; checked in 1.21.0 on
2026-12-04), so the offline runner (`policies.pack.run_policies`) carries this small equivalent rather than
importing the SDK's private module. tests/policies/test_grpc_pack.py checks that the runner and the real
gRPC server report the same thing for the same unknown input.

The offline engine (stacks.offline, Pulumi's mock runtime) records an unknown as the string "<unknown>".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

OFFLINE_UNKNOWN = "<unknown>"


class UnknownValueError(Exception):
    """A policy read a value that is unknown during preview. `message` says which, in pulumi_policy's words."""

    def __init__(self, path: list[str]) -> None:
        super().__init__()
        self.path = path
        # pulumi_policy names the kind from the engine's typed sentinel; the mock runtime's "<unknown>" is a string.
        self.message = f"string value at .{'.'.join(path)} can't be known during preview"

    def __str__(self) -> str:
        return self.message


def _checked(key: Any, value: Any, path: list[str]) -> Any:
    if isinstance(value, str) and value == OFFLINE_UNKNOWN:
        raise UnknownValueError([*path, str(key)])
    return value


class _MappingView(Mapping):
    def __init__(self, target: dict, path: list[str]) -> None:
        self._target = target
        self._path = path

    def __getitem__(self, key):
        return _checked(key, self._target[key], self._path)

    def __iter__(self):
        return iter(self._target)

    def __len__(self) -> int:
        return len(self._target)


class _SequenceView(Sequence):
    def __init__(self, target: list, path: list[str]) -> None:
        self._target = target
        self._path = path

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [_checked(i, v, self._path) for i, v in zip(range(len(self._target))[index], self._target[index])]
        return _checked(index, self._target[index], self._path)

    def __len__(self) -> int:
        return len(self._target)


def checking_view(value: Any, path: list[str] | None = None) -> Any:
    """`value` (plain dicts / lists, any depth) behind read-only views that raise UnknownValueError when an
    unknown is read, as pulumi_policy serves props to policies (Mapping / Sequence, never dict / list)."""
    path = path or []
    if isinstance(value, Mapping):
        return _MappingView({k: checking_view(v, [*path, str(k)]) for k, v in value.items()}, path)
    if isinstance(value, (list, tuple)):
        return _SequenceView([checking_view(v, [*path, str(i)]) for i, v in enumerate(value)], path)
    return value
