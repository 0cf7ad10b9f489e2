"""Everything a run writes for TensorBoard: ``tensorboard --logdir <run or sweep dir>`` shows it.

The recipe's "watch the dashboards" step (section 3 of the recipe), in one event file per run:

Scalars
    ``loss/train`` per step; ``loss/val``, ``accuracy/train``, ``accuracy/val`` and ``lr`` per
    epoch (step = epoch number; accuracies are fractions); ``diagnostics/update_ratio/<layer>``,
    the norm of one step's change of a weight tensor over the norm of the weight (healthy near
    1e-3), at the logging steps (every ``trainer.log_every`` steps and the last of each epoch).
Histograms
    ``activations/<layer>`` and ``gradients/<layer>`` on one fixed batch (the first
    ``trainer.batch_size`` samples of the training-accuracy subsample), at the initialised model
    (step 0) and after every epoch.
Images
    ``filters/<layer>``: the first layer's weights, one tile per filter or unit, per epoch.
Text and graph
    ``config`` (the composed config as YAML), ``model/summary`` (layers and parameter counts) and
    the traced model graph.
HParams
    The run's hyperparameters (the overridden keys and the group choices) with its final metrics
    (``hparams/*`` scalars) and status, so a sweep directory shows every trial in one table.

``<layer>`` is the module's name in the model followed by its class, e.g. ``0.Conv2d``.
None of the diagnostics changes the training numbers: the weight snapshots are copies, and the
histogram batch is run in eval mode (no dropout mask drawn, no batch-norm statistic updated)
with the random number generators forked and the parameters' gradients put back afterwards.
:func:`plot_sweep` draws a finished sweep: the objective against each searched parameter.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import time
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn
from torch.utils.tensorboard import SummaryWriter

try:
    import google_crc32c
except ImportError:  # TensorBoard then checksums its records in Python, as it does by default
    google_crc32c = None

from expt.config import TARGET_GROUPS, DashboardConfig

log = logging.getLogger(__name__)

SCALARS = (("loss/val", "val_loss"), ("accuracy/train", "train_acc"), ("accuracy/val", "val_acc"), ("lr", "lr"),
           ("loss/val_ema", "ema_val_loss"), ("accuracy/val_ema", "ema_val_acc"))  # the averaged weights (trainer.ema)
# The final metrics each run records next to its hyperparameters: (scalar tag, metrics.json key).
HPARAM_METRICS = (
    ("hparams/best_val_acc", "best_val_acc"),
    ("hparams/final_val_acc", "final_val_acc"),
    ("hparams/test_acc", "test_acc"),
    ("hparams/final_train_loss", "final_train_loss"),
)
SWEEP_ROUND_ENV = "EXPT_SWEEP_ROUND"
# Modules whose output is their input in eval mode: their activation histogram would repeat the last one.
PASS_THROUGH = (nn.Flatten, nn.Dropout, nn.Identity)
MAX_FILTER_TILES = 64  # PNG-encoding the grid every epoch grows with its area
MIN_TILE_PIXELS = 16  # small filters are enlarged to about this size (32 made the PNG 4x the pixels and 5x the time)
HISTOGRAM_BINS = 64
# Values per histogram at most: a larger tensor (a deep ConvNet's activations hold millions) is
# histogrammed on a fixed random sample of this many entries, which shows the same shape.
HISTOGRAM_SAMPLE = 1 << 16
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
    :meth:`update_ratios` and :meth:`epoch` as it goes, and :meth:`hparams` at the end.
    ``seconds`` adds up the time spent on each diagnostic.
    """

    def __init__(self, run_dir: Path, cfg: Optional[DictConfig] = None):
        self.run_dir = Path(run_dir)
        self.cfg = cfg
        self.settings = dashboard_settings(cfg)
        use_c_checksums()
        self.writer = SummaryWriter(log_dir=str(self.run_dir), max_queue=EVENT_QUEUE, flush_secs=FLUSH_SECONDS)
        self.seconds: dict[str, float] = defaultdict(float)
        self.model: Optional[nn.Module] = None
        self._exp: Any = None
        self._probe_idx: Optional[torch.Tensor] = None
        self._weights: dict[str, nn.Parameter] = {}
        self._diagnosed: set[int] = set()

    @contextlib.contextmanager
    def _timed(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - start

    # ------------------------------------------------------------------ once per run
    def start(self, exp: Any, probe_idx: torch.Tensor, epoch: int = 0) -> None:
        """Attach the experiment (``expt.build.Experiment``); write the config, model summary and graph,
        and the diagnostics of the model as it is now (step ``epoch``: 0 before training).

        ``probe_idx`` picks the training samples that the histograms are measured on, every epoch.
        """
        self._exp, self.model = exp, exp.model
        self._probe_idx = probe_idx
        self._weights = weight_tensors(exp.model)
        if self.cfg is not None:
            self.writer.add_text("config", _code_block(exp.config_yaml), 0)
        if self.settings.summary:
            with self._timed("summary"):
                self.writer.add_text("model/summary", model_summary(exp.model, exp.data.input_shape), 0)
        if self.settings.graph:
            with self._timed("graph"):
                self._write_graph()
        self.diagnostics(epoch)
        self.writer.flush()

    def _write_graph(self) -> None:
        x, _ = self._probe()
        try:
            with _untouched(self.model), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.writer.add_graph(self.model, x[:1])
        except Exception as exc:  # a model that cannot be traced still trains; say why the graph is missing
            log.warning("No model graph in TensorBoard: tracing %s failed (%s: %s)",
                        type(self.model).__name__, type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")

    def _probe(self) -> tuple[torch.Tensor, torch.Tensor]:
        data = self._exp.data
        return data.x_train[self._probe_idx], data.y_train[self._probe_idx]

    # ------------------------------------------------------------------ per step
    def train_losses(self, first_step: int, losses: Iterable[float]) -> None:
        for offset, value in enumerate(losses):
            self.writer.add_scalar("loss/train", value, first_step + offset)

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
            ]).tolist()
            for label, ratio in zip(self._weights, ratios):
                self.writer.add_scalar(f"diagnostics/update_ratio/{label}", ratio, step)

    # ------------------------------------------------------------------ per epoch
    def epoch(self, epoch: int, row: dict[str, float]) -> None:
        """The epoch's scalars (step = epoch), then its histograms and filter images."""
        for tag, key in SCALARS:
            if key in row:
                self.writer.add_scalar(tag, row[key], epoch)
        self.diagnostics(epoch)
        self.writer.flush()

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
        grid = filter_grid(first[1], self._exp.data.input_shape) if first is not None else None
        if grid is None:
            return
        try:
            self.writer.add_image(f"filters/{first[0]}", grid, epoch)
        except ImportError as exc:  # SummaryWriter encodes images with Pillow
            log.warning("No filter images in TensorBoard (%s); install pillow to get them.", exc)
            self.settings.filters = False

    def _write_histograms(self, epoch: int) -> None:
        activations, gradients = probe_layers(self.model, *self._probe(), self._exp.regularizer.penalty)
        for kind, tensors in (("activations", activations), ("gradients", gradients)):
            for label, values in tensors.items():
                self._write_histogram(f"{kind}/{label}", values, epoch)

    def _write_histogram(self, tag: str, values: torch.Tensor, step: int) -> None:
        """One histogram, binned by torch where the values are (only the counts leave the device).

        ``SummaryWriter.add_histogram`` bins with NumPy, whose BLAS thread pool then competes
        with PyTorch's threads for the cores and slows every later training step; binning
        here avoids that. Non-finite values (a diverging run) are left out.
        """
        stats = histogram_stats(values)
        if stats is not None:
            self.writer.add_histogram_raw(tag, **stats, global_step=step)

    # ------------------------------------------------------------------ at the end
    def hparams(self, metrics: dict[str, Any], params: Optional[dict[str, Any]] = None) -> None:
        """Record the run's hyperparameters (``params``, by default :func:`run_hparams`) with its final
        metrics for the HParams tab, in this run's own event file.

        The final metrics become ``hparams/*`` scalars (the metric columns of the HParams table);
        the status (completed, diverged, interrupted) is both an hparam and the session's status.
        Given ``params`` are all marked as varying between trials (shown first).
        """
        if params is None:
            params, varied = run_hparams(self.cfg) if self.cfg is not None else ({}, set())
        else:
            varied = set(params)
        params = {**params, "status": str(metrics.get("status", "unknown"))}
        step = int(metrics.get("epochs_completed") or 0)
        for tag, key in HPARAM_METRICS:
            value = metrics.get(key)
            if _finite(value):
                self.writer.add_scalar(tag, value, step)
        metric_tags = [tag for tag, _ in HPARAM_METRICS]
        for summary in hparams_summaries(params, metric_tags, params["status"], varied):
            self.writer.file_writer.add_summary(summary)
        self.writer.flush()

    def close(self) -> None:
        if self.seconds:
            log.debug("Dashboard diagnostics: %s", ", ".join(f"{k} {v:.3f}s" for k, v in self.seconds.items()))
        self.writer.close()


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
    return DashboardConfig(**{k: bool(v) for k, v in OmegaConf.to_container(node, resolve=True).items() if k in known})


