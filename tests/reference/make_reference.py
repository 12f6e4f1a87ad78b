"""Write ``tests/reference/smoke_metrics.json`` from a finished smoke-profile artifacts folder.

    python tests/reference/make_reference.py ARTIFACTS_DIR [--threads N] [--out PATH]
    python tests/reference/make_reference.py ARTIFACTS_DIR --stage 09_leaderboard --reason "why it changed"

The file is the reference ``tests/test_smoke_reference.py`` compares every smoke run with: for each
stage of ``ARTIFACTS_DIR/summary.json`` its ``metrics.json`` without wall-clock keys (``TIMING``; the
same rule as tests/test_rerun_reuse.py) and with the artifacts folder inside strings written as
``<ARTIFACTS>``, plus a ``_reference`` header: the commit the stages' manifest.json record, the
profile, the torch thread count (COMPRESSLIB_THREADS) the run used, torch's version and CPU
capability. Re-reference only for a deliberate change of numbers and say why in the commit message.
The file is written atomically (a temporary file renamed over it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
from pathlib import Path

from compresslib.results import atomic_write_text

HERE = Path(__file__).resolve().parent
REFERENCE = HERE / "smoke_metrics.json"
HEADER = "_reference"
# wall-clock measurements, which differ run to run (the regex of tests/test_rerun_reuse.py)
TIMING = re.compile(r"latency|seconds|_ms$|_ms_|time|wall|cpu|iqr|speedup", re.I)
ART_MARK = "<ARTIFACTS>"


def headline(obj, root: str | None = None):
    """``obj`` without timing keys (at any depth); ``root`` inside a string becomes ``<ARTIFACTS>``."""
    if isinstance(obj, dict):
        return {k: headline(v, root) for k, v in obj.items() if not TIMING.search(str(k))}
    if isinstance(obj, list):
        return [headline(v, root) for v in obj]
    if root and isinstance(obj, str):
        return obj.replace(root, ART_MARK)
    return obj


def collect(art) -> dict[str, dict]:
    """{stage: headline metrics} of every stage of ``art/summary.json``; each must be ok (or cached: reused)."""
    art = Path(art).resolve()
    summary = art / "summary.json"
    if not summary.is_file():
        raise SystemExit(f"ARTIFACTS_DIR={art}: no summary.json (not a finished `compresslib.workbook.reproduce` run)")
    rows = json.loads(summary.read_text())
    bad = [
        f"{r['stage']} ({r.get('status')}: {r.get('error', '')})"
        for r in rows
        if r.get("status") not in ("ok", "cached")
    ]
    if bad:
        raise SystemExit(f"ARTIFACTS_DIR={art}: stages did not run ok, no reference from them: {', '.join(bad)}")
    out = {}
    for r in rows:
        metrics = art / r["stage"] / "metrics.json"
        if not metrics.is_file():
            raise SystemExit(f"ARTIFACTS_DIR={art}: stage {r['stage']} wrote no metrics.json")
        out[r["stage"]] = headline(json.loads(metrics.read_text()), str(art))
    return out


def machine() -> dict:
    """What float results depend on besides the code: torch's build and the CPU kernels it picks."""
    import torch

    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def header(art, threads: int) -> dict:
    """Commit and profile (from the stages' manifest.json), thread count, torch build."""
    art = Path(art).resolve()
    manifests = [json.loads(p.read_text()) for p in sorted(art.glob("[0-9][0-9]_*/manifest.json"))]
    commits = {(m["code"].get("commit"), m["code"].get("dirty")) for m in manifests}
    profiles = {m["params"].get("PROFILE") for m in manifests}
    if len(commits) != 1 or len(profiles) != 1:
        raise SystemExit(f"ARTIFACTS_DIR={art}: stages from several commits {commits} or profiles {profiles}")
    (commit, dirty), (profile,) = commits.pop(), profiles
    return {
        "commit": commit,
        "dirty": dirty,
        "profile": profile,
        "threads": threads,
        "jobs": 1,
        "platform": platform.machine(),
        **machine(),
        "note": "metrics.json of every stage, timing keys removed; compared with tolerance 0 by "
        "tests/test_smoke_reference.py; regenerate with tests/reference/make_reference.py ARTIFACTS_DIR",
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("artifacts", help="artifacts folder of a finished `reproduce --profile smoke --jobs 1` run")
    ap.add_argument(
        "--threads",
        type=int,
        default=int(os.environ.get("COMPRESSLIB_THREADS", "2")),
        help="COMPRESSLIB_THREADS the run used (>= 1; default: $COMPRESSLIB_THREADS, else 2, compresslib's default)",
    )
    ap.add_argument("--out", default=str(REFERENCE), help="file to write (default: %(default)s)")
    ap.add_argument(
        "--stage",
        action="append",
        default=[],
        help="re-reference only this stage (repeatable), keeping the others and the header of --out; needs --reason",
    )
    ap.add_argument("--reason", default="", help="why the numbers of --stage changed (kept in the header)")
    args = ap.parse_args(argv)
    if args.threads < 1:
        ap.error(f"--threads must be >= 1, got {args.threads}")
    if args.stage and not args.reason.strip():
        ap.error("--stage needs --reason: say why that stage's numbers changed deliberately")
    stages = collect(args.artifacts)
    head = header(args.artifacts, args.threads)
    if args.stage:
        ref = json.loads(Path(args.out).read_text())
        if ref[HEADER]["threads"] != args.threads:
            ap.error(f"--threads {args.threads}: the reference in {args.out} is for {ref[HEADER]['threads']}")
        for st in args.stage:
            if st not in stages:
                ap.error(f"--stage {st}: not among the stages of {args.artifacts} ({', '.join(stages)})")
            ref[st] = stages[st]
            ref[HEADER].setdefault("rereferenced", {})[st] = {"commit": head["commit"], "reason": args.reason}
    else:
        ref = {HEADER: head, **stages}
    out = atomic_write_text(args.out, json.dumps(ref, indent=1) + "\n")  # temporary file renamed over it
    print(f"wrote {out}: stages {', '.join(args.stage or stages)} from {args.artifacts}, header {ref[HEADER]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
