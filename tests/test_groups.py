"""The recipe's six config groups (RECIPE.md sections 1 and 4): every option exists and does what the recipe says.

Each test measures the effect of an option on the built objects (the model's layers, the fitted
statistics, the weights' spread, the penalty, the optimizer's state, the learning rate) rather
than only checking that the config composes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import QUIET, run_cli
from torch import nn

import expt
from expt.errors import ConfigError
from expt.instantiate import instantiate
from expt.data import load as load_data
from expt.init import Kaiming, PyTorchDefault, Xavier, activation_gain, fan_in, fan_out
from expt.models import MLP
from expt.build import build, build_model

DIGITS_SHAPE, DIGITS_CLASSES = (1, 8, 8), 10
QUICK = ("++data.subset=200", "trainer.epochs=1")
SYNTHETIC = ("data=synthetic", "data.shape=[3,6,6]", "data.num_samples=1500")  # 960 training samples, 108 dims

WEIGHT_LAYERS = (nn.Linear, nn.Conv2d)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
STRUCTURAL = (nn.Flatten, nn.MaxPool2d, nn.Dropout) + NORMS + WEIGHT_LAYERS

ACTIVATIONS = {
    "relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "elu": nn.ELU, "gelu": nn.GELU,
    "silu": nn.SiLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid,
}
MODELS = ("mlp", "convnet", "deep_convnet")
PREPROCESSING = ("none", "mean_image", "per_channel_mean", "per_channel_standardize", "pca_whiten")
FITTED = PREPROCESSING[1:]
INITS = ("kaiming", "xavier", "gaussian", "pytorch")
REGULARIZATION = ("none", "l2", "l1", "elastic_net", "max_norm", "dropout", "batchnorm")
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw")
SCHEDULES = ("constant", "step", "exponential", "inverse_time", "cosine", "warmup_cosine", "plateau", "onecycle")


# ----------------------------------------------------------------------------- helpers
def compose(*overrides: str):
    return expt.compose(list(overrides))


def model_from(*overrides: str) -> nn.Module:
    """The model ``python -m expt <overrides>`` trains on the 8x8 digits, initialised."""
    return build_model(compose(*overrides), DIGITS_SHAPE, DIGITS_CLASSES)


def leaves(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if next(m.children(), None) is None]


def weight_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, WEIGHT_LAYERS)]


def after(model: nn.Module, layer: nn.Module, skip: tuple = ()) -> nn.Module | None:
    """The leaf module data reaches right after ``layer``, passing over the types in ``skip``."""
    seq = leaves(model)
    for module in seq[seq.index(layer) + 1:]:
        if not isinstance(module, skip):
            return module
    return None


def relative_error(measured: float, expected: float) -> float:
    return abs(measured - expected) / abs(expected)


def initialised(scheme, layer: nn.Module, activation: nn.Module | None) -> nn.Module:
    """``layer`` after ``scheme`` ran on a network where ``activation`` (or nothing) follows it."""
    net = nn.Sequential(layer, activation) if activation is not None else nn.Sequential(layer)
    torch.manual_seed(0)
    scheme(net)
    return layer


def lr_of(optimizer: torch.optim.Optimizer) -> float:
    return optimizer.param_groups[0]["lr"]


# ============================================================================= activation
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_follows_every_hidden_layer(name, model):
    """Every hidden conv/linear layer feeds the chosen activation; no other activation (no hard-coded ReLU) exists."""
    net = model_from(f"model={model}", f"activation={name}", "regularization=[l2]")  # no batch norm in between
    kind = ACTIVATIONS[name]
    layers = weight_layers(net)
    assert len(layers) >= 2
    for layer in layers[:-1]:
        assert type(after(net, layer)) is kind, f"{type(layer).__name__} is not followed by {kind.__name__}"
    assert after(net, layers[-1]) is None, "the classifier must be the last layer, with no activation"
    others = {type(m) for m in leaves(net) if not isinstance(m, STRUCTURAL)}
    assert others == {kind}
    acts = [m for m in leaves(net) if type(m) is kind]
    assert len(acts) == len(layers) - 1
    calls = []
    for act in acts:
        act.register_forward_hook(lambda m, inp, out: calls.append(torch.equal(out, kind()(inp[0]))))
    with torch.no_grad():
        net(torch.randn(4, *DIGITS_SHAPE))
    assert calls == [True] * len(acts), "every activation runs once in the forward pass"


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("overrides, slope", [((), 0.01), (("activation.negative_slope=0.2",), 0.2)])
def test_leaky_relu_slope_is_measured_at_minus_one(model, overrides, slope):
    net = model_from(f"model={model}", "activation=leaky_relu", *overrides)
    acts = [m for m in leaves(net) if isinstance(m, nn.LeakyReLU)]
    assert acts
    minus_one = torch.tensor([-1.0, 2.0])
    for act in acts:
        assert act(minus_one).tolist() == pytest.approx([-slope, 2.0], abs=1e-7)


# ============================================================================= preprocessing
def preprocessed(option: str, *overrides: str):
    """(raw training split, the built experiment) for the synthetic 3-channel images."""
    cfg = compose(f"preprocessing={option}", *SYNTHETIC, *overrides)
    return load_data(cfg.data).x_train, build(cfg)


def test_per_channel_standardize_is_the_default():
    assert compose().preprocessing._target_ == "expt.preprocess.PerChannelStandardize"
    assert compose("preprocessing=pca_whiten").preprocessing.epsilon == 1e-5


def test_none_keeps_the_raw_pixels():
    raw, exp = preprocessed("none")
    assert torch.equal(exp.data.x_train, raw)
    assert 0.0 <= float(raw.min()) and float(raw.max()) <= 1.0


def test_mean_image_zeroes_every_pixel_mean():
    raw, exp = preprocessed("mean_image")
    x = exp.data.x_train
    assert float(x.mean(dim=0).abs().max()) < 1e-5
    shift = raw - x  # one constant per pixel and channel: the same for every sample
    assert float(shift.std(dim=0).max()) < 1e-5
    assert float(raw.mean(dim=0).std()) > 0.05, "the data's pixel means differ, so per-pixel centring is visible"


def test_per_channel_mean_zeroes_each_channel_mean_only():
    raw, exp = preprocessed("per_channel_mean")
    x = exp.data.x_train
    assert float(x.mean(dim=(0, 2, 3)).abs().max()) < 1e-5
    shift = (raw - x).transpose(0, 1).reshape(3, -1)  # one constant per channel
    assert float(shift.std(dim=1).max()) < 1e-5
    assert float(x.mean(dim=0).abs().max()) > 0.05, "single pixels keep their offsets: 3 numbers, not a mean image"
    assert torch.allclose(x.std(dim=(0, 2, 3)), raw.std(dim=(0, 2, 3)), rtol=1e-4)


def test_per_channel_standardize_gives_zero_mean_unit_std_per_channel():
    raw, exp = preprocessed("per_channel_standardize")
    x = exp.data.x_train.double()
    assert float(x.mean(dim=(0, 2, 3)).abs().max()) < 1e-5
    assert x.std(dim=(0, 2, 3)).tolist() == pytest.approx([1.0] * 3, abs=1e-4)
    assert float((raw.std(dim=(0, 2, 3)) - 1).abs().min()) > 0.5, "the raw data are far from unit std"


@pytest.mark.parametrize("epsilon", [1e-5, 1e-2])
def test_pca_whitening_gives_identity_covariance_up_to_epsilon(epsilon):
    """Whitened covariance is diag(lambda / (lambda + eps)): the identity up to eps / lambda_min."""
    raw, exp = preprocessed("pca_whiten", f"preprocessing.epsilon={epsilon}")
    n, dims = len(raw), raw[0].numel()
    assert n > dims
    eigenvalues = torch.linalg.eigvalsh(torch.cov(raw.reshape(n, -1).double().T))
    x = exp.data.x_train.reshape(n, -1).double()
    assert exp.data.x_train.shape == raw.shape
    assert float(x.mean(dim=0).abs().max()) < 1e-5
    cov = torch.cov(x.T)
    expected = (eigenvalues / (eigenvalues + epsilon)).sort().values
    assert torch.allclose(torch.diag(cov).sort().values, expected, atol=2e-5)
    off_diagonal = cov - torch.diag(torch.diag(cov))
    assert float(off_diagonal.abs().max()) < 2e-5
    worst = float((cov - torch.eye(dims, dtype=torch.float64)).abs().max())
    assert worst <= epsilon / float(eigenvalues.min()) + 2e-5
    if epsilon == 1e-5:
        assert worst < 1e-3


def fitted_buffers(preprocessor) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in preprocessor.state_dict().items()}


@pytest.mark.parametrize("option", FITTED)
def test_fit_uses_the_training_split_only(option):
    """Replacing val and test leaves the fitted statistics and the transformed training split unchanged."""
    cfg = compose(f"preprocessing={option}", *SYNTHETIC)
    splits = load_data(cfg.data)
    gen = torch.Generator().manual_seed(1)
    other = dataclasses.replace(
        splits,
        x_val=3 + 5 * torch.rand(splits.x_val.shape, generator=gen),
        x_test=-2 * torch.rand(splits.x_test.shape, generator=gen),
    )
    a, b = build(cfg, data=splits), build(cfg, data=other)
    stats_a, stats_b = fitted_buffers(a.preprocessor), fitted_buffers(b.preprocessor)
    assert stats_a and stats_a.keys() == stats_b.keys()
    for name in stats_a:
        assert torch.equal(stats_a[name], stats_b[name]), name
    assert torch.equal(a.data.x_train, b.data.x_train)
    assert torch.allclose(b.data.x_val, b.preprocessor(other.x_val))
    leaky = instantiate(cfg.preprocessing, "preprocessing").fit(torch.cat([splits.x_train, other.x_val]))
    assert any(not torch.allclose(stats_a[k], v) for k, v in leaky.state_dict().items()), (
        "fitting on train + the altered val would have changed the statistics"
    )


@pytest.mark.parametrize("option", FITTED)
def test_fitted_statistics_are_saved_in_the_checkpoint(option, tmp_path):
    """A real run stores the training-split statistics under ``preprocess``; a fresh preprocessor reloads them."""
    cfg = compose(f"preprocessing={option}", *QUICK, "trainer.epochs=0", *QUIET)  # fitted before any epoch
    expt.train(cfg, run_dir=tmp_path)
    state = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["preprocess"]
    splits = load_data(cfg.data)
    fitted = instantiate(cfg.preprocessing, "preprocessing").fit(splits.x_train)
    assert state.keys() == fitted.state_dict().keys() and len(state) >= 1
    for name, value in fitted.state_dict().items():
        assert torch.equal(state[name], value), name
    reloaded = instantiate(cfg.preprocessing, "preprocessing").load_fitted(state)
    for x in (splits.x_train, splits.x_val, splits.x_test):
        assert torch.equal(reloaded(x), fitted(x))


# ============================================================================= init
SHAPES = {
    "linear_1000_500": lambda: nn.Linear(1000, 500),
    "conv_64_128_3": lambda: nn.Conv2d(64, 128, 3),
    "conv_3_256_5": lambda: nn.Conv2d(3, 256, 5),
}
GAIN_SQUARED = {  # k in sigma = sqrt(k / D_in)
    "relu": (nn.ReLU, 2.0),
    "leaky_relu": (nn.LeakyReLU, 2.0 / (1 + 0.01**2)),
    "tanh": (nn.Tanh, (5 / 3) ** 2),
    "sigmoid": (nn.Sigmoid, 1.0),
}
STD_TOLERANCE = 0.03


def measured_second_moment(activation: nn.Module, samples: int = 2_000_000) -> float:
    z = torch.randn(samples, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        return float(activation.to(torch.float64)(z).square().mean())


def assert_std(layer: nn.Module, sigma: float) -> None:
    w = layer.weight.detach().double()
    assert relative_error(float(w.std()), sigma) < STD_TOLERANCE, (float(w.std()), sigma)
    assert abs(float(w.mean())) < 4 * sigma / math.sqrt(w.numel())
    if layer.bias is not None:
        assert torch.count_nonzero(layer.bias) == 0


def test_kaiming_is_the_default_init():
    assert compose().init._target_ == "expt.init.Kaiming"


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("activation", GAIN_SQUARED)
def test_kaiming_std_is_sqrt_k_over_fan_in(shape, activation):
    kind, k = GAIN_SQUARED[activation]
    layer = initialised(Kaiming(), SHAPES[shape](), kind())
    assert_std(layer, math.sqrt(k / fan_in(layer.weight)))


@pytest.mark.parametrize("kind", [nn.ELU, nn.GELU, nn.SiLU])
def test_second_moment_rule_for_elu_gelu_silu(kind):
    """The gain is 1/sqrt(E[f(z)^2]), z ~ N(0, 1): the moment it uses matches one measured on samples."""
    claimed = activation_gain(kind()) ** -2
    assert relative_error(measured_second_moment(kind()), claimed) < 0.005
    layer = initialised(Kaiming(), nn.Linear(1000, 500), kind())
    assert_std(layer, math.sqrt(1.0 / (claimed * 1000)))


def test_second_moment_rule_reproduces_relus_gain():
    assert measured_second_moment(nn.ReLU()) == pytest.approx(0.5, rel=0.005)
    assert activation_gain(nn.ReLU()) == pytest.approx(math.sqrt(2))


WIDE_MLP = ("model=mlp", "model.hidden_sizes=[512,1000]", "regularization=none")


@pytest.mark.parametrize("batchnorm", [False, True])
@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_kaiming_in_a_built_model_classifier_gets_k_1(activation, batchnorm):
    """Hidden layers get the activation's k (batch norm in between does not change it); the classifier k = 1."""
    extra = ("regularization=batchnorm",) if batchnorm else ()
    net = model_from(*WIDE_MLP, f"activation={activation}", *extra)
    assert any(isinstance(m, nn.BatchNorm1d) for m in net.modules()) == batchnorm
    k = GAIN_SQUARED[activation][1]
    *hidden, classifier = weight_layers(net)
    for layer in hidden:
        assert_std(layer, math.sqrt(k / layer.in_features))
    assert_std(classifier, 0.05 * math.sqrt(1.0 / classifier.in_features))  # init.classifier_scale


