"""PyTorch's linear cross-entropy: in-place blocks, and an ``autograd.Function``.

``linear_cross_entropy`` under autograd is the Function made by
:func:`function`.  For the reduced losses (``"mean"``, ``"sum"``: the
cotangent is one number) its forward computes the gradients at once, in
the one pass where that applies (three matrix products of the logits' size,
where computing the blocks again in the backward pass makes four), and its
backward scales them, as Liger Kernel and torch's chunked
``F.linear_cross_entropy`` do; a forward under autograd without a backward
then pays for the gradients too (an evaluation loop runs under
``torch.no_grad()``, which takes the loss alone).  For ``"none"`` the
forward keeps the inputs and one ``logsumexp`` per sample, and the backward
computes the blocks again with the per-sample cotangents.

Under ``torch.compile`` and ``torch.func`` (tensors whose values cannot be
read, ``xp_traced``) the same Function runs the generic code,
which Dynamo traces (writes into views of a reused buffer are what it
handles least well) and Inductor fuses, and ``vmap`` batches.
"""

from __future__ import annotations

from typing import Any

from portable_softmax._compat import xp_traced
from portable_softmax._generic import linear as generic
from portable_softmax._linear_problem import LinearProblem
from portable_softmax._native._base import LinearLossAndGrads
from portable_softmax._native._inplace_linear import Grads, InPlaceKernel

__all__ = ["TorchKernel", "function", "linear_cross_entropy"]


class TorchKernel(InPlaceKernel):
    """The in-place primitives in torch: ``addmm`` with ``out=``, in-place ``exp_``, scatters."""

    def __init__(self) -> None:
        import torch

        self.lib = torch

    def empty(self, p: LinearProblem, shape: tuple[int, ...]) -> Any:
        return self.lib.empty(shape, dtype=p.compute_dtype, device=p.x.device)

    def logits(self, p: LinearProblem, x_r: Any, c0: int, c1: int, out: Any) -> Any:
        torch = self.lib
        w = p.compute(p.linear_weight[c0:c1])
        if p.linear_bias is None:
            torch.mm(x_r, w.T, out=out)
        else:
            torch.addmm(p.compute(p.linear_bias[c0:c1]), x_r, w.T, out=out)
        if p.softcap is not None:
            out.div_(p.softcap).tanh_().mul_(p.softcap)
        return out

    def stats(
        self, p: LinearProblem, z: Any, e: Any, y_r: Any, c0: int
    ) -> tuple[generic.RowStats, Any]:
        torch = self.lib
        width = z.shape[1]
        m, top = torch.max(z, 1)
        local = y_r - c0
        inside = (local >= 0) & (local < width)
        zy = torch.where(inside, z.gather(1, local.clamp(0, width - 1)[:, None])[:, 0], 0.0)
        zw = None
        if p.smoothing > 0:
            zw = z.sum(1) if p.weight is None else torch.mv(z, p.weight[c0 : c0 + width])
        torch.sub(z, m[:, None], out=e).exp_()
        e.scatter_(1, top[:, None], 0.0)
        return generic.RowStats(m, e.sum(1), zy, zw), top

    def exp_times(self, z: Any, shift: Any, scale: Any, out: Any) -> Any:
        return self.lib.sub(z, shift[:, None], out=out).exp_().mul_(scale[:, None])

    def restore_top(self, e: Any, top: Any) -> None:
        e.scatter_(1, top[:, None], 1.0)

    def subtract_target(self, g: Any, beta: Any, y_r: Any, c0: int) -> None:
        width = g.shape[1]
        local = y_r - c0
        inside = (local >= 0) & (local < width)
        values = self.lib.where(inside, -beta, 0.0)[:, None]
        g.scatter_add_(1, local.clamp(0, width - 1)[:, None], values)

    def add_products(self, grads: Grads, p: LinearProblem, x_r: Any, g: Any, block: Any) -> None:
        torch = self.lib
        r0, r1, c0, c1 = block
        w = p.compute(p.linear_weight[c0:c1])
        dx, dw, db = grads[0][r0:r1], grads[1][c0:c1], grads[2]
        if c0 == 0:
            torch.mm(g, w, out=dx)
        else:
            dx.addmm_(g, w)
        if r0 == 0:
            torch.mm(g.T, x_r, out=dw)
        else:
            dw.addmm_(g.T, x_r)
        if db is not None:
            if r0 == 0:
                torch.sum(g, 0, out=db[c0:c1])
            else:
                db[c0:c1] += g.sum(0)


