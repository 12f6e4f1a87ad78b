"""README.md: short, the two commands CI relies on, every stage in the map, links that resolve, and no
number typed by hand (results live in the generated docs/results.md)."""

import re
from pathlib import Path

import pytest

from compresslib.stages import UPSTREAM

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
MAX_LINES = 200

#: What a typed result looks like: decimals, percentages, ratios, timings, thousands separators, powers
#: of ten, quantities with units, and any integer of three or more digits. Stage numbers (00..10),
#: "Python 3", paper years such as CVPR'19 and digits inside identifiers (lenet5, resnet44) are not.
HAND_TYPED = re.compile(
    r"""\d\.\d                                          # a decimal: 0.5, 97.3, 2.14
    | \d\s*%                                            # a percentage
    | \d\s*[×x](?![A-Za-z\d]) | ×\s*\d                  # a ratio: 2×, 40x, ×1975
    | \d\s*(?:ms|µs|us|s|sec|min|h|hr|seconds?|minutes?|hours?|days?)\b   # a timing
    | \d,\d{3}(?!\d)                                    # a thousands separator: 12,800
    | \d\s*[eE][-+]?\d | \d\s*·\s*10                    # a power of ten
    | \d\s*[kMGT]?(?:MACs?|FLOPs?|bytes|B|params|ops|bit-ops|J|mJ|W)\b  # a quantity with a unit
    | \d\s*(?:points?|pts?|pp)\b                        # accuracy points
    | (?<![\w.'-])\d{3,}(?![\w])                        # a large integer: 431080, 2026
    """,
    re.VERBOSE,
)


def prose(text: str) -> str:
    """``text`` without fenced code blocks and link targets (the ``(...)`` of ``[label](target)``)."""
    text = re.sub(r"(?ms)^\s*(```|~~~).*?^\s*\1[^\n]*$", "", text)
    return re.sub(r"\]\([^)]*\)", "]", text)


def hand_typed_numbers(text: str) -> list[str]:
    return [m.group(0) for m in HAND_TYPED.finditer(prose(text))]


@pytest.mark.parametrize(
    "line",
    [
        "ECC is ahead by 0.5 points",
        "joint reaches 97 % at B",
        "a 40x smaller model",
        "at ×1975 the accuracy",
        "one run takes 18 min",
        "trained in 3 hours",
        "on 12,800 images",
        "about 2·10¹⁷ MACs",
        "energy 2.6e6 units",
        "LeNet-5 has 431080 weights",
        "needs 4 GMACs per image",
    ],
)
def test_hand_typed_numbers_are_caught(line):
    assert hand_typed_numbers(f"# t\n\n{line}\n"), line


def test_what_is_not_a_typed_number():
    ok = (
        "Stages 00 to 10 (`00_quickstart`, `10_deploy`) on Python 3, CVPR'19, lenet5 and resnet44; issue 16; "
        "1-bit/4-bit paths; two commands; 3 seeds; [results](docs/results_2026.md)\n"
        "```bash\npip install torch==2.14.1  # 19.4 min\n```\n"
    )
    assert hand_typed_numbers(ok) == []


def test_readme_is_short_and_has_no_hand_typed_number():
    text = README.read_text()
    assert len(text.splitlines()) <= MAX_LINES, f"README.md has {len(text.splitlines())} lines (at most {MAX_LINES})"
    found = hand_typed_numbers(text)
    assert not found, f"README.md types numbers by hand (generate them into docs/results.md): {found}"


def test_readme_gives_the_commands_ci_and_the_makefile_run():
    text = README.read_text()
    assert "make test" in (REPO / ".ci" / "run").read_text()
    targets = set(re.findall(r"(?m)^([\w-]+):", (REPO / "Makefile").read_text()))
    for cmd in re.findall(r"(?m)^make (\w+)", "\n".join(re.findall(r"(?s)```bash\n(.*?)```", text))):
        assert cmd in targets, f"README runs `make {cmd}`, which the Makefile does not define"
    assert {"reproduce", "test"} <= set(re.findall(r"(?m)^make (\w+)", text))


def test_stage_map_lists_every_stage():
    text = README.read_text()
    rows = dict(re.findall(r"(?m)^\| (\d\d) \| `(\d\d_\w+)` \|", text))
    stages = set(UPSTREAM) | {p.stem for p in (REPO / "notebooks").glob("[0-9][0-9]_*.py")}
    missing = sorted(s for s in stages if rows.get(s[:2]) != s)
    assert not missing, f"README's stage map misses {missing}"


def test_readme_links_resolve():
    text = README.read_text()
    targets = [t.split("#")[0] for t in re.findall(r"\]\(([^)]+)\)", text) if "://" not in t]
    assert {"docs/results.md", "docs/scaling.md"} <= set(targets)
    missing = [t for t in targets if t and not (REPO / t).exists()]
    assert not missing, f"README links to missing files: {missing}"
