"""Finance book: orders as pages, per-desk and firm exposure derived by `sum_product` reductions,
a trading session of placements, fills and cancels, then time travel to an earlier lsn and a diff.

Pages (float64):
  order.<n>  (8,)    slot n of a fixed-capacity book (FIELDS below); all zero while the slot is free,
                     so placing an order is a delta, never a change to the graph
  exp.<n>    (2, I)  Python recompute of order.<n>: row 0 the signed filled notional, row 1 the
                     signed open notional (remaining qty x limit price), at the order's instrument
  desk.<k>   (2, I)  sum_product over the desk's exp pages, in the desk's currency
  firm       (2, I)  sum_product over the desks, weighted by each desk's FX rate to USD
  cash.<k>   (1,)    desk cash; a fill changes its order and its desk's cash in one transaction

Checks: the derived exposures equal a plain recomputation from the blotter (an independent record
of every event) now and, through `bus.at(lsn)`, at earlier points of the session, where the order
pages also equal the blotter as it was then; `bus.diff` between two lsns names exactly the orders
and cash pages the events in between touched. Prices are multiples of 1/4 and FX rates powers of
two (or 1.25), so every sum is exact in float64 and the checks compare bit for bit.
"""

from __future__ import annotations

import argparse
from typing import List, Optional, Sequence, Tuple

import numpy as np

import mmsb

from _common import CheckFailed, bus_directory, check, compare_arrays, parser, run, say

INSTR, SIDE, PX, QTY, FILLED, FILLED_NOTIONAL, CANCELLED = range(7)
N_FIELDS = 8
INSTRUMENTS = ("ACME", "BOLT", "CRNX", "DYNE", "EXPO", "FLUX")
DESKS = (("NY", 1.0), ("LDN", 1.25), ("TKY", 1.0 / 128))  # (name, USD per unit of its currency)
F8 = np.dtype("float64")

Event = Tuple[str, int, np.ndarray]  # (kind, slot, the order's fields after the event)


def order_exposure(out: np.ndarray, order: np.ndarray) -> None:
    """Recompute of exp.<n> from order.<n>."""
    out[:] = 0.0
    if order[QTY] > 0:
        i, side = int(order[INSTR]), order[SIDE]
        out[0, i] = side * order[FILLED_NOTIONAL]
        if not order[CANCELLED]:
            out[1, i] = side * (order[QTY] - order[FILLED]) * order[PX]


