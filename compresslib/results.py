"""Run outputs: atomic files, metrics.json, tidy CSV tables, figures, parameter hashing.

Everything is written to a temporary file first and renamed into place, so an interrupted run
never leaves a half-written metrics.json, table or figure behind.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

import numpy as np


@contextmanager
def atomic_path(path):
    """``with atomic_path(p) as tmp:`` write ``tmp`` (a temporary name beside ``p``); on success it is renamed over
    ``p``, on an exception it is deleted, so ``p`` is never half-written (any writer: torch, onnx, a library)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path``, then rename it over ``path`` (never half-written)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def _jsonable(o: Any):
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, np.ndarray):
        return _jsonable(o.tolist())
    if isinstance(o, np.generic):
        return _jsonable(o.item())
    if hasattr(o, "tolist") and hasattr(o, "dim"):  # torch tensor
        return _jsonable(o.tolist())
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, Path):
        return str(o)
    return o


def write_json(path, obj) -> Path:
    """Atomic, numpy/torch-safe JSON (NaN/inf become null)."""
    return atomic_write_text(path, json.dumps(_jsonable(obj), indent=2, sort_keys=False) + "\n")


def read_json(path):
    return json.loads(Path(path).read_text())


def write_metrics(out_dir, metrics: dict) -> Path:
    """Write ``OUT_DIR/metrics.json`` atomically and return its path."""
    return write_json(Path(out_dir) / "metrics.json", metrics)


def save_table(df, path) -> Path:
    """Write a pandas DataFrame as CSV, atomically."""
    return atomic_write_text(path, df.to_csv(index=False))


def save_figure(fig, path, dpi: int = 120) -> Path:
    """Save a matplotlib figure as PNG, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    os.replace(tmp, path)
    return path


def sha256_file(path) -> str:
    """sha256 hex of a file's bytes (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# The runner and the report (compresslib/workbook/) run stages but compute no number: editing them does not
# invalidate trained models, so their source is not part of the library digest.
RUNNER_PACKAGE = "workbook"
_LIB_DIGEST: str | None = None


