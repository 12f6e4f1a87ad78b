"""Solvers of sparsity-quantization joint learning (Yang et al., CVPR 2020): the combinatorial parts.

Size budget (spec §2.2)  S = bit_budget * sum_l ceil(nnz_budget * n_l)  bits over Conv2d/Linear weights;
W-projection (§3.2): 0-1 knapsack (keep the largest w^2/b_l while sum b_l <= S);
V-projection (§3.3): zero-anchored 1-D k-means codebooks per layer and bitwidth + a multiple-choice
knapsack (LP-hull greedy) choosing one bitwidth per layer; compression-rate accounting (§5: the
paper's weights-only ratio, plus with biases and with sparse index + codebooks).
The ADMM loop, finetune and progressive chain that use them live in :mod:`compresslib.methods.sqjoint`,
which re-exports every public name here.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

ZERO_EPS = 1e-5  # |z| below this is treated as an exact zero (spec §3.3)


# ----------------------------------------------------------------------------------- budgets
def compressible_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Conv2d / Linear modules in ``model.modules()`` order; clear error if there are none."""
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no Conv2d/Linear layers: nothing to compress")
    return layers


def _sizes(model_or_sizes) -> list[int]:
    if isinstance(model_or_sizes, nn.Module):
        return [m.weight.numel() for _, m in compressible_layers(model_or_sizes)]
    sizes = [int(n) for n in model_or_sizes]
    if not sizes or min(sizes) < 1:
        raise ValueError(f"layer sizes must be a non-empty list of positive ints, got {model_or_sizes!r}")
    return sizes


def check_budgets(nnz_budget: float, bit_budget: float) -> None:
    if not (0.0 < float(nnz_budget) <= 1.0):
        raise ValueError(f"nnz_budget must be in (0, 1], got {nnz_budget}")
    if not (1.0 <= float(bit_budget) <= 8.0):
        raise ValueError(f"bit_budget must be in [1, 8] bits, got {bit_budget}")


def check_bit_range(bit_range) -> list[int]:
    B = sorted({int(b) for b in bit_range})
    if not B or B[0] < 1 or B[-1] > 8 or any(b != float(x) for b, x in zip(B, sorted(set(bit_range)))):
        raise ValueError(f"candidate bitwidths must be integers in 1..8, got {list(bit_range)}")
    return B


def size_budget(model_or_sizes, nnz_budget: float, bit_budget: float) -> tuple[float, list[int]]:
    """S = bit_budget * sum_l ceil(nnz_budget * n_l) bits, and the nominal k_l (spec §2.2)."""
    check_budgets(nnz_budget, bit_budget)
    k = [math.ceil(nnz_budget * n - 1e-9) for n in _sizes(model_or_sizes)]
    return float(bit_budget) * sum(k), k


def check_size(S: float, n_layers: int, min_bits: int = 1) -> None:
    """A feasible budget stores at least one non-zero per layer at the lowest bitwidth."""
    if not (isinstance(S, (int, float)) and math.isfinite(S) and S > 0):  # S=nan zeroed every weight
        raise ValueError(f"S (size budget in bits) must be a finite number in (0, inf), got {S!r}")
    if S < n_layers * min_bits:
        raise ValueError(
            f"size budget {S} bits is smaller than one {min_bits}-bit weight per layer "
            f"({n_layers} layers need >= {n_layers * min_bits} bits)"
        )


def target_compression(model_or_sizes, nnz_budget: float, bit_budget: float) -> float:
    """Budgeted ratio 32 * sum_l n_l / S (e.g. LeNet-5 Caffe (0.0054, 3) -> 1975.05x)."""
    S, _ = size_budget(model_or_sizes, nnz_budget, bit_budget)
    return 32.0 * sum(_sizes(model_or_sizes)) / S


