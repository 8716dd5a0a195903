"""File formats of data sets: CIFAR-10 (python pickles), MNIST-format IDX and NumPy ``.npz``.

Each loader has the data-set factory signature (see :mod:`spnas.data.datasets`) and returns a
:class:`~spnas.data.split.DataSplit` built by :func:`spnas.data.split._array_split`. Nothing read here can run
code: CIFAR-10's pickles go through :class:`_SafeUnpickler`, which allows only NumPy's array
rebuilders; ``.npz`` files are loaded with ``allow_pickle=False``.
"""

from __future__ import annotations

import gzip
import math
import pickle
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from spnas.data.split import DataSplit, _array_split
from spnas.core.errors import SpnasError

# --- CIFAR-10 (python version): pickles, read without running code ------------------------------

CIFAR10_HINT = ("cifar10:DIR needs data_batch_1..5 and test_batch (the python version of CIFAR-10, "
                "cifar-10-python.tar.gz extracted; DIR is cifar-10-batches-py or its parent)")


class _Refused(Exception):
    """A pickle asked for something a data file must not hold."""


def _safe_dtype(*args):
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise _Refused(f"an object array (dtype {dtype})")
    return dtype


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """How a protocol-2 pickle written by Python 3 stores bytes: ``_codecs.encode(text, 'latin1')``."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise _Refused(f"_codecs.encode with {encoding!r}")
    return text.encode("latin1")


_RECONSTRUCT = np.empty(0).__reduce__()[0]  # numpy's array rebuilder, whatever module numpy keeps it in
_SCALAR = np.int64(0).__reduce__()[0]
_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy.core.multiarray", "scalar"): _SCALAR,
    ("numpy._core.multiarray", "scalar"): _SCALAR,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _safe_dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class _SafeUnpickler(pickle.Unpickler):
    """An unpickler that can only rebuild numpy arrays and plain data.

    A pickle calls whatever callable it names (``os.system`` included); every name goes through
    ``find_class``, and this one hands out only numpy's array rebuilders, a dtype constructor
    that refuses object dtypes, and a latin-1 ``_codecs.encode``.
    """

    def find_class(self, module: str, name: str):
        try:
            return _PICKLE_GLOBALS[(module, name)]
        except KeyError:
            raise _Refused(f"the global {module}.{name}") from None


def _load_pickle(path: Path):
    try:
        with open(path, "rb") as f:
            return _SafeUnpickler(f, encoding="bytes").load()
    except _Refused as exc:
        raise SpnasError(f"{path}: refused to load {exc}; a data file may hold only numpy arrays and plain "
                         "data (spnas runs no code from files)") from None
    except Exception as exc:  # a damaged pickle raises many kinds of errors
        raise SpnasError(f"{path}: not a readable pickle ({type(exc).__name__}: {exc}); {CIFAR10_HINT}") from None


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A CIFAR-10 batch file: (N, 3, 32, 32) uint8 images (RGB planes of 1024 each) and N labels."""
    if not path.is_file():
        raise SpnasError(f"{path}: missing; {CIFAR10_HINT}")
    batch = _load_pickle(path)
    if not isinstance(batch, dict):
        raise SpnasError(f"{path}: a pickled {type(batch).__name__}, not a dict; {CIFAR10_HINT}")
    get = lambda key: batch.get(key.encode(), batch.get(key))  # noqa: E731 (bytes keys from Python 2)
    data, labels = get("data"), get("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise SpnasError(f"{path}: b'data' is {got}; expected a uint8 array (N, 3072); {CIFAR10_HINT}")
    try:
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        labels = None
    if labels is None or len(labels) != len(data) or (labels.size and (labels.min() < 0 or labels.max() > 9)):
        raise SpnasError(f"{path}: b'labels' must be {len(data)} integers in 0..9 (one per image); {CIFAR10_HINT}")
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar10(arg: str | None, resolution: int, in_chs: int, seed: int = 0,
                 val_fraction: float = 0.2) -> DataSplit:
    """CIFAR-10, python version: 50,000 training images (split into train and val) and the test batch."""
    if not arg:
        raise SpnasError(f"--data cifar10 needs a directory: --data cifar10:DIR; {CIFAR10_HINT}")
    root = Path(arg)
    if not root.is_dir():
        raise SpnasError(f"{root}: no such directory; {CIFAR10_HINT}")
    if not (root / "data_batch_1").exists() and (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    parts = [_cifar_batch(root / f"data_batch_{i}") for i in range(1, 6)]
    test = _cifar_batch(root / "test_batch")
    return _array_split(f"cifar10:{root}", np.concatenate([p[0] for p in parts]),
                        np.concatenate([p[1] for p in parts]), resolution=resolution, in_chs=in_chs, seed=seed,
                        val_fraction=val_fraction, num_classes=10, hflip=True, test=test)


# --- IDX (MNIST format) ------------------------------------------------------------------------

IDX_HINT = ("idx:DIR needs train-images-idx3-ubyte and train-labels-idx1-ubyte, optionally t10k-images-idx3-ubyte "
            "and t10k-labels-idx1-ubyte (each plain or .gz; the MNIST format)")


def _idx_path(root: Path, stem: str, kind: str, required: bool = True) -> Path | None:
    for name in (f"{stem}-{kind}-ubyte", f"{stem}.{kind}-ubyte"):
        for suffix in ("", ".gz"):
            if (root / (name + suffix)).is_file():
                return root / (name + suffix)
    if required:
        raise SpnasError(f"{root / f'{stem}-{kind}-ubyte'}: missing (nor .gz, nor {stem}.{kind}-ubyte); {IDX_HINT}")
    return None


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX file of uint8 values with ``ndim`` dimensions (magic 0x00000803 for images, 0x00000801 labels)."""
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError; a cut .gz, EOFError
        raise SpnasError(f"{path}: cannot read ({exc}); {IDX_HINT}") from None
    what = "images (N, rows, cols)" if ndim == 3 else "labels (N)"
    magic, header = 0x0800 | ndim, 4 + 4 * ndim
    got = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
    if got != magic:
        shown = "a file shorter than 4 bytes" if got is None else f"magic 0x{got:08x}"
        raise SpnasError(f"{path}: {shown}; expected 0x{magic:08x}, IDX uint8 {what}; {IDX_HINT}")
    if len(raw) < header:
        raise SpnasError(f"{path}: truncated: {len(raw)} bytes, shorter than its {header}-byte header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    size = math.prod(dims)
    if len(raw) - header != size:
        state = "truncated" if len(raw) - header < size else "too long"
        raise SpnasError(f"{path}: {state}: {len(raw) - header} bytes of data; its header "
                         f"({' x '.join(map(str, dims))}) says {size}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


def _idx_pair(root: Path, prefix: str, required: bool) -> tuple[np.ndarray, np.ndarray] | None:
    images = _idx_path(root, f"{prefix}-images", "idx3", required)
    labels = _idx_path(root, f"{prefix}-labels", "idx1", required or images is not None)
    if images is None:
        if labels is not None:
            _idx_path(root, f"{prefix}-images", "idx3")  # the labels without their images: say which is missing
        return None
    x, y = _read_idx(images, 3), _read_idx(labels, 1)
    if len(x) != len(y):
        raise SpnasError(f"{images}: {len(x)} images, but {labels.name} has {len(y)} labels; they must match")
    return x[:, None], y.astype(np.int64)


def load_idx(arg: str | None, resolution: int, in_chs: int, seed: int = 0,
             val_fraction: float = 0.2) -> DataSplit:
    """MNIST-format IDX files in ``DIR``: the ``train`` files (split into train and val) and, if there, ``t10k``."""
    if not arg:
        raise SpnasError(f"--data idx needs a directory: --data idx:DIR; {IDX_HINT}")
    root = Path(arg)
    if not root.is_dir():
        raise SpnasError(f"{root}: no such directory; {IDX_HINT}")
    x, y = _idx_pair(root, "train", True)
    test = _idx_pair(root, "t10k", False)
    num_classes = int(max(y.max(initial=0), test[1].max(initial=0) if test else 0)) + 1
    return _array_split(f"idx:{root}", x, y, resolution=resolution, in_chs=in_chs, seed=seed,
                        val_fraction=val_fraction, num_classes=num_classes, hflip=False, test=test)


# --- NumPy .npz --------------------------------------------------------------------------------

NPZ_HINT = ("npz:FILE needs a NumPy .npz (np.savez) with arrays x and y, optionally x_test and y_test: "
            "x uint8 0..255 or float 0..1, shaped (N, H, W), (N, H, W, C) or (N, C, H, W) with C 1 or 3; "
            "y integers 0..K-1")


def _npz_images(x: np.ndarray, where: str) -> np.ndarray:
    """(N, C, H, W): 3-d is grey; 4-d is channels-last when the last axis is 1 or 3, else channels-first."""
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[3] in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    elif not (x.ndim == 4 and x.shape[1] in (1, 3)):
        raise SpnasError(f"{where} has shape {x.shape}; {NPZ_HINT}")
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    if x.dtype.kind != "f":
        raise SpnasError(f"{where} is {x.dtype}; {NPZ_HINT}")
    lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
    if not (0.0 <= lo and hi <= 1.0):  # also catches NaN
        raise SpnasError(f"{where} is {x.dtype} with values in [{lo:.4g}, {hi:.4g}]; float images must be in "
                         "[0, 1] (or store uint8 0..255)")
    return np.ascontiguousarray(x, dtype=np.float32)


def _npz_labels(y: np.ndarray, n: int, where: str) -> np.ndarray:
    y = y.reshape(-1) if y.ndim == 2 and y.shape[1] == 1 else y
    if y.ndim != 1 or y.dtype.kind not in "iu" or len(y) != n or (y.size and y.min() < 0):
        raise SpnasError(f"{where} is {y.dtype} {y.shape}; expected {n} integer labels 0..K-1, one per image")
    return y.astype(np.int64)


def read_npz(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
    """The checked arrays of a ``.npz``: images (N, C, H, W), labels (int64) and the optional test
    part; loaded with ``allow_pickle=False`` (an object array cannot run code)."""
    try:
        loaded = np.load(path, allow_pickle=False)  # no object arrays: unpickling would run code
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise SpnasError(f"{path}: a single .npy array, not an .npz; {NPZ_HINT}")
        with loaded:
            keys = set(loaded.files)
            missing = [k for k in ("x", "y") if k not in keys]
            if ("x_test" in keys) != ("y_test" in keys):
                missing.append("x_test" if "y_test" in keys else "y_test")
            if missing:
                has = ", ".join(sorted(keys)) or "none"
                raise SpnasError(f"{path}: no array {missing[0]!r} (has {has}); {NPZ_HINT}")
            arrays = {k: loaded[k] for k in ("x", "y", "x_test", "y_test") if k in keys}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:  # object arrays: ValueError
        raise SpnasError(f"{path}: cannot load ({exc}); {NPZ_HINT}") from None
    x = _npz_images(arrays["x"], f"{path}: x")
    y = _npz_labels(arrays["y"], len(x), f"{path}: y")
    test = None
    if "x_test" in arrays:
        xt = _npz_images(arrays["x_test"], f"{path}: x_test")
        if xt.shape[1:] != x.shape[1:]:
            raise SpnasError(f"{path}: x_test images are {xt.shape[1:]} (C, H, W), x images {x.shape[1:]}; "
                             "they must match")
        test = (xt, _npz_labels(arrays["y_test"], len(xt), f"{path}: y_test"))
    return x, y, test


def load_npz(arg: str | None, resolution: int, in_chs: int, seed: int = 0,
             val_fraction: float = 0.2) -> DataSplit:
    """A ``.npz`` of ``x`` and ``y`` (split into train and val) and, optionally, ``x_test`` and ``y_test``."""
    if not arg:
        raise SpnasError(f"--data npz needs a file: --data npz:FILE; {NPZ_HINT}")
    path = Path(arg)
    if not path.is_file():
        raise SpnasError(f"{path}: no such file (--data npz:FILE, a NumPy .npz with arrays x and y)")
    x, y, test = read_npz(path)
    num_classes = int(max(y.max(initial=0), test[1].max(initial=0) if test else 0)) + 1
    return _array_split(f"npz:{path}", x, y, resolution=resolution, in_chs=in_chs, seed=seed,
                        val_fraction=val_fraction, num_classes=num_classes, hflip=False, test=test)
