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