# ------------------------------------------------------------------- sparse projection (§3.2)
@torch.no_grad()
def knapsack_sparsify_(weights, bits, S: float) -> list[int]:
    """0-1 knapsack W-projection: keep weights by w^2/b_l descending while sum b_l <= S; zero the rest.

    Values w^2, costs b_l (bits of the weight's layer). Greedy by value/cost = one global criterion,
    i.e. a per-layer magnitude threshold proportional to sqrt(b_l). In place; returns nnz per layer.
    """
    weights = list(weights)
    if len(bits) != len(weights):
        raise ValueError(f"need one bitwidth per layer: {len(bits)} bits for {len(weights)} layers")
    ratio = torch.cat([w.detach().reshape(-1).double().pow(2) / float(b) for w, b in zip(weights, bits)])
    cost = torch.cat(
        [torch.full((w.numel(),), float(b), dtype=torch.float64, device=w.device) for w, b in zip(weights, bits)]
    )
    order = torch.sort(ratio, descending=True, stable=True).indices
    fits = (torch.cumsum(cost[order], 0) <= float(S) + 1e-9) & (ratio[order] > 0)
    keep = torch.zeros_like(ratio, dtype=torch.bool)
    keep[order[: int(fits.sum())]] = True  # cumsum is monotone: the kept set is a prefix
    nnz, start = [], 0
    for w in weights:
        m = keep[start : start + w.numel()].view_as(w)
        w.mul_(m.to(w.dtype))
        nnz.append(int(m.sum()))
        start += w.numel()
    return nnz


# ------------------------------------------------------------ 1-D k-means codebooks (§3.3)
def _sorted_data(x: torch.Tensor, zero_anchor: bool):
    """Sorted k-means data (|x| >= 1e-5 if anchored, else all entries) and its prefix sums."""
    x = x.detach().reshape(-1).cpu().double()  # codebooks are fitted on the CPU
    xs = torch.sort(x[x.abs() >= ZERO_EPS] if zero_anchor else x).values
    zero = torch.zeros(1, dtype=torch.float64)
    return xs, torch.cat([zero, torch.cumsum(xs, 0)]), torch.cat([zero, torch.cumsum(xs * xs, 0)])


def _segments(xs, c1, c2, cents):
    """Assign sorted data to the nearest of sorted ``cents``: counts, sums and squared error per centroid."""
    n = xs.numel()
    bounds = torch.cat([torch.tensor([0]), torch.searchsorted(xs, (cents[1:] + cents[:-1]) / 2), torch.tensor([n])])
    cnt = (bounds[1:] - bounds[:-1]).double()
    s1, s2 = c1[bounds[1:]] - c1[bounds[:-1]], c2[bounds[1:]] - c2[bounds[:-1]]
    return cnt, s1, float((s2 - 2 * cents * s1 + cents * cents * cnt).sum())


def _kmeans_sorted(data, bits, iters, tol, zero_anchor, init=None):
    """Lloyd on presorted data; returns (sorted codebook float64, squared error of the data)."""
    xs, c1, c2 = data
    k, n = 2 ** int(bits), xs.numel()
    zero = torch.zeros(1, dtype=torch.float64)
    if n == 0:
        return zero, 0.0
    if n <= k:  # fewer points than levels: every point is its own level (distortion 0)
        cb = torch.unique(xs)
        return (torch.unique(torch.cat([cb, zero])) if zero_anchor else cb), 0.0
    free = (
        init.double().reshape(-1).clone() if init is not None else torch.linspace(xs[0], xs[-1], k, dtype=torch.float64)
    )
    prev = None
    for _ in range(max(1, iters)):
        cents = torch.cat([free, zero]) if zero_anchor else free
        fixed = torch.zeros(cents.numel(), dtype=torch.bool)
        fixed[-1] = zero_anchor
        cents, perm = torch.sort(cents)
        fixed = fixed[perm]
        cnt, s1, dist = _segments(xs, c1, c2, cents)
        free = torch.where((cnt > 0) & ~fixed, s1 / cnt.clamp_min(1), cents)[~fixed]
        if prev is not None and abs(prev - dist) <= tol * max(prev, 1e-30):
            break
        prev = dist
    cb = torch.sort(torch.cat([free, zero]) if zero_anchor else free).values
    return cb, _segments(xs, c1, c2, cb)[2]