# ====================================================================== layers and diagnostics
def layer_label(model: nn.Module, module_name: str) -> str:
    """``<name>.<Class>``, e.g. ``0.Conv2d``: the module's place in the model and what it is."""
    module = model.get_submodule(module_name)
    return f"{module_name}.{type(module).__name__}" if module_name else type(module).__name__


def weight_tensors(model: nn.Module) -> dict[str, nn.Parameter]:
    """The trainable tensors of two or more dimensions (conv kernels, linear matrices), by layer label.

    Biases and batch-norm scales are left out: their norms are small and their ratios say little.
    """
    weights = {}
    for name, param in model.named_parameters():
        if param.requires_grad and param.dim() >= 2:
            module_name, _, attr = name.rpartition(".")
            label = layer_label(model, module_name)
            weights[label if attr == "weight" else f"{label}.{attr}"] = param
    return weights


def first_layer(model: nn.Module) -> Optional[tuple[str, torch.Tensor]]:
    """(label, weight) of the first weight tensor in the model's order: the layer that sees the pixels."""
    weights = weight_tensors(model)
    return next(iter(weights.items()), None)


@contextlib.contextmanager
def _untouched(model: nn.Module) -> Iterator[None]:
    """Run a diagnostic pass on ``model`` without changing what training does next.

    Eval mode (no dropout masks, batch-norm running statistics left alone), the random number
    generators forked, and the parameters' ``.grad`` put back as they were.
    """
    params = [p for p in model.parameters()]
    saved_grads = [p.grad for p in params]
    was_training = model.training
    devices = sorted({p.device.index or 0 for p in params if p.device.type == "cuda"})
    model.eval()
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        model.train(was_training)
        for p, g in zip(params, saved_grads):
            p.grad = g


