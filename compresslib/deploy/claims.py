"""Claimed sizes and costs of a manifest row, and its fp32 reference (stage 10; see :mod:`.stage`).

* ``claimed_bits`` (:func:`claimed_costs`): stage 09's ``size_bits_with_index`` (non-zero weights at their bits +
  sparse index + codebooks; no bias/BN) from its ``runs.csv`` row of the same (method, setting, seed), else
  recomputed by :func:`compresslib.leaderboard.model_costs`;
* the *reference* (:func:`reference_model`): the dense fp32 ``board.base_model`` with the row's num_classes /
  in_channels / image_size, else the row's own architecture; its conv/linear weight count, dense MACs and
  onnxruntime latency (:func:`reference_costs`);
* :func:`bytes_breakdown`: where the bytes of the packed file go, tensor by tensor, next to the accounting.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd
import torch
import torch.nn as nn

from . import container, runtime, sizes

_REF_KWARGS = ("num_classes", "in_channels", "image_size")


def weight_layers(model: nn.Module) -> dict:
    """{name: module} of every Conv2d / Linear (the layers the accounting counts)."""
    return {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


def other_state_bytes(model: nn.Module) -> int:
    """Bytes of every state tensor that is not a conv/linear weight (biases, BN, buffers), at its own dtype."""
    skip = {f"{n}.weight" for n in weight_layers(model)}
    state = container.effective_state(model)  # what is executed (and stored)
    return int(sum(v.numel() * v.element_size() for k, v in state.items() if k not in skip))


def resolved_weight_bits(model: nn.Module, weight_bits) -> dict:
    """{conv/linear layer: bits} of a board's ``weight_bits`` (None = fp32, "infer", int or {layer: bits})."""
    from compresslib.leaderboard import infer_weight_bits

    layers = weight_layers(model)
    if weight_bits == "infer":
        return infer_weight_bits(model)
    if weight_bits is None or isinstance(weight_bits, (int, float)):
        return {n: int(weight_bits or 32) for n in layers}
    return {n: int(weight_bits.get(n, 32) or 32) for n in layers}


def max_weight_levels(model: nn.Module) -> int:
    """The most distinct non-zero values any conv/linear layer executes with (fake-quantized layers: Q_w(W))."""
    state = container.effective_state(model)
    weights = [state[f"{n}.weight"] for n in weight_layers(model) if f"{n}.weight" in state]
    levels = [torch.unique(w[w != 0]).numel() for w in weights]
    return max(levels, default=0)


def release(ref_cache: dict) -> None:
    """Delete the reference exports a :func:`reference_costs` cache holds (call once the rows are done)."""
    for c in ref_cache.values():
        c["_folder"].cleanup()
    ref_cache.clear()


def claimed_costs(model: nn.Module, board: dict, runs: pd.DataFrame | None, repeats: int = 3) -> dict:
    """claimed_bits, dense/effective MACs of the row: stage 09's runs.csv row of (method, setting, seed) when
    there is one, else :func:`compresslib.leaderboard.model_costs` of the board fields."""
    cols = ("size_bits_with_index", "effective_macs", "dense_macs")
    if runs is not None and len(runs) and set(cols) <= set(runs.columns):
        hit = runs[(runs.method == board["method"]) & (runs.setting == board["setting"]) & (runs.seed == board["seed"])]
        if len(hit):
            r = hit.iloc[0]
            return {
                "claimed_bits": float(r.size_bits_with_index),
                "effective_macs": float(r.effective_macs),
                "dense_macs": float(r.dense_macs),
                "claimed_source": "09_leaderboard/runs.csv",
            }
    from compresslib.leaderboard import model_costs

    c = model_costs(
        model,
        tuple(board["input_size"]),
        board.get("weight_bits", "infer"),
        board.get("act_bits", 32),
        board.get("exec_weight"),
        latency_repeats=repeats,
        extra_macs=float(board.get("extra_macs", 0.0)),
    )
    return {
        "claimed_bits": c["size_bits_with_index"],
        "effective_macs": c["effective_macs"],
        "dense_macs": c["dense_macs"],
        "claimed_source": "leaderboard.model_costs (no 09 row)",
    }


