"""ECC: energy-constrained channel pruning by ADMM on a bilinear energy model (spec §3).

    min_{W,s} ℓ(W)  s.t.  ϕ_j(W) <= s_j (all j),  Ê(s) <= B
    ℒ = ℓ(W) + Σ_j y_j(ϕ_j − s_j) + ρ_y/2 Σ_j [ϕ_j − s_j]_+² + z(Ê(s) − B) + ρ_z/2 [Ê(s) − B]_+²

One iteration per mini-batch (§3.3): Adam step on W, exact group-sparse prox with Adam's second
moment, projected/masked/clipped gradient step on the continuous widths s, dual ascent on z and y;
stop on the first batch whose *real* channel counts meet the budget. ℓ = logit-MSE distillation +
CE (§3.5). Energies are relative to the dense estimate (Ê(S) = 1), so B is a fraction.
Chain nets: Conv2d/Linear in order with optional BatchNorm; a depthwise conv joins the next layer's
channel groups (MobileNet blocks: group g = {W_dw[g], W_pw[:, g]}); no residual connections.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from ..checks import check_number
from ..energy import bilinear
from ..train import Callback
from .contract import EPOCHS, EPOCHS0, FRACTION, LR, MethodConfig, POSITIVE, Result, SEED, ints, register_method
from .teacher_cache import cached_teacher


# ----------------------------------------------------------------------------- channel groups
@dataclass
class ChainLayer:
    name: str
    module: nn.Module
    group_size: int  # weight columns per input channel (FC after conv: H*W of the feature map)
    n_groups: int  # S_j = dense input channels
    bn_before: list  # names of BatchNorm layers between the previous weight layer and this one
    dw_name: str | None = None  # depthwise conv feeding this layer (MobileNet block): its filter g
    dw: nn.Module | None = None  # belongs to group g together with this layer's input column g

    def scores(self, D=None, D_dw=None) -> torch.Tensor:
        """a_g of the whole group: this layer's column g (+ the depthwise filter g)."""
        a = group_scores(self.module.weight, self.group_size, D)
        if self.dw is not None:
            w2 = self.dw.weight.detach() ** 2
            a = a + (w2 if D_dw is None else D_dw * w2).sum(dim=(1, 2, 3))
        return a

    @torch.no_grad()
    def zero_(self, dead: torch.Tensor) -> None:
        zero_groups_(self.module.weight.data, dead, self.group_size)
        if self.dw is not None:
            self.dw.weight.data[dead] = 0.0


