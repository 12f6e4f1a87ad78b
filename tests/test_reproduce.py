"""The papermill runner on two tiny generated notebooks: parameters, caching, failure reporting."""

import json
import textwrap

import pytest

from compresslib.workbook import reproduce

OK = textwrap.dedent("""\
    # %% tags=["parameters"]
    X = 1  # a knob
    OUT_DIR = "out"  # output folder

    # %%
    import json, pathlib
    pathlib.Path(OUT_DIR).mkdir(parents=True, exist_ok=True)
    json.dump({"x_accuracy": float(X)}, open(pathlib.Path(OUT_DIR) / "metrics.json", "w"))
""")
FAIL = textwrap.dedent("""\
    # %% tags=["parameters"]
    OUT_DIR = "out"  # output folder
    Y = 0  # another knob; range [0, 10]

    # %%
    raise RuntimeError("budget below the structural floor")
""")


@pytest.fixture
def tree(tmp_path):
    (tmp_path / "nb").mkdir()
    (tmp_path / "nb" / "00_ok.py").write_text(OK)
    (tmp_path / "nb" / "01_fail.py").write_text(FAIL)
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "tiny.yaml").write_text("common:\n  X: 5\n  Y: 7\n00_ok:\n  X: 6\n")
    return tmp_path


def _main(tree, *extra):
    return reproduce.main(
        [
            "--profile",
            "tiny",
            "--notebooks",
            str(tree / "nb"),
            "--profiles",
            str(tree / "profiles"),
            "--artifacts",
            str(tree / "art"),
            *extra,
        ]
    )


def test_runs_continues_past_failure_and_caches(tree, capsys):
    assert _main(tree) == 1
    out = capsys.readouterr().out
    assert "RuntimeError: budget below the structural floor" in out and "FAILED stages: 01_fail" in out
    assert json.loads((tree / "art" / "00_ok" / "metrics.json").read_text()) == {"x_accuracy": 6.0}
    assert (tree / "art" / "00_ok" / "00_ok.ipynb").exists()
    summary = json.loads((tree / "art" / "summary.json").read_text())
    assert [r["status"] for r in summary] == ["ok", "failed"]
    assert _main(tree, "--only", "00") == 0
    assert json.loads((tree / "art" / "summary.json").read_text())[0]["status"] == "cached"
    assert _main(tree, "--only", "00", "--force") == 0
    assert json.loads((tree / "art" / "summary.json").read_text())[0]["status"] == "ok"


def test_parameters_are_parsed_and_merged(tree):
    declared = reproduce.notebook_parameters(tree / "nb" / "00_ok.py")
    assert declared == {"X": 1, "OUT_DIR": "out"}
    prof = reproduce.load_profile("tiny", tree / "profiles")
    assert reproduce.stage_parameters("00_ok", declared, prof, {}) == {"X": 6}  # Y is not declared
    assert reproduce.stage_parameters("00_ok", declared, prof, {"X": 9}) == {"X": 9}


def test_unknown_profile_lists_the_available_ones(tree):
    with pytest.raises(SystemExit, match="unknown profile 'huge'; available: tiny"):
        reproduce.load_profile("huge", tree / "profiles")


def test_only_matching_nothing_is_an_error(tree):
    with pytest.raises(SystemExit, match="matches no stage"):
        _main(tree, "--only", "42")


def test_upstream_map_covers_every_stage_a_notebook_names():
    """A notebook that reads another stage's folder must wait for it when stages run in parallel; the graph is
    declared once (compresslib.stages) and each notebook's "Reads:" sentence names exactly its stages."""
    import re

    from compresslib import stages as graph
    from compresslib.workbook.report import notebook_intro

    stages = [p.stem for p in reproduce.stage_files(reproduce.REPO / "notebooks")]
    assert set(graph.UPSTREAM) == set(stages)  # every stage declared, no stale names after a rename
    for st in stages:
        text = (reproduce.REPO / "notebooks" / f"{st}.py").read_text()
        named = {m for m in re.findall(r"\b\d\d_[a-z0-9_]*[a-z0-9]", text) if m in stages and m != st}
        assert named <= set(reproduce.upstream_of(st, stages)), st
        reads = notebook_intro(reproduce.REPO / "artifacts" / st, reproduce.REPO / "notebooks")["reads"]
        in_reads = {m for m in re.findall(r"\b\d\d_[a-z0-9_]*[a-z0-9]", reads) if m in stages}
        assert in_reads == set(graph.UPSTREAM[st]), (st, reads)
    assert reproduce.upstream_of("06_micronet_scoring", stages) == [
        "03_ecc_admm",
        "04_sparsity_quantization",
        "05_ec2t",
    ]
    assert reproduce.upstream_of("09_leaderboard", stages) == [
        "03_ecc_admm",
        "04_sparsity_quantization",
        "05_ec2t",
        "07_dynamic_inference",
        "08_camp_mixed_precision",
    ]


SLOW_OK = OK + "import time; time.sleep(3)\n"


def test_parallel_jobs_overlap_and_skip_what_depends_on_a_failure(tmp_path, monkeypatch):
    (tmp_path / "nb").mkdir()
    (tmp_path / "nb" / "00_ok.py").write_text(
        SLOW_OK
        + textwrap.dedent("""\
        import os
        json.dump({"threads": os.environ.get("COMPRESSLIB_THREADS")}, open(pathlib.Path(OUT_DIR) / "env.json", "w"))
    """)
    )
    (tmp_path / "nb" / "01_fail.py").write_text(FAIL)
    (tmp_path / "nb" / "02_after.py").write_text(OK)  # not in UPSTREAM: waits for every earlier stage
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "tiny.yaml").write_text("common:\n  X: 5\n")
    monkeypatch.setattr("compresslib.stages.UPSTREAM", {"00_ok": (), "01_fail": ()})
    monkeypatch.setenv("COMPRESSLIB_THREADS", "")
    monkeypatch.delenv("COMPRESSLIB_THREADS")  # the runner chooses cores // jobs
    assert _main(tmp_path, "--jobs", "2") == 1
    rows = {r["stage"]: r for r in json.loads((tmp_path / "art" / "summary.json").read_text())}
    assert [rows[s]["status"] for s in ("00_ok", "01_fail", "02_after")] == ["ok", "failed", "skipped"]
    assert "01_fail" in rows["02_after"]["error"]
    a, b = rows["00_ok"], rows["01_fail"]
    assert a["start_s"] < b["end_s"] and b["start_s"] < a["end_s"]  # ran at the same time
    import os

    env = json.loads((tmp_path / "art" / "00_ok" / "env.json").read_text())
    assert env["threads"] == str(max(1, (os.cpu_count() or 1) // 2))
