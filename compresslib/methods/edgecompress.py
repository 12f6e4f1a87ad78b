"""EdgeCompress (Kong et al., TCAD 2023) on the method contract: ``Config`` + ``run``, registered as "edgecompress".

Stage 07's pipeline: resolution-only models -> Grad-CAM pseudo-boxes (setting chosen by a probe on val) -> box
predictor (:mod:`.crop`) -> crop-only and compound-shrunk models on its crops -> the confidence-gated cascade
(:mod:`.cascade`), per seed, every choice made on the validation split. :func:`report`, :func:`manifest_rows` and
:func:`stage_metrics` give the notebook its tables, its ``models.json`` rows and its ``metrics.json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch.nn as nn
import torch.nn.functional as F

from ..checks import check_number
from .cascade import (
    Cascade,
    CascadeCost,
    Resized,
    _check_options,
    cheapest_at_accuracy,
    choose_threshold,
    confidence,
    model_logits,
    oracle,
    select_cascade,
    sweep,
)
from .contract import EPOCHS, FRACTION, LR, MethodConfig, Result, SEED, ints, register_method


def _dwr(name: str, v) -> tuple[float, float, int]:
    """A compound-shrinking config [d, w, r]: depth d in (0, 1], inner width w in (0, 4], resolution r in [4, 4096]."""
    if not isinstance(v, (list, tuple)) or len(v) != 3:
        raise ValueError(f"{name} must be a [d, w, r] list (depth, width, resolution), got {v!r}")
    d = check_number(f"{name}[0] (depth d)", v[0], 0, 1, lo_open=True)
    w = check_number(f"{name}[1] (width w)", v[1], 0, 4, lo_open=True)
    r = check_number(f"{name}[2] (resolution r)", v[2], 4, 4096, integer=True)
    return float(d), float(w), int(r)


def _name(cfg) -> str:
    return f"{cfg[0]:g}:{cfg[1]:g}:{cfg[2]}"


@dataclass
class Config(MethodConfig):
    """Stage 07's knobs (the notebook's parameters, lower-cased). Lists are literals: ``resolutions=[24, 12]``,
    compound-shrunk models ``cs_configs=[[0.5, 0.5, 16], ...]`` as [d, w, r]; ``small=[]``: the cascade's first stage
    is chosen among ``cs_configs`` on the validation split."""

    dataset: str = "cluttered_digits"  # registered dataset the loaders hold (board name; true boxes only here)
    arch: str = "cifar"  # shrinkable ResNet family: cifar or resnet50
    seed: int = 0
    device: str = "cpu"
    epochs: int = 12  # every classifier: SGD-Nesterov, cosine LR, label smoothing 0.1
    batch_size: int = 64
    lr: float = 0.1
    box_epochs: int = 20  # box predictor (AdamW, cosine LR)
    box_pool: str = "grid"  # grid (4x4 map) or avg (global, as the repo)
    box_shift: int = 4  # box predictor: random translation of canvas and box, pixels
    box_sizes: list = field(default_factory=lambda: [16, 32, 48, 64])  # crop sides the square boxes snap up to
    cam_layers: list = field(default_factory=lambda: ["last", "penultimate"])
    cam_splits: list = field(default_factory=lambda: [0.3, 0.5])  # Grad-CAM thresholds (CROP.CAM_SPLIT)
    cam_grows: list = field(default_factory=lambda: [1.0, 1.1])  # pseudo-box growth about the centre
    probe: list = field(default_factory=lambda: [0.5, 0.5, 12])  # [d, w, r] probe that ranks the Grad-CAM settings
    probe_epochs: int = 4
    resolutions: list = field(default_factory=lambda: [24, 12])  # resolution-only and crop-only baselines
    cs_configs: list = field(default_factory=lambda: [[0.5, 0.5, 16], [0.5, 0.5, 12], [0.5, 1.0, 12]])
    small: list = field(default_factory=list)  # [] (chosen on val) or one [d, w, r] of cs_configs
    alpha: float = 1.6  # z_small + alpha * z_large
    lo: float = 0.0  # margins not above lo are never escalated
    score: str = "margin"
    n_thresholds: int = 51  # threshold sweep hi in [0, 1]
    tol: float = 0.005  # cheapest val threshold within tol of the large model's val accuracy
    compare_seeds: list = field(default_factory=lambda: [0, 1, 2])  # per-seed cascade and baselines
    oracle_boxes: bool = False  # ablation: also a box predictor trained on the true boxes

    # fmt: off
    RANGES = {
        "seed": SEED, "compare_seeds": SEED, "epochs": EPOCHS, "batch_size": ints(1, 65536), "lr": LR,
        "box_epochs": EPOCHS, "box_shift": ints(0, 64), "box_sizes": ints(1, 4096), "probe_epochs": EPOCHS,
        "cam_splits": dict(lo=0, hi=1, hi_open=True), "cam_grows": dict(lo=1, hi=4), "resolutions": ints(4, 4096),
        "alpha": dict(lo=0, hi=100, lo_open=True), "lo": dict(lo=0, hi=1, hi_open=True),
        "n_thresholds": ints(3, 100000), "tol": FRACTION,
    }
    # fmt: on

    def check(self) -> None:
        from .. import data
        from ..models.shrinkable import arch_kwargs
        from .crop import CAM_LAYERS, resolve_device

        data.dataset_info(self.dataset)  # clear error listing the registered datasets
        arch_kwargs(self.arch, 1.0, 1.0, 32)  # clear error for an unknown arch
        resolve_device(self.device)
        for name in (
            "box_sizes",
            "cam_layers",
            "cam_splits",
            "cam_grows",
            "resolutions",
            "cs_configs",
            "compare_seeds",
        ):
            v = getattr(self, name)
            if not isinstance(v, (list, tuple)) or not v:
                raise ValueError(f"{name} must be a non-empty list, got {v!r}")
        if any(t not in CAM_LAYERS for t in self.cam_layers):
            raise ValueError(f"cam_layers must list {' and/or '.join(CAM_LAYERS)}, got {self.cam_layers!r}")
        if self.box_pool not in ("avg", "grid"):
            raise ValueError(f"box_pool must be avg or grid, got {self.box_pool!r}")
        _check_options(self.score, "sum", self.alpha)
        if not isinstance(self.oracle_boxes, bool):
            raise TypeError(f"oracle_boxes must be True or False, got {self.oracle_boxes!r}")
        _dwr("probe", self.probe)
        cs = [_dwr(f"cs_configs[{i}]", c) for i, c in enumerate(self.cs_configs)]
        if not isinstance(self.small, (list, tuple)):
            raise ValueError(f"small must be [] (chosen on val) or one [d, w, r] of cs_configs, got {self.small!r}")
        if self.small and _dwr("small", self.small) not in cs:
            raise ValueError(f"small={list(self.small)} must be [] or one of cs_configs {[list(c) for c in cs]}")


def _acc(z, y) -> float:
    return float((z.argmax(1) == y).double().mean())


def _resize(x, r: int):
    return F.interpolate(x, size=(r, r), mode="bilinear", antialias=True, align_corners=False)


@dataclass
class _Pipeline:
    """What every step of :func:`run` shares: the config, the image splits and where models are cached."""

    c: Config
    splits: dict  # {"train", "val", "test"} -> image sets with x, y, boxes
    cache: object
    progress: bool

    def __post_init__(self):
        from .. import data
        from .crop import resolve_device

        tr = self.splits["train"]
        self.canvas, self.in_ch = int(tr.x.shape[-1]), int(tr.x.shape[1])
        self.num_classes = int(data.dataset_info(self.c.dataset)["num_classes"])
        self.dev = resolve_device(self.c.device)
        self.res = sorted((int(r) for r in self.c.resolutions), reverse=True)
        self.box_sizes = [int(b) for b in self.c.box_sizes]
        seeds = [int(s) for s in self.c.compare_seeds]
        self.seeds = seeds if self.c.seed in seeds else [self.c.seed] + seeds
        self.rows = []  # manifest rows of the models that are not Results (box predictors)
        self.manifests = {}  # (kind, (d, w, r)) -> manifest row of the static models of seed
        self.cache = Path(self.cache)

    def fit(self, cfg, xs, seed: int, name: str, epochs: int | None = None):
        """Train (or load, when its fingerprint matches a cached run) a shrinkable ResNet (d, w, r) on inputs
        ``xs`` = (train, val, test or None) at its resolution; returns (model, val logits, test logits, info)."""
        from ..cost import total_macs
        from ..models import create_model
        from ..models.shrinkable import arch_kwargs
        from ..train import set_seed
        from .crop import train_classifier

        d, w, r = cfg
        tr, va, te = (self.splits[k] for k in ("train", "val", "test"))
        kwargs = dict(num_classes=self.num_classes, in_channels=self.in_ch, **arch_kwargs(self.c.arch, d, w, r))
        set_seed(seed)  # the initial weights depend on the seed only, not on what ran before
        m = create_model("shrinkable_resnet", **kwargs).to(self.dev)
        c = self.c
        hist = train_classifier(
            m,
            xs[0],
            tr.y,
            xs[1],
            va.y,
            epochs=epochs or c.epochs,
            lr=c.lr,
            batch_size=c.batch_size,
            seed=seed,
            device=c.device,
            cache_dir=self.cache,
            name=name,
            progress=self.progress,
        )
        z_val = model_logits(m, xs[1], res=r)
        z_test = None if xs[2] is None else model_logits(m, xs[2], res=r)  # None: never looks at test
        info = {
            "val_accuracy": _acc(z_val, va.y),
            "test_accuracy": None if z_test is None else _acc(z_test, te.y),
            "macs": total_macs(m, (self.in_ch, r, r)),
            "params": sum(p.numel() for p in m.parameters()),
            "reused": bool(hist.get("reused")),
        }
        row = {
            "key": name,
            "model": "shrinkable_resnet",
            "kwargs": kwargs,
            "checkpoint": hist["checkpoint"],
            "seed": seed,
        }
        return m, z_val, z_test, {**info, "manifest": row}

    def crops(self, boxes: dict, r: int) -> list:
        from .crop import crop_resize

        return [crop_resize(s.x, boxes[k], r) for k, s in self.splits.items()]

    def fit_cropper(self, target_train, boxes_val, label: str):
        """The box predictor regressing ``target_train`` (pixel boxes), validated against ``boxes_val``."""
        from ..models import create_model
        from ..train import set_seed
        from .crop import ForegroundCropper, train_box_predictor

        c, tr, va = self.c, self.splits["train"], self.splits["val"]
        set_seed(c.seed)
        kwargs = dict(in_channels=self.in_ch, pool=c.box_pool)
        pred = create_model("box_predictor", **kwargs).to(self.dev)
        hist = train_box_predictor(
            pred,
            tr.x,
            target_train,
            self.canvas,
            epochs=c.box_epochs,
            seed=c.seed,
            x_val=va.x,
            boxes_val=boxes_val,
            shift=c.box_shift,
            device=c.device,
            cache_dir=self.cache,
            name=f"box-{label}-s{c.seed}",
            progress=self.progress,
        )
        self.rows.append(
            dict(
                key=f"box_predictor_{label}",
                model="box_predictor",
                kwargs=kwargs,
                checkpoint=pred.cache_path,
                accuracy=None,
                split="val",
                val_miou_vs_pseudo=hist[-1]["val_miou"],
                box_labels=label,
            )
        )
        return ForegroundCropper(pred, self.canvas, self.box_sizes, in_channels=self.in_ch), hist


def _select_pseudo_boxes(p: _Pipeline, cam_net: nn.Module) -> tuple:
    """Grad-CAM layer / split / growth chosen on validation: every candidate's squared + snapped *train* pseudo-boxes
    give crops a probe classifier is trained on; its accuracy on the *validation* pseudo-box crops ranks them (ties
    -> the first listed; one candidate: no probe). Returns (table, (layer, split, grow), pseudo(layer, split, grow,
    split_name) -> float pixel boxes)."""
    import pandas as pd

    from .crop import cached_gradcam, cam_boxes, crop_resize, expand_boxes, snap_boxes

    c, cam_r = p.c, p.res[0]
    maps = {
        la: {k: cached_gradcam(cam_net, s.x, s.y, la, cam_r, p.cache) for k, s in p.splits.items()}
        for la in c.cam_layers
    }

    def pseudo(layer, split, grow, k):
        return expand_boxes(cam_boxes(maps[layer][k], split), grow, p.canvas)

    candidates = [(la, float(sp), float(g)) for la in c.cam_layers for sp in c.cam_splits for g in c.cam_grows]
    probe, rows = _dwr("probe", c.probe), []
    for la, sp, g in candidates:
        row = {"layer": la, "split": sp, "grow": g}
        if len(candidates) > 1:
            bx = {k: snap_boxes(pseudo(la, sp, g, k), p.canvas, p.box_sizes) for k in ("train", "val")}
            xs = [crop_resize(p.splits[k].x, bx[k], probe[2]) for k in ("train", "val")] + [None]
            info = p.fit(probe, xs, c.seed, f"probe-{la}-s{sp:g}-g{g:g}", epochs=c.probe_epochs)[3]
            side = float((bx["val"][:, 2] - bx["val"][:, 0]).double().mean())
            row.update(probe_val_accuracy=info["val_accuracy"], mean_val_box_side=side)
        rows.append(row)
    table = pd.DataFrame(rows)
    best = 0 if len(candidates) == 1 else int(table["probe_val_accuracy"].to_numpy().argmax())
    table["chosen"] = [i == best for i in range(len(table))]
    return table, candidates[best], pseudo


def _tiny() -> Config:
    """Seconds on ``crop.load_image_splits("fake", subset=60, test_subset=30)`` (3 x 32 x 32, no true boxes)."""
    return Config(
        dataset="fake",
        epochs=1,
        batch_size=16,
        box_epochs=1,
        box_shift=2,
        box_sizes=[8, 16, 24, 32],
        cam_layers=["last"],
        cam_splits=[0.5],
        cam_grows=[1.0],
        probe=[0.5, 0.5, 8],
        probe_epochs=1,
        resolutions=[16],
        cs_configs=[[0.5, 0.5, 8]],
        n_thresholds=5,
        compare_seeds=[0],
    )


@register_method(
    "edgecompress", config=Config, stage="07_dynamic_inference", paper="EdgeCompress, TCAD 2023", tiny=_tiny
)
def run(config: Config, loaders, dense=None, *, cache_dir=None, progress: bool = True) -> list[Result]:
    """EdgeCompress end to end; every choice on the validation split, the test split evaluated at the chosen point.

    ``loaders``: ``train.Splits`` of in-memory image sets (``x`` (N, C, S, S), ``y``, ``boxes`` (N, 4) or None), e.g.
    :func:`compresslib.methods.crop.load_image_splits`; ``dense`` is not used (every model is trained here);
    ``cache_dir`` (required): every trained model and Grad-CAM map, keyed by fingerprint, and the checkpoints the
    manifest rows point to. Steps: resolution-only models (RCC) -> Grad-CAM pseudo-boxes (setting chosen by a
    probe on val) -> box predictor -> crop-only (DIC) and compound-shrunk models on its crops -> cascade small ->
    large crop-only model, small model and threshold chosen on the val sweeps -> per seed of ``compare_seeds``
    the small/large models retrained and the threshold chosen again -> crop-only vs resolution-only at the lowest
    resolution per seed -> (true boxes only) the box-quality ablation.

    Returns one :class:`Result` per static model of ``seed`` (on the board: cost from the architecture), per model
    retrained for another seed (not on the board), and one ``"cascade"`` Result per seed; the one of ``seed`` is
    on the board at its val-chosen threshold and carries every table in ``metrics["report"]`` (:func:`report`)."""
    import pandas as pd

    from ..train import set_seed
    from .crop import box_size_histogram

    c = config.validate()
    if cache_dir is None:
        raise ValueError(
            "edgecompress run needs cache_dir (e.g. results.cache_dir(OUT_DIR)): models, maps, checkpoints"
        )
    splits = {k: getattr(loaders, k, None) for k in ("train", "val", "test")}
    if any(s is None or not hasattr(s, "x") for s in splits.values()):
        raise ValueError("loaders must hold train, val and test image sets (x, y, boxes), e.g. crop.load_image_splits")
    p = _Pipeline(c, splits, cache_dir, progress)
    if min(p.box_sizes) < 1 or max(p.box_sizes) > p.canvas:
        raise ValueError(
            f"box_sizes must lie in [1, {p.canvas}] - pixels of the {p.canvas}-px {c.dataset} images, got "
            f"{p.box_sizes}"
            + (
                ""
                if splits["test"].boxes is not None
                else f" (set the image size >= {max(p.box_sizes)} to resize {c.dataset} up, or give smaller box_sizes)"
            )
        )
    set_seed(c.seed)
    tr, va, te = splits["train"], splits["val"], splits["test"]
    out, static, nets, logits = [], [], {}, {}

    def add_static(kind, name, cfg, xs, key, cropper_macs):
        m, zv, zt, info = p.fit(cfg, xs, c.seed, key)
        nets[(kind, cfg)], logits[(kind, cfg)], p.manifests[(kind, cfg)] = m, (zv, zt), info["manifest"]
        row = {"kind": kind, "name": name, "d": cfg[0], "w": cfg[1], "r": cfg[2], **info}
        static.append((row, cropper_macs))

    for r in p.res:  # resolution-only (the paper's RCC): the whole image plainly down-scaled
        add_static(
            "resolution-only",
            f"RCC r{r}",
            (1.0, 1.0, r),
            [_resize(s.x, r) for s in (tr, va, te)],
            f"rcc-r{r}-s{c.seed}",
            0,
        )
    cam_table, (cam_layer, cam_split, cam_grow), pseudo_fn = _select_pseudo_boxes(
        p, nets[("resolution-only", (1.0, 1.0, p.res[0]))]
    )
    pseudo = {k: pseudo_fn(cam_layer, cam_split, cam_grow, k) for k in splits}
    cropper, box_hist = p.fit_cropper(pseudo["train"], pseudo["val"], "pseudo")
    boxes = {k: cropper.boxes(s.x) for k, s in splits.items()}
    for r in p.res:  # crop-only (Smart Scissor DIC): the full model on the predicted crop
        add_static("crop-only", f"DIC r{r}", (1.0, 1.0, r), p.crops(boxes, r), f"crop-r{r}-s{c.seed}", cropper.macs)
    cs_configs = [_dwr("cs_configs", v) for v in c.cs_configs]
    for cfg in cs_configs:  # compound-shrunk on the crops
        add_static(
            "crop+shrink",
            f"CS d{cfg[0]:g} w{cfg[1]:g} r{cfg[2]}",
            cfg,
            p.crops(boxes, cfg[2]),
            f"cs-d{cfg[0]:g}-w{cfg[1]:g}-r{cfg[2]}-s{c.seed}",
            cropper.macs,
        )
    table = pd.DataFrame([row for row, _ in static]).drop(columns="manifest")
    table["cropper_macs"] = np.where(table["kind"] == "resolution-only", 0, cropper.macs)
    table["macs"] = table["macs"] + table["cropper_macs"]
    table["accuracy"] = table["test_accuracy"]
    for (row, crop_macs), (_, t) in zip(static, table.iterrows()):
        net = nets[(row["kind"], (row["d"], row["w"], row["r"]))]
        board = _board(c, row["kind"] + " " + row["name"], [p.in_ch, row["r"], row["r"]], crop_macs)
        out.append(
            Result(
                "EdgeCompress",
                board["setting"],
                c.seed,
                net,
                row["test_accuracy"],
                "test",
                {**t.to_dict(), "manifest": row["manifest"]},
                board,
            )
        )

    rep = _cascade(p, cs_configs, nets, logits, cropper, boxes, out)
    rep.update(
        static=table,
        cam_selection=cam_table,
        cam_choice={"layer": cam_layer, "split": cam_split, "grow": cam_grow},
        cropper_macs=cropper.macs,
        box_val_miou=box_hist[-1]["val_miou"],
        test_box_sides=box_size_histogram(boxes["test"], p.box_sizes),
        rows=p.rows,
    )
    rep.update(_baselines(p, logits, boxes, out))
    rep.update(_true_box_ablation(p, nets, pseudo, pseudo_fn, cam_table, boxes))
    return out


def _board(c: Config, setting: str, input_size, crop_macs: float, **kw) -> dict:
    """A leaderboard row of stage 07: fp32, costed from the architecture (``weights`` False), cropper MACs extra."""
    return {
        "method": "EdgeCompress",
        "setting": setting,
        "seed": int(c.seed),
        "input_size": [int(v) for v in input_size],
        "base_model": "shrinkable_resnet",
        "dataset": c.dataset,
        "weight_bits": None,
        "extra_macs": float(crop_macs),
        "weights": False,
        "deploy_form": "dense-executed",
        **kw,
    }


def _seed_row(p: _Pipeline, s: int, zs, zl, macs, thresholds, crop_macs, large_test_macs) -> dict:
    """The cascade of one seed: threshold chosen on its val sweep, test evaluated once there."""
    c, va, te = p.c, p.splits["val"], p.splits["test"]
    kw = dict(lo=c.lo, alpha=c.alpha, score=c.score, crop_macs=crop_macs)
    point, ok = choose_threshold(sweep([zs[0], zl[0]], macs, thresholds, va.y, **kw), _acc(zl[0], va.y), c.tol)
    tp = sweep([zs[1], zl[1]], macs, [point["threshold"]], te.y, **kw).iloc[0]
    return {
        "seed": s,
        "small_accuracy": _acc(zs[1], te.y),
        "large_accuracy": _acc(zl[1], te.y),
        "cascade_accuracy": float(tp["accuracy"]),
        "macs_fraction": float(tp["avg_macs"] / large_test_macs),
        "threshold": point["threshold"],
        "escalated": float(tp["escalated"]),
        "val_reached": ok,
        "val_cascade_accuracy": point["accuracy"],
        "val_large_accuracy": _acc(zl[0], va.y),
    }


def _cascade(p: _Pipeline, cs_configs, nets, logits, cropper, boxes, out: list) -> dict:
    """Small shrunk model -> large crop-only model at the top resolution. On val: every candidate small model's
    sweep; the one whose chosen point (cheapest threshold within tol of the large model's val accuracy) costs the
    fewest MACs, at that threshold. Test: the sweeps of three accumulation rules, evaluated at the chosen threshold;
    then the same per seed of ``compare_seeds`` (small and large models retrained, threshold re-chosen on val)."""
    import pandas as pd

    from ..cost import total_macs
    from ..results import mean_std
    from ..viz import operating_point
    from .crop import crop_resize

    c, va, te = p.c, p.splits["val"], p.splits["test"]
    r0 = p.res[0]
    large_key = ("crop-only", (1.0, 1.0, r0))
    large, (zl_val, zl_test) = nets[large_key], logits[large_key]
    thresholds = np.linspace(0.0, 1.0, c.n_thresholds)
    large_stage_macs = total_macs(large, (p.in_ch, r0, r0))
    kw = dict(lo=c.lo, alpha=c.alpha, score=c.score, crop_macs=cropper.macs)
    cands = [_dwr("small", c.small)] if c.small else cs_configs
    val_tables = {}
    for cfg in cands:
        macs = [total_macs(nets[("crop+shrink", cfg)], (p.in_ch, cfg[2], cfg[2])), large_stage_macs]
        val_tables[cfg] = sweep([logits[("crop+shrink", cfg)][0], zl_val], macs, thresholds, va.y, **kw)
    large_val_acc = _acc(zl_val, va.y)
    small_cfg, val_point, val_reached = select_cascade(val_tables, large_val_acc, c.tol)
    threshold = val_point["threshold"]
    sel = []
    for cfg, t in val_tables.items():
        pt, ok = choose_threshold(t, large_val_acc, c.tol)
        sel.append(
            {
                "small": _name(cfg),
                "small_val_accuracy": _acc(logits[("crop+shrink", cfg)][0], va.y),
                "threshold": pt["threshold"],
                "val_accuracy": pt["accuracy"],
                "val_avg_macs": pt["avg_macs"],
                "val_macs_fraction": pt["avg_macs"] / (cropper.macs + large_stage_macs),
                "reaches_large_val": ok,
                "chosen": cfg == small_cfg,
            }
        )
    small = nets[("crop+shrink", small_cfg)]
    zs_val, zs_test = logits[("crop+shrink", small_cfg)]
    casc = Cascade(
        [small, large],
        [small_cfg[2], r0],
        lo=c.lo,
        hi=threshold,
        alpha=c.alpha,
        score=c.score,
        crop_macs=cropper.macs,
        in_channels=p.in_ch,
    )
    rules = {f"sum a={c.alpha:g}": ("sum", c.alpha), "sum a=1": ("sum", 1.0), "replace": ("replace", 1.0)}
    tables = {
        name: sweep(
            [zs_test, zl_test],
            casc.macs_per_stage,
            thresholds,
            te.y,
            lo=c.lo,
            alpha=a,
            score=c.score,
            accumulate=rule,
            crop_macs=cropper.macs,
        )
        for name, (rule, a) in rules.items()
    }
    main_rule = f"sum a={c.alpha:g}"
    sw = tables[main_rule]
    test_point = operating_point(sw, threshold)  # the one test number: at the val-chosen threshold
    check = casc.run(te.x, boxes["test"], te.y)
    if abs(check.accuracy - test_point["accuracy"]) > 1e-12 or abs(check.avg_macs - test_point["avg_macs"]) > 1e-6:
        raise RuntimeError(f"Cascade.run {check.accuracy}, {check.avg_macs} disagrees with its sweep row {test_point}")
    small_macs, large_macs = cropper.macs + casc.macs_per_stage[0], cropper.macs + casc.macs_per_stage[1]
    rep = {
        "thresholds": thresholds,
        "small_selection": pd.DataFrame(sel),
        "val_sweep": val_tables[small_cfg],
        "small_config": _name(small_cfg),
        "tolerance": c.tol,
        "threshold": float(threshold),
        "val_point": val_point,
        "val_reached": bool(val_reached),
        "large_val_accuracy": large_val_acc,
        "sweeps": tables,
        "main_rule": main_rule,
        "test_point": test_point,
        "oracle": oracle([zs_test, zl_test], casc.macs_per_stage, te.y, alpha=c.alpha, crop_macs=cropper.macs),
        "small_accuracy": _acc(zs_test, te.y),
        "large_accuracy": _acc(zl_test, te.y),
        "small_macs": small_macs,
        "large_macs": large_macs,
        "macs_fraction": test_point["avg_macs"] / large_macs,
        # chosen ON TEST: optimistic, for comparison only
        "hindsight": cheapest_at_accuracy(sw, _acc(zl_test, te.y), tol=c.tol),
        "scores": confidence(zs_test, c.score).numpy(),
        "explorer_images": crop_resize(te.x, boxes["test"], r0),
    }
    keys = ("accuracy", "avg_macs", "escalated")
    pts = [
        ("small " + _name(small_cfg) + " alone (hi = 0)", 0.0, rep["small_accuracy"], small_macs, 0.0),
        (f"large crop-only r{r0} alone", None, rep["large_accuracy"], large_macs, 1.0),
        ("cascade at the val-chosen threshold", threshold, *(test_point[k] for k in keys)),
        ("oracle gate (upper bound)", None, *(rep["oracle"][k] for k in keys)),
    ]
    if rep["hindsight"] is not None:
        hs = rep["hindsight"]
        pts.append(("threshold chosen on TEST (optimistic)", float(hs["threshold"]), *(float(hs[k]) for k in keys)))
    rep["points"] = pd.DataFrame(pts, columns=["test point", "threshold", *keys])
    rep["points"]["macs_fraction"] = rep["points"]["avg_macs"] / large_macs
    seed_rows = []
    small_name = f"CS d{small_cfg[0]:g} w{small_cfg[1]:g} r{small_cfg[2]}"
    for s in p.seeds:
        if s == c.seed:
            zs, zl = (zs_val, zs_test), (zl_val, zl_test)
        else:
            ms, zsv, zst, i_s = p.fit(
                small_cfg,
                p.crops(boxes, small_cfg[2]),
                s,
                f"cs-d{small_cfg[0]:g}-w{small_cfg[1]:g}-r{small_cfg[2]}-s{s}",
            )
            ml, zlv, zlt, i_l = p.fit((1.0, 1.0, r0), p.crops(boxes, r0), s, f"crop-r{r0}-s{s}")
            zs, zl = (zsv, zst), (zlv, zlt)
            _add_seed_model(out, "crop+shrink " + small_name, s, ms, i_s)
            _add_seed_model(out, f"crop-only DIC r{r0}", s, ml, i_l)
        row = _seed_row(p, s, zs, zl, casc.macs_per_stage, thresholds, cropper.macs, large_macs)
        seed_rows.append(row)
        if s != c.seed:
            out.append(Result("EdgeCompress", "cascade", s, None, row["cascade_accuracy"], "test", row))
    cs = pd.DataFrame(seed_rows)
    cs["cascade_minus_large"] = cs["cascade_accuracy"] - cs["large_accuracy"]
    cs["holds"] = (cs["cascade_minus_large"] >= -c.tol - 1e-12) & (cs["macs_fraction"] <= 0.5)
    cols = ("small_accuracy", "large_accuracy", "cascade_accuracy", "macs_fraction", "cascade_minus_large")
    rep.update(cascade_seeds=cs, per_seed_summary={k: mean_std(cs[k]) for k in cols})
    out.append(_cascade_result(p, small, large, small_cfg, test_point, cropper.macs, rep, seed_rows))
    return rep


def _add_seed_model(out: list, setting: str, seed: int, model, info: dict) -> None:
    """A model retrained for another seed (per-seed rows only, not on the board); each trained model once."""
    if info["manifest"]["key"] not in {r.metrics.get("manifest", {}).get("key") for r in out}:
        out.append(Result("EdgeCompress", setting, seed, model, info["test_accuracy"], "test", dict(info)))


def _cascade_result(p: _Pipeline, small, large, small_cfg, point, crop_macs, rep, seed_rows) -> Result:
    """The cascade of ``seed`` at its val-chosen threshold as one module (:class:`CascadeCost`), its checkpoint (both
    trained stages' weights) written once into the cache, and its board row: the large model's layers run on the
    escalated fraction of the images (``exec_weight``)."""
    from ..results import param_hash
    from ..train import save_checkpoint

    c, r0 = p.c, p.res[0]
    module = CascadeCost(Resized(small, small_cfg[2]), large).eval()
    parts = {"small": p.manifests[("crop+shrink", small_cfg)], "large": p.manifests[("crop-only", (1.0, 1.0, r0))]}
    key = {k: Path(v["checkpoint"]).name for k, v in parts.items()}  # fingerprinted names of the trained stages
    ck = p.cache / f"cascade-{param_hash(key)}.pt"
    if not ck.is_file():
        save_checkpoint(ck, model={k: v.detach().cpu() for k, v in module.state_dict().items()})
    names = [n for n, m in module.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and n.startswith("large.")]
    board = _board(
        c,
        f"cascade hi={point['threshold']:.2f}",
        [p.in_ch, r0, r0],
        crop_macs,
        exec_weight={n: float(point["escalated"]) for n in names},
        deploy_form="cascade (both stages timed)",
    )
    spec = {k: {"model": v["model"], "kwargs": v["kwargs"]} for k, v in parts.items()}  # rebuild's "cascade" builder
    manifest = {
        "key": "cascade",
        "model": "cascade",
        "checkpoint": str(ck),
        "seed": c.seed,
        "kwargs": {**spec, "small_resolution": small_cfg[2]},
    }
    row = next(r for r in seed_rows if r["seed"] == c.seed)
    return Result(
        "EdgeCompress",
        board["setting"],
        c.seed,
        module,
        point["accuracy"],
        "test",
        {**row, "report": rep, "manifest": manifest},
        board,
    )


def _baselines(p: _Pipeline, logits, boxes, out: list) -> dict:
    """Crop-only vs resolution-only at the lowest resolution, per seed (models retrained for the other seeds)."""
    import pandas as pd

    c, (tr, va, te) = p.c, (p.splits[k] for k in ("train", "val", "test"))
    r_low, rows = p.res[-1], []
    cfg = (1.0, 1.0, r_low)
    for s in p.seeds:
        for kind, short, name in (("resolution-only", "rcc", "RCC"), ("crop-only", "crop", "DIC")):
            if s == c.seed:
                a = _acc(logits[(kind, cfg)][1], te.y)
            else:
                xs = [_resize(d.x, r_low) for d in (tr, va, te)] if kind == "resolution-only" else p.crops(boxes, r_low)
                m, _, _, info = p.fit(cfg, xs, s, f"{short}-r{r_low}-s{s}")
                _add_seed_model(out, f"{kind} {name} r{r_low}", s, m, info)
                a = info["test_accuracy"]
            rows.append({"seed": s, "kind": kind, "r": r_low, "test_accuracy": a})
    return {"low_resolution": r_low, "baseline_seeds": pd.DataFrame(rows)}


def _true_box_ablation(p: _Pipeline, nets, pseudo, pseudo_fn, cam_table, boxes) -> dict:
    """The only use of true boxes (cluttered digits): quality of the chosen pseudo-boxes and the predicted crops
    (mIoU, fraction of the digit inside the crop), the crop-only classifiers fed true-box crops, every Grad-CAM
    candidate's test mIoU (hindsight) and, with ``oracle_boxes``, a box predictor trained on the true boxes.
    Nothing here feeds back into any choice. Box-quality values are None without true boxes."""
    import pandas as pd

    from .crop import box_coverage, box_iou, snap_boxes

    none = {"pseudo_box_test_miou": None, "predicted_crop_test_miou": None, "digit_inside_predicted_crop": None}
    tr, te = p.splits["train"], p.splits["test"]
    if te.boxes is None:
        note = f"true-box ablation skipped: {p.c.dataset} has no true boxes"
        return {
            "box_quality": none,
            "ablation": {"tables": [], "note": note + ("; oracle_boxes ignored" * p.c.oracle_boxes)},
        }
    box_sets = {"pseudo-box predictor": boxes["test"]}
    if p.c.oracle_boxes:
        box_sets["true-box predictor"] = p.fit_cropper(tr.boxes, pseudo["val"], "true")[0].boxes(te.x)
    box_rows = [
        {
            "labels": k,
            "final_test_miou": float(box_iou(b, te.boxes).mean()),
            "digit_inside_crop": float(box_coverage(b, te.boxes).mean()),
        }
        for k, b in box_sets.items()
    ]

    def snapped(b):
        return snap_boxes(b, p.canvas, p.box_sizes)

    box_sets["true boxes (squared+snapped)"] = snapped(te.boxes)
    crops = [
        {"boxes": k, "r": r, "test_accuracy": _acc(model_logits(nets[("crop-only", (1.0, 1.0, r))], te.x, b, r), te.y)}
        for k, b in box_sets.items()
        for r in p.res
    ]
    fin = snapped(pseudo["test"])
    cand = [
        {
            "layer": la,
            "split": sp,
            "grow": g,
            "test_miou_vs_true": float(box_iou(snapped(pseudo_fn(la, sp, g, "test")), te.boxes).mean()),
        }
        for la, sp, g in cam_table[["layer", "split", "grow"]].itertuples(index=False)
    ]
    quality = {
        "pseudo_box_test_miou": float(box_iou(pseudo["test"], te.boxes).mean()),
        "predicted_crop_test_miou": box_rows[0]["final_test_miou"],
        "digit_inside_predicted_crop": box_rows[0]["digit_inside_crop"],
    }
    return {
        "box_quality": quality,
        "ablation": {
            "tables": [
                pd.DataFrame(box_rows),
                pd.DataFrame(crops).pivot(index="boxes", columns="r", values="test_accuracy"),
                pd.DataFrame(cand).assign(chosen_on_val=cam_table["chosen"].to_numpy()),  # hindsight, never a choice
            ],
            "note": f"chosen pseudo-boxes (test) after square+snap: mIoU vs true {float(box_iou(fin, te.boxes).mean()):.3f}, "
            f"digit inside {float(box_coverage(fin, te.boxes).mean()):.3f}",
        },
    }


def report(results: list[Result]) -> dict:
    """Every table of a :func:`run`: the ``metrics["report"]`` of its board cascade Result."""
    for r in results:
        if r.board is not None and "report" in r.metrics:
            return r.metrics["report"]
    raise ValueError("no EdgeCompress cascade Result with a report among these results (pass what run returned)")


def manifest_rows(results: list[Result]) -> list[dict]:
    """``results.record_model`` arguments (key, model, kwargs, checkpoint, accuracy, split, board, extras) of every
    model of a :func:`run`: the Results with a saved model (board rows and per-seed retrains) and the box
    predictors."""
    rows = []
    for r in results:
        m = r.metrics.get("manifest")
        if m is not None:
            rows.append({**m, "accuracy": float(r.accuracy), "split": r.split, "board": r.board})
    return rows + list(report(results)["rows"])


def stage_metrics(results: list[Result]) -> dict:
    """Stage 07's ``metrics.json`` from a :func:`run`: the static models, the cascade at the val-chosen point (and
    the test-chosen hindsight point, for comparison only), the per-seed rows and their summary, the baselines per
    seed, the box-quality metrics (None without true boxes) and the oracle gate."""
    rep = report(results)
    sw, cs, tp, hs = rep["sweeps"][rep["main_rule"]], rep["cascade_seeds"], rep["test_point"], rep["hindsight"]
    piv = rep["baseline_seeds"].pivot(index="seed", columns="kind", values="test_accuracy")
    vp, cam = rep["val_point"], rep["cam_choice"]
    return {
        "small_accuracy": rep["small_accuracy"],
        "small_macs": rep["small_macs"],
        "large_accuracy": rep["large_accuracy"],
        "large_macs": rep["large_macs"],
        "sweep": [
            {k: float(getattr(r, k)) for k in ("threshold", "accuracy", "avg_macs", "escalated")}
            for r in sw.itertuples()
        ],
        # every choice below was made on the validation split (pseudo-boxes only); test reported at that point
        "selection_split": "val",
        "tolerance": rep["tolerance"],
        "small_config": rep["small_config"],
        "threshold": rep["threshold"],
        "val_point": {
            "accuracy": vp["accuracy"],
            "avg_macs": vp["avg_macs"],
            "escalated": vp["escalated"],
            "large_val_accuracy": rep["large_val_accuracy"],
            "reached": rep["val_reached"],
        },
        "cascade_accuracy": tp["accuracy"],
        "cascade_avg_macs": tp["avg_macs"],
        "cascade_escalated": tp["escalated"],
        "macs_fraction_at_large_accuracy": rep["macs_fraction"],  # test MACs at the val-chosen threshold / large
        "test_hindsight_macs_fraction": None if hs is None else float(hs["avg_macs"] / rep["large_macs"]),
        "cam_layer": cam["layer"],
        "cam_split": cam["split"],
        "cam_grow": cam["grow"],
        "cam_selection": rep["cam_selection"].to_dict("records"),
        "small_selection": rep["small_selection"].to_dict("records"),
        "per_seed": [
            {k: (bool(v) if isinstance(v, (bool, np.bool_)) else v) for k, v in r.items()}
            for r in cs.to_dict("records")
        ],
        "per_seed_summary": {k: {"mean": mu, "std": sd} for k, (mu, sd) in rep["per_seed_summary"].items()},
        "low_resolution": int(rep["low_resolution"]),
        "compare_seeds": [int(s) for s in piv.index],
        "crop_only_accuracy_per_seed": [float(v) for v in piv["crop-only"]],
        "resolution_only_accuracy_per_seed": [float(v) for v in piv["resolution-only"]],
        **rep["box_quality"],  # null on datasets without true boxes
        "oracle_gate_accuracy": float(rep["oracle"]["accuracy"]),
        "oracle_gate_avg_macs": float(rep["oracle"]["avg_macs"]),
    }