@pytest.mark.parametrize("scheme", ["kaiming", "xavier"])
@pytest.mark.parametrize("scale", [1.0, 0.05, 0.0])
def test_the_classifier_scale_multiplies_only_the_classifiers_sigma(scheme, scale):
    net = model_from(*WIDE_MLP, f"init={scheme}", f"init.classifier_scale={scale}")
    *hidden, classifier = weight_layers(net)
    k = 2.0 if scheme == "kaiming" else 1.0
    for layer in hidden:
        assert_std(layer, math.sqrt(k / layer.in_features))
    if scale == 0:
        assert not classifier.weight.any()
    else:
        assert_std(classifier, scale * math.sqrt(1.0 / classifier.in_features))


def test_a_bad_classifier_scale_names_the_key():
    with pytest.raises(ConfigError, match=r"init\.classifier_scale=-1\.0 is not allowed: a factor >= 0"):
        model_from("init.classifier_scale=-1.0")


def test_kaiming_convnet_layers_use_conv_fan_in():
    net = model_from("model=deep_convnet", "model.filters=[64,128]", "model.pool_after=[0]")
    conv = weight_layers(net)[1]
    assert fan_in(conv.weight) == 64 * 3 * 3
    assert_std(conv, math.sqrt(2.0 / (64 * 3 * 3)))


