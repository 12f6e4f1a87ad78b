"""A frozen distillation teacher whose logits on the training images are computed once.

ECC distils from the dense net (spec §3.5): every training batch runs the frozen teacher again,
although the teacher, and on the embedded data sets the images (no random augmentation), never
change. ``CachedTeacher`` runs the teacher once over the training inputs and afterwards answers a
batch from that table, **only if every row of the batch is bit-for-bit one of the cached
inputs** (looked up by an exact integer hash of the float bits, then verified with
``torch.equal``); any other batch (augmented, another loader, another shape) runs the teacher.
The returned logits are the teacher's own outputs on those images; they equal a fresh forward
pass up to float summation order (the test checks bit equality on this CPU at 1 thread).
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.utils.data import Subset, TensorDataset


def dataset_inputs(dataset, max_rows: int = 200_000) -> torch.Tensor | None:
    """The input tensor of a ``TensorDataset`` (or nested ``Subset`` of one); None for any other dataset.

    Only tensor data sets qualify: they return stored tensors as they are (no transform), so the
    cached logits are exactly what the teacher would see. Larger than ``max_rows``: None.
    """
    idx = None
    while isinstance(dataset, Subset):
        sub = torch.as_tensor(dataset.indices, dtype=torch.long)
        idx = sub if idx is None else sub[idx]
        dataset = dataset.dataset
    if not isinstance(dataset, TensorDataset) or not dataset.tensors:
        return None
    X = dataset.tensors[0]
    X = X if idx is None else X[idx]
    if len(X) > max_rows or not X.is_floating_point():
        return None
    return X


def _row_keys(x: torch.Tensor, mult: torch.Tensor) -> torch.Tensor:
    """Exact 64-bit hash of every row's float bits (integer arithmetic: independent of batch layout)."""
    bits = x.detach().reshape(len(x), -1).contiguous().view(torch.int32).to(torch.int64)
    return (bits * mult).sum(1)


class CachedTeacher(nn.Module):
    """``teacher`` (frozen, eval) with its logits on ``inputs`` precomputed; see the module docstring.

    ``hits`` / ``misses`` count rows answered from the table / by running the teacher.
    """

    def __init__(self, teacher: nn.Module, inputs: torch.Tensor, batch_size: int = 256):
        super().__init__()
        if inputs.dim() < 2 or len(inputs) == 0:
            raise ValueError(f"CachedTeacher needs a non-empty batch of inputs, got shape {tuple(inputs.shape)}")
        if inputs.dtype != torch.float32:
            raise ValueError(f"CachedTeacher caches float32 inputs, got {inputs.dtype}")
        self.teacher = teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        dev = next(iter(teacher.parameters()), inputs).device
        X = inputs.detach().to(dev).contiguous()
        with torch.no_grad():
            logits = torch.cat([teacher(X[i : i + batch_size]) for i in range(0, len(X), batch_size)])
        g = torch.Generator().manual_seed(0x5EED)
        mult = (torch.randint(1, 2**31 - 1, (X[0].numel(),), generator=g, dtype=torch.int64) * 2 + 1).to(dev)
        keys = _row_keys(X, mult)
        sorted_keys, order = torch.sort(keys)
        for name, t in (
            ("inputs", X),
            ("logits", logits),
            ("mult", mult),
            ("sorted_keys", sorted_keys),
            ("order", order),
        ):
            self.register_buffer(name, t, persistent=False)
        self.hits = self.misses = 0

    def lookup(self, x: torch.Tensor) -> torch.Tensor | None:
        """Indices of the rows of ``x`` in the cached inputs, or None unless every row is found exactly."""
        if x.shape[1:] != self.inputs.shape[1:] or x.dtype != self.inputs.dtype or len(x) == 0:
            return None
        keys = _row_keys(x.to(self.inputs.device), self.mult)
        pos = torch.searchsorted(self.sorted_keys, keys).clamp_(max=len(self.sorted_keys) - 1)
        idx = self.order[pos]
        if not torch.equal(self.inputs[idx], x.to(self.inputs.device)):
            return None
        return idx

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idx = None if torch.is_grad_enabled() and x.requires_grad else self.lookup(x)
        if idx is None:
            self.misses += len(x)
            return self.teacher(x)
        self.hits += len(x)
        return self.logits[idx].to(x.device)


def cached_teacher(teacher: nn.Module, loader) -> nn.Module:
    """``CachedTeacher`` over ``loader``'s training inputs when they are a plain tensor data set, else ``teacher``."""
    X = dataset_inputs(getattr(loader, "dataset", None))
    if X is None or X.dtype != torch.float32:
        return teacher
    return CachedTeacher(teacher, X)
