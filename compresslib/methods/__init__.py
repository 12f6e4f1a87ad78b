"""Compression methods, one module per paper, each with a ``Config`` and a ``run`` (see :mod:`.contract`).

``METHODS`` lists the registered ones; import :mod:`compresslib.methods.all` (or the method's module) to
fill it."""

from .contract import METHODS, MethodConfig, Result, method_config, record_results, register_method, run_method

__all__ = ["METHODS", "MethodConfig", "Result", "method_config", "record_results", "register_method", "run_method"]
