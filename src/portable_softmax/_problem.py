"""The validated arguments of a cross-entropy call, one type per kind of target.

The public loss functions build a problem once with :func:`cross_entropy_problem`;
the generic code and every backend's fast path then read the same checked,
compute-dtype arrays.  Class-index targets and probability targets are two
types, so code that handles one kind says so with ``isinstance``.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np

from portable_softmax._compat import (
    Array,
    xp_as_compute,
    xp_check_floating,
    xp_check_where,
    xp_default_dtype,
    xp_device,
    xp_eager,
    xp_inputs,
    xp_normalize_axis,
)

__all__ = [
    "CrossEntropyProblem",
    "IndexTargets",
    "ProbabilityTargets",
    "check_ignore_index",
    "check_reduction_and_smoothing",
    "class_indices",
    "cross_entropy_problem",
]

REDUCTIONS = ("none", "mean", "sum")


@dataclass(frozen=True, kw_only=True)
class _Common:
    """What every cross-entropy call has, whatever its target."""

    xp: ModuleType
    logits: Array  # compute dtype (float32 for half precision)
    out_dtype: Any
    axis: int  # non-negative
    n_classes: int
    reduction: str
    weight: Array | None  # shape (C,), compute dtype
    smoothing: float
    where: Array | None  # bool, the shape of the logits: the classes that take part
    # bool per sample: a target the lazy backends could not refuse (NaN loss)
    invalid: Array | None

    def finish(self, a: Array) -> Array:
        """The result in the caller's dtype; NumPy's reductions give scalars, made 0-d arrays."""
        if isinstance(a, np.generic):
            a = np.asarray(a)
        return a if a.dtype == self.out_dtype else self.xp.astype(a, self.out_dtype, copy=False)

    def expand(self, a: Array) -> Array:
        """Insert the class axis into a per-sample array."""
        return self.xp.expand_dims(a, axis=self.axis)

    def class_vector(self, a: Array) -> Array:
        """Reshape a per-class vector to broadcast along the class axis."""
        shape = [1] * self.logits.ndim
        shape[self.axis] = self.n_classes
        return self.xp.reshape(a, tuple(shape))


@dataclass(frozen=True, kw_only=True)
class IndexTargets(_Common):
    """A cross-entropy call with integer class-index targets."""

    indices: Array  # clipped into [0, C) and onto kept classes, the default integer dtype
    counted: Array  # bool: not ignored
    ignores: bool  # an ignore_index was given (else counted is all True)
    # Computed once, on first use (not functools.cached_property: its lock in
    # Python 3.11 breaks torch.compile's graph).
    _cache: dict[str, tuple[Array, Array]] = field(default_factory=dict, repr=False)

    @property
    def target_weights(self) -> tuple[Array, Array]:
        """Per-sample weight of the target class (0 where ignored), and their sum.

        Loss, reduction and gradient all need them: computed once per call.
        """
        if "w" not in self._cache:
            self._cache["w"] = self._target_weights()
        return self._cache["w"]

    def _target_weights(self) -> tuple[Array, Array]:
        xp = self.xp
        if self.weight is None:
            w_y = xp.astype(self.counted, self.logits.dtype, copy=False)
        else:
            picked = xp.take(self.weight, xp.reshape(self.indices, (-1,)), axis=0)
            w_y = xp.where(self.counted, xp.reshape(picked, self.indices.shape), 0.0)
        return w_y, xp.sum(w_y)


@dataclass(frozen=True, kw_only=True)
class ProbabilityTargets(_Common):
    """A cross-entropy call with class-probability targets (shaped like the logits)."""

    probs: Array  # compute dtype


CrossEntropyProblem = IndexTargets | ProbabilityTargets


def cross_entropy_problem(
    logits: Any,
    target: Any,
    *,
    axis: int,
    reduction: str,
    weight: Any,
    ignore_index: int | None,
    label_smoothing: float,
    where: Any = None,
) -> CrossEntropyProblem:
    """Check the arguments of a cross-entropy call and build its problem.

    Raises the ``TypeError`` and ``ValueError`` of the loss functions'
    docstrings, each naming the argument at fault.
    """
    xp, logits, (target, weight, where) = xp_inputs(logits, target, weight, where)
    xp_check_floating(logits, xp, "logits")
    if logits.ndim == 0:
        msg = "logits must have at least one axis (the class axis); got a 0-d array"
        raise ValueError(msg)
    ax = xp_normalize_axis(axis, logits.ndim)
    _check_known_shapes(logits=logits, target=target)
    smoothing = check_reduction_and_smoothing(reduction, label_smoothing)
    check_ignore_index(ignore_index)
    x = xp_as_compute(logits, xp)
    if where is not None:
        where = xp_check_where(where, x.shape, xp)
        x = xp.where(where, x, -math.inf)
    common = {
        "xp": xp,
        "logits": x,
        "out_dtype": logits.dtype,
        "axis": ax,
        "n_classes": logits.shape[ax],
        "reduction": reduction,
        "weight": _class_weights(weight, x, ax, xp),
        "smoothing": smoothing,
        "where": where,
    }
    if xp.isdtype(target.dtype, "integral"):
        _check_target_shape(target, logits, ax, sample=True)
        return IndexTargets(**common, **_index_fields(target, x, ax, ignore_index, where, xp))
    if xp.isdtype(target.dtype, "real floating"):
        _check_target_shape(target, logits, ax, sample=False)
        if ignore_index is not None:
            msg = (
                "ignore_index applies to class-index targets only; "
                "with probability targets give the ignored samples zero probability"
            )
            raise ValueError(msg)
        probs = xp.astype(target, x.dtype, copy=False)
        invalid = None if where is None else _mass_on_masked(probs, where, ax, xp)
        return ProbabilityTargets(**common, probs=probs, invalid=invalid)
    msg = (
        f"target must hold integer class indices or floating probabilities, "
        f"got dtype {target.dtype}"
    )
    raise TypeError(msg)


def _check_known_shapes(**arrays: Array) -> None:
    """Refuse unknown sizes (Dask after boolean indexing), naming the cure."""
    for name, a in arrays.items():
        # Dask marks an unknown size NaN (the standard: None); torch.compile's
        # symbolic sizes are neither.
        if any(n is None or (isinstance(n, float) and math.isnan(n)) for n in a.shape):
            msg = (
                f"{name} has a shape with unknown sizes, {tuple(a.shape)} (Dask, after "
                f"boolean indexing?): call {name}.compute_chunk_sizes() first"
            )
            raise ValueError(msg)


def check_reduction_and_smoothing(reduction: str, label_smoothing: float) -> float:
    """Check ``reduction`` and ``label_smoothing`` (shared by the losses); return the smoothing."""
    if reduction not in REDUCTIONS:
        msg = f"reduction must be one of {REDUCTIONS}, got {reduction!r}"
        raise ValueError(msg)
    smoothing = float(label_smoothing)
    if not 0.0 <= smoothing <= 1.0:
        msg = f"label_smoothing must lie in [0, 1], got {label_smoothing!r}"
        raise ValueError(msg)
    return smoothing


def check_ignore_index(ignore_index: Any) -> None:
    """``TypeError`` unless ``ignore_index`` is None or an integer (``bool`` is not one)."""
    if isinstance(ignore_index, bool) or not (
        ignore_index is None or isinstance(ignore_index, int | np.integer)
    ):
        msg = f"ignore_index must be an integer, got {ignore_index!r}"
        raise TypeError(msg)


def _class_weights(weight: Array | None, x: Array, axis: int, xp: ModuleType) -> Array | None:
    if weight is None:
        return None
    xp_check_floating(weight, xp, "weight")
    n_classes = x.shape[axis]
    if tuple(weight.shape) != (n_classes,):
        msg = (
            f"weight must hold one value per class, shape ({n_classes},), "
            f"got shape {tuple(weight.shape)}"
        )
        raise ValueError(msg)
    return xp.astype(weight, x.dtype, copy=False)


def _check_target_shape(target: Array, logits: Array, axis: int, *, sample: bool) -> None:
    sample_shape = tuple(logits.shape[:axis]) + tuple(logits.shape[axis + 1 :])
    expected = sample_shape if sample else tuple(logits.shape)
    if tuple(target.shape) == expected:
        return
    msg = (
        f"target of shape {tuple(target.shape)} and dtype {target.dtype} "
        f"matches neither form: class indices are integers of shape "
        f"{sample_shape} (logits {tuple(logits.shape)} without axis {axis}), "
        f"probabilities are floats of shape {tuple(logits.shape)}"
    )
    raise ValueError(msg)


def _index_fields(
    target: Array,
    x: Array,
    axis: int,
    ignore_index: int | None,
    where: Array | None,
    xp: ModuleType,
) -> dict[str, Any]:
    """The index fields of :class:`IndexTargets`; raises for a bad index on eager backends."""
    n_classes = x.shape[axis]
    indices, counted, invalid = class_indices(target, n_classes, ignore_index, xp)
    if where is not None:
        classes = xp.arange(n_classes, dtype=indices.dtype, device=xp_device(indices))
        shape = [1] * x.ndim
        shape[axis] = n_classes
        hits = xp.expand_dims(indices, axis=axis) == xp.reshape(classes, tuple(shape))
        masked = counted & ~xp.any(hits & where, axis=axis)
        if invalid is None:
            if bool(xp.any(masked)):
                msg = (
                    f"target class index {int(target[masked][0])} falls on a class masked by where"
                )
                raise ValueError(msg)
        else:
            invalid = invalid | masked
    return {
        "indices": indices,
        "counted": counted,
        "invalid": invalid,
        "ignores": ignore_index is not None,
    }


def class_indices(
    target: Array, n_classes: int, ignore_index: int | None, xp: ModuleType
) -> tuple[Array, Array, Array | None]:
    """Check class-index targets: ``(indices, counted, invalid)``.

    ``indices`` in the default integer dtype, 0 where a sample is not
    counted or out of range; ``counted`` (bool) false where the target is
    ``ignore_index``.  Where values can be read an index outside ``[0, C)``
    is a ``ValueError`` and ``invalid`` is None; elsewhere (JAX, Dask,
    traced tensors) ``invalid`` marks those samples, for a NaN loss.
    """
    y = xp.astype(target, xp_default_dtype(xp, "integral", xp_device(target)), copy=False)
    bad = (y < 0) | (y >= n_classes)
    if ignore_index is None:
        counted = xp.ones(y.shape, dtype=xp.bool, device=xp_device(y))
    else:
        counted = y != operator.index(ignore_index)
        bad = bad & counted
    if not xp_eager(y):
        return xp.where(bad | ~counted, 0, y), counted, bad
    if bool(xp.any(bad)):
        n_bad = int(xp.sum(xp.astype(bad, y.dtype, copy=False)))
        allowed = (
            " (padding with -100, as torch does? pass ignore_index=-100)"
            if ignore_index is None
            else f" or equal ignore_index={ignore_index}"
        )
        msg = (
            f"target class indices must lie in [0, {n_classes}){allowed}; "
            f"got {int(y[bad][0])} ({n_bad} out of range)"
        )
        raise ValueError(msg)
    return (y if ignore_index is None else xp.where(counted, y, 0)), counted, None


def _mass_on_masked(probs: Array, where: Array, axis: int, xp: ModuleType) -> Array:
    """Per sample: probability mass on a class masked by ``where`` (raises on eager backends)."""
    bad = xp.any((probs != 0) & ~where, axis=axis)
    if xp_eager(bad) and bool(xp.any(bad)):
        msg = "target probability mass falls on classes masked by where"
        raise ValueError(msg)
    return bad
