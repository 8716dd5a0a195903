"""Data sets for search and training, registered through the data-set hook.

``--data digits`` (the default) is the 8x8 digits of scikit-learn and the UCI repository, shipped
with spnas as ``spnas/data/digits.npz`` (45 kB; source and licence in ``spnas/data/NOTICE.md``),
so a search needs no download and no scikit-learn. The others read files the user already has; spnas never downloads:

- ``imagefolder:DIR``: one sub-directory per class (needs Pillow);
- ``cifar10:DIR``: the python version of CIFAR-10 (``data_batch_1..5``, ``test_batch``);
- ``idx:DIR``: MNIST-format IDX files (MNIST, Fashion-MNIST, KMNIST), plain or ``.gz``;
- ``npz:FILE``: a NumPy ``.npz`` with arrays ``x`` and ``y`` (and optionally ``x_test``, ``y_test``).

Every data set splits its training part into train and validation with the same stratified,
seeded split, normalises with the training part's per-channel mean and std, resizes to the
space's resolution (bilinear) and repeats grey images to the space's channels. Array formats keep
their images as stored (uint8) and do this per batch, so CIFAR-10 at 224x224 needs 184 MB, not
36 GB. Nothing read from a file can run code: pickles go through
:class:`spnas.data.formats._SafeUnpickler`, ``.npz``
files are loaded with ``allow_pickle=False``. See docs/data.md.

Example:
    >>> data = load_data("digits", resolution=16, in_chs=3, seed=0)
    >>> data.num_classes, tuple(data.train[0][0].shape), data.hflip
    (10, (3, 16, 16), False)
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from spnas.core.errors import SpnasError
from spnas.core.hookspecs import hookimpl
from spnas.data.split import DataSplit, _split_indices, _to_input

#: the embedded default data set (spnas/data/NOTICE.md: source and licence)
DIGITS_FILE = Path(__file__).resolve().parent / "digits.npz"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
STATS_SAMPLE = 512  # imagefolder: training images read for the mean and std (evenly spaced)


def load_digits(arg: str | None, resolution: int, in_chs: int, seed: int = 0,
                val_fraction: float = 0.2) -> DataSplit:
    """The 8x8 digits (1,797 grey images with values 0..16, 10 classes), normalised with train statistics.

    Read from the shipped ``digits.npz`` by the npz reader (:func:`spnas.data.formats.read_npz`).
    Eager (1,797 small images), and normalised with one mean and std over all channels of the
    resized images, as before the other data sets came.
    """
    from spnas.data.formats import read_npz

    if arg:
        raise SpnasError(f"--data digits takes no argument; got 'digits:{arg}'")
    x, labels, _ = read_npz(DIGITS_FILE)
    images = torch.from_numpy(x).to(torch.float32) / 16.0  # (N, 1, 8, 8), values 0..16 as stored
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
        raise SpnasError("--data imagefolder needs Pillow: pip install 'spnas[images]' (or pillow)") from None
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
    from spnas.core.registry import get_registry

    name, _, arg = text.partition(":")
    factory: DataFactory = get_registry().get("dataset", name)
    return factory(arg or None, resolution, in_chs, seed=seed, val_fraction=val_fraction)


@hookimpl
def spnas_register_datasets(register):
    from spnas.data.formats import load_cifar10, load_idx, load_npz

    register("digits", load_digits)
    register("imagefolder", load_imagefolder)
    register("cifar10", load_cifar10)
    register("idx", load_idx)
    register("npz", load_npz)
