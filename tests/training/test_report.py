"""The ablation report (assets/training/report.py) and the seed summary it reads
(assets/training/runs.summarise_seeds), on metrics documents written by hand in the shape
`metrics_document` produces; the experiment assets' metadata (run table, curves, metrics
summary) on run.json summaries written by hand. Every expected number is computed by hand in
the comments."""

import math
import struct

import pyarrow.parquet as pq
import pytest

from assets.core.plots import png_markdown
from assets.training.experiments import Experiment, LossSpec
from assets.training.report import (baseline_deltas, batch_positive_means, below_chance, curves_plot, deltas_markdown,
                                    encoder_summary, markdown_report, metrics_summary, report_plot, report_rows,
                                    report_table, run_table, write_report)
from assets.training.runs import summarise_seeds


def _recall(r1, r5, r10, median, queries=200, chance_r1=0.005) -> dict:
    """One direction of `retrieval_report` for one seed (fractions), with its non-summary keys."""
    return {"R@1": r1, "R@5": r5, "R@10": r10, "median_rank": median, "queries": queries, "chance_R@1": chance_r1}


def _doc(experiment, per_seed, *, dataset="synthav_vggsound", stage="audio_image", model="audio_vit",
         frames="random", nearest_start_epoch=None, loss="infonce", tables=("org",), k=None, clips=200,
         chance_r10=None, description="") -> dict:
    """A metrics document as `metrics_document` writes it (the keys the report reads and a few more)."""
    first = next(iter(per_seed.values()))
    return {
        "experiment": experiment, "dataset": dataset, "description": description, "tags": ["demo"], "stage": stage,
        "model": model, "frames": frames, "nearest_start_epoch": nearest_start_epoch, "loss": loss,
        "tables": sorted(tables), "k": k, "seeds": sorted(per_seed),
        "fingerprints": {str(s): f"{s:016x}" for s in sorted(per_seed)},
        "eval": {"split": "test", "clips": clips, "seed": 0, "requested": 1000,
                 "queries": {d: first[d]["queries"] for d in first},
                 "chance_R@10": chance_r10 if chance_r10 is not None
                 else {d: min(1.0, 10 * first[d]["chance_R@1"]) for d in first},
                 "audio_image_similarity": "audio vs the middle frame" if stage == "audio_image" else None,
                 "text": None, "clip_ids_sha256": "0" * 16},
        "per_seed": {str(s): r for s, r in sorted(per_seed.items())},
        "summary": summarise_seeds(per_seed),
    }


# Two audio-image experiments on VGGSound (no text: A->T and T->A are not measured), two seeds each.
BASE_SEEDS = {
    0: {"A->I": _recall(0.12, 0.30, 0.50, 10.0), "I->A": _recall(0.10, 0.25, 0.40, 14.0)},
    1: {"A->I": _recall(0.13, 0.32, 0.52, 9.0), "I->A": _recall(0.10, 0.27, 0.44, 12.0)},
}
MINED_SEEDS = {
    0: {"A->I": _recall(0.15, 0.35, 0.55, 8.0), "I->A": _recall(0.11, 0.28, 0.45, 11.0)},
    1: {"A->I": _recall(0.16, 0.35, 0.60, 6.0), "I->A": _recall(0.12, 0.30, 0.47, 11.0)},
}
# A one-seed audio-text fine-tuning on Places: A->T and T->A only.
FT_SEEDS = {0: {"A->T": _recall(0.20, 0.45, 0.60, 7.0, 100, 0.012), "T->A": _recall(0.18, 0.40, 0.55, 9.0, 500, 0.01)}}


def base_doc():
    return _doc("base_infonce", BASE_SEEDS)


def mined_doc():
    return _doc("mined_t2t_i2t", MINED_SEEDS, loss="mined", tables=("org", "t2t", "i2t"), k=10)


def ft_doc():
    return _doc("places_ft", FT_SEEDS, dataset="synthav_places", stage="audio_text", clips=100)


