"""Tiny generated stand-ins for real datasets, shared by the tests."""

from pathlib import Path

import numpy as np


def make_imagenet_tree(root: Path, wnids=("n01440764", "n01443537"), per_class: int = 2, size=(40, 40)) -> Path:
    """``root/imagenet/{train,val}/<wnid>/*.JPEG`` with ``per_class`` flat-grey images per class."""
    from PIL import Image

    for split in ("train", "val"):
        for wnid in wnids:
            d = Path(root) / "imagenet" / split / wnid
            d.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(np.full((*size, 3), 60 * i, np.uint8)).save(d / f"{wnid}_{i}.JPEG")
    return Path(root) / "imagenet"
