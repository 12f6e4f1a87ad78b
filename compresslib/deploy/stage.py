"""Stage 10 (deploy), one manifest row at a time: the claimed numbers of a board row next to the real ones.

For a row of a stage's ``models.json`` (:func:`compresslib.manifest.board_rows`) :func:`deploy_manifest_row`
loads the trained model (:func:`compresslib.rebuild.load_row_model`, also for rows costed from the
architecture only), writes its packed file (:func:`.container.save`), reloads it and checks the logits
bit-exactly, exports the reloaded model to ONNX, times it in onnxruntime (batch 1 and 64) and torch
(batch 1), tries the int8 QDQ form when every conv/linear layer executes at most 256 distinct weights and a
CSR kernel for every Linear that is at least ``sparse_min`` sparse, and runs torch and onnxruntime over the
whole test split. A cascade (rebuild's ``"cascade"`` builder) has its two stages exported and timed apart, the
gate applied in Python (:func:`gated`); latency per image = small + escalated × large.

Claimed vs real (the ratios of issue 16; the claimed side and the reference are in :mod:`.claims`):

* ``claimed_bits`` = stage 09's ``size_bits_with_index`` (non-zero weights at their bits + sparse index +
  codebooks; no bias/BN), from its ``runs.csv`` row of the same (method, setting, seed), else recomputed with
  :func:`compresslib.leaderboard.model_costs` (``claimed_source`` says which);
  ``real_over_claimed`` = bytes_on_disk / (claimed_bits / 8); ``real_over_accounted`` = bytes_on_disk /
  (claimed_bits / 8 + the bytes of every other state tensor at its dtype: biases, BN);
* compression rates against the row's fp32 *reference* (the dense ``base_model`` with the row's
  ``num_classes`` / ``in_channels`` / ``image_size``, else the row's own architecture): ``claimed_cr`` =
  32·n_ref / claimed_bits and ``real_cr`` = 4·n_ref / bytes_on_disk (n_ref: conv/linear weights of the reference);
* ``macs_speedup_claimed`` = dense MACs of the reference / the row's effective MACs (09's column);
  ``latency_speedup_measured`` = onnxruntime batch-1 ms of the reference (measured next to the row's) / of the
  row's model.
"""

from __future__ import annotations

import functools
import math
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from torch.utils.data import Subset

from ..methods.contract import FRACTION, MethodConfig, ints
from . import container, runtime, sizes
from .measure import _bits
from .claims import (  # noqa: F401  (the notebook and tests use them as stage.*)
    bytes_breakdown,
    claimed_costs,
    largest_excess,
    max_weight_levels,
    other_state_bytes,
    reference_costs,
    reference_model,
    release,
    resolved_weight_bits,
    weight_layers,
)

SPARSE_MIN = 0.9  # a Linear at least this sparse gets the CSR kernel tried
CASCADE_ALPHA = 1.6  # weight of the large model's logits in a cascade (methods.baselines.run_cascade_base)
ROW_KEYS = (
    "method",
    "setting",
    "seed",
    "claimed_bits",
    "bytes_on_disk",
    "bytes_on_disk_zstd",
    "torch_ms_b1",
    "ort_ms_b1",
    "ort_ms_b64",
    "int8_ms_b1",
    "macs_speedup_claimed",
    "latency_speedup_measured",
    "real_over_claimed",
    "ort_argmax_agreement",
)


# ----------------------------------------------------------------------------- inputs
@functools.lru_cache(maxsize=4)
def _splits(name: str, root, side):
    """(test, train) datasets of ``name`` at ``side`` px, built once per stage run (cluttered canvases take ~10 s)."""
    from compresslib import data

    return (
        data.get_dataset(name, "test", root, side, augment=False),
        data.get_dataset(name, "train", root, side, augment=False),
    )


def evaluation_data(board: dict, root=None, calibration: int = 256):
    """(test dataset, calibration inputs from the training split, note) of a board row's dataset at its input
    size: the same fixed test split every stage evaluates on (``data.get_dataset(name, "test", ...)`` does not
    depend on the seed or the training subset). ``(None, None, reason)`` when it cannot be rebuilt."""
    from compresslib import data

    name, size = board["dataset"], [int(v) for v in board["input_size"]]
    try:
        info = data.dataset_info(name)
        if info["in_channels"] != size[0]:
            return None, None, f"{name} has {info['in_channels']} channel(s), the model takes {size[0]}"
        side = None if size[-1] == info["image_size"] else size[-1]
        test, train = _splits(name, None if root is None else str(root), side)
    except Exception as e:  # unregistered, or a dataset that needs DATA_ROOT
        return None, None, f"test split of {name!r} not rebuilt: {type(e).__name__}: {e}"
    g = torch.Generator().manual_seed(int(board["seed"]))
    idx = torch.randperm(len(train), generator=g)[: min(calibration, len(train))].tolist()
    calib = torch.stack([train[i][0] for i in idx])
    return test, calib, f"{name} test split ({len(test)} images) at {size[-1]} px"


