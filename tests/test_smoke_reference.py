"""The smoke profile gives the numbers of the committed reference (issue 15: restructuring changes no number).

``tests/reference/smoke_metrics.json`` holds every stage's ``metrics.json`` of a smoke run at the
commit its ``_reference`` header names (d506773, before the restructuring), wall-clock keys removed
(``TIMING``: latency, seconds, ..., the rule of tests/test_rerun_reuse.py). The session's smoke run
(the ``smoke_run`` fixture of tests/conftest.py, shared with tests/test_notebooks.py) must give the
same value at every key path: tolerance 0, floats compared exactly, lists element by element. Keys
the reference lacks are allowed (a new metric changes no number); a missing or renamed key fails.
No field has a tolerance: two runs at d506773 (COMPRESSLIB_THREADS=2, ``--jobs 1``, each into a fresh
artifacts folder, so every model trained anew) agreed on all 1148 non-timing leaves of the ten stages, so every
field is deterministic; a difference in any of them is a changed number, not noise.

Requires what the reference was made with (its header), else the test skips and says which differs:
COMPRESSLIB_THREADS=2 (CI's setting in .ci/run and compresslib's default), one stage at a time (the
fixture's ``reproduce`` default ``--jobs 1``), the same torch version and CPU capability (AVX2, ...):
torch's CPU kernels split and sum reductions by thread count and SIMD width, so other settings give
other last bits of trained weights. Measured at d506773: with COMPRESSLIB_THREADS=1 stages 00-06 gave
the same numbers, but 07 (5 leaves, e.g. pseudo_box_test_miou 0.20329 -> 0.20220), 08 (23 leaves,
e.g. RL accuracies) and 09 (22 leaves: 08's rows) did not.

A deliberate change of numbers: explain it, then ``python tests/reference/make_reference.py ARTIFACTS``
over a fresh ``reproduce --profile smoke --jobs 1`` run (COMPRESSLIB_THREADS=2); ``--stage NAME --reason
TEXT`` replaces only that stage and records commit and reason in the header (``rereferenced``).
"""

import json
import math
import re
import sys
from pathlib import Path

import pytest
from conftest import smoke_artifacts

sys.path.insert(0, str(Path(__file__).resolve().parent / "reference"))
from make_reference import HEADER, REFERENCE, headline, machine  # noqa: E402

from compresslib.checks import env_int  # noqa: E402

REF = json.loads(REFERENCE.read_text())
REF_STAGES = [s for s in REF if s != HEADER]


def differences(stage: str, ref, new, path: str = "") -> list[str]:
    """Every key path where ``new`` differs from ``ref``: 'stage: path: reference R, new N' (exact equality)."""
    if isinstance(ref, dict) and isinstance(new, dict):
        out = []
        for k, v in ref.items():
            sub = f"{path}.{k}" if path else str(k)
            if k not in new:
                out.append(f"{stage}: {sub}: reference {v!r}, new: key missing")
            else:
                out += differences(stage, v, new[k], sub)
        return out
    if isinstance(ref, list) and isinstance(new, list):
        if len(ref) != len(new):
            return [f"{stage}: {path}: reference {len(ref)} entries {ref!r}, new {len(new)} entries {new!r}"]
        return [d for i, (a, b) in enumerate(zip(ref, new)) for d in differences(stage, a, b, f"{path}[{i}]")]
    same = type(ref) is type(new) and (ref == new or (isinstance(ref, float) and math.isnan(ref) and math.isnan(new)))
    if isinstance(ref, (int, float)) and isinstance(new, (int, float)) and not isinstance(ref, bool):
        same = same or (not isinstance(new, bool) and ref == new)  # 3 vs 3.0: the same number
    return [] if same else [f"{stage}: {path}: reference {ref!r}, new {new!r}"]


def test_differences_reports_stage_path_and_both_values_and_ignores_timings():
    ref = {"acc": 0.5, "rows": [{"bits": 4, "accuracy": 0.25, "name": "a"}], "n": 3}
    new = {
        "acc": 0.5,
        "rows": [{"bits": 4, "accuracy": 0.25000000000000006, "name": "a", "latency_ms": 9.0}],
        "n": 3.0,
        "extra": 1,
        "wall_seconds": 7.0,
    }
    assert differences("s", ref, new) == ["s: rows[0].accuracy: reference 0.25, new 0.25000000000000006"]
    assert differences("s", ref, headline(dict(new, rows=ref["rows"]))) == []  # timing and new keys ignored
    assert differences("s", headline({"seconds": 1.0, "cpu_ms": [1]}), headline({"seconds": 2.0})) == []
    assert differences("s", {"a": {"b": 1}}, {"a": {}}) == ["s: a.b: reference 1, new: key missing"]
    assert differences("s", {"r": [1, 2]}, {"r": [1]}) == ["s: r: reference 2 entries [1, 2], new 1 entries [1]"]
    assert differences("s", {"m": "joint"}, {"m": "prune"}) == ["s: m: reference 'joint', new 'prune'"]
    assert differences("s", {"f": True}, {"f": 1}) == ["s: f: reference True, new 1"]
    assert differences("s", {"x": None}, {"x": 0.0}) == ["s: x: reference None, new 0.0"]
    assert headline({"p": "/a/art/03/x.ckpt"}, "/a/art") == {"p": "<ARTIFACTS>/03/x.ckpt"}


