"""The run's learning rate from its config, and the dry run that checks it before any data is loaded.

:func:`learning_rate` is the one place a ``schedule`` option (with ``optimizer.lr`` and
``trainer.epochs``) becomes the run's :class:`expt.schedule.LearningRate`: the builder uses it for
the run, :func:`dry_run` for its check. :func:`dry_run` (the last of :func:`expt.config.validate`'s
checks) applies the activation to a few numbers and steps the optimizer and schedule on a dummy
parameter, so that a value the class itself rejects stops the run before training, naming its settings.
It needs torch, so :mod:`expt.config` imports it where ``validate`` runs it: a misspelt key is told without torch.
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any, Callable

import torch
from omegaconf import DictConfig, OmegaConf

from expt.errors import ConfigError, reason
from expt.instantiate import instantiate, locate, settings_text, shape_hint, to_plain
from expt.schedule import LearningRate
from expt.values import is_integer, is_number

MAX_DRY_RUN_EPOCHS = 10_000  # the schedule's rates are checked for at most this many epochs
PER_STEP = "per_step"  # a schedule option's key saying it steps every batch; not passed to its class
DRY_RUN_STEPS = 10

log = logging.getLogger(__name__)


def learning_rate(cfg: DictConfig, steps_per_epoch: int) -> Any:
    """The run's :class:`expt.schedule.LearningRate`: its schedule option, optimizer.lr and trainer.epochs."""
    node = to_plain(cfg.schedule)
    per_step = bool(node.pop(PER_STEP, False))
    factory = instantiate(OmegaConf.create(node), "schedule")
    try:
        return LearningRate(factory, cfg.optimizer.lr, steps_per_epoch, cfg.trainer.epochs, per_step)
    except ConfigError:
        raise
    except Exception as exc:  # the class rejects its settings for this run's length
        why = reason(exc)
        span = (f"{cfg.trainer.epochs} epochs of {steps_per_epoch} steps" if per_step
                else f"{cfg.trainer.epochs} epochs")
        raise ConfigError(f"schedule={node.get('_target_')} cannot run with {settings_text(cfg.schedule, 'schedule')} "
                          f"over {span}: {type(exc).__name__}: {why}.") from None


def dry_run(cfg: DictConfig) -> None:
    """Apply the activation to a few numbers, build the optimizer and schedule on one dummy parameter
    and step them through the run's epochs (at most ``MAX_DRY_RUN_EPOCHS``), so that a value the class
    itself rejects (a negative momentum, a StepLR step_size of 0, ...) stops the run before training,
    naming its settings, and so does a schedule that would train an epoch at a rate <= 0 or not finite.

    The rates come from the run's :class:`expt.schedule.LearningRate` (ReduceLROnPlateau sees a validation
    loss that never improves, so that it cuts the rate as early as it can). The rate of epoch e is
    the one after e - 1 steps; the rate after the last step is never used, so a schedule may anneal
    to exactly 0 at the end of the run (cosine to eta_min=0). A per-step schedule is checked at the first
    step of each epoch, with :data:`DRY_RUN_STEPS` steps an epoch.
    """
    _check_settings(cfg)
    activation = instantiate(cfg.activation, "activation", partial=True)
    _attempt(cfg, "activation", lambda: activation()(torch.linspace(-3.0, 3.0, 7)))

    param = torch.zeros(2, requires_grad=True)
    make_optimizer = instantiate(cfg.optimizer, "optimizer")
    _attempt(cfg, "optimizer", lambda: make_optimizer([{"params": [param]}]))
    # the data are not loaded yet: a per-step schedule is checked as if an epoch took DRY_RUN_STEPS steps
    schedule = _attempt(cfg, "schedule", lambda: learning_rate(cfg, DRY_RUN_STEPS))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _attempt(cfg, "schedule", lambda: _check_every_epoch(cfg, schedule))


def _whole(value: Any, low: int) -> bool:
    return is_integer(value) and value >= low


