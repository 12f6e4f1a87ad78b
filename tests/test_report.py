"""compresslib.workbook.report builds one offline page from a tiny fake artifacts tree."""

import json
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nbformat  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from compresslib.workbook import provenance, report  # noqa: E402


@pytest.fixture()
def fake_artifacts(tmp_path):
    art = tmp_path / "art"
    ok = art / "00_fake"
    ok.mkdir(parents=True)
    (ok / "metrics.json").write_text(
        json.dumps({"test_accuracy": 0.91234, "dense_macs": 2293000, "results": [{"a": 1}, {"a": 2}]})
    )
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [1, 0])
    fig.savefig(ok / "curve one.png")  # a space: the link must be percent-encoded
    plt.close(fig)
    pd.DataFrame({"step": range(40), "note": ["<script>alert(1)</script>"] * 40}).to_csv(ok / "long.csv", index=False)
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell(
            "# 00 · Fake stage\n\n**Reads:** nothing. **Writes:** `long.csv`.\n\nEnergy $E = \\sum_i e_i$."
        ),
        nbformat.v4.new_code_cell("print('hi')", outputs=[nbformat.v4.new_output("stream", text="hi\n")]),
    ]
    nbformat.write(nb, ok / "00_fake.ipynb")
    provenance.write_manifest(ok, "00_fake", params={}, source="", key="k", upstream={}, seconds=1.5)
    (art / "01_broken").mkdir()
    (art / "summary.json").write_text(
        json.dumps(
            [
                {"stage": "00_fake", "status": "ok", "seconds": 1.5, "error": "", "headline": ""},
                {
                    "stage": "01_broken",
                    "status": "failed",
                    "seconds": 0.3,
                    "error": "cell 3: ValueError: boom",
                    "headline": "",
                },
            ]
        )
    )
    (art / "not_a_stage").mkdir()
    return art


def test_page_has_figures_tables_links_and_stage_map(fake_artifacts):
    page = report.build_report(fake_artifacts, max_rows=5)
    assert page == fake_artifacts / "index.html"
    text = page.read_text()
    assert re.findall(r"<img src='([^']+)'", text) == ["00_fake/curve%20one.png"]
    assert "href='00_fake/00_fake.html'" in text and (fake_artifacts / "00_fake" / "00_fake.html").is_file()
    assert "href='00_fake/long.csv'" in text and "showing 5 of 40 rows" in text
    assert text.count("<td>&lt;script&gt;alert(1)&lt;/script&gt;</td>") == 5  # truncated to 5 rows, escaped
    assert "<script>alert" not in text and "<script" not in text  # escaped CSV cell, no script at all
    assert "test_accuracy=0.9123" in text  # stage-map headline
    assert "0.9123" in text and "2,293,000" in text and "<code>results</code> (2 rows)" in text
    assert "00 · Fake stage" in text and "<code>long.csv</code>" in text  # title + 'Writes:' from the notebook
    assert "cell 3: ValueError: boom" in text and "class='l failed'" in text
    assert "not_a_stage" not in text
    assert report.broken_links(page) == []


def test_notebook_html_needs_no_network(fake_artifacts):
    html_path = report.render_notebook(fake_artifacts / "00_fake" / "00_fake.ipynb")
    body = html_path.read_text()
    assert "hi" in body and "Fake stage" in body
    assert not re.search(r"<script[^>]+src=[\"']?https?:", body), "a CDN script would fail offline"
    assert not re.search(r"<link[^>]+href=[\"']?https?:", body)
    assert report.broken_links(html_path) == []


def test_broken_links_are_reported(fake_artifacts):
    report.build_report(fake_artifacts, render_notebooks=False)
    (fake_artifacts / "00_fake" / "curve one.png").unlink()
    page = fake_artifacts / "index.html"
    page.write_text(page.read_text() + "<a href='#nowhere'>x</a><script src='https://cdn.example/x.js'></script>")
    bad = report.broken_links(page)
    assert any("curve%20one.png: file not found" in b for b in bad)
    assert any("#nowhere: no element" in b for b in bad)
    assert any("needs the network" in b for b in bad)
    assert report.main(["--artifacts", str(fake_artifacts), "--no-notebooks", "--check"]) == 0  # rebuilt: whole


def test_reads_column_comes_from_the_stage_graph(fake_artifacts):
    st = fake_artifacts / "06_micronet_scoring"  # a stage of compresslib.stages.UPSTREAM
    st.mkdir()
    (st / "metrics.json").write_text("{}")
    from compresslib.stages import REPO

    text = report.build_report(fake_artifacts, REPO / "notebooks", render_notebooks=False).read_text()
    row = re.search(r"<tr><td class='l'><a href='#06_micronet_scoring'>.*?</tr>", text).group(0)
    assert ">03_ecc_admm, 04_sparsity_quantization, 05_ec2t</span>" in row
    assert "title='`05_ec2t/models/*.pt|json` (required)" in row  # the notebook's prose as the tooltip


def test_stage_in_summary_without_folder_is_shown_missing(fake_artifacts):
    summary = json.loads((fake_artifacts / "summary.json").read_text())
    summary.append({"stage": "02_gone", "status": "ok", "seconds": 1.0, "error": "", "headline": ""})
    (fake_artifacts / "summary.json").write_text(json.dumps(summary))
    text = report.build_report(fake_artifacts, render_notebooks=False).read_text()
    assert "artifacts folder 02_gone is missing" in text and "id='02_gone'" in text


def test_clear_errors(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="run `python -m compresslib.workbook.reproduce"):
        report.build_report(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no stage folder"):
        report.build_report(tmp_path)
    assert report.main(["--artifacts", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
