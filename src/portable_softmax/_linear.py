"""The linear layer fused with the cross-entropy: large vocabularies without the logits."""

from __future__ import annotations

from portable_softmax._compat import Array, xp_quiet
from portable_softmax._generic import linear as generic
from portable_softmax._linear_problem import LinearProblem, linear_problem
from portable_softmax._native import fast_or_generic
from portable_softmax._native._base import LinearLossAndGrads

__all__ = ["linear_cross_entropy", "linear_cross_entropy_grad", "linear_cross_entropy_with_grad"]

Grads = tuple[Array, Array, Array | None]


def _generic(p: LinearProblem, *, grad: bool) -> LinearLossAndGrads:
    losses, _, grads = generic.loss_and_grad(p, grad=grad)
    return generic.reduce(p, losses), grads


def _run(p: LinearProblem, *, grad: bool) -> LinearLossAndGrads:
    return fast_or_generic(
        p.x,
        lambda backend: backend.linear_cross_entropy(p, grad=grad),
        lambda: _generic(p, grad=grad),
    )


@xp_quiet
def linear_cross_entropy(
    input: Array,  # noqa: A002 - torch's name for it
    linear_weight: Array,
    target: Array,
    /,
    *,
    linear_bias: Array | None = None,
    weight: Array | None = None,
    reduction: str = "mean",
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    chunk_size: int | None = None,
) -> Array:
    """Cross-entropy of the logits ``input @ linear_weight.T + linear_bias``, never formed.

    The value of ``cross_entropy(logits, target, axis=-1, ...)`` for the
    output layer of a language model, computed over blocks of classes and
    of samples whose ``(max, sum of exp)`` statistics are merged exactly:
    the memory beyond the inputs (and, for the gradients, the outputs) is
    about ``N * chunk_size`` elements, not ``N * V``.  ``torch.autograd``
    and ``jax.grad`` differentiate it without storing the logits: for
    ``"mean"`` and ``"sum"`` the forward pass under differentiation computes
    the gradients at once (three matrix products of the logits' size, not
    four), so evaluate a PyTorch model under ``torch.no_grad()``.

    Parameters
    ----------
    input : array
        Real floating, shape ``(..., H)``: one row of features per sample.
    linear_weight : array
        Shape ``(V, H)``, the layout of ``torch.nn.Linear`` (and of
        ``torch.nn.functional.linear_cross_entropy``).
    target : array
        Integer class indices (any integer dtype) of shape ``input.shape[:-1]``.
    linear_bias : array, optional
        Shape ``(V,)``.
    weight : array, optional
        One rescaling weight per class, as in ``cross_entropy``.
    reduction : {"mean", "sum", "none"}, optional
        ``"mean"`` divides by the summed weights of the counted targets
        (0 when nothing is counted); ``"none"`` gives one loss per sample,
        shaped like ``target``.
    ignore_index : int, optional
        A class-index value whose samples contribute neither loss nor
        gradient, nor count in the mean.
    label_smoothing : float in [0, 1], optional
        Mixes the target with the uniform distribution over the classes.
    z_loss : float, optional
        Adds ``z_loss * logsumexp(logits)**2`` to each counted sample's loss,
        with the sample's class weight, before the reduction (PaLM's
        auxiliary loss).  Default 0.
    softcap : float, optional
        Replaces the logits by ``softcap * tanh(logits / softcap)`` first
        (Gemma 2); the z-loss then sees the softcapped logits.
    chunk_size : int, optional
        Classes per block; a block then holds every sample, so the extra
        memory is about ``N * min(chunk_size, V)`` elements.  ``None``
        chooses by itself: blocks of about 4 Mi elements (16 MiB in float32)
        -- all ``V`` classes when ``N * V`` is no larger, otherwise
        ``4 Mi // N`` classes rounded down to a multiple of 128 (at least
        256) and as many samples as fit.  Results do not depend on it beyond
        floating-point rounding.

    Returns
    -------
    array
        A 0-d array for ``"mean"`` and ``"sum"``, one loss per sample for
        ``"none"``.  Same library and device as ``input``; the dtype of
        ``input``, ``linear_weight`` and ``linear_bias`` promoted together.

    Raises
    ------
    TypeError
        Probability (floating) targets: compute the logits and call
        :func:`cross_entropy`.  Non-floating input or layer.
    ValueError
        ``softcap <= 0``, ``z_loss < 0``, ``chunk_size < 1``, a bias not of
        shape ``(V,)``, shapes that do not fit together, and the errors of
        :func:`cross_entropy` (an unknown reduction, ``label_smoothing``
        outside ``[0, 1]``, ``weight`` not of length V, a class index outside
        ``[0, V)`` on NumPy, PyTorch, CuPy and array_api_strict).  JAX, Dask
        and code compiled by ``torch.compile`` cannot raise from values:
        there such a sample's loss is NaN.

    Notes
    -----
    float16 and bfloat16 inputs are computed in float32, block by block: the
    logits, their log-sum-exp and the gradients accumulate in float32.  The
    logits are assumed finite: a NaN or infinite input gives a NaN loss.

    Examples
    --------
    >>> import numpy as np
    >>> import portable_softmax as ps
    >>> rng = np.random.default_rng(0)
    >>> x, W = rng.normal(size=(4, 8)), rng.normal(size=(50, 8))
    >>> t = np.array([3, 14, 15, 9])
    >>> loss = ps.linear_cross_entropy(x, W, t, chunk_size=16)
    >>> bool(np.isclose(loss, ps.cross_entropy(x @ W.T, t)))
    True
    """
    p = linear_problem(
        input, linear_weight, target, linear_bias=linear_bias, weight=weight,
        reduction=reduction, ignore_index=ignore_index, label_smoothing=label_smoothing,
        z_loss=z_loss, softcap=softcap, chunk_size=chunk_size,
    )  # fmt: skip
    loss, _ = _run(p, grad=False)
    return p.finish_loss(loss)


