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
# # 04 · Sparsity–quantization joint learning under one model-size budget
#
# **Paper:** Yang, Gui, Zhu, Liu, *Automatic Neural Network Compression by Sparsity-Quantization
# Joint Learning: A Constrained Optimization-based Approach*, CVPR 2020 (arXiv 1910.05897).
# **Claim (abstract):** weights of ResNet-50/CIFAR-10 836x and AlexNet/ImageNet 205x smaller with no
# accuracy loss; for LeNet-5/MNIST a secondary source quotes 2,120x; the authors' README command for
# LeNet-5 (nnz budget 0.0054, 3 bits) targets ~2000x (exactly 1975.05x).
#
# The only knob is a global size budget S (bits) over the Conv/Linear weights; per-layer sparsity
# and bitwidth are learned by ADMM: the weights W are projected onto the sparsity set by a 0-1
# knapsack (keep the largest w²/b_l), a soft copy V onto the quantization set by a multiple-choice
# knapsack over bitwidths with zero-anchored 1-D k-means codebooks, and a scaled dual Y drives W = V.
#
# **Reproduced here:** the paper's Caffe LeNet-5 (`CaffeLeNet`: conv 20 → pool → conv 50 → pool →
# fc 500 + ReLU → fc 10, no activation after the convolutions; 430,500 compressed weights) on
# `mnist5k` (3,600 train images — a small proxy for MNIST's 60k): dense pretrain → joint compression
# at the paper's budget and milder ones → masked, bit-fixed straight-through finetune; at every joint
# budget the same run with bits fixed at ⌊bit budget⌋ (same size, same training); ablations at equal
# size (prune-only, quantize-only); mean ± std over seeds.
#
# **Reads:** nothing. **Writes:** `OUT_DIR/metrics.json` (`dense_accuracy`, `results` with
# `cr_weights_only` / `cr_with_biases` / `cr_with_index`, `fixed_bits`), `runs.csv`, `summary.csv`,
# `joint_vs_fixed.csv`, `layers.csv`, `history.csv`, `allocation.png`, `admm_trace.png`,
# `cr_vs_accuracy.png`, the compressed models `models/<mode>_cr<target>_seed<k>.pt` + `.json`
# and the dense ones `models/dense_seed<k>.pt` (read by notebooks 06 and 09; listed in
# `models.json`). Trained models and runs are cached in `results.cache_dir(OUT_DIR)`.

# %% tags=["parameters"]
PROFILE = "default"  # profile name (set by compresslib.reproduce)
SEED = 0  # first seed; runs use SEED .. SEED+N_SEEDS-1; range [0, 2147483647]
N_SEEDS = 3  # seeds per configuration (mean ± std are reported); range [1, 100]
DATASET = "mnist5k"  # registered dataset (mnist5k embedded; mnist needs DATA_ROOT)
DATA_ROOT = ""  # folder of real datasets (empty: embedded data only)
OUT_DIR = "../artifacts/04_sparsity_quantization"  # figures, tables, metrics.json, models
DEVICE = "cpu"  # cpu or cuda (k-means codebooks are always fitted on the CPU)
EPOCHS = 15  # dense pretrain epochs (train.pretrain_dense: SGD lr PRETRAIN_LR, momentum 0.9, wd 5e-4, cosine); range [1, 10000]
MODEL = "lenet5_caffe"  # registered model (Caffe LeNet-5 20-50-500 at 28x28)
BATCH_SIZE = 64  # batch size of pretrain, ADMM and finetune; range [1, 65536]
SUBSET = 0  # cap on training images, 0 means all (smoke uses a subset); range [0, inf)
PRETRAIN_LR = 0.01  # dense pretrain (SGD) learning rate (0.05 diverges without conv ReLUs, spec §9.1); range (0, 10]
JOINT_BUDGETS = "0.0054:3,0.01:3,0.05:4"  # joint runs, nnz_budget:bit_budget (1975x, 1067x, 160x)
PROGRESSIVE = False  # True chains JOINT_BUDGETS mildest first, each stage warm-started from the previous
FIXED_BITS = True  # also run bits fixed at floor(bit_budget) at every JOINT_BUDGETS budget (same size, same training)
ABLATIONS = "prune:0.0054:3,prune:0.05:4,quantize:1:1,joint:0.25:4"  # mode:nnz:bits, compared at equal size
INTERVALS = 13  # ADMM outer iterations (projections + dual update after each); range [1, 100000]
STEPS_PER_INTERVAL = 80  # SGD steps between projections (0 means one epoch, as in the repo); range [0, 10000000]
WARMUP_INTERVALS = 3  # linear LR warm-up length, in intervals; cosine decay afterwards; range [0, 100000]
LR = 0.02  # peak SGD learning rate of the ADMM phase; range (0, 10]
MOMENTUM = 0.93  # SGD momentum (README LeNet recipe); range [0, 1)
WEIGHT_DECAY = 0.0005  # weight decay on every *weight tensor; range [0, 1]
RHO = 0.5  # ADMM penalty (README 0.05 with 235-step epochs; see spec §9.1); range (0, 1000000]
BWLB = 1  # lowest candidate bitwidth (bits chosen from BWLB..8); range [1, 8]
FT_STEPS = 300  # masked, bit-fixed straight-through finetune steps (0 skips); range [0, 10000000]
FT_LR = 0.002  # finetune peak learning rate (cosine); range (0, 10]

