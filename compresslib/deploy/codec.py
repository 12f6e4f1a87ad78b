"""One tensor ↔ its packed sections: the smallest lossless form among (index × values) combinations.

Index (where the stored values sit in the flattened, C-order tensor):
  ``none``      every position is stored (dense);
  ``bitmask``   ⌈n/8⌉ bytes, one bit per position (stored values only at set bits);
  ``relative``  p-bit relative index coding with fillers (Han et al., Deep Compression, ICLR 2016, §3), p ≤ 16.
Values (of the stored positions):
  ``raw``       the tensor's own dtype, little-endian (or float16 when asked: the only lossy form);
  ``codebook``  the distinct values (own dtype, so lossless) + ⌈log2 K⌉-bit codes (bitpack.pack_uint), or, when
                smaller, G base-K digits per ⌈log2 K^G⌉ bits (bitpack.pack_radix: ternary at 1.6 bits per code).
"Distinct" is decided on the *bit patterns* (a float32 weight is its int32 view), so decoding gives back
bit-identical tensors, with one exception: a zero is a zero whatever its sign. Pruning by ``w.mul_(mask)`` leaves
−0.0 at every pruned negative weight; stored as a value it would cost about as much as the weights left. −0.0 is
written (and decoded) as +0.0: equal as a number, so every product and sum keeps its value (only the sign of an
exactly-zero result can change).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from . import bitpack

_INT_VIEW = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
MAX_RELATIVE_BITS = 16


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def dtype_of(name: str) -> torch.dtype:
    """``torch.<name>`` for a dtype name written by :func:`dtype_name` (a ValueError for anything else)."""
    dt = getattr(torch, str(name), None)
    if not isinstance(dt, torch.dtype):
        raise ValueError(f"unknown dtype {name!r}")
    return dt


def to_bytes(t: torch.Tensor) -> bytes:
    """Raw little-endian bytes of a tensor (any dtype)."""
    if t.numel() == 0:  # (an empty tensor may have stride 0, which .view(uint8) refuses)
        return b""
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def from_bytes(data: bytes, dtype: torch.dtype, count: int) -> torch.Tensor:
    """Inverse of :func:`to_bytes` (a ValueError when the byte count does not match)."""
    size = torch.empty((), dtype=dtype).element_size()
    if len(data) != count * size:
        raise ValueError(
            f"{count} values of {dtype_name(dtype)} need {count * size} bytes, the section has {len(data)}"
        )
    if count == 0:
        return torch.empty(0, dtype=dtype)
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).view(dtype).clone()


@dataclass
class Encoded:
    """A tensor's packed form: ``meta`` goes to the JSON header, ``sections`` (name → bytes) to the payload."""

    name: str
    meta: dict
    sections: dict = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return sum(len(b) for b in self.sections.values())


def _bytes(bits: int) -> int:
    return (int(bits) + 7) // 8


