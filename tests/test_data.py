"""Tests for pfcourse.data: digits, and CIFAR-10 from a small archive in the real binary format.

Nothing here touches the network: the CIFAR-10 archive is built in a temporary folder with the
official member names and record layout (1 label byte + 3,072 pixel bytes), and the download is
exercised against a ``file://`` URL and a monkeypatched opener.
"""
import hashlib
import io
import tarfile
import urllib.error
import urllib.request

import numpy as np
import pytest

from pfcourse import data
from pfcourse.data import (
    CIFAR10_ARCHIVE,
    CIFAR10_SHA256,
    ChecksumError,
    CorruptArchiveError,
    DatasetUnavailableError,
)

PER_FILE = 12  # records per fake batch file (the real ones hold 10,000)


def fake_records(rng, n, labels=None):
    labels = rng.integers(0, 10, n) if labels is None else np.asarray(labels)
    pixels = rng.integers(0, 256, (n, 3072))
    return labels, pixels, np.concatenate([labels[:, None], pixels], axis=1).astype(np.uint8).tobytes()


def build_archive(path, seed=0, per_file=PER_FILE, truncate_member=None, drop_member=None):
    """A .tar.gz with the real CIFAR-10 binary member names; returns (labels, pixels) per member."""
    rng = np.random.default_rng(seed)
    contents = {}
    with tarfile.open(path, "w:gz") as tar:
        names = [f"cifar-10-batches-bin/data_batch_{i}.bin" for i in range(1, 6)]
        names.append("cifar-10-batches-bin/test_batch.bin")
        for name in names:
            if name == drop_member:
                continue
            labels, pixels, raw = fake_records(rng, per_file)
            if name == truncate_member:
                raw = raw[:-100]
            contents[name] = (labels, pixels)
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
        meta = "\n".join(data.CIFAR10_CLASSES).encode()
        info = tarfile.TarInfo("cifar-10-batches-bin/batches.meta.txt")
        info.size = len(meta)
        tar.addfile(info, io.BytesIO(meta))
    return contents


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def cifar_cache(tmp_path):
    archive = tmp_path / CIFAR10_ARCHIVE
    contents = build_archive(archive)
    return tmp_path, sha(archive), contents


# --------------------------------------------------------------------------- digits


def test_digits_shapes_onehot_and_standardisation():
    """Digits: shapes, one-hot targets that match the labels, zero mean / unit std per pixel."""
    ds = data.load_digits(n_train=300, n_test=100, seed=1)
    assert ds.name == "digits" and "digits" in ds.note
    assert ds.x_train.shape == (300, 64) and ds.x_test.shape == (100, 64)
    assert ds.y_train.shape == (300, 10) and ds.labels_train.dtype == np.int32
    np.testing.assert_array_equal(np.argmax(ds.y_train, 1), ds.labels_train)
    np.testing.assert_array_equal(ds.y_train.sum(1), 1)
    x = ds.x_train.astype(np.float64)
    np.testing.assert_allclose(x.mean(0), 0, atol=1e-5)
    std = x.std(0)
    assert np.all((np.abs(std - 1) < 1e-4) | (std == 0))  # constant pixels stay at 0
    assert ds.x_train.dtype == np.float32


def test_digits_standardisation_uses_training_statistics():
    """The test split is transformed with the training mean and std, not its own."""
    from sklearn.datasets import load_digits as sk

    raw = sk().data
    perm = np.random.default_rng(3).permutation(raw.shape[0])
    raw = raw[perm]
    ds = data.load_digits(n_train=500, n_test=200, seed=3, dtype=np.float64)
    mu, sd = raw[:500].mean(0), raw[:500].std(0)
    sd = np.where(sd > 0, sd, 1)
    np.testing.assert_allclose(ds.x_test, (raw[500:700] - mu) / sd, atol=1e-12)


def test_digits_file_reader_equals_scikit_learns_loader(monkeypatch):
    """The digits are read from scikit-learn's data file without importing scikit-learn; where the
    file is not found, scikit-learn's loader is used: both give scikit-learn's arrays exactly."""
    from sklearn.datasets import load_digits as sk

    bunch = sk()
    x, labels = data._digits_arrays()
    np.testing.assert_array_equal(x, bunch.data)
    np.testing.assert_array_equal(labels, bunch.target)
    assert x.dtype == np.float64 and labels.dtype == np.int64
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    x2, labels2 = data._digits_arrays()
    np.testing.assert_array_equal(x2, x)
    np.testing.assert_array_equal(labels2, labels)


def test_digits_default_test_split_is_the_rest_and_classes_relabel():
    ds = data.load_digits(n_train=1000)
    assert ds.x_test.shape[0] == 797
    sub = data.load_digits(n_train=100, n_test=50, classes=[3, 7])
    assert sub.y_train.shape == (100, 2) and set(np.unique(sub.labels_train)) == {0, 1}
    assert sub.num_classes == 2 and sub.input_dim == 64


