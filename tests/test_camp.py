"""CAMP dual-path networks, gates, REINFORCE and the energy model (camp.md §3-§7, §10)."""

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from compresslib.methods import camp

SIZE = (1, 16, 16)


def _dual(mode="sp", seed=0):
    torch.manual_seed(seed)
    base = camp.CampResNet(8, (4, 8, 8), bits=1)
    return base, camp.make_dual(base, gate_mode=mode)


def test_structure_tied_weights_and_parameter_count():
    base, dual = _dual()
    blk = dual.blocks[1]
    assert blk.path1.conv1.weight is blk.path4.conv1.weight
    assert blk.path1.conv2.weight is blk.path4.conv2.weight
    assert (blk.path1.conv2.w_bits, blk.path4.conv2.w_bits, blk.path4.conv2.a_bits) == (1, 4, 4)
    # released bitskip YAML: only layer1.0.basic_block.pre_relu (1-bit path) stays FP32; the 4-bit
    # path's first pre-activation matches layer*.*.fullbit_block.* and is quantized at 4 bits
    assert dual.blocks[0].path1.conv1.a_bits == 32 and dual.blocks[0].path4.conv1.a_bits == 4
    assert (dual.blocks[0].path4.conv1.w_bits, dual.blocks[0].path1.conv1.w_bits) == (4, 1)
    assert all(b.path1.conv1.a_bits == 1 and b.path4.conv1.a_bits == 4 for b in dual.blocks[1:])
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    extra_bn = sum(p.numel() for b in dual.blocks for bn in (b.path4.bn1, b.path4.bn2) for p in bn.parameters())
    gate_p = sum(n(g) for g in camp.gates(dual))
    assert n(dual) == n(base) + extra_bn + gate_p
    assert torch.equal(dual.blocks[0].path1.bn1.weight, base.blocks[0].bn1.weight)  # 1-bit path copied


def test_one_step_moves_both_paths_quantized_weights():
    _, dual = _dual()
    blk = dual.blocks[2]
    w1, w4 = blk.path1.conv2.quant_weight().detach().clone(), blk.path4.conv2.quant_weight().detach().clone()
    opt = torch.optim.SGD(dual.parameters(), lr=0.5)
    x, y = torch.randn(8, *SIZE), torch.randint(0, 10, (8,))
    F.cross_entropy(dual(x), y).backward()
    opt.step()
    assert not torch.equal(w1, blk.path1.conv2.quant_weight())
    assert not torch.equal(w4, blk.path4.conv2.quant_weight())
    assert blk.path1.conv2.weight is blk.path4.conv2.weight


def test_gate_straight_through():
    torch.manual_seed(0)
    gate = camp.Gate(4, bits=4, mode="sp").train()
    q = torch.randn(6, 4, 8, 8, requires_grad=True)
    f = torch.randn(6, 4, 8, 8)
    kept = []

    def keep(mod, inp, out):
        out.retain_grad()
        kept.append(out)

    h = gate.fc.register_forward_hook(keep)
    m = gate(q)
    h.remove()
    assert set(m.detach().unique().tolist()) <= {0.0, 1.0}
    logits = kept[0].flatten(1).detach()
    p = F.softmax(logits, 1)[:, 1]
    assert torch.equal(m.view(-1), (p > 0.5).float())
    out = (1 - m) * q + m * f
    g = torch.randn_like(out)
    (out * g).sum().backward()
    # d out/d p = <g, f - q>, and d p/d logit_1 = p(1 - p) for the 2-way softmax
    expected = (g * (f - q.detach())).flatten(1).sum(1) * p * (1 - p)
    assert torch.allclose(kept[0].grad.flatten(1)[:, 1], expected, atol=1e-5)
    assert torch.allclose(kept[0].grad.flatten(1)[:, 0], -expected, atol=1e-5)


