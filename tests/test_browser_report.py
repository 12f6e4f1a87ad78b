"""artifacts/index.html of a smoke run opens in headless Chromium from disk, with no network:
every image decodes, every link resolves, every linked notebook page loads. Screenshot saved.

Set COMPRESSLIB_REPORT_ARTIFACTS=/path/to/artifacts to check an existing run instead of the
session smoke run (tests/conftest.py::smoke_run).
"""

import json
import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from compresslib.workbook import report

pytestmark = pytest.mark.browser


def check_page(page, url: str) -> tuple[list[str], dict]:
    """Open ``url`` and return (problems, facts): broken images, unresolved links, network requests."""
    network = []
    page.on("request", lambda r: network.append(r.url) if urlsplit(r.url).scheme not in ("file", "data") else None)
    page.goto(url, wait_until="load", timeout=60_000)
    imgs = page.eval_on_selector_all(
        "img", "els => els.map(e => [e.getAttribute('src').slice(0, 80), e.complete, e.naturalWidth])"
    )
    links = page.eval_on_selector_all("a[href]", "els => els.map(e => [e.getAttribute('href'), e.href])")
    problems = [f"image {src} did not load" for src, done, w in imgs if not (done and w > 0)]
    for raw, absolute in links:
        u = urlsplit(absolute)
        if raw.startswith("#"):
            frags = [raw[1:], unquote(raw[1:])]  # the HTML spec tries the fragment as is, then decoded
            if raw[1:] and not page.evaluate("fs => fs.some(f => document.getElementById(f) !== null)", frags):
                problems.append(f"link {raw}: no element with that id")
        elif u.scheme != "file":
            problems.append(f"link {raw}: not a local file ({u.scheme})")
        elif not Path(unquote(u.path)).is_file():
            problems.append(f"link {raw}: {unquote(u.path)} does not exist")
    problems += [f"network request {n}" for n in network]
    return problems, {"images": len(imgs), "links": [raw for raw, _ in links]}


@pytest.fixture()
def artifacts(request):
    env = os.environ.get("COMPRESSLIB_REPORT_ARTIFACTS")
    if env:
        return Path(env)
    art, _, _ = request.getfixturevalue("smoke_run")
    return art


@pytest.mark.slow
def test_smoke_report_opens_offline(chromium, artifacts, tmp_path):
    index = report.build_report(artifacts)
    pngs = sorted(artifacts.glob("[0-9][0-9]_*/*.png"))
    notebooks = sorted(artifacts.glob("[0-9][0-9]_*/[0-9][0-9]_*.ipynb"))
    assert pngs and notebooks, f"the smoke run left no figures/notebooks in {artifacts}"
    ctx = chromium.new_context(viewport={"width": 1280, "height": 900}, offline=True)
    try:
        page = ctx.new_page()
        problems, facts = check_page(page, index.as_uri())
        assert problems == [], "\n".join(problems)
        assert facts["images"] == len(pngs), "every PNG of every stage is on the page"
        nb_links = sorted({h for h in facts["links"] if h.endswith(".html")})  # stage map + section
        assert len(nb_links) == len(notebooks), f"one rendered notebook per executed stage: {nb_links}"
        shot = tmp_path / "report.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
        print(f"screenshot: {shot}")
        for href in nb_links:  # each executed notebook, rendered by nbconvert, loads offline too
            problems, _ = check_page(page, (index.parent / unquote(href)).as_uri())
            assert problems == [], f"{href}:\n" + "\n".join(problems)
            assert page.locator(".jp-Cell").count() > 1, f"{href} shows no notebook cells"
        stages = json.loads((artifacts / "summary.json").read_text())
        page.goto(index.as_uri())
        for row in stages:  # the stage map shows every stage of the run with its status
            assert page.locator(f"[id='{row['stage']}']").count() == 1
    finally:
        ctx.close()


def test_checker_catches_broken_image_and_link(chromium, tmp_path):
    """The checker above is not vacuous: a missing figure, a dead link and a CDN script are caught."""
    st = tmp_path / "00_fake"
    st.mkdir()
    (st / "ok.csv").write_text("a\n1\n")
    (tmp_path / "index.html").write_text(
        "<html><body><img src='00_fake/gone.png'><a href='00_fake/ok.csv'>ok</a>"
        "<a href='00_fake/missing.html'>dead</a><a href='#nowhere'>anchor</a>"
        "<script src='https://cdn.invalid/x.js'></script></body></html>"
    )
    ctx = chromium.new_context(offline=True)
    try:
        problems, facts = check_page(ctx.new_page(), (tmp_path / "index.html").as_uri())
    finally:
        ctx.close()
    text = "\n".join(problems)
    assert "image 00_fake/gone.png did not load" in text
    assert "link 00_fake/missing.html" in text and "link #nowhere" in text
    assert "network request https://cdn.invalid/x.js" in text
    assert "ok.csv" not in text and facts["images"] == 1
