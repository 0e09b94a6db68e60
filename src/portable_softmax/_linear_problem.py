"""The validated arguments of a ``linear_cross_entropy`` call, and its block shape.

The public functions build a problem once with :func:`linear_problem`; the
generic code and every backend's fast path then read the same checked arrays.
The input and the linear layer keep their own dtypes (a float32 copy of a
bfloat16 ``linear_weight`` would cost twice its size): each block is cast to
the compute dtype as it is used.
"""

from __future__ import annotations

import dataclasses
import math
import operator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, ClassVar, NamedTuple

import numpy as np

from portable_softmax._compat import (
    Array,
    xp_check_floating,
    xp_inputs,
)
from portable_softmax._problem import (
    check_ignore_index,
    check_reduction_and_smoothing,
    class_indices,
)

__all__ = ["TILE_ELEMENTS", "Blocks", "LinearProblem", "block_shapes", "linear_problem"]

#: Elements of one block of logits when ``chunk_size`` is None (32 MiB in float32).
TILE_ELEMENTS = 1 << 23
#: The fewest classes in a block that ``chunk_size=None`` picks: narrower matrix
#: products run well below the machine's speed.
MIN_BLOCK_CLASSES = 256
#: The fewest samples in a block of every class: with fewer, each block reads all of
#: ``linear_weight`` again for too little work, and two passes over blocks of
#: classes (the logits computed twice) are faster.
MIN_ONE_PASS_ROWS = 256


class Blocks(NamedTuple):
    """The shape of one block of logits: ``rows`` samples by ``classes`` classes."""

    rows: int
    classes: int

    def row_ranges(self, n_samples: int) -> list[tuple[int, int]]:
        """``(start, stop)`` of each block of samples."""
        step = self.rows
        return [(r, min(r + step, n_samples)) for r in range(0, n_samples, step)]

    def class_ranges(self, n_classes: int) -> list[tuple[int, int]]:
        """``(start, stop)`` of each block of classes."""
        step = self.classes
        return [(c, min(c + step, n_classes)) for c in range(0, n_classes, step)]


