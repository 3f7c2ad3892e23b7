"""``index.html``: one page, no network needed — styles inline, pictures beside it (relative
paths in ``figures/`` and ``clips/``). A small inline script records script errors and images
that failed to load in ``<body data-errors=...>`` (the headless-browser test reads it)."""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

from pipeline.apps.report.render import Table, html_table

STYLE = """
body{font-family:sans-serif;margin:1.5em;max-width:1400px;color:#222}
table{border-collapse:collapse;font-size:12px;margin:.5em 0}
th,td{border:1px solid #ccc;padding:2px 6px;text-align:right}
th{background:#eee}td:nth-child(-n+3){text-align:left}
.note{font-size:12px;color:#555}img{max-width:100%;border:1px solid #ddd;margin:4px 0}
figure{margin:1em 0}figcaption{font-size:12px;color:#444}
"""

CHECK = """
window.__errors=[];
window.addEventListener('error',function(e){window.__errors.push(
  e.message||('failed to load '+((e.target&&(e.target.src||e.target.href))||'?')));},true);
window.addEventListener('load',function(){
  var imgs=document.images;
  for(var i=0;i<imgs.length;i++){if(!imgs[i].complete||imgs[i].naturalWidth===0){
    window.__errors.push('image not loaded: '+imgs[i].getAttribute('src'));}}
  document.body.setAttribute('data-images',String(imgs.length));
  document.body.setAttribute('data-errors',JSON.stringify(window.__errors));
});
"""


@dataclass(frozen=True)
class Figure:
    """A picture of the page: path relative to ``index.html`` and its caption."""

    src: str
    caption: str


@dataclass(frozen=True)
class Section:
    """A part of the page: text paragraphs, tables and figures, in that order."""

    title: str
    paragraphs: Sequence[str] = ()
    tables: Sequence[Table] = ()
    figures: Sequence[Figure] = ()
    table_limit: int | None = None


def section_html(section: Section) -> str:
    parts = [f"<section><h1>{html.escape(section.title)}</h1>"]
    parts += [f"<p>{html.escape(p)}</p>" for p in section.paragraphs]
    parts += [html_table(t, section.table_limit) for t in section.tables]
    parts += [f"<figure><img src='{html.escape(f.src)}' alt='{html.escape(f.caption)}'>"
              f"<figcaption>{html.escape(f.caption)}</figcaption></figure>"
              for f in section.figures]
    return "".join(parts) + "</section>"


def page(title: str, sections: Sequence[Section]) -> str:
    """The whole ``index.html`` text."""
    body = "".join(section_html(s) for s in sections)
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style>"
            f"<script>{CHECK}</script></head><body>{body}</body></html>\n")
