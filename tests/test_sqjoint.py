"""Unit tests of compresslib.methods.sqjoint (spec sqjoint.md §9.4)."""

import itertools
import math

import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

from compresslib.methods import sqjoint as sq
from compresslib.models import create_model

ALEXNET = [23232, 307200, 663552, 884736, 589824, 37748736, 16777216, 4096000]


# ----------------------------------------------------------------------------- budgets / CR
def test_target_rate_lenet_caffe():
    m = create_model("lenet5_caffe")
    assert [w for w in sq._sizes(m)] == [500, 25000, 400000, 5000]
    S, k = sq.size_budget(m, 0.0054, 3)
    assert k == [3, 135, 2160, 27] and S == 6975
    assert round(sq.target_compression(m, 0.0054, 3), 2) == 1975.05


def test_target_rate_alexnet_budgets():
    with torch.device("meta"):
        alex = create_model("tv_alexnet")
    assert sq._sizes(alex) == ALEXNET and sum(ALEXNET) == 61090496
    got = [round(sq.target_compression(alex, p, b), 2) for p, b in [(0.12, 6), (0.10, 5), (0.08, 4)]]
    assert got == [44.44, 64.00, 100.00]


def test_compression_rate_accounting():
    m = nn.Sequential(nn.Linear(10, 10, bias=False), nn.Linear(10, 5, bias=False))
    with torch.no_grad():
        m[0].weight.zero_()
        m[0].weight.view(-1)[:8] = torch.tensor([1.0, -1, 2, 2, 3, 3, 3, 4])  # 5 distinct non-zeros
        m[1].weight.zero_()
        m[1].weight.view(-1)[[0, 7]] = torch.tensor([0.5, -0.5])  # 2 levels -> 1 bit
    full = 32 * 150
    size = 8 * math.log2(5) + 2 * 1
    assert sq.compression_rate(m) == pytest.approx(full / size)
    assert sq.compression_rate(m, "with-biases") == pytest.approx(full / size)  # no biases here
    assert sq.compression_rate(m, "allocated", bits=[3, 1]) == pytest.approx(full / (8 * 3 + 2 * 1))
    assert sq.compression_rate(m, bits=[32, 32]) == pytest.approx(full / (10 * 32))  # prune-only: fp32
    # layer 0: 8 contiguous non-zeros, 5 levels -> relative index p=1: 8 x (1 + ceil log2 6) = 32 bits
    #          (bitmask 100 + 8 x 3 = 124, dense 100 x 3 = 300) + codebook 5 x 32
    # layer 1: non-zeros at 0 and 7, 2 levels -> relative p=3: 2 x (3 + 2) = 10 (p=2: 1 filler, 3 x 4 = 12;
    #          bitmask 50 + 2 = 52) + codebook 2 x 32
    assert sq.index_storage(m[0].weight) == (32.0 + 160, "relative")
    assert sq.index_storage(m[1].weight) == (10.0 + 64, "relative")
    assert sq.compression_rate(m, "with-index") == pytest.approx(full / (192 + 74))
    # fp32 values (prune-only): no codebook, 32-bit values: relative 8 x 33 = 264 and p=3: 2 x 35 = 70
    assert sq.compression_rate(m, "with-index", bits=[32, 32]) == pytest.approx(full / (264 + 70))
    with pytest.raises(ValueError, match="accounting"):
        sq.compression_rate(m, "huffman")