# %%
import copy
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import display
from tqdm.auto import tqdm

import compresslib
from compresslib import data, models, results, train
from compresslib.methods import sqjoint as sq

threads = compresslib.set_threads()


def parse_runs(spec: str, with_mode: bool):
    runs = []
    for item in [s.strip() for s in spec.split(",") if s.strip()]:
        parts = item.split(":")
        if len(parts) != (3 if with_mode else 2):
            raise ValueError(f"bad run spec {item!r}: expected {'mode:' if with_mode else ''}nnz:bits")
        mode = parts[0] if with_mode else "joint"
        if mode not in sq.MODES:
            raise ValueError(f"unknown mode {mode!r} in {item!r}; valid: {sq.MODES}")
        p, b = float(parts[-2]), float(parts[-1])
        sq.check_budgets(p, b)
        runs.append((mode, p, b))
    return runs


if not isinstance(FIXED_BITS, bool):
    raise ValueError(f"FIXED_BITS must be True or False, got {FIXED_BITS!r}")
RUNS = parse_runs(JOINT_BUDGETS, False)
RUNS += [("fixed", p, b) for _, p, b in RUNS] if FIXED_BITS else []
RUNS = list(dict.fromkeys(RUNS + parse_runs(ABLATIONS, True)))  # each (mode, nnz, bits) once
if not RUNS:
    raise ValueError("JOINT_BUDGETS and ABLATIONS are both empty: nothing to run")
for name, v, lo in [
    ("N_SEEDS", N_SEEDS, 1),
    ("EPOCHS", EPOCHS, 1),
    ("INTERVALS", INTERVALS, 1),
    ("BATCH_SIZE", BATCH_SIZE, 1),
    ("STEPS_PER_INTERVAL", STEPS_PER_INTERVAL, 0),
    ("FT_STEPS", FT_STEPS, 0),
    ("SUBSET", SUBSET, 0),
]:
    if not isinstance(v, int) or isinstance(v, bool) or v < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
if not isinstance(PROGRESSIVE, bool):
    raise ValueError(f"PROGRESSIVE must be True or False, got {PROGRESSIVE!r}")
if not isinstance(BWLB, int) or not 1 <= BWLB <= 8:
    raise ValueError(f"BWLB must be an integer in 1..8, got {BWLB!r}")
if not PRETRAIN_LR > 0 or not FT_LR > 0:
    raise ValueError(f"PRETRAIN_LR and FT_LR must be > 0, got {PRETRAIN_LR}, {FT_LR}")
sq.check_hparams(LR, MOMENTUM, WEIGHT_DECAY, INTERVALS, WARMUP_INTERVALS, rho=RHO)
if DATASET not in data.list_datasets():
    raise ValueError(f"unknown DATASET {DATASET!r}; registered: {data.list_datasets()}")
train.check_device(DEVICE)  # cpu, or cuda on a GPU machine: clear error otherwise
BIT_RANGE = sq.check_bit_range(range(BWLB, 9))
SEEDS = list(range(SEED, SEED + N_SEEDS))
out = Path(OUT_DIR)
(out / "models").mkdir(parents=True, exist_ok=True)
CACHE = results.cache_dir(OUT_DIR)  # trained dense models and compression runs, keyed by what determines them
probe = models.create_model(MODEL)
N_WEIGHTS = sum(sq._sizes(probe))
for mode, p, b in RUNS:  # budget errors (e.g. quantize-only beyond 32x) surface before any training
    S, _ = sq.size_budget(probe, p, b)
    sq.check_size(S, len(sq.compressible_layers(probe)), 32 if mode == "prune" else BWLB)
    sq.initial_bits(mode, S, N_WEIGHTS, b)
CHAIN = [(p, b) for _, p, b in parse_runs(JOINT_BUDGETS, False)]
if PROGRESSIVE:  # stages must tighten the budget: clear error before any training
    sq.check_chain([(sq.size_budget(probe, p, b)[0], b) for p, b in CHAIN])
