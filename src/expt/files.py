"""Temporary files beside the file they will replace, with the permissions a plain new file gets.

``tempfile.mkstemp`` creates its file readable by its owner alone (0600), and a rename keeps that mode:
checkpoints and downloaded datasets then could not be read by the user's group (a shared data
directory, a lab's results). :func:`temporary_beside` makes the same unique, exclusively created file
with the mode the user's umask gives any new file (0644 under the usual umask of 022), and
:func:`replacing` writes a whole file there and renames it over its target.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import time
from pathlib import Path
from typing import BinaryIO, Iterator, Optional

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


LOCK_FILE = ".expt.lock"  # in a run directory, held while a process trains there
LOCK_TRIES = 5  # attempts at a run directory's lock, 20 ms apart, before another process is said to hold it
_TAKEN = (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)  # what flock says of a lock another process holds
_held: set[str] = set()  # the directories this process holds (a lock taken twice in one process would refuse itself)


@contextlib.contextmanager
def only_writer(directory: Path, busy: type[Exception], setting: str = "hydra.run.dir") -> Iterator[None]:
    """Hold ``directory``'s lock file for the ``with`` body; raise ``busy`` (a message naming the process that holds
    it) when another process holds it: two processes training into one run directory (a run resumed while it still
    runs, a requeued job whose first attempt lives on) would each write the other's checkpoints and events. The
    operating system releases the lock when its process ends, however it ends. A directory this process holds
    already (``python -m expt`` locks its run directory before Hydra writes there, then trains in it) is held
    again at no cost. ``setting`` is the key that gives the run another directory (``hydra.sweep.dir`` for a job
    of a multirun). Where there is no ``fcntl`` (Windows), nothing is locked."""
    key = os.path.realpath(directory)
    if key in _held:
        yield
        return
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        fcntl = None
    fd = None
    if fcntl is not None:
        with contextlib.suppress(OSError):  # a directory that cannot take a file: the run's first write says so
            fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    if fd is None:
        yield
        return
    held: Optional[bool] = True
    for _ in range(LOCK_TRIES):  # a reader's brief look (holder) is not a writer: try again a few times
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held = True
            break
        except OSError as exc:  # another process holds it; or a file system without locks (some NFS): not locked
            held = False if exc.errno in _TAKEN else None
            if held is None:
                break
            time.sleep(0.02)
    if held is False:
        pid = _pid_in(fd)
        os.close(fd)
        raise busy(f"another process (pid {pid}) is training in {directory}: wait for it to end or stop it, "
                   f"or train elsewhere ({setting}=...).")
    _held.add(key)
    try:
        if held:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        yield
    finally:
        _held.discard(key)
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def updating(directory: Path) -> Iterator[None]:
    """One process at a time in the ``with`` body: for reading a file of ``directory``, changing it and writing it
    back (two ``python -m expt.evaluate`` of one sweep, each adding its test evaluation to ``evaluation.json``). An
    exclusive lock on the directory itself, so no file is added, waited for: the body is short (a few files read and
    written). Where the system has no such locks, the body runs unlocked."""
    try:
        import fcntl
        fd = os.open(directory, os.O_RDONLY)
    except (ImportError, OSError):  # no locks here (Windows), or no such directory: its writes say so
        yield
        return
    try:
        with contextlib.suppress(OSError):  # a file system without locks (some NFS): unlocked
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def holder(directory: Path) -> Optional[str]:
    """The pid of the process training in ``directory`` now (the one that holds its lock, as :func:`only_writer`
    takes it), or None when no process does. Takes no lock and creates no file."""
    if os.path.realpath(directory) in _held:
        return str(os.getpid())
    try:
        import fcntl
        fd = os.open(directory / LOCK_FILE, os.O_RDONLY)
    except (ImportError, OSError):  # no locks here (Windows), or no lock file: nobody trains there
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in _TAKEN:
            return _pid_in(fd)
        return None  # a file system without locks
    finally:
        os.close(fd)  # and the shared lock with it
    return None


def _pid_in(fd: int) -> str:
    """The pid the process holding a lock file wrote into it (:func:`only_writer`), or ``unknown``."""
    return os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
