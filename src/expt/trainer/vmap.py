"""The step engine of a population: N models of one shape trained by one vmapped forward, backward and update.

Each member is a run record (:class:`expt.trainer.record.RunRecord`) built exactly as a lone run;
only the step is fused:

- parameters and buffers are stacked (``torch.func.stack_module_state``) and the members' losses
  come from one ``vmap(functional_call)`` on CUDA, from each member's ``functional_call`` on views of
  the stacked tensors on the CPU (:func:`over_members`); the gradient of their sum is each member's own;
- Adam, AdamW and SGD (momentum, Nesterov) are written over the stacked tensors with one learning
  rate, beta, eps, momentum and weight decay per member; the loop hands each member's rate every
  step, from the member's own :class:`expt.schedule.LearningRate`;
- batch norm keeps running statistics per member (the stacked buffers, updated in place under vmap);
- dropout masks are drawn outside vmap, for each member from its own copy of torch's global random
  stream, with the same call a lone run makes (``F.dropout``), so a member draws the masks the lone
  run would draw;
- ``trainer.ema`` keeps a stacked average updated as :mod:`expt.averaging` updates a lone run's;
  ``trainer.amp=bf16`` runs the vmapped forward under autocast;
- on CUDA the fused step (forward, backward, update, max-norm) is captured as a CUDA graph and replayed
  (:class:`expt.trainer.engine.CapturedStep`) wherever the members' own steps would be captured and no
  dropout mask is drawn: the rates and the step count are device tensors updated in place.

At the end of each epoch (:meth:`VmapEngine.sync`) every member's slice goes back into its own model,
optimizer state and averaged model, where its record measures, checkpoints and writes it as a lone
run's. A member that diverges or is pruned leaves the stacked tensors (:meth:`VmapEngine.drop`).
"""

from __future__ import annotations

import contextlib
import copy
import logging
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from expt.averaging import WarmedUpEMA, blend
from expt.config import amp_mode
from expt.loss import classification_loss
from expt.predict import eval_batch, stacked_loss_and_accuracy
from expt.regularization import clip_unit_norms_, penalized_weights, penalty
from expt.trainer.engine import CapturedStep
from expt.trainer.record import measured_row

log = logging.getLogger(__name__)

OPTIMIZERS = {"torch.optim.Adam": "adam", "torch.optim.AdamW": "adamw", "torch.optim.SGD": "sgd"}


class _MaskedDropout(nn.Module):
    """Stands in for ``nn.Dropout`` in the stacked forward: multiplies by the next precomputed mask."""

    def __init__(self, feed: list):
        super().__init__()
        self.feed = feed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        return x * self.feed.pop(0)


def _dropout_calls(model: nn.Module, x: torch.Tensor) -> list[tuple[int, ...]]:
    """The input shape of each dropout call of one forward pass on ``x``, in call order."""
    shapes: list[tuple[int, ...]] = []
    hooks = [m.register_forward_pre_hook(lambda _m, args: shapes.append(tuple(args[0].shape)))
             for m in model.modules() if isinstance(m, nn.Dropout)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return shapes


def _members(arg: Any, n: int) -> list[Any]:
    """The ``n`` members' slices of a stacked argument: a tensor, or a dict or list of them (views: writes go
    through). Unbound once, so that autograd stacks the members' gradients in one step; a slice indexed member by
    member would add a zero-filled gradient of every stacked tensor for each member, which grows as members
    squared."""
    if isinstance(arg, dict):
        split = {k: v.unbind(0) for k, v in arg.items()}
        return [{k: v[i] for k, v in split.items()} for i in range(n)]
    if isinstance(arg, (list, tuple)):
        split = [v.unbind(0) for v in arg]
        return [[v[i] for v in split] for i in range(n)]
    return list(arg.unbind(0))


def over_members(fn, in_dims: tuple[Optional[int], ...], device: torch.device):
    """``fn`` mapped over the members: the stacked arguments (``in_dims`` 0) sliced, the others (None) shared.

    On CUDA it is ``vmap``: one kernel launch an operation for all members, which is the point of a
    population there. On the CPU it is a loop of the members' own calls on views of the stacked tensors,
    stacked back: the CPU's kernels run a vmapped convolution (a grouped one over members) about 2.7 times
    slower than the same members' convolutions one after another, and there are no launches to save. Both
    give each member's own result; autograd and in-place buffer updates reach the stacked tensors either way.
    """
    if device.type == "cuda":
        return vmap(fn, in_dims=in_dims, randomness="error")

    def each(*args):
        first = next(a for a, d in zip(args, in_dims) if d is not None)  # the stacked parameters: never empty
        n = len(next(iter(first.values())) if isinstance(first, dict) else first)
        split = [None if d is None else _members(a, n) for a, d in zip(args, in_dims)]
        return torch.stack([fn(*(a if s is None else s[i] for a, s in zip(args, split))) for i in range(n)])
    return each


def _stackable(records: Sequence[Any]) -> bool:
    """Whether the members' training subsamples have one size, so they stack into one (members, n, ...) tensor."""
    return len({len(r.train_eval[1]) for r in records}) == 1


def _per_member(values: Sequence[float], device: torch.device) -> torch.Tensor:
    """Float64, as the Python floats a lone optimizer computes with; cast to the parameters' dtype at use."""
    return torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)


