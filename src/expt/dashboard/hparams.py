"""A run's hyperparameters for TensorBoard's HParams plugin: the keys that tell it apart, and the summaries.

The dashboard records them with the run's final metrics (``hparams/*`` scalars), its status and
its diagnosis, so a sweep directory shows every trial in one table. Also here: where the run
stands in a sweep (:class:`SweepContext`, from what the sweeper told the trial, read at the run's edge
as an :class:`expt.sweep_env.SweepTrial`, and Hydra's job config) and the readable name the run is shown under (:func:`run_label`).

TensorBoard's HParams page ticks the first five columns, ordered by "differs" and then by name,
and prints every number with five significant digits. So expt's own columns are named to come
first (``_1_status``, ``_2_diagnosis``, ``_3_sweep_round``, then ``_4_log10(<key>)``, shown as
``status``, ``diagnosis``, ``sweep round``, ``log10(<key>)``), integers are given as right-aligned
text (``"     3"``: it sorts as a number and reads as one), and every searched parameter sampled on
a log scale has a log10 column, so the parallel-coordinates and scatter views spread it evenly.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

from omegaconf import DictConfig, ListConfig, OmegaConf

from expt.config import TARGET_GROUPS
from expt.dashboard.diagnosis import DIAGNOSES
from expt.overrides import key_or_group, split_override
from expt.search import integer_sweep
from expt.status import COMPLETED, DIVERGED, FAILED, MULTIRUN_FILE, STATUSES
from expt.sweep_env import SweepTrial, trial_name
from expt.values import is_integer, is_number

# The final metrics each run records as scalars next to its hyperparameters: (scalar tag, metrics.json key).
HPARAM_METRICS = (
    ("hparams/best_val_acc", "best_val_acc"),
    ("hparams/final_val_acc", "final_val_acc"),
    ("hparams/test_acc", "test_acc"),
    ("hparams/final_train_loss", "final_train_loss"),
)
# The metric columns of the HParams table: (scalar tag, display name). The per-epoch tags let "Show
# Metrics" draw each trial's learning curves; a column's value is the tag's last value.
TABLE_METRICS = (
    ("hparams/best_val_acc", "best val acc"),
    ("accuracy/val", "val acc (per epoch)"),
    ("accuracy/train", "train acc (per epoch)"),
    ("loss/val", "val loss (per epoch)"),
    ("loss/train_data", "train loss (per epoch)"),
    ("hparams/test_acc", "test acc"),
)
# Column names sort in the order TensorBoard should tick them (it ticks the first five by name); the
# display names are what the page shows.
STATUS, DIAGNOSIS, ROUND = "_1_status", "_2_diagnosis", "_3_sweep_round"
LOG10_PREFIX = "_4_"  # "_4_00_log10(optimizer.lr)", shown as "log10(optimizer.lr)": log10_column
DISPLAY_NAMES = {STATUS: "status", DIAGNOSIS: "diagnosis", ROUND: "sweep round"}
RUN_STATUSES = (*STATUSES, "running")  # how a run ended, or that it still trains
INT_WIDTH = 6  # integers are right-aligned to this many characters, so that they sort as numbers


@dataclass
class SweepContext:
    """Where a run stands: alone, or a trial of a Hydra multirun (and then of which round)."""

    multirun: bool = False
    round: Optional[int] = None  # SweepTrial.round: a coarse-to-fine trial
    final: Optional[bool] = None  # SweepTrial.final: whether its round is the sweep's last
    label: Optional[str] = None  # SweepTrial.label
    job: Optional[int] = None  # Hydra's job number
    overrides: list[str] = field(default_factory=list)  # the job's task overrides
    fixed: set[str] = field(default_factory=set)  # keys the multirun's command line fixes for every trial
    log_scaled: set[str] = field(default_factory=set)  # searched keys sampled on a log scale
    searched: dict[str, Any] = field(default_factory=dict)  # the sweeper's parameters -> a value of their type

    @property
    def in_sweep(self) -> bool:
        return self.multirun or self.round is not None


def sweep_context(trial: Optional[SweepTrial] = None) -> SweepContext:
    """The run's :class:`SweepContext`, from what the sweeper told the trial (``trial``, read at the run's edge:
    ``expt.run.train``, the population launcher) and Hydra's job config."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    trial = trial or SweepTrial()
    ctx = SweepContext(round=trial.round, final=trial.final, label=trial.label)
    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        ctx.multirun = hydra_cfg.mode == RunMode.MULTIRUN
        ctx.overrides = list(hydra_cfg.overrides.task)
        if ctx.multirun:
            ctx.job = _int_or_none(OmegaConf.select(hydra_cfg, "job.num", default=None))
            ctx.fixed, ctx.log_scaled = _sweep_command_line(hydra_cfg)
        _read_sweeper(OmegaConf.select(hydra_cfg, "sweeper", default=None), ctx)
    return ctx


