"""Data sets: small files of each format written here, read back and checked against what was written."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from spnas.data.datasets import load_data
from spnas.data.split import augment_batch
from spnas.core.errors import SpnasError

# --- writers: the formats as their documentation describes them, written independently of spnas ---


def cifar_images(n: int, first_id: int, seed: int) -> np.ndarray:
    """(n, 3072) uint8 rows, image k's first pixel of the red plane holding its id ``first_id + k``."""
    data = np.random.RandomState(seed).randint(0, 256, size=(n, 3072)).astype(np.uint8)
    data[:, 0] = np.arange(first_id, first_id + n)
    return data


def write_cifar(root: Path, per_batch: int = 6) -> dict[int, tuple[np.ndarray, int]]:
    """data_batch_1..5 and test_batch; returns {image id: (3072 bytes, label)}; test ids start at 200."""
    root.mkdir(parents=True, exist_ok=True)
    written = {}
    for i, name in enumerate([f"data_batch_{b}" for b in range(1, 6)] + ["test_batch"]):
        first = 200 if name == "test_batch" else i * per_batch
        data = cifar_images(per_batch, first, seed=i)
        labels = [(first + k) % 10 for k in range(per_batch)]
        with open(root / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"labels": labels, b"data": data}, f, protocol=2)
        written.update({first + k: (data[k], labels[k]) for k in range(per_batch)})
    (root / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"airplane"] * 10}, protocol=2))
    return written


def pixels(x: torch.Tensor, split) -> np.ndarray:
    """Undo the normalisation with the split's own mean and std: values in 0..255 again."""
    mean = torch.tensor(split.mean).view(-1, 1, 1)
    std = torch.tensor(split.std).view(-1, 1, 1)
    return ((x * std + mean) * 255).numpy()


def image_id(x: torch.Tensor, split) -> int:
    return int(round(float(pixels(x, split)[0, 0, 0])))


def write_idx(path: Path, array: np.ndarray, compress: bool = False, magic: int | None = None) -> None:
    magic = (0x0800 | array.ndim) if magic is None else magic
    raw = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(raw)
    else:
        path.write_bytes(raw)


def mnist_like(n: int, first_id: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    x = np.random.RandomState(seed).randint(1, 256, size=(n, 10, 10)).astype(np.uint8)
    x[:, 0, 0] = np.arange(first_id, first_id + n)
    return x, (np.arange(n) % 4).astype(np.uint8)


def write_mnist(root: Path, compress: bool = False, sep: str = "-") -> tuple[np.ndarray, ...]:
    root.mkdir(parents=True, exist_ok=True)
    x, y = mnist_like(40, 0, seed=1)
    xt, yt = mnist_like(12, 100, seed=2)
    write_idx(root / f"train-images{sep}idx3-ubyte", x, compress)
    write_idx(root / f"train-labels{sep}idx1-ubyte", y, compress)
    write_idx(root / f"t10k-images{sep}idx3-ubyte", xt, compress)
    write_idx(root / f"t10k-labels{sep}idx1-ubyte", yt, compress)
    return x, y, xt, yt


def all_items(ds) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*(ds[i] for i in range(len(ds))))
    return torch.stack(xs), torch.stack([torch.as_tensor(y) for y in ys])


# --- CIFAR-10 ------------------------------------------------------------------------------------


def test_cifar10_pixels_labels_and_test_part(tmp_path):
    written = write_cifar(tmp_path / "cifar-10-batches-py")
    data = load_data(f"cifar10:{tmp_path}", 32, 3)  # the parent of cifar-10-batches-py
    assert data.num_classes == 10 and data.hflip and len(data.mean) == len(data.std) == 3
    assert len(data.train) + len(data.val) == 30 and len(data.test) == 6
    for ds in (data.train, data.val, data.test):
        for i in range(len(ds)):
            x, y = ds[i]
            assert x.shape == (3, 32, 32) and x.dtype == torch.float32
            raw, label = written[image_id(x, data)]
            assert int(y) == label
            # channel c, row r, column k is byte c*1024 + r*32 + k of the row (RGB planes, row-major)
            expected = np.array([[[raw[c * 1024 + r * 32 + k] for k in range(32)] for r in range(32)]
                                 for c in range(3)])
            np.testing.assert_allclose(pixels(x, data), expected, atol=1e-3)
    assert {image_id(ds[i][0], data) for ds in [data.test] for i in range(6)} == set(range(200, 206))


