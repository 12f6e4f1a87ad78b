"""Compound-scaled MicroNet: exact parameter counts of spec §2.2 / §8.2 / §8.4.1."""

import pytest
import torch

from compresslib.models import create_model, model_input_size
from compresslib.models.micronet import (
    MicroNet,
    MicroNetConfig,
    compound_multipliers,
    round_filters,
    round_repeats,
    scaled_resolution,
)

CIFAR = dict(in_channels=3, base_widths=(16, 32, 64), base_blocks=7)


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_rounding_rules():
    assert [round_filters(c, 1.2**3.5) for c in (16, 32, 64)] == [32, 64, 120]
    assert round_filters(4, 1.0) == 8 and round_filters(16, 1.1) == 16 and round_filters(64, 1.1) == 72
    assert round_filters(16, 1.0, divisor=4) == 16 and round_filters(10, 1.0, divisor=4) == 12
    assert round_repeats(7, 1.4**3.5) == 23 and round_repeats(1, 1.0) == 1
    D, W, R = compound_multipliers(1.4, 1.2, 2.0, 1.1)
    assert (D, W) == pytest.approx((1.96, 1.44)) and R == pytest.approx(1.21)
    assert scaled_resolution(28, 1.15, 2, divisor=2) == 38
    with pytest.raises(ValueError, match="multipliers must be > 0"):
        compound_multipliers(0, 1, 1)


def test_cifar_baseline_and_phi35_counts():
    assert n_params(MicroNet(num_classes=100, **CIFAR)) == 668_660
    assert n_params(MicroNet(num_classes=10, **CIFAR)) == 662_810
    big = MicroNet(num_classes=100, d=1.4, w=1.2, phi=3.5, **CIFAR)
    assert n_params(big) == 8_055_124
    conv = [p for k, p in big.named_parameters() if ".conv" in k]
    assert sum(p.numel() for p in conv) == 8_002_368 and len(conv) == 138
    short = [p for k, p in big.named_parameters() if "shortcut.0" in k]
    assert sum(p.numel() for p in short) == 9_728
    assert n_params(MicroNet(num_classes=10, d=1.4, w=1.2, phi=3.5, **CIFAR)) == 8_044_234


@pytest.mark.parametrize(
    "d,w,blocks,widths,c10,c100",
    [
        (1.0, 1.0, 7, [16, 32, 64], 662_810, 668_660),
        (1.9, 1.0, 14, [16, 32, 64], 1_344_890, 1_350_740),
        (1.7, 1.1, 12, [16, 32, 72], 1_378_442, 1_385_012),
        (1.4, 1.2, 10, [24, 40, 80], 1_523_554, 1_530_844),
        (1.2, 1.3, 9, [24, 40, 80], 1_368_322, 1_375_612),
        (1.0, 1.4, 7, [24, 48, 88], 1_310_402, 1_318_412),
    ],
)
def test_grid_table(d, w, blocks, widths, c10, c100):
    m = MicroNet(num_classes=10, d=d, w=w, **CIFAR)
    assert (m.blocks_per_stage, m.widths) == (blocks, widths)
    assert n_params(m) == c10 and n_params(MicroNet(num_classes=100, d=d, w=w, **CIFAR)) == c100


def test_tiny_registered_variant():
    m = create_model("micronet")
    assert n_params(m) == 19_874 and model_input_size("micronet") == (1, 28, 28)
    phi2 = create_model("micronet", d=1.4, w=1.2, phi=2)
    assert n_params(phi2) == 104_138 and phi2.widths == [16, 24, 48] and phi2.blocks_per_stage == 2
    assert phi2(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    # the rebuild-from-config path used by the checkpoints of notebook 05
    assert n_params(MicroNet(**phi2.config)) == 104_138


def test_bad_arguments():
    with pytest.raises(ValueError, match="dropout"):
        MicroNet(dropout=1.5)
    with pytest.raises(ValueError, match="one stride per base width"):
        MicroNet(base_widths=(8, 16), strides=(1, 2, 2))


def test_config_and_initial_weights_are_pinned():
    """``model.config`` (the rebuild record) and the seeded initial weights, as before MicroNetConfig held the kwargs."""
    torch.manual_seed(0)
    m = MicroNet(d=1.4, w=1.2, phi=2, base_widths=[8, 16, 32])
    assert list(m.config.items()) == [
        ("num_classes", 10),
        ("in_channels", 1),
        ("d", 1.4),
        ("w", 1.2),
        ("phi", 2),
        ("base_widths", (8, 16, 32)),
        ("base_blocks", 1),
        ("divisor", 8),
        ("dropout", 0.2),
        ("strides", (1, 2, 2)),
    ]
    with torch.no_grad():
        assert float(sum(p.double().sum() for p in m.parameters())) == 601.596310060874
        assert float(m.layer2[0].conv1.weight.double().abs().sum()) == 333.6957912307189
    assert [k for k, _ in m.named_parameters()][:4] == ["conv1.weight", "bn1.weight", "bn1.bias", "layer1.0.bn1.weight"]
    assert MicroNetConfig(**m.config) == MicroNetConfig(d=1.4, w=1.2, phi=2)
    with pytest.raises(TypeError, match="unexpected keyword argument 'width'"):
        MicroNet(width=2)
    with pytest.raises(ValueError, match="num_classes and in_channels must be >= 1, got 0, 1"):
        MicroNet(num_classes=0)
