"""Small SVG charts rendered on the server: no chart library, no script, readable by screen readers
(each chart has a title and a description; every bar and point carries its value in a <title>)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from html import escape

from markupsafe import Markup

_W, _H = 640, 220
_LEFT, _RIGHT, _TOP, _BOTTOM = 44, 8, 12, 28
_ids = itertools.count(1)  # several charts on one page need distinct title/desc ids


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    magnitude = 10 ** (len(str(int(value))) - 1)
    for step in (1, 2, 2.5, 5, 10):
        top = step * magnitude
        if top >= value:
            return float(top)
    return float(value)


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 or value == int(value) else f"{value:.2f}"


def _frame(title: str, desc: str, body: list[str], top: float, labels: Sequence[str], unit: str) -> Markup:
    inner_h = _H - _TOP - _BOTTOM
    uid = next(_ids)
    parts = [
        f'<svg class="chart" viewBox="0 0 {_W} {_H}" role="img" aria-labelledby="c{uid}-t c{uid}-d" '
        f'xmlns="http://www.w3.org/2000/svg">',
        f'<title id="c{uid}-t">{escape(title)}</title><desc id="c{uid}-d">{escape(desc)}</desc>',
    ]
    for frac in (0, 0.5, 1):
        y = _TOP + inner_h * (1 - frac)
        parts.append(f'<line class="axis" x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{escape(_fmt(top * frac))}{unit}</text>')
    n = max(len(labels), 1)
    every = max(1, round(n / 6))
    slot = (_W - _LEFT - _RIGHT) / n
    for i, label in enumerate(labels):
        if i % every == 0 or i == n - 1:
            x = _LEFT + slot * (i + 0.5)
            parts.append(f'<text x="{x:.1f}" y="{_H - 8}" text-anchor="middle">{escape(label[5:] or label)}</text>')
    parts.extend(body)
    parts.append("</svg>")
    return Markup("".join(parts))


def bars(points: Sequence[tuple[str, float]], *, title: str, unit: str = "") -> Markup:
    """A column per day (or any label); the label's first 5 characters are dropped on the axis (YYYY-)."""
    points = [(str(label), float(v)) for label, v in points]
    values = [v for _, v in points]
    top = _nice_max(max(values, default=0))
    inner_h = _H - _TOP - _BOTTOM
    slot = (_W - _LEFT - _RIGHT) / max(len(points), 1)
    body = []
    for i, (label, value) in enumerate(points):
        h = inner_h * (value / top)
        x = _LEFT + slot * i + slot * 0.15
        body.append(
            f'<rect class="bar" x="{x:.1f}" y="{_TOP + inner_h - h:.1f}" width="{slot * 0.7:.1f}" height="{h:.1f}">'
            f"<title>{escape(label)}: {escape(_fmt(value))}{unit}</title></rect>"
        )
    total = sum(values)
    desc = (
        f"{len(points)} values from {points[0][0]} to {points[-1][0]}, {_fmt(total)}{unit} in all."
        if points
        else "No data."
    )
    return _frame(title, desc, body, top, [label for label, _ in points], unit)


def lines(
    labels: Sequence[str], series: Sequence[tuple[str, Sequence[float | None]]], *, title: str, unit: str = ""
) -> Markup:
    """Up to two series over the same labels; a None is a gap (no data that day)."""
    labels = [str(label) for label in labels]
    values = [v for _, vs in series for v in vs if v is not None]
    top = _nice_max(max(values, default=0))
    inner_h = _H - _TOP - _BOTTOM
    slot = (_W - _LEFT - _RIGHT) / max(len(labels), 1)
    body = []
    for k, (name, vs) in enumerate(series):
        cls = "line" if k == 0 else "line-2"
        path: list[str] = []
        for i, v in enumerate(vs):
            if v is None:
                continue
            x, y = _LEFT + slot * (i + 0.5), _TOP + inner_h * (1 - v / top)
            path.append(f"{'M' if not path else 'L'}{x:.1f},{y:.1f}")
            body.append(
                f'<circle class="{cls}" cx="{x:.1f}" cy="{y:.1f}" r="2.5">'
                f"<title>{escape(name)} {escape(labels[i])}: {escape(_fmt(v))}{unit}</title></circle>"
            )
        if path:
            body.insert(0, f'<path class="{cls}" d="{" ".join(path)}"/>')
    names = " and ".join(name for name, _ in series)
    desc = f"{names} per day, highest {_fmt(max(values))}{unit}." if values else "No data."
    return _frame(title, desc, body, top, labels, unit)
