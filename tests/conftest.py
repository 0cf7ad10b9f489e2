"""Shared fixtures: compose real configs through Hydra and run them in temporary directories.

Every test that starts expt (or a script that uses it) in another process goes through
:func:`run_cli` or :func:`start_cli`, so that all of them see the same environment: the expt this
process imports, wherever it is installed (a wheel, an editable install), and never ``src/`` by
path, which would miss ``expt.conf`` (``conf/`` is installed as that package).
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest


def _share_the_cores() -> None:
    """Each pytest-xdist worker, and every process its tests start, uses its share of the cores: two workers of
    torch's default thread count (one per core) would each wait on the other's threads. A thread count the
    environment sets (``OMP_NUM_THREADS``) is kept."""
    if "OMP_NUM_THREADS" in os.environ or "PYTEST_XDIST_WORKER" not in os.environ:  # set, or no workers
        return
    workers = int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    os.environ["OMP_NUM_THREADS"] = str(max(1, cores // workers))  # before torch reads it, here and below


_share_the_cores()

import expt  # noqa: E402  (after the thread count is set)

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


# Every dashboard diagnostic off: for runs whose tests read none of them (each costs time in every run).
QUIET = tuple(f"dashboard.{k}=false" for k in ("update_ratio", "histograms", "filters", "graph", "summary"))


@pytest.fixture
def compose():
    """``compose("model=mlp", ...)``: the config ``python -m expt`` would run with those overrides."""

    def _compose(*overrides: str):
        return expt.compose(list(overrides))

    return _compose


@pytest.fixture(scope="session")
def tiny_sweep(tmp_path_factory) -> Path:
    """test_sweeper's toy app swept once with ``TINY_NOTED``, never stopped (its output in ``output.txt``
    beside it): read by some tests, and what a stopped and resumed sweep of the same settings must end with.
    Read it, never write into it."""
    from test_sweeper import TINY_NOTED, sweep

    out = tmp_path_factory.mktemp("tiny_sweep") / "sweep"
    done = sweep(out, *TINY_NOTED)
    (out.parent / "output.txt").write_text(done.stdout + done.stderr)
    return out


# The IDX files of MNIST and Fashion-MNIST, in the order of a split's images and labels: train, then test
IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    """An IDX file: two zero bytes, type code, ndim, big-endian int32 sizes, then the data."""
    header = struct.pack(">HBB", 0, type_code, array.ndim) + struct.pack(f">{array.ndim}i", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_file(path: Path, data: bytes, gz: bool) -> Path:
    path = path.with_name(path.name + ".gz") if gz else path
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


FASHION_SLICE = (3000, 1000)  # the training and test images fashion_slice keeps


@pytest.fixture(scope="session")
def fashion_slice(tmp_path_factory) -> Path:
    """A ``data.root`` for ``data=fashion_mnist``: the first 3,000 training and 1,000 test images of the installed
    Fashion-MNIST, written as its four IDX ``.gz`` files. Real images, for the tests of what a script does with
    them: the full 10,000 test images would take most of a small run's time on a CPU. Skips where Fashion-MNIST is
    not installed."""
    from expt.standard_datasets import find, load_fashion_mnist

    if find("fashion_mnist") is None:
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    data = load_fashion_mnist(download=False)
    n_train, n_test = FASHION_SLICE
    arrays = (data["x_train"][:n_train, 0], data["y_train"][:n_train], data["x_test"][:n_test, 0], data["y_test"][:n_test])
    root = tmp_path_factory.mktemp("fashion_mnist")
    for name, array in zip(IDX_FILES, arrays):
        write_file(root / name, idx_bytes(array), gz=True)
    return root


def cli_env(env: dict[str, str | None] | None = None) -> dict[str, str]:
    """The environment of a test's subprocess: this one's, unbuffered, changed by ``env`` (``None`` unsets).

    ``HYDRA_FULL_ERROR`` is left out unless ``env`` sets it, so errors print as a user sees them.
    ``tests/`` goes first on ``PYTHONPATH`` so that a config may name a class of ``tests_helpers`` with
    ``_target_``, as a user's own module would be named.
    """
    full = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    full["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH", "")) if p)
    full["PYTHONUNBUFFERED"] = "1"
    for key, value in (env or {}).items():
        if value is None:
            full.pop(key, None)
        else:
            full[key] = value
    return full


def command(*args: str, program: str | Path | None = "expt", python: str | Path = sys.executable) -> list[str]:
    """``python -m <program> <args>`` for a module name, ``python <program> <args>`` for a script's path,
    ``python <args>`` for ``None`` (``-c`` and a statement)."""
    start = [] if program is None else [str(program)] if isinstance(program, Path) else ["-m", program]
    return [str(python), *start, *args]


def run_cli(*args: str, cwd: Path, env: dict[str, str | None] | None = None, timeout: float = 300,
            program: str | Path | None = "expt", python: str | Path = sys.executable,
            check: bool = False) -> subprocess.CompletedProcess:
    """Run ``python -m expt <args>`` (or another module or script, see :func:`command`) in ``cwd``.

    Returns the finished process, its output captured as text; ``check=True`` asserts it exited with 0.
    """
    done = subprocess.run(command(*args, program=program, python=python), cwd=cwd, env=cli_env(env),
                          capture_output=True, text=True, timeout=timeout)
    if check:
        assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    return done


def start_cli(*args: str, cwd: Path, env: dict[str, str | None] | None = None, program: str | Path | None = "expt",
              **popen: object) -> subprocess.Popen:
    """:func:`run_cli` without waiting: the started process (``popen`` as for :class:`subprocess.Popen`).

    It takes SIGINT as a Ctrl-C, even where the suite itself ignores SIGINT (a shell without job control
    starts background commands so, and an ignored signal stays ignored in every process started below).
    Its Python dumps every thread's stack on SIGABRT (``PYTHONFAULTHANDLER``), which :func:`finish` uses
    to say where a process that does not end is held.
    """
    ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    if ignored:  # a handled signal is reset to its default in a new program; an ignored one is inherited
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return subprocess.Popen(command(*args, program=program), cwd=cwd,
                                env=cli_env({"PYTHONFAULTHANDLER": "1", **(env or {})}), **popen)
    finally:
        if ignored:
            signal.signal(signal.SIGINT, signal.SIG_IGN)


def finish(proc: subprocess.Popen, timeout: float) -> str:
    """``proc``'s output (started with ``stdout=PIPE``, ``stderr=STDOUT``, ``text=True``) once it has ended.

    A process still running after ``timeout`` seconds fails the test with what it printed, its signal
    dispositions and its threads' stacks (it is aborted to get them), rather than with a bare timeout.
    """
    try:
        return proc.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        status = Path(f"/proc/{proc.pid}/status")
        masks = [line for line in status.read_text().splitlines() if line.startswith(("SigBlk", "SigIgn"))] \
            if status.exists() else []
        proc.send_signal(signal.SIGABRT)
        try:
            output = proc.communicate(timeout=30)[0]
        except subprocess.TimeoutExpired:
            proc.kill()
            output = proc.communicate()[0]
        pytest.fail(f"the process was still running after {timeout:g} s; {' '.join(masks)}\n{output[-8000:]}")


# Holds a run still at one training step until a test signals it there (tests_helpers.PauseAt): a run with
# it trains as the same run without it, and a test stops it at a known place rather than at a moment.
PAUSE = "++augmentation.pause._target_=tests_helpers.PauseAt"


def pause_env(overrides: list[str], epoch: int, marker: Path) -> dict[str, str]:
    """The environment that holds ``python -m expt <overrides>`` (``PAUSE`` among them) at the first step of
    ``epoch``, after the previous epoch's checkpoint; the run creates ``marker`` when it gets there."""
    from tests_helpers import PAUSE_ENV

    from expt.build import build

    steps = build(expt.compose(list(overrides))).steps_per_epoch
    return {PAUSE_ENV: f"{(epoch - 1) * steps + 1}:{marker}"}


