"""The CUDA paths of the workbook (marker ``cuda``): AMP + GradScaler, channels_last, pinned-memory
loaders, and every method's ``device="cuda"`` path, each checked against the CPU or against a
property that breaks when the CUDA path is wrong.

    pytest -m cuda                        # on a GPU machine; benchmarks/gpu_check.py runs this first

Without a GPU every test here is skipped with the reason (``torch.cuda.is_available()`` is False).
"""

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

from compresslib.train import Callback

HAS_CUDA = torch.cuda.is_available()
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(
        not HAS_CUDA,
        reason="needs a CUDA GPU: torch.cuda.is_available() is False "
        "(run `python benchmarks/gpu_check.py OUT` on a GPU machine)",
    ),
]
REPO = Path(__file__).resolve().parent.parent
CL = torch.channels_last


# ---- small fixed tasks ------------------------------------------------------------------------


def _digits(batch=64, seed=0):
    from compresslib import data

    return data.get_loaders("digits", batch_size=batch, seed=seed, augment=False)


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


def _convnet(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(64, 10),
    )


def _fit(model, device, epochs=6, callbacks=(), lr=1e-2, **kw):
    from compresslib import train

    loaders = kw.pop("loaders", None) or _digits()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    return train.fit(
        model, loaders, epochs, opt, device=device, seed=0, progress=False, callbacks=list(callbacks), **kw
    )


def _on_cuda(model) -> bool:
    return all(p.device.type == "cuda" for p in model.parameters())


class Record(Callback):
    """A callback that keeps what the hooks saw (first step only unless ``every``)."""

    def __init__(self, every=False):
        self.every, self.seen = every, {}

    def _keep(self, key, value):
        if self.every:
            self.seen.setdefault(key, []).append(value)
        else:
            self.seen.setdefault(key, value)

    def on_batch_start(self, s):
        self._keep("input_device", s.inputs.device.type)
        if s.inputs.dim() == 4:
            self._keep("input_channels_last", s.inputs.is_contiguous(memory_format=CL))

    def on_loss(self, s):
        self._keep("output_dtype", s.outputs.dtype)
        self._keep("loss_dtype", s.loss.dtype)
        self._keep("loss", float(s.loss.detach()))

    def after_backward(self, s):
        g = torch.cat([p.grad.flatten().float() for p in s.model.parameters() if p.grad is not None])
        self._keep("grad_norm", float(g.norm()))


# ---- fit: device, AMP + GradScaler, channels_last, pinned memory --------------------------------


def test_fit_on_cuda_matches_cpu_accuracy_on_digits():
    """Same seed, same data: the CUDA fit learns the task and lands within 2 points of the CPU fit."""
    cpu, gpu = _mlp(), _mlp()
    r_cpu, r_gpu = _fit(cpu, "cpu"), _fit(gpu, "cuda")
    assert _on_cuda(gpu) and not _on_cuda(cpu)
    assert r_cpu["test_accuracy"] > 0.85 and r_gpu["test_accuracy"] > 0.85
    assert abs(r_gpu["test_accuracy"] - r_cpu["test_accuracy"]) <= 0.02
    assert len(r_gpu["history"]) == len(r_cpu["history"]) == 6
    # the first epoch's loss is the same computation on both devices (float rounding apart)
    assert r_gpu["history"][0]["train_loss"] == pytest.approx(r_cpu["history"][0]["train_loss"], rel=1e-2)


def test_fit_amp_autocasts_forward_keeps_fp32_weights_and_accuracy():
    rec = Record(every=True)
    model = _mlp()
    r_amp = _fit(model, "cuda", callbacks=[rec], amp=True)
    r_fp32 = _fit(_mlp(), "cuda", amp=False)
    assert set(rec.seen["output_dtype"]) == {torch.float16}  # autocast ran the forward in fp16
    assert set(rec.seen["loss_dtype"]) == {torch.float32}  # the loss callbacks see fp32
    assert all(torch.isfinite(torch.tensor(rec.seen["loss"])))
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay fp32
    assert r_amp["test_accuracy"] > 0.85 and abs(r_amp["test_accuracy"] - r_fp32["test_accuracy"]) <= 0.03