@pytest.mark.parametrize("shape", SHAPES)
def test_xavier_fan_in_and_fan_avg(shape):
    """fan_in: sqrt(1 / D_in) whatever follows; fan_avg (Glorot): sqrt(2 / (D_in + D_out))."""
    layer = initialised(Xavier("fan_in"), SHAPES[shape](), nn.ReLU())
    assert_std(layer, math.sqrt(1.0 / fan_in(layer.weight)))
    layer = initialised(Xavier("fan_avg"), SHAPES[shape](), nn.ReLU())
    assert_std(layer, math.sqrt(2.0 / (fan_in(layer.weight) + fan_out(layer.weight))))


def test_xavier_mode_from_the_config():
    assert compose("init=xavier").init.mode == "fan_in"
    for mode, sigma in [("fan_in", math.sqrt(1 / 512)), ("fan_avg", math.sqrt(2 / (512 + 1000)))]:
        layer = weight_layers(model_from(*WIDE_MLP, "init=xavier", f"init.mode={mode}"))[1]
        assert_std(layer, sigma)


@pytest.mark.parametrize("overrides, scale", [((), 1e-3), (("init.weight_scale=0.05",), 0.05)])
def test_gaussian_uses_weight_scale_for_every_layer(overrides, scale):
    net = model_from(*WIDE_MLP, "init=gaussian", *overrides)
    for layer in weight_layers(net):
        assert_std(layer, scale)


