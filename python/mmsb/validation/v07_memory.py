"""Validator 7, memory: the real bytes a bus holds for a million small pages, the metadata each
page costs, and how long bus.gc() pauses under churn (DESIGN §1 "Memory and GC", §5 row 7).

Workload (full; quick in brackets): mmsb.Bus(history=False) with 1,000,000 [50,000] raw pages
of 960 bytes, each written once (DeltaBatch chunks of 65,536 full-page rows) so that every page
is resident. The NumPy buffers the rows come from are allocated and touched before the baseline,
so the process's resident-set growth (/proc/self/statm) is the bus's own.

Checks (the validator raises when one fails): bus.memory().total_bytes is within 10% of the RSS
growth; total_bytes is the sum of its parts; metadata_bytes covers page_metadata_bytes for every
page; after the churn the bus still has every live page with the bytes written to it (sampled).

Metrics: total_bytes (memory().total_bytes once every page is written), metadata_bytes_per_page
(memory().metadata_bytes / pages at that point: the page records the table holds, 64 bytes each,
plus names and cold info, which these raw pages have none of; the record slots the table
allocates ahead in chunks are counted in arena_slack_bytes, which total_bytes includes and the
RSS check holds to account), gc_pause_p99_ms: 100 [20] rounds of churn, each deleting
a random 1% of the live pages, creating and writing as many new ones, then bus.gc(); the p99
of GcReport.pause_ns. Noted: RSS growth, each part of memory(), the figures after the churn, and
the same workload at 50,000 pages with history on (cheap, so always measured first).
"""

from __future__ import annotations

import ctypes
import gc as pygc
import os

import numpy as np

import mmsb

from ._framework import Context, validator

SIZE = 960
CHUNK = 65_536
PARTS = ("data_bytes", "arena_slack_bytes", "metadata_bytes", "graph_bytes", "index_bytes", "cache_bytes",
         "log_bytes", "queue_bytes")


