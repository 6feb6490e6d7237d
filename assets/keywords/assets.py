"""Keyword assets (a thin Dagster wrapper over `assets.keywords.experiment_keywords`):

- `keywords/keyword_report`, partitioned by experiment: for a cascaded SpeechCLIP run, each
  evaluation utterance's keywords as their top-5 nearest tokens, the keyword hit rate against
  the random-token rate (mean ± std over seeds), a table in the UI and keywords.json.
"""

import dagster as dg

from assets.ingest.dataset_config import DatasetConfig
from assets.keywords.experiment_keywords import KEYWORDS_FILE, keyword_experiment, keywords_markdown
from assets.training.assets import ENCODER_KEY, partition_experiment
from pipelines.resources import CachePaths, ClipTeacherResource

GROUP = "keywords"
KEYWORDS_KEY = dg.AssetKey([GROUP, "keyword_report"])
CODE_VERSION = "1"


class KeywordReportConfig(dg.Config):
    device: str = "auto"
    examples: int = 8  # detokenised utterances kept in keywords.json


def build_keyword_asset(partitions: dg.PartitionsDefinition, datasets: list[DatasetConfig]) -> dg.AssetsDefinition:
    by_name = {ds.name: ds for ds in datasets}

    @dg.asset(key=KEYWORDS_KEY, group_name=GROUP, partitions_def=partitions, deps=[ENCODER_KEY], kinds={"json"},
              code_version=CODE_VERSION,
              description="A cascaded SpeechCLIP run's keywords detokenised (top-5 nearest tokens per keyword) and "
                          "its keyword hit rate against random tokens, over seeds.")
    def keyword_report(context: dg.AssetExecutionContext, config: KeywordReportConfig, cache: CachePaths,
                       teacher: ClipTeacherResource) -> dg.MaterializeResult:
        layout = cache.layout()
        part = partition_experiment(context, by_name)
        try:
            doc = keyword_experiment(layout, part.dataset, part.exp, teacher.load, config.device, config.examples)
        except (FileNotFoundError, ValueError) as e:
            raise dg.Failure(str(e)) from e
        s = doc["summary"]
        return dg.MaterializeResult(metadata={
            "report": dg.MetadataValue.md(keywords_markdown(doc)),
            "hit_rate": round(100 * s["hit_rate"]["mean"], 2),
            "random_token_rate": round(100 * s["random_token_rate"]["mean"], 2),
            "keyword_precision": round(100 * s["keyword_precision"]["mean"], 2),
            "random_keyword_precision": round(100 * s["random_keyword_precision"]["mean"], 2),
            "eval_utterances": doc["eval_clips"], "seeds": doc["seeds"],
            "path": dg.MetadataValue.path(str(layout.experiment_dir(part.exp.name) / KEYWORDS_FILE))})

    return keyword_report
