"""Temporary files beside the file they will replace, with the permissions a plain new file gets.

``tempfile.mkstemp`` creates its file readable by its owner alone (0600), and a rename keeps that mode:
checkpoints and downloaded datasets then could not be read by the user's group (a shared data
directory, a lab's results). :func:`temporary_beside` makes the same unique, exclusively created file
with the mode the user's umask gives any new file (0644 under the usual umask of 022), and
:func:`replacing` writes a whole file there and renames it over its target.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import BinaryIO, Iterator

from expt.faults import crash_point


def temporary_beside(directory: str | os.PathLike[str], prefix: str, suffix: str) -> tuple[int, str]:
    """A new file in ``directory`` named ``<prefix><random><suffix>``, open for writing: its descriptor and path,
    as ``tempfile.mkstemp`` returns them (the caller closes the descriptor and renames or removes the file)."""
    for _ in range(100):
        path = os.path.join(os.fspath(directory), f"{prefix}{secrets.token_hex(6)}{suffix}")
        try:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), path
        except FileExistsError:  # another writer drew the same name: draw again
            continue
    raise FileExistsError(f"no unused temporary name in {Path(directory)} after 100 tries")


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[BinaryIO]:
    """A new file beside ``path``, open for writing in binary; once the ``with`` body has written it whole, it
    replaces ``path`` in one rename. A failure removes it and leaves ``path`` as it was: a crash never leaves half
    a file (crash points ``<name>:written`` and ``<name>:replaced``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temporary_beside(path.parent, f".{path.name}.", ".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        crash_point(f"{path.name}:written")
        os.replace(tmp, path)
        crash_point(f"{path.name}:replaced")
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
