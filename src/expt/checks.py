"""The recipe's sanity checks on a model and tensors, and the guard that runs the first one before training.

1. **Loss at init** (:func:`loss_at_init`): with regularization off, the initial data loss is about log C.
2. **Regularization raises the loss** (:func:`regularization_raises_loss`).
3. **Gradient check** (:func:`gradient_check`): back-propagated gradients agree with centred differences in float64.

Each returns a :class:`Check` (the measured number, what was expected, pass or fail, and a
hint when it fails). They take a plain model and tensors, so they apply to any ``nn.Module``,
not only the ones expt builds. Check 4 (overfit a tiny set) trains, so it lives with the
``mode=sanity`` command in :mod:`expt.sanity`.

Before a normal run, :func:`guard` judges check 1 on the loss at init the trainer measures: a warning by
default, an error with ``sanity.before_train=strict``, nothing with ``sanity.before_train=false``.
"""

from __future__ import annotations

import copy
import logging
import math
import statistics
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional

import torch
import torch.nn.functional as F
from torch import nn

from expt.errors import ConfigError, sentence
from expt.predict import data_loss, logits
from expt.loss import classification_loss, training_loss
from expt.regularization import penalized_weights

if TYPE_CHECKING:
    from expt.build import Experiment

log = logging.getLogger("expt.sanity")  # the sanity checks speak under one name, with or without the command

# Gradient-check grades for the relative error |a - n| / max(|a|, |n|) (CS231n, "Neural Networks 3").
GOOD_REL_ERROR = 1e-7  # below: the gradient is right
ACCEPTABLE_REL_ERROR = 1e-4  # up to here: fine for losses with kinks (ReLU, max pool); the pass threshold
WRONG_REL_ERROR = 1e-2  # above: the gradient is wrong

# Step h of the centred difference. In float64 the truncation error (about h^2 times the third
# derivative) and the rounding error (about epsilon * |f| / h = 1e-16 * |f| / h) of the quotient
# are both far below the grades above at h = 1e-5.
GRADCHECK_STEP = 1e-5
# An entry whose gradient is less than this factor times the rounding error of the quotient is
# too small to measure: rounding alone would give it a relative error above 1 / RESOLUTION_FACTOR.
RESOLUTION_FACTOR = 1e5
# How many entries of one tensor may be tried (kink crossings and unmeasurable entries are redrawn).
TRIES_PER_ENTRY = 10

# The guard called on an experiment alone measures the loss on at most this many training samples: one forward
# pass, a standard error of about 0.03 on the loss (a run's trainer hands it the loss at init it measured).
GUARD_SAMPLES = 500

PenaltyFn = Callable[[nn.Module], "torch.Tensor | float"]


class SanityError(ConfigError):
    """A sanity check that failed before training with ``sanity.before_train=strict``."""


@dataclass
class Check:
    """The outcome of one sanity check, as printed in the report and stored in ``sanity.json``."""

    name: str  # machine-readable key
    title: str  # what the report calls it
    passed: bool
    measured: float  # the number the verdict is based on
    expected: str  # the expected value or threshold, in words
    summary: str  # the measured number in words
    hint: str = ""  # the likely cause, when the check fails
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# inputs whose magnitude passes this are not on the scale of preprocessed images (0-255 pixels, unscaled)
LARGE_INPUT = 10.0


