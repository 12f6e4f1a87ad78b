"""Build ``artifacts/index.html``: one offline page with every stage's numbers, figures and tables.

    python -m compresslib.workbook.report                      # artifacts/ of this checkout
    python -m compresslib.workbook.report --artifacts /tmp/art --no-notebooks

The page holds the stage map (status, seconds, what each stage reads and writes), then one
section per stage: the scalar headline metrics of ``metrics.json``, every PNG figure, every CSV
table (rendered, truncated when long, linked in full) and a link to the executed notebook
rendered to HTML by nbconvert (``artifacts/<stage>/<stage>.html``).

It opens from disk with no server and no network: every link is relative, the page has no
script at all, and the notebook HTML is rendered with the JupyterLab template minus its CDN
scripts (require.js, MathJax, mermaid, widget manager). Offline, LaTeX in markdown therefore
shows as its TeX source and widgets show their static text; figures are embedded PNGs.

A stage is shown green only when its last run succeeded and its ``manifest.json`` still matches
its files and its upstream stages (``compresslib.workbook.provenance``); failed, killed, running and stale
stages get their own style and the reason. The report stays inside the artifacts root: a file or
stage folder whose real path (symlinks resolved) lies outside it is never read, and the notebook
pages are sanitized (no ``<script>``, ``on*=`` handlers, ``<iframe>``/``<object>``/``<embed>``,
``javascript:`` or ``file:`` URLs, nothing loaded from outside the root).
"""

from __future__ import annotations

import html
import json
import math
import re
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

from . import command_line
from . import provenance as pv
from ..stages import REPO, UPSTREAM, headline
from ..results import atomic_write_text, read_json

STAGE_RE = re.compile(r"^\d\d_\w+$")
MAX_ROWS = 25  # CSV rows shown inline before truncation
MAX_CSV_BYTES = 2_000_000  # larger CSVs are linked, not rendered

# JupyterLab look, no network: the blocks that load scripts from a CDN are emptied.
_OFFLINE_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
"""

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0 auto;max-width:1200px;
padding:0 1.5em 4em;color:#1b1b1b;line-height:1.45}
h1{margin-top:1em} h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2.2em}
table{border-collapse:collapse;font-size:.85em;margin:.6em 0} th,td{border:1px solid #ccc;padding:.25em .5em;
text-align:right;vertical-align:top} th{background:#f3f3f3} td.l,th.l{text-align:left}
.ok{color:#176c2c;font-weight:600} .failed{color:#b00020;font-weight:600} .missing{color:#777}
.killed{color:#fff;background:#b00020;font-weight:600;padding:0 .3em} .running{color:#8a5a00;font-weight:600}
.stale{color:#8a5a00;font-weight:600;font-style:italic} .stale::before,.killed::before{content:"\26A0 "}
.notcurrent{border-left:4px solid #b00020;padding:.3em .8em;background:#fff4f4}
figure{display:inline-block;margin:.5em 1em .5em 0;max-width:100%} figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.8em;color:#555} .note{color:#666;font-size:.85em} .scroll{overflow-x:auto}
nav a{margin-right:.8em} code{background:#f5f5f5;padding:0 .2em}
td.rw{max-width:24em;font-size:.9em}
"""


def _esc(x) -> str:
    return html.escape(str(x), quote=True)


def _fmt(v) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return "nan" if not math.isfinite(v) else f"{v:.4g}"
    return str(v)


def _link(path: Path, root: Path) -> str:
    """Relative URL of ``path`` from ``root`` (forward slashes, percent-safe characters only)."""
    from urllib.parse import quote

    return quote(path.relative_to(root).as_posix())


def inside(path: Path, root: Path) -> bool:
    """True when ``path`` with every symlink resolved lies inside ``root`` (the report reads nothing else)."""
    try:
        Path(path).resolve().relative_to(Path(root).resolve())
        return True
    except (ValueError, OSError, RuntimeError):
        return False


def _files(sd: Path, pattern: str, root: Path) -> list[Path]:
    return sorted(p for p in sd.glob(pattern) if p.is_file() and inside(p, root))


