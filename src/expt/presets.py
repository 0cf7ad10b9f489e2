"""Experiment presets (``experiment=...``) and an override that chooses another option after one.

A preset chooses options for several groups and sets some of their keys in its own body. When an
override then chooses another option of such a group, :func:`apply_preset_choices` drops the
preset's settings of that group, so they do not land on an option they were not written for.
"""

from __future__ import annotations

import logging
from typing import Any, Optional, Sequence

from omegaconf import DictConfig, OmegaConf

import expt.config  # noqa: F401  the typed schema the defaults list names first: the presets' groups compose against it

log = logging.getLogger("expt")

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
    job, or :func:`expt.compose`). Anything that does not compose is left to :func:`expt.config.validate` to report.
    ``choices`` (Hydra's ``hydra.runtime.choices``), when given, lets a run without a preset return at once.
    """
    from omegaconf import open_dict

    if choices is not None and choices.get(PRESET_GROUP) is None:
        return []
    try:
        found = _rechosen_groups(cfg, overrides, config_name)
    except Exception:  # an override that does not compose on its own: validate() names it
        return []
    if found is None:
        return []
    final, preset, changed, base = found
    name = final[PRESET_GROUP][0]
    replaced: list[str] = []
    with open_dict(cfg):
        for group in changed:
            kept = set(preset.get(group, [])) & set(final.get(group, []))
            node, per_option = _without_preset(cfg[group], base[group], kept)
            if OmegaConf.to_container(node, resolve=False) == OmegaConf.to_container(cfg[group], resolve=False):
                continue  # the preset sets nothing of this group's options
            cfg[group] = node
            replaced.append(group)
            log.info("%s=[%s] replaces the choice [%s] of %s=%s, and the preset's settings of %s.",
                     group, ",".join(final.get(group, [])), ",".join(preset.get(group, [])), PRESET_GROUP, name,
                     "the options it no longer chooses" if per_option else "this group")
    return replaced


def _rechosen_groups(cfg: DictConfig, overrides: Sequence[str], config_name: str) -> Optional[tuple]:
    """``(final, preset, changed, base)`` when ``overrides`` choose a preset and, for the groups ``changed``,
    other options than the preset's: the options chosen in the end and by the preset alone (as
    :func:`_chosen_options` gives them), and the config the same overrides compose without the preset.
    None when no group's choice changes after a preset."""
    from hydra import compose as hydra_compose
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    own = [o.input_line for o in parsed if o.key_or_group == PRESET_GROUP]
    if not any("." not in o.key_or_group and not o.key_or_group.startswith("hydra")
               for o in parsed if o.key_or_group != PRESET_GROUP):
        return None  # only keys are set (model.depth=32): no group's option changes
    final = _chosen_options(config_name, overrides)
    if not final.get(PRESET_GROUP):
        return None
    preset = _chosen_options(config_name, own)
    # a group the overrides empty (augmentation=[]) is in the preset's choices alone
    groups = [*final, *(g for g in preset if g not in final)]
    changed = [g for g in groups
               if g != PRESET_GROUP and "/" not in g and g in cfg and preset.get(g, []) != final.get(g, [])]
    if not changed:
        return None
    # the changed groups' nodes without the preset: every group's choice, and the keys of those groups alone (a key
    # only the preset's option of another group has, model.depth, would not compose there)
    relevant = [o.input_line for o in parsed if o.key_or_group != PRESET_GROUP
                and ("." not in o.key_or_group or o.key_or_group.split(".", 1)[0] in changed)]
    base = hydra_compose(config_name=config_name, overrides=relevant + ([] if own else [f"~{PRESET_GROUP}"]))
    return final, preset, changed, base


def _without_preset(current: Any, base: Any, kept: set[str]) -> tuple[Any, bool]:
    """A group's node without the preset's settings, and whether its options each have an entry of their own.

    The node is ``base`` (composed without the preset), except that in a group whose options have their own
    entries (augmentation) an option in ``kept`` (chosen by both the preset and the overrides) keeps its
    entry of ``current``, the preset's settings included.
    """
    per_option = isinstance(base, DictConfig) and any(isinstance(base.get(o), DictConfig) for o in kept)
    if not per_option:
        return base, False
    entries = {k: (current[k] if k in kept and k in current else base[k]) for k in base}
    return OmegaConf.create({k: OmegaConf.to_container(v, resolve=False) if isinstance(v, DictConfig)
                             else v for k, v in entries.items()}), True
