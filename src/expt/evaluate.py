"""Using finished runs: ``expt.load`` (a run's model as a :class:`Predictor`) and ensembles of runs.

:func:`load` rebuilds a run's best model from the config its checkpoint holds as a
:class:`Predictor`: raw images in, class probabilities out, under the test-time views of
:mod:`expt.predict`. ``python -m expt.evaluate DIR`` (:func:`evaluate_ensembles`) averages the
predictions of a sweep's or a multirun's runs (or of one run's epoch snapshots), with the choices
made on the validation split and the test split used once.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

try:
    import numpy as np
    import torch
    from omegaconf import DictConfig, OmegaConf
    from torch import nn

    from expt import checkpoint
    from expt.augment import NOT_FLIP_INVARIANT, PER_CHANNEL
    from expt.build import build_model
    from expt.dashboard.diagnostics import code_block
    from expt.data import SCALE_RATIO, Splits, check_images, load as load_data
    from expt.devices import choose_device
    from expt.errors import ConfigError
    from expt.files import holder, updating
    from expt.instantiate import instantiate
    from expt.predict import TTA_VIEWS, nll_and_accuracy, probabilities
    from expt.progress import Progress
    from expt.preprocess import Preprocessor
    from expt.search import RECORDS_FILE, read_records
    from expt.status import (COMPLETED, EVALUATION_DIR, EVALUATION_FILE, FAILED, METRICS_FILE, SANITY_DIR,
                             SANITY_FILE, read_metrics, write_json)
    from expt.values import is_number
except KeyboardInterrupt:  # Ctrl-C while python -m expt.evaluate loads its libraries (seconds): nothing has started
    if __name__ != "__main__":
        raise
    print("Interrupted.", file=sys.stderr)
    raise SystemExit(130) from None

# Seconds of scoring before the command line's evaluation shows a progress bar (at a terminal).
PROGRESS_AFTER = 2.0

# ============================================================================= using a trained model
@dataclass
class Predictor:
    """A trained model with the preprocessing it was trained with: raw images in, class probabilities out.

    Made by :func:`load`. ``predict`` takes images as the dataset gives them (what
    ``expt.data.load`` returns before preprocessing: pixels in [0, 1], or uint8 pixels, shaped
    (N, C, H, W), (N, H, W) or (N, H, W, C); one image without the batch axis works too). It
    refuses, as training does, what is not such a batch: strings, bools or complex numbers, NaN or
    Inf pixels, no image at all, another image shape, and pixels on another scale than the
    training images' (``pixel_range``, their lowest and highest pixel, widened by its width on
    each side; not known for checkpoints written before it was recorded).
    """

    model: nn.Module
    preprocessor: Preprocessor
    device: torch.device
    dtype: torch.dtype
    input_shape: tuple[int, ...]
    num_classes: int
    config: DictConfig  # the run's composed config, as stored in the checkpoint
    epoch: Optional[int]
    averaged: bool  # the averaged weights of trainer.ema, not the trained ones
    source: Path
    pixel_range: Optional[tuple[float, float]] = None  # the training images' lowest and highest pixel
    data: Optional[dict[str, Any]] = None  # the data it trained on (expt.data.Splits.fingerprint), where recorded

    def expects(self) -> str:
        """What :meth:`images` takes, for error messages."""
        pixels = "float pixels in [0, 1] or uint8 pixels"
        if self.pixel_range is not None:
            lo, hi = self.pixel_range
            pixels = f"float pixels on the training images' scale ({lo:.3g} to {hi:.3g})"
            pixels += "" if self.takes_no_bytes() else " or uint8 pixels (0-255)"
        return (f"the model of {self.source} takes a batch of images shaped (N, {', '.join(map(str, self.input_shape))}) "
                f"(or (N, H, W), (N, H, W, C), or one image), {pixels}")

    def takes_no_bytes(self) -> bool:
        """Whether the training images' pixels were far beyond [0, 1] (float 0-255 pixels kept as they were), so that
        uint8 images, which are scaled to [0, 1], are on another scale."""
        return self.pixel_range is not None and max(-self.pixel_range[0], self.pixel_range[1]) > SCALE_RATIO

    def images(self, images: Any) -> torch.Tensor:
        """``images`` as a preprocessed (N, C, H, W) batch on the predictor's device and in its dtype."""
        if isinstance(images, torch.Tensor):
            images = images.detach().cpu()
            x = (images.float() if images.dtype == torch.bfloat16 else images).numpy()
        else:
            x = np.asarray(images)
        c, h, w = self.input_shape if len(self.input_shape) == 3 else (None, None, None)
        if x.shape == self.input_shape or (x.ndim == 2 and c == 1 and x.shape == self.input_shape[1:]):
            x = x[None]  # one image
        elif x.ndim == 3 and x.shape == (h, w, c):
            x = x.transpose(2, 0, 1)[None]  # one image, channels last (as PIL and numpy give it)
        given = tuple(x.shape)
        as_bytes = x.dtype == np.uint8  # scaled to [0, 1] below, as the data loaders scale them
        try:
            x = check_images(x, "images", "predict")  # the checks every training split passes: dtype, shape, finite
        except ConfigError as error:
            raise ConfigError(f"{error} Here {self.expects()}.") from None
        if tuple(x.shape[1:]) != self.input_shape:
            raise ConfigError(
                f"images of shape {given}" + (f" (read as {tuple(x.shape)})" if tuple(x.shape) != given else "")
                + f" do not fit the model of {self.source}, trained on images of "
                f"shape {self.input_shape} (give (N, {', '.join(map(str, self.input_shape))}) or one such image)."
            )
        if not len(x):
            raise ConfigError(f"predict: images holds no image (shape {tuple(x.shape)}); {self.expects()}.")
        if as_bytes and self.takes_no_bytes():
            lo, hi = self.pixel_range
            raise ConfigError(
                f"predict: images are uint8, whose pixels are scaled to 0-1, but the model of {self.source} was trained "
                f"on float pixels from {lo:.4g} to {hi:.4g}, kept as they were: give these images as float on that "
                "scale (images.astype('float32'))."
            )
        if self.pixel_range is not None:
            lo, hi = self.pixel_range
            width = hi - lo
            low, high = float(x.min()), float(x.max())
            if low < lo - width or high > hi + width:
                raise ConfigError(
                    f"predict: images hold pixels from {low:.4g} to {high:.4g}, on another scale than the images the "
                    f"model of {self.source} was trained on ({lo:.4g} to {hi:.4g}, as expt.data.load gave them): "
                    "scale them the same way (raw 0-16 digits divided by 16, 8-bit images as uint8 or divided by "
                    f"255); {self.expects()}."
                )
        batch = torch.as_tensor(np.ascontiguousarray(x)).to(self.device, self.dtype)
        return self.preprocessor(batch)

    @torch.no_grad()
    def predict(self, images: Any, tta: str = "none") -> torch.Tensor:
        """Class probabilities (N, C) for raw ``images``, averaged over the test-time views ``tta`` names."""
        check_views([tta], self, "tta")
        return probabilities(self.model, self.images(images), tta)