@xp_quiet
def linear_cross_entropy_grad(
    input: Array,  # noqa: A002
    linear_weight: Array,
    target: Array,
    /,
    *,
    linear_bias: Array | None = None,
    weight: Array | None = None,
    reduction: str = "mean",
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    chunk_size: int | None = None,
) -> tuple[Array, Array, Array | None]:
    """Exact gradients of :func:`linear_cross_entropy`, in closed form per block.

    Per block of logits, ``G = softmax - y`` (with the smoothing, weights,
    z-loss and softcap folded in), then ``d_input = G @ W``,
    ``d_linear_weight = G.T @ input`` and ``d_linear_bias = sum(G)``: the
    gradients that autodiff of the materialised reference gives.  For
    ``reduction="none"`` they are those of the summed loss.  Arguments as in
    :func:`linear_cross_entropy`.

    Returns
    -------
    (array, array, array or None)
        ``(d_input, d_linear_weight, d_linear_bias)``, each of the shape and
        dtype of its argument; ``d_linear_bias`` is None without a bias.

    Examples
    --------
    >>> import numpy as np
    >>> import portable_softmax as ps
    >>> x, W = np.array([[1.0, 2.0]]), np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    >>> d_x, d_W, d_b = ps.linear_cross_entropy_grad(x, W, np.array([1]))
    >>> d_W.round(4)
    array([[ 0.09  ,  0.1801],
           [-0.7553, -1.5105],
           [ 0.6652,  1.3305]])
    >>> d_b is None
    True
    """
    p = linear_problem(
        input, linear_weight, target, linear_bias=linear_bias, weight=weight,
        reduction=reduction, ignore_index=ignore_index, label_smoothing=label_smoothing,
        z_loss=z_loss, softcap=softcap, chunk_size=chunk_size,
    )  # fmt: skip
    _, grads = _run(p, grad=True)
    return p.finish_grads(*grads)


@xp_quiet
def linear_cross_entropy_with_grad(
    input: Array,  # noqa: A002
    linear_weight: Array,
    target: Array,
    /,
    *,
    linear_bias: Array | None = None,
    weight: Array | None = None,
    reduction: str = "mean",
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    chunk_size: int | None = None,
) -> tuple[Array, tuple[Array, Array, Array | None]]:
    """:func:`linear_cross_entropy` and :func:`linear_cross_entropy_grad` from one pass.

    What a training step needs, validated once; where one block holds every
    class, each block of logits is computed once for both.  Arguments as in
    :func:`linear_cross_entropy`.

    Returns
    -------
    (array, (array, array, array or None))
        ``(loss, (d_input, d_linear_weight, d_linear_bias))``.

    Examples
    --------
    >>> import numpy as np
    >>> import portable_softmax as ps
    >>> x, W = np.array([[1.0, 2.0]]), np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    >>> loss, (d_x, d_W, d_b) = ps.linear_cross_entropy_with_grad(x, W, np.array([1]))
    >>> round(float(loss), 4), d_x.round(4)
    (1.4076, array([[ 0.7553, -0.09  ]]))
    """
    p = linear_problem(
        input, linear_weight, target, linear_bias=linear_bias, weight=weight,
        reduction=reduction, ignore_index=ignore_index, label_smoothing=label_smoothing,
        z_loss=z_loss, softcap=softcap, chunk_size=chunk_size,
    )  # fmt: skip
    loss, grads = _run(p, grad=True)
    return p.finish_loss(loss), p.finish_grads(*grads)
