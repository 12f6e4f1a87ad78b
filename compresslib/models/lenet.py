"""LeNet-5 in the two variants the papers use."""

from __future__ import annotations

import torch.nn as nn

from . import register_model


class LeNet5(nn.Module):
    """conv(c1,5) [- ReLU] - pool - conv(c2,5) [- ReLU] - pool - fc(f1) [- fc(f2)] - fc(classes), max-pool 2,
    ReLU after every hidden fc layer.

    ``widths=(6, 16, 120, 84)`` is the classic LeNet-5 at 32x32 used by ECC / ICLR'19;
    ``widths=(20, 50, 500), conv_relu=False`` at 28x28 is the Caffe LeNet of the sparsity-quantization
    paper (its ``CaffeLeNet``: no activation after the convolutions, only after fc 800 -> 500).
    """

    def __init__(
        self,
        widths=(6, 16, 120, 84),
        num_classes: int = 10,
        in_channels: int = 1,
        image_size: int = 32,
        conv_relu: bool = True,
    ):
        super().__init__()
        c1, c2, *fcs = widths
        self.widths = tuple(widths)
        act = [nn.ReLU(inplace=True)] if conv_relu else []
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 5),
            *act,
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5),
            *[nn.ReLU(inplace=True) for _ in act],
            nn.MaxPool2d(2),
        )
        side = ((image_size - 4) // 2 - 4) // 2
        if side < 1:
            raise ValueError(f"LeNet5 needs image_size >= 16, got {image_size}")
        layers, d = [nn.Flatten()], c2 * side * side
        for f in fcs:
            layers += [nn.Linear(d, f), nn.ReLU(inplace=True)]
            d = f
        layers.append(nn.Linear(d, num_classes))
        self.classifier = nn.Sequential(*layers)

    def forward(self, x):
        return self.classifier(self.features(x))


@register_model("lenet5", input_size=(1, 32, 32), paper="ECC (CVPR'19), LeNet-5 6-16-120-84 at 32x32")
def lenet5(num_classes=10, in_channels=1, image_size=32, widths=(6, 16, 120, 84)):
    return LeNet5(widths, num_classes, in_channels, image_size)


@register_model(
    "lenet5_caffe",
    input_size=(1, 28, 28),
    paper="Yang et al. CVPR'20, Caffe LeNet-5 20-50-500 (CaffeLeNet: no ReLU after the convs)",
)
def lenet5_caffe(num_classes=10, in_channels=1, image_size=28, widths=(20, 50, 500)):
    return LeNet5(widths, num_classes, in_channels, image_size, conv_relu=False)


@register_model(
    "lenet5_caffe_relu",
    input_size=(1, 28, 28),
    paper="Caffe LeNet-5 20-50-500 with a ReLU after each conv (not the paper's; this workbook's "
    "lenet5_caffe before it was made faithful)",
)
def lenet5_caffe_relu(num_classes=10, in_channels=1, image_size=28, widths=(20, 50, 500)):
    return LeNet5(widths, num_classes, in_channels, image_size, conv_relu=True)