def test_digits_seed_none_keeps_file_order():
    from sklearn.datasets import load_digits as sk

    ds = data.load_digits(n_train=50, n_test=0, seed=None)
    np.testing.assert_array_equal(ds.labels_train, sk().target[:50])


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(n_train=0), "at least 1"),
        (dict(n_train=2000), "only 1797"),
        (dict(n_train=1700, n_test=200), "remain"),
        (dict(classes=[1]), "at least two"),
        (dict(classes=[1, 12]), "0..9"),
        (dict(n_train=2.5), "non-negative integer"),
    ],
)
def test_digits_bad_input(kw, match):
    with pytest.raises(ValueError, match=match):
        data.load_digits(**kw)


def test_one_hot_and_standardise_errors():
    np.testing.assert_array_equal(data.one_hot(np.array([2, 0]), 3), [[0, 0, 1], [1, 0, 0]])
    with pytest.raises(ValueError, match="0..2"):
        data.one_hot(np.array([3]), 3)
    with pytest.raises(ValueError, match="integer"):
        data.one_hot(np.array([0.5]), 3)
    with pytest.raises(ValueError, match="empty"):
        data.standardise(np.zeros((0, 3)), np.zeros((1, 3)))


# --------------------------------------------------------------------------- CIFAR-10 from cache


def test_cifar10_first_n_examples_in_order(cifar_cache):
    """First n training examples across batch files in order, pixels scaled and standardised."""
    folder, digest, contents = cifar_cache
    n = 2 * PER_FILE + 5  # spans three batch files
    ds = data.load_cifar10(n_train=n, n_test=7, cache_dir=folder, download=False, sha256=digest, dtype=np.float64)
    labels = np.concatenate([contents[f"cifar-10-batches-bin/data_batch_{i}.bin"][0] for i in (1, 2, 3)])[:n]
    pixels = np.concatenate([contents[f"cifar-10-batches-bin/data_batch_{i}.bin"][1] for i in (1, 2, 3)])[:n]
    np.testing.assert_array_equal(ds.labels_train, labels)
    expected, _ = data.standardise(pixels / 255.0, pixels[:1] / 255.0)
    np.testing.assert_allclose(ds.x_train, expected, atol=1e-12)
    np.testing.assert_array_equal(ds.labels_test, contents["cifar-10-batches-bin/test_batch.bin"][0][:7])
    assert ds.x_train.shape == (n, 3072) and ds.y_train.shape == (n, 10)
    assert ds.name == "cifar10" and "SHA-256 verified" in ds.note


def test_cifar10_classes_subset(cifar_cache):
    folder, digest, contents = cifar_cache
    all_labels = np.concatenate([contents[f"cifar-10-batches-bin/data_batch_{i}.bin"][0] for i in range(1, 6)])
    classes = [int(all_labels[0]), int((all_labels[0] + 1) % 10)]
    keep = np.isin(all_labels, classes)
    n = int(keep.sum()) - 1
    ds = data.load_cifar10(n_train=n, n_test=0, classes=classes, cache_dir=folder, download=False, sha256=digest)
    expected = np.where(all_labels[keep][:n] == classes[0], 0, 1)
    np.testing.assert_array_equal(ds.labels_train, expected)
    assert ds.y_train.shape == (n, 2) and ds.x_test.shape == (0, 3072)


def test_cifar10_checksum_failure(cifar_cache):
    """The pinned SHA-256 of the real archive rejects the fake one, before reading anything."""
    folder, _, _ = cifar_cache
    with pytest.raises(ChecksumError, match="SHA-256"):
        data.load_cifar10(n_train=5, cache_dir=folder, download=False)  # default: the official hash


def test_cifar10_truncated_archive_fails_checksum(cifar_cache):
    folder, digest, _ = cifar_cache
    archive = folder / CIFAR10_ARCHIVE
    archive.write_bytes(archive.read_bytes()[:-500])
    with pytest.raises(ChecksumError, match="corrupt, truncated"):
        data.load_cifar10(n_train=5, cache_dir=folder, download=False, sha256=digest)


def test_cifar10_truncated_archive_with_matching_hash_is_reported(cifar_cache):
    """Even a truncated gzip whose hash was (wrongly) pinned gives a clear error, not a crash."""
    folder, _, _ = cifar_cache
    archive = folder / CIFAR10_ARCHIVE
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(CorruptArchiveError, match="truncated or corrupt|not a readable"):
        data.load_cifar10(n_train=4 * PER_FILE, cache_dir=folder, download=False, sha256=sha(archive))


def test_cifar10_truncated_member(tmp_path):
    """A batch file that is not a whole number of 3,073-byte records."""
    archive = tmp_path / CIFAR10_ARCHIVE
    build_archive(archive, truncate_member="cifar-10-batches-bin/data_batch_1.bin")
    with pytest.raises(CorruptArchiveError, match="3073-byte records"):
        data.load_cifar10(n_train=5, cache_dir=tmp_path, download=False, sha256=sha(archive))


def test_cifar10_missing_member(tmp_path):
    archive = tmp_path / CIFAR10_ARCHIVE
    build_archive(archive, drop_member="cifar-10-batches-bin/test_batch.bin")
    with pytest.raises(CorruptArchiveError, match="no member"):
        data.load_cifar10(n_train=5, n_test=3, cache_dir=tmp_path, download=False, sha256=sha(archive))


