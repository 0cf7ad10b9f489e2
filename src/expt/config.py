"""The typed schema of the composed config, and the checks Hydra cannot express.

The schema is stored in Hydra's ConfigStore as ``schema`` and named first in
``conf/config.yaml``'s defaults list, so every option file merges into a typed node:
a misspelt trainer or regularization key, or a value of the wrong type, is rejected
by OmegaConf at composition time with the key's full name. The groups whose options
name a class (``_target_``) stay open so users can pass their class's own arguments;
:func:`validate` checks the keys, ranges and imports before any training starts, one
section of the config at a time, and ends with the dry run (:mod:`expt.dry_run`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence, TypeVar

import yaml
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from expt.errors import ConfigError, nearest, not_allowed, not_an_option, reason, written
from expt.instantiate import locate, parameters, to_plain
from expt.overrides import value_text
from expt.values import is_finite_number, is_integer

T = TypeVar("T")


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
CUDA_GRAPH_MODES = ("auto", "true", "false")
SANITY_GUARDS = ("warn", "false", "strict")
SWEEP_DIAGNOSTICS = ("final", "all", "none")
TARGET_GROUPS = ("data", "model", "activation", "preprocessing", "init", "optimizer", "schedule")
# The most classes a classifier may have: beyond this the last layer alone takes gigabytes.
MAX_CLASSES = 100_000


def amp_mode(value: Any) -> str:
    """``trainer.amp`` as one of :data:`AMP_MODES` (any case; ``false``, which YAML reads as a bool, is off)."""
    mode = str(value).lower()
    return "off" if mode == "false" else mode


def _fail(key: str, value: Any, allowed: str) -> None:
    raise not_allowed(key, value, allowed)


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


def _check_sanity(s: DictConfig) -> None:
    """The sanity checks' settings, and the guard before training (it reads them before every run)."""
    for key in ("loss_tolerance", "reg_strength"):
        _check(is_finite_number(s[key]) and s[key] > 0, f"sanity.{key}", s[key], "a number > 0")
    for key in ("gradcheck_samples", "gradcheck_entries", "overfit_samples", "overfit_epochs", "overfit_batch_size"):
        _check(s[key] >= 1, f"sanity.{key}", s[key], "an integer >= 1")
    _check(str(s.before_train).lower() in SANITY_GUARDS, "sanity.before_train", s.before_train,
           f"one of {', '.join(SANITY_GUARDS)}")


def _unknown_key(key: str, node: DictConfig, name: str, allowed: list[str], where: str) -> None:
    try:
        value = to_plain(node[name])
    except Exception:  # an interpolation that does not resolve: show it as written
        value = OmegaConf.to_container(node, resolve=False).get(name)
    raise ConfigError(_not_a_key(f"{key}={value!r}", key, allowed, where))


def _not_a_key(setting: str, key: str, allowed: list[str], where: str, meant: Optional[str] = None,
               noun: str = "key") -> str:
    """What to say of ``setting`` (``key=value`` as shown), whose last part of ``key`` is not in ``allowed``;
    ``meant``: the full key to suggest, where it is not the nearest of ``allowed``; ``noun``: what ``allowed``
    are called (keys, or a plugin's settings)."""
    near = nearest(key.rsplit(".", 1)[-1], allowed)
    prefix = key.rsplit(".", 1)[0] + "." if "." in key else ""
    hint = f" (did you mean {meant}?)" if meant else f" (did you mean {prefix}{near}?)" if near else ""
    return f"{setting} is not a {noun} of {where}{hint}; its {noun}s are: {', '.join(allowed)}."


