"""Straight-through (STE) fake-quantizers shared by the methods.

Fake quantization rounds values in the forward pass and lets the gradient through
(Bengio et al. 2013); the arithmetic stays fp32, so *accuracy* is that of the low-bit model
while *speed* is not (energy/bit-ops come from the cost model, never from timing these).
"""

from __future__ import annotations

import torch
import torch.nn as nn


def check_bits(bits, allowed=range(1, 9), what: str = "bits") -> int:
    """Validate a bit-width; raises ``ValueError`` naming the allowed range."""
    try:
        b = int(bits)
    except (TypeError, ValueError):
        b = None
    if b is None or isinstance(bits, bool) or b != bits:
        raise ValueError(f"{what} must be an integer, got {bits!r}")
    if b not in allowed:
        allowed_s = f"{min(allowed)}-{max(allowed)}" if isinstance(allowed, range) else sorted(allowed)
        raise ValueError(f"{what} must be in {allowed_s}, got {b}")
    return b


class _RoundSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return torch.round(x)

    @staticmethod
    def backward(ctx, g):
        return g


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """round(x) forward, identity gradient."""
    return _RoundSTE.apply(x)


def quantize_uniform(x: torch.Tensor, bits: int, lo: float, hi: float) -> torch.Tensor:
    """Uniform k-bit quantization of clamp(x, lo, hi) onto 2^k levels, STE gradient inside [lo, hi]."""
    bits = check_bits(bits)
    n = 2**bits - 1
    scale = (hi - lo) / n
    return round_ste((x.clamp(lo, hi) - lo) / scale) * scale + lo


def dorefa_weight(w: torch.Tensor, bits: int) -> torch.Tensor:
    """DoReFa-Net weights (Zhou et al. 2016, eq. 9): 2·q_k(tanh(w)/(2·max|tanh(w)|) + 1/2) − 1."""
    bits = check_bits(bits)
    if bits == 1:
        return binary_weight(w)
    t = torch.tanh(w)
    t = t / (2 * t.abs().max().clamp_min(1e-12)) + 0.5  # gradient also flows through the max
    n = 2**bits - 1
    return 2 * round_ste(t * n) / n - 1


class _BinarizeSTE(torch.autograd.Function):
    """sign(w)·mean|w| forward (exactly two values), identity backward."""

    @staticmethod
    def forward(ctx, w):
        return torch.where(w >= 0, 1.0, -1.0).to(w.dtype) * w.abs().mean()

    @staticmethod
    def backward(ctx, g):
        return g


def binary_weight(w: torch.Tensor) -> torch.Tensor:
    """1-bit weights: sign(w)·mean|w| (XNOR-Net / DoReFa 1-bit); the gradient passes through
    unchanged (dL/dw = dL/dw_b), as in the original code, not scaled by mean|w|."""
    return _BinarizeSTE.apply(w)


def act_quant(x: torch.Tensor, bits: int, clip: float = 1.0) -> torch.Tensor:
    """k-bit activations with a fixed clip: q_k(clamp(x, 0, clip)); gradient zero outside [0, clip]."""
    return quantize_uniform(x, bits, 0.0, clip)


class ActQuant(nn.Module):
    """Module form of :func:`act_quant` (bits=32 is the identity, clamped ReLU otherwise)."""

    def __init__(self, bits: int = 32, clip: float = 1.0):
        super().__init__()
        self.bits = 32 if bits == 32 else check_bits(bits)
        self.clip = clip

    def forward(self, x):
        return torch.relu(x) if self.bits == 32 else act_quant(x, self.bits, self.clip)

    def extra_repr(self):
        return f"bits={self.bits}, clip={self.clip}"


class PACT(nn.Module):
    """PACT (Choi et al. 2018): y = clamp(x, 0, α) with learned α, then k-bit uniform quantization.

    Gradient w.r.t. α is 1 where x ≥ α (eq. 3), through the STE elsewhere.
    """

    def __init__(self, bits: int = 4, alpha: float = 10.0):
        super().__init__()
        self.bits = check_bits(bits)
        self.alpha = nn.Parameter(torch.tensor(float(alpha)))

    def forward(self, x):
        y = torch.relu(x)
        y = torch.where(y < self.alpha, y, self.alpha)  # d/dα = 1 where clipped
        scale = self.alpha.detach() / (2**self.bits - 1)
        return y + (torch.round(y / scale) * scale - y).detach()  # STE: dq/dy = 1, dq/dα = 1 if clipped

    def extra_repr(self):
        return f"bits={self.bits}"


