"""Where the leaderboard's rows come from: stage collectors and runs on the common base model.

Collectors (``COLLECTORS``, one per method) read what the method stages leave in ``artifacts/`` and
rebuild each reported model as a :class:`Candidate`: saved weights (04, 05),
or the recorded architecture when the cost depends only on it (03 widths, 07 configurations,
08 ρ per block). A stage is read only once it finished (``metrics.json``), and only the models of
its last-run table (older runs with other parameters may share the folder). The ``run_*``
functions run a method on the base model where its stage did not (dense base, magnitude pruning,
EC2T, EdgeCompress's cascade). Everything is re-exported by ``compresslib.leaderboard``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from . import cost
from .registry import Registry

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
    weight_bits: object = "infer"  # "infer", None (fp32), int or {layer: bits}
    act_bits: object = 32  # int or {layer: bits}
    exec_weight: dict | None = None  # {layer: expected executions per image}, default 1
    deploy: nn.Module | None = None  # what runs for the latency (default: model)
    deploy_form: str = "dense-executed"
    extra_macs: float = 0.0  # MACs outside the model (e.g. a cropper), added to both MAC columns
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if not 0.0 <= float(self.accuracy) <= 1.0:
            raise ValueError(
                f"{self.method}/{self.setting}: accuracy must be a fraction in [0, 1], got {self.accuracy}"
            )


def stage_params(art, stage: str) -> dict:
    """Parameters a stage last ran with: the notebook's defaults, overridden by ``.reproduce.json``."""
    from pathlib import Path

    from .stage_params import notebook_parameters
    from .stages import REPO
    from .results import read_json

    src = REPO / "notebooks" / f"{stage}.py"
    params = notebook_parameters(src) if src.exists() else {}
    stamp = Path(art) / stage / ".reproduce.json"
    if stamp.exists():
        params.update(read_json(stamp).get("params", {}))
    return params


def _finished(art, stage: str) -> bool:
    """A stage is read only once it finished (its metrics.json exists): a half-run stage is skipped.
    A failed or killed runner stage never replaces ``artifacts/<stage>/`` (compresslib.provenance), so
    what is here is the last successful run; a stage re-run by hand in JupyterLab is read as it is."""
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


def _architecture(name: str, **kwargs) -> nn.Module:
    """A registry model rebuilt for cost counting only (its weights were not saved): built under a fixed,
    forked RNG so that its initial values, and so any exact zeros the counters see, are the same in every
    run (an unseeded init gave a different non-zero count, and MicroNet score, on each re-run)."""
    from .models import create_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return create_model(name, **kwargs)


@COLLECTORS.register("ECC", stage="03_ecc_admm")
def collect_ecc(art) -> list[Candidate]:
    """03: ECC and uniform-width LeNet-5s; rebuilt slimmed from ``results.csv`` widths (cost depends only on them)."""
    from pathlib import Path

    path = Path(art) / "03_ecc_admm" / "results.csv"
    if not (path.exists() and _finished(art, "03_ecc_admm")):
        return []
    p = stage_params(art, "03_ecc_admm")
    out = []
    for r in pd.read_csv(path).itertuples():
        widths = [int(v) for v in _csv_list(r.widths)]  # (image channels, hidden widths..., classes)
        size = int(p.get("IMAGE_SIZE", 32))
        net = _architecture(
            p.get("MODEL", "lenet5"), num_classes=widths[-1], in_channels=widths[0], widths=tuple(widths[1:-1])
        )
        label = {"ECC": "ECC", "uniform_equal_training": "uniform width, equal training (ECC baseline)"}.get(
            r.method, "uniform width, fine-tune only (ECC baseline)"
        )  # 03's two views of its baseline
        out.append(
            Candidate(
                label,
                f"energy budget {r.budget:g}",
                int(r.seed),
                float(r.accuracy),
                net,
                (widths[0], size, size),
                p.get("MODEL", "lenet5"),
                p.get("DATASET", "mnist5k"),
                "03_ecc_admm",
                weight_bits=None,
                deploy_form="slimmed",
            )
        )
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
        out.append(
            Candidate(
                "sparsity-quantization",
                f"{meta['mode']} ×{meta['target_cr']:.0f}",
                int(meta["seed"]),
                float(meta["accuracy"]),
                net,
                model_input_size(meta["model"]),
                meta["model"],
                meta.get("dataset", "mnist5k"),
                "04_sparsity_quantization",
                weight_bits=None if meta["mode"] == "prune" else "infer",
                extra={k: meta[k] for k in ("cr_weights_only", "cr_with_biases", "cr_with_index") if k in meta},
            )
        )
    return out


