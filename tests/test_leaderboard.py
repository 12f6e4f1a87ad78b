"""compresslib.leaderboard: cost columns, aggregation, docs/results.md table (the rows come from manifests: test_manifest)."""

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn as nn

import compresslib
from compresslib import leaderboard as lb

compresslib.set_threads(1)
REPO = Path(__file__).resolve().parent.parent


def test_index_bits_takes_the_cheapest_code():
    w = torch.zeros(100)
    w[[0, 50]] = 1.0
    # gaps (0, 49): p=6 -> 2 entries * 6 bits = 12 < bitmap 100 (p=5 needs one filler: 3 * 5 = 15)
    assert lb.index_bits(w) == 12
    assert lb.index_bits(torch.ones(10)) == 0  # dense: no index
    w = torch.zeros(8)
    w[::2] = 1.0
    assert lb.index_bits(w) == 4  # 4 non-zeros, gap 1 each: 1 bit * 4 entries


def test_infer_weight_bits_counts_levels():
    net = nn.Sequential(nn.Linear(8, 4), nn.Linear(40, 10), nn.Linear(4, 2), nn.Linear(100, 10), nn.Conv2d(1, 6, 5))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([-0.3, 0.0, 0.5, 0.5]).repeat(4, 2))  # ternary: 2 non-zero levels
        net[1].weight.copy_((torch.arange(400.0) % 15 + 1).view(10, 40))  # 15 levels on 400 weights -> 4 bits
    bits = lb.infer_weight_bits(net)
    # 8 random values: codes + an 8-entry codebook cost more than fp32; 1000 values -> fp32; a dense
    # 150-weight first conv (150 distinct values) is fp32, not "8-bit" (its codebook would outweigh it)
    assert bits == {"0": 1, "1": 4, "2": 32, "3": 32, "4": 32}


def test_with_index_size_pays_the_inferred_codebooks():
    net = nn.Sequential(nn.Flatten(), nn.Linear(40, 10))
    with torch.no_grad():
        net[1].weight.copy_((torch.arange(400.0) % 15 + 1).view(10, 40))
        net[1].weight[:, :20] = 0  # 200 zeros
    c = lb.model_costs(net, (40,), latency_repeats=3)
    assert c["size_bits_weights"] == 200 * 4
    index = lb.index_bits(net[1].weight)
    assert c["size_bits_with_index"] == 200 * 4 + index + 32 * 15  # positions + the 15-entry fp32 codebook
    explicit = lb.model_costs(net, (40,), weight_bits=4, latency_repeats=3)  # bits given: no inferred codebook
    assert explicit["size_bits_with_index"] == 200 * 4 + index


def test_model_costs_on_a_known_layer():
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 4, bias=False))
    with torch.no_grad():
        w = torch.zeros(4, 16)
        w[:, :8] = torch.tensor([1.0, -1.0]).repeat(4, 4)  # half the weights, 2 levels -> 1 bit
        net[1].weight.copy_(w)
    c = lb.model_costs(net, (1, 4, 4), latency_repeats=3)
    assert c["dense_macs"] == 64 and c["effective_macs"] == 32
    assert c["size_bits_weights"] == 32  # 32 non-zeros * 1 bit
    assert c["size_bits_with_index"] == 32 + lb.index_bits(w) + 2 * 32  # + the 2-entry fp32 codebook
    assert c["bitops"] == 32 * 1 * 32
    assert c["latency_ms"] > 0 and c["latency_threads"] == 1 and c["latency_batch"] == 1
    assert c["energy_analytic"] > 0 and c["micronet_score"] > 0
    half = lb.model_costs(net, (1, 4, 4), exec_weight={"1": 0.5}, latency_repeats=3, extra_macs=10)
    assert half["effective_macs"] == 16 + 10 and half["dense_macs"] == 74 and half["bitops"] == c["bitops"] / 2
    fp = lb.model_costs(net, (1, 4, 4), weight_bits=None, latency_repeats=3)
    assert fp["size_bits_weights"] == 32 * 32


def _row(method, setting, seed, acc, macs):
    return {
        "method": method,
        "setting": setting,
        "seed": seed,
        "accuracy": acc,
        "base_model": "m",
        "dataset": "d",
        **{c: macs for c in lb.COST_COLUMNS},
        "latency_threads": 1,
        "latency_batch": 1,
        "deploy_form": "dense-executed",
        "source": "t",
    }


