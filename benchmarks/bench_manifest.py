"""The manifest at AudioSet size: rows/s, peak memory and shards, against a bare parse-and-stat loop.

    .venv/bin/python -m benchmarks.bench_manifest                          # 2,000,000 rows, 200,000 files
    .venv/bin/python -m benchmarks.bench_manifest --rows 200000 --present 20000

Writes an AudioSet-format segments CSV (`YTID, start, end, "labels"`, 3 header lines) and
the label map into a temporary directory, creates `--present` of the listed files (a small
file with an mp4 header each: what the probe reads), then runs, each in a fresh process
(peak memory is the process's maximum resident set):

- bare: `csv.reader` over the file and one `os.stat` per listed media path, nothing kept;
- manifest: `build_manifest` as the clip_manifest asset runs it, then the Parquet write;
- manifest again: the same with the first manifest as the previous one (the sensor's re-run).

Prints wall time, rows/s and peak RSS for each, the ratio manifest / bare, the Parquet size,
and the shards cut (count and clips per shard).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ALPHABET = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"))
MP4_HEAD = b"\x00\x00\x00\x18ftypmp42" + bytes(16)


def write_dataset(root: Path, rows: int, present: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    (root / "media").mkdir(parents=True)
    mids = [f"/m/{i:05x}" for i in range(527)]
    with open(root / "class_labels_indices.csv", "w") as f:
        f.write("index,mid,display_name\n")
        f.writelines(f'{i},{m},"Label {i}, a sound"\n' for i, m in enumerate(mids))
    ids = ["".join(x) for x in ALPHABET[rng.integers(0, len(ALPHABET), (rows, 11))]]
    starts = rng.integers(0, 300, rows) * 10
    n_labels = rng.integers(1, 5, rows)
    with open(root / "unbalanced_train_segments.csv", "w") as f:
        f.write(f"# Segments csv created Sun Mar  5 10:54:31 2017\n# num_ytids={rows}, num_segs={rows}, "
                "num_unique_labels=527, num_positive_labels=0\n# YTID, start_seconds, end_seconds, positive_labels\n")
        for ytid, start, k in zip(ids, starts, n_labels):
            labels = ",".join(mids[j] for j in rng.integers(0, 527, k))
            f.write(f'{ytid}, {start:.3f}, {start + 10:.3f}, "{labels}"\n')
    for i in rng.choice(rows, size=present, replace=False):
        (root / "media" / f"Y{ids[i]}.mp4").write_bytes(MP4_HEAD)
    (root / "audioset.yaml").write_text(json.dumps({
        "name": "bench_audioset", "format": "audioset", "root": str(root), "label_map": "class_labels_indices.csv",
        "metadata": [{"path": "unbalanced_train_segments.csv", "split": "unbalanced_train", "media_dir": "media"}],
        "shard_size": 1000}))


BARE = """
import csv, os, sys
root = sys.argv[1]
n = 0
with open(os.path.join(root, "unbalanced_train_segments.csv")) as f:
    for fields in csv.reader((line for line in f if not line.startswith("#")), skipinitialspace=True):
        try:
            os.stat(os.path.join(root, "media", "Y" + fields[0] + ".mp4"))
        except FileNotFoundError:
            pass
        n += 1
print(n)
"""

MANIFEST = """
import sys, time
from pathlib import Path
import pyarrow.parquet as pq
from assets.ingest.dataset_config import load_dataset_config
from assets.ingest.manifest import build_manifest
root, out, previous = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
ds = load_dataset_config(root / "audioset.yaml")
table = build_manifest(ds, Path(previous) if previous else None)
pq.write_table(table, out)
print(table.num_rows)
"""


# the process's own peak resident set (VmHWM is per address space, so the parent's pages that a
# fork shares until exec are not counted, unlike ru_maxrss)
PEAK = "\nprint(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')))\n"


def run(code: str, *args: str) -> tuple[float, float, str]:
    """(wall seconds, peak RSS in MB, stdout) of `code` in a fresh Python process, which reports its
    own maximum resident set at the end."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code + PEAK, *args], cwd=ROOT, capture_output=True, text=True,
                          env=os.environ | {"PYTHONPATH": str(ROOT)})
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    *out, peak_kb = proc.stdout.split()
    return seconds, int(peak_kb) / 1024, " ".join(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--present", type=int, default=200_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_manifest_"))
    try:
        start = time.perf_counter()
        write_dataset(work / "audioset", args.rows, args.present)
        csv_mb = (work / "audioset" / "unbalanced_train_segments.csv").stat().st_size / 2**20
        print(f"{args.rows} rows ({csv_mb:.0f} MB CSV), {args.present} files present; "
              f"written in {time.perf_counter() - start:.0f} s")
        out = work / "manifest.parquet"
        results = {
            "bare csv + stat": run(BARE, str(work / "audioset")),
            "manifest": run(MANIFEST, str(work / "audioset"), str(out), ""),
        }
        shutil.copy(out, work / "previous.parquet")
        results["manifest again"] = run(MANIFEST, str(work / "audioset"), str(out), str(work / "previous.parquet"))
        for name, (seconds, peak, _) in results.items():
            print(f"  {name:<16} {seconds:7.1f} s  {args.rows / seconds:9.0f} rows/s  peak RSS {peak:7.0f} MB")
        print(f"  manifest / bare: {results['bare csv + stat'][0] / results['manifest'][0]:.2f}x speed "
              f"(target: <= 60 s and <= 1 GB at 2M rows)")
        import pyarrow.compute as pc
        import pyarrow.parquet as pq
        shards = pq.read_table(out, columns=["shard"]).column("shard")
        counts = pc.value_counts(shards.drop_null()).field("counts").to_numpy()
        print(f"  Parquet {out.stat().st_size / 2**20:.0f} MB; {len(counts)} shards, clips per shard "
              f"min {counts.min()} median {int(np.median(counts))} max {counts.max()}; "
              f"{shards.null_count} rows without a shard (files not there)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
