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
# **Other datasets.** With `DATASET` set to any other registered classification set (MNIST, CIFAR,
# ImageNet at `IMAGE_SIZE` 224 with `ARCH` resnet50, fake) the same pipeline runs on pseudo-boxes
# only: the box-quality metrics (null in metrics.json) and the true-box ablation are skipped.
#
# **Reads:** nothing for cluttered digits (built from the embedded MNIST subset); `DATA_ROOT` for
# non-embedded datasets. **Writes** under `OUT_DIR`:
# `metrics.json` (`small_accuracy`, `small_macs`, `large_accuracy`, `large_macs`, `sweep`,
# `macs_fraction_at_large_accuracy`), `static_models.csv`, `sweep_<rule>.csv`, `small_scores.npy`,
# `baseline_seeds.csv`, figures `examples.png`, `static_front.png`, `cascade_curve.png`,
# `explorer.png`.

# %% tags=["parameters"]
PROFILE = "default"       # profile name (set by compresslib.reproduce)
SEED = 0                  # seed for splits' shuffling, init and training
DATASET = "cluttered_digits"  # registered dataset: cluttered_digits has true boxes; any other set runs without box metrics
DATA_ROOT = ""            # folder of non-embedded datasets such as imagenet; unused for cluttered_digits
IMAGE_SIZE = 0            # full-resolution image side of a non-cluttered dataset, 0: its native size; crops come from it
ARCH = "cifar"            # classifier family: cifar - 3 stages 16/32/64, or resnet50 - the paper's ResNet-50 shape
OUT_DIR = "../artifacts/07_dynamic_inference"  # where figures, tables and metrics.json go
DEVICE = "cpu"            # cpu or cuda - models, Grad-CAM, box predictor and cascade logits run there
EPOCHS = 12               # epochs of every classifier (SGD-Nesterov, cosine LR, label smoothing 0.1)
SOURCE = "mnist5k"        # digits pasted on the canvases: mnist5k (28x28) or digits (8x8)
SUBSET = 0                # cap on training images, 0: all; non-cluttered sets draw it class-balanced before the val slice
TEST_SUBSET = 0           # cap on test images of a non-cluttered dataset, 0: all
BATCH_SIZE = 64           # classifier batch size
LR = 0.1                  # classifier peak learning rate
BOX_EPOCHS = 20           # epochs of the box predictor (AdamW, cosine LR)
BOX_POOL = "grid"         # box predictor pooling: grid (4x4 map, keeps position) or avg (global, as the repo)
CAM_SPLIT = 0.3           # Grad-CAM threshold as a fraction of the map's range (CROP.CAM_SPLIT)
CAM_LAYER = "penultimate" # Grad-CAM target: last stage (repo layer4) or penultimate stage (finer map)
CAM_GROW = 1.1            # pseudo-box growth factor about its centre before square + snap
BOX_SHIFT = 4             # box predictor training: random translation of canvas and box, pixels
BOX_SIZES = "16,32,48,64"  # crop sides in pixels of the full-resolution image the square boxes snap up to
RESOLUTIONS = "24,12"     # resolutions of the resolution-only and crop-only baselines (full model)
CS_CONFIGS = "0.5:0.5:16,0.5:0.5:12,0.5:1:12"  # compound-shrunk models d:w:r on crops
SMALL = "0.5:1:12"        # cascade stage 1, one of CS_CONFIGS (stage 2: crop-only model at the top resolution)
ALPHA = 1.6               # accumulation weight a of the large model's logits (z_small + a * z_large)
LO = 0.0                  # lower threshold: margins not above LO are never escalated
SCORE = "margin"          # confidence score: margin (paper), maxprob or entropy
N_THRESHOLDS = 51         # points of the threshold sweep hi in [0, 1]
COMPARE_SEEDS = "0,1,2"   # seeds for crop-only vs resolution-only at the lowest resolution
ORACLE_BOXES = False      # ablation: also train the box predictor on the true boxes - cluttered_digits only

# %%
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


def _ints(s, name):
    try:
        v = [int(t) for t in str(s).split(",") if t.strip()]
    except ValueError as e:
        raise ValueError(f"{name} must be comma-separated integers, got {s!r}") from e
    if not v:
        raise ValueError(f"{name} is empty")
    return v


def viz_rgb(img):
    """(C, H, W) normalised image -> (H, W, C) in [0, 1] for display."""
    img = img.permute(1, 2, 0)
    return (img - img.min()) / (img.max() - img.min()).clamp_min(1e-12)