def test_eval_gates_deterministic_rl_training_samples():
    _, dual = _dual("rl", seed=1)
    x = torch.randn(64, *SIZE)
    dual.eval()
    assert torch.equal(dual(x), dual(x))
    g = camp.gates(dual)[0]
    assert torch.equal(g.decision, g.p > 0.5)
    dual.train()
    torch.manual_seed(0)
    dual(x)
    a0 = g.action.clone()
    assert g.log_prob.shape == (64,) and a0.shape == (64,)
    torch.manual_seed(1)
    dual(x)
    assert not torch.equal(a0, g.action)  # sampled, not argmax


def test_energy_identities():
    torch.manual_seed(0)
    w1, w4 = camp.CampResNet(8, (4, 8, 8), bits=1), camp.CampResNet(8, (4, 8, 8), bits=4)
    dual = camp.make_dual(w1)
    E1, E4 = camp.camp_energy(w1, SIZE), camp.camp_energy(w4, SIZE)
    t4 = camp.camp_cost_table(w4, SIZE)
    fp = float(t4[t4.layer.isin(["stem", "fc"])].energy.sum())
    gate_e = float(camp.camp_cost_table(dual, SIZE, rho=0).query("layer.str.contains('gate')").energy.sum())
    assert gate_e > 0
    for gates_on in (True, False):
        g = gate_e if gates_on else 0.0
        e0 = camp.camp_energy(dual, SIZE, rho=0.0, include_gates=gates_on)["energy"]
        e1 = camp.camp_energy(dual, SIZE, rho=1.0, include_gates=gates_on)["energy"]
        assert math.isclose(e0, E1["energy"] + g, rel_tol=1e-9)
        assert math.isclose(e1, E1["energy"] + E4["energy"] - fp + g, rel_tol=1e-9)  # stem/fc once
    # e32 : e4 : e1 = 1 : 1/93 : 1/1250 and bit-ops = Σ MACs·b_w·b_a
    macs_q = float(t4[~t4.layer.isin(["stem", "fc"])].macs.sum())
    assert math.isclose(E4["energy"], fp + macs_q / 93, rel_tol=1e-9)
    assert math.isclose(E1["energy"], fp + macs_q / 1250, rel_tol=1e-9)
    assert math.isclose(E4["bitops"], float((t4.macs * t4.weight_bits * t4.act_bits).sum()))
    half = camp.camp_energy(dual, SIZE, rho=[0.5, 0.5, 0.5])["energy"]
    assert math.isclose(
        half,
        (camp.camp_energy(dual, SIZE, rho=0)["energy"] + camp.camp_energy(dual, SIZE, rho=1)["energy"]) / 2,
        rel_tol=1e-9,
    )
    with pytest.raises(ValueError, match="needs rho"):
        camp.camp_energy(dual, SIZE)
    with pytest.raises(ValueError, match="3 values in"):
        camp.camp_energy(dual, SIZE, rho=[0.5, 1.5, 0])
    with pytest.raises(ValueError, match="no per-MAC energy for 2-bit"):
        camp.camp_energy(camp.CampResNet(8, (4, 8, 8), bits=2), SIZE)


def test_reinforce_returns_gamma_one():
    a = torch.tensor([[1, 0, 0], [0, 0, 1], [0, 1, 1], [1, 1, 0]])  # (N=4, B=3)
    ce = torch.tensor([0.5, 1.0, 2.0])
    alpha = 0.4
    R = camp.reinforce_returns(a, ce, alpha, gamma=1.0)
    for g in range(4):
        for j in range(3):
            n1 = int((a[g:, j] == 0).sum())
            assert math.isclose(R[g, j].item(), alpha / 4 * n1 - ce[j].item(), rel_tol=1e-6)
    R5 = camp.reinforce_returns(a, ce, alpha, gamma=0.5)  # R_N = r_N + γ(−CE)
    assert torch.allclose(R5[3], alpha / 4 * (1 - a[3].float()) - 0.5 * ce)
    with pytest.raises(ValueError, match="alpha must be >= 0"):
        camp.reinforce_returns(a, ce, -0.1)
    with pytest.raises(ValueError, match=r"alpha \(reward per 1-bit decision\) must be a number in \[0, inf\)"):
        camp.ReinforceCallback(alpha=-1)


