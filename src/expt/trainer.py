"""One run, top to bottom: config -> data -> preprocessing -> model -> init -> optimizer -> epochs.

:func:`build` turns a composed config into the pieces of an experiment (the sanity checks
reuse it); :class:`Trainer` runs the epochs. The data sit on the device as tensors and
minibatches are index slices of a per-epoch permutation. The only host-device syncs in
the step loop happen every ``trainer.log_every`` steps, where the losses are read to be
logged and checked for divergence. ``checkpoints/last.pt`` (the training state) is written
after an epoch once ``trainer.checkpoint_interval`` seconds have passed since the last
write, and after the last epoch; ``checkpoints/best.pt`` (the best model) is written with it
and when the run ends, completed, diverged, interrupted with Ctrl-C or stopped by an error.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn

from expt import checkpoint
from expt.config import ConfigError, build as build_target, to_plain, validate
from expt.data import Splits, load as load_data
from expt.optim import param_groups, step_schedule
from expt.preprocess import Preprocessor
from expt.regularization import Regularizer

log = logging.getLogger(__name__)

EVAL_BATCH = 2048
HALF = (torch.float16, torch.bfloat16)  # autocast's output dtypes: the loss is computed in float32


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"trainer.device={name!r} is not available: this machine has no CUDA device "
                "(use trainer.device=auto or cpu)."
            )
        index = torch.device(name).index
        if index is not None and index >= torch.cuda.device_count():
            raise ConfigError(f"trainer.device={name!r}: only {torch.cuda.device_count()} CUDA device(s) here.")
    return torch.device(name)


@dataclass
class Experiment:
    """The built pieces of one run; :func:`build` makes them from a config."""

    cfg: DictConfig
    device: torch.device
    data: Splits  # preprocessed, on the device, in the run's dtype
    preprocessor: Preprocessor
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    regularizer: Regularizer
    config_yaml: str  # the composed config, resolved: rendered once for the checkpoints and the dashboard


def build_model(cfg: DictConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Model from the model, activation and regularization groups, then the init scheme applied."""
    activation = build_target(cfg.activation, "activation", partial=True)
    model = build_target(
        cfg.model, "model",
        input_shape=input_shape, num_classes=num_classes, activation=activation,
        dropout=cfg.regularization.dropout, batchnorm=cfg.regularization.batchnorm,
    )
    build_target(cfg.init, "init")(model)
    return model


def has_batchnorm(model: nn.Module) -> bool:
    """Whether a layer of the model normalizes with batch statistics (it cannot train on one sample)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def build(cfg: DictConfig, data: Optional[Splits] = None) -> Experiment:
    """Every piece of a run, seeded by ``trainer.seed``; pass ``data`` to reuse loaded splits."""
    validate(cfg)
    device = resolve_device(cfg.trainer.device)
    dtype = getattr(torch, cfg.trainer.dtype)
    data = load_data(cfg.data) if data is None else data
    data = data.to(device, dtype)
    preprocessor = build_target(cfg.preprocessing, "preprocessing").to(device)
    preprocessor.fit(data.x_train)
    data = data.map_x(preprocessor)

    torch.manual_seed(cfg.trainer.seed)
    model = build_model(cfg, data.input_shape, data.num_classes).to(device=device, dtype=dtype)
    if cfg.trainer.batch_size == 1 and has_batchnorm(model):
        raise ConfigError(
            "trainer.batch_size=1 is not allowed with batch norm: a batch needs at least 2 samples for its statistics."
        )
    reg = cfg.regularization
    regularizer = Regularizer(model, l1=reg.l1, l2=reg.l2, max_norm=reg.max_norm)

    decay = cfg.optimizer.get("weight_decay", 0)
    optimizer = build_target(cfg.optimizer, "optimizer")(param_groups(model) if decay else model.parameters())
    scheduler = build_target(cfg.schedule, "schedule")(optimizer)
    config_yaml = OmegaConf.to_yaml(cfg, resolve=True)
    return Experiment(cfg, device, data, preprocessor, model, optimizer, scheduler, regularizer, config_yaml)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Mean cross-entropy and accuracy (a fraction) in eval mode, in batches."""
    was_training = model.training
    model.eval()
    loss = torch.zeros((), device=x.device, dtype=torch.float64)
    correct = torch.zeros((), device=x.device, dtype=torch.int64)
    for start in range(0, len(x), EVAL_BATCH):
        out = model(x[start:start + EVAL_BATCH])
        yb = y[start:start + EVAL_BATCH]
        loss += F.cross_entropy(out, yb, reduction="sum").double()
        correct += (out.argmax(dim=1) == yb).sum()
    model.train(was_training)
    n = max(1, len(x))
    return loss.item() / n, correct.item() / n


