"""The progress bar inside long epochs: shown at a terminal, absent when the output is a file or in sweeps.

Nothing here depends on how fast the machine is: tqdm is told (through its own ``TQDM_*`` environment
variables) to draw on every update rather than at most every 0.1 s, and an epoch counts as "short" against
a ``trainer.progress_after`` no epoch can reach.
"""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import termios
from pathlib import Path

import pytest

import expt
from conftest import run_cli, start_cli

RUN = ["data=synthetic", "data.num_samples=1000", "trainer.epochs=1", "trainer.batch_size=16",
       "dashboard.histograms=false"]
NEVER = "trainer.progress_after=1e9"  # seconds: later than any epoch ends


def run_in_a_terminal(*args: str, cwd: Path) -> tuple[int, str]:
    """``python -m expt <args>`` with its output on a pseudo-terminal, as a user at a shell sees it."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # 40 rows, 120 columns
    # tqdm draws on every update (not at most every 0.1 s), so what reaches the screen is the same on any machine
    env = {"COLUMNS": "120", "TQDM_MININTERVAL": "0", "TQDM_MINITERS": "1"}
    proc = start_cli(*args, cwd=cwd, env=env, stdin=follower, stdout=follower, stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # the terminal closes with the process
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    return proc.wait(timeout=300), b"".join(chunks).decode(errors="replace")


def test_a_terminal_shows_images_per_second_and_the_running_loss(tmp_path):
    code, screen = run_in_a_terminal(*RUN, "trainer.progress_after=0", "trainer.log_every=5",
                                     f"hydra.run.dir={tmp_path / 'run'}",
                                     cwd=tmp_path)
    assert code == 0, screen[-2000:]
    assert "epoch 1/1" in screen and "img/s" in screen and "loss=" in screen


@pytest.mark.slow
def test_no_bar_when_the_output_is_a_file_or_the_epoch_is_short(tmp_path):
    assert expt.compose([]).trainer.progress_after == 5  # the default: a bar once an epoch has run 5 s
    proc = run_cli(*RUN, "trainer.progress_after=0", f"hydra.run.dir={tmp_path / 'file'}", cwd=tmp_path)
    assert proc.returncode == 0 and "img/s" not in proc.stdout + proc.stderr
    code, screen = run_in_a_terminal(*RUN, NEVER, f"hydra.run.dir={tmp_path / 'short'}", cwd=tmp_path)
    assert code == 0 and "img/s" not in screen


def test_without_a_terminal_a_long_epoch_logs_its_progress(tmp_path, monkeypatch, caplog):
    """A log file or a cluster job's output has no bar: a lone run logs a line (step, running loss, images/s)
    every LINE_SECONDS of an epoch; a shorter epoch logs none."""
    import logging

    from expt import progress

    cfg = expt.compose([*RUN, "trainer.log_every=5"])
    monkeypatch.setattr(progress, "LINE_SECONDS", 3600.0)  # longer than this epoch on any machine
    with caplog.at_level(logging.INFO, logger="expt.trainer.loop"):
        expt.train(cfg, run_dir=tmp_path / "short")
    assert not [r for r in caplog.records if ": step " in r.getMessage()]
    monkeypatch.setattr(progress, "LINE_SECONDS", 0.0)  # every logging step is "a minute later"
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="expt.trainer.loop"):
        expt.train(cfg, run_dir=tmp_path / "long")
    lines = [r.getMessage() for r in caplog.records if ": step " in r.getMessage()]
    assert lines and all(line.startswith("epoch 1/1: step ") and " images/s" in line for line in lines), lines
    assert [int(line.split("step ")[1].split(" of")[0]) for line in lines][:2] == [5, 10]

