"""MicroNet challenge scoring (NeurIPS 2019 rules) from an explicit op list.

``score = params / ref_params + ops / ref_ops`` (rules: "Scoring and submission"), both counted in
32-bit units: a b-bit value is b/32 parameters, an op on b-bit inputs is b/32 ops.

The model is traced with ``torch.fx`` and shape-propagated at batch 1, giving one record per
conv / depthwise conv / FC / BatchNorm / activation / residual add / pooling op (shortcut convs and
every residual add are therefore counted by construction). Two modes:

* ``official`` — the rules as published: sparse weights = non-zero values + a 1-bit mask over the
  full tensor; a ternary layer stores 1 sign bit per non-zero + 2 centroids (2 per output channel
  when a BatchNorm scale is folded into them) and needs 2 multiplies per output (one per centroid); values not otherwise quantized have ``fp_bits`` (16 = FP16
  evaluation, the rules' freebie; 32 = plain FP32); additions always at 32 bits; BatchNorm that
  directly follows a conv/FC is folded into one bias per channel, a standalone BN costs a scale and
  a shift per channel (params) and 1 mult + 1 add per element (ops); ReLU = 1 mult per element.
* ``repo`` — the EC2T repository's counter (spec §5.2): a ternary layer takes the cheapest of five
  storage formats (mask, ternary-1/-2, CSR, CER) and sums its products with a bit-growing tree adder
  starting at ``fp_bits``; a standalone BN is a bias (shift) only. The repository's skip-add and
  shortcut omissions are *not* reproduced (spec §5.3) — counts are per op here.
Dead-channel removal is not applied in either mode (conservative).

Quantized layers are costed as leaves: any Conv2d/Linear subclass (e.g. ``quant.QConv2d``) and any
parametrized layer is one op with the bits it declares (``w_bits`` for its weights, ``a_bits`` for
its input activation; 32 = not quantized), and functions of ``compresslib.quant`` (fake-quantizers)
are precision conversions that cost nothing. Every parameter of the model is costed exactly once
(a weight tied between layers is stored once, at the highest bits of its users); a module holding
parameters that cannot be costed raises ``ValueError`` naming it and its type.

The 16-bit rule (official mode): if any part of a model is quantized below 16 bits, its other values
count at 32 bits, unless the model's accuracy was measured in real FP16 (``eval_dtype="float16"``).
"""

from __future__ import annotations

import math
import operator

import pandas as pd
import torch
from torch import fx, nn
import torch.nn.functional as F
from torch.fx.passes.shape_prop import ShapeProp

from .cost import bits_for

TASKS = {  # reference model: (params, ops) — rules, final version (2019-09-04)
    "imagenet": {"model": "MobileNetV2-1.4", "params": 6.9e6, "ops": 1170e6},
    "cifar100": {"model": "WideResNet-28-10", "params": 36.5e6, "ops": 10.49e9},
}
MODES = ("official", "repo")
# (mults, adds) per element of each activation, by kind; then the modules, functions and method names of each kind
_ACT_KIND_COST = {"relu": (1, 0), "sigmoid": (2, 1), "silu": (3, 1), "hardswish": (3, 1), "hardsigmoid": (2, 1)}
_ACT_KINDS = {
    "relu": (nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.LeakyReLU, F.relu, torch.relu, F.relu6, F.hardtanh, F.leaky_relu)
    + ("relu", "relu_"),
    "sigmoid": (nn.Sigmoid, torch.sigmoid, F.sigmoid, "sigmoid"),
    "silu": (nn.SiLU, F.silu),
    "hardswish": (nn.Hardswish, F.hardswish),
    "hardsigmoid": (nn.Hardsigmoid,),
}
_ACT_COST = {op: _ACT_KIND_COST[kind] for kind, ops in _ACT_KINDS.items() for op in ops}
_ADDS = {operator.add, operator.iadd, torch.add, "add", "add_"}
_MULS = {operator.mul, operator.imul, torch.mul, "mul", "mul_"}
_AVG = {F.avg_pool2d, F.adaptive_avg_pool2d, torch.mean, "mean", nn.AvgPool2d, nn.AdaptiveAvgPool2d}
_MAX = {F.max_pool2d, F.adaptive_max_pool2d, nn.MaxPool2d, nn.AdaptiveMaxPool2d}
_FREE_MODULES = (nn.Dropout, nn.Identity, nn.Flatten)


def check_task(task: str) -> dict:
    if task not in TASKS:
        raise ValueError(f"unknown MicroNet task {task!r}; valid tasks: {', '.join(TASKS)}")
    return TASKS[task]


