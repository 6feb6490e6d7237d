"""Parsers on hand-written samples of each real format, quirks included."""

import json
from pathlib import Path

import pytest

from assets.ingest.dataset_config import DatasetConfigError, MetadataFile, load_dataset_config, parse_dataset_config
from assets.ingest.dataset_formats import (MetadataFormatError, parse_audiocaps, parse_audioset, parse_audioset_labels,
                                           parse_metadata, parse_places, parse_vggsound)

AUDIOSET_CSV = """\
# Segments csv created Sun Mar  5 10:54:31 2017
# num_ytids=3, num_segs=3, num_unique_labels=3, num_positive_labels=4
# YTID, start_seconds, end_seconds, positive_labels
--PJHxphWEs, 30.000, 40.000, "/m/09x0r,/t/dd00088"
--ZhevVpy1s, 50.000, 60.000, "/m/012xff"
--aE2O5G5WE, 0.000, 10.000, "/m/03fwl"
"""

LABELS_CSV = """\
index,mid,display_name
0,/m/09x0r,"Speech"
1,/t/dd00088,"Gush"
2,/m/012xff,"Male speech, man speaking"
"""


def config(root: Path, fmt: str, **extra) -> object:
    raw = {"name": "t", "format": fmt, "root": str(root), "metadata": [{"path": "meta", "split": "x"}], **extra}
    return parse_dataset_config(raw, root / "t.yaml")


def test_audioset_header_lines_quoted_labels_and_label_names(tmp_path):
    (tmp_path / "eval_segments.csv").write_text(AUDIOSET_CSV)
    (tmp_path / "labels.csv").write_text(LABELS_CSV)
    ds = config(tmp_path, "audioset")
    names = parse_audioset_labels(tmp_path / "labels.csv")
    assert names["/m/012xff"] == "Male speech, man speaking"
    rows = list(parse_audioset(ds, MetadataFile("eval_segments.csv", "eval", "eval"), names))
    assert [r.clip_id for r in rows] == ["--PJHxphWEs_30000", "--ZhevVpy1s_50000", "--aE2O5G5WE_0"]
    first = rows[0]
    assert first.labels == ["/m/09x0r", "/t/dd00088"]
    assert first.label_names == ["Speech", "Gush"]
    assert (first.start_s, first.end_s) == (30.0, 40.0)
    assert first.media_path == "eval/Y--PJHxphWEs.mp4"
    assert first.source == "eval_segments.csv:4"
    assert rows[2].labels == ["/m/03fwl"] and rows[2].label_names == ["/m/03fwl"]  # unknown mid kept as is


def test_audioset_malformed_line_recorded_or_raised_with_file_and_line(tmp_path):
    text = AUDIOSET_CSV + "--bad_row01, thirty, 40.000, \"/m/09x0r\"\n--short0001, 30.000\n"
    (tmp_path / "seg.csv").write_text(text)
    ds = config(tmp_path, "audioset")
    rows = list(parse_audioset(ds, MetadataFile("seg.csv", "eval"), {}))
    bad = [r for r in rows if r.problem]
    assert [r.source for r in bad] == ["seg.csv:7", "seg.csv:8"]
    assert "bad start/end seconds" in bad[0].problem and "'thirty'" in bad[0].problem
    assert "expected 4 fields" in bad[1].problem and "got 2" in bad[1].problem
    with pytest.raises(MetadataFormatError, match=r"^seg\.csv:7: bad start/end seconds"):
        list(parse_audioset(ds, MetadataFile("seg.csv", "eval"), {}, strict=True))


def test_vggsound_no_header_quoted_label_with_comma_and_split_column(tmp_path):
    (tmp_path / "vggsound.csv").write_text(
        '---g-f_I2yQ,1,people marching,test\n'
        '--0PQM4-hqg,30,"bird chirping, tweeting",train\n'
        '\n'
        '--56QUhyDQM,185,playing tennis\n')
    ds = config(tmp_path, "vggsound", metadata=["vggsound.csv"])
    rows = list(parse_vggsound(ds, ds.metadata[0]))
    assert [(r.clip_id, r.split, r.labels) for r in rows[:2]] == [
        ("---g-f_I2yQ_000001", "test", ["people marching"]),
        ("--0PQM4-hqg_000030", "train", ["bird chirping, tweeting"]),
    ]
    assert rows[1].media_path == "video/--0PQM4-hqg_000030.mp4"
    assert rows[2].problem == "vggsound.csv:4: expected 4 fields (ytid, start_seconds, label, split), got 3"


