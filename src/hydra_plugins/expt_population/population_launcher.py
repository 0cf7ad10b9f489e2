"""The ``Launcher`` Hydra instantiates for ``hydra/launcher=population``, and its config.

The work is in :mod:`._impl`, imported when a sweep launches, so plugin discovery stays cheap.
"""

from dataclasses import dataclass
from typing import Any, Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


@dataclass
class PopulationLauncherConf:
    """Every key of ``hydra.launcher`` when ``hydra/launcher=population``."""

    _target_: str = "hydra_plugins.expt_population.population_launcher.PopulationLauncher"
    # The most trials trained together in one population; a larger compatible set is split.
    max_population: int = 64
    # On a GPU, the share of its free memory a population may plan to use (the size is capped to fit).
    memory_fraction: float = 0.8


ConfigStore.instance().store(
    group="hydra/launcher", name="population", node=PopulationLauncherConf, provider="expt_population",
)


def unknown_setting(key: str, value: Any, launcher: Optional[str]) -> Optional[str]:
    """The paragraph for the override ``hydra.launcher.<key>=<value>`` (as the command line writes it) where Hydra
    would say less: under ``hydra/launcher=population`` (``launcher``) a key it lacks, with its settings and the
    nearest one, or a value a setting cannot take; under the basic launcher (Hydra's default:
    ``launcher`` None or ``basic``) any key, since it has none, naming the installed launchers and expt's presets of
    them that have it (add ``hydra/launcher=<one>``). None otherwise: another launcher's keys are its own."""
    from expt.config import not_a_setting

    if launcher == "population":
        return not_a_setting("hydra.launcher.", key, value, PopulationLauncherConf, "the population launcher",
                             text=True)
    if launcher not in (None, "basic"):
        return None
    owners = [f"hydra/launcher={name}" for name in launchers_with(key.split(".")[0])]
    if not owners:
        hint = ""
    elif len(owners) == 1:
        hint = f"; it is a setting of {owners[0]}: add it"
    else:
        hint = f"; it is a setting of {', '.join(owners[:-1])} and {owners[-1]}: add one of them"
    return f"hydra.launcher.{key}={value} is not a setting of the basic launcher (Hydra's default, which has none){hint}."


def launchers_with(setting: str) -> list[str]:
    """The installed launchers (the options of Hydra's ``hydra/launcher`` group) whose config has ``setting``, then
    expt's own presets of them (``conf/hydra/launcher``: ``slurm_gpu``) that have it."""
    from hydra.core.plugins import Plugins

    Plugins.instance()  # every installed plugin's module imported: each launcher's config registered
    store = ConfigStore.instance()
    installed = {option.removesuffix(".yaml"): store.load(f"hydra/launcher/{option}").node
                 for option in sorted(store.list("hydra/launcher"))}
    names = [name for name, node in installed.items() if isinstance(node, DictConfig) and setting in node]
    return names + _presets_with(setting, installed)


def _presets_with(setting: str, installed: dict[str, Any], folder: Any = None) -> list[str]:
    """expt's launcher presets (``@package _global_`` files that extend a launcher with a ``/hydra/launcher/<name>``
    default) that have ``setting``: among their own keys under ``hydra.launcher``, or among those of the launcher
    they extend, where that launcher is ``installed``; the presets are those in ``folder`` (default: expt's own,
    ``conf/hydra/launcher``). A file that is no such preset is passed over: this runs while an error is reported,
    and must not become one."""
    from importlib.resources import files

    import yaml

    folder = files("expt.conf").joinpath("hydra").joinpath("launcher") if folder is None else folder
    names = []
    for preset in sorted((f for f in folder.iterdir() if f.name.endswith(".yaml")) if folder.is_dir() else (),
                         key=lambda f: f.name):
        try:
            config = yaml.safe_load(preset.read_text())
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue
        defaults = config.get("defaults") if isinstance(config, dict) else None
        extends = [d.split("@")[0].removeprefix("/hydra/launcher/") for d in defaults or []
                   if isinstance(d, str) and d.startswith("/hydra/launcher/")] if isinstance(defaults, list) else []
        parent = installed.get(extends[0]) if extends else None
        if not isinstance(parent, DictConfig):  # no such preset, or its launcher is not installed: it cannot be used
            continue
        hydra = config.get("hydra")
        own = hydra.get("launcher") if isinstance(hydra, dict) else None
        if (isinstance(own, dict) and setting in own) or setting in parent:
            names.append(preset.name.removesuffix(".yaml"))
    return names


class PopulationLauncher(Launcher):
    """Groups a batch's compatible trials into populations (expt.population); the rest run one at a time."""

    # Every job of a batch is composed before any trains, so a bad override stops the batch first: a sweeper
    # need not compose the batch once more to check it (the coarse-to-fine sweeper reads this).
    composes_batch_first = True

    def __init__(self, max_population: Any = 64, memory_fraction: Any = 0.8) -> None:
        super().__init__()
        from ._impl import PopulationLauncherImpl

        self._impl = PopulationLauncherImpl(max_population=max_population, memory_fraction=memory_fraction)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self._impl.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        return self._impl.launch(job_overrides, initial_job_idx)
