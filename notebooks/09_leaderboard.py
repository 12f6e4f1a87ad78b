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
# # 09 · Leaderboard: every method on one accuracy-vs-cost frontier
#
# None of the five papers can compare itself with the others: ECC reports energy on an Eyeriss
# model, the sparsity–quantization paper a compression rate, EC2T a MicroNet score, EdgeCompress
# MACs and CAMP energy relative to a 4-bit model. Here every compressed model the stages saved is
# reloaded (or rebuilt from its recorded architecture) and put through **the same cost
# functions** (`compresslib.leaderboard.model_costs`): dense MACs, effective MACs, size in bits
# (weights only and with the sparse index), bit-ops, analytic energy, MicroNet score and the
# measured latency of the form that would be deployed.
#
# Where a method has not produced a model on the common base model (`BASE_MODEL` on `DATASET`),
# this notebook runs it there: the dense base, magnitude pruning (the baseline every paper starts
# from) and EC2T (stage 05 trains MicroNets).
#
# **Reads:** the model manifests (`models.json` board rows) of `03_ecc_admm`, `04_sparsity_quantization`,
# `05_ec2t`, `07_dynamic_inference` and `08_camp_mixed_precision` (each optional). **Writes:** `leaderboard.csv`,
# `runs.csv`, `models.json` (the models trained here), `frontier.png`, `explorer.png`, `metrics.json`.

# %% tags=["parameters"]
PROFILE = "default"  # profile name (set by compresslib.workbook.reproduce)
SEED = 0  # first seed of the base-model runs; range [0, 2147483647]
DATASET = "mnist5k"  # dataset of the base-model runs
DATA_ROOT = ""  # folder of real datasets (empty: embedded data only)
OUT_DIR = "../artifacts/09_leaderboard"  # where figures, tables and metrics.json go
DEVICE = "cpu"  # cpu (latency is measured on cpu)
EPOCHS = 8  # dense epochs of the base model; range [1, 10000]
BASE_MODEL = "lenet5_caffe"  # common base model (LeNet-5 20-50-500, the model of stage 04)
SEEDS = [0, 1, 2]  # seeds of the base-model runs; range [0, 2147483647]
SUBSET = 0  # cap on training images, 0 means all; range [0, inf)
SPARSITIES = [0.9, 0.95, 0.98]  # magnitude-pruning levels on the base model; range (0, 1)
FINETUNE_EPOCHS = 1  # masked fine-tune epochs after magnitude pruning; range [0, 10000]
EC2T_GAMMAS = [0.2]  # EC2T gains on the base model ([] skips EC2T on the base); range (0, inf)
EC2T_EPOCHS = 2  # EC2T epochs with re-assignment; range [1, 10000]
EC2T_RETRAIN = 1  # EC2T epochs with frozen assignment; range [0, 10000]
CASCADE_WIDTHS = [10, 25, 250]  # EdgeCompress cascade on the base: widths of the shrunk first stage; range [1, 100000]
CASCADE_RES = 20  # input resolution of the shrunk first stage (pixels); range [8, 1024]
CASCADE_EPOCHS = 4  # epochs of the shrunk first stage (0 skips the cascade); range [0, 10000]
LATENCY_THREADS = 1  # torch threads for the latency measurements; range [1, 256]
LATENCY_REPEATS = 30  # timed forward passes per model (median reported); range [1, 100000]

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.ticker import NullFormatter
from IPython.display import display
from tqdm.auto import tqdm

import compresslib
from compresslib import data, leaderboard as lb, models, results, stages, train, viz
from compresslib.methods import baselines

threads = compresslib.set_threads()
if not SEEDS:
    raise ValueError("SEEDS is empty: give at least one seed, e.g. [0]")
if EC2T_GAMMAS and EC2T_EPOCHS < 1:
    raise ValueError("EC2T_EPOCHS must be >= 1 when EC2T_GAMMAS is set")
out = Path(OUT_DIR)
out.mkdir(parents=True, exist_ok=True)
art = out.parent
print(f"artifacts: {art}; torch threads {threads}; latency with {LATENCY_THREADS} thread(s), batch 1")

# %% [markdown]
# ## The models the stages published
# Every method stage lists its models in its `models.json` (the model manifest): registry name and
# arguments, checkpoint, test accuracy, and a `board` entry with the cost-counting facts (bits,
# expected executions, deployed form). This notebook rebuilds each one from that row and reads no
# other file of any stage. A stage that has not finished gives no rows (run it first to include it);
# a row that cannot be rebuilt is reported, not fatal.

# %%
candidates, found = lb.collect_all(art, stages=stages.UPSTREAM["09_leaderboard"])
display(pd.DataFrame([{"stage": k, "models": v} for k, v in found.items()]))

# %% [markdown]
# ## Runs on the common base model
# The dense base per seed (stage 04's when it trained the same model on the same data, else trained
# here and cached in `results.cache_dir(OUT_DIR)` by fingerprint, like every model trained below),
# magnitude pruning + masked fine-tune at every
# sparsity, EC2T ternarization of every layer (stage 05 ternarizes MicroNets) and EdgeCompress's
# cascade (stage 07 runs on cluttered canvases): a width- and resolution-shrunk LeNet answers the
# confident images, the dense base the rest, at the cheapest threshold that keeps the dense accuracy
# within 0.5 point (else hi = 0.2). Each is published in this stage's own `models.json` (for stage 10).

