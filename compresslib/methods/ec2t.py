"""EC2T: Entropy-Constrained Trained Ternarization (Marban, Becking et al., CVPR-W 2020) + ECP + TTQ.

Every quantized layer l keeps a full-precision *shadow* weight W_fp (the parametrization's
``original``), two trainable centroid magnitudes w_p, w_n > 0 and an assignment
A in {0: -w_n, 1: 0, 2: +w_p}; the forward pass uses W_t = w_p·[A=2] − w_n·[A=0].

* assignment cost (spec §3.3):  A = argmin_c (w − c)² + λ·I_c,   I_c = −log2 P_c,
  P_c from the nearest-neighbour assignment with the zero-cluster floor P_0 ≥ 0.5,
  λ = γ·δ(l)·λ_max(l),  δ(l) = (#W_l / max #W + ς)/(1 + ς),
  λ_max = min over ± of (m² − (m − w)²)/(I_± − I_0)  (m = the layer's most extreme weight);
* gradients (TTQ-style STE, thesis eq. 4.17/4.18): ∂W_fp = g·(w_p[A=2] + w_n[A=0] + [A=1]),
  ∂w_p = Σ_{A=2} g,  ∂w_n = −Σ_{A=0} g  (the repo/TTQ use +Σ: ``centroid_grad_sign="ttq"``);
* after every optimizer step: centroid floor w_p, w_n ≥ 0.675·std(W_fp), then re-assignment;
* ECP (entropy-constrained pruning): same cost, forward W = [A≠1]·W_fp (survivors stay FP);
* TTQ baseline (Zhu et al. 2017): A by the symmetric threshold |w| > t·max|W_fp|, w_p = w_n = max|W_fp| at init.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn
from torch.nn.utils import parametrize

from compresslib.checks import check_number
from compresslib.train import Callback, check_device, evaluate, fit

from .contract import EPOCHS, EPOCHS0, LR, MethodConfig, NONNEGATIVE, POSITIVE, Result, SEED, ints, register_method

NEG, ZERO, POS = 0, 1, 2
METHODS = ("ec2t", "ecp", "ttq")


# ----------------------------------------------------------------------------- assignment math
def centroid_distances(w: torch.Tensor, w_p, w_n) -> torch.Tensor:
    """d_c(w) = (w − c)² for c = (−w_n, 0, +w_p), stacked on a new leading axis."""
    return torch.stack([(w + w_n) ** 2, w**2, (w - w_p) ** 2])


def argmin3(cost) -> torch.Tensor:
    """``cost.argmin(0)`` for a leading axis of 3 (first index wins ties), without the slow strided reduction
    (and without ``torch.where`` on Python scalars, ~4x slower on CPU): ZERO + [POS wins] − [NEG wins]."""
    c0, c1, c2 = cost
    neg = (c0 <= c1) & (c0 <= c2)
    pos = (c2 < c1) & ~neg
    return pos.long() - neg.long() + ZERO


def nearest_assignment(w: torch.Tensor, w_p, w_n) -> torch.Tensor:
    """Distance-only (λ = 0) assignment: zero iff w ∈ (−w_n/2, w_p/2)."""
    return argmin3(centroid_distances(w, w_p, w_n))


def cluster_probabilities(assignment: torch.Tensor, pmf_renorm: str = "fixed") -> torch.Tensor:
    """P = (P_n, P_0, P_p) = counts / #W (a missing cluster counts 1), then the floor P_0 ≥ 0.5.

    ``pmf_renorm="fixed"`` shrinks P_n, P_p proportionally (sums to 1); ``"repo"`` reproduces the
    original code, which rescales P_p with the already-updated P_n: (0.4,0.2,0.4) → (0.25,0.5,0.2154).
    """
    if pmf_renorm not in ("fixed", "repo"):
        raise ValueError(f"pmf_renorm must be 'fixed' or 'repo', got {pmf_renorm!r}")
    counts = torch.bincount(assignment.flatten(), minlength=3).double()
    counts[counts == 0] = 1.0
    P = counts / assignment.numel()
    if P[1] < 0.5:
        deficit = 0.5 - P[1]
        if pmf_renorm == "repo":
            P[0] = P[0] - P[0] / (P[0] + P[2]) * deficit
            P[2] = P[2] - P[2] / (P[0] + P[2]) * deficit
        else:
            s = P[0] + P[2]
            P[0], P[2] = P[0] - P[0] / s * deficit, P[2] - P[2] / s * deficit
        P[1] = 0.5
    return P


def lambda_max(w: torch.Tensor, w_p, w_n, info: torch.Tensor) -> float:
    """λ_max = min(λ_n, λ_p), λ_± = (m_±² − (m_± − w_±)²)/(I_± − I_0): the λ at which the most extreme
    weight's cost of zero equals that of its own centroid (spec §3.3 step 4); clamped at 0."""
    m_n, m_p = float(w.min().abs()), float(w.max().abs())
    w_p, w_n = float(w_p), float(w_n)
    lam_n = (m_n**2 - (m_n - w_n) ** 2) / float(info[0] - info[1])
    lam_p = (m_p**2 - (m_p - w_p) ** 2) / float(info[2] - info[1])
    return max(0.0, min(lam_n, lam_p))


