"""Measured cost devices: wall-clock latency and (when a GPU + pynvml exist) NVML energy.

The ECC code (spec §1) times ``test_num`` batch-1 forward passes of a narrowed dense net with
``torch.cuda.synchronize()`` after each, and integrates nvidia-smi power. Here:
``LatencyDevice`` = median wall-clock (fixed threads and batch, warm-up, spread reported);
``NvmlDevice`` = joules per image from NVML's energy counter (GPU only; raises
``DeviceUnavailable`` with the reason otherwise, so notebooks can skip cleanly).
"""

from __future__ import annotations

import torch

from ..cost import measure_latency
from .analytic import NarrowedNetDevice


class DeviceUnavailable(RuntimeError):
    """The requested measurement backend cannot run on this machine (message says why)."""


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class LatencyDevice(NarrowedNetDevice):
    """Cost device: median forward latency (ms per batch) of the narrowed dense net.
    ``net_args``: :class:`~compresslib.energy.analytic.NarrowedNetDevice`'s ``(net, num_classes, in_channels,
    image_size)``."""

    name = "latency"
    unit = "ms"

    def __init__(
        self, *net_args, batch=16, threads=1, repeats=20, warmup=3, device: str = "cpu", seed: int = 0, **net_kw
    ):
        if repeats < 3 or batch < 1 or warmup < 0:
            raise ValueError(
                f"LatencyDevice needs repeats >= 3 (median/IQR), batch >= 1, warmup >= 0; "
                f"got repeats={repeats}, batch={batch}, warmup={warmup}"
            )
        super().__init__(*net_args, **net_kw)
        self.batch, self.threads, self.repeats, self.warmup, self.device = batch, threads, repeats, warmup, device
        self.seed = seed
        self.last: dict | None = None

    def measure(self, widths) -> dict:
        from ..models.narrow import narrow_model

        if torch.device(self.device).type == "cuda" and not torch.cuda.is_available():
            raise DeviceUnavailable(f"device={self.device!r} requested but torch.cuda.is_available() is False")
        torch.manual_seed(self.seed)
        model = narrow_model(self.net, widths, self.num_classes, self.S[0], self.image_size).to(self.device)
        self.last = measure_latency(
            model,
            self.input_size,
            batch=self.batch,
            threads=self.threads,
            repeats=self.repeats,
            warmup=self.warmup,
            device=self.device,
        )
        return self.last

    def cost(self, widths) -> float:
        return float(self.measure(widths)["median_ms"])


class NvmlDevice(LatencyDevice):
    """Cost device: GPU energy per image (J) from NVML's total-energy counter (Volta or newer)."""

    name = "nvml"
    unit = "J/image"

    def __init__(self, net: str, gpu_index: int = 0, **kw):
        if not torch.cuda.is_available():
            raise DeviceUnavailable("NVML energy needs a CUDA GPU; torch.cuda.is_available() is False")
        try:
            import pynvml
        except ImportError as e:
            raise DeviceUnavailable("NVML energy needs the pynvml package (pip install pynvml)") from e
        pynvml.nvmlInit()
        self._nvml = pynvml
        self._handle = pynvml.nvmlDeviceGetHandleByIndex(gpu_index)
        try:
            pynvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
        except pynvml.NVMLError as e:
            raise DeviceUnavailable(f"this GPU has no NVML energy counter: {e}") from e
        kw.setdefault("device", f"cuda:{gpu_index}")
        super().__init__(net, **kw)

    def cost(self, widths) -> float:
        from ..models.narrow import narrow_model

        torch.manual_seed(self.seed)
        dev = torch.device(self.device)
        model = narrow_model(self.net, widths, self.num_classes, self.S[0], self.image_size).to(dev).eval()
        x = torch.randn((self.batch, *self.input_size), device=dev)
        with torch.no_grad():
            for _ in range(self.warmup):
                model(x)
            _sync(dev)
            e0 = self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)  # mJ
            for _ in range(self.repeats):
                model(x)
            _sync(dev)
            e1 = self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
        return (e1 - e0) * 1e-3 / (self.repeats * self.batch)
