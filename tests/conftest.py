"""Shared fixtures: compose real configs through Hydra and run them in temporary directories."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import expt

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def compose():
    """``compose("model=mlp", ...)``: the config ``python -m expt`` would run with those overrides."""

    def _compose(*overrides: str):
        return expt.compose(list(overrides))

    return _compose


def run_cli(*args: str, cwd: Path, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python -m expt <args>`` in ``cwd`` and return the finished process (output captured)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR", None) if env is None or "HYDRA_FULL_ERROR" not in env else None
    return subprocess.run(
        [sys.executable, "-m", "expt", *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )


def read_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def numbers(metrics: dict) -> list[dict]:
    """A run's per-epoch history without the wall-clock seconds: what must repeat exactly."""
    return [{k: v for k, v in row.items() if k != "seconds"} for row in metrics["history"]]
