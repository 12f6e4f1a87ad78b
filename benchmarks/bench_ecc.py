"""Benchmark: ECC training time per epoch relative to plain training of the same model (target <= 1.5x).

    .venv/bin/python benchmarks/bench_ecc.py [--epochs 2] [--threads 2] [--dataset mnist5k]

Times full epochs of (a) plain CE training, (b) plain training with the same logit-MSE teacher
distillation ECC uses, (c) ECC (Adam + group prox + s-step + duals every batch, distillation).
The ECC budget is set far below reach (0.05 of dense) so no run stops early. Not run in CI.
"""
from __future__ import annotations

import argparse
import copy
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
    ap.add_argument("--epochs", type=int, default=2)
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
    teacher = copy.deepcopy(dense).eval()

    def timed(model, callbacks=(), teacher_=None):
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        train_one_epoch(model, loaders.train, opt, callbacks=callbacks, teacher=teacher_, kd_weight=0.5,
                        kd_kind="mse", progress=False)  # warm-up epoch
        t0 = time.perf_counter()
        for _ in range(a.epochs):
            train_one_epoch(model, loaders.train, opt, callbacks=callbacks, teacher=teacher_, kd_weight=0.5,
                            kd_kind="mse", progress=False)
        return (time.perf_counter() - t0) / a.epochs

    plain = timed(copy.deepcopy(dense))
    plain_kd = timed(copy.deepcopy(dense), teacher_=teacher)
    m = copy.deepcopy(dense)
    cb = ecc.ECCCallback(m, est, 0.1)
    cb.B = -1.0  # never stop: time full epochs
    t_ecc = timed(m, callbacks=[cb], teacher_=teacher)
    print(f"threads={torch.get_num_threads()}  batches/epoch={len(loaders.train)}")
    print(f"plain CE        {plain:7.3f} s/epoch")
    print(f"plain + KD      {plain_kd:7.3f} s/epoch")
    print(f"ECC (ADMM + KD) {t_ecc:7.3f} s/epoch   ratio vs plain {t_ecc / plain:.2f}x, vs plain+KD "
          f"{t_ecc / plain_kd:.2f}x (target <= 1.5x)")


if __name__ == "__main__":
    main()
