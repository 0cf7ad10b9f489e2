"""A run's hyperparameters for TensorBoard's HParams plugin: the keys that tell it apart, and the summaries.

The dashboard records them with the run's final metrics (``hparams/*`` scalars) and status, so a
sweep directory shows every trial in one table.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

from omegaconf import DictConfig, ListConfig, OmegaConf

from expt.config import TARGET_GROUPS

# The final metrics each run records next to its hyperparameters: (scalar tag, metrics.json key).
HPARAM_METRICS = (
    ("hparams/best_val_acc", "best_val_acc"),
    ("hparams/final_val_acc", "final_val_acc"),
    ("hparams/test_acc", "test_acc"),
    ("hparams/final_train_loss", "final_train_loss"),
)
SWEEP_ROUND_ENV = "EXPT_SWEEP_ROUND"


def run_hparams(cfg: DictConfig) -> tuple[dict[str, Any], set[str]]:
    """The hyperparameters that tell this run apart, and the names of those an override set.

    Inside a Hydra job: the group choices (``activation: gelu``; Hydra's own ``hydra/*`` groups
    and the ``dashboard`` group left out, since they do not change the numbers) and every
    key overridden on the command line or by the sweeper, flattened, with its composed value.
    Outside Hydra, the choices are inferred from the config: the class each group names, the
    data set's name, and the active regularizers. ``sweep_round`` comes from
    ``$EXPT_SWEEP_ROUND`` (the coarse-to-fine round, set per trial by the sweeper).

    The second value names what a sweep varies: the overridden keys (less those the sweep's
    command line gives one value for all trials) and ``sweep_round``. The HParams tab shows
    those columns first.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser

    choices: dict[str, Any] = inferred_choices(cfg)
    overridden: dict[str, Any] = {}
    varied: set[str] = set()
    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        for group, choice in hydra_cfg.runtime.choices.items():
            if choice is not None and not group.startswith("hydra/") and group != "dashboard":
                choices[group] = _hparam_value(OmegaConf.to_container(choice) if isinstance(choice, ListConfig) else choice)
        fixed = _fixed_in_sweep(hydra_cfg)
        for override in OverridesParser.create().parse_overrides(list(hydra_cfg.overrides.task)):
            key = override.key_or_group
            if override.is_delete() or key.split(".", 1)[0] in ("dashboard", "hydra"):
                continue
            flat = {key: choices[key]} if key in choices else _flatten(key, OmegaConf.select(cfg, key, default=None))
            if key not in choices:
                overridden.update(flat)
            if key not in fixed:
                varied.update(flat)
    round_ = os.environ.get(SWEEP_ROUND_ENV)
    if round_:
        overridden["sweep_round"] = int(round_) if round_.strip().lstrip("-").isdigit() else round_
        varied.add("sweep_round")
    return {**overridden, **choices}, varied


def _fixed_in_sweep(hydra_cfg: Any) -> set[str]:
    """Keys that a multirun's command line sets to one value for every trial (from its ``multirun.yaml``).

    Empty outside a multirun, or when the file cannot be read.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.types import RunMode

    if hydra_cfg.mode != RunMode.MULTIRUN:
        return set()
    sweep_dir = Path(hydra_cfg.sweep.dir)
    if not sweep_dir.is_absolute():
        sweep_dir = Path(hydra_cfg.runtime.cwd) / sweep_dir
    try:
        task = OmegaConf.load(sweep_dir / "multirun.yaml").hydra.overrides.task
        overrides = OverridesParser.create().parse_overrides(list(task))
    except Exception:
        return set()
    return {o.key_or_group for o in overrides if not o.is_sweep_override()}


def inferred_choices(cfg: DictConfig) -> dict[str, str]:
    """Group name -> a short name of what the config holds: ``model: ConvNet``, ``data: digits``,
    ``regularization: l2+dropout``. Hydra's own choice names replace these inside a Hydra job."""
    choices: dict[str, str] = {}
    for group in TARGET_GROUPS:
        node = cfg.get(group)
        if isinstance(node, DictConfig):
            if group == "data" and node.get("name"):
                choices[group] = str(node.name)
            elif node.get("_target_"):
                choices[group] = str(node._target_).rsplit(".", 1)[-1]
    reg = cfg.get("regularization")
    if isinstance(reg, DictConfig):
        active = [k for k, v in OmegaConf.to_container(reg, resolve=True).items() if v not in (None, False, 0, 0.0)]
        choices["regularization"] = "+".join(active) or "none"
    return choices


def _flatten(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, DictConfig):
        value = OmegaConf.to_container(value, resolve=True)
    elif isinstance(value, ListConfig):
        value = OmegaConf.to_container(value, resolve=True)
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for k, v in value.items():
            flat.update(_flatten(f"{key}.{k}", v))
        return flat
    return {key: _hparam_value(value)}


def _hparam_value(value: Any) -> Any:
    """A value TensorBoard's HParams plugin can hold: a number, a bool or a string."""
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def hparams_summaries(
    params: dict[str, Any], metric_tags: list[str], status: str = "completed", varied: Iterable[str] = ()
) -> list[Any]:
    """The three HParams summaries (experiment, session start, session end) for one run.

    Built with ``torch.utils.tensorboard.summary.hparams``, but meant for the run's own event
    file (``SummaryWriter.add_hparams`` would put them in a new subdirectory, a second run).
    The hparams named in ``varied`` are marked as differing between trials, which is how
    TensorBoard picks the columns it shows first; the metrics get short display names
    (``best val acc`` for ``hparams/best_val_acc``); the session's status follows the run's:
    success when completed, failure when diverged, unknown otherwise (interrupted).
    """
    from tensorboard.plugins.hparams import api_pb2
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData
    from torch.utils.tensorboard.summary import hparams

    experiment, start, end = hparams(params, {tag: 0.0 for tag in metric_tags})
    varied = set(varied)

    def edit(summary: Any, change: Any) -> None:
        plugin_data = summary.value[0].metadata.plugin_data
        content = HParamsPluginData.FromString(plugin_data.content)
        change(content)
        plugin_data.content = content.SerializeToString()

    def describe(content: Any) -> None:
        for info in content.experiment.hparam_infos:
            info.differs = info.name in varied
        for info in content.experiment.metric_infos:
            info.display_name = info.name.tag.rsplit("/", 1)[-1].replace("_", " ")

    def set_status(content: Any) -> None:
        content.session_end_info.status = {
            "completed": api_pb2.STATUS_SUCCESS, "diverged": api_pb2.STATUS_FAILURE,
        }.get(status, api_pb2.STATUS_UNKNOWN)

    edit(experiment, describe)
    edit(end, set_status)
    return [experiment, start, end]
