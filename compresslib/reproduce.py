"""Regenerate every figure and table: run the stage notebooks headless with papermill.

    python -m compresslib.reproduce --profile default            # every stage, embedded data
    python -m compresslib.reproduce --profile smoke --only 00    # one stage, CI-sized
    python -m compresslib.reproduce --profile default --force    # ignore the cache
    python -m compresslib.reproduce --profile paper/camp_resnet44_cifar10 --data-root ~/data --dry-run
    torchrun --nproc_per_node 4 -m compresslib.reproduce --profile paper/NAME --data-root ~/data --device cuda

Each ``notebooks/NN_name.py`` (jupytext percent format) is converted to a notebook, its
``parameters`` cell is overridden with ``profiles/<profile>.yaml`` (``common:`` then the stage's
own section; only names the notebook declares are injected) and it is executed with an explicit
kernel and timeout into ``artifacts/NN_name/NN_name.ipynb``. A stage whose source and parameters
are unchanged since its last successful run is skipped, unless an earlier stage re-ran in this
invocation. Failing stages are reported with the failing cell; the run continues and exits
non-zero at the end.

``--dry-run`` trains nothing: it checks that every parameter the profile sets is declared by the
stage notebook (typos are caught) and has the declared type, that the dataset is present under
DATA_ROOT, and builds each model with its cost table (``compresslib.cost.layer_table``). A
profile's optional ``dry_run:`` section names, per stage, the ``dataset`` and the ``models``
(``name``, ``kwargs``, ``input_size``) when the notebook parameters do not say enough.
Under ``torchrun`` every rank executes the notebook (``fit`` joins the process group); rank 0
writes ``artifacts/``, the other ranks write to ``artifacts/.rank<r>/`` (upstream stages are
linked from rank 0's folders) and the ranks wait for each other after every stage.
"""
from __future__ import annotations

import argparse
import ast
import difflib
import os
import sys
import time
from pathlib import Path

from .results import param_hash, read_json, write_json

KERNEL = "compresslib"
REPO = Path(__file__).resolve().parent.parent


def stage_files(notebooks_dir: Path) -> list[Path]:
    """``NN_name.py`` notebooks in stage order."""
    return sorted(p for p in Path(notebooks_dir).glob("[0-9][0-9]_*.py"))


def load_profile(profile: str, profiles_dir: Path) -> dict:
    """Read ``profiles/<profile>.yaml``; unknown profiles list the available ones."""
    import yaml

    path = Path(profiles_dir) / f"{profile}.yaml"
    if not path.is_file():
        avail = sorted(str(p.relative_to(profiles_dir).with_suffix("")) for p in Path(profiles_dir).rglob("*.yaml"))
        raise SystemExit(f"unknown profile {profile!r}; available: {', '.join(avail)}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise SystemExit(f"{path}: expected a mapping of sections, got {type(data).__name__}")
    return data


def notebook_parameters(py_path: Path) -> dict:
    """Names and literal defaults of the notebook's first ``parameters`` cell."""
    import jupytext

    nb = jupytext.read(py_path)
    for cell in nb.cells:
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", []):
            out = {}
            for node in ast.parse(cell.source).body:
                if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
                    out[node.targets[0].id] = ast.literal_eval(node.value)
            return out
    raise ValueError(f"{py_path} has no cell tagged 'parameters'")


def stage_parameters(stage: str, declared: dict, profile: dict, overrides: dict) -> dict:
    """common -> stage section -> command-line overrides, restricted to declared names."""
    merged = {}
    for src in (profile.get("common") or {}, profile.get(stage) or {}, overrides):
        merged.update({k: v for k, v in src.items() if k in declared})
    return merged


def ensure_kernel(name: str = KERNEL) -> str:
    """Register this interpreter as a Jupyter kernel (in sys.prefix) if it is not there yet."""
    from jupyter_client.kernelspec import KernelSpecManager

    if name not in KernelSpecManager().find_kernel_specs():
        from ipykernel.kernelspec import install

        install(kernel_name=name, display_name=f"Python ({name})", prefix=sys.prefix)
    return name


def headline(metrics: dict) -> str:
    """The first accuracy-like float of a metrics.json (else the first float), for the summary."""
    floats = [(k, v) for k, v in metrics.items() if isinstance(v, float)]
    for k, v in sorted(floats, key=lambda kv: "accuracy" not in kv[0]):
        return f"{k}={v:.4g}"
    return ""


def run_stage(py_path: Path, out_dir: Path, params: dict, kernel: str, timeout: int) -> dict:
    """Execute one notebook; returns ``{"status", "seconds", "error"}``."""
    import jupytext
    import papermill as pm

    out_dir.mkdir(parents=True, exist_ok=True)
    nb = jupytext.read(py_path)
    nb.metadata["kernelspec"] = {"name": kernel, "display_name": f"Python ({kernel})", "language": "python"}
    nb.metadata.setdefault("language_info", {"name": "python"})
    src_nb = out_dir / f".{py_path.stem}.input.ipynb"
    jupytext.write(nb, src_nb, fmt="ipynb")
    t0 = time.perf_counter()
    try:
        pm.execute_notebook(str(src_nb), str(out_dir / f"{py_path.stem}.ipynb"), parameters=params,
                            kernel_name=kernel, execution_timeout=timeout, cwd=str(py_path.parent),
                            progress_bar=False, log_output=False)
        status, error = "ok", ""
    except pm.PapermillExecutionError as e:
        status, error = "failed", f"cell {e.exec_count}: {e.ename}: {e.evalue}"
    except Exception as e:  # timeout, dead kernel, bad notebook
        status, error = "failed", f"{type(e).__name__}: {e}"
    finally:
        src_nb.unlink(missing_ok=True)
    return {"status": status, "seconds": round(time.perf_counter() - t0, 1), "error": error}


def _close_names(name: str, pool) -> str:
    near = difflib.get_close_matches(name, list(pool), n=2)
    return f" (did you mean {' or '.join(near)}?)" if near else ""


def _type_ok(value, default) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return type(value) is type(default)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(default))


