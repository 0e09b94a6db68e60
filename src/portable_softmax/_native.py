"""Measured fast paths for backends that have fused kernels or in-place arithmetic.

Each function here returns ``None`` when it has no fast path for its
arguments; the caller then runs the generic Array API code, which stays
complete.  ``native_kernels(False)`` (or ``PORTABLE_SOFTMAX_NATIVE=0`` in the
environment) turns every fast path off, so the tests can prove that both
paths agree.

Special values stay those of SPEC §3: the native kernels give NaN for rows
whose maximum is infinite, so a fast path checks for that (cheaply: such a
row is NaN throughout, one entry per row tells) and hands the input back to
the generic code.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import Any

import numpy as np

from portable_softmax._compat import (
    Array,
    is_cupy_namespace,
    is_jax_namespace,
    is_numpy_namespace,
    is_torch_namespace,
)

__all__ = ["native_kernels"]

_ENABLED = contextvars.ContextVar(
    "portable_softmax_native",
    default=os.environ.get("PORTABLE_SOFTMAX_NATIVE", "1").strip() not in ("0", "false", "no"),
)


@contextlib.contextmanager
def native_kernels(enabled: bool = True) -> Iterator[None]:
    """Turn the backend-specific fast paths on or off within a ``with`` block.

    The fast paths (PyTorch's fused kernels, ``jax.nn`` under a guard,
    CuPy's fused kernels, NumPy's in-place blocked kernels) are on by
    default; ``PORTABLE_SOFTMAX_NATIVE=0`` in the environment turns them off
    for the whole process.  Off, every call runs
    the generic Array API implementation.

    Examples
    --------
    >>> import portable_softmax as ps
    >>> with ps.native_kernels(False):
    ...     ps.softmax([0.0, 0.0])
    array([0.5, 0.5])
    """
    token = _ENABLED.set(bool(enabled))
    try:
        yield
    finally:
        _ENABLED.reset(token)


def _active(where: Array | None) -> bool:
    return where is None and _ENABLED.get()


# --------------------------------------------------------------------- NumPy
# SciPy's softmax makes three full temporaries; here the output is the only
# one, and rows are processed in cache-sized blocks, split over the cores
# (NumPy's ufuncs release the GIL).

_BLOCK_BYTES = 1 << 19
_PARALLEL_MIN_ELEMENTS = 1 << 18
_pool: ThreadPoolExecutor | None = None


def _executor() -> ThreadPoolExecutor:
    global _pool  # noqa: PLW0603 - one pool per process, made on first use
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 1)
    return _pool


def _to_rows(x: Any, axes: tuple[int, ...], lib: ModuleType) -> tuple[Any, tuple[int, ...]]:
    """A C-contiguous 2-D view (or copy) of ``x`` with the ``axes`` last and flattened.

    Returns the rows and the shape of ``x`` with those axes moved last, which
    :func:`_from_rows` needs.  ``lib`` is NumPy or CuPy (the same calls).
    """
    last = tuple(range(x.ndim - len(axes), x.ndim))
    if axes != last:
        x = lib.moveaxis(x, axes, last)
    n = math.prod(x.shape[x.ndim - len(axes) :])
    return lib.ascontiguousarray(x).reshape(-1, n), x.shape


def _from_rows(
    out: Any, axes: tuple[int, ...], moved: tuple[int, ...], lib: ModuleType, *, reduce: bool
) -> Any:
    """Undo :func:`_to_rows`; with ``reduce`` the reduced axes come back with length 1."""
    ndim, k = len(moved), len(axes)
    out = out.reshape(*moved[: ndim - k], *((1,) * k if reduce else moved[ndim - k :]))
    last = tuple(range(ndim - k, ndim))
    return out if axes == last else lib.moveaxis(out, last, axes)


def _np_rows(
    x: np.ndarray,
    axes: tuple[int, ...],
    kernel: Callable[[np.ndarray, np.ndarray], bool],
    *,
    reduce: bool = False,
) -> np.ndarray | None:
    """Run ``kernel(rows_in, rows_out)`` over blocks of a 2-D view of ``x``.

    The view puts the reduced axes last; ``kernel`` returns False when a
    block has an infinite maximum (then ``None`` asks for the generic path).
    With ``reduce`` the kernel writes one value per row and the result keeps
    the reduced axes with length 1.
    """
    if x.ndim == 2 and axes == (1,) and x.size < _PARALLEL_MIN_ELEMENTS and not reduce:
        # The common small case, without the reshaping below (half its cost).
        out = np.empty_like(x)
        return out if kernel(x, out) else None
    rows, moved = _to_rows(x, axes, np)
    out = np.empty((rows.shape[0], 1 if reduce else rows.shape[1]), dtype=rows.dtype)

    def run(block: slice) -> bool:
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            return kernel(rows[block], out[block])

    if rows.size < _PARALLEL_MIN_ELEMENTS:
        ok = kernel(rows, out)
    else:
        step = max(1, _BLOCK_BYTES // max(1, rows.shape[1] * rows.itemsize))
        blocks = [slice(i, i + step) for i in range(0, rows.shape[0], step)]
        ok = all(_executor().map(run, blocks))
    return _from_rows(out, axes, moved, np, reduce=reduce) if ok else None


def _np_softmax_rows(x: np.ndarray, out: np.ndarray) -> bool:
    m = x.max(axis=1, keepdims=True)
    np.subtract(x, m, out=out)
    np.exp(out, out=out)
    z = out.sum(axis=1, keepdims=True)
    out /= z
    # An infinite maximum leaves NaN in its row sum (so does a NaN input,
    # which the generic path treats the same): hand those back.
    return not math.isnan(z.sum())


def _np_log_normalizer_rows(x: np.ndarray, shifted: np.ndarray) -> np.ndarray:
    """``log(sum(exp(shifted)))`` per row via log1p, taking the maximum's 1 out.

    As in the generic path (and SciPy): full relative accuracy where one entry
    dominates and the result is tiny.  Ties keep their exact 1s in the sum.
    """
    e = np.exp(shifted)
    e[np.arange(e.shape[0]), x.argmax(axis=1)] = 0.0
    return np.log1p(e.sum(axis=1, keepdims=True))


def _np_log_softmax_rows(x: np.ndarray, out: np.ndarray) -> bool:
    m = x.max(axis=1, keepdims=True)
    np.subtract(x, m, out=out)
    log_z = _np_log_normalizer_rows(x, out)
    out -= log_z
    return not np.isinf(m).any()


def _np_logsumexp_rows(x: np.ndarray, out: np.ndarray) -> bool:
    m = x.max(axis=1, keepdims=True)
    log_z = _np_log_normalizer_rows(x, x - m)
    np.add(m, log_z, out=out)
    return not np.isinf(m).any()


def _numpy_ok(x: Array, xp: ModuleType, where: Array | None) -> bool:
    return (
        _active(where)
        and is_numpy_namespace(xp)
        and isinstance(x, np.ndarray)
        and x.dtype in (np.float32, np.float64)
    )


# --------------------------------------------------------------------- PyTorch
# torch's fused CPU/CUDA kernels; float32 rows longer than this are computed in
# float64, because torch's float32 accumulation drifts (relative error 2e-6 at
# 32000 entries, 1e-5 at 1e5, 2e-4 at 1e6) beyond the accuracy the generic
# path keeps.
_TORCH_F32_MAX_ROW = 32768


def _torch_ok(xp: ModuleType, axes: tuple[int, ...], where: Array | None) -> bool:
    return _active(where) and is_torch_namespace(xp) and len(axes) == 1


def _torch_acc_dtype(x: Any, n: int) -> Any:
    import torch

    return torch.float64 if x.dtype == torch.float32 and n > _TORCH_F32_MAX_ROW else None


def _torch_has_nan_rows(out: Any, dim: int) -> bool:
    # A row with an infinite maximum comes back NaN throughout, so its first
    # entry tells; NaN inputs give the same, and the generic path keeps them NaN.
    import torch

    return bool(torch.isnan(out.select(dim, 0)).any())


def _torch_call(fn: Any, x: Any, dim: int, *, check: bool = True) -> Any | None:
    acc = _torch_acc_dtype(x, x.shape[dim])
    out = fn(x, dim) if acc is None else fn(x, dim, dtype=acc).to(x.dtype)
    return None if check and _torch_has_nan_rows(out, dim) else out


def cross_entropy(p: Any) -> Array | None:
    """``F.cross_entropy`` for class-index targets on PyTorch, or None.

    ``p`` is the validated problem of ``_losses``.  Ignored samples are
    marked with torch's own ``ignore_index``; a NaN result (an infinite
    logit, a zero weight against a ``-inf`` log-probability, a mean over
    nothing) goes back to the generic path, which defines those cases.
    """
    if not (_ENABLED.get() and is_torch_namespace(p.xp) and p.indices is not None):
        return None
    import torch
    import torch.nn.functional as F

    x = p.logits if p.logits.ndim == 1 else torch.movedim(p.logits, p.axis, 1)
    target = torch.where(p.counted, p.indices, -100)
    loss = F.cross_entropy(
        x, target, weight=p.weight, ignore_index=-100, reduction=p.reduction,
        label_smoothing=p.smoothing,
    )  # fmt: skip
    return None if bool(torch.isnan(loss).any()) else loss


def fused_cross_entropy(p: Any, *, loss: bool, grad: bool) -> tuple[Any, Any] | None:
    """Class-index cross-entropy and/or its gradient in one fused pass, or None.

    ``p`` is the validated problem of ``_losses``; NumPy and CuPy have such a
    path.  Returns ``(loss or None, gradient or None)``.
    """
    if not (_ENABLED.get() and p.indices is not None and math.prod(p.logits.shape)):
        return None
    if isinstance(p.logits, np.ndarray):
        return _np_cross_entropy(p, loss=loss, grad=grad)
    if is_cupy_namespace(p.xp):
        return _cupy_cross_entropy(p, loss=loss, grad=grad)
    return None


def _np_cross_entropy(p: Any, *, loss: bool, grad: bool) -> tuple[Any, Any] | None:
    """NumPy: one logits-sized buffer holds ``x - max``, then ``exp``, then the
    probabilities, then the gradient; everything else is per sample.  The
    math is that of ``_losses`` (torch's semantics), written for few calls
    into NumPy: at batch size 100 the call overhead is the cost.
    """
    x, ax, n, eps, y = p.logits, p.axis, p.n_classes, p.smoothing, p.indices
    if x.ndim == 2 and ax == 1:
        rows = np.arange(x.shape[0])

        def pick(a: np.ndarray) -> np.ndarray:
            return a[rows, y]

        def column(v: Any) -> Any:
            return v[:, None]

        def subtract_at(a: np.ndarray, v: np.ndarray) -> None:
            a[rows, y] -= v

    else:
        idx = np.expand_dims(y, ax)

        def pick(a: np.ndarray) -> np.ndarray:
            return np.take_along_axis(a, idx, axis=ax).reshape(y.shape)

        def column(v: Any) -> Any:
            return np.expand_dims(v, ax)

        def subtract_at(a: np.ndarray, v: np.ndarray) -> None:
            add_at(a, idx, -column(v), ax)

    w_b = (
        1.0 if p.weight is None else p.weight.reshape([-1 if i == ax else 1 for i in range(x.ndim)])
    )
    # The caller (a public function) has NumPy's warnings off.
    m = x.max(axis=ax, keepdims=True)
    if np.isinf(m).any():
        return None
    g = np.subtract(x, m)
    counted = p.counted.astype(x.dtype)
    w_y = counted if p.weight is None else p.weight[y] * counted
    w_all = x.dtype.type(n) if p.weight is None else p.weight.sum()
    factor = 1.0
    if p.reduction == "mean":
        divisor = w_y.sum()
        factor = 1.0 / divisor if divisor else 0.0
    if loss:
        shifted_y = pick(g)
        if eps > 0:
            # A contraction, not (g * w).sum(): no second logits-sized buffer.
            if p.weight is None:
                weighted_shift = g.sum(axis=ax)
            else:
                # A zero weight hides its class, a -inf logit included (0 * -inf is NaN).
                live = np.flatnonzero(p.weight)
                g_live = g if live.size == n else g.take(live, axis=ax)
                weighted_shift = np.tensordot(g_live, p.weight[live], axes=([ax], [0]))
    np.exp(g, out=g)
    z = g.sum(axis=ax, keepdims=True)
    value = None
    if loss:
        log_z = np.log(z).reshape(y.shape)
        # A zero weight hides a -inf log-probability (0 * inf would be NaN).
        per_sample = np.where(w_y == 0, 0.0, w_y * (log_z - shifted_y))
        if eps > 0:
            smooth = np.where(p.counted, w_all * log_z - weighted_shift, 0.0)
            per_sample = (1 - eps) * per_sample + (eps / n) * smooth
        per_sample = per_sample.astype(x.dtype, copy=False)
        value = per_sample if p.reduction == "none" else per_sample.sum() * factor
    if not grad:
        return value, None
    g /= z
    g *= column(((1 - eps) * w_y + (eps / n) * w_all * counted) * factor)
    subtract_at(g, ((1 - eps) * factor * w_y).astype(x.dtype, copy=False))
    if eps > 0:
        g -= (eps / n) * factor * w_b
        g *= column(counted)
    return value, g


def mean_cross_entropy_with_grad(logits: Any, target: Any, axis: int) -> tuple[Any, Any] | None:
    """The training step's loss and gradient: 2-D logits, class indices, mean.

    With none of the options, on NumPy and PyTorch, in as few calls as the
    arithmetic needs (at batch size 100 calls are the cost): the gradient
    ``(softmax - onehot) / N`` is written into the softmax's buffer.  Anything
    unusual -- other shapes or dtypes, an index out of range, an infinite
    maximum -- returns None, and the general path answers (or raises).
    """
    if not _ENABLED.get() or axis not in (-1, 1):
        return None
    if type(logits) is np.ndarray and type(target) is np.ndarray:
        return _np_mean_ce(logits, target)
    if _is_torch_tensor(logits) and _is_torch_tensor(target):
        return _torch_mean_ce(logits, target)
    return None


def _is_torch_tensor(a: Any) -> bool:
    return type(a).__module__ == "torch" and type(a).__name__ == "Tensor"


def _np_mean_ce(x: np.ndarray, y: np.ndarray) -> tuple[Any, Any] | None:
    if x.ndim != 2 or x.dtype.kind != "f" or x.itemsize < 4 or y.dtype.kind not in "iu":
        return None
    n, c = x.shape
    if y.shape != (n,) or n == 0 or c == 0 or y.min() < 0 or y.max() >= c:
        return None
    rows = np.arange(n)
    g = np.subtract(x, x.max(axis=1, keepdims=True))
    shifted_y = g[rows, y]
    np.exp(g, out=g)
    z = g.sum(axis=1, keepdims=True)
    loss = (np.log(z).ravel() - shifted_y).sum() / n
    # An infinite or NaN logit makes the loss non-finite: the general path
    # knows what such rows mean.
    if not math.isfinite(loss):
        return None
    z *= n
    g /= z
    g[rows, y] -= x.dtype.type(1.0 / n)
    return np.asarray(loss, dtype=x.dtype), g


def _torch_mean_ce(x: Any, y: Any) -> tuple[Any, Any] | None:
    import torch
    import torch.nn.functional as F

    if x.ndim != 2 or not x.dtype.is_floating_point or x.dtype in (torch.float16, torch.bfloat16):
        return None
    if x.requires_grad and torch.is_grad_enabled():
        return None
    n, c = x.shape
    if y.shape != (n,) or y.dtype.is_floating_point or y.dtype == torch.bool or n == 0 or c == 0:
        return None
    y = y.long()
    if x.device.type != "cpu":
        # On a GPU an out-of-range target is a device-side assert: check first.
        lo, hi = torch.aminmax(y)
        if bool((lo < 0) | (hi >= c)):
            return None
    try:
        # No index is ignored here (torch's default -100 would silently be);
        # on the CPU torch raises for a target outside [0, c).
        loss = F.cross_entropy(x, y, ignore_index=_NO_INDEX)
    except (IndexError, RuntimeError):
        return None
    # An infinite maximum or a NaN makes its row, hence the mean, NaN.
    if bool(torch.isnan(loss)):
        return None
    acc = _torch_acc_dtype(x, c)
    s = torch.softmax(x, 1) if acc is None else torch.softmax(x, 1, dtype=acc).to(x.dtype)
    s.div_(n)[torch.arange(n, device=x.device), y] -= 1.0 / n
    return loss, s


_NO_INDEX = -(2**63)


# torch.log_softmax computes the maximum's entry as -log(sum): where that entry
# dominates its row (probability near 1) the log loses its relative accuracy
# (1e-3 at logits [0, -30]).  Rows whose largest log-probability lies above
# this bound are computed again in the generic path's log1p form; elsewhere
# torch's error is a few ulp.
_DOMINANT_LOG_PROB = -0.5


def _torch_log_softmax(x: Any, dim: int) -> Any | None:
    import torch

    out = _torch_call(torch.log_softmax, x, dim, check=False)
    top = out.amax(dim)
    redo = ~(top < _DOMINANT_LOG_PROB)  # a dominant entry, or a NaN row
    if not bool(redo.any()):
        return out
    if bool(torch.isnan(top).any()):
        # An infinite maximum or a NaN input: the generic path defines those rows.
        return None
    fixed = _torch_log1p_rows(x.movedim(dim, -1)[redo])
    if x.requires_grad and torch.is_grad_enabled():
        # torch.log_softmax's backward reads its output: nothing in place.
        return out.movedim(dim, -1).index_put((redo,), fixed).movedim(-1, dim)
    out.movedim(dim, -1)[redo] = fixed.to(out.dtype)
    return out


def _torch_log1p_rows(x: Any) -> Any:
    """log_softmax of the rows of ``x`` (last axis) in the log1p form, finite maxima only."""
    import torch

    m, top = torch.max(x, -1, keepdim=True)
    shifted = x - m
    # Zeroing the maximum's term is exact under autograd too: torch.max sends
    # the gradient to that same index.
    rest = torch.exp(shifted).scatter(-1, top, 0.0).sum(-1, keepdim=True)
    return shifted - torch.log1p(rest)


def _torch_logsumexp(x: Any, dim: int) -> Any | None:
    # torch.logsumexp defines the special rows as SPEC §3 does.  Its log(sum)
    # has an absolute error of a few ulp, so only results near 0 (a dominant
    # entry near 0, say) lose relative accuracy: those take the log1p form.
    import torch

    value = torch.logsumexp(x, dim, keepdim=True)
    in_place = not (x.requires_grad and torch.is_grad_enabled())
    if not (in_place or bool(torch.isfinite(value).all())):
        # torch's backward is NaN on those rows; the generic path's is not.
        return None
    if not bool((value.abs() < 1.0).any()):
        return value
    m, top = torch.max(x, dim, keepdim=True)
    e = torch.exp(x - m)
    # Zeroing the maximum's term is exact under autograd too: torch.max sends
    # the gradient to that same index.
    e = e.scatter_(dim, top, 0.0) if in_place else e.scatter(dim, top, 0.0)
    return torch.where(torch.isinf(m), value, m + torch.log1p(e.sum(dim, keepdim=True)))


# --------------------------------------------------------------------- CuPy
# Fused kernels (``_cupy``): one read pass for the maximum and the sum
# together (the online-softmax recurrence), one pass to write.  They compute
# SPEC §3's special rows themselves, so there is no fallback.


def _cupy_ok(x: Any, xp: ModuleType, where: Array | None) -> bool:
    return _active(where) and is_cupy_namespace(xp) and x.dtype.name in ("float32", "float64")


def _cupy_call(name: str, x: Any, axes: tuple[int, ...], *, reduce: bool = False) -> Any:
    import cupy

    from portable_softmax import _cupy

    rows, moved = _to_rows(x, axes, cupy)
    out = getattr(_cupy, name)(rows)
    return _from_rows(out, axes, moved, cupy, reduce=reduce)


def _cupy_cross_entropy(p: Any, *, loss: bool, grad: bool) -> tuple[Any, Any]:
    import cupy

    from portable_softmax import _cupy

    rows, moved = _to_rows(p.logits, (p.axis,), cupy)
    w_y, w_sum = p.target_weights
    factor: Any = 1.0
    if p.reduction == "mean":
        # A device scalar, read by the kernel: no synchronisation.
        factor = cupy.where(w_sum == 0, 0.0, 1.0 / w_sum).astype(rows.dtype)
    per_sample, g = _cupy.cross_entropy_rows(
        rows,
        p.indices.reshape(-1),
        w_y=w_y.reshape(-1),
        counted=p.counted.reshape(-1),
        weight=p.weight,
        factor=factor,
        smoothing=p.smoothing,
        loss=loss,
        grad=grad,
    )
    value = None
    if loss:
        value = (
            per_sample.reshape(p.indices.shape)
            if p.reduction == "none"
            else per_sample.sum() * factor
        )
    if grad:
        g = _from_rows(g, (p.axis,), moved, cupy, reduce=False)
    return value, g


# --------------------------------------------------------------------- JAX
# XLA's CPU backend compiles jax.nn.softmax (and logsumexp) to single fused
# kernels; the selects that the generic code needs for SPEC §3 break that
# pattern (1.2-6x slower).  So jax.nn's computation runs, and a lax.cond --
# traced, so it holds under jit and vmap -- sends an input that has a row
# jax.nn gets wrong (NaN for an infinite maximum; for logsumexp, a result
# near 0 that lost its relative accuracy) to the generic path.  The
# derivatives are given in closed form from the final values: differentiating
# through the cond would multiply a zero cotangent by jax.nn's NaN on the
# rows it got wrong.


@functools.cache
def _jax_kernels() -> tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any]]:
    import jax
    import jax.numpy as jnp

    from portable_softmax import _softmax as generic

    def fallback(name: str, x: Any, axes: tuple[int, ...]) -> Callable[..., Any]:
        return lambda *_: getattr(generic, name)(x, axes, None, jnp)

    @functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
    def softmax(x: Any, axes: tuple[int, ...]) -> Any:
        s = jax.nn.softmax(x, axis=axes)
        # A finite row gives no NaN; a row with an infinite maximum or a NaN
        # is NaN throughout, so its first entry tells.  s goes into the cond
        # as an operand: read there, it leaves jax.nn's fused kernel whole.
        first = s[tuple(slice(0, 1) if i in axes else slice(None) for i in range(x.ndim))]
        return jax.lax.cond(
            jnp.any(jnp.isnan(first)), fallback("_softmax", x, axes), lambda s: s, s
        )

    @functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
    def log_softmax(x: Any, axes: tuple[int, ...]) -> Any:
        # jax.nn.log_softmax's steps, plus the sum without the maximum's 1
        # (a second reduction over the same exps): a row with a dominant
        # entry (a total below exp(0.5), so no ties) takes log1p of it.  A
        # NaN total marks a special row.
        shifted = x - jnp.max(x, axis=axes, keepdims=True)
        e = jnp.exp(shifted)
        total = jnp.sum(e, axis=axes, keepdims=True)
        rest = jnp.sum(jnp.where(shifted == 0, 0.0, e), axis=axes, keepdims=True)

        def fast(shifted: Any, total: Any, rest: Any) -> Any:
            dominant = total < math.exp(-_DOMINANT_LOG_PROB)
            return shifted - jnp.where(dominant, jnp.log1p(rest), jnp.log(total))

        return jax.lax.cond(
            jnp.any(jnp.isnan(total)),
            fallback("_log_softmax", x, axes),
            fast,
            shifted,
            total,
            rest,
        )

    @functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
    def logsumexp(x: Any, axes: tuple[int, ...]) -> Any:
        value = jax.nn.logsumexp(x, axis=axes, keepdims=True)
        # Results near 0 lose relative accuracy in log(sum).
        return jax.lax.cond(
            jnp.all(jnp.abs(value) >= 1.0), lambda v: v, fallback("_logsumexp", x, axes), value
        )

    def sum_along(a: Any, axes: tuple[int, ...]) -> Any:
        return jnp.sum(a, axis=axes, keepdims=True)

    @softmax.defjvp
    def _(axes: tuple[int, ...], primals: Any, tangents: Any) -> tuple[Any, Any]:
        (x,), (dx,) = primals, tangents
        s = softmax(x, axes)
        return s, s * (dx - sum_along(s * dx, axes))

    @log_softmax.defjvp
    def _(axes: tuple[int, ...], primals: Any, tangents: Any) -> tuple[Any, Any]:
        (x,), (dx,) = primals, tangents
        return log_softmax(x, axes), dx - sum_along(softmax(x, axes) * dx, axes)

    @logsumexp.defjvp
    def _(axes: tuple[int, ...], primals: Any, tangents: Any) -> tuple[Any, Any]:
        (x,), (dx,) = primals, tangents
        return logsumexp(x, axes), sum_along(softmax(x, axes) * dx, axes)

    # Jitted (the axes static): eagerly, a cond of fresh closures would
    # compile on every call; this way once per shape and dtype.
    return tuple(jax.jit(f, static_argnums=1) for f in (softmax, log_softmax, logsumexp))


# --------------------------------------------------------------------- in place


def writable(a: Array) -> bool:
    """True for an array this process may update in place with :func:`add_at`."""
    if isinstance(a, np.ndarray):
        return a.flags.writeable
    return type(a).__module__.startswith("torch") and not a.requires_grad


def add_at(a: Array, index: Array, values: Array, axis: int) -> None:
    """``a[..., index, ...] += values`` along ``axis``, in place (NumPy, PyTorch)."""
    if isinstance(a, np.ndarray):
        picked = np.take_along_axis(a, index, axis=axis)
        np.put_along_axis(a, index, picked + values, axis=axis)
    else:
        a.scatter_add_(axis, index, values)


# --------------------------------------------------------------------- dispatch


def softmax(x: Array, axes: tuple[int, ...], where: Array | None, xp: ModuleType) -> Array | None:
    """Fast softmax, or None where only the generic path applies."""
    if _numpy_ok(x, xp, where):
        return _np_rows(x, axes, _np_softmax_rows)
    if _cupy_ok(x, xp, where):
        return _cupy_call("softmax_rows", x, axes)
    if _torch_ok(xp, axes, where):
        import torch

        return _torch_call(torch.softmax, x, axes[0])
    if _active(where) and is_jax_namespace(xp):
        return _jax_kernels()[0](x, axes)
    return None


def log_softmax(
    x: Array, axes: tuple[int, ...], where: Array | None, xp: ModuleType
) -> Array | None:
    """Fast log_softmax, or None where only the generic path applies."""
    if _numpy_ok(x, xp, where):
        return _np_rows(x, axes, _np_log_softmax_rows)
    if _cupy_ok(x, xp, where):
        return _cupy_call("log_softmax_rows", x, axes)
    if _torch_ok(xp, axes, where):
        return _torch_log_softmax(x, axes[0])
    if _active(where) and is_jax_namespace(xp):
        return _jax_kernels()[1](x, axes)
    return None


def logsumexp(x: Array, axes: tuple[int, ...], where: Array | None, xp: ModuleType) -> Array | None:
    """Fast logsumexp (keepdims), or None where only the generic path applies."""
    if _numpy_ok(x, xp, where):
        return _np_rows(x, axes, _np_logsumexp_rows, reduce=True)
    if _cupy_ok(x, xp, where):
        return _cupy_call("logsumexp_rows", x, axes, reduce=True)
    if _torch_ok(xp, axes, where):
        return _torch_logsumexp(x, axes[0])
    if _active(where) and is_jax_namespace(xp):
        return _jax_kernels()[2](x, axes)
    return None
