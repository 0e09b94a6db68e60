"""linear_cross_entropy forward + backward beside the materialised logits and torch's own.

Every call computes the mean loss of ``x @ W.T`` (``x`` of shape ``(N, H)``,
``W`` of ``(V, H)``, class-index targets) and its gradients with respect to
``x`` and ``W``:

===================  ==========================================================
method               what runs
===================  ==========================================================
fused                ``ps.linear_cross_entropy`` with ``loss.backward()`` on
                     PyTorch, ``jax.jit(jax.value_and_grad(...))`` on JAX,
                     ``ps.linear_cross_entropy_with_grad`` elsewhere
materialised         the logits formed: ``F.cross_entropy(x @ W.T, t)`` and
                     ``backward()``; ``jax.value_and_grad`` of the optax-style
                     loss; on NumPy the hand-written closed form (logits,
                     softmax, ``G @ W``, ``G.T @ x``)
torch_chunked        ``F.linear_cross_entropy(..., options=LinearCrossEntropyOptions())``
torch_reference      ``F.linear_cross_entropy(..., options=None)`` (materialises)
===================  ==========================================================

``peakmem_*`` record the peak resident memory, the logits' ``N x V`` floats
(500 MiB at the issue's shape) against about one block of them.  The large
shape takes seconds per call on a CPU; ``asv run --quick`` runs each once.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import portable_softmax as ps

from .common import SkipNotImplemented, XPBenchmark

BACKENDS = ["numpy", "torch:cpu", "torch:cuda", "jax:cpu", "jax:gpu", "cupy"]
#: (N, H, V): a small head and the issue's language-model head.
SHAPES = [(1024, 256, 8192), (4096, 512, 32000)]
METHODS = ["fused", "materialised", "torch_chunked", "torch_reference"]


def _numpy_materialised(x: np.ndarray, w: np.ndarray, t: np.ndarray) -> Any:
    n = x.shape[0]
    z = x @ w.T
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    s = z.sum(axis=1, keepdims=True)
    loss = np.mean(np.log(s[:, 0]) - np.log(z[np.arange(n), t]))
    z /= s
    z[np.arange(n), t] -= 1.0
    z /= n
    return loss, z @ w, z.T @ x


def _torch_step(kind: str) -> Any:
    import torch
    import torch.nn.functional as F

    def loss_of(x: Any, w: Any, t: Any) -> Any:
        if kind == "fused":
            return ps.linear_cross_entropy(x, w, t)
        if kind == "materialised":
            return F.cross_entropy(x @ w.T, t)
        options = torch.nn.LinearCrossEntropyOptions() if kind == "torch_chunked" else None
        return F.linear_cross_entropy(x, w, t, options=options)

    def step(x: Any, w: Any, t: Any) -> Any:
        x, w = x.detach().requires_grad_(), w.detach().requires_grad_()
        loss = loss_of(x, w, t)
        loss.backward()
        return loss, x.grad, w.grad

    return step


def _jax_step(kind: str) -> Any:
    import jax
    import jax.numpy as jnp

    def materialised(x: Any, w: Any, t: Any) -> Any:
        logp = jax.nn.log_softmax(x @ w.T, axis=-1)
        return -jnp.mean(jnp.take_along_axis(logp, t[:, None], axis=-1))

    loss = (lambda x, w, t: ps.linear_cross_entropy(x, w, t)) if kind == "fused" else materialised
    return jax.value_and_grad(loss, argnums=(0, 1))


class LinearCrossEntropy(XPBenchmark):
    """Loss and gradients of a language-model head, ``float32``."""

    params = [BACKENDS, SHAPES, METHODS]
    param_names = ["backend", "shape", "method"]
    timeout = 600
    number = 1
    repeat = (1, 3, 60.0)

    def setup(self, backend: str, shape: tuple[int, int, int], method: str) -> None:
        super().setup(backend)
        lib = self.backend.lib
        if method.startswith("torch_") and lib != "torch":
            raise SkipNotImplemented("torch's F.linear_cross_entropy is PyTorch-only")
        n, h, v = shape
        rng = np.random.default_rng(0)
        x = (rng.standard_normal((n, h)) / np.sqrt(h)).astype(np.float32)
        w = (0.05 * rng.standard_normal((v, h))).astype(np.float32)
        t = rng.integers(0, v, size=n)
        args = tuple(self.backend.asarray(a) for a in (x, w, t))
        if lib == "torch":
            step = _torch_step(method)
        elif lib == "jax":
            step = _jax_step(method)
        elif method == "fused":
            step = ps.linear_cross_entropy_with_grad
        elif lib == "numpy":
            step = _numpy_materialised
        else:
            raise SkipNotImplemented(f"no materialised reference for {backend}")
        self.call = self.prepare(step, *args)

    def time_forward_backward(self, backend: str, shape: Any, method: str) -> None:
        self.call()

    def peakmem_forward_backward(self, backend: str, shape: Any, method: str) -> None:
        self.call()
