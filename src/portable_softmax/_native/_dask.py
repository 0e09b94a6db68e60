"""Dask fast paths: one tree reduction over the class axis, whatever its chunks.

The generic code reads a Dask array two or three times (a max pass, a sum
pass, a gather) and keeps every block between the passes.  Here each block
of ``x`` is read once, by one task, which reduces it to per-row statistics
relative to its own maximum ``m``:

``r``
    ``sum(exp(x - m)) - 1`` over the block, with the maximum's exact 1 taken
    out (the log1p form of the generic code and SciPy: a dominant entry keeps
    its relative accuracy);
``t``, ``a``
    for the loss, ``sum(a_c (x_c - m))`` and ``sum(a_c)`` with ``a_c`` the
    target's weight on class ``c`` (the weighted target logit, or the weighted
    probabilities);
``ts``, ``b``
    the same with the label-smoothing weights ``b_c`` (the class weights).

``da.reduction`` merges the statistics of neighbouring blocks exactly (each
shifted to the larger maximum), in a tree of O(number of blocks) tasks, and
never rechunks the class axis.  ``softmax``, ``log_softmax`` and the
gradient are that reduction plus one elementwise pass over ``x``.  The
special values of the special-values table come out of the same arithmetic
as in the generic code: a block of ``-inf`` has ``m = -inf`` and an empty
sum, ``+inf`` entries share the mass wherever they sit, NaN propagates.

Out-of-range class indices cannot raise (nothing is computed until the
caller asks): their samples get a NaN loss and gradient.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any

import dask.array as da
import numpy as np

from portable_softmax._compat import Array, xp_quiet
from portable_softmax._native._base import Backend, LossAndGrad
from portable_softmax._problem import CrossEntropyProblem, IndexTargets

__all__ = ["DaskBackend"]

Stats = dict[str, Any]  # per-row statistics of one block or of merged blocks


class DaskBackend(Backend):
    """``dask.array.Array`` of NumPy (or CuPy) blocks with known chunk sizes."""

    name = "dask"

    def softmax(self, x: Array, axes: tuple[int, ...], where: Array | None) -> Array | None:
        return _normalised(x, axes, where, log=False) if _takes(x, axes) else None

    def log_softmax(self, x: Array, axes: tuple[int, ...], where: Array | None) -> Array | None:
        return _normalised(x, axes, where, log=True) if _takes(x, axes) else None

    def logsumexp(self, x: Array, axes: tuple[int, ...]) -> Array | None:
        if not _takes(x, axes):
            return None
        return _reduce(x, axes, _lse_block, name="portable-softmax-logsumexp", finish=_lse_value)

    def cross_entropy(
        self, p: CrossEntropyProblem, *, loss: bool, grad: bool
    ) -> LossAndGrad | None:
        if not _takes(p.logits, (p.axis,)) or any(n == 0 for n in p.logits.shape):
            return None
        return _cross_entropy(p, loss=loss, grad=grad)


def _takes(x: Array, axes: tuple[int, ...]) -> bool:
    """A Dask array whose reduced axes have known, non-zero chunk sizes."""
    if not isinstance(x, da.Array):
        return False
    return not any(math.isnan(c) or c == 0 for ax in axes for c in x.chunks[ax])


# --- per-block statistics ---------------------------------------------------


def _shifted(x: np.ndarray, m: np.ndarray) -> np.ndarray:
    """``x - m0`` in a new buffer, as the generic ``shift``.

    ``m0`` is the maximum, except 0 for a row of ``-inf`` (which stays
    ``-inf``); in a row whose maximum is ``+inf`` the ``+inf`` entries become
    0 and the others ``-inf``.
    """
    out = np.subtract(x, np.where(m == -math.inf, 0.0, m))
    if np.any(m == math.inf):
        out = np.where(x == math.inf, 0.0, out)
    return out


# Rows of a block are reduced a tile at a time, in one reused buffer that
# stays in the core's cache: a fresh block-sized temporary per operation
# costs more than the exp (page faults, memory traffic), and smaller tiles
# more Python calls per block (1 MiB measured fastest, 256 KiB 1.3x slower).
_TILE_BYTES = 1 << 20

# Rows (float32 or float64) whose maximum lies in [0, _DIRECT] take
# exp(x) * exp(-m) for exp(x - m): no entry can overflow, and one that
# underflows would underflow as exp(x - m) too.
_DIRECT = 60.0


@dataclasses.dataclass(frozen=True)
class Extra:
    """Per-tile fields beyond ``(m, r)``.

    ``of(part, tile, m0, b)`` gives the fields of the block's rows ``part``:
    ``b`` is the tile's ``x - m0``, or None where the tile takes the direct
    exponential; it is always given when ``dense`` (the fields need every
    shifted entry, not a few).
    """

    of: Callable[[slice, np.ndarray, np.ndarray, np.ndarray | None], Stats]
    dense: bool


def _as_rows(a: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """A 2-D view (or copy) of ``a`` with the ``axes`` last and flattened."""
    last = tuple(range(a.ndim - len(axes), a.ndim))
    a = np.moveaxis(a, axes, last)
    return a.reshape(-1, math.prod(a.shape[a.ndim - len(axes) :]))


def _row_stats(x: np.ndarray, axes: tuple[int, ...], extra: Extra | None = None) -> Stats:
    """``m``, ``r`` and ``extra``'s fields of every row of a block (the reduced axes kept)."""
    kept = tuple(1 if i in axes else n for i, n in enumerate(x.shape))
    rows = _as_rows(x, axes)
    n_rows, n_cols = rows.shape
    step = max(1, _TILE_BYTES // max(1, n_cols * rows.itemsize))
    buf = np.empty((min(step, n_rows), n_cols), dtype=rows.dtype)
    out: Stats = {}
    for lo in range(0, max(n_rows, 1), step):  # once for a block of no rows
        part = slice(lo, lo + step)
        tile = rows[part]
        for name, value in _tile_stats(tile, buf[: tile.shape[0]], part, extra).items():
            if name not in out:
                out[name] = np.empty((n_rows, 1), dtype=value.dtype)
            out[name][part] = value
    return {name: value.reshape(kept) for name, value in out.items()}


def _tile_stats(tile: np.ndarray, b: np.ndarray, part: slice, extra: Extra | None) -> Stats:
    """The fields of some rows; ``b`` is the buffer, ``part`` the rows' place in the block.

    ``r = sum(exp(x - m0)) - 1`` leaves one maximal entry per row out of the
    sum instead of subtracting its exact 1 afterwards (ties keep theirs:
    ``r = n_top - 1 + the rest``), so a small ``r`` keeps its digits.  A row
    of ``-inf`` gets ``m = -inf`` and ``r = -1`` (an empty sum).
    """
    top = np.argmax(tile, axis=1)[:, None]  # NaN counts as the maximum: it propagates
    m = np.take_along_axis(tile, top, axis=1)
    fields = {"m": m}
    direct = tile.dtype.itemsize >= 4 and (extra is None or not extra.dense)
    if direct and np.all((m >= 0) & (m <= _DIRECT)):
        # One pass fewer than shifting first.
        if extra is not None:
            fields.update(extra.of(part, tile, m, None))
        np.exp(tile, out=b)
        np.put_along_axis(b, top, 0.0, axis=1)
        fields["r"] = np.sum(b, axis=1, keepdims=True) * np.exp(-m)
        return fields
    m0 = np.where(m == -math.inf, 0.0, m)
    np.subtract(tile, m0, out=b)
    if np.any(m == math.inf):  # the +inf entries share the mass; the others get -inf
        np.copyto(b, 0.0, where=tile == math.inf)
    if extra is not None:
        fields.update(extra.of(part, tile, m0, b))
    np.exp(b, out=b)
    np.put_along_axis(b, top, 0.0, axis=1)
    rest = np.sum(b, axis=1, keepdims=True)
    fields["r"] = np.where(m == -math.inf, -1.0, rest).astype(b.dtype, copy=False)
    return fields


@xp_quiet
def _lse_block(x: np.ndarray, axis: tuple[int, ...], keepdims: bool = True) -> Stats:
    return _row_stats(x, axis)


def _masked_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``sum(a * b)`` per row (``a`` broadcast to ``b``); a zero ``a`` hides a ``-inf`` ``b``."""
    if a.ndim == 1 and a.all():  # class weights: a matrix-vector product
        return (b @ a)[:, None]
    return np.sum(np.where(a == 0, 0.0, a * b), axis=1, keepdims=True)


def _smoothing(b: np.ndarray, weight: Any, live: Any) -> Stats:
    """``ts``, ``b`` (and ``n``, the live classes, under ``where``) of some rows.

    The uniform target's part: the smoothing spreads its mass evenly over the
    classes that take part; its weights are the class weights there and 0 on
    classes masked by ``where``.
    """
    n_rows = b.shape[0]
    if live is None:
        ts = np.sum(b, axis=1, keepdims=True) if weight is None else _masked_dot(weight, b)
        total = b.shape[1] if weight is None else np.sum(weight)
        return {"ts": ts, "b": np.full((n_rows, 1), total, dtype=b.dtype)}
    w = np.where(live, 1.0 if weight is None else weight, 0.0).astype(b.dtype, copy=False)
    return {
        "ts": _masked_dot(w, b),
        "b": np.sum(w, axis=1, keepdims=True),
        "n": np.sum(live, axis=1, keepdims=True, dtype=b.dtype),
    }


@xp_quiet
def _index_block(
    x: np.ndarray,
    y: np.ndarray,
    counted: np.ndarray,
    classes: np.ndarray,
    weight: np.ndarray | None,
    live: np.ndarray | None,
    *,
    axis: int,
    smooth: bool,
) -> Stats:
    """The statistics of one block of logits with class-index targets ``y``."""
    y, counted = y.reshape(-1), counted.reshape(-1)  # the order of the rows
    lo, n = classes[0], classes.shape[0]
    inside = counted & (y >= lo) & (y < lo + n)
    local = np.where(inside, y - lo, 0)
    w_y = inside.astype(x.dtype) if weight is None else np.where(inside, weight[local], 0.0)
    live_rows = None if live is None else _as_rows(live, (axis,))

    def of(part: slice, tile: np.ndarray, m0: np.ndarray, b: np.ndarray | None) -> Stats:
        rows, cols = np.arange(tile.shape[0]), local[part]
        # The same rounding as b's entry: x - m0 (m0 finite where b is None).
        picked = tile[rows, cols] - m0[:, 0] if b is None else b[rows, cols]
        wy = w_y[part].astype(tile.dtype, copy=False)
        fields = {"t": np.where(wy == 0, 0.0, wy * picked)[:, None], "a": wy[:, None]}
        if smooth:
            fields.update(_smoothing(b, weight, None if live is None else live_rows[part]))
        return fields

    return _row_stats(x, (axis,), Extra(of, dense=smooth))


@xp_quiet
def _probs_block(
    x: np.ndarray,
    probs: np.ndarray,
    weight: np.ndarray | None,
    live: np.ndarray | None,
    *,
    axis: int,
    target: bool,
    smooth: bool,
) -> Stats:
    """The statistics of one block of logits with probability targets."""
    p_rows = _as_rows(probs, (axis,))
    live_rows = None if live is None else _as_rows(live, (axis,))

    def of(part: slice, tile: np.ndarray, m0: np.ndarray, b: np.ndarray | None) -> Stats:
        fields: Stats = {}
        if target:
            a = p_rows[part] if weight is None else p_rows[part] * weight
            fields["t"] = _masked_dot(a, b)
            fields["a"] = np.sum(a, axis=1, keepdims=True)
        if smooth:
            fields.update(_smoothing(b, weight, None if live is None else live_rows[part]))
        return fields

    return _row_stats(x, (axis,), Extra(of, dense=True))


# --- the exact merge --------------------------------------------------------

# Pairs (sum relative to the block maximum, sum of its weights).
_SHIFTED_SUMS = (("t", "a"), ("ts", "b"))


def _flat(nested: Any) -> list[Stats]:
    """The blocks' statistics out of Dask's nested lists (one level per reduced axis)."""
    if isinstance(nested, dict):
        return [nested]
    return [s for item in nested for s in _flat(item)]


@xp_quiet
def _merge(nested: Any, axis: Any = None, keepdims: bool = True) -> Stats:
    """The statistics of several blocks of the same rows, shifted to their common maximum.

    ``r``: ``S - 1 = (n_top - 1) + sum_top r_i + sum_other (1 + r_i) exp(m_i - M)``,
    where the blocks holding the maximum ``M`` ("top") add their ``r`` as it
    is -- no ``1 + r`` is formed, which would lose a small ``r``'s digits.
    """
    parts = _flat(nested)
    if len(parts) == 1:
        return parts[0]
    m = functools.reduce(np.maximum, [s["m"] for s in parts])  # NaN propagates
    m0 = np.where(m == -math.inf, 0.0, m)
    n_top = sum((s["m"] == m).astype(m.dtype) for s in parts)
    r = n_top - 1.0
    merged: Stats = {"m": m}
    for s in parts:
        top = s["m"] == m
        r = r + np.where(top, s["r"], (1.0 + s["r"]) * np.exp(s["m"] - m0))
    merged["r"] = r.astype(m.dtype, copy=False)
    for t, a in _SHIFTED_SUMS:
        if t not in parts[0]:
            continue
        total = 0.0
        for s in parts:
            # Shifted from the block's m0 to the common one; 0 for the top
            # blocks, where inf - inf would be NaN.
            step = np.where(s["m"] == m, 0.0, np.where(s["m"] == -math.inf, 0.0, s["m"]) - m0)
            total = total + np.where(s[a] == 0, 0.0, s[t] + s[a] * step)
        merged[t] = total.astype(m.dtype, copy=False)
        merged[a] = sum(s[a] for s in parts).astype(m.dtype, copy=False)
    if "n" in parts[0]:
        merged["n"] = sum(s["n"] for s in parts)
    return merged


def _identity(block: Stats, axis: Any = None, keepdims: bool = True) -> Stats:
    return block


def _finish(nested: Any, axis: Any = None, keepdims: bool = True, *, finish: Any) -> Any:
    return finish(_merge(nested))


def _log_z(s: Stats) -> np.ndarray:
    """``log(sum(exp(x - m0)))``: 0 for a row of ``-inf``, so ``x - m0 - log_z`` stays ``-inf``."""
    return np.log1p(np.where(s["m"] == -math.inf, 0.0, s["r"]))


@xp_quiet
def _lse_value(s: Stats) -> np.ndarray:
    return (s["m"] + _log_z(s)).astype(s["m"].dtype, copy=False)


def _reduce(
    stats: Array, axes: tuple[int, ...], chunk: Any, *, name: str, finish: Any = None
) -> Array:
    """The tree reduction of per-block statistics over ``axes`` (kept, length 1).

    ``chunk`` makes a block's statistics (the identity when ``stats`` already
    holds them); ``finish`` turns the merged statistics into the result's
    blocks (None: they stay statistics, for a later step).
    """
    dtype = stats.dtype
    aggregate = _merge if finish is None else functools.partial(_finish, finish=finish)
    return da.reduction(
        stats,
        chunk,
        aggregate,
        combine=_merge,
        axis=axes,
        keepdims=True,
        concatenate=False,
        dtype=dtype,
        meta=np.empty((0,) * stats.ndim, dtype=dtype),
        name=name,
    )


# --- softmax and log_softmax: the reduction, then one elementwise pass ------


@xp_quiet
def _normalise_block(x: np.ndarray, s: Stats, where: np.ndarray | None, *, log: bool) -> np.ndarray:
    if where is not None:
        x = np.where(where, x, -math.inf)
    shifted = _shifted(x, s["m"])
    if log:
        out = shifted - _log_z(s)
        fill = -math.inf
    else:
        z = 1.0 + s["r"]  # 0 only for a row of -inf: 0 / 1 gives its zeros
        out = np.exp(shifted) / np.where(z == 0, 1.0, z)
        fill = 0.0
    out = out if where is None else np.where(where, out, fill)
    return out.astype(x.dtype, copy=False)


def _normalised(x: Array, axes: tuple[int, ...], where: Array | None, *, log: bool) -> Array:
    masked = x if where is None else da.where(where, x, -math.inf)
    stats = _reduce(masked, axes, _lse_block, name="portable-softmax-lse")
    ind = tuple(range(x.ndim))
    mask = (None, None) if where is None else (where.rechunk(x.chunks), ind)
    func = functools.partial(_normalise_block, log=log)
    token = "portable-softmax-" + ("log-softmax" if log else "softmax")
    return _blockwise(func, ind, x, ind, stats, ind, *mask, token=token)


# --- cross-entropy ----------------------------------------------------------


class _Inputs:
    """The problem's arrays as blockwise arguments aligned with the logits' blocks.

    Each is ``(array, index)`` or ``(None, None)``; small arrays (targets,
    weights) are rechunked to the logits' chunks, the logits never.
    """

    def __init__(self, p: CrossEntropyProblem) -> None:
        x, ax = p.logits, p.axis
        self.ind = tuple(range(x.ndim))
        self.sample_ind = tuple(i for i in self.ind if i != ax)
        sample_chunks = tuple(c for i, c in enumerate(x.chunks) if i != ax)
        none = (None, None)
        self.weight = none
        if p.weight is not None:
            self.weight = (da.asarray(p.weight).rechunk((x.chunks[ax],)), (ax,))
        self.live = none if p.where is None else (p.where.rechunk(x.chunks), self.ind)
        self.invalid = none
        if p.invalid is not None:
            self.invalid = (p.invalid.rechunk(sample_chunks), self.sample_ind)
        self.counted = self.classes = none
        if isinstance(p, IndexTargets):
            self.target = (p.indices.rechunk(sample_chunks), self.sample_ind)
            self.counted = (p.counted.rechunk(sample_chunks), self.sample_ind)
            classes = da.arange(p.n_classes, chunks=(x.chunks[ax],), dtype=p.indices.dtype)
            self.classes = (classes, (ax,))
        else:
            self.target = (p.probs.rechunk(x.chunks), self.ind)


def _blockwise(func: Any, ind: tuple[int, ...], *args: Any, token: str, **kwargs: Any) -> Array:
    """``da.blockwise`` with NumPy metadata of ``ind``'s rank and the first argument's dtype."""
    dtype = args[0].dtype
    meta = np.empty((0,) * len(ind), dtype=dtype)
    return da.blockwise(func, ind, *args, dtype=dtype, meta=meta, token=token, **kwargs)


def _ce_stats(p: CrossEntropyProblem, inputs: _Inputs) -> Array:
    """The merged statistics of every row of logits: one read of each block."""
    x, ax, eps = p.logits, p.axis, p.smoothing
    if isinstance(p, IndexTargets):
        block = functools.partial(_index_block, axis=ax, smooth=eps > 0)
        targets = (*inputs.target, *inputs.counted, *inputs.classes)
    else:
        block = functools.partial(_probs_block, axis=ax, target=eps < 1, smooth=eps > 0)
        targets = inputs.target
    args = (x, inputs.ind, *targets, *inputs.weight, *inputs.live)
    per_block = _blockwise(
        block, inputs.ind, *args, adjust_chunks={ax: 1}, token="portable-softmax-ce-block"
    )
    return _reduce(per_block, (ax,), _identity, name="portable-softmax-ce")


def _live_count(s: Stats, n_classes: int) -> Any:
    """The classes taking part per row (at least 1, as the generic code's uniform)."""
    return n_classes if "n" not in s else np.where(s["n"] == 0, 1.0, s["n"])


@xp_quiet
def _per_sample(
    s: Any, counted: Any, invalid: Any, *, axis: int, eps: float, n_classes: int
) -> np.ndarray:
    """Per-sample losses ``-sum_c q_c log p_c`` from the merged statistics (class axis dropped)."""
    s = _merge(s)  # a list of one: the class axis is contracted
    log_z = _log_z(s)
    loss = np.zeros_like(s["m"])
    if "t" in s:  # the target's part, weight (1 - eps)
        loss = (1 - eps) * np.where(s["a"] == 0, 0.0, s["a"] * log_z - s["t"])
    if "ts" in s:  # the uniform smoothing's part, weight eps
        smooth = np.where(s["b"] == 0, 0.0, s["b"] * log_z - s["ts"]) / _live_count(s, n_classes)
        if counted is not None:
            smooth = np.where(np.expand_dims(counted, axis), smooth, 0.0)
        loss = loss + eps * smooth
    loss = np.squeeze(loss, axis=axis)
    if invalid is not None:
        loss = np.where(invalid, math.nan, loss)
    return loss.astype(s["m"].dtype, copy=False)


def _losses(p: CrossEntropyProblem, stats: Array, inputs: _Inputs) -> Array:
    func = functools.partial(_per_sample, axis=p.axis, eps=p.smoothing, n_classes=p.n_classes)
    args = (stats, inputs.ind, *inputs.counted, *inputs.invalid)
    # The class axis (length 1 here) is contracted: no concatenation of statistics.
    return _blockwise(
        func, inputs.sample_ind, *args, concatenate=False, token="portable-softmax-ce-loss"
    )


@xp_quiet
def _target_weight(s: Any, *, axis: int) -> np.ndarray:
    return np.squeeze(_merge(s)["a"], axis=axis)


def _mean_divisor(p: CrossEntropyProblem, stats: Array, inputs: _Inputs) -> Array | float:
    """The mean's divisor: the summed target weights, or the number of samples."""
    if not isinstance(p, IndexTargets):
        return float(math.prod(p.probs.shape) // p.n_classes)
    func = functools.partial(_target_weight, axis=p.axis)
    w_y = _blockwise(
        func, inputs.sample_ind, stats, inputs.ind, concatenate=False, token="portable-softmax-w-y"
    )
    return da.sum(w_y)


def _reduction(p: CrossEntropyProblem, losses: Array, divisor: Any) -> Array:
    if p.reduction == "none":
        return losses
    total = da.sum(losses)
    if p.reduction == "sum":
        return total
    if isinstance(divisor, float):
        return total / divisor if divisor else total * 0.0
    # Nothing counted: the mean is 0, but an out-of-range index's NaN still shows.
    empty = divisor == 0
    zero = da.where(da.isnan(total), total, 0.0)
    return da.where(empty, zero, total / da.where(empty, 1.0, divisor))


def _mean_factor(p: CrossEntropyProblem, divisor: Any) -> Any:
    if p.reduction != "mean":
        return 1.0
    if isinstance(divisor, float):
        return 1.0 / divisor if divisor else 0.0
    empty = divisor == 0
    return da.where(empty, 0.0, 1.0 / da.where(empty, 1.0, divisor))


def _class_shape(x: np.ndarray, axis: int) -> list[int]:
    shape = [1] * x.ndim
    shape[axis] = x.shape[axis]
    return shape


@xp_quiet
def _gradient_block(
    x: np.ndarray,
    s: Stats,
    target: np.ndarray,
    counted: np.ndarray | None,
    classes: np.ndarray | None,
    weight: np.ndarray | None,
    live: np.ndarray | None,
    invalid: np.ndarray | None,
    factor: Any,
    *,
    axis: int,
    eps: float,
    n_classes: int,
) -> np.ndarray:
    """``(softmax * sum(q) - q) * factor`` on one block, ``q`` the smoothed weighted target."""
    shape = _class_shape(x, axis)
    w = np.ones(shape, x.dtype) if weight is None else np.reshape(weight, shape)
    if classes is None:  # probabilities
        q = (1 - eps) * target * w
    else:
        y = np.expand_dims(target, axis)
        hit = (y == np.reshape(classes, shape)) & np.expand_dims(counted, axis)
        q = np.where(hit, (1 - eps) * w, 0.0)
    rows = 1.0 if counted is None else np.expand_dims(counted, axis)  # smoothed rows
    q_sum = (1 - eps) * s["a"] if "a" in s else 0.0
    if eps > 0:
        n_live = _live_count(s, n_classes)
        uniform = w / n_live if live is None else np.where(live, w / n_live, 0.0)
        q = q + eps * uniform * rows
        q_sum = q_sum + eps * (s["b"] / n_live) * rows
    z = 1.0 + s["r"]  # 0 only for a row of -inf: 0 / 1 gives its zeros
    soft = np.exp(_shifted(x, s["m"])) / np.where(z == 0, 1.0, z)
    g = (soft * q_sum - q) * factor
    if invalid is not None:
        g = np.where(np.expand_dims(invalid, axis), math.nan, g)
    return g.astype(x.dtype, copy=False)


def _gradient(p: CrossEntropyProblem, stats: Array, inputs: _Inputs, factor: Any) -> Array:
    func = functools.partial(_gradient_block, axis=p.axis, eps=p.smoothing, n_classes=p.n_classes)
    args = (
        p.logits,
        inputs.ind,
        stats,
        inputs.ind,
        *inputs.target,
        *inputs.counted,
        *inputs.classes,
        *inputs.weight,
        *inputs.live,
        *inputs.invalid,
        factor,
        () if isinstance(factor, da.Array) else None,
    )
    return _blockwise(func, inputs.ind, *args, token="portable-softmax-ce-grad")


def _cross_entropy(p: CrossEntropyProblem, *, loss: bool, grad: bool) -> LossAndGrad:
    inputs = _Inputs(p)
    stats = _ce_stats(p, inputs)
    divisor = _mean_divisor(p, stats, inputs) if p.reduction == "mean" else 1.0
    value = _reduction(p, _losses(p, stats, inputs), divisor) if loss else None
    gradient = _gradient(p, stats, inputs, _mean_factor(p, divisor)) if grad else None
    return value, gradient