def test_single_value_layer_and_biases_are_costed():
    m = nn.Linear(4, 4)  # 16 weights + 4 biases
    with torch.no_grad():
        m.weight.zero_()
        m.weight.view(-1)[[0, 5, 15]] = 0.7  # one shared value: log2(1) = 0 bits per weight
        m.bias.fill_(0.1)
    assert sq.weight_bits(m.weight) == 32.0  # its one-entry codebook, not 0 bits
    assert sq.compression_rate(m) == pytest.approx(32 * 16 / 32)
    assert sq.other_parameters(m) == 4
    assert sq.compression_rate(m, "with-biases") == pytest.approx((512 + 128) / (32 + 128))
    # gaps 0, 4, 9; 1 level: value codes 0 bits in the bitmask (16 bits), 1 bit (value or filler zero)
    # in the relative index: p=4 -> 3 x (4 + 1) = 15 < p=3 -> 4 x 4 = 16 = bitmask = dense 16 x 1
    assert sq.index_storage(m.weight) == (15.0 + 32, "relative")
    assert sq.compression_rate(m, "with-index") == pytest.approx(640 / (15 + 32 + 128))
    with torch.no_grad():
        m.weight.fill_(0.7)  # dense, one value: bitmask 16 + 0 bits beats relative 16 x 2 and dense codes 16
    assert sq.index_storage(m.weight) == (16.0 + 32, "bitmask")
    with torch.no_grad():
        m.weight.zero_()
    assert sq.weight_bits(m.weight) == 0.0 and sq.index_storage(m.weight) == (0.0, "empty")


def test_lenet_caffe_bias_view_matches_issue_numbers():
    m = create_model("lenet5_caffe")
    assert sq.other_parameters(m) == 580  # 20 + 50 + 500 + 10 fp32 biases = 18,560 bits
    S, k = sq.size_budget(m, 0.0054, 3)
    with torch.no_grad():  # k_l non-zeros per layer on 8 levels (conv1: its 3 weights on 3 levels)
        for (_, layer), kl in zip(sq.compressible_layers(m), k):
            layer.weight.zero_()
            layer.weight.view(-1)[:kl] = torch.arange(kl).remainder(8).float() + 1
    size = 3 * math.log2(3) + 3 * (135 + 2160 + 27)
    assert sq.compression_rate(m) == pytest.approx(32 * 430500 / size)  # ~1977x, the paper's view
    assert sq.compression_rate(m, "with-biases") == pytest.approx(32 * 431080 / (size + 18560))
    assert round(sq.compression_rate(m, "with-biases")) == 540  # the biases are 2.7x the weights' bits


# --------------------------------------------------------------------------------- knapsack
def test_knapsack_equal_bits_is_global_topk():
    g = torch.Generator().manual_seed(0)
    ws = [torch.randn(s, generator=g) for s in (50, 300, 1000)]
    flat = torch.cat([w.abs() for w in ws])
    for K in (1, 17, 400, 1350):
        cp = [w.clone() for w in ws]
        nnz = sq.knapsack_sparsify_(cp, [3, 3, 3], 3 * K)
        kept = torch.cat([w != 0 for w in cp])
        ref = torch.zeros_like(kept)
        ref[torch.topk(flat, K).indices] = True
        assert sum(nnz) == K and torch.equal(kept, ref)
        assert sum(3 * n for n in nnz) <= 3 * K


def test_knapsack_threshold_scales_with_sqrt_bits_and_respects_budget():
    g = torch.Generator().manual_seed(1)
    ws = [torch.randn(400, generator=g), torch.randn(400, generator=g)]
    bits = [2, 4]
    for S in (37.0, 500.0, 1203.5):
        cp = [w.clone() for w in ws]
        nnz = sq.knapsack_sparsify_(cp, bits, S)
        assert sum(b * n for b, n in zip(bits, nnz)) <= S
        kept = [(w.abs() / math.sqrt(b))[c != 0] for w, c, b in zip(ws, cp, bits)]
        dropped = [(w.abs() / math.sqrt(b))[c == 0] for w, c, b in zip(ws, cp, bits)]
        assert torch.cat(kept).min() >= torch.cat(dropped).max()  # one global w^2/b criterion
        # a weight twice as wide in the 4-bit layer needs sqrt(2) x the magnitude to survive
        assert (cp[1] != 0).sum() < (cp[0] != 0).sum()
        assert S - sum(b * n for b, n in zip(bits, nnz)) < max(bits)  # greedy fills the budget


