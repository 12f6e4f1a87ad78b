"""Provenance of stage results: manifests, cache keys, atomic stage folders, the lock, summary.json.

Used by ``compresslib.workbook.reproduce`` (writes) and ``compresslib.workbook.report`` (reads). A stage result
``<artifacts>/<stage>/`` is *current* when its ``manifest.json`` parses, every output file it lists
still has the recorded sha256 and size, and every upstream manifest it read still has the recorded
digest. Every path stored here is relative to the artifacts root, so a copied checkout stays cached.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from ..results import _jsonable, read_json, sha256_file, write_json
from ..stages import REPO

MANIFEST = "manifest.json"
STAMP = ".reproduce.json"
RUNNER_FILES = {MANIFEST, STAMP}  # written by the runner, not by the notebook: not outputs


# ----------------------------------------------------------------------------------------- digests
def canonical(obj) -> str:
    return json.dumps(_jsonable(obj), sort_keys=True, separators=(",", ":"), default=str)


def digest(obj) -> str:
    """sha256 of the canonical JSON of ``obj`` (key order does not matter)."""
    return hashlib.sha256(canonical(obj).encode()).hexdigest()


def output_digests(stage_dir) -> dict:
    """``{relative path: {"sha256", "size"}}`` of every file under ``stage_dir`` (symlinks are not
    followed: a link is recorded by its target string), runner files excluded."""
    stage_dir, out = Path(stage_dir), {}
    for dirpath, dirnames, filenames in os.walk(stage_dir, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames) + sorted(d for d in dirnames if os.path.islink(os.path.join(dirpath, d))):
            p = Path(dirpath) / name
            rel = p.relative_to(stage_dir).as_posix()
            if rel in RUNNER_FILES:
                continue
            if p.is_symlink():
                out[rel] = {"symlink": os.readlink(p)}
            else:
                out[rel] = {"sha256": sha256_file(p), "size": p.stat().st_size}
    return out


def relative_params(params: dict, art) -> dict:
    """The parameters that determine a result, with paths relative to the artifacts root:
    ``OUT_DIR`` is dropped (it is the stage name), a ``DATA_ROOT`` inside the root becomes relative."""
    art = Path(art).resolve()
    out = {k: v for k, v in params.items() if k != "OUT_DIR"}
    root = out.get("DATA_ROOT")
    if isinstance(root, str) and root:
        try:
            out["DATA_ROOT"] = "<artifacts>/" + Path(root).resolve().relative_to(art).as_posix()
        except ValueError:
            pass
    return out


def cache_key(source: str, params: dict, upstream: dict) -> str:
    """sha256 of (notebook source, relative parameters, upstream manifests' digests, library code)."""
    from ..results import library_digest

    return digest(
        {
            "source": hashlib.sha256(source.encode()).hexdigest(),
            "params": params,
            "upstream": upstream,
            "library": library_digest(),
        }
    )


# ----------------------------------------------------------------------------------------- manifests
def read_manifest(stage_dir):
    """``(manifest, "")`` of a stage folder, or ``(None, reason)`` when it is missing or unreadable."""
    path = Path(stage_dir) / MANIFEST
    if Path(stage_dir).is_symlink() and not Path(stage_dir).exists():
        return None, "stage folder is a dangling link"
    if not path.exists():
        return None, "no manifest.json (not produced by a successful run)"
    if path.is_symlink():
        return None, "manifest.json is a symlink"
    try:
        man = read_json(path)
    except (OSError, ValueError) as e:
        return None, f"manifest.json unreadable ({type(e).__name__}: {e})"
    if not isinstance(man, dict) or not isinstance(man.get("outputs"), dict) or "digest" not in man:
        return None, "manifest.json is incomplete"
    return man, ""


def verify_outputs(stage_dir, man: dict) -> str:
    """'' when every output the manifest lists still has its digest, else the first difference."""
    stage_dir = Path(stage_dir)
    for rel, rec in man["outputs"].items():
        p = stage_dir / rel
        if "symlink" in rec:
            if not p.is_symlink() or os.readlink(p) != rec["symlink"]:
                return f"output {rel} changed since the run"
            continue
        if not p.is_file() or p.is_symlink():
            return f"output {rel} is missing"
        if p.stat().st_size != rec.get("size") or sha256_file(p) != rec.get("sha256"):
            return f"output {rel} changed since the run (sha256 differs)"
    return ""


def manifest_digest(man: dict) -> str:
    return digest({"stage": man.get("stage"), "key": man.get("key"), "outputs": man.get("outputs")})


_VERSION = None


def code_version() -> dict:
    """Package version, git commit and dirty flag of the checkout (commit None without git)."""
    global _VERSION
    if _VERSION is None:
        from .. import __version__

        commit = dirty = None
        try:
            run = dict(cwd=REPO, capture_output=True, text=True, timeout=20)
            r = subprocess.run(["git", "rev-parse", "HEAD"], **run)
            if r.returncode == 0:
                commit = r.stdout.strip()
                s = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], **run)
                dirty = bool(s.stdout.strip()) if s.returncode == 0 else None
        except (OSError, subprocess.SubprocessError):
            pass
        _VERSION = {"package": __version__, "commit": commit, "dirty": dirty}
    return _VERSION