def not_a_setting(prefix: str, key: str, value: Any, schema: type, what: str, text: bool = False) -> Optional[str]:
    """The paragraph for the override ``<prefix><key>=<value>`` where a part of ``key`` is not a setting of ``schema`` (a
    dataclass, called ``what``; a setting that is a dataclass itself, or a list of them by index, is followed into,
    ``<what>'s <setting>``): the settings there and the nearest one. With ``text`` (``value`` as the command line
    writes it), also a value that a setting taking one plain value (a number, a string, a bool, one of a list of
    names) cannot take (``hydra.sweeper.seed=abc``), which Hydra would print as a block of five lines, and a key
    that a setting's list of sections does not have (``hydra.sweeper.rounds=[{trials:2,topk:1}]``). None where
    every part is a setting (and the value fits), or leads into one that takes any key."""
    import enum
    import typing

    node, parts = schema, key.split(".")
    for depth, part in enumerate(parts):
        element = _listed(node) if part.isdigit() else None
        if element is not None:  # stages.0.rounds.1.top_k: an element of a list of sections
            node = element
            continue
        if not (isinstance(node, type) and dataclasses.is_dataclass(node)):
            return None
        settings = [f.name for f in dataclasses.fields(node) if not f.name.startswith("_")]
        if part not in settings:
            return _not_a_key(f"{prefix}{key}={value}", prefix + ".".join(parts[:depth + 1]), settings,
                              _owned(what, parts[:depth]), noun="setting")
        section, node = node, typing.get_type_hints(node).get(part)
    if not text:
        return None
    plain = [t for t in typing.get_args(node) or (node,) if t is not type(None)]
    listed = all(t in (int, float, str, bool) or (isinstance(t, type) and issubclass(t, enum.Enum)) for t in plain)
    if not (listed or _listed(node) is not None):
        return None
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        (override,) = OverridesParser.create().parse_overrides([f"{prefix}{key}={value}"])
    except Exception:  # what Hydra cannot parse, Hydra reports
        return None
    if override.is_sweep_override():
        return None
    if listed:
        return _wrong_type(section, parts[-1], override)  # the setting's own section: the sweeper's is large
    found = _unknown_inside(override.value(), node, [p for p in parts if not p.isdigit()])
    if found is None:
        return None
    name, settings, words = found
    return _not_a_key(f"{name} (in {prefix}{key}={value})", name, settings, _owned(what, words), meant=nearest(
        name, settings), noun="setting")


def _listed(node: Any) -> Optional[type]:
    """The dataclass a setting's type lists (``List[RoundConf]``, or that made Optional), or None."""
    import typing

    for kind in (node, *[t for t in typing.get_args(node) if t is not type(None)]):
        if typing.get_origin(kind) is list:
            (element,) = typing.get_args(kind) or (None,)
            return element if isinstance(element, type) and dataclasses.is_dataclass(element) else None
    return None


def _unknown_inside(value: Any, node: Any, words: list[str]) -> Optional[tuple[str, list[str], list[str]]]:
    """The first key in ``value`` (a list of mappings, as ``node`` lists dataclasses, followed into nested lists of
    them) that its dataclass lacks: the key, the dataclass's settings and the words that name where it is."""
    import typing

    element = _listed(node)
    if element is None or not isinstance(value, list):
        return None
    settings = [f.name for f in dataclasses.fields(element) if not f.name.startswith("_")]
    hints = typing.get_type_hints(element)
    for item in value:
        if not isinstance(item, dict):
            continue
        for name, inner in item.items():
            if name not in settings:
                return str(name), settings, words
            found = _unknown_inside(inner, hints.get(name), [*words, str(name)])
            if found is not None:
                return found
    return None


def _owned(what: str, words: Sequence[str]) -> str:
    """``what``'s setting named by ``words``, list indices left out: ``the coarse_to_fine sweeper's stages'
    rounds``."""
    owner = what
    for word in (w for w in words if not w.isdigit()):
        owner += ("' " if owner.endswith("s") else "'s ") + word
    return owner


def _typed_sections() -> dict[str, type]:
    """The sections of :class:`ExptConfig` whose keys a dataclass fixes: name -> dataclass."""
    return {f.name: f.default_factory for f in dataclasses.fields(ExptConfig)
            if dataclasses.is_dataclass(f.default_factory)}


LIST_GROUPS = ("regularization", "augmentation")  # expt's groups that take a list of options; the others take one