def check_views(tta: Sequence[str], predictor: Predictor, key: str) -> None:
    """Refuse test-time views that change what ``predictor``'s model is shown: views that mirror images of data
    whose classes a mirror changes (the data the trainer warns hflip about), and views that move pixels after a
    preprocessing that subtracts or rotates per pixel (the trainer refuses augmentation with it for the same
    reason; a whitened run scored 73.6% without views and 55.9% with shifts). ``key``: the argument's name."""
    check_view_names(tta, key)
    given = functools.partial(_given, key)
    data = predictor.config.data.get("name")
    flips = [name for name in tta if "flip" in name]
    if flips and data in NOT_FLIP_INVARIANT:
        raise ConfigError(
            f"{given(flips)} is not allowed on data={data}: those views add each image's mirror, and "
            f"data={data} holds handwritten digits, which a mirror changes (a mirrored 2, 3, 4, 5, 7 or 9 is "
            f"not that digit). Use {given(['none'])} or shift (the image and its 1-pixel shifts); flips are for data "
            "whose classes a mirror keeps, such as fashion_mnist or cifar10."
        )
    moved = [name for name in tta if name != "none"]
    preprocessing = predictor.config.preprocessing.get("_target_")
    if moved and preprocessing not in PER_CHANNEL:
        raise ConfigError(
            f"{given(moved)} is not allowed for the model of {predictor.source}, trained with "
            f"preprocessing={preprocessing}: it subtracts or rotates per pixel, so a shifted or mirrored view would "
            f"be preprocessed with the statistics of other pixels, which lowers accuracy. Use {given(['none'])}."
        )


def check_view_names(tta: Sequence[str], key: str) -> None:
    """Refuse a name of test-time views that is not one of ``TTA_VIEWS`` (before any model is loaded)."""
    unknown = [name for name in tta if name not in TTA_VIEWS]
    if unknown:
        raise ConfigError(f"{_given(key, unknown[:1])} is not allowed: one of {', '.join(TTA_VIEWS)}.")


def _given(key: str, names: Sequence[str]) -> str:
    """Views as the caller wrote them: ``--tta flip shift+flip``, or ``tta='flip'``."""
    return f"{key} {' '.join(names)}" if key.startswith("--") else f"{key}={' '.join(names)!r}"