def layer_decay(sizes, sustain: float = 0.05) -> list[float]:
    """δ(l) = (#W_l / max_l #W_l + ς) / (1 + ς): the largest layer gets 1, tiny layers ≈ ς/(1+ς)."""
    sizes = [int(s) for s in sizes]
    if not sizes or min(sizes) < 1:
        raise ValueError(f"layer sizes must be positive, got {sizes}")
    if sustain < 0:
        raise ValueError(f"sustain must be >= 0, got {sustain}")
    top = max(sizes)
    return [(s / top + sustain) / (1 + sustain) for s in sizes]


def ec_assignment(
    w: torch.Tensor, w_p, w_n, gamma: float, delta: float = 1.0, pmf_renorm: str = "fixed"
) -> tuple[torch.Tensor, float]:
    """A = argmin_c (w − c)² + λ·I_c with λ = γ·δ·λ_max (spec §3.3 steps 1-7); returns (A, λ)."""
    if not 0 <= gamma < float("inf"):  # NaN / inf too
        raise ValueError(f"gamma must be >= 0 and finite, got {gamma}")
    dist = centroid_distances(w, w_p, w_n)
    info = -torch.log2(cluster_probabilities(argmin3(dist), pmf_renorm)).to(w.dtype)
    lam = gamma * delta * lambda_max(w, w_p, w_n, info)
    cost = dist + lam * info.view(3, *([1] * w.dim()))
    return argmin3(cost), lam


def ttq_assignment(w: torch.Tensor, t: float) -> torch.Tensor:
    """TTQ: +w_p if w > Δ, −w_n if w < −Δ, 0 otherwise, with Δ = t·max|w|."""
    if not 0 <= t < 1:
        raise ValueError(f"TTQ threshold t must be in [0, 1), got {t}")
    thr = t * w.abs().max()
    return (w > thr).long() - (w < -thr).long() + ZERO


# ----------------------------------------------------------------------------- fake quantizer
class _Ternarize(torch.autograd.Function):
    """Forward W_t (ternary, or [A≠1]·W_fp when pruning); backward = the TTQ/EC2T gradient rules."""

    @staticmethod
    def forward(ctx, w_fp, w_p, w_n, assignment, prune: bool, wn_sign: float):
        a = (assignment == POS).to(w_fp.dtype)
        b = (assignment == NEG).to(w_fp.dtype)
        ctx.save_for_backward(a, b, w_p, w_n)
        ctx.wn_sign = wn_sign
        return (a + b) * w_fp if prune else w_p * a - w_n * b

    @staticmethod
    def backward(ctx, g):
        a, b, w_p, w_n = ctx.saved_tensors
        z = 1.0 - a - b
        grad_fp = g * (w_p * a + w_n * b + z)
        return grad_fp, (g * a).sum(), ctx.wn_sign * (g * b).sum(), None, None, None


class TernaryWeight(nn.Module):
    """Parametrization W_fp → W_t with trainable w_p, w_n and an assignment buffer (the fake-quantizer)."""

    def __init__(
        self, w_fp: torch.Tensor, w_p: float, w_n: float, prune: bool = False, centroid_grad_sign: str = "exact"
    ):
        super().__init__()
        if centroid_grad_sign not in ("exact", "ttq"):
            raise ValueError(f"centroid_grad_sign must be 'exact' or 'ttq', got {centroid_grad_sign!r}")
        self.w_p = nn.Parameter(torch.tensor(float(w_p), dtype=w_fp.dtype, device=w_fp.device))
        self.w_n = nn.Parameter(torch.tensor(float(w_n), dtype=w_fp.dtype, device=w_fp.device))
        self.register_buffer("assignment", nearest_assignment(w_fp.detach(), w_p, w_n))
        self.prune = prune
        self.wn_sign = -1.0 if centroid_grad_sign == "exact" else 1.0

    def forward(self, w_fp):
        return _Ternarize.apply(w_fp, self.w_p, self.w_n, self.assignment, self.prune, self.wn_sign)


