"""The method contract: every paper's method is a ``Config`` + ``run(config, loaders, dense) -> list[Result]``.

A method module (``compresslib/methods/<paper>.py``) declares

* ``Config``: a dataclass inheriting :class:`MethodConfig`; its ranges are declared once, in ``RANGES``
  ({field: dict(lo=, hi=, integer=, ...)} as :func:`compresslib.checks.check_number` takes them), and
  ``validate()`` checks them (plus any method-specific rule) before any work starts;
* ``run(config, loaders, dense=None, *, cache_dir=None, **kw) -> list[Result]``: the method's whole
  pipeline (compression steps are callbacks on :func:`compresslib.train.fit`), one :class:`Result` per
  trained model;

and registers both with :func:`register_method`. Notebooks build a ``Config`` from their parameters cell,
call ``run`` and tabulate the results; the leaderboard reads the ``board`` rows that :func:`record_result`
writes into the stage's ``models.json`` (see :mod:`compresslib.manifest`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import torch.nn as nn

from ..checks import check_number
from ..registry import Registry

METHODS = Registry("method")

# ranges most Configs share (``check_number`` keywords), so a RANGES table reads as a list of choices
SEED = dict(lo=0, hi=2**31 - 1, integer=True)
EPOCHS = dict(lo=1, hi=10000, integer=True)  # a phase that must run
EPOCHS0 = dict(lo=0, hi=10000, integer=True)  # 0 skips the phase
LR = dict(lo=0, hi=10, lo_open=True)
FRACTION = dict(lo=0, hi=1)
NONNEGATIVE = dict(lo=0)
POSITIVE = dict(lo=0, lo_open=True)


def ints(lo: int, hi: float = float("inf")) -> dict:
    """The range of an integer knob, ``[lo, hi]``."""
    return dict(lo=lo, hi=hi, integer=True)


class MethodConfig:
    """Mixin for a method's ``Config`` dataclass: ranges declared once, checked by :meth:`validate`.

    ``RANGES = {"epochs": dict(lo=0, integer=True), "lr": dict(lo=0, lo_open=True)}``; a field whose value
    is a list/tuple is checked element by element. Subclasses add method-specific rules by overriding
    :meth:`check` (called by :meth:`validate` after the ranges)."""

    RANGES: ClassVar[dict[str, dict]] = {}

    def validate(self):
        """``self`` if every field is in its declared range, else a TypeError/ValueError naming the field."""
        names = {f.name for f in dataclasses.fields(self)}
        for name, rng in self.RANGES.items():
            if name not in names:
                raise AttributeError(f"{type(self).__qualname__}.RANGES names {name!r}, which is not a field")
            value = getattr(self, name)
            if isinstance(value, (list, tuple)):
                for i, v in enumerate(value):
                    check_number(f"{name}[{i}]", v, **rng)
            else:
                check_number(name, value, **rng)
        self.check()
        return self

    def check(self) -> None:
        """Method-specific rules beyond the numeric ranges (override; raise ValueError naming the field)."""

    @classmethod
    def from_parameters(cls, params: dict, **overrides):
        """A validated Config from a notebook's parameters cell (pass ``globals()``): field ``box_sizes`` takes
        ``BOX_SIZES`` and so on; a field whose upper-case name is absent keeps its default; ``overrides`` (values
        derived from several parameters, e.g. ``seeds``) win."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(overrides) - set(names))
        if unknown:
            raise TypeError(f"{cls.__qualname__} has no field(s) {unknown}; fields: {names}")
        kw = {n: params[n.upper()] for n in names if n.upper() in params}
        return cls(**{**kw, **overrides}).validate()

    def replace(self, **changes):
        """A validated copy with ``changes`` applied (``dataclasses.replace`` + :meth:`validate`)."""
        return dataclasses.replace(self, **changes).validate()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class Result:
    """One trained model of a method run.

    ``accuracy`` is a fraction in [0, 1] measured on ``split``; ``metrics``: whatever else the notebook
    tabulates; ``board``: the leaderboard fields of the model's manifest row (None: not on the board),
    see :func:`compresslib.manifest.board_fields`."""

    method: str
    setting: str
    seed: int
    model: nn.Module | None
    accuracy: float
    split: str = "test"
    metrics: dict = field(default_factory=dict)
    board: dict | None = None

    def __post_init__(self):
        check_number(f"{self.method}/{self.setting}: accuracy", float(self.accuracy), 0.0, 1.0)
        if self.split not in ("train", "val", "test"):
            raise ValueError(f"Result.split must be 'train', 'val' or 'test', got {self.split!r}")


def record_results(out_dir, results) -> int:
    """Write every Result that carries ``metrics["manifest"]`` (``results.record_model``'s ``key``, ``model``,
    ``kwargs``, ``checkpoint`` and extra keys) into ``out_dir/models.json``, with its accuracy, split and board row.
    Returns how many rows were written."""
    from ..results import record_model

    n = 0
    for r in results:
        if "manifest" in r.metrics:
            row = dict(r.metrics["manifest"])
            record_model(out_dir, row.pop("key"), accuracy=r.accuracy, split=r.split, board=r.board, **row)
            n += 1
    return n


def register_method(name: str, *, config: type, stage: str, paper: str, tiny: Callable[[], Any] | None = None):
    """Register ``run`` as method ``name`` (``@register_method("sqjoint", config=Config, stage=..., paper=...)``).

    ``tiny``: a zero-argument function returning a Config that runs in seconds on the tests' fake data
    (the registry-wide tests run it)."""
    if not (dataclasses.is_dataclass(config) and issubclass(config, MethodConfig)):
        raise TypeError(f"method {name!r}: config must be a dataclass inheriting MethodConfig, got {config!r}")

    def deco(run):
        return METHODS.register(name, config=config, stage=stage, paper=paper, tiny=tiny)(run)

    return deco


def method_config(name: str) -> type:
    """The ``Config`` class of registered method ``name``."""
    return METHODS.meta(name)["config"]


def run_method(name: str, config, loaders, dense=None, **kw) -> list[Result]:
    """Validate ``config`` (a ``Config`` of method ``name``) and run it."""
    cls = method_config(name)
    if not isinstance(config, cls):
        raise TypeError(f"method {name!r} takes a {cls.__qualname__}, got {type(config).__qualname__}")
    return METHODS.get(name)(config.validate(), loaders, dense, **kw)
