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
# # 02 · ECC energy estimator: a bilinear model of the widths
#
# **Paper.** ECC models the energy of a chain network with widths s = (s_0..s_L) as
# Ê(s) = b + Σ_j a_j x_j x_{j+1}, x_j = s_j / S_j: one product per layer, because a dense layer's
# MACs and weights scale with c_in·c_out. The released code fits it with Adam (or a closed-form
# ridge, `--pinv`) on an 80/20 split and reports the validation mean relative error (MRE).
#
# **This stage.** Fit the bilinear model on stage 01's profile by closed-form ridge and by
# full-batch Adam; ablations: linear in the widths, bilinear + linear terms, and a small MLP
# (64 SELU units) on the products. Parity plot and per-layer coefficients.
#
# **Reads:** `../01_profiling/<net>_<device>.csv`. **Writes:** `OUT_DIR/<net>_<device>_bilinear.json`
# (plain JSON: S, coefficients, bias, scale, net), `estimator_errors.csv`, `parity.png`,
# `coefficients.png`, `metrics.json` (`val_mre_bilinear`, `val_mre_linear`, `val_mre_mlp`).

# %% tags=["parameters"]
PROFILE = "default"  # profile name (set by compresslib.workbook.reproduce)
SEED = 0  # seed of the MLP ablation's initialisation; range [0, 2147483647]
DATASET = "mnist5k"  # not used here
DATA_ROOT = ""  # not used here
OUT_DIR = "../artifacts/02_energy_estimator"  # where the estimator, figures and metrics.json go
DEVICE = "cpu"  # not used here (fits run on the CPU)
EPOCHS = 0  # not used here (see SGD_EPOCHS / MLP_EPOCHS); range [0, 10000]
NET = "lenet5"  # net whose profile is fitted (must match stage 01)
COST_DEVICE = "analytic"  # which stage-01 profile to fit
WD = 0.001  # ridge / weight-decay strength (the code's --wd); range [0, 100]
TRAIN_FRACTION = 0.8  # train share of the shuffled samples; range (0, 1)
SPLIT_SEED = 117  # shuffle seed (the code uses 117); range [0, 2147483647]
SGD_EPOCHS = 10000  # full-batch Adam epochs for the SGD fit; range [1, 10000000]
SGD_LR = 0.001  # Adam learning rate of the SGD fit; range (0, 10]
MLP_EPOCHS = 2000  # full-batch Adam epochs for the MLP ablation; range [1, 10000000]
MLP_HIDDEN = 64  # hidden units of the MLP ablation; range [1, 100000]
LATENCY_NET = "small_convnet"  # also fit stage 01's latency profile of this net if it exists

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch

import compresslib
from compresslib import results, train
from compresslib.energy import bilinear
from compresslib.energy.profile import load_profile, profile_paths

threads = compresslib.set_threads()
if not 0 < TRAIN_FRACTION < 1:
    raise ValueError(f"TRAIN_FRACTION must be in (0, 1), got {TRAIN_FRACTION}")
if WD < 0 or SGD_EPOCHS < 1 or MLP_EPOCHS < 1:
    raise ValueError("WD must be >= 0 and SGD_EPOCHS, MLP_EPOCHS >= 1")
out = Path(OUT_DIR)
out.mkdir(parents=True, exist_ok=True)
upstream = Path(OUT_DIR).parent / "01_profiling"
csv_path = results.require_artifact(profile_paths(upstream, NET, COST_DEVICE)[0], "01_profiling")
prof = load_profile(csv_path, net=NET)
S, ref = prof["meta"]["S"], prof["meta"]["reference"]
widths = torch.tensor(prof["widths"], dtype=torch.float64)
cost = torch.tensor(prof["cost"], dtype=torch.float64)
tr, va = bilinear.split_indices(len(cost), TRAIN_FRACTION, SPLIT_SEED)
print(
    f"{csv_path.name}: {len(cost)} samples ({len(tr)} train / {len(va)} val), S = {S}, "
    f"unit {prof['meta']['unit']}, threads {threads}"
)

# %% [markdown]
# ## Fits and ablations
# Costs are divided by the dense cost before fitting (so Ê(dense) ≈ 1 and budgets are fractions);
# the ridge system is (XᵀX + 0.5·wd·I) w = XᵀY with the bias column regularised too, as in the code.


