"""compresslib.deploy: packed bytes on disk, bit-exact round trips, sizes against the accounting, bad files."""

import numpy as np
import pytest
import torch
from torch import nn

from compresslib.deploy import bitpack, pack, packed_size_report, unpack
from compresslib.models import create_model

X28 = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(1))
X32 = torch.randn(4, 1, 32, 32, generator=torch.Generator().manual_seed(2))


def _net(name, seed=0, **kw):
    torch.manual_seed(seed)
    return create_model(name, **kw).eval()


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The bit patterns of a tensor (so -0.0 and +0.0 differ, NaN equals itself)."""
    t = t.detach().reshape(-1)
    return t.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]) if t.is_floating_point() else t


def _assert_bit_exact(a: nn.Module, b: nn.Module, x):
    sa, sb = a.state_dict(), b.state_dict()
    assert sorted(sa) == sorted(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and sa[k].shape == sb[k].shape, k
        assert torch.equal(_bits(sa[k]), _bits(sb[k])), k
    with torch.no_grad():
        assert torch.equal(_bits(a(x)), _bits(b(x)))


def _prune_quantize(model: nn.Module, density: float = 0.02, levels: int = 8) -> nn.Module:
    """Sparsity-quantization stage 04's saved form: the largest |w| kept (``density``), snapped to ``levels``
    per-layer values (means of equal groups of the sorted survivors), exact zeros elsewhere."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                w = m.weight
                k = max(levels, int(round(density * w.numel())))
                keep = torch.zeros(w.numel(), dtype=torch.bool)
                keep[w.abs().reshape(-1).topk(k).indices] = True
                surv = w.reshape(-1)[keep]
                order = surv.argsort()
                q = torch.empty_like(surv)
                for group in order.tensor_split(levels):  # sorted survivors in equal groups, each -> its mean
                    q[group] = surv[group].mean()
                flat = torch.zeros(w.numel())
                flat[keep] = q
                w.copy_(flat.reshape(w.shape))
    return model


# ----------------------------------------------------------------------------- bit-level codecs
@pytest.mark.parametrize("bits", [1, 2, 3, 7, 8, 13, 32])
def test_pack_uint_round_trip_and_size(bits):
    v = np.random.default_rng(bits).integers(0, 2**bits, size=1001, dtype=np.uint64)
    data = bitpack.pack_uint(v, bits)
    assert len(data) == (1001 * bits + 7) // 8
    assert np.array_equal(bitpack.unpack_uint(data, bits, 1001), v.astype(np.int64))
    with pytest.raises(ValueError, match="does not fit in"):
        bitpack.pack_uint(np.array([2**bits]), bits)


def test_relative_index_with_fillers():
    """Gaps 0, 7 (= E at p = 3: one filler, then 0) and 20 (two fillers, then 6) at p = 3 (E = 2^3 - 1 = 7)."""
    pos = np.array([0, 8, 29])
    e = bitpack.relative_encode(pos, 3)
    assert e.tolist() == [0, 7, 0, 7, 7, 6]
    assert bitpack.relative_entries(bitpack.gaps(pos), 3) == 6
    assert bitpack.relative_decode(e, 3).tolist() == pos.tolist()
    pos = np.sort(np.random.default_rng(0).choice(50_000, 400, replace=False))
    for p in (1, 2, 5, 9, 16):
        assert np.array_equal(bitpack.relative_decode(bitpack.relative_encode(pos, p), p), pos)


