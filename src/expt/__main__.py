"""``python -m expt [overrides]``: compose conf/ with Hydra, then train (or run the sanity checks)."""

from __future__ import annotations

import logging
import os
import sys

import hydra
from omegaconf import DictConfig

from expt.config import apply_preset_choices  # also registers the typed schema with Hydra's ConfigStore
from expt.errors import ConfigError

log = logging.getLogger("expt")


def run(cfg: DictConfig) -> float:
    """The task function: returns the validation metric that sweepers optimise."""
    if cfg.mode == "sanity":
        from expt.sanity import run_checks

        report = run_checks(cfg)
        if not report["passed"]:
            raise SystemExit(1)
        return 1.0
    from expt.run import train

    return train(cfg)["objective"]


@hydra.main(version_base="1.3", config_path="pkg://expt.conf", config_name="config")
def main(cfg: DictConfig) -> float:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        hydra_cfg = HydraConfig.get()
        apply_preset_choices(cfg, list(hydra_cfg.overrides.task), hydra_cfg.job.config_name or "config",
                             hydra_cfg.runtime.choices)
        return run(cfg)
    except ConfigError as exc:
        if HydraConfig.get().mode == RunMode.MULTIRUN or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise  # a sweep records the failed trial and goes on
        print(f"Error in the config: {exc}\nSet HYDRA_FULL_ERROR=1 for a complete stack trace.", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # the trainer has said what it kept and how to resume
        print("Interrupted.", file=sys.stderr)
        raise SystemExit(130) from None
