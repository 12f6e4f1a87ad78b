"""Stage 04 on the method contract: ``sqjoint.Config`` validation, a tiny ``run`` on fake data (Result schema,
board rows, manifest rows, cache reuse) and the stage's tables (issue 15)."""

import json
import math

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from compresslib import data, results, train
from compresslib.manifest import check_board
from compresslib.methods import METHODS, run_method
from compresslib.methods import sqjoint as sq
from compresslib.models import create_model

SMALL = {"widths": [4, 8, 16]}  # a 4-8-16 Caffe LeNet-5: 2,996 compressed weights


def _fake_loaders(seed=0, n=96, classes=3):
    """Loaders as ``data.get_loaders`` gives them (train/val/test, num_classes, in_channels, image_size,
    fingerprint), over generated 1x28x28 images whose class is a bright quadrant."""
    g = torch.Generator().manual_seed(100 + seed)

    def split(k):
        y = torch.randint(0, classes, (k,), generator=g)
        x = 0.3 * torch.randn(k, 1, 28, 28, generator=g)
        for i, c in enumerate(y.tolist()):
            x[i, 0, (c // 2) * 14 : (c // 2) * 14 + 14, (c % 2) * 14 : (c % 2) * 14 + 14] += 1.0
        return TensorDataset(x, y)

    gen = torch.Generator().manual_seed(seed)
    train = DataLoader(split(n), batch_size=16, shuffle=True, generator=gen)
    val, test = DataLoader(split(32), batch_size=32), DataLoader(split(48), batch_size=48)
    fp = {"dataset": "fake-quadrants", "subset": None, "seed": seed}
    return data.Loaders(train, val, test, classes, 1, 28, fp)


def _tiny(**kw):
    return METHODS.meta("sparsity-quantization")["tiny"]().replace(**kw)


# ------------------------------------------------------------------------------------ Config
def test_registered_with_the_contract():
    meta = METHODS.meta("sparsity-quantization")
    assert meta["config"] is sq.Config and meta["stage"] == "04_sparsity_quantization"
    assert meta["paper"] == "Yang et al., CVPR 2020" and METHODS.get("sparsity-quantization") is sq.run
    c = sq.Config().validate()  # the notebook's defaults
    assert c.seeds == [0, 1, 2] and len(c.runs()) == 10
    assert c.runs()[:4] == [("joint", 0.0054, 3.0), ("joint", 0.01, 3.0), ("joint", 0.05, 4.0), ("fixed", 0.0054, 3.0)]
    assert sq.Config(fixed_bits=False, ablations=[["joint", 0.0054, 3]]).runs() == [
        ("joint", 0.0054, 3.0),
        ("joint", 0.01, 3.0),
        ("joint", 0.05, 4.0),
    ]  # each configuration once


def _violations():
    """(field, bad value) for both ends of every declared range."""
    out = []
    for name, r in sq.Config.RANGES.items():
        lo, hi = r.get("lo", -math.inf), r.get("hi", math.inf)
        out.append((name, lo if r.get("lo_open") else lo - 1))
        out.append((name, hi if r.get("hi_open") else hi + 1))
        out.append((name, math.nan))
        if r.get("integer"):
            out.append((name, lo + 0.5 if math.isfinite(lo) else 0.5))
    return out


@pytest.mark.parametrize("name,value", _violations(), ids=lambda v: str(v))
def test_config_range_violation_names_the_field(name, value):
    with pytest.raises((ValueError, TypeError), match=rf"^{name} must be"):
        sq.Config(**{name: value}).validate()


@pytest.mark.parametrize(
    "kw,msg",
    [
        (dict(joint_budgets=[[0.0, 3]]), r"joint_budgets\[0\] nnz_budget .*\(0, 1\].*got 0\.0"),
        (dict(joint_budgets=[[0.01, 3], [1.5, 3]]), r"joint_budgets\[1\] nnz_budget"),
        (dict(joint_budgets=[[0.01, 9]]), r"joint_budgets\[0\] bit_budget .*\[1, 8\].*got 9"),
        (dict(joint_budgets=[[0.01, math.nan]]), r"joint_budgets\[0\] bit_budget.*nan"),
        (dict(joint_budgets=[[0.01]]), r"joint_budgets\[0\] must be \[nnz_budget, bit_budget\]"),
        (dict(joint_budgets="0.0054:3"), r"joint_budgets must be a list"),
        (dict(ablations=[["huffman", 0.1, 3]]), r"ablations\[0\]: unknown mode 'huffman'"),
        (dict(ablations=[["prune", 0.1]]), r"ablations\[0\] must be \[mode, nnz_budget, bit_budget\]"),
        (dict(ablations=[["prune", 0.1, 0.5]]), r"ablations\[0\] bit_budget"),
        (dict(joint_budgets=[], ablations=[]), r"joint_budgets and ablations are both empty"),
        (dict(intervals=2, warmup_intervals=3), r"warmup_intervals must be in \[0, intervals=2\]"),
        (dict(progressive=1), r"progressive must be True or False"),
        (dict(fixed_bits="yes"), r"fixed_bits must be True or False"),
        (dict(device="tpu"), r"DEVICE 'tpu'"),
    ],
)
def test_config_rules_name_the_field(kw, msg):
    with pytest.raises((ValueError, TypeError), match=msg):
        sq.Config(**kw).validate()


def test_model_dependent_errors_come_before_any_training(tmp_path):
    loaders = _fake_loaders()
    for kw, msg in [
        (dict(ablations=[["quantize", 0.01, 1]]), "cannot exceed 32x"),  # quantize-only below 1 bit per weight
        (dict(bwlb=4, joint_budgets=[[0.05, 3]], ablations=[]), "below bwlb=4"),
        (dict(progressive=True, joint_budgets=[[0.05, 4], [0.2, 4]]), "tighten"),
        (dict(model="no_such_net"), "no_such_net"),
    ]:
        with pytest.raises(ValueError, match=msg):
            sq.run(_tiny(**kw), loaders, cache_dir=tmp_path, progress=False)
    assert not any(tmp_path.iterdir())  # nothing trained, nothing cached


# ------------------------------------------------------------------------------- a tiny run
def test_tiny_run_result_schema_board_and_manifest_rows(tmp_path, capsys):
    cfg = _tiny(ablations=[["prune", 0.05, 4], ["quantize", 1, 1]])
    loaders = _fake_loaders()
    res = run_method("sparsity-quantization", cfg, loaders, cache_dir=tmp_path / "cache", progress=False)
    t = round(sq.target_compression(create_model("lenet5_caffe", num_classes=3, **SMALL), 0.05, 4))  # 159
    modes = ["joint", "fixed", "prune"]
    assert [(r.setting, r.seed) for r in res] == [("dense", 0)] + [(f"{m} ×{t}", 0) for m in modes] + [
        ("quantize ×32", 0)
    ]
    dense, runs = res[0], res[1:]
    assert dense.board is None and dense.split == "test" and 0 <= dense.accuracy <= 1
    assert dense.metrics["key"] == "dense_seed0" and dense.metrics["kwargs"] == {
        "num_classes": 3,
        "in_channels": 1,
        "widths": [4, 8, 16],
    }
    assert dense.metrics["row"] == {
        "role": "dense base of every compression run",
        "dataset": "fake-quadrants",
        "subset": 0,
    }
    for r in runs:
        run, meta = r.metrics["run"], r.metrics["meta"]
        mode = run["mode"]
        assert r.method == "sparsity-quantization" and r.accuracy == run["accuracy"] == meta["accuracy"]
        assert r.board == {
            "method": "sparsity-quantization",
            "setting": f"{mode} ×{meta['target_cr']:.0f}",
            "seed": 0,
            "input_size": [1, 28, 28],
            "base_model": "lenet5_caffe",
            "dataset": "fake-quadrants",
            "weight_bits": None if mode == "prune" else "infer",
            "weights": True,
            "extra": {k: meta[k] for k in ("cr_weights_only", "cr_with_biases", "cr_with_index")},
        }
        check_board(r.board)
        assert r.metrics["key"] == f"{mode}_cr{round(meta['target_cr'])}_seed0"
        assert run["size_bits"] <= run["S_bits"] + 1e-6  # the budget holds (measured size)
        assert run["measured_cr"] == run["cr_weights_only"] >= run["target_cr"] - 1e-6
        assert len(r.metrics["layers"]) == 4 and len(r.metrics["history"]) == cfg.intervals
        w = [m.weight for _, m in sq.compressible_layers(r.model)]
        assert sum(int((x != 0).sum()) for x in w) == sum(x["nnz"] for x in r.metrics["layers"])
    # manifest rows, as notebook 04 writes them
    out = tmp_path / "out"
    for r in res:
        m = r.metrics
        ck = sq.save_model(out, r)
        results.record_model(
            out, m["key"], model=m["model"], kwargs=m["kwargs"], checkpoint=ck, accuracy=r.accuracy, split=r.split,
            board=r.board, **m["row"],
        )  # fmt: skip
    rows = json.loads((out / "models.json").read_text())
    assert list(rows) == ["dense_seed0"] + [f"{m}_cr{t}_seed0" for m in modes] + ["quantize_cr32_seed0"]
    assert rows["dense_seed0"]["dataset"] == "fake-quadrants" and "board" not in rows["dense_seed0"]
    assert rows[f"joint_cr{t}_seed0"]["checkpoint"] == f"models/joint_cr{t}_seed0.pt"
    assert rows[f"joint_cr{t}_seed0"]["board"] == json.loads(json.dumps(runs[0].board))
    assert rows[f"prune_cr{t}_seed0"]["bits"] == [32, 32, 32, 32]
    meta = json.loads((out / "models" / f"fixed_cr{t}_seed0.json").read_text())
    assert meta["mode"] == "fixed" and [x["bits"] for x in meta["layers"]] == [4, 4, 4, 4]
    assert not (out / "models" / "dense_seed0.json").exists()
    from compresslib.rebuild import load_row_model

    back = load_row_model(rows[f"joint_cr{t}_seed0"], out)
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), runs[0].model.state_dict().values()))
    # a second run reuses every cached run and the cached dense model: the same numbers
    capsys.readouterr()
    again = sq.run(cfg, loaders, cache_dir=tmp_path / "cache", progress=True)
    assert f"[cache] reused joint_cr{t}_seed0-" in capsys.readouterr().out
    assert [r.accuracy for r in again] == [r.accuracy for r in res]
    assert [r.metrics.get("run") for r in again] == [r.metrics.get("run") for r in res]


