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
the ADMM loop, the straight-through finetune and the progressive chain.
"""

from __future__ import annotations

import copy
import itertools
import math

import torch
import torch.nn as nn

from ..checks import check_number
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


def _batches(loader):
    while True:
        yield from loader


def _sgd_step(model, opt, xb, yb, lr, weight_decay) -> float:
    """CE loss, hand-added weight decay on every ``*weight`` parameter (as the repo does), one step."""
    for g in opt.param_groups:
        g["lr"] = lr
    opt.zero_grad(set_to_none=True)
    loss = nn.functional.cross_entropy(model(xb), yb)
    loss.backward()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("weight") and p.grad is not None:
                p.grad.add_(p, alpha=weight_decay)
    opt.step()
    return loss.item()


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


def _peek(loader):
    """(first batch, endless batch iterator that still yields that batch first)."""
    it = _batches(loader)
    first = next(it)
    return first, itertools.chain([first], it)


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
    Returns (ADMMState, history); W ends exactly sparse with (bits, nnz) feasible for S.
    """
    check_number("steps_per_interval", steps_per_interval, 1, integer=True)
    check_number("S (size budget in bits)", S, 0, lo_open=True)
    if mode != "prune":
        check_number("bit_budget (mean bits per kept weight)", bit_budget, 1, 8)
    check_hparams(lr, momentum, weight_decay, intervals, warmup_intervals, rho=rho if mode != "prune" else None)
    ws = [m.weight for _, m in compressible_layers(model)]
    b0 = initial_bits(mode, S, sum(w.numel() for w in ws), bit_budget)
    state = ADMMState(ws, S, b0, rho, mode, bit_range)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    total, warm = intervals * steps_per_interval, int(round(warmup_intervals * steps_per_interval))
    (x0, _), it = _peek(train_loader)
    history, losses = [], []
    bar = range(total)
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(bar, desc=f"sqjoint {mode}", leave=False)
    model.train()
    with _FastLayout(model, x0.to(ws[0].device)):
        for t in bar:
            xb, yb = (a.to(ws[0].device) for a in next(it))
            lr_t = _lr_at(t, total, warm, lr)
            losses.append(_sgd_step(model, opt, xb, yb, lr_t, weight_decay))
            state.prox_(lr_t)
            if t == 0 or (t + 1) % steps_per_interval == 0:
                state.project_()
                state.outer_step()
            if (t + 1) % steps_per_interval == 0:
                row = {
                    "interval": (t + 1) // steps_per_interval,
                    "step": t + 1,
                    "lr": lr_t,
                    "loss": sum(losses) / len(losses),
                    "residual": state.residual(),
                    "size_bits": state.allocated_size(),
                    "bits": list(state.bits),
                    "nnz": list(state.nnz),
                }
                losses = []
                if eval_fn is not None:
                    row["float_accuracy"] = eval_fn(model)
                    row["quant_accuracy"] = eval_fn(quantized_copy(model, state.bits, mode))
                    model.train()
                history.append(row)
    return state, history


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
    ``refresh`` steps with 5 warm-started Lloyd iterations. prune-only: masked fp32 training.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if check_number("steps (finetune SGD steps)", steps, 0, integer=True) == 0:
        return
    check_hparams(lr, momentum, weight_decay, steps)
    ws = [m.weight for _, m in compressible_layers(model)]
    if len(bits) != len(ws):
        raise ValueError(f"need one bitwidth per layer: {len(bits)} bits for {len(ws)} layers")
    quant, anchor = mode != "prune", mode != "quantize"
    masks = [w != 0 for w in ws] if anchor else [None] * len(ws)  # pruned entries stay exactly 0
    books = [zero_kmeans_1d(w, b, 100, zero_anchor=anchor) if quant else None for w, b in zip(ws, bits)]
    refresh = refresh or max(1, steps // 20)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    (x0, _), it = _peek(train_loader)
    bar = range(steps)
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(bar, desc=f"finetune {mode}", leave=False)
    model.train()
    with _FastLayout(model, x0.to(ws[0].device)):
        for t in bar:
            if quant and t > 0 and t % refresh == 0:
                books = [
                    zero_kmeans_1d(w, b, 5, zero_anchor=anchor, init=cb[cb != 0] if anchor else cb)
                    for w, b, cb in zip(ws, bits, books)
                ]
            latent = None
            if quant:  # quantize only the kept entries (q(0) = 0 for the zero-anchored codebook)
                with torch.no_grad():
                    latent = [w[m] if m is not None else w.detach().clone() for w, m in zip(ws, masks)]
                    for w, m, lat, cb in zip(ws, masks, latent, books):
                        if m is None:
                            w.copy_(kmeans_quantize(lat, cb, anchor))
                        else:
                            w[m] = kmeans_quantize(lat, cb, anchor)
            xb, yb = (a.to(ws[0].device) for a in next(it))
            for g in opt.param_groups:
                g["lr"] = _lr_at(t, steps, 0, lr)
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(xb), yb).backward()
            with torch.no_grad():
                for w, m, lat in zip(ws, masks, latent or []):
                    if m is None:
                        w.copy_(lat)
                    else:
                        w[m] = lat
                for name, p in model.named_parameters():
                    if name.endswith("weight") and p.grad is not None:
                        p.grad.add_(p, alpha=weight_decay)
            opt.step()
            with torch.no_grad():
                for w, m in zip(ws, masks):
                    if m is not None:
                        w.masked_fill_(~m, 0.0)


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