# ----------------------------------------------------------------------------- model wrapper
class EC2T:
    """Attach EC2T/ECP/TTQ quantizers to every Conv2d/Linear whose module name contains ``pattern``.

    ``gamma`` = the global gain γ of λ (EC2T/ECP); ``t`` = the TTQ threshold; ``init_scale`` = s
    (w_p = s·max W, w_n = s·|min W| at init, EC2T/ECP only).
    """

    def __init__(
        self,
        model: nn.Module,
        method: str = "ec2t",
        gamma: float = 0.2,
        t: float = 0.05,
        init_scale: float = 0.45,
        pattern: str = ".conv",
        sustain: float = 0.05,
        centroid_floor: float = 0.675,
        centroid_grad_sign: str = "exact",
        pmf_renorm: str = "fixed",
    ):
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if not 0 <= gamma < float("inf"):  # NaN / inf too
            raise ValueError(f"gamma must be >= 0 and finite, got {gamma}")
        if not 0 <= t < 1:
            raise ValueError(f"TTQ threshold t must be in [0, 1), got {t}")
        if not 0 < init_scale <= 1:
            raise ValueError(f"init_scale s must be in (0, 1], got {init_scale}")
        if not 0 <= centroid_floor < float("inf"):
            raise ValueError(f"centroid_floor must be >= 0 and finite, got {centroid_floor}")
        cluster_probabilities(torch.zeros(1, dtype=torch.long), pmf_renorm)  # validates the flag
        self.model, self.method, self.gamma, self.t = model, method, float(gamma), float(t)
        self.pmf_renorm, self.centroid_floor = pmf_renorm, centroid_floor
        self.layers = {
            n: m
            for n, m in model.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear)) and pattern in n and not parametrize.is_parametrized(m)
        }
        if not self.layers:
            raise ValueError(
                f"model {type(model).__name__} has no quantizable layer "
                f"(no Conv2d/Linear whose name contains {pattern!r})"
            )
        self.delta = dict(zip(self.layers, layer_decay([m.weight.numel() for m in self.layers.values()], sustain)))
        self.lambdas = {n: 0.0 for n in self.layers}
        for n, m in self.layers.items():
            w = m.weight.detach()
            if method == "ttq":
                w_p = w_n = float(w.abs().max())
            else:
                w_p, w_n = init_scale * float(w.max().abs()), init_scale * float(w.min().abs())
            q = TernaryWeight(w, w_p, w_n, prune=method == "ecp", centroid_grad_sign=centroid_grad_sign)
            parametrize.register_parametrization(m, "weight", q)
            if method == "ttq":
                q.assignment.copy_(ttq_assignment(w, self.t))
        self.frozen = False
        self._seg_cache, self._sizes = None, None

    # -- parameter groups
    def quantizer(self, name: str) -> TernaryWeight:
        return self.layers[name].parametrizations.weight[0]

    def shadow_params(self) -> list[nn.Parameter]:
        return [m.parametrizations.weight.original for m in self.layers.values()]

    def centroid_params(self) -> list[nn.Parameter]:
        return [p for n in self.layers for p in (self.quantizer(n).w_p, self.quantizer(n).w_n)]

    def other_params(self) -> list[nn.Parameter]:
        special = {id(p) for p in self.shadow_params() + self.centroid_params()}
        return [p for p in self.model.parameters() if id(p) not in special]

    def optimizer(self, lr: float = 1e-3, lr2: float = 1e-4, weight_decay: float = 5e-6):
        """Adam with three groups: FP params (wd), shadow weights (no wd; omitted when frozen), centroids (lr2)."""
        groups = [{"params": self.other_params(), "lr": lr, "weight_decay": weight_decay}]
        if not self.frozen:
            groups.append({"params": self.shadow_params(), "lr": lr, "weight_decay": 0.0})
        groups.append({"params": self.centroid_params(), "lr": lr2, "weight_decay": 0.0})
        return torch.optim.Adam(groups)

    def freeze(self) -> None:
        """Frozen-assignment retraining (§3.6): shadow weights and A fixed, centroids still trained."""
        self.frozen = True
        for p in self.shadow_params():
            p.requires_grad_(False)

    # -- the per-step update
    @torch.no_grad()
    def update(self) -> None:
        """Centroid floor w_± ≥ 0.675·std(W_fp), then (unless frozen) re-assign every layer (§3.5).

        All layers in one pass: the elementwise formulas of ``ec_assignment`` / ``ttq_assignment`` on the
        concatenated shadow weights, per-layer statistics (counts, min/max, λ) gathered through a
        segment index — the same numbers as the per-layer functions (tests/test_ec2t.py checks equality)
        with a fixed number of tensor ops instead of ~40 per layer (the per-step cost on deep nets)."""
        qs = [self.quantizer(n) for n in self.layers]
        ws = [m.parametrizations.weight.original for m in self.layers.values()]
        std = torch.stack([w.std() for w in ws]).double()
        floor = (std * self.centroid_floor).to(ws[0].dtype)  # = clamp_(min=c·float(std)) per layer
        wp = torch.maximum(torch.stack([q.w_p for q in qs]), floor)
        wn = torch.maximum(torch.stack([q.w_n for q in qs]), floor)
        for q, p_, n_ in zip(qs, wp, wn):
            q.w_p.copy_(p_)
            q.w_n.copy_(n_)
        if self.frozen:
            return
        w = torch.cat([x.reshape(-1) for x in ws])
        seg, sizes = self._segments(w.device)
        L = len(ws)
        if self.method == "ttq":
            thr = (self.t * _seg_reduce(w.abs(), seg, L, "amax")).index_select(0, seg)
            a = (w > thr).long() - (w < -thr).long() + ZERO
        else:
            wp_e, wn_e = wp.index_select(0, seg), wn.index_select(0, seg)
            d = ((w + wn_e) ** 2, w**2, (w - wp_e) ** 2)
            counts = torch.bincount(seg * 3 + argmin3(d), minlength=3 * L).view(L, 3).double()
            counts[counts == 0] = 1.0
            P = counts / sizes.view(L, 1)
            p0, p1, p2 = P.unbind(1)
            low = p1 < 0.5
            deficit = torch.where(low, 0.5 - p1, torch.zeros_like(p1))
            if self.pmf_renorm == "repo":
                p0 = p0 - p0 / (p0 + p2) * deficit
                p2 = p2 - p2 / (p0 + p2) * deficit
            else:
                s = p0 + p2
                p0, p2 = p0 - p0 / s * deficit, p2 - p2 / s * deficit
            p1 = torch.where(low, torch.full_like(p1, 0.5), p1)
            info = -torch.log2(torch.stack([p0, p1, p2], 1)).to(w.dtype)  # (L, 3): I_n, I_0, I_p
            m_n = _seg_reduce(w, seg, L, "amin").abs().double()
            m_p = _seg_reduce(w, seg, L, "amax").abs().double()
            wpd, wnd = wp.double(), wn.double()
            lam_n = (m_n**2 - (m_n - wnd) ** 2) / (info[:, 0] - info[:, 1]).double()
            lam_p = (m_p**2 - (m_p - wpd) ** 2) / (info[:, 2] - info[:, 1]).double()
            lam = self.gamma * self._delta_vec(w.device) * torch.minimum(lam_n, lam_p).clamp(min=0.0)
            li = (lam.to(w.dtype).view(L, 1) * info).t().contiguous()  # (3, L): λ·I_c per layer
            li = [li[c].index_select(0, seg) for c in range(3)]  # ... per weight
            a = argmin3((d[0] + li[0], d[1] + li[1], d[2] + li[2]))
            self.lambdas.update(zip(self.layers, lam.tolist()))
        for q, part in zip(qs, torch.split(a, self._sizes)):
            q.assignment.copy_(part.view_as(q.assignment))

    def _segments(self, device):
        """(layer index of every concatenated weight, layer sizes as float64), cached per device."""
        if getattr(self, "_seg_cache", None) is None or self._seg_cache[0].device != torch.device(device):
            self._sizes = [m.weight.numel() for m in self.layers.values()]
            seg = torch.repeat_interleave(
                torch.arange(len(self._sizes), device=device), torch.tensor(self._sizes, device=device)
            )
            self._seg_cache = (seg, torch.tensor(self._sizes, dtype=torch.float64, device=device))
        return self._seg_cache

    def _delta_vec(self, device):
        return torch.tensor([self.delta[n] for n in self.layers], dtype=torch.float64, device=device)

    # -- statistics
    @torch.no_grad()
    def sparsity(self) -> float:
        """Fraction of zero weights over all quantized layers."""
        zeros = sum(int((self.quantizer(n).assignment == ZERO).sum()) for n in self.layers)
        return zeros / sum(m.weight.numel() for m in self.layers.values())

    @torch.no_grad()
    def layer_table(self) -> pd.DataFrame:
        rows = []
        for n, m in self.layers.items():
            q = self.quantizer(n)
            cnt = torch.bincount(q.assignment.flatten(), minlength=3).tolist()
            rows.append(
                {
                    "layer": n,
                    "weights": m.weight.numel(),
                    "sparsity": cnt[ZERO] / sum(cnt),
                    "n_neg": cnt[NEG],
                    "n_zero": cnt[ZERO],
                    "n_pos": cnt[POS],
                    "w_p": float(q.w_p),
                    "w_n": float(q.w_n),
                    "delta": self.delta[n],
                    "lambda": self.lambdas[n],
                }
            )
        return pd.DataFrame(rows)

    def finalize(self) -> nn.Module:
        """Remove the quantizers, leaving plain weight tensors that hold the ternary (or pruned) values."""
        for m in self.layers.values():
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
        return self.model