def resolve_model(path: str | Path) -> Path:
    """A run directory (its checkpoints/best.pt) or a checkpoint file."""
    path = Path(path).expanduser()
    found = checkpoint.find(path, checkpoint.BEST)
    if found is not None:
        return found
    raise ConfigError(
        f"{str(path)!r} is not a trained model: expected a run directory holding checkpoints/{checkpoint.BEST} "
        "(a run that finished at least one epoch) or a .pt checkpoint written by expt."
    )


def load(path: str | Path, device: str | torch.device = "cpu") -> Predictor:
    """The model a run trained, rebuilt from the config its checkpoint holds, its weights loaded weights-only."""
    source = resolve_model(path)
    state = checkpoint.load(source, key="the checkpoint")
    if "input_shape" not in state:
        raise ConfigError(f"{str(source)!r} was written by an older expt that did not record the input shape; "
                          "train the run again to use it here.")
    cfg = OmegaConf.create(state["config"])
    input_shape, num_classes = tuple(state["input_shape"]), int(state["num_classes"])
    with torch.random.fork_rng(devices=[]):  # building draws an init that the weights replace: leave the caller's RNG
        model = build_model(cfg, input_shape, num_classes)
    checkpoint.load_weights(model, state["model"], f"{str(source)!r}'s model")
    device = torch.device(choose_device(str(device), torch.cuda.device_count(), key="device"))
    dtype = getattr(torch, cfg.trainer.dtype)
    model.to(device=device, dtype=dtype).eval()
    preprocessor = instantiate(cfg.preprocessing, "preprocessing").load_fitted(state["preprocess"]).to(device)
    found = state["preprocess"].get("pixel_range")
    pixel_range = (float(found[0]), float(found[1])) if found is not None and len(found) == 2 else None
    return Predictor(model, preprocessor, device, dtype, input_shape, num_classes, cfg, state.get("best_epoch"),
                     bool(state.get("averaged", False)), source, pixel_range, state.get("data"))


# ============================================================================= ensembles: python -m expt.evaluate


@dataclass
class Member:
    """One finished run of an ensemble, ranked by its best validation accuracy."""

    run_dir: Path
    metrics: dict[str, Any]
    predictor: Predictor


# the numbers of metrics.json an ensemble reads (to rank the runs, and in the table): each a number, or absent
NUMBER_FIELDS = ("best_val_acc", "best_val_loss", "final_val_loss", "test_acc", "test_loss")


def why_not_finished(run: Path) -> Optional[str]:
    """Why ``run`` is not a finished run an ensemble can use; None when it is one."""
    if (run / SANITY_FILE).is_file() and not (run / METRICS_FILE).is_file():
        return f"it is a mode=sanity run (its report is {SANITY_FILE}), which trains no model to use"
    pid = holder(run)
    if pid is not None:  # its metrics.json and best.pt, where there are some, are an earlier state's
        return f"it is training now (process {pid}); evaluate it once it ends"
    path = run / METRICS_FILE
    if not path.is_file():
        return f"it has no {METRICS_FILE} (the run failed, was killed, or is still running)"
    metrics = read_metrics(run)
    if metrics is None:
        return f"its {METRICS_FILE} cannot be read (damaged or not a JSON object)"
    if metrics.get("status") != COMPLETED:
        return f"its status is {metrics.get('status')!r}, not {COMPLETED!r}"
    for key in NUMBER_FIELDS:
        value = metrics.get(key)
        if value is not None and not is_number(value):
            return f"its {METRICS_FILE} holds {key}={value!r}, not a number (damaged or written by something else)"
    if not (run / checkpoint.DIR / checkpoint.BEST).is_file():
        return f"it has no checkpoints/{checkpoint.BEST}"
    return None


def _looks_like_run(path: Path) -> bool:
    """A run directory, finished or not: Hydra's job record, metrics.json or checkpoints."""
    return any((path / name).exists() for name in (".hydra", METRICS_FILE, checkpoint.DIR))


