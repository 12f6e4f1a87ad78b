"""Trustworthy re-runs on tiny fake notebooks: manifests, upstream digests, relocation, the lock,
SIGKILL mid-stage, merged summary.json (issue 13)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from compresslib.workbook import provenance as pv
from compresslib.workbook import report, reproduce

UP = textwrap.dedent("""\
    # %% tags=["parameters"]
    N = 3  # rows of data.csv; range [1, 100]
    SLEEP = 0.0  # seconds to wait before writing the outputs; range [0, 600]
    OUT_DIR = "out"  # output folder

    # %%
    import json, os, pathlib, time
    out = pathlib.Path(OUT_DIR)
    out.mkdir(parents=True, exist_ok=True)
    (out / "run.txt").write_text(f"sleep={SLEEP}")
    ppid, t_end = os.getppid(), time.time() + SLEEP
    while time.time() < t_end:
        if os.getppid() != ppid:  # the runner was killed: do not outlive it
            os._exit(0)
        time.sleep(0.1)
    (out / "data.csv").write_text("x\\n" + "".join(f"{i}\\n" for i in range(N)))
    json.dump({"rows_accuracy": float(N)}, open(out / "metrics.json", "w"))
""")
DOWN = textwrap.dedent("""\
    # %% tags=["parameters"]
    OUT_DIR = "out"  # output folder

    # %%
    import json, pathlib
    out = pathlib.Path(OUT_DIR)
    out.mkdir(parents=True, exist_ok=True)
    text = (out.parent / "00_up" / "data.csv").read_text()
    json.dump({"sum_accuracy": float(sum(int(v) for v in text.split()[1:]))}, open(out / "metrics.json", "w"))