@pytest.mark.parametrize("levels,group,bits", [(3, 5, 8), (5, 3, 7), (6, 5, 13), (255, 1, 8)])
def test_radix_codes_round_trip(levels, group, bits):
    assert bitpack.radix_group(levels) == (group, bits)
    c = np.random.default_rng(levels).integers(0, levels, size=1003)
    data = bitpack.pack_radix(c, levels, group, bits)
    assert len(data) == (-(-1003 // group) * bits + 7) // 8
    assert np.array_equal(bitpack.unpack_radix(data, levels, group, bits, 1003), c)


def test_dense_ternary_layer_packs_five_trits_per_byte():
    """80 % non-zero ternary: mask + sign would be 1.8 bits/weight, 2-bit codes 2.0; base-3 digits give 1.6."""
    torch.manual_seed(0)
    m = _net("lenet5")
    with torch.no_grad():
        w = m.classifier[1].weight  # 120 x 400
        w.copy_(
            torch.tensor([-0.07, 0.0, 0.05])[
                torch.multinomial(torch.tensor([0.4, 0.2, 0.4]), w.numel(), replacement=True)
            ].reshape(w.shape)
        )
    rep = packed_size_report(m, "lenet5", zstd_level=None).set_index("tensor").loc["classifier.1.weight"]
    assert rep.levels == 3 and rep.bits_per_code == pytest.approx(1.6) and rep["index"] == "none"
    assert rep.bytes == 3 * 4 + 48_000 // 5
    _assert_bit_exact(m, unpack(pack(m, "lenet5")), X32)


# ----------------------------------------------------------------------------- round trips and sizes
def test_dense_fp32_is_four_bytes_per_parameter_and_bit_exact():
    m = _net("lenet5_caffe")
    data = pack(m, "lenet5_caffe")
    n = sum(t.numel() for t in m.state_dict().values())
    assert n == 431_080
    assert 4 * n < len(data) < 4 * n + 4096  # raw fp32 + header (magic, JSON, sha256)
    _assert_bit_exact(m, unpack(data), X28)
    assert pack(m, "lenet5_caffe") == data  # deterministic bytes


@pytest.mark.parametrize("density,levels,max_ratio", [(0.02, 8, 1.10), (0.002, 4, 1.20)])
def test_pruned_codebook_net_bit_exact_and_within_accounting(density, levels, max_ratio):
    """98 % zeros with 3-bit codes, and 99.8 % zeros with 2-bit codes (~1300x on the weights, as stage 04's
    largest target): the file is within ``max_ratio`` (< 1.25) of the leaderboard's with-index bits + fp32 biases."""
    from compresslib.leaderboard import model_costs

    m = _prune_quantize(_net("lenet5_caffe"), density, levels)
    data = pack(m, {"model": "lenet5_caffe", "kwargs": {}, "checkpoint": "ignored.pt"})
    back = unpack(data)
    _assert_bit_exact(m, back, X28)
    rep = packed_size_report(m, "lenet5_caffe").set_index("tensor")
    weights = rep.loc[[k for k in rep.index if k.endswith(".weight")]]
    coded = weights[weights.nonzeros > 2 * levels]  # (4 survivors of 4 values: raw fp32 is 1 byte smaller)
    assert len(coded) >= 3 and (coded.levels == levels).all() and (coded.bits_per_code == np.log2(levels)).all()
    assert (weights.index != "none").all()
    assert rep.loc["TOTAL", "bytes"] == len(data)
    zeros = 1 - weights.nonzeros.sum() / weights.numel.sum()
    assert zeros == pytest.approx(1 - density, abs=2e-4)
    costs = model_costs(m, (1, 28, 28), latency_repeats=3)
    biases = sum(v.numel() for k, v in m.state_dict().items() if k.endswith(".bias"))
    accounted = costs["size_bits_with_index"] / 8 + 4 * biases
    assert 1.0 < len(data) / accounted < max_ratio, (len(data), accounted)


def test_ternary_ec2t_net_costs_at_most_two_bits_per_weight():
    from compresslib.methods.ec2t import EC2T

    e = EC2T(_net("lenet5"), "ec2t", gamma=0.2, pattern="")
    e.update()
    m = e.finalize().eval()
    data = pack(m, "lenet5")
    _assert_bit_exact(m, unpack(data), X32)
    rep = packed_size_report(m, "lenet5", zstd_level=None).set_index("tensor")
    w = rep.loc[[k for k in rep.index if k.endswith(".weight")]]
    assert (w.levels <= 3).all()
    bits_per_weight = 8 * (w.bytes - w.codebook_bytes).sum() / w.numel.sum()
    assert 1.0 < bits_per_weight <= 2.0, bits_per_weight


def test_slimmed_ecc_lenet_packs_its_physically_smaller_tensors():
    spec = {"model": "lenet5", "kwargs": {"widths": [3, 9, 50, 30]}}
    m = _net("lenet5", widths=(3, 9, 50, 30))
    data = pack(m, spec)
    n = sum(t.numel() for t in m.state_dict().values())
    assert n < 61_706 / 3  # the full 6-16-120-84 LeNet-5 has 61,706 parameters
    assert 4 * n < len(data) < 4 * n + 4096
    _assert_bit_exact(m, unpack(data), X32)


def test_float16_form_halves_dense_tensors():
    m = _net("lenet5")
    d16, d32 = pack(m, "lenet5", dtype="float16"), pack(m, "lenet5")
    n = sum(t.numel() for t in m.state_dict().values())
    assert 2 * n < len(d16) < 2 * n + 4096 and len(d32) > 4 * n
    with torch.no_grad():
        torch.testing.assert_close(unpack(d16)(X32), m(X32), atol=2e-3, rtol=2e-3)
    with pytest.raises(ValueError, match="dtype must be one of"):
        pack(m, "lenet5", dtype="int8")


def test_negative_zeros_of_mask_pruning_are_stored_as_zeros():
    """w.mul_(mask) leaves -0.0 at pruned negative weights: they cost nothing and come back as +0.0."""
    m = _prune_quantize(_net("lenet5_caffe"))
    size = len(pack(m, "lenet5_caffe"))
    with torch.no_grad():
        for layer in (m.features[0], m.classifier[1]):
            layer.weight.copy_(torch.where(layer.weight == 0, torch.full_like(layer.weight, -0.0), layer.weight))
    neg = int(torch.signbit(m.classifier[1].weight[m.classifier[1].weight == 0]).sum())
    assert neg > 100_000  # the dense layer's pruned positions are -0.0 now
    back = unpack(pack(m, "lenet5_caffe"))
    assert len(pack(m, "lenet5_caffe")) == size
    w = back.classifier[1].weight
    assert not torch.signbit(w[w == 0]).any() and torch.equal(w, m.classifier[1].weight)  # equal as numbers
    with torch.no_grad():
        assert torch.equal(m(X28), back(X28))


def test_weight_bits_force_the_code_width():
    m = _prune_quantize(_net("lenet5_caffe"))
    data = pack(m, "lenet5_caffe", weight_bits={"features.0": 4, "classifier.3": None})
    rep = packed_size_report(
        m, "lenet5_caffe", weight_bits={"features.0": 4, "classifier.3": None}, zstd_level=None
    ).set_index("tensor")
    assert rep.loc["features.0.weight", "bits_per_code"] == 4
    assert "raw float32" in rep.loc["classifier.3.weight", "form"]
    _assert_bit_exact(m, unpack(data), X28)
    with pytest.raises(ValueError, match=r"8 distinct non-zero values need 3 bits, weight_bits allots 2"):
        pack(m, "lenet5_caffe", weight_bits={"features.0": 2})
    with pytest.raises(ValueError, match=r"weight_bits names 'conv9'"):
        pack(m, "lenet5_caffe", weight_bits={"conv9": 3})
    with pytest.raises(ValueError, match=r"weight_bits\['features.0'\] must be an integer in \[1, 32\]"):
        pack(m, "lenet5_caffe", weight_bits={"features.0": 0})


@pytest.mark.parametrize("forced", ["auto", None, 2])
def test_a_layer_pruned_away_costs_no_value_bytes(forced):
    m = _prune_quantize(_net("lenet5_caffe"))
    with torch.no_grad():
        m.classifier[3].weight.zero_()
    wb = None if forced == "auto" else {"classifier.3": forced}
    rep = packed_size_report(m, "lenet5_caffe", weight_bits=wb, zstd_level=None).set_index("tensor")
    assert rep.loc["classifier.3.weight", "nonzeros"] == 0 and rep.loc["classifier.3.weight", "bytes"] == 0
    _assert_bit_exact(m, unpack(pack(m, "lenet5_caffe", weight_bits=wb)), X28)


def test_wrong_spec_is_refused_before_packing():
    with pytest.raises(ValueError, match="does not rebuild this model"):
        pack(_net("lenet5_caffe"), "lenet5")
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        pack(_net("lenet5_caffe"), "nope")
    with pytest.raises(ValueError, match="spec must be a registry model name"):
        pack(_net("lenet5_caffe"), {"kwargs": {}})


def test_save_and_load_write_atomically(tmp_path):
    from compresslib.deploy import load, save

    m = _prune_quantize(_net("lenet5_caffe"))
    path = save(m, "lenet5_caffe", tmp_path / "sub" / "sq.clpack")
    assert [p.name for p in path.parent.iterdir()] == ["sq.clpack"]
    assert path.stat().st_size == len(pack(m, "lenet5_caffe"))
    _assert_bit_exact(m, load(path), X28)


def test_unpack_leaves_the_global_rng_alone():
    data = pack(_net("lenet5"), "lenet5")
    torch.manual_seed(5)
    unpack(data)
    a = torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(a, torch.rand(3))


# ----------------------------------------------------------------------------- malformed files
@pytest.fixture(scope="module")
def packed():
    return pack(_prune_quantize(_net("lenet5_caffe")), "lenet5_caffe")


def test_truncated_file(packed):
    with pytest.raises(
        ValueError, match=rf"truncated: the header announces {len(packed)} bytes, got {len(packed) - 1}"
    ):
        unpack(packed[:-1])
    with pytest.raises(ValueError, match="truncated: 10 bytes, a packed model has at least 54"):
        unpack(packed[:10])
    with pytest.raises(ValueError, match="3 trailing bytes"):
        unpack(packed + b"abc")


@pytest.mark.parametrize("where", [30, -2000, -40])  # header JSON, payload, last payload bytes
def test_bit_flip_fails_the_checksum(packed, where):
    bad = bytearray(packed)
    bad[where] ^= 0x10
    with pytest.raises(ValueError, match="checksum mismatch: the file is corrupted"):
        unpack(bytes(bad))


def test_bad_magic_and_unknown_version(packed):
    with pytest.raises(ValueError, match=r"not a compresslib packed model: bad magic b'PK"):
        unpack(b"PK\x03\x04" + packed[4:])
    newer = bytearray(packed)
    newer[8:10] = (2).to_bytes(2, "little")
    with pytest.raises(ValueError, match="unsupported packed model format version 2 .this compresslib reads 1"):
        unpack(bytes(newer))
    with pytest.raises(TypeError, match="packed model must be bytes, got str"):
        unpack("CLPACK")


@pytest.mark.parametrize(
    "field,value,message",
    [
        (
            "shape",
            [20, 1, 5, 4],
            r"the stored tensors do not fit 'lenet5_caffe' \(file vs model shape/dtype: "
            r"\['features.0.weight \(20, 1, 5, 4\) float32 vs \(20, 1, 5, 5\) float32'\]\)",
        ),
        ("dtype", "float64", r"the stored tensors do not fit .*\['features.0.weight \(20, 1, 5, 5\) float64 vs"),
        ("values", {"kind": "codebook", "levels": 8, "bits": 4}, r"10 codes of 4 bits need 5 bytes, the section has 4"),
        ("model", "lenet5", r"the stored tensors do not fit 'lenet5' \(keys only in the file: \['features.2.bias'"),
        ("sections", {"index": [10**9, 4]}, r"section 'index' \[1000000000, \+4\) lies outside the \d+-byte payload"),
    ],
)
def test_consistent_checksum_but_inconsistent_header_is_refused(field, value, message):
    """A file whose checksum is right but whose header lies (a buggy writer): still a ValueError, no model."""
    from compresslib.deploy import container

    m = _prune_quantize(_net("lenet5_caffe"))
    header, encoded = container.encode_model(m)
    header = {**header, **container.check_spec("lenet5_caffe")}
    payload = container._layout(header, encoded)
    rec = header["tensors"][0] if field != "model" else header
    rec[field] = dict(rec[field], **value) if field in ("sections", "values") else value
    data = container._seal(header, payload)
    with pytest.raises(ValueError, match="packed model cannot be rebuilt: ValueError: " + message):
        unpack(data)


# ----------------------------------------------------------------------------- CAMP (fake-quantized layers)
def _camp_row(kind, bits, static_plan=None):
    """A stage-08 models.json row (the keys the deploy builder reads; others are ignored)."""
    return {
        "model": "compresslib.methods.camp.CampResNet",
        "checkpoint": "x.pt",
        "accuracy": 0.9,
        "kind": kind,
        "kwargs": {"depth": 8, "widths": [4, 8, 8], "num_classes": 10, "in_channels": 1, "bits": bits},
        "static_plan": static_plan,
    }


def _camp(kind, bits, static_plan=None):
    from compresslib.deploy.container import BUILDERS

    torch.manual_seed(3)
    row = _camp_row(kind, bits, static_plan)
    net = BUILDERS[row["model"]](row["kwargs"], {"kind": kind, "static_plan": static_plan})
    with torch.no_grad():  # trained-looking BatchNorms (fresh ones are the identity)
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2), m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5), m.bias.uniform_(-0.3, 0.3)
    return net.eval(), row


