"""One table for every method: the same cost columns for every compressed model.

Every candidate (one trained model of one method, setting and seed) is reduced to the same
columns by :func:`model_costs`:

* ``dense_macs``: Conv2d/Linear MACs of the executed architecture (``cost.layer_table``);
* ``effective_macs``: Σ exec·MACs·density — non-zero weights only, and for dynamic models the
  expected executions per image (a cascade's escalation rate, CAMP's 4-bit fraction ρ);
* ``size_bits_weights``: Σ nnz·b (non-zero conv/linear weights at their bit-width b; no bias/BN);
* ``size_bits_with_index``: + the positions of the non-zeros, the cheaper of a 1-bit-per-weight
  bitmap and p-bit relative gaps (Deep Compression), per layer (dense layers pay nothing), + the
  fp32 codebook (32 bits per distinct value) of every layer whose bits were inferred as a codebook;
* ``bitops``: Σ exec·nnz_macs·b_w·b_a;
* ``energy_analytic``: the ECC analytic (Eyeriss-style) model ``energy.analytic.model_energy``,
  exec-weighted per layer (bit-width agnostic: it counts memory accesses and MACs);
* ``micronet_score``: ``micronet.score_model`` (official mode, ImageNet reference);
* ``latency_ms``: measured median of the deployable form, with ``latency_threads``/``latency_batch``
  and ``deploy_form`` (``slimmed`` = physically smaller; ``dense-executed`` = masks and fake
  quantization run on dense fp32 kernels, so the latency is the dense one).

``weight_bits`` of a loaded model is inferred from its values (:func:`infer_weight_bits`):
b = ⌈log2 K⌉ for K ≤ 256 distinct non-zero values when codes + codebook beat fp32 (codebook /
ternary layers), else 32.

The candidates are the ``board`` rows of the stages' model manifests (``models.json``, see
:mod:`compresslib.manifest`), rebuilt by :mod:`compresslib.rebuild`; no code here knows a stage's files.
Add a method to the board by writing its rows (``results.record_model(..., board={...})``).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from . import cost

from .manifest import Candidate  # noqa: F401  (re-exported: a board row as one trained model)
from .rebuild import candidates as collect_all  # noqa: F401  (every finished stage's board rows)

COST_COLUMNS = [
    "dense_macs",
    "effective_macs",
    "size_bits_weights",
    "size_bits_with_index",
    "bitops",
    "energy_analytic",
    "micronet_score",
    "latency_ms",
]
KEYS = ["method", "setting"]
COLUMNS = (
    KEYS
    + ["base_model", "dataset", "n_seeds", "accuracy", "accuracy_std"]
    + COST_COLUMNS
    + ["latency_threads", "latency_batch", "deploy_form", "source"]
)


def _codebook(w: torch.Tensor) -> tuple[int, int]:
    """(K distinct non-zero values, n non-zeros) of a weight tensor (K > 256 reported as 257)."""
    nz = w.detach().reshape(-1)
    nz = nz[nz != 0]
    k = torch.unique(nz).numel() if nz.numel() <= 10_000_000 else 257
    return k, nz.numel()


def infer_weight_bits(model: nn.Module, max_levels: int = 256) -> dict:
    """{layer: b}: b = ⌈log2 K⌉ (≥ 1) for a layer whose K ≤ ``max_levels`` distinct non-zero values are
    cheaper stored as b-bit codes plus a K-entry fp32 codebook (n·b + 32·K < 32·n, n non-zeros), else 32.

    A dense or pruned-only layer with few weights (a 150-weight first conv has 150 distinct values) is
    fp32: writing it as 8-bit codes would need a codebook larger than the layer."""
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            k, n = _codebook(m.weight)
            b = max(1, math.ceil(math.log2(k))) if 0 < k <= max_levels else 32
            out[name] = b if b < 32 and n * b + 32 * k < 32 * n else 32
    return out


def index_bits(weight: torch.Tensor, max_gap_bits: int = 16) -> float:
    """Bits to store where the non-zeros of ``weight`` are: min(bitmap, p-bit relative gaps); 0 if dense.

    Relative gaps: each non-zero stores the number of zeros before it in p bits; a gap ≥ 2^p needs
    ⌊gap / 2^p⌋ filler entries (Han et al., Deep Compression §3).
    """
    flat = weight.detach().reshape(-1)
    pos = torch.nonzero(flat).reshape(-1)
    if pos.numel() == flat.numel():
        return 0.0
    if pos.numel() == 0:
        return 0.0
    gaps = torch.diff(pos, prepend=torch.tensor([-1])) - 1
    best = float(flat.numel())  # bitmap
    for p in range(1, max_gap_bits + 1):
        fillers = int(torch.div(gaps, 2**p, rounding_mode="floor").sum())
        best = min(best, float((pos.numel() + fillers) * p))
    return best


def model_costs(
    model: nn.Module,
    input_size,
    weight_bits="infer",
    act_bits=32,
    exec_weight: dict | None = None,
    deploy: nn.Module | None = None,
    latency_threads: int = 1,
    latency_batch: int = 1,
    latency_repeats: int = 20,
    extra_macs: float = 0.0,
) -> dict:
    """Every cost column of the board for one model (see the module docstring for definitions)."""
    from .energy.analytic import energy_table
    from .micronet import score_model

    model = model.eval()
    t = cost.layer_table(
        model, tuple(input_size), weight_bits=infer_weight_bits(model) if weight_bits == "infer" else weight_bits
    )
    exec_w = np.array([float((exec_weight or {}).get(n, 1.0)) for n in t.layer])
    a_bits = np.array([cost.bits_for(n, act_bits) for n in t.layer], dtype=float)
    inferred = weight_bits == "infer"
    if inferred:
        weight_bits = infer_weight_bits(model)
    modules = dict(model.named_modules())
    idx = sum(index_bits(modules[n].weight) for n in dict.fromkeys(t.layer))
    if inferred:  # the codebooks of inferred codebook layers: 32 bits per distinct value
        idx += sum(32.0 * _codebook(modules[n].weight)[0] for n in dict.fromkeys(t.layer) if weight_bits[n] < 32)
    nnz_bits = sum(
        float((modules[n].weight != 0).sum()) * cost.bits_for(n, weight_bits) for n in dict.fromkeys(t.layer)
    )
    try:
        e_rows = {r["layer"]: r["total"] for r in energy_table(model, tuple(input_size))}
        energy = float(sum(e_rows.get(n, 0.0) * w for n, w in zip(t.layer, exec_w)))
    except Exception as e:  # architectures the geometry tracer does not support: NaN, said aloud
        warnings.warn(f"analytic energy unavailable for {type(model).__name__}: {type(e).__name__}: {e}")
        energy = float("nan")
    try:
        score = float(score_model(model, tuple(input_size), weight_bits=weight_bits, verbose=False)["score"])
    except Exception as e:  # not fx-traceable (data-dependent control flow): NaN, said aloud
        warnings.warn(f"MicroNet score unavailable for {type(model).__name__}: {type(e).__name__}: {e}")
        score = float("nan")
    lat = cost.measure_latency(
        (deploy or model).eval(),
        tuple(input_size),
        threads=latency_threads,
        batch=latency_batch,
        repeats=latency_repeats,
        warmup=3,
    )
    return {
        "dense_macs": float(t.macs.sum()) + extra_macs,
        "effective_macs": float((exec_w * t.nnz_macs).sum()) + extra_macs,
        "size_bits_weights": nnz_bits,
        "size_bits_with_index": nnz_bits + idx,
        "bitops": float((exec_w * t.nnz_macs * t.weight_bits * a_bits).sum()),
        "energy_analytic": energy,
        "micronet_score": score,
        "latency_ms": float(lat["median_ms"]),
        "latency_threads": int(lat["threads"]),
        "latency_batch": int(lat["batch"]),
    }


def candidate_row(c: Candidate, latency_threads: int = 1, latency_repeats: int = 20) -> dict:
    """A candidate's per-seed row: identity, accuracy and every cost column."""
    costs = model_costs(
        c.model,
        c.input_size,
        c.weight_bits,
        c.act_bits,
        c.exec_weight,
        c.deploy,
        latency_threads=latency_threads,
        latency_repeats=latency_repeats,
        extra_macs=c.extra_macs,
    )
    return {
        "method": c.method,
        "setting": c.setting,
        "seed": int(c.seed),
        "accuracy": float(c.accuracy),
        "base_model": c.base_model,
        "dataset": c.dataset,
        **costs,
        "deploy_form": c.deploy_form,
        "source": c.source,
        **c.extra,
    }


