"""Datasets as tensors: load raw arrays, split train / val / test once, deterministically.

Every loader returns raw numpy arrays with pixels in [0, 1] (or uint8, scaled here);
:func:`load` splits them with ``split_seed`` and hands back a :class:`Splits` of
float tensors shaped (N, C, H, W). The data sets expt targets fit in memory, so the
trainer keeps them on the device and slices minibatches out of them.
"""

from __future__ import annotations

import gzip
import importlib.util
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from omegaconf import DictConfig

from expt.config import ConfigError, call, to_plain

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
def digits() -> dict[str, Any]:
    """scikit-learn's 1,797 8x8 digits (pixel values 0..16), read from the file scikit-learn ships.

    The CSV is read directly so that starting a run does not import scikit-learn and SciPy.
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        raise ConfigError(
            "data=digits needs scikit-learn, which ships the digits: pip install scikit-learn."
        )
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.float32)
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
    rng = np.random.default_rng(seed)
    prototypes = rng.standard_normal((num_classes, *shape)).astype(np.float32)
    y = rng.integers(0, num_classes, size=num_samples)
    x = prototypes[y] + noise * rng.standard_normal((num_samples, *shape)).astype(np.float32)
    x = 1.0 / (1.0 + np.exp(-x))
    return {"x_train": x.astype(np.float32), "y_train": y.astype(np.int64), "num_classes": num_classes}


def npz(path: str) -> dict[str, Any]:
    """A user's ``.npz`` with x_train, y_train and optionally x_val, y_val, x_test, y_test."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"data.path={path!r} is not a file: point it at an .npz with x_train and y_train.")
    with np.load(file) as archive:
        arrays = {k: archive[k] for k in archive.files}
    missing = [k for k in ("x_train", "y_train") if k not in arrays]
    if missing:
        raise ConfigError(f"data.path={path!r} lacks {', '.join(missing)}; it holds {', '.join(arrays) or 'nothing'}.")
    out: dict[str, Any] = {}
    for split in ("train", "val", "test"):
        if f"x_{split}" in arrays:
            if f"y_{split}" not in arrays:
                raise ConfigError(f"data.path={path!r} has x_{split} but no y_{split}.")
            out[f"x_{split}"] = _as_nchw(arrays[f"x_{split}"], f"x_{split}")
            out[f"y_{split}"] = arrays[f"y_{split}"].astype(np.int64)
    out["num_classes"] = int(max(int(out[k].max()) for k in out if k.startswith("y_")) + 1)
    return out


def _as_nchw(x: np.ndarray, name: str) -> np.ndarray:
    """(N, H, W) -> (N, 1, H, W); (N, H, W, C) with C in {1, 3, 4} -> (N, C, H, W); uint8 -> [0, 1]."""
    scale = 255.0 if x.dtype == np.uint8 else 1.0
    x = x.astype(np.float32) / scale
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4 and x.shape[1] not in (1, 3, 4) and x.shape[3] in (1, 3, 4):
        return x.transpose(0, 3, 1, 2)
    if x.ndim == 4:
        return x
    if x.ndim == 2:
        return x[:, None, None, :]
    raise ConfigError(f"{name} has shape {x.shape}: expected (N, H, W), (N, C, H, W) or (N, H, W, C).")


def _standard(loader_name: str) -> Callable[..., dict[str, Any]]:
    def load(root: str, download: bool = True) -> dict[str, Any]:
        from expt import standard_datasets
        from expt.standard_datasets import DatasetNotFound

        try:
            raw = getattr(standard_datasets, loader_name)(root=root, download=download)
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
        x, y = x[:subset], y[:subset]

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a))

    return Splits(t(x), t(y), t(val[0]), t(val[1]), t(test[0]), t(test[1]), int(raw["num_classes"]))


def load(cfg: DictConfig) -> Splits:
    """Build the splits a ``data`` config describes (``name`` picks a loader, ``_target_`` names your own)."""
    params = {k: v for k, v in to_plain(cfg).items() if k not in SPLIT_KEYS and k != "name"}
    if "_target_" in params:
        from expt.config import locate

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
    raw = call(loader, params, "data", where)
    return split(
        raw,
        val_size=cfg.get("val_size", 0.2),
        test_size=cfg.get("test_size", 0.2),
        subset=cfg.get("subset"),
        split_seed=cfg.get("split_seed", 0),
    )
