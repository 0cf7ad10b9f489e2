"""Train a population of runs at once: which configs can, and the population that trains them.

Runs whose models have the same shapes and whose configs differ only in values that can vary per
member (:data:`PER_MEMBER_KEYS`: learning rate, weight decay, L1/L2 strengths, momentum, betas,
eps, dropout probability, init scale, seed) train together. Each member is built by
:func:`expt.build.build` exactly as a lone run (its init, split and preprocessing) and is a
:class:`expt.trainer.RunRecord` of its own: the batch order and augmentation streams, the loss at
init, the per-epoch measurements, its schedule, the best model, checkpoints, early stopping,
TensorBoard and ``metrics.json``. The one epoch loop (:class:`expt.trainer.Trainer`) trains the
records with a :class:`expt.trainer.VmapEngine`, which fuses the steps (see :mod:`expt.trainer.vmap`).
A member whose training loss diverges, or that its sweep prunes, stops alone; the others go on.
:func:`can_join` says why a config cannot join, from one declared list (:data:`ALONE`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
from omegaconf import DictConfig, OmegaConf

from expt.build import build, build_model
from expt.config import amp_mode
from expt.dashboard import Dashboard, sweep_context
from expt.data import Splits, load as load_data
from expt.errors import ConfigError
from expt.sweep_env import SweepTrial
from expt.trainer import RunRecord, Trainer, VmapEngine
from expt.trainer.vmap import OPTIMIZERS, capture_rng, member_rng

log = logging.getLogger(__name__)

# Keys whose values may differ between the members of one population.
PER_MEMBER_KEYS = (
    "optimizer.lr", "optimizer.weight_decay", "optimizer.momentum", "optimizer.betas", "optimizer.eps",
    "regularization.l1", "regularization.l2", "regularization.dropout",
    "init.classifier_scale", "init.weight_scale", "trainer.seed",
)
# Keys each member's own record applies, so they may differ too: the schedule (each member's own
# learning rate, handed to the engine every step), the divergence threshold, what is measured and
# written, and the sanity check. The fused step is captured as a CUDA graph when every member's own step
# would be (trainer.cuda_graph among them) and no dropout mask is drawn (expt.trainer.vmap).
MEMBER_OWN_KEYS = (
    "schedule", "trainer.divergence_factor", "trainer.train_eval_samples", "trainer.snapshots",
    "trainer.checkpoint_interval", "trainer.progress_after", "trainer.cuda_graph", "dashboard", "sanity", "hydra",
)
MAY_DIFFER = (f"members may differ only in {', '.join(PER_MEMBER_KEYS)}, and in what each member's record applies "
              f"({', '.join(MEMBER_OWN_KEYS)})")
# What the vmapped engine cannot do yet: (key, the values it can do). A config with another value trains alone.
ALONE = (
    ("mode", ("train",)),
    ("optimizer._target_", tuple(OPTIMIZERS)),
    ("optimizer.amsgrad", (False, None)), ("optimizer.maximize", (False, None)), ("optimizer.dampening", (0, None)),
    ("optimizer.foreach", (None,)), ("optimizer.fused", (None,)), ("optimizer.capturable", (False, None)),
    ("optimizer.differentiable", (False, None)),
    ("trainer.amp", ("off", "bf16")),
    ("trainer.compile", (False,)),
    ("trainer.channels_last", (False,)),
    ("trainer.resume", (None,)),
)


def can_join(cfg: DictConfig) -> Optional[str]:
    """None when ``cfg`` can train in a population; otherwise the key and value that make it train alone."""
    for key, allowed in ALONE:
        value = OmegaConf.select(cfg, key, default=None)
        if key == "trainer.amp":
            value = amp_mode(value)
        elif isinstance(value, str) and key != "optimizer._target_":
            value = value.lower()
        if value not in allowed:
            shown = ", ".join(str(a) for a in allowed)
            return f"{key}={value} (a population trains with {shown})"
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


def shared(cfg: DictConfig) -> dict:
    """What members must share: the config without the keys each may set, and whether it has dropout layers."""
    plain = _without(cfg, PER_MEMBER_KEYS + MEMBER_OWN_KEYS)
    # dropout > 0 adds layers; the probability itself can vary
    plain["_dropout_layers"] = float(cfg.regularization.dropout) > 0
    return plain


def group_key(cfg: DictConfig) -> Optional[str]:
    """A string equal for configs that can train together; None for a config that trains alone."""
    return None if can_join(cfg) is not None else repr(shared(cfg))


_ABSENT = object()


def first_difference(a: Any, b: Any, where: str = "") -> Optional[str]:
    """The first key (dotted) whose value differs between two plain configs, with both values, as
    :func:`group_key` tells them apart (by ``repr``: 1 and 1.0 differ, so do a missing key and null); None if
    none does."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(a) + [k for k in b if k not in a]:
            found = first_difference(a.get(key, _ABSENT), b.get(key, _ABSENT), f"{where}.{key}" if where else str(key))
            if found is not None:
                return found
        return None if list(a) == list(b) else f"{where or 'the config'}: the same keys in another order"
    if repr(a) == repr(b):
        return None
    if where == "_dropout_layers":
        return "regularization.dropout: 0 in one, above 0 in the other (dropout layers or none)"
    shown = ["absent" if v is _ABSENT else repr(v) for v in (a, b)]
    return f"{where}: {shown[0]} against {shown[1]}"