def unknown_override(arguments: list[str], own_config: bool = False) -> Optional[str]:
    """What is wrong with the first override Hydra would refuse with a less useful message; None where there is none.

    - A plain override (``trainer.epoch=3``, no ``+``) of a key that a typed section (trainer,
      regularization, sanity, dashboard) does not have: Hydra would suggest ``+trainer.epoch=3``, which
      :func:`check_keys` then rejects. This says in one step which keys there are and the nearest one.
    - The same for the option an open group (data, model, ...) composes (``model.num_filter=8``), where
      Hydra names neither the keys there are nor the nearest one (:func:`_unknown_in_groups`).
    - An option that a group does not have, alone (``activation=rleu``), in a list (``regularization=[l2,dropuot]``)
      or a sweep: the group's options and the nearest one, where Hydra names no nearest one (and, for a list,
      lists none); and a list of options for a group that takes one (``activation=[relu,tanh]``), which Hydra
      merges into one config, the last option's values winning.

    Arguments Hydra cannot parse are left to Hydra. ``own_config``: the command names a config of its own
    (``--config-dir``, ``--config-name``, ``--config-path``), whose groups and keys only Hydra knows: only the
    typed sections are checked.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType

    try:
        overrides = OverridesParser.create().parse_overrides(list(arguments))
    except Exception:  # Hydra says what is wrong with it
        return None
    sections = _typed_sections()
    top = [f.name for f in dataclasses.fields(ExptConfig)]
    options = _conf_options()
    known = {*top, "hydra", "experiment", *options}  # what a key may start with
    for override in overrides:
        parts = override.key_or_group.split(".")
        schema = sections.get(parts[0])
        if override.type != OverrideType.CHANGE or override.package is not None:
            continue
        stray = not own_config and "/" not in parts[0] and parts[0] not in known
        if stray and len(parts) == 1:
            key = parts[0]  # epochs=3: the key of a section, most likely
            within = next((f"{name}.{key}" for name, typed in sections.items()
                           if key in {f.name for f in dataclasses.fields(typed)}), None)
            if within is None:  # modle=mlp: a misspelt group whose option the value is
                having = [group for group, names in options.items() if value_text(override) in names]
                group = nearest(key, having)
                within = f"{group}={value_text(override)}" if group else None
            return _not_a_key(f"{key}={value_text(override)}", key, top, "the config (a top-level key)", within)
        if stray:
            # optimiser.lr=1e-3: a misspelt section or group, for which Hydra would suggest +optimiser.lr=1e-3
            near = nearest(parts[0], top)
            return _not_a_key(f"{override.key_or_group}={value_text(override)}", parts[0], top,
                              f"the config ({parts[0]} is not a top-level key)",
                              ".".join([near, *parts[1:]]) if near else None)
        if len(parts) < 2 or schema is None:
            continue
        allowed = [f.name for f in dataclasses.fields(schema)]
        if parts[1] not in allowed:
            return _not_a_key(f"{override.key_or_group}={value_text(override)}", ".".join(parts[:2]), allowed,
                              f"{parts[0]} ({schema.__name__})")
        if len(parts) == 2 and not override.is_sweep_override():
            problem = _wrong_type(schema, parts[1], override)
            if problem is not None:
                return problem
    return None if own_config else _unknown_in_groups(overrides, sections, options)


def _wrong_type(schema: type, key: str, override: Any) -> Optional[str]:
    """A value the typed section's field ``key`` cannot take (``trainer.epochs=abc``), as OmegaConf's first line:
    Hydra would print it as a block of five lines (the value, full_key, reference_type, object_type)."""
    from omegaconf.errors import ValidationError

    try:
        OmegaConf.merge(OmegaConf.structured(schema), {key: override.value()})
    except ValidationError as exc:
        return f"{override.key_or_group}={value_text(override)} is not allowed: {reason(exc)}."
    except Exception:  # anything else (an interpolation, a value Hydra parses otherwise) is left to Hydra
        return None
    return None


def _conf_options() -> dict[str, list[str]]:
    """expt's own config groups (``conf/<group>/``, Hydra's aside) and the options each one's files give."""
    from importlib.resources import files

    conf = files("expt.conf")
    return {d.name: _option_files(d) for d in conf.iterdir() if d.is_dir() and d.name not in ("hydra", "__pycache__")}