@COLLECTORS.register("EC2T", stage="05_ec2t")
def collect_ec2t(art) -> list[Candidate]:
    """05: full-precision and ternarized MicroNets (EC2T, TTQ) from ``models/*.pt`` + ``.json``."""
    from pathlib import Path

    from .methods.ec2t import rebuild_model
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
        net = rebuild_model(meta)  # stage 05's MODEL (MicroNet unless the profile set another)
        net.load_state_dict(load_checkpoint(ck)["model"])
        m = meta.get("method", "fp")
        setting = "full precision" if m == "fp" else f"{m} {'t' if m == 'ttq' else 'gamma'}={meta['gamma_or_t']:g}"
        out.append(
            Candidate(
                "EC2T" if m != "ttq" else "TTQ (EC2T baseline)",
                setting,
                int(meta.get("seed", 0)),
                float(meta["accuracy"]),
                net,
                tuple(meta["input_size"]),
                meta.get("model", "micronet"),
                dataset,
                "05_ec2t",
            )
        )
    return out


@COLLECTORS.register("CAMP", stage="08_camp_mixed_precision")
def collect_camp(art) -> list[Candidate]:
    """08: baselines, dual-path and static-plan models rebuilt from the stage's ``models.json`` rows
    (ρ per block weights the 4-bit path; a static plan runs path1 or path4 per block and no gate)."""
    from pathlib import Path

    from .methods import camp
    from .results import read_json

    d = Path(art) / "08_camp_mixed_precision"
    cols = ("seed", "model", "alpha", "accuracy")
    current = _current(d / "camp_points.csv", cols)
    if current is None or not _finished(art, "08_camp_mixed_precision") or not (d / "models.json").exists():
        return []
    out = []
    for r in read_json(d / "models.json").values():
        if "method_model" not in r:
            continue
        name, kw, size = r["method_model"], r["kwargs"], tuple(r["input_size"])
        if _key(dict(seed=r["seed"], model=name, alpha=r["alpha"], accuracy=100 * r["accuracy"]), cols) not in current:
            continue  # a model of an older run with other parameters, not part of the stage's last table
        net = camp.CampResNet(
            int(kw["depth"]), tuple(kw["widths"]), int(kw["num_classes"]), int(kw["in_channels"]), bits=int(kw["bits"])
        )
        static = r["kind"] == "static"
        if r["kind"] != "uniform":
            net = camp.make_dual(net, gate_mode="sp")
        t = camp.camp_cost_table(net, size, r["rho_per_block"], include_gates=not static, static=static)
        setting = name if r.get("alpha") is None else f"{name} alpha={r['alpha']:g}"
        out.append(
            Candidate(
                "CAMP",
                setting,
                int(r["seed"]),
                float(r["accuracy"]),
                net,
                size,
                f"camp_resnet{kw['depth']}",
                r.get("dataset", "mnist5k"),
                "08_camp_mixed_precision",
                weight_bits=dict(zip(t.layer, t.weight_bits)),
                act_bits=dict(zip(t.layer, t.act_bits)),
                exec_weight=dict(zip(t.layer, t.exec_weight)),
                deploy_form="fake-quant fp32 (static plan: chosen path per block)"
                if static
                else "fake-quant fp32 (both paths)",
                extra={"static_plan": r["static_plan"]} if static else {},
            )
        )
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
    """07: static shrunk/cropped models (``static_models.csv``) and the cascade at its operating point chosen on
    the validation split (``metrics.json`` ``threshold``, small model ``small_config``; older runs: the cheapest
    threshold that matches the large model, else hi=0.2, the paper's), rebuilt as architectures (dense fp32)."""
    from pathlib import Path

    from .models.shrinkable import shrink_depths
    from .results import read_json

    d = Path(art) / "07_dynamic_inference"
    if not ((d / "static_models.csv").exists() and _finished(art, "07_dynamic_inference")):
        return []
    p = stage_params(art, "07_dynamic_inference")
    build = lambda dd, w, r: _architecture(
        "shrinkable_resnet",
        depths=shrink_depths((2, 2, 2), dd),  # noqa: E731
        width_mult=w,
        resolution=int(r),
    )
    out, static = [], pd.read_csv(d / "static_models.csv")
    for r in static.itertuples():
        out.append(
            Candidate(
                "EdgeCompress",
                f"{r.kind} {r.name}",
                int(p.get("SEED", 0)),
                float(r.test_accuracy),
                build(r.d, r.w, r.r),
                (1, int(r.r), int(r.r)),
                "shrinkable_resnet",
                "cluttered_digits",
                "07_dynamic_inference",
                weight_bits=None,
                extra_macs=float(r.cropper_macs),
            )
        )
    if (d / "metrics.json").exists():
        m = read_json(d / "metrics.json")
        sweep = pd.DataFrame(m["sweep"])
        frac = m.get("macs_fraction_at_large_accuracy")
        if m.get("threshold") is not None:  # the operating point chosen on the validation split
            pick = sweep.iloc[(sweep.threshold - float(m["threshold"])).abs().argmin()]
        else:  # older metrics.json
            pick = (
                sweep.iloc[(sweep.avg_macs - frac * m["large_macs"]).abs().argmin()]
                if frac is not None
                else sweep.iloc[(sweep.threshold - 0.2).abs().argmin()]
            )
        small_config = str(m.get("small_config") or p.get("SMALL", "0.5:0.5:16"))
        if small_config == "auto":
            raise ValueError(
                f"{d / 'metrics.json'} has no 'small_config' and SMALL was 'auto': re-run stage 07 "
                "(python -m compresslib.reproduce --only 07 --force) so it records the chosen small model"
            )
        ds, ws, rs = (float(v) for v in small_config.split(":"))
        r_large = max(int(v) for v in str(p.get("RESOLUTIONS", "32,24,16")).split(","))
        casc = CascadeCost(Resized(build(ds, ws, rs), int(rs)), build(1.0, 1.0, r_large))
        names = [n for n, mod in casc.named_modules() if isinstance(mod, (nn.Conv2d, nn.Linear))]
        crop_macs = float(static.cropper_macs.max())
        out.append(
            Candidate(
                "EdgeCompress",
                f"cascade hi={pick.threshold:.2f}",
                int(p.get("SEED", 0)),
                float(pick.accuracy),
                casc,
                (1, r_large, r_large),
                "shrinkable_resnet",
                "cluttered_digits",
                "07_dynamic_inference",
                weight_bits=None,
                extra_macs=crop_macs,
                exec_weight={n: float(pick.escalated) for n in names if n.startswith("large.")},
                deploy_form="cascade (both stages timed)",
            )
        )
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
    same = (
        p.get("MODEL") == model_name and p.get("DATASET") == dataset and int(p.get("SUBSET") or 0) == int(subset or 0)
    )
    return ck if same else None


