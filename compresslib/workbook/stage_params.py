"""A stage notebook's ``parameters`` cell: names, literal defaults, declared ranges; profile checks.

Each numeric parameter declares its accepted range once, in its trailing comment, as
``range [lo, hi]`` (brackets inclusive, parentheses exclusive, ``inf`` / ``-inf`` allowed), e.g.
``EPOCHS = 15  # dense pretraining epochs; range [1, 1000]``. The runner checks every value a
profile or the command line sets against the declared names, types and ranges before any stage runs.
"""

from __future__ import annotations

import ast
import difflib
import io
import math
import re
import tokenize
from pathlib import Path

RANGE_RE = re.compile(r"\brange\s*([\[(])\s*([^,\])]+?)\s*,\s*([^\])]+?)\s*([\])])")


def parse_range(comment: str):
    """``(lo, hi, lo_closed, hi_closed)`` of the ``range [lo, hi]`` in a comment, None if it has none."""
    m = RANGE_RE.search(comment or "")
    if not m:
        return None
    try:
        lo, hi = (float(x.replace("−", "-")) for x in (m.group(2), m.group(3)))
    except ValueError as e:
        raise ValueError(f"malformed range {m.group(0)!r}: bounds must be numbers or inf") from e
    if math.isnan(lo) or math.isnan(hi) or lo > hi:
        raise ValueError(f"malformed range {m.group(0)!r}: need lo <= hi")
    return lo, hi, m.group(1) == "[", m.group(4) == "]"


def format_range(r) -> str:
    lo, hi, lc, hc = r

    def f(v):
        return "inf" if v == math.inf else "-inf" if v == -math.inf else f"{v:g}"

    return f"{'[' if lc else '('}{f(lo)}, {f(hi)}{']' if hc else ')'}"


def in_range(value, r) -> bool:
    lo, hi, lc, hc = r
    v = float(value)
    if math.isnan(v):
        return False
    return (v >= lo if lc else v > lo) and (v <= hi if hc else v < hi)


def _parameters_cell(py_path: Path) -> str:
    import jupytext

    nb = jupytext.read(py_path)
    for cell in nb.cells:
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", []):
            return cell.source
    raise ValueError(f"{py_path} has no cell tagged 'parameters'")


def parameters_with_ranges(py_path) -> tuple[dict, dict]:
    """(``{name: default}``, ``{name: range}``) of the notebook's first ``parameters`` cell."""
    src = _parameters_cell(Path(py_path))
    comments = {}
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string
    defaults, ranges = {}, {}
    for node in ast.parse(src).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            defaults[name] = ast.literal_eval(node.value)
            try:
                r = parse_range(comments.get(node.end_lineno, ""))
            except ValueError as e:
                raise ValueError(f"{Path(py_path).name}: {name}: {e}") from None
            if r is not None:
                ranges[name] = r
    return defaults, ranges


def close_names(name: str, pool) -> str:
    near = difflib.get_close_matches(str(name), [str(p) for p in pool], n=2)
    return f" (did you mean {' or '.join(near)}?)" if near else ""


def type_ok(value, default) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return type(value) is type(default)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(default))


