"""A run killed mid-way and resumed ends with the same numbers as one that ran straight through."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import numbers, read_metrics, run_cli

from expt import checkpoint

# ~0.6 s an epoch on 2 CPU cores: slow enough to kill between epochs, with dropout so the RNG state matters
OVERRIDES = [
    "data=synthetic", "data.num_samples=6000", "data.noise=4.0", "regularization=[l2,dropout]",
    "schedule=step", "schedule.step_size=2", "trainer.epochs=6",
]


def kill_after_epoch(run_dir, epoch: int, timeout: float = 120) -> int:
    """Start the run, SIGKILL it once checkpoints/last.pt holds ``epoch`` or later; return the epoch it reached."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "expt", *OVERRIDES, f"hydra.run.dir={run_dir}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    last = run_dir / "checkpoints" / checkpoint.LAST
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if last.is_file() and torch.load(last, weights_only=True)["epoch"] >= epoch:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.02)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    return torch.load(last, weights_only=True)["epoch"]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_resume_on_cuda_continues_like_an_uninterrupted_run(tmp_path, compose):
    import expt

    common = ["trainer.device=cuda", "data.subset=300", "regularization=[l2,dropout]"]
    expt.train(compose("trainer.epochs=2", *common), run_dir=tmp_path / "short")
    longer = expt.train(compose("trainer.epochs=4", *common, f"trainer.resume={tmp_path / 'short'}"),
                        run_dir=tmp_path / "longer")
    straight = expt.train(compose("trainer.epochs=4", *common), run_dir=tmp_path / "straight")
    for a, b in zip(numbers(straight), numbers(longer)):
        assert b == pytest.approx(a, rel=1e-4, abs=1e-6)


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_metrics(tmp_path):
    straight = tmp_path / "straight"
    proc = run_cli(*OVERRIDES, f"hydra.run.dir={straight}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr

    killed = tmp_path / "killed"
    reached = kill_after_epoch(killed, epoch=2)
    assert 2 <= reached < 6
    assert not (killed / "metrics.json").exists()

    resumed = tmp_path / "resumed"
    proc = run_cli(*OVERRIDES, f"trainer.resume={killed}", f"hydra.run.dir={resumed}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"after epoch {reached}" in proc.stdout

    a, b = read_metrics(straight), read_metrics(resumed)
    assert len(numbers(b)) == 6
    for row_a, row_b in zip(numbers(a), numbers(b)):
        assert row_b == pytest.approx(row_a, rel=1e-6, abs=1e-9)
    for key in ("best_val_acc", "best_epoch", "test_acc", "final_train_loss", "initial_loss"):
        assert b[key] == pytest.approx(a[key], rel=1e-6)


def test_resume_from_a_checkpoint_file_of_a_finished_run(tmp_path, compose):
    """Resuming a run that already finished trains no more epochs and reports the same metrics."""
    import expt

    first = expt.train(compose("trainer.epochs=2", "data.subset=300"), run_dir=tmp_path / "a")
    again = expt.train(
        compose("trainer.epochs=2", "data.subset=300", f"trainer.resume={tmp_path / 'a' / 'checkpoints' / 'last.pt'}"),
        run_dir=tmp_path / "b",
    )
    assert numbers(again) == numbers(first)
    assert again["test_acc"] == first["test_acc"]


@pytest.mark.parametrize("schedule", ["schedule=step", "schedule=plateau"])
def test_resume_extends_a_run_to_more_epochs(tmp_path, compose, schedule):
    """A 2-epoch run resumed to 4 epochs ends as a straight 4-epoch run does, its schedule included."""
    import expt

    common = [schedule, "data.subset=300", "regularization=[l2,dropout]"]
    expt.train(compose("trainer.epochs=2", *common), run_dir=tmp_path / "short")
    longer = expt.train(compose("trainer.epochs=4", *common, f"trainer.resume={tmp_path / 'short'}"),
                        run_dir=tmp_path / "longer")
    straight = expt.train(compose("trainer.epochs=4", *common), run_dir=tmp_path / "straight")
    assert [row["lr"] for row in longer["history"]] == pytest.approx([row["lr"] for row in straight["history"]])
    for a, b in zip(numbers(straight), numbers(longer)):
        assert b == pytest.approx(a, rel=1e-6, abs=1e-9)
    assert longer["test_acc"] == straight["test_acc"]


def test_resumed_cosine_schedule_follows_the_longer_run(tmp_path, compose):
    """Cosine's length is trainer.epochs: after a resume to 4 epochs, epochs 3 and 4 follow T_max = 4."""
    import math

    import expt

    common = ["schedule=cosine", "data.subset=300"]
    expt.train(compose("trainer.epochs=2", *common), run_dir=tmp_path / "short")
    longer = expt.train(compose("trainer.epochs=4", *common, f"trainer.resume={tmp_path / 'short'}"),
                        run_dir=tmp_path / "longer")
    lr0 = 1e-3
    assert [row["lr"] for row in longer["history"]] == pytest.approx(
        [lr0, lr0 / 2] + [lr0 * (1 + math.cos(math.pi * t / 4)) / 2 for t in (2, 3)]
    )


def test_resume_from_a_loose_checkpoint_without_best_pt(tmp_path, compose, caplog):
    """With no best.pt beside it, the last model stands in for the best one, labelled as the last epoch."""
    import shutil

    import expt

    expt.train(compose("trainer.epochs=2", "data.subset=300"), run_dir=tmp_path / "a")
    loose = tmp_path / "loose.pt"
    shutil.copyfile(tmp_path / "a" / "checkpoints" / "last.pt", loose)
    resumed = expt.train(compose("trainer.epochs=2", "data.subset=300", f"trainer.resume={loose}"),
                         run_dir=tmp_path / "b")
    assert resumed["best_epoch"] == 2
    assert resumed["best_val_acc"] == resumed["history"][-1]["val_acc"]
    assert "No best.pt" in caplog.text


def test_checkpoint_writes_are_atomic(tmp_path):
    """A failing write leaves the previous checkpoint intact and no temporary file behind."""
    path = tmp_path / "last.pt"
    checkpoint.save({"epoch": 1}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        checkpoint.save({"epoch": 2, "bad": Unpicklable()}, path)
    assert torch.load(path, weights_only=True)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_bad_resume_path_is_a_clear_error(tmp_path):
    proc = run_cli(f"trainer.resume={tmp_path / 'nope'}", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert proc.returncode == 1 and "trainer.resume" in proc.stderr and "Traceback" not in proc.stderr
