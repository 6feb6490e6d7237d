"""The one summary of a number measured over seeds: mean, sample standard deviation (0 for one
seed) and the values, as every metrics document reports it."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def mean_std(values: Sequence[float]) -> dict:
    """{"mean", "std" (ddof 1; 0.0 for a single value), "values"} of per-seed values."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("no values to summarise")
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            "values": values}
