"""Figure creation and saving shared by every plot: Agg backend, PNG or SVG, readable defaults."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from featlab.errors import InvalidArgumentError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FORMATS = (".png", ".svg")
DPI = 150  # sharp on a screen and in a paper draft; a 6 x 4 in figure is 900 x 600 px


def new_figure(width: float = 6.0, height: float = 4.0) -> Figure:
    """A figure on the non-interactive Agg canvas (no display needed, thread-safe use).

    Figures are created directly, not through ``pyplot``, so none accumulate in pyplot's
    global registry when a sweep draws hundreds of them.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def check_output_path(out: str | os.PathLike[str]) -> Path:
    """``out`` as a Path with a supported suffix.

    Raises:
        InvalidArgumentError: The suffix is not ``.png`` or ``.svg``.
    """
    path = Path(out)
    if path.suffix.lower() not in FORMATS:
        raise InvalidArgumentError(
            f"figure path {str(path)!r} must end in .png or .svg (found {path.suffix or 'none'})"
        )
    return path


def save_figure(fig: Figure, out: str | os.PathLike[str]) -> Path:
    """Write ``fig`` to ``out`` (.png or .svg, parents created); returns the path."""
    path = check_output_path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, format=path.suffix.lower().lstrip("."))
    return path
