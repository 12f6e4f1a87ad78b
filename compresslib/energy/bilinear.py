"""Bilinear energy model of ECC (``energy_estimator.py``, spec §2).

    x_j = s_j / S_j,   Ê(s) = b + Σ_{j=0}^{L-1} a_j x_j x_{j+1}

One product per weight layer j (its MACs and weights scale with c_in * c_out). Fitted by
closed-form ridge, (XᵀX + 0.5·wd·I) w = XᵀY with X = [1, features] (bias regularised too, as in
the code's ``--pinv``), or by full-batch Adam on the MSE (the code's default). Ablations:
``kind="linear"`` (Ê = b + Σ_j c_j x_j over the hidden widths), ``kind="bilinear+linear"`` and a
small MLP (``fit_mlp``). Costs are divided by ``scale`` (the dense cost when known) before fitting
so the coefficients are O(1); ``predict`` returns the original units.
"""

from __future__ import annotations

import json
import math
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

KINDS = ("bilinear", "linear", "bilinear+linear")


@contextmanager
def _one_thread():
    """Tiny full-batch fits run fastest (and are not slowed by other jobs) on one thread."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _as_tensor(widths) -> torch.Tensor:
    t = torch.as_tensor(widths, dtype=torch.float64)
    return t.unsqueeze(0) if t.dim() == 1 else t


def features(widths, S, kind: str = "bilinear") -> torch.Tensor:
    """Feature matrix (N, F): bilinear products x_j x_{j+1} and/or hidden linear terms x_1..x_{L-1}."""
    if kind not in KINDS:
        raise ValueError(f"unknown estimator kind {kind!r}; valid: {', '.join(KINDS)}")
    s = _as_tensor(widths)
    S = torch.as_tensor(S, dtype=torch.float64)
    if s.shape[-1] != S.numel():
        raise ValueError(f"width vectors have {s.shape[-1]} entries, the estimator's S has {S.numel()}")
    x = s / S
    parts = []
    if kind in ("bilinear", "bilinear+linear"):
        parts.append(x[:, :-1] * x[:, 1:])
    if kind in ("linear", "bilinear+linear"):
        parts.append(x[:, 1:-1])
    return torch.cat(parts, dim=1)


@dataclass
class EnergyModel:
    """Fitted estimator: Ê(s) = scale * (b + coef · features(s)); plain numbers, JSON-serialisable."""

    S: list
    coef: list
    bias: float
    kind: str = "bilinear"
    scale: float = 1.0
    net: str = ""
    device: str = ""
    unit: str = ""
    method: str = "ridge"
    info: dict = field(default_factory=dict)

    @property
    def a(self) -> list:
        """Per-layer bilinear coefficients a_j (in cost units) for kind='bilinear'."""
        return [c * self.scale for c in self.coef[: len(self.S) - 1]]


def split_indices(n: int, train_fraction: float = 0.8, seed: int = 117) -> tuple[list, list]:
    """Shuffled 80/20 train/validation index split (seeded)."""
    if not 0 < train_fraction < 1 or n < 2:
        raise ValueError(f"need n >= 2 and 0 < train_fraction < 1, got n={n}, {train_fraction}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    k = max(1, min(n - 1, int(round(train_fraction * n))))
    return perm[:k], perm[k:]


def mre(y, y_hat) -> float:
    """Mean relative absolute error mean(|y - ŷ| / |y|) (the code's 'val_mre')."""
    y, y_hat = torch.as_tensor(y, dtype=torch.float64), torch.as_tensor(y_hat, dtype=torch.float64)
    return float(((y - y_hat).abs() / y.abs()).mean())


def fit(
    widths,
    cost,
    S,
    kind: str = "bilinear",
    method: str = "ridge",
    wd: float = 1e-3,
    epochs: int = 10000,
    lr: float = 1e-3,
    scale: float | None = None,
    **meta,
) -> EnergyModel:
    """Fit Ê on (widths, cost) by closed-form ridge or full-batch Adam (zero init, weight decay wd)."""
    X = features(widths, S, kind)
    y = torch.as_tensor(cost, dtype=torch.float64).reshape(-1)
    if X.shape[0] != y.numel() or y.numel() < 2:
        raise ValueError(f"need >= 2 (widths, cost) pairs of equal count, got {X.shape[0]} and {y.numel()}")
    if not torch.isfinite(y).all():
        raise ValueError("cost contains NaN/inf")
    scale = float(scale) if scale else float(y.abs().mean())
    y = y / scale
    X1 = torch.cat([torch.ones(X.shape[0], 1, dtype=torch.float64), X], dim=1)
    if method == "ridge":
        A = X1.T @ X1 + 0.5 * wd * torch.eye(X1.shape[1], dtype=torch.float64)
        w = torch.linalg.solve(A, X1.T @ y)
    elif method == "sgd":
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        w = torch.zeros(X1.shape[1], dtype=torch.float64, requires_grad=True)
        opt = torch.optim.Adam([w], lr=lr, weight_decay=wd)
        with _one_thread():
            for _ in range(epochs):
                opt.zero_grad()
                ((X1 @ w - y) ** 2).mean().backward()
                opt.step()
        w = w.detach()
    else:
        raise ValueError(f"unknown fit method {method!r}; valid: ridge, sgd")
    return EnergyModel(
        S=[int(v) for v in S], coef=w[1:].tolist(), bias=float(w[0]), kind=kind, scale=scale, method=method, **meta
    )


def predict(model: EnergyModel, widths) -> torch.Tensor:
    """Ê(s) in cost units, shape (N,) (float64)."""
    X = features(widths, model.S, model.kind)
    return model.scale * (model.bias + X @ torch.tensor(model.coef, dtype=torch.float64))


def gradient(model: EnergyModel, widths) -> torch.Tensor:
    """∂Ê/∂s (N, L+1): a_{j-1} x_{j-1}/S_j + a_j x_{j+1}/S_j; zero for s_0 and s_L (detached)."""
    s = _as_tensor(widths)
    S = torch.tensor(model.S, dtype=torch.float64)
    x = s / S
    L = S.numel() - 1
    coef = torch.tensor(model.coef, dtype=torch.float64) * model.scale
    g = torch.zeros_like(s)
    if model.kind in ("bilinear", "bilinear+linear"):
        a = coef[:L]
        g[:, 1:L] = (a[:-1] * x[:, : L - 1] + a[1:] * x[:, 2:]) / S[1:L]
    if model.kind in ("linear", "bilinear+linear"):
        c = coef[-(L - 1) :]
        g[:, 1:L] += c / S[1:L]
    return g


def save(model: EnergyModel, path) -> Path:
    """Write the estimator as JSON (plain numbers; no pickles)."""
    from ..results import write_json

    path = Path(path)
    write_json(path, {"format": "compresslib.bilinear/1", **asdict(model)})
    return path


def load(path, net: str | None = None, S=None) -> EnergyModel:
    """Read an estimator JSON; errors if it is for another network or width vector S."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"energy estimator {path} not found: run notebooks/02_energy_estimator first")
    try:
        d = json.loads(path.read_text())
        if d.pop("format", None) != "compresslib.bilinear/1":
            raise ValueError("missing format tag")
        model = EnergyModel(**d)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{path} is not a compresslib bilinear estimator ({e})") from None
    if net is not None and model.net != net:
        raise ValueError(f"estimator {path} was fitted for network {model.net!r}, not {net!r}")
    if S is not None and list(model.S) != [int(v) for v in S]:
        raise ValueError(f"estimator {path} has dense widths S={model.S}, the network has {list(S)}")
    if not all(math.isfinite(v) for v in model.coef + [model.bias, model.scale]):
        raise ValueError(f"estimator {path} has non-finite coefficients")
    return model


def fit_mlp(widths, cost, S, hidden: int = 64, epochs: int = 2000, lr: float = 3e-3, seed: int = 0):
    """Ablation: MLP [L -> hidden (SELU) -> 1] on the bilinear products; returns predict(widths)."""
    X = features(widths, S, "bilinear").float()
    y = torch.as_tensor(cost, dtype=torch.float32).reshape(-1, 1)
    scale = float(y.abs().mean())
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(X.shape[1], hidden), torch.nn.SELU(), torch.nn.Linear(hidden, 1))
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    with _one_thread():
        for _ in range(epochs):
            opt.zero_grad()
            ((net(X) - y / scale) ** 2).mean().backward()
            opt.step()
    net.eval()

    def predict_mlp(w):
        with torch.no_grad():
            return (net(features(w, S, "bilinear").float()).squeeze(1) * scale).double()

    return predict_mlp
