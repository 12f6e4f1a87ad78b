"""Bilinear energy estimator: features, ridge/SGD recovery, gradient, save/load, accuracy on LeNet-5."""

import json

import pytest
import torch

from compresslib.energy import bilinear as B
from compresslib.energy.analytic import AnalyticDevice
from compresslib.energy.profile import sample_widths

S = [1, 6, 16, 120, 84, 10]


def _synthetic(n=300, seed=0):
    W = torch.tensor(sample_widths(S, n, seed), dtype=torch.float64)
    a = torch.tensor([0.3, 1.2, 2.0, 0.7, 0.1], dtype=torch.float64)
    y = 0.05 + B.features(W, S) @ a
    return W, y, a


def test_dense_prediction_is_bias_plus_sum_of_coefficients():
    m = B.EnergyModel(S=S, coef=[1.0, 2.0, 3.0, 4.0, 5.0], bias=0.5, scale=2.0)
    assert float(B.predict(m, S)) == pytest.approx(2.0 * (0.5 + 15.0))
    assert m.a == [2.0, 4.0, 6.0, 8.0, 10.0]


@pytest.mark.parametrize("method", ["ridge", "sgd"])
def test_fit_recovers_noise_free_bilinear_coefficients(method):
    W, y, a = _synthetic()
    m = B.fit(W, y, S, method=method, wd=1e-6, epochs=6000, lr=1e-2, scale=1.0)
    tol = 1e-4 if method == "ridge" else 2e-2
    assert torch.allclose(torch.tensor(m.coef, dtype=torch.float64), a, atol=tol)
    assert m.bias == pytest.approx(0.05, abs=tol)


def test_gradient_matches_autograd_and_ends_are_zero():
    W, y, _ = _synthetic()
    for kind in B.KINDS:
        m = B.fit(W, y, S, kind=kind, scale=3.0)
        s = torch.tensor([1.0, 4.0, 9.5, 70.0, 33.0, 10.0], dtype=torch.float64, requires_grad=True)
        B.predict(m, s).sum().backward()
        g = B.gradient(m, s.detach())[0]
        assert g[0] == 0 and g[-1] == 0
        assert torch.allclose(g[1:-1], s.grad[1:-1])


def test_save_load_roundtrip_and_mismatch_errors(tmp_path):
    W, y, _ = _synthetic()
    m = B.fit(W, y, S, net="lenet5", device="analytic")
    p = B.save(m, tmp_path / "est.json")
    m2 = B.load(p, net="lenet5", S=S)
    assert torch.equal(B.predict(m, W), B.predict(m2, W))
    with pytest.raises(ValueError, match="network 'lenet5', not 'alexnet'"):
        B.load(p, net="alexnet")
    with pytest.raises(ValueError, match="dense widths"):
        B.load(p, S=[1, 6, 16, 100, 84, 10])
    (tmp_path / "bad.json").write_text(json.dumps({"coef": [1]}))
    with pytest.raises(ValueError, match="not a compresslib bilinear"):
        B.load(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError, match="02_energy_estimator"):
        B.load(tmp_path / "none.json")


def test_bad_inputs():
    with pytest.raises(ValueError, match="unknown estimator kind"):
        B.features([S], S, "quadratic")
    with pytest.raises(ValueError, match="unknown fit method"):
        B.fit(*_synthetic()[:2], S, method="lbfgs")
    with pytest.raises(ValueError, match="entries"):
        B.features([[1, 2, 3]], S)


def test_bilinear_beats_linear_on_analytic_lenet5_energy():
    dev = AnalyticDevice("lenet5")
    W = sample_widths(dev.S, 400, seed=1)
    c = [dev.cost(w) for w in W]
    tr, va = B.split_indices(len(c))
    Wt, ct = torch.tensor(W, dtype=torch.float64), torch.tensor(c, dtype=torch.float64)
    err = {k: B.mre(ct[va], B.predict(B.fit(Wt[tr], ct[tr], dev.S, kind=k), Wt[va])) for k in B.KINDS}
    assert err["bilinear"] < 0.02 and err["linear"] > 5 * err["bilinear"]
