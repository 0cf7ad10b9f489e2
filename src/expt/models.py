"""The recipe's models, built from the data's shape and the activation / regularization groups.

Every model is an ``nn.Sequential`` whose layers appear in the order data flows through
them, so :mod:`expt.init` can see which activation follows each weight layer. A model
option in ``conf/model/`` names one of these classes (or your own) with ``_target_``;
the trainer passes ``input_shape``, ``num_classes``, ``activation`` (a factory returning
a new activation module), ``dropout`` and ``batchnorm``.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

from torch import nn

from expt.errors import ConfigError, not_allowed
from expt.values import is_integer

Activation = Callable[[], nn.Module]


def _hidden(layer: nn.Module, width: int, activation: Activation, dropout: float, batchnorm: bool, conv: bool):
    """layer -> [batch norm] -> activation -> [dropout]: one hidden block, batch norm before the activation.

    A layer followed by batch norm is built without a bias: the normalization subtracts it again,
    and batch norm's own shift takes its place.
    """
    block = [layer]
    if batchnorm:
        block.append(nn.BatchNorm2d(width) if conv else nn.BatchNorm1d(width))
    block.append(activation())
    if dropout > 0:
        block.append(nn.Dropout(dropout))  # inverted dropout, p = drop probability
    return block


def _check_images(input_shape: Sequence[int], model: str, smallest: int) -> None:
    """Refuse inputs that are not images of at least ``smallest`` x ``smallest`` pixels, naming what is needed."""
    flat = len(input_shape) == 3 and input_shape[0] == 1 and input_shape[1] == 1  # (N, D) arrays become 1x1xD
    if len(input_shape) == 3 and not flat and min(input_shape[1:]) >= smallest:
        return
    size = math.prod(input_shape)
    side = math.isqrt(size)
    got = (f"flat vectors of {size} values (x_train shaped (N, {size}))" if flat
           else f"inputs of shape {'x'.join(map(str, input_shape))}")
    example = f"x.reshape(-1, {side}, {side})" if side * side == size else f"x.reshape(-1, H, W) with H * W = {size}"
    raise ConfigError(
        f"model={model} needs images of at least {max(smallest, 2)}x{max(smallest, 2)} pixels, x_train shaped "
        f"(N, H, W), (N, C, H, W) or (N, H, W, C); these are {got}. Reshape them into images ({example}), "
        "or use model=mlp, which takes flat vectors."
    )


def _is_count(value: object) -> bool:
    """Whether a config value is a count of layers, filters or units: an integer >= 1 (not a bool)."""
    return is_integer(value) and value >= 1


def _check_filter(filter_size: int, input_shape: Sequence[int], key: str) -> None:
    h, w = input_shape[1:]
    if not is_integer(filter_size) or not 1 <= filter_size <= min(h, w):
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
        if not isinstance(hidden_sizes, (list, tuple)) or not all(_is_count(h) for h in hidden_sizes):
            raise not_allowed("model.hidden_sizes", hidden_sizes, "a list of layer sizes, integers >= 1 (one hidden "
                              "layer each), such as [256, 128]; [] is a linear classifier")
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for size in hidden_sizes:
            layers += _hidden(nn.Linear(width, size, bias=not batchnorm), size, activation, dropout, batchnorm, conv=False)
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
        _check_images(input_shape, "convnet", 2)  # its 2x2 max pool
        _check_filter(filter_size, input_shape, "model.filter_size")
        if not all(_is_count(v) for v in (num_filters, hidden_dim)):
            raise ConfigError(
                f"model.num_filters={num_filters!r}, model.hidden_dim={hidden_dim!r}: both must be integers >= 1."
            )
        c, h, w = input_shape
        conv = nn.Conv2d(c, num_filters, filter_size, padding="same", bias=not batchnorm)
        layers = _hidden(conv, num_filters, activation, dropout, batchnorm, conv=True)
        layers += [nn.MaxPool2d(2), nn.Flatten()]
        flat = num_filters * (h // 2) * (w // 2)
        layers += _hidden(nn.Linear(flat, hidden_dim, bias=not batchnorm), hidden_dim, activation, dropout, batchnorm, conv=False)
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
        _check_images(input_shape, "deep_convnet", 2 if pool_after else 1)
        _check_filter(filter_size, input_shape, "model.filter_size")
        if not filters or not isinstance(filters, (list, tuple)) or not all(_is_count(f) for f in filters):
            raise not_allowed("model.filters", filters, "a non-empty list of filter counts, integers >= 1 (one conv "
                              "layer each), such as [32, 32, 64, 64]")
        bad = [p for p in pool_after if not 0 <= p < len(filters)]
        if bad or len(set(pool_after)) != len(pool_after):
            raise ConfigError(
                f"model.pool_after={list(pool_after)} is not allowed with {len(filters)} conv layers: "
                f"positions from 0 to {len(filters) - 1}, each once (a layer is pooled once after it)."
            )
        c, h, w = input_shape
        if min(h, w) < 2 ** len(pool_after):  # each position once (checked above)
            raise ConfigError(
                f"model.pool_after={list(pool_after)} halves {h}x{w} images {len(pool_after)} times: "
                "too many pools for this image size."
            )
        layers: list[nn.Module] = []
        for i, f in enumerate(filters):
            layers += _hidden(nn.Conv2d(c, f, filter_size, padding="same", bias=not batchnorm), f, activation, dropout, batchnorm, True)
            c = f
            if i in pool_after:
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
        layers += [nn.Flatten(), nn.Linear(c * h * w, num_classes)]
        super().__init__(*layers)


class ResidualBlock(nn.Module):
    """He et al.'s basic block: conv3x3 - BN - activation - conv3x3 - BN, plus the shortcut, then the activation.

    The shortcut is the identity, or a 1x1 convolution with batch norm where the block changes
    the width or the resolution. Data do not flow in registration order here, so the block tells
    :mod:`expt.init` which activation follows each of its convolutions: the first conv's own, and
    the one after the sum for the second conv and the shortcut; and which layer ends the residual
    branch (the init scales it by ``init.residual_scale``, so the sums do not grow the activations with depth).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, activation: Activation, batchnorm: bool):
        super().__init__()
        norm = (lambda c: nn.BatchNorm2d(c)) if batchnorm else (lambda c: nn.Identity())
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=not batchnorm)
        self.bn1 = norm(out_channels)
        self.act1 = activation()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=not batchnorm)
        self.bn2 = norm(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=not batchnorm), norm(out_channels))
        self.act2 = activation()

    def forward(self, x):
        out = self.act1(self.bn1(self.conv1(x)))
        return self.act2(self.bn2(self.conv2(out)) + self.shortcut(x))

    def residual_branch_ends(self) -> list[nn.Module]:
        """The branch's last layer, whose output joins the shortcut: the batch norm, or the conv without one."""
        return [self.bn2 if isinstance(self.bn2, nn.modules.batchnorm._BatchNorm) else self.conv2]

    def layers_and_activations(self) -> list[tuple[nn.Module, nn.Module]]:
        pairs = [(self.conv1, self.act1), (self.conv2, self.act2)]
        if isinstance(self.shortcut, nn.Sequential):
            pairs.append((self.shortcut[0], self.act2))
        return pairs