# ----------------------------------------------------------------------------- runtime pieces
def export_parts(model: nn.Module, input_size, folder, split: bool = False) -> tuple[list, str]:
    """([(name, onnx path)], note): the whole model, else (``split``, it fails, or the tracer warns of
    data-dependent control flow, e.g. a gate) each direct child with parameters exported alone at the same input
    size; [] when neither exports."""
    folder = Path(folder)
    try:
        if split:
            raise RuntimeError("a cascade: its stages run apart, the gate between them in Python")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", torch.jit.TracerWarning)
            path = runtime.export_onnx(model, input_size, folder / "model.onnx")
        frozen = [w for w in caught if issubclass(w.category, torch.jit.TracerWarning)]
        if frozen:  # a Python branch on a tensor: the graph would hold the branch the dummy input took
            raise RuntimeError(f"data-dependent control flow ({str(frozen[0].message).splitlines()[0][:120]})")
        return [("model", path)], "whole model"
    except Exception as whole:
        parts = []
        for name, child in model.named_children():
            if next(child.parameters(), None) is None:
                continue
            try:
                parts.append((name, runtime.export_onnx(child, input_size, folder / f"{name}.onnx")))
            except Exception as e:
                return [], f"not exported: whole model {type(whole).__name__}; child {name!r} {type(e).__name__}: {e}"
        if not parts:
            return [], f"not exported: {type(whole).__name__}: {whole}"
        return parts, f"each stage exported alone ({', '.join(n for n, _ in parts)}; the gate runs in Python)"


def cascade_gate(model: nn.Module, row: dict) -> dict | None:
    """{"threshold", "escalated"} of a two-stage cascade row (children ``small`` and ``large``: the rebuild
    builder "cascade"), None for any other model. ``threshold``: ``extra.threshold`` (stage 09), else None (the
    gate cannot be replayed); ``escalated``: ``extra.escalated``, else the ``exec_weight`` of the large stage."""
    board = row["board"]
    if not ({"small", "large"} <= {n for n, _ in model.named_children()} and row.get("model") == "cascade"):
        return None
    extra, execs = board.get("extra") or {}, board.get("exec_weight") or {}
    large = [float(v) for k, v in execs.items() if k.startswith("large.")]
    esc = extra.get("escalated", large[0] if large else None)
    hi = extra.get("threshold")
    return {"threshold": None if hi is None else float(hi), "escalated": None if esc is None else float(esc)}