# ============================================================================= the population
class Population:
    """N runs of compatible configs trained together; :meth:`fit` returns each run's metrics.

    ``data``: the splits ``cfgs[0].data`` describes, when the caller has loaded them already (a launcher that
    trains several groups on one dataset loads it once); loaded here otherwise. ``validated``: every config has
    passed :func:`expt.config.validate` since its last change (see :func:`expt.build.build`). ``names``: what
    the log calls each member (a launcher's job numbers); ``member <i>`` by default. ``keys``: the members'
    :func:`group_key`, where the caller has them (a launcher groups its jobs by them); computed here otherwise.
    """

    def __init__(self, cfgs: Sequence[DictConfig], run_dirs: Sequence[Path], contexts: Optional[Sequence[Any]] = None,
                 sweeps: Optional[Sequence[SweepTrial]] = None, data: Optional[Splits] = None,
                 validated: bool = False, names: Optional[Sequence[str]] = None,
                 keys: Optional[Sequence[Optional[str]]] = None):
        if not cfgs:
            raise ValueError("a population needs at least one config")
        for (one, many), given in ((("run directory", "run directories"), run_dirs), (("group key", "group keys"), keys)):
            if given is not None and len(given) != len(cfgs):
                raise ValueError(f"{len(cfgs)} configs but {len(given)} {one if len(given) == 1 else many}")

        def job_scope(i: int):  # the launcher's context for member i's job (its Hydra config: ${hydra:...} values)
            return contexts[i]() if contexts is not None else contextlib.nullcontext()

        def prefix(i: int) -> str:  # what starts each line logged about member i
            return f"{names[i] if names is not None else f'member {i}'}: "

        if keys is None:
            keys = []
            for i, cfg in enumerate(cfgs):
                with job_scope(i):
                    keys.append(group_key(cfg))
        for i, (cfg, key) in enumerate(zip(cfgs, keys)):
            if key is None:
                with job_scope(i):
                    raise ConfigError(f"member {i} cannot train in a population: {can_join(cfg)}")
            if key != keys[0]:
                with job_scope(0):
                    first = shared(cfgs[0])
                with job_scope(i):
                    differs = first_difference(shared(cfg), first)
                raise ConfigError(f"member {i}'s config differs from member 0's at {differs or 'a value'}: {MAY_DIFFER}")
        raw = load_data(cfgs[0].data) if data is None else data
        self.records: list[RunRecord] = []
        self.rngs: list[dict] = []
        saved_rng = torch.get_rng_state()
        try:
            for i, (cfg, run_dir) in enumerate(zip(cfgs, run_dirs)):
                run_dir = Path(run_dir)
                run_dir.mkdir(parents=True, exist_ok=True)
                with job_scope(i):  # built and described as the job's own run would be
                    # the same data, preprocessing and dtype (the group key holds them): the first member's splits
                    exp = build(cfg, data=raw, same_data_as=self.records[0].exp if self.records else None,
                                validated=validated)
                    rng = capture_rng(exp.device)
                    log.info("%s%s", prefix(i), exp.summary())
                scope = self._scope(rng, exp.device, functools.partial(job_scope, i))
                sweep = sweeps[i] if sweeps is not None else SweepTrial()
                with scope():
                    record = RunRecord(exp, run_dir, Dashboard(run_dir, cfg, sweep_context(sweep)),
                                       report=sweep.progress_report())
                record.scope = scope
                record.log_prefix = record.dashboard.log_prefix = prefix(i)
                self.records.append(record)
                self.rngs.append(rng)
            first = self.records[0].exp
            shapes = {k: (tuple(v.shape), v.dtype) for k, v in first.model.state_dict().items()}
            for i, r in enumerate(self.records[1:], 1):
                other = {k: (tuple(v.shape), v.dtype) for k, v in r.exp.model.state_dict().items()}
                if other != shapes:
                    raise ConfigError(f"member {i}'s model has other parameter shapes than member 0's")
                if r.exp.device != first.device:
                    raise ConfigError(f"member {i} trains on {r.exp.device}, member 0 on {first.device}: "
                                      "a population trains on one device (set trainer.device)")
        except BaseException:
            self._close()
            raise
        finally:
            torch.set_rng_state(saved_rng)

    @staticmethod
    def _scope(rng: dict, device: torch.device, job: Callable[[], Any]):
        """A member's own work runs with its random state, inside ``job()``: the launcher's context for its job."""

        @contextlib.contextmanager
        def scope():
            with job(), member_rng(rng, device):
                yield

        return scope

    def _close(self) -> None:
        for r in self.records:
            with contextlib.suppress(Exception):
                r.dashboard.close()

    def fit(self) -> list[Any]:
        """Train every member for ``trainer.epochs``; write each run directory; return the metrics, in order. A
        member whose own work fails (its checkpoints cannot be written, say) stops alone: its place holds the
        error, and the others train on."""
        saved_rng = torch.get_rng_state()
        try:  # the trainer keeps what a stop leaves (Ctrl-C, an error), as it does for a lone run
            return Trainer(self.records, VmapEngine(self.records, self.rngs), isolate=True).fit()
        finally:
            self._close()
            torch.set_rng_state(saved_rng)


def member_bytes(cfg: DictConfig, data: Optional[Splits] = None) -> int:
    """Planned device memory of one member, in bytes: its parameters with their gradients and optimizer
    state, and one training batch's activations kept for the backward pass (with their gradients).

    The data splits (``cfg.data``'s, loaded unless given) are shared by the members and not counted.
    """
    data = load_data(cfg.data) if data is None else data
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
                     sweeps: Optional[Sequence[SweepTrial]] = None) -> list[Any]:
    """Train compatible configs together (see :class:`Population`); each run directory as a lone run writes it.
    Each member's metrics, in order; a member whose own work failed has the error in its place.

    ``contexts``: one callable per member returning a context manager entered around that member's
    own work (building its record and dashboard, its epoch records, its end). ``sweeps``: where each
    member stands in a sweep (:class:`expt.sweep_env.SweepTrial`, read by the caller): its dashboard's
    round and label, and its early stopping.
    """
    return Population(cfgs, [Path(d) for d in run_dirs], contexts, sweeps).fit()

