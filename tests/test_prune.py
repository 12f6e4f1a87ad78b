import pytest
import torch

from compresslib import models, prune


def test_layerwise_magnitude_pruning_hits_the_target():
    torch.manual_seed(0)
    m = models.create_model("lenet5")
    masks = prune.magnitude_prune_(m, 0.9)
    assert prune.sparsity_of(m) == pytest.approx(0.9, abs=2e-3)
    for name, mod in prune.prunable(m).items():
        kept = mod.weight[masks[name].bool()].abs().min()
        dropped = mod.weight.new_zeros(())
        assert kept > dropped


def test_mask_callback_keeps_zeros():
    torch.manual_seed(0)
    m = models.create_model("lenet5")
    masks = prune.magnitude_prune_(m, 0.5, scope="global")
    opt = torch.optim.SGD(m.parameters(), lr=1.0)
    m(torch.randn(2, 1, 32, 32)).sum().backward()
    opt.step()
    prune.MaskCallback(masks).after_step(type("S", (), {"model": m})())
    assert prune.sparsity_of(m) == pytest.approx(0.5, abs=1e-3)


def test_bad_sparsity():
    with pytest.raises(ValueError, match="sparsity"):
        prune.magnitude_prune_(models.create_model("lenet5"), 1.0)
