"""CAMP: co-adaptive 1-bit/4-bit mixed-precision pre-activation ResNets (specs/camp.md).

Every residual block runs a 1-bit path ``q`` (W1A1); a gate reading ``q`` decides per sample
whether the 4-bit path ``f`` (W4A4, same latent conv weights, own BatchNorms) replaces it:
``out = (1 - m)·q + m·f`` (§3). Gates are trained with a straight-through hard decision (SP,
§5), then by REINFORCE with reward α/N per 1-bit decision and −CE at the end (RL, §6).
Energy (§7): E = Σ_layers MACs·e(bits), e32 : e4 : e1 = 1 : 1/93 : 1/1250, normalised to W4A4.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..cost import layer_table
from ..models.resnet_cifar import PadShortcut, depth_to_n, make_stages
from ..quant import QConv2d, act_quant_fused, apply_bit_plan, check_plan_bits, uniform_bit_plan
from ..checks import check_number
from ..train import Callback, cached_fit, check_device, evaluate, fit, set_seed
from .contract import EPOCHS, FRACTION, LR, MethodConfig, NONNEGATIVE, Result, SEED, ints, register_method

#: per-MAC energy by precision, fitted to the published CAMP table (camp.md §7), e32 = 1
E_PER_MAC = {32: 1.0, 4: 1.0 / 93, 1: 1.0 / 1250}


def _qin(layer: nn.Module, x):
    return layer.quant_input(x) if hasattr(layer, "quant_input") else x


def _conv_prequantized(layer: nn.Conv2d, x):
    """conv(x, Q_w(W)) for an input that is already activation-quantized (no second Q_a)."""
    return layer(x, input_quantized=True) if hasattr(layer, "quant_input") else layer(x)


class CampBlock(nn.Module):
    """Pre-activation basic block (§3): BN-ReLU-conv3x3(s)-BN-ReLU-conv3x3 + shortcut.

    Identity shortcut adds ``x``; the down-sampling shortcut (AvgPool + zero channels) takes the
    (quantized) pre-activation, as in Distiller's ``preact_downsample=True``.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.downsample = PadShortcut(in_ch, out_ch, stride) if (stride > 1 or in_ch != out_ch) else None

    def forward(self, x):
        a = _qin(self.conv1, F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(_conv_prequantized(self.conv1, a))))
        return out + (self.downsample(a) if self.downsample is not None else x)