print(
    f"{MODEL}: {N_WEIGHTS:,} compressed weights in {len(sq.compressible_layers(probe))} layers; "
    f"torch threads {threads}; seeds {SEEDS}"
)
pd.DataFrame(
    [
        {
            "mode": m,
            "nnz_budget": p,
            "bit_budget": b,
            "S_bits": sq.size_budget(probe, p, b)[0],
            "target_cr": round(sq.target_compression(probe, p, b), 2),
        }
        for m, p, b in RUNS
    ]
)

# %% [markdown]
# ## Dense pretrain
# One dense Caffe LeNet-5 per seed (`train.pretrain_dense`: SGD + cosine as in spec §9.1, fingerprinted
# checkpoint in the stage cache); every compression run of that seed starts from it. Each compression run is cached
# in `results.cache_dir(OUT_DIR)` under a hash of everything that determines it (all its parameters
# and the digest of the dense weights it starts from), so re-running recomputes nothing that is valid.

# %%
t0 = time.perf_counter()
loaders = {
    s: data.get_loaders(
        DATASET,
        batch_size=BATCH_SIZE,
        seed=s,
        root=DATA_ROOT or None,
        subset=SUBSET or None,
        image_size=models.model_input_size(MODEL)[-1],
    )  # e.g. digits 8x8 -> 28x28
    for s in SEEDS
}


def model_kwargs(L):
    return dict(num_classes=L.num_classes, in_channels=L.in_channels)


def new_model(L):
    return models.create_model(MODEL, **model_kwargs(L))


dense = {}
for s in SEEDS:
    L = loaders[s]
    net, _ = train.pretrain_dense(
        MODEL,
        model_kwargs(L),
        L,
        epochs=EPOCHS,
        seed=s,
        lr=PRETRAIN_LR,
        cache_dir=CACHE,
        device=DEVICE,
        optimizer="sgd",
        momentum=0.9,
        weight_decay=5e-4,
    )
    acc = train.evaluate(net, L.test, DEVICE)["accuracy"]
    ck = out / "models" / f"dense_seed{s}.pt"
    state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    train.save_checkpoint(ck, model=state, model_name=MODEL)
    results.record_model(
        OUT_DIR,
        f"dense_seed{s}",
        model=MODEL,
        kwargs=model_kwargs(L),
        checkpoint=ck,
        accuracy=acc,
        split="test",
        role="dense base of every compression run",
    )
    dense[s] = {"state": state, "accuracy": acc, "digest": train.state_digest(state)}
dense_acc = [dense[s]["accuracy"] for s in SEEDS]
dense_mean, dense_std = results.mean_std(dense_acc)
L0 = loaders[SEEDS[0]]
print(
    f"{len(L0.train.dataset)} train / {len(L0.val.dataset)} val / {len(L0.test.dataset)} test images; "
    f"dense test accuracy {100 * dense_mean:.2f} ± {100 * dense_std:.2f} % ({time.perf_counter() - t0:.0f} s)"
)

# %% [markdown]
# ## Compression runs
# Per run: ADMM (SGD → prox → knapsack projection → MCKP V-step → dual update, per interval),
# then a finetune with masks and bits fixed (straight-through quantized forward), then a final
# k-means quantization. Test accuracy is always that of the **quantized** network, measured once
# at the end (the per-interval trace uses the validation split). `fixed` runs the very same
# schedule under the same size budget with bits held at ⌊bit budget⌋ in every layer.
# With `PROGRESSIVE = True` the joint budgets run as one chain per seed (the README's AlexNet recipe
# ~40x → ~60x → ~100x): each stage starts from the previous stage's sparse ADMM weights instead of the
# dense model; each stage's reported model is a finetuned copy, the chain goes on from the raw W.

# %%
ADMM_KW = dict(
    rho=RHO,
    lr=LR,
    momentum=MOMENTUM,
    weight_decay=WEIGHT_DECAY,
    intervals=INTERVALS,
    warmup_intervals=WARMUP_INTERVALS,
    bit_range=BIT_RANGE,
)


def dense_net(s):
    net = new_model(loaders[s])
    net.load_state_dict(dense[s]["state"])
    return net.to(DEVICE)


