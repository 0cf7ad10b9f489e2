"""Datasets as tensors: load raw arrays, split train / val / test once, deterministically.

Every loader returns raw numpy arrays with pixels in [0, 1] (or uint8, scaled here);
:func:`load` splits them with ``split_seed`` and hands back a :class:`Splits` of
float tensors shaped (N, C, H, W). The data sets expt targets fit in memory, so the
trainer keeps them on the device and slices minibatches out of them.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.util
import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from omegaconf import DictConfig

from expt.errors import ConfigError, nearest, not_allowed, reason
from expt.config import MAX_CLASSES, user_path
from expt.instantiate import call, check_params, locate, parameters, to_plain
from expt.values import is_integer, is_number


log = logging.getLogger("expt")

SPLIT_KEYS = ("val_size", "test_size", "subset", "split_seed")


@dataclass(frozen=True)
class Splits:
    """Train / val / test tensors; x in [0, 1] before preprocessing, y as int64 class indices."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def fingerprint(self) -> dict[str, Any]:
        """What tells this data from other data, for a resumed run and an ensemble to check: the splits' sizes, a
        digest of their labels in order (the images are checked through the preprocessing statistics fitted on
        them), and one digest a split (``split_labels``: train, val, test), so that runs which trained on subsets of
        one training split can be told to share its validation and test splits."""
        labels = [y.detach().to("cpu", torch.int64).contiguous().numpy().tobytes()
                  for y in (self.y_train, self.y_val, self.y_test)]
        return {"samples": [len(self.y_train), len(self.y_val), len(self.y_test)],
                "labels": hashlib.sha256(b"".join(labels)).hexdigest()[:16],
                "split_labels": [hashlib.sha256(y).hexdigest()[:16] for y in labels]}

    def map_x(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "Splits":
        return replace(self, x_train=fn(self.x_train), x_val=fn(self.x_val), x_test=fn(self.x_test))

    def to(self, device: torch.device, dtype: torch.dtype) -> "Splits":
        moved = {
            name: value.to(device=device, dtype=dtype if name.startswith("x") else None)
            for name, value in vars(self).items()
            if isinstance(value, torch.Tensor)
        }
        return replace(self, **moved)


# ----------------------------------------------------------------------------- loaders
@functools.lru_cache(maxsize=1)
def _digits_table() -> np.ndarray:
    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        raise ConfigError(
            "data=digits needs scikit-learn, which ships the digits: pip install scikit-learn."
        )
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.float32)
    table.setflags(write=False)  # shared by every call: the arrays built from it are new ones
    return table


def digits() -> dict[str, Any]:
    """scikit-learn's 1,797 8x8 digits (pixel values 0..16), read from the file scikit-learn ships.

    The CSV is read directly so that starting a run does not import scikit-learn and SciPy, and
    once per process, so the trials of a sweep in one process do not parse it again.
    """
    table = _digits_table()
    x = table[:, :-1].reshape(-1, 1, 8, 8) / 16.0
    return {"x_train": x, "y_train": table[:, -1].astype(np.int64), "num_classes": 10}


def synthetic(
    shape: list[int] = (3, 16, 16), num_classes: int = 10, num_samples: int = 2000, noise: float = 1.0, seed: int = 0
) -> dict[str, Any]:
    """One random prototype image per class (values ~ N(0, 1)) plus N(0, noise^2) noise, squashed to [0, 1]."""
    if len(shape) != 3 or min(shape) < 1:
        raise ConfigError(f"data.shape={list(shape)} is not allowed: [channels, height, width], each >= 1.")
    if num_classes < 2:
        raise ConfigError(f"data.num_classes={num_classes} is not allowed: at least 2 classes.")
    if not is_integer(num_samples) or num_samples < 1:
        raise not_allowed("data.num_samples", num_samples, "an integer >= 1 (enough to leave training, validation "
                          "and test samples)")
    if not is_number(noise) or not 0 <= noise < math.inf:
        raise not_allowed("data.noise", noise, "the noise's standard deviation, a number >= 0 (0: every image its "
                          "class's prototype)")
    rng = np.random.default_rng(seed)
    prototypes = rng.standard_normal((num_classes, *shape)).astype(np.float32)
    y = rng.integers(0, num_classes, size=num_samples)
    x = prototypes[y] + noise * rng.standard_normal((num_samples, *shape)).astype(np.float32)
    x = 1.0 / (1.0 + np.exp(-x))
    return {"x_train": x.astype(np.float32), "y_train": y.astype(np.int64), "num_classes": num_classes}


