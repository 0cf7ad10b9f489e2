"""The standard datasets' files as their authors distribute them, read and checked; nothing here touches the network.

- **IDX** (MNIST, Fashion-MNIST): a big-endian header and a uint8 payload, each file gzipped or not.
- **CIFAR-10, python version**: five training batches and one test batch, each a pickled dict,
  unpickled with only numpy arrays and builtins allowed; they come in ``cifar-10-python.tar.gz``,
  extracted with every member kept inside the directory and each file written atomically.

A file that is present but unreadable, truncated or in another format raises
:class:`DatasetCorrupt`, naming the file. Which datasets exist, where their files are looked for
and how they are downloaded is :mod:`expt.standard_datasets`, which re-exports the two errors.
"""

from __future__ import annotations

import codecs
import errno
import functools
import gzip
import logging
import math
import pickle
import shutil
import struct
import tarfile
import zlib
from pathlib import Path, PureWindowsPath
from typing import Any, BinaryIO

import numpy as np

from expt.files import replacing

log = logging.getLogger("expt.standard_datasets")  # the datasets speak under one name, as they did as one module

CHUNK = 1 << 20  # bytes copied at a time, extracting or downloading
NUM_CLASSES = 10  # MNIST, Fashion-MNIST and CIFAR-10 alike

CIFAR_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR_DIR = "cifar-10-batches-py"
CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST = "test_batch"


class DatasetNotFound(Exception):
    """The dataset's files are not in the data directory and could not be downloaded."""


# what a directory that cannot take a file answers: read-only, not ours, full, over quota
UNWRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT)


class DatasetCorrupt(DatasetNotFound):
    """A dataset file is present but unreadable, truncated or not in the expected format."""


# --------------------------------------------------------------------------- IDX


def parse_idx(data: bytes, source: str) -> np.ndarray:
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


def idx_path(root: Path, gz_name: str) -> Path | None:
    """The uncompressed or gzipped copy of an IDX file in ``root``, if either exists."""
    for candidate in (root / gz_name.removesuffix(".gz"), root / gz_name):
        if candidate.is_file():
            return candidate
    return None


GZIP_MAGIC = b"\x1f\x8b"


def _read_idx(path: Path) -> np.ndarray:
    """Read an IDX file, gunzipping it when it is gzipped (whatever its name says): a copy of its decoded array, decoded once a
    version of the file (its absolute path, inode, size and modification time) for the runs of one process, such
    as a sweep's trials (gunzipping Fashion-MNIST takes about 0.2 s of CPU)."""
    try:
        stat = path.stat()
    except OSError as exc:
        raise DatasetCorrupt(f"{path} could not be read ({exc}). Delete it and download it again.") from exc
    return _decoded_idx(str(path.absolute()), stat.st_ino, stat.st_size, stat.st_mtime_ns).copy()


@functools.lru_cache(maxsize=4)  # one MNIST-format dataset's four files
def _decoded_idx(path: str, inode: int, size: int, mtime_ns: int) -> np.ndarray:
    """The array in the IDX file at ``path`` (as of ``inode``, ``size`` and ``mtime_ns``: with the path, the key
    of the cache), read-only."""
    try:
        raw = Path(path).read_bytes()
        # told by its first bytes, not its name: a browser may save the .gz already unpacked, or a tool strip the name
        data = gzip.decompress(raw) if raw[:2] == GZIP_MAGIC else raw
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetCorrupt(f"{path} could not be read ({exc}). Delete it and download it again.") from exc
    array = parse_idx(data, path)
    array.flags.writeable = False
    return array


def read_mnist_format(directory: Path) -> dict[str, np.ndarray]:
    """The four IDX files of an MNIST-format dataset in ``directory`` (each gzipped or not), checked:
    x_train, x_test (N, 1, 28, 28) uint8 and y_train, y_test (N,) int64."""
    arrays = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images_path = idx_path(directory, f"{prefix}-images-idx3-ubyte.gz")
        labels_path = idx_path(directory, f"{prefix}-labels-idx1-ubyte.gz")
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
    return arrays


def _check_labels(labels: np.ndarray, source: Path) -> None:
    """Reject labels outside 0..9."""
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise DatasetCorrupt(f"{source} has labels outside 0..{NUM_CLASSES - 1}.")


# --------------------------------------------------------------------------- CIFAR-10's pickled batches


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


# --------------------------------------------------------------------------- tar.gz archives, extracted safely


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
                source = tar.extractfile(member)
                assert source is not None
                with replacing(target) as out:
                    shutil.copyfileobj(source, out, CHUNK)
    except OSError as exc:
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT)  # a write that fills the disk names no file
        if full or (exc.errno in UNWRITABLE and exc.filename is not None and Path(exc.filename).is_relative_to(dest)):
            raise DatasetNotFound(  # the archive is fine: the place it is extracted into cannot take the files
                f"{archive} could not be extracted into {dest} ({exc.strerror}"
                f"{f': {exc.filename}' if exc.filename else ''}): extract it where "
                f"you can write (tar xzf {archive} -C <directory>) and give that directory as data.root, or give a "
                "data.root you can write.") from exc
        raise DatasetCorrupt(f"{archive} could not be extracted ({exc}). Delete it and download it again.") from exc
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise DatasetCorrupt(
            f"{archive} could not be extracted ({exc}). Delete it and download it again."
        ) from exc


# --------------------------------------------------------------------------- the CIFAR-10 directory


def cifar10_gaps(directory: Path) -> list[str] | None:
    """[] where ``directory`` holds the CIFAR-10 batches or their archive, the missing names where it holds some
    of the batches, None where it holds nothing of them."""
    batch_dir = directory / CIFAR_DIR
    missing = [name for name in (*CIFAR_TRAIN, CIFAR_TEST) if not (batch_dir / name).is_file()]
    if not missing or (directory / CIFAR_ARCHIVE).is_file():
        return []
    return [f"{CIFAR_DIR}/{name}" for name in missing] + [CIFAR_ARCHIVE] if batch_dir.is_dir() else None


def read_cifar10(directory: Path) -> dict[str, np.ndarray]:
    """The CIFAR-10 batches in ``directory``/cifar-10-batches-py, extracted from ``cifar-10-python.tar.gz``
    there first when they are incomplete: x_train, x_test (N, 3, 32, 32) uint8 and y_train, y_test (N,) int64."""
    names = (*CIFAR_TRAIN, CIFAR_TEST)
    batch_dir = directory / CIFAR_DIR

    def missing() -> list[str]:
        return [name for name in names if not (batch_dir / name).is_file()]

    if missing():
        archive = directory / CIFAR_ARCHIVE
        _extract_tar_gz(archive, directory)
        if missing():
            raise DatasetCorrupt(
                f"{archive} does not contain {CIFAR_DIR}/{', '.join(missing())}; it is not the "
                "CIFAR-10 python archive. Delete it and download it again."
            )

    train = [_read_cifar_batch(batch_dir / name) for name in CIFAR_TRAIN]
    x_test, y_test = _read_cifar_batch(batch_dir / CIFAR_TEST)
    return {
        "x_train": np.concatenate([x for x, _ in train]),
        "y_train": np.concatenate([y for _, y in train]),
        "x_test": x_test,
        "y_test": y_test,
    }
