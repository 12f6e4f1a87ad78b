"""torchvision reference models (random init; weights only from a local file, never downloaded)."""

from __future__ import annotations

import torch.nn as nn

from . import register_model


def _tv(builder_name: str, num_classes: int, in_channels: int, weights_path: str | None, **kw) -> nn.Module:
    import torchvision.models as tvm

    if in_channels != 3:
        raise ValueError(f"torchvision {builder_name} expects in_channels=3, got {in_channels}")
    model = getattr(tvm, builder_name)(weights=None, num_classes=num_classes, **kw)
    if weights_path:
        from ..train import load_checkpoint

        state = load_checkpoint(weights_path)
        model.load_state_dict(state.get("model", state))
    return model


@register_model("tv_alexnet", input_size=(3, 224, 224), heavy=True, paper="AlexNet (torchvision)")
def tv_alexnet(num_classes=1000, in_channels=3, weights_path=None):
    return _tv("alexnet", num_classes, in_channels, weights_path)


@register_model("tv_resnet50", input_size=(3, 224, 224), heavy=True, paper="ResNet-50 (torchvision)")
def tv_resnet50(num_classes=1000, in_channels=3, weights_path=None):
    return _tv("resnet50", num_classes, in_channels, weights_path)


@register_model("tv_mobilenet_v2", input_size=(3, 224, 224), heavy=True, paper="MobileNet-v2 (torchvision)")
def tv_mobilenet_v2(num_classes=1000, in_channels=3, width_mult=1.0, weights_path=None):
    return _tv("mobilenet_v2", num_classes, in_channels, weights_path, width_mult=width_mult)
