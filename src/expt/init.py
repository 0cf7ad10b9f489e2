"""Weight initialization: sigma = sqrt(k / D_in), with k taken from the activation that follows.

Every scheme draws weights from N(0, sigma^2) with ``torch.nn.init.normal_`` and zeroes
the biases. D_in is the fan-in of one output unit: ``in_features`` for a linear layer,
``C_in * kh * kw`` for a convolution. A scheme is any callable taking the model, so a
``conf/init/*.yaml`` file may name your own.

The classifier (the last weight layer, the one that produces the logits) has no activation
after it. Kaiming and Xavier multiply its sigma by ``classifier_scale`` (0.05 by default): with
the formula alone (k = 1) the logits start with about unit variance and the loss at init sits
well above log C; at a twentieth of that scale the logits start near 0, as the recipe's first
sanity check expects, while the hidden layers keep the formula exactly.

A residual block adds its branch to its shortcut, so with the formula on every layer each
block adds the branch's variance to what it passes on and the activations grow with depth (in
ResNet-20 at init, from rms 1 to 14-44 over its nine blocks, which no classifier scale absorbs).
Kaiming and Xavier therefore multiply the last layer of each residual branch by
``residual_scale``: the batch norm's weight when the branch ends in one, the convolution's sigma
otherwise. By default (None) it is 1 / sqrt(B) for a model of B residual branches (1/3 for
ResNet-20), so the second moment grows by a factor of about (1 + 2 / B) per block and stays
bounded at any depth, as batch norm's statistics do for the branches during training; 0 starts
each block as its shortcut (Goyal et al. 2017, torchvision's ``zero_init_residual``), 1 is the
plain formula. A module marks its branches' last layers with a method ``residual_branch_ends()``.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from expt.errors import ConfigError, not_allowed
from expt.values import is_number

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

    Walks the leaf modules in registration order, which for an ``nn.Sequential`` is the order
    data flows through them. A module whose data does not flow in registration order (a
    residual block: its shortcut joins after the second conv, and the activation comes after
    the sum) says for itself which activation follows each of its weight layers with a method
    ``layers_and_activations()`` returning ``[(layer, activation module or None), ...]``; its
    own submodules are then not walked.
    """
    result: list[tuple[nn.Module, float]] = []
    pending: nn.Module | None = None
    explained: set[int] = set()
    for module in model.modules():
        if id(module) in explained:
            continue
        if callable(getattr(module, "layers_and_activations", None)):
            if pending is not None:
                result.append((pending, 1.0))
                pending = None
            result += [(layer, activation_gain(act)) for layer, act in module.layers_and_activations()]
            explained |= {id(m) for m in module.modules()}
            continue
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


def classifier(model: nn.Module) -> nn.Module | None:
    """The layer that produces the logits: the last conv/linear layer, when no activation follows it."""
    last = None
    for module in model.modules():
        if next(module.children(), None) is not None or isinstance(module, PASS_THROUGH):
            continue
        last = module if isinstance(module, WEIGHT_LAYERS) else None
    return last


def residual_branch_ends(model: nn.Module) -> list[nn.Module]:
    """The last layer of every residual branch in ``model``, as its modules' ``residual_branch_ends()`` name them."""
    ends: list[nn.Module] = []
    for module in model.modules():
        if callable(getattr(module, "residual_branch_ends", None)):
            ends += module.residual_branch_ends()
    return ends


