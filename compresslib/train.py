"""One training loop for every method: ``fit`` / ``train_one_epoch`` / ``evaluate`` + callbacks.

Methods plug in through callbacks (ADMM dual updates, proximal steps, EC2T re-assignment,
CAMP gates) instead of writing their own loops:

    on_batch_start -> forward -> on_loss (may change s.loss) -> backward -> after_backward
    -> optimizer.step -> after_step ... on_epoch_end

Checkpoints are written atomically after every epoch with model, optimizer, scheduler,
callback and RNG state, so ``fit(..., resume=True)`` continues an interrupted run and ends
with exactly the metrics of an uninterrupted one (same seed, same CPU).

Under ``torchrun`` (see ``compresslib.distributed``) ``fit`` wraps the model in
DistributedDataParallel, each rank reads its slice of every global batch, evaluation is sharded
and all-reduced, and only rank 0 shows progress and writes checkpoints. On CUDA, ``amp`` and
``channels_last`` (or $COMPRESSLIB_AMP / $COMPRESSLIB_CHANNELS_LAST = 1) turn on
``torch.autocast`` with a GradScaler and the channels-last memory format; both are off on CPU.
"""
from __future__ import annotations

import contextlib
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import distributed as D


class Callback:
    """Base class: override any hook; ``state_dict`` is saved in checkpoints."""

    def on_batch_start(self, s: "TrainState") -> None: ...
    def on_loss(self, s: "TrainState") -> None: ...
    def after_backward(self, s: "TrainState") -> None: ...
    def after_step(self, s: "TrainState") -> None: ...
    def on_epoch_end(self, s: "TrainState") -> None: ...

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, d: dict) -> None: ...


@dataclass
class TrainState:
    """What the callbacks see; ``loss`` may be replaced in ``on_loss``; ``stop`` ends training."""

    model: nn.Module
    optimizer: torch.optim.Optimizer | None
    epoch: int = 0
    step: int = 0
    inputs: Any = None
    targets: Any = None
    outputs: Any = None
    loss: Any = None
    teacher_outputs: Any = None
    history: list = field(default_factory=list)
    stop: bool = False
    device: str = "cpu"


def set_seed(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def kd_loss(student_logits, teacher_logits, T: float = 1.0, kind: str = "kl"):
    """Knowledge distillation: ``kl`` = T²·KL(softmax(t/T) || softmax(s/T)) (Hinton et al. 2015);
    ``mse`` = mean squared error between logits (the ECC code's distillation loss)."""
    if kind == "kl":
        return F.kl_div(F.log_softmax(student_logits / T, 1), F.softmax(teacher_logits / T, 1),
                        reduction="batchmean") * T * T
    if kind == "mse":
        return F.mse_loss(student_logits, teacher_logits)
    raise ValueError(f"kd kind must be 'kl' or 'mse', got {kind!r}")


@torch.no_grad()
def predict_logits(model: nn.Module, loader, device="cpu"):
    """All logits and targets of a loader, in order (model in eval mode)."""
    was = model.training
    model.eval()
    outs, ys = [], []
    for x, y in loader:
        outs.append(model(x.to(device)).float().cpu())
        ys.append(y)
    model.train(was)
    return torch.cat(outs), torch.cat(ys)


def evaluate(model: nn.Module, loader, device="cpu") -> dict:
    """Mean cross-entropy and top-1 accuracy over a loader: ``{"loss", "accuracy", "n"}``.

    Under DDP every rank scores its strided share of the loader and the sums are all-reduced."""
    if not D.is_dist():
        logits, y = predict_logits(model, loader, device)
        return {"loss": F.cross_entropy(logits, y).item(),
                "accuracy": (logits.argmax(1) == y).float().mean().item(), "n": len(y)}
    shard = D.shard_loader(loader)
    loss_sum = correct = n = 0.0
    if len(shard.dataset):
        logits, y = predict_logits(getattr(model, "module", model), shard, device)
        loss_sum = F.cross_entropy(logits, y, reduction="sum").item()
        correct, n = float((logits.argmax(1) == y).sum()), float(len(y))
    loss_sum, correct, n = D.all_reduce_scalars(loss_sum, correct, n)
    return {"loss": loss_sum / n, "accuracy": correct / n, "n": int(n)}


def check_device(device: str) -> str:
    """``device`` if this machine has it (``cpu``, ``cuda``, ``cuda:N``), else a clear ValueError."""
    dev = str(device)
    if dev == "cpu":
        return dev
    if not dev.startswith("cuda"):
        raise ValueError(f"unknown DEVICE {dev!r}: use 'cpu' or 'cuda' (or 'cuda:N')")
    if not torch.cuda.is_available():
        raise ValueError(f"DEVICE {dev!r} requested but torch.cuda.is_available() is False on this machine: use 'cpu'")
    return dev


def reseed_loader(loader, seed: int) -> None:
    """Restart a loader's shuffling stream (its sampler's ``torch.Generator``) at ``seed``."""
    for obj in (loader, getattr(loader, "sampler", None)):
        gen = getattr(obj, "generator", None)
        if isinstance(gen, torch.Generator):
            gen.manual_seed(seed)


def _rng_state(loader) -> dict:
    np_state = np.random.get_state()
    st = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
          "python_pos": random.getstate()[2], "numpy": torch.from_numpy(np_state[1].astype(np.int64)),
          "numpy_pos": int(np_state[2])}
    gen = getattr(getattr(loader, "sampler", None), "generator", None)
    if gen is not None:
        st["sampler"] = gen.get_state()
    return st