class Trainer:
    """Runs the epochs of one experiment, writing everything into ``run_dir``."""

    def __init__(self, exp: Experiment, run_dir: Path):
        self.exp = exp
        self.cfg = OmegaConf.to_object(exp.cfg.trainer)  # a TrainerConfig: plain attributes, cheap per step
        self.run_dir = run_dir
        self.ckpt_dir = run_dir / "checkpoints"
        self.batches = torch.Generator(device=exp.device).manual_seed(self.cfg.seed)
        n = len(exp.data.x_train)
        picker = torch.Generator().manual_seed(self.cfg.seed + 1)
        self.train_eval_idx = torch.randperm(n, generator=picker)[: self.cfg.train_eval_samples].to(exp.device)
        self.step_model, self.autocast, self.scaler = self._step_setup()
        # the subsample training accuracy is measured on, gathered once rather than every epoch
        self.train_eval = (exp.data.x_train[self.train_eval_idx], exp.data.y_train[self.train_eval_idx])
        self.batchnorm = has_batchnorm(exp.model)
        self.warmup_seconds = 0.0  # torch.compile's first steps, excluded from epoch times
        self.compiling = self.cfg.compile  # until the first epoch this process runs has ended
        self.history: list[dict[str, float]] = []
        self.best: dict[str, Any] = {"val_acc": -1.0, "epoch": None, "state": None}
        self.best_written = True  # whether best.pt holds self.best
        self.saved_epoch: Optional[int] = None  # the epoch last.pt holds
        self.saved_at = math.nan  # when last.pt was written (perf_counter), or when fit started
        self.initial_loss = math.nan
        self.epoch = 0
        self.started = math.nan  # set by begin
        self.threshold = math.inf  # the training loss that counts as diverged, set by begin

    def _step_setup(self):
        """The model the step loop calls, its autocast context and gradient scaler, from the trainer keys."""
        e, cfg = self.exp, self.cfg
        if cfg.channels_last and len(e.data.input_shape) == 3:
            e.model.to(memory_format=torch.channels_last)
            e.data = e.data.map_x(lambda x: x.contiguous(memory_format=torch.channels_last))
        amp = str(cfg.amp).lower()
        amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
        autocast = (
            (lambda: torch.autocast(e.device.type, dtype=amp_dtype))
            if amp_dtype is not None else contextlib.nullcontext
        )
        scaler = torch.amp.GradScaler(e.device.type) if amp == "fp16" else None
        model = torch.compile(e.model) if cfg.compile else e.model
        return model, autocast, scaler

    # ------------------------------------------------------------------ measurements
    def training_loss(self) -> tuple[float, float]:
        """(data loss, data loss + penalty) of the model on the fixed training subsample."""
        data_loss, _ = evaluate(self.exp.model, *self.train_eval)
        with torch.no_grad():
            penalty = float(self.exp.regularizer.penalty())
        return data_loss, data_loss + penalty

    def measure(self) -> dict[str, float]:
        d, model = self.exp.data, self.exp.model
        _, train_acc = evaluate(model, *self.train_eval)
        val_loss, val_acc = evaluate(model, d.x_val, d.y_val)
        return {"train_acc": train_acc, "val_loss": val_loss, "val_acc": val_acc}

    # ------------------------------------------------------------------ checkpoints
    def state(self) -> dict[str, Any]:
        e = self.exp
        return {
            "model": e.model.state_dict(),
            "optimizer": e.optimizer.state_dict(),
            "scheduler": e.scheduler.state_dict(),
            **({"scaler": self.scaler.state_dict()} if self.scaler is not None else {}),
            "preprocess": e.preprocessor.state_dict(),
            "epoch": self.epoch,
            "rng": checkpoint.rng_state(self.batches, e.device),
            "history": self.history,
            "initial_loss": self.initial_loss,
            "best_val_acc": self.best["val_acc"],
            "best_epoch": self.best["epoch"],
            "config": self.exp.config_yaml,
        }

    def best_state(self) -> dict[str, Any]:
        """best.pt: the best model to evaluate or deploy (its weights, preprocessing and config), not a training state."""
        return {
            "model": self.best["state"],
            "preprocess": self.exp.preprocessor.state_dict(),
            "epoch": self.best["epoch"],
            "best_val_acc": self.best["val_acc"],
            "best_epoch": self.best["epoch"],
            "config": self.exp.config_yaml,
        }

    def save(self) -> None:
        """Write last.pt (the training state after this epoch), and best.pt if the best model changed."""
        checkpoint.save(self.state(), self.ckpt_dir / checkpoint.LAST)
        self.saved_epoch, self.saved_at = self.epoch, time.perf_counter()
        self.save_best()

    def save_best(self) -> None:
        if not self.best_written and self.best["state"] is not None:
            checkpoint.save(self.best_state(), self.ckpt_dir / checkpoint.BEST)
            self.best_written = True

    def checkpoint_due(self) -> bool:
        """After every epoch when trainer.checkpoint_interval is 0; else once that many seconds have passed."""
        interval = self.cfg.checkpoint_interval
        return interval == 0 or time.perf_counter() - self.saved_at >= interval

    def resume(self, path: Path) -> None:
        """Continue the run saved in ``path``: weights, optimizer, scaler, random streams and history.

        The schedule is rebuilt from this run's config and stepped once per finished epoch
        (with its logged validation loss), so a run resumed with more epochs follows the
        schedule of the longer run, as an uninterrupted run with this config would.
        """
        state = checkpoint.load(path)  # on the CPU: random states must stay there; load_state_dict moves the rest
        if "optimizer" not in state:
            raise ConfigError(
                f"trainer.resume={str(path)!r} holds a model, not a training state (no optimizer, random "
                f"streams or history): resume from the run directory or its checkpoints/{checkpoint.LAST}."
            )
        e = self.exp
        e.model.load_state_dict(state["model"])
        e.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        checkpoint.restore_rng(state["rng"], self.batches, e.device)
        self.epoch, self.history, self.initial_loss = state["epoch"], list(state["history"]), state["initial_loss"]
        for group in e.optimizer.param_groups:  # back to the rate the schedule starts from
            group["lr"] = group.get("initial_lr", e.cfg.optimizer.lr)
        e.scheduler = build_target(e.cfg.schedule, "schedule")(e.optimizer)
        with warnings.catch_warnings():  # replaying the schedule: no optimizer step between its steps
            warnings.simplefilter("ignore", UserWarning)
            for row in self.history:
                if row["epoch"] > 0:
                    step_schedule(e.scheduler, row["val_loss"])
        best_path = path.parent / checkpoint.BEST
        if best_path.is_file():
            best = checkpoint.load(best_path)
            self.best = {"val_acc": best["best_val_acc"], "epoch": best["best_epoch"], "state": best["model"]}
            checkpoint.copy(best_path, self.ckpt_dir / checkpoint.BEST)
        else:
            log.warning("No %s beside %s: the best model so far is taken to be the last one.", checkpoint.BEST, path)
            last = self.history[-1] if self.history else {"val_acc": -1.0, "epoch": None}
            self.best = {"val_acc": last["val_acc"], "epoch": last["epoch"], "state": state["model"]}
            self.best_written = False
        checkpoint.copy(path, self.ckpt_dir / checkpoint.LAST)
        self.saved_epoch = self.epoch
        log.info("Resumed from %s after epoch %d", path, self.epoch)

    # ------------------------------------------------------------------ the loop
    def run_epoch(self, dashboard, threshold: float) -> tuple[float, bool]:
        """One pass over the training split; returns (mean training loss, diverged)."""
        e, cfg = self.exp, self.cfg
        x, y = e.data.x_train, e.data.y_train
        n, bs = len(x), cfg.batch_size
        steps = max(1, math.ceil(n / bs))
        if n > bs and n % bs == 1 and self.batchnorm:
            steps -= 1  # a batch of one sample has no batch statistics
        first_step = (self.epoch - 1) * steps + 1
        perm = torch.randperm(n, device=e.device, generator=self.batches)
        pending: list[torch.Tensor] = []  # this epoch's step losses, on the device until a logging step
        e.model.train()
        penalized = e.regularizer.active
        read, total = 0, 0.0
        for i in range(steps):
            timing = self.compiling and (i < 2 or i == steps - 1)
            if timing:
                warmup_start = self._synced_clock()
            logging_step = (i + 1) % cfg.log_every == 0 or i + 1 == steps
            before = dashboard.weights_before_update() if logging_step else None
            idx = perm[i * bs:(i + 1) * bs]
            with self.autocast():
                out = self.step_model(x[idx])
                loss = F.cross_entropy(out.float() if out.dtype in HALF else out, y[idx])
                if penalized:
                    loss = loss + e.regularizer.penalty()
            e.optimizer.zero_grad(set_to_none=True)
            if self.scaler is None:
                loss.backward()
                e.optimizer.step()
            else:
                self.scaler.scale(loss).backward()
                self.scaler.step(e.optimizer)
                self.scaler.update()
            e.regularizer.constrain()
            pending.append(loss.detach())
            if timing:
                self.warmup_seconds += self._synced_clock() - warmup_start
            if before is not None:
                dashboard.update_ratios(first_step + i, before)
            if logging_step:
                chunk = torch.stack(pending).tolist()
                pending.clear()
                dashboard.train_losses(first_step + read, chunk)
                read, total = i + 1, total + sum(chunk)
                if any(not math.isfinite(v) or v > threshold for v in chunk):
                    return total / read, True
        return total / steps, False

    def _synced_clock(self) -> float:
        if self.exp.device.type == "cuda":
            torch.cuda.synchronize(self.exp.device)
        return time.perf_counter()

    def fit(self, dashboard) -> dict[str, Any]:
        """Train for ``trainer.epochs`` epochs (from where a resumed run stopped) and return the run's metrics."""
        self.begin(dashboard)
        status = "completed"
        while self.epoch < self.cfg.epochs:
            if not self.train_epoch(dashboard):
                status = "diverged"
                break
        return self.end(status)

    def begin(self, dashboard) -> None:
        """Resume, or measure the loss at init; start the dashboard. A run of 0 epochs records the model as it is."""
        e, cfg = self.exp, self.cfg
        self.started = self.saved_at = time.perf_counter()
        if cfg.resume:
            self.resume(checkpoint.resolve(cfg.resume))
        else:
            _, self.initial_loss = self.training_loss()
            log.info("Initial training loss %.4f (log C = %.4f)", self.initial_loss, math.log(e.data.num_classes))
        dashboard.start(e, self.train_eval_idx[: cfg.batch_size], self.epoch)
        self.threshold = cfg.divergence_factor * self.initial_loss
        if cfg.epochs == 0 and not self.history:
            row = {"epoch": 0, "train_loss": self.initial_loss, **self.measure(), "lr": self.lr(), "seconds": 0.0}
            self.record(row, dashboard)

    def train_epoch(self, dashboard) -> bool:
        """One epoch: train, measure, step the schedule, record (events, best model, checkpoint when due).

        Returns False when the training loss diverged; that epoch is then not recorded.
        """
        if math.isnan(self.started):
            raise RuntimeError("Trainer.begin(dashboard) must come before the first train_epoch")
        self.epoch += 1
        t0 = time.perf_counter()
        lr = self.lr()
        warming = self.compiling
        train_loss, diverged = self.run_epoch(dashboard, self.threshold)
        self.compiling = False
        if diverged:
            log.warning(
                "Epoch %d: training loss %.4g is NaN, Inf or above %.1fx the initial loss %.4f: stopping.",
                self.epoch, train_loss, self.cfg.divergence_factor, self.initial_loss,
            )
            return False
        row = {"epoch": self.epoch, "train_loss": train_loss, **self.measure(), "lr": lr}
        step_schedule(self.exp.scheduler, row["val_loss"])
        row["seconds"] = time.perf_counter() - t0 - (self.warmup_seconds if warming else 0.0)
        self.record(row, dashboard)
        return True

    def lr(self) -> float:
        return float(self.exp.optimizer.param_groups[0]["lr"])

    def record(self, row: dict[str, float], dashboard) -> None:
        self.history.append(row)
        if row["val_acc"] > self.best["val_acc"]:
            state = {k: v.detach().clone() for k, v in self.exp.model.state_dict().items()}
            self.best = {"val_acc": row["val_acc"], "epoch": row["epoch"], "state": state}
            self.best_written = False
        dashboard.epoch(row["epoch"], row)
        if self.checkpoint_due():
            self.save()
        log.info(
            "epoch %d/%d  loss %.4f  train %.1f%%  val %.1f%%  lr %.2e  %.1fs",
            row["epoch"], self.cfg.epochs, row["train_loss"], 100 * row["train_acc"], 100 * row["val_acc"],
            row["lr"], row["seconds"],
        )

    def end(self, status: str) -> dict[str, Any]:
        """After the last epoch: write last.pt if it lags (a diverged run's weights are past saving), then finish."""
        if status == "completed" and self.saved_epoch != self.epoch and self.history:
            self.save()
        return self.finish(status)

    def finish(self, status: str) -> dict[str, Any]:
        """Write best.pt if it lags, evaluate the best model once on the test split, gather the run's metrics."""
        e = self.exp
        self.save_best()
        test_loss = test_acc = None
        if self.best["state"] is not None:
            e.model.load_state_dict(self.best["state"])
            test_loss, test_acc = evaluate(e.model, e.data.x_test, e.data.y_test)
        last = self.history[-1] if self.history else {}
        metrics = {
            "status": status,
            "best_val_acc": self.best["val_acc"] if self.best["epoch"] is not None else None,
            "best_epoch": self.best["epoch"],
            "final_val_acc": last.get("val_acc"),
            "final_val_loss": last.get("val_loss"),
            "test_acc": test_acc,
            "test_loss": test_loss,
            "epochs_completed": last.get("epoch", 0),
            "initial_loss": self.initial_loss,
            "final_train_loss": last.get("train_loss"),
            "seconds": time.perf_counter() - self.started,
            "compile_warmup_seconds": self.warmup_seconds if self.cfg.compile else None,
            "history": self.history,
        }
        metrics["objective"] = metrics["best_val_acc"] if status == "completed" else 0.0
        return metrics


