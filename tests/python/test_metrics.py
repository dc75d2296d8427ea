"""mmsb.metrics (Prometheus endpoint, scraped over localhost) and the package's `logging` lines."""

from __future__ import annotations

import gc
import logging
import os
import socket
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest

prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

import mmsb  # noqa: E402
import mmsb.metrics  # noqa: E402
from log_files import last_record  # noqa: E402

MEMORY_KINDS = {"data", "arena_slack", "metadata", "graph", "index", "cache", "log", "queue", "mirror"}
# metric (with _total) -> bus.stats() key: every counter an operator watches
COUNTERS = {
    "mmsb_deltas_applied_total": "deltas_applied", "mmsb_applied_bytes_total": "bytes_applied",
    "mmsb_commits_total": "commits", "mmsb_pages_created_total": "pages_created",
    "mmsb_pages_deleted_total": "pages_deleted", "mmsb_propagation_waves_total": "waves",
    "mmsb_recomputes_total": "recomputes", "mmsb_memo_skips_total": "memo_skips", "mmsb_cutoffs_total": "cutoffs",
    "mmsb_derived_deltas_total": "derived_deltas", "mmsb_events_total": "events",
    "mmsb_handler_errors_total": "handler_errors", "mmsb_submits_total": "submits",
    "mmsb_submits_rejected_total": "submits_rejected", "mmsb_submits_discarded_total": "submits_discarded",
    "mmsb_ticks_total": "ticks", "mmsb_tick_overruns_total": "tick_overruns",
    "mmsb_validation_failures_total": "validation_failures", "mmsb_gc_runs_total": "gc_runs",
    "mmsb_gc_freed_bytes_total": "gc_bytes_freed",
}
GAUGES = {"mmsb_queue_depth": "queue_depth", "mmsb_queue_high_water": "queue_high_water"}


def parse(text: str) -> dict:
    """{(sample name, frozenset(labels)): value} and the set of family types by name."""
    samples, types = {}, {}
    for fam in text_string_to_metric_families(text):
        types[fam.name] = fam.type
        for s in fam.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples, types


def scrape(server) -> tuple:
    with urllib.request.urlopen(server.url, timeout=10) as r:
        assert r.status == 200
        return parse(r.read().decode())


def value(samples: dict, name: str, **labels) -> float:
    return samples[(name, frozenset(labels.items()))]


def histogram(samples: dict, name: str, **labels) -> tuple:
    """[(le, cumulative count)] in exposition order of `le`, _count and _sum."""
    buckets = sorted(((float(dict(lab)["le"]), v) for (n, lab), v in samples.items()
                      if n == name + "_bucket" and labels.items() <= dict(lab).items()))
    return buckets, value(samples, name + "_count", **labels), value(samples, name + "_sum", **labels)


def check_cumulative(buckets: list, count: float) -> None:
    les = [le for le, _ in buckets]
    assert les == sorted(les) and les[-1] == float("inf")
    counts = [c for _, c in buckets]
    assert all(a <= b for a, b in zip(counts, counts[1:])), counts
    assert counts[-1] == count


def workload(bus) -> dict:
    """Commits, a batch, submissions, ticks and a gc on `bus`; returns what it did, counted here."""
    pages = [bus.create_page(1024) for _ in range(4)]
    for i in range(10):
        pages[i % 4].write(8 * i, b"abcdefgh")
    batch = mmsb.DeltaBatch(np.array([p.id for p in pages], np.uint64), np.zeros(4, np.uint64),
                            np.full(4, 16, np.uint64), np.ones(64, np.uint8))
    bus.apply_batch(batch)
    for t in range(3):
        for p in pages[:2]:
            bus.submit(mmsb.Delta.at(p, 100 + t, b"xy"))
        bus.tick()
    bus.delete_page(pages[3])
    bus.gc()
    return {"deltas": 10 + 4 + 6, "commits": 10 + 1 + 3, "ticks": 3, "submits": 6, "pages": 3}


@pytest.fixture
def served():
    bus = mmsb.Bus()
    server = mmsb.metrics.serve(bus)
    yield bus, server
    server.close()
    bus.close()


