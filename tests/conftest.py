"""Shared fixtures: a tiny SynthAV on disk and dataset YAMLs that point at it."""

from pathlib import Path

import pytest
import yaml

from data.synthav.generate import SynthAVConfig, generate

TINY_SCALE = 0.01  # 25 + 10 VGGSound clips, 10 + 4 Places items, ... plus the bad entries
SHARD_SIZE = 8

DEMO_CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "datasets"


@pytest.fixture(scope="session")
def synthav_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthav")
    generate(SynthAVConfig(out=root, scale=TINY_SCALE, workers=2))
    return root


def write_configs(directory: Path, data_root: Path, shard_size: int = SHARD_SIZE, only: tuple[str, ...] = ()) -> Path:
    """Copies of the demo dataset YAMLs with `root` pointing under data_root."""
    directory.mkdir(parents=True, exist_ok=True)
    for src in sorted(DEMO_CONFIGS.glob("*.yaml")):
        raw = yaml.safe_load(src.read_text())
        fmt = raw["format"]
        if only and fmt not in only:
            continue
        raw["root"] = str(data_root / fmt)
        raw["shard_size"] = shard_size
        (directory / src.name).write_text(yaml.safe_dump(raw))
    return directory


@pytest.fixture(scope="session")
def tiny_configs(synthav_root, tmp_path_factory) -> Path:
    return write_configs(tmp_path_factory.mktemp("configs"), synthav_root)