def score(params: float, ops: float, task: str = "imagenet") -> float:
    """Score = params / ref_params + ops / ref_ops (32-bit units)."""
    ref = check_task(task)
    return params / ref["params"] + ops / ref["ops"]


def tree_adder_bits(v: float, start_bits: int = 16, max_bits: int = 32) -> float:
    """Repo tree adder: bits spent summing v products pairwise, +1 bit per level (spec §5.2 step 5).
    Replicates the repo loop, which starts from v − 1 values (one add too few)."""
    n, bits, p = v - 1, 0.0, start_bits
    while n > 1:
        bits += math.floor(n / 2) * p
        n = math.ceil(n / 2)
        p = min(p + 1, max_bits)
    return bits


def is_ternary(w: torch.Tensor) -> bool:
    """True if the tensor holds at most one positive and one negative non-zero value (and ≥ 8 entries)."""
    if w.numel() < 8:
        return False
    pos, neg = w[w > 0], w[w < 0]
    return all(v.numel() == 0 or bool((v == v[0]).all()) for v in (pos, neg))


def ternary_storage_bits(N: int, nnz: int, c_out: int, b: int) -> dict:
    """Candidate storage costs (bits) of a ternary tensor, spec §5.2 step 2 (repo rounds up to 32-bit words)."""
    words = lambda bits: 32 * math.ceil(bits / 32)  # noqa: E731
    return {
        "mask": nnz * b + (N if nnz < N else 0),
        "ternary1": words(2 * N + 2 * b),
        "ternary2": words(N + nnz + 2 * b),
        "csr": words(nnz * (b + 1) + (c_out + 1) * b + 2 * b),
        "cer": words(nnz * b + 2 * (c_out + 1) * b + 2 * b),
    }


# ----------------------------------------------------------------------------- op list
def _quantizer_modules():
    from . import quant  # fake-quantizers: precision conversions, free under the rules

    return (math, quant)


def _is_weight_leaf(m: nn.Module) -> bool:
    """Conv2d/Linear (subclasses included: quantized wrappers) and parametrized layers are costed as one op."""
    from torch.nn.utils import parametrize

    return isinstance(m, (nn.Conv2d, nn.Linear)) or parametrize.is_parametrized(m)


class _Tracer(fx.Tracer):
    """fx tracer that stops at weight layers (quantized subclasses included) and wraps quantizer functions."""

    def __init__(self):
        super().__init__(autowrap_modules=_quantizer_modules())

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return _is_weight_leaf(m) or super().is_leaf_module(m, qualname)


def _declared_bits(m: nn.Module, attr: str):
    """Bits a quantized layer declares (``w_bits`` / ``a_bits``), None when absent or >= 32 (not quantized)."""
    b = getattr(m, attr, None)
    return int(b) if b is not None and int(b) < 32 else None


def _forward_weight(m: nn.Module) -> torch.Tensor:
    """The weight the layer computes with: its quantizer's output when it has one (``quant_weight``)."""
    with torch.no_grad():
        w = m.quant_weight() if callable(getattr(m, "quant_weight", None)) else m.weight
    return w.detach()


def _weight_id(m: nn.Module) -> int:
    """Identity of the stored weight tensor (the original of a parametrized weight); ties share it."""
    par = getattr(m, "parametrizations", {})
    return id(par["weight"].original) if "weight" in par else id(m.weight)


