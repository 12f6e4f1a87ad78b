"""One training loop for every method: ``fit`` / ``train_one_epoch`` / ``evaluate`` + callbacks.

Methods plug in through callbacks (ADMM dual updates, proximal steps, EC2T re-assignment,
CAMP gates) instead of writing their own loops:

    on_batch_start -> forward -> on_loss (may change s.loss) -> backward -> after_backward
    -> optimizer.step -> after_step ... on_epoch_end

Checkpoints are written atomically after every epoch with model, optimizer, scheduler,
callback and RNG state, so ``fit(..., resume=True)`` continues an interrupted run and ends
with exactly the metrics of an uninterrupted one (same seed, same CPU). Every checkpoint holds the
run's fingerprint (``fit_fingerprint``) and is resumed or reused only when it matches;
``cached_fit`` names checkpoints by fingerprint (a changed parameter trains a new file, changing it
back reuses the old one) and ``pretrain_dense`` is the stages' cached dense pretraining.

Under ``torchrun`` (see ``compresslib.distributed``) ``fit`` wraps the model in
DistributedDataParallel, each rank reads its slice of every global batch, evaluation is sharded
and all-reduced, and only rank 0 shows progress and writes checkpoints. On CUDA, ``amp`` and
``channels_last`` (or $COMPRESSLIB_AMP / $COMPRESSLIB_CHANNELS_LAST = 1) turn on
``torch.autocast`` with a GradScaler and the channels-last memory format; both are off on CPU.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import hashlib
import inspect
import json
import math
import os
import random
import re
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import distributed as D
from .checks import check_number
from .results import library_digest


#: fit's evaluation policies: after each epoch on val and once on test at the end / val only / none
EVALUATE = ("val+test", "val", "none")


@dataclass
class Splits:
    """The loaders ``fit`` takes: ``train`` and the optional ``val`` / ``test`` (None: not evaluated)."""

    train: Any
    val: Any = None
    test: Any = None


def evaluation_view(loaders, evaluate: str = "val+test"):
    """``loaders`` as :func:`fit` sees them under the ``evaluate`` policy (:data:`EVALUATE`): "val" drops the
    test split, "none" both (a method that evaluates in its own callback); the train split is always kept."""
    if evaluate not in EVALUATE:
        raise ValueError(f"evaluate must be one of {EVALUATE}, got {evaluate!r}")
    if evaluate == "val+test":
        return loaders
    return Splits(loaders.train, getattr(loaders, "val", None) if evaluate == "val" else None, None)


class Callback:
    """Base class: override any hook; ``state_dict`` is saved in checkpoints."""

    def on_batch_start(self, s: "TrainState") -> None: ...
    def on_loss(self, s: "TrainState") -> None: ...
    def after_backward(self, s: "TrainState") -> None: ...
    def after_step(self, s: "TrainState") -> None: ...
    def on_epoch_end(self, s: "TrainState") -> None: ...

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, d: dict) -> None: ...

    def fingerprint(self) -> dict:
        """What about this callback determines the trained weights (part of ``fit``'s fingerprint).

        Default: class name + the public attributes as they are when ``fit`` starts (scalars,
        strings, tuples, dataclass configs, tensors/masks/generators by digest, nested objects'
        public attributes; ``device`` and private ``_attributes`` left out). Override it when a
        callback's behaviour depends on something else (or on timing-like public state)."""
        return {"class": _qualname(type(self)), **public_attrs(self)}


@dataclass
class TrainState:
    """What the callbacks see; ``loss`` may be replaced in ``on_loss``; ``stop`` ends training."""

    model: nn.Module
    optimizer: torch.optim.Optimizer | None
    epoch: int = 0
    step: int = 0
    inputs: Any = None
    targets: Any = None
    outputs: Any = None
    loss: Any = None
    teacher_outputs: Any = None
    history: list = field(default_factory=list)
    stop: bool = False
    device: str = "cpu"


def set_seed(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA)."""
    check_number("seed", seed, 0, 2**32 - 1, integer=True)  # numpy's range
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def kd_loss(student_logits, teacher_logits, T: float = 1.0, kind: str = "kl"):
    """Knowledge distillation: ``kl`` = T²·KL(softmax(t/T) || softmax(s/T)) (Hinton et al. 2015);
    ``mse`` = mean squared error between logits (the ECC code's distillation loss)."""
    if kind == "kl":
        return (
            F.kl_div(F.log_softmax(student_logits / T, 1), F.softmax(teacher_logits / T, 1), reduction="batchmean")
            * T
            * T
        )
    if kind == "mse":
        return F.mse_loss(student_logits, teacher_logits)
    raise ValueError(f"kd kind must be 'kl' or 'mse', got {kind!r}")


EVAL_DTYPES = {torch.float32: "float32", torch.float16: "float16"}


@torch.no_grad()
def predict_logits(model: nn.Module, loader, device="cpu", dtype=None):
    """All logits and targets of a loader, in order (model in eval mode).

    ``dtype=torch.float16``: real half-precision inference (a half copy of the model, inputs cast to
    half; the model itself is left unchanged) — the MicroNet rules' condition for counting at 16 bits."""
    if dtype is not None and dtype not in EVAL_DTYPES:
        raise ValueError(f"dtype must be one of {list(EVAL_DTYPES)} or None, got {dtype!r}")
    was = model.training
    model.eval()
    net = model if dtype in (None, torch.float32) else copy.deepcopy(model).to(dtype)
    outs, ys = [], []
    for x, y in loader:
        x = x.to(device) if dtype is None else x.to(device, dtype)
        outs.append(net(x).float().cpu())
        ys.append(y)
    model.train(was)
    return torch.cat(outs), torch.cat(ys)


def evaluate(model: nn.Module, loader, device="cpu", dtype=None) -> dict:
    """Mean cross-entropy and top-1 accuracy over a loader: ``{"loss", "accuracy", "n", "eval_dtype"}``.

    ``dtype=torch.float16`` evaluates a half copy of the model on half inputs (real FP16, runs on
    CPU with torch >= 2.1); ``eval_dtype`` records which evaluation produced the accuracy.
    Under DDP every rank scores its strided share of the loader and the sums are all-reduced."""
    if dtype is not None and dtype not in EVAL_DTYPES:
        raise ValueError(f"dtype must be one of {list(EVAL_DTYPES)} or None, got {dtype!r}")
    tag = EVAL_DTYPES.get(dtype, "float32")
    if not D.is_dist():
        logits, y = predict_logits(model, loader, device, dtype)
        return {
            "loss": F.cross_entropy(logits, y).item(),
            "accuracy": (logits.argmax(1) == y).float().mean().item(),
            "n": len(y),
            "eval_dtype": tag,
        }
    shard = D.shard_loader(loader)
    loss_sum = correct = n = 0.0
    if len(shard.dataset):
        logits, y = predict_logits(getattr(model, "module", model), shard, device, dtype)
        loss_sum = F.cross_entropy(logits, y, reduction="sum").item()
        correct, n = float((logits.argmax(1) == y).sum()), float(len(y))
    loss_sum, correct, n = D.all_reduce_scalars(loss_sum, correct, n)
    return {"loss": loss_sum / n, "accuracy": correct / n, "n": int(n), "eval_dtype": tag}


def check_device(device: str) -> str:
    """``device`` if this machine has it (``cpu``, ``cuda``, ``cuda:N``), else a clear ValueError."""
    dev = str(device)
    if dev == "cpu":
        return dev
    if not (dev == "cuda" or (dev.startswith("cuda:") and dev[5:].isdigit())):
        raise ValueError(f"unknown DEVICE {dev!r}: use 'cpu' or 'cuda' (or 'cuda:N')")
    if not torch.cuda.is_available():
        raise ValueError(f"DEVICE {dev!r} requested but torch.cuda.is_available() is False on this machine: use 'cpu'")
    if dev != "cuda" and int(dev[5:]) >= torch.cuda.device_count():
        raise ValueError(
            f"DEVICE {dev!r}: this machine has {torch.cuda.device_count()} CUDA device(s), "
            f"cuda:0 .. cuda:{torch.cuda.device_count() - 1}"
        )
    return dev


def check_fit_args(epochs, kd_weight=0.0, kd_T=1.0, device="cpu", seed=0) -> None:
    """Ranges of ``fit``'s knobs and the device, checked before any work (issue 13, point 7)."""
    check_number("epochs", epochs, 0, integer=True)
    check_number("seed", seed, 0, 2**32 - 1, integer=True, none_ok=True)  # None: fit continues the current streams
    check_number("kd_weight (weight of the distillation term)", kd_weight, 0, 1)
    check_number("kd_T (distillation temperature)", kd_T, 0, lo_open=True)
    check_device(device)  # e.g. 'cuda' on a machine without a GPU: clear error, not torch's after 17 s


@dataclass
class FitOptions:
    """Everything ``fit`` takes besides (model, loaders, epochs, optimizer): declared once here for ``fit``,
    ``cached_fit``, ``fit_fingerprint`` and ``train_one_epoch`` (each takes them as keywords).

    ``scheduler`` steps once per epoch; ``callbacks`` see every batch (:class:`Callback`); ``loss_fn``
    defaults to cross-entropy; ``device`` "cpu" / "cuda[:N]"; ``ckpt_path`` + ``resume``: see ``fit``;
    ``seed``: python/numpy/torch and the train loader's shuffling restart at it, ``None`` continues the
    streams as the caller left them; ``progress``: tqdm bars; distillation: loss = (1 - kd_weight) * CE +
    kd_weight * KD(student, ``teacher``; ``kd_T``, ``kd_kind`` "kl" | "mse"); ``amp`` / ``channels_last``: CUDA
    only (None = $COMPRESSLIB_AMP / $COMPRESSLIB_CHANNELS_LAST == "1"); ``fingerprint``: a user dict that is
    part of the run's fingerprint; ``evaluate``: one of :data:`EVALUATE`.
    """

    scheduler: Any = None
    callbacks: Iterable[Callback] = ()
    loss_fn: Callable | None = None
    device: str = "cpu"
    ckpt_path: Any = None
    resume: bool = False
    seed: int | None = 0
    progress: bool = True
    teacher: nn.Module | None = None
    kd_weight: float = 0.0
    kd_T: float = 1.0
    kd_kind: str = "kl"
    amp: bool | None = None
    channels_last: bool | None = None
    fingerprint: dict | None = None
    evaluate: str = "val+test"

    @classmethod
    def of(cls, caller: str, **options) -> "FitOptions":
        """``FitOptions(**options)`` with a clear error naming ``caller`` for an unknown option."""
        bad = set(options) - {f.name for f in dataclasses.fields(cls)}
        if bad:
            raise TypeError(f"{caller}: unknown fit arguments {sorted(bad)}; accepted: {sorted(cls.__annotations__)}")
        return cls(**options)

    def checked(self, epochs) -> "FitOptions":
        """Ranges checked before any work; callbacks as a list, amp / channels_last resolved (off on CPU)."""
        check_fit_args(epochs, self.kd_weight, self.kd_T, self.device, self.seed)
        if self.fingerprint is not None and not isinstance(self.fingerprint, dict):
            raise ValueError(f"fingerprint must be a dict or None, got {type(self.fingerprint).__name__}")
        cuda = str(self.device).startswith("cuda")
        env = os.environ.get
        return dataclasses.replace(
            self,
            callbacks=list(self.callbacks),
            amp=cuda and (env("COMPRESSLIB_AMP") == "1" if self.amp is None else bool(self.amp)),
            channels_last=cuda
            and (env("COMPRESSLIB_CHANNELS_LAST") == "1" if self.channels_last is None else bool(self.channels_last)),
        )


def reseed_loader(loader, seed: int) -> None:
    """Restart a loader's shuffling stream (its sampler's ``torch.Generator``) at ``seed``."""
    for obj in (loader, getattr(loader, "sampler", None)):
        gen = getattr(obj, "generator", None)
        if isinstance(gen, torch.Generator):
            gen.manual_seed(seed)


def _rng_state(loader) -> dict:
    np_state = np.random.get_state()
    st = {
        "torch": torch.get_rng_state(),
        "python": list(random.getstate()[1]),
        "python_pos": random.getstate()[2],
        "numpy": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
    }
    gen = getattr(getattr(loader, "sampler", None), "generator", None)
    if gen is not None:
        st["sampler"] = gen.get_state()
    return st


def _set_rng_state(st: dict, loader) -> None:
    torch.set_rng_state(st["torch"])
    random.setstate((3, tuple(st["python"]), st["python_pos"]))
    np.random.set_state(("MT19937", st["numpy"].numpy().astype(np.uint32), st["numpy_pos"], 0, 0.0))
    gen = getattr(getattr(loader, "sampler", None), "generator", None)
    if gen is not None and "sampler" in st:
        gen.set_state(st["sampler"])


def save_checkpoint(path, **state) -> Path:
    """Atomically write a checkpoint dict (tmp file + rename: a crash never leaves half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path) -> dict:
    """Read a checkpoint with ``torch.load(weights_only=True)``; any failure becomes a clear error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt file, pickle with arbitrary objects, truncated write ...
        raise ValueError(
            f"{path} is not a readable weights-only checkpoint "
            f"(torch.load(weights_only=True) failed: {type(e).__name__}: {e})"
        ) from e
    if not isinstance(obj, dict):
        raise ValueError(f"{path} holds a {type(obj).__name__}, expected a checkpoint dict")
    return obj


# ------------------------------------------------------------------ fingerprints of a training run
_FP_VERSION = "fit-fingerprint/1"
_ADDR = re.compile(r" at 0x[0-9a-fA-F]+")
_TENSOR_CACHE: dict = {}  # id -> (weakref, version, digest) for large tensors (datasets hashed once)


def _sha(*chunks) -> str:
    h = hashlib.sha256()
    for c in chunks:
        h.update(c if isinstance(c, bytes) else str(c).encode())
    return h.hexdigest()


def tensor_digest(t) -> str:
    """sha256 of a tensor's dtype, shape and bytes (device-independent)."""
    if isinstance(t, np.ndarray):
        a = np.ascontiguousarray(t)
        return _sha(str(a.dtype), str(a.shape), a.tobytes())
    big = t.numel() > (1 << 20)
    if big:
        hit = _TENSOR_CACHE.get(id(t))
        if hit is not None and hit[0]() is t and hit[1] == t._version:
            return hit[2]
    x = t.detach()
    if x.is_sparse:
        x = x.to_dense()
    if x.is_quantized:
        x = x.int_repr()
    x = x.cpu().contiguous().reshape(-1)
    d = _sha(str(t.dtype), str(tuple(t.shape)), x.view(torch.uint8).numpy().tobytes() if x.numel() else b"")
    if big:
        _TENSOR_CACHE[id(t)] = (weakref.ref(t), t._version, d)
    return d


def state_digest(state: dict) -> str:
    """sha256 over a state_dict: every entry's name, dtype, shape and bytes."""
    h = hashlib.sha256()
    for k in sorted(state):
        v = state[k]
        h.update(f"{k}:{tensor_digest(v) if isinstance(v, torch.Tensor) else _canon_json(v)};".encode())
    return h.hexdigest()


def _qualname(o) -> str:
    return f"{getattr(o, '__module__', '?')}.{getattr(o, '__qualname__', type(o).__name__)}"


def canonical(o: Any, depth: int = 3) -> Any:
    """A JSON-able, process- and path-independent description of ``o`` for fingerprints.

    Scalars/strings as they are; tensors, arrays and generators by digest; modules by class +
    weights digest; dataclasses by their fields; functions by qualified name + closure; other
    objects by class + public attributes (``depth`` levels). Paths, loaders, datasets and
    optimizers inside callbacks are reduced to their type (no absolute paths in a fingerprint)."""
    if o is None or isinstance(o, (bool, int, str)):
        return o
    if isinstance(o, float):
        return o if math.isfinite(o) else repr(o)
    if isinstance(o, np.generic):
        return canonical(o.item(), depth)
    if isinstance(o, (torch.Tensor, np.ndarray)):
        return {"tensor": tensor_digest(o)}
    if isinstance(o, torch.Generator):
        return {"generator": tensor_digest(o.get_state())}
    if isinstance(o, (torch.device, torch.dtype)):
        return str(o)
    if isinstance(o, Path):
        return "<path>"
    if isinstance(o, nn.Module):
        return {"module": _qualname(type(o)), "state": state_digest(o.state_dict())}
    if isinstance(o, dict):
        return {str(k): canonical(v, depth) for k, v in sorted(o.items(), key=lambda kv: str(kv[0]))}
    if isinstance(o, (list, tuple)):
        return [canonical(v, depth) for v in o]
    if isinstance(o, (set, frozenset)):
        return sorted((canonical(v, depth) for v in o), key=_canon_json)
    if dataclasses.is_dataclass(o) and not isinstance(o, type):
        return {
            "dataclass": _qualname(type(o)),
            **{f.name: canonical(getattr(o, f.name), depth) for f in dataclasses.fields(o)},
        }
    if isinstance(o, functools.partial):
        return {
            "partial": canonical(o.func, depth),
            "args": canonical(o.args, depth),
            "keywords": canonical(o.keywords, depth),
        }
    if isinstance(o, type) or inspect.isbuiltin(o) or inspect.ismethoddescriptor(o):
        return _qualname(o)
    if inspect.isfunction(o) or inspect.ismethod(o):
        fn = getattr(o, "__func__", o)
        cells = [c.cell_contents for c in (fn.__closure__ or ()) if _cell_ok(c)]
        return {"function": _qualname(fn), "closure": canonical(cells, depth - 1) if depth > 0 else len(cells)}
    if isinstance(o, (torch.utils.data.DataLoader, torch.utils.data.Dataset, torch.optim.Optimizer)):
        return _qualname(type(o))
    if depth > 0 and hasattr(o, "__dict__"):
        return {"object": _qualname(type(o)), **public_attrs(o, depth - 1)}
    return _qualname(type(o))


def _cell_ok(cell) -> bool:
    try:
        cell.cell_contents
        return True
    except ValueError:  # empty cell
        return False


def public_attrs(o, depth: int = 2) -> dict:
    """``canonical`` of an object's public attributes (no leading ``_``, no ``device``)."""
    return {k: canonical(v, depth) for k, v in sorted(vars(o).items()) if not k.startswith("_") and k != "device"}


def _canon_json(o) -> str:
    return json.dumps(o, sort_keys=True, separators=(",", ":"), default=str)


def _dataset_fp(ds, depth: int = 4):
    from torch.utils.data import Subset, TensorDataset

    if isinstance(ds, Subset) and depth > 0:
        return {
            "subset": tensor_digest(np.asarray(ds.indices, dtype=np.int64)),
            "of": _dataset_fp(ds.dataset, depth - 1),
        }
    if isinstance(ds, TensorDataset):
        return {"tensors": [tensor_digest(t) for t in ds.tensors]}
    fp = {"type": _qualname(type(ds))}
    with contextlib.suppress(TypeError):
        fp["n"] = len(ds)
    tf = getattr(ds, "transform", None)
    if tf is not None:
        fp["transform"] = _ADDR.sub("", repr(tf))
    return fp


def loader_fingerprint(loader):
    """A loader's data identity: the ``fingerprint`` dict ``data.get_loaders`` attaches to its loaders,
    else the dataset's content (TensorDataset bytes, Subset indices; other datasets: type, length,
    transform) + batch size, drop_last and sampler type."""
    if loader is None:
        return None
    fp = getattr(loader, "fingerprint", None)
    if isinstance(fp, dict):
        return canonical(fp)
    ds = getattr(loader, "dataset", None)
    if ds is None:
        return {"type": _qualname(type(loader))}
    return {
        "dataset": _dataset_fp(ds),
        "batch_size": getattr(loader, "batch_size", None),
        "drop_last": getattr(loader, "drop_last", None),
        "sampler": _qualname(type(getattr(loader, "sampler", None))),
    }


def _optimizer_fp(optimizer, model):
    if optimizer is None:
        return None
    names = {id(p): n for n, p in model.named_parameters()}
    groups = []
    for g in optimizer.param_groups:
        params = [names.get(id(p), f"<extra {tuple(p.shape)}>") for p in g["params"]]
        groups.append({"params": params, **{k: canonical(v) for k, v in sorted(g.items()) if k != "params"}})
    st = optimizer.state_dict().get("state") or {}
    return {"class": _qualname(type(optimizer)), "groups": groups, "state": canonical(st) if st else None}


def _scheduler_fp(scheduler):
    if scheduler is None:
        return None
    fp = {"class": _qualname(type(scheduler)), "state": canonical(scheduler.state_dict())}
    for attr in ("lr_lambdas", "_schedulers"):
        if hasattr(scheduler, attr):
            fp[attr.strip("_")] = [
                canonical(f) if not hasattr(f, "state_dict") else _scheduler_fp(f) for f in getattr(scheduler, attr)
            ]
    return fp


def fit_fingerprint(model: nn.Module, loaders, epochs: int, optimizer, scheduler=None, **options) -> tuple[str, dict]:
    """(sha256 hex, {component: sha256}) of everything that determines ``fit``'s trained weights.

    Components: ``model`` (class + module tree repr), ``init_weights`` (digest of the current =
    initial state_dict), ``optimizer`` (class, per-group hyper-parameters and parameter names, any
    pre-existing state), ``scheduler`` (class + state_dict + lambdas), ``data`` (each split's
    ``loader_fingerprint``), ``seed``, ``epochs``, ``loss`` (identity of ``loss_fn``), ``teacher``
    (weights digest + kd_weight/T/kind), ``callbacks`` (each ``Callback.fingerprint()``),
    ``precision`` (amp / channels_last as used), ``user`` (the ``fingerprint`` dict).

    Not included: the device (CPU and CUDA results differ in the last bits, a checkpoint is still
    reused across them), DDP world size, absolute paths, num_workers, library versions. The
    compresslib source is included (``code`` = ``results.library_digest()``): other code, new run.
    ``options``: :class:`FitOptions` (amp / channels_last as ``fit`` resolves them).
    """
    o = FitOptions.of("fit_fingerprint", scheduler=scheduler, **options).checked(epochs)
    return _fingerprint(model, loaders, epochs, optimizer, o)


def _fingerprint(model, loaders, epochs, optimizer, o: FitOptions) -> tuple[str, dict]:
    teacher = o.teacher
    parts = {
        "version": _FP_VERSION,
        "model": {"class": _qualname(type(model)), "arch": _ADDR.sub("", repr(model))},
        "init_weights": state_digest(model.state_dict()),
        "optimizer": _optimizer_fp(optimizer, model),
        "scheduler": _scheduler_fp(o.scheduler),
        "data": {k: loader_fingerprint(getattr(loaders, k, None)) for k in ("train", "val", "test")},
        "seed": None if o.seed is None else int(o.seed),
        "epochs": int(epochs),
        "loss": "default:CrossEntropyLoss"
        if o.loss_fn is None
        else (_ADDR.sub("", repr(o.loss_fn)) if isinstance(o.loss_fn, nn.Module) else canonical(o.loss_fn)),
        "teacher": None
        if teacher is None
        else {
            "class": _qualname(type(teacher)),
            "weights": state_digest(teacher.state_dict()),
            "kd_weight": float(o.kd_weight),
            "kd_T": float(o.kd_T),
            "kd_kind": str(o.kd_kind),
        },
        "callbacks": [canonical(cb.fingerprint()) for cb in o.callbacks],
        "precision": {"amp": bool(o.amp), "channels_last": bool(o.channels_last)},
        "user": canonical(o.fingerprint or {}),
        "code": library_digest(),
    }
    hashes = {k: _sha(_canon_json(v)) for k, v in parts.items()}
    return _sha(_canon_json(hashes)), hashes


def _fp_mismatch(ck: dict, fp: str, parts: dict) -> str | None:
    """None if the checkpoint's fingerprint is ``fp``, else which components differ."""
    if ck.get("fingerprint") == fp:
        return None
    old = ck.get("fingerprint_parts")
    if not isinstance(old, dict):
        return "it was written without a fingerprint (older compresslib)"
    diff = sorted(k for k in set(old) | set(parts) if old.get(k) != parts.get(k))
    return "it differs in " + (", ".join(diff) if diff else "its total hash")


def _progress(iterable, enabled: bool, **kw):
    enabled = enabled and os.environ.get("COMPRESSLIB_PROGRESS", "1") != "0" and D.is_main()
    return tqdm(iterable, disable=not enabled, **kw)


def train_one_epoch(model, loader, optimizer, state: TrainState | None = None, scaler=None, **options) -> dict:
    """One pass over ``loader``; returns ``{"train_loss", "train_accuracy"}`` (running averages).

    ``model`` may be a DDP wrapper (``state.model`` is then the bare module the callbacks see);
    with a ``scaler`` (CUDA AMP) the forward runs under ``torch.autocast`` and gradients are
    unscaled before ``after_backward``. ``options``: :class:`FitOptions` (``loss_fn``, ``callbacks``, ``device``,
    ``teacher`` / ``kd_*``, ``progress``, ``channels_last``; the others are ``fit``'s)."""
    return _train_epoch(model, loader, optimizer, FitOptions.of("train_one_epoch", **options), state, scaler)


def _train_epoch(model, loader, optimizer, o: FitOptions, state: TrainState | None, scaler) -> dict:
    loss_fn, callbacks, device, teacher = o.loss_fn or nn.CrossEntropyLoss(), o.callbacks, o.device, o.teacher
    s = state or TrainState(model, optimizer, device=device)
    model.train()
    if teacher is not None:
        teacher.eval()
    bsamp = getattr(loader, "batch_sampler", None)
    global_sizes = bsamp.global_batch_sizes() if isinstance(bsamp, D.DistributedBatchSampler) else None
    amp = scaler is not None
    tot_loss, correct, n = 0.0, 0, 0
    for i, (x, y) in enumerate(_progress(loader, o.progress, desc=f"epoch {s.epoch + 1}", leave=False)):
        s.inputs, s.targets = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if o.channels_last and s.inputs.dim() == 4:
            s.inputs = s.inputs.contiguous(memory_format=torch.channels_last)
        for cb in callbacks:
            cb.on_batch_start(s)
        with torch.autocast("cuda") if amp else contextlib.nullcontext():
            s.outputs = model(s.inputs)
            loss = loss_fn(s.outputs, s.targets)
            if teacher is not None and o.kd_weight > 0:
                with torch.no_grad():
                    s.teacher_outputs = teacher(s.inputs)
                loss = (1 - o.kd_weight) * loss + o.kd_weight * kd_loss(s.outputs, s.teacher_outputs, o.kd_T, o.kd_kind)
        s.loss = data_loss = loss.float() if amp else loss
        for cb in callbacks:
            cb.on_loss(s)
        if optimizer is not None:
            optimizer.zero_grad(set_to_none=True)
        backward = s.loss
        if global_sizes is not None:  # DDP averages rank gradients: weight each rank's data term by
            w = len(y) * D.world_size() / global_sizes[i]  # its share so the sum is the global-batch mean
            if w != 1.0:
                backward = s.loss + (w - 1.0) * data_loss
        (scaler.scale(backward) if amp else backward).backward()
        if amp and optimizer is not None:
            scaler.unscale_(optimizer)
        for cb in callbacks:
            cb.after_backward(s)
        if optimizer is not None:
            if amp:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
        for cb in callbacks:
            cb.after_step(s)
        s.step += 1
        b = len(y)
        tot_loss += float(s.loss.detach()) * b
        correct += int((s.outputs.detach().argmax(1) == s.targets).sum())
        n += b
        if D.is_dist():  # a stop requested on any rank stops every rank (else DDP would hang)
            s.stop = D.all_reduce_scalars(float(s.stop))[0] > 0
        if s.stop:
            break
    if D.is_dist():
        tot_loss, correct, n = D.all_reduce_scalars(tot_loss, correct, n)
    return {"train_loss": tot_loss / max(n, 1), "train_accuracy": correct / max(n, 1)}


def fit(model: nn.Module, loaders, epochs: int, optimizer, scheduler=None, **options) -> dict:
    """Train for ``epochs`` epochs, evaluating on val after each and on test at the end.

    ``options``: the keywords of :class:`FitOptions` (callbacks, loss_fn, device, ckpt_path, resume, seed,
    progress, teacher, kd_weight, kd_T, kd_kind, amp, channels_last, fingerprint, evaluate).

    ``evaluate`` (:data:`EVALUATE`): "val" skips the test pass, "none" every evaluation (a method whose own
    callback evaluates); the skipped splits are not part of the fingerprint either.

    ``ckpt_path``: checkpoint written atomically after every epoch, holding the run's fingerprint
    (``fit_fingerprint``: model/arch, initial weights, optimizer/scheduler settings, data, seed,
    epochs, loss/teacher/kd, callbacks' configs, the optional user ``fingerprint`` dict). With
    ``resume=True`` an existing checkpoint is used only if its fingerprint matches: a partial run
    continues from the next epoch, a finished one is returned as it was (same history and
    accuracies, no training); a mismatch prints one line naming the differing components and
    trains from scratch. Returns ``{"history", "val_accuracy", "test_accuracy",
    "best_val_accuracy", "best_epoch", "seconds_per_epoch"}``.

    ``seed``: python/numpy/torch and the train loader's shuffling restart at it; ``None`` continues the
    streams as the caller left them (a training phase that follows another one on the same loader).

    $COMPRESSLIB_FORBID_TRAINING=1 makes ``fit`` raise instead of training any epoch (a check
    that a re-run reuses everything).

    Under torchrun (WORLD_SIZE > 1) the process group is joined here, ``loaders.train``'s batch
    size is the global batch, and checkpoints/progress come from rank 0 only. ``amp`` /
    ``channels_last``: CUDA only (None = $COMPRESSLIB_AMP / $COMPRESSLIB_CHANNELS_LAST == "1").
    """
    return _fit(model, loaders, epochs, optimizer, FitOptions.of("fit", scheduler=scheduler, **options))[0]


def _result(history, model, loaders, device) -> dict:
    out = {"history": history}
    vals = [h.get("val_accuracy") for h in history if h.get("val_accuracy") is not None]
    if vals:
        best = int(np.argmax(vals))
        out.update(val_accuracy=vals[-1], best_val_accuracy=vals[best], best_epoch=best + 1)
    if getattr(loaders, "test", None) is not None:
        out["test_accuracy"] = evaluate(model, loaders.test, device)["accuracy"]
    secs = [h["seconds"] for h in history]
    out["seconds_per_epoch"] = float(np.median(secs)) if secs else 0.0
    return out


def _say(msg: str) -> None:
    if D.is_main():
        print(msg, flush=True)


def _fit(model, loaders, epochs, optimizer, o: FitOptions, fp=None):
    """``fit``; returns (result, status) with status "trained", "resumed" or "reused"."""
    o = o.checked(epochs)
    loaders = evaluation_view(loaders, o.evaluate)
    D.init_from_env(None if str(o.device).startswith("cuda") else "gloo")  # CPU stages: gloo
    o = dataclasses.replace(o, device=D.device_for(o.device))  # under DDP: this rank's GPU
    callbacks, scheduler, seed, ckpt_path, device = o.callbacks, o.scheduler, o.seed, o.ckpt_path, o.device
    if fp is None:  # before the model moves or trains: the initial weights are part of it
        fp = _fingerprint(model, loaders, epochs, optimizer, o)
    fp_hash, fp_parts = fp
    model.to(device, memory_format=torch.channels_last) if o.channels_last else model.to(device)
    if o.teacher is not None:
        o.teacher.to(device)
    net = D.wrap_model(model, device)
    train_loader = D.distributed_loader(loaders.train)
    scaler = torch.amp.GradScaler("cuda") if o.amp else None
    s = TrainState(model, optimizer, device=device)
    if seed is not None:  # None: a phase that continues the caller's random and shuffling streams (sqjoint)
        set_seed(seed)
        reseed_loader(loaders.train, seed)  # the shuffling stream too: a fit's result never depends on earlier fits
    start, status, out = 0, "trained", None
    if ckpt_path and D.is_dist():  # every rank resumes from rank 0's file (ranks' OUT_DIRs differ)
        ckpt_path = D.broadcast_object(str(ckpt_path))
    if o.resume and ckpt_path and Path(ckpt_path).is_file():
        ck = load_checkpoint(ckpt_path)
        missing = [k for k in ("model", "history", "epoch", "step") if k not in ck]
        if missing:
            raise ValueError(
                f"{ckpt_path} was not written by train.fit (it lacks {missing}; keys: "
                f"{sorted(ck)}): a weights-only checkpoint cannot be resumed. Load it with "
                f"train.load_weights(model, path), or give fit another ckpt_path"
            )
        why = _fp_mismatch(ck, fp_hash, fp_parts)
        if why is not None:
            _say(f"[fit] not resuming {Path(ckpt_path).name}: {why}; training from scratch")
        else:
            load_weights(model, ck, source=ckpt_path)
            if optimizer is not None and ck.get("optimizer"):
                optimizer.load_state_dict(ck["optimizer"])
            if scheduler is not None and ck.get("scheduler"):
                scheduler.load_state_dict(ck["scheduler"])
            for cb, st in zip(callbacks, ck.get("callbacks", [])):
                cb.load_state_dict(st)
            s.history, s.step, start = list(ck["history"]), int(ck["step"]), int(ck["epoch"])
            ranks = ck.get("rng_ranks") or []
            _set_rng_state(ranks[D.rank()] if len(ranks) == D.world_size() else ck["rng"], loaders.train)
            if scaler is not None and ck.get("scaler"):
                scaler.load_state_dict(ck["scaler"])
            if ck.get("done"):
                start, status = epochs, "reused"
                out = ck.get("result")
            else:
                status = "resumed"
    if start < epochs and os.environ.get("COMPRESSLIB_FORBID_TRAINING") == "1":
        raise RuntimeError(
            f"COMPRESSLIB_FORBID_TRAINING=1 but fit would train {type(model).__name__} for "
            f"epochs {start + 1}..{epochs} (checkpoint {Path(ckpt_path).name if ckpt_path else 'none'}, "
            f"fingerprint {fp_hash[:12]})"
        )
    for epoch in _progress(
        range(start, epochs), o.progress and epochs - start > 1, desc="fit", initial=start, total=epochs
    ):
        s.epoch = epoch
        t0 = time.perf_counter()
        row = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"] if optimizer else None}
        row.update(_train_epoch(net, train_loader, optimizer, o, s, scaler))
        if scheduler is not None:
            scheduler.step()
        for cb in callbacks:
            cb.on_epoch_end(s)
        if getattr(loaders, "val", None) is not None:
            ev = evaluate(model, loaders.val, device)
            row.update(val_loss=ev["loss"], val_accuracy=ev["accuracy"])
        row["seconds"] = time.perf_counter() - t0
        s.history.append(row)
        done = s.stop or epoch + 1 >= epochs
        if done:  # the test pass before the last save: a reused run returns this very dict
            out = _result(s.history, model, loaders, device)
        if ckpt_path:
            rng = _rng_state(loaders.train)
            rng_ranks = D.all_gather_object(rng) if D.is_dist() else None
            if D.is_main():
                save_checkpoint(
                    ckpt_path,
                    model=model.state_dict(),
                    optimizer=optimizer.state_dict() if optimizer else None,
                    scheduler=scheduler.state_dict() if scheduler else None,
                    callbacks=[cb.state_dict() for cb in callbacks],
                    history=s.history,
                    step=s.step,
                    epoch=epoch + 1,
                    rng=rng,
                    rng_ranks=rng_ranks,
                    scaler=scaler.state_dict() if scaler is not None else None,
                    fingerprint=fp_hash,
                    fingerprint_parts=fp_parts,
                    done=done,
                    result=out if done else None,
                )
            D.barrier()
        if s.stop:
            break
    if out is None:
        out = _result(s.history, model, loaders, device)
    if ckpt_path:
        name = Path(ckpt_path).name
        if status == "reused":
            _say(f"[fit] reused {name}: {len(s.history)} epochs, fingerprint {fp_hash[:12]}")
        else:
            _say(
                f"[fit] {status} {name}: epochs {start + 1 if status == 'resumed' else 1}..{len(s.history)} "
                f"of {epochs}, fingerprint {fp_hash[:12]}"
            )
    return out, status


def load_weights(model: nn.Module, checkpoint, source=None) -> nn.Module:
    """Load a checkpoint's ``model`` state into ``model``; clear errors instead of a key dump.

    ``checkpoint``: a path or an already loaded dict (``{"model": state_dict, ...}``, as written by
    ``fit``/``save_checkpoint``). A dict without ``model`` or a state of another architecture
    raises a ValueError saying how many keys are missing/unexpected/mis-shaped (first few named)."""
    src = source or checkpoint
    ck = load_checkpoint(checkpoint) if not isinstance(checkpoint, dict) else checkpoint
    state = ck.get("model")
    if not isinstance(state, dict):
        raise ValueError(f"{src} holds no 'model' state_dict (keys: {sorted(ck)[:8]}): not a compresslib checkpoint")
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and isinstance(state[k], torch.Tensor) and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or extra or shapes:
        raise ValueError(
            f"{src} holds weights of another model than {type(model).__name__}: "
            f"{len(missing)} missing keys {missing[:3]}, {len(extra)} unexpected keys {extra[:3]}, "
            f"{len(shapes)} shape mismatches {shapes[:3]}"
        )
    model.load_state_dict(state)
    return model


def cached_fit(model: nn.Module, loaders, epochs: int, optimizer, *, cache_dir, name: str, **fit_kwargs) -> dict:
    """``fit`` with its checkpoint at ``cache_dir/f"{name}-{fp[:12]}.ckpt"`` (fp = ``fit_fingerprint``).

    A finished checkpoint with the same fingerprint is loaded instead of training: the result is
    the original run's (same history, val/test accuracy) with ``"reused": True`` and the line
    "[fit] reused ..." printed. Otherwise it trains (continuing a partial matching run) and
    returns ``"reused": False``. Also returns ``"checkpoint"`` (the path) and ``"fingerprint"``."""
    if not isinstance(name, str) or not name or "/" in name or "\\" in name:
        raise ValueError(f"cached_fit: name must be a non-empty file-name stem without '/', got {name!r}")
    if cache_dir is None:
        raise ValueError("cached_fit: cache_dir is required (e.g. results.cache_dir(OUT_DIR))")
    for k in ("ckpt_path", "resume"):
        if k in fit_kwargs:
            raise TypeError(f"cached_fit sets {k} itself; do not pass it")
    o = FitOptions.of("cached_fit", **fit_kwargs).checked(epochs)
    loaders = evaluation_view(loaders, o.evaluate)
    fp = _fingerprint(model, loaders, epochs, optimizer, o)
    path = Path(cache_dir) / f"{name}-{fp[0][:12]}.ckpt"
    out, status = _fit(model, loaders, epochs, optimizer, dataclasses.replace(o, ckpt_path=path, resume=True), fp)
    return {**out, "reused": status == "reused", "checkpoint": str(path), "fingerprint": fp[0]}


_PRETRAIN_OPTS = {
    "optimizer": "adam",
    "momentum": 0.9,
    "nesterov": False,
    "weight_decay": 0.0,
    "scheduler": "cosine",
    "name": None,
    "progress": False,
    "fingerprint": None,
    "amp": None,
    "channels_last": None,
}


def pretrain_dense(
    model_name: str, model_kwargs: dict, loaders, *, epochs: int, seed: int, lr: float, cache_dir, device="cpu", **opts
) -> tuple[nn.Module, dict]:
    """The dense pretraining of every stage, once per seed, cached by fingerprint (``cached_fit``).

    ``set_seed(seed)``, ``create_model(model_name, **model_kwargs)``, then ``epochs`` epochs of
    ``optimizer`` "adam" (default) or "sgd" (``momentum``, ``nesterov``) with ``weight_decay`` and
    ``scheduler`` "cosine" (CosineAnnealingLR, T_max = epochs, default) or "none", on ``device``.
    Returns (model in eval mode on ``device``, cached_fit's result dict). Other ``opts``: ``name``
    (file stem, default ``dense-<model_name>-seed<seed>``), ``progress``, ``fingerprint``, ``amp``,
    ``channels_last``."""
    from .models import create_model

    bad = set(opts) - set(_PRETRAIN_OPTS)
    if bad:
        raise TypeError(f"pretrain_dense: unknown options {sorted(bad)}; accepted: {sorted(_PRETRAIN_OPTS)}")
    o = {**_PRETRAIN_OPTS, **opts}
    if o["optimizer"] not in ("adam", "sgd"):
        raise ValueError(f"pretrain_dense: optimizer must be 'adam' or 'sgd', got {o['optimizer']!r}")
    if o["scheduler"] not in ("cosine", "none"):
        raise ValueError(f"pretrain_dense: scheduler must be 'cosine' or 'none', got {o['scheduler']!r}")
    if not (isinstance(epochs, int) and epochs >= 0):
        raise ValueError(f"pretrain_dense: epochs must be an int >= 0, got {epochs!r}")
    if not lr > 0:
        raise ValueError(f"pretrain_dense: lr must be > 0, got {lr}")
    if o["weight_decay"] < 0:
        raise ValueError(f"pretrain_dense: weight_decay must be >= 0, got {o['weight_decay']}")
    check_device(device)
    set_seed(seed)
    model = create_model(model_name, **dict(model_kwargs))
    if o["optimizer"] == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=o["weight_decay"])
    else:
        opt = torch.optim.SGD(
            model.parameters(), lr=lr, momentum=o["momentum"], nesterov=o["nesterov"], weight_decay=o["weight_decay"]
        )
    sched = (
        torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs)) if o["scheduler"] == "cosine" else None
    )
    user = {
        "pretrain_dense": {"model": model_name, "kwargs": canonical(dict(model_kwargs))},
        **(o["fingerprint"] or {}),
    }
    res = cached_fit(
        model,
        loaders,
        epochs,
        opt,
        scheduler=sched,
        seed=seed,
        device=device,
        cache_dir=cache_dir,
        name=o["name"] or f"dense-{model_name}-seed{seed}",
        progress=o["progress"],
        fingerprint=user,
        amp=o["amp"],
        channels_last=o["channels_last"],
    )
    return model.eval(), res