# ---------------------------------------------------------------------------------- k-means
def _naive_kmeans(x, bits, iters):
    """Reference Lloyd with an explicit n x k distance matrix (same init, zero fixed)."""
    d = x[x.abs() >= sq.ZERO_EPS].double()
    free = torch.linspace(d.min(), d.max(), 2**bits, dtype=torch.float64)
    for _ in range(iters):
        c = torch.cat([free, torch.zeros(1, dtype=torch.float64)])
        a = (d[:, None] - c[None]).abs().argmin(1)
        for j in range(len(free)):
            if (a == j).any():
                free[j] = d[a == j].mean()
    return torch.sort(torch.cat([free, torch.zeros(1, dtype=torch.float64)])).values.float()


def test_zero_kmeans_matches_naive_lloyd():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3000, generator=g) * (torch.rand(3000, generator=g) > 0.3)
    for b in (1, 2, 3):
        fast = sq.zero_kmeans_1d(x, b, iters=7, tol=0.0)
        assert torch.allclose(fast, _naive_kmeans(x, b, 7), atol=1e-5)


@pytest.mark.parametrize("dist", ["normal", "laplace"])
def test_zero_kmeans_keeps_zero_and_distortion_falls_with_bits(dist):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(20000, generator=g)
    if dist == "laplace":
        x = torch.sign(x) * torch.empty(20000).exponential_(generator=g)
    x[::3] = 0.0
    prev = float("inf")
    for b in range(1, 9):
        cb = sq.zero_kmeans_1d(x, b)
        q = sq.kmeans_quantize(x, cb)
        assert (cb == 0).sum() == 1
        assert torch.unique(q[q != 0]).numel() <= 2**b
        assert torch.all(q[x == 0] == 0)
        D = float((x - q).pow(2).sum())
        assert D <= prev + 1e-6
        prev = D


def test_zero_kmeans_few_points_and_empty():
    x = torch.tensor([0.0, 0.3, -0.2, 0.0])
    cb = sq.zero_kmeans_1d(x, 3)
    assert torch.equal(sq.kmeans_quantize(x, cb), x)
    assert torch.equal(sq.zero_kmeans_1d(torch.zeros(5), 2), torch.zeros(1))
    with pytest.raises(ValueError, match="1..8"):
        sq.zero_kmeans_1d(x, 9)


# ------------------------------------------------------------------------------------- MCKP
def _brute(dist, cost, S):
    best = None
    for ch in itertools.product(*[range(len(d)) for d in dist]):
        if sum(c[j] for c, j in zip(cost, ch)) <= S + 1e-9:
            v = sum(d[j] for d, j in zip(dist, ch))
            best = v if best is None or v < best else best
    return best


def _random_instance(g, convex):
    L, nB = int(torch.randint(1, 5, (1,), generator=g)), int(torch.randint(2, 5, (1,), generator=g))
    nnz = torch.randint(1, 50, (L,), generator=g).tolist()
    cost = [[float(b * n) for b in range(1, nB + 1)] for n in nnz]
    dist = []
    for _ in range(L):
        if convex:  # decreasing gains per bit -> every item on the hull
            gains = torch.sort(torch.rand(nB - 1, generator=g) * 10, descending=True).values
            d = [100.0] + (100.0 - torch.cumsum(gains, 0)).tolist()
        else:
            d = (torch.rand(nB, generator=g) * 100).tolist()
        dist.append(d)
    return dist, cost


def test_mckp_greedy_feasible_and_near_brute_force():
    g = torch.Generator().manual_seed(4)
    for _ in range(200):
        dist, cost = _random_instance(g, convex=False)
        lo, hi = sum(min(c) for c in cost), sum(max(c) for c in cost)
        S = lo + float(torch.rand(1, generator=g)) * (hi - lo)
        ch = sq.mckp_greedy(dist, cost, S)
        assert sum(c[j] for c, j in zip(cost, ch)) <= S + 1e-9
        opt, got = _brute(dist, cost, S), sum(d[j] for d, j in zip(dist, ch))
        # LP bound: greedy loses at most one hull increment's gain
        max_gain = max(max(d) - min(d) for d in dist)
        assert got - opt <= max_gain + 1e-9