def finish(net, state, hist, mode, p, b, s, ckpt, t1, chain=""):
    """Finetune (masks and bits fixed), final k-means quantization; save the weights to ``ckpt`` (cache)."""
    L = loaders[s]
    S, _ = sq.size_budget(net, p, b)
    acc_admm = train.evaluate(sq.quantized_copy(net, state.bits, mode), L.test, DEVICE)["accuracy"]
    sq.finetune(net, L.train, state.bits, FT_STEPS, mode=mode, lr=FT_LR, weight_decay=WEIGHT_DECAY)
    sq.quantize_weights_(net, state.bits, mode)
    fp = [32] * len(state.bits) if mode == "prune" else None
    rep = sq.layer_report(net, state.bits, mode)
    cr = {
        f"cr_{a.replace('-', '_')}": sq.compression_rate(net, a, fp)
        for a in ("weights-only", "with-biases", "with-index")
    }
    run = {
        "mode": mode,
        "nnz_budget": p,
        "bit_budget": b,
        "seed": s,
        "S_bits": S,
        "chain": chain,
        "target_cr": round(sq.target_compression(net, p, b), 2),
        "size_bits": sum(r["size_bits"] for r in rep),
        "measured_cr": cr["cr_weights_only"],
        **cr,
        "bits": state.bits,
        "accuracy_admm": acc_admm,
        "accuracy": train.evaluate(net, L.test, DEVICE)["accuracy"],
        "dense_accuracy": dense[s]["accuracy"],
        "seconds": time.perf_counter() - t1,
    }
    train.save_checkpoint(ckpt, model=net.state_dict(), model_name=MODEL)
    meta = {
        "model": MODEL,
        "kwargs": model_kwargs(L),
        "dataset": DATASET,
        "mode": mode,
        "seed": s,
        "nnz_budget": p,
        "bit_budget": b,
        "S_bits": S,
        "target_cr": run["target_cr"],
        "measured_cr": run["measured_cr"],
        **cr,
        "accuracy": run["accuracy"],
        "accuracy_split": "test",
        "layers": rep,
        "progressive_chain": chain,
        "quantized": mode != "prune",
        "zero_in_codebook": mode != "quantize",
        "note": "state_dict holds the final weights: exact zeros = pruned, non-zeros = codebook "
        "values (fp32 for mode=prune); 'bits' per layer is the allocated index width; "
        "cr_weights_only is the paper's accounting, cr_with_biases adds the fp32 biases, "
        "cr_with_index also the sparse positions and codebooks (sqjoint_solvers.index_storage)",
    }
    return {
        "run": run,
        "layers": rep,
        "meta": meta,
        "history": [{k: v for k, v in h.items() if k not in ("bits", "nnz")} for h in hist],
    }


def admm(net, mode, p, b, s):
    L = loaders[s]
    train.set_seed(s)
    train.reseed_loader(L.train, s)  # each run's shuffling restarts at its seed: no run depends on which ran before
    return sq.sqjoint_compress(
        net,
        L.train,
        sq.size_budget(net, p, b)[0],
        b,
        mode=mode,
        steps_per_interval=STEPS_PER_INTERVAL or len(L.train),
        eval_fn=lambda m: train.evaluate(m, L.val, DEVICE)["accuracy"],
        **ADMM_KW,
    )


def compress(mode, p, b, s, ckpt):
    t1 = time.perf_counter()
    net = dense_net(s)
    state, hist = admm(net, mode, p, b, s)
    return finish(net, state, hist, mode, p, b, s, ckpt, t1)


def chain_compress(s, ckpts):
    """PROGRESSIVE: JOINT_BUDGETS as one chain per seed; stage k starts from stage k-1's raw ADMM weights;
    each stage's reported model is a finetuned copy, the chain continues from the un-finetuned W."""
    L, outs, t1 = loaders[s], [], [time.perf_counter()]
    name = " -> ".join(f"{p}:{b}" for p, b in CHAIN)

    def on_stage(k, net, state, hist):
        p, b = CHAIN[k]
        outs.append(finish(copy.deepcopy(net), state, hist, "joint", p, b, s, ckpts[k], t1[0], chain=name))
        t1[0] = time.perf_counter()
        net.train()

    net = dense_net(s)
    train.set_seed(s)
    train.reseed_loader(L.train, s)
    sq.progressive_compress(
        net,
        L.train,
        [(sq.size_budget(net, p, b)[0], b) for p, b in CHAIN],
        mode="joint",
        on_stage=on_stage,
        steps_per_interval=STEPS_PER_INTERVAL or len(L.train),
        eval_fn=lambda m: train.evaluate(m, L.val, DEVICE)["accuracy"],
        **ADMM_KW,
    )
    return outs


