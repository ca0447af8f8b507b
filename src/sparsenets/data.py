"""Datasets: get one to `data/{name}.npz`, check it on load, and serve it from the training device.

The npz is the contract between rules: `x_train, y_train, x_test, y_test` (uint8 NHWC images,
int64 labels) and `classes`. A user who already has the file puts it in place and nothing is
downloaded. Serving keeps the whole split on the device as uint8 and crops, flips and normalises
each batch there, so a training step never waits for the host.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import http.client
import math
import os
import pickle
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from ssl import create_default_context
from typing import Callable, Iterator, Sequence
from urllib.parse import urlsplit

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .io import atomic_path, save_npz

Arrays = dict[str, np.ndarray]
KEYS = ("x_train", "y_train", "x_test", "y_test", "classes")


class DataError(RuntimeError):
    """A dataset could not be fetched, converted or read; the message says which file and why."""


# --------------------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class Archive:
    """A file on a server and the md5 it must have."""

    url: str
    md5: str

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Source:
    """How a dataset is made: `convert` turns the local copies of `archives` (none if offline) into arrays."""

    convert: Callable[..., Arrays]
    archives: tuple[Archive, ...] = ()


def _cifar(
    archive: Path, *, folder: str, train: Sequence[str], test: str, meta: str, labels: str, names: str
) -> Arrays:
    """Read the pickled batches of the CIFAR python archives (rows of 3072 bytes: R, G, B planes)."""
    with tarfile.open(archive, "r:gz") as tar:

        def unpickle(member: str) -> dict:
            with tar.extractfile(f"{folder}/{member}") as f:
                return pickle.load(f, encoding="latin1")

        def split(members: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
            batches = [unpickle(m) for m in members]
            x = np.concatenate([np.asarray(b["data"], np.uint8) for b in batches])
            y = np.concatenate([np.asarray(b[labels], np.int64) for b in batches])
            return x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), y

        x_train, y_train = split(train)
        x_test, y_test = split([test])
        classes = np.array(unpickle(meta)[names])
    return dict(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, classes=classes)


def _idx(path: Path) -> np.ndarray:
    """Read a gzipped idx file of unsigned bytes (magic 0x0000 08 ndim, then big-endian sizes)."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if raw[:3] != b"\x00\x00\x08":
        raise DataError(f"{path} is not an idx file of unsigned bytes (magic {raw[:4].hex()})")
    ndim = raw[3]
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _mnist(train_images: Path, train_labels: Path, test_images: Path, test_labels: Path) -> Arrays:
    return dict(
        x_train=_idx(train_images)[..., None],
        y_train=_idx(train_labels).astype(np.int64),
        x_test=_idx(test_images)[..., None],
        y_test=_idx(test_labels).astype(np.int64),
        classes=np.array([str(d) for d in range(10)]),
    )


def _digits(seed: int = 0, test_fraction: float = 0.2) -> Arrays:
    """scikit-learn's 8x8 digits (values 0..16) as uint8 images, split once with a fixed seed."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = np.round(digits.images * (255 / 16)).astype(np.uint8)[..., None]
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = round(test_fraction * len(y))
    test, train = order[:n_test], order[n_test:]
    classes = np.array([str(d) for d in range(10)])
    return dict(x_train=x[train], y_train=y[train], x_test=x[test], y_test=y[test], classes=classes)


def _synthetic(seed: int = 0, classes: int = 10, size: int = 16, n_train: int = 2000, n_test: int = 500) -> Arrays:
    """Smooth random colour templates, one per class, under strong pixel noise: learnable in an
    epoch or two (a small convnet reaches ~90% after two) without being trivially solved."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(classes, 3, 4, 4, generator=g)
    templates = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = torch.randperm(n, generator=g) % classes
        x = 128 + 32 * templates[y] + 64 * torch.randn(n, 3, size, size, generator=g)
        x = x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
        return x.numpy(), y.numpy().astype(np.int64)

    x_train, y_train = split(n_train)
    x_test, y_test = split(n_test)
    names = np.array([f"class{c}" for c in range(classes)])
    return dict(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, classes=names)


