"""EC2T assignment math, gradient rules, ECP and TTQ (spec §3, §4, checks §8.4.2-6)."""

import pytest
import torch
from torch import nn

from compresslib.methods.ec2t import (
    EC2T,
    NEG,
    POS,
    ZERO,
    _Ternarize,
    cluster_probabilities,
    ec_assignment,
    lambda_max,
    layer_decay,
    nearest_assignment,
    train_ec2t,
    ttq_assignment,
)
from compresslib.models import create_model

W = torch.tensor([-0.9, -0.3, -0.05, 0.0, 0.02, 0.04, 0.1, 0.35, 1.0, -0.02])
WP, WN = 0.45 * 1.0, 0.45 * 0.9


def test_toy_nearest_probabilities_and_lambda_max():
    a = nearest_assignment(W, WP, WN)
    assert a.tolist() == [NEG, NEG, ZERO, ZERO, ZERO, ZERO, ZERO, POS, POS, ZERO]
    P = cluster_probabilities(a)
    info = -torch.log2(P)
    assert P.tolist() == pytest.approx([0.2, 0.6, 0.2])
    assert info.tolist() == pytest.approx([2.3219, 0.7370, 2.3219], abs=1e-4)
    lam_n = (0.9**2 - (0.9 - WN) ** 2) / float(info[0] - info[1])
    lam_p = (1.0 - (1.0 - WP) ** 2) / float(info[2] - info[1])
    assert (lam_n, lam_p) == pytest.approx((0.35646, 0.44007), abs=1e-5)
    assert lambda_max(W, WP, WN, info) == pytest.approx(0.35646, abs=1e-5)


@pytest.mark.parametrize(
    "gamma,sparsity",
    [
        (0.0, 0.6),
        (0.1, 0.6),
        (0.1397, 0.6),
        (0.1399, 0.7),
        (0.15, 0.7),
        (0.1990, 0.7),
        (0.1992, 0.8),
        (0.2, 0.8),
        (1.0, 0.8),
    ],
)
def test_toy_flip_points(gamma, sparsity):
    a, lam = ec_assignment(W, WP, WN, gamma)
    assert float((a == ZERO).float().mean()) == pytest.approx(sparsity)
    assert a[0] == NEG and a[8] == POS  # the extreme weights never flip for gamma <= 1
    assert lam == pytest.approx(gamma * 0.356460, rel=1e-4)


def test_probability_floor_and_decay():
    a = torch.tensor([NEG] * 4 + [ZERO] * 2 + [POS] * 4)
    repo = cluster_probabilities(a, "repo")
    assert repo.tolist() == pytest.approx([0.25, 0.5, 0.215385], abs=1e-6)
    assert float(repo.sum()) == pytest.approx(0.965385, abs=1e-6)
    assert cluster_probabilities(a).tolist() == pytest.approx([0.25, 0.5, 0.25])
    only_zero = cluster_probabilities(torch.full((10,), ZERO))  # missing clusters count 1
    assert only_zero.tolist() == pytest.approx([0.1, 1.0, 0.1])
    assert layer_decay([100, 1000]) == pytest.approx([0.142857, 1.0], abs=1e-6)
    assert layer_decay([100, 1000], sustain=0) == pytest.approx([0.1, 1.0])


def test_gradient_transform_both_signs():
    w_fp = torch.randn(2, 3, requires_grad=True)
    a = torch.tensor([[POS, ZERO, NEG], [NEG, POS, ZERO]])
    g = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    for sign, expect_wn in ((-1.0, -7.0), (1.0, 7.0)):
        wp, wn = torch.tensor(0.5, requires_grad=True), torch.tensor(0.25, requires_grad=True)
        out = _Ternarize.apply(w_fp, wp, wn, a, False, sign)
        assert out.tolist() == [[0.5, 0.0, -0.25], [-0.25, 0.5, 0.0]]
        w_fp.grad = None
        out.backward(g)
        assert w_fp.grad.tolist() == [[0.5, 2.0, 0.75], [1.0, 2.5, 6.0]]
        assert float(wp.grad) == 6.0 and float(wn.grad) == expect_wn
    # the exact sign is the true derivative of -w_n * [A=0]
    wn = torch.tensor(0.25, requires_grad=True)
    (-(wn * (a == NEG).float()) * g).sum().backward()
    assert float(wn.grad) == -7.0


def _tiny(seed=0):
    torch.manual_seed(seed)
    return create_model("micronet")


def test_ecp_keeps_shadow_values_bit_exact_and_update_rules():
    m = _tiny()
    q = EC2T(m, method="ecp", gamma=0.5)
    assert len(q.layers) == 6 and all(".conv" in n for n in q.layers)  # stem/shortcut/FC stay FP
    q.update()
    for n, mod in q.layers.items():
        w, shadow = mod.weight, mod.parametrizations.weight.original
        nz = w != 0
        assert torch.equal(w[nz], shadow[nz]) and 0 < float((~nz).float().mean()) < 1
    t = EC2T(_tiny(), method="ec2t", gamma=0.0)
    name = next(iter(t.layers))
    qz = t.quantizer(name)
    qz.w_p.data.fill_(1e-6)  # centroid floor 0.675 * std(W_fp) after the step
    t.update()
    std = float(t.layers[name].parametrizations.weight.original.detach().std())
    assert float(qz.w_p.detach()) == pytest.approx(0.675 * std)
    vals = torch.unique(t.layers[name].weight.detach())
    assert len(vals) == 3 and float(vals[1]) == 0.0


