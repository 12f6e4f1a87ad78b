"""Analytic (Eyeriss-style) energy model: spec §6.1 numbers, sparsity awareness, devices, profiles."""

import math

import pytest
import torch

from compresslib.energy.analytic import AnalyticDevice, LayerGeometry, conv_energy, fc_energy, model_energy
from compresslib.energy.profile import get_device, load_profile, run_profile, sample_widths
from compresslib.models.narrow import check_widths, dense_widths, narrow_model


def test_dense_lenet5_matches_iclr19_numbers():
    e = model_energy(narrow_model("lenet5", dense_widths("lenet5"), device="meta"), (1, 32, 32))
    assert e["X"] == 2604944.0 and e["W"] == 13253040.0 and e["C"] == 1249560.0
    assert f"{e['X']:.4e}" == "2.6049e+06" and f"{e['W']:.4e}" == "1.3253e+07" and f"{e['C']:.4e}" == "1.2496e+06"


def test_dense_alexnet_total_and_relaxed():
    S = dense_widths("alexnet", num_classes=1000)
    m = narrow_model("alexnet", S, num_classes=1000, device="meta")
    assert f"{model_energy(m, (3, 224, 224))['total']:.4e}" == "2.7276e+10"
    e = model_energy(m, (3, 224, 224))
    assert f"{e['X']:.4e}" == "1.1246e+09" and f"{e['W']:.4e}" == "2.4178e+10" and f"{e['C']:.4e}" == "1.9738e+09"
    assert f"{model_energy(m, (3, 224, 224), relaxed=True)['total']:.4e}" == "2.7445e+10"


def test_fc_weight_energy_is_207_per_weight_and_zero_weights_are_free():
    g = LayerGeometry("fc", "fc", c=400, d=120)
    assert fc_energy(g, 1000.0)["W"] == 207 * 1000
    assert fc_energy(g, 0.0)["W"] == 0 and fc_energy(g, 0.0)["C"] == 0
    m = narrow_model("lenet5", dense_widths("lenet5"))
    dense = model_energy(m, (1, 32, 32))
    with torch.no_grad():
        m.classifier[1].weight[:, :200] = 0  # half of fc1 (200 x 120 weights) pruned
    sparse = model_energy(m, (1, 32, 32))
    assert dense["W"] - sparse["W"] == pytest.approx(207 * 120 * 200)
    assert dense["X"] == sparse["X"]


def test_conv_sparse_input_support_and_exact_macs():
    g = LayerGeometry("c", "conv", c=2, d=3, h=6, w=6, r=3, stride=1, padding=1)
    dense = conv_energy(g, 54.0)
    # e_MAC * d * c * in-bounds taps (4 corners x 4, 16 edge pixels x 6, 16 inner x 9)
    assert dense["C"] == 3.0 * 3 * 2 * (4 * 4 + 16 * 6 + 16 * 9)
    xs = torch.ones(2, 6, 6)
    xs[1] = 0  # second input channel entirely zero
    half = conv_energy(g, 54.0, x_support=xs)
    assert half["C"] == pytest.approx(dense["C"] / 2)
    assert half["X"] < dense["X"]
    assert conv_energy(g, 54.0, relaxed=True)["C"] == 3.0 * 36 * 54


def test_all_ones_floor_and_monotone_in_widths():
    dev = AnalyticDevice("lenet5")
    S = dev.S
    floor, full = dev.cost([1, 1, 1, 1, 1, 10]), dev.cost(S)
    assert floor < dev.cost([1, 3, 8, 60, 42, 10]) < full
    assert full == 17107544.0
    assert [r["layer"] for r in dev.breakdown(S)] == [
        "features.0",
        "features.3",
        "classifier.1",
        "classifier.3",
        "classifier.5",
    ]


def test_width_validation_errors():
    with pytest.raises(ValueError, match="fixed"):
        check_widths("lenet5", [3, 6, 16, 120, 84, 10])
    with pytest.raises(ValueError, match="1 <= s_j"):
        check_widths("lenet5", [1, 0, 16, 120, 84, 10])
    with pytest.raises(ValueError, match="entries"):
        check_widths("lenet5", [1, 6, 16, 10])
    with pytest.raises(ValueError, match="unknown narrowable"):
        dense_widths("vgg")
    with pytest.raises(ValueError, match="unknown cost device"):
        get_device("pixel", "lenet5")


def test_sampling_is_seeded_uniform_and_prefix_stable():
    S = dense_widths("lenet5")
    a, b = sample_widths(S, 500, seed=3), sample_widths(S, 50, seed=3)
    assert a[:50] == b and a != sample_widths(S, 500, seed=4)
    assert all(w[0] == 1 and w[-1] == 10 and all(1 <= w[j] <= S[j] for j in range(1, 5)) for w in a)
    assert min(w[1] for w in a) == 1 and max(w[1] for w in a) == 6


def test_profile_resume_and_bad_csv(tmp_path):
    dev = AnalyticDevice("lenet5")
    p = run_profile(dev, 12, tmp_path, seed=1, progress=False)
    first = load_profile(p, net="lenet5")
    assert len(first["cost"]) == 12 and p.name == "lenet5_analytic.csv"
    lines = p.read_text().splitlines()
    p.write_text("\n".join(lines[:6]) + "\n" + lines[6][:5])  # interrupted mid-row
    run_profile(dev, 20, tmp_path, seed=1, progress=False)
    again = load_profile(p, net="lenet5")
    assert again["widths"][:12] == first["widths"] and again["cost"][:12] == first["cost"]
    assert len(again["cost"]) == 20 and all(math.isfinite(c) for c in again["cost"])
    with pytest.raises(ValueError, match="not 'alexnet'"):
        load_profile(p, net="alexnet")
    p.write_text("")
    with pytest.raises(ValueError, match="empty"):
        load_profile(p)
    p.write_text("sample,w0,w1,w2,w3,w4,w5,cost,time\n0,1,2,3,4,5,10,abc,0.1\n")
    with pytest.raises(ValueError, match="corrupt"):
        load_profile(p)
    p.write_text("sample,w0,w1,w2,w3,w4,w5,cost,time\n")
    with pytest.raises(ValueError, match="no measured rows"):
        load_profile(p)
    with pytest.raises(FileNotFoundError, match="01_profiling"):
        load_profile(tmp_path / "missing.csv")


def test_latency_device_reports_median_and_spread():
    dev = get_device("latency", "lenet5", batch=2, repeats=5, warmup=1)
    ms = dev.cost(dev.S)
    assert ms > 0 and dev.last["iqr_ms"] >= 0 and dev.last["batch"] == 2 and dev.last["threads"] == 1


def test_nvml_skips_cleanly_without_gpu():
    from compresslib.energy.measure import DeviceUnavailable

    if torch.cuda.is_available():
        pytest.skip("GPU present")
    with pytest.raises(DeviceUnavailable, match="CUDA"):
        get_device("nvml", "lenet5")


def test_profile_with_other_settings_starts_fresh(tmp_path):
    dev = get_device("latency", "lenet5", batch=1, repeats=3, warmup=0)
    run_profile(dev, 3, tmp_path, seed=1, progress=False)
    dev2 = get_device("latency", "lenet5", batch=2, repeats=3, warmup=0)
    with pytest.warns(UserWarning, match="other settings"):
        p = run_profile(dev2, 2, tmp_path, seed=1, progress=False)
    prof = load_profile(p)
    assert len(prof["cost"]) == 2 and prof["meta"]["settings"]["batch"] == 2