def wait_for_pause(marker: Path, proc: subprocess.Popen, what: str = "the run") -> None:
    """Return once ``marker`` exists: ``proc`` (or a process it started) is held at its pause."""
    for _ in range(60000):  # a guard against a hung process only: the pause holds until signalled
        if marker.exists():
            return
        assert proc.poll() is None, f"{what} ended (exit code {proc.returncode}) before it reached its pause"
        time.sleep(0.01)
    pytest.fail(f"{what} never reached its pause")


def start_held(*args: str, cwd: Path, held: list[str], epoch: int, marker: Path, what: str = "the run",
               env: dict[str, str] | None = None, **popen: object) -> subprocess.Popen:
    """:func:`start_cli` of ``args`` with ``env`` and the variable :func:`pause_env` makes for ``held`` (the overrides
    with ``PAUSE`` among them); return once a run it started is held at the first step of ``epoch`` (``what`` names
    it if it ends first). Output as ``popen`` says (``stdout=PIPE, stderr=STDOUT, text=True`` for :func:`finish`)."""
    proc = start_cli(*args, cwd=cwd, env={**(env or {}), **pause_env(held, epoch, marker)}, **popen)
    try:
        wait_for_pause(marker, proc, what)
    except BaseException:
        proc.kill()
        raise
    return proc


@contextlib.contextmanager
def lock_held_elsewhere(run_dir: Path):
    """Another process holds ``run_dir``'s lock (as a run training there does) for the ``with`` body; yields its pid."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, pathlib; from expt.files import only_writer; from expt.errors import "
         "StorageError\nwith only_writer(pathlib.Path(sys.argv[1]), StorageError):\n    print('held', flush=True); "
         "sys.stdin.read()", str(run_dir)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder.pid
    finally:
        holder.kill()
        holder.wait()


def read_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def numbers(metrics: dict) -> list[dict]:
    """A run's per-epoch history without the wall-clock seconds: what must repeat exactly."""
    return [{k: v for k, v in row.items() if k != "seconds"} for row in metrics["history"]]
