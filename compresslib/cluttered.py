"""Cluttered digits: embedded digits pasted at a random scale and position on a larger canvas with
distractor clutter, keeping the true box -- a small stand-in for ImageNet's "object somewhere in
a background" on which foreground cropping (EdgeCompress / Smart Scissor DIC) matters.

Canvas construction (per source digit, seeded): the digit is resized to s x s, s ~ U{scale}, and
pasted (pixel-wise max) at a uniform position; ``clutter`` patches of ``patch`` x ``patch`` pixels
cut from *other* digits (same random scaling) are pasted at uniform positions; Gaussian noise of
std ``noise`` is added and the canvas clipped to [0, 1]. The true box is the tight box of the pasted
digit's ink (pixels > 0.25), before clutter and noise. The train/test split is made on the source
digits (fixed seed) before any canvas is built, so no digit appears in both.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F

from . import embedded

# mean / std of canvas pixels (mnist5k source, canvas 64, default knobs; train split, measured)
MEAN, STD = 0.0793, 0.1747
INK = 0.25


@dataclass
class ClutteredSplit:
    x: torch.Tensor  # (N, 1, S, S) normalised canvases
    y: torch.Tensor  # (N,) labels
    boxes: torch.Tensor | None  # (N, 4) true digit boxes (x0, y0, x1, y1), pixels, x1/y1 exclusive; None: no boxes
    source: torch.Tensor  # (N,) index of the source digit within the split


@dataclass(frozen=True)
class CanvasSpec:
    """The canvas knobs of the module docstring, checked on construction: ``canvas`` x ``canvas`` pixels, digit
    side s ~ U{scale[0]..scale[1]}, U{clutter[0]..clutter[1]} patches of ``patch`` x ``patch`` pixels, noise std
    ``noise``, ``copies`` canvases per source digit. ``make_canvases`` and ``load_cluttered`` take these fields
    as keyword arguments."""

    canvas: int = 64
    scale: tuple = (16, 40)
    clutter: tuple = (2, 4)
    patch: int = 10
    noise: float = 0.1
    copies: int = 1

    def __post_init__(self):
        for f in fields(self):  # ints, floats and tuples of ints (hashable: ``_build`` caches on it)
            object.__setattr__(self, f.name, _CASTS[f.type](getattr(self, f.name)))
        if not 4 <= self.scale[0] <= self.scale[1] <= self.canvas:
            raise ValueError(f"digit scale must satisfy 4 <= lo <= hi <= canvas={self.canvas}, got {self.scale}")
        c, p = self.clutter, self.patch
        if not 0 <= c[0] <= c[1] or not 1 <= p <= self.canvas or self.noise < 0 or self.copies < 1:
            raise ValueError("clutter=(min, max) >= 0, 1 <= patch <= canvas, noise >= 0, copies >= 1 required")


_CASTS = {"int": int, "float": float, "tuple": lambda v: tuple(int(x) for x in v)}


def _resize(img: np.ndarray, s: int) -> np.ndarray:
    t = torch.as_tensor(img, dtype=torch.float32)[None, None]
    return F.interpolate(t, size=(s, s), mode="bilinear", align_corners=False, antialias=True)[0, 0].numpy()


def _layout(rng, i: int, n: int, spec: CanvasSpec):
    """The random draws of canvas ``i``, in their fixed order: clutter patches (another digit ``j``,
    its scale, the patch cut from it and where it goes), then the digit's scale and position."""
    (lo, hi), clutter, patch, canvas = spec.scale, spec.clutter, spec.patch, spec.canvas
    ops = []
    for _ in range(rng.integers(clutter[0], clutter[1] + 1)):
        j = int((i + rng.integers(1, n)) % n)  # another digit
        so = int(rng.integers(lo, hi + 1))
        p = min(patch, so)
        oy, ox = rng.integers(0, so - p + 1, size=2)
        py, px = rng.integers(0, canvas - p + 1, size=2)
        ops.append((j, so, p, int(oy), int(ox), int(py), int(px)))
    s = int(rng.integers(lo, hi + 1))
    py, px = rng.integers(0, canvas - s + 1, size=2)
    return ops, (s, int(py), int(px))


