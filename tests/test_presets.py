"""model=resnet and the experiment presets: composed, built, checked and trained on files in the real formats."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from test_standard_datasets import write_cifar, write_mnist
from torch import nn

import expt
from expt import sanity
from expt.build import build
from expt.init import classifier, layers_with_gain, residual_branch_ends
from expt.models import ResidualBlock, ResNet

PRESETS = ("digits", "mnist_convnet", "fashion_mnist_convnet", "cifar10_resnet")


@pytest.mark.parametrize("depth,blocks", [(8, 3), (20, 9), (32, 15)])
def test_resnet_has_6n_plus_2_weight_layers_and_the_papers_size(depth, blocks):
    net = ResNet((3, 32, 32), 10, nn.ReLU, depth=depth)
    assert sum(isinstance(m, ResidualBlock) for m in net.modules()) == blocks
    convs_on_the_main_path = 1 + 2 * blocks
    assert convs_on_the_main_path + 1 == depth  # and the classifier
    if depth == 20:
        assert sum(p.numel() for p in net.parameters()) == pytest.approx(0.27e6, rel=0.02)  # He et al., table 6
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_resnet_blocks_tell_the_init_which_activation_follows_each_conv():
    """Every conv of a block (its second and the shortcut too, which feed the ReLU after the sum) gets k = 2."""
    net = ResNet((3, 32, 32), 10, nn.ReLU, depth=14)
    exp_gains = layers_with_gain(net)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert [layer for layer, _ in exp_gains][:-1] == convs or {id(l) for l, _ in exp_gains[:-1]} == {id(c) for c in convs}
    assert all(gain == pytest.approx(math.sqrt(2)) for _, gain in exp_gains[:-1])
    assert exp_gains[-1] == (classifier(net), 1.0)
    built = build(expt.compose(["model=resnet", "model.depth=14", "data=synthetic", "data.shape=[3,32,32]",
                                "data.num_samples=200", "regularization=none"])).model
    ends = {id(m) for m in residual_branch_ends(built)}  # each block's second conv: init.residual_scale, 1/sqrt(6)
    for module in built.modules():
        if isinstance(module, nn.Conv2d) and module.weight.numel() > 20000:
            fan_in = module.weight[0].numel()
            scale = 1 / math.sqrt(6) if id(module) in ends else 1.0
            assert float(module.weight.detach().std()) == pytest.approx(scale * math.sqrt(2 / fan_in), rel=0.05)


def test_resnet_starts_at_log_c_and_passes_the_gradient_and_overfit_checks(tmp_path: Path):
    cfg = expt.compose(["model=resnet", "model.depth=8", "regularization=[batchnorm]", "trainer.dtype=float64"])
    exp = build(cfg)
    x, y = sanity.sample(exp.data.x_train, exp.data.y_train, 500)
    assert sanity.loss_at_init(exp.model, x, y, 10, tolerance=0.02).passed
    check = sanity.gradient_check(exp.model, x[:3], y[:3], entries=3)
    assert check.passed, check.details["tensors"]
    # with the solver ResNets are trained with (the cifar10_resnet preset's); Adam at 1e-3 needs about 40 epochs
    solver = ["optimizer=nesterov", "optimizer.lr=0.1"]
    overfit = sanity.overfit_small_set(expt.compose(["model=resnet", "model.depth=8", *solver]), tmp_path,
                                       samples=100, epochs=30, batch_size=50)
    assert overfit.passed, overfit.summary


def test_bad_resnet_depth_names_the_rule():
    with pytest.raises(expt.ConfigError, match=r"model\.depth=21 is not allowed: 6n \+ 2"):
        build(expt.compose(["model=resnet", "model.depth=21"]))


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_composes_and_validates(preset):
    from expt.config import validate

    cfg = expt.compose([f"experiment={preset}"])
    validate(cfg)
    assert cfg.trainer.epochs >= 10


def test_the_digits_preset_differs_from_the_default_only_where_it_says():
    preset, default = expt.compose(["experiment=digits"]), expt.compose([])
    assert (preset.model.hidden_dim, preset.trainer.epochs) == (256, 30)
    assert preset.schedule._target_.endswith("CosineAnnealingLR") and preset.schedule.T_max == 30
    assert preset.data == default.data and preset.init == default.init


@pytest.mark.slow
@pytest.mark.parametrize("preset,writer", [("cifar10_resnet", write_cifar), ("mnist_convnet", write_mnist)])
def test_the_standard_dataset_presets_train_on_files_in_the_real_format(tmp_path: Path, preset, writer):
    """The preset's whole path (loader, augmentation, model, optimizer, schedule) on a few real-format images."""
    root = tmp_path / "data"
    if writer is write_cifar:
        writer(root, sizes=(12, 12, 12, 12, 12, 20))
    else:
        writer(root)
    overrides = [f"experiment={preset}", f"data.root={root}", "data.download=false", "data.val_size=8",
                 "trainer.epochs=2", "trainer.batch_size=16", "sanity.before_train=false"]
    if preset == "cifar10_resnet":
        overrides.append("model.depth=8")
    metrics = expt.train(expt.compose(overrides), run_dir=tmp_path / "run")
    assert metrics["status"] == "completed" and metrics["epochs_completed"] == 2
    assert 0 <= metrics["test_acc"] <= 1 and math.isfinite(metrics["test_loss"])