def board_fields(c: Candidate, weights: bool = True) -> dict:
    """The manifest ``board`` entry (:data:`compresslib.manifest.BOARD_FIELDS`) that rebuilds ``c`` as a candidate."""
    return {
        "method": c.method,
        "setting": c.setting,
        "seed": int(c.seed),
        "input_size": [int(v) for v in c.input_size],
        "base_model": c.base_model,
        "dataset": c.dataset,
        "weight_bits": c.weight_bits,
        "act_bits": c.act_bits,
        "exec_weight": c.exec_weight,
        "deploy_form": c.deploy_form,
        "extra_macs": float(c.extra_macs),
        "weights": bool(weights),
        "extra": dict(c.extra),
    }


def record_candidate(out_dir, key: str, c: Candidate, cache_dir) -> None:
    """Publish one model a stage trained itself (stage 09's base-model runs) in its ``models.json``: the weights
    as ``cache_dir/board-<key>.pt`` and a board row, so later stages (10, deploy) read it like any other."""
    from pathlib import Path

    from .results import record_model
    from .train import save_checkpoint

    if c.spec is None:
        raise ValueError(f"{c.method}/{c.setting}: a recorded candidate needs its spec {{'model', 'kwargs'}}")
    ck = save_checkpoint(Path(cache_dir) / f"board-{key}.pt", model=c.model.state_dict())
    record_model(
        out_dir,
        key,
        model=c.spec["model"],
        kwargs=c.spec.get("kwargs") or {},
        checkpoint=ck,
        accuracy=float(c.accuracy),
        split="test",
        board=board_fields(c),
        **(c.spec.get("build") or {}),
    )