def make_canvases(images: np.ndarray, labels: np.ndarray, seed: int = 0, **knobs):
    """Build canvases from (N, h, w) images in [0, 1]; ``knobs``: the :class:`CanvasSpec` fields. Returns float32
    arrays (M, S, S), labels (M,), boxes (M, 4) int, source index (M,) with M = N * copies.

    Two passes over the same seeded stream: the first collects every (digit, scale) that is pasted,
    which are then resized in one batched call per scale; the second replays the draws and pastes."""
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 3 or len(images) < 2 or len(images) != len(labels):
        raise ValueError(f"need >= 2 images (N, h, w) with one label each, got {images.shape}, {len(labels)} labels")
    spec = CanvasSpec(**knobs)
    canvas, noise, copies = spec.canvas, spec.noise, spec.copies
    n = len(images)
    src = np.repeat(np.arange(n), copies)
    need: dict[int, set] = {}
    rng = np.random.default_rng(seed)
    for i in src:  # pass 1: which digit at which scale
        ops, (s, _, _) = _layout(rng, int(i), n, spec)
        for j, so, *_ in ops:
            need.setdefault(so, set()).add(j)
        need.setdefault(s, set()).add(int(i))
        if noise > 0:
            rng.normal(0.0, noise, size=(canvas, canvas))
    resized = {}
    for size, idx in need.items():  # one batched resize per scale
        idx = sorted(idx)
        t = torch.as_tensor(images[idx])[:, None]
        r = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)[:, 0].numpy()
        resized.update({(j, size): r[k] for k, j in enumerate(idx)})
    out = np.zeros((n * copies, canvas, canvas), dtype=np.float32)
    boxes = np.zeros((n * copies, 4), dtype=np.int64)
    rng = np.random.default_rng(seed)
    for m, i in enumerate(src):  # pass 2: replay the draws and paste
        img = out[m]
        ops, (s, py, px) = _layout(rng, int(i), n, spec)
        for j, so, p, oy, ox, qy, qx in ops:
            other = resized[(j, so)]
            np.maximum(
                img[qy : qy + p, qx : qx + p], other[oy : oy + p, ox : ox + p], out=img[qy : qy + p, qx : qx + p]
            )
        digit = resized[(int(i), s)]
        np.maximum(img[py : py + s, px : px + s], digit, out=img[py : py + s, px : px + s])
        ys, xs = np.nonzero(digit > INK)
        if len(ys) == 0:
            ys, xs = np.array([0, s - 1]), np.array([0, s - 1])
        boxes[m] = [px + xs.min(), py + ys.min(), px + xs.max() + 1, py + ys.max() + 1]
        if noise > 0:
            img += rng.normal(0.0, noise, size=img.shape).astype(np.float32)
        np.clip(img, 0.0, 1.0, out=img)
    return out, np.repeat(np.asarray(labels), copies), boxes, src


def _source(name: str):
    if name == "mnist5k":
        return embedded.raw_mnist5k()
    if name == "digits":
        return embedded.raw_digits()
    raise ValueError(f"unknown cluttered-digits source {name!r}; valid: digits, mnist5k")


@functools.lru_cache(maxsize=8)
def _build(split: str, source: str, spec: CanvasSpec, test_fraction: float):
    x, y = _source(source)
    x, y = embedded.tensor_split(np.asarray(x), np.asarray(y), split, test_fraction)
    seed = {"train": 11, "test": 29}[split]
    return make_canvases(x, y, seed, **asdict(spec))


def _cached_build(cache_dir, *args):
    """``_build(*args)`` kept in ``cache_dir`` as .npz, keyed by the arguments, the source digits' bytes
    and the source code of the canvas builder (a changed generator never reuses old canvases)."""
    import hashlib
    import inspect
    import os
    from pathlib import Path

    x, y = _source(args[1])
    h = hashlib.sha256(repr(args).encode())
    for part in (
        np.ascontiguousarray(np.asarray(x, dtype=np.float32)).tobytes(),
        np.asarray(y).tobytes(),
        inspect.getsource(CanvasSpec).encode(),
        inspect.getsource(_layout).encode(),
        inspect.getsource(make_canvases).encode(),
        inspect.getsource(_build.__wrapped__).encode(),
    ):
        h.update(part)
    path = Path(cache_dir) / f"canvases-{args[0]}-{args[1]}-{h.hexdigest()[:16]}.npz"
    if path.is_file():
        with np.load(path) as z:
            return z["x"], z["y"], z["boxes"], z["src"]
    out = _build(*args)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.npz")
    np.savez(tmp, x=out[0], y=out[1], boxes=out[2], src=out[3])
    os.replace(tmp, path)
    return out


def load_cluttered(
    split: str = "train",
    source: str = "mnist5k",
    test_fraction: float = 0.2,
    image_size: int | None = None,
    cache_dir=None,
    **knobs,
) -> ClutteredSplit:
    """One split of cluttered digits as tensors, normalised with (MEAN, STD); deterministic. ``knobs``: the
    :class:`CanvasSpec` fields (``canvas``, ``scale``, ``clutter``, ``patch``, ``noise``, ``copies``).
    ``cache_dir``: keep the built canvases there (``_cached_build``), so a re-run skips building them."""
    embedded.check_split(split)
    spec = CanvasSpec(**knobs)
    args = (split, source, spec, float(test_fraction))
    imgs, y, boxes, src = _build(*args) if cache_dir is None else _cached_build(cache_dir, *args)
    x = torch.from_numpy(imgs).unsqueeze(1)
    b = torch.from_numpy(boxes)
    if image_size is not None and image_size != spec.canvas:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False)
        b = torch.round(b.double() * image_size / spec.canvas).long()
    return ClutteredSplit((x - MEAN) / STD, torch.as_tensor(y).long(), b, torch.from_numpy(src))
