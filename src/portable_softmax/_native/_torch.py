"""PyTorch fast paths: torch's fused kernels, guarded where they lose accuracy.

torch.log_softmax computes the maximum's entry as -log(sum): where that entry
dominates its row (probability near 1) the log loses its relative accuracy
(1e-3 at logits [0, -30]).  Rows whose largest log-probability lies above
``DOMINANT_LOG_PROB`` are computed again in the generic path's log1p form;
elsewhere torch's error is a few ulp.  Rows that torch's kernels return as
NaN (an infinite maximum) go back to the generic path, which defines them.
"""

from __future__ import annotations

import math
from typing import Any

import portable_softmax._native._torch_autograd as _torch_autograd
import portable_softmax._native._torch_linear as _torch_linear
from portable_softmax._compat import Array, xp_traced
from portable_softmax._generic import losses as generic
from portable_softmax._linear_problem import LinearProblem
from portable_softmax._native._base import Backend, LinearLossAndGrads, LossAndGrad
from portable_softmax._native._rows import DOMINANT_LOG_PROB
from portable_softmax._problem import CrossEntropyProblem, IndexTargets

__all__ = ["TorchBackend"]


class TorchBackend(Backend):
    """``torch.Tensor`` on any device: torch's kernels eagerly, closed-form backwards traced."""

    name = "torch"

    def softmax(self, x: Array, axes: tuple[int, ...], where: Array | None) -> Array | None:
        if where is not None:
            return None
        if xp_traced(x):
            return _torch_autograd.softmax(x, axes)
        return softmax(x, axes[0]) if len(axes) == 1 else None

    def log_softmax(self, x: Array, axes: tuple[int, ...], where: Array | None) -> Array | None:
        if where is not None:
            return None
        if xp_traced(x):
            return _torch_autograd.log_softmax(x, axes)
        if len(axes) != 1:
            return None
        return log_softmax(x, axes[0])

    def logsumexp(self, x: Array, axes: tuple[int, ...]) -> Array | None:
        if xp_traced(x):
            return _torch_autograd.logsumexp(x, axes)
        return logsumexp(x, axes[0]) if len(axes) == 1 else None

    def cross_entropy(
        self, p: CrossEntropyProblem, *, loss: bool, grad: bool
    ) -> LossAndGrad | None:
        if not isinstance(p, IndexTargets) or p.where is not None:
            return None
        if xp_traced(p.logits):
            # An empty batch takes the generic path's zero loss.
            empty = not p.logits.numel()
            return None if grad or empty else (traced_cross_entropy(p), None)
        if not grad:
            value = cross_entropy(p)
            return None if value is None else (value, None)
        return cross_entropy_with_grad(p, loss=loss)

    def mean_cross_entropy_with_grad(
        self, logits: Array, target: Array
    ) -> tuple[Array, Array] | None:
        return None if xp_traced(logits) else mean_cross_entropy(logits, target)

    def linear_cross_entropy(self, p: LinearProblem, *, grad: bool) -> LinearLossAndGrads | None:
        return _torch_linear.linear_cross_entropy(p, grad=grad)


# torch's fused CPU/CUDA kernels; float32 rows longer than this are computed in
# float64, because torch's float32 accumulation drifts with the row length
# beyond the accuracy the generic path keeps (docs/benchmarks.md has the
# figures).
_TORCH_F32_MAX_ROW = 32768


def acc_dtype(x: Any, n: int) -> Any:
    import torch

    return torch.float64 if x.dtype == torch.float32 and n > _TORCH_F32_MAX_ROW else None


def _has_nan_rows(out: Any, dim: int) -> bool:
    # A row with an infinite maximum comes back NaN throughout, so its first
    # entry tells; NaN inputs give the same, and the generic path keeps them NaN.
    import torch

    return bool(torch.isnan(out.select(dim, 0)).any())


def call(fn: Any, x: Any, dim: int, *, check: bool = True) -> Any | None:
    """``fn(x, dim)`` at the accumulation dtype; None for NaN rows when ``check``."""
    acc = acc_dtype(x, x.shape[dim])
    out = fn(x, dim) if acc is None else fn(x, dim, dtype=acc).to(x.dtype)
    return None if check and _has_nan_rows(out, dim) else out


