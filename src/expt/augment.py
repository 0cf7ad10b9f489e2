"""Data augmentation on whole training batches, on the device: plain functions of (batch, generator).

Each augmentation is a small class whose ``__call__(x, generator)`` takes a batch of images
(N, C, H, W) and returns a batch of the same shape, drawing every random number from the
run's augmentation generator (seeded from ``trainer.seed`` and saved in ``last.pt``), so a run
repeats exactly and a resumed run continues exactly. There is no per-image Python loop: the
random choices for the whole batch are drawn at once and applied with indexing and masks.

The trainer applies them, in the order the ``augmentation`` list gives, to training batches
only: never to validation, test, the training-accuracy subsample or the sanity checks.

Augmentations act on the preprocessed images. That is the same as augmenting the raw images
and then preprocessing them whenever the preprocessing treats every pixel of a channel alike
(``none``, ``per_channel_mean``, ``per_channel_standardize``): a shift or a flip then commutes
with it, and a reflected border or an erased square (set to 0, the channel's mean) is what it
would have been. ``mean_image`` and ``pca_whiten`` do not commute with moving pixels (the
subtracted image would move with them), so :func:`check_preprocessing` refuses the combination.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from expt.errors import ConfigError, not_allowed
from expt.instantiate import instantiate
from expt.values import is_integer, is_number

log = logging.getLogger("expt")

Augmentation = Callable[[torch.Tensor, torch.Generator], torch.Tensor]

# Preprocessing that treats every pixel of a channel alike, so that moving pixels commutes with it.
PER_CHANNEL = ("expt.preprocess.Identity", "expt.preprocess.PerChannelMean", "expt.preprocess.PerChannelStandardize")


def _uniform(n: int, like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(n, device=like.device, generator=generator)


def _integers(high: int, n: int, like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``n`` integers in [0, high), drawn on the batch's device."""
    return torch.randint(high, (n,), device=like.device, generator=generator)


class Translate:
    """Shift each image by up to ``pad`` pixels in x and y: pad (reflect, replicate or zeros), crop back at random."""

    MODES = ("reflect", "replicate", "zeros")

    def __init__(self, pad: int = 1, mode: str = "reflect"):
        if not (is_integer(pad) and pad >= 1):
            raise not_allowed("augmentation.translate.pad", pad, "an integer >= 1 (pixels)")
        if mode not in self.MODES:
            raise not_allowed("augmentation.translate.mode", mode, f"one of {', '.join(self.MODES)}")
        self.pad, self.mode = pad, mode

    def check(self, h: int, w: int, key: str) -> None:
        """Refuse a shift as large as the image: reflect padding cannot, the others would shift it out of view."""
        if self.pad >= min(h, w):
            raise ConfigError(
                f"{key}.pad={self.pad} is not allowed with {h}x{w} images: at most {min(h, w) - 1} pixels "
                "(a shift by the image's size moves it out of view; reflect padding cannot pad that much)."
            )

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, _, h, w = x.shape
        p = self.pad
        self.check(h, w, "augmentation.translate")
        padded = F.pad(x, (p, p, p, p), mode="constant" if self.mode == "zeros" else self.mode)
        dy = _integers(2 * p + 1, n, x, generator)
        dx = _integers(2 * p + 1, n, x, generator)
        rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # N, 1, H, 1
        cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # N, 1, 1, W
        batch = torch.arange(n, device=x.device)[:, None, None, None]
        channel = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
        return padded[batch, channel, rows, cols]


class HorizontalFlip:
    """Mirror each image left-right with probability ``p``. Not for digits or text, where a flip changes the class."""

    def __init__(self, p: float = 0.5):
        if not (is_number(p) and 0 <= p <= 1):
            raise not_allowed("augmentation.hflip.p", p, "a probability in [0, 1]")
        self.p = float(p)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        flip = _uniform(len(x), x, generator) < self.p
        return torch.where(flip[:, None, None, None], x.flip(3), x)