def find_runs(directory: Path) -> tuple[list[Path], dict[Path, str]]:
    """The finished runs of ``directory`` (itself, or the runs below it), and the runs left out with the reason.

    A run directory is one with ``.hydra/``, ``metrics.json`` or ``checkpoints/``; it is finished when its
    ``metrics.json`` reads ``status: completed`` and ``checkpoints/best.pt`` exists.
    """
    if not directory.exists():
        raise ConfigError(
            f"{str(directory)!r} does not exist: give a run directory (outputs/<date>/<time>) or a sweep's or "
            "multirun's (multirun/<date>/<time>)."
        )
    if not directory.is_dir():
        raise ConfigError(
            f"{str(directory)!r} is a file, not a directory: give a run directory (outputs/<date>/<time>) or a "
            "sweep's or multirun's (multirun/<date>/<time>)."
        )
    if why_not_finished(directory) is None:
        return [directory], {}
    candidates = {directory} if _looks_like_run(directory) else set()
    candidates |= {p.parent for name in (".hydra", METRICS_FILE, checkpoint.DIR) for p in directory.rglob(name)}
    # a run's own subdirectories (its checkpoints, its evaluation) are not runs of the sweep, nor is a mode=sanity
    # run's overfit check (a tiny set with regularization off)
    candidates = {c for c in candidates if c.name not in (checkpoint.DIR, EVALUATION_DIR)
                  and not any(p.name == SANITY_DIR and (p.parent / SANITY_FILE).is_file() for p in c.parents)}
    failed = _failed_trials(directory)
    reasons = {run: why_not_finished(run) for run in sorted(candidates, key=_job_order)}
    reasons |= {run: f"the trial failed ({failed[run.resolve()]})" for run in reasons
                if run.resolve() in failed and not (run / METRICS_FILE).exists()}
    finished = [run for run, why in reasons.items() if why is None]
    inside = [run for run in reasons if any(run != f and f in run.parents for f in finished)]
    left_out = {run: why for run, why in reasons.items() if why is not None and run not in inside}
    return finished, left_out


def _job_order(run: Path) -> list[tuple[int, Any]]:
    """A sort key that puts run directories in job order: 5 before 11 (numbers compared as numbers)."""
    return [(0, int(part)) if part.isdigit() else (1, part) for part in run.parts]


def _failed_trials(sweep: Path) -> dict[Path, str]:
    """The trials of ``sweep``'s coarse-to-fine record (``search.jsonl``) that failed, by run directory: the error
    each one's record keeps. Empty for a directory that holds no such record."""
    path = sweep / RECORDS_FILE
    if not path.is_file():
        return {}
    return {(sweep / record.run_dir).resolve(): record.error or "no error recorded"
            for record in read_records(path).values() if record.status == FAILED and record.run_dir}


def started_in(run: Path) -> Optional[Path]:
    """Where ``run`` was started (Hydra's ``hydra.runtime.cwd`` in its ``.hydra/hydra.yaml``), if recorded."""
    try:
        cwd = OmegaConf.select(OmegaConf.load(run / ".hydra" / "hydra.yaml"), "hydra.runtime.cwd", default=None)
    except Exception:  # no record, or not one Hydra wrote: the run's start directory is unknown
        return None
    return Path(cwd) if isinstance(cwd, str) and cwd else None


def _run_dir(member: Member) -> Path:
    """The run a member comes from (a snapshot's run holds its ``checkpoints/``)."""
    source = member.predictor.source
    return source.parent.parent if source.parent.name == checkpoint.DIR else source.parent


def run_data_config(member: Member) -> DictConfig:
    """The member's data config, a relative ``data.path`` (or ``data.root``) found as the run found it.

    A run reads a relative path from the directory it was started in; ``python -m expt.evaluate`` may
    run elsewhere. A relative path is used as given where it exists from here, else from the directory
    the run was started from (its ``.hydra/hydra.yaml``). An npz run whose file is in neither is refused,
    naming the run and both directories.
    """
    data = member.predictor.config.data
    run = _run_dir(member)
    resolved = {}
    for key in ("path", "root"):
        value = data.get(key) if not OmegaConf.is_missing(data, key) else None
        if not isinstance(value, str) or not value:
            continue
        given = Path(os.path.expanduser(value))
        if given.is_absolute() or given.exists():
            continue
        start = started_in(run)
        if start is not None and (start / given).exists():
            resolved[key] = str(start / given)
        elif key == "path" and data.get("name") == "npz":
            tried = f"{Path.cwd()} (the current directory)"
            if start is not None:
                where = (f"it is in neither {tried} nor {start} (where the run was started, as its .hydra/hydra.yaml "
                         f"records): put the file back at {start / given}, or")
            else:
                where = f"it is not in {tried} and the run has no .hydra/hydra.yaml to say where it was started:"
            raise ConfigError(
                f"data.path={value!r} of the run {run} is not a file: a relative path is read from the directory the "
                f"run was started in, and {where} run python -m expt.evaluate from the directory that holds it."
            )
    if not resolved:
        return data
    return OmegaConf.create({**OmegaConf.to_container(data, resolve=True), **resolved})


def _data_key(cfg: DictConfig) -> dict[str, Any]:
    """What makes two runs' validation and test splits the same: the data config, wherever the files lie and
    however many training samples each kept (``subset``: a search's pinpoint trials train on fewer)."""
    data = OmegaConf.to_container(cfg.data, resolve=True)
    return {k: v for k, v in data.items() if k not in ("root", "download", "subset")}


