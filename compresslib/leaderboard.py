"""One table for every method: the same cost columns for every compressed model.

Every candidate (one trained model of one method, setting and seed) is reduced to the same
columns by :func:`model_costs`:

* ``dense_macs``: Conv2d/Linear MACs of the executed architecture (``cost.layer_table``);
* ``effective_macs``: Σ exec·MACs·density — non-zero weights only, and for dynamic models the
  expected executions per image (a cascade's escalation rate, CAMP's 4-bit fraction ρ);
* ``size_bits_weights``: Σ nnz·b (non-zero conv/linear weights at their bit-width b; no bias/BN);
* ``size_bits_with_index``: + the positions of the non-zeros, the cheaper of a 1-bit-per-weight
  bitmap and p-bit relative gaps (Deep Compression), per layer; dense layers pay nothing;
* ``bitops``: Σ exec·nnz_macs·b_w·b_a;
* ``energy_analytic``: the ECC analytic (Eyeriss-style) model ``energy.analytic.model_energy``,
  exec-weighted per layer (bit-width agnostic: it counts memory accesses and MACs);
* ``micronet_score``: ``micronet.score_model`` (official mode, ImageNet reference);
* ``latency_ms``: measured median of the deployable form, with ``latency_threads``/``latency_batch``
  and ``deploy_form`` (``slimmed`` = physically smaller; ``dense-executed`` = masks and fake
  quantization run on dense fp32 kernels, so the latency is the dense one).

``weight_bits`` of a loaded model is inferred from its values (:func:`infer_weight_bits`):
b = ⌈log2(#distinct non-zero values)⌉ when that count is ≤ 256 (codebook / ternary layers), else 32.

Stage collectors (``COLLECTORS``) read what the method stages leave in ``artifacts/``; add a
method by registering one (see README "How to add a method").
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from . import cost
from .registry import Registry

COST_COLUMNS = ["dense_macs", "effective_macs", "size_bits_weights", "size_bits_with_index", "bitops",
                "energy_analytic", "micronet_score", "latency_ms"]
KEYS = ["method", "setting"]
COLUMNS = KEYS + ["base_model", "dataset", "n_seeds", "accuracy", "accuracy_std"] + COST_COLUMNS + [
    "latency_threads", "latency_batch", "deploy_form", "source"]
COLLECTORS = Registry("leaderboard collector")


@dataclass
class Candidate:
    """One trained model of one (method, setting, seed); ``accuracy`` is a test fraction in [0, 1]."""
    method: str
    setting: str
    seed: int
    accuracy: float
    model: nn.Module
    input_size: tuple
    base_model: str
    dataset: str
    source: str
    weight_bits: object = "infer"      # "infer", None (fp32), int or {layer: bits}
    act_bits: object = 32              # int or {layer: bits}
    exec_weight: dict | None = None    # {layer: expected executions per image}, default 1
    deploy: nn.Module | None = None    # what runs for the latency (default: model)
    deploy_form: str = "dense-executed"
    extra_macs: float = 0.0            # MACs outside the model (e.g. a cropper), added to both MAC columns
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if not 0.0 <= float(self.accuracy) <= 1.0:
            raise ValueError(f"{self.method}/{self.setting}: accuracy must be a fraction in [0, 1], got {self.accuracy}")


def infer_weight_bits(model: nn.Module, max_levels: int = 256) -> dict:
    """{layer: b} with b = ⌈log2(#distinct non-zero weight values)⌉ (≥ 1) if ≤ ``max_levels`` values, else 32."""
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            w = m.weight.detach().reshape(-1)
            nz = w[w != 0]
            levels = torch.unique(nz).numel() if nz.numel() <= 10_000_000 else max_levels + 1
            out[name] = max(1, math.ceil(math.log2(levels))) if 0 < levels <= max_levels else 32
    return out


def index_bits(weight: torch.Tensor, max_gap_bits: int = 16) -> float:
    """Bits to store where the non-zeros of ``weight`` are: min(bitmap, p-bit relative gaps); 0 if dense.

    Relative gaps: each non-zero stores the number of zeros before it in p bits; a gap ≥ 2^p needs
    ⌊gap / 2^p⌋ filler entries (Han et al., Deep Compression §3).
    """
    flat = weight.detach().reshape(-1)
    pos = torch.nonzero(flat).reshape(-1)
    if pos.numel() == flat.numel():
        return 0.0
    if pos.numel() == 0:
        return 0.0
    gaps = torch.diff(pos, prepend=torch.tensor([-1])) - 1
    best = float(flat.numel())  # bitmap
    for p in range(1, max_gap_bits + 1):
        fillers = int(torch.div(gaps, 2 ** p, rounding_mode="floor").sum())
        best = min(best, float((pos.numel() + fillers) * p))
    return best


def _layer_bits(spec, name: str, default: int = 32) -> int:
    if spec is None:
        return default
    if isinstance(spec, dict):
        return int(spec.get(name, default))
    return int(spec)


def model_costs(model: nn.Module, input_size, weight_bits="infer", act_bits=32, exec_weight: dict | None = None,
                deploy: nn.Module | None = None, latency_threads: int = 1, latency_batch: int = 1,
                latency_repeats: int = 20, extra_macs: float = 0.0) -> dict:
    """Every cost column of the board for one model (see the module docstring for definitions)."""
    from .energy.analytic import energy_table
    from .micronet import score_model

    model = model.eval()
    if weight_bits == "infer":
        weight_bits = infer_weight_bits(model)
    t = cost.layer_table(model, tuple(input_size), weight_bits=weight_bits)
    exec_w = np.array([float((exec_weight or {}).get(n, 1.0)) for n in t.layer])
    a_bits = np.array([_layer_bits(act_bits, n) for n in t.layer], dtype=float)
    modules = dict(model.named_modules())
    idx = sum(index_bits(modules[n].weight) for n in dict.fromkeys(t.layer))
    nnz_bits = sum(float((modules[n].weight != 0).sum()) * _layer_bits(weight_bits, n) for n in dict.fromkeys(t.layer))
    try:
        e_rows = {r["layer"]: r["total"] for r in energy_table(model, tuple(input_size))}
        energy = float(sum(e_rows.get(n, 0.0) * w for n, w in zip(t.layer, exec_w)))
    except Exception as e:  # architectures the geometry tracer does not support: NaN, said aloud
        warnings.warn(f"analytic energy unavailable for {type(model).__name__}: {type(e).__name__}: {e}")
        energy = float("nan")
    try:
        score = float(score_model(model, tuple(input_size), weight_bits=weight_bits, verbose=False)["score"])
    except Exception as e:  # not fx-traceable (data-dependent control flow): NaN, said aloud
        warnings.warn(f"MicroNet score unavailable for {type(model).__name__}: {type(e).__name__}: {e}")
        score = float("nan")
    lat = cost.measure_latency((deploy or model).eval(), tuple(input_size), threads=latency_threads,
                               batch=latency_batch, repeats=latency_repeats, warmup=3)
    return {"dense_macs": float(t.macs.sum()) + extra_macs,
            "effective_macs": float((exec_w * t.nnz_macs).sum()) + extra_macs,
            "size_bits_weights": nnz_bits, "size_bits_with_index": nnz_bits + idx,
            "bitops": float((exec_w * t.nnz_macs * t.weight_bits * a_bits).sum()),
            "energy_analytic": energy, "micronet_score": score, "latency_ms": float(lat["median_ms"]),
            "latency_threads": int(lat["threads"]), "latency_batch": int(lat["batch"])}


def candidate_row(c: Candidate, latency_threads: int = 1, latency_repeats: int = 20) -> dict:
    """A candidate's per-seed row: identity, accuracy and every cost column."""
    costs = model_costs(c.model, c.input_size, c.weight_bits, c.act_bits, c.exec_weight, c.deploy,
                        latency_threads=latency_threads, latency_repeats=latency_repeats, extra_macs=c.extra_macs)
    return {"method": c.method, "setting": c.setting, "seed": int(c.seed), "accuracy": float(c.accuracy),
            "base_model": c.base_model, "dataset": c.dataset, **costs, "deploy_form": c.deploy_form,
            "source": c.source, **c.extra}


def aggregate(rows) -> pd.DataFrame:
    """One row per (method, setting): accuracy mean ± sample std over seeds, cost columns averaged."""
    df = pd.DataFrame(list(rows))
    if df.empty:
        raise ValueError("no candidate rows to aggregate")
    missing = set(KEYS + ["seed", "accuracy"] + COST_COLUMNS) - set(df.columns)
    if missing:
        raise ValueError(f"rows miss columns {sorted(missing)}")
    g = df.groupby(KEYS, sort=False)
    out = g[COST_COLUMNS].mean()
    out["accuracy"] = g["accuracy"].mean()
    out["accuracy_std"] = g["accuracy"].std(ddof=1).fillna(0.0)
    out["n_seeds"] = g["seed"].nunique()
    for col in ("base_model", "dataset", "latency_threads", "latency_batch", "deploy_form", "source"):
        out[col] = g[col].first() if col in df else ""
    return out.reset_index()[COLUMNS]


def pareto_mask(df: pd.DataFrame, x: str, y: str = "accuracy") -> pd.Series:
    """True for rows on the (lower ``x``, higher ``y``) Pareto front (``viz.pareto_front``)."""
    from .viz import pareto_front

    return df.index.isin(pareto_front(df, x, y).index)


def within_budget(df: pd.DataFrame, axis: str, budget: float) -> pd.DataFrame:
    """Rows whose ``axis`` cost is ≤ ``budget``, best accuracy first (the explorer's query)."""
    if axis not in COST_COLUMNS:
        raise ValueError(f"axis must be one of {COST_COLUMNS}, got {axis!r}")
    return df[df[axis] <= budget].sort_values("accuracy", ascending=False)


def format_table(df: pd.DataFrame) -> pd.DataFrame:
    """Human-readable copy: accuracy as 'mean ± std' %, MACs in M, sizes in kbit, energy in units of 1e6."""
    out = pd.DataFrame({"method": df.method, "setting": df.setting, "model": df.base_model, "data": df.dataset,
                        "seeds": df.n_seeds,
                        "accuracy (%)": [f"{100 * m:.2f} ± {100 * s:.2f}" for m, s in zip(df.accuracy, df.accuracy_std)],
                        "dense MMACs": (df.dense_macs / 1e6).round(3), "eff. MMACs": (df.effective_macs / 1e6).round(3),
                        "kbit (weights)": (df.size_bits_weights / 1e3).round(1),
                        "kbit (+index)": (df.size_bits_with_index / 1e3).round(1),
                        "Gbit-ops": (df.bitops / 1e9).round(3), "energy (1e6)": (df.energy_analytic / 1e6).round(3),
                        "MicroNet score": df.micronet_score.map(lambda v: f"{v:.2e}"),
                        "latency ms": df.latency_ms.round(3),
                        "threads/batch": [f"{t}/{b}" for t, b in zip(df.latency_threads, df.latency_batch)],
                        "deploy": df.deploy_form})
    return out


def markdown_table(df: pd.DataFrame) -> str:
    """A GitHub-markdown table of :func:`format_table` (what the README embeds)."""
    f = format_table(df)
    lines = ["| " + " | ".join(f.columns) + " |", "|" + "---|" * len(f.columns)]
    lines += ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |" for row in f.itertuples(index=False)]
    return "\n".join(lines)



# ---------------------------------------------------------------- stage collectors (artifacts/ -> candidates)
def stage_params(art, stage: str) -> dict:
    """Parameters a stage last ran with: the notebook's defaults, overridden by ``.reproduce.json``."""
    from pathlib import Path

    from .reproduce import REPO, notebook_parameters
    from .results import read_json

    src = REPO / "notebooks" / f"{stage}.py"
    params = notebook_parameters(src) if src.exists() else {}
    stamp = Path(art) / stage / ".reproduce.json"
    if stamp.exists():
        params.update(read_json(stamp).get("params", {}))
    return params


def _finished(art, stage: str) -> bool:
    """A stage is read only once it finished (its metrics.json exists): a half-run stage is skipped."""
    from pathlib import Path

    return (Path(art) / stage / "metrics.json").exists()


def _current(csv_path, cols) -> set | None:
    """Keys (tuples of ``cols``, accuracy rounded) of the rows of a stage's last-run table, or None if absent.
    Used to skip models that older runs with other parameters left in the same folder."""
    from pathlib import Path

    if not Path(csv_path).exists():
        return None
    df = pd.read_csv(csv_path)
    return {_key(r, cols) for r in df.to_dict("records")}


def _key(rec: dict, cols) -> tuple:
    out = []
    for c in cols:
        v = rec.get(c)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            out.append(None)
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out.append(round(float(v), 5))
        else:
            out.append(str(v))
    return tuple(out)


def _csv_list(v) -> list:
    import ast

    v = ast.literal_eval(v) if isinstance(v, str) and v.strip()[:1] in "[(" else v
    return list(v) if isinstance(v, (list, tuple)) else [float(t) for t in str(v).split(",") if t.strip()]


@COLLECTORS.register("ECC", stage="03_ecc_admm")
def collect_ecc(art) -> list[Candidate]:
    """03: ECC and uniform-width LeNet-5s; rebuilt slimmed from ``results.csv`` widths (cost depends only on them)."""
    from pathlib import Path

    from .models import create_model

    path = Path(art) / "03_ecc_admm" / "results.csv"
    if not (path.exists() and _finished(art, "03_ecc_admm")):
        return []
    p = stage_params(art, "03_ecc_admm")
    out = []
    for r in pd.read_csv(path).itertuples():
        widths = [int(v) for v in _csv_list(r.widths)]  # (image channels, hidden widths..., classes)
        size = int(p.get("IMAGE_SIZE", 32))
        net = create_model(p.get("MODEL", "lenet5"), num_classes=widths[-1], in_channels=widths[0],
                           widths=tuple(widths[1:-1]))
        out.append(Candidate("ECC" if r.method == "ECC" else "uniform width (ECC baseline)",
                             f"energy budget {r.budget:g}", int(r.seed), float(r.accuracy), net,
                             (widths[0], size, size), p.get("MODEL", "lenet5"), p.get("DATASET", "mnist5k"),
                             "03_ecc_admm", weight_bits=None, deploy_form="slimmed"))
    return out


@COLLECTORS.register("sparsity-quantization", stage="04_sparsity_quantization")
def collect_sqjoint(art) -> list[Candidate]:
    """04: the saved final weights (exact zeros = pruned, codebook values) of every run."""
    from pathlib import Path

    from .models import create_model, model_input_size
    from .results import read_json
    from .train import load_checkpoint

    d = Path(art) / "04_sparsity_quantization" / "models"
    if not _finished(art, "04_sparsity_quantization"):
        return []
    cols = ("mode", "seed", "accuracy")
    current = _current(d.parent / "runs.csv", cols)
    out = []
    for js in sorted(d.glob("*.json")) if d.is_dir() else []:
        meta, ck = read_json(js), js.with_suffix(".pt")
        if not ck.exists() or "mode" not in meta or (current is not None and _key(meta, cols) not in current):
            continue
        net = create_model(meta["model"])
        net.load_state_dict(load_checkpoint(ck)["model"])
        out.append(Candidate("sparsity-quantization", f"{meta['mode']} ×{meta['target_cr']:.0f}", int(meta["seed"]),
                             float(meta["accuracy"]), net, model_input_size(meta["model"]), meta["model"],
                             meta.get("dataset", "mnist5k"), "04_sparsity_quantization",
                             weight_bits=None if meta["mode"] == "prune" else "infer"))
    return out


@COLLECTORS.register("EC2T", stage="05_ec2t")
def collect_ec2t(art) -> list[Candidate]:
    """05: full-precision and ternarized MicroNets (EC2T, TTQ) from ``models/*.pt`` + ``.json``."""
    from pathlib import Path

    from .models.micronet import MicroNet
    from .results import read_json
    from .train import load_checkpoint

    d = Path(art) / "05_ec2t" / "models"
    if not _finished(art, "05_ec2t"):
        return []
    dataset = stage_params(art, "05_ec2t").get("DATASET", "mnist5k")
    cols = ("method", "gamma_or_t", "seed", "accuracy")
    current = _current(d.parent / "runs.csv", cols)
    out = []
    for js in sorted(d.glob("*.json")) if d.is_dir() else []:
        meta, ck = read_json(js), js.with_suffix(".pt")
        if not ck.exists() or "config" not in meta:
            continue
        if meta.get("method", "fp") != "fp" and current is not None and _key(meta, cols) not in current:
            continue
        net = MicroNet(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta["config"].items()})
        net.load_state_dict(load_checkpoint(ck)["model"])
        m = meta.get("method", "fp")
        setting = "full precision" if m == "fp" else f"{m} {'t' if m == 'ttq' else 'gamma'}={meta['gamma_or_t']:g}"
        out.append(Candidate("EC2T" if m != "ttq" else "TTQ (EC2T baseline)", setting, int(meta.get("seed", 0)),
                             float(meta["accuracy"]), net, tuple(meta["input_size"]), "micronet", dataset, "05_ec2t"))
    return out