def run_key(mode, p, b, s):
    """Everything that determines one run's result (the dense start by its weights' digest)."""
    return dict(
        mode=mode,
        p=p,
        b=b,
        seed=s,
        model=MODEL,
        dataset=DATASET,
        subset=SUBSET,
        dense_weights=dense[s]["digest"],
        BATCH_SIZE=BATCH_SIZE,
        INTERVALS=INTERVALS,
        STEPS_PER_INTERVAL=STEPS_PER_INTERVAL,
        WARMUP_INTERVALS=WARMUP_INTERVALS,
        LR=LR,
        MOMENTUM=MOMENTUM,
        WEIGHT_DECAY=WEIGHT_DECAY,
        RHO=RHO,
        BWLB=BWLB,
        FT_STEPS=FT_STEPS,
        FT_LR=FT_LR,
        version="sqjoint-run/3",  # /3: every run restarts its loader shuffling at its seed
    )


def tag_of(mode, p, b, s):
    return f"{mode}_cr{round(sq.target_compression(probe, p, b))}_seed{s}"


def publish(tag, ckpt, res):
    """Copy a (cached) run's weights into OUT_DIR/models with its metadata and record the model."""
    dst = out / "models" / f"{tag}.pt"
    train.save_checkpoint(dst, **train.load_checkpoint(ckpt))
    results.write_json(out / "models" / f"{tag}.json", res["meta"])
    meta = res["meta"]
    results.record_model(
        OUT_DIR,
        tag,
        model=MODEL,
        kwargs=meta["kwargs"],
        checkpoint=dst,
        accuracy=meta["accuracy"],
        split="test",
        mode=meta["mode"],
        bits=res["run"]["bits"],
        target_cr=meta["target_cr"],
        cr_weights_only=meta["cr_weights_only"],
        cr_with_biases=meta["cr_with_biases"],
        cr_with_index=meta["cr_with_index"],
    )


def cached(name, key, n_models, fn):
    """``fn(ckpts)`` -> list of run results, cached as ``CACHE/<name>-<hash>.json`` + one ``.pt`` per model."""
    h = results.param_hash(key)
    js, ckpts = CACHE / f"{name}-{h}.json", [CACHE / f"{name}-{h}-{k}.pt" for k in range(n_models)]
    if js.exists() and all(c.exists() for c in ckpts):
        print(f"[cache] reused {js.name}")
        return results.read_json(js)["result"], ckpts
    res = fn(ckpts)
    results.write_json(js, {"params": key, "result": res})
    return results.read_json(js)["result"], ckpts


done = {}  # (mode, p, b, seed) -> (result, checkpoint)
if PROGRESSIVE:
    for s in tqdm(SEEDS, desc="progressive chains"):
        keys = [dict(run_key("joint", p, b, s), chain=CHAIN[: k + 1]) for k, (p, b) in enumerate(CHAIN)]
        res, ckpts = cached(f"chain_seed{s}", dict(stages=keys), len(CHAIN), lambda c: chain_compress(s, c))
        done.update({("joint", p, b, s): (r, c) for (p, b), r, c in zip(CHAIN, res, ckpts)})

rows, layer_rows, hist_rows = [], [], []
for mode, p, b in tqdm(RUNS, desc="configurations"):
    for s in SEEDS:
        tag = tag_of(mode, p, b, s)
        if (mode, p, b, s) in done:
            res, ck = done[(mode, p, b, s)]
        else:
            (res,), (ck,) = cached(tag, run_key(mode, p, b, s), 1, lambda c: [compress(mode, p, b, s, c[0])])
        publish(tag, ck, res)
        run = res["run"]
        rows.append(run)
        layer_rows += [dict(r, mode=mode, target_cr=run["target_cr"], seed=s) for r in res["layers"]]
        hist_rows += [dict(h, mode=mode, target_cr=run["target_cr"], seed=s) for h in res["history"]]
        print(
            f"{mode:8s} target {run['target_cr']:7.1f}x  seed {s}: weights only {run['cr_weights_only']:7.1f}x, "
            f"with biases {run['cr_with_biases']:6.1f}x, with index {run['cr_with_index']:6.1f}x;  acc ADMM "
            f"{100 * run['accuracy_admm']:.2f}% -> finetuned {100 * run['accuracy']:.2f}%  bits {run['bits']}  "
            f"[{run['seconds']:.0f} s]" + (f"  chain {run['chain']}" if run.get("chain") else "")
        )
runs_df = pd.DataFrame(rows)
results.save_table(runs_df, out / "runs.csv")
results.save_table(pd.DataFrame(layer_rows), out / "layers.csv")
results.save_table(pd.DataFrame(hist_rows), out / "history.csv")

