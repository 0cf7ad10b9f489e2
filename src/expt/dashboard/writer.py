"""Everything a run writes for TensorBoard: ``tensorboard --logdir <run or sweep dir>`` shows it.

The recipe's "watch the dashboards" step (section 3 of the recipe), in one event file per run:

Custom scalars (the page ``python -m expt.board`` opens)
    The recipe's pair first: ``accuracy/train`` against ``accuracy/val`` on one chart and
    ``loss/train_data`` against ``loss/val`` on another (both data losses, measured the same way
    each epoch), then the training loss as optimized, the learning rate and the update ratios.
Scalars
    ``loss/train`` per step (data loss + penalty, as the optimizer sees it); per epoch (step =
    epoch number; accuracies are fractions) ``loss/train_data`` (the data loss on the fixed training
    subsample, in eval mode, as ``loss/val`` is measured), ``loss/val``, ``accuracy/train``,
    ``accuracy/val``, ``loss/penalty`` (when a penalty is active) and ``lr`` (the rate of the epoch's first
    step); ``lr/step``, a per-step schedule's rate at the logging steps;
    ``diagnostics/update_ratio_log10/<layer>``, log10 of the norm of one step's change of a weight
    tensor over the norm of the weight (healthy near -3, i.e. 1e-3; the reference line
    ``diagnostics/update_ratio_log10/reference_1e-3`` is drawn with them), at the logging steps
    (every ``trainer.log_every`` steps and the last of each epoch).
Histograms
    ``activations/<layer>`` and ``gradients/<layer>`` on one fixed batch (the first
    ``trainer.batch_size`` samples of the training-accuracy subsample), at the initialised model
    (step 0) and after every epoch.
Images
    ``filters/<layer>``: the first layer's weights, one tile per filter or unit, per epoch.
Text and graph
    ``config``: a short header (the run's name, overrides, round, status, best validation accuracy
    and diagnosis), then the composed config as YAML; ``model/summary`` (layers and parameter
    counts) and the traced model graph.
HParams
    The run's hyperparameters (the overridden keys and the group choices) with its final metrics
    (``hparams/*`` scalars), status and diagnosis, so a sweep directory shows every trial in one table.

In a sweep's trials the heavy diagnostics (histograms, filters, graph, the full config text) are
written only in the rounds ``dashboard.sweep_diagnostics`` names (the final one by default).

``<layer>`` is the module's name in the model followed by its class, e.g. ``0.Conv2d``.
The diagnostics themselves are in :mod:`expt.dashboard.diagnostics`, the hyperparameters in
:mod:`expt.dashboard.hparams`.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import threading
import time
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.tensorboard import SummaryWriter

try:
    import google_crc32c
except ImportError:  # TensorBoard then checksums its records in Python, as it does by default
    google_crc32c = None


from expt.config import DashboardConfig
from expt.dashboard.background import Background
from expt.dashboard.diagnostics import (
    code_block, filter_grid, first_layer, histogram_fields, histogram_table, model_summary, probe_layers,
    weight_tensors,
)
from expt.dashboard.diagnosis import diagnose
from expt.dashboard.events import cut_after, wait_to_sort_after
from expt.dashboard.hparams import (
    HPARAM_METRICS, STATUS, DIAGNOSIS, TABLE_METRICS, SweepContext, declared_columns, hparams_summaries, run_hparams,
    run_label, sweep_context,
)
from expt.errors import StorageError, not_written, os_error_in
from expt.status import EVENTS_GLOB, LABEL_FILE
from expt.values import is_finite_number

log = logging.getLogger(__name__)

SCALARS = (("loss/val", "val_loss"), ("accuracy/train", "train_acc"), ("accuracy/val", "val_acc"), ("lr", "lr"),
           ("loss/train_data", "train_data_loss"), ("loss/penalty", "penalty"),
           ("loss/val_ema", "ema_val_loss"), ("accuracy/val_ema", "ema_val_acc"))  # the averaged weights (trainer.ema)
UPDATE_RATIO = "diagnostics/update_ratio_log10"
UPDATE_REFERENCE = f"{UPDATE_RATIO}/reference_1e-3"  # a flat line at -3 on the update-ratio chart
STEP_RATE = "lr/step"  # a per-step schedule's rate at each logging step, beside lr (each epoch's first step's)


def per_step(tag: str) -> bool:
    """Whether ``tag``'s step is the training step (the step losses, a per-step schedule's rate, the update ratios);
    every other tag's is the epoch."""
    return tag in ("loss/train", STEP_RATE) or tag.startswith(UPDATE_RATIO + "/")


