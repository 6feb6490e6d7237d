"""Class labels from a manifest: the sorted vocabulary over every split, single- and multi-label
data, and clear refusals."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from assets.training.class_labels import class_labels


def _manifest(path, rows):
    pq.write_table(pa.table({"clip_id": [r[0] for r in rows], "labels": [r[1] for r in rows]},
                            schema=pa.schema([("clip_id", pa.string()), ("labels", pa.list_(pa.string()))])), path)
    return path


def test_single_label_clips_get_class_ids_over_the_whole_manifest(tmp_path):
    m = _manifest(tmp_path / "m.parquet", [("a", ["dog barking"]), ("b", ["cat"]), ("c", ["zebra"]), ("d", ["cat"])])
    labels = class_labels(m, ["d", "a"])  # the vocabulary covers clips not asked for (another split)
    assert labels.classes == ("cat", "dog barking", "zebra") and labels.single_label
    assert labels.class_ids().tolist() == [0, 1]
    np.testing.assert_array_equal(labels.multi_hot, [[1, 0, 0], [0, 1, 0]])


def test_multi_label_clips_are_multi_hot_and_have_no_class_ids(tmp_path):
    m = _manifest(tmp_path / "m.parquet", [("a", ["/m/01", "/m/02"]), ("b", ["/m/02"]), ("c", [])])
    labels = class_labels(m, ["a", "b", "c"])
    np.testing.assert_array_equal(labels.multi_hot, [[1, 1], [0, 1], [0, 0]])
    assert not labels.single_label
    with pytest.raises(ValueError, match="multi-label"):
        labels.class_ids()


def test_unlabelled_data_and_unknown_clips_are_refused_with_the_file(tmp_path):
    m = _manifest(tmp_path / "places.parquet", [("a", []), ("b", None)])
    with pytest.raises(ValueError, match=r"places.parquet: no clip has a class label"):
        class_labels(m, ["a"])
    m2 = _manifest(tmp_path / "m2.parquet", [("a", ["x"])])
    with pytest.raises(ValueError, match=r"m2.parquet: 1 clips are not in the manifest \(first: zz\)"):
        class_labels(m2, ["a", "zz"])


def test_recognition_is_top1_or_mean_ap_by_hand():
    from assets.training.class_labels import ClassLabels
    from assets.training.recognition import recognition_metrics
    single = ClassLabels(("a", "b", "c"), np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0]], np.uint8))
    logits = np.array([[2.0, 1, 0], [0, 1, 3], [0, 0, 1], [1, 0, 0]])
    assert recognition_metrics(logits, single) == {"top1": 0.75, "clips": 4}
    multi = ClassLabels(("a", "b", "c"), np.array([[1, 1, 0], [0, 1, 0], [1, 0, 0]], np.uint8))
    scores = np.array([[0.9, 0.2, 0.1], [0.1, 0.8, 0.5], [0.3, 0.4, 0.2]])
    # class a: positives rows 0 and 2, ranked 1st and 2nd -> AP 1; class b: rows 1 (0.8) and 0 (0.2) of
    # scores 0.8, 0.4 (row 2, negative), 0.2 -> AP (1 + 2/3) / 2; class c has no positive and is left out
    assert recognition_metrics(scores, multi)["mAP"] == pytest.approx((1 + (1 + 2 / 3) / 2) / 2)
    with pytest.raises(ValueError, match="differ in shape"):
        recognition_metrics(scores[:, :2], multi)
