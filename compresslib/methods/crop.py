"""EdgeCompress dynamic image cropping (DIC): pseudo-boxes, box predictor, square + snap, crop + resize.

Kong et al., TCAD 2023 / Smart Scissor, ICCAD 2022 (repo ``core/cam.py``, ``core/crop.py``):
1. Grad-CAM of a classifier trained on full images (last stage, ground-truth class):
   alpha_c = mean_ij dy_c/dA_ij,  CAM = ReLU(sum_c alpha_c A_c), min-max normalised to [0, 1];
   pseudo-box = tight box of {CAM >= min + split * (max - min)}, split = CROP.CAM_SPLIT = 0.5.
2. A light box predictor regresses the normalised boxes with a weighted MSE, weights [1, 1, 1.25, 1.25].
3. Post-processing in integer pixels: square (grow the short side about the centre, shift inside),
   then snap the side up to the first of BOX_SIZES that holds it (keep the centre, clamp).
4. Crop and resize the crop to the classifier resolution (bilinear, area-averaged for down-scaling).
Boxes are (x0, y0, x1, y1) with x1, y1 exclusive, in pixels of the input canvas.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..train import Callback

BOX_WEIGHTS = (1.0, 1.0, 1.25, 1.25)


def _check_images(x) -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.ndim != 4 or x.shape[0] == 0:
        raise ValueError(f"images must be a non-empty (N, C, H, W) tensor, got shape {tuple(x.shape)}")
    return x


def resolve_device(device: str = "cpu") -> torch.device:
    """``cpu`` or ``cuda[:k]`` as a torch.device; clear error if CUDA is asked for but absent."""
    try:
        dev = torch.device(str(device))
    except RuntimeError as e:
        raise ValueError(f"DEVICE must be 'cpu' or 'cuda[:k]', got {device!r}") from e
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"DEVICE must be 'cpu' or 'cuda[:k]', got {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"DEVICE={device!r} requested but torch.cuda.is_available() is False; use DEVICE='cpu'")
    return dev


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _check_boxes(boxes, n: int, size: int | None = None) -> torch.Tensor:
    b = torch.as_tensor(boxes)
    if b.shape != (n, 4):
        raise ValueError(f"boxes must be ({n}, 4) as (x0, y0, x1, y1), got {tuple(b.shape)}")
    if bool(((b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1])).any()):
        raise ValueError("every box needs x1 > x0 and y1 > y0")
    if size is not None and bool(((b < 0) | (b > size)).any()):
        raise ValueError(f"boxes must lie inside the {size}x{size} image")
    return b


def _cached_ckpt(cache_dir, name: str, key: dict):
    """``cache_dir/<name>-<hash of key>.pt`` (the key is everything that determines the trained weights)."""
    from pathlib import Path

    from ..results import param_hash

    if not str(name).replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise ValueError(f"cache name must be alphanumeric (with - _ .), got {name!r}")
    return Path(cache_dir) / f"{name}-{param_hash(key)}.pt"


def gradcam(
    model: nn.Module, x, targets, layer: nn.Module | None = None, input_size: int | None = None, batch_size: int = 256
) -> torch.Tensor:
    """Grad-CAM maps (N, H, W) in [0, 1] for the ``targets`` classes at the resolution of ``x``.

    ``layer`` defaults to ``model.features`` (the last stage); ``input_size`` resizes the images to the
    classifier's resolution first (the map is up-sampled back to the canvas)."""
    x = _check_images(x)
    y = torch.as_tensor(targets).long()
    if y.shape != (len(x),):
        raise ValueError(f"targets must be ({len(x)},), got {tuple(y.shape)}")
    layer = layer if layer is not None else getattr(model, "features", None)
    if layer is None:
        raise ValueError("pass the Grad-CAM target layer (the model has no .features)")
    dev = _device_of(model)
    store = {}
    h = layer.register_forward_hook(lambda m, i, o: store.__setitem__("a", o))
    was = model.training
    model.eval()
    maps = []
    try:
        for i in range(0, len(x), batch_size):
            xb, yb = x[i : i + batch_size].to(dev), y[i : i + batch_size].to(dev)
            if input_size is not None and xb.shape[-1] != input_size:
                xb = F.interpolate(
                    xb, size=(input_size, input_size), mode="bilinear", antialias=True, align_corners=False
                )
            logits = model(xb)
            a = store["a"]
            grad = torch.autograd.grad(logits.gather(1, yb[:, None]).sum(), a)[0]
            cam = F.relu((grad.mean((2, 3), keepdim=True) * a).sum(1, keepdim=True)).detach()
            cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
            lo = cam.flatten(1).min(1).values[:, None, None]
            hi = cam.flatten(1).max(1).values[:, None, None]
            maps.append(((cam - lo) / (hi - lo).clamp_min(1e-12)).cpu())
    finally:
        h.remove()
        model.train(was)
    return torch.cat(maps)


