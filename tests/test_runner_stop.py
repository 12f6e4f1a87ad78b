"""Stopping the runner stops its stages: no orphaned worker or notebook kernel keeps computing (and
writing into a staging folder) after ``reproduce`` got SIGTERM or was SIGKILLed."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

NB = """\
# %% tags=["parameters"]
OUT_DIR = "out"  # output folder

# %%
import os, pathlib, time
pids = pathlib.Path(os.environ["STOP_TEST_PIDS"])
(pids / "kernel.tmp").write_text(f"{os.getpid()} {os.getppid()}")
os.replace(pids / "kernel.tmp", pids / "kernel")
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purpose
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return True


def _wait(cond, what, timeout):
    t0 = time.time()
    while not cond():
        if time.time() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process-lifetime checks use /proc")
@pytest.mark.parametrize("jobs,sig", [(2, signal.SIGTERM), (2, signal.SIGKILL), (1, signal.SIGTERM)])
def test_stopping_the_runner_stops_its_kernels(tmp_path, jobs, sig):
    (tmp_path / "nb").mkdir()
    (tmp_path / "nb" / "00_sleep.py").write_text(NB)
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "t.yaml").write_text("common: {}\n")
    pids = tmp_path / "pids"
    pids.mkdir()
    env = dict(os.environ, PYTHONPATH=str(REPO), COMPRESSLIB_THREADS="1", STOP_TEST_PIDS=str(pids))
    cmd = [sys.executable, "-m", "compresslib.workbook.reproduce", "--profile", "t", "--jobs", str(jobs)]
    cmd += ["--notebooks", str(tmp_path / "nb"), "--profiles", str(tmp_path / "p"), "--artifacts", str(tmp_path / "a")]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(lambda: (pids / "kernel").exists(), "the stage's kernel to start", 240)
        kernel, parent = map(int, (pids / "kernel").read_text().split())
        assert (parent == proc.pid) == (jobs == 1)  # jobs > 1: the kernel belongs to a pool worker
        os.kill(proc.pid, sig)
        proc.wait(timeout=60)
        _wait(lambda: not _alive(parent), f"the stage's worker (pid {parent}) to exit", 60)
        _wait(lambda: not _alive(kernel), f"the notebook kernel (pid {kernel}) to exit", 60)
    finally:
        if proc.poll() is None:
            proc.kill()
