"""Jupyter reprs: every _repr_html_ states facts that match the API, escapes what users wrote,
is self-contained balanced HTML, cuts big things (a bus of 100k pages shows 20 rows), survives a
closed bus or a deleted page, and renders in a real kernel; plain reprs stay one short line."""

from __future__ import annotations

import html
import json
import re
import sys
from html.parser import HTMLParser

import numpy as np
import pytest

import mmsb
from mmsb import _html

EVIL = '<script>alert("x")</script>'
ALLOWED_TAGS = {"div", "span", "table", "tr", "td", "th", "pre", "svg", "rect", "line", "text", "br"}
VOID_TAGS = {"br"}


class Doc(HTMLParser):
    """Parses a repr and checks it as it goes: tags balance, only inline markup (no scripts, no
    styles, no links, no event handlers). Keeps the text, every table's cell texts and the rect
    fills."""

    def __init__(self, markup: str) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list = []
        self.problems: list = []
        self.tags: list = []
        self.texts: list = []
        self.tables: list = []
        self.fills: list = []
        self._open: list = []
        self.feed(markup)
        self.close()
        if self.stack:
            self.problems.append(f"unclosed {self.stack}")

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag not in ALLOWED_TAGS:
            self.problems.append(f"tag <{tag}>")
        for name, value in attrs:
            if name.startswith("on") or name in ("src", "href"):
                self.problems.append(f"attribute {name}={value!r}")
        if tag not in VOID_TAGS:
            self.stack.append(tag)
        if tag == "table":
            self._open.append([])
            self.tables.append(self._open[-1])
        elif tag == "tr":
            self._open[-1].append([])
        elif tag in ("td", "th"):
            self._open[-1][-1].append("")
        elif tag == "rect":
            self.fills.append(dict(attrs)["fill"])

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in VOID_TAGS:
            self.stack.pop()

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()
        if tag == "table":
            self._open.pop()

    def handle_data(self, data):
        self.texts.append(data)
        if self._open and self._open[-1] and self._open[-1][-1]:
            self._open[-1][-1][-1] += data

    @property
    def text(self) -> str:
        return "".join(self.texts)

    def table(self, first_header: str) -> list:
        """The rows of the table whose first header cell is `first_header` (header row dropped)."""
        found = [t for t in self.tables if t and t[0] and t[0][0] == first_header]
        assert len(found) == 1, [t[0] for t in self.tables if t]
        return found[0][1:]


def doc(markup: str) -> Doc:
    assert isinstance(markup, str)
    d = Doc(markup)
    assert d.problems == []
    return d


def kv(d: Doc) -> dict:
    """Every label -> value pair of the label/value tables (labels in even cells)."""
    out = {}
    for t in d.tables:
        for row in t:
            out.update(zip(row[0::2], row[1::2]))
    return out


@pytest.fixture(scope="module")
def big_bus():
    b = mmsb.Bus()
    for i in range(100_000):
        b.create_page(64, name=f"n{i}" if i % 3 == 0 else None)
    yield b
    b.close()


# ---- Bus ------------------------------------------------------------------------------------------

def test_bus_html_states_the_bus_facts(tmp_path):
    with mmsb.Bus(tmp_path / "b", durability="fsync") as bus:
        p = bus.create_page(data=np.arange(6, dtype=np.int32).reshape(2, 3), name="grid")
        raw = bus.create_page(100)
        p.write(0, b"\x01\x00\x00\x00")
        bus.propagation = "deferred"
        d = doc(bus._repr_html_())
        facts = kv(d)
        assert str(tmp_path / "b") in d.text
        assert facts["durability"] == "fsync" and facts["propagation"] == "deferred"
        assert facts["lsn"] == f"{bus.lsn:,}" and facts["pages"] == str(len(bus))
        mem = bus.memory()
        assert facts["memory"].startswith(_html.human_bytes(mem.total_bytes))
        top = max((k for k in mem if k.endswith("_bytes") and k not in ("total_bytes", "page_metadata_bytes")),
                  key=lambda k: mem[k])
        assert _html.human_bytes(mem[top]) in facts["memory"]  # the largest part is named
        rows = d.table("id")
        assert rows == [[str(p.id), "grid", "int32", "(2, 3)", str(p.epoch), "cpu", "24 B"],
                        [str(raw.id), "", "raw", "", "0", "cpu", "100 B"]]