def test_audiocaps_groups_five_test_captions_per_clip(tmp_path):
    lines = ["audiocap_id,youtube_id,start_time,caption"]
    lines += [f'{103 + k},--0w1YA1Hm4,30,"A vehicle, then a man speaks ({k})"' for k in range(5)]
    lines += ["200,-AheI8Epim4,0,Wind blows", "201,-AheI8Epim4"]
    (tmp_path / "test.csv").write_text("\n".join(lines) + "\n")
    ds = config(tmp_path, "audiocaps")
    rows = list(parse_audiocaps(ds, MetadataFile("test.csv", "test", "audio/test")))
    good = [r for r in rows if not r.problem]
    assert [r.clip_id for r in good] == ["--0w1YA1Hm4_30000", "-AheI8Epim4_0"]
    assert good[0].captions == [f"A vehicle, then a man speaks ({k})" for k in range(5)]
    assert good[0].caption_ids == ["103", "104", "105", "106", "107"]
    assert good[0].media_path == "audio/test/Y--0w1YA1Hm4.wav"
    assert good[1].captions == ["Wind blows"]
    assert [r.problem for r in rows if r.problem] == [
        "test.csv:8: expected 4 fields (audiocap_id, youtube_id, start_time, caption), got 2"]


def test_audiocaps_wrong_header_names_file(tmp_path):
    (tmp_path / "train.csv").write_text("id,ytid,start,caption\n1,abc,0,x\n")
    with pytest.raises(MetadataFormatError, match=r"train\.csv:1: expected header"):
        list(parse_audiocaps(config(tmp_path, "audiocaps"), MetadataFile("train.csv", "train")))


def test_places_json_base_paths_and_bad_entries(tmp_path):
    doc = {"image_base_path": "images", "audio_base_path": "PlacesAudio",
           "data": [{"uttid": "A1-GSUN_1", "speaker": "A1", "asr_text": "a red barn", "wav": "wavs/1/u1.wav",
                     "image": "b/barn/gsun_1.jpg"},
                    {"wav": "wavs/1/u2.wav", "image": "b/barn/gsun_2.jpg"},
                    {"speaker": "A2", "image": "c/x.jpg"}]}
    (tmp_path / "train.json").write_text(json.dumps(doc))
    ds = config(tmp_path, "places")
    rows = list(parse_places(ds, MetadataFile("train.json", "train")))
    assert (rows[0].clip_id, rows[0].media_path, rows[0].image_path, rows[0].captions) == (
        "A1-GSUN_1", "PlacesAudio/wavs/1/u1.wav", "images/b/barn/gsun_1.jpg", ["a red barn"])
    assert rows[1].clip_id == "u2" and rows[1].captions == []
    assert rows[2].problem == "train.json:data[2]: entry lacks wav"
    # A config override replaces the authors' absolute base paths.
    ds2 = config(tmp_path, "places", audio_base_path="audio")
    assert next(parse_places(ds2, MetadataFile("train.json", "train"))).media_path == "audio/wavs/1/u1.wav"


def test_places_invalid_json_names_file_and_line(tmp_path):
    (tmp_path / "val.json").write_text('{"data": [\n{"wav": "a.wav",\n}')
    with pytest.raises(MetadataFormatError, match=r"val\.json:3: not valid JSON"):
        list(parse_places(config(tmp_path, "places"), MetadataFile("val.json", "val")))


def test_dataset_config_errors_name_file_and_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nformat: webdataset\nroot: .\nmetadata: [a.csv]\n")
    with pytest.raises(DatasetConfigError, match=r"bad\.yaml: format 'webdataset' is not one of"):
        load_dataset_config(bad)
    bad.write_text("name: x\nformat: audioset\nroot: .\nmetadata: [a.csv]\n")
    with pytest.raises(DatasetConfigError, match=r"needs a 'split'"):
        load_dataset_config(bad)
    bad.write_text("name: x\nformat: vggsound\nroot: data\nmetadata: [a.csv]\nshard_sise: 3\n")
    with pytest.raises(DatasetConfigError, match=r"unknown field\(s\) \['shard_sise'\]"):
        load_dataset_config(bad)


def test_relative_root_resolves_against_the_yaml(tmp_path):
    (tmp_path / "cfg").mkdir()
    path = tmp_path / "cfg" / "v.yaml"
    path.write_text("name: v\nformat: vggsound\nroot: ../data/v\nmetadata: [vggsound.csv]\n")
    assert load_dataset_config(path).root == tmp_path / "data" / "v"


def test_parse_metadata_on_generated_formats(synthav_root, tiny_configs):
    """The generator's files parse with the real-format parsers (and their bad lines are caught)."""
    from assets.ingest.dataset_config import load_dataset_configs
    for ds in load_dataset_configs(tiny_configs):
        rows = list(parse_metadata(ds))
        problems = [r.problem for r in rows if r.problem]
        assert len(problems) == 1, (ds.name, problems)  # exactly the one deliberately malformed entry
        assert len(rows) > 10


def test_missing_metadata_file_names_config_and_file(tmp_path):
    ds = config(tmp_path, "vggsound", metadata=["vggsound.csv"])
    with pytest.raises(FileNotFoundError, match=r"t\.yaml: metadata file 'vggsound.csv' not found under"):
        parse_metadata(ds)
