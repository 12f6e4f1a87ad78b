#!/usr/bin/env python
"""Download (when online) and check MNIST / Fashion-MNIST / CIFAR-10 / CIFAR-100 in torchvision's layout.

    python data_prep/prepare_torchvision.py --dataset cifar10 --root ~/data          # download
    python data_prep/prepare_torchvision.py --dataset cifar10 --root ~/data --check  # verify only

Expected layout under ROOT (what torchvision writes):
    MNIST/raw/*-ubyte[.gz]            FashionMNIST/raw/*-ubyte[.gz]
    cifar-10-batches-py/data_batch_1..5, test_batch
    cifar-100-python/train, test
Then: python -m compresslib.reproduce --profile ... --data-root ROOT
"""
from __future__ import annotations

import argparse
import sys

CLASSES = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "cifar10": "CIFAR10", "cifar100": "CIFAR100"}


def check(dataset: str, root: str) -> list[str]:
    """Load both splits without downloading; return human-readable problems (empty = fine)."""
    import torchvision.datasets as tvd

    problems = []
    for train in (True, False):
        try:
            n = len(getattr(tvd, CLASSES[dataset])(root, train=train, download=False))
            print(f"{dataset} {'train' if train else 'test'}: {n} images")
        except RuntimeError as e:
            problems.append(f"{dataset} {'train' if train else 'test'} split missing under {root}: {e}")
    return problems


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", required=True, choices=sorted(CLASSES))
    ap.add_argument("--root", required=True, help="DATA_ROOT folder")
    ap.add_argument("--check", action="store_true", help="only verify the layout, never download")
    args = ap.parse_args(argv)
    if not args.check:
        import torchvision.datasets as tvd

        for train in (True, False):
            try:
                getattr(tvd, CLASSES[args.dataset])(args.root, train=train, download=True)
            except Exception as e:  # offline machines end here
                print(f"download failed ({type(e).__name__}: {e}); copy the files into the layout above "
                      "by hand, then re-run with --check", file=sys.stderr)
                return 2
    problems = check(args.dataset, args.root)
    for p in problems:
        print(p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
