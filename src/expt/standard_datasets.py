"""MNIST, Fashion-MNIST and CIFAR-10 from their standard distribution files: where they are found, and downloads.

Each loader reads the files exactly as their authors distribute them (the formats are
:mod:`expt.dataset_formats`) and returns uint8 images in (N, C, H, W) order with int64 labels.
With ``root`` given it reads that directory only; with ``root=None`` it searches, in order,
``$EXPT_DATA/<name>`` (when the variable is set), the directories a system package installs the
files into (Debian's ``dataset-fashion-mnist``: ``/usr/share/datasets/fashion-mnist``), and the
download directory ``data/<name>`` under the working directory. When no place holds them and
``download`` is true, the missing files are downloaded (MD5-verified, written atomically) into
``root``, or else ``$EXPT_DATA/<name>`` or ``data/<name>``.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from expt.dataset_formats import (
    CHUNK,
    CIFAR_ARCHIVE,
    CIFAR_DIR,
    CIFAR_TEST,
    CIFAR_TRAIN,
    NUM_CLASSES,
    DatasetCorrupt,
    DatasetNotFound,
    cifar10_gaps,
    idx_path,
    read_cifar10,
    read_mnist_format,
)
from expt.files import replacing

__all__ = [
    "DatasetNotFound", "DatasetCorrupt", "load_mnist", "load_fashion_mnist", "load_cifar10", "find", "search_dirs",
]

log = logging.getLogger(__name__)

_TIMEOUT_S = 30.0


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
    first_labels: tuple[int, ...] = ()  # the distributed training labels' first ten: whose files a directory holds

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
    first_labels=(5, 0, 4, 1, 9, 2, 1, 3, 1, 4),
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
    first_labels=(9, 0, 0, 3, 0, 2, 7, 2, 5, 5),
)

_CIFAR10 = _Remote(
    name="CIFAR-10",
    md5s={CIFAR_ARCHIVE: "c58f30108f718f92721af3b95e74349a"},
    base_urls=("https://www.cs.toronto.edu/~kriz/",),
    key="cifar10",
)


# --------------------------------------------------------------------------- errors


def _not_found(
    remote: _Remote, places: dict[Path, list[str] | None], expected: str, explicit: bool,
    target: Path, reason: str | None, unwritable: bool = False,
) -> DatasetNotFound:
    """The one-paragraph error for a dataset absent from every place looked, saying how to get the files.

    ``places`` maps each directory looked in to its gaps where it holds a partial copy (None where it
    holds nothing); ``target`` is where a download goes; ``reason`` why the download failed, if one did;
    ``unwritable``: it failed because ``target`` cannot be made or written, not because of the network.
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
    elif unwritable:
        action = f"Downloading them into {target} failed: it cannot be written ({reason}). " + after_install(
            f"set data.root=... (or $EXPT_DATA) to a directory that can be written, or put the files from {where} "
            "into that directory by hand."
        )
    else:
        action = f"Downloading them into {target} failed ({reason}). " + after_install(
            f"put the files from {where} into that directory by hand (or set data.root=... to a directory that "
            "already holds them), or run again once the network is reachable."
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
    if root is not None and os.path.isfile(os.path.expanduser(root)):
        raise DatasetNotFound(f"data.root={str(root)!r} is a file: data.root names the directory that holds {expected} "
                              f"(for a file of your own arrays, data=npz data.path=...).")
    places: dict[Path, list[str] | None] = {}
    for directory in _search_dirs(remote, root):
        gaps = gaps_in(directory)
        if gaps == []:
            log.info("Reading %s from %s", remote.name, directory)
            return directory
        places[directory] = gaps
    target = next(iter(places)) if root is not None else _download_dir(remote)
    if root is not None and places[target] is None:
        inside = _inside(remote, target, gaps_in)
        if inside is not None:  # data.root one folder too high (Debian's /usr/share/datasets): say where, download nothing
            raise DatasetNotFound(f"{remote.name} was not found in data.root={str(root)!r}, but in its folder {inside}: "
                                  f"set data.root={inside}.")
    if not download:
        raise _not_found(remote, places, expected, root is not None, target, None)
    gaps = places.get(target)
    names = [name for name in remote.md5s if gaps is None or name in gaps]
    made = [d for d in (target, *target.parents) if not d.exists()]  # deepest first: what a failure takes back
    try:
        target.mkdir(parents=True, exist_ok=True)
        for filename in names:
            _download(remote.urls(filename), target / filename, remote.md5s[filename])
    except (_DownloadError, OSError) as exc:  # OSError: the directory, not the network (_fetch says _DownloadError)
        for directory in made:  # a misspelt data.root leaves no empty directory behind
            with contextlib.suppress(OSError):
                directory.rmdir()
        raise _not_found(remote, places, expected, root is not None, target, str(exc),
                         unwritable=not isinstance(exc, _DownloadError)) from exc
    return target


def _inside(remote: _Remote, directory: Path, gaps_in: Callable[[Path], list[str] | None]) -> Path | None:
    """A folder in ``directory`` named as the dataset (``fashion-mnist``, ``FashionMNIST``, and torchvision's
    ``FashionMNIST/raw``) that holds all of it, or None."""
    names = {_squashed(remote.key), _squashed(remote.name)}
    try:
        folders = sorted(d for d in directory.iterdir() if _squashed(d.name) in names and d.is_dir())
    except OSError:  # not a directory, or not readable: the message says what was looked for
        return None
    return next((d for folder in folders for d in (folder, folder / "raw") if gaps_in(d) == []), None)


def _squashed(name: str) -> str:
    """A dataset's name as folders spell it in any case and punctuation: ``Fashion-MNIST`` -> ``fashionmnist``."""
    return "".join(c for c in name.lower() if c.isalnum())


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
    """Stream ``url`` into a temporary file beside ``dest``, check its MD5, then rename it (:func:`expt.files.replacing`:
    a failed or wrong download leaves nothing behind)."""
    log.info("Downloading %s to %s", url, dest)
    try:
        digest = hashlib.md5(usedforsecurity=False)
        request = urllib.request.Request(url, headers={"User-Agent": "expt"})
        with replacing(dest) as out, urllib.request.urlopen(request, timeout=timeout) as response:
            while chunk := response.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
            if digest.hexdigest() != md5:
                raise _DownloadError(f"MD5 checksum mismatch: expected {md5}, got {digest.hexdigest()}")
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise _DownloadError(str(exc) or type(exc).__name__) from exc


# --------------------------------------------------------------------------- MNIST and Fashion-MNIST (IDX)


def _idx_gaps(remote: _Remote, directory: Path) -> list[str] | None:
    missing = [name for name in remote.md5s if idx_path(directory, name) is None]
    return None if len(missing) == len(remote.md5s) else missing


def _load_idx_dataset(remote: _Remote, root: str | os.PathLike[str] | None, download: bool) -> dict[str, Any]:
    """The four IDX files of an MNIST-format dataset, found (or downloaded) and read."""
    expected = ", ".join(remote.md5s) + " (each gzipped or not, named with or without .gz)"
    directory = _locate(remote, root, download, expected, lambda directory: _idx_gaps(remote, directory))
    arrays = read_mnist_format(directory)
    first = tuple(int(v) for v in arrays["y_train"][:len(remote.first_labels)])
    other = next((o for o in (_MNIST, _FASHION_MNIST) if o is not remote and o.first_labels == first), None)
    if other is not None:  # MNIST's files where Fashion-MNIST's are asked for, or the reverse
        log.warning("%s holds %s's files (their first training labels are %s's), not %s's: data=%s reads them as "
                    "they are; for %s, choose data=%s.", directory, other.name, other.name, remote.name, remote.key,
                    other.name, other.key)
    return {**arrays, "num_classes": NUM_CLASSES}


def load_mnist(root: str | os.PathLike[str] | None = None, download: bool = True) -> dict[str, Any]:
    """MNIST digits: x (N, 1, 28, 28) uint8 and y (N,) int64 for 60000 train / 10000 test (``root=None``: search)."""
    return _load_idx_dataset(_MNIST, root, download)


def load_fashion_mnist(root: str | os.PathLike[str] | None = None, download: bool = True) -> dict[str, Any]:
    """Fashion-MNIST: x (N, 1, 28, 28) uint8 and y (N,) int64 for 60000 train / 10000 test (``root=None``: search)."""
    return _load_idx_dataset(_FASHION_MNIST, root, download)


# --------------------------------------------------------------------------- CIFAR-10


def load_cifar10(root: str | os.PathLike[str] | None = None, download: bool = True) -> dict[str, Any]:
    """CIFAR-10: x (N, 3, 32, 32) uint8 and y (N,) int64 for 50000 train / 10000 test.

    Reads ``cifar-10-batches-py/`` in the directory found (``root``, or the search when it is
    None; a ``root`` that is that folder itself stands for its parent); when it is incomplete, extracts ``cifar-10-python.tar.gz`` there, downloading that
    first if needed and allowed.
    """
    expected = f"{CIFAR_DIR}/ holding {', '.join((*CIFAR_TRAIN, CIFAR_TEST))}, or the archive {CIFAR_ARCHIVE}"
    if root is not None and Path(os.path.expanduser(root)).name == CIFAR_DIR:
        root = Path(os.path.expanduser(root)).parent  # the extracted folder itself: its parent holds it, as expected
    directory = _locate(_CIFAR10, root, download, expected, cifar10_gaps)
    return {**read_cifar10(directory), "num_classes": NUM_CLASSES}


# --------------------------------------------------------------------------- search, for callers

def _remote(name: str) -> _Remote:
    remotes = {remote.key: remote for remote in (_MNIST, _FASHION_MNIST, _CIFAR10)}
    if name not in remotes:
        raise ValueError(f"{name!r} is not a standard dataset: one of {', '.join(remotes)}")
    return remotes[name]


def _gaps(name: str, directory: Path) -> list[str] | None:
    return cifar10_gaps(directory) if name == "cifar10" else _idx_gaps(_remote(name), directory)


def search_dirs(name: str, root: str | os.PathLike[str] | None = None) -> list[Path]:
    """The directories ``data=<name>`` looks in, in order (``root`` alone when it is given)."""
    return _search_dirs(_remote(name), root)


def find(name: str, root: str | os.PathLike[str] | None = None) -> Path | None:
    """The directory ``data=<name>`` would read (``mnist``, ``fashion_mnist``, ``cifar10``), or None where no
    searched directory holds the whole dataset; downloads nothing."""
    return next((d for d in search_dirs(name, root) if _gaps(name, d) == []), None)
