"""``python -m expt.board [DIR] [--port N]``: TensorBoard on the newest run or sweep, on 127.0.0.1.

Without DIR it looks under ./outputs and ./multirun (Hydra's run and sweep directories); with
DIR it serves DIR itself when DIR is a run (holds event files) or a sweep (holds Hydra's
``multirun.yaml``), and otherwise the newest run or sweep under DIR. A run that belongs to a
sweep is shown with its whole sweep, so the HParams tab lists every trial. Each run is shown under its readable name (the
``run_label.txt`` the run wrote: ``r2-j013 lr=3.1e-3 l2=1.2e-4`` for a sweep's trial), through a
temporary directory of links named so. It prints the address of the recipe's charts (the
custom-scalars page, unsmoothed: accuracy and loss, train against val) and serves until
interrupted (Ctrl-C). Arguments after ``--`` go to TensorBoard
itself, e.g. ``python -m expt.board -- --samples_per_plugin images=100``. Plain
``tensorboard --logdir <dir>`` shows the same directories.
"""

from __future__ import annotations

import argparse
import errno
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

from expt.status import EVALUATION_DIR, EVENTS_GLOB, LABEL_FILE, MULTIRUN_FILE

DEFAULT_ROOTS = ("outputs", "multirun")
# The page the board opens on: the recipe's pair of charts, without smoothing (TensorBoard's default is 0.6).
RECIPE_VIEW = "#custom_scalars&_smoothingWeight=0"
HPARAMS_VIEW = "#hparams"
REFRESH_SECONDS = 5  # how often the named links are brought up to date with new runs of a sweep


def is_run(path: Path) -> bool:
    """A directory TensorBoard shows as one run: it holds event files itself."""
    return path.is_dir() and any(path.glob(EVENTS_GLOB))


def is_sweep(path: Path) -> bool:
    """A Hydra sweep directory: Hydra writes ``multirun.yaml`` at its top."""
    return (path / MULTIRUN_FILE).is_file()


def enclosing_sweep(run_dir: Path, root: Path) -> Optional[Path]:
    """The nearest directory from ``run_dir`` up to (and including) ``root`` that is a sweep, if any."""
    root = root.resolve()
    for candidate in (run_dir.resolve(), *run_dir.resolve().parents):
        if is_sweep(candidate):
            return candidate
        if candidate == root:
            break
    return None


def newest(roots: Sequence[Path]) -> Optional[Path]:
    """The run or sweep under ``roots`` whose event files were written last (a run inside a sweep gives the sweep; the
    events ``python -m expt.evaluate`` wrote in a run's ``evaluation/`` give that run, which shows them beside its own)."""
    best: tuple[float, Path] | None = None
    for root in roots:
        if not root.is_dir():
            continue
        for events in root.rglob(EVENTS_GLOB):
            mtime = events.stat().st_mtime
            if best is None or mtime > best[0]:
                run_dir = events.parent
                if run_dir.name == EVALUATION_DIR and is_run(run_dir.parent):
                    run_dir = run_dir.parent
                best = (mtime, enclosing_sweep(run_dir, root) or run_dir)
    return best[1] if best else None


def find_logdir(directory: Optional[Path] = None, cwd: Optional[Path] = None) -> Path:
    """The directory to serve: ``directory`` itself when it is a run or a sweep, else the newest one under it
    (or under ./outputs and ./multirun). Raises FileNotFoundError when there is none."""
    cwd = cwd or Path.cwd()
    if directory is not None:
        directory = Path(directory)
        if not directory.is_dir():
            raise FileNotFoundError(f"{directory} is a file, not a directory: give a run's or a sweep's directory."
                                    if directory.exists() else f"{directory} does not exist.")
        if is_run(directory) or is_sweep(directory):
            return directory
        roots = [directory]
    else:
        roots = [cwd / name for name in DEFAULT_ROOTS]
    found = newest(roots)
    if found is None:
        where = " or ".join(str(r) for r in roots)
        raise FileNotFoundError(f"No TensorBoard event files under {where}: train a run first (python -m expt).")
    return found


def port_problem(port: Optional[int], host: str = "127.0.0.1") -> Optional[str]:
    """Why TensorBoard could not serve on ``host:port``, or None when it can (a bind test, released at once).

    Without ``port`` only ``host`` is checked (port 0: the OS picks a free port, as TensorBoard then does):
    a name that does not resolve and an address that is not this machine's are refused with or without --port.
    """
    if port is not None and not 1 <= port <= 65535:
        return f"--port {port} is not a TCP port: use a number from 1 to 65535, or leave out --port to get a free one."
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port or 0, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as exc:  # UnicodeError: a name IDNA cannot encode (an empty label)
        reason = exc.strerror if isinstance(exc, socket.gaierror) else str(exc)
        return f"--host {host!r} does not resolve ({reason}): use an address such as 127.0.0.1 or 0.0.0.0."
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as TensorBoard's server does
        try:
            sock.bind(address)
        except OSError as exc:
            if port is None or exc.errno == errno.EADDRNOTAVAIL:  # the address, not the port, is the problem
                return (
                    f"--host {host!r} cannot be bound ({exc.strerror}): it is not an address of this machine; use "
                    "127.0.0.1 (this machine only), 0.0.0.0 (every interface) or one of this machine's own addresses."
                )
            reason = "is already in use" if exc.errno == errno.EADDRINUSE else f"cannot be bound ({exc.strerror})"
            return (
                f"--port {port} {reason} on {host} (another TensorBoard or server may be running there): "
                "pick another port, or leave out --port to get a free one."
            )
    return None