def test_counters_and_gauges_equal_the_bus_stats_and_the_work_done(served):
    bus, server = served
    did = workload(bus)
    samples, types = scrape(server)
    stats = bus.stats()
    for metric, key in COUNTERS.items():
        assert value(samples, metric) == stats[key], metric
        assert types[metric[: -len("_total")]] == "counter"
    for metric, key in GAUGES.items():
        assert value(samples, metric) == stats[key], metric
    assert value(samples, "mmsb_deltas_applied_total") == did["deltas"]
    assert value(samples, "mmsb_commits_total") == did["commits"]
    assert value(samples, "mmsb_ticks_total") == did["ticks"]
    assert value(samples, "mmsb_submits_total") == did["submits"]
    assert value(samples, "mmsb_gc_runs_total") == 1
    assert value(samples, "mmsb_pages") == did["pages"] == len(bus)
    assert value(samples, "mmsb_lsn") == bus.lsn
    assert value(samples, "mmsb_queue_capacity") == bus.queue_capacity
    assert value(samples, "mmsb_up") == 1 and value(samples, "mmsb_scrape_errors_total") == 0


def test_commit_and_tick_histograms_are_cumulative_and_count_every_commit_and_tick(served):
    bus, server = served
    did = workload(bus)
    samples, types = scrape(server)
    for name, kind, n in (("mmsb_commit_seconds", "commit", did["commits"]),
                          ("mmsb_tick_seconds", "tick", did["ticks"])):
        assert types[name] == "histogram"
        buckets, count, total = histogram(samples, name)
        check_cumulative(buckets, count)
        assert count == n
        lat = bus.latency(kind)
        assert total == pytest.approx(lat["sum_ns"] / 1e9, rel=1e-12)
        # Every bound counts exactly the engine's buckets at or below it ...
        for le, c in buckets[:-1]:
            assert c == sum(k for _, upper, k in lat["buckets"] if upper <= round(le * 1e9)), le
        # ... so the slowest one lies between the first bound that holds everything and the one before.
        first_full = next(i for i, (_, c) in enumerate(buckets) if c == count)
        assert lat["max_ns"] / 1e9 <= buckets[first_full][0]
        assert first_full == 0 or lat["max_ns"] / 1e9 > buckets[first_full - 1][0]


def test_tick_phase_histogram_counts_each_tick_since_serve(served):
    bus, server = served
    page = bus.create_page(64)
    reports = [bus.tick()]  # an empty tick has phases too
    for i in range(4):
        bus.submit(mmsb.Delta.at(page, i, b"z"))
        reports.append(bus.tick())
    samples, _ = scrape(server)
    for phase in ("drain", "apply", "propagate", "validate", "gc"):
        buckets, count, total = histogram(samples, "mmsb_tick_phase_seconds", phase=phase)
        check_cumulative(buckets, count)
        assert count == len(reports) == bus.stats().ticks
        assert total == pytest.approx(sum(r.phase_ns[phase] for r in reports) / 1e9)


def test_ticks_before_the_collector_existed_are_not_in_the_phase_histogram():
    with mmsb.Bus() as bus:
        bus.tick()
        bus.tick()
        c = mmsb.metrics.collector(bus)
        r = bus.tick()
        samples, _ = parse(mmsb.metrics.generate_latest(c).decode())
        _, count, total = histogram(samples, "mmsb_tick_phase_seconds", phase="apply")
        assert count == 1 and total == pytest.approx(r.phase_ns["apply"] / 1e9)
        c.close()
        bus.tick()  # not recorded once closed
        samples, _ = parse(mmsb.metrics.generate_latest(c).decode())
        assert histogram(samples, "mmsb_tick_phase_seconds", phase="apply")[1] == 1


def test_gc_pause_histogram_records_explicit_and_tick_gcs(served):
    bus, server = served
    g1, g2 = bus.gc(), bus.gc()
    bus.configure_tick(memory_budget=1)  # every tick is over it
    t = bus.tick()
    assert t.gc is not None
    samples, _ = scrape(server)
    buckets, count, total = histogram(samples, "mmsb_gc_pause_seconds")
    check_cumulative(buckets, count)
    assert count == 3
    assert total == pytest.approx((g1.pause_ns + g2.pause_ns + t.gc.pause_ns) / 1e9)


def test_memory_kinds_are_all_present_and_sum_to_the_total(served):
    bus, server = served
    workload(bus)
    samples, _ = scrape(server)
    kinds = {dict(lab)["kind"]: v for (n, lab), v in samples.items() if n == "mmsb_memory_bytes"}
    assert set(kinds) == MEMORY_KINDS
    mem = bus.memory()
    assert sum(kinds.values()) == mem.total_bytes
    assert kinds["data"] == mem.data_bytes and kinds["log"] == mem.log_bytes


