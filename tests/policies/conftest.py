"""Fixtures for the policy tests: the pack's real gRPC analyzer server, started once per session."""

from __future__ import annotations

import pytest

from grpc_harness import PackServer


@pytest.fixture(scope="session")
def pack_server(tmp_path_factory):
    """The pack served as `pulumi preview --policy-pack policies` serves it, with only the bundled prices
    (VLLM_FLEET_PRICES points at a file that does not exist, as the in-process policy tests do)."""
    prices = tmp_path_factory.mktemp("pack-server") / "no-refreshed-prices.json"
    server = PackServer(env={"VLLM_FLEET_PRICES": str(prices)})
    yield server
    server.close()