def test_amp_gradients_are_unscaled_before_after_backward():
    """Callbacks (ADMM, EC2T) read true gradients: the first step's gradient norm under AMP equals the
    fp32 one (fp16 rounding apart), not 2^16 times it."""
    rec_amp, rec_fp = Record(), Record()
    _fit(_mlp(), "cuda", epochs=1, callbacks=[rec_amp], amp=True)
    _fit(_mlp(), "cuda", epochs=1, callbacks=[rec_fp], amp=False)
    assert rec_amp.seen["grad_norm"] == pytest.approx(rec_fp.seen["grad_norm"], rel=0.05)


def test_gradscaler_scale_grows_every_step_without_overflow():
    from compresslib import train

    g = torch.Generator().manual_seed(0)
    ds = TensorDataset(torch.randn(96, 1, 8, 8, generator=g), torch.randint(0, 10, (96,), generator=g))
    loader = DataLoader(ds, batch_size=32, shuffle=False)
    model = _mlp().cuda()
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cuda", init_scale=2.0**10, growth_interval=1)
    out = train.train_one_epoch(model, loader, opt, device="cuda", scaler=scaler, progress=False)
    assert scaler.get_scale() == 2.0**13  # 3 steps, no inf: doubled 3 times
    assert torch.isfinite(torch.tensor(out["train_loss"]))
    assert all(not torch.equal(a, b) and torch.isfinite(b).all() for a, b in zip(before, model.parameters()))


def test_fit_amp_checkpoint_holds_scaler_and_resumes(tmp_path):
    from compresslib import train

    ck = tmp_path / "amp.ckpt"
    _fit(_mlp(), "cuda", epochs=2, amp=True, ckpt_path=ck)
    state = train.load_checkpoint(ck)
    assert state["scaler"] is not None and 0 < state["scaler"]["scale"] <= 65536.0
    resumed = _fit(_mlp(), "cuda", epochs=3, amp=True, ckpt_path=ck, resume=True)
    straight = _fit(_mlp(), "cuda", epochs=3, amp=True)
    assert len(resumed["history"]) == 3
    assert abs(resumed["test_accuracy"] - straight["test_accuracy"]) <= 0.02


def test_channels_last_sets_weights_inputs_and_activations():
    rec = Record()
    acts = []
    model = _convnet()
    model[3].register_forward_hook(
        lambda m, i, o: acts.append(o.is_contiguous(memory_format=CL) and not o.is_contiguous()) if m.training else None
    )
    r_cl = _fit(model, "cuda", callbacks=[rec], channels_last=True)
    w = model[3].weight
    assert w.is_contiguous(memory_format=CL) and not w.is_contiguous()
    assert rec.seen["input_channels_last"] and all(acts)
    r_nchw = _fit(_convnet(), "cuda", channels_last=False)
    assert r_cl["test_accuracy"] > 0.8 and abs(r_cl["test_accuracy"] - r_nchw["test_accuracy"]) <= 0.03


def test_loaders_pin_memory_and_worker_loader_keeps_batches(monkeypatch):
    from compresslib import distributed as D

    L = _digits()
    assert L.train.pin_memory and L.val.pin_memory and L.test.pin_memory
    x, _ = next(iter(L.train))
    assert x.is_pinned()
    monkeypatch.setenv("COMPRESSLIB_NUM_WORKERS", "2")
    wl = D.distributed_loader(L.train)
    assert wl.num_workers == 2 and wl.pin_memory
    L.train.generator.manual_seed(5)
    plain = [y.clone() for _, y in L.train]
    L.train.generator.manual_seed(5)
    workers = [y.clone() for _, y in wl]
    assert len(plain) == len(workers) and all(torch.equal(a, b) for a, b in zip(plain, workers))
    rec = Record(every=True)
    r = _fit(_mlp(), "cuda", epochs=2, callbacks=[rec])  # fit trains from the worker loader
    assert set(rec.seen["input_device"]) == {"cuda"} and r["test_accuracy"] > 0.8


def test_evaluate_on_cuda_equals_cpu():
    from compresslib import train

    L = _digits()
    model = _mlp(3)
    cpu = train.evaluate(model, L.test, "cpu")
    gpu = train.evaluate(model.cuda(), L.test, "cuda")
    assert gpu["n"] == cpu["n"]
    assert abs(gpu["accuracy"] - cpu["accuracy"]) <= 1.0 / cpu["n"]
    assert gpu["loss"] == pytest.approx(cpu["loss"], rel=1e-4)
    assert train.check_device("cuda") == "cuda"


# ---- every method's device path -----------------------------------------------------------------