def gated(z_small, z_large, hi: float, alpha: float = CASCADE_ALPHA) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, escalated mask) of EdgeCompress's two-stage cascade as ``methods.baselines.run_cascade_base``
    evaluates it: an image whose softmax margin of the small model's logits is below ``hi`` goes on, and gets
    z_small + alpha * z_large (``methods.cascade.escalate`` / ``simulate`` with lo = 0, sum accumulation)."""
    from compresslib.methods.cascade import escalate

    zs, zl = torch.as_tensor(z_small), torch.as_tensor(z_large)
    esc = escalate(zs, 0.0, hi)
    out = zs.clone()
    out[esc] = out[esc] + alpha * zl[esc]
    return out, esc


def collect_logits(modules: dict, sessions: dict, dataset, batch: int = 250) -> tuple[dict, dict, torch.Tensor]:
    """({name: torch logits}, {name: onnxruntime logits}, labels) over the whole ``dataset``, in order."""
    zt, zo, ys = {k: [] for k in modules}, {k: [] for k in sessions}, []
    with torch.no_grad():
        for x, y in torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=False):
            ys.append(y)
            for k, m in modules.items():
                zt[k].append(m(x))
            for k, s in sessions.items():
                zo[k].append(torch.from_numpy(runtime.ort_logits(s, x)))
    cat = lambda d: {k: torch.cat(v) for k, v in d.items()}  # noqa: E731
    return cat(zt), cat(zo), torch.cat(ys)


def sparse_layers(model: nn.Module, sparse_min: float, threads: int, repeats: int) -> list[dict]:
    """:func:`.runtime.sparse_linear_latency` (batch 1) of every Linear with sparsity >= ``sparse_min``."""
    out = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear) and float((m.weight == 0).float().mean()) >= sparse_min:
            r = runtime.sparse_linear_latency(m, batch=1, threads=threads, repeats=repeats)
            out.append({"layer": name, **{k: r[k] for k in ("density", "dense_ms", "csr_ms", "speedup")}})
    return out


def _agreement(model: nn.Module, sessions: dict, test, casc: dict | None, notes: list) -> dict:
    """Torch accuracy and onnxruntime (and int8) argmax agreement with torch over the whole test split; a cascade
    through its gate (:func:`gated`), or stage by stage (the minimum) when its threshold is unknown."""
    if casc is None:
        zt, zo, y = collect_logits({"model": model}, sessions, test)
        ft, fo = zt["model"], zo["model"]
    else:
        zt, zo, y = collect_logits({"small": model.small, "large": model.large}, sessions, test)
        if casc["threshold"] is None:
            notes.append("no gate threshold in the board row: agreement per stage (min), no accuracy check")
            agree = min(float((zo[k].argmax(1) == zt[k].argmax(1)).double().mean()) for k in ("small", "large"))
            return {"test_images": len(y), "ort_argmax_agreement": agree}
        (ft, esc), (fo, _) = (gated(z["small"], z["large"], casc["threshold"]) for z in (zt, zo))
    out = {
        "test_images": len(y),
        "test_accuracy_torch": float((ft.argmax(1) == y).double().mean()),
        "ort_argmax_agreement": float((fo.argmax(1) == ft.argmax(1)).double().mean()),
    }
    if casc is not None:
        out["escalated"] = float(esc.double().mean())
    if "int8" in zo:
        out["int8_argmax_agreement"] = float((zo["int8"].argmax(1) == ft.argmax(1)).double().mean())
    return out


# ----------------------------------------------------------------------------- one row
def _nan_to_none(v):
    return None if isinstance(v, float) and not math.isfinite(v) else v


def deploy_manifest_row(
    stage: str,
    key: str,
    row: dict,
    art,
    out_dir,
    *,
    threads: int = 1,
    repeats: int = 20,
    data_root=None,
    runs: pd.DataFrame | None = None,
    ref_cache: dict | None = None,
    int8: bool = True,
    sparse_min: float = SPARSE_MIN,
    zstd_level: int = sizes.ZSTD_LEVEL,
    test_images: int = 0,
) -> dict:
    """Claimed vs real for one manifest row (module docstring); the packed file goes to
    ``out_dir/packed/<stage>/<key>.clpack``. Every :data:`ROW_KEYS` entry is present (None where not measured,
    with the reason in ``notes``). ``test_images``: compare the runtimes on the first that many test images
    (0: the whole test split; a smaller profile's time cap)."""
    from compresslib import cost
    from compresslib.manifest import check_board
    from compresslib.rebuild import load_row_model

    b = check_board(row["board"], f"{stage}/{key}: board")
    size = tuple(int(v) for v in b["input_size"])
    notes = []
    out = {"stage": stage, "key": key, "method": b["method"], "setting": b["setting"], "seed": int(b["seed"])}
    out.update(dict.fromkeys(ROW_KEYS[3:]))
    model = load_row_model(row, Path(art) / stage)
    if not b.get("weights", True):
        notes.append("board costs the architecture only; its checkpoint is packed and run here")
    out.update(claimed_costs(model, b, runs))
    path = container.save(model, row, Path(out_dir) / "packed" / stage / f"{key}.clpack")
    data = path.read_bytes()
    back = container.load(path)
    out.update(
        packed_file=str(path.relative_to(out_dir)),
        bytes_on_disk=path.stat().st_size,
        bytes_on_disk_zstd=sizes.zstd_bytes(data, zstd_level),
        other_state_bytes=other_state_bytes(model),
    )
    test, calib, split_note = evaluation_data(b, data_root)
    if test is not None and 0 < test_images < len(test):
        test = Subset(test, range(int(test_images)))
        split_note += f", first {int(test_images)} images only"
    x = calib[:8] if calib is not None else torch.randn(8, *size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out["roundtrip_bit_exact"] = bool(torch.equal(_bits(model(x)), _bits(back(x))))
    out["max_weight_levels"] = max_weight_levels(model)
    out["largest_excess"] = largest_excess(model, row)
    out["sparse_linear"] = sparse_layers(back, sparse_min, threads, repeats)
    casc = cascade_gate(back, row)
    with tempfile.TemporaryDirectory() as d:
        parts, out["onnx"] = export_parts(back, size, d, split=casc is not None)
        if not parts:
            notes.append(out["onnx"])
        sessions = {name: runtime.ort_session(p, threads) for name, p in parts}
        if int8 and len(parts) == 1 and out["max_weight_levels"] <= 256 and calib is not None:
            try:
                q = runtime.export_int8(parts[0][1], Path(d) / "int8.onnx", calib.split(64))
                out["int8_ms_b1"] = runtime.ort_latency_ms(q, batch=1, threads=threads, repeats=repeats)["median_ms"]
                out["int8_weight_bits"] = 8 if runtime.cpu_has_vnni() else 7  # export_int8's reduce_range
                sessions["int8"] = runtime.ort_session(q, threads)
            except Exception as e:
                notes.append(f"int8 QDQ failed: {type(e).__name__}: {e}")
        elif int8:
            many = out["max_weight_levels"] > 256
            why = f"a layer has {out['max_weight_levels']} > 256 distinct weights" if many else "not one graph"
            notes.append(f"int8 not tried: {why}" if calib is not None or many else "int8 not tried: no calibration")
        whole = [n for n, _ in parts] == ["model"]
        if len(parts) > 1 and casc is None:
            notes.append("argmax agreement not measured: the exported stages are joined by Python code")
        if test is not None and (whole or (casc is not None and parts)):
            out.update(_agreement(model, sessions, test, casc, notes))
        # latency per image: a cascade runs its small stage on every image and its large one on the escalated
        # ones; the stages of any other split export all run
        share = {}
        if casc is not None:
            esc = out.get("escalated", casc["escalated"])
            share["large"] = 1.0 if esc is None else float(esc)
            notes.append(f"cascade: latency = small + {share['large']:.3f} (escalated) x large, gate in Python")
        for bs in (1, 64):
            ms = [
                share.get(n, 1.0) * runtime.ort_latency_ms(p, batch=bs, threads=threads, repeats=repeats)["median_ms"]
                for n, p in parts
            ]
            out[f"ort_ms_b{bs}"] = sum(ms) if ms else None
        mods = dict(back.named_children()) if casc is not None else {"model": back}
        out["torch_ms_b1"] = sum(
            share.get(n, 1.0) * cost.measure_latency(m, size, threads=threads, batch=1, repeats=repeats)["median_ms"]
            for n, m in mods.items()
            if next(m.parameters(), None) is not None
        )
    out["recorded_accuracy"] = row.get("accuracy")
    out["split_reconstructed"] = (
        None
        if out.get("test_accuracy_torch") is None or row.get("accuracy") is None or isinstance(test, Subset)
        else bool(abs(out["test_accuracy_torch"] - float(row["accuracy"])) < 0.5 / max(out["test_images"], 1))
    )
    if out["split_reconstructed"] is False:
        split_note += (
            f" (recorded accuracy {float(row['accuracy']):.4f} not reproduced here: {out['test_accuracy_torch']:.4f};"
            " another split or another evaluation, e.g. a gate)"
        )
    if test is None:
        notes.append(split_note)
    out["split"] = split_note
    cache = {} if ref_cache is None else ref_cache
    ref = reference_costs(row, threads, repeats, cache)
    if ref_cache is None:
        release(cache)
    out.update(ref)
    claimed_bytes = out["claimed_bits"] / 8
    out.update(
        real_over_claimed=out["bytes_on_disk"] / claimed_bytes if claimed_bytes else None,
        real_over_accounted=out["bytes_on_disk"] / (claimed_bytes + out["other_state_bytes"]),
        claimed_cr=32 * ref["reference_weights"] / out["claimed_bits"] if out["claimed_bits"] else None,
        real_cr=4 * ref["reference_weights"] / out["bytes_on_disk"],
        macs_speedup_claimed=ref["reference_dense_macs"] / out["effective_macs"] if out["effective_macs"] else None,
        latency_speedup_measured=ref["reference_ort_ms_b1"] / out["ort_ms_b1"] if out["ort_ms_b1"] else None,
        csr_speedup_over_1=any(r["speedup"] > 1 for r in out["sparse_linear"]) if out["sparse_linear"] else None,
        threads=int(threads),
        notes="; ".join(notes),
    )
    return {k: _nan_to_none(v) for k, v in out.items()}


@dataclass
class Config(MethodConfig):
    """Stage 10's parameters (field ``repeats`` <- notebook parameter ``REPEATS``, ...), ranges declared once.

    ``threads``: intra-op threads of every latency; ``repeats``: timed runs per latency; ``seeds_per_setting``:
    rows deployed per (stage, method, setting), lowest seeds first, 0: all; ``int8``: try the int8 QDQ form;
    ``sparse_min``: a Linear at least this sparse gets the CSR kernel tried; ``zstd_level``: second size column;
    ``size_tolerance``: a file within this factor of its accounting "holds"; ``test_images``: images torch and
    onnxruntime are compared on (0: the whole test split); ``data_root``: real datasets ("" embedded only)."""

    threads: int = 1
    repeats: int = 20
    seeds_per_setting: int = 0
    int8: bool = True
    sparse_min: float = SPARSE_MIN
    zstd_level: int = sizes.ZSTD_LEVEL
    size_tolerance: float = 1.25
    test_images: int = 0
    data_root: str = ""

    # fmt: off
    RANGES = {
        "threads": ints(1, 256), "repeats": ints(3, 100000), "seeds_per_setting": ints(0), "sparse_min": FRACTION,
        "zstd_level": ints(1, 22), "size_tolerance": dict(lo=1), "test_images": ints(0),
    }
    # fmt: on

    def row_options(self) -> dict:
        """The keywords :func:`deploy_manifest_row` takes from the config."""
        o = {k: getattr(self, k) for k in ("threads", "repeats", "int8", "sparse_min", "zstd_level", "test_images")}
        return {**o, "data_root": self.data_root or None}


def select_rows(found: list, seeds_per_setting: int = 0) -> list:
    """``found`` (``manifest.board_rows``' (stage, key, row) triples) in (stage, method, setting, seed) order,
    keeping at most ``seeds_per_setting`` rows (the lowest seeds) per (stage, method, setting); 0 keeps all."""
    order = sorted(
        found, key=lambda r: (r[0], r[2]["board"]["method"], r[2]["board"]["setting"], r[2]["board"]["seed"])
    )
    kept, per = [], {}
    for stage, key, row in order:
        g = (stage, row["board"]["method"], row["board"]["setting"])
        per[g] = per.get(g, 0) + 1
        if not seeds_per_setting or per[g] <= seeds_per_setting:
            kept.append((stage, key, row))
    return kept


def deploy_rows(kept: list, art, out_dir, config: Config, runs: pd.DataFrame | None = None, progress=True) -> list:
    """:func:`deploy_manifest_row` for every (stage, key, row) of ``kept``; a row that fails becomes its
    :func:`failed_row` (one bad model must not hide the others: it is reported in the table and the metrics)."""
    from tqdm.auto import tqdm

    rows, ref_cache = [], {}
    for stage, key, row in tqdm(kept, desc="deploy", disable=not progress):
        try:
            r = deploy_manifest_row(
                stage, key, row, art, out_dir, runs=runs, ref_cache=ref_cache, **config.row_options()
            )
        except Exception as e:
            r = failed_row(stage, key, row, e)
        rows.append(r)
    release(ref_cache)
    return rows


def failed_row(stage: str, key: str, row: dict, error: Exception) -> dict:
    """The row of a model that could not be deployed: identity, every :data:`ROW_KEYS` entry None, the error."""
    b = row.get("board") or {}
    out = {"stage": stage, "key": key, **dict.fromkeys(ROW_KEYS)}
    out.update(method=b.get("method"), setting=b.get("setting"), seed=b.get("seed"))
    out["notes"] = f"FAILED: {type(error).__name__}: {error}"
    return out


def read_runs(art) -> pd.DataFrame | None:
    """Stage 09's per-seed table (``runs.csv``), None when 09 has not written one."""
    path = Path(art) / "09_leaderboard" / "runs.csv"
    return pd.read_csv(path) if path.is_file() else None


def summary(rows: list[dict]) -> dict:
    """Top-level numbers of the stage's metrics.json (min agreement over the rows that have one)."""
    agree = [r["ort_argmax_agreement"] for r in rows if r.get("ort_argmax_agreement") is not None]
    ratio = [r["real_over_claimed"] for r in rows if r.get("real_over_claimed") is not None]
    return {
        "ort_argmax_agreement": min(agree) if agree else None,
        "n_rows": len(rows),
        "n_failed": sum(str(r.get("notes", "")).startswith("FAILED") for r in rows),
        "roundtrip_bit_exact_all": all(r.get("roundtrip_bit_exact") for r in rows if "roundtrip_bit_exact" in r),
        "real_over_claimed_median": float(np.median(ratio)) if ratio else None,
    }
