"""Magnitude pruning and weight masks (the simplest baseline every method is compared with)."""

from __future__ import annotations

import torch
import torch.nn as nn

from .train import Callback


def prunable(model: nn.Module) -> dict[str, nn.Module]:
    """Conv2d/Linear layers by name (the layers whose weights are pruned/quantized)."""
    layers = {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    if not layers:
        raise ValueError(f"{type(model).__name__} has no Conv2d/Linear layer to prune")
    return layers


@torch.no_grad()
def magnitude_prune_(model: nn.Module, sparsity: float, scope: str = "layer") -> dict[str, torch.Tensor]:
    """Zero the smallest-|w| fraction ``sparsity`` of weights, in place; return the {name: mask}.

    ``scope="layer"`` prunes every layer to the same sparsity; ``"global"`` uses one threshold
    over all layers (large layers then lose more).
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    if scope not in ("layer", "global"):
        raise ValueError(f"scope must be 'layer' or 'global', got {scope!r}")
    layers = prunable(model)
    masks = {}
    if scope == "global":
        allw = torch.cat([m.weight.abs().flatten() for m in layers.values()])
        k = int(sparsity * allw.numel())
        thr = allw.kthvalue(k).values if k > 0 else allw.new_tensor(-1.0)
    for name, m in layers.items():
        w = m.weight
        if scope == "layer":
            k = int(sparsity * w.numel())
            thr = w.abs().flatten().kthvalue(k).values if k > 0 else w.new_tensor(-1.0)
        masks[name] = (w.abs() > thr).to(w.dtype)
        w.mul_(masks[name])
    return masks


@torch.no_grad()
def apply_masks_(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Multiply each named layer's weight by its mask, in place."""
    layers = dict(model.named_modules())
    for name, mask in masks.items():
        if name not in layers:
            raise KeyError(f"mask for unknown layer {name!r}")
        layers[name].weight.mul_(mask)


def sparsity_of(model: nn.Module) -> float:
    """Fraction of zero weights over all Conv2d/Linear weights."""
    ws = [m.weight for m in prunable(model).values()]
    return float(sum(int((w == 0).sum()) for w in ws) / sum(w.numel() for w in ws))


class MaskCallback(Callback):
    """Keep pruned weights at zero during fine-tuning (re-applies the masks after every step)."""

    def __init__(self, masks: dict[str, torch.Tensor]):
        self.masks = masks

    def after_step(self, s):
        apply_masks_(s.model, self.masks)