def reference_model(row: dict) -> tuple[nn.Module, str]:
    """The row's fp32 reference: the dense ``board.base_model`` with the row's num_classes / in_channels /
    image_size, else (not a registry model, or it does not take the input) the row's own architecture."""
    from compresslib.models import create_model
    from compresslib.rebuild import build_model

    b = row["board"]
    kw = {k: v for k, v in (row.get("kwargs") or {}).items() if k in _REF_KWARGS}
    x = torch.zeros(1, *[int(v) for v in b["input_size"]])
    for args in (kw, {k: v for k, v in kw.items() if k != "image_size"}):
        try:
            with torch.random.fork_rng(devices=[]), torch.no_grad():
                torch.manual_seed(0)
                ref = create_model(b["base_model"], **args).eval()
                ref(x)
            return ref, f"{b['base_model']}({', '.join(f'{k}={v}' for k, v in args.items())}) fp32 dense"
        except Exception:
            continue
    ref = build_model({"model": row["model"], "kwargs": row.get("kwargs") or {}})
    return ref, f"own architecture {row['model']} fp32 dense"


def reference_costs(row: dict, threads: int, repeats: int, cache: dict) -> dict:
    """Reference name, conv/linear weight count, dense MACs and onnxruntime batch-1 ms. The export is cached per
    reference (in ``cache``, with the temporary folder that holds it); the latency is measured at every call, so
    that it is taken right next to the row's own (a shared machine's load drifts)."""
    from compresslib import cost

    ref, name = reference_model(row)
    size = tuple(int(v) for v in row["board"]["input_size"])
    key = (name, size)
    if key not in cache:
        folder = tempfile.TemporaryDirectory(prefix="deploy_ref")
        cache[key] = {
            "_folder": folder,
            "_onnx": runtime.export_onnx(ref, size, Path(folder.name) / "ref.onnx"),
            "reference": name,
            "reference_weights": int(sum(m.weight.numel() for m in weight_layers(ref).values())),
            "reference_dense_macs": float(cost.layer_table(ref, size).macs.sum()),
        }
    c = cache[key]
    ms = runtime.ort_latency_ms(c["_onnx"], batch=1, threads=threads, repeats=repeats)["median_ms"]
    return {**{k: v for k, v in c.items() if not k.startswith("_")}, "reference_ort_ms_b1": ms}


def bytes_breakdown(model: nn.Module, row: dict, zstd_level: int | None = None) -> pd.DataFrame:
    """Where the bytes go: :func:`.sizes.packed_size_report` per tensor next to the accounting of the same
    tensor (``acc_*``: non-zeros × bits, the cheaper sparse index of ``leaderboard.index_bits`` and, for
    inferred codebook layers, 4 bytes per codebook entry; every other tensor at its own dtype, i.e. biases
    included). The ``TOTAL`` row's ``acc_bytes`` is claimed_bits / 8 + :func:`other_state_bytes`."""
    from compresslib.leaderboard import _codebook, index_bits

    rep = sizes.packed_size_report(model, row, zstd_level=zstd_level)
    board_bits = row["board"].get("weight_bits", "infer")
    wbits = resolved_weight_bits(model, board_bits)
    state = container.effective_state(model)  # the executed tensors: what the file stores
    acc = {}
    for name, t in state.items():
        layer = name[: -len(".weight")]
        if name.endswith(".weight") and layer in wbits:
            w, bits = t, wbits[layer]
            book = 4 * _codebook(w)[0] if board_bits == "infer" and bits < 32 else 0
            acc[name] = (float((w != 0).sum()) * bits / 8, index_bits(w) / 8, book)
        else:
            acc[name] = (float(t.numel() * t.element_size()), 0.0, 0)
    cols = ["acc_value_bytes", "acc_index_bytes", "acc_codebook_bytes"]
    extra = pd.DataFrame([(k, *v) for k, v in acc.items()], columns=["tensor", *cols])
    out = rep.merge(extra, on="tensor", how="left")
    out.loc[out.tensor == "TOTAL", cols] = extra[cols].sum().values
    out.loc[out.tensor == "(container)", cols] = 0.0
    out["acc_bytes"] = out[cols].sum(axis=1)
    return out


def largest_excess(model: nn.Module, row: dict) -> str:
    """The entry of :func:`bytes_breakdown` (a tensor or the container) whose file bytes exceed its accounting most."""
    b = bytes_breakdown(model, row)
    b = b[b.tensor != "TOTAL"].assign(excess=lambda d: d.bytes - d.acc_bytes)
    r = b.loc[b.excess.idxmax()]
    return f"{r.tensor}: {r.bytes:.0f} B on disk vs {r.acc_bytes:.0f} B accounted ({r.form})"