# %%
def fit_all(widths, cost, S, dense, tag):
    meta = dict(net=prof["meta"]["net"] if tag == "main" else tag, device=COST_DEVICE, unit=prof["meta"]["unit"])
    fits = {
        "bilinear (ridge)": bilinear.fit(widths[tr_], cost[tr_], S, "bilinear", "ridge", WD, scale=dense, **meta),
        "bilinear (Adam)": bilinear.fit(
            widths[tr_], cost[tr_], S, "bilinear", "sgd", WD, SGD_EPOCHS, SGD_LR, scale=dense, **meta
        ),
        "linear in widths": bilinear.fit(widths[tr_], cost[tr_], S, "linear", "ridge", WD, scale=dense, **meta),
        "bilinear + linear": bilinear.fit(
            widths[tr_], cost[tr_], S, "bilinear+linear", "ridge", WD, scale=dense, **meta
        ),
    }
    preds = {k: bilinear.predict(m, widths[va_]) for k, m in fits.items()}
    train.set_seed(SEED)
    mlp = bilinear.fit_mlp(widths[tr_], cost[tr_], S, MLP_HIDDEN, MLP_EPOCHS, seed=SEED)
    preds[f"MLP ({MLP_HIDDEN} SELU)"] = mlp(widths[va_])
    rows = [
        {
            "profile": tag,
            "model": k,
            "val_mre": bilinear.mre(cost[va_], p),
            "val_max_rel_error": float(((cost[va_] - p).abs() / cost[va_]).max()),
        }
        for k, p in preds.items()
    ]
    return fits, preds, rows


tr_, va_ = tr, va
fits, preds, rows = fit_all(widths, cost, S, ref["dense"], "main")
est = fits["bilinear (ridge)"]
est.info = {
    "val_mre": rows[0]["val_mre"],
    "n_train": len(tr),
    "n_val": len(va),
    "profile": csv_path.name,
    "dense_cost": ref["dense"],
    "empty_cost": ref["empty"],
}
est_path = bilinear.save(est, out / f"{NET}_{COST_DEVICE}_bilinear.json")
errors = pd.DataFrame(rows)
errors

# %% [markdown]
# Black-box check: the same fits on the measured-latency profile of stage 01 (if it was run).

# %%
lat_csv = profile_paths(upstream, LATENCY_NET, "latency")[0]
if lat_csv.exists():
    lp = load_profile(lat_csv, net=LATENCY_NET)
    lw, lc = torch.tensor(lp["widths"], dtype=torch.float64), torch.tensor(lp["cost"], dtype=torch.float64)
    tr_, va_ = bilinear.split_indices(len(lc), TRAIN_FRACTION, SPLIT_SEED)
    _, _, lat_rows = fit_all(lw, lc, lp["meta"]["S"], lp["meta"]["reference"]["dense"], f"{LATENCY_NET} latency")
    errors = pd.concat([errors, pd.DataFrame(lat_rows)], ignore_index=True)
else:
    print(f"no latency profile at {lat_csv}; skipped")
results.save_table(errors, out / "estimator_errors.csv")
errors.round(4)

# %%
fig1, ax1 = plt.subplots(figsize=(5, 4))
y = (cost[va] / ref["dense"]).numpy()
for name in ("linear in widths", "bilinear (ridge)"):
    ax1.scatter(y, (preds[name] / ref["dense"]).numpy(), s=6, alpha=0.6, label=name)
ax1.plot([0, y.max()], [0, y.max()], "k--", lw=1)
ax1.set(xlabel="measured cost / dense", ylabel="predicted / dense", title=f"{NET} {COST_DEVICE}: validation parity")
ax1.legend()
fig1.tight_layout()
results.save_figure(fig1, out / "parity.png")
fig2, ax2 = plt.subplots(figsize=(6, 4))
layer_names = [f"a{j} ({S[j]}x{S[j + 1]})" for j in range(len(S) - 1)]
ax2.bar(layer_names, [a / ref["dense"] for a in est.a], color="tab:blue")
ax2.axhline(est.bias, color="k", lw=1, ls="--", label=f"bias b = {est.bias:.3f}")
ax2.set(ylabel="coefficient / dense cost", title="bilinear coefficients per layer")
ax2.legend()
ax2.tick_params(axis="x", rotation=30)
fig2.tight_layout()
results.save_figure(fig2, out / "coefficients.png")

# %%
main = errors[errors.profile == "main"].set_index("model").val_mre
metrics = {
    "val_mre_bilinear": float(main["bilinear (ridge)"]),
    "val_mre_linear": float(main["linear in widths"]),
    "val_mre_mlp": float(main[f"MLP ({MLP_HIDDEN} SELU)"]),
}
results.write_metrics(out, metrics)
print(metrics, "->", est_path.name)

# %% [markdown]
# ## What this shows
# On the analytic energy of LeNet-5 the bilinear model is accurate to about a percent on held-out
# width vectors, while a model linear in the widths is an order of magnitude worse: energy really
# is a sum of c_in·c_out products. The MLP on the same products lands in the same range as the plain
# bilinear fit (table above), so the extra flexibility buys little, and adding linear terms helps
# (they capture the activation traffic that is linear in one width). The ECC paper's own
# estimator error table could not be read (spec §4.3), so no paper number is quoted; the spec's
# independent check found 0.93 % (bilinear) vs 17.4 % (linear) on 2 000 LeNet-5 samples of the same
# analytic model. On measured CPU latency the error is far larger: tiny nets are dominated by
# per-call framework overhead and a shared 2-core machine adds load-dependent noise, which is the
# honest limit of a black-box platform without a power meter (the spec measured ≈10 % on an idle VM).