NPZ_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip archive (the second: an empty one)
NPY_MAGIC = b"\x93NUMPY"


def npz(path: str) -> dict[str, Any]:
    """A user's ``.npz`` with x_train, y_train and optionally x_val, y_val, x_test, y_test.

    Returns every array the file holds; :func:`check_raw` (run on every loader's output)
    checks them, puts the images in (N, C, H, W) and works out the number of classes.
    """
    file = user_path(path)
    where = f"data.path={path!r}"
    if not file.is_file():
        raise ConfigError(f"{where} is not a file: point it at an .npz with x_train and y_train.")
    fix = "save one with np.savez(path, x_train=..., y_train=...) (optionally x_val, y_val, x_test, y_test too)"
    try:
        with open(file, "rb") as f:
            head = f.read(6)
    except OSError as exc:  # not allowed to read it, or the disk fails
        raise ConfigError(f"{where} cannot be read ({reason(exc)}).") from None
    if head.startswith(NPY_MAGIC):
        raise ConfigError(f"{where} is a single .npy array, not an .npz archive of named arrays: {fix}.")
    if not head.startswith(NPZ_MAGIC):
        raise ConfigError(
            f"{where} is not an .npz archive (it starts with {head!r}, not a zip archive's b'PK'): {fix}."
        )
    arrays: dict[str, Any] = {}
    try:
        with np.load(file) as archive:
            for key in archive.files:
                try:
                    arrays[key] = archive[key]
                except ValueError as exc:
                    if "allow_pickle" not in str(exc):
                        raise
                    raise ConfigError(
                        f"{where}: {key} is stored as pickled Python objects, which expt does not load "
                        f"(an array of mixed or ragged values); {fix}, each a numeric array."
                    ) from None
    except ConfigError:
        raise
    except Exception as exc:  # a damaged or truncated zip
        raise ConfigError(f"{where} cannot be read as an .npz archive ({type(exc).__name__}: {reason(exc)}): {fix}.") from None
    _check_array_names(arrays, where)
    return arrays


# other spellings of the split names expt reads, which can only mean them
SPLIT_ALIASES = {f"{kind}_{alias}": f"{kind}_{name}" for kind in "xy"
                 for alias, name in (("valid", "val"), ("validation", "val"), ("training", "train"))}


def _check_array_names(arrays: dict[str, Any], where: str) -> None:
    """Refuse an array named as one expt reads in other letters (``X_test``) or words (``x_valid``): the split it
    holds would be carved out of the training images instead, without a word. Any other name (``classes``,
    ``idx_train``) is warned of, with the nearest name expt reads."""
    known = [f"{kind}_{name}" for name in SPLITS for kind in "xy"] + ["num_classes"]
    reads = f"expt reads {', '.join(known[:-1])} (and num_classes)"
    for name in sorted(set(arrays) - set(known)):
        meant = SPLIT_ALIASES.get(name.lower(), name.lower())
        if meant in known:
            raise ConfigError(f"{where} holds an array named {name!r}, which is not read (did you mean {meant}?): "
                              f"{reads}; save it under that name.")
        near = nearest(name.lower(), known, 0.75)
        log.warning("%s holds an array named %r, which is not read%s (%s).", where, name,
                    f" (if it is {near}, save it under that name)" if near else "", reads)


CHANNELS = (1, 2, 3, 4)  # channel counts told apart from image sides: (N, C, H, W) when dim 1 is one, else (N, H, W, C)


def as_nchw(x: np.ndarray) -> np.ndarray:
    """(N, H, W) -> (N, 1, H, W); (N, H, W, C) with C in {1, 2, 3, 4} -> (N, C, H, W); (N, D) -> (N, 1, 1, D).

    uint8 pixels are scaled to [0, 1]; other integers become float32; float arrays keep their dtype.
    """
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 255.0
    elif not np.issubdtype(x.dtype, np.floating) or x.dtype == np.float16:
        x = x.astype(np.float32)
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4 and x.shape[1] not in CHANNELS and x.shape[3] in CHANNELS:
        return x.transpose(0, 3, 1, 2)
    if x.ndim == 2:
        return x[:, None, None, :]
    return x