def members(directory: Path, device: str | torch.device,
            snapshots: bool = False) -> tuple[list[Member], dict[Path, str]]:
    """The finished runs of ``directory``, best validation accuracy first (lower final loss breaks ties),
    and the run directories left out, each with the reason.

    With ``snapshots``, the epoch snapshots that one run kept (trainer.snapshots), newest first.
    """
    choose_device(str(device), torch.cuda.device_count(), key="device")  # not available: no run is to blame
    runs, left_out = find_runs(directory)
    if snapshots and runs:
        return _snapshot_members(runs, device), left_out
    found = []
    for run in runs:
        try:
            found.append(Member(run, read_metrics(run) or {}, load(run, device)))
        except ConfigError as exc:  # a best.pt cut short or not expt's: this run is left out, the others count
            left_out[run] = f"its checkpoints/{checkpoint.BEST} cannot be loaded ({exc})"
    if not found:
        reasons = "".join(f"; {_relative(run, directory)}: {why}" for run, why in list(left_out.items())[:5])
        more = f"; and {len(left_out) - 5} more" if len(left_out) > 5 else ""
        raise ConfigError(
            f"{str(directory)!r} holds no finished run: expected a run directory, or a sweep's, with metrics.json "
            f"(status completed) and a checkpoints/{checkpoint.BEST} that loads, in each run{reasons}{more}."
        )
    first = found[0]
    for other in found[1:]:
        for what, a, b in (("data", _data_key(first.predictor.config), _data_key(other.predictor.config)),
                           ("classes", first.predictor.num_classes, other.predictor.num_classes)):
            if a != b:
                raise ConfigError(
                    f"{other.run_dir} and {first.run_dir} were trained on different {what} ({b} and {a}): an ensemble "
                    "averages models of the same data, split and classes; evaluate them apart."
                )
    # best validation accuracy first; among equals the lower validation loss of that epoch (the sweeper's tie-breaker,
    # here on exact ties only: an ensemble's k is chosen on validation anyway)
    return sorted(found, key=lambda m: (-(m.metrics.get("best_val_acc") or 0.0),
                                        _first_number(m.metrics, "best_val_loss", "final_val_loss"),
                                        str(m.run_dir))), left_out


def check_trained_on(ranked: list[Member], data: Splits, directory: Path) -> None:
    """Refuse members that trained on other validation or test samples than ``data`` holds (the labels of each in
    order, as their checkpoints recorded them): a data file changed in place since they trained (samples added,
    removed or reordered) would score them on samples they may have trained on, with the same config. A checkpoint
    written before it was recorded is not checked."""
    now = data.fingerprint()["split_labels"][1:]
    stale = [m for m in ranked if m.predictor.data and m.predictor.data.get("split_labels", now)[1:] != now]
    if stale:
        names = ", ".join(_relative(m.run_dir, directory) for m in stale[:3]) + (", ..." if len(stale) > 3 else "")
        cfg = ranked[0].predictor.config.data
        where = f"data.path={cfg.get('path')!r}" if cfg.get("name") == "npz" else f"data={cfg.get('name')}"
        raise ConfigError(
            f"{len(stale)} of {len(ranked)} run(s) ({names}) trained on other data than {where} gives now: their "
            "validation and test labels differ from the splits read here, so they would be scored on samples they "
            "may have trained on. The data changed since they trained (a file replaced or edited, its samples "
            "reordered); restore it, or evaluate runs trained on the data as it is now."
        )


def _first_number(metrics: dict, *keys: str) -> float:
    """The first of ``keys`` that ``metrics`` holds a number for (runs written before a key existed lack it)."""
    for key in keys:
        if is_number(metrics.get(key)):
            return float(metrics[key])
    return 0.0


def _snapshot_members(runs: list[Path], device: str | torch.device) -> list[Member]:
    """The snapshots of the one run in ``runs``, newest first, each with its epoch's validation numbers."""
    if len(runs) > 1:
        raise ConfigError(
            f"--snapshots ensembles the epoch snapshots of one run, and this directory holds {len(runs)} finished "
            f"runs ({', '.join(str(r) for r in runs[:3])}{', ...' if len(runs) > 3 else ''}): give one run's directory."
        )
    run = runs[0]
    found = checkpoint.snapshots(run / checkpoint.DIR)
    if not found:
        raise ConfigError(
            f"{str(run)!r} kept no epoch snapshots (checkpoints/epoch_<n>.pt): train it with trainer.snapshots=K "
            "to keep the weights of its last K epochs."
        )
    rows = (read_metrics(run) or {}).get("history")
    history = {row.get("epoch"): row for row in (rows if isinstance(rows, list) else []) if isinstance(row, dict)}

    def number(epoch: int, key: str) -> Optional[float]:  # a history that is not what training wrote gives none
        value = history.get(epoch, {}).get(key)
        return value if is_number(value) else None

    return [Member(path, {"best_val_acc": number(epoch, "val_acc"), "final_val_loss": number(epoch, "val_loss")},
                   load(path, device))
            for epoch, path in found.items()]


