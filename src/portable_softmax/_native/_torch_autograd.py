"""The generic kernels as ``torch.autograd.Function``\\ s with closed-form backwards.

Under ``torch.compile`` and ``torch.func`` (tensors whose values cannot be
read) the fast paths run the generic Array API code, which traces; autodiff
through it would differentiate every guard of the special-values table (the
shift, the ``where``\\ s, the log1p normaliser), and the compiled backward
then costs two to ten times torch's own.  These Functions keep the generic
forward and give autograd the closed forms instead:

- ``softmax``: ``s * (g - sum(g * s))``;
- ``log_softmax``: ``g - exp(out) * sum(g)``;
- ``logsumexp``: ``g * softmax(x)``.

At the special rows (a row of ``-inf``, ``+inf`` entries, NaN) each gives
what autodiff through the generic code gives, as the eager functions do.  Dynamo
traces them into the graph, and ``generate_vmap_rule`` lets ``vmap`` batch
them.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from portable_softmax._compat import xp_namespace
from portable_softmax._generic import softmax as generic

__all__ = ["log_softmax", "logsumexp", "softmax"]


def _infinite_rows(x: Any, dims: tuple[int, ...]) -> Any:
    """Rows (keepdims) whose maximum is ``+inf``, for the backward (fused into the max pass)."""
    return torch.amax(x, dims, keepdim=True) == math.inf


class _Softmax(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(x: Any, dims: tuple[int, ...]) -> tuple[Any, Any]:
        return generic.softmax(x, dims, None, xp_namespace(torch)), _infinite_rows(x, dims)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Any, Any]) -> None:
        ctx.dims = inputs[1]
        ctx.mark_non_differentiable(output[1])
        ctx.save_for_backward(*output)

    @staticmethod
    def backward(ctx: Any, g: Any, _: Any) -> tuple[Any, None]:
        s, infinite = ctx.saved_tensors
        gs = g * s
        # A row with +inf entries is constant near them: a zero gradient, as
        # autodiff through the generic code gives (the closed form would
        # not be 0 with two or more +inf entries).
        return torch.where(infinite, 0.0, gs - s * gs.sum(ctx.dims, keepdim=True)), None


class _LogSoftmax(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(x: Any, dims: tuple[int, ...]) -> tuple[Any, Any]:
        return generic.log_softmax(x, dims, None, xp_namespace(torch)), _infinite_rows(x, dims)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Any, Any]) -> None:
        ctx.dims = inputs[1]
        ctx.mark_non_differentiable(output[1])
        ctx.save_for_backward(*output)

    @staticmethod
    def backward(ctx: Any, g: Any, _: Any) -> tuple[Any, None]:
        out, infinite = ctx.saved_tensors
        s = torch.exp(out)
        # In a row with +inf entries (probability 1/k each) autodiff through
        # the generic code sees them as one: each gets their mean gradient.
        tied = infinite & (s > 0)
        g = torch.where(tied, (g * s).sum(ctx.dims, keepdim=True), g)
        return g - s * g.sum(ctx.dims, keepdim=True), None


class _LogSumExp(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(x: Any, dims: tuple[int, ...]) -> Any:
        return generic.logsumexp(x, dims, xp_namespace(torch))

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        ctx.dims = inputs[1]
        # The softmax is computed again in the backward: saving it would keep
        # an input-sized array alive for a result the size of a row count.
        ctx.save_for_backward(inputs[0], output)

    @staticmethod
    def backward(ctx: Any, g: Any) -> tuple[Any, None]:
        x, out = ctx.saved_tensors
        s = generic.softmax(x, ctx.dims, None, xp_namespace(torch))
        # A row of -inf: autodiff through the generic code sends the
        # gradient to its maximum, which every entry shares.
        return g * torch.where(out == -math.inf, out.numel() / x.numel(), s), None


def softmax(x: Any, dims: tuple[int, ...]) -> Any:
    """Softmax over ``dims``, differentiated in closed form."""
    return _Softmax.apply(x, dims)[0]


def log_softmax(x: Any, dims: tuple[int, ...]) -> Any:
    """Log-softmax over ``dims``, differentiated in closed form."""
    return _LogSoftmax.apply(x, dims)[0]


def logsumexp(x: Any, dims: tuple[int, ...]) -> Any:
    """Log-sum-exp over ``dims`` (keepdims), differentiated in closed form."""
    return _LogSumExp.apply(x, dims)
