"""Out-of-core training: row blocks of Dask arrays streamed into a model of another library.

:func:`~portable_softmax.train` with Dask ``X``, ``y`` and a NumPy, PyTorch or
CuPy model never builds the whole of ``X`` anywhere.  Dask computes one row
block at a time (on a ``dask.distributed`` cluster when a client is the
default), a background thread moves it to the model's library, dtype and
device, and keeps :data:`AHEAD` blocks ready, so the step loop does not wait
for the next block.  Memory holds those blocks and the current one.

The batches come from a shuffle of the blocks per epoch and a shuffle of the
rows within each block, both seeded by ``seed`` (SPEC §10): epoch ``e``
visits the blocks in ``default_rng((seed, e)).permutation(n_blocks)`` and
block ``b`` gives its rows in ``default_rng((seed, e, b)).permutation(rows)``,
``batch_size`` at a time; rows beyond a block's last whole batch wait for
another epoch, and a block smaller than a batch is skipped.  The position
``(epoch, block, row)`` is the whole state a checkpoint needs.

:func:`open_arrays` opens the on-disk stores the command line trains from
(``portable-softmax train --data PATH``): a directory of ``.npy`` files
(read a block of rows at a time) or a Zarr group.
"""

from __future__ import annotations

import functools
import hashlib
import os
import queue
import sys
import threading
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any, NamedTuple

import numpy as np

from portable_softmax._compat import (
    Array,
    is_dask_array,
    is_dask_namespace,
    is_jax_namespace,
    is_numpy_namespace,
)

__all__ = [
    "AHEAD",
    "BlockBatches",
    "BlockRows",
    "StreamedData",
    "accuracy",
    "check_streamed",
    "open_arrays",
    "streams",
]

#: Row blocks computed and moved ahead of the one in use.
AHEAD = 2
# Rows of the first block that go into the data's fingerprint.
_FINGERPRINT_ROWS = 256


def streams(model: Any, X: Any) -> bool:
    """True for a Dask ``X`` and a NumPy, PyTorch or CuPy model: stream ``X``.

    A Dask model trains on Dask data as they are; a JAX model's step is one
    compiled computation over arrays it holds (give it JAX arrays).
    """
    return is_dask_array(X) and not (is_dask_namespace(model.xp) or is_jax_namespace(model.xp))


# --------------------------------------------------------------- the batches


@functools.lru_cache(maxsize=16)
def _permutation(key: tuple[int, ...], n: int) -> np.ndarray:
    """``default_rng(key).permutation(n)``, read-only, cached: a step reads it, not draws it."""
    perm = np.random.default_rng(key).permutation(n)
    perm.flags.writeable = False
    return perm


Visit = tuple[int, int]  # (epoch, place in its block order): one reading of a block


class BlockRows(NamedTuple):
    """One batch: rows ``rows`` of row block ``block``, read at ``visit``.

    ``upcoming()`` lists the ``(visit, block)`` pairs from this one on, in
    the order the stream reads them (what the prefetching thread computes).
    """

    block: int
    rows: np.ndarray
    visit: Visit
    upcoming: Callable[[], Iterator[tuple[Visit, int]]]


