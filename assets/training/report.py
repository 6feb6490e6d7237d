"""What the experiment assets report, as plain values and files.

- The ablation table over experiments, in seed 000's shape: one row per experiment, ✓/✗ per
  neighbour table, R@1/5/10 in both directions (mean ± std over seeds, in percent), from the
  experiments' metrics documents (`assets.training.runs.metrics_document`) to a flat table
  (Parquet), markdown (one table per dataset and stage) and a PNG chart; and the comparison the
  demo reports: each experiment against its dataset's InfoNCE random-frame baseline.
  `write_report` writes them as ablation.md / .parquet / .png.
- One experiment's training runs (`encoder_summary`: run table, loss and validation curves)
  and its metrics (`metrics_summary`, `below_chance`), as the assets show them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from assets.core.atomic_io import atomic_path, write_parquet_atomic
from assets.core.plots import figure_png, png_markdown, subplots
from assets.training.experiments import ALL_TABLES, Experiment
from assets.training.head_split import head_split_markdown

DIRECTIONS = ("A->I", "I->A", "A->I common", "I->A common", "A->T", "T->A")
KS = ("R@1", "R@5", "R@10")
RECOGNITION = ("top1", "mAP")  # the student classifier's recognition (CCL), in the summary's "recognition" entry


def report_rows(docs: list[dict]) -> list[dict]:
    """One flat row per experiment: identity, ✓/✗ per table, and per direction and k the mean and std (percent)."""
    rows = []
    for d in sorted(docs, key=lambda d: (d["dataset"], d["stage"], d["experiment"])):
        row = {"experiment": d["experiment"], "dataset": d["dataset"], "stage": d["stage"], "model": d["model"],
               "frames": d["frames"] + (f" (n={d['nearest_start_epoch']}"
                                        + (", per clip" if d.get("nearest_rule") == "per_clip" else "") + ")"
                                        if d.get("nearest_start_epoch") is not None else ""),
               "loss": d["loss"], "mode": d.get("mode"), "k": d["k"], "seeds": len(d["seeds"]), "eval_clips": d["eval"]["clips"],
               "description": d.get("description", ""), "tags": list(d.get("tags", [])),
               "train_mix": list(d.get("train_mix", []))}
        for t in ALL_TABLES:
            row[t] = t in d["tables"]
        for direction in DIRECTIONS:
            for k in (*KS, "median_rank"):
                s = d["summary"].get(direction, {}).get(k)
                scale = 1.0 if k == "median_rank" else 100.0
                row[f"{direction} {k}"] = None if s is None else s["mean"] * scale
                row[f"{direction} {k} std"] = None if s is None else s["std"] * scale
        row["chance R@10"] = 100.0 * max(d["eval"]["chance_R@10"].values())
        for k in RECOGNITION:
            s = d["summary"].get("recognition", {}).get(k)
            row[f"recognition {k}"] = None if s is None else 100 * s["mean"]
            row[f"recognition {k} std"] = None if s is None else 100 * s["std"]
        split = (d.get("head_split") or {}).get("summary", {}).get("act_dis")
        row["Act.Dis"], row["Act.Dis std"] = (None, None) if split is None else (100 * split["mean"], 100 * split["std"])
        rows.append(row)
    return rows


def report_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows)


def _cell(row: dict, col: str, seeds: int) -> str:
    mean = row[col]
    if mean is None:
        return "–"
    std = row[f"{col} std"]
    return f"{mean:.1f} ± {std:.1f}" if seeds > 1 else f"{mean:.1f}"


def markdown_report(rows: list[dict]) -> str:
    """Markdown: per dataset and stage, seed 000's table (✓/✗ per table) with the directions measured."""
    out = []
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["stage"]), []).append(r)
    for (dataset, stage), group in groups.items():
        directions = [d for d in DIRECTIONS if any(r[f"{d} R@1"] is not None for r in group)]
        out.append(f"### {dataset} ({stage.replace('_', '-')}), {group[0]['eval_clips']} evaluation clips, "
                   f"R@k in %, chance R@10 {group[0]['chance R@10']:.1f}")
        act_dis = any(r["Act.Dis"] is not None for r in group)
        recognition = [k for k in RECOGNITION if any(r[f"recognition {k}"] is not None for r in group)]
        head = ["experiment", "frames", "mode", "k", *(t if t == "org" else t.upper() for t in ALL_TABLES),
                *(f"{d} {k}" for d in directions for k in KS), *(["Act.Dis"] if act_dis else []),
                *(f"recognition {k}" for k in recognition)]
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "---|" * len(head))
        for r in group:
            name = r["experiment"] + (f" (+ {', '.join(r['train_mix'])})" if r["train_mix"] else "")
            cells = [name, r["frames"], r["mode"] or "–", "–" if r["k"] is None else str(r["k"]),
                     *("✓" if r[t] else "✗" for t in ALL_TABLES),
                     *(_cell(r, f"{d} {k}", r["seeds"]) for d in directions for k in KS),
                     *([_cell(r, "Act.Dis", r["seeds"])] if act_dis else []),
                     *(_cell(r, f"recognition {k}", r["seeds"]) for k in recognition)]
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    if any(r["A->I common R@1"] is not None for r in rows):
        out.append("A->I, I->A: each run scored with its own similarity, the one it trained with (random: "
                   "frame ceil(L/2)-1; nearest: max over frames; multiframe: flattened segments). "
                   "A->I common, I->A common: one protocol for every run, VIP-ANT's (one audio embedding, a "
                   "multiframe model's segment mean, against frame ceil(L/2)-1), so the columns compare "
                   "training methods rather than scoring rules.")
    if any(r["train_mix"] for r in rows):
        out.append("(+ dataset): trained on the mixture of the row's dataset and those named; retrieval is measured "
                   "on the row's dataset.")
    if any(r["Act.Dis"] is not None for r in rows):
        out.append("Act.Dis: DenseAV's head disentanglement over the evaluation clips of every training source, in % "
                   "(100: each head silent on a different source; 50: both heads respond to both alike).")
    if any(r["seeds"] > 1 for r in rows):
        out.append("mean ± sample standard deviation over seeds.")
    return "\n".join(out)


