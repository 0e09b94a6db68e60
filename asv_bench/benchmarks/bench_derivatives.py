"""softmax_jvp and softmax_jacobian, beside the autodiff a user would reach for.

=================  ===============================================================
backend            reference
=================  ===============================================================
numpy              hand-written with ``scipy.special.softmax``: ``s * (v - Σ s v)``
                   and ``s[..., :, None] * (eye - s[..., None, :])``
torch:cpu/cuda     ``torch.func.jvp`` and ``torch.func.vmap(torch.func.jacrev)``
                   of ``torch.softmax``
jax:cpu/gpu        ``jax.jvp`` and ``jax.vmap(jax.jacfwd)`` of ``jax.nn.softmax``
                   (jitted)
others             none (skipped)
=================  ===============================================================

The full Jacobian has ``rows * n * n`` entries: for (4096, 4096) that is
6.9e10 values (550 GB in float64), for (256, 32000) 2.6e11.  Shapes whose
Jacobian exceeds ``JACOBIAN_MAX_ENTRIES`` are skipped with
``SkipNotImplemented``; the JVP, which is O(n), runs on every shape.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

import portable_softmax as ps

from .common import BACKENDS, DTYPES, SHAPES, SkipNotImplemented, XPBenchmark, random_logits

JACOBIAN_MAX_ENTRIES = 2**24  # 128 MiB in float64


def reference_jvp(lib: str) -> Any:
    if lib == "numpy":
        import scipy.special

        def jvp(x: Any, v: Any) -> Any:
            s = scipy.special.softmax(x, axis=-1)
            sv = s * v
            return sv - s * np.sum(sv, axis=-1, keepdims=True)

        return jvp
    if lib == "torch":
        import torch

        return lambda x, v: torch.func.jvp(lambda a: torch.softmax(a, dim=-1), (x,), (v,))[1]
    if lib == "jax":
        import jax

        return lambda x, v: jax.jvp(lambda a: jax.nn.softmax(a, axis=-1), (x,), (v,))[1]
    return None


def reference_jacobian(lib: str) -> Any:
    if lib == "numpy":
        import scipy.special

        def jac(x: Any) -> Any:
            s = scipy.special.softmax(x, axis=-1)
            eye = np.eye(x.shape[-1], dtype=x.dtype)
            return s[..., :, None] * (eye - s[..., None, :])

        return jac
    if lib == "torch":
        import torch

        f = torch.func.vmap(torch.func.jacrev(lambda a: torch.softmax(a, dim=-1)))
        return f
    if lib == "jax":
        import jax

        return jax.vmap(jax.jacfwd(lambda a: jax.nn.softmax(a, axis=-1)))
    return None


class SoftmaxJvp(XPBenchmark):
    """``ps.softmax_jvp(x, v)``: O(n), the backward pass of softmax."""

    params = [BACKENDS, SHAPES, DTYPES]
    param_names = ["backend", "shape", "dtype"]

    def setup(self, backend: str, shape: tuple[int, int], dtype: str) -> None:
        super().setup(backend)
        self.x = self.backend.asarray(random_logits(shape, dtype))
        self.v = self.backend.asarray(random_logits(shape, dtype, seed=2))
        self.ours = self.prepare(ps.softmax_jvp, self.x, self.v)
        ref = reference_jvp(self.backend.lib)
        self.ref = None if ref is None else self.prepare(ref, self.x, self.v)

    def time_softmax_jvp(self, backend: str, shape: tuple[int, int], dtype: str) -> None:
        self.ours()

    def time_reference(self, backend: str, shape: tuple[int, int], dtype: str) -> None:
        if self.ref is None:
            raise SkipNotImplemented(f"no reference jvp for {backend}")
        self.ref()


class SoftmaxJacobian(XPBenchmark):
    """``ps.softmax_jacobian(x)``; shapes above ``JACOBIAN_MAX_ENTRIES`` skipped."""

    params = [BACKENDS, SHAPES, DTYPES]
    param_names = ["backend", "shape", "dtype"]

    def setup(self, backend: str, shape: tuple[int, int], dtype: str) -> None:
        if shape[0] * shape[1] ** 2 > JACOBIAN_MAX_ENTRIES:
            entries = math.prod((shape[0], shape[1], shape[1]))
            raise SkipNotImplemented(f"Jacobian of {shape} has {entries:.2e} entries")
        super().setup(backend)
        self.x = self.backend.asarray(random_logits(shape, dtype))
        self.ours = self.prepare(ps.softmax_jacobian, self.x)
        ref = reference_jacobian(self.backend.lib)
        self.ref = None if ref is None else self.prepare(ref, self.x)

    def time_softmax_jacobian(self, backend: str, shape: tuple[int, int], dtype: str) -> None:
        self.ours()

    def time_reference(self, backend: str, shape: tuple[int, int], dtype: str) -> None:
        if self.ref is None:
            raise SkipNotImplemented(f"no reference Jacobian for {backend}")
        self.ref()
