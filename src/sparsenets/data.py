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
import io
import math
import os
import pickle
import tarfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from ssl import create_default_context
from typing import Callable, Iterator, Sequence
from urllib.parse import urlsplit

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from . import catalogue
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
    """How a dataset is made: `convert` turns the local copies of `archives` (none if offline) into arrays.
    What it is (its shape, classes and sizes, which a file put in place by hand is checked against on load) is
    its entry in `sparsenets.catalogue`."""

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


def _tiny_imagenet(archive: Path, root: str = "tiny-imagenet-200") -> Arrays:
    """Tiny-ImageNet's zip: 64x64 JPEGs, train/<wnid>/images/*.JPEG and val/images/*.JPEG labelled by
    val/val_annotations.txt; classes in wnids.txt order. Its unlabelled test split is left out."""
    with zipfile.ZipFile(archive) as zf:
        names = set(zf.namelist())

        def text(member: str) -> list[str]:
            if f"{root}/{member}" not in names:
                raise DataError(f"{archive} lacks {root}/{member}: not the Tiny-ImageNet archive, or a damaged one")
            return zf.read(f"{root}/{member}").decode().split("\n")

        wnids = [w.strip() for w in text("wnids.txt") if w.strip()]
        index = {w: i for i, w in enumerate(wnids)}
        train = [(f, i) for w, i in index.items() for f in _numbered(names, f"{root}/train/{w}/images/")]
        if not train or {i for _, i in train} != set(index.values()):
            raise DataError(f"{archive}: some classes of wnids.txt have no images under {root}/train/")
        val = []
        for line in filter(str.strip, text("val/val_annotations.txt")):
            fields = line.split("\t")
            if len(fields) < 2 or fields[1] not in index:
                raise DataError(f"{archive}: {root}/val/val_annotations.txt has a line {line!r} "
                                "whose second field is not a class of wnids.txt")
            val.append((f"{root}/val/images/{fields[0]}", index[fields[1]]))
        val.sort(key=lambda item: _number(item[0]))
        x_train, y_train = _decode(zf, archive, train)
        x_test, y_test = _decode(zf, archive, val)
    return dict(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, classes=np.array(wnids))


def _number(member: str) -> int:
    """The k of `..._<k>.JPEG`, so that images keep the archive's numbering (10 after 9, not after 1)."""
    return int(member.rsplit("_", 1)[-1].split(".")[0])


def _numbered(names: set[str], folder: str) -> list[str]:
    return sorted((n for n in names if n.startswith(folder) and n.endswith(".JPEG")), key=_number)


