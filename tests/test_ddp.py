"""DDP on CPU with gloo: 2 processes (launched like torchrun, through RANK/WORLD_SIZE/MASTER_* env
vars) follow the 1-process loss trajectory with the same global batch, and a resumed DDP run ends
exactly where an uninterrupted one does. GPU-only paths (AMP, channels_last) skip on CPU."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest
import torch

from compresslib import distributed as D

# Digits: 1,293 training images, global batch 64 -> 20 full batches + one of 13, which the two
# ranks split 7/6: this exercises the per-rank loss weighting of uneven batches.
SCRIPT = textwrap.dedent("""
    import json, sys
    import torch
    import torch.nn as nn
    from compresslib import data, distributed as D, train
    torch.set_num_threads(1)
    out, ckpt = sys.argv[1], sys.argv[2]

    class StepLoss(train.Callback):  # global per-step loss: all-reduced (sum loss*n, n)
        def __init__(self): self.losses = []
        def after_step(self, s):
            tot, n = D.all_reduce_scalars(float(s.loss.detach()) * len(s.targets), len(s.targets))
            self.losses.append(tot / n)

    class Interrupt(train.Callback):  # dies at global step `_at` (private: not part of fit's fingerprint)
        def __init__(self, at): self._at = at
        def on_batch_start(self, s):
            if s.step == self._at: raise KeyboardInterrupt

    def run(epochs, ckpt_path=None, resume=False, interrupt_at=-1):
        L = data.get_loaders("digits", batch_size=64, seed=5)
        train.set_seed(5)
        m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 10))
        opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
        sched = torch.optim.lr_scheduler.StepLR(opt, 1, 0.5)
        cb = StepLoss()
        r = train.fit(m, L, epochs, opt, sched, callbacks=[cb, Interrupt(interrupt_at)], seed=5, progress=False,
                      ckpt_path=ckpt_path, resume=resume)
        return {"steps": cb.losses, "history": [{k: v for k, v in h.items() if k != "seconds"}
                                                for h in r["history"]],
                "test": r["test_accuracy"], "weights": [p.detach().flatten().tolist() for p in m.parameters()]}

    res = {"world": D.world_size() if D.init_from_env() else 1, "full": run(2)}
    if D.world_size() > 1:
        try:                                                 # interrupted at the start of epoch 2
            run(2, ckpt, interrupt_at=21)                    # (a checkpoint is resumed only by the same run)
        except KeyboardInterrupt:
            pass
        res["resumed"] = run(2, ckpt, resume=True)           # fresh model/optimizer/loaders
    json.dump(res, open(out.replace(".json", f"{D.rank()}.json"), "w"))