def softmax(x: Any, dim: int) -> Any | None:
    import torch

    return call(torch.softmax, x, dim)


def cross_entropy(p: IndexTargets) -> Any | None:
    """``F.cross_entropy`` for class-index targets on PyTorch, or None.

    ``p`` is the validated problem of ``_losses``.  Ignored samples are
    marked with torch's own ``ignore_index``; a NaN result (an infinite
    logit, a zero weight against a ``-inf`` log-probability, a mean over
    nothing) goes back to the generic path, which defines those cases.
    """
    import torch
    import torch.nn.functional as F

    x = p.logits if p.logits.ndim == 1 or p.axis == 1 else torch.movedim(p.logits, p.axis, 1)
    target = torch.where(p.counted, p.indices, -100) if p.ignores else p.indices
    loss = F.cross_entropy(
        x, target, weight=p.weight, ignore_index=-100, reduction=p.reduction,
        label_smoothing=p.smoothing,
    )  # fmt: skip
    # A mean over nothing is NaN there (inf with smoothing): ours is 0.
    finite = math.isfinite(_number(loss)) if loss.ndim == 0 else bool(torch.isfinite(loss).all())
    return loss if finite else None


def traced_cross_entropy(p: IndexTargets) -> Any:
    """The generic loss from the closed-form-backward kernels: what ``torch.compile`` fuses."""
    logp = _torch_autograd.log_softmax(p.logits, (p.axis,))
    picked = _torch_autograd.pick(logp, p.expand(p.indices), p.axis).squeeze(p.axis)
    return generic.reduce(p, generic.per_sample_losses(p, logp, picked))


def mean_cross_entropy(x: Any, y: Any) -> tuple[Any, Any] | None:
    import torch
    import torch.nn.functional as F

    if x.ndim != 2 or not x.dtype.is_floating_point or x.dtype in (torch.float16, torch.bfloat16):
        return None
    if x.requires_grad and torch.is_grad_enabled():
        return None
    n, c = x.shape
    if y.shape != (n,) or y.dtype.is_floating_point or y.dtype == torch.bool or n == 0 or c == 0:
        return None
    y = y.long()
    if x.device.type != "cpu":
        # On a GPU an out-of-range target is a device-side assert: check first.
        lo, hi = torch.aminmax(y)
        if bool((lo < 0) | (hi >= c)):
            return None
    try:
        # No index is ignored here (torch's default -100 would silently be);
        # on the CPU torch raises for a target outside [0, c).
        loss = F.cross_entropy(x, y, ignore_index=_NO_INDEX)
    except (IndexError, RuntimeError):
        return None
    # An infinite maximum or a NaN makes its row, hence the mean, NaN.
    if bool(torch.isnan(loss)):
        return None
    acc = acc_dtype(x, c)
    s = torch.softmax(x, 1) if acc is None else torch.softmax(x, 1, dtype=acc).to(x.dtype)
    s.div_(n)[torch.arange(n, device=x.device), y] -= 1.0 / n
    return loss, s


_NO_INDEX = -(2**63)


def log_softmax(x: Any, dim: int) -> Any | None:
    import torch

    out = call(torch.log_softmax, x, dim, check=False)
    if x.numel() <= _DENSE_REPAIR or x.ndim == 1:
        return _repair_all_rows(x, out, dim)
    top = out.amax(dim, keepdim=True)
    redo = ~(top < DOMINANT_LOG_PROB)  # a dominant entry, or a NaN row
    if not bool(redo.any()):
        return out
    if bool(torch.isnan(top).any()):
        # An infinite maximum or a NaN input: the generic path defines those rows.
        return None
    rows = redo.squeeze(dim)
    fixed = _log1p_rows(x.movedim(dim, -1)[rows]).to(out.dtype)
    return _put(out, lambda o: o.movedim(dim, -1).index_put_((rows,), fixed), x)