def test_reinforce_loss_fixed_vs_repo_broadcast_bug():
    torch.manual_seed(0)
    N, B, alpha, lam = 3, 5, 0.3, 0.1
    lp = [torch.randn(B, requires_grad=True) for _ in range(N)]
    a = [torch.randint(0, 2, (B,)) for _ in range(N)]
    ce = torch.rand(B) * 2
    fixed = camp.reinforce_loss(lp, a, ce, alpha, 1.0, lam)
    R = camp.reinforce_returns(torch.stack(a), ce, alpha)
    assert torch.allclose(fixed, sum((-lam * lp[g] * R[g]).mean() for g in range(N)))
    bug = camp.reinforce_loss(lp, a, ce, alpha, 1.0, lam, repo_broadcast_bug=True)
    C = R + ce  # cost part only: (α/N)·#1-bit choices from g on
    want = sum(lam * (-lp[g] * C[g]).mean() + lam * lp[g].mean() * ce.mean() for g in range(N))
    assert torch.allclose(bug, want, atol=1e-6)
    assert not torch.allclose(bug, fixed)


def test_reinforce_callback_in_fit_and_gate_stats():
    _, dual = _dual("rl")
    torch.manual_seed(0)
    ds = TensorDataset(torch.randn(48, *SIZE), torch.randint(0, 10, (48,)))
    loaders = SimpleNamespace(train=DataLoader(ds, batch_size=16, shuffle=True), val=DataLoader(ds, 24), test=None)
    gate_w = camp.gates(dual)[0].fc.weight.detach().clone()
    out = camp.train_stage(dual, loaders, 1, 0.05, seed=0, callbacks=[camp.ReinforceCallback(alpha=1.0)])
    assert out["train_seconds_per_epoch"] > 0
    assert not torch.equal(gate_w, camp.gates(dual)[0].fc.weight)
    st = camp.gate_statistics(dual, loaders.val)
    assert st["decisions"].shape == (48, 3) and len(st["rho_per_block"]) == 3
    assert 0 <= st["fraction_4bit"] <= 1
    with pytest.raises(RuntimeError, match="'rl' mode"):
        cb = camp.ReinforceCallback(alpha=0.1)
        camp.set_gate_mode(dual, "sp")
        camp.train_stage(dual, loaders, 1, 0.05, seed=0, callbacks=[cb])


def test_train_stage_channels_last_keeps_ties_and_matches_nchw():
    """The NHWC speed-up changes only the memory layout: ties survive, the trained weights and
    the final val accuracy equal the NCHW run to float rounding; same seed -> identical run."""
    torch.manual_seed(0)
    ds = TensorDataset(torch.randn(64, *SIZE), torch.randint(0, 10, (64,)))
    runs = {}
    for name, cl in (("nchw", False), ("nhwc", True), ("nhwc2", True)):
        _, dual = _dual("sp", seed=1)
        loaders = SimpleNamespace(
            train=DataLoader(ds, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(0)),
            val=DataLoader(ds, 32),
            test=None,
        )
        out = camp.train_stage(dual, loaders, 1, 0.05, seed=0, channels_last=cl)
        blk = dual.blocks[1]
        assert blk.path1.conv1.weight is blk.path4.conv1.weight
        assert blk.path1.conv1.weight.is_contiguous(memory_format=torch.channels_last) == cl
        assert "val_accuracy" in out and "test_accuracy" not in out
        runs[name] = (torch.cat([p.detach().flatten() for p in dual.parameters()]), out["val_accuracy"])
    assert torch.allclose(runs["nchw"][0], runs["nhwc"][0], rtol=1e-3, atol=1e-4)
    assert torch.equal(runs["nhwc"][0], runs["nhwc2"][0]) and runs["nhwc"][1] == runs["nhwc2"][1]


def test_bad_inputs():
    with pytest.raises(ValueError, match="6n\\+2"):
        camp.CampResNet(depth=10)
    with pytest.raises(ValueError, match="one of"):
        camp.CampResNet(bits=16)
    base, dual = _dual()
    with pytest.raises(ValueError, match="already dual"):
        camp.make_dual(dual)
    with pytest.raises(ValueError, match="one of"):
        camp.make_dual(base, high_bits=0)
    with pytest.raises(ValueError, match="gate mode"):
        camp.set_gate_mode(dual, "soft")
    with pytest.raises(ValueError, match="no CAMP gates"):
        camp.set_gate_mode(base, "rl")


