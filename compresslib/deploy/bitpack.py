"""Bit-level codecs of the packed model format: fixed-width integer packing, bitmasks and relative index coding.

* ``pack_uint``: n unsigned integers of ``bits`` bits each, most significant bit first, concatenated and padded
  with zero bits to a whole byte (``numpy.packbits`` bit order): ⌈n·bits/8⌉ bytes.
* ``pack_radix``: codes of K levels (K not a power of two), G at a time as one G-digit base-K number in
  B = ⌈log2 K^G⌉ bits (e.g. ternary: 5 digits in 8 bits, 1.6 bits per weight instead of 2).
* ``bitmask``: one bit per position (1 = non-zero), ``numpy.packbits``: ⌈n/8⌉ bytes.
* relative index coding (Han et al., "Deep Compression", ICLR 2016, §3 and Fig. 3): each non-zero stores the
  number of zeros before it (its *gap*) in p bits. Deep Compression marks a gap that does not fit with a *filler*
  entry holding a zero weight; here the filler is the reserved index value E = 2^p − 1 ("skip E zeros, no value"),
  so fillers carry no code: a gap g becomes ⌊g / E⌋ fillers and one entry g mod E ∈ [0, E − 1].
  Entries: nnz + Σ ⌊g_i / E⌋ (``leaderboard.index_bits`` counts Σ ⌊g_i / 2^p⌋, Deep Compression's filler rule;
  the two differ by at most one filler per 2^p zeros).
"""

from __future__ import annotations

import numpy as np

_CHUNK = 1 << 20  # values per packing chunk (a multiple of 8, so every chunk ends on a byte boundary)


def bits_for(levels: int) -> int:
    """Code width ⌈log2(levels)⌉ for ``levels`` ≥ 1 distinct values (0 bits for a single value)."""
    if levels < 1:
        raise ValueError(f"levels must be >= 1, got {levels}")
    return int(levels - 1).bit_length()


def pack_uint(values: np.ndarray, bits: int) -> bytes:
    """``values`` (non-negative ints < 2^bits) as ``bits``-bit fields, MSB first, zero-padded to a byte."""
    if not 0 <= bits <= 62:
        raise ValueError(f"bits must be in [0, 62], got {bits}")
    v = np.asarray(values, dtype=np.uint64).reshape(-1)
    if bits == 0 or v.size == 0:
        return b""
    if int(v.max()) >> bits:
        raise ValueError(f"a value {int(v.max())} does not fit in {bits} bits")
    shifts = np.arange(bits - 1, -1, -1, dtype=np.uint64)
    out = []
    for s in range(0, v.size, _CHUNK):
        fields = ((v[s : s + _CHUNK, None] >> shifts) & np.uint64(1)).astype(np.uint8)
        out.append(np.packbits(fields.reshape(-1)).tobytes())
    return b"".join(out)


