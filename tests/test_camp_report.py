"""Stage 08's report helpers (compresslib.camp_report) and CAMP's energy bound (camp.rho_energy_bound)."""

import math

import numpy as np
import pandas as pd
import pytest

from compresslib import camp_report
from compresslib.methods import camp


def runs():
    """camp.run-like rows, two seeds: baselines, SP, RL at α = 2 and 4 (three blocks, block 1 down-samples)."""
    rows = []
    base = dict(fraction_4bit_correct=0.0, fraction_4bit_wrong=0.0, corr_ce_n4bit=0.0, train_seconds_per_epoch=1.0)
    for s in (0, 1):
        for model, acc, e in (("w1a1", 80.0, 0.4), ("fp32", 95.0, 90.0), ("w4a4", 90.0 + s, 1.0)):
            rows.append(dict(base, model=model, seed=s, alpha=None, accuracy=acc, energy_rel_w4a4=e))
        rows.append(dict(base, model="sp", seed=s, alpha=None, accuracy=89.5, energy_rel_w4a4=1.1, fraction_4bit=0.9))
        rows[-1].update(rho_per_block=[1.0, 1.0, 0.7], per_sample_decision_fraction=1 / 3)
        for a, acc, e, rho in ((4.0, 85.0, 0.5, [0.0, 0.5, 0.0]), (2.0, 89.0 + s, 0.75, [1.0, 1.0, 0.25 * s])):
            rows.append(dict(base, model="rl", seed=s, alpha=a, accuracy=acc, energy_rel_w4a4=e, rho_per_block=rho))
            rows[-1].update(fraction_4bit=float(np.mean(rho)), per_sample_decision_fraction=0.5 * s)
    for r in rows:
        r.setdefault("energy_rel_w4a4_no_gates", r["energy_rel_w4a4"])
        r.setdefault("bitops_rel_w4a4", r["energy_rel_w4a4"])
        r.setdefault("fraction_4bit", 1.0)
        r.setdefault("per_sample_decision_fraction", 0.0)
        r["minority_decision_fraction"] = r["per_sample_decision_fraction"] / 2
    points = pd.DataFrame(rows)
    points["alpha_key"] = points.alpha.fillna(-1.0)
    return points


def test_camp_table_orders_models_then_alpha_with_mean_std_and_seed_count():
    t = camp_report.camp_table(runs())
    assert t.model.tolist() == ["fp32", "w4a4", "w1a1", "sp", "rl", "rl"]
    assert t.alpha.isna().tolist() == [True, True, True, True, False, False] and t.alpha.tolist()[4:] == [2.0, 4.0]
    assert t.accuracy.tolist() == [95.0, 90.5, 80.0, 89.5, 89.5, 85.0]
    assert t.accuracy_std.tolist()[:4] == [0.0, math.sqrt(0.5), 0.0, 0.0]  # equal seeds: std 0
    assert t.fraction_4bit.tolist()[4:] == [(2 / 3 + 0.75) / 2, 1 / 6]
    assert t.n_seeds.tolist() == [2] * 6 and list(t.columns)[:2] == ["model", "accuracy"]
    assert list(t.columns)[-3:] == ["accuracy_std", "n_seeds", "alpha"]


def test_claim_points_within_one_point_and_at_most_08x_energy():
    t = camp_report.camp_table(runs())
    pts = t[t.model.isin(["sp", "rl"])]
    assert camp_report.claim_points(pts, 90.0).alpha.tolist() == [2.0]  # 89.5 at 0.75x; SP costs 1.1x
    assert len(camp_report.claim_points(pts, 90.6)) == 0  # 89.5 < 89.6
    assert camp_report.claim_points(pts, 90.0, max_energy=None).energy_rel_w4a4.tolist() == [1.1, 0.75]
    assert camp_report.claim_points(pts, 90.0, points=5, max_energy=0.6).accuracy.tolist() == [85.0]


def test_non_increasing_allows_the_tolerance_only():
    assert camp_report.non_increasing([0.9, 0.5, 0.5 + 1e-10, 0.1])
    assert not camp_report.non_increasing([0.9, 0.5, 0.5 + 1e-8])
    assert camp_report.non_increasing([0.3])


def test_gated_runs_labels_and_rho_heat_per_label():
    dyn, labels = camp_report.gated_runs(runs())
    assert labels == ["RL α=2", "RL α=4", "SP"]  # ordered by (model, α)
    assert len(dyn) == 6 and set(dyn.label) == set(labels)
    heat = camp_report.rho_heat(dyn, labels)
    assert heat.tolist() == [[1.0, 1.0, 0.125], [0.0, 0.5, 0.0], [1.0, 1.0, 0.7]]