def test_block0_four_bit_path_reads_quantized_activation():
    """The 4-bit path of block 0 sees only 16 activation levels; the 1-bit path the FP32 pre-activation."""
    _, dual = _dual()
    dual.eval()
    seen = {}
    hooks = [
        m.register_forward_hook(lambda mod, inp, out, k=k: seen.__setitem__(k, mod.quant_input(inp[0])))
        for k, m in (("p1", dual.blocks[0].path1.conv1), ("p4", dual.blocks[0].path4.conv1))
    ]
    a4 = []
    h = dual.blocks[0].path4.conv1.register_forward_pre_hook(lambda mod, args: a4.append(args[0]))
    dual(torch.randn(4, *SIZE))
    for hk in (*hooks, h):
        hk.remove()
    levels = a4[0].unique()
    assert len(levels) <= 16 and levels.min() >= 0 and levels.max() <= 1
    assert torch.allclose(levels * 15, (levels * 15).round(), atol=1e-5)
    assert len(seen["p1"].unique()) > 16  # FP32 input of the 1-bit path


def test_static_plan_runs_chosen_paths_and_costs_no_gate():
    torch.manual_seed(0)
    w1, w4 = camp.CampResNet(8, (4, 8, 8), bits=1), camp.CampResNet(8, (4, 8, 8), bits=4)
    dual = camp.make_dual(w1).eval()
    x = torch.randn(5, *SIZE)
    camp.set_static_plan(dual, [1, 0, 1])
    h = dual.stem(x)
    for b, use4 in zip(dual.blocks, [1, 0, 1]):
        h = (b.path4 if use4 else b.path1)(h)
    ref = dual.fc(torch.flatten(F.adaptive_avg_pool2d(F.relu(dual.head_bn(h)), 1), 1))
    assert torch.allclose(dual(x), ref, atol=1e-6)
    st = camp.gate_statistics(dual, [(x, torch.zeros(5, dtype=torch.long))])
    assert st["rho_per_block"] == [1.0, 0.0, 1.0]
    E = lambda m, **k: camp.camp_energy(m, SIZE, **k)["energy"]  # noqa: E731
    assert math.isclose(E(dual, rho=[0, 0, 0], static=True), E(w1), rel_tol=1e-12)
    assert math.isclose(E(dual, rho=[1, 1, 1], static=True), E(w4), rel_tol=1e-12)
    t = camp.camp_cost_table(dual, SIZE, rho=[1, 0, 1], static=True)
    assert t[t.layer.str.contains("gate")].exec_weight.eq(0).all()
    assert t[t.layer.str.startswith("blocks.1.path1")].exec_weight.eq(1).all()
    assert t[t.layer.str.startswith("blocks.0.path1")].exec_weight.eq(0).all()
    camp.set_static_plan(dual, None)
    assert all(g.static is None for g in camp.gates(dual))
    with pytest.raises(ValueError, match="3 values in"):
        camp.set_static_plan(dual, [1, 0])
    with pytest.raises(ValueError, match="3 values in"):
        camp.set_static_plan(dual, [1, 0, 2])


def test_decision_statistics_definitions():
    d = torch.tensor([[1, 0, 1, 0], [1, 1, 1, 0], [1, 0, 0, 0], [1, 0, 1, 0]])
    st = camp.decision_statistics(d)
    assert st["per_sample_decision_fraction"] == 0.5  # blocks 1 and 2 vary over the images
    assert math.isclose(st["minority_decision_fraction"], (0 + 0.25 + 0.25 + 0) / 4)
    assert st["majority_plan"] == [1, 0, 1, 0]
    assert camp.decision_statistics(torch.ones(7, 3))["per_sample_decision_fraction"] == 0.0
    with pytest.raises(ValueError, match="decisions must be"):
        camp.decision_statistics(torch.ones(3))


