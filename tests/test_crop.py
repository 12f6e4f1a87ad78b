"""EdgeCompress dynamic image cropping: Grad-CAM boxes, square + snap, crop + resize, box predictor."""

import pytest
import torch
import torch.nn as nn

import compresslib
from compresslib import cost
from compresslib.cluttered import load_cluttered
from compresslib.methods import crop
from compresslib.models import create_model

compresslib.set_threads()


def test_crop_resize_is_an_exact_crop_at_equal_size_and_averages_when_shrinking():
    x = torch.randn(3, 2, 20, 20)
    b = torch.tensor([[0, 0, 8, 8], [5, 3, 13, 11], [12, 12, 20, 20]])
    out = crop.crop_resize(x, b, 8)
    for i, (x0, y0, x1, y1) in enumerate(b.tolist()):
        assert torch.allclose(out[i], x[i, :, y0:y1, x0:x1], atol=1e-6)
    # 2x down-scaling of a crop = mean of each 2x2 cell
    half = crop.crop_resize(x, b, 4)
    ref = torch.nn.functional.avg_pool2d(x[1:2, :, 3:11, 5:13], 2)
    assert torch.allclose(half[1:2], ref, atol=1e-5)
    with pytest.raises(ValueError, match="x1 > x0"):
        crop.crop_resize(x, torch.tensor([[4, 4, 4, 9]] * 3), 4)
    with pytest.raises(ValueError, match=r"\(3, 4\)"):
        crop.crop_resize(x, b[:2], 4)


def test_square_then_snap_to_box_sizes():
    b = torch.tensor([[10, 20, 14, 30], [0, 0, 5, 17], [50, 50, 64, 60], [1, 1, 63, 40]])
    sq = crop.square_boxes(b, 64)
    side = sq[:, 2] - sq[:, 0]
    assert side.tolist() == [10, 17, 14, 62] and (sq[:, 3] - sq[:, 1]).tolist() == side.tolist()
    assert sq[0].tolist() == [7, 20, 17, 30]  # grown symmetrically about the centre x = 12
    assert sq[1].tolist()[:2] == [0, 0]  # shifted back inside the image
    snapped = crop.regulate_boxes(sq, (16, 32, 48, 64), 64)
    assert (snapped[:, 2] - snapped[:, 0]).tolist() == [16, 32, 16, 64]
    assert ((snapped >= 0) & (snapped <= 64)).all()
    assert snapped[2].tolist() == [48, 47, 64, 63]  # centre (57, 55) kept as far as the border allows
    with pytest.raises(ValueError, match="box sizes"):
        crop.regulate_boxes(sq, (16, 80), 64)


def test_postprocess_rounds_fixes_degenerate_boxes_and_snaps():
    pred = torch.tensor([[0.1, 0.1, 0.3, 0.2], [0.5, 0.5, 0.5, 0.5], [0.9, 0.0, 0.1, 1.0]])
    b = crop.postprocess(pred, 64, (16, 32, 48, 64))
    assert b.dtype == torch.long
    assert (b[:, 2] - b[:, 0]).tolist() == [16, 16, 64]
    assert ((b[:, 2] - b[:, 0]) == (b[:, 3] - b[:, 1])).all() and ((b >= 0) & (b <= 64)).all()


class _Identity(nn.Module):
    """features = 1x1 conv with weight 1 (a = x); logits = (+mean(a), -mean(a))."""

    def __init__(self):
        super().__init__()
        self.features = nn.Conv2d(1, 1, 1, bias=False)
        nn.init.ones_(self.features.weight)

    def forward(self, x):
        m = self.features(x).mean((2, 3))
        return torch.cat([m, -m], 1)


def test_gradcam_and_cam_boxes_find_the_evidence():
    x = torch.zeros(2, 1, 64, 64)
    x[0, 0, 10:20, 30:40] = 1.0
    x[1, 0, 40:60, 5:12] = 2.0
    x[1, 0, 0:3, 0:3] = 0.4  # below 50 % of the range: ignored
    cam = crop.gradcam(_Identity(), x, torch.tensor([0, 0]))
    assert cam.shape == (2, 64, 64) and float(cam.max()) == pytest.approx(1.0)
    assert crop.cam_boxes(cam, 0.5).tolist() == [[30, 10, 40, 20], [5, 40, 12, 60]]
    assert crop.cam_boxes(cam, 0.1).tolist()[1] == [0, 0, 12, 60]
    # class 1's gradient is negative everywhere: ReLU kills the map
    assert float(crop.gradcam(_Identity(), x, torch.tensor([1, 1])).abs().max()) == 0.0
    with pytest.raises(ValueError, match="split"):
        crop.cam_boxes(cam, 1.0)


def test_box_iou():
    a = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 4, 4]])
    b = torch.tensor([[0, 0, 10, 10], [5, 0, 15, 10], [10, 10, 12, 12]])
    assert crop.box_iou(a, b).tolist() == pytest.approx([1.0, 50 / 150, 0.0])


