"""The standard-dataset readers against small files written in the real distribution formats."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import stat
import struct
import tarfile
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from conftest import IDX_FILES, idx_bytes, write_file

from expt import standard_datasets as sd
from expt.dataset_formats import parse_idx
from expt.standard_datasets import (
    DatasetCorrupt,
    DatasetNotFound,
    load_cifar10,
    load_fashion_mnist,
    load_mnist,
)

CIFAR_BATCHES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch")
MNIST_LIKE = [pytest.param(load_mnist, id="mnist"), pytest.param(load_fashion_mnist, id="fashion_mnist")]


# --------------------------------------------------------------------------- writers


def mnist_arrays(n_train: int = 20, n_test: int = 10) -> dict[str, np.ndarray]:
    """Images whose every pixel depends on image, row and column; labels cycling through 0..9."""
    def images(n: int, offset: int) -> np.ndarray:
        k, h, w = np.meshgrid(np.arange(n), np.arange(28), np.arange(28), indexing="ij")
        return ((offset + 31 * k + 3 * h + w) % 256).astype(np.uint8)

    return {
        "train-images-idx3-ubyte": images(n_train, 0),
        "train-labels-idx1-ubyte": (np.arange(n_train) * 7 % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": images(n_test, 100),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) * 3 % 10).astype(np.uint8),
    }


def write_mnist(root: Path, gz: bool | tuple[bool, ...] = True, n_train: int = 20) -> dict[str, np.ndarray]:
    root.mkdir(parents=True, exist_ok=True)
    arrays = mnist_arrays(n_train)
    flags = gz if isinstance(gz, tuple) else (gz,) * len(IDX_FILES)
    for name, flag in zip(IDX_FILES, flags):
        write_file(root / name, idx_bytes(arrays[name]), flag)
    return arrays


class Py2Pickler(pickle._Pickler):  # type: ignore[name-defined]
    """Protocol 2 as Python 2's cPickle wrote the CIFAR batches: 8-bit strings, numpy.core globals."""

    dispatch = dict(pickle._Pickler.dispatch)  # type: ignore[attr-defined]

    def save_str8(self, obj: str | bytes) -> None:
        raw = obj if isinstance(obj, bytes) else obj.encode("latin1")
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    def save_global(self, obj: Any, name: str | None = None) -> None:
        module = obj.__module__.replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + f"{module}\n{name or obj.__qualname__}\n".encode())
        self.memoize(obj)

    dispatch[bytes] = save_str8
    dispatch[str] = save_str8
    dispatch[type] = save_global


def cifar_planes(index: int) -> np.ndarray:
    """Image ``index`` as (3, 32, 32): channels, rows and columns all distinguishable."""
    h, w = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    return np.stack([(index * 11 + c * 80 + 2 * h + 5 * w) % 256 for c in range(3)]).astype(np.uint8)


def cifar_row(planes: np.ndarray) -> np.ndarray:
    """The 3072-byte CIFAR row: 1024 red, then 1024 green, then 1024 blue, each row-major."""
    red, green, blue = (planes[c].ravel() for c in range(3))
    return np.concatenate([red, green, blue])


def write_cifar(root: Path, py2: bool = False, sizes: tuple[int, ...] = (2, 3, 1, 2, 2, 3)) -> dict[str, Any]:
    """Write cifar-10-batches-py/ under ``root``; return the expected images and labels."""
    batch_dir = root / "cifar-10-batches-py"
    batch_dir.mkdir(parents=True)
    images, labels, start = {}, {}, 0
    for name, n in zip(CIFAR_BATCHES, sizes):
        idx = range(start, start + n)
        start += n
        images[name] = np.stack([cifar_planes(i) for i in idx])
        labels[name] = [i % 10 for i in idx]
        batch = {
            b"batch_label": f"{name} of 6".encode(),
            b"labels": labels[name],
            b"data": np.stack([cifar_row(p) for p in images[name]]),
            b"filenames": [f"img_{i}.png".encode() for i in idx],
        }
        with (batch_dir / name).open("wb") as f:
            if py2:
                Py2Pickler(f, protocol=2).dump(batch)
            else:
                pickle.dump(batch, f, protocol=2)
    train = CIFAR_BATCHES[:5]
    return {
        "x_train": np.concatenate([images[b] for b in train]),
        "y_train": np.array(sum((labels[b] for b in train), []), dtype=np.int64),
        "x_test": images["test_batch"],
        "y_test": np.array(labels["test_batch"], dtype=np.int64),
    }


