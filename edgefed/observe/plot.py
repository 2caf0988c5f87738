"""`edgefed history --plot`: accuracy, loss, participants and round time per round, drawn headless."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

FIGURE_INCHES = (10.0, 7.0)
DPI = 100  # 1000 x 700 pixels


def plot_history(records: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Four panels sharing the round axis, written as a PNG; matplotlib only when asked for."""
    import matplotlib

    matplotlib.use("Agg")  # no display on a chief or in CI
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    rounds = [r["round"] for r in records]
    panels: tuple[tuple[str, list[Any]], ...] = (
        ("accuracy", [r.get("accuracy") for r in records]),
        ("loss", [r.get("loss") for r in records]),
        ("participants", [len(r["participants"]) for r in records]),
        ("round time (s)", [r["seconds"]["round"] for r in records]),
    )
    figure, axes = plt.subplots(2, 2, figsize=FIGURE_INCHES, dpi=DPI, sharex=True)
    try:
        for axis, (title, values) in zip(axes.flat, panels, strict=True):
            points = [(x, y) for x, y in zip(rounds, values, strict=True) if y is not None]
            if points:
                xs, ys = zip(*points, strict=True)
                axis.plot(xs, ys, marker="o", markersize=3)
            axis.set_title(title)
            axis.xaxis.set_major_locator(MaxNLocator(integer=True))  # rounds are whole numbers
            if title == "participants":
                axis.yaxis.set_major_locator(MaxNLocator(integer=True))
            axis.grid(True, alpha=0.3)
        for axis in axes[1]:
            axis.set_xlabel("round")
        figure.suptitle(f"edgefed training history ({len(records)} rounds)")
        figure.tight_layout()
        out = Path(path)
        figure.savefig(out, format="png")
        return out
    finally:
        plt.close(figure)