# %% [markdown]
# ## Summary over seeds
# Three views of the compression rate, all of the final quantized model:
# * `cr_weights_only` (= `measured_cr`, the headline, the paper's accounting, spec §5):
#   32·Σn_l / Σ nnz_l·log2(#levels_l) over Conv/Linear weights — no sparse index, no codebook, no bias.
#   One exception: a layer whose non-zeros share one value is charged its 32-bit codebook entry (the
#   paper's code would count it as free).
# * `cr_with_biases`: the same over all parameters, the 580 fp32 biases of the Caffe LeNet included
#   (18,560 bits — more than twice the whole 6,975-bit weight budget at 1975x).
# * `cr_with_index`: biases plus, per layer, a 32-bit codebook entry per level and the positions in
#   the cheapest of a bitmask (1 bit per weight + value codes), Deep Compression's relative index
#   (p-bit gaps with filler zeros, best p in 1..16, value codes with one extra code for the filler) and
#   dense codes (`sqjoint_solvers.index_storage`; the scheme used per layer is in `layers.csv`).

# %%
summary = (
    runs_df.groupby(["mode", "nnz_budget", "bit_budget", "target_cr"], sort=False)
    .agg(
        measured_cr=("measured_cr", "mean"),
        cr_weights_only=("cr_weights_only", "mean"),
        cr_with_biases=("cr_with_biases", "mean"),
        cr_with_index=("cr_with_index", "mean"),
        accuracy=("accuracy", "mean"),
        accuracy_std=("accuracy", "std"),
        accuracy_admm=("accuracy_admm", "mean"),
        seconds=("seconds", "mean"),
    )
    .reset_index()
)
summary["accuracy_std"] = summary["accuracy_std"].fillna(0.0)
summary["drop_pts"] = 100 * (dense_mean - summary["accuracy"])
results.save_table(summary, out / "summary.csv")
summary.round(4)

# %% [markdown]
# ## Learned allocation (first seed)
# Density and bits per layer for each joint budget: the budget is one number, the per-layer
# split is learned.

# %%
lay = pd.DataFrame(layer_rows)
joint_l = lay[(lay["mode"] == "joint") & (lay["seed"] == SEEDS[0])]
crs = sorted(joint_l["target_cr"].unique())
fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
names = list(dict.fromkeys(joint_l["layer"]))
w = 0.8 / max(1, len(crs))
for i, cr in enumerate(crs):
    d = joint_l[joint_l["target_cr"] == cr].set_index("layer").loc[names]
    x = np.arange(len(names)) + i * w
    axes[0].bar(x, 100 * d["density"], w, label=f"{cr:.0f}x")
    axes[1].bar(x, d["bits"], w, label=f"{cr:.0f}x")
for ax, t in zip(axes, ["density (% non-zero)", "allocated bits"]):
    ax.set_xticks(np.arange(len(names)) + w * (len(crs) - 1) / 2, names)
    ax.set_title(t)
axes[1].legend(title="target", bbox_to_anchor=(1.01, 1), loc="upper left")
axes[0].set_yscale("log")
results.save_figure(fig, out / "allocation.png")
joint_l[["target_cr", "layer", "numel", "nnz", "density", "bits", "measured_bits", "size_bits"]].round(5)

# %% [markdown]
# ## ADMM trace: quantized accuracy and residual ‖W − V‖² per interval (first seed)
# A small residual means W is already (close to) its quantized copy; the float and the quantized
# validation accuracy then coincide.

# %%
hist = pd.DataFrame(hist_rows)
h0 = hist[(hist["mode"] == "joint") & (hist["seed"] == SEEDS[0])]
fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
for cr, g in h0.groupby("target_cr"):
    axes[0].plot(g["interval"], 100 * g["quant_accuracy"], label=f"{cr:.0f}x quantized")
    axes[0].plot(g["interval"], 100 * g["float_accuracy"], "--", alpha=0.6, label=f"{cr:.0f}x float W")
    axes[1].semilogy(g["interval"], g["residual"].clip(lower=1e-12) / N_WEIGHTS, label=f"{cr:.0f}x")
axes[0].set(xlabel="ADMM interval", ylabel="val accuracy (%)")
axes[1].set(xlabel="ADMM interval", ylabel="residual / N")
axes[0].legend(fontsize=7)
axes[1].legend(fontsize=7)
results.save_figure(fig, out / "admm_trace.png")

# %% [markdown]
# ## Compression rate vs accuracy, all modes

# %%
fig, ax = plt.subplots(figsize=(6.5, 4))
for mode, g in summary.groupby("mode"):
    g = g.sort_values("measured_cr")
    ax.errorbar(
        g["measured_cr"],
        100 * g["accuracy"],
        yerr=100 * g["accuracy_std"],
        marker="o",
        capsize=3,
        label=mode,
        linestyle="-" if mode == "joint" else "none",
    )
