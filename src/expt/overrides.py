"""Hydra overrides as the command line writes them: ``+trainer.epochs=3`` is the key ``trainer.epochs`` and the
value ``3``. Every place that reads an override's text (the sweeper's rounds, the dashboard's run names, the
command line's checks, the messages that quote a value) splits it here."""

from __future__ import annotations

import re
import shlex
from typing import Any


def split_override(override: str) -> tuple[str, str]:
    """``+trainer.epochs=3`` -> ``("trainer.epochs", "3")``: the key less its ``+``, ``++`` or ``~`` prefix, and the
    value as written (empty where there is no ``=``: ``~key`` deletes it)."""
    key, _, value = override.partition("=")
    return key.lstrip("+~"), value


def hydra_string(text: str) -> str:
    """``text`` as a quoted string of Hydra's override grammar, which it reads back as that text: a quote, and the
    backslashes before a quote or the closing one, each escaped with a backslash (the others stand as they are)."""
    body = re.sub(r"(\\+)(?='|$)", lambda run: run.group(1) * 2, text)
    return "'" + body.replace("'", "\\'") + "'"


def hydra_value(text: str) -> str:
    """``text`` as an override's value that Hydra reads back as that text (a path): as it is where it holds only ASCII
    letters, digits and ``/._+@-``, else quoted (a path with a space, ``=``, ``,``, ``~`` or a letter such as ``ü``,
    which Hydra's grammar takes only in quotes: :func:`hydra_string`)."""
    return text if re.fullmatch(r"[A-Za-z0-9_/.+@-]+", text) else hydra_string(text)


def shell_override(key: str, value: str) -> str:
    """``key=value`` as one word of a shell command line that Hydra reads as setting ``key`` to ``value``:
    ``trainer.resume=/runs/a`` as it is, a path with a space quoted for Hydra and then for the shell."""
    return shlex.quote(f"{key}={hydra_value(value)}")


def override_key(override: str) -> str:
    """``+trainer.epochs=3`` -> ``trainer.epochs``; used to let later overrides win."""
    return split_override(override)[0]


def key_or_group(override: str) -> str:
    """The key or config group an override sets, as Hydra's ``Override.key_or_group`` names it: :func:`override_key`
    less the package of a group choice (``model@head=mlp`` -> ``model``)."""
    return override_key(override).split("@", 1)[0]


def value_text(override: Any) -> str:
    """A parsed override's value (Hydra's ``Override``) as the command line wrote it: ``interval(1e-4, 1e-2)``,
    ``[64,128]``; rebuilt from the parsed value where the override was made without a line of text."""
    if override.input_line and "=" in override.input_line:
        return split_override(override.input_line)[1]
    return str(override.value()) if override.is_sweep_override() else override.get_value_element_as_str()
