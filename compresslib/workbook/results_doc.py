"""Generate ``docs/results.md`` from a run's artifacts: nothing in it is typed by hand.

    python -m compresslib.workbook.results_doc --artifacts artifacts                  # docs/results.md + sources
    python -m compresslib.workbook.results_doc --artifacts artifacts --update         # a partial run (--only)
    python -m compresslib.workbook.results_doc --render                               # re-render from the sources
    python -m compresslib.workbook.results_doc --check                                # exit 1 if the doc is stale

Two steps. :func:`collect` reads the artifacts into a *sources snapshot*, written beside the document
as ``docs/results_sources.json``: for every stage folder with a ``manifest.json`` (a finished
``compresslib.workbook.reproduce`` run) the profile, commit, finish time and seconds of the run, the stage's
scalar metrics from ``metrics.json`` (exact values) and the text its notebook printed in its closing
verdict cell; the run summary (status and seconds per stage); and stage 09's ``leaderboard.csv``.
:func:`render` turns the snapshot, and nothing else, into the markdown, so the committed document can
be re-rendered byte for byte from the committed snapshot, and :func:`unexplained_numbers` checks that
every number in the document is one of the snapshot's values (at the precision it is printed with).

``--update`` keeps the stages (and the leaderboard) absent from ``--artifacts`` as the previous
snapshot had them: each section names the run (profile, commit, finish time) its numbers come from, so
a mixed document says so stage by stage.
"""

from __future__ import annotations

import bisect
import io
import json
import re
from pathlib import Path

from . import command_line
from ..results import atomic_write_text, read_json, write_json

#: How many of the last printing code cells of a notebook count as its "verdict".
VERDICT_CELLS = 1
#: Snapshot format version (bump when the snapshot's layout changes).
FORMAT = 1
LEADERBOARD_STAGE = "09_leaderboard"
#: A number as printed: digits with optional thousands separators, decimals and exponent, not part of an
#: identifier (``03_ecc_admm``, ``lenet5``, a commit hash) and not the tail of a longer number.
NUMBER = re.compile(r"(?<![\w.,])\d+(?:,\d{3})*(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\w]|\.\d|,\d{3})")
#: Scales at which a snapshot value may be printed (fraction -> %, MACs -> MMACs, bits -> kbit / Gbit-ops).
SCALES = (1.0, 100.0, 1e-3, 1e-6, 1e-9)


def scalar_metrics(metrics: dict) -> list[tuple[str, object]]:
    """The top-level scalar entries of a metrics.json (numbers, strings, booleans), in file order."""
    return [(k, v) for k, v in metrics.items() if isinstance(v, (int, float, str, bool)) or v is None]


def printed_verdict(ipynb: Path, cells: int = VERDICT_CELLS) -> str:
    """stdout of the last ``cells`` code cells of an executed notebook that printed anything."""
    if not ipynb.is_file():
        return ""
    nb = json.loads(ipynb.read_text())
    texts = []
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        out = "".join(
            "".join(o.get("text", ""))
            for o in cell.get("outputs", [])
            if o.get("output_type") == "stream" and o.get("name") == "stdout"
        )
        if out.strip():
            texts.append(out.strip())
    return "\n".join(texts[-cells:]) if texts else ""


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


# ------------------------------------------------------------------ step 1: artifacts -> sources snapshot
def stage_sources(stage_dir: Path) -> dict:
    """The run facts, scalar metrics and printed verdict of one finished stage folder."""
    man = read_json(stage_dir / "manifest.json")
    metrics = read_json(stage_dir / "metrics.json") if (stage_dir / "metrics.json").is_file() else {}
    code = man.get("code") or {}
    return {
        "profile": (man.get("params") or {}).get("PROFILE", "?"),
        "commit": code.get("commit") or "?",
        "dirty": bool(code.get("dirty")),
        "finished": man.get("finished", "?"),
        "seconds": man.get("seconds"),
        "metrics": dict(scalar_metrics(metrics)),
        "verdict": printed_verdict(stage_dir / f"{stage_dir.name}.ipynb"),
    }