# =====================================================================================
# Per-layer bit plans (CAMP, issue 7) — owned by the CAMP engineer; appended section.
# A bit plan maps Conv2d/Linear names to weight bits (and the bits of that layer's input
# activation). Quantized layers keep their latent FP32 weight (Distiller's float_weight)
# and quantize it on every forward (camp.md §2): 1 bit -> sign·mean|w|, 2..8 -> DoReFa,
# 32 -> unchanged; the input activation is round(clamp(x, 0, clip)) on 2^k levels.
# =====================================================================================
PLAN_BITS = (1, 2, 3, 4, 5, 6, 7, 8, 32)


def check_plan_bits(bits, what: str = "bits") -> int:
    """Bits of a bit plan must be an int in {1..8, 32}; anything else is a clear ValueError."""
    if isinstance(bits, bool) or not hasattr(bits, "__index__") or bits.__index__() not in PLAN_BITS:
        raise ValueError(f"{what} must be one of {list(PLAN_BITS)} (32 = full precision), got {bits!r}")
    return bits.__index__()


class _ActQuantFused(torch.autograd.Function):
    """``quantize_uniform(x, bits, lo, hi)`` as one autograd node (same values and gradients).

    The composed form builds clamp → sub → div → round_ste → mul → add, whose backward ends in a
    slow ``where`` on the activation; here the backward is ``(g·s)/s`` times a saved bool mask of
    lo < x < hi (torch's clamp passes no gradient at the bounds themselves) — the same operations on the same floats as the chain's (MulBackward, DivBackward,
    clamp's pass-through), so results match bit for bit (up to the sign of zeros). ~4× faster on CPU.
    """

    @staticmethod
    def forward(ctx, x, bits, lo, hi):
        n = 2**bits - 1
        scale = (hi - lo) / n
        c = x.clamp(lo, hi)
        ctx.save_for_backward((x > lo).logical_and_(x < hi))  # clamp's backward passes lo < x < hi only
        ctx.scale = scale
        # round((c − lo)/s)·s + lo, skipping the operations that are exact no-ops (lo = 0, s = 1)
        d = c - lo if lo != 0 else c
        q = torch.round(d / scale if scale != 1.0 else d)
        q = q * scale if scale != 1.0 else q
        return q + lo if lo != 0 else q

    @staticmethod
    def backward(ctx, g):
        (mask,) = ctx.saved_tensors
        s = ctx.scale
        if s != 1.0:
            g = g * s / s  # MulBackward(·scale) then DivBackward(/scale) of the composed chain
        return g * mask, None, None, None


def act_quant_fused(x: torch.Tensor, bits: int, clip: float = 1.0) -> torch.Tensor:
    """:func:`act_quant` (q_k(clamp(x, 0, clip)), STE inside [0, clip]) as one fused autograd node."""
    bits = check_bits(bits)
    if not clip > 0:
        raise ValueError(f"clip must be > 0, got {clip}")
    return _ActQuantFused.apply(x, bits, 0.0, float(clip))


