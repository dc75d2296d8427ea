"""Validator 7, memory: the real bytes a bus holds for a million small pages, the metadata each
page costs, and how long bus.gc() pauses under churn (DESIGN §1 "Memory and GC", §5 row 7).

Workload (full; quick in brackets): mmsb.Bus(history=False) with 1,000,000 [50,000] raw pages
of 960 bytes, each written once (DeltaBatch chunks of 65,536 full-page rows) so that every page
is resident. The NumPy buffers the rows come from are allocated and touched before the baseline,
and every later write goes through them, so the process's resident-set growth (/proc/self/statm)
is the bus's own. Then 100 [20] rounds of churn, the live page count staying the same: 5,000 [250]
long-lived pages (0.5% of all), chosen at random, are deleted and as many new ones created and
written (they reuse the freed blocks); the cohort of 6,553 temporary pages (the last ones of
the fill at first: three 2 MiB arena slabs' worth of 960-byte blocks) is deleted; bus.gc() runs;
and a new cohort is created and written. The random deletions leave no slab wholly free, so each
gc() has the cohort's slabs to unmap, and must: one that releases no arena bytes fails the run.

Checks (the validator raises when one fails), after the fill and again after the churn:
bus.memory().total_bytes is the sum of its parts and metadata_bytes covers page_metadata_bytes
for every live page; after the fill, total_bytes is within 10% of the RSS growth. After the churn
the bus still has every live page with the bytes written to it (sampled).

Metrics: total_bytes (the DESIGN workload, 1M live pages after the fill: the larger of
memory().total_bytes and the RSS growth since the baseline, so that a memory() that
under-reports cannot hide bytes; the same figure after the churn is noted, not judged: it also
holds the 64-byte records of the randomly deleted pages, whose count the churn's length sets,
not the workload: gc() releases records only 4,096 consecutive ids at a time, as it does the
cohorts'), metadata_bytes_per_page
(memory().metadata_bytes / pages after the fill, the DESIGN workload of 1M live pages: the page
records the table holds, 64 bytes each, plus names and cold info, which these raw pages have
none of; the record slots the table allocates ahead in chunks are counted in arena_slack_bytes),
gc_pause_p99_ms (the p99 of each bus.gc() call's wall time as its caller sees it, perf_counter
around the call). Noted: RSS growth and each part of memory() after the fill; after the churn
the metadata per live page, the deleted pages and the bytes of the records still held for them
(metadata beyond the live pages' own records), the total and RSS growth; the bytes gc freed, and
of those the deleted pages' records it released; GcReport.pause_ns (the engine's own timing, under
its lock); and the fill at 50,000 pages with history on (cheap, so always measured first).
"""

from __future__ import annotations

import ctypes
import gc as pygc
import os
import time

import numpy as np

import mmsb

from ._framework import Context, validator

SIZE = 960
CHUNK = 65_536
SLAB = 2 << 20  # the arena carves 960-byte blocks from slabs of this size; gc() unmaps wholly free ones
COHORT = 3 * SLAB // SIZE  # at least one slab wholly its own, wherever the cohort starts in a slab
PARTS = ("data_bytes", "arena_slack_bytes", "metadata_bytes", "graph_bytes", "index_bytes", "cache_bytes",
         "log_bytes", "queue_bytes")


