"""Shared fixtures: a tiny SynthAV on disk and dataset YAMLs that point at it."""

import os
from pathlib import Path

import dagster as dg
import pytest
import yaml

from assets.core.cache_layout import CacheLayout
from data.synthav.generate import SynthAVConfig, generate

# The tests choose their CLIP teacher themselves; the caller's environment must not leak in.
for _var in ("CLIPKT_EXPERIMENTS_DIR", "CLIPKT_TEACHER", "CLIPKT_TEACHER_MODEL", "CLIPKT_TEACHER_PRETRAINED", "CLIPKT_TEACHER_WEIGHTS", "CLIPKT_DEVICE"):
    os.environ.pop(_var, None)

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
        if fmt == "places":  # the tests also train SpeechCLIP's HuBERT featurizer on samples
            raw["waveform_cache"] = True
        (directory / src.name).write_text(yaml.safe_dump(raw))
    return directory


@pytest.fixture(scope="session")
def tiny_configs(synthav_root, tmp_path_factory) -> Path:
    return write_configs(tmp_path_factory.mktemp("configs"), synthav_root)


@pytest.fixture(scope="session")
def built_caches(tiny_configs, tmp_path_factory):
    """Tiny SynthAV VGGSound, Places and AudioCaps: manifest, every shard's caches, fbank stats.
    Yields (definitions, instance, cache layout); CLIPKT_DATASETS_DIR and CLIPKT_CACHE_ROOT stay set."""
    from pipelines.definitions import build_definitions

    cache = CacheLayout(tmp_path_factory.mktemp("cache"))
    mp = pytest.MonkeyPatch()
    mp.setenv("CLIPKT_DATASETS_DIR", str(tiny_configs))
    mp.setenv("CLIPKT_CACHE_ROOT", str(cache.root))
    defs = build_definitions()
    with dg.instance_for_test() as instance:
        for name in ("synthav_vggsound", "synthav_places", "synthav_audiocaps"):
            assert defs.resolve_job_def(f"{name}_manifest_job").execute_in_process(instance=instance).success
            for key in instance.get_dynamic_partitions(f"{name}_shards"):
                job = defs.resolve_job_def(f"{name}_shard_job")
                assert job.execute_in_process(instance=instance, partition_key=key).success
            assert defs.resolve_job_def(f"{name}_stats_job").execute_in_process(instance=instance).success
        yield defs, instance, cache
    mp.undo()


TEACHER_FIT = {"ops": {"teacher__tiny_clip": {"config": {"epochs": 2, "batch_size": 8, "warmup_steps": 1}}}}


@pytest.fixture(scope="session")
def mined_caches(built_caches):
    """built_caches plus the tiny teacher (2 epochs), every shard embedded, and neighbour tables (k_max 5)
    for the three datasets. Yields (defs, instance, cache, teacher run, {dataset: neighbours run});
    CLIPKT_TEACHER=tiny stays set."""
    from pipelines.definitions import build_definitions

    _, instance, cache = built_caches
    mp = pytest.MonkeyPatch()
    mp.setenv("CLIPKT_TEACHER", "tiny")
    defs = build_definitions()
    teacher_run = defs.resolve_job_def("tiny_teacher_job").execute_in_process(instance=instance, run_config=TEACHER_FIT)
    assert teacher_run.success
    runs = {}
    for name in ("synthav_places", "synthav_vggsound", "synthav_audiocaps"):
        for key in instance.get_dynamic_partitions(f"{name}_shards"):
            run = defs.resolve_job_def(f"{name}_embedding_job").execute_in_process(instance=instance, partition_key=key)
            assert run.success and all(e.passed for e in run.get_asset_check_evaluations())
        config = {"ops": {f"{name}__neighbor_tables": {"config": {"k_max": 5, "splits": ["train"]}}}}
        runs[name] = defs.resolve_job_def(f"{name}_neighbors_job").execute_in_process(instance=instance, run_config=config)
        assert runs[name].success
    yield defs, instance, cache, teacher_run, runs
    mp.undo()
