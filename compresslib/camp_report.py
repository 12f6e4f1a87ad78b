"""Stage 08's tables and verdicts from ``camp.run``'s rows: the mean ± std table, the CAMP claim test, the
gates' ρ per block, and the static-plan control (every CAMP RL run against the static per-block plan at its
energy).

``camp.run`` writes one row per trained model (``model`` = ``"rl"``, ``"static_plan"``, ...; ``seed``,
``alpha``, ``accuracy`` in %, ``energy_rel_w4a4``...). A ``static_plan`` row carries the α of the RL run
whose validation energy bounded its plan, so the two are paired on (seed, α); the difference
Δ = acc_RL − acc_static says whether the per-sample gate buys accuracy at equal energy and training.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import tables

TABLE_COLUMNS = [
    "accuracy",
    "energy_rel_w4a4",
    "energy_rel_w4a4_no_gates",
    "bitops_rel_w4a4",
    "fraction_4bit",
    "fraction_4bit_correct",
    "fraction_4bit_wrong",
    "corr_ce_n4bit",
    "per_sample_decision_fraction",
    "minority_decision_fraction",
    "train_seconds_per_epoch",
]
MODEL_ORDER = {"fp32": 0, "w4a4": 1, "w4a4_equal": 2, "w1a1": 3, "sp": 4, "rl": 5, "static_plan": 6, "rl_repo_bug": 7}
GATED_MODELS = ["sp", "rl", "rl_repo_bug"]
DECISION_COLUMNS = ["per_sample_decision_fraction", "minority_decision_fraction"]
RL_COLUMNS = ["accuracy", "energy_rel_w4a4", "energy_rel_w4a4_val", "per_sample_decision_fraction"]
STATIC_COLUMNS = ["accuracy", "energy_rel_w4a4", "static_plan", "selection_val_accuracy"]


def static_vs_dynamic(points: pd.DataFrame) -> pd.DataFrame:
    """Pair each RL run with the static-plan run of the same (seed, α): index (seed, alpha), the RL run's
    ``RL_COLUMNS``, the static run's ``STATIC_COLUMNS`` (the shared names with the suffix ``_static``) and
    ``rl_minus_static`` = Δ, in accuracy points. RL runs without a static row (their energy admits the
    all-4-bit plan) are left out, so the table is empty when no run has one (the static-only columns are
    then absent from ``points``)."""
    need = {"model", "seed", "alpha", "accuracy", "energy_rel_w4a4"}
    if not need <= set(points.columns):
        raise ValueError(f"points: needs the columns {sorted(need - set(points.columns))} of camp.run's rows")
    rl = points[points.model == "rl"].set_index(["seed", "alpha"]).reindex(columns=RL_COLUMNS)
    static = points[points.model == "static_plan"].set_index(["seed", "alpha"]).reindex(columns=STATIC_COLUMNS)
    pair = rl.join(static, suffixes=("", "_static"), how="inner")
    pair["rl_minus_static"] = pair.accuracy - pair.accuracy_static
    return pair


def static_vs_dynamic_summary(pair: pd.DataFrame) -> pd.DataFrame:
    """Per α over seeds (index ``alpha``): mean and sample std (0 for one seed) of the RL and static
    accuracies (``rl_accuracy``, ``rl_std``, ``static_accuracy``, ``static_std``) and of Δ
    (``rl_minus_static``, ``diff_std``), mean energies (``rl_energy``, ``static_energy``), the seeds with
    Δ > 0 (``rl_wins``), ``n_seeds`` and the chosen plans joined by "/" (``plans``)."""
    return tables.seed_summary(
        pair.reset_index(),
        "alpha",
        [
            ("rl_accuracy", "accuracy"),
            ("rl_std", "accuracy", "std"),
            ("rl_energy", "energy_rel_w4a4"),
            ("static_accuracy", "accuracy_static"),
            ("static_std", "accuracy_static", "std"),
            ("static_energy", "energy_rel_w4a4_static"),
            "rl_minus_static",
            ("diff_std", "rl_minus_static", "std"),
            ("rl_wins", "rl_minus_static", lambda d: int((d > 0).sum())),
            ("n_seeds", "rl_minus_static", "size"),
            ("plans", "static_plan", lambda p: "/".join(p)),
        ],
        fill_std=0.0,
    ).set_index("alpha")


def camp_table(points: pd.DataFrame) -> pd.DataFrame:
    """``camp_table.csv``: one row per (model, α) of ``points`` (``camp.run``'s rows with an ``alpha_key`` column,
    α or −1 for the baselines), the mean over seeds of ``TABLE_COLUMNS``, ``accuracy_std`` (sample std, 0 for
    one seed) and ``n_seeds``; rows in ``MODEL_ORDER`` then by α, ``alpha`` NaN for the baselines."""
    table = tables.seed_summary(
        points, ["model", "alpha_key"], [*TABLE_COLUMNS, "accuracy_std"], n="n_seeds", sort=False, fill_std=0.0
    )
    table = table.sort_values(["model", "alpha_key"], key=lambda s: s.map(MODEL_ORDER) if s.name == "model" else s)
    table["alpha"] = table.alpha_key.where(table.alpha_key >= 0)
    return table.drop(columns="alpha_key").reset_index(drop=True)


def claim_points(camp_pts: pd.DataFrame, ref: float, points: float = 1, max_energy: float | None = 0.8) -> pd.DataFrame:
    """CAMP's claim test: the rows of ``camp_pts`` with accuracy ≥ ``ref`` − ``points`` (accuracy in %, so
    within ``points`` points of the reference W4A4 accuracy) and energy_rel_w4a4 ≤ ``max_energy`` (None: any
    energy)."""
    ok = camp_pts.accuracy >= ref - points
    if max_energy is not None:
        ok &= camp_pts.energy_rel_w4a4 <= max_energy
    return camp_pts[ok]


def non_increasing(values, tol: float = 1e-9) -> bool:
    """True when every step of ``values`` (in order, e.g. ρ or energy over increasing α) is ≤ ``tol``."""
    return bool(np.all(np.diff(values) <= tol))


def gated_runs(points: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The gated runs of ``points`` (``GATED_MODELS``; needs ``alpha_key``) with a ``label`` column ("SP",
    "RL α=2", "RL-bug α=2"), and the labels in (model, α) order, each once."""
    dyn = points[points.model.isin(GATED_MODELS)].copy()
    dyn["label"] = dyn.apply(
        lambda r: "SP" if r.model == "sp" else f"{'RL-bug' if r.model == 'rl_repo_bug' else 'RL'} α={r.alpha:g}",
        axis=1,
    )
    return dyn, list(dict.fromkeys(dyn.sort_values(["model", "alpha_key"]).label))