def _random_loaders(shape, n=192, batch=64, classes=10, seed=0, val=True):
    g = torch.Generator().manual_seed(seed)
    X, y = torch.randn(n, *shape, generator=g), torch.randint(0, classes, (n,), generator=g)
    ds = TensorDataset(X, y)
    return SimpleNamespace(
        train=DataLoader(ds, batch_size=batch, shuffle=True, generator=torch.Generator().manual_seed(seed)),
        val=DataLoader(ds, batch_size=n) if val else None,
        test=DataLoader(ds, batch_size=n),
    )


def test_ecc_admm_on_cuda_meets_budget_and_keeps_model_on_gpu():
    from compresslib.energy import bilinear as B
    from compresslib.energy.analytic import AnalyticDevice
    from compresslib.energy.profile import sample_widths
    from compresslib.methods import ecc
    from compresslib.models import create_model

    dev = AnalyticDevice("lenet5")
    W = sample_widths(dev.S, 200, seed=1)
    est = B.fit(W, [dev.cost(w) for w in W], dev.S, net="lenet5", scale=dev.cost(dev.S))
    torch.manual_seed(0)
    dense = create_model("lenet5")
    res = ecc.run_ecc(
        dense,
        _random_loaders((1, 32, 32), val=False),
        est,
        0.6,
        max_epochs=40,
        training=ecc.Training(finetune_epochs=1, seed=0, device="cuda"),
    )
    assert res["reached"] and res["estimated_energy"] <= 0.6
    assert _on_cuda(res["model"]) and res["widths"] == ecc.widths_of(res["model"])
    assert 0.0 <= res["accuracy"] <= 1.0
    tr = ecc.Training(finetune_epochs=1, device="cuda")
    uni = ecc.run_uniform(dense, _random_loaders((1, 32, 32), val=False), est, 0.6, training=tr)
    assert uni["estimated_energy"] <= 0.6 and 0.0 <= uni["accuracy"] <= 1.0


def test_sqjoint_admm_on_cuda_respects_size_budget():
    from compresslib import train
    from compresslib.methods import sqjoint as sq
    from compresslib.models import create_model

    torch.manual_seed(0)
    m = create_model("lenet5_caffe").cuda()
    L = _random_loaders((1, 28, 28), n=128, batch=32)
    S, _ = sq.size_budget(m, 0.05, 3)
    st, hist = sq.sqjoint_compress(
        m, L.train, S, 3, mode="joint", rho=0.5, lr=0.05, intervals=2, steps_per_interval=3, warmup_intervals=1
    )
    assert len(hist) == 2 and all(h["size_bits"] <= S for h in hist)
    sq.finetune(m, L.train, st.bits, steps=3, mode="joint")
    q = sq.quantized_copy(m, st.bits, "joint")
    assert _on_cuda(m) and _on_cuda(q)
    assert sum(r["size_bits"] for r in sq.layer_report(q, st.bits, "joint")) <= S + 1e-6
    assert 0.0 <= train.evaluate(q, L.test, "cuda")["accuracy"] <= 1.0


def test_ec2t_ternarizes_on_cuda():
    from compresslib.methods.ec2t import train_ec2t
    from compresslib.models import create_model

    torch.manual_seed(0)
    fp = create_model("micronet")
    r = train_ec2t(
        fp,
        _random_loaders((1, 12, 12), n=96, batch=32),
        gamma=0.5,
        epochs=2,
        retrain_epochs=1,
        seed=3,
        progress=False,
        device="cuda",
    )
    m = r["model"]
    assert _on_cuda(m) and 0 < r["sparsity"] < 1
    for n in r["layers"]:
        assert len(torch.unique(m.get_submodule(n).weight.detach())) <= 3


def test_camp_dual_path_rl_on_cuda():
    from compresslib.methods import camp

    torch.manual_seed(0)
    dual = camp.make_dual(camp.CampResNet(8, (4, 8, 8), bits=1), gate_mode="rl")
    L = _random_loaders((1, 16, 16), n=48, batch=16)
    gate_w = camp.gates(dual)[0].fc.weight.detach().clone()
    out = camp.train_stage(dual, L, 1, 0.05, seed=0, callbacks=[camp.ReinforceCallback(alpha=1.0)], device="cuda")
    assert out["train_seconds_per_epoch"] > 0 and _on_cuda(dual)
    blk = dual.blocks[1]
    assert blk.path1.conv1.weight is blk.path4.conv1.weight  # ties survive .to(cuda)
    assert blk.path1.conv1.weight.is_contiguous(memory_format=CL)
    assert not torch.equal(gate_w, camp.gates(dual)[0].fc.weight.detach().cpu())
    st = camp.gate_statistics(dual, L.test)
    assert st["decisions"].shape == (48, 3) and 0 <= st["fraction_4bit"] <= 1


