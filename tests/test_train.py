"""End-to-end runs through real Hydra composition: the CLI, the run directory, metrics and events."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
from conftest import numbers, read_metrics, run_cli
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import expt
from expt import checkpoint
from expt.status import METRICS_KEYS



def scalars(run_dir) -> dict[str, list]:
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: acc.Scalars(tag) for tag in acc.Tags()["scalars"]}


@pytest.mark.slow
def test_default_run_reaches_97_percent_and_writes_its_run_dir(tmp_path):
    """`python -m expt` with no overrides: the default convnet on digits, >= 97% validation accuracy."""
    run_dir = tmp_path / "run"
    proc = run_cli(f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    metrics = read_metrics(run_dir)
    assert set(metrics) == set(METRICS_KEYS)  # the keys status.py documents, each of them
    assert metrics["status"] == "completed"
    assert metrics["best_val_acc"] >= 0.97
    assert metrics["epochs_completed"] == 10
    assert 0 < metrics["test_acc"] <= 1
    # progress: one line per epoch with loss, train and val accuracy, lr and time
    epoch_lines = [line for line in proc.stdout.splitlines() if " epoch " in line and "/10" in line]
    assert len(epoch_lines) == 10 and all("val" in line and "lr" in line for line in epoch_lines)
    assert "tensorboard --logdir" in proc.stdout
    # the loss the run starts from says what it is: the data loss the guard judged, and the penalty
    judged = re.search(r"Sanity check: initial loss (2\.\d+),", proc.stdout)
    assert judged is not None, proc.stdout
    assert re.search(r"Initial training loss 2\.3\d+ \(log C = 2\.3026\): the data loss " + re.escape(judged[1]) +
                     r" \+ penalty 0\.\d+ on the 1000 "
                     r"training samples training accuracy is measured on; a training loss above 3x it stops the run "
                     r"as diverged", proc.stdout), proc.stdout
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    last = torch.load(run_dir / "checkpoints" / checkpoint.LAST, weights_only=True)
    assert {"model", "optimizer", "rng", "history"} <= last.keys() and last["epoch"] == 10
    assert "scheduler" not in last  # the learning rate is a function of the step (expt.schedule.LearningRate)
    best = torch.load(run_dir / "checkpoints" / checkpoint.BEST, weights_only=True)
    assert {"model", "preprocess", "config"} <= best.keys() and best["epoch"] == metrics["best_epoch"]


def test_event_file_tags_and_step_counts(tmp_path, compose):
    cfg = compose("trainer.epochs=3", "trainer.batch_size=100", "data.subset=500")
    metrics = expt.train(cfg, run_dir=tmp_path)
    events = scalars(tmp_path)
    assert {"loss/train", "loss/val", "accuracy/train", "accuracy/val", "lr"} <= events.keys()
    steps_per_epoch = 5  # 500 samples / batch 100
    assert [e.step for e in events["loss/train"]] == list(range(1, 3 * steps_per_epoch + 1))
    for tag in ("loss/val", "accuracy/train", "accuracy/val", "lr"):
        assert [e.step for e in events[tag]] == [1, 2, 3]
    assert [e.value for e in events["accuracy/val"]] == pytest.approx([h["val_acc"] for h in metrics["history"]])
    assert metrics["final_train_loss"] == pytest.approx(
        sum(e.value for e in events["loss/train"][-steps_per_epoch:]) / steps_per_epoch, rel=1e-5
    )


def test_task_function_returns_the_validation_metric(tmp_path, monkeypatch):
    """The value Hydra's sweepers read is the best validation accuracy of the run."""
    from expt.__main__ import run

    monkeypatch.chdir(tmp_path)  # outside a Hydra job the run goes to ./outputs/<date>/<time>
    value = run(expt.compose(["trainer.epochs=2", "data.subset=300"]))
    (metrics_file,) = tmp_path.glob("outputs/*/*/metrics.json")
    metrics = json.loads(metrics_file.read_text())
    assert value == metrics["objective"] == metrics["best_val_acc"]
    assert 0.5 < value <= 1