def stage_dirs(artifacts: Path) -> list[Path]:
    """``artifacts/NN_name`` folders in stage order (a folder that resolves outside the root is left out)."""
    return sorted(
        p for p in Path(artifacts).iterdir() if p.is_dir() and STAGE_RE.match(p.name) and inside(p, artifacts)
    )


def notebook_intro(stage_dir: Path, notebooks_dir: Path | None = None) -> dict:
    """Title and the 'Reads:'/'Writes:' sentences of a stage's first markdown cell.

    Read from the executed notebook, else from ``notebooks/<stage>.py`` (jupytext).
    """
    import nbformat

    nb = None
    executed = stage_dir / f"{stage_dir.name}.ipynb"
    try:
        if executed.is_file() and inside(executed, stage_dir.parent):
            nb = nbformat.read(executed, as_version=4)
        elif notebooks_dir is not None and (Path(notebooks_dir) / f"{stage_dir.name}.py").exists():
            import jupytext

            nb = jupytext.read(Path(notebooks_dir) / f"{stage_dir.name}.py")
    except Exception:  # unreadable notebook: the page still builds, the section says so
        nb = None
    out = {"title": stage_dir.name, "reads": "", "writes": ""}
    md = next((c.source for c in nb.cells if c.cell_type == "markdown"), "") if nb else ""
    for line in md.splitlines():
        if line.startswith("#") and out["title"] == stage_dir.name:
            out["title"] = line.lstrip("#").strip()
    for para in re.split(r"\n\s*\n", md):  # the sentence ends at its paragraph or the next **Key:**
        flat = " ".join(para.split())
        for key in ("reads", "writes"):
            # "**Reads:** ..." or "**Writes** under `X`: ..." up to the next "**Reads"/"**Writes"/"**Word:**"
            m = re.search(rf"\*\*{key}:?\*\*:?\s*(.*?)(?=\*\*(?:reads|writes)\b|\*\*\w+:\*\*|$)", flat, flags=re.I)
            if m and not out[key]:
                text = m.group(1).strip()
                out[key] = text if len(text) <= 240 else text[:237].rsplit(" ", 1)[0] + " …"
    return out


def _reads_cell(stage: str, prose: str) -> str:
    """The stages ``stage`` reads, from the one stage graph (``compresslib.stages.UPSTREAM``); the notebook's
    own "Reads:" sentence (which files) as the cell's tooltip. A stage missing from the graph shows its prose."""
    if stage not in UPSTREAM:
        return _md_inline(prose)
    names = _esc(", ".join(UPSTREAM[stage]) or "nothing")
    return f"<span title='{_esc(prose)}'>{names}</span>"


