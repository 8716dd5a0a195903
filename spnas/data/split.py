"""Arrays and splits: :class:`DataSplit` (what every data set returns), the seeded stratified
train/validation split, per-channel statistics, resizing and augmentation of batches.

The lowest module of :mod:`spnas.data`: the data sets (:mod:`spnas.data.datasets`) and the file
formats (:mod:`spnas.data.formats`) build on it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from spnas.core.errors import SpnasError

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