def _writable(grads: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Gradients that the optimizer step may write into, one by one: autograd may hand back an expanded tensor, or
    one tensor for two parameters, and those are copied."""
    seen: set[int] = set()
    owned = []
    for g in grads:
        if not g.is_contiguous() or g.data_ptr() in seen:
            g = g.clone(memory_format=torch.contiguous_format)
        seen.add(g.data_ptr())
        owned.append(g)
    return owned


def _bcast(v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (t.dim() - 1)))


@contextlib.contextmanager
def member_rng(rng: dict, device: torch.device):
    """Run with torch's global random state set to a member's (``rng``), and keep what it draws."""
    torch.set_rng_state(rng["cpu"])
    if device.type == "cuda":
        torch.cuda.set_rng_state(rng["cuda"], device)
    try:
        yield
    finally:
        rng["cpu"] = torch.get_rng_state()
        if device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(device)


def capture_rng(device: torch.device) -> dict:
    """torch's global random state now (a member's copy starts as the state its lone run would start from)."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


class VmapEngine:
    """The members' stacked state and their fused step; ``records`` carry each member's built experiment."""

    stacked = True  # batches come as (members, batch, ...)

    def __init__(self, records: Sequence[Any], rngs: Sequence[dict]):
        self.records = list(records)  # the active members, in stacked order
        self.rngs = list(rngs)
        first = self.records[0].exp
        self.device = first.device
        cfgs = [r.exp.cfg for r in self.records]
        models = [r.exp.model for r in self.records]
        for model in models:
            model.train()
        self.params, self.buffers = stack_module_state(models)
        self.feed: list = []
        base = copy.deepcopy(models[0])
        for module in list(base.modules()):
            for child_name, child in list(module.named_children()):
                if isinstance(child, nn.Dropout):
                    setattr(module, child_name, _MaskedDropout(self.feed))
        self.base = base.to("meta")
        self.base.train()
        self.base_eval = copy.deepcopy(self.base).eval()  # the members measured: no dropout, running statistics
        weight_ids = {id(w) for w in penalized_weights(models[0])}
        self.weight_names = [n for n, p in models[0].named_parameters() if id(p) in weight_ids]
        self.names = [n for n, _ in models[0].named_parameters()]
        self.kind = OPTIMIZERS[str(cfgs[0].optimizer._target_)]
        opt = [c.optimizer for c in cfgs]
        betas = [tuple(o.get("betas", (0.9, 0.999))) for o in opt]
        like = self.device
        self.hyper = {
            "lr": _per_member([r.exp.schedule.rate(0) for r in self.records], like),
            "wd": _per_member([o.get("weight_decay", 0) or 0 for o in opt], like),
            "beta1": _per_member([b[0] for b in betas], like), "beta2": _per_member([b[1] for b in betas], like),
            "eps": _per_member([o.get("eps", 1e-8) for o in opt], like),
            "momentum": _per_member([o.get("momentum", 0) or 0 for o in opt], like),
            "l1": _per_member([c.regularization.l1 for c in cfgs], like),
            "l2": _per_member([c.regularization.l2 for c in cfgs], like),
            "p": _per_member([c.regularization.dropout for c in cfgs], torch.device("cpu")),
        }
        self.lrs: list[float] = [r.exp.schedule.rate(0) for r in self.records]
        self.nesterov = bool(opt[0].get("nesterov", False))
        self.penalized = any(r.exp.regularizer.active for r in self.records)
        self.max_norm = cfgs[0].regularization.max_norm
        self.state: dict[str, dict[str, torch.Tensor]] = {}
        if self.kind in ("adam", "adamw"):
            self.state = {"exp_avg": {n: torch.zeros_like(p) for n, p in self.params.items()},
                          "exp_avg_sq": {n: torch.zeros_like(p) for n, p in self.params.items()}}
        elif self.kind == "sgd":
            self.state = {"momentum_buffer": {n: torch.zeros_like(p) for n, p in self.params.items()}}
        self.step_tensor = torch.zeros((), dtype=torch.float64, device=self.device)  # steps taken, read by the update
        self.dropout_shapes: dict[int, list[tuple[int, ...]]] = {}
        t = first.cfg.trainer
        self.smoothing = float(t.label_smoothing)
        self.amp_dtype = torch.bfloat16 if amp_mode(t.amp) == "bf16" else None
        self.ema: Optional[dict[str, torch.Tensor]] = None
        self.ema_schedule = WarmedUpEMA(float(t.ema))
        if t.ema > 0:  # the averaged parameters and buffers, as a lone run's AveragedModel(use_buffers=True)
            self.ema = {n: v.detach().clone() for n, v in {**self.params, **self.buffers}.items()}
        self.captured: Optional[CapturedStep] = None
        reason = self._capture_blocker()
        if reason is None:
            self.captured = CapturedStep(self.device, self._fused)
        elif self.device.type == "cuda":
            log.info("The population's step is not captured as a CUDA graph: %s.", reason)
        self.reports_warmup = self.captured is not None

    def _capture_blocker(self) -> Optional[str]:
        """Why the fused step cannot be captured as a CUDA graph, or None when it can."""
        reasons = [r.exp.capture_reason for r in self.records if not r.exp.capture]
        if reasons:
            return reasons[0]
        if any(isinstance(m, _MaskedDropout) for m in self.base.modules()):
            return "each member draws its dropout masks from its own random stream, outside the step"
        return None

    @property
    def warmup_seconds(self) -> float:
        """Seconds spent capturing, excluded from epoch times."""
        return self.captured.seconds if self.captured is not None else 0.0

    def train(self) -> None:
        """The stacked forward always runs in training mode (the members' own models are evaluated apart)."""

    # ------------------------------------------------------------------ one step
    def _loss_fn(self, params, buffers, masks, x, y, l1, l2):
        self.feed[:] = list(masks)
        out = functional_call(self.base, (params, buffers), (x,))
        loss = classification_loss(out, y, self.smoothing)
        if self.penalized:
            dtype = loss.dtype  # as the lone Regularizer: strength * sum, then added to the data loss
            loss = loss + penalty([params[n] for n in self.weight_names], l1.to(dtype), l2.to(dtype))
        return loss

    def _masks(self, batch: int, x: torch.Tensor) -> list[torch.Tensor]:
        if batch not in self.dropout_shapes:
            self.dropout_shapes[batch] = _dropout_calls(self.records[0].exp.model, x[0, :batch])
        shapes = self.dropout_shapes[batch]
        if not shapes:
            return []
        per_member = []
        for pos, rng in enumerate(self.rngs):
            p = float(self.hyper["p"][pos])
            with member_rng(rng, self.device):
                # the call a lone run's nn.Dropout makes, on ones: the mask times 1 / (1 - p)
                per_member.append([F.dropout(torch.ones(s, dtype=x.dtype, device=x.device), p, True) for s in shapes])
        return [torch.stack([masks[k] for masks in per_member]) for k in range(len(shapes))]

    def step(self, x: torch.Tensor, y: torch.Tensor, lrs: list[float]) -> torch.Tensor:
        """One step of every member on its batch (x[m], y[m]) at rate lrs[m]; the losses, shape (members,)."""
        if lrs != self.lrs:
            self.hyper["lr"].copy_(_per_member(lrs, self.device))  # in place: a captured step reads this tensor
            self.lrs = list(lrs)
        if self.captured is not None and self.captured.enabled:
            losses = self.captured(x, y)
        else:
            losses = self._fused(x, y)
        if self.ema is not None:
            self._average()
        return losses

    def _fused(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Forward, backward and update of every member: the step a CUDA graph captures."""
        masks = self._masks(x.shape[1], x)
        h = self.hyper
        autocast = (torch.autocast(self.device.type, dtype=self.amp_dtype, cache_enabled=self.captured is None)
                    if self.amp_dtype is not None else contextlib.nullcontext())
        with autocast:
            losses = over_members(self._loss_fn, (0,) * 7, self.device)(
                self.params, self.buffers, masks, x, y, h["l1"], h["l2"])
        grads = torch.autograd.grad(losses.sum(), [self.params[k] for k in self.names])
        self._update(dict(zip(self.names, _writable(grads))))
        return losses.detach()

    def _update(self, grads: dict[str, torch.Tensor]) -> None:
        """One optimizer step of every member: torch.optim's single-tensor formulas, hyperparameters per member."""
        h = self.hyper
        step = self.step_tensor.add_(1)
        weight = set(self.weight_names)
        cache: dict[torch.dtype, dict[str, torch.Tensor]] = {}

        def scalars(dtype: torch.dtype) -> dict[str, torch.Tensor]:
            if dtype not in cache:
                c = {"lr": h["lr"], "wd": h["wd"], "momentum": h["momentum"], "eps": h["eps"], "beta2": h["beta2"],
                     "one_minus_b1": 1 - h["beta1"], "one_minus_b2": 1 - h["beta2"],
                     "decay": 1 - h["lr"] * h["wd"],
                     "step_size": h["lr"] / (1 - h["beta1"] ** step),
                     "bc2_sqrt": (1 - h["beta2"] ** step).sqrt()}
                cache[dtype] = {k: v.to(dtype) for k, v in c.items()}
            return cache[dtype]

        # In place, in this step's gradients (autograd has just made them) and one scratch tensor a parameter: each
        # temporary of a formula written out costs a pass over the members' stacked tensors. g + wd * p is
        # g.addcmul_(p, wd), which rounds as the lone optimizer's g.add(p, alpha=wd) does.
        with torch.no_grad():
            for name, p in self.params.items():
                c = {k: _bcast(v, p) for k, v in scalars(p.dtype).items()}
                g = grads[name]
                decayed = name in weight
                if self.kind == "sgd":
                    if decayed:
                        g.addcmul_(p, c["wd"])
                    buf = self.state["momentum_buffer"][name]
                    buf.mul_(c["momentum"]).add_(g)  # the first step's buffer is g itself: it starts at zero
                    if self.nesterov:
                        g.addcmul_(buf, c["momentum"]).mul_(c["lr"])
                    else:
                        torch.mul(buf, c["lr"], out=g)
                    p.sub_(g)
                    continue
                if self.kind == "adamw":
                    if decayed:
                        p.mul_(c["decay"])
                elif decayed:
                    g.addcmul_(p, c["wd"])
                m, v = self.state["exp_avg"][name], self.state["exp_avg_sq"][name]
                m.lerp_(g, c["one_minus_b1"])
                scratch = torch.mul(g, c["one_minus_b2"])
                v.mul_(c["beta2"]).add_(scratch.mul_(g))
                denom = torch.sqrt(v, out=scratch).div_(c["bc2_sqrt"]).add_(c["eps"])
                p.sub_(torch.mul(m, c["step_size"], out=g).div_(denom))
            if self.max_norm is not None:
                for name in self.weight_names:
                    clip_unit_norms_(self.params[name], self.max_norm, batch_dims=1)

    def _average(self) -> None:
        """The averaged weights after a step: expt.averaging's formula over the stacked tensors."""
        current = {**self.params, **self.buffers}
        blend([self.ema[n] for n in current], list(current.values()), self.ema_schedule)

    # ------------------------------------------------------------------ measuring
    def measure(self, records: Sequence[Any]) -> list[dict[str, float]]:
        """Every member's epoch measurements (the row :meth:`RunRecord.measure` gives a lone run), all members
        in one pass over the stacked weights a split, in eval mode, and one read-back a split."""
        if not _stackable(records):
            return [r.measure() for r in records]
        data = records[0].exp.data
        with torch.no_grad():
            params = {n: p.detach() for n, p in self.params.items()}
            train = self._on_training_subsample(records)
            val = stacked_loss_and_accuracy(self._logits(params, self.buffers, data.x_val), data.y_val)
            ema = [None] * len(records)
            if self.ema is not None:
                ema_params = {n: self.ema[n] for n in self.params}
                ema_buffers = {n: self.ema[n] for n in self.buffers}
                ema = stacked_loss_and_accuracy(self._logits(ema_params, ema_buffers, data.x_val), data.y_val)
            penalties = self._penalties(records)
        return [measured_row(t, v, p, e) for t, v, p, e in zip(train, val, penalties, ema)]

    def losses(self, records: Sequence[Any]) -> list[tuple[float, Optional[float]]]:
        """Every member's :meth:`RunRecord.losses` (data loss, penalty), in one pass over the stacked weights."""
        if not _stackable(records):
            return [r.losses() for r in records]
        with torch.no_grad():
            train = self._on_training_subsample(records)
            penalties = self._penalties(records)
        return [(loss, penalty) for (loss, _), penalty in zip(train, penalties)]

    def test(self, records: Sequence[Any]) -> list[Optional[tuple[float, float]]]:
        """Every member's best model on the test split, (loss, accuracy) as :meth:`RunRecord.finish` measures it
        alone, all members in one pass over their stacked best weights and one read-back; None for each where a
        member has no best model (each then finishes alone). ``records``: members of this engine. A buffer a best
        model's state leaves out (not persistent) is the member's own, as loading that state leaves it in a model."""
        if not records or any(r.best["state"] is None for r in records):
            return [None for _ in records]
        for r in records:
            with r.scope():
                r.announce_test()
        positions = [self.records.index(r) for r in records]

        def stacked(name: str, current: torch.Tensor) -> torch.Tensor:
            return torch.stack([r.best["state"][name] if name in r.best["state"] else current[pos]
                                for r, pos in zip(records, positions)]).to(self.device)

        data = records[0].exp.data
        with torch.no_grad():
            params = {n: stacked(n, p) for n, p in self.params.items()}
            buffers = {n: stacked(n, b) for n, b in self.buffers.items()}
            return stacked_loss_and_accuracy(self._logits(params, buffers, data.x_test), data.y_test)

    def _on_training_subsample(self, records: Sequence[Any]) -> list[tuple[float, float]]:
        """(data loss, accuracy) of each member on its own fixed training subsample, with one read-back."""
        params = {n: p.detach() for n, p in self.params.items()}
        return stacked_loss_and_accuracy(
            self._logits(params, self.buffers, torch.stack([r.train_eval[0] for r in records]), each=True),
            torch.stack([r.train_eval[1] for r in records]))

    @staticmethod
    def _penalties(records: Sequence[Any]) -> list[Optional[float]]:
        """Each member's regularization penalty (None where it has none), with one read-back when all have one."""
        if all(r.exp.regularizer.active for r in records):
            return torch.stack([r.exp.regularizer.penalty() for r in records]).tolist()
        return [r.penalty() for r in records]

    def _logits(self, params: dict, buffers: dict, x: torch.Tensor, each: bool = False) -> torch.Tensor:
        """(members, n, classes): every member's outputs in eval mode on ``x``, shared (n, ...) or, with ``each``,
        each member's own (members, n, ...); in chunks of :func:`~expt.predict.eval_batch` samples a member. On CUDA,
        where one vmapped call runs every member's chunk at once, fewer beyond 8 members (the CPU runs the members'
        chunks one after another)."""
        n, batch = x.shape[1] if each else x.shape[0], eval_batch(self.device)
        chunk = max(1, min(batch, 8 * batch // len(self.records))) if self.device.type == "cuda" else batch
        call = over_members(lambda p, b, xs: functional_call(self.base_eval, (p, b), (xs,)),
                            (0, 0, 0 if each else None), self.device)
        parts = [call(params, buffers, x[:, i:i + chunk] if each else x[i:i + chunk]) for i in range(0, n, chunk)]
        return torch.cat(parts, dim=1) if parts else x.new_zeros(len(self.records), 0, 0)

    # ------------------------------------------------------------------ the members' own state
    def expose(self, positions: list[int]) -> None:
        """The parameters of the members at ``positions`` into their own models (the dashboard reads those)."""
        with torch.no_grad():
            for pos in positions:
                named = dict(self.records[pos].exp.model.named_parameters())
                for n, p in self.params.items():
                    named[n].copy_(p[pos])

    def sync(self) -> None:
        """Each member's slice of the stacked tensors into its own model, optimizer state and averaged model."""
        steps = float(self.step_tensor)  # one read-back an epoch: the members' optimizer state holds it
        with torch.no_grad():
            for pos, r in enumerate(self.records):
                model = r.exp.model
                named_p, named_b = dict(model.named_parameters()), dict(model.named_buffers())
                for n, p in self.params.items():
                    named_p[n].copy_(p[pos])
                for n, b in self.buffers.items():
                    named_b[n].copy_(b[pos])
                opt = r.exp.optimizer  # the format of last.pt's optimizer state, never stepped
                for group in opt.param_groups:
                    group["lr"] = self.lrs[pos]
                for n in self.names:
                    param = named_p[n]
                    if self.kind == "sgd":
                        if float(self.hyper["momentum"][pos]) != 0:
                            opt.state[param] = {"momentum_buffer": self.state["momentum_buffer"][n][pos].clone()}
                    else:
                        opt.state[param] = {"step": torch.tensor(steps),
                                            "exp_avg": self.state["exp_avg"][n][pos].clone(),
                                            "exp_avg_sq": self.state["exp_avg_sq"][n][pos].clone()}
                if self.ema is not None and r.ema is not None:
                    averaged = r.ema.module
                    targets = {**dict(averaged.named_parameters()), **dict(averaged.named_buffers())}
                    for n, v in self.ema.items():
                        targets[n].copy_(v[pos])
                    r.ema.n_averaged.fill_(self.ema_schedule.updates)
                    r.ema.warmup.updates = self.ema_schedule.updates

    def optimizer_state(self, record) -> tuple[dict[str, Any], None]:
        return record.exp.optimizer.state_dict(), None

    def drop(self, positions: Sequence[int]) -> None:
        """Take the members at ``positions`` out of the stacked tensors (they diverged or were pruned)."""
        keep = [pos for pos in range(len(self.records)) if pos not in set(positions)]
        if not keep:
            self.records, self.rngs = [], []
            return
        idx = torch.tensor(keep, device=self.device)
        self.params = {n: p.detach()[idx].requires_grad_(True) for n, p in self.params.items()}
        self.buffers = {n: b[idx] for n, b in self.buffers.items()}
        self.state = {k: {n: s[idx] for n, s in d.items()} for k, d in self.state.items()}
        if self.ema is not None:
            self.ema = {n: v[idx] for n, v in self.ema.items()}
        self.hyper = {k: v[torch.tensor(keep, device=v.device)] for k, v in self.hyper.items()}
        if self.captured is not None:
            self.captured.forget()  # the graphs read the tensors just replaced
        self.lrs = [self.lrs[pos] for pos in keep]
        self.records = [self.records[pos] for pos in keep]
        self.rngs = [self.rngs[pos] for pos in keep]