# --- summarise_seeds --------------------------------------------------------------------------

def test_summarise_two_seeds():
    s = summarise_seeds(BASE_SEEDS)
    assert sorted(s) == ["A->I", "I->A"]
    assert sorted(s["A->I"]) == ["R@1", "R@10", "R@5", "median_rank"]  # not queries / chance_R@1
    # A->I R@1: values 0.12, 0.13; mean 0.125; sample std |0.13 - 0.12| / sqrt(2) = 0.0070711
    r1 = s["A->I"]["R@1"]
    assert r1["values"] == [0.12, 0.13]
    assert r1["mean"] == pytest.approx(0.125)
    assert r1["std"] == pytest.approx(0.01 / math.sqrt(2))
    # I->A R@10: 0.40, 0.44 -> mean 0.42, std 0.04 / sqrt(2) = 0.0282843
    assert s["I->A"]["R@10"]["mean"] == pytest.approx(0.42)
    assert s["I->A"]["R@10"]["std"] == pytest.approx(0.0282843, abs=1e-7)
    # I->A R@1: equal values -> std 0
    assert s["I->A"]["R@1"] == {"mean": pytest.approx(0.10), "std": 0.0, "values": [0.10, 0.10]}
    # median rank: 10, 9 -> 9.5 ± 0.7071068
    assert s["A->I"]["median_rank"]["mean"] == 9.5
    assert s["A->I"]["median_rank"]["std"] == pytest.approx(0.7071068, abs=1e-7)


def test_summarise_three_seeds_uses_the_sample_std():
    per_seed = {
        2: {"A->I": _recall(0.60, 0.7, 0.9, 10.0)},
        0: {"A->I": _recall(0.40, 0.7, 0.9, 3.0)},
        1: {"A->I": _recall(0.50, 0.7, 0.9, 5.0)},
    }
    s = summarise_seeds(per_seed)["A->I"]
    # R@1 in seed order 0.4, 0.5, 0.6: mean 0.5; squared deviations 0.01 + 0 + 0.01 = 0.02; / (3 - 1) -> std 0.1
    # (the population std would be sqrt(0.02 / 3) = 0.0816)
    assert s["R@1"]["values"] == [0.40, 0.50, 0.60]
    assert s["R@1"]["mean"] == pytest.approx(0.5)
    assert s["R@1"]["std"] == pytest.approx(0.1)
    # median rank 3, 5, 10: mean 6; deviations -3, -1, 4 -> 26 / 2 = 13 -> std sqrt(13) = 3.6055513
    assert s["median_rank"]["values"] == [3.0, 5.0, 10.0]
    assert s["median_rank"]["mean"] == 6.0
    assert s["median_rank"]["std"] == pytest.approx(3.6055513, abs=1e-7)
    # equal values: std 0 (up to rounding: np.mean of three 0.7 is 0.7 - 1 ulp)
    assert s["R@5"]["std"] == pytest.approx(0.0, abs=1e-12) and s["R@5"]["mean"] == pytest.approx(0.7)


def test_summarise_one_seed_has_std_zero():
    s = summarise_seeds(FT_SEEDS)
    assert sorted(s) == ["A->T", "T->A"]
    assert s["T->A"]["R@10"] == {"mean": 0.55, "std": 0.0, "values": [0.55]}
    assert s["A->T"]["median_rank"] == {"mean": 7.0, "std": 0.0, "values": [7.0]}


# --- report_rows ------------------------------------------------------------------------------