def _config(s):
    try:
        d, w, r = (float(t) for t in s.split(":"))
    except ValueError as e:
        raise ValueError(f"compound-shrinking configs are d:w:r, got {s!r}") from e
    return d, w, int(r)


info = data.dataset_info(DATASET)  # clear error listing the registered datasets
TRUE_BOXES = DATASET == "cluttered_digits"  # true boxes: box-quality metrics and the true-box ablation
if info.get("task", "classification") != "classification" or IMAGE_SIZE < 0 or TEST_SUBSET < 0 or SUBSET < 0:
    raise ValueError("DATASET must be a classification set; IMAGE_SIZE, SUBSET, TEST_SUBSET >= 0")
if TRUE_BOXES and IMAGE_SIZE not in (0, 64):
    raise ValueError("cluttered_digits canvases are 64 px: leave IMAGE_SIZE at 0")
CANVAS = 64 if TRUE_BOXES else int(IMAGE_SIZE or info["image_size"])  # full-resolution side the boxes live on
NUM_CLASSES, IN_CH = int(info["num_classes"]), int(info["in_channels"])
arch_kwargs(ARCH, 1.0, 1.0, 32)  # clear error for an unknown ARCH
dev = crop.resolve_device(DEVICE)  # clear error if cuda is asked for but absent
if CAM_LAYER not in ("last", "penultimate") or not 1.0 <= CAM_GROW <= 4.0 or BOX_SHIFT < 0:
    raise ValueError("CAM_LAYER must be last or penultimate, CAM_GROW in [1, 4], BOX_SHIFT >= 0")
box_sizes, resolutions = _ints(BOX_SIZES, "BOX_SIZES"), sorted(_ints(RESOLUTIONS, "RESOLUTIONS"), reverse=True)
cs_configs = [_config(c) for c in CS_CONFIGS.split(",") if c.strip()]
small_cfg, compare_seeds = _config(SMALL), _ints(COMPARE_SEEDS, "COMPARE_SEEDS")
if small_cfg not in cs_configs:
    raise ValueError(f"SMALL={SMALL!r} must be one of CS_CONFIGS")
if min(box_sizes) < 1 or max(box_sizes) > CANVAS:
    raise ValueError(f"BOX_SIZES must lie in [1, {CANVAS}] - pixels of the {CANVAS}-px {DATASET} images, got {BOX_SIZES!r}")
cascade.check_thresholds(LO, 1.0)
if BOX_POOL not in ("avg", "grid"):
    raise ValueError(f"BOX_POOL must be avg or grid, got {BOX_POOL!r}")
if min(EPOCHS, BOX_EPOCHS) < 1 or N_THRESHOLDS < 3 or not 0 <= CAM_SPLIT < 1:
    raise ValueError("EPOCHS, BOX_EPOCHS >= 1, N_THRESHOLDS >= 3 and CAM_SPLIT in [0, 1) required")
out = Path(OUT_DIR)
out.mkdir(parents=True, exist_ok=True)
train.set_seed(SEED)

# %% [markdown]
# ## Data: cluttered digits (or any registered classification set)
# The split is made on source digits (fixed seed); validation is a stratified slice of train.
# Red boxes are the true digit boxes (tight box of the pasted digit's ink). Any other dataset
# (MNIST, CIFAR, ImageNet, fake) is loaded at its full resolution CANVAS (ImageNet: resize 256 +
# centre crop 224) without true boxes: every crop is cut from that image and resized to each
# model's resolution; the box-quality metrics and the true-box ablation are skipped.

# %%
if TRUE_BOXES:
    tr_all, te = cluttered.load_cluttered("train", SOURCE), cluttered.load_cluttered("test", SOURCE)
else:
    root = DATA_ROOT or None
    tr_all = cluttered.load_images(DATASET, "train", root, CANVAS, limit=SUBSET, seed=SEED)
    te = cluttered.load_images(DATASET, "test", root, CANVAS, limit=TEST_SUBSET, seed=SEED)
tr_idx, va_idx = data.stratified_split(tr_all.y.numpy(), 0.1, seed=1235)
if SUBSET and SUBSET < len(tr_idx):
    tr_idx = tr_idx[np.sort(np.random.default_rng(SEED).permutation(len(tr_idx))[:SUBSET])]
