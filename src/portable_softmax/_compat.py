"""Namespace plumbing: the only module that imports ``array_api_compat``.

Every helper here carries the ``xp_`` prefix so that a reader of the numerical
modules sees at once what is dispatch and dtype policy rather than math.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

import numpy as np
from array_api_compat import (
    array_namespace,
    is_array_api_obj,
    is_array_api_strict_namespace,
    is_cupy_array,
    is_cupy_namespace,
    is_dask_array,
    is_dask_namespace,
    is_jax_array,
    is_jax_namespace,
    is_lazy_array,
    is_numpy_array,
    is_numpy_namespace,
    is_torch_array,
    is_torch_namespace,
    is_writeable_array,
    to_device,
)
from array_api_compat import (
    device as xp_device,
)

__all__ = [
    "Array",
    "is_array_api_obj",
    "is_array_api_strict_namespace",
    "is_cupy_array",
    "is_cupy_namespace",
    "is_dask_array",
    "is_dask_namespace",
    "is_jax_array",
    "is_jax_namespace",
    "is_lazy_array",
    "is_numpy_array",
    "is_numpy_namespace",
    "is_torch_array",
    "is_torch_namespace",
    "is_writeable_array",
    "to_numpy",
    "xp_as_compute",
    "xp_broadcast_to",
    "xp_check_floating",
    "xp_check_where",
    "xp_default_dtype",
    "xp_device",
    "xp_eager",
    "xp_full_like_reduced",
    "xp_nan_where",
    "xp_inputs",
    "xp_is_empty",
    "xp_namespace",
    "xp_normalize_axes",
    "xp_normalize_axis",
    "xp_quiet",
    "xp_traced",
]

Array = Any  # any Array-API-compatible array

_NAMESPACES: dict[type, ModuleType] = {}


def xp_inputs(x: Any, *others: Any) -> tuple[ModuleType, Array, list[Array | None]]:
    """Return ``(xp, x, others)`` with every input an array of one namespace.

    ``x`` that is not an array (a list, a scalar) is converted with NumPy to
    float64, as the tutorials expect.  ``others`` that are not arrays (and not
    None) are converted with the namespace of ``x``, on its device, keeping
    their own dtype: a list of class indices stays integer.
    """
    if not is_array_api_obj(x):
        x = np.asarray(x, dtype=np.float64)
    kind = type(x)
    if all(o is None or type(o) is kind for o in others):
        if kind is not np.ndarray:
            _refuse_masked(x)
        # One array type: its namespace is cached, because the search costs
        # as much as a small softmax.
        xp = _NAMESPACES.get(kind)
        if xp is None:
            xp = _NAMESPACES[kind] = array_namespace(x)
        return xp, x, list(others)
    _refuse_masked(x, *others)
    arrays = [x, *(o for o in others if o is not None and is_array_api_obj(o))]
    try:
        xp = array_namespace(*arrays)
    except TypeError as exc:
        kinds = sorted({f"{type(a).__module__}.{type(a).__qualname__}" for a in arrays})
        msg = (
            f"all arrays in one call must come from the same array library; got {', '.join(kinds)}"
        )
        raise TypeError(msg) from exc
    dev = xp_device(x)
    converted = [
        o if o is None or is_array_api_obj(o) else xp.asarray(o, device=dev) for o in others
    ]
    return xp, x, converted


def xp_namespace(xp: Any = None) -> ModuleType:
    """The Array API namespace of a library given as a module; NumPy for None.

    ``torch`` or ``numpy`` themselves are not Array API namespaces;
    ``array_api_compat`` wraps them, and this returns the wrapper, the same
    object ``array_namespace`` gives for their arrays.
    """
    module = np if xp is None else xp
    return xp_inputs(module.zeros(0))[0]


def to_numpy(a: Array) -> np.ndarray:
    """A NumPy copy of an array of any backend (from the GPU, computing Dask).

    bfloat16, which NumPy lacks, comes back as float32.
    """
    xp = xp_inputs(a)[0]
    if is_cupy_namespace(xp):
        return a.get()
    if is_torch_namespace(xp):
        import torch

        t = a.detach().cpu()
        return (t.float() if t.dtype == torch.bfloat16 else t).numpy()
    if is_array_api_strict_namespace(xp):
        # Its devices other than the CPU are pretend ones that refuse NumPy.
        a = to_device(a, xp.Device("CPU_DEVICE"))
    if is_jax_namespace(xp) and str(a.dtype) == "bfloat16":
        a = xp.astype(a, xp.float32)
    return np.asarray(a)


def xp_is_empty(x: Array) -> bool:
    """True when ``x`` has a zero-length axis (there is nothing to compute).

    A maximum over nothing is an error in NumPy and Dask, even along a
    non-empty axis, so every function checks this before reducing.
    """
    return any(n == 0 for n in x.shape)


def xp_broadcast_to(a: Array, shape: tuple[int, ...], name: str, xp: ModuleType) -> Array:
    """``broadcast_to(a, shape)``, with an error that names ``a`` and both shapes."""
    try:
        return xp.broadcast_to(a, shape)
    except (ValueError, RuntimeError) as exc:
        msg = (
            f"{name} of shape {tuple(a.shape)} does not broadcast to the shape {tuple(shape)} of x"
        )
        raise ValueError(msg) from exc


def _refuse_masked(*arrays: Any) -> None:
    # A mask is not part of the Array API: NumPy's own functions honour it in
    # some places and not in others, so taking it silently would be wrong.
    if any(isinstance(a, np.ma.MaskedArray) for a in arrays):
        msg = (
            "NumPy masked arrays are not supported: pass the data and the mask as "
            "where=, e.g. softmax(x.data, where=~np.ma.getmaskarray(x))"
        )
        raise TypeError(msg)


def xp_check_where(where: Array, shape: tuple[int, ...], xp: ModuleType) -> Array:
    """``where`` checked to be boolean and broadcast to ``shape``."""
    if not xp.isdtype(where.dtype, "bool"):
        msg = f"where must be a boolean array, got dtype {where.dtype}"
        raise TypeError(msg)
    return xp_broadcast_to(where, shape, "where", xp)


def xp_check_floating(x: Array, xp: ModuleType, name: str = "x") -> None:
    """Raise ``TypeError`` unless ``x`` has a real floating dtype."""
    if (type(x) is np.ndarray and x.dtype.kind == "f") or xp.isdtype(x.dtype, "real floating"):
        return
    if xp.isdtype(x.dtype, "complex floating"):
        kind = "complex"
    elif xp.isdtype(x.dtype, "bool"):
        kind = "boolean"
    elif xp.isdtype(x.dtype, "integral"):
        kind = "integer"
    else:  # pragma: no cover - every standard dtype is one of the above
        kind = "non-floating"
    msg = (
        f"{name} must have a real floating dtype, got {kind} dtype {x.dtype}; "
        f"cast it first, e.g. xp.astype({name}, xp.float32)"
    )
    raise TypeError(msg)


def xp_as_compute(x: Array, xp: ModuleType) -> Array:
    """Return ``x`` in the dtype the math runs in: float16/bfloat16 go to float32."""
    if type(x) is np.ndarray:
        return x.astype(np.float32) if x.dtype == np.float16 else x
    if xp.finfo(x.dtype).bits < 32:
        return xp.astype(x, xp.float32, copy=False)
    return x


def xp_default_dtype(xp: ModuleType, kind: str = "real floating", device: Any = None) -> Any:
    """The namespace's default dtype of ``kind`` ("real floating" or "integral")."""
    key = {"real floating": "real floating", "integral": "integral"}[kind]
    info = xp.__array_namespace_info__()
    return info.default_dtypes(device=device)[key]