@COLLECTORS.register("CAMP", stage="08_camp_mixed_precision")
def collect_camp(art) -> list[Candidate]:
    """08: baselines and dual-path models rebuilt from the cached run rows (ρ per block weights the 4-bit path)."""
    from pathlib import Path

    from .methods import camp
    from .results import read_json

    d = Path(art) / "08_camp_mixed_precision"
    cols = ("seed", "model", "alpha", "accuracy")
    current = _current(d / "camp_points.csv", cols)
    if current is None or not _finished(art, "08_camp_mixed_precision"):
        return []
    out = []
    for cache in sorted(d.glob("cache_seed*.json")):
        for entry in read_json(cache).values():
            prm, rows = entry.get("params", {}), entry.get("result", {}).get("rows", [])
            if "depth" not in prm:
                continue
            size = int(prm.get("image_size", 16))
            for r in rows:
                if _key(dict(r, seed=prm.get("seed", 0)), cols) not in current:
                    continue  # a cached run of other parameters, not part of the stage's last table
                mk = lambda b: camp.CampResNet(int(prm["depth"]), tuple(prm["widths"]), 10, 1, bits=b)  # noqa: E731
                name = r["model"]
                if name in ("fp32", "w4a4", "w1a1"):
                    net, rho = mk({"fp32": 32, "w4a4": 4, "w1a1": 1}[name]), None
                else:
                    net, rho = camp.make_dual(mk(1), gate_mode="sp"), r.get("rho_per_block")
                t = camp.camp_cost_table(net, (1, size, size), rho)
                setting = name if r.get("alpha") is None else f"{name} alpha={r['alpha']:g}"
                out.append(Candidate("CAMP", setting, int(prm.get("seed", 0)), float(r["accuracy"]) / 100, net,
                                     (1, size, size), f"camp_resnet{prm['depth']}", prm.get("dataset", "mnist5k"),
                                     "08_camp_mixed_precision", weight_bits=dict(zip(t.layer, t.weight_bits)),
                                     act_bits=dict(zip(t.layer, t.act_bits)), exec_weight=dict(zip(t.layer, t.exec_weight)),
                                     deploy_form="fake-quant fp32 (both paths)"))
    return out


