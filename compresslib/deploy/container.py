"""The packed model file: real bytes on disk for every compressed form, rebuilt bit-exactly by ``unpack``.

Layout (format version 1, all integers little-endian)::

    offset 0   8 bytes   magic b"CLPACK\\x1a\\n"
           8   uint16    format version (1)
          10   uint32    header length H
          14   uint64    payload length P
          22   H bytes   header: zlib-compressed UTF-8 JSON {"format", "model", "kwargs", "dtype", "quantized",
                         "tensors": [...]} (zlib: the per-tensor records are ~1.7 kB of JSON for LeNet-5, ~0.4 kB
                         compressed, which matters next to a 2000x-compressed model's few kB)
      22 + H   P bytes   payload: every tensor's sections (index / codebook / codes / raw), back to back
  22 + H + P   32 bytes  sha256 of all bytes before it

Each ``tensors`` record holds the state_dict key, dtype, shape, the chosen index and values forms
(see :mod:`.codec`) and the ``[offset, length]`` of its sections in the payload; ``unpack`` rebuilds the
architecture with ``compresslib.models.create_model(model, **kwargs)`` (or a :data:`BUILDERS` entry: CAMP) and loads every tensor
(``load_state_dict(strict=True)``; the modules a model never runs, e.g. the path a CAMP static plan does not
take, are not stored and keep the rebuilt model's values). The container is checked (size, magic, version, checksum) before any
tensor is decoded, and any failure is a ``ValueError`` naming the problem, never a half-built model.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib

import torch
import torch.nn as nn

from compresslib.rebuild import BUILDERS, build_model, check_spec  # noqa: F401  (a spec is a manifest row)

from . import codec

MAGIC = b"CLPACK\x1a\n"
VERSION = 1
SUPPORTED_VERSIONS = (1,)
_PREFIX = struct.Struct("<8sHIQ")
_DIGEST = 32
MIN_SIZE = _PREFIX.size + _DIGEST
DTYPES = ("float32", "float16")


# ----------------------------------------------------------------------------- arguments
def check_weight_bits(model: nn.Module, weight_bits) -> dict:
    """{state_dict key: bits | None} from ``weight_bits`` {layer name: bits in [1, 32] or None (raw)}."""
    if weight_bits is None:
        return {}
    if not isinstance(weight_bits, dict):
        raise TypeError(f"weight_bits must be a dict {{layer name: bits or None}}, got {type(weight_bits).__name__}")
    from compresslib.checks import check_number

    keys = set(model.state_dict())
    layers = sorted(k[: -len(".weight")] for k in keys if k.endswith(".weight"))
    out = {}
    for layer, b in weight_bits.items():
        if f"{layer}.weight" not in keys:
            raise ValueError(f"weight_bits names {layer!r}, which has no weight; layers with a weight: {layers}")
        out[f"{layer}.weight"] = check_number(f"weight_bits[{layer!r}]", b, 1, 32, integer=True, none_ok=True)
    return out


def layout(state: dict) -> dict:
    """{key: (shape, dtype name)} of a state_dict."""
    return {k: (list(v.shape), codec.dtype_name(v.dtype)) for k, v in state.items()}


def layout_diff(a: dict, b: dict, a_name: str = "first", b_name: str = "second") -> str:
    """'' if two :func:`layout` dicts agree, else a short description of the differences."""
    only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    bad = [f"{k} {tuple(a[k][0])} {a[k][1]} vs {tuple(b[k][0])} {b[k][1]}" for k in a if k in b and a[k] != b[k]]
    parts = [
        f"{what}: {ks[:4]}{' ...' if len(ks) > 4 else ''}"
        for what, ks in (
            (f"keys only in the {a_name}", only_a),
            (f"keys only in the {b_name}", only_b),
            (f"{a_name} vs {b_name} shape/dtype", bad),
        )
        if ks
    ]
    return "; ".join(parts)


def _check_same_layout(model: nn.Module, ref: nn.Module, name: str) -> None:
    """The rebuilt architecture must have the model's state_dict keys, shapes and dtypes."""
    diff = layout_diff(layout(model.state_dict()), layout(ref.state_dict()), "model", "rebuilt one")
    if diff:
        raise ValueError(f"the spec ({name!r}) does not rebuild this model ({diff}); pass the kwargs it was built with")


# ----------------------------------------------------------------------------- container
def _layout(header: dict, encoded: list) -> bytes:
    """The payload: sections back to back; each tensor record of ``header`` gets their [offset, length]."""
    payload, off = [], 0
    for e, rec in zip(encoded, header["tensors"]):
        rec["sections"] = {}
        for sec, blob in e.sections.items():
            rec["sections"][sec] = [off, len(blob)]
            payload.append(blob)
            off += len(blob)
    return b"".join(payload)


