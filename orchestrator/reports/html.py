"""One self-contained HTML page: the report's tables and its PNG plots embedded as base64."""

from __future__ import annotations

import base64
import html
import os
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

_STYLE = """
body { font-family: -apple-system, Segoe UI, Helvetica, Arial, sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.5em 0 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 4px 10px; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; }
figcaption { font-size: 0.85em; color: #555; text-align: center; }
img { max-width: 640px; border: 1px solid #eee; }
.meta { color: #666; font-size: 0.85em; }
"""


def image_tag(path: str | os.PathLike, alt: str) -> str:
    """An <img> whose source is the PNG's bytes as a data URI (the page needs no other file)."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def render_report(title: str, tables: dict[str, pd.DataFrame], figures: list[tuple[str, str | os.PathLike]],
                  out_path: str | os.PathLike, notes: list[str] = ()) -> Path:
    """Write the page: a heading per table (string frames), then the figures with captions."""
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{_STYLE}</style></head><body>", f"<h1>{html.escape(title)}</h1>",
             f"<p class='meta'>generated {datetime.now(timezone.utc).isoformat(timespec='seconds')} by s4op report</p>"]
    for note in notes:
        parts.append(f"<p class='meta'>{html.escape(note)}</p>")
    for heading, frame in tables.items():
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        parts.append(frame.to_html(index=False, escape=True, border=0))
    if figures:
        parts.append("<h2>Plots</h2>")
    for caption, path in figures:
        parts.append(f"<figure>{image_tag(path, caption)}<figcaption>{html.escape(caption)}</figcaption></figure>")
    parts.append("</body></html>")
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(parts), encoding="utf-8")
    return out
