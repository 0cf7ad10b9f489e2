"""Each job's config as Hydra's ``load_sweep_config`` composes it, read from the config files once a shape.

The trials of a sweep round differ in the values they set (``optimizer.lr=3.1e-4`` against
``optimizer.lr=1.2e-3``, the sweeper's ``hydra.job.env_set.EXPT_SWEEP_LABEL=...``), not in what
they compose. Hydra composes every job from its files: the defaults list, the YAML, the schema, about
0.1 s of CPU for expt's config. :class:`Composer` composes the first job of each *shape* that way;
a later job of the same shape is that config with the job's values set by Hydra's own code for
overrides (``ConfigLoaderImpl._apply_overrides_to_config``), and ``hydra.overrides`` and
``hydra.job.override_dirname`` rebuilt from the job's overrides as Hydra builds them. The first job's
config is kept pickled and each later job starts from an unpickled copy: a third of the time a deep
copy takes (OmegaConf copies node by node in Python; the nodes' pickled state is restored in one pass).

Two jobs have one shape when their override lists (the primary config's ``hydra.overrides.hydra``
followed by the job's) hold the same overrides in the same order, except that a *value override*
may set another value. A value override sets one config key (a plain ``key=value`` or an add,
``+key=value``) to a scalar, where the key is no config group, has no package, is no Hydra key other
than ``hydra.job.env_set.*``, and neither contains nor lies inside a key another override sets. Every
other override (a config group choice, ``~key``, ``++key``, a dict or list value, ``hydra/...``)
must match exactly. A job whose values Hydra would refuse (a string for a float key) is composed in
full, so the error it reports is Hydra's.
"""

import copy
import pickle
from typing import Dict, List, Optional, Sequence, Tuple

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from omegaconf import DictConfig, OmegaConf

try:  # Hydra's own code that sets override values and names a job's directory; internal, so a later Hydra may
    # move it, and then every job is composed in full
    from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname
except ImportError:  # pragma: no cover - depends on the installed Hydra
    ConfigLoaderImpl = get_overrides_dirname = None

SCALARS = (str, int, float, bool, type(None))
_Shape = Tuple[Tuple[str, ...], ...]


class Composer:
    """``composer(overrides)`` is ``config_loader.load_sweep_config(master, overrides)``, reading the files once a
    shape of overrides (see the module's docstring)."""

    def __init__(self, config_loader, master: DictConfig):
        self.loader, self.master = config_loader, master
        self.parser = OverridesParser.create()
        # the primary config's overrides, the same for every job: parsed once
        primary = OmegaConf.to_container(master.hydra.overrides.hydra)
        self.primary: List[Override] = self.parser.parse_overrides([str(o) for o in primary])
        # a shape's first job: its overrides and its config pickled (None: a value pickle cannot take, such as an
        # instance of a class defined inside a function; that shape's jobs are composed in full)
        self.composed: Dict[_Shape, Tuple[List[Override], Optional[bytes]]] = {}
        self.groups: Dict[str, bool] = {}
        # each override line parsed once: a round's jobs repeat most of theirs (an Override is not changed after
        # parsing; a derived job applies only scalar values, so no two jobs share a mutable value)
        self.lines: Dict[str, Override] = {}
        self.derived = 0  # jobs composed from an earlier job's config (the tests read it)

    def __call__(self, overrides: Sequence[str]) -> DictConfig:
        if ConfigLoaderImpl is None:
            return self.loader.load_sweep_config(self.master, list(overrides))
        parsed = self.primary + self._parse(overrides)
        shape = self._shape(parsed)
        if shape is not None and self.composed.get(shape, (None, None))[1] is not None:
            config = self._derive(*self.composed[shape], parsed)
            if config is not None:
                self.derived += 1
                return config
        config = self.loader.load_sweep_config(self.master, list(overrides))
        if shape is not None and shape not in self.composed:
            self.composed[shape] = (parsed, _pickled(config))
        return config

    def _parse(self, overrides: Sequence[str]) -> List[Override]:
        """The job's overrides parsed as Hydra parses them, a line seen before taken from the last parse."""
        new = [line for line in dict.fromkeys(overrides) if line not in self.lines]
        self.lines.update(zip(new, self.parser.parse_overrides(new)))
        return [self.lines[line] for line in overrides]

    def _is_group(self, key: str) -> bool:
        """Whether ``key`` names a config group (as Hydra tells a group choice from a value)."""
        if key not in self.groups:
            self.groups[key] = self.loader.repository.group_exists(key)
        return self.groups[key]

    def _is_value(self, override: Override) -> bool:
        key = override.key_or_group
        return (override.type in (OverrideType.CHANGE, OverrideType.ADD) and override.package is None
                and not override.is_sweep_override() and isinstance(override.value(), SCALARS)
                and (not override.is_hydra_override() or key.startswith("hydra.job.env_set."))
                and not self._is_group(key))

    def _shape(self, parsed: List[Override]) -> Optional[_Shape]:
        """What two jobs must share for one's config to be the other's with other values; None: compose it in full."""
        shape = []
        # the keys set after the defaults list is composed (a group choice is made before any is set)
        keys = [o.key_or_group for o in parsed
                if isinstance(o.value(), dict) or not self._is_group(o.key_or_group)]
        for override in parsed:
            if self._is_value(override):
                key = override.key_or_group
                overlaps = sum(k == key or k.startswith(key + ".") or key.startswith(k + ".") for k in keys)
                if overlaps > 1:  # another override sets the same key, or one inside it or around it
                    return None
                shape.append(("value", override.type.name, key))
            else:
                shape.append(("exact", str(override.input_line)))
        return tuple(shape)

    def _derive(self, base: List[Override], base_config: bytes, parsed: List[Override]) -> Optional[DictConfig]:
        """The pickled ``base_config`` with the values of ``parsed`` that differ from ``base``'s, and its overrides
        recorded."""
        config = pickle.loads(base_config)
        changed = [new for old, new in zip(base, parsed) if old.input_line != new.input_line]
        try:  # an add sets a key the base's composition added too: a plain set here
            ConfigLoaderImpl._apply_overrides_to_config([_as_change(o) for o in changed], config)
        except Exception:  # Hydra refuses the value: a full composition reports it as Hydra does
            return None
        hydra, task = config.hydra, config.hydra.overrides
        task.hydra = [o.input_line for o in parsed if o.is_hydra_override()]
        task.task = [o.input_line for o in parsed if not o.is_hydra_override()]
        hydra.job.override_dirname = get_overrides_dirname(
            overrides=[o for o in parsed if not o.is_hydra_override()],
            kv_sep=hydra.job.config.override_dirname.kv_sep,
            item_sep=hydra.job.config.override_dirname.item_sep,
            exclude_keys=hydra.job.config.override_dirname.exclude_keys,
        )
        OmegaConf.copy_cache(from_config=self.master, to_config=config)
        return config


def _pickled(config: DictConfig) -> Optional[bytes]:
    """``config`` pickled, or None where one of its values cannot be."""
    try:
        return pickle.dumps(config)
    except Exception:
        return None


def _as_change(override: Override) -> Override:
    """An add of a key the base composition added (its value set there) is a change of that key."""
    if override.type != OverrideType.ADD:
        return override
    changed = copy.copy(override)
    changed.type = OverrideType.CHANGE
    return changed
