"""Dataset declarations: one small YAML file per dataset, read into a typed config.

    # configs/datasets/my_audioset.yaml
    name: my_audioset
    format: audioset                # audioset | vggsound | places | audiocaps
    root: /data/audioset            # relative paths are relative to this YAML file
    metadata:
      - {path: balanced_train_segments.csv, split: balanced_train, media_dir: balanced_train}
      - {path: eval_segments.csv, split: eval, media_dir: eval}
    label_map: class_labels_indices.csv
    shard_size: 1000
    semantic_keys: keys.csv         # optional: clip_id,key ground truth (SynthAV writes one)
    media: segment                  # segment: each file is its listed segment | full: whole videos, cut at start..end
    channel: first                  # first: channel 0, as VIP-ANT | mix: the mean of all channels
    waveform_cache: false           # true: also cache 16 kHz waveforms (a HuBERT featurizer's input)

Every path a dataset names (metadata, media, semantic keys) must stay inside `root`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from assets.core.project_dirs import datasets_dir

FORMATS = ("audioset", "vggsound", "places", "audiocaps")
MEDIA_MODES = ("segment", "full")  # what a media file holds: its listed segment, or the whole video
CHANNEL_MODES = ("first", "mix")  # which audio the caches take: channel 0 (VIP-ANT) or the mean of all channels

# Where a clip's media file lives, relative to root/media_dir, per format. Fields:
# ytid, start, end (float seconds), start_int, end_int, start_ms, end_ms.
DEFAULT_MEDIA_TEMPLATES = {
    "audioset": "Y{ytid}.mp4",  # the name PANNs-style AudioSet downloaders use
    "vggsound": "{ytid}_{start_int:06d}.mp4",  # as in the VGGSound release: video/<ytid>_000030.mp4
    "audiocaps": "Y{ytid}.wav",
    "places": "",  # Places names its files in the JSON itself
}
DEFAULT_MEDIA_DIRS = {"audioset": "", "vggsound": "video", "audiocaps": "", "places": ""}


class DatasetConfigError(ValueError):
    """A dataset YAML file that cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class MetadataFile:
    path: str  # relative to the dataset root
    split: str | None = None  # None: the split comes from the file (VGGSound's 4th column)
    media_dir: str | None = None  # directory of this file's clips, relative to root


@dataclass(frozen=True)
class DatasetConfig:
    name: str
    format: str
    root: Path
    metadata: tuple[MetadataFile, ...]
    media_template: str = ""  # "" -> DEFAULT_MEDIA_TEMPLATES[format]
    label_map: str | None = None  # AudioSet class_labels_indices.csv, relative to root
    image_base_path: str | None = None  # Places: overrides the JSON's image_base_path
    audio_base_path: str | None = None  # Places: overrides the JSON's audio_base_path
    shard_size: int = 1000  # clips per shard when new shards are cut
    semantic_keys: str | None = None  # CSV clip_id,key of ground-truth semantic keys, relative to root
    media: str = "segment"  # MEDIA_MODES; `full` cuts start_s..end_s out of each file (assets.caches.clip_span)
    channel: str = "first"  # CHANNEL_MODES
    waveform_cache: bool = False  # also build waveform_cache (16 kHz samples; SpeechCLIP's HuBERT featurizer reads it)
    source: Path | None = field(default=None, compare=False)  # the YAML it came from

    @property
    def template(self) -> str:
        return self.media_template or DEFAULT_MEDIA_TEMPLATES[self.format]

    def media_dir(self, meta: MetadataFile) -> str:
        return DEFAULT_MEDIA_DIRS[self.format] if meta.media_dir is None else meta.media_dir


def _require(raw: dict, key: str, where: Path) -> object:
    if key not in raw or raw[key] in (None, ""):
        raise DatasetConfigError(f"{where}: missing required field {key!r}")
    return raw[key]


