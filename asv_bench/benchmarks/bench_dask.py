"""Dask at scale (SPEC §10): one tree reduction, and training streamed from Dask arrays.

``ChunkedReductions`` times ``ps.logsumexp`` and ``ps.cross_entropy`` beside
``x.sum(axis=-1)`` -- the physical floor: one read -- and
``da.exp(x).sum(axis=-1)`` (one read and one exp per element) on the same
lazily generated float32 array chunked along both axes, on Dask's threaded
scheduler.  Each timed call computes the result; generation is part of every
measurement, as it is of a reduction over data read from disk.
``track_tasks`` records the graph sizes (O(number of blocks)).

``StreamingTrain`` is the MNIST tutorial run (1000 steps, batch 100) into a
NumPy model, from in-memory NumPy arrays and from Dask arrays of 10,000-row
blocks streamed by ``ps.train``.

``python asv_bench/dask_scale.py`` runs the same measurements as a script,
plus the out-of-core run (32 GiB, peak RSS) that is too long for asv.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import portable_softmax as ps

from .common import SkipNotImplemented


def _dask() -> Any:
    try:
        import dask.array as da
    except ImportError:
        raise SkipNotImplemented("dask is not installed") from None
    return da


class ChunkedReductions:
    """Reductions over a lazily generated (n, n) float32 array in (n/10, n/10) chunks."""

    params = [[4000, 20000], ["sum", "exp_sum", "logsumexp", "cross_entropy"]]
    param_names = ["n", "function"]
    number = 1
    repeat = (1, 3, 120.0)
    warmup_time = 0.0
    timeout = 900

    def setup(self, n: int, function: str) -> None:
        da = _dask()
        chunk = n // 10
        x = da.random.default_rng(0).standard_normal(
            (n, n), chunks=(chunk, chunk), dtype=np.float32
        )
        y = da.random.default_rng(1).integers(0, n, size=n, chunks=chunk)
        calls = {
            "sum": lambda: x.sum(axis=-1),
            "exp_sum": lambda: da.exp(x).sum(axis=-1),
            "logsumexp": lambda: ps.logsumexp(x),
            "cross_entropy": lambda: ps.cross_entropy(x, y),
        }
        self.call = calls[function]

    def time_compute(self, n: int, function: str) -> None:
        self.call().compute(scheduler="threads")

    def track_tasks(self, n: int, function: str) -> int:
        return len(self.call().__dask_graph__())

    track_tasks.unit = "tasks"  # type: ignore[attr-defined]


class StreamingTrain:
    """1000 MNIST steps into a NumPy model: arrays in memory, or streamed from a memory map.

    ``setup_cache`` writes the training split as ``.npy`` files once (in
    another process, so that ``peakmem`` sees only what training holds):
    ``in-memory`` loads them whole, ``streamed`` opens them as Dask arrays
    of 10,000-row blocks over memory maps, as ``portable-softmax train
    --data`` does.
    """

    params = [["in-memory", "streamed"]]
    param_names = ["data"]
    number = 1
    repeat = (1, 5, 60.0)
    warmup_time = 0.0
    timeout = 600

    def setup_cache(self) -> str:
        import tempfile

        folder = tempfile.mkdtemp(prefix="ps-bench-mnist-")
        X, y = ps.datasets.load_mnist("train")
        np.save(f"{folder}/X.npy", X)
        np.save(f"{folder}/y.npy", y)
        return folder

    def setup(self, folder: str, data: str) -> None:
        if data == "streamed":
            _dask()
            from portable_softmax.streaming import open_arrays

            arrays = open_arrays(folder, chunk_rows=10000)
            self.X, self.y = arrays["X"], arrays["y"]
        else:
            self.X, self.y = np.load(f"{folder}/X.npy"), np.load(f"{folder}/y.npy")

    def time_train(self, folder: str, data: str) -> None:
        ps.train(ps.SoftmaxRegression(784, 10), self.X, self.y, steps=1000)

    def peakmem_train(self, folder: str, data: str) -> None:
        ps.train(ps.SoftmaxRegression(784, 10), self.X, self.y, steps=1000)
