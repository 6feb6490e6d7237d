"""The manifest: path-escape refusal, per-clip statuses, coverage, stable shards across rebuilds."""

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from assets.ingest.dataset_config import load_dataset_configs, parse_dataset_config
from assets.ingest.manifest import build_manifest, manifest_summary, resolve_inside
from assets.ingest.media_probe import probe_file


def test_resolve_inside_refuses_escapes_lexically(tmp_path):
    root = tmp_path / "ds"
    assert resolve_inside(root, "video/a.mp4") == str(root / "video" / "a.mp4")
    assert resolve_inside(root, "video/../video/./a.mp4") == str(root / "video" / "a.mp4")
    assert resolve_inside(root, "../other/a.mp4") is None
    assert resolve_inside(root, "video/../../a.mp4") is None
    assert resolve_inside(root, "/etc/passwd") is None
    assert resolve_inside(root, str(root / "ok.wav")) == str(root / "ok.wav")
    assert resolve_inside(tmp_path / "d", "../ds/x.wav") is None  # a sibling whose name shares a prefix


def test_symlinked_media_directory_is_allowed(tmp_path):
    elsewhere = tmp_path / "big_disk"
    elsewhere.mkdir()
    (elsewhere / "a.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt ")
    root = tmp_path / "ds"
    root.mkdir()
    os.symlink(elsewhere, root / "audio")
    full = resolve_inside(root, "audio/a.wav")
    assert full is not None and probe_file(full).status == "ok"


