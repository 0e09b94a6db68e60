"""Cross-entropy, its closed-form gradient, and one-hot encoding."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import numpy as np

from portable_softmax._compat import (
    Array,
    is_array_api_obj,
    xp_default_dtype,
    xp_device,
    xp_eager,
    xp_inputs,
    xp_is_empty,
    xp_normalize_axis,
    xp_quiet,
)
from portable_softmax._generic import losses as generic
from portable_softmax._native import Backend, backend_for, fast_or_generic
from portable_softmax._problem import CrossEntropyProblem, cross_entropy_problem
from portable_softmax._softmax import log_softmax_of, softmax_of

__all__ = ["cross_entropy", "cross_entropy_grad", "cross_entropy_with_grad", "one_hot"]


def _loss(p: CrossEntropyProblem, logp: Array | None = None) -> Array:
    """The reduced loss by the generic math, from ``log_softmax`` (computed if not given)."""
    if xp_is_empty(p.logits):
        return generic.reduce(p, generic.zero_losses(p))
    if logp is None:
        logp = log_softmax_of(p.logits, (p.axis,), None, p.xp)
    return generic.reduce(p, generic.per_sample_losses(p, logp))


def _grad(p: CrossEntropyProblem, s: Array | None = None) -> Array:
    """The gradient by the generic math, from ``softmax`` (computed if not given)."""
    if xp_is_empty(p.logits):
        return p.xp.zeros_like(p.logits)
    if s is None:
        s = softmax_of(p.logits, (p.axis,), None, p.xp)
    return generic.gradient(p, s)


def _loss_and_grad(p: CrossEntropyProblem) -> tuple[Array, Array]:
    if xp_is_empty(p.logits):
        return _loss(p), _grad(p)
    logp = log_softmax_of(p.logits, (p.axis,), None, p.xp)
    return _loss(p, logp), _grad(p, p.xp.exp(logp))


def _fast(p: CrossEntropyProblem, *, loss: bool, grad: bool) -> Callable[[Backend], Any]:
    return lambda backend: backend.cross_entropy(p, loss=loss, grad=grad)


@xp_quiet
def cross_entropy(
    logits: Array,
    target: Array,
    /,
    axis: int = -1,
    *,
    reduction: str = "mean",
    weight: Array | None = None,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    where: Array | None = None,
) -> Array:
    """Cross-entropy between ``softmax(logits)`` and a target, as in PyTorch.

    Means exactly what ``torch.nn.functional.cross_entropy`` means, with the
    class axis at ``axis`` instead of 1.

    Parameters
    ----------
    logits : array_like
        Unnormalised scores, real floating, classes along ``axis``.
    target : array_like
        Either integer class indices (any integer dtype) shaped like
        ``logits`` without ``axis``, or class probabilities shaped like
        ``logits``.
    axis : int, optional
        The class axis. Default: the last axis.
    reduction : {"mean", "sum", "none"}, optional
        ``"mean"`` divides by the summed weights of the counted targets
        (class indices) or by the number of samples (probabilities).
    weight : array, optional
        One rescaling weight per class.
    ignore_index : int, optional
        A class-index value whose samples contribute neither loss nor
        gradient, nor count in the mean.  Class-index targets only.
    label_smoothing : float in [0, 1], optional
        Mixes the target with the uniform distribution over the classes
        (over the classes ``where`` keeps, when it is given).
    where : array of bool, optional
        Broadcastable to ``logits``; classes where it is False take no part
        in the softmax (invalid actions, a constrained vocabulary).  A
        class-index target on a masked class, or probability mass on one,
        is a ``ValueError`` on eager backends and a NaN loss for that sample
        on JAX and Dask.

    Returns
    -------
    array
        A 0-d array for ``"mean"`` and ``"sum"``; for ``"none"`` one loss per
        sample.  Same library, device and dtype as ``logits``.

    Raises
    ------
    ValueError
        A target of neither form, an unknown reduction, ``label_smoothing``
        outside ``[0, 1]``, ``weight`` not of length C, ``ignore_index`` with
        probability targets, or (NumPy, PyTorch, CuPy, array_api_strict) a
        class index outside ``[0, C)``.  JAX and Dask cannot raise from
        values: there such a sample's loss is NaN.
    TypeError
        Non-floating logits, a target of neither integer nor floating dtype,
        an ``ignore_index`` that is not an integer (``True`` included).

    Notes
    -----
    Where nothing is counted (an empty batch, every target ignored, or zero
    summed weight), ``"mean"`` gives 0 rather than NaN, with a zero gradient.
    A target probability of 0 contributes 0 even where the log-probability
    is ``-inf`` (0 log 0 = 0, only there: elsewhere the derivative with
    respect to probability targets is ``-log_softmax(logits)``).

    Examples
    --------
    >>> import portable_softmax as ps
    >>> round(float(ps.cross_entropy([[2.0, 3.0, 4.0]], [1])), 4)
    1.4076
    """
    p = cross_entropy_problem(
        logits,
        target,
        axis=axis,
        reduction=reduction,
        weight=weight,
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
        where=where,
    )
    loss, _ = fast_or_generic(p.logits, _fast(p, loss=True, grad=False), lambda: (_loss(p), None))
    return p.finish(loss)


@xp_quiet
def cross_entropy_grad(
    logits: Array,
    target: Array,
    /,
    axis: int = -1,
    *,
    reduction: str = "mean",
    weight: Array | None = None,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    where: Array | None = None,
) -> Array:
    """Exact gradient of :func:`cross_entropy` with respect to ``logits``.

    With one-hot targets this is ``softmax(logits) - y``, divided by the
    mean's divisor for ``reduction="mean"``.  For ``reduction="none"`` it is
    the gradient of the summed loss.  Class-index targets never build a
    one-hot array.  Arguments as in :func:`cross_entropy`.

    Returns
    -------
    array
        Shape, library, device and dtype of ``logits``.

    Examples
    --------
    >>> import portable_softmax as ps
    >>> ps.cross_entropy_grad([[2.0, 3.0, 4.0]], [1]).round(4)
    array([[ 0.09  , -0.7553,  0.6652]])
    """
    p = cross_entropy_problem(
        logits,
        target,
        axis=axis,
        reduction=reduction,
        weight=weight,
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
        where=where,
    )
    _, grad = fast_or_generic(p.logits, _fast(p, loss=False, grad=True), lambda: (None, _grad(p)))
    return p.finish(grad)


@xp_quiet
def cross_entropy_with_grad(
    logits: Array,
    target: Array,
    /,
    axis: int = -1,
    *,
    reduction: str = "mean",
    weight: Array | None = None,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    where: Array | None = None,
) -> tuple[Array, Array]:
    """:func:`cross_entropy` and :func:`cross_entropy_grad` from one softmax.

    What a training step needs: the loss to report and the gradient to
    descend, validated and normalised once.  Arguments as in
    :func:`cross_entropy`.

    Returns
    -------
    (array, array)
        ``(cross_entropy(...), cross_entropy_grad(...))`` with the same
        arguments.

    Examples
    --------
    >>> import portable_softmax as ps
    >>> loss, grad = ps.cross_entropy_with_grad([[2.0, 3.0, 4.0]], [1])
    >>> round(float(loss), 4), grad.round(4)
    (1.4076, array([[ 0.09  , -0.7553,  0.6652]]))
    """
    plain = weight is None and ignore_index is None and where is None and not label_smoothing
    if plain and reduction == "mean":
        # The training step's call: a lean path with its own light checks.
        backend = backend_for(logits) if axis in (-1, 1) else None
        if backend is not None and type(target) is type(logits):
            fast = backend.mean_cross_entropy_with_grad(logits, target)
            if fast is not None:
                return fast
    p = cross_entropy_problem(
        logits,
        target,
        axis=axis,
        reduction=reduction,
        weight=weight,
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
        where=where,
    )
    fast = _fast(p, loss=True, grad=True)
    loss, grad = fast_or_generic(p.logits, fast, lambda: _loss_and_grad(p))
    return p.finish(loss), p.finish(grad)


@xp_quiet
def one_hot(labels: Array, num_classes: int, /, *, dtype: Any = None, axis: int = -1) -> Array:
    """One-hot encode integer ``labels``.

    Parameters
    ----------
    labels : array_like
        Integer class labels of any Array API library (a list is read with
        NumPy).
    num_classes : int
        Number of classes ``C`` (at least 1).
    dtype : dtype, optional
        Output dtype; default the namespace's default floating dtype.
    axis : int, optional
        Where the class axis goes in the result, as in ``jax.nn.one_hot``.
        Default: last.

    Returns
    -------
    array
        Shape ``labels.shape + (num_classes,)`` (with ``axis=-1``), on the
        device of ``labels``.

    Raises
    ------
    TypeError
        Labels that are not integers (float labels included: cast them).
    ValueError
        On eager backends, for a label outside ``[0, num_classes)``.  JAX
        and Dask cannot raise from values: there such a row is all zeros,
        as in ``jax.nn.one_hot``.

    Examples
    --------
    >>> import portable_softmax as ps
    >>> ps.one_hot([0, 2], 3)
    array([[1., 0., 0.],
           [0., 0., 1.]])
    """
    if not is_array_api_obj(labels):
        labels = np.asarray(labels)
    xp, labels, _ = xp_inputs(labels)
    if not xp.isdtype(labels.dtype, "integral"):
        msg = f"labels must have an integer dtype, got {labels.dtype}"
        raise TypeError(msg)
    n = operator.index(num_classes)
    if n < 1:
        msg = f"num_classes must be at least 1, got {num_classes}"
        raise ValueError(msg)
    if xp_eager(labels) and bool(xp.any((labels < 0) | (labels >= n))):
        msg = f"labels must lie in [0, {n}) for num_classes={n}"
        raise ValueError(msg)
    class_axis = xp_normalize_axis(axis, labels.ndim + 1)
    dev = xp_device(labels)
    dtype = xp_default_dtype(xp, "real floating", dev) if dtype is None else dtype
    # Both operands of the comparison have the result's rank: no implicit
    # rank promotion (JAX's strict mode refuses it).
    classes = xp.reshape(xp.arange(n, dtype=labels.dtype, device=dev), (1,) * labels.ndim + (n,))
    out = xp.astype(xp.expand_dims(labels, axis=-1) == classes, dtype, copy=False)
    return out if class_axis == labels.ndim else xp.moveaxis(out, -1, class_axis)