def _release_free_heap() -> None:
    """Hands memory that earlier work freed but the C allocator kept back to the OS
    (glibc malloc_trim), so that the new bus cannot reuse resident pages without the RSS
    growing, and the temporaries of the churn are not counted as the bus's. Without it, a run
    after other validators can see RSS grow by less than the bus allocates. A no-op where
    there is no glibc."""
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
        self.steps = np.arange(CHUNK, dtype=np.uint64)
        self.ids = np.ones(CHUNK, dtype=np.uint64)
        self.offsets = np.full(CHUNK, 0, dtype=np.uint64)  # np.zeros would leave it untouched
        self.lengths = np.full(CHUNK, SIZE, dtype=np.uint64)

    def expected(self, index: int) -> np.ndarray:
        return self.pool[index % CHUNK] + np.uint8((index // CHUNK) % 256)

    def write_consecutive(self, bus: mmsb.Bus, first: int, start: int, count: int) -> None:
        """Writes pages first + start .. first + start + count - 1 (count <= CHUNK)."""
        done = 0
        while done < count:  # at most two runs: the rows of `start`'s chunk, then the next chunk's
            i = start + done
            n = min(count - done, CHUNK - i % CHUNK)
            np.add(self.pool[i % CHUNK:i % CHUNK + n], np.uint8((i // CHUNK) % 256), out=self.buf[done:done + n])
            done += n
        np.add(self.steps[:count], np.uint64(first + start), out=self.ids[:count])
        bus.apply_batch(mmsb.DeltaBatch(self.ids[:count], self.offsets[:count], self.lengths[:count],
                                        self.buf[:count].reshape(-1)))


def _create_written(bus: mmsb.Bus, rows: _Rows, first: int, next_id: int, count: int) -> int:
    """Creates `count` pages, which must get ids next_id.., and writes them; returns the next id."""
    new = [bus.create_page(SIZE).id for _ in range(count)]
    if new != list(range(next_id, next_id + count)):
        raise RuntimeError(f"new page ids are not {next_id}..{next_id + count - 1}")
    rows.write_consecutive(bus, first, next_id - first, count)
    return next_id + count


def _checked(mem: mmsb.MemoryReport, pages: int, when: str) -> mmsb.MemoryReport:
    if mem["total_bytes"] != sum(mem[k] for k in PARTS):
        raise RuntimeError(f"{when}: memory().total_bytes {mem['total_bytes']} is not the sum of its parts {dict(mem)}")
    if mem["pages"] != pages or mem["metadata_bytes"] < mem["page_metadata_bytes"] * pages:
        raise RuntimeError(f"{when}: memory() accounts {mem['metadata_bytes']} metadata bytes for {mem['pages']} "
                           f"pages; {pages} pages of {mem['page_metadata_bytes']} bytes need more")
    return mem


def _fill(ctx: Context, pages: int, history: bool, rows: _Rows) -> tuple:
    """A bus of `pages` written pages; (bus, first id, memory report, RSS baseline, RSS growth), checked."""
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
    mem = _checked(bus.memory(), pages, f"history={history}")  # first: it waits for buffers reserved ahead
    grown = _rss() - rss0
    if abs(mem["total_bytes"] - grown) > 0.10 * grown:
        raise RuntimeError(f"history={history}: memory() reports {mem['total_bytes']} bytes but the RSS grew by "
                           f"{grown} ({mem['total_bytes'] / grown:.1%}): more than 10% apart")
    return bus, first, mem, rss0, grown


@validator(7, "memory", ("total_bytes", "metadata_bytes_per_page", "gc_pause_p99_ms"))
def run(ctx: Context) -> dict:
    pages = ctx.size(1_000_000, 50_000)
    rounds = ctx.size(100, 20)
    replaced = pages // 200
    rng = np.random.default_rng(ctx.seed)
    rows = _Rows(rng)
    side, _, side_mem, _, side_rss = _fill(ctx, 50_000, True, rows)
    side.close()
    del side
    ctx.note("history_on_50k_total_bytes", side_mem["total_bytes"])
    ctx.note("history_on_50k_log_bytes", side_mem["log_bytes"])
    ctx.note("history_on_50k_rss_growth", side_rss)

    bus, first, mem, rss0, grown = _fill(ctx, pages, False, rows)
    ctx.note("pages", pages)
    ctx.note("memory_total_bytes", mem["total_bytes"])
    ctx.note("rss_growth_bytes", grown)
    ctx.note("memory_over_rss", mem["total_bytes"] / grown)
    for k in PARTS:
        ctx.note(k, mem[k])

    live = np.arange(first, first + pages - COHORT, dtype=np.int64)  # the long-lived pages
    cohort = first + pages - COHORT
    next_id = first + pages
    walls, pauses, freed, records_freed = [], [], 0, 0
    for r in ctx.progress(range(rounds), total=rounds, desc="memory: churn + gc"):
        doomed = rng.choice(len(live), size=replaced, replace=False)
        for pid in live[doomed].tolist():
            bus.delete_page(pid)
        live = np.concatenate([np.delete(live, doomed), np.arange(next_id, next_id + replaced, dtype=np.int64)])
        next_id = _create_written(bus, rows, first, next_id, replaced)
        for pid in range(cohort, cohort + COHORT):
            bus.delete_page(pid)
        start = time.perf_counter()
        report = bus.gc()
        walls.append(time.perf_counter() - start)
        if report["arena_bytes_released"] == 0:
            raise RuntimeError(f"gc() in churn round {r + 1} released no arena bytes although the {COHORT} pages of "
                               f"a deleted cohort ({COHORT * SIZE} bytes) left slabs wholly free: {dict(report)}")
        pauses.append(report["pause_ns"])
        freed += report["bytes_freed"]
        records_freed += report["record_bytes_freed"]
        cohort, next_id = next_id, _create_written(bus, rows, first, next_id, COHORT)
    if len(bus) != pages:
        raise RuntimeError(f"the bus has {len(bus)} pages after the churn, expected {pages}")
    for pid in rng.choice(np.concatenate([live, np.arange(cohort, next_id)]), size=min(2_000, pages),
                          replace=False).tolist():
        if bus.page(pid).view().tobytes() != rows.expected(pid - first).tobytes():
            raise RuntimeError(f"page {pid} lost its content during churn and gc")
    _release_free_heap()  # the churn's own temporaries are not the bus's bytes
    after = _checked(bus.memory(), pages, "after the churn")
    after_grown = _rss() - rss0
    deleted = next_id - first - pages
    ctx.note("after_churn_total_bytes", after["total_bytes"])
    ctx.note("after_churn_rss_growth_bytes", after_grown)
    ctx.note("after_churn_metadata_bytes_per_live_page", after["metadata_bytes"] / pages)
    ctx.note("after_churn_deleted_pages", deleted)
    ctx.note("after_churn_deleted_record_bytes", after["metadata_bytes"] - after["page_metadata_bytes"] * pages)
    ctx.note("after_churn_arena_slack_bytes", after["arena_slack_bytes"])
    ctx.note("gc_bytes_freed", freed)
    ctx.note("gc_record_bytes_freed", records_freed)
    ctx.note("gc_pause_p50_ms", float(np.percentile(walls, 50)) * 1e3)
    ctx.note("gc_pause_max_ms", max(walls) * 1e3)
    ctx.note("gc_engine_pause_p99_ms", float(np.percentile(pauses, 99)) / 1e6)
    ctx.note("after_churn_total_bytes_max", max(after["total_bytes"], after_grown))
    ctx.note("total_bytes_from", "memory()" if mem["total_bytes"] >= grown else "RSS growth")
    bus.close()
    return {"total_bytes": int(max(mem["total_bytes"], grown)), "metadata_bytes_per_page": mem["metadata_bytes"] / pages,
            "gc_pause_p99_ms": float(np.percentile(walls, 99)) * 1e3}
