"""A page whose Python callable is missing after mmsb.open is skipped by the waves that reach it:
it stays stale and keeps its memo. Replay has no callables either, and must leave it so too (the
Wave op names the pages a wave skipped, docs/format.md "Wave"), so the stale pages and memos that
bus.at(lsn), mmsb.replay(path, to=lsn) and a reopen report are those the live bus had at that lsn:
in eager mode, in deferred mode with propagate(), in ticks, once such a page loses its last data
edge while a control edge remains, and in a random run with re-registrations and reopens.

The oracle is the live bus itself, recorded right after each commit. A bus without callables
(at(), replay, a freshly reopened bus) reports every Python-derived page stale (api.md "Python
recomputes after mmsb.open"); where the live bus has some of them registered again, its stale
pages are compared as that bus would report them (`without_callables`)."""

from __future__ import annotations

import numpy as np
import pytest

import mmsb
from propagation_model import stale_state

F64 = "float64"
ELEMS = 2


def python_derived(bus):
    """Ids of the pages derived by a Python callable (registered or not)."""
    out = []
    for page in bus.pages():
        d = bus.graph.derivation(page.id)
        if d is not None and d["fn"].startswith("callable("):
            out.append(page.id)
    return out


def without_callables(bus):
    """stale_state(bus) as a bus with the same log but no callable registered reports it: every
    Python-derived page and everything below it stale as well. Equal to stale_state(bus) when
    no callable is registered."""
    stale, memos = stale_state(bus)
    seen = set(stale)
    todo = [p for p in python_derived(bus) if p not in seen]
    seen.update(todo)
    while todo:
        for child in bus.graph.children(todo.pop()):
            if child.id not in seen:
                seen.add(child.id)
                todo.append(child.id)
    return tuple(sorted(seen)), memos


def no_callable_registered(bus):
    return all(bus.graph.derivation(p)["missing_callable"] for p in python_derived(bus))


def value(v):
    return np.float64(v).tobytes()


class Live:
    """A reopened bus directory (no callable registered) in `mode`: "eager", "deferred" (each
    change followed by propagate()) or "tick" (changes submitted, then one tick). `states` holds
    the live state right after each commit; each lsn is checked through bus.at() and
    mmsb.replay() as soon as it is committed, and through mmsb.open by reopen()."""

    def __init__(self, path, mode):
        self.path, self.mode = path, mode
        self.bus = None
        self.states = {}
        self.reopen()

    def record(self):
        bus, lsn = self.bus, self.bus.lsn
        now = stale_state(bus)
        # a propagate() that only skips pages changes nothing, and takes no lsn
        assert self.states.setdefault(lsn, now) == now, f"the state changed without an lsn at lsn {lsn}"
        with bus.at(lsn) as old:
            assert stale_state(old) == now, f"bus.at({lsn}) differs from the live bus at lsn {lsn}"
        with mmsb.replay(self.path, to=lsn) as old:
            assert stale_state(old) == now, f"mmsb.replay(to={lsn}) differs from the live bus at lsn {lsn}"

    def commit(self, changes):
        """Writes (page name, offset, value) changes as the mode does, recording each lsn."""
        bus = self.bus
        for name, offset, v in changes:
            if self.mode == "tick":
                bus.submit(mmsb.Delta.at(bus.page(name), offset, value(v)))
            else:
                bus.page(name).write(offset, value(v))
                self.record()
        if self.mode == "tick":
            bus.tick()
        elif self.mode == "deferred":
            bus.propagate()
        self.record()

    def reopen(self):
        last = None
        if self.bus is not None:
            last = self.bus.lsn
            self.bus.close()
        self.bus = mmsb.open(self.path)
        self.bus.propagation = "deferred" if self.mode == "deferred" else "eager"
        assert no_callable_registered(self.bus)
        if last is None:
            self.record()
        else:
            assert self.bus.lsn == last
            assert stale_state(self.bus) == self.states[last], f"mmsb.open differs from the live bus at lsn {last}"

    def check_all(self):
        """Every recorded lsn again, from the bus as it is now (its log spans several opens)."""
        for lsn, want in self.states.items():
            with self.bus.at(lsn) as old:
                assert stale_state(old) == want, f"bus.at({lsn}) differs from the live bus at lsn {lsn}"
        for lsn, want in self.states.items():
            with mmsb.replay(self.path, to=lsn) as old:
                assert stale_state(old) == want, f"mmsb.replay(to={lsn}) differs from the live bus at lsn {lsn}"


