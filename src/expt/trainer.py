"""The epoch loop of one run: :class:`Trainer` takes a built :class:`expt.build.Experiment` and trains it.

The data sit on the device as tensors and minibatches are index slices of a per-epoch
permutation. The only host-device syncs in the step loop happen every ``trainer.log_every``
steps, where the losses are read to be logged and checked for divergence. ``checkpoints/last.pt``
(the training state, the best model so far included) is written after an epoch once
``trainer.checkpoint_interval`` seconds have passed since the last write, and after the last
epoch; ``checkpoints/best.pt`` (the best model) is written after it and when the run ends,
completed, diverged, interrupted with Ctrl-C or stopped by an error.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import warnings
from pathlib import Path
from typing import Any, Optional

import torch
from omegaconf import OmegaConf

from expt import averaging, checkpoint
from expt.build import Experiment, has_batchnorm
from expt.errors import ConfigError
from expt.config import instantiate
from expt.evaluate import evaluate
from expt.loss import classification_loss
from expt.optim import step_schedule
from expt.pruning import ProgressReport
from expt.status import COMPLETED, DIVERGED, PRUNED

log = logging.getLogger(__name__)



class Trainer:
    """Runs the epochs of one experiment, writing everything into ``run_dir``."""

    def __init__(self, exp: Experiment, run_dir: Path, progress: bool = False):
        self.exp = exp
        self.progress = progress  # a bar inside long epochs (expt.run.train: at a terminal, not in a sweep)
        self.settings = OmegaConf.to_object(exp.cfg.trainer)  # a TrainerConfig: plain attributes, cheap per step
        self.run_dir = run_dir
        self.ckpt_dir = run_dir / "checkpoints"
        self.batches = torch.Generator(device=exp.device).manual_seed(self.settings.seed)
        self.augment_rng = torch.Generator(device=exp.device).manual_seed(self.settings.seed + 2)
        n = len(exp.data.x_train)
        picker = torch.Generator().manual_seed(self.settings.seed + 1)
        self.train_eval_idx = torch.randperm(n, generator=picker)[: self.settings.train_eval_samples].to(exp.device)
        self.step_model, self.autocast, self.scaler = self._step_setup()
        # the subsample training accuracy is measured on, gathered once rather than every epoch
        self.train_eval = (exp.data.x_train[self.train_eval_idx], exp.data.y_train[self.train_eval_idx])
        self.batchnorm = has_batchnorm(exp.model)
        self.ema = averaging.ema(exp.model, self.settings.ema) if self.settings.ema > 0 else None  # trainer.ema
        self.warmup_seconds = 0.0  # torch.compile's first steps, excluded from epoch times
        self.compiling = self.settings.compile  # until the first epoch this process runs has ended
        self.history: list[dict[str, float]] = []
        self.best: dict[str, Any] = {"val_acc": -1.0, "epoch": None, "state": None, "averaged": False}
        self.best_written = True  # whether best.pt holds self.best
        self.saved_epoch: Optional[int] = None  # the epoch last.pt holds
        self.saved_at = math.nan  # when last.pt was written (perf_counter), or when fit started
        self.initial_loss = math.nan
        self.epoch = 0
        self.started = math.nan  # set by begin
        self.threshold = math.inf  # the training loss that counts as diverged, set by begin

    def _step_setup(self):
        """The model the step loop calls, its autocast context and gradient scaler, from the trainer keys."""
        e, t = self.exp, self.settings
        if t.channels_last and len(e.data.input_shape) == 3:
            e.model.to(memory_format=torch.channels_last)
            e.data = e.data.map_x(lambda x: x.contiguous(memory_format=torch.channels_last))
        amp = str(t.amp).lower()
        amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
        autocast = (
            (lambda: torch.autocast(e.device.type, dtype=amp_dtype))
            if amp_dtype is not None else contextlib.nullcontext
        )
        scaler = torch.amp.GradScaler(e.device.type) if amp == "fp16" else None
        model = torch.compile(e.model) if t.compile else e.model
        return model, autocast, scaler

    # ------------------------------------------------------------------ measurements
    def training_loss(self) -> tuple[float, float]:
        """(data loss, data loss + penalty) of the model on the fixed training subsample."""
        data_loss, _ = evaluate(self.exp.model, *self.train_eval)
        with torch.no_grad():
            penalty = float(self.exp.regularizer.penalty())
        return data_loss, data_loss + penalty

    def measure(self) -> dict[str, float]:
        """The epoch's evaluations. Training and validation are measured the same way (eval mode, data loss
        only), so the dashboard can draw them on one chart; the penalty is its own number."""
        d, model = self.exp.data, self.exp.model
        train_data_loss, train_acc = evaluate(model, *self.train_eval)
        val_loss, val_acc = evaluate(model, d.x_val, d.y_val)
        row = {"train_acc": train_acc, "val_loss": val_loss, "val_acc": val_acc, "train_data_loss": train_data_loss}
        if self.exp.regularizer.active:
            with torch.no_grad():
                row["penalty"] = float(self.exp.regularizer.penalty())
        if self.ema is not None:
            row["ema_val_loss"], row["ema_val_acc"] = evaluate(self.ema.module, d.x_val, d.y_val)
        return row

    # ------------------------------------------------------------------ checkpoints
    def state(self) -> dict[str, Any]:
        """last.pt: everything to continue the run, the best model so far included.

        last.pt is the one file a resume reads, so a kill between its write and best.pt's can
        never leave a training state and a best model that disagree.
        """
        e = self.exp
        return {
            "model": e.model.state_dict(),
            "optimizer": e.optimizer.state_dict(),
            "scheduler": e.scheduler.state_dict(),
            **({"scaler": self.scaler.state_dict()} if self.scaler is not None else {}),
            **({"ema": self.ema.state_dict()} if self.ema is not None else {}),
            "preprocess": e.preprocessor.state_dict(),
            "epoch": self.epoch,
            "rng": checkpoint.rng_state(self.batches, e.device, self.augment_rng),
            "history": self.history,
            "initial_loss": self.initial_loss,
            "best_val_acc": self.best["val_acc"],
            "best_epoch": self.best["epoch"],
            "best_model": self.best["state"],
            "best_averaged": self.best["averaged"],
            "input_shape": list(e.data.input_shape),
            "num_classes": e.data.num_classes,
            "config": self.exp.config_yaml,
        }

    def model_file(self, weights: dict[str, Any], epoch: int, val_acc: float, averaged: bool) -> dict[str, Any]:
        """A model to evaluate or deploy (its weights, preprocessing and config), not a training state.

        best.pt and the snapshots of trainer.snapshots are such files; expt.load reads them.
        """
        return {
            "model": weights,
            "preprocess": self.exp.preprocessor.state_dict(),
            "epoch": epoch,
            "best_val_acc": val_acc,
            "best_epoch": epoch,
            "averaged": averaged,  # the averaged weights of trainer.ema, not the trained ones
            "input_shape": list(self.exp.data.input_shape),  # what expt.load needs to rebuild the model
            "num_classes": self.exp.data.num_classes,
            "config": self.exp.config_yaml,
        }

    def best_state(self) -> dict[str, Any]:
        """best.pt: the best model so far."""
        return self.model_file(self.best["state"], self.best["epoch"], self.best["val_acc"], self.best["averaged"])

    def save_snapshot(self, row: dict[str, float]) -> None:
        """checkpoints/epoch_<n>.pt for this epoch's trained weights; only the last trainer.snapshots epochs stay.

        A resumed run replays the epochs after last.pt and writes the same snapshots again, so a
        kill between a snapshot and last.pt loses nothing.
        """
        keep = self.settings.snapshots
        state = self.model_file(self.exp.model.state_dict(), row["epoch"], row["val_acc"], False)
        checkpoint.save(state, self.ckpt_dir / checkpoint.snapshot_name(row["epoch"]))
        for epoch, path in checkpoint.snapshots(self.ckpt_dir).items():
            if not row["epoch"] - keep < epoch <= row["epoch"]:
                path.unlink(missing_ok=True)

    def save(self) -> None:
        """Write last.pt (the training state after this epoch, the commit point), then best.pt if the best changed."""
        checkpoint.save(self.state(), self.ckpt_dir / checkpoint.LAST)
        self.saved_epoch, self.saved_at = self.epoch, time.perf_counter()
        self.save_best()

    def save_best(self) -> None:
        if not self.best_written and self.best["state"] is not None:
            checkpoint.save(self.best_state(), self.ckpt_dir / checkpoint.BEST)
            self.best_written = True

    def checkpoint_due(self) -> bool:
        """After every epoch when trainer.checkpoint_interval is 0; else once that many seconds have passed."""
        interval = self.settings.checkpoint_interval
        return interval == 0 or time.perf_counter() - self.saved_at >= interval

    def resume(self, path: Path) -> None:
        """Continue the run saved in ``path``: weights, optimizer, scaler, random streams, history, best model.

        The checkpoint's config must match this run's in every key that made the saved state
        (:func:`expt.checkpoint.check_resumable`). The schedule is rebuilt from this run's config
        and stepped once per finished epoch (with its logged validation loss), so a run resumed
        with more epochs follows the schedule of the longer run, as an uninterrupted run would.
        """
        state = checkpoint.load(path)  # on the CPU: random states must stay there; load_state_dict moves the rest
        if "optimizer" not in state:
            raise ConfigError(
                f"trainer.resume={str(path)!r} holds a model, not a training state (no optimizer, random "
                f"streams or history): resume from the run directory or its checkpoints/{checkpoint.LAST}."
            )
        if "best_model" not in state:
            raise ConfigError(
                f"trainer.resume={str(path)!r} was written by an older expt that kept the best model only in "
                f"{checkpoint.BEST}: it cannot be resumed exactly; start the run again."
            )
        e = self.exp
        checkpoint.check_resumable(state["config"], OmegaConf.to_container(e.cfg, resolve=True), path)
        try:
            e.model.load_state_dict(state["model"])
            e.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise ConfigError(
                f"trainer.resume={str(path)!r} does not fit the model and optimizer this config builds "
                f"({type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]})."
            ) from None
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            averaging.restore(self.ema, state["ema"])
        checkpoint.restore_rng(state["rng"], self.batches, e.device, self.augment_rng)
        self.epoch, self.history, self.initial_loss = state["epoch"], list(state["history"]), state["initial_loss"]
        for group in e.optimizer.param_groups:  # back to the rate the schedule starts from
            group["lr"] = group.get("initial_lr", e.cfg.optimizer.lr)
        e.scheduler = instantiate(e.cfg.schedule, "schedule")(e.optimizer)
        with warnings.catch_warnings():  # replaying the schedule: no optimizer step between its steps
            warnings.simplefilter("ignore", UserWarning)
            for row in self.history:
                if row["epoch"] > 0:
                    step_schedule(e.scheduler, row["val_loss"])
        self.best = {"val_acc": state["best_val_acc"], "epoch": state["best_epoch"], "state": state["best_model"],
                     "averaged": state["best_averaged"]}
        if path.resolve() != (self.ckpt_dir / checkpoint.LAST).resolve():
            checkpoint.copy(path, self.ckpt_dir / checkpoint.LAST)
        self.best_written = False
        self.save_best()  # best.pt as last.pt has it, whatever a kill between the two writes left behind
        self.saved_epoch = self.epoch
        log.info("Resumed from %s after epoch %d", path, self.epoch)

    # ------------------------------------------------------------------ the loop
    def run_epoch(self, dashboard) -> tuple[float, bool]:
        """One pass over the training split; returns (mean training loss, diverged above ``self.threshold``)."""
        e, n, steps = self.exp, len(self.exp.data.x_train), self.steps_per_epoch()
        perm = torch.randperm(n, device=e.device, generator=self.batches)
        e.model.train()
        with self._progress_bar(min(n, steps * self.settings.batch_size)) as bar:
            return self._steps(dashboard, steps, perm, bar)

    def steps_per_epoch(self) -> int:
        """Minibatches an epoch takes; with batch norm, a last batch of one sample (no batch statistics) is left out."""
        n, bs = len(self.exp.data.x_train), self.settings.batch_size
        steps = max(1, math.ceil(n / bs))
        return steps - 1 if n > bs and n % bs == 1 and self.batchnorm else steps

    def diverged(self, losses) -> bool:
        """Whether any of these step losses is NaN, Inf or above ``self.threshold``."""
        return any(not math.isfinite(v) or v > self.threshold for v in losses)

    def _progress_bar(self, images: int):
        """tqdm's bar over this epoch's images, shown once the epoch has run ``trainer.progress_after`` seconds."""
        if not self.progress:
            return contextlib.nullcontext(None)
        from tqdm.auto import tqdm

        return tqdm(total=images, desc=f"epoch {self.epoch}/{self.settings.epochs}", unit="img", unit_scale=True,
                    delay=self.settings.progress_after, leave=False, dynamic_ncols=True)

    def _steps(self, dashboard, steps: int, perm: torch.Tensor, bar) -> tuple[float, bool]:
        e, t = self.exp, self.settings
        x, y, bs = e.data.x_train, e.data.y_train, t.batch_size
        first_step = (self.epoch - 1) * steps + 1
        pending: list[torch.Tensor] = []  # this epoch's step losses, on the device until a logging step
        penalized = e.regularizer.active
        smoothing = t.label_smoothing
        read, total = 0, 0.0
        for i in range(steps):
            timing = self.compiling and (i < 2 or i == steps - 1)
            if timing:
                warmup_start = self._synced_clock()
            logging_step = (i + 1) % t.log_every == 0 or i + 1 == steps
            before = dashboard.weights_before_update() if logging_step else None
            idx = perm[i * bs:(i + 1) * bs]
            xb = x[idx]
            for transform in e.augmentations:
                xb = transform(xb, self.augment_rng)
            with self.autocast():
                out = self.step_model(xb)
                loss = classification_loss(out, y[idx], smoothing)
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
            if self.ema is not None:
                self.ema.update_parameters(e.model)
            pending.append(loss.detach())
            if timing:
                self.warmup_seconds += self._synced_clock() - warmup_start
            if before is not None:
                dashboard.update_ratios(first_step + i, before)
            if bar is not None:
                bar.update(len(idx))
            if logging_step:
                chunk = torch.stack(pending).tolist()
                pending.clear()
                dashboard.train_losses(first_step + read, chunk)
                read, total = i + 1, total + sum(chunk)
                if bar is not None:
                    bar.set_postfix(loss=f"{total / read:.4f}", refresh=False)  # shown at the next refresh
                if self.diverged(chunk):
                    return total / read, True
        return total / steps, False

    def _synced_clock(self) -> float:
        if self.exp.device.type == "cuda":
            torch.cuda.synchronize(self.exp.device)
        return time.perf_counter()

    def fit(self, dashboard, progress_report: Optional[ProgressReport] = None) -> dict[str, Any]:
        """Train for ``trainer.epochs`` epochs (from where a resumed run stopped) and return the run's metrics.

        ``progress_report``: a sweep's early stopping (:class:`expt.pruning.ProgressReport`), reported to after every epoch
        but the last; the run stops as ``pruned`` when it says so. None (the default) trains every epoch.
        """
        self.begin(dashboard)
        status = COMPLETED
        while self.epoch < self.settings.epochs:
            if not self.train_epoch(dashboard):
                status = DIVERGED
                break
            if progress_report is not None and self.epoch < self.settings.epochs and progress_report.report(
                    self.epoch, self.best["val_acc"]):
                log.info("Epoch %d: best val %.2f%% is below the median of this round's other trials "
                         "at this epoch: stopping (pruned).", self.epoch, 100 * self.best["val_acc"])
                status = PRUNED
                break
        return self.end(status)

    def begin(self, dashboard) -> None:
        """Resume, or measure the loss at init; start the dashboard. A run of 0 epochs records the model as it is."""
        e, t = self.exp, self.settings
        self.started = self.saved_at = time.perf_counter()
        if t.resume:
            self.resume(checkpoint.resolve(t.resume))
        else:
            _, self.initial_loss = self.training_loss()
            log.info("Initial training loss %.4f (log C = %.4f)", self.initial_loss, math.log(e.data.num_classes))
        dashboard.start(e, self.train_eval_idx[: t.batch_size], self.epoch)
        self.threshold = t.divergence_factor * self.initial_loss
        if t.epochs == 0 and not self.history:
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
        train_loss, diverged = self.run_epoch(dashboard)
        self.compiling = False
        if diverged:
            log.warning(
                "Epoch %d: training loss %.4g is NaN, Inf or above %.1fx the initial loss %.4f: stopping.",
                self.epoch, train_loss, self.settings.divergence_factor, self.initial_loss,
            )
            return False
        row = {"epoch": self.epoch, "train_loss": train_loss, **self.measure(), "lr": lr}
        step_schedule(self.exp.scheduler, row["val_loss"])
        row["seconds"] = time.perf_counter() - t0 - (self.warmup_seconds if warming else 0.0)
        self.record(row, dashboard)
        return True

    def _val_loss_at(self, epoch: Optional[int]) -> Optional[float]:
        """The validation loss of the weights that scored best at ``epoch`` (the averaged ones if they did)."""
        for row in self.history:
            if row["epoch"] == epoch:
                return row.get("ema_val_loss" if self.best["averaged"] else "val_loss", row.get("val_loss"))
        return None

    def lr(self) -> float:
        return float(self.exp.optimizer.param_groups[0]["lr"])

    def record(self, row: dict[str, float], dashboard) -> None:
        self.history.append(row)
        candidates = [(row["val_acc"], False)]  # the trained weights first: they win a tie
        if "ema_val_acc" in row:
            candidates.append((row["ema_val_acc"], True))
        val_acc, averaged = max(candidates, key=lambda c: c[0])
        if val_acc > self.best["val_acc"]:
            model = self.ema.module if averaged else self.exp.model
            state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            self.best = {"val_acc": val_acc, "epoch": row["epoch"], "state": state, "averaged": averaged}
            self.best_written = False
        dashboard.epoch(row["epoch"], row)
        if self.settings.snapshots:
            self.save_snapshot(row)
        if self.checkpoint_due():
            self.save()
        averaged = f"  ema val {100 * row['ema_val_acc']:.1f}%" if "ema_val_acc" in row else ""
        log.info(
            "epoch %d/%d  loss %.4f  train %.1f%%  val %.1f%%%s  lr %.2e  %.1fs",
            row["epoch"], self.settings.epochs, row["train_loss"], 100 * row["train_acc"], 100 * row["val_acc"],
            averaged, row["lr"], row["seconds"],
        )

    def end(self, status: str) -> dict[str, Any]:
        """After the last epoch: write last.pt if it lags (a diverged run's weights are past saving), then finish."""
        if status in (COMPLETED, PRUNED) and self.saved_epoch != self.epoch and self.history:
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
            "best_val_loss": self._val_loss_at(self.best["epoch"]),
            "val_samples": len(e.data.x_val),
            "best_epoch": self.best["epoch"],
            "best_averaged": self.best["averaged"],
            "final_val_acc": last.get("val_acc"),
            "final_val_loss": last.get("val_loss"),
            "test_acc": test_acc,
            "test_loss": test_loss,
            "epochs_completed": last.get("epoch", 0),
            "initial_loss": self.initial_loss,
            "final_train_loss": last.get("train_loss"),
            "seconds": time.perf_counter() - self.started,
            "compile_warmup_seconds": self.warmup_seconds if self.settings.compile else None,
            "history": self.history,
        }
        metrics["objective"] = metrics["best_val_acc"] if status in (COMPLETED, PRUNED) else 0.0
        return metrics