class Resized(nn.Module):
    """``model`` fed an ``r``x``r`` bilinear resize of the input (EdgeCompress's resolution axis)."""

    def __init__(self, model: nn.Module, r: int):
        super().__init__()
        self.model, self.r = model, int(r)

    def forward(self, x):
        # unconditional (fx-traceable for the MicroNet counter); at the same size it is the identity
        return self.model(nn.functional.interpolate(x, size=(self.r, self.r), mode="bilinear", align_corners=False))


class CascadeCost(nn.Module):
    """Two-stage cascade as one module for cost counting and timing: the small model then the large one
    (give the large model's layers ``exec_weight`` = the escalation rate)."""

    def __init__(self, small: nn.Module, large: nn.Module):
        super().__init__()
        self.small, self.large = small, large

    def forward(self, x):
        return self.small(x) + self.large(x)


@COLLECTORS.register("EdgeCompress", stage="07_dynamic_inference")
def collect_edgecompress(art) -> list[Candidate]:
    """07: static shrunk/cropped models (``static_models.csv``) and the cascade at its cheapest threshold that
    matches the large model (else hi=0.2, the paper's), rebuilt as architectures (dense fp32)."""
    from pathlib import Path

    from .models import create_model
    from .models.shrinkable import shrink_depths
    from .results import read_json

    d = Path(art) / "07_dynamic_inference"
    if not ((d / "static_models.csv").exists() and _finished(art, "07_dynamic_inference")):
        return []
    p = stage_params(art, "07_dynamic_inference")
    build = lambda dd, w, r: create_model("shrinkable_resnet", depths=shrink_depths((2, 2, 2), dd),  # noqa: E731
                                          width_mult=w, resolution=int(r))
    out, static = [], pd.read_csv(d / "static_models.csv")
    for r in static.itertuples():
        out.append(Candidate("EdgeCompress", f"{r.kind} {r.name}", int(p.get("SEED", 0)), float(r.test_accuracy),
                             build(r.d, r.w, r.r), (1, int(r.r), int(r.r)), "shrinkable_resnet", "cluttered_digits",
                             "07_dynamic_inference", weight_bits=None, extra_macs=float(r.cropper_macs)))
    if (d / "metrics.json").exists():
        m = read_json(d / "metrics.json")
        sweep = pd.DataFrame(m["sweep"])
        frac = m.get("macs_fraction_at_large_accuracy")
        pick = (sweep.iloc[(sweep.avg_macs - frac * m["large_macs"]).abs().argmin()] if frac is not None
                else sweep.iloc[(sweep.threshold - 0.2).abs().argmin()])
        ds, ws, rs = (float(v) for v in str(p.get("SMALL", "0.5:0.5:16")).split(":"))
        r_large = max(int(v) for v in str(p.get("RESOLUTIONS", "32,24,16")).split(","))
        casc = CascadeCost(Resized(build(ds, ws, rs), int(rs)), build(1.0, 1.0, r_large))
        names = [n for n, mod in casc.named_modules() if isinstance(mod, (nn.Conv2d, nn.Linear))]
        crop_macs = float(static.cropper_macs.max())
        out.append(Candidate("EdgeCompress", f"cascade hi={pick.threshold:.2f}", int(p.get("SEED", 0)),
                             float(pick.accuracy), casc, (1, r_large, r_large), "shrinkable_resnet", "cluttered_digits",
                             "07_dynamic_inference", weight_bits=None, extra_macs=crop_macs,
                             exec_weight={n: float(pick.escalated) for n in names if n.startswith("large.")},
                             deploy_form="cascade (both stages timed)"))
    return out