def cam_boxes(cam, split: float = 0.5) -> torch.Tensor:
    """Tight pixel box of {CAM >= min + split * (max - min)} for every map (N, H, W) -> (N, 4) float."""
    if not 0.0 <= split < 1.0:
        raise ValueError(f"CAM split must be in [0, 1), got {split}")
    cam = torch.as_tensor(cam)
    if cam.ndim != 3:
        raise ValueError(f"CAM maps must be (N, H, W), got {tuple(cam.shape)}")
    lo = cam.flatten(1).min(1).values[:, None, None]
    hi = cam.flatten(1).max(1).values[:, None, None]
    on = cam >= lo + split * (hi - lo)
    rows, cols = on.any(2), on.any(1)
    ar_h, ar_w = torch.arange(cam.shape[1]), torch.arange(cam.shape[2])
    y0 = torch.where(rows, ar_h, cam.shape[1]).min(1).values
    y1 = torch.where(rows, ar_h, -1).max(1).values + 1
    x0 = torch.where(cols, ar_w, cam.shape[2]).min(1).values
    x1 = torch.where(cols, ar_w, -1).max(1).values + 1
    return torch.stack([x0, y0, x1, y1], 1).float()


def box_iou(a, b) -> torch.Tensor:
    """Element-wise IoU of two (N, 4) box sets."""
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    iw = (torch.minimum(a[:, 2], b[:, 2]) - torch.maximum(a[:, 0], b[:, 0])).clamp_min(0)
    ih = (torch.minimum(a[:, 3], b[:, 3]) - torch.maximum(a[:, 1], b[:, 1])).clamp_min(0)
    inter = iw * ih
    area = lambda t: (t[:, 2] - t[:, 0]) * (t[:, 3] - t[:, 1])  # noqa: E731
    return inter / (area(a) + area(b) - inter).clamp_min(1e-12)


def box_coverage(boxes, true_boxes) -> torch.Tensor:
    """Fraction of each true box's area that lies inside the corresponding box (N,)."""
    a, t = torch.as_tensor(boxes).double(), torch.as_tensor(true_boxes).double()
    inter = (torch.minimum(a[:, 2:], t[:, 2:]) - torch.maximum(a[:, :2], t[:, :2])).clamp_min(0).prod(1)
    return inter / (t[:, 2:] - t[:, :2]).prod(1).clamp_min(1e-12)


def expand_boxes(boxes, factor: float, size: int) -> torch.Tensor:
    """Grow every box about its centre by ``factor`` (>= 1) per side length, clipped to the image
    (float pixels). CAM regions above a threshold cover the most discriminative part of the object,
    not all of it; growing them before square + snap keeps the whole digit inside the crop."""
    if not 1.0 <= float(factor) <= 4.0:
        raise ValueError(f"box growth factor must be in [1, 4], got {factor}")
    b = torch.as_tensor(boxes).double()
    c, half = (b[:, :2] + b[:, 2:]) / 2, (b[:, 2:] - b[:, :2]) * float(factor) / 2
    return torch.cat([(c - half).clamp(0, size), (c + half).clamp(0, size)], 1)


