"""Regenerate every figure and table: run the stage notebooks headless with papermill.

    python -m compresslib.reproduce --profile default            # every stage, embedded data
    python -m compresslib.reproduce --profile smoke --only 00    # one stage, CI-sized
    python -m compresslib.reproduce --profile default --force    # ignore the cache

Each ``notebooks/NN_name.py`` (jupytext percent format) is converted to a notebook, its
``parameters`` cell is overridden with ``profiles/<profile>.yaml`` (``common:`` then the stage's
own section; only names the notebook declares are injected) and it is executed with an explicit
kernel and timeout into ``artifacts/NN_name/NN_name.ipynb``. A stage whose source and parameters
are unchanged since its last successful run is skipped, unless an earlier stage re-ran in this
invocation. Failing stages are reported with the failing cell; the run continues and exits
non-zero at the end.
"""
from __future__ import annotations

import argparse
import ast
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
    args = ap.parse_args(argv)

    profile = load_profile(args.profile, Path(args.profiles))
    stages = stage_files(Path(args.notebooks))
    wanted = profile.get("stages")
    if wanted:
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
    os.environ.setdefault("COMPRESSLIB_PROGRESS", "0")
    os.environ.setdefault("MPLBACKEND", "Agg")
    kernel = ensure_kernel()

    rows, upstream_ran = [], False
    for py in stages:
        stage = py.stem
        out_dir = art / stage
        declared = notebook_parameters(py)
        params = stage_parameters(stage, declared, profile, overrides)
        params["OUT_DIR"] = str(out_dir)
        key = param_hash({"source": py.read_text(), "params": params})
        stamp = out_dir / ".reproduce.json"
        cached = stamp.exists() and read_json(stamp).get("key") == key and (out_dir / "metrics.json").exists()
        if cached and not args.force and not upstream_ran:
            res = {"status": "cached", "seconds": 0.0, "error": ""}
        else:
            print(f"[{stage}] running with {params}", flush=True)
            res = run_stage(py, out_dir, params, kernel, args.timeout)
            upstream_ran = True
            stamp.unlink(missing_ok=True)
            if res["status"] == "ok":
                write_json(stamp, {"key": key, "params": params})
        metrics_path = out_dir / "metrics.json"
        res.update(stage=stage, headline=headline(read_json(metrics_path)) if metrics_path.exists() else "")
        rows.append(res)
        print(f"[{stage}] {res['status']} in {res['seconds']} s {res['error']}", flush=True)
        if res["status"] == "failed" and args.stop_on_failure:
            break

    write_json(art / "summary.json", rows)
    w = max([len(r["stage"]) for r in rows] + [5])
    print(f"\n{'stage':<{w}}  {'status':<7} {'seconds':>8}  headline / error")
    for r in rows:
        print(f"{r['stage']:<{w}}  {r['status']:<7} {r['seconds']:>8.1f}  {r['error'] or r['headline']}")
    failed = [r["stage"] for r in rows if r["status"] == "failed"]
    if failed:
        print(f"\nFAILED stages: {', '.join(failed)} (executed notebooks with the error are in {art})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