# %%
results.clear_models(out)
cache = results.cache_dir(out)  # every model trained here, keyed by fingerprint: a re-run trains nothing
own = []
for seed in tqdm(SEEDS, desc="base seeds"):
    loaders = data.get_loaders(
        DATASET,
        seed=seed,
        root=DATA_ROOT or None,
        subset=SUBSET or None,
        image_size=models.model_input_size(BASE_MODEL)[-1],
    )  # e.g. digits 8x8 -> 28x28
    base_kw = dict(num_classes=loaders.num_classes, in_channels=loaders.in_channels)
    up = baselines.upstream_dense(art, BASE_MODEL, DATASET, SUBSET, seed, stages=stages.UPSTREAM["09_leaderboard"])
    dense = up[0] if up is not None else baselines.train_base(BASE_MODEL, loaders, EPOCHS, seed, cache_dir=cache)
    print(f"seed {seed}: dense {BASE_MODEL} " + (f"from {up[1]}" if up else f"trained here ({EPOCHS} epochs)"))
    input_size = (loaders.in_channels, loaders.image_size, loaders.image_size)
    common = dict(input_size=tuple(input_size), base_model=BASE_MODEL, dataset=DATASET, source="09_leaderboard")
    common["spec"] = {"model": BASE_MODEL, "kwargs": base_kw}
    acc = train.evaluate(dense, loaders.test)["accuracy"]
    own.append((f"dense_seed{seed}", lb.Candidate("dense", "fp32", seed, acc, dense, weight_bits=None, **common)))
    for s, m, acc in baselines.run_magnitude(dense, loaders, SPARSITIES, FINETUNE_EPOCHS, seed, cache_dir=cache):
        c = lb.Candidate("magnitude pruning", f"sparsity {s:g}", seed, acc, m, weight_bits=None, **common)
        own.append((f"magnitude{s:g}_seed{seed}", c))
    for g, m, acc in baselines.run_ec2t_base(
        dense, loaders, EC2T_GAMMAS, EC2T_EPOCHS, EC2T_RETRAIN, seed, cache_dir=cache
    ):
        own.append(
            (f"ec2t{g:g}_seed{seed}", lb.Candidate("EC2T", f"gamma={g:g} on {BASE_MODEL}", seed, acc, m, **common))
        )
    if CASCADE_EPOCHS:
        c = baselines.run_cascade_base(
            dense,
            loaders,
            input_size,
            CASCADE_WIDTHS,
            CASCADE_RES,
            CASCADE_EPOCHS,
            seed,
            model_name=BASE_MODEL,
            cache_dir=cache,
        )
        small = {"model": BASE_MODEL, "kwargs": dict(base_kw, image_size=CASCADE_RES, widths=CASCADE_WIDTHS)}
        spec = {
            "model": "cascade",
            "kwargs": {"small": small, "large": common["spec"], "small_resolution": CASCADE_RES},
        }
        setting = f"cascade on {BASE_MODEL} (r{CASCADE_RES}, {'/'.join(map(str, CASCADE_WIDTHS))})"
        extra = {"threshold": c["threshold"], "escalated": c["escalated"]}
        cand = lb.Candidate(
            "EdgeCompress",
            setting,
            seed,
            c["accuracy"],
            c["model"],
            weight_bits=None,
            exec_weight=c["exec_weight"],
            deploy_form="cascade (both stages timed)",
            extra=extra,
            **dict(common, spec=spec),
        )
        own.append((f"cascade_seed{seed}", cand))
        print(
            f"seed {seed}: cascade threshold {c['threshold']:.2f}, escalated {c['escalated']:.1%}, accuracy {c['accuracy']:.4f}"
        )
for key, c in own:
    lb.record_candidate(out, key, c, cache)
candidates += [c for _, c in own]
print(f"{len(candidates)} models in total ({len(own)} trained here)")

# %% [markdown]
# ## One row per model, then one row per (method, setting)
# Latency is measured on the deployable form: ECC's slimmed nets are physically smaller; masked
# and fake-quantized models run on dense fp32 kernels, so their latency is the dense one.

# %%
rows = [lb.candidate_row(c, LATENCY_THREADS, LATENCY_REPEATS) for c in tqdm(candidates, desc="cost")]
runs = pd.DataFrame(rows)
results.save_table(runs, out / "runs.csv")
board = lb.aggregate(rows)
board = (
    board.assign(_other=board.dataset != DATASET)
    .sort_values(["_other", "method", "effective_macs"])
    .drop(columns="_other")
    .reset_index(drop=True)
)
results.save_table(board, out / "leaderboard.csv")
empty = [c for c in lb.COST_COLUMNS if board[c].isna().all()]
assert not empty, f"cost columns with no value at all: {empty}"
heavy_index = board[board.size_bits_with_index > 2 * board.size_bits_weights]
print(
    "rows whose sparse index costs more than their weights: "
    + (", ".join(f"{r.method} / {r.setting}" for r in heavy_index.itertuples()) or "none")
)
lb.format_table(board)