def _md_inline(text: str) -> str:
    """Escape, then turn `code` spans into <code> (the only markdown the stage map shows)."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", _esc(text))


def render_notebook(ipynb: Path, out_html: Path | None = None, force: bool = False) -> Path:
    """Executed notebook -> standalone HTML that needs no network (see module docstring)."""
    import nbformat
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    out_html = out_html or ipynb.with_suffix(".html")
    root = Path(ipynb).resolve().parent.parent  # the artifacts root: nothing outside it is linked
    if (
        not force
        and out_html.is_file()
        and not out_html.is_symlink()
        and out_html.stat().st_mtime >= ipynb.stat().st_mtime
        and _SANITIZED in out_html.read_text()
    ):
        return out_html
    exporter = HTMLExporter(
        extra_loaders=[DictLoader({"compresslib_offline.html.j2": _OFFLINE_TEMPLATE})],
        template_file="compresslib_offline.html.j2",
        embed_images=False,
        mathjax_url="",
        require_js_url="",
        jquery_url="",
        jupyter_widgets_base_url="",
        mermaid_js_url="",
        mermaid_layout_elk_js_url="",
    )
    body, _ = exporter.from_notebook_node(nbformat.read(ipynb, as_version=4))
    atomic_write_text(out_html, sanitize_html(body, Path(out_html).resolve().parent, root) + _SANITIZED + "\n")
    return out_html


_SANITIZED = "<!-- compresslib: sanitized v1 -->"
_DROP_WITH_CONTENT = {"script", "iframe", "object", "applet", "frameset", "frame", "noscript", "template", "noembed"}
_DROP_TAGS = {"embed", "base", "portal", "param"}
_URL_ATTRS = {
    "href",
    "src",
    "action",
    "formaction",
    "xlink:href",
    "data",
    "poster",
    "background",
    "lowsrc",
    "dynsrc",
    "codebase",
    "cite",
    "longdesc",
    "usemap",
    "ping",
    "manifest",
    "srcset",
    "imagesrcset",
}
_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source", "track", "wbr"}


def _url_ok(tag: str, attr: str, url: str, page_dir: Path, root: Path) -> bool:
    """A URL the offline page may keep: an anchor, an embedded image, a web link (``<a>`` only),
    or a relative path that stays inside the artifacts root."""
    import os.path
    from urllib.parse import unquote, urlsplit

    u = url.strip()
    if not u or u.startswith("#"):
        return True
    if re.match(r"data:image/(png|jpe?g|gif|webp|svg\+xml)[;,]", u, flags=re.I):
        return attr != "href" or tag in ("a",)
    parts = urlsplit(u)
    if parts.scheme or u.startswith("//"):
        return tag == "a" and attr == "href" and parts.scheme in ("http", "https", "mailto")
    path = unquote(parts.path)
    if path.startswith("/") or "\\" in path:
        return False
    target = os.path.normpath(os.path.join(str(page_dir), path))
    return target == str(root) or target.startswith(str(root) + os.sep)


def _css_ok(text: str) -> str:
    """Style text without script URLs, IE expressions, imports or file/remote url(...)s."""
    text = re.sub(r"(?i)expression\s*\(|javascript:|vbscript:|@import[^;]*;?|-moz-binding", "", text)
    return re.sub(r"(?i)url\(\s*['\"]?\s*(?!data:|#)[^)]*\)", "url()", text)


class _Sanitizer(HTMLParser):
    def __init__(self, page_dir: Path, root: Path):
        super().__init__(convert_charrefs=False)
        self.page_dir, self.root, self.out, self.drop, self.stack = page_dir, root, [], 0, []
        self.in_style = False

    def _attrs(self, tag, attrs):
        kept = []
        for k, v in attrs:
            k = k.lower()
            flat = re.sub(r"[\s\x00-\x1f]", "", v or "").lower()
            if k.startswith("on") or k in ("srcdoc", "formaction") or "javascript:" in flat or "vbscript:" in flat:
                continue
            if k in _URL_ATTRS and v is not None:
                urls = [c.strip().split(" ")[0] for c in v.split(",")] if k.endswith("srcset") else [v]
                if not all(_url_ok(tag, k, x, self.page_dir, self.root) for x in urls):
                    continue
            if k == "style" and v:
                v = _css_ok(v)
            if tag == "meta" and k == "http-equiv":
                return None
            kept.append(k if v is None else f'{k}="{html.escape(v, quote=True)}"')
        return kept

    def handle_starttag(self, tag, attrs, end=">"):
        if self.drop:
            if tag == self.stack[-1]:
                self.drop += 1
            return
        if tag in _DROP_WITH_CONTENT:
            self.drop, self.stack = 1, [tag]
            return
        if tag in _DROP_TAGS:
            return
        kept = self._attrs(tag, attrs)
        if kept is None:
            return
        self.in_style = tag == "style" and end == ">"
        self.out.append(f"<{tag}{''.join(' ' + a for a in kept)}{end}")

    def handle_startendtag(self, tag, attrs):
        if tag in _DROP_WITH_CONTENT and not self.drop:
            return
        self.handle_starttag(tag, attrs, end=" />")

    def handle_endtag(self, tag):
        if self.drop:
            if tag == self.stack[-1]:
                self.drop -= 1
            return
        self.in_style = False
        if tag not in _DROP_TAGS and tag not in _DROP_WITH_CONTENT and tag not in _VOID:
            self.out.append(f"</{tag}>")

    def handle_data(self, data):
        if not self.drop:
            self.out.append(_css_ok(data) if self.in_style else data)

    def handle_entityref(self, name):
        if not self.drop:
            self.out.append(f"&{name};")

    def handle_charref(self, name):
        if not self.drop:
            self.out.append(f"&#{name};")

    def handle_decl(self, decl):
        if decl.lower().startswith("doctype"):
            self.out.append(f"<!{decl}>")


def sanitize_html(text: str, page_dir: Path, root: Path) -> str:
    """``text`` without active content: scripts, event handlers, frames/objects/embeds, script or
    file URLs, and links/images that leave ``root`` (relative paths resolved from ``page_dir``)."""
    p = _Sanitizer(Path(page_dir), Path(root))
    p.feed(text)
    p.close()
    return "".join(p.out)


def _metrics_table(metrics: dict) -> str:
    scalars = [(k, v) for k, v in metrics.items() if isinstance(v, (int, float, str, bool)) or v is None]
    lists = [(k, v) for k, v in metrics.items() if isinstance(v, (list, dict))]
    rows = "".join(f"<tr><th class='l'>{_esc(k)}</th><td>{_esc(_fmt(v))}</td></tr>" for k, v in scalars)
    extra = ", ".join(
        f"<code>{_esc(k)}</code> ({len(v)} {'rows' if isinstance(v, list) else 'keys'})" for k, v in lists
    )
    out = f"<table class='metrics'>{rows}</table>" if rows else ""
    if extra:
        out += f"<p class='note'>Also in metrics.json: {extra}.</p>"
    return out


def _csv_table(path: Path, root: Path, max_rows: int) -> str:
    import pandas as pd

    href = _link(path, root)
    head = f"<h4><a href='{href}'>{_esc(path.name)}</a></h4>"
    if path.stat().st_size > MAX_CSV_BYTES:
        return head + f"<p class='note'>{path.stat().st_size / 1e6:.1f} MB: open the CSV.</p>"
    try:
        df = pd.read_csv(path)
    except Exception as e:  # empty or malformed CSV: say so rather than fail the whole page
        return head + f"<p class='note'>could not be read: {_esc(type(e).__name__)}: {_esc(e)}</p>"
    n = len(df)
    shown = df.head(max_rows)
    table = shown.to_html(index=False, border=0, float_format=lambda v: f"{v:.4g}", na_rep="", escape=True)
    note = (
        (
            f"<p class='note'>showing {max_rows} of {n} rows: the full table is "
            f"<a href='{href}'>{_esc(path.name)}</a>.</p>"
        )
        if n > max_rows
        else ""
    )
    return head + f"<div class='scroll'>{table}</div>{note}"


def _status(stage: str, stage_dir: Path, summary: dict, root: Path) -> tuple[str, str, str, str]:
    """(css class, status text, seconds, reason) from the last reproduce summary checked against the
    stage's manifest: green only for a successful run whose files and upstream are unchanged."""
    if not stage_dir.is_dir() or not inside(stage_dir, root):
        why = (
            "is missing"
            if not (stage_dir.is_dir() or stage_dir.is_symlink())
            else "is a link out of the artifacts root (not read)"
        )
        return "missing", f"artifacts folder {stage} {why}", "", ""
    row = summary.get(stage)
    status, err = pv.row_status(row) if row else ("", "")
    secs = _fmt(row.get("seconds", "")) if row else ""
    if status in ("failed", "skipped"):
        return "failed", status, secs, err or "the last run failed"
    if status in ("killed", "running"):
        return status, status, secs, err
    state, why = pv.stage_state(root, stage)
    if state == "stale":
        return "stale", "stale", secs, f"{why}: re-run it (python -m compresslib.workbook.reproduce --only {stage[:2]})"
    if state == "none":
        return (
            "stale",
            "unverified",
            secs,
            f"{why}: re-run it (python -m compresslib.workbook.reproduce --only {stage[:2]})",
        )
    return "ok", status or "ok", secs, ""