def test_report_row_percent_and_flags():
    summary = {"A->I": {"R@1": {"mean": 0.25, "std": 0.015, "values": [0.24, 0.26]},
                        "R@5": {"mean": 0.5, "std": 0.0, "values": [0.5, 0.5]},
                        "R@10": {"mean": 0.75, "std": 0.125, "values": [0.66, 0.84]},
                        "median_rank": {"mean": 4.0, "std": 1.5, "values": [3.0, 5.0]}}}
    doc = {"experiment": "g_nearest", "dataset": "places", "description": "row G, nearest", "tags": [],
           "stage": "audio_image", "model": "davenet", "frames": "nearest", "nearest_start_epoch": 3,
           "loss": "mined", "tables": ["i2t", "org", "t2t"], "k": 10, "seeds": [0, 1],
           "eval": {"clips": 500, "chance_R@10": {"A->I": 0.02, "I->A": 0.04}}, "summary": summary}
    [row] = report_rows([doc])
    assert {k: row[k] for k in ("experiment", "dataset", "stage", "model", "frames", "loss", "k", "seeds",
                                "eval_clips", "description")} == {
        "experiment": "g_nearest", "dataset": "places", "stage": "audio_image", "model": "davenet",
        "frames": "nearest (n=3)", "loss": "mined", "k": 10, "seeds": 2, "eval_clips": 500,
        "description": "row G, nearest"}
    assert {t: row[t] for t in ("org", "t2t", "t2i", "i2t", "i2i")} == {
        "org": True, "t2t": True, "t2i": False, "i2t": True, "i2i": False}
    assert row["A->I R@1"] == 25.0 and row["A->I R@1 std"] == 1.5
    assert row["A->I R@5"] == 50.0 and row["A->I R@5 std"] == 0.0
    assert row["A->I R@10"] == 75.0 and row["A->I R@10 std"] == 12.5
    assert row["A->I median_rank"] == 4.0 and row["A->I median_rank std"] == 1.5  # a rank, not a fraction
    for d in ("I->A", "A->I common", "I->A common", "A->T", "T->A"):  # not in the summary
        for k in ("R@1", "R@5", "R@10", "median_rank"):
            assert row[f"{d} {k}"] is None and row[f"{d} {k} std"] is None
    assert row["chance R@10"] == 4.0  # 100 x the larger of 0.02 and 0.04
    # identity (with mode and train_mix), 6 tables (with oracle), 6 directions, chance, recognition top1 and mAP
    # with their std, Act.Dis and its std
    assert len(row) == 13 + 6 + 6 * 4 * 2 + 1 + 4 + 2 and row["tags"] == [] and row["train_mix"] == []
    assert row["recognition top1"] is None
    assert row["Act.Dis"] is None


def test_report_rows_flags_from_metrics_documents_and_order():
    rows = report_rows([mined_doc(), ft_doc(), base_doc()])
    # sorted by dataset, stage, experiment
    assert [r["experiment"] for r in rows] == ["places_ft", "base_infonce", "mined_t2t_i2t"]
    flags = {r["experiment"]: tuple(r[t] for t in ("org", "t2t", "t2i", "i2t", "i2i")) for r in rows}
    assert flags == {"places_ft": (True, False, False, False, False),
                     "base_infonce": (True, False, False, False, False),
                     "mined_t2t_i2t": (True, True, False, True, False)}
    ft, base, mined = rows
    assert base["frames"] == "random" and base["k"] is None and mined["k"] == 10
    # base A->I R@1 mean 0.125 -> 12.5 %, std 0.0070711 -> 0.70711 points
    assert base["A->I R@1"] == pytest.approx(12.5) and base["A->I R@1 std"] == pytest.approx(0.70711, abs=1e-5)
    # mined A->I R@10: 0.55, 0.60 -> 57.5 ± 3.53553
    assert mined["A->I R@10"] == pytest.approx(57.5) and mined["A->I R@10 std"] == pytest.approx(3.53553, abs=1e-5)
    assert base["A->I median_rank"] == 9.5
    assert base["A->T R@1"] is None and ft["A->I R@1"] is None
    assert ft["T->A R@10"] == pytest.approx(55.0) and ft["T->A R@10 std"] == 0.0 and ft["seeds"] == 1
    # chance: 10 x chance_R@1 per direction, the larger one, in %: 10 x 0.005 -> 5 %; 10 x 0.012 -> 12 %
    assert base["chance R@10"] == pytest.approx(5.0) and ft["chance R@10"] == pytest.approx(12.0)
    assert ft["eval_clips"] == 100 and base["eval_clips"] == 200