# %% [markdown]
# ## Accuracy against every cost axis
# Filled markers: models on `DATASET` (the Pareto front, black steps, is drawn over these only);
# hollow markers: models trained on other data (EdgeCompress's cluttered-digit canvases; any stage
# run on another dataset) — their costs compare, their accuracies do not.

# %%
axes_spec = [
    ("effective_macs", "effective MACs"),
    ("size_bits_with_index", "size incl. index (bits)"),
    ("bitops", "bit-ops"),
    ("energy_analytic", "analytic energy (ECC model)"),
    ("micronet_score", "MicroNet score"),
    ("latency_ms", f"latency (ms, {LATENCY_THREADS} thread, batch 1)"),
    ("size_bits_weights", "size, weights only (bits)"),
    ("dense_macs", "dense MACs"),
]
main, other = board[board.dataset == DATASET], board[board.dataset != DATASET]
fig, axs = plt.subplots(2, 4, figsize=(20, 9))
for ax, (col, label) in zip(axs.flat, axes_spec):
    viz.plot_tradeoff(
        ax,
        main.assign(acc=100 * main.accuracy),
        col,
        "acc",
        hue="method",
        logx=True,
        xlabel=label,
        ylabel="test accuracy (%)",
    )
    if len(other):
        ax.scatter(
            other[col],
            100 * other.accuracy,
            facecolors="none",
            edgecolors="gray",
            label=f"other data ({', '.join(sorted(other.dataset.unique()))})",
        )
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.legend(fontsize=6)
fig.suptitle(f"every method on {DATASET} (mean over seeds)")
fig.tight_layout()
results.save_figure(fig, out / "frontier.png")

# %%
fronts = {
    col: [f"{r.method} / {r.setting}" for r in main[lb.pareto_mask(main, col)].itertuples()] for col, _ in axes_spec
}
pd.DataFrame([(k, "; ".join(v)) for k, v in fronts.items()], columns=["cost axis", "Pareto-optimal rows"])

# %% [markdown]
# ## Explore: pick a cost axis and a budget
# The best models that fit the budget, and where the budget cuts the frontier. The same cell saves a
# static snapshot (effective MACs at the base model's dense cost) for headless runs.

# %%
box = lb.explorer(main if len(main) else board)
display(box)
dense_macs = float(main[main.method == "dense"].dense_macs.min()) if (main.method == "dense").any() else None
fig, ax = plt.subplots(figsize=(7, 4))
viz.plot_tradeoff(
    ax,
    main.assign(acc=100 * main.accuracy),
    "effective_macs",
    "acc",
    hue="method",
    logx=True,
    xlabel="effective MACs",
    ylabel="test accuracy (%)",
)
if dense_macs:
    ax.axvline(dense_macs / 10, color="r", ls="--", lw=1, label="budget: 10 % of the dense MACs")
    ax.legend(fontsize=6)
results.save_figure(fig, out / "explorer.png")
if dense_macs:
    display(lb.format_table(lb.within_budget(main, "effective_macs", dense_macs / 10).head(5)))

# %%
metrics = {
    "base_model": BASE_MODEL,
    "dataset": DATASET,
    "seeds": SEEDS,
    "n_rows": len(board),
    "methods": sorted(board.method.unique()),
    "collected": found,
    "pareto": fronts,
    "leaderboard": board.to_dict("records"),
}
results.write_metrics(out, metrics)
print(f"wrote {out / 'leaderboard.csv'} ({len(board)} rows, {board.method.nunique()} methods)")

# %% [markdown]
# ## What the board says
# The table above is the result; the front rows per axis are listed in the cell before the explorer.
# Read it with the caveats of each column:
# * **Effective MACs and bit-ops are theoretical**: unstructured zeros and low-bit codes run on dense
#   fp32 kernels here, so only the *slimmed* (ECC) models and the smaller architectures (EdgeCompress
#   shrinking, EC2T's compound scaling) are actually faster — compare `latency_ms` with `deploy_form`.
# * **Size with index** is what a sparse model really needs to store; at extreme sparsity the index can
#   cost more than the weights (the line printed above the table names the rows where it does).
# * **Analytic energy** is the ECC Eyeriss-style model: it counts memory accesses and MACs and ignores
#   bit-widths, so it favours pruning over quantization; CAMP's own energy (relative to W4A4) is in stage 08.
# * The papers' headline numbers are on other models and data, and this board does not try to match
#   them: sparsity–quantization reports 836× smaller weights for ResNet-50 on CIFAR-10 and 205× for
#   AlexNet on ImageNet (abstract), with a ~2000× LeNet-5 command (target 1975×); EC2T's MicroNet
#   entry scores 0.0242 on CIFAR-100 (challenge leaderboard); EdgeCompress claims −48.8 % MACs and
#   +0.8 % top-1 for ResNet-50 on ImageNet; ECC's and CAMP's table numbers are not verified (see
#   their specs), so none is quoted. What the board adds is the comparison of the methods *with each
#   other* under one set of cost functions, on one small task.
