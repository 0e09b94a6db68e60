"""Measured fast paths, one backend per array library, behind one contract.

``backend_for(x)`` finds the backend of an array (by its type, cached, never
importing a library the caller did not hand in); every backend offers the
operations of :class:`~portable_softmax._native._base.Backend`, each
answering ``None`` where it has no fast path for the arguments, and
:func:`fast_or_generic` runs the generic Array API code then.
``native_kernels(False)`` (or ``PORTABLE_SOFTMAX_NATIVE=0`` in the
environment) turns every fast path off, so the tests can prove that both
paths agree.

Special values stay those of the special-values table: where a backend's
kernel gives NaN for a row whose maximum is infinite, its fast path checks
for that and answers None.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import TypeVar

import numpy as np

from portable_softmax._compat import (
    Array,
    is_cupy_array,
    is_dask_array,
    is_jax_array,
    is_torch_array,
)
from portable_softmax._native._base import Backend

__all__ = ["Backend", "backend_for", "fast_or_generic", "native_kernels"]

T = TypeVar("T")

# The switch, process-wide.  A plain module attribute, not a ContextVar:
# torch.compile reads it at trace time (and guards on it, recompiling when
# it changes), where ContextVar.get would break the graph.
_enabled = os.environ.get("PORTABLE_SOFTMAX_NATIVE", "1").strip() not in ("0", "false", "no")


@contextlib.contextmanager
def native_kernels(enabled: bool = True) -> Iterator[None]:
    """Turn the backend-specific fast paths on or off within a ``with`` block.

    The fast paths (PyTorch's fused kernels, ``jax.nn`` under a guard,
    CuPy's fused kernels, NumPy's in-place blocked kernels, Dask's one-pass
    tree reductions) are on by default; ``PORTABLE_SOFTMAX_NATIVE=0`` in the
    environment turns them off for the whole process.  Off, every call runs the generic Array API
    implementation.

    Examples
    --------
    >>> import portable_softmax as ps
    >>> with ps.native_kernels(False):
    ...     ps.softmax([0.0, 0.0])
    array([0.5, 0.5])
    """
    global _enabled  # noqa: PLW0603 - the switch is process-wide by design
    before, _enabled = _enabled, bool(enabled)
    try:
        yield
    finally:
        _enabled = before


# Array type -> its backend (None: no fast paths), filled on first sight.
_BY_TYPE: dict[type, Backend | None] = {}


def backend_for(x: Array) -> Backend | None:
    """The backend of ``x``'s library, or None when it has none or they are off."""
    if not _enabled:
        return None
    kind = type(x)
    try:
        return _BY_TYPE[kind]
    except KeyError:
        backend = _BY_TYPE[kind] = _find(x)
        return backend


def _find(x: Array) -> Backend | None:
    # The backend modules are imported on first sight of their arrays: none
    # is needed by a process that never hands us one.
    if type(x) is np.ndarray:  # not a subclass: masked arrays take the generic path
        from portable_softmax._native._numpy import NumpyBackend

        return NumpyBackend()
    if is_torch_array(x):
        from portable_softmax._native._torch import TorchBackend

        return TorchBackend()
    if is_jax_array(x):
        from portable_softmax._native._jax import JaxBackend

        return JaxBackend()
    if is_cupy_array(x):
        from portable_softmax._native._cupy import CupyBackend

        return CupyBackend()
    if is_dask_array(x):
        from portable_softmax._native._dask import DaskBackend

        return DaskBackend()
    return None


def fast_or_generic(x: Array, fast: Callable[[Backend], T | None], generic: Callable[[], T]) -> T:
    """``fast(backend_for(x))`` where that answers, else ``generic()``: the one fallback."""
    backend = backend_for(x)
    if backend is not None:
        out = fast(backend)
        if out is not None:
            return out
    return generic()