# --- markdown_report ----------------------------------------------------------------------------

def test_markdown_report_exact():
    md = markdown_report(report_rows([base_doc(), mined_doc(), ft_doc()]))
    # base:  A->I R@1 0.12/0.13 -> 12.5 ± 0.7; R@5 0.30/0.32 -> 31.0 ± 1.4; R@10 0.50/0.52 -> 51.0 ± 1.4
    #        I->A R@1 0.10/0.10 -> 10.0 ± 0.0; R@5 0.25/0.27 -> 26.0 ± 1.4; R@10 0.40/0.44 -> 42.0 ± 2.8
    # mined: A->I 0.15/0.16 -> 15.5 ± 0.7; 0.35/0.35 -> 35.0 ± 0.0; 0.55/0.60 -> 57.5 ± 3.5
    #        I->A 0.11/0.12 -> 11.5 ± 0.7; 0.28/0.30 -> 29.0 ± 1.4; 0.45/0.47 -> 46.0 ± 1.4
    # ft (one seed): no ± at all
    expected = "\n".join([
        "### synthav_places (audio-text), 100 evaluation clips, R@k in %, chance R@10 12.0",
        "| experiment | frames | mode | k | org | T2T | T2I | I2T | I2I | ORACLE | A->T R@1 | A->T R@5 | A->T R@10 | "
        "T->A R@1 | T->A R@5 | T->A R@10 |",
        "|" + "---|" * 16,
        "| places_ft | random | – | – | ✓ | ✗ | ✗ | ✗ | ✗ | ✗ | 20.0 | 45.0 | 60.0 | 18.0 | 40.0 | 55.0 |",
        "",
        "### synthav_vggsound (audio-image), 200 evaluation clips, R@k in %, chance R@10 5.0",
        "| experiment | frames | mode | k | org | T2T | T2I | I2T | I2I | ORACLE | A->I R@1 | A->I R@5 | A->I R@10 | "
        "I->A R@1 | I->A R@5 | I->A R@10 |",
        "|" + "---|" * 16,
        "| base_infonce | random | – | – | ✓ | ✗ | ✗ | ✗ | ✗ | ✗ | 12.5 ± 0.7 | 31.0 ± 1.4 | 51.0 ± 1.4 | "
        "10.0 ± 0.0 | 26.0 ± 1.4 | 42.0 ± 2.8 |",
        "| mined_t2t_i2t | random | – | 10 | ✓ | ✓ | ✗ | ✓ | ✗ | ✗ | 15.5 ± 0.7 | 35.0 ± 0.0 | 57.5 ± 3.5 | "
        "11.5 ± 0.7 | 29.0 ± 1.4 | 46.0 ± 1.4 |",
        "",
        "mean ± sample standard deviation over seeds.",
    ])
    assert md == expected


def test_markdown_one_table_per_dataset_and_stage_without_std_for_single_seeds():
    one_seed = {0: BASE_SEEDS[0]}
    docs = [_doc("a_inf", one_seed), _doc("b_near", one_seed, frames="nearest", nearest_start_epoch=2),
            _doc("c_text", FT_SEEDS, stage="audio_text"),  # same dataset, other stage: its own table
            _doc("d_places", one_seed, dataset="synthav_places")]
    md = markdown_report(report_rows(docs))
    headings = [line for line in md.splitlines() if line.startswith("### ")]
    assert [h.split(",")[0] for h in headings] == ["### synthav_places (audio-image)",
                                                  "### synthav_vggsound (audio-image)",
                                                  "### synthav_vggsound (audio-text)"]
    assert "±" not in md  # every experiment has one seed: plain means, no footnote
    lines = md.splitlines()
    assert "| a_inf | random | – | – | ✓ | ✗ | ✗ | ✗ | ✗ | ✗ | 12.0 | 30.0 | 50.0 | 10.0 | 25.0 | 40.0 |" in lines
    assert "| b_near | nearest (n=2) | – | – | ✓ | ✗ | ✗ | ✗ | ✗ | ✗ | 12.0 | 30.0 | 50.0 | 10.0 | 25.0 | 40.0 |" in lines
    # the audio-image tables have no A->T / T->A columns, the audio-text one no A->I / I->A columns
    for i, h in enumerate(headings):
        header = lines[lines.index(h) + 1]
        if "audio-text" in h:
            assert "A->T R@1" in header and "A->I" not in header and "I->A" not in header
        else:
            assert "A->I R@1" in header and "A->T" not in header and "T->A" not in header