@pytest.mark.parametrize(
    "overrides",
    [
        ["model=mlp", "data=synthetic", "trainer.epochs=3", "trainer.batch_size=128"],
        ["model=convnet", "data=synthetic", "data.shape=[3,12,12]", "trainer.epochs=2"],
        ["model=deep_convnet", "data=synthetic", "data.shape=[3,16,16]", "data.num_samples=600", "trainer.epochs=2"],
        ["model=deep_convnet", "trainer.epochs=2", "model.filters=[8,16]", "model.pool_after=[0]"],
        ["model=mlp", "trainer.epochs=2", "trainer.dtype=float64"],
    ],
)
def test_model_and_data_combinations_train(tmp_path, compose, overrides):
    metrics = expt.train(compose(*overrides), run_dir=tmp_path)
    assert metrics["status"] == "completed"
    chance = 1 / 10
    assert metrics["best_val_acc"] > 2 * chance  # every combination learns something in 2-3 epochs


def test_cli_prints_the_composed_config(tmp_path):
    proc = run_cli("--cfg", "job", "model=mlp", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "_target_: expt.models.MLP" in proc.stdout and "trainer:" in proc.stdout


def test_same_config_gives_the_same_numbers_on_cpu(tmp_path, compose):
    cfg = compose("trainer.epochs=2", "data.subset=300", "regularization=[l2,dropout]")
    a = expt.train(cfg, run_dir=tmp_path / "a")
    b = expt.train(cfg, run_dir=tmp_path / "b")

    assert numbers(a) == numbers(b)
    assert a["test_acc"] == b["test_acc"]


def test_epochs_zero_evaluates_and_saves_the_initial_model(tmp_path, compose):
    metrics = expt.train(compose("trainer.epochs=0", "regularization=none"), run_dir=tmp_path)
    assert metrics["epochs_completed"] == 0 and metrics["best_epoch"] == 0
    assert metrics["initial_loss"] == pytest.approx(math.log(10), rel=0.5)
    assert 0 <= metrics["best_val_acc"] <= 1 and metrics["test_acc"] is not None
    state = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert state["epoch"] == 0


def test_divergence_stops_the_run_and_returns_the_worst_metric(tmp_path, compose):
    cfg = compose("optimizer=sgd", "optimizer.lr=1e3", "trainer.epochs=5", "data.subset=400")
    metrics = expt.train(cfg, run_dir=tmp_path)
    assert metrics["status"] == "diverged"
    assert metrics["objective"] == 0.0
    assert metrics["epochs_completed"] < 5
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "diverged"


def test_metrics_json_is_strict_json_when_a_number_is_not_finite(tmp_path, compose, monkeypatch):
    """A run stopped while its loss at init is measured has no initial loss and no seconds (NaN in memory):
    metrics.json says null, which jq and JavaScript read, where NaN is not JSON."""
    from expt.trainer.record import RunRecord

    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(RunRecord, "losses", interrupted)
    with pytest.raises(KeyboardInterrupt):
        expt.train(compose("data.subset=100", "trainer.epochs=2"), run_dir=tmp_path)

    def refuse(constant: str) -> None:
        raise AssertionError(f"metrics.json holds {constant}, which is not JSON")

    saved = json.loads((tmp_path / "metrics.json").read_text(), parse_constant=refuse)
    assert saved["status"] == "interrupted" and saved["initial_loss"] is None and saved["epochs_completed"] == 0


def test_splits_are_deterministic_and_disjoint(compose):
    from expt.data import load

    a = load(compose().data)
    b = load(compose().data)
    assert torch.equal(a.x_val, b.x_val) and torch.equal(a.y_test, b.y_test)
    assert (len(a.x_train), len(a.x_val), len(a.x_test)) == (1150, 288, 359)
    c = load(compose("data.split_seed=1").data)
    assert not torch.equal(a.x_val, c.x_val)
    rows = {tuple(x.flatten().tolist()) for x in torch.cat([a.x_train, a.x_val, a.x_test])}
    assert len(rows) > 1700  # no sample duplicated across splits (digits has a handful of exact twins)
    sub = load(compose("data.subset=100").data)
    assert torch.equal(sub.x_train, a.x_train[:100]) and torch.equal(sub.x_val, a.x_val)


def test_digits_match_scikit_learn():
    from sklearn.datasets import load_digits

    from expt.data import digits

    ours = digits()
    ref = load_digits()
    assert ours["x_train"].shape == (1797, 1, 8, 8)
    assert (ours["x_train"].reshape(1797, 64) * 16 == ref.data).all()
    assert (ours["y_train"] == ref.target).all()


def test_npz_data(tmp_path, compose):
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(300, 10, 10), dtype=np.uint8)
    y = (x.reshape(300, -1).mean(axis=1) > 127.5).astype(np.int64)
    np.savez(tmp_path / "d.npz", x_train=x[:200], y_train=y[:200], x_test=x[200:], y_test=y[200:])
    cfg = compose("data=npz", f"data.path={tmp_path / 'd.npz'}", "model=mlp", "trainer.epochs=1")
    from expt.data import load

    splits = load(cfg.data)
    assert splits.input_shape == (1, 10, 10) and splits.num_classes == 2
    assert len(splits.x_test) == 100 and float(splits.x_train.max()) <= 1.0
    assert expt.train(cfg, run_dir=tmp_path / "run")["status"] == "completed"


