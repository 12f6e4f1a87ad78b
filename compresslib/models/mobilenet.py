"""MobileNet-v1 (Howard et al. 2017): a stem conv then 13 depthwise-separable blocks."""

from __future__ import annotations

import torch
import torch.nn as nn

from . import register_model

# (output channels, stride) of the 13 depthwise-separable blocks at width 1.0
MOBILENET_V1_CFG = [
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
]


def _conv_bn(i, o, k, s, groups=1):
    return nn.Sequential(
        nn.Conv2d(i, o, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True)
    )


class MobileNetV1(nn.Module):
    """``widths`` gives the 14 conv output widths (stem + 13 blocks); default = width_mult x paper."""

    def __init__(self, num_classes=1000, in_channels=3, width_mult=1.0, widths=None, small_input=False):
        super().__init__()
        if widths is None:
            widths = [max(8, int(32 * width_mult))] + [max(8, int(c * width_mult)) for c, _ in MOBILENET_V1_CFG]
        if len(widths) != 14:
            raise ValueError(f"MobileNetV1 takes 14 widths (stem + 13 blocks), got {len(widths)}")
        self.widths = list(widths)
        layers = [_conv_bn(in_channels, widths[0], 3, 1 if small_input else 2)]
        for (c, s), i, o in zip(MOBILENET_V1_CFG, widths[:-1], widths[1:]):
            layers += [_conv_bn(i, i, 3, s, groups=i), _conv_bn(i, o, 1, 1)]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[-1], num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


@register_model("mobilenet_v1", input_size=(3, 224, 224), heavy=True, paper="MobileNet-v1 1.0-224 (ECC)")
def mobilenet_v1(num_classes=1000, in_channels=3, width_mult=1.0, widths=None):
    return MobileNetV1(num_classes, in_channels, width_mult, widths)


@register_model("mobilenet_v1_small", input_size=(1, 32, 32), paper="MobileNet-v1 x0.25 for 32x32 inputs")
def mobilenet_v1_small(num_classes=10, in_channels=1, width_mult=0.25, widths=None):
    return MobileNetV1(num_classes, in_channels, width_mult, widths, small_input=True)