def write_manifest(
    stage_dir, stage: str, *, params: dict, source: str, key: str, upstream: dict, seconds: float
) -> dict:
    """Write ``stage_dir/manifest.json`` (after the notebook finished) and return it."""
    stage_dir = Path(stage_dir)
    models = {}
    if (stage_dir / "models.json").is_file():
        try:
            models = read_json(stage_dir / "models.json")
        except (OSError, ValueError) as e:
            models = {"error": f"models.json unreadable: {e}"}
    man = {
        "stage": stage,
        "key": key,
        "params": params,
        "source_sha256": hashlib.sha256(source.encode()).hexdigest(),
        "code": code_version(),
        "upstream": upstream,
        "outputs": output_digests(stage_dir),
        "models": models,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": seconds,
    }
    man["digest"] = manifest_digest(man)
    write_json(stage_dir / MANIFEST, man)
    return man


NOT_CURRENT = "not-current"


def upstream_digests(art, stages) -> dict:
    """``{stage: digest}`` of the manifests of ``stages``: None when the stage folder does not exist,
    ``NOT_CURRENT`` when it exists without a valid manifest or its outputs changed."""
    out = {}
    for s in stages:
        d = Path(art) / s
        man, _ = read_manifest(d)
        if man is None:
            out[s] = NOT_CURRENT if (d.exists() or d.is_symlink()) else None
        else:
            out[s] = NOT_CURRENT if verify_outputs(d, man) else man["digest"]
    return out


def stage_state(art, stage: str, _seen=None) -> tuple[str, str]:
    """``("current" | "stale" | "none", reason)`` of ``<art>/<stage>`` from its manifest alone."""
    _seen = {} if _seen is None else _seen
    if stage in _seen:
        return _seen[stage]
    _seen[stage] = ("stale", "upstream cycle")
    d = Path(art) / stage
    man, why = read_manifest(d)
    if man is None:
        res = ("none", why)
    else:
        res = ("stale", verify_outputs(d, man)) if verify_outputs(d, man) else ("current", "")
        if res[0] == "current":
            for up, dig in (man.get("upstream") or {}).items():
                if dig == NOT_CURRENT:
                    res = ("stale", f"upstream {up} was not current when this stage ran")
                    break
                up_man, _ = read_manifest(Path(art) / up)
                if dig is None and up_man is None:
                    continue  # the upstream did not exist then and has no result now
                if up_man is None or up_man["digest"] != dig:
                    res = ("stale", f"upstream {up} changed since this run")
                    break
                if stage_state(art, up, _seen)[0] != "current":
                    res = ("stale", f"upstream {up} is not current")
                    break
    _seen[stage] = res
    return res


# ----------------------------------------------------------------------------------------- atomic stages
def staging_dir(art, stage: str) -> Path:
    """Where a stage runs: a sibling of ``<art>/<stage>`` so ``Path(OUT_DIR).parent`` is still the
    artifacts root (notebooks read upstream stages there); ``results.cache_dir`` drops the suffix.
    The runner's pid is part of the name: a kernel orphaned by a killed run never writes into a
    later run's staging folder."""
    return Path(art) / f"{stage}.staging{os.getpid()}"


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def fresh_staging(art, stage: str) -> Path:
    d = staging_dir(art, stage)
    _remove(d)
    d.mkdir(parents=True)
    return d


def promote(art, stage: str) -> Path:
    """Replace ``<art>/<stage>`` by its staging folder (rename old away, rename new in, delete old)."""
    art = Path(art)
    new, cur = staging_dir(art, stage), art / stage
    old = art / f".{stage}.old{os.getpid()}"
    _remove(old)
    if cur.is_symlink() or cur.exists():
        os.rename(cur, old)
    os.rename(new, cur)
    _remove(old)
    _remove(art / f"{stage}.failed")
    return cur


