"""Stage 07 (EdgeCompress) on datasets without true boxes: the ResNet-50 family builder, the generic
in-memory loader, and an end-to-end papermill run of notebook 07 on tiny non-cluttered data
(torchvision FakeData, and a generated ImageNet class-folder tree) -- pseudo-boxes from Grad-CAM,
box-quality metrics null, every metrics key of issue 6 present."""

import json
from pathlib import Path

import pytest
import torch

from compresslib import data
from compresslib.cost import total_macs
from compresslib.models import create_model
from compresslib.models.shrinkable import arch_kwargs
from fakedata import make_imagenet_tree

ROOT = Path(__file__).resolve().parent.parent
KEYS = {"small_accuracy", "small_macs", "large_accuracy", "large_macs", "sweep", "macs_fraction_at_large_accuracy"}


def test_resnet50_family_reproduces_released_macs():
    # EC-Static-1 (d0.8 -> [3,3,4,3], wpg 32, 184 px) and EC-Static-3 (d0.9 -> [3,4,5,3], wpg 36, 208 px)
    for (d, w, r), gmacs, depths in [
        ((0.8, 0.5, 184), 1113.574, (3, 3, 4, 3)),
        ((0.9, 0.55, 208), 1739.864, (3, 4, 5, 3)),
    ]:
        m = create_model("shrinkable_resnet", num_classes=1000, in_channels=3, **arch_kwargs("resnet50", d, w, r))
        assert m.depths == depths
        assert abs(total_macs(m, (3, r, r)) / 1e6 - gmacs) < 1e-3
    # the workbook's small family is unchanged: shrink_depths of (2, 2, 2), no width rounding
    assert arch_kwargs("cifar", 0.5, 0.5, 16) == {"depths": (1, 1, 1), "width_mult": 0.5, "resolution": 16}
    with pytest.raises(ValueError, match="unknown ARCH 'vgg'; valid: cifar, resnet50"):
        arch_kwargs("vgg", 1.0, 1.0, 32)


def test_load_images_is_class_balanced_and_boxless():
    d = data.load_images("fake", "train", limit=40, seed=0)
    assert d.x.shape == (40, 3, 32, 32) and d.boxes is None
    assert torch.bincount(d.y, minlength=10).tolist() == [4] * 10
    assert torch.equal(d.x, data.load_images("fake", "train", limit=40, seed=0).x)
    with pytest.raises(ValueError, match="use load_cluttered"):
        data.load_images("cluttered_digits")


TINY = {
    "EPOCHS": 1,
    "BOX_EPOCHS": 1,
    "BATCH_SIZE": 16,
    "RESOLUTIONS": [16, 8],
    "CS_CONFIGS": [[0.5, 0.5, 8]],
    "SMALL": [],
    "BOX_SIZES": [8, 16, 24, 32],
    "N_THRESHOLDS": 5,
    "COMPARE_SEEDS": [0, 1, 2],
    "CAM_LAYERS": ["last", "penultimate"],
    "CAM_SPLITS": [0.5],
    "CAM_GROWS": [1.0],
    "PROBE": [0.5, 0.5, 8],
    "PROBE_EPOCHS": 1,
    "BOX_SHIFT": 2,
    "ORACLE_BOXES": True,
    "DEVICE": "cpu",
    "PROFILE": "test",
}
PER_SEED = {"seed", "small_accuracy", "large_accuracy", "cascade_accuracy", "macs_fraction"}


