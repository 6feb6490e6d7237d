"""The per-clip worker pool: order, per-clip errors, time bound, dead workers, memory recycling."""

import os
import time

from assets.caches.worker_pool import PoolStats, run_pool
from assets.core.errors import ClipError


def _work(task):
    kind, value = task
    if kind == "sleep":  # stands in for a decoder that hangs
        time.sleep(value)
    if kind == "bad":
        raise ClipError("corrupt", f"clip{value}.mp4: moov atom not found")
    if kind == "bug":
        raise ZeroDivisionError("division by zero")
    if kind == "die":
        os._exit(3)
    if kind == "grow":
        global _ballast
        _ballast = bytearray(value * 2**20)
        _ballast[::4096] = b"x" * len(_ballast[::4096])  # touch the pages so they count in RSS
    return value * 10


def test_results_in_order_with_errors_recorded_not_raised():
    tasks = [("ok", 1), ("bad", 2), ("ok", 3), ("bug", 4), ("ok", 5)]
    results = list(run_pool(_work, tasks, workers=2, timeout_s=30))
    assert [r.index for r in results] == [0, 1, 2, 3, 4]
    assert [r.value for r in results if r.ok] == [10, 30, 50]
    assert (results[1].error_kind, results[1].error) == ("corrupt", "clip2.mp4: moov atom not found")
    assert results[3].error_kind == "internal_error" and "ZeroDivisionError" in results[3].error


def test_hung_clip_times_out_and_the_rest_completes():
    stats = PoolStats(workers=2)
    tasks = [("ok", 1), ("sleep", 60), ("ok", 3), ("ok", 4)]
    start = time.perf_counter()
    results = list(run_pool(_work, tasks, workers=2, timeout_s=1.0, stats=stats))
    assert time.perf_counter() - start < 20
    assert [r.error_kind for r in results] == ["", "timeout", "", ""]
    assert [r.value for r in results if r.ok] == [10, 30, 40]
    assert stats.timeouts == 1 and stats.worker_restarts == 1


def test_dead_worker_is_replaced():
    results = list(run_pool(_work, [("ok", 1), ("die", 0), ("ok", 2)], workers=1, timeout_s=30))
    assert results[1].error_kind == "worker_died" and "code 3" in results[1].error
    assert [r.value for r in results if r.ok] == [10, 20]


def test_worker_over_memory_bound_is_recycled():
    probe = PoolStats(workers=1)
    list(run_pool(_work, [("ok", 0)], workers=1, stats=probe))
    base = probe.peak_rss_mb  # a fresh worker's footprint (forked: about this process's)
    stats = PoolStats(workers=1)
    results = list(run_pool(_work, [("grow", 300), ("ok", 1), ("ok", 2)], workers=1, timeout_s=30,
                            max_rss_mb=base + 150, stats=stats))
    assert all(r.ok for r in results)
    assert stats.worker_restarts == 1 and stats.peak_rss_mb > base + 250


def test_empty_task_list():
    assert list(run_pool(_work, [], workers=2)) == []
