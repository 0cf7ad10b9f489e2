"""Build the object a config option's ``_target_`` names, with errors that name the key.

Options are built here rather than by ``hydra.utils.instantiate``: every key of an option is
checked against its target's signature first (:func:`check_params`), so a typo is a
:class:`~expt.errors.ConfigError` listing the valid keys instead of a ``TypeError`` deep in a
constructor; a target that does not import names its key (:func:`locate`); a build that runs out
of memory says what to make smaller (:func:`call`). Options are flat (no nested ``_target_``).
"""

from __future__ import annotations

import functools
import inspect
import logging
import threading
import typing
from typing import Any, Mapping, Optional, Sequence

from omegaconf import DictConfig, ListConfig, OmegaConf

from expt.errors import ConfigError
from expt.values import is_number


def to_plain(node: Any) -> Any:
    """A resolved plain-Python copy of a config node (dicts, lists, scalars)."""
    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node, resolve=True)
    return node


def settings_text(node: DictConfig, group: str) -> str:
    """``group.key=value, ...`` for the node's settings (its ``_target_`` and other ``_`` keys left out)."""
    settings = [f"{group}.{k}={v}" for k, v in to_plain(node).items() if not k.startswith("_")]
    return ", ".join(settings) or "no settings"


class _WhileLocating(logging.Filter):
    """Drops the records a thread logs while it is inside :func:`locate`; other threads' records pass."""

    def __init__(self) -> None:
        super().__init__()
        self.inside = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(self.inside, "locating", False)


_WHILE_LOCATING = _WhileLocating()


def locate(target: str, key: str) -> Any:
    """Import the object a ``_target_`` names, or raise a ConfigError naming ``key``."""
    from hydra.utils import get_object

    # Hydra logs the failure as an ERROR before raising it: said once, below. A filter, not a level: setting a
    # logger's level clears the cache of every logger, a cost each build paid five times
    logging.getLogger("hydra.utils").addFilter(_WHILE_LOCATING)  # once: a filter already there is not added again
    _WHILE_LOCATING.inside.locating = True
    needed = ("a _target_ must be the dotted path of an importable class or function, such as torch.nn.ReLU or "
              "mypackage.layers.Mish.")
    try:
        found = get_object(target)
    except Exception as exc:  # ImportError, AttributeError, ValueError from Hydra's locator
        cause = exc.__cause__ or exc  # Hydra's ImportError wraps the error the import gave, then asks a question
        question = [line for line in str(exc).splitlines() if line.startswith("Are you sure")]
        reason = " ".join(f"{type(cause).__name__}: {cause}".split()) + "".join(f". {q}" for q in question)
        raise ConfigError(f"{key}={target!r} does not import ({reason}); {needed}") from None
    finally:
        _WHILE_LOCATING.inside.locating = False
    if not callable(found):  # a module, a constant
        raise ConfigError(f"{key}={target!r} is a {type(found).__name__}, not a class or function; {needed}")
    return found


def parameters(fn: Any) -> Optional[Mapping[str, inspect.Parameter]]:
    """The parameters ``fn`` declares (a ``functools.partial``'s function's), by name; None where its signature
    cannot be read (builtins without one)."""
    try:
        return inspect.signature(fn.func if isinstance(fn, functools.partial) else fn).parameters
    except (TypeError, ValueError):
        return None


