"""trainer.ema: the averaged weights follow the warmed-up EMA formula, are evaluated beside the trained
ones, can become the best model, and resume exactly."""

from __future__ import annotations

import pytest
import torch
from conftest import numbers
from torch import nn

import expt
from expt import averaging, checkpoint
from expt.build import build
from expt.predict import loss_and_accuracy


def test_the_average_follows_the_warmed_up_decay_formula():
    model = nn.Linear(3, 2)
    averaged = averaging.ema(model, decay=0.9)
    expected = model.weight.detach().clone()
    averaging.update(averaged, model)  # the first update copies the weights
    for t in range(6):
        with torch.no_grad():
            model.weight.add_(torch.randn_like(model.weight))
        averaging.update(averaged, model)
        decay = min(0.9, (1 + t) / (10 + t))
        expected = decay * expected + (1 - decay) * model.weight.detach()
        assert torch.allclose(averaged.module.weight, expected, atol=1e-6)
    assert int(averaged.n_averaged) == 7
    assert averaging.WarmedUpEMA(0.999, updates=301).current_decay() == pytest.approx(301 / 310)


def test_batch_norm_statistics_take_one_decay_step_per_update():
    """Weights and float buffers move by the same decay each update (one count per step, whatever the dtypes)."""
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    averaged = averaging.ema(model, decay=0.99)
    averaging.update(averaged, model)
    for t in range(4):
        with torch.no_grad():
            model[0].weight.add_(1.0)
            model[1].running_mean.add_(1.0)
            model[1].num_batches_tracked.add_(1)
        before_w = averaged.module[0].weight.detach().clone()
        before_m = averaged.module[1].running_mean.detach().clone()
        averaging.update(averaged, model)
        d = min(0.99, (1 + t) / (10 + t))
        assert torch.allclose(averaged.module[0].weight, d * before_w + (1 - d) * model[0].weight, atol=1e-6)
        assert torch.allclose(averaged.module[1].running_mean, d * before_m + (1 - d) * model[1].running_mean,
                              atol=1e-6)
    assert int(averaged.module[1].num_batches_tracked) == 4


def test_ema_leaves_training_unchanged_and_is_measured_every_epoch(tmp_path):
    common = ["data.subset=300", "trainer.epochs=3", "augmentation=none"]
    plain = expt.train(expt.compose(common), run_dir=tmp_path / "plain")
    with_ema = expt.train(expt.compose([*common, "trainer.ema=0.9"]), run_dir=tmp_path / "ema")
    raw = [{k: v for k, v in row.items() if not k.startswith("ema_")} for row in numbers(with_ema)]
    assert raw == numbers(plain)
    assert all(0 < row["ema_val_acc"] <= 1 and row["ema_val_loss"] > 0 for row in with_ema["history"])
    assert all("ema_val_acc" not in row for row in plain["history"])


def test_the_best_model_is_chosen_among_trained_and_averaged_weights(tmp_path):
    cfg = expt.compose(["data.subset=300", "trainer.epochs=4", "trainer.ema=0.9", "trainer.checkpoint_interval=0"])
    metrics = expt.train(cfg, run_dir=tmp_path)
    best_of_both = max(max(r["val_acc"], r["ema_val_acc"]) for r in metrics["history"])
    assert metrics["best_val_acc"] == best_of_both
    best = checkpoint.load(tmp_path / "checkpoints" / checkpoint.BEST)
    row = metrics["history"][best["best_epoch"] - 1]
    assert best["averaged"] == metrics["best_averaged"] == (row["ema_val_acc"] > row["val_acc"])
    exp = build(cfg)
    exp.model.load_state_dict(best["model"])
    assert loss_and_accuracy(exp.model, exp.data.x_val, exp.data.y_val)[1] == metrics["best_val_acc"]
    assert loss_and_accuracy(exp.model, exp.data.x_test, exp.data.y_test) == pytest.approx(
        (metrics["test_loss"], metrics["test_acc"]), rel=1e-6)


def test_a_resumed_run_continues_the_average_exactly(tmp_path):
    common = ["data.subset=300", "trainer.ema=0.95", "regularization=[l2,dropout]"]
    expt.train(expt.compose(["trainer.epochs=2", *common]), run_dir=tmp_path / "short")
    longer = expt.train(expt.compose(["trainer.epochs=4", *common, f"trainer.resume={tmp_path / 'short'}"]),
                        run_dir=tmp_path / "longer")
    straight = expt.train(expt.compose(["trainer.epochs=4", *common]), run_dir=tmp_path / "straight")
    for a, b in zip(numbers(straight), numbers(longer), strict=True):
        assert b == pytest.approx(a, rel=1e-6, abs=1e-9)


def test_ema_with_batch_norm_averages_its_statistics(tmp_path):
    metrics = expt.train(expt.compose(["data.subset=300", "trainer.epochs=3", "trainer.ema=0.9",
                                       "regularization=[batchnorm]", "trainer.checkpoint_interval=0"]),
                         run_dir=tmp_path)
    assert metrics["history"][-1]["ema_val_acc"] > 0.2  # well above chance (0.1) with averaged statistics
    state = checkpoint.load(tmp_path / "checkpoints" / checkpoint.LAST)
    averaged_mean, trained_mean = state["ema"]["module.1.running_mean"], state["model"]["1.running_mean"]
    assert averaged_mean.shape == trained_mean.shape and not torch.equal(averaged_mean, trained_mean)


def test_bad_ema_decay_is_a_clear_error():
    from expt.config import ConfigError, validate

    with pytest.raises(ConfigError, match=r"trainer\.ema=1\.5 is not allowed: a decay in \[0, 1\)"):
        validate(expt.compose(["trainer.ema=1.5"]))
