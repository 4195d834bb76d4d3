"""Figures and tables that show what a trained network learned and how far to trust it.

One module per report; each takes arrays or a model and writes a PNG (or returns a table).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cnn_pipeline.atomic import atomic_path


def pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure: Any, path: Path) -> None:
    figure.tight_layout()
    with atomic_path(path) as staged:
        figure.savefig(staged, format="png", dpi=100)
    pyplot().close(figure)
