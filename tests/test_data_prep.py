"""data_prep scripts: --help works, ImageNet val arrangement on a tiny generated folder."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "data_prep"))
import imagenet_val_folders as ivf  # noqa: E402
import prepare_torchvision as ptv  # noqa: E402


@pytest.mark.parametrize("script", sorted((ROOT / "data_prep").glob("*.py")))
def test_help(script):
    p = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True)
    assert p.returncode == 0 and "usage" in p.stdout.lower()


def _val_folder(tmp_path):
    from PIL import Image

    val = tmp_path / "flat"
    val.mkdir()
    for i in range(4):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(val / f"ILSVRC2012_val_{i:08d}.JPEG")
    return val


@pytest.mark.parametrize("fmt", ["csv", "txt"])
def test_imagenet_val_arranged_into_class_folders(tmp_path, fmt):
    val = _val_folder(tmp_path)
    wnids = ["n01440764", "n01443537", "n01440764", "n01484850"]
    if fmt == "csv":
        lines = ["ImageId,PredictionString"] + [f"ILSVRC2012_val_{i:08d},{w} 1 2 3 4" for i, w in enumerate(wnids)]
    else:
        lines = [f"ILSVRC2012_val_{i:08d}.JPEG {w}" for i, w in enumerate(wnids)]
    (tmp_path / "labels").write_text("\n".join(lines) + "\n")
    out = tmp_path / "data" / "imagenet" / "val"
    rc = ivf.main(["--val-dir", str(val), "--labels", str(tmp_path / "labels"), "--out", str(out), "--copy"])
    assert rc == 0
    assert ivf.check(out) == (3, 4)
    assert len(list((out / "n01440764").iterdir())) == 2

    from compresslib.data import get_dataset

    ds = get_dataset("imagenet", "test", root=tmp_path / "data", image_size=16)
    assert len(ds) == 4 and ds.classes == sorted(set(wnids))


def test_torchvision_check_reports_missing(tmp_path, capsys):
    assert ptv.main(["--dataset", "cifar10", "--root", str(tmp_path), "--check"]) == 1
    assert "cifar10 train split missing" in capsys.readouterr().err
