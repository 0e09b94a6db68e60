"""The backend matrix: one ``xp`` fixture runs every test on every installed backend.

``PORTABLE_SOFTMAX_BACKENDS=numpy,torch`` selects a subset.  Backend names:
numpy, array_api_strict, torch, torch_cuda, jax, jax_jit, dask, cupy.
``jax_jit`` and ``dask`` run the functions tagged with
``array_api_extra.testing.lazy_xp_function`` under ``jax.jit`` and with Dask
computation forbidden.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Any

import numpy as np
import pytest

ALL_BACKENDS = (
    "numpy",
    "array_api_strict",
    "torch",
    "torch_cuda",
    "jax",
    "jax_jit",
    "dask",
    "cupy",
)
_MODULES = {
    "numpy": "numpy",
    "array_api_strict": "array_api_strict",
    "torch": "torch",
    "torch_cuda": "torch",
    "jax": "jax.numpy",
    "jax_jit": "jax.numpy",
    "dask": "dask.array",
    "cupy": "cupy",
}


def _selected() -> tuple[str, ...]:
    env = os.environ.get("PORTABLE_SOFTMAX_BACKENDS", "").strip()
    if not env:
        return ALL_BACKENDS
    names = tuple(n.strip() for n in env.split(",") if n.strip())
    unknown = sorted(set(names) - set(ALL_BACKENDS))
    if unknown:
        msg = f"PORTABLE_SOFTMAX_BACKENDS names unknown backends {unknown}; known: {ALL_BACKENDS}"
        raise pytest.UsageError(msg)
    return names


BACKENDS = _selected()


def pytest_configure(config: pytest.Config) -> None:
    try:
        import jax

        jax.config.update("jax_enable_x64", True)
    except ImportError:
        pass


def _load(name: str) -> ModuleType:
    module = pytest.importorskip(_MODULES[name], reason=f"{name} is not installed")
    if name == "torch_cuda" and not module.cuda.is_available():
        pytest.skip("torch_cuda: no CUDA device on this machine")
    if name == "cupy":
        try:
            ok = module.cuda.runtime.getDeviceCount() > 0
        except Exception:  # noqa: BLE001 - any CUDA runtime failure means no GPU
            ok = False
        if not ok:
            pytest.skip("cupy: no CUDA device on this machine")
    if name in ("numpy", "torch", "torch_cuda", "dask", "cupy"):
        from array_api_compat import array_namespace

        sample = module.asarray(np.zeros(1)) if name != "dask" else module.zeros(1)
        return array_namespace(sample)
    return module


@pytest.fixture(params=BACKENDS)
def library(request: pytest.FixtureRequest) -> str:
    """The backend's name (see ``ALL_BACKENDS``)."""
    return request.param


@pytest.fixture
def xp(library: str, request: pytest.FixtureRequest) -> Any:
    """The array namespace under test (Array-API-compatible).

    ``torch_cuda`` makes CUDA torch's default device for the test, so
    ``xp.asarray`` lands there.
    """
    from array_api_extra.testing import patch_lazy_xp_functions

    namespace = _load(library)
    if library == "torch_cuda":
        import torch

        torch.set_default_device("cuda")
    try:
        if library in ("jax_jit", "dask"):
            with patch_lazy_xp_functions(request, xp=namespace):
                yield namespace
        else:
            yield namespace
    finally:
        if library == "torch_cuda":
            import torch

            torch.set_default_device("cpu")


@pytest.fixture(autouse=True)
def _skip_marked_backends(request: pytest.FixtureRequest) -> None:
    if "library" not in request.fixturenames:
        return
    library = request.getfixturevalue("library")
    for marker in request.node.iter_markers("skip_xp_backend"):
        if marker.args and marker.args[0] == library:
            pytest.skip(marker.kwargs.get("reason", f"not applicable to {library}"))