sel = lambda d, i: cluttered.ClutteredSplit(d.x[i], d.y[i], None if d.boxes is None else d.boxes[i], d.source[i])  # noqa: E731
tr, va = sel(tr_all, torch.as_tensor(tr_idx)), sel(tr_all, torch.as_tensor(va_idx))
if tr.x.shape[-1] != CANVAS or tr.x.shape[1] != IN_CH:
    raise ValueError(f"{DATASET}: expected {IN_CH}x{CANVAS}x{CANVAS} images, got {tuple(tr.x.shape[1:])}")
CANVAS = tr.x.shape[-1]
if TRUE_BOXES:
    print(f"{len(tr.y)} train / {len(va.y)} val / {len(te.y)} test canvases of {CANVAS}x{CANVAS}; "
          f"true box side: median {float((te.boxes[:, 2] - te.boxes[:, 0]).median()):.0f} px; threads {threads}")
else:
    print(f"{DATASET}: {len(tr.y)} train / {len(va.y)} val / {len(te.y)} test images of {IN_CH}x{CANVAS}x{CANVAS}, "
          f"{NUM_CLASSES} classes; no true boxes: box-quality metrics and the true-box ablation are skipped; threads {threads}")
fig, axs = plt.subplots(1, 8, figsize=(12, 1.8))
for a, i in zip(axs, range(min(8, len(te.y)))):
    a.imshow(te.x[i, 0] if IN_CH == 1 else viz_rgb(te.x[i]), cmap="gray")
    if TRUE_BOXES:
        x0, y0, x1, y1 = te.boxes[i].tolist()
        a.add_patch(plt.Rectangle((x0 - .5, y0 - .5), x1 - x0, y1 - y0, fill=False, ec="r"))
    a.set_title(int(te.y[i]), fontsize=8)
    a.axis("off")
results.save_figure(fig, out / "examples.png")

# %% [markdown]
# ## Resolution-only baseline (the paper's RCC)
# The full model on the whole canvas, plainly down-scaled to each resolution. The largest one is
# also the classifier whose Grad-CAM provides the pseudo-boxes.

# %%
def resize(x, r):
    return torch.nn.functional.interpolate(x, size=(r, r), mode="bilinear", antialias=True, align_corners=False)


def train_eval(cfg, xs, seed=SEED):
    """Train a shrinkable ResNet (d, w, r) on inputs (train, val, test) at its resolution."""
    d, w, r = cfg
    m = create_model("shrinkable_resnet", num_classes=NUM_CLASSES, in_channels=IN_CH, **arch_kwargs(ARCH, d, w, r)).to(dev)
    hist = crop.train_classifier(m, xs[0], tr.y, xs[1], va.y, epochs=EPOCHS, lr=LR, batch_size=BATCH_SIZE, seed=seed,
                                 device=DEVICE)
    logits = cascade.model_logits(m, xs[2], res=r)
    return m, logits, {"val_accuracy": hist["val_accuracy"], "test_accuracy": float((logits.argmax(1) == te.y).double().mean()),
                       "macs": cost.total_macs(m, (IN_CH, r, r)), "params": sum(p.numel() for p in m.parameters())}


rows, nets, test_logits = [], {}, {}
for r in resolutions:
    m, z, res = train_eval((1.0, 1.0, r), [resize(s.x, r) for s in (tr, va, te)])
    nets[("resolution-only", r)], test_logits[("resolution-only", r)] = m, z
    rows.append({"kind": "resolution-only", "name": f"RCC r{r}", "d": 1.0, "w": 1.0, "r": r, **res})
display(pd.DataFrame(rows))

# %% [markdown]
# ## Foreground predictor: Grad-CAM pseudo-boxes → box regression → square + snap
# Pseudo-box = tight box of the Grad-CAM region above CAM_SPLIT of its range (target layer CAM_LAYER,
# true class), grown by CAM_GROW about its centre (the CAM peak covers the most discriminative strokes,
# not the whole digit). The light predictor regresses them with the weighted MSE [1, 1, 1.25, 1.25]
# (canvases and boxes randomly translated by up to BOX_SHIFT px); its boxes are squared and snapped up
# to BOX_SIZES. IoU and the fraction of the digit inside the crop are measured against the true boxes
# (the pseudo-box knobs were chosen on the validation split; the test split is only reported).