def test_memory_kinds_sum_to_the_total_with_host_mirrors_of_device_pages(devices):
    with mmsb.Bus() as bus:
        p = bus.create_page(1 << 16, location="cuda:0")
        p.write(0, b"x")
        np.asarray(p)  # a host mirror of the device page
        server = mmsb.metrics.serve(bus)
        try:
            samples, _ = scrape(server)
        finally:
            server.close()
        kinds = {dict(lab)["kind"]: v for (n, lab), v in samples.items() if n == "mmsb_memory_bytes"}
        mem = bus.memory()
        assert kinds["mirror"] == mem.mirror_bytes > 0
        assert sum(kinds.values()) == mem.total_bytes


def segment_bytes(path) -> int:
    return sum(os.path.getsize(os.path.join(path, n)) for n in os.listdir(path) if n.startswith("seg-"))


def test_log_bytes_total_equals_every_segment_written_across_segment_switches(tmp_path):
    path = tmp_path / "b"
    with mmsb.Bus(path) as bus, mmsb.metrics.serve(bus) as server:
        page = bus.create_page(256)
        for i in range(4):
            scrape(server)  # sees the current segment ...
            page.write(i, b"d" * 40)  # ... grow after that ...
            bus.checkpoint()  # ... and stop growing: the next write goes to a new one
        page.write(0, b"e")
        assert len([n for n in os.listdir(path) if n.startswith("seg-")]) == 5
        assert value(scrape(server)[0], "mmsb_log_bytes_total") == segment_bytes(path)


def test_log_bytes_total_counts_segment_bytes_and_never_drops_with_retention(tmp_path):
    path = tmp_path / "b"
    with mmsb.Bus(path, retention=1) as bus, mmsb.metrics.serve(bus) as server:
        page = bus.create_page(256)
        page.write(0, b"a" * 100)
        samples, types = scrape(server)
        assert types["mmsb_log_bytes"] == "counter"
        assert value(samples, "mmsb_log_bytes_total") == segment_bytes(path)
        seen = [value(samples, "mmsb_log_bytes_total")]
        for i in range(3):
            page.write(i, b"b" * 50)
            scrape(server)  # sees the segment grow before the checkpoint's retention removes it
            bus.checkpoint()
            page.write(0, b"c")
            seen.append(value(scrape(server)[0], "mmsb_log_bytes_total"))
        assert seen == sorted(seen) and len(set(seen)) == len(seen)
        assert seen[-1] > segment_bytes(path)  # removed segments stay counted
    with mmsb.Bus() as bus:
        samples, types = parse(mmsb.metrics.generate_latest(bus).decode())
        assert "mmsb_log_bytes" not in types  # an in-memory bus writes no log files


def test_close_frees_the_port_and_is_idempotent():
    with mmsb.Bus() as bus:
        server = mmsb.metrics.serve(bus)
        port, url = server.port, server.url
        assert url == f"http://127.0.0.1:{port}/metrics" and port > 0
        server.close()
        server.close()
        assert server.closed
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(url, timeout=5)
        with mmsb.metrics.serve(bus, port=port) as again:  # the same port is free again
            assert again.port == port and value(scrape(again)[0], "mmsb_up") == 1
        assert bus._instance_id not in mmsb._report_hooks  # no bookkeeping left behind


def test_a_closed_or_dropped_bus_scrapes_as_down_without_an_error(caplog):
    bus = mmsb.Bus()
    with mmsb.metrics.serve(bus) as server, caplog.at_level(logging.WARNING, logger="mmsb"):
        bus.close()
        samples, types = scrape(server)
        assert value(samples, "mmsb_up") == 0 and value(samples, "mmsb_scrape_errors_total") == 0
        assert "mmsb_commits" not in types
        del bus
        gc.collect()
        assert value(scrape(server)[0], "mmsb_up") == 0
    assert not caplog.records


def test_a_failing_read_is_counted_logged_and_never_breaks_the_endpoint(served, monkeypatch, caplog):
    bus, server = served

    def broken(self):
        raise RuntimeError("memory walk failed")

    monkeypatch.setattr(mmsb.Bus, "memory", broken)
    with caplog.at_level(logging.ERROR, logger="mmsb"):
        samples, _ = scrape(server)
    assert value(samples, "mmsb_up") == 0 and value(samples, "mmsb_scrape_errors_total") == 1
    assert "memory walk failed" in caplog.text
    monkeypatch.undo()
    assert value(scrape(server)[0], "mmsb_up") == 1


