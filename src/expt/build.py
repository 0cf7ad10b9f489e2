"""A composed config -> the built pieces of one run: device, data, preprocessing, model, init, optimizer, schedule.

:func:`build` is the one place a config becomes objects; the trainer, the sanity checks, the
evaluation of a saved model and the benchmarks all build through it, so they see the same run.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import Any, Optional

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from expt import augment
from expt.capture import capturable_options, capture_mode
from expt.errors import ConfigError
from expt.config import on_schema, to_yaml, validate
from expt.dry_run import learning_rate
from expt.data import Splits, load as load_data
from expt.devices import choose_device, hydra_job, physical_gpu
from expt.init import residual_branch_ends
from expt.instantiate import instantiate
from expt.optim import param_groups
from expt.schedule import LearningRate
from expt.preprocess import Preprocessor
from expt.regularization import Regularizer

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """``trainer.device`` as a torch device; ``auto`` spreads a parallel sweep's trials over the GPUs (expt.devices)."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    job_num, parallel = hydra_job()
    device = torch.device(choose_device(name, count, job_num, parallel))
    if name == "auto" and device.index is not None:
        log.info("job %d of a parallel sweep: %s of %d CUDA devices (GPU %s)", job_num, device, count,
                 physical_gpu(device.index, os.environ))
    return device


@dataclass
class Experiment:
    """The built pieces of one run; :func:`build` makes them from a config."""

    cfg: DictConfig
    device: torch.device
    data: Splits  # preprocessed, on the device, in the run's dtype
    preprocessor: Preprocessor
    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: LearningRate  # the learning rate of every step
    regularizer: Regularizer
    augmentations: list[augment.Augmentation]  # applied in order to every training batch
    config_yaml: str  # the composed config, resolved: rendered once for the checkpoints and the dashboard
    steps_per_epoch: int
    capture: bool = False  # the training step is captured as a CUDA graph (expt.capture)
    capture_reason: Optional[str] = None  # why it is not, when it is not

    def summary(self) -> str:
        """The run in one line, as its log starts: the model, its regularization, the device and the splits."""
        d = self.data
        return (f"{type(self.model).__name__} ({regularization_text(self.cfg.regularization)}) on {self.device}: "
                f"{len(d.x_train)} train / {len(d.x_val)} val / {len(d.x_test)} test samples of shape "
                f"{'x'.join(map(str, d.input_shape))}, {d.num_classes} classes")


def regularization_text(r: DictConfig) -> str:
    """What the merged ``regularization`` options switch on, batch norm's absence included: a list such as
    ``regularization=[l2,dropout]`` replaces the default ``[l2, batchnorm]`` whole, batch norm with it."""
    parts = ["batch norm" if r.batchnorm else "no batch norm"]
    parts += [f"{name} {r[name]:g}" for name in ("l1", "l2") if r[name]]
    parts += [f"dropout {r.dropout:g}"] if r.dropout else []
    parts += [f"max-norm {r.max_norm:g}"] if r.max_norm is not None else []
    return ", ".join(parts)


