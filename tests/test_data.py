"""Datasets: download over a real local HTTPS server, conversion from the real archive formats,
validation on load, and the device loader's batches. No network beyond 127.0.0.1."""
from __future__ import annotations

import dataclasses
import datetime
import functools
import gzip
import hashlib
import io
import ipaddress
import pickle
import shutil
import socket
import ssl
import tarfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sparsenets import data
from sparsenets.data import DataError, Dataset, DeviceLoader

CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"


# ------------------------------------------------------------------------------------- fixtures
def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def expect_md5(monkeypatch: pytest.MonkeyPatch, name: str, *md5s: str) -> None:
    """Point the registry entry at our test files' checksums; the production table is restored after."""
    source = data.DATASETS[name]
    archives = tuple(dataclasses.replace(a, md5=m) for a, m in zip(source.archives, md5s, strict=True))
    monkeypatch.setitem(data.DATASETS, name, dataclasses.replace(source, archives=archives))


@pytest.fixture(scope="module")
def cifar10(tmp_path_factory) -> tuple[Path, dict]:
    """A tiny archive in the real CIFAR-10 python format, and the arrays it should convert to."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("archive") / CIFAR10_ARCHIVE
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    rows = {f"data_batch_{i}": 3 for i in range(1, 6)} | {"test_batch": 4}
    batches = {
        b: {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "labels": rng.integers(0, 10, n).tolist()}
        for b, n in rows.items()
    }
    with tarfile.open(path, "w:gz") as tar:
        for member, obj in (batches | {"batches.meta": {"label_names": names, "num_vis": 3072}}).items():
            blob = pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{member}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    train = [batches[f"data_batch_{i}"] for i in range(1, 6)]

    def planes(rows: np.ndarray) -> np.ndarray:
        return rows.reshape(-1, 3, 32 * 32)  # a row is the R, G and B planes, 1024 bytes each

    expected = {
        "x_train": np.concatenate([planes(b["data"]) for b in train]),
        "y_train": np.concatenate([b["labels"] for b in train]),
        "x_test": planes(batches["test_batch"]["data"]),
        "y_test": np.array(batches["test_batch"]["labels"]),
        "classes": names,
    }
    return path, expected


@pytest.fixture(scope="module")
def tls(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (cert file, key file)."""
    folder = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return folder / "cert.pem", folder / "key.pem"


