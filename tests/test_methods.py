"""Registry-wide method tests (timm-style): every method registered with ``@register_method`` is checked for
config validation, a tiny run on fake data, the Result schema, save/load of its models and the cost table.

Methods registered later appear here automatically. A method runs on in-memory fake ``data.Loaders``
(1 channel, the config's ``image_size`` or its model's input size) unless ``FAKE_DATA`` names another builder
(EdgeCompress reads image sets with boxes). One tiny run per method, shared by the tests below.
"""

import dataclasses
import math
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import compresslib.methods.all  # noqa: F401  (fills METHODS)
from compresslib import cost, data, rebuild
from compresslib.manifest import check_board
from compresslib.methods import METHODS, Result, method_config, run_method
from compresslib.train import load_checkpoint, load_weights

NAMES = METHODS.names()


def _fake_loaders(cfg, n_train: int = 96, n_eval: int = 32, batch: int = 16) -> data.Loaders:
    """Seeded random 1-channel images (10 classes) as ``data.Loaders``; fingerprint names the set "fake"."""
    size = getattr(cfg, "image_size", None)
    if size is None:
        from compresslib.models import model_input_size

        size = model_input_size(cfg.model)[-1] if hasattr(cfg, "model") else 28
    g = torch.Generator().manual_seed(0)

    def split(n):
        return TensorDataset(torch.randn(n, 1, size, size, generator=g), torch.randint(0, 10, (n,), generator=g))

    train = DataLoader(split(n_train), batch_size=batch, shuffle=True, generator=torch.Generator().manual_seed(0))
    val, test = DataLoader(split(n_eval), batch_size=64), DataLoader(split(n_eval), batch_size=64)
    fp = {"dataset": "fake", "batch_size": batch, "subset": None, "image_size": size}
    return data.Loaders(train, val, test, 10, 1, size, fp)


def _crop_splits(cfg):
    from compresslib.methods.crop import load_image_splits

    return load_image_splits("fake", subset=60, test_subset=30)


FAKE_DATA = {"edgecompress": _crop_splits}  # methods whose loaders are not data.Loaders


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """{name: (config, loaders, results, cache_dir)}: each method's tiny run, once."""
    done = {}

    def get(name):
        if name not in done:
            cfg = METHODS.meta(name)["tiny"]()
            loaders = FAKE_DATA.get(name, _fake_loaders)(cfg)
            cache = tmp_path_factory.mktemp(f"cache-{name}")
            done[name] = cfg, loaders, run_method(name, cfg, loaders, cache_dir=cache, progress=False), cache
        return done[name]

    return get


def _out_of_range(rng: dict, default):
    """A value outside ``rng`` (check_number's lo/hi/lo_open/hi_open/integer) of the type of ``default``."""
    lo, hi = rng.get("lo", -math.inf), rng.get("hi", math.inf)
    if math.isfinite(lo):
        bad = lo if rng.get("lo_open") else lo - 1
    elif math.isfinite(hi):
        bad = hi if rng.get("hi_open") else hi + 1
    else:
        bad = float("nan")
    return [bad] if isinstance(default, (list, tuple)) else bad


def test_registry_lists_the_converted_methods():
    assert {"ecc", "ec2t", "camp"} <= set(NAMES)
    for name in NAMES:
        meta = METHODS.meta(name)
        assert meta["stage"][:2].isdigit() and meta["paper"] and callable(meta["tiny"]), name


@pytest.mark.parametrize("name", NAMES)
def test_default_and_tiny_configs_validate(name):
    cls = method_config(name)
    cfg = cls()
    assert cfg.validate() is cfg
    tiny = METHODS.meta(name)["tiny"]()
    assert isinstance(tiny, cls) and tiny.validate() is tiny
    assert cls.RANGES, f"{name}: Config declares no RANGES"
    with pytest.raises(TypeError, match=f"takes a {cls.__qualname__}"):
        run_method(name, object(), None)


