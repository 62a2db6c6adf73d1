"""The text report's pieces that every part uses, the targets' lines, and
the charts' file names."""

from __future__ import annotations

from .plot import Panel, latency_chart  # noqa: F401 (the parts build their panels from here)


def target(wanted: str, value, met: bool | None, **details) -> dict:
    """A target and how the run did: met, missed, or None when nothing was measured."""
    return {"target": wanted, "value": value, "met": met, **details}


def target_lines(targets: list[dict]) -> list[str]:
    verdict = {True: "met    ", False: "MISSED ", None: "n/a    "}
    return [f"  {verdict[t['met']]} {t['target']}: {t['value']}" for t in targets]


LABEL = 42  # the longest migration id


def _ms(value, width: int) -> str:
    return format(value, f">{width}.1f") if value is not None else format("-", f">{width}")


def latency_header(first: str, kinds: tuple[str, ...]) -> str:
    columns = "".join(f" {kind + ' p50':>12} {'p99':>8} {'max ms':>9} {'n':>6} {'failed':>6}" for kind in kinds)
    return f"{first:<{LABEL}} {'way':<9} {'apply s':>8}{columns}"


def latency_row(label: str, way: str, seconds: float, stats: tuple[dict, ...]) -> str:
    columns = "".join(f" {_ms(s['p50_ms'], 12)} {_ms(s['p99_ms'], 8)} {_ms(s['max_ms'], 9)} {s['count']:>6} "
                      f"{s['failed']:>6}" for s in stats)
    return f"{label:<{LABEL}} {way:<9} {seconds:>8.2f}{columns}"


def size(n: float | None) -> str:
    """Bytes as pg_size_pretty() writes them (10,240 kB and up in MB, and so on)."""
    if n is None:
        return "-"
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if abs(n) < 10 * 1024 or unit == "TB":
            return f"{n:,.0f} {unit}"
        n /= 1024