class QuietHandler(SimpleHTTPRequestHandler):
    """Serves a folder, records each request's path, logs nothing."""

    requests: list[str] = []

    def do_GET(self) -> None:
        QuietHandler.requests.append(self.path)
        super().do_GET()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def mirror(cifar10, tls) -> Iterator[str]:
    """An HTTPS server on a free port of 127.0.0.1 serving the tiny archive; yields its base URL."""
    cert, key = tls
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(cifar10[0].parent)))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def closed_url() -> str:
    """An https URL on a local port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"https://127.0.0.1:{s.getsockname()[1]}"


def assert_converted(path: Path, expected: dict) -> None:
    ds = data.load(path)
    assert ds.x_train.shape == (15, 32, 32, 3) and ds.x_test.shape == (4, 32, 32, 3)
    assert ds.x_train.dtype == np.uint8 and ds.y_train.dtype == np.int64
    for split in ("train", "test"):
        # NHWC: channel c of pixel (i, j) is byte c*1024 + i*32 + j of the row
        x = getattr(ds, f"x_{split}")
        np.testing.assert_array_equal(x.reshape(len(x), 1024, 3).transpose(0, 2, 1), expected[f"x_{split}"])
        np.testing.assert_array_equal(getattr(ds, f"y_{split}"), expected[f"y_{split}"])
    assert ds.classes == expected["classes"] and ds.input_shape == (3, 32, 32)


# ------------------------------------------------------------------------------------- download
@pytest.mark.parametrize("via_env", [False, True])
def test_download_over_https_verifies_and_converts(tmp_path, monkeypatch, cifar10, tls, mirror, via_env):
    archive, expected = cifar10
    expect_md5(monkeypatch, "cifar10", md5(archive))
    out = tmp_path / "data" / "cifar10.npz"
    QuietHandler.requests.clear()
    if via_env:
        monkeypatch.setenv("SPARSENETS_DATA_MIRROR", mirror)
        monkeypatch.setenv("SPARSENETS_CA_BUNDLE", str(tls[0]))
        assert data.prepare("cifar10", out) == out
    else:
        assert data.prepare("cifar10", out, mirror=mirror, cafile=str(tls[0])) == out
    assert QuietHandler.requests == [f"/{CIFAR10_ARCHIVE}"]
    assert_converted(out, expected)
    assert sorted(p.name for p in out.parent.iterdir()) == [CIFAR10_ARCHIVE, "cifar10.npz"]  # archive kept, no temp


def test_wrong_checksum_is_an_error_and_leaves_nothing(tmp_path, monkeypatch, cifar10, tls, mirror):
    expect_md5(monkeypatch, "cifar10", "0" * 32)
    out = tmp_path / "data" / "cifar10.npz"
    with pytest.raises(DataError) as err:
        data.prepare("cifar10", out, mirror=mirror, cafile=str(tls[0]))
    assert "0" * 32 in str(err.value) and md5(cifar10[0]) in str(err.value) and CIFAR10_ARCHIVE in str(err.value)
    assert list(out.parent.iterdir()) == []


def test_self_signed_server_is_rejected_without_its_ca(tmp_path, monkeypatch, cifar10, mirror):
    expect_md5(monkeypatch, "cifar10", md5(cifar10[0]))
    with pytest.raises(DataError, match="CERTIFICATE_VERIFY_FAILED"):
        data.prepare("cifar10", tmp_path / "cifar10.npz", mirror=mirror)
    assert list(tmp_path.iterdir()) == []


def test_unreachable_server_says_which_url_and_how_to_skip_the_download(tmp_path, closed_url):
    out = tmp_path / "data" / "cifar10.npz"
    with pytest.raises(DataError) as err:
        data.prepare("cifar10", out, mirror=closed_url)
    message = str(err.value)
    assert f"{closed_url}/{CIFAR10_ARCHIVE}" in message
    assert f"put {out} in place" in message and CIFAR10_ARCHIVE in message
    assert not out.exists()


def test_unknown_dataset_is_named(tmp_path):
    with pytest.raises(DataError, match="unknown dataset 'cifar11'; known datasets: cifar10, cifar100, digits"):
        data.prepare("cifar11", tmp_path / "cifar11.npz")


def test_plain_http_is_refused(tmp_path):
    with pytest.raises(DataError, match="only https"):
        data.prepare("cifar10", tmp_path / "cifar10.npz", mirror="http://127.0.0.1:9")


def test_archive_already_in_the_folder_is_used_without_download(tmp_path, monkeypatch, cifar10, closed_url):
    archive, expected = cifar10
    expect_md5(monkeypatch, "cifar10", md5(archive))
    shutil.copy(archive, tmp_path / CIFAR10_ARCHIVE)
    out = data.prepare("cifar10", tmp_path / "cifar10.npz", mirror=closed_url)  # any download would fail
    assert_converted(out, expected)


def test_corrupt_archive_in_the_folder_is_named(tmp_path, monkeypatch, closed_url):
    (tmp_path / CIFAR10_ARCHIVE).write_bytes(b"not a tarball")
    expect_md5(monkeypatch, "cifar10", md5(tmp_path / CIFAR10_ARCHIVE))
    with pytest.raises(DataError, match=f"could not convert .*{CIFAR10_ARCHIVE}"):
        data.prepare("cifar10", tmp_path / "cifar10.npz", mirror=closed_url)
    assert sorted(p.name for p in tmp_path.iterdir()) == [CIFAR10_ARCHIVE]


def test_mnist_idx_files_convert(tmp_path, monkeypatch, closed_url):
    rng = np.random.default_rng(1)
    arrays = {
        "train-images": rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
        "train-labels": np.arange(5, dtype=np.uint8),
        "t10k-images": rng.integers(0, 256, (3, 28, 28), dtype=np.uint8),
        "t10k-labels": np.array([9, 0, 4], np.uint8),
    }
    for stem, a in arrays.items():
        header = bytes([0, 0, 8, a.ndim]) + np.array(a.shape, ">u4").tobytes()
        (tmp_path / f"{stem}-idx{a.ndim}-ubyte.gz").write_bytes(gzip.compress(header + a.tobytes()))
    expect_md5(monkeypatch, "mnist", *(md5(tmp_path / a.filename) for a in data.DATASETS["mnist"].archives))
    ds = data.load(data.prepare("mnist", tmp_path / "mnist.npz", mirror=closed_url))
    np.testing.assert_array_equal(ds.x_train[..., 0], arrays["train-images"])
    np.testing.assert_array_equal(ds.y_test, [9, 0, 4])
    assert ds.input_shape == (1, 28, 28) and ds.num_classes == 10


def test_production_table_matches_the_official_archives():
    cifar10, cifar100, mnist = (data.DATASETS[n].archives for n in ("cifar10", "cifar100", "mnist"))
    assert cifar10[0].url == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    assert (cifar10[0].md5, cifar100[0].md5) == ("c58f30108f718f92721af3b95e74349a", "eb9058c3a382ffc7106e4002c42a8d85")
    assert all(a.url.startswith("https://") for a in mnist) and len({a.md5 for a in mnist}) == 4


# ----------------------------------------------------------------------------------------- load
def write_npz(path: Path, **overrides) -> Path:
    arrays = {
        "x_train": np.zeros((4, 2, 2, 1), np.uint8), "y_train": np.array([0, 1, 0, 1]),
        "x_test": np.zeros((2, 2, 2, 1), np.uint8), "y_test": np.array([1, 0]), "classes": np.array(["a", "b"]),
    } | overrides
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


def test_load_reads_a_valid_file(tmp_path):
    ds = data.load(write_npz(tmp_path / "ok.npz"))
    assert ds.classes == ["a", "b"] and ds.num_classes == 2 and ds.input_shape == (1, 2, 2)


def test_load_names_a_missing_file(tmp_path):
    with pytest.raises(DataError, match="nope.npz does not exist"):
        data.load(tmp_path / "nope.npz")


def test_load_names_a_truncated_file(tmp_path):
    path = write_npz(tmp_path / "cut.npz")
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match=f"{path} is not a readable npz"):
        data.load(path)


@pytest.mark.parametrize(
    "override, problem",
    [
        ({"y_test": None}, "lacks y_test"),
        ({"x_train": np.zeros((4, 2, 2, 1), np.float32)}, "x_train must be uint8"),
        ({"y_train": np.array([0, 1, 0])}, "y_train must be int64 of shape"),
        ({"y_test": np.array([1, 2])}, r"y_test has labels in \[1, 2\]"),
        ({"x_test": np.zeros((2, 3, 3, 1), np.uint8)}, "train images are"),
        ({"x_train": np.zeros((4, 3, 8, 8), np.uint8)},
         r"x_train has shape \(4, 3, 8, 8\): channel-first .*np\.transpose\(x, \(0, 2, 3, 1\)\)"),
        ({"x_train": np.zeros((4, 8, 8, 5), np.uint8)}, r"x_train has shape \(4, 8, 8, 5\): its last axis \(5\)"),
        ({"x_test": np.zeros((0, 2, 2, 1), np.uint8), "y_test": np.zeros(0, np.int64)}, "x_test is empty"),
        ({"x_train": np.zeros((0, 2, 2, 1), np.uint8), "y_train": np.zeros(0, np.int64)}, "x_train is empty"),
        ({"classes": np.array(["a", "b", "c"])}, "classes has 3 names but the labels stop at 1"),
        ({"classes": np.array(["a", "a"])}, r"classes names \['a'\] more than once"),
        ({"y_train": np.array([0, 1, 0, -1])}, r"y_train has labels in \[-1, 1\], outside \[0, 1\]"),
    ],
)
def test_load_names_the_file_and_the_problem(tmp_path, override, problem):
    path = write_npz(tmp_path / "bad.npz", **override)
    with pytest.raises(DataError, match=f"{path}.*{problem}"):
        data.load(path)


@pytest.mark.parametrize(
    "name, override, problem",
    [
        ("cifar10", {"x_train": np.zeros((4, 3, 32, 32), np.uint8), "x_test": np.zeros((2, 3, 32, 32), np.uint8)},
         r"x_train has shape \(4, 3, 32, 32\): channel-first"),
        ("cifar10", {}, "cifar10 images must be 32×32×3 \\(H×W×C\\), got 2×2×1"),
        ("mnist", {"x_train": np.zeros((4, 28, 28, 3), np.uint8), "x_test": np.zeros((2, 28, 28, 3), np.uint8)},
         "mnist images must be 28×28×1"),
        ("cifar100", {"x_train": np.zeros((4, 32, 32, 3), np.uint8), "x_test": np.zeros((2, 32, 32, 3), np.uint8)},
         "cifar100 has 100 classes, the file's classes array 2"),
    ],
)
def test_a_known_dataset_must_have_its_shape_and_classes(tmp_path, name, override, problem):
    """The registry knows each dataset's image shape and class count; a file put in place by hand is held to them."""
    path = write_npz(tmp_path / f"{name}.npz", **override)
    with pytest.raises(DataError, match=f"{path}: {problem}"):
        data.load(path)
    if "channel-first" not in problem:  # the same arrays under a name the registry does not fix are fine
        data.load(write_npz(tmp_path / "mine.npz", **override))


