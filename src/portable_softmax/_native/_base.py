"""The contract every backend's fast paths follow.

A backend is one class per array library, with one method per operation.
Each method either computes the operation for these arguments, or answers
``None``: "no fast path here" (a dtype, an axis layout, a ``where`` mask or a
special row it does not handle).  The caller then runs the generic Array API
code, which is complete on its own.  The backend itself checks what it can
take; the dispatcher only finds the backend for an array.

The default of every method is ``None``, so a backend defines only the
operations it has measured to be faster.  Arguments have been validated by
the public function: ``x`` has a real floating compute dtype (float32 or
wider), ``axes`` are sorted, non-negative and unique, ``where`` (when given)
is a boolean array of the shape of ``x``, and no axis of ``x`` is empty.
"""

from __future__ import annotations

from portable_softmax._compat import Array
from portable_softmax._linear_problem import LinearProblem
from portable_softmax._problem import CrossEntropyProblem

__all__ = ["Backend", "LinearLossAndGrads", "LossAndGrad"]

# (loss or None, gradient or None): what a cross-entropy fast path returns.
LossAndGrad = tuple[Array | None, Array | None]

# (loss, (d_input, d_linear_weight, d_linear_bias or None) or None): what a
# linear_cross_entropy fast path returns.
LinearLossAndGrads = tuple[Array, tuple[Array, Array, Array | None] | None]


class Backend:
    """Fast paths of one array library; every operation answers ``None`` by default."""

    #: The library's name, as the tests and the docs call it.
    name = "generic"

    def softmax(self, x: Array, axes: tuple[int, ...], where: Array | None) -> Array | None:
        """``softmax`` over ``axes`` (the shape of ``x``), or None."""
        return None

    def log_softmax(self, x: Array, axes: tuple[int, ...], where: Array | None) -> Array | None:
        """``log_softmax`` over ``axes`` (the shape of ``x``), or None."""
        return None

    def logsumexp(self, x: Array, axes: tuple[int, ...]) -> Array | None:
        """``logsumexp`` over ``axes`` with the reduced axes kept (length 1), or None.

        ``where`` and ``b`` have been folded into ``x`` (as ``-inf``) by the caller.
        """
        return None

    def cross_entropy(
        self, p: CrossEntropyProblem, *, loss: bool, grad: bool
    ) -> LossAndGrad | None:
        """The reduced loss and/or its gradient with respect to the logits, or None.

        Returns ``(loss, None)``, ``(None, grad)`` or ``(loss, grad)`` as asked,
        in the compute dtype; the caller casts.
        """
        return None

    def mean_cross_entropy_with_grad(
        self, logits: Array, target: Array
    ) -> tuple[Array, Array] | None:
        """The training step: 2-D logits, class indices, ``reduction="mean"``, no options.

        Called *before* validation, with the raw arrays, because at batch
        size 100 the checks cost more than the math: a backend answers only
        when its own light checks pass, and None otherwise (the validated path
        then answers, or raises).
        """
        return None

    def linear_cross_entropy(self, p: LinearProblem, *, grad: bool) -> LinearLossAndGrads | None:
        """The linear layer fused with the loss: the reduced loss and, with ``grad``, its gradients.

        Returns ``(loss, None)`` or ``(loss, (d_input, d_linear_weight,
        d_linear_bias))``, in the compute dtype (the caller reshapes and
        casts), ``d_input`` of shape ``(N, H)`` and ``d_linear_bias`` None
        without a bias; or None.  The loss of ``grad=False`` is
        differentiable by the library's autodiff (``torch.autograd``,
        ``jax.grad``) without storing the logits, where the backend answers.
        """
        return None