def check_params(fn: Any, params: dict, group: str, where: str, also: Sequence[str] = ()) -> None:
    """Raise a ConfigError when ``params`` has a key that ``fn`` does not take, listing the keys it does
    (and ``also``: the group's keys that expt reads itself, such as data's split settings)."""
    declared = parameters(fn)
    if declared is None:  # builtins without a signature: let the call report
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in declared.values()):
        return
    unknown = [k for k in params if k not in declared and k not in also]
    if unknown:
        allowed = [n for n, p in declared.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL]
        allowed += [k for k in also if k not in allowed]
        raise ConfigError(
            f"{group}.{unknown[0]} is not a setting of {where}; its settings are: {', '.join(allowed) or 'none'}."
        )
    for key, value in params.items():  # schedule.gamma=abc: a class may take it and fail only when it uses it
        param = declared.get(key)
        if param is None:
            continue
        default = "." if param.default is inspect.Parameter.empty else f" (its default is {param.default})."
        if isinstance(value, str) and _takes_number(param):
            raise ConfigError(f"{group}.{key}={value!r} is not allowed: {where} takes a number for {key}{default}")
        length = _fixed_length(param)
        if isinstance(value, (list, tuple)) and length is not None and len(value) != length:
            shown = "[" + ",".join(str(v) for v in value) + "]"
            raise ConfigError(f"{group}.{key}={shown} is not allowed: {where} takes {length} values for {key}, "
                              f"{len(value)} given{default}")


def _takes_number(param: inspect.Parameter) -> bool:
    """Whether ``param`` takes a plain number only: its default is one, or its annotation is ``int`` or ``float``
    (as written, or as text under postponed annotations)."""
    default = param.default
    return is_number(default) or \
        param.annotation in (int, float, "int", "float")


def _fixed_length(param: inspect.Parameter) -> Optional[int]:
    """How many values ``param`` takes when its annotation is a tuple of a fixed length (Adam's ``betas:
    tuple[float, float]``); None for any other annotation (``tuple[int, ...]``, a list, text)."""
    annotation = param.annotation
    if typing.get_origin(annotation) is not tuple:
        return None
    args = typing.get_args(annotation)
    return None if not args or Ellipsis in args or args == ((),) else len(args)


def shape_hint(fn: Any, params: dict, group: str) -> str:
    """For a build that failed with a TypeError: the first setting given one value where ``fn``'s default is a
    list (``optimizer.betas=0.9``), or a list where it is one value, as `` (optimizer.betas takes a list like its
    default: optimizer.betas=[0.9,0.999])``; empty when none is."""
    declared = parameters(fn) or {}
    for key, value in to_plain(params).items():
        default = declared[key].default if key in declared else None
        if default is None or default is inspect.Parameter.empty or isinstance(default, (str, bytes)):
            continue
        listed, wants_list = isinstance(value, (list, tuple)), isinstance(default, (list, tuple))
        if listed != wants_list:
            example = f"[{','.join(str(v) for v in default)}]" if wants_list else str(default)
            kind = "a list" if wants_list else "one value"
            return f" ({group}.{key} takes {kind} like its default: {group}.{key}={example})"
    return ""


def call(fn: Any, params: dict, group: str, where: str, **runtime: Any) -> Any:
    """Call ``fn(**params, **runtime)`` after checking that every config key is one of its parameters."""
    params = to_plain(params) if isinstance(params, DictConfig) else dict(params)
    check_params(fn, params, group, where)
    try:
        return fn(**params, **runtime)
    except TypeError as exc:
        hint = shape_hint(fn, params, group)
        raise ConfigError(f"{where} cannot be built from {group}={params}: {exc}{hint}.") from None
    except (MemoryError, RuntimeError) as exc:  # torch's allocators raise RuntimeError (OutOfMemoryError on CUDA)
        if not isinstance(exc, MemoryError) and "alloc" not in str(exc).lower() and "out of memory" not in str(exc):
            raise
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[-1].strip()[:200]
        raise ConfigError(
            f"{where} with {settings_text(OmegaConf.create(params), group)} does not fit in memory ({reason}): "
            f"make it smaller (fewer or narrower layers, or fewer classes)."
        ) from None


def instantiate(node: DictConfig, group: str, partial: bool = False, **runtime: Any) -> Any:
    """Build the object a ``_target_`` node names, with the node's keys and the ``runtime`` arguments.

    ``_partial_: true`` (or ``partial=True``) returns a ``functools.partial`` that takes the
    remaining arguments later (the optimizer gets the parameters, the schedule the optimizer).
    """
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
