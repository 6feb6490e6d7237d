"""assets.ingest.semantic_keys and the dataset YAML's `semantic_keys` field."""

import numpy as np
import pytest

from assets.ingest.dataset_config import DatasetConfigError, load_dataset_config, parse_dataset_config
from assets.ingest.semantic_keys import SemanticKeysError, group_ids, load_semantic_keys


def dataset(root, **extra):
    raw = {"name": "t", "format": "vggsound", "root": str(root), "metadata": ["vggsound.csv"], **extra}
    return parse_dataset_config(raw, root / "t.yaml")


def test_keys_load_and_group(tmp_path):
    (tmp_path / "keys.csv").write_text("\ufeffclip_id,key,note\na_000000,dog|red,x\nb_000010,cat,\nc_000020,dog|red,\n")
    ds = dataset(tmp_path, semantic_keys="keys.csv")
    keys = load_semantic_keys(ds)
    assert keys == {"a_000000": "dog|red", "b_000010": "cat", "c_000020": "dog|red"}
    groups = group_ids(["c_000020", "zz", "b_000010", "a_000000"], keys)
    assert groups.dtype == np.int64 and groups.tolist() == [1, -1, 0, 1]  # ids in key order; -1: no key
    assert group_ids(["zz"], keys).tolist() == [-1]
    assert load_semantic_keys(dataset(tmp_path)) is None  # a dataset without keys (every real one)


@pytest.mark.parametrize("text,error", [
    (None, r"keys\.csv: semantic key file not found \(declared as semantic_keys in .*t\.yaml\)"),
    ("clip,key\na,x\n", r"keys\.csv:1: missing column\(s\) \['clip_id'\]"),
    ("", r"keys\.csv:1: missing column\(s\) \['clip_id', 'key'\]"),
    ("clip_id,key\na,x\nb,y\na,z\n", r"keys\.csv:4: duplicate clip_id 'a' \(first on line 2\)"),
    ("clip_id,key\na,x\nb,\n", r"keys\.csv:3: empty key for clip 'b'"),
    ("clip_id,key\na,x\nb\n", r"keys\.csv:3: empty key for clip 'b'"),
    ("clip_id,key\n,x\n", r"keys\.csv:2: empty clip_id"),
])
def test_bad_key_files_name_the_file_and_the_reason(tmp_path, text, error):
    if text is not None:
        (tmp_path / "keys.csv").write_text(text)
    with pytest.raises(SemanticKeysError, match=error):
        load_semantic_keys(dataset(tmp_path, semantic_keys="keys.csv"))


def test_semantic_keys_path_must_stay_inside_the_root(tmp_path):
    assert dataset(tmp_path, semantic_keys="meta/keys.csv").semantic_keys == "meta/keys.csv"
    assert dataset(tmp_path, semantic_keys=str(tmp_path / "keys.csv")).semantic_keys == str(tmp_path / "keys.csv")
    for bad in ("../keys.csv", "/etc/keys.csv", "a/../../keys.csv", "."):
        with pytest.raises(DatasetConfigError, match=r"t\.yaml: semantic_keys .* must be a file inside the dataset root"):
            dataset(tmp_path, semantic_keys=bad)


def test_demo_configs_declare_the_generators_keys(tiny_configs):
    for path in sorted(tiny_configs.glob("synthav_*.yaml")):
        assert load_dataset_config(path).semantic_keys == "synthav_keys.csv"
