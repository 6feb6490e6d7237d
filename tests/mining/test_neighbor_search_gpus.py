"""assets.mining.neighbor_search on several GPUs, with faiss's GPU functions faked: which placement
is chosen (replicated, sharded, one GPU, CPU), the fallbacks, and that results do not change. The
fake's "GPU" indexes are faiss's CPU IndexReplicas / IndexShards over copies of the index, so the
multi-index search path runs for real."""

import logging

import faiss
import numpy as np
import pytest

from assets.mining import neighbor_search as ns
from assets.mining.neighbor_search import SearchParams, build_index, gpu_placement, on_gpu, search


def random_unit(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def run(index, queries, p, exclude=None):
    chunks = list(search(index, queries, p, exclude, tie_seed=7))
    return np.concatenate([c[1] for c in chunks]), np.concatenate([c[2] for c in chunks])


class FakeFaiss:
    """The real faiss module plus GPU functions for `gpus` fake GPUs; `fail` names the ones that raise."""

    def __init__(self, gpus: int, fail: tuple[str, ...] = ()):
        self.gpus, self.fail, self.calls = gpus, fail, []

    def __getattr__(self, name):
        return getattr(faiss, name)

    def get_num_gpus(self) -> int:
        return self.gpus

    class StandardGpuResources:
        pass

    class GpuMultipleClonerOptions:
        shard = False

    def index_cpu_to_all_gpus(self, index, co=None, ngpu=-1):
        self.calls.append(("all", co.shard))
        if "all" in self.fail:
            raise RuntimeError("CUDA error: out of memory")
        if co.shard:  # what faiss's sharding cloner builds: shards of successive ids
            multi = faiss.IndexShards(index.d, True, True)
            parts = [faiss.clone_index(index) for _ in range(self.gpus)]
            for part in parts:
                part.reset()
                multi.add_shard(part)
            multi.add(ns._stored_vectors(index))
        else:
            multi = faiss.IndexReplicas()
            parts = [faiss.clone_index(index) for _ in range(self.gpus)]
            for part in parts:
                multi.addIndex(part)
        multi.referenced_objects = parts
        return multi

    def index_cpu_to_gpu(self, res, device, index):
        self.calls.append(("one", device))
        if "one" in self.fail:
            raise RuntimeError("cudaMalloc failed")
        return faiss.clone_index(index)


@pytest.fixture
def data():
    return random_unit(3000, 16, 0)


@pytest.fixture
def cpu_result(data):
    p = SearchParams(k=10, use_gpu=False)
    return run(build_index(data, p), data, p, np.arange(len(data)))


@pytest.mark.parametrize("gpu_shard, shard_bytes, expect_shard", [
    (None, ns.GPU_SHARD_BYTES, False),  # 192 KB of keys: replicated
    (None, 1024, True),  # keys above the threshold: sharded
    (True, ns.GPU_SHARD_BYTES, True), (False, 1024, False)])  # asked for
def test_several_gpus_replicate_or_shard_with_the_cpu_results(monkeypatch, data, cpu_result, gpu_shard, shard_bytes,
                                                             expect_shard):
    fake = FakeFaiss(gpus=4)
    monkeypatch.setattr(ns, "faiss", fake)
    monkeypatch.setattr(ns, "GPU_SHARD_BYTES", shard_bytes)
    p = SearchParams(k=10, gpu_shard=gpu_shard)  # use_gpu None: auto, GPUs "visible"
    index = build_index(data, p)
    assert fake.calls == [("all", expect_shard)]
    assert gpu_placement(index).gpus == 4 and on_gpu(index)
    assert isinstance(index, faiss.IndexShards if expect_shard else faiss.IndexReplicas)
    scores, ids = run(index, data, p, np.arange(len(data)))
    np.testing.assert_array_equal(ids, cpu_result[1])
    np.testing.assert_allclose(scores, cpu_result[0], atol=1e-6)
    with pytest.raises(ValueError, match="GPU search supports k <= 2048"):  # faiss's GPU limit holds for them too
        next(search(index, data, SearchParams(k=2500)))


def test_one_gpu_is_used_as_before(monkeypatch, data, cpu_result):
    fake = FakeFaiss(gpus=1)
    monkeypatch.setattr(ns, "faiss", fake)
    p = SearchParams(k=10)
    index = build_index(data, p)
    assert fake.calls == [("one", 0)] and gpu_placement(index).gpus == 1
    np.testing.assert_array_equal(run(index, data, p, np.arange(len(data)))[1], cpu_result[1])


@pytest.mark.parametrize("gpus, fail, calls, gpus_used", [
    (2, ("all",), [("all", False), ("one", 0)], 1),  # several GPUs fail: one GPU
    (2, ("all", "one"), [("all", False), ("one", 0)], 0),  # then the CPU
    (1, ("one",), [("one", 0)], 0)])
def test_gpu_failures_fall_back_with_a_warning(monkeypatch, caplog, data, cpu_result, gpus, fail, calls, gpus_used):
    fake = FakeFaiss(gpus=gpus, fail=fail)
    monkeypatch.setattr(ns, "faiss", fake)
    p = SearchParams(k=10, use_gpu=True)  # asked for: still falls back rather than failing the tables
    with caplog.at_level(logging.WARNING, logger=ns.__name__):
        index = build_index(data, p)
    assert fake.calls == calls
    assert (gpu_placement(index).gpus if gpus_used else gpu_placement(index)) == (gpus_used or None)
    assert on_gpu(index) == bool(gpus_used)
    warnings = [r.getMessage() for r in caplog.records if r.name == ns.__name__]
    assert len(warnings) == len(fail) and all("failed" in w for w in warnings)
    if gpus_used == 0:
        assert "searching on the CPU" in warnings[-1] and isinstance(index, faiss.IndexFlatIP)
    scores, ids = run(index, data, p, np.arange(len(data)))
    np.testing.assert_array_equal(ids, cpu_result[1])


def test_ivf_parameters_reach_every_replica(monkeypatch, data):
    monkeypatch.setattr(ns, "faiss", FakeFaiss(gpus=2))
    p = SearchParams(k=5, index="ivf", nlist=16, nprobe=7)
    index = build_index(data, p)
    next(search(index, data[:10], p))  # search sets nprobe before the first chunk
    assert [faiss.downcast_index(index.at(i)).nprobe for i in range(index.count())] == [7, 7]


def test_without_gpu_support_nothing_changes(monkeypatch, data):
    """The CPU build (faiss-cpu: no StandardGpuResources) never touches the GPU functions."""
    assert not hasattr(faiss, "StandardGpuResources")  # this environment's faiss-cpu
    index = build_index(data, SearchParams(k=5))
    assert isinstance(index, faiss.IndexFlatIP) and not on_gpu(index)
    with pytest.raises(ValueError, match="use_gpu=True but faiss has no GPU support"):
        build_index(data, SearchParams(k=5, use_gpu=True))
