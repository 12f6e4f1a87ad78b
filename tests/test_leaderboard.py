"""compresslib.leaderboard: cost columns, aggregation, stage collectors, README table."""

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn as nn

import compresslib
from compresslib import leaderboard as lb
from compresslib.models import create_model
from compresslib.train import save_checkpoint

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


def test_collectors_read_the_stage_formats(tmp_path):
    art = tmp_path / "artifacts"
    ecc = art / "03_ecc_admm"
    ecc.mkdir(parents=True)
    pd.DataFrame(
        [
            {"seed": 0, "budget": 0.5, "method": "ECC", "accuracy": 0.95, "widths": "[1, 3, 8, 60, 42, 10]"},
            {"seed": 1, "budget": 0.5, "method": "ECC", "accuracy": 0.93, "widths": "[1, 3, 9, 60, 42, 10]"},
            {"seed": 0, "budget": 0.5, "method": "uniform", "accuracy": 0.9, "widths": "[1, 4, 10, 70, 50, 10]"},
        ]
    ).to_csv(ecc / "results.csv", index=False)
    sq = art / "04_sparsity_quantization" / "models"
    sq.mkdir(parents=True)
    net = create_model("lenet5_caffe")
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.copy_(torch.where(m.weight.abs() > 0.05, torch.sign(m.weight) * 0.1, torch.zeros(())))
    save_checkpoint(sq / "joint_cr50_seed0.pt", model=net.state_dict(), model_name="lenet5_caffe")
    (sq / "joint_cr50_seed0.json").write_text(
        json.dumps(
            {
                "model": "lenet5_caffe",
                "dataset": "mnist5k",
                "mode": "joint",
                "seed": 0,
                "target_cr": 50.0,
                "accuracy": 0.97,
            }
        )
    )
    (sq / "stale_seed0.json").write_text(
        json.dumps(
            {
                "model": "lenet5_caffe",
                "dataset": "mnist5k",
                "mode": "joint",
                "seed": 0,
                "target_cr": 9.0,
                "accuracy": 0.5,
            }
        )
    )
    (sq / "stale_seed0.pt").write_bytes((sq / "joint_cr50_seed0.pt").read_bytes())
    pd.DataFrame([{"mode": "joint", "seed": 0, "accuracy": 0.97}]).to_csv(sq.parent / "runs.csv", index=False)
    assert lb.collect_all(art)[1]["ECC"] == 0  # stage not finished (no metrics.json): not read
    for st in ("03_ecc_admm", "04_sparsity_quantization"):
        (art / st / "metrics.json").write_text("{}")
    cands, found = lb.collect_all(art)
    assert found["ECC"] == 3 and found["sparsity-quantization"] == 1 and found["CAMP"] == 0
    rows = [lb.candidate_row(c, latency_repeats=3) for c in cands]
    b = lb.aggregate(rows).set_index("method")
    e = b.loc["ECC"]
    dense_lenet = lb.model_costs(create_model("lenet5"), (1, 32, 32), latency_repeats=3)["dense_macs"]
    assert e.n_seeds == 2 and e.accuracy == pytest.approx(0.94) and e.deploy_form == "slimmed"
    assert e.dense_macs < dense_lenet and e.effective_macs == e.dense_macs  # slimmed: dense and smaller
    assert e.size_bits_with_index == e.size_bits_weights  # no zeros left, no index
    s = b.loc["sparsity-quantization"]
    assert s.setting == "joint ×50" and s.size_bits_weights < 32 * 431_000 / 10  # 1-bit codes on the survivors
    assert s.size_bits_with_index > s.size_bits_weights and s.effective_macs < s.dense_macs


def test_upstream_dense_only_when_stage04_matches(tmp_path):
    d = tmp_path / "04_sparsity_quantization"
    (d / "models").mkdir(parents=True)
    save_checkpoint(d / "models" / "dense_seed0.pt", model={}, model_name="lenet5_caffe")
    assert lb.upstream_dense(tmp_path, "lenet5_caffe", "mnist5k", 0, 0) is None  # no .reproduce.json: unknown
    stamp = {"params": {"MODEL": "lenet5_caffe", "DATASET": "mnist5k", "SUBSET": 0}}
    (d / ".reproduce.json").write_text(json.dumps(stamp))
    assert lb.upstream_dense(tmp_path, "lenet5_caffe", "mnist5k", 0, 0) == d / "models" / "dense_seed0.pt"
    assert lb.upstream_dense(tmp_path, "lenet5_caffe", "mnist5k", 500, 0) is None  # other subset
    assert lb.upstream_dense(tmp_path, "lenet5", "mnist5k", 0, 0) is None
    assert lb.upstream_dense(tmp_path, "lenet5_caffe", "mnist5k", 0, 1) is None  # no such seed


