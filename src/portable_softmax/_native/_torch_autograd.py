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

Each holds at the special rows too (a row of ``-inf``, ``+inf`` entries,
NaN) and gives there what autodiff through the generic code gives.  Dynamo
traces them into the graph, and ``generate_vmap_rule`` lets ``vmap`` batch
them.
"""

from __future__ import annotations

from typing import Any

import torch

from portable_softmax._compat import xp_namespace
from portable_softmax._generic import softmax as generic

__all__ = ["log_softmax", "logsumexp", "softmax"]


class _Softmax(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(x: Any, dims: tuple[int, ...]) -> Any:
        return generic.softmax(x, dims, None, xp_namespace(torch))

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        ctx.dims = inputs[1]
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx: Any, g: Any) -> tuple[Any, None]:
        (s,) = ctx.saved_tensors
        gs = g * s
        return gs - s * gs.sum(ctx.dims, keepdim=True), None


class _LogSoftmax(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(x: Any, dims: tuple[int, ...]) -> Any:
        return generic.log_softmax(x, dims, None, xp_namespace(torch))

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        ctx.dims = inputs[1]
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx: Any, g: Any) -> tuple[Any, None]:
        (out,) = ctx.saved_tensors
        return g - torch.exp(out) * g.sum(ctx.dims, keepdim=True), None


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
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx: Any, g: Any) -> tuple[Any, None]:
        (x,) = ctx.saved_tensors
        return g * generic.softmax(x, ctx.dims, None, xp_namespace(torch)), None


def softmax(x: Any, dims: tuple[int, ...]) -> Any:
    """Softmax over ``dims``, differentiated in closed form."""
    return _Softmax.apply(x, dims)


def log_softmax(x: Any, dims: tuple[int, ...]) -> Any:
    """Log-softmax over ``dims``, differentiated in closed form."""
    return _LogSoftmax.apply(x, dims)


def logsumexp(x: Any, dims: tuple[int, ...]) -> Any:
    """Log-sum-exp over ``dims`` (keepdims), differentiated in closed form."""
    return _LogSumExp.apply(x, dims)
