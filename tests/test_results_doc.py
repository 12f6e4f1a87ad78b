"""docs/results_default.md is generated from the artifacts: its numbers are the metrics' numbers."""

import json

import pytest

from compresslib import results_doc
from compresslib.results import write_json


def _stage(art, name, metrics, printed):
    d = art / name
    d.mkdir(parents=True)
    write_json(d / "metrics.json", metrics)
    write_json(
        d / "manifest.json",
        {
            "stage": name,
            "params": {"PROFILE": "smoke"},
            "seconds": 1.5,
            "code": {"commit": "abc1234def5678", "dirty": False},
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


def test_generated_numbers_and_verdict_come_from_the_artifacts(tmp_path):
    _stage(tmp_path, "03_ecc_admm", {"accuracy": 0.9634, "n": 3, "rows": [1, 2]}, "ECC ahead by 1.2 points\n")
    (tmp_path / "04_x").mkdir()  # no manifest: not a finished runner stage, left out
    write_json(tmp_path / "summary.json", [{"stage": "03_ecc_admm", "status": "ok", "seconds": 1.5}])
    text = results_doc.build(tmp_path)
    assert "| `accuracy` | 0.9634 |" in text and "| `n` | 3 |" in text
    assert "rows" not in text  # only scalars
    assert "ECC ahead by 1.2 points" in text and "early" not in text  # the last printing cell only
    assert "commit `abc1234def`" in text and "04_x" not in text
    out = tmp_path / "doc.md"
    assert results_doc.main(["--artifacts", str(tmp_path), "--out", str(out)]) == 0
    assert out.read_text().strip() == text.strip()


def test_no_finished_stage_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="no stage with a manifest.json"):
        results_doc.build(tmp_path)


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
