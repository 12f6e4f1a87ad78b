"""JupyterLab as a user explores it: open the dynamic-inference notebook (07), run all cells with
the smoke parameters, drag the "threshold" slider, and check the MACs/accuracy read-out changes.

The server runs on a free localhost port with a random token and no browser of its own; its root
is a temporary folder holding notebook 07 converted to .ipynb with the smoke profile's parameters
injected (papermill's injected-parameters cell), so nothing in the repository is touched. The
server is always killed. A screenshot of the explored notebook is saved in the test's tmp dir.

The drag acts as a user does: it waits until the slider has stopped moving, checks that the handle is
what lies under the mouse, and reads the read-out once it is painted. JupyterLab 4's default windowing
mode ('contentVisibility') lays out cells outside the viewport with placeholder heights; after a
programmatic scroll the cells above the slider get their real heights and push it down. With stage
07's per-seed cascade cells added below the explorer (commit c364262) the old test pressed the mouse at
the handle's pre-layout position, y = 1730 px in a 1000 px viewport (measured: nothing under that
point, the handle never moved), then waited 60 s for the read-out to change -- the widget itself
worked. (A read-out still outside the painted area also reads '' through ``innerText``.)
"""

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from compresslib.workbook import reproduce

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
STAGE = "07_dynamic_inference"
SERVER_START_S = 120  # jupyter lab up and answering /api/status
RUN_ALL_S = 900  # every cell of 07 under the smoke profile, in the lab kernel
WIDGET_S = 60  # slider change -> read-out re-rendered


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _smoke_notebook(dest: Path, out_dir: Path) -> Path:
    """notebooks/07_*.py -> dest/07_*.ipynb with the smoke parameters injected, unpaired."""
    import jupytext
    import nbformat
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    src = REPO / "notebooks" / f"{STAGE}.py"
    declared = reproduce.notebook_parameters(src)
    params = reproduce.stage_parameters(
        STAGE, declared, reproduce.load_profile("smoke", REPO / "profiles"), {"PROFILE": "smoke"}
    )
    params.update(json.loads(os.environ.get("COMPRESSLIB_LAB_EXTRA_PARAMS", "{}")))  # local debugging only
    params["OUT_DIR"] = str(out_dir)
    nb = jupytext.read(src)
    nb.metadata.pop("jupytext", None)  # no pairing: the .ipynb is the only copy the server sees
    nb.metadata["kernelspec"] = {
        "name": reproduce.KERNEL,
        "display_name": f"Python ({reproduce.KERNEL})",
        "language": "python",
    }
    path = dest / f"{STAGE}.ipynb"
    jupytext.write(nb, path, fmt="ipynb")
    nb = parameterize_notebook(load_notebook_node(str(path)), params, kernel_name=reproduce.KERNEL, language="python")
    nbformat.write(nb, path)
    return path


@pytest.fixture()
def lab_server(tmp_path):
    """(base url, token, root) of a JupyterLab server; killed (process group) on teardown."""
    if not (REPO / "notebooks" / f"{STAGE}.py").exists():
        pytest.skip(f"notebooks/{STAGE}.py not written yet")
    reproduce.ensure_kernel()
    root = tmp_path / "lab_root"
    root.mkdir()
    _smoke_notebook(root, tmp_path / "artifacts" / STAGE)
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(
        os.environ,
        COMPRESSLIB_THREADS=os.environ.get("COMPRESSLIB_THREADS", "1"),
        COMPRESSLIB_PROGRESS="0",
        JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
        JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
        MPLBACKEND="module://matplotlib_inline.backend_inline",
    )
    log = open(tmp_path / "jupyter.log", "w")
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        "--allow-root",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--LabApp.expose_app_in_browser=True",
        f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}",
        "--LabApp.news_url=",
        "--LabApp.extension_manager=readonly",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"jupyter lab exited with {proc.returncode}:\n{(tmp_path / 'jupyter.log').read_text()[-3000:]}"
                )
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"jupyter lab did not answer within {SERVER_START_S} s:\n"
                    f"{(tmp_path / 'jupyter.log').read_text()[-3000:]}"
                )
            time.sleep(0.5)
        yield base, token, root
    finally:
        try:  # a clean shutdown stops the kernels too (they also exit when their parent dies)
            req = urllib.request.Request(f"{base}/api/shutdown?token={token}", method="POST", data=b"")
            urllib.request.urlopen(req, timeout=10).close()
            proc.wait(timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            pass
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # the server's process group, if still there
            proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)
        log.close()


