"""Crash points: the places where expt writes its files, where a test can kill the process.

Every write that a resumed run or sweep depends on (``checkpoints/last.pt``, ``best.pt``,
``metrics.json``, a line of ``search.jsonl``) calls :func:`crash_point` just before and just after
its file becomes visible. Normally that is a dictionary lookup and nothing more; with
``EXPT_CRASH_AT=<point>[@<n>]`` in the environment the process kills itself with SIGKILL (no
clean-up, no flush, as a power cut or the out-of-memory killer would) the ``n``-th time (1st by
default) it reaches ``<point>``. The tests use it to stop a run at each write in turn and check
that it resumes to the metrics of a run that was never stopped.

Points are named ``<file>:written`` (the temporary file is complete, not yet renamed into place)
and ``<file>:replaced`` (the rename is done); ``search.jsonl:partial`` (half a line written) and
``search.jsonl:appended``.
"""

from __future__ import annotations

import os
import signal
from typing import BinaryIO

ENV = "EXPT_CRASH_AT"
_hits: dict[str, int] = {}


def _due(name: str) -> bool:
    """Whether ``EXPT_CRASH_AT`` names ``name`` and this visit is the one it counts to."""
    wanted = os.environ.get(ENV)
    if not wanted:
        return False
    point, _, count = wanted.partition("@")
    if point != name:
        return False
    _hits[name] = _hits.get(name, 0) + 1
    return _hits[name] == int(count or 1)


def crash_point(name: str) -> None:
    """Kill this process here if ``EXPT_CRASH_AT`` names ``name`` (and this is the n-th visit)."""
    if _due(name):
        os.kill(os.getpid(), signal.SIGKILL)


def write(handle: BinaryIO, data: bytes, name: str) -> None:
    """``handle.write(data)``; at the crash point ``<name>:partial`` the process dies with half of it written."""
    if _due(f"{name}:partial"):
        handle.write(data[: len(data) // 2])
        handle.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    handle.write(data)
