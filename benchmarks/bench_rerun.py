"""Time a second execution of a stage notebook over its own artifacts, as JupyterLab "run all" would.

    python benchmarks/bench_rerun.py ARTIFACTS STAGE OUT.json

Same parameters as the stage's manifest, ``COMPRESSLIB_FORBID_TRAINING=1`` (any training raises), the
cache at ``<ARTIFACTS>/.cache`` as in JupyterLab. Writes OUT.json (wall time, fit reuse counts, whether
metrics.json is unchanged, timings excluded) and OUT.png (cumulative per-cell time, first run vs re-run;
the first run's notebook is kept as OUT.first.ipynb). Run it on a copy of the artifacts: the stage folder
is rewritten in place.
"""

import json
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from compresslib.workbook import reproduce  # noqa: E402
from test_rerun_reuse import _notebook_text, numbers  # noqa: E402  (the re-run test's own helpers)


def durations(ipynb: Path) -> list[float]:
    """Seconds of every code cell (papermill's per-cell metadata)."""
    nb = json.loads(Path(ipynb).read_text())
    return [
        c.get("metadata", {}).get("papermill", {}).get("duration") or 0.0
        for c in nb["cells"]
        if c["cell_type"] == "code"
    ]


def plot(first: list[float], second: list[float], stage: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.step(range(1, len(first) + 1), np.cumsum(first), where="post", label=f"first run (trains): {sum(first):.0f} s")
    ax.step(range(1, len(second) + 1), np.cumsum(second), where="post", label=f"re-run (reuses): {sum(second):.0f} s")
    ax.axhline(60, ls=":", c="k", lw=1, label="60 s target")
    ax.set_yscale("log")
    ax.set_xlabel(f"code cell of notebook {stage}")
    ax.set_ylabel("cumulative wall time (s)")
    ax.set_title(f"{stage}: re-running over its artifacts")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(art: Path, stage: str, out_json: Path) -> dict:
    out = art / stage
    before = json.loads((out / "metrics.json").read_text())
    params = dict(json.loads((out / "manifest.json").read_text())["params"], OUT_DIR=str(out))
    os.environ.pop("COMPRESSLIB_CACHE_ROOT", None)  # as in JupyterLab: <OUT_DIR>/../.cache
    os.environ["COMPRESSLIB_FORBID_TRAINING"] = "1"
    first = out_json.with_suffix(".first.ipynb")
    shutil.copy(out / f"{stage}.ipynb", first)
    t0 = time.perf_counter()
    res = reproduce.run_stage(REPO / "notebooks" / f"{stage}.py", out, params, reproduce.ensure_kernel(), 900)
    wall = time.perf_counter() - t0
    text = _notebook_text(out / f"{stage}.ipynb")
    d1, d2 = durations(first), durations(out / f"{stage}.ipynb")
    r = {
        "stage": stage,
        "status": res["status"],
        "error": res["error"],
        "wall_s": round(wall, 1),
        "notebook_s": res["seconds"],
        "cells_first_s": round(sum(d1), 1),
        "cells_rerun_s": round(sum(d2), 1),
        "slowest_rerun_cells": [(i, round(t, 1)) for i, t in sorted(enumerate(d2, 1), key=lambda t: -t[1])[:5]],
        "fit_trained": text.count("[fit] trained"),
        "fit_resumed": text.count("[fit] resumed"),
        "fit_reused": text.count("[fit] reused"),
        "metrics_equal": numbers(json.loads((out / "metrics.json").read_text())) == numbers(before),
        "threads": os.environ.get("COMPRESSLIB_THREADS", "default"),
    }
    out_json.write_text(json.dumps(r, indent=1))
    plot(d1, d2, stage, out_json.with_suffix(".png"))
    return r


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    print(json.dumps(main(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])), indent=1))
