"""Methods run on the leaderboard's common base model (stage 09), where their own stage trains another model.

The dense base (``train.pretrain_dense``), layer-wise magnitude pruning + masked fine-tune (Han et al. 2015,
the baseline every paper starts from), EC2T ternarization of every layer (stage 05 ternarizes MicroNets) and
EdgeCompress's two-model cascade (stage 07 runs on cluttered canvases). Every training is cached by its
fingerprint, so a re-run of stage 09 trains nothing.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from .. import cost


def upstream_dense(art, model_name: str, dataset: str, subset: int, seed: int, stages=None) -> tuple | None:
    """An upstream stage's dense model of ``seed`` when it trained the same model on the same data, else None.

    Looks for the manifest row ``dense_seed<seed>`` (``model`` == ``model_name``, ``dataset``, ``subset``) in the
    ``models.json`` of the finished ``stages`` (default: all); stage 04 publishes its dense LeNet-5s this way, and
    the leaderboard then reuses that base instead of training one. Returns (model in eval mode, "stage/checkpoint")."""
    from ..manifest import finished
    from ..rebuild import load_row_model
    from ..results import read_json

    from pathlib import Path

    art = Path(art)
    for stage in stages or sorted(p.name for p in art.iterdir() if p.is_dir()):
        path = art / stage / "models.json"
        if not (finished(art, stage) and path.is_file()):
            continue
        row = read_json(path).get(f"dense_seed{seed}")
        if (
            isinstance(row, dict)
            and row.get("model") == model_name
            and row.get("dataset") == dataset
            and int(row.get("subset") or 0) == int(subset or 0)
        ):
            return load_row_model(row, art / stage), f"{stage}/{row['checkpoint']}"
    return None


def train_base(
    model_name: str, loaders, epochs: int, seed: int, lr: float = 1e-3, *, cache_dir, device: str = "cpu"
) -> nn.Module:
    """Dense base model (Adam, cosine decay): ``train.pretrain_dense``, cached in ``cache_dir`` by the
    fit fingerprint (a finished matching run is reused, a partial one resumed)."""
    from ..train import pretrain_dense

    net, _ = pretrain_dense(
        model_name,
        dict(num_classes=loaders.num_classes, in_channels=loaders.in_channels),
        loaders,
        epochs=epochs,
        seed=seed,
        lr=lr,
        cache_dir=cache_dir,
        device=device,
        name=f"base-{model_name}-seed{seed}",
    )
    return net.eval()


def run_magnitude(
    dense: nn.Module, loaders, sparsities, finetune_epochs: int, seed: int, lr: float = 1e-4, cache_dir=None
):
    """Baseline: layer-wise magnitude pruning (Han et al. 2015) + masked fine-tune, per sparsity.
    Yields (sparsity, model, test accuracy). With ``cache_dir`` every fine-tune is a ``train.cached_fit``
    (fingerprint: pruned weights, masks, optimizer, data, seed, epochs)."""
    import copy

    from ..prune import MaskCallback, magnitude_prune_
    from ..train import cached_fit, evaluate, fit

    for s in sparsities:
        if not 0 < s < 1:
            raise ValueError(f"sparsity must be in (0, 1), got {s}")
        m = copy.deepcopy(dense)
        masks = magnitude_prune_(m, s)
        if finetune_epochs > 0:
            kw = dict(callbacks=[MaskCallback(masks)], seed=seed, progress=False)
            opt = torch.optim.Adam(m.parameters(), lr=lr)
            if cache_dir is not None:
                cached_fit(
                    m, loaders, finetune_epochs, opt, cache_dir=cache_dir, name=f"magnitude{s:g}-seed{seed}", **kw
                )
            else:
                fit(m, loaders, finetune_epochs, opt, **kw)
        yield s, m.eval(), evaluate(m, loaders.test)["accuracy"]


def run_ec2t_base(
    dense: nn.Module, loaders, gammas, epochs: int, retrain_epochs: int, seed: int, pattern: str = "", cache_dir=None
):
    """EC2T on the base model (stage 05 trains MicroNets, not the base): yields (gamma, model, accuracy).
    ``pattern`` selects the ternarized layers by name ("" = every Conv2d/Linear). With ``cache_dir``
    each finished ternary model is kept there under a hash of (dense weights digest, data
    fingerprint, gamma, epochs, retrain_epochs, seed, pattern) and reused instead of retrained."""
    import copy
    from pathlib import Path

    from .ec2t import train_ec2t
    from ..results import param_hash
    from ..train import load_checkpoint, load_weights, loader_fingerprint, save_checkpoint, state_digest

    for g in gammas:
        ck = None
        if cache_dir is not None:
            key = {
                "dense": state_digest(dense.state_dict()),
                "gamma": float(g),
                "epochs": epochs,
                "retrain_epochs": retrain_epochs,
                "seed": seed,
                "pattern": pattern,
                "data": {k: loader_fingerprint(getattr(loaders, k, None)) for k in ("train", "val", "test")},
            }
            ck = Path(cache_dir) / f"ec2t{float(g):g}-seed{seed}-{param_hash(key)}.pt"
            if ck.is_file():
                st = load_checkpoint(ck)
                m = load_weights(copy.deepcopy(dense), st, source=ck)
                print(f"[ec2t] reused {ck.name}")
                yield g, m.eval(), float(st["test_accuracy"])
                continue
        r = train_ec2t(
            dense,
            loaders,
            method="ec2t",
            gamma=float(g),
            epochs=epochs,
            retrain_epochs=retrain_epochs,
            seed=seed,
            progress=False,
            pattern=pattern,
        )
        if ck is not None:
            save_checkpoint(ck, model=r["model"].state_dict(), test_accuracy=float(r["test_accuracy"]))
        yield g, r["model"].eval(), r["test_accuracy"]


def run_cascade_base(
    dense: nn.Module,
    loaders,
    input_size,
    small_widths,
    small_res: int,
    epochs: int,
    seed: int,
    model_name: str = "lenet5_caffe",
    alpha: float = 1.6,
    tol: float = 0.005,
    cache_dir=None,
):
    """EdgeCompress's cascade on the base model: a width- and resolution-shrunk copy answers the confident
    images (softmax margin >= hi), the dense base the rest (logits summed, z_s + alpha*z_l). The threshold
    is the cheapest swept one within ``tol`` of the dense accuracy (else 0.2, the paper's). With
    ``cache_dir`` the small model's training is a ``train.cached_fit`` (reused when its fingerprint matches).
    Returns (Candidate fields: model, accuracy, exec_weight, threshold, escalated)."""
    from . import cascade
    from .cascade import CascadeCost, Resized
    from ..models import create_model
    from ..train import cached_fit, fit, predict_logits, set_seed

    set_seed(seed)  # the small model's initial weights depend on the seed only, not on what ran before
    small = Resized(
        create_model(
            model_name,
            num_classes=loaders.num_classes,
            in_channels=loaders.in_channels,
            image_size=int(small_res),
            widths=tuple(int(w) for w in small_widths),
        ),
        small_res,
    )
    opt = torch.optim.Adam(small.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs))
    if cache_dir is not None:
        cached_fit(
            small,
            loaders,
            epochs,
            opt,
            scheduler=sched,
            seed=seed,
            progress=False,
            cache_dir=cache_dir,
            name=f"cascade-small-seed{seed}",
        )
    else:
        fit(small, loaders, epochs, opt, sched, seed=seed, progress=False)
    (zs, y), (zl, _) = predict_logits(small.eval(), loaders.test), predict_logits(dense.eval(), loaders.test)
    macs = [cost.total_macs(small, tuple(input_size)), cost.total_macs(dense, tuple(input_size))]
    table = cascade.sweep([zs, zl], macs, np.linspace(0, 1, 51), y, alpha=alpha)
    large_acc = float((zl.argmax(1) == y).double().mean())
    pick = cascade.cheapest_at_accuracy(table, large_acc, tol)
    if pick is None:
        pick = table.iloc[(table.threshold - 0.2).abs().argmin()]
    casc = CascadeCost(small, dense)
    names = [n for n, m in casc.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and n.startswith("large.")]
    return {
        "model": casc.eval(),
        "accuracy": float(pick.accuracy),
        "exec_weight": {n: float(pick.escalated) for n in names},
        "threshold": float(pick.threshold),
        "escalated": float(pick.escalated),
    }
