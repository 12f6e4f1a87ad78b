# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python (compresslib)
#     language: python
#     name: compresslib
# ---

# %% [markdown]
# # 07 · EdgeCompress: foreground cropping, compound shrinking and a dynamic cascade
#
# **Paper.** Kong et al., *EdgeCompress: Coupling Multi-Dimensional Model Compression and Dynamic
# Inference for EdgeAI* (TCAD 2023; predecessor Smart Scissor, ICCAD 2022). Three ideas:
# (1) *dynamic image cropping* — a light box predictor finds the foreground, the image is cropped
# to it and resized to a **lower** resolution, so less resolution is wasted on background;
# (2) *compound shrinking* of a ResNet-50 along depth d, inner bottleneck width w and input
# resolution r; (3) a *cascade*: a small shrunk model answers the confident images, the rest are
# escalated to a large model and the two logit vectors are accumulated (z_small + 1.6·z_large).
# Claim: ResNet-50 with 48.8 % fewer MACs and +0.8 % top-1 on ImageNet (76.8 % at ≈2.1 of 4.2 GMACs).
#
# **What this reproduces, small scale.** *Cluttered digits* (MNIST digits at a random scale and
# position on a 64×64 canvas with distractor fragments and noise, true box kept), a bottleneck
# ResNet family trained on CPU, the box predictor trained on Grad-CAM pseudo-boxes (true boxes as
# an ablation), resolution-only vs crop-only baselines, the static Pareto front, and the cascade's
# accuracy-vs-average-MACs curve over a threshold sweep, with an ipywidgets slider over the saved sweep.
#
# **Selection on validation only.** Every choice is made on the validation split with pseudo-boxes
# only: the Grad-CAM layer / split / growth (by the validation accuracy of a small probe classifier
# trained on each candidate's crops), the cascade's small model among `CS_CONFIGS` and its threshold
# (the cheapest threshold of the *validation* sweep within `TOL` of the large model's validation
# accuracy). The test split is reported once, at that point, for `SEED` and for every seed of
# `COMPARE_SEEDS` (small and large models retrained per seed, threshold chosen on that seed's val).
# True boxes appear only in the labelled ablation cell.
#
# **Re-running is cheap.** Every model this notebook trains (classifiers, probes, box predictors)
# is kept in `results.cache_dir(OUT_DIR)` under a fingerprint of everything that determines it;
# re-executing with the same parameters trains nothing (each reuse is printed).
#
# **Other datasets.** With `DATASET` set to any other registered classification set (MNIST, CIFAR,
# ImageNet at `IMAGE_SIZE` 224 with `ARCH` resnet50, fake) the same pipeline runs on pseudo-boxes
# only: the box-quality metrics (null in metrics.json) and the true-box ablation are skipped.
#
# **Reads:** nothing for cluttered digits (built from the embedded MNIST subset); `DATA_ROOT` for
# non-embedded datasets. **Writes** under `OUT_DIR`:
# `metrics.json` (`small_accuracy`, `small_macs`, `large_accuracy`, `large_macs`, `sweep`,
# `macs_fraction_at_large_accuracy`, `selection_split`, `threshold`, `per_seed`, ...), `models.json`,
# `static_models.csv`, `cam_selection.csv`, `small_selection.csv`, `sweep_<rule>.csv`, `val_sweep.csv`,
# `small_scores.npy`, `cascade_seeds.csv`, `baseline_seeds.csv`, figures `examples.png`,
# `static_front.png`, `cascade_curve.png`, `explorer.png`.

# %% tags=["parameters"]
PROFILE = "default"  # profile name (set by compresslib.reproduce)
SEED = 0  # seed for splits' shuffling, init and training; range [0, 2147483647]
DATASET = "cluttered_digits"  # registered dataset; only cluttered_digits has true boxes (box metrics)
DATA_ROOT = ""  # folder of non-embedded datasets such as imagenet; unused for cluttered_digits
IMAGE_SIZE = 0  # full-resolution image side of a non-cluttered dataset, 0: its native size; range [0, 4096]
ARCH = "cifar"  # classifier family: cifar - 3 stages 16/32/64, or resnet50 - the paper's ResNet-50 shape
OUT_DIR = "../artifacts/07_dynamic_inference"  # where figures, tables and metrics.json go
DEVICE = "cpu"  # cpu or cuda - models, Grad-CAM, box predictor and cascade logits run there
EPOCHS = 12  # epochs of every classifier (SGD-Nesterov, cosine LR, label smoothing 0.1); range [1, 10000]
SOURCE = "mnist5k"  # digits pasted on the canvases: mnist5k (28x28) or digits (8x8)
SUBSET = 0  # cap on training images, 0: all; non-cluttered sets draw it class-balanced; range [0, inf)
TEST_SUBSET = 0  # cap on test images of a non-cluttered dataset, 0: all; range [0, inf)
BATCH_SIZE = 64  # classifier batch size; range [1, 65536]
LR = 0.1  # classifier peak learning rate; range (0, 10]
BOX_EPOCHS = 20  # epochs of the box predictor (AdamW, cosine LR); range [1, 10000]
BOX_POOL = "grid"  # box predictor pooling: grid (4x4 map, keeps position) or avg (global, as the repo)
CAM_LAYERS = "last,penultimate"  # Grad-CAM target candidates: last stage (repo layer4) and/or penultimate (finer map)
CAM_SPLITS = "0.3,0.5"  # candidate Grad-CAM thresholds, fractions of the map's range in [0, 1) (CROP.CAM_SPLIT)
CAM_GROWS = "1.0,1.1"  # candidate pseudo-box growth factors in [1, 4] about the centre before square + snap
PROBE = "0.5:0.5:12"  # d:w:r of the probe classifier whose val accuracy on each candidate's crops picks the Grad-CAM setting
PROBE_EPOCHS = 4  # epochs of each probe; range [1, 10000]
BOX_SHIFT = 4  # box predictor training: random translation of canvas and box, pixels; range [0, 64]
BOX_SIZES = "16,32,48,64"  # crop sides in pixels of the full-resolution image the square boxes snap up to
RESOLUTIONS = "24,12"  # resolutions of the resolution-only and crop-only baselines (full model)
CS_CONFIGS = "0.5:0.5:16,0.5:0.5:12,0.5:1:12"  # compound-shrunk models d:w:r on crops (the small-model candidates)
SMALL = "auto"  # cascade stage 1: auto - chosen among CS_CONFIGS on val, or one d:w:r of CS_CONFIGS
ALPHA = 1.6  # accumulation weight a of the large model's logits (z_small + a * z_large); range (0, 100]
LO = 0.0  # lower threshold: margins not above LO are never escalated; range [0, 1)
SCORE = "margin"  # confidence score: margin (paper), maxprob or entropy
N_THRESHOLDS = 51  # points of the threshold sweep hi in [0, 1]; range [3, 100000]
TOL = 0.005  # operating point: cheapest val threshold within TOL of the large model's val accuracy; range [0, 1]
COMPARE_SEEDS = "0,1,2"  # seeds of the per-seed cascade and of crop-only vs resolution-only at the lowest resolution
ORACLE_BOXES = False  # ablation: also train the box predictor on the true boxes - cluttered_digits only