def discard(art, stage: str, keep: bool = True) -> Path | None:
    """A failed run: its staging folder becomes ``<stage>.failed`` (for debugging) or is removed,
    and the previous result stops being current (its manifest is moved aside)."""
    art = Path(art)
    new, failed = staging_dir(art, stage), art / f"{stage}.failed"
    _remove(failed)
    kept = None
    if new.exists():
        if keep:
            os.rename(new, failed)
            kept = failed
        else:
            _remove(new)
    supersede(art, stage)
    return kept


def supersede(art, stage: str) -> None:
    """Mark the result in ``<art>/<stage>`` as not current (its manifest is renamed aside)."""
    m = Path(art) / stage / MANIFEST
    if m.exists() and not Path(art, stage).is_symlink():
        os.replace(m, m.with_name(".manifest.superseded.json"))


# ----------------------------------------------------------------------------------------- processes
def pid_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (TypeError, ValueError, OverflowError):
        return False
    return True


HOST = socket.gethostname()


def row_status(row: dict) -> tuple[str, str]:
    """(status, error) of a summary row; a 'running' row whose process is gone is 'killed'."""
    st, err = str(row.get("status", "")), str(row.get("error", "") or "")
    if st == "running":
        if row.get("host", HOST) == HOST and not pid_alive(row.get("pid")):
            return "killed", f"the run (pid {row.get('pid')}) died while this stage was running"
        if row.get("host", HOST) != HOST:
            return "running", f"running on {row.get('host')} (pid {row.get('pid')})"
    return st, err


# ----------------------------------------------------------------------------------------- summary.json
def read_summary(art) -> dict:
    """``{stage: row}`` of ``<art>/summary.json`` (list or dict form); unreadable -> ``{}``."""
    path = Path(art) / "summary.json"
    if not path.is_file() or path.is_symlink():
        return {}
    try:
        rows = read_json(path)
    except (OSError, ValueError) as e:
        print(f"warning: {path} unreadable ({e}); starting a new one", file=sys.stderr)
        return {}
    rows = rows.values() if isinstance(rows, dict) else rows
    return {r["stage"]: r for r in rows if isinstance(r, dict) and isinstance(r.get("stage"), str)}


def update_summary(art, rows: dict) -> Path:
    """Merge ``{stage: row}`` into ``summary.json`` (every other stage's last status is kept)."""
    merged = read_summary(art)
    merged.update(rows)
    return write_json(Path(art) / "summary.json", [merged[s] for s in sorted(merged)])


# ----------------------------------------------------------------------------------------- lock
class ArtifactsLock:
    """``<art>/.lock`` (pid, host, start time, command): one ``reproduce`` per artifacts folder.

    A lock held by a live process -> SystemExit naming it; a lock of a dead pid on this host is
    taken over with a notice. Released on exit (``with`` block, also on exceptions)."""

    def __init__(self, art, command: str):
        self.path, self.command, self.held = Path(art) / ".lock", command, False

    def __enter__(self):
        info = {
            "pid": os.getpid(),
            "host": HOST,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "command": self.command,
        }
        tmp = self.path.with_name(f".lock.tmp{os.getpid()}")
        for _ in range(3):
            tmp.write_text(json.dumps(info) + "\n")
            try:
                os.link(tmp, self.path)  # atomic: fails if a lock exists, never half-written
                self.held = True
                break
            except FileExistsError:
                other = self._read()
                if other.get("host") == HOST and not pid_alive(other.get("pid")):
                    print(
                        f"notice: taking over the lock {self.path} of process {other.get('pid')} "
                        f"(started {other.get('started')}), which is no longer running",
                        file=sys.stderr,
                    )
                    self.path.unlink(missing_ok=True)
                    continue
                raise SystemExit(
                    f"error: {self.path.parent} is in use by another compresslib.workbook.reproduce: pid {other.get('pid')} "
                    f"on {other.get('host')}, started {other.get('started')}, command: {other.get('command')}. "
                    f"Wait for it, or use another --artifacts folder (delete {self.path} only if that process "
                    f"is gone)"
                )
            finally:
                tmp.unlink(missing_ok=True)
        if not self.held:
            raise SystemExit(f"error: could not take the lock {self.path}")
        return self

    def _read(self) -> dict:
        try:
            d = json.loads(self.path.read_text())
            return d if isinstance(d, dict) else {}
        except (OSError, ValueError):
            return {"pid": None, "host": HOST, "started": "?", "command": "? (unreadable lock)"}

    def __exit__(self, *exc):
        if self.held and self._read().get("pid") == os.getpid():
            self.path.unlink(missing_ok=True)
        self.held = False
        return False