def test_cifar10_pickled_by_numpy_1_and_python_2_style(tmp_path):
    """numpy < 2 names its array rebuilder numpy.core.multiarray; such files load as well."""
    written = write_cifar(tmp_path)
    path = tmp_path / "test_batch"
    raw = path.read_bytes()
    assert b"numpy._core.multiarray" in raw
    path.write_bytes(raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    data = load_data(f"cifar10:{tmp_path}", 32, 3)
    x, y = data.test[0]
    assert image_id(x, data) == 200 and int(y) == written[200][1]


def test_cifar10_normalisation_is_the_training_part_statistics(tmp_path):
    write_cifar(tmp_path)
    data = load_data(f"cifar10:{tmp_path}", 32, 3)
    x, _ = all_items(data.train)
    np.testing.assert_allclose(x.mean(dim=(0, 2, 3)).numpy(), 0.0, atol=1e-4)
    np.testing.assert_allclose(x.std(dim=(0, 2, 3), unbiased=False).numpy(), 1.0, atol=1e-4)


def test_split_is_deterministic_stratified_and_disjoint(tmp_path):
    written = write_cifar(tmp_path)
    ids = lambda ds, d: sorted(image_id(ds[i][0], d) for i in range(len(ds)))  # noqa: E731
    a, b, c = (load_data(f"cifar10:{tmp_path}", 32, 3, seed=s) for s in (0, 0, 1))
    assert ids(a.train, a) == ids(b.train, b) and ids(a.val, a) == ids(b.val, b)
    assert ids(a.val, a) != ids(c.val, c)
    assert not set(ids(a.train, a)) & set(ids(a.val, a))
    assert set(ids(a.train, a)) | set(ids(a.val, a)) == set(range(30))
    # 3 images per class, val_fraction 0.2: one of each class in validation
    assert sorted(written[i][1] for i in ids(a.val, a)) == list(range(10))


def test_resize_to_the_space_resolution(tmp_path):
    written = write_cifar(tmp_path)
    full, small = load_data(f"cifar10:{tmp_path}", 32, 3), load_data(f"cifar10:{tmp_path}", 16, 3)
    x16, _ = small.test[0]
    assert x16.shape == (3, 16, 16)
    raw = torch.tensor(written[200][0], dtype=torch.float32).view(1, 3, 32, 32) / 255
    expected = F.interpolate(raw, size=(16, 16), mode="bilinear", align_corners=False)[0]
    np.testing.assert_allclose(pixels(x16, small), expected.numpy() * 255, atol=1e-3)
    assert full.mean == small.mean  # the statistics of the stored images


def test_dataloader_batches_equal_items(tmp_path):
    write_cifar(tmp_path)
    data = load_data(f"cifar10:{tmp_path}", 24, 3)
    x, y = next(iter(DataLoader(data.train, batch_size=7)))
    ex, ey = all_items(data.train)
    assert torch.allclose(x, ex[:7]) and torch.equal(y, ey[:7]) and x.shape == (7, 3, 24, 24)


def test_cifar10_missing_batch_names_the_file(tmp_path):
    write_cifar(tmp_path)
    (tmp_path / "data_batch_3").unlink()
    with pytest.raises(SpnasError, match=r"data_batch_3: missing; cifar10:DIR needs data_batch_1..5 and test_batch"):
        load_data(f"cifar10:{tmp_path}", 32, 3)


def test_rgb_data_in_a_grey_space_is_refused(tmp_path):
    write_cifar(tmp_path)
    with pytest.raises(SpnasError, match="3-channel images; the space wants 1"):
        load_data(f"cifar10:{tmp_path}", 32, 1)


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("payload", ["evil", "object_array"])
def test_cifar10_malicious_pickle_runs_no_code(tmp_path, payload):
    write_cifar(tmp_path)
    marker = tmp_path / "MARKER"
    bad = {b"data": _Evil(marker), b"labels": [0]} if payload == "evil" else \
        {b"data": np.array([1, "a"], dtype=object), b"labels": [0]}
    (tmp_path / "data_batch_2").write_bytes(pickle.dumps(bad, protocol=2))
    with pytest.raises(SpnasError) as err:
        load_data(f"cifar10:{tmp_path}", 32, 3)
    assert not marker.exists()
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'data_batch_2'}: refused to load ")
    assert (f"{os.system.__module__}.system" if payload == "evil" else "object array") in message