def _plan(n: int, nnz: int, levels_nz: int, has_zero: bool, g, value_bits: int, level_bits: int, forced) -> tuple:
    """(bytes, index kind, p, values kind, code) of the smallest allowed combination; code = {"bits": b} or
    {"bits": b, "radix_group": G, "radix_bits": B} (:func:`bitpack.radix_group`).

    ``n`` positions, ``nnz`` non-zeros with ``levels_nz`` distinct values, gaps ``g``; raw values of ``value_bits``,
    codebook entries of ``level_bits``. ``forced``: ``"auto"``; an int b (codebook codes of exactly b bits);
    ``None`` (raw values only).
    """
    cands = []
    indexes = [("none", 0, 0)]
    if has_zero:
        indexes.append(("bitmask", _bytes(n), 0))
        p, m = bitpack.best_relative_bits(g, MAX_RELATIVE_BITS) if nnz else (1, 0)
        indexes.append(("relative", _bytes(p * m), p))
    for kind, idx_bytes, p in indexes:
        count = n if kind == "none" else nnz
        levels = levels_nz + (1 if (kind == "none" and has_zero) else 0)
        if forced != "auto" and forced is not None:
            if bitpack.bits_for(max(levels, 1)) <= forced:
                cands.append(
                    (
                        idx_bytes + _bytes(levels * level_bits) + _bytes(count * forced),
                        kind,
                        p,
                        "codebook",
                        {"bits": forced},
                    )
                )
            continue
        cands.append((idx_bytes + _bytes(count * value_bits), kind, p, "raw", {}))
        if forced == "auto" and levels:
            b, (grp, rbits) = bitpack.bits_for(levels), bitpack.radix_group(levels)
            book = idx_bytes + _bytes(levels * level_bits)
            cands.append((book + _bytes(count * b), kind, p, "codebook", {"bits": b}))
            if grp > 1:
                cands.append(
                    (
                        book + _bytes(-(-count // grp) * rbits),
                        kind,
                        p,
                        "codebook",
                        {"bits": b, "radix_group": grp, "radix_bits": rbits},
                    )
                )
    return min(cands, key=lambda c: c[0])


def encode(name: str, t: torch.Tensor, forced="auto", float16: bool = False) -> Encoded:
    """Pack one tensor (see the module docstring); ``forced`` as in :func:`_plan`, ``float16``: raw floats as fp16."""
    t = t.detach().cpu().contiguous()
    meta = {"dtype": dtype_name(t.dtype), "shape": list(t.shape)}
    n, size = t.numel(), t.element_size()
    flat = t.reshape(-1)
    if t.is_floating_point():  # -0.0 -> +0.0 (module docstring)
        flat = torch.where(flat == 0, torch.zeros_like(flat), flat)
    if not (t.is_floating_point() and size in _INT_VIEW) or n == 0:
        if forced not in ("auto", None):
            raise ValueError(f"{name}: weight bits apply to floating-point tensors, this one is {meta['dtype']}")
        return Encoded(
            name,
            {**meta, "index": {"kind": "none"}, "values": {"kind": "raw", "dtype": meta["dtype"]}},
            {"raw": to_bytes(flat)},
        )
    bits = flat.view(_INT_VIEW[size]).numpy()
    pos = np.flatnonzero(bits)
    levels_nz, codes_nz = np.unique(bits[pos], return_inverse=True)
    if forced not in ("auto", None) and bitpack.bits_for(max(len(levels_nz), 1)) > forced:
        raise ValueError(
            f"{name}: {len(levels_nz)} distinct non-zero values need "
            f"{bitpack.bits_for(len(levels_nz))} bits, weight_bits allots {forced}"
        )
    raw_dtype = torch.float16 if (float16 and t.dtype in (torch.float32, torch.float64)) else t.dtype
    raw_bits = 8 * torch.empty((), dtype=raw_dtype).element_size()
    g = bitpack.gaps(pos)
    _, kind, p, vkind, code = _plan(n, pos.size, len(levels_nz), pos.size < n, g, raw_bits, 8 * size, forced)
    sections, index = {}, {"kind": kind, "nnz": int(pos.size)}
    if kind == "bitmask":
        sections["index"] = bitpack.bitmask(pos, n)
    elif kind == "relative":
        entries = bitpack.relative_encode(pos, p) if pos.size else np.zeros(0, dtype=np.int64)
        index.update(bits=p, entries=int(entries.size))
        sections["index"] = bitpack.pack_uint(entries, p)
    stored = bits if kind == "none" else bits[pos]
    values = {"kind": vkind}
    if vkind == "raw":
        vals = torch.from_numpy(np.ascontiguousarray(stored)).view(t.dtype).to(raw_dtype)
        values["dtype"] = dtype_name(raw_dtype)
        sections["raw"] = to_bytes(vals)
    else:
        if kind == "none":
            levels, codes = np.unique(stored, return_inverse=True)
        else:
            levels, codes = levels_nz, codes_nz
        values.update(code, levels=int(len(levels)))
        sections["codebook"] = to_bytes(torch.from_numpy(np.ascontiguousarray(levels)))
        sections["codes"] = (
            bitpack.pack_radix(codes, len(levels), code["radix_group"], code["radix_bits"])
            if "radix_group" in code
            else bitpack.pack_uint(codes.reshape(-1), code["bits"])
        )
    return Encoded(name, {**meta, "index": index, "values": values}, sections)


def decode(meta: dict, sections: dict) -> torch.Tensor:
    """Inverse of :func:`encode`; any inconsistency between ``meta`` and the sections is a ValueError."""
    dtype, shape = dtype_of(meta["dtype"]), [int(s) for s in meta["shape"]]
    if any(s < 0 for s in shape):
        raise ValueError(f"negative shape {shape}")
    n = int(np.prod(shape, dtype=np.int64))
    index, values = meta["index"], meta["values"]
    kind = index["kind"]
    if kind == "none":
        pos, count = None, n
    elif kind == "bitmask":
        pos = bitpack.bitmask_positions(sections["index"], n)
    elif kind == "relative":
        p = int(index["bits"])
        if not 1 <= p <= MAX_RELATIVE_BITS:
            raise ValueError(f"relative index bits {p} outside [1, {MAX_RELATIVE_BITS}]")
        pos = bitpack.relative_decode(bitpack.unpack_uint(sections["index"], p, int(index["entries"])), p)
    else:
        raise ValueError(f"unknown index kind {kind!r}")
    if pos is not None:
        count = int(index["nnz"])
        if pos.size != count or (count and (pos[0] < 0 or pos[-1] >= n or np.any(np.diff(pos) <= 0))):
            raise ValueError(f"index does not give {count} increasing positions in [0, {n})")
    if values["kind"] == "raw":
        vals = from_bytes(sections["raw"], dtype_of(values["dtype"]), count).to(dtype)
    elif values["kind"] == "codebook":
        k, b = int(values["levels"]), int(values["bits"])
        book = from_bytes(sections["codebook"], dtype, k)
        if "radix_group" in values:
            grp, rbits = int(values["radix_group"]), int(values["radix_bits"])
            if not (1 < grp <= bitpack.MAX_RADIX_GROUP and (k**grp - 1).bit_length() == rbits):
                raise ValueError(f"radix code of {grp} base-{k} digits in {rbits} bits is not a valid form")
            codes = bitpack.unpack_radix(sections["codes"], k, grp, rbits, count)
        else:
            codes = bitpack.unpack_uint(sections["codes"], b, count)
        if count and (k == 0 or codes.max() >= k):
            raise ValueError(f"a code exceeds the codebook of {k} values")
        vals = book[torch.from_numpy(codes)] if count else torch.empty(0, dtype=dtype)
    else:
        raise ValueError(f"unknown values kind {values['kind']!r}")
    if pos is None:
        return vals.reshape(shape)
    out = torch.zeros(n, dtype=dtype)
    out[torch.from_numpy(pos)] = vals
    return out.reshape(shape)