def _option_files(folder: Any) -> list[str]:
    """The options a config group's folder gives, one a YAML file; none where there is no such folder."""
    return sorted(f.name[:-5] for f in folder.iterdir() if f.name.endswith(".yaml")) if folder.is_dir() else []


def _own_file_has(group: str, option: str, keys: list[str]) -> bool:
    """Whether ``conf/<group>/<option>.yaml`` itself sets the nested ``keys`` (False where it cannot say: another
    package, a defaults list)."""
    from importlib.resources import files

    path = files("expt.conf") / group / f"{option}.yaml"
    try:
        text = path.read_text()
        node = yaml.safe_load(text) or {}
    except Exception:
        return False
    if "@package" in text or not isinstance(node, dict) or "defaults" in node:
        return False
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            return False
        node = node[key]
    return True


def _unknown_in_groups(overrides: list, sections: dict[str, type], options: dict[str, list[str]]) -> Optional[str]:
    """The open groups' part of :func:`unknown_override` (``options``: :func:`_conf_options`). Only what may be
    wrong costs a composition (about 0.1 s): a key that the chosen option's own file sets, and options among
    expt's own, are taken as they are."""
    from hydra.core.override_parser.types import OverrideType

    plain = [o for o in overrides if o.type == OverrideType.CHANGE]
    chosen: dict[str, Any] = {o.key_or_group: o.value() for o in plain
                              if o.key_or_group in options and not o.is_sweep_override()}
    if any(o.key_or_group == "experiment" and o.is_sweep_override() for o in plain):
        return None  # each preset of the sweep composes its own groups: Hydra checks each job
    defaults = _default_options()
    preset = chosen.get("experiment") is not None
    preset_options = _default_options(f"experiment/{chosen['experiment']}.yaml") if preset else {}
    swept = {o.key_or_group: _swept_options(o) for o in plain if o.key_or_group in options and o.is_sweep_override()}
    searched = any(o.key_or_group == "hydra/sweeper" and o.value() == "coarse_to_fine" for o in plain)
    suspects, named = [], []
    for o in plain:
        parts = o.key_or_group.split(".")
        group = parts[0]
        if o.package is None and len(parts) == 1 and group.startswith("hydra/"):  # hydra/launcher=populaton
            names, known = _options_named(o), _hydra_files(group)
            if any(name not in known for name in names):  # a plugin's, or none: Hydra's loader says
                named.append((o, names))
            continue
        if o.package is not None or group not in options:
            continue
        value = None if len(parts) > 1 or o.is_sweep_override() else o.value()
        if isinstance(value, list) and len(value) > 1 and group not in LIST_GROUPS:  # a preset's group too
            return (f"{group}={value_text(o)} is not allowed: {group} takes one option (one of "
                    f"{', '.join(options[group])}), and a list would merge its options into one, the last "
                    f"winning; only {' and '.join(LIST_GROUPS)} take a list. To try several, sweep them: "
                    f"python -m expt -m {group}={','.join(str(v) for v in value)}.")
        if isinstance(value, list) and len({str(v) for v in value}) < len(value):  # Hydra merges the repeats
            twice = sorted({str(v) for v in value if [str(w) for w in value].count(str(v)) > 1})
            return (f"{group}={value_text(o)} is not allowed: it names {' and '.join(twice)} more than once, and an "
                    f"option is applied once however often it is named (its settings are {group}.{twice[0]}.*); "
                    f"name each option once.")
        if len(parts) == 1:
            names = _options_named(o)
            if any(name not in options[group] for name in names):  # not expt's own: perhaps a plugin's
                named.append((o, names))
        if group == "experiment":
            continue
        if len(parts) == 1 and value is None and not o.is_sweep_override():  # Hydra would raise a ValueError
            return (f"{group}=null is not allowed: " + (
                f"{group} takes a list of its options ({', '.join(options[group])}); {group}=none or {group}=[] "
                "chooses none of them." if group in LIST_GROUPS else
                f"{group} takes one of its options ({', '.join(options[group])}); choose one with {group}=<option>."))
        if len(parts) == 1:
            continue
        if group in sections:  # checked above
            continue
        if group in swept:  # model=mlp,convnet model.num_filters=8: each job gets the key, whichever its option
            # (the coarse-to-fine sweeper searches a key only where the drawn option has it)
            if not (o.is_sweep_override() and searched) and \
                    not all(_own_file_has(group, option, parts[1:]) for option in swept[group]):
                suspects.append(o)
            continue
        by_preset = preset and group not in chosen and group in preset_options
        option = preset_options[group] if by_preset else chosen.get(group, defaults.get(group))
        picked = [str(v) for v in option] if isinstance(option, list) else [str(option)]
        known = not preset or group in chosen or by_preset  # the options chosen in the end
        if group in LIST_GROUPS and known and parts[1] in options[group] and parts[1] not in picked:
            # a setting of an option left out of the list: Hydra says the key is not in struct and to add it with +
            return (f"{o.key_or_group}={value_text(o)}: {parts[1]} is not among the options chosen "
                    f"({group}={'[' + ','.join(picked) + ']' if isinstance(option, list) else option}"
                    f"{', by experiment=' + str(chosen['experiment']) if by_preset else ''}); choose it "
                    f"too, e.g. {group}=[{','.join([*[p for p in picked if p != 'none'], parts[1]])}] "
                    f"{o.key_or_group}={value_text(o)}.")
        if preset or not isinstance(option, str) or not _own_file_has(group, option, parts[1:]):
            suspects.append(o)
    if not suspects and not named or any(o.key_or_group == "hydra.searchpath" for o in overrides):
        return None
    return _unknown_composed(overrides, suspects, named)