def test_crop_box_predictor_and_cascade_on_cuda_match_cpu():
    from compresslib.cluttered import load_cluttered
    from compresslib.methods import cascade, crop
    from compresslib.models import create_model
    from compresslib.models.shrinkable import ShrinkableResNet

    d = load_cluttered("test", source="digits", canvas=32, scale=(10, 20), patch=5)
    x, boxes = d.x[:128], d.boxes[:128]
    torch.manual_seed(0)
    pred = create_model("box_predictor", stem_width=4, inner_widths=(4, 8, 8), hidden=(16, 8), pool="grid")
    hist = crop.train_box_predictor(
        pred, x, boxes, 32, epochs=4, lr=5e-3, batch_size=32, seed=0, progress=False, device="cuda"
    )
    assert _on_cuda(pred) and hist[-1]["loss"] < hist[0]["loss"]
    torch.manual_seed(0)
    small = ShrinkableResNet(depths=(1, 1, 1), width_mult=0.5, resolution=12, stem_width=8, planes=(8, 8, 16))
    large = ShrinkableResNet(depths=(1, 1, 1), width_mult=1.0, resolution=20, stem_width=8, planes=(8, 16, 16))
    cam = crop.gradcam(large.cuda(), x[:8], d.y[:8], input_size=20)
    assert cam.shape == (8, 32, 32) and torch.isfinite(cam).all() and cam.max() <= 1.0
    z_gpu = cascade.model_logits(small.cuda(), x, boxes, 12)
    z_cpu = cascade.model_logits(small.cpu(), x, boxes, 12)
    assert torch.allclose(z_gpu, z_cpu, rtol=1e-3, atol=1e-4)  # same weights: same logits on both devices
    runs = {}
    for devname in ("cpu", "cuda"):  # canvases stay on the CPU: the cascade moves each stage's batch
        casc = cascade.Cascade([small.to(devname), large.to(devname)], [12, 20], lo=0.0, hi=0.5, alpha=1.6)
        runs[devname] = casc.run(x, boxes, d.y[:128])
    assert abs(runs["cuda"].escalated - runs["cpu"].escalated) <= 0.02
    assert abs(runs["cuda"].accuracy - runs["cpu"].accuracy) <= 0.02


def test_latency_and_nvml_devices_measure_on_cuda():
    from compresslib.cost import measure_latency
    from compresslib.energy.measure import DeviceUnavailable, LatencyDevice
    from compresslib.energy.profile import get_device
    from compresslib.models import create_model

    r = measure_latency(create_model("lenet5"), (1, 32, 32), batch=16, repeats=5, warmup=2, device="cuda")
    assert r["device"].startswith("cuda") and r["median_ms"] > 0 and r["repeats"] == 5
    lat = LatencyDevice("small_convnet", image_size=32, batch=16, repeats=5, warmup=2, device="cuda")
    small, dense = lat.cost([1, 1, 1, 1, 1, 10]), lat.cost(lat.S)
    assert 0 < small and 0 < dense
    try:
        # ~200 forward passes (~0.5 s): longer than the energy counter's refresh interval
        nv = get_device("nvml", "alexnet", num_classes=1000, image_size=224, batch=64, repeats=200, warmup=3)
    except DeviceUnavailable as e:
        pytest.skip(f"NVML energy not measurable here: {e}")
    e_dense = nv.cost(nv.S)
    assert 0 < e_dense < 10.0  # joules per image, a sane range


def test_quickstart_notebook_runs_on_cuda(tmp_path):
    """Stage 00 end to end through the runner with --device cuda (needs papermill + jupytext)."""
    pytest.importorskip("papermill", reason="papermill missing: benchmarks/gpu_check.py runs the stages without it")
    env = dict(os.environ, COMPRESSLIB_PROGRESS="0", MPLBACKEND="Agg")
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "compresslib.workbook.reproduce",
            "--profile",
            "smoke",
            "--only",
            "00",
            "--device",
            "cuda",
            "--force",
            "--artifacts",
            str(tmp_path),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    m = json.loads((tmp_path / "00_quickstart" / "metrics.json").read_text())
    acc = [v for k, v in m.items() if "accuracy" in k and isinstance(v, float)]
    assert acc and all(0.0 <= a <= 1.0 for a in acc) and max(acc) > 0.5