@pytest.mark.parametrize(
    "kind,bits,plan",
    [("uniform", 4, None), ("dual", 1, None), ("static", 1, [1, 0, 1]), ("static", 1, ["0", "1", "1"])],
)  # models.json rows hold strings
def test_camp_packs_the_weights_it_executes(kind, bits, plan):
    from compresslib.deploy.container import never_run
    from compresslib.quant import quantize_weight

    net, row = _camp(kind, bits, plan)
    x = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(4))
    data = pack(net, row)
    back = unpack(data)
    with torch.no_grad():
        assert torch.equal(_bits(net(x)), _bits(back(x)))
    rep = packed_size_report(net, row, zstd_level=None).set_index("tensor")
    skipped = never_run(net)  # a static plan's path not taken and its gates: not stored
    assert bool(skipped) == (kind == "static") and not skipped & set(rep.index)
    for name, m in net.named_modules():
        if getattr(m, "w_bits", 32) < 32 and f"{name}.weight" not in skipped:  # stored as Q_w(W), <= 2^w_bits levels
            r = rep.loc[f"{name}.weight"]
            assert r.bytes <= -(-r.numel * m.w_bits // 8) + 4 * 2**m.w_bits, name  # never above the codebook
            if r.numel >= 64:
                assert r.levels <= 2**m.w_bits and r.bits_per_code <= m.w_bits, name
            assert torch.equal(dict(back.named_modules())[name].weight, quantize_weight(m.weight, m.w_bits).detach())
    if kind == "dual":  # one latent weight, two executed ones: 1-bit and 4-bit
        b0 = back.blocks[0]
        assert b0.path1.conv1.weight.unique().numel() == 2 and b0.path4.conv1.weight.unique().numel() > 2
        assert b0.path1.conv1.weight is not b0.path4.conv1.weight


def test_camp_row_without_its_kind_does_not_rebuild():
    net, row = _camp("dual", 1)
    with pytest.raises(ValueError, match="quantized layer 'blocks.0.path1.conv1' does not exist in the rebuilt"):
        pack(net, dict(row, kind="uniform"))
    with pytest.raises(ValueError, match="CAMP kind must be 'uniform', 'dual' or 'static', got 'triple'"):
        pack(net, dict(row, kind="triple"))
    with pytest.raises(ValueError, match=r"CAMP kwargs miss \['depth'\]"):
        pack(net, dict(row, kwargs={k: v for k, v in row["kwargs"].items() if k != "depth"}))


# ----------------------------------------------------------------------------- ONNX Runtime
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_onnx_runtime_agrees_with_torch_on_the_unpacked_models(tmp_path):
    from compresslib.deploy import export_onnx, ort_latency_ms, ort_logits

    x = torch.randn(32, 1, 28, 28, generator=torch.Generator().manual_seed(7))
    m = unpack(pack(_prune_quantize(_net("lenet5_caffe")), "lenet5_caffe"))
    path = export_onnx(m, (1, 28, 28), tmp_path / "sq.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sq.onnx"]  # no temporary file left behind
    with torch.no_grad():
        ref = m(x).numpy()
    y = ort_logits(path, x)
    assert y.shape == (32, 10) and np.abs(y - ref).max() < 1e-4
    assert (y.argmax(1) == ref.argmax(1)).all()
    lat = ort_latency_ms(path, batch=4, threads=1, repeats=5, warmup=1)
    assert lat["batch"] == 4 and lat["threads"] == 1 and lat["repeats"] == 5 and 0 < lat["median_ms"] < 1000
    xc = torch.rand(16, 1, 16, 16, generator=torch.Generator().manual_seed(8))
    for kind, plan in (("dual", None), ("static", [1, 0, 1])):  # gate + 1-/4-bit paths; a fixed plan
        net, row = _camp(kind, 1, plan)
        back = unpack(pack(net, row))  # the executed weights from the packed file
        with torch.no_grad():
            refc = back(xc).numpy()
        yc = ort_logits(export_onnx(back, (1, 16, 16), tmp_path / f"camp_{kind}.onnx"), xc)
        assert np.abs(yc - refc).max() < 1e-4 and (yc.argmax(1) == refc.argmax(1)).all(), kind


def test_onnx_runtime_bad_inputs(tmp_path):
    from compresslib.deploy import export_onnx, ort_latency_ms

    with pytest.raises(FileNotFoundError, match="ONNX file not found"):
        ort_latency_ms(tmp_path / "missing.onnx")
    with pytest.raises(ValueError, match=r"batch must be an integer in \[1, inf\), got 0"):
        ort_latency_ms(tmp_path / "missing.onnx", batch=0)
    with pytest.raises(ValueError, match=r"input_size entry must be an integer in \[1, inf\), got 0"):
        export_onnx(_net("lenet5"), (1, 0, 32), tmp_path / "x.onnx")


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_deploy_row_and_argmax_agreement(tmp_path):
    from compresslib.deploy import deploy_row, export_onnx, ort_argmax_agreement

    spec = {"model": "lenet5", "kwargs": {"widths": [3, 9, 50, 30]}}
    m = _net("lenet5", widths=(3, 9, 50, 30))
    row = deploy_row(m, spec, (1, 32, 32), repeats=3)
    assert row["bytes_on_disk"] == len(pack(m, spec)) and row["bytes_on_disk_zstd"] < row["bytes_on_disk"]
    assert row["roundtrip_bit_exact"] is True and row["threads"] == 1
    assert all(0 < row[k] < 1000 for k in ("torch_ms_b1", "ort_ms_b1", "ort_ms_b64"))
    path = export_onnx(m, (1, 32, 32), tmp_path / "m.onnx")
    batches = [(X32, torch.zeros(4)), X32[:2]]
    assert ort_argmax_agreement(m, path, batches) == 1.0
    other = _net("lenet5", seed=9, widths=(3, 9, 50, 30))  # another net: agreement is measured, not assumed
    assert ort_argmax_agreement(other, path, [torch.randn(64, 1, 32, 32)]) < 1.0
    with pytest.raises(ValueError, match="no inputs"):
        ort_argmax_agreement(m, path, [])


def test_sparse_linear_latency_reports_both_kernels():
    from compresslib.deploy import sparse_linear_latency

    lin = _prune_quantize(_net("lenet5_caffe")).classifier[1]  # 500 x 800, 2 % non-zero
    r = sparse_linear_latency(lin, batch=8, repeats=3, warmup=1)
    assert r["density"] == pytest.approx(0.02, abs=1e-4) and 0 <= r["max_abs_diff"] < 1e-5
    assert r["dense_ms"] > 0 and r["csr_ms"] > 0 and r["speedup"] == pytest.approx(r["dense_ms"] / r["csr_ms"])
    assert (r["batch"], r["threads"], r["repeats"]) == (8, 1, 3)
    with pytest.raises(TypeError, match="linear must be a torch.nn.Linear, got Conv2d"):
        sparse_linear_latency(nn.Conv2d(1, 1, 3))


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_int8_qdq_export_runs_and_stays_close(tmp_path):
    import onnx

    from compresslib.deploy import export_int8, export_onnx, ort_logits

    m = _prune_quantize(_net("lenet5_caffe"))
    fp = export_onnx(m, (1, 28, 28), tmp_path / "fp.onnx")
    cal = [torch.randn(16, 1, 28, 28, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    q = export_int8(fp, tmp_path / "int8.onnx", cal)
    ops = [n.op_type for n in onnx.load(str(q)).graph.node]
    assert ops.count("QuantizeLinear") >= 4 and ops.count("DequantizeLinear") >= 8
    assert q.stat().st_size < fp.stat().st_size / 3  # int8 weights (+ scales) instead of fp32
    x = torch.randn(32, 1, 28, 28, generator=torch.Generator().manual_seed(11))
    y, yq = ort_logits(fp, x), ort_logits(q, x)
    assert np.abs(y - yq).max() < 0.05 * np.abs(y).max() and (y.argmax(1) == yq.argmax(1)).mean() >= 0.9
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fp.onnx", "int8.onnx"]
    with pytest.raises(ValueError, match="calibration holds no batch"):
        export_int8(fp, tmp_path / "x.onnx", [])


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_int8_of_a_one_bit_net_does_not_saturate(tmp_path):
    """Every weight at ±127: onnxruntime's AVX2 u8s8 kernels saturate their int16 pair sums unless the weights
    keep 7 bits (export_int8's default without VNNI)."""
    from compresslib.deploy import export_int8, export_onnx, ort_logits
    from compresslib.deploy.runtime import cpu_has_vnni

    m = _net("lenet5_caffe")
    with torch.no_grad():
        for layer in (m.features[0], m.features[2], m.classifier[1], m.classifier[3]):
            layer.weight.copy_(torch.sign(layer.weight) * layer.weight.abs().mean())
    fp = export_onnx(m, (1, 28, 28), tmp_path / "fp.onnx")
    cal = [torch.rand(32, 1, 28, 28, generator=torch.Generator().manual_seed(i)) * 3 for i in range(2)]
    x = torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(7)) * 3
    y = ort_logits(fp, x)
    agree = {}
    for rr in (None, False):
        q = export_int8(fp, tmp_path / f"q{rr}.onnx", cal, reduce_range=rr)
        agree[rr] = (ort_logits(q, x).argmax(1) == y.argmax(1)).mean()
    assert agree[None] >= 0.9, agree
    if not cpu_has_vnni():  # here (AVX2, no VNNI): 0.969 with 7-bit weights, 0.203 with 8-bit ones
        assert agree[False] < agree[None] - 0.3, agree


def test_a_static_plan_stores_only_the_path_it_runs():
    net, row = _camp("static", 1, [1, 0, 1])
    dual, _ = _camp("dual", 1)
    x = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(5))
    back = unpack(pack(net, row))
    with torch.no_grad():
        assert torch.equal(_bits(net(x)), _bits(back(x)))
    assert len(pack(net, row)) < 0.7 * len(pack(dual, _camp_row("dual", 1)))
    names = {r for r in packed_size_report(net, row, zstd_level=None).tensor}
    assert "blocks.0.path4.conv1.weight" in names and "blocks.0.path1.conv1.weight" not in names
    assert not any(".gate." in n for n in names)