def collect(art, previous: dict | None = None) -> dict:
    """The sources snapshot of the artifacts root ``art``; with ``previous`` (an earlier snapshot), the
    stages absent from ``art`` keep their earlier entries, summary rows and leaderboard."""
    art = Path(art)
    stages = sorted(
        p
        for p in (art.iterdir() if art.is_dir() else [])
        if p.is_dir() and not p.is_symlink() and p.name[:2].isdigit() and (p / "manifest.json").is_file()
    )
    if not stages:
        raise SystemExit(f"{art}: no stage with a manifest.json; run `python -m compresslib.workbook.reproduce` first")
    here = {p.name for p in stages}
    previous = previous or {}
    if previous and previous.get("format") != FORMAT:
        raise SystemExit(f"previous sources have format {previous.get('format')!r}, expected {FORMAT}: regenerate")
    old_stages = {st: v for st, v in (previous.get("stages") or {}).items() if st not in here}
    summary = {st: row for st, row in (previous.get("summary") or {}).items() if st not in here}
    if (art / "summary.json").is_file():
        rows = read_json(art / "summary.json")
        for r in rows.values() if isinstance(rows, dict) else rows:
            st = r.get("stage")
            if st in here or st not in summary:
                summary[st] = {"status": r.get("status"), "seconds": r.get("seconds")}
    board = previous.get("leaderboard")
    csv = art / LEADERBOARD_STAGE / "leaderboard.csv"
    if LEADERBOARD_STAGE in here and csv.is_file():
        profile = stage_sources(art / LEADERBOARD_STAGE)["profile"]
        board = {"stage": LEADERBOARD_STAGE, "csv_file": f"leaderboard_{profile}.csv", "csv": csv.read_text()}
    all_stages = {**old_stages, **{p.name: stage_sources(p) for p in stages}}
    return {
        "format": FORMAT,
        "generator": "python -m compresslib.workbook.results_doc",
        "summary": {st: summary[st] for st in sorted(summary)},
        "partial_update": {"stages": sorted(here), "artifacts": art.name} if old_stages else None,
        "stages": {st: all_stages[st] for st in sorted(all_stages)},
        "leaderboard": board,
    }


# ------------------------------------------------------------------ step 2: sources snapshot -> markdown
def leaderboard_frame(sources: dict):
    """The snapshot's leaderboard as the DataFrame stage 09 wrote (None when the snapshot has none)."""
    import pandas as pd

    board = sources.get("leaderboard")
    return pd.read_csv(io.StringIO(board["csv"])) if board else None


def _run_line(s: dict) -> str:
    dirty = " (dirty tree)" if s["dirty"] else ""
    return (
        f"_profile `{s['profile']}`, commit `{s['commit']}`{dirty}, finished {s['finished']} in {_fmt(s['seconds'])} s_"
    )


def render(sources: dict) -> str:
    """The markdown document of a sources snapshot (deterministic: same snapshot, same bytes)."""
    lines = [
        "# Results of the last published run (generated)",
        "",
        "Generated by `python -m compresslib.workbook.results_doc` from `artifacts/<stage>/metrics.json`, `manifest.json`, "
        "the executed notebooks and the leaderboard CSV, through the snapshot "
        "[`results_sources.json`](results_sources.json) (the exact values rendered here). Do not edit by hand: "
        "re-run the stages and regenerate. Proxies stay proxies: see each notebook's closing notes and "
        "[`stages.md`](stages.md) for what a number measures.",
        "",
    ]
    if sources["summary"]:
        lines += ["| stage | status | seconds |", "|---|---|---|"]
        lines += [f"| {st} | {r['status']} | {_fmt(r['seconds'])} |" for st, r in sources["summary"].items()]
        lines.append("")
    part = sources.get("partial_update")
    if part:
        lines += [
            f"_Updated from a partial run: {', '.join(part['stages'])} from `{part['artifacts']}`; the other "
            "sections are from the earlier run each names._",
            "",
        ]
    for st, s in sources["stages"].items():
        lines += [f"## {st}", "", _run_line(s), ""]
        if s["metrics"]:
            lines += ["| metric | value |", "|---|---|"] + [f"| `{k}` | {_fmt(v)} |" for k, v in s["metrics"].items()]
            lines.append("")
        if s["verdict"]:
            lines += ["What the notebook printed in its closing cell:", "", "```", s["verdict"], "```", ""]
    board = sources.get("leaderboard")
    if board:
        from ..leaderboard import TABLE_BEGIN, TABLE_END, markdown_table

        run = sources["stages"].get(board["stage"])
        lines += [
            "## Leaderboard",
            "",
            f"From stage `{board['stage']}`" + (f" ({_run_line(run).strip('_')})" if run else "") + "; the CSV is "
            f"[`{board['csv_file']}`]({board['csv_file']}). Every row is accounting (MACs of masked weights, size "
            "at the bits of the codes, fake-quantized accuracy); what each column measures, and which rows share "
            "a task, is in [`stages.md`](stages.md).",
            "",
            TABLE_BEGIN,
            markdown_table(leaderboard_frame(sources)),
            TABLE_END,
            "",
        ]
    return "\n".join(lines).rstrip("\n") + "\n"


