"""EdgeCompress dynamic inference: a confidence-gated cascade of shrunk models sharing one crop.

Kong et al., TCAD 2023 (repo ``core/dynamic.py``, ``DynamicInfer``). Stage k runs only on the
images still undecided; the gate uses the stage's *own* softmax p (not the accumulated logits):

    score   s_k = p_(1) - p_(2)            (margin; options: max-prob p_(1), 1 - H(p)/log C)
    escalate iff lo < s_k < hi             (hi = 1 is closed: s <= 1 always, so hi = 1 sends every
                                            image with s > lo on -- the paper's "hi > 1" endpoint)
    logits  z = z_1 + a * z_2 (+ a * z_3 ...)   ("sum", a = ALPHA = 1.6)  or  z = z_k  ("replace")
    E[MACs] = MACs_crop + sum_k (n_k / N) * MACs_k  = crop + small + rho * large   (two stages)

Escalation depends only on per-stage outputs, so ``sweep`` replays any threshold from cached
per-stage logits (one forward pass per stage for a whole curve); ``oracle`` escalates exactly the
images whose current prediction is wrong (an upper bound for any confidence gate).
``choose_threshold`` / ``select_cascade`` pick the operating point and the small model from
*validation* sweeps (cheapest point within a tolerance of the large model's accuracy), so the test
split is only evaluated at a point chosen without it.

The method built on it (``Config`` + ``run``, stage 07) is :mod:`compresslib.methods.edgecompress`.
``CascadeCost(Resized(small, r), large)`` is a cascade as one module, the manifest row ``"cascade"`` that
``compresslib.rebuild`` rebuilds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..checks import check_number

SCORES = ("margin", "maxprob", "entropy")
ACCUMULATE = ("sum", "replace")


def check_thresholds(lo: float, hi: float) -> None:
    """Thresholds live in [0, 1] with lo < hi; hi = 0 (= lo) is the admissible 'never escalate' point."""
    for name, v in (("lo", lo), ("hi", hi)):
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0.0 <= float(v) <= 1.0:
            raise ValueError(f"threshold {name} must be a number in [0, 1], got {v!r}")
    if lo >= hi and not (hi == 0.0 and lo == 0.0):
        raise ValueError(f"need lo < hi (only lo = hi = 0 means 'small model only'), got lo={lo}, hi={hi}")


def _check_options(score: str, accumulate: str, alpha: float) -> None:
    if score not in SCORES:
        raise ValueError(f"unknown score {score!r}; valid: {', '.join(SCORES)}")
    if accumulate not in ACCUMULATE:
        raise ValueError(f"unknown accumulation rule {accumulate!r}; valid: {', '.join(ACCUMULATE)}")
    if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"accumulation weight alpha must be a positive number, got {alpha!r}")


def confidence(logits, score: str = "margin") -> torch.Tensor:
    """Per-image confidence in [0, 1] from one stage's logits (float64 to delay softmax saturation)."""
    _check_options(score, "sum", 1.0)
    z = torch.as_tensor(logits).to(torch.float64)
    if z.ndim != 2 or z.shape[1] < 2:
        raise ValueError(f"logits must be (N, C) with C >= 2, got shape {tuple(z.shape)}")
    p = F.softmax(z, dim=1)
    if score == "margin":
        top = p.topk(2, dim=1).values
        return top[:, 0] - top[:, 1]
    if score == "maxprob":
        return p.max(dim=1).values
    h = -(p * torch.log(p.clamp_min(1e-300))).sum(1)
    return (1.0 - h / math.log(z.shape[1])).clamp(0.0, 1.0)


def escalate(logits, lo: float, hi: float, score: str = "margin") -> torch.Tensor:
    """Boolean mask of images sent to the next stage: lo < s < hi (closed at hi = 1)."""
    check_thresholds(lo, hi)
    s = confidence(logits, score)
    upper = torch.ones_like(s, dtype=torch.bool) if hi >= 1.0 else s < hi
    return (s > lo) & upper


def _accumulate(acc: torch.Tensor, z: torch.Tensor, alpha: float, rule: str) -> torch.Tensor:
    return acc + alpha * z if rule == "sum" else z


def _stage_input(x: torch.Tensor, boxes, res: int) -> torch.Tensor:
    from .crop import crop_resize

    if boxes is None:
        if x.shape[-1] == res and x.shape[-2] == res:
            return x
        return F.interpolate(x, size=(res, res), mode="bilinear", align_corners=False, antialias=True)
    return crop_resize(x, boxes, res)


