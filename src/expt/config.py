"""Typed schemas for the composed config, and the checks Hydra cannot express.

The schema is stored in Hydra's ConfigStore as ``schema`` and named first in
``conf/config.yaml``'s defaults list, so every option file merges into a typed node:
a misspelt trainer or regularization key, or a value of the wrong type, is rejected
by OmegaConf at composition time with the key's full name. The groups whose options
name a class (``_target_``) stay open so users can pass their class's own arguments;
:func:`validate` checks the ranges and imports before any training starts.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.experimental.callback import Callback
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from expt.errors import ConfigError
from expt.schedule import LearningRate

log = logging.getLogger("expt")


@dataclass
class RegularizationConfig:
    """Merged from the options of the list-valued ``regularization`` group."""

    l1: float = 0.0  # lambda * sum(|w|) over conv/linear weights
    l2: float = 0.0  # lambda * sum(w^2) over conv/linear weights (no 1/2 factor)
    max_norm: Optional[float] = None  # clamp each unit's incoming weight norm after every step
    dropout: float = 0.0  # drop probability after every hidden activation
    batchnorm: bool = False  # batch norm after every hidden conv/linear, before the activation


@dataclass
class TrainerConfig:
    device: str = "auto"
    epochs: int = 10
    batch_size: int = 64
    dtype: str = "float32"
    seed: int = 0
    train_eval_samples: int = 1000
    resume: Optional[str] = None
    divergence_factor: float = 3.0
    log_every: int = 50
    checkpoint_interval: float = 5.0  # seconds of training between writes of last.pt; 0 = after every epoch
    amp: str = "off"  # off | bf16 | fp16 (fp16 with a gradient scaler)
    channels_last: bool = False
    compile: bool = False  # torch.compile the training step's model
    cuda_graph: str = "auto"  # auto | true | false: capture the training step as a CUDA graph (expt.capture)
    label_smoothing: float = 0.0  # cross-entropy of the training step against (1 - e) one-hot + e / C
    ema: float = 0.0  # decay of an exponential moving average of the weights, updated every step; 0 = off
    progress_after: float = 5.0  # seconds into an epoch before a progress bar shows (at a terminal, not in sweeps)
    snapshots: int = 0  # keep the weights of the last K epochs (checkpoints/epoch_<n>.pt) to ensemble; 0 = none


@dataclass
class SanityConfig:
    """The recipe's sanity checks (``mode=sanity``) and the guard before training."""

    before_train: str = "warn"  # warn | false | strict: the loss-at-init check before a run
    loss_tolerance: float = 0.05  # |initial loss - log C| / log C allowed (shipped models start within 2%)
    reg_strength: float = 1.0  # L2 strength used to show that regularization raises the loss
    gradcheck_samples: int = 2
    gradcheck_entries: int = 5  # entries checked per parameter tensor
    overfit_samples: int = 100
    overfit_epochs: int = 30
    overfit_batch_size: int = 50


@dataclass
class DashboardConfig:
    """What a run writes for TensorBoard besides its scalars (src/expt/dashboard/).

    The per-epoch diagnostics cost a little time, so each can be switched off; none of them
    changes the training numbers.
    """

    update_ratio: bool = True  # ||update|| / ||weight|| per weight tensor, at the logging steps only
    histograms: bool = True  # per-layer activation and gradient histograms on one fixed batch, per epoch
    filters: bool = True  # the first layer's weights as an image grid, per epoch
    graph: bool = True  # the model graph (traced once, before training)
    summary: bool = True  # the model's layers and parameter counts as text (once)
    # in a sweep's trials, the heavy diagnostics (histograms, filters, graph, full config text) are written
    # in the final round only (final), in every round (all) or in none (none); outside a sweep, always
    sweep_diagnostics: str = "final"


