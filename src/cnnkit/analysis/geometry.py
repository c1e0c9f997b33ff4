"""Receptive-field bookkeeping: which input pixels each tensor's positions see.

Every tensor that comes from the input carries a `Geo`, one entry per spatial axis of the input
(H, W for images; T, H, W for clips). Coordinates are input pixel indices (pixel i has its centre
at i). For a tensor on a grid:

- `rf`    receptive-field size: how many input pixels one position sees,
- `jump`  distance in input pixels between neighbouring positions (the product of strides),
- `start` centre of position 0 of this grid, in input pixels,

so position o sees the pixels [start + o*jump - (rf-1)/2, start + o*jump + (rf-1)/2].

For a window op (conv / pool) with kernel k, stride s, padding p, dilation d the recurrence is
    k_eff = d*(k-1) + 1
    rf'    = rf + (k_eff - 1) * jump
    jump'  = jump * s
    start' = start + ((k_eff - 1)/2 - p) * jump
and a merge (add, mul, concat) takes the union of its inputs' regions, which is max(rf) when
the branches are centred alike and larger when they are not (even kernels, asymmetric padding).

The grid can also be flattened into one "token" axis (ViT patches): positions keep their
receptive field but lose their (row, col) layout; once positions are flattened together with
channels (`flatten(1)` before a classifier) only the largest rf is kept ("flat"); an op that mixes
all positions (global pooling, a Linear on flattened features, attention) makes the result
depend on the whole input ("global").
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

Nums = Tuple[float, ...]


@dataclass(frozen=True)
class Geo:
    rf: Nums  # per input axis
    jump: Optional[Nums]  # None once positions are lost (flat / global)
    start: Optional[Nums]
    axes: Optional[Tuple[int, ...]]  # tensor dims (negative) of the grid, one per input axis; one dim for tokens
    shape: Tuple[int, ...]  # grid size per input axis
    glob: bool = False  # depends on the whole input
    exact: bool = True  # False once some step was approximated

    @property
    def n(self) -> int:
        return len(self.rf)

    @property
    def grid(self) -> bool:
        return not self.glob and self.axes is not None and len(self.axes) == self.n

    @property
    def tokens(self) -> bool:
        return not self.glob and self.axes is not None and len(self.axes) == 1 and self.n > 1

    def replace(self, **kw) -> "Geo":
        return dataclasses.replace(self, **kw)

    def axis_of(self, dim: int) -> Optional[int]:
        """The input axis that tensor dim `dim` (negative) holds, or None."""
        if self.axes is None or dim not in self.axes:
            return None
        return self.axes.index(dim)


def input_geo(spatial: Sequence[int]) -> Geo:
    n = len(spatial)
    return Geo(rf=(1,) * n, jump=(1,) * n, start=(0.0,) * n, axes=tuple(range(-n, 0)), shape=tuple(spatial))


def global_geo(extent: Sequence[int], exact: bool = True) -> Geo:
    """Every value depends on the whole input: rf = the input extent."""
    return Geo(rf=tuple(extent), jump=None, start=None, axes=None, shape=(), glob=True, exact=exact)


def flat_geo(g: Geo, exact: Optional[bool] = None) -> Geo:
    """Positions are no longer tracked (flattened with channels): keep each axis' largest rf."""
    return g.replace(jump=None, start=None, axes=None, shape=(), exact=g.exact if exact is None else exact)


def _num(x: float) -> float:
    """Keep integral values integral so that tables print `7`, not `7.0`."""
    return int(x) if float(x).is_integer() else x


def window(g: Geo, dims: Sequence[int], k, s, p, d, out_sizes: Sequence[int], exact: bool = True) -> Geo:
    """Conv / pool step on tensor dims `dims` (negative), per-dim kernel, stride, padding (before), dilation."""
    rf, jump, start, shape = list(g.rf), list(g.jump), list(g.start), list(g.shape)
    for t, kk, ss, pp, dd, o in zip(dims, k, s, p, d, out_sizes):
        i = g.axis_of(t)
        k_eff = dd * (kk - 1) + 1
        rf[i] = _num(rf[i] + (k_eff - 1) * jump[i])
        start[i] = _num(start[i] + ((k_eff - 1) / 2 - pp) * jump[i])
        jump[i] = _num(jump[i] * ss)
        shape[i] = o
    return g.replace(rf=tuple(rf), jump=tuple(jump), start=tuple(start), shape=tuple(shape), exact=g.exact and exact)


