import pytest
import torch

from compresslib import quant


@pytest.mark.parametrize("bad", [0, 9, 2.5, "4", True])
def test_check_bits_rejects(bad):
    with pytest.raises(ValueError, match="bits"):
        quant.check_bits(bad)


def test_uniform_levels_and_ste_gradient():
    x = torch.linspace(-1, 2, 101, requires_grad=True)
    q = quant.quantize_uniform(x, 2, 0.0, 1.0)
    assert sorted(set(q.detach().tolist())) == pytest.approx([0, 1 / 3, 2 / 3, 1])
    q.sum().backward()
    inside = (x.detach() >= 0) & (x.detach() <= 1)
    assert torch.equal(x.grad, inside.float())  # STE inside the clip range, zero outside


def test_dorefa_and_binary_value_sets():
    torch.manual_seed(0)
    w = torch.randn(1000)
    assert len(torch.unique(quant.dorefa_weight(w, 4))) <= 16
    assert quant.dorefa_weight(w, 4).abs().max() <= 1 + 1e-6
    b = quant.binary_weight(w)
    assert torch.allclose(b.abs(), w.abs().mean().expand_as(b))


def test_pact_learns_its_clip():
    p = quant.PACT(bits=4, alpha=1.0)
    x = torch.tensor([0.5, 3.0])
    p(x).sum().backward()
    assert p.alpha.grad.item() == pytest.approx(1.0)  # only the clipped element


def test_binary_weight_gradient_is_identity():
    w = torch.randn(50, requires_grad=True)
    g = torch.randn(50)
    quant.binary_weight(w).backward(g)
    assert torch.equal(w.grad, g)  # not scaled by mean|w|
