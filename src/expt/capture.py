"""Whether a run's training step is captured as a CUDA graph (``trainer.cuda_graph``), and if not, why.

A small model's step on a GPU is bound by kernel launches: a few hundred launches from Python for
a few microseconds of arithmetic each. Captured once as a CUDA graph (forward, backward, the
optimizer update, the penalty and max-norm), it is replayed with one launch, the learning rate
read from a device tensor the loop fills before each replay. :func:`capture_blocker` is the one
place that says when this is exact and possible; ``auto`` (the default) captures wherever it
says nothing against it, ``true`` insists (a config error naming the reason), ``false`` never.
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from expt.config import amp_mode
from expt.errors import ConfigError
from expt.instantiate import locate, parameters

def capture_blocker(cfg: Any, device: torch.device) -> Optional[str]:
    """Why this run's step cannot be captured as a CUDA graph, or None when it can."""
    t = cfg.trainer
    if device.type != "cuda":
        return f"the run trains on {device.type}, not CUDA"
    if t.compile:
        return "trainer.compile=true compiles the step instead"
    if amp_mode(t.amp) == "fp16":
        return "trainer.amp=fp16's gradient scaler reads the overflow check on the host every step"
    target = str(cfg.optimizer.get("_target_"))
    if "capturable" not in (parameters(locate(target, "optimizer._target_")) or {}) and target != "torch.optim.SGD":
        return f"optimizer._target_={target} has no capturable mode (its step reads its step count on the host)"
    return None


def capture_mode(cfg: Any, device: torch.device) -> tuple[bool, Optional[str]]:
    """(capture the step, why not): ``trainer.cuda_graph`` against :func:`capture_blocker`."""
    mode = str(cfg.trainer.get("cuda_graph", "auto")).lower()  # one of CUDA_GRAPH_MODES (expt.config.validate)
    if mode == "false":
        return False, "trainer.cuda_graph=false"
    reason = capture_blocker(cfg, device)
    if reason is not None and mode == "true":
        raise ConfigError(f"trainer.cuda_graph=true cannot capture this run's step: {reason}. "
                          "Set trainer.cuda_graph=auto to train it uncaptured.")
    return reason is None, reason


def capturable_options(optimizer_cfg: Any, lr: float, device: torch.device) -> dict[str, Any]:
    """The extra arguments that make the configured optimizer's step capturable: a device tensor as its
    learning rate (filled in place every step), and ``capturable=True`` where the class has it."""
    target = locate(str(optimizer_cfg.get("_target_")), "optimizer._target_")
    options: dict[str, Any] = {"lr": torch.tensor(float(lr), device=device)}
    if "capturable" in (parameters(target) or {}):
        options["capturable"] = True
    return options