# %%
cam_net, cam_r = nets[("resolution-only", resolutions[0])], resolutions[0]
cam_layer = cam_net.features if CAM_LAYER == "last" else cam_net.stages[-1]
pseudo = {k: crop.expand_boxes(crop.cam_boxes(crop.gradcam(cam_net, s.x, s.y, layer=cam_layer, input_size=cam_r),
                                              CAM_SPLIT), CAM_GROW, CANVAS) for k, s in (("train", tr), ("val", va), ("test", te))}
for k, s in (("val", va), ("test", te)):
    if not TRUE_BOXES:
        break
    fin = crop.regulate_boxes(crop.square_boxes(pseudo[k], CANVAS), box_sizes, CANVAS)
    print(f"pseudo-boxes ({k}): mIoU vs true {float(crop.box_iou(pseudo[k], s.boxes).mean()):.3f}; after square+snap "
          f"mIoU {float(crop.box_iou(fin, s.boxes).mean()):.3f}, digit inside {float(crop.box_coverage(fin, s.boxes).mean()):.3f}")
if not TRUE_BOXES:
    print(f"{DATASET} has no true boxes: pseudo-box / crop mIoU and the object-inside fraction are not measured"
          + ("; ORACLE_BOXES ignored (no true boxes to train on)" if ORACLE_BOXES else ""))
croppers, box_rows = {}, []
for label, target in (("pseudo", pseudo), ("true", {"train": tr.boxes, "val": va.boxes})):
    if label == "true" and not (ORACLE_BOXES and TRUE_BOXES):
        continue
    train.set_seed(SEED)
    pred = create_model("box_predictor", in_channels=IN_CH, pool=BOX_POOL).to(dev)
    hist = crop.train_box_predictor(pred, tr.x, target["train"], CANVAS, epochs=BOX_EPOCHS, seed=SEED,
                                    x_val=va.x, boxes_val=va.boxes if TRUE_BOXES else pseudo["val"], shift=BOX_SHIFT,
                                    device=DEVICE)
    croppers[label] = crop.ForegroundCropper(pred, CANVAS, box_sizes, in_channels=IN_CH)
    b = croppers[label].boxes(te.x)
    row = {"labels": label, "cropper_macs": croppers[label].macs,
           **{f"side{s}": n for s, n in crop.box_size_histogram(b, box_sizes).items()}}
    if TRUE_BOXES:
        cover = crop.box_coverage(b, te.boxes)
        row = {"labels": label, "raw_test_miou": float(crop.box_iou(crop.predict_boxes(pred, te.x) * CANVAS, te.boxes).mean()),
               "final_test_miou": float(crop.box_iou(b, te.boxes).mean()),
               "digit_inside_crop": float(cover.mean()), **row}
    else:  # agreement with the test Grad-CAM pseudo-boxes (a fit diagnostic, not box quality)
        row["raw_test_miou_vs_pseudo"] = float(crop.box_iou(crop.predict_boxes(pred, te.x) * CANVAS, pseudo["test"]).mean())
    box_rows.append(row)
box_table = pd.DataFrame(box_rows)
if TRUE_BOXES:
    print(f"Grad-CAM pseudo-box mIoU vs true boxes (test): {float(crop.box_iou(pseudo['test'], te.boxes).mean()):.3f}")
display(box_table)
cropper = croppers["pseudo"]
boxes = {k: cropper.boxes(s.x) for k, s in (("train", tr), ("val", va), ("test", te))}

# %% [markdown]
# ## Crop-only (Smart Scissor DIC) and compound-shrunk models on the crops
# Crop-only = the full model on the predicted crop at each resolution. Compound-shrunk = fewer
# blocks (d), thinner bottlenecks (w) and a smaller crop resolution (r), trained on crops.
# Every cropped pipeline pays the cropper's MACs.

# %%
for r in resolutions:
    m, z, res = train_eval((1.0, 1.0, r), [crop.crop_resize(s.x, boxes[k], r) for k, s in (("train", tr), ("val", va), ("test", te))])
    nets[("crop-only", r)], test_logits[("crop-only", r)] = m, z
    rows.append({"kind": "crop-only", "name": f"DIC r{r}", "d": 1.0, "w": 1.0, "r": r, **res})
for cfg in cs_configs:
    m, z, res = train_eval(cfg, [crop.crop_resize(s.x, boxes[k], cfg[2]) for k, s in (("train", tr), ("val", va), ("test", te))])
    nets[("shrunk", cfg)], test_logits[("shrunk", cfg)] = m, z
    rows.append({"kind": "crop+shrink", "name": f"CS d{cfg[0]} w{cfg[1]} r{cfg[2]}", "d": cfg[0], "w": cfg[1], "r": cfg[2], **res})
