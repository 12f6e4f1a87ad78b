"""benchmarks/gpu_check.py on a machine without a GPU: the dry run, the refusal to run without one,
the exec fallback for notebooks (no papermill), the smoke tolerances, the paper plans and the hours."""

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "gpu_check.py"
PAPER = sorted((REPO / "profiles" / "paper").glob("*.yaml"))


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


gc = _load()


def _run(*args, timeout=300):
    env = dict(os.environ, COMPRESSLIB_PROGRESS="0", MPLBACKEND="Agg")
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_dry_run_lists_every_step_with_expected_seconds_and_fits_8_minutes():
    p = _run("--dry-run")
    assert p.returncode == 0, p.stderr
    for s in gc.STEPS:
        assert re.search(rf"^{s['name']}\s+{s['expected_s']}\s+{s['budget_s']}\s+\S", p.stdout, re.M), s["name"]
    assert sum(s["budget_s"] for s in gc.STEPS) + gc.RESERVE_S <= gc.DEFAULT_BUDGET_S == 480
    for prof in PAPER:  # every paper profile's work items are listed
        assert prof.stem in p.stdout
    for net in gc.ECC_NETS:
        assert net["net"] in p.stdout
    assert "stage runner:" in p.stdout and p.stdout.rstrip().endswith("dry run OK")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the refusal cannot be seen")
def test_without_a_gpu_it_refuses_clearly_and_writes_nothing(tmp_path):
    p = _run(tmp_path / "out")
    assert p.returncode == 2
    assert "no CUDA GPU here" in p.stderr and "torch.cuda.is_available() is False" in p.stderr
    assert "--dry-run" in p.stderr
    assert not (tmp_path / "out").exists()


def test_bad_arguments_fail_before_any_work(tmp_path):
    for args, msg in (
        (["--budget", "30"], "--budget must be in [60, 3600]"),
        (["--steps", "cuda_tests,bogus"], "unknown ['bogus']"),
        (["--paper", "nope"], "--paper: unknown ['nope']"),
        (["--ecc-nets", "resnet"], "--ecc-nets: unknown ['resnet']"),
        (["--only", "77"], "matches no stage notebook"),
    ):
        p = _run(tmp_path / "out", "--dry-run", *args)
        assert p.returncode == 2 and msg in p.stderr, (args, p.stderr)
    assert not (tmp_path / "out").exists()


def test_cuda_marker_collects_at_least_10_tests_skipped_here_with_a_reason():
    env = dict(os.environ, COMPRESSLIB_PROGRESS="0")
    col = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--collect-only",
            "-q",
            "-m",
            "cuda",
            "-p",
            "no:cacheprovider",
            "tests/test_cuda.py",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    n = int(re.search(r"(\d+) tests? collected", col.stdout).group(1))
    assert n >= 10
    assert re.search(r'^\s+"cuda: ', (REPO / "pyproject.toml").read_text(), re.M)  # marker registered
    if not torch.cuda.is_available():
        r = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-rs", "-p", "no:cacheprovider", "tests/test_cuda.py"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert r.returncode == 0 and f"{n} skipped" in r.stdout
        assert r.stdout.count("torch.cuda.is_available() is False") >= 1


TINY = """# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
# ---

# %% [markdown]
# # A tiny stage
# %% tags=["parameters"]
OUT_DIR = "x"             # where metrics.json goes
N = 2                     # a number; range [1, 10]
DEVICE = "cpu"            # cpu or cuda

# %%
import json
import pathlib

from IPython.display import display

display({"n": N})

# %% [markdown]
# prose between cells

# %%
pathlib.Path(OUT_DIR).mkdir(parents=True, exist_ok=True)
if N > 9:
    raise ValueError(f"N too large: {N}")
(pathlib.Path(OUT_DIR) / "metrics.json").write_text(json.dumps({"n": N, "device": DEVICE, "cwd": str(pathlib.Path.cwd())}))
"""


