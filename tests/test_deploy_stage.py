"""Stage 10's per-row logic (compresslib.deploy.stage) on a fake artifacts folder: tiny models written as
manifest rows (results.record_model), then packed, reloaded, exported and run like the notebook does."""

from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

from compresslib import data, results, train
from compresslib.deploy import stage as ds
from compresslib.manifest import board_rows
from compresslib.models import create_model

KW = dict(num_classes=10, in_channels=1, image_size=16, widths=[2, 4, 80, 8])  # digits, 8 px upsampled to 16
STAGE = "04_sparsity_quantization"


def _prune_quantize(model: nn.Module, density: float, levels: int) -> nn.Module:
    """Largest |w| kept (``density``, at least 4 per level), snapped to ``levels`` quantiles of the kept values."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                w = m.weight
                keep = torch.zeros(w.numel(), dtype=torch.bool)
                keep[w.abs().reshape(-1).topk(max(4 * levels, int(density * w.numel()))).indices] = True
                lv = torch.quantile(w.reshape(-1)[keep], torch.linspace(0, 1, levels))
                q = lv[(w.reshape(-1, 1) - lv).abs().argmin(1)]
                w.copy_(torch.where(keep, q, torch.zeros_like(q)).reshape(w.shape))
    return model


def _record(out, key, model, setting, **board):
    ck = out / "models" / f"{key}.pt"
    ck.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict()}, ck)
    test = torch.utils.data.DataLoader(data.get_dataset("digits", "test", image_size=16), batch_size=500)
    results.record_model(
        out,
        key,
        model="lenet5",
        kwargs=KW,
        checkpoint=ck,
        accuracy=train.evaluate(model, test)["accuracy"],
        split="test",
        board=dict(
            method="sq",
            setting=setting,
            seed=0,
            input_size=[1, 16, 16],
            base_model="lenet5",
            dataset="digits",
            **board,
        ),
    )


@pytest.fixture(scope="module")
def art(tmp_path_factory):
    """04's folder with a dense row (architecture-only on the board) and a 95 %-sparse 3-bit row."""
    art = tmp_path_factory.mktemp("art")
    out = art / STAGE
    torch.manual_seed(0)
    dense = create_model("lenet5", **{**KW, "widths": tuple(KW["widths"])}).eval()
    _record(out, "dense", dense, "fp32", weight_bits=None, weights=False)  # costed as an architecture on 09
    sq = _prune_quantize(create_model("lenet5", **{**KW, "widths": tuple(KW["widths"])}).eval(), 0.05, 8)
    _record(out, "sq", sq, "x20", weight_bits="infer")
    results.write_metrics(out, {"done": True})
    return art


@pytest.fixture(scope="module")
def rows(art, tmp_path_factory):
    out, cache = tmp_path_factory.mktemp("10_deploy"), {}
    got = {
        key: ds.deploy_manifest_row(stage, key, row, art, out, repeats=3, ref_cache=cache)
        for stage, key, row in board_rows(art, [STAGE])
    }
    assert len(cache) == 1  # both rows share one reference export
    folder = Path(next(iter(cache.values()))["_onnx"]).parent
    ds.release(cache)
    assert not cache and not folder.exists()
    return out, got


def test_every_row_has_every_key_and_real_bytes(rows):
    out, got = rows
    assert sorted(got) == ["dense", "sq"]
    for key, r in got.items():
        assert set(ds.ROW_KEYS) <= set(r), key
        assert r["bytes_on_disk"] == len((out / r["packed_file"]).read_bytes()) > 0
        assert 0 < r["bytes_on_disk_zstd"] and r["roundtrip_bit_exact"] is True
        assert r["ort_argmax_agreement"] == 1.0 and r["test_images"] == 359
        assert r["split_reconstructed"] is True, r["split"]
        for k in ("torch_ms_b1", "ort_ms_b1", "ort_ms_b64", "macs_speedup_claimed", "latency_speedup_measured"):
            assert r[k] > 0, (key, k)
        assert r["claimed_source"].startswith("leaderboard.model_costs")
        # the reference is the base model at its default widths 6-16-120-84, at the row's 16 px
        assert r["reference"] == "lenet5(num_classes=10, in_channels=1, image_size=16) fp32 dense"
        assert r["reference_weights"] == 6 * 25 + 16 * 6 * 25 + 120 * 16 * 1 + 120 * 84 + 84 * 10


