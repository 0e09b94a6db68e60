"""Dask at scale: the measurements behind docs/dask.md (benchmark scripts, not tests).

Run from the repository root::

    # One read: logsumexp and cross_entropy beside x.sum(axis=-1), interleaved,
    # minimum of --rounds; task counts of each graph.
    python asv_bench/dask_scale.py speed --n 20000 --chunk 2000 --rounds 3

    # Out of core: a lazily generated float32 array of --gib GiB (more than
    # the machine's memory); peak RSS from /usr/bin/time -v (this process)
    # and sampled over the whole process tree (the cluster's workers too).
    /usr/bin/time -v python asv_bench/dask_scale.py out-of-core --gib 32 --scheduler threads
    /usr/bin/time -v python asv_bench/dask_scale.py out-of-core --gib 32 --scheduler cluster

    # Streaming training from Dask arrays against in-memory NumPy training.
    python asv_bench/dask_scale.py train --rounds 3

Every figure is printed as one line of ``key=value`` pairs.
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Callable
from typing import Any

import dask
import dask.array as da
import numpy as np

import portable_softmax as ps


def _seconds(run: Callable[[], Any]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def _tasks(a: Any) -> int:
    return len(a.__dask_graph__())


def speed(n: int, chunk: int, rounds: int, generic: bool) -> None:
    """``x.sum(axis=-1)``, ``ps.logsumexp(x)``, ``ps.cross_entropy(x, y)`` on one lazy array."""
    x = da.random.default_rng(0).standard_normal((n, n), chunks=(chunk, chunk), dtype=np.float32)
    y = da.random.default_rng(1).integers(0, n, size=n, chunks=chunk)
    calls = {
        "sum": lambda: x.sum(axis=-1),
        # The floor of any logsumexp: one read and one exp per element.
        "exp_sum": lambda: da.exp(x).sum(axis=-1),
        "logsumexp": lambda: ps.logsumexp(x),
        "cross_entropy": lambda: ps.cross_entropy(x, y),
    }
    if generic:
        calls["logsumexp_generic"] = lambda: _generic(ps.logsumexp, x)
        calls["cross_entropy_generic"] = lambda: _generic(ps.cross_entropy, x, y)
    for name, call in calls.items():
        graph = call()
        print(f"tasks {name}={_tasks(graph)} optimized={_tasks(dask.optimize(graph)[0])}")
    best = dict.fromkeys(calls, float("inf"))
    names = list(calls)
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]  # rotate: interleaved
        for name in order:
            graph = calls[name]()
            best[name] = min(best[name], _seconds(graph.compute))
            print(f"round={r} {name}={best[name]:.2f}s", flush=True)
    line = " ".join(f"{k}={v:.2f}s" for k, v in best.items())
    ratios = " ".join(f"{k}/sum={v / best['sum']:.3f}" for k, v in best.items() if k != "sum")
    print(f"min of {rounds}: {line}  {ratios}  shape=({n},{n}) chunks=({chunk},{chunk})")


def _generic(func: Callable[..., Any], *args: Any) -> Any:
    with ps.native_kernels(False):
        return func(*args)


class _TreeRSS:
    """The peak of the summed RSS of this process and its children, sampled."""

    def __init__(self, every: float = 0.1) -> None:
        import psutil

        self._root = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, args=(every,), daemon=True)

    def _watch(self, every: float) -> None:
        while not self._stop.is_set():
            total = 0
            for proc in [self._root, *self._root.children(recursive=True)]:
                try:
                    total += proc.memory_info().rss
                except Exception:  # noqa: BLE001 - a child may exit between the calls
                    pass
            self.peak = max(self.peak, total)
            self._stop.wait(every)

    def __enter__(self) -> _TreeRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def out_of_core(gib: float, scheduler: str, ops: list[str], memory_limit: str) -> None:
    """logsumexp and cross_entropy over a lazily generated array of ``gib`` GiB."""
    cols, chunk = 32768, 4096
    rows = int(gib * 2**30 / 4 / cols) // chunk * chunk
    x = da.random.default_rng(0).random((rows, cols), chunks=(chunk, chunk), dtype=np.float32)
    y = da.random.default_rng(1).integers(0, cols, size=rows, chunks=chunk)
    size = x.nbytes / 2**30
    print(f"array {x.shape} float32 {size:.1f} GiB, chunks {x.chunksize}, {x.npartitions} blocks")
    calls = {
        "logsumexp": lambda: ps.logsumexp(x).sum(),
        "cross_entropy": lambda: ps.cross_entropy(x, y),
    }
    client = cluster = None
    if scheduler == "cluster":
        from distributed import Client, LocalCluster

        cluster = LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            memory_limit=memory_limit,
            dashboard_address=":0",
        )
        client = Client(cluster)
        print(f"cluster: 2 worker processes, 1 thread each, memory_limit={memory_limit} each")
    try:
        with _TreeRSS() as rss:
            for name in ops:
                graph = calls[name]()
                start = time.perf_counter()
                value = float(graph.compute())
                elapsed = time.perf_counter() - start
                print(
                    f"{name} scheduler={scheduler} value={value:.6g} time={elapsed:.1f}s "
                    f"tasks={_tasks(graph)} tree_peak_rss={rss.peak / 2**30:.2f}GiB",
                    flush=True,
                )
    finally:
        if client is not None:
            client.close()
            cluster.close()
    print(f"peak RSS of the process tree (sampled every 0.1 s): {rss.peak / 2**30:.2f} GiB")


def train(rounds: int, steps: int, chunk_rows: int) -> None:
    """1000 MNIST steps: Dask arrays streamed into a NumPy model, against in-memory NumPy."""
    X, y = ps.datasets.load_mnist("train")
    Xt, yt = ps.datasets.load_mnist("test")
    dX, dy = da.from_array(X, chunks=(chunk_rows, -1)), da.from_array(y, chunks=chunk_rows)
    names = ["in_memory", "streaming"]
    best = dict.fromkeys(names, float("inf"))
    accuracy = {}
    for r in range(rounds):
        for name in names[r % 2 :] + names[: r % 2]:  # interleaved
            model = ps.SoftmaxRegression(784, 10)
            data = (X, y) if name == "in_memory" else (dX, dy)
            start = time.perf_counter()
            ps.train(model, *data, steps=steps)
            best[name] = min(best[name], time.perf_counter() - start)
            accuracy[name] = float(model.accuracy(Xt, yt))
            print(f"round={r} {name}={best[name]:.2f}s accuracy={accuracy[name]:.4f}", flush=True)
    ratio = best["streaming"] / best["in_memory"]
    print(
        f"min of {rounds}: in_memory={best['in_memory']:.2f}s streaming={best['streaming']:.2f}s "
        f"ratio={ratio:.3f} accuracy in_memory={accuracy['in_memory']:.4f} "
        f"streaming={accuracy['streaming']:.4f} chunks={chunk_rows} rows"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("speed")
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--chunk", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--generic", action="store_true", help="also the generic path (before)")
    p = sub.add_parser("out-of-core")
    p.add_argument("--gib", type=float, default=32.0)
    p.add_argument("--scheduler", choices=["threads", "cluster"], default="threads")
    p.add_argument("--ops", default="logsumexp,cross_entropy")
    p.add_argument("--memory-limit", default="1.25GiB")
    p = sub.add_parser("train")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--chunk-rows", type=int, default=10000)
    args = parser.parse_args()
    if args.what == "speed":
        speed(args.n, args.chunk, args.rounds, args.generic)
    elif args.what == "out-of-core":
        out_of_core(args.gib, args.scheduler, args.ops.split(","), args.memory_limit)
    else:
        train(args.rounds, args.steps, args.chunk_rows)


if __name__ == "__main__":
    main()
