"""Train a population of runs at once: stacked parameters, one vmapped forward and backward per step.

Runs whose models have the same shapes and whose configs differ only in values that can vary per
member (:data:`PER_MEMBER_KEYS`: learning rate, weight decay, L1/L2 strengths, momentum, betas,
eps, dropout probability, init scale, seed) train together. Each member is built by
:func:`expt.build.build` exactly as a lone run (its init, split and preprocessing), and keeps a
:class:`expt.trainer.Trainer` of its own for everything around the step loop: the batch order and
augmentation streams, the loss at init, the per-epoch measurements, the schedule, the best model,
the checkpoints, TensorBoard and ``metrics.json``. Only the steps are fused:

- parameters and buffers are stacked (``torch.func.stack_module_state``) and the members' losses
  come from one ``vmap(functional_call)``; the gradient of their sum is each member's own gradient;
- Adam, AdamW and SGD (momentum, Nesterov) are written over the stacked tensors with one learning
  rate, beta, eps, momentum and weight decay per member (the schedule of each member sets its rate
  every epoch);
- batch norm keeps running statistics per member (the stacked buffers, updated in place under vmap);
- dropout masks are drawn outside vmap, for each member from its own copy of torch's global random
  stream, with the same call a lone run makes (``F.dropout``), so a member draws the masks the lone
  run would draw.

A member whose training loss diverges stops alone: it is finished (``status: diverged``) and taken
out of the stacked tensors; the others go on. :func:`can_join` says why a config cannot join.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from expt.build import Experiment, build
from expt.checks import guard
from expt.dashboard import Dashboard, sweep_context
from expt.data import load as load_data
from expt.errors import ConfigError
from expt.loss import classification_loss
from expt.optim import step_schedule
from expt.regularization import penalized_weights
from expt.status import COMPLETED, DIVERGED, write_metrics
from expt.sweep_env import SweepTrial
from expt.trainer import Trainer

log = logging.getLogger(__name__)

# Keys whose values may differ between the members of one population.
PER_MEMBER_KEYS = (
    "optimizer.lr", "optimizer.weight_decay", "optimizer.momentum", "optimizer.betas", "optimizer.eps",
    "regularization.l1", "regularization.l2", "regularization.dropout",
    "init.classifier_scale", "init.weight_scale", "trainer.seed",
)
# Keys each member's own Trainer applies, so they may differ too: the schedule (each member's own
# scheduler sets its learning rate every epoch), the divergence threshold, what is measured and
# written, and the sanity check.
MEMBER_OWN_KEYS = (
    "schedule", "trainer.divergence_factor", "trainer.train_eval_samples", "trainer.snapshots",
    "trainer.checkpoint_interval", "trainer.progress_after", "dashboard", "sanity", "hydra",
)
OPTIMIZERS = {"torch.optim.Adam": "adam", "torch.optim.AdamW": "adamw", "torch.optim.SGD": "sgd"}


def can_join(cfg: DictConfig) -> Optional[str]:
    """None when ``cfg`` can train in a population; otherwise why it must train alone."""
    t, opt = cfg.trainer, cfg.optimizer
    if cfg.get("mode", "train") != "train":
        return f"mode={cfg.mode}"
    target = str(opt.get("_target_"))
    if target not in OPTIMIZERS:
        return f"optimizer._target_={target} (a population trains {', '.join(sorted(OPTIMIZERS))})"
    for key, ok in (("amsgrad", False), ("maximize", False), ("dampening", 0), ("foreach", None),
                    ("fused", None), ("capturable", False), ("differentiable", False)):
        if key in opt and opt[key] not in (ok, None):
            return f"optimizer.{key}={opt[key]}"
    if t.ema > 0:
        return f"trainer.ema={t.ema}"
    if str(t.amp).lower() != "off":
        return f"trainer.amp={t.amp}"
    if t.compile:
        return "trainer.compile=true"
    if t.channels_last:
        return "trainer.channels_last=true"
    if t.resume:
        return "trainer.resume is set"
    return None


def _without(cfg: DictConfig, keys: Sequence[str]) -> dict:
    plain = OmegaConf.to_container(cfg, resolve=True)
    for key in keys:
        node = plain
        *parents, last = key.split(".")
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
            if node is None:
                break
        if isinstance(node, dict):
            node.pop(last, None)
    return plain


def group_key(cfg: DictConfig) -> Optional[str]:
    """A string equal for configs that can train together; None for a config that trains alone."""
    if can_join(cfg) is not None:
        return None
    plain = _without(cfg, PER_MEMBER_KEYS + MEMBER_OWN_KEYS)
    # dropout > 0 adds layers; the probability itself can vary
    plain["_dropout_layers"] = float(cfg.regularization.dropout) > 0
    return repr(plain)


# ============================================================================= the fused model
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


@dataclass
class _Member:
    index: int
    exp: Experiment
    trainer: Trainer
    dashboard: Dashboard
    run_dir: Path
    rng: dict  # this member's copy of torch's global random state (dropout), CPU and CUDA
    context: Any = None  # a callable giving a context manager around the member's own work (or None)
    active: bool = True
    metrics: Optional[dict] = None
    total: float = 0.0
    read: int = 0


@dataclass
class _Hyper:
    """Per-member optimizer and penalty values, as tensors of shape (members,)."""

    lr: torch.Tensor
    wd: torch.Tensor
    beta1: torch.Tensor
    beta2: torch.Tensor
    eps: torch.Tensor
    momentum: torch.Tensor
    l1: torch.Tensor
    l2: torch.Tensor
    p: torch.Tensor  # dropout probability
    extra: dict = field(default_factory=dict)

    def select(self, keep: list[int]) -> "_Hyper":
        def pick(t: torch.Tensor) -> torch.Tensor:
            return t[torch.tensor(keep, device=t.device)]

        return _Hyper(**{k: pick(getattr(self, k)) for k in
                         ("lr", "wd", "beta1", "beta2", "eps", "momentum", "l1", "l2", "p")})


def _per_member(values: Sequence[float], device: torch.device) -> torch.Tensor:
    """Float64, as the Python floats a lone optimizer computes with; cast to the parameters' dtype at use."""
    return torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)


