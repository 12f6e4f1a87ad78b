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
# # 01 · ECC profiling: the cost of randomly narrowed networks
#
# **Paper.** ECC (Yang, Zhu, Liu, CVPR 2019) claims a network's energy can be predicted
# *platform-independently* from its layer widths alone: measure thousands of randomly narrowed
# dense networks on the target device, then fit a bilinear model (stage 02) and compress against it
# (stage 03). The released code samples every hidden width uniformly in 1..S_j (seeded) and measures
# GPU energy with nvidia-smi on batch-1 forward passes.
#
# **This stage.** We have no power sensor, so the default "device" is the ICLR'19 Eyeriss-style
# *analytical* energy model (deterministic, CI-safe, `compresslib.energy.analytic`). As a
# black-box demonstration we also profile measured CPU *latency* of a conv-heavy net, and NVML
# energy when a GPU and `pynvml` exist (skipped otherwise).
#
# **Reads:** nothing. **Writes:** `OUT_DIR/<net>_<device>.csv` (+ `.json` sidecar with net, S,
# units and the two reference points), `cost_distribution.png`, `metrics.json`.
# The CSV is appended row by row: an interrupted run resumes and skips measured rows.

# %% tags=["parameters"]
PROFILE = "default"  # profile name (set by compresslib.workbook.reproduce)
SEED = 0  # global seed (torch init of the latency nets); range [0, 2147483647]
DATASET = "mnist5k"  # not used here: profiling needs no data
DATA_ROOT = ""  # not used here
OUT_DIR = "../artifacts/01_profiling"  # where the profiles, figure and metrics.json go
DEVICE = "cpu"  # cpu or cuda (latency measurements)
EPOCHS = 0  # not used here: nothing is trained; range [0, 10000]
NET = "lenet5"  # narrowable net for the main profile (lenet5, alexnet, mobilenet_v1, small_convnet)
COST_DEVICE = "analytic"  # main cost device: analytic, latency or nvml
N_SAMPLES = 2000  # random width vectors measured on the main device; range [1, 1000000]
SAMPLE_SEED = 1  # seed of the width sampler (the ECC code uses random.seed(1)); range [0, 2147483647]
NUM_CLASSES = 10  # s_L; range [2, 100000]
IMAGE_SIZE = 32  # input side in pixels; range [8, 1024]
LATENCY_NET = "small_convnet"  # conv-heavy net for the black-box latency profile
N_LATENCY = 150  # latency samples, 0 skips the latency profile; range [0, 1000000]
LATENCY_BATCH = 16  # batch size of the latency measurement; range [1, 65536]
LATENCY_REPEATS = 10  # timed forward passes per sample (median and IQR reported); range [3, 100000]
LATENCY_THREADS = 1  # torch threads during latency measurement; range [1, 256]
TRY_NVML = True  # also try NVML GPU energy (skipped cleanly without GPU/pynvml)
N_NVML = 100  # NVML samples when available; range [0, 1000000]

# %%
import time
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

import compresslib
from compresslib import results, train
from compresslib.energy.measure import DeviceUnavailable
from compresslib.energy.profile import get_device, load_profile, run_profile
from compresslib.models.narrow import NARROW_NETS

threads = compresslib.set_threads()
for name, value in {
    "N_SAMPLES": N_SAMPLES,
    "N_LATENCY": N_LATENCY,
    "LATENCY_BATCH": LATENCY_BATCH,
    "LATENCY_REPEATS": LATENCY_REPEATS,
}.items():
    lo = {"N_SAMPLES": 1, "LATENCY_BATCH": 1, "LATENCY_REPEATS": 3}.get(name, 0)
    if value < lo:
        raise ValueError(f"{name} must be >= {lo}, got {value}")
for net in (NET, LATENCY_NET):
    if net not in NARROW_NETS:
        raise ValueError(f"unknown net {net!r}; valid: {sorted(NARROW_NETS)}")
out = Path(OUT_DIR)
out.mkdir(parents=True, exist_ok=True)
train.set_seed(SEED)


def make_device(name, net, **kw):
    common = dict(num_classes=NUM_CLASSES, image_size=IMAGE_SIZE)
    if name in ("latency", "nvml"):
        common.update(batch=LATENCY_BATCH, repeats=LATENCY_REPEATS, threads=LATENCY_THREADS, seed=SEED)
        if name == "latency":
            common["device"] = DEVICE
    return get_device(name, net, **common, **kw)


main_device = make_device(COST_DEVICE, NET)
print(f"{NET}: dense widths S = {main_device.S}; device {COST_DEVICE} ({main_device.unit}); torch threads {threads}")

# %% [markdown]
# ## Main profile
# Every sample is a width vector with each hidden width uniform in 1..S_j. The two reference points
# (all hidden widths 1 = the structural floor, and the dense net) are stored in the sidecar.