def collect_all(art, methods=None) -> tuple[list[Candidate], dict]:
    """Candidates of every registered collector (or ``methods``); second value: {method: count or error}."""
    cands, report = [], {}
    for name in methods or COLLECTORS.names():
        try:
            got = COLLECTORS.create(name, art=art)
            report[name] = len(got)
            cands += got
        except Exception as e:  # one stage's unexpected format must not hide the others
            report[name] = f"{type(e).__name__}: {e}"
    return cands, report


# ------------------------------------------------------- runs on the common base model (methods missing there)
def upstream_dense(art, model_name: str, dataset: str, subset: int, seed: int):
    """Stage 04's dense checkpoint of ``seed`` if stage 04 last ran on the same model, dataset and subset
    (its ``.reproduce.json``), else None: the board then reuses that base instead of training one."""
    from pathlib import Path

    d = Path(art) / "04_sparsity_quantization"
    ck = d / "models" / f"dense_seed{seed}.pt"
    if not (ck.exists() and (d / ".reproduce.json").exists()):
        return None
    p = stage_params(art, "04_sparsity_quantization")
    same = (p.get("MODEL") == model_name and p.get("DATASET") == dataset
            and int(p.get("SUBSET") or 0) == int(subset or 0))
    return ck if same else None


def train_base(model_name: str, loaders, epochs: int, seed: int, lr: float = 1e-3, ckpt=None) -> nn.Module:
    """Dense base model (Adam, cosine decay), cached at ``ckpt`` (resumable)."""
    from .models import create_model
    from .train import fit, set_seed

    set_seed(seed)
    net = create_model(model_name, num_classes=loaders.num_classes, in_channels=loaders.in_channels)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    fit(net, loaders, epochs, opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs)),
        seed=seed, ckpt_path=ckpt, resume=ckpt is not None, progress=False)
    return net.eval()


