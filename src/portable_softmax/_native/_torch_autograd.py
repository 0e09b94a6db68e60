"""The generic kernels as ``torch.autograd.Function``\\ s with closed-form backwards.

Under ``torch.compile`` and ``torch.func`` (tensors whose values cannot be
read) the fast paths run the generic Array API code, which traces; autodiff
through it would differentiate every guard of the special-values table (the
shift, the ``where``\\ s, the log1p normaliser), and the compiled backward
then costs two to ten times torch's own.  These Functions keep the generic
forward and give autograd the closed forms instead:

- ``softmax``: ``s * (g - sum(g * s))``;
- ``log_softmax``: ``g - exp(out) * sum(g)``;
- ``logsumexp``: ``g * softmax(x)``;
- ``pick`` (the target's log-probability): ``g`` where the class matches.

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

__all__ = ["log_softmax", "logsumexp", "pick", "softmax"]


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


def _row_stats(x: Any, dims: tuple[int, ...]) -> tuple[Any, Any, Any]:
    """``(shifted, m, log_z)``: the generic code's max shift and log-normaliser."""
    xp = xp_namespace(torch)
    shifted, m, m0 = generic.shift(x, dims, xp)
    return shifted, m, generic.log_normalizer(x, shifted, m, m0, dims, xp)


def _probabilities(x: Any, m: Any, log_z: Any) -> Any:
    """softmax(x) again from the saved row statistics: one pass over ``x``, no reduction."""
    m0 = torch.where(m == -math.inf, 0.0, m)
    return torch.exp(torch.where(x == math.inf, 0.0, x - m0) - log_z)


class _FromRowStats(torch.autograd.Function):
    """A Function of ``x`` whose forward returns ``(result, m, log_z)`` (see ``_row_stats``).

    The backward keeps the input and two numbers a row, not the output: a
    loss that gathers from a log_softmax (cross-entropy) then never writes it.
    """

    generate_vmap_rule = True

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Any, Any, Any]) -> None:
        ctx.dims = inputs[1]
        ctx.mark_non_differentiable(*output[1:])
        ctx.save_for_backward(inputs[0], *output[1:])


class _LogSoftmax(_FromRowStats):
    @staticmethod
    def forward(x: Any, dims: tuple[int, ...]) -> tuple[Any, Any, Any]:
        shifted, m, log_z = _row_stats(x, dims)
        return shifted - log_z, m, log_z

    @staticmethod
    def backward(ctx: Any, g: Any, *_: Any) -> tuple[Any, None]:
        x, m, log_z = ctx.saved_tensors
        dims = ctx.dims
        s = _probabilities(x, m, log_z)
        # In a row with k entries +inf autodiff through the generic code
        # sees those entries as one: each gets their mean gradient (and k is
        # exp(log_z) there).
        tied = (m == math.inf) & (x == math.inf)
        mean = torch.where(tied, g, 0.0).sum(dims, keepdim=True) * torch.exp(-log_z)
        return torch.where(tied, mean, g) - s * g.sum(dims, keepdim=True), None


class _LogSumExp(_FromRowStats):
    @staticmethod
    def forward(x: Any, dims: tuple[int, ...]) -> tuple[Any, Any, Any]:
        _, m, log_z = _row_stats(x, dims)
        return m + log_z, m, log_z

    @staticmethod
    def backward(ctx: Any, g: Any, *_: Any) -> tuple[Any, None]:
        x, m, log_z = ctx.saved_tensors
        # A row of -inf: autodiff through the generic code sends the
        # gradient to its maximum, which every entry shares.
        uniform = m.numel() / x.numel()
        return g * torch.where(m == -math.inf, uniform, _probabilities(x, m, log_z)), None


class _Pick(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(a: Any, index: Any, dim: int) -> Any:
        return torch.take_along_dim(a, index, dim)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        a, index, ctx.dim = inputs
        ctx.size = a.shape[ctx.dim]
        ctx.save_for_backward(index)

    @staticmethod
    def backward(ctx: Any, g: Any) -> tuple[Any, None, None]:
        (index,) = ctx.saved_tensors
        shape = [1] * index.ndim
        shape[ctx.dim] = ctx.size
        classes = torch.arange(ctx.size, device=index.device).reshape(shape)
        return torch.where(index == classes, g, 0.0), None, None


def softmax(x: Any, dims: tuple[int, ...]) -> Any:
    """Softmax over ``dims``, differentiated in closed form."""
    return _Softmax.apply(x, dims)[0]


def log_softmax(x: Any, dims: tuple[int, ...]) -> Any:
    """Log-softmax over ``dims``, differentiated in closed form."""
    return _LogSoftmax.apply(x, dims)[0]


def logsumexp(x: Any, dims: tuple[int, ...]) -> Any:
    """Log-sum-exp over ``dims`` (keepdims), differentiated in closed form."""
    return _LogSumExp.apply(x, dims)[0]


def pick(a: Any, index: Any, dim: int) -> Any:
    """``take_along_dim(a, index, dim)`` whose backward compares, not scatters.

    Autograd's backward of a gather is a scatter into a zero array of
    ``a``'s size, which Inductor writes out; the comparison with the class
    numbers fuses into the pass that uses it.
    """
    return _Pick.apply(a, index, dim)