def _default_options(path: str = "config.yaml") -> dict[str, Any]:
    """The option of each group that the defaults list of ``conf/<path>`` chooses (``conf/config.yaml``'s, or a
    preset's, whose entries read ``override /<group>``)."""
    from importlib.resources import files

    try:
        defaults = yaml.safe_load((files("expt.conf") / path).read_text()).get("defaults", [])
    except Exception:
        return {}
    return {k.removeprefix("override ").lstrip("/"): v for entry in defaults if isinstance(entry, dict)
            for k, v in entry.items()}


def _unknown_composed(overrides: list, suspects: list, named: list) -> Optional[str]:
    """Compose as Hydra will (its search path, every plugin's options, the presets) to say for certain: ``suspects``,
    overrides of keys that may be misspelt; ``named``, (override, the options it names) where one may not exist."""
    from hydra import compose
    from hydra.core.global_hydra import GlobalHydra

    def check() -> Optional[str]:
        loader = GlobalHydra.instance().config_loader()
        for override, names in named:
            group = override.key_or_group
            available = loader.get_group_options(group)
            unknown = [n for n in names if n not in available]
            if unknown:
                said = not_an_option(f"{group}={value_text(override)}", group, unknown[0], available)
                package = HYDRA_PLUGINS.get(group, {}).get(unknown[0])
                return said if package is None else (f"{said} {unknown[0]} is the option of Hydra's plugin {package}, "
                                                     f"which is not installed here: pip install {package}.")
        if not suspects:
            return None
        swept = {o.key_or_group: o for o in overrides if o.is_sweep_override()}
        rest = [o.input_line for o in overrides if o not in suspects and o.key_or_group not in swept]
        try:
            cfg = compose(config_name="config", overrides=rest, return_hydra_config=True)
        except Exception:  # Hydra reports what does not compose
            return None
        for override in suspects:
            parts = override.key_or_group.split(".")
            if parts[0] not in swept:
                problem = _lacking(cfg, override, parts)
            else:  # the key under each option the group's sweep gives a job
                sweep = swept[parts[0]]
                options, lacking = _swept_options(sweep), {}
                for option in options:
                    try:
                        job = compose(config_name="config", overrides=[*rest, f"{parts[0]}={option}"],
                                      return_hydra_config=True)
                    except Exception:  # Hydra reports what does not compose
                        return None
                    found = _lacking(job, override, parts)
                    if found is not None:
                        lacking[option] = found
                problem = next(iter(lacking.values()), None)
                if lacking and len(lacking) < len(options):  # a key of some options, not misspelt
                    without = ",".join(lacking)
                    problem = (f"{problem[:-1]}. {parts[0]}={value_text(sweep)} gives {override.key_or_group} to "
                               f"every job, so the jobs of {parts[0]}={without} would fail: sweep {parts[0]}="
                               f"{without} in a multirun of its own, without {override.key_or_group}.")
            if problem is not None:
                return problem
        return None

    try:
        return in_hydra(check)
    except Exception:  # whatever goes wrong here, Hydra's own composition will report it
        return None


