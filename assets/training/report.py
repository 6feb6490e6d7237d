"""The ablation table over experiments, in seed 000's shape: one row per experiment, ✓/✗ per
neighbour table, R@1/5/10 in both directions (mean ± std over seeds, in percent).

Pure functions from the experiments' metrics documents (`assets.training.runs.metrics_document`)
to a flat table (Parquet), markdown (one table per dataset and stage) and a PNG chart; and the
comparison the demo reports: each experiment against its dataset's InfoNCE random-frame baseline.
"""

from __future__ import annotations


import numpy as np
import pyarrow as pa

from assets.training.experiments import ALL_TABLES
from assets.core.plots import figure_png, subplots

DIRECTIONS = ("A->I", "I->A", "A->T", "T->A")
KS = ("R@1", "R@5", "R@10")


def report_rows(docs: list[dict]) -> list[dict]:
    """One flat row per experiment: identity, ✓/✗ per table, and per direction and k the mean and std (percent)."""
    rows = []
    for d in sorted(docs, key=lambda d: (d["dataset"], d["stage"], d["experiment"])):
        row = {"experiment": d["experiment"], "dataset": d["dataset"], "stage": d["stage"], "model": d["model"],
               "frames": d["frames"] + (f" (n={d['nearest_start_epoch']})" if d.get("nearest_start_epoch") is not None else ""),
               "loss": d["loss"], "k": d["k"], "seeds": len(d["seeds"]), "eval_clips": d["eval"]["clips"],
               "description": d.get("description", ""), "tags": list(d.get("tags", []))}
        for t in ALL_TABLES:
            row[t] = t in d["tables"]
        for direction in DIRECTIONS:
            for k in (*KS, "median_rank"):
                s = d["summary"].get(direction, {}).get(k)
                scale = 1.0 if k == "median_rank" else 100.0
                row[f"{direction} {k}"] = None if s is None else s["mean"] * scale
                row[f"{direction} {k} std"] = None if s is None else s["std"] * scale
        row["chance R@10"] = 100.0 * max(d["eval"]["chance_R@10"].values())
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
        head = ["experiment", "frames", "k", *(t if t == "org" else t.upper() for t in ALL_TABLES),
                *(f"{d} {k}" for d in directions for k in KS)]
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "---|" * len(head))
        for r in group:
            cells = [r["experiment"], r["frames"], "–" if r["k"] is None else str(r["k"]),
                     *("✓" if r[t] else "✗" for t in ALL_TABLES),
                     *(_cell(r, f"{d} {k}", r["seeds"]) for d in directions for k in KS)]
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
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