def zero_kmeans_1d(
    x: torch.Tensor,
    bits: int,
    iters: int = 30,
    tol: float = 1e-3,
    zero_anchor: bool = True,
    init: torch.Tensor | None = None,
) -> torch.Tensor:
    """Lloyd's 1-D k-means with 2^bits free centroids (+ a fixed 0 if ``zero_anchor``), O(n log n).

    Data: entries with |x| >= 1e-5 (all entries if not anchored). Sort once; each iteration assigns
    by searching centroid midpoints in the sorted data and updates by segment sums (prefix sums),
    so no n x 2^b distance matrix is built. Returns the sorted codebook (contains 0.0 if anchored).
    """
    if not 1 <= int(bits) <= 8:
        raise ValueError(f"bits must be in 1..8, got {bits}")
    return _kmeans_sorted(_sorted_data(x, zero_anchor), bits, iters, tol, zero_anchor, init)[0].float()


def kmeans_quantize(x: torch.Tensor, codebook: torch.Tensor, zero_anchor: bool = True) -> torch.Tensor:
    """q_C(x): nearest codebook level (0 for |x| < 1e-5 when zero-anchored); same shape/dtype as x."""
    cb = codebook.to(x.device, x.dtype)
    if cb.numel() == 1:
        q = cb.expand_as(x).clone()
    else:
        idx = torch.bucketize(x.contiguous(), (cb[1:] + cb[:-1]) / 2, right=True)
        q = cb[idx]
    if zero_anchor:
        q = torch.where(x.abs() < ZERO_EPS, torch.zeros_like(q), q)
    return q


# --------------------------------------------------------- multiple-choice knapsack (§3.3)
def _hull(cost, dist):
    """Indices of the lower convex hull of (cost, distortion), cost ascending, distortion strictly falling."""
    items = sorted(range(len(cost)), key=lambda i: (cost[i], dist[i], i))
    mono = []
    for i in items:
        if mono and cost[i] == cost[mono[-1]]:
            continue  # same cost, not better (sorted by distortion within a cost)
        if mono and dist[i] >= dist[mono[-1]]:
            continue  # costs more, does not reduce distortion
        mono.append(i)
    hull = []
    for i in mono:
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            e_ab = (dist[a] - dist[b]) / (cost[b] - cost[a])
            e_bi = (dist[b] - dist[i]) / (cost[i] - cost[b])
            if e_ab <= e_bi:
                hull.pop()  # b is LP-dominated
            else:
                break
        hull.append(i)
    return hull


def mckp_greedy(dist, cost, S: float) -> list[int]:
    """LP-hull greedy for  min sum_l dist[l][j_l]  s.t.  sum_l cost[l][j_l] <= S  (one item per layer).

    Start at each layer's cheapest hull item, apply hull increments by distortion drop per unit cost
    (descending); an increment that does not fit freezes its layer. Returns chosen item indices.
    """
    if len(dist) != len(cost) or any(len(d) != len(c) or not d for d, c in zip(dist, cost)):
        raise ValueError("dist and cost must be L non-empty lists of equal lengths")
    hulls = [_hull(c, d) for d, c in zip(dist, cost)]
    choice = [h[0] for h in hulls]
    remaining = float(S) - sum(cost[l][j] for l, j in enumerate(choice))
    if remaining < -1e-9:
        raise ValueError(
            f"size budget {S} bits is smaller than the cheapest allocation "
            f"({float(S) - remaining:.0f} bits at the lowest bitwidth)"
        )
    incs = []
    for l, h in enumerate(hulls):
        for p in range(1, len(h)):
            dc = cost[l][h[p]] - cost[l][h[p - 1]]
            incs.append(((dist[l][h[p - 1]] - dist[l][h[p]]) / dc, l, p, dc))
    incs.sort(key=lambda t: (-t[0], t[1], t[2]))
    frozen = [False] * len(hulls)
    for _, l, p, dc in incs:
        if frozen[l]:
            continue
        if dc <= remaining + 1e-9:
            choice[l], remaining = hulls[l][p], remaining - dc
        else:
            frozen[l] = True
    return choice