def test_rho_by_block_kind_splits_downsampling_blocks():
    rl = camp_report.rho_by_block_kind(runs(), [1])
    assert rl.rho_downsampling_blocks.tolist() == [0.5, 1.0, 0.5, 1.0]
    assert rl.rho_other_blocks.tolist() == [0.0, 0.5, 0.0, 0.625]


def test_gating_verdict_sides_and_spread():
    row = lambda d, std, n: pd.Series(dict(rl_minus_static=d, diff_std=std, n_seeds=n))  # noqa: E731
    spread = "; within the seed-to-seed spread of the difference"
    assert camp_report.gating_verdict(row(1.5, 2.0, 2)) == ("per-sample gating is better", spread)
    assert camp_report.gating_verdict(row(-3.0, 2.0, 3)) == ("the static plan is better", "")
    assert camp_report.gating_verdict(row(0.0, 0.0, 1)) == ("no difference", "")  # one seed: no spread claim


def test_metrics_rows_results_static_plan_and_decision_fractions():
    t = camp_report.camp_table(runs())
    main = t[t.model.isin(["w4a4", "rl"])][["model", "alpha", "accuracy"]]
    assert camp_report.results_rows(main) == [
        {"model": "w4a4", "alpha": None, "accuracy": 90.5},
        {"model": "rl", "alpha": 2.0, "accuracy": 89.5},
        {"model": "rl", "alpha": 4.0, "accuracy": 85.0},
    ]
    sv = pd.DataFrame(
        dict(static_accuracy=[87.0], static_std=[0.5], static_energy=[0.6], rl_accuracy=[88.5], rl_std=[1.0])
        | dict(rl_energy=[0.75], rl_minus_static=[1.5], diff_std=[0.25], rl_wins=[2], n_seeds=[2], plans=["011/001"]),
        index=pd.Index([2.0], name="alpha"),
    )
    (row,) = camp_report.static_plan_rows(sv)
    assert row == dict(
        alpha=2.0,
        selection_split="val",
        accuracy=87.0,
        accuracy_std=0.5,
        energy_rel_w4a4=0.6,
        rl_accuracy=88.5,
        rl_energy_rel_w4a4=0.75,
        rl_minus_static=1.5,
        rl_minus_static_std=0.25,
        plans=["011", "001"],
        n_seeds=2,
    )
    dyn, _ = camp_report.gated_runs(runs())
    assert camp_report.decision_fractions_by_model(dyn) == [
        dict(model="sp", alpha=None, per_sample_decision_fraction=1 / 3, minority_decision_fraction=1 / 6),
        dict(model="rl", alpha=4.0, per_sample_decision_fraction=0.25, minority_decision_fraction=0.125),
        dict(model="rl", alpha=2.0, per_sample_decision_fraction=0.25, minority_decision_fraction=0.125),
    ]


def test_rho_energy_bound_is_the_linear_interpolation_of_the_dual_path_energy():
    size = (1, 8, 8)
    w1, w4 = camp.CampResNet(8, (4, 4, 8), bits=1), camp.CampResNet(8, (4, 4, 8), bits=4)
    dual = camp.make_dual(w1)
    e4 = camp.camp_energy(w4, size)["energy"]
    b = camp.rho_energy_bound(dual, size, e4)
    assert b["floor"] == camp.camp_energy(dual, size, 0.0)["energy"] / e4
    assert b["ceiling"] == camp.camp_energy(dual, size, 1.0)["energy"] / e4
    assert 0.8 < b["floor"] < b["ceiling"] and b["rho_max"] < 0  # tiny net: the FP32 stem alone is above 0.8x
    target = 0.25 * b["floor"] + 0.75 * b["ceiling"]
    rho = camp.rho_energy_bound(dual, size, e4, target=target)["rho_max"]
    assert rho == pytest.approx(0.75, abs=1e-12)
    assert camp.camp_energy(dual, size, rho)["energy"] / e4 == pytest.approx(target, abs=1e-12)
    assert camp.rho_energy_bound(dual, size, e4, target=b["floor"])["rho_max"] == 0.0
    with pytest.raises(ValueError, match="e_ref must be a positive energy, got 0"):
        camp.rho_energy_bound(dual, size, 0)