def check_profile_names(profile: dict, stages: list[Path], all_stages: list[Path]) -> list[str]:
    """Problems with the profile's names: unknown sections, parameters no notebook declares,
    values of the wrong type. Empty list = fine."""
    problems, declared_by = [], {}
    known = {p.stem for p in all_stages} | {"common", "stages", "dry_run", "gaps"}
    for key in profile:
        if key not in known:
            problems.append(f"unknown section {key!r}{_close_names(key, known)}")
    for py in stages:
        declared = notebook_parameters(py)
        declared_by[py.stem] = declared
        for k, v in (profile.get(py.stem) or {}).items():
            if k not in declared:
                problems.append(f"{py.stem}: {k!r} is not a parameter of {py.name}{_close_names(k, declared)}")
            elif not _type_ok(v, declared[k]):
                problems.append(f"{py.stem}: {k}={v!r} is a {type(v).__name__}, the notebook's default "
                                f"{declared[k]!r} is a {type(declared[k]).__name__}")
    for k, v in (profile.get("common") or {}).items():
        users = [st for st, d in declared_by.items() if k in d]
        if stages and not users:
            problems.append(f"common: {k!r} is declared by none of the selected stages")
        problems += [f"common: {k}={v!r} is a {type(v).__name__}, {st} declares {declared_by[st][k]!r}"
                     for st in users if not _type_ok(v, declared_by[st][k])]
    return problems


def _build_model(spec: dict, info: dict | None, image_size: int | None):
    """A model (registry name, or ``torchvision:<builder>``, ``torchvision:ResNet`` with ``layers``)
    and its (C, H, W) input from a dry-run spec."""
    from .models import create_model, model_input_size

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


