"""The step engine of a lone run: one model's forward, backward and update, eager or replayed as a CUDA graph.

The epoch loop (:mod:`expt.trainer.loop`) hands an engine each step's batch and learning rate and
gets the step's loss back as a device tensor, read only at logging steps. :class:`SingleEngine`
trains one model with its torch optimizer; :class:`expt.trainer.vmap.VmapEngine` trains a
population in one vmapped step. Both take the learning rate per step, so the loop computes it
once (:class:`expt.schedule.LearningRate`).

Where the run's step can be captured (:mod:`expt.capture`), each batch shape first runs
:data:`WARMUP_STEPS` real steps eagerly on a side stream (as CUDA graphs need: lazily created
handles and workspaces), is then captured once, and every later step of that shape copies its batch
into the graph's input buffers and replays it. The optimizer is built capturable, its learning rate
a device tensor filled before each replay, so eager and replayed steps compute the same numbers.
A capture that fails falls back to eager steps with a warning that says why.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any, Callable, Optional

import torch

from expt import averaging
from expt.build import Experiment
from expt.config import amp_mode
from expt.loss import classification_loss
from expt.schedule import set_rate

log = logging.getLogger(__name__)

WARMUP_STEPS = 3  # eager steps of a batch shape before its capture


class _Graph:
    """One captured step: its input buffers, its loss output and the graph to replay."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x.clone(), y.clone()
        self.graph = torch.cuda.CUDAGraph()
        self.loss: Optional[torch.Tensor] = None


class CapturedStep:
    """A step function ``step(x, y) -> loss`` replayed as a CUDA graph, one per batch shape.

    Each shape first runs :data:`WARMUP_STEPS` eager steps on a side stream, is then captured once
    (``prepare`` runs just before, e.g. to free gradients so that the graph owns them), and every later
    step of that shape copies its batch into the graph's input buffers and replays it. The step must
    read every value that changes between steps from device tensors it updates in place (the learning
    rate, the step count). A capture that fails leaves ``enabled`` False and the step eager, with a
    warning that says why. ``seconds`` adds up the warm-up and capture time, kept out of epoch times.
    """

    def __init__(self, device: torch.device, step: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 prepare: Callable[[], None] = lambda: None):
        self.device, self.step, self.prepare = device, step, prepare
        self.graphs: dict[tuple, _Graph] = {}
        self.eager_steps: dict[tuple, int] = {}
        self.enabled = True
        self.seconds = 0.0

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        key = (tuple(x.shape), tuple(y.shape))
        graph = self.graphs.get(key)
        if graph is not None:
            graph.x.copy_(x)
            graph.y.copy_(y)
            graph.graph.replay()
            return graph.loss.clone()  # the next replay overwrites the graph's output
        start = synced_clock(self.device)
        try:
            if self.eager_steps.get(key, 0) < WARMUP_STEPS:
                self.eager_steps[key] = self.eager_steps.get(key, 0) + 1
                side = torch.cuda.Stream(self.device)
                side.wait_stream(torch.cuda.current_stream(self.device))
                with torch.cuda.stream(side):
                    loss = self.step(x, y)
                torch.cuda.current_stream(self.device).wait_stream(side)
                return loss
            graph = _Graph(x, y)
            self.prepare()
            try:
                with torch.cuda.graph(graph.graph):
                    graph.loss = self.step(graph.x, graph.y)
            except Exception as exc:  # noqa: BLE001 - any failure to capture leaves the eager step, which is exact
                self.enabled = False
                log.warning("Capturing the training step as a CUDA graph failed (%s: %s); training uncaptured.",
                            type(exc).__name__, str(exc).strip().splitlines()[0][:300] if str(exc).strip() else "")
                return self.step(x, y)
            self.graphs[key] = graph
            graph.graph.replay()  # capturing ran nothing: this step is the first replay
            return graph.loss.clone()
        finally:
            self.seconds += synced_clock(self.device) - start

    def forget(self) -> None:
        """Drop the captured graphs (the tensors they read were replaced): each shape warms up and captures again."""
        self.graphs.clear()
        self.eager_steps.clear()


