"""Checkpoints: plain dicts of tensors and numbers, written atomically, loadable with weights_only=True."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Any

import torch

from expt.errors import ConfigError, StorageError, not_written, os_error_in
from expt.files import replacing
from expt.values import is_integer

LAST, BEST = "last.pt", "best.pt"
DIR = "checkpoints"  # in a run directory: LAST, BEST and the snapshots


SNAPSHOT_PREFIX = "epoch_"


def snapshot_name(epoch: int) -> str:
    """trainer.snapshots' file for the weights after ``epoch``: a model file like best.pt."""
    return f"{SNAPSHOT_PREFIX}{epoch:04d}.pt"


def snapshots(directory: Path) -> dict[int, Path]:
    """The snapshot files in a checkpoints ``directory``, by epoch, newest first."""
    found = {}
    for path in directory.glob(f"{SNAPSHOT_PREFIX}*.pt"):
        number = path.stem[len(SNAPSHOT_PREFIX):]
        if number.isdigit():
            found[int(number)] = path
    return dict(sorted(found.items(), reverse=True))


def save(state: dict[str, Any], path: Path) -> None:
    """Write to a temporary file beside ``path``, then rename: a crash never leaves half a checkpoint, and a file
    that cannot be written (a full disk) leaves the previous one whole and raises :class:`StorageError`."""
    with _replacing(path) as f:
        torch.save(state, f)


def copy(source: Path, target: Path) -> None:
    """Copy a checkpoint file as :func:`save` writes one (cheaper than serializing the same state twice)."""
    with open(source, "rb") as original, _replacing(target) as f:
        shutil.copyfileobj(original, f)


@contextlib.contextmanager
def _replacing(path: Path):
    """:func:`expt.files.replacing`, a failure the system reports becoming a :class:`StorageError`."""
    with _storage(path), replacing(path) as f:
        yield f


@contextlib.contextmanager
def _storage(path: Path):
    """A failure to write ``path`` that the system reports (torch's writer as a RuntimeError raised while handling
    it) becomes one :class:`StorageError` naming the file and the reason."""
    try:
        yield
    except StorageError:
        raise
    except Exception as exc:
        cause = os_error_in(exc)
        if cause is None:
            raise
        raise not_written(path, cause) from exc


def load(path: str | Path, map_location: str | torch.device = "cpu", key: str = "trainer.resume") -> dict[str, Any]:
    """A checkpoint's dict, read with ``weights_only=True``; a file that is not one is a ConfigError naming ``key``."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError (not a zip, truncated), OSError, EOFError ...
        if "Weights only load failed" in str(exc):  # torch's advice then is to unpickle it whole: not from us
            why = "it holds Python objects besides tensors and plain values, which expt does not unpickle"
        else:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            why = f"{type(exc).__name__}: {first if len(first) <= 200 else first[:200].rsplit(' ', 1)[0] + ' ...'}"
        raise ConfigError(
            f"{key}={str(path)!r} is not a readable checkpoint ({why}): give a {LAST} or {BEST} written by expt, "
            "whole (a file cut short by a full disk or a copy still in progress cannot be read)."
        ) from None
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise ConfigError(
            f"{key}={str(path)!r} is a PyTorch file but not an expt checkpoint (no model weights and config): "
            f"give a {LAST} or {BEST} written by expt."
        )
    return state


def load_weights(model: torch.nn.Module, weights: dict[str, Any], what: str) -> None:
    """``model.load_state_dict(weights)``; weights of another model (its code or config changed since they were
    saved) are a ConfigError that says ``what`` they are and the first key or shape that differs."""
    try:
        model.load_state_dict(weights)
    except (RuntimeError, KeyError) as exc:
        lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
        if len(lines) > 1 and lines[0].startswith("Error(s) in loading state_dict"):
            lines = lines[1:]  # torch's header; the next lines say what differs
        reason = (lines or [type(exc).__name__])[0][:300]
        raise ConfigError(
            f"{what} does not fit the {type(model).__name__} its config builds ({reason}): was the model's code "
            "or its config changed since it was trained?"
        ) from None


# What a resumed run may change: how long it trains (the schedule is rebuilt for the new length),
# where it runs and how it reports. Everything else made the training state and must match it.
RESUMABLE = (
    "trainer.epochs", "trainer.resume", "trainer.device", "trainer.log_every", "trainer.checkpoint_interval",
    "trainer.divergence_factor", "trainer.compile", "trainer.channels_last", "trainer.progress_after",
    "trainer.snapshots", "schedule", "dashboard", "sanity",
    "mode", "data.root", "data.download",  # where a standard dataset's files lie, not which data they are
)


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out if out or not prefix else {prefix[:-1]: {}}
    return {prefix[:-1]: node}


def config_changes(stored: dict[str, Any], current: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (stored value, current value)}`` for every key whose value differs (absent: ``<unset>``)."""
    a, b = _flat(stored), _flat(current)
    unset = "<unset>"
    changes = {k: (a.get(k, unset), b.get(k, unset)) for k in sorted(a.keys() | b.keys())
               if a.get(k, unset) != b.get(k, unset)}
    # a key added to expt since the checkpoint was written, at its null default, changes nothing
    return {k: (old, new) for k, (old, new) in changes.items()
            if not ((old is None and new == unset) or (old == unset and new is None))}