@pytest.mark.parametrize("name", NAMES)
def test_every_declared_range_is_enforced_naming_the_field(name):
    cls = method_config(name)
    default = cls()
    for field, rng in cls.RANGES.items():
        bad = _out_of_range(rng, getattr(default, field))
        with pytest.raises((ValueError, TypeError), match=field):
            dataclasses.replace(default, **{field: bad}).validate()


def _spec(r: Result):
    """The manifest arguments a Result carries: ``metrics["manifest"]`` or the model/kwargs(/row) keys."""
    m = r.metrics
    if isinstance(m.get("manifest"), dict):
        return m["manifest"]
    if isinstance(m.get("model"), str) and isinstance(m.get("kwargs"), dict):
        return {"model": m["model"], "kwargs": m["kwargs"], **(m.get("row") or {})}
    return None


def _input_size(r: Result, loaders):
    if r.board is not None:
        return tuple(int(v) for v in r.board["input_size"])
    x = next(iter(loaders.test))[0] if hasattr(loaders.test, "__iter__") else loaders.test.x
    return tuple(x.shape[1:])


@pytest.mark.parametrize("name", NAMES)
def test_tiny_run_returns_results_with_the_schema(name, tiny_runs):
    _, _, results, _ = tiny_runs(name)
    assert isinstance(results, list) and results, f"{name}: no Result"
    assert any(r.board is not None for r in results), f"{name}: no model on the board"
    for r in results:
        assert isinstance(r, Result) and isinstance(r.setting, str) and r.setting
        assert 0.0 <= r.accuracy <= 1.0 and r.split in ("train", "val", "test")
        assert isinstance(r.seed, int) and isinstance(r.metrics, dict)
        if r.board is not None:
            check_board(r.board, f"{name}/{r.setting}")
            assert r.split == "test" and r.board["seed"] == r.seed and r.model is not None


@pytest.mark.parametrize("name", NAMES)
def test_tiny_run_models_round_trip_and_have_a_cost_table(name, tiny_runs):
    _, loaders, results, _ = tiny_runs(name)
    checked = 0
    for r in results:
        spec = _spec(r)
        if r.model is None or spec is None:
            continue
        size = _input_size(r, loaders)
        x = torch.randn(3, *size, generator=torch.Generator().manual_seed(1))
        r.model.eval()
        with torch.no_grad():
            ref = r.model(x)
        net = rebuild.build_model(spec)
        net.load_state_dict(r.model.state_dict())
        with torch.no_grad():
            assert torch.equal(net.eval()(x), ref), f"{name}/{r.setting}: state_dict round trip changed the logits"
        ck = spec.get("checkpoint")
        if ck is not None and Path(ck).is_file():  # the file the manifest row points to holds these weights
            saved = load_weights(rebuild.build_model(spec), load_checkpoint(ck), source=ck).eval()
            with torch.no_grad():
                torch.testing.assert_close(saved(x), ref, rtol=0, atol=1e-6)
        if r.board is not None:
            assert cost.total_macs(r.model, size) > 0
        checked += 1
    assert checked, f"{name}: no Result carries a model and its manifest spec"


@pytest.mark.parametrize("name", NAMES)
def test_a_rerun_over_the_same_cache_gives_the_same_results(name, tiny_runs):
    """Every model recorded again on a cache hit, with the same numbers, board rows and weights."""
    cfg, loaders, first, cache = tiny_runs(name)
    again = run_method(name, cfg, loaders, cache_dir=cache, progress=False)
    assert [(r.method, r.setting, r.seed, r.accuracy, r.board) for r in again] == [
        (r.method, r.setting, r.seed, r.accuracy, r.board) for r in first
    ]
    for a, b in zip(first, again):
        if a.model is not None and b.model is not None:
            sa, sb = a.model.state_dict(), b.model.state_dict()
            assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa), f"{name}/{a.setting}"