def test_markdown_missing_value_in_a_measured_direction_is_a_dash():
    # places measures text for one experiment but not the other: the column exists, the other row shows "–"
    with_text = _doc("with_text", {0: {**BASE_SEEDS[0], **FT_SEEDS[0]}}, dataset="synthav_places")
    without = _doc("without", {0: BASE_SEEDS[0]}, dataset="synthav_places")
    md = markdown_report(report_rows([with_text, without]))
    row = next(line for line in md.splitlines() if line.startswith("| without "))
    assert row == "| without | random | – | – | ✓ | ✗ | ✗ | ✗ | ✗ | ✗ | 12.0 | 30.0 | 50.0 | 10.0 | 25.0 | 40.0 | " \
                  "– | – | – | – | – | – |"


# --- baseline_deltas ------------------------------------------------------------------------------

def test_baseline_deltas_in_points():
    one_seed = {0: BASE_SEEDS[0]}
    docs = [base_doc(), mined_doc(), ft_doc(),
            _doc("nearest_n2", {0: MINED_SEEDS[1]}, frames="nearest", nearest_start_epoch=2),
            _doc("zz_infonce_again", one_seed),  # a second InfoNCE random row: a baseline, not compared
            _doc("davenet_mined", one_seed, model="davenet", loss="mined", tables=("org", "t2t"), k=5),  # no davenet baseline
            _doc("other_dataset_mined", one_seed, dataset="synthav_other", loss="mined", tables=("org", "i2i"), k=3)]
    deltas = baseline_deltas(report_rows(docs))
    # places_ft, base_infonce and zz_infonce_again are baselines; davenet_mined and other_dataset_mined have none.
    # mined (two seeds) and nearest (one seed) share all tags with both baselines: the nearest seed count decides
    assert [(d["experiment"], d["baseline"]) for d in deltas] == [
        ("mined_t2t_i2t", "base_infonce"), ("nearest_n2", "zz_infonce_again")]
    by_name = {d["experiment"]: d for d in deltas}
    cols = ["A->I R@1", "A->I R@5", "A->I R@10", "I->A R@1", "I->A R@5", "I->A R@10"]
    # base means (%): A->I 12.5, 31, 51; I->A 10, 26, 42
    # mined means:    A->I 15.5, 35, 57.5; I->A 11.5, 29, 46
    expected = {"mined_t2t_i2t": [3.0, 4.0, 6.5, 1.5, 3.0, 4.0],
                # nearest_n2 is seed 1 of MINED: A->I 16, 35, 60; I->A 12, 30, 47, against
                # zz_infonce_again, seed 0 of BASE: A->I 12, 30, 50; I->A 10, 25, 40
                "nearest_n2": [4.0, 5.0, 10.0, 2.0, 5.0, 7.0]}
    for name, values in expected.items():
        d = by_name[name]
        assert sorted(d) == sorted(["experiment", "baseline", *cols])  # no A->T / T->A: not measured
        assert [d[c] for c in cols] == pytest.approx(values, abs=1e-9)
    text = deltas_markdown(deltas)
    assert text.splitlines()[0] == ("- mined_t2t_i2t vs base_infonce: A->I R@1 +3.0, A->I R@5 +4.0, A->I R@10 +6.5, "
                                    "I->A R@1 +1.5, I->A R@5 +3.0, I->A R@10 +4.0 (points)")
    assert text.splitlines()[1].startswith("- nearest_n2 vs zz_infonce_again: A->I R@1 +4.0,")