def aggregate(rows) -> pd.DataFrame:
    """One row per (method, setting): accuracy mean ± sample std over seeds, cost columns averaged."""
    df = pd.DataFrame(list(rows))
    if df.empty:
        raise ValueError("no candidate rows to aggregate")
    missing = set(KEYS + ["seed", "accuracy"] + COST_COLUMNS) - set(df.columns)
    if missing:
        raise ValueError(f"rows miss columns {sorted(missing)}")
    g = df.groupby(KEYS, sort=False)
    out = g[COST_COLUMNS].mean()
    out["accuracy"] = g["accuracy"].mean()
    out["accuracy_std"] = g["accuracy"].std(ddof=1).fillna(0.0)
    out["n_seeds"] = g["seed"].nunique()
    for col in ("base_model", "dataset", "latency_threads", "latency_batch", "deploy_form", "source"):
        out[col] = g[col].first() if col in df else ""
    return out.reset_index()[COLUMNS]


def pareto_mask(df: pd.DataFrame, x: str, y: str = "accuracy") -> pd.Series:
    """True for rows on the (lower ``x``, higher ``y``) Pareto front (``viz.pareto_front``)."""
    from .viz import pareto_front

    return df.index.isin(pareto_front(df, x, y).index)


def within_budget(df: pd.DataFrame, axis: str, budget: float) -> pd.DataFrame:
    """Rows whose ``axis`` cost is ≤ ``budget``, best accuracy first (the explorer's query)."""
    if axis not in COST_COLUMNS:
        raise ValueError(f"axis must be one of {COST_COLUMNS}, got {axis!r}")
    return df[df[axis] <= budget].sort_values("accuracy", ascending=False)


def format_table(df: pd.DataFrame) -> pd.DataFrame:
    """Human-readable copy: accuracy as 'mean ± std' %, MACs in M, sizes in kbit, energy in units of 1e6."""
    out = pd.DataFrame(
        {
            "method": df.method,
            "setting": df.setting,
            "model": df.base_model,
            "data": df.dataset,
            "seeds": df.n_seeds,
            "accuracy (%)": [f"{100 * m:.2f} ± {100 * s:.2f}" for m, s in zip(df.accuracy, df.accuracy_std)],
            "dense MMACs": (df.dense_macs / 1e6).round(3),
            "eff. MMACs": (df.effective_macs / 1e6).round(3),
            "kbit (weights)": (df.size_bits_weights / 1e3).round(1),
            "kbit (+index)": (df.size_bits_with_index / 1e3).round(1),
            "Gbit-ops": (df.bitops / 1e9).round(3),
            "energy (1e6)": (df.energy_analytic / 1e6).round(3),
            "MicroNet score": df.micronet_score.map(lambda v: f"{v:.2e}"),
            "latency ms": df.latency_ms.round(3),
            "threads/batch": [f"{t}/{b}" for t, b in zip(df.latency_threads, df.latency_batch)],
            "deploy": df.deploy_form,
        }
    )
    return out


def markdown_table(df: pd.DataFrame) -> str:
    """A GitHub-markdown table of :func:`format_table` (what docs/results.md embeds)."""
    f = format_table(df)
    lines = ["| " + " | ".join(f.columns) + " |", "|" + "---|" * len(f.columns)]
    lines += ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |" for row in f.itertuples(index=False)]
    return "\n".join(lines)


