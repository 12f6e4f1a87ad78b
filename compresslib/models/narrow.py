"""Width-narrowing constructors: a width vector s = (s_0, ..., s_L) -> a physically smaller dense net.

ECC (spec §1) measures the cost of randomly narrowed *dense* networks. s_j is the number of input
channels of weight layer j, so s_0 = image channels and s_L = classes are fixed and the hidden
entries s_1..s_{L-1} are free (1 <= s_j <= S_j, S = dense widths).

``narrow_model(net, widths)`` builds one; ``dense_widths(net)`` gives S; ``NARROW_NETS`` lists
the nets: lenet5 (lead's LeNet5), alexnet (ICLR'19 AlexNet, 224x224), mobilenet_v1 (lead's
MobileNetV1, one width per conv output: stem + 13 blocks) and small_convnet (4x conv3 + GAP + FC).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn

from . import register_model
from .lenet import LeNet5
from .mobilenet import MOBILENET_V1_CFG, MobileNetV1


class NarrowAlexNet(nn.Module):
    """AlexNet as in the ICLR'19/ECC code (torchvision layout, 224x224, dropout off): 7 hidden widths."""

    def __init__(self, widths=(64, 192, 384, 256, 256, 4096, 4096), num_classes=1000, in_channels=3):
        super().__init__()
        if len(widths) != 7:
            raise ValueError(f"AlexNet takes 7 hidden widths, got {len(widths)}")
        c1, c2, c3, c4, c5, f6, f7 = widths
        self.widths = tuple(widths)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 11, 4, 2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2),
            nn.Conv2d(c1, c2, 5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2),
            nn.Conv2d(c2, c3, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c3, c4, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c4, c5, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c5 * 6 * 6, f6),
            nn.ReLU(inplace=True),
            nn.Linear(f6, f7),
            nn.ReLU(inplace=True),
            nn.Linear(f7, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


class SmallConvNet(nn.Module):
    """4x [conv3-BN-ReLU] (max-pool after the first three) + global average pool + FC."""

    def __init__(self, widths=(32, 64, 128, 128), num_classes=10, in_channels=1):
        super().__init__()
        if len(widths) != 4:
            raise ValueError(f"SmallConvNet takes 4 hidden widths, got {len(widths)}")
        self.widths = tuple(widths)
        layers, c = [], in_channels
        for i, w in enumerate(widths):
            layers += [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            if i < 3:
                layers.append(nn.MaxPool2d(2))
            c = w
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


@register_model("small_convnet", input_size=(1, 32, 32), paper="ECC spec §6.2: conv-heavy 4x conv3 net")
def small_convnet(num_classes=10, in_channels=1, widths=(32, 64, 128, 128)):
    return SmallConvNet(widths, num_classes, in_channels)


@register_model(
    "alexnet_narrow",
    input_size=(3, 224, 224),
    heavy=True,
    paper="AlexNet of the ICLR'19/ECC code (dense energy 2.7276e10)",
)
def alexnet_narrow(num_classes=1000, in_channels=3, widths=(64, 192, 384, 256, 256, 4096, 4096)):
    return NarrowAlexNet(widths, num_classes, in_channels)


@dataclass(frozen=True)
class NarrowNet:
    """A narrowable chain net: hidden dense widths, builder(hidden, num_classes, in_channels), input."""

    hidden: tuple
    build: Callable[..., nn.Module]
    input_size: tuple  # default (C, H, W)


NARROW_NETS: dict[str, NarrowNet] = {
    "lenet5": NarrowNet((6, 16, 120, 84), lambda w, nc, ic, hw: LeNet5(w, nc, ic, hw), (1, 32, 32)),
    "alexnet": NarrowNet(
        (64, 192, 384, 256, 256, 4096, 4096), lambda w, nc, ic, hw: NarrowAlexNet(w, nc, ic), (3, 224, 224)
    ),
    "mobilenet_v1": NarrowNet(
        (32,) + tuple(c for c, _ in MOBILENET_V1_CFG),
        lambda w, nc, ic, hw: MobileNetV1(nc, ic, widths=list(w), small_input=hw < 224),
        (3, 224, 224),
    ),
    "small_convnet": NarrowNet((32, 64, 128, 128), lambda w, nc, ic, hw: SmallConvNet(w, nc, ic), (1, 32, 32)),
}


def _spec(net: str) -> NarrowNet:
    if net not in NARROW_NETS:
        raise ValueError(f"unknown narrowable net {net!r}; valid: {', '.join(sorted(NARROW_NETS))}")
    return NARROW_NETS[net]


def dense_widths(net: str, num_classes: int = 10, in_channels: int | None = None) -> list[int]:
    """S = (image channels, hidden dense widths..., classes)."""
    spec = _spec(net)
    ic = spec.input_size[0] if in_channels is None else in_channels
    return [int(ic), *spec.hidden, int(num_classes)]


def check_widths(net: str, widths, num_classes: int = 10, in_channels: int | None = None) -> list[int]:
    """Validate a full width vector against S: same length, fixed ends, 1 <= s_j <= S_j integers."""
    S = dense_widths(net, num_classes, in_channels)
    w = list(widths)
    if len(w) != len(S):
        raise ValueError(f"{net}: width vector needs {len(S)} entries (s_0..s_L), got {len(w)}")
    if any(float(x) != int(x) for x in w):
        raise ValueError(f"{net}: widths must be integers, got {w}")
    w = [int(x) for x in w]
    if w[0] != S[0] or w[-1] != S[-1]:
        raise ValueError(f"{net}: s_0 (image channels) and s_L (classes) are fixed to {S[0]}, {S[-1]}; got {w}")
    bad = [j for j in range(1, len(S) - 1) if not 1 <= w[j] <= S[j]]
    if bad:
        raise ValueError(f"{net}: hidden widths must satisfy 1 <= s_j <= S_j={S}; got {w}")
    return w


def narrow_model(
    net: str, widths, num_classes: int = 10, in_channels: int | None = None, image_size: int | None = None, device=None
) -> nn.Module:
    """Build the physically narrowed dense net for the full width vector ``widths`` (s_0..s_L).

    ``device="meta"`` builds it without allocating weights (enough for the analytic energy model).
    """
    spec = _spec(net)
    w = check_widths(net, widths, num_classes, in_channels)
    hw = spec.input_size[1] if image_size is None else int(image_size)
    with torch.device(device or "cpu"):
        return spec.build(tuple(w[1:-1]), w[-1], w[0], hw)


def narrow_input_size(net: str, in_channels: int | None = None, image_size: int | None = None) -> tuple:
    c, h, w = _spec(net).input_size
    return (
        c if in_channels is None else in_channels,
        h if image_size is None else image_size,
        w if image_size is None else image_size,
    )
