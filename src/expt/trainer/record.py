"""One run's record: its random streams, measurements, history, best model, checkpoints, resume and metrics.

The epoch loop (:mod:`expt.trainer.loop`) trains one record with a single model, or several
with a vmapped population; everything about a run that is not the step itself lives here, so a
feature written once (the best model, checkpoints, snapshots, events, early stopping, metrics)
works for both. ``checkpoints/last.pt`` (the training state, the best model so far included)
is written after an epoch once ``trainer.checkpoint_interval`` seconds have passed since the last
write, and after the last epoch; ``checkpoints/best.pt`` (the best model) after it and when the run
ends, completed, diverged, pruned, interrupted with Ctrl-C or stopped by an error.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Optional

import torch
from omegaconf import OmegaConf

from expt import averaging, checkpoint
from expt.build import Experiment
from expt.checks import guard
from expt.errors import ConfigError, StorageError
from expt.loss import training_loss
from expt.predict import loss_and_accuracy
from expt.pruning import ProgressReport
from expt.status import (COMPLETED, EVALUATION_DIR, EVALUATION_FILE, EVENTS_GLOB, INTERRUPTED, LABEL_FILE, METRICS_FILE,
                         PRUNED, read_metrics)

log = logging.getLogger(__name__)


def measured_row(train: tuple[float, float], val: tuple[float, float], penalty: Optional[float],
                 ema_val: Optional[tuple[float, float]]) -> dict[str, float]:
    """An epoch's measurements as its row has them, from (loss, accuracy) pairs on the training subsample,
    the validation split and (the averaged weights) the validation split again; ``penalty`` when one is active."""
    row = {"train_acc": train[1], "val_loss": val[0], "val_acc": val[1], "train_data_loss": train[0]}
    if penalty is not None:
        row["penalty"] = penalty
    if ema_val is not None:
        row["ema_val_loss"], row["ema_val_acc"] = ema_val
    return row


class RunRecord:
    """Everything one run keeps around its steps; the loop calls :meth:`begin`, :meth:`record` and :meth:`end`."""

    def __init__(self, exp: Experiment, run_dir: Path, dashboard, progress: bool = False,
                 report: Optional[ProgressReport] = None):
        self.exp = exp
        self.run_dir = Path(run_dir)
        self.ckpt_dir = self.run_dir / checkpoint.DIR
        self.dashboard = dashboard
        self.progress = progress  # a bar inside long epochs (at a terminal, not in a sweep)
        self.report = report  # a sweep's early stopping (expt.pruning), when it asked for it
        self.settings = OmegaConf.to_object(exp.cfg.trainer)  # a TrainerConfig: plain attributes, cheap per step
        self.batches = torch.Generator(device=exp.device).manual_seed(self.settings.seed)
        self.augment_rng = torch.Generator(device=exp.device).manual_seed(self.settings.seed + 2)
        picker = torch.Generator().manual_seed(self.settings.seed + 1)
        n = len(exp.data.x_train)
        self.train_eval_idx = torch.randperm(n, generator=picker)[: self.settings.train_eval_samples].to(exp.device)
        # the subsample training accuracy is measured on, gathered once rather than every epoch
        self.train_eval = (exp.data.x_train[self.train_eval_idx], exp.data.y_train[self.train_eval_idx])
        self.ema = averaging.ema(exp.model, self.settings.ema) if self.settings.ema > 0 else None  # trainer.ema
        self.history: list[dict[str, float]] = []
        self.best: dict[str, Any] = {"val_acc": -1.0, "epoch": None, "state": None, "averaged": False}
        self.best_written = True  # whether best.pt holds self.best
        self.saved_epoch: Optional[int] = None  # the epoch last.pt holds
        self.saved_at = math.nan  # when last.pt was written (perf_counter), or when the run started
        self.initial_loss = math.nan
        self.epoch = 0
        self.started = math.nan  # set by begin
        self.threshold = math.inf  # the training loss that counts as diverged, set by begin
        self.metrics: Optional[dict[str, Any]] = None  # set by finish
        self.failure: Optional[Exception] = None  # the error that stopped it alone (a population's Trainer)
        self.began = False  # whether it has replaced or resumed the run its directory held (begin)
        self.resuming: Optional[Path] = None  # the checkpoint begin resumes from (trainer.resume)
        self.loss_sum, self.losses_read = 0.0, 0  # this epoch's step losses read so far
        # entered around the run's own work (measuring, recording, ending): a population's member sets its
        # own random state and its Hydra job's context there
        self.scope = contextlib.nullcontext

    # ------------------------------------------------------------------ measurements
    def losses(self) -> tuple[float, Optional[float]]:
        """(data loss, penalty) of the model now on the fixed training subsample: the two terms of its training loss
        (:func:`expt.loss.training_loss`); the penalty None when the run has none."""
        data_loss, _ = loss_and_accuracy(self.exp.model, *self.train_eval)
        return data_loss, self.penalty()

    def penalty(self) -> Optional[float]:
        """The regularization penalty of the model's weights now; None when the run has none."""
        if not self.exp.regularizer.active:
            return None
        with torch.no_grad():
            return float(self.exp.regularizer.penalty())

    def measure(self) -> dict[str, float]:
        """The epoch's evaluations. Training and validation are measured the same way (eval mode, data loss
        only), so the dashboard can draw them on one chart; the penalty is its own number."""
        d, model = self.exp.data, self.exp.model
        return measured_row(loss_and_accuracy(model, *self.train_eval), loss_and_accuracy(model, d.x_val, d.y_val),
                            self.penalty(), loss_and_accuracy(self.ema.module, d.x_val, d.y_val) if self.ema is not None else None)

    def permutation(self) -> torch.Tensor:
        """This epoch's batch order, from the run's own stream."""
        return torch.randperm(len(self.exp.data.x_train), device=self.exp.device, generator=self.batches)

    def read_losses(self, first_step: int, losses: list[float]) -> Optional[tuple[int, float]]:
        """Step losses read back at a logging step (``first_step`` the first's, counted from 1): to the dashboard, with
        a per-step schedule's rate at the last of them, and the epoch's mean. Returns the first of them that is NaN,
        Inf or above ``self.threshold`` (its step and loss: the run diverged there), or None."""
        schedule = self.exp.schedule
        last = first_step + len(losses) - 1
        self.dashboard.train_losses(first_step, losses, schedule.rate(last - 1) if schedule.per_step else None)
        self.loss_sum += sum(losses)
        self.losses_read += len(losses)
        return next(((first_step + i, v) for i, v in enumerate(losses) if not math.isfinite(v) or v > self.threshold),
                    None)

    # ------------------------------------------------------------------ checkpoints
    @functools.cached_property
    def data_fingerprint(self) -> dict[str, Any]:
        """The data this run trains on, as its checkpoints keep it (:meth:`expt.data.Splits.fingerprint`): last.pt's
        for a resume to check, best.pt's and the snapshots' for an ensemble to check."""
        return self.exp.data.fingerprint()

    def state(self, optimizer_state: dict[str, Any], scaler_state: Optional[dict[str, Any]] = None) -> dict[str, Any]:
        """last.pt: everything to continue the run, the best model so far included.

        last.pt is the one file a resume reads, so a kill between its write and best.pt's can
        never leave a training state and a best model that disagree.
        """
        e = self.exp
        return {
            "model": e.model.state_dict(),
            "optimizer": optimizer_state,
            **({"scaler": scaler_state} if scaler_state is not None else {}),
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
            "data": self.data_fingerprint,
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
            "data": self.data_fingerprint,
            "config": self.exp.config_yaml,
        }

    def _checkpoints(self) -> list[Path]:
        """The checkpoints a run started anew replaces: last.pt, best.pt and the epoch snapshots; nothing else there."""
        return [self.ckpt_dir / checkpoint.LAST, self.ckpt_dir / checkpoint.BEST,
                *checkpoint.snapshots(self.ckpt_dir).values()]

    def earlier_run_here(self) -> bool:
        """Whether the directory holds an earlier run's files that this run has not replaced (nor resumed from)."""
        if self.began:
            return False
        files = (*self._checkpoints(), self.run_dir / METRICS_FILE)
        return bool(self.dashboard.earlier) or any(path.is_file() for path in files)

    def forget_earlier_run(self) -> None:
        """A run started anew (not resumed) in a directory an earlier run used replaces that run whole: its event
        files, checkpoints (last.pt, best.pt, the snapshots), metrics.json and what ``python -m expt.evaluate``
        wrote there go before this run writes anything, so no reader mixes the two runs (an ensemble of the
        earlier run's snapshots, its metrics beside this run's best.pt)."""
        if not self.earlier_run_here():
            self.began = True
            return  # no earlier run here: a directory of the user's own is left as it is
        checkpoints = self._checkpoints()
        self._refuse_files_of_others(checkpoints)
        self.began = True  # from here the directory is this run's
        removed = self.dashboard.forget_earlier_run()
        board = self.run_dir / EVALUATION_DIR  # python -m expt.evaluate's events; nothing else there is touched
        files = [*checkpoints, self.run_dir / METRICS_FILE, self.run_dir / EVALUATION_FILE,
                 *(board.glob(EVENTS_GLOB) if board.is_dir() else ())]
        for path in files:
            with contextlib.suppress(OSError):  # absent; or not removable, and then this run's write says why
                path.unlink()
                removed += 1
        with contextlib.suppress(OSError):  # left where it holds anything else
            board.rmdir()
        if removed:
            log.info("This run starts anew in %s: the %d file(s) of the run before it were removed (its events, "
                     "checkpoints, metrics and evaluation).", self.run_dir, removed)

    def _refuse_files_of_others(self, checkpoints: list[Path]) -> None:
        """A ConfigError where a file this run would remove as an earlier run's is not one an expt run wrote: a
        directory chosen on purpose (``hydra.run.dir=.``) may hold a user's own ``metrics.json``, checkpoints
        (``checkpoints``: :meth:`_checkpoints`) or TensorBoard events. Event files count as a run's beside the
        ``run_label.txt`` a run writes first."""
        others = []
        if (self.run_dir / METRICS_FILE).is_file() and "status" not in (read_metrics(self.run_dir) or {}):
            others.append(f"{METRICS_FILE} (not written by an expt run)")
        evaluation = self.run_dir / EVALUATION_FILE
        if evaluation.is_file():
            try:
                data = json.loads(evaluation.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                data = None
            if not (isinstance(data, dict) and "members" in data and "ensemble" in data):
                others.append(f"{EVALUATION_FILE} (not written by python -m expt.evaluate)")
        for path in checkpoints:
            if path.is_file() and not checkpoint.written_by_expt(path):
                others.append(f"{path.relative_to(self.run_dir)} (not an expt checkpoint)")
        events = [path.name for path in self.dashboard.earlier]
        if events and not (self.run_dir / LABEL_FILE).is_file():
            others.append(f"{events[0]}{f' and {len(events) - 1} more' if len(events) > 1 else ''} (TensorBoard "
                          f"events without the {LABEL_FILE} an expt run writes)")
        if others:
            raise ConfigError(
                f"the run directory {self.run_dir} holds files that no expt run wrote, where this run writes its own: "
                f"{'; '.join(others)}. A run started there would replace them: move them, or give the run another "
                "directory (hydra.run.dir=...).")

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

    def save(self, engine) -> None:
        """Write last.pt (the training state after this epoch, the commit point), then best.pt if the best changed.

        The dashboard's events come first: a run resumed from last.pt trains the epochs after it again,
        so every event of the epochs before it must be in the file."""
        self.dashboard.drain()
        checkpoint.save(self.state(*engine.optimizer_state(self)), self.ckpt_dir / checkpoint.LAST)
        self.saved_epoch, self.saved_at = self.epoch, time.perf_counter()
        self.save_best()

    def save_if_behind(self, engine) -> None:
        """last.pt, where the run has trained an epoch since it was written."""
        if self.saved_epoch != self.epoch and self.history:
            self.save(engine)

    def save_best(self) -> None:
        if not self.best_written and self.best["state"] is not None:
            b = self.best
            checkpoint.save(self.model_file(b["state"], b["epoch"], b["val_acc"], b["averaged"]),
                            self.ckpt_dir / checkpoint.BEST)
            self.best_written = True

    def checkpoint_due(self) -> bool:
        """After every epoch when trainer.checkpoint_interval is 0; else once that many seconds have passed."""
        interval = self.settings.checkpoint_interval
        return interval == 0 or time.perf_counter() - self.saved_at >= interval

    def resume(self, path: Path, engine) -> None:
        """Continue the run saved in ``path``: weights, optimizer, scaler, random streams, history, best model.

        The checkpoint's config must match this run's in every key that made the saved state
        (:func:`expt.checkpoint.check_resumable`). The learning rate is a function of the step
        (:class:`expt.schedule.LearningRate`) from this run's config, so a run resumed with more epochs
        follows the schedule of the longer run, as an uninterrupted run would; ReduceLROnPlateau is
        handed the logged validation losses again.
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
        checkpoint.check_resumable(state["config"], OmegaConf.to_container(e.cfg, resolve=True), path,
                                   state.get("epoch"))
        checkpoint.check_same_data(state, self.data_fingerprint, e.preprocessor.state_dict(), path)
        checkpoint.load_weights(e.model, state["model"], f"trainer.resume={str(path)!r}")
        try:
            engine.load_optimizer_state(state["optimizer"], state.get("scaler"))
        except (RuntimeError, ValueError, KeyError) as exc:
            raise ConfigError(
                f"trainer.resume={str(path)!r} does not fit the optimizer this config builds "
                f"({type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]})."
            ) from None
        if self.ema is not None:
            averaging.restore(self.ema, state["ema"])
        checkpoint.restore_rng(state["rng"], self.batches, e.device, self.augment_rng)
        self.epoch, self.history, self.initial_loss = state["epoch"], list(state["history"]), state["initial_loss"]
        for row in self.history:
            if row["epoch"] > 0:
                e.schedule.observe(row["val_loss"])
        self.best = {"val_acc": state["best_val_acc"], "epoch": state["best_epoch"], "state": state["best_model"],
                     "averaged": state["best_averaged"]}
        if path.resolve() != (self.ckpt_dir / checkpoint.LAST).resolve():
            checkpoint.copy(path, self.ckpt_dir / checkpoint.LAST)
        else:  # this directory's own run: what it wrote after the checkpoint is trained again
            removed = self.dashboard.forget_after(self.epoch, self.epoch * e.steps_per_epoch)
            if removed:
                log.info("The %d event(s) written after epoch %d's checkpoint were removed: they are trained again.",
                         removed, self.epoch)
        self.best_written = False
        self.save_best()  # best.pt as last.pt has it, whatever a kill between the two writes left behind
        self.saved_epoch = self.epoch
        log.info("Resumed from %s after epoch %d", path, self.epoch)

    # ------------------------------------------------------------------ the run's course
    def begin(self, engine, measured: Optional[tuple[float, Optional[float]]] = None) -> None:
        """Resume, or record the loss at init (``measured``, the engine's measure of :meth:`losses`; measured here when
        None), which the sanity guard judges first (:func:`expt.checks.guard`: a strict one stops the run here);
        start the dashboard."""
        e, t = self.exp, self.settings
        self.started = self.saved_at = time.perf_counter()
        if t.resume:
            self.resuming = checkpoint.resolve(t.resume)
            self.resume(self.resuming, engine)
            self.began = True  # the directory's run is this one, resumed
        else:
            if measured is None:  # measured here once an earlier run's files are gone: a stop meanwhile mixes none
                self.forget_earlier_run()
                measured = self.losses()
            data_loss, penalty = measured
            # judged before an earlier run's files here go, so that a strict stop leaves that run as it was
            guard(e, *self.train_eval, data_loss, self.log_prefix)  # as sanity.before_train says: warn, strict or false
            self.forget_earlier_run()
            self.initial_loss = training_loss(data_loss, penalty)
            log.info("%sInitial training loss %.4f (log C = %.4f): the data loss %.4f%s on the %d training samples "
                     "training accuracy is measured on; a training loss above %gx it stops the run as diverged",
                     self.log_prefix, self.initial_loss, math.log(e.data.num_classes), data_loss,
                     "" if penalty is None else f" + penalty {penalty:.4f}", len(self.train_eval[1]),
                     t.divergence_factor)
        self.dashboard.start(e, self.train_eval_idx[: t.batch_size], self.epoch)
        self.threshold = t.divergence_factor * self.initial_loss

    def record(self, row: dict[str, float], engine) -> None:
        """An epoch's row: history, best model, events, snapshot, checkpoint when due, the log line."""
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
        self.dashboard.epoch(row["epoch"], row)
        ema = f"  ema val {100 * row['ema_val_acc']:.1f}%" if "ema_val_acc" in row else ""
        log.info(  # before the files: a checkpoint the disk cannot take still leaves the epoch's line
            "%sepoch %d/%d  loss %.4f  train %.1f%%  val %.1f%%%s  lr %.2e  %.1fs", self.log_prefix,
            row["epoch"], self.settings.epochs, row["train_loss"], 100 * row["train_acc"], 100 * row["val_acc"],
            ema, row["lr"], row["seconds"],
        )
        if self.settings.snapshots:
            self.save_snapshot(row)
        if self.checkpoint_due():
            self.save(engine)

    log_prefix = ""  # a population names its member here

    def pruned(self) -> bool:
        """Report this epoch's best score to the sweep's early stopping; True when the run should stop here."""
        if self.report is None or self.epoch >= self.settings.epochs:
            return False
        if not self.report.report(self.epoch, self.best["val_acc"]):
            return False
        log.info("%sEpoch %d: best val %.2f%% is below the median of this round's other trials at this epoch: "
                 "stopping (pruned).", self.log_prefix, self.epoch, 100 * self.best["val_acc"])
        return True

    def _val_loss_at(self, epoch: Optional[int]) -> Optional[float]:
        """The validation loss of the weights that scored best at ``epoch`` (the averaged ones if they did)."""
        for row in self.history:
            if row["epoch"] == epoch:
                return row.get("ema_val_loss" if self.best["averaged"] else "val_loss", row.get("val_loss"))
        return None

    def announce_test(self) -> None:
        """Say that the best model is being tested, before it is: seconds on a CPU for a large test split."""
        log.info("%sTesting the best model (epoch %s) on the %d test samples.", self.log_prefix, self.best["epoch"],
                 len(self.exp.data.x_test))

    def finish(self, status: str, warmup_seconds: Optional[float] = None,
               tested: Optional[tuple[float, float]] = None) -> dict[str, Any]:
        """Write best.pt if it lags, evaluate the best model once on the test split (``tested``: the (loss, accuracy)
        its engine measured with other runs' best models), gather the run's metrics."""
        e = self.exp
        try:
            self.save_best()
        except StorageError as exc:  # a full disk: the run stops as interrupted, its metrics.json still kept if it fits
            if status != INTERRUPTED:
                raise
            log.warning("%s%s; the best model is not kept.", self.log_prefix, exc)
        test_loss = test_acc = None
        if self.best["state"] is not None:
            e.model.load_state_dict(self.best["state"])  # the model the run leaves, tested here or with the others
            if tested is None:
                self.announce_test()
                tested = loss_and_accuracy(e.model, e.data.x_test, e.data.y_test)
            test_loss, test_acc = tested
        last = self.history[-1] if self.history else {}
        metrics = {
            "status": status,
            "best_val_acc": self.best["val_acc"] if self.best["epoch"] is not None else None,
            "best_val_loss": self._val_loss_at(self.best["epoch"]),
            "train_samples": len(e.data.x_train),
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
            "compile_warmup_seconds": warmup_seconds,
            "history": self.history,
        }
        metrics["objective"] = metrics["best_val_acc"] if status in (COMPLETED, PRUNED) else 0.0
        self.metrics = metrics
        return metrics
