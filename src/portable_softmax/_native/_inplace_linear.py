"""The blocked linear cross-entropy with every block written in place: NumPy's and PyTorch's.

The math is the generic module's (``_generic/linear.py``): the same blocks,
per-sample statistics, merge and coefficients.  Here each block of logits is
written by one matrix product into a buffer reused for every block (a fresh
array per block costs a page-faulted allocation of its size on the CPU), and
the exponentials and the gradient are computed in that buffer; a softcap
keeps the logits for its derivative in a second one.  The gradients are
accumulated in place.

:class:`InPlaceKernel` is the driver; a subclass per library gives the
primitives (a product into a buffer, the block's statistics, the scatter of
the target's term).
"""

from __future__ import annotations

from typing import Any

from portable_softmax._generic import linear as generic
from portable_softmax._linear_problem import Blocks, LinearProblem

__all__ = ["Grads", "InPlaceKernel"]

Grads = tuple[Any, Any, Any]


class InPlaceKernel:
    """The driver: loops over blocks of samples and of classes; primitives in subclasses."""

    #: The array library (NumPy or torch), for the element-wise math of the merge.
    lib: Any
    #: Whether the loss with its gradients takes the one-pass schedule where it applies.
    one_pass = True

    # -- primitives ---------------------------------------------------------------
    def empty(self, p: LinearProblem, shape: tuple[int, ...]) -> Any:
        """An uninitialised array of the compute dtype on ``p``'s device."""
        raise NotImplementedError

    def logits(self, p: LinearProblem, x_r: Any, c0: int, c1: int, out: Any) -> Any:
        """``x_r @ W[c0:c1].T + b[c0:c1]`` (softcapped) written into ``out``."""
        raise NotImplementedError

    def stats(
        self, p: LinearProblem, z: Any, e: Any, y_r: Any, c0: int
    ) -> tuple[generic.RowStats, Any]:
        """The block's statistics and each row's argmax; ``e`` (may be ``z``) gets
        ``exp(z - max)`` with the maximum's entry zeroed."""
        raise NotImplementedError

    def exp_times(self, z: Any, shift: Any, scale: Any, out: Any) -> Any:
        """``exp(z - shift) * scale``, per-row ``shift`` and ``scale``, into ``out`` (or ``z``)."""
        raise NotImplementedError

    def restore_top(self, e: Any, top: Any) -> None:
        """Put back the maximum's ``exp(0) = 1`` that :meth:`stats` took out of ``e``."""
        raise NotImplementedError

    def subtract_target(self, g: Any, beta: Any, y_r: Any, c0: int) -> None:
        """``g[i, y_i - c0] -= beta_i`` where the target lies in the block."""
        raise NotImplementedError

    def add_products(self, grads: Grads, p: LinearProblem, x_r: Any, g: Any, block: Any) -> None:
        """``d_x[rows] (+)= g @ W_c``, ``d_W[cols] (+)= g.T @ x_r``, ``d_b[cols] (+)= sum(g)``.

        ``block`` is ``(r0, r1, c0, c1)``: the first block of a row range (or
        column range) writes, the later ones add.
        """
        raise NotImplementedError

    # -- the driver ---------------------------------------------------------------
    def _buffers(self, p: LinearProblem, blocks: Blocks) -> list[Any]:
        size = min(blocks.rows, p.n_samples) * blocks.classes
        return [self.empty(p, (size,)) for _ in range(1 if p.softcap is None else 2)]

    @staticmethod
    def _view(buffer: Any, rows: int, cols: int) -> Any:
        return buffer[: rows * cols].reshape(rows, cols)

    def _grads(self, p: LinearProblem) -> Grads:
        db = None if p.linear_bias is None else self.empty(p, (p.n_classes,))
        return self.empty(p, tuple(p.x.shape)), self.empty(p, tuple(p.linear_weight.shape)), db

    def _finish_gradient(
        self, p: LinearProblem, g: Any, z: Any, coef: generic.Coefficients, y_r: Any, c0: int
    ) -> Any:
        """``g`` holds ``softmax * alpha``: take the target and smoothing terms, the softcap's
        derivative (``z`` is overwritten)."""
        self.subtract_target(g, coef.beta, y_r, c0)
        if coef.gamma is not None:
            w = coef.gamma[:, None]
            g -= w if p.weight is None else w * p.weight[c0 : c0 + g.shape[1]]
        if p.softcap is not None:
            z /= p.softcap
            z *= z
            z *= g
            g -= z
        return g

    def _one_pass_rows(
        self, p: LinearProblem, bufs: list[Any], x_r: Any, y_r: Any, rows: tuple[int, int], f: Any
    ) -> tuple[generic.RowStats, Any]:
        """Statistics and gradient of samples ``rows`` from one block of every class."""
        r0, r1 = rows
        v = p.n_classes
        z = self.logits(p, x_r, 0, v, self._view(bufs[0], r1 - r0, v))
        e = self._view(bufs[-1], r1 - r0, v)
        stats, top = self.stats(p, z, e, y_r, 0)
        coef = generic.coefficients(p, stats.lse(self.lib), f, r0, r1)
        self.restore_top(e, top)
        # exp(z - max) / (1 + t) is the softmax, exp(z - lse).
        e *= (coef.alpha / (1.0 + stats.t))[:, None]
        return stats, self._finish_gradient(p, e, z, coef, y_r, 0)

    def _two_pass_stats(
        self, p: LinearProblem, bufs: list[Any], x_r: Any, y_r: Any, n_rows: int
    ) -> generic.RowStats:
        stats = None
        for c0, c1 in p.blocks.class_ranges(p.n_classes):
            z = self.logits(p, x_r, c0, c1, self._view(bufs[0], n_rows, c1 - c0))
            block, _ = self.stats(p, z, z, y_r, c0)
            stats = block if stats is None else generic.merge(stats, block, self.lib)
        return stats

    def _two_pass_gradient(
        self, p: LinearProblem, bufs: list[Any], grads: Grads, rows: tuple[int, int], lse_r: Any,
        f: Any,
    ) -> None:  # fmt: skip
        r0, r1 = rows
        x_r, y_r = p.compute(p.x[r0:r1]), p.indices[r0:r1]
        coef = generic.coefficients(p, lse_r, f, r0, r1)
        for c0, c1 in p.blocks.class_ranges(p.n_classes):
            z = self.logits(p, x_r, c0, c1, self._view(bufs[0], r1 - r0, c1 - c0))
            g = self.exp_times(z, lse_r, coef.alpha, self._view(bufs[-1], r1 - r0, c1 - c0))
            g = self._finish_gradient(p, g, z, coef, y_r, c0)
            self.add_products(grads, p, x_r, g, (r0, r1, c0, c1))

    def forward(self, p: LinearProblem, *, grad: bool) -> tuple[Any, Any, Grads | None]:
        """``(per-sample losses, logsumexp, gradients or None)``, as ``generic.loss_and_grad``."""
        one_pass = grad and self.one_pass and p.one_pass is not None
        shape = p.one_pass if one_pass else p.blocks
        bufs = self._buffers(p, shape)
        f = generic.multiplier(p)
        grads = self._grads(p) if grad else None
        losses, lses = [], []
        for r0, r1 in shape.row_ranges(p.n_samples):
            x_r, y_r = p.compute(p.x[r0:r1]), p.indices[r0:r1]
            if one_pass:
                stats, g = self._one_pass_rows(p, bufs, x_r, y_r, (r0, r1), f)
                self.add_products(grads, p, x_r, g, (r0, r1, 0, p.n_classes))
            else:
                stats = self._two_pass_stats(p, bufs, x_r, y_r, r1 - r0)
                if grads is not None:
                    self._two_pass_gradient(p, bufs, grads, (r0, r1), stats.lse(self.lib), f)
            losses.append(generic.per_sample_losses(p, stats, r0, r1))
            lses.append(stats.lse(self.lib))
        if not losses:  # an empty batch
            empty = self.empty(p, (0,))
            return empty, empty, None if grads is None else self._zero(grads)
        xp = p.xp
        return xp.concat(losses), xp.concat(lses), grads

    def backward(self, p: LinearProblem, lse: Any, f: Any) -> Grads:
        """The gradients from each sample's ``logsumexp``, the blocks computed again."""
        bufs, grads = self._buffers(p, p.blocks), self._grads(p)
        for r0, r1 in p.blocks.row_ranges(p.n_samples):
            self._two_pass_gradient(p, bufs, grads, (r0, r1), lse[r0:r1], f)
        return grads if p.n_samples else self._zero(grads)

    @staticmethod
    def _zero(grads: Grads) -> Grads:
        for g in grads:
            if g is not None:
                g[...] = 0.0
        return grads
