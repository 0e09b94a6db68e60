"""The one registry of backend facts behind every fixture, marker and skip of the suite.

``PORTABLE_SOFTMAX_BACKENDS=numpy,torch`` selects a subset of ``REGISTRY``.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import pytest


class BackendInfo(NamedTuple):
    """What the tests need to know about one entry of the ``xp`` matrix."""

    name: str
    module: str  # what the xp fixture imports
    lazy: bool  # values cannot be read (jit tracing, Dask): no value-dependent errors
    native: bool  # has fast paths, so the generic path is a separate run
    gpu: bool  # needs a CUDA device
    # Every how-many'th case of the large option grids runs here: jit compiles
    # once per shape and static arguments, and Dask builds a graph per call.
    # The strides are coprime with the factors' sizes (2, 3 and 6), so every
    # value of every factor is still visited.
    grid_stride: int = 1


REGISTRY = {
    b.name: b
    for b in (
        BackendInfo("numpy", "numpy", lazy=False, native=True, gpu=False),
        BackendInfo("array_api_strict", "array_api_strict", lazy=False, native=False, gpu=False),
        BackendInfo("torch", "torch", lazy=False, native=True, gpu=False),
        BackendInfo("torch_cuda", "torch", lazy=False, native=True, gpu=True),
        BackendInfo("jax", "jax.numpy", lazy=True, native=True, gpu=False, grid_stride=37),
        BackendInfo("jax_jit", "jax.numpy", lazy=True, native=True, gpu=False, grid_stride=37),
        BackendInfo("dask", "dask.array", lazy=True, native=True, gpu=False, grid_stride=7),
        # The same arrays, computed on a dask.distributed LocalCluster (in-process).
        BackendInfo(
            "dask_distributed", "dask.array", lazy=True, native=True, gpu=False, grid_stride=29
        ),
        BackendInfo("cupy", "cupy", lazy=False, native=True, gpu=True),
    )
}


def selected() -> tuple[str, ...]:
    """The backends this run covers: all, or those ``PORTABLE_SOFTMAX_BACKENDS`` names."""
    env = os.environ.get("PORTABLE_SOFTMAX_BACKENDS", "").strip()
    if not env:
        return tuple(REGISTRY)
    names = tuple(n.strip() for n in env.split(",") if n.strip())
    check_names(names, "PORTABLE_SOFTMAX_BACKENDS")
    return names


def check_names(names: tuple[str, ...], where: str) -> None:
    """An unknown backend name is a usage error, never silently ignored."""
    unknown = sorted(set(names) - set(REGISTRY))
    if unknown:
        msg = f"{where} names unknown backends {unknown}; known: {tuple(REGISTRY)}"
        raise pytest.UsageError(msg)


def is_lazy(library: str) -> bool:
    return REGISTRY[library].lazy
