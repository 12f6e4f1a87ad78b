"""Threshold explorer (stage 07): pure helpers and the ipywidgets builder, driven headless."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from compresslib import viz  # noqa: E402
from compresslib.methods import cascade  # noqa: E402


@pytest.fixture(scope="module")
def tables():
    g = torch.Generator().manual_seed(0)
    zs = [torch.randn(300, 10, generator=g, dtype=torch.float64) * 3 for _ in range(2)]
    y = torch.randint(0, 10, (300,), generator=g)
    ths = np.linspace(0, 1, 21)
    return {
        "sum a=1.6": cascade.sweep(zs, [1_000_000, 9_000_000], ths, y, alpha=1.6, crop_macs=200_000),
        "replace": cascade.sweep(zs, [1_000_000, 9_000_000], ths, y, accumulate="replace", crop_macs=200_000),
    }


def _expected(table, th):
    row = table.iloc[int(np.argmin(np.abs(table["threshold"] - th)))]
    return (
        f"MACs {row.avg_macs / 1e6:.3f} M",
        f"accuracy {100 * row.accuracy:.2f} %",
        f"escalated {100 * row.escalated:.1f} %",
    )


def test_slider_moves_the_readout_to_the_right_row(tables):
    ui = viz.threshold_explorer(tables, ref_macs=9_200_000, plot=False)
    import ipywidgets as W

    assert isinstance(ui.slider, W.FloatSlider) and ui.slider.description == "threshold"
    assert isinstance(ui.readout, W.HTML) and isinstance(ui.rule, W.Dropdown)
    seen = set()
    for th in (0.0, 0.2, 0.55, 1.0):
        ui.slider.value = th
        text = ui.readout.value
        assert "MACs" in text and "accuracy" in text
        for part in _expected(tables["sum a=1.6"], th):
            assert part in text
        seen.add(text)
    assert len(seen) == 4
    ui.rule.value = "replace"
    for part in _expected(tables["replace"], 1.0):
        assert part in ui.readout.value
    assert "rule replace" in ui.readout.value


def test_explorer_with_plot_and_examples(tables):
    scores = np.linspace(0, 1, 300)
    images = np.random.default_rng(0).random((300, 8, 8))
    ui = viz.threshold_explorer(tables, scores=scores, images=images, n_examples=4)
    ui.slider.value = 0.3
    assert "threshold 0.300" in ui.readout.value
    fig = viz.explorer_figure(tables, (0.1, 0.5))
    assert len(fig.axes) == 2
    snap = viz.explorer_snapshot(tables, 0.3, "replace", scores, images, n_examples=4)
    assert len(snap.axes) == 5


def test_pure_helpers(tables):
    t = tables["sum a=1.6"]
    p = viz.operating_point(t, 0.26)
    assert p["threshold"] == pytest.approx(0.25)
    assert p == {k: float(t.iloc[5][k]) for k in ("threshold", "accuracy", "avg_macs", "escalated")}
    s = np.array([0.0, 0.1, 0.35, 0.2, 0.9, 0.39])
    assert viz.escalated_examples(s, 0.4, k=3).tolist() == [5, 2, 3]  # highest margins still < 0.4
    assert viz.escalated_examples(s, 1.0, k=10).tolist() == [4, 5, 2, 3, 1]  # margin 0 never (not > lo)
    html = viz.format_operating_point(p, ref_macs=2 * p["avg_macs"])
    assert "(50.0 % of large)" in html
    with pytest.raises(ValueError, match="columns"):
        viz.operating_point(pd.DataFrame({"threshold": [0.1]}), 0.1)
    with pytest.raises(ValueError, match="at least one"):
        viz.threshold_explorer({})
