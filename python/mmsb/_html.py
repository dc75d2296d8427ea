"""Rich HTML reprs for Jupyter (``_repr_html_``) of buses, pages, reports and provenance DAGs.

Self-contained output: inline styles and inline SVG only (no scripts, no external resources), so
it survives nbconvert, untrusted notebooks and e-mail. Every user-controlled value (page names,
metadata, paths, error text) goes through ``esc``; only ``Html`` strings built here are inserted
as they are. Big things are cut, never walked: at most MAX_ROWS rows and a "… N more" line, so a
bus of a million pages renders as fast as a bus of twenty.
"""

from __future__ import annotations

import html
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np

MAX_ROWS = 20  # rows of any table before "… N more"
MAX_LIST = 8  # items of a list value shown inline
MAX_TEXT = 200  # characters of a string value
HEAT_CELLS = 32  # a heat-map is at most HEAT_CELLS x HEAT_CELLS cells
HEX_BYTES = 256  # bytes of a hex dump
# Above this many pages a deferred bus's stale set is not listed: it can hold every page, and
# the engine hands it over as one Python list (~0.5 µs a page).
STALE_LIST_LIMIT = 20_000

_BOX = ("font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;line-height:1.35;"
        "border:1px solid #c8c8c8;border-radius:4px;padding:6px 10px;margin:2px 0;"
        "display:inline-block;max-width:100%;overflow-x:auto;text-align:left")
_TABLE = "border-collapse:collapse;margin:4px 0;font-size:12px"
_TD = "padding:1px 10px 1px 0;text-align:left;vertical-align:top;border:none"
_TH = _TD + ";font-weight:600;border-bottom:1px solid #ccc"
_KEY = _TD + ";color:#666"
_MUTED = "color:#777"
_OK, _BAD = "color:#15803d", "color:#b91c1c"
_NAN_COLOUR = "#ff00ff"  # outside the viridis range, so a NaN cell can't pass for a value
_VIRIDIS = np.array([[68, 1, 84], [72, 40, 120], [62, 73, 137], [49, 104, 142], [38, 130, 142],
                     [31, 158, 137], [53, 183, 121], [110, 206, 88], [181, 222, 43], [253, 231, 37]],
                    dtype=np.float64)


class Html(str):
    """Markup built by this module: inserted as is. Any other value is escaped."""


def esc(value: Any) -> Html:
    """`value` as safe HTML text (an Html value is already safe)."""
    return value if isinstance(value, Html) else Html(html.escape(str(value), quote=True))


def span(text: Any, style: str, title: Optional[str] = None) -> Html:
    attrs = (f' style="{style}"' if style else "") + (f' title="{esc(title)}"' if title is not None else "")
    return Html(f'<span{attrs}>{esc(text)}</span>')


# ---- the one layout helper every repr uses --------------------------------------------------------

def table(rows: Iterable[Sequence[Any]], headers: Optional[Sequence[str]] = None, *, more: int = 0,
          what: str = "rows", key_column: bool = False) -> Html:
    """A table of `rows` (cells escaped unless Html), with a header row if `headers` is given and
    a closing "… `more` more `what`" row when the caller cut it. `key_column` greys the first
    column (label / value tables)."""
    out = [f'<table style="{_TABLE}">']
    width = len(headers) if headers else 1
    if headers:
        out.append("<tr>" + "".join(f'<th style="{_TH}">{esc(h)}</th>' for h in headers) + "</tr>")
    for row in rows:
        width = max(width, len(row))
        cells = [f'<td style="{_KEY if key_column and i % 2 == 0 else _TD}">{esc(c)}</td>' for i, c in enumerate(row)]
        out.append("<tr>" + "".join(cells) + "</tr>")
    if more > 0:
        out.append(f'<tr><td colspan="{width}" style="{_TD};{_MUTED}">… {more:,} more {esc(what)}</td></tr>')
    out.append("</table>")
    return Html("".join(out))