def xp_normalize_axis(axis: Any, ndim: int) -> int:
    """Check one axis against ``ndim`` and return it as a non-negative int."""
    try:
        ax = operator.index(axis)
    except TypeError:
        msg = f"axis must be an integer, got {axis!r}"
        raise TypeError(msg) from None
    if not -ndim <= ax < ndim:
        msg = (
            f"axis {ax} is out of bounds for an array with ndim {ndim}: "
            f"it must lie in [{-ndim}, {ndim})"
        )
        raise ValueError(msg)
    return ax % ndim


def xp_normalize_axes(axis: int | Sequence[int], ndim: int) -> tuple[int, ...]:
    """Check an axis or tuple of axes; return sorted non-negative axes."""
    if isinstance(axis, Sequence) and not isinstance(axis, str):
        axes = tuple(xp_normalize_axis(a, ndim) for a in axis)
        if len(set(axes)) != len(axes):
            msg = f"axis {tuple(axis)!r} repeats an axis"
            raise ValueError(msg)
        if not axes:
            msg = "axis must name at least one axis, got an empty tuple"
            raise ValueError(msg)
        return tuple(sorted(axes))
    return (xp_normalize_axis(axis, ndim),)


def xp_eager(*arrays: Array) -> bool:
    """True when the values of all ``arrays`` can be read now.

    Not JAX, not Dask, and not PyTorch tensors that are traced (see
    :func:`xp_traced`).
    """
    return not any(is_lazy_array(a) or (is_torch_array(a) and xp_traced(a)) for a in arrays)