def dry_run(profile: dict, stages: list[Path], all_stages: list[Path], overrides: dict) -> int:
    """Validate names, data and models of a profile without training; prints a report.

    Returns 0 when everything checks out, 1 otherwise (every problem is listed)."""
    from .cost import layer_table
    from .data import dataset_info, get_dataset
    from .models import list_models

    problems = check_profile_names(profile, stages, all_stages)
    specs = profile.get("dry_run") or {}
    problems += [f"dry_run: {k!r} is not a selected stage{_close_names(k, [p.stem for p in stages])}"
                 for k in specs if k not in {p.stem for p in stages}]
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
                print(f"[{py.stem}] model {m.get('label', m['name'])} at {size}: "
                      f"{t['macs'].sum() / 1e6:.2f} M MACs, {t['params'].sum() / 1e6:.3f} M weights, "
                      f"{len(t)} conv/linear layers")
            except Exception as e:  # bad kwargs, wrong input size, unknown name ...
                problems.append(f"{py.stem}: model {m.get('name')!r}: {type(e).__name__}: {e}")
        print(f"[{py.stem}] parameters: {stage_parameters(py.stem, declared, profile, overrides)}")
    for g in profile.get("gaps") or []:  # paper settings the notebooks cannot express (yet)
        print(f"GAP: {g}")
    for p in problems:
        print(f"DRY-RUN PROBLEM: {p}", file=sys.stderr)
    print(f"dry run: {len(stages)} stage(s), {len(problems)} problem(s)")
    return 1 if problems else 0


def _rank_setup(art: Path, stages: list[Path]) -> tuple[int, int, Path]:
    """(rank, world, artifacts root of this rank); ranks > 0 link rank 0's stage folders."""
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    if rank == 0:
        return rank, world, art
    mine = art / f".rank{rank}"
    mine.mkdir(parents=True, exist_ok=True)
    for py in stages:
        link, target = mine / py.stem, art / py.stem
        target.mkdir(parents=True, exist_ok=True)
        if not link.exists() and not link.is_symlink():
            link.symlink_to(target, target_is_directory=True)
    return rank, world, mine


def _stage_barrier(art: Path, stage: str, rank: int, world: int, timeout: float = 86400) -> None:
    """File barrier between ranks after a stage (the notebook kernels own the process group)."""
    if world <= 1:
        return
    sync = art / ".sync"
    sync.mkdir(parents=True, exist_ok=True)
    (sync / f"{stage}.{rank}").write_text(str(time.time()))
    t0 = time.time()
    while not all((sync / f"{stage}.{r}").exists() for r in range(world)):
        if time.time() - t0 > timeout:
            raise SystemExit(f"rank {rank}: timed out waiting for the other ranks after {stage}")
        time.sleep(1.0)


# The earlier stages each notebook reads (its "Reads:" line). A stage not listed here is assumed to
# read every earlier stage, the safe default for a new notebook.
UPSTREAM = {"00_quickstart": (), "01_profiling": (), "02_energy_estimator": ("01_profiling",),
            "03_ecc_admm": ("02_energy_estimator",), "04_sparsity_quantization": (), "05_ec2t": (),
            "06_micronet_scoring": ("03_ecc_admm", "04_sparsity_quantization", "05_ec2t"), "07_dynamic_inference": (),
            "08_camp_mixed_precision": ()}


def upstream_of(stage: str, selected: list[str]) -> list[str]:
    """The selected stages ``stage`` waits for (stages outside the selection are taken as done)."""
    ups = UPSTREAM.get(stage)
    return [s for s in selected if (s in ups if ups is not None else s < stage)]


