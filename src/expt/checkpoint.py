"""Checkpoints: plain dicts of tensors and numbers, written atomically, loadable with weights_only=True."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from expt.config import ConfigError

LAST, BEST = "last.pt", "best.pt"


def save(state: dict[str, Any], path: Path) -> None:
    """Write to a temporary file beside ``path``, then rename: a crash never leaves half a checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def copy(source: Path, target: Path) -> None:
    """Copy a checkpoint file atomically (cheaper than serializing the same state twice)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    return torch.load(path, map_location=map_location, weights_only=True)


def resolve(resume: str) -> Path:
    """A run directory (its checkpoints/last.pt) or a checkpoint file."""
    path = Path(resume).expanduser()
    candidates = [path, path / "checkpoints" / LAST, path / LAST]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"trainer.resume={resume!r} is not a checkpoint: expected a .pt file or a run directory "
        f"holding checkpoints/{LAST}."
    )


def rng_state(generator: torch.Generator, device: torch.device) -> dict[str, Any]:
    """The random streams training draws from: the batch order and torch's own (dropout), CPU and the run's GPU."""
    state = {"batches": generator.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: dict[str, Any], generator: torch.Generator, device: torch.device) -> None:
    """Set the streams :func:`rng_state` saved (its tensors must be on the CPU, as :func:`load` leaves them)."""
    generator.set_state(state["batches"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