def _seal(header: dict, payload: bytes) -> bytes:
    """Prefix (magic, version, lengths) + zlib JSON header + payload + sha256 of all of it."""
    head = zlib.compress(json.dumps(header, sort_keys=True, separators=(",", ":")).encode(), 9)
    body = _PREFIX.pack(MAGIC, VERSION, len(head), len(payload)) + head + payload
    return body + hashlib.sha256(body).digest()


def _assemble(header: dict, encoded: list) -> bytes:
    return _seal(header, _layout(header, encoded))


def read_container(data) -> tuple[dict, memoryview]:
    """(header, payload) of a packed file after checking size, magic, version and checksum (ValueError if bad)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"packed model must be bytes, got {type(data).__name__}")
    data = memoryview(data).cast("B")
    if len(data) < MIN_SIZE:
        raise ValueError(f"packed model truncated: {len(data)} bytes, a packed model has at least {MIN_SIZE}")
    magic, version, hlen, plen = _PREFIX.unpack(data[: _PREFIX.size])
    if magic != MAGIC:
        raise ValueError(f"not a compresslib packed model: bad magic {bytes(magic)!r} (expected {MAGIC!r})")
    if version not in SUPPORTED_VERSIONS:
        raise ValueError(
            f"unsupported packed model format version {version} (this compresslib reads "
            f"{', '.join(map(str, SUPPORTED_VERSIONS))}; newer files need a newer compresslib)"
        )
    total = _PREFIX.size + hlen + plen + _DIGEST
    if len(data) < total:
        raise ValueError(f"packed model truncated: the header announces {total} bytes, got {len(data)}")
    if len(data) > total:
        raise ValueError(f"packed model has {len(data) - total} trailing bytes after its {total} bytes")
    if hashlib.sha256(data[:-_DIGEST]).digest() != bytes(data[-_DIGEST:]):
        raise ValueError(
            "packed model checksum mismatch: the file is corrupted (sha256 of its contents differs "
            "from the one stored at its end)"
        )
    try:
        header = json.loads(zlib.decompress(bytes(data[_PREFIX.size : _PREFIX.size + hlen])).decode())
    except (zlib.error, UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"packed model header is not zlib-compressed JSON: {e}") from e
    if not isinstance(header, dict) or header.get("format") != "compresslib.deploy":
        raise ValueError("packed model header does not describe a compresslib.deploy model")
    return header, data[_PREFIX.size + hlen : total - _DIGEST]


def _sections(rec: dict, payload: memoryview) -> dict:
    out = {}
    for sec, (off, length) in rec["sections"].items():
        if off < 0 or length < 0 or off + length > len(payload):
            raise ValueError(f"section {sec!r} [{off}, +{length}) lies outside the {len(payload)}-byte payload")
        out[sec] = bytes(payload[off : off + length])
    return out


# ----------------------------------------------------------------------------- quantized layers (CAMP)
def _quantized_layers(model: nn.Module) -> dict:
    """{layer: (w_bits, a_bits, act_clip)} of every fake-quantized layer (``quant.QConv2d`` / ``QLinear``)."""
    from compresslib.quant import _QuantIO

    return {
        n: (int(m.w_bits), int(m.a_bits), float(m.act_clip))
        for n, m in model.named_modules()
        if isinstance(m, _QuantIO) and (m.w_bits < 32 or m.a_bits < 32)
    }


def never_run(model: nn.Module) -> set:
    """State keys of the modules the model never executes (marked ``micronet_skip``: the path a CAMP static plan
    does not take, its gate). They are not stored; :func:`unpack` leaves the rebuilt model's own values there."""
    prefixes = tuple(f"{n}." for n, m in model.named_modules() if n and getattr(m, "micronet_skip", False))
    return {k for k in model.state_dict() if k.startswith(prefixes)} if prefixes else set()


def effective_state(model: nn.Module) -> dict:
    """The state_dict of what the model executes: each fake-quantized weight replaced by the weight it executes
    with, Q_w(W) (``quant.quantize_weight``: sign·mean|W| at 1 bit, DoReFa levels at 2..8 bits), and the tensors
    of modules it never runs (:func:`never_run`) left out."""
    skip = never_run(model)
    state = {k: v for k, v in model.state_dict().items() if k not in skip}
    modules = dict(model.named_modules())
    for layer, (w_bits, _, _) in _quantized_layers(model).items():
        if w_bits < 32 and f"{layer}.weight" in state:
            with torch.no_grad():
                state[f"{layer}.weight"] = modules[layer].quant_weight().detach().clone()
    return state