class Cutout:
    """Erase one random ``size`` x ``size`` square of each image (DeVries and Taylor, 2017) to 0, the mean.

    The square's centre is uniform over the image, so near a border part of it falls outside.
    """

    def __init__(self, size: int = 4):
        if not (is_integer(size) and size >= 1):
            raise not_allowed("augmentation.cutout.size", size, "an integer >= 1 (pixels)")
        self.size = size

    def check(self, h: int, w: int, key: str) -> None:
        """Refuse a square as large as the image: centred anywhere, it would erase most or all of every image."""
        if self.size >= min(h, w):
            raise ConfigError(
                f"{key}.size={self.size} is not allowed with {h}x{w} images: the square must be smaller than the "
                f"images, at most {min(h, w) - 1} pixels (one as large erases most of every image, and all of it "
                "when centred; DeVries and Taylor erase half the side, 16 of 32)."
            )

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, _, h, w = x.shape
        cy = _integers(h, n, x, generator)[:, None]
        cx = _integers(w, n, x, generator)[:, None]
        low = self.size // 2
        ys, xs = torch.arange(h, device=x.device)[None, :], torch.arange(w, device=x.device)[None, :]
        in_rows = (ys >= cy - low) & (ys < cy - low + self.size)  # N, H
        in_cols = (xs >= cx - low) & (xs < cx - low + self.size)  # N, W
        erase = in_rows[:, None, :, None] & in_cols[:, None, None, :]
        return x.masked_fill(erase, 0.0)


def build(cfg: Any) -> list[Augmentation]:
    """The augmentations the ``augmentation`` group lists, in order (none for ``augmentation=none``)."""
    return [instantiate(node, f"augmentation.{name}") for name, node in (cfg or {}).items()]


# Data options whose classes a mirror image changes (a mirrored 2, 3, 4, 5, 7 or 9 is not that digit).
NOT_FLIP_INVARIANT = ("digits", "mnist")


def check(cfg: Any, augmentations: Sequence[Augmentation], input_shape: Sequence[int]) -> None:
    """Before training: refuse what cannot work on these images, warn about what works against the data.

    Refused (ConfigError): augmentation with preprocessing it does not commute with, inputs that are
    not images, a translate pad or cutout square as large as the image. Warned, once and loudly:
    horizontal flips on handwritten digits (data=digits, data=mnist), where a mirror changes the class;
    the run trains anyway, since measuring what that costs is a legitimate experiment.
    """
    names = list(cfg.get("augmentation") or {})
    check_preprocessing(names, cfg.preprocessing._target_, len(input_shape))
    if not names:
        return
    _, h, w = input_shape
    for name, augmentation in zip(names, augmentations):
        if hasattr(augmentation, "check"):
            augmentation.check(h, w, f"augmentation.{name}")
        data = cfg.data.get("name")
        if isinstance(augmentation, HorizontalFlip) and augmentation.p > 0 and data in NOT_FLIP_INVARIANT:
            log.warning(
                "augmentation.%s flips %d%% of the training images left-right, but data=%s holds handwritten digits, "
                "which a mirror changes (a mirrored 2, 3, 4, 5, 7 or 9 is not that digit): expect lower accuracy. "
                "Training anyway; leave %s out of the augmentation list unless that is what you measure.",
                name, round(100 * augmentation.p), data, name,
            )


def check_preprocessing(names: Sequence[str], preprocessing_target: str, input_rank: int) -> None:
    """Refuse augmentations that move pixels with a preprocessing they do not commute with, or non-images."""
    if not names:
        return
    listed = ",".join(names)
    if input_rank != 3:
        raise ConfigError(f"augmentation=[{listed}] needs images (C, H, W); these inputs have {input_rank} dimensions.")
    if preprocessing_target not in PER_CHANNEL:
        raise ConfigError(
            f"augmentation=[{listed}] is not allowed with preprocessing={preprocessing_target}: it subtracts or "
            "rotates per pixel, so a shifted, flipped or erased image would be preprocessed with the statistics of "
            "other pixels. Use preprocessing=per_channel_standardize (the default), per_channel_mean or none, "
            "or augmentation=none."
        )