def schedule(stages: list[Path], prepare, finish, kernel: str, timeout: int, jobs: int = 1,
             stop_on_failure: bool = False, barrier=None) -> dict:
    """Run the stages, at most ``jobs`` at once, each after the stages it reads.

    ``prepare(py, upstream_ran)`` returns the job (``cached``, ``key``, ``params``);
    ``finish(py, job, res)`` records a result. A stage whose upstream failed is
    ``skipped``; a stage re-runs when one of its upstream stages re-ran. Ready stages start in
    the order of how many stages wait on them (the critical path first), then stage order.
    Returns ``{stage: result}``."""
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    import multiprocessing as mp

    names = [p.stem for p in stages]
    by_name = dict(zip(names, stages))
    ups = {n: upstream_of(n, names) for n in names}

    def waiting_on(n, seen=None):
        seen = set() if seen is None else seen
        for m in names:
            if n in ups[m] and m not in seen:
                seen.add(m)
                waiting_on(m, seen)
        return seen

    order = sorted(names, key=lambda n: (-len(waiting_on(n)), names.index(n)))
    done, running, t0 = {}, {}, time.perf_counter()
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) if jobs > 1 else None

    def complete(n, job, res):
        res.update(start_s=round(res.pop("_start", time.perf_counter() - t0), 1),
                   end_s=round(time.perf_counter() - t0, 1))
        finish(by_name[n], job, res)
        done[n] = res
        if barrier is not None:
            barrier(n, job["key"] if job else "skipped")

    try:
        while len(done) < len(names):
            halted = stop_on_failure and any(r["status"] == "failed" for r in done.values())
            for n in order:
                if n in done or n in running.values() or len(running) >= jobs or halted:
                    continue
                if any(u not in done for u in ups[n]):
                    continue
                bad = [u for u in ups[n] if done[u]["status"] in ("failed", "skipped")]
                if bad:
                    complete(n, None, {"status": "skipped", "seconds": 0.0, "error": f"upstream {', '.join(bad)} failed"})
                    continue
                job = prepare(by_name[n], any(done[u]["status"] == "ok" for u in ups[n]))
                if job["cached"]:
                    complete(n, job, {"status": "cached", "seconds": 0.0, "error": ""})
                    continue
                print(f"[{n}] running with {job['params']}", flush=True)
                start = time.perf_counter() - t0
                if pool is None:
                    res = run_stage(by_name[n], Path(job["params"]["OUT_DIR"]), job["params"], kernel, timeout)
                    complete(n, job, {**res, "_start": start})
                else:
                    fut = pool.submit(run_stage, by_name[n], Path(job["params"]["OUT_DIR"]), job["params"],
                                      kernel, timeout)
                    running[fut] = n
                    fut.job, fut.start = job, start
            if halted and not running:
                break
            if running:
                finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for fut in finished:
                    n = running.pop(fut)
                    try:
                        res = fut.result()
                    except Exception as e:  # the worker process itself died
                        res = {"status": "failed", "seconds": round(time.perf_counter() - t0 - fut.start, 1),
                               "error": f"{type(e).__name__}: {e}"}
                    complete(n, fut.job, {**res, "_start": fut.start})
            elif not halted and len(done) < len(names) and not any(
                    n not in done and all(u in done for u in ups[n]) for n in names):
                raise RuntimeError("stage dependencies form a cycle")  # cannot happen with 'earlier' links
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return done


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m compresslib.reproduce", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="default", help="profiles/<name>.yaml (default, smoke, paper/<name>)")
    ap.add_argument("--only", action="append", default=[], help="stage number or name prefix (repeatable)")
    ap.add_argument("--force", action="store_true", help="re-run stages even when cached")
    ap.add_argument("--artifacts", default=str(REPO / "artifacts"), help="output root (default: artifacts/)")
    ap.add_argument("--notebooks", default=str(REPO / "notebooks"))
    ap.add_argument("--profiles", default=str(REPO / "profiles"))
    ap.add_argument("--data-root", default=None, help="DATA_ROOT for real datasets")
    ap.add_argument("--device", default=None, help="DEVICE override (cpu, cuda)")
    ap.add_argument("--timeout", type=int, default=3600, help="per-cell execution timeout in seconds")
    ap.add_argument("--stop-on-failure", action="store_true")
    ap.add_argument("--jobs", type=int, default=1,
                    help="stages run at once (each waits for the stages it reads, see UPSTREAM); with N > 1 "
                         "each gets cpu_count/N torch threads unless COMPRESSLIB_THREADS is set")
    ap.add_argument("--dry-run", action="store_true",
                    help="validate parameters, data presence, models and cost tables; train nothing")
    ap.add_argument("--amp", action="store_true", help="CUDA mixed precision in fit (COMPRESSLIB_AMP=1)")
    ap.add_argument("--workers", type=int, default=None,
                    help="data-loading worker processes for fit's loaders (COMPRESSLIB_NUM_WORKERS)")
    ap.add_argument("--channels-last", action="store_true",
                    help="CUDA channels_last memory format in fit (COMPRESSLIB_CHANNELS_LAST=1)")
    args = ap.parse_args(argv)

    profile = load_profile(args.profile, Path(args.profiles))
    all_stages = stages = stage_files(Path(args.notebooks))
    wanted = profile.get("stages")
    if wanted:
        unmatched = [w for w in wanted if not any(p.stem.startswith(str(w)) for p in stages)]
        if unmatched:
            raise SystemExit(f"profile {args.profile!r}: stages {unmatched} match no notebook in {args.notebooks}")
        stages = [p for p in stages if any(p.stem.startswith(str(w)) for w in wanted)]
    if args.only:
        stages = [p for p in stages if any(p.stem.startswith(o) for o in args.only)]
        if not stages:
            raise SystemExit(f"--only {args.only} matches no stage in {args.notebooks}")
    art = Path(args.artifacts).resolve()
    overrides = {"PROFILE": args.profile}
    if args.data_root:
        overrides["DATA_ROOT"] = args.data_root
    if args.device:
        overrides["DEVICE"] = args.device
    if args.dry_run:
        return dry_run(profile, stages, all_stages, overrides)
    if args.amp:
        os.environ["COMPRESSLIB_AMP"] = "1"
    if args.channels_last:
        os.environ["COMPRESSLIB_CHANNELS_LAST"] = "1"
    if args.workers is not None:
        os.environ["COMPRESSLIB_NUM_WORKERS"] = str(args.workers)
    main_art = art
    rank, world, art = _rank_setup(art, stages)
    os.environ.setdefault("COMPRESSLIB_PROGRESS", "0")
    os.environ.setdefault("MPLBACKEND", "Agg")
    jobs = 1 if world > 1 else max(1, args.jobs)
    if jobs > 1 and "COMPRESSLIB_THREADS" not in os.environ:  # no oversubscription: cores shared by the jobs
        os.environ["COMPRESSLIB_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
    kernel = ensure_kernel()

    def prepare(py: Path, upstream_ran: bool) -> dict | None:
        """The stage's job: parameters, cache key, and whether its cached result still holds."""
        stage, main_dir = py.stem, main_art / py.stem  # rank 0's folder: the cache stamp every rank consults
        declared = notebook_parameters(py)
        params = stage_parameters(stage, declared, profile, overrides)
        params["OUT_DIR"] = str(main_dir)
        key = param_hash({"source": py.read_text(), "params": params})
        stamp = main_dir / ".reproduce.json"
        cached = stamp.exists() and read_json(stamp).get("key") == key and (main_dir / "metrics.json").exists()
        if cached and not args.force and not upstream_ran:
            return {"cached": True, "key": key}
        out_dir = art / stage
        if out_dir.is_symlink():  # rank > 0 runs this stage itself: its own folder
            out_dir.unlink()
        stamp.unlink(missing_ok=True) if rank == 0 else None
        return {"cached": False, "params": {**params, "OUT_DIR": str(out_dir)}, "key": key, "stamp": stamp,
                "main_dir": main_dir}

    def finish(py: Path, job: dict | None, res: dict) -> None:
        if rank == 0 and res["status"] == "ok":
            write_json(job["stamp"], {"key": job["key"], "params": {**job["params"], "OUT_DIR": str(job["main_dir"])}})
        metrics_path = art / py.stem / "metrics.json"
        res.update(stage=py.stem, headline=headline(read_json(metrics_path))
                   if metrics_path.exists() and res["status"] in ("ok", "cached") else "")
        print(f"[{py.stem}] {res['status']} in {res['seconds']} s {res['error']}", flush=True)

    t_start = time.perf_counter()
    results = schedule(stages, prepare, finish, kernel, args.timeout, jobs, args.stop_on_failure,
                       barrier=lambda st, key: _stage_barrier(main_art, f"{st}.{key[:12]}", rank, world))
    rows = [results[p.stem] for p in stages if p.stem in results]
    wall = time.perf_counter() - t_start

    write_json(art / "summary.json", rows)
    w = max([len(r["stage"]) for r in rows] + [5])
    print(f"\n{'stage':<{w}}  {'status':<7} {'seconds':>8}  headline / error")
    for r in rows:
        print(f"{r['stage']:<{w}}  {r['status']:<7} {r['seconds']:>8.1f}  {r['error'] or r['headline']}")
    print(f"total wall time {wall / 60:.1f} min with {jobs} job(s) in parallel, "
          f"{os.environ.get('COMPRESSLIB_THREADS', 'default')} torch thread(s) each")
    failed = [r["stage"] for r in rows if r["status"] in ("failed", "skipped")]
    if failed:
        print(f"\nFAILED stages: {', '.join(failed)} (executed notebooks with the error are in {art})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
