"""MNIST, Fashion-MNIST and CIFAR-10 read from their standard distribution files.

Each loader reads the files exactly as their authors distribute them and returns uint8 images
in (N, C, H, W) order with int64 labels. With ``root`` given it reads that directory only; with
``root=None`` it searches, in order, ``$EXPT_DATA/<name>`` (when the variable is set), the
directories a system package installs the files into (Debian's ``dataset-fashion-mnist``:
``/usr/share/datasets/fashion-mnist``), and the download directory ``data/<name>`` under the
working directory. When no place holds them and ``download`` is true, the missing files are
downloaded (MD5-verified, written atomically) into ``root``, or else ``$EXPT_DATA/<name>`` or
``data/<name>``.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import http.client
import logging
import math
import os
import pickle
import shutil
import struct
import tarfile
import tempfile
import urllib.request
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath
from typing import Any, BinaryIO

import numpy as np

__all__ = [
    "DatasetNotFound", "DatasetCorrupt", "load_mnist", "load_fashion_mnist", "load_cifar10", "find", "search_dirs",
]

log = logging.getLogger(__name__)

_TIMEOUT_S = 30.0
_CHUNK = 1 << 20
_NUM_CLASSES = 10


class DatasetNotFound(Exception):
    """The dataset's files are not in the data directory and could not be downloaded."""


class DatasetCorrupt(DatasetNotFound):
    """A dataset file is present but unreadable, truncated or not in the expected format."""


class _DownloadError(Exception):
    """No URL delivered the file with the expected checksum."""


@dataclass(frozen=True)
class _Remote:
    """A dataset's name, its distributed files with their MD5s, where they are served and installed.

    ``key`` is the dataset's ``data=`` option and its folder under ``$EXPT_DATA`` and ``data/``;
    ``system_dirs`` are where an operating-system package puts the files, ``install`` the command
    that installs it.
    """

    name: str
    md5s: dict[str, str]
    base_urls: tuple[str, ...]
    key: str = ""
    system_dirs: tuple[str, ...] = ()
    install: str = ""

    def urls(self, filename: str) -> list[str]:
        return [base + filename for base in self.base_urls]