@pytest.mark.parametrize("key, n, problem", [
    ("train_subset", 5, "recipe key train_subset is 5, but dataset file f.npz has only 4 training images"),
    ("eval_subset", 3, "recipe key eval_subset is 3, but dataset file f.npz has only 2 test images"),
])
def test_a_subset_larger_than_its_split_is_named(tmp_path, key, n, problem):
    ds = data.load(write_npz(tmp_path / "f.npz"))
    data.check_subsets(ds, 4, 2, "dataset file f.npz")  # the whole split is fine
    with pytest.raises(DataError, match=problem):
        data.check_subsets(ds, **{"train_subset": None, "eval_subset": None, key: n}, source="dataset file f.npz")


def test_mean_and_std_come_from_the_training_split():
    x = np.random.default_rng(2).integers(0, 256, (10, 5, 5, 3), dtype=np.uint8)
    ds = Dataset(x, np.zeros(10, np.int64), x[:2] * 0, np.zeros(2, np.int64), ["a"])
    pixels = x.reshape(-1, 3) / 255
    np.testing.assert_allclose(ds.mean, pixels.mean(0), rtol=1e-6)
    np.testing.assert_allclose(ds.std, pixels.std(0), rtol=1e-6)
    assert ds.mean.dtype == np.float32


# ------------------------------------------------------------------------------ offline datasets
@pytest.mark.parametrize(
    "name, train, test, shape", [("digits", 1438, 359, (1, 8, 8)), ("synthetic", 2000, 500, (3, 16, 16))]
)
def test_offline_datasets_are_deterministic(tmp_path, name, train, test, shape):
    a, b = (data.load(data.prepare(name, tmp_path / f"{i}" / f"{name}.npz")) for i in range(2))
    assert (len(a.x_train), len(a.x_test), a.input_shape, a.num_classes) == (train, test, shape, 10)
    for k in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k))
    assert a.x_train.max() == 255 and set(a.y_train) == set(range(10))