MODES = ["eager", "deferred", "tick"]


# ---- the plain case ---------------------------------------------------------------------------
def double(out, x):
    out[:] = 2 * x


def diff(out, x, y):
    out[:] = x - y


@pytest.mark.parametrize("mode", MODES)
def test_waves_that_skip_a_missing_callable_replay_as_they_ran(tmp_path, mode):
    """a, k sources; b = double(a) (Python), c = copy(b), d = max_plus(c, k), e = diff(a, k)
    (Python). Written with the callables, then reopened without them: every write below reaches
    b or e, which the live waves skip (stale, memo kept) while d follows k."""
    path = tmp_path / "bus"
    with mmsb.Bus(path) as bus:
        a, k, b, c, d, e = (bus.create_page(shape=(ELEMS,), dtype=F64, name=n) for n in "akbcde")
        bus.depend(b, on=a, fn=double)
        bus.depend(c, on=b, fn=mmsb.ops.copy)
        bus.depend(d, on=[c, k], fn=mmsb.ops.reduce("max_plus"))
        bus.depend(e, on=[a, k], fn=diff)
        a.write(0, value(1))
        k.write(8, value(1))
        assert bus.stale_pages() == []
    live = Live(path, mode)
    memo_b, memo_e = (live.bus.graph.derivation(n)["memo"] for n in "be")
    for change in [("a", 0, 2), ("k", 8, 5), ("a", 8, 3), ("k", 0, 4), ("a", 0, 0)]:
        live.commit([change])
        bus = live.bus
        a, k, b, d, e = (bus.page(n) for n in "akbde")
        assert bus.graph.derivation(b)["memo"] == memo_b != [a.epoch]
        assert bus.graph.derivation(e)["memo"] == memo_e != [a.epoch, k.epoch]
        assert bus.graph.derivation(d)["memo"] == [bus.page("c").epoch, k.epoch]  # built-ins follow
        assert [p.name for p in bus.stale_pages()] == ["b", "c", "d", "e"]
        live.reopen()
    live.check_all()
    live.bus.close()


# ---- a page that loses its last data edge while a control edge remains -----------------------
@pytest.mark.parametrize("mode", MODES)
def test_skipped_page_that_loses_its_data_edge_keeps_its_mark(tmp_path, mode):
    """k -> b (control), a -> b (data, Python), b -> c (copy), and y = copy(x) beside them. After
    the reopen a wave skips b (marked stale, memo kept) while it recomputes y (so the wave is
    logged, in deferred mode too); removing a -> b leaves b derived no longer, but with a parent,
    so its mark stays: the only thing that says b is stale is then that mark, which replay must
    have kept too."""
    path = tmp_path / "bus"
    with mmsb.Bus(path) as bus:
        a, k, b, c, x, y = (bus.create_page(shape=(ELEMS,), dtype=F64, name=n) for n in "akbcxy")
        bus.depend(b, on=a, fn=double)
        bus.depend(c, on=b, fn=mmsb.ops.copy)
        bus.depend(y, on=x, fn=mmsb.ops.copy)
        bus.add_edge(k, b)
        a.write(0, value(1))
        bus.propagate()  # acknowledges b, the control child of a page a's wave recomputed
        assert bus.stale_pages() == []
    live = Live(path, mode)
    y_epoch = live.bus.page("y").epoch
    live.commit([("a", 8, 7), ("x", 0, 1)])
    bus = live.bus
    b = bus.page("b")
    assert bus.page("y").epoch == y_epoch + 1  # the wave that skipped b recomputed y
    assert bus.graph.derivation(b)["missing_callable"] and b.stale
    assert bus.graph.derivation(b)["memo"] != [bus.page("a").epoch]
    bus.remove_edge("a", "b")
    live.record()
    assert bus.graph.derivation(b) is None  # derived no longer
    assert [e.kind for e in bus.graph.in_edges(b)] == ["control"]
    assert b.stale, "the live bus keeps the mark of the skipped page"
    assert [p.name for p in bus.stale_pages()] == ["b", "c"]
    marked = bus.lsn
    live.reopen()
    assert live.bus.propagate() == 0  # acknowledges b; c is a copy of b, which did not change
    live.record()
    assert live.bus.lsn == marked + 1 and live.bus.stale_pages() == []
    live.reopen()
    live.check_all()
    live.bus.close()