def run_names(logdir: Path) -> dict[str, Path]:
    """Readable name -> directory, for each run under ``logdir`` (``logdir`` itself when it is a run).

    A sweep's trials, its ``sweep_summary`` and its ``evaluation`` are its subdirectories holding event
    files; each is named by its ``run_label.txt``, or its directory name where it has none. Names are
    made safe as directory names ("/" becomes "|") and unique (" (2)" added).
    """
    logdir = Path(logdir)
    if is_run(logdir):
        candidates = [logdir]
    else:
        candidates = sorted(
            (d for d in logdir.iterdir() if d.is_dir() and not d.name.startswith(".") and any(d.rglob(EVENTS_GLOB))),
            key=lambda d: (not d.name.isdigit(), int(d.name) if d.name.isdigit() else 0, d.name),
        )
    names: dict[str, Path] = {}
    for directory in candidates:
        try:
            label = (directory / LABEL_FILE).read_text(encoding="utf-8").strip()
        except OSError:
            label = ""
        name = (label or directory.name).replace("/", "|").replace("\\", "|").strip(". ") or directory.name
        unique, n = name, 2
        while unique in names:
            unique, n = f"{name} ({n})", n + 1
        names[unique] = directory
    return names


class NamedView:
    """A temporary directory of links, one per run, named by :func:`run_names`: TensorBoard names runs by path.

    :meth:`refresh` adds the runs that appeared since (a sweep still running). Without links (a file
    system that refuses them) ``path`` is the log directory itself, and runs keep their paths as names.
    """

    def __init__(self, logdir: Path):
        self.logdir = Path(logdir).resolve()
        self.linked: dict[Path, str] = {}
        self.dir: Optional[Path] = Path(tempfile.mkdtemp(prefix="expt-board-"))
        try:
            self.refresh()
        except OSError:
            self.close()
        self.path = self.dir if self.dir is not None else self.logdir

    def refresh(self) -> None:
        if self.dir is None:
            return
        for name, directory in run_names(self.logdir).items():
            directory = directory.resolve()
            if directory not in self.linked and name not in self.linked.values():
                (self.dir / name).symlink_to(directory, target_is_directory=True)
                self.linked[directory] = name

    def close(self) -> None:
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)  # removes the links, never what they point to
            self.dir = None


def launch(logdir: Path, port: Optional[int] = None, host: str = "127.0.0.1", extra: Sequence[str] = ()) -> tuple[object, str]:
    """Start TensorBoard's own server on ``logdir`` in this process (a background thread); return it and its URL.

    Without ``port`` the server binds port 0, so the OS hands it a free port at the bind itself: a port chosen
    first and bound later can be taken in between by another process.
    """
    from tensorboard import program

    board = program.TensorBoard()
    board.configure(argv=[
        "tensorboard", "--logdir", str(logdir), "--host", host, "--port", str(port or 0), *extra,
    ])
    return board, board.launch()


def _stop(*_: object) -> None:
    raise KeyboardInterrupt


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    parser = argparse.ArgumentParser(
        prog="python -m expt.board",
        description="TensorBoard on the newest run or sweep under ./outputs and ./multirun, or on DIR; each run "
                    "under its readable name.",
        epilog="Arguments after -- go to TensorBoard itself, e.g. python -m expt.board -- --samples_per_plugin "
               "images=100. Plain tensorboard --logdir DIR shows the same runs.")
    parser.add_argument("dir", nargs="?", type=Path, help="a run, a sweep, or a directory to search (default: ./outputs and ./multirun)")
    parser.add_argument("--port", type=int, default=None, help="port to serve on (default: a free one)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    parser.add_argument("--plain-names", action="store_true",
                        help="show runs under their directory names, as plain tensorboard --logdir does")
    args = parser.parse_args(argv)
    problem = port_problem(args.port, args.host)  # the host is checked with or without --port
    if problem is not None:
        print(problem, file=sys.stderr)
        return 1
    try:
        logdir = find_logdir(args.dir)
    except FileNotFoundError as exc:
        print(exc, file=sys.stderr)
        return 1
    from tensorboard.program import TensorBoardServerException

    signal.signal(signal.SIGTERM, _stop)  # a terminated board removes its links too
    view = None if args.plain_names else NamedView(logdir)
    try:
        try:
            _, url = launch(view.path if view else logdir, args.port, args.host, extra)
        except TensorBoardServerException as exc:  # taken between the check and the start, or a bad --host
            print(f"TensorBoard could not start on {args.host}:{args.port or 'a free port'}: {exc.msg}", file=sys.stderr)
            return 1
        print(f"TensorBoard on {logdir}\n"
              f"  {url}{RECIPE_VIEW}   the recipe's charts: accuracy and loss, train vs val (unsmoothed)\n"
              f"  {url}{HPARAMS_VIEW}   every run's hyperparameters, status, diagnosis and metrics\n"
              "(Ctrl-C to stop)", flush=True)
        try:
            while True:
                time.sleep(REFRESH_SECONDS)
                if view is not None:
                    try:
                        view.refresh()
                    except OSError:  # a run directory removed while it was being linked: next time
                        pass
        except KeyboardInterrupt:
            return 0
    finally:
        if view is not None:
            view.close()


if __name__ == "__main__":
    raise SystemExit(main())
