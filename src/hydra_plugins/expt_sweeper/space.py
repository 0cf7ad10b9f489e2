"""The search space of a sweep, from ``hydra.sweeper.params`` and the command line's overrides.

Hydra's own override parser reads each ``interval()``, ``range()`` or ``choice()`` sweep
(:func:`param_from_override`); :func:`build_space` puts the sweeper's params and the command
line together (a sweep there replaces a param, a plain value pins its key). Against the composed
config, :func:`drop_absent` takes out keys the config does not have and :func:`check_choices`
composes every option of every choice once, so a bad value is an error before the first trial;
from those compositions :func:`conditions` finds the keys only some options of a searched group have.
"""

import logging
import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from hydra.core.config_loader import ConfigLoader
from hydra.core.override_parser.types import (
    ChoiceSweep,
    IntervalSweep,
    Override,
    RangeSweep,
)
from omegaconf import DictConfig, OmegaConf

from expt.search import (
    POSITIVE,
    ChoiceParam,
    Condition,
    Limits,
    NumericParam,
    Param,
    SearchConfigError,
    default_limits,
    integer_sweep,
)
from expt.errors import not_an_option
from expt.overrides import override_key, value_text

log = logging.getLogger(__name__)

ALLOWED_TAGS = {"log", "int"}


def flatten(mapping: Optional[Mapping[str, Any]], prefix: str = "") -> Dict[str, Any]:
    """Nested keys to dotted ones; a nested spelling wins over the same dotted key.

    Defaults use dotted keys (``optimizer.lr``) while command-line overrides such as
    ``hydra.sweeper.params.optimizer.lr=...`` arrive nested, so the nested one is the newer.
    """
    flat: Dict[str, Any] = {}
    nested: Dict[str, Any] = {}
    for key, value in (mapping or {}).items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            nested.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    flat.update(nested)
    return flat


def _limits_for(name: str, log_scale: bool, integer: bool, low: float,
                declared: Mapping[str, Any]) -> Limits:
    if name not in declared or declared[name] is None:
        return default_limits(log_scale, integer, low)
    limits = Limits.parse(str(declared[name]), key=f"hydra.sweeper.limits.{name}")
    return limits.intersect(POSITIVE) if log_scale else limits


def param_from_override(override: Override, declared_limits: Mapping[str, Any],
                        on_command_line: bool = False) -> Param:
    """One search parameter from an ``interval``, ``range`` or ``choice`` sweep override.

    Errors name the parameter as the user wrote it: ``hydra.sweeper.params.<key>`` for the
    sweeper's params, the override itself for a sweep given on the command line.
    """
    name = override.get_key_element()
    where = name if on_command_line else f"hydra.sweeper.params.{name}"
    try:
        return _param(override, name, where, declared_limits)
    except SearchConfigError as error:
        if error.allowed is None:
            raise
        written = value_text(override)
        origin = " (a sweep on the command line)" if on_command_line else ""
        raise SearchConfigError(f"{where}={written}{origin} is not allowed: {error.allowed}.",
                                error.allowed) from None