def test_ttq_threshold_and_sparsity_monotone_in_gamma():
    w = torch.tensor([-1.0, -0.3, -0.04, 0.05, 0.2, 0.5])
    assert ttq_assignment(w, 0.1).tolist() == [NEG, NEG, ZERO, ZERO, POS, POS]
    torch.manual_seed(0)
    w = torch.randn(2000)
    sp = [
        float((ec_assignment(w, 0.45 * w.max(), 0.45 * w.min().abs(), g)[0] == ZERO).float().mean())
        for g in (0, 0.2, 0.5, 1.0)
    ]
    assert sp == sorted(sp) and sp[-1] > sp[0] + 0.2


def test_bad_inputs():
    with pytest.raises(ValueError, match="gamma must be >= 0"):
        EC2T(_tiny(), gamma=-0.1)
    with pytest.raises(ValueError, match="gamma must be >= 0"):
        ec_assignment(W, WP, WN, -1.0)
    with pytest.raises(ValueError, match="no quantizable layer"):
        EC2T(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))
    with pytest.raises(ValueError, match="method must be one of"):
        EC2T(_tiny(), method="ternary")
    with pytest.raises(ValueError, match="pmf_renorm"):
        EC2T(_tiny(), pmf_renorm="bogus")
    with pytest.raises(ValueError, match="centroid_grad_sign"):
        EC2T(_tiny(), centroid_grad_sign="minus")


def test_train_ec2t_end_to_end_is_seeded():
    from types import SimpleNamespace

    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(96, 1, 12, 12, generator=g), torch.randint(0, 10, (96,), generator=g)
    ds = torch.utils.data.TensorDataset(X, y)
    mk = lambda: SimpleNamespace(
        train=torch.utils.data.DataLoader(
            ds,
            batch_size=32,
            shuffle=True,  # noqa: E731
            generator=torch.Generator().manual_seed(0),
        ),
        val=torch.utils.data.DataLoader(ds, batch_size=96),
        test=None,
    )
    fp = _tiny()
    runs = [train_ec2t(fp, mk(), gamma=0.5, epochs=2, retrain_epochs=1, seed=3, progress=False) for _ in range(2)]
    assert runs[0]["sparsity"] == runs[1]["sparsity"] and runs[0]["val_accuracy"] == runs[1]["val_accuracy"]
    m = runs[0]["model"]
    for n in runs[0]["layers"]:
        assert len(torch.unique(m.get_submodule(n).weight.detach())) <= 3
    assert not any("parametrizations" in k for k in m.state_dict())
    assert len(runs[0]["history"]) == 3 and 0 < runs[0]["sparsity"] < 1


# ---- MODEL / DEVICE of notebook 05 (issue #9): any registered model, rebuilt by 06 from its record ----
def _nb05_setup(**params):
    """Run notebook 05's parameters cell (+ overrides) and its setup/validation cell in this process."""
    from pathlib import Path

    src = (Path(__file__).resolve().parent.parent / "notebooks" / "05_ec2t.py").read_text()
    cells = src.split("\n# %%")
    i = next(k for k, c in enumerate(cells) if c.startswith(' tags=["parameters"]'))
    ns = {}
    exec(cells[i].split("\n", 1)[1], ns)  # drop the cell marker's tail line
    ns.update(params)
    exec(cells[i + 1], ns)
    return ns


def test_notebook05_rejects_bad_model_and_device_before_any_work():
    with pytest.raises(
        ValueError, match=r"MODEL 'resnet20' cannot be compound-scaled .*set GRID \[\[1, 1\]\] and PHIS \[1\]"
    ):
        _nb05_setup(MODEL="resnet20")  # the default profile's 7-pair grid
    with pytest.raises(ValueError, match=r"MODEL 'resnet20' cannot be compound-scaled"):
        _nb05_setup(MODEL="resnet20", GRID=[[1, 1]], PHIS=[1, 2])
    with pytest.raises(ValueError, match="unknown model 'resnet21'"):
        _nb05_setup(MODEL="resnet21")
    with pytest.raises(ValueError, match="no quantizable layer"):
        _nb05_setup(MODEL="lenet5_caffe", GRID=[[1, 1]], PHIS=[1])
    with pytest.raises(ValueError, match=r"gammas\[1\] must be"):
        _nb05_setup(GAMMAS=[0.1, -0.5])
    with pytest.raises(ValueError, match=r"grid must be a list of \[d, w\] pairs"):
        _nb05_setup(GRID=[[1, 1], [0.5, 1]])
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"DEVICE 'cuda' requested but torch.cuda.is_available\(\) is False"):
            _nb05_setup(DEVICE="cuda")