def _place(centre: torch.Tensor, side: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer interval of length ``side`` about ``centre``, shifted to lie inside [0, size)."""
    side = side.clamp(1, size)
    start = torch.round(centre - side / 2.0).long()
    start = torch.minimum(start.clamp_min(0), size - side.long())
    return start, start + side.long()


def square_boxes(boxes, size: int) -> torch.Tensor:
    """SHAPE='square': grow the shorter side symmetrically to the longer one, shift inside the image."""
    b = torch.as_tensor(boxes).double()
    side = torch.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]).ceil()
    x0, x1 = _place((b[:, 0] + b[:, 2]) / 2, side, size)
    y0, y1 = _place((b[:, 1] + b[:, 3]) / 2, side, size)
    return torch.stack([x0, y0, x1, y1], 1)


def regulate_boxes(boxes, box_sizes, size: int) -> torch.Tensor:
    """REGULATE=True: snap each (square) box's side up to the first of ``box_sizes`` >= its longer
    side (the largest if none), keep the centre, clamp inside the image."""
    sizes = sorted(int(s) for s in box_sizes)
    if not sizes or sizes[0] < 1 or sizes[-1] > size:
        raise ValueError(f"box sizes must be in [1, {size}], got {box_sizes}")
    b = torch.as_tensor(boxes).double()
    longer = torch.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
    table = torch.tensor(sizes, dtype=torch.float64)
    idx = torch.searchsorted(table, longer.contiguous()).clamp_max(len(sizes) - 1)
    side = table[idx]
    x0, x1 = _place((b[:, 0] + b[:, 2]) / 2, side, size)
    y0, y1 = _place((b[:, 1] + b[:, 3]) / 2, side, size)
    return torch.stack([x0, y0, x1, y1], 1)


def postprocess(pred, size: int, box_sizes=None, square: bool = True) -> torch.Tensor:
    """Normalised predictions (N, 4) -> integer pixel boxes: round(e * size), fix degenerate boxes,
    square, then snap to ``box_sizes`` (skip with None)."""
    p = torch.as_tensor(pred).double().clamp(0, 1) * size
    b = torch.round(p)
    x0, x1 = torch.minimum(b[:, 0], b[:, 2]), torch.maximum(b[:, 0], b[:, 2])
    y0, y1 = torch.minimum(b[:, 1], b[:, 3]), torch.maximum(b[:, 1], b[:, 3])
    b = torch.stack([x0, y0, torch.maximum(x1, x0 + 1), torch.maximum(y1, y0 + 1)], 1)
    b = b.clamp(0, size)
    b[:, :2] = torch.minimum(b[:, :2], b[:, 2:] - 1)
    if square:
        b = square_boxes(b, size)
    if box_sizes is not None:
        b = regulate_boxes(b, box_sizes, size)
    return b.long()


def crop_resize(x, boxes, out_size: int) -> torch.Tensor:
    """Crop every image to its pixel box and resize to ``out_size`` x ``out_size`` (bilinear samples
    averaged over each output cell, i.e. anti-aliased down-scaling; exact copy at equal size)."""
    from torchvision.ops import roi_align

    x = _check_images(x)
    b = _check_boxes(boxes, len(x)).to(x.dtype)
    if out_size < 1:
        raise ValueError(f"out_size must be >= 1, got {out_size}")
    rois = torch.cat([torch.arange(len(x), dtype=x.dtype)[:, None], b], 1)
    return roi_align(x, rois, output_size=(out_size, out_size), spatial_scale=1.0, sampling_ratio=-1, aligned=True)


def weighted_mse(pred, target, weights=BOX_WEIGHTS) -> torch.Tensor:
    """Repo's WeightedMSELoss: mean over images of sum_j w_j (pred_j - target_j)^2 / 4."""
    w = torch.as_tensor(weights, dtype=pred.dtype)
    return ((pred - target) ** 2 * w).mean()


def _shift_with_boxes(x: torch.Tensor, target: torch.Tensor, shift: int, gen: torch.Generator):
    """Translate canvases by integer offsets in [-shift, shift]^2 (background fill) and move their
    normalised boxes with them (clipped to the canvas)."""
    n, _, h, w = x.shape
    fill = float(x.min())
    pad = F.pad(x, (shift, shift, shift, shift), value=fill)
    off = torch.randint(-shift, shift + 1, (n, 2), generator=gen)
    out = torch.stack(
        [pad[i, :, shift - dy : shift - dy + h, shift - dx : shift - dx + w] for i, (dx, dy) in enumerate(off.tolist())]
    )
    d = torch.stack([off[:, 0] / w, off[:, 1] / h, off[:, 0] / w, off[:, 1] / h], 1).to(target.dtype)
    return out, (target + d.to(target.device)).clamp(0, 1)


def train_box_predictor(
    predictor: nn.Module,
    x,
    boxes,
    size: int,
    epochs: int = 20,
    lr: float = 2e-3,
    batch_size: int = 64,
    seed: int = 0,
    weight_decay: float = 1e-4,
    x_val=None,
    boxes_val=None,
    progress: bool = True,
    shift: int = 0,
    device="cpu",
    cache_dir=None,
    name: str = "box_predictor",
) -> list[dict]:
    """Regress pixel ``boxes`` (normalised by ``size``) with the weighted MSE; AdamW + cosine LR.
    ``shift`` > 0 translates every training canvas and its box by up to +-shift pixels (seeded).
    Returns per-epoch ``{"epoch", "loss", "val_miou"}`` (raw, un-postprocessed boxes).

    ``cache_dir``: the trained weights + history are kept in ``cache_dir/<name>-<key>.pt``, the key
    hashing everything that determines them (initial weights, images, boxes, validation data, every
    hyper-parameter, device type); a matching file is loaded instead of training (printed)."""
    x = _check_images(x)
    target = _check_boxes(boxes, len(x), size).float() / size
    if epochs < 1 or batch_size < 1 or shift < 0:
        raise ValueError("epochs and batch_size must be >= 1 and shift >= 0")
    from tqdm.auto import tqdm

    dev = resolve_device(device)
    ckpt = None
    if cache_dir is not None:
        from ..train import load_checkpoint, state_digest, tensor_digest

        ckpt = _cached_ckpt(
            cache_dir,
            name,
            {
                "kind": "box_predictor",
                "arch": type(predictor).__name__,
                "init": state_digest(predictor.state_dict()),
                "data": [tensor_digest(x), tensor_digest(target)],
                "size": int(size),
                "val": None
                if x_val is None
                else [tensor_digest(torch.as_tensor(x_val)), tensor_digest(torch.as_tensor(boxes_val))],
                "epochs": int(epochs),
                "lr": float(lr),
                "batch_size": int(batch_size),
                "seed": int(seed),
                "weight_decay": float(weight_decay),
                "shift": int(shift),
                "device": dev.type,
            },
        )
        if ckpt.is_file():
            ck = load_checkpoint(ckpt)
            predictor.load_state_dict(ck["model"])
            predictor.to(dev)
            print(f"[cache] reused {ckpt.name} (box predictor, {epochs} epochs)")
            predictor.cache_path = str(ckpt)
            return list(ck["history"])
    predictor.to(dev)
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(predictor.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    history = []
    for ep in tqdm(range(epochs), desc="box predictor", disable=not progress):
        predictor.train()
        perm, total = torch.randperm(len(x), generator=g), 0.0
        for i in range(0, len(x), batch_size):
            idx = perm[i : i + batch_size]
            xb, tb = x[idx], target[idx]
            if shift:
                xb, tb = _shift_with_boxes(xb, tb, shift, g)
            loss = weighted_mse(predictor(xb.to(dev)), tb.to(dev))
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        sched.step()
        row = {"epoch": ep + 1, "loss": total / len(x), "val_miou": float("nan")}
        if x_val is not None:
            pv = predict_boxes(predictor, x_val) * size
            row["val_miou"] = float(box_iou(pv, boxes_val).mean())
        history.append(row)
    if ckpt is not None:
        from ..train import save_checkpoint

        save_checkpoint(ckpt, model={k: v.cpu() for k, v in predictor.state_dict().items()}, history=history)
        predictor.cache_path = str(ckpt)
    return history


@torch.no_grad()
def predict_boxes(predictor: nn.Module, x, batch_size: int = 500) -> torch.Tensor:
    """Raw normalised box predictions (N, 4) in [0, 1]."""
    x = _check_images(x)
    predictor.eval()
    dev = _device_of(predictor)
    return torch.cat([predictor(x[i : i + batch_size].to(dev)).cpu() for i in range(0, len(x), batch_size)]).double()


class ForegroundCropper:
    """Box predictor + post-processing; ``boxes(x)`` gives integer pixel boxes, ``macs`` its cost."""

    def __init__(
        self,
        predictor: nn.Module,
        image_size: int,
        box_sizes=(16, 32, 48, 64),
        square: bool = True,
        in_channels: int = 1,
    ):
        self.predictor, self.size, self.square = predictor, int(image_size), square
        self.box_sizes = None if box_sizes is None else tuple(int(s) for s in box_sizes)
        if self.box_sizes is not None:
            regulate_boxes(torch.tensor([[0, 0, 1, 1]]), self.box_sizes, self.size)  # validates sizes
        from ..cost import total_macs

        self.macs = int(total_macs(predictor, (in_channels, self.size, self.size)))

    def boxes(self, x) -> torch.Tensor:
        x = _check_images(x)
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            raise ValueError(f"cropper expects {self.size}x{self.size} canvases, got {tuple(x.shape[-2:])}")
        return postprocess(predict_boxes(self.predictor, x), self.size, self.box_sizes, self.square)

    def crops(self, x, out_size: int) -> torch.Tensor:
        return crop_resize(x, self.boxes(x), out_size)


def box_size_histogram(boxes, box_sizes) -> dict:
    """How many boxes snapped to each size (diagnostic table)."""
    side = (torch.as_tensor(boxes)[:, 2] - torch.as_tensor(boxes)[:, 0]).numpy()
    return {int(s): int(np.sum(side == s)) for s in box_sizes}


# ---- training the classifiers on (cropped or resized) inputs: the repo's "tune" step ----------


def _random_shift(x: torch.Tensor, shift: int, gen: torch.Generator) -> torch.Tensor:
    """Translate every image by an integer offset in [-shift, shift]^2 (edge-replicated border)."""
    n, _, h, w = x.shape
    pad = F.pad(x, (shift, shift, shift, shift), mode="replicate")
    off = torch.randint(0, 2 * shift + 1, (n, 2), generator=gen)
    return torch.stack([pad[i, :, oy : oy + h, ox : ox + w] for i, (oy, ox) in enumerate(off.tolist())])


class RandomShift(Callback):
    """``fit`` callback: random +-``shift`` pixel translation of every training batch (seeded)."""

    def __init__(self, shift: int = 2, seed: int = 0):
        if shift < 0:
            raise ValueError(f"shift must be >= 0, got {shift}")
        self.shift, self.gen = int(shift), torch.Generator().manual_seed(seed)

    def on_batch_start(self, s):
        if self.shift:
            s.inputs = _random_shift(s.inputs, self.shift, self.gen)

    def state_dict(self):
        return {"gen": self.gen.get_state()}

    def load_state_dict(self, d):
        self.gen.set_state(d["gen"])


def train_classifier(
    model: nn.Module,
    x,
    y,
    x_val=None,
    y_val=None,
    epochs: int = 15,
    lr: float = 0.1,
    batch_size: int = 64,
    seed: int = 0,
    shift: int = 2,
    weight_decay: float = 5e-4,
    label_smoothing: float = 0.1,
    progress: bool = True,
    device="cpu",
    cache_dir=None,
    name: str = "classifier",
) -> dict:
    """SGD-Nesterov (m 0.9) + cosine LR + label smoothing on tensors (x, y), via ``train.fit``.

    ``cache_dir``: ``train.cached_fit`` -- checkpoint ``cache_dir/<name>-<fingerprint>.ckpt`` (initial
    weights, training/validation tensors, optimizer/scheduler/callback settings, seed, epochs); a
    finished matching one is loaded without training (``"reused": True``), a partial one resumed."""
    from torch.utils.data import DataLoader, TensorDataset

    from ..train import Splits, cached_fit, fit, set_seed

    x = _check_images(x)
    if len(torch.as_tensor(y)) != len(x):
        raise ValueError("one label per training image required")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got epochs={epochs}, batch_size={batch_size}")
    dev = resolve_device(device)
    set_seed(seed)
    g = torch.Generator().manual_seed(seed)
    train_l = DataLoader(TensorDataset(x, torch.as_tensor(y).long()), batch_size=batch_size, shuffle=True, generator=g)
    val_l = None if x_val is None else DataLoader(TensorDataset(x_val, torch.as_tensor(y_val).long()), batch_size=500)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(epochs, 1))
    loaders = Splits(train_l, val_l)
    kw = dict(
        scheduler=sched,
        callbacks=[RandomShift(shift, seed)],
        seed=seed,
        progress=progress,
        device=str(dev),
        loss_fn=nn.CrossEntropyLoss(label_smoothing=label_smoothing),
    )
    if cache_dir is None:
        return fit(model, loaders, epochs, opt, **kw)
    # CrossEntropyLoss's repr does not show label_smoothing: state it in the fingerprint
    return cached_fit(
        model,
        loaders,
        epochs,
        opt,
        cache_dir=cache_dir,
        name=name,
        fingerprint={"label_smoothing": float(label_smoothing)},
        **kw,
    )


# ---- stage 07's data and its cached Grad-CAM: what the EdgeCompress pipeline (edgecompress.run) reads ----------


def load_image_splits(
    dataset: str,
    root=None,
    image_size: int = 0,
    source: str = "mnist5k",
    subset: int = 0,
    test_subset: int = 0,
    seed: int = 0,
    cache_dir=None,
):
    """``train.Splits`` of in-memory image sets (``x`` (N, C, S, S) normalised, ``y``, ``boxes`` or None, ``source``).

    ``cluttered_digits``: the 64-px canvases of ``source`` digits with their true boxes (built once, kept in
    ``cache_dir``); any other registered classification set: ``data.load_images`` at ``image_size`` (0: native;
    ``subset`` / ``test_subset`` class-balanced caps), no boxes. Validation = a stratified 10 % of train (fixed
    seed 1235); ``subset`` > 0 also caps the remaining training images (seeded by ``seed``)."""
    from .. import cluttered, data
    from ..checks import check_number
    from ..train import Splits

    info = data.dataset_info(dataset)  # clear error listing the registered datasets
    for name, v in (("image_size", image_size), ("subset", subset), ("test_subset", test_subset)):
        check_number(name, v, 0, integer=True)
    if info.get("task", "classification") != "classification":
        raise ValueError(f"DATASET must be a classification set, got {dataset!r} ({info.get('task')})")
    boxed = dataset == "cluttered_digits"
    if boxed and image_size not in (0, 64):
        raise ValueError("cluttered_digits canvases are 64 px: leave IMAGE_SIZE at 0")
    canvas = 64 if boxed else int(image_size or info["image_size"])
    if boxed:
        tr_all, te = (cluttered.load_cluttered(k, source, cache_dir=cache_dir) for k in ("train", "test"))
    else:
        tr_all = data.load_images(dataset, "train", root or None, canvas, limit=subset, seed=seed)
        te = data.load_images(dataset, "test", root or None, canvas, limit=test_subset, seed=seed)
    tr_idx, va_idx = data.stratified_split(tr_all.y.numpy(), 0.1, seed=1235)
    if subset and subset < len(tr_idx):
        tr_idx = tr_idx[np.sort(np.random.default_rng(seed).permutation(len(tr_idx))[:subset])]

    def sel(d, i):
        i = torch.as_tensor(i)
        return cluttered.ClutteredSplit(d.x[i], d.y[i], None if d.boxes is None else d.boxes[i], d.source[i])

    tr, va = sel(tr_all, tr_idx), sel(tr_all, va_idx)
    want = (int(info["in_channels"]), canvas, canvas)
    if tuple(tr.x.shape[1:]) != want:
        raise ValueError(f"{dataset}: expected {want[0]}x{canvas}x{canvas} images, got {tuple(tr.x.shape[1:])}")
    return Splits(tr, va, te)


def cam_layer(model: nn.Module, layer: str) -> nn.Module:
    """Grad-CAM target of a shrinkable ResNet: "last" = ``model.features`` (the repo's layer4), "penultimate" =
    ``model.stages[-1]`` (a finer map)."""
    if layer not in CAM_LAYERS:
        raise ValueError(f"Grad-CAM layer must be one of {CAM_LAYERS}, got {layer!r}")
    return model.features if layer == "last" else model.stages[-1]


CAM_LAYERS = ("last", "penultimate")


def cached_gradcam(model: nn.Module, x, y, layer: str, input_size: int, cache_dir=None) -> torch.Tensor:
    """:func:`gradcam` of ``model`` at :func:`cam_layer` ``layer``, kept in ``cache_dir/gradcam-<key>.pt`` keyed by
    the model's weights, the images, the labels, the layer and the resolution (a re-run over the same artifacts
    loads the maps instead of a forward + backward pass per image)."""
    from ..train import state_digest, tensor_digest

    path = None
    if cache_dir is not None:
        key = {
            "net": state_digest(model.state_dict()),
            "r": int(input_size),
            "x": tensor_digest(x),
            "y": tensor_digest(y),
            "layer": layer,
        }
        path = _cached_ckpt(cache_dir, "gradcam", key)
        if path.is_file():
            return torch.load(path, weights_only=True)
    maps = gradcam(model, x, y, layer=cam_layer(model, layer), input_size=input_size)
    if path is not None:
        tmp = path.with_name(path.name + ".tmp")
        torch.save(maps, tmp)
        tmp.replace(path)
    return maps


def snap_boxes(boxes, size: int, box_sizes) -> torch.Tensor:
    """Square (:func:`square_boxes`) then snap up to ``box_sizes`` (:func:`regulate_boxes`): the cropper's
    post-processing applied to pseudo- or true boxes."""
    return regulate_boxes(square_boxes(boxes, size), box_sizes, size)
