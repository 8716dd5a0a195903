"""The embedded default data set: shipped as spnas/data/digits.npz, read without scikit-learn."""

from __future__ import annotations

import hashlib
import importlib.util

import numpy as np
import torch

from spnas.data.datasets import DIGITS_FILE, load_data
from spnas.data.formats import read_npz
from spnas.data.split import _split_indices

#: sha256 of scikit-learn 1.9.1's load_digits(): images as uint8 (values 0..16, exactly its float64
#: values) and targets as int64, recorded with scikit-learn when the file was made
SKLEARN_IMAGES_SHA256 = "8f26b2bd9d135c256808f68f14fdabddde6d9c7f869ae419704b051f0f14b3b3"
SKLEARN_TARGETS_SHA256 = "a3c91c262eddcf7ba8f0e37507c30284493c9b20412ffe4af30d536401f7ba21"


def test_the_shipped_file_holds_scikit_learns_digits():
    x, y, test = read_npz(DIGITS_FILE)
    assert x.shape == (1797, 1, 8, 8) and x.dtype == np.uint8 and int(x.max()) == 16 and test is None
    assert hashlib.sha256(x[:, 0].tobytes()).hexdigest() == SKLEARN_IMAGES_SHA256
    assert hashlib.sha256(y.astype(np.int64).tobytes()).hexdigest() == SKLEARN_TARGETS_SHA256
    assert np.bincount(y).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


def test_digits_tensors_are_the_ones_of_the_scikit_learn_route():
    """The tensors load_data('digits') builds, rebuilt here the way spnas did from scikit-learn's
    float64 images (/16, split, one mean and std over the training part)."""
    x, y, _ = read_npz(DIGITS_FILE)
    images = torch.tensor(x[:, 0].astype(np.float64), dtype=torch.float32).unsqueeze(1) / 16.0
    train, val = _split_indices(y, 0.2, 0)
    mean, std = images[train].mean(), images[train].std()
    data = load_data("digits", resolution=8, in_chs=1, seed=0)
    assert torch.equal(data.train.tensors[0], (images[train] - mean) / std)
    assert torch.equal(data.val.tensors[0], (images[val] - mean) / std)
    assert torch.equal(data.train.tensors[1], torch.from_numpy(y)[train])
    assert data.num_classes == 10 and data.mean == (float(mean),)


def test_digits_needs_no_scikit_learn(monkeypatch):
    """With scikit-learn made unimportable, digits still loads (and where scikit-learn is
    installed, its digits equal the shipped ones exactly)."""
    import sys

    class _Block:
        def find_spec(self, name, path=None, target=None):
            if name == "sklearn" or name.startswith("sklearn."):
                raise ImportError("sklearn blocked")

    for name in [m for m in sys.modules if m == "sklearn" or m.startswith("sklearn.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [_Block(), *sys.meta_path])
    assert load_data("digits", 16, 3).num_classes == 10
    monkeypatch.undo()
    if importlib.util.find_spec("sklearn") is not None:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        xs, ys, _ = read_npz(DIGITS_FILE)
        assert np.array_equal(xs[:, 0].astype(np.float64), bunch.images) and np.array_equal(ys, bunch.target)
