"""Run a per-clip function on worker processes, with a time bound per clip.

Decoders hang on some files (decord's issue tracker has several), and a hung C call
cannot be interrupted from Python: the only safe bound is a separate process that can be
killed. Each worker gets one clip at a time; a clip over `timeout_s` gets its worker
killed and becomes a `timeout` error, a worker that dies becomes `worker_died`, and the
rest of the shard carries on with a fresh worker. Results come back in task order
(a reorder buffer of at most `workers` entries), so callers can stream them to disk.

Memory: a worker handles one clip at a time; after a clip that leaves its resident set
above `max_rss_mb` it is replaced (decoders and libraries that leak per call cannot
grow without bound). Peak RSS per worker is reported in PoolStats.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from assets.core.errors import ClipError

_PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2**20


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE_MB


@dataclass
class ClipResult:
    index: int
    value: Any = None
    error_kind: str = ""
    error: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.error_kind


@dataclass(frozen=True)
class PoolParams:
    workers: int = 2  # worker processes per shard
    timeout_s: float = 60.0  # per-clip time bound; a clip over it is killed and recorded as `timeout`
    max_worker_rss_mb: float = 2048.0  # a worker above this after a clip is replaced
    torch_threads: int = 1  # intra-op threads per worker (parallelism comes from the workers)


POOL_DEFAULTS = PoolParams()


@dataclass
class PoolStats:
    workers: int
    peak_rss_mb: float = 0.0  # largest resident set any worker reached
    timeouts: int = 0
    worker_restarts: int = 0
    busy_seconds: float = 0.0  # summed per-clip time inside workers
    per_worker_peak_mb: list[float] = field(default_factory=list)


def _worker(fn: Callable, init: Callable | None, conn: Connection) -> None:
    parent = os.getppid()
    if init is not None:
        init()
    while True:
        # Forked siblings hold copies of this pipe, so a killed parent does not always
        # close it: poll, and leave when orphaned.
        if not conn.poll(1.0):
            if os.getppid() != parent:
                return
            continue
        msg = conn.recv()
        if msg is None:
            return
        index, task = msg
        start = time.perf_counter()
        try:
            result = ClipResult(index, value=fn(task))
        except ClipError as err:
            result = ClipResult(index, error_kind=err.kind, error=str(err))
        except Exception as err:  # a bug, not bad data: keep the cause for the report
            tb = traceback.format_exception_only(type(err), err)[-1].strip()
            result = ClipResult(index, error_kind="internal_error", error=f"{task!r}: {tb}")
        result.seconds = time.perf_counter() - start
        conn.send((result, current_rss_mb()))


class _Slot:
    """One worker process and the clips sent to it (the first is being worked on)."""

    def __init__(self, ctx, fn, init):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(fn, init, child), daemon=True)
        self.proc.start()
        child.close()
        self.queue: deque[int] = deque()
        self.started = 0.0  # when the worker began the first queued clip
        self.peak_mb = 0.0

    @property
    def task(self) -> int | None:
        return self.queue[0] if self.queue else None

    def stop(self, kill: bool = False) -> None:
        if kill:
            self.proc.kill()
        else:
            try:
                self.conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        self.proc.join(timeout=5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        self.conn.close()


def run_pool(fn: Callable[[Any], Any], tasks: Sequence, workers: int = POOL_DEFAULTS.workers,
             timeout_s: float = POOL_DEFAULTS.timeout_s, max_rss_mb: float = POOL_DEFAULTS.max_worker_rss_mb, init: Callable | None = None, start_method: str = "fork",
             stats: PoolStats | None = None, prefetch: int = 2) -> Iterator[ClipResult]:
    """Yield fn(task) for every task, in order, as ClipResults (errors recorded, never raised).

    Each worker holds up to `prefetch` clips, so it starts the next one while the caller is
    still writing the previous results.
    """
    stats = stats if stats is not None else PoolStats(workers)
    ctx = mp.get_context(start_method)
    slots = [_Slot(ctx, fn, init) for _ in range(min(max(1, workers), len(tasks)))]
    pending = deque(range(len(tasks)))
    done: dict[int, ClipResult] = {}
    next_out = 0
    try:
        while next_out < len(tasks):
            _hand_out(slots, tasks, pending, prefetch)
            busy = [s for s in slots if s.queue]
            deadline = min(s.started for s in busy) + timeout_s
            ready = wait([s.conn for s in busy], timeout=max(0.0, deadline - time.perf_counter()))
            for i, slot in enumerate(slots):
                if not slot.queue:
                    continue
                if slot.conn in ready:
                    slots[i] = _collect(slot, done, stats, max_rss_mb, ctx, fn, init, pending)
                elif time.perf_counter() - slot.started > timeout_s:
                    head = slot.queue.popleft()
                    done[head] = ClipResult(head, error_kind="timeout", error=(
                        f"{tasks[head]!r}: no result after {timeout_s:.0f} s; worker killed"), seconds=timeout_s)
                    stats.timeouts += 1
                    slots[i] = _replace(slot, stats, ctx, fn, init, pending, kill=True)
            # Refill before yielding: the caller's work on a result (writing rows) then
            # overlaps with the workers' next clips instead of leaving them idle.
            _hand_out(slots, tasks, pending, prefetch)
            while next_out in done:
                yield done.pop(next_out)
                next_out += 1
    finally:
        for slot in slots:
            stats.per_worker_peak_mb.append(round(slot.peak_mb, 1))
            slot.stop(kill=bool(slot.queue))


def _hand_out(slots: list[_Slot], tasks: Sequence, pending: deque, prefetch: int) -> None:
    """Top every worker up to `prefetch` queued clips."""
    for slot in slots:
        while len(slot.queue) < prefetch and pending:
            index = pending.popleft()
            slot.conn.send((index, tasks[index]))
            if not slot.queue:
                slot.started = time.perf_counter()
            slot.queue.append(index)


def _collect(slot: _Slot, done: dict, stats: PoolStats, max_rss_mb: float, ctx, fn, init,
             pending: deque) -> _Slot:
    try:
        result, rss = slot.conn.recv()
    except (EOFError, OSError):  # the worker died mid-clip (segfault, OOM killer)
        head = slot.queue.popleft()
        slot.proc.join(timeout=5)  # the pipe closes before the process is reaped: wait for its exit code
        done[head] = ClipResult(head, error_kind="worker_died",
                                error=f"worker exited with code {slot.proc.exitcode} while on task {head}")
        return _replace(slot, stats, ctx, fn, init, pending, kill=True)
    done[result.index] = result
    stats.busy_seconds += result.seconds
    slot.peak_mb = max(slot.peak_mb, rss)
    stats.peak_rss_mb = max(stats.peak_rss_mb, rss)
    slot.queue.popleft()
    slot.started = time.perf_counter()  # the worker moves straight on to its next queued clip
    if rss > max_rss_mb:
        return _replace(slot, stats, ctx, fn, init, pending, kill=bool(slot.queue))
    return slot


def _replace(slot: _Slot, stats: PoolStats, ctx, fn, init, pending: deque, kill: bool) -> _Slot:
    """A fresh worker for this slot; clips queued on the old one go back to the front of the line."""
    pending.extendleft(reversed(slot.queue))
    slot.queue.clear()
    stats.per_worker_peak_mb.append(round(slot.peak_mb, 1))
    slot.stop(kill=kill)
    stats.worker_restarts += 1
    return _Slot(ctx, fn, init)
