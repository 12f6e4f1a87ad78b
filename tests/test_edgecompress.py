"""EdgeCompress on the method contract (``edgecompress.Config`` + ``edgecompress.run``): every declared range and rule
refused naming the field, the notebook's declared ranges equal to the Config's, and one tiny run on fake data
(3 x 32 x 32, no true boxes): Result schema, the board rows stage 09 reads (static models costed from their
architecture, the cascade at its val-chosen point), models.json rows that rebuild an equal-cost module and load
their checkpoints."""

import dataclasses
import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from compresslib import cost, rebuild, results
from compresslib.manifest import check_board
from compresslib.methods import cascade, crop, edgecompress
from compresslib.models import create_model
from compresslib.models.shrinkable import shrink_depths
from compresslib.workbook.stage_params import parameters_with_ranges

ROOT = Path(__file__).resolve().parent.parent
Config = edgecompress.Config


def _violations(rng: dict):
    """Values just outside ``rng`` on each finite side (and a fraction for an integer range)."""
    lo, hi = rng.get("lo", -math.inf), rng.get("hi", math.inf)
    bad = []
    if math.isfinite(lo):
        bad.append(lo if rng.get("lo_open") else lo - 1)
    if math.isfinite(hi):
        bad.append(hi if rng.get("hi_open") else hi + 1)
    if rng.get("integer"):
        bad.append((lo if math.isfinite(lo) else 0) + 1.5)
    return bad


CASES = [(f, v) for f, rng in Config.RANGES.items() for v in _violations(rng)]


@pytest.mark.parametrize("field,value", CASES, ids=[f"{f}={v}" for f, v in CASES])
def test_each_range_violation_names_the_field(field, value):
    default = getattr(Config(), field)
    value = [value] if isinstance(default, list) else value
    with pytest.raises(ValueError, match=rf"^{field}(\[0\])? must be (an integer|a number) in [\[(]"):
        dataclasses.replace(Config(), **{field: value}).validate()


@pytest.mark.parametrize(
    "changes,pattern",
    [
        ({"cs_configs": [[0.5, 0.5]]}, r"cs_configs\[0\] must be a \[d, w, r\] list"),
        ({"cs_configs": [[1.5, 0.5, 16]]}, r"cs_configs\[0\]\[0\] \(depth d\) must be a number in \(0, 1\]"),
        (
            {"cs_configs": [[0.5, 0.5, 16.5]]},
            r"cs_configs\[0\]\[2\] \(resolution r\) must be an integer in \[4, 4096\]",
        ),
        ({"probe": [0.5, 5, 12]}, r"probe\[1\] \(width w\) must be a number in \(0, 4\]"),
        ({"small": [0.5, 1.0, 16]}, r"small=\[0.5, 1.0, 16\] must be \[\] or one of cs_configs"),
        ({"small": "auto"}, r"small must be \[\] \(chosen on val\) or one \[d, w, r\]"),
        ({"resolutions": []}, r"resolutions must be a non-empty list"),
        ({"cam_layers": ["first"]}, r"cam_layers must list last and/or penultimate"),
        ({"box_pool": "max"}, r"box_pool must be avg or grid"),
        ({"score": "logit"}, r"unknown score 'logit'"),
        ({"dataset": "mnist6k"}, r"mnist6k"),
        ({"arch": "vgg"}, r"unknown ARCH 'vgg'"),
        ({"device": "tpu"}, r"DEVICE must be 'cpu' or 'cuda\[:k\]'"),
    ],
)
def test_method_rules_name_the_field(changes, pattern):
    with pytest.raises((ValueError, TypeError, KeyError), match=pattern):
        Config(**changes).validate()
    Config(small=[0.5, 1.0, 12]).validate()  # one of the default cs_configs


def test_notebook_parameters_map_onto_the_config_with_the_same_ranges():
    """The runner checks the ranges declared in the parameters cell before any stage starts; they are the
    Config's (a notebook name is the field's upper-case name)."""
    defaults, ranges = parameters_with_ranges(ROOT / "notebooks" / "07_dynamic_inference.py")
    cfg = Config.from_parameters(defaults)
    fields = {f.name for f in dataclasses.fields(Config)}
    assert fields <= {n.lower() for n in defaults}
    assert cfg == Config(**{f: defaults[f.upper()] for f in fields})
    for name, rng in Config.RANGES.items():
        lo, hi, lo_closed, hi_closed = ranges[name.upper()]
        assert (lo, hi) == (rng.get("lo", -math.inf), rng.get("hi", math.inf)), name
        assert (lo_closed, hi_closed) == (not rng.get("lo_open", False), not rng.get("hi_open", False)), name


TINY = dict(compare_seeds=[0, 1])  # seed 1: the per-seed retrains (not on the board)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """One tiny run on fake data: (config, loaders, results, cache folder)."""
    cfg = dataclasses.replace(edgecompress._tiny(), **TINY).validate()
    loaders = crop.load_image_splits("fake", subset=40, test_subset=20)
    cache = tmp_path_factory.mktemp("ec-cache")
    return cfg, loaders, edgecompress.run(cfg, loaders, cache_dir=cache, progress=False), cache


