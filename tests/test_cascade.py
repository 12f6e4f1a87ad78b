"""EdgeCompress cascade: exact MAC accounting, cached sweep == live cascade, curve endpoints, errors;
plus the compound-shrinkable ResNet it cascades."""

from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn as nn

import compresslib
from compresslib import cost
from compresslib.methods import cascade
from compresslib.models import create_model, list_models
from compresslib.models.shrinkable import ShrinkableResNet, make_divisible, shrink_depths

compresslib.set_threads()


class Lookup(nn.Module):
    """'Model' returning stored logits for the image whose pixel [0, 0, 0] holds its index."""

    def __init__(self, table):
        super().__init__()
        self.register_buffer("table", torch.as_tensor(table, dtype=torch.float64))
        self.lin = nn.Linear(1, 1)  # something for cost counters to see

    def forward(self, x):
        return self.table[x[:, 0, 0, 0].round().long()]


def _random_case(n=400, c=10, k=2, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    zs = [torch.randn(n, c, generator=g, dtype=torch.float64) * scale for _ in range(k)]
    y = torch.randint(0, c, (n,), generator=g)
    x = torch.zeros(n, 1, 2, 2)
    x[:, 0, 0, 0] = torch.arange(n, dtype=torch.float32)
    return zs, y, x


def _margin_np(z):
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    top = np.sort(p, 1)[:, ::-1]
    return top[:, 0] - top[:, 1]


# ---- MAC accounting -----------------------------------------------------------------------------


def test_average_macs_equal_closed_form_exactly_and_hook_count():
    torch.manual_seed(0)
    small = ShrinkableResNet(depths=(1, 1, 1), width_mult=0.5, resolution=12, stem_width=8, planes=(8, 8, 16))
    large = ShrinkableResNet(depths=(1, 1, 1), width_mult=1.0, resolution=20, stem_width=8, planes=(8, 16, 16))
    x = torch.randn(60, 1, 32, 32)
    boxes = torch.tensor([[0, 0, 16, 16], [8, 8, 32, 32], [4, 0, 20, 16]]).repeat(20, 1)
    crop_macs = 12345
    # a wide open threshold so a real fraction of images is escalated (random init: low margins)
    hi = float(np.quantile(_margin_np(cascade.model_logits(small, x, boxes, 12).numpy()), 0.4))
    casc = cascade.Cascade([small, large], [12, 20], lo=0.0, hi=hi, alpha=1.6, crop_macs=crop_macs)
    executed = []

    def hook(m, i, o):
        executed.append(
            o[0].numel()
            * (
                m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
                if isinstance(m, nn.Conv2d)
                else m.in_features
            )
            * o.shape[0]
        )

    hooks = [
        m.register_forward_hook(hook)
        for net in (small, large)
        for m in net.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    res = casc.run(x, boxes)
    for h in hooks:
        h.remove()
    # rho from the small model alone, independently of the cascade's own bookkeeping
    s = _margin_np(cascade.model_logits(small, x, boxes, 12).numpy())
    n1 = int(((s > 0.0) & (s < hi)).sum())
    assert 0 < n1 < len(x)
    m0, m1 = cost.total_macs(small, (1, 12, 12)), cost.total_macs(large, (1, 20, 20))
    assert casc.macs_per_stage == [m0, m1]
    assert res.stage_counts == [len(x), n1]
    assert sum(executed) == res.total_macs  # what actually ran
    assert crop_macs + Fraction(res.total_macs, len(x)) == crop_macs + m0 + Fraction(n1, len(x)) * m1
    assert res.avg_macs == pytest.approx(casc.closed_form_macs(n1 / len(x)), rel=1e-15)
    assert res.escalated == n1 / len(x)


# ---- cached sweep == live cascade ---------------------------------------------------------------


@pytest.mark.parametrize(
    "k,score,rule,lo",
    [
        (2, "margin", "sum", 0.0),
        (2, "maxprob", "replace", 0.3),
        (3, "entropy", "sum", 0.05),
        (3, "margin", "replace", 0.0),
    ],
)
def test_cached_sweep_equals_running_the_cascade(k, score, rule, lo):
    zs, y, x = _random_case(k=k, seed=k)
    macs = [1000 * (j + 1) ** 3 + 7 for j in range(k)]
    ths = [t for t in np.linspace(0, 1, 21) if t > lo]
    table = cascade.sweep(zs, macs, ths, y, lo=lo, alpha=1.6, score=score, accumulate=rule, crop_macs=55)
    for row in table.itertuples():
        casc = cascade.Cascade(
            [Lookup(z) for z in zs],
            [2] * k,
            lo=lo,
            hi=row.threshold,
            alpha=1.6,
            score=score,
            accumulate=rule,
            crop_macs=55,
            macs_per_stage=macs,
        )
        res = casc.run(x, targets=y)
        assert res.accuracy == row.accuracy
        assert res.avg_macs == row.avg_macs
        assert res.escalated == row.escalated
        assert res.stage_counts == [getattr(row, f"images_stage{j}") for j in range(k)]


def test_curve_monotone_starts_small_ends_both():
    zs, y, _ = _random_case(seed=3)
    macs = [50, 900]
    table = cascade.sweep(zs, macs, np.linspace(0, 1, 51), y, crop_macs=10)
    assert np.all(np.diff(table["avg_macs"]) >= 0) and np.all(np.diff(table["escalated"]) >= 0)
    first, last = table.iloc[0], table.iloc[-1]
    assert first.threshold == 0 and first.escalated == 0 and first.avg_macs == 10 + 50
    assert first.accuracy == pytest.approx(float((zs[0].argmax(1) == y).double().mean()))
    assert last.threshold == 1 and last.escalated == 1 and last.avg_macs == 10 + 50 + 900
    both = (zs[0] + 1.6 * zs[1]).argmax(1)
    assert last.accuracy == pytest.approx(float((both == y).double().mean()))
    assert 0 < table.iloc[25].escalated < 1


def test_oracle_is_an_upper_bound_and_escalates_exactly_the_errors():
    zs, y, _ = _random_case(seed=5)
    o = cascade.oracle(zs, [1, 10], y, alpha=1.6)
    assert o["escalated"] == float((zs[0].argmax(1) != y).double().mean())
    table = cascade.sweep(zs, [1, 10], np.linspace(0, 1, 21), y)
    assert o["accuracy"] >= table["accuracy"].max()


def test_confidence_scores_known_values():
    z = torch.log(torch.tensor([[0.7, 0.2, 0.1], [1 / 3, 1 / 3, 1 / 3]]))
    assert cascade.confidence(z, "margin").tolist() == pytest.approx([0.5, 0.0])
    assert cascade.confidence(z, "maxprob").tolist() == pytest.approx([0.7, 1 / 3])
    assert cascade.confidence(z, "entropy")[1].item() == pytest.approx(0.0, abs=1e-12)
    assert cascade.escalate(z, 0.0, 0.6).tolist() == [True, False]  # exact tie (margin 0) is not > lo


def test_cheapest_at_accuracy():
    zs, y, _ = _random_case(seed=7)
    t = cascade.sweep(zs, [1, 10], np.linspace(0, 1, 11), y)
    row = cascade.cheapest_at_accuracy(t, float(t["accuracy"].max()), tol=0.0)
    assert (
        row["accuracy"] == t["accuracy"].max() and row["avg_macs"] == t[t.accuracy == t.accuracy.max()].avg_macs.min()
    )
    assert cascade.cheapest_at_accuracy(t, 2.0) is None


# ---- bad input ----------------------------------------------------------------------------------


def test_bad_inputs_raise_clear_errors():
    zs, y, _ = _random_case(n=20)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        cascade.check_thresholds(0.0, 1.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        cascade.check_thresholds(-0.1, 0.5)
    with pytest.raises(ValueError, match="lo < hi"):
        cascade.check_thresholds(0.5, 0.5)
    with pytest.raises(ValueError, match="lo < hi"):
        cascade.sweep(zs, [1, 2], [0.2], y, lo=0.3)
    with pytest.raises(ValueError, match="empty model list"):
        cascade.Cascade([], [])
    a = ShrinkableResNet(num_classes=10, depths=(1, 1, 1), planes=(4, 4, 4), stem_width=4)
    b = ShrinkableResNet(num_classes=5, depths=(1, 1, 1), planes=(4, 4, 4), stem_width=4)
    with pytest.raises(ValueError, match="disagree on the number of classes"):
        cascade.Cascade([a, b], [16, 16], macs_per_stage=[1, 1])
    with pytest.raises(ValueError, match="one resolution per model"):
        cascade.Cascade([a], [16, 16])
    with pytest.raises(ValueError, match="unknown score"):
        cascade.Cascade([a], [16], score="energy", macs_per_stage=[1])
    with pytest.raises(ValueError, match="same classes"):
        cascade.sweep([zs[0], zs[1][:, :5]], [1, 2], [0.2], y)
    with pytest.raises(ValueError, match="one MAC count per stage"):
        cascade.sweep(zs, [1], [0.2], y)
    with pytest.raises(ValueError, match="alpha"):
        cascade.sweep(zs, [1, 2], [0.2], y, alpha=-1)


# ---- compound-shrinkable ResNet ----------------------------------------------------------------


def test_make_divisible_reproduces_the_released_configs():
    # width_per_group = make_divisible(64 w) and resolution = make_divisible(224 r) of EC-Static-1..6
    assert [make_divisible(64 * w) for w in (0.5, 0.55, 0.6, 0.8, 1.0)] == [32, 36, 40, 52, 64]
    assert [make_divisible(224 * r) for r in (0.821, 0.857, 0.928, 1.0)] == [184, 192, 208, 224]
    assert make_divisible(1.0) == 4 and shrink_depths((3, 4, 6, 3), 0.5) == (2, 2, 3, 2)


def test_shrinking_keeps_outer_widths_and_cuts_macs():
    full = create_model("shrinkable_resnet")
    thin = create_model("shrinkable_resnet", width_mult=0.5, depths=(1, 1, 1))
    assert thin.inner_widths == (8, 16, 32) and full.inner_widths == (16, 32, 64)
    assert thin.fc.in_features == full.fc.in_features == 256
    m_full, m_thin = cost.total_macs(full, (1, 32, 32)), cost.total_macs(thin, (1, 32, 32))
    assert m_thin < m_full / 2 and cost.total_macs(thin, (1, 16, 16)) < m_thin / 3
    assert full(torch.randn(2, 1, 24, 24)).shape == (2, 10)
    assert {"shrinkable_resnet", "box_predictor"} <= set(list_models())
    with pytest.raises(ValueError, match="depth"):
        ShrinkableResNet(depths=(1, 0, 1))


# ---- choices on the validation split ------------------------------------------------------------


def _table(rows):
    import pandas as pd

    return pd.DataFrame([{"threshold": t, "accuracy": a, "avg_macs": m, "escalated": e} for t, a, m, e in rows])


def test_choose_threshold_cheapest_within_tolerance_else_most_accurate():
    t = _table(
        [(0.0, 0.90, 10, 0.0), (0.1, 0.93, 12, 0.1), (0.2, 0.945, 14, 0.2), (0.3, 0.95, 16, 0.3), (1.0, 0.95, 30, 1.0)]
    )
    row, ok = cascade.choose_threshold(t, 0.95, tol=0.005)
    assert ok and row["threshold"] == 0.2 and row["avg_macs"] == 14  # 0.945 >= 0.95 - 0.005, cheapest such
    row, ok = cascade.choose_threshold(t, 0.95, tol=0.0)
    assert ok and row["threshold"] == 0.3  # ties on accuracy -> fewer MACs
    row, ok = cascade.choose_threshold(t, 0.99, tol=0.005)
    assert not ok and row["threshold"] == 0.3 and row["accuracy"] == 0.95  # unreachable: most accurate, cheapest
    with pytest.raises(ValueError, match="tol >= 0"):
        cascade.choose_threshold(t, 0.9, tol=-0.1)
    with pytest.raises(ValueError, match="non-empty"):
        cascade.choose_threshold(t.iloc[:0], 0.9)


def test_select_cascade_prefers_the_cheapest_candidate_that_reaches_the_target():
    a = _table([(0.0, 0.80, 5, 0.0), (0.5, 0.95, 20, 0.6)])  # reaches at 20 MACs
    b = _table([(0.0, 0.90, 8, 0.0), (0.5, 0.95, 15, 0.3)])  # reaches at 15 MACs -> chosen
    c = _table([(0.0, 0.70, 2, 0.0), (0.5, 0.94, 9, 0.7)])  # never reaches 0.95 - 0.005
    name, row, ok = cascade.select_cascade({"a": a, "b": b, "c": c}, 0.95, 0.005)
    assert (name, row["threshold"], row["avg_macs"], ok) == ("b", 0.5, 15, True)
    name, row, ok = cascade.select_cascade({"a": a, "c": c}, 0.99, 0.005)  # none reaches: most accurate point
    assert (name, row["accuracy"], ok) == ("a", 0.95, False)
    with pytest.raises(ValueError, match="at least one candidate"):
        cascade.select_cascade({}, 0.9)
