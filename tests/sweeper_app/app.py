"""A tiny Hydra app with a known optimum, for testing the coarse-to-fine sweeper through Hydra.

Its keys mimic expt's (``optimizer.lr``, ``regularization.l2``, ...) so the sweeper's preset
applies unchanged. The objective peaks at ``optimizer.lr=3e-3``, ``regularization.l2=1e-4``
(log10 distances), gains a little per epoch, and is 1.0 at the optimum with 0 epochs.
``toy.*`` keys make chosen trials raise, return NaN or report divergence as expt does, or hold them
until a test releases them. Like expt, it writes its metrics to ``metrics.json`` and returns them with
the objective (:class:`expt.status.RunResult`), which is what the sweeper records.
"""

import json
import math
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from expt.status import RunResult

BEST_LR = 3e-3
BEST_L2 = 1e-4


def objective(cfg: DictConfig) -> float:
    """1 minus the squared log10 distance to the optimum (scaled), plus 0.01 per epoch."""
    l2 = max(cfg.regularization.l2, 1e-12)
    distance = math.log10(cfg.optimizer.lr / BEST_LR) ** 2 + math.log10(l2 / BEST_L2) ** 2
    return 1.0 - distance / 50.0 + 0.01 * cfg.trainer.epochs - 0.1 * abs(cfg.regularization.dropout - 0.2)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    toy = cfg.toy
    if toy.calls_file:
        with open(toy.calls_file, "a", encoding="utf-8") as handle:
            handle.write(f"{HydraConfig.get().job.num}\n")
    if toy.sleep:
        time.sleep(toy.sleep)
    if toy.hold_from_job is not None and HydraConfig.get().job.num >= toy.hold_from_job:
        for _ in range(6000):  # at most 10 minutes: a test releases the trial (or kills it) long before
            if Path(toy.release_file).exists():
                break
            time.sleep(0.1)
    if toy.fail_unless_file is not None and not Path(toy.fail_unless_file).exists():
        raise FileNotFoundError(f"{toy.fail_unless_file} is missing")
    if toy.raise_above_lr is not None and cfg.optimizer.lr > toy.raise_above_lr:
        raise ValueError(f"optimizer.lr={cfg.optimizer.lr} is too large for this toy")
    if toy.nan_above_l2 is not None and cfg.regularization.l2 > toy.nan_above_l2:
        return math.nan
    value = objective(cfg)
    status = "completed"
    if toy.diverge_above_lr is not None and cfg.optimizer.lr > toy.diverge_above_lr:
        status, value = "diverged", 0.0
    train_acc = 1.0 if 1e-4 <= cfg.optimizer.lr <= 1e-1 else 0.1
    metrics = {"status": status, "objective": value, "history": [{"train_acc": train_acc}]}
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    return RunResult(metrics)


if __name__ == "__main__":
    main()
