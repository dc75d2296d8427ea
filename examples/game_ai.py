"""Game AI: two teams on a grid steer by influence maps that mmsb derives through semirings; the
match is played through the ingest queue (`submit` + `tick`) and then replayed from the log.

Pages (float64):
  agent.<t>.<i>   (4,)   x, y, hp, team: the only pages the game writes (one delta per tick each)
  threat.<t>.<i>  (G,G)  hp - DECAY * chebyshev distance where positive, else -inf (the max_plus
                         zero); a Python recompute of its agent page
  floor           (G,G)  zeros: makes every team map >= 0, so `control` never sees -inf - -inf
  team.<t>        (G,G)  max_plus over floor and the team's threat pages, the leader weighted
                         +LEADER_BONUS: the strongest threat the team projects on each cell
  control         (G,G)  sum_product of team.0 and team.1 with weights [+1, -1]: who holds a cell

Each tick every agent reads `control`, moves to the neighbouring cell that best trades holding
ground against closing in on the nearest enemy (wounded agents retreat instead), then agents
strike their nearest enemy in reach. Checks: the derived maps equal a vectorised NumPy
recomputation every tick; the whole match equals a plain NumPy run without mmsb; replaying the
log, time travel to tick k, and reopening the directory give the live pages byte for byte.
All values are small integers (or -inf), so the checks compare exactly, not within a tolerance.
"""

from __future__ import annotations

import argparse
from typing import List, Optional, Sequence, Tuple

import numpy as np

import mmsb

from _common import (CheckFailed, PageState, bus_directory, capture, check, compare_arrays, compare_states, parser,
                     positive_int, run, say)

GRID = 16
DECAY = 15.0
LEADER_BONUS = 10.0
DAMAGE = 12.0
REACH = 1
APPROACH = 40.0  # score per cell of distance to the nearest enemy; > 2 * DECAY, so fronts meet
RETREAT_HP = 30.0
MOVES = [(dx, dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1)]


def threat_kernel(out: np.ndarray, agent: np.ndarray) -> None:
    """Recompute of threat.<t>.<i> from agent.<t>.<i>."""
    x, y, hp = agent[0], agent[1], agent[2]
    idx = np.arange(out.shape[0], dtype=np.float64)
    dist = np.maximum(np.abs(idx[:, None] - x), np.abs(idx[None, :] - y))
    t = hp - DECAY * dist
    out[:] = np.where((t > 0) & (hp > 0), t, -np.inf)


def reference_maps(states: np.ndarray) -> tuple:
    """team.0, team.1 and control computed for all agents at once in NumPy (no mmsb)."""
    idx = np.arange(GRID, dtype=np.float64)
    dist = np.maximum(np.abs(idx[None, :, None] - states[:, 0, None, None]),
                      np.abs(idx[None, None, :] - states[:, 1, None, None]))
    threat = states[:, 2, None, None] - DECAY * dist
    threat = np.where((threat > 0) & (states[:, 2, None, None] > 0), threat, -np.inf)
    teams = []
    for t in (0, 1):
        members = np.flatnonzero(states[:, 3] == t)
        bonus = np.where(np.arange(members.size) == 0, LEADER_BONUS, 0.0)[:, None, None]
        teams.append(np.maximum(0.0, (threat[members] + bonus).max(axis=0)))
    return teams[0], teams[1], teams[0] - teams[1]


