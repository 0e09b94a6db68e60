"""Time chosen benchmarks once, in this process, and print ours vs the reference.

Uses the asv benchmark classes of ``benchmarks/`` directly (their ``setup``,
their prepared, warmed-up and synchronised calls), times each with
``timeit`` and prints a Markdown table::

    | benchmark | params | ours | reference | ratio |

``ratio`` is ours / reference: below 1 we are faster.  Each time is the
median (or, with ``--stat min``, the least) of ``--repeat`` samples of
``number`` calls, ``number`` chosen so that a sample lasts at least
``--min-sample`` seconds (as asv does).  The samples of ours and of the
reference alternate, so that a slow spell of a shared machine falls on both.

Examples
--------
Everything, both dtypes, on the CPU backends that have a reference::

    python asv_bench/compare.py

A few functions, one dtype, small shapes, and the plot used in the docs::

    python asv_bench/compare.py --bench softmax,cross_entropy --dtypes float32 \\
        --shapes 100x10,10000x10 --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import timeit
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
if "--threads" not in " ".join(sys.argv):  # read by benchmarks.common when torch starts
    os.environ.setdefault("PORTABLE_SOFTMAX_BENCH_THREADS", "1")

from benchmarks import bench_derivatives, bench_losses, bench_softmax, bench_train  # noqa: E402
from benchmarks.common import SHAPES, SkipNotImplemented  # noqa: E402

# name -> (class, method timing ours, reference name per library)
REFERENCES = {
    "softmax": {
        "numpy": "scipy.special.softmax",
        "torch": "torch.softmax",
        "jax": "jax.nn.softmax",
    },
    "log_softmax": {
        "numpy": "scipy.special.log_softmax",
        "torch": "torch.log_softmax",
        "jax": "jax.nn.log_softmax",
    },
    "logsumexp": {
        "numpy": "scipy.special.logsumexp",
        "torch": "torch.logsumexp",
        "jax": "jax.nn.logsumexp",
    },
    "cross_entropy": {
        "numpy": "NumPy/SciPy by hand",
        "torch": "F.cross_entropy",
        "jax": "jax.nn.log_softmax + take",
    },
    "cross_entropy_grad": {
        "numpy": "NumPy/SciPy by hand",
        "torch": "F.cross_entropy + backward",
        "jax": "jax.grad",
    },
    "cross_entropy_with_grad": {
        "numpy": "NumPy/SciPy by hand",
        "torch": "F.cross_entropy + backward",
        "jax": "jax.grad",
    },
    "softmax_jvp": {"numpy": "NumPy/SciPy by hand", "torch": "torch.func.jvp", "jax": "jax.jvp"},
    "softmax_jacobian": {
        "numpy": "NumPy/SciPy by hand",
        "torch": "vmap(jacrev)",
        "jax": "vmap(jacfwd)",
    },
}
CLASSES = {
    "softmax": (bench_softmax.Softmax, "time_softmax"),
    "log_softmax": (bench_softmax.LogSoftmax, "time_log_softmax"),
    "logsumexp": (bench_softmax.LogSumExp, "time_logsumexp"),
    "cross_entropy": (bench_losses.CrossEntropy, "time_cross_entropy"),
    "cross_entropy_grad": (bench_losses.CrossEntropyGrad, "time_cross_entropy_grad"),
    "cross_entropy_with_grad": (bench_losses.CrossEntropyGrad, "time_cross_entropy_with_grad"),
    "softmax_jvp": (bench_derivatives.SoftmaxJvp, "time_softmax_jvp"),
    "softmax_jacobian": (bench_derivatives.SoftmaxJacobian, "time_softmax_jacobian"),
}
TRAIN_REFERENCES = {"numpy": "numpy-loop", "torch:cpu": "torch-nn"}


STATS = {"median": statistics.median, "min": min}


def calibrate(call: Callable[[], Any], min_sample: float) -> int:
    """The number of calls that makes a sample last at least ``min_sample`` seconds."""
    number = 1
    while True:
        t = timeit.timeit(call, number=number)
        if t >= min_sample or number >= 1 << 20:
            return number
        number *= max(2, min(10, math.ceil(min_sample / max(t, 1e-9))))


def measure_pair(
    calls: list[Callable[[], Any] | None], repeat: int, min_sample: float, stat: str
) -> list[float | None]:
    """Seconds per call of each of ``calls`` (None stays None), samples interleaved."""
    numbers = [None if c is None else calibrate(c, min_sample) for c in calls]
    samples: list[list[float]] = [[] for _ in calls]
    for _ in range(repeat):
        for call, number, out in zip(calls, numbers, samples, strict=True):
            if call is not None:
                out.append(timeit.timeit(call, number=number) / number)
    return [STATS[stat](s) if s else None for s in samples]


def fmt_time(t: float | None) -> str:
    if t is None or math.isnan(t):
        return "n/a"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if t >= scale:
            return f"{t / scale:.3g} {unit}"
    return f"{t / 1e-9:.3g} ns"


def run_pair(
    bench: Any, ours_method: str, params: tuple, repeat: int, min_sample: float, stat: str
):
    """(ours, reference) seconds for one parameter combination; None where skipped."""
    try:
        bench.setup(*params)
    except SkipNotImplemented:
        return None, None
    calls = []
    for name in (ours_method, "time_reference"):
        method = getattr(bench, name)
        try:
            method(*params)  # one untimed call: raises SkipNotImplemented where skipped
        except SkipNotImplemented:
            calls.append(None)
            continue
        calls.append(lambda m=method: m(*params))
    out = measure_pair(calls, repeat, min_sample, stat)
    for attr in ("x", "v", "z", "y", "ours", "ref", "fused"):
        bench.__dict__.pop(attr, None)  # free memory before the next shape
    return tuple(out)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def parse_shape(text: str) -> tuple[int, int]:
    a, b = text.lower().split("x")
    return int(a), int(b)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bench", default=",".join(CLASSES), help="comma-separated functions")
    parser.add_argument("--backends", default="numpy,torch:cpu,jax:cpu")
    parser.add_argument("--shapes", default=",".join(f"{a}x{b}" for a, b in SHAPES))
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--no-train", action="store_true", help="skip the MNIST training runs")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--min-sample", type=float, default=0.05)
    parser.add_argument(
        "--stat", choices=sorted(STATS), default="median",
        help="statistic of the samples (min resists a noisy machine)",
    )  # fmt: skip
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.add_argument(
        "--threads", help="PyTorch intra-op threads (default 1: see benchmarks/common.py)"
    )
    args = parser.parse_args(argv)
    if args.threads:
        os.environ["PORTABLE_SOFTMAX_BENCH_THREADS"] = args.threads

    backends = [b for b in args.backends.split(",") if b]
    shapes = [parse_shape(s) for s in args.shapes.split(",") if s]
    dtypes = [d for d in args.dtypes.split(",") if d]
    rows = []
    for name in [b for b in args.bench.split(",") if b]:
        cls, method = CLASSES[name]
        for backend in backends:
            lib = backend.split(":")[0]
            for shape in shapes:
                for dtype in dtypes:
                    ours, ref = run_pair(
                        cls(), method, (backend, shape, dtype), args.repeat, args.min_sample,
                        args.stat,
                    )  # fmt: skip
                    if ours is None and ref is None:
                        continue
                    rows.append(
                        {
                            "benchmark": name,
                            "backend": backend,
                            "shape": list(shape),
                            "dtype": dtype,
                            "reference": REFERENCES[name].get(lib, "—"),
                            "ours": ours,
                            "ref": ref,
                        }
                    )
                    print(
                        f"  {name} {backend} {shape} {dtype}: {fmt_time(ours)} / {fmt_time(ref)}",
                        file=sys.stderr,
                        flush=True,
                    )
    if not args.no_train:
        for backend, ref_name in TRAIN_REFERENCES.items():
            if backend not in backends:
                continue
            try:
                ours_b = bench_train.Train()
                ours_b.setup(backend)
                ref_b = bench_train.TrainReference()
                ref_b.setup(ref_name)
                ours, ref = measure_pair([ours_b.run, ref_b.run], args.repeat, 0.0, args.stat)
            except SkipNotImplemented as exc:
                print(f"  train {backend}: skipped ({exc})", file=sys.stderr)
                continue
            rows.append(
                {
                    "benchmark": "train (1000 steps)",
                    "backend": backend,
                    "shape": [100, 784],
                    "dtype": "float32",
                    "reference": ref_name,
                    "ours": ours,
                    "ref": ref,
                }
            )
            print(f"  train {backend}: {fmt_time(ours)} / {fmt_time(ref)}", file=sys.stderr)

    threads = os.environ.get("PORTABLE_SOFTMAX_BENCH_THREADS", "default")
    print(
        f"Machine: {cpu_name()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"torch threads: {threads}, {args.stat} of {args.repeat} interleaved samples\n"
    )
    print("| benchmark | params | ours | reference | ratio |")
    print("| --- | --- | ---: | ---: | ---: |")
    for r in rows:
        params = f"{r['backend']}, {tuple(r['shape'])}, {r['dtype']}"
        ratio = f"{r['ours'] / r['ref']:.2f}" if r["ours"] is not None and r["ref"] else "n/a"
        ref = f"{fmt_time(r['ref'])} ({r['reference']})" if r["ref"] is not None else "n/a"
        print(f"| {r['benchmark']} | {params} | {fmt_time(r['ours'])} | {ref} | {ratio} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(
                {"machine": platform.uname()._asdict(), "cpus": os.cpu_count(), "rows": rows},
                fh,
                indent=1,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