def _seg_reduce(x: torch.Tensor, seg: torch.Tensor, n: int, how: str) -> torch.Tensor:
    """Per-segment max ("amax") or min ("amin") of a flat tensor (exact: no arithmetic)."""
    init = float("-inf") if how == "amax" else float("inf")
    return torch.full((n,), init, dtype=x.dtype, device=x.device).scatter_reduce_(0, seg, x, how)


class EC2TCallback(Callback):
    """Calls ``EC2T.update`` after each optimizer step; with a ``val_loader`` it evaluates once per
    epoch (the only validation pass: ``train_ec2t`` gives ``fit`` no val split), records
    ``val_accuracy`` in ``val_history`` and keeps the best-validation state of the run."""

    def __init__(self, ec2t: EC2T, val_loader=None, device="cpu"):
        self.ec2t, self.val_loader, self.device = ec2t, val_loader, device
        self.best_acc, self.best_state, self.val_history = -1.0, None, []

    def after_step(self, s) -> None:
        self.ec2t.update()

    def on_epoch_end(self, s) -> None:
        if self.val_loader is None:
            return
        acc = evaluate(s.model, self.val_loader, s.device)["accuracy"]
        self.val_history.append(acc)
        if acc > self.best_acc:
            self.best_acc = acc
            self.best_state = copy.deepcopy(s.model.state_dict())