_MNIST = _Remote(
    name="MNIST",
    md5s={
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    base_urls=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    key="mnist",
)

_FASHION_MNIST = _Remote(
    name="Fashion-MNIST",
    md5s={
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
    base_urls=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    key="fashion_mnist",
    system_dirs=("/usr/share/datasets/fashion-mnist",),
    install="apt-get install dataset-fashion-mnist",
)

_CIFAR10 = _Remote(
    name="CIFAR-10",
    md5s={"cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a"},
    base_urls=("https://www.cs.toronto.edu/~kriz/",),
    key="cifar10",
)
_CIFAR_ARCHIVE = "cifar-10-python.tar.gz"
_CIFAR_DIR = "cifar-10-batches-py"
_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST = "test_batch"


# --------------------------------------------------------------------------- errors


def _not_found(
    remote: _Remote, places: dict[Path, list[str] | None], expected: str, explicit: bool,
    target: Path, reason: str | None,
) -> DatasetNotFound:
    """The one-paragraph error for a dataset absent from every place looked, saying how to get the files.

    ``places`` maps each directory looked in to its gaps where it holds a partial copy (None where it
    holds nothing); ``target`` is where a download goes; ``reason`` why the download failed, if one did.
    """
    if len(remote.md5s) == 1:
        where = " or ".join(url for name in remote.md5s for url in remote.urls(name))
    else:
        where = " or ".join(remote.base_urls)
    looked = [f"{path} (missing: {', '.join(gaps)})" if gaps else str(path) for path, gaps in places.items()]
    looked_in = looked[0] if len(looked) == 1 else ", ".join(looked[:-1]) + " or " + looked[-1]

    def after_install(text: str) -> str:
        """``text`` as the advice for systems without the package, after the package's sentence where there is one."""
        if not remote.install:
            return text[:1].upper() + text[1:]
        searched = "which expt searches when data.root is null" if explicit else "where expt finds them"
        return (
            f"On Debian or Ubuntu, `{remote.install}` (as root) installs them into {remote.system_dirs[0]}, "
            f"{searched}. Elsewhere {text}"
        )

    if reason is None:
        action = after_install(
            f"set data.download=true to fetch them from {where} into {target}, put them there yourself, or set "
            "data.root=... to a directory that already holds them."
        )
    else:
        action = f"Downloading them into {target} failed ({reason}). " + after_install(
            f"put the files from {where} into that directory by hand (or set data.root=... to a directory that "
            "already holds them), or retry with data.download=true once the network is reachable."
        )
    if not explicit:
        order = ", then ".join([f"$EXPT_DATA/{remote.key}", *remote.system_dirs, f"data/{remote.key}"])
        action += f" Without data.root expt looks in {order}."
    return DatasetNotFound(f"{remote.name} was not found in {looked_in}: expected {expected}. {action}")


# --------------------------------------------------------------------------- where the files are


def _download_dir(remote: _Remote) -> Path:
    """Where a search that finds nothing downloads: ``$EXPT_DATA/<key>`` when that is set, else ``data/<key>``."""
    base = os.environ.get("EXPT_DATA") or "data"
    return Path(os.path.abspath(os.path.expanduser(base))) / remote.key


def _search_dirs(remote: _Remote, root: str | os.PathLike[str] | None) -> list[Path]:
    if root is not None:
        return [Path(os.path.abspath(os.path.expanduser(root)))]
    dirs = [_download_dir(remote)] if os.environ.get("EXPT_DATA") else []
    dirs += [Path(d) for d in remote.system_dirs]
    dirs.append(Path(os.path.abspath("data")) / remote.key)
    return list(dict.fromkeys(dirs))


def _locate(
    remote: _Remote, root: str | os.PathLike[str] | None, download: bool, expected: str,
    gaps_in: Callable[[Path], list[str] | None],
) -> Path:
    """The first searched directory that holds the whole dataset, or the one the missing files were downloaded into.

    ``gaps_in(directory)`` is [] where the dataset is complete, the missing names for a partial copy,
    None where nothing of it is there; the downloads are the names of ``remote.md5s`` among the gaps.
    """
    places: dict[Path, list[str] | None] = {}
    for directory in _search_dirs(remote, root):
        gaps = gaps_in(directory)
        if gaps == []:
            if root is None:
                log.info("Reading %s from %s", remote.name, directory)
            return directory
        places[directory] = gaps
    target = next(iter(places)) if root is not None else _download_dir(remote)
    if not download:
        raise _not_found(remote, places, expected, root is not None, target, None)
    gaps = places.get(target)
    names = [name for name in remote.md5s if gaps is None or name in gaps]
    try:
        target.mkdir(parents=True, exist_ok=True)
        for filename in names:
            _download(remote.urls(filename), target / filename, remote.md5s[filename])
    except (_DownloadError, OSError) as exc:
        raise _not_found(remote, places, expected, root is not None, target, str(exc)) from exc
    return target


# --------------------------------------------------------------------------- download


def _download(urls: Sequence[str], dest: Path, md5: str, timeout: float = _TIMEOUT_S) -> str:
    """Fetch ``dest`` from the first of ``urls`` whose content has MD5 ``md5``; return that URL."""
    failures = []
    for url in urls:
        try:
            _fetch(url, dest, md5, timeout)
            return url
        except _DownloadError as exc:
            failures.append(f"{url}: {exc}")
    raise _DownloadError("; ".join(failures) or "no URL to download from")


def _fetch(url: str, dest: Path, md5: str, timeout: float) -> None:
    """Stream ``url`` into a temporary file beside ``dest``, check its MD5, then rename it."""
    log.info("Downloading %s to %s", url, dest)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        digest = hashlib.md5(usedforsecurity=False)
        request = urllib.request.Request(url, headers={"User-Agent": "expt"})
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=timeout) as response:
            while chunk := response.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != md5:
            raise _DownloadError(f"MD5 checksum mismatch: expected {md5}, got {digest.hexdigest()}")
        os.replace(tmp, dest)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise _DownloadError(str(exc) or type(exc).__name__) from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# --------------------------------------------------------------------------- IDX


def _parse_idx(data: bytes, source: str) -> np.ndarray:
    """Decode an IDX byte string (uint8 payload only); ``source`` names it in errors."""
    if len(data) < 4:
        raise DatasetCorrupt(f"{source} is not an IDX file: it has only {len(data)} bytes.")
    zero, type_code, ndim = struct.unpack_from(">HBB", data)
    if zero != 0:
        raise DatasetCorrupt(
            f"{source} is not an IDX file: its magic number starts with {data[:2].hex()} "
            "instead of two zero bytes."
        )
    if type_code != 0x08:
        raise DatasetCorrupt(
            f"{source} holds IDX data of type 0x{type_code:02x}; only unsigned bytes (0x08) "
            "are supported."
        )
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise DatasetCorrupt(f"{source} has a truncated or invalid IDX header ({ndim} dimensions).")
    shape = struct.unpack_from(f">{ndim}i", data, 4)
    if any(size < 0 for size in shape):
        raise DatasetCorrupt(f"{source} declares a negative IDX size {shape}.")
    payload = len(data) - header
    expected = math.prod(shape)
    if payload != expected:
        state = "truncated" if payload < expected else "longer than its header says"
        raise DatasetCorrupt(
            f"{source} is {state}: its header declares shape {shape} ({expected} bytes of "
            f"data) but it holds {payload}. Delete it and download it again."
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape).copy()


def _idx_path(root: Path, gz_name: str) -> Path | None:
    """The uncompressed or gzipped copy of an IDX file in ``root``, if either exists."""
    for candidate in (root / gz_name.removesuffix(".gz"), root / gz_name):
        if candidate.is_file():
            return candidate
    return None


def _read_idx(path: Path) -> np.ndarray:
    """Read an IDX file, gunzipping it when its name ends in ``.gz``."""
    try:
        raw = path.read_bytes()
        data = gzip.decompress(raw) if path.suffix == ".gz" else raw
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetCorrupt(f"{path} could not be read ({exc}). Delete it and download it again.") from exc
    return _parse_idx(data, str(path))


def _idx_gaps(remote: _Remote, directory: Path) -> list[str] | None:
    missing = [name for name in remote.md5s if _idx_path(directory, name) is None]
    return None if len(missing) == len(remote.md5s) else missing


def _load_idx_dataset(remote: _Remote, root: str | os.PathLike[str] | None, download: bool) -> dict[str, Any]:
    """Load the four IDX files of an MNIST-format dataset."""
    expected = ", ".join(remote.md5s) + " (each gzipped as named, or uncompressed without .gz)"
    root_path = _locate(remote, root, download, expected, lambda directory: _idx_gaps(remote, directory))

    arrays = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images_path = _idx_path(root_path, f"{prefix}-images-idx3-ubyte.gz")
        labels_path = _idx_path(root_path, f"{prefix}-labels-idx1-ubyte.gz")
        assert images_path is not None and labels_path is not None
        images, labels = _read_idx(images_path), _read_idx(labels_path)
        if images.ndim != 3 or images.shape[1:] != (28, 28):
            raise DatasetCorrupt(f"{images_path} holds an array of shape {images.shape}, not (N, 28, 28).")
        if labels.shape != images.shape[:1]:
            raise DatasetCorrupt(
                f"{labels_path} holds labels of shape {labels.shape} for the "
                f"{images.shape[0]} images of {images_path}."
            )
        _check_labels(labels, labels_path)
        arrays[f"x_{split}"] = images[:, None, :, :]
        arrays[f"y_{split}"] = labels.astype(np.int64)
    return {**arrays, "num_classes": _NUM_CLASSES}


def _check_labels(labels: np.ndarray, source: Path) -> None:
    """Reject labels outside 0..9."""
    if labels.size and (labels.min() < 0 or labels.max() >= _NUM_CLASSES):
        raise DatasetCorrupt(f"{source} has labels outside 0..{_NUM_CLASSES - 1}.")


def load_mnist(root: str | os.PathLike[str] | None = None, download: bool = True) -> dict[str, Any]:
    """MNIST digits: x (N, 1, 28, 28) uint8 and y (N,) int64 for 60000 train / 10000 test (``root=None``: search)."""
    return _load_idx_dataset(_MNIST, root, download)


def load_fashion_mnist(root: str | os.PathLike[str] | None = None, download: bool = True) -> dict[str, Any]:
    """Fashion-MNIST: x (N, 1, 28, 28) uint8 and y (N,) int64 for 60000 train / 10000 test (``root=None``: search)."""
    return _load_idx_dataset(_FASHION_MNIST, root, download)


# --------------------------------------------------------------------------- CIFAR-10


_PICKLE_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): np.ndarray.__reduce__(np.empty(0))[0],
    ("numpy._core.multiarray", "_reconstruct"): np.ndarray.__reduce__(np.empty(0))[0],
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,
}