def op_list(model: nn.Module, input_size) -> list[dict]:
    """Trace ``model`` (eval mode, batch 1) into op records: kind, name, shapes, weight, folded BN.

    Every record of a parameter-holding op carries ``param_ids`` (the parameters it accounts for);
    a parameter no record accounts for raises ``ValueError`` naming its module and type.
    """
    if len(input_size) != 3 or min(input_size) < 1:
        raise ValueError(f"input_size must be (C, H, W) with positive entries, got {input_size}")
    was = model.training
    model.eval()
    try:
        graph = _Tracer().trace(model)
        gm = fx.GraphModule(model, graph)
    except Exception as e:
        model.train(was)
        raise ValueError(
            f"cannot trace {type(model).__name__} with torch.fx ({e}); MicroNet scoring needs an fx-traceable model"
        ) from e
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(torch.zeros(1, *input_size))
    finally:
        model.train(was)
    mods = dict(model.named_modules())
    quantizers = {id(f) for mod in _quantizer_modules()[1:] for f in vars(mod).values() if callable(f)}
    ops, by_node, seen = [], {}, set()

    def numel(node):
        tm = node.meta.get("tensor_meta")
        return int(torch.Size(tm.shape).numel()) if hasattr(tm, "shape") else 0

    def shape(node):
        tm = node.meta.get("tensor_meta")
        return tuple(tm.shape) if hasattr(tm, "shape") else ()

    def uncostable(name, m, why):
        raise ValueError(
            f"cannot cost module {name!r} of type {type(m).__name__}: {why}; MicroNet scoring "
            "costs Conv2d/Linear (and their subclasses or parametrizations) and BatchNorm"
        )

    for node in gm.graph.nodes:
        if node.op == "get_attr":
            owner = str(node.target).rpartition(".")[0]
            if isinstance(getattr(mods.get(owner), str(node.target).rpartition(".")[2], None), nn.Parameter):
                uncostable(owner, mods[owner], f"its forward uses its parameter {node.target!r} directly")
            continue
        if node.op not in ("call_module", "call_function", "call_method"):
            continue
        tgt = node.target
        m = mods[tgt] if node.op == "call_module" else None
        key = type(m) if m is not None else tgt
        rec = {"name": str(tgt) if m is not None else node.name, "out": numel(node), "shape": shape(node)}
        inp = node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None
        if m is not None and _is_weight_leaf(m):
            if not isinstance(m, (nn.Conv2d, nn.Linear)):
                uncostable(tgt, m, "a parametrized layer that is neither Conv2d nor Linear")
            w = _forward_weight(m)
            conv = isinstance(m, nn.Conv2d)
            dw = conv and m.groups > 1 and m.groups == m.in_channels
            rec.update(
                kind="dwconv" if dw else ("conv" if conv else "fc"),
                weight=w,
                c_out=w.shape[0],
                fan_in=w[0].numel(),
                bias=m.bias is not None,
                w_bits=_declared_bits(m, "w_bits"),
                a_bits=_declared_bits(m, "a_bits"),
                weight_id=_weight_id(m),
                params_numel={id(p): p.numel() for p in m.parameters()},
                extra_params=0
                if hasattr(m, "parametrizations")
                # a parametrization's own
                else sum(p.numel() for p in m.parameters())
                - m.weight.numel()  # parameters (centroids) are
                - (m.bias.numel() if m.bias is not None else 0),
            )  # part of the weight's storage format
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            bn_ids = {id(p): p.numel() for p in m.parameters()}
            prev = by_node.get(inp)
            if prev is not None and prev["kind"] in ("conv", "dwconv", "fc") and len(inp.users) == 1:
                prev["bias"] = True
                prev["bn_folded"] = True
                prev["params_numel"].update(bn_ids)
                continue
            rec.update(kind="bn", channels=m.num_features, params_numel=bn_ids)
        elif m is not None and any(True for _ in m.parameters()):
            uncostable(tgt, m, "it holds parameters")
        elif node.op == "call_function" and id(tgt) in quantizers:
            continue  # a fake-quantizer: a precision conversion, its bits are declared by the layer reading it
        elif key in _ACT_COST:
            rec.update(kind="act", cost=_ACT_COST[key])
        elif key in _ADDS or key in _MULS:
            tensors = [a for a in node.args if isinstance(a, fx.Node) and shape(a)]
            if not tensors:
                continue
            rec.update(kind="add" if key in _ADDS else "mul")
        elif key in _AVG or key in _MAX:
            rec.update(kind="avgpool" if key in _AVG else "maxpool", window=numel(inp) / max(rec["out"], 1))
        elif isinstance(m, _FREE_MODULES) or m is None:
            continue  # reshapes, dropout, getitem, size, cat ... cost nothing
        else:
            rec.update(kind="uncounted")
        ops.append(rec)
        by_node[node] = rec
    # every parameter accounted for exactly once: the first op holding it gets its count
    for rec in ops:
        own = {k: v for k, v in rec.get("params_numel", {}).items() if k not in seen}
        seen.update(own)
        rec["model_params"] = int(sum(own.values()))
    # parameters of a module marked ``micronet_skip`` (e.g. the path a CAMP static plan never runs) are not part
    # of the scored model when no traced op uses them
    skipped = {
        id(p)
        for m in model.modules()
        if getattr(m, "micronet_skip", False)
        for p in m.parameters()
        if id(p) not in seen
    }
    owner = {id(p): (n.rpartition(".")[0], n) for n, p in model.named_parameters() if id(p) not in skipped}
    missing = [owner[i] for i in owner if i not in seen]
    if missing:
        mod_name, p_name = missing[0]
        uncostable(
            mod_name,
            mods[mod_name],
            f"its parameter {p_name!r} is not used by any op the tracer can cost ({len(missing)} such parameter(s))",
        )
    return ops


