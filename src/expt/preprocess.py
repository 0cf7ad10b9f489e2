"""Preprocessing fitted on the training split only, then applied to every split.

Each transform is an ``nn.Module`` whose fitted statistics are buffers: they move with
``.to(device)`` and are saved in the checkpoint's state_dict, so a reloaded model
preprocesses exactly as the run did. ``fit`` sees only training images; val and test
never influence the statistics (computing them over val too is a classic leak).
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn

from expt.errors import ConfigError


class Preprocessor(nn.Module):
    """Base class: ``fit(x_train)`` once, then ``forward(x)`` on any split.

    Every preprocessor also keeps ``pixel_range``, the lowest and highest training pixel before
    preprocessing, so that a loaded model can refuse images on another scale: ``fit`` records it,
    in a subclass too (each subclass's own ``fit`` is wrapped to do so, so that subclasses, yours
    included, only fit their statistics). It is empty in checkpoints written before it existed.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("pixel_range", torch.zeros(0))

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("fit")
        if own is None:
            return

        @functools.wraps(own)
        def fit(self: "Preprocessor", x: torch.Tensor, *args: Any, **kw: Any) -> Any:
            out = own(self, x, *args, **kw)
            self.fit_range(x)
            return out

        cls.fit = fit  # type: ignore[method-assign]

    def fit(self, x: torch.Tensor) -> "Preprocessor":
        return self.fit_range(x)

    def fit_range(self, x: torch.Tensor) -> "Preprocessor":
        """Record the lowest and highest pixel of the training images ``x``."""
        if len(x):
            self.pixel_range = torch.stack([x.min(), x.max()]).detach()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def load_fitted(self, state: dict[str, torch.Tensor]) -> "Preprocessor":
        """Restore fitted statistics from a checkpoint (their shapes are unknown before fitting)."""
        for name, value in state.items():
            setattr(self, name, value)
        return self


class Identity(Preprocessor):
    """Pixels stay as loaded, scaled to [0, 1]."""


class MeanImage(Preprocessor):
    """Subtract the training split's mean image: one value per pixel and channel (AlexNet)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(0))

    def fit(self, x: torch.Tensor) -> "MeanImage":
        self.mean = x.double().mean(dim=0).to(x.dtype)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.mean


class PerChannelMean(Preprocessor):
    """Subtract the training split's per-channel mean: C numbers (VGG)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(0))

    def fit(self, x: torch.Tensor) -> "PerChannelMean":
        self.mean = x.double().mean(dim=(0, 2, 3), keepdim=True)[0].to(x.dtype)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.mean


class PerChannelStandardize(Preprocessor):
    """Subtract the per-channel mean and divide by the per-channel std of the training split."""

    def __init__(self, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("mean", torch.zeros(0))
        self.register_buffer("std", torch.ones(0))

    def fit(self, x: torch.Tensor) -> "PerChannelStandardize":
        xd = x.double()
        self.mean = xd.mean(dim=(0, 2, 3), keepdim=True)[0].to(x.dtype)
        self.std = xd.std(dim=(0, 2, 3), keepdim=True)[0].to(x.dtype)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / (self.std + self.eps)


class PCAWhiten(Preprocessor):
    """PCA whitening of the flattened image: x -> U^T (x - mean) / sqrt(eigenvalue + epsilon).

    The output is reshaped back to the image's shape so every model accepts it; its
    covariance over the training split is the identity (up to epsilon).
    """

    def __init__(self, epsilon: float = 1e-5) -> None:
        super().__init__()
        if not epsilon >= 0:
            raise ConfigError(f"preprocessing.epsilon={epsilon} is not allowed: a number >= 0.")
        self.epsilon = epsilon
        self.register_buffer("mean", torch.zeros(0))
        self.register_buffer("projection", torch.zeros(0))

    def fit(self, x: torch.Tensor) -> "PCAWhiten":
        flat = x.reshape(len(x), -1).double()
        mean = flat.mean(dim=0)
        centred = flat - mean
        cov = centred.T @ centred / max(1, len(flat) - 1)
        eigenvalues, eigenvectors = torch.linalg.eigh(cov)
        self.mean = mean.to(x.dtype)
        self.projection = (eigenvectors / torch.sqrt(eigenvalues.clamp(min=0) + self.epsilon)).to(x.dtype)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((x.reshape(len(x), -1) - self.mean) @ self.projection).reshape(x.shape)
