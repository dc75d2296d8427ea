"""Validator 9, stability: a simulation driven entirely through mmsb pages stays finite, small
shocks stay small, and the perturbed run replays exactly from its log (DESIGN §5).

The model is the 2-D wave equation u_tt = ∇²u on a periodic N x N grid (float64), integrated
with symplectic Euler at Courant number c·dt/dx = 0.5 (the scheme is stable up to 1/√2 and
blows up exponentially beyond it, so the horizon below is a real test of boundedness: energy
is neither damped nor amplified, shocks neither decay away nor grow). Pages: state `u` and `v`
(velocity); `lap` = ∇²u, derived through bus.depend with a Python callable; `u_next` = u + dt·v,
derived through mmsb.ops.reduce("sum_product") with weights [1, dt]. One step is two commits:
a DeltaBatch whose first row copies u_next into u (plus, in the perturbed run, 64 one-cell rows
adding Gaussian shocks of σ = 1e-6 x the RMS of the initial u), whose wave recomputes lap and
u_next; then a write of v + dt·lap into v, whose wave recomputes u_next.

Two runs from the same seeded initial condition (Gaussian bumps) step in lockstep: unperturbed
(an in-memory bus without history) and perturbed (a directory bus, checkpoint every tenth of
the run, the four pages recorded at ten lsns between checkpoints).

Metrics: nonfinite_values (NaN/Inf in any page of either run, counted after every step),
max_relative_error (the largest ||(u, v)_perturbed - (u, v)_unperturbed|| over the run, relative
to the norm of the initial state: the problem's scale, which a stable conservative scheme keeps;
a norm taken at the same time would hide an instability that blows both runs up together),
error_vs_shocks (max_relative_error in units of what the shocks themselves add: a random walk of
SHOCKS x steps Gaussian kicks of σ, whose norm relative to the initial state's is
SIGMA·√(SHOCKS·steps / cells). A stable conservative scheme carries the kicks without losing or
growing them, so the two runs part by a fixed multiple of that: the kicks land in u and share
their energy with v, 1.85-1.97x over 30 seeds at quick size, 1.92x at full size. Below 1, the
shocks did not reach the state (a batch that lost its shock rows); above 3, something amplified
them (kicks landing larger than drawn, an unstable scheme) long before max_relative_error's
coarse bound would notice),
replay_divergence (max |difference| between every page recorded during the
perturbed run and the same page from bus.at(lsn) and mmsb.replay(path, to=lsn); must be exactly
0). Full: 1,000 steps on 256 x 256; quick: 100 steps on 64 x 64.
"""

from __future__ import annotations

import os

import numpy as np

import mmsb

from ._framework import Context, validator

COURANT = 0.5  # c·dt/dx with c = dx = 1: dt
SHOCKS, SIGMA = 64, 1e-6  # shocked cells per step; shock size relative to the RMS of u


def laplacian(out, u):
    """5-point periodic Laplacian (dx = 1), written into the derived page's staging array."""
    out[...] = np.roll(u, 1, 0) + np.roll(u, -1, 0) + np.roll(u, 1, 1) + np.roll(u, -1, 1) - 4.0 * u


class Run:
    """One simulation on its own bus: state pages u, v; derived lap (callable), u_next (reduce)."""

    def __init__(self, bus, u0, shock_rng=None):
        self.bus, self.rng, n = bus, shock_rng, u0.shape[0]
        self.sigma = SIGMA * float(np.sqrt(np.mean(u0 * u0)))
        self.u = bus.create_page(data=u0, name="u")
        self.v = bus.create_page(data=np.zeros_like(u0), name="v")
        self.lap = bus.create_page(shape=u0.shape, dtype="float64", name="lap")
        self.u_next = bus.create_page(shape=u0.shape, dtype="float64", name="u_next")
        bus.depend(self.lap, on=[self.u], fn=laplacian)
        bus.depend(self.u_next, on=[self.u, self.v], fn=mmsb.ops.reduce("sum_product"), weights=[1.0, COURANT])
        self.pages = [self.u, self.v, self.lap, self.u_next]
        self.cells = n * n

    def step(self):
        new_u = self.u_next.view().reshape(-1).copy()
        ids, offs, lens, payload = [self.u.id], [0], [new_u.nbytes], [new_u.tobytes()]
        if self.rng is not None:  # shocks: one delta row per cell, applied after the u row
            cells = self.rng.choice(self.cells, SHOCKS, replace=False)
            shocked = new_u[cells] + self.rng.normal(0.0, self.sigma, SHOCKS)
            ids += [self.u.id] * SHOCKS
            offs += [int(c) * 8 for c in cells]
            lens += [8] * SHOCKS
            payload.append(shocked.tobytes())
        self.bus.apply_batch(mmsb.DeltaBatch(ids, offs, lens, b"".join(payload)))
        self.v.write(0, self.v.view() + COURANT * self.lap.view())

    def nonfinite(self) -> int:
        return sum(int(np.count_nonzero(~np.isfinite(p.view()))) for p in self.pages)

    def state(self) -> np.ndarray:
        return np.concatenate([self.u.view().reshape(-1), self.v.view().reshape(-1)])


