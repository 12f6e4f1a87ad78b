"""The model manifest: each stage's ``models.json`` rows, the only thing later stages read of a model.

A row (written by :func:`compresslib.results.record_model`)::

    {"model": <registry name or a BUILDERS name>, "kwargs": {...}, "checkpoint": "<path>",
     "accuracy": <fraction>, "split": "test" | "val" | "train",
     "board": {...} | absent, <builder keys: "kind", "static_plan", ...>}

``board`` puts the model on the leaderboard (stage 09) and into the deploy stage (10); its fields are
:data:`BOARD_FIELDS`. :func:`build_model` rebuilds the architecture from ``model`` + ``kwargs`` (a registry
model, or a :data:`BUILDERS` entry for composite ones such as CAMP's dual-path nets and EdgeCompress's
cascade), :func:`load_row_model` also loads the checkpoint, and :func:`candidates` turns every board row
of every finished stage into a leaderboard :class:`Candidate`. Adding a method to the board means writing
its rows; no collector knows another stage's files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch.nn as nn

from .checks import check_number


def _field_table(required: str, optional: str) -> dict[str, tuple[bool, str]]:
    """{field: (required, description)} from two tables of ``field  description`` lines, in table order."""
    return {
        name: (req, desc)
        for req, table in ((True, required), (False, optional))
        for name, desc in (line.split(None, 1) for line in table.strip().splitlines())
    }


#: board field -> (required, description)
BOARD_FIELDS: dict[str, tuple[bool, str]] = _field_table(
    required="""
        method        method name shown on the board (str)
        setting       the method's setting, e.g. 'joint x1000' (str)
        seed          training seed (int)
        input_size    [C, H, W] the model is costed at
        base_model    registry name of the model family (str)
        dataset       dataset name (str)
    """,
    optional="""
        weight_bits   None (fp32) | 'infer' (from distinct values) | int | {layer: bits}; default 'infer'
        act_bits      32 | int | {layer: bits}; default 32
        exec_weight   {layer: expected executions per image} or None (every layer once)
        deploy_form   how the model runs when timed, e.g. 'dense-executed', 'slimmed'
        extra_macs    MACs outside the model (a cropper), added to both MAC columns; default 0
        weights       True: load the checkpoint (default); False: cost from the architecture only
        extra         {...} anything else shown with the row
    """,
)


@dataclass
class Candidate:
    """One trained model of one (method, setting, seed); ``accuracy`` is a test fraction in [0, 1].
    ``spec``: the manifest row it was built from (``model``, ``kwargs``, builder keys), for ``deploy.pack``."""

    method: str
    setting: str
    seed: int
    accuracy: float
    model: nn.Module
    input_size: tuple
    base_model: str
    dataset: str
    source: str
    weight_bits: object = "infer"  # "infer", None (fp32), int or {layer: bits}
    act_bits: object = 32  # int or {layer: bits}
    exec_weight: dict | None = None  # {layer: expected executions per image}, default 1
    deploy: nn.Module | None = None  # what runs for the latency (default: model)
    deploy_form: str = "dense-executed"
    extra_macs: float = 0.0  # MACs outside the model (e.g. a cropper), added to both MAC columns
    extra: dict = field(default_factory=dict)
    spec: dict | None = None

    def __post_init__(self):
        if not 0.0 <= float(self.accuracy) <= 1.0:
            raise ValueError(
                f"{self.method}/{self.setting}: accuracy must be a fraction in [0, 1], got {self.accuracy}"
            )


def check_board(board: dict, where: str = "board") -> dict:
    """``board`` if it has every required :data:`BOARD_FIELDS` entry and no unknown one, else a ValueError."""
    if not isinstance(board, dict):
        raise TypeError(f"{where} must be a dict of {sorted(BOARD_FIELDS)}, got {type(board).__name__}")
    missing = [k for k, (req, _) in BOARD_FIELDS.items() if req and k not in board]
    unknown = sorted(set(board) - set(BOARD_FIELDS))
    if missing or unknown:
        raise ValueError(
            f"{where}: missing {missing} / unknown {unknown}; fields: "
            + "; ".join(f"{k}: {d}" for k, (_, d) in BOARD_FIELDS.items())
        )
    check_number(f"{where}.seed", board["seed"], 0, integer=True)
    size = board["input_size"]
    if not (isinstance(size, (list, tuple)) and len(size) == 3):
        raise ValueError(f"{where}.input_size must be [C, H, W], got {size!r}")
    for i, v in enumerate(size):
        check_number(f"{where}.input_size[{i}]", v, 1, integer=True)
    check_number(f"{where}.extra_macs", board.get("extra_macs", 0.0), 0)
    return board


_BUILD_KEYS = ("kind", "static_plan")  # row keys a composite-architecture builder reads besides kwargs


def check_spec(spec) -> dict:
    """{"model", "kwargs", "build"} of ``spec``: a registry name, or a manifest row {"model": name, "kwargs": {...}}
    (for a :data:`BUILDERS` architecture also its ``kind`` / ``static_plan``); other row keys are ignored."""
    if isinstance(spec, str):
        spec = {"model": spec}
    if not isinstance(spec, dict) or not isinstance(spec.get("model"), str):
        raise ValueError(
            f"spec must be a registry model name or a manifest row {{'model': name, 'kwargs': {{...}}}}, got {spec!r}"
        )
    kwargs = spec.get("kwargs") or {}
    if not isinstance(kwargs, dict):
        raise ValueError(f"spec['kwargs'] must be a dict, got {type(kwargs).__name__}")
    build = {k: spec[k] for k in _BUILD_KEYS if spec.get(k) is not None}
    build.update(spec.get("build") or {})
    try:
        kwargs, build = json.loads(json.dumps(kwargs)), json.loads(json.dumps(build))
    except (TypeError, ValueError) as e:
        raise ValueError(f"spec['kwargs'] must be JSON-serialisable (numbers, strings, lists, dicts): {e}") from e
    return {"model": spec["model"], "kwargs": kwargs, "build": build}


# ----------------------------------------------------------------------------- reading the stages' rows
def finished(art, stage: str) -> bool:
    """A stage is read only once it finished (its metrics.json exists). A failed or killed runner stage never
    replaces ``artifacts/<stage>/`` (compresslib.workbook.provenance), so what is here is the last successful run."""
    return (Path(art) / stage / "metrics.json").is_file()


def checkpoint_path(row: dict, stage_dir) -> Path:
    """The row's checkpoint as a path: relative to the stage folder (``..`` reaches the artifacts root)."""
    p = Path(row["checkpoint"])
    return p if p.is_absolute() else Path(stage_dir) / p


def board_rows(art, stages=None) -> list[tuple[str, str, dict]]:
    """(stage, key, row) of every ``board`` row in the ``models.json`` of every finished stage (or ``stages``)."""
    art = Path(art)
    names = stages or sorted(p.name for p in art.iterdir() if p.is_dir() and not p.name.startswith("."))
    out = []
    for stage in names:
        path = art / stage / "models.json"
        if not (finished(art, stage) and path.is_file()):
            continue
        for key, row in json.loads(path.read_text()).items():
            if isinstance(row, dict) and row.get("board") is not None:
                out.append((stage, key, row))
    return out