def test_aggregate_mean_std_over_seeds_and_errors():
    rows = [_row("A", "x", 0, 0.90, 10.0), _row("A", "x", 1, 0.80, 14.0), _row("B", "y", 0, 0.5, 1.0)]
    b = lb.aggregate(rows)
    assert list(b.columns) == lb.COLUMNS and len(b) == 2
    a = b[b.method == "A"].iloc[0]
    assert a.accuracy == pytest.approx(0.85) and a.accuracy_std == pytest.approx(0.0707107, rel=1e-5)
    assert a.n_seeds == 2 and a.effective_macs == 12.0
    assert b[b.method == "B"].iloc[0].accuracy_std == 0.0
    assert lb.pareto_mask(b, "effective_macs").tolist() == [True, True]
    assert lb.within_budget(b, "effective_macs", 5).method.tolist() == ["B"]
    with pytest.raises(ValueError, match="axis must be one of"):
        lb.within_budget(b, "speed", 1)
    with pytest.raises(ValueError, match="no candidate rows"):
        lb.aggregate([])
    with pytest.raises(ValueError, match="miss columns"):
        lb.aggregate([{"method": "A", "setting": "x"}])
    md = lb.markdown_table(b)
    assert "| A | x |" in md and "85.00 ± 7.07" in md
    with pytest.raises(ValueError, match="fraction"):
        lb.Candidate("A", "x", 0, 85.0, nn.Linear(2, 2), (2,), "m", "d", "t")


def test_results_doc_table_matches_the_committed_default_csv():
    """docs/results.md's leaderboard is the committed CSV of a default run, rendered by markdown_table."""
    table = lb.readme_table((REPO / "docs" / "results.md").read_text())
    csv = REPO / "docs" / "leaderboard_default.csv"
    if not csv.exists():
        assert "not published yet" in table, "docs/results.md shows a board but no leaderboard_default.csv"
        return
    board = pd.read_csv(csv)
    assert set(lb.COLUMNS) <= set(board.columns)
    assert not [c for c in lb.COST_COLUMNS if board[c].isna().all()], "a cost column is empty"
    assert lb.markdown_table(board) in table, (
        "docs/results.md table differs from docs/leaderboard_default.csv: run `python -m compresslib.workbook.results_doc`"
    )


def test_publish_round_trip(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{lb.TABLE_BEGIN}\nold\n{lb.TABLE_END}\ntail\n")
    csv = tmp_path / "lb.csv"
    lb.aggregate([_row("A", "x", 0, 0.9, 1.0)]).to_csv(csv, index=False)
    lb.publish(csv, readme, tmp_path / "docs" / "lb.csv")
    text = readme.read_text()
    assert "old" not in text and text.endswith("tail\n") and "`docs/lb.csv`" in text
    assert lb.markdown_table(pd.read_csv(tmp_path / "docs" / "lb.csv")) in lb.readme_table(text)


def test_caption_states_the_wall_time_only_of_a_complete_uncached_run(tmp_path):
    s = tmp_path / "summary.json"
    rows = [{"stage": "00_a", "status": "ok", "end_s": 60.0}, {"stage": "01_b", "status": "ok", "end_s": 1500.0}]
    s.write_text(json.dumps(rows))
    assert lb.run_wall_time(s) == "; all 2 stages in one run, 25.0 min wall"
    rows[0]["status"] = "cached"
    s.write_text(json.dumps(rows))
    assert lb.run_wall_time(s) == ""
    assert lb.run_wall_time(tmp_path / "missing.json") == ""


def test_camp_cost_rows_weight_the_4bit_path():
    """Stage 08's board rows: exec weights from ``camp_cost_table`` (rho per block on the 4-bit path; a static
    plan runs one path per block and no gate), so the effective MACs fall with rho."""
    from compresslib.methods import camp
    from compresslib.rebuild import build_model

    kw = {"depth": 8, "widths": [4, 8, 16], "num_classes": 10, "in_channels": 1, "bits": 1}
    name = "compresslib.methods.camp.CampResNet"
    dual = build_model({"model": name, "kwargs": kw, "kind": "dual"})
    static = build_model({"model": name, "kwargs": kw, "kind": "static", "static_plan": "011"})
    rows = []
    for net, rho, st in ((dual, [0.0, 0.5, 1.0], False), (static, [0.0, 1.0, 1.0], True)):
        t = camp.camp_cost_table(net, (1, 8, 8), rho, include_gates=not st, static=st)
        ew = dict(zip(t.layer, t.exec_weight))
        c = lb.Candidate("CAMP", "x", 0, 0.8, net, (1, 8, 8), "camp_resnet8", "mnist5k", "08", exec_weight=ew)
        c.weight_bits, c.act_bits = dict(zip(t.layer, t.weight_bits)), dict(zip(t.layer, t.act_bits))
        rows.append((ew, lb.candidate_row(c, latency_repeats=3)))
    (ew, r), (sw, rs) = rows
    assert ew["blocks.0.path4.conv1"] == 0.0 and ew["blocks.2.path4.conv1"] == 1.0
    assert ew["blocks.0.path1.conv1"] == 1.0 and ew["blocks.0.gate.conv"] == 1.0
    assert sw["blocks.0.path1.conv1"] == 1.0 and sw["blocks.0.path4.conv1"] == 0.0
    assert sw["blocks.1.path1.conv1"] == 0.0 and sw["blocks.1.path4.conv1"] == 1.0 and sw["blocks.1.gate.conv"] == 0.0
    assert r["effective_macs"] < r["dense_macs"]  # the 4-bit path runs on part of the images only
    assert rs["effective_macs"] < r["effective_macs"]
