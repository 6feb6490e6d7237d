"""Which datasets the code location serves: every YAML in the datasets directory."""

from __future__ import annotations

import os
from pathlib import Path

from assets.dataset_config import DatasetConfig, load_dataset_configs

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATASETS_DIR = REPO_ROOT / "configs" / "datasets"


def datasets_dir() -> Path:
    """CLIPKT_DATASETS_DIR if set (tests, other machines), else configs/datasets of this checkout."""
    return Path(os.environ.get("CLIPKT_DATASETS_DIR", DEFAULT_DATASETS_DIR))


def load_datasets() -> list[DatasetConfig]:
    return load_dataset_configs(datasets_dir())