_KERNEL: list[TorchKernel] = []


def _kernel() -> TorchKernel:
    if not _KERNEL:
        _KERNEL.append(TorchKernel())
    return _KERNEL[0]


def _forward(p: LinearProblem, *, grad: bool) -> tuple[Any, Any, Grads | None]:
    if xp_traced(p.x):
        return generic.loss_and_grad(p, grad=grad)
    return _kernel().forward(p, grad=grad)


def _backward(p: LinearProblem, lse: Any, f: Any) -> Grads:
    return generic.gradients(p, lse, f) if xp_traced(p.x) else _kernel().backward(p, lse, f)


def _saved_gradients(ctx: Any, g_loss: Any) -> tuple[LinearProblem, Grads]:
    """The backward's problem and gradients: the forward's scaled, or the blocks again."""
    n = len(LinearProblem.ARRAYS)
    saved = ctx.saved_tensors
    p = ctx.skeleton.with_arrays(*saved[:n])
    g = g_loss.to(p.compute_dtype)
    if saved[n + 1 :]:  # traced: saved as the transforms require
        return p, tuple(None if a is None else a * g for a in saved[n + 1 :])
    if ctx.grads is not None:  # eager: used once, in place
        grads, ctx.grads = ctx.grads, None
        for a in grads:
            if a is not None:
                a.mul_(g)
        return p, grads
    return p, _backward(p, saved[n], generic.multiplier(p, g))


def _autograd_function() -> Any:
    import torch

    class LinearCrossEntropyFunction(torch.autograd.Function):
        """Forward: the reduced loss with its gradients (or each sample's logsumexp for
        ``"none"``); backward: the gradients scaled (or the blocks again).

        Saves the gradients, or the inputs and the ``(N,)`` logsumexp, never a
        block of logits.  The problem's arrays are arguments (hidden in an
        object they would escape ``torch.func``'s transforms), its other fields
        the skeleton.
        """

        generate_vmap_rule = True

        @staticmethod
        def forward(skeleton: LinearProblem, *arrays: Any) -> tuple[Any, ...]:
            p = skeleton.with_arrays(*arrays)
            if p.reduction == "none":
                losses, lse, _ = _forward(p, grad=False)
                return generic.reduce(p, losses), lse, None, None, None
            losses, lse, grads = _forward(p, grad=True)
            return generic.reduce(p, losses), lse, *grads

        @staticmethod
        def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Any, ...]) -> None:
            ctx.skeleton = inputs[0]
            _, lse, *grads = output
            ctx.mark_non_differentiable(*(a for a in output[1:] if a is not None))
            # Their cotangents stay None (not zeros of the gradients' size).
            ctx.set_materialize_grads(False)
            # Eager, the first backward scales the forward's gradients in place and
            # lets them go; a second one (``retain_graph=True``) computes the blocks
            # again.  Traced code saves them as the transforms require.
            ctx.grads, saved = None, ()
            if grads[0] is not None:
                if xp_traced(grads[0]):
                    saved = tuple(grads)
                else:
                    ctx.grads = grads
            ctx.save_for_backward(*inputs[1:], lse, *saved)

        @staticmethod
        def backward(ctx: Any, g_loss: Any, *_: Any) -> tuple[Any, ...]:
            p, grads = _saved_gradients(ctx, g_loss)
            d_x, d_w, d_b = p.finish_grads(*grads)
            # No gradient for the skeleton, the targets, the masks and the class weights.
            return None, d_x.reshape(p.x.shape), d_w, d_b, None, None, None, None

    return LinearCrossEntropyFunction


_FUNCTION: list[Any] = []


def function() -> Any:
    """The ``torch.autograd.Function`` (made on first use: importing us needs no torch)."""
    if not _FUNCTION:
        _FUNCTION.append(_autograd_function())
    return _FUNCTION[0]


def linear_cross_entropy(p: LinearProblem, *, grad: bool) -> LinearLossAndGrads | None:
    """The loss (differentiable by autograd) or the loss and its closed-form gradients."""
    import torch

    layer = (p.x, p.linear_weight, p.linear_bias)
    tracked = torch.is_grad_enabled() and any(a is not None and a.requires_grad for a in layer)
    if tracked and not grad:
        loss, *_ = function().apply(p.skeleton(), *p.arrays())
        return loss, None
    with torch.no_grad():
        losses, _, grads = _forward(p, grad=grad)
        return generic.reduce(p, losses), grads