""")
UPSTREAM = {"00_up": (), "01_down": ("00_up",)}


def _tree(root: Path, sleep=0.0) -> Path:
    (root / "nb").mkdir(parents=True)
    (root / "nb" / "00_up.py").write_text(UP)
    (root / "nb" / "01_down.py").write_text(DOWN)
    (root / "p").mkdir()
    (root / "p" / "t.yaml").write_text("00_up:\n  N: 4\n")
    (root / "p" / "slow.yaml").write_text(f"00_up:\n  N: 4\n  SLEEP: {sleep}\n")
    return root


def _argv(root: Path, *extra, profile="t"):
    return [
        "--profile",
        profile,
        "--notebooks",
        str(root / "nb"),
        "--profiles",
        str(root / "p"),
        "--artifacts",
        str(root / "art"),
        *extra,
    ]


def _status(root: Path) -> dict:
    return {s: r["status"] for s, r in pv.read_summary(root / "art").items()}


def _metric(root: Path, stage: str) -> float:
    return next(iter(json.loads((root / "art" / stage / "metrics.json").read_text()).values()))


@pytest.fixture
def up_down(monkeypatch):
    monkeypatch.setattr("compresslib.stages.UPSTREAM", UPSTREAM)


def test_manifest_upstream_change_relocation_and_merged_summary(tmp_path, up_down, capsys):
    root = _tree(tmp_path / "a")
    assert reproduce.main(_argv(root)) == 0
    assert _status(root) == {"00_up": "ok", "01_down": "ok"} and _metric(root, "01_down") == 6.0  # 0+1+2+3
    man = json.loads((root / "art" / "00_up" / "manifest.json").read_text())
    assert man["params"] == {"N": 4} and man["stage"] == "00_up"
    assert set(man["outputs"]) == {"00_up.ipynb", "data.csv", "metrics.json", "run.txt"}
    assert man["outputs"]["data.csv"] == {"sha256": pv.sha256_file(root / "art" / "00_up" / "data.csv"), "size": 10}
    assert man["code"]["package"] and "dirty" in man["code"]
    down = json.loads((root / "art" / "01_down" / "manifest.json").read_text())
    assert down["upstream"] == {"00_up": man["digest"]}
    assert str(tmp_path) not in json.dumps(man) + json.dumps(down)  # no absolute path: relocatable
    assert not list((root / "art").glob("*.staging*")) and not (root / "art" / ".lock").exists()

    assert reproduce.main(_argv(root)) == 0
    assert _status(root) == {"00_up": "cached", "01_down": "cached"}

    # --only 01 keeps 00's row; one changed byte upstream => 01 is not cached and re-runs on the new data
    csv = root / "art" / "00_up" / "data.csv"
    csv.write_text(csv.read_text().replace("3", "9"))
    assert pv.stage_state(root / "art", "00_up") == ("stale", "output data.csv changed since the run (sha256 differs)")
    assert pv.stage_state(root / "art", "01_down")[0] == "stale"
    capsys.readouterr()
    assert reproduce.main(_argv(root, "--only", "01")) == 0
    out = capsys.readouterr().out
    assert "[01_down] not cached: upstream 00_up changed" in out
    assert "warning: upstream 00_up is not current (output data.csv changed" in out
    assert _metric(root, "01_down") == 12.0 and _status(root) == {"00_up": "cached", "01_down": "ok"}
    page = report.build_report(root / "art", render_notebooks=False).read_text()
    assert "class='l stale'>stale<" in page and "output data.csv changed since the run" in page
    # the whole run: 00 is stale (its own output changed) => both re-run, back to the true data
    assert reproduce.main(_argv(root)) == 0
    assert _status(root) == {"00_up": "ok", "01_down": "ok"} and _metric(root, "01_down") == 6.0

    # copy the checkout (notebooks, profiles, artifacts) elsewhere: every stage is still cached
    other = tmp_path / "moved"
    shutil.copytree(root, other, symlinks=True)
    assert reproduce.main(_argv(other)) == 0
    assert _status(other) == {"00_up": "cached", "01_down": "cached"}

    # a truncated upstream manifest: no crash, 01 re-runs with a warning, summary.json written
    m = other / "art" / "00_up" / "manifest.json"
    m.write_text(m.read_text()[:50])
    capsys.readouterr()
    assert reproduce.main(_argv(other, "--only", "01_down")) == 0
    assert "upstream 00_up is not current (manifest.json unreadable" in capsys.readouterr().out
    assert _status(other) == {"00_up": "cached", "01_down": "ok"}
    page = report.build_report(other / "art", render_notebooks=False).read_text()
    assert page.count("class='l ok'") == 0 and "manifest.json unreadable" in page
    # a truncated metrics.json of a cached stage: its digest differs => re-run, no JSONDecodeError
    mj = other / "art" / "01_down" / "metrics.json"
    mj.write_text(mj.read_text()[:5])
    assert reproduce.main(_argv(other)) == 0 and _status(other) == {"00_up": "ok", "01_down": "ok"}


def test_failed_rerun_is_not_current_and_kept_aside(tmp_path, up_down):
    root = _tree(tmp_path)
    assert reproduce.main(_argv(root)) == 0
    (root / "nb" / "00_up.py").write_text(UP.replace('(out / "data.csv")', '1 / 0\n(out / "data.csv")'))
    assert reproduce.main(_argv(root)) == 1
    assert _status(root) == {"00_up": "failed", "01_down": "skipped"}
    assert (root / "art" / "00_up.failed" / "00_up.ipynb").is_file()  # for debugging, never current
    assert not (root / "art" / "00_up" / "manifest.json").exists()  # the old result stops being current
    page = report.build_report(root / "art", render_notebooks=False).read_text()
    assert "ZeroDivisionError" in page and "class='l ok'" not in page and "NOT CURRENT" in page
    assert "00_up.failed/00_up.ipynb" in page


def _wait(cond, what, timeout=90):
    t0 = time.time()
    while not cond():
        if time.time() - t0 > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_sigkill_lock_and_rerun(tmp_path):
    """Run 1 ok; run 2 (slow) is SIGKILLed mid-stage: summary + index.html say killed, a concurrent
    run is refused while it lives, its files never become current, and the next run re-runs 00."""
    root = _tree(tmp_path, sleep=120)
    (root / "nb" / "01_down.py").unlink()
    env = dict(os.environ, PYTHONPATH=str(reproduce.REPO), COMPRESSLIB_THREADS="1")
    cmd = [sys.executable, "-m", "compresslib.workbook.reproduce"]
    assert subprocess.run(cmd + _argv(root), env=env, capture_output=True, timeout=300).returncode == 0
    first = json.loads((root / "art" / "00_up" / "manifest.json").read_text())
    proc = subprocess.Popen(
        cmd + _argv(root, profile="slow"),
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait(lambda: any((d / "run.txt").exists() for d in (root / "art").glob("00_up.staging*")), "the slow stage")
        assert pv.read_summary(root / "art")["00_up"]["status"] == "running"
        with pytest.raises(SystemExit, match=rf"is in use by another compresslib.workbook.reproduce: pid {proc.pid} "):
            reproduce.main(_argv(root))
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    row = pv.read_summary(root / "art")["00_up"]
    assert pv.row_status(row)[0] == "killed"
    page = report.build_report(root / "art", render_notebooks=False).read_text()
    assert "class='l killed'>killed<" in page and "class='l ok'" not in page
    assert (root / "art" / "00_up" / "run.txt").read_text() == "sleep=0.0"  # the killed run's file is not current
    p = subprocess.run(cmd + _argv(root), env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "taking over the lock" in p.stderr and "marking it not current" in p.stdout
    assert _status(root) == {"00_up": "ok"}  # re-ran although its parameters equal the earlier run's
    again = json.loads((root / "art" / "00_up" / "manifest.json").read_text())
    assert again["key"] == first["key"]  # same inputs: only the kill made it re-run
    assert not list((root / "art").glob("00_up.staging*")) and not (root / "art" / ".lock").exists()