static = pd.DataFrame(rows)
static["cropper_macs"] = np.where(static["kind"] == "resolution-only", 0, cropper.macs)
static["macs"] = static["macs"] + static["cropper_macs"]
static["accuracy"] = static["test_accuracy"]
results.save_table(static, out / "static_models.csv")
display(static[["name", "kind", "d", "w", "r", "params", "macs", "val_accuracy", "test_accuracy"]])
# ablation: the same crop-only classifiers fed crops from the true-box-trained predictor / the true boxes
abl = []
if not TRUE_BOXES:
    print(f"true-box ablation skipped: {DATASET} has no true boxes")
for src, bx in [("pseudo-box predictor", boxes["test"])] + (
        [("true-box predictor", croppers["true"].boxes(te.x))] if "true" in croppers else []) + ([
        ("true boxes (squared+snapped)", crop.regulate_boxes(crop.square_boxes(te.boxes, CANVAS), box_sizes, CANVAS))]
        if TRUE_BOXES else []):
    for r in resolutions:
        z = cascade.model_logits(nets[("crop-only", r)], te.x, bx, r)
        abl.append({"boxes": src, "r": r, "test_accuracy": float((z.argmax(1) == te.y).double().mean())})
display(pd.DataFrame(abl).pivot(index="boxes", columns="r", values="test_accuracy"))

# %%
fig, ax = plt.subplots(figsize=(7, 4.5))
viz.plot_tradeoff(ax, static.assign(MMACs=static["macs"] / 1e6, top1=100 * static["accuracy"]), "MMACs", "top1",
                  hue="kind", logx=True, xlabel="MACs per image (M, cropper included)", ylabel="top-1 accuracy (%)")
for _, row in static.iterrows():
    ax.annotate(row["name"], (row["macs"] / 1e6, 100 * row["accuracy"]), fontsize=6, xytext=(3, 3), textcoords="offset points")
results.save_figure(fig, out / "static_front.png")

# %% [markdown]
# ## Cascade: small shrunk model → large crop-only model
# One forward pass per stage on the test crops gives cached logits; `cascade.sweep` replays every
# threshold from them. One threshold is re-run end to end with `Cascade.run` as a check.

# %%
small, large = nets[("shrunk", small_cfg)], nets[("crop-only", resolutions[0])]
casc = cascade.Cascade([small, large], [small_cfg[2], resolutions[0]], lo=LO, hi=0.2, alpha=ALPHA, score=SCORE,
                       crop_macs=cropper.macs, in_channels=IN_CH)
z_small, z_large = casc.stage_logits(0, te.x, boxes["test"]), casc.stage_logits(1, te.x, boxes["test"])
thresholds = np.linspace(0.0, 1.0, N_THRESHOLDS)
rules = {f"sum a={ALPHA:g}": ("sum", ALPHA), "sum a=1": ("sum", 1.0), "replace": ("replace", 1.0)}
tables = {name: cascade.sweep([z_small, z_large], casc.macs_per_stage, thresholds, te.y, lo=LO, alpha=a,
                              score=SCORE, accumulate=rule, crop_macs=cropper.macs) for name, (rule, a) in rules.items()}
main_rule = f"sum a={ALPHA:g}"
sw = tables[main_rule]
for name, t in tables.items():
    results.save_table(t, out / f"sweep_{name.replace(' ', '_').replace('=', '')}.csv")
check = casc.run(te.x, boxes["test"], te.y)
row02 = viz.operating_point(sw, 0.2)
assert abs(check.accuracy - row02["accuracy"]) < 1e-12 and abs(check.avg_macs - row02["avg_macs"]) < 1e-6, (check, row02)
orc = cascade.oracle([z_small, z_large], casc.macs_per_stage, te.y, alpha=ALPHA, crop_macs=cropper.macs)
small_acc = float((z_small.argmax(1) == te.y).double().mean())
large_acc = float((z_large.argmax(1) == te.y).double().mean())
small_macs = cropper.macs + casc.macs_per_stage[0]
large_macs = cropper.macs + casc.macs_per_stage[1]
best = cascade.cheapest_at_accuracy(sw, large_acc, tol=0.005)
frac = None if best is None else float(best["avg_macs"] / large_macs)
scores = cascade.confidence(z_small, SCORE).numpy()
np.save(out / "small_scores.npy", scores)
print(f"small {small_acc:.4f} @ {small_macs / 1e6:.3f} M MACs; large {large_acc:.4f} @ {large_macs / 1e6:.3f} M "
      f"(cropper {cropper.macs / 1e6:.3f} M included); Cascade.run at hi=0.2 == sweep row: ok")