class BlockBatches(NamedTuple):
    """Batches from a seeded shuffle of row blocks and a shuffle within each.

    A value, as the in-memory sampler: :meth:`draw` returns the batch and
    the sampler after it.  ``epoch``, ``k`` (the place in the epoch's block
    order) and ``pos`` (rows of that block used) are the state.
    """

    block_rows: tuple[int, ...]
    batch_size: int
    seed: int
    epoch: int = 0
    k: int = 0
    pos: int = 0

    @classmethod
    def start(cls, block_rows: tuple[int, ...], batch_size: int, seed: int) -> BlockBatches:
        """The first batch of epoch 0; ``ValueError`` when no block holds a whole batch."""
        if batch_size > max(block_rows):
            raise ValueError(
                f"batch_size {batch_size} exceeds the largest row block of X "
                f"({max(block_rows)} rows): rechunk X with more rows per block"
            )
        return cls(tuple(int(n) for n in block_rows), int(batch_size), int(seed))

    def order(self, epoch: int) -> np.ndarray:
        """The blocks of ``epoch`` in the order they are visited."""
        return _permutation((self.seed, epoch), len(self.block_rows))

    def within(self, epoch: int, block: int) -> np.ndarray:
        """The rows of ``block`` in ``epoch``, in the order they are used."""
        return _permutation((self.seed, epoch, block), self.block_rows[block])

    def _settled(self) -> BlockBatches:
        """This sampler at a block with a whole batch left (moving on as needed)."""
        epoch, k, pos = self.epoch, self.k, self.pos
        n_blocks = len(self.block_rows)
        while True:
            if k == n_blocks:
                epoch, k, pos = epoch + 1, 0, 0
            block = int(self.order(epoch)[k])
            if pos + self.batch_size <= self.block_rows[block]:
                return self._replace(epoch=epoch, k=k, pos=pos)
            k, pos = k + 1, 0

    def draw(self) -> tuple[BlockRows, BlockBatches]:
        """The next batch and the sampler after it."""
        here = self._settled()
        block = int(here.order(here.epoch)[here.k])
        end = here.pos + self.batch_size
        rows = here.within(here.epoch, block)[here.pos : end].copy()  # writable: torch
        visit = (here.epoch, here.k)
        return BlockRows(block, rows, visit, here.upcoming), here._replace(pos=end)

    def upcoming(self) -> Iterator[tuple[Visit, int]]:
        """The ``(visit, block)`` this sampler will read, from the current one on (no end)."""
        epoch, k = self.epoch, self.k
        while True:
            order = self.order(epoch)
            for place in range(k, len(order)):
                if self.block_rows[order[place]] >= self.batch_size:
                    yield (epoch, place), int(order[place])
            epoch, k = epoch + 1, 0

    def state(self) -> dict[str, Any]:
        """JSON-able: ``{"epoch": ..., "block": ..., "pos": ...}``."""
        return {"epoch": self.epoch, "block": self.k, "pos": self.pos}

    def restored(self, state: Any) -> BlockBatches:
        """This sampler moved to a saved :meth:`state`; ``ValueError`` for a foreign one."""
        if not isinstance(state, dict) or set(state) != {"epoch", "block", "pos"}:
            raise ValueError(
                f"the sampler state is {state!r}, not a block stream's {{epoch, block, pos}}"
                " (was the checkpoint written from in-memory data?)"
            )
        values = [state["epoch"], state["block"], state["pos"]]
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in values):
            raise ValueError(f"the sampler state {state!r} is not three counts")
        epoch, k, pos = values
        if k > len(self.block_rows) or (k < len(self.block_rows) and pos > max(self.block_rows)):
            raise ValueError(f"the sampler state {state!r} does not fit blocks {self.block_rows}")
        return self._replace(epoch=epoch, k=k, pos=pos)


# ------------------------------------------------------------------ the data


def check_streamed(model: Any, X: Any, y: Any, x_name: str, y_name: str) -> tuple[Any, Any]:
    """Dask ``X``, ``y`` checked against the model; ``y`` chunked as ``X``'s rows.

    The labels are read (one pass over ``y``) to check their range: a bad
    one would otherwise stop the run at its block.
    """
    import dask

    if not (is_dask_array(X) and is_dask_array(y)):
        raise TypeError(f"{x_name} and {y_name} must both be Dask arrays to be streamed")
    n_features, n_classes = model.W.shape
    if any(np.isnan(n) for n in (*X.shape, *y.shape)):
        raise ValueError(
            f"{x_name} or {y_name} has unknown chunk sizes (after boolean indexing?): "
            f"call .compute_chunk_sizes() on it first"
        )
    if X.ndim != 2 or X.shape[1] != n_features:
        raise ValueError(f"{x_name} must have shape (N, {n_features}), got {tuple(X.shape)}")
    if tuple(y.shape) != (X.shape[0],):
        raise ValueError(f"{y_name} must have shape ({X.shape[0]},), got {tuple(y.shape)}")
    if X.shape[0] == 0:
        raise ValueError(f"{x_name} is empty: no samples")
    if X.dtype.kind != "f":
        raise TypeError(f"{x_name} must be real floating to be streamed, got {X.dtype}")
    if y.dtype.kind not in "iu":
        raise TypeError(f"{y_name} must hold integer class labels, got {y.dtype}")
    low, high = (int(v) for v in dask.compute(y.min(), y.max()))
    if low < 0 or high >= n_classes:
        raise ValueError(
            f"{y_name} holds label {low if low < 0 else high}, outside the model's "
            f"{n_classes} classes 0..{n_classes - 1}"
        )
    return X, y.rechunk((X.chunks[0],))


def _block_scheduler() -> str | None:
    """``"sync"`` where Dask would use its local thread pool, else None (the configured one).

    This thread is the parallelism of a streamed run: a pool of its own would
    compete with the step loop for the cores.  A ``dask.distributed`` client
    (the default one) or a scheduler set in Dask's config is used as it is.
    """
    import dask

    if dask.config.get("scheduler", None) is not None:
        return None
    distributed = sys.modules.get("distributed")
    if distributed is not None:
        try:
            distributed.default_client()
            return None
        except ValueError:  # no client
            pass
    return "sync"


