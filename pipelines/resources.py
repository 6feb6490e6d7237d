"""Resources: thin Dagster wrappers over plain objects.

- `CachePaths` (resource key `cache`): the cache root, as an `assets.core.cache_layout.CacheLayout`.
- `ClipTeacherResource` (resource key `teacher`): how to load the frozen CLIP teacher
  (`models.clip_teacher.ClipTeacher`), loaded once per process.

torch and open_clip are imported only when a teacher is loaded, so the dataset sensors, which
import this module for the cache layout, stay light.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from assets.core.cache_layout import DEFAULT_CACHE_ROOT, TINY_TEACHER_NAME, CacheLayout


class CachePaths(dg.ConfigurableResource):
    """The cache root; `layout()` says where every file lives under it."""

    cache_root: str = DEFAULT_CACHE_ROOT  # relative paths resolve against the working directory

    @classmethod
    def from_env(cls) -> "CachePaths":
        return cls(cache_root=os.environ.get("CLIPKT_CACHE_ROOT", DEFAULT_CACHE_ROOT))

    def layout(self) -> CacheLayout:
        return CacheLayout(Path(self.cache_root))


_LOADED: dict[tuple, object] = {}  # one loaded teacher per process and configuration


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
    def from_env(cls, layout: CacheLayout) -> "ClipTeacherResource":
        """CLIPKT_TEACHER=tiny: the demo's tiny teacher from the cache (made by asset teacher/tiny_clip).
        Otherwise open_clip: CLIPKT_TEACHER_MODEL / _PRETRAINED / _WEIGHTS / CLIPKT_DEVICE override the defaults."""
        env = os.environ.get
        device = env("CLIPKT_DEVICE", "auto")
        if env("CLIPKT_TEACHER", "open_clip") == "tiny":
            weights, config = layout.tiny_teacher_paths()
            return cls(model_name=TINY_TEACHER_NAME, pretrained="", weights_path=str(weights),
                       model_config_path=str(config), device=device)
        return cls(model_name=env("CLIPKT_TEACHER_MODEL", "ViT-B-32"), pretrained=env("CLIPKT_TEACHER_PRETRAINED", "openai"),
                   weights_path=env("CLIPKT_TEACHER_WEIGHTS", ""), device=device)

    def load(self):
        """The `ClipTeacher`, loaded once per process (a changed weights or config file is reloaded)."""
        from models.clip_teacher import ClipTeacher, TeacherSpec

        spec = TeacherSpec(model_name=self.model_name, pretrained=self.pretrained, weights_path=self.weights_path,
                           device=self.device, batch_size=self.batch_size, precision=self.precision,
                           cache_dir=self.cache_dir)
        key = (spec, self.model_config_path, *(_file_stamp(p) for p in (self.weights_path, self.model_config_path)))
        if key not in _LOADED:
            hint = _TINY_HINT if self.model_name == TINY_TEACHER_NAME else ""
            if self.model_config_path and not Path(self.model_config_path).is_file():
                raise FileNotFoundError(f"CLIP teacher model config not found: {self.model_config_path}{hint}")
            if hint and self.weights_path and not Path(self.weights_path).is_file():
                raise FileNotFoundError(f"CLIP teacher weights file not found: {self.weights_path}{hint}")
            _LOADED[key] = ClipTeacher.from_files(spec, self.model_config_path or None)
        return _LOADED[key]


_TINY_HINT = "; the demo's tiny teacher is made by materialising asset teacher/tiny_clip (make demo does)"


def _file_stamp(path: str) -> tuple:
    try:
        st = os.stat(path)
        return st.st_size, st.st_mtime_ns
    except OSError:
        return ()