def chain_layers(model: nn.Module) -> list[ChainLayer]:
    """The weight layers of a chain net in order, with their input-channel groups (spec §3.1).

    A depthwise conv (groups = channels) joins the next layer's groups: group g = {W_dw[g], W[:, g]}.
    """
    layers, pending_bn, prev_out, dw = [], [], None, None
    for name, m in model.named_modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            pending_bn.append(name)
        elif isinstance(m, nn.Conv2d):
            if prev_out is not None and m.in_channels != prev_out:
                raise ValueError(f"{name}: {m.in_channels} inputs but the previous layer has {prev_out} outputs")
            if m.groups != 1:
                if m.groups == m.in_channels == m.out_channels and dw is None and layers:
                    dw = (name, m)
                    continue
                raise ValueError(
                    f"ECC here supports chain nets; {name} is a grouped conv that is not one "
                    f"depthwise conv between two plain layers"
                )
            layers.append(ChainLayer(name, m, 1, m.in_channels, pending_bn, *(dw or (None, None))))
            pending_bn, prev_out, dw = [], m.out_channels, None
        elif isinstance(m, nn.Linear):
            c = m.in_features if prev_out is None else prev_out
            if m.in_features % c:
                raise ValueError(f"{name}: {m.in_features} inputs are not a multiple of {c} channels")
            layers.append(ChainLayer(name, m, m.in_features // c, c, pending_bn, *(dw or (None, None))))
            pending_bn, prev_out, dw = [], m.out_features, None
    if len(layers) < 2 or dw is not None:
        raise ValueError("ECC needs a chain net of >= 2 Conv2d/Linear layers (a depthwise conv must feed one)")
    return layers


def group_scores(weight: torch.Tensor, group_size: int, D: torch.Tensor | None = None) -> torch.Tensor:
    """a_g = Σ_{i∈g} D_i W_i² for every input-channel group g (D = 1 gives squared group norms)."""
    w2 = weight.detach() ** 2 if D is None else D * weight.detach() ** 2
    if w2.dim() == 4:
        return w2.sum(dim=(0, 2, 3))
    return w2.reshape(w2.shape[0], -1, group_size).sum(dim=(0, 2))


@torch.no_grad()
def zero_groups_(weight: torch.Tensor, dead: torch.Tensor, group_size: int) -> None:
    if weight.dim() == 4:
        weight[:, dead] = 0.0
    else:
        weight.view(weight.shape[0], -1, group_size)[:, dead] = 0.0


def widths_of(model: nn.Module, layers: list[ChainLayer] | None = None) -> list[int]:
    """ϕ(W): (image channels, live input-channel groups of layers 1..L-1, classes)."""
    layers = layers or chain_layers(model)
    phi = [layers[0].n_groups]
    for lay in layers[1:]:
        phi.append(int((lay.scores() > 0).sum()))
    return phi + [layers[-1].module.weight.shape[0]]


# ----------------------------------------------------------------------------- the three steps
def group_prox(a: torch.Tensor, s_j: float, y_j: float, rho_y: float, alpha: float):
    """Exact prox of y_j ϕ_j + ρ_y/2 [ϕ_j − s_j]_+² under the metric D (spec §3.3 (a)).

    Keeping the r-th largest group saves a_r/(2α) and costs y_j + ρ_y/2 Δ_r with
    Δ_r = [r − s_j]_+² − [r − s_j − 1]_+²; y_j is first capped so that ⌊s_j⌋ groups survive.
    Returns (keep mask, capped y_j).
    """
    order = torch.argsort(a, descending=True)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(1, a.numel() + 1, device=a.device)
    r = rank.to(a.dtype)
    delta = (r - s_j).clamp(min=0) ** 2 - (r - s_j - 1).clamp(min=0) ** 2
    v = (a - rho_y * alpha * delta) / (2 * alpha)
    k = int(math.floor(s_j))
    if y_j > 0 and k >= 1:
        y_j = min(y_j, float(torch.topk(v, min(k, v.numel())).values[-1]))
    return v >= y_j, y_j


def s_step(s, s_real, y, z, B, energy, rho_z, rho_y, pslr, clip, mask=True, s_lb=None, repo_square_of_sum=False):
    """Projected, masked, clipped gradient step on the widths s (spec §3.3 (b)); returns (s, z).

    energy(s) -> (Ê(s), ∂Ê/∂s) in budget units. ``repo_square_of_sum`` uses the released code's
    ρ_y/2 (Σ_j [ϕ_j − s_j]_+)² instead of ρ_y/2 Σ_j [ϕ_j − s_j]_+².
    """
    s, s_real, y = (torch.as_tensor(t, dtype=torch.float64) for t in (s, s_real, y))
    L = s.numel() - 1
    E, g2 = energy(s)
    over = (s_real - s).clamp(min=0)
    pen = over.sum() * (over > 0).to(s.dtype) if repo_square_of_sum else over
    g1 = rho_z * max(E - B, 0.0) * g2 - rho_y * pen - y
    s_lb = torch.ones_like(s) if s_lb is None else torch.as_tensor(s_lb, dtype=torch.float64)
    free = s > s_lb
    free[0] = free[L] = False  # image channels and classes are fixed
    ratios = [(max(-float(g1[j]), 0.0) + 1e-3) / float(g2[j]) for j in range(L + 1) if free[j] and g2[j] > 0]
    if ratios:
        z = max(z, min(ratios))  # z-floor: at least one free width decreases
    g = g1 + z * g2
    if mask:
        g = g.clamp(min=0)  # s may only shrink
    g = torch.where(free, g, torch.zeros_like(g))
    norm = float(g.norm())
    if clip is not None and norm > clip:
        g = g * (clip / norm)
    return (s - pslr * g).clamp(min=1.0), z


@dataclass
class ECCConfig:
    """Knobs of admm_prox_train.py (spec §3.4); defaults = the small-scale plan of §6.2."""

    rho_z: float = 10.0
    rho_y: float = 10.0
    pslr: float = 1.0
    psgrad_clip: float | None = 1.0
    psgrad_mask: bool = True
    s_int: int = 1
    slb: float | None = None
    zinit: float = 0.0
    yinit: float = 0.0
    repo_square_of_sum: bool = False

    def __post_init__(self):
        self.validate()  # ECCConfig(rho_z=nan) fails here, naming the field and its range

    def validate(self):
        """Clear errors (parameter + accepted range) for NaN, infinite or out-of-range knobs."""
        for k in ("rho_z", "rho_y", "pslr"):
            check_number(f"ECCConfig.{k}", getattr(self, k), 0)
        check_number("ECCConfig.psgrad_clip", self.psgrad_clip, 0, lo_open=True, none_ok=True)
        check_number("ECCConfig.s_int", self.s_int, 1, integer=True)
        check_number(
            "ECCConfig.slb (fraction of the dense widths)", self.slb, 0, 1, lo_open=True, hi_open=True, none_ok=True
        )
        for k in ("zinit", "yinit"):
            check_number(f"ECCConfig.{k}", getattr(self, k))
        return self


def check_run_args(max_epochs=1, plr=1e-3) -> None:
    """Ranges of ``run_ecc``'s ADMM phase (``run_uniform``'s equal training: ``plr`` = its ``train_lr``)."""
    check_number("max_epochs", max_epochs, 1, integer=True)
    check_number("plr (ADMM learning rate)", plr, 0, lo_open=True)


@dataclass
class Training:
    """What ECC and the uniform baseline train alike: every phase minimises ℓ = (1 − distill)·CE +
    distill·MSE(logits, dense logits) (spec §3.5), seeded by ``seed``, on ``device`` (W, the teacher and the
    batches; the ADMM variables s, z, y stay on the CPU); the pruned net ends with a masked fine-tune of
    ``finetune_epochs`` epochs, Adam at ``finetune_lr`` (our addition, not in the ECC code)."""

    distill: float = 0.5
    finetune_epochs: int = 15
    finetune_lr: float = 5e-4
    seed: int = 0
    device: str = "cpu"
    progress: bool = False

    def __post_init__(self):
        self.validate()  # Training(distill=5) fails here, naming the field and its range

    def validate(self):
        """Clear errors (parameter + accepted range) before any work."""
        from ..train import check_device

        check_number("distill (weight of the logit-MSE distillation term)", self.distill, 0, 1)
        check_number("finetune_epochs", self.finetune_epochs, 0, integer=True)
        check_number("finetune_lr", self.finetune_lr, 0, lo_open=True)
        check_device(self.device)
        return self

    def teacher(self, dense: nn.Module, loaders, distilled: bool = True):
        """Frozen copy of ``dense`` on the device; when distilling, its training-set logits are cached once."""
        return _frozen(dense, loaders, self.distill if distilled else 0.0, self.device)

    def fit(self, model, loaders, teacher, epochs: int, lr: float, callbacks: list) -> dict:
        """``train.fit``: ``epochs`` of Adam at ``lr`` on ℓ with this distillation, seed and device."""
        from ..train import fit

        return fit(
            model,
            loaders,
            epochs,
            torch.optim.Adam(model.parameters(), lr=lr),
            callbacks=callbacks,
            teacher=teacher,
            kd_weight=self.distill,
            kd_kind="mse",
            seed=self.seed,
            progress=self.progress,
            device=self.device,
        )

    def finetune(self, model, loaders, teacher, epochs: int | None = None, lr: float | None = None) -> float:
        """Masked training (zeroed groups stay zero), by default the fine-tune; returns the test accuracy."""
        from ..prune import MaskCallback
        from ..train import evaluate

        epochs = self.finetune_epochs if epochs is None else epochs
        if epochs > 0:
            masks = group_masks(model)
            self.fit(model, loaders, teacher, epochs, self.finetune_lr if lr is None else lr, [MaskCallback(masks)])
        return evaluate(model, loaders.test, self.device)["accuracy"]


def relative_budget(estimator, budget: float, absolute: bool = False) -> float:
    """Budget as a fraction of Ê(dense); checks 0 < B < 1 and B above Ê(all hidden widths = 1)."""
    S = estimator.S
    dense = float(bilinear.predict(estimator, S))
    floor = float(bilinear.predict(estimator, [S[0]] + [1] * (len(S) - 2) + [S[-1]])) / dense
    if absolute:
        check_number("absolute budget (estimator units)", budget, 0, lo_open=True)
        budget = budget / dense
    elif not 0 < budget < 1:
        raise ValueError(f"budget is a fraction of the dense energy and must lie in (0, 1), got {budget}")
    if budget <= floor:
        raise ValueError(
            f"budget {budget:.4f} of dense is at or below the structural floor {floor:.4f} "
            f"(all hidden widths = 1): infeasible"
        )
    return float(budget)


def _adam_metric(optimizer, w, eps):
    """D = sqrt(v) + eps from Adam's second moment (no bias correction); None (D = 1) otherwise."""
    st = optimizer.state.get(w, {})
    return st["exp_avg_sq"].sqrt().add_(eps) if "exp_avg_sq" in st else None


class ECCCallback(Callback):
    """Runs steps (a)-(c) of spec §3.3 after every optimizer step; sets ``s.stop`` at the budget."""

    def __init__(self, model, estimator, budget: float, cfg: ECCConfig = ECCConfig(), absolute=False):
        cfg.validate()
        self.layers = chain_layers(model)
        self.S = widths_of_dense(self.layers)
        if list(estimator.S) != self.S:
            raise ValueError(f"estimator is for dense widths {estimator.S}, the model has {self.S}")
        self.est, self.cfg = estimator, cfg
        self.B = relative_budget(estimator, budget, absolute)
        self.dense = float(bilinear.predict(estimator, self.S))
        self.s = torch.tensor(self.S, dtype=torch.float64)
        self.z = float(cfg.zinit)
        self.y = torch.full((len(self.S),), float(cfg.yinit), dtype=torch.float64)
        self.s_lb = (torch.tensor(self.S, dtype=torch.float64) * cfg.slb).clamp(min=1.0) if cfg.slb else None
        self.iterations, self.history, self.done = 0, [], False

    def energy(self, s):
        """(Ê(s)/Ê(S), ∂/∂s of it) for one width vector (closed form for the bilinear kind)."""
        if self.est.kind != "bilinear":
            return (float(bilinear.predict(self.est, s)) / self.dense, bilinear.gradient(self.est, s)[0] / self.dense)
        if not hasattr(self, "_a"):
            self._Sv = torch.tensor(self.S, dtype=torch.float64)
            self._a = torch.tensor(self.est.coef, dtype=torch.float64) * (self.est.scale / self.dense)
            self._b = self.est.bias * self.est.scale / self.dense
        x = torch.as_tensor(s, dtype=torch.float64) / self._Sv
        g = torch.zeros_like(x)
        g[1:-1] = (self._a[:-1] * x[:-2] + self._a[1:] * x[2:]) / self._Sv[1:-1]
        return self._b + float(self._a @ (x[:-1] * x[1:])), g

    @torch.no_grad()
    def prox_(self, optimizer) -> None:
        alpha = optimizer.param_groups[0]["lr"]
        for j, lay in enumerate(self.layers):
            if j == 0:
                continue  # image channels are never pruned
            eps = optimizer.param_groups[0].get("eps", 1e-8)
            D, D_dw = (_adam_metric(optimizer, m.weight, eps) if m is not None else None for m in (lay.module, lay.dw))
            keep, y_j = group_prox(
                lay.scores(D, D_dw).double(), float(self.s[j]), float(self.y[j]), self.cfg.rho_y, alpha
            )
            self.y[j] = y_j
            if not bool(keep.all()):
                lay.zero_(~keep)

    def after_step(self, st) -> None:
        if self.done:
            return
        c = self.cfg
        self.prox_(st.optimizer)
        s_real = torch.tensor(widths_of(st.model, self.layers), dtype=torch.float64)
        E_cur = self.energy(s_real)[0]
        for _ in range(c.s_int):
            self.s, self.z = s_step(
                self.s,
                s_real,
                self.y,
                self.z,
                self.B,
                self.energy,
                c.rho_z,
                c.rho_y,
                c.pslr,
                c.psgrad_clip,
                c.psgrad_mask,
                self.s_lb,
                c.repo_square_of_sum,
            )
        E_s = self.energy(self.s)[0]
        self.z = max(0.0, self.z + c.rho_z * (E_s - self.B))
        self.y = (self.y + c.rho_y * (s_real - torch.floor(self.s))).clamp(min=0)
        self.y[0] = self.y[-1] = 0.0
        self.iterations += 1
        self.history.append(
            {"iteration": self.iterations, "E_real": E_cur, "E_s": E_s, "z": self.z, "widths": s_real.int().tolist()}
        )
        if E_cur <= self.B:
            self.done = st.stop = True

    def state_dict(self):
        return {"s": self.s, "z": self.z, "y": self.y, "iterations": self.iterations, "done": self.done}

    def load_state_dict(self, d):
        self.s, self.z, self.y = d["s"], float(d["z"]), d["y"]
        self.iterations, self.done = int(d["iterations"]), bool(d["done"])


def widths_of_dense(layers: list[ChainLayer]) -> list[int]:
    return [lay.n_groups for lay in layers] + [layers[-1].module.weight.shape[0]]


# ----------------------------------------------------------------------------- masks, baseline, export
def group_masks(model: nn.Module, layers: list[ChainLayer] | None = None) -> dict:
    """{layer name: 0/1 weight mask} keeping the live input-channel groups (for masked fine-tuning)."""
    masks = {}
    for lay in layers or chain_layers(model):
        w = lay.module.weight
        alive = (lay.scores() > 0).to(w.dtype)
        if w.dim() == 4:
            masks[lay.name] = alive.view(1, -1, 1, 1).expand_as(w).clone()
        else:
            masks[lay.name] = alive.view(1, -1, 1).expand(w.shape[0], -1, lay.group_size).reshape(w.shape).clone()
        if lay.dw is not None:
            masks[lay.dw_name] = alive.view(-1, 1, 1, 1).expand_as(lay.dw.weight).clone()
    return masks


@torch.no_grad()
def prune_to_widths_(model: nn.Module, widths) -> dict:
    """Keep the s_j input-channel groups of largest L2 norm in every layer j >= 1; return the masks."""
    layers = chain_layers(model)
    if len(widths) != len(layers) + 1:
        raise ValueError(f"need {len(layers) + 1} widths, got {len(widths)}")
    for j, lay in enumerate(layers[1:], start=1):
        a = lay.scores()
        k = int(widths[j])
        if not 1 <= k <= lay.n_groups:
            raise ValueError(f"width {k} for {lay.name} outside 1..{lay.n_groups}")
        dead = torch.ones_like(a, dtype=torch.bool)
        dead[torch.topk(a, k).indices] = False
        lay.zero_(dead)
    return group_masks(model, layers)


def uniform_widths(estimator, budget: float, absolute: bool = False, grid: int = 4000) -> list[int]:
    """Largest uniform width multiplier r with Ê(max(1, round(r·S_j))) <= B (hidden widths only)."""
    B = relative_budget(estimator, budget, absolute)
    S = list(estimator.S)
    dense = float(bilinear.predict(estimator, S))
    for i in range(grid, 0, -1):
        r = i / grid
        w = [S[0]] + [max(1, int(round(r * S[j]))) for j in range(1, len(S) - 1)] + [S[-1]]
        if float(bilinear.predict(estimator, w)) / dense <= B:
            return w
    return [S[0]] + [1] * (len(S) - 2) + [S[-1]]


def _set_module(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    (root.get_submodule(parent) if parent else root)._modules[leaf] = new


@torch.no_grad()
def slim(model: nn.Module, example_input: torch.Tensor | None = None, atol: float = 1e-4) -> nn.Module:
    """Physically smaller dense copy: drop dead input groups of layer j and the matching outputs of j−1.

    Dead groups contribute exactly zero to layer j, so the logits are unchanged (up to float
    summation order). With ``example_input`` this is checked (eval mode), and a net that is not a
    chain (e.g. residual additions) raises instead of returning a wrong export.
    """
    m = copy.deepcopy(model)
    layers = chain_layers(m)
    keep = [torch.arange(layers[0].n_groups)]
    for lay in layers[1:]:
        a = lay.scores()
        idx = torch.nonzero(a > 0).flatten()
        keep.append(idx if idx.numel() else a.argmax().view(1))
    keep.append(torch.arange(layers[-1].module.weight.shape[0]))
    for j, lay in enumerate(layers):
        old, kin, kout = lay.module, keep[j], keep[j + 1]
        w = old.weight.data[kout]
        if isinstance(old, nn.Conv2d):
            new = nn.Conv2d(
                len(kin),
                len(kout),
                old.kernel_size,
                old.stride,
                old.padding,
                old.dilation,
                bias=old.bias is not None,
                padding_mode=old.padding_mode,
            )
            new.weight.data.copy_(w[:, kin])
        else:
            G = lay.group_size
            new = nn.Linear(len(kin) * G, len(kout), bias=old.bias is not None)
            new.weight.data.copy_(w.view(len(kout), -1, G)[:, kin].reshape(len(kout), -1))
        if old.bias is not None:
            new.bias.data.copy_(old.bias.data[kout])
        _set_module(m, lay.name, new.to(old.weight.device))
        if lay.dw is not None:
            dw = lay.dw
            nd = nn.Conv2d(
                len(kin),
                len(kin),
                dw.kernel_size,
                dw.stride,
                dw.padding,
                dw.dilation,
                groups=len(kin),
                bias=dw.bias is not None,
                padding_mode=dw.padding_mode,
            )
            nd.weight.data.copy_(dw.weight.data[kin])
            if dw.bias is not None:
                nd.bias.data.copy_(dw.bias.data[kin])
            _set_module(m, lay.dw_name, nd.to(dw.weight.device))
        for bn_name in lay.bn_before:
            bn = m.get_submodule(bn_name)
            nb = type(bn)(
                len(kin), eps=bn.eps, momentum=bn.momentum, affine=bn.affine, track_running_stats=bn.track_running_stats
            )
            for attr in ("weight", "bias", "running_mean", "running_var"):
                if getattr(bn, attr, None) is not None:
                    getattr(nb, attr).data.copy_(getattr(bn, attr).data[kin])
            _set_module(m, bn_name, nb.to(old.weight.device))
    if isinstance(getattr(m, "widths", None), (tuple, list)) and len(m.widths) == len(layers) - 1:
        m.widths = type(m.widths)(len(k) for k in keep[1:-1])
    if example_input is not None:
        was = model.training
        model.eval(), m.eval()
        try:
            diff = float((model(example_input) - m(example_input)).abs().max())
        except RuntimeError:  # shapes no longer line up (residual additions, concatenations)
            diff = float("inf")
        model.train(was), m.train(was)
        if not diff <= atol:
            raise ValueError(
                f"slimmed logits differ from the masked model's by {diff:.3g}: "
                f"{type(model).__name__} is not a chain net ECC can export"
            )
    return m


# ----------------------------------------------------------------------------- end-to-end runs
def _frozen(teacher, loaders=None, distill: float = 0.0, device="cpu"):
    """Frozen copy of the dense net on ``device``; with distillation, its training-set logits are cached once."""
    teacher = copy.deepcopy(teacher).eval().to(device)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return cached_teacher(teacher, loaders.train) if loaders is not None and distill > 0 else teacher


def run_ecc(
    dense: nn.Module,
    loaders,
    estimator,
    budget: float,
    cfg: ECCConfig = ECCConfig(),
    max_epochs: int = 100,
    plr: float = 1e-3,
    absolute: bool = False,
    training: Training = Training(),
) -> dict:
    """ECC from a dense pretrained net: ADMM (Adam at ``plr``, at most ``max_epochs``) until Ê(ϕ(W)) <= B,
    then the masked fine-tune; distillation, seed, device and fine-tune are ``training``'s.

    Returns {model, widths, estimated_energy (fraction of dense), reached, iterations, epochs,
    accuracy_before_ft, accuracy, history}.
    """
    from ..train import evaluate, set_seed

    check_run_args(max_epochs, plr)
    cfg.validate()
    training.validate()
    device = training.device
    model = copy.deepcopy(dense).to(device)
    cb = ECCCallback(model, estimator, budget, cfg, absolute)  # validates budget/estimator first
    teacher = training.teacher(dense, loaders)
    set_seed(training.seed)
    out = training.fit(model, loaders, teacher, max_epochs, plr, [cb])
    widths = widths_of(model, cb.layers)
    res = {
        "widths": widths,
        "estimated_energy": cb.energy(widths)[0],
        "budget": cb.B,
        "reached": cb.done,
        "iterations": cb.iterations,
        "epochs": len(out["history"]),
        "accuracy_before_ft": evaluate(model, loaders.test, device)["accuracy"],
        "history": cb.history,
    }
    return {**res, "accuracy": training.finetune(model, loaders, teacher), "model": model}


def run_uniform(
    dense: nn.Module,
    loaders,
    estimator,
    budget: float,
    absolute: bool = False,
    training: Training = Training(),
    train_epochs: int = 0,
    train_lr: float = 1e-3,
) -> dict:
    """Baseline: one width multiplier for all layers at the same Ê budget, L2 group pruning, same fine-tune.

    ``train_epochs`` > 0 gives the baseline ECC's training too (equal training): before the
    fine-tune, the pruned net trains ``train_epochs`` epochs with its masks fixed, Adam at
    ``train_lr`` and the same logit-MSE distillation (``training.distill``) as ECC's ADMM phase.
    ``accuracy_before_ft`` is then measured after that phase; ``epochs`` = ``train_epochs``.
    """
    from ..train import evaluate

    check_run_args(plr=train_lr)
    if isinstance(train_epochs, bool) or not isinstance(train_epochs, int) or train_epochs < 0:
        raise ValueError(f"train_epochs must be an int >= 0, got {train_epochs!r}")
    training.validate()
    widths = uniform_widths(estimator, budget, absolute)
    model = copy.deepcopy(dense).to(training.device)
    prune_to_widths_(model, widths)
    dense_e = float(bilinear.predict(estimator, estimator.S))
    res = {
        "widths": widths,
        "estimated_energy": float(bilinear.predict(estimator, widths)) / dense_e,
        "epochs": train_epochs,
    }
    teacher = training.teacher(dense, loaders, distilled=training.finetune_epochs + train_epochs > 0)
    if train_epochs > 0:  # the ADMM phase's training for the baseline: masked, same distillation
        training.finetune(model, loaders, teacher, train_epochs, train_lr)
    res["accuracy_before_ft"] = evaluate(model, loaders.test, training.device)["accuracy"]
    return {**res, "accuracy": training.finetune(model, loaders, teacher), "model": model}


# ----------------------------------------------------------------------------- the method contract (stage 03)
#: the three models of one (seed, budget) point: ECC and the two views of the uniform-width baseline
BOARD_LABELS = {
    "ECC": "ECC",
    "uniform_equal_training": "uniform width, equal training (ECC baseline)",
    "uniform": "uniform width, fine-tune only (ECC baseline)",
}


@dataclass
class Config(MethodConfig):
    """Stage 03: dense teachers, then ECC vs the uniform width (fine-tune only / equal training) per
    (seed, budget). ``seeds`` are absolute; ``budgets`` fractions of Ê(dense) (``absolute_budget``:
    estimator units); the ADMM knobs are :class:`ECCConfig`'s."""

    seeds: list = dataclasses.field(default_factory=lambda: [0, 1, 2])
    budgets: list = dataclasses.field(default_factory=lambda: [0.5, 0.3, 0.2, 0.1])
    absolute_budget: bool = False
    model: str = "lenet5"  # registered chain model trained here
    net: str = "lenet5"  # narrowable net the estimator was fitted for
    image_size: int = 32
    epochs: int = 15  # dense pretraining (Adam, cosine)
    lr: float = 1e-3
    max_epochs: int = 80
    plr: float = 1e-3
    rho_z: float = 10.0
    rho_y: float = 10.0
    pslr: float = 1.0
    psgrad_clip: float = 1.0  # 0: no clip
    psgrad_mask: bool = True
    repo_square_of_sum: bool = False
    distill: float = 0.5
    finetune_epochs: int = 10
    finetune_lr: float = 5e-4
    latency_batch: int = 64
    latency_threads: int = 1
    latency_repeats: int = 30
    device: str = "cpu"

    # fmt: off
    RANGES = {
        "seeds": SEED, "budgets": POSITIVE, "image_size": ints(8, 1024), "epochs": EPOCHS, "lr": LR,
        "max_epochs": ints(1, 100000), "plr": LR, "psgrad_clip": dict(lo=0, hi=1e6), "distill": FRACTION,
        "rho_z": dict(lo=0, hi=1e6, lo_open=True), "rho_y": dict(lo=0, hi=1e6, lo_open=True),
        "pslr": dict(lo=0, hi=1e6, lo_open=True), "finetune_epochs": EPOCHS0, "finetune_lr": LR,
        "latency_batch": ints(1, 65536), "latency_threads": ints(1, 256), "latency_repeats": ints(3, 100000),
    }
    # fmt: on

    def check(self) -> None:
        if not self.seeds or not self.budgets:
            raise ValueError(f"need at least one seed and one budget, got seeds={self.seeds}, budgets={self.budgets}")
        if not self.absolute_budget and any(b >= 1 for b in self.budgets):
            raise ValueError(f"budgets are fractions of the dense energy and must lie in (0, 1), got {self.budgets}")
        from ..train import check_device

        check_device(self.device)
        self.admm()  # ECCConfig's own checks

    def admm(self) -> ECCConfig:
        """The ADMM knobs as :class:`ECCConfig`."""
        return ECCConfig(
            rho_z=self.rho_z,
            rho_y=self.rho_y,
            pslr=self.pslr,
            psgrad_clip=self.psgrad_clip or None,
            psgrad_mask=self.psgrad_mask,
            repo_square_of_sum=self.repo_square_of_sum,
        )

    def training(self, seed: int) -> Training:
        """Distillation, fine-tune and device of ECC and both baselines at one seed, as :class:`Training`."""
        return Training(
            **{k: getattr(self, k) for k in ("distill", "finetune_epochs", "finetune_lr", "device")}, seed=seed
        )

    @property
    def latency(self) -> dict:
        return dict(batch=self.latency_batch, threads=self.latency_threads, repeats=self.latency_repeats)


def analytic_estimator(net: str, num_classes: int, in_channels: int, image_size: int, n: int = 64, seed: int = 1):
    """A bilinear Ê fitted (ridge) on ``n`` random widths of the analytic (Eyeriss-style) energy model: what
    stage 02 fits on its profile, for a run without stage 02's file (tests, a quick look)."""
    from ..energy.analytic import AnalyticDevice
    from ..energy.profile import sample_widths
    from ..models.narrow import dense_widths

    S = dense_widths(net, num_classes, in_channels)
    device = AnalyticDevice(net, num_classes, in_channels, image_size)
    widths = sample_widths(S, n, seed)
    return bilinear.fit(widths, [device.cost(w) for w in widths], S, net=net)


def _summarize(method, res, seed, budget, dense, loaders, cfg, oracle, dense_energy, dense_macs):
    """One row of ``results.csv``: accuracy, widths, estimated/analytic energy and latency of the slimmed export."""
    from .. import cost

    model = res["model"].cpu().eval()  # the deployable export is measured on the CPU
    small = slim(model, example_input=next(iter(loaders.test))[0][:8]).eval()
    x = next(iter(loaders.test))[0][:256]
    with torch.no_grad():
        diff = float((model(x) - small(x)).abs().max())
    input_size = (loaders.in_channels, cfg.image_size, cfg.image_size)
    lat = cost.measure_latency(small, input_size, **cfg.latency)
    lat_dense = cost.measure_latency(dense, input_size, **cfg.latency)
    row = {
        "seed": seed,
        "budget": budget,
        "method": method,
        "accuracy": res["accuracy"],
        "accuracy_before_ft": res["accuracy_before_ft"],
        "widths": res["widths"],
        "estimated_energy": res["estimated_energy"],
        "analytic_energy": oracle.cost(res["widths"]) / dense_energy,
        "dense_macs": dense_macs,
        "remaining_macs": cost.total_macs(small, input_size),
        "latency_ms": lat["median_ms"],
        "latency_iqr_ms": lat["iqr_ms"],
        "dense_latency_ms": lat_dense["median_ms"],
        "export_max_abs_diff": diff,
        "reached": res.get("reached", True),
        "iterations": res.get("iterations", 0),
        "epochs": res.get("epochs", 0),
    }
    return row, small


def _sweep_point(cfg, dense, loaders, est, budget, frac, seed, ckpts, **ctx):
    """ECC, the fine-tune-only and the equal-training uniform baselines at one (seed, budget); the slimmed
    exports' weights go to ``ckpts[method]``."""
    from ..train import save_checkpoint

    kw = dict(absolute=cfg.absolute_budget, training=cfg.training(seed))
    r = run_ecc(dense, loaders, est, budget, cfg.admm(), cfg.max_epochs, cfg.plr, **kw)
    u = run_uniform(dense, loaders, est, budget, **kw)
    # equal training: as many epochs as ECC's ADMM phase took here (its last, partial epoch counted whole),
    # Adam at the ADMM learning rate, the same distillation, then the same fine-tune
    ue = run_uniform(dense, loaders, est, budget, train_epochs=int(r["epochs"]), train_lr=cfg.plr, **kw)
    rows = []
    for method, res in (("ECC", r), ("uniform", u), ("uniform_equal_training", ue)):
        row, small = _summarize(method, res, seed, frac, dense, loaders, cfg, **ctx)
        save_checkpoint(ckpts[method], model=small.state_dict(), widths=row["widths"])
        rows.append(row)
    traj = [{k: h[k] for k in ("iteration", "E_real", "E_s", "z")} for h in r["history"]]
    return {"rows": rows, "trajectory": traj}


def _model_kwargs(cfg: Config, loaders) -> dict:
    import inspect

    from ..models import MODELS

    kw = dict(num_classes=loaders.num_classes, in_channels=loaders.in_channels)
    if "image_size" in inspect.signature(MODELS.get(cfg.model)).parameters:
        kw["image_size"] = cfg.image_size
    return kw


STAGE = "03_ecc_admm"
PAPER = "Yang, Zhu, Liu: ECC, energy-constrained compression via ADMM (CVPR 2019)"


def _tiny() -> Config:
    """A Config that runs in seconds on the tests' fake data (the registry-wide tests run it)."""
    return Config(
        seeds=[0], budgets=[0.4], epochs=1, max_epochs=1, finetune_epochs=1, latency_batch=2, latency_repeats=3
    )


@register_method("ecc", config=Config, stage=STAGE, paper=PAPER, tiny=_tiny)
def run(
    config: Config,
    loaders,
    dense=None,
    *,
    cache_dir=None,
    estimator=None,
    estimator_digest: str | None = None,
    cost_device: str = "analytic",
    progress: bool = True,
) -> list[Result]:
    """Stage 03 end to end: per seed a dense teacher (``train.pretrain_dense``, cached; or ``dense[seed]``),
    then per budget ECC + the two uniform baselines (``_sweep_point``), cached in ``cache_dir/sweep_cache.json``
    by every setting, the dense fingerprint and the estimator file's digest.

    ``loaders``: one ``data.Loaders`` or {seed: Loaders}; ``estimator``: stage 02's bilinear Ê (None: fitted
    here on the analytic model, :func:`analytic_estimator`). Results: one "dense" per seed (no board row), then
    "ECC" / "uniform" / "uniform_equal_training" per (seed, budget) with ``metrics`` = the ``results.csv`` row
    (+ ECC's ADMM ``trajectory``) and ``metrics["manifest"]`` = its ``results.record_model`` arguments."""
    import tempfile
    from pathlib import Path

    from .. import cost
    from ..energy.analytic import AnalyticDevice
    from ..results import param_hash, with_cache
    from ..models import create_model
    from ..train import evaluate, load_checkpoint, load_weights, pretrain_dense, state_digest

    config.validate()
    cache_dir = Path(cache_dir or tempfile.mkdtemp(prefix="ecc-"))
    cache_dir.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in config.seeds]
    by_seed = {s: loaders[s] if isinstance(loaders, dict) else loaders for s in seeds}
    L0 = by_seed[seeds[0]]
    nc, ic = L0.num_classes, L0.in_channels
    est = estimator if estimator is not None else analytic_estimator(config.net, nc, ic, config.image_size)
    fractions = [relative_budget(est, b, config.absolute_budget) for b in config.budgets]  # before any training
    oracle = AnalyticDevice(config.net, nc, ic, config.image_size)
    input_size = (ic, config.image_size, config.image_size)
    model_kw = _model_kwargs(config, L0)
    fp0 = L0.fingerprint or {}
    common = dict(
        dataset=fp0.get("dataset"),
        model=config.model,
        image=config.image_size,
        batch=fp0.get("batch_size"),
        subset=fp0.get("subset") or 0,
    )
    out, dense_nets, dense_fp = [], {}, {}
    for seed in seeds:
        ld = by_seed[seed]
        if dense is None:
            model, fit_res = pretrain_dense(
                config.model,
                model_kw,
                ld,
                epochs=config.epochs,
                seed=seed,
                lr=config.lr,
                cache_dir=cache_dir,
                device=config.device,
                progress=progress,
            )
            ck, dense_fp[seed] = fit_res["checkpoint"], fit_res["fingerprint"]
        else:
            model, ck = dense[seed] if isinstance(dense, dict) else dense, None
            dense_fp[seed] = state_digest(model.state_dict())
        model = model.cpu().eval()  # dense parents live on the CPU: exports and latencies are CPU
        acc = evaluate(model, ld.test)["accuracy"]
        lat = cost.measure_latency(model, input_size, **config.latency)
        dense_nets[seed] = model
        metrics = {"seed": seed, "accuracy": acc, "latency_ms": lat["median_ms"], "latency_iqr_ms": lat["iqr_ms"]}
        if ck is not None:
            metrics["manifest"] = dict(
                key=f"dense_seed{seed}",
                model=config.model,
                kwargs=model_kw,
                checkpoint=ck,
                seed=seed,
                eval_dtype="float32",
            )
        out.append(Result("dense", "dense", seed, model, acc, "test", metrics))
    dense_macs = cost.total_macs(dense_nets[seeds[0]], input_size)
    ctx = dict(oracle=oracle, dense_energy=oracle.cost(est.S), dense_macs=dense_macs)
    for seed in seeds:
        for b, f in zip(config.budgets, fractions):
            params = {
                **common,
                "seed": seed,
                "budget": b,
                "absolute": config.absolute_budget,
                "dense": dense_fp[seed],
                "cfg": vars(config.admm()),
                "max_epochs": config.max_epochs,
                "plr": config.plr,
                "distill": config.distill,
                "ft": config.finetune_epochs,
                "ft_lr": config.finetune_lr,
                "lat": [config.latency_batch, config.latency_threads, config.latency_repeats],
                "device": config.device,
                "estimator_file": estimator_digest or param_hash(vars(est)),
                "net": config.net,
                "cost_device": cost_device,
                "methods": 3,
            }
            h = param_hash(params)
            ckpts = {m: cache_dir / f"ecc-{m}-seed{seed}-{h}.pt" for m in BOARD_LABELS}
            point = with_cache(
                cache_dir / "sweep_cache.json",
                params,
                lambda: _sweep_point(config, dense_nets[seed], by_seed[seed], est, b, f, seed, ckpts, **ctx),
                force=not all(p.is_file() for p in ckpts.values()),
            )
            for row in point["rows"]:
                m, widths = row["method"], [int(v) for v in row["widths"]]
                kw = dict(model_kw, num_classes=widths[-1], in_channels=widths[0], widths=widths[1:-1])
                with torch.random.fork_rng(devices=[]):  # the caller's random stream is untouched
                    net = create_model(config.model, **kw)
                net = load_weights(net, load_checkpoint(ckpts[m]), source=ckpts[m])
                board = dict(
                    method=BOARD_LABELS[m],
                    setting=f"energy budget {row['budget']:g}",
                    seed=seed,
                    input_size=list(input_size),
                    base_model=config.model,
                    dataset=common["dataset"],
                    weight_bits=None,
                    deploy_form="slimmed",
                    weights=False,  # the cost depends on the widths only
                )
                metrics = dict(
                    row,
                    manifest=dict(
                        key=f"{m}_b{b:g}_seed{seed}", model=config.model, kwargs=kw, checkpoint=ckpts[m], seed=seed
                    ),
                )
                if m == "ECC":
                    metrics["trajectory"] = point["trajectory"]
                out.append(Result(m, f"budget {f:g}", seed, net.eval(), float(row["accuracy"]), "test", metrics, board))
    return out


# ------------------------------------------------------------------------------ stage 03's report
def seed_std(x) -> float:
    """Sample standard deviation (ddof 1, pandas' ``Series.std``) of one budget's per-seed values, 0.0 for
    a single seed (where pandas gives NaN): the noise yardstick of :func:`equal_training_verdict`."""
    return float(x.std()) if len(x) > 1 else 0.0


def budget_rows(table, agg, fractions, finetune_epochs: int) -> tuple[list[dict], list[dict]]:
    """Stage 03's ``metrics.json`` rows, one per budget B in ``fractions`` (relative budgets, as in ``table``).

    ``table``: the per-(seed, budget, method) rows of :func:`run` (``results.csv``); ``agg``: their mean over
    seeds per (budget, method) with ``max_estimated_energy`` (max over seeds of Ê, so ≤ B only if every run
    met it), ``before_ft`` (accuracy before the fine-tune) and ``epochs`` (ADMM epochs). Returns
    (``results``: ECC at B with the two uniform baselines' mean accuracies, ``uniform_equal_training``:
    the equal-training baseline with its per-seed KD epochs and ``finetune_epochs``); the stds are
    :func:`seed_std` over seeds."""
    res_list, equal_rows = [], []
    for f in fractions:
        e = agg[(agg.budget == f) & (agg.method == "ECC")].iloc[0]
        u = agg[(agg.budget == f) & (agg.method == "uniform")].iloc[0]
        ue = agg[(agg.budget == f) & (agg.method == "uniform_equal_training")].iloc[0]
        per_seed = table[(table.budget == f) & (table.method == "uniform_equal_training")]
        res_list.append(
            {
                "budget": f,
                "estimated_energy": float(e.max_estimated_energy),
                "analytic_energy": float(e.analytic_energy),
                "accuracy": float(e.accuracy),
                "accuracy_std": seed_std(table[(table.budget == f) & (table.method == "ECC")].accuracy),
                "uniform_accuracy": float(u.accuracy),
                "uniform_equal_training_accuracy": float(ue.accuracy),
                "admm_epochs": float(e.epochs),
                "latency_ms": float(e.latency_ms),
                "dense_latency_ms": float(e.dense_latency_ms),
            }
        )
        equal_rows.append(
            {
                "budget": f,
                "accuracy": float(ue.accuracy),
                "accuracy_std": seed_std(per_seed.accuracy),
                "accuracy_before_ft": float(ue.before_ft),
                "epochs": [int(v) for v in per_seed.epochs],
                "finetune_epochs": finetune_epochs,
                "estimated_energy": float(ue.max_estimated_energy),
                "analytic_energy": float(ue.analytic_energy),
                "seeds": int(len(per_seed)),
            }
        )
    return res_list, equal_rows


def equal_training_verdict(ecc_row: dict, equal_row: dict) -> dict:
    """ECC against the uniform width at equal training for one budget (rows of :func:`budget_rows`):
    ``difference`` d = acc_ECC − acc_uniform_equal, ``noise`` = the larger of the two seed stds, ``side`` =
    "within noise" if |d| ≤ noise, else "ECC ahead" / "uniform ahead", and ``finetune_only_difference`` =
    acc_ECC − acc_uniform (fine-tune-only baseline; its excess over d is what equal training moves)."""
    d = ecc_row["accuracy"] - equal_row["accuracy"]
    noise = max(ecc_row["accuracy_std"], equal_row["accuracy_std"])
    side = "within noise" if abs(d) <= noise else ("ECC ahead" if d > 0 else "uniform ahead")
    return {
        "difference": d,
        "noise": noise,
        "side": side,
        "finetune_only_difference": ecc_row["accuracy"] - ecc_row["uniform_accuracy"],
    }