def test_bus_html_truncates_a_bus_of_100k_pages(big_bus):
    d = doc(big_bus._repr_html_())
    rows = d.table("id")
    assert len(rows) == _html.MAX_ROWS + 1
    assert [int(r[0]) for r in rows[:-1]] == list(range(1, _html.MAX_ROWS + 1))
    assert [r[1] for r in rows[:-1]] == [big_bus.page(i).name or "" for i in range(1, _html.MAX_ROWS + 1)]
    assert rows[-1] == [f"… {len(big_bus) - _html.MAX_ROWS:,} more pages"]
    assert kv(d)["pages"] == "100,000"


def test_bus_rows_skip_deleted_pages(bus):
    pages = [bus.create_page(64) for _ in range(200)]
    for p in pages[:150]:  # more holes than the probe covers: the vectorised fallback picks them
        bus.delete_page(p)
    rows = doc(bus._repr_html_()).table("id")
    assert [int(r[0]) for r in rows[:-1]] == [p.id for p in pages[150:170]]
    assert rows[-1] == ["… 30 more pages"]


def test_closed_bus_and_its_pages_say_so():
    bus = mmsb.Bus()
    p = bus.create_page(64, name="x")
    bus.close()
    d = doc(bus._repr_html_())
    assert "closed" in d.text and kv(d)["lsn"] == str(bus.lsn)
    assert "closed" in doc(p._repr_html_()).text


def test_read_only_bus_at_an_old_lsn(bus):
    p = bus.create_page(data=np.zeros(4))
    p.write(0, np.float64(2).tobytes())
    with bus.at(bus.lsn - 1) as old:
        d = doc(old._repr_html_())
        assert kv(d)["read only"] == "yes" and kv(d)["lsn"] == str(old.lsn)
        assert "heat-map" in doc(old.page(p.id)._repr_html_()).text


# ---- Page -----------------------------------------------------------------------------------------

def test_page_html_states_the_page_facts(bus):
    a = bus.create_page(data=np.arange(8.0), name="a", metadata={"unit": "m", "blob": b"\x00\xff"})
    b = bus.create_page(shape=(8,), dtype="float64", name="b")
    bus.depend(b, on=[a], fn=mmsb.ops.copy)
    a.write(0, np.float64(3).tobytes())
    d = doc(b._repr_html_())
    facts = kv(d)
    assert d.text.startswith("mmsb.Page 2 'b'")
    assert facts["layout"] == "float64 (8,)" and facts["size bytes"] == "64 B"
    assert facts["epoch"] == str(b.epoch) and facts["last lsn"] == str(b.last_lsn)
    assert facts["location"] == "cpu" and facts["stale"] == "no"
    assert facts["derived"] == f"copy of pages [{a.id}]"
    meta = doc(a._repr_html_()).table("metadata")
    assert meta == [["blob", "2 bytes: 00 ff"], ["unit", "m"]]
    bus.propagation = "deferred"
    a.write(8, np.float64(4).tobytes())
    assert kv(doc(b._repr_html_()))["stale"] == "yes"
    assert kv(doc(bus._repr_html_()))["stale pages"] == "1"


def test_big_deferred_bus_does_not_list_its_stale_pages(bus, monkeypatch):
    a = bus.create_page(data=np.zeros(2))
    b = bus.create_page(shape=(2,), dtype="float64")
    bus.depend(b, on=[a], fn=mmsb.ops.copy)
    bus.propagation = "deferred"
    a.write(0, np.float64(1).tobytes())
    monkeypatch.setattr(_html, "STALE_LIST_LIMIT", 1)  # stands in for a bus of 20k+ pages
    assert kv(doc(bus._repr_html_()))["stale pages"].startswith("not listed above 1 pages")
    assert kv(doc(b._repr_html_()))["stale"].startswith("not listed")
    bus.propagation = "eager"  # an eager bus's stale set stays short: always counted
    assert kv(doc(bus._repr_html_()))["stale pages"] == "1"
    bus.propagate()
    assert kv(doc(bus._repr_html_()))["stale pages"] == "0"


def test_user_text_is_escaped(bus):
    p = bus.create_page(data=np.ones(4), name=EVIL, metadata={EVIL: EVIL, "k": f"<img src=x onerror=alert(1)>"})
    for markup in (p._repr_html_(), bus._repr_html_()):
        d = doc(markup)  # no <script>/<img> tag, no onerror attribute
        assert "script" not in d.tags and "img" not in d.tags
        assert EVIL in d.text
    assert "<img src=x onerror=alert(1)>" in doc(p._repr_html_()).text


def test_deleted_page_says_so(bus):
    p = bus.create_page(64)
    bus.delete_page(p)
    d = doc(p._repr_html_())
    assert "deleted" in d.text and f"page {p.id}" in d.text