def _param(override: Override, name: str, where: str, declared_limits: Mapping[str, Any]) -> Param:
    value = override.value()
    tags = set(getattr(value, "tags", set()))
    if tags - ALLOWED_TAGS:
        raise SearchConfigError(
            f"{where}={value_text(override)} uses tag {sorted(tags - ALLOWED_TAGS)[0]}:"
            f" the tags allowed are {', '.join(sorted(ALLOWED_TAGS))}")
    if isinstance(value, ChoiceSweep):
        if tags:
            raise SearchConfigError(f"{where}: tags ({', '.join(sorted(tags))}) do not apply to choice()")
        return ChoiceParam(name, tuple(override.sweep_string_iterator()))
    log_scale = "log" in tags
    if isinstance(value, IntervalSweep):
        assert value.start is not None and value.end is not None
        integer = integer_sweep(value)
        low, high = float(value.start), float(value.end)
        if integer and (low != int(low) or high != int(high)):
            raise SearchConfigError(f"{where}=tag(int, interval({low}, {high})) needs integer bounds")
        limits = _limits_for(name, log_scale, integer, low, declared_limits)
        return NumericParam(name, low, high, log=log_scale, integer=integer, limits=limits)
    if isinstance(value, RangeSweep):
        start, stop, step = value.start, value.stop, value.step
        assert start is not None and stop is not None
        if step is None or step <= 0 or stop <= start:
            raise SearchConfigError(
                f"{where}=range({start}, {stop}, {step}) is empty: use range(start, stop[, step])"
                " with start < stop and a positive step")
        integer = integer_sweep(value)
        last = start + (math.ceil((stop - start) / step) - 1) * step
        limits = _limits_for(name, log_scale, integer, float(start), declared_limits)
        return NumericParam(name, float(start), float(last), log=log_scale, integer=integer,
                            step=float(step), anchor=float(start), limits=limits)
    raise SearchConfigError(
        f"{where}={value_text(override)} is not a search range: use interval(),"
        " tag(log, interval()), range() or choice()")


def build_space(
    params: Sequence[Override], arguments: Sequence[Override], declared_limits: Mapping[str, Any]
) -> Tuple[Dict[str, Param], List[str]]:
    """The search space and the fixed overrides every trial gets.

    ``params`` come from ``hydra.sweeper.params``, ``arguments`` from the command line; a
    sweep on the command line replaces the param of that key, and a plain value there pins
    the key, taking it out of the search.
    """
    space: Dict[str, Param] = {}
    fixed: Dict[str, str] = {}
    from_command_line = [False] * len(params) + [True] * len(arguments)
    for override, on_command_line in zip(list(params) + list(arguments), from_command_line):
        line = override.input_line or (
            f"{override.get_key_element()}={override.get_value_element_as_str()}")
        key = override_key(line)
        if override.is_sweep_override():
            space[key] = param_from_override(override, declared_limits, on_command_line)
            fixed.pop(key, None)
            continue
        fixed[key] = line
        if key in space and on_command_line:
            log.info("%s is fixed on the command line (%s): not searched", key, line)
            del space[key]
    return space, list(fixed.values())


def searched_groups(space: Mapping[str, Param], config: DictConfig) -> List[str]:
    """The config groups whose option a ``choice()`` searches (``model=choice(convnet,mlp)``)."""
    groups = OmegaConf.select(config, "hydra.runtime.choices", default=None) or {}
    return [name for name, param in space.items() if isinstance(param, ChoiceParam) and name in groups]


def _under(name: str, groups: Sequence[str]) -> Optional[str]:
    """The searched group ``name`` is a key of (``model`` for ``model.num_filters``), if any."""
    return next((g for g in groups if name.startswith(g + ".")), None)


def drop_absent(space: Dict[str, Param], config: DictConfig) -> List[str]:
    """Take the keys ``config`` does not have out of ``space``; returns them, for the search to know. A key of a
    group whose option is searched is left to :func:`conditions`: another option may have it."""
    groups = searched_groups(space, config)
    dropped = [name for name in space if not _in_config(config, name) and _under(name, groups) is None]
    for name in dropped:
        log.info("%s is not a key of this config (%s): not searched", name, _choices(config, name))
        del space[name]
    return dropped