def test_probe_statuses(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "html.mp4").write_bytes(b"<!DOCTYPE html><html>")
    (tmp_path / "good.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(100))
    assert probe_file(str(tmp_path / "nope.mp4")).status == "missing"
    assert probe_file(str(tmp_path / "empty.mp4")).reason.endswith("empty file")
    html = probe_file(str(tmp_path / "html.mp4"))
    assert html.status == "unreadable" and "expected mp4 data" in html.reason
    good = probe_file(str(tmp_path / "good.mp4"))
    assert (good.status, good.size_bytes) == ("ok", 112)


def _vgg(tmp_path: Path, lines: list[str], shard_size: int = 2):
    root = tmp_path / "vgg"
    (root / "video").mkdir(parents=True, exist_ok=True)
    (root / "vggsound.csv").write_text("\n".join(lines) + "\n")
    raw = {"name": "v", "format": "vggsound", "root": str(root), "metadata": ["vggsound.csv"], "shard_size": shard_size}
    return root, parse_dataset_config(raw, tmp_path / "v.yaml")


MP4 = b"\x00\x00\x00\x18ftypmp42" + bytes(64)


def test_manifest_rows_statuses_and_coverage(tmp_path):
    root, ds = _vgg(tmp_path, ["aaaaaaaaaaa,0,dog barking,train", "bbbbbbbbbbb,10,dog barking,train",
                               "ccccccccccc,20,cat meowing,test", "ddddddddddd,30", "aaaaaaaaaaa,0,dog barking,train"])
    (root / "video" / "aaaaaaaaaaa_000000.mp4").write_bytes(MP4)
    (root / "video" / "ccccccccccc_000020.mp4").write_bytes(b"garbage!" * 10)
    table = build_manifest(ds)
    by_id = {r["clip_id"]: r for r in table.to_pylist()}
    assert by_id["aaaaaaaaaaa_000000"]["status"] == "ok"
    assert by_id["aaaaaaaaaaa_000000"]["media_bytes"] == len(MP4)
    assert by_id["bbbbbbbbbbb_000010"]["status"] == "missing"
    assert by_id["bbbbbbbbbbb_000010"]["reason"] == "media file not found"
    assert by_id["bbbbbbbbbbb_000010"]["source"] == "vggsound.csv:2"
    assert by_id["ccccccccccc_000020"]["status"] == "unreadable"
    assert by_id["malformed:vggsound.csv:4"]["status"] == "malformed"
    assert by_id["malformed:vggsound.csv:4"]["shard"] is None
    assert by_id["duplicate:vggsound.csv:5"]["status"] == "duplicate"
    summary = manifest_summary(table)
    assert summary["coverage_pct"] == round(100 / 3, 2)  # 1 ok of 3 listed clips
    assert summary["by_status"] == {"duplicate": 1, "malformed": 1, "missing": 1, "ok": 1, "unreadable": 1}
    assert summary["shards"] == 1  # shards are cut from clips whose files are there: 1
    assert by_id["bbbbbbbbbbb_000010"]["shard"] is None and by_id["ccccccccccc_000020"]["shard"] is None


def test_path_escape_in_places_is_a_row_not_a_failure(tmp_path):
    root = tmp_path / "places"
    (root / "meta").mkdir(parents=True)
    (root / "meta" / "train.json").write_text(
        '{"image_base_path": "/data/sls/images", "audio_base_path": "audio", "data": ['
        '{"uttid": "u1", "wav": "../../../etc/passwd", "image": "a.jpg"}]}')
    raw = {"name": "p", "format": "places", "root": str(root), "metadata": [{"path": "meta/train.json", "split": "train"}]}
    row = build_manifest(parse_dataset_config(raw, tmp_path / "p.yaml")).to_pylist()[0]
    assert row["status"] == "path_escape"
    assert "meta/train.json:data[0]: media path 'audio/../../../etc/passwd' leaves the dataset root" in row["reason"]


def _present(root: Path, *clip_ids: str) -> None:
    for cid in clip_ids:
        (root / "video" / f"{cid}.mp4").write_bytes(MP4)


def test_rebuild_after_growth_and_removal_keeps_shards(tmp_path):
    lines = [f"{c * 11},{i},dog barking,train" for i, c in enumerate("abcde")]
    root, ds = _vgg(tmp_path, lines)
    _present(root, *(f"{c * 11}_{i:06d}" for i, c in enumerate("abcde")), "fffffffffff_000009", "00000000000_000009")
    first = build_manifest(ds)
    before = dict(zip(first.column("clip_id").to_pylist(), first.column("shard").to_pylist()))
    # One clip disappears from the metadata, two new ones arrive.
    _, ds = _vgg(tmp_path, lines[1:] + ["fffffffffff,9,cat meowing,test", "00000000000,9,cat meowing,test"])
    second = build_manifest(ds, previous=first)
    after = {r["clip_id"]: r for r in second.to_pylist()}
    assert {c: after[c]["shard"] for c in before} == before
    assert after["aaaaaaaaaaa_000000"]["status"] == "removed"
    assert after["fffffffffff_000009"]["shard"] == after["00000000000_000009"]["shard"] == "s00003"
    # the earlier manifest read from its file gives the same table
    path = tmp_path / "manifest.parquet"
    pq.write_table(first, path)
    assert build_manifest(ds, previous=path).equals(second)


def test_growth_only_creates_new_shards_and_keeps_members(tmp_path):
    ids = [f"c{i:02d}xxxxxxxx" for i in range(10)]
    root, ds = _vgg(tmp_path, [f"{c},0,dog,train" for c in ids], shard_size=4)
    _present(root, *(f"{c}_000000" for c in ids))
    first = build_manifest(ds)
    before = dict(zip(first.column("clip_id").to_pylist(), first.column("shard").to_pylist()))
    assert sorted(set(before.values())) == ["s00000", "s00001", "s00002"]
    # new ids sort before and between old ones; they must still not enter old shards
    grown = ids + ["a00xxxxxxxx", "c045xxxxxxx", "z99xxxxxxxx"]
    _, ds = _vgg(tmp_path, [f"{c},0,dog,train" for c in grown], shard_size=4)
    _present(root, "a00xxxxxxxx_000000", "c045xxxxxxx_000000", "z99xxxxxxxx_000000")
    after = dict(zip(*(build_manifest(ds, previous=first).column(c).to_pylist() for c in ("clip_id", "shard"))))
    assert {k: after[k] for k in before} == before
    assert {after["a00xxxxxxxx_000000"], after["c045xxxxxxx_000000"], after["z99xxxxxxxx_000000"]} == {"s00003"}


def test_shards_hold_clips_that_can_be_processed_and_late_files_get_one(tmp_path):
    """Six listed, two downloaded, shard_size 2: one shard of the two; the four missing rows are
    recorded without a shard. Three arrive: a new shard of two and one of one; a sharded clip whose
    file goes away keeps its shard (its caches are redone there)."""
    ids = [f"{c * 11}_{i:06d}" for i, c in enumerate("abcdef")]
    root, ds = _vgg(tmp_path, [f"{c * 11},{i},dog,train" for i, c in enumerate("abcdef")], shard_size=2)
    _present(root, ids[1], ids[4])
    first = build_manifest(ds)
    shard = dict(zip(first.column("clip_id").to_pylist(), first.column("shard").to_pylist()))
    assert shard == {ids[1]: "s00000", ids[4]: "s00000", ids[0]: None, ids[2]: None, ids[3]: None, ids[5]: None}
    assert first.column("clip_id").to_pylist() == ids  # metadata order
    _present(root, ids[0], ids[3], ids[5])
    (root / "video" / f"{ids[4]}.mp4").unlink()
    second = build_manifest(ds, previous=first)
    rows = {r["clip_id"]: r for r in second.to_pylist()}
    assert {c: rows[c]["shard"] for c in ids} == {ids[0]: "s00001", ids[1]: "s00000", ids[2]: None,
                                                    ids[3]: "s00001", ids[4]: "s00000", ids[5]: "s00002"}
    assert rows[ids[4]]["status"] == "missing" and rows[ids[2]]["status"] == "missing"


def test_manifest_on_generated_defects(synthav_root, tiny_configs):
    """Each deliberately bad SynthAV entry ends up with the status the manifest can see."""
    datasets = {ds.format: ds for ds in load_dataset_configs(tiny_configs)}
    vgg = manifest_summary(build_manifest(datasets["vggsound"]))["by_status"]
    # corrupt -> unreadable; missing -> missing; malformed row; truncated/silent/short/stereo pass the
    # cheap probe (their problems show when decoding, in the cache stages).
    assert vgg["unreadable"] == 1 and vgg["missing"] == 1 and vgg["malformed"] == 1
    places = manifest_summary(build_manifest(datasets["places"]))["by_status"]
    assert places["path_escape"] == 1 and places["missing"] == 1 and places["malformed"] == 1
    assert places["unreadable"] == 1  # the corrupt jpg
    table = build_manifest(datasets["audiocaps"])
    test_rows = [r for r in table.to_pylist() if r["split"] == "test" and r["status"] == "ok"]
    assert test_rows and all(len(r["captions"]) == 5 for r in test_rows)
    assert isinstance(table, pa.Table)


def test_duplicates_name_their_first_listing_in_file_order(tmp_path):
    """Two clips listed twice, the later copies in the opposite id order: each duplicate row names
    its own line and the line of its clip's first listing."""
    root, ds = _vgg(tmp_path, ["zzzzzzzzzzz,0,dog,train", "aaaaaaaaaaa,0,dog,train", "ddddddddddd,0,dog,train",
                               "aaaaaaaaaaa,0,dog,train", "zzzzzzzzzzz,0,dog,train"])
    rows = {r["clip_id"]: r for r in build_manifest(ds).to_pylist()}
    assert rows["duplicate:vggsound.csv:4"]["reason"] == \
        "vggsound.csv:4: clip aaaaaaaaaaa_000000 is already listed at vggsound.csv:2"
    assert rows["duplicate:vggsound.csv:5"]["reason"] == \
        "vggsound.csv:5: clip zzzzzzzzzzz_000000 is already listed at vggsound.csv:1"
    assert {r["status"] for c, r in rows.items() if c.startswith("duplicate:")} == {"duplicate"}
    assert rows["zzzzzzzzzzz_000000"]["source"] == "vggsound.csv:1" and rows["ddddddddddd_000000"]["status"] == "missing"
