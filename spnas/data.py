"""Data sets for search and training, registered through the data-set hook.

``--data digits`` (the default) is scikit-learn's 8x8 digits, embedded in scikit-learn, so a
search needs no download. ``--data imagefolder:DIR`` reads a directory with one sub-directory
per class (needs Pillow). Images are resized to the space's input resolution, grey images are
repeated to the space's channels, and the train/validation split is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, TensorDataset

from spnas.errors import SpnasError
from spnas.hookspecs import hookimpl

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class DataSplit:
    """A train and a validation set of ``(image, label)`` pairs, images as float CHW tensors."""

    name: str
    train: Dataset
    val: Dataset
    num_classes: int


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


def _to_input(images: torch.Tensor, resolution: int, in_chs: int) -> torch.Tensor:
    """(N, C, H, W) in [0, 1] -> the space's resolution and channels."""
    if images.shape[-1] != resolution or images.shape[-2] != resolution:
        images = F.interpolate(images, size=(resolution, resolution), mode="bilinear", align_corners=False)
    if images.shape[1] != in_chs:
        if images.shape[1] != 1:
            raise SpnasError(f"images have {images.shape[1]} channels; the space wants {in_chs}")
        images = images.expand(-1, in_chs, -1, -1)
    return images.contiguous()


def load_digits(arg: str | None, resolution: int, in_chs: int, seed: int = 0,
                val_fraction: float = 0.2) -> DataSplit:
    """scikit-learn's digits (1,797 8x8 grey images, 10 classes), normalised with train statistics."""
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
                     TensorDataset(images[val_idx], y[val_idx]), 10)


class _ImageFiles(Dataset):
    """Images read on access (so a large folder does not have to fit in memory)."""

    def __init__(self, files: list[Path], labels: list[int], resolution: int, in_chs: int):
        self.files, self.labels, self.resolution, self.in_chs = files, labels, resolution, in_chs

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        from PIL import Image

        path = self.files[i]
        try:
            with Image.open(path) as img:
                img = img.convert("L" if self.in_chs == 1 else "RGB")
                arr = np.asarray(img, dtype=np.float32) / 255.0
        except Exception as exc:  # PIL raises many kinds of errors for a bad file
            raise SpnasError(f"{path}: cannot read image ({exc})") from None
        t = torch.from_numpy(arr.copy())
        t = t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1)
        t = _to_input(t.unsqueeze(0), self.resolution, self.in_chs)[0]
        return (t - 0.5) / 0.25, self.labels[i]


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
    return DataSplit(f"imagefolder:{root}", _ImageFiles(tr_files, tr_labels, resolution, in_chs),
                     _ImageFiles(va_files, va_labels, resolution, in_chs), len(classes))


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
    """``NAME`` or ``NAME:ARG`` (e.g. ``digits``, ``imagefolder:/data/x``), looked up in the registry."""
    from spnas.registry import get_registry

    name, _, arg = text.partition(":")
    factory: DataFactory = get_registry().get("dataset", name)
    return factory(arg or None, resolution, in_chs, seed=seed, val_fraction=val_fraction)


@hookimpl
def spnas_register_datasets(register):
    register("digits", load_digits)
    register("imagefolder", load_imagefolder)