def test_serving_a_closed_bus_or_a_non_bus_is_a_typed_error():
    bus = mmsb.Bus()
    bus.close()
    for make in (mmsb.metrics.serve, mmsb.metrics.collector, mmsb.metrics.generate_latest):
        with pytest.raises(mmsb.ClosedError, match="closed"):
            make(bus)
    with pytest.raises(mmsb.InvalidArgumentError, match="mmsb.Bus"):
        mmsb.metrics.serve("state.mmsb")


@pytest.mark.parametrize("port", [-1, 65536, "9464", True, 1.5])
def test_a_bad_port_is_a_clear_error(bus, port):
    with pytest.raises(mmsb.InvalidArgumentError, match="port must be an int in 0..65535"):
        mmsb.metrics.serve(bus, port=port)


def test_a_port_in_use_or_a_bad_address_names_it(bus):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(mmsb.InvalidArgumentError, match=f"127.0.0.1:{port}.*port=0"):
            mmsb.metrics.serve(bus, port=port)
    with pytest.raises(mmsb.InvalidArgumentError, match="addr"):
        mmsb.metrics.serve(bus, addr="")
    assert bus._instance_id not in mmsb._report_hooks  # the failed starts left nothing registered


def test_a_read_only_bus_from_at_is_servable(bus):
    page = bus.create_page(64)
    page.write(0, b"old")
    lsn = bus.lsn
    page.write(0, b"new")
    with bus.at(lsn) as old, mmsb.metrics.serve(old) as server:
        samples, _ = scrape(server)
        assert value(samples, "mmsb_up") == 1 and value(samples, "mmsb_lsn") == lsn
        assert value(samples, "mmsb_pages") == 1
        info = next(dict(lab) for (n, lab), _ in samples.items() if n == "mmsb_bus_info")
        assert info["read_only"] == "true"


def test_the_collector_goes_into_a_users_registry_beside_their_metrics(bus):
    registry = prometheus_client.CollectorRegistry()
    mine = prometheus_client.Counter("app_requests", "Requests.", registry=registry)
    mine.inc(3)
    with mmsb.metrics.serve(bus, registry=registry) as server:
        bus.create_page(8).write(0, b"x")
        samples, _ = scrape(server)
        assert value(samples, "app_requests_total") == 3 and value(samples, "mmsb_commits_total") == 1
        # describe() names every metric, so a second bus in the same registry is refused
        with mmsb.Bus() as other, pytest.raises(mmsb.InvalidArgumentError, match="registry"):
            mmsb.metrics.serve(other, registry=registry)
    assert "mmsb_commits_total" not in prometheus_client.generate_latest(registry).decode()


def test_scrapes_during_commits_see_monotone_counters(served):
    bus, server = served
    page = bus.create_page(4096)
    # A Python recompute takes the GIL back while the commit lock is held: a scrape waiting for
    # that lock must have let go of the GIL, or this deadlocks.
    bus.depend(bus.create_page(4096), on=[page], fn=lambda out, x: np.copyto(out, x))
    seen, errors, done = [], [], threading.Event()

    def scraper():
        try:
            while not done.is_set():
                s, _ = scrape(server)
                seen.append((value(s, "mmsb_deltas_applied_total"), histogram(s, "mmsb_commit_seconds")[1]))
        except Exception as e:  # noqa: BLE001  (reported by the main thread)
            errors.append(e)

    t = threading.Thread(target=scraper)
    t.start()
    for i in range(300):
        page.write(i % 4000, b"q")
        if i % 50 == 0:
            bus.tick()
    done.set()
    t.join()
    assert not errors and seen
    for (d1, c1), (d2, c2) in zip(seen, seen[1:]):
        assert d1 <= d2 and c1 <= c2


# ---- logging (logger "mmsb") -----------------------------------------------------------------

def mmsb_records(caplog, level):
    return [r for r in caplog.records if r.name == "mmsb" and r.levelno == level]


def test_the_package_adds_only_a_null_handler():
    handlers = logging.getLogger("mmsb").handlers
    assert any(isinstance(h, logging.NullHandler) for h in handlers)
    assert all(isinstance(h, logging.NullHandler) for h in handlers)


