"""The MNIST tutorial run: 1000 SGD steps, batch 100, lr 0.5, zeros, seed 0.

``Train.time_train`` is ``ps.train`` on each backend (the same code for all).
``TrainReference`` holds the two runs a user would compare it with, doing the
same arithmetic on the same batches:

- ``numpy-loop``: a hand-written NumPy loop (batches gathered with fancy
  indexing, stable softmax, ``(softmax - one_hot) / n``, two GEMMs);
- ``torch-nn``: the idiomatic PyTorch loop, ``nn.Linear`` +
  ``torch.optim.SGD`` + ``F.cross_entropy`` + autograd, on the CPU.

Everything here is skipped (``SkipNotImplemented``) until
``portable_softmax.datasets.load_mnist`` and ``portable_softmax.train`` exist.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import portable_softmax as ps

from .common import BACKENDS, SkipNotImplemented, XPBenchmark

STEPS = 1000
BATCH = 100
LR = 0.5
SEED = 0


def load_mnist_numpy() -> tuple[np.ndarray, np.ndarray]:
    """The embedded training split as NumPy float32 / int64, or skip."""
    try:
        from portable_softmax.datasets import load_mnist
    except ImportError:
        raise SkipNotImplemented("portable_softmax.datasets.load_mnist not available") from None
    X, y = load_mnist("train")
    return np.asarray(X, dtype=np.float32), np.asarray(y, dtype=np.int64)


def batches(n: int, steps: int = STEPS, batch: int = BATCH, seed: int = SEED):
    """Index batches as SPEC §5 draws them: a reshuffle per epoch, same seed."""
    rng = np.random.default_rng(seed)
    perm, pos = rng.permutation(n), 0
    for _ in range(steps):
        if pos + batch > n:
            perm, pos = rng.permutation(n), 0
        yield perm[pos : pos + batch]
        pos += batch


def numpy_loop(X: np.ndarray, y: np.ndarray, steps: int = STEPS) -> np.ndarray:
    """Hand-written softmax regression with plain NumPy; returns ``W``.

    The same arithmetic as ``ps.train``: the batch loss is computed and kept
    every step (``ps.train`` records one loss per step), as the torch loop's
    ``F.cross_entropy`` computes it too.
    """
    n_classes = 10
    W = np.zeros((X.shape[1], n_classes), dtype=X.dtype)
    b = np.zeros(n_classes, dtype=X.dtype)
    losses = []
    for idx in batches(X.shape[0], steps):
        Xb, yb = X[idx], y[idx]
        rows = np.arange(len(idx))
        z = Xb @ W + b
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        total = e.sum(axis=1, keepdims=True)
        losses.append((np.log(total).ravel() - z[rows, yb]).mean())
        g = e / total
        g[rows, yb] -= 1
        g /= len(idx)
        W -= LR * (Xb.T @ g)
        b -= LR * g.sum(axis=0)
    return W


def torch_loop(X: Any, y: Any, steps: int = STEPS) -> Any:
    """Idiomatic PyTorch: nn.Linear, optim.SGD, F.cross_entropy, autograd."""
    import torch

    model = torch.nn.Linear(X.shape[1], 10)
    torch.nn.init.zeros_(model.weight)
    torch.nn.init.zeros_(model.bias)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    for idx in batches(X.shape[0], steps):
        index = torch.from_numpy(idx)
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(X[index]), y[index])
        loss.backward()
        opt.step()
    return model.weight


class Train(XPBenchmark):
    """``ps.train(ps.SoftmaxRegression(784, 10, xp=...), X, y)`` per backend."""

    params = [BACKENDS]
    param_names = ["backend"]
    number = 1
    repeat = (1, 3, 60.0)
    warmup_time = 0.0
    timeout = 600

    def setup(self, backend: str) -> None:
        X, y = load_mnist_numpy()
        if not hasattr(ps, "train") or not hasattr(ps, "SoftmaxRegression"):
            raise SkipNotImplemented("portable_softmax.train not available")
        super().setup(backend)
        be = self.backend
        self.X, self.y = be.asarray(X), be.asarray(y)
        if be.lib == "dask":
            self.X, self.y = self.X.persist(), self.y.persist()

        def run(steps: int = STEPS) -> Any:
            model = ps.SoftmaxRegression(784, 10, xp=be.xp, device=be.device)
            ps.train(model, self.X, self.y, batch_size=BATCH, steps=steps, seed=SEED)
            # Done means the parameters exist: compute / block / synchronise on them.
            return be.to_numpy(model.W)

        self.run = run
        run(steps=5)  # warm-up: JAX compilation, torch initialisation

    def time_train(self, backend: str) -> None:
        self.run()


class TrainReference:
    """The same 1000 steps, hand-written in NumPy and idiomatic in PyTorch."""

    params = [["numpy-loop", "torch-nn"]]
    param_names = ["reference"]
    number = 1
    repeat = (1, 3, 60.0)
    warmup_time = 0.0
    timeout = 600

    def setup(self, reference: str) -> None:
        X, y = load_mnist_numpy()
        if reference == "numpy-loop":
            self.run = lambda: numpy_loop(X, y)
        else:
            try:
                import torch
            except ImportError:
                raise SkipNotImplemented("torch is not installed") from None
            Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
            self.run = lambda: torch_loop(Xt, yt)

    def time_train(self, reference: str) -> None:
        self.run()