def test_sparse_quantized_row_is_smaller_and_gets_int8_and_csr(rows):
    _, got = rows
    dense, sq = got["dense"], got["sq"]
    assert dense["int8_ms_b1"] is None and "int8 not tried: a layer has 640 > 256 distinct weights" in dense["notes"]
    assert sq["int8_ms_b1"] > 0 and 0.9 <= sq["int8_argmax_agreement"] <= 1.0
    assert sq["max_weight_levels"] == 8 and dense["max_weight_levels"] == 640
    assert sq["largest_excess"].startswith("(container)")
    assert sq["bytes_on_disk"] < dense["bytes_on_disk"] / 3
    assert sq["claimed_cr"] > 10 * dense["claimed_cr"]
    # against the default-width base: the narrow dense net claims its architecture's MAC ratio, the sparse one more
    assert dense["effective_macs"] == dense["dense_macs"] < dense["reference_dense_macs"]
    assert dense["macs_speedup_claimed"] == pytest.approx(dense["reference_dense_macs"] / dense["dense_macs"])
    assert sq["macs_speedup_claimed"] > 1.5 * dense["macs_speedup_claimed"]
    # dense fp32: the file is the fp32 weights + biases + a few hundred bytes of container
    assert 1.0 < dense["real_over_accounted"] < 1.0 + 600 / dense["bytes_on_disk"]
    assert [s["layer"] for s in sq["sparse_linear"]] == ["classifier.3"] and sq["csr_speedup_over_1"] in (True, False)
    assert dense["sparse_linear"] == [] and dense["csr_speedup_over_1"] is None
    assert "architecture only" in dense["notes"] and "architecture only" not in sq["notes"]


def test_claimed_numbers_come_from_the_leaderboard_runs_when_present(art, tmp_path):
    (stage, key, row) = [r for r in board_rows(art, [STAGE]) if r[1] == "sq"][0]
    runs = pd.DataFrame(
        [dict(method="sq", setting="x20", seed=0, size_bits_with_index=8000.0, effective_macs=1e4, dense_macs=1e5)]
    )
    r = ds.deploy_manifest_row(stage, key, row, art, tmp_path, repeats=3, runs=runs, int8=False, test_images=100)
    assert r["claimed_source"] == "09_leaderboard/runs.csv" and r["claimed_bits"] == 8000.0
    assert r["test_images"] == 100 and r["split_reconstructed"] is None and "first 100 images only" in r["split"]
    assert r["real_over_claimed"] == pytest.approx(r["bytes_on_disk"] / 1000.0)
    assert r["macs_speedup_claimed"] == pytest.approx(r["reference_dense_macs"] / 1e4)
    assert r["int8_ms_b1"] is None


def test_missing_checkpoint_and_summary(art, tmp_path):
    (stage, key, row) = board_rows(art, [STAGE])[0]
    bad = {**row, "checkpoint": "models/nowhere.pt"}
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        ds.deploy_manifest_row(stage, key, bad, art, tmp_path)
    failed = ds.failed_row(stage, key, bad, FileNotFoundError("nowhere.pt"))
    assert set(ds.ROW_KEYS) <= set(failed) and failed["notes"].startswith("FAILED: FileNotFoundError")
    s = ds.summary([failed, {"ort_argmax_agreement": 0.99, "real_over_claimed": 2.0}])
    assert s["ort_argmax_agreement"] == 0.99 and s["n_failed"] == 1 and s["real_over_claimed_median"] == 2.0


