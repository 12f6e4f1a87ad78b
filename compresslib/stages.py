"""The stage graph, declared once: which earlier stages each notebook reads.

The runner (``compresslib.workbook.reproduce``: order, caching, upstream digests), the report (its "reads"
column) and the tests read this table; each notebook's "**Reads:**" sentence names the same stages (a
test checks that). This module imports nothing from the runner or the report, so library modules (the
leaderboard) may use it.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# A stage not listed here is assumed to read every earlier stage, the safe default for a new notebook.
UPSTREAM: dict[str, tuple[str, ...]] = {
    "00_quickstart": (),
    "01_profiling": (),
    "02_energy_estimator": ("01_profiling",),
    "03_ecc_admm": ("02_energy_estimator",),
    "04_sparsity_quantization": (),
    "05_ec2t": (),
    "06_micronet_scoring": ("03_ecc_admm", "04_sparsity_quantization", "05_ec2t"),
    "07_dynamic_inference": (),
    "08_camp_mixed_precision": (),
    "09_leaderboard": (
        "03_ecc_admm",
        "04_sparsity_quantization",
        "05_ec2t",
        "07_dynamic_inference",
        "08_camp_mixed_precision",
    ),
    "10_deploy": (
        "03_ecc_admm",
        "04_sparsity_quantization",
        "05_ec2t",
        "07_dynamic_inference",
        "08_camp_mixed_precision",
        "09_leaderboard",
    ),
}


def upstream_of(stage: str, selected: list[str]) -> list[str]:
    """The stages among ``selected`` that ``stage`` reads (stages outside the selection are taken as done)."""
    ups = UPSTREAM.get(stage)
    return [s for s in selected if (s in ups if ups is not None else s < stage)]


def headline(metrics: dict) -> str:
    """The first accuracy-like float of a metrics.json (else the first float), for the summary."""
    floats = [(k, v) for k, v in metrics.items() if isinstance(v, float)]
    for k, v in sorted(floats, key=lambda kv: "accuracy" not in kv[0]):
        return f"{k}={v:.4g}"
    return ""