def test_stage_tables_and_metrics_from_results():
    cfg = _tiny(n_seeds=2, ft_steps=0, intervals=1, warmup_intervals=0)
    nets = {s: create_model("lenet5_caffe", num_classes=3, widths=(4, 8, 16)) for s in cfg.seeds}
    res = sq.run(cfg, {s: _fake_loaders(s) for s in cfg.seeds}, dense=nets, progress=False)  # no pretraining
    assert [r.setting for r in res].count("dense") == 2
    runs, layers, hist = sq.tables(res)
    assert list(runs["mode"]) == ["joint", "joint", "fixed", "fixed", "prune", "prune"]
    assert len(layers) == 6 * 4 and len(hist) == 6 * cfg.intervals
    dense_acc = [r.accuracy for r in res if r.setting == sq.DENSE]
    summary = sq.summary_table(runs, sum(dense_acc) / 2)
    assert list(summary["mode"]) == ["joint", "fixed", "prune"]
    jf = sq.joint_vs_fixed(runs, cfg)
    assert len(jf) == 1 and jf[0]["seeds"] == [0, 1] and jf[0]["fixed_bits"] == 4
    acc = runs.set_index(["mode", "seed"])["accuracy"]
    assert jf[0]["joint_accuracy"] == pytest.approx((acc["joint", 0] + acc["joint", 1]) / 2)
    assert jf[0]["diff_pts"] == pytest.approx(100 * (jf[0]["joint_accuracy"] - jf[0]["fixed_accuracy"]))
    metrics = sq.stage_metrics(summary, jf, dense_acc, cfg.seeds)
    assert set(metrics) == {"dense_accuracy", "dense_accuracy_std", "cr_accounting", "results", "fixed_bits"}
    assert [r["mode"] for r in metrics["results"]] == ["joint", "fixed", "prune"]
    assert metrics["results"][0]["accuracy"] == pytest.approx(jf[0]["joint_accuracy"])
    abl = sq.ablation_table(summary, sq.compressed_weights(nets[0]))
    assert list(abl.columns) == ["target_cr", "fixed", "joint", "prune"] and len(abl) == 1
    lines = sq.summary_lines(summary, abl, metrics["dense_accuracy"]) + sq.verdicts(metrics)
    assert any(line.startswith(f"joint {summary['target_cr'][0]:7.1f}x target") for line in lines)
    assert any("budgets on this proxy" in line for line in lines)


