"""Rebuilding a manifest row's model: the architecture (registry model or composite builder) + its checkpoint.

:func:`build_model` serves the leaderboard (stage 09, :func:`candidates`) and the packed format
(:mod:`compresslib.deploy`); composite architectures that are not registry models (CAMP's dual-path and
static-plan nets, EdgeCompress's cascade) register a :func:`builder` here.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn as nn

from .manifest import Candidate, board_rows, check_board, check_spec, checkpoint_path

# ----------------------------------------------------------------------------- rebuilding an architecture
#: Architectures that are not registry models, rebuilt from a manifest row: name -> builder(kwargs, build)
BUILDERS = {}


def builder(name: str):
    """Decorator registering a non-registry architecture for :func:`build_model` (name = the row's ``model``)."""

    def deco(fn):
        BUILDERS[name] = fn
        return fn

    return deco


@builder("compresslib.methods.camp.CampResNet")
def _build_camp(kwargs: dict, build: dict) -> nn.Module:
    """Stage 08's manifest row: :func:`compresslib.methods.camp.architecture` (``kind``, ``static_plan``)."""
    from .methods.camp import architecture

    return architecture(kwargs, build)


@builder("cascade")
def _build_cascade(kwargs: dict, build: dict) -> nn.Module:
    """A two-model cascade as one module (``methods.cascade.CascadeCost``): ``kwargs`` = {"small": spec,
    "large": spec, "small_resolution": r}; the small model sees an r x r resize of the input (``Resized``)."""
    from .methods.cascade import CascadeCost, Resized

    missing = [k for k in ("small", "large", "small_resolution") if k not in kwargs]
    if missing:
        raise ValueError(f"cascade kwargs miss {missing}: {{'small': spec, 'large': spec, 'small_resolution': r}}")
    small = Resized(build_model(kwargs["small"]), int(kwargs["small_resolution"]))
    return CascadeCost(small, build_model(kwargs["large"]))


def _tuples(kw: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in kw.items()}


def build_model(spec) -> nn.Module:
    """The architecture of ``spec`` (a row or :func:`check_spec` output): a :data:`BUILDERS` entry or
    ``create_model(name, **kwargs)`` (JSON lists become tuples), initialised under a forked RNG seeded 0 (the
    same initial values, so the same exact zeros for the counters, in every run; the caller's random stream is
    untouched), in eval mode."""
    from .models import create_model

    spec = check_spec(spec)
    name, kw = spec["model"], spec["kwargs"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if name in BUILDERS:
            return BUILDERS[name](kw, spec["build"]).eval()
        return create_model(name, **_tuples(kw)).eval()


def load_row_model(row: dict, stage_dir) -> nn.Module:
    """:func:`build_model` + the row's checkpoint (``state["model"]``), strict; eval mode."""
    from .train import load_checkpoint, load_weights

    net = build_model(row)
    ck = checkpoint_path(row, stage_dir)
    if not ck.is_file():
        raise FileNotFoundError(f"{ck}: checkpoint of manifest row {row.get('board', {}).get('setting', '')!r} missing")
    return load_weights(net, load_checkpoint(ck), source=ck).eval()


def candidate(stage_dir, row: dict) -> Candidate:
    """The leaderboard :class:`Candidate` of one board row (weights loaded unless ``board.weights`` is False)."""
    b = check_board(row["board"], f"{Path(stage_dir).name}: board")
    if row.get("split") != "test":
        raise ValueError(f"{Path(stage_dir).name}/{b['setting']}: a board row's accuracy must be on 'test'")
    net = load_row_model(row, stage_dir) if b.get("weights", True) else build_model(row)
    acc = row["accuracy"]
    if acc is None or (isinstance(acc, float) and math.isnan(acc)):
        raise ValueError(f"{Path(stage_dir).name}/{b['setting']}: a board row needs its test accuracy")
    return Candidate(
        b["method"],
        b["setting"],
        int(b["seed"]),
        float(acc),
        net,
        tuple(int(v) for v in b["input_size"]),
        b["base_model"],
        b["dataset"],
        Path(stage_dir).name,
        weight_bits=b.get("weight_bits", "infer"),
        act_bits=b.get("act_bits", 32),
        exec_weight=b.get("exec_weight"),
        deploy_form=b.get("deploy_form", "dense-executed"),
        extra_macs=float(b.get("extra_macs", 0.0)),
        extra=dict(b.get("extra") or {}),
        spec=check_spec(row),
    )


def candidates(art, stages=None) -> tuple[list[Candidate], dict]:
    """Every board row of every finished stage as a :class:`Candidate`; second value: {stage: count or error}
    (one stage's unreadable row must not hide the others)."""
    cands, report = [], {}
    for stage, key, row in board_rows(art, stages):
        try:
            cands.append(candidate(Path(art) / stage, row))
            report[stage] = report.get(stage, 0) + 1 if isinstance(report.get(stage, 0), int) else report[stage]
        except Exception as e:
            report[stage] = f"{key}: {type(e).__name__}: {e}"
    return cands, report
