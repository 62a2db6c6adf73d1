"""scripts/benchmark's charts: the writer's latency over time, one panel per way
of migrating, on a shared log-scale latency axis, with each migration's apply
window shaded; a series per kind of statement (inserts, response updates, lone
commits), lines for what else is a time (a standby's replay lag), with their
bounds dashed, and strips along the bottom for when the server was doing
something (the checkpointer's phases). Drawn with matplotlib's Agg renderer,
which needs no screen; matplotlib comes with requirements-dev.txt (or the
project's extra "benchmark"), not with what an operator installs."""

from __future__ import annotations

import io
from dataclasses import dataclass, field

from ..errors import OperatorError

DPI = 100
WINDOW_GREY = "0.88"
FAILED_RED = "#c81e1e"
LOWEST_MS = 0.01  # a log axis shows no zero: faster statements are drawn here
# Each kind of statement in a color of its own (red is for failures).
SERIES_COLORS = {"inserts": (20, 90, 200), "response updates": (230, 140, 0), "lone commits": (130, 60, 170)}
OTHER_COLOR = (90, 90, 90)
LINE_COLOR = (30, 150, 70)  # a line (the standby's lag), apart from the statements' colors
# A strip's color and band (0: the lowest) by its label; strips in one band are drawn each over the one before.
STRIPS = {"checkpointer at work": ((190, 160, 110), 0), "checkpointer fsyncing": ((0, 0, 0), 0),
          "standby's checkpointer fsyncing": ((0, 150, 160), 1)}
STRIP_HEIGHT = 0.04  # of the panel's height, a band


@dataclass
class Panel:
    title: str
    series: dict = field(default_factory=dict)   # label -> [(seconds, latency ms, ok)]
    windows: list = field(default_factory=list)  # (start s, end s, label)
    lines: dict = field(default_factory=dict)    # label -> [(seconds, ms)], drawn joined
    bounds: list = field(default_factory=list)   # (ms, label): a horizontal dashed line
    strips: dict = field(default_factory=dict)   # label -> [(start s, end s)], marked along the bottom

    def add(self, label: str, points) -> None:
        self.series.setdefault(label, []).extend(points)


def require_matplotlib():
    """matplotlib's Figure, or one line saying how to install it."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401 (Agg: no screen needed)
        from matplotlib.figure import Figure
    except ImportError:
        raise OperatorError("the benchmark's chart needs matplotlib: pip install -r requirements-dev.txt "
                            "(or pip install -e '.[benchmark]'), from the project root") from None
    return Figure


def latency_chart(panels: list[Panel], width: int = 1200, panel_height: int = 300) -> bytes:
    """A PNG of width x (panel_height per panel) pixels, one panel per run."""
    Figure = require_matplotlib()
    # A Figure of its own rather than pyplot: no global state, and its canvas is Agg.
    figure = Figure(figsize=(width / DPI, len(panels) * panel_height / DPI), dpi=DPI, layout="constrained")
    axes = figure.subplots(len(panels), 1, squeeze=False, sharey=True)[:, 0]
    for ax, panel in zip(axes, panels):
        for n, (start, end, label) in enumerate(panel.windows):
            ax.axvspan(start, end, color=WINDOW_GREY, zorder=0, label="apply window" if n == 0 else None)
            ax.annotate(label, (start, 1), xycoords=("data", "axes fraction"), xytext=(3, -3),
                        textcoords="offset points", va="top", fontsize=9, color="0.35")
        failed = []
        for label, points in panel.series.items():
            color = tuple(c / 255 for c in SERIES_COLORS.get(label, OTHER_COLOR))
            done = [(t, max(ms, LOWEST_MS)) for t, ms, ok in points if ok]
            failed += [t for t, _, ok in points if not ok]
            if done:
                # above the lines: a standby's lag sampled every 100 ms would hide them
                ax.scatter(*zip(*done), s=4, color=color, linewidths=0, label=label, zorder=3)
        for label, points in panel.lines.items():
            if points:
                ax.plot(*zip(*[(t, max(ms, LOWEST_MS)) for t, ms in points]), linewidth=1.2,
                        color=tuple(c / 255 for c in LINE_COLOR), label=label)
        for ms, label in panel.bounds:
            ax.axhline(ms, linestyle="--", linewidth=1, color=tuple(c / 255 for c in LINE_COLOR), label=label)
        for label, spans in panel.strips.items():
            color, band = STRIPS.get(label, (OTHER_COLOR, 0))
            if spans:
                ax.broken_barh([(a, b - a) for a, b in spans], (band * STRIP_HEIGHT, STRIP_HEIGHT),
                               transform=ax.get_xaxis_transform(), color=tuple(c / 255 for c in color), label=label,
                               zorder=2)
        if failed:  # a failed statement has no latency: marked along the top
            ax.scatter(failed, [0.97] * len(failed), transform=ax.get_xaxis_transform(), marker="x",
                       s=20, color=FAILED_RED, label="failed")
        ax.set_yscale("log")
        ax.set_title(panel.title, loc="left", fontsize=11)
        ax.set_xlabel("seconds since the writer's first statement")
        ax.set_ylabel("latency, lag (ms)" if panel.lines else "latency (ms)")
        ax.set_xlim(left=0)
        ax.grid(True, which="major", color="0.9", linewidth=0.6)
        ax.legend(loc="upper right", fontsize=8, markerscale=2)
    png = io.BytesIO()
    figure.savefig(png, format="png", dpi=DPI)
    return png.getvalue()