def fields(pairs: Sequence[tuple[str, Any]], columns: int = 0) -> Html:
    """Label / value pairs as a table of `columns` pairs per row (0: one per row up to 10 pairs,
    two up to 30, then three). Values are formatted by their label (see fmt)."""
    cols = columns or (1 if len(pairs) <= 10 else 2 if len(pairs) <= 30 else 3)
    cells = [(label.replace("_", " "), fmt(label, value)) for label, value in pairs]
    rows = [sum(cells[i:i + cols], ()) for i in range(0, len(cells), cols)]
    return table(rows, key_column=True)


def box(title: Any, *parts: Html, title_style: str = "") -> Html:
    """The frame of every repr: a bold title line, then the parts."""
    head = f'<div style="font-weight:600;margin-bottom:3px;{title_style}">{esc(title)}</div>'
    return Html(f'<div style="{_BOX}">{head}{"".join(parts)}</div>')


def note(text: Any) -> Html:
    return Html(f'<div style="{_MUTED};margin:2px 0">{esc(text)}</div>')


# ---- value formatting -----------------------------------------------------------------------------

def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:,} B" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def human_ns(ns: float) -> str:
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if abs(ns) >= scale:
            return f"{ns / scale:.3g} {unit}"
    return f"{ns:g} ns"


def fmt(key: str, value: Any) -> Html:
    """`value` as HTML, guided by its key: *_ns as a duration, *_bytes as a size (exact figure on
    hover), nested mappings as a small table, long lists and strings cut."""
    if isinstance(value, Html):
        return value
    if value is None:
        return span("—", _MUTED)
    if isinstance(value, bool):
        return span("yes" if value else "no", _OK if value else _MUTED)
    if isinstance(value, (int, np.integer)):
        if key.endswith("_ns"):
            return span(human_ns(int(value)), "", title=f"{int(value):,} ns")
        if key.endswith("_bytes") or key == "bytes":
            return span(human_bytes(int(value)), "", title=f"{int(value):,} bytes")
        return esc(f"{int(value):,}")
    if isinstance(value, (float, np.floating)):
        return esc(f"{value:.4g}")
    if isinstance(value, Mapping):
        items = list(value.items())
        return table([(k, fmt(str(k), v)) for k, v in items[:MAX_ROWS]], more=len(items) - MAX_ROWS,
                     what="fields", key_column=True)
    if isinstance(value, bytes):
        shown = value[:32].hex(" ")
        return esc(f"{len(value)} bytes: {shown}{' …' if len(value) > 32 else ''}")
    if isinstance(value, (list, tuple, np.ndarray)):
        items = list(value[:MAX_LIST])
        text = ", ".join(str(v) for v in items)
        more = len(value) - len(items)
        return Html(f"[{esc(text)}{span(f', … {more:,} more', _MUTED) if more > 0 else ''}]")
    text = str(value)
    return esc(text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + " …")


def _never_raise(obj: Any, fn: Any) -> Html:
    """fn(obj), or a box that says why it could not be drawn (a closed bus, a deleted page):
    a repr must never raise."""
    from .errors import MmsbError

    try:
        return fn(obj)
    except MmsbError as e:
        return box(repr(obj), note(e), title_style=_MUTED)


# ---- Bus ------------------------------------------------------------------------------------------

def bus_html(bus: Any) -> Html:
    """Where the bus lives, durability, lsn, propagation mode, page count, memory (total and its
    largest parts), then the MAX_ROWS pages with the lowest ids. Nothing walks all pages: the
    counts and memory come from counters the engine keeps (see _first_pages for the rows)."""
    return _never_raise(bus, _bus_html)