def _lower_hull(c, d):
    """Reference: items on the falling part of the lower convex hull of (cost, distortion) (monotone chain)."""
    pts = sorted({}.fromkeys(sorted(range(len(c)), key=lambda i: (c[i], d[i]))), key=lambda i: (c[i], d[i]))
    pts = [i for k, i in enumerate(pts) if k == 0 or c[i] != c[pts[k - 1]]]  # cheapest distortion per cost
    hull = []
    for i in pts:
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            if (c[b] - c[a]) * (d[i] - d[a]) - (d[b] - d[a]) * (c[i] - c[a]) <= 0:  # b not strictly below a-i
                hull.pop()
            else:
                break
        hull.append(i)
    k = 1
    while k < len(hull) and d[hull[k]] < d[hull[k - 1]]:
        k += 1
    return hull[:k]


def _breakpoint_budgets(dist, cost):
    """Budgets at which the LP relaxation is integral: the cheapest hull items plus the first k hull
    increments by distortion drop per bit - there the LP-greedy must equal the integer optimum."""
    hulls = [_lower_hull(c, d) for d, c in zip(dist, cost)]
    incs = sorted(
        ((d[h[p - 1]] - d[h[p]]) / (c[h[p]] - c[h[p - 1]]), c[h[p]] - c[h[p - 1]])
        for d, c, h in zip(dist, cost, hulls)
        for p in range(1, len(h))
    )[::-1]
    S = sum(c[h[0]] for c, h in zip(cost, hulls))
    out = [S]
    for _, dc in incs:
        S += dc
        out.append(S)
    return out


def test_mckp_greedy_equals_brute_force_at_breakpoints_of_nonconvex_instances():
    # hand instance: item 1 of layer 0 is off the hull (10 -> 9.9 -> 0); a solver that walks items in
    # order instead of hull increments stops at 9.9 where the optimum at S = 3 + 2 jumps to 0
    dist, cost = [[10.0, 9.9, 0.0], [4.0, 1.0]], [[1.0, 2.0, 3.0], [2.0, 4.0]]
    assert _breakpoint_budgets(dist, cost) == [3.0, 5.0, 7.0]
    for S, want in [(3.0, 14.0), (5.0, 4.0), (7.0, 1.0)]:
        ch = sq.mckp_greedy(dist, cost, S)
        assert sum(d[j] for d, j in zip(dist, ch)) == want == _brute(dist, cost, S)
    g = torch.Generator().manual_seed(8)
    n_checked = 0
    for _ in range(150):
        dist, cost = _random_instance(g, convex=False)
        for S in _breakpoint_budgets(dist, cost):
            ch = sq.mckp_greedy(dist, cost, S)
            assert sum(c[j] for c, j in zip(cost, ch)) <= S + 1e-9
            assert sum(d[j] for d, j in zip(dist, ch)) == pytest.approx(_brute(dist, cost, S), abs=1e-6)
            n_checked += 1
    assert n_checked > 300


def test_mckp_greedy_equals_brute_force_at_lp_breakpoints():
    g = torch.Generator().manual_seed(5)
    for _ in range(100):
        dist, cost = _random_instance(g, convex=True)
        incs = sorted(
            ((d[j - 1] - d[j]) / (c[j] - c[j - 1]), c[j] - c[j - 1])
            for d, c in zip(dist, cost)
            for j in range(1, len(d))
        )[::-1]
        S = sum(c[0] for c in cost)
        for _, dc in incs:
            S += dc
            ch = sq.mckp_greedy(dist, cost, S)
            assert sum(d[j] for d, j in zip(dist, ch)) == pytest.approx(_brute(dist, cost, S), abs=1e-6)


