"""Stage 08's static-plan control as tables: every CAMP RL run against the static per-block plan at its energy.

``camp.run`` writes one row per trained model (``model`` = ``"rl"``, ``"static_plan"``, ...; ``seed``,
``alpha``, ``accuracy`` in %, ``energy_rel_w4a4``...). A ``static_plan`` row carries the α of the RL run
whose validation energy bounded its plan, so the two are paired on (seed, α); the difference
Δ = acc_RL − acc_static says whether the per-sample gate buys accuracy at equal energy and training.
"""

from __future__ import annotations

import pandas as pd

from . import tables

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
