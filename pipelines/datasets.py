"""Which datasets and experiments the code location serves: every YAML in the datasets and
experiments directories."""

from __future__ import annotations

import os
from pathlib import Path

from assets.dataset_config import DatasetConfig, load_dataset_configs
from assets.experiments import Experiment, load_experiments

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATASETS_DIR = REPO_ROOT / "configs" / "datasets"
DEFAULT_EXPERIMENTS_DIR = REPO_ROOT / "configs" / "experiments"


def datasets_dir() -> Path:
    """CLIPKT_DATASETS_DIR if set (tests, other machines), else configs/datasets of this checkout."""
    return Path(os.environ.get("CLIPKT_DATASETS_DIR", DEFAULT_DATASETS_DIR))


def load_datasets() -> list[DatasetConfig]:
    return load_dataset_configs(datasets_dir())


def experiments_dir() -> Path:
    """CLIPKT_EXPERIMENTS_DIR if set, else configs/experiments of this checkout."""
    return Path(os.environ.get("CLIPKT_EXPERIMENTS_DIR", DEFAULT_EXPERIMENTS_DIR))


def load_all_experiments() -> dict[str, Experiment]:
    return load_experiments(experiments_dir())