ax.axhline(100 * dense_mean, color="k", lw=0.8, ls=":", label="dense")
ax.set(xscale="log", xlabel="measured compression (weights only, x)", ylabel="quantized test accuracy (%)")
ax.legend()
results.save_figure(fig, out / "cr_vs_accuracy.png")

# %% [markdown]
# ## Learned bits vs fixed bits at every budget
# The paper's central ablation: the same size budget S, the same ADMM schedule and finetune, the same
# dense start per seed — only the bitwidths differ: learned per layer by the MCKP V-step (`joint`) or
# held at ⌊bit budget⌋ in every layer (`fixed`; the sparsity is still learned by the knapsack).
# Positive `diff_pts` = learned bits more accurate. `joint_better_seeds` counts seeds (paired by seed).

# %%
jf_rows = []
for _, p, b in parse_runs(JOINT_BUDGETS, False) if FIXED_BITS else []:
    sel = {
        m: runs_df[(runs_df["mode"] == m) & (runs_df["nnz_budget"] == p) & (runs_df["bit_budget"] == b)]
        .set_index("seed")
        .loc[SEEDS]
        for m in ("joint", "fixed")
    }
    J, F = sel["joint"], sel["fixed"]
    (jm, js), (fm, fs) = results.mean_std(J["accuracy"]), results.mean_std(F["accuracy"])
    jf_rows.append(
        {
            "nnz_budget": p,
            "bit_budget": b,
            "target_cr": float(J["target_cr"].iloc[0]),
            "S_bits": float(J["S_bits"].iloc[0]),
            "fixed_bits": int(b),
            "seeds": SEEDS,
            "joint_accuracy": jm,
            "joint_accuracy_std": js,
            "fixed_accuracy": fm,
            "fixed_accuracy_std": fs,
            "diff_pts": 100 * (jm - fm),
            "joint_better_seeds": int((J["accuracy"] > F["accuracy"]).sum()),
            "fixed_better_seeds": int((J["accuracy"] < F["accuracy"]).sum()),
            "joint_cr_weights_only": float(J["cr_weights_only"].mean()),
            "fixed_cr_weights_only": float(F["cr_weights_only"].mean()),
            "joint_cr_with_index": float(J["cr_with_index"].mean()),
            "fixed_cr_with_index": float(F["cr_with_index"].mean()),
            "joint_bits": [list(x) for x in J["bits"]],
            "joint_progressive": bool(PROGRESSIVE),
        }
    )
jf = pd.DataFrame(jf_rows)
if len(jf):
    results.save_table(jf, out / "joint_vs_fixed.csv")
    show = jf[
        [
            "target_cr",
            "fixed_bits",
            "joint_accuracy",
            "joint_accuracy_std",
            "fixed_accuracy",
            "fixed_accuracy_std",
            "diff_pts",
            "joint_better_seeds",
            "fixed_better_seeds",
            "joint_cr_weights_only",
            "fixed_cr_weights_only",
        ]
    ].copy()
    show[["joint_accuracy", "joint_accuracy_std", "fixed_accuracy", "fixed_accuracy_std"]] *= 100
    display(show.round(2))

# %% [markdown]
# ## Ablations at equal size
# Each row pairs runs with the same budget S: joint vs prune-only (fp32 survivors, global magnitude
# top-S/32) vs fixed bits (learned sparsity, bits = floor(bit_budget)); quantize-only keeps every
# weight and so cannot go beyond 32x (1 bit per weight) — it is compared with joint at 32x.

# %%
summary["S_bits"] = [sq.size_budget(probe, p, b)[0] for p, b in zip(summary["nnz_budget"], summary["bit_budget"])]
abl = summary.pivot_table(index="S_bits", columns="mode", values="accuracy").mul(100).round(2)
abl.insert(0, "target_cr", (32 * N_WEIGHTS / abl.index).round(1))
abl = abl.sort_values("target_cr")
abl