def _set_rng_state(st: dict, loader) -> None:
    torch.set_rng_state(st["torch"])
    random.setstate((3, tuple(st["python"]), st["python_pos"]))
    np.random.set_state(("MT19937", st["numpy"].numpy().astype(np.uint32), st["numpy_pos"], 0, 0.0))
    gen = getattr(getattr(loader, "sampler", None), "generator", None)
    if gen is not None and "sampler" in st:
        gen.set_state(st["sampler"])


def save_checkpoint(path, **state) -> Path:
    """Atomically write a checkpoint dict (tmp file + rename: a crash never leaves half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path) -> dict:
    """Read a checkpoint with ``torch.load(weights_only=True)``; any failure becomes a clear error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt file, pickle with arbitrary objects, truncated write ...
        raise ValueError(f"{path} is not a readable weights-only checkpoint "
                         f"(torch.load(weights_only=True) failed: {type(e).__name__}: {e})") from e
    if not isinstance(obj, dict):
        raise ValueError(f"{path} holds a {type(obj).__name__}, expected a checkpoint dict")
    return obj


def _progress(iterable, enabled: bool, **kw):
    enabled = enabled and os.environ.get("COMPRESSLIB_PROGRESS", "1") != "0" and D.is_main()
    return tqdm(iterable, disable=not enabled, **kw)


def train_one_epoch(model, loader, optimizer, loss_fn=None, callbacks: Iterable[Callback] = (),
                    state: TrainState | None = None, device="cpu", teacher=None, kd_weight=0.0,
                    kd_T=1.0, kd_kind="kl", progress=True, scaler=None, channels_last=False) -> dict:
    """One pass over ``loader``; returns ``{"train_loss", "train_accuracy"}`` (running averages).

    ``model`` may be a DDP wrapper (``state.model`` is then the bare module the callbacks see);
    with a ``scaler`` (CUDA AMP) the forward runs under ``torch.autocast`` and gradients are
    unscaled before ``after_backward``."""
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    s = state or TrainState(model, optimizer, device=device)
    model.train()
    if teacher is not None:
        teacher.eval()
    bsamp = getattr(loader, "batch_sampler", None)
    global_sizes = bsamp.global_batch_sizes() if isinstance(bsamp, D.DistributedBatchSampler) else None
    amp = scaler is not None
    tot_loss, correct, n = 0.0, 0, 0
    for i, (x, y) in enumerate(_progress(loader, progress, desc=f"epoch {s.epoch + 1}", leave=False)):
        s.inputs, s.targets = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if channels_last and s.inputs.dim() == 4:
            s.inputs = s.inputs.contiguous(memory_format=torch.channels_last)
        for cb in callbacks:
            cb.on_batch_start(s)
        with torch.autocast("cuda") if amp else contextlib.nullcontext():
            s.outputs = model(s.inputs)
            loss = loss_fn(s.outputs, s.targets)
            if teacher is not None and kd_weight > 0:
                with torch.no_grad():
                    s.teacher_outputs = teacher(s.inputs)
                loss = (1 - kd_weight) * loss + kd_weight * kd_loss(s.outputs, s.teacher_outputs, kd_T, kd_kind)
        s.loss = data_loss = loss.float() if amp else loss
        for cb in callbacks:
            cb.on_loss(s)
        if optimizer is not None:
            optimizer.zero_grad(set_to_none=True)
        backward = s.loss
        if global_sizes is not None:  # DDP averages rank gradients: weight each rank's data term by
            w = len(y) * D.world_size() / global_sizes[i]  # its share so the sum is the global-batch mean
            if w != 1.0:
                backward = s.loss + (w - 1.0) * data_loss
        (scaler.scale(backward) if amp else backward).backward()
        if amp and optimizer is not None:
            scaler.unscale_(optimizer)
        for cb in callbacks:
            cb.after_backward(s)
        if optimizer is not None:
            if amp:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
        for cb in callbacks:
            cb.after_step(s)
        s.step += 1
        b = len(y)
        tot_loss += float(s.loss.detach()) * b
        correct += int((s.outputs.detach().argmax(1) == s.targets).sum())
        n += b
        if D.is_dist():  # a stop requested on any rank stops every rank (else DDP would hang)
            s.stop = D.all_reduce_scalars(float(s.stop))[0] > 0
        if s.stop:
            break
    if D.is_dist():
        tot_loss, correct, n = D.all_reduce_scalars(tot_loss, correct, n)
    return {"train_loss": tot_loss / max(n, 1), "train_accuracy": correct / max(n, 1)}