# %%
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import display

import compresslib
from compresslib import cluttered, cost, data, results, train, viz
from compresslib.methods import cascade, crop
from compresslib.models import create_model
from compresslib.models.shrinkable import arch_kwargs

threads = compresslib.set_threads()
t_start = time.perf_counter()


def _ints(s, name):
    try:
        v = [int(t) for t in str(s).split(",") if t.strip()]
    except ValueError as e:
        raise ValueError(f"{name} must be comma-separated integers, got {s!r}") from e
    if not v:
        raise ValueError(f"{name} is empty")
    return v


def _floats(s, name, lo, hi, hi_open=False):
    try:
        v = [float(t) for t in str(s).split(",") if t.strip()]
    except ValueError as e:
        raise ValueError(f"{name} must be comma-separated numbers, got {s!r}") from e
    if not v or any(not (lo <= x < hi if hi_open else lo <= x <= hi) for x in v):
        raise ValueError(
            f"{name} must be a non-empty list of numbers in [{lo}, {hi}{')' if hi_open else ']'}, got {s!r}"
        )
    return v


def viz_rgb(img):
    """(C, H, W) normalised image -> (H, W, C) in [0, 1] for display."""
    img = img.permute(1, 2, 0)
    return (img - img.min()) / (img.max() - img.min()).clamp_min(1e-12)


def _config(s, name="CS_CONFIGS"):
    try:
        d, w, r = (float(t) for t in s.split(":"))
    except ValueError as e:
        raise ValueError(f"{name}: compound-shrinking configs are d:w:r, got {s!r}") from e
    return d, w, int(r)


info = data.dataset_info(DATASET)  # clear error listing the registered datasets
TRUE_BOXES = DATASET == "cluttered_digits"  # true boxes exist: used only in the labelled ablation cell
if info.get("task", "classification") != "classification" or IMAGE_SIZE < 0 or TEST_SUBSET < 0 or SUBSET < 0:
    raise ValueError("DATASET must be a classification set; IMAGE_SIZE, SUBSET, TEST_SUBSET >= 0")
if TRUE_BOXES and IMAGE_SIZE not in (0, 64):
    raise ValueError("cluttered_digits canvases are 64 px: leave IMAGE_SIZE at 0")
CANVAS = 64 if TRUE_BOXES else int(IMAGE_SIZE or info["image_size"])  # full-resolution side the boxes live on
NUM_CLASSES, IN_CH = int(info["num_classes"]), int(info["in_channels"])
arch_kwargs(ARCH, 1.0, 1.0, 32)  # clear error for an unknown ARCH
dev = crop.resolve_device(DEVICE)  # clear error if cuda is asked for but absent
cam_layers = [t.strip() for t in CAM_LAYERS.split(",") if t.strip()]
if not cam_layers or any(t not in ("last", "penultimate") for t in cam_layers) or BOX_SHIFT < 0:
    raise ValueError(f"CAM_LAYERS must list last and/or penultimate (got {CAM_LAYERS!r}); BOX_SHIFT >= 0")
cam_splits = _floats(CAM_SPLITS, "CAM_SPLITS", 0.0, 1.0, hi_open=True)
cam_grows = _floats(CAM_GROWS, "CAM_GROWS", 1.0, 4.0)
box_sizes, resolutions = _ints(BOX_SIZES, "BOX_SIZES"), sorted(_ints(RESOLUTIONS, "RESOLUTIONS"), reverse=True)
cs_configs = [_config(c) for c in CS_CONFIGS.split(",") if c.strip()]
probe_cfg, compare_seeds = _config(PROBE, "PROBE"), _ints(COMPARE_SEEDS, "COMPARE_SEEDS")
if SMALL != "auto" and _config(SMALL, "SMALL") not in cs_configs:
    raise ValueError(f"SMALL={SMALL!r} must be 'auto' or one of CS_CONFIGS {CS_CONFIGS!r}")
if SEED not in compare_seeds:
    compare_seeds = [SEED] + compare_seeds
if min(box_sizes) < 1 or max(box_sizes) > CANVAS:
    raise ValueError(
        f"BOX_SIZES must lie in [1, {CANVAS}] - pixels of the {CANVAS}-px {DATASET} images, got {BOX_SIZES!r}"
        + (
            ""
            if TRUE_BOXES
            else f" (IMAGE_SIZE {IMAGE_SIZE}: set IMAGE_SIZE >= {max(box_sizes)}, e.g. 64, "
            f"to resize {DATASET} up, or give smaller BOX_SIZES)"
        )
    )
cascade.check_thresholds(LO, 1.0)
if BOX_POOL not in ("avg", "grid"):
    raise ValueError(f"BOX_POOL must be avg or grid, got {BOX_POOL!r}")
if min(EPOCHS, BOX_EPOCHS, PROBE_EPOCHS) < 1 or N_THRESHOLDS < 3 or not 0 <= TOL <= 1:
    raise ValueError("EPOCHS, BOX_EPOCHS, PROBE_EPOCHS >= 1, N_THRESHOLDS >= 3 and TOL in [0, 1] required")
