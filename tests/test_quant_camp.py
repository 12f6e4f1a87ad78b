"""Per-layer bit plans and the CAMP quantizers (camp.md §2, §10)."""

import pytest
import torch
import torch.nn as nn

from compresslib.models import create_model
from compresslib.quant import (
    PACT,
    QConv2d,
    QLinear,
    act_quant,
    act_quant_fused,
    apply_bit_plan,
    bit_plan_of,
    check_plan_bits,
    quantize_weight,
    uniform_bit_plan,
)


def test_act_quant_value_sets_and_gradient():
    x = torch.linspace(-1, 2, 301, requires_grad=True)
    y1 = act_quant(x, 1)
    assert set(y1.detach().unique().tolist()) == {0.0, 1.0}
    y4 = act_quant(x, 4)
    v = y4.detach().unique()
    assert len(v) == 16 and v.min() == 0 and v.max() == 1
    y4.sum().backward()
    inside = (x > 0) & (x < 1)
    assert torch.all(x.grad[inside] == 1) and torch.all(x.grad[(x < 0) | (x > 1)] == 0)


@pytest.mark.parametrize("bits,clip", [(1, 1.0), (2, 0.7), (4, 1.0), (4, 2.5), (8, 1.0)])
def test_fused_act_quant_equals_composed_bit_for_bit(bits, clip):
    """The one-node quantizer CAMP layers use gives the composed act_quant's values and gradients
    exactly, including the clip bounds themselves (no gradient there) and NaN."""
    torch.manual_seed(bits)
    x = torch.randn(4, 8, 16, 16) * clip
    x[0, 0, 0, :5] = torch.tensor([0.0, clip, -0.0, float("nan"), clip / 2**bits])
    x.requires_grad_()
    g = torch.randn_like(x)
    y_ref, y = act_quant(x, bits, clip), act_quant_fused(x, bits, clip)
    (g_ref,) = torch.autograd.grad(y_ref, x, g)
    (g_new,) = torch.autograd.grad(y, x, g)
    assert torch.equal(y.nan_to_num(-9.0), y_ref.nan_to_num(-9.0))
    assert torch.equal(g_new, g_ref)
    assert g_new[0, 0, 0, :4].tolist() == [0.0, 0.0, 0.0, 0.0]
    assert len(y.detach().nan_to_num(0.0).unique()) == 2**bits
    with pytest.raises(ValueError, match="bits"):
        act_quant_fused(x, 0)
    with pytest.raises(ValueError, match="clip"):
        act_quant_fused(x, 4, clip=0.0)


def test_weight_quantizers_value_sets_and_gradient():
    torch.manual_seed(0)
    w = torch.randn(16, 8, 3, 3, requires_grad=True)
    q1 = quantize_weight(w, 1)
    vals = q1.detach().unique()
    m = w.detach().abs().mean()
    assert len(vals) == 2 and torch.allclose(vals, torch.stack([-m, m]))
    g = torch.randn_like(w)
    (q1 * g).sum().backward()
    assert torch.equal(w.grad, g)  # pure identity STE (repo's DorefaParamsBinarizationSTE)
    q4 = quantize_weight(w, 4)
    assert q4.detach().unique().numel() <= 16 and q4.min() >= -1 and q4.max() <= 1
    t = torch.tanh(w.detach())
    u = t / t.abs().max() * 0.5 + 0.5
    assert torch.allclose(q4.detach(), 2 * torch.round(u * 15) / 15 - 1)
    w.grad = None
    q4.sum().backward()  # gradient through tanh and the (non-detached) max-normalisation
    assert w.grad.abs().sum() > 0
    assert quantize_weight(w, 32) is w


def test_check_plan_bits_errors():
    for ok in (1, 4, 8, 32):
        assert check_plan_bits(ok) == ok
    for bad in (0, 9, 16, 33, -1, 2.5, True, "4", None):
        with pytest.raises(ValueError, match=r"\{1\.\.8, 32\}|one of"):
            check_plan_bits(bad)


def _net():
    torch.manual_seed(0)
    return create_model("preact_resnet", widths=(4, 8, 8))


def test_apply_bit_plan_on_registered_model():
    m = _net()
    x = torch.randn(2, 1, 16, 16)
    y_fp = m(x)
    w_id = id(m.blocks[0].conv2.weight)
    plan = uniform_bit_plan(m, 1)
    assert "stem" not in plan and "fc" not in plan  # stem and classifier stay FP32
    assert plan["blocks.0.conv1"] == (1, 32)  # first quantized layer reads an FP32 activation
    apply_bit_plan(m, plan)
    assert isinstance(m.blocks[0].conv2, QConv2d) and type(m.stem) is nn.Conv2d
    assert id(m.blocks[0].conv2.weight) == w_id  # same Parameter object: ties survive
    bits = bit_plan_of(m)
    assert bits["stem"] == (32, 32) and bits["blocks.1.conv2"] == (1, 1)
    assert not torch.allclose(m(x), y_fp)
    apply_bit_plan(m, {n: 32 for n in plan})  # back to FP32: same function as before
    assert torch.allclose(m(x), y_fp, atol=1e-6)


def test_apply_bit_plan_errors_before_any_change():
    m = _net()
    with pytest.raises(ValueError, match="do not exist.*blocks.9.conv1"):
        apply_bit_plan(m, {"blocks.0.conv1": 4, "blocks.9.conv1": 4})
    assert type(m.blocks[0].conv1) is nn.Conv2d  # nothing was modified
    with pytest.raises(ValueError, match="Conv2d/Linear"):
        apply_bit_plan(m, {"blocks.0.bn1": 4})
    with pytest.raises(ValueError, match="bits of 'fc'"):
        apply_bit_plan(m, {"fc": 16})
    with pytest.raises(ValueError, match="activation bits"):
        apply_bit_plan(m, {"fc": (4, 0)})
    with pytest.raises(TypeError):
        apply_bit_plan(m, [("fc", 4)])
    with pytest.raises(ValueError, match="act_mode"):
        apply_bit_plan(m, {"fc": 4}, act_mode="lsq")


def test_pact_mode_and_linear():
    seq = nn.Sequential(nn.Linear(4, 3))
    apply_bit_plan(seq, {"0": (4, 2)}, act_mode="pact", pact_init=2.0)
    layer = seq[0]
    assert isinstance(layer, QLinear) and isinstance(layer.pact, PACT) and layer.pact.bits == 2
    x = torch.tensor([[-1.0, 0.5, 1.9, 5.0]])
    qx = layer.quant_input(x)
    assert torch.allclose(qx, torch.tensor([[0.0, 2 / 3, 2.0, 2.0]]))  # 4 levels on [0, α=2]
    seq(x).sum().backward()
    assert layer.pact.alpha.grad is not None and layer.pact.alpha.grad.abs() > 0


def test_input_quantized_skips_second_quantizer():
    torch.manual_seed(0)
    conv = QConv2d(2, 2, 3, padding=1, bias=False)
    conv.w_bits, conv.a_bits = 1, 1
    x = torch.rand(1, 2, 4, 4, requires_grad=True)
    a = conv.quant_input(x)
    y1, y2 = conv(x), conv(a, input_quantized=True)
    assert torch.allclose(y1, y2)
    y2.sum().backward()
    assert x.grad.abs().sum() > 0  # a second clamp at {0, 1} would have zeroed this
