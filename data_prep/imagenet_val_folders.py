#!/usr/bin/env python
"""Arrange ImageNet-1k (ILSVRC-2012) into the class folders ImageFolder reads, and check them.

    python data_prep/imagenet_val_folders.py --train-tar ILSVRC2012_img_train.tar --out ~/data/imagenet/train
    python data_prep/imagenet_val_folders.py --val-dir ILSVRC2012_img_val \
        --labels LOC_val_solution.csv --out ~/data/imagenet/val
    python data_prep/imagenet_val_folders.py --check ~/data          # DATA_ROOT: train and val
    python data_prep/imagenet_val_folders.py --check ~/data/imagenet/val   # one split folder

--labels is either Kaggle's LOC_val_solution.csv (ImageId,PredictionString with the wnid first)
or a text file of "<file name> <wnid>" lines. Images are moved (or --copy'd, or --symlink'ed) to
OUT/<wnid>/<file>. The training set (ILSVRC2012_img_train) already unpacks to class folders:
put it at DATA_ROOT/imagenet/train (--train-tar unpacks the outer tar and its 1000 per-class tars).
Expected result:
    DATA_ROOT/imagenet/train/<wnid>/*.JPEG    1000 classes, 1,281,167 images
    DATA_ROOT/imagenet/val/<wnid>/*.JPEG      1000 classes,    50,000 images (same wnids)
Paper profiles that need it: ecc_mobilenet_imagenet, ecc_alexnet_imagenet, sqjoint_alexnet_imagenet
(the EdgeCompress profile uses ImageNet only for its dry-run cost tables). Check a profile with
    python -m compresslib.workbook.reproduce --profile paper/NAME --data-root DATA_ROOT --dry-run
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
import tarfile
from pathlib import Path

FULL = {"train": (1000, 1281167), "val": (1000, 50000)}


def read_labels(path: Path) -> dict[str, str]:
    """{image stem: wnid} from a Kaggle CSV or a whitespace-separated list."""
    text = path.read_text().splitlines()
    if text and text[0].startswith("ImageId"):
        return {row["ImageId"]: row["PredictionString"].split()[0] for row in csv.DictReader(text)}
    out = {}
    for line in text:
        if line.strip():
            name, wnid = line.split()[:2]
            out[Path(name).stem] = wnid
    return out


def arrange(val_dir: Path, labels: dict[str, str], out: Path, mode: str = "move") -> int:
    """Place every labelled image under out/<wnid>/; returns how many were placed."""
    n = 0
    for img in sorted(val_dir.iterdir()):
        if img.stem not in labels:
            continue
        dest = out / labels[img.stem] / img.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        if mode == "copy":
            shutil.copy2(img, dest)
        elif mode == "symlink":
            os.symlink(img.resolve(), dest)
        else:
            shutil.move(str(img), dest)
        n += 1
    return n


def check(folder: Path) -> tuple[int, int]:
    """(number of class folders, number of images) of one split folder."""
    classes = [d for d in folder.iterdir() if d.is_dir()] if folder.is_dir() else []
    return len(classes), sum(len(list(d.iterdir())) for d in classes)


def check_root(path: Path) -> list[str]:
    """Check DATA_ROOT (or DATA_ROOT/imagenet) holds train/ and val/ with the same class folders;
    prints counts, returns problems (empty = fine)."""
    base = path / "imagenet" if (path / "imagenet").is_dir() else path
    problems, wnids = [], {}
    for split in ("train", "val"):
        folder = base / split
        if not folder.is_dir():
            problems.append(f"missing {folder} (expected {base}/{split}/<wnid>/*.JPEG)")
            continue
        c, n = check(folder)
        wnids[split] = {d.name for d in folder.iterdir() if d.is_dir()}
        note = (
            ""
            if (c, n) == FULL[split]
            else f"  (full ILSVRC-2012: {FULL[split][0]} classes, {FULL[split][1]:,} images)"
        )
        print(f"{folder}: {c} classes, {n:,} images{note}")
        if not c:
            problems.append(f"{folder} has no class folders")
    if len(wnids) == 2 and wnids["train"] != wnids["val"]:
        diff = sorted(wnids["train"] ^ wnids["val"])
        problems.append(
            f"train and val class folders differ ({len(diff)} wnids, e.g. {diff[:3]}): labels would not match"
        )
    return problems


def unpack_train(tar_path: Path, out: Path) -> int:
    """ILSVRC2012_img_train.tar holds one <wnid>.tar per class: unpack each into out/<wnid>/."""
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    with tarfile.open(tar_path) as outer:
        for member in outer:
            if not member.name.endswith(".tar"):
                continue
            dest = out / Path(member.name).stem
            dest.mkdir(exist_ok=True)
            with tarfile.open(fileobj=outer.extractfile(member)) as inner:
                inner.extractall(dest, filter="data")
            n += 1
    return n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--val-dir", type=Path)
    ap.add_argument("--labels", type=Path)
    ap.add_argument("--out", type=Path)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--copy", action="store_true")
    g.add_argument("--symlink", action="store_true")
    ap.add_argument("--train-tar", type=Path, help="ILSVRC2012_img_train.tar to unpack into --out")
    ap.add_argument(
        "--check",
        type=Path,
        metavar="DIR",
        help="DATA_ROOT (checks imagenet/train and imagenet/val) or one split folder",
    )
    args = ap.parse_args(argv)
    if args.check:
        base = args.check / "imagenet" if (args.check / "imagenet").is_dir() else args.check
        if (base / "train").is_dir() or (base / "val").is_dir() or base != args.check:
            problems = check_root(args.check)
            for p in problems:
                print(p, file=sys.stderr)
            return 1 if problems else 0
        c, n = check(args.check)
        print(f"{args.check}: {c} classes, {n} images")
        return 0 if c else 1
    if args.train_tar:
        if not (args.out and args.train_tar.is_file()):
            ap.error("--train-tar needs an existing tar file and --out DATA_ROOT/imagenet/train")
        n = unpack_train(args.train_tar, args.out)
        c, total = check(args.out)
        print(f"unpacked {n} class tars; {args.out} now has {c} classes, {total} images")
        return 0 if n else 1
    if not (args.val_dir and args.labels and args.out):
        ap.error("--val-dir, --labels and --out are required (or --train-tar, or --check DIR)")
    if not args.val_dir.is_dir():
        ap.error(f"--val-dir {args.val_dir} is not a folder")
    labels = read_labels(args.labels)
    n = arrange(args.val_dir, labels, args.out, "copy" if args.copy else "symlink" if args.symlink else "move")
    c, total = check(args.out)
    print(f"placed {n} images; {args.out} now has {c} classes, {total} images")
    return 0 if n else 1


if __name__ == "__main__":
    sys.exit(main())
