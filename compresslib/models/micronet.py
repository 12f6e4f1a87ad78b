"""Compound-scalable MicroNet (Becking et al., EC2T / "Finding storage- and compute-efficient CNNs").

A CIFAR ResNet-style stack of "BN-first" residual blocks (PyramidNet style)::

    BN(c_in) -> Conv3x3(c_in->c, stride s) -> BN -> ReLU -> Dropout -> Conv3x3(c->c) -> BN  (+ shortcut)

shortcut = identity, or Conv1x1(stride s) -> BN when the shape changes; no ReLU after the add.
Network: stem Conv3x3 -> BN -> ReLU -> 3 stages (strides 1, 2, 2) -> ReLU -> global avg-pool -> Linear.

Compound scaling (EfficientNet rule, spec §2.2): depth D = d**phi, width W = w**phi, resolution R = r**phi;
blocks per stage = ceil(base_blocks * D); channels = round_filters(c, W, divisor).
The original CIFAR net is ``MicroNet(in_channels=3, base_widths=(16, 32, 64), base_blocks=7)``;
the registered default ("micronet") is the tiny digits/MNIST variant of spec §8.2 (widths 8/16/32, 1 block).
Block convolutions are named ``layerS.B.conv1/conv2`` (the layers EC2T ternarizes: names containing ".conv").
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from torch import nn
import torch.nn.functional as F

from compresslib.models import register_model
from compresslib.models.scaling import make_divisible

__all__ = [
    "MicroNet",
    "MicroNetConfig",
    "BasicBlock",
    "round_filters",
    "round_repeats",
    "compound_multipliers",
    "scaled_resolution",
    "micronet",
    "micronet_cifar",
]


def round_filters(channels: float, width_mult: float, divisor: int = 8) -> int:
    """Channels * W rounded to the nearest multiple of ``divisor`` (min divisor), +divisor if >10 % was lost."""
    return make_divisible(channels * width_mult, divisor)


def round_repeats(repeats: int, depth_mult: float) -> int:
    """Blocks per stage = ceil(repeats * D)."""
    return int(math.ceil(depth_mult * repeats))


def compound_multipliers(d: float, w: float, phi: float, r: float = 1.0) -> tuple[float, float, float]:
    """(D, W, R) = (d**phi, w**phi, r**phi); the grid search constrains d * w**2 (* r**2) ~= 2."""
    if min(d, w, r) <= 0:
        raise ValueError(f"multipliers must be > 0, got d={d}, w={w}, r={r}")
    return d**phi, w**phi, r**phi


def scaled_resolution(base: int, r: float, phi: float = 1.0, divisor: int = 1) -> int:
    """Input side length base * r**phi, rounded to a multiple of ``divisor``."""
    side = base * r**phi
    return max(divisor, int(round(side / divisor)) * divisor)


class BasicBlock(nn.Module):
    """BN-first residual block; output = main(x) + shortcut(x), no ReLU after the add."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1, dropout: float = 0.2):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x):
        out = self.dropout(self.relu(self.bn2(self.conv1(self.bn1(x)))))
        out = self.bn3(self.conv2(out))
        return out + self.shortcut(x)


@dataclass
class MicroNetConfig:
    """The MicroNet hyperparameters: the keyword arguments of :class:`MicroNet`, checked on construction (d, w > 0
    by :func:`compound_multipliers` when the net is built). ``model.config`` is this as a dict, from which a
    checkpoint's network is rebuilt (``MicroNet(**config)``)."""

    num_classes: int = 10
    in_channels: int = 1
    d: float = 1.0
    w: float = 1.0
    phi: float = 1.0
    base_widths: tuple = (8, 16, 32)
    base_blocks: int = 1
    divisor: int = 8
    dropout: float = 0.2
    strides: tuple = (1, 2, 2)

    def __post_init__(self):
        self.base_widths, self.strides = tuple(self.base_widths), tuple(self.strides)
        if self.num_classes < 1 or self.in_channels < 1:
            raise ValueError(f"num_classes and in_channels must be >= 1, got {self.num_classes}, {self.in_channels}")
        if self.base_blocks < 1 or len(self.base_widths) != len(self.strides) or not self.base_widths:
            raise ValueError("need base_blocks >= 1 and one stride per base width")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


class MicroNet(nn.Module):
    """Compound-scaled MicroNet; ``config`` holds the constructor kwargs (to rebuild from a checkpoint).
    Keyword arguments: the :class:`MicroNetConfig` fields."""

    def __init__(self, **config):
        super().__init__()
        cfg = MicroNetConfig(**config)
        D, W, _ = compound_multipliers(cfg.d, cfg.w, cfg.phi)
        self.config = asdict(cfg)
        self.blocks_per_stage = round_repeats(cfg.base_blocks, D)
        self.widths = [round_filters(c, W, cfg.divisor) for c in cfg.base_widths]
        stem = self.widths[0]
        self.conv1 = nn.Conv2d(cfg.in_channels, stem, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        in_planes, stages = stem, []
        for planes, stride in zip(self.widths, cfg.strides):
            blocks = []
            for k in range(self.blocks_per_stage):
                blocks.append(BasicBlock(in_planes, planes, stride if k == 0 else 1, cfg.dropout))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.stages = len(stages)
        for i, stage in enumerate(stages):
            self.add_module(f"layer{i + 1}", stage)
        self.linear = nn.Linear(in_planes, cfg.num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        for i in range(self.stages):
            out = getattr(self, f"layer{i + 1}")(out)
        out = F.relu(out)
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


@register_model("micronet", input_size=(1, 28, 28), paper="EC2T", family="micronet", compound=True)
def micronet(num_classes: int = 10, in_channels: int = 1, **kw) -> MicroNet:
    """Tiny compound-scalable MicroNet (spec §8.2 defaults: widths 8/16/32, 1 block/stage, d=w=phi=1)."""
    return MicroNet(num_classes=num_classes, in_channels=in_channels, **kw)


@register_model("micronet_cifar", input_size=(3, 32, 32), paper="EC2T", family="micronet", compound=True)
def micronet_cifar(num_classes: int = 100, in_channels: int = 3, **kw) -> MicroNet:
    """The paper's CIFAR MicroNet base (widths 16/32/64, 7 blocks/stage; spec §2.2: 668,660 params for
    CIFAR-100 at d=w=phi=1, 8,055,124 at d=1.4, w=1.2, phi=3.5). Same kwargs as ``micronet``."""
    kw.setdefault("base_widths", (16, 32, 64))
    kw.setdefault("base_blocks", 7)
    return MicroNet(num_classes=num_classes, in_channels=in_channels, **kw)
