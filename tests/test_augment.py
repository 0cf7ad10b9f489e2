"""Batch augmentations on the device: what each one does to real digits, seeded, training batches only."""

from __future__ import annotations

import pytest
import torch

import expt
from expt import augment
from expt.config import ConfigError
from expt.build import build
from expt.trainer import RunRecord


@pytest.fixture(scope="module")
def digits():
    exp = build(expt.compose(["augmentation=none", "preprocessing=none"]))
    return exp.data.x_train[:256]


def shifts_of(x: torch.Tensor, out: torch.Tensor, pad: int) -> list[tuple[int, int]]:
    """For each image, the (dy, dx) with |d| <= pad whose shift of the image's inside equals the output's."""
    found = []
    h, w = x.shape[2:]
    for a, b in zip(x, out):
        match = None
        for dy in range(-pad, pad + 1):
            for dx in range(-pad, pad + 1):
                rows, cols = slice(pad, h - pad), slice(pad, w - pad)
                src = a[:, pad + dy:h - pad + dy, pad + dx:w - pad + dx]
                if torch.equal(b[:, rows, cols], src):
                    match = (dy, dx)
                    break
            if match:
                break
        found.append(match)
    return found


def test_translate_shifts_every_image_by_at_most_pad_pixels_using_all_shifts(digits):
    out = augment.Translate(pad=1)(digits, torch.Generator().manual_seed(0))
    assert out.shape == digits.shape and out.dtype == digits.dtype
    shifts = shifts_of(digits, out, 1)
    assert all(s is not None for s in shifts)
    assert set(shifts) == {(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)}  # 256 images: all 9 appear


def test_translate_with_zeros_fills_the_uncovered_border_with_zeros():
    x = torch.ones(64, 1, 8, 8)
    out = augment.Translate(pad=2, mode="zeros")(x, torch.Generator().manual_seed(1))
    zeros = (out == 0).flatten(1).sum(1)
    assert zeros.max() > 0 and (out[:, :, 2:6, 2:6] == 1).all()  # the inside always survives a 2-pixel shift


def test_hflip_mirrors_about_half_the_images(digits):
    out = augment.HorizontalFlip(p=0.5)(digits, torch.Generator().manual_seed(0))
    flipped = torch.tensor([torch.equal(o, x.flip(2)) and not torch.equal(o, x) for o, x in zip(out, digits)])
    kept = torch.tensor([torch.equal(o, x) for o, x in zip(out, digits)])
    assert bool((flipped | kept).all()) and 90 < int(flipped.sum()) < 166
    assert torch.equal(augment.HorizontalFlip(p=0.0)(digits, torch.Generator()), digits)


def test_cutout_erases_one_square_of_at_most_size_squared_pixels():
    x = torch.ones(500, 3, 8, 8)
    out = augment.Cutout(size=4)(x, torch.Generator().manual_seed(0))
    erased = (out == 0).all(dim=1).flatten(1).sum(1)  # the same pixels in every channel
    assert erased.max() == 16 and erased.min() >= 4  # a 4x4 square, clipped at the border to at least 2x2
    assert bool(((out == 0) | (out == 1)).all())


def test_the_same_seed_gives_the_same_batch_and_another_seed_another(digits):
    t = augment.Translate(pad=1)
    a = t(digits, torch.Generator().manual_seed(3))
    b = t(digits, torch.Generator().manual_seed(3))
    c = t(digits, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("preprocessing", ["mean_image", "pca_whiten"])
def test_moving_pixels_is_refused_with_per_pixel_preprocessing(preprocessing):
    """Shifts do not commute with subtracting a mean image or whitening: refused, naming both groups."""
    with pytest.raises(ConfigError, match=r"augmentation=\[translate\] is not allowed with preprocessing=.*per_channel"):
        build(expt.compose([f"preprocessing={preprocessing}", "augmentation=[translate]"]))


@pytest.mark.parametrize("preprocessing", ["per_channel_standardize", "per_channel_mean", "none"])
def test_shifting_commutes_with_per_channel_preprocessing(preprocessing):
    """Preprocess-then-shift equals shift-then-preprocess (reflect padding included) for per-channel statistics."""
    exp = build(expt.compose([f"preprocessing={preprocessing}", "augmentation=none"]))
    raw = build(expt.compose(["preprocessing=none", "augmentation=none"])).data.x_train[:64]
    t = augment.Translate(pad=1)
    after = t(exp.preprocessor(raw), torch.Generator().manual_seed(0))
    before = exp.preprocessor(t(raw, torch.Generator().manual_seed(0)))
    assert torch.allclose(after, before, atol=1e-6)


def test_augmentation_touches_training_batches_only(tmp_path):
    """Validation, test and the training subsample are measured on the unaugmented images."""
    cfg = expt.compose(["augmentation=[translate,cutout]", "trainer.epochs=0", "data.subset=200"])
    plain = expt.compose(["augmentation=none", "trainer.epochs=0", "data.subset=200"])
    a, b = expt.train(cfg, run_dir=tmp_path / "a"), expt.train(plain, run_dir=tmp_path / "b")
    assert a["history"] == b["history"] and a["test_loss"] == b["test_loss"]
    exp = build(cfg)
    record = RunRecord(exp, tmp_path / "c", dashboard=None)
    x_before = exp.data.x_train.clone()
    exp.augmentations[0](exp.data.x_train[:8], record.augment_rng)
    assert torch.equal(exp.data.x_train, x_before)  # the augmentations return new tensors


def test_augmented_runs_repeat_exactly_and_differ_from_unaugmented(tmp_path):
    common = ["data.subset=300", "trainer.epochs=2"]
    a = expt.train(expt.compose([*common, "augmentation=[translate,cutout]"]), run_dir=tmp_path / "a")
    b = expt.train(expt.compose([*common, "augmentation=[translate,cutout]"]), run_dir=tmp_path / "b")
    c = expt.train(expt.compose([*common, "augmentation=none"]), run_dir=tmp_path / "c")
    strip = lambda m: [{k: v for k, v in r.items() if k != "seconds"} for r in m["history"]]  # noqa: E731
    assert strip(a) == strip(b) and strip(a) != strip(c)


@pytest.mark.parametrize("bad,message", [
    ("augmentation.translate.pad=0", r"augmentation\.translate\.pad=0 is not allowed: an integer >= 1"),
    ("augmentation.translate.mode=wrap", r"augmentation\.translate\.mode='wrap' is not allowed: one of reflect"),
    ("+augmentation.translate.size=3", r"augmentation\.translate\.size is not a setting of .*Translate.*pad, mode"),
])
def test_bad_augmentation_settings_name_the_key(bad, message):
    with pytest.raises(ConfigError, match=message):
        build(expt.compose(["augmentation=[translate]", bad]))


def test_an_augmentation_of_your_own_is_a_target_away(tmp_path):
    """Any callable (x, generator) -> x named by _target_ works: here torch's own negation, as a lambda-free class."""
    cfg = expt.compose(["augmentation=[translate]", "augmentation.translate._target_=tests_helpers.Negate",
                        "~augmentation.translate.pad", "~augmentation.translate.mode"])
    exp = build(cfg)
    x = torch.ones(2, 1, 8, 8)
    assert torch.equal(exp.augmentations[0](x, torch.Generator()), -x)
