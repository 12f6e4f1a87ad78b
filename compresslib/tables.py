"""Summary tables over seeds: one row per setting with the mean, the sample std and the number of seeds.

Every stage that repeats a run over seeds reports, per setting (budget and method, γ, α, ...), the mean
x̄ = (1/n) Σ_k x_k and the sample standard deviation s = sqrt(Σ_k (x_k − x̄)² / (n − 1)) (ddof 1, NaN
for n = 1 unless ``fill_std`` says otherwise) of each metric. ``seed_summary`` builds that table from the
per-seed rows with the column names the stages write (``accuracy``, ``accuracy_std``, ``n_seeds``...).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

STD_SUFFIX = "_std"


def _spec(df: pd.DataFrame, entry) -> tuple[str, tuple]:
    """One output column: ``(name, (column, how))`` for pandas' named aggregation."""
    if isinstance(entry, str):
        if entry in df.columns:
            return entry, (entry, "mean")
        stem = entry[: -len(STD_SUFFIX)] if entry.endswith(STD_SUFFIX) else None
        if stem in df.columns:
            return entry, (stem, "std")
        raise ValueError(
            f"columns: {entry!r} is neither a column of the table nor '<column>{STD_SUFFIX}' of one; "
            f"columns are {list(df.columns)}"
        )
    if isinstance(entry, tuple) and len(entry) in (2, 3) and isinstance(entry[0], str):
        name, column, how = (*entry, "mean") if len(entry) == 2 else entry
        if column not in df.columns:
            raise ValueError(f"columns: {entry!r} reads {column!r}, not a column of the table {list(df.columns)}")
        return name, (column, how)
    raise ValueError(
        f"columns: entries are 'x' (mean), 'x{STD_SUFFIX}' (sample std of x), (name, column) or "
        f"(name, column, how); got {entry!r}"
    )


def seed_summary(
    df: pd.DataFrame,
    by: str | Sequence[str],
    columns: Sequence,
    *,
    n: str | None = None,
    sort: bool = True,
    fill_std: float | None = None,
) -> pd.DataFrame:
    """Aggregate per-seed rows into one row per group of ``by``: mean, sample std and seed count.

    ``columns`` lists the output columns in order. Each entry is

    * ``"x"``: the mean of column ``x`` over the group's rows (seeds);
    * ``"x_std"``: the sample std (ddof 1) of column ``x`` (when ``x_std`` is not itself a column);
    * ``(name, column)``: the mean of ``column``, written as ``name``;
    * ``(name, column, how)``: any pandas aggregation of ``column`` (``"max"``, ``"all"``, ``"std"``,
      ``"size"``, a callable), written as ``name``.

    ``n`` appends the number of rows of each group under that name. ``sort`` orders the groups by their
    keys (``False``: in order of first appearance). ``fill_std`` replaces the NaN std of a group of one
    row in every std column (``"x_std"`` entries and ``how="std"``). Returns a flat table: the ``by``
    columns, then ``columns``, then ``n``.
    """
    keys = [by] if isinstance(by, str) else list(by)
    missing = [k for k in keys if k not in df.columns]
    if not keys or missing:
        raise ValueError(f"by: needs one or more columns of the table {list(df.columns)}, got {by!r}")
    if not columns:
        raise ValueError("columns: needs at least one output column")
    spec = dict(_spec(df, e) for e in columns)
    if len(spec) != len(columns):
        raise ValueError(f"columns: output names repeat in {list(columns)}")
    g = df.groupby(keys, sort=sort)
    table = g.agg(**spec)
    if n is not None:
        table[n] = g.size()
    if fill_std is not None:
        std = [name for name, (_, how) in spec.items() if isinstance(how, str) and how == "std"]
        table[std] = table[std].fillna(fill_std)
    return table.reset_index()