def _release_free_heap() -> None:
    """Hands memory that earlier work freed but the C allocator kept back to the OS
    (glibc malloc_trim), so that the new bus cannot reuse resident pages without the RSS
    growing. Without it, a run after other validators can see RSS grow by less than the bus
    allocates. A no-op where there is no glibc."""
    pygc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _Rows:
    """Page content as a function of (id - first): row (i % CHUNK) of a random pool plus (i // CHUNK),
    written from buffers allocated and touched once."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.pool = rng.integers(0, 256, size=(CHUNK, SIZE), dtype=np.uint8)
        self.buf = np.ones_like(self.pool)
        self.ids = np.ones(CHUNK, dtype=np.uint64)
        self.offsets = np.full(CHUNK, 0, dtype=np.uint64)  # np.zeros would leave it untouched
        self.lengths = np.full(CHUNK, SIZE, dtype=np.uint64)

    def expected(self, index: int) -> np.ndarray:
        return self.pool[index % CHUNK] + np.uint8((index // CHUNK) % 256)

    def write_consecutive(self, bus: mmsb.Bus, first: int, start: int, count: int) -> None:
        """Writes pages first + start .. first + start + count - 1 (start a multiple of CHUNK)."""
        np.add(np.arange(count, dtype=np.uint64), np.uint64(first + start), out=self.ids[:count])
        np.add(self.pool[:count], np.uint8((start // CHUNK) % 256), out=self.buf[:count])
        bus.apply_batch(mmsb.DeltaBatch(self.ids[:count], self.offsets[:count], self.lengths[:count],
                                        self.buf[:count].reshape(-1)))


def _fill(ctx: Context, pages: int, history: bool, rows: _Rows) -> tuple:
    """A bus of `pages` written pages; (bus, first id, memory report, RSS growth), checked."""
    _release_free_heap()
    rss0 = _rss()
    bus = mmsb.Bus(history=history)
    first = bus.create_page(SIZE).id
    for _ in range(pages - 1):
        bus.create_page(SIZE)
    if len(bus) != pages or bus.page(first + pages - 1).size != SIZE:
        raise RuntimeError(f"expected {pages} pages with consecutive ids from {first}")
    for start in ctx.progress(range(0, pages, CHUNK), total=-(-pages // CHUNK), desc="memory: write"):
        rows.write_consecutive(bus, first, start, min(CHUNK, pages - start))
    pygc.collect()
    mem = bus.memory()  # first: it waits for buffers reserved ahead to become resident
    grown = _rss() - rss0
    if abs(mem["total_bytes"] - grown) > 0.10 * grown:
        raise RuntimeError(f"history={history}: memory() reports {mem['total_bytes']} bytes but the RSS grew by "
                           f"{grown} ({mem['total_bytes'] / grown:.1%}): more than 10% apart")
    if mem["total_bytes"] != sum(mem[k] for k in PARTS):
        raise RuntimeError(f"memory().total_bytes {mem['total_bytes']} is not the sum of its parts {dict(mem)}")
    if mem["pages"] != pages or mem["metadata_bytes"] < mem["page_metadata_bytes"] * pages:
        raise RuntimeError(f"memory() accounts {mem['metadata_bytes']} metadata bytes for {mem['pages']} pages; "
                           f"{pages} pages of {mem['page_metadata_bytes']} bytes need more")
    return bus, first, mem, grown


@validator(7, "memory")
def run(ctx: Context) -> dict:
    pages = ctx.size(1_000_000, 50_000)
    rounds = ctx.size(100, 20)
    rng = np.random.default_rng(ctx.seed)
    rows = _Rows(rng)
    side, _, side_mem, side_rss = _fill(ctx, 50_000, True, rows)
    side.close()
    del side
    ctx.note("history_on_50k_total_bytes", side_mem["total_bytes"])
    ctx.note("history_on_50k_log_bytes", side_mem["log_bytes"])
    ctx.note("history_on_50k_rss_growth", side_rss)

    bus, first, mem, grown = _fill(ctx, pages, False, rows)
    ctx.note("pages", pages)
    ctx.note("rss_growth_bytes", grown)
    ctx.note("memory_over_rss", mem["total_bytes"] / grown)
    for k in PARTS:
        ctx.note(k, mem[k])
    total, meta_per_page = mem["total_bytes"], mem["metadata_bytes"] / mem["pages"]

    live = np.arange(first, first + pages, dtype=np.int64)
    next_id = first + pages
    pauses, freed = [], 0
    for _ in ctx.progress(range(rounds), total=rounds, desc="memory: churn + gc"):
        k = max(1, len(live) // 100)
        doomed = rng.choice(len(live), size=k, replace=False)
        for pid in live[doomed].tolist():
            bus.delete_page(pid)
        new = [bus.create_page(SIZE).id for _ in range(k)]
        if new != list(range(next_id, next_id + k)):
            raise RuntimeError(f"new page ids are not {next_id}..{next_id + k - 1}")
        idx = np.arange(next_id - first, next_id - first + k)
        bus.apply_batch(mmsb.DeltaBatch(np.asarray(new, dtype=np.uint64), np.zeros(k, np.uint64),
                                        np.full(k, SIZE, np.uint64), (rows.pool[idx % CHUNK] + (idx // CHUNK % 256)
                                                                      .astype(np.uint8)[:, None]).reshape(-1)))
        next_id += k
        live = np.concatenate([np.delete(live, doomed), np.asarray(new, dtype=np.int64)])
        report = bus.gc()
        pauses.append(report["pause_ns"])
        freed += report["bytes_freed"]
    if len(bus) != len(live):
        raise RuntimeError(f"the bus has {len(bus)} pages after the churn, expected {len(live)}")
    for pid in rng.choice(live, size=min(2_000, len(live)), replace=False).tolist():
        if bus.page(pid).view().tobytes() != rows.expected(pid - first).tobytes():
            raise RuntimeError(f"page {pid} lost its content during churn and gc")
    after = bus.memory()
    ctx.note("after_churn_total_bytes", after["total_bytes"])
    ctx.note("after_churn_metadata_bytes_per_page", after["metadata_bytes"] / after["pages"])
    ctx.note("after_churn_arena_slack_bytes", after["arena_slack_bytes"])
    ctx.note("gc_bytes_freed", freed)
    ctx.note("gc_pause_p50_ms", float(np.percentile(pauses, 50)) / 1e6)
    ctx.note("gc_pause_max_ms", max(pauses) / 1e6)
    bus.close()
    return {"total_bytes": int(total), "metadata_bytes_per_page": float(meta_per_page),
            "gc_pause_p99_ms": float(np.percentile(pauses, 99)) / 1e6}