def parse_dataset_config(raw: dict, where: Path) -> DatasetConfig:
    """Validate one YAML document; relative roots resolve against the YAML's directory."""
    if not isinstance(raw, dict):
        raise DatasetConfigError(f"{where}: expected a mapping at top level, got {type(raw).__name__}")
    known = set(DatasetConfig.__dataclass_fields__) - {"source"}
    unknown = set(raw) - known
    if unknown:
        raise DatasetConfigError(f"{where}: unknown field(s) {sorted(unknown)}; known: {sorted(known)}")
    name, fmt = str(_require(raw, "name", where)), str(_require(raw, "format", where))
    if fmt not in FORMATS:
        raise DatasetConfigError(f"{where}: format {fmt!r} is not one of {FORMATS}")
    if not name.replace("_", "").isalnum():
        raise DatasetConfigError(f"{where}: name {name!r} must be letters, digits and '_' (it becomes an asset key)")
    root = Path(os.path.expandvars(os.path.expanduser(str(_require(raw, "root", where)))))
    if not root.is_absolute():
        root = (where.parent / root)
    metadata = []
    for i, m in enumerate(_require(raw, "metadata", where)):
        if isinstance(m, str):
            m = {"path": m}
        if not isinstance(m, dict) or "path" not in m:
            raise DatasetConfigError(f"{where}: metadata[{i}] needs a 'path'")
        metadata.append(MetadataFile(path=str(m["path"]), split=m.get("split"), media_dir=m.get("media_dir")))
    if fmt != "vggsound" and any(m.split is None for m in metadata):
        raise DatasetConfigError(f"{where}: every metadata file of a {fmt} dataset needs a 'split'")
    shard_size = int(raw.get("shard_size", 1000))
    if shard_size < 1:
        raise DatasetConfigError(f"{where}: shard_size must be at least 1, got {shard_size}")
    root = Path(os.path.normpath(root))
    semantic_keys = raw.get("semantic_keys")
    if semantic_keys is not None:
        semantic_keys = str(semantic_keys)
        if not semantic_keys or not _stays_inside(root, semantic_keys):
            raise DatasetConfigError(f"{where}: semantic_keys {semantic_keys!r} must be a file inside the dataset root {root}")
    media, channel = str(raw.get("media", "segment")), str(raw.get("channel", "first"))
    if media not in MEDIA_MODES:
        raise DatasetConfigError(f"{where}: media {media!r} is not one of {MEDIA_MODES}")
    if media == "full" and fmt == "places":
        raise DatasetConfigError(f"{where}: media: full needs listed segments; a places dataset lists none")
    if channel not in CHANNEL_MODES:
        raise DatasetConfigError(f"{where}: channel {channel!r} is not one of {CHANNEL_MODES}")
    waveforms = raw.get("waveform_cache", False)
    if not isinstance(waveforms, bool):
        raise DatasetConfigError(f"{where}: waveform_cache must be true or false, got {waveforms!r}")
    return DatasetConfig(
        name=name, format=fmt, root=root, metadata=tuple(metadata), media=media, channel=channel,
        media_template=str(raw.get("media_template") or ""), label_map=raw.get("label_map"),
        image_base_path=raw.get("image_base_path"), audio_base_path=raw.get("audio_base_path"),
        shard_size=shard_size, semantic_keys=semantic_keys, waveform_cache=waveforms, source=where,
    )


def _stays_inside(root: Path, relative: str) -> bool:
    """Whether root/relative stays under root, checked lexically (`..` and outside absolute paths
    leave it), by the rule the manifest applies to media paths."""
    base = os.path.normpath(os.path.abspath(root))
    full = os.path.normpath(os.path.join(base, relative))
    return full != base and full.startswith(base + os.sep)


def load_dataset_config(path: Path) -> DatasetConfig:
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise DatasetConfigError(f"{path}: not valid YAML: {err}") from err
    return parse_dataset_config(raw, path)


def load_dataset_configs(directory: Path) -> list[DatasetConfig]:
    """Every `*.yaml` in directory, sorted by file name; dataset names must be unique."""
    configs = [load_dataset_config(p) for p in sorted(directory.glob("*.yaml"))]
    seen: dict[str, Path] = {}
    for c in configs:
        if c.name in seen:
            raise DatasetConfigError(f"{c.source}: dataset name {c.name!r} is already used by {seen[c.name]}")
        seen[c.name] = c.source
    return configs


def load_datasets() -> list[DatasetConfig]:
    """Every dataset this checkout declares (configs/datasets, or $CLIPKT_DATASETS_DIR)."""
    return load_dataset_configs(datasets_dir())