def _check_settings(cfg: DictConfig) -> None:
    """Settings torch's own classes take without a word but that train otherwise than meant: a momentum or
    RMSprop decay outside [0, 1) (diverges), a StepLR period or plateau patience below 1 or 0 or a fraction (a
    cut every epoch; StepLR's ``epoch % 2.5``), a plateau schedule stepped per batch (it steps on epochs' validation
    losses), an annealing floor ``eta_min`` at or above ``optimizer.lr`` (a cosine that climbs), and a
    per-epoch warm-up of a fraction of an epoch (rounded: 0.5 gives none). A warm-up as long as the run is warned
    of, not refused: a preset's run shortened to an epoch or two, to try it, is one."""
    optimizer, schedule = cfg.optimizer, cfg.schedule
    if str(optimizer.get("_target_", "")).startswith("torch.optim."):
        for key in ("momentum", "alpha"):
            value = optimizer.get(key)
            if is_number(value) and not 0 <= value < 1:  # else torch
                # says what it takes (a list where one value belongs: expt.instantiate.shape_hint)
                raise ConfigError(f"optimizer.{key}={value} is not allowed: a decay in [0, 1) (0.9 for momentum "
                                  "and 0.99 for RMSprop's alpha are usual).")
    target = str(schedule.get("_target_", ""))
    per_step = bool(schedule.get(PER_STEP, False))
    if target.endswith(".StepLR") and not _whole(schedule.get("step_size"), 1):
        raise ConfigError(f"schedule.step_size={schedule.get('step_size')} is not allowed: a whole number of "
                          "epochs >= 1 between cuts of the rate.")
    if target.endswith(".ReduceLROnPlateau"):
        if not _whole(schedule.get("patience"), 0):
            raise ConfigError(f"schedule.patience={schedule.get('patience')} is not allowed: a whole number of "
                              "epochs >= 0 without improvement before the rate is cut.")
        if per_step:
            raise ConfigError("schedule.per_step=true is not allowed with schedule=plateau: it steps on each "
                              "epoch's validation loss, once an epoch.")
    eta_min, lr = schedule.get("eta_min"), cfg.optimizer.get("lr")
    if is_number(eta_min) and is_number(lr) and eta_min >= lr > 0:
        raise ConfigError(f"schedule.eta_min={eta_min} is not allowed with optimizer.lr={lr}: the rate anneals "
                          "down to eta_min, so it must be below optimizer.lr (0 is usual).")
    warmup = schedule.get("warmup_epochs")
    if not per_step and isinstance(warmup, float) and not warmup.is_integer():  # inf and nan too
        raise ConfigError(f"schedule.warmup_epochs={warmup} is not allowed with schedule.per_step=false: a whole "
                          "number of epochs (a fraction of an epoch needs schedule.per_step=true, which counts the "
                          "warm-up in batches).")
    epochs = cfg.trainer.get("epochs")
    if (is_number(warmup) and _whole(epochs, 1) and warmup >= epochs
            and target.endswith(".warmup_cosine")):  # a schedule of one's own may mean its warm-up otherwise
        log.warning("schedule.warmup_epochs=%s is not below trainer.epochs=%d: the run ends inside its warm-up, so its "
                    "rate never reaches optimizer.lr=%s.", warmup, epochs, lr)


def _attempt(cfg: DictConfig, group: str, fn: Callable[[], Any]) -> Any:
    """``fn()``, its error (other than a ConfigError) becoming a ConfigError that names ``group``'s settings."""
    try:
        return fn()
    except ConfigError:
        raise
    except Exception as exc:
        target = cfg[group].get("_target_")
        why = reason(exc)
        if isinstance(exc, TypeError):
            settings = {k: v for k, v in to_plain(cfg[group]).items() if not k.startswith("_")}
            why += shape_hint(locate(target, f"{group}._target_"), settings, group)
        raise ConfigError(
            f"{group}={target} cannot run with {settings_text(cfg[group], group)}: {type(exc).__name__}: {why}."
        ) from None


def _check_every_epoch(cfg: DictConfig, schedule: LearningRate) -> None:
    """Raise a ConfigError at the first of the run's epochs (at most ``MAX_DRY_RUN_EPOCHS``) whose rate is
    not finite and > 0; a per-step schedule's every step is checked, with :data:`DRY_RUN_STEPS` an epoch."""
    epochs = int(cfg.trainer.epochs)
    checked = min(epochs, MAX_DRY_RUN_EPOCHS)
    steps = schedule.steps_per_epoch if schedule.per_step else 1
    previous = ""
    for epoch in range(1, checked + 1):
        for k in range(steps):
            lr = schedule.rate((epoch - 1) * schedule.steps_per_epoch + k)
            if not (math.isfinite(lr) and lr > 0):
                where = f"epoch {epoch}" if k == 0 else f"step {k + 1} of epoch {epoch} (of {steps} in this check)"
                raise ConfigError(
                    f"schedule={cfg.schedule.get('_target_')} with {settings_text(cfg.schedule, 'schedule')} gives "
                    f"a learning rate of {lr:.4g} at {where} of trainer.epochs={epochs} ({previous}optimizer.lr="
                    f"{cfg.optimizer.get('lr')}): every step must train at a finite rate > 0; change the "
                    "schedule's settings (a decay factor or gamma in (0, 1), an eta_min >= 0, a period that covers "
                    "the run" + (", counted in steps: the schedule steps every batch" if schedule.per_step else "")
                    + ")."
                )
            previous = f"{lr:.4g} at epoch {epoch}, " if k == 0 else previous
        schedule.observe(1.0)
    schedule.epoch_rate(checked + 1)  # the step after the last epoch: its rate is never used, but the
    # schedule's class computes it, and a setting it rejects (StepLR's step_size=0) shows there