# %%
CR_KEYS = ("cr_weights_only", "cr_with_biases", "cr_with_index")
metrics = {
    "dense_accuracy": dense_mean,
    "dense_accuracy_std": dense_std,
    "cr_accounting": {
        "cr_weights_only": "headline, the paper's: conv/linear weights, nnz x log2(#levels) "
        "(a one-value layer: its 32-bit codebook entry); no index, codebook, bias",
        "cr_with_biases": "all parameters, biases at fp32",
        "cr_with_index": "all parameters, biases at fp32, per layer 32-bit codebook + positions "
        "(cheapest of bitmask / relative index with filler zeros / dense codes)",
    },
    "results": [
        {
            "mode": r["mode"],
            "nnz_budget": float(r["nnz_budget"]),
            "bit_budget": float(r["bit_budget"]),
            "target_cr": float(r["target_cr"]),
            "measured_cr": float(r["measured_cr"]),
            **{k: float(r[k]) for k in CR_KEYS},
            "accuracy": float(r["accuracy"]),
            "accuracy_std": float(r["accuracy_std"]),
            "seeds": SEEDS,
        }
        for r in summary.to_dict("records")
    ],
    "fixed_bits": jf_rows,
}
results.write_metrics(out, metrics)
joint = summary[summary["mode"] == "joint"].sort_values("target_cr")
for r in joint.to_dict("records"):
    print(
        f"joint {r['target_cr']:7.1f}x target -> {r['cr_weights_only']:7.1f}x weights only (paper), "
        f"{r['cr_with_biases']:.1f}x with biases, {r['cr_with_index']:.1f}x with index + codebooks: "
        f"{100 * r['accuracy']:.2f} ± {100 * r['accuracy_std']:.2f} % vs dense {100 * dense_mean:.2f} % "
        f"(drop {r['drop_pts']:.2f} pts)"
    )
for cr, r in abl.iterrows():
    others = {m: r[m] for m in sq.MODES if m in r and m != "joint" and pd.notna(r[m])}
    if "joint" in r and pd.notna(r["joint"]) and others:
        print(
            f"S = {cr:.0f} bits ({r['target_cr']}x): joint {r['joint']:.2f} % vs "
            + ", ".join(f"{m} {v:.2f} %" for m, v in others.items())
        )

# %% [markdown]
# ## What the numbers say
# The verdict lines below are printed from this run's results (nothing typed by hand); read them
# against these reference points.
#
# * **Paper:** LeNet-5 on full MNIST, ~2000x (README command: nnz 0.0054, 3 bits, 120 epochs) and
#   2,120x quoted by a secondary summary, "no accuracy loss"; the abstract's verified claims are
#   836x (ResNet-50/CIFAR-10) and 205x (AlexNet/ImageNet) — out of reach of a 2-core CPU. The paper
#   claims learned bitwidths beat hand-set ones; the joint-vs-fixed rows test that claim here.
# * **Accounting:** the headline rate is the paper's (weights only). It slightly exceeds the target
#   because k-means snaps some weights to 0 and leaves some of the 2^b levels unused. The fp32 biases
#   alone outweigh the compressed weights at the paper's budget, and positions + codebooks cost more
#   again: Deep Compression-style ratios (which include indices) are only comparable with the
#   `with index` column.
# * **Proxy:** `mnist5k` has 3,600 training images, so the ADMM interval is a fixed number of
#   steps with ρ scaled (spec §9.1) rather than the README's 235-step epochs with ρ = 0.05; one test
#   image is 0.1 point. Per-layer budgets, target rates and the model (the paper's CaffeLeNet, no
#   conv ReLUs) are exactly the paper's.
# * **Why learned bits can lose:** the MCKP picks bits by weight-space distortion, not by the loss,
#   and can over-invest bits in one layer.

# %%
for r in jf_rows:
    verdict = (
        f"learned bits better by {r['diff_pts']:.2f} pts"
        if r["diff_pts"] > 0
        else f"fixed bits better by {-r['diff_pts']:.2f} pts"
        if r["diff_pts"] < 0
        else "tie"
    )
    n = len(r["seeds"])
    print(
        f"{r['target_cr']:7.1f}x: learned bits {100 * r['joint_accuracy']:.2f} ± {100 * r['joint_accuracy_std']:.2f} % "
        f"vs fixed {r['fixed_bits']} bits {100 * r['fixed_accuracy']:.2f} ± {100 * r['fixed_accuracy_std']:.2f} % "
        f"-> {verdict}; learned better on {r['joint_better_seeds']}/{n} seeds, fixed better on "
        f"{r['fixed_better_seeds']}/{n}"
    )
if jf_rows:
    wins = sum(r["diff_pts"] > 0 for r in jf_rows)
    print(
        f"Learned bit allocation beats fixed bits (mean over {len(SEEDS)} seeds) at {wins} of {len(jf_rows)} "
        "budgets on this proxy: "
        + (
            "the paper's claim that learned bits help holds at every budget here."
            if wins == len(jf_rows)
            else "the paper's claim that learned bits help is NOT reproduced here."
            if wins == 0
            else "the paper's claim holds only at some budgets here."
        )
    )
for r in metrics["results"]:
    if r["mode"] == "joint":
        print(
            f"joint {r['target_cr']:.0f}x: {r['cr_weights_only']:.0f}x in the paper's accounting is "
            f"{r['cr_with_biases']:.0f}x with the fp32 biases and {r['cr_with_index']:.0f}x with positions and codebooks"
        )
