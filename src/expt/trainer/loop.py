"""The one epoch loop: a step engine behind it, one run record per model it trains.

Read top to bottom, an epoch is: each run draws its batch order -> for every step, each run's
learning rate for that step (:class:`expt.schedule.LearningRate`), its batch (index slices of the
permutation, augmented from the run's own stream), one engine step -> every ``trainer.log_every``
steps the losses are read back (the step loop's only host-device syncs), written to each run's
dashboard and checked for divergence -> at the end of the epoch each run measures, records (best
model, events, snapshots, checkpoints) and may be pruned by its sweep's early stopping.

A lone run is one :class:`~expt.trainer.record.RunRecord` behind a
:class:`~expt.trainer.engine.SingleEngine`; a population is N records behind a
:class:`~expt.trainer.vmap.VmapEngine`. Everything the loop does works for both.
"""

from __future__ import annotations

import contextlib
import logging
import shlex
import time
from typing import Any, Optional, Sequence

import torch

from expt import checkpoint
from expt.errors import StorageError, described, raise_pending_termination
from expt.overrides import shell_override
from expt.progress import Progress
from expt.status import COMPLETED, DIVERGED, INTERRUPTED, PRUNED, write_metrics
from expt.trainer.engine import SingleEngine
from expt.trainer.record import RunRecord

log = logging.getLogger(__name__)