# ----------------------------------------------------------------------------- checking
SPLITS = ("train", "val", "test")


def _examples(values: np.ndarray, limit: int = 3) -> str:
    shown = [repr(v.item()) if isinstance(v, np.generic) else repr(v) for v in values[:limit]]
    return ", ".join(shown) + (", ..." if len(values) > limit else "")


def _labels(y: Any, name: str, where: str) -> np.ndarray:
    """``y`` as int64 class indices (>= 0); integral floats such as 3.0 are accepted."""
    allowed = "labels must be integers from 0 to C-1 for C classes"
    y = np.asarray(y)
    if y.ndim != 1:
        raise ConfigError(
            f"{where}: {name} has shape {y.shape}; {allowed}, one per sample in a 1-D array of shape (N,)"
            + (" (not one-hot rows: use y.argmax(axis=1))." if y.ndim == 2 and y.shape[1] > 1 else ".")
        )
    if y.dtype == np.bool_ or not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
        kind = "strings" if y.dtype.kind in "US" else f"values of dtype {y.dtype}"
        hint = " (map each class name to an index, e.g. np.unique(y, return_inverse=True)[1])" if y.dtype.kind in "US" else ""
        raise ConfigError(f"{where}: {name} holds {kind} such as {_examples(np.unique(y))}; {allowed}{hint}.")
    if np.issubdtype(y.dtype, np.floating):
        bad = ~np.isfinite(y)
        bad[~bad] = y[~bad] != np.round(y[~bad])
        if bad.any():
            raise ConfigError(
                f"{where}: {name} holds non-integer labels such as {_examples(np.unique(y[bad]))} "
                f"({int(bad.sum())} of {len(y)}); {allowed} (whole numbers stored as floats, like 3.0, are accepted)."
            )
    y = y.astype(np.int64)
    negative = y < 0
    if negative.any():
        raise ConfigError(
            f"{where}: {name} holds {_examples(np.unique(y[negative]))} ({int(negative.sum())} of {len(y)} labels); "
            f"{allowed}."
        )
    return y


def check_images(x: Any, name: str, where: str) -> np.ndarray:
    """``x`` as a finite float array shaped (N, C, H, W)."""
    x = np.asarray(x)
    if not x.dtype.isnative:  # big-endian pixels (a file written on another machine): torch takes native order only
        x = x.astype(x.dtype.newbyteorder("="))
    if x.dtype == np.bool_ or not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        kind = "strings" if x.dtype.kind in "US" else f"values of dtype {x.dtype}"
        raise ConfigError(f"{where}: {name} holds {kind}; images must be numeric arrays (uint8 or float pixels).")
    if x.ndim not in (2, 3, 4):
        raise ConfigError(f"{where}: {name} has shape {x.shape}: expected (N, H, W), (N, C, H, W) or (N, H, W, C).")
    if x.ndim == 4 and x.shape[1] not in CHANNELS and x.shape[3] not in CHANNELS:
        log.warning("%s: %s has shape %s, read as (N, C, H, W) with %d channels of %dx%d: neither its second nor its "
                    "last dimension is a channel count of 1 to 4. If its channels are last, give it as (N, C, H, W) "
                    "(x.transpose(0, 3, 1, 2)).", where, name, x.shape, x.shape[1], x.shape[2], x.shape[3])
    x = as_nchw(x)
    if not np.isfinite(x.sum(dtype=np.float64)):  # one pass; counting the bad samples only when there are some
        bad = int((~np.isfinite(x.reshape(len(x), -1))).any(axis=1).sum())
        if bad:
            raise ConfigError(
                f"{where}: {name} holds NaN or Inf pixels in {bad} of {len(x)} samples; "
                "pixels must be finite numbers (drop or repair those samples)."
            )
    return x


