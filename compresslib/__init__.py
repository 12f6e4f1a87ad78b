"""compresslib — shared core of a reproducible workbook for hardware-aware DNN compression.

Five published methods (ECC, sparsity-quantization joint learning, EC2T, EdgeCompress, CAMP)
share this package; the notebooks in ``notebooks/`` tell the story and call into it.
"""

from __future__ import annotations


__version__ = "0.1.0"


def set_threads(n: int | None = None) -> int:
    """Pin torch's intra-op thread count (default: $COMPRESSLIB_THREADS, else 2).

    On a 2-core machine oversubscription (torch's default of one thread per logical core plus
    a DataLoader) makes small-network steps several times slower, so every notebook calls this.
    Returns the thread count in force.
    """
    import torch

    from .checks import check_number, env_int

    if n is None:
        n = env_int("COMPRESSLIB_THREADS", 2)  # clear error for e.g. COMPRESSLIB_THREADS=abc
    n = check_number("thread count n", n, 1, integer=True)
    torch.set_num_threads(n)
    return torch.get_num_threads()
