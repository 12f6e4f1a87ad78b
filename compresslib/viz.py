"""Pure plotting helpers and widget builders (testable without a kernel).

Notebooks call these with a DataFrame and an Axes; nothing here reads globals or files.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def pareto_front(df: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Rows not dominated in (lower ``x`` is better, higher ``y`` is better), sorted by ``x``."""
    d = df.dropna(subset=[x, y]).sort_values([x, y], ascending=[True, False])
    keep, best = [], -np.inf
    for i, v in zip(d.index, d[y]):
        if v > best:
            keep.append(i)
            best = v
    return d.loc[keep]


def label_axes(ax, *, ref: float | None = None, ref_label: str | None = None, legend: dict | None = None, **labels):
    """Finish a one-Axes figure: a dashed black reference line at ``y = ref`` (the dense model, the budget)
    named ``ref_label``, ``ax.set(**labels)`` (xlabel, ylabel, title, ylim...), a legend with the keywords
    ``legend`` (default ``fontsize=8``) and ``tight_layout`` of the figure."""
    if ref is not None:
        ax.axhline(ref, color="k", ls="--", lw=1, label=ref_label)
    ax.set(**labels)
    ax.legend(**(dict(fontsize=8) if legend is None else legend))
    ax.figure.tight_layout()
    return ax


def plot_tradeoff(
    ax,
    df: pd.DataFrame,
    x: str,
    y: str,
    label: str | None = None,
    hue: str | None = None,
    front: bool = True,
    logx: bool = False,
    xlabel: str | None = None,
    ylabel: str | None = None,
    **kw,
):
    """Scatter ``y`` against ``x`` (per ``hue`` group) and draw the Pareto front as a step line."""
    groups = df.groupby(hue) if hue else [(label, df)]
    for name, g in groups:
        ax.scatter(g[x], g[y], label=name, **kw)
    if front and len(df):
        f = pareto_front(df, x, y)
        ax.step(f[x], f[y], where="post", color="k", lw=1, alpha=0.6, label="Pareto front")
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel or x)
    ax.set_ylabel(ylabel or y)
    ax.grid(alpha=0.3)
    if hue or label:
        ax.legend(fontsize=8)
    return ax


# ---- EdgeCompress threshold explorer (stage 07): pure functions + an ipywidgets builder ----------
# Precompute, then explore: everything below reads the saved sweep tables (threshold, accuracy,
# avg_macs, escalated) and the small model's per-image confidence; nothing retrains or re-runs models.


def operating_point(table: pd.DataFrame, threshold: float) -> dict:
    """The sweep row whose threshold is nearest to ``threshold`` (ties -> the smaller threshold)."""
    need = {"threshold", "accuracy", "avg_macs", "escalated"}
    if not need <= set(table.columns):
        raise ValueError(f"sweep table needs columns {sorted(need)}, got {list(table.columns)}")
    if table.empty:
        raise ValueError("sweep table is empty")
    d = np.abs(table["threshold"].to_numpy(dtype=float) - float(threshold))
    row = table.iloc[int(np.flatnonzero(d == d.min())[0])]
    return {k: float(row[k]) for k in ("threshold", "accuracy", "avg_macs", "escalated")}


def format_operating_point(point: dict, ref_macs: float | None = None, rule: str | None = None) -> str:
    """One-line HTML read-out: threshold, average MACs (and % of ``ref_macs``), accuracy, escalated."""
    macs = f"MACs {point['avg_macs'] / 1e6:.3f} M"
    if ref_macs:
        macs += f" ({100 * point['avg_macs'] / ref_macs:.1f} % of large)"
    head = f"rule {rule} · " if rule else ""
    return (
        f"<b>{head}threshold {point['threshold']:.3f}</b> · {macs} · "
        f"accuracy {100 * point['accuracy']:.2f} % · escalated {100 * point['escalated']:.1f} %"
    )


def escalated_examples(scores, threshold: float, lo: float = 0.0, k: int = 6) -> np.ndarray:
    """Indices of up to ``k`` images escalated at (lo, threshold): those with the highest confidence
    still below the threshold, i.e. the ones the slider added last (closed at threshold 1)."""
    s = np.asarray(scores, dtype=float)
    mask = (s > lo) & ((s < threshold) | (threshold >= 1.0))
    idx = np.flatnonzero(mask)
    return idx[np.argsort(-s[idx], kind="stable")][:k]


