"""t-SNE panels: one scatter per model, coloured by class, one shared legend (the DVME paper's
Figure 2, ssl-transferability-dvme.txt: supervised vs DINO vs DVME side by side).

Colours are fixed per class, not per panel, so a class has the same colour in every model's
panel: tab10 up to 10 classes, tab20 up to 20, evenly spaced turbo colours beyond. Unknown
labels (-1) are light grey. Multi-label datasets are coloured by each sample's first positive
label, or "no finding" when none is positive (:func:`featlab.eval.tsne.class_groups`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from featlab.errors import InvalidArgumentError
from featlab.eval.tsne import class_groups, group_names
from featlab.plots._figure import check_output_path, new_figure, save_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

Panel = tuple[str, np.ndarray, np.ndarray]  # (title, coords (m, 2), labels (m,) or (m, L))
MAX_COLUMNS = 4
PANEL_INCHES = 3.2
UNKNOWN_COLOUR = (0.8, 0.8, 0.8, 1.0)


def class_colours(n: int) -> np.ndarray:
    """``(n, 4)`` RGBA, one fixed categorical colour per class code ``0..n-1``."""
    from matplotlib import colormaps

    if n <= 20:
        table = np.asarray(colormaps["tab10" if n <= 10 else "tab20"].colors)[:n, :3]
        return np.c_[table, np.ones(n)]
    return np.asarray(colormaps["turbo"](np.linspace(0.05, 0.95, n)))


def figure_size(n_panels: int, class_names: Sequence[str]) -> tuple[float, float]:
    """``(width, height)`` in inches: ``min(n, 4)`` panels a row, a legend column at the right
    wide enough for the longest class name."""
    cols = min(n_panels, MAX_COLUMNS)
    rows = math.ceil(n_panels / MAX_COLUMNS)
    longest = max((len(str(c)) for c in class_names), default=8)
    legend = min(3.5, max(1.2, 0.6 + 0.075 * longest))
    return cols * PANEL_INCHES + legend, rows * (PANEL_INCHES + 0.3)


def plot_tsne_panels(
    panels: Sequence[Panel],
    class_names: Sequence[str],
    out: str | os.PathLike[str] | None = None,
    *,
    task: str = "multiclass",
    point_size: float | None = None,
) -> Figure:
    """One t-SNE scatter per model, in rows of up to 4, with one legend of class names.

    Args:
        panels: ``(title, coords, labels)`` per model: ``coords (m, 2)``, ``labels (m,)`` int
            (``-1`` unknown) or, for ``task="multilabel"``, ``(m, L)`` 0/1.
        class_names: Name of each class code (``L`` label names for multi-label).
        out: Write the figure there (``.png`` or ``.svg``, 150 dpi) when given.
        task: The dataset's task; ``"multilabel"`` colours by first positive label.
        point_size: Marker area in pt^2; default shrinks with the number of points.

    Returns:
        The figure (size :func:`figure_size`).

    Raises:
        InvalidArgumentError: No panels, mismatched shapes, a label code without a name, or
            an ``out`` that is not .png/.svg.

    Examples:
        >>> panels = [("dino-vits8", xy, y)]                                  # doctest: +SKIP
        >>> plot_tsne_panels(panels, ["normal", "tumor"], "tsne.png")         # doctest: +SKIP
    """
    if out is not None:
        check_output_path(out)  # fail before drawing
    groups = [_check_panel(p, class_names, task) for p in panels]
    if not groups:
        raise InvalidArgumentError("no panels to plot; give at least one (title, coords, labels)")
    names = group_names(tuple(class_names), panels[0][2])
    colours = class_colours(len(names))
    fig = new_figure(*figure_size(len(panels), names))
    cols = min(len(panels), MAX_COLUMNS)
    rows = math.ceil(len(panels) / MAX_COLUMNS)
    present: set[int] = set()
    for i, ((title, coords, _), g) in enumerate(zip(panels, groups, strict=True)):
        ax = fig.add_subplot(rows, cols, i + 1)
        c = np.where(g[:, None] >= 0, colours[np.maximum(g, 0)], UNKNOWN_COLOUR)
        size = point_size or float(np.clip(4000 / max(len(g), 1), 1.0, 20.0))
        # Rasterised points: an SVG of 10,000 markers per panel stays small and fast to open.
        ax.scatter(coords[:, 0], coords[:, 1], c=c, s=size, linewidths=0, rasterized=True)
        ax.set_title(f"{title} (n={len(g):,})", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_aspect("equal", adjustable="datalim")  # t-SNE distances are isotropic
        present.update(np.unique(g).tolist())
    _legend(fig, names, colours, present)
    if out is not None:
        save_figure(fig, out)
    return fig


def _check_panel(panel: Panel, class_names: Sequence[str], task: str) -> np.ndarray:
    title, coords, labels = panel
    coords, labels = np.asarray(coords), np.asarray(labels)
    multilabel = task == "multilabel"
    if coords.ndim != 2 or coords.shape[1] != 2 or len(labels) != len(coords):
        raise InvalidArgumentError(
            f"panel {title!r}: expected coords (m, 2) and m labels; got coords {coords.shape} "
            f"and labels {labels.shape}"
        )
    if labels.ndim != (2 if multilabel else 1):
        raise InvalidArgumentError(
            f"panel {title!r}: task {task!r} needs labels of shape "
            f"{'(m, L)' if multilabel else '(m,)'}; got {labels.shape}"
        )
    n_names = len(class_names)
    if multilabel and labels.shape[1] != n_names:
        raise InvalidArgumentError(
            f"panel {title!r}: {labels.shape[1]} labels but {n_names} class names"
        )
    g = class_groups(labels)
    if not multilabel and len(g) and g.max() >= n_names:
        raise InvalidArgumentError(
            f"panel {title!r}: label {int(g.max())} has no name; {n_names} class names given"
        )
    return g


def _legend(fig: Figure, names: list[str], colours: np.ndarray, present: set[int]) -> None:
    from matplotlib.lines import Line2D

    codes = [c for c in range(len(names)) if c in present]
    labels = [names[c] for c in codes]
    handles = [
        Line2D([], [], linestyle="", marker="o", markersize=6, color=colours[c]) for c in codes
    ]
    if -1 in present:
        handles.append(Line2D([], [], linestyle="", marker="o", markersize=6, color=UNKNOWN_COLOUR))
        labels.append("unknown")
    fig.legend(handles, labels, loc="outside right upper", frameon=False, fontsize=8)


__all__ = ["class_colours", "figure_size", "plot_tsne_panels"]
