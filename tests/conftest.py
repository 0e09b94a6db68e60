"""The backend matrix: one ``xp`` fixture runs every test on every installed backend.

``PORTABLE_SOFTMAX_BACKENDS=numpy,torch`` selects a subset; the names and
what the suite knows of each are in ``backends.REGISTRY``.  ``jax_jit`` and
``dask`` run the functions tagged with
``array_api_extra.testing.lazy_xp_function`` under ``jax.jit`` and with Dask
computation forbidden; ``dask_distributed`` does the same and computes on a
``dask.distributed`` LocalCluster (in-process, one per session).  Backends
that are not installed, or need a GPU this machine lacks, are not generated
at all: the header of the run names them.

Parameters generated here, jointly with ``library`` (so that nothing is
generated only to be skipped):

``native``
    True and False (fast paths on and off) on backends that have fast
    paths; only True elsewhere, where both would run the same code.
``case``
    The cases of the ``case_grid(cases, stride=k)`` marker (the loss option
    grid ``cases.CASES`` by default); on the backends that compile or build
    a graph per call every ``grid_stride``-th of them (every ``k``-th where
    the marker says).
"""

from __future__ import annotations

import importlib.util
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from backends import REGISTRY, check_names, selected


def _unavailable(name: str) -> str | None:
    """Why backend ``name`` cannot run here, or None when it can."""
    info = REGISTRY[name]
    if importlib.util.find_spec(info.module.split(".")[0]) is None:
        return "not installed"
    if name == "dask_distributed" and importlib.util.find_spec("distributed") is None:
        return "distributed not installed"
    if not info.gpu:
        return None
    if info.module == "torch":
        import torch

        return None if torch.cuda.is_available() else "no CUDA device"
    try:
        import cupy

        return None if cupy.cuda.runtime.getDeviceCount() > 0 else "no CUDA device"
    except Exception:  # noqa: BLE001 - any CUDA runtime failure means no GPU
        return "no CUDA device"


_REASONS = {name: _unavailable(name) for name in selected()}
BACKENDS = tuple(name for name, why in _REASONS.items() if why is None)


def pytest_report_header(config: pytest.Config) -> list[str]:
    lines = [f"portable_softmax backends: {', '.join(BACKENDS)}"]
    lines += [f"  not run: {name} ({why})" for name, why in _REASONS.items() if why]
    return lines


def pytest_configure(config: pytest.Config) -> None:
    try:
        import jax

        jax.config.update("jax_enable_x64", True)
    except ImportError:
        pass


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    names = metafunc.fixturenames
    if "library" not in names:
        return
    axes: list[tuple[str, Any]] = []
    if "native" in names:
        axes.append(("native", lambda lib: (True, False) if REGISTRY[lib].native else (True,)))
    if "case" in names and not _parametrized(metafunc, "case"):
        from cases import CASES

        marker = metafunc.definition.get_closest_marker("case_grid")
        grid = CASES if marker is None else marker.args[0]
        sparse = None if marker is None else marker.kwargs.get("stride")

        def cases(lib: str) -> list[Any]:
            stride = REGISTRY[lib].grid_stride
            return grid[:: sparse or stride] if stride > 1 else grid

        axes.append(("case", cases))
    rows: list[tuple[Any, ...]] = [(lib,) for lib in BACKENDS]
    for _, values in axes:
        rows = [(*row, v) for row in rows for v in values(row[0])]
    argnames = ["library", *(name for name, _ in axes)]
    ids = ["-".join(_id(v) for v in row) for row in rows]
    metafunc.parametrize(argnames, rows, ids=ids)


def _parametrized(metafunc: pytest.Metafunc, name: str) -> bool:
    """True when the test parametrizes ``name`` itself."""
    for marker in metafunc.definition.iter_markers("parametrize"):
        argnames = marker.args[0]
        if isinstance(argnames, str):
            argnames = [n.strip() for n in argnames.split(",")]
        if name in argnames:
            return True
    return False


def _id(value: Any) -> str:
    if isinstance(value, bool):
        return "native" if value else "generic"
    return getattr(value, "id", str(value))


def _load(name: str) -> ModuleType:
    module = pytest.importorskip(REGISTRY[name].module)
    if name in ("numpy", "torch", "torch_cuda", "dask", "dask_distributed", "cupy"):
        from array_api_compat import array_namespace

        sample = module.zeros(1) if name.startswith("dask") else module.asarray(np.zeros(1))
        return array_namespace(sample)
    return module


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
        if library == "dask_distributed":
            import dask

            client = request.getfixturevalue("dask_client")
            with dask.config.set(scheduler=client), patch_lazy_xp_functions(request, xp=namespace):
                yield namespace
        elif library in ("jax_jit", "dask"):
            with patch_lazy_xp_functions(request, xp=namespace):
                yield namespace
        else:
            yield namespace
    finally:
        if library == "torch_cuda":
            import torch

            torch.set_default_device("cpu")


@pytest.fixture(scope="session")
def dask_client() -> Any:
    """A ``dask.distributed`` client of an in-process LocalCluster, shared by the session.

    Not the default client: only the ``dask_distributed`` backend (and tests
    that ask for this fixture) compute on it.
    """
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster, set_as_default=False) as client,
    ):
        yield client


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for marker in item.iter_markers("skip_xp_backend"):
            check_names(marker.args[:1], f"skip_xp_backend on {item.nodeid}")


@pytest.fixture(autouse=True)
def _skip_marked_backends(request: pytest.FixtureRequest) -> None:
    if "library" not in request.fixturenames:
        return
    library = request.getfixturevalue("library")
    for marker in request.node.iter_markers("skip_xp_backend"):
        if marker.args[0] == library:
            pytest.skip(marker.kwargs.get("reason", f"not applicable to {library}"))
