"""Cost accounting: per-layer MACs / params / nnz / bits / bit-ops table and measured latency.

Units: **MACs** (multiply-accumulates); FLOPs = 2·MACs. Only Conv2d and Linear layers are
counted (BatchNorm, activations, pooling and residual additions are not), so the dense total
equals ``torch.utils.flop_counter.FlopCounterMode`` total / 2 on conv/linear networks.

``nnz_macs`` = MACs · weight density is the *theoretical* sparse cost: a dense kernel executes
all ``macs`` whatever the zeros. Only a physically slimmed network (fewer channels) is faster.
"""

from __future__ import annotations

import statistics
import time

import pandas as pd
import torch
import torch.nn as nn

COLUMNS = [
    "layer",
    "type",
    "in_ch",
    "out_ch",
    "live_in",
    "live_out",
    "out_shape",
    "macs",
    "params",
    "nnz",
    "density",
    "nnz_macs",
    "weight_bits",
    "act_bits",
    "bitops",
]


def _is_counted(m: nn.Module) -> bool:
    return isinstance(m, (nn.Conv2d, nn.Linear))


def _layer_macs(m: nn.Module, out: torch.Tensor) -> int:
    """Conv: output elements · C_in/groups · k_h·k_w.  Linear: output elements · in_features."""
    per_sample = out[0].numel()
    if isinstance(m, nn.Conv2d):
        kh, kw = m.kernel_size
        return per_sample * (m.in_channels // m.groups) * kh * kw
    return per_sample * m.in_features


def _live_channels(w: torch.Tensor) -> tuple[int, int]:
    """Channels with at least one non-zero weight: (inputs, outputs). Depthwise: in = out."""
    nz = w.detach() != 0
    out_live = int(nz.flatten(1).any(1).sum())
    in_live = int(nz.transpose(0, 1).flatten(1).any(1).sum()) if w.dim() > 1 else out_live
    return in_live, out_live


def bits_for(name: str, spec, default: int = 32) -> int:
    """The bits of layer ``name`` under a bits spec: ``None`` (every layer at ``default``), one int for all
    layers, or a ``{layer name: bits}`` dict (missing layers at ``default``). The one lookup of the package
    (cost tables, the leaderboard and the MicroNet scorer use it)."""
    if spec is None:
        return default
    if isinstance(spec, dict):
        return int(spec.get(name, default))
    return int(spec)


@torch.no_grad()
def layer_table(model: nn.Module, input_size, weight_bits=None, act_bits=32) -> pd.DataFrame:
    """One row per Conv2d/Linear, in execution order (batch 1 forward pass on zeros).

    ``weight_bits``: None (32), an int for every layer, or ``{layer_name: bits}``.
    ``bitops`` = nnz_macs · weight_bits · act_bits (the MicroNet-style bit-weighted cost).
    Layers that run several times (shared modules) are counted at every call.
    """
    if not any(_is_counted(m) for m in model.modules()):
        raise ValueError(f"{type(model).__name__} has no Conv2d/Linear layer to count")
    names = {m: n for n, m in model.named_modules()}
    rows, hooks = [], []

    def hook(m, inp, out):
        w = m.weight
        in_live, out_live = _live_channels(w)
        nnz = int((w != 0).sum())
        macs = _layer_macs(m, out)
        density = nnz / w.numel()
        name = names[m]
        bw = bits_for(name, weight_bits)
        rows.append(
            {
                "layer": name,
                "type": type(m).__name__,
                "in_ch": m.in_channels if isinstance(m, nn.Conv2d) else m.in_features,
                "out_ch": m.out_channels if isinstance(m, nn.Conv2d) else m.out_features,
                "live_in": in_live,
                "live_out": out_live,
                "out_shape": tuple(out.shape[1:]),
                "macs": macs,
                "params": w.numel() + (m.bias.numel() if m.bias is not None else 0),
                "nnz": nnz,
                "density": density,
                "nnz_macs": macs * density,
                "weight_bits": bw,
                "act_bits": act_bits,
                "bitops": macs * density * bw * act_bits,
            }
        )

    for m in model.modules():
        if _is_counted(m):
            hooks.append(m.register_forward_hook(hook))
    was = model.training
    model.eval()
    try:
        p = next(model.parameters())
        model(torch.zeros(1, *input_size, device=p.device, dtype=p.dtype))
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    return pd.DataFrame(rows, columns=COLUMNS)


def total_macs(model: nn.Module, input_size) -> int:
    """Dense MACs of one forward pass (batch 1) over Conv2d/Linear layers."""
    return int(layer_table(model, input_size)["macs"].sum())


def summarize(table: pd.DataFrame) -> dict:
    """Totals of a layer table: dense MACs, nnz MACs, params, nnz, bit-ops, weight size in bits."""
    return {
        "macs": int(table.macs.sum()),
        "nnz_macs": float(table.nnz_macs.sum()),
        "params": int(table.params.sum()),
        "nnz": int(table.nnz.sum()),
        "bitops": float(table.bitops.sum()),
        "weight_bits_total": float((table.nnz * table.weight_bits).sum()),
    }


@torch.no_grad()
def measure_latency(
    model: nn.Module,
    input_size,
    *,
    threads: int | None = None,
    batch: int = 1,
    repeats: int = 30,
    warmup: int = 5,
    device: str | None = None,
) -> dict:
    """Median and inter-quartile range of the forward-pass wall time, in milliseconds (the one latency
    timer of the package: stage tables, the leaderboard and ``energy.measure.LatencyDevice`` use it).

    Pins torch's thread count for the measurement (restored after), runs ``warmup`` untimed
    passes, synchronises CUDA around each timed pass. Fake-quantized models run in fp32 here:
    their latency is that of the fp32 graph, not of a low-bit kernel. The arguments after
    ``input_size`` are keyword-only (two timers with ``batch``/``threads`` in opposite positional
    order used to coexist).
    """
    if repeats < 3:
        raise ValueError(f"repeats must be >= 3 for a median/IQR, got {repeats}")
    if batch < 1 or warmup < 0:
        raise ValueError(f"need batch >= 1 and warmup >= 0, got batch={batch}, warmup={warmup}")
    p = next(model.parameters())
    device = device or str(p.device)
    old = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    was = model.training
    model.eval()
    x = torch.randn(batch, *input_size, device=device, dtype=p.dtype)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    try:
        for _ in range(warmup):
            model(x)
        times = []
        for _ in range(repeats):
            sync()
            t0 = time.perf_counter()
            model(x)
            sync()
            times.append((time.perf_counter() - t0) * 1e3)
    finally:
        torch.set_num_threads(old)
        model.train(was)
    q = statistics.quantiles(times, n=4)
    out = {
        "median_ms": statistics.median(times),
        "iqr_ms": q[2] - q[0],
        "threads": int(threads) if threads is not None else old,
        "batch": batch,
        "device": device,
        "repeats": repeats,
    }
    if device.startswith("cuda"):
        out.update(gpu_info(device))
    return out


def gpu_info(device: str = "cuda") -> dict:
    """GPU name and current SM / memory clocks (MHz, via pynvml when installed) for latency tables."""
    idx = torch.device(device).index or 0
    info = {"gpu_name": torch.cuda.get_device_name(idx)}
    try:
        import pynvml

        pynvml.nvmlInit()
        h = pynvml.nvmlDeviceGetHandleByIndex(idx)
        info.update(
            sm_clock_mhz=pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM),
            mem_clock_mhz=pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_MEM),
        )
    except Exception as e:  # pynvml missing or no NVML: report why instead of failing the timing
        info["clocks"] = f"unavailable ({type(e).__name__})"
    return info