def _bus_html(bus: Any) -> Html:
    if bus.closed:
        return box(repr(bus), fields([("path", bus.path), ("lsn", bus.lsn)]), note("closed"), title_style=_MUTED)
    mem = bus.memory()
    stale = _stale_ids(bus)
    parts = sorted(((k[:-6], v) for k, v in mem.items()
                    if k.endswith("_bytes") and k not in ("total_bytes", "page_metadata_bytes") and v > 0),
                   key=lambda kv: -kv[1])
    top = ", ".join(f"{k.replace('_', ' ')} {human_bytes(v)}" for k, v in parts[:3])
    facts = [("path", bus.path or "in memory (history kept in memory)"),
             ("durability", bus.durability), ("read_only", bus.read_only), ("lsn", bus.lsn),
             ("propagation", bus.propagation), ("stale_pages", _uncounted() if stale is None else len(stale)),
             ("pages", len(bus)), ("memory", Html(f"{esc(human_bytes(mem['total_bytes']))} {span(f'({top})', _MUTED)}")),
             ("queue", f"{bus.queue_depth:,} / {bus.queue_capacity:,}"), ("threads", bus.threads)]
    rows = []
    for p in _first_pages(bus, MAX_ROWS):
        rows.append((p.id, p.name or "", p.dtype if p.dtype is not None else span("raw", _MUTED),
                     "" if p.shape is None else p.shape, f"{p.epoch:,}", p.location, fmt("bytes", p.size)))
    pages = table(rows, ("id", "name", "dtype", "shape", "epoch", "location", "bytes"),
                  more=len(bus) - len(rows), what="pages")
    where = "in-memory" if bus.path is None else bus.path
    return box(f"mmsb.Bus {where}", fields(facts, columns=2), pages)


def _stale_ids(bus: Any) -> Optional[set]:
    """The stale page ids, or None where listing them could cost more than a repr may (a big
    deferred bus). An eager bus runs its waves at commit, so its stale set stays short."""
    if bus.propagation == "deferred" and len(bus) > STALE_LIST_LIMIT:
        return None
    return set(bus._stale_ids())


def _uncounted() -> Html:
    return span(f"not listed above {STALE_LIST_LIMIT:,} pages: bus.stale_pages()", _MUTED)


def _first_pages(bus: Any, k: int) -> list:
    """The `k` live pages with the lowest ids. Ids are handed out densely from 1, so probing
    1, 2, ... finds them in about k lookups unless many were deleted; then one vectorised query
    of all live ids (page_ages, a few ms at 100k pages) picks them."""
    from .errors import PageNotFoundError

    want = min(k, len(bus))
    found = []
    for pid in range(1, 4 * k + 1):
        if len(found) == want:
            return found
        try:
            found.append(bus.page(pid))
        except PageNotFoundError:
            pass
    if len(found) == want:
        return found
    ids = bus.page_ages().ids
    if len(ids) > k:  # O(n) selection of the lowest ids, not a sort of all of them
        ids = np.sort(np.partition(ids, k - 1)[:k])
    return [bus.page(int(i)) for i in ids]


# ---- Page -----------------------------------------------------------------------------------------

def page_html(page: Any) -> Html:
    """Id, name, layout, size, epoch, location, stale / derived status, metadata and a preview:
    a heat-map of a numeric 1-D/2-D CPU page, else a hex dump of its first HEX_BYTES bytes.
    Device pages are not read."""
    return _never_raise(page, _page_html)


def _page_html(page: Any) -> Html:
    bus = page.bus
    layout = "raw bytes" if page.dtype is None else f"{page.dtype} {page.shape}"
    derivation = bus.graph.derivation(page.id)
    derived = None if derivation is None else f"{derivation['fn']} of pages {list(derivation['parents'])}"
    stale = _stale_ids(bus)
    facts = [("id", page.id), ("name", page.name), ("layout", layout), ("size_bytes", page.size),
             ("epoch", page.epoch), ("last_lsn", page.last_lsn), ("location", page.location),
             ("stale", _uncounted() if stale is None else page.id in stale), ("derived", derived)]
    parts = [fields(facts, columns=2)]
    meta = sorted(page.metadata.items())
    if meta:
        parts.append(table([(k, fmt(k, v)) for k, v in meta[:MAX_ROWS]], ("metadata", ""),
                           more=len(meta) - MAX_ROWS, what="keys", key_column=True))
    parts.append(_preview(page))
    title = f"mmsb.Page {page.id}" + (f" {page.name!r}" if page.name else "")
    return box(title, *parts)