def test_open_recovery_and_a_torn_tail_are_logged(tmp_path, caplog):
    path = tmp_path / "b"
    with caplog.at_level(logging.INFO, logger="mmsb"):
        with mmsb.Bus(path) as bus:
            bus.create_page(64).write(0, b"abc")
        assert f"opened bus {path} at lsn 0" in caplog.text
        caplog.clear()
        with mmsb.open(path) as bus:
            assert bus.lsn == 2
        assert f"opened bus {path} at lsn 2 (checkpoint lsn 0, 2 log records replayed)" in caplog.text
        seg, _, end = last_record(path)
        os.truncate(seg, end - 16)  # cut the last record short, like a crash mid-write
        caplog.clear()
        with mmsb.open(path) as bus:
            assert bus.recovery["truncated_tail"] and bus.lsn == 1
    warnings = mmsb_records(caplog, logging.WARNING)
    assert len(warnings) == 1 and f"cut a torn tail off the log of {path}" in warnings[0].getMessage()
    assert f"opened bus {path} at lsn 1" in caplog.text


def test_checkpoint_and_gc_are_logged(tmp_path, caplog):
    with mmsb.Bus(tmp_path / "b") as bus, caplog.at_level(logging.DEBUG, logger="mmsb"):
        pages = [bus.create_page(4096) for _ in range(64)]
        lsn = bus.checkpoint()
        for p in pages:
            bus.delete_page(p)
        del pages, p  # Page objects pin their memory
        freed = bus.gc()
        assert freed.bytes_freed > 0
        idle = bus.gc()
    info = [r.getMessage() for r in mmsb_records(caplog, logging.INFO)]
    assert f"checkpoint of {tmp_path / 'b'} written at lsn {lsn}" in info
    assert any(f"gc of {tmp_path / 'b'} (gc()) freed {freed.bytes_freed} bytes" in m for m in info)
    debug = [r.getMessage() for r in mmsb_records(caplog, logging.DEBUG)]
    assert idle.bytes_freed == 0 and any("freed 0 bytes" in m for m in debug)  # routine: debug only


def test_tick_overruns_rejections_and_validation_failures_are_logged(bus, caplog):
    a = bus.create_page(shape=8, dtype=np.float64)
    c = bus.create_page(shape=8, dtype=np.float64)
    calls = [0]

    def impure(out, x):
        calls[0] += 1
        out[:] = x + calls[0]  # not a function of its parent: the sampled validation catches it

    bus.depend(c, on=[a], fn=impure)
    gone = bus.create_page(8)
    stale = mmsb.Delta.at(gone, 0, b"x")
    bus.delete_page(gone)
    bus.configure_tick(apply=1e-9, validate_sample=1)
    bus.submit(mmsb.Delta.at(a, 0, np.float64(1).tobytes()))
    bus.submit(stale)
    with caplog.at_level(logging.WARNING, logger="mmsb"):
        r = bus.tick()
    assert r.overruns == ["apply"] and r.rejected == 1 and r.validation_failures == [c.id]
    warnings = [x.getMessage() for x in mmsb_records(caplog, logging.WARNING)]
    assert any(m.startswith(f"tick {r.tick} of in-memory bus over budget in apply (drain ") for m in warnings)
    assert any(f"rejected 1 submissions (not applied); first: {r.rejections[0]}" in m for m in warnings)
    errors = [x.getMessage() for x in mmsb_records(caplog, logging.ERROR)]
    assert errors == [f"tick {r.tick} of in-memory bus: sampled validation found derived pages [{c.id}] "
                      "differing from a recompute"]


def test_a_tick_within_budget_logs_nothing(bus, caplog):
    bus.configure_tick(total=60.0)
    with caplog.at_level(logging.DEBUG, logger="mmsb"):
        bus.tick()
    assert not [r for r in caplog.records if r.name == "mmsb"]


def test_closing_with_queued_submissions_warns_with_the_count(caplog):
    bus = mmsb.Bus()
    page = bus.create_page(16)
    for i in range(3):
        bus.submit(mmsb.Delta.at(page, i, b"s"))
    with caplog.at_level(logging.WARNING, logger="mmsb"):
        with bus:
            pass
        bus.close()  # closing again discards nothing more
    warnings = [r.getMessage() for r in mmsb_records(caplog, logging.WARNING)]
    assert warnings == ["closed in-memory bus with 3 queued submissions discarded (never ticked)"]
    assert bus.stats().submits_discarded == 3
