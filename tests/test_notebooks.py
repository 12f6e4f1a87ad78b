"""Every stage notebook runs end to end under the smoke profile and writes the metrics its
issue names. One papermill run of all stages in order (stages read upstream artifacts)."""

import json
from pathlib import Path

import pytest

from compresslib.workbook import reproduce

NB_DIR = Path(__file__).resolve().parent.parent / "notebooks"
STAGES = [p.stem for p in reproduce.stage_files(NB_DIR)]
STANDARD = {"PROFILE", "SEED", "DATASET", "DATA_ROOT", "OUT_DIR", "DEVICE", "EPOCHS"}

# keys each stage's metrics.json must hold (from the issues), and the keys of its list rows
REQUIRED = {
    "00_quickstart": (
        {"test_accuracy", "sparsity_sweep"},
        ("sparsity_sweep", {"sparsity", "test_accuracy", "nnz_macs"}),
    ),
    "02_energy_estimator": ({"val_mre_bilinear", "val_mre_linear", "val_mre_mlp"}, None),
    "03_ecc_admm": (
        {"dense_accuracy", "results"},
        (
            "results",
            {
                "budget",
                "estimated_energy",
                "analytic_energy",
                "accuracy",
                "uniform_accuracy",
                "latency_ms",
                "dense_latency_ms",
            },
        ),
    ),
    "04_sparsity_quantization": (
        {"dense_accuracy", "results", "fixed_bits"},
        (
            "results",
            {
                "mode",
                "target_cr",
                "measured_cr",
                "cr_weights_only",
                "cr_with_biases",
                "cr_with_index",
                "accuracy",
                "accuracy_std",
                "seeds",
            },
        ),
    ),
    "05_ec2t": (
        {"fp_accuracy", "results"},
        ("results", {"method", "gamma_or_t", "sparsity", "accuracy", "accuracy_std"}),
    ),
    "06_micronet_scoring": ({"scores"}, ("scores", {"model", "mode", "params", "mults", "adds", "score"})),
    "07_dynamic_inference": (
        {
            "small_accuracy",
            "small_macs",
            "large_accuracy",
            "large_macs",
            "sweep",
            "macs_fraction_at_large_accuracy",
            "selection_split",
            "threshold",
            "per_seed",
        },
        ("sweep", {"threshold", "accuracy", "avg_macs", "escalated"}),
    ),
    "08_camp_mixed_precision": (
        {"results", "static_plan", "per_sample_decision_fraction"},
        ("results", {"model", "alpha", "accuracy", "energy_rel_w4a4", "fraction_4bit"}),
    ),
    "09_leaderboard": (
        {"n_rows", "methods", "collected", "pareto", "leaderboard"},
        ("leaderboard", {"method", "setting", "accuracy", "effective_macs"}),
    ),
    "10_deploy": (
        {"rows", "ort_argmax_agreement"},
        (
            "rows",
            {
                "method",
                "setting",
                "claimed_bits",
                "bytes_on_disk",
                "bytes_on_disk_zstd",
                "torch_ms_b1",
                "ort_ms_b1",
                "ort_ms_b64",
                "int8_ms_b1",
                "macs_speedup_claimed",
                "latency_speedup_measured",
            },
        ),
    ),
}


def _literal(v) -> bool:
    """A scalar, or a list literal of scalars / lists (structured parameters: ``RUNS = [[0.0054, 3]]``)."""
    return isinstance(v, (int, float, bool, str)) or (isinstance(v, list) and all(_literal(x) for x in v))


@pytest.mark.parametrize("stage", STAGES)
def test_parameters_cell_is_flat_literals(stage):
    params = reproduce.notebook_parameters(NB_DIR / f"{stage}.py")
    assert STANDARD <= set(params), f"{stage} misses {STANDARD - set(params)}"
    assert all(_literal(v) for v in params.values()), f"{stage}: parameters must be scalars or lists of them"


# the session fixture `smoke_run` (one smoke run of every stage) lives in tests/conftest.py:
# the browser report test reuses the same run


@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES)
def test_stage_runs_under_smoke_profile(smoke_run, stage):
    art, rc, rows = smoke_run
    assert rows[stage]["status"] == "ok", rows[stage]["error"]
    metrics = json.loads((art / stage / "metrics.json").read_text())
    keys, rows_spec = REQUIRED.get(stage, (set(), None))
    assert keys <= set(metrics), f"missing keys {keys - set(metrics)}"
    if rows_spec:
        name, row_keys = rows_spec
        assert metrics[name], f"{name} is empty"
        for row in metrics[name]:
            assert row_keys <= set(row), f"{name} row misses {row_keys - set(row)}"
    assert (art / stage / f"{stage}.ipynb").exists()