def build_report(
    artifacts, notebooks_dir=None, render_notebooks: bool = True, max_rows: int = MAX_ROWS, out_name: str = "index.html"
) -> Path:
    """Write ``<artifacts>/index.html`` and return its path."""
    root = Path(artifacts).resolve()
    if not root.is_dir():
        raise FileNotFoundError(
            f"artifacts folder {root} does not exist: run "
            f"`python -m compresslib.workbook.reproduce --profile smoke` (or default) first"
        )
    if max_rows < 1:
        raise ValueError(f"max_rows must be >= 1, got {max_rows}")
    summary = pv.read_summary(root) if inside(root / "summary.json", root) else {}
    # stage folders, plus stages the last run names whose folder is gone (shown as missing)
    stages = sorted(set(stage_dirs(root)) | {root / s for s in summary if STAGE_RE.match(s)})
    if not stages:
        raise FileNotFoundError(f"{root} holds no stage folder (NN_name): run compresslib.workbook.reproduce first")

    map_rows, sections, profiles = [], [], set()
    for sd in stages:
        st = sd.name
        intro = notebook_intro(sd, notebooks_dir)
        cls, status, secs, err = _status(st, sd, summary, root)
        readable = sd.is_dir() and inside(sd, root)
        stamp = sd / ".reproduce.json"
        if readable and stamp.is_file() and inside(stamp, root):
            try:
                profiles.add(str(read_json(stamp).get("params", {}).get("PROFILE", "?")))
            except (OSError, ValueError, AttributeError):
                pass
        metrics = {}
        if readable and (sd / "metrics.json").is_file() and inside(sd / "metrics.json", root):
            try:
                metrics = read_json(sd / "metrics.json")
                metrics = metrics if isinstance(metrics, dict) else {}
            except (OSError, json.JSONDecodeError) as e:
                err = err or f"metrics.json unreadable: {e}"
                cls, status = ("failed", "unreadable") if cls == "ok" else (cls, status)
        nb_link = ""
        ipynb = sd / f"{st}.ipynb"
        if readable and ipynb.is_file() and inside(ipynb, root):
            target = ipynb
            if render_notebooks:
                try:
                    target = render_notebook(ipynb)
                except Exception as e:  # a broken notebook must not hide every other stage
                    err = err or f"nbconvert failed: {type(e).__name__}: {e}"
            nb_link = f"<a href='{_link(target, root)}'>executed notebook ({target.suffix[1:]})</a>"
        failed_nb = root / f"{st}.failed" / f"{st}.ipynb"
        if failed_nb.is_file() and inside(failed_nb, root):
            nb_link += f" · <a href='{_link(failed_nb, root)}'>notebook of the failed run</a>"
        map_rows.append(
            f"<tr><td class='l'><a href='#{st}'>{_esc(st)}</a></td><td class='l'>{nb_link}</td>"
            f"<td class='l'>{_esc(intro['title'])}</td>"
            f"<td class='l {cls}'>{_esc(status)}</td><td>{_esc(secs)}</td>"
            f"<td class='l'>{_esc(headline(metrics) if cls == 'ok' else err)}</td>"
            f"<td class='l rw'>{_reads_cell(st, intro['reads'])}</td>"
            f"<td class='l rw'>{_md_inline(intro['writes'])}</td></tr>"
        )
        heading = intro["title"] if intro["title"].startswith(st[:2]) else f"{st} · {intro['title']}"
        parts = [
            f"<h2 id='{st}'>{_esc(heading)}</h2>",
            f"<p><span class='{cls}'>{_esc(status)}</span> {nb_link}"
            + (f" · <a href='{_link(sd / 'metrics.json', root)}'>metrics.json</a>" if metrics else "")
            + "</p>",
        ]
        if err:
            parts.append(f"<p class='failed'>{_esc(err)}</p>")
        if cls != "ok" and readable and any(sd.iterdir()):
            parts.append(
                f"<p class='notcurrent'>NOT CURRENT: the files below are from an earlier run of this stage, "
                f"not the result of its last run or of its current inputs ({_esc(status)}).</p>"
            )
        if metrics:
            parts.append("<h3>Headline metrics</h3>" + _metrics_table(metrics))
        pngs = _files(sd, "*.png", root) if readable else []
        if pngs:
            parts.append(
                "<h3>Figures</h3>"
                + "".join(
                    f"<figure><img src='{_link(p, root)}' alt='{_esc(p.stem)}' loading='eager'>"
                    f"<figcaption>{_esc(p.name)}</figcaption></figure>"
                    for p in pngs
                )
            )
        csvs = _files(sd, "*.csv", root) if readable else []
        if csvs:
            parts.append("<h3>Tables</h3>" + "".join(_csv_table(p, root, max_rows) for p in csvs))
        sections.append("\n".join(parts))

    board = [
        s
        for s in stages
        if s.name.startswith("09_") and (s / "leaderboard.csv").is_file() and inside(s / "leaderboard.csv", root)
    ]
    lead = (
        (
            f"<p>Every method on one accuracy-vs-cost frontier: <a href='#{board[0].name}'>leaderboard</a> "
            f"(<a href='{_link(board[0] / 'leaderboard.csv', root)}'>leaderboard.csv</a>).</p>"
        )
        if board
        else ""
    )
    stamp_txt = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    prof = ", ".join(sorted(profiles)) or "unknown"
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>compresslib report</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style></head>
<body>
<h1>compresslib — reproduction report</h1>
<p class="note">Built {_esc(stamp_txt)} from <code>{_esc(root.name)}/</code>; profile: {_esc(prof)}.
Regenerate with <code>make reproduce</code> or <code>python -m compresslib.workbook.report</code>.</p>
<nav>{"".join(f"<a href='#{_esc(s.name)}'>{_esc(s.name[:2])}</a>" for s in stages)}</nav>
{lead}
<h2 id="stage-map">Stage map</h2>
<p class="note">Stages run in order; each reads the artifacts of the stages named under "reads".</p>
<div class="scroll"><table><tr><th class='l'>stage</th><th class='l'>notebook</th><th class='l'>title</th>
<th class='l'>status</th><th>seconds</th><th class='l'>headline</th><th class='l'>reads</th><th class='l'>writes</th></tr>
{"".join(map_rows)}</table></div>
{"".join(f"<section>{s}</section>" for s in sections)}
</body></html>
"""
    return atomic_write_text(root / out_name, page)


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs, self.ids = [], set()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        for key in ("src", "href"):
            if a.get(key) is not None and tag in ("img", "a", "script", "link", "iframe", "source"):
                self.refs.append((tag, a[key]))


def broken_links(page) -> list[str]:
    """Every src/href of an HTML file that does not resolve offline: remote URLs, missing files, bad anchors."""
    from urllib.parse import unquote, urlsplit

    page = Path(page)
    p = _Refs()
    p.feed(page.read_text())
    bad = []
    for tag, ref in p.refs:
        u = urlsplit(ref)
        if u.scheme in ("http", "https") or ref.startswith("//"):
            bad.append(f"{tag} {ref}: needs the network")
        elif u.scheme in ("data", "mailto"):
            continue
        elif not u.path:
            if u.fragment and u.fragment not in p.ids:
                bad.append(f"{tag} {ref}: no element with that id")
        elif u.scheme not in ("", "file") or not (page.parent / unquote(u.path)).is_file():
            bad.append(f"{tag} {ref}: file not found")
    return bad


def main(argv=None) -> int:
    ap = command_line("report", __doc__)
    ap.add_argument(
        "--artifacts", default=str(REPO / "artifacts"), help="output root of compresslib.workbook.reproduce"
    )
    ap.add_argument("--notebooks", default=str(REPO / "notebooks"), help="stage sources (titles if not executed)")
    ap.add_argument("--no-notebooks", action="store_true", help="do not render executed notebooks to HTML")
    ap.add_argument("--max-rows", type=int, default=MAX_ROWS, help="CSV rows shown before truncation")
    ap.add_argument("--check", action="store_true", help="exit 1 if a link or image of the page does not resolve")
    args = ap.parse_args(argv)
    try:
        path = build_report(args.artifacts, args.notebooks, not args.no_notebooks, args.max_rows)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path} (open it in a browser: file://{path})")
    if args.check:
        bad = broken_links(path)
        for b in bad:
            print(f"broken: {b}", file=sys.stderr)
        return 1 if bad else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