def _bcast(v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (t.dim() - 1)))


@contextlib.contextmanager
def _member_rng(member: _Member, device: torch.device, own: bool = False):
    """Run with torch's global random state set to the member's, and keep what it draws.

    ``own``: also inside the member's context (the launcher's: its Hydra job config and environment).
    """
    scope = member.context() if own and member.context is not None else contextlib.nullcontext()
    with scope:
        with _rng(member, device):
            yield


@contextlib.contextmanager
def _rng(member: _Member, device: torch.device):
    torch.set_rng_state(member.rng["cpu"])
    if device.type == "cuda":
        torch.cuda.set_rng_state(member.rng["cuda"], device)
    try:
        yield
    finally:
        member.rng["cpu"] = torch.get_rng_state()
        if device.type == "cuda":
            member.rng["cuda"] = torch.cuda.get_rng_state(device)


def _capture_rng(device: torch.device) -> dict:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


class Population:
    """N runs of compatible configs trained together; :meth:`fit` returns each run's metrics."""

    def __init__(self, cfgs: Sequence[DictConfig], run_dirs: Sequence[Path], contexts: Optional[Sequence[Any]] = None,
                 sweeps: Optional[Sequence[SweepTrial]] = None):
        if not cfgs:
            raise ValueError("a population needs at least one config")
        if len(cfgs) != len(run_dirs):
            raise ValueError(f"{len(cfgs)} configs but {len(run_dirs)} run directories")
        keys = [group_key(c) for c in cfgs]
        for i, (cfg, key) in enumerate(zip(cfgs, keys)):
            if key is None:
                raise ConfigError(f"member {i} cannot train in a population: {can_join(cfg)}")
            if key != keys[0]:
                raise ConfigError(
                    f"member {i}'s config differs from member 0's in more than the per-member keys "
                    f"({', '.join(PER_MEMBER_KEYS)})")
        self.cfgs = list(cfgs)
        self.kind = OPTIMIZERS[str(cfgs[0].optimizer._target_)]
        raw = load_data(cfgs[0].data)
        self.members: list[_Member] = []
        saved_rng = torch.get_rng_state()
        try:
            for i, (cfg, run_dir) in enumerate(zip(cfgs, run_dirs)):
                run_dir = Path(run_dir)
                run_dir.mkdir(parents=True, exist_ok=True)
                exp = build(cfg, data=raw)
                if self.members:  # the same data config and preprocessing: share the tensors
                    exp.data = self.members[0].exp.data
                rng = _capture_rng(exp.device)
                guard(exp)
                context = contexts[i] if contexts is not None else None
                with context() if context is not None else contextlib.nullcontext():
                    trainer = Trainer(exp, run_dir, progress=False)
                    dashboard = Dashboard(run_dir, cfg, sweep_context(sweeps[i] if sweeps is not None else None))
                member = _Member(i, exp, trainer, dashboard, run_dir, rng, context)
                self.members.append(member)
                with _member_rng(member, exp.device, own=True):
                    trainer.begin(dashboard)
            first = self.members[0].exp
            self.device, self.data = first.device, first.data
            shapes = {k: (tuple(v.shape), v.dtype) for k, v in first.model.state_dict().items()}
            for m in self.members[1:]:
                other = {k: (tuple(v.shape), v.dtype) for k, v in m.exp.model.state_dict().items()}
                if other != shapes:
                    raise ConfigError(f"member {m.index}'s model has other parameter shapes than member 0's")
                if m.exp.device != self.device:
                    raise ConfigError(f"member {m.index} trains on {m.exp.device}, member 0 on {self.device}: "
                                      "a population trains on one device (set trainer.device)")
        except BaseException:
            self._close()
            raise
        finally:
            torch.set_rng_state(saved_rng)

    # ------------------------------------------------------------------ setup of the stacked state
    def _stack(self) -> None:
        models = [m.exp.model for m in self.members]
        for model in models:
            model.train()
        self.params, self.buffers = stack_module_state(models)
        self.feed: list = []
        base = copy.deepcopy(models[0])
        for name, module in list(base.named_modules()):
            for child_name, child in list(module.named_children()):
                if isinstance(child, nn.Dropout):
                    setattr(module, child_name, _MaskedDropout(self.feed))
        self.base = base.to("meta")
        self.base.train()
        model0 = models[0]
        weight_ids = {id(w) for w in penalized_weights(model0)}
        self.weight_names = [n for n, p in model0.named_parameters() if id(p) in weight_ids]
        self.names = [n for n, _ in model0.named_parameters()]
        like = self.device
        cfgs = [m.exp.cfg for m in self.members]
        opt = [c.optimizer for c in cfgs]
        betas = [tuple(o.get("betas", (0.9, 0.999))) for o in opt]
        self.hyper = _Hyper(
            lr=_per_member([m.trainer.lr() for m in self.members], like),
            wd=_per_member([o.get("weight_decay", 0) or 0 for o in opt], like),
            beta1=_per_member([b[0] for b in betas], like), beta2=_per_member([b[1] for b in betas], like),
            eps=_per_member([o.get("eps", 1e-8) for o in opt], like),
            momentum=_per_member([o.get("momentum", 0) or 0 for o in opt], like),
            l1=_per_member([c.regularization.l1 for c in cfgs], like),
            l2=_per_member([c.regularization.l2 for c in cfgs], like),
            p=_per_member([c.regularization.dropout for c in cfgs], torch.device("cpu")),
        )
        self.nesterov = bool(opt[0].get("nesterov", False))
        self.penalized = any(m.exp.regularizer.active for m in self.members)
        self.max_norm = cfgs[0].regularization.max_norm
        self.state: dict[str, dict[str, torch.Tensor]] = {}
        if self.kind in ("adam", "adamw"):
            self.state = {"exp_avg": {n: torch.zeros_like(p) for n, p in self.params.items()},
                          "exp_avg_sq": {n: torch.zeros_like(p) for n, p in self.params.items()}}
        elif self.kind == "sgd":
            self.state = {"momentum_buffer": {n: torch.zeros_like(p) for n, p in self.params.items()}}
        self.step_count = 0
        self.dropout_shapes: dict[int, list[tuple[int, ...]]] = {}
        t = self.members[0].trainer.settings
        self.smoothing = t.label_smoothing

    def _select(self, keep: list[int]) -> None:
        """Keep only the members at positions ``keep`` of the stacked tensors."""
        idx = torch.tensor(keep, device=self.device)
        self.params = {n: p.detach()[idx].requires_grad_(True) for n, p in self.params.items()}
        self.buffers = {n: b[idx] for n, b in self.buffers.items()}
        self.state = {k: {n: s[idx] for n, s in d.items()} for k, d in self.state.items()}
        self.hyper = self.hyper.select(keep)
        self.active = [self.active[i] for i in keep]

    # ------------------------------------------------------------------ one step
    def _loss_fn(self, params, buffers, masks, x, y, l1, l2):
        self.feed[:] = list(masks)
        out = functional_call(self.base, (params, buffers), (x,))
        loss = classification_loss(out, y, self.smoothing)
        if self.penalized:
            weights = [params[n] for n in self.weight_names]
            dtype = loss.dtype  # as the lone Regularizer: strength * sum, then added to the data loss
            loss = loss + (l2.to(dtype) * sum(w.square().sum() for w in weights)
                           + l1.to(dtype) * sum(w.abs().sum() for w in weights))
        return loss

    def _masks(self, batch: int, x: torch.Tensor) -> list[torch.Tensor]:
        if batch not in self.dropout_shapes:
            self.dropout_shapes[batch] = _dropout_calls(self.members[0].exp.model, x[:batch])
        shapes = self.dropout_shapes[batch]
        if not shapes:
            return []
        per_member = []
        for pos, member in enumerate(self.active):
            p = float(self.hyper.p[pos])
            with _member_rng(member, self.device):
                # the call a lone run's nn.Dropout makes, on ones: the mask times 1 / (1 - p)
                per_member.append([F.dropout(torch.ones(s, dtype=x.dtype, device=x.device), p, True) for s in shapes])
        return [torch.stack([masks[k] for masks in per_member]) for k in range(len(shapes))]

    def _update(self, grads: dict[str, torch.Tensor]) -> None:
        """One optimizer step of every member: torch.optim's single-tensor formulas, hyperparameters per member."""
        h = self.hyper
        self.step_count += 1
        step = self.step_count
        weight = set(self.weight_names)
        cache: dict[torch.dtype, dict[str, torch.Tensor]] = {}

        def scalars(dtype: torch.dtype) -> dict[str, torch.Tensor]:
            if dtype not in cache:
                c = {"lr": h.lr, "wd": h.wd, "momentum": h.momentum, "eps": h.eps, "beta2": h.beta2,
                     "one_minus_b1": 1 - h.beta1, "one_minus_b2": 1 - h.beta2,
                     "decay": 1 - h.lr * h.wd,
                     "step_size": h.lr / (1 - h.beta1 ** step),
                     "bc2_sqrt": (1 - h.beta2 ** step).sqrt()}
                cache[dtype] = {k: v.to(dtype) for k, v in c.items()}
            return cache[dtype]

        with torch.no_grad():
            for name, p in self.params.items():
                c = {k: _bcast(v, p) for k, v in scalars(p.dtype).items()}
                g = grads[name]
                decayed = name in weight
                if self.kind == "sgd":
                    if decayed:
                        g = g + c["wd"] * p
                    buf = self.state["momentum_buffer"][name]
                    if step == 1:
                        buf.copy_(g)
                    else:
                        buf.mul_(c["momentum"]).add_(g)
                    g = g + c["momentum"] * buf if self.nesterov else buf
                    p.sub_(c["lr"] * g)
                    continue
                if self.kind == "adamw":
                    if decayed:
                        p.mul_(c["decay"])
                elif decayed:
                    g = g + c["wd"] * p
                m, v = self.state["exp_avg"][name], self.state["exp_avg_sq"][name]
                m.lerp_(g, c["one_minus_b1"])
                v.mul_(c["beta2"]).add_(c["one_minus_b2"] * g * g)
                denom = (v.sqrt() / c["bc2_sqrt"]).add_(c["eps"])
                p.sub_(c["step_size"] * m / denom)
            if self.max_norm is not None:
                for name in self.weight_names:
                    w = self.params[name]
                    norms = w.flatten(2).norm(dim=2)  # (members, units)
                    scale = torch.where(norms > self.max_norm, self.max_norm / (norms + 1e-7), torch.ones_like(norms))
                    w.mul_(scale.view(*scale.shape, *([1] * (w.dim() - 2))))

    def _write_params(self, positions: Sequence[int]) -> None:
        """The parameters of the members at ``positions`` of the stacked tensors into their own models."""
        with torch.no_grad():
            for pos in positions:
                named = dict(self.active[pos].exp.model.named_parameters())
                for n, p in self.params.items():
                    named[n].copy_(p[pos])

    # ------------------------------------------------------------------ epochs
    def _epoch(self) -> None:
        """One epoch of every active member; members that diverge are finished and dropped."""
        first = self.active[0].trainer
        t, n = first.settings, len(self.data.x_train)
        bs = t.batch_size
        steps = first.steps_per_epoch()
        for m in self.active:
            m.trainer.epoch += 1
            m.total, m.read = 0.0, 0
        lrs = [m.trainer.lr() for m in self.active]
        self.hyper.lr = _per_member(lrs, self.device)
        perms = torch.stack([torch.randperm(n, device=self.device, generator=m.trainer.batches) for m in self.active])
        x, y = self.data.x_train, self.data.y_train
        epoch = self.active[0].trainer.epoch
        first_step = (epoch - 1) * steps + 1
        pending: list[torch.Tensor] = []
        augmentations = self.active[0].exp.augmentations
        t0 = time.perf_counter()
        for i in range(steps):
            logging_step = (i + 1) % t.log_every == 0 or i + 1 == steps
            idx = perms[:, i * bs:(i + 1) * bs]
            xb = x[idx]
            if augmentations:
                views = []
                for pos, m in enumerate(self.active):
                    v = xb[pos]
                    for transform in augmentations:
                        v = transform(v, m.trainer.augment_rng)
                    views.append(v)
                xb = torch.stack(views)
            yb = y[idx]
            masks = self._masks(idx.shape[1], x)
            watched = [pos for pos, m in enumerate(self.active) if m.dashboard.settings.update_ratio] \
                if logging_step else []
            if watched:  # the dashboard measures the update on the member's own model: bring it up to date
                self._write_params(watched)
                before = {pos: self.active[pos].dashboard.weights_before_update() for pos in watched}
            losses = vmap(self._loss_fn, randomness="error")(
                self.params, self.buffers, masks, xb, yb, self.hyper.l1, self.hyper.l2)
            names = list(self.params)
            grads = torch.autograd.grad(losses.sum(), [self.params[k] for k in names])
            self._update(dict(zip(names, grads)))
            pending.append(losses.detach())
            if watched:
                self._write_params(watched)
                for pos in watched:
                    if before[pos] is not None:
                        self.active[pos].dashboard.update_ratios(first_step + i, before[pos])
            if logging_step:
                chunk = torch.stack(pending).T.tolist()  # (members, steps)
                pending.clear()
                stopped = []
                for pos, m in enumerate(self.active):
                    m.dashboard.train_losses(first_step + m.read, chunk[pos])
                    m.read, m.total = i + 1, m.total + sum(chunk[pos])
                    if m.trainer.diverged(chunk[pos]):
                        stopped.append(pos)
                for pos in stopped:
                    m = self.active[pos]
                    log.warning(
                        "member %d, epoch %d: training loss %.4g is NaN, Inf or above %.1fx the initial loss %.4f: "
                        "stopping this member.", m.index, epoch, m.total / m.read, t.divergence_factor,
                        m.trainer.initial_loss)
                    self._finish(m, DIVERGED)
                if stopped:
                    keep = [pos for pos in range(len(self.active)) if pos not in stopped]
                    lrs = [lrs[pos] for pos in keep]
                    perms = perms[torch.tensor(keep, device=self.device)]
                    if not keep:
                        self.active = []
                        return
                    self._select(keep)
        seconds = time.perf_counter() - t0
        self._write_back()
        for pos, m in enumerate(self.active):
            with _member_rng(m, self.device, own=True):
                row = {"epoch": epoch, "train_loss": m.total / steps, **m.trainer.measure(), "lr": lrs[pos]}
                with warnings.catch_warnings():  # the member's own optimizer takes no step: its schedule still counts
                    warnings.simplefilter("ignore", UserWarning)
                    step_schedule(m.exp.scheduler, row["val_loss"])
                row["seconds"] = seconds
                m.trainer.record(row, m.dashboard)

    def _write_back(self) -> None:
        """Each active member's slice of the stacked tensors into its own model and optimizer state."""
        with torch.no_grad():
            for pos, m in enumerate(self.active):
                model = m.exp.model
                named_p = dict(model.named_parameters())
                named_b = dict(model.named_buffers())
                for n, p in self.params.items():
                    named_p[n].copy_(p[pos])
                for n, b in self.buffers.items():
                    named_b[n].copy_(b[pos])
                opt = m.exp.optimizer
                for n in self.names:
                    param = named_p[n]
                    if self.kind == "sgd":
                        if float(self.hyper.momentum[pos]) != 0:
                            opt.state[param] = {"momentum_buffer": self.state["momentum_buffer"][n][pos].clone()}
                    else:
                        opt.state[param] = {"step": torch.tensor(float(self.step_count)),
                                            "exp_avg": self.state["exp_avg"][n][pos].clone(),
                                            "exp_avg_sq": self.state["exp_avg_sq"][n][pos].clone()}

    def _finish(self, m: _Member, status: str) -> None:
        with _member_rng(m, self.device, own=True):
            metrics = m.trainer.end(status)
            m.dashboard.hparams(metrics)
            write_metrics(m.run_dir, metrics)
            m.dashboard.close()
        m.metrics, m.active = metrics, False
        log.info("member %d %s: best val %.2f%% (epoch %s), test %.2f%%. Run directory: %s", m.index, status,
                 100 * (metrics["best_val_acc"] or 0), metrics["best_epoch"], 100 * (metrics["test_acc"] or 0),
                 m.run_dir)

    def _close(self) -> None:
        for m in self.members:
            if m.metrics is None:
                with contextlib.suppress(Exception):
                    m.trainer.save_best()
                with contextlib.suppress(Exception):
                    m.dashboard.close()

    def fit(self) -> list[dict[str, Any]]:
        """Train every member for ``trainer.epochs``; write each run directory; return the metrics, in order."""
        saved_rng = torch.get_rng_state()
        try:
            self._stack()
            self.active = list(self.members)
            epochs = self.members[0].trainer.settings.epochs
            while self.active and self.active[0].trainer.epoch < epochs:
                self._epoch()
            for m in list(self.active):
                self._finish(m, COMPLETED)
        except BaseException:
            self._close()
            raise
        finally:
            torch.set_rng_state(saved_rng)
        return [m.metrics for m in self.members]


