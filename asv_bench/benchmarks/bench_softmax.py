"""softmax, log_softmax and logsumexp: ours on every backend, beside the reference.

Each class times ``ours`` (``time_<function>``) and ``time_reference`` with the
same parameters, so ``compare.py`` (or ``asv compare``) reads the ratio from a
single run.  The reference is what a user of that backend would call instead:

=================  ==========================================================
backend            reference
=================  ==========================================================
numpy              ``scipy.special.softmax`` / ``log_softmax`` / ``logsumexp``
torch:cpu/cuda     ``torch.softmax`` / ``torch.log_softmax`` / ``torch.logsumexp``
jax:cpu/gpu        ``jax.nn.softmax`` / ``log_softmax`` / ``logsumexp`` (jitted)
cupy               ``cupyx.scipy.special.softmax`` / ...
array_api_strict   none (skipped)
dask               none (skipped)
=================  ==========================================================
"""

from __future__ import annotations

from typing import Any

import portable_softmax as ps

from .common import BACKENDS, DTYPES, SHAPES, SkipNotImplemented, XPBenchmark, random_logits


def reference(kind: str, lib: str) -> Any:
    """The backend's own function for ``kind``, or None where there is none."""
    if lib == "numpy":
        import scipy.special

        return {
            "softmax": lambda x: scipy.special.softmax(x, axis=-1),
            "log_softmax": lambda x: scipy.special.log_softmax(x, axis=-1),
            "logsumexp": lambda x: scipy.special.logsumexp(x, axis=-1),
        }[kind]
    if lib == "torch":
        import torch

        return {
            "softmax": lambda x: torch.softmax(x, dim=-1),
            "log_softmax": lambda x: torch.log_softmax(x, dim=-1),
            "logsumexp": lambda x: torch.logsumexp(x, dim=-1),
        }[kind]
    if lib == "jax":
        import jax

        return {
            "softmax": lambda x: jax.nn.softmax(x, axis=-1),
            "log_softmax": lambda x: jax.nn.log_softmax(x, axis=-1),
            "logsumexp": lambda x: jax.nn.logsumexp(x, axis=-1),
        }[kind]
    if lib == "cupy":
        import cupyx.scipy.special as cs

        return {
            "softmax": lambda x: cs.softmax(x, axis=-1),
            "log_softmax": lambda x: cs.log_softmax(x, axis=-1),
            "logsumexp": lambda x: cs.logsumexp(x, axis=-1),
        }[kind]
    return None


class _Normalizer(XPBenchmark):
    """Shared body: ``kind`` names the function under test."""

    kind = ""
    params = [BACKENDS, SHAPES, DTYPES]
    param_names = ["backend", "shape", "dtype"]

    def setup(self, backend: str, shape: tuple[int, int], dtype: str) -> None:
        super().setup(backend)
        self.x = self.backend.asarray(random_logits(shape, dtype))
        ours = getattr(ps, self.kind)
        self.ours = self.prepare(lambda x: ours(x, axis=-1), self.x)
        ref = reference(self.kind, self.backend.lib)
        self.ref = None if ref is None else self.prepare(ref, self.x)

    def time_reference(self, backend: str, shape: tuple[int, int], dtype: str) -> None:
        if self.ref is None:
            raise SkipNotImplemented(f"no reference {self.kind} for {backend}")
        self.ref()


class Softmax(_Normalizer):
    """``ps.softmax(x, axis=-1)``."""

    kind = "softmax"

    def time_softmax(self, backend: str, shape: tuple[int, int], dtype: str) -> None:
        self.ours()


class LogSoftmax(_Normalizer):
    """``ps.log_softmax(x, axis=-1)``."""

    kind = "log_softmax"

    def time_log_softmax(self, backend: str, shape: tuple[int, int], dtype: str) -> None:
        self.ours()


class LogSumExp(_Normalizer):
    """``ps.logsumexp(x, axis=-1)``."""

    kind = "logsumexp"

    def time_logsumexp(self, backend: str, shape: tuple[int, int], dtype: str) -> None:
        self.ours()