def _options_named(override: Any) -> list[str]:
    """The options a group's override names: one, a list's, or a sweep's; none for null or a dict (``model={a:1}``),
    which Hydra reports itself."""
    if override.is_sweep_override():
        return _swept_options(override)
    value = override.value()
    if isinstance(value, list):
        return [str(v) for v in value]
    return [] if value is None or isinstance(value, dict) else [str(value)]


def _hydra_files(group: str) -> set[str]:
    """The options of one of Hydra's groups (``hydra/job_logging``) that a file gives, Hydra's own or expt's; its
    plugins' (launchers, sweepers) only Hydra's loader lists."""
    from importlib.resources import files

    folders = [files(package).joinpath(*group.split("/")) for package in ("hydra.conf", "expt.conf")]
    return {name for folder in folders for name in _option_files(folder)}


# the options of Hydra's groups that a plugin of Hydra's adds, and the package that installs it
HYDRA_PLUGINS = {"hydra/launcher": {"joblib": "hydra-joblib-launcher", "submitit_local": "hydra-submitit-launcher",
                                    "submitit_slurm": "hydra-submitit-launcher", "ray": "hydra-ray-launcher",
                                    "ray_aws": "hydra-ray-launcher", "rq": "hydra-rq-launcher"},
                 "hydra/sweeper": {"optuna": "hydra-optuna-sweeper", "nevergrad": "hydra-nevergrad-sweeper",
                                   "ax": "hydra-ax-sweeper"}}


def _swept_options(override: Any) -> list[str]:
    """The options a sweep of a group gives its jobs (``model=mlp,convnet``); none where Hydra cannot list them."""
    try:
        return [str(v) for v in override.sweep_string_iterator()]
    except Exception:
        return []


def _lacking(cfg: DictConfig, override: Any, parts: list[str]) -> Optional[str]:
    """The paragraph for ``override`` (its key split into ``parts``) where the composed ``cfg`` lacks its key (the
    keys there, the nearest; or, where the option's class takes the key, to add it with +); None where it has it."""
    parent = OmegaConf.select(cfg, ".".join(parts[:-1]), default=None)
    if not isinstance(parent, DictConfig) or parts[-1] in parent.keys():  # `in` is False for a ??? value
        return None
    where = f"{parts[0]}={cfg.hydra.runtime.choices.get(parts[0])}" if len(parts) == 2 else ".".join(parts[:-1])
    setting = f"{override.key_or_group}={value_text(override)}"
    target = parent.get("_target_") if len(parts) == 2 else None
    if isinstance(target, str) and parts[-1] in _parameters_of(target):
        return f"{setting}: {where} does not set {parts[-1]}, but {target} takes it: add it with +{setting}."
    return _not_a_key(setting, override.key_or_group, [str(k) for k in parent], where)


def in_hydra(fn: Callable[[], T]) -> T:
    """``fn()`` where Hydra composes expt's conf/: in the Hydra already set up (a launcher's, a notebook's
    ``initialize``), or else in one set up for the call."""
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        return fn()
    with initialize_config_module(config_module="expt.conf", version_base="1.3"):
        return fn()


def _parameters_of(target: str) -> set[str]:
    """The settings a ``_target_``'s class or function takes: its keyword parameters with a default (those without
    one, an optimizer's params or a model's num_classes, expt supplies); none where it does not import."""
    try:
        declared = parameters(locate(target, "_target_")) or {}
    except ConfigError:
        return set()
    return {n for n, p in declared.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            and p.default is not p.empty}


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
    for section, schema in _typed_sections().items():
        if not isinstance(cfg.get(section), DictConfig):
            continue
        allowed = [g.name for g in dataclasses.fields(schema)]
        for name in cfg[section]:
            if name not in allowed:
                _unknown_key(f"{section}.{name}", cfg[section], name, allowed, f"{section} ({schema.__name__})")


