"""Cluttered digits: deterministic canvases, true boxes around the pasted digit, registration."""

import numpy as np
import pytest
import torch

from compresslib import cluttered, data, embedded


def _digits(n=40):
    x, y = embedded.raw_digits()
    return x[:n], y[:n]


def test_canvases_are_deterministic_and_boxes_hold_the_digit():
    x, y = _digits()
    a = cluttered.make_canvases(x, y, canvas=32, scale=(10, 20), clutter=(0, 0), patch=5, noise=0.0, seed=3)
    b = cluttered.make_canvases(x, y, canvas=32, scale=(10, 20), clutter=(0, 0), patch=5, noise=0.0, seed=3)
    c = cluttered.make_canvases(x, y, canvas=32, scale=(10, 20), clutter=(0, 0), patch=5, noise=0.0, seed=4)
    assert all(np.array_equal(u, v) for u, v in zip(a, b)) and not np.array_equal(a[0], c[0])
    imgs, labels, boxes, src = a
    assert imgs.shape == (40, 32, 32) and labels.tolist() == y.tolist() and src.tolist() == list(range(40))
    side_w, side_h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= 32).all() and (side_w >= 1).all() and (side_h <= 20).all()
    for img, (x0, y0, x1, y1) in zip(imgs, boxes):
        inside = img[y0:y1, x0:x1]
        outside = img.copy()
        outside[y0:y1, x0:x1] = 0
        # without clutter/noise all ink above the threshold lies in the box, and the box is tight
        assert outside.max() <= cluttered.INK + 1e-6
        assert inside[0].max() > cluttered.INK and inside[-1].max() > cluttered.INK
        assert inside[:, 0].max() > cluttered.INK and inside[:, -1].max() > cluttered.INK


def test_clutter_and_noise_add_background_outside_the_box():
    x, y = _digits()
    imgs, _, boxes, _ = cluttered.make_canvases(
        x, y, canvas=32, scale=(10, 12), clutter=(3, 3), patch=6, noise=0.1, seed=0
    )
    outside = np.ones(imgs.shape, dtype=bool)
    for m, (x0, y0, x1, y1) in zip(outside, boxes):
        m[y0:y1, x0:x1] = False
    assert imgs[outside].mean() > 0.05 and (imgs[outside] > 0.5).mean() > 0.005
    assert imgs.min() >= 0 and imgs.max() <= 1


def test_registered_dataset_and_split_by_source_digit():
    assert "cluttered_digits" in data.list_datasets()
    assert data.dataset_info("cluttered_digits")["image_size"] == 64
    tr = cluttered.load_cluttered("train", source="digits", canvas=32, scale=(10, 20), patch=5)
    te = cluttered.load_cluttered("test", source="digits", canvas=32, scale=(10, 20), patch=5)
    assert len(tr.y) + len(te.y) == 1797 and tr.x.shape[1:] == (1, 32, 32)
    raw, labels = embedded.raw_digits()
    idx = {k: embedded.tensor_split(np.arange(len(raw)), labels, k, 0.2)[0] for k in ("train", "test")}
    assert len(idx["train"]) == len(tr.y) and len(idx["test"]) == len(te.y)
    assert not set(idx["train"]) & set(idx["test"])  # no source digit is in both splits
    assert tr.y.tolist() == labels[idx["train"]].tolist()
    small = cluttered.load_cluttered("test", source="digits", canvas=32, scale=(10, 20), patch=5, image_size=16)
    assert small.x.shape[-1] == 16 and torch.equal(small.boxes, torch.round(te.boxes.double() / 2).long())
    ds = data.get_dataset("cluttered_digits", "test")
    assert len(ds) == 1000 and ds.boxes.shape == (1000, 4) and ds.tensors[0].shape[1:] == (1, 64, 64)
    assert abs(float(ds.tensors[0].mean())) < 0.1  # normalised with the measured mean / std


def test_bad_inputs():
    x, y = _digits()
    with pytest.raises(ValueError, match="scale"):
        cluttered.make_canvases(x, y, canvas=32, scale=(10, 40))
    with pytest.raises(ValueError, match="one label"):
        cluttered.make_canvases(x, y[:5])
    with pytest.raises(ValueError, match="source"):
        cluttered.load_cluttered("train", source="cifar")
    with pytest.raises(ValueError, match="split"):
        cluttered.load_cluttered("validation")


def test_canvas_numbers_are_pinned():
    """Pixels and boxes of one seeded build (values of the generator before CanvasSpec folded its knobs)."""
    x, y = _digits()
    imgs, labels, boxes, src = cluttered.make_canvases(
        x, y, canvas=32, scale=(10, 20), clutter=(1, 3), patch=6, noise=0.05, copies=2, seed=7
    )
    assert imgs.shape == (80, 32, 32) and imgs.dtype == np.float32 and src.tolist() == sorted(list(range(40)) * 2)
    assert float(imgs.astype(np.float64).sum()) == 8846.539276756797
    assert boxes[:3].tolist() == [[7, 14, 18, 29], [22, 17, 30, 29], [11, 0, 20, 16]] and int(boxes.sum()) == 5264


def test_canvas_spec_normalises_and_rejects_bad_knobs_before_any_work():
    spec = cluttered.CanvasSpec(canvas=np.int64(32), scale=[10.0, 20], clutter=np.array([1, 2]), noise=0)
    assert (spec.canvas, spec.scale, spec.clutter, spec.patch, spec.noise, spec.copies) == (
        32,
        (10, 20),
        (1, 2),
        10,
        0.0,
        1,
    )
    assert type(spec.noise) is float and hash(spec) == hash(cluttered.CanvasSpec(32, (10, 20), (1, 2), noise=0.0))
    with pytest.raises(ValueError, match=r"4 <= lo <= hi <= canvas=64, got \(2, 5\)"):
        cluttered.load_cluttered("train", source="not-read-yet", scale=(2, 5))
    for bad in (dict(clutter=(3, 1)), dict(patch=0), dict(noise=-0.1), dict(copies=0)):
        with pytest.raises(ValueError, match=r"clutter=\(min, max\) >= 0, 1 <= patch <= canvas"):
            cluttered.CanvasSpec(**bad)
    with pytest.raises(TypeError, match="unexpected keyword argument 'canvass'"):
        cluttered.load_cluttered("train", canvass=32)
