"""Regenerate every figure and table: run the stage notebooks headless with papermill.

    python -m compresslib.workbook.reproduce --profile default            # every stage, embedded data
    python -m compresslib.workbook.reproduce --profile smoke --only 00    # one stage, CI-sized
    python -m compresslib.workbook.reproduce --profile default --force    # ignore the cache
    python -m compresslib.workbook.reproduce --profile paper/camp_resnet44_cifar10 --data-root ~/data --dry-run
    torchrun --nproc_per_node 4 -m compresslib.workbook.reproduce --profile paper/NAME --data-root ~/data --device cuda

Each ``notebooks/NN_name.py`` (jupytext percent format) is converted to a notebook, its
``parameters`` cell is overridden with ``profiles/<profile>.yaml`` (``common:`` then the stage's
own section, then ``--data-root``/``--device``) and it is executed with an explicit kernel and
timeout. Before any stage runs, every name the profile sets is checked against the notebooks'
parameters ("did you mean"), with its type and its declared ``range [lo, hi]``, and the device is
checked (``train.check_device``); any problem stops the run with the list. ``--dry-run`` lists the
same problems, but only notes a profile's own DEVICE that this machine lacks (``--device`` is checked).

A stage runs in ``artifacts/NN_name.staging/`` (``$COMPRESSLIB_CACHE_ROOT`` = ``artifacts/.cache``
keeps what it trains across runs) that replaces ``artifacts/NN_name/`` only on success, together
with a ``manifest.json``: parameters, notebook source hash, code version, sha256 + size of every
file written, the digests of the upstream manifests read, and the models of ``models.json``. A
stage is *cached* (skipped) when its manifest's key, the hash of (source, parameters, upstream
manifest digests) with paths relative to the artifacts root, is unchanged and every output still has
its digest. A failed run is kept as ``NN_name.failed/`` and the previous result stops being current.
``summary.json`` keeps every stage's last status (``running`` with the pid while it runs, so a killed
run shows as ``killed``). ``artifacts/.lock`` lets one ``reproduce`` at a time use a folder.

``--dry-run`` trains nothing: on top of the checks above it checks that the dataset is present
under DATA_ROOT and builds each model with its cost table (``compresslib.cost.layer_table``). A
profile's optional ``dry_run:`` section names, per stage, the ``dataset`` and the ``models``
(``name``, ``kwargs``, ``input_size``) when the notebook parameters do not say enough.
Under ``torchrun`` every rank executes the notebook (``fit`` joins the process group); rank 0
writes ``artifacts/``, the other ranks write to ``artifacts/.rank<r>/`` (upstream stages are
linked from rank 0's folders) and the ranks wait for each other after every stage.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

from . import command_line
from . import provenance as pv
from .dryrun import dry_run  # noqa: F401  (re-exported)
from ..results import read_json, write_json
from ..stages import REPO, UPSTREAM, headline, upstream_of  # noqa: F401  (the stage graph lives in stages)
from .stage_params import (
    check_devices,
    check_profile,
    check_profile_names,  # noqa: F401  (re-exported)
    match_stages,  # noqa: F401
    notebook_parameters,
    stage_parameters,
)

KERNEL = "compresslib"


def stage_files(notebooks_dir: Path) -> list[Path]:
    """``NN_name.py`` notebooks in stage order."""
    return sorted(p for p in Path(notebooks_dir).glob("[0-9][0-9]_*.py"))


def load_profile(profile: str, profiles_dir: Path) -> dict:
    """Read ``profiles/<profile>.yaml``; unknown profiles list the available ones, malformed YAML
    names the file and line."""
    import yaml

    path = Path(profiles_dir) / f"{profile}.yaml"
    if not path.is_file():
        avail = sorted(str(p.relative_to(profiles_dir).with_suffix("")) for p in Path(profiles_dir).rglob("*.yaml"))
        raise SystemExit(f"unknown profile {profile!r}; available: {', '.join(avail)}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise SystemExit(f"{path}:{where}: malformed YAML: {getattr(e, 'problem', None) or e}") from None
    if not isinstance(data, dict):
        raise SystemExit(f"{path}: expected a mapping of sections, got {type(data).__name__}")
    return data


def ensure_kernel(name: str = KERNEL) -> str:
    """Register this interpreter as a Jupyter kernel (in sys.prefix) if it is not there yet."""
    from jupyter_client.kernelspec import KernelSpecManager

    if name not in KernelSpecManager().find_kernel_specs():
        from ipykernel.kernelspec import install

        install(kernel_name=name, display_name=f"Python ({name})", prefix=sys.prefix)
    return name


def run_stage(py_path: Path, out_dir: Path, params: dict, kernel: str, timeout: int) -> dict:
    """Execute one notebook into ``out_dir``; returns ``{"status", "seconds", "error"}``."""
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
        pm.execute_notebook(
            str(src_nb),
            str(out_dir / f"{py_path.stem}.ipynb"),
            parameters=params,
            kernel_name=kernel,
            execution_timeout=timeout,
            cwd=str(py_path.parent),
            progress_bar=False,
            log_output=False,
        )
        status, error = "ok", ""
    except pm.PapermillExecutionError as e:
        status, error = "failed", f"cell {e.exec_count}: {e.ename}: {e.evalue}"
    except Exception as e:  # timeout, dead kernel, bad notebook
        status, error = "failed", f"{type(e).__name__}: {e}"
        if "timeout" in type(e).__name__.lower() or "timed out" in str(e).lower():
            error = f"timed out (--timeout {timeout} s per cell): {error}"
    finally:
        src_nb.unlink(missing_ok=True)
    return {"status": status, "seconds": round(time.perf_counter() - t0, 1), "error": error}


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


def schedule(
    stages: list[Path],
    prepare,
    finish,
    kernel: str,
    timeout: int,
    jobs: int = 1,
    stop_on_failure: bool = False,
    barrier=None,
) -> dict:
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
    pool = (
        ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn"), initializer=_worker_init)
        if jobs > 1
        else None
    )

    def complete(n, job, res):
        res.update(
            start_s=round(res.pop("_start", time.perf_counter() - t0), 1), end_s=round(time.perf_counter() - t0, 1)
        )
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
                    complete(
                        n, None, {"status": "skipped", "seconds": 0.0, "error": f"upstream {', '.join(bad)} failed"}
                    )
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
                    fut = pool.submit(
                        run_stage, by_name[n], Path(job["params"]["OUT_DIR"]), job["params"], kernel, timeout
                    )
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
                        res = {
                            "status": "failed",
                            "seconds": round(time.perf_counter() - t0 - fut.start, 1),
                            "error": f"{type(e).__name__}: {e}",
                        }
                    complete(n, fut.job, {**res, "_start": fut.start})
            elif (
                not halted
                and len(done) < len(names)
                and not any(n not in done and all(u in done for u in ups[n]) for n in names)
            ):
                raise RuntimeError("stage dependencies form a cycle")  # cannot happen with 'earlier' links
    except BaseException:  # interrupted (SIGTERM/SIGINT) or failed: stop the running stages and their kernels now
        if pool is not None:
            _stop_workers(pool)
            pool = None
        raise
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return done


def _stop_signal(signum, frame):
    """SIGTERM/SIGHUP -> an exception, so ``finally`` blocks run (papermill shuts its kernel down, the
    runner stops its workers) instead of the process vanishing and leaving kernels running."""
    raise KeyboardInterrupt(f"stopped by signal {signum}")


def _worker_exit(signum, frame):
    """A worker told to stop exits at once; its notebook kernel notices its parent is gone (ipykernel's
    parent poller, ``JPY_PARENT_PID``) and exits too."""
    os._exit(128 + signum)


def _worker_init() -> None:
    """Runner worker (one stage at a time): exits on SIGTERM, and on Linux is sent SIGTERM when the
    runner dies (even SIGKILLed: ``PR_SET_PDEATHSIG``), so no orphaned stage keeps its kernel computing,
    and writing into a staging folder, after the run it belonged to is gone."""
    import signal

    signal.signal(signal.SIGTERM, _worker_exit)
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):  # no prctl: the SIGTERM path still applies
            pass
        if os.getppid() == 1:  # the runner died before prctl took effect
            os._exit(128 + signal.SIGTERM)


def _stop_workers(pool) -> None:
    """SIGTERM every worker of ``pool`` (each stops its notebook's kernel), then drop the pool."""
    procs = list((getattr(pool, "_processes", None) or {}).values())
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(timeout=30)
        if p.is_alive():
            p.kill()
    pool.shutdown(wait=False, cancel_futures=True)


def _args(argv):
    ap = command_line("reproduce", __doc__)
    ap.add_argument("--profile", default="default", help="profiles/<name>.yaml (default, smoke, paper/<name>)")
    ap.add_argument(
        "--only",
        action="append",
        default=[],
        help="stage number (03), name (03_ecc_admm, ecc_admm) or unique name prefix (03_ecc, ecc); repeatable",
    )
    ap.add_argument("--force", action="store_true", help="re-run stages even when cached")
    ap.add_argument("--artifacts", default=str(REPO / "artifacts"), help="output root (default: artifacts/)")
    ap.add_argument("--notebooks", default=str(REPO / "notebooks"))
    ap.add_argument("--profiles", default=str(REPO / "profiles"))
    ap.add_argument("--data-root", default=None, help="DATA_ROOT for real datasets")
    ap.add_argument("--device", default=None, help="DEVICE override (cpu, cuda, cuda:N)")
    ap.add_argument(
        "--timeout",
        type=int,
        default=14400,
        help="per-cell execution timeout in seconds (>= 1), a guard against hangs: stage 08's training cell "
        "took over an hour of the default profile on a shared 2-core machine (a rerun reuses its finished fits)",
    )
    ap.add_argument("--stop-on-failure", action="store_true")
    ap.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="stages run at once, >= 1 (each waits for the stages it reads, see compresslib.stages.UPSTREAM); with N > 1 "
        "each gets cpu_count/N torch threads unless COMPRESSLIB_THREADS is set",
    )
    ap.add_argument(
        "--dry-run",
        action="store_true",
        help="validate parameters, device, data presence, models and cost tables; train nothing",
    )
    ap.add_argument("--amp", action="store_true", help="CUDA mixed precision in fit (COMPRESSLIB_AMP=1)")
    ap.add_argument(
        "--workers",
        type=int,
        default=None,
        help="data-loading worker processes for fit's loaders, >= 0 (COMPRESSLIB_NUM_WORKERS)",
    )
    ap.add_argument(
        "--channels-last",
        action="store_true",
        help="CUDA channels_last memory format in fit (COMPRESSLIB_CHANNELS_LAST=1)",
    )
    args = ap.parse_args(argv)
    for flag, value, lo in (("--jobs", args.jobs, 1), ("--timeout", args.timeout, 1), ("--workers", args.workers, 0)):
        if value is not None and value < lo:
            raise SystemExit(f"error: {flag} {value}: must be an integer >= {lo}")
    if args.device is not None and not args.device.strip():
        raise SystemExit("error: --device '': give cpu, cuda or cuda:N")
    from ..checks import env_int

    for var, lo in (("COMPRESSLIB_THREADS", 1), ("COMPRESSLIB_NUM_WORKERS", 0)):
        try:
            env_int(var, 1, lo)
        except ValueError as e:
            raise SystemExit(f"error: {e}") from None
    return args