def run_magnitude(dense: nn.Module, loaders, sparsities, finetune_epochs: int, seed: int, lr: float = 1e-4):
    """Baseline: layer-wise magnitude pruning (Han et al. 2015) + masked fine-tune, per sparsity.
    Yields (sparsity, model, test accuracy)."""
    import copy

    from .prune import MaskCallback, magnitude_prune_
    from .train import evaluate, fit

    for s in sparsities:
        if not 0 < s < 1:
            raise ValueError(f"sparsity must be in (0, 1), got {s}")
        m = copy.deepcopy(dense)
        masks = magnitude_prune_(m, s)
        if finetune_epochs > 0:
            fit(m, loaders, finetune_epochs, torch.optim.Adam(m.parameters(), lr=lr),
                callbacks=[MaskCallback(masks)], seed=seed, progress=False)
        yield s, m.eval(), evaluate(m, loaders.test)["accuracy"]


def run_ec2t_base(dense: nn.Module, loaders, gammas, epochs: int, retrain_epochs: int, seed: int,
                  pattern: str = ""):
    """EC2T on the base model (stage 05 trains MicroNets, not the base): yields (gamma, model, accuracy).
    ``pattern`` selects the ternarized layers by name ("" = every Conv2d/Linear)."""
    from .methods.ec2t import train_ec2t

    for g in gammas:
        r = train_ec2t(dense, loaders, method="ec2t", gamma=float(g), epochs=epochs, retrain_epochs=retrain_epochs,
                       seed=seed, progress=False, pattern=pattern)
        yield g, r["model"].eval(), r["test_accuracy"]


