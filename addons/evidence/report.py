"""The pack's ``report.html``: one self-contained page (inline CSS and SVG, no script, no external URL)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup, escape

from addons.evidence.controls import CONTROLS_2013, CONTROLS_2022
from addons.evidence.summary import Summary

TEMPLATE = Path(__file__).with_name("report.html.j2")
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#7f7f7f")
WIDTH, HEIGHT, PAD = 760, 220, 40


def _when(value: Any) -> str:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S") + " UTC"
    return "" if value is None else str(value)


def _step(step: timedelta) -> str:
    minutes = int(step.total_seconds() // 60)
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h" if minutes < 24 * 60 else f"{minutes // (24 * 60)} d"


def line_chart(chart: dict[str, Any], title: str) -> Markup:
    """An inline SVG: one line per series over the buckets, a legend, and the axis bounds."""
    buckets, series = chart["buckets"], chart["series"]
    top = max((max(counts) for counts in series.values()), default=0) or 1
    n = max(len(buckets) - 1, 1)

    def x(i: int) -> float:
        return PAD + i * (WIDTH - 2 * PAD) / n

    def y(v: int) -> float:
        return HEIGHT - PAD - v * (HEIGHT - 2 * PAD) / top

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT + 20 * len(series)}" '
             f'role="img" aria-label="{escape(title)}">',
             f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" stroke="#999"/>',
             f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{HEIGHT - PAD}" stroke="#999"/>',
             f'<text x="{PAD - 6}" y="{PAD + 4}" text-anchor="end" font-size="11">{top}</text>',
             f'<text x="{PAD - 6}" y="{HEIGHT - PAD + 4}" text-anchor="end" font-size="11">0</text>',
             f'<text x="{PAD}" y="{HEIGHT - PAD + 16}" font-size="11">{escape(_when(buckets[0]))}</text>',
             f'<text x="{WIDTH - PAD}" y="{HEIGHT - PAD + 16}" text-anchor="end" font-size="11">'
             f'{escape(_when(buckets[-1]))} (step {_step(chart["step"])})</text>']
    for index, (name, counts) in enumerate(series.items()):
        colour = COLOURS[index % len(COLOURS)]
        points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(counts))
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}"/>')
        if len(counts) == 1:
            parts.append(f'<circle cx="{x(0):.1f}" cy="{y(counts[0]):.1f}" r="3" fill="{colour}"/>')
        legend_y = HEIGHT + 20 * index
        parts.append(f'<rect x="{PAD}" y="{legend_y - 9}" width="10" height="10" fill="{colour}"/>'
                     f'<text x="{PAD + 16}" y="{legend_y}" font-size="12">{escape(name)}: {sum(counts)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def bar_chart(rows: list[tuple[str, int]], title: str) -> Markup:
    """An inline SVG of horizontal bars, one per (label, count)."""
    if not rows:
        return Markup("")
    top = max(count for _, count in rows) or 1
    height = 22 * len(rows) + 10
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" role="img" '
             f'aria-label="{escape(title)}">']
    for i, (label, count) in enumerate(rows):
        width = (WIDTH - 260) * count / top
        parts.append(f'<text x="170" y="{22 * i + 18}" text-anchor="end" font-size="12">{escape(label)}</text>'
                     f'<rect x="180" y="{22 * i + 6}" width="{width:.1f}" height="15" fill="{COLOURS[0]}"/>'
                     f'<text x="{186 + width:.1f}" y="{22 * i + 18}" font-size="12">{count}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def render(summary: Summary, *, filters: dict[str, Any], verification: dict[str, Any], covering: list[dict],
           fingerprint: str, files: list[str], generated: datetime, where: str) -> str:
    environment = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined,
                                     loader=jinja2.FileSystemLoader(TEMPLATE.parent))
    environment.filters["when"] = _when
    environment.filters["listed"] = lambda v: ", ".join(str(x) for x in v) if v else ""
    charts = {name: line_chart(chart, f"requests per {name}") for name, chart in summary.over_time.items()}
    entity_rows = [(kind, (req or 0) + (resp or 0)) for kind, req, resp in summary.entities]
    return environment.get_template(TEMPLATE.name).render(
        s=summary, filters=filters, verification=verification, covering=covering, fingerprint=fingerprint,
        files=files, generated=generated, where=where, charts=charts,
        entity_chart=bar_chart(entity_rows, "masked entities by type"),
        controls_2022=CONTROLS_2022, controls_2013=CONTROLS_2013,
    )