def quantize_weight(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Q_w (camp.md §2): 32 -> w; 1 -> sign(w)·mean|w| (identity STE); k -> DoReFa k-bit."""
    if bits >= 32:
        return w
    return binary_weight(w) if bits == 1 else dorefa_weight(w, bits)


class _QuantIO:
    """Mixin giving a Conv2d/Linear a weight precision ``w_bits`` and an input precision ``a_bits``."""

    w_bits: int = 32
    a_bits: int = 32
    act_clip: float = 1.0

    def quant_input(self, x: torch.Tensor) -> torch.Tensor:
        """Q_a of the layer's input: fixed clip (camp.md §2) or the PACT module if one is attached."""
        if self.a_bits >= 32:
            return x
        pact = getattr(self, "pact", None)
        return pact(x) if pact is not None else act_quant_fused(x, self.a_bits, self.act_clip)

    def quant_weight(self) -> torch.Tensor:
        return quantize_weight(self.weight, self.w_bits)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", w_bits={self.w_bits}, a_bits={self.a_bits}"


class QConv2d(_QuantIO, nn.Conv2d):
    """Conv2d computing ``conv(Q_a(x), Q_w(W))``; the latent ``weight`` stays FP32 and trainable.

    ``input_quantized=True`` skips Q_a for an input already quantized by ``quant_input`` (a second
    Q_a would zero the gradient of values sitting exactly on the clip bounds, e.g. 1-bit {0, 1}).
    """

    def forward(self, x, input_quantized: bool = False):
        x = x if input_quantized else self.quant_input(x)
        return self._conv_forward(x, self.quant_weight(), self.bias)


class QLinear(_QuantIO, nn.Linear):
    """Linear computing ``Q_a(x) @ Q_w(W)^T + b``."""

    def forward(self, x):
        return torch.nn.functional.linear(self.quant_input(x), self.quant_weight(), self.bias)


def _plan_entry(name: str, spec) -> tuple[int, int]:
    if isinstance(spec, (tuple, list)):
        if len(spec) != 2:
            raise ValueError(f"bit plan entry {name!r} must be bits or (w_bits, a_bits), got {spec!r}")
        return (
            check_plan_bits(spec[0], f"weight bits of {name!r}"),
            check_plan_bits(spec[1], f"activation bits of {name!r}"),
        )
    b = check_plan_bits(spec, f"bits of {name!r}")
    return b, b


def apply_bit_plan(
    model: nn.Module, plan: dict, act_mode: str = "fixed", act_clip: float = 1.0, pact_init: float = 8.0
) -> nn.Module:
    """Quantize ``model`` in place by a per-layer plan ``{layer_name: bits | (w_bits, a_bits)}``.

    Layers not named keep their current precision (the stem and the classifier stay FP32 unless
    named). Plain Conv2d/Linear modules become QConv2d/QLinear by a class swap that keeps their
    Parameter objects (tied weights and optimizer references survive). ``act_mode='pact'`` attaches
    a learned-clip PACT quantizer (create the optimizer after applying the plan). Everything is
    validated before any layer changes: unknown names, non-Conv/Linear names and bits outside
    {1..8, 32} raise ValueError. Returns ``model``.
    """
    if not isinstance(plan, dict):
        raise TypeError(f"bit plan must be a dict {{layer_name: bits}}, got {type(plan).__name__}")
    if act_mode not in ("fixed", "pact"):
        raise ValueError(f"act_mode must be 'fixed' or 'pact', got {act_mode!r}")
    if not act_clip > 0:
        raise ValueError(f"act_clip must be > 0, got {act_clip}")
    modules = dict(model.named_modules())
    layers = [n for n, m in modules.items() if isinstance(m, (nn.Conv2d, nn.Linear))]
    unknown = [n for n in plan if n not in modules]
    if unknown:
        raise ValueError(f"bit plan names layers that do not exist: {unknown}; quantizable layers: {layers}")
    wrong = [n for n in plan if not isinstance(modules[n], (nn.Conv2d, nn.Linear))]
    if wrong:
        raise ValueError(
            f"bit plan may only name Conv2d/Linear layers; {wrong} are {[type(modules[n]).__name__ for n in wrong]}"
        )
    entries = {n: _plan_entry(n, s) for n, s in plan.items()}
    for name, (wb, ab) in entries.items():
        m = modules[name]
        if type(m) is nn.Conv2d:
            m.__class__ = QConv2d
        elif type(m) is nn.Linear:
            m.__class__ = QLinear
        elif not isinstance(m, _QuantIO):
            raise ValueError(f"layer {name!r} of type {type(m).__name__} cannot be quantized")
        m.w_bits, m.a_bits, m.act_clip = wb, ab, float(act_clip)
        if act_mode == "pact" and ab < 32:
            m.pact = PACT(ab, pact_init).to(m.weight.device)
        elif hasattr(m, "pact"):
            del m.pact
    return model


def uniform_bit_plan(model: nn.Module, bits: int, fp_first_input: bool = True) -> dict:
    """Plan quantizing every Conv2d/Linear except the first (stem) and the last (classifier).

    ``fp_first_input``: the first quantized layer reads a full-precision activation (camp.md §2
    keeps ``layer1.0.pre_relu`` FP32), so its entry is ``(bits, 32)``.
    """
    bits = check_plan_bits(bits)
    names = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    if len(names) < 3:
        raise ValueError(f"uniform_bit_plan needs a stem, >= 1 inner layer and a classifier; got {names}")
    inner = names[1:-1]
    return {n: ((bits, 32) if (i == 0 and fp_first_input) else bits) for i, n in enumerate(inner)}


def bit_plan_of(model: nn.Module) -> dict:
    """``{layer_name: (w_bits, a_bits)}`` of every Conv2d/Linear (32 for plain layers)."""
    return {
        n: (getattr(m, "w_bits", 32), getattr(m, "a_bits", 32))
        for n, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    }