def run_cascade_base(dense: nn.Module, loaders, input_size, small_widths, small_res: int, epochs: int, seed: int,
                     model_name: str = "lenet5_caffe", alpha: float = 1.6, tol: float = 0.005):
    """EdgeCompress's cascade on the base model: a width- and resolution-shrunk copy answers the confident
    images (softmax margin >= hi), the dense base the rest (logits summed, z_s + alpha*z_l). The threshold
    is the cheapest swept one within ``tol`` of the dense accuracy (else 0.2, the paper's).
    Returns (Candidate fields: model, accuracy, exec_weight, threshold, escalated)."""
    from .methods import cascade
    from .models import create_model
    from .train import predict_logits

    small = Resized(create_model(model_name, num_classes=loaders.num_classes, in_channels=loaders.in_channels,
                                 image_size=int(small_res), widths=tuple(int(w) for w in small_widths)), small_res)
    opt = torch.optim.Adam(small.parameters(), lr=1e-3)
    from .train import fit, set_seed

    set_seed(seed)
    fit(small, loaders, epochs, opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs)),
        seed=seed, progress=False)
    (zs, y), (zl, _) = predict_logits(small.eval(), loaders.test), predict_logits(dense.eval(), loaders.test)
    macs = [cost.total_macs(small, tuple(input_size)), cost.total_macs(dense, tuple(input_size))]
    table = cascade.sweep([zs, zl], macs, np.linspace(0, 1, 51), y, alpha=alpha)
    large_acc = float((zl.argmax(1) == y).double().mean())
    pick = cascade.cheapest_at_accuracy(table, large_acc, tol)
    if pick is None:
        pick = table.iloc[(table.threshold - 0.2).abs().argmin()]
    casc = CascadeCost(small, dense)
    names = [n for n, m in casc.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and n.startswith("large.")]
    return {"model": casc.eval(), "accuracy": float(pick.accuracy), "exec_weight": {n: float(pick.escalated) for n in names},
            "threshold": float(pick.threshold), "escalated": float(pick.escalated)}


