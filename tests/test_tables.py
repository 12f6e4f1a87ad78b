import math

import matplotlib
import numpy as np
import pandas as pd
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from compresslib import camp_report, results, tables, viz  # noqa: E402
from compresslib.methods import ecc  # noqa: E402


def per_seed():
    return pd.DataFrame(
        {
            "method": ["b", "b", "a", "a", "a", "c"],
            "budget": [0.5, 0.5, 0.5, 0.5, 0.5, 0.2],
            "seed": [0, 1, 0, 1, 2, 0],
            "accuracy": [0.9, 0.8, 0.5, 0.7, 0.6, 0.4],
            "energy": [1.0, 3.0, 2.0, 2.0, 5.0, 7.0],
            "reached": [True, False, True, True, True, True],
        }
    )


def test_seed_summary_mean_std_and_n_in_the_stages_names():
    t = tables.seed_summary(per_seed(), ["method", "budget"], ["accuracy", "accuracy_std", "energy"], n="seeds")
    assert list(t.columns) == ["method", "budget", "accuracy", "accuracy_std", "energy", "seeds"]
    assert list(t.method) == ["a", "b", "c"]  # sorted by key
    assert t.accuracy.tolist() == pytest.approx([0.6, 0.85, 0.4], abs=1e-15)
    assert t.accuracy_std[0] == pytest.approx(0.1, abs=1e-15)  # sample std of 0.5, 0.7, 0.6 (ddof 1)
    assert t.accuracy_std[1] == pytest.approx(math.sqrt(0.005), abs=1e-15)
    assert math.isnan(t.accuracy_std[2])  # one seed: NaN unless fill_std
    assert t.energy.tolist() == [3.0, 2.0, 7.0]
    assert t.seeds.tolist() == [3, 2, 1]


def test_seed_summary_renames_other_aggregations_and_fills_std():
    t = tables.seed_summary(
        per_seed(),
        "method",
        [
            ("acc", "accuracy"),
            ("acc_std", "accuracy", "std"),
            ("max_energy", "energy", "max"),
            ("reached", "reached", "all"),
            ("wins", "accuracy", lambda d: int((d > 0.65).sum())),
        ],
        sort=False,
        fill_std=0.0,
    )
    assert list(t.columns) == ["method", "acc", "acc_std", "max_energy", "reached", "wins"]
    assert list(t.method) == ["b", "a", "c"]  # order of first appearance
    assert t.acc_std.tolist()[2] == 0.0
    assert t.max_energy.tolist() == [3.0, 5.0, 7.0]
    assert t.reached.tolist() == [False, True, True]
    assert t.wins.tolist() == [2, 1, 0]


def test_seed_summary_equals_pandas_named_aggregation_bit_for_bit():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"g": rng.integers(0, 4, 200), "x": rng.normal(size=200), "y": rng.random(200)})
    ref = df.groupby("g").agg(x=("x", "mean"), x_std=("x", "std"), y=("y", "mean")).reset_index()
    ref["n"] = df.groupby("g").size().to_numpy()
    pd.testing.assert_frame_equal(tables.seed_summary(df, "g", ["x", "x_std", "y"], n="n"), ref, check_exact=True)


@pytest.mark.parametrize(
    "by, columns, match",
    [
        ("nope", ["accuracy"], "by: needs one or more columns"),
        ([], ["accuracy"], "by: needs one or more columns"),
        ("method", [], "columns: needs at least one"),
        ("method", ["loss"], "'loss' is neither a column"),
        ("method", ["loss_std"], "'loss_std' is neither a column"),
        ("method", [("acc", "loss")], "reads 'loss'"),
        ("method", [42], "entries are 'x' \\(mean\\)"),
        ("method", ["accuracy", ("accuracy", "energy")], "output names repeat"),
    ],
)
def test_seed_summary_bad_input_names_the_parameter(by, columns, match):
    with pytest.raises(ValueError, match=match):
        tables.seed_summary(per_seed(), by, columns)