def written_by_expt(path: str | Path) -> bool:
    """Whether ``path`` is a file expt wrote as a checkpoint (a dict with model weights and a config), read without
    loading its tensors (memory-mapped)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not a file torch maps (expt writes only ones it does), unreadable, not weights
        return False
    return isinstance(state, dict) and "model" in state and "config" in state


def check_resumable(stored_yaml: str, current: dict[str, Any], path: Path, epoch: Any) -> None:
    """Raise a ConfigError when the run's config differs from the checkpoint's in a key that may not change,
    or asks for fewer epochs (``trainer.epochs``) than the checkpoint has already trained.

    ``epoch`` is the checkpoint's epoch (its ``epoch`` entry; not an integer where it has none); ``path`` is where
    it was read, for the messages.
    """
    import yaml

    epochs = (current.get("trainer") or {}).get("epochs")
    if is_integer(epochs):
        done = int(epoch) if is_integer(epoch) else None
        if done is not None and epochs < done:
            raise ConfigError(
                f"trainer.epochs={epochs} is fewer than the {done} epochs trainer.resume={str(path)!r} has already "
                f"trained: a resumed run trains on to trainer.epochs, so give trainer.epochs={done} to finish it "
                f"where it stands (its metrics again) or more to train further; the run's best model so far is in "
                f"checkpoints/{BEST} (python -m expt.evaluate)."
            )
    stored = yaml.safe_load(stored_yaml) or {}
    changes = config_changes(stored, current)
    fixed = {k: v for k, v in changes.items() if not any(k == r or k.startswith(r + ".") for r in RESUMABLE)}
    if fixed:
        listed = "; ".join(f"{k}: {old!r} in the checkpoint, {new!r} now" for k, (old, new) in fixed.items())
        raise ConfigError(
            f"trainer.resume={str(path)!r} was trained with another config: {listed}. "
            "A resumed run may change only trainer.epochs, the schedule, the device, how often it logs and "
            "checkpoints, the dashboards and the sanity settings, trainer.divergence_factor, compile, "
            "channels_last, progress_after and snapshots, and where the data files lie (data.root, data.download); "
            "the data, model, activation, preprocessing, init, regularization, optimizer, batch size, seed, dtype "
            "and amp made the saved state and must match it (start a new run to change them)."
        )


def check_same_data(state: dict[str, Any], fingerprint: dict[str, Any], preprocess: dict[str, Any], path: Path) -> None:
    """Raise a ConfigError when the run's data is not the data the checkpoint trained on, though its config is the
    same: a data file changed in place (other samples, other labels, other images). ``fingerprint``:
    :meth:`expt.data.Splits.fingerprint` of this run's data; ``preprocess``: its preprocessor's statistics, fitted on
    its training images. A checkpoint written before fingerprints were kept is not checked."""
    saved = state.get("data")
    if saved is None:
        return
    why = None
    if saved.get("samples") != fingerprint["samples"]:
        why = (f"it trained on {' / '.join(map(str, saved['samples']))} training / validation / test samples and "
               f"this run's data has {' / '.join(map(str, fingerprint['samples']))}")
    elif saved.get("labels") != fingerprint["labels"]:
        why = "its data had as many samples, with other labels (or in another order)"
    elif _other_statistics(state.get("preprocess") or {}, preprocess):
        why = "its training images had other statistics (the preprocessing fitted on them differs)"
    if why is not None:
        raise ConfigError(f"trainer.resume={str(path)!r} was trained on other data than this run's, with the same "
                          f"config: {why}. The data changed since (a file replaced or edited); restore it to resume, "
                          "or start a new run.")


# statistics of the images themselves; a whitening's projection is left out: its eigenvectors' signs, in
# eigenspaces of equal variance, may come out otherwise on another device for the same images
STATISTICS = ("mean", "std", "pixel_range")


def _other_statistics(before: dict[str, Any], now: dict[str, Any]) -> bool:
    """Whether the preprocessing fitted on the training images differs from the checkpoint's in a statistic of the
    images: its shape (other images) or its values beyond float noise across devices."""
    for key in STATISTICS:
        a, b = before.get(key), now.get(key)
        if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor) or not a.numel() or not b.numel():
            continue  # not a statistic of this preprocessing, or not fitted when the checkpoint was written
        if a.shape != b.shape or not torch.allclose(a.double().cpu(), b.double().cpu(), rtol=1e-4, atol=1e-6):
            return True
    return False


def find(path: Path, name: str) -> Path | None:
    """The checkpoint ``path`` names: itself when it is a file, else ``name`` in its checkpoints folder, or in
    it; None when there is none."""
    return next((c for c in (path, path / DIR / name, path / name) if c.is_file()), None)


def resolve(resume: str) -> Path:
    """A run directory (its checkpoints/last.pt) or a checkpoint file."""
    from expt.config import user_path

    found = find(user_path(resume), LAST)
    if found is not None:
        return found
    raise ConfigError(
        f"trainer.resume={resume!r} is not a checkpoint: expected a .pt file or a run directory "
        f"holding checkpoints/{LAST}."
    )


def rng_state(generator: torch.Generator, device: torch.device, augment: torch.Generator | None = None) -> dict[str, Any]:
    """The random streams training draws from: the batch order, augmentation, and torch's own (dropout), CPU and GPU."""
    state = {"batches": generator.get_state(), "torch": torch.get_rng_state()}
    if augment is not None:
        state["augment"] = augment.get_state()
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: dict[str, Any], generator: torch.Generator, device: torch.device,
                augment: torch.Generator | None = None) -> None:
    """Set the streams :func:`rng_state` saved (its tensors must be on the CPU, as :func:`load` leaves them)."""
    generator.set_state(state["batches"])
    if augment is not None and "augment" in state:
        augment.set_state(state["augment"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