def test_standard_dataset_loader_through_the_config(tmp_path, compose):
    """data=mnist reads IDX files from data.root; tested on a tiny set written in the real format."""
    import gzip
    import struct

    import numpy as np

    rng = np.random.default_rng(0)

    def idx(path, array):
        header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
        with gzip.open(path, "wb") as f:
            f.write(header + array.astype(np.uint8).tobytes())

    for split, n in (("train", 120), ("t10k", 40)):
        labels = rng.integers(0, 10, n)
        images = np.zeros((n, 28, 28), np.uint8)
        for i, label in enumerate(labels):
            images[i, 2 * label: 2 * label + 4] = 255  # a learnable stripe per class
        idx(tmp_path / f"{split}-images-idx3-ubyte.gz", images)
        idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", labels)
    cfg = compose("data=mnist", f"data.root={tmp_path}", "data.download=false", "data.val_size=20", "model=mlp",
                  "trainer.epochs=5")
    metrics = expt.train(cfg, run_dir=tmp_path / "run")
    assert metrics["best_val_acc"] >= 0.9


def test_missing_dataset_is_a_clear_error(tmp_path):
    proc = run_cli(f"hydra.run.dir={tmp_path / 'run'}", "data=cifar10", f"data.root={tmp_path / 'nothing'}",
                   "data.download=false", cwd=tmp_path)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "cifar-10-python.tar.gz" in proc.stderr and str(tmp_path / "nothing") in proc.stderr


def test_cuda_request_without_cuda_is_a_clear_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = run_cli(f"hydra.run.dir={tmp_path}", "trainer.device=cuda", cwd=tmp_path)
    assert proc.returncode == 1 and "trainer.device" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_cuda(tmp_path, compose):
    cfg = compose("trainer.device=cuda", "trainer.epochs=2")
    metrics = expt.train(cfg, run_dir=tmp_path)
    assert metrics["status"] == "completed" and metrics["best_val_acc"] > 0.8


def test_batch_norm_with_batches_of_one_is_a_config_error(compose):
    from expt.build import build

    with pytest.raises(expt.ConfigError, match="trainer.batch_size=1"):
        build(compose("regularization=[batchnorm]", "trainer.batch_size=1"))


def test_a_last_batch_of_one_sample_is_dropped_with_batch_norm(tmp_path, compose):
    """129 samples in batches of 64 would leave a last batch of one: batch norm cannot train on it."""
    metrics = expt.train(compose("regularization=[batchnorm]", "data.subset=129", "trainer.epochs=1"),
                         run_dir=tmp_path)
    assert metrics["status"] == "completed"
    events = scalars(tmp_path)
    assert len(events["loss/train"]) == 2


