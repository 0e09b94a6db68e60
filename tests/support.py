"""Assertions shared by the test modules (imported as ``support``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from portable_softmax._compat import to_numpy

__all__ = ["assert_close", "assert_namespace_dtype", "to_numpy"]


def assert_namespace_dtype(actual: Any, xp: Any, dtype: Any, shape: tuple | None = None) -> None:
    """The result is an array of ``xp`` with ``dtype`` (and ``shape``)."""
    from array_api_compat import array_namespace

    got = array_namespace(actual)
    assert got.__name__.split(".")[-1] == xp.__name__.split(".")[-1], (got, xp)
    assert actual.dtype == dtype, (actual.dtype, dtype)
    if shape is not None:
        assert tuple(actual.shape) == tuple(shape), (actual.shape, shape)


def assert_close(
    actual: Any,
    desired: Any,
    *,
    xp: Any,
    dtype: Any = None,
    rtol: float = 1e-12,
    atol: float = 0.0,
) -> None:
    """Namespace, dtype and shape of ``actual``, then values against ``desired``.

    ``desired`` is anything NumPy reads; NaN matches NaN and infinities must
    match exactly.
    """
    desired = np.asarray(desired)
    assert_namespace_dtype(actual, xp, actual.dtype if dtype is None else dtype, desired.shape)
    np.testing.assert_allclose(
        to_numpy(actual).astype(np.float64), desired.astype(np.float64), rtol=rtol, atol=atol
    )
