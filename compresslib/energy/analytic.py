"""Eyeriss-style analytical energy model (Yang et al., ICLR'19; ECC spec §6.1).

Energy of one inference = sum over Conv2d/Linear layers of X (activation access) + W (weight
access) + C (compute), in units of one register-file access. The model is sparsity-aware: it uses
the number of non-zero weights and, optionally, the support (non-zero pattern) of each layer's
input. For a physically narrowed dense network nothing is sparse and the energy depends only on
the shapes, so models built on the ``meta`` device are accepted (no memory, no weights).

    conv:  C = e_MAC * N_MAC
           W = e_mem*(ceil(hw'/m)*max(0, nnz-S2) + min(S2, nnz)) + e_cache*ceil(hw'/m)*nnz + e_rf*hw'*nnz
           X = e_mem*(X_nnz + R + hw'*d) + e_cache*U*ceil((d/g)/n) + e_rf*U*ceil(d/g)
    fc:    C = e_MAC*nnz,  W = (e_mem + e_cache + e_rf)*nnz
           X = e_cache*ceil(d/n)*X_nnz + e_rf*d*X_nnz + e_mem*(ceil(d/n)*max(0, X_nnz-S1) + min(X_nnz, S1)) + e_mem*d
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from functools import lru_cache

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class EnergyConstants:
    """Eyeriss constants: caches (elements), PE array m x n, unit energies (RF access = 1)."""

    s1: int = 51200  # input (activation) cache: 100 KiB at 16 bit
    s2: int = 4096  # kernel (weight) cache: 8 KiB at 16 bit
    m: int = 12  # PE array rows: output pixels processed together
    n: int = 14  # PE array columns: output channels processed together
    e_mac: float = 3.0  # one MAC incl. RF read + write
    e_mem: float = 200.0  # DRAM access
    e_cache: float = 6.0  # global-buffer access
    e_rf: float = 1.0  # register-file access


EYERISS = EnergyConstants()


@dataclass
class LayerGeometry:
    """Shape facts of one Conv2d/Linear layer for one input image (batch 1)."""

    name: str
    kind: str  # "conv" or "fc"
    c: int  # input channels (conv) / input features (fc)
    d: int  # output channels / features
    h: int = 1  # input height (conv)
    w: int = 1  # input width (conv)
    r: int = 1  # kernel size (square)
    stride: int = 1
    padding: int = 0
    groups: int = 1

    @property
    def out_hw(self) -> tuple[int, int]:
        if self.kind != "conv":
            return 1, 1
        ho = max(0, (self.h + 2 * self.padding - self.r) // self.stride + 1)
        wo = max(0, (self.w + 2 * self.padding - self.r) // self.stride + 1)
        return ho, wo


def layer_geometry(model: nn.Module, input_size) -> list[LayerGeometry]:
    """Run one forward pass of a (1, C, H, W) input and record every Conv2d/Linear geometry.

    Works with models on the ``meta`` device (no memory is allocated then).
    """
    if len(tuple(input_size)) != 3:
        raise ValueError(f"input_size must be (C, H, W), got {input_size}")
    geoms: list[LayerGeometry] = []
    hooks = []

    def hook(name):
        def fn(mod, inp, out):
            x = inp[0]
            if isinstance(mod, nn.Conv2d):
                k, s, p, dil = mod.kernel_size, mod.stride, mod.padding, mod.dilation
                if k[0] != k[1] or s[0] != s[1] or p[0] != p[1] or dil != (1, 1) or isinstance(p, str):
                    raise ValueError(
                        f"{name}: the analytic model needs square kernel/stride/padding, "
                        f"no dilation (got k={k}, s={s}, p={p}, dilation={dil})"
                    )
                geoms.append(
                    LayerGeometry(
                        name,
                        "conv",
                        mod.in_channels,
                        mod.out_channels,
                        int(x.shape[2]),
                        int(x.shape[3]),
                        k[0],
                        s[0],
                        p[0],
                        mod.groups,
                    )
                )
            else:
                geoms.append(LayerGeometry(name, "fc", mod.in_features, mod.out_features))

        return fn

    for name, mod in model.named_modules():
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            hooks.append(mod.register_forward_hook(hook(name)))
    try:
        p = next(model.parameters())
        was_training = model.training
        model.eval()
        with torch.no_grad():
            model(torch.zeros((1, *input_size), device=p.device, dtype=p.dtype))
        model.train(was_training)
    finally:
        for h in hooks:
            h.remove()
    if not geoms:
        raise ValueError("model has no Conv2d/Linear layer")
    return geoms


def _row_overlap(row_nnz: list[float], padding: int, r: int, stride: int, s1: int) -> float:
    """Input elements fetched twice because rows stream through the S1 cache in chunks (R).

    Chunks hold as many (zero-padded) rows as fit into S1; consecutive chunks share the halo rows
    that the next output row still needs, and those rows are read again.
    """
    rows = [0.0] * padding + list(row_nnz) + [0.0] * padding
    n_rows = len(rows)
    refetch, beg, end = 0.0, 0, None
    while beg + r - 1 < n_rows:
        if end is not None and beg < end:
            refetch += sum(rows[beg:end])
        filled, new_end = 0.0, n_rows
        for i in range(beg, n_rows):
            if filled + rows[i] <= s1:
                filled += rows[i]
            else:
                new_end = i
                break
        end = new_end
        if end - beg < r:
            raise ValueError(f"input cache S1={s1} cannot hold {r} input rows ({rows[beg]:.0f} elements/row)")
        beg += ((end - beg - r) // stride + 1) * stride
    return refetch


@lru_cache(maxsize=4096)
def _in_bounds_taps(h: int, w: int, r: int, padding: int, stride: int) -> float:
    """Number of kernel taps that land inside a 1-channel h x w input, summed over outputs."""
    return F.unfold(torch.ones(1, 1, h, w), r, padding=padding, stride=stride).sum().item()


def conv_energy(
    g: LayerGeometry, w_nnz: float, w_support=None, x_support=None, relaxed=False, k: EnergyConstants = EYERISS
) -> dict:
    """X/W/C energy of a conv layer (spec §6.1). Supports are 0/1 tensors; ``None`` = dense."""
    ho, wo = g.out_hw
    hw_out = ho * wo
    d_per_group = g.d / g.groups
    if x_support is None:
        U = g.c * _in_bounds_taps(g.h, g.w, g.r, g.padding, g.stride)
        x_nnz = float(g.c * g.h * g.w)
        row_nnz = [float(g.c * g.w)] * g.h
    else:
        xs = (x_support != 0).float().reshape(1, g.c, g.h, g.w)
        U = F.unfold(xs, g.r, padding=g.padding, stride=g.stride).sum().item()
        x_nnz = xs.sum().item()
        row_nnz = xs[0].sum(dim=(0, 2)).tolist()
    R = _row_overlap(row_nnz, g.padding, g.r, g.stride, k.s1)
    X = (
        k.e_mem * (x_nnz + R + hw_out * g.d)
        + k.e_cache * U * math.ceil(d_per_group / k.n)
        + k.e_rf * U * math.ceil(d_per_group)
    )
    blocks = math.ceil(hw_out / k.m)
    W = (
        k.e_mem * (blocks * max(0.0, w_nnz - k.s2) + min(k.s2, w_nnz))
        + k.e_cache * blocks * w_nnz
        + k.e_rf * hw_out * w_nnz
    )
    if relaxed:
        n_mac = hw_out * w_nnz
    elif w_support is None and x_support is None:
        n_mac = g.d * (g.c / g.groups) * (U / g.c)  # every in-bounds tap of every kept weight
    else:
        xs = torch.ones(1, g.c, g.h, g.w) if x_support is None else (x_support != 0).float().reshape(1, g.c, g.h, g.w)
        ws = torch.ones(g.d, g.c // g.groups, g.r, g.r) if w_support is None else (w_support != 0).float()
        n_mac = F.conv2d(xs, ws, None, g.stride, g.padding, 1, g.groups).sum().item()
    return {"X": X, "W": W, "C": k.e_mac * n_mac}


def fc_energy(g: LayerGeometry, w_nnz: float, x_nnz: float | None = None, k: EnergyConstants = EYERISS) -> dict:
    """X/W/C energy of a fully connected layer (spec §6.1)."""
    x_nnz = float(g.c if x_nnz is None else x_nnz)
    blocks = math.ceil(g.d / k.n)
    X = (
        k.e_cache * blocks * x_nnz
        + k.e_rf * g.d * x_nnz
        + k.e_mem * (blocks * max(0.0, x_nnz - k.s1) + min(x_nnz, k.s1))
        + k.e_mem * g.d
    )
    W = (k.e_mem + k.e_cache + k.e_rf) * w_nnz
    return {"X": X, "W": W, "C": k.e_mac * w_nnz}


def energy_table(
    model: nn.Module, input_size, input_support: dict | None = None, relaxed=False, constants: EnergyConstants = EYERISS
) -> list[dict]:
    """Per-layer energy rows {layer, kind, X, W, C, total, nnz} of ``model`` at ``input_size``.

    Weight non-zeros are counted from the model's weights (dense count on the meta device);
    ``input_support`` maps a layer name to a 0/1 tensor of its input (C,H,W) or (features,).
    """
    input_support = input_support or {}
    unknown = set(input_support) - {n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    if unknown:
        raise ValueError(f"input_support names unknown layers: {sorted(unknown)}")
    modules = dict(model.named_modules())
    rows = []
    for g in layer_geometry(model, input_size):
        weight = modules[g.name].weight
        if weight.is_meta:
            w_nnz, w_support = float(weight.numel()), None
        else:
            w_support = weight.detach() != 0
            w_nnz = float(w_support.sum().item())
            if w_nnz == weight.numel():
                w_support = None
        xs = input_support.get(g.name)
        if g.kind == "conv":
            e = conv_energy(g, w_nnz, w_support, xs, relaxed, constants)
        else:
            e = fc_energy(g, w_nnz, None if xs is None else float((xs != 0).sum().item()), constants)
        rows.append({"layer": g.name, "kind": g.kind, **e, "total": e["X"] + e["W"] + e["C"], "nnz": w_nnz})
    return rows


def model_energy(model: nn.Module, input_size, **kw) -> dict:
    """Total {X, W, C, total} analytic energy of ``model`` (see ``energy_table``)."""
    rows = energy_table(model, input_size, **kw)
    return {key: sum(r[key] for r in rows) for key in ("X", "W", "C", "total")}


def constants_dict(k: EnergyConstants = EYERISS) -> dict:
    return asdict(k)


class NarrowedNetDevice:
    """Base of the cost devices: the dense widths ``S`` of registry net ``net`` and its input size; a device's
    ``cost(widths)`` is the cost of ``net`` narrowed to ``widths`` (``models.narrow.narrow_model``)."""

    def __init__(self, net: str, num_classes: int = 10, in_channels: int | None = None, image_size: int | None = None):
        from ..models.narrow import dense_widths, narrow_input_size

        self.net, self.num_classes, self.image_size = net, num_classes, image_size
        self.S = dense_widths(net, num_classes, in_channels)
        self.input_size = narrow_input_size(net, self.S[0], image_size)


class AnalyticDevice(NarrowedNetDevice):
    """Cost device ``cost(widths) -> float``: analytic energy of the narrowed dense net (deterministic).
    ``net_args``: :class:`NarrowedNetDevice`'s ``(net, num_classes, in_channels, image_size)``."""

    name = "analytic"
    unit = "E_rf"

    def __init__(self, *net_args, relaxed: bool = False, constants: EnergyConstants = EYERISS, **net_kw):
        super().__init__(*net_args, **net_kw)
        self.relaxed, self.constants = relaxed, constants
        self._dense: list[LayerGeometry] | None = None

    def breakdown(self, widths) -> list[dict]:
        """Per-layer {layer, kind, X, W, C, total, nnz} rows of the narrowed net.

        Spatial sizes do not depend on the widths, so the dense net's geometry is traced once and
        only the channel counts are read from the narrowed (meta-device) net.
        """
        from ..models.narrow import narrow_model

        model = narrow_model(self.net, widths, self.num_classes, self.S[0], self.image_size, device="meta")
        if self._dense is None:
            dense = narrow_model(self.net, self.S, self.num_classes, self.S[0], self.image_size, device="meta")
            self._dense = layer_geometry(dense, self.input_size)
        mods = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        if [n for n, _ in mods] != [g.name for g in self._dense]:
            raise RuntimeError(f"{self.net}: narrowed net's layers differ from the dense net's")
        rows = []
        for (name, m), g in zip(mods, self._dense):
            if g.kind == "conv":
                g = replace(g, c=m.in_channels, d=m.out_channels, groups=m.groups)
                e = conv_energy(g, float(m.weight.numel()), relaxed=self.relaxed, k=self.constants)
            else:
                g = replace(g, c=m.in_features, d=m.out_features)
                e = fc_energy(g, float(m.weight.numel()), k=self.constants)
            rows.append(
                {"layer": name, "kind": g.kind, **e, "total": e["X"] + e["W"] + e["C"], "nnz": float(m.weight.numel())}
            )
        return rows

    def cost(self, widths) -> float:
        return float(sum(r["total"] for r in self.breakdown(widths)))