def explorer(board: pd.DataFrame, axis: str = "effective_macs"):
    """ipywidgets explorer: Dropdown "cost axis" + log slider "budget" -> the best rows within the budget
    (HTML) and accuracy-vs-cost with the Pareto front. Returns the VBox (attributes ``axis``, ``budget``,
    ``readout``, ``update``)."""
    import ipywidgets as W
    import matplotlib.pyplot as plt

    from .viz import plot_tradeoff

    def bounds(ax):
        v = board[ax].replace([np.inf, -np.inf], np.nan).dropna()
        v = v[v > 0]
        return (math.log10(v.min()), math.log10(v.max())) if len(v) else (0.0, 1.0)

    axis_w = W.Dropdown(options=COST_COLUMNS, value=axis, description="cost axis")
    lo, hi = bounds(axis)
    budget = W.FloatLogSlider(value=10 ** hi, base=10, min=lo, max=hi, step=(hi - lo) / 50 or 0.01,
                              description="budget", continuous_update=False)
    readout, plot = W.HTML(), W.Output()

    def update(*_):
        ok = within_budget(board, axis_w.value, budget.value)
        head = f"<b>{len(ok)} of {len(board)} rows</b> with {axis_w.value} ≤ {budget.value:.4g}"
        readout.value = head + (format_table(ok.head(8)).to_html(index=False) if len(ok) else "")
        with plot:
            plot.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(7, 4))
            plot_tradeoff(ax, board.assign(acc=100 * board.accuracy), axis_w.value, "acc", hue="method", logx=True,
                          ylabel="test accuracy (%)")
            ax.axvline(budget.value, color="r", ls="--", lw=1)
            plt.show()
            plt.close(fig)

    def on_axis(*_):
        lo, hi = bounds(axis_w.value)
        budget.min, budget.max = min(lo, budget.min), max(hi, budget.max)
        budget.min, budget.max, budget.value = lo, hi, 10 ** hi
        update()

    axis_w.observe(on_axis, names="value")
    budget.observe(update, names="value")
    box = W.VBox([W.HBox([axis_w, budget]), readout, plot])
    box.axis, box.budget, box.readout, box.update = axis_w, budget, readout, update
    update()
    return box