class Trainer:
    """Trains ``records`` with ``engine`` for ``trainer.epochs`` epochs; :meth:`fit` returns each run's metrics.

    ``isolate`` (a population): an error in one run's own work (its measurements, records, checkpoints, end)
    stops that run alone, and :meth:`fit` returns the error in its place; the others go on. Otherwise the
    error stops the trainer.
    """

    def __init__(self, records: Sequence[RunRecord], engine, isolate: bool = False):
        self.records = list(records)
        self.active = list(records)  # in the engine's order; a run that stops leaves
        self.engine = engine
        self.isolate = isolate
        first = self.records[0]
        self.settings = first.settings
        self.steps = first.exp.steps_per_epoch
        self.begun = False
        self.stepping = True  # until the runs end: then the engine takes no more steps, and no run leaves it

    @classmethod
    def single(cls, exp, run_dir, dashboard, progress: bool = False, report=None) -> "Trainer":
        """A lone run: one record behind a SingleEngine."""
        record = RunRecord(exp, run_dir, dashboard, progress=progress, report=report)
        return cls([record], SingleEngine(exp, ema=record.ema))

    @property
    def record(self) -> RunRecord:
        """The run of a lone trainer."""
        return self.records[0]

    # ------------------------------------------------------------------ the run's course
    def fit(self) -> list[Any]:
        """Begin, train every epoch (from where a resumed run stopped), end; each run's metrics (or, isolated, the
        error that stopped it), in order.

        What a stop keeps, for a lone run and a population alike: Ctrl-C, each run's measured epochs
        (:meth:`interrupt`); a lone run's checkpoint the disk refused, what fits (:meth:`stopped_by_storage`, the
        error raised in its place); any other error, each unfinished run's best model so far."""
        try:
            self.begin()
            while not self.done:
                self.train_epoch()
            return self.end()
        except KeyboardInterrupt:
            self.interrupt()
            raise
        except StorageError as exc:
            if not self.isolate:
                raise self.stopped_by_storage(self.record, exc) from exc
            self._save_unfinished()  # each run's own was handled where it failed: this one is the engine's
            raise
        except Exception:
            self._save_unfinished()
            raise

    def _save_unfinished(self) -> None:
        """After an error that stops the trainer: each run not yet ended keeps its best model so far."""
        for r in self.records:
            if r.metrics is None:
                with contextlib.suppress(Exception):  # the failure is what gets reported
                    r.save_best()

    @contextlib.contextmanager
    def _alone(self, record: RunRecord):
        """Around one run's own work: isolated, an error there stops that run alone (see the class)."""
        if not self.isolate:
            yield
            return
        try:
            yield
        except Exception as exc:
            self._fail(record, exc)

    def _fail(self, record: RunRecord, error: Exception) -> None:
        """Stop one run of an isolated trainer for ``error``: keep its best model where it can, let the engine go
        of it; :meth:`fit` returns the error in its place."""
        with record.scope():
            if isinstance(error, StorageError):  # as a lone run ends on a full disk
                error = self.stopped_by_storage(record, error)
            else:
                with contextlib.suppress(Exception):
                    record.save_best()
            log.error("%s%s This run stops; the other runs go on.", record.log_prefix, described(error))
        record.failure = error
        self._leave(record)

    def begin(self) -> None:
        """Each run resumes or measures its loss at init (which the sanity guard judges) and starts its dashboard; a
        run of 0 epochs records the model as it is."""
        # a population measures its members' losses at init together
        losses = [None] * len(self.records) if self.settings.resume else self.engine.losses(self.records)
        for r, measured in zip(self.records, losses):
            with self._alone(r), r.scope():
                r.begin(self.engine, measured)
                if self.settings.epochs == 0 and not r.history:
                    row = {"epoch": 0, "train_loss": r.initial_loss, **r.measure(),
                           "lr": r.exp.schedule.rate(0), "seconds": 0.0}
                    r.record(row, self.engine)
        self.begun = True

    @property
    def done(self) -> bool:
        """Whether every run has stopped or trained its last epoch."""
        return not self.active or self.active[0].epoch >= self.settings.epochs

    def train_epoch(self) -> bool:
        """One epoch of every active run; False when none is left training after it (each diverged or was pruned)."""
        if not self.begun:
            raise RuntimeError("Trainer.begin() must come before the first train_epoch")
        raise_pending_termination()
        t0, warm0 = time.perf_counter(), self.engine.warmup_seconds
        epoch = self.active[0].epoch + 1
        rates = {id(r): r.exp.schedule.epoch_rate(epoch) for r in self.active}
        self.train_steps()
        self.engine.sync()
        measured = self.engine.measure(self.active)  # a population measures its members together
        pruned = []
        for r, measurements in zip(list(self.active), measured):
            with self._alone(r), r.scope():
                row = {"epoch": epoch, "train_loss": r.loss_sum / self.steps, **measurements, "lr": rates[id(r)]}
                r.exp.schedule.observe(row["val_loss"])
                row["seconds"] = time.perf_counter() - t0 - (self.engine.warmup_seconds - warm0)
                r.record(row, self.engine)
                if r.pruned():
                    pruned.append(r)
        for r in pruned:  # stop enters the run's scope itself
            with self._alone(r):
                self.stop(r, PRUNED)
        return bool(self.active)

    def end(self) -> list[Any]:
        """Every run still training has completed: test their best models (a population's together), conclude each;
        the metrics of all (or the error that stopped an isolated run), in order."""
        self.stepping = False  # the runs leave one by one below: restacking the others each time would be wasted
        for r in list(self.active):  # last.pt first, which the test cannot then take away (an error, Ctrl-C)
            with self._alone(r), r.scope():
                r.save_if_behind(self.engine)
        going = list(self.active)
        for r, tested in zip(going, self._tested(going)):
            with self._alone(r):
                self.stop(r, COMPLETED, tested)
        return [r.failure if r.failure is not None else r.metrics for r in self.records]

    def _tested(self, records: list[RunRecord]) -> list[Optional[tuple[float, float]]]:
        """The engine's test of the runs' best models together (None for each it leaves to the run itself); if it
        fails, an isolated trainer's runs each test their own, so that an error of one run's stops it alone."""
        try:
            return self.engine.test(records)
        except Exception as exc:
            if not self.isolate:
                raise
            log.warning("Testing the best models together failed (%s: %s): each run tests its own.",
                        type(exc).__name__, exc)
            return [None] * len(records)

    def stop(self, record: RunRecord, status: str, tested: Optional[tuple[float, float]] = None) -> dict[str, Any]:
        """End one run: last.pt if it lags (a diverged run's weights are past saving), best.pt, the test
        evaluation (``tested``: already measured by the engine), metrics.json and the dashboard's HParams; the engine
        lets it go."""
        with record.scope():
            if status in (COMPLETED, PRUNED):
                record.save_if_behind(self.engine)
            metrics = self.conclude(record, status, tested)
        self._leave(record)
        return metrics

    def _leave(self, record: RunRecord) -> None:
        """A run that has stopped leaves the active runs and, while the engine still steps, the engine."""
        if record in self.active:
            position = self.active.index(record)
            self.active.pop(position)
            if self.stepping:
                self.engine.drop([position])

    def interrupt(self) -> None:
        """After Ctrl-C: each run not yet ended keeps what its finished epochs measured (metrics.json with status
        interrupted, HParams, best.pt) and says which epoch its last checkpoint holds, to resume from. A run
        stopped before it began writes nothing (:meth:`_before_it_began`)."""
        going = [r for r in self.records if r.metrics is None and r.failure is None]  # the others had ended
        for r in list(going):
            stopped = self._before_it_began(r)
            if stopped is not None:  # it writes nothing
                log.warning("%sInterrupted %s", r.log_prefix, stopped)
                going.remove(r)
        if going:  # testing the best model takes a while on a large test split: say what the wait is for
            tests = any(r.history for r in going)  # a run stopped before its first epoch has no best model to test
            log.warning("Stopping: %s; interrupt again to stop at once, without %s.",
                        "testing the best model and writing metrics.json" if tests else "writing metrics.json",
                        "them" if tests else "it")
        for r in going:
            with r.scope():
                try:
                    self.conclude(r, INTERRUPTED)
                except OSError as exc:  # metrics.json on a full disk: the line below still says what last.pt holds
                    log.warning("%s%s: %s", r.log_prefix, type(exc).__name__, exc)
                # a Ctrl-C between an epoch's measurement and its checkpoint: metrics.json holds that epoch
                ended = bool(r.history) and r.history[-1].get("epoch") == r.epoch  # its epoch measured
                measured = ended and r.saved_epoch != r.epoch
                when = (f"after epoch {r.epoch} was measured, before its checkpoint" if measured
                        else f"after epoch {r.epoch} and its checkpoint" if ended
                        else f"during epoch {r.epoch}" if r.epoch > 0 else "before its first epoch")
                if r.saved_epoch is None:
                    log.warning("%sInterrupted %s%s: nothing to resume.", r.log_prefix, when,
                                "" if measured or r.epoch == 0 else ", before the first checkpoint")
                else:
                    log.warning("%sInterrupted %s; checkpoints/%s holds epoch %d: resume with %s", r.log_prefix,
                                when, checkpoint.LAST, r.saved_epoch, shell_override("trainer.resume", str(r.run_dir)))

    @staticmethod
    def _before_it_began(record: RunRecord, room: str = "") -> Optional[str]:
        """For a run stopped before it began (while it resumed, or before it replaced an earlier run), when it
        stopped and what its directory still holds, as a stop's message ends; the run writes nothing, as no
        record of it must replace the run before it. ``room`` goes before the command that resumes it again.
        None for a run that began, and for one in a fresh directory: its metrics.json says that it stopped."""
        if record.began:
            return None
        if record.resuming is not None:  # it measured nothing: the checkpoint it was loading still holds the run
            return (f"while resuming from {record.resuming}, before training: {room}resume again with "
                    f"{shell_override('trainer.resume', str(record.settings.resume))}.")
        if record.earlier_run_here():  # the run its directory holds stays whole
            return f"before the run began: {record.run_dir} holds the run before it, left as it was."
        return None

    def stopped_by_storage(self, record: RunRecord, error: StorageError) -> StorageError:
        """A run whose checkpoint the disk could not take: concluded as interrupted where metrics.json still fits
        (the best model tested from memory); the error to report, saying what was kept and how to resume. A run
        stopped before it began writes nothing (:meth:`_before_it_began`)."""
        stopped = self._before_it_began(record, room="once there is room, ")
        if stopped is not None:
            return StorageError(f"{error}, so the run stopped {stopped}")
        with contextlib.suppress(Exception):
            self.conclude(record, INTERRUPTED)
        kept = ("no checkpoint was kept" if record.saved_epoch is None else
                f"{record.ckpt_dir / checkpoint.LAST} holds epoch {record.saved_epoch}: once there is room, resume "
                f"with {shell_override('trainer.resume', str(record.run_dir))}")
        return StorageError(f"{error}, so the run stopped at epoch {record.epoch}; {kept}.")

    def conclude(self, record: RunRecord, status: str, tested: Optional[tuple[float, float]] = None) -> dict[str, Any]:
        """The run's metrics, recorded where every reader looks: metrics.json, HParams, the log."""
        metrics = record.finish(status, self.engine.warmup_seconds if self.engine.reports_warmup else None, tested)
        record.dashboard.hparams(metrics)
        write_metrics(record.run_dir, metrics)
        def percent(key: str) -> str:  # a run stopped before its first epoch measured nothing
            return "-" if metrics[key] is None else f"{100 * metrics[key]:.2f}%"

        best = "best val -" if metrics["best_epoch"] is None else \
            f"best val {percent('best_val_acc')} (epoch {metrics['best_epoch']})"
        log.info("%s%s: %s, final val %s, test %s. Run directory: %s\n  tensorboard --logdir %s", record.log_prefix,
                 metrics["status"], best, percent("final_val_acc"), percent("test_acc"), record.run_dir,
                 shlex.quote(str(record.run_dir)))
        return metrics

    # ------------------------------------------------------------------ the steps of an epoch
    def train_steps(self) -> None:
        """The training steps of the next epoch, nothing measured after them (the throughput benchmark's unit)."""
        for r in self.active:
            r.epoch += 1
            r.loss_sum, r.losses_read = 0.0, 0
        self._steps(torch.stack([r.permutation() for r in self.active]))

    def _steps(self, perms: torch.Tensor) -> None:
        """Every step of the epoch for the active runs; a run whose loss diverges stops here."""
        engine, t = self.engine, self.settings
        bs, steps = t.batch_size, self.steps
        first = (self.active[0].epoch - 1) * steps  # the run's step count before this epoch
        pending: list[torch.Tensor] = []  # the step losses, on the device until a logging step
        read = 0
        engine.train()
        with self._progress() as progress:
            for i in range(steps):
                logging_step = (i + 1) % t.log_every == 0 or i + 1 == steps
                watched = [pos for pos, r in enumerate(self.active)
                           if logging_step and r.dashboard.settings.update_ratio]
                before = self._weights_before(watched)
                lrs = [r.exp.schedule.rate(first + i) for r in self.active]
                x, y = self._batch(perms[:, i * bs:(i + 1) * bs])
                pending.append(engine.step(x, y, lrs))
                if watched:
                    engine.expose(watched)
                    for pos in watched:
                        if before[pos] is not None:
                            self.active[pos].dashboard.update_ratios(first + i + 1, before[pos])
                progress.advance(y.shape[-1])
                if not logging_step:
                    continue
                raise_pending_termination()
                chunk = torch.stack(pending).T.tolist()  # (runs, steps read)
                pending.clear()
                diverged = {r: where for pos, r in enumerate(self.active)
                            if (where := r.read_losses(first + read + 1, chunk[pos])) is not None}
                read = i + 1
                if len(self.active) == 1:
                    r = self.active[0]
                    progress.note(loss=f"{r.loss_sum / r.losses_read:.4f}")
                    if progress.line_due():  # no bar: a line in the log, as a long epoch goes on
                        log.info("%sepoch %d/%d: step %d of %d, loss %.4f, %.0f images/s", r.log_prefix, r.epoch,
                                 t.epochs, i + 1, steps, r.loss_sum / r.losses_read, progress.rate())
                if diverged:
                    keep = [pos for pos, r in enumerate(self.active) if r not in diverged]
                    for r, (step, loss) in diverged.items():
                        with r.scope():
                            log.warning(
                                "%sEpoch %d, step %d: training loss %.4g is NaN, Inf or above %.1fx the initial loss "
                                "%.4f: stopping.", r.log_prefix, r.epoch, step - first, loss,
                                r.settings.divergence_factor, r.initial_loss)
                        self.stop(r, DIVERGED)
                    if not self.active:
                        return
                    perms = perms[torch.tensor(keep, device=perms.device)]

    def _weights_before(self, watched: list[int]) -> dict[int, Optional[list[torch.Tensor]]]:
        if not watched:
            return {}
        self.engine.expose(watched)  # the dashboard measures the update on the run's own model
        return {pos: self.active[pos].dashboard.weights_before_update() for pos in watched}

    def _batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The step's batch of each active run (rows of ``idx``), augmented from the run's own stream;
        stacked (runs, batch, ...) for a stacked engine, else the one run's (batch, ...)."""
        data = self.active[0].exp.data  # the runs of one engine share their data
        if not self.engine.stacked:
            idx = idx[0]
        x = data.x_train[idx]
        if self.active[0].exp.augmentations:
            views = []
            for pos, r in enumerate(self.active):
                view = x[pos] if self.engine.stacked else x
                for transform in r.exp.augmentations:
                    view = transform(view, r.augment_rng)
                views.append(view)
            x = torch.stack(views) if self.engine.stacked else views[0]
        return x, data.y_train[idx]

    def _progress(self) -> Progress:
        """A lone run's epoch: at a terminal tqdm's bar, shown once the epoch has run ``trainer.progress_after``
        seconds; otherwise (a log file, a sweep's job) a line every minute. A population shows no bar, and its lines
        only once one member is left training."""
        r = self.active[0]
        return Progress(min(len(r.exp.data.x_train), self.steps * self.settings.batch_size),
                        f"epoch {r.epoch}/{self.settings.epochs}", bar=len(self.active) == 1 and r.progress,
                        delay=self.settings.progress_after)