def reference_exposure(orders: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(desk[k, row, i], firm[row, i]) summed from the order fields directly (no mmsb)."""
    desk = np.zeros((len(DESKS), 2, len(INSTRUMENTS)))
    for n, o in enumerate(orders):
        if o[QTY] > 0:
            desk[n % len(DESKS), 0, int(o[INSTR])] += o[SIDE] * o[FILLED_NOTIONAL]
            desk[n % len(DESKS), 1, int(o[INSTR])] += 0.0 if o[CANCELLED] else o[SIDE] * (o[QTY] - o[FILLED]) * o[PX]
    return desk, sum(rate * desk[k] for k, (_, rate) in enumerate(DESKS))


def session(slots: int, events: int, seed: int) -> List[Event]:
    """A random session on a plain NumPy blotter: place into a free slot, fill part or all of an
    open order (at its limit or up to 2 ticks better), or cancel one."""
    rng = np.random.default_rng(seed)
    book = np.zeros((slots, N_FIELDS))
    out: List[Event] = []
    for _ in range(events):
        free = np.flatnonzero(book[:, QTY] == 0)
        open_ = np.flatnonzero((book[:, QTY] > book[:, FILLED]) & (book[:, CANCELLED] == 0))
        kinds = (["place"] * 4 if free.size else []) + (["fill"] * 4 + ["cancel"] if open_.size else [])
        if not kinds:
            break
        kind = kinds[int(rng.integers(len(kinds)))]
        if kind == "place":
            n = int(free[0])
            book[n, [INSTR, SIDE, PX, QTY]] = (rng.integers(len(INSTRUMENTS)), rng.choice([-1.0, 1.0]),
                                              rng.integers(80, 800) / 4, rng.integers(1, 500))
        else:
            n = int(rng.choice(open_))
            if kind == "cancel":
                book[n, CANCELLED] = 1.0
            else:
                qty = float(rng.integers(1, book[n, QTY] - book[n, FILLED] + 1))
                px = book[n, PX] - book[n, SIDE] * rng.integers(0, 3) / 4
                book[n, FILLED] += qty
                book[n, FILLED_NOTIONAL] += qty * px
        out.append((kind, n, book[n].copy()))
    return out


def build(bus: "mmsb.Bus", slots: int) -> None:
    """Create the order slots, the cash pages and the derived exposure pages."""
    exps: List[List["mmsb.Page"]] = [[] for _ in DESKS]
    for n in range(slots):
        order = bus.create_page(shape=(N_FIELDS,), dtype=F8, name=f"order.{n}")
        exp = bus.create_page(shape=(2, len(INSTRUMENTS)), dtype=F8, name=f"exp.{n}")
        bus.depend(exp, on=[order], fn=order_exposure)
        exps[n % len(DESKS)].append(exp)
    desks = []
    for k in range(len(DESKS)):
        bus.create_page(shape=(1,), dtype=F8, name=f"cash.{k}")
        desks.append(bus.create_page(shape=(2, len(INSTRUMENTS)), dtype=F8, name=f"desk.{k}"))
        if exps[k]:  # a desk without slots (a tiny book) stays all zero: a reduction needs parents
            bus.depend(desks[-1], on=exps[k], fn=mmsb.ops.reduce("sum_product"))
    firm = bus.create_page(shape=(2, len(INSTRUMENTS)), dtype=F8, name="firm")
    bus.depend(firm, on=desks, fn=mmsb.ops.reduce("sum_product"), weights=[rate for _, rate in DESKS])


def trade(bus: "mmsb.Bus", kind: str, n: int, fields: np.ndarray) -> None:
    """Commit one event; optimistic concurrency: each write names the epoch it expects."""
    order = bus.page(f"order.{n}")
    if kind == "place":
        order.write(0, fields.tobytes(), expect_epoch=0)  # the slot must never have been used
    elif kind == "cancel":
        order.write(CANCELLED * F8.itemsize, fields[CANCELLED:CANCELLED + 1].tobytes(), expect_epoch=order.epoch)
    else:
        was = order.view()
        cash = bus.page(f"cash.{n % len(DESKS)}")
        paid = fields[SIDE] * (fields[FILLED_NOTIONAL] - was[FILLED_NOTIONAL])
        with bus.transaction():
            order.write(FILLED * F8.itemsize, fields[FILLED:FILLED_NOTIONAL + 1].tobytes(), expect_epoch=order.epoch)
            cash.write(0, (cash.view() - paid).tobytes())


def read_book(bus: "mmsb.Bus", slots: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(orders, desk exposures, firm exposure) as stored in `bus`."""
    return (np.stack([bus.page(f"order.{n}").view() for n in range(slots)]),
            np.stack([bus.page(f"desk.{k}").view() for k in range(len(DESKS))]), bus.page("firm").view().copy())


def verify_exposures(orders: np.ndarray, desk: np.ndarray, firm: np.ndarray, when: str) -> None:
    """The derived exposures equal reference_exposure(orders)."""
    want_desk, want_firm = reference_exposure(orders)
    check(f"exposures {when}", compare_arrays("desk", want_desk, desk) + compare_arrays("firm", want_firm, firm))


def verify_diff(events: Sequence[Event], changed: Sequence[str]) -> None:
    """The source pages in a diff are exactly the orders (and, for fills, cash pages) of `events`."""
    want = {f"order.{n}" for _, n, _ in events} | {f"cash.{n % len(DESKS)}" for k, n, _ in events if k == "fill"}
    got = {c for c in changed if c.startswith(("order.", "cash."))}
    check("diff", [f"{p} changed but no event touched it" for p in sorted(got - want)]
          + [f"{p} was touched but is not in the diff" for p in sorted(want - got)])


def blotter_at(events: Sequence[Event], slots: int) -> np.ndarray:
    book = np.zeros((slots, N_FIELDS))
    for _, n, fields in events:
        book[n] = fields
    return book


def table(firm_then: np.ndarray, firm_now: np.ndarray) -> None:
    say(f"   {'':6}{'filled then':>14}{'filled now':>14}{'open then':>14}{'open now':>14}   (USD)")
    for i, name in enumerate(INSTRUMENTS):
        say(f"   {name:6}{firm_then[0, i]:14,.2f}{firm_now[0, i]:14,.2f}{firm_then[1, i]:14,.2f}{firm_now[1, i]:14,.2f}")


def trade_session(args: argparse.Namespace) -> None:
    """Run the session through mmsb, then every check (raises CheckFailed on a mismatch)."""
    slots = args.size
    events = session(slots, 3 * slots, args.seed)
    with bus_directory(args.dir, "order_book") as path, mmsb.Bus(path) as bus:
        build(bus, slots)
        say(f"book of {slots} order slots over {len(DESKS)} desks: {len(bus)} pages")
        lsns = [bus.lsn]
        for kind, n, fields in events:
            trade(bus, kind, n, fields)
            lsns.append(bus.lsn)
        counts = {k: sum(e[0] == k for e in events) for k in ("place", "fill", "cancel")}
        say(f"session: {counts['place']} placed, {counts['fill']} fills (each one transaction with its cash "
            f"page), {counts['cancel']} cancels; lsn {lsns[0]} -> {bus.lsn}")
        orders, desk, firm = read_book(bus, slots)
        check("order pages", compare_arrays("orders", blotter_at(events, slots), orders))
        verify_exposures(orders, desk, firm, "at the end")

        marks, firm_then = sorted({len(events) // 3, len(events) // 2}), None
        for e in marks:
            with bus.at(lsns[e]) as old:
                then = read_book(old, slots)
            check(f"orders at lsn {lsns[e]}", compare_arrays("orders", blotter_at(events[:e], slots), then[0]))
            verify_exposures(*then, when=f"at lsn {lsns[e]}")
            firm_then = then[2] if firm_then is None else firm_then
        say(f"bus.at(lsn) after events {marks}: orders equal the blotter then, exposures equal their recomputation")
        say(f"firm exposure at lsn {lsns[marks[0]]} and now:")
        table(firm_then, firm)

        changed = [bus.page(pid).name for pid in bus.diff(lsns[marks[0]], bus.lsn)]
        verify_diff(events[marks[0]:], changed)
        kinds = sorted({c.split(".")[0] for c in changed})
        say(f"bus.diff(lsn {lsns[marks[0]]}, lsn {bus.lsn}): {len(changed)} pages ({', '.join(kinds)}), "
            "exactly the orders and cash the later events touched, plus what they derive")
        hist = bus.history(f"order.{events[-1][1]}")
        say(f"order.{events[-1][1]} history: " + ", ".join(f"lsn {h.lsn} epoch {h.epoch}" for h in hist))
        if len(hist) != bus.page(f"order.{events[-1][1]}").epoch:
            raise CheckFailed("history", ["one record per epoch expected"])


def build_parser() -> argparse.ArgumentParser:
    return parser(__doc__.splitlines()[0], 60, "order slots in the book (the session has 3x as many events)")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point: run the session and all checks; the exit code says whether they passed."""
    return run(trade_session, build_parser, argv)


if __name__ == "__main__":
    raise SystemExit(main())
