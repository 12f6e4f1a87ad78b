"""Bad runner inputs: each a clear SystemExit naming the parameter (and its range) before any stage
runs, and the notebooks' declared parameter ranges (issue 13)."""

import math
import os

import pytest
import torch

from compresslib.workbook import reproduce
from compresslib.workbook.stage_params import format_range, in_range, parameters_with_ranges, parse_range

NB = reproduce.REPO / "notebooks"


def _run(tmp_path, monkeypatch, profile_text, *extra, env=None):
    (tmp_path / "p").mkdir(exist_ok=True)
    (tmp_path / "p" / "x.yaml").write_text(profile_text)
    for k, v in (env or {}).items():
        monkeypatch.setenv(k, v)
    art = tmp_path / "art"
    with pytest.raises(SystemExit) as e:
        reproduce.main(["--profile", "x", "--profiles", str(tmp_path / "p"), "--artifacts", str(art), *extra])
    assert not art.exists() or not any(p.name[:2].isdigit() for p in art.iterdir())  # no stage ran
    return str(e.value.code)


CASES = [  # (id, profile yaml, extra argv, env, expected message parts)
    ("only-0", "", ["--only", "0"], {}, ["--only '0' matches no stage", "00_quickstart"]),
    ("only-empty", "", ["--only", ""], {}, ["--only '' matches no stage", "09_leaderboard"]),
    ("only-ambiguous", "", ["--only", "0_"], {}, ["--only '0_' matches no stage"]),
    ("only-42", "", ["--only", "42"], {}, ["matches no stage"]),
    ("yaml-malformed", "common:\n  SEED: [0, 1\n00_quickstart: {}\n", [], {}, ["x.yaml", "line", "malformed YAML"]),
    ("yaml-not-mapping", "- 1\n- 2\n", [], {}, ["expected a mapping of sections"]),
    ("jobs-0", "", ["--jobs", "0"], {}, ["--jobs 0: must be an integer >= 1"]),
    ("jobs-neg", "", ["--jobs", "-2"], {}, ["--jobs -2: must be an integer >= 1"]),
    ("timeout-0", "", ["--timeout", "0"], {}, ["--timeout 0: must be an integer >= 1"]),
    ("timeout-neg", "", ["--timeout", "-5"], {}, ["--timeout -5: must be an integer >= 1"]),
    ("workers-neg", "", ["--workers", "-1"], {}, ["--workers -1: must be an integer >= 0"]),
    ("device-tpu", "", ["--only", "00", "--device", "tpu"], {}, ["unknown DEVICE 'tpu'"]),
    ("device-empty", "", ["--device", ""], {}, ["--device ''"]),
    ("threads-abc", "", ["--only", "00"], {"COMPRESSLIB_THREADS": "abc"}, ["COMPRESSLIB_THREADS", "'abc'"]),
    ("threads-0", "", ["--only", "00"], {"COMPRESSLIB_THREADS": "0"}, ["COMPRESSLIB_THREADS", "'0'"]),
    ("workers-env", "", ["--only", "00"], {"COMPRESSLIB_NUM_WORKERS": "x"}, ["COMPRESSLIB_NUM_WORKERS"]),
    (
        "typo-stage",
        "00_quickstart:\n  FINETUNE_EPOCH: 0\n",
        ["--only", "00"],
        {},
        ["'FINETUNE_EPOCH' is not a parameter of 00_quickstart.py (did you mean FINETUNE_EPOCHS"],
    ),
    (
        "typo-unselected-stage",
        "03_ecc_admm:\n  RHO: 1.0\n",
        ["--only", "00"],
        {},
        ["'RHO' is not a parameter of 03_ecc_admm.py (did you mean RHO_Z or RHO_Y"],
    ),
    (
        "typo-common",
        "common:\n  EPOCH: 2\n",
        [],
        {},
        ["common: 'EPOCH' is a parameter of no stage notebook", "did you mean EPOCHS"],
    ),
    (
        "typo-section",
        "00_quickstrat:\n  EPOCHS: 1\n",
        [],
        {},
        ["unknown section '00_quickstrat'", "did you mean 00_quickstart"],
    ),
    (
        "epochs-neg",
        "00_quickstart:\n  EPOCHS: -1\n",
        ["--only", "00"],
        {},
        ["EPOCHS=-1 is outside its accepted range [1, 10000]"],
    ),
    (
        "batch-0",
        "00_quickstart:\n  BATCH_SIZE: 0\n",
        ["--only", "00"],
        {},
        ["BATCH_SIZE=0 is outside its accepted range [1, 65536]"],
    ),
    (
        "image-size-0",
        "00_quickstart:\n  IMAGE_SIZE: 0\n",
        ["--only", "00"],
        {},
        ["IMAGE_SIZE=0 is outside its accepted range [4, 1024]"],
    ),
    ("image-size-neg", "00_quickstart:\n  IMAGE_SIZE: -3\n", ["--only", "00"], {}, ["IMAGE_SIZE=-3 is outside"]),
    (
        "image-size-float",
        "00_quickstart:\n  IMAGE_SIZE: 2.5\n",
        ["--only", "00"],
        {},
        ["IMAGE_SIZE=2.5 is a float", "default 28 is a int"],
    ),
    ("image-size-str", "00_quickstart:\n  IMAGE_SIZE: '16'\n", ["--only", "00"], {}, ["IMAGE_SIZE='16' is a str"]),
    (
        "subset-neg",
        "common:\n  SUBSET: -5\n",
        ["--only", "00"],
        {},
        ["SUBSET=-5 is outside its accepted range [0, inf)"],
    ),
    ("lr-0", "00_quickstart:\n  LR: 0\n", ["--only", "00"], {}, ["LR=0 is outside its accepted range (0, 10]"]),
    ("lr-nan", "00_quickstart:\n  LR: .nan\n", ["--only", "00"], {}, ["LR=nan is outside"]),
    ("sparsity-1", "00_quickstart:\n  FINETUNE_SPARSITY: 1.0\n", ["--only", "00"], {}, ["[0, 1)"]),
    ("finetune-neg", "03_ecc_admm:\n  FINETUNE_EPOCHS: -1\n", ["--only", "03"], {}, ["FINETUNE_EPOCHS=-1 is outside"]),
    (
        "distill-5",
        "03_ecc_admm:\n  DISTILL: 5\n",
        ["--only", "03"],
        {},
        ["DISTILL=5 is outside its accepted range [0, 1]"],
    ),
    ("rho-z-nan", "03_ecc_admm:\n  RHO_Z: .nan\n", ["--only", "03"], {}, ["RHO_Z=nan is outside"]),
    ("bool-type", "01_profiling:\n  TRY_NVML: 1\n", ["--only", "01"], {}, ["TRY_NVML=1 is a int"]),
    ("section-not-mapping", "00_quickstart: 3\n", ["--only", "00"], {}, ["00_quickstart: section must be a mapping"]),
    ("ft-steps-neg", "04_sparsity_quantization:\n  FT_STEPS: -1\n", ["--only", "04"], {}, ["FT_STEPS=-1 is outside"]),
    (
        "bwlb-9",
        "04_sparsity_quantization:\n  BWLB: 9\n",
        ["--only", "04"],
        {},
        ["BWLB=9 is outside its accepted range [1, 8]"],
    ),
    ("gamma-2", "08_camp_mixed_precision:\n  GAMMA: 2.0\n", ["--only", "08"], {}, ["GAMMA=2.0 is outside"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_a_clear_error_before_any_work(case, tmp_path, monkeypatch):
    _, prof, extra, env, parts = case
    msg = _run(tmp_path, monkeypatch, prof, *extra, env=env)
    for part in parts:
        assert part in msg, msg


def test_bad_input_table_is_large_enough():
    assert len(CASES) >= 35


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_gpu_fails_before_any_stage(tmp_path, monkeypatch):
    msg = _run(tmp_path, monkeypatch, "", "--only", "00", "--device", "cuda")
    assert "DEVICE 'cuda' requested but torch.cuda.is_available() is False" in msg


def test_dry_run_checks_ranges_and_device(tmp_path, monkeypatch, capsys):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "x.yaml").write_text("00_quickstart:\n  EPOCHS: -1\n  BATCH_SIZE: 0\n")
    rc = reproduce.main(
        ["--profile", "x", "--profiles", str(tmp_path / "p"), "--only", "00", "--dry-run", "--device", "tpu"]
    )
    err = capsys.readouterr().err
    assert rc == 1 and "EPOCHS=-1 is outside its accepted range [1, 10000]" in err
    assert "BATCH_SIZE=0 is outside" in err and "unknown DEVICE 'tpu'" in err


def test_unwritable_artifacts_folder(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "x.yaml").write_text("")
    with pytest.raises(SystemExit, match="artifacts folder .*file/art is not writable"):
        reproduce.main(
            [
                "--profile",
                "x",
                "--profiles",
                str(tmp_path / "p"),
                "--only",
                "01",
                "--artifacts",
                str(tmp_path / "file" / "art"),
            ]
        )
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        with pytest.raises(SystemExit, match="is not writable"):
            reproduce.main(
                ["--profile", "x", "--profiles", str(tmp_path / "p"), "--only", "01", "--artifacts", str(ro)]
            )


def test_only_accepts_number_name_and_unique_prefix():
    stages = reproduce.stage_files(NB)
    pick = reproduce.match_stages
    assert [p.stem for p in pick(["03"], stages, "--only")] == ["03_ecc_admm"]
    assert [p.stem for p in pick(["03_ecc_admm", "ecc"], stages, "--only")] == ["03_ecc_admm"]
    assert [p.stem for p in pick(["04_sp", "dynamic"], stages, "--only")] == [
        "04_sparsity_quantization",
        "07_dynamic_inference",
    ]
    with pytest.raises(SystemExit, match="'3' matches no stage"):
        pick(["3"], stages, "--only")
    with pytest.raises(SystemExit, match="'e' matches no stage"):
        pick(["e"], stages, "--only")


def test_range_parser():
    assert parse_range("epochs; range [1, 1000]") == (1.0, 1000.0, True, True)
    assert parse_range("range (0, inf)") == (0.0, math.inf, False, False)
    assert parse_range("range [-inf, 0)") == (-math.inf, 0.0, True, False)
    assert parse_range("the map's range (CROP.CAM_SPLIT); range [0, 1]") == (0.0, 1.0, True, True)
    assert parse_range("no range here") is None
    with pytest.raises(ValueError, match="need lo <= hi"):
        parse_range("range [2, 1]")
    with pytest.raises(ValueError, match="bounds must be numbers"):
        parse_range("range [a, 1]")
    r = parse_range("range (0, 1]")
    assert [in_range(v, r) for v in (0, 1e-9, 1, 1.1, float("nan"))] == [False, True, True, False, False]
    assert format_range(r) == "(0, 1]" and format_range(parse_range("range [0, inf)")) == "[0, inf)"


def test_every_numeric_notebook_parameter_declares_a_range_its_default_satisfies():
    for py in reproduce.stage_files(NB):
        defaults, ranges = parameters_with_ranges(py)
        for name, v in defaults.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                assert name in ranges, f"{py.name}: {name} has no 'range [lo, hi]' in its comment"
                assert in_range(v, ranges[name]), f"{py.name}: default {name}={v} outside {format_range(ranges[name])}"


def test_parameters_cells_are_one_flat_line_per_parameter():
    """nanoGPT-style: ``NAME = literal  # comment`` on one line each (a formatter that wraps a long comment
    into ``NAME = (\\n value  # ...\\n)`` hides the value and its range from a reader)."""
    import re

    for py in reproduce.stage_files(NB):
        text = py.read_text()
        cell = text.split('# %% tags=["parameters"]', 1)[1].split("\n# %%", 1)[0]
        for line in cell.strip().splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                assert re.match(r"^[A-Z][A-Z0-9_]* = \S", line) and not line.rstrip().endswith("("), (py.name, line)