@torch.no_grad()
def model_logits(model, x: torch.Tensor, boxes=None, res: int | None = None, batch_size: int = 500) -> torch.Tensor:
    """float64 logits of ``model`` on ``x`` cropped to ``boxes`` (optional) and resized to ``res``."""
    res = int(res if res is not None else x.shape[-1])
    was = model.training
    model.eval()
    p = next(model.parameters(), None)
    dev = p.device if p is not None else torch.device("cpu")
    outs = []
    for i in range(0, len(x), batch_size):
        b = None if boxes is None else boxes[i : i + batch_size]
        outs.append(model(_stage_input(x[i : i + batch_size], b, res).to(dev)).double().cpu())
    model.train(was)
    return torch.cat(outs)


@dataclass
class CascadeResult:
    logits: torch.Tensor  # (N, C) accumulated logits
    predictions: torch.Tensor  # (N,)
    stage_counts: list  # images that ran stage k
    exit_stage: torch.Tensor  # (N,) index of the last stage each image ran
    total_macs: int  # sum over images of the MACs of the stages it ran (no cropper)
    avg_macs: float  # crop_macs + total_macs / N
    accuracy: float | None = None
    escalated: float = field(init=False)

    def __post_init__(self):
        n = len(self.predictions)
        self.escalated = (self.stage_counts[1] / n) if len(self.stage_counts) > 1 and n else 0.0


class Cascade:
    """Small -> large cascade of classifiers, each at its own input resolution.

    ``macs_per_stage`` defaults to ``compresslib.cost.total_macs(model, (C, r, r))``;
    ``crop_macs`` (the foreground predictor) is paid once by every image.
    """

    def __init__(
        self,
        models,
        resolutions,
        lo: float = 0.0,
        hi: float = 0.2,
        alpha: float = 1.6,
        score: str = "margin",
        accumulate: str = "sum",
        crop_macs: int = 0,
        macs_per_stage=None,
        in_channels: int = 1,
        batch_size: int = 500,
    ):
        models, resolutions = list(models), [int(r) for r in resolutions]
        if not models:
            raise ValueError("a cascade needs at least one model; got an empty model list")
        if len(resolutions) != len(models):
            raise ValueError(f"one resolution per model: {len(models)} models, {len(resolutions)} resolutions")
        check_thresholds(lo, hi)
        _check_options(score, accumulate, alpha)
        check_macs([], crop_macs)
        classes = []
        for m, r in zip(models, resolutions):
            was = m.training
            m.eval()
            with torch.no_grad():
                p = next(m.parameters(), None)
                dev = p.device if p is not None else torch.device("cpu")
                classes.append(int(m(torch.zeros(1, in_channels, r, r, device=dev)).shape[1]))
            m.train(was)
        if len(set(classes)) != 1:
            raise ValueError(f"cascade models disagree on the number of classes: {classes}")
        if macs_per_stage is None:
            from ..cost import total_macs

            macs_per_stage = [int(total_macs(m, (in_channels, r, r))) for m, r in zip(models, resolutions)]
        if len(macs_per_stage) != len(models):
            raise ValueError("macs_per_stage needs one entry per model")
        check_macs(macs_per_stage, crop_macs)
        self.models, self.resolutions = models, resolutions
        self.lo, self.hi, self.alpha, self.score, self.accumulate = lo, hi, float(alpha), score, accumulate
        self.crop_macs, self.macs_per_stage = int(crop_macs), [int(m) for m in macs_per_stage]
        self.num_classes, self.batch_size = classes[0], int(batch_size)

    def closed_form_macs(self, rho: float) -> float:
        """Two-stage closed form crop + small + rho * large."""
        return self.crop_macs + self.macs_per_stage[0] + rho * sum(self.macs_per_stage[1:2])

    def stage_logits(self, k: int, x: torch.Tensor, boxes=None) -> torch.Tensor:
        """Stage k's logits on every image (the cache that ``sweep`` replays)."""
        if len(x) == 0:
            return torch.zeros(0, self.num_classes, dtype=torch.float64)
        return model_logits(self.models[k], x, boxes, self.resolutions[k], self.batch_size)

    @torch.no_grad()
    def run(self, x: torch.Tensor, boxes=None, targets=None) -> CascadeResult:
        """Per-image cascade on canvases ``x`` (N, C, H, W) with optional crop ``boxes`` (N, 4)."""
        n = len(x)
        if n == 0:
            raise ValueError("cannot run a cascade on an empty batch")
        boxes = None if boxes is None else torch.as_tensor(boxes)
        active = torch.arange(n)
        logits = torch.zeros(n, self.num_classes, dtype=torch.float64)
        exit_stage = torch.zeros(n, dtype=torch.long)
        counts = [0] * len(self.models)
        for k in range(len(self.models)):
            z = self.stage_logits(k, x[active], None if boxes is None else boxes[active])
            counts[k] = len(active)
            exit_stage[active] = k
            logits[active] = z if k == 0 else _accumulate(logits[active], z, self.alpha, self.accumulate)
            if k == len(self.models) - 1:
                break
            active = active[escalate(z, self.lo, self.hi, self.score)]
            if len(active) == 0:
                break
        total = sum(c * m for c, m in zip(counts, self.macs_per_stage))
        pred = logits.argmax(1)
        acc = None if targets is None else float((pred == torch.as_tensor(targets)).double().mean())
        return CascadeResult(logits, pred, counts, exit_stage, int(total), self.crop_macs + total / n, acc)