def train_base(
    model_name: str, loaders, epochs: int, seed: int, lr: float = 1e-3, *, cache_dir, device: str = "cpu"
) -> nn.Module:
    """Dense base model (Adam, cosine decay): ``train.pretrain_dense``, cached in ``cache_dir`` by the
    fit fingerprint (a finished matching run is reused, a partial one resumed)."""
    from .train import pretrain_dense

    net, _ = pretrain_dense(
        model_name,
        dict(num_classes=loaders.num_classes, in_channels=loaders.in_channels),
        loaders,
        epochs=epochs,
        seed=seed,
        lr=lr,
        cache_dir=cache_dir,
        device=device,
        name=f"base-{model_name}-seed{seed}",
    )
    return net.eval()


def run_magnitude(
    dense: nn.Module, loaders, sparsities, finetune_epochs: int, seed: int, lr: float = 1e-4, cache_dir=None
):
    """Baseline: layer-wise magnitude pruning (Han et al. 2015) + masked fine-tune, per sparsity.
    Yields (sparsity, model, test accuracy). With ``cache_dir`` every fine-tune is a ``train.cached_fit``
    (fingerprint: pruned weights, masks, optimizer, data, seed, epochs)."""
    import copy

    from .prune import MaskCallback, magnitude_prune_
    from .train import cached_fit, evaluate, fit

    for s in sparsities:
        if not 0 < s < 1:
            raise ValueError(f"sparsity must be in (0, 1), got {s}")
        m = copy.deepcopy(dense)
        masks = magnitude_prune_(m, s)
        if finetune_epochs > 0:
            kw = dict(callbacks=[MaskCallback(masks)], seed=seed, progress=False)
            opt = torch.optim.Adam(m.parameters(), lr=lr)
            if cache_dir is not None:
                cached_fit(
                    m, loaders, finetune_epochs, opt, cache_dir=cache_dir, name=f"magnitude{s:g}-seed{seed}", **kw
                )
            else:
                fit(m, loaders, finetune_epochs, opt, **kw)
        yield s, m.eval(), evaluate(m, loaders.test)["accuracy"]