def check_raw(raw: Any, where: str, num_classes: Optional[int] = None) -> dict[str, Any]:
    """Check a loader's arrays and put them in the form :func:`split` takes; raise ConfigError naming ``where``.

    Every loader's output passes through here: ``x_train`` and ``y_train`` (and optionally ``x_val``,
    ``y_val``, ``x_test``, ``y_test``) as arrays, and optionally ``num_classes``. Images must be
    numeric and finite, shaped (N, H, W), (N, C, H, W) or (N, H, W, C) (uint8 pixels are scaled to
    [0, 1]); labels integers from 0 to C-1, one per image; the training labels at least two classes.

    C is ``num_classes`` (``data.num_classes``) when given, else the loader's ``num_classes``, else
    the largest label + 1. An inferred C larger than the number of labelled samples (or than
    ``expt.config.MAX_CLASSES``) is refused: such labels are ids, not class indices.
    """
    out: dict[str, Any] = _checked_splits(raw, where)
    # who says how many classes there are: data.num_classes, the loader, or nobody (the largest label + 1)
    given = num_classes if num_classes is not None else raw.get("num_classes")
    key = None if given is None else "data.num_classes" if num_classes is not None else "num_classes"
    out["num_classes"] = _inferred_classes(out, where) if key is None else _given_classes(given, key, out, where)
    classes = np.unique(out["y_train"])
    if len(classes) < 2:
        raise ConfigError(
            f"{where}: every y_train label is {int(classes[0])}, a single class; a classifier needs labels of "
            "at least 2 classes (integers from 0 to C-1)."
        )
    out["num_classes_from"] = key
    return out


def _checked_splits(raw: Any, where: str) -> dict[str, np.ndarray]:
    """The splits a loader returned (x_train, y_train and any other split given), each image and label array
    checked, with one label an image and the same image shape in every split."""
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{where} returned a {type(raw).__name__}: a data loader returns a dict with x_train and y_train "
            "(optionally x_val, y_val, x_test, y_test and num_classes)."
        )
    missing = [k for k in ("x_train", "y_train") if k not in raw]
    if missing:
        raise ConfigError(
            f"{where} lacks {' and '.join(missing)}; it holds {', '.join(map(str, raw)) or 'nothing'} "
            "(expected x_train, y_train and optionally x_val, y_val, x_test, y_test)."
        )
    out: dict[str, np.ndarray] = {}
    for split_name in SPLITS:
        xk, yk = f"x_{split_name}", f"y_{split_name}"
        if (xk in raw) != (yk in raw):
            have, lack = (xk, yk) if xk in raw else (yk, xk)
            raise ConfigError(f"{where} has {have} but no {lack}: give both or neither.")
        if xk not in raw:
            continue
        x, y = check_images(raw[xk], xk, where), _labels(raw[yk], yk, where)
        if len(x) != len(y):
            raise ConfigError(
                f"{where}: {xk} holds {len(x)} samples but {yk} {len(y)} labels; each image needs exactly one label."
            )
        if len(x) == 0:
            raise ConfigError(f"{where}: {xk} holds no samples; each split given needs at least one.")
        if split_name != "train" and x.shape[1:] != out["x_train"].shape[1:]:
            raise ConfigError(
                f"{where}: {xk} has images of shape {x.shape[1:]} but x_train {out['x_train'].shape[1:]}; "
                "every split must hold images of the same shape."
            )
        out[xk], out[yk] = x, y
    _check_scales(out, raw, where)
    _check_distributions(out, where)
    return out


SCALE_RATIO = 20  # splits whose largest pixels differ more than this are on different scales (255 against 1)


def _check_scales(splits: dict[str, np.ndarray], raw: dict[str, Any], where: str) -> None:
    """Refuse splits whose pixels are on different scales, which trains on one and scores garbage on another:
    uint8 pixels are scaled to [0, 1] and float ones kept, so float 0-255 training images beside uint8 test
    images give a test accuracy near chance with no error."""
    peaks = {k: float(max(x.max(), -x.min())) for k, x in splits.items() if k.startswith("x_")}
    train = peaks["x_train"]
    for key, peak in peaks.items():
        if key == "x_train" or not peak or not train or max(peak, train) / min(peak, train) <= SCALE_RATIO:
            continue
        raise ConfigError(
            f"{where}: {key}'s pixels reach {peak:.4g} but x_train's {train:.4g} ({key} is "
            f"{np.asarray(raw[key]).dtype}, x_train {np.asarray(raw['x_train']).dtype}; uint8 pixels are scaled "
            "to 0-1, other pixels kept as they are): every split must hold its pixels on one scale, so store them "
            "with one dtype (or divide float pixels in 0-255 by 255)."
        )


