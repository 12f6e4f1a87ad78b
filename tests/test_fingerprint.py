"""fit's fingerprint: what it covers, that checkpoints are reused only on a match, cached_fit/pretrain_dense."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from compresslib import data, models, prune, train
from compresslib.methods.crop import RandomShift

KW = dict(image_size=16, widths=(4, 8, 32, 16))


@pytest.fixture(scope="module")
def L():
    return data.get_loaders("digits", batch_size=64, seed=0, image_size=16)


def setup(L, lr=0.01, seed=0, epochs=2, init_seed=None, t_max=None, callbacks=(), **kw):
    """(fit_fingerprint hash, components) of a small SGD+StepLR run on digits."""
    train.set_seed(seed if init_seed is None else init_seed)
    m = models.create_model("lenet5", **KW)
    opt = torch.optim.SGD(m.parameters(), lr=lr, momentum=0.9)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, t_max or epochs)
    cbs = [cb(m) if callable(cb) else cb for cb in callbacks]
    return train.fit_fingerprint(m, L, epochs, opt, sched, callbacks=cbs, seed=seed, **kw)


def changed(base, other):
    return sorted(k for k in base[1] if base[1][k] != other[1][k])


def test_fingerprint_changes_with_each_component_and_only_that_one(L):
    base = setup(L)
    assert setup(L) == base  # rebuilt from scratch: same
    assert changed(base, setup(L, lr=0.02)) == ["optimizer", "scheduler"]  # base_lrs live in the scheduler too
    assert changed(base, setup(L, seed=1)) == ["init_weights", "seed"]
    assert changed(base, setup(L, init_seed=5)) == ["init_weights"]
    assert changed(base, setup(L, epochs=3, t_max=2)) == ["epochs"]
    assert changed(base, setup(L, t_max=5)) == ["scheduler"]
    assert changed(base, setup(data.get_loaders("digits", batch_size=64, seed=0, image_size=16, subset=500))) == [
        "data"
    ]
    assert changed(base, setup(data.get_loaders("digits", batch_size=64, seed=0, image_size=12))) == ["data"]
    assert changed(base, setup(data.get_loaders("digits", batch_size=32, seed=0, image_size=16))) == ["data"]
    assert changed(base, setup(L, loss_fn=torch.nn.CrossEntropyLoss(label_smoothing=0.1))) == ["loss"]
    assert changed(base, setup(L, fingerprint={"note": "x"})) == ["user"]
    # callbacks: their public configuration (RandomShift's shift and generator seed, MaskCallback's masks)
    with_shift = setup(L, callbacks=[RandomShift(2, seed=0)])
    assert changed(base, with_shift) == ["callbacks"]
    assert setup(L, callbacks=[RandomShift(2, seed=0)]) == with_shift
    assert setup(L, callbacks=[RandomShift(3, seed=0)]) != with_shift
    assert setup(L, callbacks=[RandomShift(2, seed=1)]) != with_shift

    def masks(s):
        return lambda m: prune.MaskCallback(prune.magnitude_prune_(m, s))

    assert setup(L, callbacks=[masks(0.5)])[0] != setup(L, callbacks=[masks(0.6)])[0]
    # teacher: its weights and the distillation settings
    torch.manual_seed(1)
    t1 = models.create_model("lenet5", **KW)
    torch.manual_seed(2)
    t2 = models.create_model("lenet5", **KW)
    kd = setup(L, teacher=t1, kd_weight=0.5)
    assert changed(base, kd) == ["teacher"]
    assert setup(L, teacher=t2, kd_weight=0.5) != kd
    assert setup(L, teacher=t1, kd_weight=0.7) != kd
    assert setup(L, teacher=t1, kd_weight=0.5, kd_T=4.0) != kd
    # another architecture
    train.set_seed(0)
    m = models.create_model("lenet5", image_size=16, widths=(4, 8, 32, 8))
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
    other = train.fit_fingerprint(m, L, 2, opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, 2), seed=0)
    assert changed(base, other) == ["init_weights", "model"]


def test_loader_without_get_loaders_fingerprint_is_hashed_by_content(L):
    from types import SimpleNamespace

    from torch.utils.data import DataLoader, TensorDataset

    x, y = data.tensors_of(L.val)

    def fp(xx):
        g = torch.Generator().manual_seed(0)
        ld = SimpleNamespace(
            train=DataLoader(TensorDataset(xx, y), batch_size=32, shuffle=True, generator=g), val=None, test=None
        )
        return train.loader_fingerprint(ld.train)

    assert fp(x.clone()) == fp(x.clone())
    x2 = x.clone()
    x2[0, 0, 0, 0] += 1
    assert fp(x2) != fp(x)


SCRIPT = textwrap.dedent("""
    import json, sys, torch
    from compresslib import data, models, train
    L = data.get_loaders("digits", batch_size=64, seed=0, image_size=16)
    train.set_seed(0)
    m = models.create_model("lenet5", image_size=16, widths=(4, 8, 32, 16))
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 2)
    print(json.dumps(train.fit_fingerprint(m, L, 2, opt, sched, seed=0)))