def test_cifar10_damaged_pickle(tmp_path):
    write_cifar(tmp_path)
    path = tmp_path / "test_batch"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(SpnasError, match="test_batch: not a readable pickle"):
        load_data(f"cifar10:{tmp_path}", 32, 3)


# --- IDX -----------------------------------------------------------------------------------------


def test_idx_pixels_labels_grey_to_rgb_and_no_flip(tmp_path):
    x, y, xt, yt = write_mnist(tmp_path)
    data = load_data(f"idx:{tmp_path}", 10, 1)
    assert data.num_classes == 4 and not data.hflip and len(data.test) == 12
    for ds, images, labels in ((data.train, x, y), (data.val, x, y), (data.test, xt, yt)):
        first = 100 if ds is data.test else 0
        for i in range(len(ds)):
            xi, yi = ds[i]
            k = image_id(xi, data) - first
            np.testing.assert_allclose(pixels(xi, data)[0], images[k], atol=1e-3)
            assert int(yi) == labels[k]
    rgb = load_data(f"idx:{tmp_path}", 10, 3)
    assert rgb.mean == data.mean * 3 and rgb.std == data.std * 3
    for i in range(len(rgb.train)):
        xi = rgb.train[i][0]
        assert xi.shape == (3, 10, 10) and torch.equal(xi[0], xi[1]) and torch.equal(xi[0], xi[2])
        assert torch.equal(xi[:1], data.train[i][0])
    assert load_data(f"idx:{tmp_path}", 14, 3).train[0][0].shape == (3, 14, 14)


def test_idx_exact_pixels_at_native_resolution(tmp_path):
    x = np.random.RandomState(0).randint(1, 256, size=(20, 8, 8)).astype(np.uint8)
    x[:, 3, 5] = np.arange(20)  # the id, at row 3, column 5
    y = (np.arange(20) % 2).astype(np.uint8)
    write_idx(tmp_path / "train-images-idx3-ubyte", x)
    write_idx(tmp_path / "train-labels-idx1-ubyte", y)
    data = load_data(f"idx:{tmp_path}", 8, 1)
    assert data.test is None
    for ds in (data.train, data.val):
        for i in range(len(ds)):
            xi, yi = ds[i]
            k = int(round(float(pixels(xi, data)[0, 3, 5])))
            np.testing.assert_allclose(pixels(xi, data)[0], x[k], atol=1e-3)
            assert int(yi) == y[k]


def test_idx_gz_plain_and_dot_names_agree(tmp_path):
    write_mnist(tmp_path / "plain")
    write_mnist(tmp_path / "gz", compress=True)
    write_mnist(tmp_path / "dot", sep=".")
    loaded = [load_data(f"idx:{tmp_path / d}", 10, 1) for d in ("plain", "gz", "dot")]
    for other in loaded[1:]:
        for part in ("train", "val", "test"):
            a, b = all_items(getattr(loaded[0], part)), all_items(getattr(other, part))
            assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_idx_wrong_magic(tmp_path):
    write_mnist(tmp_path)
    x, _ = mnist_like(40, 0, 1)
    write_idx(tmp_path / "train-images-idx3-ubyte", x, magic=0x00000801)
    with pytest.raises(SpnasError, match=r"train-images-idx3-ubyte: magic 0x00000801; expected 0x00000803"):
        load_data(f"idx:{tmp_path}", 10, 1)