def test_static_plan_candidates_exhaustive_greedy_and_choice():
    _, dual = _dual()
    torch.manual_seed(0)
    ds = TensorDataset(torch.randn(40, *SIZE), torch.randint(0, 10, (40,)))
    val = DataLoader(ds, batch_size=20)
    ex = camp.static_plan_candidates(dual, val, SIZE)
    assert len(ex) == 8 and len({tuple(c["plan"]) for c in ex}) == 8
    assert all(g.static is None for g in camp.gates(dual))  # gates restored
    gr = camp.static_plan_candidates(dual, val, SIZE, max_exhaustive=2)
    assert len(gr) == 1 + 3 + 2 + 1 and gr[0]["plan"] == [1, 1, 1] and gr[-1]["plan"] == [0, 0, 0]
    by = {tuple(c["plan"]): c for c in ex}
    for c in gr:  # the greedy path scores the same plans the same way
        assert math.isclose(c["accuracy"], by[tuple(c["plan"])]["accuracy"])
    budget = sorted(c["energy"] for c in ex)[3]
    pick = camp.choose_static_plan(ex, budget)
    ok = [c for c in ex if c["energy"] <= budget]
    assert pick["energy"] <= budget and pick["accuracy"] == max(c["accuracy"] for c in ok)
    with pytest.raises(ValueError, match="no static plan within"):
        camp.choose_static_plan(ex, min(c["energy"] for c in ex) * 0.5)


def test_run_camp_seed_controls(tmp_path):
    """Tiny end-to-end run: equal-training W4A4, RL, static-plan rows within the RL energy, checkpoints."""
    torch.manual_seed(0)
    ds = TensorDataset(torch.rand(64, *SIZE) * 2 - 1, torch.randint(0, 10, (64,)))
    mk = lambda: SimpleNamespace(  # noqa: E731
        train=DataLoader(ds, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0)),
        val=DataLoader(ds, 32),
        test=DataLoader(ds, 32),
        num_classes=10,
        in_channels=1,
    )
    kw = dict(
        depth=8,
        widths=(4, 8, 8),
        epochs=1,
        sp_epochs=1,
        rl_epochs=1,
        alphas=(0.0, 8.0),
        lr=0.05,
        rl_lr=0.01,
        rl_weight=0.1,
        sp_warmup=0,
    )
    res = camp.run_camp_seed(mk(), SIZE, 0, cache_dir=tmp_path, **kw)
    rows = {(r["model"], r["alpha"]): r for r in res["rows"]}
    static = {k for k in rows if k[0] == "static_plan"}
    assert set(rows) - static == {
        ("fp32", None),
        ("w4a4", None),
        ("w1a1", None),
        ("w4a4_equal", None),
        ("sp", None),
        ("rl", 0.0),
        ("rl", 8.0),
    }
    assert static and static <= {("static_plan", 0.0), ("static_plan", 8.0)}
    for _, a in static:
        s = rows[("static_plan", a)]
        assert "0" in s["static_plan"]  # an all-4-bit plan is the W4A4 control, not a static row
        assert s["energy_rel_w4a4"] <= s["energy_budget_rel_w4a4"] + 1e-9
        assert s["energy_budget_rel_w4a4"] == rows[("rl", a)]["energy_rel_w4a4_val"]
        assert len(s["static_plan"]) == 3 and s["n_candidate_plans"] == 8
        assert s["fraction_4bit"] == s["static_plan"].count("1") / 3
        assert s["per_sample_decision_fraction"] is None
    assert 0 <= rows[("rl", 8.0)]["per_sample_decision_fraction"] <= 1
    assert rows[("w4a4_equal", None)]["energy_rel_w4a4"] == 1.0
    for r in res["rows"]:
        assert Path(r["checkpoint"]).is_file() and Path(r["checkpoint"]).parent == tmp_path
    assert Path(rows[("w4a4_equal", None)]["checkpoint"]).name.startswith("camp-seed0-w4a4_equal-rl-")
    sd = torch.load(rows[("w4a4_equal", None)]["checkpoint"], weights_only=False)["model"]
    net = camp.CampResNet(8, (4, 8, 8), bits=4)
    net.load_state_dict(sd)
    base = torch.load(rows[("w4a4", None)]["checkpoint"], weights_only=False)["model"]
    assert not torch.equal(sd["blocks.1.conv1.weight"], base["blocks.1.conv1.weight"])  # trained on
    again = camp.run_camp_seed(mk(), SIZE, 0, cache_dir=tmp_path, **kw)  # every fit reused from the cache
    assert [(r["model"], r["alpha"], r["accuracy"], r["checkpoint"]) for r in again["rows"]] == [
        (r["model"], r["alpha"], r["accuracy"], r["checkpoint"]) for r in res["rows"]
    ]
    res2 = camp.run_camp_seed(mk(), SIZE, 0, static_plans=False, equal_training=False, **kw)
    assert [r["model"] for r in res2["rows"]] == ["fp32", "w4a4", "w1a1", "sp", "rl", "rl"]
    for r2 in res2["rows"]:  # the controls do not change the other runs (same seed, same numbers)
        assert r2["accuracy"] == rows[(r2["model"], r2["alpha"])]["accuracy"]
        assert r2["checkpoint"] is None


