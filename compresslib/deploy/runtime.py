"""A real runtime: the model exported to ONNX and run by onnxruntime on the CPU, timed like ``cost.measure_latency``.

The export uses torch's TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``, opset 17, a dynamic
batch axis): it needs no extra package and exports LeNet-5 in ~0.5 s, where the torch.export-based one needs
``onnxscript`` and took ~23 s on this machine. Unpacked CAMP nets export too (their packed weights are the
executed ones; the activation quantizer becomes Clip/Div/Round/Mul and the gate's decision Greater/Where): the
graph runs fp32 kernels on low-bit *values*, so its latency is still not that of a 1-/4-bit kernel.
"""

from __future__ import annotations

import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from compresslib.checks import check_number
from compresslib.results import atomic_path

OPSET = 17


def export_onnx(model: nn.Module, input_size, path, *, opset: int = OPSET) -> Path:
    """Write ``model`` (eval mode, fp32, CPU) as an ONNX file with input ``x`` of shape (batch, *input_size) and
    output ``logits``; written to a temporary name, checked with ``onnx.checker``, then renamed (atomic)."""
    import onnx

    size = tuple(int(check_number("input_size entry", s, 1, integer=True)) for s in input_size)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    path = Path(path)
    was = model.training
    model.eval()
    try:
        with atomic_path(path) as tmp, torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter is deprecated, see top
            torch.onnx.export(
                model,
                (torch.zeros(1, *size),),
                str(tmp),
                dynamo=False,
                opset_version=opset,
                input_names=["x"],
                output_names=["logits"],
                dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
            )
            onnx.checker.check_model(str(tmp))
    finally:
        model.train(was)
    return path


def ort_session(path, threads: int = 1):
    """An onnxruntime CPU session with ``threads`` intra-op threads, 1 inter-op thread, sequential execution."""
    import onnxruntime as ort

    threads = check_number("threads", threads, 1, integer=True)
    if not Path(path).is_file():
        raise FileNotFoundError(f"ONNX file not found: {path}")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # errors only: not one "removing unused initializer" line per constant
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def ort_logits(path_or_session, x, threads: int = 1) -> np.ndarray:
    """onnxruntime's output for a batch ``x`` (tensor or array, float32)."""
    sess = path_or_session if hasattr(path_or_session, "run") else ort_session(path_or_session, threads)
    x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    return sess.run(None, {sess.get_inputs()[0].name: x.astype(np.float32, copy=False)})[0]


def ort_latency_ms(
    path, *, batch: int = 1, threads: int = 1, repeats: int = 30, warmup: int = 5, seed: int = 0
) -> dict:
    """Median and inter-quartile range of onnxruntime's wall time per batch, in milliseconds, with the keys of
    ``cost.measure_latency`` (``median_ms``, ``iqr_ms``, ``threads``, ``batch``, ``device``, ``repeats``).

    The input shape comes from the ONNX file (its non-batch dimensions); the input is seeded Gaussian noise.
    """
    batch = check_number("batch", batch, 1, integer=True)
    repeats = check_number("repeats", repeats, 3, integer=True)
    warmup = check_number("warmup", warmup, 0, integer=True)
    sess = ort_session(path, threads)
    inp = sess.get_inputs()[0]
    size = inp.shape[1:]
    if not all(isinstance(s, int) for s in size):
        raise ValueError(f"{path}: the input's non-batch dimensions must be fixed, got {inp.shape}")
    x = np.random.default_rng(seed).standard_normal((batch, *size), dtype=np.float32)
    feed = {inp.name: x}
    for _ in range(warmup):
        sess.run(None, feed)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sess.run(None, feed)
        times.append((time.perf_counter() - t0) * 1e3)
    q = statistics.quantiles(times, n=4)
    return {
        "median_ms": statistics.median(times),
        "iqr_ms": q[2] - q[0],
        "threads": threads,
        "batch": batch,
        "device": "cpu (onnxruntime)",
        "repeats": repeats,
    }