# ----------------------------------------------------------------------------- counting
def count_op(
    op: dict,
    mode: str = "official",
    fp_bits: int = 16,
    add_bits: int = 32,
    act_bits=None,
    w_bits=None,
    sparse: bool = True,
    ternary: bool = False,
    tree: bool = True,
    cer: bool = True,
) -> dict:
    """Params / mults / adds (32-bit units) of one op record (formulas in the module docstring)."""
    a_bits = act_bits or fp_bits
    n, kind = op["out"], op["kind"]
    r = {
        "layer": op["name"],
        "kind": kind,
        "format": "",
        "params": 0.0,
        "mults": 0.0,
        "adds": 0.0,
        "model_params": op.get("model_params", 0),
    }
    if kind in ("conv", "dwconv", "fc"):
        w = op["weight"]
        N = w.numel()
        nnz = int(torch.count_nonzero(w)) if sparse or ternary else N
        v = op["fan_in"] * nnz / N  # mean non-zero products per output
        c_out = op["c_out"]
        positions = n / c_out
        bias_bits = c_out * fp_bits if op.get("bias") else 0
        if ternary and mode == "repo":
            cands = ternary_storage_bits(N, nnz, c_out, fp_bits)
            if not cer:  # the repo's ternary=True, cer=False: mask or two bitmasks only
                cands = {k: cands[k] for k in ("mask", "ternary1")}
            r["format"] = min(cands, key=cands.get)
            pbits = cands[r["format"]]
            add_cost = (tree_adder_bits(v, fp_bits) if tree else max(v - 1, 0) * add_bits) * n / 32
        elif ternary:
            r["format"] = "ternary(mask+sign)"  # a folded BN scale makes the 2 centroids per-channel
            pbits = (N if nnz < N else 0) + nnz + 2 * fp_bits * (c_out if op.get("bn_folded") else 1)
            add_cost = max(v - 1, 0) * n * add_bits / 32
        else:
            b = w_bits or fp_bits
            r["format"] = f"{b}bit" + ("+mask" if nnz < N else "")
            pbits = nnz * b + (N if nnz < N else 0)
            add_cost = max(v - 1, 0) * n * add_bits / 32
        if not op.get("store_weight", True):  # a tied weight, stored once by another layer at higher bits
            pbits, r["format"] = 0, r["format"] + " (tied, stored once)"
        pbits += op.get("extra_params", 0) * fp_bits  # e.g. a learned activation clip inside the layer
        mults = 2 * n if ternary else nnz * positions
        mul_bits = max(fp_bits, a_bits) if ternary else max(w_bits or fp_bits, a_bits)
        r.update(
            params=(pbits + bias_bits) / 32,
            mults=mults * mul_bits / 32,
            adds=add_cost + (n * add_bits / 32 if op.get("bias") else 0),
            sparsity=1 - nnz / N,
            weight_bits=1.0 if ternary else float(w_bits or fp_bits),
            act_bits=float(a_bits),
        )
    elif kind == "bn":
        c = op["channels"]
        if mode == "repo":
            r.update(params=c * fp_bits / 32, adds=n * add_bits / 32, format="shift")
        else:
            r.update(params=2 * c * fp_bits / 32, mults=n * a_bits / 32, adds=n * add_bits / 32, format="scale+shift")
    elif kind == "act":
        m, a = op["cost"]
        r.update(mults=m * n * a_bits / 32, adds=a * n * add_bits / 32)
    elif kind == "add":
        r.update(adds=n * add_bits / 32)
    elif kind == "mul":
        r.update(mults=n * a_bits / 32)
    elif kind == "avgpool":
        r.update(mults=n * a_bits / 32, adds=(op["window"] - 1) * n * add_bits / 32)
    elif kind == "maxpool":
        r.update(adds=(op["window"] - 1) * n * add_bits / 32)
    return r


def _is_quantized(bits) -> bool:
    return bits is not None and int(bits) < 16


EVAL_DTYPES = ("float32", "float16")