@dataclass
class ExptConfig:
    data: Any = MISSING
    model: Any = MISSING
    activation: Any = MISSING
    preprocessing: Any = MISSING
    init: Any = MISSING
    regularization: RegularizationConfig = field(default_factory=RegularizationConfig)
    augmentation: Any = field(default_factory=dict)  # name -> option (_target_ and its keys), applied in order
    optimizer: Any = MISSING
    schedule: Any = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    sanity: SanityConfig = field(default_factory=SanityConfig)
    dashboard: DashboardConfig = field(default_factory=DashboardConfig)
    mode: str = "train"


ConfigStore.instance().store(name="schema", node=ExptConfig)

MODES = ("train", "sanity")
DTYPES = ("float32", "float64")
AMP_MODES = ("off", "bf16", "fp16")
SANITY_GUARDS = ("warn", "false", "strict")
SWEEP_DIAGNOSTICS = ("final", "all", "none")
TARGET_GROUPS = ("data", "model", "activation", "preprocessing", "init", "optimizer", "schedule")
# The most classes a classifier may have: beyond this the last layer alone takes gigabytes.
MAX_CLASSES = 100_000


def _fail(key: str, value: Any, allowed: str) -> None:
    raise ConfigError(f"{key}={value!r} is not allowed: {allowed}.")


