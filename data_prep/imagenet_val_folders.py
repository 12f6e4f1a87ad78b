#!/usr/bin/env python
"""Arrange the flat ImageNet validation images into class folders (what ImageFolder reads).

    python data_prep/imagenet_val_folders.py --val-dir ILSVRC2012_img_val \
        --labels LOC_val_solution.csv --out ~/data/imagenet/val
    python data_prep/imagenet_val_folders.py --check ~/data/imagenet/val

--labels is either Kaggle's LOC_val_solution.csv (ImageId,PredictionString with the wnid first)
or a text file of "<file name> <wnid>" lines. Images are moved (or --copy'd, or --symlink'ed) to
OUT/<wnid>/<file>. The training set (ILSVRC2012_img_train) already unpacks to class folders:
put it at DATA_ROOT/imagenet/train.
Expected result: DATA_ROOT/imagenet/{train,val}/<wnid>/*.JPEG, 1000 classes, 50,000 val images.
"""
from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
from pathlib import Path


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
    classes = [d for d in folder.iterdir() if d.is_dir()] if folder.is_dir() else []
    return len(classes), sum(len(list(d.iterdir())) for d in classes)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--val-dir", type=Path)
    ap.add_argument("--labels", type=Path)
    ap.add_argument("--out", type=Path)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--copy", action="store_true")
    g.add_argument("--symlink", action="store_true")
    ap.add_argument("--check", type=Path, metavar="DIR", help="count classes and images of an arranged folder")
    args = ap.parse_args(argv)
    if args.check:
        c, n = check(args.check)
        print(f"{args.check}: {c} classes, {n} images")
        return 0 if c else 1
    if not (args.val_dir and args.labels and args.out):
        ap.error("--val-dir, --labels and --out are required (or --check DIR)")
    if not args.val_dir.is_dir():
        ap.error(f"--val-dir {args.val_dir} is not a folder")
    labels = read_labels(args.labels)
    n = arrange(args.val_dir, labels, args.out, "copy" if args.copy else "symlink" if args.symlink else "move")
    c, total = check(args.out)
    print(f"placed {n} images; {args.out} now has {c} classes, {total} images")
    return 0 if n else 1


if __name__ == "__main__":
    sys.exit(main())