@pytest.mark.parametrize("dataset", ["fake", "imagenet"])
def test_stage07_runs_without_true_boxes(dataset, tmp_path):
    from compresslib.workbook import reproduce

    params = {**TINY, "DATASET": dataset}
    if dataset == "fake":
        params.update(SUBSET=60, TEST_SUBSET=30)  # 3 x 32 x 32, 10 classes
        n_classes = 10
    else:  # 40 x 48 JPEGs -> resize + centre crop to the 32 px full-resolution image
        make_imagenet_tree(tmp_path / "data", per_class=5, size=(40, 48))
        params.update(DATA_ROOT=str(tmp_path / "data"), IMAGE_SIZE=32)
        n_classes = 1000
    out = tmp_path / "07"
    params["OUT_DIR"] = str(out)
    res = reproduce.run_stage(
        ROOT / "notebooks" / "07_dynamic_inference.py", out, params, reproduce.ensure_kernel(), timeout=300
    )
    assert res["status"] == "ok", res["error"]
    m = json.loads((out / "metrics.json").read_text())
    assert KEYS <= set(m)
    # issue 14: every choice on val, test once at the chosen point, the cascade over >= 3 seeds
    assert m["selection_split"] == "val" and m["small_config"] == "0.5:0.5:8"
    at = [r for r in m["sweep"] if r["threshold"] == m["threshold"]]
    assert len(at) == 1 and at[0]["accuracy"] == m["cascade_accuracy"] and at[0]["avg_macs"] == m["cascade_avg_macs"]
    assert m["macs_fraction_at_large_accuracy"] == pytest.approx(m["cascade_avg_macs"] / m["large_macs"])
    assert [r["seed"] for r in m["per_seed"]] == [0, 1, 2] and all(PER_SEED <= set(r) for r in m["per_seed"])
    assert m["per_seed"][0]["cascade_accuracy"] == m["cascade_accuracy"]
    assert {r["layer"] for r in m["cam_selection"]} == {"last", "penultimate"} and m["cam_layer"] in (
        "last",
        "penultimate",
    )
    models = json.loads((out / "models.json").read_text())
    assert {"rcc-r16-s0", "crop-r16-s0", "cs-d0.5-w0.5-r8-s0", "crop-r16-s2", "box_predictor_pseudo"} <= set(models)
    board = {k: r["board"]["setting"] for k, r in models.items() if r.get("board")}
    assert (
        board["cascade"] == f"cascade hi={m['threshold']:.2f}"
        and board["cs-d0.5-w0.5-r8-s0"] == "crop+shrink CS d0.5 w0.5 r8"
    )
    assert len(board) == 6 and all(models[k]["split"] == "test" for k in board)  # 5 static models of seed 0 + cascade
    assert models["cascade"]["accuracy"] == m["cascade_accuracy"] and models["box_predictor_pseudo"]["split"] == "val"
    # no true boxes: box-quality metrics are null, the skips are announced
    assert m["pseudo_box_test_miou"] is None and m["predicted_crop_test_miou"] is None
    assert m["digit_inside_predicted_crop"] is None
    text = (out / "07_dynamic_inference.ipynb").read_text()
    assert "box-quality metrics and the true-box ablation are skipped" in text
    assert "true-box ablation skipped" in text and "oracle_boxes ignored" in text
    # colour pipeline: cropper on the 3 x 32 x 32 image + small model on 3 x 8 x 8 crops
    crop_macs = total_macs(create_model("box_predictor", in_channels=3, pool="grid"), (3, 32, 32))
    small = create_model("shrinkable_resnet", num_classes=n_classes, in_channels=3, **arch_kwargs("cifar", 0.5, 0.5, 8))
    assert m["small_macs"] == crop_macs + total_macs(small, (3, 8, 8))
    sw = m["sweep"]
    assert len(sw) == 5 and sw[0]["threshold"] == 0.0 and sw[-1]["threshold"] == 1.0
    assert sw[0]["avg_macs"] == m["small_macs"] and sw[0]["escalated"] == 0.0
    assert all(a["avg_macs"] <= b["avg_macs"] for a, b in zip(sw, sw[1:]))
    assert sw[-1]["avg_macs"] == pytest.approx(m["small_macs"] + m["large_macs"] - crop_macs)
    for f in ("static_models.csv", "cascade_curve.png", "explorer.png", "examples.png"):
        assert (out / f).is_file(), f


def test_stage07_rerun_trains_nothing(tmp_path):
    """Issue 13: executing notebook 07 again over its own outputs with the same parameters loads every model
    from results.cache_dir (each fit reports its reuse), writes no new checkpoint and gives identical metrics."""
    from compresslib.workbook import reproduce

    out = tmp_path / "07"
    params = {**TINY, "DATASET": "fake", "SUBSET": 60, "TEST_SUBSET": 30, "COMPARE_SEEDS": [0, 1], "OUT_DIR": str(out)}
    nb = ROOT / "notebooks" / "07_dynamic_inference.py"
    first = reproduce.run_stage(nb, out, params, reproduce.ensure_kernel(), timeout=300)
    assert first["status"] == "ok", first["error"]
    cache = tmp_path / ".cache" / "07"
    ckpts = sorted(p.name for p in cache.iterdir())
    m1 = (out / "metrics.json").read_text()
    second = reproduce.run_stage(nb, out, params, reproduce.ensure_kernel(), timeout=300)
    assert second["status"] == "ok", second["error"]
    text = (out / "07_dynamic_inference.ipynb").read_text()
    n_fits = sum(n.endswith(".ckpt") for n in ckpts)
    assert n_fits >= 9 and text.count("[fit] reused") == n_fits  # every classifier and probe
    assert text.count("[cache] reused box-") == 1  # the box predictor (no true boxes here)
    assert sorted(p.name for p in cache.iterdir()) == ckpts  # nothing new trained
    assert (out / "metrics.json").read_text() == m1
