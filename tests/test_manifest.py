"""The model manifest (models.json board rows) is all the leaderboard reads: a method joins the board by its rows."""

import json

import pytest
import torch
import torch.nn as nn

import compresslib
from compresslib import cost, leaderboard as lb, results, stages
from compresslib.manifest import BOARD_FIELDS, check_board
from compresslib.methods import baselines
from compresslib.models import create_model
from compresslib.rebuild import build_model, candidates
from compresslib.train import save_checkpoint

compresslib.set_threads(1)
UP = stages.UPSTREAM["09_leaderboard"]


def _board(**kw):
    b = dict(
        method="my method",
        setting="level 1",
        seed=0,
        input_size=[1, 28, 28],
        base_model="lenet5_caffe",
        dataset="mnist5k",
        weight_bits=None,
    )
    return {**b, **kw}


def _sparse_lenet(seed=0):
    torch.manual_seed(seed)
    net = create_model("lenet5_caffe")
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.mul_(m.weight.abs() > 0.05)
    return net


def _stage(art, name, finished=True):
    d = art / name
    d.mkdir(parents=True, exist_ok=True)
    if finished:
        (d / "metrics.json").write_text("{}")
    return d


def test_a_fake_method_reaches_the_board_by_writing_manifest_rows_only(tmp_path):
    d = _stage(tmp_path, UP[0])
    for seed, acc in ((0, 0.91), (1, 0.93)):
        net = _sparse_lenet(seed)
        ck = save_checkpoint(d / f"m{seed}.pt", model=net.state_dict())
        results.record_model(
            d,
            f"mine_seed{seed}",
            model="lenet5_caffe",
            kwargs={},
            checkpoint=ck,
            accuracy=acc,
            split="test",
            board=_board(seed=seed),
        )
    results.record_model(d, "dense", model="lenet5_caffe", kwargs={}, checkpoint=ck, accuracy=0.9, split="val")
    hidden = _stage(tmp_path, UP[1], finished=False)  # a half-run stage is not read
    results.record_model(
        hidden, "x", model="lenet5_caffe", kwargs={}, checkpoint=ck, accuracy=0.5, split="test", board=_board()
    )
    cands, found = candidates(tmp_path, stages=UP)
    assert found == {UP[0]: 2} and [c.seed for c in cands] == [0, 1]
    assert all(c.spec == {"model": "lenet5_caffe", "kwargs": {}, "build": {}} for c in cands)
    assert torch.equal(
        cands[1].model.state_dict()["features.0.weight"], _sparse_lenet(1).state_dict()["features.0.weight"]
    )
    board = lb.aggregate([lb.candidate_row(c, latency_repeats=3) for c in cands]).set_index("method")
    row = board.loc["my method"]
    assert row.setting == "level 1" and row.n_seeds == 2 and row.accuracy == pytest.approx(0.92)
    assert row.effective_macs < row.dense_macs == cost.total_macs(create_model("lenet5_caffe"), (1, 28, 28))
    assert row.source == UP[0]


def test_a_broken_row_is_reported_and_does_not_hide_the_others(tmp_path):
    d = _stage(tmp_path, UP[0])
    ck = save_checkpoint(d / "m.pt", model=_sparse_lenet().state_dict())
    kw = dict(model="lenet5_caffe", kwargs={}, accuracy=0.9, split="test")
    results.record_model(d, "ok", checkpoint=ck, board=_board(), **kw)
    results.record_model(d, "gone", checkpoint=d / "missing.pt", board=_board(setting="lost"), **kw)
    cands, found = candidates(tmp_path, stages=UP)
    assert [c.setting for c in cands] == ["level 1"]
    assert "gone" in found[UP[0]] and "missing.pt" in found[UP[0]]


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(method=None), "missing \\['method'\\]"),
        (dict(colour="red"), "unknown \\['colour'\\]"),
        (dict(input_size=[1, 28]), "input_size must be \\[C, H, W\\]"),
        (dict(seed=-1), "seed must be an integer in \\[0, inf\\)"),
        (dict(extra_macs=-5.0), "extra_macs must be a number in \\[0, inf\\)"),
    ],
)
def test_board_rows_are_checked_before_they_are_written(tmp_path, change, message):
    b = {k: v for k, v in _board(**change).items() if v is not None}
    with pytest.raises((ValueError, TypeError), match=message):
        results.record_model(
            tmp_path,
            "k",
            model="lenet5_caffe",
            kwargs={},
            checkpoint=tmp_path / "x",
            accuracy=0.9,
            split="test",
            board=b,
        )
    assert not (tmp_path / "models.json").exists()