DISTRIBUTION_GAP = 0.3  # pixel distributions further apart than this (Kolmogorov-Smirnov) are warned of
GAP_SAMPLE = 20_000  # pixel values drawn from each split to measure it (the distance's noise: about 0.01)


def _pixel_sample(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Up to :data:`GAP_SAMPLE` pixel values of ``x``, sorted: drawn from up to 500 of its images."""
    images = x[np.sort(rng.choice(len(x), size=min(len(x), 500), replace=False))].reshape(-1)
    return np.sort(images[rng.integers(0, images.size, size=min(images.size, GAP_SAMPLE))].astype(np.float64))


def distribution_gap(a: np.ndarray, b: np.ndarray) -> float:
    """The Kolmogorov-Smirnov distance between two sorted samples: the largest gap between their cumulative
    distributions (0: alike; 1: disjoint)."""
    values = np.concatenate([a, b])
    return float(np.max(np.abs(np.searchsorted(a, values, side="right") / len(a)
                               - np.searchsorted(b, values, side="right") / len(b))))


def _check_distributions(splits: dict[str, np.ndarray], where: str) -> None:
    """Warn of a split whose pixel values are distributed unlike x_train's: splits prepared differently (x_train
    standardized or scaled to [-1, 1], x_test left in [0, 1]) are on one scale, so :func:`_check_scales` lets them
    pass, and a model trained on one scores near chance on the other (81.8% test became 12.6%). The splits of one
    dataset differ by a few hundredths; a user's own test set may differ more, so this warns, and does not refuse."""
    others = [k for k in splits if k.startswith("x_") and k != "x_train"]
    if not others:  # val and test are carved from x_train later
        return
    rng = np.random.default_rng(0)
    train = _pixel_sample(splits["x_train"], rng)
    for key in others:
        other = _pixel_sample(splits[key], rng)
        gap = distribution_gap(train, other)
        if gap > DISTRIBUTION_GAP:
            log.warning(
                "%s: %s's pixel values are distributed unlike x_train's (their cumulative distributions differ by "
                "up to %.0f%% of the pixels; x_train: mean %.3g, from %.3g to %.3g; %s: mean %.3g, from %.3g to %.3g). "
                "Were the two prepared differently (one standardized or scaled, the other not)? A model trained on "
                "one scores poorly on the other: store the splits as they come, and let preprocessing= prepare them "
                "all with x_train's statistics.", where, key, 100 * gap, train.mean(), train[0], train[-1], key,
                other.mean(), other[0], other[-1])


def _inferred_classes(splits: dict[str, np.ndarray], where: str) -> int:
    """The number of classes when nobody gives it: the largest label + 1, refused where the labels look like ids
    (more classes than labelled samples, or than ``MAX_CLASSES``)."""
    labels = [splits[f"y_{s}"] for s in SPLITS if f"y_{s}" in splits]
    largest = max(int(y.max()) for y in labels)
    num_classes = largest + 1
    samples = sum(len(y) for y in labels)
    if num_classes > min(samples, MAX_CLASSES):
        distinct = len(np.unique(np.concatenate(labels)))
        raise ConfigError(
            f"{where}: the largest label is {largest}, so the classes would be taken as {num_classes:,} "
            f"(largest + 1), more than the {samples} labelled samples, for {distinct} distinct labels; "
            f"set data.num_classes to the number of classes meant (from 2 to {MAX_CLASSES:,}; labels from 0 "
            f"to num_classes-1), or map the labels to 0..{distinct - 1} with np.unique(y, return_inverse=True)[1]."
        )
    return num_classes


def _given_classes(num_classes: Any, key: str, splits: dict[str, np.ndarray], where: str) -> int:
    """The number of classes ``key`` gives (data.num_classes, or the loader's num_classes): an integer >= 2 that
    every split's labels are below."""
    value = num_classes.item() if isinstance(num_classes, np.ndarray) and num_classes.size == 1 else num_classes
    if not is_integer(value) or value < 2:
        raise ConfigError(f"{where} gives num_classes={num_classes!r}; it must be an integer >= 2.")
    num_classes = int(value)
    for s in SPLITS:
        y = splits.get(f"y_{s}")
        if y is not None and int(y.max()) >= num_classes:
            over = np.unique(y[y >= num_classes])
            carved = [n for n, k in (("validation", "y_val"), ("test", "y_test")) if k not in splits]
            before = (f" (before the {' and '.join(carved)} split{'s are' if len(carved) > 1 else ' is'} carved out "
                      "of it)") if s == "train" and carved else ""
            raise ConfigError(
                f"{where}: y_{s}{before} "
                f"holds {_examples(over)} ({int((y >= num_classes).sum())} of {len(y)} labels) "
                f"but {key}={num_classes}; labels must be integers from 0 to {num_classes - 1}"
                + (" (raise data.num_classes, or leave it null to take the largest label + 1)." if key.startswith("data")
                   else ".")
            )
    return num_classes