def test_baseline_sharing_tags_is_preferred():
    one_seed = {0: BASE_SEEDS[0]}
    demo_base, paper_base = _doc("a_demo_base", one_seed), _doc("b_paper_base", one_seed)
    paper_mined = _doc("paper_mined", one_seed, loss="mined", tables=("org", "t2t"), k=10)
    paper_base["tags"] = paper_mined["tags"] = ["paper"]
    deltas = baseline_deltas(report_rows([demo_base, paper_base, paper_mined]))
    assert [(d["experiment"], d["baseline"]) for d in deltas] == [("paper_mined", "b_paper_base")]


def test_baseline_deltas_without_any_baseline_is_empty():
    assert baseline_deltas(report_rows([mined_doc()])) == []
    assert baseline_deltas(report_rows([base_doc()])) == []


# --- report_plot and report_table -----------------------------------------------------------------

def _png_size(png: bytes) -> tuple[int, int]:
    assert png[12:16] == b"IHDR"
    return struct.unpack(">II", png[16:24])


def test_report_plot_is_a_png_of_the_expected_size():
    png = report_plot(report_rows([base_doc(), mined_doc(), ft_doc()]))
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    # 3 rows: figure max(6, 0.9 * 3 + 2) x 3.6 inches at 90 dpi -> 540 x 324 pixels
    assert _png_size(png) == (540, 324)
    one_seed = {0: BASE_SEEDS[0]}
    many = report_rows([_doc(f"e{i}", one_seed) for i in range(8)])
    # 8 rows: 0.9 * 8 + 2 = 9.2 inches -> 828 pixels wide
    assert _png_size(report_plot(many)) == (828, 324)


def test_report_table_round_trips_through_parquet(tmp_path):
    rows = report_rows([base_doc(), mined_doc(), ft_doc(),
                        _doc("near", {0: BASE_SEEDS[0]}, frames="nearest", nearest_start_epoch=0)])
    table = report_table(rows)
    assert table.num_rows == 4 and table.column_names == list(rows[0])
    path = tmp_path / "ablation.parquet"
    pq.write_table(table, path)
    back = pq.read_table(path)
    assert back.column_names == list(rows[0])
    assert back.to_pylist() == rows  # floats, None, bools and strings all come back unchanged
    # rows: places_ft, then VGGSound's base_infonce, mined_t2t_i2t, near (by name)
    assert back.column("experiment").to_pylist() == ["places_ft", "base_infonce", "mined_t2t_i2t", "near"]
    assert back.column("frames").to_pylist() == ["random", "random", "random", "nearest (n=0)"]
    assert back.column("t2t").to_pylist() == [False, False, True, False]
    assert back.column("k").to_pylist() == [None, None, 10, None]
    assert back.column("A->I R@1").to_pylist()[0] is None  # places_ft measures text only
    assert back.column("A->I R@1").to_pylist()[1] == pytest.approx(12.5)


# --- write_report -----------------------------------------------------------------------------------

def test_write_report_writes_markdown_parquet_and_png(tmp_path):
    docs = [{**d, "protocol": "best rank, ties against"} for d in (base_doc(), mined_doc(), ft_doc())]
    out = tmp_path / "reports" / "new"  # made on the way
    report = write_report(docs, out)
    rows = report_rows(docs)
    assert report.path == out / "ablation.md" and report.experiments == 3
    assert sorted(p.name for p in out.iterdir()) == ["ablation.md", "ablation.parquet", "ablation.png"]  # no temp files
    assert report.markdown == markdown_report(rows)
    assert report.vs_baseline == "- mined_t2t_i2t vs base_infonce: A->I R@1 +3.0, A->I R@5 +4.0, A->I R@10 +6.5, " \
                                 "I->A R@1 +1.5, I->A R@5 +3.0, I->A R@10 +4.0 (points)"
    assert (out / "ablation.md").read_text() == (report.markdown + "\n\nAgainst the InfoNCE random-frame baseline:\n"
                                                 + report.vs_baseline + "\n\nProtocol: best rank, ties against\n")
    assert pq.read_table(out / "ablation.parquet").to_pylist() == rows
    assert (out / "ablation.png").read_bytes() == report.png and _png_size(report.png) == (540, 324)