def _decode(zf: zipfile.ZipFile, archive: Path, items: list[tuple[str, int]], size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Decode JPEG members into one preallocated uint8 NHWC array (greyscale ones as RGB)."""
    from PIL import Image

    x = np.empty((len(items), size, size, 3), np.uint8)
    for k, (member, _) in enumerate(items):
        try:
            with Image.open(io.BytesIO(zf.read(member))) as img:
                pixels = np.asarray(img.convert("RGB"))
        except KeyError:
            raise DataError(f"{archive} lacks {member}, which val_annotations.txt lists") from None
        if pixels.shape != x.shape[1:]:
            raise DataError(f"{archive}: {member} is {pixels.shape[1]}x{pixels.shape[0]}, not {size}x{size}")
        x[k] = pixels
    return x, np.array([label for _, label in items], np.int64)


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
    # the canonical URL is plain http (refused here): the same host over https, or the zip placed in data/
    "tiny-imagenet": Source(
        _tiny_imagenet,
        (Archive("https://cs231n.stanford.edu/tiny-imagenet-200.zip", "90528d7ca1a48142e341f4ef8d21d0de"),),
    ),
    "digits": Source(_digits),
    "synthetic": Source(_synthetic),
}
catalogue.registered(DATASETS, catalogue.DATASETS, "dataset")


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
    _check(arrays, f"converted {name} data", name)
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


def load(path: str | os.PathLike, name: str | None = None) -> Dataset:
    """Read and validate a dataset npz; any problem is a DataError naming the file.

    `name` (default: the file's stem, as in data/{dataset}.npz) picks the registry entry whose image
    shape and number of classes the file must match, where the entry fixes them.
    """
    path, name = Path(path), name or Path(path).stem
    if not path.exists():
        make = (f"run `python -m sparsenets data --dataset {name} --out {path}` (snakemake runs it for you) or "
                if name in DATASETS else f"`python -m sparsenets data` makes {', '.join(sorted(DATASETS))}; ")
        raise DataError(f"dataset file {path} does not exist: {make}put the npz there")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in KEYS if k not in npz.files]
            if missing:
                raise DataError(f"dataset file {path} lacks {', '.join(missing)} (expected keys: {', '.join(KEYS)})")
            arrays = {k: npz[k] for k in KEYS}
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - truncated or foreign files get one clear message
        raise DataError(f"dataset file {path} is not a readable npz ({type(e).__name__}: {e}); delete it "
                        "and it is made again (downloaded or converted), or put a good copy there") from e
    _check(arrays, f"dataset file {path}", name)
    return Dataset(**{k: arrays[k] for k in KEYS[:4]}, classes=[str(c) for c in arrays["classes"]])


def _check(a: Arrays, source: str, name: str | None = None) -> None:
    """Enforce the npz contract, so a bad file fails here and not deep inside training."""
    classes = a["classes"]
    if classes.ndim != 1 or classes.dtype.kind not in "US" or len(classes) == 0:
        raise DataError(f"{source}: classes must be a non-empty 1-D array of str, not {classes.dtype} {classes.shape}")
    for split in ("train", "test"):
        _check_images(a[f"x_{split}"], f"{source}: x_{split}")
        _check_labels(a[f"y_{split}"], a[f"x_{split}"], classes, f"{source}: y_{split}")
    if a["x_train"].shape[1:] != a["x_test"].shape[1:]:
        raise DataError(f"{source}: train images are {a['x_train'].shape[1:]}, test images {a['x_test'].shape[1:]}")
    _check_classes(a, source)
    _check_registry(a, source, name)


def _check_images(x: np.ndarray, what: str) -> None:
    """uint8 N×H×W×C with C in {1, 3} and N > 0; a channel-first array gets the transpose that fixes it."""
    if x.dtype != np.uint8 or x.ndim != 4:
        raise DataError(f"{what} must be uint8 N×H×W×C, got {x.dtype} {x.shape}")
    if len(x) == 0:
        raise DataError(f"{what} is empty (shape {x.shape}): the split needs at least one image")
    if x.shape[3] not in (1, 3):
        if x.shape[1] in (1, 3):
            raise DataError(f"{what} has shape {x.shape}: channel-first (N×C×H×W), but images must be "
                            f"N×H×W×C; convert with np.transpose(x, (0, 2, 3, 1)) and save the npz again")
        raise DataError(f"{what} has shape {x.shape}: its last axis ({x.shape[3]}) must be the 1 or 3 "
                        "colour channels (N×H×W×C)")


def _check_labels(y: np.ndarray, x: np.ndarray, classes: np.ndarray, what: str) -> None:
    """int64, one label per image, each an index into `classes`."""
    if y.dtype != np.int64 or y.shape != x.shape[:1]:
        raise DataError(f"{what} must be int64 of shape {x.shape[:1]}, got {y.dtype} {y.shape}")
    if y.min() < 0 or y.max() >= len(classes):
        raise DataError(f"{what} has labels in [{y.min()}, {y.max()}], outside [0, {len(classes) - 1}] "
                        f"(classes has {len(classes)} names)")


def _check_classes(a: Arrays, source: str) -> None:
    """`classes` names each label once, and no more names than the labels reach: a stale or foreign list
    (which would give the model output units no image ever asks for) is an error. A small sample may miss
    some classes, so only the highest label is required to be the last name."""
    classes = a["classes"]
    names, counts = np.unique(classes, return_counts=True)
    if (counts > 1).any():
        raise DataError(f"{source}: classes names {names[counts > 1].tolist()} more than once")
    top = int(max(a["y_train"].max(), a["y_test"].max()))
    if top + 1 < len(classes):
        raise DataError(f"{source}: classes has {len(classes)} names but the labels stop at {top} "
                        f"({classes[top]}): classes does not match the labels; fix the classes array "
                        "or the labels")


def _check_registry(a: Arrays, source: str, name: str | None) -> None:
    """A catalogued dataset's file must hold its image shape and number of classes (unless the catalogue says
    the dataset may be made otherwise: synthetic)."""
    entry = catalogue.DATASETS.get(name or "")
    if entry is None or not entry.exact:
        return
    shape = a["x_train"].shape[1:]
    c, h, w = entry.shape
    if tuple(shape) != (h, w, c):
        raise DataError(f"{source}: {name} images must be {h}×{w}×{c} (H×W×C), got {shape[0]}×{shape[1]}×{shape[2]}")
    if len(a["classes"]) != entry.classes:
        raise DataError(f"{source}: {name} has {entry.classes} classes, the file's classes array "
                        f"{len(a['classes'])}")


def check_subsets(ds: Dataset, train_subset: int | None, eval_subset: int | None, source: str) -> None:
    """A recipe's subsets must fit the file: asking for more images than there are is a mistake, not a no-op."""
    for key, n, split in (("train_subset", train_subset, ds.y_train), ("eval_subset", eval_subset, ds.y_test)):
        if n and n > len(split):
            kind = "training" if key == "train_subset" else "test"
            raise DataError(f"recipe key {key} is {n}, but {source} has only {len(split)} {kind} images: "
                            f"lower {key} or use a larger file")


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
