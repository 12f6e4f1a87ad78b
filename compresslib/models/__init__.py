"""Model registry: ``create_model(name, **kw)``, ``list_models()``, ``@register_model``.

Every module in this package is imported on first use, so a new file with
``@register_model("foo", input_size=(1, 28, 28))`` registers itself with no other edit.
Every constructor takes ``num_classes`` and ``in_channels`` (+ its own keyword arguments).
"""

from __future__ import annotations

import importlib
import pkgutil

from ..registry import Registry

MODELS = Registry("model")
_loaded = False


def register_model(name: str, input_size=(1, 28, 28), **meta):
    """Decorator registering a model constructor with its default input size (C, H, W)."""
    return MODELS.register(name, input_size=tuple(input_size), **meta)


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for m in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{m.name}")


def create_model(name: str, **kwargs):
    """Build a registered model; unknown names raise ValueError listing the valid ones."""
    _load_all()
    return MODELS.create(name, **kwargs)


create = create_model


def list_models() -> list[str]:
    _load_all()
    return MODELS.names()


def model_input_size(name: str) -> tuple:
    """Default (C, H, W) input of a registered model."""
    _load_all()
    return MODELS.meta(name)["input_size"]


def model_meta(name: str) -> dict:
    _load_all()
    return MODELS.meta(name)
