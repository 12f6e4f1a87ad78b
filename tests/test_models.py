import pytest
import torch

from compresslib import cost, models
from compresslib.train import load_checkpoint, save_checkpoint

ALL = models.list_models()
LIGHT = [n for n in ALL if not models.model_meta(n).get("heavy")]


def test_registry_has_the_papers_models():
    for name in [
        "lenet5",
        "lenet5_caffe",
        "resnet20",
        "preact_resnet",
        "mobilenet_v1",
        "tv_alexnet",
        "tv_resnet50",
        "tv_mobilenet_v2",
    ]:
        assert name in ALL


def test_unknown_model_lists_valid_names():
    with pytest.raises(ValueError, match="unknown model 'lenet7'.*lenet5"):
        models.create_model("lenet7")


@pytest.mark.parametrize("name", ALL)
def test_forward_shape(name):
    torch.manual_seed(0)
    m = models.create_model(name).eval()
    x = torch.randn(2, *models.model_input_size(name))
    out = m(x)
    assert out.ndim == 2 and out.shape[0] == 2 and torch.isfinite(out).all()


@pytest.mark.parametrize("name", LIGHT)
def test_backward_and_save_load_round_trip(name, tmp_path):
    torch.manual_seed(0)
    m = models.create_model(name)
    x = torch.randn(2, *models.model_input_size(name))
    m(x).sum().backward()
    assert all(p.grad is not None for p in m.parameters() if p.requires_grad)
    m.eval()
    save_checkpoint(tmp_path / "m.ckpt", model=m.state_dict())
    m2 = models.create_model(name).eval()
    m2.load_state_dict(load_checkpoint(tmp_path / "m.ckpt")["model"])
    assert torch.equal(m(x), m2(x))


@pytest.mark.parametrize("name", LIGHT)
def test_cost_table_matches_flop_counter(name):
    from torch.utils.flop_counter import FlopCounterMode

    m = models.create_model(name).eval()
    size = models.model_input_size(name)
    fc = FlopCounterMode(display=False)
    with fc, torch.no_grad():
        m(torch.zeros(1, *size))
    assert cost.layer_table(m, size).macs.sum() == fc.get_total_flops() // 2


def test_lenet_weight_counts():
    caffe = models.create_model("lenet5_caffe")
    w = sum(mod.weight.numel() for mod in caffe.modules() if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear)))
    assert w == 430_500  # the sparsity-quantization paper's compressed weights
    t = cost.layer_table(models.create_model("lenet5"), (1, 32, 32))
    assert t.out_ch.tolist() == [6, 16, 120, 84, 10]


def test_preact_resnet_depth_validation():
    with pytest.raises(ValueError, match="6n\\+2"):
        models.create_model("preact_resnet", depth=10)
    m = models.create_model("preact_resnet", depth=14, widths=(8, 16, 32))
    assert len(m.blocks) == 6