class _Prefetch:
    """A background thread computing ``blocks`` of ``(X, y)`` into a bounded queue."""

    def __init__(
        self, X: Any, y: Any, blocks: Iterator[tuple[Visit, int]], move: Callable, ahead: int
    ) -> None:
        self.ready: queue.Queue[tuple[Visit, Any, Any]] = queue.Queue(maxsize=ahead)
        self.stopped = threading.Event()
        args = (X, y, blocks, move)
        self.thread = threading.Thread(target=self._run, args=args, daemon=True)
        self.thread.start()

    def _run(self, X: Any, y: Any, blocks: Iterator[tuple[Visit, int]], move: Callable) -> None:
        import dask

        scheduler = _block_scheduler()
        for visit, block in blocks:
            try:
                # The chunks' tasks, not the arrays: Dask copies a one-chunk
                # array's result, a block's worth of time for nothing.
                chunks = (a.blocks[block].to_delayed().ravel()[0] for a in (X, y))
                xb, yb = dask.compute(*chunks, scheduler=scheduler)
                item = (visit, move(xb, True), move(yb, False))
            except BaseException as exc:  # noqa: BLE001 - handed to the step loop
                item = (visit, exc, None)
            while not self.stopped.is_set():
                try:
                    self.ready.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if self.stopped.is_set() or item[2] is None:
                return

    def take(self, visit: Visit) -> tuple[Any, Any] | None:
        """The next block if it is that of ``visit`` (None: the stream went elsewhere)."""
        got, xb, yb = self.ready.get()
        if isinstance(xb, BaseException):
            self.stop()
            raise xb
        return (xb, yb) if got == visit else None

    def stop(self) -> None:
        self.stopped.set()
        while True:  # free the blocks waiting in the queue
            try:
                self.ready.get_nowait()
            except queue.Empty:
                break


class StreamedData:
    """The training data of a streamed run, as :func:`train`'s loop reads them.

    ``batch(rows)`` takes a :class:`BlockRows`: the block comes from the
    prefetching thread (restarted where the stream does not follow it, as
    after a resume), the rows from the block, on the model's device.
    """

    def __init__(self, model: Any, X: Any, y: Any, *, ahead: int = AHEAD) -> None:
        # One chunk per row block: the prefetching thread reads a block as its chunk's task.
        self.X, self.y, self.ahead = X.rechunk({1: -1}), y, ahead
        self.xp: ModuleType = model.xp
        self.device, self.dtype = model.device, model.dtype
        self.prefetch: _Prefetch | None = None
        self.current: tuple[Visit, Any, Any] | None = None

    def move(self, a: np.ndarray, features: bool) -> Any:
        """A computed block in the model's library and device (``X`` in its dtype).

        A read-only block (a slice of a memory map, of a NumPy array) is
        copied first for the other libraries: PyTorch would share it and warn.
        """
        if not (a.flags.writeable or is_numpy_namespace(self.xp)):
            a = np.array(a)
        dtype = self.dtype if features else None
        return self.xp.asarray(a, dtype=dtype, device=self.device)

    def block(self, rows: BlockRows) -> tuple[Any, Any]:
        """The block of ``rows``, in the model's library: the one in use, or the next ready."""
        if self.current is not None and self.current[0] == rows.visit:
            return self.current[1:]
        self.current = None  # let the last block go before the next arrives
        got = None if self.prefetch is None else self.prefetch.take(rows.visit)
        if got is None:
            self.close()
            self.prefetch = _Prefetch(self.X, self.y, rows.upcoming(), self.move, self.ahead)
            got = self.prefetch.take(rows.visit)
        self.current = (rows.visit, *got)
        return got

    def batch(self, rows: BlockRows) -> tuple[Array, Array]:
        Xb, yb = self.block(rows)
        idx = self.xp.asarray(rows.rows, device=self.device)
        return self.xp.take(Xb, idx, axis=0), self.xp.take(yb, idx, axis=0)

    def keep(self, params: list[Array]) -> list[Array]:
        return params

    def fingerprint(self) -> str:
        """A hash of the shapes, the row blocks, the first rows of ``X`` and first labels."""
        first = int(self.X.chunks[0][0])
        import dask

        head, labels = dask.compute(self.X[: min(first, _FINGERPRINT_ROWS)], self.y[:first])
        digest = hashlib.blake2b(digest_size=16)
        digest.update(repr((tuple(self.X.shape), self.X.chunks[0], str(self.X.dtype))).encode())
        digest.update(np.ascontiguousarray(labels, dtype="<i8").tobytes())
        digest.update(np.ascontiguousarray(head, dtype="<f8").tobytes())
        return f"stream-blake2b:{digest.hexdigest()}"

    def close(self) -> None:
        """Stop the prefetching thread (idempotent)."""
        if self.prefetch is not None:
            self.prefetch.stop()
            self.prefetch = None
        self.current = None


