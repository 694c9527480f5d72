"""Server-rendered SVG charts: no JavaScript, no inline styles (the CSP forbids both), hover titles for values.

Every chart is an `<svg class="chart" data-chart=NAME data-points=N>` with a `<title>`; text is escaped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from markupsafe import Markup, escape

from bot.web.stats import LatencyRow, UsageRow

PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7", "#9c755f")
OTHER_COLOR = "#8c8c8c"
PERCENTILE_COLORS = {"p50": "#4e79a7", "p90": "#f28e2b", "p99": "#e15759"}
WIDTH = 1000
HALF_WIDTH = 520
HEIGHT = 240
LEFT = 48
RIGHT = 12
TOP = 12
BOTTOM = 30


def route_colors(routes: Sequence[str]) -> dict[str, str]:
    return {route: PALETTE[index % len(PALETTE)] for index, route in enumerate(routes)}


def _fmt(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _nice_max(value: float) -> float:
    """A round axis maximum at or above `value` (1, 2, 2.5, 5 times a power of ten)."""
    if value <= 0:
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    for step in (1.0, 2.0, 2.5, 5.0, 10.0):
        if value <= step * power:
            return step * power
    return 10.0 * power


def _svg(name: str, title: str, points: int, body: list[str], *, height: int = HEIGHT, width: int = WIDTH) -> Markup:
    head = (f'<svg class="chart" data-chart="{escape(name)}" data-points="{points}" role="img" '
            f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg" aria-label="{escape(title)}">'
            f"<title>{escape(title)}</title>")
    return Markup(head + "".join(body) + "</svg>")


def _empty(name: str, title: str, message: str = "no data in this window", *, width: int = WIDTH) -> Markup:
    return _svg(name, title, 0, [
        f'<text class="empty" x="{width / 2}" y="{HEIGHT / 2}" text-anchor="middle">{escape(message)}</text>'
    ], width=width)


def _y_axis(maximum: float, plot_bottom: float, plot_height: float, unit: str = "", *, width: int = WIDTH) -> list[str]:
    parts = []
    for fraction in (0.0, 0.5, 1.0):
        y = plot_bottom - plot_height * fraction
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{width - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text class="tick" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
                     f"{escape(_fmt(maximum * fraction))}{escape(unit)}</text>")
    return parts


def _x_labels(labels: Sequence[str], slot: float) -> list[str]:
    every = max(1, math.ceil(len(labels) / 12))
    parts = []
    for index, label in enumerate(labels):
        if index % every == 0:
            x = LEFT + slot * (index + 0.5)
            parts.append(f'<text class="tick" x="{x:.1f}" y="{HEIGHT - 10}" text-anchor="middle">'
                         f"{escape(label)}</text>")
    return parts


def stacked_bars(name: str, title: str, labels: Sequence[str], series: Mapping[str, Sequence[int]],
                 colors: Mapping[str, str]) -> Markup:
    """Counts per bucket, one colour per series (messages per route over time)."""
    totals = [sum(values[i] for values in series.values()) for i in range(len(labels))]
    if not any(totals):
        return _empty(name, title)
    maximum = _nice_max(max(totals))
    plot_height = HEIGHT - TOP - BOTTOM
    bottom = HEIGHT - BOTTOM
    slot = (WIDTH - LEFT - RIGHT) / len(labels)
    width = max(1.0, slot * 0.8)
    body = _y_axis(maximum, bottom, plot_height)
    for index, label in enumerate(labels):
        y = float(bottom)
        x = LEFT + slot * index + (slot - width) / 2
        for route, values in series.items():
            count = values[index]
            if not count:
                continue
            height = plot_height * count / maximum
            y -= height
            body.append(
                f'<rect class="bar" data-series="{escape(route)}" x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" '
                f'height="{height:.1f}" fill="{escape(colors.get(route, OTHER_COLOR))}">'
                f"<title>{escape(label)} · {escape(route)}: {count}</title></rect>")
    body += _x_labels(labels, slot)
    return _svg(name, title, sum(totals), body)


def rate_bars(name: str, title: str, labels: Sequence[str], pairs: Sequence[tuple[int, int]]) -> Markup:
    """Share of escalated messages per bucket (0-100%), with the counts on hover."""
    if not any(total for total, _ in pairs):
        return _empty(name, title)
    rates = [escalated / total if total else 0.0 for total, escalated in pairs]
    maximum = max(0.1, _nice_max(max(rates) * 100) / 100) if max(rates) > 0 else 1.0
    plot_height = HEIGHT - TOP - BOTTOM
    bottom = HEIGHT - BOTTOM
    slot = (WIDTH - LEFT - RIGHT) / len(labels)
    width = max(1.0, slot * 0.8)
    body = _y_axis(maximum * 100, bottom, plot_height, "%")
    for index, ((total, escalated), rate) in enumerate(zip(pairs, rates, strict=True)):
        if not total:
            continue
        height = max(1.0, plot_height * rate / maximum) if escalated else 1.0
        x = LEFT + slot * index + (slot - width) / 2
        body.append(
            f'<rect class="bar rate" x="{x:.1f}" y="{bottom - height:.1f}" width="{width:.1f}" height="{height:.1f}">'
            f"<title>{escape(labels[index])}: {escalated} of {total} escalated ({rate:.0%})</title></rect>")
    body += _x_labels(labels, slot)
    return _svg(name, title, sum(total for total, _ in pairs), body)


def histogram(name: str, title: str, bins: Sequence[tuple[str, int]]) -> Markup:
    """Counts per labelled bin (vote agreement distribution)."""
    total = sum(count for _, count in bins)
    if not total:
        return _empty(name, title, "no voted replies in this window", width=HALF_WIDTH)
    # Headroom for the count printed above the tallest bar.
    maximum = _nice_max(max(count for _, count in bins) * 1.1)
    plot_height = HEIGHT - TOP - BOTTOM
    bottom = HEIGHT - BOTTOM
    slot = (HALF_WIDTH - LEFT - RIGHT) / len(bins)
    width = slot * 0.7
    body = _y_axis(maximum, bottom, plot_height, width=HALF_WIDTH)
    for index, (label, count) in enumerate(bins):
        height = plot_height * count / maximum
        x = LEFT + slot * index + (slot - width) / 2
        body.append(f'<rect class="bar agreement" x="{x:.1f}" y="{bottom - height:.1f}" width="{width:.1f}" '
                    f'height="{height:.1f}"><title>{escape(label)} agreement: {count}</title></rect>')
        if count:
            body.append(f'<text class="value" x="{x + width / 2:.1f}" y="{bottom - height - 4:.1f}" '
                        f'text-anchor="middle">{count}</text>')
    body += _x_labels([label for label, _ in bins], slot)
    return _svg(name, title, total, body, width=HALF_WIDTH)


def _hbar_layout(rows: int, per_row: int) -> tuple[int, float]:
    row_height = 14 * per_row + 12
    return TOP + rows * row_height + 24, row_height


def latency_bars(name: str, title: str, rows: Sequence[LatencyRow]) -> Markup:
    """p50/p90/p99 per route as grouped horizontal bars, in milliseconds."""
    if not rows:
        return _empty(name, title, width=HALF_WIDTH)
    height, row_height = _hbar_layout(len(rows), 3)
    label_width = 80
    maximum = _nice_max(max(row.p99 for row in rows))
    plot_width = HALF_WIDTH - label_width - RIGHT - 90
    body = []
    for index, row in enumerate(rows):
        top = TOP + index * row_height
        body.append(f'<text class="label" x="{label_width - 8}" y="{top + 24:.1f}" text-anchor="end">'
                    f"{escape(row.label)}</text>")
        for offset, (key, value) in enumerate((("p50", row.p50), ("p90", row.p90), ("p99", row.p99))):
            y = top + offset * 14
            width = max(1.0, plot_width * value / maximum)
            body.append(f'<rect class="bar" data-series="{key}" x="{label_width}" y="{y:.1f}" width="{width:.1f}" '
                        f'height="11" fill="{PERCENTILE_COLORS[key]}"><title>{escape(row.label)} {key}: '
                        f"{_fmt(value)} ms ({row.count} messages)</title></rect>")
            body.append(f'<text class="value" x="{label_width + width + 4:.1f}" y="{y + 9:.1f}">'
                        f"{key} {escape(_duration(value))}</text>")
    return _svg(name, title, sum(row.count for row in rows if row.label != "all"), body, height=int(height),
                width=HALF_WIDTH)


def cost_bars(name: str, title: str, rows: Sequence[UsageRow], colors: Mapping[str, str]) -> Markup:
    """Estimated cost per route as horizontal bars, tokens on hover; token counts when nothing is priced."""
    if not rows:
        return _empty(name, title, "no LLM calls in this window")
    height, row_height = _hbar_layout(len(rows), 1)
    label_width = 110
    by_cost = any(row.cost_usd for row in rows)
    values = [(row.cost_usd or 0.0) if by_cost else float(row.tokens) for row in rows]
    maximum = max(values) or 1.0
    plot_width = WIDTH - label_width - RIGHT - 200
    body = []
    for index, (row, value) in enumerate(zip(rows, values, strict=True)):
        top = TOP + index * row_height
        width = max(1.0, plot_width * value / maximum)
        cost = "price unknown" if row.cost_usd is None else f"${row.cost_usd:,.4f}"
        body.append(f'<text class="label" x="{label_width - 8}" y="{top + 10:.1f}" text-anchor="end">'
                    f"{escape(row.route)}</text>")
        body.append(f'<rect class="bar" data-series="{escape(row.route)}" x="{label_width}" y="{top:.1f}" '
                    f'width="{width:.1f}" height="12" fill="{escape(colors.get(row.route, OTHER_COLOR))}">'
                    f"<title>{escape(row.route)}: {row.calls} calls, {row.tokens:,} tokens, {cost}</title></rect>")
        body.append(f'<text class="value" x="{label_width + width + 4:.1f}" y="{top + 10:.1f}">'
                    f"{escape(cost)} · {row.tokens:,} tok</text>")
    return _svg(name, title, sum(row.calls for row in rows), body, height=int(height))


def score_bars(scores: Mapping[str, float], chosen: str, colors: Mapping[str, str]) -> Markup:
    """A decision's per-route scores, best first, the chosen route highlighted."""
    ranked = sorted(scores.items(), key=lambda item: -float(item[1]))
    if not ranked:
        return Markup("")
    row_height = 16
    height = len(ranked) * row_height + 4
    width = 360
    label_width = 90
    body = [f'<svg class="scores" data-chart="scores" data-points="{len(ranked)}" viewBox="0 0 {width} {height}" '
            f'xmlns="http://www.w3.org/2000/svg" role="img" aria-label="route scores"><title>route scores</title>']
    for index, (route, score) in enumerate(ranked):
        y = 2 + index * row_height
        bar = max(1.0, (width - label_width - 50) * float(score))
        css = "label chosen" if route == chosen else "label"
        body.append(f'<text class="{css}" x="{label_width - 6}" y="{y + 11}" text-anchor="end">{escape(route)}</text>')
        body.append(f'<rect x="{label_width}" y="{y}" width="{bar:.1f}" height="12" '
                    f'fill="{escape(colors.get(route, OTHER_COLOR))}"><title>{escape(route)}: {float(score):.3f}'
                    f"</title></rect>")
        body.append(f'<text class="value" x="{label_width + bar + 4:.1f}" y="{y + 11}">{float(score):.2f}</text>')
    body.append("</svg>")
    return Markup("".join(body))


def _duration(ms: float) -> str:
    return f"{ms:.0f} ms" if ms < 1000 else f"{ms / 1000:.2f} s"