NOTEBOOK_STATE = """() => {
  const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  if (!w || !w.content || !w.sessionContext) return null;
  const cells = w.content.widgets.filter(c => c.model.type === 'code');
  const errors = [];
  for (const c of cells) for (let i = 0; i < c.model.outputs.length; i++) {
    const o = c.model.outputs.get(i).toJSON();
    if (o.output_type === 'error') errors.push(o.ename + ': ' + o.evalue);
  }
  const k = w.sessionContext.session && w.sessionContext.session.kernel;
  return {kernel: k ? k.status : 'none', cells: cells.length,
          done: cells.filter(c => c.model.executionCount !== null).length, errors};
}"""


def _numbers(readout: str) -> dict:
    """threshold, MACs (M) and accuracy (%) of the explorer's read-out line."""
    import re

    out = {}
    for key, pat in (
        ("threshold", r"threshold ([0-9.]+)"),
        ("macs", r"MACs ([0-9.]+) M"),
        ("accuracy", r"accuracy ([0-9.]+) %"),
    ):
        m = re.search(pat, readout)
        assert m, f"read-out lacks {key}: {readout!r}"
        out[key] = float(m.group(1))
    return out


HIT_HANDLE = """([x, y]) => { const e = document.elementFromPoint(x, y);
  return !!(e && e.closest('.noUi-handle, .ui-slider-handle')); }"""


def _settled_box(locator, tries: int = 40, pause: float = 0.25) -> dict:
    """``locator``'s bounding box once it has stopped moving. JupyterLab renders off-screen cells lazily
    (windowing mode 'contentVisibility': their height is a placeholder until they are painted), so
    right after a scroll the cells above the slider still grow or shrink and the slider moves."""
    prev = None
    for _ in range(tries):
        box = locator.bounding_box()
        if box is not None and prev is not None and all(abs(box[k] - prev[k]) < 0.5 for k in box):
            return box
        prev = box
        time.sleep(pause)
    assert prev is not None, "the slider has no bounding box (not rendered)"
    return prev


def _rendered_text(page, readout) -> str:
    """The read-out's text once it is painted: ``innerText`` of a cell the browser skipped rendering
    (content-visibility) is empty, so comparing it before/after a drag would compare '' with ''."""
    page.wait_for_function("el => el.innerText.includes('MACs')", arg=readout.element_handle(), timeout=WIDGET_S * 1000)
    return readout.inner_text()


