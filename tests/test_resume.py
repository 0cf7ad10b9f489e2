"""A run killed mid-way and resumed ends with the same numbers as one that ran straight through."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess

import pytest
import torch
from conftest import (PAUSE, QUIET, cli_env, finish, lock_held_elsewhere, numbers, read_metrics, run_cli, start_cli,
                      start_held)

from expt import checkpoint, status

# dropout, so the random streams matter; a step schedule that changes the rate after the pause
OVERRIDES = [
    "data=synthetic", "data.num_samples=1500", "data.noise=4.0", "regularization=[l2,dropout]", "model.num_filters=16",
    "schedule=step", "schedule.step_size=2", "trainer.epochs=4", "trainer.checkpoint_interval=0",
]
PAUSED = [*OVERRIDES, PAUSE]  # held at a step of the test's choosing when started with pause_env


def start_paused(run_dir, epoch: int, **popen) -> subprocess.Popen:
    """Start ``python -m expt`` on ``PAUSED``; return once it is held at the first step of ``epoch``."""
    return start_held(*PAUSED, f"hydra.run.dir={run_dir}", cwd=run_dir.parent, held=PAUSED, epoch=epoch,
                      marker=run_dir.parent / f"{run_dir.name}.paused", **popen)


def signal_paused(run_dir, epoch: int, signum: int, code: int) -> tuple[str, dict]:
    """Start ``PAUSED`` held at the first step of ``epoch``, send it ``signum``; its output (it exited with
    ``code``, without a traceback) and the metrics.json it kept."""
    proc = start_paused(run_dir, epoch=epoch, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    proc.send_signal(signum)
    output = finish(proc, timeout=120)
    assert proc.returncode == code and "Traceback" not in output, output[-3000:]
    return output, read_metrics(run_dir)


@pytest.fixture(scope="module")
def straight_paused(tmp_path_factory) -> dict:
    """``PAUSED`` run straight through, in this process (the pause is never armed here)."""
    import expt

    return expt.train(expt.compose(PAUSED), run_dir=tmp_path_factory.mktemp("straight"))


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
def test_killed_run_resumes_to_the_same_metrics(tmp_path, straight_paused):
    """SIGKILL from outside in the middle of epoch 3 (held at its first step): the resumed run ends as the
    straight one did."""
    killed = tmp_path / "killed"
    proc = start_paused(killed, epoch=3, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    reached = torch.load(killed / "checkpoints" / checkpoint.LAST, weights_only=True)["epoch"]
    assert reached == 2
    assert not (killed / "metrics.json").exists()

    resumed = tmp_path / "resumed"
    proc = run_cli(*PAUSED, f"trainer.resume={killed}", f"hydra.run.dir={resumed}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"after epoch {reached}" in proc.stdout

    a, b = straight_paused, read_metrics(resumed)
    assert len(numbers(b)) == 4
    for row_a, row_b in zip(numbers(a), numbers(b), strict=True):
        assert row_b == pytest.approx(row_a, rel=1e-6, abs=1e-9)
    for key in ("best_val_acc", "best_epoch", "test_acc", "final_train_loss", "initial_loss"):
        assert b[key] == pytest.approx(a[key], rel=1e-6)


# A run whose best model changes after its first checkpoint (dropout: the random streams matter too).
CRASH_OVERRIDES = ["data.subset=400", "regularization=[l2,dropout]", "schedule=cosine", "trainer.epochs=5",
                   "trainer.checkpoint_interval=0", "trainer.batch_size=32"]


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    import expt

    return expt.train(expt.compose(CRASH_OVERRIDES), run_dir=tmp_path_factory.mktemp("straight"))


@pytest.mark.slow
@pytest.mark.parametrize("point", [
    "last.pt:written", "last.pt:replaced", "best.pt:written", "best.pt:replaced",
    "metrics.json:written", "metrics.json:replaced",
])
def test_a_run_killed_at_any_write_resumes_to_the_uninterrupted_metrics(tmp_path, compose, straight_run, point):
    """SIGKILL just before or after each file becomes visible, at the epoch the final best model appears:
    the resumed run ends as if it had never stopped."""
    import expt
    from expt.faults import ENV

    straight = straight_run
    improvements = [row["epoch"] for i, row in enumerate(straight["history"])
                    if row["val_acc"] > max([r["val_acc"] for r in straight["history"][:i]], default=-1)]
    assert improvements[-1] == straight["best_epoch"] > 1
    visit = {"last.pt": straight["best_epoch"], "best.pt": len(improvements), "metrics.json": 1}[point.split(":")[0]]
    killed = tmp_path / "killed"
    proc = run_cli(*CRASH_OVERRIDES, f"hydra.run.dir={killed}", cwd=tmp_path, env={ENV: f"{point}@{visit}"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    resumed = expt.train(compose(*CRASH_OVERRIDES, f"trainer.resume={killed}"), run_dir=killed)
    assert resumed["status"] == "completed"
    for row_a, row_b in zip(numbers(straight), numbers(resumed), strict=True):
        assert row_b == pytest.approx(row_a, rel=1e-6, abs=1e-9)
    for key in ("best_val_acc", "best_epoch", "test_acc", "test_loss", "initial_loss"):
        assert resumed[key] == pytest.approx(straight[key], rel=1e-6), key
    best = checkpoint.load(killed / "checkpoints" / checkpoint.BEST)
    assert best["best_epoch"] == straight["best_epoch"]
    assert status.read_metrics(killed)["test_acc"] == pytest.approx(straight["test_acc"], rel=1e-6)


def test_a_run_resumed_in_its_own_directory_shows_each_step_once_in_tensorboard(tmp_path, compose, straight_run):
    """Killed after epoch 3's events but before its last.pt (which holds epoch 2): the resumed run trains epoch 3
    again, and TensorBoard reads every curve with each step once, the values those of the run that never stopped."""
    import expt
    from expt.faults import ENV
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    killed = tmp_path / "killed"
    proc = run_cli(*CRASH_OVERRIDES, f"hydra.run.dir={killed}", cwd=tmp_path, env={ENV: "last.pt:written@3"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert checkpoint.load(killed / "checkpoints" / checkpoint.LAST)["epoch"] == 2
    resumed = expt.train(compose(*CRASH_OVERRIDES, f"trainer.resume={killed}"), run_dir=killed)

    events = EventAccumulator(str(killed), size_guidance={"scalars": 0, "histograms": 0})
    events.Reload()
    for tag in events.Tags()["histograms"]:  # epoch 2's (the checkpoint's) were not written again on resume
        assert [e.step for e in events.Histograms(tag)] == [0, 1, 2, 3, 4, 5], tag
    assert events.Tags()["histograms"]
    val = events.Scalars("accuracy/val")
    assert [e.step for e in val] == [1, 2, 3, 4, 5]
    assert [e.value for e in val] == pytest.approx([row["val_acc"] for row in straight_run["history"] if row["epoch"] > 0],
                                                rel=1e-6)
    losses = [e.step for e in events.Scalars("loss/train")]  # every step is logged
    assert losses == list(range(1, len(losses) + 1)) and len(losses) % 5 == 0
    ratios = [e.step for e in events.Scalars("diagnostics/update_ratio_log10/reference_1e-3")]
    assert ratios == sorted(set(ratios)) and ratios[-1] == len(losses)
    assert resumed["final_train_loss"] == pytest.approx(straight_run["final_train_loss"], rel=1e-6)


@pytest.mark.slow
def test_a_run_killed_after_a_snapshot_resumes_to_the_same_snapshots(tmp_path, compose):
    """trainer.snapshots: killed after epoch 3's snapshot but before its last.pt, the resumed run replays
    epoch 3 and keeps the same last two epochs' weights as a run that never stopped."""
    import expt
    from expt.faults import ENV

    overrides = [*CRASH_OVERRIDES, "trainer.snapshots=2"]
    expt.train(expt.compose(overrides), run_dir=tmp_path / "straight")
    killed = tmp_path / "killed"
    proc = run_cli(*overrides, f"hydra.run.dir={killed}", cwd=tmp_path, env={ENV: "epoch_0003.pt:replaced"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert checkpoint.load(killed / "checkpoints" / checkpoint.LAST)["epoch"] == 2
    assert list(checkpoint.snapshots(killed / "checkpoints"))[0] == 3  # killed before epoch 1's was pruned
    expt.train(compose(*overrides, f"trainer.resume={killed}"), run_dir=killed)
    straight = checkpoint.snapshots(tmp_path / "straight" / "checkpoints")
    resumed = checkpoint.snapshots(killed / "checkpoints")
    assert list(straight) == list(resumed) == [5, 4]
    for epoch in straight:
        a, b = checkpoint.load(straight[epoch])["model"], checkpoint.load(resumed[epoch])["model"]
        assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=1e-6, atol=1e-9) for k in a)