def synced_clock(device: torch.device) -> float:
    """``time.perf_counter()`` once the device has finished its queued work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


class SingleEngine:
    """One model, its torch optimizer and the trainer keys that shape its step (amp, channels-last, compile)."""

    stacked = False  # batches come as (batch, ...) for one model

    def __init__(self, exp: Experiment, ema=None):
        self.exp, self.ema = exp, ema
        t = exp.cfg.trainer
        self.smoothing = float(t.label_smoothing)
        self.penalized = exp.regularizer.active
        if t.channels_last and len(exp.data.input_shape) == 3:
            exp.model.to(memory_format=torch.channels_last)
            exp.data = exp.data.map_x(lambda x: x.contiguous(memory_format=torch.channels_last))
        amp = amp_mode(t.amp)
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
        self.scaler = torch.amp.GradScaler(exp.device.type) if amp == "fp16" else None
        self.step_model = torch.compile(exp.model) if t.compile else exp.model
        self.optimizer = exp.optimizer
        self.capture = exp.capture
        # one captured step per batch shape (the last batch may be smaller); its gradients allocated by the graph
        self.captured = (CapturedStep(exp.device, self._eager, lambda: self.optimizer.zero_grad(set_to_none=True))
                         if self.capture else None)
        self.eager_steps: dict[tuple, int] = {}
        self.compiling = bool(t.compile)  # torch.compile's warm-up steps are timed apart
        self.compile_seconds = 0.0
        self.reports_warmup = self.compiling or self.capture  # metrics.json's compile_warmup_seconds
        self._lr: Optional[float] = None
        if exp.device.type == "cuda" and not self.capture:
            log.info("Training step not captured as a CUDA graph: %s.", exp.capture_reason)

    @property
    def warmup_seconds(self) -> float:
        """Seconds spent compiling or capturing, excluded from epoch times."""
        return self.compile_seconds + (self.captured.seconds if self.captured is not None else 0.0)

    def autocast(self):
        """The step's autocast context (trainer.amp); without the weight cache, which a captured step cannot keep."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.exp.device.type, dtype=self.amp_dtype, cache_enabled=not self.capture)

    def train(self) -> None:
        self.exp.model.train()

    # ------------------------------------------------------------------ a step
    def step(self, x: torch.Tensor, y: torch.Tensor, lrs: list[float]) -> torch.Tensor:
        """One training step on the batch (x, y) at learning rate ``lrs[0]``; the loss, shape (1,), on the device."""
        lr = lrs[0]
        if lr != self._lr:
            set_rate(self.optimizer, lr)
            self._lr = lr
        key = (tuple(x.shape), tuple(y.shape))
        if self.captured is not None and self.captured.enabled:
            loss = self.captured(x, y)
        elif self.compiling and self.eager_steps.get(key, 0) < 2:  # torch.compile compiles a new shape
            loss = self._timed(key, x, y)
        else:
            loss = self._eager(x, y)
        if self.ema is not None:
            averaging.update(self.ema, self.exp.model)
        return loss.reshape(1)

    def _eager(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        e = self.exp
        with self.autocast():
            loss = classification_loss(self.step_model(x), y, self.smoothing)
            if self.penalized:
                loss = loss + e.regularizer.penalty()
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            self.optimizer.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        e.regularizer.constrain()
        return loss.detach()

    def _timed(self, key: tuple, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        start = synced_clock(self.exp.device)
        loss = self._eager(x, y)
        self.eager_steps[key] = self.eager_steps.get(key, 0) + 1
        self.compile_seconds += synced_clock(self.exp.device) - start
        return loss

    # ------------------------------------------------------------------ the run's record asks
    def expose(self, positions: list[int]) -> None:
        """The model is the one the step trains: nothing to bring up to date (see VmapEngine.expose)."""

    def sync(self) -> None:
        """End of an epoch: the model and optimizer already hold the trained state."""

    def measure(self, records) -> list[dict[str, float]]:
        """The epoch's measurements of the one run (:meth:`RunRecord.measure`)."""
        return [r.measure() for r in records]

    def losses(self, records) -> list[tuple[float, Optional[float]]]:
        """The one run's (data loss, penalty) on its training subsample (:meth:`RunRecord.losses`)."""
        return [r.losses() for r in records]

    def test(self, records) -> list[Optional[tuple[float, float]]]:
        """Nothing measured ahead: the one run tests its own best model as it finishes (:meth:`RunRecord.finish`)."""
        return [None for _ in records]

    def drop(self, positions: list[int]) -> None:
        """The one run stopped: nothing is stacked to take it out of."""

    def optimizer_state(self, record) -> tuple[dict[str, Any], Optional[dict[str, Any]]]:
        """(optimizer state, gradient scaler state) for ``record``'s last.pt."""
        return self.optimizer.state_dict(), (self.scaler.state_dict() if self.scaler is not None else None)

    def load_optimizer_state(self, state: dict[str, Any], scaler: Optional[dict[str, Any]]) -> None:
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.load_state_dict(state)
        for group in self.optimizer.param_groups:  # a captured step reads its own rate tensor
            group["lr"] = lr if isinstance(lr, torch.Tensor) else group["lr"]
        self._lr = None
        if self.scaler is not None and scaler is not None:
            self.scaler.load_state_dict(scaler)
