"""Where this checkout keeps its declarations and reports: configs/datasets, configs/experiments
(each overridable by an environment variable, for tests and other machines) and data/reports."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def datasets_dir() -> Path:
    """CLIPKT_DATASETS_DIR if set, else configs/datasets of this checkout."""
    return Path(os.environ.get("CLIPKT_DATASETS_DIR", REPO_ROOT / "configs" / "datasets"))


def experiments_dir() -> Path:
    """CLIPKT_EXPERIMENTS_DIR if set, else configs/experiments of this checkout."""
    return Path(os.environ.get("CLIPKT_EXPERIMENTS_DIR", REPO_ROOT / "configs" / "experiments"))


def reports_dir() -> Path:
    """Where ablation_report writes its files unless its config names another directory."""
    return REPO_ROOT / "data" / "reports"