def _read_sweeper(sweeper: Any, ctx: SweepContext) -> None:
    """The log-scaled parameters of the sweeper's ``params``, and whether this round is its last (when the
    sweeper does not say). Whatever a sweeper's config holds, a run never fails on it."""
    if not isinstance(sweeper, DictConfig):
        return
    try:
        params = sweeper.get("params")
        if isinstance(params, DictConfig):
            for key, spec in params.items():
                if isinstance(spec, str):
                    try:
                        log_scaled, real = _sweep_kind(str(key), spec)
                    except Exception:  # a spec Hydra's parser does not read: a text column, and the others go on
                        log_scaled, real = False, False
                    if log_scaled:
                        ctx.log_scaled.add(str(key))
                    ctx.searched[str(key)] = 0.0 if real else ""
        for override in _stage_overrides(sweeper):  # a pinpoint trial's data.subset, a round's trainer.epochs
            key, value = split_override(override)
            if key and key not in ctx.searched:
                ctx.searched[key] = 0.0 if isinstance(_number(value), float) else ""
    except Exception:  # an interpolation that does not resolve in the job, a sweeper of another shape
        pass


def _number(text: str) -> Any:
    """An override's value as the number it writes (``3``: an int; ``1e-7``, ``0.5``: a float), or the text itself."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def _stage_overrides(sweeper: DictConfig) -> list[str]:
    """The overrides the coarse-to-fine sweeper gives some of its trials: the pinpoint stage's, and each round's."""
    rounds = list(sweeper.get("rounds") or [])
    rounds += [r for stage in sweeper.get("stages") or [] for r in (stage.get("rounds") or [])]
    pinpoint = sweeper.get("pinpoint")
    found = list(pinpoint.get("overrides") or []) if isinstance(pinpoint, DictConfig) else []
    return [str(o) for o in found + [o for r in rounds for o in (r.get("overrides") or [])]]


def log10_column(key: str, ctx: SweepContext) -> str:
    """The column of ``key``'s log10, numbered in the order of the sweeper's parameters (``optimizer.lr`` first in
    the preset), so that the ones TensorBoard ticks (the first five columns by name: status, diagnosis, round,
    then these) are the parameters every stage's trials have, not the widths a last stage alone searches."""
    place = list(ctx.searched).index(key) if key in ctx.searched else len(ctx.searched)
    return f"{LOG10_PREFIX}{place:02d}_log10({key})"