def test_camp_collector_weights_the_4bit_path(tmp_path):
    d = tmp_path / "08_camp_mixed_precision"
    d.mkdir()
    kw = {"depth": 8, "widths": [4, 8, 16], "num_classes": 10, "in_channels": 1}
    common = {
        "model": "compresslib.methods.camp.CampResNet",
        "checkpoint": "x.ckpt",
        "split": "test",
        "seed": 0,
        "input_size": [1, 8, 8],
        "dataset": "mnist5k",
        "static_plan": None,
    }
    models = {
        "w1a1_seed0": dict(
            common,
            kwargs=dict(kw, bits=1),
            accuracy=0.80,
            method_model="w1a1",
            alpha=None,
            kind="uniform",
            rho_per_block=None,
        ),
        "rl_alpha0.5_seed0": dict(
            common,
            kwargs=dict(kw, bits=1),
            accuracy=0.85,
            method_model="rl",
            alpha=0.5,
            kind="dual",
            rho_per_block=[0.0, 0.5, 1.0],
        ),
        "static_plan_alpha0.5_seed0": dict(
            common,
            kwargs=dict(kw, bits=1),
            accuracy=0.84,
            method_model="static_plan",
            alpha=0.5,
            kind="static",
            rho_per_block=[0.0, 1.0, 1.0],
            static_plan="011",
        ),
        "w4a4_seed0": dict(
            common,
            kwargs=dict(kw, bits=4),
            accuracy=0.5,
            method_model="w4a4",
            alpha=None,
            kind="uniform",
            rho_per_block=None,
        ),
    }  # stale: not in camp_points.csv
    (d / "models.json").write_text(json.dumps(models))
    rows = [
        {"model": m["method_model"], "alpha": m["alpha"], "accuracy": 100 * m["accuracy"]}
        for k, m in models.items()
        if k != "w4a4_seed0"
    ]
    pd.DataFrame(rows).assign(seed=0).to_csv(d / "camp_points.csv", index=False)
    (d / "metrics.json").write_text("{}")
    cands = lb.collect_camp(tmp_path)
    assert [c.setting for c in cands] == ["w1a1", "rl alpha=0.5", "static_plan alpha=0.5"]
    assert cands[1].accuracy == 0.85 and cands[2].extra == {"static_plan": "011"}
    ew = cands[1].exec_weight
    assert ew["blocks.0.path4.conv1"] == 0.0 and ew["blocks.2.path4.conv1"] == 1.0
    assert ew["blocks.0.path1.conv1"] == 1.0 and ew["blocks.0.gate.conv"] == 1.0
    sw = cands[2].exec_weight  # static plan: one path per block, no gate
    assert sw["blocks.0.path1.conv1"] == 1.0 and sw["blocks.0.path4.conv1"] == 0.0
    assert sw["blocks.1.path1.conv1"] == 0.0 and sw["blocks.1.path4.conv1"] == 1.0 and sw["blocks.1.gate.conv"] == 0.0
    r = [lb.candidate_row(c, latency_repeats=3) for c in cands]
    assert r[1]["effective_macs"] < r[1]["dense_macs"]  # the 4-bit path runs on part of the images only
    assert r[2]["effective_macs"] < r[1]["effective_macs"]


