"""Same inputs, no retraining: checkpoints and caches are reused only when their fingerprint matches.

* Stage 00 (smoke) through the runner: change ``LR`` -> a new model is trained and the metrics
  differ; change it back -> the first run's model is reused and the metrics equal the first run's.
* After the session's smoke run of every stage, executing each stage notebook again over its
  artifacts with the same parameters (as a person re-running it in JupyterLab would) trains no
  model -- ``COMPRESSLIB_FORBID_TRAINING=1`` makes any ``fit`` that would train raise -- and gives
  the same metrics.json numbers (timings excluded).
"""

import json
import re
import shutil
from pathlib import Path

import pytest
from conftest import smoke_artifacts
import yaml

from compresslib.workbook import reproduce

REPO = Path(__file__).resolve().parent.parent
NB_DIR = REPO / "notebooks"
STAGES = [p.stem for p in reproduce.stage_files(NB_DIR)]
TIMING = re.compile(r"latency|seconds|_ms$|_ms_|time|wall|cpu|iqr|speedup", re.I)


def numbers(obj):
    """metrics.json without wall-clock measurements (latency, seconds, ...), which differ run to run."""
    if isinstance(obj, dict):
        return {k: numbers(v) for k, v in obj.items() if not TIMING.search(str(k))}
    if isinstance(obj, list):
        return [numbers(v) for v in obj]
    return obj


def _notebook_text(path: Path) -> str:
    nb = json.loads(path.read_text())
    return "\n".join("".join(o.get("text", "")) for c in nb["cells"] for o in c.get("outputs", []))


def _run00(art, profiles, monkeypatch):
    monkeypatch.delenv("COMPRESSLIB_FORBID_TRAINING", raising=False)
    rc = reproduce.main(
        [
            "--profile",
            "smoke",
            "--only",
            "00",
            "--artifacts",
            str(art),
            "--profiles",
            str(profiles),
            "--force",
            "--timeout",
            "900",
        ]
    )
    assert rc == 0
    stage = art / "00_quickstart"
    return json.loads((stage / "metrics.json").read_text()), _notebook_text(stage / "00_quickstart.ipynb")


@pytest.mark.slow
def test_stage00_lr_change_retrains_and_changing_back_reuses(tmp_path, monkeypatch):
    profiles = tmp_path / "profiles"
    shutil.copytree(REPO / "profiles", profiles)
    smoke = profiles / "smoke.yaml"
    original = smoke.read_text()
    cfg = yaml.safe_load(original)
    art = tmp_path / "art"

    first, log1 = _run00(art, profiles, monkeypatch)
    assert re.search(r"\[fit\] trained dense-lenet5_caffe-seed0-\w{12}\.ckpt", log1)

    cfg["00_quickstart"]["LR"] = 0.05
    smoke.write_text(yaml.safe_dump(cfg))
    changed, log2 = _run00(art, profiles, monkeypatch)
    assert "[fit] reused dense-" not in log2  # the LR 0.001 checkpoint is not taken for the LR 0.05 run
    assert re.search(r"\[fit\] trained dense-lenet5_caffe-seed0-\w{12}\.ckpt", log2)
    assert changed["test_accuracy"] != first["test_accuracy"]
    assert numbers(changed["sparsity_sweep"]) != numbers(first["sparsity_sweep"])

    smoke.write_text(original)
    back, log3 = _run00(art, profiles, monkeypatch)
    assert re.search(r"\[fit\] reused dense-lenet5_caffe-seed0-\w{12}\.ckpt", log3)
    assert "[fit] trained" not in log3  # dense and fine-tune both reused
    assert numbers(back) == numbers(first)
    assert back["seconds_per_epoch"] == first["seconds_per_epoch"]  # the reused run's own history
    assert len(list((art / ".cache" / "00_quickstart").glob("dense-*.ckpt"))) == 2


@pytest.fixture(scope="module")
def first_run(request):
    """(artifacts, summary rows) of a finished smoke run: $COMPRESSLIB_RERUN_ART (an existing
    ``reproduce --profile smoke`` folder, e.g. of only some stages) or the session's ``smoke_run``."""
    return smoke_artifacts(request, "COMPRESSLIB_RERUN_ART")


@pytest.fixture(scope="module")
def rerun_art(first_run, tmp_path_factory):
    """A copy of the first run's artifacts (with their .cache) that the re-runs may overwrite."""
    dst = tmp_path_factory.mktemp("rerun") / "art"
    shutil.copytree(first_run[0], dst, symlinks=True, ignore=shutil.ignore_patterns(".lock"))
    return dst


@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES)
def test_rerunning_a_stage_notebook_trains_nothing_and_gives_the_same_metrics(first_run, rerun_art, stage, monkeypatch):
    rows = first_run[1]
    if stage not in rows or rows[stage]["status"] != "ok":
        pytest.skip(f"{stage} did not run ok in the first run: {rows.get(stage, {}).get('error', 'not run')}")
    out = rerun_art / stage
    before = json.loads((out / "metrics.json").read_text())
    params = dict(json.loads((out / "manifest.json").read_text())["params"], OUT_DIR=str(out))
    monkeypatch.delenv("COMPRESSLIB_CACHE_ROOT", raising=False)  # as in JupyterLab: <OUT_DIR>/../.cache
    monkeypatch.setenv("COMPRESSLIB_FORBID_TRAINING", "1")
    res = reproduce.run_stage(NB_DIR / f"{stage}.py", out, params, reproduce.ensure_kernel(), 900)
    assert res["status"] == "ok", f"{stage} re-run would train (or failed): {res['error']}"
    text = _notebook_text(out / f"{stage}.ipynb")
    assert "[fit] trained" not in text and "[fit] resumed" not in text and "not resuming" not in text
    assert numbers(json.loads((out / "metrics.json").read_text())) == numbers(before)


@pytest.mark.slow
def test_stage04_runs_do_not_depend_on_which_runs_were_cached(tmp_path, monkeypatch):
    """Each sparsity-quantization run restarts its loader's shuffling at its seed: recomputing some runs
    after a cache hit on an earlier one gives the same metrics (before the fix the fixed-bit run's
    accuracy went 0.324 -> 0.215 on the smoke profile: its shuffling continued from the earlier run)."""
    monkeypatch.delenv("COMPRESSLIB_FORBID_TRAINING", raising=False)
    monkeypatch.setenv("COMPRESSLIB_THREADS", "1")
    art = tmp_path / "art"
    argv = ["--profile", "smoke", "--only", "04", "--artifacts", str(art), "--timeout", "900"]
    assert reproduce.main(argv) == 0
    first = json.loads((art / "04_sparsity_quantization" / "metrics.json").read_text())
    cache = art / ".cache" / "04_sparsity_quantization"
    dropped = [p for p in cache.iterdir() if p.name.split("_")[0] in ("fixed", "prune", "quantize")]
    assert dropped and any(p.name.startswith("joint_") for p in cache.iterdir())
    for p in dropped:  # the first run (joint) stays cached, the later ones are recomputed after its cache hit
        p.unlink()
    assert reproduce.main([*argv, "--force"]) == 0
    again = json.loads((art / "04_sparsity_quantization" / "metrics.json").read_text())
    assert numbers(again) == numbers(first)