def fit(model: nn.Module, loaders, epochs: int, optimizer, scheduler=None,
        callbacks: Iterable[Callback] = (), loss_fn: Callable | None = None, device="cpu",
        ckpt_path=None, resume: bool = False, seed: int = 0, progress: bool = True, teacher=None,
        kd_weight: float = 0.0, kd_T: float = 1.0, kd_kind: str = "kl", amp: bool | None = None,
        channels_last: bool | None = None) -> dict:
    """Train for ``epochs`` epochs, evaluating on val after each and on test at the end.

    ``ckpt_path``: checkpoint written atomically after every epoch; with ``resume=True`` an
    existing one is loaded and training continues from the next epoch. Returns
    ``{"history", "val_accuracy", "test_accuracy", "best_val_accuracy", "best_epoch",
    "seconds_per_epoch"}``.

    Under torchrun (WORLD_SIZE > 1) the process group is joined here, ``loaders.train``'s batch
    size is the global batch, and checkpoints/progress come from rank 0 only. ``amp`` /
    ``channels_last``: CUDA only (None = $COMPRESSLIB_AMP / $COMPRESSLIB_CHANNELS_LAST == "1").
    """
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    callbacks = list(callbacks)
    D.init_from_env(None if str(device).startswith("cuda") else "gloo")  # CPU stages: gloo
    device = D.device_for(device)
    cuda = torch.device(device).type == "cuda"
    amp = cuda and (os.environ.get("COMPRESSLIB_AMP") == "1" if amp is None else amp)
    channels_last = cuda and (os.environ.get("COMPRESSLIB_CHANNELS_LAST") == "1"
                              if channels_last is None else channels_last)
    model.to(device, memory_format=torch.channels_last) if channels_last else model.to(device)
    if teacher is not None:
        teacher.to(device)
    net = D.wrap_model(model, device)
    train_loader = D.distributed_loader(loaders.train)
    scaler = torch.amp.GradScaler("cuda") if amp else None
    s = TrainState(model, optimizer, device=device)
    set_seed(seed)
    reseed_loader(loaders.train, seed)  # the shuffling stream too: a fit's result never depends on earlier fits
    start = 0
    if ckpt_path and D.is_dist():  # every rank resumes from rank 0's file (ranks' OUT_DIRs differ)
        ckpt_path = D.broadcast_object(str(ckpt_path))
    if resume and ckpt_path and Path(ckpt_path).is_file():
        ck = load_checkpoint(ckpt_path)
        model.load_state_dict(ck["model"])
        if optimizer is not None and ck.get("optimizer"):
            optimizer.load_state_dict(ck["optimizer"])
        if scheduler is not None and ck.get("scheduler"):
            scheduler.load_state_dict(ck["scheduler"])
        for cb, st in zip(callbacks, ck.get("callbacks", [])):
            cb.load_state_dict(st)
        s.history, s.step, start = list(ck["history"]), int(ck["step"]), int(ck["epoch"])
        ranks = ck.get("rng_ranks") or []
        _set_rng_state(ranks[D.rank()] if len(ranks) == D.world_size() else ck["rng"], loaders.train)
        if scaler is not None and ck.get("scaler"):
            scaler.load_state_dict(ck["scaler"])
    for epoch in _progress(range(start, epochs), progress and epochs - start > 1, desc="fit",
                           initial=start, total=epochs):
        s.epoch = epoch
        t0 = time.perf_counter()
        row = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"] if optimizer else None}
        row.update(train_one_epoch(net, train_loader, optimizer, loss_fn, callbacks, s, device,
                                   teacher, kd_weight, kd_T, kd_kind, progress, scaler, channels_last))
        if scheduler is not None:
            scheduler.step()
        for cb in callbacks:
            cb.on_epoch_end(s)
        if getattr(loaders, "val", None) is not None:
            ev = evaluate(model, loaders.val, device)
            row.update(val_loss=ev["loss"], val_accuracy=ev["accuracy"])
        row["seconds"] = time.perf_counter() - t0
        s.history.append(row)
        if ckpt_path:
            rng = _rng_state(loaders.train)
            rng_ranks = D.all_gather_object(rng) if D.is_dist() else None
            if D.is_main():
                save_checkpoint(ckpt_path, model=model.state_dict(),
                                optimizer=optimizer.state_dict() if optimizer else None,
                                scheduler=scheduler.state_dict() if scheduler else None,
                                callbacks=[cb.state_dict() for cb in callbacks], history=s.history,
                                step=s.step, epoch=epoch + 1, rng=rng, rng_ranks=rng_ranks,
                                scaler=scaler.state_dict() if scaler is not None else None)
            D.barrier()
        if s.stop:
            break
    out = {"history": s.history}
    vals = [h.get("val_accuracy") for h in s.history if h.get("val_accuracy") is not None]
    if vals:
        best = int(np.argmax(vals))
        out.update(val_accuracy=vals[-1], best_val_accuracy=vals[best], best_epoch=best + 1)
    if getattr(loaders, "test", None) is not None:
        out["test_accuracy"] = evaluate(model, loaders.test, device)["accuracy"]
    secs = [h["seconds"] for h in s.history]
    out["seconds_per_epoch"] = float(np.median(secs)) if secs else 0.0
    return out