def source_digest(root) -> str:
    """sha256 over every ``*.py`` under ``root`` (relative path + bytes, sorted) except ``root/workbook/``."""
    root = Path(root)
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        rel = f.relative_to(root)
        if rel.parts[0] == RUNNER_PACKAGE:
            continue
        h.update(rel.as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def library_digest() -> str:
    """sha256 of the compresslib source that computes numbers (``source_digest`` of the package: every ``*.py``
    but the runner's and the report's).

    Part of every fit fingerprint and cache key: a checkpoint or cached sweep made by other code is
    never reused. Content only (relative paths), so a copied checkout keeps its caches.
    """
    global _LIB_DIGEST
    if _LIB_DIGEST is None:
        _LIB_DIGEST = source_digest(Path(__file__).resolve().parent)
    return _LIB_DIGEST


def param_hash(params: dict, n: int = 12, code: bool = True) -> str:
    """Stable short hash of a parameter dict (key order does not matter).

    ``code=True`` (the default, for cache keys) also hashes ``library_digest()``, so an entry
    computed by other library code is never found."""
    if code:
        params = {"params": params, "library": library_digest()}
    blob = json.dumps(_jsonable(params), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:n]


def require_artifact(path, stage: str) -> Path:
    """Return ``path`` if it exists, else raise an error naming the stage notebook to run first."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing: run stage {stage} first, e.g. "
            f"`python -m compresslib.workbook.reproduce --profile default --only {stage[:2]}`"
        )
    return path


def with_cache(path, params: dict, fn: Callable[[], Any], force: bool = False):
    """Return ``fn()``'s JSON result, cached in ``path`` under the hash of ``params``.

    A sweep point whose parameters did not change is not recomputed (``force=True`` re-runs).
    """
    path = Path(path)
    key = param_hash(params)
    cache = read_json(path) if path.exists() else {}
    if not force and key in cache:
        return cache[key]["result"]
    result = _jsonable(fn())
    cache = read_json(path) if path.exists() else {}
    cache[key] = {"params": _jsonable(params), "result": result}
    write_json(path, cache)
    return result


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    a = np.asarray(list(values), dtype=float)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def cache_dir(out_dir) -> Path:
    """Where a stage keeps what it trained and swept, keyed by fingerprint, across runs.

    ``$COMPRESSLIB_CACHE_ROOT/<stage>`` when the runner sets it (the stage then runs in a staging
    folder that replaces ``artifacts/<stage>/`` only on success), else ``<OUT_DIR>/../.cache/<stage>``,
    so a notebook opened in JupyterLab over the same artifacts finds the runner's models and sweeps.
    ``<stage>`` is the name of ``out_dir`` without the runner's ``.staging<pid>`` suffix. Entries are only
    ever reused when their fingerprint matches.
    """
    out_dir = Path(out_dir)
    root = os.environ.get("COMPRESSLIB_CACHE_ROOT")
    root = Path(root) if root else out_dir.resolve().parent / ".cache"
    name = out_dir.name.split(".staging")[0] if ".staging" in out_dir.name else out_dir.name
    path = root / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def clear_models(out_dir) -> None:
    """Start the run's ``OUT_DIR/models.json`` afresh (a notebook calls it first), so it lists exactly the models
    of the current run, never a row an earlier run with other parameters left behind."""
    (Path(out_dir) / "models.json").unlink(missing_ok=True)


def fresh_out_dir(out_dir) -> Path:
    """A stage's ``OUT_DIR`` as a Path, created if missing, with its ``models.json`` started afresh
    (``clear_models``): the first call of a notebook that records models."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clear_models(out)
    return out


def record_model(
    out_dir,
    key: str,
    *,
    model: str,
    kwargs: dict,
    checkpoint,
    accuracy: float | None,
    split: str,
    board: dict | None = None,
    **extra,
) -> Path:
    """Add (or replace) one saved model's row in ``OUT_DIR/models.json``.

    The runner copies these rows into the stage's ``manifest.json``: registry ``model`` name +
    ``kwargs`` (enough to rebuild it), the ``checkpoint`` file (relative to ``OUT_DIR`` when inside
    it, else ``../<path>`` when inside the artifacts root, such as ``results.cache_dir``), its
    ``accuracy`` and the ``split`` that accuracy was measured on (``"val"`` / ``"test"``).
    ``board``: the model's leaderboard fields (:data:`compresslib.manifest.BOARD_FIELDS`, checked here);
    only rows with one are on the board. ``extra``: anything else a later stage needs (builder keys such
    as ``kind``, evaluation dtype, ...).
    """
    if split not in ("train", "val", "test"):
        raise ValueError(f"record_model: split must be 'train', 'val' or 'test', got {split!r}")
    if board is not None:
        from .manifest import check_board

        check_board(board, f"record_model({key!r}): board")
        if split != "test":
            raise ValueError(f"record_model({key!r}): a board row's accuracy must be measured on 'test', got {split!r}")
        extra["board"] = board
    out_dir = Path(out_dir)
    ck = Path(checkpoint)
    try:
        ck = ck.resolve().relative_to(out_dir.resolve())
    except ValueError:
        try:  # e.g. cache_dir(OUT_DIR): relative to the artifacts root, so a moved checkout still resolves
            ck = Path("..") / ck.resolve().relative_to(out_dir.resolve().parent)
        except ValueError:
            pass
    path = out_dir / "models.json"
    rows = read_json(path) if path.exists() else {}
    rows[str(key)] = {
        "model": model,
        "kwargs": _jsonable(kwargs),
        "checkpoint": str(ck),
        "accuracy": accuracy,
        "split": split,
        **_jsonable(extra),
    }
    return write_json(path, rows)