def check_macs(macs_per_stage, crop_macs=0) -> list[int]:
    """MAC counts as ints: each stage's and ``crop_macs`` finite numbers >= 0 (negative MACs gave
    ``avg_macs=-3``); clear error naming the entry otherwise."""
    check_number("crop_macs", crop_macs.item() if hasattr(crop_macs, "item") else crop_macs, 0)
    for k, m in enumerate(macs_per_stage):
        check_number(f"macs_per_stage[{k}] (MACs)", m.item() if hasattr(m, "item") else m, 0)
    return [int(m) for m in macs_per_stage]


def _check_cache(logits_per_stage, macs_per_stage, targets):
    zs = [torch.as_tensor(z).to(torch.float64) for z in logits_per_stage]
    if not zs:
        raise ValueError("need cached logits of at least one stage; got an empty list")
    if len(macs_per_stage) != len(zs):
        raise ValueError(f"one MAC count per stage: {len(zs)} stages, {len(macs_per_stage)} MAC counts")
    shapes = {tuple(z.shape) for z in zs}
    if len(shapes) != 1 or zs[0].ndim != 2:
        raise ValueError(f"cached logits must all be (N, C) of one shape (same images, same classes), got {shapes}")
    y = torch.as_tensor(targets).long()
    if y.shape != (zs[0].shape[0],):
        raise ValueError(f"targets must be ({zs[0].shape[0]},), got {tuple(y.shape)}")
    return zs, check_macs(macs_per_stage), y


def simulate(zs, macs, y, gate, alpha=1.6, accumulate="sum", crop_macs=0) -> dict:
    """Replay a cascade from cached logits; ``gate(k, z_k, acc_k, active_mask) -> bool mask``."""
    n = len(y)
    active = torch.ones(n, dtype=torch.bool)
    acc = zs[0].clone()
    counts = [n] + [0] * (len(zs) - 1)
    for k in range(1, len(zs)):
        active = active & gate(k - 1, zs[k - 1], acc)
        counts[k] = int(active.sum())
        acc[active] = _accumulate(acc[active], zs[k][active], alpha, accumulate)
    total = sum(c * m for c, m in zip(counts, macs))
    return {
        "accuracy": float((acc.argmax(1) == y).double().mean()),
        "avg_macs": crop_macs + total / n,
        "total_macs": int(total),
        "escalated": counts[1] / n if len(zs) > 1 else 0.0,
        **{f"images_stage{k}": c for k, c in enumerate(counts)},
    }


def sweep(
    logits_per_stage,
    macs_per_stage,
    thresholds,
    targets,
    lo: float = 0.0,
    alpha: float = 1.6,
    score: str = "margin",
    accumulate: str = "sum",
    crop_macs: int = 0,
):
    """Accuracy / average MACs / fraction escalated for every ``hi`` in ``thresholds`` (lo fixed),
    from cached per-stage logits on the same images. Returns a DataFrame sorted as given."""
    import pandas as pd

    _check_options(score, accumulate, alpha)
    zs, macs, y = _check_cache(logits_per_stage, macs_per_stage, targets)
    check_macs([], crop_macs)
    thresholds = [float(t) for t in np.atleast_1d(np.asarray(thresholds, dtype=float))]
    if not thresholds:
        raise ValueError("need at least one threshold")
    for t in thresholds:
        check_thresholds(lo, t)
    scores = [confidence(z, score) for z in zs[:-1]]
    rows = []
    for hi in thresholds:

        def gate(k, z, acc, hi=hi):
            upper = torch.ones_like(scores[k], dtype=torch.bool) if hi >= 1.0 else scores[k] < hi
            return (scores[k] > lo) & upper

        rows.append({"threshold": hi, **simulate(zs, macs, y, gate, alpha, accumulate, crop_macs)})
    return pd.DataFrame(rows)