_KRIZ = "https://www.cs.toronto.edu/~kriz"
_MNIST = "https://ossci-datasets.s3.amazonaws.com/mnist"

DATASETS: dict[str, Source] = {
    "cifar10": Source(
        functools.partial(
            _cifar, folder="cifar-10-batches-py", train=[f"data_batch_{i}" for i in range(1, 6)],
            test="test_batch", meta="batches.meta", labels="labels", names="label_names",
        ),
        (Archive(f"{_KRIZ}/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),),
    ),
    "cifar100": Source(
        functools.partial(
            _cifar, folder="cifar-100-python", train=["train"], test="test", meta="meta",
            labels="fine_labels", names="fine_label_names",
        ),
        (Archive(f"{_KRIZ}/cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85"),),
    ),
    "mnist": Source(
        _mnist,
        (
            Archive(f"{_MNIST}/train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
            Archive(f"{_MNIST}/train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
            Archive(f"{_MNIST}/t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
            Archive(f"{_MNIST}/t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
        ),
    ),
    "digits": Source(_digits),
    "synthetic": Source(_synthetic),
}


# ---------------------------------------------------------------------------------------- prepare
def prepare(
    name: str,
    out: str | os.PathLike,
    *,
    mirror: str | None = None,
    cafile: str | None = None,
) -> Path:
    """Write dataset `name` to `out`, from archives in out's folder or downloaded there.

    `mirror` (or $SPARSENETS_DATA_MIRROR) is an https base URL that replaces the official host;
    `cafile` (or $SPARSENETS_CA_BUNDLE) adds a CA bundle to the system's. The npz appears whole or
    not at all.
    """
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(DATASETS))}")
    source, out = DATASETS[name], Path(out)
    cache = out.parent
    mirror = mirror or os.environ.get("SPARSENETS_DATA_MIRROR") or None
    cafile = cafile or os.environ.get("SPARSENETS_CA_BUNDLE") or None
    paths = [_fetch(a, cache, mirror, cafile, out) for a in source.archives]
    try:
        arrays = source.convert(*paths)
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - any unreadable archive gets one clear message
        files = ", ".join(str(p) for p in paths)
        raise DataError(f"could not convert {files} to the {name} dataset ({type(e).__name__}: {e})") from e
    _check(arrays, f"converted {name} data")
    save_npz(out, arrays)
    return out


def _fetch(archive: Archive, cache: Path, mirror: str | None, cafile: str | None, out: Path) -> Path:
    """The local copy of `archive`: the one already in `cache` if its md5 matches, else a fresh download."""
    path = cache / archive.filename
    if path.exists():
        actual = _md5(path)
        if actual != archive.md5:
            raise DataError(f"{path} has md5 {actual}, expected {archive.md5}: remove it to download it again")
        return path
    url = f"{mirror.rstrip('/')}/{archive.filename}" if mirror else archive.url
    if urlsplit(url).scheme != "https":
        raise DataError(f"refusing to download {url}: only https:// URLs are allowed")
    cache.mkdir(parents=True, exist_ok=True)
    try:
        _download(url, path, archive.md5, cafile)
    except (OSError, http.client.HTTPException) as e:  # URLError, SSL errors and timeouts are OSErrors
        reason = getattr(e, "reason", None) or e
        raise DataError(
            f"could not download {url} ({reason}). Without network access, put {out} in place "
            f"(or the original archive {archive.filename} in {cache}) and no download runs."
        ) from e
    return path


class _HttpsOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect must not downgrade the download to plain http."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urlsplit(newurl).scheme != "https":
            raise urllib.error.URLError(f"refusing redirect to non-https URL {newurl}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _download(url: str, dest: Path, md5: str, cafile: str | None) -> None:
    """Stream `url` to a temporary file beside `dest`, hashing as it goes; rename only if the md5 matches."""
    context = create_default_context()
    if cafile:
        context.load_verify_locations(cafile)
    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context), _HttpsOnlyRedirects)
    digest = hashlib.md5()
    with atomic_path(dest) as tmp:
        with open(tmp, "wb") as f, opener.open(url, timeout=60) as response:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                f.write(chunk)
        if digest.hexdigest() != md5:
            raise DataError(f"download of {url} ({dest.name}) has md5 {digest.hexdigest()}, expected {md5}; deleted it")


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------- load
@dataclass
class Dataset:
    """One dataset in memory, as the npz holds it."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W), as the models expect."""
        _, h, w, c = self.x_train.shape
        return (c, h, w)

    @functools.cached_property
    def _moments(self) -> tuple[np.ndarray, np.ndarray]:
        # a 256-bin histogram per channel gives exact moments without a float copy of the images
        pixels = torch.from_numpy(self.x_train).reshape(-1, self.x_train.shape[-1])
        counts = torch.stack([torch.bincount(pixels[:, c], minlength=256) for c in range(pixels.shape[1])])
        p = counts.double() / len(pixels)
        values = torch.arange(256, dtype=torch.float64) / 255
        mean = p @ values
        std = (p * (values - mean[:, None]) ** 2).sum(1).sqrt()
        return mean.float().numpy(), std.float().numpy()

    @property
    def mean(self) -> np.ndarray:
        """Per-channel mean of the training images, in [0, 1] units."""
        return self._moments[0]

    @property
    def std(self) -> np.ndarray:
        """Per-channel (population) standard deviation of the training images, in [0, 1] units."""
        return self._moments[1]


def load(path: str | os.PathLike) -> Dataset:
    """Read and validate a dataset npz; any problem is a DataError naming the file."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"dataset file {path} does not exist: run `prepare` or put the npz there")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in KEYS if k not in npz.files]
            if missing:
                raise DataError(f"dataset file {path} lacks {', '.join(missing)} (expected keys: {', '.join(KEYS)})")
            arrays = {k: npz[k] for k in KEYS}
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - truncated or foreign files get one clear message
        raise DataError(f"dataset file {path} is not a readable npz ({type(e).__name__}: {e})") from e
    _check(arrays, f"dataset file {path}")
    return Dataset(**{k: arrays[k] for k in KEYS[:4]}, classes=[str(c) for c in arrays["classes"]])


def _check(a: Arrays, source: str) -> None:
    """Enforce the npz contract, so a bad file fails here and not deep inside training."""
    classes = a["classes"]
    if classes.ndim != 1 or classes.dtype.kind not in "US" or len(classes) == 0:
        raise DataError(f"{source}: classes must be a non-empty 1-D array of str, not {classes.dtype} {classes.shape}")
    for split in ("train", "test"):
        x, y = a[f"x_{split}"], a[f"y_{split}"]
        if x.dtype != np.uint8 or x.ndim != 4:
            raise DataError(f"{source}: x_{split} must be uint8 N×H×W×C, got {x.dtype} {x.shape}")
        if y.dtype != np.int64 or y.shape != x.shape[:1]:
            raise DataError(f"{source}: y_{split} must be int64 of shape {x.shape[:1]}, got {y.dtype} {y.shape}")
        if len(y) and (y.min() < 0 or y.max() >= len(classes)):
            bounds = f"[{y.min()}, {y.max()}], outside [0, {len(classes) - 1}]"
            raise DataError(f"{source}: y_{split} has labels in {bounds}")
    if a["x_train"].shape[1:] != a["x_test"].shape[1:]:
        raise DataError(f"{source}: train images are {a['x_train'].shape[1:]}, test images {a['x_test'].shape[1:]}")


# ---------------------------------------------------------------------------------------- serving
def _standardiser(mean: Sequence[float], std: Sequence[float], device: torch.device | str) -> tuple[Tensor, Tensor]:
    """(scale, shift) such that x * scale + shift == (x / 255 - mean) / std, broadcasting over NCHW."""
    mean, std = (torch.as_tensor(v, dtype=torch.float32, device=device).view(1, -1, 1, 1) for v in (mean, std))
    return 1 / (255 * std), -mean / std


def _normalise(x: Tensor, scale: Tensor, shift: Tensor, channels_last: bool = False) -> Tensor:
    """uint8 NHWC -> standardised float32 NCHW in one pass; any layout change moves bytes, not floats."""
    x = x.permute(0, 3, 1, 2)  # NHWC storage under an NCHW view is channels_last already
    return torch.addcmul(shift, (x if channels_last else x.contiguous()).float(), scale)


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A stream that depends only on (seed, epoch): a resumed run sees the same batches."""
    state = np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


class DeviceLoader:
    """Batches from one split held on `device` as uint8; augmentation is a single gather per batch."""

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        *,
        batch_size: int,
        device: torch.device | str,
        mean: Sequence[float],
        std: Sequence[float],
        train: bool,
        seed: int,
        augment: bool = True,
        pad: int = 4,
        channels_last: bool = False,
    ) -> None:
        if batch_size < 1 or (train and batch_size > len(x)):
            raise ValueError(f"batch_size {batch_size} does not fit a training split of {len(x)} images")
        self.x = torch.from_numpy(np.ascontiguousarray(x)).to(device)
        self.y = torch.from_numpy(np.asarray(y, np.int64)).to(device)
        self.scale, self.shift = _standardiser(mean, std, device)
        self.batch_size, self.train, self.seed = batch_size, train, seed
        self.augment, self.pad, self.channels_last = augment, pad, channels_last

    def __len__(self) -> int:
        n = len(self.x)
        return n // self.batch_size if self.train else math.ceil(n / self.batch_size)

    def epoch(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        """The batches of `epoch`: float32 NCHW normalised images and int64 labels, on the device."""
        batches = [slice(b * self.batch_size, (b + 1) * self.batch_size) for b in range(len(self))]
        if not self.train:
            for rows in batches:
                yield self._out(self.x[rows]), self.y[rows]
            return
        g, n, device = _epoch_generator(self.seed, epoch), len(self.x), self.x.device
        order = torch.randperm(n, generator=g).to(device)
        # offsets and flips are drawn even without augmentation, so `augment` never changes
        # which images an epoch visits, nor their order
        shift = torch.randint(0, 2 * self.pad + 1, (n, 2), generator=g).to(device)
        flip = torch.randint(0, 2, (n,), generator=g).bool().to(device)
        for rows in batches:
            idx = order[rows]
            x = self.x[idx]
            if self.augment:
                x = self._crop_flip(x, shift[rows], flip[rows])
            yield self._out(x), self.y[idx]

    def _crop_flip(self, x: Tensor, shift: Tensor, flip: Tensor) -> Tensor:
        """Per image: zero-pad by `pad`, take the window at `shift`, mirror it if `flip` (NHWC)."""
        n, h, w, _ = x.shape
        padded = F.pad(x, (0, 0, self.pad, self.pad, self.pad, self.pad))
        ys = shift[:, :1] + torch.arange(h, device=x.device)
        xs = shift[:, 1:] + torch.arange(w, device=x.device)
        xs = torch.where(flip[:, None], xs.flip(1), xs)
        return padded[torch.arange(n, device=x.device)[:, None, None], ys[:, :, None], xs[:, None, :]]

    def _out(self, x: Tensor) -> Tensor:
        return _normalise(x, self.scale, self.shift, self.channels_last)


def sample_batch(ds: Dataset, n: int, generator: torch.Generator, device: torch.device | str) -> tuple[Tensor, Tensor]:
    """`n` distinct training images drawn with `generator`, normalised, not augmented (for SNIP and GraSP)."""
    if not 0 < n <= len(ds.x_train):
        raise ValueError(f"cannot draw {n} images from a training split of {len(ds.x_train)}")
    idx = torch.randperm(len(ds.x_train), generator=generator, device=generator.device)[:n].cpu().numpy()
    x = torch.from_numpy(ds.x_train[idx]).to(device)
    return _normalise(x, *_standardiser(ds.mean, ds.std, device)), torch.from_numpy(ds.y_train[idx]).to(device)