def train_ec2t(
    fp_model: nn.Module,
    loaders,
    epochs: int = 20,
    retrain_epochs: int = 10,
    lr: float = 1e-3,
    lr2: float = 1e-4,
    weight_decay: float = 5e-6,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
    **quantizer,
) -> dict:
    """Quantize a copy of ``fp_model``: ``epochs`` with re-assignment (best-val state kept), then
    ``retrain_epochs`` with frozen assignment (§3.6), both with :meth:`EC2T.optimizer` (``lr``, ``lr2``,
    ``weight_decay``). ``quantizer``: :class:`EC2T`'s knobs (``method``, ``gamma``, ``t``, ``init_scale``,
    ``pattern``, ...; its defaults where not given). Returns the finalized model and its numbers."""
    check_number("epochs", epochs, 1, integer=True)
    check_number("retrain_epochs", retrain_epochs, 0, integer=True)
    for k, v in (("lr", lr), ("lr2", lr2)):
        check_number(k, v, 0, lo_open=True)
    check_number("weight_decay", weight_decay, 0)
    check_device(device)
    model = copy.deepcopy(fp_model).to(device)
    q = EC2T(model, **quantizer)
    val, test = getattr(loaders, "val", None), getattr(loaders, "test", None)
    cb = EC2TCallback(q, val, device)  # fit evaluates nothing; val once per epoch in the callback
    main = fit(
        model,
        loaders,
        epochs,
        q.optimizer(lr, lr2, weight_decay),
        callbacks=[cb],
        device=device,
        seed=seed,
        progress=progress,
        evaluate="none",
    )
    if cb.best_state is not None:
        model.load_state_dict(cb.best_state)
    history = [dict(h, phase="assign", val_accuracy=v) for h, v in zip(main["history"], cb.val_history)]
    if retrain_epochs:
        q.freeze()
        frozen = fit(
            model,
            loaders,
            retrain_epochs,
            q.optimizer(lr, lr2, weight_decay),  # last state kept
            callbacks=[EC2TCallback(q)],
            device=device,
            seed=seed + 1,
            progress=progress,
            evaluate="none",
        )
        history += [dict(h, phase="frozen") for h in frozen["history"]]
    table = q.layer_table()
    sparsity = q.sparsity()
    q.finalize()
    res = {
        "model": model,
        "layer_table": table,
        "sparsity": sparsity,
        "history": history,
        "layers": list(q.layers),
        "method": q.method,
        "gamma_or_t": q.t if q.method == "ttq" else q.gamma,
    }
    if val is not None:
        res["val_accuracy"] = evaluate(model, val, device)["accuracy"]
    if test is not None:
        res["test_accuracy"] = evaluate(model, test, device)["accuracy"]
    return res


def rebuild_model(meta: dict) -> nn.Module:
    """The network of a stage-05 ``models/*.json`` record: ``create_model(meta["model"], **meta["config"])``
    (records written before MODEL existed have no "model" key: they are MicroNets)."""
    from compresslib.models import create_model

    cfg = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["config"].items()}
    return create_model(meta.get("model", "micronet"), **cfg)