out = Path(OUT_DIR)
out.mkdir(parents=True, exist_ok=True)
# every trained model (and Grad-CAM map), keyed by fingerprint: a re-run with the same inputs trains nothing
CACHE = results.cache_dir(out)
train.set_seed(SEED)

# %% [markdown]
# ## Data: cluttered digits (or any registered classification set)
# The split is made on source digits (fixed seed); validation is a stratified slice of train.
# Red boxes are the true digit boxes (tight box of the pasted digit's ink) where the dataset has them.
# Any other dataset (MNIST, CIFAR, ImageNet, fake) is loaded at its full resolution CANVAS (ImageNet:
# resize 256 + centre crop 224) without true boxes: every crop is cut from that image and resized to
# each model's resolution.

# %%
if TRUE_BOXES:
    tr_all, te = (cluttered.load_cluttered(k, SOURCE, cache_dir=CACHE) for k in ("train", "test"))
else:
    root = DATA_ROOT or None
    tr_all = data.load_images(DATASET, "train", root, CANVAS, limit=SUBSET, seed=SEED)
    te = data.load_images(DATASET, "test", root, CANVAS, limit=TEST_SUBSET, seed=SEED)
tr_idx, va_idx = data.stratified_split(tr_all.y.numpy(), 0.1, seed=1235)
if SUBSET and SUBSET < len(tr_idx):
    tr_idx = tr_idx[np.sort(np.random.default_rng(SEED).permutation(len(tr_idx))[:SUBSET])]
sel = lambda d, i: cluttered.ClutteredSplit(d.x[i], d.y[i], None if d.boxes is None else d.boxes[i], d.source[i])  # noqa: E731
tr, va = sel(tr_all, torch.as_tensor(tr_idx)), sel(tr_all, torch.as_tensor(va_idx))
if tr.x.shape[-1] != CANVAS or tr.x.shape[1] != IN_CH:
    raise ValueError(f"{DATASET}: expected {IN_CH}x{CANVAS}x{CANVAS} images, got {tuple(tr.x.shape[1:])}")
splits = {"train": tr, "val": va, "test": te}
print(
    f"{DATASET}: {len(tr.y)} train / {len(va.y)} val / {len(te.y)} test images of {IN_CH}x{CANVAS}x{CANVAS}, "
    f"{NUM_CLASSES} classes; threads {threads}; "
    + (
        f"true box side: median {float((te.boxes[:, 2] - te.boxes[:, 0]).median()):.0f} px"
        if te.boxes is not None
        else "no true boxes: box-quality metrics and the true-box ablation are skipped"
    )
)
fig, axs = plt.subplots(1, 8, figsize=(12, 1.8))
for a, i in zip(axs, range(min(8, len(te.y)))):
    a.imshow(te.x[i, 0] if IN_CH == 1 else viz_rgb(te.x[i]), cmap="gray")
    if te.boxes is not None:
        x0, y0, x1, y1 = te.boxes[i].tolist()
        a.add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec="r"))
    a.set_title(int(te.y[i]), fontsize=8)
    a.axis("off")
_ = results.save_figure(fig, out / "examples.png")

# %% [markdown]
# ## Resolution-only baseline (the paper's RCC)
# The full model on the whole canvas, plainly down-scaled to each resolution. The largest one is
# also the classifier whose Grad-CAM provides the pseudo-boxes. `train_eval` trains (or loads, when
# its fingerprint matches a cached run) one classifier and returns its val and test logits.


# %%
def resize(x, r):
    return torch.nn.functional.interpolate(x, size=(r, r), mode="bilinear", antialias=True, align_corners=False)


def acc(z, y):
    return float((z.argmax(1) == y).double().mean())


def train_eval(cfg, xs, seed=SEED, name="classifier", epochs=EPOCHS, record=True):
    """Train a shrinkable ResNet (d, w, r) on inputs xs = (train, val, test or None) at its resolution (cached)."""
    d, w, r = cfg
    kwargs = dict(num_classes=NUM_CLASSES, in_channels=IN_CH, **arch_kwargs(ARCH, d, w, r))
    train.set_seed(seed)  # the initial weights depend on the seed only, not on what ran before
    m = create_model("shrinkable_resnet", **kwargs).to(dev)
    hist = crop.train_classifier(
        m,
        xs[0],
        tr.y,
        xs[1],
        va.y,
        epochs=epochs,
        lr=LR,
        batch_size=BATCH_SIZE,
        seed=seed,
        device=DEVICE,
        cache_dir=CACHE,
        name=name,
    )
    z_val = cascade.model_logits(m, xs[1], res=r)
    z_test = None if xs[2] is None else cascade.model_logits(m, xs[2], res=r)  # None: never looks at test
    res = {
        "val_accuracy": acc(z_val, va.y),
        "test_accuracy": None if z_test is None else acc(z_test, te.y),
        "macs": cost.total_macs(m, (IN_CH, r, r)),
        "params": sum(p.numel() for p in m.parameters()),
    }
    if record:
        results.record_model(
            out,
            name,
            model="shrinkable_resnet",
            kwargs=kwargs,
            checkpoint=hist["checkpoint"],
            accuracy=res["val_accuracy"],
            split="val",
            test_accuracy=res["test_accuracy"],
            seed=seed,
        )
    return m, z_val, z_test, {**res, "reused": bool(hist.get("reused"))}


rows, nets, logits = [], {}, {}  # logits[key] = (val, test)
for r in resolutions:
    m, zv, zt, res = train_eval((1.0, 1.0, r), [resize(s.x, r) for s in (tr, va, te)], name=f"rcc-r{r}-s{SEED}")
    nets[("resolution-only", r)], logits[("resolution-only", r)] = m, (zv, zt)
    rows.append({"kind": "resolution-only", "name": f"RCC r{r}", "d": 1.0, "w": 1.0, "r": r, **res})
display(pd.DataFrame(rows))

