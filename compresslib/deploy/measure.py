"""Claimed vs real for one model: bytes on disk (and after zstd), the round trip, torch and onnxruntime latency."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
import torch.nn as nn

from . import container, runtime, sizes


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().reshape(-1).view(torch.int32) if t.dtype == torch.float32 else t.detach().reshape(-1)


def deploy_row(
    model: nn.Module,
    spec,
    input_size,
    *,
    weight_bits: dict | None = None,
    threads: int = 1,
    repeats: int = 20,
    zstd_level: int = sizes.ZSTD_LEVEL,
    seed: int = 0,
) -> dict:
    """The real numbers of one compressed model (CPU, ``threads`` threads, medians over ``repeats`` runs):

    ``bytes_on_disk`` = ``len(pack(model, spec))``, ``bytes_on_disk_zstd`` (one zstd pass over that file),
    ``roundtrip_bit_exact`` (the unpacked model's logits on a seeded batch of 8 are bit-identical to ``model``'s),
    ``torch_ms_b1`` (``cost.measure_latency`` of the unpacked model), ``ort_ms_b1`` / ``ort_ms_b64`` (its ONNX
    export run by onnxruntime), ``threads``.
    """
    from compresslib.cost import measure_latency

    data = container.pack(model, spec, weight_bits=weight_bits)
    back = container.unpack(data)
    x = torch.randn(8, *input_size, generator=torch.Generator().manual_seed(seed))
    was = model.training
    model.eval()
    with torch.no_grad():
        exact = bool(torch.equal(_bits(model(x)), _bits(back(x))))
    model.train(was)
    with tempfile.TemporaryDirectory() as d:
        path = runtime.export_onnx(back, input_size, Path(d) / "model.onnx")
        ort = {b: runtime.ort_latency_ms(path, batch=b, threads=threads, repeats=repeats)["median_ms"] for b in (1, 64)}
    torch_b1 = measure_latency(back, tuple(input_size), threads=threads, batch=1, repeats=repeats)["median_ms"]
    return {
        "bytes_on_disk": len(data),
        "bytes_on_disk_zstd": sizes.zstd_bytes(data, zstd_level),
        "roundtrip_bit_exact": exact,
        "torch_ms_b1": torch_b1,
        "ort_ms_b1": ort[1],
        "ort_ms_b64": ort[64],
        "threads": int(threads),
    }


def ort_argmax_agreement(model: nn.Module, path, batches, threads: int = 1) -> float:
    """Fraction of inputs on which onnxruntime's argmax (the ONNX file at ``path``) equals torch's (``model``);
    ``batches``: an iterable of input tensors or of (input, label) pairs, e.g. a test loader."""
    sess = runtime.ort_session(path, threads)
    same = total = 0
    was = model.training
    model.eval()
    try:
        for b in batches:
            x = b[0] if isinstance(b, (tuple, list)) else b
            with torch.no_grad():
                ref = model(x).argmax(1).numpy()
            same += int((runtime.ort_logits(sess, x).argmax(1) == ref).sum())
            total += len(ref)
    finally:
        model.train(was)
    if total == 0:
        raise ValueError("ort_argmax_agreement: no inputs in batches")
    return same / total