def decide(states: np.ndarray, control: np.ndarray) -> np.ndarray:
    """One tick of the AI and the combat rules: the states after it (pure function)."""
    new = states.copy()
    alive = states[:, 2] > 0
    for i in np.flatnonzero(alive):
        x, y, hp, team = states[i]
        enemies = alive & (states[:, 3] != team)
        if not enemies.any():
            continue
        sign = 1.0 if team == 0 else -1.0
        pull = APPROACH if hp > RETREAT_HP else -APPROACH
        best, best_score = (x, y), -np.inf
        for dx, dy in MOVES:
            nx, ny = min(max(x + dx, 0), GRID - 1), min(max(y + dy, 0), GRID - 1)
            gap = np.max(np.abs(states[enemies, :2] - (nx, ny)), axis=1).min()
            score = sign * control[int(nx), int(ny)] - pull * gap
            if score > best_score:
                best, best_score = (nx, ny), score
        new[i, :2] = best
    damage = np.zeros(len(states))
    for i in np.flatnonzero(alive):
        enemies = np.flatnonzero(alive & (states[:, 3] != states[i, 3]))
        if enemies.size:
            gaps = np.max(np.abs(new[enemies, :2] - new[i, :2]), axis=1)
            if gaps.min() <= REACH:
                damage[enemies[np.argmin(gaps)]] += DAMAGE
    new[:, 2] = np.maximum(0.0, new[:, 2] - damage)
    return new