# ------------------------------------------------------------------ README table (published default run)
TABLE_BEGIN, TABLE_END = "<!-- leaderboard-table:begin -->", "<!-- leaderboard-table:end -->"


def readme_table(readme_text: str) -> str:
    """The text between the README's leaderboard markers (stripped)."""
    if TABLE_BEGIN not in readme_text or TABLE_END not in readme_text:
        raise ValueError(f"README has no {TABLE_BEGIN} ... {TABLE_END} section")
    return readme_text.split(TABLE_BEGIN, 1)[1].split(TABLE_END, 1)[0].strip()


def publish(csv_path, readme, docs_csv) -> None:
    """Copy a default run's leaderboard.csv to ``docs_csv`` and write its table into the README markers."""
    import shutil
    import time
    from pathlib import Path

    from .results import atomic_write_text

    board = pd.read_csv(csv_path)
    stamp = time.strftime("%Y-%m-%d", time.gmtime(Path(csv_path).stat().st_mtime))
    text = Path(readme).read_text()
    readme_table(text)  # markers present
    try:
        shown = Path(docs_csv).resolve().relative_to(Path(readme).resolve().parent).as_posix()
    except ValueError:
        shown = Path(docs_csv).as_posix()
    body = (f"{TABLE_BEGIN}\n_From `make reproduce` (profile `default`), run of {stamp}; the CSV is "
            f"`{shown}`._\n\n{markdown_table(board)}\n{TABLE_END}")
    head, rest = text.split(TABLE_BEGIN, 1)
    atomic_write_text(readme, head + body + rest.split(TABLE_END, 1)[1])
    Path(docs_csv).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(csv_path, docs_csv)


if __name__ == "__main__":
    import argparse

    from .reproduce import REPO

    ap = argparse.ArgumentParser(prog="python -m compresslib.leaderboard",
                                 description="publish a default run's leaderboard into README.md and docs/")
    ap.add_argument("--csv", default=str(REPO / "artifacts" / "09_leaderboard" / "leaderboard.csv"))
    ap.add_argument("--readme", default=str(REPO / "README.md"))
    ap.add_argument("--docs-csv", default=str(REPO / "docs" / "leaderboard_default.csv"))
    a = ap.parse_args()
    publish(a.csv, a.readme, a.docs_csv)
    print(f"README table and {a.docs_csv} updated from {a.csv}")
