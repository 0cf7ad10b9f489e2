"""The recipe's models, built from the data's shape and the activation / regularization groups.

Every model is an ``nn.Sequential`` whose layers appear in the order data flows through
them, so :mod:`expt.init` can see which activation follows each weight layer. A model
option in ``conf/model/`` names one of these classes (or your own) with ``_target_``;
the trainer passes ``input_shape``, ``num_classes``, ``activation`` (a factory returning
a new activation module), ``dropout`` and ``batchnorm``.
"""

from __future__ import annotations

import math
import numbers
from typing import Callable, Sequence

from torch import nn

from expt.errors import ConfigError

Activation = Callable[[], nn.Module]


def _hidden(layer: nn.Module, width: int, activation: Activation, dropout: float, batchnorm: bool, conv: bool):
    """layer -> [batch norm] -> activation -> [dropout]: one hidden block, batch norm before the activation."""
    block = [layer]
    if batchnorm:
        block.append(nn.BatchNorm2d(width) if conv else nn.BatchNorm1d(width))
    block.append(activation())
    if dropout > 0:
        block.append(nn.Dropout(dropout))  # inverted dropout, p = drop probability
    return block


def _check_filter(filter_size: int, input_shape: Sequence[int], key: str) -> None:
    h, w = input_shape[1:]
    if not 1 <= filter_size <= min(h, w):
        raise ConfigError(
            f"{key}={filter_size} is not allowed: a filter size from 1 to {min(h, w)} "
            f"(the images are {h}x{w})."
        )


class MLP(nn.Sequential):
    """Flatten, then (linear - activation) per hidden size, then a linear classifier."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        activation: Activation,
        hidden_sizes: Sequence[int] = (256, 128),
        dropout: float = 0.0,
        batchnorm: bool = False,
    ):
        if any(int(h) < 1 for h in hidden_sizes):
            raise ConfigError(f"model.hidden_sizes={list(hidden_sizes)} is not allowed: sizes >= 1.")
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for size in hidden_sizes:
            layers += _hidden(nn.Linear(width, size), size, activation, dropout, batchnorm, conv=False)
            width = size
        layers.append(nn.Linear(width, num_classes))
        super().__init__(*layers)


class ConvNet(nn.Sequential):
    """The recipe's three-layer ConvNet: conv - activation - 2x2 max pool - linear - activation - linear."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        activation: Activation,
        num_filters: int = 32,
        filter_size: int = 3,
        hidden_dim: int = 100,
        dropout: float = 0.0,
        batchnorm: bool = False,
    ):
        _check_filter(filter_size, input_shape, "model.filter_size")
        if num_filters < 1 or hidden_dim < 1:
            raise ConfigError(
                f"model.num_filters={num_filters}, model.hidden_dim={hidden_dim}: both must be >= 1."
            )
        c, h, w = input_shape
        if min(h, w) < 2:
            raise ConfigError(f"model=convnet needs images of at least 2x2 for its 2x2 max pool; these are {h}x{w}.")
        conv = nn.Conv2d(c, num_filters, filter_size, padding="same")
        layers = _hidden(conv, num_filters, activation, dropout, batchnorm, conv=True)
        layers += [nn.MaxPool2d(2), nn.Flatten()]
        flat = num_filters * (h // 2) * (w // 2)
        layers += _hidden(nn.Linear(flat, hidden_dim), hidden_dim, activation, dropout, batchnorm, conv=False)
        layers.append(nn.Linear(hidden_dim, num_classes))
        super().__init__(*layers)


class DeepConvNet(nn.Sequential):
    """VGG-style: (conv - activation) per filter count, 2x2 max pools after ``pool_after``, a linear classifier."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        activation: Activation,
        filters: Sequence[int] = (32, 32, 64, 64),
        pool_after: Sequence[int] = (1, 3),
        filter_size: int = 3,
        dropout: float = 0.0,
        batchnorm: bool = False,
    ):
        _check_filter(filter_size, input_shape, "model.filter_size")
        counts = filters if isinstance(filters, (list, tuple)) else [filters]
        if not filters or not isinstance(filters, (list, tuple)) or any(
            isinstance(f, bool) or not isinstance(f, numbers.Integral) or f < 1 for f in counts
        ):
            raise ConfigError(
                f"model.filters={filters!r} is not allowed: a non-empty list of filter counts, "
                "integers >= 1 (one conv layer each), such as [32, 32, 64, 64]."
            )
        bad = [p for p in pool_after if not 0 <= p < len(filters)]
        if bad:
            raise ConfigError(
                f"model.pool_after={list(pool_after)} is not allowed with {len(filters)} conv layers: "
                f"positions from 0 to {len(filters) - 1}."
            )
        c, h, w = input_shape
        if min(h, w) < 2 ** len(set(pool_after)):
            raise ConfigError(
                f"model.pool_after={list(pool_after)} halves {h}x{w} images {len(set(pool_after))} times: "
                "too many pools for this image size."
            )
        layers: list[nn.Module] = []
        for i, f in enumerate(filters):
            layers += _hidden(nn.Conv2d(c, f, filter_size, padding="same"), f, activation, dropout, batchnorm, True)
            c = f
            if i in pool_after:
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
        layers += [nn.Flatten(), nn.Linear(c * h * w, num_classes)]
        super().__init__(*layers)