def _is_baseline(r: dict) -> bool:
    return r["loss"] == "infonce" and r["frames"] == "random"


def baseline_deltas(rows: list[dict]) -> list[dict]:
    """Each experiment that is not itself an InfoNCE random-frame run, against such a run of the same
    dataset, stage and model: the one sharing most tags, then with the nearest number of seeds,
    then first by name. The change in mean R@k, in points."""
    out = []
    for r in rows:
        if _is_baseline(r):
            continue
        candidates = [b for b in rows if _is_baseline(b) and (b["dataset"], b["stage"], b["model"]) ==
                      (r["dataset"], r["stage"], r["model"])]
        if not candidates:
            continue
        base = min(candidates, key=lambda b: (-len(set(b["tags"]) & set(r["tags"])), abs(b["seeds"] - r["seeds"]),
                                              b["experiment"]))
        delta = {"experiment": r["experiment"], "baseline": base["experiment"]}
        for d in DIRECTIONS:
            for k in KS:
                col = f"{d} {k}"
                if r[col] is not None and base[col] is not None:
                    delta[col] = r[col] - base[col]
        out.append(delta)
    return out


def deltas_markdown(deltas: list[dict]) -> str:
    lines = []
    for d in deltas:
        parts = [f"{c} {v:+.1f}" for c, v in d.items() if c not in ("experiment", "baseline")]
        lines.append(f"- {d['experiment']} vs {d['baseline']}: " + ", ".join(parts) + " (points)")
    return "\n".join(lines)


def report_plot(rows: list[dict]) -> bytes:
    """PNG: R@10 per experiment, one bar per direction measured, the chance level dashed."""
    directions = [d for d in DIRECTIONS if any(r[f"{d} R@10"] is not None for r in rows)]
    labels = [r["experiment"] for r in rows]
    fig, ax = subplots(figsize=(max(6, 0.9 * len(rows) + 2), 3.6), dpi=90)
    width = 0.8 / max(1, len(directions))
    x = np.arange(len(rows))
    for i, d in enumerate(directions):
        means = [r[f"{d} R@10"] or 0.0 for r in rows]
        stds = [r[f"{d} R@10 std"] or 0.0 for r in rows]
        ax.bar(x + (i - (len(directions) - 1) / 2) * width, means, width, yerr=stds, label=d, capsize=2)
    for i, r in enumerate(rows):
        ax.hlines(r["chance R@10"], i - 0.45, i + 0.45, colors="k", linestyles="dashed", linewidth=0.8)
    ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("R@10 (%)")
    ax.set_title("R@10 per experiment (dashed: chance)")
    ax.legend(fontsize=8)
    return figure_png(fig)


@dataclass
class WrittenReport:
    markdown: str  # the tables (one per dataset and stage)
    vs_baseline: str  # deltas_markdown; "" when no experiment has a baseline
    png: bytes  # report_plot
    experiments: int  # rows
    path: Path  # ablation.md; ablation.parquet and ablation.png lie next to it