""")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(tmp_path, world):
    base = dict(os.environ, PYTHONPATH=os.getcwd(), OMP_NUM_THREADS="1", COMPRESSLIB_PROGRESS="0")
    if world > 1:
        base.update(WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    else:
        base.pop("WORLD_SIZE", None)
    out = tmp_path / f"w{world}_.json"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SCRIPT, str(out), str(tmp_path / f"w{world}.ckpt")],
            env=dict(base, RANK=str(r), LOCAL_RANK=str(r)) if world > 1 else base,
        )
        for r in range(world)
    ]
    rcs = [p.wait(timeout=300) for p in procs]
    assert rcs == [0] * world
    return [json.loads((tmp_path / f"w{world}_{r}.json").read_text()) for r in range(world)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    return _launch(tmp, 1)[0], _launch(tmp, 2)


def _close(a, b, rtol=1e-4, atol=1e-5):
    return torch.allclose(
        torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64), rtol=rtol, atol=atol
    )


def test_two_gloo_ranks_follow_the_single_process_trajectory(runs):
    """Tolerance: rtol 1e-4 / atol 1e-5 on every step loss, epoch metric and weight (only the
    order of float32 sums differs between 1 and 2 processes)."""
    single, (r0, r1) = runs
    assert single["world"] == 1 and r0["world"] == 2
    s, d = single["full"], r0["full"]
    assert len(s["steps"]) == len(d["steps"]) == 2 * 21
    assert _close(s["steps"], d["steps"])
    for hs, hd in zip(s["history"], d["history"]):
        assert hs.keys() == hd.keys()
        for k in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr"):
            assert _close([hs[k]], [hd[k]]), k
    assert abs(s["test"] - d["test"]) < 1e-6  # float32 mean vs float64 sum/n
    for ws, wd in zip(s["weights"], d["weights"]):
        assert _close(ws, wd)
    assert s["steps"][-1] < 0.5 * s["steps"][0]  # it actually learned
    # DDP keeps the ranks identical
    assert r0["full"]["weights"] == r1["full"]["weights"] and r0["full"]["history"] == r1["full"]["history"]


def test_resumed_ddp_run_equals_uninterrupted(runs):
    _, (r0, r1) = runs
    for r in (r0, r1):
        full, res = r["full"], r["resumed"]
        assert res["history"] == full["history"]  # epoch 1 from the checkpoint, 2 re-run
        assert res["weights"] == full["weights"] and res["test"] == full["test"]
        assert res["steps"] == full["steps"][21:]  # the resumed run trained epoch 2 only


def test_batch_sampler_slices_the_single_process_permutation():
    from torch.utils.data import DataLoader, RandomSampler

    n, B = 23, 8
    ref = DataLoader(list(range(n)), batch_size=B, shuffle=True, generator=torch.Generator().manual_seed(0))
    batches = [b.tolist() for epoch in range(2) for b in ref]  # 2 epochs: the generator advances alike
    chunks = []
    for rank in range(3):
        g = torch.Generator().manual_seed(0)
        bs = D.DistributedBatchSampler(RandomSampler(range(n), generator=g), B, rank, 3)
        dl = DataLoader(list(range(n)), batch_sampler=bs, generator=g)
        chunks.append([b.tolist() for epoch in range(2) for b in dl])
    assert [len(c) for c in chunks] == [6, 6, 6]
    for i in range(6):
        assert chunks[0][i] + chunks[1][i] + chunks[2][i] == batches[i]
    assert [len(c[2]) for c in chunks] == [3, 2, 2]  # final batch of 7 split 3/2/2
    assert D.DistributedBatchSampler(range(n), B, 0, 3).global_batch_sizes() == [8, 8, 7]
    assert D.DistributedBatchSampler(range(17), 8, 0, 3).global_batch_sizes() == [8, 8]  # 1 < 3 ranks: dropped
    with pytest.raises(ValueError, match="global batch size 2 < world size 3"):
        D.DistributedBatchSampler(range(n), 2, 0, 3)


def test_single_process_helpers_are_identities(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert D.init_from_env() is False and D.world_size() == 1 and D.is_main()
    assert D.all_reduce_scalars(1.5, 2) == [1.5, 2.0]
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(RuntimeError, match="torchrun"):
        D.init_from_env()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available: AMP/channels_last are GPU-only")
def test_cuda_amp_channels_last_trains():
    from compresslib import data, models, train

    L = data.get_loaders("digits", batch_size=64, seed=0, image_size=16)
    m = models.create_model("lenet5", image_size=16)
    r = train.fit(
        m, L, 2, torch.optim.Adam(m.parameters(), 3e-3), device="cuda", amp=True, channels_last=True, progress=False
    )
    assert r["test_accuracy"] > 0.5


def test_worker_processes_keep_the_batch_order(monkeypatch):
    """$COMPRESSLIB_NUM_WORKERS (reproduce --workers) rebuilds fit's train loader with workers:
    same sampler and generator, so the same batches in the same order, epoch after epoch."""
    from compresslib import data

    ref = data.get_loaders("digits", batch_size=128, seed=7)
    monkeypatch.setenv("COMPRESSLIB_NUM_WORKERS", "2")
    dl = D.distributed_loader(data.get_loaders("digits", batch_size=128, seed=7).train)
    assert dl.num_workers == 2
    for _ in range(2):
        assert [y.tolist() for _, y in ref.train] == [y.tolist() for _, y in dl]


NB = textwrap.dedent("""\
    # %% tags=["parameters"]
    OUT_DIR = "out"  # output folder
    EPOCHS = 2  # epochs

    # %%
    import json, pathlib, torch
    import torch.nn as nn
    from compresslib import data, results, train, distributed as D
    torch.set_num_threads(1)
    L = data.get_loaders("digits", batch_size=64, seed=1)
    torch.manual_seed(1)  # the initial weights are part of the checkpoint's fingerprint
    m = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    r = train.fit(m, L, EPOCHS, torch.optim.SGD(m.parameters(), 0.1), seed=1, progress=False,
                  ckpt_path=results.cache_dir(OUT_DIR) / f"m-{EPOCHS}.ckpt", resume=True)
    pathlib.Path(OUT_DIR).mkdir(parents=True, exist_ok=True)
    json.dump({"test_accuracy": r["test_accuracy"], "world": D.world_size(),
               "loss": [h["train_loss"] for h in r["history"]]}, open(pathlib.Path(OUT_DIR) / "metrics.json", "w"))