def on_schema(cfg: Any) -> DictConfig:
    """``cfg`` with expt's typed sections (trainer, regularization, sanity, dashboard), as the trainer reads them.

    A config that :func:`expt.compose` or ``python -m expt`` composed has them and is returned as it is. One loaded
    from a file (a run's ``.hydra/config.yaml``), made with ``OmegaConf.create`` or given as a dict is merged onto
    :class:`ExptConfig`: its values are typed as on the command line, and keys that an older expt's file lacks
    take their defaults. A key the schema does not have is named as :func:`check_keys` names it.
    """
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(cfg, dict):
        cfg = OmegaConf.create(cfg)
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"the config is a {type(cfg).__name__}: expt trains a DictConfig, as expt.compose([...]) "
                          "makes one (or OmegaConf.load of a run's .hydra/config.yaml, or a dict of the same keys).")
    sections = _typed_sections()
    if all(OmegaConf.get_type(cfg, name) is schema for name, schema in sections.items()):
        return cfg
    check_keys(cfg)
    try:
        return OmegaConf.merge(OmegaConf.structured(ExptConfig), cfg)
    except OmegaConfBaseException as exc:  # a value its field cannot take: OmegaConf's first line, which names it
        key = getattr(exc, "full_key", None)
        raise ConfigError(f"{key}={written(getattr(exc, 'value', '?'))} is not allowed: {reason(exc)}." if key else
                          f"the config does not fit expt's schema: {reason(exc)}.") from None


def validate(cfg: DictConfig) -> None:
    """Check the composed config before anything is built; raise ConfigError on the first problem.

    The typed sections first (their keys, then their ranges), then the groups whose options name a class
    (each one's target imports, the learning rate, no value left ``???``, the data's split settings), and
    last the dry run of the activation, optimizer and schedule (:func:`expt.dry_run.dry_run`).
    """
    check_keys(cfg)
    _check(cfg.mode in MODES, "mode", cfg.mode, f"one of {', '.join(MODES)}")
    _check_trainer(cfg.trainer)
    _check_precision(cfg.trainer)
    _check_regularization(cfg.regularization)
    _check_sanity(cfg.sanity)
    _check_dashboard(cfg.dashboard)
    _check_targets_import(cfg)
    _check_learning_rate(cfg.optimizer)
    _check_nothing_missing(cfg)
    _check_data(cfg.data)
    from expt.dry_run import dry_run  # torch's: imported once a run is checked, so that a typo is told at once

    dry_run(cfg)


def _check_trainer(t: DictConfig) -> None:
    """The trainer's counts, factors and seconds."""
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
    _check(str(t.cuda_graph).lower() in CUDA_GRAPH_MODES, "trainer.cuda_graph", t.cuda_graph,
           f"one of {', '.join(CUDA_GRAPH_MODES)} (auto: capture the step on CUDA wherever that is exact)")
    # trainer.resume=$RUN with $RUN unset: an empty path would start the run anew without a word
    _check(t.resume is None or str(t.resume).strip() != "", "trainer.resume", t.resume,
           "a run directory or its checkpoints/last.pt (null, the default, starts the run anew)")


def _check_precision(t: DictConfig) -> None:
    """Mixed precision (trainer.amp), which only a float32 run can take, and the device."""
    _check(amp_mode(t.amp) in AMP_MODES, "trainer.amp", t.amp, f"one of {', '.join(AMP_MODES)}")
    if amp_mode(t.amp) != "off" and t.dtype != "float32":
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