def rho_heat(dyn: pd.DataFrame, labels: list[str]) -> np.ndarray:
    """(label, block) matrix of ρ_b, the 4-bit fraction per block, averaged over the seeds of each label."""
    return np.array(
        [np.mean(np.stack(dyn[dyn.label == lab].rho_per_block.map(np.asarray).tolist()), 0) for lab in labels]
    )


def rho_by_block_kind(points: pd.DataFrame, downsampling: list[int]) -> pd.DataFrame:
    """The RL runs (faithful and repo-broadcasting) of ``points`` with ``rho_downsampling_blocks`` (mean ρ_b
    over the blocks in ``downsampling``) and ``rho_other_blocks`` (mean over the others)."""
    rl_rows = points[points.model.isin(["rl", "rl_repo_bug"])].copy()
    rl_rows["rho_downsampling_blocks"] = rl_rows.rho_per_block.map(
        lambda r: float(np.mean([r[i] for i in downsampling]))
    )
    rl_rows["rho_other_blocks"] = rl_rows.rho_per_block.map(
        lambda r: float(np.mean([v for i, v in enumerate(r) if i not in downsampling]))
    )
    return rl_rows


def gating_verdict(r) -> tuple[str, str]:
    """Verdict of one row of :func:`static_vs_dynamic_summary`: which side Δ = ``rl_minus_static`` favours,
    and, with more than one seed, whether |Δ| is within its seed-to-seed std ``diff_std`` ("" if not)."""
    verdict = (
        "per-sample gating is better"
        if r.rl_minus_static > 0
        else "the static plan is better"
        if r.rl_minus_static < 0
        else "no difference"
    )
    spread = (
        "; within the seed-to-seed spread of the difference"
        if r.n_seeds > 1 and abs(r.rl_minus_static) <= r.diff_std
        else ""
    )
    return verdict, spread


def results_rows(main: pd.DataFrame) -> list[dict]:
    """``metrics.json["results"]``: the rows of ``main`` as dicts, ``model`` kept, ``alpha`` None where NaN,
    every other value a float."""
    return [
        {k: (None if (k == "alpha" and pd.isna(r[k])) else (r[k] if k == "model" else float(r[k]))) for k in main}
        for _, r in main.iterrows()
    ]


def static_plan_rows(sv: pd.DataFrame) -> list[dict]:
    """``metrics.json["static_plan"]``: one dict per α of :func:`static_vs_dynamic_summary` (plans as a list)."""
    return [
        {
            "alpha": float(a),
            "selection_split": "val",
            "accuracy": float(r.static_accuracy),
            "accuracy_std": float(r.static_std),
            "energy_rel_w4a4": float(r.static_energy),
            "rl_accuracy": float(r.rl_accuracy),
            "rl_energy_rel_w4a4": float(r.rl_energy),
            "rl_minus_static": float(r.rl_minus_static),
            "rl_minus_static_std": float(r.diff_std),
            "plans": r.plans.split("/"),
            "n_seeds": int(r.n_seeds),
        }
        for a, r in sv.iterrows()
    ]


def decision_fractions_by_model(dyn: pd.DataFrame) -> list[dict]:
    """``metrics.json["per_sample_decision_fraction_by_model"]``: per (model, α) of the gated runs ``dyn``,
    in order of first appearance, the mean over seeds of ``DECISION_COLUMNS`` (α None for SP)."""
    by_model = dyn.groupby(["model", "alpha_key"], sort=False)[DECISION_COLUMNS].mean().reset_index()
    return [
        {
            "model": r.model,
            "alpha": None if r.alpha_key < 0 else float(r.alpha_key),
            "per_sample_decision_fraction": float(r.per_sample_decision_fraction),
            "minority_decision_fraction": float(r.minority_decision_fraction),
        }
        for r in by_model.itertuples()
    ]
