"""expt: the CS231n training recipe as Hydra config groups.

From Python::

    import expt
    cfg = expt.compose(["model=mlp", "trainer.epochs=3"])
    metrics = expt.train(cfg, run_dir="outputs/notebook")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

__version__ = "0.3.0.dev0"
__all__ = ["compose", "train", "load", "ConfigError"]

from expt.errors import ConfigError

if TYPE_CHECKING:
    from omegaconf import DictConfig


def compose(overrides: Sequence[str] = (), config_name: str = "config") -> "DictConfig":
    """The config ``python -m expt <overrides>`` would run, composed by Hydra from expt's conf/. ``overrides`` is a list
    of the command line's words (``["model=mlp", "trainer.epochs=3"]``)."""
    try:
        given = list(overrides) if not isinstance(overrides, (str, bytes)) else None
    except TypeError:  # not a sequence at all
        given = None
    if given is None or not all(isinstance(o, str) for o in given):
        raise ConfigError(f"expt.compose takes a list of overrides, each a string as the command line writes it "
                          f"(['model=mlp', 'trainer.epochs=3']), not {overrides!r}.")
    overrides = given
    from hydra import compose as hydra_compose

    from expt.config import in_hydra, unknown_override
    from expt.presets import apply_preset_choices  # also stores the typed schema the defaults list names first

    def composed() -> "DictConfig":
        from omegaconf import open_dict

        cfg = hydra_compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)
        choices = cfg.hydra.runtime.choices
        with open_dict(cfg):
            del cfg["hydra"]  # as hydra.compose leaves it without return_hydra_config
        apply_preset_choices(cfg, overrides, config_name, choices)  # a group chosen after a preset: its own settings
        return cfg

    problem = unknown_override(list(overrides), own_config=config_name != "config")  # the command line's check
    if problem is not None:
        raise ConfigError(problem)
    return in_hydra(composed)


def train(cfg: "DictConfig", run_dir: Any = None) -> dict:
    """Train the composed run; see :func:`expt.run.train`."""
    from expt.run import train as _train

    return _train(cfg, run_dir)


def load(path: Any, device: Any = "cpu") -> Any:
    """The model a run trained, as a predictor of class probabilities; see :func:`expt.evaluate.load`."""
    from expt.evaluate import load as _load

    return _load(path, device)