def evaluate_ensembles(directory: str | Path, top: Optional[int] = None, tta: Sequence[str] = ("none",),
                       device: str | torch.device = "cpu", snapshots: bool = False,
                       progress: bool = False) -> dict[str, Any]:
    """Choose on validation how many of the best runs to average (and which test-time views), then test that choice.

    With ``snapshots`` the members are the epoch snapshots one run kept (trainer.snapshots), the
    newest first, and k counts the last epochs.

    Every candidate (k = ``top``, or 1 to all runs; each view set in ``tta``) is scored on the
    validation split only; the one with the best validation accuracy (lower validation loss,
    then fewer members, then the view set named first in ``tta`` break ties) is evaluated once on the test split. The
    result, with every earlier test evaluation of this directory, is written to
    ``evaluation.json`` and to TensorBoard under ``<directory>/evaluation``; a file that cannot be
    written (a read-only directory) is listed in the result's ``not_written`` with the reason, and the
    result is returned all the same.

    With ``progress``, the images scored so far are shown on stderr, on validation and then in the test of the
    choice: a bar at a terminal once the scoring has run :data:`PROGRESS_AFTER` seconds, elsewhere a line a minute.
    """
    directory = Path(directory)
    check_view_names(tta, "--tta")  # a misspelt view before every checkpoint is read
    ranked, left_out = members(directory, device, snapshots)
    if top is not None and not 1 <= top <= len(ranked):
        what = "epoch snapshot(s)" if snapshots else "finished run(s)"
        raise ConfigError(f"--top {top} is not allowed: {str(directory)!r} holds {len(ranked)} {what}; "
                          f"give a number from 1 to {len(ranked)}.")
    for member in ranked:
        check_views(tta, member.predictor, "--tta")
    data = load_data(run_data_config(ranked[0]))
    check_trained_on(ranked, data, directory)

    # every member on validation in each view set (and without views, for its own row), then the choice on test
    y_val, y_test = data.y_val, data.y_test
    n_val = len(ranked) * (sum(len(TTA_VIEWS[v]) for v in tta) + ("none" not in tta)) * len(y_val)
    phases: list[tuple[str, Progress]] = []  # validation, then the choice on test: each counted to its own total

    def phase(what: str, total: int) -> Progress:
        phases.append((what, Progress(total, what, bar=progress and sys.stderr.isatty(), delay=PROGRESS_AFTER)))
        return phases[-1][1]

    def advance(n: int) -> None:
        what, scored = phases[-1]
        scored.advance(n)
        if progress and scored.line_due():
            print(f"{what}: {scored.done:,} of {scored.total:,} images (each test-time view counts as an image), "
                  f"{scored.rate():,.0f} images/s", file=sys.stderr, flush=True)

    def probs(member: Member, split: str, views: str) -> torch.Tensor:
        p = member.predictor
        x = getattr(data, f"x_{split}").to(p.device, p.dtype)
        return probabilities(p.model, p.preprocessor(x), views, advance).cpu()

    def member_row(i: int, m: Member) -> dict[str, Any]:
        # each member alone and without test-time views on both splits: its test numbers are those training
        # measured on the same best model, so the table reads across and the test split is not used again
        plain = val[i, "none"] if (i, "none") in val else probs(m, "val", "none")
        val_loss, val_acc = nll_and_accuracy(plain, y_val)
        test = {key: m.metrics.get(key) for key in ("best_val_acc", "test_acc", "test_loss")}  # tested in training
        return {"run_dir": str(m.run_dir), "val_acc": val_acc, "val_loss": val_loss, **test}

    with phase("evaluating on validation", n_val):
        val = {(i, v): probs(m, "val", v) for i, m in enumerate(ranked) for v in tta}
        candidates, choice = _choose_on_validation(val, y_val, tta,
                                                   [top] if top is not None else range(1, len(ranked) + 1))
        k, views = choice["k"], choice["tta"]
        rows = [member_row(i, m) for i, m in enumerate(ranked)]  # a run without views: counted in n_val
    with phase("testing the choice", k * len(TTA_VIEWS[views]) * len(y_test)):
        test_loss, test_acc = nll_and_accuracy(sum(probs(m, "test", views) for m in ranked[:k]) / k, y_test)
    chosen = {"k": k, "tta": views, "members": [_relative(m.run_dir, directory) for m in ranked[:k]],
              "ranked_by": "epoch, newest first" if snapshots else "validation accuracy"}
    result = {
        "directory": str(directory),
        "left_out": [{"run_dir": _relative(run, directory), "reason": why} for run, why in left_out.items()],
        "members": rows,
        "candidates": candidates,
        "choice": chosen,
        "ensemble": {"val_acc": choice["val_acc"], "val_loss": choice["val_loss"],
                     "test_acc": test_acc, "test_loss": test_loss},
    }
    evaluation = {"choice": chosen, "models": _model_digests(ranked[:k]), "test_acc": test_acc, "test_loss": test_loss}
    with updating(directory):  # another evaluation of this directory ending now adds its own record after this one
        result.update(_test_history(directory, evaluation))
        result["not_written"] = _save(directory, result)
    return result