def conditions(space: Dict[str, Param], composed: Mapping[Tuple[str, str], DictConfig],
               config: DictConfig) -> Tuple[Dict[str, Condition], List[str]]:
    """The parameters only some options of a searched group have (``model.num_filters`` where ``model=choice(
    convnet,mlp)``): a trial sets each only where its option has it. ``composed``: the config with each option
    (:func:`check_choices`). Returns them, and the ones no option has, taken out of ``space`` as
    :func:`drop_absent` does."""
    groups = searched_groups(space, config)
    choices = OmegaConf.select(config, "hydra.runtime.choices", default=None) or {}
    found: Dict[str, Condition] = {}
    dropped: List[str] = []
    for name in list(space):
        group = _under(name, groups)
        if group is None:
            continue
        default = str(choices.get(group))
        having = {o for (g, o), c in composed.items() if g == group and _in_config(c, name)}
        having |= {default} if _in_config(config, name) else set()
        options = set(space[group].choices) | {default}
        if having >= options:
            continue
        if not having:
            log.info("%s is not a key of any option of %s (%s): not searched", name, group,
                     ", ".join(sorted(options)))
            dropped.append(name)
            del space[name]
            continue
        found[name] = Condition(group, frozenset(having), default)
        log.info("%s is searched where %s is %s (the other options lack it)", name, group,
                 " or ".join(sorted(having)))
    return found, dropped


def check_choices(space: Mapping[str, Param], fixed: Sequence[str], arguments: Sequence[str],
                  loader: ConfigLoader, config: DictConfig) -> Dict[Tuple[str, str], DictConfig]:
    """Compose every option of every ``choice()`` once, before the first trial; returns those configs, by
    (parameter, option).

    A trial draws one option of each choice, so an option that cannot be composed (``activation=foo``
    where the group has no ``foo``) would otherwise fail only the trials that draw it, or stop the
    sweep when it is drawn by a stage's best trial. An option of a config group is checked against
    the group's options, which the error lists. ``fixed``: the overrides every trial gets;
    ``arguments``: the command line's, which tell where a choice was written.
    """
    groups = OmegaConf.select(config, "hydra.runtime.choices", default=None) or {}
    on_command_line = {override_key(a) for a in arguments if "choice(" in a}
    composed: Dict[Tuple[str, str], DictConfig] = {}
    for name, param in space.items():
        if not isinstance(param, ChoiceParam):
            continue
        where = name if name in on_command_line else f"hydra.sweeper.params.{name}"
        written = f"{where}=choice({', '.join(param.choices)})"
        options = sorted(loader.get_group_options(name)) if name in groups else []
        for option in param.choices:
            # a list of options ([l2,dropout]) for a group whose value is a list
            names = [n.strip() for n in option.strip("[]").split(",") if n.strip()] if option.startswith(
                "[") else [option]
            bad = [n for n in names if n not in options]
            if options and bad:
                raise SearchConfigError(not_an_option(written, name, bad[0], options))
            try:
                composed[(name, option)] = loader.load_sweep_config(config, [*fixed, f"{name}={option}"])
            except Exception as error:  # Hydra's composition errors, each a message of its own
                raise SearchConfigError(
                    f"{written} is not allowed: the option {option} does not compose ({composition_error(error)})"
                    + (f"; the group's options are: {', '.join(options)}." if options else ".")) from None
    return composed


def composition_error(error: BaseException) -> str:
    """Hydra's error composing a config, on one line: its message and the first line of its cause."""
    cause = f": {str(error.__cause__).splitlines()[0]}" if str(error.__cause__ or "") else ""
    return " ".join(f"{error}{cause}".split())


def _in_config(config: DictConfig, key: str) -> bool:
    """Whether the composed config has ``key`` (a config group's name counts)."""
    return OmegaConf.select(config, key, default=_ABSENT) is not _ABSENT


_ABSENT = object()


def _choices(config: DictConfig, key: str) -> str:
    """The config's group choices, to say which config lacks ``key``: its own group's first."""
    choices = OmegaConf.select(config, "hydra.runtime.choices", default=None) or {}
    shown = [f"{k}={v}" for k, v in choices.items() if not str(k).startswith("hydra") and v is not None]
    shown.sort(key=lambda choice: not key.startswith(override_key(choice) + "."))
    return " ".join(shown[:8]) or "its defaults"
