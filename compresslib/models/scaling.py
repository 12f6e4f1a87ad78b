"""Channel / resolution rounding shared by the scaled model families (EfficientNet's ``round_filters``,
pycls's ``make_divisible``: the same rule)."""

from __future__ import annotations


def make_divisible(v: float, divisor: int = 4) -> int:
    """Round ``v`` to the nearest multiple of ``divisor`` (at least ``divisor``); bump by one ``divisor``
    if rounding lost more than 10 % (the EfficientNet/pycls rule: MicroNet's channels, EdgeCompress's
    resolutions and width_per_group)."""
    if divisor < 1:
        raise ValueError(f"divisor must be >= 1, got {divisor}")
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new < 0.9 * v:
        new += divisor
    return int(new)
