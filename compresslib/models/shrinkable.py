"""EdgeCompress compound-shrinkable bottleneck ResNet and the light foreground box predictor.

Compound shrinking (Kong et al., TCAD 2023, Sec. "compound shrinking"; repo ``networks/resnet.py``)
re-instantiates a smaller ResNet along three axes: depth d (blocks per stage), the *inner*
bottleneck width w (1x1-reduce and 3x3 channels = make_divisible(planes * w, 4); the stage output
widths planes * expansion, the stem and the classifier stay unchanged) and the input resolution r
(the size the crop is resized to). The resolution is not part of the network: it is stored as
``model.resolution`` and applied by the cropping pipeline (``compresslib.methods.crop``).

The box predictor mirrors the repo's ``cropnet_anynet_light_box``: strided 3x3 stem, one strided
bottleneck stage after another, global pooling and an MLP head with a sigmoid that regresses
normalised (xmin, ymin, xmax, ymax) in [0, 1]. ``pool="grid"`` (our option, not the repo's) keeps a
grid x grid average map instead of the global average, so the head sees *where* the features are.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from . import register_model
from .scaling import make_divisible


def shrink_depths(base_depths, depth_mult: float) -> tuple[int, ...]:
    """Depth axis d of compound shrinking: blocks per stage = max(1, round(d * base))."""
    if not 0.0 < depth_mult <= 1.0:
        raise ValueError(f"depth_mult must be in (0, 1], got {depth_mult}")
    return tuple(max(1, int(round(depth_mult * b))) for b in base_depths)


# classifier families: "cifar" = the workbook's 3-stage 16/32/64 net (3x3/1 stem), "resnet50" = the
# paper's ResNet-50 v1.5 shape (7x7/2 stem + max-pool, 4 stages of 64/128/256/512 inner channels)
ARCHS = {
    "cifar": {"base_depths": (2, 2, 2), "kwargs": {}},
    "resnet50": {
        "base_depths": (3, 4, 6, 3),
        "kwargs": {"planes": (64, 128, 256, 512), "stem_width": 64, "stem": "imagenet"},
    },
}
# depth factors of the released EdgeCompress configs (spec: d0.8 -> [3,3,4,3], d0.9 -> [3,4,5,3])
RELEASED_DEPTHS = {(3, 4, 6, 3): {0.8: (3, 3, 4, 3), 0.9: (3, 4, 5, 3), 1.0: (3, 4, 6, 3)}}


def arch_kwargs(arch: str, depth_mult: float, width_mult: float, resolution: int) -> dict:
    """``create_model("shrinkable_resnet", **kw)`` arguments of the (d, w, r) member of a family.
    Depths: the released table where it has d (ResNet-50), else ``shrink_depths``; ResNet-50 widths follow
    the released width_per_group rule (EC-Static-1..5: 1.114 / 1.162 / 1.740 / 2.302 / 3.131 GMACs)."""
    if arch not in ARCHS:
        raise ValueError(f"unknown ARCH {arch!r}; valid: {', '.join(ARCHS)}")
    base = ARCHS[arch]["base_depths"]
    depths = RELEASED_DEPTHS.get(base, {}).get(round(float(depth_mult), 6)) or shrink_depths(base, depth_mult)
    if arch == "resnet50":  # released rule: width_per_group = make_divisible(64 w, 4), inner = planes * wpg / 64
        width_mult = make_divisible(64 * float(width_mult), 4) / 64
    return {"depths": depths, "width_mult": width_mult, "resolution": int(resolution), **ARCHS[arch]["kwargs"]}


class Bottleneck(nn.Module):
    """torchvision v1.5 bottleneck: 1x1 reduce -> 3x3 (carries the stride) -> 1x1 expand, with a
    1x1 projection shortcut when the shape changes."""

    def __init__(self, in_ch: int, inner: int, out_ch: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, inner, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(inner)
        self.conv2 = nn.Conv2d(inner, inner, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(inner)
        self.conv3 = nn.Conv2d(inner, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + idt)


def _stage(in_ch: int, inner: int, out_ch: int, depth: int, stride: int) -> nn.Sequential:
    blocks = [Bottleneck(in_ch, inner, out_ch, stride)]
    blocks += [Bottleneck(out_ch, inner, out_ch, 1) for _ in range(depth - 1)]
    return nn.Sequential(*blocks)


class ShrinkableResNet(nn.Module):
    """Bottleneck ResNet with per-stage ``depths``, inner-width multiplier ``width_mult`` and a
    nominal input ``resolution`` (d, w, r of compound shrinking).

    Stage s has inner width make_divisible(planes[s] * width_mult, 4) and output width
    planes[s] * expansion (unchanged by w, as in the paper's width_per_group rule).
    ``features`` (the last stage) is the Grad-CAM target layer.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        depths=(2, 2, 2),
        width_mult: float = 1.0,
        resolution: int = 32,
        stem_width: int = 16,
        planes=(16, 32, 64),
        expansion: int = 4,
        strides=None,
        stem: str = "cifar",
    ):
        super().__init__()
        depths, planes = tuple(int(d) for d in depths), tuple(int(p) for p in planes)
        if len(depths) != len(planes) or not depths or min(depths) < 1:
            raise ValueError(f"need one depth >= 1 per stage; got depths={depths}, planes={planes}")
        if not 0.0 < width_mult <= 4.0:
            raise ValueError(f"width_mult must be in (0, 4], got {width_mult}")
        if num_classes < 1 or in_channels < 1 or resolution < 4:
            raise ValueError("num_classes, in_channels must be >= 1 and resolution >= 4")
        if stem not in ("cifar", "imagenet"):
            raise ValueError(f"stem must be 'cifar' (3x3/1) or 'imagenet' (7x7/2 + 3x3/2 max-pool), got {stem!r}")
        strides = tuple(strides) if strides is not None else (1,) + (2,) * (len(depths) - 1)
        self.depths, self.width_mult, self.resolution = depths, float(width_mult), int(resolution)
        self.num_classes = num_classes
        self.inner_widths = tuple(make_divisible(p * width_mult, 4) for p in planes)
        if stem == "cifar":
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, stem_width, 3, 1, 1, bias=False),
                nn.BatchNorm2d(stem_width),
                nn.ReLU(inplace=True),
            )
        else:  # torchvision ResNet stem
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, stem_width, 7, 2, 3, bias=False),
                nn.BatchNorm2d(stem_width),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, 2, 1),
            )
        stages, ch = [], stem_width
        for d, p, inner, s in zip(depths, planes, self.inner_widths, strides):
            stages.append(_stage(ch, inner, p * expansion, d, s))
            ch = p * expansion
        self.stages = nn.Sequential(*stages[:-1])
        self.features = stages[-1]
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(ch, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        for m in self.modules():  # zero-init the last BN of each block (pycls ZERO_INIT_FINAL_GAMMA)
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)

    def forward(self, x):
        x = self.features(self.stages(self.stem(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


class BoxPredictor(nn.Module):
    """Light foreground predictor ("anynet_light" scaled down): stride-2 stem + strided bottleneck
    stages + MLP -> sigmoid (xmin, ymin, xmax, ymax) / image size."""

    def __init__(
        self,
        num_classes: int = 4,
        in_channels: int = 1,
        stem_width: int = 8,
        inner_widths=(8, 16, 16),
        expansion: int = 4,
        depths=(1, 1, 1),
        hidden=(64, 32),
        pool: str = "avg",
        grid: int = 4,
    ):
        super().__init__()
        if num_classes != 4:
            raise ValueError(f"the box predictor regresses 4 box coordinates; got num_classes={num_classes}")
        if pool not in ("avg", "grid") or grid < 1:
            raise ValueError(f"pool must be 'avg' (global, as the repo) or 'grid' (grid x grid cells), got {pool!r}")
        self.num_classes, self.pool, self.grid = 4, pool, int(grid)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, stem_width, 3, 2, 1, bias=False), nn.BatchNorm2d(stem_width), nn.ReLU(inplace=True)
        )
        stages, ch = [], stem_width
        for inner, d in zip(inner_widths, depths):
            stages.append(_stage(ch, inner, inner * expansion, d, 2))
            ch = inner * expansion
        self.stages = nn.Sequential(*stages)
        layers, prev = [], ch * (self.grid**2 if pool == "grid" else 1)
        for h in hidden:
            layers += [nn.Linear(prev, h), nn.ReLU(inplace=True)]
            prev = h
        self.head = nn.Sequential(*layers, nn.Linear(prev, 4), nn.Sigmoid())

    def forward(self, x):
        x = self.stages(self.stem(x))
        x = x.mean((2, 3)) if self.pool == "avg" else nn.functional.adaptive_avg_pool2d(x, self.grid)
        return self.head(torch.flatten(x, 1))


@register_model("shrinkable_resnet", input_size=(1, 32, 32), family="edgecompress")
def shrinkable_resnet(num_classes: int = 10, in_channels: int = 1, **kw) -> ShrinkableResNet:
    """Compound-shrinkable bottleneck ResNet (defaults: the full 'large' model, d=1, w=1)."""
    return ShrinkableResNet(num_classes=num_classes, in_channels=in_channels, **kw)


@register_model("box_predictor", input_size=(1, 64, 64), family="edgecompress", task="box")
def box_predictor(num_classes: int = 4, in_channels: int = 1, **kw) -> BoxPredictor:
    """Foreground box regressor: outputs 4 normalised box coordinates (num_classes must be 4)."""
    return BoxPredictor(num_classes=num_classes, in_channels=in_channels, **kw)