def test_heatmap_shows_nan_distinctly(bus):
    p = bus.create_page(data=np.array([1.0, np.nan, 3.0, 2.0]))
    d = doc(p._repr_html_())
    nan = _html._NAN_COLOUR
    assert d.fills[1] == nan and nan not in d.fills[:1] + d.fills[2:]
    assert d.fills[0] == "#440154" and d.fills[2] == "#fde725"  # the ends of the colour scale
    assert "NaN in 1 cell" in d.text


def test_heatmap_of_a_big_2d_page_keeps_a_single_nan(bus):
    a = np.arange(100 * 300, dtype=np.float32).reshape(100, 300)
    a[50, 150] = np.nan
    p = bus.create_page(data=a)
    d = doc(p._repr_html_())
    assert len(d.fills) == _html.HEAT_CELLS ** 2
    assert d.fills.count(_html._NAN_COLOUR) == 1
    starts_r, starts_c = (np.arange(32) * 100) // 32, (np.arange(32) * 300) // 32
    cell = (np.searchsorted(starts_r, 50, "right") - 1) * 32 + np.searchsorted(starts_c, 150, "right") - 1
    assert d.fills.index(_html._NAN_COLOUR) == cell
    assert "mean of ≤40 values" in d.text  # 100/32 rows x 300/32 columns per cell, at most 4 x 10


def test_downsample_means_blocks_and_folds_1d():
    grid, per_cell, used = _html.downsample(np.arange(2048.0))
    assert grid.shape == (32, 32) and per_cell == 2 and used == 1024
    assert grid[0, 0] == 0.5 and grid[-1, -1] == 2046.5
    grid, per_cell, used = _html.downsample(np.arange(40.0))  # 40 cells: a row of 32, then 8
    assert grid.shape == (2, 32) and used == 40 and np.isnan(grid[1, 8:]).all()
    grid, _, _ = _html.downsample(np.ones((3, 5), dtype=np.int64))
    assert grid.shape == (3, 5) and (grid == 1).all()