def xp_traced(a: Array) -> bool:
    """True for a PyTorch tensor whose values cannot be read now.

    Meta tensors (a shape, no values), tensors under ``torch.compile``
    (``Tensor.item()`` would break the graph) and under ``torch.func``'s
    transforms (``vmap`` cannot read a batch of values as one).  Such code
    follows the lazy backends' rules: nothing raises from values.
    """
    import torch

    return (
        torch.compiler.is_compiling()
        or a.is_meta
        or torch._C._functorch.is_functorch_wrapped_tensor(a)
    )


def xp_nan_where(cond: Array, values: Array, xp: ModuleType) -> Array:
    """``values`` with NaN where ``cond`` holds, without building a NaN elsewhere.

    ``where(cond, nan, values)`` materialises a NaN operand, which
    ``jax.debug_nans`` reports even when ``cond`` is all False; ``inf - inf``
    at the chosen entries makes the NaN only where it is wanted.
    """
    inf = xp.where(cond, math.inf, xp.zeros_like(values))
    return values + (inf - inf)


def xp_full_like_reduced(
    x: Array, axes: tuple[int, ...], value: float, xp: ModuleType, *, keepdims: bool
) -> Array:
    """An array filled with ``value``, shaped like ``x`` reduced over ``axes``."""
    shape = tuple((1 if keepdims else None) if i in axes else n for i, n in enumerate(x.shape))
    shape = tuple(n for n in shape if n is not None)
    return xp.full(shape, value, dtype=x.dtype, device=xp_device(x))


_NOT_NUMPY_BACKED = frozenset({"torch", "jax", "jaxlib", "cupy"})


def xp_quiet(func: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``func`` with NumPy's invalid/divide/overflow warnings off.

    The special values (docs/math.md, "Special values") are computed on
    purpose through ``inf - inf`` and ``log(0)`` and then replaced, and
    ``x - max`` may overflow to ``-inf`` where ``exp`` gives the right 0;
    NumPy-backed namespaces (numpy,
    array_api_strict) would otherwise warn about arithmetic whose result is
    never returned.
    """

    @functools.wraps(func)
    def quiet(*args: Any, **kwargs: Any) -> Any:
        # Only NumPy-backed input needs it; torch.compile cannot trace
        # np.errstate, and the other libraries do not warn.
        if type(args[0]).__module__.partition(".")[0] in _NOT_NUMPY_BACKED:
            return func(*args, **kwargs)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            return func(*args, **kwargs)

    return quiet