@functools.lru_cache(maxsize=256)
def _sweep_kind(key: str, spec: str) -> tuple[bool, bool]:
    """(sampled on a log scale, sampled as real numbers) for a sweeper parameter written as Hydra writes sweeps:
    an interval() or range() of real numbers is a number column; integers (:func:`expt.search.integer_sweep`,
    as the sweeper reads them) and choice() are text columns. Parsed once a process: every trial of a sweep
    (every member of a population) reads the same parameters."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import IntervalSweep, RangeSweep

    value = OverridesParser.create().parse_override(f"{key}={spec}").value()
    log_scaled = "log" in set(getattr(value, "tags", None) or ())
    return log_scaled, isinstance(value, (IntervalSweep, RangeSweep)) and not integer_sweep(value)


def _int_or_none(value: Any) -> Optional[int]:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _sweep_command_line(hydra_cfg: Any) -> tuple[set[str], set[str]]:
    """(keys the multirun's command line sets to one value, keys it sweeps on a log scale), from multirun.yaml.

    Empty sets when the file cannot be read.
    """
    sweep_dir = Path(hydra_cfg.sweep.dir)
    if not sweep_dir.is_absolute():
        sweep_dir = Path(hydra_cfg.runtime.cwd) / sweep_dir
    path = sweep_dir / MULTIRUN_FILE
    try:
        stat = path.stat()
    except OSError:
        return set(), set()
    fixed, logged = _read_multirun(str(path), stat.st_mtime_ns, stat.st_size)
    return set(fixed), set(logged)


@functools.lru_cache(maxsize=8)
def _read_multirun(path: str, _mtime_ns: int, _size: int) -> tuple[frozenset[str], frozenset[str]]:
    """:func:`_sweep_command_line` of one version of a multirun.yaml: read once for every trial of a process."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        task = OmegaConf.load(path).hydra.overrides.task
        overrides = OverridesParser.create().parse_overrides(list(task))
    except Exception:
        return frozenset(), frozenset()
    fixed = {o.key_or_group for o in overrides if not o.is_sweep_override()}
    logged = {o.key_or_group for o in overrides if o.is_sweep_override() and "log" in (getattr(o.value(), "tags", None) or ())}
    return frozenset(fixed), frozenset(logged)


def short_value(value: Any) -> str:
    """A sampled value as a run name shows it: 3.1e-3, 0.25, 128, relu."""
    if isinstance(value, float) and math.isfinite(value) and value != 0 and not (1e-2 <= abs(value) < 1e4):
        mantissa, exponent = f"{value:.1e}".split("e")
        return f"{mantissa}e{int(exponent)}"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def run_label(ctx: SweepContext, run_dir: Optional[Path] = None) -> str:
    """The name TensorBoard shows the run under (``expt.board`` serves each run under this name).

    The sweeper's label (``SweepTrial.label``: the coarse-to-fine sweeper gives one) when there is one; else,
    for a trial of another sweep, its job number (zero-padded, so the names sort in job order) and the values
    the sweep varied, as :func:`expt.sweep_env.trial_name` writes them; for a run alone, its directory's name
    and its overrides.
    """
    if ctx.label:  # the sweeper's (expt.sweep_env.trial_name)
        return ctx.label
    values = []
    for override in ctx.overrides:
        key, value = split_override(override)
        if "=" not in override or key.split(".", 1)[0] in ("hydra", "dashboard") or (ctx.in_sweep and key in ctx.fixed):
            continue
        values.append(f"{key.rsplit('.', 1)[-1] if ctx.in_sweep else key}={short_value(_number(value))}")
    if ctx.in_sweep:
        return trial_name(ctx.round, ctx.job, values)
    name = run_dir.name if run_dir is not None else "run"
    return " ".join([name, *values]) if values else f"{name} (defaults)"


def run_hparams(cfg: DictConfig, ctx: Optional[SweepContext] = None) -> tuple[dict[str, Any], set[str]]:
    """The hyperparameters that tell this run apart, and the names of those a sweep varies.

    Inside a Hydra job: every key overridden on the command line or by the sweeper, flattened, with
    its composed value, and the group choices (``activation: gelu``; Hydra's own ``hydra/*`` groups and
    the ``dashboard`` group left out, since they do not change the numbers). In a multirun only the
    keys and choices the sweep varies are kept (a constant ``activation=relu`` would only take a column).
    Outside Hydra, the choices are inferred from the config: the class each group names, the data
    set's name, and the active regularizers. ``ROUND`` (``_3_sweep_round``) is the context's round (the
    sweeper's). A numeric key the sweep samples on a log scale also gets a log10 column
    (:func:`log10_column`: ``_4_<NN>_log10(<key>)``, shown as ``log10(<key>)``). Integers are given as
    right-aligned text (see the module's docstring).

    The second value names what a sweep varies: the overridden keys (less those the sweep's command
    line gives one value for all trials), their log10 columns and ``ROUND``.
    """
    from hydra.core.hydra_config import HydraConfig

    ctx = ctx or sweep_context()
    choices: dict[str, Any] = inferred_choices(cfg)
    overridden: dict[str, Any] = {}
    varied: set[str] = set()
    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        for group, choice in hydra_cfg.runtime.choices.items():
            if choice is not None and not group.startswith("hydra/") and group != "dashboard":
                choices[group] = _hparam_value(OmegaConf.to_container(choice) if isinstance(choice, ListConfig) else choice)
        for override in hydra_cfg.overrides.task:  # as Hydra parsed them: their text says the key and whether
            # they delete it (~key)
            key = key_or_group(override)
            if override.startswith("~") or key.split(".", 1)[0] in ("dashboard", "hydra"):
                continue
            flat = {key: choices[key]} if key in choices else _flatten(key, OmegaConf.select(cfg, key, default=None))
            if key not in choices:
                overridden.update(flat)
            if key not in ctx.fixed:
                varied.update(flat)
    if ctx.multirun:  # a value every trial shares only takes a column (the trial's header lists it)
        choices = {k: v for k, v in choices.items() if k in varied}
        overridden = {k: v for k, v in overridden.items() if k in varied}
    params = {**overridden, **choices}
    for key in sorted(ctx.log_scaled & set(params)):
        value = params[key]
        if is_number(value) and value > 0:
            column = log10_column(key, ctx)
            params[column] = round(math.log10(value), 4)
            varied.add(column)
    if ctx.round is not None:
        params[ROUND] = ctx.round
        varied.add(ROUND)
    return {k: _as_column(v) for k, v in params.items()}, varied


def _as_column(value: Any) -> Any:
    """Integers as right-aligned text (TensorBoard would print 3 as 3.0000); everything else as it is."""
    if is_integer(value):
        return str(value).rjust(INT_WIDTH)
    return value


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
    if isinstance(value, (DictConfig, ListConfig)):
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


def declared_columns(ctx: SweepContext) -> dict[str, Any]:
    """Columns every trial of the sweep declares, with a value of their type: the sweeper's parameters, the keys
    its stages' overrides set (a pinpoint trial's ``data.subset``) and the log10 columns of the log-scaled ones.
    TensorBoard takes the table's columns from one trial only (whichever it reads first), so each declares them
    all."""
    columns = dict(ctx.searched)
    for key in ctx.log_scaled & set(ctx.searched):
        columns[log10_column(key, ctx)] = 0.0
    return columns


def hparams_summaries(
    params: dict[str, Any], metric_tags: Iterable[Any] = TABLE_METRICS, status: str = COMPLETED,
    varied: Iterable[str] = (), declared: Optional[dict[str, Any]] = None,
) -> list[Any]:
    """The three HParams summaries (experiment, session start, session end) for one run.

    Meant for the run's own event file (``SummaryWriter.add_hparams`` would put them in a new
    subdirectory, a second run). ``metric_tags``: scalar tags, or (tag, display name) pairs. The
    hparams in ``varied``, and expt's own columns (status, diagnosis, round), are marked as
    differing between trials, which is how TensorBoard picks the columns it ticks. TensorBoard
    takes the experiment from one run of the directory, so it must describe every trial: text
    columns get no list of allowed values (which would hide a trial whose value the first one
    lacks), except the status and the diagnosis, which list all theirs. The session's status
    follows the run's: success when completed, failure when diverged or failed, unknown otherwise.
    """
    from google.protobuf import struct_pb2
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.plugins.hparams import api_pb2, metadata
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData, SessionEndInfo, SessionStartInfo

    def summary(tag: str, **content: Any) -> Any:
        data = HParamsPluginData(version=metadata.PLUGIN_DATA_VERSION, **content)
        meta = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(
            plugin_name=metadata.PLUGIN_NAME, content=data.SerializeToString()))
        return Summary(value=[Summary.Value(tag=tag, metadata=meta)])

    varied = set(varied) | {STATUS, DIAGNOSIS, ROUND} | set(declared or ())
    infos = []
    start = SessionStartInfo()
    columns = {**params, **{k: v for k, v in (declared or {}).items() if k not in params}}
    for name, value in columns.items():
        display = DISPLAY_NAMES.get(name) or (name.split("_", 3)[3] if name.startswith(LOG10_PREFIX) else name)
        info = api_pb2.HParamInfo(name=name, display_name=display, differs=name in varied)
        given = name in params  # a declared column this trial has no value for is left blank in its row
        if isinstance(value, bool):
            info.type = api_pb2.DATA_TYPE_BOOL
            if given:
                start.hparams[name].bool_value = value
        elif is_number(value):
            info.type = api_pb2.DATA_TYPE_FLOAT64
            if given:
                start.hparams[name].number_value = value
        else:
            info.type = api_pb2.DATA_TYPE_STRING
            if given:
                start.hparams[name].string_value = str(value)
            allowed = {STATUS: RUN_STATUSES, DIAGNOSIS: DIAGNOSES}.get(name)
            if allowed:
                info.domain_discrete.CopyFrom(struct_pb2.ListValue(values=[struct_pb2.Value(string_value=v) for v in allowed]))
        infos.append(info)
    metrics = []
    for entry in metric_tags:
        tag, display = entry if isinstance(entry, tuple) else (entry, entry.rsplit("/", 1)[-1].replace("_", " "))
        metrics.append(api_pb2.MetricInfo(name=api_pb2.MetricName(tag=tag), display_name=display))
    end = SessionEndInfo(status={
        COMPLETED: api_pb2.STATUS_SUCCESS, DIVERGED: api_pb2.STATUS_FAILURE, FAILED: api_pb2.STATUS_FAILURE,
    }.get(status, api_pb2.STATUS_UNKNOWN))
    return [
        summary(metadata.EXPERIMENT_TAG, experiment=api_pb2.Experiment(hparam_infos=infos, metric_infos=metrics)),
        summary(metadata.SESSION_START_INFO_TAG, session_start_info=start),
        summary(metadata.SESSION_END_INFO_TAG, session_end_info=end),
    ]