def _repair_all_rows(x: Any, out: Any, dim: int) -> Any | None:
    """``out`` with every dominant entry recomputed: few elements, few torch calls, no indexing."""
    import torch

    # One number tells whether any row needs a second look.
    highest = _number(out.amax()) if out.numel() else -math.inf
    if highest < DOMINANT_LOG_PROB:
        return out
    if math.isnan(highest):
        return None  # as in log_softmax
    top, at = torch.max(out, dim, keepdim=True)
    # The maximum's log-probability in the log1p form is -log_z.
    _, _, log_z = _shift_and_log_z(x, dim)
    fixed = torch.where(top >= DOMINANT_LOG_PROB, -log_z, top)
    return _put(out, lambda o: o.scatter_(dim, at, fixed.to(o.dtype)), x)


def _number(t: Any) -> float:
    """The value of a 0-d tensor, read outside autograd."""
    return float(t.detach() if t.requires_grad else t)


# Inputs up to this many elements repair all rows densely, larger ones only
# the rows with a dominant entry.
_DENSE_REPAIR = 2**15


def _put(out: Any, write: Any, x: Any) -> Any:
    """``write(out)`` in place, or on a copy where autograd records torch.log_softmax."""
    import torch

    if x.requires_grad and torch.is_grad_enabled():
        # torch.log_softmax's backward reads its output: a copy keeps it.
        out = out.clone()
    write(out)
    return out


def _log1p_rows(x: Any) -> Any:
    """log_softmax of the rows of ``x`` (last axis) in the log1p form, finite maxima only."""
    _, shifted, log_z = _shift_and_log_z(x, -1)
    return shifted - log_z


def _shift_and_log_z(x: Any, dim: int) -> tuple[Any, Any, Any]:
    """``max``, ``x - max`` and ``log(sum(exp(x - max)))`` along ``dim`` (keepdims).

    The maximum's term is taken out of the sum and its 1 put back by log1p,
    which keeps a result near 0 accurate.  Zeroing that term is exact under
    autograd too: torch.max sends the gradient to the same index.
    """
    import torch

    m, top = torch.max(x, dim, keepdim=True)
    shifted = x - m
    rest = torch.exp(shifted).scatter(dim, top, 0.0).sum(dim, keepdim=True)
    return m, shifted, torch.log1p(rest)


def logsumexp(x: Any, dim: int) -> Any | None:
    # torch.logsumexp defines the special rows as our special-values table does.  Its log(sum)
    # has an absolute error of a few ulp, so only results near 0 (a dominant
    # entry near 0, say) lose relative accuracy: those take the log1p form.
    import torch

    value = torch.logsumexp(x, dim, keepdim=True)
    if x.requires_grad and torch.is_grad_enabled() and not bool(torch.isfinite(value).all()):
        # torch's backward is NaN on those rows; the generic path's is not.
        return None
    if not _number(value.abs().amin()) < 1.0:  # NaN rows stay NaN
        return value
    m, _, log_z = _shift_and_log_z(x, dim)
    return torch.where(torch.isinf(m), value, m + log_z)


def cross_entropy_with_grad(p: IndexTargets, *, loss: bool) -> LossAndGrad | None:
    """The gradient (and the loss) from torch's fused kernels, the gradient in place.

    The probabilities are ours (unless autograd records them): they become
    the gradient with no logits-sized temporary.  None where the kernels
    answer None, or for an empty batch.
    """
    import torch

    x, dim = p.logits, p.axis
    if not x.numel() or (x.requires_grad and torch.is_grad_enabled()):
        return None
    value = None
    if loss:
        logp = log_softmax(x, dim)
        if logp is None:
            return None
        value = generic.reduce(p, generic.per_sample_losses(p, logp))
        s = logp.exp_()
    else:
        s = softmax(x, dim)
        if s is None:
            return None
    scale, target_part, smooth_part = generic.gradient_scales(p)
    s *= p.expand(scale)
    s.scatter_add_(dim, p.expand(p.indices), p.expand(-target_part))
    if p.smoothing > 0:
        s -= smooth_part
        s *= p.expand(p.counted.to(s.dtype))
    return value, s