def test_label_axes_draws_reference_labels_and_legend():
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0.2, 0.8], label="curve")
    viz.label_axes(ax, ref=0.5, ref_label="dense", legend=dict(fontsize=7), xlabel="E", ylabel="acc", title="T")
    ref = ax.get_lines()[-1]
    assert list(ref.get_ydata()) == [0.5, 0.5] and ref.get_linestyle() == "--" and ref.get_linewidth() == 1
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == ("E", "acc", "T")
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["curve", "dense"]
    assert legend.get_texts()[0].get_fontsize() == 7
    fig2, ax2 = plt.subplots()
    ax2.plot([0, 1], [0, 1], label="c")
    viz.label_axes(ax2, ylim=(0.1, 0.9))
    assert ax2.get_ylim() == (0.1, 0.9) and len(ax2.get_lines()) == 1
    assert ax2.get_legend().get_texts()[0].get_fontsize() == 8
    plt.close(fig)
    plt.close(fig2)


def test_fresh_out_dir_creates_the_folder_and_drops_models_json(tmp_path):
    out = results.fresh_out_dir(tmp_path / "a" / "03_x")
    assert out.is_dir() and out == tmp_path / "a" / "03_x"
    (out / "models.json").write_text("{}")
    (out / "summary.csv").write_text("x\n")
    assert results.fresh_out_dir(str(out)) == out
    assert sorted(p.name for p in out.iterdir()) == ["summary.csv"]


def camp_points():
    """camp.run-like rows: seeds 0 and 1, RL at α = 0, 2, 4 (α = 0 has no static row), one static row per
    (seed, α > 0), and a baseline row that must be ignored."""
    rows = [dict(model="w4a4", seed=s, alpha=None, accuracy=90.0, energy_rel_w4a4=1.0) for s in (0, 1)]
    for s in (0, 1):
        for a, acc, e in ((0.0, 91.0, 1.1), (2.0, 88.0 + s, 0.7 + 0.1 * s), (4.0, 80.0, 0.5)):
            rows.append(
                dict(model="rl", seed=s, alpha=a, accuracy=acc, energy_rel_w4a4=e, energy_rel_w4a4_val=e + 0.01)
                | dict(per_sample_decision_fraction=0.5)
            )
        for a, acc, e, plan in ((2.0, 87.0, 0.6, "011"), (4.0, 81.0 - 2 * s, 0.45, "001")):
            rows.append(
                dict(model="static_plan", seed=s, alpha=a, accuracy=acc, energy_rel_w4a4=e, static_plan=plan)
                | dict(selection_val_accuracy=70.0 + s)
            )
    return pd.DataFrame(rows)


def test_static_vs_dynamic_pairs_rl_and_static_runs_on_seed_and_alpha():
    pair = camp_report.static_vs_dynamic(camp_points())
    assert list(pair.index) == [(0, 2.0), (0, 4.0), (1, 2.0), (1, 4.0)]  # α = 0 has no static row
    assert list(pair.columns) == [
        *camp_report.RL_COLUMNS,
        "accuracy_static",
        "energy_rel_w4a4_static",
        "static_plan",
        "selection_val_accuracy",
        "rl_minus_static",
    ]
    assert pair.rl_minus_static.tolist() == [1.0, -1.0, 2.0, 1.0]
    sv = camp_report.static_vs_dynamic_summary(pair)
    assert list(sv.index) == [2.0, 4.0]
    assert sv.rl_accuracy.tolist() == [88.5, 80.0] and sv.static_accuracy.tolist() == [87.0, 80.0]
    assert sv.rl_minus_static.tolist() == [1.5, 0.0]
    assert sv.diff_std.tolist() == pytest.approx([math.sqrt(0.5), math.sqrt(2.0)], abs=1e-15)
    assert sv.static_std.tolist() == pytest.approx([0.0, math.sqrt(2.0)], abs=1e-15)
    assert sv.rl_energy.tolist() == pytest.approx([0.75, 0.5], abs=1e-15)
    assert sv.rl_wins.tolist() == [2, 1] and sv.n_seeds.tolist() == [2, 2]
    assert sv.plans.tolist() == ["011/011", "001/001"]
    one = camp_report.static_vs_dynamic_summary(pair.loc[[0]])  # one seed: std 0, not NaN
    assert one.rl_std.tolist() == [0.0, 0.0] and one.diff_std.tolist() == [0.0, 0.0]