def test_pytorch_init_leaves_pytorchs_own_initialization():
    """Same seed, same layers: the weights and (non-zero) biases equal a freshly constructed MLP's."""
    cfg = compose("model=mlp", "init=pytorch", "regularization=[l2]")  # layers with biases: no batch norm after
    torch.manual_seed(123)
    built = build_model(cfg, DIGITS_SHAPE, DIGITS_CLASSES)
    torch.manual_seed(123)
    fresh = MLP(DIGITS_SHAPE, DIGITS_CLASSES, nn.ReLU, hidden_sizes=list(cfg.model.hidden_sizes))
    built_state, fresh_state = built.state_dict(), fresh.state_dict()
    assert built_state.keys() == fresh_state.keys()
    for name in built_state:
        assert torch.equal(built_state[name], fresh_state[name]), name
    assert all(torch.count_nonzero(m.bias) > 0 for m in weight_layers(built))
    assert PyTorchDefault()(fresh) is fresh


def hidden_second_moments(net: nn.Module, x: torch.Tensor) -> list[float]:
    """E[h^2] of every ReLU's output in one forward pass."""
    moments: list[float] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: moments.append(float(out.double().square().mean())))
             for m in net.modules() if isinstance(m, nn.ReLU)]
    with torch.no_grad():
        net(x)
    for hook in hooks:
        hook.remove()
    return moments