def test_exec_fallback_runs_a_percent_notebook_with_injected_parameters(tmp_path):
    nb = tmp_path / "99_tiny.py"
    nb.write_text(TINY)
    cells = gc.percent_cells(TINY)
    assert [h for h, _ in cells] == ["[markdown]", 'tags=["parameters"]', "", "[markdown]", ""]
    assert gc.declared_parameters(nb) == {"OUT_DIR": "x", "N": 2, "DEVICE": "cpu"}
    params = gc.stage_params(
        nb, {"common": {"N": 5, "UNDECLARED": 1}, "99_tiny": {"DEVICE": "cuda"}}, {"PROFILE": "smoke"}
    )
    assert params == {"N": 5, "DEVICE": "cuda"}  # only declared names, stage section over common
    params["OUT_DIR"] = str(tmp_path / "out")
    p = _run("--exec-stage", nb, "--params", json.dumps(params))
    assert p.returncode == 0, p.stderr
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert m == {
        "n": 5,
        "device": "cuda",
        "cwd": str(tmp_path),
    }  # injected after the parameters cell, cwd = notebook dir
    assert "{'n': 5}" in p.stdout  # display() prints
    bad = _run("--exec-stage", nb, "--params", json.dumps({**params, "N": 10}))
    assert bad.returncode != 0 and "N too large: 10" in bad.stderr
    # the runner's job without papermill (the background CPU smoke uses it): profile -> stages -> summary.json
    (tmp_path / "prof.yaml").write_text("common:\n  N: 7\n99_tiny:\n  N: 11\n")
    job = {
        "stages": [str(nb)],
        "profile": str(tmp_path / "prof.yaml"),
        "overrides": {"PROFILE": "prof", "DEVICE": "cpu"},
        "art": str(tmp_path / "art"),
        "seconds": 120,
    }
    p = _run("--exec-stages", json.dumps(job))
    assert p.returncode == 0, p.stderr
    rows = json.loads((tmp_path / "art" / "summary.json").read_text())
    assert [(r["stage"], r["status"]) for r in rows] == [("99_tiny", "failed")] and "N too large: 11" in rows[0][
        "error"
    ]
    (tmp_path / "prof.yaml").write_text("common:\n  N: 7\n")
    assert _run("--exec-stages", json.dumps(job)).returncode == 0
    assert json.loads((tmp_path / "art" / "99_tiny" / "metrics.json").read_text())["n"] == 7


def test_parameters_parsed_without_jupytext_match_the_runner():
    from compresslib.workbook import reproduce

    for py in gc.stage_files():
        assert gc.declared_parameters(py) == reproduce.notebook_parameters(py), py.name


def test_smoke_tolerances_pass_within_and_fail_outside():
    cpu = {
        "test_accuracy": 0.90,
        "dense_macs": 1000,
        "seconds_per_epoch": 1.0,
        "model": "lenet5",
        "sweep": [{"accuracy": 0.5, "threshold": 0.1}],
        "val_mre_bilinear": 0.01,
    }
    near = {
        "test_accuracy": 0.92,
        "dense_macs": 1000,
        "seconds_per_epoch": 9.0,
        "model": "lenet5",
        "sweep": [{"accuracy": 0.52, "threshold": 0.1}],
        "val_mre_bilinear": 0.0105,
    }
    checks = {c["path"]: c for c in gc.compare_metrics("00_quickstart", cpu, near)}
    assert checks["seconds_per_epoch"]["ok"] is None and checks["seconds_per_epoch"]["rule"] == "ignore"
    assert all(c["ok"] in (True, None) for c in checks.values())
    assert checks["dense_macs"]["rule"] == "exact" and checks["sweep.__len__"]["rule"] == "exact"
    far = dict(
        near, test_accuracy=0.84, dense_macs=1001, model="lenet5_caffe", sweep=[{"accuracy": 0.5, "threshold": 0.1}] * 2
    )
    bad = {c["path"] for c in gc.compare_metrics("00_quickstart", cpu, far) if c["ok"] is False}
    assert bad == {"test_accuracy", "dense_macs", "model", "sweep.__len__", "sweep[1].accuracy", "sweep[1].threshold"}
    assert gc.rule_for("08_camp_mixed_precision", "accuracy")[:2] == ("abs", 10.0)  # CAMP reports %
    assert gc.rule_for("02_energy_estimator", "val_mre_bilinear")[:2] == ("rel", 1e-3)
    assert gc.rule_for("03_ecc_admm", "latency_ms")[0] == "ignore"
    assert gc.rule_for("07_dynamic_inference", "small_macs")[0] == "exact"
    assert gc.rule_for("09_leaderboard", "pareto")[0] == "ignore"
    assert gc.rule_for("00_quickstart", "nnz_macs")[:2] == ("rel", 0.10)  # follows the pruned weights