def test_mckp_zero_nnz_layer_and_budget_error():
    dist = [[5.0, 3.0, 2.0], [0.0, 0.0, 0.0]]
    cost = [[10.0, 20.0, 30.0], [0.0, 0.0, 0.0]]
    assert sq.mckp_greedy(dist, cost, 20.0)[0] == 1
    with pytest.raises(ValueError, match="smaller than the cheapest"):
        sq.mckp_greedy(dist, cost, 5.0)


def test_mckp_quantize_respects_budget():
    g = torch.Generator().manual_seed(6)
    Z = [torch.randn(200, generator=g) * (torch.rand(200, generator=g) < 0.2), torch.randn(3000, generator=g) * 0.1]
    nnz = [int((z != 0).sum()) for z in Z]
    S = 3.0 * sum(nnz)
    V, bits, books = sq.mckp_quantize(Z, nnz, S, range(1, 9))
    assert sum(b * n for b, n in zip(bits, nnz)) <= S
    for v, b in zip(V, bits):
        assert torch.unique(v[v != 0]).numel() <= 2**b


# ------------------------------------------------------------------------------------- ADMM
def test_prox_is_closed_form_argmin():
    g = torch.Generator().manual_seed(7)
    w = torch.randn(30, generator=g)
    st = sq.ADMMState([w], S=300, bit_budget=3, rho=0.7)
    st.V, st.Y = [torch.randn(30, generator=g)], [torch.randn(30, generator=g)]
    w_tilde, lr = w.clone(), 0.3
    st.prox_(lr)
    # gradient of (1/2lr)||W - W~||^2 + (rho/2)||W - (V - Y)||^2 vanishes at the prox output
    grad = (w - w_tilde) / lr + 0.7 * (w - (st.V[0] - st.Y[0]))
    assert grad.abs().max() < 1e-5


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(1, 6, 3)
        self.f1 = nn.Linear(6 * 6 * 6, 40)
        self.f2 = nn.Linear(40, 3)

    def forward(self, x):
        return self.f2(torch.relu(self.f1(torch.relu(self.c(x)).flatten(1))))


