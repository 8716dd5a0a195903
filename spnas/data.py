"""Data sets for search and training, registered through the data-set hook.

``--data digits`` (the default) is scikit-learn's 8x8 digits, embedded in scikit-learn, so a
search needs no download. The others read files the user already has; spnas never downloads:

- ``imagefolder:DIR``: one sub-directory per class (needs Pillow);
- ``cifar10:DIR``: the python version of CIFAR-10 (``data_batch_1..5``, ``test_batch``);
- ``idx:DIR``: MNIST-format IDX files (MNIST, Fashion-MNIST, KMNIST), plain or ``.gz``;
- ``npz:FILE``: a NumPy ``.npz`` with arrays ``x`` and ``y`` (and optionally ``x_test``, ``y_test``).

Every data set splits its training part into train and validation with the same stratified,
seeded split, normalises with the training part's per-channel mean and std, resizes to the
space's resolution (bilinear) and repeats grey images to the space's channels. Array formats keep
their images as stored (uint8) and do this per batch, so CIFAR-10 at 224x224 needs 184 MB, not
36 GB. Nothing read from a file can run code: pickles go through
:class:`spnas.data_formats._SafeUnpickler`, ``.npz``
files are loaded with ``allow_pickle=False``. See docs/data.md.

Example:
    >>> data = load_data("digits", resolution=16, in_chs=3, seed=0)
    >>> data.num_classes, tuple(data.train[0][0].shape), data.hflip
    (10, (3, 16, 16), False)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, TensorDataset

from spnas.errors import SpnasError
from spnas.hookspecs import hookimpl

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
STATS_SAMPLE = 512  # imagefolder: training images read for the mean and std (evenly spaced)


@dataclass(frozen=True)
class DataSplit:
    """A train and a validation set of ``(image, label)`` pairs, images as normalised float CHW tensors.

    ``test`` is the format's own test part (CIFAR-10's ``test_batch``, IDX ``t10k``, npz
    ``x_test``), never used by a search. ``hflip`` says whether a horizontal flip keeps an image's
    class (natural images: yes; digits: no). ``mean`` and ``std`` are the per-channel constants
    the images were normalised with (one per channel of the images yielded), to undo it:
    ``pixel = x * std + mean`` in [0, 1].
    """

    name: str
    train: Dataset
    val: Dataset
    num_classes: int
    test: Dataset | None = None
    hflip: bool = False
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


def _split_indices(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A stratified split: the same ``seed`` and labels give the same split on every machine."""
    rng = np.random.RandomState(seed)
    train, val = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        n_val = max(1, int(round(len(idx) * val_fraction))) if len(idx) > 1 else 0
        val.extend(idx[:n_val])
        train.extend(idx[n_val:])
    return np.sort(np.array(train, dtype=np.int64)), np.sort(np.array(val, dtype=np.int64))


def _to_input(images: torch.Tensor, resolution: int, in_chs: int, source: str = "images") -> torch.Tensor:
    """(N, C, H, W) -> the space's resolution and channels (bilinear; grey repeated, colour into 1 refused)."""
    if images.shape[-1] != resolution or images.shape[-2] != resolution:
        images = F.interpolate(images, size=(resolution, resolution), mode="bilinear", align_corners=False)
    if images.shape[1] != in_chs:
        if images.shape[1] != 1:
            raise SpnasError(f"{source}: {images.shape[1]}-channel images; the space wants {in_chs} "
                             f"(use a space with 'input: {{channels: {images.shape[1]}}}')")
        images = images.expand(-1, in_chs, -1, -1)
    return images.contiguous()


