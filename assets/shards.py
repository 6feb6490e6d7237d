"""clip_shards: one partition per shard, holding that shard's rows of the manifest.

Downstream caches (frames, FBANK, embeddings) read their work list from here, so a
shard's data version (the digest of its members and their file fingerprints) tells
Dagster exactly which shards changed.
"""


from collections import Counter

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from assets.atomic_io import write_parquet_atomic
from assets.dataset_config import DatasetConfig
from assets.shard_plan import shard_digests
from pipelines.resources import CachePaths


def shard_members(manifest: pa.Table, shard: str) -> pa.Table:
    """The manifest rows of one shard, in clip-id order."""
    members = manifest.filter(pc.equal(manifest.column("shard"), shard))
    return members.sort_by("clip_id")


def build_clip_shards_asset(ds: DatasetConfig, shards: dg.DynamicPartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(
        key=[ds.name, "clip_shards"], group_name=ds.name, kinds={"parquet"}, partitions_def=shards,
        deps=[dg.AssetKey([ds.name, "clip_manifest"])],
        description=f"The clips of one {ds.name} shard (stable membership); the unit of work of every cache stage.",
    )
    def clip_shards(context: dg.AssetExecutionContext, cache: CachePaths) -> dg.MaterializeResult:
        shard = context.partition_key
        manifest = pq.read_table(cache.manifest_path(ds.name))
        members = shard_members(manifest, shard)
        if members.num_rows == 0:
            raise dg.Failure(f"shard {shard} has no clips in {cache.manifest_path(ds.name)}; "
                             "it was registered by a different manifest: re-materialise clip_manifest")
        digest = shard_digests(members)[shard]
        path = cache.shard_path(ds.name, shard)
        n_bytes = write_parquet_atomic(members, path, {"clipkt.dataset": ds.name, "clipkt.shard": shard,
                                                       "clipkt.digest": digest})
        statuses = Counter(members.column("status").to_pylist())
        return dg.MaterializeResult(
            data_version=dg.DataVersion(digest),
            metadata={"path": dg.MetadataValue.path(str(path)), "bytes": n_bytes, "clips": members.num_rows,
                      "ok": statuses.get("ok", 0), "by_status": dict(sorted(statuses.items())),
                      "by_split": dict(sorted(Counter(members.column("split").to_pylist()).items())),
                      "digest": digest},
        )

    return clip_shards