def _init(
    model: nn.Module, std_of, classifier_scale: float = 1.0, residual_scale: float | None = 1.0
) -> nn.Module:
    """Draw every weight from N(0, std_of(weight, gain)^2), the classifier's std times ``classifier_scale``.

    The last layer of each residual branch is multiplied by ``residual_scale`` (None: 1 / sqrt(the
    number of branches)): a convolution's std, or a normalization's weight (which starts there instead of 1).
    """
    head = classifier(model)
    branch_ends = residual_branch_ends(model)
    ends = {id(m) for m in branch_ends}
    if residual_scale is None:
        residual_scale = 1.0 / math.sqrt(max(1, len(branch_ends)))
    with torch.no_grad():
        for layer, gain in layers_with_gain(model):
            std = std_of(layer.weight, gain) * (classifier_scale if layer is head else 1.0)
            std *= residual_scale if id(layer) in ends else 1.0
            nn.init.normal_(layer.weight, 0.0, std)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        for module in branch_ends:
            if not isinstance(module, WEIGHT_LAYERS) and getattr(module, "weight", None) is not None:
                nn.init.constant_(module.weight, residual_scale)  # a normalization's scale
    return model


def _check_scale(key: str, scale: float, meaning: str) -> float:
    if not (is_number(scale) and 0 <= scale < math.inf):
        raise not_allowed(f"init.{key}", scale, meaning)
    return float(scale)


def _check_classifier_scale(scale: float) -> float:
    return _check_scale(
        "classifier_scale", scale, "a factor >= 0 on the classifier's sigma (0.05 starts the loss at log C; "
        "1 is the plain formula; 0 starts the logits at exactly 0)",
    )


def _check_residual_scale(scale: float | None) -> float | None:
    if scale is None:
        return None
    return _check_scale(
        "residual_scale", scale, "null (1 / sqrt(the number of residual branches), the default) or a factor "
        ">= 0 on the last layer of each residual branch (0 starts each block as its shortcut; 1 is the plain formula)",
    )


class Kaiming:
    """sigma = gain / sqrt(D_in) = sqrt(k / D_in): k = 2 before ReLU; the classifier's times ``classifier_scale``.

    The last layer of each residual branch is multiplied by ``residual_scale`` (None: 1 / sqrt(number of branches)).
    """

    def __init__(self, classifier_scale: float = 0.05, residual_scale: float | None = None):
        self.classifier_scale = _check_classifier_scale(classifier_scale)
        self.residual_scale = _check_residual_scale(residual_scale)

    def __call__(self, model: nn.Module) -> nn.Module:
        return _init(model, lambda w, gain: gain / math.sqrt(fan_in(w)), self.classifier_scale, self.residual_scale)


class Xavier:
    """sigma = sqrt(1 / D_in) (``fan_in``, the recipe's Xavier) or sqrt(2 / (D_in + D_out)) (``fan_avg``, Glorot).

    The classifier's sigma is multiplied by ``classifier_scale`` and the last layer of each residual
    branch by ``residual_scale``, as in :class:`Kaiming`.
    """

    MODES = ("fan_in", "fan_avg")

    def __init__(self, mode: str = "fan_in", classifier_scale: float = 0.05, residual_scale: float | None = None):
        if mode not in self.MODES:
            raise not_allowed("init.mode", mode, f"one of {', '.join(self.MODES)}")
        self.mode = mode
        self.classifier_scale = _check_classifier_scale(classifier_scale)
        self.residual_scale = _check_residual_scale(residual_scale)

    def __call__(self, model: nn.Module) -> nn.Module:
        if self.mode == "fan_in":
            std_of = lambda w, gain: 1.0 / math.sqrt(fan_in(w))  # noqa: E731
        else:
            std_of = lambda w, gain: math.sqrt(2.0 / (fan_in(w) + fan_out(w)))  # noqa: E731
        return _init(model, std_of, self.classifier_scale, self.residual_scale)


class Gaussian:
    """A fixed std ``weight_scale`` for every weight, whatever the layer's size."""

    def __init__(self, weight_scale: float = 1e-3):
        if not weight_scale > 0:
            raise ConfigError(f"init.weight_scale={weight_scale} is not allowed: a std > 0.")
        self.weight_scale = weight_scale

    def __call__(self, model: nn.Module) -> nn.Module:
        return _init(model, lambda w, gain: self.weight_scale)


class PyTorchDefault:
    """Keep the initialization PyTorch's layers give themselves."""

    def __call__(self, model: nn.Module) -> nn.Module:
        return model