def test_compare_smoke_reports_per_stage(tmp_path):
    cpu, cuda = tmp_path / "cpu", tmp_path / "cuda"
    for art, acc in ((cpu, 0.9), (cuda, 0.91)):
        (art / "00_quickstart").mkdir(parents=True)
        (art / "00_quickstart" / "metrics.json").write_text(json.dumps({"test_accuracy": acc, "params": 61706}))
    (cpu / "01_profiling").mkdir()
    (cpu / "01_profiling" / "metrics.json").write_text(json.dumps({"n_samples": 300}))
    rows = [
        {"stage": "00_quickstart", "status": "ok", "seconds": 3.0},
        {"stage": "01_profiling", "status": "failed", "seconds": 1.0, "error": "cell 3: RuntimeError: x"},
    ]
    res = gc.compare_smoke(cpu, cuda, rows, only=["00", "01", "02"])
    assert set(res) == {"00_quickstart", "01_profiling", "02_energy_estimator"}
    assert res["00_quickstart"]["ok"] is True and res["00_quickstart"]["n_checks"] == 2
    assert res["01_profiling"]["ok"] is False and "RuntimeError" in res["01_profiling"]["error"]
    assert res["02_energy_estimator"]["ok"] is None  # neither side ran it


def test_every_paper_profile_has_a_plan_with_buildable_models():
    assert set(gc.README_ESTIMATES) == {p.stem for p in PAPER}  # the side-by-side table covers every profile
    seen = {}
    for prof in PAPER:
        items = gc.paper_plan(prof.stem, gc.read_yaml(prof))
        assert items, prof.stem
        for it in items:
            assert it["images"] > 0 and it["batch"] >= 1 and len(it["shape"]) == 3 and it["dataset"] in gc.TRAIN_IMAGES
            seen.setdefault(json.dumps(it["model"], sort_keys=True), it)
    assert len(seen) >= 15
    for it in seen.values():  # every network builds and classifies
        m = gc.build_model(it["model"]).eval()
        ncls = it["model"].get("num_classes") or it["model"]["kwargs"]["num_classes"]
        if it["shape"][1] <= 64:
            with torch.no_grad():
                assert m(torch.zeros(2, *it["shape"])).shape == (2, ncls)
        else:
            assert m.state_dict()  # 224-px nets: built only (CPU time)
    camp = gc.paper_plan("camp_resnet44_cifar10", gc.read_yaml(REPO / "profiles/paper/camp_resnet44_cifar10.yaml"))
    assert [it["images"] for it in camp] == [200 * 45_000] * 3 + [(200 + 200) * 45_000]
    ecc = gc.paper_plan("ecc_alexnet_imagenet", gc.read_yaml(REPO / "profiles/paper/ecc_alexnet_imagenet.yaml"))
    assert ecc[0]["images"] == 90 * gc.TRAIN_IMAGES["imagenet"] and ecc[1]["per"] == "ADMM epoch"
    assert all(it["loader_bound"] for it in ecc)


def test_measure_step_and_hours_arithmetic():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    r = gc.measure_step(
        net, 8, (1, 8, 8), 10, "cpu", amp=True, channels_last=False, seconds=0.05, min_steps=2, warmup=1
    )
    assert r["images_per_s"] > 0 and r["steps"] >= 2 and r["loss_finite"]
    items = [
        {"label": "a", "images": 3600, "loader_bound": False},
        {"label": "b", "images": 7200, "factor": 1.5, "per": "ADMM epoch", "loader_bound": True},
    ]
    h = gc.hours_for(items, {"a": {"fp32": 1.0}, "b": {"fp32": 3.0}}, "fp32")
    assert h["hours"] == pytest.approx(1.0) and h["hours_per_admm_epoch"] == pytest.approx(1.0)
    assert h["hours_per_admm_epoch_loader_bound"] == pytest.approx(1.0) and h["missing"] == []
    fast = gc.hours_for(items, {"a": {"fp32": 1e9}, "b": {"fp32": 1e9}}, "fp32")
    assert fast["hours_per_admm_epoch_loader_bound"] == pytest.approx(7200 / gc.LOADER_IMAGES_PER_S / 3600)
    assert gc.hours_for(items, {"b": {"fp32": 3.0}}, "amp")["missing"] == ["a", "b"]
    table = gc.readme_hours_table(
        {"ecc_alexnet_imagenet": {"fp32": h, "amp": gc.hours_for(items, {}, "amp")}}, "NVIDIA H200", "2.14.1"
    )
    assert "NVIDIA H200" in table and "torch 2.14.1" in table
    assert "| ecc_alexnet_imagenet | 1.0 h + 1.0 h per ADMM epoch | not measured |" in table
    assert gc.README_ESTIMATES["ecc_alexnet_imagenet"] in table
