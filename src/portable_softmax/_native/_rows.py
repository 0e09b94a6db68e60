"""Helpers the backends share: 2-D row views, in-place scatter-add, a threshold."""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

__all__ = ["DOMINANT_LOG_PROB", "from_rows", "to_rows"]

# A log-probability above this at a row's maximum marks a dominant entry,
# whose log-probability is near 0: ``log(sum)`` loses its relative accuracy
# there (PyTorch, JAX), the log1p form keeps it.
DOMINANT_LOG_PROB = -0.5


def to_rows(x: Any, axes: tuple[int, ...], lib: ModuleType) -> tuple[Any, tuple[int, ...]]:
    """A C-contiguous 2-D view (or copy) of ``x`` with the ``axes`` last and flattened.

    Returns the rows and the shape of ``x`` with those axes moved last, which
    :func:`from_rows` needs.  ``lib`` is NumPy or CuPy (the same calls).
    """
    last = tuple(range(x.ndim - len(axes), x.ndim))
    if axes != last:
        x = lib.moveaxis(x, axes, last)
    n = math.prod(x.shape[x.ndim - len(axes) :])
    return lib.ascontiguousarray(x).reshape(-1, n), x.shape


def from_rows(
    out: Any, axes: tuple[int, ...], moved: tuple[int, ...], lib: ModuleType, *, reduce: bool
) -> Any:
    """Undo :func:`to_rows`; with ``reduce`` the reduced axes come back with length 1."""
    ndim, k = len(moved), len(axes)
    out = out.reshape(*moved[: ndim - k], *((1,) * k if reduce else moved[ndim - k :]))
    last = tuple(range(ndim - k, ndim))
    return out if axes == last else lib.moveaxis(out, last, axes)
