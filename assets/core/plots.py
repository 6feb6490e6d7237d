"""Matplotlib figures for Dagster metadata and reports: headless (Agg), as PNG bytes or as a
markdown image the UI renders inline."""

from __future__ import annotations

import base64
import io


def subplots(*args, **kwargs):
    """matplotlib.pyplot.subplots on the Agg backend (no display needed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt.subplots(*args, **kwargs)


def figure_png(fig) -> bytes:
    """The figure, laid out tightly, as PNG bytes; the figure is closed."""
    import matplotlib.pyplot as plt
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def png_markdown(png: bytes, alt: str) -> str:
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"
