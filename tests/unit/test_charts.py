"""The server-side SVG charts of the dashboard and admin pages: well-formed XML, one mark per value, labels
escaped, ids unique per chart, and sane output for no data."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from markupsafe import Markup

from studiolo.web import charts

SVG = "{http://www.w3.org/2000/svg}"
EVIL = '</title><script>alert(1)</script>&"'


def parse(markup: Markup) -> ET.Element:
    assert isinstance(markup, Markup)  # Jinja inserts it as is: escaping is the chart's job
    root = ET.fromstring(str(markup))  # raises on anything that is not well-formed XML
    assert root.tag == f"{SVG}svg"
    return root


def marks(root: ET.Element, tag: str) -> list[ET.Element]:
    return root.findall(f".//{SVG}{tag}")


def labelled_by(root: ET.Element) -> tuple[str, str]:
    title_id, desc_id = root.attrib["aria-labelledby"].split()
    assert root.find(f"{SVG}title").attrib["id"] == title_id  # type: ignore[union-attr]
    assert root.find(f"{SVG}desc").attrib["id"] == desc_id  # type: ignore[union-attr]
    return title_id, desc_id


def test_bars_one_column_per_point_scaled_within_the_frame() -> None:
    points = [(f"2024-05-{d:02d}", float(v)) for d, v in zip(range(1, 31), [0, 3, 7, 12, 1, 0] * 5, strict=True)]
    root = parse(charts.bars(points, title="Images per day"))
    bars = [r for r in marks(root, "rect") if r.attrib["class"] == "bar"]
    assert len(bars) == len(points)
    assert [b.find(f"{SVG}title").text for b in bars[:4]] == [  # type: ignore[union-attr]
        "2024-05-01: 0",
        "2024-05-02: 3",
        "2024-05-03: 7",
        "2024-05-04: 12",
    ]
    _, _, width, height = (float(v) for v in root.attrib["viewBox"].split())
    for bar in bars:
        x, y, w, h = (float(bar.attrib[k]) for k in ("x", "y", "width", "height"))
        assert x >= 0 and x + w <= width and y >= 0 and y + h <= height and h >= 0
    tallest = max(bars, key=lambda b: float(b.attrib["height"]))
    assert tallest.find(f"{SVG}title").text == "2024-05-04: 12"  # type: ignore[union-attr]
    # Bottoms line up on the axis: the heights are proportional to the values.
    assert len({round(float(b.attrib["y"]) + float(b.attrib["height"]), 1) for b in bars}) == 1
    desc = root.find(f"{SVG}desc").text  # type: ignore[union-attr]
    assert desc == "30 values from 2024-05-01 to 2024-05-30, 115 in all."


def test_lines_one_point_per_value_and_gaps_for_none() -> None:
    labels = ["2024-05-01", "2024-05-02", "2024-05-03", "2024-05-04"]
    series = [("p50", [1.5, None, 2.0, 0.25]), ("p95", [4.0, None, None, 9.0])]
    root = parse(charts.lines(labels, series, title="Job duration", unit=" s"))
    circles = marks(root, "circle")
    assert [c.attrib["class"] for c in circles] == ["line"] * 3 + ["line-2"] * 2
    assert [c.find(f"{SVG}title").text for c in circles] == [  # type: ignore[union-attr]
        "p50 2024-05-01: 1.50 s",
        "p50 2024-05-03: 2 s",
        "p50 2024-05-04: 0.25 s",
        "p95 2024-05-01: 4 s",
        "p95 2024-05-04: 9 s",
    ]
    paths = marks(root, "path")
    assert [p.attrib["d"].count("L") + 1 for p in paths] == [2, 3]  # one polyline per series, over its points
    assert root.find(f"{SVG}desc").text == "p50 and p95 per day, highest 9 s."  # type: ignore[union-attr]


def test_labels_series_names_and_titles_are_escaped() -> None:
    # Units are constants in the templates (" s", "%"); labels, titles and series names may carry data.
    bars = charts.bars([(f"2024-{EVIL}", 1), (EVIL, 2)], title=EVIL, unit="%")
    lines = charts.lines([f"2024-{EVIL}"], [(EVIL, [1.0])], title=EVIL, unit=" s")
    for chart in (bars, lines):
        assert "<script>" not in chart and "</title><script>" not in chart
        root = parse(chart)
        assert root.find(f"{SVG}title").text == EVIL  # type: ignore[union-attr]
        texts = ["".join(e.itertext()) for e in root.iter()]
        assert any(EVIL in t for t in texts[1:])  # the label round-trips as text
        assert not root.findall(f".//{SVG}script")


def test_two_charts_on_one_page_have_distinct_ids() -> None:
    first = parse(charts.bars([("2024-05-01", 1)], title="A"))
    second = parse(charts.lines(["2024-05-01"], [("p50", [1.0])], title="B"))
    third = parse(charts.bars([("2024-05-01", 1)], title="A"))
    ids = [labelled_by(root) for root in (first, second, third)]
    flat = [i for pair in ids for i in pair]
    assert len(set(flat)) == len(flat)


def test_empty_and_zero_input() -> None:
    for chart in (
        charts.bars([], title="Nothing"),
        charts.lines([], [], title="Nothing"),
        charts.lines(["2024-05-01"], [("p50", [None])], title="Nothing"),
    ):
        root = parse(chart)
        assert root.find(f"{SVG}desc").text == "No data."  # type: ignore[union-attr]
        assert not marks(root, "rect") and not marks(root, "circle") and not marks(root, "path")
        labelled_by(root)
    zeros = parse(charts.bars([("2024-05-01", 0), ("2024-05-02", 0)], title="Zeros"))
    assert [float(r.attrib["height"]) for r in marks(zeros, "rect")] == [0.0, 0.0]  # no division by zero
    small = parse(charts.bars([("2024-05-01", 0.4)], title="Under one", unit="%"))
    (bar,) = marks(small, "rect")
    assert float(bar.attrib["height"]) > 0 and bar.find(f"{SVG}title").text == "2024-05-01: 0.40%"  # type: ignore[union-attr]