def write_report(docs: list[dict], out_dir: Path) -> WrittenReport:
    """ablation.md (tables, deltas against the baseline, protocol), ablation.parquet and ablation.png
    in `out_dir`, each written atomically."""
    rows = report_rows(docs)
    md, deltas = markdown_report(rows), deltas_markdown(baseline_deltas(rows))
    png = report_plot(rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    text = md + ("\n\nAgainst the InfoNCE random-frame baseline:\n" + deltas if deltas else "") + \
        f"\n\nProtocol: {docs[0]['protocol']}\n"
    with atomic_path(out_dir / "ablation.md") as tmp:
        tmp.write_text(text)
    write_parquet_atomic(report_table(rows), out_dir / "ablation.parquet")
    with atomic_path(out_dir / "ablation.png") as tmp:
        tmp.write_bytes(png)
    return WrittenReport(md, deltas, png, len(rows), out_dir / "ablation.md")


# --- one experiment ---------------------------------------------------------------------------------

def curves_plot(runs: dict[int, dict]) -> bytes:
    """Training loss and the per-epoch validation R@10 of every seed."""
    fig, (ax_loss, ax_val) = subplots(1, 2, figsize=(8, 3), dpi=80)
    for seed, run in sorted(runs.items()):
        h = run["history"]
        epochs = [r["epoch"] + 1 for r in h]
        ax_loss.plot(epochs, [r["loss"] for r in h], marker=".", label=f"seed {seed}")
        val = [k for k in h[0] if k.startswith("val_") and k.endswith("R@10")]
        for k in val:
            ax_val.plot(epochs, [100 * r[k] for r in h], marker=".", label=f"seed {seed} {k[4:]}")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("training loss")
    ax_val.set_xlabel("epoch")
    ax_val.set_ylabel("validation R@10 (%)")
    for ax in (ax_loss, ax_val):
        ax.grid(alpha=0.3)
        if ax.lines:  # no validation curve when the experiment sets eval.val_size 0
            ax.legend(fontsize=7)
    return figure_png(fig)


def run_table(runs: dict[int, dict]) -> str:
    """Markdown: per seed, its epochs, final loss and temperature, throughput, data wait, last validation R@10."""
    lines = ["| seed | epochs | final loss | temperature | steps/s | data wait | val R@10 | seconds |", "|---|---|---|---|---|---|---|---|"]
    for seed, run in sorted(runs.items()):
        h = run["history"]
        val = [v for k, v in h[-1].items() if k.startswith("val_") and k.endswith("R@10")]
        lines.append(f"| {seed} | {len(h)} | {h[-1]['loss']:.4f} | {run['temperature']:.4f} | "
                     f"{np.mean([r['steps_per_s'] for r in h]):.2f} | {np.mean([r['data_wait_fraction'] for r in h]):.1%} | "
                     f"{'–' if not val else f'{100 * val[0]:.1f}%'} | {sum(r['seconds'] for r in h):.0f} |")
    return "\n".join(lines)


def encoder_summary(exp: Experiment, dataset: str, seeds: list[int], runs: dict[int, dict], trained: list[int]) -> dict:
    """The audio_encoder asset's metadata as plain values (`runs` and `curves` are markdown), from
    the seeds' run.json summaries; the train-set figures are the first seed's."""
    h0 = runs[seeds[0]]
    return {
        "experiment": exp.name, "dataset": dataset, "description": exp.description, "stage": exp.stage,
        "model": exp.model.kind, "frames": exp.frames.strategy, "loss": exp.loss.kind,
        "tables": sorted(exp.table_set), "seeds": seeds, "trained_now": trained,
        "skipped_up_to_date": [s for s in seeds if s not in trained],
        "train_clips": h0["train_clips"], "steps_per_epoch": h0["steps_per_epoch"],
        "neighbour_shortfall": h0.get("neighbour_shortfall") or {},
        "runs": run_table(runs),
        "curves": png_markdown(curves_plot(runs), "loss and validation recall per epoch"),
        "data_wait_fraction": float(np.mean([r["data_wait_fraction"] for run in runs.values() for r in run["history"]])),
        "batch_positives": batch_positive_means(runs),
    }


def batch_positive_means(runs: dict[int, dict]) -> dict[str, float]:
    """`assets.training.batch_stats`' figures, averaged over every epoch of every seed (those recorded)."""
    out = {}
    for key in ("mined_positive_share", "mined_positives_per_row", "same_key_share", "mined_precision"):
        values = [r[key] for run in runs.values() for r in run["history"] if r.get(key) is not None]
        if values:
            out[key] = round(float(np.mean(values)), 4)
    return out


def metrics_summary(doc: dict, skipped: bool, path: Path) -> dict:
    """The retrieval_metrics asset's metadata as plain values (`table` is markdown, `path` the
    metrics.json), with each direction's mean R@k in percent."""
    out = {
        "table": markdown_report(report_rows([doc])), "protocol": doc["protocol"],
        "audio_image_similarity": doc["eval"]["audio_image_similarity"] or "–",
        "eval_clips": doc["eval"]["clips"], "eval_split": doc["eval"]["split"], "seeds": doc["seeds"],
        "skipped_up_to_date": skipped, "path": str(path),
    }
    if doc.get("head_split"):
        out["head_split"] = head_split_markdown(doc["head_split"])
    for d, s in doc["summary"].items():
        for k in (*KS, *RECOGNITION):
            if k in s:
                out[f"{d} {k}"] = round(100 * s[k]["mean"], 2)
    return out


def below_chance(doc: dict) -> dict[str, float]:
    """{direction: mean R@10} of the directions whose mean R@10 is under 5x chance (10 / eval size)."""
    chance = doc["eval"]["chance_R@10"]
    return {d: s["R@10"]["mean"] for d, s in doc["summary"].items()
            if "R@10" in s and s["R@10"]["mean"] < 5 * chance[d]}