def probe_layers(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, penalty: Any = None
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Each layer's output and each weight tensor's gradient on the batch ``(x, y)``.

    One forward pass with hooks on the leaf modules (pass-through modules skipped) and one
    backward pass of the training loss (cross-entropy plus ``penalty()`` when given), without
    an optimizer step. Tensors come back detached, in float32, on the model's device.
    """
    activations: dict[str, torch.Tensor] = {}
    handles = []
    for name, module in model.named_modules():
        if name and next(module.children(), None) is None and not isinstance(module, PASS_THROUGH):
            label = layer_label(model, name)

            def hook(_module: nn.Module, _inputs: Any, output: Any, label: str = label) -> None:
                if isinstance(output, torch.Tensor):
                    activations[label] = output.detach().float()

            handles.append(module.register_forward_hook(hook))
    weights = weight_tensors(model)
    try:
        with _untouched(model):
            for p in model.parameters():
                p.grad = None
            with torch.enable_grad():
                out = model(x)
                loss = F.cross_entropy(out.float(), y)
                if penalty is not None:
                    loss = loss + penalty()
                loss.backward()
            gradients = {
                label: w.grad.detach().float() for label, w in weights.items() if w.grad is not None
            }
    finally:
        for handle in handles:
            handle.remove()
    return activations, gradients


def histogram_stats(
    values: torch.Tensor, bins: int = HISTOGRAM_BINS, max_values: int = HISTOGRAM_SAMPLE
) -> Optional[dict[str, Any]]:
    """The fields of a TensorBoard histogram of ``values``: ``bins`` equal buckets from min to max.

    Laid out as TensorBoard's own histograms are: ``bucket_limits`` are the right edges, after
    a first, empty bucket whose limit is the minimum. A tensor of more than ``max_values``
    entries is described by a random sample of that many, the same entries every time (all
    fields, ``num`` included, are the sample's). None when no value is finite.
    """
    flat = values.detach().flatten().float()
    if flat.numel() > max_values:
        flat = flat[_sample_positions(flat.numel(), max_values, flat.device)]
    finite = torch.isfinite(flat)
    if not bool(finite.all()):
        flat = flat[finite]
    if flat.numel() == 0:
        return None
    lo, hi = torch.aminmax(flat)
    if hi > lo:
        counts = torch.histc(flat, bins=bins, min=float(lo), max=float(hi))
        edges = torch.linspace(float(lo), float(hi), bins + 1, dtype=torch.float64)
    else:
        counts = torch.full((1,), float(flat.numel()))
        edges = torch.tensor([float(lo), float(hi)], dtype=torch.float64)
    summary = torch.stack([
        lo.double(), hi.double(), flat.sum(dtype=torch.float64), flat.square().sum(dtype=torch.float64),
    ]).tolist()
    return {
        "min": summary[0], "max": summary[1], "num": int(flat.numel()), "sum": summary[2], "sum_squares": summary[3],
        "bucket_limits": edges.tolist(), "bucket_counts": [0.0, *counts.tolist()],
    }


@functools.lru_cache(maxsize=32)
def _sample_positions(n: int, k: int, device: torch.device) -> torch.Tensor:
    """``k`` positions out of ``n``, drawn once from their own generator (training's random streams are untouched)."""
    generator = torch.Generator(device=device).manual_seed(n)
    return torch.randint(n, (k,), generator=generator, device=device)


def filter_grid(weight: torch.Tensor, input_shape: Optional[tuple[int, ...]] = None) -> Optional[torch.Tensor]:
    """The first layer's weights as one image (C, H, W) in [0, 1], one tile per filter or unit.

    A conv kernel (out, in, kh, kw) gives one kh x kw tile per filter; a linear layer's row is
    reshaped to the input image. Each tile is scaled to [0, 1] on its own, so the pattern shows
    whatever the filter's scale; 1- and 3-channel tiles are kept as grey or RGB, others averaged
    over channels. Small tiles are enlarged (nearest neighbour) to be visible. None when the
    weights do not form images (a linear layer on non-image input).
    """
    w = weight.detach().float().cpu()
    if w.dim() == 4:
        tiles = w
    elif w.dim() == 2:
        shape = tuple(input_shape or ())
        if len(shape) == 3 and math.prod(shape) == w.shape[1]:
            tiles = w.reshape(w.shape[0], *shape)
        elif len(shape) == 2 and math.prod(shape) == w.shape[1]:
            tiles = w.reshape(w.shape[0], 1, *shape)
        else:
            side = math.isqrt(w.shape[1])
            if side * side != w.shape[1]:
                return None
            tiles = w.reshape(w.shape[0], 1, side, side)
    else:
        return None
    tiles = tiles[:MAX_FILTER_TILES]
    if tiles.shape[1] not in (1, 3):
        tiles = tiles.mean(dim=1, keepdim=True)
    flat = tiles.flatten(1)
    lo, hi = flat.min(dim=1).values, flat.max(dim=1).values
    tiles = (tiles - lo[:, None, None, None]) / (hi - lo).clamp_min(1e-12)[:, None, None, None]
    scale = max(1, MIN_TILE_PIXELS // max(tiles.shape[-2:]))
    if scale > 1:
        tiles = tiles.repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)
    n, c, h, wd = tiles.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    pad = 2
    grid = torch.full((c, rows * (h + pad) + pad, cols * (wd + pad) + pad), 0.5)
    for i in range(n):
        r, col = divmod(i, cols)
        top, left = pad + r * (h + pad), pad + col * (wd + pad)
        grid[:, top:top + h, left:left + wd] = tiles[i]
    return grid


def model_summary(model: nn.Module, input_shape: Optional[tuple[int, ...]] = None) -> str:
    """Markdown: one table row per layer with parameters (shapes and counts), the total, and the module tree."""
    rows = ["| layer | parameters | count |", "|---|---|---:|"]
    total = trainable = 0
    for name, module in model.named_modules():
        own = list(module.named_parameters(recurse=False))
        if not own:
            continue
        count = sum(p.numel() for _, p in own)
        total += count
        trainable += sum(p.numel() for _, p in own if p.requires_grad)
        shapes = ", ".join(f"{n} {'x'.join(map(str, p.shape))}" for n, p in own)
        rows.append(f"| {layer_label(model, name)} | {shapes} | {count:,} |")
    head = f"**{type(model).__name__}**: {total:,} parameters ({trainable:,} trainable)"
    if input_shape:
        head += f", input {'x'.join(map(str, input_shape))}"
    return "\n".join([head, "", *rows, "", _code_block(str(model))])


def _code_block(text: str) -> str:
    """Markdown code block (TensorBoard's text tab renders markdown): indent every line by four spaces."""
    return "\n".join("    " + line for line in text.rstrip().splitlines())


# ====================================================================== hyperparameters
def run_hparams(cfg: DictConfig) -> tuple[dict[str, Any], set[str]]:
    """The hyperparameters that tell this run apart, and the names of those an override set.

    Inside a Hydra job: the group choices (``activation: gelu``; Hydra's own ``hydra/*`` groups
    and the ``dashboard`` group left out, since they do not change the numbers) and every
    key overridden on the command line or by the sweeper, flattened, with its composed value.
    Outside Hydra, the choices are inferred from the config: the class each group names, the
    data set's name, and the active regularizers. ``sweep_round`` comes from
    ``$EXPT_SWEEP_ROUND`` (the coarse-to-fine round, set per trial by the sweeper).

    The second value names what a sweep varies: the overridden keys (less those the sweep's
    command line gives one value for all trials) and ``sweep_round``. The HParams tab shows
    those columns first.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser

    choices: dict[str, Any] = inferred_choices(cfg)
    overridden: dict[str, Any] = {}
    varied: set[str] = set()
    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        for group, choice in hydra_cfg.runtime.choices.items():
            if choice is not None and not group.startswith("hydra/") and group != "dashboard":
                choices[group] = _hparam_value(OmegaConf.to_container(choice) if isinstance(choice, ListConfig) else choice)
        fixed = _fixed_in_sweep(hydra_cfg)
        for override in OverridesParser.create().parse_overrides(list(hydra_cfg.overrides.task)):
            key = override.key_or_group
            if override.is_delete() or key.split(".", 1)[0] in ("dashboard", "hydra"):
                continue
            flat = {key: choices[key]} if key in choices else _flatten(key, OmegaConf.select(cfg, key, default=None))
            if key not in choices:
                overridden.update(flat)
            if key not in fixed:
                varied.update(flat)
    round_ = os.environ.get(SWEEP_ROUND_ENV)
    if round_:
        overridden["sweep_round"] = int(round_) if round_.strip().lstrip("-").isdigit() else round_
        varied.add("sweep_round")
    return {**overridden, **choices}, varied


def _fixed_in_sweep(hydra_cfg: Any) -> set[str]:
    """Keys that a multirun's command line sets to one value for every trial (from its ``multirun.yaml``).

    Empty outside a multirun, or when the file cannot be read.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.types import RunMode

    if hydra_cfg.mode != RunMode.MULTIRUN:
        return set()
    sweep_dir = Path(hydra_cfg.sweep.dir)
    if not sweep_dir.is_absolute():
        sweep_dir = Path(hydra_cfg.runtime.cwd) / sweep_dir
    try:
        task = OmegaConf.load(sweep_dir / "multirun.yaml").hydra.overrides.task
        overrides = OverridesParser.create().parse_overrides(list(task))
    except Exception:
        return set()
    return {o.key_or_group for o in overrides if not o.is_sweep_override()}


def inferred_choices(cfg: DictConfig) -> dict[str, str]:
    """Group name -> a short name of what the config holds: ``model: ConvNet``, ``data: digits``,
    ``regularization: l2+dropout``. Hydra's own choice names replace these inside a Hydra job."""
    choices: dict[str, str] = {}
    for group in TARGET_GROUPS:
        node = cfg.get(group)
        if isinstance(node, DictConfig):
            if group == "data" and node.get("name"):
                choices[group] = str(node.name)
            elif node.get("_target_"):
                choices[group] = str(node._target_).rsplit(".", 1)[-1]
    reg = cfg.get("regularization")
    if isinstance(reg, DictConfig):
        active = [k for k, v in OmegaConf.to_container(reg, resolve=True).items() if v not in (None, False, 0, 0.0)]
        choices["regularization"] = "+".join(active) or "none"
    return choices


def _flatten(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, DictConfig):
        value = OmegaConf.to_container(value, resolve=True)
    elif isinstance(value, ListConfig):
        value = OmegaConf.to_container(value, resolve=True)
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for k, v in value.items():
            flat.update(_flatten(f"{key}.{k}", v))
        return flat
    return {key: _hparam_value(value)}


def _hparam_value(value: Any) -> Any:
    """A value TensorBoard's HParams plugin can hold: a number, a bool or a string."""
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def hparams_summaries(
    params: dict[str, Any], metric_tags: list[str], status: str = "completed", varied: Iterable[str] = ()
) -> list[Any]:
    """The three HParams summaries (experiment, session start, session end) for one run.

    Built with ``torch.utils.tensorboard.summary.hparams``, but meant for the run's own event
    file (``SummaryWriter.add_hparams`` would put them in a new subdirectory, a second run).
    The hparams named in ``varied`` are marked as differing between trials, which is how
    TensorBoard picks the columns it shows first; the metrics get short display names
    (``best val acc`` for ``hparams/best_val_acc``); the session's status follows the run's:
    success when completed, failure when diverged, unknown otherwise (interrupted).
    """
    from tensorboard.plugins.hparams import api_pb2
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData
    from torch.utils.tensorboard.summary import hparams

    experiment, start, end = hparams(params, {tag: 0.0 for tag in metric_tags})
    varied = set(varied)

    def edit(summary: Any, change: Any) -> None:
        plugin_data = summary.value[0].metadata.plugin_data
        content = HParamsPluginData.FromString(plugin_data.content)
        change(content)
        plugin_data.content = content.SerializeToString()

    def describe(content: Any) -> None:
        for info in content.experiment.hparam_infos:
            info.differs = info.name in varied
        for info in content.experiment.metric_infos:
            info.display_name = info.name.tag.rsplit("/", 1)[-1].replace("_", " ")

    def set_status(content: Any) -> None:
        content.session_end_info.status = {
            "completed": api_pb2.STATUS_SUCCESS, "diverged": api_pb2.STATUS_FAILURE,
        }.get(status, api_pb2.STATUS_UNKNOWN)

    edit(experiment, describe)
    edit(end, set_status)
    return [experiment, start, end]


# ====================================================================== sweeps
def plot_sweep(
    records: list[dict],
    log_params: dict[str, bool],
    sweep_dir: Path,
    edge_moves: Optional[list[dict]] = None,
) -> list[Path]:
    """One picture per searched parameter: the objective against the parameter's sampled value.

    ``records``: one dict per trial with ``round`` (int), ``values`` (parameter -> sampled value),
    ``objective`` (float, or None for a trial that gave none) and ``status``. ``log_params``
    names the searched parameters, True for those sampled on a log scale (drawn on a log x
    axis). ``edge_moves``: the search range changes between rounds, each with ``round``,
    ``param`` and the ``old`` and ``new`` ``[lo, hi]``; the new range is shaded in the round's
    colour and the old edges drawn dashed. Points are coloured by round; trials without an
    objective are crosses along the bottom; the best trial is starred.

    Saves ``sweep_<param>.png`` in ``sweep_dir`` and writes the same pictures as images
    (tag ``sweep/<param>``) to ``<sweep_dir>/sweep_summary``, a run of its own in TensorBoard.
    Returns the PNG paths.
    """
    import matplotlib
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    sweep_dir = Path(sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    moves = list(edge_moves or [])
    rounds = sorted({int(r.get("round", 0)) for r in records} | {int(m.get("round", 0)) for m in moves})
    palette = matplotlib.colormaps["viridis" if len(rounds) > 10 else "tab10"]

    def colour(round_: int) -> Any:
        i = rounds.index(round_) if round_ in rounds else 0
        return palette(i / max(1, len(rounds) - 1)) if len(rounds) > 10 else palette(i % 10)

    scored = [r for r in records if _finite(r.get("objective"))]
    best = max(scored, key=lambda r: r["objective"]) if scored else None
    paths: list[Path] = []
    use_c_checksums()
    writer = SummaryWriter(log_dir=str(sweep_dir / "sweep_summary"))
    try:
        for param, is_log in log_params.items():
            fig = Figure(figsize=(10, 4.8), dpi=100)
            canvas = FigureCanvasAgg(fig)
            ax = fig.add_subplot()
            for move in (m for m in moves if m.get("param") == param):
                c = colour(int(move.get("round", 0)))
                new_lo, new_hi = move["new"]
                ax.axvspan(new_lo, new_hi, color=c, alpha=0.10, lw=0)
                for old_edge, new_edge in zip(move["old"], move["new"]):
                    if old_edge != new_edge:
                        ax.axvline(old_edge, color=c, ls="--", lw=1)
                        ax.annotate("", xy=(new_edge, 0.97), xytext=(old_edge, 0.97),
                                    xycoords=("data", "axes fraction"),
                                    arrowprops={"arrowstyle": "->", "color": c, "lw": 1.2})
            any_bad = False
            for round_ in rounds:
                trials = [r for r in records if int(r.get("round", 0)) == round_ and param in r.get("values", {})]
                good = [r for r in trials if _finite(r.get("objective"))]
                bad = [r for r in trials if not _finite(r.get("objective"))]
                moved = [m for m in moves if m.get("param") == param and int(m.get("round", 0)) == round_]
                label = f"round {round_} ({len(trials)} trials)"
                if moved:
                    label += "; range " + ", ".join(f"{_fmt(m['old'])} -> {_fmt(m['new'])}" for m in moved)
                if good:
                    ax.scatter([_num(r["values"][param]) for r in good], [r["objective"] for r in good],
                               color=colour(round_), s=28, alpha=0.85, label=label, zorder=3)
                if bad:
                    ax.scatter([_num(r["values"][param]) for r in bad], [0.02] * len(bad),
                               transform=ax.get_xaxis_transform(), marker="x", color=colour(round_), s=30,
                               label=None if good else label, zorder=3)
                    any_bad = True
                if not good and not bad and moved:
                    ax.plot([], [], color=colour(round_), label=label)
            if best is not None and param in best.get("values", {}):
                ax.scatter([_num(best["values"][param])], [best["objective"]], marker="*", s=220,
                           facecolor="none", edgecolor="crimson", lw=1.5, zorder=4, label="best")
            if is_log and _all_positive(records, moves, param):
                ax.set_xscale("log")
            ax.set_xlabel(param + (" (log scale)" if ax.get_xscale() == "log" else ""))
            ax.set_ylabel("objective")
            ax.set_title(f"Sweep: objective vs {param}")
            ax.grid(True, alpha=0.3)
            if any_bad:
                ax.scatter([], [], marker="x", color="grey", label="no objective (failed or diverged)")
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
            fig.tight_layout()
            path = sweep_dir / f"sweep_{_safe(param)}.png"
            fig.savefig(path)
            canvas.draw()
            rgb = np.asarray(canvas.buffer_rgba())[..., :3].copy()
            writer.add_image(f"sweep/{param}", rgb, 0, dataformats="HWC")
            paths.append(path)
    finally:
        writer.close()
    return paths


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _num(value: Any) -> Any:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def _all_positive(records: list[dict], moves: list[dict], param: str) -> bool:
    values = [r["values"][param] for r in records if param in r.get("values", {})]
    values += [v for m in moves if m.get("param") == param for v in (*m["old"], *m["new"])]
    return bool(values) and all(_finite(v) and v > 0 for v in values)


def _fmt(bounds: Any) -> str:
    return "[" + ", ".join(f"{b:.3g}" if _finite(b) else str(b) for b in bounds) + "]"


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in name)