# %% [markdown]
# ## Grad-CAM pseudo-boxes, settings chosen on validation
# Pseudo-box = tight box of the Grad-CAM region above a split of its range (true class, as the repo's
# annotation step), grown about its centre, squared and snapped to BOX_SIZES. Candidates: every
# CAM_LAYERS × CAM_SPLITS × CAM_GROWS. Each candidate's squared + snapped *train* pseudo-boxes give
# crops on which a probe classifier (PROBE = d:w:r, PROBE_EPOCHS epochs) is trained; its accuracy on
# the *validation* pseudo-box crops ranks the candidates. No true box and no test image is used.
# (The probe is a proxy for "crops that keep the class evidence at low resolution"; it is not the
# cascade's model.)

# %%
cam_net, cam_r = nets[("resolution-only", resolutions[0])], resolutions[0]
cam_key = {"net": train.state_digest(cam_net.state_dict()), "r": cam_r}  # + the split's images, labels, layer


def gradcam_maps(layer, s):
    """Grad-CAM maps of one split, kept in CACHE under the CAM net's weights, the images, the labels and
    the layer (a re-run over the same artifacts loads them instead of a forward+backward pass per image)."""
    key = {**cam_key, "x": train.tensor_digest(s.x), "y": train.tensor_digest(s.y), "layer": layer}
    path = CACHE / f"gradcam-{results.param_hash(key)}.pt"
    if path.is_file():
        return torch.load(path)
    maps = crop.gradcam(
        cam_net, s.x, s.y, layer=cam_net.features if layer == "last" else cam_net.stages[-1], input_size=cam_r
    )
    torch.save(maps, path.with_suffix(".tmp"))
    path.with_suffix(".tmp").replace(path)
    return maps


cam_maps = {layer: {k: gradcam_maps(layer, s) for k, s in splits.items()} for layer in cam_layers}


def pseudo_boxes(layer, split, grow, k):
    """Grown Grad-CAM box (float pixels) of split k; the box predictor regresses these."""
    return crop.expand_boxes(crop.cam_boxes(cam_maps[layer][k], split), grow, CANVAS)


def snapped(b):
    return crop.regulate_boxes(crop.square_boxes(b, CANVAS), box_sizes, CANVAS)


candidates = [(la, sp, g) for la in cam_layers for sp in cam_splits for g in cam_grows]
cam_rows = []
for la, sp, g in candidates:
    row = {"layer": la, "split": sp, "grow": g}
    if len(candidates) > 1:
        bx = {k: snapped(pseudo_boxes(la, sp, g, k)) for k in ("train", "val")}
        xs = [crop.crop_resize(splits[k].x, bx[k], probe_cfg[2]) for k in ("train", "val")] + [None]
        res = train_eval(probe_cfg, xs, name=f"probe-{la}-s{sp:g}-g{g:g}", epochs=PROBE_EPOCHS, record=False)[3]
        row.update(
            probe_val_accuracy=res["val_accuracy"],
            mean_val_box_side=float((bx["val"][:, 2] - bx["val"][:, 0]).double().mean()),
        )
    cam_rows.append(row)
cam_table = pd.DataFrame(cam_rows)
best_cam = (
    0 if len(candidates) == 1 else int(cam_table["probe_val_accuracy"].to_numpy().argmax())
)  # ties -> first listed
CAM_LAYER, CAM_SPLIT, CAM_GROW = candidates[best_cam]
cam_table["chosen"] = [i == best_cam for i in range(len(cam_table))]
results.save_table(cam_table, out / "cam_selection.csv")
display(cam_table)
print(
    f"Grad-CAM setting chosen on val: layer {CAM_LAYER}, split {CAM_SPLIT:g}, grow {CAM_GROW:g}"
    + ("" if len(candidates) > 1 else " (the only candidate)")
)
pseudo = {k: pseudo_boxes(CAM_LAYER, CAM_SPLIT, CAM_GROW, k) for k in splits}

# %% [markdown]
# ## Foreground predictor: pseudo-boxes → box regression → square + snap
# The light predictor regresses the chosen pseudo-boxes with the weighted MSE [1, 1, 1.25, 1.25]
# (canvases and boxes randomly translated by up to BOX_SHIFT px); its boxes are squared and snapped
# up to BOX_SIZES. Its validation mIoU is measured against the validation *pseudo*-boxes (a fit
# diagnostic); box quality against true boxes is in the ablation cell.


# %%
def fit_cropper(target_train, label):
    train.set_seed(SEED)
    kwargs = dict(in_channels=IN_CH, pool=BOX_POOL)
    pred = create_model("box_predictor", **kwargs).to(dev)
    hist = crop.train_box_predictor(
        pred,
        tr.x,
        target_train,
        CANVAS,
        epochs=BOX_EPOCHS,
        seed=SEED,
        x_val=va.x,
        boxes_val=pseudo["val"],
        shift=BOX_SHIFT,
        device=DEVICE,
        cache_dir=CACHE,
        name=f"box-{label}-s{SEED}",
    )
    results.record_model(
        out,
        f"box_predictor_{label}",
        model="box_predictor",
        kwargs=kwargs,
        checkpoint=pred.cache_path,
        accuracy=None,
        split="val",
        val_miou_vs_pseudo=hist[-1]["val_miou"],
        box_labels=label,
    )
    return crop.ForegroundCropper(pred, CANVAS, box_sizes, in_channels=IN_CH), hist


cropper, box_hist = fit_cropper(pseudo["train"], "pseudo")
boxes = {k: cropper.boxes(s.x) for k, s in splits.items()}
print(
    f"box predictor: {cropper.macs / 1e6:.3f} M MACs; val mIoU vs val pseudo-boxes {box_hist[-1]['val_miou']:.3f}; "
    f"test crop sides {crop.box_size_histogram(boxes['test'], box_sizes)}"
)

# %% [markdown]
# ## Crop-only (Smart Scissor DIC) and compound-shrunk models on the crops
# Crop-only = the full model on the predicted crop at each resolution. Compound-shrunk = fewer
# blocks (d), thinner bottlenecks (w) and a smaller crop resolution (r), trained on crops.
# Every cropped pipeline pays the cropper's MACs.


# %%
def crops_at(r):
    return [crop.crop_resize(s.x, boxes[k], r) for k, s in splits.items()]


for r in resolutions:
    m, zv, zt, res = train_eval((1.0, 1.0, r), crops_at(r), name=f"crop-r{r}-s{SEED}")
    nets[("crop-only", r)], logits[("crop-only", r)] = m, (zv, zt)
    rows.append({"kind": "crop-only", "name": f"DIC r{r}", "d": 1.0, "w": 1.0, "r": r, **res})