# -------------------------------------------------------------- ADMM and finetune as fit callbacks
class _Record(train.Callback):
    """Records the inputs of every step and stops after ``steps``."""

    def __init__(self, steps):
        self.steps, self.seen = steps, []

    def on_batch_start(self, s):
        self.seen.append(s.inputs[:, 0, 0, 0].tolist())

    def after_step(self, s):
        s.stop = s.step + 1 >= self.steps

    def fingerprint(self):
        return {"steps": self.steps}


def test_fit_phases_continue_the_plain_loop_batch_stream():
    """The ADMM and finetune phases run on ``train.fit`` (seed=None) and see exactly the batches a plain
    ``for`` loop over the loader sees, across epoch boundaries and from one phase to the next (the stream is
    neither restarted at a seed nor shifted by the progress wrapper's extra ``iter()``)."""
    x = torch.arange(40, dtype=torch.float32).view(40, 1, 1, 1).expand(40, 1, 2, 2).contiguous()

    def loader():
        ds = TensorDataset(x, torch.zeros(40, dtype=torch.long))
        return DataLoader(ds, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(3))

    plain, it = [], iter(())
    ref = loader()
    for n in (12, 7):  # two phases of 12 and 7 steps: 5 batches per epoch, each phase a fresh endless loop
        it = (b for _ in range(10) for b in ref)
        plain.append([next(it)[0][:, 0, 0, 0].tolist() for _ in range(n)])
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    L, got = loader(), []
    for n in (12, 7):
        rec = _Record(n)
        sq._fit_steps(net, L, n, rec, momentum=0.9, lr=0.0, device="cpu", progress=False)
        got.append(rec.seen)
    assert got == plain
    assert torch.equal(L.generator.get_state(), ref.generator.get_state())  # the stream is where the loop left it