def test_synthetic_classes_are_separable_but_noisy(tmp_path):
    ds = data.load(data.prepare("synthetic", tmp_path / "synthetic.npz"))
    assert ds.classes[0] == "class0" and np.bincount(ds.y_train).tolist() == [200] * 10
    flat = lambda x: x.reshape(len(x), -1).astype(np.float64)  # noqa: E731
    centroids = np.stack([flat(ds.x_train)[ds.y_train == c].mean(0) for c in range(10)])
    nearest = ((flat(ds.x_test)[:, None] - centroids) ** 2).sum(-1).argmin(1)
    assert (nearest == ds.y_test).mean() > 0.5  # chance is 0.1
    assert np.abs(flat(ds.x_train) - centroids[ds.y_train]).mean() > 30  # noise, not clean templates


# ------------------------------------------------------------------------------------ the loader
N, B = 70, 16
X = np.random.default_rng(3).integers(0, 256, (N, 6, 6, 3), dtype=np.uint8)
Y = np.arange(N)  # label = index, so batches reveal which images they hold


def loader(**kw) -> DeviceLoader:
    args = dict(batch_size=B, device="cpu", mean=[0.0] * 3, std=[1.0] * 3, train=True, seed=7, pad=2) | kw
    return DeviceLoader(X, Y, **args)