def test_static_vs_dynamic_without_static_rows_is_empty_and_bad_input_is_named():
    pts = camp_points()
    pts = pts[pts.model != "static_plan"].drop(columns=["static_plan", "selection_val_accuracy"])
    pair = camp_report.static_vs_dynamic(pts)
    assert len(pair) == 0 and "rl_minus_static" in pair.columns
    assert len(camp_report.static_vs_dynamic_summary(pair)) == 0
    with pytest.raises(ValueError, match=r"points: needs the columns \['energy_rel_w4a4'\]"):
        camp_report.static_vs_dynamic(pts.drop(columns=["energy_rel_w4a4"]))


def ecc_runs():
    """Stage 03's results.csv rows: budgets 0.5 and 0.2, two seeds, ECC and the two uniform baselines, and
    their mean over seeds as the notebook's summary.csv (``agg``)."""
    rows = []
    for f in (0.5, 0.2):
        for s in (0, 1):
            for m, acc in (("ECC", 0.8 + 0.1 * s), ("uniform", 0.5), ("uniform_equal_training", 0.75 - f * s)):
                rows.append(
                    dict(budget=f, method=m, seed=s, accuracy=acc, accuracy_before_ft=acc - 0.25)
                    | dict(estimated_energy=f - 0.01 * (s + 1), analytic_energy=f, epochs=2 + s + (m == "uniform"))
                    | dict(latency_ms=1.0 + s, dense_latency_ms=4.0)
                )
    table = pd.DataFrame(rows)
    agg = tables.seed_summary(
        table,
        ["budget", "method"],
        [
            "accuracy",
            ("before_ft", "accuracy_before_ft"),
            ("max_estimated_energy", "estimated_energy", "max"),
            "analytic_energy",
            "latency_ms",
            "dense_latency_ms",
            "epochs",
        ],
    )
    return table, agg


def test_ecc_budget_rows_per_budget_with_seed_stds():
    table, agg = ecc_runs()
    res, equal = ecc.budget_rows(table, agg, [0.5, 0.2], 3)
    assert [r["budget"] for r in res] == [0.5, 0.2] and [q["budget"] for q in equal] == [0.5, 0.2]
    assert res[0] == {
        "budget": 0.5,
        "estimated_energy": 0.49,
        "analytic_energy": 0.5,
        "accuracy": (0.8 + 0.9) / 2,
        "accuracy_std": float(pd.Series([0.8, 0.9]).std()),
        "uniform_accuracy": 0.5,
        "uniform_equal_training_accuracy": (0.75 + 0.25) / 2,
        "admm_epochs": 2.5,
        "latency_ms": 1.5,
        "dense_latency_ms": 4.0,
    }
    assert equal[1] == {
        "budget": 0.2,
        "accuracy": (0.75 + 0.55) / 2,
        "accuracy_std": float(pd.Series([0.75, 0.55]).std()),
        "accuracy_before_ft": (0.5 + 0.3) / 2,
        "epochs": [2, 3],
        "finetune_epochs": 3,
        "estimated_energy": 0.2 - 0.01,
        "analytic_energy": 0.2,
        "seeds": 2,
    }
    assert equal[0]["accuracy_std"] == pytest.approx(math.sqrt(0.125), abs=1e-15)
    one, _ = ecc.budget_rows(table[table.seed == 0], agg, [0.5], 3)  # one seed: std 0.0, not NaN
    assert one[0]["accuracy_std"] == 0.0 and ecc.seed_std(pd.Series([0.3])) == 0.0


def test_ecc_equal_training_verdict_sides():
    r = dict(accuracy=0.8, accuracy_std=0.02, uniform_accuracy=0.5)
    v = ecc.equal_training_verdict(r, dict(accuracy=0.7, accuracy_std=0.05))
    assert v == {
        "difference": 0.8 - 0.7,
        "noise": 0.05,
        "side": "ECC ahead",
        "finetune_only_difference": 0.8 - 0.5,
    }
    assert ecc.equal_training_verdict(r, dict(accuracy=0.9, accuracy_std=0.01))["side"] == "uniform ahead"
    assert ecc.equal_training_verdict(r, dict(accuracy=0.79, accuracy_std=0.0))["side"] == "within noise"
    assert ecc.equal_training_verdict(dict(r, accuracy_std=0.0), dict(accuracy=0.8, accuracy_std=0.0))["side"] == (
        "within noise"
    )