def block_shapes(
    n_samples: int, n_classes: int, chunk_size: int | None
) -> tuple[Blocks, Blocks | None]:
    """The blocks of the two-pass computation, and of the one-pass one (or None).

    A block holds at most ``budget`` elements: ``N * chunk_size``, or
    :data:`TILE_ELEMENTS` when ``chunk_size`` is None.  Two passes (the loss,
    a backward pass) run over blocks of every sample and ``budget // N``
    classes (when ``chunk_size`` is None, a multiple of 128 and at least
    :data:`MIN_BLOCK_CLASSES`, then as many samples as fit); where a block of every class fits
    :data:`MIN_ONE_PASS_ROWS` samples or more, the loss with its gradients
    runs in one pass over blocks of every class, each block's logits computed
    once.
    """
    n = max(n_samples, 1)
    budget = TILE_ELEMENTS if chunk_size is None else n * chunk_size
    if n * n_classes <= budget:
        whole = Blocks(n, n_classes)
        return whole, whole
    if chunk_size is None:
        classes = min(n_classes, max(MIN_BLOCK_CLASSES, budget // n // 128 * 128))
        two = Blocks(min(n, max(1, budget // classes)), classes)
    else:
        two = Blocks(n, min(chunk_size, n_classes))
    rows = budget // n_classes
    return two, (Blocks(rows, n_classes) if rows >= MIN_ONE_PASS_ROWS else None)


@dataclass(frozen=True, kw_only=True)
class LinearProblem:
    """A validated ``linear_cross_entropy`` call with class-index targets.

    ``x`` is the input with its leading axes flattened, ``(N, H)``; the
    per-sample arrays have shape ``(N,)``.
    """

    xp: ModuleType
    x: Array  # (N, H), the input's dtype
    linear_weight: Array  # (V, H), its own dtype
    linear_bias: Array | None  # (V,), its own dtype
    indices: Array  # (N,) clipped into [0, V), the default integer dtype
    counted: Array  # (N,) bool: not ignored
    invalid: Array | None  # (N,) bool: out of range where values are not read; else None
    checked: bool  # the indices were read and found in range: no NaN rule needed
    weight: Array | None  # (V,) class weights, compute dtype
    reduction: str
    smoothing: float
    z_loss: float
    softcap: float | None
    blocks: Blocks  # of the two-pass computation (the loss, the backward pass)
    one_pass: Blocks | None  # of the one-pass loss with gradients, where it is faster
    compute_dtype: Any  # float32 for half precision, else the promoted dtype
    out_dtype: Any  # the promoted dtype of input, linear_weight and linear_bias
    sample_shape: tuple[int, ...]  # the input's leading shape

    #: The fields that hold arrays, in the order of :meth:`arrays`.
    ARRAYS: ClassVar[tuple[str, ...]] = (
        "x",
        "linear_weight",
        "linear_bias",
        "indices",
        "counted",
        "invalid",
        "weight",
    )

    def arrays(self) -> tuple[Array | None, ...]:
        """The arrays of the problem, in the order of :attr:`ARRAYS`."""
        return (
            self.x, self.linear_weight, self.linear_bias, self.indices, self.counted,
            self.invalid, self.weight,
        )  # fmt: skip

    def skeleton(self) -> LinearProblem:
        """The problem without its arrays: hashable, for a compiled function's static argument.

        Autodiff wrappers (``torch.autograd.Function``, ``jax.custom_vjp``)
        take the arrays as arguments and put them back with
        :meth:`with_arrays`: arrays hidden in a Python object would escape
        their tracing.
        """
        return dataclasses.replace(self, **dict.fromkeys(self.ARRAYS))

    def with_arrays(self, *arrays: Array | None) -> LinearProblem:
        """The skeleton with ``arrays`` (in the order of :attr:`ARRAYS`) put back."""
        return dataclasses.replace(self, **dict(zip(self.ARRAYS, arrays, strict=True)))

    @property
    def n_samples(self) -> int:
        return self.x.shape[0]

    @property
    def n_classes(self) -> int:
        return self.linear_weight.shape[0]

    def compute(self, a: Array) -> Array:
        """``a`` in the compute dtype (no copy when it is already)."""
        if a.dtype == self.compute_dtype:
            return a
        return self.xp.astype(a, self.compute_dtype)

    # Computed once, on first use (not functools.cached_property: its lock in
    # Python 3.11 breaks torch.compile's graph); not copied by replace().
    _cache: dict[str, tuple[Array, Array]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @property
    def target_weights(self) -> tuple[Array, Array]:
        """Per-sample weight of the target class (0 where ignored), and their sum."""
        if "w" not in self._cache:
            xp = self.xp
            if self.weight is None:
                w_y = xp.astype(self.counted, self.compute_dtype)
            else:
                w_y = xp.where(self.counted, xp.take(self.weight, self.indices, axis=0), 0.0)
            self._cache["w"] = (w_y, xp.sum(w_y))
        return self._cache["w"]

    def finish_loss(self, a: Array) -> Array:
        """The loss in the promoted dtype, per sample shaped like the input's leading axes."""
        xp = self.xp
        if isinstance(a, np.generic):
            a = np.asarray(a)
        if self.reduction == "none":
            a = xp.reshape(a, self.sample_shape)
        return a if a.dtype == self.out_dtype else xp.astype(a, self.out_dtype)

    def finish_grads(self, dx: Array, dw: Array, db: Array | None) -> tuple[Array, Array, Any]:
        """Each gradient in the shape and dtype of its array (``d_input`` unflattened)."""
        xp = self.xp
        dx = xp.reshape(dx, (*self.sample_shape, self.x.shape[1]))

        def cast(g: Array, like: Array) -> Array:
            return g if g.dtype == like.dtype else xp.astype(g, like.dtype)

        b = self.linear_bias
        return (
            cast(dx, self.x),
            cast(dw, self.linear_weight),
            None if b is None else cast(db, b),
        )


def linear_problem(
    input: Any,  # noqa: A002 - the name of torch's argument
    linear_weight: Any,
    target: Any,
    *,
    linear_bias: Any,
    weight: Any,
    reduction: str,
    ignore_index: int | None,
    label_smoothing: float,
    z_loss: float,
    softcap: float | None,
    chunk_size: int | None,
) -> LinearProblem:
    """Check the arguments of a ``linear_cross_entropy`` call and build its problem.

    Raises the ``TypeError`` and ``ValueError`` of the public docstring, each
    naming the argument at fault.
    """
    xp, x, (w_lin, target, bias, weight) = xp_inputs(
        input, linear_weight, target, linear_bias, weight
    )
    _check_layer(x, w_lin, bias, xp)
    out_dtype = xp.result_type(*(a for a in (x, w_lin, bias) if a is not None))
    compute = xp.float32 if xp.finfo(out_dtype).bits < 32 else out_dtype
    n_classes, sample_shape = w_lin.shape[0], tuple(x.shape[:-1])
    n = math.prod(sample_shape)
    index = _check_target(target, sample_shape, xp)
    blocks, one_pass = block_shapes(n, n_classes, _chunk_size(chunk_size))
    return LinearProblem(
        xp=xp,
        x=xp.reshape(x, (n, x.shape[-1])),
        linear_weight=w_lin,
        linear_bias=bias,
        **_index_fields(xp.reshape(index, (n,)), n_classes, ignore_index, xp),
        weight=_class_weights(weight, n_classes, compute, xp),
        **_options(reduction, label_smoothing, z_loss, softcap),
        blocks=blocks,
        one_pass=one_pass,
        compute_dtype=compute,
        out_dtype=out_dtype,
        sample_shape=sample_shape,
    )


def _check_layer(x: Array, w: Array, b: Array | None, xp: ModuleType) -> None:
    xp_check_floating(x, xp, "input")
    xp_check_floating(w, xp, "linear_weight")
    if x.ndim == 0:
        msg = "input must have at least one axis (the features); got a 0-d array"
        raise ValueError(msg)
    if w.ndim != 2 or w.shape[1] != x.shape[-1] or w.shape[0] == 0:
        msg = (
            f"linear_weight must have shape (V, H) with V >= 1 and H = {x.shape[-1]} "
            f"(the last axis of input); got shape {tuple(w.shape)}"
        )
        raise ValueError(msg)
    if b is None:
        return
    xp_check_floating(b, xp, "linear_bias")
    if tuple(b.shape) != (w.shape[0],):
        msg = (
            f"linear_bias must have shape ({w.shape[0]},), one value per row of "
            f"linear_weight; got shape {tuple(b.shape)}"
        )
        raise ValueError(msg)


def _check_target(target: Array, sample_shape: tuple[int, ...], xp: ModuleType) -> Array:
    if xp.isdtype(target.dtype, "real floating"):
        msg = (
            "linear_cross_entropy takes class-index targets only; for probability "
            "targets compute the logits and call portable_softmax.cross_entropy"
        )
        raise TypeError(msg)
    if not xp.isdtype(target.dtype, "integral"):
        msg = f"target must hold integer class indices, got dtype {target.dtype}"
        raise TypeError(msg)
    if tuple(target.shape) != sample_shape:
        msg = (
            f"target of shape {tuple(target.shape)} does not match input: class indices "
            f"have the shape of input without its last axis, {sample_shape}"
        )
        raise ValueError(msg)
    return target


def _chunk_size(chunk_size: int | None) -> int | None:
    if chunk_size is None:
        return None
    if isinstance(chunk_size, bool):
        msg = f"chunk_size must be an integer or None, got {chunk_size!r}"
        raise TypeError(msg)
    size = operator.index(chunk_size)
    if size < 1:
        msg = f"chunk_size must be at least 1 (or None to choose), got {chunk_size!r}"
        raise ValueError(msg)
    return size


def _options(
    reduction: str, label_smoothing: float, z_loss: float, softcap: float | None
) -> dict[str, Any]:
    smoothing = check_reduction_and_smoothing(reduction, label_smoothing)
    z = float(z_loss)
    if not z >= 0.0:
        msg = f"z_loss must be non-negative, got {z_loss!r}"
        raise ValueError(msg)
    cap = None if softcap is None else float(softcap)
    if cap is not None and not cap > 0.0:
        msg = f"softcap must be a positive number (or None), got {softcap!r}"
        raise ValueError(msg)
    return {"reduction": reduction, "smoothing": smoothing, "z_loss": z, "softcap": cap}


def _class_weights(
    weight: Array | None, n_classes: int, compute: Any, xp: ModuleType
) -> Array | None:
    if weight is None:
        return None
    xp_check_floating(weight, xp, "weight")
    if tuple(weight.shape) != (n_classes,):
        msg = (
            f"weight must hold one value per class, shape ({n_classes},), "
            f"got shape {tuple(weight.shape)}"
        )
        raise ValueError(msg)
    return weight if weight.dtype == compute else xp.astype(weight, compute)


def _index_fields(
    y: Array, n_classes: int, ignore_index: int | None, xp: ModuleType
) -> dict[str, Any]:
    """``indices``, ``counted``, ``invalid`` and ``checked`` (raised for a bad index already)."""
    check_ignore_index(ignore_index)
    indices, counted, invalid = class_indices(y, n_classes, ignore_index, xp)
    return {
        "indices": indices,
        "counted": counted,
        "invalid": invalid,
        "checked": invalid is None,
    }