def run_ec2t_base(
    dense: nn.Module, loaders, gammas, epochs: int, retrain_epochs: int, seed: int, pattern: str = "", cache_dir=None
):
    """EC2T on the base model (stage 05 trains MicroNets, not the base): yields (gamma, model, accuracy).
    ``pattern`` selects the ternarized layers by name ("" = every Conv2d/Linear). With ``cache_dir``
    each finished ternary model is kept there under a hash of (dense weights digest, data
    fingerprint, gamma, epochs, retrain_epochs, seed, pattern) and reused instead of retrained."""
    import copy
    from pathlib import Path

    from .methods.ec2t import train_ec2t
    from .results import param_hash
    from .train import load_checkpoint, load_weights, loader_fingerprint, save_checkpoint, state_digest

    for g in gammas:
        ck = None
        if cache_dir is not None:
            key = {
                "dense": state_digest(dense.state_dict()),
                "gamma": float(g),
                "epochs": epochs,
                "retrain_epochs": retrain_epochs,
                "seed": seed,
                "pattern": pattern,
                "data": {k: loader_fingerprint(getattr(loaders, k, None)) for k in ("train", "val", "test")},
            }
            ck = Path(cache_dir) / f"ec2t{float(g):g}-seed{seed}-{param_hash(key)}.pt"
            if ck.is_file():
                st = load_checkpoint(ck)
                m = load_weights(copy.deepcopy(dense), st, source=ck)
                print(f"[ec2t] reused {ck.name}")
                yield g, m.eval(), float(st["test_accuracy"])
                continue
        r = train_ec2t(
            dense,
            loaders,
            method="ec2t",
            gamma=float(g),
            epochs=epochs,
            retrain_epochs=retrain_epochs,
            seed=seed,
            progress=False,
            pattern=pattern,
        )
        if ck is not None:
            save_checkpoint(ck, model=r["model"].state_dict(), test_accuracy=float(r["test_accuracy"]))
        yield g, r["model"].eval(), r["test_accuracy"]


def run_cascade_base(
    dense: nn.Module,
    loaders,
    input_size,
    small_widths,
    small_res: int,
    epochs: int,
    seed: int,
    model_name: str = "lenet5_caffe",
    alpha: float = 1.6,
    tol: float = 0.005,
    cache_dir=None,
):
    """EdgeCompress's cascade on the base model: a width- and resolution-shrunk copy answers the confident
    images (softmax margin >= hi), the dense base the rest (logits summed, z_s + alpha*z_l). The threshold
    is the cheapest swept one within ``tol`` of the dense accuracy (else 0.2, the paper's). With
    ``cache_dir`` the small model's training is a ``train.cached_fit`` (reused when its fingerprint matches).
    Returns (Candidate fields: model, accuracy, exec_weight, threshold, escalated)."""
    from .methods import cascade
    from .models import create_model
    from .train import cached_fit, fit, predict_logits, set_seed

    set_seed(seed)  # the small model's initial weights depend on the seed only, not on what ran before
    small = Resized(
        create_model(
            model_name,
            num_classes=loaders.num_classes,
            in_channels=loaders.in_channels,
            image_size=int(small_res),
            widths=tuple(int(w) for w in small_widths),
        ),
        small_res,
    )
    opt = torch.optim.Adam(small.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs))
    if cache_dir is not None:
        cached_fit(
            small,
            loaders,
            epochs,
            opt,
            scheduler=sched,
            seed=seed,
            progress=False,
            cache_dir=cache_dir,
            name=f"cascade-small-seed{seed}",
        )
    else:
        fit(small, loaders, epochs, opt, sched, seed=seed, progress=False)
    (zs, y), (zl, _) = predict_logits(small.eval(), loaders.test), predict_logits(dense.eval(), loaders.test)
    macs = [cost.total_macs(small, tuple(input_size)), cost.total_macs(dense, tuple(input_size))]
    table = cascade.sweep([zs, zl], macs, np.linspace(0, 1, 51), y, alpha=alpha)
    large_acc = float((zl.argmax(1) == y).double().mean())
    pick = cascade.cheapest_at_accuracy(table, large_acc, tol)
    if pick is None:
        pick = table.iloc[(table.threshold - 0.2).abs().argmin()]
    casc = CascadeCost(small, dense)
    names = [n for n, m in casc.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and n.startswith("large.")]
    return {
        "model": casc.eval(),
        "accuracy": float(pick.accuracy),
        "exec_weight": {n: float(pick.escalated) for n in names},
        "threshold": float(pick.threshold),
        "escalated": float(pick.escalated),
    }