""")


@pytest.mark.skipif(
    os.environ.get("COMPRESSLIB_SLOW_TESTS") != "1",
    reason="torchrun + papermill end to end takes ~1 min per launch: set COMPRESSLIB_SLOW_TESTS=1",
)
def test_torchrun_reproduce_end_to_end(tmp_path):
    """torchrun -m compresslib.workbook.reproduce: both ranks' kernels join one group, rank 0 owns artifacts/,
    rank 1 writes artifacts/.rank1/; the checkpoint lives in rank 0's cache (artifacts/.cache), a forced
    re-run with the same parameters reuses it on every rank (no training), more epochs train afresh
    (the target epochs are part of the fingerprint) with the same first epochs (seeded)."""
    (tmp_path / "nb").mkdir()
    (tmp_path / "nb" / "00_ddp.py").write_text(NB)
    (tmp_path / "p").mkdir()
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    env = dict(os.environ, PYTHONPATH=os.getcwd(), OMP_NUM_THREADS="1")
    art = tmp_path / "art"
    runs = []
    for epochs in (2, 2, 3):
        (tmp_path / "p" / "t.yaml").write_text(f"00_ddp:\n  EPOCHS: {epochs}\n")
        cmd = [torchrun, "--nproc_per_node", "2", "--master_port", str(_free_port())]
        cmd += ["-m", "compresslib.workbook.reproduce"]
        cmd += ["--profile", "t", "--notebooks", str(tmp_path / "nb"), "--profiles", str(tmp_path / "p")]
        p = subprocess.run(
            [*cmd, "--artifacts", str(art), "--force"], env=env, capture_output=True, text=True, timeout=600
        )
        assert p.returncode == 0, p.stdout + p.stderr
        r0 = json.loads((art / "00_ddp" / "metrics.json").read_text())
        r1 = json.loads((art / ".rank1" / "00_ddp" / "metrics.json").read_text())
        assert r0 == r1 and r0["world"] == 2 and len(r0["loss"]) == epochs
        log = (art / "00_ddp" / "00_ddp.ipynb").read_text()
        runs.append((r0["loss"], log))
    assert "[fit] trained" in runs[0][1]
    assert "[fit] reused" in runs[1][1] and "[fit] trained" not in runs[1][1] and runs[1][0] == runs[0][0]
    assert "[fit] trained" in runs[2][1] and runs[2][0][:2] == runs[0][0]
    assert (art / ".cache" / "00_ddp" / "m-2.ckpt").exists() and (art / ".cache" / "00_ddp" / "m-3.ckpt").exists()
    assert not list((art / ".rank1").rglob("*.ckpt"))  # only rank 0 writes checkpoints


def test_grad_scaler_path_unscales_before_callbacks():
    """The AMP step logic (scale -> backward -> unscale -> after_backward -> scaler.step) run with a
    CPU GradScaler: power-of-two scaling is exact, so weights and the gradient norms callbacks see
    equal the plain run's (autocast itself only exists on CUDA and is disabled here)."""
    import warnings

    import torch.nn as nn

    from compresslib import data, train

    class GradNorm(train.Callback):
        def __init__(self):
            self.norms = []

        def after_backward(self, s):
            self.norms.append(float(sum(p.grad.norm() ** 2 for p in s.model.parameters())))

    def run(scaler):
        torch.manual_seed(0)
        L = data.get_loaders("digits", batch_size=256, seed=0)
        m = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
        cb = GradNorm()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = train.train_one_epoch(
                m, L.train, torch.optim.SGD(m.parameters(), 0.1), callbacks=[cb], progress=False, scaler=scaler
            )
        return r, cb.norms, [p.detach().clone() for p in m.parameters()]

    r0, n0, w0 = run(None)
    r1, n1, w1 = run(torch.amp.GradScaler("cpu", init_scale=2.0**10))
    assert n0 == pytest.approx(n1, rel=1e-6) and r0 == pytest.approx(r1, rel=1e-6)
    assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(w0, w1))
