"""Weight initialization: sigma = sqrt(k / D_in), with k taken from the activation that follows.

Every scheme draws weights from N(0, sigma^2) with ``torch.nn.init.normal_`` and zeroes
the biases. D_in is the fan-in of one output unit: ``in_features`` for a linear layer,
``C_in * kh * kw`` for a convolution. A scheme is any callable taking the model, so a
``conf/init/*.yaml`` file may name your own.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
# Layers between a weight layer and its activation that do not change which activation follows.
PASS_THROUGH = (
    nn.modules.batchnorm._BatchNorm, nn.Dropout, nn.Dropout2d, nn.MaxPool2d, nn.AvgPool2d,
    nn.Flatten, nn.Identity, nn.LayerNorm, nn.GroupNorm,
)


def fan_in(weight: torch.Tensor) -> int:
    return weight.shape[1] * math.prod(weight.shape[2:])


def fan_out(weight: torch.Tensor) -> int:
    return weight.shape[0] * math.prod(weight.shape[2:])


def activation_gain(activation: nn.Module | None) -> float:
    """The gain g (k = g^2) that keeps the second moment of unit-variance pre-activations.

    PyTorch's ``calculate_gain`` value where it has one (ReLU sqrt(2), leaky ReLU
    sqrt(2 / (1 + slope^2)), tanh 5/3, sigmoid 1); no activation (the classifier) gets 1;
    any other activation gets 1 / sqrt(E[f(z)^2]) for z ~ N(0, 1), the quantity Kaiming's
    derivation holds fixed (it gives exactly sqrt(2) for ReLU).
    """
    if activation is None or isinstance(activation, nn.Identity):
        return 1.0
    if isinstance(activation, nn.ReLU):
        return nn.init.calculate_gain("relu")
    if isinstance(activation, nn.LeakyReLU):
        return nn.init.calculate_gain("leaky_relu", activation.negative_slope)
    if isinstance(activation, nn.Tanh):
        return nn.init.calculate_gain("tanh")
    if isinstance(activation, nn.Sigmoid):
        return nn.init.calculate_gain("sigmoid")
    if isinstance(activation, nn.SELU):
        return nn.init.calculate_gain("selu")
    return 1.0 / math.sqrt(_second_moment(activation))


_SECOND_MOMENTS: dict[tuple[type, str], float] = {}


def _second_moment(activation: nn.Module) -> float:
    """E[f(z)^2] for z ~ N(0, 1) by the trapezoid rule, cached per activation type and settings."""
    key = (type(activation), repr(activation))
    if key not in _SECOND_MOMENTS:
        z = torch.linspace(-12.0, 12.0, 48001, dtype=torch.float64)
        pdf = torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
        with torch.no_grad():
            fz = copy.deepcopy(activation).to(torch.float64)(z)
        _SECOND_MOMENTS[key] = float(torch.trapezoid(fz * fz * pdf, z))
    return _SECOND_MOMENTS[key]


def layers_with_gain(model: nn.Module) -> list[tuple[nn.Module, float]]:
    """Each conv/linear layer with the gain of the activation that follows it (1 where none does).

    Walks the leaf modules in registration order, which for the models here (and any
    ``nn.Sequential``) is the order data flows through them.
    """
    result: list[tuple[nn.Module, float]] = []
    pending: nn.Module | None = None
    for module in model.modules():
        if next(module.children(), None) is not None:
            continue  # a container
        if isinstance(module, WEIGHT_LAYERS):
            if pending is not None:
                result.append((pending, 1.0))
            pending = module
        elif isinstance(module, PASS_THROUGH):
            continue
        elif pending is not None:
            result.append((pending, activation_gain(module)))
            pending = None
    if pending is not None:
        result.append((pending, 1.0))
    return result


def _init(model: nn.Module, std_of) -> nn.Module:
    with torch.no_grad():
        for layer, gain in layers_with_gain(model):
            nn.init.normal_(layer.weight, 0.0, std_of(layer.weight, gain))
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
    return model


class Kaiming:
    """sigma = gain / sqrt(D_in) = sqrt(k / D_in): k = 2 before ReLU, 1 for the classifier."""

    def __call__(self, model: nn.Module) -> nn.Module:
        return _init(model, lambda w, gain: gain / math.sqrt(fan_in(w)))


class Xavier:
    """sigma = sqrt(1 / D_in) (``fan_in``, the recipe's Xavier) or sqrt(2 / (D_in + D_out)) (``fan_avg``, Glorot)."""

    MODES = ("fan_in", "fan_avg")

    def __init__(self, mode: str = "fan_in"):
        if mode not in self.MODES:
            from expt.config import ConfigError

            raise ConfigError(f"init.mode={mode!r} is not allowed: one of {', '.join(self.MODES)}.")
        self.mode = mode

    def __call__(self, model: nn.Module) -> nn.Module:
        if self.mode == "fan_in":
            return _init(model, lambda w, gain: 1.0 / math.sqrt(fan_in(w)))
        return _init(model, lambda w, gain: math.sqrt(2.0 / (fan_in(w) + fan_out(w))))


class Gaussian:
    """A fixed std ``weight_scale`` for every weight, whatever the layer's size."""

    def __init__(self, weight_scale: float = 1e-3):
        if not weight_scale > 0:
            from expt.config import ConfigError

            raise ConfigError(f"init.weight_scale={weight_scale} is not allowed: a std > 0.")
        self.weight_scale = weight_scale

    def __call__(self, model: nn.Module) -> nn.Module:
        return _init(model, lambda w, gain: self.weight_scale)


class PyTorchDefault:
    """Keep the initialization PyTorch's layers give themselves."""

    def __call__(self, model: nn.Module) -> nn.Module:
        return model