print(f"oracle gate: {orc['accuracy']:.4f} @ {orc['avg_macs'] / 1e6:.3f} M, escalated {orc['escalated']:.3f}")
if best is None:
    print("no threshold reaches the large model's accuracy within 0.5 points")
else:
    print(f"cheapest threshold within 0.5 pt of the large model: hi={best['threshold']:.2f}, "
          f"accuracy {best['accuracy']:.4f}, {best['avg_macs'] / 1e6:.3f} M MACs = {100 * frac:.1f} % of the large model")
display(sw.iloc[:: max(1, N_THRESHOLDS // 10)])

# %%
fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.5))
viz.plot_threshold_curve(a1, tables, None, main_rule, static, orc)
xs = np.array([small_macs, large_macs]) / 1e6
a1.plot(xs, [100 * small_acc, 100 * large_acc], "k:", lw=1, label="interpolation small↔large")
a1.legend(fontsize=7)
for name, t in tables.items():
    a2.plot(t["threshold"], 100 * t["escalated"], label=name)
a2.set_xlabel("threshold hi")
a2.set_ylabel("escalated to the large model (%)")
a2.grid(alpha=0.3)
a2.legend(fontsize=7)
results.save_figure(fig, out / "cascade_curve.png")

# %% [markdown]
# ## Explore the threshold
# The slider indexes the saved sweep tables (no model is run); the dropdown picks the accumulation
# rule. The images are the escalated test crops whose margin lies just under the threshold. The
# same cell saves a static figure (three operating points) for headless runs.

# %%
explorer = viz.threshold_explorer(tables, scores=scores, images=crop.crop_resize(te.x, boxes["test"], resolutions[0]),
                                  lo=LO, ref_macs=large_macs, static=static, oracle=orc)
display(explorer)
results.save_figure(viz.explorer_figure(tables, (0.05, 0.2, 0.5), main_rule, static, orc), out / "explorer.png")

# %% [markdown]
# ## Crop-only vs resolution-only at the lowest resolution, over seeds

# %%
r_low, seed_rows = resolutions[-1], []
for s in compare_seeds:
    for kind in ("resolution-only", "crop-only"):
        if s == SEED:
            acc = float(static.query("kind == @kind and r == @r_low and d == 1.0 and w == 1.0")["test_accuracy"].iloc[0])
        else:
            xs_ = [resize(d.x, r_low) for d in (tr, va, te)] if kind == "resolution-only" else [
                crop.crop_resize(d.x, boxes[k], r_low) for k, d in (("train", tr), ("val", va), ("test", te))]
            acc = train_eval((1.0, 1.0, r_low), xs_, seed=s)[2]["test_accuracy"]
        seed_rows.append({"seed": s, "kind": kind, "r": r_low, "test_accuracy": acc})
seeds_df = pd.DataFrame(seed_rows)
results.save_table(seeds_df, out / "baseline_seeds.csv")
piv = seeds_df.pivot(index="seed", columns="kind", values="test_accuracy")
gap = piv["crop-only"] - piv["resolution-only"]
display(piv.assign(gap=gap))
print(f"r={r_low}: crop-only {piv['crop-only'].mean():.4f} ± {piv['crop-only'].std(ddof=1) if len(piv) > 1 else 0:.4f}, "
      f"resolution-only {piv['resolution-only'].mean():.4f}; gap {gap.mean():+.4f} (wins {int((gap > 0).sum())}/{len(gap)} seeds)")

# %%
metrics = {
    "small_accuracy": small_acc, "small_macs": small_macs,
    "large_accuracy": large_acc, "large_macs": large_macs,
    "sweep": [{"threshold": float(r.threshold), "accuracy": float(r.accuracy), "avg_macs": float(r.avg_macs),
               "escalated": float(r.escalated)} for r in sw.itertuples()],
    "macs_fraction_at_large_accuracy": frac,
    # diagnostics beyond the keys: the crop-only vs resolution-only comparison per seed and the boxes
    "low_resolution": int(r_low), "compare_seeds": [int(s) for s in piv.index],
    "crop_only_accuracy_per_seed": [float(v) for v in piv["crop-only"]],
    "resolution_only_accuracy_per_seed": [float(v) for v in piv["resolution-only"]],
    # box quality needs true boxes (cluttered_digits); null on datasets without them
    "pseudo_box_test_miou": float(crop.box_iou(pseudo["test"], te.boxes).mean()) if TRUE_BOXES else None,
    "predicted_crop_test_miou": float(box_table.query("labels == 'pseudo'")["final_test_miou"].iloc[0]) if TRUE_BOXES else None,
    "digit_inside_predicted_crop": float(box_table.query("labels == 'pseudo'")["digit_inside_crop"].iloc[0]) if TRUE_BOXES else None,
    "oracle_gate_accuracy": float(orc["accuracy"]), "oracle_gate_avg_macs": float(orc["avg_macs"]),
}
results.write_metrics(out, metrics)
print({k: v for k, v in metrics.items() if k != "sweep"})
print(f"cascade within 0.5 pt of the large model at <= 50 % of its MACs: "
      f"{'yes' if frac is not None and frac <= 0.5 else 'no'} (fraction {frac if frac is None else round(frac, 3)}; "
      f"small/large MACs = {small_macs / large_macs:.3f}, large - small accuracy = {100 * (large_acc - small_acc):+.1f} pt)")
print(f"crop-only beats resolution-only at r={r_low}: {int((gap > 0).sum())}/{len(gap)} seeds, "
      f"mean gap {100 * gap.mean():+.1f} pt")

# %% [markdown]
# ## What the numbers say
# The printed lines above are the results (nothing below is hard-coded); the paper's numbers, for
# comparison: on ImageNet the cascade EC-Static-1 (1.2 GMACs, 73.9 %) → Smart-Scissor DIC ResNet-50
# (4.2 GMACs, 77.2 %) with threshold 0.2 reaches 76.8 % top-1 at ≈2.1 GMACs (abstract: −48.8 % MACs
# vs ResNet-50), and cropping alone beats plain resize at equal MACs (Smart Scissor: 73.1 % vs 70.0 %
# at ≈1.2 GMACs).
#
# * **Why the design.** The digit's ink box is small (median ≈15 px on the 64 px canvas), so plain
#   down-scaling to 12 px leaves ≈3 px of digit while a 32 px crop resized to 12 px keeps ≈6 px:
#   this is the regime in which cropping should pay. Whether it does depends entirely on the boxes:
#   a crop that cuts the digit loses to the whole canvas. The Grad-CAM of the last stage (stride 4,
#   6×6 map at 24 px) thresholded at 50 % of its range covers only the most discriminative strokes;
#   the penultimate stage (stride 2), a 30 % split and a 1.1 growth keep most of the digit inside
#   the squared, snapped pseudo-box (printed above; the knobs were chosen on the validation split
#   in a development run, the test split is only reported). The box predictor regresses those pseudo-boxes with canvas + box translation.
#   The crops used everywhere come from the learned predictor; true boxes appear only in the
#   labelled ablation table.
# * `macs_fraction_at_large_accuracy` is the cheapest swept threshold whose accuracy is within
#   0.5 points of the large crop model, as a fraction of the large pipeline's MACs (cropper +
#   large model) — the paper's 2.1/4.2 setting. The small model and the cropper are always paid.
#   `null` means no threshold gets within 0.5 points (the printed verdict says which).
# * The threshold curve is monotone in MACs by construction (the escalated set only grows with hi);
#   hi = 0 is the small pipeline, hi = 1 runs both models on every image.
# * Crop-only vs resolution-only is reported per seed (`baseline_seeds.csv`, metrics
#   `crop_only_accuracy_per_seed` / `resolution_only_accuracy_per_seed`); with a single seed it
#   is an anecdote, not a result.
# * On a dataset without true boxes (ImageNet, CIFAR, …) the crops are judged only through the
#   classifiers' accuracy and the MACs; `pseudo_box_test_miou`, `predicted_crop_test_miou` and
#   `digit_inside_predicted_crop` are null. The ImageNet profile trains from scratch on a subset, so
#   its numbers are not the paper's fine-tuned ones.
# * Proxies: MACs are analytic dense conv/linear counts (BN, pooling, the crop-resize and the
#   softmax gate are not counted); no latency is measured. The data are synthetic canvases, so the
#   size of the cropping gain depends on how much background and clutter they carry.