@torch.no_grad()
def mckp_quantize(Z, nnz, S: float, bit_range=range(1, 9), zero_anchor: bool = True, iters: int = 30):
    """V-step: fit a k-means codebook per layer and bitwidth on Z_l, distortion D_l(b) = ||Z_l - q(Z_l)||^2,
    cost c_l(b) = b * nnz_l; pick bits by :func:`mckp_greedy`. Returns (V, bits, codebooks)."""
    B = check_bit_range(bit_range)
    Z = list(Z)
    if len(nnz) != len(Z):
        raise ValueError(f"need one nnz per layer: {len(nnz)} for {len(Z)} layers")
    check_size(S, len(Z), B[0])
    books, dist = [], []
    for z in Z:  # sort each layer once; D_l(b) = k-means error + the entries snapped to 0 (|z| < 1e-5)
        data = _sorted_data(z, zero_anchor)
        small = float(z.detach().double()[z.abs() < ZERO_EPS].pow(2).sum()) if zero_anchor else 0.0
        fits = [_kmeans_sorted(data, b, iters, 1e-3, zero_anchor) for b in B]
        books.append([cb.float() for cb, _ in fits])
        dist.append([err + small for _, err in fits])
    cost = [[float(b * n) for b in B] for n in nnz]
    choice = mckp_greedy(dist, cost, S)
    V = [kmeans_quantize(z, books[l][j], zero_anchor) for l, (z, j) in enumerate(zip(Z, choice))]
    return V, [B[j] for j in choice], [books[l][j] for l, j in enumerate(choice)]


# ------------------------------------------------------------ compression accounting (§5)
ACCOUNTINGS = ("weights-only", "with-biases", "with-index", "allocated")
MAX_GAP_BITS = 16  # relative-index gap widths tried: 1..16 bits


def _distinct(x: torch.Tensor) -> int:
    """Number of distinct values of ``x`` (values closer than 1e-6 count as one)."""
    return torch.unique(torch.round(x.detach().reshape(-1).double() * 1e6)).numel()


def _levels(w: torch.Tensor) -> int:
    nz = w.detach().reshape(-1)
    return _distinct(nz[nz != 0])


def measured_bits(w: torch.Tensor) -> float:
    """log2(max(1, #distinct non-zero values)) - the paper's eval-time bits (can be fractional)."""
    return math.log2(max(1, _levels(w)))


def weight_bits(w: torch.Tensor, fp32: bool = False) -> float:
    """Weights-only size of one layer in bits (the paper's accounting, spec §5): nnz * log2(#levels).

    Exception: a layer whose non-zeros all share one value would cost 0 bits (log2 1 = 0; the paper's
    code does so); it is charged its one-entry codebook, 32 bits. ``fp32`` (prune-only): 32 * nnz.
    """
    nnz = int((w != 0).sum())
    if fp32 or nnz == 0:
        return 32.0 * nnz
    L = _levels(w)
    return 32.0 if L == 1 else nnz * math.log2(L)