def test_a_model_that_does_not_export_whole_is_exported_per_stage(tmp_path):
    class Cascade(nn.Module):  # a gate in Python: exported as its two stages
        def __init__(self):
            super().__init__()
            self.small = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
            self.large = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))

        def forward(self, x):  # the tracer would freeze the branch the dummy input takes
            y = self.small(x)
            return y if bool(y.softmax(1).max() > 0.5) else self.large(x)

    parts, note = ds.export_parts(Cascade().eval(), (1, 4, 4), tmp_path)
    assert [n for n, _ in parts] == ["small", "large"] and "the gate runs in Python" in note
    assert all(p.is_file() for _, p in parts)
    parts, note = ds.export_parts(nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval(), (1, 4, 4), tmp_path)
    assert note == "whole model" and len(parts) == 1


@pytest.mark.parametrize("with_threshold", [True, False])
def test_a_cascade_row_runs_its_stages_apart_with_the_gate_in_python(tmp_path, with_threshold):
    """Cascade rows (builder "cascade"): each stage exported alone; with extra.threshold (stage 09) the margin gate
    applied to both runtimes' logits, latency = small + escalated × large; without it (stage 07) the escalation
    rate of exec_weight and the agreement of each stage."""
    from compresslib.rebuild import build_model

    small = {"model": "lenet5", "kwargs": {**KW, "widths": [2, 2, 8, 8]}}
    row = {
        "model": "cascade",
        "kwargs": {"small": small, "large": {"model": "lenet5", "kwargs": KW}, "small_resolution": 16},
    }
    torch.manual_seed(1)
    net = build_model(row)
    for p in net.parameters():  # a build is seeded (identical stages); perturb it like training would
        p.data += 0.3 * torch.randn_like(p)
    test = data.get_dataset("digits", "test", image_size=16)
    x, y = map(torch.stack, zip(*[(test[i][0], torch.as_tensor(test[i][1])) for i in range(len(test))]))
    with torch.no_grad():
        z, esc = ds.gated(net.small(x), net.large(x), 0.3)
    out = tmp_path / "09_leaderboard"
    ck = out / "c.pt"
    ck.parent.mkdir(parents=True)
    torch.save({"model": net.state_dict()}, ck)
    board = dict(method="EdgeCompress", setting="cascade", seed=0, input_size=[1, 16, 16], base_model="lenet5")
    board.update(dataset="digits", weight_bits=None)
    if with_threshold:
        board["extra"] = {"threshold": 0.3, "escalated": 0.5}
    else:
        board["exec_weight"] = {"large.features.0": 0.25}
    acc = float((z.argmax(1) == y).double().mean())
    results.record_model(
        out, "casc", model="cascade", kwargs=row["kwargs"], checkpoint=ck, accuracy=acc, split="test", board=board
    )
    results.write_metrics(out, {"done": True})
    (stage, key, r) = board_rows(tmp_path)[0]
    got = ds.deploy_manifest_row(stage, key, r, tmp_path, tmp_path / "10", repeats=3, int8=False)
    assert got["onnx"].startswith("each stage exported alone (small, large") and got["ort_argmax_agreement"] == 1.0
    assert got["roundtrip_bit_exact"] is True and got["test_images"] == len(y)
    if with_threshold:
        assert got["escalated"] == pytest.approx(float(esc.double().mean())) and 0 < got["escalated"] < 1
        assert got["split_reconstructed"] is True
        assert f"latency = small + {got['escalated']:.3f} (escalated) x large" in got["notes"]
    else:
        assert "escalated" not in got and got["split_reconstructed"] is None
        assert "latency = small + 0.250 (escalated) x large" in got["notes"] and "agreement per stage" in got["notes"]


