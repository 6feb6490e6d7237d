"""Dagster assets of the ingest stage, per dataset:

- `<dataset>/clip_manifest`: every clip the metadata lists, its files, status and stable shard;
  registers new shards as dynamic partitions.
- `<dataset>/clip_shards` (one partition per shard): that shard's manifest rows, the unit of
  work of every cache stage; its data version (the digest of its members and their file
  fingerprints) tells Dagster exactly which shards changed.
"""

from collections import Counter

import dagster as dg
import pyarrow.compute as pc
import pyarrow.parquet as pq

from assets.core.atomic_io import write_parquet_atomic
from assets.core.markdown import markdown_table
from assets.ingest.dataset_config import DatasetConfig
from assets.ingest.manifest import ManifestParams, build_manifest, manifest_summary
from assets.ingest.shard_plan import shard_digests, shard_members
from pipelines.resources import CachePaths

_MANIFEST = ManifestParams()


class ManifestConfig(dg.Config):
    strict: bool = _MANIFEST.strict  # fail on the first malformed metadata line instead of recording it
    probe_threads: int = _MANIFEST.probe_threads

    def params(self) -> ManifestParams:
        return ManifestParams(**self.model_dump())


def build_clip_manifest_asset(ds: DatasetConfig, shards: dg.DynamicPartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(
        key=[ds.name, "clip_manifest"], group_name=ds.name, kinds={"parquet"},
        description=f"Every clip of {ds.name} ({ds.format} format, {ds.root}): files, labels, captions, "
                    "split, status and stable shard. Registers new shards as partitions.",
    )
    def clip_manifest(context: dg.AssetExecutionContext, config: ManifestConfig, cache: CachePaths) -> dg.MaterializeResult:
        path = cache.layout().manifest_path(ds.name)
        table = build_manifest(ds, path if path.exists() else None, config.params())
        n_bytes = write_parquet_atomic(table, path, {"clipkt.dataset": ds.name})
        keys = sorted(pc.unique(table.column("shard")).drop_null().to_pylist())
        new = [k for k in keys if not context.instance.has_dynamic_partition(shards.name, k)]
        context.instance.add_dynamic_partitions(shards.name, new)
        s = manifest_summary(table)
        return dg.MaterializeResult(metadata={
            "path": dg.MetadataValue.path(str(path)), "bytes": n_bytes,
            "clips": s["clips"], "ok": s["ok"], "coverage_pct": s["coverage_pct"],
            "by_status": s["by_status"], "shards": s["shards"], "new_shards": len(new),
            "counts_by_split": dg.MetadataValue.md(markdown_table(s["by_split_status"])),
            "first_errors": dg.MetadataValue.md(markdown_table(s["first_errors"])),
        })

    return clip_manifest


def build_clip_shards_asset(ds: DatasetConfig, shards: dg.DynamicPartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(
        key=[ds.name, "clip_shards"], group_name=ds.name, kinds={"parquet"}, partitions_def=shards,
        deps=[dg.AssetKey([ds.name, "clip_manifest"])],
        description=f"The clips of one {ds.name} shard (stable membership); the unit of work of every cache stage.",
    )
    def clip_shards(context: dg.AssetExecutionContext, cache: CachePaths) -> dg.MaterializeResult:
        shard, layout = context.partition_key, cache.layout()
        # only this shard's rows are kept while the manifest is read (2M rows are ~0.6 GB as a table)
        members = shard_members(pq.read_table(layout.manifest_path(ds.name), filters=[("shard", "==", shard)]), shard)
        if members.num_rows == 0:
            raise dg.Failure(f"shard {shard} has no clips in {layout.manifest_path(ds.name)}; "
                             "it was registered by a different manifest: re-materialise clip_manifest")
        digest = shard_digests(members)[shard]
        path = layout.shard_path(ds.name, shard)
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