# ---- the method contract (stage 08): Config rules and the leaderboard row of a model
def test_config_rules_name_the_field():
    assert camp.Config().validate().widths == [8, 16, 32]
    with pytest.raises(ValueError, match="depth"):
        camp.Config(depth=10).validate()  # not 6n+2
    with pytest.raises(ValueError, match="sp_init must be 'w1a1' or 'w4a4'"):
        camp.Config(sp_init="fp32").validate()
    with pytest.raises(ValueError, match=r"alphas\[1\]"):
        camp.Config(alphas=[0, -1]).validate()
    with pytest.raises(ValueError, match="seeds and alphas need >= 1 entry"):
        camp.Config(alphas=[]).validate()


def test_board_fields_cost_a_static_plan_without_gates_and_a_gated_model_with_them():
    from compresslib.manifest import check_board

    kw = dict(depth=8, widths=[4, 4, 8], num_classes=10, in_channels=1, bits=1)
    static = dict(model="static_plan", alpha=2.0, seed=3, rho_per_block=[0.0, 1.0, 1.0], static_plan="011")
    b = check_board(camp.board_fields(static, kw, (1, 8, 8), "digits"))
    assert (b["method"], b["setting"], b["seed"], b["base_model"]) == ("CAMP", "static_plan alpha=2", 3, "camp_resnet8")
    assert b["extra"] == {"static_plan": "011"} and b["input_size"] == [1, 8, 8]
    assert b["deploy_form"] == "fake-quant fp32 (static plan: chosen path per block)"
    ew = b["exec_weight"]
    assert [v for k, v in ew.items() if ".gate." in k] == [0.0] * 6  # no gate (conv + fc per block) runs
    assert ew["blocks.0.path1.conv1"] == 1.0 and ew["blocks.0.path4.conv1"] == 0.0 and ew["blocks.1.path1.conv1"] == 0.0
    assert b["weight_bits"]["stem"] == 32 and b["weight_bits"]["blocks.1.path4.conv1"] == 4
    rl = dict(static, model="rl", static_plan=None, rho_per_block=[0.5, 0.25, 1.0])
    g = check_board(camp.board_fields(rl, kw, (1, 8, 8), "digits"))
    assert g["extra"] == {} and g["deploy_form"] == "fake-quant fp32 (both paths)"
    assert [v for k, v in g["exec_weight"].items() if ".gate." in k] == [1.0] * 6
    assert g["exec_weight"]["blocks.1.path4.conv1"] == 0.25 and g["exec_weight"]["blocks.1.path1.conv1"] == 1.0
    uni = dict(model="w4a4", alpha=None, seed=0, rho_per_block=None)
    u = check_board(camp.board_fields(uni, dict(kw, bits=4), (1, 8, 8), "digits"))
    assert u["setting"] == "w4a4" and set(u["exec_weight"].values()) == {1.0}