class CampResNet(nn.Module):
    """Pre-activation ResNet-(6n+2): FP32 stem, 3 stages of n blocks, BN-ReLU head, FP32 FC.

    ``bits`` < 32 applies the uniform plan of §2 (stem, first block input, head and FC stay FP32).
    """

    def __init__(self, depth: int = 8, widths=(8, 16, 32), num_classes: int = 10, in_channels: int = 1, bits: int = 32):
        super().__init__()
        n = depth_to_n(depth)
        widths = tuple(int(w) for w in widths)
        if len(widths) != 3 or min(widths) < 1:
            raise ValueError(f"widths must be three positive ints, got {widths}")
        bits = check_plan_bits(bits)
        self.stem = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.blocks, c = make_stages(CampBlock, widths, n)
        self.head_bn = nn.BatchNorm2d(c)
        self.fc = nn.Linear(c, num_classes)
        for m in self.modules():  # N(0, sqrt(2 / (k²·C_out))), BN γ=1 β=0 (§3)
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if bits < 32:
            apply_bit_plan(self, uniform_bit_plan(self, bits))

    def forward(self, x):
        x = self.blocks(self.stem(x))
        x = F.relu(self.head_bn(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class Gate(nn.Module):
    """FFGate-II on the 1-bit output q (§3): conv3x3/2 → BN → ReLU(4-bit) → global pool → 1x1 → softmax.

    ``mode='sp'``: training forward value 1[p>0.5], gradient through p (``hard − p.detach() + p``).
    ``mode='rl'``: training samples a ~ Categorical(softmax) and keeps log π(a) (shape (B,)).
    Evaluation (both modes): deterministic 1[p > 0.5].
    """

    def __init__(self, channels: int, bits: int = 4, mode: str = "sp"):
        super().__init__()
        self.bits = check_plan_bits(bits)
        self.conv = QConv2d(channels, channels, 3, 2, 1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.fc = QConv2d(channels, 2, 1, bias=True)
        self.conv.w_bits = self.fc.w_bits = self.bits
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
        self.mode = mode
        self.static = None  # None: learned gate; 0 / 1: fixed decision (static bit plan, no gate executed)
        self.log_prob = self.action = self.decision = self.p = None

    def extra_repr(self) -> str:  # part of the fit fingerprint (train.cached_fit hashes the module repr)
        return f"bits={self.bits}, mode={self._mode}, static={self.static}"

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, mode: str) -> None:
        if mode not in ("sp", "rl"):
            raise ValueError(f"gate mode must be 'sp' or 'rl', got {mode!r}")
        self._mode = mode

    def forward(self, q):
        h = F.relu(self.bn(self.conv(q)))
        if self.bits < 32:
            h = act_quant_fused(h, self.bits)
        prob = F.softmax(self.fc(h.mean((2, 3), keepdim=True)).flatten(1), dim=1)  # (B, 2)
        p = prob[:, 1]
        if self.training and self._mode == "rl":
            dist = torch.distributions.Categorical(probs=prob, validate_args=False)  # softmax: valid
            a = dist.sample()
            self.log_prob, self.action = dist.log_prob(a), a
            m = a.float()
        elif self.training:
            m = (p > 0.5).float().detach() - p.detach() + p
        else:
            m = (p > 0.5).float()
        self.p, self.decision = p.detach(), m.detach() > 0.5
        return m.view(-1, 1, 1, 1)


class DualPathBlock(nn.Module):
    """out = (1 − m)·q + m·f with q = 1-bit block(x), m = gate(q), f = 4-bit block(x) (§3)."""

    def __init__(self, path1: CampBlock, path4: CampBlock, gate: Gate):
        super().__init__()
        self.path1, self.path4, self.gate = path1, path4, gate

    def forward(self, x):
        if self.gate.static is not None:  # static plan: only the chosen path runs, no gate
            use4 = bool(self.gate.static)
            self.gate.p = None
            # int fill: a bool fill value breaks the ONNX tracer (aten::full has no (int[], bool) overload)
            self.gate.decision = torch.full((x.shape[0],), int(use4), dtype=torch.bool, device=x.device)
            return self.path4(x) if use4 else self.path1(x)
        q = self.path1(x)
        m = self.gate(q)
        return (1 - m) * q + m * self.path4(x)


def _set_block_bits(block: CampBlock, bits: int, fp_input: bool) -> None:
    apply_bit_plan(block, {"conv1": (bits, 32 if fp_input else bits), "conv2": bits})


def make_dual(
    base: CampResNet, low_bits: int = 1, high_bits: int = 4, gate_bits: int = 4, gate_mode: str = "sp", tie: bool = True
) -> CampResNet:
    """Dual-path copy of ``base`` (§4 stage 2): each block's state goes to the ``low_bits`` path;
    the ``high_bits`` path gets fresh BatchNorms and — with ``tie`` — the *same* latent conv
    Parameters (one tensor, two quantizers; its gradient sums both paths). Gates start fresh.

    Input activations as the released ``bitskip_*.yaml`` (§2): only ``layer1.0.basic_block.pre_relu``
    — the *1-bit* path's first pre-activation — is exempt (FP32); ``layer1.0.fullbit_block.pre_relu``
    matches ``layer*.*.fullbit_block.*`` and is quantized at ``high_bits`` like every 4-bit path."""
    if not isinstance(base, CampResNet):
        raise TypeError(f"make_dual needs a CampResNet, got {type(base).__name__}")
    if any(isinstance(b, DualPathBlock) for b in base.blocks):
        raise ValueError("model is already dual-path")
    low_bits, high_bits = check_plan_bits(low_bits), check_plan_bits(high_bits)
    model = copy.deepcopy(base)
    for i, blk in enumerate(list(model.blocks)):
        path4 = copy.deepcopy(blk)
        for bn in (path4.bn1, path4.bn2):
            bn.reset_parameters()
        _set_block_bits(blk, low_bits, fp_input=i == 0)
        _set_block_bits(path4, high_bits, fp_input=False)
        if tie:
            path4.conv1.weight, path4.conv2.weight = blk.conv1.weight, blk.conv2.weight
        model.blocks[i] = DualPathBlock(blk, path4, Gate(blk.conv2.out_channels, gate_bits, gate_mode))
    return model


def gates(model: nn.Module) -> list[Gate]:
    """The gates of a dual-path model in forward order (N = number of blocks)."""
    return [m for m in model.modules() if isinstance(m, Gate)]


def set_gate_mode(model: nn.Module, mode: str) -> nn.Module:
    """Switch every gate to 'sp' or 'rl' (stage 3 warm-starts the SP gates, §4)."""
    gs = gates(model)
    if not gs:
        raise ValueError("model has no CAMP gates (build it with make_dual)")
    for g in gs:
        g.mode = mode
    return model


def set_static_plan(model: nn.Module, plan) -> nn.Module:
    """Fix every block's path: ``plan[b]`` = 1 (4-bit path) or 0 (1-bit path); ``None`` restores the gates.

    A static plan runs only the chosen path of each block and no gate (the ablation of issue 14:
    is per-sample gating worth more than the best fixed per-block plan at the same energy?).
    """
    gs = gates(model)
    if not gs:
        raise ValueError("model has no CAMP gates (build it with make_dual)")
    blocks = [m for m in model.modules() if hasattr(m, "path1") and hasattr(m, "path4") and hasattr(m, "gate")]
    if plan is not None:
        plan = list(plan)
        if len(plan) != len(gs) or any(v not in (0, 1) for v in plan):
            raise ValueError(f"static plan must be {len(gs)} values in {{0, 1}} (1 = 4-bit path), got {plan}")
        plan = [int(v) for v in plan]
    for i, blk in enumerate(blocks):
        v = None if plan is None else plan[i]
        blk.gate.static = v
        # what a static plan never runs is not stored in its deployed form: the MicroNet counter skips it
        for mod, unused in ((blk.path1, v == 1), (blk.path4, v == 0), (blk.gate, v is not None)):
            mod.micronet_skip = unused
    return model


def decision_statistics(decisions: torch.Tensor) -> dict:
    """How input-dependent deterministic gate decisions are, over one evaluation set.

    ``decisions`` (n images, N blocks) in {0, 1}. ``per_sample_decision_fraction`` = (number of blocks
    whose decision is not the same for all n images) / N. ``minority_decision_fraction`` =
    mean_b min(ρ_b, 1 − ρ_b) = share of the n·N (image, block) decisions that differ from their
    block's majority, i.e. what the best-matching static per-block plan would have to change.
    """
    d = torch.as_tensor(decisions).float()
    if d.dim() != 2 or d.shape[0] < 1 or d.shape[1] < 1:
        raise ValueError(f"decisions must be (n images >= 1, N blocks >= 1), got {tuple(d.shape)}")
    rho = d.mean(0)
    varying = d.amax(0) != d.amin(0)
    return {
        "per_sample_decision_fraction": varying.float().mean().item(),
        "minority_decision_fraction": torch.minimum(rho, 1 - rho).mean().item(),
        "majority_plan": [int(v) for v in (rho >= 0.5).tolist()],
    }


def static_plan_candidates(model, loader, input_size, max_exhaustive: int = 12, device: str = "cpu") -> list[dict]:
    """Validation accuracy and energy of static per-block plans on a trained dual-path ``model``.

    N <= ``max_exhaustive`` blocks: all 2^N plans. Otherwise a greedy path: from all-4-bit, switch
    to 1 bit, one block at a time, the block whose switch keeps the highest accuracy (N(N+1)/2
    evaluations). Energy is that of the static network (no gates, only the chosen paths, §7),
    relative to nothing (divide by the W4A4 energy yourself). ``model`` is left with its gates on.
    Returns ``[{"plan": [0/1]*N, "accuracy": fraction, "energy": E}]``.
    """
    n = len(gates(model))
    if n == 0:
        raise ValueError("model has no CAMP gates (build it with make_dual)")
    model.to(device)

    def score(plan):
        set_static_plan(model, plan)
        acc = evaluate(model, loader, device)["accuracy"]
        e = camp_energy(model, input_size, plan, include_gates=False, static=True)["energy"]
        return {"plan": list(plan), "accuracy": float(acc), "energy": float(e)}

    try:
        if n <= max_exhaustive:
            return [score([(k >> b) & 1 for b in range(n)]) for k in range(2**n)]
        cur, out = [1] * n, []
        out.append(score(cur))
        while any(cur):
            trials = [score([0 if j == i else v for j, v in enumerate(cur)]) for i in range(n) if cur[i]]
            best = max(trials, key=lambda r: (r["accuracy"], -r["energy"]))
            out += trials
            cur = best["plan"]
        return out
    finally:
        set_static_plan(model, None)


def choose_static_plan(candidates: list[dict], energy_budget: float) -> dict:
    """The candidate with the highest (validation) accuracy among those with energy <= budget
    (ties: lower energy, then the plan with more 1-bit blocks first in forward order)."""
    ok = [c for c in candidates if c["energy"] <= energy_budget * (1 + 1e-9)]
    if not ok:
        raise ValueError(
            f"no static plan within the energy budget {energy_budget:g} "
            f"(cheapest: {min(c['energy'] for c in candidates):g})"
        )
    return max(ok, key=lambda c: (c["accuracy"], -c["energy"], [-v for v in c["plan"]]))


# ------------------------------------------------------------------------------ RL (§6)
def reinforce_returns(actions: torch.Tensor, ce: torch.Tensor, alpha: float, gamma: float = 1.0):
    """R_gj = Σ_{k=g..N} γ^{k−g}·r_kj + γ^{N−g+1}·(−CE_j), r_kj = (α/N)·(1 − a_kj)  (§6).

    ``actions`` (N, B) in {0, 1} (1 = 4-bit), ``ce`` (B,) per-sample cross-entropy → (N, B).
    """
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    if actions.dim() != 2 or ce.shape != (actions.shape[1],):
        raise ValueError(f"need actions (N, B) and ce (B,), got {tuple(actions.shape)} and {tuple(ce.shape)}")
    n = actions.shape[0]
    r = (alpha / n) * (1.0 - actions.float())
    R, out = -ce.detach(), []
    for g in range(n - 1, -1, -1):
        R = r[g] + gamma * R
        out.append(R)
    return torch.stack(out[::-1])


def reinforce_loss(
    log_probs, actions, ce, alpha: float, gamma: float = 1.0, rl_weight: float = 0.01, repo_broadcast_bug: bool = False
) -> torch.Tensor:
    """Σ_g mean_j[−λ·log π_g(a_gj)·R_gj] with explicit (B,) shapes (§6).

    ``repo_broadcast_bug=True`` reproduces the original code: CE kept as (B, 1) so ``r + γR``
    broadcasts to (B, B) and each gate's term becomes λ·mean_j[−log π_j·C_j] + λ·mean_j[log π_j]·mean_i CE_i
    (no per-sample credit for accuracy).
    """
    if rl_weight < 0 or not 0 <= gamma <= 1:
        raise ValueError(f"need rl_weight >= 0 and 0 <= gamma <= 1, got {rl_weight}, {gamma}")
    lp, a = torch.stack(list(log_probs)), torch.stack(list(actions)).float()
    if not repo_broadcast_bug:
        R = reinforce_returns(a, ce, alpha, gamma)
        return (-rl_weight * lp * R).mean(1).sum()
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    n = a.shape[0]
    R, cum = -ce.detach().view(-1, 1), []
    for g in range(n - 1, -1, -1):
        R = (alpha / n) * (1.0 - a[g]) + gamma * R  # (B,) + (B,1) -> (B,B), as in train_rl.py
        cum.append(R)
    return torch.stack([(-lp[g] * rl_weight * R).mean() for g, R in zip(range(n), cum[::-1])]).sum()


class ReinforceCallback(Callback):
    """Adds the REINFORCE term of §6 to the CE loss of ``fit`` (gates must be in 'rl' mode)."""

    def __init__(self, alpha: float, gamma: float = 1.0, rl_weight: float = 0.01, repo_broadcast_bug: bool = False):
        check_rl_args(alpha, gamma, rl_weight)
        self.alpha, self.gamma, self.rl_weight, self.bug = alpha, gamma, rl_weight, repo_broadcast_bug

    def on_loss(self, s):
        gs = gates(s.model)
        if not gs or any(g.log_prob is None for g in gs):
            raise RuntimeError("ReinforceCallback needs a dual-path model with gates in 'rl' mode")
        ce = F.cross_entropy(s.outputs.detach(), s.targets, reduction="none")
        s.loss = s.loss + reinforce_loss(
            [g.log_prob for g in gs], [g.action for g in gs], ce, self.alpha, self.gamma, self.rl_weight, self.bug
        )
        for g in gs:
            g.log_prob = g.action = None


class EpochTimer(Callback):
    """Wall time of the training pass of each epoch (excludes validation)."""

    def __init__(self):
        self.seconds, self._t0 = [], None

    def fingerprint(self) -> dict:
        return {"class": "EpochTimer"}  # measures, never changes the weights

    def on_batch_start(self, s):
        if self._t0 is None:
            self._t0 = time.perf_counter()

    def on_epoch_end(self, s):
        self.seconds.append(time.perf_counter() - self._t0)
        self._t0 = None


def check_rl_args(alpha, gamma=1.0, rl_weight=0.01) -> None:
    """Ranges of the REINFORCE knobs (§6), checked before any training: NaN is rejected too."""
    check_number("alpha (reward per 1-bit decision)", alpha, 0)
    check_number("gamma (discount)", gamma, 0, 1)
    check_number("rl_weight (weight of the REINFORCE term)", rl_weight, 0)


# ------------------------------------------------------------------------------ training
def sgd_schedule(
    model,
    epochs: int,
    lr: float = 0.1,
    weight_decay: float = 2e-4,
    momentum: float = 0.9,
    milestones=(0.4, 0.6, 0.8),
    gammas=(0.1, 0.1, 0.2),
    warmup_epochs: int = 0,
    warmup_factor: float = 0.1,
):
    """SGD + MultiStepMultiGammaLR (§4): lr·Π gammas_i for epoch ≥ milestone_i·epochs, ×warmup_factor
    during the first ``warmup_epochs`` (the SP stage's 0.01 → 0.1 warm-up)."""
    if epochs < 1 or lr <= 0:
        raise ValueError(f"need epochs >= 1 and lr > 0, got {epochs}, {lr}")
    steps = [int(round(f * epochs)) for f in milestones]

    def factor(e):
        f = warmup_factor if e < warmup_epochs else 1.0
        return f * math.prod(g for s, g in zip(steps, gammas) if e >= s)

    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def train_stage(
    model,
    loaders,
    epochs: int,
    lr: float,
    seed: int,
    callbacks=(),
    warmup_epochs: int = 0,
    progress: bool = False,
    device: str = "cpu",
    channels_last: bool = True,
    cache_dir=None,
    name: str | None = None,
    fingerprint: dict | None = None,
    **sched,
) -> dict:
    """``fit`` with :func:`sgd_schedule`; adds ``train_seconds_per_epoch`` (training pass only).

    With ``cache_dir`` (and a file-name stem ``name``) it is ``train.cached_fit``: the checkpoint
    ``cache_dir/<name>-<fingerprint>.ckpt`` is reused when everything that determines the weights
    matches (a partial one is resumed) and its path is returned as ``checkpoint``; ``fingerprint``:
    extra settings to key it by.

    Speed, same math: ``channels_last`` stores the conv weights NHWC so every activation follows
    (oneDNN's 3x3 convs with 8-16 channels run ~2x faster on CPU than NCHW; sums are reordered,
    so results match NCHW to float rounding, not bit for bit); validation runs once after the
    last epoch instead of after every epoch (only the last value is reported), and the test set
    is left to :func:`gate_statistics`. Returns ``val_accuracy`` of the final model.
    """
    if channels_last:
        model.to(memory_format=torch.channels_last)  # in place: Parameters (and ties) stay the same objects
    opt, sch = sgd_schedule(model, epochs, lr, warmup_epochs=warmup_epochs, **sched)
    timer = EpochTimer()
    kw = dict(scheduler=sch, callbacks=[*callbacks, timer], seed=seed, progress=progress, device=device)
    kw["evaluate"] = "none"  # validation once after the last epoch (below), test in gate_statistics
    if cache_dir is not None:
        if not name:
            raise ValueError("train_stage: a cache_dir needs a checkpoint name")
        out = cached_fit(model, loaders, epochs, opt, cache_dir=cache_dir, name=name, fingerprint=fingerprint, **kw)
    else:
        out = fit(model, loaders, epochs, opt, **kw)
    if getattr(loaders, "val", None) is not None:
        out["val_accuracy"] = evaluate(model, loaders.val, device)["accuracy"]
    secs = timer.seconds or [h["seconds"] for h in out.get("history", []) if "seconds" in h]  # reused: recorded
    out["train_seconds_per_epoch"] = float(np.median(secs)) if secs else 0.0
    return out


# ------------------------------------------------------------------------------ evaluation
@torch.no_grad()
def gate_statistics(model, loader) -> dict:
    """Deterministic-gate evaluation: logits, targets, per-sample CE, decisions (n, N) and ρ."""
    was = model.training
    model.eval()
    logits, ys, dec = [], [], []
    gs = gates(model)
    dev = next(model.parameters()).device
    for x, y in loader:
        logits.append(model(x.to(dev)).cpu())
        ys.append(y)
        if gs:
            dec.append(torch.stack([g.decision for g in gs], 1).cpu())
    model.train(was)
    logits, y = torch.cat(logits), torch.cat(ys)
    d = torch.cat(dec).float() if dec else torch.zeros(len(y), 0)
    correct = logits.argmax(1) == y
    ce = F.cross_entropy(logits, y, reduction="none")
    out = {
        "accuracy": correct.float().mean().item(),
        "correct": correct,
        "ce": ce,
        "decisions": d,
        "rho_per_block": d.mean(0).tolist(),
        "fraction_4bit": d.mean().item() if d.numel() else float("nan"),
    }
    if d.numel():
        out["fraction_4bit_correct"] = d[correct].mean().item() if correct.any() else float("nan")
        out["fraction_4bit_wrong"] = d[~correct].mean().item() if (~correct).any() else float("nan")
        k = d.sum(1)
        out["corr_ce_n4bit"] = float(np.corrcoef(ce.numpy(), k.numpy())[0, 1]) if k.std() > 0 else float("nan")
    return out


def energy_per_mac(bits: int, table=None) -> float:
    """e(bits) of §7; only precisions with a fitted constant are accepted."""
    table = E_PER_MAC if table is None else table
    if bits not in table:
        raise ValueError(f"no per-MAC energy for {bits}-bit layers; known: {sorted(table)} (pass e_per_mac)")
    return table[bits]


def camp_cost_table(
    model, input_size, rho=None, include_gates: bool = True, e_per_mac=None, static: bool = False
) -> pd.DataFrame:
    """Shared cost table (``cost.layer_table``) + CAMP columns, one row per Conv2d/Linear.

    ``exec_weight``: expected executions per image — 1 for stem/FC/1-bit path, ρ_b for the
    4-bit path of block b, 1 or 0 for gates (``include_gates``). ``static=True`` costs a static
    per-block plan (``rho`` = the plan): the 1-bit path of block b runs 1 − ρ_b times and no gate
    runs. ``act_bits``/``bitops`` use each layer's own input precision; ``energy`` =
    exec_weight·MACs·e(w_bits) (§7, in e32·MAC units).
    """
    dual = [b for b in model.blocks if isinstance(b, DualPathBlock)] if hasattr(model, "blocks") else []
    if dual:
        if rho is None:
            raise ValueError("a dual-path model needs rho (one 4-bit fraction per block, or a scalar)")
        rho = [float(rho)] * len(dual) if np.isscalar(rho) else [float(r) for r in rho]
        if len(rho) != len(dual) or not all(0 <= r <= 1 for r in rho):
            raise ValueError(f"rho must be {len(dual)} values in [0, 1], got {rho}")
    bits = {
        n: (getattr(m, "w_bits", 32), getattr(m, "a_bits", 32))
        for n, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    }
    fixed = [(g, g.static) for g in gates(model)]
    for g, _ in fixed:  # trace every path (a static plan would skip the unused ones)
        g.static = None
    try:
        t = layer_table(model, input_size, weight_bits={n: b[0] for n, b in bits.items()})
    finally:
        for g, v in fixed:
            g.static = v
    t["act_bits"] = [bits[n][1] for n in t.layer]
    w = []
    for name in t.layer:
        parts = name.split(".")
        if len(parts) > 2 and parts[0] == "blocks" and parts[2] == "path4":
            w.append(rho[int(parts[1])])
        elif static and len(parts) > 2 and parts[0] == "blocks" and parts[2] == "path1":
            w.append(1.0 - rho[int(parts[1])])
        elif len(parts) > 2 and parts[0] == "blocks" and parts[2] == "gate":
            w.append(1.0 if include_gates and not static else 0.0)
        else:
            w.append(1.0)
    t["exec_weight"] = w
    t["bitops"] = t.exec_weight * t.nnz_macs * t.weight_bits * t.act_bits
    t["energy"] = [wi * m * energy_per_mac(b, e_per_mac) for wi, m, b in zip(w, t.macs, t.weight_bits)]
    return t


def camp_energy(model, input_size, rho=None, include_gates: bool = True, e_per_mac=None, static: bool = False) -> dict:
    """Totals of :func:`camp_cost_table`: ``energy`` (E = Σ MACs·e(bits)), ``bitops``, ``macs`` (expected)."""
    t = camp_cost_table(model, input_size, rho, include_gates, e_per_mac, static)
    return {
        "energy": float(t.energy.sum()),
        "bitops": float(t.bitops.sum()),
        "macs": float((t.exec_weight * t.macs).sum()),
    }


def rho_energy_bound(model, input_size, e_ref: float, target: float = 0.8) -> dict:
    """The energy floor of a dual-path ``model`` and the 4-bit fraction that meets ``target`` (§7).

    With one ρ for every block the 4-bit paths run ρ times per image and the rest (stem, FC, 1-bit paths,
    gates) once, so E(ρ) = E(0) + ρ (E(1) − E(0)) is linear, and E(ρ)/E_ref ≤ target iff
    ρ ≤ ρ* = (target − E(0)/E_ref) / (E(1)/E_ref − E(0)/E_ref). Returns ``floor`` = E(0)/E_ref (no CAMP point,
    gates included, goes below it), ``ceiling`` = E(1)/E_ref and ``rho_max`` = ρ* (negative: even ρ = 0 is
    above ``target``). ``e_ref``: the reference energy, e.g. the W4A4 network's ``camp_energy``."""
    if not e_ref > 0:
        raise ValueError(f"e_ref must be a positive energy, got {e_ref}")
    floor = camp_energy(model, input_size, 0.0)["energy"] / e_ref
    ceiling = camp_energy(model, input_size, 1.0)["energy"] / e_ref
    return {"floor": floor, "ceiling": ceiling, "rho_max": (target - floor) / (ceiling - floor)}


# ------------------------------------------------------------------------------ pipeline (§10)
def _row(model_name, alpha, model, loader, input_size, e_ref, b_ref, fit_out, static_plan=None) -> dict:
    st = gate_statistics(model, loader)
    dual = bool(gates(model))
    rho = st["rho_per_block"] if dual else None
    static = static_plan is not None
    e = camp_energy(model, input_size, rho, include_gates=not static, static=static)
    e_ng = camp_energy(model, input_size, rho, include_gates=False, static=static)
    frac = st["fraction_4bit"] if dual else (1.0 if model_name.startswith("w4a4") else 0.0)
    ds = decision_statistics(st["decisions"]) if dual and not static else {}
    return {
        "model": model_name,
        "alpha": alpha,
        "accuracy": 100 * st["accuracy"],
        "energy_rel_w4a4": e["energy"] / e_ref,
        "fraction_4bit": frac,
        "energy_rel_w4a4_no_gates": e_ng["energy"] / e_ref,
        "bitops_rel_w4a4": e["bitops"] / b_ref,
        "rho_per_block": rho,
        "fraction_4bit_correct": st.get("fraction_4bit_correct"),
        "fraction_4bit_wrong": st.get("fraction_4bit_wrong"),
        "corr_ce_n4bit": st.get("corr_ce_n4bit"),
        "per_sample_decision_fraction": ds.get("per_sample_decision_fraction"),
        "minority_decision_fraction": ds.get("minority_decision_fraction"),
        "static_plan": "".join(str(v) for v in static_plan) if static else None,
        "val_accuracy": 100 * fit_out.get("val_accuracy", float("nan")),
        "train_seconds_per_epoch": fit_out["train_seconds_per_epoch"],
    }


def run_camp_seed(
    loaders,
    input_size,
    seed: int,
    depth: int = 8,
    widths=(8, 16, 32),
    epochs: int = 30,
    sp_epochs: int = 30,
    rl_epochs: int = 15,
    alphas=(0.0, 0.1, 0.5, 1.0, 2.0),
    lr: float = 0.1,
    rl_lr: float = 0.01,
    rl_weight: float = 0.01,
    gamma: float = 1.0,
    sp_init: str = "w1a1",
    bug_alphas=(),
    sp_warmup: int = 1,
    static_plans: bool = True,
    equal_training: bool = True,
    max_exhaustive: int = 12,
    cache_dir=None,
    progress: bool = False,
    device: str = "cpu",
) -> dict:
    """One seed of the §10 plan: FP32/W4A4/W1A1 baselines → SP dual path → RL for every α, plus
    the issue-14 controls.

    * ``equal_training``: ``w4a4_equal`` = the W4A4 baseline trained further for ``sp_epochs``
      (SP's schedule, lr ``lr``) + ``rl_epochs`` (RL's schedule, lr ``rl_lr``), i.e. the same
      ``epochs + sp_epochs + rl_epochs`` epochs as a CAMP RL model (W1A1 init + SP + RL).
    * ``static_plans``: for every RL α, the static per-block plan (1- or 4-bit path per block, no
      gate) with the best *validation* accuracy on the trained SP super-net among plans whose
      energy is <= the RL model's energy measured on the *validation* split (all 2^N plans, or a
      greedy path for N > ``max_exhaustive``); the chosen plan is fine-tuned from the SP model
      for ``rl_epochs`` at ``rl_lr`` (the RL run's budget) and tested once (``static_plan`` rows;
      identical plans are trained once and share the result). An α whose budget admits the
      all-4-bit plan gets no row: its static control is the uniform W4A4 network (``w4a4_equal``).

    Returns ``{"rows": [...]}``, one row per model (test accuracy in %, energy and bit-ops relative
    to the W4A4 baseline, deterministic-gate 4-bit fractions, ``per_sample_decision_fraction``,
    ``checkpoint``: the trained weights, with ``cache_dir``). Every training is ``train.cached_fit``
    when ``cache_dir`` is given (fingerprinted checkpoints ``camp-seed<seed>-<model>-<fp>.ckpt``,
    reused or resumed). Same seed and freshly built ``loaders`` -> identical rows.
    """
    if sp_init not in ("w1a1", "w4a4"):
        raise ValueError(f"sp_init must be 'w1a1' (repo code) or 'w4a4' (README), got {sp_init!r}")
    if any(not a >= 0 for a in (*alphas, *bug_alphas)):  # NaN too
        raise ValueError(f"alphas must be >= 0, got {list(alphas)} / {list(bug_alphas)}")
    check_rl_args(0.0, gamma, rl_weight)
    for k, v in (("epochs", epochs), ("sp_epochs", sp_epochs), ("rl_epochs", rl_epochs)):
        check_number(k, v, 1, integer=True)
    check_number("lr", lr, 0, lo_open=True)
    check_number("rl_lr", rl_lr, 0, lo_open=True)
    check_device(device)
    nc, ic = loaders.num_classes, loaders.in_channels
    rows, base = [], {}
    ref = CampResNet(depth, widths, nc, ic, bits=4)
    e_ref = camp_energy(ref, input_size)
    e_ref, b_ref = e_ref["energy"], e_ref["bitops"]

    def stage(model, n_epochs, lr_, key, **kw):
        return train_stage(
            model,
            loaders,
            n_epochs,
            lr_,
            seed,
            progress=progress,
            device=device,
            cache_dir=cache_dir,
            name=f"camp-seed{seed}-{key}",
            **kw,
        )

    def add(row, out):
        rows.append(dict(row, checkpoint=out.get("checkpoint")))

    for name, bits in (("fp32", 32), ("w4a4", 4), ("w1a1", 1)):
        set_seed(seed)
        base[name] = CampResNet(depth, widths, nc, ic, bits=bits)
        out = stage(base[name], epochs, lr, name)
        add(_row(name, None, base[name], loaders.test, input_size, e_ref, b_ref, out), out)
    if equal_training:
        set_seed(seed)
        w4 = copy.deepcopy(base["w4a4"])
        o1 = stage(w4, sp_epochs, lr, "w4a4_equal-sp", warmup_epochs=sp_warmup)
        o2 = stage(w4, rl_epochs, rl_lr, "w4a4_equal-rl")
        o2["train_seconds_per_epoch"] = (
            o1["train_seconds_per_epoch"] * sp_epochs + o2["train_seconds_per_epoch"] * rl_epochs
        ) / (sp_epochs + rl_epochs)
        add(_row("w4a4_equal", None, w4, loaders.test, input_size, e_ref, b_ref, o2), o2)
    set_seed(seed)
    sp = make_dual(base[sp_init], gate_mode="sp")
    out = stage(sp, sp_epochs, lr, "sp", warmup_epochs=sp_warmup)
    add(_row("sp", None, sp, loaders.test, input_size, e_ref, b_ref, out), out)
    budgets = {}
    for bug, alist in ((False, alphas), (True, bug_alphas)):
        for alpha in alist:
            set_seed(seed)
            rl = set_gate_mode(copy.deepcopy(sp), "rl")
            cb = ReinforceCallback(alpha, gamma, rl_weight, repo_broadcast_bug=bug)
            name = "rl_repo_bug" if bug else "rl"
            out = stage(rl, rl_epochs, rl_lr, f"{name}-alpha{alpha:g}", callbacks=[cb])
            row = _row(name, float(alpha), rl, loaders.test, input_size, e_ref, b_ref, out)
            rho_val = gate_statistics(rl, loaders.val)["rho_per_block"]
            row["energy_rel_w4a4_val"] = camp_energy(rl, input_size, rho_val)["energy"] / e_ref
            if not bug:
                budgets[float(alpha)] = row["energy_rel_w4a4_val"]
            add(row, out)
    if static_plans and budgets:
        cands = static_plan_candidates(copy.deepcopy(sp), loaders.val, input_size, max_exhaustive, device)
        trained = {}
        for alpha, budget in budgets.items():
            choice = choose_static_plan(cands, budget * e_ref)
            plan = tuple(choice["plan"])
            if all(plan):  # the budget admits the uniform 4-bit network: that control is w4a4_equal
                continue
            if plan not in trained:
                set_seed(seed)
                st = set_static_plan(copy.deepcopy(sp), plan)
                out = stage(
                    st, rl_epochs, rl_lr, "static-" + "".join(map(str, plan)), fingerprint={"static_plan": list(plan)}
                )
                trained[plan] = (
                    _row("static_plan", None, st, loaders.test, input_size, e_ref, b_ref, out, plan),
                    out.get("checkpoint"),
                )
            row, ck = trained[plan]
            rows.append(
                dict(
                    row,
                    alpha=alpha,
                    checkpoint=ck,
                    energy_budget_rel_w4a4=budget,
                    selection_val_accuracy=100 * choice["accuracy"],
                    n_candidate_plans=len(cands),
                )
            )
    return {"rows": rows}


# ------------------------------------------------------------------------------ the method contract (stage 08)
@dataclass
class Config(MethodConfig):
    """Stage 08: per seed the FP32 / W4A4 / W1A1 baselines, the SP dual path, RL for every α (and the
    ``bug_alphas`` with the repo's (B, B) broadcasting), W4A4 at equal training and the static plans
    (:func:`run_camp_seed`)."""

    seeds: list = dataclasses.field(default_factory=lambda: [0, 1, 2])
    depth: int = 14  # pre-activation ResNet depth 6n+2
    widths: list = dataclasses.field(default_factory=lambda: [8, 16, 32])
    image_size: int = 16
    epochs: int = 15
    sp_epochs: int = 15
    rl_epochs: int = 15
    alphas: list = dataclasses.field(default_factory=lambda: [0, 1, 2, 4, 8])
    bug_alphas: list = dataclasses.field(default_factory=lambda: [2])
    lr: float = 0.1
    rl_lr: float = 0.01
    rl_weight: float = 0.1
    gamma: float = 1.0
    sp_init: str = "w1a1"
    device: str = "cpu"

    # fmt: off
    RANGES = {
        "seeds": SEED, "depth": ints(8, 1000), "widths": ints(1), "image_size": ints(4, 1024),
        "epochs": EPOCHS, "sp_epochs": EPOCHS, "rl_epochs": EPOCHS, "lr": LR, "rl_lr": LR,
        "alphas": NONNEGATIVE, "bug_alphas": NONNEGATIVE,  # α rewards 1-bit decisions
        "rl_weight": dict(lo=0, hi=100), "gamma": FRACTION,
    }
    # fmt: on

    def check(self) -> None:
        if not self.seeds or not self.alphas:
            raise ValueError(f"seeds and alphas need >= 1 entry, got {self.seeds}, {self.alphas}")
        if self.sp_init not in ("w1a1", "w4a4"):
            raise ValueError(f"sp_init must be 'w1a1' or 'w4a4', got {self.sp_init!r}")
        check_device(self.device)
        CampResNet(self.depth, tuple(self.widths))  # validates depth (6n+2) and widths before any training


def row_kind(row: dict) -> str:
    """The architecture of a :func:`run_camp_seed` row: "uniform", "dual" (gated) or "static" (a static plan)."""
    return "static" if row["model"] == "static_plan" else "dual" if row["rho_per_block"] is not None else "uniform"


def architecture(kwargs: dict, build: dict | None = None) -> nn.Module:
    """A stage-08 manifest row's network: ``CampResNet(**kwargs)``; ``build["kind"]`` "dual": :func:`make_dual` of
    it; "static": + the row's ``static_plan`` (:func:`set_static_plan`). The ``compresslib.rebuild`` builder."""
    build = build or {}
    kind = build.get("kind", "uniform")
    if kind not in ("uniform", "dual", "static"):
        raise ValueError(f"CAMP kind must be 'uniform', 'dual' or 'static', got {kind!r}")
    missing = [k for k in ("depth", "widths", "num_classes", "in_channels") if k not in kwargs]
    if missing:
        raise ValueError(f"CAMP kwargs miss {missing} (stage 08's models.json rows have them)")
    net = CampResNet(
        int(kwargs["depth"]),
        tuple(kwargs["widths"]),
        int(kwargs["num_classes"]),
        int(kwargs["in_channels"]),
        bits=int(kwargs.get("bits", 32)),
    )
    if kind != "uniform":
        net = make_dual(net, gate_mode="sp")
    if kind == "static":  # models.json may hold the plan as strings (['0', '1', '1'], from a CSV) or "011"
        plan = build.get("static_plan")
        plan = [c for c in plan if c.strip(" ,[]'\"")] if isinstance(plan, str) else plan
        try:
            plan = [int(v) for v in plan]
        except (TypeError, ValueError) as e:
            raise ValueError(f"CAMP static_plan must be a list of 0/1, got {build.get('static_plan')!r}") from e
        set_static_plan(net, plan)
    return net


def board_fields(row: dict, kwargs: dict, input_size, dataset: str) -> dict:
    """The leaderboard row of a stage-08 model: bits, activation bits and expected executions per layer from
    :func:`camp_cost_table` of the row's architecture at its ρ per block (a static plan: its chosen paths, no gate)."""
    kind = row_kind(row)
    static = kind == "static"
    with torch.random.fork_rng(devices=[]):  # the caller's random stream is untouched
        net = architecture(kwargs, {"kind": "uniform" if kind == "uniform" else "dual"})  # both paths traced
    t = camp_cost_table(net, tuple(input_size), row["rho_per_block"], include_gates=not static, static=static)
    name, alpha = row["model"], row["alpha"]
    return dict(
        method="CAMP",
        setting=name if alpha is None else f"{name} alpha={alpha:g}",
        seed=int(row["seed"]),
        input_size=list(input_size),
        base_model=f"camp_resnet{kwargs['depth']}",
        dataset=dataset,
        weight_bits=dict(zip(t.layer, t.weight_bits.tolist())),
        act_bits=dict(zip(t.layer, t.act_bits.tolist())),
        exec_weight=dict(zip(t.layer, t.exec_weight.tolist())),
        deploy_form="fake-quant fp32 (static plan: chosen path per block)"
        if static
        else "fake-quant fp32 (both paths)",
        extra={"static_plan": row["static_plan"]} if static else {},
        weights=True,
    )


STAGE = "08_camp_mixed_precision"
PAPER = "CAMP: co-adaptive mixed-precision CNNs (code release parap1uie-s/Co-Adaptive-Mixed-Precision-CNNs)"


def _tiny() -> Config:
    """A Config that runs in seconds on the tests' fake data (the registry-wide tests run it)."""
    return Config(
        seeds=[0],
        depth=8,
        widths=[4, 4, 8],
        image_size=8,
        epochs=1,
        sp_epochs=1,
        rl_epochs=1,
        alphas=[2],
        bug_alphas=[],
    )


@register_method("camp", config=Config, stage=STAGE, paper=PAPER, tiny=_tiny)
def run(
    config: Config, loaders, dense=None, *, cache_dir=None, data_root: str = "", progress: bool = False
) -> list[Result]:
    """Stage 08 end to end: :func:`run_camp_seed` per seed, its rows cached in ``cache_dir/cache_seed<N>.json``
    under every parameter (``data_root`` only enters that key), every training a ``train.cached_fit``.

    ``loaders``: one ``data.Loaders`` or {seed: Loaders}; ``dense``: unused (CAMP trains its own baselines).
    One Result per row (``metrics`` = the row + seed, accuracy in %; ``Result.accuracy`` a fraction), with
    its trained model, board row and ``metrics["manifest"]`` (``results.record_model`` arguments: the
    ``compresslib.methods.camp.CampResNet`` builder's kwargs, ``kind``, ``static_plan``)."""
    import tempfile
    from pathlib import Path

    from ..results import with_cache
    from ..train import load_checkpoint, load_weights

    if dense is not None:
        raise ValueError("camp.run trains its own baselines: pass dense=None")
    config.validate()
    cache = Path(cache_dir or tempfile.mkdtemp(prefix="camp-"))
    cache.mkdir(parents=True, exist_ok=True)
    input_size = (1, config.image_size, config.image_size)
    widths = tuple(int(w) for w in config.widths)
    cfg = dict(
        depth=config.depth,
        widths=widths,
        epochs=config.epochs,
        sp_epochs=config.sp_epochs,
        rl_epochs=config.rl_epochs,
        alphas=[float(a) for a in config.alphas],
        lr=config.lr,
        rl_lr=config.rl_lr,
        rl_weight=config.rl_weight,
        gamma=config.gamma,
        sp_init=config.sp_init,
        bug_alphas=[float(a) for a in config.bug_alphas],
    )
    out = []
    for seed in [int(s) for s in config.seeds]:
        ld = loaders[seed] if isinstance(loaders, dict) else loaders
        fp = ld.fingerprint or {}
        dataset = fp.get("dataset", "unknown")
        # version 3: block 0's 4-bit path quantizes its input; equal-training W4A4 and static plans
        key = dict(
            cfg,
            seed=seed,
            dataset=dataset,
            data_root=data_root,
            image_size=config.image_size,
            batch_size=fp.get("batch_size"),
            subset=fp.get("subset") or 0,
            device=config.device,
            version=3,
        )
        res = with_cache(
            cache / f"cache_seed{seed}.json",
            key,
            lambda: run_camp_seed(ld, input_size, seed, device=config.device, cache_dir=cache, **cfg),
        )
        for r in res["rows"]:
            r = dict(r, seed=seed)
            name = r["model"] + ("" if r["alpha"] is None else f"_alpha{r['alpha']:g}")
            kind = row_kind(r)
            kwargs = dict(
                depth=config.depth,
                widths=list(widths),
                num_classes=ld.num_classes,
                in_channels=ld.in_channels,
                bits={"fp32": 32, "w1a1": 1}.get(r["model"], 4 if kind == "uniform" else 1),
            )
            manifest = dict(
                key=f"{name}_seed{seed}",
                model="compresslib.methods.camp.CampResNet",
                kwargs=kwargs,
                checkpoint=r["checkpoint"],
                seed=seed,
                method_model=r["model"],
                alpha=r["alpha"],
                kind=kind,
                rho_per_block=r["rho_per_block"],
                static_plan=r.get("static_plan"),
                input_size=list(input_size),
                dataset=dataset,
                energy_rel_w4a4=r["energy_rel_w4a4"],
                note="kind dual: camp.make_dual(CampResNet(bits=1)); static: + camp.set_static_plan(static_plan)",
            )
            with torch.random.fork_rng(devices=[]):
                net = architecture(kwargs, manifest)
            net = load_weights(net, load_checkpoint(r["checkpoint"]), source=r["checkpoint"])
            board = board_fields(r, kwargs, input_size, dataset)
            out.append(
                Result(
                    r["model"],
                    board["setting"],
                    seed,
                    net.eval(),
                    r["accuracy"] / 100,
                    "test",
                    dict(r, manifest=manifest),
                    board,
                )
            )
    return out
