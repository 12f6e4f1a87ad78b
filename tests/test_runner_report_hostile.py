"""The report stays in its folder and pages carry no active content, whatever the artifacts hold (issue 13)."""

import json
import os
import re
from pathlib import Path

import nbformat
import pytest

from compresslib.workbook import report

SECRET = Path("/etc/os-release")

HOSTILE_HTML = (
    "<b>table</b><script>alert(1)</script><img src=x onerror=alert(2)>"
    "<iframe src='file:///etc/os-release'></iframe><a href='javascript:alert(3)'>j</a>"
    "<a href=' JaVa&#x09;script:alert(5)'>k</a><object data='file:///etc/passwd'></object>"
    "<embed src='/etc/os-release'><svg onload='alert(4)'><circle r='2'/></svg>"
    "<meta http-equiv='refresh' content='0;url=file:///etc/os-release'>"
    "<img src='../../../../etc/os-release'><form action='javascript:alert(6)'></form>"
    "<div style='background:url(file:///etc/os-release)'>styled</div>"
)


@pytest.fixture()
def hostile(tmp_path):
    if not SECRET.is_file():
        pytest.skip("needs /etc/os-release")
    art = tmp_path / "art"
    evil = art / "00_evil"
    evil.mkdir(parents=True)
    (evil / "metrics.json").write_text(json.dumps({"test_accuracy": 0.5}))
    os.symlink(SECRET, evil / "leak.csv")  # a CSV that is a link out of the root
    os.symlink(SECRET, evil / "leak.png")
    (art / "outside.json").write_text("{}")
    os.symlink("/etc", art / "01_etc")  # a stage folder that is a link out of the root
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell(
            "# 00 · Evil\n\n<img src='/etc/os-release'> ![x](/etc/os-release)<script>alert(7)</script>"
        ),
        nbformat.v4.new_code_cell(
            "x",
            outputs=[
                nbformat.v4.new_output(
                    "display_data",
                    data={"text/html": HOSTILE_HTML, "application/javascript": "alert(8)", "text/plain": "plain"},
                ),
                nbformat.v4.new_output("execute_result", data={"text/html": HOSTILE_HTML}, execution_count=1),
                nbformat.v4.new_output("stream", text="hello from the stage\n"),
            ],
        ),
    ]
    nbformat.write(nb, evil / "00_evil.ipynb")
    (art / "summary.json").write_text(
        json.dumps(
            [
                {"stage": "00_evil", "status": "ok", "seconds": 1.0, "error": "", "headline": ""},
                {"stage": "01_etc", "status": "ok", "seconds": 1.0, "error": "", "headline": ""},
            ]
        )
    )
    return art


def _secret_lines():
    return [
        ln.split("=", 1)[1].strip('"')
        for ln in SECRET.read_text().splitlines()
        if "=" in ln and len(ln.split("=", 1)[1].strip('"')) >= 6
    ]


ACTIVE = re.compile(
    r"<script|<iframe|<object|<embed|<frame|\son[a-z]+\s*=|javascript:|(?<![-\w])file:|http-equiv", re.I
)


def test_nothing_outside_the_root_is_read_and_no_page_is_active(hostile):
    page = report.build_report(hostile)
    pages = [page] + sorted(hostile.rglob("*.html"))
    assert (hostile / "00_evil" / "00_evil.html") in pages
    for p in pages:
        text = p.read_text()
        for secret in _secret_lines():
            assert secret not in text, f"{p.name} embeds {secret!r} from {SECRET}"
        assert not ACTIVE.search(text), f"{p.name}: {ACTIVE.search(text).group(0)!r}"
    index = page.read_text()
    assert "leak.csv" not in index and "leak.png" not in index
    assert "01_etc is a link out of the artifacts root" in index and "href='01_etc/" not in index
    assert "class='l ok'" not in index  # no manifest: unverified, never green
    nb_html = (hostile / "00_evil" / "00_evil.html").read_text()
    assert "hello from the stage" in nb_html and "<b>table</b>" in nb_html and "styled" in nb_html
    assert "jp-Cell" in nb_html and "<style" in nb_html  # still the JupyterLab look
    assert "compresslib: sanitized" in nb_html
    assert report.main(["--artifacts", str(hostile), "--check"]) == 0


def test_sanitizer_keeps_safe_links_and_drops_escapes(tmp_path):
    root = tmp_path / "art"
    page_dir = root / "00_s"
    out = report.sanitize_html(
        "<a href='#x'>a</a><a href='../01_t/f.csv'>b</a><a href='../../up.txt'>c</a>"
        "<img src='data:image/png;base64,AAAA'><img src='https://cdn.example/x.png'>"
        "<a href='https://arxiv.org/abs/1'>paper</a><p onclick='x()'>p</p>",
        page_dir,
        root,
    )
    assert 'href="#x"' in out and 'href="../01_t/f.csv"' in out and "../../up.txt" not in out
    assert "data:image/png;base64,AAAA" in out and "cdn.example" not in out
    assert "https://arxiv.org/abs/1" in out and "onclick" not in out and "<p>p</p>" in out