def accuracy(model: Any, X: Any, y: Any) -> float:
    """``model.accuracy(X, y)`` as a float, streaming ``X`` by row blocks when it is Dask's.

    The count of correct rows over the count of rows, as the model computes it.
    """
    if not streams(model, X):
        return float(model.accuracy(X, y))
    data = StreamedData(model, X, y.rechunk((X.chunks[0],)))
    visits = [((0, block), block) for block in range(X.numblocks[0])]
    hits = 0
    try:
        for visit, block in visits:
            Xb, yb = data.block(BlockRows(block, np.empty(0), visit, lambda: iter(visits)))
            # The model's fraction times the rows is its count, exactly (float64).
            hits += round(float(model.accuracy(Xb, yb)) * Xb.shape[0])
    finally:
        data.close()
    return hits / X.shape[0]


# --------------------------------------------------------- on-disk arrays


def open_arrays(path: str | os.PathLike[str], chunk_rows: int) -> dict[str, Any]:
    """The arrays ``X``, ``y`` (and ``X_test``, ``y_test`` if there) of an on-disk store, lazily.

    ``path`` is a directory of ``X.npy``, ``y.npy`` [``X_test.npy``,
    ``y_test.npy``], read a block of rows at a time, or a Zarr group holding arrays of
    those names.  Each becomes a Dask array of ``chunk_rows`` rows per block
    (all columns in one); nothing is read until a block is computed.
    ``FileNotFoundError`` or ``ValueError`` name what is missing.
    """
    import dask.array as da

    path = os.fspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: no such directory (a .npy directory or a Zarr store)")
    if _is_zarr(path):
        arrays = _zarr_arrays(path)
    else:
        arrays = {}
        for name in ("X", "y", "X_test", "y_test"):
            file = os.path.join(path, f"{name}.npy")
            if os.path.exists(file):
                arrays[name] = _NpyRows(file)
    for name in ("X", "y"):
        if name not in arrays:
            raise FileNotFoundError(f"{path}: no {name}.npy and no Zarr array {name!r} in it")
    if ("X_test" in arrays) != ("y_test" in arrays):
        raise ValueError(f"{path}: X_test and y_test go together; one of them is missing")
    return {
        name: da.from_array(a, chunks=(chunk_rows,) + tuple(a.shape[1:]), name=False)
        for name, a in arrays.items()
    }


class _NpyRows:
    """A ``.npy`` file read by rows on demand, as ``dask.array.from_array`` slices it.

    The header is read with a memory map (shape, dtype, offset); the rows of
    a block are then read with ``readinto`` rather than through the map, so
    that the pages of blocks already used do not stay in the process's
    resident memory: an epoch over a memory map would leave all of ``X``
    there.  Fortran-ordered files are sliced through the map.
    """

    def __init__(self, file: str) -> None:
        mapped = np.load(file, mmap_mode="r")
        self.file, self.shape, self.dtype = file, mapped.shape, mapped.dtype
        self.ndim = mapped.ndim
        self._map = mapped if mapped.flags.f_contiguous and mapped.ndim > 1 else None
        self._offset = mapped.offset
        self._row_bytes = mapped.dtype.itemsize * int(np.prod(mapped.shape[1:], dtype=np.int64))

    def __getitem__(self, index: Any) -> np.ndarray:
        index = index if isinstance(index, tuple) else (index,)
        rows, rest = index[0], index[1:]
        if self._map is not None or not isinstance(rows, slice) or rows.step not in (None, 1):
            source = np.load(self.file, mmap_mode="r") if self._map is None else self._map
            return np.array(source[index])
        start, stop, _ = rows.indices(self.shape[0])
        out = np.empty((max(stop - start, 0), *self.shape[1:]), dtype=self.dtype)
        with open(self.file, "rb") as f:
            f.seek(self._offset + start * self._row_bytes)
            f.readinto(memoryview(out).cast("B"))
        return out[(slice(None), *rest)] if rest else out


def _is_zarr(path: str) -> bool:
    return any(os.path.exists(os.path.join(path, f)) for f in (".zgroup", "zarr.json"))


def _zarr_arrays(path: str) -> dict[str, Any]:
    try:
        import zarr
    except ImportError:
        msg = f"{path} is a Zarr store: reading it needs zarr (pip install zarr)"
        raise ImportError(msg) from None
    group = zarr.open_group(path, mode="r")
    return {name: group[name] for name in ("X", "y", "X_test", "y_test") if name in group}
