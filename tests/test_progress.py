"""The progress bar inside long epochs: shown at a terminal, absent when the output is a file or in sweeps."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

from conftest import run_cli

RUN = ["data=synthetic", "data.num_samples=4000", "trainer.epochs=1", "trainer.batch_size=16",
       "dashboard.histograms=false"]


def run_in_a_terminal(*args: str, cwd: Path) -> tuple[int, str]:
    """``python -m expt <args>`` with its output on a pseudo-terminal, as a user at a shell sees it."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # 40 rows, 120 columns
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "120"}
    proc = subprocess.Popen([sys.executable, "-m", "expt", *args], cwd=cwd, env=env,
                            stdin=follower, stdout=follower, stderr=follower)
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


def test_no_bar_when_the_output_is_a_file_or_the_epoch_is_short(tmp_path):
    small = [*RUN, "data.num_samples=1000"]
    proc = run_cli(*small, "trainer.progress_after=0", f"hydra.run.dir={tmp_path / 'file'}", cwd=tmp_path)
    assert proc.returncode == 0 and "img/s" not in proc.stdout + proc.stderr
    code, screen = run_in_a_terminal(*small, f"hydra.run.dir={tmp_path / 'short'}", cwd=tmp_path)  # 5 s default
    assert code == 0 and "img/s" not in screen