# ----------------------------------------------------------------------------- helpers
def sample(x: torch.Tensor, y: torch.Tensor, count: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` random examples, drawn with a private generator so the global RNG (dropout) is untouched."""
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:count].to(x.device)
    return x[order], y[order]


def number_text(value: float) -> str:
    """Four decimals for losses of everyday size, four significant digits otherwise."""
    if not math.isfinite(value):
        return str(value)
    return f"{value:.4f}" if 1e-3 <= abs(value) < 1e4 or value == 0 else f"{value:.4g}"


# ----------------------------------------------------------------------------- 1. loss at init
def loss_at_init(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int, tolerance: float,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = classification_loss,
    measured: Optional[float] = None,
) -> Check:
    """Check 1: the data loss of the initialised model is log C within a relative ``tolerance``.

    With small random logits a softmax classifier predicts about 1/C for every class, so the
    cross-entropy starts near log C (2.303 for 10 classes). expt's Kaiming and Xavier give the
    classifier a twentieth of the formula's sigma (``init.classifier_scale``), so every shipped
    model and activation starts within 2% of log C; with the plain formula (k = 1) the logits have
    about unit variance and the loss starts well above it (12% above log 10 for the default convnet, 30% without
    its batch norm).
    The default tolerance, 5%, accepts 2.19 to 2.42 for 10 classes: it fails the plain formula, a
    weight scale that is too large, and a loss summed over the batch instead of averaged.
    ``loss_fn(logits, labels)`` is the loss under test (the mean cross-entropy).

    The details also give the loss after subtracting each class's mean logit over the samples.
    When only the raw loss is too high, the excess is an offset shared by every sample: the
    activations feeding the classifier have a non-zero mean (ReLU, GELU, SiLU), which a large
    classifier scale turns into per-class offsets; the hint says so.

    ``measured``: the data loss already measured on (x, y) (the trainer's loss at init, which :func:`guard`
    judges); the model then runs only where the check fails, for the hint, and a pass has no centred loss.
    """
    target = math.log(num_classes)
    low, high = target * (1 - tolerance), target * (1 + tolerance)
    z = None  # the logits: for the loss, or for the hint of a measured loss that fails
    if len(x) and (measured is None or not low <= measured <= high):
        z = logits(model, x).double()
    loss = measured if measured is not None else float(loss_fn(z, y)) if z is not None else math.nan
    passed = math.isfinite(loss) and low <= loss <= high
    centred = float(loss_fn(z - z.mean(dim=0), y)) if z is not None else math.nan
    hint = ""
    if not math.isfinite(loss):
        hint = "the loss is not finite: NaN or Inf in the inputs or the weights (check the data and the init)"
    elif loss > high and low <= centred <= high:
        hint = (
            f"most of the excess is a per-class offset shared by all samples (loss {number_text(centred)} without it): "
            "the activations feeding the classifier have a non-zero mean (ReLU, GELU, SiLU) and the classifier's "
            "weights are large; init.classifier_scale=0.05 (the default of kaiming and xavier) starts the logits near 0"
        )
    elif loss > high and (peak := float(x.abs().max()) if len(x) else 0.0) > LARGE_INPUT:  # measured on failure only
        hint = (
            f"the inputs reach {number_text(peak)}: pixels on a 0-255 scale, unscaled (preprocessing=none "
            "keeps float pixels as they are; uint8 ones are scaled to 0-1)? Scale them to [0, 1], or standardize "
            "them (preprocessing=per_channel_standardize)"
        )
    elif loss > high:
        hint = (
            "weight scale too large? The logits start large and confidently wrong (init.weight_scale, "
            "init.classifier_scale, or a gain that does not match the activation); or a loss summed instead of averaged"
        )
    elif loss < low:
        hint = (
            "the untrained model already predicts the labels: are labels leaking into the inputs, "
            "or is the loss not the mean cross-entropy?"
        )
    return Check(
        name="loss_at_init",
        title="loss at init",
        passed=passed,
        measured=loss,
        expected=f"about {target:.4f} = log({num_classes}), within {tolerance:.0%} ({low:.4f} to {high:.4f})",
        summary=f"initial loss {number_text(loss)}",
        hint=hint,
        details={"loss": loss, "loss_without_class_offsets": centred, "log_c": target, "low": low, "high": high,
                 "tolerance": tolerance, "samples": len(x)},
    )


# ----------------------------------------------------------------------------- 2. regularization
def regularization_raises_loss(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, penalty: Callable[[], "torch.Tensor | float"], strength: float
) -> Check:
    """Check 2: the initial loss with an L2 penalty of ``strength`` exceeds the loss with strength 0, by
    ``strength * sum(w^2)`` over the Linear and ConvNd weights (relative error 1e-4).

    ``penalty()`` is the penalty the trainer would add with L2 strength ``strength``. With
    strength 0 the loss is the data loss alone; with it, the loss the trainer records
    (:func:`expt.loss.training_loss`). A penalty that never reaches the loss, or is computed otherwise
    than documented, fails; weight matrices of other kinds, which the penalty leaves alone by design,
    are named in the summary.
    """
    without = data_loss(model, x, y)
    penalized = penalized_weights(model)
    with torch.no_grad():
        added = float(penalty())
        expected_increase = strength * sum(float(w.double().square().sum()) for w in penalized)
    # weight matrices the penalty leaves alone by design (not a Linear's or a ConvNd's): said, not failed
    ids = {id(w) for w in penalized}
    unpenalized = [name for name, p in model.named_parameters() if p.dim() >= 2 and id(p) not in ids]
    with_penalty = training_loss(without, added)  # the loss the trainer minimises and records
    increase = with_penalty - without
    passed = (math.isfinite(with_penalty) and with_penalty > without
              and math.isclose(increase, expected_increase, rel_tol=1e-4))
    hint = ""
    if not (with_penalty > without):
        hint = (
            "the penalty does not reach the loss: does the model have conv/linear weights "
            "(torch.nn.Linear, Conv1d/2d/3d) for the regularizer to act on? "
            f"sanity.reg_strength={strength} must be > 0"
        )
    elif not passed:
        hint = (f"the penalty adds {number_text(increase)} where l2 * sum(w^2) over the Linear and ConvNd weights is "
                f"{number_text(expected_increase)}: it is computed otherwise than documented")
    return Check(
        name="regularization_raises_loss",
        title="regularization raises loss",
        passed=passed,
        measured=with_penalty,
        expected=f"> {number_text(without)} (loss with l2=0); l2 * sum(w^2) adds {number_text(expected_increase)}",
        summary=f"loss {number_text(without)} -> {number_text(with_penalty)} with l2={strength:g}"
                + (f" (not penalized, as they are no Linear or ConvNd weights: {', '.join(unpenalized[:3])}"
                   f"{', ...' if len(unpenalized) > 3 else ''})" if unpenalized else ""),
        hint=hint,
        details={"loss_without": without, "loss_with": with_penalty, "increase": increase,
                 "expected_increase": expected_increase, "strength": strength, "unpenalized": unpenalized},
    )


# ----------------------------------------------------------------------------- 3. gradient check
_MAX_POOLS: dict[type, Callable[..., Any]] = {
    nn.MaxPool1d: F.max_pool1d, nn.MaxPool2d: F.max_pool2d, nn.MaxPool3d: F.max_pool3d,
}
_ADAPTIVE_MAX_POOLS: dict[type, Callable[..., Any]] = {
    nn.AdaptiveMaxPool1d: F.adaptive_max_pool1d, nn.AdaptiveMaxPool2d: F.adaptive_max_pool2d,
    nn.AdaptiveMaxPool3d: F.adaptive_max_pool3d,
}


KINKED = (nn.ReLU, nn.LeakyReLU, nn.PReLU, nn.Hardtanh, *_MAX_POOLS, *_ADAPTIVE_MAX_POOLS)


def _kink_pattern(module: nn.Module, x: torch.Tensor) -> Optional[torch.Tensor]:
    """Which side of its kinks each input of a piecewise-linear module is on; None for smooth modules.

    ReLU, leaky ReLU and PReLU change slope at 0, hardtanh (and ReLU6) at its two limits; a
    max pool's gradient follows the position of each window's maximum.
    """
    if isinstance(module, (nn.ReLU, nn.LeakyReLU, nn.PReLU)):
        return x > 0
    if isinstance(module, nn.Hardtanh):
        return (x > module.min_val).to(torch.int8) + (x < module.max_val).to(torch.int8)
    for cls, pool in _MAX_POOLS.items():
        if isinstance(module, cls):
            m: Any = module
            return pool(x, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode, return_indices=True)[1]
    for cls, pool in _ADAPTIVE_MAX_POOLS.items():
        if isinstance(module, cls):
            return pool(x, module.output_size, return_indices=True)[1]  # type: ignore[attr-defined]
    return None


class _KinkRecorder:
    """Forward hooks that record the kink pattern of every piecewise-linear module during one forward."""

    def __init__(self, model: nn.Module):
        self.patterns: list[torch.Tensor] = []
        self.handles = [m.register_forward_hook(self._hook) for m in model.modules() if isinstance(m, KINKED)]

    @property
    def has_kinks(self) -> bool:
        return bool(self.handles)

    def _hook(self, module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        pattern = _kink_pattern(module, inputs[0].detach())
        if pattern is not None:
            self.patterns.append(pattern)

    def take(self) -> list[torch.Tensor]:
        patterns, self.patterns = self.patterns, []
        return patterns

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(p, q) for p, q in zip(a, b))


def _grade(error: float) -> str:
    if not math.isfinite(error):
        return "wrong"
    if error < GOOD_REL_ERROR:
        return "good"
    if error <= ACCEPTABLE_REL_ERROR:
        return "acceptable"
    if error <= WRONG_REL_ERROR:
        return "doubtful"
    return "wrong"


def relative_error(analytic: float, numeric: float) -> float:
    """|a - n| / max(|a|, |n|), and 0 when both are exactly 0."""
    scale = max(abs(analytic), abs(numeric))
    return abs(analytic - numeric) / scale if scale > 0 else 0.0


def gradient_check(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    penalty_fn: Optional[PenaltyFn] = None,
    entries: int = 5,
    step: float = GRADCHECK_STEP,
    seed: int = 0,
) -> Check:
    """Check 3: back-propagated gradients against centred differences, a few entries of every parameter.

    ``f = cross_entropy(model(x), y) + penalty_fn(model)`` is evaluated on a float64 deep copy
    of ``model`` on the same device (``model`` itself is untouched). ``penalty_fn`` receives the
    copy, so it must read the weights from its argument. The copy runs in train mode with every
    dropout module switched to eval: dropout off, and batch norm normalizing with the statistics
    of ``x`` as in a training step, which is a deterministic function of the parameters, so the
    same function is differentiated both ways (use 3 or more examples with batch norm after a
    linear layer: with 2, each normalized feature is about +-1 and its gradient nearly vanishes).

    For each parameter tensor, ``entries`` random entries are checked with
    n = (f(w + h) - f(w - h)) / 2h. An entry is redrawn (up to ``TRIES_PER_ENTRY`` times the
    requested number) when

    * the perturbation moves an input of a ReLU, leaky ReLU, hardtanh or max pool across its
      kink: the one-sided slopes differ there and the difference quotient averages them, which
      says nothing about the back-propagated gradient (a kink the checker cannot see, such as a
      functional ``torch.relu`` in a custom forward, is not redrawn);
    * max(|a|, |n|) is below ``RESOLUTION_FACTOR`` times the rounding error of the quotient
      (float64 epsilon * |f| / h): the relative error of so small a gradient is rounding noise.

    The relative error of each tensor is the maximum over its checked entries. The check
    passes when no tensor exceeds ``ACCEPTABLE_REL_ERROR`` (1e-4). With kink crossings redrawn,
    correct models measure 1e-11 to about 1e-5 (the larger values are rounding on small
    gradients, which ``RESOLUTION_FACTOR`` keeps below 1e-5). 1e-4 to 1e-2 ("doubtful") fails:
    that is the size of a small real bug (a wrong constant, one branch computed slightly wrong)
    or of a kink the checker cannot see, both worth a look; above 1e-2 the gradient is wrong.
    A tensor with no measurable entry (every try crossed a kink or had a vanishing gradient,
    e.g. the bias of a layer followed by batch norm, which cancels it) is reported as unchecked
    and does not fail the check; the check fails when no tensor at all could be measured.
    """
    params = list(model.parameters())
    device = params[0].device if params else x.device
    net = copy.deepcopy(model).to(device=device, dtype=torch.float64)
    net.train()
    for module in net.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):
            module.eval()
    x64, y = x.to(device=device, dtype=torch.float64), y.to(device)
    with _one_thread(x64.device):
        return _gradient_check(net, x64, y, penalty_fn, entries, step, seed)


@contextmanager
def _one_thread(device: torch.device) -> Iterator[None]:
    """Run on one CPU thread: 2-3 examples are too small for intra-op threads to help, and on a busy
    machine their synchronisation made the check 30 times slower on 2 cores."""
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _gradient_check(
    net: nn.Module, x64: torch.Tensor, y: torch.Tensor, penalty_fn: Optional[PenaltyFn],
    entries: int, step: float, seed: int,
) -> Check:
    """The body of :func:`gradient_check` on its float64 copy ``net`` and inputs ``x64``."""

    def f() -> torch.Tensor:
        loss = classification_loss(net(x64), y)
        return loss + penalty_fn(net) if penalty_fn is not None else loss

    recorder = _KinkRecorder(net)
    net.zero_grad(set_to_none=True)
    centre = f()
    centre.backward()
    loss = _Loss(f, recorder, recorder.take(), centre.item())
    picker = torch.Generator().manual_seed(seed)
    started = time.perf_counter()
    with torch.no_grad():
        tensors = {name: _check_tensor(loss, param, entries, step, picker) for name, param in net.named_parameters()}
    recorder.remove()
    measured = {"samples": len(x64), "step": step, "loss": loss.value, "has_kinks": recorder.has_kinks,
                "seconds": time.perf_counter() - started}
    return _gradient_verdict(tensors, measured)


@dataclass
class _Loss:
    """The checked loss ``f`` of the float64 copy, with its value and its kink pattern at the trained weights."""

    f: Callable[[], torch.Tensor]
    recorder: _KinkRecorder
    centre: list[torch.Tensor]  # the kink pattern at the trained weights
    value: float

    def centred_difference(self, flat: torch.Tensor, index: int, step: float) -> Optional[tuple[float, float]]:
        """(f(w + h) - f(w - h)) / 2h at the entry ``flat[index]``, with 2h the step float64 actually took, and the
        larger |f| of the two; None when either step moves an input across a kink. The entry is restored."""
        original = flat[index].item()
        flat[index] = original + step
        up = float(self.f())
        up_pattern = self.recorder.take()
        up_step = flat[index].item() - original
        flat[index] = original - step
        down = float(self.f())
        down_pattern = self.recorder.take()
        down_step = original - flat[index].item()
        flat[index] = original
        if not (_same(self.centre, up_pattern) and _same(self.centre, down_pattern)):
            return None
        return (up - down) / (up_step + down_step), max(abs(up), abs(down))


def _check_tensor(
    loss: _Loss, param: torch.Tensor, entries: int, step: float, picker: torch.Generator,
) -> dict[str, Any]:
    """``entries`` random entries of ``param`` (fewer where it has fewer), each back-propagated gradient against
    its centred difference; entries whose step crosses a kink, or whose gradient is too small to measure, are
    redrawn up to ``TRIES_PER_ENTRY`` times the number asked for. The tensor's row of the report."""
    eps = torch.finfo(torch.float64).eps
    analytic = (param.grad if param.grad is not None else torch.zeros_like(param)).reshape(-1)
    flat = param.view(-1)
    wanted = min(entries, flat.numel())
    order = torch.randperm(flat.numel(), generator=picker)[: wanted * TRIES_PER_ENTRY].tolist()
    errors: list[float] = []
    checked: list[dict[str, float]] = []
    kinks = tiny = 0
    for index in order:
        if len(errors) == wanted:
            break
        difference = loss.centred_difference(flat, index, step)
        if difference is None:
            kinks += 1
            continue
        numeric, size = difference
        a = analytic[index].item()
        rounding = eps * max(size, abs(loss.value)) / step
        if max(abs(a), abs(numeric)) < RESOLUTION_FACTOR * rounding and math.isfinite(numeric):
            tiny += 1
            continue
        error = relative_error(a, numeric) if math.isfinite(numeric) and math.isfinite(a) else math.inf
        errors.append(error)
        checked.append({"index": index, "analytic": a, "numeric": numeric, "rel_error": error})
    worst = max(errors) if errors else None
    return {
        "shape": list(param.shape),
        "max_rel_error": worst,
        "median_rel_error": statistics.median(errors) if errors else None,
        "grade": _grade(worst) if worst is not None else "unchecked",
        "checked": len(errors),
        "skipped_kink": kinks,
        "skipped_tiny": tiny,
        "entries": checked,
    }


def _gradient_verdict(tensors: dict[str, dict[str, Any]], measured: dict[str, Any]) -> Check:
    """Check 3's result from every tensor's row: it passes when a tensor could be measured and none is above
    ``ACCEPTABLE_REL_ERROR``; ``measured`` (samples, step, loss, kinks, seconds) goes into its details."""
    measured_errors = [t["max_rel_error"] for t in tensors.values() if t["max_rel_error"] is not None]
    worst = max(measured_errors) if measured_errors else 0.0
    failing = [n for n, t in tensors.items()
               if t["max_rel_error"] is not None and not t["max_rel_error"] <= ACCEPTABLE_REL_ERROR]
    unchecked = [n for n, t in tensors.items() if t["max_rel_error"] is None]
    passed = not failing and bool(measured_errors)
    hint = ""
    if failing:
        worst_name = max(failing, key=lambda n: tensors[n]["max_rel_error"])
        hint = (
            f"the back-propagated gradient of {', '.join(failing)} disagrees with the numerical one "
            f"({_grade(tensors[worst_name]['max_rel_error'])}: {number_text(tensors[worst_name]['max_rel_error'])} "
            f"for {worst_name}): a hand-written backward, an in-place or non-differentiable op, "
            "randomness in the forward, or a kink the checker cannot see (e.g. functional relu)"
        )
    elif not measured_errors:
        hint = "no parameter had a measurable gradient entry: every try crossed a kink or the gradients vanish"
    summary = f"max rel. error {number_text(worst)} over {len(measured_errors)} tensors"
    if unchecked:
        summary += f" ({len(unchecked)} unchecked)"
    return Check(
        name="gradient_check",
        title="gradient check",
        passed=passed,
        measured=worst,
        expected=(f"<= {ACCEPTABLE_REL_ERROR:.0e} per tensor (good < {GOOD_REL_ERROR:.0e}, "
                  f"wrong > {WRONG_REL_ERROR:.0e})"),
        summary=summary,
        hint=hint,
        details={"tensors": tensors, **measured, "failing": failing, "unchecked": unchecked},
    )


# ----------------------------------------------------------------------------- the guard before training
def guard(exp: Experiment, x: Optional[torch.Tensor] = None, y: Optional[torch.Tensor] = None,
          loss: Optional[float] = None, log_prefix: str = "") -> None:
    """Check 1 on a freshly built experiment, before its first step, as ``sanity.before_train`` says.

    ``warn`` (the default) logs a warning when the initial data loss is far from log C,
    ``strict`` raises :class:`SanityError` (the CLI prints it and exits 1), ``false`` skips it.
    ``loss`` is the data loss alone (in eval mode: no dropout, no penalty, even when the run
    regularizes) that the trainer measured on its training subsample (x, y) as the loss the run starts from:
    the guard judges that number and runs the model again only to explain a failure. Called on ``exp`` alone,
    it measures the data loss on up to ``GUARD_SAMPLES`` training samples itself.
    A resumed run is not checked: its checkpoint replaces the initial weights. ``log_prefix`` names a population's
    member in the lines logged.
    """
    cfg = exp.cfg
    mode = str(cfg.sanity.before_train).lower()
    if mode == "false" or cfg.trainer.get("resume"):
        return
    if x is None or y is None:
        d = exp.data
        x, y = sample(d.x_train, d.y_train, min(len(d.x_train), GUARD_SAMPLES), int(cfg.trainer.seed))
        loss = None
    check = loss_at_init(exp.model, x, y, exp.data.num_classes, float(cfg.sanity.loss_tolerance), measured=loss)
    if check.passed:
        log.info("%sSanity check: %s, expected %s.", log_prefix, check.summary, check.expected)
        return
    message = f"Sanity check failed before training: {check.summary}, expected {check.expected}: {sentence(check.hint)}"
    if mode == "strict":
        raise SanityError(f"{message} The run stops (sanity.before_train=strict; warn trains anyway).")
    log.warning("%s%s Training anyway (sanity.before_train=warn; strict stops, false skips this check).", log_prefix,
                message)
