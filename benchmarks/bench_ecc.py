"""Benchmark: ECC training time per epoch relative to plain training of the same model (target <= 1.5x).

    .venv/bin/python benchmarks/bench_ecc.py [--epochs 2] [--threads 2] [--dataset mnist5k]

Times full epochs of (a) plain CE training of the same LeNet-5 (no teacher), (b) plain training with
the logit-MSE teacher distillation ECC uses, the teacher run on every batch, (c) ECC as ``run_ecc``
runs it (Adam + group prox + s-step + duals every batch, distillation from the frozen teacher
whose training-set logits are cached once, ``methods/teacher_cache.py``). The one-off cache build
is timed separately; (d) ECC running the teacher on every batch shows what the cache saves.
The ECC budget is set out of reach so no run stops early. Not run in CI.
Prints ECC's ratio to (a) (the target) and to (b), and the load average during the run.
"""

from __future__ import annotations

import argparse
import copy
import os
import time

import torch

import compresslib
from compresslib.data import get_loaders
from compresslib.energy import bilinear
from compresslib.energy.profile import get_device, sample_widths
from compresslib.methods import ecc
from compresslib.models import create_model
from compresslib.train import set_seed, train_one_epoch


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--dataset", default="mnist5k")
    ap.add_argument("--samples", type=int, default=300, help="analytic profile size for the estimator")
    a = ap.parse_args(argv)
    compresslib.set_threads(a.threads)
    dev = get_device("analytic", "lenet5")
    W = sample_widths(dev.S, a.samples, seed=1)
    est = bilinear.fit(W, [dev.cost(w) for w in W], dev.S, net="lenet5")
    loaders = get_loaders(a.dataset, batch_size=64, seed=0, image_size=32)
    set_seed(0)
    dense = create_model("lenet5")
    teacher = ecc._frozen(dense)

    def setup(model, callbacks=(), teacher_=None):
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

        def epoch():
            train_one_epoch(
                model,
                loaders.train,
                opt,
                callbacks=callbacks,
                teacher=teacher_,
                kd_weight=0.5,
                kd_kind="mse",
                progress=False,
            )

        return epoch

    load0 = os.getloadavg()
    t0 = time.perf_counter()
    cached = ecc._frozen(dense, loaders, distill=0.5)  # the teacher run_ecc uses
    t_cache = time.perf_counter() - t0
    if not hasattr(cached, "hits"):
        raise RuntimeError(f"{a.dataset}'s training set is not a tensor data set: no teacher cache")
    m = copy.deepcopy(dense)
    cb = ecc.ECCCallback(m, est, 0.1)
    cb.B = -1.0  # never stop: time full epochs
    m2 = copy.deepcopy(dense)
    cb2 = ecc.ECCCallback(m2, est, 0.1)
    cb2.B = -1.0
    runs = {
        "plain": setup(copy.deepcopy(dense)),
        "plain_kd": setup(copy.deepcopy(dense), teacher_=teacher),
        "ecc": setup(m, callbacks=[cb], teacher_=cached),
        "ecc_nocache": setup(m2, callbacks=[cb2], teacher_=teacher),
    }
    wall = {k: [] for k in runs}
    cpu = {k: [] for k in runs}
    for r in range(a.epochs + 1):  # round-robin, so load drift on a shared machine hits all four alike
        for k, epoch in runs.items():
            w0, c0 = time.perf_counter(), time.process_time()
            epoch()
            if r:  # round 0 is the warm-up
                wall[k].append(time.perf_counter() - w0)
                cpu[k].append(time.process_time() - c0)
    med = {k: sorted(v)[len(v) // 2] for k, v in wall.items()}
    medc = {k: sorted(v)[len(v) // 2] for k, v in cpu.items()}
    load1 = os.getloadavg()
    print(
        f"threads={torch.get_num_threads()}  batches/epoch={len(loaders.train)}  epochs timed={a.epochs} each "
        f"(median, round-robin after one warm-up epoch)"
    )
    print(
        f"load average (1/5/15 min) before {load0[0]:.2f}/{load0[1]:.2f}/{load0[2]:.2f}, "
        f"after {load1[0]:.2f}/{load1[1]:.2f}/{load1[2]:.2f}"
    )
    names = {
        "plain": "plain CE, no teacher",
        "plain_kd": "plain + KD (teacher every batch)",
        "ecc": "ECC (ADMM + KD, cached teacher)",
        "ecc_nocache": "ECC, teacher every batch (no cache)",
    }
    for k in runs:
        print(f"{names[k]:34s} {med[k]:7.3f} s/epoch wall  {medc[k]:7.3f} s/epoch CPU")
    print(
        f"teacher cache built once per run in {t_cache:.3f} s; {cached.hits} rows answered from the cache, "
        f"{cached.misses} by the teacher"
    )
    print(
        f"ECC / plain CE    = {med['ecc'] / med['plain']:.2f}x wall, {medc['ecc'] / medc['plain']:.2f}x CPU "
        f"(target <= 1.5x)"
    )
    print(f"ECC / plain + KD  = {med['ecc'] / med['plain_kd']:.2f}x wall, {medc['ecc'] / medc['plain_kd']:.2f}x CPU")
    print(
        f"ECC without the cache / plain CE = {med['ecc_nocache'] / med['plain']:.2f}x wall, "
        f"{medc['ecc_nocache'] / medc['plain']:.2f}x CPU"
    )


if __name__ == "__main__":
    main()