def test_cifar10_too_many_examples(cifar_cache):
    folder, digest, _ = cifar_cache
    with pytest.raises(ValueError, match="only 60"):
        data.load_cifar10(n_train=5 * PER_FILE + 1, cache_dir=folder, download=False, sha256=digest)


def test_cifar10_missing_cache_without_download(tmp_path):
    with pytest.raises(DatasetUnavailableError, match="not in the cache"):
        data.load_cifar10(n_train=5, cache_dir=tmp_path / "empty", download=False)


# --------------------------------------------------------------------------- download


def test_download_from_file_url(tmp_path):
    """download_cifar10 streams any urllib URL into the cache and verifies the hash."""
    source = tmp_path / "mirror" / CIFAR10_ARCHIVE
    source.parent.mkdir()
    contents = build_archive(source, seed=5)
    digest = sha(source)
    cache = tmp_path / "cache"
    path = data.download_cifar10(cache, url=source.as_uri(), sha256=digest, progress=False)
    assert path == cache / CIFAR10_ARCHIVE and sha(path) == digest
    assert not list(cache.glob("*.part"))
    ds = data.load_cifar10(n_train=3, n_test=0, cache_dir=cache, download=False, sha256=digest)
    np.testing.assert_array_equal(ds.labels_train, contents["cifar-10-batches-bin/data_batch_1.bin"][0][:3])


def test_load_downloads_when_missing(tmp_path):
    source = tmp_path / CIFAR10_ARCHIVE
    build_archive(source, seed=6)
    cache = tmp_path / "cache"
    ds = data.load_cifar10(n_train=4, n_test=2, cache_dir=cache, url=source.as_uri(), sha256=sha(source))
    assert ds.x_train.shape == (4, 3072) and (cache / CIFAR10_ARCHIVE).exists()


def test_download_checksum_mismatch_keeps_nothing(tmp_path):
    source = tmp_path / CIFAR10_ARCHIVE
    build_archive(source)
    cache = tmp_path / "cache"
    with pytest.raises(ChecksumError, match="not kept"):
        data.download_cifar10(cache, url=source.as_uri(), sha256=CIFAR10_SHA256, progress=False)
    assert not (cache / CIFAR10_ARCHIVE).exists() and not list(cache.glob("*"))


def test_download_network_failure_is_unavailable(tmp_path, monkeypatch):
    """An opener that fails (as without network) raises DatasetUnavailableError, not URLError."""
    calls = []

    def no_network(url, timeout=None):
        calls.append(url)
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    with pytest.raises(DatasetUnavailableError, match="no route to host"):
        data.download_cifar10(tmp_path, progress=False)
    assert calls == [data.CIFAR10_URL]
    assert not list(tmp_path.glob("*"))


def test_download_interrupted_stream(tmp_path, monkeypatch):
    class Broken(io.BytesIO):
        headers = {"Content-Length": "1000"}

        def read(self, n=-1):
            raise ConnectionResetError("connection reset")

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: Broken(b""))
    with pytest.raises(DatasetUnavailableError, match="broke off"):
        data.download_cifar10(tmp_path, progress=False)
    assert not list(tmp_path.glob("*"))


def test_download_keeps_verified_file(cifar_cache, monkeypatch):
    folder, digest, _ = cifar_cache
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: pytest.fail("must not download"))
    assert data.download_cifar10(folder, sha256=digest) == folder / CIFAR10_ARCHIVE


# --------------------------------------------------------------------------- load_dataset


def test_load_dataset_falls_back_to_digits(tmp_path, monkeypatch):
    def no_network(url, timeout=None):
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    ds = data.load_dataset("cifar10", n_train=200, cache_dir=tmp_path)
    assert ds.name == "digits" and ds.x_train.shape == (200, 64)
    assert ds.note.startswith("CIFAR-10 unavailable") and "digits" in ds.note
    with pytest.raises(DatasetUnavailableError):
        data.load_dataset("cifar10", n_train=200, cache_dir=tmp_path, fallback=False)


def test_load_dataset_does_not_hide_a_corrupt_archive(cifar_cache):
    folder, _, _ = cifar_cache
    with pytest.raises(ChecksumError):
        data.load_dataset("cifar10", n_train=5, cache_dir=folder, download=False)


def test_load_dataset_by_name(cifar_cache):
    folder, digest, _ = cifar_cache
    assert data.load_dataset("cifar10", n_train=6, n_test=0, cache_dir=folder, sha256=digest).name == "cifar10"
    assert data.load_dataset("digits", n_train=10, n_test=5).x_train.shape == (10, 64)
    with pytest.raises(ValueError, match="choose one of"):
        data.load_dataset("mnist")


def test_cache_dir_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("PFCOURSE_CACHE", str(tmp_path / "c"))
    assert data.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("PFCOURSE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert data.cifar10_archive_path() == tmp_path / "x" / "pfcourse" / CIFAR10_ARCHIVE