def _writable_root(art: Path) -> None:
    try:
        art.mkdir(parents=True, exist_ok=True)
        probe = art / f".write-test{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise SystemExit(
            f"error: the artifacts folder {art} is not writable ({e.strerror or e}): "
            f"choose another with --artifacts DIR or fix its permissions"
        ) from None


def main(argv=None) -> int:
    args = _args(argv)
    profile = load_profile(args.profile, Path(args.profiles))
    all_stages = stages = stage_files(Path(args.notebooks))
    if not all_stages:
        raise SystemExit(f"no NN_name.py stage notebooks in {args.notebooks}")
    if profile.get("stages"):
        stages = match_stages(profile["stages"], stages, f"profile {args.profile!r}: stage")
    if args.only:
        only = match_stages(args.only, all_stages, "--only")
        if any(p not in stages for p in only):
            raise SystemExit(
                f"--only {', '.join(p.stem for p in only if p not in stages)}: not among the stages "
                f"profile {args.profile!r} runs ({', '.join(p.stem for p in stages)})"
            )
        stages = only
    overrides = {"PROFILE": args.profile}
    if args.data_root:
        overrides["DATA_ROOT"] = args.data_root
    if args.device:
        overrides["DEVICE"] = args.device
    problems, devices = check_profile(profile, stages, all_stages, overrides), check_devices(profile, stages, overrides)
    if args.dry_run:  # a profile's own DEVICE may name the GPU machine it is meant for: a note, not a problem
        for d in [] if args.device else devices:
            print(f"NOTE: {d} (a real run here would stop; pass --device to check one)")
        return dry_run(profile, stages, all_stages, overrides, problems + (devices if args.device else []))
    problems += devices
    if problems:
        raise SystemExit(
            "error: profile " + repr(args.profile) + " has problems, nothing was run:\n  " + "\n  ".join(problems)
        )
    main_art = Path(args.artifacts).resolve()
    _writable_root(main_art)
    saved_env = {
        k: os.environ.get(k)
        for k in ("COMPRESSLIB_CACHE_ROOT", "COMPRESSLIB_AMP", "COMPRESSLIB_CHANNELS_LAST", "COMPRESSLIB_NUM_WORKERS")
    }
    if args.amp:
        os.environ["COMPRESSLIB_AMP"] = "1"
    if args.channels_last:
        os.environ["COMPRESSLIB_CHANNELS_LAST"] = "1"
    if args.workers is not None:
        os.environ["COMPRESSLIB_NUM_WORKERS"] = str(args.workers)
    os.environ["COMPRESSLIB_CACHE_ROOT"] = str(main_art / ".cache")
    rank, world, art = _rank_setup(main_art, stages)
    try:
        with pv.ArtifactsLock(art, " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])])):
            return _run(args, profile, stages, all_stages, overrides, main_art, art, rank, world)
    finally:
        for k, v in saved_env.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def _run(args, profile, stages, all_stages, overrides, main_art, art, rank, world) -> int:
    """The locked part of ``main``: clean up after killed runs, schedule the stages, write the summary."""
    for st, row in pv.read_summary(art).items():  # a run SIGKILLed mid-stage: its stage is not current
        status, err = pv.row_status(row)
        if status == "killed" and row.get("status") == "running":
            print(f"[{st}] the last run was killed while this stage ran (pid {row.get('pid')}): marking it not current")
            pv.supersede(art, st)
            pv.update_summary(art, {st: {**row, "status": "killed", "error": err}})
    for leftover in list(art.glob("*.staging*")):
        shutil.rmtree(leftover, ignore_errors=True)
    os.environ.setdefault("COMPRESSLIB_PROGRESS", "0")
    os.environ.setdefault("MPLBACKEND", "Agg")
    jobs = 1 if world > 1 else args.jobs
    if jobs > 1 and "COMPRESSLIB_THREADS" not in os.environ:  # no oversubscription: cores shared by the jobs
        os.environ["COMPRESSLIB_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
    kernel = ensure_kernel()
    all_names = [p.stem for p in all_stages]
    running = {}

    def prepare(py: Path, upstream_ran: bool) -> dict:
        """The stage's job: parameters, cache key, and whether its cached result still holds."""
        stage, main_dir = py.stem, main_art / py.stem  # rank 0's folder: the cache every rank consults
        source = py.read_text()
        params = stage_parameters(stage, notebook_parameters(py), profile, overrides)
        rel = pv.relative_params(params, main_art)
        upstream = pv.upstream_digests(main_art, upstream_of(stage, all_names))
        key = pv.cache_key(source, rel, upstream)
        man, why = pv.read_manifest(main_dir)
        if man is not None:
            why = pv.verify_outputs(main_dir, man) or (
                ""
                if man.get("key") == key
                else next(
                    (f"upstream {u} changed" for u, d in upstream.items() if (man.get("upstream") or {}).get(u) != d),
                    "source, parameters or library code changed",
                )
            )
        if not why and not args.force:
            return {"cached": True, "key": key}
        print(f"[{stage}] {'--force' if not why else 'not cached: ' + why}", flush=True)
        for u, d in upstream.items():
            if d == pv.NOT_CURRENT:
                print(
                    f"[{stage}] warning: upstream {u} is not current "
                    f"({pv.stage_state(main_art, u)[1] or 'no manifest'}); its files are read as they are",
                    flush=True,
                )
        out_dir = pv.fresh_staging(art, stage)
        running[stage] = True
        pv.update_summary(
            art,
            {
                stage: {
                    "stage": stage,
                    "status": "running",
                    "pid": os.getpid(),
                    "host": pv.HOST,
                    "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "seconds": 0.0,
                    "error": "",
                    "headline": "",
                }
            },
        )
        return {
            "cached": False,
            "params": {**params, "OUT_DIR": str(out_dir)},
            "key": key,
            "rel": rel,
            "upstream": upstream,
            "source": source,
            "main_dir": main_dir,
        }

    def finish(py: Path, job: dict | None, res: dict) -> None:
        stage = py.stem
        if job is not None and not job["cached"]:
            running.pop(stage, None)
            if res["status"] == "ok":
                try:
                    staging = pv.staging_dir(art, stage)
                    pv.write_manifest(
                        staging,
                        stage,
                        params=job["rel"],
                        source=job["source"],
                        key=job["key"],
                        upstream=job["upstream"],
                        seconds=res["seconds"],
                    )
                    write_json(
                        staging / pv.STAMP,
                        {"key": job["key"], "params": {**job["params"], "OUT_DIR": str(job["main_dir"])}},
                    )
                    pv.promote(art, stage)
                except OSError as e:
                    res.update(status="failed", error=f"could not store the result: {type(e).__name__}: {e}")
            if res["status"] != "ok":
                kept = pv.discard(art, stage)
                if kept is not None:
                    res["error"] += f" (partial output: {kept.name}/)"
        metrics_path = art / stage / "metrics.json"
        head = ""
        if res["status"] in ("ok", "cached") and metrics_path.is_file():
            try:
                head = headline(read_json(metrics_path))
            except (OSError, ValueError, AttributeError) as e:
                head = f"metrics.json unreadable: {e}"
        res.update(stage=stage, headline=head, finished=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        pv.update_summary(art, {stage: res})
        print(f"[{stage}] {res['status']} in {res['seconds']} s {res['error']}", flush=True)

    t_start = time.perf_counter()
    try:
        results = schedule(
            stages,
            prepare,
            finish,
            kernel,
            args.timeout,
            jobs,
            args.stop_on_failure,
            barrier=lambda st, key: _stage_barrier(main_art, f"{st}.{key[:12]}", rank, world),
        )
    except BaseException as e:  # Ctrl-C or a runner bug: what was running is not current
        for st in list(running):
            pv.discard(art, st)
            pv.update_summary(
                art,
                {
                    st: {
                        "stage": st,
                        "status": "killed",
                        "seconds": 0.0,
                        "headline": "",
                        "error": f"run interrupted ({type(e).__name__})",
                    }
                },
            )
        raise
    rows = [results[p.stem] for p in stages if p.stem in results]
    wall = time.perf_counter() - t_start
    w = max([len(r["stage"]) for r in rows] + [5])
    print(f"\n{'stage':<{w}}  {'status':<7} {'seconds':>8}  headline / error")
    for r in rows:
        print(f"{r['stage']:<{w}}  {r['status']:<7} {r['seconds']:>8.1f}  {r['error'] or r['headline']}")
    print(
        f"total wall time {wall / 60:.1f} min with {jobs} job(s) in parallel, "
        f"{os.environ.get('COMPRESSLIB_THREADS', 'default')} torch thread(s) each"
    )
    failed = [r["stage"] for r in rows if r["status"] in ("failed", "skipped")]
    if failed:
        print(f"\nFAILED stages: {', '.join(failed)} (the failed runs' notebooks are in {art}/<stage>.failed/)")
    return 1 if failed else 0


if __name__ == "__main__":
    import signal

    signal.signal(signal.SIGTERM, _stop_signal)
    signal.signal(signal.SIGHUP, _stop_signal)
    sys.exit(main())