def transposed(g: Geo, dims, k, s, p, d, out_sizes) -> Geo:
    """Transposed conv: each output sees ceil(k_eff/s) input positions; its grid is s times finer.

    Exact for s = 1; for s > 1 the taps alternate between positions, and the uniform grid below
    (the largest tap count, the mean offset) is an approximation.
    """
    rf, jump, start, shape = list(g.rf), list(g.jump), list(g.start), list(g.shape)
    exact = g.exact
    for t, kk, ss, pp, dd, o in zip(dims, k, s, p, d, out_sizes):
        i = g.axis_of(t)
        k_eff = dd * (kk - 1) + 1
        taps = math.ceil(k_eff / ss)
        rf[i] = _num(rf[i] + (taps - 1) * jump[i])
        start[i] = _num(start[i] + (pp - (k_eff - 1) / 2) / ss * jump[i])
        jump[i] = _num(jump[i] / ss)
        shape[i] = o
        exact = exact and ss == 1
    return g.replace(rf=tuple(rf), jump=tuple(jump), start=tuple(start), shape=tuple(shape), exact=exact)


def resample(g: Geo, dims, in_sizes, out_sizes, taps: int, align_corners: bool = False) -> Geo:
    """Up/down-sampling by interpolation (`taps` input positions per output: nearest 1, linear 2,
    cubic 4). Output o sits at input coordinate (o + 0.5)/f - 0.5 (f = out/in), or o*(n-1)/(m-1)
    with align_corners; the taps change from position to position, so this is approximate."""
    rf, jump, start, shape = list(g.rf), list(g.jump), list(g.start), list(g.shape)
    for t, n, m in zip(dims, in_sizes, out_sizes):
        i = g.axis_of(t)
        if n == m:
            continue
        if align_corners and m > 1:
            step, offset = (n - 1) / (m - 1), 0.0
        else:
            step = n / m
            offset = 0.0 if taps == 1 else step / 2 - 0.5
        rf[i] = _num(rf[i] + (taps - 1) * jump[i])
        start[i] = _num(start[i] + offset * jump[i])
        jump[i] = _num(jump[i] * step)
        shape[i] = m
    return g.replace(rf=tuple(rf), jump=tuple(jump), start=tuple(start), shape=tuple(shape), exact=False)


def shift(g: Geo, dims, before: Sequence[int], step: Sequence[int], out_sizes) -> Geo:
    """Padding (before = -pad) and slicing (before = slice start, step = slice step): rf unchanged."""
    jump, start, shape = list(g.jump), list(g.start), list(g.shape)
    for t, b, st, o in zip(dims, before, step, out_sizes):
        i = g.axis_of(t)
        start[i] = _num(start[i] + b * jump[i])
        jump[i] = _num(jump[i] * st)
        shape[i] = o
    return g.replace(jump=tuple(jump), start=tuple(start), shape=tuple(shape))


def union(geos: Sequence[Geo], extent: Sequence[int]) -> Geo:
    """Merge of several inputs (add, mul, concat): each position sees the union of what its
    inputs see at that position.

    With equal jumps the union is the same at every position: rf = hi - lo + 1 around the
    common grid. With different jumps (inputs on different grids broadcast together) the union
    grows along the grid; we report its largest value over the positions and mark it inexact.
    """
    geos = list(geos)
    if len(geos) == 1:
        return geos[0]
    exact = all(g.exact for g in geos)
    if any(g.glob for g in geos):
        return global_geo(extent, exact)
    if any(g.axes is None for g in geos) or len({g.axes for g in geos}) > 1:
        rf = tuple(_num(max(g.rf[i] for g in geos)) for i in range(geos[0].n))
        return Geo(rf=rf, jump=None, start=None, axes=None, shape=(), exact=exact)
    base = max(geos, key=lambda g: math.prod(g.shape))
    if any(g.shape != base.shape for g in geos) and not base.tokens:
        exact = False
    rf, start = [], []
    for i in range(base.n):
        ends = []
        for o in (0, base.shape[i] - 1 if base.shape else 0):
            lo = min(g.start[i] + o * g.jump[i] - (g.rf[i] - 1) / 2 for g in geos)
            hi = max(g.start[i] + o * g.jump[i] + (g.rf[i] - 1) / 2 for g in geos)
            ends.append((lo, hi))
        if len({g.jump[i] for g in geos}) > 1:
            exact = False
        (lo, hi) = ends[0]
        rf.append(_num(max(h - l + 1 for l, h in ends)))
        start.append(_num((lo + hi) / 2))
    return base.replace(rf=tuple(rf), start=tuple(start), exact=exact)