def _preview(page: Any) -> Html:
    if page.location != "cpu":  # device memory: reading it would force a host sync (or fail)
        return note(f"data on {page.location}: no preview")
    if page.size == 0:
        return note("empty page")
    dtype = page.dtype
    if dtype is not None and dtype.kind in "biuf" and len(page.shape) in (1, 2) and page.view().size:
        return heatmap(page.view())
    return hexdump(page.read(0, min(HEX_BYTES, page.size)), page.size)


def hexdump(data: bytes, total: int) -> Html:
    """Offset, hex and printable ASCII, 16 bytes a line."""
    lines = []
    for off in range(0, len(data), 16):
        chunk = data[off:off + 16]
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{off:08x}  {chunk[:8].hex(' '):<23}  {chunk[8:].hex(' '):<23}  {text}")
    head = note(f"first {len(data):,} of {total:,} bytes" if total > len(data) else f"{total:,} bytes")
    return Html(f'{head}<pre style="margin:0;font-size:11px">{esc(chr(10).join(lines))}</pre>')


def downsample(a: np.ndarray) -> tuple[np.ndarray, int, int]:
    """The cell grid of a heat-map of `a` (1-D or 2-D): each cell the mean of a contiguous block
    (a 1-D array is folded row-major), NaN where the block holds a NaN, so one NaN among a million
    values stays visible. Returns (grid, most values in one cell, cells in use): a folded 1-D
    grid ends with unused cells."""
    x = np.asarray(a, dtype=np.float64)
    if x.ndim == 1:
        n = x.size
        chunk = -(-n // (HEAT_CELLS * HEAT_CELLS))
        starts = np.arange(0, n, chunk)
        means = np.add.reduceat(x, starts) / np.diff(np.append(starts, n))
        cols = min(HEAT_CELLS, means.size)
        grid = np.full(-(-means.size // cols) * cols, np.nan)
        grid[:means.size] = means
        return grid.reshape(-1, cols), chunk, means.size
    bins = []
    for axis, n in enumerate(x.shape):
        k = min(n, HEAT_CELLS)
        starts = (np.arange(k) * n) // k
        x = np.add.reduceat(x, starts, axis=axis)
        bins.append(np.diff(np.append(starts, n)))
    return x / np.outer(bins[0], bins[1]), int(bins[0].max() * bins[1].max()), x.size


def colours(values: np.ndarray) -> tuple[list[str], float, float]:
    """A viridis '#rrggbb' per value, scaled to the finite range (±inf clip to its ends); NaN
    gets _NAN_COLOUR. Returns (colours, low, high)."""
    finite = np.isfinite(values)
    lo, hi = (float(values[finite].min()), float(values[finite].max())) if finite.any() else (0.0, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = (values - lo) / (hi - lo) if hi > lo else np.where(values > lo, 1.0, np.where(values < lo, 0.0, 0.5))
    nan = np.isnan(t)
    pos = np.clip(np.where(nan, 0.0, t), 0.0, 1.0) * (len(_VIRIDIS) - 1)
    stops = np.arange(len(_VIRIDIS))
    rgb = np.stack([np.interp(pos, stops, _VIRIDIS[:, c]) for c in range(3)], axis=-1).round().astype(np.int64)
    packed = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    out = [_NAN_COLOUR if bad else f"#{c:06x}" for c, bad in zip(packed.ravel().tolist(), nan.ravel().tolist())]
    return out, lo, hi


def _swatch(colour: str) -> Html:
    return span("■", f"color:{colour}")


def heatmap(a: np.ndarray, cell: int = 10) -> Html:
    """An inline-SVG heat-map of a 1-D or 2-D numeric array, at most HEAT_CELLS² cells, with a
    legend (range of the cell means, NaN cells)."""
    grid, per_cell, used = downsample(a)
    rows, cols = grid.shape
    fill, lo, hi = colours(grid.ravel()[:used])
    rects = "".join(f'<rect x="{(i % cols) * cell}" y="{(i // cols) * cell}" width="{cell}" height="{cell}" '
                    f'fill="{c}"/>' for i, c in enumerate(fill))
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{cols * cell}" height="{rows * cell}" '
           f'style="display:block;margin:4px 0">{rects}</svg>')
    nan_cells = fill.count(_NAN_COLOUR)
    legend = [esc(f"heat-map of {a.dtype} {a.shape}: {rows}×{cols} cells"),
              esc(f", each the mean of ≤{per_cell:,} values") if per_cell > 1 else "",
              Html(f"; {_swatch(_VIRIDIS_HEX[0])} {esc(f'{lo:.4g}')} … {_swatch(_VIRIDIS_HEX[1])} {esc(f'{hi:.4g}')}"),
              Html(f"; {_swatch(_NAN_COLOUR)} NaN in {nan_cells:,} cell{'s' if nan_cells > 1 else ''}") if nan_cells else ""]
    return Html(f'<div style="{_MUTED};margin-top:4px">{"".join(legend)}</div>{svg}')


_VIRIDIS_HEX = ("#440154", "#fde725")


def bar(fraction: float, colour: str = "#93c5fd", width: int = 120) -> Html:
    """A horizontal bar `fraction` of `width` pixels long (at least one pixel when non-zero)."""
    px = 0 if fraction <= 0 else max(1, round(min(fraction, 1.0) * width))
    return Html(f'<div style="background:{colour};height:8px;width:{px}px;margin-top:3px"></div>')


# ---- reports --------------------------------------------------------------------------------------

def report_html(report: Mapping[str, Any], title: Optional[str] = None) -> Html:
    """Any dict-like report (Stats, MemoryReport, GcReport, IntegrityReport, ...): its fields,
    durations and sizes in human units."""
    return box(title or f"mmsb.{type(report).__name__}", fields(list(report.items())))


def tick_html(r: Mapping[str, Any]) -> Html:
    """A TickReport: lsn range and total time in the title, the counts, each phase's time and
    share (phases over budget in red), rejections and the GC run if there was one."""
    over = set(r.get("overruns") or ())
    total = r.get("total_ns") or 0
    title = f"mmsb tick {r.get('tick')}: lsn ({r.get('first_lsn')}, {r.get('last_lsn')}] in {human_ns(total)}"
    special = ("tick", "first_lsn", "last_lsn", "total_ns", "phase_ns", "overruns", "rejections", "gc")
    parts = [fields([(k, v) for k, v in r.items() if k not in special], columns=2)]
    phases = [(span(k, _BAD) if k in over else k, human_ns(v), f"{100 * v / total:.0f}%" if total else "",
               bar(v / total if total else 0, "#fca5a5" if k in over else "#93c5fd"),
               span("over budget", _BAD) if k in over else "") for k, v in (r.get("phase_ns") or {}).items()]
    parts.append(table(phases, ("phase", "time", "share", "", "")))
    if "total" in over:
        parts.append(Html(f'<div style="{_BAD}">the tick as a whole was over its budget</div>'))
    rejections = list(r.get("rejections") or ())
    if rejections:
        parts.append(table([(x,) for x in rejections[:MAX_ROWS]], ("rejected submissions",),
                           more=max(len(rejections), r.get("rejected") or 0) - min(len(rejections), MAX_ROWS),
                           what="rejections"))
    if r.get("gc"):
        parts.append(report_html(r["gc"], "gc"))
    return box(title, *parts, title_style=_BAD if over else "")


def latency_html(r: Mapping[str, Any]) -> Html:
    """A LatencyReport: the quantiles, then the histogram; more than MAX_ROWS buckets are merged
    into MAX_ROWS neighbouring groups, so the tail is never cut off."""
    buckets = list(r.get("buckets") or ())
    if len(buckets) > MAX_ROWS:
        groups = np.array_split(np.arange(len(buckets)), MAX_ROWS)
        buckets = [(buckets[g[0]][0], buckets[g[-1]][1], sum(buckets[i][2] for i in g)) for g in groups]
    peak = max((c for _, _, c in buckets), default=0) or 1
    rows = [(f"{human_ns(lo)} – {human_ns(hi)}", f"{c:,}", bar(c / peak)) for lo, hi, c in buckets]
    facts = fields([(k, v) for k, v in r.items() if k != "buckets"], columns=2)
    return box(f"mmsb.{type(r).__name__}", facts, table(rows, ("latency", "count", "")) if rows else note("no samples"))


def _check_line(c: Mapping[str, Any]) -> Html:
    mark = span("✓", _OK) if c.get("passed") else span("✗", _BAD)
    target = f"(target {c.get('op')} {c.get('threshold')}{' ' + c['unit'] if c.get('unit') else ''})"
    return Html(f"{mark} {esc(c.get('metric'))} = {fmt('', c.get('value'))} {span(target, _MUTED)}")


def validation_html(r: Mapping[str, Any]) -> Html:
    """A ValidationReport: the ✓/✗ table, one row per validator with each measured figure next
    to its target, or the error that stopped it; the machine it ran on."""
    rows = []
    results = list(r.get("results") or ())
    for res in results[:MAX_ROWS]:
        if res.get("error"):
            text = str(res["error"])
            figures = span(text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + " …", _BAD)
        else:
            figures = Html("<br>".join(_check_line(c) for c in res.get("checks") or ()))
        rows.append((span("✓", _OK) if res.get("passed") else span("✗", _BAD), res.get("number"), res.get("name"),
                     figures, f"{res.get('seconds', 0):.2f} s"))
    m = r.get("machine") or {}
    b = m.get("build_info") or {}
    machine = (f"{m.get('cpu')}, {m.get('cores')} cores, {human_bytes(m['memory_bytes']) if m.get('memory_bytes') else '?'}"
               f" memory; Python {m.get('python')}; mmsb {b.get('version')} ({b.get('build_type')}, "
               f"SIMD {b.get('simd')}, CUDA devices {b.get('cuda_devices')})")
    title = f"mmsb.validate: {r.get('summary')}" + (" (quick)" if r.get("quick") else "")
    return box(title, note(machine), table(rows, ("", "#", "validator", "measured (target)", "time"),
                                           more=len(results) - len(rows), what="validators"),
               title_style=_OK if r.get("passed") else _BAD)


def page_ages_html(a: Any) -> Html:
    """PageAges: how many pages, the bus lsn, the spread of ages, the first MAX_ROWS pages."""
    n = len(a.ids)
    age = a.age
    facts: list = [("pages", n), ("lsn", a.lsn)]
    if n:
        facts += [("youngest_age", int(age.min())), ("median_age", float(np.median(age))), ("oldest_age", int(age.max()))]
    rows = [(int(i), int(lsn), int(g)) for i, lsn, g in zip(a.ids[:MAX_ROWS], a.last_lsn[:MAX_ROWS], age[:MAX_ROWS])]
    return box("mmsb.PageAges", fields(facts),
               table(rows, ("id", "last write lsn", "age"), more=n - len(rows), what="pages"))


def provenance_html(prov: Any) -> Html:
    """A Provenance DAG: its size and depth, then its SVG drawing (cut for big DAGs, see
    Provenance.to_svg)."""
    facts = [("deltas", len(prov)), ("depth", prov.depth), ("max_depth", prov.max_depth),
             ("sources", len(prov.sources()))]
    return box(f"provenance of page {prov.root[0]} @ epoch {prov.root[1]}", fields(facts, columns=2), Html(prov.to_svg()))
