"""HTML building blocks of the run report: one self-contained page, inline CSS, no scripts.

Everything a section shows goes through these few functions, so escaping and alignment are
decided once: text is always escaped, numbers sit right-aligned in tabular figures, pictures are
`data:` URIs (the page opens offline, by mail, from an archive).
"""
from __future__ import annotations

import html
from typing import Iterable, Sequence

CSS = """
:root { --fg: #1f2328; --muted: #59636e; --line: #d1d9e0; --soft: #eef1f4; --bg: #f6f8fa;
        --accent: #0b5cad; --good: #1a7f37; --bad: #c0392b; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--fg);
       font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
header.top { background: #fff; border-bottom: 1px solid var(--line); }
header.top .wrap { padding: 22px 28px 14px; }
.wrap { max-width: 1140px; margin: 0 auto; }
main.wrap { padding: 20px 28px 40px; }
h1 { font-size: 26px; margin: 0 0 2px; letter-spacing: -0.01em; }
h1 .sub { color: var(--muted); font-weight: 400; font-size: 16px; margin-left: 8px; }
h2 { font-size: 18px; margin: 0 0 14px; padding-bottom: 8px; border-bottom: 1px solid var(--soft); }
h3 { font-size: 14px; margin: 18px 0 8px; color: var(--muted); text-transform: uppercase; letter-spacing: .04em; }
p { margin: 6px 0 12px; }
.muted { color: var(--muted); }
nav { margin-top: 12px; display: flex; flex-wrap: wrap; gap: 6px 16px; font-size: 13.5px; }
nav a { color: var(--accent); text-decoration: none; }
nav a:hover { text-decoration: underline; }
section { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 18px 24px 20px;
          margin: 0 0 18px; }
.kpis { display: grid; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr)); gap: 10px; margin-top: 14px; }
.kpi { background: var(--bg); border: 1px solid var(--soft); border-radius: 6px; padding: 8px 12px; }
.kpi .k { font-size: 12px; color: var(--muted); text-transform: uppercase; letter-spacing: .04em; }
.kpi .v { font-size: 20px; font-weight: 600; font-variant-numeric: tabular-nums; white-space: nowrap;
          overflow: hidden; text-overflow: ellipsis; }
.cols { display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: 8px 32px; align-items: start; }
.cols.three { grid-template-columns: repeat(auto-fit, minmax(290px, 1fr)); }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 13.5px; margin: 4px 0 8px; }
th, td { padding: 4px 12px 4px 0; border-bottom: 1px solid var(--soft); text-align: left; vertical-align: top; }
th { font-weight: 600; color: var(--muted); border-bottom: 1px solid var(--line); white-space: nowrap; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; padding-left: 12px; }
tr.total td { font-weight: 600; border-top: 1px solid var(--line); }
tr.best td { background: #f0f7ff; }
td code, p code { font: 12.5px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
table.kv { width: 100%; }
table.kv td:first-child { color: var(--muted); white-space: nowrap; padding-right: 18px; width: 1%; }
table.kv code { word-break: break-word; }
img { display: block; max-width: 100%; height: auto; }
img.px { image-rendering: pixelated; }
figure { margin: 0; }
figure.plot { margin: 6px 0 4px; }
figcaption { font-size: 12px; color: var(--muted); line-height: 1.35; margin-top: 4px; }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(112px, 1fr)); gap: 14px 12px; }
.gallery.pairs { grid-template-columns: repeat(auto-fill, minmax(210px, 1fr)); }
.gallery figure { background: var(--bg); border: 1px solid var(--soft); border-radius: 6px; padding: 6px; }
.gallery img { width: 100%; }
.gallery .pair { display: grid; grid-template-columns: 1fr 1fr; gap: 4px; }
.ok { color: var(--good); } .no { color: var(--bad); }
.note { color: var(--muted); font-style: italic; }
.warn { color: var(--bad); }
footer { color: var(--muted); font-size: 12px; text-align: center; padding: 8px 0 28px; }
"""


def esc(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def table(header: Sequence[str], rows: Iterable[Sequence], numeric: Iterable[int] = (),
          row_class: Sequence[str] | None = None, cls: str = "") -> str:
    """A table of already formatted cells; columns in `numeric` are right-aligned in tabular figures.
    `row_class` gives a CSS class per row ("best", "total", "")."""
    num = set(numeric)
    head = "".join(f'<th class="n">{esc(h)}</th>' if i in num else f"<th>{esc(h)}</th>" for i, h in enumerate(header))
    body = []
    for r, row in enumerate(rows):
        cells = "".join(f'<td class="n">{esc(v)}</td>' if i in num else f"<td>{esc(v)}</td>" for i, v in enumerate(row))
        rc = row_class[r] if row_class and r < len(row_class) and row_class[r] else ""
        body.append(f'<tr class="{rc}">{cells}</tr>' if rc else f"<tr>{cells}</tr>")
    return (f'<div class="scroll"><table class="{esc(cls)}"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def kv_table(pairs: Iterable[tuple[str, object]]) -> str:
    """Two columns, key and value: the config and the environment."""
    rows = "".join(f"<tr><td>{esc(k)}</td><td><code>{esc(v)}</code></td></tr>" for k, v in pairs)
    return f'<table class="kv"><tbody>{rows}</tbody></table>'


def kpis(items: Iterable[tuple[str, object]]) -> str:
    """The row of headline figures under the title."""
    cells = "".join(f'<div class="kpi"><div class="k">{esc(k)}</div><div class="v" title="{esc(v)}">{esc(v)}</div></div>'
                    for k, v in items)
    return f'<div class="kpis">{cells}</div>'


def img(uri: str, alt: str, pixelated: bool = False, width: int | None = None) -> str:
    style = f' style="width:{int(width)}px"' if width else ""
    cls = ' class="px"' if pixelated else ""
    return f'<img src="{esc(uri)}" alt="{esc(alt)}"{cls}{style}>'


def figure(uri: str, alt: str, caption: str = "", width: int | None = None, cls: str = "plot") -> str:
    cap = f"<figcaption>{caption}</figcaption>" if caption else ""
    return f'<figure class="{cls}">{img(uri, alt, width=width)}{cap}</figure>'


def note(text: str, warn: bool = False) -> str:
    return f'<p class="{"warn" if warn else "note"}">{esc(text)}</p>'


def section(sid: str, title: str, body: str) -> str:
    return f'<section id="{esc(sid)}"><h2>{esc(title)}</h2>{body}</section>'


def document(title: str, header: str, sections: Sequence[tuple[str, str, str]], footer: str) -> str:
    """The whole page: `sections` are (id, title, inner HTML); the navigation links to each."""
    nav = "".join(f'<a href="#{esc(sid)}">{esc(t)}</a>' for sid, t, _ in sections)
    body = "\n".join(section(sid, t, inner) for sid, t, inner in sections)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            f'<header class="top"><div class="wrap">{header}<nav>{nav}</nav></div></header>\n'
            f'<main class="wrap">\n{body}\n</main>\n<footer>{footer}</footer>\n</body>\n</html>\n')
