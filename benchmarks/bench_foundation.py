#!/usr/bin/env python
"""Overheads of the shared machinery, measured in one run (by hand, not in CI).

    .venv/bin/python benchmarks/bench_foundation.py [--threads 2] [--repeats 5]

1. One training epoch of LeNet-5 on mnist5k through ``compresslib.train.fit`` (with a no-op
   callback on every hook, progress bars off) vs a bare PyTorch loop over the same batches.
2. ``compresslib.cost.layer_table`` vs ``torch.utils.flop_counter.FlopCounterMode`` on ResNet-50.
Prints medians over repeats and their ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ["COMPRESSLIB_PROGRESS"] = "0"

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torchvision  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from compresslib import cost, data, models, train  # noqa: E402


class NoOp(train.Callback):
    def on_batch_start(self, s):
        pass

    def on_loss(self, s):
        pass

    def after_backward(self, s):
        pass

    def after_step(self, s):
        pass


def bare_epoch(model, loader, opt):
    model.train()
    for x, y in loader:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def timed(fn, repeats):
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    L = data.get_loaders("mnist5k", batch_size=64, seed=0)
    m = models.create_model("lenet5_caffe")
    opt = torch.optim.SGD(m.parameters(), lr=0.01)
    bare = timed(lambda: bare_epoch(m, L.train, opt), a.repeats)
    L_noval = L._replace(val=None, test=None)
    ours = timed(lambda: train.fit(m, L_noval, 1, opt, callbacks=[NoOp()], progress=False), a.repeats)
    print(
        f"training epoch (lenet5_caffe, mnist5k 3600 imgs, {a.threads} threads): bare {bare:.3f} s, "
        f"fit+callbacks {ours:.3f} s, ratio {ours / bare:.3f}"
    )

    r50 = torchvision.models.resnet50(weights=None).eval()

    def flop_counter():
        with FlopCounterMode(display=False), torch.no_grad():
            r50(torch.zeros(1, 3, 224, 224))

    t_fc = timed(flop_counter, a.repeats)
    t_lt = timed(lambda: cost.layer_table(r50, (3, 224, 224)), a.repeats)
    print(
        f"ResNet-50 cost count: FlopCounterMode {t_fc * 1e3:.0f} ms, layer_table {t_lt * 1e3:.0f} ms, "
        f"ratio {t_lt / t_fc:.3f}"
    )


if __name__ == "__main__":
    main()