def member_bytes(cfg: DictConfig) -> int:
    """Planned device memory of one member, in bytes: its parameters with their gradients and optimizer
    state, and one training batch's activations kept for the backward pass (with their gradients).

    The data splits are shared by the members and not counted.
    """
    from expt.build import build_model

    data = load_data(cfg.data)
    size = torch.finfo(getattr(torch, cfg.trainer.dtype)).bits // 8
    with torch.random.fork_rng(devices=[]):
        model = build_model(cfg, data.input_shape, data.num_classes)
    params = sum(p.numel() for p in model.parameters())
    outputs = [0]

    def count(_module, _args, out):
        if isinstance(out, torch.Tensor):
            outputs[0] += out.numel()

    hooks = [m.register_forward_hook(count) for m in model.modules() if not list(m.children())]
    model = model.to("meta")
    with torch.no_grad():
        model(torch.empty(cfg.trainer.batch_size, *data.input_shape, device="meta"))
    for h in hooks:
        h.remove()
    batch = cfg.trainer.batch_size * math.prod(data.input_shape)
    return size * (4 * params + 3 * outputs[0] + 2 * batch)


def train_population(cfgs: Sequence[DictConfig], run_dirs: Sequence[str | Path],
                     contexts: Optional[Sequence[Any]] = None,
                     sweeps: Optional[Sequence[SweepTrial]] = None) -> list[dict[str, Any]]:
    """Train compatible configs together (see :class:`Population`); each run directory as a lone run writes it.

    ``contexts``: one callable per member returning a context manager entered around that member's
    own work (building its trainer and dashboard, its epoch records, its end). ``sweeps``: where each member
    stands in a sweep (:class:`expt.sweep_env.SweepTrial`, read by the caller), for its dashboard.
    """
    return Population(cfgs, [Path(d) for d in run_dirs], contexts, sweeps).fit()