def test_million_element_page_is_cut_to_the_grid(bus):
    p = bus.create_page(data=np.linspace(0, 1, 1_000_000))
    d = doc(p._repr_html_())
    assert len(d.fills) == -(-1_000_000 // -(-1_000_000 // 1024))  # cells actually used
    assert d.fills[0] == "#440154" and d.fills[-1] == "#fde725"


def test_raw_page_gets_a_hex_dump(bus):
    p = bus.create_page(4096)
    p.write(0, b"hi<&>\x00\x7f")
    d = doc(p._repr_html_())
    assert "first 256 of 4,096 bytes" in d.text
    assert "00000000  68 69 3c 26 3e 00 7f 00  00 00 00 00 00 00 00 00  hi<&>..." in d.text
    assert d.text.count("\n") == 256 // 16 - 1 and "000000f0" in d.text and "00000100" not in d.text


class _OnDevice:
    """A real page that claims to live on a GPU; touching its data fails the test."""

    def __init__(self, page):
        self._page = page

    location = "cuda:0"

    def __getattr__(self, name):
        if name in ("view", "read", "snapshot", "__array__", "__dlpack__"):
            raise AssertionError(f"the repr read device data via {name}")
        return getattr(self._page, name)

    def __repr__(self):
        return repr(self._page)


def test_device_page_is_not_read(bus):
    p = bus.create_page(data=np.arange(16.0), name="dev")
    d = doc(_html.page_html(_OnDevice(p)))
    assert kv(d)["location"] == "cuda:0" and "data on cuda:0: no preview" in d.text


@pytest.mark.skipif(not mmsb.cuda.is_available(), reason="needs a CUDA device")
def test_real_device_page_renders(bus):
    p = bus.create_page(shape=(64,), dtype="float32", location="cuda:0")
    assert "no preview" in doc(p._repr_html_()).text


# ---- reports --------------------------------------------------------------------------------------

def test_stats_html_lists_every_counter(bus):
    bus.create_page(64).write(0, b"abc")
    s = bus.stats()
    facts = kv(doc(s._repr_html_()))
    assert len(facts) == len(s)
    for k, v in s.items():
        label = k.replace("_", " ")
        assert facts[label] == (_html.human_ns(v) if k.endswith("_ns") else f"{v:,}"), k


def test_print_stats_prints_every_counter_once_with_the_colons_aligned(bus, capsys):
    bus.create_page(64).write(0, b"abc")
    bus.print_stats()
    lines = capsys.readouterr().out.splitlines()
    s = bus.stats()
    assert len(lines) == len(s)
    assert {line.split(":")[0].strip(): int(line.split(":")[1]) for line in lines} == dict(s)
    assert len({line.index(":") for line in lines}) == 1, lines


def test_tick_html_shows_phases_overruns_and_rejections(bus):
    p = bus.create_page(64)
    bus.configure_tick(apply=1e-9)
    bus.submit(mmsb.Delta.at(p, 0, b"x"))
    bus.submit(mmsb.Delta.at(p, 60, b"too long"))
    r = bus.tick()
    d = doc(r._repr_html_())
    assert d.text.startswith(f"mmsb tick {r.tick}: lsn ({r.first_lsn}, {r.last_lsn}] in {_html.human_ns(r.total_ns)}")
    phases = {row[0]: row for row in d.table("phase")}
    assert set(phases) == set(r.phase_ns)
    assert phases["apply"][1] == _html.human_ns(r.phase_ns["apply"]) and phases["apply"][4] == "over budget"
    assert phases["drain"][4] == ""
    assert d.table("rejected submissions") == [[r.rejections[0]]]
    assert kv(d)["submissions"] == "2" and kv(d)["rejected"] == "1"


def test_latency_html_merges_buckets_without_losing_the_tail():
    buckets = [(2 ** i, 2 ** (i + 1) - 1, i + 1) for i in range(45)]
    r = mmsb.LatencyReport(count=sum(c for *_, c in buckets), p50_ns=1, p99_ns=2, max_ns=2 ** 45, buckets=buckets)
    rows = doc(r._repr_html_()).table("latency")
    assert len(rows) == _html.MAX_ROWS
    assert sum(int(row[1].replace(",", "")) for row in rows) == r.count
    assert rows[-1][0].endswith(_html.human_ns(buckets[-1][1]))


def test_validation_html_is_the_check_table(tmp_path):
    ok = mmsb.validate(quick=True, only=["purity"], progress=False)
    d = doc(ok._repr_html_())
    assert d.text.startswith(f"mmsb.validate: {ok.summary} (quick)")
    (row,) = d.table("")
    res = ok.results[0]
    assert row[0] == "✓" and row[1:3] == [str(res["number"]), "purity"]
    for c in res["checks"]:
        assert f"✓ {c['metric']} = {c['value']} (target {c['op']} {c['threshold']} {c['unit']})" in row[3]
    targets = tmp_path / "t.json"
    targets.write_text(json.dumps({"validators": {"purity": {"checks": [
        {"metric": "law_failures", "op": ">", "threshold": 5, "unit": "laws"}]}}}))
    bad = mmsb.validate(targets, quick=True, only=["purity"], progress=False)
    (row,) = doc(bad._repr_html_()).table("")
    assert row[0] == "✗" and "✗ law_failures = 0 (target > 5 laws)" in row[3]
    assert repr(bad) == "ValidationReport(0/1 PASS, quick, failed=['purity'])"


def test_page_ages_html_truncates(big_bus):
    ages = big_bus.page_ages()
    d = doc(ages._repr_html_())
    rows = d.table("id")
    assert len(rows) == _html.MAX_ROWS + 1 and rows[-1] == [f"… {len(ages.ids) - _html.MAX_ROWS:,} more pages"]
    assert rows[0] == [str(ages.ids[0]), str(ages.last_lsn[0]), str(ages.age[0])]
    assert kv(d)["oldest age"] == f"{int(ages.age.max()):,}"


def test_provenance_html_cuts_a_wide_dag(bus):
    parents = [bus.create_page(data=np.full(4, float(i))) for i in range(50)]
    child = bus.create_page(shape=(4,), dtype="float64")
    bus.depend(child, on=parents, fn=mmsb.ops.reduce("sum_product"))
    parents[0].write(0, np.float64(5).tobytes())
    prov = bus.provenance(child)
    d = doc(prov._repr_html_())
    assert len(prov) == 51 and kv(d)["deltas"] == "51"
    assert len(d.fills) == 1 + 16 and "… 34 more" in d.text
    assert d.tags.count("line") == 16  # edges between drawn nodes only


def test_provenance_html_cuts_a_deep_chain(bus):
    prev = first = bus.create_page(data=np.zeros(2))
    for _ in range(30):
        nxt = bus.create_page(shape=(2,), dtype="float64")
        bus.depend(nxt, on=[prev], fn=mmsb.ops.copy)
        prev = nxt
    first.write(0, np.float64(1).tobytes())
    d = doc(bus.provenance(prev, max_depth=40)._repr_html_())
    assert len(d.fills) == 10 and "… 21 more deeper" in d.text


# ---- plain reprs ----------------------------------------------------------------------------------

def test_a_page_repr_quotes_its_name_so_that_no_name_breaks_it(bus):
    assert repr(bus.create_page(8, name="plain")) == "<mmsb.Page 1 'plain' raw 8 B epoch=0>"
    odd = bus.create_page(8, name="it's\nnew")
    assert repr(odd) == '<mmsb.Page 2 "it\'s\\nnew" raw 8 B epoch=0>'


def test_plain_reprs_are_one_short_line(bus, big_bus):
    p = bus.create_page(data=np.arange(4.0))
    p.write(0, b"\x00")
    reports = [bus.stats(), bus.memory(), bus.tick(), bus.gc(), bus.latency(), bus.verify(),
               big_bus.graph.validate(), big_bus.page_ages()]
    for r in reports:
        text = repr(r)
        assert "\n" not in text and len(text) <= 130, text
    s = bus.stats()
    assert f"commits={s.commits}" in repr(s) and f"deltas_applied={s.deltas_applied}" in repr(s)
    assert repr(s).endswith(f"…+{len(s) - 8})")
    assert all(f"{k}=" in str(s) for k in s)  # str() keeps every field
    assert repr(big_bus.page_ages()) == f"PageAges(pages=100000, lsn={big_bus.lsn})"
    m = bus.memory()
    assert repr(m).startswith(f"MemoryReport(total_bytes={m.total_bytes}, pages={m.pages}")
    raw = bus.create_page(4096)
    raw.write(0, b"x")
    bus.apply(mmsb.Delta.runs(raw, list(range(0, 4000, 8)), [b"a"] * 500))
    small, big = bus.history(raw)
    assert repr(small) == (f"DeltaRecord(lsn={small.lsn}, epoch=1, source='user', "
                           f"timestamp_ns={small.timestamp_ns}, runs=[(0, 1)])")
    assert repr(big).endswith("runs=[(0, 1), (8, 1), (16, 1), (24, 1), …+496])") and len(repr(big)) < 130


# ---- a real notebook ------------------------------------------------------------------------------

NOTEBOOK_CELLS = {
    "setup": f"import sys, numpy as np, mmsb\nassert sys.prefix == {sys.prefix!r}, sys.prefix",
    "bus": ("bus = mmsb.Bus()\ng = bus.create_page(data=np.arange(64.0).reshape(8, 8), name='grid')\n"
            "c = bus.create_page(shape=(8, 8), dtype='float64', name='copy')\n"
            "bus.depend(c, on=[g], fn=mmsb.ops.copy)\nbus"),
    "page": "g",
    "tick": "bus.submit(mmsb.Delta.at(g, 0, np.float64(7).tobytes()))\nbus.tick()",
    "validation": "mmsb.validate(quick=True, only=['purity'], progress=False)",
    "provenance": "bus.provenance(c)",
}
EXPECTED_HTML = {
    "bus": ["mmsb.Bus in-memory", "grid", "copy"],
    "page": ["mmsb.Page 1 &#x27;grid&#x27;", "heat-map of float64 (8, 8)", "<svg"],
    "tick": ["mmsb tick 1: lsn (", "deltas applied"],
    "validation": ["mmsb.validate: 1/1 PASS (quick)", "law_failures"],
    "provenance": ["provenance of page 2 @ epoch", "<svg"],
}


@pytest.fixture(scope="module")
def executed_notebook(tmp_path_factory):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src, metadata={"name": k}) for k, src in NOTEBOOK_CELLS.items()]
    cwd = tmp_path_factory.mktemp("nb")
    # jupyter_client starts a kernelspec whose argv is plain "python" with sys.executable: this
    # .venv, which the setup cell asserts.
    nbclient.NotebookClient(nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


def test_notebook_outputs_are_rich_html(executed_notebook):
    for cell in executed_notebook.cells:
        name = cell.metadata["name"]
        errors = [o for o in cell.outputs if o.output_type == "error"]
        assert errors == [], (name, errors)
        if name not in EXPECTED_HTML:
            continue
        (result,) = [o for o in cell.outputs if o.output_type == "execute_result"]
        markup = result.data["text/html"]
        doc(markup)
        for fact in EXPECTED_HTML[name]:
            assert fact in markup, (name, fact)
        assert "\n" not in result.data["text/plain"]


def test_notebook_converts_to_html(executed_notebook):
    nbconvert = pytest.importorskip("nbconvert")
    body, _ = nbconvert.HTMLExporter().from_notebook_node(executed_notebook)
    # nbconvert may re-encode entities (&#x27; as &#39;): compare the text the browser shows.
    shown = html.unescape(body)
    for facts in EXPECTED_HTML.values():
        for fact in facts:
            assert html.unescape(fact) in shown, fact
    assert re.search(r"<svg[^>]*>.*<rect", body, re.S)
