"""Localisation assets (thin Dagster wrappers over `assets.localisation.experiment_localisation`):

- `localisation/sound_localisation`, partitioned by experiment: the trained runs' audio-prompted
  heatmaps on the evaluation clips scored against SynthAV's sounding-object boxes (cIoU, AUC,
  pixel AP; mean ± std over seeds), with the heatmap grid (frame, each head, combined) as an
  image in the UI. DenseAV runs use their own maps; global audio-image runs the baseline's.
"""

import dagster as dg

from assets.core.plots import png_markdown
from assets.ingest.dataset_config import DatasetConfig
from assets.localisation.experiment_localisation import HEATMAPS_FILE, localisation_markdown, localise_experiment
from assets.training.assets import ENCODER_KEY, partition_experiment
from pipelines.resources import CachePaths, ClipTeacherResource

GROUP = "localisation"
LOCALISATION_KEY = dg.AssetKey([GROUP, "sound_localisation"])
CODE_VERSION = "1"


class LocalisationConfig(dg.Config):
    device: str = "auto"
    grid_rows: int = 6  # evaluation pairs drawn in the heatmap grid


def build_localisation_asset(partitions: dg.PartitionsDefinition, datasets: list[DatasetConfig]) -> dg.AssetsDefinition:
    by_name = {ds.name: ds for ds in datasets}

    @dg.asset(key=LOCALISATION_KEY, group_name=GROUP, partitions_def=partitions, deps=[ENCODER_KEY],
              kinds={"json", "png"}, code_version=CODE_VERSION,
              description="Audio-prompted heatmaps of the experiment's runs scored against SynthAV's sounding-object "
                          "boxes (cIoU, AUC, pixel AP over seeds), and a heatmap grid to look at.")
    def sound_localisation(context: dg.AssetExecutionContext, config: LocalisationConfig, cache: CachePaths,
                           teacher: ClipTeacherResource) -> dg.MaterializeResult:
        layout = cache.layout()
        part = partition_experiment(context, by_name)
        exp, ds = part.exp, part.dataset
        try:
            doc = localise_experiment(layout, ds, exp, teacher.load, config.device, config.grid_rows)
        except (FileNotFoundError, KeyError, ValueError) as e:
            raise dg.Failure(str(e)) from e
        png = (layout.experiment_dir(exp.name) / HEATMAPS_FILE).read_bytes()
        metadata = {"table": dg.MetadataValue.md(localisation_markdown([doc])),
                    "heatmaps": dg.MetadataValue.md(png_markdown(png, f"{exp.name} heatmaps")),
                    "heatmaps_path": dg.MetadataValue.path(str(layout.experiment_dir(exp.name) / HEATMAPS_FILE)),
                    "eval_clips": doc["eval_clips"]}
        for name, s in doc["summary"].items():
            for metric, v in s.items():
                metadata[f"{name} {metric}"] = round(100 * v["mean"], 2)
        return dg.MaterializeResult(metadata=metadata)

    return sound_localisation
