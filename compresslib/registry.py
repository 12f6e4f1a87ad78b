"""A tiny name -> constructor registry (timm-style), shared by models, datasets and methods."""

from __future__ import annotations

from typing import Any, Callable


class Registry:
    """Maps names to constructors; unknown names raise an error that lists the valid ones."""

    def __init__(self, kind: str):
        self.kind = kind
        self._fns: dict[str, Callable[..., Any]] = {}
        self._meta: dict[str, dict] = {}

    def register(self, name: str, **meta):
        """Decorator: ``@REG.register("lenet5", input_size=(1, 32, 32))``."""

        def deco(fn):
            if name in self._fns and self._fns[name] is not fn:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._fns[name] = fn
            self._meta[name] = dict(meta)
            return fn

        return deco

    def check(self, name: str) -> str:
        if name not in self._fns:
            raise ValueError(f"unknown {self.kind} {name!r}; valid {self.kind} names: {', '.join(self.names())}")
        return name

    def get(self, name: str) -> Callable[..., Any]:
        return self._fns[self.check(name)]

    def create(self, name: str, **kwargs):
        return self.get(name)(**kwargs)

    def meta(self, name: str) -> dict:
        return dict(self._meta[self.check(name)])

    def names(self) -> list[str]:
        return sorted(self._fns)

    def __contains__(self, name: str) -> bool:
        return name in self._fns