def _ranges(values: Sequence[int], limit: int = 4) -> str:
    """Sorted integers as runs: [3, 4, 5, 9] -> '3-5, 9'."""
    runs: list[list[int]] = []
    for v in sorted(values):
        if runs and v == runs[-1][1] + 1:
            runs[-1][1] = v
        else:
            runs.append([v, v])
    shown = [f"{a}" if a == b else f"{a}-{b}" for a, b in runs[:limit]]
    return ", ".join(shown) + (", ..." if len(runs) > limit else "")


MIN_VAL_SAMPLES = 20  # below this the validation accuracy moves in steps of 5% or more


def label_warnings(splits: "Splits", where: str, declared: Optional[str] = None) -> list[str]:
    """Warnings (each one paragraph, also logged) about labels that train a different model than meant.

    A class of [0, C) that no training sample holds (C inferred from the largest label, or declared
    as ``declared`` names: data.num_classes or the loader's num_classes), validation or test labels the
    training split lacks, and a
    validation split too small to choose the best epoch with.
    """
    c = splits.num_classes
    train = set(np.unique(splits.y_train.numpy()).tolist())
    found = []
    missing = sorted(set(range(c)) - train)
    if missing:
        if declared:
            meant = f"the {declared}={c} classes"
        else:
            meant = (f"the {c} classes that labels from 0 to {c - 1} imply (data.num_classes=null takes the "
                     "largest label + 1)")
        found.append(
            f"{where}: y_train holds {len(train)} of {meant}; no training sample holds {_ranges(missing)} "
            f"({len(missing)} {'class' if len(missing) == 1 else 'classes'}), yet the model gets {c} outputs. "
            + ("If fewer classes are meant, map the labels to 0..K-1 (np.unique(y, return_inverse=True)[1]) "
               "or set data.num_classes." if not declared else "Those classes cannot be learned.")
        )
    for name, y in (("y_val", splits.y_val), ("y_test", splits.y_test)):
        labels = y.numpy()
        unseen = np.isin(labels, list(train), invert=True)
        if unseen.any():
            found.append(
                f"{where}: {name} holds labels the training split lacks: {_ranges(np.unique(labels[unseen]).tolist())} "
                f"({int(unseen.sum())} of {len(labels)} samples); the model cannot learn them, so every one of "
                "them counts as an error."
            )
    if len(splits.y_val) < MIN_VAL_SAMPLES:
        found.append(
            f"{where}: the validation split holds {len(splits.y_val)} samples, so its accuracy moves in steps of "
            f"{100 / len(splits.y_val):.0f}%: too coarse to choose the best epoch or compare runs; give "
            f"data.val_size a larger fraction or count (at least {MIN_VAL_SAMPLES} samples)."
        )
    for message in found:
        log.warning("%s", message)
    return found


def _standard(loader_name: str) -> Callable[..., dict[str, Any]]:
    def load(root: Optional[str] = None, download: bool = True) -> dict[str, Any]:
        from expt import standard_datasets
        from expt.standard_datasets import DatasetNotFound

        try:
            where = None if root is None else str(user_path(root))  # None: searched (expt.standard_datasets)
            raw = getattr(standard_datasets, loader_name)(root=where, download=download)
        except DatasetNotFound as exc:
            raise ConfigError(str(exc)) from None
        for split in ("train", "test"):
            raw[f"x_{split}"] = raw[f"x_{split}"].astype(np.float32) / 255.0
        return raw

    load.__name__ = loader_name.removeprefix("load_")
    return load


LOADERS: dict[str, Callable[..., dict[str, Any]]] = {
    "digits": digits,
    "synthetic": synthetic,
    "npz": npz,
    "mnist": _standard("load_mnist"),
    "fashion_mnist": _standard("load_fashion_mnist"),
    "cifar10": _standard("load_cifar10"),
}