""")


def test_fingerprint_is_equal_across_processes_and_working_directories(L, tmp_path):
    env = dict(os.environ, PYTHONPATH=os.getcwd(), PYTHONHASHSEED="123")
    a = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, cwd=tmp_path, capture_output=True, text=True, check=True
    )
    env["PYTHONHASHSEED"] = "7"
    (tmp_path / "b").mkdir()
    b = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, cwd=tmp_path / "b", capture_output=True, text=True, check=True
    )
    fa, fb = json.loads(a.stdout.strip().splitlines()[-1]), json.loads(b.stdout.strip().splitlines()[-1])
    assert fa == fb
    assert fa[0] == setup(L)[0]


def run(L, ckpt=None, lr=0.01, epochs=2, callbacks=(), cached=None, name="net", **kw):
    train.set_seed(0)
    m = models.create_model("lenet5", **KW)
    opt = torch.optim.SGD(m.parameters(), lr=lr, momentum=0.9)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    if cached is not None:
        return m, train.cached_fit(
            m,
            L,
            epochs,
            opt,
            scheduler=sched,
            callbacks=list(callbacks),
            seed=0,
            progress=False,
            cache_dir=cached,
            name=name,
            **kw,
        )
    return m, train.fit(
        m,
        L,
        epochs,
        opt,
        sched,
        callbacks=list(callbacks),
        seed=0,
        progress=False,
        ckpt_path=ckpt,
        resume=ckpt is not None,
        **kw,
    )


def test_mismatched_checkpoint_is_not_resumed(L, tmp_path, capsys):
    ck = tmp_path / "run.ckpt"
    _, a = run(L, ck, lr=0.01)
    _, fresh = run(L, None, lr=0.05)
    capsys.readouterr()
    _, b = run(L, ck, lr=0.05)  # same file, other lr: must train from scratch, not return lr=0.01's run
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if "not resuming" in ln]
    assert len(lines) == 1 and "optimizer" in lines[0] and "scheduler" in lines[0] and "run.ckpt" in lines[0]
    assert "[fit] trained run.ckpt: epochs 1..2 of 2" in out
    assert [h["train_loss"] for h in b["history"]] == [h["train_loss"] for h in fresh["history"]]
    assert b["test_accuracy"] == fresh["test_accuracy"]
    assert [h["train_loss"] for h in a["history"]] != [h["train_loss"] for h in b["history"]]
    assert train.load_checkpoint(ck)["fingerprint"] == setup(L, lr=0.05)[0]


class Interrupt(train.Callback):
    """Raises at global step ``_at`` (private: not part of the fingerprint, like a power cut)."""

    def __init__(self, at):
        self._at = at

    def on_batch_start(self, s):
        if s.step == self._at:
            raise KeyboardInterrupt


def test_interrupted_run_resumes_to_identical_result_and_finished_run_is_reused(L, tmp_path, capsys):
    _, ref = run(L, None, epochs=3)
    ck = tmp_path / "r.ckpt"
    with pytest.raises(KeyboardInterrupt):
        run(L, ck, epochs=3, callbacks=[Interrupt(at=30)])  # 21 steps per epoch: dies in epoch 2
    st = train.load_checkpoint(ck)
    assert st["epoch"] == 1 and st["done"] is False and st["result"] is None
    capsys.readouterr()
    _, res = run(L, ck, epochs=3, callbacks=[Interrupt(at=-1)])
    assert "[fit] resumed r.ckpt: epochs 2..3 of 3" in capsys.readouterr().out
    strip = lambda r: [{k: v for k, v in h.items() if k != "seconds"} for h in r["history"]]  # noqa: E731
    assert strip(res) == strip(ref) and res["test_accuracy"] == ref["test_accuracy"]
    m, again = run(L, ck, epochs=3, callbacks=[Interrupt(at=7)])  # finished + matching: no training, same result
    assert "[fit] reused r.ckpt: 3 epochs" in capsys.readouterr().out
    assert again == res


def test_cached_fit_reuses_with_identical_result_and_forbid_training(L, tmp_path, capsys, monkeypatch):
    m1, a = run(L, cached=tmp_path)
    assert a["reused"] is False and a["checkpoint"].endswith(f"net-{a['fingerprint'][:12]}.ckpt")
    capsys.readouterr()
    monkeypatch.setenv("COMPRESSLIB_FORBID_TRAINING", "1")
    m2, b = run(L, cached=tmp_path)
    assert "[fit] reused net-" in capsys.readouterr().out
    assert b["reused"] is True
    assert {k: v for k, v in a.items() if k != "reused"} == {k: v for k, v in b.items() if k != "reused"}
    assert all(torch.equal(x, y) for x, y in zip(m1.state_dict().values(), m2.state_dict().values()))
    with pytest.raises(RuntimeError, match="COMPRESSLIB_FORBID_TRAINING=1 but fit would train LeNet5 for epochs 1..2"):
        run(L, cached=tmp_path, lr=0.02)
    monkeypatch.delenv("COMPRESSLIB_FORBID_TRAINING")
    _, c = run(L, cached=tmp_path, lr=0.02)
    assert c["reused"] is False and c["checkpoint"] != a["checkpoint"]
    assert len(list(tmp_path.glob("net-*.ckpt"))) == 2


def test_early_stopped_run_is_reused_not_continued(L, tmp_path):
    class StopAfterFirst(train.Callback):
        def on_epoch_end(self, s):
            s.stop = True

    _, a = run(L, cached=tmp_path, epochs=3, callbacks=[StopAfterFirst()])
    _, b = run(L, cached=tmp_path, epochs=3, callbacks=[StopAfterFirst()])
    assert len(a["history"]) == len(b["history"]) == 1 and b["reused"] is True and b["history"] == a["history"]


def test_weights_only_or_foreign_checkpoint_gives_clear_errors(L, tmp_path):
    ck = tmp_path / "w.pt"
    train.save_checkpoint(ck, model=models.create_model("lenet5", **KW).state_dict(), config={"a": 1})
    with pytest.raises(ValueError, match=r"not written by train.fit .*weights-only checkpoint cannot be resumed"):
        run(L, ck)
    other = models.create_model("lenet5", image_size=16, widths=(4, 8, 32, 8))
    with pytest.raises(
        ValueError,
        match=r"weights of another model than LeNet5: 0 missing keys .*3 shape mismatches ..classifier.3.weight: checkpoint \(16, 32\) vs model \(8, 32\)",
    ):
        train.load_weights(other, ck)
    train.save_checkpoint(ck, config={"a": 1})
    with pytest.raises(ValueError, match="holds no 'model' state_dict"):
        train.load_weights(other, ck)
    with pytest.raises(ValueError, match="fingerprint must be a dict"):
        run(L, None, fingerprint="x")
    with pytest.raises(ValueError, match="cached_fit: name must be"):
        run(L, cached=tmp_path, name="a/b")


def test_pretrain_dense_matches_the_stages_recipes_and_is_cached(L, tmp_path):
    # Adam + cosine (stages 00, 03, leaderboard) and SGD momentum/nesterov + wd + cosine (04, 05), by hand
    for opts, make in [
        ({}, lambda p: torch.optim.Adam(p, lr=3e-3)),
        (
            {"optimizer": "sgd", "weight_decay": 5e-4, "nesterov": True},
            lambda p: torch.optim.SGD(p, lr=3e-3, momentum=0.9, nesterov=True, weight_decay=5e-4),
        ),
    ]:
        train.set_seed(4)
        m = models.create_model("lenet5", **KW)
        opt = make(m.parameters())
        ref = train.fit(m, L, 2, opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=2), seed=4, progress=False)
        net, r = train.pretrain_dense("lenet5", KW, L, epochs=2, seed=4, lr=3e-3, cache_dir=tmp_path, **opts)
        assert r["reused"] is False and r["test_accuracy"] == ref["test_accuracy"]
        assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), net.state_dict().values()))
        net2, r2 = train.pretrain_dense("lenet5", KW, L, epochs=2, seed=4, lr=3e-3, cache_dir=tmp_path, **opts)
        assert r2["reused"] is True and r2["history"] == r["history"] and not net2.training
        assert all(torch.equal(a, b) for a, b in zip(net2.state_dict().values(), net.state_dict().values()))
    assert len(list(tmp_path.glob("dense-lenet5-seed4-*.ckpt"))) == 2
    with pytest.raises(ValueError, match="optimizer must be 'adam' or 'sgd'"):
        train.pretrain_dense("lenet5", KW, L, epochs=1, seed=0, lr=1e-3, cache_dir=tmp_path, optimizer="rmsprop")
    with pytest.raises(TypeError, match="unknown options"):
        train.pretrain_dense("lenet5", KW, L, epochs=1, seed=0, lr=1e-3, cache_dir=tmp_path, lr2=1)
    with pytest.raises(ValueError, match="lr must be > 0"):
        train.pretrain_dense("lenet5", KW, L, epochs=1, seed=0, lr=0, cache_dir=tmp_path)


def test_leaderboard_base_runs_are_reused_with_identical_numbers(tmp_path, monkeypatch):
    from compresslib.methods import baselines as lbs

    L32 = data.get_loaders("digits", batch_size=64, seed=0, image_size=32, subset=400)

    def once():
        dense = lbs.train_base("lenet5", L32, 1, seed=0, cache_dir=tmp_path)
        mag = [(s, acc) for s, _, acc in lbs.run_magnitude(dense, L32, [0.5], 1, 0, cache_dir=tmp_path)]
        ec = [(g, acc) for g, _, acc in lbs.run_ec2t_base(dense, L32, [0.2], 1, 0, 0, cache_dir=tmp_path)]
        torch.manual_seed(123)  # the cascade's small model must not depend on the RNG state left by earlier work
        c = lbs.run_cascade_base(dense, L32, (1, 32, 32), (4, 8, 16), 16, 1, 0, model_name="lenet5", cache_dir=tmp_path)
        return train.state_digest(dense.state_dict()), mag, ec, c["accuracy"], c["threshold"]

    first = once()
    monkeypatch.setenv("COMPRESSLIB_FORBID_TRAINING", "1")  # any fit that would train raises
    assert once() == first
    assert {p.name.split("-")[0] for p in tmp_path.glob("*.ckpt")} == {"base", "magnitude0.5", "cascade"}
    assert len(list(tmp_path.glob("ec2t0.2-seed0-*.pt"))) == 1