def test_readme_table_matches_the_committed_default_csv():
    """The README's leaderboard is the committed CSV of a default run, rendered by markdown_table."""
    readme = (REPO / "README.md").read_text()
    table = lb.readme_table(readme)
    csv = REPO / "docs" / "leaderboard_default.csv"
    if not csv.exists():
        assert "not published yet" in table, "README shows a leaderboard but docs/leaderboard_default.csv is missing"
        return
    board = pd.read_csv(csv)
    assert set(lb.COLUMNS) <= set(board.columns)
    assert not [c for c in lb.COST_COLUMNS if board[c].isna().all()], "a cost column is empty"
    assert lb.markdown_table(board) in table, (
        "README table differs from docs/leaderboard_default.csv: run `python -m compresslib.leaderboard`"
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


def test_edgecompress_collector_static_rows_and_cascade(tmp_path):
    d = tmp_path / "07_dynamic_inference"
    d.mkdir()
    pd.DataFrame(
        [
            {
                "kind": "crop+shrink",
                "name": "CS d0.5 w0.5 r16",
                "d": 0.5,
                "w": 0.5,
                "r": 16,
                "test_accuracy": 0.8,
                "cropper_macs": 1000,
            }
        ]
    ).to_csv(d / "static_models.csv", index=False)
    sweep = [{"threshold": t, "accuracy": 0.8 + t / 10, "avg_macs": 1e6 * (1 + t), "escalated": t} for t in (0, 0.2, 1)]
    (d / "metrics.json").write_text(
        json.dumps({"sweep": sweep, "large_macs": 4e6, "small_macs": 1e6, "macs_fraction_at_large_accuracy": None})
    )
    (d / ".reproduce.json").write_text(
        json.dumps({"params": {"SMALL": "0.5:0.5:16", "RESOLUTIONS": "24,16", "SEED": 0}})
    )
    static, casc = lb.collect_edgecompress(tmp_path)
    assert static.setting == "crop+shrink CS d0.5 w0.5 r16" and static.extra_macs == 1000
    assert casc.setting == "cascade hi=0.20" and casc.accuracy == pytest.approx(0.82)  # no match: the paper's 0.2
    assert set(casc.exec_weight.values()) == {0.2} and all(n.startswith("large.") for n in casc.exec_weight)
    r = lb.candidate_row(casc, latency_repeats=3)
    small = lb.model_costs(casc.model.small, (1, 24, 24), weight_bits=None, latency_repeats=3)["dense_macs"]
    assert r["effective_macs"] == pytest.approx(small + 0.2 * (r["dense_macs"] - 1000 - small) + 1000)


def test_caption_states_the_wall_time_only_of_a_complete_uncached_run(tmp_path):
    s = tmp_path / "summary.json"
    rows = [{"stage": "00_a", "status": "ok", "end_s": 60.0}, {"stage": "01_b", "status": "ok", "end_s": 1500.0}]
    s.write_text(json.dumps(rows))
    assert lb.run_wall_time(s) == "; all 2 stages in one run, 25.0 min wall"
    rows[0]["status"] = "cached"
    s.write_text(json.dumps(rows))
    assert lb.run_wall_time(s) == ""
    assert lb.run_wall_time(tmp_path / "missing.json") == ""


def test_rebuilt_architectures_do_not_depend_on_the_global_rng(tmp_path):
    """07's rows are rebuilt from their configs (weights not saved): an unseeded init made the non-zero count, and
    so size/BitOPs/MicroNet score, differ between a first run and a re-run (the re-run test of 09 caught it)."""
    d = tmp_path / "07_dynamic_inference"
    d.mkdir()
    pd.DataFrame(
        [
            {
                "kind": "crop+shrink",
                "name": "CS d1 w1 r24",
                "d": 1.0,
                "w": 1.0,
                "r": 24,
                "test_accuracy": 0.8,
                "cropper_macs": 1000,
            }
        ]
    ).to_csv(d / "static_models.csv", index=False)
    (d / "metrics.json").write_text(
        json.dumps(
            {
                "sweep": [{"threshold": 0.2, "accuracy": 0.8, "avg_macs": 1e6, "escalated": 0.2}],
                "large_macs": 4e6,
                "threshold": 0.2,
                "small_config": "0.5:0.5:16",
            }
        )
    )
    states = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        (c,) = [c for c in lb.collect_edgecompress(tmp_path) if c.setting.startswith("crop")]
        states.append(c.model.state_dict())
        after = torch.rand(1)
        torch.manual_seed(seed)
        assert torch.equal(after, torch.rand(1))  # the caller's RNG stream is left untouched
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