def score_model(
    model: nn.Module,
    input_size,
    weight_bits=None,
    sparse: bool = True,
    mode: str = "official",
    task: str = "imagenet",
    fp_bits: int = 16,
    act_bits=None,
    add_bits: int = 32,
    ternary="auto",
    tree: bool = True,
    cer: bool = True,
    eval_dtype: str = "float32",
    verbose: bool = True,
) -> dict:
    """MicroNet score of any fx-traceable model at batch 1.

    ``weight_bits``: int or {layer: bits} for non-ternary weights of plain layers (default
    ``fp_bits``); ``act_bits``: int or {layer: bits} for the input activation of weight layers
    (default ``fp_bits``); a quantized layer's own ``w_bits`` / ``a_bits`` (< 32) take precedence.
    ``sparse``: count only non-zero weights (+ 1-bit mask); ``ternary``: "auto" (layers without
    declared bits holding ≤ 2 non-zero values), an iterable of layer names, or None; ``tree`` /
    ``cer``: the repo's tree adder and extra storage formats for ternary layers (``mode="repo"``).
    ``eval_dtype``: the dtype the model's accuracy was measured in ("float32" or "float16").
    Official mode applies the rules' 16-bit condition: ``fp_bits`` < 32 is used only if no part of
    the model is quantized below 16 bits or ``eval_dtype == "float16"``; otherwise 32.
    Returns ``{"params", "mults", "adds", "ops", "score", "mode", "task", "fp_bits" (the bits
    used), "quantized", "eval_dtype", "model_params" (parameters costed), "table"}`` (32-bit units).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if eval_dtype not in EVAL_DTYPES:
        raise ValueError(f"eval_dtype must be one of {EVAL_DTYPES}, got {eval_dtype!r}")
    ref = check_task(task)
    for nm, b in (("fp_bits", fp_bits), ("add_bits", add_bits)):
        if not 1 <= int(b) <= 32:
            raise ValueError(f"{nm} must be in 1..32, got {b}")
    for nm, spec in (("weight_bits", weight_bits), ("act_bits", act_bits)):
        vals = spec.values() if isinstance(spec, dict) else [] if spec is None else [spec]
        if any(not 1 <= int(b) <= 32 for b in vals):
            raise ValueError(f"{nm} must be in 1..32, got {spec}")
    ops = op_list(model, input_size)
    weighted = [o for o in ops if o["kind"] in ("conv", "dwconv", "fc")]
    if ternary == "auto":
        tern = {o["name"] for o in weighted if o["w_bits"] is None and is_ternary(o["weight"])}
    else:
        tern = set(ternary or ())
        unknown = tern - {o["name"] for o in weighted}
        if unknown:
            raise ValueError(f"ternary layers not found in the model: {sorted(unknown)}")

    def given(spec, name):  # the caller's bits for one layer; None = not given (counted at fp bits)
        if spec is None or isinstance(spec, dict) and name not in spec:
            return None
        return bits_for(name, spec, 32)

    for o in weighted:  # bits a quantized layer declares first, then the caller's per-layer bits
        o["wb"] = o["w_bits"] if o["w_bits"] is not None else given(weight_bits, o["name"])
        o["ab"] = o["a_bits"] if o["a_bits"] is not None else given(act_bits, o["name"])
    scalar_act = None if isinstance(act_bits, dict) else act_bits
    quantized = (
        bool(tern)
        or _is_quantized(scalar_act)
        or any(_is_quantized(o["wb"]) or _is_quantized(o["ab"]) for o in weighted)
    )
    fp_used = int(fp_bits)
    if mode == "official" and quantized and fp_used < 32 and eval_dtype != "float16":
        fp_used = 32  # rules: no 16-bit freebie once any part is quantized, unless evaluated in FP16
    # a weight tied between layers is stored once, by its user with the most bits
    holder = {}
    for o in weighted:
        b = 1 if o["name"] in tern else (o["wb"] or fp_used)
        if o["weight_id"] not in holder or b > holder[o["weight_id"]][0]:
            holder[o["weight_id"]] = (b, o["name"])
    for o in weighted:
        o["store_weight"] = holder[o["weight_id"]][1] == o["name"]
    rows = [
        count_op(
            o,
            mode,
            fp_used,
            add_bits,
            o.get("ab") if o["kind"] in ("conv", "dwconv", "fc") else scalar_act,
            o.get("wb"),
            sparse,
            o["name"] in tern,
            tree,
            cer,
        )
        for o in ops
    ]
    table = pd.DataFrame(rows)
    params, mults, adds = (float(table[c].sum()) for c in ("params", "mults", "adds"))
    out = {
        "params": params,
        "mults": mults,
        "adds": adds,
        "ops": mults + adds,
        "mode": mode,
        "task": task,
        "score": params / ref["params"] + (mults + adds) / ref["ops"],
        "fp_bits": fp_used,
        "quantized": quantized,
        "eval_dtype": eval_dtype,
        "model_params": int(table.model_params.sum()),
        "table": table,
    }
    if verbose:
        print(
            f"[{mode}] params {params / 1e6:.4f} M | mults {mults / 1e6:.3f} M | adds {adds / 1e6:.3f} M"
            f" | score {out['score']:.5f} (vs {ref['model']}: {ref['params'] / 1e6:.1f} M, "
            f"{ref['ops'] / 1e6:.0f} M ops) | non-quantized values at {fp_used} bits"
        )
    return out
