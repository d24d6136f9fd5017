"""The overview's history chart as inline SVG, drawn on the server (no script, no CDN)."""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

WIDTH, HEIGHT = 760, 200
PAD_LEFT, PAD_BOTTOM, PAD_TOP = 48, 28, 12


def _nice_max(value: int) -> int:
    """The smallest 1/2/5 x 10^n at or above ``value`` (at least 1)."""
    if value <= 1:
        return 1
    scale = 1
    while True:
        for step in (1, 2, 5):
            if step * scale >= value:
                return step * scale
        scale *= 10


def history_svg(days: Sequence[str], processed: Sequence[int], failed: Sequence[int]) -> Markup:
    """Processed and failed per day as two polylines with a y axis and date labels.

    >>> "polyline" in history_svg(["2024-05-01", "2024-05-02"], [3, 5], [0, 1])
    True
    """
    top = _nice_max(max([*processed, *failed, 0]))
    plot_w, plot_h = WIDTH - PAD_LEFT - 8, HEIGHT - PAD_BOTTOM - PAD_TOP
    count = max(1, len(days) - 1)

    def point(i: int, value: int) -> str:
        x = PAD_LEFT + plot_w * i / count
        y = PAD_TOP + plot_h * (1 - value / top)
        return f"{x:.1f},{y:.1f}"

    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="processed and failed jobs per day">'
    ]
    for fraction in (0.0, 0.5, 1.0):
        y = PAD_TOP + plot_h * (1 - fraction)
        parts.append(
            f'<line class="grid" x1="{PAD_LEFT}" y1="{y:.1f}" x2="{WIDTH - 8}" y2="{y:.1f}"/>'
            f'<text class="axis" x="{PAD_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{int(top * fraction)}</text>"
        )
    step = max(1, len(days) // 8)
    for i, day in enumerate(days):
        if i % step == 0 or i == len(days) - 1:
            x = PAD_LEFT + plot_w * i / count
            anchor = "end" if i == len(days) - 1 and i else "middle"
            parts.append(
                f'<text class="axis" x="{x:.1f}" y="{HEIGHT - 8}" text-anchor="{anchor}">'
                f"{escape(day[5:])}</text>"
            )
    for series, values in (("processed", processed), ("failed", failed)):
        points = " ".join(point(i, v) for i, v in enumerate(values))
        parts.append(f'<polyline class="{series}" points="{points}"><title>{series}</title>')
        parts.append("</polyline>")
        for i, v in enumerate(values):
            cx, cy = point(i, v).split(",")
            parts.append(
                f'<circle class="{series}" cx="{cx}" cy="{cy}" r="2.5">'
                f"<title>{escape(days[i])}: {v} {series}</title></circle>"
            )
    parts.append("</svg>")
    return Markup("".join(parts))