# ----------------------------------------------------------------------------- the method contract (stage 05)
@dataclass
class Config(MethodConfig):
    """Stage 05: compound scaling ((d, w) ``grid`` at φ = 1, then ``phis``) of ``model``, then EC2T over
    ``gammas`` and TTQ over ``ts`` from the chosen FP model, once per seed. ``seeds[0]`` trains the FP
    models and its quantized models are the ones kept (board, stage 06)."""

    seeds: list = dataclasses.field(default_factory=lambda: [0, 1, 2])
    model: str = "micronet"
    image_size: int = 14
    epochs: int = 8  # FP epochs of each φ-sweep model
    grid: list = dataclasses.field(
        default_factory=lambda: [[1, 1], [1.9, 1], [1.7, 1.1], [1.6, 1.1], [1.4, 1.2], [1.2, 1.3], [1, 1.4]]
    )
    grid_epochs: int = 3
    phis: list = dataclasses.field(default_factory=lambda: [1, 1.5, 2])
    fp_lr: float = 0.05
    gammas: list = dataclasses.field(default_factory=lambda: [0, 0.15, 0.3, 0.5])
    ts: list = dataclasses.field(default_factory=lambda: [0.2, 0.4])
    init_scale: float = 0.45
    q_epochs: int = 6
    retrain_epochs: int = 2
    q_lr: float = 1e-3
    q_lr2: float = 1e-4
    centroid_grad_sign: str = "exact"
    pmf_renorm: str = "fixed"
    device: str = "cpu"

    # fmt: off
    RANGES = {
        "seeds": SEED, "image_size": ints(4, 1024), "epochs": EPOCHS, "grid_epochs": EPOCHS, "phis": POSITIVE,
        "fp_lr": LR, "gammas": NONNEGATIVE,  # γ < 0 would reward non-zero weights
        "ts": dict(lo=0, hi=1, hi_open=True), "init_scale": dict(lo=0, hi=1, lo_open=True),
        "q_epochs": EPOCHS, "retrain_epochs": EPOCHS0, "q_lr": LR, "q_lr2": LR,
    }
    # fmt: on

    def check(self) -> None:
        from ..models import create_model, list_models, model_meta

        if not self.seeds or not self.phis or not self.gammas:
            raise ValueError(f"seeds, phis and gammas need >= 1 entry, got {self.seeds}, {self.phis}, {self.gammas}")
        if not self.grid or any(not isinstance(p, (list, tuple)) or len(p) != 2 or min(p) < 1 for p in self.grid):
            raise ValueError(f"grid must be a list of [d, w] pairs with d, w >= 1, got {self.grid!r}")
        if self.centroid_grad_sign not in ("exact", "ttq") or self.pmf_renorm not in ("fixed", "repo"):
            raise ValueError(
                f"centroid_grad_sign must be 'exact' or 'ttq' and pmf_renorm 'fixed' or 'repo', got "
                f"{self.centroid_grad_sign!r}, {self.pmf_renorm!r}"
            )
        compound = bool(model_meta(self.model).get("compound"))  # unknown name -> ValueError listing the models
        if not compound and ([list(map(float, p)) for p in self.grid] != [[1.0, 1.0]] or list(self.phis) != [1]):
            raise ValueError(
                f"MODEL {self.model!r} cannot be compound-scaled (its constructor has no d/w/phi; compound-"
                f"scalable: {[n for n in list_models() if model_meta(n).get('compound')]}); "
                f"set GRID [[1, 1]] and PHIS [1] to train and ternarize it unscaled (got GRID {self.grid!r}, "
                f"PHIS {self.phis!r})"
            )
        check_device(self.device)
        EC2T(create_model(self.model))  # a model without ternarizable (".conv") layers fails here, before training


def board_fields(method: str, value, seed: int, input_size, model: str, dataset: str) -> dict:
    """The leaderboard row of a stage-05 model: "EC2T" (fp, ec2t) or "TTQ (EC2T baseline)", checkpoint loaded."""
    setting = "full precision" if method == "fp" else f"{method} {'t' if method == 'ttq' else 'gamma'}={value:g}"
    return dict(
        method="EC2T" if method != "ttq" else "TTQ (EC2T baseline)",
        setting=setting,
        seed=int(seed),
        input_size=list(input_size),
        base_model=model,
        dataset=dataset,
        weights=True,
    )