def test_write_report_without_a_baseline_has_no_comparison(tmp_path):
    report = write_report([{**mined_doc(), "protocol": "P"}], tmp_path)
    assert report.vs_baseline == "" and report.experiments == 1
    assert (tmp_path / "ablation.md").read_text() == report.markdown + "\n\nProtocol: P\n"


# --- the audio_encoder and retrieval_metrics metadata -----------------------------------------------

def _epoch(epoch, loss, steps_per_s, wait, seconds, val=None) -> dict:
    """One row of a run.json history (the keys the summary reads)."""
    return {"epoch": epoch, "loss": loss, "steps_per_s": steps_per_s, "data_wait_fraction": wait, "seconds": seconds,
            **({} if val is None else {"val_A->I R@10": val})}


RUNS = {
    1: {"history": [_epoch(0, 3.0, 8.0, 0.5, 10.4)], "temperature": 0.05, "train_clips": 99, "steps_per_epoch": 9},
    0: {"history": [_epoch(0, 2.0, 10.0, 0.1, 30.0, 0.25), _epoch(1, 1.5, 12.0, 0.3, 31.0, 0.5)],
        "temperature": 0.07, "train_clips": 40, "steps_per_epoch": 5, "neighbour_shortfall": {"t2t": 2}},
}


def test_run_table_exact():
    assert run_table(RUNS).splitlines() == [
        "| seed | epochs | final loss | temperature | steps/s | data wait | val R@10 | seconds |",
        "|---|---|---|---|---|---|---|---|",
        # seed 0: steps/s mean (10 + 12) / 2 = 11; wait (0.1 + 0.3) / 2 = 20 %; last val R@10 0.5; 30 + 31 s
        "| 0 | 2 | 1.5000 | 0.0700 | 11.00 | 20.0% | 50.0% | 61 |",
        # seed 1: no validation column: a dash; 10.4 s rounds to 10
        "| 1 | 1 | 3.0000 | 0.0500 | 8.00 | 50.0% | – | 10 |",
    ]


def test_encoder_summary_values():
    exp = Experiment(name="m", dataset="ds", description="mined t2t", loss=LossSpec(kind="mined", tables=("t2t",), k=5),
                     seeds=(0, 1))
    s = encoder_summary(exp, "ds", [0, 1], RUNS, [1])
    assert list(s) == ["experiment", "dataset", "description", "stage", "model", "frames", "loss", "tables", "seeds",
                       "trained_now", "skipped_up_to_date", "train_clips", "steps_per_epoch", "neighbour_shortfall",
                       "runs", "curves", "data_wait_fraction", "batch_positives"]
    assert {k: s[k] for k in ("experiment", "dataset", "description", "stage", "model", "frames", "loss", "tables",
                              "seeds", "trained_now", "skipped_up_to_date")} == {
        "experiment": "m", "dataset": "ds", "description": "mined t2t", "stage": "audio_image", "model": "audio_vit",
        "frames": "random", "loss": "mined", "tables": ["org", "t2t"], "seeds": [0, 1], "trained_now": [1],
        "skipped_up_to_date": [0]}
    # the first seed's train-set figures; seed 1's run.json has no shortfall: {}
    assert (s["train_clips"], s["steps_per_epoch"], s["neighbour_shortfall"]) == (40, 5, {"t2t": 2})
    assert encoder_summary(exp, "ds", [1], RUNS, [])["neighbour_shortfall"] == {}
    assert s["runs"] == run_table(RUNS)
    # every epoch of every seed: (0.1 + 0.3 + 0.5) / 3 = 0.3
    assert s["data_wait_fraction"] == pytest.approx(0.3)
    assert s["curves"].startswith("![loss and validation recall per epoch](data:image/png;base64,")