def test_micronet_cifar_is_the_paper_base_and_records_rebuild_any_model():
    from compresslib.methods.ec2t import rebuild_model
    from compresslib.models import model_meta

    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert model_meta("micronet_cifar")["compound"] and not model_meta("resnet20").get("compound")
    assert n(create_model("micronet_cifar")) == 668_660  # spec §2.2, CIFAR-100 base (16/32/64 x 7)
    big = create_model("micronet_cifar", d=1.4, w=1.2, phi=3.5)
    assert n(big) == 8_055_124
    # stage-05 records: {"model", "config"} (json turns tuples into lists); old records have no "model"
    cfg = {k: list(v) if isinstance(v, tuple) else v for k, v in big.config.items()}
    assert n(rebuild_model({"model": "micronet_cifar", "config": cfg})) == 8_055_124
    assert n(rebuild_model({"config": create_model("micronet", d=1.4, w=1.2, phi=2).config})) == 104_138
    assert n(rebuild_model({"model": "resnet20", "config": {"num_classes": 10, "in_channels": 3}})) == n(
        create_model("resnet20")
    )


def test_train_ec2t_ternarizes_a_resnet20_block_convs_only():
    from types import SimpleNamespace

    g = torch.Generator().manual_seed(1)
    X, y = torch.randn(64, 1, 8, 8, generator=g), torch.randint(0, 10, (64,), generator=g)
    ds = torch.utils.data.TensorDataset(X, y)
    L = SimpleNamespace(
        train=torch.utils.data.DataLoader(ds, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0)),
        val=torch.utils.data.DataLoader(ds, batch_size=64),
        test=torch.utils.data.DataLoader(ds, batch_size=64),
    )
    fp = create_model("resnet20", num_classes=10, in_channels=1)
    r = train_ec2t(fp, L, gamma=0.3, epochs=1, retrain_epochs=1, seed=0, progress=False)
    assert len(r["layers"]) == 18 and all(n.startswith("blocks.") for n in r["layers"])
    m = r["model"]
    for n in r["layers"]:
        assert len(torch.unique(m.get_submodule(n).weight.detach())) <= 3
    assert len(torch.unique(m.stem.weight.detach())) > 3 and len(torch.unique(m.fc.weight.detach())) > 3
    assert 0 <= r["test_accuracy"] <= 1 and [h["phase"] for h in r["history"]] == ["assign", "frozen"]
    assert "val_accuracy" in r["history"][0]


@pytest.mark.parametrize("method,renorm", [("ec2t", "fixed"), ("ec2t", "repo"), ("ecp", "fixed"), ("ttq", "fixed")])
def test_batched_update_equals_the_per_layer_functions(method, renorm):
    """EC2T.update (all layers at once) == floor + ec_assignment / ttq_assignment layer by layer."""
    torch.manual_seed(0)
    m = create_model("micronet", d=1.9, w=1.0, phi=1.5)  # 18 ternarized convs of different sizes
    q = EC2T(m, method=method, gamma=0.4, t=0.2, pmf_renorm=renorm)
    torch.set_grad_enabled(False)
    for step in range(3):
        for n in q.layers:  # move shadow weights and centroids as training would (some below the floor)
            w = q.layers[n].parametrizations.weight.original
            w.add_(0.05 * torch.randn_like(w))
            q.quantizer(n).w_p.mul_(0.3 if step == 1 else 1.1)
        ref = {}
        for n in q.layers:  # the per-layer reference (the pre-batching implementation)
            qq, w = q.quantizer(n), q.layers[n].parametrizations.weight.original
            floor = q.centroid_floor * float(w.std())
            wp, wn = qq.w_p.clone().clamp_(min=floor), qq.w_n.clone().clamp_(min=floor)
            if method == "ttq":
                ref[n] = (wp, wn, ttq_assignment(w, q.t), None)
            else:
                ref[n] = (wp, wn, *ec_assignment(w, wp, wn, q.gamma, q.delta[n], renorm))
        q.update()
        for n, (wp, wn, a, lam) in ref.items():
            qq = q.quantizer(n)
            assert torch.equal(qq.w_p, wp) and torch.equal(qq.w_n, wn), n
            assert torch.equal(qq.assignment, a), (n, int((qq.assignment != a).sum()))
            if lam is not None:
                assert q.lambdas[n] == lam, n
    torch.set_grad_enabled(True)
    assert 0 < q.sparsity() < 1


def test_board_fields_name_the_paper_methods():
    from compresslib.manifest import check_board
    from compresslib.methods.ec2t import board_fields

    fp = check_board(board_fields("fp", None, 0, (1, 14, 14), "micronet", "mnist5k"))
    assert (fp["method"], fp["setting"], fp["weights"], fp["input_size"]) == (
        "EC2T",
        "full precision",
        True,
        [1, 14, 14],
    )
    assert board_fields("ec2t", 0.5, 2, (1, 14, 14), "micronet", "d")["setting"] == "ec2t gamma=0.5"
    ttq = board_fields("ttq", 0.2, 0, (1, 14, 14), "micronet", "d")
    assert (ttq["method"], ttq["setting"]) == ("TTQ (EC2T baseline)", "ttq t=0.2")