def _choose_on_validation(val: dict[tuple[int, str], torch.Tensor], y_val: torch.Tensor, tta: Sequence[str],
                          sizes: Sequence[int]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every candidate (the first k members' averaged validation probabilities ``val[i, views]``, for each k of
    ``sizes`` and each view set of ``tta``) with its validation accuracy and loss, and the one chosen: the best
    accuracy, then the lower loss, fewer members, then the view set named first in ``tta``."""
    candidates = []
    for views in tta:
        for k in sizes:
            loss, acc = nll_and_accuracy(sum(val[i, views] for i in range(k)) / k, y_val)
            candidates.append({"k": k, "tta": views, "val_acc": acc, "val_loss": loss})
    choice = min(candidates, key=lambda c: (-c["val_acc"], c["val_loss"], c["k"], list(tta).index(c["tta"])))
    return candidates, choice


def _test_history(directory: Path, evaluation: dict[str, Any]) -> dict[str, Any]:
    """``repeated`` and ``test_evaluations``: this test evaluation (its choice, members' checkpoint digests and
    test numbers) after the earlier ones ``evaluation.json`` holds, unless one of those made the same choice of
    the same weights (a member resumed further since holds other weights). An evaluation recorded before the
    digests were is taken as of these weights."""
    try:
        record = json.loads((directory / EVALUATION_FILE).read_text())
    except (OSError, ValueError):
        record = {}
    earlier = record.get("test_evaluations") if isinstance(record, dict) else None
    earlier = [e for e in earlier if isinstance(e, dict)] if isinstance(earlier, list) else []  # not ours: none
    choice, models = evaluation["choice"], evaluation["models"]
    repeated = any(e.get("choice") == choice and e.get("models", models) == models for e in earlier)
    return {"repeated": repeated, "test_evaluations": earlier + ([] if repeated else [
        {**evaluation, "at": time.strftime("%Y-%m-%d %H:%M:%S")}])}


def _model_digests(chosen: list[Member]) -> list[str]:
    """A digest of each chosen member's checkpoint file, to tell a choice evaluated again from the same members
    holding other weights."""
    return [hashlib.sha256(Path(m.predictor.source).read_bytes()).hexdigest()[:16] for m in chosen]


def _save(directory: Path, result: dict[str, Any]) -> list[dict[str, str]]:
    """Write ``evaluation.json`` (atomically) and the TensorBoard record; the ones that could not be, with the reason.

    The evaluation is done by then: a directory that cannot be written to (read-only, full) loses the record,
    not the result.
    """
    not_written = []
    path = directory / EVALUATION_FILE
    try:
        write_json(path, result)
    except OSError as exc:
        not_written.append({"path": str(path), "reason": _reason(exc)})
    board = directory / EVALUATION_DIR
    try:
        board.mkdir(exist_ok=True)
        tempfile.TemporaryFile(dir=board).close()  # refused here, not later in TensorBoard's writer thread
        _write_board(directory, result)
    except OSError as exc:
        not_written.append({"path": str(board), "reason": exc.strerror or str(exc)})
    return not_written


def _reason(exc: OSError) -> str:
    """What the OS said, and about which file: ``Is a directory: '.../evaluation.json'`` (a rename's target, else the
    file the call named)."""
    name = exc.filename2 or exc.filename
    if exc.strerror and name:
        return f"{exc.strerror}: {os.fsdecode(name)!r}"
    return exc.strerror or str(exc)


def _relative(run_dir: Path, directory: Path) -> str:
    """``run_dir`` as its path below ``directory``; the directory itself as its own path (a lone run's)."""
    return str(directory) if run_dir == directory else str(run_dir.relative_to(directory))


def _write_board(directory: Path, result: dict[str, Any]) -> None:
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(directory / EVALUATION_DIR)) as writer:
        for c in result["candidates"]:
            views = "no test-time views" if c["tta"] == "none" else f"test-time views: {c['tta']}"
            writer.add_scalar(f"ensemble/val_acc ({views})", c["val_acc"], c["k"])
            writer.add_scalar(f"ensemble/val_loss ({views})", c["val_loss"], c["k"])
        e, k = result["ensemble"], result["choice"]["k"]
        writer.add_scalar("ensemble/test_acc (chosen on validation)", e["test_acc"], k)
        writer.add_text("ensemble/table", code_block(format_table(result)))  # its columns in a fixed-width font


def format_table(result: dict[str, Any]) -> str:
    """Every member and the chosen ensemble, validation and test, as the command prints them."""
    def pct(v: Any) -> str:
        return f"{100 * v:6.2f}%" if is_number(v) else "     - "

    def num(v: Any) -> str:
        return f"{v:7.4f}" if is_number(v) else "     - "

    directory = Path(result["directory"])
    lines = ["rank  val acc  val loss  test acc  test loss  run"]
    for i, m in enumerate(result["members"], start=1):  # each run by its name in the directory (a lone run by its path)
        lines.append(f"{i:4d}  {pct(m['val_acc'])}  {num(m['val_loss'])}  {pct(m['test_acc'])}  {num(m['test_loss'])}"
                     f"    {_relative(Path(m['run_dir']), directory)}")
    c, e = result["choice"], result["ensemble"]
    lines.append(f"ens.  {pct(e['val_acc'])}  {num(e['val_loss'])}  {pct(e['test_acc'])}  {num(e['test_loss'])}"
                 f"    top {c['k']} by {c.get('ranked_by', 'validation accuracy')}, test-time views: {c['tta']}")
    tested = ("an epoch's weights have none of their own: training tested only its best model"
              if c.get("ranked_by", "").startswith("epoch") else "its test numbers as training measured them")
    lines.append(f"(ranked rows: each member alone without test-time views, {tested}; ens.: the ensemble chosen on "
                 f"validation, with its views, {c['tta']}, on both splits)")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m expt.evaluate",
        description="Average the predictions of a sweep's or a multirun's best runs (or one run's views) and report "
                    "the choice made on validation once on the test split.")
    parser.add_argument("directory", type=Path, help="a run directory, or a sweep / multirun directory of runs")
    parser.add_argument("--top", type=int, default=None,
                        help="average the K best runs by validation accuracy (default: choose K on validation)")
    parser.add_argument("--tta", nargs="+", default=["none"], metavar="VIEWS",
                        help=f"test-time views to consider, chosen on validation: {', '.join(TTA_VIEWS)} "
                             "(shift: the image and its 1-pixel shifts; flip: and its mirror, refused on "
                             f"{' and '.join(NOT_FLIP_INVARIANT)}, whose classes a mirror changes)")
    parser.add_argument("--snapshots", action="store_true",
                        help="average the last epochs' weights of one run (kept with trainer.snapshots=K) "
                             "instead of runs; K is chosen on validation unless --top is given")
    parser.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N (default: cpu)")
    args = parser.parse_args(argv)
    try:
        device = choose_device(args.device, torch.cuda.device_count(), key="--device")  # as training checks it
        result = evaluate_ensembles(args.directory, args.top, args.tta, device, args.snapshots, progress=True)
    except ConfigError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    for item in result["left_out"]:
        print(f"left out {item['run_dir']}: {item['reason']}")
    print(format_table(result))
    e = result["ensemble"]
    if result["repeated"]:
        print(f"This choice was already evaluated on the test split ({len(result['test_evaluations'])} evaluation(s) "
              f"in {EVALUATION_FILE}); the result is the same. Choose on validation, not on the test split.")
    elif len(result["test_evaluations"]) > 1:
        print(f"Note: the test split of this directory has now been evaluated for {len(result['test_evaluations'])} "
              "different choices; the first is the unbiased one, later ones risk tuning on the test split.")
    failed = {item["path"] for item in result["not_written"]}
    written = [f"{what}{path}" for what, path in (("Written to ", Path(args.directory) / EVALUATION_FILE),
                                                   ("TensorBoard: ", Path(args.directory) / EVALUATION_DIR))
               if str(path) not in failed]
    print(f"ensemble test accuracy {100 * e['test_acc']:.2f}% (chosen on validation: {100 * e['val_acc']:.2f}%)."
          + (f" {'; '.join(written)}" if written else ""))
    for item in result["not_written"]:  # the evaluation stands: say what was not kept, exit 0
        print(f"Warning: could not write {item['path']} ({item['reason']}); the result above is not saved there.",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    try:
        code = main()
    except KeyboardInterrupt:  # Ctrl-C: evaluation.json is replaced whole or not at all; no traceback
        print("Interrupted.", file=sys.stderr)
        code = 130
    raise SystemExit(code)