HEADER_TAG = "config"  # the run's header text (TensorBoard stores it as config/text_summary)


def written_again(tag: str) -> bool:
    """Whether a run resumed from its checkpoint of epoch e writes ``tag`` again at step e or later: its header
    (:meth:`Dashboard.write_header`, as it starts) and its final metrics (``hparams/*``, as it ends, which a stop
    wrote at step e). An earlier process's events of these from step e on are left out (:meth:`Dashboard.forget_after`),
    so that each step shows once and no stop's status outlives the resumed run."""
    return tag.split("/", 1)[0] in (HEADER_TAG, "hparams")


# The custom-scalars page: category -> chart title -> ["Multiline", tag regexes]. The recipe's pair comes first.
LAYOUT = {
    "recipe: train vs val (per epoch, same measurement)": {
        "accuracy: train vs val": ["Multiline", [r"^accuracy/(train|val|val_ema)$"]],
        "loss: train vs val (data loss, no penalty)": ["Multiline", [r"^loss/(train_data|val|val_ema)$"]],
    },
    "training": {
        "loss as optimized (per step, data loss + penalty)": ["Multiline", [r"^loss/train$"]],
        "penalty (per epoch)": ["Multiline", [r"^loss/penalty$"]],
        "learning rate": ["Multiline", [r"^lr$"]],
        "log10 update ratio ||dW|| / ||W|| (healthy near -3)": ["Multiline", [rf"^{UPDATE_RATIO}/"]],
    },
}
STEP_RATE_CHART = "learning rate per step (a per-step schedule's, at the logging steps)"


def layout(per_step_rate: bool) -> dict[str, dict[str, list]]:
    """The custom-scalars page of a run: :data:`LAYOUT`, and after its learning rate, for a run whose schedule steps
    every batch, the chart of :data:`STEP_RATE` (on the step axis, so not on the epochs' chart)."""
    if not per_step_rate:
        return LAYOUT
    training = {}
    for title, chart in LAYOUT["training"].items():
        training[title] = chart
        if title == "learning rate":
            training[STEP_RATE_CHART] = ["Multiline", [rf"^{STEP_RATE}$"]]
    return {**LAYOUT, "training": training}
SESSION_SUFFIX = ".hparams"  # the event file that holds the run's HParams session alone, replaced when the run ends again
# Filters this small (3x3) show little structure as a picture: the header says so.
SMALL_FILTER = 3
# Events the writer thread may hold before add_* blocks. TensorBoard's default of 10 makes the
# training loop wait for the writer thread (and the GIL handover) once an epoch has logged more
# than 10 steps; a deeper queue lets the thread write while the next steps compute. Every epoch
# ends with a flush that empties it.
EVENT_QUEUE = 4096
# The writer thread's own flush interval, for file systems that buffer writes (TensorBoard's local
# writer appends each record as it goes): a long epoch's per-step losses show within this many seconds.
FLUSH_SECONDS = 10