# ----------------------------------------------------------------------------- splitting
def _count(size: float, n: int, key: str) -> int:
    count = int(size) if size >= 1 else int(round(size * n))
    if not 1 <= count < n:
        raise ConfigError(
            f"data.{key}={size} gives {count} of {n} samples: it must leave at least one sample on each side "
            "(a fraction in (0, 1) or a count from 1 to N-1)."
        )
    return count


def split(raw: dict[str, Any], val_size: float, test_size: float, subset: Optional[int], split_seed: int) -> Splits:
    """Carve test (when the data has none) and then val out of the training arrays, then keep ``subset``."""
    rng = np.random.default_rng(split_seed)
    x, y = raw["x_train"], raw["y_train"]

    def carve(x: np.ndarray, y: np.ndarray, size: float, key: str):
        order = rng.permutation(len(x))
        k = _count(size, len(x), key)
        return (x[order[k:]], y[order[k:]]), (x[order[:k]], y[order[:k]])

    test = (raw["x_test"], raw["y_test"]) if "x_test" in raw else None
    if test is None:
        (x, y), test = carve(x, y, test_size, "test_size")
    val = (raw["x_val"], raw["y_val"]) if "x_val" in raw else None
    if val is None:
        (x, y), val = carve(x, y, val_size, "val_size")
    if subset is not None:
        if subset > len(x):
            log.warning("data.subset=%d is more than the %d training samples the split leaves: all %d are used.",
                        subset, len(x), len(x))
        elif "x_val" in raw and "x_test" in raw:  # nothing was carved: the training split is in the file's order,
            keep = np.sort(rng.permutation(len(x))[:subset])  # which may be sorted by class; a random N instead
            x, y = x[keep], y[keep]
        x, y = x[:subset], y[:subset]

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a))

    return Splits(t(x), t(y), t(val[0]), t(val[1]), t(test[0]), t(test[1]), int(raw["num_classes"]))


def _takes(fn: Callable[..., Any], name: str) -> bool:
    """Whether ``fn`` has a parameter ``name`` (False when its signature cannot be read)."""
    return name in (parameters(fn) or {})


def load(cfg: DictConfig) -> Splits:
    """Build the splits a ``data`` config describes (``name`` picks a loader, ``_target_`` names your own)."""
    params = {k: v for k, v in to_plain(cfg).items() if k not in SPLIT_KEYS and k != "name"}
    if "_target_" in params:
        loader = locate(params.pop("_target_"), "data._target_")
        where = f"data._target_={cfg._target_}"
    else:
        name = cfg.get("name")
        if name not in LOADERS:
            raise ConfigError(f"data.name={name!r} is not allowed: one of {', '.join(LOADERS)}, or a _target_.")
        loader = LOADERS[name]
        where = f"data={name}"
    if loader is synthetic:
        params.setdefault("seed", cfg.get("split_seed", 0))
    check_params(loader, params, "data", where, also=(*SPLIT_KEYS, "num_classes"))
    declared = params.pop("num_classes", None)
    if declared is not None and _takes(loader, "num_classes"):
        params["num_classes"] = declared  # a loader that makes its classes (synthetic) is told how many
    raw = call(loader, params, "data", where)
    if loader is npz:
        where = f"data.path={params.get('path')!r}"
    checked = check_raw(raw, where, declared)
    unused = [(name, f"data.{name}_size={cfg[f'{name}_size']}") for name in ("val", "test")
              if cfg.get(f"{name}_size") is not None and f"x_{name}" in checked]
    if unused:  # a size given for a split the data brings: said, as the run would otherwise ignore it quietly
        log.info("%s gives its own %s: %s %s not used (a size applies only to a split carved from x_train).", where,
                 " and ".join(name for name, _ in unused), " and ".join(setting for _, setting in unused),
                 "is" if len(unused) == 1 else "are")
    splits = split(
        checked,
        val_size=cfg.get("val_size", 0.2),
        test_size=cfg.get("test_size", 0.2),
        subset=cfg.get("subset"),
        split_seed=cfg.get("split_seed", 0),
    )
    label_warnings(splits, where, checked["num_classes_from"])
    return splits