# A run with dropout (the random streams matter) and the default step schedule, in two lengths, shared by the
# tests below that read it or resume from it (each resumes into a directory of its own). Dashboards off:
# nothing here reads them, and a resumed run may change them.
SHARED = ["data.subset=300", "regularization=[l2,dropout]", "trainer.checkpoint_interval=0", *QUIET]


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory):
    """(run directory, metrics) of ``SHARED`` trained for 2 epochs."""
    import expt

    run_dir = tmp_path_factory.mktemp("two_epochs")
    return run_dir, expt.train(expt.compose(["trainer.epochs=2", *SHARED]), run_dir=run_dir)


@pytest.fixture(scope="module")
def four_epochs(tmp_path_factory):
    """(run directory, metrics) of ``SHARED`` trained straight through 4 epochs."""
    import expt

    run_dir = tmp_path_factory.mktemp("four_epochs")
    return run_dir, expt.train(expt.compose(["trainer.epochs=4", *SHARED]), run_dir=run_dir)


def test_resume_refuses_files_and_configs_it_cannot_continue(tmp_path, compose, two_epochs):
    """Not a checkpoint, a truncated one, another model or optimizer: one ConfigError naming what differs."""
    import expt
    from expt.config import ConfigError

    common = ["trainer.epochs=2", *SHARED]
    last = two_epochs[0] / "checkpoints" / checkpoint.LAST
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    pickled = tmp_path / "pickled.pt"  # an object torch's weights-only reader refuses, and advises to unpickle
    torch.save({"model": torch.nn.Linear(2, 2), "config": "x"}, pickled)
    renamed = tmp_path / "renamed.pt"  # as if the model's code had renamed a layer since it was saved
    state = torch.load(last, weights_only=True)
    layer = next(iter(state["model"]))
    state["model"][f"{layer}_old"] = state["model"].pop(layer)
    torch.save(state, renamed)
    cases = {
        text: r"notes\.pt.*is not a readable checkpoint",
        truncated: r"truncated\.pt.*is not a readable checkpoint.*cut short",
        foreign: r"foreign\.pt.*not an expt checkpoint",
        pickled: r"pickled\.pt' is not a readable checkpoint \(it holds Python objects besides tensors and plain "
                 r"values, which expt does not unpickle\): give a last\.pt",
        renamed: rf"renamed\.pt.*does not fit the ConvNet its config builds \(Missing key\(s\) in state_dict: "
                 rf"\"{re.escape(layer)}\".*code or its config changed",
    }
    for path, message in cases.items():
        with pytest.raises(ConfigError, match=message):
            expt.train(compose(*common, f"trainer.resume={path}"), run_dir=tmp_path / "b")
    for change, message in {
        "model=mlp": r"model\._target_: 'expt\.models\.ConvNet' in the checkpoint, 'expt\.models\.MLP' now",
        "optimizer=momentum": r"optimizer\._target_: 'torch\.optim\.Adam' in the checkpoint.*may change only",
        "trainer.batch_size=32": r"trainer\.batch_size: 64 in the checkpoint, 32 now",
    }.items():
        with pytest.raises(ConfigError, match=message):
            expt.train(compose(*common, change, f"trainer.resume={last}"), run_dir=tmp_path / "b")
    # what may change: more epochs and another schedule
    longer = expt.train(compose("trainer.epochs=3", *SHARED, "schedule=cosine", f"trainer.resume={last}"),
                        run_dir=tmp_path / "c")
    assert longer["epochs_completed"] == 3


