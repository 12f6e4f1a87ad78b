"""docs/results.md is generated from the artifacts: its numbers are the metrics' numbers.

The committed document is re-rendered from its committed sources snapshot (byte equality), every number
in it must be a value of that snapshot, and on generated artifacts the numbers come from metrics.json.
"""

import json
from pathlib import Path

import pytest

from compresslib import leaderboard as lb
from compresslib.workbook import results_doc
from compresslib.results import read_json, write_json

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _stage(art, name, metrics, printed, commit="abc1234def5678"):
    d = art / name
    d.mkdir(parents=True)
    write_json(d / "metrics.json", metrics)
    write_json(
        d / "manifest.json",
        {
            "stage": name,
            "params": {"PROFILE": "smoke"},
            "seconds": 1.5,
            "code": {"commit": commit, "dirty": False},
            "finished": "T",
        },
    )
    nb = {
        "cells": [
            {"cell_type": "code", "outputs": [{"output_type": "stream", "name": "stdout", "text": ["early\n"]}]},
            {"cell_type": "code", "outputs": []},
            {"cell_type": "code", "outputs": [{"output_type": "stream", "name": "stdout", "text": [printed]}]},
        ]
    }
    (d / f"{name}.ipynb").write_text(json.dumps(nb))


def _board_row(method, setting, acc, std, macs, latency):
    return {
        "method": method,
        "setting": setting,
        "base_model": "m",
        "dataset": "d",
        "n_seeds": 3,
        "accuracy": acc,
        "accuracy_std": std,
        **{c: macs for c in lb.COST_COLUMNS},
        "micronet_score": 0.00123456,
        "latency_ms": latency,
        "latency_threads": 1,
        "latency_batch": 1,
        "deploy_form": "dense-executed",
        "source": "03_ecc_admm",
    }


def _tiny_run(art):
    """Two stages and a leaderboard: a generated artifacts folder as `reproduce` leaves it."""
    import pandas as pd

    _stage(art, "03_ecc_admm", {"accuracy": 0.9634, "energy": 1.23456789e7, "n": 3, "rows": [1, 2]}, "ECC +1.2 pt\n")
    _stage(art, "09_leaderboard", {"n_rows": 2}, "wrote 2 rows\n", commit="0123456789abcdef")
    rows = [
        _board_row("ECC", "budget 0.5", 0.97123, 0.00456, 1234567.0, 0.61728),
        _board_row("dense", "fp32", 0.5, 0, 9e6, 2.5),
    ]
    pd.DataFrame(rows)[lb.COLUMNS].to_csv(art / "09_leaderboard" / "leaderboard.csv", index=False)
    write_json(art / "summary.json", [{"stage": "03_ecc_admm", "status": "ok", "seconds": 812.25}])


def test_generated_numbers_and_verdict_come_from_the_artifacts(tmp_path):
    _stage(tmp_path, "03_ecc_admm", {"accuracy": 0.9634, "n": 3, "rows": [1, 2]}, "ECC ahead by 1.2 points\n")
    (tmp_path / "04_x").mkdir()  # no manifest: not a finished runner stage, left out
    write_json(tmp_path / "summary.json", [{"stage": "03_ecc_admm", "status": "ok", "seconds": 1.5}])
    text = results_doc.build(tmp_path)
    assert "| `accuracy` | 0.9634 |" in text and "| `n` | 3 |" in text
    assert "rows" not in text  # only scalars
    assert "ECC ahead by 1.2 points" in text and "early" not in text  # the last printing cell only
    assert "commit `abc1234def5678`" in text and "04_x" not in text
    out = tmp_path / "doc.md"
    assert results_doc.main(["--artifacts", str(tmp_path), "--out", str(out)]) == 0
    assert out.read_text().strip() == text.strip()
    assert read_json(tmp_path / "doc_sources.json")["stages"]["03_ecc_admm"]["metrics"] == {"accuracy": 0.9634, "n": 3}