class _BatchUnpickler(pickle.Unpickler):
    """Unpickler that builds numpy arrays and builtins only, never arbitrary objects."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _PICKLE_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}") from None


def _unpickle(stream: BinaryIO) -> Any:
    return _BatchUnpickler(stream, encoding="bytes").load()


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 batch file as (images (n, 3, 32, 32) uint8, labels (n,) int64)."""
    try:
        with path.open("rb") as f:
            batch = _unpickle(f)
    except Exception as exc:
        raise DatasetCorrupt(f"{path} is not a readable CIFAR-10 batch ({exc}).") from exc
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DatasetCorrupt(f"{path} is not a CIFAR-10 batch: it lacks the b'data' and b'labels' entries.")
    data = batch[b"data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DatasetCorrupt(f"{path}: b'data' is not a uint8 array of shape (n, 3072).")
    try:
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise DatasetCorrupt(f"{path}: b'labels' is not a list of integers.") from exc
    if labels.shape != (data.shape[0],):
        raise DatasetCorrupt(f"{path} has {labels.shape} labels for {data.shape[0]} images.")
    _check_labels(labels, path)
    return data.reshape(-1, 3, 32, 32), labels


def _member_target(dest: Path, name: str, archive: Path) -> Path:
    """Where a tar member goes under ``dest``; refuses absolute paths and ``..``."""
    pure = PureWindowsPath(name)
    if pure.drive or pure.root or ".." in pure.parts:
        raise DatasetCorrupt(f"{archive} contains the unsafe path {name!r}; refusing to extract it.")
    target = dest.joinpath(*pure.parts)
    if not target.resolve().is_relative_to(dest.resolve()):
        raise DatasetCorrupt(
            f"{archive} contains {name!r}, which leads outside {dest}; refusing to extract it."
        )
    return target


def _extract_tar_gz(archive: Path, dest: Path) -> None:
    """Extract the regular files and directories of ``archive`` into ``dest``, each file atomically."""
    log.info("Extracting %s into %s", archive, dest)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                target = _member_target(dest, member.name, archive)
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                if not member.isfile():
                    raise DatasetCorrupt(
                        f"{archive} contains {member.name!r}, which is not a regular file or "
                        "directory; refusing to extract it."
                    )
                target.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                assert source is not None
                fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
                try:
                    with os.fdopen(fd, "wb") as out:
                        shutil.copyfileobj(source, out, _CHUNK)
                    os.replace(tmp, target)
                finally:
                    if os.path.exists(tmp):
                        os.unlink(tmp)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise DatasetCorrupt(
            f"{archive} could not be extracted ({exc}). Delete it and download it again."
        ) from exc


def _cifar_gaps(directory: Path) -> list[str] | None:
    batch_dir = directory / _CIFAR_DIR
    missing = [name for name in (*_CIFAR_TRAIN, _CIFAR_TEST) if not (batch_dir / name).is_file()]
    if not missing or (directory / _CIFAR_ARCHIVE).is_file():
        return []
    return [f"{_CIFAR_DIR}/{name}" for name in missing] + [_CIFAR_ARCHIVE] if batch_dir.is_dir() else None


def load_cifar10(root: str | os.PathLike[str] | None = None, download: bool = True) -> dict[str, Any]:
    """CIFAR-10: x (N, 3, 32, 32) uint8 and y (N,) int64 for 50000 train / 10000 test.

    Reads ``cifar-10-batches-py/`` in the directory found (``root``, or the search when it is
    None); when it is incomplete, extracts ``cifar-10-python.tar.gz`` there, downloading that
    first if needed and allowed.
    """
    names = (*_CIFAR_TRAIN, _CIFAR_TEST)
    expected = f"{_CIFAR_DIR}/ holding {', '.join(names)}, or the archive {_CIFAR_ARCHIVE}"
    root_path = _locate(_CIFAR10, root, download, expected, _cifar_gaps)
    batch_dir = root_path / _CIFAR_DIR

    def missing() -> list[str]:
        return [name for name in names if not (batch_dir / name).is_file()]

    if missing():
        archive = root_path / _CIFAR_ARCHIVE
        _extract_tar_gz(archive, root_path)
        if missing():
            raise DatasetCorrupt(
                f"{archive} does not contain {_CIFAR_DIR}/{', '.join(missing())}; it is not the "
                "CIFAR-10 python archive. Delete it and download it again."
            )

    train = [_read_cifar_batch(batch_dir / name) for name in _CIFAR_TRAIN]
    x_test, y_test = _read_cifar_batch(batch_dir / _CIFAR_TEST)
    return {
        "x_train": np.concatenate([x for x, _ in train]),
        "y_train": np.concatenate([y for _, y in train]),
        "x_test": x_test,
        "y_test": y_test,
        "num_classes": _NUM_CLASSES,
    }


# --------------------------------------------------------------------------- search, for callers

def _remote(name: str) -> _Remote:
    remotes = {remote.key: remote for remote in (_MNIST, _FASHION_MNIST, _CIFAR10)}
    if name not in remotes:
        raise ValueError(f"{name!r} is not a standard dataset: one of {', '.join(remotes)}")
    return remotes[name]


def _gaps(name: str, directory: Path) -> list[str] | None:
    return _cifar_gaps(directory) if name == "cifar10" else _idx_gaps(_remote(name), directory)


def search_dirs(name: str, root: str | os.PathLike[str] | None = None) -> list[Path]:
    """The directories ``data=<name>`` looks in, in order (``root`` alone when it is given)."""
    return _search_dirs(_remote(name), root)


def find(name: str, root: str | os.PathLike[str] | None = None) -> Path | None:
    """The directory ``data=<name>`` would read (``mnist``, ``fashion_mnist``, ``cifar10``), or None where no
    searched directory holds the whole dataset; downloads nothing."""
    return next((d for d in search_dirs(name, root) if _gaps(name, d) == []), None)