for cfg in cs_configs:
    m, zv, zt, res = train_eval(cfg, crops_at(cfg[2]), name=f"cs-d{cfg[0]:g}-w{cfg[1]:g}-r{cfg[2]}-s{SEED}")
    nets[("shrunk", cfg)], logits[("shrunk", cfg)] = m, (zv, zt)
    rows.append(
        {
            "kind": "crop+shrink",
            "name": f"CS d{cfg[0]:g} w{cfg[1]:g} r{cfg[2]}",
            "d": cfg[0],
            "w": cfg[1],
            "r": cfg[2],
            **res,
        }
    )
static = pd.DataFrame(rows)
static["cropper_macs"] = np.where(static["kind"] == "resolution-only", 0, cropper.macs)
static["macs"] = static["macs"] + static["cropper_macs"]
static["accuracy"] = static["test_accuracy"]
results.save_table(static.drop(columns="reused"), out / "static_models.csv")
display(static[["name", "kind", "d", "w", "r", "params", "macs", "val_accuracy", "test_accuracy"]])

# %%
fig, ax = plt.subplots(figsize=(7, 4.5))
viz.plot_tradeoff(
    ax,
    static.assign(MMACs=static["macs"] / 1e6, top1=100 * static["accuracy"]),
    "MMACs",
    "top1",
    hue="kind",
    logx=True,
    xlabel="MACs per image (M, cropper included)",
    ylabel="top-1 accuracy (%)",
)
for _, row in static.iterrows():
    ax.annotate(
        row["name"], (row["macs"] / 1e6, 100 * row["accuracy"]), fontsize=6, xytext=(3, 3), textcoords="offset points"
    )
_ = results.save_figure(fig, out / "static_front.png")

# %% [markdown]
# ## Cascade: small shrunk model → large crop-only model, chosen on validation
# One forward pass per stage gives cached logits; `cascade.sweep` replays every threshold from them.
# On the **validation** split: every candidate small model's sweep (with the large crop-only model
# at the top resolution as stage 2); the small model is the one whose cheapest threshold within TOL
# of the large model's val accuracy costs the fewest average MACs (`cascade.select_cascade`); its
# threshold is that point (`cascade.choose_threshold`; if no threshold gets within TOL, the most
# accurate one). The **test** split is then evaluated once at that (small model, threshold).

# %%
large_key = ("crop-only", resolutions[0])
large, (zl_val, zl_test) = nets[large_key], logits[large_key]
thresholds = np.linspace(0.0, 1.0, N_THRESHOLDS)
large_stage_macs = cost.total_macs(large, (IN_CH, resolutions[0], resolutions[0]))


def val_sweep(cfg, zs_val, zl_val_):
    macs = [cost.total_macs(nets[("shrunk", cfg)], (IN_CH, cfg[2], cfg[2])), large_stage_macs]
    return cascade.sweep(
        [zs_val, zl_val_],
        macs,
        thresholds,
        va.y,
        lo=LO,
        alpha=ALPHA,
        score=SCORE,
        accumulate="sum",
        crop_macs=cropper.macs,
    )


cands = cs_configs if SMALL == "auto" else [_config(SMALL, "SMALL")]
val_tables = {cfg: val_sweep(cfg, logits[("shrunk", cfg)][0], zl_val) for cfg in cands}
large_val_acc = acc(zl_val, va.y)
small_cfg, val_point, val_reached = cascade.select_cascade(val_tables, large_val_acc, TOL)
threshold = val_point["threshold"]
sel_rows = []
for cfg, t in val_tables.items():
    p, ok = cascade.choose_threshold(t, large_val_acc, TOL)
    sel_rows.append(
        {
            "small": f"{cfg[0]:g}:{cfg[1]:g}:{cfg[2]}",
            "small_val_accuracy": acc(logits[("shrunk", cfg)][0], va.y),
            "threshold": p["threshold"],
            "val_accuracy": p["accuracy"],
            "val_avg_macs": p["avg_macs"],
            "val_macs_fraction": p["avg_macs"] / (cropper.macs + large_stage_macs),
            "reaches_large_val": ok,
            "chosen": cfg == small_cfg,
        }
    )
small_table = pd.DataFrame(sel_rows)
results.save_table(small_table, out / "small_selection.csv")
results.save_table(val_tables[small_cfg], out / "val_sweep.csv")
display(small_table)
SMALL_NAME = f"{small_cfg[0]:g}:{small_cfg[1]:g}:{small_cfg[2]}"
print(
    f"chosen on val: small model {SMALL_NAME}"
    + (" (given by SMALL)" if SMALL != "auto" else "")
    + f", threshold hi={threshold:.3f}: val accuracy {val_point['accuracy']:.4f} vs large {large_val_acc:.4f} "
    f"({'within' if val_reached else 'NOT within'} {100 * TOL:g} pt) at {val_point['avg_macs'] / 1e6:.3f} M MACs"
)

# %%
small = nets[("shrunk", small_cfg)]
zs_val, zs_test = logits[("shrunk", small_cfg)]
casc = cascade.Cascade(
    [small, large],
    [small_cfg[2], resolutions[0]],
    lo=LO,
    hi=threshold,
    alpha=ALPHA,
    score=SCORE,
    crop_macs=cropper.macs,
    in_channels=IN_CH,
)
rules = {f"sum a={ALPHA:g}": ("sum", ALPHA), "sum a=1": ("sum", 1.0), "replace": ("replace", 1.0)}
tables = {
    name: cascade.sweep(
        [zs_test, zl_test],
        casc.macs_per_stage,
        thresholds,
        te.y,
        lo=LO,
        alpha=a,
        score=SCORE,
        accumulate=rule,
        crop_macs=cropper.macs,
    )
    for name, (rule, a) in rules.items()
}
main_rule = f"sum a={ALPHA:g}"
sw = tables[main_rule]
for name, t in tables.items():
    results.save_table(t, out / f"sweep_{name.replace(' ', '_').replace('=', '')}.csv")