class ResNet(nn.Sequential):
    """The residual network for small images of He et al. (2016, section 4.2): depth 6n + 2.

    A 3x3 conv of ``width`` filters, then 3 stages of n residual blocks of width, 2 x width and
    4 x width filters (the second and third stage start by halving the resolution), global
    average pooling and a linear classifier. ``depth=20, width=16`` is ResNet-20 (0.27M
    parameters); 32, 44, 56 and 110 are the paper's deeper ones.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        activation: Activation,
        depth: int = 20,
        width: int = 16,
        dropout: float = 0.0,
        batchnorm: bool = True,
    ):
        if not (is_integer(depth) and depth >= 8 and (depth - 2) % 6 == 0):
            raise not_allowed("model.depth", depth, "6n + 2 for n >= 1 (8, 14, 20, 32, 44, 56, 110)")
        if not (is_integer(width) and width >= 1):
            raise not_allowed("model.width", width, "an integer >= 1 (16 in the paper)")
        _check_images(input_shape, "resnet", 4)  # it halves them twice
        c, h, w = input_shape
        n = (depth - 2) // 6
        layers: list[nn.Module] = [nn.Conv2d(c, width, 3, padding=1, bias=not batchnorm)]
        layers += [nn.BatchNorm2d(width) if batchnorm else nn.Identity(), activation()]
        channels = width
        for stage in range(3):
            out = width * 2 ** stage
            for block in range(n):
                stride = 2 if stage > 0 and block == 0 else 1
                layers.append(ResidualBlock(channels, out, stride, activation, batchnorm))
                channels = out
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(channels, num_classes))
        super().__init__(*layers)