def pack_cifar(source: Path, archive: Path) -> None:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source / "cifar-10-batches-py", arcname="cifar-10-batches-py")


def tar_with(archive: Path, member: tarfile.TarInfo, data: bytes = b"") -> None:
    member.size = len(data) if member.isfile() else 0
    with tarfile.open(archive, "w:gz") as tar:
        tar.addfile(member, io.BytesIO(data) if member.isfile() else None)


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


# --------------------------------------------------------------------------- MNIST, Fashion-MNIST


@pytest.mark.parametrize("gz", [True, False, (True, False, False, True)], ids=["gz", "raw", "mixed"])
@pytest.mark.parametrize("load", MNIST_LIKE)
def test_idx_round_trip(tmp_path: Path, load: Callable[..., dict], gz: bool | tuple[bool, ...]) -> None:
    arrays = write_mnist(tmp_path, gz)
    data = load(str(tmp_path), download=False)

    assert data["num_classes"] == 10
    assert data["x_train"].shape == (20, 1, 28, 28) and data["x_test"].shape == (10, 1, 28, 28)
    assert data["x_train"].dtype == np.uint8 and data["x_test"].dtype == np.uint8
    assert data["y_train"].shape == (20,) and data["y_test"].shape == (10,)
    assert data["y_train"].dtype == np.int64 and data["y_test"].dtype == np.int64
    np.testing.assert_array_equal(data["x_train"][:, 0], arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(data["x_test"][:, 0], arrays["t10k-images-idx3-ubyte"])
    np.testing.assert_array_equal(data["y_train"], arrays["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(data["y_test"], arrays["t10k-labels-idx1-ubyte"])
    assert data["x_train"][3, 0, 5, 7] == (31 * 3 + 3 * 5 + 7) % 256
    data["x_train"][0, 0, 0, 0] = 1


def test_idx_files_whose_names_say_the_wrong_compression_are_read(tmp_path: Path) -> None:
    """A .gz file a browser saved already unpacked, and a gzipped file without .gz: read by their first bytes (the
    first was 'Not a gzipped file ... Delete it and download it again', the second a wrong magic number)."""
    arrays = mnist_arrays()
    for i, name in enumerate(IDX_FILES):
        data = idx_bytes(arrays[name])
        if i % 2:
            (tmp_path / f"{name}.gz").write_bytes(data)  # named .gz, not gzipped
        else:
            (tmp_path / name).write_bytes(gzip.compress(data))  # gzipped, named without .gz
    data = load_mnist(str(tmp_path), download=False)
    np.testing.assert_array_equal(data["x_train"][:, 0], arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(data["y_test"], arrays["t10k-labels-idx1-ubyte"])


def test_a_data_root_that_is_a_file_says_so(tmp_path: Path) -> None:
    path = tmp_path / "mine.npz"
    path.write_bytes(b"not a directory")
    with pytest.raises(DatasetNotFound, match=r"data.root='.*mine.npz' is a file: data.root names the directory that "
                                              r"holds .*data=npz data.path=\.\.\."):
        load_mnist(str(path), download=False)


@pytest.mark.parametrize("folder", ["fashion-mnist", "FashionMNIST/raw"])  # Debian's, torchvision's
def test_a_data_root_one_folder_too_high_names_the_folder_and_downloads_nothing(tmp_path: Path, folder: str) -> None:
    """data.root=/usr/share/datasets (Debian's folder of datasets) was searched alone, then downloaded into."""
    write_mnist(tmp_path / folder)
    (tmp_path / "mnist").mkdir()  # another dataset's folder, empty: not this one
    for download in (True, False):
        with pytest.raises(DatasetNotFound) as info:
            load_fashion_mnist(str(tmp_path), download=download)
        assert str(info.value) == (f"Fashion-MNIST was not found in data.root={str(tmp_path)!r}, but in its folder "
                                   f"{tmp_path / folder}: set data.root={tmp_path / folder}.")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({folder.split("/")[0], "mnist"})  # nothing downloaded
    with pytest.raises(DatasetNotFound, match=r"^MNIST was not found in "):  # MNIST is not Fashion-MNIST
        load_mnist(str(tmp_path), download=False)


@pytest.mark.parametrize("load", MNIST_LIKE)
def test_idx_missing_without_download(tmp_path: Path, load: Callable[..., dict]) -> None:
    root = tmp_path / "nowhere"
    with pytest.raises(DatasetNotFound) as info:
        load(str(root), download=False)
    message = str(info.value)
    assert str(root) in message
    for name in IDX_FILES:
        assert f"{name}.gz" in message
    assert "data.root=" in message and "data.download=true" in message
    assert "http" in message and "\n" not in message
    assert "(missing:" not in message
    assert not root.exists()


def test_idx_one_file_missing(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetNotFound, match=r"\(missing: t10k-labels-idx1-ubyte\.gz\)"):
        load_mnist(str(tmp_path), download=False)


def test_mnist_message_names_the_dataset_and_mirrors(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFound) as mnist:
        load_mnist(str(tmp_path), download=False)
    with pytest.raises(DatasetNotFound) as fashion:
        load_fashion_mnist(str(tmp_path), download=False)
    assert str(mnist.value).startswith("MNIST ")
    assert "https://ossci-datasets.s3.amazonaws.com/mnist/" in str(mnist.value)
    assert "http://yann.lecun.com/exdb/mnist/" in str(mnist.value)
    assert str(fashion.value).startswith("Fashion-MNIST ")
    assert "fashion-mnist" in str(fashion.value)


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_truncated_idx(tmp_path: Path, gz: bool) -> None:
    write_mnist(tmp_path, gz=False)
    name = tmp_path / "train-images-idx3-ubyte"
    data = name.read_bytes()
    name.unlink()
    bad = write_file(name, data[:-100], gz)
    with pytest.raises(DatasetCorrupt, match="truncated") as info:
        load_mnist(str(tmp_path), download=False)
    assert str(bad) in str(info.value)


def test_truncated_gzip_stream(tmp_path: Path) -> None:
    write_mnist(tmp_path, gz=True)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(DatasetCorrupt, match="t10k-images-idx3-ubyte.gz"):
        load_fashion_mnist(str(tmp_path), download=False)


def test_idx_wrong_magic(tmp_path: Path) -> None:
    write_mnist(tmp_path, gz=False)
    path = tmp_path / "train-labels-idx1-ubyte"
    path.write_bytes(b"\x12\x34" + path.read_bytes()[2:])
    with pytest.raises(DatasetCorrupt, match="magic") as info:
        load_mnist(str(tmp_path), download=False)
    assert "train-labels-idx1-ubyte" in str(info.value)


def test_idx_swapped_files(tmp_path: Path) -> None:
    write_mnist(tmp_path, gz=False)
    images, labels = tmp_path / "train-images-idx3-ubyte", tmp_path / "train-labels-idx1-ubyte"
    data = images.read_bytes()
    images.write_bytes(labels.read_bytes())
    labels.write_bytes(data)
    with pytest.raises(DatasetCorrupt, match="train-images-idx3-ubyte"):
        load_mnist(str(tmp_path), download=False)


def test_an_idx_file_is_decoded_once_a_version_and_each_read_gets_its_own_copy(tmp_path: Path) -> None:
    from expt.dataset_formats import _decoded_idx, _read_idx

    path = write_file(tmp_path / "cube-idx3-ubyte", idx_bytes(np.arange(24).reshape(2, 3, 4)), gz=True)
    _decoded_idx.cache_clear()
    first = _read_idx(path)
    second = _read_idx(path)
    assert _decoded_idx.cache_info().hits == 1 and _decoded_idx.cache_info().misses == 1  # gunzipped once
    np.testing.assert_array_equal(first, np.arange(24).reshape(2, 3, 4))
    first[0, 0, 0] = 99  # a copy each: what a caller does to its array stays there
    assert second[0, 0, 0] == 0 and _read_idx(path)[0, 0, 0] == 0 and first.flags.writeable
    write_file(tmp_path / "cube-idx3-ubyte", idx_bytes(np.full((2, 3), 7)), gz=True)  # the file changes
    np.testing.assert_array_equal(_read_idx(path), np.full((2, 3), 7))
    path.write_bytes(b"not gzip")  # neither gzip nor IDX, whatever its name says
    with pytest.raises(DatasetCorrupt, match="is not an IDX file"):
        _read_idx(path)


def test_parse_idx_general_and_strict() -> None:
    cube = np.arange(2 * 3 * 4 * 5, dtype=np.uint8).reshape(2, 3, 4, 5)
    np.testing.assert_array_equal(parse_idx(idx_bytes(cube), "cube"), cube)
    with pytest.raises(DatasetCorrupt, match=r"0x0d"):
        parse_idx(idx_bytes(cube, type_code=0x0D), "floats")
    with pytest.raises(DatasetCorrupt, match="longer"):
        parse_idx(idx_bytes(cube) + b"\x00", "padded")
    with pytest.raises(DatasetCorrupt, match="header"):
        parse_idx(idx_bytes(cube)[:10], "short header")
    with pytest.raises(DatasetCorrupt, match="only 2 bytes"):
        parse_idx(b"\x00\x00", "stub")
    assert issubclass(DatasetCorrupt, DatasetNotFound)


# --------------------------------------------------------------------------- CIFAR-10


def check_cifar(data: dict[str, Any], expected: dict[str, Any]) -> None:
    assert data["num_classes"] == 10
    assert data["x_train"].shape == (10, 3, 32, 32) and data["x_test"].shape == (3, 3, 32, 32)
    assert data["x_train"].dtype == np.uint8 and data["x_test"].dtype == np.uint8
    assert data["y_train"].dtype == np.int64 and data["y_test"].dtype == np.int64
    for key in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(data[key], expected[key])
    first = data["x_train"][0]
    np.testing.assert_array_equal(first[0], cifar_planes(0)[0])
    np.testing.assert_array_equal(first[1], cifar_planes(0)[1])
    np.testing.assert_array_equal(first[2], cifar_planes(0)[2])
    assert (first[0, 0, 0], first[1, 0, 0], first[2, 0, 0]) == (0, 80, 160)
    assert (first[0, 1, 0], first[0, 0, 1]) == (2, 5)


@pytest.mark.parametrize("py2", [False, True], ids=["protocol2", "python2_cpickle"])
def test_cifar_batches(tmp_path: Path, py2: bool) -> None:
    expected = write_cifar(tmp_path, py2=py2)
    check_cifar(load_cifar10(str(tmp_path), download=False), expected)


def test_cifar_from_archive(tmp_path: Path) -> None:
    expected = write_cifar(tmp_path / "src")
    root = tmp_path / "root"
    root.mkdir()
    pack_cifar(tmp_path / "src", root / "cifar-10-python.tar.gz")
    check_cifar(load_cifar10(str(root), download=False), expected)
    assert sorted(p.name for p in (root / "cifar-10-batches-py").iterdir()) == sorted(CIFAR_BATCHES)
    assert not list(root.rglob("*.tmp"))  # no temporary file left beside the batches


def test_cifar_root_at_the_extracted_folder_itself_reads_it_and_downloads_nothing(tmp_path: Path) -> None:
    """data.root=.../cifar-10-batches-py (the folder the archive extracts): read where it is; it started a download
    of the archive into that folder."""
    expected = write_cifar(tmp_path)
    check_cifar(load_cifar10(str(tmp_path / "cifar-10-batches-py"), download=True), expected)
    assert not list(tmp_path.rglob("*.tar.gz"))


def test_cifar_missing_without_download(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFound) as info:
        load_cifar10(str(tmp_path), download=False)
    message = str(info.value)
    assert message.startswith("CIFAR-10 ") and str(tmp_path) in message
    for name in ("cifar-10-python.tar.gz", "cifar-10-batches-py", *CIFAR_BATCHES):
        assert name in message
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in message
    assert "data.root=" in message and "data.download=true" in message


def test_cifar_incomplete_directory(tmp_path: Path) -> None:
    write_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    absent = r"\(missing: cifar-10-batches-py/data_batch_4, cifar-10-python\.tar\.gz\)"
    with pytest.raises(DatasetNotFound, match=absent):
        load_cifar10(str(tmp_path), download=False)


def test_cifar_truncated_batch(tmp_path: Path) -> None:
    write_cifar(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(DatasetCorrupt, match="test_batch"):
        load_cifar10(str(tmp_path), download=False)


def test_cifar_refuses_foreign_pickle(tmp_path: Path) -> None:
    write_cifar(tmp_path)

    class Payload:
        def __reduce__(self) -> tuple:
            return (os.getcwd, ())

    path = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    path.write_bytes(pickle.dumps({b"data": Payload(), b"labels": []}, protocol=2))
    with pytest.raises(DatasetCorrupt, match="refusing to load"):
        load_cifar10(str(tmp_path), download=False)


def test_cifar_truncated_archive(tmp_path: Path) -> None:
    write_cifar(tmp_path / "src")
    archive = tmp_path / "cifar-10-python.tar.gz"
    pack_cifar(tmp_path / "src", archive)
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DatasetCorrupt, match="cifar-10-python.tar.gz"):
        load_cifar10(str(tmp_path), download=False)


def test_cifar_archive_in_a_directory_that_cannot_be_written_is_not_called_corrupt(tmp_path: Path, monkeypatch) -> None:
    """A shared, read-only data.root that holds only the archive: the archive is fine, so the advice is to
    extract it elsewhere, not to delete it. The read-only file system's answer (EROFS) is given where the
    extraction creates its first file: as root, chmod cannot make a directory read-only."""
    import errno

    from expt import files

    write_cifar(tmp_path / "src")
    root = tmp_path / "shared"
    root.mkdir()
    pack_cifar(tmp_path / "src", root / "cifar-10-python.tar.gz")

    def read_only(directory, prefix, suffix):
        path = os.path.join(directory, f"{prefix}x{suffix}")
        raise OSError(errno.EROFS, "Read-only file system", path)

    monkeypatch.setattr(files, "temporary_beside", read_only)
    with pytest.raises(DatasetNotFound) as info:
        load_cifar10(str(root), download=False)
    message = str(info.value)
    assert not isinstance(info.value, DatasetCorrupt) and "Delete it" not in message
    assert f"could not be extracted into {root} (Read-only file system: {root / 'cifar-10-batches-py'}" in message
    assert f"tar xzf {root / 'cifar-10-python.tar.gz'} -C <directory>" in message
    assert (root / "cifar-10-python.tar.gz").is_file()


def test_cifar_archive_without_batches(tmp_path: Path) -> None:
    tar_with(tmp_path / "cifar-10-python.tar.gz", tarfile.TarInfo("readme.html"), b"<html/>")
    with pytest.raises(DatasetCorrupt, match="does not contain"):
        load_cifar10(str(tmp_path), download=False)


@pytest.mark.parametrize(
    "name", ["../escaped", "cifar-10-batches-py/../../escaped", "/tmp/escaped", "C:escaped", "..\\escaped"]
)
def test_cifar_archive_unsafe_paths(tmp_path: Path, name: str) -> None:
    root = tmp_path / "root"
    root.mkdir()
    tar_with(root / "cifar-10-python.tar.gz", tarfile.TarInfo(name), b"x")
    with pytest.raises(DatasetCorrupt, match="refusing"):
        load_cifar10(str(root), download=False)
    assert [p.name for p in tmp_path.rglob("*escaped*")] == []


def test_cifar_archive_refuses_links(tmp_path: Path) -> None:
    link = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    tar_with(tmp_path / "cifar-10-python.tar.gz", link)
    with pytest.raises(DatasetCorrupt, match="not a regular file"):
        load_cifar10(str(tmp_path), download=False)
    assert not (tmp_path / "cifar-10-batches-py" / "data_batch_1").exists()


# --------------------------------------------------------------------------- download (file:// URLs)


def test_download_verifies_md5(tmp_path: Path) -> None:
    payload = os.urandom(3000)
    source = tmp_path / "served.bin"
    source.write_bytes(payload)
    dest_dir = tmp_path / "dest"
    dest_dir.mkdir()
    dest = dest_dir / "file.bin"

    with pytest.raises(sd._DownloadError, match="MD5 checksum mismatch") as info:
        sd._download([source.as_uri()], dest, md5(b"something else"))
    assert md5(payload) in str(info.value)
    assert list(dest_dir.iterdir()) == []

    used = sd._download([(tmp_path / "absent.bin").as_uri(), source.as_uri()], dest, md5(payload))
    assert used == source.as_uri()
    assert dest.read_bytes() == payload
    assert list(dest_dir.iterdir()) == [dest]


def serve(tmp_path: Path, files: dict[str, bytes]) -> str:
    """Put ``files`` in a directory and return its file:// URL, slash-terminated."""
    served = tmp_path / "served"
    served.mkdir()
    for name, data in files.items():
        (served / name).write_bytes(data)
    return served.as_uri() + "/"


def test_mnist_download_from_mirrors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    arrays = mnist_arrays()
    files = {f"{name}.gz": gzip.compress(idx_bytes(arrays[name])) for name in IDX_FILES}
    base = serve(tmp_path, files)
    remote = sd._Remote("MNIST", {name: md5(data) for name, data in files.items()}, (base + "missing/", base))
    monkeypatch.setattr(sd, "_MNIST", remote)
    root = tmp_path / "data" / "mnist"
    data = load_mnist(str(root))
    np.testing.assert_array_equal(data["x_test"][:, 0], arrays["t10k-images-idx3-ubyte"])
    assert sorted(p.name for p in root.iterdir()) == sorted(files)


def test_cifar_download_and_extract(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = write_cifar(tmp_path / "src")
    pack_cifar(tmp_path / "src", tmp_path / "packed.tar.gz")
    archive = (tmp_path / "packed.tar.gz").read_bytes()
    base = serve(tmp_path, {"cifar-10-python.tar.gz": archive})
    remote = sd._Remote("CIFAR-10", {"cifar-10-python.tar.gz": md5(archive)}, (base,))
    monkeypatch.setattr(sd, "_CIFAR10", remote)
    previous = os.umask(0o022)  # the usual umask: a new file is 0644
    try:
        check_cifar(load_cifar10(str(tmp_path / "root")), expected)
    finally:
        os.umask(previous)
    # the download and every extracted batch are readable by the group, as any new file (a shared data directory)
    written = [tmp_path / "root" / "cifar-10-python.tar.gz", *(tmp_path / "root" / "cifar-10-batches-py").iterdir()]
    assert {oct(stat.S_IMODE(path.stat().st_mode)) for path in written} == {"0o644"}


def test_failed_download_is_dataset_not_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A download that fails leaves nothing behind: no file, and no directory made for it (a misspelt data.root
    leaves no empty directory); a directory that was there before stays."""
    files = {f"{name}.gz": b"not what was promised" for name in IDX_FILES}
    base = serve(tmp_path, files)
    remote = sd._Remote("Fashion-MNIST", {name: md5(b"the real file") for name in files}, (base,))
    monkeypatch.setattr(sd, "_FASHION_MNIST", remote)
    root = tmp_path / "typo" / "root"
    with pytest.raises(DatasetNotFound) as info:
        load_fashion_mnist(str(root))
    message = str(info.value)
    assert f"Downloading them into {root} failed" in message and "MD5 checksum mismatch" in message
    assert str(root) in message and "train-images-idx3-ubyte.gz" in message
    assert not (tmp_path / "typo").exists()
    root.mkdir(parents=True)
    with pytest.raises(DatasetNotFound):
        load_fashion_mnist(str(root))
    assert root.is_dir() and list(root.iterdir()) == []


def test_a_download_into_a_directory_that_cannot_be_made_says_so_not_the_network(tmp_path: Path) -> None:
    """data.root below a file: the download's directory cannot be made. The error names that and asks for a
    writable directory; it does not blame the network (nothing is fetched)."""
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    root = blocker / "mnist"
    with pytest.raises(DatasetNotFound) as info:
        load_fashion_mnist(str(root))
    message = str(info.value)
    assert f"Downloading them into {root} failed: it cannot be written (" in message, message
    assert "a directory that can be written" in message and "network" not in message


# --------------------------------------------------------------------------- where the files are searched


@pytest.fixture
def places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """The four places data=fashion_mnist may read, with the system directory moved under tmp_path.

    Each place that gets files gets a different number of training images, so a load says which it read.
    """
    dirs = {
        "root": tmp_path / "chosen",
        "env": tmp_path / "env" / "fashion_mnist",
        "system": tmp_path / "usr" / "share" / "datasets" / "fashion-mnist",
        "cwd": tmp_path / "work" / "data" / "fashion_mnist",
    }
    monkeypatch.setattr(sd, "_FASHION_MNIST", replace(sd._FASHION_MNIST, system_dirs=(str(dirs["system"]),)))
    monkeypatch.setenv("EXPT_DATA", str(tmp_path / "env"))
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    return dirs


def test_search_order_without_root(places: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    assert sd.search_dirs("fashion_mnist") == [places["env"], places["system"], places["cwd"]]
    sizes = {"cwd": 13, "system": 12, "env": 11}
    for place, n in sizes.items():  # data/fashion_mnist first, then each earlier place on top
        write_mnist(places[place], n_train=n)
        assert load_fashion_mnist(download=False)["x_train"].shape[0] == n
        assert sd.find("fashion_mnist") == places[place]
    monkeypatch.delenv("EXPT_DATA")
    assert sd.search_dirs("fashion_mnist") == [places["system"], places["cwd"]]
    assert load_fashion_mnist(download=False)["x_train"].shape[0] == 12


def test_an_incomplete_place_is_passed_over(places: dict[str, Path]) -> None:
    write_mnist(places["env"], n_train=11)
    (places["env"] / "train-labels-idx1-ubyte.gz").unlink()
    write_mnist(places["system"], n_train=12)
    assert load_fashion_mnist(download=False)["x_train"].shape[0] == 12


def test_an_explicit_root_is_the_only_place_looked(places: dict[str, Path]) -> None:
    write_mnist(places["env"], n_train=11)
    write_mnist(places["system"], n_train=12)
    assert sd.search_dirs("fashion_mnist", places["root"]) == [places["root"]]
    assert sd.find("fashion_mnist", places["root"]) is None
    with pytest.raises(DatasetNotFound) as info:
        load_fashion_mnist(str(places["root"]), download=False)
    message = str(info.value)
    assert message.startswith(f"Fashion-MNIST was not found in {places['root']}: expected ")
    assert str(places["env"]) not in message and "Without data.root" not in message
    assert "installs them into" in message and "which expt searches when data.root is null" in message
    write_mnist(places["root"], n_train=14)
    assert load_fashion_mnist(str(places["root"]), download=False)["x_train"].shape[0] == 14


def test_not_found_lists_every_place_and_how_to_install(places: dict[str, Path]) -> None:
    write_mnist(places["cwd"])
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (places["cwd"] / name).unlink()
    with pytest.raises(DatasetNotFound) as info:
        load_fashion_mnist(download=False)
    message = str(info.value)
    assert "\n" not in message
    looked = (
        f"Fashion-MNIST was not found in {places['env']}, {places['system']} or {places['cwd']} "
        "(missing: t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz): expected train-images-idx3-ubyte.gz"
    )
    assert message.startswith(looked)
    assert f"`apt-get install dataset-fashion-mnist` (as root) installs them into {places['system']}" in message
    assert "Elsewhere set data.download=true to fetch them from http://fashion-mnist" in message
    assert f"into {places['env']}" in message and "data.root=..." in message
    order = f"$EXPT_DATA/fashion_mnist, then {places['system']}, then data/fashion_mnist."
    assert f"Without data.root expt looks in {order}" in message


def test_mnist_has_no_package_to_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EXPT_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatasetNotFound) as info:
        load_mnist(download=False)
    message = str(info.value)
    assert message.startswith(f"MNIST was not found in {tmp_path / 'data' / 'mnist'}: expected ")
    assert "apt-get" not in message and "Elsewhere" not in message
    assert ". Set data.download=true to fetch them from https://ossci-datasets.s3.amazonaws.com/mnist/" in message
    assert "Without data.root expt looks in $EXPT_DATA/mnist, then data/mnist." in message


@pytest.mark.parametrize("env", [True, False], ids=["EXPT_DATA", "no EXPT_DATA"])
def test_a_search_that_finds_nothing_downloads_into_expt_data_or_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: bool
) -> None:
    arrays = mnist_arrays()
    files = {f"{name}.gz": gzip.compress(idx_bytes(arrays[name])) for name in IDX_FILES}
    base = serve(tmp_path, files)
    remote = replace(sd._MNIST, md5s={name: md5(data) for name, data in files.items()}, base_urls=(base,))
    monkeypatch.setattr(sd, "_MNIST", remote)
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    if env:
        monkeypatch.setenv("EXPT_DATA", str(tmp_path / "env"))
    else:
        monkeypatch.delenv("EXPT_DATA", raising=False)
    target = tmp_path / "env" / "mnist" if env else tmp_path / "work" / "data" / "mnist"
    np.testing.assert_array_equal(load_mnist()["x_test"][:, 0], arrays["t10k-images-idx3-ubyte"])
    assert sorted(p.name for p in target.iterdir()) == sorted(files)
    assert sd.find("mnist") == target


def test_cifar_search_finds_the_archive_or_the_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXPT_DATA", str(tmp_path / "env"))
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    assert sd.search_dirs("cifar10") == [tmp_path / "env" / "cifar10", tmp_path / "work" / "data" / "cifar10"]
    assert sd.find("cifar10") is None
    expected = write_cifar(tmp_path / "src")
    (tmp_path / "work" / "data" / "cifar10").mkdir(parents=True)
    pack_cifar(tmp_path / "src", tmp_path / "work" / "data" / "cifar10" / "cifar-10-python.tar.gz")
    assert sd.find("cifar10") == tmp_path / "work" / "data" / "cifar10"
    check_cifar(load_cifar10(download=False), expected)


def test_the_data_option_searches_through_hydra(places: dict[str, Path]) -> None:
    """data=fashion_mnist composes root: null, and the loader behind it reads the first place that holds the files."""
    import expt
    from expt.data import load

    cfg = expt.compose(["data=fashion_mnist", "data.download=false", "data.val_size=5"])
    assert cfg.data.root is None
    write_mnist(places["system"], n_train=30)
    splits = load(cfg.data)
    assert len(splits.x_train) + len(splits.x_val) == 30 and len(splits.x_test) == 10
    assert splits.x_train.shape[1:] == (1, 28, 28) and float(splits.x_train.max()) <= 1.0


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz").is_file(),
                    reason="Fashion-MNIST's files are not installed (apt-get install dataset-fashion-mnist)")
def test_data_mnist_pointed_at_fashion_mnists_files_says_whose_they_are(caplog) -> None:
    """data=mnist data.root=/usr/share/datasets/fashion-mnist trained on clothes without a word."""
    with caplog.at_level("WARNING"):
        load_mnist("/usr/share/datasets/fashion-mnist", download=False)
    assert ("/usr/share/datasets/fashion-mnist holds Fashion-MNIST's files (their first training labels are "
            "Fashion-MNIST's), not MNIST's: data=mnist reads them as they are; for Fashion-MNIST, choose "
            "data=fashion_mnist.") in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        load_fashion_mnist("/usr/share/datasets/fashion-mnist", download=False)
    assert "holds" not in caplog.text
