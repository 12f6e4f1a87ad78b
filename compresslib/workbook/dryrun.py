"""``python -m compresslib.workbook.reproduce --dry-run``: check a profile's names, ranges, device, data and
models (each built with its cost table) without training anything."""

from __future__ import annotations

import sys
from pathlib import Path

from .stage_params import check_devices, check_profile, close_names, notebook_parameters, stage_parameters


def _build_model(spec: dict, info: dict | None, image_size: int | None):
    """A model (registry name, or ``torchvision:<builder>``, ``torchvision:ResNet`` with ``layers``)
    and its (C, H, W) input from a dry-run spec."""
    from ..models import create_model, model_input_size

    name, kw = spec["name"], dict(spec.get("kwargs") or {})
    if info is not None:
        kw.setdefault("num_classes", info["num_classes"])
    if name.startswith("torchvision:"):
        import torchvision.models as tvm

        builder = name.split(":", 1)[1]
        if builder == "ResNet":  # depth/width-shrunk bottleneck ResNets (EdgeCompress)
            model = tvm.ResNet(tvm.resnet.Bottleneck, kw.pop("layers"), **kw)
        else:
            model = getattr(tvm, builder)(weights=None, **kw)
        default = (3, 224, 224)
    else:
        if info is not None:
            kw.setdefault("in_channels", info["in_channels"])
        model, default = create_model(name, **kw), model_input_size(name)
    size = spec.get("input_size")
    if size is None:
        c = info["in_channels"] if info is not None else default[0]
        size = (c, image_size, image_size) if image_size else default
    return model, tuple(int(v) for v in size)


def dry_run(
    profile: dict, stages: list[Path], all_stages: list[Path], overrides: dict, problems: list[str] | None = None
) -> int:
    """Validate names, ranges, device, data and models of a profile without training; prints a
    report. Returns 0 when everything checks out, 1 otherwise (every problem is listed)."""
    from ..cost import layer_table
    from ..data import dataset_info, get_dataset
    from ..models import list_models

    problems = (
        list(problems)
        if problems is not None
        else (check_profile(profile, stages, all_stages, overrides) + check_devices(profile, stages, overrides))
    )
    specs = profile.get("dry_run") or {}
    problems += [
        f"dry_run: {k!r} is not a selected stage{close_names(k, [p.stem for p in stages])}"
        for k in specs
        if k not in {p.stem for p in stages}
    ]
    for py in stages:
        declared = notebook_parameters(py)
        params = {**declared, **stage_parameters(py.stem, declared, profile, overrides)}
        spec = specs.get(py.stem) or {}
        info, dataset = None, spec.get("dataset", params.get("DATASET"))
        root = overrides.get("DATA_ROOT") or params.get("DATA_ROOT") or None
        if dataset:
            try:
                info = dataset_info(dataset)
                sizes = [len(get_dataset(dataset, split, root=root)) for split in ("train", "test")]
                print(f"[{py.stem}] dataset {dataset}: {sizes[0]} train / {sizes[1]} test images")
            except (ValueError, FileNotFoundError) as e:
                problems.append(f"{py.stem}: {e}")
        models = spec.get("models") or ([spec] if "name" in spec else [])
        if not models and params.get("MODEL") in list_models():
            models = [{"name": params["MODEL"]}]
        for m in models:
            try:
                model, size = _build_model(m, info, spec.get("image_size", params.get("IMAGE_SIZE")))
                t = layer_table(model, size)
                print(
                    f"[{py.stem}] model {m.get('label', m['name'])} at {size}: "
                    f"{t['macs'].sum() / 1e6:.2f} M MACs, {t['params'].sum() / 1e6:.3f} M weights, "
                    f"{len(t)} conv/linear layers"
                )
            except Exception as e:  # bad kwargs, wrong input size, unknown name ...
                problems.append(f"{py.stem}: model {m.get('name')!r}: {type(e).__name__}: {e}")
        print(f"[{py.stem}] parameters: {stage_parameters(py.stem, declared, profile, overrides)}")
    for g in profile.get("gaps") or []:  # paper settings the notebooks cannot express (yet)
        print(f"GAP: {g}")
    for p in problems:
        print(f"DRY-RUN PROBLEM: {p}", file=sys.stderr)
    print(f"dry run: {len(stages)} stage(s), {len(problems)} problem(s)")
    return 1 if problems else 0