def augment_batch(x: torch.Tensor, *, hflip: bool, pad: int | None = None,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Random crop with zero padding and, when ``hflip``, a random horizontal flip, per image.

    ``x`` is a normalised batch (N, C, H, W), so the zero padding is the training mean. ``pad``
    defaults to ``max(1, H // 8)``: 4 at 32x32, the usual CIFAR crop. The same ``generator``
    state gives the same output; its random numbers are drawn on its own device.

    Example:
        >>> x = torch.arange(16.0).view(1, 1, 4, 4)
        >>> torch.equal(augment_batch(x, hflip=False, pad=0), x)
        True
    """
    n, _, h, w = x.shape
    pad = max(1, h // 8) if pad is None else pad
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    rng = {"generator": generator, "device": generator.device if generator is not None else "cpu"}
    if pad > 0 and n:  # a loop of slices: on a CPU 2-4x faster than one gather with index tensors
        top, left = torch.randint(0, 2 * pad + 1, (2, n), **rng).tolist()
        padded = F.pad(x, (pad, pad, pad, pad))
        x = torch.stack([padded[i, :, top[i]:top[i] + h, left[i]:left[i] + w] for i in range(n)])
    if hflip:
        flip = (torch.rand(n, **rng) < 0.5).to(x.device)
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    return x.contiguous()


class _ArrayImages(Dataset):
    """Images kept as stored, (N, C, H, W) uint8 (or float in [0, 1]); each access normalises,
    resizes and repeats channels, for one item or (through ``__getitems__``) a whole batch."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, indices: np.ndarray | None,
                 mean: Sequence[float], std: Sequence[float], resolution: int, in_chs: int):
        self.images, self.labels = images, labels
        self.indices = None if indices is None else torch.from_numpy(np.asarray(indices, dtype=np.int64))
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self.resolution, self.in_chs = resolution, in_chs

    def __len__(self) -> int:
        return len(self.images) if self.indices is None else len(self.indices)

    def batch(self, items: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (len(items), in_chs, resolution, resolution) and their labels."""
        idx = torch.as_tensor(items, dtype=torch.int64)
        if self.indices is not None:
            idx = self.indices[idx]
        x = self.images[idx]
        x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
        x = (x - self.mean) / self.std  # per-channel affine, so before the (linear) resize is the same
        return _to_input(x, self.resolution, self.in_chs), self.labels[idx]

    def __getitem__(self, i: int):
        x, y = self.batch([i])
        return x[0], y[0]

    def __getitems__(self, items: list[int]) -> list:  # DataLoader fetches a batch in one call
        x, y = self.batch(items)
        return list(zip(x, y))


def _channel_stats(images: np.ndarray, idx: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of ``images[idx]`` in [0, 1]; uint8 through a histogram, float in chunks."""
    means, stds = [], []
    for c in range(images.shape[1]):
        n = s = s2 = 0.0
        for start in range(0, len(idx), 4096):
            part = images[idx[start:start + 4096], c]
            if part.dtype == np.uint8:
                counts = np.bincount(part.ravel(), minlength=256)
                v = np.arange(256) / 255.0
                n, s, s2 = n + counts.sum(), s + counts @ v, s2 + counts @ (v * v)
            else:
                part = part.astype(np.float64)
                n, s, s2 = n + part.size, s + part.sum(), s2 + (part * part).sum()
        mean = s / max(n, 1)
        std = math.sqrt(max(s2 / max(n, 1) - mean * mean, 0.0))
        means.append(float(mean))
        stds.append(std if std > 1e-6 else 1.0)  # a constant channel is only centred
    return means, stds


def _array_split(name: str, images: np.ndarray, labels: np.ndarray, *, resolution: int, in_chs: int, seed: int,
                 val_fraction: float, num_classes: int, hflip: bool,
                 test: tuple[np.ndarray, np.ndarray] | None = None) -> DataSplit:
    """A :class:`DataSplit` over (N, C, H, W) arrays: stratified split, train statistics, lazy resize."""
    chs = images.shape[1]
    if chs != in_chs and chs != 1:
        raise SpnasError(f"{name}: {chs}-channel images; the space wants {in_chs} "
                         f"(use a space with 'input: {{channels: {chs}}}')")
    train_idx, val_idx = _split_indices(labels, val_fraction, seed)
    if not len(val_idx):
        raise SpnasError(f"{name}: {len(labels)} training images, at most one per class; too few to split off "
                         "a validation set")
    mean, std = _channel_stats(images, train_idx)
    x, y = torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))

    def part(x, y, idx):
        return _ArrayImages(x, y, idx, mean, std, resolution, in_chs)

    test_set = None
    if test is not None:
        test_set = part(torch.from_numpy(test[0]), torch.from_numpy(test[1].astype(np.int64)), None)
    reps = in_chs // chs
    return DataSplit(name, part(x, y, train_idx), part(x, y, val_idx), num_classes, test=test_set, hflip=hflip,
                     mean=tuple(mean * reps), std=tuple(std * reps))


def load_digits(arg: str | None, resolution: int, in_chs: int, seed: int = 0,
                val_fraction: float = 0.2) -> DataSplit:
    """scikit-learn's digits (1,797 8x8 grey images, 10 classes), normalised with train statistics.

    Eager (1,797 small images), and normalised with one mean and std over all channels of the
    resized images, as before the other data sets came.
    """
    from sklearn.datasets import load_digits as _load

    if arg:
        raise SpnasError(f"--data digits takes no argument; got 'digits:{arg}'")
    bunch = _load()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = np.asarray(bunch.target, dtype=np.int64)
    train_idx, val_idx = _split_indices(labels, val_fraction, seed)
    images = _to_input(images, resolution, in_chs)
    mean, std = images[train_idx].mean(), images[train_idx].std()
    images = (images - mean) / std
    y = torch.from_numpy(labels)
    return DataSplit("digits", TensorDataset(images[train_idx], y[train_idx]),
                     TensorDataset(images[val_idx], y[val_idx]), 10,
                     mean=(float(mean),) * in_chs, std=(float(std),) * in_chs)