def _check(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        _fail(key, value, allowed)


def user_path(path: str) -> "Path":
    """A path the user gave, with ``~`` expanded; a relative one is relative to where they started expt.

    Inside a Hydra job with ``hydra.job.chdir=true`` the working directory is the run directory,
    so a relative ``data.path`` or ``trainer.resume`` would otherwise be looked up there.
    """
    import os
    from pathlib import Path

    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import get_original_cwd

    expanded = Path(os.path.expanduser(str(path)))
    if not expanded.is_absolute() and HydraConfig.initialized():
        return Path(get_original_cwd()) / expanded
    return expanded


def is_integer(value: Any) -> bool:
    """An int that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_sanity(s: DictConfig) -> None:
    """The sanity settings the schema's types cannot check (the loss-at-init guard reads them before every run)."""
    for key in ("loss_tolerance", "reg_strength"):
        _check(is_finite_number(s[key]) and s[key] > 0, f"sanity.{key}", s[key], "a number > 0")
    for key in ("gradcheck_samples", "gradcheck_entries", "overfit_samples", "overfit_epochs", "overfit_batch_size"):
        _check(s[key] >= 1, f"sanity.{key}", s[key], "an integer >= 1")


def is_finite_number(value: Any) -> bool:
    """A real number (not a bool) that is neither NaN nor infinite."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def locate(target: str, key: str) -> Any:
    """Import the object a ``_target_`` names, or raise a ConfigError naming ``key``."""
    from hydra.utils import get_object

    try:
        return get_object(target)
    except Exception as exc:  # ImportError, AttributeError, ValueError from Hydra's locator
        raise ConfigError(
            f"{key}={target!r} does not import ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
            "a _target_ must be the dotted path of an importable class or function, "
            "such as torch.nn.ReLU or mypackage.layers.Mish."
        ) from None


def _unknown_key(key: str, node: DictConfig, name: str, allowed: list[str], where: str) -> None:
    import difflib

    try:
        value = to_plain(node[name])
    except Exception:  # an interpolation that does not resolve: show it as written
        value = OmegaConf.to_container(node, resolve=False).get(name)
    near = difflib.get_close_matches(name, allowed, n=1)
    prefix = key.rsplit(".", 1)[0] + "." if "." in key else ""
    hint = f" (did you mean {prefix}{near[0]}?)" if near else ""
    raise ConfigError(f"{key}={value!r} is not a key of {where}{hint}; its keys are: {', '.join(allowed)}.")


def check_keys(cfg: DictConfig) -> None:
    """Raise a ConfigError for a key that nothing reads: a top-level key that is not in :class:`ExptConfig`,
    or a key of a typed section (trainer, regularization, sanity, dashboard) that is not one of its fields.

    ``+trainer.epoch=3`` or ``+foo=bar`` add keys that the typed schema would reject without the ``+``.
    The target groups (data, model, ...) are checked when they are built, against their target's
    parameters. ``hydra`` (Hydra's own settings, present in some composed configs) is allowed.
    """
    top = [f.name for f in dataclasses.fields(ExptConfig)]
    for name in cfg:
        if name not in top and name != "hydra":
            _unknown_key(str(name), cfg, name, top, "the config (a top-level key)")
    for f in dataclasses.fields(ExptConfig):
        schema = f.default_factory
        if not dataclasses.is_dataclass(schema) or not isinstance(cfg.get(f.name), DictConfig):
            continue
        allowed = [g.name for g in dataclasses.fields(schema)]
        for name in cfg[f.name]:
            if name not in allowed:
                _unknown_key(f"{f.name}.{name}", cfg[f.name], name, allowed, f"{f.name} ({schema.__name__})")


def validate(cfg: DictConfig) -> None:
    """Check the composed config before anything is built; raise ConfigError on the first problem."""
    check_keys(cfg)
    _check(cfg.mode in MODES, "mode", cfg.mode, f"one of {', '.join(MODES)}")

    t = cfg.trainer
    _check(t.epochs >= 0, "trainer.epochs", t.epochs, "an integer >= 0 (0 evaluates the initialised model)")
    _check(0 <= t.seed < 2**63, "trainer.seed", t.seed, "an integer from 0 to 2**63 - 1")
    _check(t.batch_size >= 1, "trainer.batch_size", t.batch_size, "an integer >= 1")
    _check(t.dtype in DTYPES, "trainer.dtype", t.dtype, f"one of {', '.join(DTYPES)}")
    _check(t.train_eval_samples >= 1, "trainer.train_eval_samples", t.train_eval_samples, "an integer >= 1")
    _check(t.divergence_factor > 1, "trainer.divergence_factor", t.divergence_factor, "a number > 1")
    _check(t.log_every >= 1, "trainer.log_every", t.log_every, "an integer >= 1")
    _check(0 <= t.progress_after < math.inf, "trainer.progress_after", t.progress_after,
           "a number of seconds >= 0 (0 shows the bar from the first step)")
    _check(t.snapshots >= 0, "trainer.snapshots", t.snapshots,
           "an integer >= 0 (0 keeps none; K keeps the weights of the last K epochs for python -m expt.evaluate --snapshots)")
    _check(0 <= t.ema < 1, "trainer.ema", t.ema,
           "a decay in [0, 1) (0: no averaged weights; 0.99 to 0.999 are usual)")
    _check(0 <= t.label_smoothing < 1, "trainer.label_smoothing", t.label_smoothing,
           "a smoothing in [0, 1) (0: plain cross-entropy; 0.1 is usual)")
    _check(
        0 <= t.checkpoint_interval < math.inf, "trainer.checkpoint_interval", t.checkpoint_interval,
        "a number of seconds >= 0 (0 writes a checkpoint after every epoch)",
    )
    _check(str(t.amp).lower() in AMP_MODES + ("false",), "trainer.amp", t.amp, f"one of {', '.join(AMP_MODES)}")
    if str(t.amp).lower() in ("bf16", "fp16") and t.dtype != "float32":
        raise ConfigError(
            f"trainer.amp={t.amp} is not allowed with trainer.dtype={t.dtype}: mixed precision runs float32 "
            f"operations in {t.amp} and leaves {t.dtype} ones alone, so it would change nothing; use "
            "trainer.dtype=float32 with trainer.amp, or trainer.amp=off."
        )
    dev = t.device
    _check(
        dev in ("auto", "cpu", "cuda") or dev.startswith("cuda:"),
        "trainer.device", dev, "auto, cpu, cuda or cuda:N",
    )

    r = cfg.regularization
    for name in ("l1", "l2"):
        value = r[name]
        _check(is_finite_number(value) and value >= 0, f"regularization.{name}", value, "a strength >= 0")
    _check(
        is_finite_number(r.dropout) and 0 <= r.dropout < 1, "regularization.dropout", r.dropout,
        "a drop probability in [0, 1) (PyTorch's p: the fraction of units zeroed)",
    )
    if r.max_norm is not None:
        _check(is_finite_number(r.max_norm) and r.max_norm > 0, "regularization.max_norm", r.max_norm, "a norm > 0 or null")

    check_sanity(cfg.sanity)
    g = cfg.sanity.before_train
    _check(str(g).lower() in SANITY_GUARDS, "sanity.before_train", g, f"one of {', '.join(SANITY_GUARDS)}")
    sd = cfg.dashboard.sweep_diagnostics
    _check(sd in SWEEP_DIAGNOSTICS, "dashboard.sweep_diagnostics", sd,
           f"one of {', '.join(SWEEP_DIAGNOSTICS)} (the sweep rounds whose trials write histograms, filters, graph and config)")

    for group in TARGET_GROUPS:
        node = cfg[group]
        _check(isinstance(node, DictConfig), group, node, "a mapping chosen from the group's options")
        if "_target_" in node:
            locate(node._target_, f"{group}._target_")

    lr = cfg.optimizer.get("lr")
    _check(
        is_finite_number(lr) and lr > 0, "optimizer.lr", lr,
        "a learning rate > 0 (for a model that must not learn use a tiny rate such as 1e-9)",
    )

    for group in TARGET_GROUPS:
        missing = [k for k in cfg[group] if OmegaConf.is_missing(cfg[group], k)]
        if missing:
            raise ConfigError(
                f"{group}.{missing[0]} is not set (???): {group}={cfg[group].get('name') or cfg[group].get('_target_')} "
                f"has no default for it; give it on the command line, such as {group}.{missing[0]}=..."
                + (" (the path of your .npz file)." if (group, missing[0]) == ("data", "path") else ".")
            )

    d = cfg.data
    for name in ("val_size", "test_size"):
        if name in d:
            value = d[name]
            _check(
                is_finite_number(value) and (0 < value < 1 or (is_integer(value) and value >= 1)),
                f"data.{name}", value,
                "a fraction in (0, 1) of the samples, or a count of samples (an integer >= 1, such as 5000)",
            )
    if d.get("subset") is not None:
        _check(is_integer(d.subset) and d.subset >= 1,
               "data.subset", d.subset, "an integer >= 1 or null")
    if "split_seed" in d:
        _check(is_integer(d.split_seed) and 0 <= d.split_seed < 2**63, "data.split_seed", d.split_seed,
               "an integer from 0 to 2**63 - 1")
    if "download" in d:
        _check(isinstance(d.download, bool), "data.download", d.download,
               "true (fetch missing files, checking their MD5) or false")
    classes = d.get("num_classes")
    if classes is not None:
        _check(is_integer(classes) and 2 <= classes <= MAX_CLASSES,
               "data.num_classes", classes,
               f"an integer from 2 to {MAX_CLASSES:,} (the classifier's outputs), or null to take the largest label + 1")

    _dry_run(cfg)


PRESET_GROUP = "experiment"


def _chosen_options(config_name: str, overrides: Sequence[str]) -> dict[str, list[str]]:
    """``{group: [options]}`` that Hydra's defaults list picks for ``overrides`` (list groups keep their order)."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    loader = GlobalHydra.instance().config_loader()
    chosen: dict[str, list[str]] = {}
    for entry in loader.compute_defaults_list(config_name, list(overrides), RunMode.RUN).defaults:
        path = entry.config_path or ""
        if entry.is_self or "/" not in path or path.startswith("hydra/"):
            continue
        group, option = path.rsplit("/", 1)
        chosen.setdefault(group, []).append(option)
    return chosen


def apply_preset_choices(cfg: DictConfig, overrides: Sequence[str], config_name: str = "config",
                         choices: Optional[Any] = None) -> list[str]:
    """Drop a preset's settings of the groups where ``overrides`` choose another option; returns those groups.

    A preset (``experiment=...``) chooses options for some groups and sets some of their keys in its
    own body, which Hydra merges after the options. When an override then chooses another option of
    such a group (``experiment=fashion_mnist_convnet augmentation=none``, or ``model=mlp`` after a
    preset that sets ``model.hidden_dim``), Hydra keeps the preset's keys, which belong to the option
    that was replaced. Here each such group's node becomes the one the same overrides compose without
    the preset: the chosen options with their own defaults, and every key the overrides set. For a
    group whose options each have their own entry (augmentation), an option that both the preset and
    the overrides choose keeps the preset's settings (``augmentation=[translate]`` after a preset's
    ``[translate, hflip]`` keeps its ``pad``). Groups the overrides leave alone keep the preset's
    settings; so do groups where they choose the preset's own option.

    ``cfg`` (composed from ``overrides``) changes in place. Hydra must be initialized (inside a Hydra
    job, or :func:`expt.compose`). Anything that does not compose is left to :func:`validate` to report.
    ``choices`` (Hydra's ``hydra.runtime.choices``), when given, lets a run without a preset return at once.
    """
    from hydra import compose as hydra_compose
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if choices is not None and choices.get(PRESET_GROUP) is None:
        return []
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
        own = [o.input_line for o in parsed if o.key_or_group == PRESET_GROUP]
        others = [o.input_line for o in parsed if o.key_or_group != PRESET_GROUP]
        if not any("." not in o.key_or_group and not o.key_or_group.startswith("hydra")
                   for o in parsed if o.key_or_group != PRESET_GROUP):
            return []  # only keys are set (model.depth=32): no group's option changes
        final = _chosen_options(config_name, overrides)
        if not final.get(PRESET_GROUP):
            return []
        preset = _chosen_options(config_name, own)
        changed = [g for g, options in final.items()
                   if g != PRESET_GROUP and "/" not in g and g in cfg and preset.get(g) != options]
        if not changed:
            return []
        base = hydra_compose(config_name=config_name, overrides=others + ([] if own else [f"~{PRESET_GROUP}"]))
    except Exception:  # an override that does not compose on its own: validate() names it
        return []
    from omegaconf import open_dict

    name = final[PRESET_GROUP][0]
    replaced: list[str] = []
    with open_dict(cfg):
        for group in changed:
            kept = set(preset.get(group, [])) & set(final[group])
            node = base[group]
            per_option = isinstance(node, DictConfig) and any(isinstance(node.get(o), DictConfig) for o in kept)
            if per_option:
                entries = {k: (cfg[group][k] if k in kept and k in cfg[group] else node[k]) for k in node}
                node = OmegaConf.create({k: OmegaConf.to_container(v, resolve=False) if isinstance(v, DictConfig)
                                         else v for k, v in entries.items()})
            if OmegaConf.to_container(node, resolve=False) == OmegaConf.to_container(cfg[group], resolve=False):
                continue  # the preset sets nothing of this group's options
            cfg[group] = node
            replaced.append(group)
            log.info("%s=[%s] replaces the choice [%s] of %s=%s, and the preset's settings of %s.",
                     group, ",".join(final[group]), ",".join(preset.get(group, [])), PRESET_GROUP, name,
                     "the options it no longer chooses" if per_option else "this group")
    return replaced


def _settings(node: DictConfig, group: str) -> str:
    settings = [f"{group}.{k}={v}" for k, v in to_plain(node).items() if not k.startswith("_")]
    return ", ".join(settings) or "no settings"


MAX_DRY_RUN_EPOCHS = 10_000  # the schedule's rates are checked for at most this many epochs
PER_STEP = "per_step"  # a schedule option's key saying it steps every batch; not passed to its class
DRY_RUN_STEPS = 10


def learning_rate(cfg: DictConfig, steps_per_epoch: int) -> Any:
    """The run's :class:`expt.schedule.LearningRate`: its schedule option, optimizer.lr and trainer.epochs."""
    node = to_plain(cfg.schedule)
    per_step = bool(node.pop(PER_STEP, False))
    factory = instantiate(OmegaConf.create(node), "schedule")
    try:
        return LearningRate(factory, cfg.optimizer.lr, steps_per_epoch, cfg.trainer.epochs, per_step)
    except ConfigError:
        raise
    except Exception as exc:  # the class rejects its settings for this run's length
        reason = (str(exc).strip().splitlines() or ["no message"])[0].rstrip(".")
        span = (f"{cfg.trainer.epochs} epochs of {steps_per_epoch} steps" if per_step
                else f"{cfg.trainer.epochs} epochs")
        raise ConfigError(f"schedule={node.get('_target_')} cannot run with {_settings(cfg.schedule, 'schedule')} "
                          f"over {span}: {type(exc).__name__}: {reason}.") from None


def _dry_run(cfg: DictConfig) -> None:
    """Apply the activation to a few numbers, build the optimizer and schedule on one dummy parameter
    and step them through the run's epochs (at most ``MAX_DRY_RUN_EPOCHS``), so that a value the class
    itself rejects (a negative momentum, a StepLR step_size of 0, ...) stops the run before training,
    naming its settings, and so does a schedule that would train an epoch at a rate <= 0 or not finite.

    The rates come from the run's :class:`expt.schedule.LearningRate` (ReduceLROnPlateau sees a validation
    loss that never improves, so that it cuts the rate as early as it can). The rate of epoch e is
    the one after e - 1 steps; the rate after the last step is never used, so a schedule may anneal
    to exactly 0 at the end of the run (cosine to eta_min=0). A per-step schedule is checked at the first
    step of each epoch, with :data:`DRY_RUN_STEPS` steps an epoch.
    """
    import warnings

    import torch

    def attempt(group: str, fn: Any) -> Any:
        try:
            return fn()
        except ConfigError:
            raise
        except Exception as exc:
            target = cfg[group].get("_target_")
            reason = (str(exc).strip().splitlines() or ["no message"])[0].rstrip(".")
            raise ConfigError(
                f"{group}={target} cannot run with {_settings(cfg[group], group)}: {type(exc).__name__}: {reason}."
            ) from None

    activation = instantiate(cfg.activation, "activation", partial=True)
    attempt("activation", lambda: activation()(torch.linspace(-3.0, 3.0, 7)))

    param = torch.zeros(2, requires_grad=True)
    make_optimizer = instantiate(cfg.optimizer, "optimizer")
    optimizer = attempt("optimizer", lambda: make_optimizer([{"params": [param]}]))
    # the data are not loaded yet: a per-step schedule is checked as if an epoch took DRY_RUN_STEPS steps
    schedule = attempt("schedule", lambda: learning_rate(cfg, DRY_RUN_STEPS))
    epochs = int(cfg.trainer.epochs)
    checked = min(epochs, MAX_DRY_RUN_EPOCHS)

    def steps() -> None:
        previous = ""
        for epoch in range(1, checked + 1):
            lr = schedule.epoch_rate(epoch)
            if not (math.isfinite(lr) and lr > 0):
                raise ConfigError(
                    f"schedule={cfg.schedule.get('_target_')} with {_settings(cfg.schedule, 'schedule')} gives "
                    f"a learning rate of {lr:.4g} at epoch {epoch} of trainer.epochs={epochs} "
                    f"({previous}optimizer.lr={cfg.optimizer.get('lr')}): every epoch must train at a finite rate > 0; "
                    "change the schedule's settings (a decay factor or gamma in (0, 1), an eta_min >= 0, "
                    "a period that covers the run)."
                )
            previous = f"{lr:.4g} at epoch {epoch}, "
            schedule.observe(1.0)
        schedule.epoch_rate(checked + 1)  # the step after the last epoch: its rate is never used, but the
        # schedule's class computes it, and a setting it rejects (StepLR's step_size=0) shows there

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        attempt("schedule", steps)


def output_dir_problem(path: str, create: bool = False) -> Optional[str]:
    """Why Hydra could not create or write the run directory ``path``, or None when it can.

    ``create=True`` also makes the directory (as Hydra is about to), which catches what the checks
    cannot see, such as a read-only file system.
    """
    import os
    from pathlib import Path

    target = Path(os.path.abspath(path))
    existing = target
    try:
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            if existing == target:
                return "is an existing file, not a directory"
            return f"cannot be created: {existing} is a file, not a directory"
    except OSError as exc:
        return f"cannot be checked ({exc.strerror or exc})"
    if not os.access(existing, os.W_OK | os.X_OK):
        return "is not writable" if existing == target else f"cannot be created: {existing} is not writable"
    if create:
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return f"cannot be created ({exc.strerror or exc})"
    return None


class OutputDirCheck(Callback):
    """Stop before Hydra creates the run (or sweep) directory when it cannot: one paragraph, exit 1.

    Registered in ``conf/config.yaml`` under ``hydra.callbacks``. Hydra would otherwise fail in
    its own ``mkdir`` with a traceback. With ``HYDRA_FULL_ERROR=1`` it leaves Hydra's error alone.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "hydra.run.dir", "outputs/<date>/<time>", create=True)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "hydra.sweep.dir", "multirun/<date>/<time>", create=False)

    @staticmethod
    def _check(config: DictConfig, key: str, default: str, create: bool) -> None:
        import os
        import sys

        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            return
        path = OmegaConf.select(config, key)
        problem = output_dir_problem(str(path), create) if path is not None else None
        if problem is not None:
            print(
                f"Error in the config: {key}={str(path)!r} {problem}; point {key} at a directory that can be "
                f"created and written to, or leave it out (the default is {default}).\n"
                "Set HYDRA_FULL_ERROR=1 for a complete stack trace.",
                file=sys.stderr,
            )
            raise SystemExit(1)


def to_plain(node: Any) -> Any:
    """A resolved plain-Python copy of a config node (dicts, lists, scalars)."""
    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node, resolve=True)
    return node


def check_params(fn: Any, params: dict, group: str, where: str, also: Sequence[str] = ()) -> None:
    """Raise a ConfigError when ``params`` has a key that ``fn`` does not take, listing the keys it does
    (and ``also``: the group's keys that expt reads itself, such as data's split settings)."""
    import inspect

    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # builtins without a signature: let the call report
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()):
        return
    unknown = [k for k in params if k not in sig.parameters and k not in also]
    if unknown:
        allowed = [n for n, p in sig.parameters.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL]
        allowed += [k for k in also if k not in allowed]
        raise ConfigError(
            f"{group}.{unknown[0]} is not a setting of {where}; its settings are: {', '.join(allowed) or 'none'}."
        )


def call(fn: Any, params: dict, group: str, where: str, **runtime: Any) -> Any:
    """Call ``fn(**params, **runtime)`` after checking that every config key is one of its parameters."""
    params = to_plain(params) if isinstance(params, DictConfig) else dict(params)
    check_params(fn, params, group, where)
    try:
        return fn(**params, **runtime)
    except TypeError as exc:
        raise ConfigError(f"{where} cannot be built from {group}={params}: {exc}.") from None
    except (MemoryError, RuntimeError) as exc:  # torch's allocators raise RuntimeError (OutOfMemoryError on CUDA)
        if not isinstance(exc, MemoryError) and "alloc" not in str(exc).lower() and "out of memory" not in str(exc):
            raise
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[-1].strip()[:200]
        raise ConfigError(
            f"{where} with {_settings(OmegaConf.create(params), group)} does not fit in memory ({reason}): "
            f"make it smaller (fewer or narrower layers, or fewer classes)."
        ) from None


def instantiate(node: DictConfig, group: str, partial: bool = False, **runtime: Any) -> Any:
    """Build the object a ``_target_`` node names, with the node's keys and the ``runtime`` arguments.

    ``_partial_: true`` (or ``partial=True``) returns a ``functools.partial`` that takes the
    remaining arguments later (the optimizer gets the parameters, the schedule the optimizer).
    """
    import functools

    params = to_plain(node)
    target = params.pop("_target_", None)
    if target is None:
        raise ConfigError(f"{group} has no _target_: every {group} option names the class or function it builds.")
    partial = bool(params.pop("_partial_", False)) or partial
    fn = locate(target, f"{group}._target_")
    where = f"{group}={target}"
    if partial:
        check_params(fn, {**params, **runtime}, group, where)
        return functools.partial(fn, **params, **runtime)
    return call(fn, params, group, where, **runtime)
