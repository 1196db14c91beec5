"""Matplotlib helpers shared by the notebooks: curves over training with phase boundaries, annotated
heatmaps, and language shares on a log scale. Each draws on a given Axes and returns it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.typing import ColorType

from mmbert.analysis.discovery import order_key

MAX_ANNOTATED = 300
SHARE_STYLES = {"natural": ("o", ":"), "target": ("s", "-"), "realised": ("x", "--")}


def run_colors(names: Iterable[str]) -> dict[str, ColorType]:
    """A colour per run, checkpoint or language, assigned in recipe (else alphabetical) order; tab20 beyond
    10 names so that up to 20 stay distinct."""
    ordered = sorted(set(names), key=order_key)
    cmap = plt.get_cmap("tab10" if len(ordered) <= 10 else "tab20")
    return {name: cmap(i % cmap.N) for i, name in enumerate(ordered)}


def mark_phases(ax: Axes, starts: Mapping[str, float]) -> Axes:
    """Dashed vertical line and label where each phase starts."""
    for phase, x in starts.items():
        ax.axvline(x, color="grey", linestyle="--", linewidth=1)
        ax.annotate(
            phase,
            xy=(x, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(3, -3),
            textcoords="offset points",
            va="top",
            fontsize=8,
            color="grey",
        )
    return ax


def plot_curves(
    ax: Axes,
    table: pd.DataFrame,
    x: str = "cum_tokens",
    y: str = "value",
    hue: str = "run",
    starts: Mapping[str, float] | None = None,
    logy: bool = False,
    title: str | None = None,
    colors: Mapping[str, ColorType] | None = None,
    xlabel: str | None = None,
) -> Axes:
    """One line per ``hue`` value, in recipe order, optional phase boundaries. Pass ``colors`` (e.g.
    ``run_colors`` of every value across figures) to keep a value's colour the same on several Axes."""
    present = sorted(table[hue].unique(), key=order_key)
    colors = colors or run_colors(present)
    for name in present:
        rows = table[table[hue] == name].sort_values(x)
        ax.plot(rows[x], rows[y], label=name, color=colors[name], linewidth=1.2)
    if starts:
        mark_phases(ax, starts)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel or x)
    if title:
        ax.set_title(title)
    if present:
        ax.legend(fontsize=8)
    return ax


def plot_heatmap(
    ax: Axes,
    matrix: pd.DataFrame,
    fmt: str = ".2f",
    cmap: str = "viridis",
    highlight: Sequence[str] = (),
    vmin: float | None = None,
    vmax: float | None = None,
    title: str | None = None,
    annotate: bool | None = None,
) -> Axes:
    """Heatmap of a numeric table (rows and columns keep their order); column labels listed in ``highlight``
    are drawn bold red. Cells carry their values if ``annotate`` (default: when there are at most
    ``MAX_ANNOTATED`` cells, beyond which the text is unreadable and slow to draw)."""
    values = matrix.to_numpy(dtype=float)
    image = ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(matrix.shape[1]), [str(c) for c in matrix.columns], rotation=45, ha="right")
    ax.set_yticks(range(matrix.shape[0]), [str(i) for i in matrix.index])
    for label in ax.get_xticklabels():
        if label.get_text() in highlight:
            label.set_color("tab:red")
            label.set_fontweight("bold")
    if annotate is None:
        annotate = values.size <= MAX_ANNOTATED
    for (i, j), v in np.ndenumerate(values if annotate else np.empty((0, 0))):
        if np.isfinite(v):
            # Black on light cells, white on dark ones, by the luminance of the cell's colour.
            r, g, b, _ = image.cmap(image.norm(v))
            color = "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"
            ax.text(j, i, format(v, fmt), ha="center", va="center", fontsize=7, color=color)
    ax.figure.colorbar(image, ax=ax)
    if title:
        ax.set_title(title)
    return ax


def plot_shares(ax: Axes, shares: pd.DataFrame, run: str, kinds: Sequence[str] = tuple(SHARE_STYLES)) -> Axes:
    """Per-language shares of one run on a log scale, languages ordered by natural share: how far the
    temperature lifts small languages above their natural share, and whether sampling realised it."""
    rows = shares[shares["run"] == run].sort_values("natural", ascending=False)
    if rows.empty:
        raise KeyError(f"no shares for run {run!r}")
    positions = np.arange(len(rows))
    for kind in kinds:
        marker, linestyle = SHARE_STYLES[kind]
        ax.plot(positions, rows[kind], marker=marker, linestyle=linestyle, label=kind)
    ax.set_yscale("log")
    ax.set_xticks(positions, rows["language"], rotation=90)
    ax.set_ylabel("share of tokens")
    tau = rows["tau"].iloc[0]
    ax.set_title(f"{run} (tau={tau})" if tau is not None and pd.notna(tau) else run)
    ax.legend(fontsize=8)
    return ax