# ---- random runs --------------------------------------------------------------------------
def clip1(out, x):
    out[:] = np.minimum(x, 1.0)  # few values: cutoffs happen


def sub(out, x, y):
    out[:] = x - y


CALLABLES = {"clip1": clip1, "sub": sub}


class RandomRun:
    """Sources s0..s2; derived pages, each on earlier pages: copies, max_plus / min_plus reduces
    and two Python callables; a control edge. Built with the callables registered, then reopened
    without them."""

    def __init__(self, rng, path):
        self.rng = rng
        self.path = path
        bus = mmsb.Bus(path)
        ids = [bus.create_page(shape=(ELEMS,), dtype=F64, name=f"s{i}").id for i in range(3)]
        self.py = {}  # page id -> (parents, callable)
        kinds = ["clip1", "copy", "sub", "max_plus", "copy", "min_plus", "clip1"]
        for n, kind in enumerate(kinds):
            child = bus.create_page(shape=(ELEMS,), dtype=F64, name=f"d{n}").id
            two = kind in ("sub", "max_plus", "min_plus")
            parents = [int(p) for p in rng.choice(ids, size=2 if two else 1, replace=False)]
            if kind in CALLABLES:
                fn = CALLABLES[kind]
                self.py[child] = (parents, fn)
            elif kind == "copy":
                fn = mmsb.ops.copy
            else:
                fn = mmsb.ops.reduce(kind)
            bus.depend(child, on=parents, fn=fn)
            ids.append(child)
        self.sources = ids[:3]
        self.ids = ids
        # a control edge from a source to a derived page that is not its data child
        for child in ids[3:]:
            src = next((s for s in self.sources if s not in [p.id for p in bus.graph.parents(child)]), None)
            if src is not None:
                bus.add_edge(src, child)
                break
        for s in self.sources:
            bus.page(s).write(0, value(1))
        bus.propagate()
        bus.close()
        self.bus = mmsb.open(path)
        self.states = {}
        self.behind = 0  # lsns at which a page with its callable missing lags its parents
        self.record()

    def record(self):
        """The live state at this lsn, the first time the lsn is seen: right after its commit.
        (A callable registered again after a commit may still change a memo without an lsn, when
        its recompute is a cutoff: that is not what this compares.)"""
        if self.bus.lsn in self.states:
            return
        self.states[self.bus.lsn] = without_callables(self.bus)
        for pid in self.py:
            d = self.bus.graph.derivation(pid)
            if d["missing_callable"] and d["memo"] != [self.bus.page(q).epoch for q in d["parents"]]:
                self.behind += 1
                break

    def write(self):
        pool = self.sources if self.rng.integers(5) else self.ids  # sometimes a derived page
        page = pool[int(self.rng.integers(len(pool)))]
        self.bus.page(page).write(8 * int(self.rng.integers(ELEMS)), value(self.rng.integers(3)))

    def tick(self):
        for _ in range(int(self.rng.integers(1, 4))):
            page = self.sources[int(self.rng.integers(len(self.sources)))]
            self.bus.submit(mmsb.Delta.at(self.bus.page(page), 8 * int(self.rng.integers(ELEMS)),
                                          value(self.rng.integers(3))))
        self.bus.tick()

    def register(self):
        missing = [p for p in self.py if self.bus.graph.derivation(p)["missing_callable"]]
        if missing:
            page = missing[int(self.rng.integers(len(missing)))]
            parents, fn = self.py[page]
            self.bus.depend(page, on=parents, fn=fn)  # eager: its wave may commit

    def toggle(self):
        self.bus.propagation = "deferred" if self.bus.propagation == "eager" else "eager"

    def reopen(self):
        mode = self.bus.propagation
        last = self.bus.lsn
        self.bus.close()
        self.bus = mmsb.open(self.path)
        self.bus.propagation = mode
        assert self.bus.lsn == last
        assert no_callable_registered(self.bus)
        assert stale_state(self.bus) == self.states[last], f"mmsb.open differs from the live bus at lsn {last}"

    def step(self):
        r = int(self.rng.integers(100))
        if r < 40:
            self.write()
        elif r < 55:
            self.bus.propagate()
        elif r < 65:
            self.tick()
        elif r < 78:
            self.register()
        elif r < 88:
            self.toggle()
        else:
            self.reopen()
        self.record()


