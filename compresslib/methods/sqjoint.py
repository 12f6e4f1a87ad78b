"""Sparsity-quantization joint learning under one model-size budget (Yang et al., CVPR 2020).

Problem (spec §2.2):  min_W f(W)  s.t.  sum_l b_l * ||W_l||_0 <= S,  nonzeros of W_l in C_l, |C_l| = 2^b_l.
ADMM split (§2.3): W carries sparsity (0-1 knapsack, bits fixed), the soft duplicate V carries
quantization (multiple-choice knapsack over bitwidths, nnz fixed), the scaled dual Y forces W = V.
Only Conv2d / Linear ``weight`` tensors are compressed and counted; biases/BN are not.

Modes (ablations): ``joint`` (learned sparsity + MCKP bits), ``fixed`` (learned sparsity, bits fixed at
floor(bit_budget)), ``prune`` (fp32 values, global magnitude top-K, no V/Y), ``quantize`` (dense,
MCKP bits, k-means without a forced zero).

The combinatorial solvers (budgets, knapsack, k-means, MCKP, compression accounting) are in
:mod:`compresslib.methods.sqjoint_solvers` and importable from here; this module holds the ADMM state,
the ADMM phase and the straight-through finetune (callbacks on :func:`compresslib.train.fit`), the progressive
chain, and stage 04's pipeline on the
method contract (:class:`Config`, :func:`run`, :func:`save_model` and the stage's tables).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from ..checks import check_number
from ..train import Callback
from .contract import EPOCHS, FRACTION, LR, SEED, MethodConfig, Result, ints, register_method
from .sqjoint_solvers import (
    ACCOUNTINGS,  # noqa: F401  (re-exported)
    ZERO_EPS,  # noqa: F401  (re-exported)
    _sizes,
    check_bit_range,
    check_budgets,  # noqa: F401
    check_size,
    compressible_layers,
    compression_rate,  # noqa: F401  (re-exported)
    index_storage,
    kmeans_quantize,
    knapsack_sparsify_,
    measured_bits,
    mckp_greedy,  # noqa: F401  (re-exported)
    mckp_quantize,
    other_parameters,  # noqa: F401  (re-exported)
    size_budget,  # noqa: F401  (re-exported)
    target_compression,  # noqa: F401  (re-exported)
    weight_bits,
    zero_kmeans_1d,
)

MODES = ("joint", "fixed", "prune", "quantize")


# ----------------------------------------------------------------------- ADMM state (§2.3)
class ADMMState:
    """Scaled-form ADMM state (V, Y, bits, nnz, rho) over live weight tensors W; optimizer-agnostic.

    L_rho(W, V, Y) = f(W) + rho/2 * sum_l ||W_l - V_l + Y_l||^2.  Call ``prox_(lr)`` after each
    optimizer step, ``project_()`` (W-projection) and ``outer_step()`` (V-step + dual ascent) at the
    end of each ADMM interval.
    """

    def __init__(
        self,
        weights,
        S: float,
        bit_budget: float,
        rho: float,
        mode: str = "joint",
        bit_range=range(1, 9),
        kmeans_iters: int = 30,
    ):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if rho <= 0 and mode != "prune":
            raise ValueError(f"rho must be > 0, got {rho}")
        self.W, self.S, self.rho, self.mode = list(weights), float(S), float(rho), mode
        self.B = check_bit_range(bit_range)
        b0 = int(math.floor(bit_budget))
        if mode != "prune" and not self.B[0] <= b0 <= self.B[-1]:
            raise ValueError(f"floor(bit_budget)={b0} is outside the candidate bitwidths {self.B}")
        check_size(self.S, len(self.W), 32 if mode == "prune" else self.B[0])
        self.bits = [32 if mode == "prune" else b0] * len(self.W)
        self.nnz = [w.numel() for w in self.W]
        self.V = [w.detach().clone() for w in self.W]
        self.Y = [torch.zeros_like(w) for w in self.W]
        self.codebooks = [None] * len(self.W)
        self.kmeans_iters = kmeans_iters

    @property
    def quantized(self) -> bool:
        return self.mode != "prune"

    @property
    def zero_anchor(self) -> bool:
        return self.mode != "quantize"

    @torch.no_grad()
    def prox_(self, lr: float) -> None:
        """Exact prox of rho/2 ||W - V + Y||^2 after a gradient step: W <- (W + beta (V - Y)) / (1 + beta), beta = lr rho."""
        if not self.quantized:
            return
        beta = lr * self.rho
        for w, v, y in zip(self.W, self.V, self.Y):
            w.mul_(1.0 / (1.0 + beta)).add_(v - y, alpha=beta / (1.0 + beta))

    @torch.no_grad()
    def project_(self) -> list[int]:
        """W-projection onto {sum_l b_l nnz_l <= S} at the current bits (no-op for quantize-only)."""
        if self.mode != "quantize":
            self.nnz = knapsack_sparsify_(self.W, self.bits, self.S)
        return self.nnz

    @torch.no_grad()
    def outer_step(self) -> None:
        """V <- Pi_quant(W + Y) (MCKP bits, or k-means at fixed bits for ``fixed``); Y <- Y + W - V."""
        if not self.quantized:
            return
        Z = [w.detach() + y for w, y in zip(self.W, self.Y)]
        if self.mode == "fixed":
            self.codebooks = [zero_kmeans_1d(z, b, self.kmeans_iters) for z, b in zip(Z, self.bits)]
            self.V = [kmeans_quantize(z, cb) for z, cb in zip(Z, self.codebooks)]
        else:
            self.V, self.bits, self.codebooks = mckp_quantize(
                Z, self.nnz, self.S, self.B, zero_anchor=self.zero_anchor, iters=self.kmeans_iters
            )
        for w, v, y in zip(self.W, self.V, self.Y):
            y.add_(w.detach() - v)

    @torch.no_grad()
    def residual(self) -> float:
        """Primal residual sum_l ||W_l - V_l||^2 (0 for prune-only)."""
        if not self.quantized:
            return 0.0
        return float(sum((w.detach() - v).double().pow(2).sum() for w, v in zip(self.W, self.V)))

    def allocated_size(self) -> float:
        """sum_l b_l * nnz_l in bits at the current allocation."""
        return float(sum(b * n for b, n in zip(self.bits, self.nnz)))


# ------------------------------------------------------------- training loops (§3.1, §4)
def _lr_at(t: int, total: int, warmup: int, lr0: float) -> float:
    """Linear warm-up for ``warmup`` steps, then cosine annealing to 0, stepped every iteration."""
    if t < warmup:
        return lr0 * (t + 1) / warmup
    return 0.5 * lr0 * (1 + math.cos(math.pi * (t - warmup) / max(1, total - warmup)))


def _add_weight_decay(model: nn.Module, weight_decay: float) -> None:
    """Hand-added weight decay on the gradient of every ``*weight`` parameter (as the paper's repo does)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("weight") and p.grad is not None:
                p.grad.add_(p, alpha=weight_decay)


def _set_lr(optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr


class ADMMCallback(Callback):
    """The ADMM phase (spec §3.8) as a :func:`compresslib.train.fit` callback, one optimizer step per batch.

    Step t: LR = linear warm-up then cosine (:func:`_lr_at`), CE loss, hand-added weight decay, SGD step,
    prox of the ADMM term (``state.prox_``); at t = 0 and at the end of every interval of
    ``steps_per_interval`` steps the W-projection (knapsack) + V-step (MCKP) + dual update; after each
    interval a ``history`` row (mean loss, residual, allocated size, bits, nnz and, with ``eval_fn``, the
    float and quantized accuracies). Sets ``stop`` after ``total`` steps. ``state_dict`` holds V, Y, bits,
    nnz, codebooks and the history, so an interrupted fit resumes."""

    def __init__(self, state: ADMMState, total: int, steps_per_interval: int, warm: int, lr: float, wd: float, eval_fn):
        self.state, self.total, self.spi, self.warm, self.lr, self.wd = state, total, steps_per_interval, warm, lr, wd
        self.eval_fn, self.history, self.losses, self.lr_t = eval_fn, [], [], lr

    def on_batch_start(self, s) -> None:
        self.lr_t = _lr_at(s.step, self.total, self.warm, self.lr)
        _set_lr(s.optimizer, self.lr_t)

    def after_backward(self, s) -> None:
        _add_weight_decay(s.model, self.wd)

    def after_step(self, s) -> None:
        st, t = self.state, s.step
        self.losses.append(s.loss.item())
        st.prox_(self.lr_t)
        if t == 0 or (t + 1) % self.spi == 0:
            st.project_()
            st.outer_step()
        if (t + 1) % self.spi == 0:
            row = {
                "interval": (t + 1) // self.spi,
                "step": t + 1,
                "lr": self.lr_t,
                "loss": sum(self.losses) / len(self.losses),
                "residual": st.residual(),
                "size_bits": st.allocated_size(),
                "bits": list(st.bits),
                "nnz": list(st.nnz),
            }
            self.losses = []
            if self.eval_fn is not None:
                row["float_accuracy"] = self.eval_fn(s.model)
                row["quant_accuracy"] = self.eval_fn(quantized_copy(s.model, st.bits, st.mode))
                s.model.train()
            self.history.append(row)
        s.stop = t + 1 >= self.total

    def fingerprint(self) -> dict:
        st = self.state
        cfg = dict(S=st.S, rho=st.rho, mode=st.mode, bits=st.B, total=self.total, spi=self.spi, warm=self.warm)
        return {"class": "sqjoint.ADMMCallback", **cfg, "lr": self.lr, "wd": self.wd}

    def state_dict(self) -> dict:
        st = self.state
        keep = dict(V=st.V, Y=st.Y, bits=st.bits, nnz=st.nnz, codebooks=st.codebooks)
        return dict(keep, history=self.history, losses=self.losses)

    def load_state_dict(self, d: dict) -> None:
        st = self.state
        st.V, st.Y, st.bits, st.nnz, st.codebooks = d["V"], d["Y"], list(d["bits"]), list(d["nnz"]), d["codebooks"]
        self.history, self.losses = list(d["history"]), list(d["losses"])


class FinetuneCallback(Callback):
    """The masked, bit-fixed straight-through finetune (spec §4) as a :func:`compresslib.train.fit` callback.

    Before each step the latent kept weights are set aside and W <- q_C(W) (codebooks re-fit every
    ``refresh`` steps, 5 warm-started Lloyd iterations); after backward the latent weights are restored
    (the gradient taken at q(W)) and weight decay added; after the SGD step the mask is re-applied.
    LR: cosine from ``lr``. Sets ``stop`` after ``steps`` steps. prune-only: masked fp32 training."""

    def __init__(self, ws, bits, steps: int, mode: str, lr: float, wd: float, refresh: int):
        self.ws, self.bits, self.steps, self.lr, self.wd, self.refresh = ws, list(bits), steps, lr, wd, refresh
        self.quant, self.anchor, self.mode = mode != "prune", mode != "quantize", mode
        self.masks = [w != 0 for w in ws] if self.anchor else [None] * len(ws)  # pruned entries stay exactly 0
        quant = self.quant
        self.books = [zero_kmeans_1d(w, b, 100, zero_anchor=self.anchor) if quant else None for w, b in zip(ws, bits)]
        self.latent = None

    @torch.no_grad()
    def on_batch_start(self, s) -> None:
        t, anchor = s.step, self.anchor
        if self.quant and t > 0 and t % self.refresh == 0:
            self.books = [
                zero_kmeans_1d(w, b, 5, zero_anchor=anchor, init=cb[cb != 0] if anchor else cb)
                for w, b, cb in zip(self.ws, self.bits, self.books)
            ]
        self.latent = None
        if self.quant:  # quantize only the kept entries (q(0) = 0 for the zero-anchored codebook)
            self.latent = [w[m] if m is not None else w.detach().clone() for w, m in zip(self.ws, self.masks)]
            for w, m, lat, cb in zip(self.ws, self.masks, self.latent, self.books):
                if m is None:
                    w.copy_(kmeans_quantize(lat, cb, anchor))
                else:
                    w[m] = kmeans_quantize(lat, cb, anchor)
        _set_lr(s.optimizer, _lr_at(t, self.steps, 0, self.lr))

    def after_backward(self, s) -> None:
        with torch.no_grad():
            for w, m, lat in zip(self.ws, self.masks, self.latent or []):
                if m is None:
                    w.copy_(lat)
                else:
                    w[m] = lat
        _add_weight_decay(s.model, self.wd)

    @torch.no_grad()
    def after_step(self, s) -> None:
        for w, m in zip(self.ws, self.masks):
            if m is not None:
                w.masked_fill_(~m, 0.0)
        s.stop = s.step + 1 >= self.steps

    def fingerprint(self) -> dict:
        cfg = dict(bits=self.bits, steps=self.steps, mode=self.mode, lr=self.lr, wd=self.wd, refresh=self.refresh)
        return {"class": "sqjoint.FinetuneCallback", **cfg}

    def state_dict(self) -> dict:
        return {"books": self.books}

    def load_state_dict(self, d: dict) -> None:
        self.books = d["books"]


class _OneIterLoader(DataLoader):
    """The train loader as :func:`_fit_steps` hands it to ``fit``: the same dataset, sampler and generator, but
    a second ``iter()`` before the first iterator yielded anything returns that same iterator. ``fit``'s
    progress wrapper (``tqdm.auto``, the asyncio variant) calls ``iter()`` once in its constructor and once
    to loop, and each DataLoader iterator draws a base seed from the generator; without this, every epoch
    would shift the shuffling stream by one draw against the plain ``for`` loop the ADMM and finetune
    phases were written (and their published numbers produced) with."""

    _pending = None

    def __iter__(self):
        it = self._pending
        if it is None or it._num_yielded > 0:
            it = self._pending = super().__iter__()
        return it


def _one_iter(loader):
    if not isinstance(loader, DataLoader) or loader.batch_size is None:
        return loader
    keep = ("batch_size", "sampler", "num_workers", "collate_fn", "pin_memory", "drop_last", "generator")
    view = _OneIterLoader(loader.dataset, worker_init_fn=loader.worker_init_fn, **{k: getattr(loader, k) for k in keep})
    view.fingerprint = getattr(loader, "fingerprint", None)
    return view


def _fit_steps(model, train_loader, steps: int, callback, momentum: float, lr: float, device, progress) -> None:
    """``steps`` SGD steps of :func:`compresslib.train.fit` driven by ``callback``, on the loader's *current*
    shuffling and random streams (``seed=None``: a phase continues where the previous one left them), no
    evaluation; conv weights channels_last on the CPU where that is safe (:class:`_FastLayout`)."""
    from ..train import Splits, fit

    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    example = _example(train_loader).to(device)
    with _FastLayout(model, example):
        epochs = -(-steps // len(train_loader))
        fit(model, Splits(_one_iter(train_loader)), epochs, opt, callbacks=[callback], device=str(device), seed=None,
            progress=progress, evaluate="none")  # fmt: skip


def initial_bits(mode: str, S: float, n_total: int, bit_budget: float) -> float:
    """Starting bits: floor(bit_budget); quantize-only (all weights kept) needs S >= n_total bits."""
    if mode == "quantize":
        if S < n_total:
            raise ValueError(
                f"quantize-only keeps all {n_total} weights and needs >= 1 bit each "
                f"(budget {S:.0f} bits): it cannot exceed 32x compression"
            )
        return min(8.0, S / n_total)
    return bit_budget


@torch.no_grad()
def quantize_weights_(model: nn.Module, bits, mode: str = "joint", iters: int = 100) -> list:
    """Replace each layer's weight by q_C(W_l) with a fresh k-means codebook at b_l (§3.7); fp32 for prune."""
    if mode == "prune":
        return [None] * len(bits)
    books = []
    for (_, m), b in zip(compressible_layers(model), bits):
        cb = zero_kmeans_1d(m.weight, b, iters, zero_anchor=mode != "quantize")
        m.weight.copy_(kmeans_quantize(m.weight, cb, mode != "quantize"))
        books.append(cb)
    return books


def quantized_copy(model: nn.Module, bits, mode: str = "joint") -> nn.Module:
    q = copy.deepcopy(model)
    quantize_weights_(q, bits, mode)
    return q


class _FastLayout:
    """``with _FastLayout(model, example):`` stores 4-D conv weights channels_last for the duration
    (layout only: values and Parameter objects are unchanged; the model is contiguous again on exit).
    On CPU (oneDNN) this makes the conv and max-pool passes of the Caffe LeNet faster at 1 thread.

    Safe for any model: channels_last weights make conv outputs channels_last, which breaks models that
    ``.view()`` a conv output (the original CaffeLeNet does ``x.view(N, 800)``) or otherwise depend on
    strides. So on entry a deep copy of the model is run once in eval mode on ``example`` in both layouts
    (no gradients, no RNG use, the model itself untouched); the switch is kept only if the channels_last
    forward succeeds and matches the contiguous one (within 1e-4 relative), else the model stays
    contiguous. ``active`` says which; ``reason`` why not. No 4-D weight or no example: no switch.
    """

    def __init__(self, model: nn.Module, example: torch.Tensor | None = None):
        self.model, self.example = model, example
        self.active, self.reason = False, ""

    def _probe(self) -> str:
        if self.example is None:
            return "no example input"
        if not any(p.dim() == 4 for p in self.model.parameters()):
            return "no 4-D weights"
        probe = copy.deepcopy(self.model).eval()
        try:
            with torch.no_grad():
                ref = probe(self.example)
                probe.to(memory_format=torch.channels_last)
                got = probe(self.example)
        except RuntimeError as e:
            return f"channels_last forward fails ({str(e).splitlines()[0][:80]})"
        if not (
            isinstance(ref, torch.Tensor)
            and isinstance(got, torch.Tensor)
            and ref.shape == got.shape
            and torch.allclose(got, ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max().clamp_min(1e-12)))
        ):
            return "channels_last output differs from the contiguous one"
        return ""

    def __enter__(self):
        self.reason = self._probe()
        self.active = not self.reason
        if self.active:
            self.model.to(memory_format=torch.channels_last)
        return self

    def __exit__(self, *exc):
        if self.active:
            self.model.to(memory_format=torch.contiguous_format)
        return False


def _example(loader) -> torch.Tensor:
    """One batch of inputs for :class:`_FastLayout`'s probe, read from the dataset without touching the
    loader's shuffling stream or the global random streams (augmenting transforms draw from them)."""
    ds = loader.dataset
    with torch.random.fork_rng(devices=[]):
        return torch.stack([ds[i][0] for i in range(min(len(ds), loader.batch_size or 1))])


def check_hparams(
    lr: float,
    momentum: float,
    weight_decay: float,
    steps: int,
    warmup: float = 0.0,
    min_steps: int = 1,
    rho: float | None = None,
) -> None:
    """Clear errors for SGD / schedule knobs before any work."""
    if not lr > 0:
        raise ValueError(f"learning rate must be > 0, got {lr}")
    if not 0 <= momentum < 1:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    if not weight_decay >= 0:  # NaN too
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    check_number("number of steps/intervals", steps, min_steps, integer=True)
    if not 0 <= warmup <= steps:
        raise ValueError(f"warm-up must be in [0, {steps}] intervals, got {warmup}")
    if rho is not None and not rho > 0:
        raise ValueError(f"rho must be > 0, got {rho}")


def sqjoint_compress(
    model: nn.Module,
    train_loader,
    S: float,
    bit_budget: float,
    mode: str = "joint",
    rho: float = 0.5,
    lr: float = 0.02,
    momentum: float = 0.93,
    weight_decay: float = 5e-4,
    intervals: int = 30,
    steps_per_interval: int = 120,
    warmup_intervals: float = 5,
    bit_range=range(1, 9),
    eval_fn=None,
    progress: bool = False,
):
    """ADMM compression (spec §3.8) of a pretrained model in place under size budget S (bits).

    Per step: SGD(momentum) on CE -> prox of the ADMM term -> at step 0 and at the end of each
    interval of ``steps_per_interval`` steps: W-projection (knapsack), V-step (MCKP), dual update.
    ``eval_fn(model) -> accuracy`` is applied to the quantized copy and the float W after each interval.
    Returns (ADMMState, history); W ends exactly sparse with (bits, nnz) feasible for S. Runs as
    :class:`ADMMCallback` on ``train.fit`` (DDP / AMP there), continuing the loader's shuffling stream.
    """
    check_number("steps_per_interval", steps_per_interval, 1, integer=True)
    check_number("S (size budget in bits)", S, 0, lo_open=True)
    if mode != "prune":
        check_number("bit_budget (mean bits per kept weight)", bit_budget, 1, 8)
    check_hparams(lr, momentum, weight_decay, intervals, warmup_intervals, rho=rho if mode != "prune" else None)
    ws = [m.weight for _, m in compressible_layers(model)]
    b0 = initial_bits(mode, S, sum(w.numel() for w in ws), bit_budget)
    state = ADMMState(ws, S, b0, rho, mode, bit_range)
    total, warm = intervals * steps_per_interval, int(round(warmup_intervals * steps_per_interval))
    cb = ADMMCallback(state, total, steps_per_interval, warm, lr, weight_decay, eval_fn)
    _fit_steps(model, train_loader, total, cb, momentum, lr, ws[0].device, progress)
    return state, cb.history


def check_chain(budgets) -> list[tuple[float, float]]:
    """Validate a progressive chain: a non-empty list of (S bits, bit_budget), S non-increasing."""
    chain = [(float(S), float(b)) for S, b in budgets]
    if not chain:
        raise ValueError("a progressive chain needs at least one (S, bit_budget) stage")
    for S, b in chain:
        if not S > 0 or not 1 <= b <= 8:
            raise ValueError(f"chain stage (S={S}, bit_budget={b}): S must be > 0 bits and bit_budget in [1, 8]")
    for (S0, _), (S1, _) in zip(chain, chain[1:]):
        if S1 > S0:
            raise ValueError(
                f"a progressive chain must tighten the budget stage by stage, got S={S0:.0f} "
                f"then S={S1:.0f} bits (order JOINT_BUDGETS from the mildest to the strongest)"
            )
    return chain


def progressive_compress(model: nn.Module, train_loader, budgets, mode: str = "joint", on_stage=None, **admm):
    """Progressive chain (README AlexNet recipe ~40x -> ~60x -> ~100x, then finetune), in place.

    Stage k runs :func:`sqjoint_compress` under budget S_k on the model left by stage k-1, i.e. its raw
    sparse float W (the repo's ``--pretrain <previous>/model_latest.pt``): W's support and values are the
    starting point, the first step re-projects it onto S_k (knapsack), and, as ``train.py`` does on
    load, V = W, Y = 0 and bits restart at floor(bit_budget_k) before MCKP re-chooses them.
    ``budgets``: [(S_1, bit_budget_1), ...] with S non-increasing (checked for every stage before any work).
    ``on_stage(k, model, state, history)`` runs after each stage (e.g. finetune and evaluate a *copy*;
    the chain continues from the un-finetuned W, as in the README). ``admm``: sqjoint_compress keywords.
    Returns [(ADMMState, history)] per stage.
    """
    chain = check_chain(budgets)
    n_total = sum(_sizes(model))
    n_layers = len(compressible_layers(model))
    for S, b in chain:
        check_size(S, n_layers, 32 if mode == "prune" else min(check_bit_range(admm.get("bit_range", range(1, 9)))))
        initial_bits(mode, S, n_total, b)
    out = []
    for k, (S, b) in enumerate(chain):
        state, hist = sqjoint_compress(model, train_loader, S, b, mode=mode, **admm)
        out.append((state, hist))
        if on_stage is not None:
            on_stage(k, model, state, hist)
    return out


def finetune(
    model: nn.Module,
    train_loader,
    bits,
    steps: int,
    mode: str = "joint",
    lr: float = 0.002,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    refresh: int | None = None,
    progress: bool = False,
) -> None:
    """Finetune with fixed masks (W != 0) and fixed bits (spec §4), straight-through quantized forward.

    Each step: the latent non-zeros kept aside, W <- q_C(W) for forward/backward, latent restored, SGD
    step on the latent weights with the gradient taken at q(W), mask re-applied. Codebooks re-fit every
    ``refresh`` steps with 5 warm-started Lloyd iterations. prune-only: masked fp32 training. Runs as
    :class:`FinetuneCallback` on ``train.fit``, continuing the loader's shuffling stream.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if check_number("steps (finetune SGD steps)", steps, 0, integer=True) == 0:
        return
    check_hparams(lr, momentum, weight_decay, steps)
    ws = [m.weight for _, m in compressible_layers(model)]
    if len(bits) != len(ws):
        raise ValueError(f"need one bitwidth per layer: {len(bits)} bits for {len(ws)} layers")
    cb = FinetuneCallback(ws, bits, steps, mode, lr, weight_decay, refresh or max(1, steps // 20))
    _fit_steps(model, train_loader, steps, cb, momentum, lr, ws[0].device, progress)


def layer_report(model: nn.Module, bits, mode: str = "joint") -> list[dict]:
    """Per-layer rows: layer, numel, nnz, density, bits (allocated), measured_bits (log2 #levels),
    size_bits (weights only, :func:`weight_bits`), index_bits + index_scheme (:func:`index_storage`)."""
    rows = []
    fp32 = mode == "prune"
    for (name, m), b in zip(compressible_layers(model), bits):
        nnz = int((m.weight != 0).sum())
        ib, scheme = index_storage(m.weight, fp32)
        rows.append(
            {
                "layer": name,
                "numel": m.weight.numel(),
                "nnz": nnz,
                "density": nnz / m.weight.numel(),
                "bits": int(b),
                "measured_bits": 32.0 if fp32 else measured_bits(m.weight),
                "size_bits": weight_bits(m.weight, fp32),
                "index_bits": ib,
                "index_scheme": scheme,
            }
        )
    return rows


# ============================================================== the method contract: stage 04's pipeline
METHOD = "sparsity-quantization"
DENSE = "dense"  # Result.setting of the dense models every compression run starts from
#: dense pretraining of stage 04 (train.pretrain_dense): SGD, momentum 0.9, weight decay 5e-4, cosine (spec §9.1)
PRETRAIN = dict(optimizer="sgd", momentum=0.9, weight_decay=5e-4)
CR_KEYS = ("cr_weights_only", "cr_with_biases", "cr_with_index")
CR_ACCOUNTING = {
    "cr_weights_only": "headline, the paper's: conv/linear weights, nnz x log2(#levels) "
    "(a one-value layer: its 32-bit codebook entry); no index, codebook, bias",
    "cr_with_biases": "all parameters, biases at fp32",
    "cr_with_index": "all parameters, biases at fp32, per layer 32-bit codebook + positions "
    "(cheapest of bitmask / relative index with filler zeros / dense codes)",
}
_RUN_CACHE_VERSION = "sqjoint-run/4"  # /4: run() in the library, data identified by the loaders' fingerprints


def compressed_weights(model: nn.Module) -> int:
    """Number of compressed weights: the elements of every Conv2d/Linear ``weight`` (spec §2.2)."""
    return sum(_sizes(model))


@dataclass
class Config(MethodConfig):
    """Stage 04 (Yang et al., CVPR 2020): dense pretraining per seed, then one ADMM compression + finetune per
    (mode, nnz budget, bit budget, seed). ``joint_budgets``: ``[[nnz_budget, bit_budget], ...]`` joint runs
    (size budget S = sum_l ceil(nnz_budget n_l) * bit_budget bits, spec §2.2); ``fixed_bits`` adds the same
    budgets with bits fixed at floor(bit_budget); ``ablations``: ``[[mode, nnz_budget, bit_budget], ...]``
    (modes :data:`MODES`); ``progressive`` chains ``joint_budgets`` (mildest first) per seed.
    ``steps_per_interval`` 0 means one epoch of the train loader. ``model_kwargs`` are added to the
    (num_classes, in_channels) the loaders give."""

    model: str = "lenet5_caffe"
    seed: int = 0
    n_seeds: int = 3
    epochs: int = 15
    pretrain_lr: float = 0.01
    joint_budgets: list = field(default_factory=lambda: [[0.0054, 3], [0.01, 3], [0.05, 4]])
    progressive: bool = False
    fixed_bits: bool = True
    ablations: list = field(
        default_factory=lambda: [["prune", 0.0054, 3], ["prune", 0.05, 4], ["quantize", 1, 1], ["joint", 0.25, 4]]
    )
    intervals: int = 13
    steps_per_interval: int = 80
    warmup_intervals: int = 3
    lr: float = 0.02
    momentum: float = 0.93
    weight_decay: float = 0.0005
    rho: float = 0.5
    bwlb: int = 1
    ft_steps: int = 300
    ft_lr: float = 0.002
    device: str = "cpu"
    model_kwargs: dict = field(default_factory=dict)

    # fmt: off
    RANGES: ClassVar[dict] = {
        "seed": SEED, "n_seeds": ints(1, 100), "epochs": EPOCHS, "pretrain_lr": LR, "lr": LR, "ft_lr": LR,
        "intervals": ints(1, 100000), "steps_per_interval": ints(0, 10_000_000), "ft_steps": ints(0, 10_000_000),
        "warmup_intervals": ints(0, 100000), "momentum": dict(lo=0, hi=1, hi_open=True), "weight_decay": FRACTION,
        "rho": dict(lo=0, hi=1e6, lo_open=True), "bwlb": ints(1, 8),
    }
    # fmt: on

    @property
    def seeds(self) -> list[int]:
        return list(range(self.seed, self.seed + self.n_seeds))

    def check(self) -> None:
        for name in ("progressive", "fixed_bits"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if not isinstance(self.model, str) or not isinstance(self.model_kwargs, dict):
            raise TypeError(f"model must be a registry name and model_kwargs a dict, got {self.model!r}")
        if self.warmup_intervals > self.intervals:
            raise ValueError(
                f"warmup_intervals must be in [0, intervals={self.intervals}], got {self.warmup_intervals}"
            )
        _budget_list("joint_budgets", self.joint_budgets, with_mode=False)
        _budget_list("ablations", self.ablations, with_mode=True)
        if not self.joint_budgets and not self.ablations:
            raise ValueError("joint_budgets and ablations are both empty: nothing to run")
        from ..train import check_device

        check_device(self.device)

    def runs(self) -> list[tuple[str, float, float]]:
        """(mode, nnz_budget, bit_budget) of every configuration, each once: joint budgets, their fixed-bit
        twins (``fixed_bits``), then the ablations."""
        joint = [("joint", float(p), float(b)) for p, b in self.joint_budgets]
        fixed = [("fixed", p, b) for _, p, b in joint] if self.fixed_bits else []
        abl = [(str(m), float(p), float(b)) for m, p, b in self.ablations]
        return list(dict.fromkeys(joint + fixed + abl))


def _budget_list(name: str, items, with_mode: bool) -> None:
    """``items`` is a list of ``[nnz_budget, bit_budget]`` (``[mode, nnz_budget, bit_budget]``), each in range."""
    shape = "[mode, nnz_budget, bit_budget]" if with_mode else "[nnz_budget, bit_budget]"
    if not isinstance(items, (list, tuple)):
        raise TypeError(f"{name} must be a list of {shape}, got {items!r}")
    for i, item in enumerate(items):
        if not isinstance(item, (list, tuple)) or len(item) != (3 if with_mode else 2):
            raise ValueError(f"{name}[{i}] must be {shape}, got {item!r}")
        if with_mode and item[0] not in MODES:
            raise ValueError(f"{name}[{i}]: unknown mode {item[0]!r}; valid: {MODES}")
        check_number(f"{name}[{i}] nnz_budget (fraction of weights kept)", item[-2], 0, 1, lo_open=True)
        check_number(f"{name}[{i}] bit_budget (mean bits per kept weight)", item[-1], 1, 8)


def _per_seed(obj, seed: int, what: str):
    """``obj[seed]`` for a mapping {seed: x}, else ``obj`` itself (the same for every seed)."""
    if isinstance(obj, dict):
        if seed not in obj:
            raise KeyError(f"{what}: no entry for seed {seed} (have {sorted(obj)})")
        return obj[seed]
    return obj


def _data_name(L) -> tuple[str, int]:
    """(dataset name, training subset; 0 = all) from ``data.get_loaders``' fingerprint ("unnamed" without one)."""
    fp = getattr(L, "fingerprint", None) or {}
    return str(fp.get("dataset", "unnamed")), int(fp.get("subset") or 0)


class _Plan:
    """What one ``run`` needs besides the config: loaders, dense starts, probe model, run list, caching."""

    def __init__(self, cfg: Config, loaders, cache_dir, progress: bool):
        from .. import models

        self.cfg, self.loaders, self.progress = cfg, {s: _per_seed(loaders, s, "loaders") for s in cfg.seeds}, progress
        L0 = self.loaders[cfg.seeds[0]]
        self.kwargs = dict(num_classes=L0.num_classes, in_channels=L0.in_channels, **cfg.model_kwargs)
        self.dataset, self.subset = _data_name(L0)
        with torch.random.fork_rng(devices=[]):  # the probe leaves the caller's random stream untouched
            self.probe = models.create_model(cfg.model, **self.kwargs)
        self.input_size = [int(v) for v in models.model_input_size(cfg.model)]
        self.n_weights, self.n_layers = compressed_weights(self.probe), len(compressible_layers(self.probe))
        self.bits = check_bit_range(range(cfg.bwlb, 9))
        self.runs = cfg.runs()
        for mode, p, b in self.runs:  # budget errors (e.g. quantize-only beyond 32x) before any training
            S = size_budget(self.probe, p, b)[0]
            check_size(S, self.n_layers, 32 if mode == "prune" else cfg.bwlb)
            b0 = math.floor(initial_bits(mode, S, self.n_weights, b))
            if mode != "prune" and not self.bits[0] <= b0 <= self.bits[-1]:
                raise ValueError(
                    f"{mode} run (nnz {p}, bits {b}): starting bitwidth {b0} is below bwlb={cfg.bwlb} "
                    f"(candidate bitwidths {self.bits})"
                )
        self.chain = [(float(p), float(b)) for p, b in cfg.joint_budgets]
        if cfg.progressive:  # stages must tighten the budget
            check_chain([(size_budget(self.probe, p, b)[0], b) for p, b in self.chain])
        self.cache = Path(cache_dir) if cache_dir is not None else None
        self.dense = {}

    def say(self, msg: str) -> None:
        if self.progress:
            print(msg, flush=True)

    def tag(self, mode, p, b, s) -> str:
        return f"{mode}_cr{round(target_compression(self.probe, p, b))}_seed{s}"

    def admm_kw(self, s) -> dict:
        c, L = self.cfg, self.loaders[s]
        return dict(
            rho=c.rho,
            lr=c.lr,
            momentum=c.momentum,
            weight_decay=c.weight_decay,
            intervals=c.intervals,
            warmup_intervals=c.warmup_intervals,
            bit_range=self.bits,
            steps_per_interval=c.steps_per_interval or len(L.train),
            eval_fn=lambda m: _evaluate(m, L.val, c.device),
        )

    def run_key(self, mode, p, b, s) -> dict:
        """Everything that determines one run's result (data by its loaders' fingerprints, the dense start
        by its weights' digest)."""
        from ..train import loader_fingerprint

        c, L = self.cfg, self.loaders[s]
        names = ("model", "model_kwargs", "intervals", "steps_per_interval", "warmup_intervals", "lr", "momentum")
        names += ("weight_decay", "rho", "bwlb", "ft_steps", "ft_lr", "device")
        hp = {k: getattr(c, k) for k in names}
        data = {k: loader_fingerprint(getattr(L, k)) for k in ("train", "val", "test")}
        return dict(mode=mode, p=p, b=b, seed=s, data=data, dense_weights=self.dense[s]["digest"], **hp)

    def cached(self, name: str, key: dict, n_models: int, fn):
        """``fn() -> [(result dict, model)]``, cached as ``<cache>/<name>-<hash>.json`` + one ``.pt`` per model."""
        from ..results import param_hash, read_json, write_json
        from ..train import load_checkpoint, save_checkpoint

        if self.cache is None:
            return fn()
        h = param_hash(dict(key, version=_RUN_CACHE_VERSION))
        js, cks = self.cache / f"{name}-{h}.json", [self.cache / f"{name}-{h}-{k}.pt" for k in range(n_models)]
        if not (js.exists() and all(c.exists() for c in cks)):
            out = fn()
            for ck, (_, net) in zip(cks, out):
                save_checkpoint(ck, model=net.state_dict(), model_name=self.cfg.model)
            write_json(js, {"params": key, "result": [res for res, _ in out]})
        else:
            self.say(f"[cache] reused {js.name}")
        nets = []
        for ck in cks:
            net = self.new_model()
            net.load_state_dict(load_checkpoint(ck)["model"])
            nets.append(net)
        return list(zip(read_json(js)["result"], nets))

    def new_model(self) -> nn.Module:
        from ..models import create_model

        return create_model(self.cfg.model, **self.kwargs)

    def dense_net(self, s) -> nn.Module:
        net = self.new_model()
        net.load_state_dict(self.dense[s]["state"])
        return net.to(self.cfg.device)


def _evaluate(model, loader, device) -> float:
    from ..train import evaluate

    return evaluate(model, loader, device)["accuracy"]


def _dense_results(plan: _Plan, dense, cache_dir) -> list[Result]:
    """One dense model per seed: ``dense`` ({seed: model} or one model) or ``train.pretrain_dense`` (cached)."""
    import tempfile

    from ..train import pretrain_dense, state_digest

    c, out = plan.cfg, []
    with tempfile.TemporaryDirectory(prefix="sqjoint-dense-") as tmp:
        for s in c.seeds:
            L = plan.loaders[s]
            if dense is None:
                net, _ = pretrain_dense(
                    c.model,
                    plan.kwargs,
                    L,
                    epochs=c.epochs,
                    seed=s,
                    lr=c.pretrain_lr,
                    cache_dir=cache_dir if cache_dir is not None else tmp,
                    device=c.device,
                    **PRETRAIN,
                )
            else:
                net = _per_seed(dense, s, "dense").to(c.device)
            acc = _evaluate(net, L.test, c.device)
            state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
            plan.dense[s] = {"state": state, "accuracy": acc, "digest": state_digest(state)}
            row = dict(role="dense base of every compression run", dataset=plan.dataset, subset=plan.subset)
            metrics = dict(key=f"dense_seed{s}", model=c.model, kwargs=plan.kwargs, row=row)
            out.append(Result(METHOD, DENSE, s, net.eval(), acc, "test", metrics))
    return out


def _finish(plan: _Plan, net, state, hist, mode, p, b, s, t1, chain="") -> tuple[dict, nn.Module]:
    """Finetune (masks and bits fixed), final k-means quantization: the run's result dict and model."""
    import time

    c, L = plan.cfg, plan.loaders[s]
    S, _ = size_budget(net, p, b)
    acc_admm = _evaluate(quantized_copy(net, state.bits, mode), L.test, c.device)
    finetune(net, L.train, state.bits, c.ft_steps, mode=mode, lr=c.ft_lr, weight_decay=c.weight_decay)
    quantize_weights_(net, state.bits, mode)
    fp = [32] * len(state.bits) if mode == "prune" else None
    rep = layer_report(net, state.bits, mode)
    cr = {
        f"cr_{a.replace('-', '_')}": compression_rate(net, a, fp) for a in ("weights-only", "with-biases", "with-index")
    }
    target = round(target_compression(net, p, b), 2)
    run = {
        "mode": mode,
        "nnz_budget": p,
        "bit_budget": b,
        "seed": s,
        "S_bits": S,
        "chain": chain,
        "target_cr": target,
        "size_bits": sum(r["size_bits"] for r in rep),
        "measured_cr": cr["cr_weights_only"],
        **cr,
        "bits": state.bits,
        "accuracy_admm": acc_admm,
        "accuracy": _evaluate(net, L.test, c.device),
        "dense_accuracy": plan.dense[s]["accuracy"],
        "seconds": time.perf_counter() - t1,
    }
    meta = {
        "model": c.model,
        "kwargs": plan.kwargs,
        "dataset": plan.dataset,
        "mode": mode,
        "seed": s,
        "nnz_budget": p,
        "bit_budget": b,
        "S_bits": S,
        "target_cr": target,
        "measured_cr": run["measured_cr"],
        **cr,
        "accuracy": run["accuracy"],
        "accuracy_split": "test",
        "layers": rep,
        "progressive_chain": chain,
        "quantized": mode != "prune",
        "zero_in_codebook": mode != "quantize",
        "note": "state_dict holds the final weights: exact zeros = pruned, non-zeros = codebook "
        "values (fp32 for mode=prune); 'bits' per layer is the allocated index width; "
        "cr_weights_only is the paper's accounting, cr_with_biases adds the fp32 biases, "
        "cr_with_index also the sparse positions and codebooks (sqjoint_solvers.index_storage)",
    }
    history = [{k: v for k, v in h.items() if k not in ("bits", "nnz")} for h in hist]
    return {"run": run, "layers": rep, "meta": meta, "history": history}, net


def _compress(plan: _Plan, mode, p, b, s) -> list[tuple[dict, nn.Module]]:
    """One run from the dense model of seed ``s``: ADMM, then :func:`_finish`."""
    import time

    from ..train import reseed_loader, set_seed

    t1 = time.perf_counter()
    net = plan.dense_net(s)
    L = plan.loaders[s]
    set_seed(s)
    reseed_loader(L.train, s)  # each run's shuffling restarts at its seed: no run depends on which ran before
    state, hist = sqjoint_compress(net, L.train, size_budget(net, p, b)[0], b, mode=mode, **plan.admm_kw(s))
    return [_finish(plan, net, state, hist, mode, p, b, s, t1)]


def _chain(plan: _Plan, s) -> list[tuple[dict, nn.Module]]:
    """``progressive``: the joint budgets as one chain per seed; stage k starts from stage k-1's raw ADMM
    weights; each stage's reported model is a finetuned copy, the chain continues from the un-finetuned W."""
    import time

    from ..train import reseed_loader, set_seed

    L, outs, name = plan.loaders[s], [], " -> ".join(f"{p}:{b}" for p, b in plan.chain)
    started = time.perf_counter()

    def on_stage(k, net, state, hist):
        nonlocal started
        p, b = plan.chain[k]
        outs.append(_finish(plan, copy.deepcopy(net), state, hist, "joint", p, b, s, started, chain=name))
        started = time.perf_counter()
        net.train()

    net = plan.dense_net(s)
    set_seed(s)
    reseed_loader(L.train, s)
    budgets = [(size_budget(net, p, b)[0], b) for p, b in plan.chain]
    progressive_compress(net, L.train, budgets, mode="joint", on_stage=on_stage, **plan.admm_kw(s))
    return outs


def _result(plan: _Plan, tag: str, res: dict, net: nn.Module) -> Result:
    run, meta = res["run"], res["meta"]
    extra = {k: meta[k] for k in CR_KEYS}
    board = dict(
        method=METHOD,
        setting=f"{run['mode']} ×{meta['target_cr']:.0f}",
        seed=int(run["seed"]),
        input_size=plan.input_size,
        base_model=plan.cfg.model,
        dataset=plan.dataset,
        weight_bits=None if run["mode"] == "prune" else "infer",
        weights=True,
        extra=extra,
    )
    row = dict(mode=run["mode"], bits=run["bits"], target_cr=meta["target_cr"], **extra)
    metrics = dict(res, key=tag, model=plan.cfg.model, kwargs=meta["kwargs"], row=row)
    return Result(METHOD, board["setting"], int(run["seed"]), net.eval(), run["accuracy"], "test", metrics, board)


STAGE = "04_sparsity_quantization"
PAPER = "Yang et al., CVPR 2020"


def _tiny() -> Config:
    """A Config that runs in seconds on the tests' fake data (the registry-wide tests run it)."""
    return Config(
        n_seeds=1,
        epochs=1,
        joint_budgets=[[0.05, 4]],
        ablations=[["prune", 0.05, 4]],
        intervals=2,
        steps_per_interval=3,
        warmup_intervals=1,
        ft_steps=3,
        model_kwargs={"widths": [4, 8, 16]},
    )


@register_method(METHOD, config=Config, stage=STAGE, paper=PAPER, tiny=_tiny)
def run(config: Config, loaders, dense=None, *, cache_dir=None, progress: bool = True) -> list[Result]:
    """Stage 04's whole pipeline: dense model per seed -> every configuration of ``config.runs()`` per seed.

    ``loaders``: a ``data.Loaders`` (every seed) or ``{seed: Loaders}`` (what ``data.get_loaders(seed=s)``
    gives); ``dense``: ``None`` (``train.pretrain_dense`` per seed, :data:`PRETRAIN` recipe) or the dense
    models ({seed: model} or one for every seed). Per run (spec §3.8, §4): ADMM (SGD -> prox -> knapsack
    W-projection -> MCKP V-step -> dual update per interval), masked bit-fixed straight-through finetune,
    final k-means quantization; test accuracy of the quantized model. Runs and dense models are cached in
    ``cache_dir`` (None: nothing kept) under a hash of everything that determines them.

    Returns the dense Results (``setting`` :data:`DENSE`, no board row) then one Result per run and seed
    (``board``: its leaderboard row); ``metrics``: ``key`` (file stem), ``model``, ``kwargs``, ``row`` (its
    manifest fields) and for runs ``run`` / ``layers`` / ``history`` (the stage's tables) / ``meta``
    (``models/<key>.json``, read by stage 06). All errors in the config surface before any training."""
    cfg = config.validate()
    plan = _Plan(cfg, loaders, cache_dir, progress)
    plan.say(
        f"{cfg.model}: {plan.n_weights:,} compressed weights in {plan.n_layers} layers; seeds {cfg.seeds}; "
        f"{len(plan.runs)} configurations"
    )
    out = _dense_results(plan, dense, cache_dir)
    done = {}
    if cfg.progressive:
        for s in cfg.seeds:
            keys = [
                dict(plan.run_key("joint", p, b, s), chain=plan.chain[: k + 1]) for k, (p, b) in enumerate(plan.chain)
            ]
            got = plan.cached(f"chain_seed{s}", dict(stages=keys), len(plan.chain), lambda: _chain(plan, s))
            done.update({("joint", p, b, s): g for (p, b), g in zip(plan.chain, got)})
    for mode, p, b in plan.runs:
        for s in cfg.seeds:
            tag = plan.tag(mode, p, b, s)
            if (mode, p, b, s) in done:
                res, net = done[(mode, p, b, s)]
            else:
                ((res, net),) = plan.cached(tag, plan.run_key(mode, p, b, s), 1, lambda: _compress(plan, mode, p, b, s))
            out.append(_result(plan, tag, res, net))
            r = res["run"]
            plan.say(
                f"{mode:8s} target {r['target_cr']:7.1f}x  seed {s}: weights only {r['cr_weights_only']:7.1f}x, "
                f"with biases {r['cr_with_biases']:6.1f}x, with index {r['cr_with_index']:6.1f}x;  acc ADMM "
                f"{100 * r['accuracy_admm']:.2f}% -> finetuned {100 * r['accuracy']:.2f}%  bits {r['bits']}  "
                f"[{r['seconds']:.0f} s]" + (f"  chain {r['chain']}" if r.get("chain") else "")
            )
    return out


def save_model(out_dir, result: Result) -> Path:
    """``OUT_DIR/models/<key>.pt`` (``{"model": state_dict, "model_name"}``) of a run's Result; a compressed
    model also gets ``<key>.json`` (its ``meta``: per-layer bits and rates, read by stage 06). Returns the .pt."""
    from ..results import write_json
    from ..train import save_checkpoint as save

    m = result.metrics
    ck = Path(out_dir) / "models" / f"{m['key']}.pt"
    state = {k: v.detach().cpu().clone() for k, v in result.model.state_dict().items()}
    save(ck, model=state, model_name=m["model"])
    if "meta" in m:
        write_json(ck.with_suffix(".json"), m["meta"])
    return ck


# ------------------------------------------------------------------------------------ the stage's tables
def tables(res: list[Result]) -> tuple:
    """(runs, layers, history) DataFrames of a run's compressed Results (``runs.csv``, ``layers.csv``,
    ``history.csv``); layer and history rows carry mode, target_cr and seed."""
    import pandas as pd

    rows, layer_rows, hist_rows = [], [], []
    for r in res:
        if r.setting == DENSE:
            continue
        run = r.metrics["run"]
        tag = dict(mode=run["mode"], target_cr=run["target_cr"], seed=run["seed"])
        rows.append(run)
        layer_rows += [dict(x, **tag) for x in r.metrics["layers"]]
        hist_rows += [dict(h, **tag) for h in r.metrics["history"]]
    return pd.DataFrame(rows), pd.DataFrame(layer_rows), pd.DataFrame(hist_rows)


def summary_table(runs, dense_mean: float):
    """Mean over seeds per (mode, nnz_budget, bit_budget, target_cr): rates, accuracy (± sample std),
    ADMM-only accuracy, seconds, S_bits and ``drop_pts`` = 100 (dense mean - accuracy)."""
    summary = (
        runs.groupby(["mode", "nnz_budget", "bit_budget", "target_cr"], sort=False)
        .agg(
            measured_cr=("measured_cr", "mean"),
            cr_weights_only=("cr_weights_only", "mean"),
            cr_with_biases=("cr_with_biases", "mean"),
            cr_with_index=("cr_with_index", "mean"),
            accuracy=("accuracy", "mean"),
            accuracy_std=("accuracy", "std"),
            accuracy_admm=("accuracy_admm", "mean"),
            seconds=("seconds", "mean"),
            S_bits=("S_bits", "first"),
        )
        .reset_index()
    )
    summary["accuracy_std"] = summary["accuracy_std"].fillna(0.0)
    summary["drop_pts"] = 100 * (dense_mean - summary["accuracy"])
    return summary


def joint_vs_fixed(runs, config: Config) -> list[dict]:
    """The paper's central ablation per joint budget (empty unless ``fixed_bits``): learned vs fixed bits at
    the same size budget, paired by seed; ``diff_pts`` > 0 = learned bits more accurate."""
    from ..results import mean_std

    out, seeds = [], config.seeds
    for p, b in config.joint_budgets if config.fixed_bits else []:
        p, b = float(p), float(b)
        sel = {
            m: runs[(runs["mode"] == m) & (runs["nnz_budget"] == p) & (runs["bit_budget"] == b)]
            .set_index("seed")
            .loc[seeds]
            for m in ("joint", "fixed")
        }
        J, F = sel["joint"], sel["fixed"]
        (jm, js), (fm, fs) = mean_std(J["accuracy"]), mean_std(F["accuracy"])
        out.append(
            {
                "nnz_budget": p,
                "bit_budget": b,
                "target_cr": float(J["target_cr"].iloc[0]),
                "S_bits": float(J["S_bits"].iloc[0]),
                "fixed_bits": int(b),
                "seeds": seeds,
                "joint_accuracy": jm,
                "joint_accuracy_std": js,
                "fixed_accuracy": fm,
                "fixed_accuracy_std": fs,
                "diff_pts": 100 * (jm - fm),
                "joint_better_seeds": int((J["accuracy"] > F["accuracy"]).sum()),
                "fixed_better_seeds": int((J["accuracy"] < F["accuracy"]).sum()),
                "joint_cr_weights_only": float(J["cr_weights_only"].mean()),
                "fixed_cr_weights_only": float(F["cr_weights_only"].mean()),
                "joint_cr_with_index": float(J["cr_with_index"].mean()),
                "fixed_cr_with_index": float(F["cr_with_index"].mean()),
                "joint_bits": [list(x) for x in J["bits"]],
                "joint_progressive": bool(config.progressive),
            }
        )
    return out


def stage_metrics(summary, jf_rows: list[dict], dense_accuracy, seeds) -> dict:
    """Stage 04's ``metrics.json``: dense accuracy (mean, std), the accountings, one row per configuration
    (seed means), the joint-vs-fixed rows."""
    from ..results import mean_std

    dense_mean, dense_std = mean_std(dense_accuracy)
    return {
        "dense_accuracy": dense_mean,
        "dense_accuracy_std": dense_std,
        "cr_accounting": dict(CR_ACCOUNTING),
        "results": [
            {
                "mode": r["mode"],
                "nnz_budget": float(r["nnz_budget"]),
                "bit_budget": float(r["bit_budget"]),
                "target_cr": float(r["target_cr"]),
                "measured_cr": float(r["measured_cr"]),
                **{k: float(r[k]) for k in CR_KEYS},
                "accuracy": float(r["accuracy"]),
                "accuracy_std": float(r["accuracy_std"]),
                "seeds": list(seeds),
            }
            for r in summary.to_dict("records")
        ],
        "fixed_bits": jf_rows,
    }


def ablation_table(summary, n_weights: int):
    """Accuracy (%) per size budget S (rows, bits) and mode (columns) with ``target_cr`` = 32 N / S."""
    abl = summary.pivot_table(index="S_bits", columns="mode", values="accuracy").mul(100).round(2)
    abl.insert(0, "target_cr", (32 * n_weights / abl.index).round(1))
    return abl.sort_values("target_cr")


def summary_lines(summary, abl, dense_mean: float) -> list[str]:
    """One line per joint budget (the three accountings, accuracy vs dense) and per size budget of ``abl``
    where joint meets another mode."""
    import pandas as pd

    out = []
    for r in summary[summary["mode"] == "joint"].sort_values("target_cr").to_dict("records"):
        out.append(
            f"joint {r['target_cr']:7.1f}x target -> {r['cr_weights_only']:7.1f}x weights only (paper), "
            f"{r['cr_with_biases']:.1f}x with biases, {r['cr_with_index']:.1f}x with index + codebooks: "
            f"{100 * r['accuracy']:.2f} ± {100 * r['accuracy_std']:.2f} % vs dense {100 * dense_mean:.2f} % "
            f"(drop {r['drop_pts']:.2f} pts)"
        )
    for S, r in abl.iterrows():
        others = {m: r[m] for m in MODES if m in r and m != "joint" and pd.notna(r[m])}
        if "joint" in r and pd.notna(r["joint"]) and others:
            out.append(
                f"S = {S:.0f} bits ({r['target_cr']}x): joint {r['joint']:.2f} % vs "
                + ", ".join(f"{m} {v:.2f} %" for m, v in others.items())
            )
    return out


def verdicts(metrics: dict) -> list[str]:
    """The closing lines of stage 04 from its ``metrics``: learned vs fixed bits per budget (and overall),
    and each joint budget's rate in the three accountings."""
    jf, out = metrics["fixed_bits"], []
    for r in jf:
        d = r["diff_pts"]
        verdict = (
            f"learned bits better by {d:.2f} pts" if d > 0 else f"fixed bits better by {-d:.2f} pts" if d < 0 else "tie"
        )
        n = len(r["seeds"])
        out.append(
            f"{r['target_cr']:7.1f}x: learned bits {100 * r['joint_accuracy']:.2f} ± {100 * r['joint_accuracy_std']:.2f} % "
            f"vs fixed {r['fixed_bits']} bits {100 * r['fixed_accuracy']:.2f} ± {100 * r['fixed_accuracy_std']:.2f} % "
            f"-> {verdict}; learned better on {r['joint_better_seeds']}/{n} seeds, fixed better on "
            f"{r['fixed_better_seeds']}/{n}"
        )
    if jf:
        wins, seeds = sum(r["diff_pts"] > 0 for r in jf), len(jf[0]["seeds"])
        claim = (
            "the paper's claim that learned bits help holds at every budget here."
            if wins == len(jf)
            else "the paper's claim that learned bits help is NOT reproduced here."
            if wins == 0
            else "the paper's claim holds only at some budgets here."
        )
        out.append(
            f"Learned bit allocation beats fixed bits (mean over {seeds} seeds) at {wins} of {len(jf)} budgets "
            f"on this proxy: {claim}"
        )
    for r in metrics["results"]:
        if r["mode"] == "joint":
            out.append(
                f"joint {r['target_cr']:.0f}x: {r['cr_weights_only']:.0f}x in the paper's accounting is "
                f"{r['cr_with_biases']:.0f}x with the fp32 biases and {r['cr_with_index']:.0f}x with positions "
                "and codebooks"
            )
    return out