def oracle(
    logits_per_stage, macs_per_stage, targets, alpha: float = 1.6, accumulate: str = "sum", crop_macs: int = 0
) -> dict:
    """Oracle gate: escalate iff the current (accumulated) prediction is wrong."""
    _check_options("margin", accumulate, alpha)
    zs, macs, y = _check_cache(logits_per_stage, macs_per_stage, targets)
    check_macs([], crop_macs)
    return simulate(zs, macs, y, lambda k, z, acc: acc.argmax(1) != y, alpha, accumulate, crop_macs)


def cheapest_at_accuracy(table, target: float, tol: float = 0.005):
    """Row of ``table`` (columns accuracy, avg_macs) with the fewest MACs and accuracy >= target - tol,
    or None if no threshold reaches it."""
    ok = table[table["accuracy"] >= target - tol - 1e-12]
    if ok.empty:
        return None
    return ok.sort_values(["avg_macs", "threshold"]).iloc[0]


def choose_threshold(table, target: float, tol: float = 0.005) -> tuple[dict, bool]:
    """Operating point chosen on a *validation* sweep: the cheapest threshold whose accuracy is within
    ``tol`` of ``target`` (the large model's validation accuracy); if none gets there, the most
    accurate threshold (ties -> fewest MACs). Returns (row as dict, reached)."""
    if table is None or len(table) == 0:
        raise ValueError("choose_threshold needs a non-empty sweep table")
    if not (math.isfinite(float(target)) and math.isfinite(float(tol)) and tol >= 0):
        raise ValueError(f"target must be finite and tol >= 0, got target={target!r}, tol={tol!r}")
    best = cheapest_at_accuracy(table, target, tol)
    if best is not None:
        return {k: float(v) for k, v in best.items()}, True
    top = table[table["accuracy"] >= table["accuracy"].max() - 1e-12]
    return {k: float(v) for k, v in top.sort_values(["avg_macs", "threshold"]).iloc[0].items()}, False


def select_cascade(val_tables: dict, target: float, tol: float = 0.005) -> tuple[str, dict, bool]:
    """Pick the cascade's first stage among candidates from their *validation* sweeps (same large
    model): among candidates whose chosen point reaches ``target`` within ``tol``, the one with the
    fewest average MACs; if none reaches it, the most accurate chosen point (ties -> fewer MACs).
    Returns (candidate name, its chosen row, reached)."""
    if not val_tables:
        raise ValueError("select_cascade needs at least one candidate sweep")
    picks = {name: choose_threshold(t, target, tol) for name, t in val_tables.items()}
    reached = [n for n, (_, ok) in picks.items() if ok]
    if reached:
        name = min(reached, key=lambda n: (picks[n][0]["avg_macs"], list(val_tables).index(n)))
    else:
        name = min(picks, key=lambda n: (-picks[n][0]["accuracy"], picks[n][0]["avg_macs"], list(val_tables).index(n)))
    return name, picks[name][0], picks[name][1]


# ----------------------------------------------------------------------------- the cascade as one module
class Resized(nn.Module):
    """``model`` fed an ``r``x``r`` bilinear resize of the input (EdgeCompress's resolution axis)."""

    def __init__(self, model: nn.Module, r: int):
        super().__init__()
        self.model, self.r = model, int(r)

    def forward(self, x):
        # unconditional (fx-traceable for the MicroNet counter); at the same size it is the identity
        return self.model(F.interpolate(x, size=(self.r, self.r), mode="bilinear", align_corners=False))


class CascadeCost(nn.Module):
    """Two-stage cascade as one module for cost counting and timing: the small model then the large one
    (give the large model's layers ``exec_weight`` = the escalation rate)."""

    def __init__(self, small: nn.Module, large: nn.Module):
        super().__init__()
        self.small, self.large = small, large

    def forward(self, x):
        return self.small(x) + self.large(x)
