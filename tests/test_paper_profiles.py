"""Every profiles/paper/*.yaml passes ``reproduce --dry-run`` against tiny generated stand-ins for the
real datasets (MNIST idx files, CIFAR pickles, ImageNet class folders; random-init weights), and the
dry run's cost tables reproduce the papers' architecture numbers.

The CIFAR stand-ins cannot match torchvision's md5 sums, so torchvision's CIFAR integrity check is
relaxed to "file exists" for these tests only."""

import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import yaml

from compresslib.workbook import reproduce
from fakedata import make_imagenet_tree  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PAPER = sorted((ROOT / "profiles" / "paper").glob("*.yaml"))


def _mnist(root: Path, n=20):
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, k in (("train", n), ("t10k", n // 2)):
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(
            struct.pack(">IIII", 2051, k, 28, 28) + rng.integers(0, 255, (k, 28, 28), dtype=np.uint8).tobytes()
        )
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(
            struct.pack(">II", 2049, k) + (np.arange(k) % 10).astype(np.uint8).tobytes()
        )


def _cifar(root: Path, classes: int, n=20):
    rng = np.random.default_rng(0)
    key = "labels" if classes == 10 else "fine_labels"

    def batch(k):
        return {"data": rng.integers(0, 255, (k, 3072), dtype=np.uint8), key: list(np.arange(k) % classes)}

    if classes == 10:
        d = root / "cifar-10-batches-py"
        d.mkdir(parents=True)
        files = {f"data_batch_{i}": batch(n // 5) for i in range(1, 6)} | {"test_batch": batch(n // 2)}
        files["batches.meta"] = {"label_names": [f"c{i}" for i in range(10)]}
    else:
        d = root / "cifar-100-python"
        d.mkdir(parents=True)
        files = {"train": batch(n), "test": batch(n // 2), "meta": {"fine_label_names": [f"c{i}" for i in range(100)]}}
    for name, obj in files.items():
        (d / name).write_bytes(pickle.dumps(obj))


def _imagenet(root: Path):
    make_imagenet_tree(root, size=(40, 48))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    _mnist(root)
    _cifar(root, 10)
    _cifar(root, 100)
    _imagenet(root)
    return root


@pytest.fixture(autouse=True)
def lenient_cifar(monkeypatch):
    import torchvision.datasets.cifar as tv_cifar

    monkeypatch.setattr(tv_cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))
    monkeypatch.setenv("COMPRESSLIB_THREADS", "1")


def _dry(profile, data_root, *extra, profiles=ROOT / "profiles"):
    return reproduce.main(
        ["--profile", profile, "--data-root", str(data_root), "--dry-run", "--profiles", str(profiles), *extra]
    )


def test_there_is_a_profile_per_headline_experiment():
    names = {p.stem for p in PAPER}
    assert {
        "ecc_mobilenet_imagenet",
        "ecc_alexnet_imagenet",
        "sqjoint_lenet5_mnist",
        "sqjoint_alexnet_imagenet",
        "ec2t_micronet_cifar100",
        "ec2t_resnet20_cifar10",
        "edgecompress_resnet50_imagenet",
        "camp_resnet44_cifar10",
        "camp_resnet44_cifar100",
    } <= names
    for p in PAPER:
        text = p.read_text()
        assert "reported" in text.lower() and "command" in text.lower(), f"{p.name}: header must record both"
        assert yaml.safe_load(text)["stages"], p.name


@pytest.mark.parametrize("path", PAPER, ids=[p.stem for p in PAPER])
def test_paper_profile_passes_dry_run(path, data_root, capsys):
    import torch

    torch.set_num_threads(1)
    rc = _dry(f"paper/{path.stem}", data_root)
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "0 problem(s)" in out and "M MACs" in out


def test_dry_run_reproduces_paper_architecture_numbers(data_root, capsys):
    assert _dry("paper/edgecompress_resnet50_imagenet", data_root) == 0
    out = capsys.readouterr().out
    # README MACs minus the 0.09 G cropper (specs/edgecompress.md §4): 4.089, 1.114, 1.740, 3.131 G
    for label, gmacs in [
        ("ResNet-50 baseline", 4089),
        ("EC-Static-1", 1114),
        ("EC-Static-3", 1740),
        ("EC-Static-5", 3131),
    ]:
        line = next(ln for ln in out.splitlines() if label in ln)
        assert abs(float(line.split(": ")[1].split(" M MACs")[0]) - gmacs) < 6, line
    assert _dry("paper/sqjoint_lenet5_mnist", data_root) == 0
    assert "0.431 M weights" in capsys.readouterr().out  # Caffe LeNet-5: 430,500 weights (+ biases)
    assert _dry("paper/ec2t_micronet_cifar100", data_root) == 0
    # conv/linear weights of the phi-3.5 MicroNet: 8,055,124 params minus BN affine (specs/ec2t.md §2.2)
    assert "8.025 M weights" in capsys.readouterr().out


def test_dry_run_catches_typos_wrong_types_and_missing_data(tmp_path, data_root, capsys):
    prof = yaml.safe_load((ROOT / "profiles" / "paper" / "camp_resnet44_cifar10.yaml").read_text())
    prof["08_camp_mixed_precision"]["RL_EPOCH"] = 3  # typo
    prof["08_camp_mixed_precision"]["DEPTH"] = "44"  # str where the notebook has an int
    prof["08_camp_mixd_precision"] = {}  # unknown section
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(prof))
    assert _dry("bad", data_root, profiles=tmp_path) == 1
    err = capsys.readouterr().err
    assert "'RL_EPOCH' is not a parameter of 08_camp_mixed_precision.py (did you mean RL_EPOCHS" in err
    assert "DEPTH='44' is a str" in err and "unknown section '08_camp_mixd_precision'" in err

    assert _dry("paper/camp_resnet44_cifar100", tmp_path / "empty") == 1
    err = capsys.readouterr().err
    assert "dataset 'cifar100' not found" in err and "prepare_torchvision.py --dataset cifar100" in err


# ---- data_prep: --check DIR on the stand-ins, offline unpacking ------------------------------------
def _script(name):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "data_prep" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_prepare_torchvision_check_and_offline_archives(data_root, tmp_path, capsys):
    import gzip
    import tarfile

    ptv = _script("prepare_torchvision")
    assert ptv.main(["--check", str(data_root)]) == 0  # mnist, cifar10, cifar100 (what the profiles read)
    out = capsys.readouterr().out
    assert "cifar100 train: 20 images  (the full set has 50,000: a subset?)" in out
    # offline: unpack archives as downloaded elsewhere
    arch = tmp_path / "dl"
    arch.mkdir()
    with tarfile.open(arch / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(data_root / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    gz = []
    for f in sorted((data_root / "MNIST" / "raw").iterdir()):
        gz.append(arch / f"{f.name}.gz")
        gz[-1].write_bytes(gzip.compress(f.read_bytes()))
    new = tmp_path / "new"
    assert (
        ptv.main(["--dataset", "cifar10", "--root", str(new), "--from-archive", str(arch / "cifar-10-python.tar.gz")])
        == 0
    )
    assert ptv.main(["--dataset", "mnist", "--root", str(new), "--from-archive", *map(str, gz)]) == 0
    assert ptv.main(["--check", str(new)]) == 1  # cifar100 is not there
    assert "prepare_torchvision.py --dataset cifar100" in capsys.readouterr().err


def test_imagenet_check_root_and_train_tar(data_root, tmp_path, capsys):
    import io
    import shutil
    import tarfile

    ivf = _script("imagenet_val_folders")
    assert ivf.main(["--check", str(data_root)]) == 0
    assert "imagenet/val: 2 classes, 4 images" in capsys.readouterr().out
    # train tar of per-class tars -> class folders
    outer = tmp_path / "ILSVRC2012_img_train.tar"
    with tarfile.open(outer, "w") as t:
        for wnid in ("n01440764", "n01443537"):
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w") as inner:
                for img in sorted((data_root / "imagenet" / "train" / wnid).iterdir()):
                    inner.add(img, arcname=img.name)
            info = tarfile.TarInfo(f"{wnid}.tar")
            info.size = buf.tell()
            buf.seek(0)
            t.addfile(info, buf)
    root = tmp_path / "root"
    assert ivf.main(["--train-tar", str(outer), "--out", str(root / "imagenet" / "train")]) == 0
    assert ivf.check(root / "imagenet" / "train") == (2, 4)
    assert ivf.main(["--check", str(root)]) == 1  # no val yet
    assert "missing" in capsys.readouterr().err
    shutil.copytree(data_root / "imagenet" / "val" / "n01440764", root / "imagenet" / "val" / "n01440764")
    assert ivf.main(["--check", str(root)]) == 1
    assert "train and val class folders differ" in capsys.readouterr().err