def _tiny_loader(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(96, 1, 8, 8, generator=g)
    y = (x.mean((1, 2, 3)) > 0).long() + (x[:, 0, 0, 0] > 1).long()
    return DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("mode,p,b", [("joint", 0.05, 3), ("fixed", 0.05, 3), ("prune", 0.05, 3), ("quantize", 1.0, 2)])
def test_size_never_exceeds_budget(mode, p, b):
    torch.manual_seed(0)
    m = _Tiny()
    S, _ = sq.size_budget(m, p, b)
    st, hist = sq.sqjoint_compress(
        m, _tiny_loader(), S, b, mode=mode, rho=0.5, lr=0.05, intervals=3, steps_per_interval=4, warmup_intervals=1
    )
    assert len(hist) == 3 and all(h["size_bits"] <= S for h in hist)
    sq.finetune(m, _tiny_loader(), st.bits, steps=6, mode=mode)
    sq.quantize_weights_(m, st.bits, mode)
    rows = sq.layer_report(m, st.bits, mode)
    assert sum(r["size_bits"] for r in rows) <= S + 1e-6  # measured size (nnz x log2 levels)
    assert sum(r["bits"] * r["nnz"] for r in rows) <= S + 1e-6  # allocated size
    assert (
        sq.compression_rate(m, bits=[32] * 3 if mode == "prune" else None)
        >= 32 * sum(r["numel"] for r in rows) / S - 1e-6
    )


def test_same_seed_same_result():
    outs = []
    for _ in range(2):
        torch.manual_seed(0)
        m = _Tiny()
        st, _ = sq.sqjoint_compress(
            m, _tiny_loader(), *sq.size_budget(m, 0.1, 3)[:1], 3, intervals=2, steps_per_interval=3, warmup_intervals=1
        )
        outs.append((st.bits, [w.detach().clone() for w in st.W]))
    assert outs[0][0] == outs[1][0] and all(torch.equal(a, b) for a, b in zip(outs[0][1], outs[1][1]))


# ------------------------------------------------------------------------------- bad input
def test_bad_inputs_raise_clear_errors():
    m = _Tiny()
    with pytest.raises(ValueError, match="nnz_budget"):
        sq.size_budget(m, 0.0, 3)
    with pytest.raises(ValueError, match="nnz_budget"):
        sq.size_budget(m, 1.5, 3)
    with pytest.raises(ValueError, match="bit_budget"):
        sq.size_budget(m, 0.1, 9)
    with pytest.raises(ValueError, match="bit_budget"):
        sq.size_budget(m, 0.1, 0.5)
    with pytest.raises(ValueError, match="1..8"):
        sq.ADMMState([p for p in m.parameters()], 1000, 3, 0.5, bit_range=[0, 1, 2])
    with pytest.raises(ValueError, match="smaller than one"):
        sq.ADMMState([l.weight for l in (m.c, m.f1, m.f2)], 2, 1, 0.5)
    with pytest.raises(ValueError, match="no Conv2d/Linear"):
        sq.size_budget(nn.Sequential(nn.ReLU(), nn.BatchNorm2d(3)), 0.1, 3)
    with pytest.raises(ValueError, match="mode"):
        sq.ADMMState([m.c.weight], 1000, 3, 0.5, mode="huffman")
    with pytest.raises(ValueError, match="cannot exceed 32x"):
        sq.sqjoint_compress(m, _tiny_loader(), 100.0, 3, mode="quantize")


# ------------------------------------------------------------------------- progressive chain
def test_progressive_chain_stays_within_budgets_and_warm_starts(monkeypatch):
    torch.manual_seed(0)
    m = _Tiny()
    budgets = [(sq.size_budget(m, p, 3)[0], 3) for p in (0.2, 0.1, 0.05)]
    entry, after = [], []
    real = sq.sqjoint_compress

    def spy(model, *a, **k):  # weights each stage starts from
        entry.append([w.detach().clone() for w in (model.c.weight, model.f1.weight, model.f2.weight)])
        return real(model, *a, **k)

    monkeypatch.setattr(sq, "sqjoint_compress", spy)
    dense = [w.detach().clone() for w in (m.c.weight, m.f1.weight, m.f2.weight)]
    out = sq.progressive_compress(
        m,
        _tiny_loader(),
        budgets,
        rho=0.5,
        lr=0.05,
        intervals=2,
        steps_per_interval=3,
        warmup_intervals=1,
        on_stage=lambda k, net, st, h: after.append([w.detach().clone() for w in st.W]),
    )
    assert len(out) == len(entry) == len(after) == 3
    assert all(torch.equal(a, b) for a, b in zip(entry[0], dense))  # stage 1 starts dense
    for k in (1, 2):  # stage k starts at stage k-1's W
        assert all(torch.equal(a, b) for a, b in zip(entry[k], after[k - 1]))
        assert sum(int((w != 0).sum()) for w in entry[k]) < sum(w.numel() for w in dense)  # ... which is sparse
    for (S, _), (st, hist) in zip(budgets, out):
        assert st.allocated_size() <= S and all(h["size_bits"] <= S for h in hist)
        assert sum(b * int((w != 0).sum()) for b, w in zip(st.bits, st.W)) <= S
    assert all(p.is_contiguous() for p in m.parameters())  # channels_last only inside the loop


def test_progressive_chain_and_hparams_bad_input():
    m = _Tiny()
    S1, S2 = sq.size_budget(m, 0.05, 3)[0], sq.size_budget(m, 0.2, 3)[0]
    with pytest.raises(ValueError, match="tighten"):
        sq.progressive_compress(m, _tiny_loader(), [(S1, 3), (S2, 3)])
    with pytest.raises(ValueError, match="at least one"):
        sq.check_chain([])
    with pytest.raises(ValueError, match="cannot exceed 32x"):  # checked for every stage before any work
        sq.progressive_compress(m, _tiny_loader(), [(1e6, 3), (100.0, 3)], mode="quantize")
    before = [p.detach().clone() for p in m.parameters()]
    for kw, msg in [
        (dict(lr=0.0), "learning rate"),
        (dict(momentum=1.0), "momentum"),
        (dict(rho=0.0), "rho"),
        (dict(weight_decay=-1.0), "weight_decay"),
        (dict(intervals=2, warmup_intervals=3), "warm-up"),
        (dict(steps_per_interval=0), "steps_per_interval"),
    ]:
        with pytest.raises(ValueError, match=msg):
            sq.sqjoint_compress(m, _tiny_loader(), S2, 3, **kw)
    with pytest.raises(ValueError, match="one bitwidth per layer"):
        sq.finetune(m, _tiny_loader(), [3, 3], steps=2)
    assert all(torch.equal(a, b) for a, b in zip(before, m.parameters()))  # nothing trained


# ------------------------------------------------------------- model and channels-last layout
def test_lenet5_caffe_is_the_papers_caffelenet():
    m = create_model("lenet5_caffe")
    kinds = [type(x).__name__ for x in m.features] + [type(x).__name__ for x in m.classifier]
    assert kinds == ["Conv2d", "MaxPool2d", "Conv2d", "MaxPool2d", "Flatten", "Linear", "ReLU", "Linear"]
    assert (m.classifier[1].in_features, m.classifier[1].out_features) == (800, 500)
    assert m(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    relu = create_model("lenet5_caffe_relu")  # the former variant, ReLU after each conv
    assert [type(x).__name__ for x in relu.features].count("ReLU") == 2


class _ViewNet(nn.Module):
    """Like the original CaffeLeNet's forward: ``.view`` on a conv/pool output."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(1, 4, 3)
        self.p = nn.MaxPool2d(2)
        self.f = nn.Linear(4 * 3 * 3, 3)

    def forward(self, x):
        x = self.p(self.c(x))
        return self.f(x.view(x.size(0), 4 * 3 * 3))


def test_fast_layout_is_safe_for_view_models():
    torch.manual_seed(0)
    x = torch.randn(5, 1, 8, 8)
    m = _ViewNet()
    with pytest.raises(RuntimeError, match="view size"):  # the failure mode the probe guards against
        copy_m = _ViewNet()
        copy_m.to(memory_format=torch.channels_last)(x)
    with sq._FastLayout(m, x) as lay:
        assert not lay.active and "view size" in lay.reason
        assert m.c.weight.is_contiguous()
    with sq._FastLayout(_Tiny(), torch.randn(5, 1, 8, 8)) as lay:
        assert lay.active and lay.model.c.weight.is_contiguous(memory_format=torch.channels_last)
    assert lay.model.c.weight.is_contiguous()
    caffe = create_model("lenet5_caffe")
    with sq._FastLayout(caffe, torch.randn(2, 1, 28, 28)) as lay:  # the speed-up still applies here
        assert lay.active
    # ADMM and finetune run on the .view model (contiguous throughout), deterministically
    outs = []
    for _ in range(2):
        torch.manual_seed(0)
        net = _ViewNet()
        S, _ = sq.size_budget(net, 0.2, 3)
        st, hist = sq.sqjoint_compress(net, _tiny_loader(), S, 3, intervals=2, steps_per_interval=3, warmup_intervals=1)
        sq.finetune(net, _tiny_loader(), st.bits, steps=4)
        assert all(h["size_bits"] <= S for h in hist)
        outs.append([p.detach().clone() for p in net.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*outs))