test_point = viz.operating_point(sw, threshold)  # the one test number: at the val-chosen threshold
check = casc.run(te.x, boxes["test"], te.y)
assert abs(check.accuracy - test_point["accuracy"]) < 1e-12 and abs(check.avg_macs - test_point["avg_macs"]) < 1e-6, (
    check,
    test_point,
)
orc = cascade.oracle([zs_test, zl_test], casc.macs_per_stage, te.y, alpha=ALPHA, crop_macs=cropper.macs)
small_acc, large_acc = acc(zs_test, te.y), acc(zl_test, te.y)
small_macs, large_macs = cropper.macs + casc.macs_per_stage[0], cropper.macs + casc.macs_per_stage[1]
frac = test_point["avg_macs"] / large_macs
hindsight = cascade.cheapest_at_accuracy(sw, large_acc, tol=TOL)  # chosen ON TEST: optimistic, for comparison only
scores = cascade.confidence(zs_test, SCORE).numpy()
np.save(out / "small_scores.npy", scores)
print(
    f"test, small {small_acc:.4f} @ {small_macs / 1e6:.3f} M MACs; large {large_acc:.4f} @ {large_macs / 1e6:.3f} M "
    f"(cropper {cropper.macs / 1e6:.3f} M included); Cascade.run at the chosen threshold == sweep row: ok"
)
print(
    f"test at the val-chosen hi={threshold:.3f}: accuracy {test_point['accuracy']:.4f} "
    f"({100 * (test_point['accuracy'] - large_acc):+.2f} pt vs large), {test_point['avg_macs'] / 1e6:.3f} M MACs = "
    f"{100 * frac:.1f} % of the large pipeline, escalated {100 * test_point['escalated']:.1f} %"
)
print(
    f"oracle gate (upper bound): {orc['accuracy']:.4f} @ {orc['avg_macs'] / 1e6:.3f} M, escalated {orc['escalated']:.3f}"
)
print(
    "for comparison only, the threshold picked on the TEST sweep (optimistic): "
    + (
        "none within tolerance"
        if hindsight is None
        else f"hi={hindsight['threshold']:.3f}, {100 * hindsight['avg_macs'] / large_macs:.1f} % of the large MACs"
    )
)
display(sw.iloc[:: max(1, N_THRESHOLDS // 10)])

# %%
fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.5))
viz.plot_threshold_curve(a1, tables, threshold, main_rule, static, orc)
vt = val_tables[small_cfg]
a1.plot(vt["avg_macs"] / 1e6, 100 * vt["accuracy"], "--", c="gray", lw=1, label="validation sweep (selection)")
xs = np.array([small_macs, large_macs]) / 1e6
a1.plot(xs, [100 * small_acc, 100 * large_acc], "k:", lw=1, label="interpolation small↔large")
a1.legend(fontsize=7)
for name, t in tables.items():
    a2.plot(t["threshold"], 100 * t["escalated"], label=name)
a2.axvline(threshold, c="r", lw=1, ls="--", label="chosen on val")
a2.set_xlabel("threshold hi")
a2.set_ylabel("escalated to the large model (%)")
a2.grid(alpha=0.3)
a2.legend(fontsize=7)
_ = results.save_figure(fig, out / "cascade_curve.png")

# %% [markdown]
# ## The cascade over seeds
# For every seed of COMPARE_SEEDS the small (chosen above) and large classifiers are retrained with
# that seed (the cropper, its crops and the small-model choice stay those of SEED) and the threshold
# is chosen again on that seed's **validation** sweep; the test split is evaluated once at it.

# %%
seed_rows = []
for s in compare_seeds:
    if s == SEED:
        zsv, zst, zlv, zlt = zs_val, zs_test, zl_val, zl_test
    else:
        _, zsv, zst, _ = train_eval(
            small_cfg,
            crops_at(small_cfg[2]),
            seed=s,
            name=f"cs-d{small_cfg[0]:g}-w{small_cfg[1]:g}-r{small_cfg[2]}-s{s}",
        )
        _, zlv, zlt, _ = train_eval(
            (1.0, 1.0, resolutions[0]), crops_at(resolutions[0]), seed=s, name=f"crop-r{resolutions[0]}-s{s}"
        )
    vs = cascade.sweep(
        [zsv, zlv], casc.macs_per_stage, thresholds, va.y, lo=LO, alpha=ALPHA, score=SCORE, crop_macs=cropper.macs
    )
    p, ok = cascade.choose_threshold(vs, acc(zlv, va.y), TOL)
    tp = cascade.sweep(
        [zst, zlt], casc.macs_per_stage, [p["threshold"]], te.y, lo=LO, alpha=ALPHA, score=SCORE, crop_macs=cropper.macs
    ).iloc[0]
    seed_rows.append(
        {
            "seed": s,
            "small_accuracy": acc(zst, te.y),
            "large_accuracy": acc(zlt, te.y),
            "cascade_accuracy": float(tp["accuracy"]),
            "macs_fraction": float(tp["avg_macs"] / large_macs),
            "threshold": p["threshold"],
            "escalated": float(tp["escalated"]),
            "val_reached": ok,
            "val_cascade_accuracy": p["accuracy"],
            "val_large_accuracy": acc(zlv, va.y),
        }
    )
casc_seeds = pd.DataFrame(seed_rows)
casc_seeds["cascade_minus_large"] = casc_seeds["cascade_accuracy"] - casc_seeds["large_accuracy"]
casc_seeds["holds"] = (casc_seeds["cascade_minus_large"] >= -TOL - 1e-12) & (casc_seeds["macs_fraction"] <= 0.5)
results.save_table(casc_seeds, out / "cascade_seeds.csv")
display(casc_seeds)
summary = {
    c: results.mean_std(casc_seeds[c])
    for c in ("small_accuracy", "large_accuracy", "cascade_accuracy", "macs_fraction", "cascade_minus_large")
}
for c, (mu, sd) in summary.items():
    print(f"{c:>20}: {mu:.4f} ± {sd:.4f}  ({len(casc_seeds)} seeds)")

# %% [markdown]
# ## Explore the threshold
# The slider indexes the saved test sweep tables (no model is run) and starts at the threshold chosen
# on validation; the dropdown picks the accumulation rule. The images are the escalated test crops
# whose margin lies just under the threshold. The same cell saves a static figure for headless runs.

# %%
explorer = viz.threshold_explorer(
    tables,
    scores=scores,
    images=crop.crop_resize(te.x, boxes["test"], resolutions[0]),
    lo=LO,
    ref_macs=large_macs,
    static=static,
    oracle=orc,
)
explorer.slider.value = float(threshold)
display(explorer)
_ = results.save_figure(
    viz.explorer_figure(tables, sorted({0.05, round(threshold, 3), 0.5}), main_rule, static, orc), out / "explorer.png"
)

# %% [markdown]
# ## Crop-only vs resolution-only at the lowest resolution, over seeds

# %%
r_low, base_rows = resolutions[-1], []
for s in compare_seeds:
    for kind, short in (("resolution-only", "rcc"), ("crop-only", "crop")):
        if s == SEED:
            a_ = acc(logits[(kind, r_low)][1], te.y)
        else:
            xs_ = [resize(d.x, r_low) for d in (tr, va, te)] if kind == "resolution-only" else crops_at(r_low)
            a_ = train_eval((1.0, 1.0, r_low), xs_, seed=s, name=f"{short}-r{r_low}-s{s}")[3]["test_accuracy"]
        base_rows.append({"seed": s, "kind": kind, "r": r_low, "test_accuracy": a_})
seeds_df = pd.DataFrame(base_rows)
results.save_table(seeds_df, out / "baseline_seeds.csv")
piv = seeds_df.pivot(index="seed", columns="kind", values="test_accuracy")
gap = piv["crop-only"] - piv["resolution-only"]
display(piv.assign(gap=gap))
print(
    f"r={r_low}: crop-only {piv['crop-only'].mean():.4f} ± {piv['crop-only'].std(ddof=1) if len(piv) > 1 else 0:.4f}, "
    f"resolution-only {piv['resolution-only'].mean():.4f}; gap {gap.mean():+.4f} (wins {int((gap > 0).sum())}/{len(gap)} seeds)"
)

# %% [markdown]
# ## Ablation with the true boxes (cluttered digits only)
# The only place true boxes are used: how good the chosen pseudo-boxes and the predicted crops are
# (mIoU, fraction of the digit inside the crop), the same crop-only classifiers fed crops from true
# boxes, and (ORACLE_BOXES) a box predictor trained on the true boxes. Nothing here feeds back into
# any choice above.


# %%
def true_box_ablation():
    """Box-quality metrics and the true-box crop ablation; None values on datasets without true boxes."""
    none = {"pseudo_box_test_miou": None, "predicted_crop_test_miou": None, "digit_inside_predicted_crop": None}
    if te.boxes is None:
        print(
            f"true-box ablation skipped: {DATASET} has no true boxes"
            + ("; ORACLE_BOXES ignored (no true boxes to train on)" if ORACLE_BOXES else "")
        )
        return none
    box_sets = {"pseudo-box predictor": boxes["test"]}
    if ORACLE_BOXES:
        box_sets["true-box predictor"] = fit_cropper(tr.boxes, "true")[0].boxes(te.x)
    box_rows = [
        {
            "labels": k,
            "final_test_miou": float(crop.box_iou(b, te.boxes).mean()),
            "digit_inside_crop": float(crop.box_coverage(b, te.boxes).mean()),
        }
        for k, b in box_sets.items()
    ]
    display(pd.DataFrame(box_rows))
    box_sets["true boxes (squared+snapped)"] = snapped(te.boxes)
    abl = [
        {"boxes": k, "r": r, "test_accuracy": acc(cascade.model_logits(nets[("crop-only", r)], te.x, b, r), te.y)}
        for k, b in box_sets.items()
        for r in resolutions
    ]
    display(pd.DataFrame(abl).pivot(index="boxes", columns="r", values="test_accuracy"))
    fin = snapped(pseudo["test"])
    print(
        f"chosen pseudo-boxes (test): mIoU vs true {float(crop.box_iou(pseudo['test'], te.boxes).mean()):.3f}; after "
        f"square+snap mIoU {float(crop.box_iou(fin, te.boxes).mean()):.3f}, digit inside {float(crop.box_coverage(fin, te.boxes).mean()):.3f}"
    )
    cand = [
        {
            "layer": la,
            "split": sp,
            "grow": g,
            "test_miou_vs_true": float(crop.box_iou(snapped(pseudo_boxes(la, sp, g, "test")), te.boxes).mean()),
        }
        for la, sp, g in candidates
    ]
    display(
        pd.DataFrame(cand).assign(chosen_on_val=cam_table["chosen"].to_numpy())
    )  # hindsight view, not used for any choice
    return {
        "pseudo_box_test_miou": float(crop.box_iou(pseudo["test"], te.boxes).mean()),
        "predicted_crop_test_miou": box_rows[0]["final_test_miou"],
        "digit_inside_predicted_crop": box_rows[0]["digit_inside_crop"],
    }


box_quality = true_box_ablation()

# %%
metrics = {
    "small_accuracy": small_acc,
    "small_macs": small_macs,
    "large_accuracy": large_acc,
    "large_macs": large_macs,
    "sweep": [
        {
            "threshold": float(r.threshold),
            "accuracy": float(r.accuracy),
            "avg_macs": float(r.avg_macs),
            "escalated": float(r.escalated),
        }
        for r in sw.itertuples()
    ],
    # every choice below was made on the validation split (pseudo-boxes only); test reported at that point
    "selection_split": "val",
    "tolerance": TOL,
    "small_config": SMALL_NAME,
    "threshold": float(threshold),
    "val_point": {
        "accuracy": val_point["accuracy"],
        "avg_macs": val_point["avg_macs"],
        "escalated": val_point["escalated"],
        "large_val_accuracy": large_val_acc,
        "reached": bool(val_reached),
    },
    "cascade_accuracy": test_point["accuracy"],
    "cascade_avg_macs": test_point["avg_macs"],
    "cascade_escalated": test_point["escalated"],
    "macs_fraction_at_large_accuracy": frac,  # test MACs at the val-chosen threshold / large pipeline MACs
    "test_hindsight_macs_fraction": None if hindsight is None else float(hindsight["avg_macs"] / large_macs),
    "cam_layer": CAM_LAYER,
    "cam_split": CAM_SPLIT,
    "cam_grow": CAM_GROW,
    "cam_selection": cam_table.to_dict("records"),
    "small_selection": small_table.to_dict("records"),
    "per_seed": [
        {k: (bool(v) if isinstance(v, (bool, np.bool_)) else v) for k, v in r.items()}
        for r in casc_seeds.to_dict("records")
    ],
    "per_seed_summary": {c: {"mean": mu, "std": sd} for c, (mu, sd) in summary.items()},
    "low_resolution": int(r_low),
    "compare_seeds": [int(s) for s in piv.index],
    "crop_only_accuracy_per_seed": [float(v) for v in piv["crop-only"]],
    "resolution_only_accuracy_per_seed": [float(v) for v in piv["resolution-only"]],
    **box_quality,  # null on datasets without true boxes
    "oracle_gate_accuracy": float(orc["accuracy"]),
    "oracle_gate_avg_macs": float(orc["avg_macs"]),
}
results.write_metrics(out, metrics)
print({k: v for k, v in metrics.items() if k not in ("sweep", "cam_selection", "small_selection", "per_seed")})

# %% [markdown]
# ## What the numbers say
# The verdict below is computed from the results of this run (nothing is typed in). For comparison,
# the paper: on ImageNet the cascade EC-Static-1 (1.2 GMACs, 73.9 %) → Smart-Scissor DIC ResNet-50
# (4.2 GMACs, 77.2 %) with threshold 0.2 reaches 76.8 % top-1 at ≈2.1 GMACs (abstract: −48.8 % MACs
# vs ResNet-50), and cropping alone beats plain resize at equal MACs (Smart Scissor: 73.1 % vs 70.0 %
# at ≈1.2 GMACs). "Holds up" below means: at the threshold chosen on validation, the cascade's test
# accuracy is within TOL of the large model's and it costs at most 50 % of the large pipeline's MACs.

# %%
n_seeds, n_hold = len(casc_seeds), int(casc_seeds["holds"].sum())
mu_d, sd_d = summary["cascade_minus_large"]
mu_f, sd_f = summary["macs_fraction"]
verdict = "holds up" if n_hold == n_seeds else "does not hold up" if n_hold == 0 else "holds up only partly"
print(
    f"Selection on validation: Grad-CAM {CAM_LAYER}/{CAM_SPLIT:g}/x{CAM_GROW:g}, small model {SMALL_NAME}, "
    f"threshold hi={threshold:.3f} (val: {100 * val_point['accuracy']:.2f} % vs large {100 * large_val_acc:.2f} %, "
    f"{'reached' if val_reached else 'not reached'} within {100 * TOL:g} pt)."
)
print(
    f"Test, seed {SEED}, at that point: cascade {100 * test_point['accuracy']:.2f} % vs large {100 * large_acc:.2f} % "
    f"({100 * (test_point['accuracy'] - large_acc):+.2f} pt) and small {100 * small_acc:.2f} %, at {100 * frac:.1f} % "
    f"of the large pipeline's MACs ({test_point['avg_macs'] / 1e6:.3f} of {large_macs / 1e6:.3f} M)."
)
print(
    f"Over {n_seeds} seeds (threshold chosen on each seed's val): cascade - large = {100 * mu_d:+.2f} ± {100 * sd_d:.2f} pt "
    f"at {100 * mu_f:.1f} ± {100 * sd_f:.1f} % of the large MACs."
)
print(
    f"Verdict: the cascade {verdict} at the val-chosen operating point ({n_hold}/{n_seeds} seeds within "
    f"{100 * TOL:g} pt of the large model at <= 50 % of its MACs)."
)
if hindsight is not None:
    print(
        f"(Choosing the threshold on the test sweep instead - what earlier versions did - would report "
        f"{100 * hindsight['avg_macs'] / large_macs:.1f} % of the large MACs for seed {SEED}: optimistic by construction.)"
    )
print(
    f"Crop-only vs resolution-only at r={r_low}: crop-only wins on {int((gap > 0).sum())}/{len(gap)} seeds, "
    f"mean gap {100 * gap.mean():+.1f} pt."
)
print(f"notebook wall time {time.perf_counter() - t_start:.1f} s (threads {threads})")

# %% [markdown]
# * **Why the design.** The digit's ink box is small (median ≈15 px on the 64 px canvas), so plain
#   down-scaling to 12 px leaves ≈3 px of digit while a 32 px crop resized to 12 px keeps ≈6 px:
#   this is the regime in which cropping should pay. Whether it does depends entirely on the boxes:
#   a crop that cuts the digit loses to the whole canvas. Which Grad-CAM layer, split and growth
#   give the best crops is decided on the validation split by the probe classifier (table
#   `cam_selection.csv`), never with true boxes; their quality against true boxes is shown only in
#   the ablation cell.
# * `macs_fraction_at_large_accuracy` is now the test MACs at the **validation-chosen** threshold as a
#   fraction of the large pipeline (cropper + large model), the paper's 2.1/4.2 setting; whether the
#   accuracy holds at that point is `cascade_accuracy` vs `large_accuracy`. `test_hindsight_macs_fraction`
#   is the old, optimistic number (threshold chosen on the test sweep), kept only for comparison.
# * The threshold curve is monotone in MACs by construction (the escalated set only grows with hi);
#   hi = 0 is the small pipeline, hi = 1 runs both models on every image.
# * The per-seed rows (`per_seed`, `cascade_seeds.csv`) retrain the small and large models only; the
#   cropper, the Grad-CAM setting and the small-model choice come from SEED.
# * On a dataset without true boxes (ImageNet, CIFAR, …) the crops are judged only through the
#   classifiers' accuracy and the MACs; the box-quality metrics are null. The ImageNet profile trains
#   from scratch on a subset, so its numbers are not the paper's fine-tuned ones.
# * Proxies: MACs are analytic dense conv/linear counts (BN, pooling, the crop-resize and the
#   softmax gate are not counted); no latency is measured. The data are synthetic canvases, so the
#   size of the cropping gain depends on how much background and clutter they carry.
