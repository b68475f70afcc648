"""Charts as inline SVG, drawn here: no charting library, no CDN, nothing for the browser to fetch.

Pure functions of the numbers; labels are escaped. Colours come from the page's stylesheet
(classes), since the page's policy forbids inline style attributes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .page import esc

ROW = 18  # px per bar
LABEL = 170  # px for the labels on the left
WIDTH = 300  # px of the value axis


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def bars(title: str, labels: Sequence[str], series: Sequence[tuple[str, Sequence[float | None]]]) -> str:
    """Horizontal bars of rates in [0, 1]: one group per label, one bar per series (e.g. base, head)."""
    per = len(series)
    group = ROW * per + 6
    height = 24 + group * len(labels) + 20
    out = [
        f'<svg class="chart" role="img" width="{LABEL + WIDTH + 60}" height="{height}" '
        f'viewBox="0 0 {LABEL + WIDTH + 60} {height}"><title>{esc(title)}</title>',
        f'<text x="0" y="14">{esc(title)}</text>',
    ]
    for i, label in enumerate(labels):
        top = 24 + i * group
        out.append(f'<text x="{LABEL - 6}" y="{top + group / 2 + 3:.0f}" text-anchor="end">{esc(label[:28])}</text>')
        for j, (name, values) in enumerate(series):
            value = values[i]
            width = 0.0 if value is None else max(0.0, min(1.0, value)) * WIDTH
            y = top + j * ROW
            out.append(
                f'<rect class="s{j}" x="{LABEL}" y="{y}" width="{width:.1f}" height="{ROW - 3}">'
                f"<title>{esc(label)} {esc(name)}: {_fmt(value)}</title></rect>"
            )
            out.append(f'<text x="{LABEL + width + 4:.1f}" y="{y + ROW - 6}">{_fmt(value)}</text>')
    axis = 24 + group * len(labels)
    out.append(f'<line class="axis" x1="{LABEL}" y1="20" x2="{LABEL}" y2="{axis}"/>')
    if per > 1:
        for j, (name, _) in enumerate(series):
            x = LABEL + j * 110
            out.append(f'<rect class="s{j}" x="{x}" y="{axis + 5}" width="10" height="10"/>')
            out.append(f'<text x="{x + 14}" y="{axis + 14}">{esc(name)}</text>')
    out.append("</svg>")
    return "".join(out)


def bins(values: Sequence[float], count: int = 20) -> tuple[list[int], float, float]:
    """A histogram of `values`: the count per equal-width bin, and the range covered."""
    if not values:
        return [], 0.0, 0.0
    low, high = min(values), max(values)
    if high == low:
        return [len(values)], low, high
    counts = [0] * count
    step = (high - low) / count
    for value in values:
        counts[min(count - 1, math.floor((value - low) / step))] += 1
    return counts, low, high


def histogram(title: str, values: Sequence[float], unit: str = "ms", count: int = 20) -> str:
    """The distribution of `values` as vertical bars, with the range on the axis."""
    counts, low, high = bins(values, count)
    width, height, base = 420, 150, 120
    out = [
        f'<svg class="chart" role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
        f"<title>{esc(title)}</title>",
        f'<text x="0" y="14">{esc(title)}</text>',
    ]
    if counts:
        most = max(counts)
        bar = (width - 20) / len(counts)
        step = (high - low) / len(counts) if high > low else 0.0
        for i, n in enumerate(counts):
            h = (base - 24) * n / most
            start = low + i * step
            out.append(
                f'<rect class="hist" x="{10 + i * bar:.1f}" y="{base - h:.1f}" width="{bar - 1:.1f}" height="{h:.1f}">'
                f"<title>{start:.0f}–{start + step:.0f} {esc(unit)}: {n}</title></rect>"
            )
        out.append(f'<line class="axis" x1="10" y1="{base}" x2="{width - 10}" y2="{base}"/>')
        out.append(f'<text x="10" y="{base + 16}">{low:.0f} {esc(unit)}</text>')
        out.append(f'<text x="{width - 10}" y="{base + 16}" text-anchor="end">{high:.0f} {esc(unit)}</text>')
    else:
        out.append('<text x="10" y="60">no answered calls</text>')
    out.append("</svg>")
    return "".join(out)


def _mermaid_label(text: str) -> str:
    # Inside a fenced block of a PR comment: no quote, backtick or bracket may end the label early.
    return "".join(c if c.isalnum() or c in " _.:-/" else "_" for c in text)[:40]


def mermaid_bars(title: str, labels: Sequence[str], series: Sequence[tuple[str, Sequence[float | None]]]) -> str:
    """A Mermaid `xychart-beta` block (GitHub renders it in a comment, no hosting): one bar per
    series and label, rates in [0, 1]; a missing value draws as 0 (the table beside it says —)."""
    names = " then ".join(name for name, _ in series)
    lines = [
        "```mermaid",
        "xychart-beta",
        f'    title "{_mermaid_label(title)} ({_mermaid_label(names)})"',
        "    x-axis [" + ", ".join(f'"{_mermaid_label(label)}"' for label in labels) + "]",
        '    y-axis "pass rate" 0 --> 1',
    ]
    for _, values in series:
        lines.append("    bar [" + ", ".join(f"{0.0 if v is None else v:.4f}" for v in values) + "]")
    return "\n".join([*lines, "```"])