def index_storage(w: torch.Tensor, fp32: bool = False) -> tuple[float, str]:
    """Bits to store one layer with its positions and codebook, and the position scheme used.

    Values: a codebook of the L distinct non-zeros at 32 bits each (none for ``fp32`` layers, whose
    values are stored as fp32) and per stored entry a code of v = ceil(log2 L) bits (0 if L = 1; 32 for
    fp32). Positions: the cheapest of three codings, chosen per layer:
      * ``bitmask``: one bit per weight + v bits per non-zero;
      * ``relative``: Deep Compression's relative index (Han et al., ICLR'16, §3): per entry a p-bit gap
        (zeros skipped since the previous entry) + a value code of ceil(log2(L + 1)) bits (32 for fp32)
        whose extra code is zero: a gap g >= 2^p is bridged by floor(g / 2^p) filler zero entries; the
        best p in 1..16 is used;
      * ``dense``: every weight coded, ceil(log2 #distinct values incl. zero) bits each (32 for fp32).
    Returns (bits, scheme); an all-zero layer costs 0 bits (its shape is metadata).
    """
    flat = w.detach().reshape(-1)
    n, pos = flat.numel(), torch.nonzero(flat).reshape(-1)
    nnz = pos.numel()
    if nnz == 0:
        return 0.0, "empty"
    L = _levels(flat)
    v = 32 if fp32 else (math.ceil(math.log2(L) - 1e-9) if L > 1 else 0)
    v_rel = 32 if fp32 else math.ceil(math.log2(L + 1) - 1e-9)
    book = 0 if fp32 else 32 * L
    gaps = torch.diff(pos, prepend=torch.tensor([-1], device=pos.device)) - 1
    cand = {
        "bitmask": n + nnz * v,
        "dense": n * (32 if fp32 else max(1, math.ceil(math.log2(max(2, _distinct(flat))) - 1e-9))),
    }
    cand["relative"] = min(
        (nnz + int(torch.div(gaps, 2**p, rounding_mode="floor").sum())) * (p + v_rel)
        for p in range(1, MAX_GAP_BITS + 1)
    )
    scheme = min(cand, key=lambda k: (cand[k], k))
    return float(cand[scheme] + book), scheme


def other_parameters(model: nn.Module) -> int:
    """Number of parameters that are not compressed (biases, BatchNorm affine, ...): stored as fp32."""
    compressed = {id(m.weight) for _, m in compressible_layers(model)}
    return sum(p.numel() for p in model.parameters() if id(p) not in compressed)


def compression_rate(model: nn.Module, accounting: str = "weights-only", bits=None) -> float:
    """Dense fp32 size divided by the compressed size, in one of four accountings.

    ``weights-only`` (the paper's, §5, the headline): 32 * sum_l n_l / sum_l nnz_l * log2(#distinct
    non-zeros_l) over Conv/Linear weights only - no index, codebook, bias (see :func:`weight_bits` for
    the one-value layer). ``with-biases``: numerator and denominator over all parameters, every
    uncompressed one (biases, BN) at 32 bits. ``with-index``: as ``with-biases`` but each layer stored
    with its positions and codebook (:func:`index_storage`). ``allocated``: sum_l nnz_l * b_l with the
    allocated ``bits``, weights only. ``bits`` (list, per layer) marks fp32 layers (prune-only) with
    any value >= 32. Buffers (BN running statistics) are not counted in any accounting.
    """
    if accounting not in ACCOUNTINGS:
        raise ValueError(f"accounting must be one of {ACCOUNTINGS}, got {accounting!r}")
    ws = [m.weight for _, m in compressible_layers(model)]
    if bits is None:
        if accounting == "allocated":
            raise ValueError("accounting='allocated' needs the per-layer bits")
        bits = [8] * len(ws)
    if len(bits) != len(ws):
        raise ValueError(f"need one bitwidth per layer: {len(bits)} for {len(ws)} layers")
    full = 32.0 * sum(w.numel() for w in ws)
    if accounting == "allocated":
        size = float(sum(int((w != 0).sum()) * b for w, b in zip(ws, bits)))
    elif accounting == "with-index":
        size = sum(index_storage(w, b >= 32)[0] for w, b in zip(ws, bits))
    else:
        size = sum(weight_bits(w, b >= 32) for w, b in zip(ws, bits))
    if accounting in ("with-biases", "with-index"):
        extra = 32.0 * other_parameters(model)
        full, size = full + extra, size + extra
    return full / size if size > 0 else float("inf")
