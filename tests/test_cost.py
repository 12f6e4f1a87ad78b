import pytest
import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode

from compresslib import cost, models


def _flop_counter_macs(m, size):
    fc = FlopCounterMode(display=False)
    with fc, torch.no_grad():
        m(torch.zeros(1, *size))
    return fc.get_total_flops() // 2


@pytest.mark.parametrize(
    "name,size",
    [
        ("tv_resnet50", (3, 224, 224)),
        ("tv_alexnet", (3, 224, 224)),
        ("tv_mobilenet_v2", (3, 224, 224)),
        ("mobilenet_v1", (3, 224, 224)),
    ],
)
def test_dense_macs_equal_flop_counter_half(name, size):
    m = models.create_model(name).eval()
    t = cost.layer_table(m, size)
    assert t.macs.sum() == _flop_counter_macs(m, size)


def test_resnet50_is_4_09_gmacs():
    m = torchvision.models.resnet50(weights=None)
    assert cost.total_macs(m, (3, 224, 224)) == 4_089_184_256


def test_nnz_macs_drop_in_proportion_to_zeroed_weights():
    torch.manual_seed(0)
    m = models.create_model("lenet5")
    t0 = cost.layer_table(m, (1, 32, 32))
    with torch.no_grad():
        w = m.classifier[1].weight  # fc1: 400 -> 120
        w[: w.shape[0] // 4] = 0  # a quarter of its output rows
    t1 = cost.layer_table(m, (1, 32, 32))
    row0, row1 = t0.set_index("layer").loc["classifier.1"], t1.set_index("layer").loc["classifier.1"]
    assert row1.nnz_macs == pytest.approx(0.75 * row0.nnz_macs)
    assert row1.macs == row0.macs  # dense-executed MACs do not move
    assert row1.live_out == 90 and row1.live_in == 400
    assert t1.macs.sum() == t0.macs.sum()


def test_bits_and_bitops():
    m = models.create_model("lenet5")
    t = cost.layer_table(m, (1, 32, 32), weight_bits={"features.0": 4}, act_bits=8)
    r = t.set_index("layer")
    assert r.loc["features.0"].weight_bits == 4 and r.loc["features.3"].weight_bits == 32
    assert r.loc["features.0"].bitops == pytest.approx(r.loc["features.0"].nnz_macs * 4 * 8)
    assert r.loc["features.0"].macs == 6 * 28 * 28 * 25


def test_no_counted_layer_is_an_error():
    with pytest.raises(ValueError, match="no Conv2d/Linear"):
        cost.layer_table(torch.nn.Sequential(torch.nn.ReLU()), (1, 4, 4))


def test_measure_latency_reports_median_and_iqr():
    m = models.create_model("lenet5")
    r = cost.measure_latency(m, (1, 32, 32), threads=1, batch=4, repeats=5, warmup=1)
    assert r["median_ms"] > 0 and r["iqr_ms"] >= 0 and r["threads"] == 1 and r["batch"] == 4
    assert r["repeats"] == 5
    with pytest.raises(ValueError, match="repeats"):
        cost.measure_latency(m, (1, 32, 32), repeats=1)
    with pytest.raises(TypeError):  # batch/threads are keyword-only: no positional order to get wrong
        cost.measure_latency(m, (1, 32, 32), 4, 1)


def test_latency_device_uses_the_one_timer(monkeypatch):
    from compresslib.energy import measure

    seen = {}

    def fake(model, input_size, **kw):
        seen.update(kw, input_size=tuple(input_size))
        return {"median_ms": 1.5}

    monkeypatch.setattr(measure, "measure_latency", fake)
    dev = measure.LatencyDevice("lenet5", batch=8, threads=1, repeats=4, warmup=0)
    assert dev.cost(dev.S) == 1.5
    assert seen == {"batch": 8, "threads": 1, "repeats": 4, "warmup": 0, "device": "cpu", "input_size": (1, 32, 32)}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")
def test_cuda_latency_reports_gpu_name():
    m = models.create_model("lenet5").cuda()
    r = cost.measure_latency(m, (1, 32, 32), repeats=5)
    assert r["device"].startswith("cuda") and r["gpu_name"]