@pytest.mark.parametrize("compress", [False, True])
def test_idx_truncated(tmp_path, compress):
    write_mnist(tmp_path, compress=compress)
    path = tmp_path / ("train-images-idx3-ubyte" + (".gz" if compress else ""))
    path.write_bytes(path.read_bytes()[:-30])
    message = "cannot read" if compress else r"truncated: 3970 bytes of data; its header \(40 x 10 x 10\) says 4000"
    with pytest.raises(SpnasError, match=f"{path.name}: {message}"):
        load_data(f"idx:{tmp_path}", 10, 1)


def test_idx_label_count_mismatch_and_missing_file(tmp_path):
    write_mnist(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(39, np.uint8))
    with pytest.raises(SpnasError, match="train-images-idx3-ubyte: 40 images, but train-labels-idx1-ubyte has 39"):
        load_data(f"idx:{tmp_path}", 10, 1)
    (tmp_path / "t10k-images-idx3-ubyte").unlink()
    (tmp_path / "train-labels-idx1-ubyte").unlink()
    with pytest.raises(SpnasError, match="train-labels-idx1-ubyte: missing .*idx:DIR needs"):
        load_data(f"idx:{tmp_path}", 10, 1)


def test_idx_test_labels_without_images(tmp_path):
    write_mnist(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte").unlink()
    with pytest.raises(SpnasError, match="t10k-images-idx3-ubyte: missing"):
        load_data(f"idx:{tmp_path}", 10, 1)


# --- npz -----------------------------------------------------------------------------------------


def npz_data() -> tuple[np.ndarray, np.ndarray]:
    x = np.random.RandomState(3).randint(0, 256, size=(24, 3, 6, 6)).astype(np.uint8)  # N, C, H, W
    x[:, 0, 0, 0] = np.arange(24)
    return x, (np.arange(24) % 3).astype(np.int64)


def test_npz_layouts_agree(tmp_path):
    x, y = npz_data()
    np.savez(tmp_path / "nchw.npz", x=x, y=y)
    np.savez(tmp_path / "nhwc.npz", x=x.transpose(0, 2, 3, 1), y=y, x_test=x[:4].transpose(0, 2, 3, 1), y_test=y[:4])
    np.savez(tmp_path / "float.npz", x=x.astype(np.float32) / 255, y=y.astype(np.uint8))
    loaded = [load_data(f"npz:{tmp_path / n}.npz", 6, 3) for n in ("nchw", "nhwc", "float")]
    assert [d.num_classes for d in loaded] == [3, 3, 3] and not any(d.hflip for d in loaded)
    ref = all_items(loaded[0].train)
    for d in loaded[1:]:
        got = all_items(d.train)
        assert torch.allclose(got[0], ref[0], atol=1e-5) and torch.equal(got[1], ref[1])
    d = loaded[0]
    for i in range(len(d.val)):
        xi, yi = d.val[i]
        k = image_id(xi, d)
        np.testing.assert_allclose(pixels(xi, d), x[k], atol=1e-3)
        assert int(yi) == y[k]
    assert loaded[0].test is None and len(loaded[1].test) == 4


def test_npz_grey_layouts_agree(tmp_path):
    x = np.random.RandomState(4).randint(0, 256, size=(12, 8, 8)).astype(np.uint8)
    y = np.arange(12) % 2
    np.savez(tmp_path / "nhw.npz", x=x, y=y)
    np.savez(tmp_path / "nhw1.npz", x=x[..., None], y=y)
    np.savez(tmp_path / "n1hw.npz", x=x[:, None], y=y)
    loaded = [all_items(load_data(f"npz:{tmp_path / n}.npz", 8, 3).train) for n in ("nhw", "nhw1", "n1hw")]
    assert all(torch.equal(t[0], loaded[0][0]) for t in loaded)
    assert torch.equal(loaded[0][0][:, 0], loaded[0][0][:, 2])


@pytest.mark.parametrize("arrays,message", [
    ({"x": np.zeros((4, 8, 8), np.uint8)}, r"no array 'y' \(has x\)"),
    ({"x": np.zeros((4, 8, 8), np.uint8), "y": np.array([0, 1, 0, 1], dtype=object)}, "cannot load .*Object arrays"),
    ({"x": np.full((4, 8, 8), 255.0), "y": np.arange(4)}, r"x is float64 with values in \[255, 255\]"),
    ({"x": np.zeros((4, 8, 8, 2), np.uint8), "y": np.arange(4)}, r"x has shape \(4, 8, 8, 2\)"),
    ({"x": np.zeros((4, 8, 8), np.uint8), "y": np.arange(3)}, r"y is int64 \(3,\); expected 4 integer labels"),
    ({"x": np.zeros((4, 8, 8), np.uint8), "y": np.arange(4), "x_test": np.zeros((2, 8, 8), np.uint8)},
     "no array 'y_test'"),
])
def test_npz_errors(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(SpnasError, match=f"^{path}: {message}"):
        load_data(f"npz:{path}", 8, 1)


# --- imagefolder, digits ---------------------------------------------------------------------------


def test_imagefolder_statistics_flip_and_colour_into_grey(tmp_path):
    from PIL import Image

    rng = np.random.RandomState(5)
    for c in ("cat", "dog"):
        (tmp_path / c).mkdir()
        for k in range(5):
            arr = rng.randint(0, 256, size=(8, 8, 3)).astype(np.uint8)
            Image.fromarray(arr).save(tmp_path / c / f"{k}.png")
    data = load_data(f"imagefolder:{tmp_path}", 8, 3)
    assert data.hflip and data.num_classes == 2 and len(data.mean) == 3
    x, y = data.val[0]
    path = data.val.files[0]
    np.testing.assert_allclose(pixels(x, data), np.asarray(Image.open(path)).transpose(2, 0, 1), atol=1e-3)
    with pytest.raises(SpnasError, match="a colour image; the space wants 1 channel"):
        load_data(f"imagefolder:{tmp_path}", 8, 1)


def test_digits_keeps_its_normalisation_and_reports_it():
    data = load_data("digits", 8, 3)
    assert data.num_classes == 10 and not data.hflip and data.test is None
    x, _ = data.train.tensors
    assert data.mean[0] == data.mean[2] and abs(float(x.mean())) < 1e-5
    raw = x * data.std[0] + data.mean[0]  # digits are 0..16 / 16
    assert float(raw.min()) == pytest.approx(0.0, abs=1e-5) and float(raw.max()) == pytest.approx(1.0, abs=1e-5)


# --- augmentation ----------------------------------------------------------------------------------


def batch(n: int = 64, size: int = 8) -> torch.Tensor:
    return torch.rand(n, 2, size, size, generator=torch.Generator().manual_seed(0)) + 0.5  # no zeros


def test_augment_identity_and_determinism():
    x = batch()
    assert torch.equal(augment_batch(x, hflip=False, pad=0), x)
    out = [augment_batch(x, hflip=True, generator=torch.Generator().manual_seed(s)) for s in (1, 1, 2)]
    assert torch.equal(out[0], out[1]) and not torch.equal(out[0], out[2])


def test_augment_flip_is_an_exact_mirror():
    x = batch()
    out = augment_batch(x, hflip=True, pad=0, generator=torch.Generator().manual_seed(3))
    same = [torch.equal(o, i) for o, i in zip(out, x)]
    mirrored = [torch.equal(o, i.flip(-1)) for o, i in zip(out, x)]
    assert all(s or m for s, m in zip(same, mirrored)) and any(same) and any(mirrored)


@pytest.mark.parametrize("size,pad", [(8, None), (32, None), (8, 2)])
def test_augment_crops_are_shifted_copies(size, pad):
    x = batch(48, size)
    out = augment_batch(x, hflip=False, pad=pad, generator=torch.Generator().manual_seed(4))
    p = max(1, size // 8) if pad is None else pad
    padded = F.pad(x, (p, p, p, p))
    found = set()
    for n in range(len(x)):
        offsets = [(dy, dx) for dy in range(2 * p + 1) for dx in range(2 * p + 1)
                   if torch.equal(out[n], padded[n, :, dy:dy + size, dx:dx + size])]
        assert len(offsets) == 1
        found.add(offsets[0])
    assert len(found) > 1 and any(0 in o or 2 * p in o for o in found)  # shifted, up to the full pad
