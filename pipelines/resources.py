"""Resources: where caches live, and the frozen CLIP teacher."""

from __future__ import annotations

import json
import os
from pathlib import Path

import dagster as dg

from models.clip_teacher import ClipTeacher, TeacherSpec
from models.tiny_clip import MODEL_NAME as TINY_MODEL_NAME

DEFAULT_CACHE_ROOT = "data/cache"


class CachePaths(dg.ConfigurableResource):
    """The cache root and the file layout under it (one directory per dataset)."""

    cache_root: str = DEFAULT_CACHE_ROOT  # relative paths resolve against the working directory

    @classmethod
    def from_env(cls) -> "CachePaths":
        return cls(cache_root=os.environ.get("CLIPKT_CACHE_ROOT", DEFAULT_CACHE_ROOT))

    def dataset_dir(self, dataset: str) -> Path:
        return Path(self.cache_root) / dataset

    def manifest_path(self, dataset: str) -> Path:
        return self.dataset_dir(dataset) / "clip_manifest.parquet"

    def shard_path(self, dataset: str, shard: str) -> Path:
        return self.dataset_dir(dataset) / "shards" / f"{shard}.parquet"

    def experiment_dir(self, experiment: str) -> Path:
        """Checkpoints, final weights and metrics of one training experiment (all its seeds)."""
        return Path(self.cache_root) / "experiments" / experiment

    def tiny_teacher_paths(self) -> tuple[Path, Path]:
        """(weights, open_clip model config JSON) of the demo's tiny teacher (asset teacher/tiny_clip)."""
        d = Path(self.cache_root) / "teacher"
        return d / f"{TINY_MODEL_NAME}.pt", d / f"{TINY_MODEL_NAME}.json"


_LOADED: dict[tuple, ClipTeacher] = {}  # one loaded teacher per process and configuration


class ClipTeacherResource(dg.ConfigurableResource):
    """The frozen CLIP teacher (open_clip): a pretrained tag, or a local weights file for
    machines without network. Device chosen at run time (auto: CUDA when present), AMP on CUDA."""

    model_name: str = "ViT-B-32"
    pretrained: str = "openai"  # open_clip pretrained tag; "" when weights_path is given
    weights_path: str = ""  # local checkpoint (state dict .pt/.bin/.safetensors); overrides the download
    model_config_path: str = ""  # open_clip model config JSON, for a model outside open_clip's registry
    device: str = "auto"  # auto | cpu | cuda | cuda:1 ...
    batch_size: int = 256  # frames or captions per forward pass
    precision: str = "auto"  # auto (amp on CUDA, fp32 on CPU) | amp | fp32
    cache_dir: str = ""  # open_clip's download cache; "" -> its default

    @classmethod
    def from_env(cls, cache: CachePaths) -> "ClipTeacherResource":
        """CLIPKT_TEACHER=tiny: the demo's tiny teacher from the cache (made by asset teacher/tiny_clip).
        Otherwise open_clip: CLIPKT_TEACHER_MODEL / _PRETRAINED / _WEIGHTS / CLIPKT_DEVICE override the defaults."""
        env = os.environ.get
        device = env("CLIPKT_DEVICE", "auto")
        if env("CLIPKT_TEACHER", "open_clip") == "tiny":
            weights, config = cache.tiny_teacher_paths()
            return cls(model_name=TINY_MODEL_NAME, pretrained="", weights_path=str(weights),
                       model_config_path=str(config), device=device)
        return cls(model_name=env("CLIPKT_TEACHER_MODEL", "ViT-B-32"), pretrained=env("CLIPKT_TEACHER_PRETRAINED", "openai"),
                   weights_path=env("CLIPKT_TEACHER_WEIGHTS", ""), device=device)

    def spec(self) -> TeacherSpec:
        return TeacherSpec(model_name=self.model_name, pretrained=self.pretrained, weights_path=self.weights_path,
                           device=self.device, batch_size=self.batch_size, precision=self.precision,
                           cache_dir=self.cache_dir)

    def load(self) -> ClipTeacher:
        """The teacher, loaded once per process (a changed weights or config file is reloaded)."""
        key = (self.spec(), self.model_config_path, *(_file_stamp(p) for p in (self.weights_path, self.model_config_path)))
        if key not in _LOADED:
            model_config = None
            if self.model_config_path:
                path = Path(self.model_config_path)
                if not path.is_file():
                    raise FileNotFoundError(f"CLIP teacher model config not found: {path}"
                                            + _TINY_HINT * (self.model_name == TINY_MODEL_NAME))
                model_config = json.loads(path.read_text())
            if self.model_name == TINY_MODEL_NAME and self.weights_path and not Path(self.weights_path).is_file():
                raise FileNotFoundError(f"CLIP teacher weights file not found: {self.weights_path}{_TINY_HINT}")
            _LOADED[key] = ClipTeacher(self.spec(), model_config=model_config)
        return _LOADED[key]


_TINY_HINT = "; the demo's tiny teacher is made by materialising asset teacher/tiny_clip (make demo does)"


def _file_stamp(path: str) -> tuple:
    try:
        st = os.stat(path)
        return st.st_size, st.st_mtime_ns
    except OSError:
        return ()
