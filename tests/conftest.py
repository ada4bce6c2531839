"""Shared test fixtures.

Upstream texts (the CRDs of Karpenter, KEDA, prometheus-operator... and the validator that checks custom resources
against them the way the API server does) are not the project's: they are read from `$VLLM_FLEET_SHARED` (a folder
with `data/crds/` and `tools/validate_crs.py`), else from `../shared` beside the checkout; `VLLM_FLEET_CRDS` may
point at another CRD folder. Where they are absent, exactly the checks that need them skip, and pytest's summary
(`-rs`) says why.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VLLM_FLEET_SHARED") or ROOT.parent / "shared")
CRDS = Path(os.environ.get("VLLM_FLEET_CRDS") or SHARED / "data" / "crds")
VALIDATE_CRS = SHARED / "tools" / "validate_crs.py"


def upstream_crds_missing() -> str | None:
    """Why the CRD checks cannot run here, or None when they can."""
    if not CRDS.is_dir() or not any(CRDS.glob("*.yaml")):
        return f"upstream CRDs not found at {CRDS} (set VLLM_FLEET_SHARED or VLLM_FLEET_CRDS)"
    if not VALIDATE_CRS.is_file():
        return f"CRD validator not found at {VALIDATE_CRS} (set VLLM_FLEET_SHARED)"
    return None


@pytest.fixture(scope="session")
def validate_crs() -> Callable[..., subprocess.CompletedProcess]:
    """Validate rendered custom resources (YAML files) against the upstream CRDs; skips when they are absent."""
    missing = upstream_crds_missing()
    if missing:
        pytest.skip(missing)

    def run(*paths: Path) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(VALIDATE_CRS), "--crds", str(CRDS), *map(str, paths)], capture_output=True, text=True, check=False
        )

    return run