def test_tiny_run_numbers_come_from_metrics_json_and_the_board_csv(tmp_path):
    art = tmp_path / "art"
    _tiny_run(art)
    out = tmp_path / "docs" / "results.md"
    out.parent.mkdir()
    assert results_doc.main(["--artifacts", str(art), "--out", str(out)]) == 0
    text, sources = out.read_text(), read_json(out.with_name("results_sources.json"))
    assert sources["stages"]["03_ecc_admm"]["metrics"]["energy"] == 1.23456789e7  # exact in the snapshot
    assert "| `energy` | 1.23457e+07 |" in text and "| 03_ecc_admm | ok | 812.25 |" in text
    # the leaderboard: rendered from the CSV (accuracy in %, MACs in millions), the CSV copied beside the doc
    assert "| ECC | budget 0.5 | m | d | 3 | 97.12 ± 0.46 | 1.235 |" in text
    assert (out.parent / "leaderboard_smoke.csv").read_text() == (
        art / "09_leaderboard" / "leaderboard.csv"
    ).read_text()
    assert "commit `0123456789abcdef`" in text.split("## Leaderboard", 1)[1]
    assert results_doc.unexplained_numbers(text, sources) == []
    assert results_doc.main(["--out", str(out), "--check"]) == 0
    # a changed metric changes the document; a number typed into it is caught
    write_json(art / "03_ecc_admm" / "metrics.json", {"accuracy": 0.9521})
    assert "| `accuracy` | 0.9521 |" in results_doc.build(art) and "0.9634" not in results_doc.build(art)
    edited = text.replace("| `accuracy` | 0.9634 |", "| `accuracy` | 0.9635 |").replace("97.12 ±", "97.21 ±")
    assert results_doc.unexplained_numbers(edited, sources) == ["0.9635", "97.21"]
    out.write_text(edited)
    assert results_doc.main(["--out", str(out), "--check"]) == 1
    assert results_doc.main(["--out", str(out), "--render"]) == 0 and out.read_text() == text


def test_number_tokens_skip_identifiers_and_read_formats():
    found = [
        m.group(0) for m in results_doc.NUMBER.finditer("03_ecc_admm lenet5 ba3fc27 d0.5 x 12,800 1.5e-03 80.00% 7.")
    ]
    assert found == ["12,800", "1.5e-03", "80.00", "7"]
    assert results_doc._tolerance("1.5e-03") == pytest.approx((0.0015, 0.00005))
    assert results_doc._tolerance("12,800") == pytest.approx((12800.0, 0.5))


def test_committed_results_doc_is_the_rendering_of_its_snapshot():
    sources = read_json(DOCS / "results_sources.json")
    assert (DOCS / "results.md").read_text() == results_doc.render(sources), (
        "docs/results.md is not its snapshot's rendering: `python -m compresslib.workbook.results_doc --render` "
        "(or regenerate from the artifacts)"
    )
    assert {"00_quickstart", "03_ecc_admm", "09_leaderboard"} <= set(sources["stages"])
    assert all(s["profile"] == "default" and len(s["commit"]) == 40 for s in sources["stages"].values())
    csv = DOCS / sources["leaderboard"]["csv_file"]
    assert csv.read_text() == sources["leaderboard"]["csv"]


def test_committed_results_doc_has_no_number_outside_its_snapshot():
    sources = read_json(DOCS / "results_sources.json")
    text = (DOCS / "results.md").read_text()
    assert results_doc.unexplained_numbers(text, sources) == []
    assert results_doc.unexplained_numbers(text + "\nmeasured 12.3456 ms\n", sources) == ["12.3456"]


def test_no_finished_stage_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="no stage with a manifest.json"):
        results_doc.build(tmp_path)
    with pytest.raises(SystemExit, match="no sources snapshot"):
        results_doc.main(["--out", str(tmp_path / "r.md"), "--render"])


def test_update_replaces_only_the_stages_of_a_partial_run(tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    _stage(full, "00_quickstart", {"test_accuracy": 0.977}, "dense done\n")
    _stage(full, "07_dynamic_inference", {"cascade_accuracy": 0.5}, "old cascade verdict\n")
    write_json(
        full / "summary.json",
        [
            {"stage": "00_quickstart", "status": "ok", "seconds": 72.4},
            {"stage": "07_dynamic_inference", "status": "running", "seconds": 0},
        ],
    )
    out = tmp_path / "doc.md"
    assert results_doc.main(["--artifacts", str(full), "--out", str(out)]) == 0
    _stage(part, "07_dynamic_inference", {"cascade_accuracy": 0.8125}, "new cascade verdict\n")
    write_json(part / "summary.json", [{"stage": "07_dynamic_inference", "status": "ok", "seconds": 1234.5}])
    assert results_doc.main(["--artifacts", str(part), "--out", str(out), "--update"]) == 0
    text = out.read_text()
    assert "| `test_accuracy` | 0.977 |" in text and "dense done" in text  # kept from the full run
    assert "| `cascade_accuracy` | 0.8125 |" in text and "new cascade verdict" in text
    assert "0.5 |" not in text and "old cascade verdict" not in text  # replaced, not duplicated
    assert "| 00_quickstart | ok | 72.4 |" in text and "| 07_dynamic_inference | ok | 1234.5 |" in text
    assert "running" not in text and text.count("## 07_dynamic_inference") == 1
    assert "Updated from a partial run: 07_dynamic_inference" in text
    assert text.index("## 00_quickstart") < text.index("## 07_dynamic_inference")
    # updating again from the same partial run changes nothing
    assert results_doc.main(["--artifacts", str(part), "--out", str(out), "--update"]) == 0
    assert out.read_text() == text