def test_curves_plot_is_a_png_of_the_expected_size():
    png = curves_plot(RUNS)
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and _png_size(png) == (640, 240)  # 8 x 3 inches at 80 dpi
    assert png_markdown(png, "a").startswith("![a](data:image/png;base64,iVBOR")


def test_metrics_summary_and_below_chance():
    doc = {**base_doc(), "protocol": "P"}
    s = metrics_summary(doc, True, "/c/experiments/base_infonce/metrics.json")
    assert s == {"table": markdown_report(report_rows([doc])), "protocol": "P",
                 "audio_image_similarity": "audio vs the middle frame", "eval_clips": 200, "eval_split": "test",
                 "seeds": [0, 1], "skipped_up_to_date": True, "path": "/c/experiments/base_infonce/metrics.json",
                 # means in %, rounded to 2 places: A->I 12.5, 31, 51; I->A 10, 26, 42
                 "A->I R@1": 12.5, "A->I R@5": 31.0, "A->I R@10": 51.0,
                 "I->A R@1": 10.0, "I->A R@5": 26.0, "I->A R@10": 42.0}
    assert metrics_summary(ft_doc() | {"protocol": "P"}, False, "p")["audio_image_similarity"] == "–"
    # chance R@10 is 10 x 0.005 = 0.05 in both directions: 5x chance is 0.25, and the means 0.51 and 0.42 are above
    assert below_chance(doc) == {}
    doc["eval"]["chance_R@10"] = {"A->I": 0.11, "I->A": 0.05}  # 5x: 0.55 > 0.51 (A->I below); 0.25 < 0.42
    assert below_chance(doc) == {"A->I": pytest.approx(0.51)}


def test_batch_positive_means_over_every_epoch_of_every_seed():
    runs = {0: {"history": [{"mined_positive_share": 0.5, "mined_positives_per_row": 1.0, "same_key_share": 0.4,
                             "mined_precision": None},
                            {"mined_positive_share": 0.7, "mined_positives_per_row": 2.0, "same_key_share": 0.2,
                             "mined_precision": 0.9}]},
            1: {"history": [{"mined_positive_share": 0.9, "mined_positives_per_row": 3.0}]}}  # no keys
    assert batch_positive_means(runs) == {"mined_positive_share": 0.7, "mined_positives_per_row": 2.0,
                                          "same_key_share": 0.3, "mined_precision": 0.9}  # None: an epoch with no pair
    assert batch_positive_means(RUNS) == {}  # runs recorded before the statistics existed


def test_common_protocol_columns_and_their_legend():
    """Runs scored under both protocols get `A->I common` / `I->A common` columns and one legend line saying
    which is which; the per-clip Nearest Match rule shows in the frames column."""
    seeds = {0: BASE_SEEDS[0] | {"A->I common": _recall(0.08, 0.2, 0.3, 20.0), "I->A common": _recall(0.07, 0.2, 0.3, 21.0)}}
    doc = _doc("near", seeds, frames="nearest", nearest_start_epoch=2) | {"nearest_rule": "per_clip"}
    md = markdown_report(report_rows([doc]))
    assert "| A->I common R@1 | A->I common R@5 | A->I common R@10 | I->A common R@1 |" in md
    assert "| near | nearest (n=2, per clip) | – | – | ✓ | ✗ | ✗ | ✗ | ✗ | ✗ | 12.0 | 30.0 | 50.0 | 10.0 | 25.0 | 40.0 | " \
           "8.0 | 20.0 | 30.0 | 7.0 | 20.0 | 30.0 |" in md.splitlines()
    assert sum("A->I common, I->A common: one protocol for every run" in line for line in md.splitlines()) == 1
    assert "common" not in markdown_report(report_rows([base_doc()]))  # no such columns, no legend