def _numbers(value):
    if isinstance(value, bool):
        return []
    if isinstance(value, (int, float)):
        return [value]
    if isinstance(value, (list, tuple)):
        return [v for v in value if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return []


def value_problems(where: str, name: str, value, default, rng) -> list[str]:
    """Type and range problems of one value (empty list = fine)."""
    if not type_ok(value, default):
        return [
            f"{where}: {name}={value!r} is a {type(value).__name__}, the notebook's default "
            f"{default!r} is a {type(default).__name__}"
        ]
    if rng is not None:
        bad = [v for v in _numbers(value) if not in_range(v, rng)]
        if bad:
            return [f"{where}: {name}={value!r} is outside its accepted range {format_range(rng)}"]
    return []


RESERVED_SECTIONS = {"common", "stages", "dry_run", "gaps"}


def check_profile(profile: dict, stages: list[Path], all_stages: list[Path], overrides: dict) -> list[str]:
    """Every problem of a profile + command-line overrides: unknown sections and names (with
    "did you mean"), wrong types, values outside the declared ranges. Empty list = fine."""
    problems, declared = [], {}
    known = {p.stem for p in all_stages} | RESERVED_SECTIONS
    for key in profile:
        if key not in known:
            problems.append(f"unknown section {key!r}{close_names(key, known)}")
    selected = {p.stem for p in stages}
    for py in all_stages:
        declared[py.stem] = parameters_with_ranges(py)
    for st, (defaults, ranges) in declared.items():
        section = profile.get(st) or {}
        if not isinstance(section, dict):
            problems.append(f"{st}: section must be a mapping of NAME: value, got {type(section).__name__}")
            continue
        for k, v in section.items():
            if k not in defaults:
                problems.append(f"{st}: {k!r} is not a parameter of {st}.py{close_names(k, defaults)}")
            else:
                problems += value_problems(st, k, v, defaults[k], ranges.get(k))
    common = profile.get("common") or {}
    if not isinstance(common, dict):
        return problems + [f"common: must be a mapping of NAME: value, got {type(common).__name__}"]
    for src, label in ((common, "common"), (overrides, "command line")):
        for k, v in src.items():
            users = [st for st in selected if k in declared[st][0]]
            if label == "common" and not any(k in d for d, _ in declared.values()):
                problems.append(
                    f"common: {k!r} is a parameter of no stage notebook"
                    f"{close_names(k, {n for d, _ in declared.values() for n in d})}"
                )
            for st in sorted(users):
                defaults, ranges = declared[st]
                problems += value_problems(f"{label} ({st})", k, v, defaults[k], ranges.get(k))
    return problems


def match_stages(wanted, stages: list[Path], what: str) -> list[Path]:
    """Stages named by ``wanted``: each entry is a stage number (``"03"``), a full name
    (``"03_ecc_admm"``), a prefix of a full name longer than the number (``"03_ecc"``) or a name
    without the number or its prefix of >= 2 characters (``"ecc"``); each must pick exactly one stage."""
    chosen, names = [], [p.stem for p in stages]
    for w in wanted:
        w = str(w).strip()
        hits = [
            p
            for p in stages
            if w
            and (
                w == p.stem
                or (re.fullmatch(r"\d\d", w) and p.stem[:2] == w)
                or (len(w) > 3 and re.match(r"\d\d_", w) and p.stem.startswith(w))
                or (len(w) >= 2 and not w[:1].isdigit() and p.stem[3:].startswith(w))
            )
        ]
        if len(hits) != 1:
            why = "matches no stage" if not hits else f"is ambiguous ({', '.join(p.stem for p in hits)})"
            raise SystemExit(f"{what} {w!r} {why}: give a stage number (00 .. 99) or name; stages: {', '.join(names)}")
        chosen += [h for h in hits if h not in chosen]
    return [p for p in stages if p in chosen]


def notebook_parameters(py_path: Path) -> dict:
    """Names and literal defaults of the notebook's first ``parameters`` cell."""
    return parameters_with_ranges(py_path)[0]


def stage_parameters(stage: str, declared: dict, profile: dict, overrides: dict) -> dict:
    """common -> stage section -> command-line overrides, restricted to declared names."""
    merged = {}
    for src in (profile.get("common") or {}, profile.get(stage) or {}, overrides):
        merged.update({k: v for k, v in (src if isinstance(src, dict) else {}).items() if k in declared})
    return merged


def check_profile_names(profile: dict, stages: list[Path], all_stages: list[Path], overrides=None) -> list[str]:
    """Problems with the profile's names, types and ranges (see ``stage_params.check_profile``)."""
    return check_profile(profile, stages, all_stages, overrides or {})


def check_devices(profile: dict, stages: list[Path], overrides: dict) -> list[str]:
    """``train.check_device`` on each selected stage's DEVICE, before anything runs."""
    from ..train import check_device

    problems, seen = [], {}
    for py in stages:
        declared = notebook_parameters(py)
        dev = stage_parameters(py.stem, declared, profile, overrides).get("DEVICE", declared.get("DEVICE"))
        if dev is None or not isinstance(dev, str):
            continue
        if dev not in seen:
            try:
                check_device(dev)
                seen[dev] = ""
            except ValueError as e:
                seen[dev] = str(e)
        if seen[dev]:
            problems.append(f"{py.stem}: {seen[dev]}")
    return problems


def last_run_params(art, stage: str) -> dict:
    """Parameters a stage last ran with: its notebook's defaults, overridden by the runner's ``.reproduce.json``
    in ``art/<stage>`` (a stage run by hand in JupyterLab has none: its defaults are returned)."""
    import json

    from ..stages import REPO

    src = REPO / "notebooks" / f"{stage}.py"
    params = notebook_parameters(src) if src.exists() else {}
    stamp = Path(art) / stage / ".reproduce.json"
    if stamp.exists():
        params.update(json.loads(stamp.read_text()).get("params", {}))
    return params