def test_resume_refuses_data_that_changed_under_the_same_config(tmp_path, compose):
    """The same data.path with other contents: fewer samples, the labels shuffled, other images. The config is the
    same, so only the data's fingerprint in last.pt tells; it resumed and tested at chance before."""
    import numpy as np
    from sklearn.datasets import load_digits

    import expt
    from expt.config import ConfigError

    digits = load_digits()
    x, y = (digits.images * 16).astype(np.uint8), digits.target
    path = tmp_path / "mine.npz"
    np.savez(path, x_train=x, y_train=y)
    overrides = ["data=npz", f"data.path={path}", "trainer.epochs=1", *SHARED]
    run = tmp_path / "run"
    expt.train(compose(*overrides), run_dir=run)
    shuffled = np.random.default_rng(0).permutation(y)
    for arrays, message in (
        ({"x_train": x[:900], "y_train": y[:900]}, r"it trained on 300 / 288 / 359 training / validation / test "
                                                   r"samples and this run.s data has 300 / 144 / 180"),
        ({"x_train": x, "y_train": shuffled}, r"its data had as many samples, with other labels"),
        ({"x_train": x // 2, "y_train": y}, r"its training images had other statistics"),
    ):
        np.savez(path, **arrays)
        with pytest.raises(ConfigError, match=r"trainer.resume=.* was trained on other data than this run's, with "
                                              r"the same config: " + message):
            expt.train(compose(*overrides, "trainer.epochs=2", f"trainer.resume={run}"), run_dir=run)
    np.savez(path, x_train=x, y_train=y)  # the data as it was: the run goes on
    assert expt.train(compose(*overrides, "trainer.epochs=2", f"trainer.resume={run}"), run_dir=run)[
        "epochs_completed"] == 2


def test_a_second_process_cannot_train_in_a_run_directory_in_use(tmp_path, compose):
    """A run resumed while it still runs (or a requeued job whose first attempt lives on) would write the same
    checkpoints and events: the second is refused, naming the first; once the first ends, the directory is free
    again, however it ended (the operating system releases the lock)."""
    import expt
    from expt.errors import StorageError
    from expt.files import LOCK_FILE

    run = tmp_path / "run"
    run.mkdir()
    with lock_held_elsewhere(run) as pid:
        busy = rf"another process \(pid {pid}\) is training in {re.escape(str(run))}"
        with pytest.raises(StorageError, match=busy):
            expt.train(compose("data.subset=100", "trainer.epochs=1"), run_dir=run)
        assert not (run / "metrics.json").exists() and not (run / "checkpoints").exists()
    assert expt.train(compose("data.subset=100", "trainer.epochs=1"), run_dir=run)["status"] == "completed"
    assert (run / LOCK_FILE).is_file()


def test_python_m_expt_into_a_directory_in_use_is_refused_before_hydra_writes_there(tmp_path):
    """The lock is taken before Hydra writes .hydra/ and the job's log: the first run's record stays as it was."""
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("the first run's config\n")
    with lock_held_elsewhere(run) as pid:
        done = run_cli("data.subset=100", "trainer.epochs=1", f"hydra.run.dir={run}", cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.stderr.startswith(f"Error: another process (pid {pid}) is training in {run}: wait for it to end or "
                                  "stop it, or train elsewhere (hydra.run.dir=...).")
    assert (run / ".hydra" / "config.yaml").read_text() == "the first run's config\n"
    assert sorted(p.name for p in run.iterdir()) == [".expt.lock", ".hydra"]


def test_the_printed_resume_command_reads_back_as_the_run_it_names(tmp_path, capsys):
    """A run directory holding = and , (hydra.run.dir=outputs/${hydra.job.override_dirname}), its own config
    directory and config name: Hydra's parser reads the printed overrides back as that directory."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from expt.__main__ import say_how_to_resume

    run_dir = tmp_path / "optimizer.lr=0.1,trainer.seed=2"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "last.pt").write_bytes(b"")
    hydra_cfg = OmegaConf.create({
        "mode": RunMode.RUN, "runtime": {"output_dir": str(run_dir), "config_sources": [
            {"path": "expt.conf", "schema": "pkg", "provider": "main"},
            {"path": str(tmp_path / "conf"), "schema": "file", "provider": "command-line"}]},
        "job": {"config_name": "mine"}, "overrides": {"task": ["optimizer.lr=0.1", "trainer.seed=2"]}})
    say_how_to_resume(hydra_cfg)
    line = capsys.readouterr().err.strip()
    words = shlex.split(line.split(": ", 1)[1])
    assert words[:5] == ["python", "-m", "expt", f"--config-dir={tmp_path / 'conf'}", "--config-name=mine"]
    parsed = OverridesParser.create().parse_overrides(words[5:])
    assert [(o.key_or_group, o.value()) for o in parsed] == [
        ("optimizer.lr", 0.1), ("trainer.seed", 2), ("hydra.run.dir", str(run_dir)), ("trainer.resume", str(run_dir))]


def test_resume_from_a_checkpoint_file_of_a_finished_run(tmp_path, compose, two_epochs):
    """Resuming a run that already finished trains no more epochs and reports the same metrics."""
    import expt

    run_dir, first = two_epochs
    again = expt.train(
        compose("trainer.epochs=2", *SHARED, f"trainer.resume={run_dir / 'checkpoints' / 'last.pt'}"),
        run_dir=tmp_path / "b",
    )
    assert numbers(again) == numbers(first)
    assert again["test_acc"] == first["test_acc"]


@pytest.mark.parametrize("schedule", ["schedule=step", "schedule=plateau"])
def test_resume_extends_a_run_to_more_epochs(tmp_path, compose, schedule, request):
    """A 2-epoch run resumed to 4 epochs ends as a straight 4-epoch run does, its schedule included."""
    import expt

    common = [schedule, *SHARED]
    if schedule == "schedule=step":  # the default schedule: the shared runs
        short, (_, straight) = request.getfixturevalue("two_epochs")[0], request.getfixturevalue("four_epochs")
    else:
        short = tmp_path / "short"
        expt.train(compose("trainer.epochs=2", *common), run_dir=short)
        straight = expt.train(compose("trainer.epochs=4", *common), run_dir=tmp_path / "straight")
    longer = expt.train(compose("trainer.epochs=4", *common, f"trainer.resume={short}"),
                        run_dir=tmp_path / "longer")
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


def test_a_loose_last_pt_resumes_with_its_own_best_model(tmp_path, compose, four_epochs):
    """last.pt carries the best model so far: copied alone, it resumes to the run's best and writes best.pt."""
    import shutil

    import expt

    run_dir, first = four_epochs
    loose = tmp_path / "loose.pt"
    shutil.copyfile(run_dir / "checkpoints" / "last.pt", loose)
    resumed = expt.train(compose("trainer.epochs=4", *SHARED, f"trainer.resume={loose}"), run_dir=tmp_path / "b")
    for key in ("best_epoch", "best_val_acc", "test_acc", "test_loss"):
        assert resumed[key] == first[key]
    assert checkpoint.load(tmp_path / "b" / "checkpoints" / "best.pt")["best_epoch"] == first["best_epoch"]


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
    # a copy replaces its target whole, with the mode a checkpoint written here gets
    other = tmp_path / "sub" / "best.pt"
    checkpoint.save({"epoch": 3}, other)
    checkpoint.copy(path, other)
    assert other.read_bytes() == path.read_bytes() and other.stat().st_mode == path.stat().st_mode
    assert sorted(p.name for p in other.parent.iterdir()) == ["best.pt"]


def test_bad_resume_path_is_a_clear_error(tmp_path):
    proc = run_cli(f"trainer.resume={tmp_path / 'nope'}", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert proc.returncode == 1 and "trainer.resume" in proc.stderr and "Traceback" not in proc.stderr


def saved_epochs(monkeypatch) -> list[tuple[str, int]]:
    """(file name, epoch) of every checkpoint the trainer writes from now on (the real writer still writes)."""
    calls: list[tuple[str, int]] = []
    real_save = checkpoint.save

    def save(state, path):
        calls.append((path.name, state["epoch"]))
        real_save(state, path)

    monkeypatch.setattr(checkpoint, "save", save)
    return calls


def test_checkpoint_interval_zero_writes_every_epoch_and_best_when_it_improves(tmp_path, compose, monkeypatch):
    import expt

    calls = saved_epochs(monkeypatch)
    metrics = expt.train(compose("trainer.epochs=4", "data.subset=300", "trainer.checkpoint_interval=0"),
                         run_dir=tmp_path)
    assert [e for name, e in calls if name == checkpoint.LAST] == [1, 2, 3, 4]
    improved, best_so_far = [], -1.0
    for row in metrics["history"]:
        if row["val_acc"] > best_so_far:
            improved.append(row["epoch"])
            best_so_far = row["val_acc"]
    assert [e for name, e in calls if name == checkpoint.BEST] == improved


def test_checkpoints_wait_for_the_interval_but_the_last_epoch_is_always_written(tmp_path, compose, monkeypatch):
    """A run shorter than trainer.checkpoint_interval writes last.pt and best.pt once, at its end."""
    import expt

    calls = saved_epochs(monkeypatch)
    metrics = expt.train(compose("trainer.epochs=4", "data.subset=300", "trainer.checkpoint_interval=3600"),
                         run_dir=tmp_path)
    assert calls == [(checkpoint.LAST, 4), (checkpoint.BEST, metrics["best_epoch"])]


def test_best_pt_holds_the_model_that_scored_the_test_accuracy(compose, four_epochs):
    """Loading best.pt into a freshly built model gives back the run's test loss and accuracy."""
    from expt.build import build
    from expt.predict import loss_and_accuracy

    run_dir, metrics = four_epochs
    best = checkpoint.load(run_dir / "checkpoints" / checkpoint.BEST)
    assert best["best_epoch"] == metrics["best_epoch"] and best["best_val_acc"] == metrics["best_val_acc"]
    exp = build(compose("trainer.epochs=4", *SHARED))
    exp.model.load_state_dict(best["model"])
    assert loss_and_accuracy(exp.model, exp.data.x_test, exp.data.y_test) == pytest.approx(
        (metrics["test_loss"], metrics["test_acc"]), rel=1e-6)


def test_a_run_that_fails_mid_way_keeps_its_best_model(tmp_path, compose, monkeypatch):
    """An error after epoch 2 (here from the dashboard) still leaves best.pt, though last.pt was not due."""
    import expt
    from expt.dashboard import Dashboard

    real_epoch = Dashboard.epoch

    def failing_epoch(self, epoch, row):
        if epoch == 2:
            raise OSError("disk full")
        real_epoch(self, epoch, row)

    monkeypatch.setattr(Dashboard, "epoch", failing_epoch)
    with pytest.raises(OSError, match="disk full"):
        expt.train(compose("trainer.epochs=4", "data.subset=300", "trainer.checkpoint_interval=3600"), run_dir=tmp_path)
    assert not (tmp_path / "checkpoints" / checkpoint.LAST).exists()
    best = checkpoint.load(tmp_path / "checkpoints" / checkpoint.BEST)
    assert best["best_epoch"] in (1, 2) and 0 < best["best_val_acc"] <= 1


def test_resuming_from_best_pt_is_a_clear_error(tmp_path, compose, two_epochs):
    import expt
    from expt.config import ConfigError

    best = two_epochs[0] / "checkpoints" / checkpoint.BEST
    with pytest.raises(ConfigError, match=r"trainer\.resume=.*best\.pt.*not a training state.*last\.pt"):
        expt.train(compose("trainer.epochs=3", *SHARED, f"trainer.resume={best}"), run_dir=tmp_path / "b")


def test_ctrl_c_in_the_first_epoch_says_nothing_was_measured_or_kept(tmp_path):
    """SIGINT at the first step: metrics.json says interrupted with nothing measured, and the last line says so
    (no invented 0.00%), with nothing to resume."""
    output, metrics = signal_paused(tmp_path / "stopped", 1, signal.SIGINT, 130)
    assert "Interrupted during epoch 1, before the first checkpoint: nothing to resume." in output
    assert "interrupted: best val -, final val -, test -. Run directory: " in output, output[-3000:]
    assert metrics["status"] == "interrupted" and metrics["epochs_completed"] == 0
    assert metrics["best_val_acc"] is None and metrics["test_acc"] is None



# a real SIGINT the moment the program first imports MODULE, from an import hook loaded before it
INTERRUPT_AT_IMPORT = """
import os, signal, sys

class InterruptAtImport:
    def find_spec(self, name, path=None, target=None):
        if name == MODULE:
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)  # to whichever handler the program has in place, as Ctrl-C is
        return None

sys.meta_path.insert(0, InterruptAtImport())
"""


@pytest.mark.parametrize("module", [
    "hydra",  # before Hydra starts: nothing has started
    # inside torch's first import, in the job: a KeyboardInterrupt there left torch half loaded, and the stop's own
    # clean-up failed on it with a traceback (or torch's C++ side aborted); the stop now waits for the import
    "torch.nn",
])
def test_ctrl_c_while_the_libraries_load_exits_130_without_a_traceback(tmp_path, module):
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(INTERRUPT_AT_IMPORT.replace("MODULE", repr(module)))
    env = {"PYTHONPATH": os.pathsep.join((str(hook), cli_env()["PYTHONPATH"]))}
    done = run_cli(f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, env=env)
    assert done.returncode == 130 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.stderr.strip() == "Interrupted.", done.stderr[-3000:]
    assert not (tmp_path / "run" / "metrics.json").exists() and not (tmp_path / "run" / "checkpoints").exists()
    if module == "hydra":
        assert not (tmp_path / "run").exists()
    else:  # the signal came inside the job, as torch loaded (Hydra had made the run directory)
        assert (tmp_path / "run" / ".hydra" / "config.yaml").is_file()


def test_ctrl_c_between_an_epochs_measurement_and_its_checkpoint_says_so(tmp_path, compose, monkeypatch, caplog):
    """Ctrl-C as epoch 2 is recorded (its row measured, its checkpoint not yet written): the line says so, with
    the epoch last.pt holds, where it said 'during epoch 2' while metrics.json held epoch 2."""
    import logging

    import expt
    from expt.trainer.record import RunRecord

    save = RunRecord.save

    def interrupted_at_epoch_2(self, engine):
        if self.epoch == 2:
            raise KeyboardInterrupt
        save(self, engine)

    monkeypatch.setattr(RunRecord, "save", interrupted_at_epoch_2)
    with caplog.at_level(logging.WARNING), pytest.raises(KeyboardInterrupt):
        expt.train(compose("trainer.epochs=3", *SHARED), run_dir=tmp_path)
    assert ("Interrupted after epoch 2 was measured, before its checkpoint; checkpoints/last.pt holds epoch 1: "
            f"resume with trainer.resume={tmp_path}") in caplog.text, caplog.text
    metrics = read_metrics(tmp_path)
    assert metrics["status"] == "interrupted" and metrics["epochs_completed"] == 2


def test_ctrl_c_while_a_run_resumes_writes_nothing_and_says_to_resume_again(tmp_path, compose, monkeypatch, caplog):
    """Ctrl-C while a run loads its checkpoint: the run it resumes stays as it was (its own directory's files, byte
    for byte), a new directory gets no metrics.json of a run that measured nothing, and the log says to resume again
    from the same checkpoint."""
    import logging

    import expt
    from expt import checkpoint

    expt.train(compose("trainer.epochs=1", *SHARED), run_dir=tmp_path / "earlier")
    kept = {p: p.read_bytes() for p in (tmp_path / "earlier").rglob("*") if p.is_file()}

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "restore_rng", interrupted)  # halfway through loading the checkpoint
    for run_dir in (tmp_path / "earlier", tmp_path / "elsewhere"):  # resumed in place, and into a new directory
        caplog.clear()
        with caplog.at_level(logging.WARNING), pytest.raises(KeyboardInterrupt):
            expt.train(compose("trainer.epochs=2", f"trainer.resume={tmp_path / 'earlier'}", *SHARED), run_dir=run_dir)
        assert (f"Interrupted while resuming from {tmp_path / 'earlier' / 'checkpoints' / 'last.pt'}, before training: "
                f"resume again with trainer.resume={tmp_path / 'earlier'}") in caplog.text, caplog.text
        assert "Stopping: testing the best model" not in caplog.text and "nothing to resume" not in caplog.text
    assert {p: p.read_bytes() for p in (tmp_path / "earlier").rglob("*") if p.is_file()} == kept
    assert not (tmp_path / "elsewhere" / "metrics.json").exists()
    assert not (tmp_path / "elsewhere" / "checkpoints").exists()


def test_ctrl_c_before_a_run_begins_leaves_the_earlier_run_in_its_directory_whole(tmp_path, compose, monkeypatch,
                                                                                  caplog):
    """Ctrl-C while a run measures its loss at init, in the directory of an earlier run: that run's files stay as
    they were (an interrupted metrics.json was written over its own, beside its checkpoints); a fresh directory
    still gets the interrupted run's metrics.json."""
    import logging

    import expt
    from expt.trainer.engine import SingleEngine

    expt.train(compose("trainer.epochs=1", *SHARED), run_dir=tmp_path / "earlier")
    kept = {p: p.read_bytes() for p in (tmp_path / "earlier").rglob("*") if p.is_file()}

    def interrupted(self, records):
        raise KeyboardInterrupt

    monkeypatch.setattr(SingleEngine, "losses", interrupted)
    with caplog.at_level(logging.WARNING), pytest.raises(KeyboardInterrupt):
        expt.train(compose("trainer.epochs=2", *SHARED), run_dir=tmp_path / "earlier")
    assert {p: p.read_bytes() for p in (tmp_path / "earlier").rglob("*") if p.is_file()} == kept
    assert f"Interrupted before the run began: {tmp_path / 'earlier'} holds the run before it" in caplog.text
    assert "Stopping: testing the best model" not in caplog.text  # there is none to test
    from expt.requeue import stopped_run_here  # the command line's resume hint and a sweep's say nothing then

    assert not stopped_run_here(tmp_path / "earlier")
    caplog.clear()
    with caplog.at_level(logging.WARNING), pytest.raises(KeyboardInterrupt):
        expt.train(compose("trainer.epochs=2", *SHARED), run_dir=tmp_path / "fresh")
    assert read_metrics(tmp_path / "fresh")["status"] == "interrupted"
    # no epoch began (it said 'during epoch 0'), and there is no best model to test
    assert "Interrupted before its first epoch: nothing to resume." in caplog.text, caplog.text
    assert "Stopping: writing metrics.json; interrupt again to stop at once, without it." in caplog.text


def test_sigterm_stops_the_run_as_ctrl_c_does(tmp_path):
    """kill (SIGTERM, as a scheduler's time limit sends it) during epoch 2: metrics.json says interrupted, the log
    says which epoch last.pt holds and how to resume, and the command exits 143."""
    output, metrics = signal_paused(tmp_path / "stopped", 2, signal.SIGTERM, 143)
    assert "Interrupted during epoch 2; checkpoints/last.pt holds epoch 1: resume with" in output
    assert output.rstrip().endswith("Terminated.")
    assert metrics["status"] == "interrupted" and metrics["epochs_completed"] == 1


# a run whose files are small but whose checkpoints are above 10 kB
SMALL_WRITES = ("model.num_filters=8", "model.hidden_dim=32", "data.subset=256", "trainer.epochs=2",
                "trainer.checkpoint_interval=0", "dashboard.histograms=false", "dashboard.graph=false",
                "dashboard.filters=false")


def files_of_10_kb() -> None:
    """In the child: a write past 10 kB fails with EFBIG (as on a full disk) instead of killing the process."""
    import resource

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (10_000, 10_000))


NEEDS_FILE_SIZE_LIMITS = pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs POSIX file size limits")


@NEEDS_FILE_SIZE_LIMITS
def test_a_checkpoint_the_disk_cannot_take_stops_the_run_with_one_paragraph_and_keeps_what_fits(tmp_path):
    """A full disk, as a file size limit makes it (writes past 10 kB fail: last.pt and best.pt, not metrics.json):
    the run stops with one paragraph naming the file, the system's reason and what was kept, exit 1 and no
    traceback; metrics.json keeps the epochs measured, and a failed write leaves no partial file."""
    run_dir = tmp_path / "run"
    proc = start_cli(*SMALL_WRITES, f"hydra.run.dir={run_dir}", cwd=tmp_path, preexec_fn=files_of_10_kb,
                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = finish(proc, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in output, output[-3000:]
    last = run_dir / "checkpoints" / checkpoint.LAST
    assert (f"Error: {last} could not be written (File too large), so the run stopped at epoch 1; no checkpoint "
            "was kept.") in output, output[-3000:]
    metrics = read_metrics(run_dir)
    assert metrics["status"] == "interrupted" and metrics["epochs_completed"] == 1
    assert metrics["best_val_acc"] is not None and metrics["test_acc"] is not None  # tested from memory
    assert re.search(r"epoch 1/\d+  loss ", output), output[-3000:]  # the epoch measured is said, as every epoch is
    assert not last.exists() and not (last.parent / checkpoint.BEST).exists()
    assert not list(last.parent.glob(".*.tmp"))
    assert "Logging error" not in output and f"Error: {last} could not be written" in (run_dir / "expt.log").read_text()


@pytest.mark.slow
@NEEDS_FILE_SIZE_LIMITS
def test_a_resume_the_disk_cannot_take_leaves_the_run_it_resumed_as_it_was(tmp_path, compose):
    """Resumed under a file size limit that its checkpoints pass (into a new directory: the copy of last.pt; in
    place: best.pt as last.pt has it), the run stops before training with one paragraph that says the checkpoint
    still holds the run and how to resume again: it writes no metrics.json, so a completed run's record stays
    whole; once there is room, the same command trains on."""
    import expt

    earlier = tmp_path / "earlier"
    expt.train(compose(*SMALL_WRITES, "trainer.epochs=1"), run_dir=earlier)  # in process: only the limit needs a child
    kept = {p: p.read_bytes() for p in [earlier / "metrics.json", *(earlier / "checkpoints").iterdir()]}
    last = earlier / "checkpoints" / checkpoint.LAST
    for run_dir, refused in [(tmp_path / "elsewhere", tmp_path / "elsewhere" / "checkpoints" / checkpoint.LAST),
                             (earlier, earlier / "checkpoints" / checkpoint.BEST)]:
        resume = (*SMALL_WRITES, f"trainer.resume={earlier}", f"hydra.run.dir={run_dir}")
        proc = start_cli(*resume, cwd=tmp_path, preexec_fn=files_of_10_kb, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
        output = finish(proc, timeout=120)
        assert proc.returncode == 1 and "Traceback" not in output, output[-3000:]
        assert (f"Error: {refused} could not be written (File too large), so the run stopped while resuming from "
                f"{last}, before training: once there is room, resume again with trainer.resume={earlier}.") in output
        assert {p: p.read_bytes() for p in kept} == kept, run_dir  # the run resumed from, byte for byte
        if run_dir != earlier:
            assert not (run_dir / "metrics.json").exists() and not list(run_dir.glob("events.out.tfevents.*"))
            assert not list(run_dir.rglob("*.pt")) and not list(run_dir.rglob(".*.tmp"))
    resumed = expt.train(compose(*SMALL_WRITES, f"trainer.resume={earlier}"), run_dir=earlier)
    assert resumed["status"] == "completed" and read_metrics(earlier)["epochs_completed"] == 2


def files_of_60_kb() -> None:
    """In the child: a write past 60 kB fails with EFBIG: the event file of :func:`test_an_event_file_the_disk_cannot_take_stops_the_run_as_a_checkpoint_does` passes that in a few epochs, its checkpoints stay below."""
    import resource

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (60_000, 60_000))


@pytest.mark.slow
@NEEDS_FILE_SIZE_LIMITS
def test_an_event_file_the_disk_cannot_take_stops_the_run_as_a_checkpoint_does(tmp_path):
    """The event file grows past a file size limit its checkpoints stay below (a tiny MLP, every step logged): the run
    stops within an epoch with one paragraph naming the event file and what last.pt holds, exit 1, no traceback
    (tensorboard's writer thread dies on that write and Python would print its traceback), and metrics.json says
    interrupted; the run resumes from its last.pt once there is room."""
    run_dir = tmp_path / "run"
    tiny = ("model=mlp", "model.hidden_sizes=[8]", "trainer.epochs=12", "trainer.log_every=1",
            "trainer.checkpoint_interval=0")
    proc = start_cli(*tiny, f"hydra.run.dir={run_dir}", cwd=tmp_path, preexec_fn=files_of_60_kb,
                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = finish(proc, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in output, output[-3000:]
    events = next(p for p in run_dir.glob("events.out.tfevents.*") if not p.name.endswith(".hparams"))
    stopped = re.search(rf"Error: {re.escape(str(events))} could not be written \(File too large\), so the run "
                        rf"stopped at epoch (\d+); {re.escape(str(run_dir / 'checkpoints' / checkpoint.LAST))} holds "
                        rf"epoch (\d+): once there is room, resume with trainer.resume={re.escape(str(run_dir))}\.",
                        output)
    assert stopped is not None, output[-3000:]
    epoch, saved = int(stopped.group(1)), int(stopped.group(2))
    assert 1 <= saved <= epoch < 12 and epoch - saved <= 1, output[-3000:]
    metrics = read_metrics(run_dir)
    assert metrics["status"] == "interrupted" and metrics["epochs_completed"] == epoch
    assert checkpoint.load(run_dir / "checkpoints" / checkpoint.LAST)["epoch"] == saved
    resumed = run_cli(*tiny, f"hydra.run.dir={run_dir}", f"trainer.resume={run_dir}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert read_metrics(run_dir)["status"] == "completed" and read_metrics(run_dir)["epochs_completed"] == 12


@NEEDS_FILE_SIZE_LIMITS
def test_a_multirun_job_the_disk_cannot_take_stops_alone_with_one_paragraph(tmp_path):
    """As a lone run, without Hydra's traceback: each job logs why it stopped, the others go on, the sweep ends
    with the first job's paragraph and exit 1; a sweeper's record names the expt error."""
    from hydra_plugins.expt_sweeper.errors import TrialStorageError, describe

    sweep = tmp_path / "sweep"
    proc = start_cli("-m", "trainer.seed=0,1", *SMALL_WRITES, f"hydra.sweep.dir={sweep}", cwd=tmp_path,
                     preexec_fn=files_of_10_kb, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = finish(proc, timeout=180)
    assert proc.returncode == 1 and "Traceback" not in output, output[-3000:]
    for job in ("0", "1"):
        last = sweep / job / "checkpoints" / checkpoint.LAST
        stopped = f"{last} could not be written (File too large), so the run stopped at epoch 1"
        assert f"Error: {stopped}; no checkpoint was kept. This job stops; the other jobs go on." in output
        assert read_metrics(sweep / job)["status"] == "interrupted"
    end = output.split("Error executing job with overrides: ['trainer.seed=0'", 1)[1]  # Hydra's, after every job
    assert (f"\n{sweep / '0' / 'checkpoints' / checkpoint.LAST} could not be written (File too large), so the run "
            "stopped at epoch 1; no checkpoint was kept.\n") in end, output[-3000:]
    assert describe(TrialStorageError("x.pt could not be written")) == "StorageError: x.pt could not be written"


@pytest.mark.slow
def test_ctrl_c_keeps_metrics_and_best_model_and_the_run_resumes(tmp_path, straight_paused):
    """SIGINT during epoch 2 (held at its first step): metrics.json says interrupted, best.pt is written, and
    the command it prints resumes the run in its directory to the same end, with the stop's header and final metrics
    gone from TensorBoard. The directory's name holds a space: every command printed quotes it as the shell and
    Hydra read it back."""
    run_dir = tmp_path / "stopped run"
    output, metrics = signal_paused(run_dir, 2, signal.SIGINT, 130)
    said = re.search(r"Interrupted during epoch 2; checkpoints/last.pt holds epoch 1: resume with (.+)", output)
    assert said is not None and shlex.split(said.group(1)) == [f"trainer.resume='{run_dir}'"], output[-3000:]
    board = next(line for line in output.splitlines() if line.strip().startswith("tensorboard --logdir"))
    assert shlex.split(board) == ["tensorboard", "--logdir", str(run_dir)]
    assert "Stopping: testing the best model and writing metrics.json; interrupt again to stop at once" in output
    assert metrics["status"] == "interrupted" and metrics["epochs_completed"] == 1
    best = checkpoint.load(run_dir / "checkpoints" / checkpoint.BEST)
    assert best["best_epoch"] == metrics["best_epoch"] == 1

    line = next(line for line in output.splitlines() if line.startswith("To resume in the same directory: "))
    words = shlex.split(line.split(": ", 1)[1])
    assert words[:3] == ["python", "-m", "expt"] and words[-2:] == [f"hydra.run.dir='{run_dir}'",
                                                                     f"trainer.resume='{run_dir}'"]
    run_cli(*words[3:], cwd=tmp_path, check=True)
    resumed = read_metrics(run_dir)
    assert resumed["status"] == "completed"
    for row_a, row_b in zip(numbers(straight_paused), numbers(resumed), strict=True):
        assert row_b == pytest.approx(row_a, rel=1e-6, abs=1e-9)
    # the stop wrote its final metrics (hparams/*) and header at step 1, the epoch last.pt held; the resumed run
    # writes its header at that step again and its final metrics at the end: the stop's are gone, each step shows once
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    headers = events.Tensors("config/text_summary")
    assert [e.step for e in headers] == [0, 1, 4]  # the first start, the resumed start, the end
    assert "status: completed" in headers[-1].tensor_proto.string_val[0].decode()
    for tag, key in (("hparams/best_val_acc", "best_val_acc"), ("hparams/test_acc", "test_acc")):
        assert [(e.step, e.value) for e in events.Scalars(tag)] == [(4, pytest.approx(resumed[key]))], tag


def test_a_sigterm_whose_exception_was_swallowed_still_stops_the_run_at_its_next_epoch(tmp_path):
    """A library's bare ``except:`` (or a finalizer running when the signal came) can swallow the Terminated that
    SIGTERM raises, and a scheduler sends one SIGTERM before its SIGKILL: the stop stays pending, and the run stops
    at its next epoch or logging step as at Ctrl-C, keeping its metrics. Once the command has stopped for it, a run
    trains again (in a process that goes on, such as this one)."""
    import expt
    from expt import errors

    previous = signal.signal(signal.SIGTERM, errors.on_sigterm)
    try:
        try:  # the signal's exception lands in code that swallows everything
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(10_000):
                pass
        except BaseException:
            pass
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler ran: a second SIGTERM kills
        cfg = expt.compose(["data.subset=100", "trainer.epochs=3", *QUIET])
        with pytest.raises(errors.Terminated):
            expt.train(cfg, run_dir=tmp_path / "stopped")
        metrics = read_metrics(tmp_path / "stopped")
        assert metrics["status"] == "interrupted" and metrics["epochs_completed"] == 0, metrics
    finally:
        signal.signal(signal.SIGTERM, previous)
        errors.termination_handled()
    assert expt.train(cfg, run_dir=tmp_path / "again")["status"] == "completed"


@pytest.mark.slow
def test_a_sweep_stopped_before_its_trial_has_a_checkpoint_says_how_to_continue_it(tmp_path):
    """A coarse-to-fine sweep's trials are often shorter than the checkpoint interval, so Ctrl-C usually lands in a
    trial with nothing to resume: the sweep still says how to continue (it recorded round 1's two trials), and the
    same command with EXPT_RESUME_OWN_CHECKPOINT=1 trains only the trial it had not finished. The sweep directory is
    relative and each job runs in its own (hydra.job.chdir=true): the records are looked for where the command is."""
    from expt.search import read_records

    overrides = ["data.subset=300", "trainer.checkpoint_interval=1000", "dashboard.histograms=false", PAUSE]
    sweep, marker = tmp_path / "sweep", tmp_path / "paused"
    args = ["--multirun", "hydra/sweeper=coarse_to_fine", "hydra.sweeper.pinpoint.enabled=false",
            "hydra.sweeper.params={schedule.gamma:null,model.num_filters:null,model.hidden_dim:null,"
            "regularization.dropout:null,regularization.l2:null}",
            "hydra.sweeper.rounds=[{trials:2,top_k:1,overrides:['trainer.epochs=1']},"
            "{trials:1,top_k:1,overrides:['trainer.epochs=2']}]", "hydra.sweep.dir=sweep", "hydra.job.chdir=true",
            *overrides]
    # round 1's trials end after one epoch; round 2's holds at the first step of its second epoch
    proc = start_held(*args, cwd=tmp_path, held=overrides, epoch=2, marker=marker, what="round 2's trial",
                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    proc.send_signal(signal.SIGINT)
    output = finish(proc, timeout=120)
    assert proc.returncode == 130 and "Traceback" not in output, output[-3000:]
    assert "Interrupted during epoch 2, before the first checkpoint: nothing to resume." in output, output[-3000:]
    assert ("To continue the sweep: run the same command again with hydra.sweep.dir=sweep and "
            "EXPT_RESUME_OWN_CHECKPOINT=1 in the environment") in output, output[-3000:]
    recorded = read_records(sweep / "search.jsonl")
    assert sorted(r.round for r in recorded.values()) == [1, 1]

    run_cli(*args, cwd=tmp_path, env={"EXPT_RESUME_OWN_CHECKPOINT": "1"}, check=True)
    rounds = [json.loads(line)["round"] for line in (sweep / "search.jsonl").read_text().splitlines()]
    assert rounds == [1, 1, 2]  # round 1's trials were not trained again


@pytest.mark.slow
def test_a_command_refused_for_its_config_leaves_the_record_of_the_run_in_its_directory(tmp_path):
    """Hydra writes .hydra/ before the run checks its config: a command into a finished run's directory with a bad
    value, or a resume with a change it cannot take, used to leave that run's .hydra/config.yaml saying what the
    refused command asked. The refused command puts the run's record back, byte for byte."""
    run_dir = tmp_path / "run"
    small = ["data.subset=200", "trainer.epochs=1", "dashboard.histograms=false"]
    run_cli(*small, f"hydra.run.dir={run_dir}", cwd=tmp_path, check=True)
    record = {p.name: p.read_bytes() for p in (run_dir / ".hydra").iterdir()}
    assert set(record) == {"config.yaml", "hydra.yaml", "overrides.yaml"}
    for refused in (["trainer.batch_size=0"], [f"trainer.resume={run_dir}", "trainer.epochs=2", "optimizer.lr=1e-2"]):
        done = run_cli(*small, *refused, f"hydra.run.dir={run_dir}", cwd=tmp_path)
        assert done.returncode == 1 and "Error in the config: " in done.stderr, done.stderr[-3000:]
        assert {p.name: p.read_bytes() for p in (run_dir / ".hydra").iterdir()} == record, refused
    assert read_metrics(run_dir)["status"] == "completed"


@pytest.mark.slow
def test_an_hparams_session_the_disk_cannot_take_stops_the_run_with_its_paragraph_and_metrics(tmp_path):
    """The disk refuses the HParams session's writes as the run ends (its file's first record passes, the next fail,
    as on a disk that fills then): tensorboard's writer thread dies of it and its close() does not say so. The run
    says so, naming that file, writes metrics.json (interrupted, every epoch measured), removes the part written,
    exits 1 without a traceback, and resumes to the end once there is room."""
    run_dir = tmp_path / "run"
    small = ["data.subset=200", "trainer.epochs=2", "dashboard.histograms=false"]
    full_disk_for_the_session = (
        "import errno, os, runpy, sys; from tensorboard.summary.writer import record_writer; "
        "write, seen = record_writer.RecordWriter.write, []\n"
        "def refuse(self, data):\n"
        "    if os.fsdecode(getattr(self._writer, 'filename', b'')).endswith('.hparams'):\n"
        "        seen.append(1)\n"
        "        if len(seen) > 1: raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))\n"
        "    return write(self, data)\n"
        "record_writer.RecordWriter.write = refuse; sys.argv = ['expt', *sys.argv[1:]]; "
        "runpy.run_module('expt', run_name='__main__', alter_sys=True)")
    proc = start_cli("-c", full_disk_for_the_session, *small, f"hydra.run.dir={run_dir}", program=None, cwd=tmp_path,
                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = finish(proc, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in output, output[-3000:]
    stopped = re.search(r"Error: (\S+\.hparams) could not be written \(No space left on device\), so the run stopped at "
                        r"epoch 2; \S+ holds epoch 2: once there is room, resume with trainer.resume=", output)
    assert stopped is not None, output[-3000:]
    assert not os.path.exists(stopped.group(1))
    metrics = read_metrics(run_dir)
    assert metrics["status"] == "interrupted" and metrics["epochs_completed"] == 2
    run_cli(*small, f"hydra.run.dir={run_dir}", f"trainer.resume={run_dir}", cwd=tmp_path, check=True)
    assert read_metrics(run_dir)["status"] == "completed" and list(run_dir.glob("*.hparams"))
