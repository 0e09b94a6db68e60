"""Shared machinery of the benchmark suite: backends, synchronisation, data.

Modelled on SciPy's ``benchmarks/common.py::XPBenchmark``: every benchmark
class takes ``backend`` as its first asv parameter, skips backends that are
not installed (or have no device) with ``SkipNotImplemented``, jits and warms
up JAX functions in ``setup``, and synchronises around every timed call:

- torch CUDA / CuPy: the device is synchronised after the call, otherwise the
  timing measures only the kernel launch;
- JAX: ``jax.block_until_ready`` on the result (JAX dispatches
  asynchronously on every device, CPU included);
- Dask: the result is computed (``dask.compute``), otherwise the timing
  measures only building the task graph.

The backend names double as asv parameter values::

    numpy, array_api_strict, torch:cpu, torch:cuda, cupy, jax:cpu, jax:gpu, dask

``PORTABLE_SOFTMAX_BACKENDS=numpy,torch:cpu`` restricts the suite to a subset
(the others are skipped), which keeps a local ``asv run`` short.

``PORTABLE_SOFTMAX_BENCH_THREADS=1`` pins PyTorch's intra-op thread pool.  On a
small shared machine (2 cores, other jobs running) PyTorch's default pool of
one thread per core makes a (100, 10) ``torch.softmax`` take milliseconds
instead of microseconds whenever a core is busy elsewhere; pinning it measures
the kernels rather than the scheduler.  ``compare.py`` sets it to 1 by default.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import numpy as np

try:
    from asv_runner.benchmarks.mark import SkipNotImplemented
except ImportError:  # pragma: no cover - older asv

    class SkipNotImplemented(NotImplementedError):  # type: ignore[no-redef]
        """Raised to skip a benchmark for one parameter combination."""


BACKENDS = [
    "numpy",
    "array_api_strict",
    "torch:cpu",
    "torch:cuda",
    "cupy",
    "jax:cpu",
    "jax:gpu",
    "dask",
]

SHAPES = [(100, 10), (10000, 10), (4096, 4096), (256, 32000)]
DTYPES = ["float32", "float64"]


def _selected(name: str) -> bool:
    wanted = os.environ.get("PORTABLE_SOFTMAX_BACKENDS")
    if not wanted:
        return True
    names = {w.strip() for w in wanted.split(",") if w.strip()}
    return name in names or name.split(":")[0] in names


class Backend:
    """One array library on one device, with the calls a benchmark needs.

    Attributes
    ----------
    name : str
        The asv parameter value, e.g. ``"torch:cuda"``.
    xp : module
        The array namespace (``array_api_compat``-wrapped where needed).
    lib : str
        ``"numpy"``, ``"array_api_strict"``, ``"torch"``, ``"cupy"``,
        ``"jax"`` or ``"dask"``.
    """

    def __init__(self, name: str) -> None:
        if not _selected(name):
            raise SkipNotImplemented(f"{name} not in PORTABLE_SOFTMAX_BACKENDS")
        self.name = name
        self.lib, _, self.device_kind = name.partition(":")
        self._sync: Callable[[], None] = lambda: None
        self.device: Any = None
        try:
            getattr(self, f"_init_{self.lib}")()
        except ImportError as exc:
            raise SkipNotImplemented(f"{name} is not installed: {exc}") from None

    # -- construction per library -------------------------------------------------
    def _init_numpy(self) -> None:
        self.xp = np

    def _init_array_api_strict(self) -> None:
        import array_api_strict

        self.xp = array_api_strict

    def _init_torch(self) -> None:
        import torch

        self.torch = torch
        threads = os.environ.get("PORTABLE_SOFTMAX_BENCH_THREADS")
        if threads:
            torch.set_num_threads(int(threads))
        if self.device_kind == "cuda":
            if not torch.cuda.is_available():
                raise SkipNotImplemented("torch:cuda: no CUDA device")
            self._sync = torch.cuda.synchronize
        self.device = torch.device(self.device_kind)
        self.xp = torch

    def _init_cupy(self) -> None:
        import cupy

        try:
            if cupy.cuda.runtime.getDeviceCount() < 1:
                raise SkipNotImplemented("cupy: no CUDA device")
        except cupy.cuda.runtime.CUDARuntimeError:
            raise SkipNotImplemented("cupy: no CUDA device") from None
        self.xp = cupy
        self._sync = cupy.cuda.get_current_stream().synchronize

    def _init_jax(self) -> None:
        import jax

        jax.config.update("jax_enable_x64", True)  # float64 benchmarks, as SciPy does
        try:
            devices = jax.devices(self.device_kind)
        except RuntimeError:
            raise SkipNotImplemented(f"jax:{self.device_kind}: no such device") from None
        self.jax = jax
        self.device = devices[0]
        self.xp = jax.numpy

    def _init_dask(self) -> None:
        import dask
        import dask.array as da

        self.dask = dask
        self.xp = da

    # -- data ------------------------------------------------------------------------
    def asarray(self, a: np.ndarray) -> Any:
        """Move a NumPy array to this backend (and device), keeping its dtype."""
        if self.lib == "numpy":
            return a
        if self.lib == "array_api_strict":
            return self.xp.asarray(a)
        if self.lib == "torch":
            return self.torch.asarray(a, device=self.device)
        if self.lib == "cupy":
            return self.xp.asarray(a)
        if self.lib == "jax":
            return self.jax.device_put(a, self.device)
        # Dask: a few row chunks, the class axis (last) whole, as a user would.
        rows = max(1, a.shape[0] // 4) if a.ndim else ()
        chunks = (rows,) + (-1,) * (a.ndim - 1) if a.ndim else ()
        return self.xp.from_array(a, chunks=chunks)

    def to_numpy(self, a: Any) -> np.ndarray:
        """The values of a result as NumPy (computing, copying to host)."""
        if self.lib == "dask":
            a = a.compute()
        if self.lib == "torch":
            return a.detach().cpu().numpy()
        if self.lib == "cupy":
            return a.get()
        return np.asarray(a)

    # -- timed calls -----------------------------------------------------------------
    def prepare(self, func: Callable[..., Any], *, jit: bool = True) -> Callable[..., Any]:
        """Wrap ``func`` so that one call includes all the work it causes.

        JAX functions are jitted (``jit=False`` leaves them eager), Dask results
        computed, GPU streams synchronised.  Call the result once in ``setup``
        to warm it up (JAX compiles on the first call).
        """
        if self.lib == "jax":
            f = self.jax.jit(func) if jit else func
            return lambda *args: self.jax.block_until_ready(f(*args))
        if self.lib == "dask":
            return lambda *args: self.dask.compute(func(*args))
        if self.lib in ("torch", "cupy") and self.device_kind != "cpu":

            def synced(*args: Any) -> Any:
                out = func(*args)
                self._sync()
                return out

            return synced
        return func

    def synchronize(self) -> None:
        """Wait for the device (a no-op on the CPU backends)."""
        self._sync()


@functools.cache
def get_backend(name: str) -> Backend:
    """The :class:`Backend` called ``name``; raises ``SkipNotImplemented``."""
    return Backend(name)


def random_logits(shape: tuple[int, ...], dtype: str, seed: int = 0) -> np.ndarray:
    """Normal logits with scale 3, in ``dtype``, from a fixed seed."""
    rng = np.random.default_rng(seed)
    return (3.0 * rng.standard_normal(shape)).astype(dtype)


def random_labels(n: int, n_classes: int, seed: int = 1) -> np.ndarray:
    """Integer class indices in ``[0, n_classes)``."""
    return np.random.default_rng(seed).integers(0, n_classes, size=n, dtype=np.int64)


class XPBenchmark:
    """Base class: ``backend`` is the first asv parameter of every subclass.

    Subclasses extend ``params``/``param_names`` and call
    ``super().setup(backend)`` first in their ``setup``; then ``self.backend``,
    ``self.xp`` and ``self.prepare`` are available.
    """

    params: list[Any] = [BACKENDS]
    param_names: list[str] = ["backend"]
    timeout = 300

    def setup(self, backend: str, *args: Any) -> None:
        self.backend = get_backend(backend)
        self.xp = self.backend.xp

    def prepare(self, func: Callable[..., Any], *args: Any, jit: bool = True) -> Callable[[], Any]:
        """A zero-argument timed call of ``func(*args)``, warmed up once."""
        f = self.backend.prepare(func, jit=jit)
        call = functools.partial(f, *args)
        call()  # warm-up: JAX compilation, torch/cuBLAS initialisation, caches
        return call