@pytest.mark.parametrize("seed", range(3))
def test_random_runs_with_missing_callables_replay_as_they_ran(tmp_path, seed):
    """Random writes (eager and deferred), propagate()s, ticks, callables registered again and
    reopens (which drop them again): every lsn through bus.at(), mmsb.replay() and, at each
    reopen, mmsb.open."""
    run = RandomRun(np.random.default_rng(4400 + seed), tmp_path / "bus")
    for _ in range(50):
        run.step()
    assert len(run.states) > 20 and run.behind > 10, "too few skipped recomputes to prove much"
    for lsn, want in run.states.items():
        with run.bus.at(lsn) as old:
            assert stale_state(old) == want, f"bus.at({lsn}) differs from the live bus at lsn {lsn}"
    last = run.bus.lsn
    run.bus.close()
    for lsn, want in run.states.items():
        with mmsb.replay(run.path, to=lsn) as old:
            assert stale_state(old) == want, f"mmsb.replay(to={lsn}) differs from the live bus at lsn {lsn}"
    with mmsb.open(run.path) as bus:
        assert stale_state(bus) == run.states[last]


def test_inspect_names_the_pages_a_wave_skipped(tmp_path):
    def double(out, src):
        out[:] = 2 * src

    path = tmp_path / "bus"
    with mmsb.Bus(path) as bus:
        src = bus.create_page(data=np.arange(2.0), name="src")
        bus.depend(bus.create_page(shape=(2,), dtype=F64, name="dbl"), on=src, fn=double)
    with mmsb.open(path) as bus:
        bus.page("src").write(0, value(5.0))  # reaches dbl, whose function is missing
        dbl = bus.page("dbl").id
    records = repr(mmsb._core._inspect(str(path), True))
    assert f"1 page(s) left stale for a missing Python function: {dbl}" in records


def test_a_registration_that_settles_only_the_memo_takes_an_lsn(tmp_path):
    """In eager mode registering the function again recomputes the page; when that changes no
    byte (a cutoff) but settles its memo, the change is logged (a Depend of the same definition
    and its wave), so the memo is a function of the lsn: bus.at and a reopen agree with it."""

    def sign(out, x):
        out[:] = np.sign(x)

    path = tmp_path / "bus"
    with mmsb.Bus(path) as bus:
        a = bus.create_page(shape=(2,), dtype=F64, name="a")
        bus.depend(bus.create_page(shape=(2,), dtype=F64, name="b"), on=a, fn=sign)
        a.write(0, value(1.0))
    with mmsb.open(path) as bus:
        bus.page("a").write(0, value(5.0))  # b skipped: same sign, memo behind
        skipped_at, skipped_memo = bus.lsn, stale_state(bus)[1]
        bus.depend("b", on="a", fn=sign)
        assert bus.lsn == skipped_at + 1
        settled = stale_state(bus)[1]
        assert settled != skipped_memo and bus.stale_pages() == []
        with bus.at(skipped_at) as past:
            assert stale_state(past)[1] == skipped_memo
        with bus.at(bus.lsn) as past:
            assert stale_state(past)[1] == settled
        bus.depend("b", on="a", fn=sign)  # already attached: a new definition, as any depend
    with mmsb.open(path) as bus:
        lsn = bus.lsn
        bus.depend("b", on="a", fn=sign)  # nothing to settle: no lsn
        assert bus.lsn == lsn and bus.stale_pages() == []
        bus.depend("b", on="a", fn=sign)  # attached: a definition again, logged as any
        assert bus.lsn == lsn + 1