def initial(rng, n) -> np.ndarray:
    y, x = np.mgrid[0:n, 0:n].astype(np.float64)
    u = np.zeros((n, n))
    for _ in range(5):
        cy, cx, w = rng.uniform(0, n), rng.uniform(0, n), rng.uniform(n / 32, n / 8)
        u += rng.uniform(-1, 1) * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * w * w))
    return u


def divergence(bus, recorded: dict) -> float:
    """Max |difference| between the recorded pages and the same pages of `bus` (inf if a page
    is missing or misshapen; NaN-safe)."""
    worst = 0.0
    for name, want in recorded.items():
        got = bus.page(name).view() if name in bus else None
        if got is None or got.shape != want.shape:
            return float("inf")
        if got.tobytes() != want.tobytes():
            with np.errstate(all="ignore"):
                d = np.abs(got - want)
            worst = max(worst, float(np.max(d)) if np.isfinite(d).all() else float("inf"))
    return worst


@validator(9, "stability", ("nonfinite_values", "max_relative_error", "error_vs_shocks", "replay_divergence"))
def run(ctx: Context) -> dict:
    n, steps = ctx.size((256, 1000), (64, 100))
    every = steps // 10
    rng = np.random.default_rng(ctx.seed)
    u0 = initial(rng, n)
    path = os.path.join(ctx.tmpdir, "stability.mmsb")
    base = Run(mmsb.Bus(history=False), u0)
    pert = Run(mmsb.Bus(path), u0, np.random.default_rng(ctx.seed + 1))
    nonfinite, worst, recorded = base.nonfinite() + pert.nonfinite(), 0.0, {}
    scale = float(np.linalg.norm(u0))
    for k in ctx.progress(range(1, steps + 1), total=steps, desc="stability"):
        base.step()
        pert.step()
        nonfinite += base.nonfinite() + pert.nonfinite()
        with np.errstate(all="ignore"):  # an unstable run may overflow: inf is the answer then
            err = float(np.linalg.norm(pert.state() - base.state())) / scale
        worst = max(worst, err if np.isfinite(err) else float("inf"))
        if k % every == 0:
            pert.bus.checkpoint()
        if k % every == every // 2 or k == steps:
            recorded[pert.bus.lsn] = {p.name: p.view().copy() for p in pert.pages}
    replay = 0.0
    for lsn, pages in recorded.items():
        with pert.bus.at(lsn) as old:
            replay = max(replay, divergence(old, pages))
        with mmsb.replay(path, to=lsn) as old:
            replay = max(replay, divergence(old, pages))
    ctx.note("grid", f"{n}x{n}")
    ctx.note("steps", steps)
    ctx.note("courant", COURANT)
    ctx.note("relative_error_at_end", float(np.linalg.norm(pert.state() - base.state())) / scale)
    ctx.note("state_norm_end_vs_start", float(np.linalg.norm(base.state()) / np.linalg.norm(u0)))
    ctx.note("replayed_lsns", sorted(recorded))
    ctx.note("lsn", pert.bus.lsn)
    base.bus.close()
    pert.bus.close()
    shocks = SIGMA * float(np.sqrt(SHOCKS * steps / (n * n)))  # the kicks' random walk, relative to u0
    return {"nonfinite_values": nonfinite, "max_relative_error": worst, "error_vs_shocks": worst / shocks,
            "replay_divergence": replay}