def _drag(page, slider, readout, frac: float | None = None) -> str:
    """Drag the slider handle with the mouse to ``frac`` of its track (past the ends clamps; None: the end
    farther from the handle, so the value always changes); return the new read-out once re-rendered.

    The handle is pressed only once the layout has settled and the point under the mouse is the handle
    (a press on stale coordinates lands on another cell and the slider never moves)."""
    handle_loc = slider.locator(".noUi-handle, .ui-slider-handle").first
    track_loc = slider.locator(".noUi-target, .slider").first
    for attempt in range(3):
        slider.scroll_into_view_if_needed(timeout=WIDGET_S * 1000)
        handle, track = _settled_box(handle_loc), _settled_box(track_loc)
        hx, hy = handle["x"] + handle["width"] / 2, handle["y"] + handle["height"] / 2
        if page.evaluate(HIT_HANDLE, [hx, hy]):
            break
    else:
        raise AssertionError(
            f"the slider handle is not under the mouse at ({hx:.0f}, {hy:.0f}) after 3 scrolls "
            f"(handle box {handle}, track box {track})"
        )
    if frac is None:
        frac = 1.0 if hx < track["x"] + track["width"] / 2 else 0.0
    old = _rendered_text(page, readout)
    page.mouse.move(hx, hy)
    page.mouse.down()
    page.mouse.move(track["x"] - 20 + frac * (track["width"] + 40), track["y"] + track["height"] / 2, steps=12)
    page.mouse.up()
    try:
        page.wait_for_function(
            "([el, old]) => el.innerText !== old", arg=[readout.element_handle(), old], timeout=WIDGET_S * 1000
        )
    except Exception as e:  # say what the mouse did instead of a bare timeout
        raise AssertionError(
            f"the read-out did not change within {WIDGET_S} s after dragging the handle from "
            f"({hx:.0f}, {hy:.0f}) to {frac:.0%} of the track {track}; handle now at "
            f"{handle_loc.bounding_box()}; read-out {old!r}"
        ) from e
    return _rendered_text(page, readout)


def test_threshold_slider_changes_readout(chromium, lab_server, tmp_path):  # chromium first: skip before starting lab
    base, token, root = lab_server
    ctx = chromium.new_context(viewport={"width": 1400, "height": 1000})
    page = ctx.new_page()
    try:
        page.goto(f"{base}/lab/tree/{STAGE}.ipynb?token={token}", timeout=120_000)
        page.wait_for_function(
            """() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
            return !!(w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel
                      && w.sessionContext.session.kernel.status === 'idle'); }""",
            timeout=120_000,
        )
        page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
        deadline, state = time.monotonic() + RUN_ALL_S, None
        while time.monotonic() < deadline:
            state = page.evaluate(NOTEBOOK_STATE)
            if state and state["errors"]:
                break
            if state and state["done"] == state["cells"] and state["kernel"] == "idle":
                break
            time.sleep(2)
        page.screenshot(path=str(tmp_path / "lab_after_run.png"))
        assert state and not state["errors"], f"a cell raised: {state and state['errors']}"
        assert state["done"] == state["cells"], f"not every cell ran within {RUN_ALL_S} s: {state}"

        slider = page.locator(".widget-slider", has=page.locator(".widget-label", has_text="threshold")).first
        slider.scroll_into_view_if_needed(timeout=WIDGET_S * 1000)
        readout = page.locator(".widget-html, .widget-label", has_text="MACs").filter(has_text="accuracy").first
        readout.wait_for(timeout=WIDGET_S * 1000)
        before = _rendered_text(page, readout)
        # the slider starts at the threshold chosen on validation (possibly an end of the track): drag it to
        # the farther end; if the MACs happen to be equal there (a flat stretch of the curve), to the other end
        after = _drag(page, slider, readout)
        if _numbers(after)["macs"] == _numbers(before)["macs"]:
            after = _drag(page, slider, readout)
        shot = tmp_path / "lab_slider.png"
        page.wait_for_function(
            f"() => {{ const s = ({NOTEBOOK_STATE})(); return s && s.kernel === 'idle'; }}", timeout=WIDGET_S * 1000
        )  # the plot under the read-out has been redrawn too
        no_news = page.get_by_role("button", name="No")
        if no_news.count():  # JupyterLab's one-time "notified about news?" toast hides part of the screenshot
            no_news.first.click()
        readout.scroll_into_view_if_needed()
        page.screenshot(path=str(shot))
        print(f"read-out before: {before}\nread-out after:  {after}\nscreenshot: {shot}")
        b, a = _numbers(before), _numbers(after)
        assert a["threshold"] != b["threshold"], "the slider did not move"
        assert a["macs"] != b["macs"], f"moving the threshold did not change the MACs read-out: {before!r} -> {after!r}"
    finally:
        ctx.close()