def test_kaiming_keeps_activations_alive_in_a_deep_relu_mlp_gaussian_1e3_collapses_them():
    deep = ("model=mlp", "model.hidden_sizes=[256,256,256,256,256,256,256,256,256,256]", "regularization=none")
    x = torch.randn(2000, *DIGITS_SHAPE, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    kaiming = hidden_second_moments(model_from(*deep, "init=kaiming"), x)
    torch.manual_seed(0)
    gaussian = hidden_second_moments(model_from(*deep, "init=gaussian"), x)
    assert len(kaiming) == len(gaussian) == 10
    assert all(0.5 < m < 2.0 for m in kaiming), kaiming
    assert gaussian[-1] < 1e-30 and all(b < a for a, b in zip(gaussian, gaussian[1:])), gaussian


# ============================================================================= regularization
def test_the_runs_first_line_says_what_regularization_is_on_batch_norm_included():
    """A list replaces the default [l2, batchnorm] whole: [l2,dropout] trains without batch norm, and says so."""
    lines = {over: build(compose(over, "++data.subset=100")).summary().split(" on ")[0]
             for over in ("regularization=[l2,dropout]", "regularization=[l2,batchnorm]", "regularization=none")}
    assert lines == {"regularization=[l2,dropout]": "ConvNet (no batch norm, l2 0.0001, dropout 0.5)",
                     "regularization=[l2,batchnorm]": "ConvNet (batch norm, l2 0.0001)",
                     "regularization=none": "ConvNet (no batch norm)"}


def test_regularization_default_is_l2_with_batchnorm_and_options_merge():
    default = compose().regularization
    assert (default.l2, default.l1, default.dropout, default.batchnorm, default.max_norm) == (1e-4, 0.0, 0.0, True, None)
    merged = compose("regularization=[l2,dropout,batchnorm]").regularization
    assert (merged.l2, merged.l1, merged.dropout, merged.batchnorm, merged.max_norm) == (1e-4, 0.0, 0.5, True, None)
    assert compose("regularization=[elastic_net,max_norm]").regularization.max_norm == 3.0
    none = compose("regularization=none").regularization
    assert (none.l2, none.l1, none.dropout, none.batchnorm, none.max_norm) == (0.0, 0.0, 0.0, False, None)


def hand_penalty(net: nn.Module, l1: float, l2: float) -> float:
    weights = [m.weight.detach().double() for m in net.modules() if isinstance(m, WEIGHT_LAYERS)]
    return l2 * sum(float(w.square().sum()) for w in weights) + l1 * sum(float(w.abs().sum()) for w in weights)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("option, l1, l2", [
    ("none", 0.0, 0.0), ("l2", 0.0, 1e-4), ("l1", 1e-5, 0.0), ("elastic_net", 1e-5, 1e-4),
])
def test_penalty_covers_conv_and_linear_weights_only(model, option, l1, l2):
    """Biases and batch-norm parameters are set far from 0 first, so including them would show."""
    exp = build(compose(f"model={model}", f"regularization=[{option},batchnorm]", "++data.subset=100"))
    with torch.no_grad():
        for name, p in exp.model.named_parameters():
            if not (name.endswith("weight") and p.dim() > 1):
                p.fill_(3.0)
    expected = hand_penalty(exp.model, l1, l2)
    with torch.no_grad():
        penalty = float(exp.regularizer.penalty())
    assert penalty == pytest.approx(expected, rel=1e-5, abs=1e-12)
    if option != "none":
        params = [p.detach().double() for p in exp.model.parameters()]
        everything = sum(l2 * float(p.square().sum()) + l1 * float(p.abs().sum()) for p in params)
        assert everything > 1.05 * expected


def test_penalty_is_part_of_the_logged_initial_loss(tmp_path):
    """Same seed, same weights: initial_loss(l2) - initial_loss(0) = l2 * sum(w^2), and it rises with l2."""
    losses = {}
    for l2 in (0.0, 1e-3, 1e-2):
        cfg = compose("regularization=l2", f"regularization.l2={l2}", *QUICK, "trainer.epochs=0", *QUIET)
        losses[l2] = expt.train(cfg, run_dir=tmp_path / str(l2))["initial_loss"]
        logged = json.loads((tmp_path / str(l2) / "metrics.json").read_text())["initial_loss"]
        assert logged == pytest.approx(losses[l2], rel=1e-12)
    assert losses[0.0] < losses[1e-3] < losses[1e-2]
    squares = hand_penalty(build(compose(*QUICK, "regularization=none")).model, 0.0, 1.0)
    for l2 in (1e-3, 1e-2):
        assert losses[l2] - losses[0.0] == pytest.approx(l2 * squares, rel=1e-4)


def unit_norms(w: torch.Tensor) -> torch.Tensor:
    """The norm of each unit's incoming weights: a row of a linear layer, a whole filter of a conv."""
    return w.detach().reshape(len(w), -1).norm(dim=1)


def test_max_norm_clamps_rows_and_filters_after_a_big_step():
    exp = build(compose("regularization=max_norm", "optimizer=sgd", "optimizer.lr=50", "++data.subset=100",
                        "init.classifier_scale=1"))  # large enough gradients for every layer on step 1
    c = exp.cfg.regularization.max_norm
    assert c == 3.0
    x, y = exp.data.x_train[:64], exp.data.y_train[:64]
    loss = F.cross_entropy(exp.model(x), y) + exp.regularizer.penalty()
    exp.optimizer.zero_grad()
    loss.backward()
    exp.optimizer.step()
    before = [unit_norms(w) for w in exp.regularizer.weights]
    exp.regularizer.constrain()
    after_ = [unit_norms(w) for w in exp.regularizer.weights]
    assert sum(int((b > c).sum()) for b in before) > 10, "the step must push some units past c"
    for b, a in zip(before, after_):
        assert float(a.max()) <= c + 1e-6
        small = b <= c
        assert torch.allclose(a[small], b[small]), "units already within c stay as they are"
        assert torch.allclose(a[~small], torch.full_like(a[~small], c), rtol=1e-4)


def test_max_norm_is_applied_in_the_training_loop(tmp_path):
    """Kaiming rows start at norm ~sqrt(2) > 1; after one real epoch with max_norm=1 every unit is within 1."""
    cfg = compose("regularization=max_norm", "regularization.max_norm=1.0", *QUICK, *QUIET)
    initial = build(cfg).model
    assert max(float(unit_norms(m.weight).max()) for m in weight_layers(initial)) > 1.2
    expt.train(cfg, run_dir=tmp_path)
    state = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["model"]
    weights = [v for k, v in state.items() if k.endswith("weight") and v.dim() > 1]
    assert len(weights) == 3
    assert all(float(unit_norms(w).max()) <= 1.0 + 1e-6 for w in weights)


@pytest.mark.parametrize("p", [0.5, 0.2])
def test_dropout_p_is_the_drop_probability(p):
    """In train mode a fraction p of units is zeroed and the rest scaled by 1/(1-p); eval mode is the identity."""
    net = model_from("model=mlp", "regularization=dropout", f"regularization.dropout={p}")
    drops = [m for m in net.modules() if isinstance(m, nn.Dropout)]
    assert len(drops) == 2 and all(d.p == p for d in drops)
    ones = torch.ones(400_000)
    torch.manual_seed(0)
    drops[0].train()
    out = drops[0](ones)
    assert float((out == 0).double().mean()) == pytest.approx(p, abs=0.005)
    assert torch.allclose(out[out != 0], torch.tensor(1 / (1 - p)))
    assert float(out.mean()) == pytest.approx(1.0, abs=0.01)
    drops[0].eval()
    assert torch.equal(drops[0](ones), ones)


def test_dropout_in_the_model_drops_p_of_the_active_units():
    """Measured inside the model: the share of non-zero activations the dropout layers zero is p."""
    net = model_from("model=mlp", "model.hidden_sizes=[2000,2000]", "regularization=dropout",
                     "regularization.dropout=0.3")
    seen = []
    for drop in (m for m in net.modules() if isinstance(m, nn.Dropout)):
        assert isinstance(leaves(net)[leaves(net).index(drop) - 1], nn.ReLU), "dropout follows the activation"
        drop.register_forward_hook(lambda _m, inp, out: seen.append((inp[0] != 0, out == 0)))
    x = torch.randn(100, *DIGITS_SHAPE)
    torch.manual_seed(0)
    net.train()
    net(x)
    for active, zeroed in seen:
        assert float((zeroed & active).sum() / active.sum()) == pytest.approx(0.3, abs=0.01)
    net.eval()
    with torch.no_grad():
        assert torch.equal(net(x), net(x))


@pytest.mark.parametrize("model", MODELS)
def test_batchnorm_sits_between_each_hidden_layer_and_its_activation(model):
    net = model_from(f"model={model}", "regularization=batchnorm", "activation=tanh")
    layers = weight_layers(net)
    for layer in layers[:-1]:
        norm = after(net, layer)
        conv = isinstance(layer, nn.Conv2d)
        assert type(norm) is (nn.BatchNorm2d if conv else nn.BatchNorm1d)
        assert norm.num_features == (layer.out_channels if conv else layer.out_features)
        assert type(after(net, norm)) is nn.Tanh
    assert after(net, layers[-1]) is None
    assert sum(isinstance(m, NORMS) for m in net.modules()) == len(layers) - 1
    assert not any(isinstance(m, NORMS) for m in model_from(f"model={model}", "regularization=[l2]").modules())
    assert all(layer.bias is None for layer in layers[:-1]) and layers[-1].bias is not None  # BN's shift replaces it


# ============================================================================= optimizer
EXPECTED_OPTIMIZERS = {
    "sgd": (torch.optim.SGD, {"lr": 1e-2, "momentum": 0.0, "nesterov": False}),
    "momentum": (torch.optim.SGD, {"momentum": 0.9, "nesterov": False}),
    "nesterov": (torch.optim.SGD, {"momentum": 0.9, "nesterov": True}),
    "adagrad": (torch.optim.Adagrad, {}),
    "rmsprop": (torch.optim.RMSprop, {"alpha": 0.99}),
    "adam": (torch.optim.Adam, {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0}),
    "adamw": (torch.optim.AdamW, {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-2}),
}


def test_adam_is_the_default_optimizer():
    assert type(build(compose("++data.subset=100")).optimizer) is torch.optim.Adam


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_optimizer_class_and_hyperparameters(name):
    kind, expected = EXPECTED_OPTIMIZERS[name]
    optimizer = build(compose(f"optimizer={name}", "++data.subset=100")).optimizer
    assert type(optimizer) is kind
    group = optimizer.param_groups[0]
    for key, value in expected.items():
        actual = tuple(group[key]) if isinstance(value, tuple) else group[key]
        assert actual == pytest.approx(value), key


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_lr_is_the_same_key_for_every_optimizer(name):
    optimizer = build(compose(f"optimizer={name}", "optimizer.lr=0.0123", "++data.subset=100")).optimizer
    assert [g["lr"] for g in optimizer.param_groups] == [0.0123] * len(optimizer.param_groups)


def test_adamw_decays_conv_and_linear_weights_only():
    exp = build(compose("optimizer=adamw", "regularization=batchnorm", "++data.subset=100"))
    decayed, free = exp.optimizer.param_groups
    assert decayed["weight_decay"] == 1e-2 and free["weight_decay"] == 0.0
    weights = {id(m.weight) for m in weight_layers(exp.model)}
    assert {id(p) for p in decayed["params"]} == weights
    free_ids = {id(p) for p in free["params"]}
    assert len(free_ids) == sum(1 for _ in exp.model.parameters()) - len(weights)
    for m in exp.model.modules():
        if isinstance(m, NORMS):
            assert id(m.weight) in free_ids and id(m.bias) in free_ids
        if isinstance(m, WEIGHT_LAYERS) and m.bias is not None:  # layers before batch norm have none
            assert id(m.bias) in free_ids


def test_one_sgd_step_moves_each_weight_by_minus_lr_times_grad():
    exp = build(compose("optimizer=sgd", "optimizer.lr=0.5", "regularization=none", "++data.subset=100",
                        "trainer.dtype=float64"))
    before = [p.detach().clone() for p in exp.model.parameters()]
    F.cross_entropy(exp.model(exp.data.x_train[:32]), exp.data.y_train[:32]).backward()
    grads = [p.grad.detach().clone() for p in exp.model.parameters()]
    exp.optimizer.step()
    for p, w0, g in zip(exp.model.parameters(), before, grads):
        assert torch.equal(p.detach(), w0 - 0.5 * g)  # lr = 0.5 makes lr * grad exact
    assert any(float(g.abs().max()) > 1e-3 for g in grads)


# ============================================================================= schedule
LR0, EPOCHS = 0.1, 10


def closed_form(name: str, t: int) -> float:
    """The learning rate after t scheduler steps (epochs) with the options' default settings."""
    cosine = lambda s, span: LR0 * (1 + math.cos(math.pi * s / span)) / 2  # noqa: E731
    return {
        "constant": lambda: LR0,
        "step": lambda: LR0 * 0.5 ** (t // 5),
        "exponential": lambda: LR0 * 0.9**t,
        "inverse_time": lambda: LR0 / (1 + 0.5 * t),
        "cosine": lambda: cosine(t, EPOCHS),
        "warmup_cosine": lambda: LR0 * (0.1 + 0.9 * t / 2) if t <= 2 else cosine(t - 2, EPOCHS - 2),
        "plateau": lambda: LR0 * 0.5 ** ((t - 1) // 3) if t >= 1 else LR0,  # patience 2: every 3rd bad epoch
    }[name]()


def test_step_is_the_default_schedule_halving_every_5_epochs():
    schedule = compose().schedule
    assert (schedule._target_, schedule.step_size, schedule.gamma) == ("torch.optim.lr_scheduler.StepLR", 5, 0.5)


@pytest.mark.parametrize("name", [s for s in SCHEDULES if s != "onecycle"])
def test_schedule_follows_its_closed_form(name):
    """The run's learning rate at the first step of each epoch, read after EPOCHS epochs of steps
    (plateau sees a val loss that never improves); constant within an epoch."""
    exp = build(compose(f"schedule={name}", "optimizer=sgd", f"optimizer.lr={LR0}", f"trainer.epochs={EPOCHS}",
                        "++data.subset=100"))
    schedule, steps = exp.schedule, exp.steps_per_epoch
    assert steps == 2 and schedule.rate(0) == pytest.approx(closed_form(name, 0))
    lrs = []
    for epoch in range(1, EPOCHS + 1):
        first = (epoch - 1) * steps
        assert schedule.rate(first + steps - 1) == schedule.rate(first)  # an epoch schedule holds within an epoch
        schedule.observe(1.0)
        lrs.append(schedule.rate(epoch * steps))
    expected = [closed_form(name, t) for t in range(1, EPOCHS + 1)]
    assert lrs == pytest.approx(expected, rel=1e-9, abs=1e-15)
    assert name == "constant" or lrs[-1] < LR0


def test_one_cycle_steps_every_batch_warming_up_then_annealing():
    """schedule=onecycle: per step, from lr / 10 up to lr at 25% of the run's steps, then linearly down to lr / 1000."""
    exp = build(compose("schedule=onecycle", "optimizer=sgd", f"optimizer.lr={LR0}", f"trainer.epochs={EPOCHS}",
                        "++data.subset=100"))
    schedule, total = exp.schedule, EPOCHS * exp.steps_per_epoch  # 20 steps
    rates = [schedule.rate(k) for k in range(total)]
    peak = 5  # 25% of 20 steps
    assert rates[0] == pytest.approx(LR0 / 10) and rates[peak] == pytest.approx(LR0)
    assert rates[-1] == pytest.approx(LR0 / 1000)
    assert all(a < b for a, b in zip(rates[:peak], rates[1:peak + 1]))  # rising every step
    assert all(a > b for a, b in zip(rates[peak:-1], rates[peak + 1:]))  # falling every step
    assert rates[1] - rates[0] == pytest.approx((LR0 - LR0 / 10) / peak)  # linear up
    assert rates[peak] - rates[peak + 1] == pytest.approx((LR0 - LR0 / 1000) / (total - 1 - peak))  # linear down
    assert exp.schedule.epoch_rate(2) == rates[exp.steps_per_epoch]  # an epoch's row logs its first step's rate


def test_one_cycle_stepped_per_epoch_spans_the_run_in_epochs():
    """per_step: false makes the cycle's steps epochs, over trainer.epochs (not the class's default 100)."""
    exp = build(compose("schedule=onecycle", "schedule.per_step=false", "optimizer=sgd", f"optimizer.lr={LR0}",
                        f"trainer.epochs={EPOCHS}", "++data.subset=100"))
    rates = [exp.schedule.epoch_rate(epoch) for epoch in range(1, EPOCHS + 1)]
    assert rates[0] == pytest.approx(LR0 / 10) and max(rates) == pytest.approx(LR0) and rates.index(max(rates)) == 2
    assert rates[-1] == pytest.approx(LR0 / 1000)  # the last epoch ends the cycle


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_one_cycle_runs_the_shortest_runs(steps):
    from expt.optim import one_cycle

    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=LR0)
    schedule = one_cycle(opt, total_steps=steps)
    rates = []
    for _ in range(steps):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.step()
    assert all(0 < r <= LR0 for r in rates) and max(rates) == pytest.approx(LR0)
    if steps > 1:  # the first step warms up, however few steps there are (25% of 2 rounds to none)
        assert rates[0] == pytest.approx(LR0 / 10) and rates[1] == pytest.approx(LR0)


def test_warmup_cosine_per_step_warms_up_within_the_first_epochs():
    """schedule.per_step=true: warmup_cosine counts batches, so the rate climbs inside the first epoch."""
    per_epoch = build(compose("schedule=warmup_cosine", f"optimizer.lr={LR0}", f"trainer.epochs={EPOCHS}",
                              "++data.subset=100")).schedule
    per_step = build(compose("schedule=warmup_cosine", "schedule.per_step=true", f"optimizer.lr={LR0}",
                             f"trainer.epochs={EPOCHS}", "++data.subset=100")).schedule
    assert per_epoch.rate(0) == per_epoch.rate(1) == pytest.approx(LR0 / 10)
    assert per_step.rate(0) == pytest.approx(LR0 / 10) and per_step.rate(1) > per_step.rate(0)
    assert per_step.rate(4) == pytest.approx(LR0)  # 2 warm-up epochs of 2 steps
    assert per_step.rate(2 * EPOCHS) == pytest.approx(0.0, abs=1e-12)  # the cosine ends at eta_min


def test_logged_lr_per_epoch_in_a_real_run(tmp_path):
    cfg = compose("schedule=step", "schedule.step_size=1", "trainer.epochs=3", "++data.subset=200", *QUIET)
    expt.train(cfg, run_dir=tmp_path)
    history = json.loads((tmp_path / "metrics.json").read_text())["history"]
    lr0 = cfg.optimizer.lr
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert [row["lr"] for row in history] == pytest.approx([lr0, lr0 * 0.5, lr0 * 0.25], rel=1e-12)


# ============================================================================= every option via the CLI
SWEEPS = {
    "activation": tuple(ACTIVATIONS),
    "preprocessing": PREPROCESSING,
    "init": INITS,
    "regularization": REGULARIZATION,
    "optimizer": OPTIMIZERS,
    "schedule": SCHEDULES,
    "model": (*MODELS, "resnet"),
}


def test_option_lists_match_conf():
    """The option lists swept here are exactly the files under conf/<group>/."""
    import expt.conf

    conf = Path(list(expt.conf.__path__)[0])
    for group, options in SWEEPS.items():
        assert sorted(p.stem for p in (conf / group).glob("*.yaml")) == sorted(options), group


# the groups that change the layers the dashboards draw (filters, histograms, the graph) run with every
# diagnostic on; for the others the diagnostics would draw the same layers again
DIAGNOSED = ("model", "regularization")


def run_sweep(group: str, root: Path) -> tuple[subprocess.CompletedProcess, Path]:
    sweep_dir = root / group
    quiet = () if group in DIAGNOSED else QUIET
    proc = run_cli("-m", f"{group}={','.join(SWEEPS[group])}", *QUICK, *quiet, "trainer.device=cpu",
                   f"hydra.sweep.dir={sweep_dir}", cwd=root,
                   env={"OMP_NUM_THREADS": "1"})  # two sweeps share the cores
    return proc, sweep_dir


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    """Every group's options swept through ``python -m expt -m``, two sweeps at a time."""
    root = tmp_path_factory.mktemp("sweeps")
    with ThreadPoolExecutor(2) as pool:
        results = pool.map(lambda g: run_sweep(g, root), SWEEPS)
        return dict(zip(SWEEPS, results))


@pytest.mark.slow
@pytest.mark.parametrize("group", SWEEPS)
def test_every_option_runs_from_the_cli(group, sweeps):
    proc, sweep_dir = sweeps[group]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    jobs = sorted((d for d in sweep_dir.iterdir() if d.is_dir()), key=lambda d: int(d.name))
    assert len(jobs) == len(SWEEPS[group])
    ran = set()
    for job in jobs:
        overrides = (job / ".hydra" / "overrides.yaml").read_text()
        ran |= {o for o in SWEEPS[group] if f"- {group}={o}\n" in overrides}
        metrics = json.loads((job / "metrics.json").read_text())
        assert metrics["status"] == "completed" and metrics["epochs_completed"] == 1, job
        assert math.isfinite(metrics["initial_loss"]) and math.isfinite(metrics["final_train_loss"])
        assert (job / "checkpoints" / "last.pt").is_file()
    assert ran == set(SWEEPS[group])