def restore_quantized(model: nn.Module, quantized: dict) -> nn.Module:
    """Give a rebuilt model the fake-quantized layers of the packed one, executing the stored weights as they are:
    each named layer becomes QConv2d/QLinear with w_bits=32 (its weight *is* Q_w(W)), the recorded a_bits and clip,
    and its own weight Parameter (CAMP's two paths share one latent weight but execute different Q_w(W))."""
    from compresslib.quant import apply_bit_plan

    modules = dict(model.named_modules())
    for layer, (w_bits, a_bits, clip) in quantized.items():
        if layer not in modules or not hasattr(modules[layer], "weight"):
            raise ValueError(
                f"quantized layer {layer!r} does not exist in the rebuilt model (the spec builds "
                f"another architecture: check its model, kwargs and kind)"
            )
        apply_bit_plan(model, {layer: (32, int(a_bits))}, act_clip=float(clip))
        m = modules[layer]
        if int(w_bits) < 32:
            m.weight = nn.Parameter(m.weight.detach().clone(), requires_grad=m.weight.requires_grad)
    return model


# ----------------------------------------------------------------------------- pack / unpack
def encode_model(model: nn.Module, weight_bits=None, dtype: str = "float32") -> tuple[dict, list]:
    """(header without the spec, encoded tensors) of every state_dict entry, in state_dict order."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES} (the form of dense floating tensors), got {dtype!r}")
    forced = check_weight_bits(model, weight_bits)
    quantized = _quantized_layers(model)
    encoded = [
        codec.encode(k, v, forced.get(k, "auto"), float16=dtype == "float16") for k, v in effective_state(model).items()
    ]
    header = {
        "format": "compresslib.deploy",
        "dtype": dtype,
        "quantized": {n: list(v) for n, v in quantized.items()},
        "tensors": [{"name": e.name, **e.meta} for e in encoded],
    }
    return header, encoded


def pack(model: nn.Module, spec, *, weight_bits: dict | None = None, dtype: str = "float32") -> bytes:
    """The model as one versioned, checksummed packed file (module docstring); lossless unless ``dtype="float16"``.

    ``spec``: registry name or manifest row {"model": name, "kwargs": {...}} that rebuilds the architecture
    (stage 08's CAMP rows too: :data:`BUILDERS`).
    ``weight_bits``: {layer: b} packs that layer's weight as a codebook with exactly b-bit codes (a ValueError if
    it has more than 2^b distinct non-zero values), {layer: None} stores it raw; other tensors take their
    smallest lossless form. ``dtype="float16"``: tensors stored raw become fp16 (lossy; codebooks stay exact).
    Fake-quantized layers (``quant.QConv2d``/``QLinear``, CAMP) are stored as the weights they execute with.
    """
    spec = check_spec(spec)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    ref = build_model(spec)
    restore_quantized(ref, {n: list(v) for n, v in _quantized_layers(model).items()})
    _check_same_layout(model, ref, spec["model"])
    header, encoded = encode_model(model, weight_bits, dtype)
    return _assemble({**header, **spec}, encoded)


def unpack(data) -> nn.Module:
    """The model of a :func:`pack` file, in eval mode (ValueError for a truncated, corrupted or foreign file)."""
    header, payload = read_container(data)
    try:
        spec = check_spec({k: header.get(k) for k in ("model", "kwargs", "build")})
        model = build_model(spec)
        restore_quantized(model, header.get("quantized", {}))
        # every record must match the rebuilt model before anything is decoded (a header cannot make us allocate)
        own, skip = model.state_dict(), never_run(model)
        diff = layout_diff(
            {r["name"]: (list(r["shape"]), r["dtype"]) for r in header["tensors"]},
            layout({k: v for k, v in own.items() if k not in skip}),
            "file",
            "model",
        )
        if diff:
            raise ValueError(f"the stored tensors do not fit {spec['model']!r} ({diff})")
        state = {rec["name"]: codec.decode(rec, _sections(rec, payload)) for rec in header["tensors"]}
        model.load_state_dict({**{k: own[k] for k in skip}, **state}, strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError, OverflowError) as e:
        raise ValueError(f"packed model cannot be rebuilt: {type(e).__name__}: {e}") from e
    return model.eval()


def save(model: nn.Module, spec, path, **kw):
    """Write :func:`pack` to ``path`` atomically (temporary file + rename); returns the path."""
    from ..results import atomic_write_bytes

    data = pack(model, spec, **kw)  # errors before anything is written
    return atomic_write_bytes(path, data)


def load(path) -> nn.Module:
    """:func:`unpack` of a file written by :func:`save`."""
    from pathlib import Path

    return unpack(Path(path).read_bytes())
