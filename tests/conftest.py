import os

os.environ.setdefault("COMPRESSLIB_PROGRESS", "0")
os.environ.setdefault("MPLBACKEND", "Agg")

import torch  # noqa: E402

from compresslib.checks import env_int  # noqa: E402

torch.set_num_threads(env_int("COMPRESSLIB_THREADS", 2))  # COMPRESSLIB_THREADS=abc: a clear error


import json  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """One smoke-profile run of every stage (stages read upstream artifacts), shared by
    tests/test_notebooks.py and tests/test_browser_report.py: (artifacts dir, exit code, summary rows)."""
    from compresslib.workbook import reproduce

    art = tmp_path_factory.mktemp("artifacts")
    rc = reproduce.main(["--profile", "smoke", "--artifacts", str(art), "--force", "--timeout", "900"])
    return art, rc, {r["stage"]: r for r in json.loads((art / "summary.json").read_text())}


def smoke_artifacts(request, env_var: str):
    """(artifacts, summary rows) of a finished smoke run: the folder named by ``$env_var`` (a run made by
    hand, e.g. of only some stages) or the session's ``smoke_run``."""
    from pathlib import Path

    given = os.environ.get(env_var)
    if given:
        art = Path(given)
        return art, {r["stage"]: r for r in json.loads((art / "summary.json").read_text())}
    art, _, rows = request.getfixturevalue("smoke_run")
    return art, rows


# ---- headless Chromium for tests marked `browser` (Debian's chromium, driven by Playwright) ----
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def require_chromium():
    """Skip (locally) or fail (CI=true: .ci/run installs it) when Chromium or Playwright is missing."""
    why = None
    if not (os.path.exists(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        why = f"{CHROMIUM} not found: `apt-get install chromium` (Debian) to run the browser tests"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            why = "python package playwright missing: pip install -e '.[dev]'"
    if why:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"browser test cannot run in CI: {why}")
        pytest.skip(why)


@pytest.fixture(scope="session")
def chromium():
    """A Playwright Browser on the system Chromium (never `playwright install`)."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True, timeout=60_000)
        try:
            yield browser
        finally:
            browser.close()
