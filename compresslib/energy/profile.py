"""Energy/latency data generation (ECC ``energy_tr_gen.py``, spec §1), resumable.

Each sample is a full width vector s = (s_0, ..., s_L) with every hidden s_j drawn independently
and uniformly from {1, ..., S_j} (seeded, row by row so a longer run extends a shorter one);
s_0 = image channels and s_L = classes are fixed. One CSV row per sample:
``sample, w0..wL, cost, time`` (time = wall seconds the measurement took). A JSON sidecar
records the net, device, S and units, so a profile cannot be mistaken for another network's.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
import warnings
from pathlib import Path

from ..models.narrow import dense_widths

DEVICES = ("analytic", "latency", "nvml")


def get_device(name: str, net: str, **kw):
    """Cost device by name: ``analytic`` (default), ``latency``, ``nvml``; all expose ``cost(widths)``."""
    if name == "analytic":
        from .analytic import AnalyticDevice

        return AnalyticDevice(net, **kw)
    if name == "latency":
        from .measure import LatencyDevice

        return LatencyDevice(net, **kw)
    if name == "nvml":
        from .measure import NvmlDevice

        return NvmlDevice(net, **kw)
    raise ValueError(f"unknown cost device {name!r}; valid: {', '.join(DEVICES)}")


def device_settings(device) -> dict:
    """Measurement settings that must not change within one profile (checked on resume)."""
    keys = ("relaxed", "batch", "threads", "repeats", "warmup", "device", "seed")
    out = {k: getattr(device, k) for k in keys if hasattr(device, k)}
    if hasattr(device, "constants"):
        from dataclasses import asdict

        out["constants"] = asdict(device.constants)
    return out


def sample_widths(S, n: int, seed: int = 1) -> list[list[int]]:
    """n width vectors, hidden entries uniform in {1..S_j} (Python ``random``, seeded, row-major)."""
    if n < 1:
        raise ValueError(f"need n >= 1 samples, got {n}")
    rng = random.Random(seed)
    return [[S[0]] + [rng.randint(1, S[j]) for j in range(1, len(S) - 1)] + [S[-1]] for _ in range(n)]


def reference_points(device) -> dict:
    """Cost of the 'empty' model (all hidden widths 1) and of the dense model."""
    S = device.S
    return {"empty": device.cost([S[0]] + [1] * (len(S) - 2) + [S[-1]]), "dense": device.cost(S)}


def profile_paths(out_dir, net: str, device_name: str) -> tuple[Path, Path]:
    base = Path(out_dir) / f"{net}_{device_name}"
    return base.with_suffix(".csv"), base.with_suffix(".json")


def _header(L1: int) -> list[str]:
    return ["sample"] + [f"w{j}" for j in range(L1)] + ["cost", "time"]


def _read_rows(path: Path, L1: int, drop_torn: bool = False) -> list[list[float]]:
    """Well-formed rows of a profile CSV; ``drop_torn`` drops an unterminated last line (resume)."""
    text = path.read_text()
    lines = text.split("\n")
    if lines[0].split(",") != _header(L1):
        raise ValueError(f"{path}: corrupt profile, header {lines[0][:80]!r} is not {','.join(_header(L1))}")
    body = lines[1:]
    if body and body[-1] != "" and drop_torn:
        body = body[:-1]  # interrupted mid-write
    rows = []
    for i, line in enumerate(body):
        if not line:
            continue
        try:
            vals = [float(p) for p in line.split(",")]
        except ValueError:
            vals = []
        if len(vals) != L1 + 3 or not all(math.isfinite(v) for v in vals):
            raise ValueError(f"{path}: corrupt profile row {i + 2}: {line[:80]!r}")
        rows.append(vals)
    return rows


def run_profile(
    device, n: int, out_dir, seed: int = 1, resume: bool = True, progress: bool = True, flush_every: int = 20
) -> Path:
    """Measure ``n`` random width vectors on ``device``; write/extend ``<out_dir>/<net>_<device>.csv``.

    With ``resume`` the rows already present are kept and skipped (same seed -> same vectors).
    Returns the CSV path.
    """
    from tqdm.auto import tqdm

    csv_path, meta_path = profile_paths(out_dir, device.net, device.name)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    S = list(device.S)
    meta = {
        "net": device.net,
        "device": device.name,
        "unit": device.unit,
        "S": S,
        "seed": seed,
        "num_classes": S[-1],
        "in_channels": S[0],
        "image_size": device.input_size[1],
        "settings": device_settings(device),
    }
    done: dict[int, list[float]] = {}
    if resume and csv_path.exists():
        old = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        keys = ("net", "device", "S", "seed", "image_size", "settings")
        if {k: old.get(k) for k in keys} == {k: meta[k] for k in keys}:
            done = {int(r[0]): r for r in _read_rows(csv_path, len(S), drop_torn=True)}
        else:  # another configuration: its rows cannot be mixed with these
            warnings.warn(f"{csv_path} was measured with other settings; starting a fresh profile")
    meta["reference"] = reference_points(device)
    meta_path.write_text(json.dumps(meta, indent=1))
    samples = sample_widths(S, n, seed)
    tmp = csv_path.with_suffix(".csv.tmp")
    with open(tmp, "w") as f:  # rewrite the kept rows, then append new ones
        f.write(",".join(_header(len(S))) + "\n")
        for i in sorted(done):
            f.write(",".join(_fmt(v) for v in done[i]) + "\n")
    os.replace(tmp, csv_path)
    todo = [i for i in range(n) if i not in done]
    with open(csv_path, "a") as f:
        for k, i in enumerate(tqdm(todo, desc=f"profile {device.net}/{device.name}", disable=not progress)):
            t0 = time.perf_counter()
            c = device.cost(samples[i])
            row = [i, *samples[i], c, time.perf_counter() - t0]
            f.write(",".join(_fmt(v) for v in row) + "\n")
            if (k + 1) % flush_every == 0:
                f.flush()
    return csv_path


def _fmt(v) -> str:
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else repr(float(v))


def load_profile(csv_path, net: str | None = None) -> dict:
    """Read a profile CSV (+ sidecar): {"widths": list, "cost": list, "time": list, "meta": dict}.

    Clear errors for a missing, empty or corrupt file, or one made for another network.
    """
    csv_path = Path(csv_path)
    if not csv_path.exists():
        raise FileNotFoundError(f"profile {csv_path} not found: run notebooks/01_profiling first")
    meta_path = csv_path.with_suffix(".json")
    if not meta_path.exists():
        raise ValueError(f"{csv_path}: sidecar {meta_path.name} (net, device, S) is missing")
    try:
        meta = json.loads(meta_path.read_text())
        S = list(meta["S"])
    except (ValueError, KeyError) as e:
        raise ValueError(f"{meta_path}: corrupt profile metadata ({e})") from None
    if net is not None and meta["net"] != net:
        raise ValueError(f"{csv_path} profiles network {meta['net']!r}, not {net!r}")
    if csv_path.stat().st_size == 0:
        raise ValueError(f"{csv_path} is empty")
    rows = _read_rows(csv_path, len(S))
    if not rows:
        raise ValueError(f"{csv_path} has a header but no measured rows")
    widths = [[int(v) for v in r[1 : 1 + len(S)]] for r in rows]
    for w in widths:
        if w[0] != S[0] or w[-1] != S[-1] or any(not 1 <= w[j] <= S[j] for j in range(1, len(S) - 1)):
            raise ValueError(f"{csv_path}: width row {w} is outside 1..S={S}")
    return {"widths": widths, "cost": [r[-2] for r in rows], "time": [r[-1] for r in rows], "meta": meta}


__all__ = [
    "get_device",
    "sample_widths",
    "reference_points",
    "run_profile",
    "load_profile",
    "profile_paths",
    "dense_widths",
]