def test_reference_file_names_its_commit_profile_and_threads_and_holds_every_stage():
    head = REF[HEADER]
    assert re.fullmatch("[0-9a-f]{40}", head["commit"]) and head["dirty"] is False  # d506773 at first
    assert head["profile"] == "smoke" and head["threads"] == 2 and head["jobs"] == 1
    stages = {p.stem for p in (Path(__file__).resolve().parent.parent / "notebooks").glob("[0-9][0-9]_*.py")}
    assert len(REF_STAGES) == 10 and set(REF_STAGES) <= stages, sorted(set(REF_STAGES) - stages)
    for stage in REF_STAGES:
        assert REF[stage], f"{stage}: empty reference"
        assert not any(k for k in REF[stage] if re.search("seconds|latency", k)), f"{stage}: timing keys kept"


def test_make_reference_writes_stages_without_timings_and_refuses_a_failed_run(tmp_path):
    import make_reference

    art = tmp_path / "art"
    for stage, metrics in (
        ("00_a", {"acc": 0.5, "seconds_per_epoch": 3.0, "ckpt": f"{art}/00_a/m.ckpt"}),
        ("01_b", {}),
    ):
        (art / stage).mkdir(parents=True)
        (art / stage / "metrics.json").write_text(json.dumps(metrics))
        code = {"commit": "abc", "dirty": False}
        (art / stage / "manifest.json").write_text(json.dumps({"code": code, "params": {"PROFILE": "smoke"}}))
    rows = [{"stage": "00_a", "status": "ok"}, {"stage": "01_b", "status": "cached"}]
    (art / "summary.json").write_text(json.dumps(rows))
    out = tmp_path / "ref.json"
    assert make_reference.main([str(art), "--threads", "3", "--out", str(out)]) == 0
    ref = json.loads(out.read_text())
    assert ref["00_a"] == {"acc": 0.5, "ckpt": "<ARTIFACTS>/00_a/m.ckpt"} and ref["01_b"] == {}
    assert ref[HEADER]["commit"] == "abc" and ref[HEADER]["threads"] == 3 and ref[HEADER]["profile"] == "smoke"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art", "ref.json"]  # no temporary file left
    (art / "00_a" / "metrics.json").write_text(json.dumps({"acc": 0.75}))
    (art / "01_b" / "metrics.json").write_text(json.dumps({"acc": 0.0}))
    with pytest.raises(SystemExit):  # --stage without --reason: argparse error before any write
        make_reference.main([str(art), "--threads", "3", "--out", str(out), "--stage", "00_a"])
    assert make_reference.main([str(art), "--threads", "3", "--out", str(out), "--stage", "00_a", "--reason", "r"]) == 0
    ref = json.loads(out.read_text())
    assert ref["00_a"] == {"acc": 0.75} and ref["01_b"] == {}  # only the named stage re-referenced
    assert ref[HEADER]["rereferenced"] == {"00_a": {"commit": "abc", "reason": "r"}}
    (art / "summary.json").write_text(json.dumps([{"stage": "00_a", "status": "failed", "error": "cell 3: boom"}]))
    with pytest.raises(SystemExit, match="00_a .failed: cell 3: boom"):
        make_reference.main([str(art), "--out", str(out)])
    assert json.loads(out.read_text()) == ref  # left as it was


def _unmet_requirements() -> list[str]:
    head, now = REF[HEADER], dict(machine(), threads=env_int("COMPRESSLIB_THREADS", 2))
    return [
        f"{k}={now[k]!r} (reference: {head[k]!r})" for k in ("threads", "torch", "cpu_capability") if now[k] != head[k]
    ]


@pytest.fixture(scope="module")
def smoke_art(request):
    """(artifacts, summary rows) of a smoke run: $COMPRESSLIB_SMOKE_ART (a finished ``reproduce --profile
    smoke --jobs 1`` folder, to check a run made by hand) or the session's ``smoke_run``."""
    return smoke_artifacts(request, "COMPRESSLIB_SMOKE_ART")


@pytest.mark.slow
@pytest.mark.parametrize("stage", REF_STAGES)
def test_smoke_metrics_equal_the_reference(smoke_art, stage):
    unmet = _unmet_requirements()
    if unmet:
        pytest.skip(
            "the reference holds for COMPRESSLIB_THREADS=2 and its torch build/CPU capability only (float sums "
            f"depend on them): {', '.join(unmet)}"
        )
    art, rows = smoke_art
    assert rows.get(stage, {}).get("status") in ("ok", "cached"), f"{stage} did not run ok: {rows.get(stage)}"
    new = headline(json.loads((art / stage / "metrics.json").read_text()), str(Path(art).resolve()))
    diffs = differences(stage, REF[stage], new)
    assert not diffs, (
        f"{len(diffs)} value(s) differ from {REFERENCE.name} ({REF[HEADER]['commit'][:7]}):\n" + "\n".join(diffs[:60])
    )
