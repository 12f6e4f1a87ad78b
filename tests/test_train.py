import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from compresslib import data, models, train

SCRIPT = textwrap.dedent("""
    import json, os, signal, sys
    import torch
    from compresslib import data, models, train
    torch.set_num_threads(1)
    ckpt, out, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3])

    class Killer(train.Callback):
        def on_batch_start(self, s):
            if s.step == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)   # no cleanup, like a power cut

    L = data.get_loaders("digits", batch_size=64, seed=3, image_size=16)
    train.set_seed(3)
    m = models.create_model("lenet5", image_size=16, widths=(4, 8, 32, 16))
    opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, 2, 0.5)
    r = train.fit(m, L, 4, opt, sched, callbacks=[Killer()], ckpt_path=ckpt, resume=True, seed=3)
    json.dump({"test": r["test_accuracy"], "val": [h["val_accuracy"] for h in r["history"]],
               "loss": [h["train_loss"] for h in r["history"]]}, open(out, "w"))
""")


def _run(tmp_path, ckpt, kill_at):
    out = tmp_path / f"out{kill_at}.json"
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    p = subprocess.run([sys.executable, "-c", SCRIPT, str(ckpt), str(out), str(kill_at)], env=env)
    return p.returncode, (json.loads(out.read_text()) if out.exists() else None)


def test_killed_run_resumes_to_identical_metrics(tmp_path):
    rc, ref = _run(tmp_path, tmp_path / "ref.ckpt", -1)
    assert rc == 0
    steps_per_epoch = -(-1295 // 64)
    rc, res = _run(tmp_path, tmp_path / "run.ckpt", 2 * steps_per_epoch + 5)  # killed mid epoch 3
    assert rc != 0 and res is None
    assert train.load_checkpoint(tmp_path / "run.ckpt")["epoch"] == 2
    rc, res = _run(tmp_path, tmp_path / "run.ckpt", -1)  # re-run: resumes at epoch 3
    assert rc == 0
    assert res == ref


def test_fit_learns_digits_and_reports_history():
    torch.manual_seed(0)
    L = data.get_loaders("digits", batch_size=32, seed=0, image_size=16)
    m = models.create_model("lenet5", image_size=16)
    r = train.fit(m, L, 3, torch.optim.Adam(m.parameters(), 3e-3), seed=0)
    assert [h["epoch"] for h in r["history"]] == [1, 2, 3]
    assert r["test_accuracy"] > 0.8 and r["best_epoch"] in (1, 2, 3)


def test_callbacks_fire_in_order():
    calls = []

    class Rec(train.Callback):
        def on_batch_start(self, s):
            calls.append("start")

        def on_loss(self, s):
            calls.append("loss")

        def after_backward(self, s):
            calls.append("backward")

        def after_step(self, s):
            calls.append("step")

        def on_epoch_end(self, s):
            calls.append("epoch")

    L = data.get_loaders("digits", batch_size=2000, seed=0, image_size=16)
    m = models.create_model("lenet5", image_size=16)
    train.fit(m, L, 1, torch.optim.SGD(m.parameters(), 0.1), callbacks=[Rec()])
    assert calls == ["start", "loss", "backward", "step", "epoch"]


def test_on_loss_can_add_a_regulariser():
    class L2(train.Callback):
        def on_loss(self, s):
            s.loss = s.loss + 1000.0

    L = data.get_loaders("digits", batch_size=2000, seed=0, image_size=16)
    m = models.create_model("lenet5", image_size=16)
    r = train.fit(m, L, 1, torch.optim.SGD(m.parameters(), 0.0), callbacks=[L2()])
    assert r["history"][0]["train_loss"] > 1000


def test_kd_loss():
    s = torch.randn(4, 10)
    assert train.kd_loss(s, s, T=4.0).abs() < 1e-5
    assert train.kd_loss(s, s + 1, kind="mse").item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="kd kind"):
        train.kd_loss(s, s, kind="l1")


class Evil:  # an arbitrary pickled object: weights_only loading must refuse it
    pass


def test_corrupt_and_non_weights_checkpoints_are_refused(tmp_path):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="not a readable weights-only checkpoint"):
        train.load_checkpoint(bad)

    pick = tmp_path / "pickle.ckpt"
    torch.save({"obj": Evil()}, pick)
    with pytest.raises(ValueError, match="weights_only"):
        train.load_checkpoint(pick)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        train.load_checkpoint(tmp_path / "missing.ckpt")
    torch.save(torch.zeros(3), tmp_path / "tensor.ckpt")
    with pytest.raises(ValueError, match="expected a checkpoint dict"):
        train.load_checkpoint(tmp_path / "tensor.ckpt")


def test_same_seed_on_reused_loaders_gives_same_result():
    """fit restarts the loader's shuffling stream: a second fit on the same Loaders repeats the first."""
    L = data.get_loaders("digits", batch_size=64, seed=0, image_size=16)

    def run(seed):
        train.set_seed(0)  # same initial weights; only fit's seed differs
        m = models.create_model("lenet5", image_size=16)
        return train.fit(m, L, 1, torch.optim.SGD(m.parameters(), 0.05), seed=seed, progress=False)["history"][0][
            "train_loss"
        ]

    a, b, c = run(0), run(0), run(1)
    assert a == b
    assert a != c


def test_check_device_refuses_what_the_machine_lacks():
    assert train.check_device("cpu") == "cpu"
    with pytest.raises(ValueError, match="unknown DEVICE 'tpu'"):
        train.check_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="torch.cuda.is_available\\(\\) is False"):
            train.check_device("cuda")
