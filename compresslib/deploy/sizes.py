"""Where the bytes of a packed model go: one row per state_dict tensor, the container overhead and the total."""

from __future__ import annotations

import pandas as pd
import torch.nn as nn

from . import container

ZSTD_LEVEL = 19


def zstd_bytes(data: bytes, level: int = ZSTD_LEVEL) -> int:
    """Size in bytes of ``data`` after one zstd pass (``zstandard``, deterministic at a fixed level)."""
    from compresslib.checks import check_number

    try:
        import zstandard
    except ImportError as e:  # a dependency of compresslib (pyproject.toml); say how to get it
        raise ImportError(
            "the zstd column needs the 'zstandard' package: pip install zstandard (or pass zstd_level=None)"
        ) from e

    level = check_number("zstd level", level, 1, 22, integer=True)
    return len(zstandard.ZstdCompressor(level=level).compress(bytes(data)))


def _form(meta: dict) -> str:
    idx, val = meta["index"], meta["values"]
    where = {"none": "dense", "bitmask": "sparse bitmask", "relative": f"sparse relative {idx.get('bits')}-bit"}
    what = f"raw {val.get('dtype')}"
    if val["kind"] == "codebook":
        what = f"codebook {val['levels']}×{val['bits']}-bit"
        if "radix_group" in val:
            what = (
                f"codebook {val['levels']} values, {val['radix_group']} base-{val['levels']} digits per "
                f"{val['radix_bits']} bits"
            )
    return f"{where[idx['kind']]}, {what}"


def _row(e, numel: int, zstd_level) -> dict:
    idx, val = e.meta["index"], e.meta["values"]
    secs = e.sections
    row = {
        "tensor": e.name,
        "layer": e.name.rsplit(".", 1)[0],
        "form": _form(e.meta),
        "numel": numel,
        "nonzeros": idx.get("nnz", numel),
        "levels": val.get("levels"),
        "bits_per_code": (val["radix_bits"] / val["radix_group"] if "radix_group" in val else val["bits"])
        if val["kind"] == "codebook"
        else None,
        "index": idx["kind"],
        "index_bits": {"none": 0, "bitmask": 1}.get(idx["kind"], idx.get("bits")),
        "index_entries": {"none": 0, "bitmask": numel}.get(idx["kind"], idx.get("entries")),
        "index_bytes": len(secs.get("index", b"")),
        "codebook_bytes": len(secs.get("codebook", b"")),
        "value_bytes": len(secs.get("codes", b"")) + len(secs.get("raw", b"")),
        "bytes": e.nbytes,
    }
    if zstd_level is not None:
        row["bytes_zstd"] = zstd_bytes(b"".join(secs.values()), zstd_level) if e.nbytes else 0
    return row


def packed_size_report(
    model: nn.Module,
    spec=None,
    *,
    weight_bits: dict | None = None,
    dtype: str = "float32",
    zstd_level: int | None = ZSTD_LEVEL,
) -> pd.DataFrame:
    """Per-tensor table of :func:`container.pack`'s file: ``form`` chosen, ``numel``, ``nonzeros``, codebook
    ``levels``, ``bits_per_code``, ``index`` kind, ``index_bits`` per entry and ``index_entries`` (relative
    coding: non-zeros + fillers; bitmask: ``numel`` 1-bit entries), ``index_bytes``, ``codebook_bytes``,
    ``value_bytes`` (codes or raw values) and ``bytes``; a ``(container)`` row (magic,
    JSON header, sha256) and a ``TOTAL`` row whose ``bytes`` is exactly ``len(pack(model, spec, ...))``.
    ``bytes_zstd`` (unless ``zstd_level=None``): each tensor's sections, and the whole file, after one zstd pass.
    ``spec`` (registry name or manifest row) only changes the header size; without it the header names the class.
    """
    header, encoded = container.encode_model(model, weight_bits, dtype)
    spec = container.check_spec(type(model).__name__ if spec is None else spec)
    data = container._assemble({**header, **spec}, encoded)
    state = container.effective_state(model)
    rows = [_row(e, state[e.name].numel(), zstd_level) for e in encoded]
    payload = sum(e.nbytes for e in encoded)
    total = {
        "tensor": "TOTAL",
        "layer": "",
        "form": f"file ({dtype} for raw tensors)",
        "numel": sum(r["numel"] for r in rows),
        "nonzeros": sum(r["nonzeros"] for r in rows),
        "index_bytes": sum(r["index_bytes"] for r in rows),
        "codebook_bytes": sum(r["codebook_bytes"] for r in rows),
        "value_bytes": sum(r["value_bytes"] for r in rows),
        "bytes": len(data),
    }
    over = {
        "tensor": "(container)",
        "layer": "",
        "form": "magic + version + lengths + zlib JSON header + sha256",
        "numel": 0,
        "nonzeros": 0,
        "index_bytes": 0,
        "codebook_bytes": 0,
        "value_bytes": 0,
        "bytes": len(data) - payload,
    }
    if zstd_level is not None:
        total["bytes_zstd"] = zstd_bytes(data, zstd_level)
        over["bytes_zstd"] = None
    return pd.DataFrame(rows + [over, total])