def initial_states(per_team: int, seed: int) -> np.ndarray:
    """Team 0 starts in the left quarter, team 1 in the right quarter; integer hp 60..100."""
    rng = np.random.default_rng(seed)
    rows = []
    for team, cols in ((0, (0, GRID // 4)), (1, (GRID - GRID // 4, GRID))):
        for _ in range(per_team):
            rows.append([rng.integers(0, GRID), rng.integers(*cols), rng.integers(60, 101), team])
    return np.array(rows, dtype=np.float64)


def build(bus: "mmsb.Bus", states: np.ndarray) -> List["mmsb.Page"]:
    """Create the agent pages and the derived maps; returns the agent pages in state order."""
    agents, threats = [], {0: [], 1: []}
    for row in states:
        t = int(row[3])
        a = bus.create_page(data=row, name=f"agent.{t}.{len(threats[t])}")
        th = bus.create_page(shape=(GRID, GRID), dtype="float64", name=f"threat.{t}.{len(threats[t])}")
        bus.depend(th, on=[a], fn=threat_kernel)
        agents.append(a)
        threats[t].append(th)
    floor = bus.create_page(shape=(GRID, GRID), dtype="float64", name="floor")
    teams = []
    for t in (0, 1):
        team = bus.create_page(shape=(GRID, GRID), dtype="float64", name=f"team.{t}")
        weights = [0.0, LEADER_BONUS] + [0.0] * (len(threats[t]) - 1)
        bus.depend(team, on=[floor, *threats[t]], fn=mmsb.ops.reduce("max_plus"), weights=weights)
        teams.append(team)
    control = bus.create_page(shape=(GRID, GRID), dtype="float64", name="control")
    bus.depend(control, on=teams, fn=mmsb.ops.reduce("sum_product"), weights=[1.0, -1.0])
    return agents


def read_states(bus: "mmsb.Bus", names: Sequence[str]) -> np.ndarray:
    return np.stack([bus.page(n).view() for n in names]).astype(np.float64)


def verify_maps(states: np.ndarray, team0: np.ndarray, team1: np.ndarray, control: np.ndarray, when: str) -> None:
    """The derived maps equal reference_maps(states)."""
    want = reference_maps(states)
    problems = []
    for name, exp, got in zip(("team.0", "team.1", "control"), want, (team0, team1, control)):
        problems += compare_arrays(f"{name} {when}", exp, got)
    check("influence maps", problems)


def verify_match(expected: Sequence[np.ndarray], live: Sequence[np.ndarray]) -> None:
    """The live match (agent states after each tick) equals the plain NumPy match."""
    if len(expected) != len(live):
        raise CheckFailed("match", [f"{len(live)} ticks played, {len(expected)} expected"])
    check("match", [p for k, (e, g) in enumerate(zip(expected, live)) for p in compare_arrays(f"tick {k}", e, g)])


def plain_match(states: np.ndarray, ticks: int) -> List[np.ndarray]:
    """The same match without mmsb: states before tick 0, then after every tick."""
    out = [states]
    for _ in range(ticks):
        out.append(decide(out[-1], reference_maps(out[-1])[2]))
    return out


def live_match(bus: "mmsb.Bus", args: argparse.Namespace, expected: Sequence[np.ndarray]) -> Tuple[List[str], PageState]:
    """Play the match on `bus` through submit + tick, checking the maps every tick and the whole
    match, replay and time travel at the end. Returns the agent page names and the final pages."""
    agents = build(bus, expected[0])
    names = [a.name for a in agents]
    team0, team1, control = (bus.page(n).view() for n in ("team.0", "team.1", "control"))  # live views
    say(f"{len(agents)} agents on a {GRID}x{GRID} grid: {len(bus)} pages, {bus.lsn} records after set-up")
    live, tick_lsn = [read_states(bus, names)], [bus.lsn]
    for tick in range(args.ticks):
        states = live[-1]
        verify_maps(states, team0, team1, control, f"before tick {tick}")
        new = decide(states, control)
        for page, old, row in zip(agents, states, new):
            if not np.array_equal(old, row):
                bus.submit(mmsb.Delta.at(page, 0, row.tobytes()))
        report = bus.tick()
        live.append(read_states(bus, names))
        tick_lsn.append(bus.lsn)
        if tick % 10 == 0 or tick == args.ticks - 1:
            hp = [new[new[:, 3] == t, 2] for t in (0, 1)]
            say(f"tick {tick:3d}: alive {int((hp[0] > 0).sum())} v {int((hp[1] > 0).sum())}, "
                f"hp {hp[0].sum():.0f} v {hp[1].sum():.0f}, cells held {int((control > 0).sum())} v "
                f"{int((control < 0).sum())}, {report.deltas_applied} deltas, {report.recomputes} recomputes")
    verify_match(expected, live)
    hp = [live[-1][live[-1][:, 3] == t, 2].sum() for t in (0, 1)]
    say(f"match over at lsn {bus.lsn}: team {int(np.argmax(hp))} ahead ({hp[0]:.0f} v {hp[1]:.0f} hp); "
        "equal to the plain NumPy match at every tick")

    final = capture(bus)
    with mmsb.replay(bus.path) as replayed:
        check("replay", compare_states(final, capture(replayed)))
    say(f"replayed {len(final)} pages from the log beside the live bus: bytes and epochs identical")
    ticks = sorted({1, args.ticks // 2, args.ticks})
    for k in ticks:
        with bus.at(tick_lsn[k]) as old:
            check(f"time travel to tick {k}", compare_arrays(f"agents at tick {k}", expected[k], read_states(old, names)))
    say(f"bus.at(lsn) at ticks {ticks}: agent states equal the plain match")
    return names, final


def reopen(path: str, names: Sequence[str], final: PageState) -> None:
    """mmsb.open gives the closed bus back page for page; the Python recomputes (never stored in
    the log) are registered again, which re-attaches them without changing a byte."""
    with mmsb.open(path) as bus:
        check("reopen", compare_states(final, capture(bus)))
        stale = len(bus.stale_pages())
        for name in names:
            bus.depend(name.replace("agent", "threat"), on=[name], fn=threat_kernel)
        check("re-registered recomputes", [f"{p.name} still stale" for p in bus.stale_pages()]
              + compare_states(final, capture(bus)))
    say(f"mmsb.open: same {len(final)} pages, bytes and epochs; {stale} pages stale until threat_kernel "
        "was registered again, none after")


def play(args: argparse.Namespace) -> None:
    """Set up, play, replay, reopen and check one match (raises CheckFailed on a mismatch)."""
    expected = plain_match(initial_states(args.size, args.seed), args.ticks)
    with bus_directory(args.dir, "game_ai") as path:
        with mmsb.Bus(path, durability="flush") as bus:
            names, final = live_match(bus, args, expected)
        reopen(path, names, final)


def build_parser() -> argparse.ArgumentParser:
    p = parser(__doc__.splitlines()[0], 6, "agents per team")
    p.add_argument("--ticks", type=positive_int, default=40, help="length of the match")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point: run the match and all checks; the exit code says whether they passed."""
    return run(play, build_parser, argv)


if __name__ == "__main__":
    raise SystemExit(main())
