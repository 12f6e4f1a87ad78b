"""MicroNet scoring: the worked layers of spec §5.4, score identities, MobileNetV2-1.4 reference."""
import pytest
import torch
import torchvision
from torch import nn

from compresslib.micronet import (op_list, score, score_model, ternary_storage_bits, tree_adder_bits)
from compresslib.models import create_model


def _ternary_layer():
    """3x3 conv 16->16, 36 non-zeros (+0.3/-0.2) in every filter: 576 of 2304 weights, 75 % sparse."""
    g = torch.Generator().manual_seed(0)
    w = torch.zeros(16, 16 * 9)
    for o in range(16):
        idx = torch.randperm(144, generator=g)[:36]
        w[o, idx] = torch.where(torch.rand(36, generator=g) > 0.5, 0.3, -0.2)
    net = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
    net[0].weight.data = w.view(16, 16, 3, 3)
    return net


class _Dynamic(nn.Module):
    def forward(self, x):
        return x if x.sum() > 0 else -x  # data-dependent control flow: not fx-traceable


def _row(res, kind):
    t = res["table"]
    return t[t.kind == kind].iloc[0]


def test_worked_ternary_layer_repo_and_official():
    net = _ternary_layer()
    r = score_model(net, (16, 32, 32), mode="repo", task="cifar100", verbose=False)
    conv = _row(r, "conv")
    assert conv.format == "ternary2" and conv.params == 99 and r["params"] == 99
    assert r["mults"] == 24_576 and r["adds"] == 311_296
    r = score_model(net, (16, 32, 32), mode="repo", task="cifar100", tree=False, cer=False, verbose=False)
    assert r["params"] == 153 and r["adds"] == 589_824
    r = score_model(net, (16, 32, 32), mode="official", task="cifar100", verbose=False)
    # mask 2304 + 576 sign bits + 2 x 16 per-channel centroids (BN scale folded) + 16 biases, 16-bit
    assert r["params"] == (2304 + 576 + 2 * 16 * 16 + 16 * 16) / 32 == 114
    assert r["mults"] == 24_576 and r["adds"] == 589_824
    unfolded = nn.Sequential(net[0], nn.ReLU())
    assert score_model(unfolded, (16, 32, 32), verbose=False)["params"] == (2304 + 576 + 32) / 32
    cands = ternary_storage_bits(2304, 576, 16, 16)
    assert {k: v // 32 for k, v in cands.items()} == {"mask": 360, "ternary1": 145, "ternary2": 91,
                                                      "csr": 316, "cer": 306}
    assert tree_adder_bits(36, 16) == 576 and tree_adder_bits(36, 32) == 32 * 34


@pytest.mark.parametrize("mode", ["official", "repo"])
def test_worked_dense_stem_and_fc(mode):
    stem = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
    r = score_model(stem, (3, 32, 32), mode=mode, task="cifar100", verbose=False)
    assert (r["params"], r["mults"], r["adds"]) == (448, 458_752, 884_736)
    fc = nn.Sequential(nn.Flatten(), nn.Linear(120, 100))
    r = score_model(fc, (120, 1, 1), mode=mode, task="cifar100", verbose=False)
    assert (r["params"], r["mults"], r["adds"]) == (6_050, 6_000, 12_000)


def test_score_identities_and_bad_task():
    assert score(0.226e6, 71e6, "cifar100") == pytest.approx(0.01296, abs=5e-5)
    assert score(0.43e6, 129.83e6, "cifar100") == pytest.approx(0.0242, abs=5e-5)
    assert score(0.972e6, 261e6, "imagenet") == pytest.approx(0.3639, abs=5e-5)
    assert score(3e6, 500e6, "imagenet") == pytest.approx(0.8621, abs=5e-5)  # rules: "0.862" (spec: 0.8623)
    with pytest.raises(ValueError, match="unknown MicroNet task 'cifar1000'.*imagenet"):
        score(1, 1, "cifar1000")
    with pytest.raises(ValueError, match="unknown MicroNet task"):
        score_model(nn.Linear(2, 2), (2, 1, 1), task="mnist")
    with pytest.raises(ValueError, match="mode must be one of"):
        score_model(nn.Linear(2, 2), (2, 1, 1), mode="fast")
    with pytest.raises(ValueError, match="weight_bits must be in 1..32"):
        score_model(nn.Linear(2, 2), (2, 1, 1), weight_bits={"0": 0})
    with pytest.raises(ValueError, match="cannot trace"):
        score_model(_Dynamic(), (2, 1, 1))
    with pytest.raises(ValueError, match="input_size"):
        op_list(nn.Linear(2, 2), (2, 2))


def test_micronet_shortcuts_and_every_residual_add_are_counted():
    m = create_model("micronet", d=1.4, w=1.2, phi=2)
    ops = op_list(m, (1, 28, 28))
    kinds = [o["kind"] for o in ops]
    assert kinds.count("add") == 6  # 2 blocks x 3 stages, not only the last one
    assert sum(1 for o in ops if "shortcut" in o["name"]) == 2
    assert kinds.count("bn") == 6  # the BN-first bn1 of each block cannot be folded
    r = score_model(m, (1, 28, 28), fp_bits=32, sparse=False, verbose=False)
    bn_first = sum(o["channels"] for o in ops if o["kind"] == "bn")
    n_bn = sum(x.num_features for x in m.modules() if isinstance(x, nn.BatchNorm2d))
    weights = sum(p.numel() for n, p in m.named_parameters() if p.dim() > 1) + m.linear.bias.numel()
    # folded BN -> one bias per channel; standalone BN -> scale + shift
    assert r["params"] == weights + (n_bn - bn_first) + 2 * bn_first


def test_mobilenet_v2_14_reference_official_fp32():
    """Dense FP32 torchvision MobileNetV2-1.4 at 224^2: ops within 3 % of the rules' 1170 M; params =
    the model's inference parameters with every BatchNorm folded into a per-channel bias (torchvision's
    1.4 model has 6.08 M such parameters, fewer than the 6.9 M TF reference)."""
    m = torchvision.models.mobilenet_v2(width_mult=1.4)
    r = score_model(m, (3, 224, 224), mode="official", task="imagenet", fp_bits=32, sparse=False, verbose=False)
    assert abs(r["ops"] / 1170e6 - 1) < 0.03
    convs = [x for x in m.modules() if isinstance(x, (nn.Conv2d, nn.Linear))]
    inference = sum(x.weight.numel() + (x.bias.numel() if x.bias is not None else 0) for x in convs)
    inference += sum(x.num_features for x in m.modules() if isinstance(x, nn.BatchNorm2d))
    assert r["params"] == inference == 6_084_808
    assert r["score"] == pytest.approx(inference / 6.9e6 + r["ops"] / 1170e6)


def test_freebie_halves_params_and_mults_never_adds():
    m = torchvision.models.mobilenet_v2(width_mult=0.35)
    r32 = score_model(m, (3, 64, 64), fp_bits=32, sparse=False, verbose=False)
    r16 = score_model(m, (3, 64, 64), fp_bits=16, sparse=False, verbose=False)
    assert r16["params"] == r32["params"] / 2 and r16["adds"] == r32["adds"] and r16["mults"] == r32["mults"] / 2
