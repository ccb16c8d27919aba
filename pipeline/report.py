"""A run's report as one self-contained HTML page (opens offline, no CDN) and a Markdown twin.

    from worldloom.pipeline.report import Report
    r = Report("WorldLoom demo")
    s = r.section("IDM", "Held-out seeds.")
    s.table(["metric", "IDM", "no-op"], [["macro F1", 0.91, 0.0]], keys=[["", "idm.macro_f1", ""]])
    s.image("runs/demo/idm/curves.png", "training curves")
    r.write("runs/demo")            # report.html, report.md, report.json

Pictures and videos are embedded as data URIs so the page is one file a person can mail. With a
`root` (the pipeline gives its run directory) only files inside it are embedded, symlinks
resolved: a run copied from someone else cannot pull a file from elsewhere on the machine into a
page that gets mailed. Every
number that comes from the JSON carries `data-key` so a browser test can check the page
against `report.json`.
"""

from __future__ import annotations

import base64
import html
import mimetypes
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worldloom.io import atomic_write_text, json_text
from worldloom.paths import is_inside

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{border-bottom:2px solid #444}h2{margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.8em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f2f2f2}td:first-child,th:first-child{text-align:left}
figure{display:inline-block;margin:.5em;vertical-align:top}figcaption{font-size:.85em;color:#555;text-align:center}
img,video{max-width:100%;image-rendering:pixelated}pre{background:#f7f7f7;padding:1em;overflow:auto;font-size:.8em}
"""


# Marks, for the reader and for the browser test, any picture or video the browser could not
# decode: the result lands in <p id="media-check"> (dumped by `chromium --dump-dom`).
SELF_CHECK_JS = """
window.addEventListener('load', function () {
  var imgs = Array.from(document.images), vids = Array.from(document.querySelectorAll('video'));
  var badImgs = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); }).length;
  var badVids = vids.filter(function (v) { return v.readyState < 1 || v.error; }).length;
  var p = document.createElement('p'); p.id = 'media-check';
  p.dataset.images = imgs.length; p.dataset.videos = vids.length;
  p.dataset.badImages = badImgs; p.dataset.badVideos = badVids;
  p.textContent = (badImgs + badVids) ? (badImgs + badVids) + ' pictures failed to load' : '';
  document.body.appendChild(p);
});
"""


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return str(value)


def _data_uri(path: Path) -> str:
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


@dataclass
class Section:
    title: str
    text: str = ""
    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def table(self, columns: list[str], rows: list[list[Any]], keys: list[list[str]] | None = None) -> None:
        """A table; `keys[i][j]` names the report.json key cell (i, j) shows ("" for none)."""
        self.blocks.append(("table", (columns, rows, keys)))

    def image(self, path: str | os.PathLike, caption: str = "") -> None:
        self.blocks.append(("image", (Path(path), caption)))

    def video(self, path: str | os.PathLike, caption: str = "") -> None:
        self.blocks.append(("video", (Path(path), caption)))

    def code(self, text: str) -> None:
        self.blocks.append(("code", text))

    def lines(self, items: list[str]) -> None:
        """A short list of plain sentences (verdicts, notes)."""
        self.blocks.append(("lines", list(items)))


@dataclass
class Report:
    title: str
    sections: list[Section] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    root: Path | None = None  # embed only pictures and videos inside this directory

    def section(self, title: str, text: str = "") -> Section:
        s = Section(title, text)
        self.sections.append(s)
        return s

    @staticmethod
    def remove(out_dir: str | os.PathLike) -> None:
        """Delete report.html, .md and .json in `out_dir`: a stage of the run they describe is running again, and
        a run killed before its new report would leave the old one describing outputs that are gone."""
        for name in ("report.html", "report.md", "report.json"):
            (Path(out_dir) / name).unlink(missing_ok=True)

    def write(self, out_dir: str | os.PathLike) -> Path:
        """Write report.html, report.md and report.json into `out_dir`; return the HTML path."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "report.json", json_text(self.data, indent=2))
        atomic_write_text(out / "report.md", self._markdown(out))
        atomic_write_text(out / "report.html", self._html())
        return out / "report.html"

    def _html(self) -> str:
        parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>",
                 f"<style>{CSS}</style></head><body><h1>{html.escape(self.title)}</h1>"]
        for s in self.sections:
            parts.append(f"<h2>{html.escape(s.title)}</h2>")
            if s.text:
                parts.append(f"<p>{html.escape(s.text)}</p>")
            for kind, payload in s.blocks:
                parts.append(_html_block(kind, payload, self.root))
        parts.append(f"<script>{SELF_CHECK_JS}</script></body></html>")
        return "\n".join(parts)

    def _markdown(self, out: Path) -> str:
        lines = [f"# {self.title}", ""]
        for s in self.sections:
            lines += [f"## {s.title}", ""]
            if s.text:
                lines += [s.text, ""]
            for kind, payload in s.blocks:
                lines += _markdown_block(kind, payload, out) + [""]
        return "\n".join(lines)


def _html_block(kind: str, payload: Any, root: Path | None = None) -> str:
    if kind == "table":
        columns, rows, keys = payload
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
        body = []
        for i, row in enumerate(rows):
            cells = []
            for j, value in enumerate(row):
                key = keys[i][j] if keys else ""
                attr = f" data-key='{html.escape(key)}'" if key else ""
                cells.append(f"<td{attr}>{html.escape(_fmt(value))}</td>")
            body.append("<tr>" + "".join(cells) + "</tr>")
        return f"<table><tr>{head}</tr>{''.join(body)}</table>"
    if kind in ("image", "video"):
        path, caption = payload
        if not path.exists():
            return f"<p>(missing: {html.escape(path.name)})</p>"
        if root is not None and not is_inside(root, path):
            return f"<p>(not embedded: {html.escape(path.name)} lies outside {html.escape(root.name)}/)</p>"
        uri = _data_uri(path)
        if kind == "video" and path.suffix == ".mp4":
            media = f"<video src='{uri}' controls loop muted autoplay playsinline></video>"
        else:
            media = f"<img src='{uri}' alt='{html.escape(caption or path.name)}'>"
        return f"<figure>{media}<figcaption>{html.escape(caption)}</figcaption></figure>"
    if kind == "lines":
        return "<ul>" + "".join(f"<li>{html.escape(item)}</li>" for item in payload) + "</ul>"
    return f"<pre>{html.escape(str(payload))}</pre>"


def _markdown_block(kind: str, payload: Any, out: Path) -> list[str]:
    if kind == "table":
        columns, rows, _ = payload
        lines = ["| " + " | ".join(map(str, columns)) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
        return lines
    if kind in ("image", "video"):
        path, caption = payload
        try:
            rel = os.path.relpath(path, out)
        except ValueError:
            rel = str(path)
        if kind == "video" and path.suffix == ".mp4":  # Markdown renders no video: a link to it
            return [f"[{caption} (video)]({rel})"]
        return [f"![{caption}]({rel})"]
    if kind == "lines":
        return [f"- {item}" for item in payload]
    return ["```", str(payload), "```"]

