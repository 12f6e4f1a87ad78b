"""Clear, early errors for bad parameter values.

Every check names the parameter and its accepted range, and runs before any work (data loading,
training), so a typo'd or out-of-range knob fails in milliseconds instead of deep inside torch.
"""

from __future__ import annotations

import math
import numbers
import os

INF = math.inf


def interval(lo: float = -INF, hi: float = INF, lo_open: bool = False, hi_open: bool = False) -> str:
    """``[lo, hi]`` / ``(lo, hi)`` notation of an accepted range (``inf`` for an open end)."""

    def f(v):
        return "inf" if v == INF else "-inf" if v == -INF else f"{v:g}" if isinstance(v, float) else str(v)

    return f"{'(' if lo_open or lo == -INF else '['}{f(lo)}, {f(hi)}{')' if hi_open or hi == INF else ']'}"


def check_number(
    name: str,
    value,
    lo: float = -INF,
    hi: float = INF,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
    integer: bool = False,
    none_ok: bool = False,
    inf_ok: bool = False,
):
    """``value`` if it is a finite number in the range, else a TypeError / ValueError naming ``name``.

    ``integer=True`` accepts ints (and integral floats such as ``3.0``, returned as ``int``);
    booleans and strings are never numbers here. NaN is always rejected, infinities unless
    ``inf_ok`` (and the range contains them). ``none_ok``: ``None`` passes through.
    """
    if value is None and none_ok:
        return None
    kind = "an integer" if integer else "a number"
    rng = interval(lo, hi, lo_open, hi_open)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be {kind} in {rng}, got {value!r} ({type(value).__name__})")
    v = float(value)
    if math.isnan(v):
        raise ValueError(f"{name} must be {kind} in {rng}, got nan")
    if integer:
        if not math.isfinite(v) or v != int(v):
            raise ValueError(f"{name} must be {kind} in {rng}, got {value!r}")
        value = int(v)
    elif math.isinf(v) and not inf_ok:
        raise ValueError(f"{name} must be a finite number in {rng}, got {value!r}")
    below = v < lo or (lo_open and v == lo and math.isfinite(v))
    above = v > hi or (hi_open and v == hi and math.isfinite(v))
    if below or above:
        raise ValueError(f"{name} must be {kind} in {rng}, got {value!r}")
    return value


def env_int(var: str, default: int, lo: int = 1) -> int:
    """Integer environment variable ``var`` (``default`` when unset or empty), clear error otherwise."""
    raw = os.environ.get(var, "")
    if raw.strip() == "":
        return default
    try:
        n = int(raw.strip())
    except ValueError:
        n = None
    if n is None or n < lo:
        what = "a positive integer" if lo == 1 else f"an integer >= {lo}"
        raise ValueError(f"{var} must be {what}, got {raw!r}")
    return n