def test_a_run_stepped_an_epoch_at_a_time_is_the_same_run(tmp_path, compose):
    """Trainer.fit is begin, train_epoch until done, end: driving those by hand (as the overhead benchmark
    does, or a notebook that inspects the model between epochs) gives the same numbers."""
    from expt.dashboard import Dashboard
    from expt.build import build
    from expt.trainer import Trainer

    cfg = compose("trainer.epochs=3", "data.subset=300", "regularization=[l2,dropout]", "schedule=cosine")
    whole = expt.train(cfg, run_dir=tmp_path / "whole")
    exp = build(cfg)
    dashboard = Dashboard(tmp_path / "stepped", cfg)
    trainer = Trainer.single(exp, tmp_path / "stepped", dashboard)
    trainer.begin()
    lrs = []
    for epoch in range(1, cfg.trainer.epochs + 1):
        lrs.append(exp.schedule.epoch_rate(epoch))
        assert not trainer.done and trainer.train_epoch()
    assert trainer.done
    [stepped] = trainer.end()
    dashboard.close()
    assert numbers(stepped) == numbers(whole)
    assert lrs == [row["lr"] for row in whole["history"]] and lrs[2] < lrs[1] < lrs[0]
    assert checkpoint.load(tmp_path / "stepped" / "checkpoints" / checkpoint.LAST)["epoch"] == 3


def test_checkpoints_get_the_permissions_of_any_new_file(tmp_path):
    """Written to a unique temporary file and renamed, checkpoints are still made as the umask says (0644 under
    022), as metrics.json is: a lab's shared results stay readable to the group."""
    import os
    import stat

    previous = os.umask(0o022)
    try:
        expt.train(expt.compose(["trainer.epochs=1", "data.subset=128", "trainer.checkpoint_interval=0"]),
                   run_dir=tmp_path / "run")
    finally:
        os.umask(previous)
    files = [tmp_path / "run" / "metrics.json", *(tmp_path / "run" / "checkpoints").iterdir()]
    assert {path.name for path in files} >= {"metrics.json", checkpoint.LAST, checkpoint.BEST}
    assert {oct(stat.S_IMODE(path.stat().st_mode)) for path in files} == {"0o644"}



def test_runs_started_from_python_without_a_run_dir_each_get_their_own(tmp_path, monkeypatch):
    """A loop over settings started runs within one second: they shared outputs/<date>/<time>, each replacing
    the one before it."""
    monkeypatch.chdir(tmp_path)
    quick = ["data.subset=100", "trainer.epochs=1", "dashboard.histograms=false", "dashboard.filters=false",
             "dashboard.graph=false"]
    for lr in (1e-3, 3e-3):
        expt.train(expt.compose([*quick, f"optimizer.lr={lr}"]))
    made = [expt.run.default_run_dir() for _ in range(3)]  # however the seconds fall, each is new
    assert len(set(made)) == 3 and all(path.is_dir() and not any(path.iterdir()) for path in made)
    runs = [p.parent for p in (tmp_path / "outputs").rglob("metrics.json")]
    rates = sorted(row["lr"] for run in runs for row in read_metrics(run)["history"] if row.get("epoch") == 1)
    assert rates == pytest.approx([1e-3, 3e-3])


def test_a_config_loaded_from_a_file_or_given_as_a_dict_trains_as_composed(tmp_path):
    """OmegaConf.load of a run's .hydra/config.yaml passed every check, then failed with AttributeError: 'dict'
    object has no attribute 'seed', leaving an events file and a lock behind; a dict failed the same way."""
    from omegaconf import OmegaConf

    cfg = expt.compose(["data.subset=100", "trainer.epochs=1", "dashboard.histograms=false"])
    OmegaConf.save(cfg, tmp_path / "config.yaml")
    composed = expt.train(cfg, run_dir=tmp_path / "composed")
    loaded = expt.train(OmegaConf.load(tmp_path / "config.yaml"), run_dir=tmp_path / "loaded")
    for key in ("train_loss", "val_acc", "val_loss"):  # the same run
        assert [row[key] for row in loaded["history"]] == [row[key] for row in composed["history"]], key
    older = OmegaConf.to_container(cfg)
    del older["trainer"]["snapshots"]  # a file an older expt wrote: the key takes its default
    assert expt.train(older, run_dir=tmp_path / "dict")["status"] == "completed"
    older["trainer"]["epochs"] = "abc"
    with pytest.raises(expt.ConfigError, match=r"^trainer.epochs='abc' is not allowed: Value 'abc' of type 'str' "
                                               r"could not be converted to Integer\.$"):
        expt.train(older, run_dir=tmp_path / "bad")
    with pytest.raises(expt.ConfigError, match=r"^the config is a list: expt trains a DictConfig"):
        expt.train([cfg], run_dir=tmp_path / "bad")