# %%
t0 = time.perf_counter()
csv_path = run_profile(main_device, N_SAMPLES, out, seed=SAMPLE_SEED)
seconds = time.perf_counter() - t0
prof = load_profile(csv_path, net=NET)
S = prof["meta"]["S"]
df = pd.DataFrame(prof["widths"], columns=[f"w{j}" for j in range(len(S))])
df["cost"], df["time"] = prof["cost"], prof["time"]
ref = prof["meta"]["reference"]
df["relative_cost"] = df.cost / ref["dense"]
print(
    f"{len(df)} samples in {csv_path.name} ({seconds:.1f} s this run); "
    f"empty model {ref['empty']:.4g}, dense {ref['dense']:.4g} {prof['meta']['unit']} "
    f"(floor = {ref['empty'] / ref['dense']:.3f} of dense)"
)
df.describe().T[["mean", "min", "max"]]

# %% [markdown]
# Per-layer breakdown of the dense net on the main device (analytic model: X = activation access,
# W = weight access, C = compute). For LeNet-5 the first FC layer's weight traffic dominates.

# %%
if hasattr(main_device, "breakdown"):
    table = pd.DataFrame(main_device.breakdown(S))
    results.save_table(table, out / f"{NET}_{COST_DEVICE}_dense_breakdown.csv")
    display_table = table.assign(share=table.total / table.total.sum()).round(4)
else:
    display_table = None
display_table

# %% [markdown]
# ## Black-box profiles: measured latency (and NVML energy on a GPU)

# %%
extra = {}
if N_LATENCY > 0:
    lat_device = make_device("latency", LATENCY_NET)
    t0 = time.perf_counter()
    lat_csv = run_profile(lat_device, N_LATENCY, out, seed=SAMPLE_SEED)
    extra["latency"] = load_profile(lat_csv, net=LATENCY_NET)
    print(
        f"latency profile of {LATENCY_NET}: {len(extra['latency']['cost'])} samples, batch {LATENCY_BATCH}, "
        f"{LATENCY_THREADS} thread(s), {time.perf_counter() - t0:.1f} s this run -> {lat_csv.name}"
    )
if TRY_NVML:
    try:
        nvml_device = make_device("nvml", NET)
        extra["nvml"] = load_profile(run_profile(nvml_device, N_NVML, out, seed=SAMPLE_SEED), net=NET)
    except DeviceUnavailable as e:
        print(f"NVML energy skipped: {e}")

# %%
fig, axes = plt.subplots(1, 1 + len(extra), figsize=(5 * (1 + len(extra)), 3.6), squeeze=False)
ax = axes[0, 0]
ax.hist(df.relative_cost, bins=40, color="tab:blue", alpha=0.8)
ax.axvline(ref["empty"] / ref["dense"], color="k", ls="--", label="all widths 1")
ax.axvline(1.0, color="tab:red", ls="--", label="dense")
ax.set(xlabel=f"{COST_DEVICE} cost / dense", ylabel="samples", title=f"{NET}: {len(df)} random widths")
ax.legend()
for ax, (name, p) in zip(axes[0, 1:], extra.items()):
    r = p["meta"]["reference"]
    ax.hist([c / r["dense"] for c in p["cost"]], bins=30, color="tab:green", alpha=0.8)
    ax.axvline(r["empty"] / r["dense"], color="k", ls="--", label="all widths 1")
    ax.axvline(1.0, color="tab:red", ls="--", label="dense")
    ax.set(xlabel=f"{name} / dense", title=f"{p['meta']['net']}: {name} ({p['meta']['unit']})")
    ax.legend()
fig.tight_layout()
results.save_figure(fig, out / "cost_distribution.png")

# %%
metrics = {
    "net": NET,
    "device": COST_DEVICE,
    "n_samples": len(df),
    "dense_cost": ref["dense"],
    "empty_cost": ref["empty"],
    "floor_fraction": ref["empty"] / ref["dense"],
    "seconds_per_sample": float(df.time.mean()),
    "latency_samples": len(extra["latency"]["cost"]) if "latency" in extra else 0,
}
results.write_metrics(out, metrics)
print(metrics)

# %% [markdown]
# ## What this shows
# The sampled costs spread between the structural floor (every hidden width 1) and the dense net.
# With uniform per-layer sampling most samples sit far below the dense cost, because the cost
# grows with *products* of neighbouring widths. The analytic numbers are a proxy for a real
# accelerator (Eyeriss constants, ICLR'19 model); the dense LeNet-5 total of 1.7108e7 reproduces
# that paper's code exactly (test `tests/test_energy_analytic.py`). Latency on this shared 2-core
# CPU is noisy (the spec measured ~14 % run-to-run spread), so stage 02 uses it only as a
# secondary black-box check.