def normalised(x: np.ndarray, ds: Dataset) -> torch.Tensor:
    """The reference: NHWC uint8 -> NCHW float, standardised with the dataset's statistics."""
    mean, std = (torch.from_numpy(v).view(1, -1, 1, 1) for v in (ds.mean, ds.std))
    return (torch.from_numpy(x).permute(0, 3, 1, 2) / 255 - mean) / std


def test_train_batches_depend_only_on_seed_and_epoch():
    first, again = list(loader().epoch(3)), list(loader().epoch(3))
    for (xa, ya), (xb, yb) in zip(first, again, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(first[0][1], next(loader().epoch(4))[1])
    assert not torch.equal(first[0][1], next(loader(seed=8).epoch(3))[1])


def test_train_epoch_shuffles_and_drops_the_last_partial_batch():
    batches = list(loader().epoch(0))
    assert len(loader()) == len(batches) == N // B
    assert all(x.shape == (B, 3, 6, 6) and x.dtype == torch.float32 and y.dtype == torch.int64 for x, y in batches)
    seen = torch.cat([y for _, y in batches])
    assert len(set(seen.tolist())) == N // B * B and not torch.equal(seen, seen.sort().values)


def test_augmentation_is_a_black_padded_crop_and_flip_of_each_image():
    pad, h = 2, 6
    shifts, flips = set(), set()
    for (xa, ya), (xp, yp) in zip(loader().epoch(0), loader(augment=False).epoch(0), strict=True):
        assert torch.equal(ya, yp)  # augmentation never changes which images an epoch visits
        padded = F.pad(xp, (pad, pad, pad, pad))
        for aug, img in zip(xa, padded):
            found = [
                (dy, dx, flip)
                for dy in range(2 * pad + 1)
                for dx in range(2 * pad + 1)
                for flip in (False, True)
                if torch.equal(aug, (lambda c: c.flip(-1) if flip else c)(img[:, dy : dy + h, dx : dx + h]))
            ]
            assert found, "an augmented image is no crop/flip of its original"
            shifts.add(found[0][:2])
            flips.add(found[0][2])
    assert len(shifts) > 5 and flips == {False, True}


def test_eval_keeps_order_and_the_last_batch_and_normalises():
    ds = Dataset(X, Y, X, Y, [str(i) for i in range(N)])
    ev = loader(train=False, mean=ds.mean, std=ds.std)
    batches = list(ev.epoch(0))
    assert len(ev) == len(batches) == 5 and len(batches[-1][1]) == N - 4 * B
    x = torch.cat([b[0] for b in batches])
    assert torch.equal(torch.cat([b[1] for b in batches]), torch.arange(N))
    assert x.mean((0, 2, 3)).abs().max() < 1e-5 and (x.std((0, 2, 3)) - 1).abs().max() < 1e-2
    torch.testing.assert_close(x, normalised(X, ds))
    xl = next(loader(train=False, channels_last=True).epoch(0))[0]
    assert xl.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(xl, next(loader(train=False).epoch(0))[0])


def test_a_batch_larger_than_the_training_split_is_refused():
    with pytest.raises(ValueError, match="batch_size 71"):
        loader(batch_size=N + 1)


def test_sample_batch_draws_distinct_normalised_images_per_generator():
    ds = Dataset(X, Y, X, Y, [str(i) for i in range(N)])
    x, y = data.sample_batch(ds, 20, torch.Generator().manual_seed(0), "cpu")
    x2, y2 = data.sample_batch(ds, 20, torch.Generator().manual_seed(0), "cpu")
    assert torch.equal(x, x2) and torch.equal(y, y2) and len(set(y.tolist())) == 20
    assert not torch.equal(y, data.sample_batch(ds, 20, torch.Generator().manual_seed(1), "cpu")[1])
    torch.testing.assert_close(x, normalised(X[y.numpy()], ds))
