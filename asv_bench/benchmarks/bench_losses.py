"""cross_entropy and its gradient with class-index targets, beside the references.

References (same parameters, same run):

=================  ===============================================================
backend            reference
=================  ===============================================================
numpy              hand-written NumPy/SciPy: ``-log_softmax[arange(n), y].mean()``
                   and ``(softmax - one_hot) / n`` with fancy indexing
torch:cpu/cuda     ``torch.nn.functional.cross_entropy``; for the gradient its
                   forward plus the autograd ``backward()``
jax:cpu/gpu        ``-take_along_axis(jax.nn.log_softmax(z), y).mean()``, and
                   ``jax.grad`` of it (jitted)
others             none (skipped)
=================  ===============================================================

``peakmem_*`` record the peak resident memory of the loss, which shows that
class-index targets never build a one-hot array.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import portable_softmax as ps

from .common import (
    BACKENDS,
    DTYPES,
    SHAPES,
    SkipNotImplemented,
    XPBenchmark,
    random_labels,
    random_logits,
)


def reference_loss(lib: str) -> Any:
    """The idiomatic mean cross-entropy of the backend, or None."""
    if lib == "numpy":
        import scipy.special

        def loss(z: Any, y: Any) -> Any:
            logp = scipy.special.log_softmax(z, axis=-1)
            return -np.mean(logp[np.arange(z.shape[0]), y])

        return loss
    if lib == "torch":
        import torch.nn.functional as F

        return F.cross_entropy
    if lib == "jax":
        import jax
        import jax.numpy as jnp

        def loss(z: Any, y: Any) -> Any:
            logp = jax.nn.log_softmax(z, axis=-1)
            return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=-1))

        return loss
    return None


def reference_grad(lib: str) -> Any:
    """The idiomatic gradient of the mean cross-entropy, or None."""
    if lib == "numpy":
        import scipy.special

        def grad(z: Any, y: Any) -> Any:
            g = scipy.special.softmax(z, axis=-1)
            g[np.arange(z.shape[0]), y] -= 1
            return g / z.shape[0]

        return grad
    if lib == "torch":
        import torch.nn.functional as F

        def grad(z: Any, y: Any) -> Any:
            z = z.detach().requires_grad_()
            F.cross_entropy(z, y).backward()
            return z.grad

        return grad
    if lib == "jax":
        import jax

        return jax.grad(reference_loss("jax"))
    return None


class _Loss(XPBenchmark):
    params = [BACKENDS, SHAPES, DTYPES]
    param_names = ["backend", "shape", "dtype"]

    def setup(self, backend: str, shape: tuple[int, int], dtype: str) -> None:
        super().setup(backend)
        self.z = self.backend.asarray(random_logits(shape, dtype))
        self.y = self.backend.asarray(random_labels(shape[0], shape[1]))

    def _reference(self, factory: Any) -> Any:
        ref = factory(self.backend.lib)
        return None if ref is None else self.prepare(ref, self.z, self.y)


class CrossEntropy(_Loss):
    """``ps.cross_entropy(logits, labels)`` (mean) vs the backend's own loss."""

    def setup(self, backend: str, shape: tuple[int, int], dtype: str) -> None:
        super().setup(backend, shape, dtype)
        self.ours = self.prepare(ps.cross_entropy, self.z, self.y)
        self.ref = self._reference(reference_loss)

    def time_cross_entropy(self, backend: str, shape: tuple[int, int], dtype: str) -> None:
        self.ours()

    def time_reference(self, backend: str, shape: tuple[int, int], dtype: str) -> None:
        if self.ref is None:
            raise SkipNotImplemented(f"no reference loss for {backend}")
        self.ref()

    def peakmem_cross_entropy(self, backend: str, shape: tuple[int, int], dtype: str) -> None:
        self.ours()

    def peakmem_reference(self, backend: str, shape: tuple[int, int], dtype: str) -> None:
        if self.ref is None:
            raise SkipNotImplemented(f"no reference loss for {backend}")
        self.ref()


class CrossEntropyGrad(_Loss):
    """``ps.cross_entropy_grad`` (and the fused ``cross_entropy_with_grad``)."""

    def setup(self, backend: str, shape: tuple[int, int], dtype: str) -> None:
        super().setup(backend, shape, dtype)
        self.ours = self.prepare(ps.cross_entropy_grad, self.z, self.y)
        self.fused = self.prepare(ps.cross_entropy_with_grad, self.z, self.y)
        self.ref = self._reference(reference_grad)

    def time_cross_entropy_grad(self, backend: str, shape: tuple[int, int], dtype: str) -> None:
        self.ours()

    def time_cross_entropy_with_grad(
        self, backend: str, shape: tuple[int, int], dtype: str
    ) -> None:
        self.fused()

    def time_reference(self, backend: str, shape: tuple[int, int], dtype: str) -> None:
        """Torch: forward + ``backward()``; the loss comes with it, as in the fused call."""
        if self.ref is None:
            raise SkipNotImplemented(f"no reference gradient for {backend}")
        self.ref()