def default_run_dir() -> Path:
    """Hydra's output directory inside a Hydra job; ``outputs/<date>/<time>`` otherwise."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path("outputs") / time.strftime("%Y-%m-%d") / time.strftime("%H-%M-%S")


def train(cfg: DictConfig, run_dir: str | Path | None = None) -> dict[str, Any]:
    """Train and evaluate the run ``cfg`` describes; write checkpoints, events and metrics.json to ``run_dir``.

    Returns the metrics dict (also saved as ``metrics.json``). ``metrics["objective"]`` is
    the best validation accuracy, or 0.0 (the worst) when the run diverged.
    """
    from expt.dashboard import Dashboard

    run_dir = Path(run_dir) if run_dir is not None else default_run_dir()
    run_dir.mkdir(parents=True, exist_ok=True)
    exp = build(cfg)
    from expt.sanity import guard

    guard(exp)  # the loss-at-init check, as sanity.before_train says (warn, strict or false)
    log.info(
        "%s on %s: %d train / %d val / %d test samples of shape %s, %d classes",
        type(exp.model).__name__, exp.device, len(exp.data.x_train), len(exp.data.x_val), len(exp.data.x_test),
        "x".join(map(str, exp.data.input_shape)), exp.data.num_classes,
    )
    trainer = Trainer(exp, run_dir)
    dashboard = Dashboard(run_dir, cfg)
    try:
        metrics = trainer.fit(dashboard)
        dashboard.hparams(metrics)
    except KeyboardInterrupt:
        # keep what the finished epochs measured; checkpoints/last.pt resumes the run
        interrupted = trainer.finish("interrupted")
        write_metrics(run_dir, interrupted)
        dashboard.hparams(interrupted)
        if trainer.saved_epoch is None:
            log.warning("Interrupted during epoch %d, before the first checkpoint: nothing to resume.", trainer.epoch)
        else:
            log.warning("Interrupted during epoch %d; checkpoints/%s holds epoch %d: resume with trainer.resume=%s",
                        trainer.epoch, checkpoint.LAST, trainer.saved_epoch, run_dir)
        raise
    except Exception:
        with contextlib.suppress(Exception):  # keep the best model found so far; the failure is what gets reported
            trainer.save_best()
        raise
    finally:
        dashboard.close()
    write_metrics(run_dir, metrics)
    log.info(
        "%s: best val %.2f%% (epoch %s), final val %.2f%%, test %.2f%%. Run directory: %s\n"
        "  tensorboard --logdir %s",
        metrics["status"], 100 * (metrics["best_val_acc"] or 0), metrics["best_epoch"],
        100 * (metrics["final_val_acc"] or 0), 100 * (metrics["test_acc"] or 0), run_dir, run_dir,
    )
    return metrics


def write_metrics(run_dir: Path, metrics: dict[str, Any]) -> None:
    """metrics.json, written atomically so a reader never sees half a file."""
    tmp = run_dir / ".metrics.json.tmp"
    tmp.write_text(json.dumps(metrics, indent=2))
    tmp.replace(run_dir / "metrics.json")