def test_box_predictor_learns_true_boxes_and_cropper_outputs_snapped_boxes():
    d = load_cluttered("test", source="digits", canvas=32, scale=(10, 20), patch=5)
    x, boxes = d.x[:256], d.boxes[:256]
    torch.manual_seed(0)
    pred = create_model("box_predictor", stem_width=4, inner_widths=(4, 8, 8), hidden=(16, 8), pool="grid")
    before = float(crop.box_iou(crop.predict_boxes(pred, x) * 32, boxes).mean())
    hist = crop.train_box_predictor(
        pred, x, boxes, 32, epochs=8, lr=5e-3, batch_size=32, seed=0, progress=False, x_val=x, boxes_val=boxes
    )
    assert hist[-1]["loss"] < 0.5 * hist[0]["loss"]
    assert hist[-1]["val_miou"] > max(before, 0.3)
    cropper = crop.ForegroundCropper(pred, 32, (8, 16, 24, 32))
    b = cropper.boxes(x)
    assert set((b[:, 2] - b[:, 0]).tolist()) <= {8, 16, 24, 32} and ((b >= 0) & (b <= 32)).all()
    assert cropper.macs == cost.total_macs(pred, (1, 32, 32))
    assert cropper.crops(x[:4], 12).shape == (4, 1, 12, 12)
    with pytest.raises(ValueError, match="32x32"):
        cropper.boxes(torch.zeros(2, 1, 16, 16))
    with pytest.raises(ValueError, match="4 box coordinates"):
        create_model("box_predictor", num_classes=10)
    with pytest.raises(ValueError, match="pool"):
        create_model("box_predictor", pool="max")
    assert create_model("box_predictor", pool="avg")(torch.zeros(2, 1, 64, 64)).shape == (2, 4)


def test_weighted_mse_and_random_shift():
    p, t = torch.zeros(2, 4), torch.ones(2, 4)
    assert float(crop.weighted_mse(p, t)) == pytest.approx((1 + 1 + 1.25 + 1.25) / 4)
    x = torch.arange(2 * 36, dtype=torch.float32).reshape(2, 1, 6, 6)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(crop._random_shift(x, 0, g), x)
    y = crop._random_shift(x, 2, g)
    assert y.shape == x.shape and not torch.equal(y, x)
    with pytest.raises(ValueError, match="shift"):
        crop.RandomShift(-1)


def test_expand_boxes_and_coverage():
    b = torch.tensor([[10.0, 10.0, 20.0, 30.0], [0.0, 0.0, 8.0, 8.0]])
    g = crop.expand_boxes(b, 1.5, 32)
    assert torch.allclose(g[0], torch.tensor([7.5, 5.0, 22.5, 32.0], dtype=torch.float64))
    assert torch.allclose(g[1], torch.tensor([0.0, 0.0, 10.0, 10.0], dtype=torch.float64))  # clipped at 0
    assert torch.equal(crop.expand_boxes(b, 1.0, 32), b.double())
    with pytest.raises(ValueError, match="growth factor"):
        crop.expand_boxes(b, 0.5, 32)
    cov = crop.box_coverage(
        torch.tensor([[0, 0, 10, 10], [5, 0, 10, 10]]), torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10]])
    )
    assert torch.allclose(cov, torch.tensor([1.0, 0.5], dtype=torch.float64))


def test_shift_augmentation_moves_the_box_with_the_canvas():
    x = torch.zeros(1, 1, 16, 16)
    x[0, 0, 4:8, 2:6] = 1.0  # object at x 2..6, y 4..8
    t = torch.tensor([[2, 4, 6, 8]], dtype=torch.float32) / 16
    g = torch.Generator().manual_seed(3)
    for _ in range(5):
        xs, ts = crop._shift_with_boxes(x, t, 2, g)
        ys, xs_ = torch.nonzero(xs[0, 0] > 0.5, as_tuple=True)
        box = torch.tensor([xs_.min(), ys.min(), xs_.max() + 1, ys.max() + 1], dtype=torch.float32) / 16
        assert torch.allclose(ts[0], box)


def test_resolve_device_errors():
    assert crop.resolve_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="DEVICE"):
        crop.resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="cuda"):
            crop.resolve_device("cuda")


def test_trainings_are_cached_by_fingerprint(tmp_path, capsys):
    """A second identical training loads the checkpoint (reported, same weights); another input retrains."""
    d = load_cluttered("test", source="digits", canvas=32, scale=(10, 20), patch=5)
    x, y, boxes = d.x[:64], d.y[:64], d.boxes[:64]

    def classifier(xs):
        torch.manual_seed(0)
        m = create_model("shrinkable_resnet", depths=(1, 1, 1), width_mult=0.5, resolution=16)
        res = crop.train_classifier(
            m, xs, y, xs[:16], y[:16], epochs=1, batch_size=32, progress=False, cache_dir=tmp_path, name="clf"
        )
        return m, res

    small = torch.nn.functional.interpolate(x, size=(16, 16))
    m1, r1 = classifier(small)
    m2, r2 = classifier(small)
    assert not r1["reused"] and r2["reused"] and r1["checkpoint"] == r2["checkpoint"]
    assert r2["history"] == r1["history"]
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))
    _, r3 = classifier(small.flip(-1))  # other data: another key, trained
    assert not r3["reused"] and r3["checkpoint"] != r1["checkpoint"]

    def predictor(epochs):
        torch.manual_seed(0)
        p = create_model("box_predictor", stem_width=4, inner_widths=(4, 8, 8), hidden=(16, 8), pool="grid")
        h = crop.train_box_predictor(
            p, x, boxes, 32, epochs=epochs, batch_size=32, progress=False, cache_dir=tmp_path, name="box"
        )
        return p, h

    capsys.readouterr()
    p1, h1 = predictor(2)
    assert "reused" not in capsys.readouterr().out
    p2, h2 = predictor(2)
    assert "[cache] reused box-" in capsys.readouterr().out and p1.cache_path == p2.cache_path
    assert [h["loss"] for h in h1] == [h["loss"] for h in h2]
    assert all(torch.equal(a, b) for a, b in zip(p1.state_dict().values(), p2.state_dict().values()))
    p3, h3 = predictor(3)  # other epochs: another file
    assert len(h3) == 3 and p3.cache_path != p1.cache_path
    with pytest.raises(ValueError, match="cache name"):
        crop.train_box_predictor(p1, x, boxes, 32, epochs=1, cache_dir=tmp_path, name="a/b", progress=False)