def explorer(board: pd.DataFrame, axis: str = "effective_macs"):
    """ipywidgets explorer: Dropdown "cost axis" + log slider "budget" -> the best rows within the budget
    (HTML) and accuracy-vs-cost with the Pareto front. Returns the VBox (attributes ``axis``, ``budget``,
    ``readout``, ``update``)."""
    import ipywidgets as W
    import matplotlib.pyplot as plt

    from .viz import plot_tradeoff

    def bounds(ax):
        v = board[ax].replace([np.inf, -np.inf], np.nan).dropna()
        v = v[v > 0]
        return (math.log10(v.min()), math.log10(v.max())) if len(v) else (0.0, 1.0)

    axis_w = W.Dropdown(options=COST_COLUMNS, value=axis, description="cost axis")
    lo, hi = bounds(axis)
    budget = W.FloatLogSlider(
        value=10**hi,
        base=10,
        min=lo,
        max=hi,
        step=(hi - lo) / 50 or 0.01,
        description="budget",
        continuous_update=False,
    )
    readout, plot = W.HTML(), W.Output()

    def update(*_):
        ok = within_budget(board, axis_w.value, budget.value)
        head = f"<b>{len(ok)} of {len(board)} rows</b> with {axis_w.value} ≤ {budget.value:.4g}"
        readout.value = head + (format_table(ok.head(8)).to_html(index=False) if len(ok) else "")
        with plot:
            plot.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(7, 4))
            plot_tradeoff(
                ax,
                board.assign(acc=100 * board.accuracy),
                axis_w.value,
                "acc",
                hue="method",
                logx=True,
                ylabel="test accuracy (%)",
            )
            ax.axvline(budget.value, color="r", ls="--", lw=1)
            plt.show()
            plt.close(fig)

    def on_axis(*_):
        lo, hi = bounds(axis_w.value)
        budget.min, budget.max = min(lo, budget.min), max(hi, budget.max)
        budget.min, budget.max, budget.value = lo, hi, 10**hi
        update()

    axis_w.observe(on_axis, names="value")
    budget.observe(update, names="value")
    box = W.VBox([W.HBox([axis_w, budget]), readout, plot])
    box.axis, box.budget, box.readout, box.update = axis_w, budget, readout, update
    update()
    return box


# ------------------------------------------------------------------ published table (docs/results.md markers)
TABLE_BEGIN, TABLE_END = "<!-- leaderboard-table:begin -->", "<!-- leaderboard-table:end -->"


def readme_table(readme_text: str) -> str:
    """The text between a document's leaderboard markers (stripped; docs/results.md holds the published one)."""
    if TABLE_BEGIN not in readme_text or TABLE_END not in readme_text:
        raise ValueError(f"no {TABLE_BEGIN} ... {TABLE_END} section")
    return readme_text.split(TABLE_BEGIN, 1)[1].split(TABLE_END, 1)[0].strip()


def run_wall_time(summary_json) -> str:
    """ ", all N stages in one run: X min wall" when the last reproduce ran every stage (none cached)."""
    from pathlib import Path

    from .results import read_json

    rows = read_json(summary_json) if Path(summary_json).is_file() else []
    if not rows or any(r.get("status") != "ok" or "end_s" not in r for r in rows):
        return ""
    return f"; all {len(rows)} stages in one run, {max(r['end_s'] for r in rows) / 60:.1f} min wall"


def publish(csv_path, readme, docs_csv) -> None:
    """Copy a run's leaderboard.csv to ``docs_csv`` and write its table into the markers of ``readme`` (any file)."""
    import shutil
    import time
    from pathlib import Path

    from .results import atomic_write_text

    board = pd.read_csv(csv_path)
    stamp = time.strftime("%Y-%m-%d", time.gmtime(Path(csv_path).stat().st_mtime))
    text = Path(readme).read_text()
    readme_table(text)  # markers present
    try:
        shown = Path(docs_csv).resolve().relative_to(Path(readme).resolve().parent).as_posix()
    except ValueError:
        shown = Path(docs_csv).as_posix()
    body = (
        f"{TABLE_BEGIN}\n_From the `default` profile's artifacts (`make reproduce`, stage 09 run of "
        f"{stamp}{run_wall_time(Path(csv_path).parent.parent / 'summary.json')}); the CSV is `{shown}`._\n\n"
        f"{markdown_table(board)}\n{TABLE_END}"
    )
    head, rest = text.split(TABLE_BEGIN, 1)
    atomic_write_text(readme, head + body + rest.split(TABLE_END, 1)[1])
    Path(docs_csv).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(csv_path, docs_csv)


if __name__ == "__main__":
    # The published board is the leaderboard section of docs/results.md, rendered with the stages' results
    # from one sources snapshot; publish() above writes a table into any file's markers.
    raise SystemExit(
        "the published leaderboard is generated into docs/results.md (with docs/leaderboard_default.csv): "
        "run `python -m compresslib.workbook.results_doc --artifacts artifacts --update`"
    )