def test_bytes_breakdown_adds_up_to_the_file_and_to_the_accounting(art, rows):
    from compresslib.rebuild import load_row_model

    _, got = rows
    (stage, key, row) = [r for r in board_rows(art, [STAGE]) if r[1] == "sq"][0]
    b = ds.bytes_breakdown(load_row_model(row, art / stage), row).set_index("tensor")
    assert b.loc["TOTAL", "bytes"] == got["sq"]["bytes_on_disk"]
    assert b.loc["TOTAL", "acc_bytes"] == pytest.approx(got["sq"]["claimed_bits"] / 8 + got["sq"]["other_state_bytes"])
    assert b.loc["(container)", "acc_bytes"] == 0 and b.loc["classifier.3.bias", "acc_bytes"] == 4 * 8


def test_the_python_gate_is_the_one_the_cascade_accuracy_was_computed_with():
    from compresslib.methods import cascade

    g = torch.Generator().manual_seed(3)
    zs, zl, y = (
        torch.randn(200, 10, generator=g),
        torch.randn(200, 10, generator=g),
        torch.randint(0, 10, (200,), generator=g),
    )
    table = cascade.sweep([zs, zl], [1, 10], [0.1, 0.3, 0.6], y, alpha=ds.CASCADE_ALPHA)
    for r in table.itertuples():
        z, esc = ds.gated(zs, zl, r.threshold)
        assert float((z.argmax(1) == y).double().mean()) == pytest.approx(r.accuracy)
        assert float(esc.double().mean()) == pytest.approx(r.escalated)


def test_notebook_parameters_are_the_config_with_the_same_ranges():
    """Stage 10's parameters cell declares the ranges the runner checks; they are ds.Config's."""
    import dataclasses
    import math

    from compresslib.workbook.stage_params import parameters_with_ranges

    defaults, ranges = parameters_with_ranges(Path(__file__).resolve().parents[1] / "notebooks" / "10_deploy.py")
    cfg = ds.Config.from_parameters(defaults)
    fields = {f.name for f in dataclasses.fields(ds.Config)}
    assert cfg == ds.Config(**{f: defaults[f.upper()] for f in fields})
    for name, rng in ds.Config.RANGES.items():
        lo, hi, lo_closed, hi_closed = ranges[name.upper()]
        assert (lo, hi) == (rng.get("lo", -math.inf), rng.get("hi", math.inf)), name
        assert lo_closed == (not rng.get("lo_open", False)), name
        assert hi_closed == (not rng.get("hi_open", False)) or math.isinf(hi), name  # "inf)" and "inf]" alike
    assert cfg.row_options() == dict(
        threads=1, repeats=20, int8=True, sparse_min=0.9, zstd_level=19, test_images=0, data_root=None
    )
    with pytest.raises(ValueError, match=r"repeats.*\[3, 100000\].*2"):
        ds.Config(repeats=2).validate()


def test_select_rows_keeps_the_lowest_seeds_per_setting():
    def r(method, setting, seed):
        return {"board": {"method": method, "setting": setting, "seed": seed}}

    found = [
        ("04", "c", r("m", "a", 2)),
        ("04", "a", r("m", "a", 0)),
        ("03", "x", r("e", "b", 5)),
        ("04", "b", r("m", "a", 1)),
    ]
    assert [k for _, k, _ in ds.select_rows(found)] == ["x", "a", "b", "c"]
    assert [k for _, k, _ in ds.select_rows(found, 2)] == ["x", "a", "b"]
    assert [k for _, k, _ in ds.select_rows(found, 1)] == ["x", "a"]


def test_deploy_rows_reports_a_broken_row_without_hiding_the_others(art, tmp_path):
    found = board_rows(art, [STAGE])
    broken = ("04_sparsity_quantization", "broken", {**found[0][2], "checkpoint": "nowhere.pt"})
    got = ds.deploy_rows([broken, *found], art, tmp_path, ds.Config(repeats=3), progress=False)
    assert [r["key"] for r in got] == ["broken", *[k for _, k, _ in found]]
    assert got[0]["notes"].startswith("FAILED: ") and got[0]["bytes_on_disk"] is None
    assert all(r["bytes_on_disk"] > 0 and r["roundtrip_bit_exact"] for r in got[1:])
    assert ds.summary(got)["n_failed"] == 1