def build_model(cfg: DictConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Model from the model, activation and regularization groups, then the init scheme applied."""
    activation = instantiate(cfg.activation, "activation", partial=True)
    model = instantiate(
        cfg.model, "model",
        input_shape=input_shape, num_classes=num_classes, activation=activation,
        dropout=cfg.regularization.dropout, batchnorm=cfg.regularization.batchnorm,
    )
    instantiate(cfg.init, "init")(model)
    return model


def _check_residual_scale(cfg: DictConfig, model: nn.Module) -> None:
    """Warn of an ``init.residual_scale`` set for a model without residual branches: it changes nothing there."""
    scale = cfg.init.get("residual_scale")
    if scale is not None and not residual_branch_ends(model):
        log.warning("init.residual_scale=%s changes nothing: %s has no residual branches (model=resnet has); "
                    "the run trains as without it.", scale, type(model).__name__)


def has_batchnorm(model: nn.Module) -> bool:
    """Whether a layer of the model normalizes with batch statistics (it cannot train on one sample)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def steps_per_epoch(samples: int, batch_size: int, batchnorm: bool) -> int:
    """Minibatches an epoch takes; with batch norm, a last batch of one sample (no batch statistics) is left out."""
    steps = max(1, math.ceil(samples / batch_size))
    return steps - 1 if samples > batch_size and samples % batch_size == 1 and batchnorm else steps


def make_optimizer(cfg: DictConfig, model: nn.Module, **options: Any) -> torch.optim.Optimizer:
    """The configured optimizer over the model's parameters (weights apart from the rest when it decays weights)."""
    decay = cfg.optimizer.get("weight_decay", 0)
    return instantiate(cfg.optimizer, "optimizer")(param_groups(model) if decay else model.parameters(), **options)


# what decides a run's prepared splits: runs that agree on these can share them (build's ``same_data_as``)
DATA_KEYS = ("data", "preprocessing", "trainer.dtype")


def prepare_data(cfg: DictConfig, data: Splits, device: torch.device) -> tuple[Splits, Preprocessor]:
    """The splits on ``device`` in the run's dtype, preprocessed with statistics fitted on the training split
    only; and the fitted preprocessor."""
    data = data.to(device, getattr(torch, cfg.trainer.dtype))
    preprocessor = instantiate(cfg.preprocessing, "preprocessing").to(device)
    preprocessor.fit(data.x_train)
    return data.map_x(preprocessor), preprocessor


def build(cfg: DictConfig, data: Optional[Splits] = None, same_data_as: Optional[Experiment] = None,
          validated: bool = False) -> Experiment:
    """Every piece of a run, seeded by ``trainer.seed``; pass ``data`` to reuse loaded splits, or ``same_data_as``
    (an experiment built from the same :data:`DATA_KEYS` on the same device) to share its prepared splits and
    fitted preprocessor instead of preparing them again: a population's members do (a full copy of the
    dataset and its statistics a member otherwise; about 0.25 s for Fashion-MNIST on a CPU). ``validated``:
    the caller has checked ``cfg`` with :func:`expt.config.validate` and not changed it since (the population
    launcher does, to group its jobs), so it is not checked again (4-8 ms)."""
    if not validated:
        cfg = on_schema(cfg)
        validate(cfg)
    device = resolve_device(cfg.trainer.device)
    if same_data_as is None:
        data, preprocessor = prepare_data(cfg, load_data(cfg.data) if data is None else data, device)
    else:
        other = same_data_as.cfg
        differ = [k for k in DATA_KEYS if OmegaConf.select(cfg, k) != OmegaConf.select(other, k)]
        if differ or device != same_data_as.device:
            raise ValueError(f"same_data_as was built with other {', '.join(differ) or 'trainer.device'}: "
                             "its prepared splits are not this run's")
        data, preprocessor = same_data_as.data, same_data_as.preprocessor

    torch.manual_seed(cfg.trainer.seed)
    dtype = getattr(torch, cfg.trainer.dtype)
    model = build_model(cfg, data.input_shape, data.num_classes).to(device=device, dtype=dtype)
    if cfg.trainer.batch_size == 1 and has_batchnorm(model):
        raise ConfigError(
            "trainer.batch_size=1 is not allowed with batch norm: a batch needs at least 2 samples for its statistics."
        )
    if len(data.x_train) == 1 and has_batchnorm(model):
        d = cfg.data
        cause = (f"data.subset={d.subset}" if d.get("subset") == 1  # else the split's carving left one
                 else f"the split (data.val_size={d.get('val_size')}, data.test_size={d.get('test_size')})")
        raise ConfigError(
            f"{cause} leaves 1 training sample, which batch norm cannot train on: a batch needs at least 2 samples "
            "for its statistics (keep 2 or more, or leave batch norm out of regularization)."
        )
    _check_residual_scale(cfg, model)
    reg = cfg.regularization
    regularizer = Regularizer(model, l1=reg.l1, l2=reg.l2, max_norm=reg.max_norm)

    steps = steps_per_epoch(len(data.x_train), cfg.trainer.batch_size, has_batchnorm(model))
    schedule = learning_rate(cfg, steps)
    capture, reason = capture_mode(cfg, device)
    options = capturable_options(cfg.optimizer, schedule.rate(0), device) if capture else {}
    optimizer = make_optimizer(cfg, model, **options)
    augmentations = augment.build(cfg.get("augmentation"))
    augment.check(cfg, augmentations, data.input_shape)
    config_yaml = to_yaml(cfg, resolve=True)
    return Experiment(cfg, device, data, preprocessor, model, optimizer, schedule, regularizer, augmentations,
                      config_yaml, steps, capture, reason)