def _arch(d, w, r):
    """What the old stage-09 collector built for a static row (cost from the architecture, seed 0)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return create_model("shrinkable_resnet", num_classes=10, in_channels=3, depths=shrink_depths((2, 2, 2), d),
                            width_mult=w, resolution=r)  # fmt: skip


def test_tiny_run_results_and_board_rows(tiny):
    cfg, loaders, res, _ = tiny
    board = [r for r in res if r.board is not None]
    settings = ["resolution-only RCC r16", "crop-only DIC r16", "crop+shrink CS d0.5 w0.5 r8"]
    assert [r.setting for r in board] == settings + [board[-1].setting]
    # seed 1: the small and large models retrained, the baselines at the lowest resolution (the large crop-only
    # model again: recorded once), one cascade Result without a model
    assert sorted((r.setting, r.model is None) for r in res if r.seed == 1) == sorted(
        [(s, False) for s in settings[::-1]] + [("cascade", True)]
    )
    rep = edgecompress.report(res)
    m = edgecompress.stage_metrics(res)
    casc = board[-1]
    assert casc.setting == f"cascade hi={m['threshold']:.2f}" and casc.accuracy == m["cascade_accuracy"]
    static = rep["static"]
    for r, row in zip(board[:-1], static.itertuples()):
        b = check_board(r.board)
        assert r.split == "test" and r.accuracy == row.test_accuracy and r.seed == b["seed"] == 0
        assert b["input_size"] == [3, row.r, row.r] and b["weights"] is False and b["weight_bits"] is None
        assert b["extra_macs"] == row.cropper_macs == (0 if row.kind == "resolution-only" else rep["cropper_macs"])
        assert b["dataset"] == "fake" and b["base_model"] == "shrinkable_resnet" and b["method"] == "EdgeCompress"
        built = rebuild.build_model(r.metrics["manifest"])
        assert cost.total_macs(built, (3, row.r, row.r)) == cost.total_macs(
            _arch(row.d, row.w, row.r), (3, row.r, row.r)
        )
        assert row.macs == cost.total_macs(built, (3, row.r, row.r)) + row.cropper_macs
    b = check_board(casc.board)
    large = [n for n, mod in casc.model.named_modules() if isinstance(mod, (nn.Conv2d, nn.Linear))]
    assert b["exec_weight"] == {n: m["cascade_escalated"] for n in large if n.startswith("large.")}
    assert b["exec_weight"] and b["deploy_form"] == "cascade (both stages timed)" and b["weights"] is False
    assert b["input_size"] == [3, 16, 16] and b["extra_macs"] == rep["cropper_macs"]
    # per seed: one cascade Result per seed, the chosen one on the board
    assert [r.seed for r in res if r.setting.startswith("cascade")] == [1, 0]
    assert (
        [r["seed"] for r in m["per_seed"]] == [0, 1]
        and m["per_seed"][0]["cascade_accuracy"] == m["cascade_accuracy"]
        and m["small_config"] == "0.5:0.5:8"
    )
    assert m["pseudo_box_test_miou"] is None and rep["ablation"]["note"].startswith("true-box ablation skipped")


def test_manifest_rows_rebuild_an_equal_cost_cascade_and_load_their_checkpoints(tiny, tmp_path):
    cfg, loaders, res, cache = tiny
    out = tmp_path / "07_dynamic_inference"
    out.mkdir()
    results.clear_models(out)
    for row in edgecompress.manifest_rows(res):
        results.record_model(out, **row)
    rows = results.read_json(out / "models.json")
    assert rows["box_predictor_pseudo"]["split"] == "val" and rows["box_predictor_pseudo"]["accuracy"] is None
    assert sum(r.get("board") is not None for r in rows.values()) == 4
    assert {"rcc-r16-s1", "crop-r16-s1", "cs-d0.5-w0.5-r8-s1"} <= set(rows)
    (casc,) = [r for r in res if r.board is not None and r.setting.startswith("cascade")]
    row = rows["cascade"]
    assert row["model"] == "cascade" and row["kwargs"]["small_resolution"] == 8
    rebuilt = rebuild.build_model(row)
    assert isinstance(rebuilt, cascade.CascadeCost) and isinstance(rebuilt.small, cascade.Resized)
    size = tuple(casc.board["input_size"])
    assert cost.total_macs(rebuilt, size) == cost.total_macs(casc.model, size) > 0
    assert cost.layer_table(rebuilt, size)["macs"].tolist() == cost.layer_table(casc.model, size)["macs"].tolist()
    loaded = rebuild.load_row_model(row, out)  # strict: the checkpoint holds both trained stages
    x = torch.randn(2, *size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), casc.model.eval()(x), rtol=0, atol=1e-6)
    for key, r in rows.items():
        if r.get("board") is not None:
            rebuild.load_row_model(r, out)  # weights False rows still point to that architecture's trained weights
    (out / "metrics.json").write_text("{}")  # a finished stage
    cands, report = rebuild.candidates(tmp_path)
    assert report == {"07_dynamic_inference": 4}
    assert {c.setting for c in cands} == {r.board["setting"] for r in res if r.board is not None}


def test_bad_box_sizes_and_missing_cache_are_refused_before_any_training(monkeypatch, tmp_path):
    def boom(*a, **k):
        raise AssertionError("TRAINING STARTED")

    monkeypatch.setattr(crop, "train_classifier", boom)
    loaders = crop.load_image_splits("fake", subset=20, test_subset=10)
    cfg = edgecompress._tiny()
    with pytest.raises(ValueError, match=r"box_sizes must lie in \[1, 32\] - pixels of the 32-px fake images"):
        edgecompress.run(cfg.replace(box_sizes=[16, 48]), loaders, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="needs cache_dir"):
        edgecompress.run(cfg, loaders)
    with pytest.raises(ValueError, match="loaders must hold train, val and test image sets"):
        edgecompress.run(cfg, None, cache_dir=tmp_path)
