"""linear_cross_entropy: the measurements behind docs/large_vocabularies.md (a script, not tests).

Run from the repository root::

    # Forward + backward at the issue's shape, every method in its own fresh
    # process, the methods interleaved, --rounds rounds; minimum time, peak
    # RSS growth of the first call (VmHWM - VmRSS before it, as
    # /usr/bin/time -v's "Maximum resident set size" counts it).
    python asv_bench/linear_targets.py compare --n 4096 --h 512 --v 32000 --rounds 3

    # One method once (what compare runs in each child process).
    python asv_bench/linear_targets.py one torch:fused --n 4096 --h 512 --v 32000

    # The large head: 4 GiB of float32 logits never formed.
    python asv_bench/linear_targets.py one torch:fused --n 8192 --h 1024 --v 128256

Methods: ``torch:fused`` (``ps.linear_cross_entropy`` + ``backward()``),
``torch:with_grad`` (``ps.linear_cross_entropy_with_grad``),
``torch:materialised`` (``F.cross_entropy(x @ W.T, t)`` + ``backward()``),
``torch:chunked`` (``F.linear_cross_entropy(..., options=LinearCrossEntropyOptions())``),
``numpy:with_grad``, ``numpy:materialised`` (the closed form written out:
logits, softmax, ``G @ W``, ``G.T @ x``), ``jax:fused`` and
``jax:materialised`` (``jax.jit(jax.value_and_grad(...))`` of ours and of
the optax-style loss; XLA's ``memory_analysis()`` is printed too).  Every
figure is one line of ``key=value`` pairs.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

MIB = 2**20


def _status(key: str) -> int:
    """``VmRSS`` or ``VmHWM`` of this process, in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def _reset_peak() -> None:
    """Make VmHWM the current RSS (Linux >= 4.0: write 5 to clear_refs)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _data(n: int, h: int, v: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((n, h), dtype=np.float32) / np.float32(np.sqrt(h))).astype(np.float32)
    w = (0.05 * rng.standard_normal((v, h), dtype=np.float32)).astype(np.float32)
    return x, w, rng.integers(0, v, size=n)


def _torch(method: str, x: Any, w: Any, t: Any) -> Callable[[], Any]:
    import torch
    import torch.nn.functional as F

    import portable_softmax as ps

    x, w, t = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(t)
    if method == "with_grad":
        return lambda: ps.linear_cross_entropy_with_grad(x, w, t)

    def run() -> Any:
        xx, ww = x.detach().requires_grad_(), w.detach().requires_grad_()
        if method == "fused":
            loss = ps.linear_cross_entropy(xx, ww, t)
        elif method == "materialised":
            loss = F.cross_entropy(xx @ ww.T, t)
        else:
            options = torch.nn.LinearCrossEntropyOptions()
            loss = F.linear_cross_entropy(xx, ww, t, options=options)
        loss.backward()
        return loss, xx.grad, ww.grad

    return run


def _numpy(method: str, x: Any, w: Any, t: Any) -> Callable[[], Any]:
    import portable_softmax as ps

    if method == "with_grad":
        return lambda: ps.linear_cross_entropy_with_grad(x, w, t)

    def run() -> Any:
        n = x.shape[0]
        z = x @ w.T
        z -= z.max(axis=1, keepdims=True)
        np.exp(z, out=z)
        s = z.sum(axis=1, keepdims=True)
        loss = np.mean(np.log(s[:, 0]) - np.log(z[np.arange(n), t]))
        z /= s
        z[np.arange(n), t] -= 1.0
        z /= n
        return loss, z @ w, z.T @ x

    return run


def _jax(method: str, x: Any, w: Any, t: Any) -> Callable[[], Any]:
    import jax
    import jax.numpy as jnp

    import portable_softmax as ps

    def materialised(x: Any, w: Any, t: Any) -> Any:
        logp = jax.nn.log_softmax(x @ w.T, axis=-1)
        return -jnp.mean(jnp.take_along_axis(logp, t[:, None], axis=-1))

    loss = (lambda x, w, t: ps.linear_cross_entropy(x, w, t)) if method == "fused" else materialised
    args = tuple(jnp.asarray(a) for a in (x, w, t))
    compiled = jax.jit(jax.value_and_grad(loss, argnums=(0, 1))).lower(*args).compile()
    mem = compiled.memory_analysis()
    if mem is not None:
        print(
            f"xla method=jax:{method} temp_mib={mem.temp_size_in_bytes / MIB:.1f} "
            f"output_mib={mem.output_size_in_bytes / MIB:.1f} "
            f"argument_mib={mem.argument_size_in_bytes / MIB:.1f}"
        )
    return lambda: jax.block_until_ready(compiled(*args))


def one(method: str, n: int, h: int, v: int, repeat: int) -> None:
    """Run ``method`` ``repeat`` times in this process: peak RSS growth of the first call."""
    lib, _, kind = method.partition(":")
    x, w, t = _data(n, h, v)
    build = {"torch": _torch, "numpy": _numpy, "jax": _jax}[lib]
    call = build(kind, x, w, t)
    times = []
    for i in range(repeat):
        if i == 0:
            _reset_peak()
            before = _status("VmRSS")
        start = time.perf_counter()
        out = call()
        times.append(time.perf_counter() - start)
        if i == 0:
            growth = _status("VmHWM") - before
        del out
    print(
        f"method={method} n={n} h={h} v={v} seconds={min(times):.3f} "
        f"all={','.join(f'{s:.2f}' for s in times)} peak_growth_mib={growth / MIB:.1f}"
    )


def compare(methods: list[str], n: int, h: int, v: int, rounds: int, repeat: int) -> None:
    """Each method in a fresh process, interleaved over ``rounds``; the minima at the end."""
    best: dict[str, tuple[float, float]] = {}
    for r in range(rounds):
        for method in methods:
            cmd = [sys.executable, __file__, "one", method, "--n", str(n), "--h", str(h),
                   "--v", str(v), "--repeat", str(repeat)]  # fmt: skip
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            print(f"round={r} {out.strip()}", flush=True)
            fields = dict(kv.split("=", 1) for kv in out.split("\n")[-2].split())
            seconds, mib = float(fields["seconds"]), float(fields["peak_growth_mib"])
            old = best.get(method, (np.inf, np.inf))
            best[method] = (min(old[0], seconds), min(old[1], mib))
    for method, (seconds, mib) in best.items():
        print(f"best method={method} seconds={seconds:.3f} peak_growth_mib={mib:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["one", "compare"])
    parser.add_argument("methods", nargs="*")
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--h", type=int, default=512)
    parser.add_argument("--v", type=int, default=32000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    if args.what == "one":
        one(args.methods[0], args.n, args.h, args.v, args.repeat)
    else:
        methods = args.methods or [
            "torch:materialised", "torch:fused", "torch:with_grad", "torch:chunked",
            "numpy:materialised", "numpy:with_grad", "jax:materialised", "jax:fused",
        ]  # fmt: skip
        compare(methods, args.n, args.h, args.v, args.rounds, args.repeat)


if __name__ == "__main__":
    main()