def _check_regularization(r: DictConfig) -> None:
    """The penalties' strengths, the dropout probability and the max-norm bound."""
    for name in ("l1", "l2"):
        value = r[name]
        _check(is_finite_number(value) and value >= 0, f"regularization.{name}", value, "a strength >= 0")
    _check(
        is_finite_number(r.dropout) and 0 <= r.dropout < 1, "regularization.dropout", r.dropout,
        "a drop probability in [0, 1) (PyTorch's p: the fraction of units zeroed)",
    )
    if r.max_norm is not None:
        _check(is_finite_number(r.max_norm) and r.max_norm > 0, "regularization.max_norm", r.max_norm, "a norm > 0 or null")


def _check_dashboard(d: DictConfig) -> None:
    _check(d.sweep_diagnostics in SWEEP_DIAGNOSTICS, "dashboard.sweep_diagnostics", d.sweep_diagnostics,
           f"one of {', '.join(SWEEP_DIAGNOSTICS)} (the sweep rounds whose trials write histograms, filters, graph and config)")


def _check_targets_import(cfg: DictConfig) -> None:
    """Every target group is a mapping, and the class or function its ``_target_`` names imports."""
    for group in TARGET_GROUPS:
        if OmegaConf.is_missing(cfg, group):  # ~schedule, or a config file of one's own without it
            raise ConfigError(f"{group} is not chosen: every run needs one of its options ("
                              f"{', '.join(_conf_options().get(group, []))}); choose one with {group}=<option>.")
        node = cfg[group]
        _check(isinstance(node, DictConfig), group, node, "a mapping chosen from the group's options")
        if "_target_" in node:
            locate(node._target_, f"{group}._target_")


def _check_learning_rate(optimizer: DictConfig) -> None:
    lr = optimizer.get("lr")
    _check(
        is_finite_number(lr) and lr > 0, "optimizer.lr", lr,
        "a learning rate > 0 (for a model that must not learn use a tiny rate such as 1e-9)",
    )


def _check_nothing_missing(cfg: DictConfig) -> None:
    """No key of a target group is left ``???`` (an option without a default for it, such as npz's data.path)."""
    for group in TARGET_GROUPS:
        missing = [k for k in cfg[group] if OmegaConf.is_missing(cfg[group], k)]
        if missing:
            raise ConfigError(
                f"{group}.{missing[0]} is not set (???): {group}={cfg[group].get('name') or cfg[group].get('_target_')} "
                f"has no default for it; give it on the command line, such as {group}.{missing[0]}=..."
                + (" (the path of your .npz file)." if (group, missing[0]) == ("data", "path") else ".")
            )


def _check_data(d: DictConfig) -> None:
    """The keys expt reads from the data option itself: the split sizes and seed, the subset, download, classes."""
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



# ============================================================================= the config as text
def _fast_dumper() -> Optional[type]:
    """OmegaConf's YAML dumper on libyaml's emitter; None where PyYAML lacks libyaml or OmegaConf moved its dumper."""
    try:
        from omegaconf._utils import OmegaConfDumper
    except ImportError:  # pragma: no cover - depends on the installed OmegaConf
        return None
    if not getattr(yaml, "__with_libyaml__", False):  # pragma: no cover - depends on how PyYAML was built
        return None
    dumper = type("FastOmegaConfDumper", (yaml.CDumper,), {})
    dumper.add_representer(str, OmegaConfDumper.str_representer)  # quotes the strings YAML would read as bool or number
    return dumper


_DUMPER = _fast_dumper()


def to_yaml(cfg: Any, *, resolve: bool = False) -> str:
    """``OmegaConf.to_yaml(cfg, resolve=resolve)``, the same text, written by libyaml's emitter where PyYAML has it
    (2.5 times faster on expt's Hydra config): a sweep writes each trial's config, resolved and not, and its
    Hydra config."""
    if _DUMPER is None:  # pragma: no cover - depends on the installed PyYAML and OmegaConf
        return OmegaConf.to_yaml(cfg, resolve=resolve)
    container = OmegaConf.to_container(cfg, resolve=resolve, enum_to_str=True)
    text = yaml.dump(container, Dumper=_DUMPER, default_flow_style=False, allow_unicode=True, sort_keys=False)
    if "\\" in text:  # libyaml escapes what PyYAML's own emitter writes as it is (U+0085, characters past U+FFFF)
        return OmegaConf.to_yaml(cfg, resolve=resolve)
    return text