class Dashboard:
    """The TensorBoard writer of one run.

    ``cfg`` is the composed config: its ``dashboard`` keys say which diagnostics to write, and
    it is recorded as text and as hyperparameters. The trainer calls :meth:`start` once the
    model is ready, then :meth:`train_losses`, :meth:`weights_before_update` /
    :meth:`update_ratios` and :meth:`epoch` as it goes, :meth:`drain` before a checkpoint, and
    :meth:`hparams` at the end.

    The diagnostics are computed on the model's device without reading anything back; building
    their records, encoding the filter image, tracing the graph and flushing the file happen on the
    dashboard's thread (:mod:`expt.dashboard.background`), so the training loop does not wait for them.
    ``context`` says where the run stands in a sweep (:func:`sweep_context`; by default Hydra's job config
    alone: the dashboard reads no environment variable). ``seconds`` adds up the time spent on each diagnostic.
    """

    log_prefix = ""  # a population names its member here, as on its RunRecord

    def __init__(self, run_dir: Path, cfg: Optional[DictConfig] = None, context: Optional[SweepContext] = None):
        self.run_dir = Path(run_dir)
        self.cfg = cfg
        self.settings = dashboard_settings(cfg)
        self.context = context if context is not None else sweep_context()
        self.heavy = heavy_diagnostics(self.settings.sweep_diagnostics, self.context)
        if not self.heavy:
            self.settings.histograms = self.settings.filters = self.settings.graph = False
        self.label = run_label(self.context, self.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        use_c_checksums()
        for stale in self.run_dir.glob(f".{EVENTS_GLOB}.tmp"):  # a rewrite (forget_after) a kill cut short
            stale.unlink(missing_ok=True)
        self.earlier = sorted(self.run_dir.glob(EVENTS_GLOB))  # an earlier run's here, if any
        self.resumed_here = False  # by forget_after: the earlier files hold this run up to its checkpoint
        wait_to_sort_after(self.earlier)  # a resumed run's file is read after them
        self._writer: Optional[SummaryWriter] = None  # made with the first event (:attr:`writer`)
        self._refused_file: Optional[str] = None  # a file other than the event file whose write the disk refused
        self.background = Background()
        self.seconds: dict[str, float] = defaultdict(float)
        self.model: Optional[nn.Module] = None
        self._exp: Any = None
        self._probe_idx: Optional[torch.Tensor] = None
        self._weights: dict[str, nn.Parameter] = {}
        self._diagnosed: set[int] = set()

    @property
    def writer(self) -> SummaryWriter:
        """The run's event file, and its name for ``python -m expt.board``, made when the first event is written: a
        run stopped before its dashboard starts (a strict sanity check of the loss at init) leaves no empty run in
        TensorBoard, and an earlier run in its directory keeps its name."""
        if self._writer is None:
            quiet_event_writer_failures()
            (self.run_dir / LABEL_FILE).write_text(self.label + "\n", encoding="utf-8")
            self._writer = SummaryWriter(log_dir=str(self.run_dir), max_queue=EVENT_QUEUE, flush_secs=FLUSH_SECONDS)
        return self._writer

    @contextlib.contextmanager
    def _timed(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - start

    # ------------------------------------------------------------------ once per run
    def forget_earlier_run(self) -> int:
        """A run started anew in a directory that holds an earlier run's event files (not resumed from it)
        replaces that run (``expt.trainer.record.RunRecord.forget_earlier_run``): those files go, so that
        TensorBoard shows this run's scalars and status alone, not the earlier run's HParams session (a resumed
        run keeps them: they hold its first epochs). Returns how many were removed."""
        removed = 0
        for path in self.earlier:
            with contextlib.suppress(OSError):
                path.unlink()
                removed += 1
        self.earlier = []
        return removed

    def forget_after(self, epoch: int, step: int) -> int:
        """A run resumed from its own checkpoint of ``epoch`` (training step ``step``) trains again what its
        earlier process trained after it: that process's events past the checkpoint go from its event files
        (:func:`expt.dashboard.events.cut_after`), so each curve goes on from the checkpoint once instead of
        running back on itself. Returns how many events were removed."""
        self.resumed_here = True
        return sum(cut_after(path, epoch, step, per_step, written_again) for path in self.earlier)

    def start(self, exp: Any, probe_idx: torch.Tensor, epoch: int = 0) -> None:
        """Attach the experiment (``expt.build.Experiment``); write the config, model summary and graph,
        and the diagnostics of the model as it is now (step ``epoch``: 0 before training).

        ``probe_idx`` picks the training samples that the histograms are measured on, every epoch.
        """
        self._exp, self.model = exp, exp.model
        self._probe_idx = probe_idx
        self._weights = weight_tensors(exp.model)
        self.writer.add_custom_scalars(layout(exp.schedule.per_step))
        self.write_header({"status": "running"}, epoch)
        if self.resumed_here:  # the summary, graph and this epoch's diagnostics are in the earlier files already
            self.background.submit("the event file's flush", self.writer.flush)
            return
        if self.settings.summary:
            with self._timed("summary"):
                self.writer.add_text("model/summary", model_summary(exp.model, exp.data.input_shape), 0)
        if self.settings.graph:
            with self._timed("graph"):
                self._write_graph()
        self.diagnostics(epoch)
        self.background.submit("the event file's flush", self.writer.flush)

    def _write_graph(self) -> None:
        """The model's graph, traced on the dashboard's thread from a copy of the model on the CPU (the copy
        is taken here, before training changes the model; tracing never touches the device training uses)."""
        x, _ = self._probe()
        model = copy.deepcopy(self.model).to("cpu").eval()
        example = x[:1].to("cpu")
        name = type(self.model).__name__

        def trace() -> None:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    self.writer.add_graph(model, example)
            except Exception as exc:  # a model that cannot be traced still trains; say why the graph is missing
                log.warning("%sNo model graph in TensorBoard: tracing %s failed (%s: %s)", self.log_prefix, name,
                            type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")

        self.background.submit("the model graph", trace)

    def _probe(self) -> tuple[torch.Tensor, torch.Tensor]:
        data = self._exp.data
        return data.x_train[self._probe_idx], data.y_train[self._probe_idx]

    # ------------------------------------------------------------------ per step
    def train_losses(self, first_step: int, losses: Iterable[float], rate: Optional[float] = None) -> None:
        """The step losses the loop has read back, and ``rate``, the learning rate of the last of their steps (a
        per-step schedule's: it changes within the epoch), written on the dashboard's thread (their records cost
        the loop about 10-20 us a step otherwise); that read finished the device's earlier copies, so the
        diagnostics waiting for them go to the thread too."""
        values = list(losses)

        def write() -> None:
            for offset, value in enumerate(values):
                self.writer.add_scalar("loss/train", value, first_step + offset)
            if rate is not None:
                self.writer.add_scalar(STEP_RATE, rate, first_step + len(values) - 1)

        self.background.submit("the record of the step losses", write)  # submit hands over what is ready, in order

    def weights_before_update(self) -> Optional[list[torch.Tensor]]:
        """Copies of the weight tensors, taken before a logging step's update; None when update ratios are off."""
        if not self.settings.update_ratio or not self._weights:
            return None
        with self._timed("update_ratio"), torch.no_grad():
            return [w.detach().clone() for w in self._weights.values()]

    def update_ratios(self, step: int, before: list[torch.Tensor]) -> None:
        """``diagnostics/update_ratio/<layer>`` = ||w_after - w_before|| / ||w_before|| for the step just taken."""
        with self._timed("update_ratio"), torch.no_grad():
            ratios = torch.stack([
                (w.detach() - b).norm().double() / b.norm().double().clamp_min(1e-30)
                for w, b in zip(self._weights.values(), before)
            ]).clamp_min(1e-30).log10()
            labels = list(self._weights)

            def write(values: torch.Tensor) -> None:
                for label, ratio in zip(labels, values.tolist()):
                    self.writer.add_scalar(f"{UPDATE_RATIO}/{label}", ratio, step)
                self.writer.add_scalar(UPDATE_REFERENCE, -3.0, step)

            self.background.submit("the update ratios", write, [ratios])

    # ------------------------------------------------------------------ per epoch
    def epoch(self, epoch: int, row: dict[str, float]) -> None:
        """The epoch's scalars (step = epoch), then its histograms and filter images, all written on the dashboard's
        thread."""
        scalars = [(tag, row[key]) for tag, key in SCALARS if key in row]

        def write() -> None:
            for tag, value in scalars:
                self.writer.add_scalar(tag, value, epoch)

        self.check_storage()  # an earlier write the disk refused stops the run here, within an epoch of it
        self.background.submit("the record of the epoch's scalars", write)
        self.diagnostics(epoch)
        self.background.submit("the event file's flush", self.writer.flush)

    def drain(self) -> None:
        """Wait until every event handed to the dashboard is in its file (before a checkpoint: a run resumed
        from it has lost no event of the epochs it does not train again); raise :class:`StorageError` where the
        disk refused one (:meth:`check_storage`)."""
        self.background.drain()
        self.check_storage()
        try:
            self.writer.flush()
        except Exception as exc:  # the writer's own thread failed to write (torch raises it again here)
            self._storage_failed(exc)

    def check_storage(self) -> None:
        """Raise :class:`StorageError`, naming the event file and the system's reason, where the disk refused one of
        its writes (a full disk, a file size limit, the run directory removed): the run stops as it does for a
        checkpoint the disk cannot take, rather than train on with curves that are no longer written."""
        failure = self.background.failure
        if failure is None:
            return
        path = self._refused_file or _file_name(getattr(self._writer, "file_writer", None)) or \
            self.run_dir / "events.out.tfevents.*"
        raise not_written(path, failure) from failure

    def _storage_failed(self, exc: BaseException, path: Optional[str] = None) -> None:
        """``exc``, raised by a write on the training thread: as :meth:`check_storage` says it where the disk refused
        the write (``path``: the file, where not the event file), else as it is. Nothing is written after it."""
        if os_error_in(exc) is None:
            raise exc
        self.background.failure, self._refused_file = exc, path
        self.check_storage()

    def diagnostics(self, epoch: int) -> None:
        """Histograms and the first layer's filters at step ``epoch``, once per epoch."""
        if self.model is None or epoch in self._diagnosed:
            return
        self._diagnosed.add(epoch)
        if self.settings.histograms:
            with self._timed("histograms"):
                self._write_histograms(epoch)
        if self.settings.filters:
            with self._timed("filters"):
                self._write_filters(epoch)

    def _write_filters(self, epoch: int) -> None:
        first = first_layer(self.model)
        if first is None:
            return
        label, weight = first
        self.background.submit("the filter image", lambda w: self._filter_image(label, w, epoch), [weight])

    def _filter_image(self, label: str, weight: torch.Tensor, epoch: int) -> None:
        """The first layer's weights as one image, encoded and written (on the dashboard's thread)."""
        grid = filter_grid(weight, self._exp.data.input_shape)
        if grid is None:
            return
        try:
            from torch.utils.tensorboard.summary import image

            summary = image(f"filters/{label}", grid, dataformats="CHW")
            note = filter_note(weight)
            if note:  # the image card's description; written in the form TensorBoard converts images to
                from tensorboard.data_compat import migrate_value

                summary.value[0].metadata.summary_description = note
                migrated = migrate_value(summary.value[0])
                del summary.value[:]
                summary.value.append(migrated)
            self.writer.file_writer.add_summary(summary, epoch)
        except ImportError as exc:  # SummaryWriter encodes images with Pillow
            log.warning("%sNo filter images in TensorBoard (%s); install pillow to get them.", self.log_prefix, exc)
            self.settings.filters = False

    def _write_histograms(self, epoch: int) -> None:
        """Every layer's activations and gradients on the probe batch, binned together where they are.

        Only the table of counts leaves the device, in one copy that the loop does not wait for.
        (``SummaryWriter.add_histogram`` bins with NumPy on the host, a read-back per tensor, and
        NumPy's BLAS thread pool then competes with PyTorch's threads for the cores.) Non-finite
        values (a diverging run) are left out.
        """
        activations, gradients = probe_layers(self.model, *self._probe(), self._exp.regularizer.penalty)
        tags = [f"activations/{label}" for label in activations] + [f"gradients/{label}" for label in gradients]
        if not tags:
            return
        table = histogram_table([*activations.values(), *gradients.values()])

        def write(rows: torch.Tensor) -> None:
            for tag, row in zip(tags, rows.tolist()):
                fields = histogram_fields(row)
                if fields is not None:
                    self.writer.add_histogram_raw(tag, **fields, global_step=epoch)

        self.background.submit("the histograms", write, [table])

    # ------------------------------------------------------------------ the header
    def write_header(self, metrics: dict[str, Any], step: int) -> None:
        """The ``config`` text: the header (:meth:`header`), then the composed config where heavy diagnostics are on."""
        text = self.header(metrics)
        if self._exp is not None and self.heavy:
            text += "\n\n" + code_block(self._exp.config_yaml)
        elif self._exp is not None:
            text += ("\n\nThe full config is in this trial's `.hydra/config.yaml`; the dashboard shows it for the "
                     f"rounds `dashboard.sweep_diagnostics` names ({self.settings.sweep_diagnostics}).")
        self.writer.add_text(HEADER_TAG, text, step)

    def header(self, metrics: dict[str, Any]) -> str:
        """Markdown: the run's name, overrides, round, status, best validation accuracy, diagnosis."""
        ctx = self.context
        status = str(metrics.get("status", "running"))
        best = metrics.get("best_val_acc")
        lines = [f"**{self.label}**", ""]
        lines.append("- overrides: " + (" ".join(f"`{o}`" for o in ctx.overrides) if ctx.overrides else "none"))
        if ctx.round is not None:
            final = {True: " (the final round)", False: "", None: ""}[ctx.final]
            lines.append(f"- sweep round {ctx.round}{final}" + (f", job {ctx.job}" if ctx.job is not None else ""))
        lines.append(f"- status: {status}")
        if is_finite_number(best):
            lines.append(f"- best val accuracy: {100 * best:.2f}% (epoch {metrics.get('best_epoch')})")
        if "history" in metrics:
            lines.append(f"- diagnosis: {diagnose(metrics['history'], status).line()}")
        first = first_layer(self.model) if self.model is not None else None
        note = filter_note(first[1]) if first is not None and self.heavy and self.settings.filters else None
        if note:
            lines.append(f"- filters: {note}")
        return "\n".join(lines)

    # ------------------------------------------------------------------ at the end
    def hparams(self, metrics: dict[str, Any], params: Optional[dict[str, Any]] = None) -> None:
        """Record the run's hyperparameters (``params``, by default :func:`run_hparams`) with its final
        metrics for the HParams tab, in this run's own event file, and the final header.

        The final metrics become ``hparams/*`` scalars; the status (completed, diverged, pruned,
        interrupted) is both a column and the session's status, and the diagnosis
        (:func:`expt.dashboard.diagnosis.diagnose`) a column, also logged.
        Given ``params`` are all marked as varying between trials (shown first). Where the disk has refused an
        event (:meth:`check_storage`), nothing more is written: the run is ending for it.
        """
        if self.background.failure is not None:
            return
        if params is None:
            params, varied = run_hparams(self.cfg, self.context) if self.cfg is not None else ({}, set())
        else:
            varied = set(params)
        status = str(metrics.get("status", "unknown"))
        diagnosis = diagnose(metrics.get("history") or [], status)
        log.info("%sDiagnosis: %s", self.log_prefix, diagnosis.line())
        params = {STATUS: status, DIAGNOSIS: diagnosis.verdict, **params}
        step = int(metrics.get("epochs_completed") or 0)
        declared = declared_columns(self.context) if self.context.multirun else None
        try:
            for tag, key in HPARAM_METRICS:
                value = metrics.get(key)
                if is_finite_number(value):
                    self.writer.add_scalar(tag, value, step)
            self.drain()
            self._write_session(hparams_summaries(params, TABLE_METRICS, status, varied, declared))
            self.write_header(metrics, step)
            self.writer.flush()
        except StorageError:
            raise
        except Exception as exc:  # a write the disk refused: the run stops as for a checkpoint (metrics.json next)
            self._storage_failed(exc)

    def _write_session(self, summaries: list[Any]) -> None:
        """The HParams session in an event file of its own (``*.hparams``), which replaces the one an earlier attempt
        of this run wrote: TensorBoard takes a tag's HParams content from the first event of a run, so an interrupted
        attempt's session would stay what the HParams tab shows after the run resumed and ended."""
        from torch.utils.tensorboard.writer import FileWriter

        before = set(self.run_dir.glob(f"{EVENTS_GLOB}{SESSION_SUFFIX}"))
        writer = FileWriter(str(self.run_dir), filename_suffix=SESSION_SUFFIX)
        for summary in summaries:
            writer.add_summary(summary)
        writer.close()
        failure = _thread_failure(writer)
        if failure is not None:  # close() does not raise what the writer's thread died of
            name = _file_name(writer)
            with contextlib.suppress(OSError, TypeError):  # the part written; the earlier session stays
                Path(name).unlink()
            self._storage_failed(failure, name)
        for path in before:  # once the new one is whole: a kill in between leaves a session, not none
            with contextlib.suppress(OSError):
                path.unlink()

    def close(self) -> None:
        """Write what is left, then close the event file."""
        if self.seconds:
            log.debug("Dashboard diagnostics: %s", ", ".join(f"{k} {v:.3f}s" for k, v in self.seconds.items()))
        self.background.drain()
        if self._writer is not None:
            if self.background.failure is None:
                self._writer.close()
            else:  # the writer raises its stored error again; the run has said why it stopped
                with contextlib.suppress(Exception):
                    self._writer.close()


def _file_name(file_writer: Any) -> Optional[str]:
    """The event file a torch ``FileWriter`` writes (None where this tensorboard keeps it elsewhere)."""
    return getattr(getattr(file_writer, "event_writer", None), "_file_name", None)


def _thread_failure(file_writer: Any) -> Optional[BaseException]:
    """The error a closed torch ``FileWriter``'s thread died of (tensorboard keeps it there; its ``close`` does not
    raise it); None where there is none, or where this tensorboard keeps it elsewhere."""
    async_writer = getattr(getattr(file_writer, "event_writer", None), "_async_writer", None)
    return getattr(getattr(async_writer, "_worker", None), "exception", None)


def quiet_event_writer_failures() -> None:
    """Leave out of the console the traceback Python prints when tensorboard's event writer thread dies on a write the
    disk refused (a full disk, a file size limit): the writer raises that error again at the next write, and the
    dashboard reports it once, as the reason the run stops (:meth:`Dashboard.check_storage`). Any other thread's
    error, and any other error of that thread, is printed as before."""
    from tensorboard.summary.writer.event_file_writer import _AsyncWriterThread

    previous = threading.excepthook
    if getattr(previous, "expt_quiet_event_writer", False):
        return

    def hook(args: Any) -> None:
        if not (isinstance(args.thread, _AsyncWriterThread) and args.exc_value is not None
                and os_error_in(args.exc_value) is not None):
            previous(args)

    hook.expt_quiet_event_writer = True  # type: ignore[attr-defined]
    threading.excepthook = hook


def use_c_checksums() -> bool:
    """Have TensorBoard's event writer compute its record checksums in C; True when it does.

    tensorboard frames every event record with a masked CRC-32C that it computes byte by byte in
    Python, in its writer thread and holding the GIL: about 0.1 us a byte, taken from the training
    loop (10 us for each per-step scalar, 5 ms for a 50 kB filter image). google-crc32c computes
    the same checksum in C. It is put in place only when tensorboard's record writer still looks
    the function up as ``masked_crc32c``, google-crc32c has its C build, and both give the same
    checksum on a sample; otherwise the events are written exactly as before. TensorBoard's reader
    checks every record with its own Python function, so a wrong checksum would not go unnoticed.
    """
    from tensorboard.summary.writer import record_writer

    current = getattr(record_writer, "masked_crc32c", None)
    if current is _masked_crc32c:
        return True
    if current is None or google_crc32c is None or google_crc32c.implementation != "c":
        return False
    sample = bytes(range(256)) + b"expt"
    if _masked_crc32c(sample) != current(sample):
        return False
    record_writer.masked_crc32c = _masked_crc32c
    return True


def _masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC-32C of ``data`` (rotated right by 15 bits, plus a constant), in C."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def dashboard_settings(cfg: Optional[DictConfig]) -> DashboardConfig:
    """The ``dashboard`` keys of ``cfg`` (defaults where a key or the whole node is absent)."""
    node = cfg.get("dashboard") if cfg is not None else None
    if node is None:
        return DashboardConfig()
    known = DashboardConfig.__dataclass_fields__
    return DashboardConfig(**{
        k: str(v) if k == "sweep_diagnostics" else bool(v)
        for k, v in OmegaConf.to_container(node, resolve=True).items() if k in known
    })


def heavy_diagnostics(sweep_diagnostics: str, context: SweepContext) -> bool:
    """Whether this run writes histograms, filters, graph and the full config text.

    Always outside a sweep; in a sweep's trial (the context has a round) as ``dashboard.sweep_diagnostics``
    says: ``all`` rounds, ``none``, or the ``final`` round only (``context.final``; a sweeper that does not
    say gets them in every round, as before).
    """
    if context.round is None or sweep_diagnostics == "all":
        return True
    if sweep_diagnostics == "none":
        return False
    return context.final is not False


def filter_note(weight: torch.Tensor) -> Optional[str]:
    """What to expect of the filter images when the kernels are small, or None."""
    if weight.dim() == 4 and max(weight.shape[-2:]) <= SMALL_FILTER:
        kh, kw = weight.shape[-2:]
        return (f"{kh}x{kw} kernels are too small to show a pattern: as pictures they look like noise, which "
                "is expected. Read this layer through its histograms and update ratio instead; "
                "model=mlp shows first-layer units as whole-image templates.")
    return None