def plot_threshold_curve(
    ax,
    tables: dict,
    threshold: float | None = None,
    rule: str | None = None,
    static: pd.DataFrame | None = None,
    oracle: dict | None = None,
):
    """Accuracy vs average MACs of every sweep table (one line per accumulation rule), the static
    models (``static``: columns name, macs, accuracy), the oracle point and the operating point."""
    for name, t in tables.items():
        ax.plot(
            t["avg_macs"] / 1e6,
            100 * t["accuracy"],
            "-",
            lw=2 if name == rule else 1,
            alpha=1.0 if name == rule or rule is None else 0.5,
            label=f"cascade ({name})",
        )
    if static is not None and len(static):
        ax.scatter(static["macs"] / 1e6, 100 * static["accuracy"], marker="s", c="gray", s=25, label="static models")
    if oracle is not None:
        ax.scatter([oracle["avg_macs"] / 1e6], [100 * oracle["accuracy"]], marker="*", c="k", s=80, label="oracle gate")
    if threshold is not None:
        p = operating_point(tables[rule or next(iter(tables))], threshold)
        ax.scatter(
            [p["avg_macs"] / 1e6],
            [100 * p["accuracy"]],
            s=90,
            facecolors="none",
            edgecolors="r",
            lw=2,
            label=f"threshold {p['threshold']:.2f}",
            zorder=5,
        )
    ax.set_xlabel("average MACs per image (M, cropper included)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return ax


def explorer_figure(tables: dict, thresholds=(0.05, 0.2, 0.5), rule: str | None = None, static=None, oracle=None):
    """Static stand-in for the slider (papermill/CI): the curve with a few operating points marked
    and the fraction escalated against the threshold."""
    import matplotlib.pyplot as plt

    rule = rule or next(iter(tables))
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    plot_threshold_curve(a1, tables, None, rule, static, oracle)
    t = tables[rule]
    for th in thresholds:
        p = operating_point(t, th)
        a1.annotate(
            f"hi={p['threshold']:.2f}",
            (p["avg_macs"] / 1e6, 100 * p["accuracy"]),
            fontsize=7,
            xytext=(5, -12),
            textcoords="offset points",
        )
        a1.scatter([p["avg_macs"] / 1e6], [100 * p["accuracy"]], s=60, facecolors="none", edgecolors="r")
    a2.plot(t["threshold"], 100 * t["escalated"], "-o", ms=2)
    a2.set_xlabel("threshold hi (softmax margin)")
    a2.set_ylabel("images escalated to the large model (%)")
    a2.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def explorer_snapshot(
    tables: dict,
    threshold: float,
    rule: str | None = None,
    scores=None,
    images=None,
    lo: float = 0.0,
    static=None,
    oracle=None,
    n_examples: int = 6,
):
    """One frame of the explorer: the curve with the operating point and, if ``scores``/``images``
    are given, the escalated examples nearest the threshold."""
    import matplotlib.pyplot as plt

    show = images is not None and scores is not None and n_examples > 0
    cols = max(1, (n_examples + 1) // 2)
    fig = plt.figure(figsize=(11 if show else 6, 4))
    gs = fig.add_gridspec(2, 1 + cols if show else 1, width_ratios=[cols] + [1] * cols if show else None)
    plot_threshold_curve(fig.add_subplot(gs[:, 0]), tables, threshold, rule, static, oracle)
    if show:
        for j, i in enumerate(escalated_examples(scores, threshold, lo, n_examples)):
            a = fig.add_subplot(gs[j // cols, 1 + j % cols])
            img = np.asarray(images[i]).squeeze()
            if img.ndim == 3:  # (C, H, W) colour crop: channels last, min-max scaled for display
                img = img.transpose(1, 2, 0)
                img = (img - img.min()) / max(float(img.max() - img.min()), 1e-12)
            a.imshow(img, cmap="gray")
            a.set_title(f"margin {float(scores[i]):.2f}", fontsize=7)
            a.axis("off")
    fig.tight_layout()
    return fig


def threshold_explorer(
    tables: dict,
    scores=None,
    images=None,
    lo: float = 0.0,
    ref_macs: float | None = None,
    static=None,
    oracle=None,
    n_examples: int = 6,
    plot: bool = True,
):
    """ipywidgets explorer: FloatSlider "threshold" + Dropdown "accumulation" -> HTML read-out
    (MACs, accuracy, escalated) + curve + the escalated examples. Returns a VBox with attributes
    ``slider``, ``rule``, ``readout``, ``output`` and ``update()`` (called on every change)."""
    import ipywidgets as W

    if not tables:
        raise ValueError("need at least one sweep table")
    for t in tables.values():
        operating_point(t, 0.0)  # validates columns
    first = tables[next(iter(tables))]
    ths = np.sort(first["threshold"].to_numpy(dtype=float))
    step = float(np.round(np.min(np.diff(ths)), 6)) if len(ths) > 1 else 0.01
    slider = W.FloatSlider(
        value=float(ths[len(ths) // 2]),
        min=float(ths[0]),
        max=float(ths[-1]),
        step=step,
        description="threshold",
        continuous_update=False,
        readout_format=".3f",
    )
    rule = W.Dropdown(options=list(tables), value=next(iter(tables)), description="accumulation")
    readout = W.HTML()
    output = W.Output()
    box = W.VBox([W.HBox([slider, rule]), readout, output])

    def update(*_):
        p = operating_point(tables[rule.value], slider.value)
        readout.value = format_operating_point(p, ref_macs, rule.value)
        if not plot:
            return
        import matplotlib.pyplot as plt

        with output:
            output.clear_output(wait=True)
            fig = explorer_snapshot(tables, p["threshold"], rule.value, scores, images, lo, static, oracle, n_examples)
            plt.show()
            plt.close(fig)

    slider.observe(update, names="value")
    rule.observe(update, names="value")
    box.slider, box.rule, box.readout, box.output, box.update = slider, rule, readout, output, update
    update()
    return box
