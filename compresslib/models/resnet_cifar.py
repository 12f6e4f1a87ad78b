"""CIFAR-style ResNets: ResNet-20 (He et al. 2016, option A) and pre-activation ResNet-(6n+2)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import register_model


class PadShortcut(nn.Module):
    """Parameter-free down-sampling shortcut: AvgPool2d(stride) + zero-padding of channels."""

    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.extra, self.stride = out_ch - in_ch, stride

    def forward(self, x):
        if self.stride > 1:
            x = F.avg_pool2d(x, self.stride)
        if self.extra > 0:
            x = F.pad(x, (0, 0, 0, 0, 0, self.extra))
        return x


def _shortcut(in_ch, out_ch, stride):
    return nn.Identity() if (stride == 1 and in_ch == out_ch) else PadShortcut(in_ch, out_ch, stride)


class BasicBlock(nn.Module):
    """Post-activation basic block: conv-BN-ReLU-conv-BN + shortcut, ReLU."""

    def __init__(self, in_ch, out_ch, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut = _shortcut(in_ch, out_ch, stride)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class PreActBlock(nn.Module):
    """Pre-activation block: BN-ReLU-conv-BN-ReLU-conv + shortcut of the pre-activated input.

    ``act`` is the activation module factory (CAMP swaps in a quantized ReLU).
    """

    def __init__(self, in_ch, out_ch, stride=1, act=nn.ReLU):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.act1 = act()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.act2 = act()
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.shortcut = _shortcut(in_ch, out_ch, stride)

    def forward(self, x):
        a = self.act1(self.bn1(x))
        out = self.conv2(self.act2(self.bn2(self.conv1(a))))
        # identity shortcut adds the raw input; the down-sampling shortcut reads the pre-activation
        return out + (x if isinstance(self.shortcut, nn.Identity) else self.shortcut(a))


def make_stages(block, widths, n: int):
    """Stages of ``n`` blocks each (first block of every later stage has stride 2), as one
    ``nn.Sequential``; ``block(in_ch, out_ch, stride)``. Returns (blocks, output channels)."""
    blocks, c = [], widths[0]
    for i, w in enumerate(widths):
        for j in range(n):
            blocks.append(block(c, w, 2 if (i > 0 and j == 0) else 1))
            c = w
    return nn.Sequential(*blocks), c


class CifarResNet(nn.Module):
    """Three stages of ``n`` blocks (widths w1/w2/w3, strides 1/2/2), global pool, FC."""

    def __init__(self, block, n, widths=(16, 32, 64), num_classes=10, in_channels=3, preact=False):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.stem_bn = nn.Identity() if preact else nn.BatchNorm2d(widths[0])
        self.stem_act = nn.Identity() if preact else nn.ReLU(inplace=True)
        self.blocks, c = make_stages(block, widths, n)
        self.head_bn = nn.BatchNorm2d(c) if preact else nn.Identity()
        self.head_act = nn.ReLU(inplace=True) if preact else nn.Identity()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.stem_act(self.stem_bn(self.stem(x)))
        x = self.head_act(self.head_bn(self.blocks(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


def depth_to_n(depth: int) -> int:
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2 with n >= 1 (8, 14, 20, 32, 44, ...), got {depth}")
    return (depth - 2) // 6


@register_model("resnet20", input_size=(3, 32, 32), paper="He et al. 2016, CIFAR ResNet-20")
def resnet20(num_classes=10, in_channels=3, widths=(16, 32, 64)):
    return CifarResNet(BasicBlock, 3, tuple(widths), num_classes, in_channels)


@register_model("preact_resnet", input_size=(1, 16, 16), paper="pre-activation ResNet-(6n+2), CAMP backbone")
def preact_resnet(num_classes=10, in_channels=1, depth=8, widths=(16, 32, 64)):
    return CifarResNet(PreActBlock, depth_to_n(depth), tuple(widths), num_classes, in_channels, preact=True)