# ------------------------------------------------------------------ the check: every number is a source value
def _strings_and_numbers(obj, strings: list, numbers: list) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            strings.append(str(k))
            _strings_and_numbers(v, strings, numbers)
    elif isinstance(obj, list):
        for v in obj:
            _strings_and_numbers(v, strings, numbers)
    elif isinstance(obj, bool) or obj is None:
        return
    elif isinstance(obj, (int, float)):
        numbers.append(float(obj))
    else:
        strings.append(str(obj))


def _tolerance(token: str) -> tuple[float, float]:
    """(value, half a unit of the last printed digit) of a printed number."""
    mant, _, exp = token.replace(",", "").lower().partition("e")
    decimals = len(mant.partition(".")[2])
    e = int(exp) if exp else 0
    return float(mant) * 10.0**e, 0.5 * 10.0 ** (e - decimals) * (1 + 1e-9) + 1e-12


def unexplained_numbers(text: str, sources: dict) -> list[str]:
    """Every number printed in ``text`` that is neither written in one of the snapshot's strings (verdict
    texts, settings, dates) nor one of its numeric values (metrics, seconds, leaderboard cells) at one of
    :data:`SCALES`, rounded to the digits printed. Empty for a document rendered from ``sources``."""
    strings, numbers = [], []
    _strings_and_numbers({k: v for k, v in sources.items() if k != "leaderboard"}, strings, numbers)
    frame = leaderboard_frame(sources)
    if frame is not None:
        strings += [str(c) for c in frame.columns] + [str(sources["leaderboard"][k]) for k in ("stage", "csv_file")]
        for col in frame.columns:
            vals = frame[col].dropna().tolist()
            if frame[col].dtype.kind in "iuf":
                numbers += [float(v) for v in vals]
            else:
                strings += [str(v) for v in vals]
    written = {m.group(0) for s in strings for m in NUMBER.finditer(s)}
    scaled = sorted({abs(v) * s for v in numbers for s in SCALES})
    bad = []
    for m in NUMBER.finditer(text):
        tok = m.group(0)
        if tok in written:
            continue
        x, tol = _tolerance(tok)
        i = bisect.bisect_left(scaled, x - tol)
        if not (i < len(scaled) and scaled[i] <= x + tol):
            bad.append(tok)
    return bad


# ------------------------------------------------------------------ command line
def sources_path(out) -> Path:
    """``docs/results.md`` -> ``docs/results_sources.json``."""
    out = Path(out)
    return out.with_name(f"{out.stem}_sources.json")


def build(art: Path, previous: dict | None = None) -> str:
    """The whole document for the artifacts root ``art`` (see :func:`collect` for ``previous``)."""
    return render(collect(art, previous))


def write(sources: dict, out) -> list[Path]:
    """Write the snapshot, the document rendered from it and the leaderboard CSV it holds, beside ``out``."""
    out = Path(out)
    written = [write_json(sources_path(out), sources), atomic_write_text(out, render(sources))]
    board = sources.get("leaderboard")
    if board:
        written.append(atomic_write_text(out.parent / board["csv_file"], board["csv"]))
    return written


def main(argv=None) -> int:
    ap = command_line("results_doc", __doc__)
    ap.add_argument("--artifacts", default="artifacts")
    ap.add_argument("--out", default="docs/results.md", help="the document; its snapshot is <stem>_sources.json")
    ap.add_argument("--update", action="store_true", help="keep the stages absent from --artifacts")
    ap.add_argument("--render", action="store_true", help="re-render --out from its snapshot (no artifacts)")
    ap.add_argument("--check", action="store_true", help="exit 1 unless --out is its snapshot's rendering")
    a = ap.parse_args(argv)
    src = sources_path(a.out)
    if a.render or a.check:
        if not src.is_file():
            raise SystemExit(
                f"{src}: no sources snapshot; run `python -m compresslib.workbook.results_doc --artifacts DIR`"
            )
        sources = read_json(src)
        if a.check:
            stale = not Path(a.out).is_file() or Path(a.out).read_text() != render(sources)
            bad = unexplained_numbers(Path(a.out).read_text(), sources) if Path(a.out).is_file() else []
            print(
                f"{a.out}: "
                + ("differs from its snapshot's rendering; " if stale else "")
                + (f"numbers not in the snapshot: {bad[:10]}" if bad else "every number is a snapshot value")
            )
            return int(stale or bool(bad))
    else:
        previous = read_json(src) if a.update and src.is_file() else None
        sources = collect(Path(a.artifacts), previous)
    for p in write(sources, a.out):
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