class _FPTrainer:
    """Stage 05's FP models: ``model`` at (d, w, φ), SGD-Nesterov + cosine, ``train.cached_fit`` (keyed by the fit
    fingerprint, so grid pairs that round to the same network are one run, trained once)."""

    def __init__(self, cfg: Config, loaders, cache_dir, progress: bool):
        from ..models import model_meta

        self.cfg, self.loaders, self.cache, self.progress = cfg, loaders, cache_dir, progress
        self.compound = bool(model_meta(cfg.model).get("compound"))
        self.first_pair = {}  # fit fingerprint -> the first (d, w, phi) that trained it

    def build(self, d, w, phi):
        """``model`` at multipliers (d, w, φ) (unscaled when not compound-scalable), seeded; + its kwargs."""
        from ..models import create_model
        from ..train import set_seed

        kw = dict(num_classes=self.loaders.num_classes, in_channels=self.loaders.in_channels)
        if self.compound:
            kw.update(d=d, w=w, phi=phi)
        set_seed(self.cfg.seeds[0])
        m = create_model(self.cfg.model, **kw)
        return m, getattr(m, "config", kw)

    def __call__(self, d, w, phi, epochs, tag):
        from ..train import cached_fit

        m, _ = self.build(d, w, phi)
        opt = torch.optim.SGD(m.parameters(), lr=self.cfg.fp_lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
        r = cached_fit(
            m,
            self.loaders,
            epochs,
            opt,
            scheduler=sched,
            device=self.cfg.device,
            seed=self.cfg.seeds[0],
            progress=self.progress,
            cache_dir=self.cache,
            name=f"{tag}-{self.cfg.model}",
        )  # fit reseeds the data order
        same = self.first_pair.setdefault(r["fingerprint"], (d, w, phi))
        row = {
            "d": d,
            "w": w,
            "phi": phi,
            "blocks": getattr(m, "blocks_per_stage", None),
            "widths": "/".join(map(str, getattr(m, "widths", []))),
            "params": sum(p.numel() for p in m.parameters()),
            "val_accuracy": r["val_accuracy"],
            "test_accuracy": r["test_accuracy"],
            "s_per_epoch": r["seconds_per_epoch"],
            "same_network_as": "" if same == (d, w, phi) else f"d={same[0]:g} w={same[1]:g} phi={same[2]:g}",
        }
        return m.to(self.cfg.device), row


def _quantize(cfg: Config, fp_model, loaders, method, value, seed, ckpt, fp_config) -> dict:
    """One EC2T/TTQ run from the FP model; the first seed's ternary model is saved to ``ckpt``."""
    from ..train import save_checkpoint

    t0 = time.perf_counter()
    r = train_ec2t(
        fp_model,
        loaders,
        method=method,
        gamma=value if method != "ttq" else 0.0,
        t=value if method == "ttq" else 0.05,
        init_scale=cfg.init_scale,
        epochs=cfg.q_epochs,
        retrain_epochs=cfg.retrain_epochs,
        lr=cfg.q_lr,
        lr2=cfg.q_lr2,
        seed=seed,
        device=cfg.device,
        progress=False,
        centroid_grad_sign=cfg.centroid_grad_sign,
        pmf_renorm=cfg.pmf_renorm,
    )
    if seed == cfg.seeds[0]:
        save_checkpoint(ckpt, model=r["model"].state_dict(), config=fp_config)
    return {
        "method": method,
        "gamma_or_t": value,
        "seed": seed,
        "sparsity": r["sparsity"],
        "accuracy": r["test_accuracy"],
        "val_accuracy": r["val_accuracy"],
        "seconds": time.perf_counter() - t0,
        "ternary_layers": r["layers"],
        "layers": r["layer_table"][["layer", "weights", "sparsity", "w_p", "w_n", "delta"]].to_dict("records"),
    }


STAGE = "05_ec2t"
PAPER = "Marban, Becking et al.: Learning sparse & ternary neural networks with EC2T (CVPR-W 2020)"


def _tiny() -> Config:
    """A Config that runs in seconds on the tests' fake data (the registry-wide tests run it)."""
    return Config(
        seeds=[0],
        model="micronet",
        image_size=8,
        epochs=1,
        grid=[[1, 1]],
        phis=[1],
        gammas=[0.5],
        ts=[],
        q_epochs=1,
        retrain_epochs=0,
    )


@register_method("ec2t", config=Config, stage=STAGE, paper=PAPER, tiny=_tiny)
def run(
    config: Config, loaders, dense=None, *, cache_dir=None, models_dir=None, progress: bool = False
) -> list[Result]:
    """Stage 05 end to end. ``loaders``: one ``data.Loaders`` or {seed: Loaders}; ``dense``: unused (the FP model
    is chosen here by compound scaling; pass None).

    Results: "fp" (the chosen FP model of ``seeds[0]``; ``metrics``: ``grid`` and ``phi_sweep`` rows, ``chosen``
    (d, w, φ), ``params``, ``config``), then one per (method, value, seed) with ``metrics`` = the ``runs.csv``
    row (+ ``layers``, ``ternary_layers``). The FP model and the first seed's ternary models are saved to
    ``models_dir`` (default ``cache_dir/models``) as ``fp.pt`` / ``<method>_<value>_seed<k>.pt`` + a ``.json``
    record (read by stage 06), with ``metrics["manifest"]`` = their ``results.record_model`` arguments and a
    board row. Quantization runs are cached in ``cache_dir/runs_cache.json`` by every setting."""
    import tempfile
    from pathlib import Path

    from ..results import param_hash, with_cache, write_json
    from ..train import load_checkpoint, load_weights, save_checkpoint, state_digest

    if dense is not None:
        raise ValueError("ec2t.run trains and chooses its own FP model: pass dense=None")
    config.validate()
    cache = Path(cache_dir or tempfile.mkdtemp(prefix="ec2t-"))
    models_dir = Path(models_dir or cache / "models")
    models_dir.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in config.seeds]
    by_seed = {s: loaders[s] if isinstance(loaders, dict) else loaders for s in seeds}
    L0 = by_seed[seeds[0]]
    dataset = (L0.fingerprint or {}).get("dataset", "unknown")
    input_size = (L0.in_channels, config.image_size, config.image_size)
    fp_train = _FPTrainer(config, L0, cache, progress)
    grid = [tuple(float(v) for v in p) for p in config.grid]
    if len(grid) > 1:
        grid_rows = [fp_train(d, w, 1.0, config.grid_epochs, "grid")[1] for d, w in grid]
        grid_df = pd.DataFrame(grid_rows).assign(d_w2=lambda t: t.d * t.w**2)
        best = grid_df.sort_values(["val_accuracy", "params"], ascending=[False, True]).iloc[0]
    else:  # one pair (a paper's chosen grid point, or an unscaled model): nothing to rank, nothing trained
        grid_df = pd.DataFrame([{"d": grid[0][0], "w": grid[0][1], "phi": 1.0, "d_w2": grid[0][0] * grid[0][1] ** 2}])
        best = grid_df.iloc[0]
    d_best, w_best = float(best.d), float(best.w)
    phi_runs = {float(phi): fp_train(d_best, w_best, float(phi), config.epochs, "phi") for phi in config.phis}
    phi_df = pd.DataFrame([r for _, r in phi_runs.values()])
    phi_best = float(phi_df.sort_values(["val_accuracy", "phi"], ascending=[False, False]).iloc[0].phi)
    fp_model, fp_row = phi_runs[phi_best]
    fp_model.eval()
    fp_config = fp_train.build(d_best, w_best, phi_best)[1]  # create_model(model, **fp_config) rebuilds it
    fp_accuracy = fp_row["test_accuracy"]  # fit's test pass of this very model (no second evaluation)

    def export(tag, state, acc, **record):
        """``models_dir/<tag>.pt`` + ``.json`` (stage 06) and the manifest arguments of one kept model."""
        save_checkpoint(models_dir / f"{tag}.pt", **state)
        write_json(
            models_dir / f"{tag}.json",
            {**record, "model": config.model, "config": fp_config, "input_size": list(input_size), "accuracy": acc},
        )
        extra = {k: record[k] for k in ("method", "gamma_or_t", "sparsity") if k in record and tag != "fp"}
        return dict(key=tag, model=config.model, kwargs=fp_config, checkpoint=models_dir / f"{tag}.pt", **extra)

    manifest = export(
        "fp",
        dict(model=fp_model.state_dict(), config=fp_config),
        fp_accuracy,
        method="fp",
        gamma_or_t=None,
        seed=seeds[0],
        sparsity=0.0,
        ternary_layers=[],
    )
    manifest["method"] = "fp"
    fp_metrics = dict(
        grid=grid_df.to_dict("records"),
        phi_sweep=phi_df.to_dict("records"),
        chosen={"d": d_best, "w": w_best, "phi": phi_best},
        params=int(fp_row["params"]),
        config=fp_config,
        manifest=manifest,
    )
    board = board_fields("fp", None, seeds[0], input_size, config.model, dataset)
    out = [Result("fp", "full precision", seeds[0], fp_model, fp_accuracy, "test", fp_metrics, board)]
    fp_hash = state_digest(fp_model.state_dict())  # the FP weights every run starts from
    flags = dict(centroid_grad_sign=config.centroid_grad_sign, pmf_renorm=config.pmf_renorm)
    for method, value in [("ec2t", float(g)) for g in config.gammas] + [("ttq", float(t)) for t in config.ts]:
        for seed in seeds:
            key = {
                "method": method,
                "value": value,
                "seed": seed,
                "fp": fp_hash,
                "s": config.init_scale,
                "q": config.q_epochs,
                "re": config.retrain_epochs,
                "lr": config.q_lr,
                "lr2": config.q_lr2,
                "img": config.image_size,
                "subset": (by_seed[seed].fingerprint or {}).get("subset") or 0,
                "data": param_hash(by_seed[seed].fingerprint),
                **flags,
            }
            ck = cache / f"{method}_{value:g}_seed{seed}-{param_hash(key)}.pt"
            r = with_cache(
                cache / "runs_cache.json",
                key,
                lambda: _quantize(config, fp_model, by_seed[seed], method, value, seed, ck, fp_config),
                force=seed == seeds[0] and not ck.exists(),
            )
            metrics = {k: v for k, v in r.items()}
            net, board = None, None
            if seed == seeds[0]:  # the kept ternary model of this configuration (board, stage 06)
                tag = f"{method}_{value:g}_seed{seed}"
                state = load_checkpoint(ck)
                metrics["manifest"] = export(
                    tag,
                    state,
                    r["accuracy"],
                    method=method,
                    gamma_or_t=value,
                    seed=seed,
                    sparsity=r["sparsity"],
                    ternary_layers=r["ternary_layers"],
                )
                with torch.random.fork_rng(devices=[]):  # the caller's random stream is untouched
                    net = rebuild_model({"model": config.model, "config": fp_config})
                net = load_weights(net, state, source=ck).eval()
                board = board_fields(method, value, seed, input_size, config.model, dataset)
            setting = board_fields(method, value, seed, input_size, config.model, dataset)["setting"]
            out.append(Result(method, setting, seed, net, float(r["accuracy"]), "test", metrics, board))
    return out