def sparse_linear_latency(
    linear: nn.Linear, *, batch: int = 1, threads: int = 1, repeats: int = 30, warmup: int = 5, seed: int = 0
) -> dict:
    """Does a sparse kernel pay? Median ms of y = x Wᵀ + b with W dense (``F.linear``) and with W as a
    ``torch.sparse_csr`` tensor (y = (W x ᵀ)ᵀ + b), on seeded input, plus W's ``density`` and the outputs'
    ``max_abs_diff`` (not 0: the CSR kernel sums in another order). ``speedup`` = dense_ms / csr_ms."""
    if not isinstance(linear, nn.Linear):
        raise TypeError(f"linear must be a torch.nn.Linear, got {type(linear).__name__}")
    batch = check_number("batch", batch, 1, integer=True)
    threads = check_number("threads", threads, 1, integer=True)
    repeats = check_number("repeats", repeats, 3, integer=True)
    w = linear.weight.detach().cpu().float()
    b = linear.bias.detach().cpu().float() if linear.bias is not None else torch.zeros(w.shape[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        w_csr = w.to_sparse_csr()
    x = torch.randn(batch, w.shape[1], generator=torch.Generator().manual_seed(seed))
    dense = lambda: torch.nn.functional.linear(x, w, b)  # noqa: E731
    csr = lambda: (w_csr @ x.T).T + b  # noqa: E731

    def median_ms(f):
        for _ in range(warmup):
            f()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            f()
            times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            d_ms, s_ms = median_ms(dense), median_ms(csr)
            diff = float((dense() - csr()).abs().max())
    finally:
        torch.set_num_threads(old)
    return {
        "dense_ms": d_ms,
        "csr_ms": s_ms,
        "speedup": d_ms / s_ms,
        "density": float((w != 0).float().mean()),
        "max_abs_diff": diff,
        "batch": batch,
        "threads": threads,
        "repeats": repeats,
    }


def cpu_has_vnni() -> bool:
    """Whether this x86 CPU has VNNI (``avx512_vnni`` / ``avx_vnni`` in /proc/cpuinfo); False if unknown."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags


def export_int8(
    onnx_path, out_path, calibration, *, per_channel: bool = True, reduce_range: bool | None = None
) -> Path:
    """Static int8 QDQ form of an fp32 ONNX file (onnxruntime.quantization.quantize_static): weights int8
    (per output channel when ``per_channel``), activations uint8 with MinMax ranges from ``calibration`` (an
    iterable of input batches, tensors or arrays; use training or validation inputs, never the test split).
    ``reduce_range`` (default: when the CPU has no VNNI) keeps weights in 7 bits: onnxruntime's u8s8 kernels on
    AVX2 sum pairs of uint8×int8 products in int16 and saturate (a 1-bit LeNet-5 whose weights all sit at ±127
    agreed with torch on 11.6 % of the test images at 8 bits, 99.6 % at 7; onnxruntime's quantization docs).
    onnxruntime runs the Q/DQ pairs around Conv/Gemm with its integer kernels. The optional pre-processing
    (``quant_pre_process``: symbolic shape inference) is skipped: it took ~11 s for LeNet-5 and changed no node here.
    Written to a temporary name, then renamed."""
    import logging

    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    if not Path(onnx_path).is_file():
        raise FileNotFoundError(f"ONNX file not found: {onnx_path}")
    batches = [
        (x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)).astype(np.float32)
        for x in calibration
    ]
    if not batches:
        raise ValueError("export_int8: calibration holds no batch")
    name = ort_session(onnx_path).get_inputs()[0].name

    class _Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(batches)

        def get_next(self):
            x = next(self._it, None)
            return None if x is None else {name: x}

    out_path = Path(out_path)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_static logs "consider pre-processing" (see above) on the root logger
    import onnxruntime

    onnxruntime.set_default_logger_severity(3)  # its own sessions: errors only
    try:
        with atomic_path(out_path) as tmp:
            quantize_static(
                str(onnx_path),
                str(tmp),
                _Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=per_channel,
                weight_type=QuantType.QInt8,
                activation_type=QuantType.QUInt8,
                reduce_range=not cpu_has_vnni() if reduce_range is None else bool(reduce_range),
            )
    finally:
        root.setLevel(level)
    return out_path