def _read_image(path: Path, in_chs: int) -> np.ndarray:
    """(C, H, W) float32 in [0, 1]; C is 1 for a grey image, else 3 (a colour image into 1 channel is refused)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            grey = img.getbands()[0] in ("L", "I", "F", "1")
            arr = np.asarray(img.convert("L" if grey else "RGB"), dtype=np.float32) / 255.0
    except Exception as exc:  # PIL raises many kinds of errors for a bad file
        raise SpnasError(f"{path}: cannot read image ({exc})") from None
    if arr.ndim == 3 and in_chs == 1:
        if not (np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2])):
            raise SpnasError(f"{path}: a colour image; the space wants 1 channel "
                             "(use a space with 'input: {channels: 3}', or grey images)")
        arr = arr[..., :1]
    return arr[None] if arr.ndim == 2 else np.ascontiguousarray(arr.transpose(2, 0, 1))


class _ImageFiles(Dataset):
    """Images read on access (so a large folder does not have to fit in memory)."""

    def __init__(self, files: list[Path], labels: list[int], resolution: int, in_chs: int,
                 mean: Sequence[float], std: Sequence[float]):
        self.files, self.labels, self.resolution, self.in_chs = files, labels, resolution, in_chs
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        t = _to_input(torch.from_numpy(_read_image(self.files[i], self.in_chs))[None], self.resolution,
                      self.in_chs, str(self.files[i]))[0]
        return (t - self.mean) / self.std, self.labels[i]


def _image_stats(files: list[Path], in_chs: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std over up to STATS_SAMPLE evenly spaced images, each at its own size."""
    pick = np.unique(np.linspace(0, len(files) - 1, min(len(files), STATS_SAMPLE)).astype(np.int64))
    n, s, s2 = 0, np.zeros(in_chs), np.zeros(in_chs)
    for i in pick:
        a = _read_image(files[i], in_chs).astype(np.float64)
        a = np.broadcast_to(a, (in_chs, *a.shape[1:]))  # grey into 3 channels: repeated
        n, s, s2 = n + a[0].size, s + a.sum(axis=(1, 2)), s2 + (a * a).sum(axis=(1, 2))
    mean = s / n
    std = np.sqrt(np.maximum(s2 / n - mean * mean, 0.0))
    return tuple(map(float, mean)), tuple(float(v) if v > 1e-6 else 1.0 for v in std)


def load_imagefolder(arg: str | None, resolution: int, in_chs: int, seed: int = 0,
                     val_fraction: float = 0.2) -> DataSplit:
    """``DIR/<class>/<image>``; or ``DIR/train/<class>/...`` and ``DIR/val/<class>/...``."""
    if not arg:
        raise SpnasError("--data imagefolder needs a directory: --data imagefolder:DIR")
    try:
        import PIL  # noqa: F401
    except ImportError:
        raise SpnasError("--data imagefolder needs Pillow: pip install pillow") from None
    root = Path(arg)
    if not root.is_dir():
        raise SpnasError(f"{root}: no such directory (--data imagefolder:DIR)")
    if (root / "train").is_dir() and (root / "val").is_dir():
        classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
        tr_files, tr_labels = _scan(root / "train", classes)
        va_files, va_labels = _scan(root / "val", classes)
    else:
        classes = sorted(p.name for p in root.iterdir() if p.is_dir())
        files, labels = _scan(root, classes)
        tr, va = _split_indices(np.array(labels), val_fraction, seed)
        tr_files, tr_labels = [files[i] for i in tr], [labels[i] for i in tr]
        va_files, va_labels = [files[i] for i in va], [labels[i] for i in va]
    if len(classes) < 2:
        raise SpnasError(f"{root}: found {len(classes)} class directories; need at least 2")
    if not tr_files or not va_files:
        raise SpnasError(f"{root}: no images found (suffixes: {', '.join(IMAGE_SUFFIXES)})")
    mean, std = _image_stats(tr_files, in_chs)
    return DataSplit(f"imagefolder:{root}", _ImageFiles(tr_files, tr_labels, resolution, in_chs, mean, std),
                     _ImageFiles(va_files, va_labels, resolution, in_chs, mean, std), len(classes),
                     hflip=True, mean=mean, std=std)


def _scan(root: Path, classes: list[str]) -> tuple[list[Path], list[int]]:
    files, labels = [], []
    for c, name in enumerate(classes):
        for path in sorted((root / name).rglob("*")):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                files.append(path)
                labels.append(c)
    return files, labels


DataFactory = Callable[..., DataSplit]


def load_data(text: str, resolution: int, in_chs: int, seed: int = 0, val_fraction: float = 0.2) -> DataSplit:
    """``NAME`` or ``NAME:ARG`` (e.g. ``digits``, ``cifar10:/data/cifar``), looked up in the registry."""
    from spnas.registry import get_registry

    name, _, arg = text.partition(":")
    factory: DataFactory = get_registry().get("dataset", name)
    return factory(arg or None, resolution, in_chs, seed=seed, val_fraction=val_fraction)


@hookimpl
def spnas_register_datasets(register):
    from spnas.data_formats import load_cifar10, load_idx, load_npz

    register("digits", load_digits)
    register("imagefolder", load_imagefolder)
    register("cifar10", load_cifar10)
    register("idx", load_idx)
    register("npz", load_npz)