def unpack_uint(data: bytes, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_uint`: ``count`` integers (int64) of ``bits`` bits each."""
    if bits == 0:
        return np.zeros(count, dtype=np.int64)
    need = (count * bits + 7) // 8
    if len(data) != need:
        raise ValueError(f"{count} codes of {bits} bits need {need} bytes, the section has {len(data)}")
    weights = np.uint64(1) << np.arange(bits - 1, -1, -1, dtype=np.uint64)
    raw = np.frombuffer(data, dtype=np.uint8)
    out = np.empty(count, dtype=np.int64)
    step = _CHUNK * bits // 8  # bytes per chunk of _CHUNK values
    for i, s in enumerate(range(0, count, _CHUNK)):
        n = min(_CHUNK, count - s)
        fields = np.unpackbits(raw[i * step : i * step + (n * bits + 7) // 8], count=n * bits).reshape(n, bits)
        out[s : s + n] = (fields.astype(np.uint64) @ weights).astype(np.int64)
    return out


MAX_RADIX_GROUP = 16


def radix_group(levels: int) -> tuple[int, int]:
    """(G, B): G base-``levels`` digits per B-bit field, B = ⌈log2 levels^G⌉, minimising B/G over G ≤ 16 (smallest G
    on ties; G = 1 is plain binary, B = ⌈log2 levels⌉)."""
    best = (1, bits_for(levels))
    for g in range(2, MAX_RADIX_GROUP + 1):
        b = (levels**g - 1).bit_length()
        if b > 62:
            break
        if b * best[0] < best[1] * g:
            best = (g, b)
    return best


def pack_radix(codes: np.ndarray, levels: int, group: int, bits: int) -> bytes:
    """Codes < ``levels``, ``group`` at a time as Σ c_i·levels^i (the last group padded with 0) in ``bits`` bits each."""
    c = np.asarray(codes, dtype=np.uint64).reshape(-1)
    c = np.concatenate([c, np.zeros(-c.size % group, dtype=np.uint64)]).reshape(-1, group)
    weights = np.uint64(levels) ** np.arange(group, dtype=np.uint64)
    return pack_uint((c * weights).sum(axis=1, dtype=np.uint64), bits)


def unpack_radix(data: bytes, levels: int, group: int, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_radix`: ``count`` codes (int64); a digit ≥ ``levels`` in a field is a ValueError."""
    v = unpack_uint(data, bits, -(-count // group)).astype(np.uint64)
    if v.size and int(v.max()) >= levels**group:
        raise ValueError(f"a {bits}-bit field exceeds {levels}^{group} - 1")
    out = np.empty((v.size, group), dtype=np.int64)
    for i in range(group):
        out[:, i] = (v % np.uint64(levels)).astype(np.int64)
        v //= np.uint64(levels)
    return out.reshape(-1)[:count]


def bitmask(positions: np.ndarray, n: int) -> bytes:
    """⌈n/8⌉ bytes with bit i set iff i is in ``positions``."""
    mask = np.zeros(n, dtype=np.uint8)
    mask[positions] = 1
    return np.packbits(mask).tobytes()


def bitmask_positions(data: bytes, n: int) -> np.ndarray:
    """Positions of the set bits of a :func:`bitmask` of ``n`` bits."""
    if len(data) != (n + 7) // 8:
        raise ValueError(f"a bitmask of {n} positions has {(n + 7) // 8} bytes, the section has {len(data)}")
    return np.flatnonzero(np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=n))


def gaps(positions: np.ndarray) -> np.ndarray:
    """Zeros before each non-zero: g_i = pos_i − pos_{i−1} − 1 with pos_{−1} = −1 (positions sorted, distinct)."""
    p = np.asarray(positions, dtype=np.int64)
    return np.diff(p, prepend=-1) - 1


def relative_entries(g: np.ndarray, bits: int) -> int:
    """Number of p-bit entries (non-zeros + fillers) of relative index coding: nnz + Σ ⌊g_i / (2^p − 1)⌋."""
    if not 1 <= bits <= 32:
        raise ValueError(f"relative index bits must be in [1, 32], got {bits}")
    return int(g.size + (g // (2**bits - 1)).sum())


def best_relative_bits(g: np.ndarray, max_bits: int = 16) -> tuple[int, int]:
    """(p, entries) minimising p · entries over p in 1..``max_bits`` (first p wins ties)."""
    best = None
    for p in range(1, max_bits + 1):
        m = relative_entries(g, p)
        if best is None or p * m < best[0] * best[1]:
            best = (p, m)
    return best


def relative_encode(positions: np.ndarray, bits: int) -> np.ndarray:
    """Entries of relative index coding: per non-zero ⌊g/E⌋ fillers (value E = 2^p − 1), then g mod E."""
    g = gaps(positions)
    e = 2**bits - 1
    k = g // e
    ends = np.cumsum(k + 1) - 1  # where each non-zero's own entry lands
    out = np.full(int(ends[-1]) + 1 if ends.size else 0, e, dtype=np.int64)
    out[ends] = g % e
    return out


def relative_decode(entries: np.ndarray, bits: int) -> np.ndarray:
    """Positions of the non-zeros: cur = −1 + Σ advance, advance = g + 1 for an entry, E for a filler."""
    e = 2**bits - 1
    entries = np.asarray(entries, dtype=np.int64)
    filler = entries == e
    cur = np.cumsum(np.where(filler, e, entries + 1)) - 1
    return cur[~filler]
