"""One SpeechCLIP experiment's keyword report over its seeds (`assets.keywords.keyword_report`),
written to `experiments/<name>/keywords.json`, and its markdown for the UI."""

from __future__ import annotations

import numpy as np

from assets.core.atomic_io import write_json_atomic
from assets.core.device import resolve_device
from assets.core.seed_stats import mean_std
from assets.ingest.dataset_config import DatasetConfig
from assets.keywords.keyword_report import (caption_token_sets, hit_rates, nearest_tokens, random_token_rates,
                                            token_text, utterance_keywords)
from assets.training.experiments import Experiment
from assets.training.runs import data_sources, embedding_dim, evaluation_clips, normaliser, trained_model

KEYWORDS_FILE = "keywords.json"


def keyword_experiment(cache, ds: DatasetConfig, exp: Experiment, load_teacher, device: str = "auto",
                       examples: int = 8) -> dict:
    if exp.loss.kind != "speechclip" or exp.loss.mode == "parallel":
        raise ValueError(f"{exp.path}: the keyword report needs a cascaded SpeechCLIP run (loss.kind speechclip, "
                         "mode cascaded or both)")
    dev = resolve_device(device)
    teacher = load_teacher()
    clips, with_text = evaluation_clips(cache, ds, exp)
    if not with_text:
        raise ValueError(f"{exp.path}: {ds.name} has no caption texts to score keywords against")
    normalise = normaliser(cache, ds, exp, data_sources(cache, ds, exp, False).layout)
    per_seed, shown = {}, []
    for seed in exp.seeds:
        model = trained_model(cache, exp, seed, teacher, embedding_dim(clips), dev)
        gold = caption_token_sets(teacher.tokenizer, clips.caption_texts, model.cascaded.excluded_ids.tolist())
        keywords = utterance_keywords(model, clips, normalise, dev)
        neighbours, sims = nearest_tokens(model, keywords)
        rates = hit_rates(neighbours, gold)
        chance = random_token_rates(model, gold, keywords.shape[1], seed=seed)
        per_seed[str(seed)] = {"hit_rate": rates["any"], "hit_rate_per_keyword": rates["per_keyword"],
                               "keyword_hit_rate": rates["per_keyword_mean"], "keyword_precision": rates["precision"],
                               "random_token_rate": chance["any"], "random_keyword_hit_rate": chance["per_keyword_mean"],
                               "random_keyword_precision": chance["precision"],
                               "distinct_keyword_tokens": int(len(np.unique(keywords))),
                               "distinct_keywords_per_utterance": float(np.mean([len(set(k)) for k in keywords.tolist()])),
                               "table_tokens": int(len(model.cascaded.token_ids))}
        if not shown:
            shown = [{"clip_id": clips.clip_ids[i], "caption": clips.caption_texts[i][0],
                      "keywords": [[[token_text(teacher.tokenizer, t), round(float(s), 3)]
                                    for t, s in zip(neighbours[i, k], sims[i, k])] for k in range(keywords.shape[1])]}
                     for i in range(min(examples, len(clips)))]
    doc = {"experiment": exp.name, "dataset": ds.name, "seeds": list(exp.seeds), "eval_clips": len(clips),
           "batchnorm": exp.loss.keyword_batchnorm, "per_seed": per_seed, "summary": _summary(per_seed),
           "examples_seed": exp.seeds[0], "examples": shown,
           "protocol": "per utterance each keyword's top-5 nearest tokens (cosine in the model's token table, pad, "
                       "start and end excluded); hit: any of them is a token of the caption; random: keywords drawn "
                       "uniformly from the table, 10 draws"}
    out_dir = cache.experiment_dir(exp.name)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_dir / KEYWORDS_FILE, doc)
    return doc


SUMMARISED = ("hit_rate", "random_token_rate", "keyword_hit_rate", "random_keyword_hit_rate", "keyword_precision",
              "random_keyword_precision", "distinct_keywords_per_utterance")


def _summary(per_seed: dict) -> dict:
    return {key: mean_std([per_seed[s][key] for s in per_seed]) for key in SUMMARISED}


def keywords_markdown(doc: dict, examples: int = 3) -> str:
    """The hit rates (mean ± std over seeds) and a few detokenised utterances."""
    s = doc["summary"]
    pct = (lambda key: f"{100 * s[key]['mean']:.1f} ± {100 * s[key]['std']:.1f}")
    lines = [f"{doc['eval_clips']} utterances, {len(doc['seeds'])} seeds, BatchNorm {'on' if doc['batchnorm'] else 'off'}; "
             f"{s['distinct_keywords_per_utterance']['mean']:.1f} distinct keywords per utterance", "",
             "| % | keywords | random tokens |", "|---|---|---|",
             f"| any keyword's top-5 meets the caption | {pct('hit_rate')} | {pct('random_token_rate')} |",
             f"| a keyword's top-5 meets the caption | {pct('keyword_hit_rate')} | {pct('random_keyword_hit_rate')} |",
             f"| a keyword is a caption token | {pct('keyword_precision')} | {pct('random_keyword_precision')} |", ""]
    for ex in doc["examples"][:examples]:
        lines += [f"**{ex['caption']}** ({ex['clip_id']})", "", "| keyword | top-5 tokens (cosine) |", "|---|---|"]
        for k, tokens in enumerate(ex["keywords"]):
            lines.append(f"| kw{k} | " + ", ".join(f"`{t}` {c:.2f}" for t, c in tokens) + " |")
        lines.append("")
    return "\n".join(lines)