def test_a_board_accuracy_must_be_a_test_accuracy(tmp_path):
    with pytest.raises(ValueError, match="must be measured on 'test', got 'val'"):
        results.record_model(
            tmp_path, "k", model="m", kwargs={}, checkpoint=tmp_path / "x", accuracy=0.9, split="val", board=_board()
        )
    assert set(BOARD_FIELDS) >= set(check_board(_board()))


def test_clear_models_starts_the_run_afresh(tmp_path):
    results.record_model(tmp_path, "old", model="m", kwargs={}, checkpoint=tmp_path / "x", accuracy=0.1, split="val")
    results.clear_models(tmp_path)
    results.record_model(tmp_path, "new", model="m", kwargs={}, checkpoint=tmp_path / "x", accuracy=0.2, split="val")
    assert list(json.loads((tmp_path / "models.json").read_text())) == ["new"]


def test_architecture_rows_do_not_depend_on_the_global_rng(tmp_path):
    """Rows costed from their architecture (board.weights False) are built under a forked RNG seeded 0: an
    unseeded init made the non-zero count, and so size/BitOPs/MicroNet score, differ between runs."""
    d = _stage(tmp_path, UP[0])
    results.record_model(
        d,
        "arch",
        model="lenet5",
        kwargs={"widths": [3, 8, 60, 42]},
        checkpoint=d / "none.pt",
        accuracy=0.8,
        split="test",
        board=_board(weights=False, input_size=[1, 32, 32]),
    )
    states = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        (c,) = candidates(tmp_path, stages=UP)[0]
        states.append(c.model.state_dict())
        after = torch.rand(1)
        torch.manual_seed(seed)
        assert torch.equal(after, torch.rand(1))  # the caller's RNG stream is left untouched
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert c.model.features[0].out_channels == 3  # the recorded widths, not the default


def test_the_cascade_builder_costs_the_small_model_plus_the_large_one():
    small = {"model": "lenet5", "kwargs": {"widths": [2, 4, 20, 10], "image_size": 16}}
    large = {"model": "lenet5", "kwargs": {}}
    net = build_model({"model": "cascade", "kwargs": {"small": small, "large": large, "small_resolution": 16}})
    macs = cost.total_macs(net, (1, 32, 32))
    expect = cost.total_macs(build_model(small), (1, 16, 16)) + cost.total_macs(build_model(large), (1, 32, 32))
    assert macs == expect
    assert net(torch.zeros(2, 1, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError, match="cascade kwargs miss \\['small_resolution'\\]"):
        build_model({"model": "cascade", "kwargs": {"small": small, "large": large}})


def test_the_camp_builder_rebuilds_dual_and_static_plan_nets():
    kw = {"depth": 8, "widths": [4, 8, 16], "num_classes": 10, "in_channels": 1, "bits": 1}
    dual = build_model({"model": "compresslib.methods.camp.CampResNet", "kwargs": kw, "kind": "dual"})
    static = build_model(
        {"model": "compresslib.methods.camp.CampResNet", "kwargs": kw, "kind": "static", "static_plan": "011"}
    )
    assert any("path4" in n for n, _ in dual.named_modules())
    assert static(torch.zeros(1, 1, 8, 8)).shape == (1, 10)
    with pytest.raises(ValueError, match="static_plan must be a list of 0/1"):
        build_model({"model": "compresslib.methods.camp.CampResNet", "kwargs": kw, "kind": "static", "static_plan": 7})


def test_upstream_dense_only_when_model_data_and_subset_match(tmp_path):
    d = _stage(tmp_path, "04_sparsity_quantization")
    net = _sparse_lenet()
    ck = save_checkpoint(d / "dense0.pt", model=net.state_dict())
    row = dict(model="lenet5_caffe", kwargs={}, checkpoint=ck, accuracy=0.9, split="test")
    results.record_model(d, "dense_seed0", dataset="mnist5k", subset=0, **row)
    got, where = baselines.upstream_dense(tmp_path, "lenet5_caffe", "mnist5k", 0, 0)
    assert where == "04_sparsity_quantization/dense0.pt"
    assert torch.equal(got.state_dict()["classifier.3.weight"], net.state_dict()["classifier.3.weight"])
    assert baselines.upstream_dense(tmp_path, "lenet5_caffe", "mnist5k", 500, 0) is None  # other subset
    assert baselines.upstream_dense(tmp_path, "lenet5", "mnist5k", 0, 0) is None  # other model
    assert baselines.upstream_dense(tmp_path, "lenet5_caffe", "digits", 0, 0) is None  # other data
    assert baselines.upstream_dense(tmp_path, "lenet5_caffe", "mnist5k", 0, 1) is None  # no such seed
