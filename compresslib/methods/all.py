"""Import every method module, so that :data:`compresslib.methods.METHODS` lists every registered method.

A module registers its method with ``@register_method`` on import; a module that has not been converted to
the contract yet simply registers nothing (the registry-wide tests, ``tests/test_methods.py``, iterate
``METHODS.names()`` after importing this module).
"""

from . import camp, cascade, crop, ec2t, ecc, edgecompress, sqjoint  # noqa: F401

from .contract import METHODS

__all__ = ["METHODS"]
