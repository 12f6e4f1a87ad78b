#!/usr/bin/env python
"""Download (when online), unpack (offline) and check MNIST / Fashion-MNIST / CIFAR-10 / CIFAR-100
in torchvision's layout under DATA_ROOT.

    python data_prep/prepare_torchvision.py --dataset cifar10 --root ~/data          # download
    python data_prep/prepare_torchvision.py --dataset cifar100 --root ~/data \\
        --from-archive cifar-100-python.tar.gz                                        # offline copy
    python data_prep/prepare_torchvision.py --dataset mnist --root ~/data \\
        --from-archive train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz \\
                       t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz
    python data_prep/prepare_torchvision.py --check ~/data          # mnist, cifar10, cifar100
    python data_prep/prepare_torchvision.py --dataset cifar10 --check ~/data          # one set

Expected layout under DATA_ROOT (what torchvision writes; CIFAR files are md5-checked):
    MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte        60,000 / 10,000 images
    FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte  60,000 / 10,000 images
    cifar-10-batches-py/data_batch_1..5, test_batch, batches.meta 50,000 / 10,000 images
    cifar-100-python/train, test, meta                            50,000 / 10,000 images
Paper profiles that need them: sqjoint_lenet5_mnist (mnist); ec2t_resnet20_cifar10,
camp_resnet44_cifar10 (cifar10); ec2t_micronet_cifar100, camp_resnet44_cifar100 (cifar100).
ImageNet: see data_prep/imagenet_val_folders.py. Then check a whole profile with
    python -m compresslib.workbook.reproduce --profile paper/NAME --data-root DATA_ROOT --dry-run
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import sys
import tarfile
from pathlib import Path

CLASSES = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "cifar10": "CIFAR10", "cifar100": "CIFAR100"}
PAPER_SETS = ("mnist", "cifar10", "cifar100")  # what profiles/paper/*.yaml read
SIZES = {
    "mnist": (60000, 10000),
    "fashion-mnist": (60000, 10000),
    "cifar10": (50000, 10000),
    "cifar100": (50000, 10000),
}


def check(dataset: str, root: str) -> list[str]:
    """Load both splits without downloading; return human-readable problems (empty = fine)."""
    import torchvision.datasets as tvd

    problems = []
    for train, full in zip((True, False), SIZES[dataset]):
        split = "train" if train else "test"
        try:
            n = len(getattr(tvd, CLASSES[dataset])(root, train=train, download=False))
        except RuntimeError as e:
            problems.append(
                f"{dataset} {split} split missing under {root}: {e}\n"
                f"    prepare it: python data_prep/prepare_torchvision.py --dataset {dataset} --root {root}"
            )
            continue
        note = "" if n == full else f"  (the full set has {full:,}: a subset?)"
        print(f"{dataset} {split}: {n:,} images{note}")
    return problems


def unpack(dataset: str, root: Path, archives: list[Path]) -> None:
    """Put downloaded archives into torchvision's layout (no network)."""
    missing = [a for a in archives if not a.is_file()]
    if missing:
        raise SystemExit(f"archive(s) not found: {', '.join(map(str, missing))}")
    root.mkdir(parents=True, exist_ok=True)
    if dataset.startswith("cifar"):
        for a in archives:  # cifar-10-python.tar.gz / cifar-100-python.tar.gz hold the folder itself
            with tarfile.open(a) as tar:
                tar.extractall(root, filter="data")
        return
    raw = root / CLASSES[dataset] / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for a in archives:
        dest = raw / a.name.removesuffix(".gz")
        if a.suffix == ".gz":
            with gzip.open(a, "rb") as src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out)
        else:
            shutil.copy2(a, dest)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--dataset", choices=sorted(CLASSES), help="one dataset (--check DIR alone checks mnist, cifar10 and cifar100)"
    )
    ap.add_argument("--root", help="DATA_ROOT folder")
    ap.add_argument(
        "--check",
        nargs="?",
        const=True,
        default=None,
        metavar="DIR",
        help="only verify the layout under DIR (or --root), never download",
    )
    ap.add_argument(
        "--from-archive",
        nargs="+",
        type=Path,
        metavar="FILE",
        help="unpack already-downloaded archives instead of downloading",
    )
    args = ap.parse_args(argv)
    root = args.check if isinstance(args.check, str) else args.root
    if root is None:
        ap.error("give --root DATA_ROOT (or --check DATA_ROOT)")
    if args.dataset is None and args.check is None:
        ap.error("--dataset is required unless you only --check DIR")
    if args.check is None:
        if args.from_archive:
            unpack(args.dataset, Path(root), args.from_archive)
        else:
            import torchvision.datasets as tvd

            for train in (True, False):
                try:
                    getattr(tvd, CLASSES[args.dataset])(root, train=train, download=True)
                except Exception as e:  # offline machines end here
                    print(
                        f"download failed ({type(e).__name__}: {e}); download the archives elsewhere and "
                        "use --from-archive, or copy the files into the layout above, then --check",
                        file=sys.stderr,
                    )
                    return 2
    problems = []
    for name in [args.dataset] if args.dataset else PAPER_SETS:
        problems += check(name, root)
    for p in problems:
        print(p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
