"""Files of JSON lines that several processes append to: one locked write a line, torn lines skipped.

``search.jsonl`` (a record per finished trial) and ``progress.jsonl`` (a score per trial and
epoch, for early stopping) are written this way by trials running in parallel processes.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Iterator

from expt import faults
from expt.files import replacing

log = logging.getLogger(__name__)


def append_line(path: Path, data: dict[str, Any]) -> None:
    """Append ``data`` as one line, in a single write under an exclusive lock.

    A line cut short by a kill is left where it is (:func:`read_lines` skips it) and the new
    line starts on a line of its own.
    """
    line = (json.dumps(data, sort_keys=False, allow_nan=False) + "\n").encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        try:
            import fcntl

            fcntl.flock(handle, fcntl.LOCK_EX)
        except (ImportError, OSError):
            pass
        handle.seek(0, os.SEEK_END)
        if handle.tell() > 0:
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                line = b"\n" + line
        faults.write(handle, line, path.name)
        handle.flush()
    faults.crash_point(f"{path.name}:appended")


def read_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, parsed object) for every line that holds a JSON object, as every line these files hold does;
    a torn or foreign line (one that does not parse, or another JSON value) is skipped with a warning."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError as error:
            log.warning("%s:%d is not a JSON line, ignored (%s)", path, number, error)
            continue
        if isinstance(value, dict):
            yield number, value
        else:
            log.warning("%s:%d is not a JSON object, ignored (%s)", path, number, type(value).__name__)


def keep_lines(path: Path, keep: Callable[[dict[str, Any]], bool]) -> None:
    """Rewrite the file with the lines whose parsed object ``keep`` accepts, in one rename, at a moment when no
    process appends to it; a file with nothing to drop (or none) is left as it is."""
    lines = [value for _, value in read_lines(path)]
    kept = [value for value in lines if keep(value)]
    if len(kept) == len(lines):
        return
    with replacing(path) as handle:
        handle.write("".join(json.dumps(value, allow_nan=False) + "\n" for value in kept).encode("utf-8"))
