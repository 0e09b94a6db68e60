"""The fused CuPy kernels (``kernels.cu`` via ``_native._cupy._kernels``), with and without a GPU.

Every check runs against three implementations (the ``impl`` fixture):

``model``
    A NumPy model of the kernels' arithmetic: the ``(m, T)`` push and merge
    in the kernels' dtype, applied in their order (each thread over its
    strided entries, a butterfly of shuffles over the warp, then the warps
    in order).  It proves the algorithm, special rows included, and that
    the merge is exactly commutative (every lane of a warp ends equal).
``emulated``
    The CUDA source itself, compiled as C++ by the host compiler with a
    small shim that runs each block's threads as fibers (``__syncthreads``
    and the warp shuffles become barriers), launched by the real ``_cupy``
    functions with NumPy standing in for CuPy: the launch geometry, the
    packing of every kernel argument (sizes checked against the kernel's
    parameters), the index arithmetic, the synchronisation, the special
    values and the memory bounds (guard zones around every array) of the
    code that runs on the GPU.
``cupy``
    The kernels on a CUDA device (skipped without one).

``test_nvrtc_compiles`` compiles every kernel with NVRTC, which needs the
NVRTC library but no GPU.  The oracles work in long double; SciPy's own
float32 softmax errs by 1.3e-6 relative on these rows (from rounding
``x - max``), and the float32 tolerances allow for that.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.resources
import math
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

import portable_softmax as ps
from portable_softmax._native._cupy import CupyBackend
from portable_softmax._native._cupy import _kernels as _cupy
from portable_softmax._problem import cross_entropy_problem

INF, NAN = math.inf, math.nan
LD = np.longdouble

# --------------------------------------------------------------------------- oracles


def ref_log_softmax(x: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in long double, with the special rows of SPEC §3."""
    x = x.astype(LD)
    out = np.empty_like(x)
    with np.errstate(all="ignore"):
        for i, row in enumerate(x):
            if np.isnan(row).any():
                out[i] = NAN
            elif (row == INF).any():
                out[i] = np.where(row == INF, -np.log(LD((row == INF).sum())), -INF)
            elif (row == -INF).all():
                out[i] = -INF
            else:
                d = row - row.max()
                out[i] = d - np.log(np.exp(d).sum())
    return out


def ref_softmax(x: np.ndarray) -> np.ndarray:
    return np.exp(ref_log_softmax(x))


def ref_logsumexp(x: np.ndarray) -> np.ndarray:
    x = x.astype(LD)
    with np.errstate(all="ignore"):
        m = x.max(axis=1)
        finite = np.isfinite(m)
        d = x - np.where(finite, m, 0)[:, None]
        return np.where(finite, m + np.log(np.exp(d).sum(axis=1)), m)


def target_weights(
    y: np.ndarray, counted: np.ndarray | None, weight: np.ndarray | None
) -> np.ndarray:
    """``w_y``: the target's class weight, 0 for an ignored sample."""
    w = np.ones(y.shape) if weight is None else weight[y]
    return np.where(np.ones(y.shape, bool) if counted is None else counted, w, 0.0)


def ref_cross_entropy(
    x: np.ndarray,
    y: np.ndarray,
    *,
    counted: np.ndarray | None = None,
    weight: np.ndarray | None = None,
    factor: Any = 1.0,
    smoothing: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample loss and scaled gradient, torch's semantics, from the definitions.

    The loss is torch's ``(1 - eps) * nll + (eps / C) * smooth``, with
    ``nll = -w_y log p_y`` and ``smooth = -sum_j w_j log p_j`` (0 for an
    ignored sample, and terms of weight 0 left out).  The gradient is
    ``(p sum(q) - q) * factor`` for the target distribution
    ``q = (1 - eps) w_y onehot(y) + (eps / C) w counted``.
    """
    rows, n = x.shape
    eps = smoothing
    cnt = np.ones(rows, bool) if counted is None else counted
    w = np.ones(n) if weight is None else weight.astype(np.float64)
    w_y = target_weights(y, counted, weight)
    logp = ref_log_softmax(x)
    q = (eps / n) * w[None, :] * cnt[:, None]
    q[np.arange(rows), y] += (1 - eps) * w_y
    with np.errstate(all="ignore"):
        nll = np.where(w_y == 0, 0.0, -w_y * logp[np.arange(rows), y])
        smooth = -np.where(w == 0, 0.0, w * logp).sum(axis=1)
        # As torch: (1 - eps) * nll is NaN for eps = 1 and an infinite nll.
        loss = nll if eps == 0 else (1 - eps) * nll + (eps / n) * np.where(cnt, smooth, 0.0)
        grad = (np.exp(logp) * q.sum(axis=1, keepdims=True) - q) * np.reshape(factor, (-1, 1))
    return loss, grad


# --------------------------------------------------------------------------- the model


def _fold(
    x: np.ndarray,
    group: int,
    init: tuple[float, ...],
    push: Callable[..., tuple[np.ndarray, ...]],
    merge: Callable[..., tuple[np.ndarray, ...]],
) -> tuple[np.ndarray, ...]:
    """A row reduction in the kernels' order: per thread, per warp, per block."""
    rows, n = x.shape
    state = tuple(np.full((rows, group), v, dtype=x.dtype) for v in init)
    for start in range(0, n, group):  # thread `lane` reads lane, lane + G, ...
        k = min(group, n - start)
        part = push(tuple(s[:, :k] for s in state), x[:, start : start + k])
        for s, p in zip(state, part, strict=True):
            s[:, :k] = p
    lanes = np.arange(group)
    for offset in (16, 8, 4, 2, 1):
        state = merge(state, tuple(s[:, lanes ^ offset] for s in state))
    warps = tuple(s.reshape(rows, group // 32, 32) for s in state)
    for s in warps:  # the merge commutes exactly: all lanes of a warp agree
        np.testing.assert_array_equal(s, np.broadcast_to(s[:, :, :1], s.shape))
    out = tuple(s[:, 0, 0] for s in warps)
    for w in range(1, group // 32):
        out = merge(out, tuple(s[:, w, 0] for s in warps))
    return out


def _push(state: tuple[np.ndarray, np.ndarray], v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    m, t = state
    up = v > m
    e_up = np.exp(np.where(up, m - v, 0))
    e_else = np.exp(np.where(v == m, 0, v - m))
    return np.where(up, v, m), np.where(up, (t + 1) * e_up, t + e_else)


def _merge(a: tuple[np.ndarray, ...], b: tuple[np.ndarray, ...]) -> tuple[np.ndarray, np.ndarray]:
    (ma, ta), (mb, tb) = a, b
    tie, swap = ma == mb, ma < mb
    hi_m, lo_m = np.where(swap, mb, ma), np.where(swap, ma, mb)
    hi_t, lo_t = np.where(swap, tb, ta), np.where(swap, ta, tb)
    far = hi_t + (lo_t + 1) * np.exp(np.where(tie, 0, lo_m - hi_m))
    return hi_m, np.where(tie, (ta + tb) + 1, far)


def _add(a: tuple[np.ndarray], b: tuple[np.ndarray]) -> tuple[np.ndarray]:
    return (a[0] + b[0],)


class Model:
    """The kernels' arithmetic in NumPy, in the kernels' dtype and order."""

    name = "model"

    @staticmethod
    def _group(x: np.ndarray) -> int:
        return _cupy.launch_geometry(*x.shape)[0]

    def _state(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with np.errstate(all="ignore"):
            return _fold(x, self._group(x), (-INF, 0.0), _push, _merge)

    def _norm(self, x: np.ndarray) -> tuple[np.ndarray, ...]:
        m, t = self._state(x)
        empty = (m == -INF) & ~np.isnan(t)
        m, t = np.where(empty, INF, m).astype(x.dtype), np.where(empty, 0, t).astype(x.dtype)
        with np.errstate(all="ignore"):
            d = np.where(x == m[:, None], 0, x - m[:, None])
        return d, (1 + t)[:, None], np.log1p(t)[:, None]

    def softmax(self, x: np.ndarray) -> np.ndarray:
        if not x.size:
            return x.copy()
        d, z, _ = self._norm(x)
        with np.errstate(all="ignore"):
            return np.exp(d) / z

    def log_softmax(self, x: np.ndarray) -> np.ndarray:
        if not x.size:
            return x.copy()
        d, _, log_z = self._norm(x)
        with np.errstate(all="ignore"):
            return d - log_z

    def logsumexp(self, x: np.ndarray) -> np.ndarray:
        if not x.size:
            return np.full(x.shape[0], -INF, x.dtype)
        m, t = self._state(x)
        return m + np.log1p(t)

    def cross_entropy(
        self,
        x: np.ndarray,
        y: np.ndarray,
        *,
        w_y: np.ndarray | None = None,
        counted: np.ndarray | None = None,
        weight: np.ndarray | None = None,
        factor: Any = 1.0,
        smoothing: float = 0.0,
        loss: bool = True,
        grad: bool = True,
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        rows, n = x.shape
        if not x.size:
            return np.zeros(rows, x.dtype) if loss else None, np.zeros_like(x) if grad else None
        dt = x.dtype.type
        cnt = np.ones(rows, bool) if counted is None else counted
        wy = target_weights(y, counted, weight).astype(dt) if w_y is None else w_y
        w = np.ones(n, dt) if weight is None else weight
        w_all = dt(n) if weight is None else weight.sum(dtype=dt)
        keep, eps_c, c = dt(1 - smoothing), dt(smoothing / n), cnt.astype(dt)
        f = np.broadcast_to(np.asarray(factor, dt), (rows,))
        d, z, log_z = self._norm(x)
        rr = np.arange(rows)
        with np.errstate(all="ignore"):
            g = np.exp(d) / z * ((keep * wy + eps_c * w_all * c) * f)[:, None]
            g[rr, y] -= keep * f * wy
            if smoothing > 0:
                g = (g - (eps_c * f)[:, None] * w) * c[:, None]
            out = np.where(wy == 0, 0, wy * (log_z[:, 0] - d[rr, y]))
            if smoothing > 0:
                terms = np.where(w == 0, dt(0), w * d)
                (u,) = _fold(terms, self._group(x), (0.0,), lambda s, v: (s[0] + v,), _add)
                out = keep * out + eps_c * np.where(cnt, w_all * log_z[:, 0] - u, 0)
        return (out.astype(dt) if loss else None), (g if grad else None)


# --------------------------------------------------------------------------- the emulator

# The emulator runs each CUDA thread of a block as a fiber (ucontext) on one OS
# thread, switching only at barriers: a thread runs as far as it can before the
# others start, so a missing __syncthreads shows deterministically as a read
# of shared memory nobody has written yet.
_SHIM = r"""
#include <ucontext.h>

#include <cmath>
#include <cstddef>
#include <cstring>
#include <functional>
#include <type_traits>
#include <utility>
#include <vector>

using std::isnan;

struct dim3 { unsigned x = 1, y = 1, z = 1; };
dim3 threadIdx, blockIdx, blockDim, gridDim;

#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static  // one block runs at a time
#define __launch_bounds__(n)
#define __restrict__ __restrict

inline float __int_as_float(unsigned v) { float f; std::memcpy(&f, &v, sizeof f); return f; }
inline double __longlong_as_double(long long v) {
    double d; std::memcpy(&d, &v, sizeof d); return d;
}

struct Fiber {
    ucontext_t context;
    std::vector<char> stack;
    unsigned thread;
    bool done;
};
ucontext_t scheduler;
Fiber* current;
unsigned long events;  // arrivals, releases, exits: no change in a round is a deadlock

void yield() { swapcontext(&current->context, &scheduler); }

class Barrier {
  public:
    void reset(unsigned n) { count_ = n; waiting_ = 0; }
    void wait() {
        const unsigned long generation = generation_;
        ++events;
        if (++waiting_ == count_) {
            waiting_ = 0;
            ++generation_;
            return;
        }
        while (generation == generation_) yield();
    }
  private:
    unsigned count_ = 0, waiting_ = 0;
    unsigned long generation_ = 0;
};

Barrier block_barrier;
Barrier warp_barrier[32];
double lane_value[1024];

inline void __syncthreads() { block_barrier.wait(); }

template <typename V> V __shfl_xor_sync(unsigned, V v, int lane_mask) {
    const unsigned t = threadIdx.x;
    lane_value[t] = double(v);  // exact for float and double, inf and NaN
    warp_barrier[t / 32].wait();
    const V other = V(lane_value[t ^ unsigned(lane_mask)]);
    warp_barrier[t / 32].wait();
    return other;
}
"""

_LAUNCHER = r"""
std::function<void()> body;

void fiber_main() {
    body();
    current->done = true;
    ++events;
    swapcontext(&current->context, &scheduler);
}

// Runs every thread of one block to its end; false on a deadlock.
bool run_block(std::vector<Fiber>& fibers) {
    for (Fiber& f : fibers) {
        f.done = false;
        getcontext(&f.context);
        f.context.uc_stack.ss_sp = f.stack.data();
        f.context.uc_stack.ss_size = f.stack.size();
        f.context.uc_link = nullptr;
        makecontext(&f.context, fiber_main, 0);
    }
    for (;;) {
        const unsigned long before = events;
        bool all_done = true;
        for (Fiber& f : fibers) {
            if (f.done) continue;
            all_done = false;
            current = &f;
            threadIdx.x = f.thread;
            swapcontext(&scheduler, &f.context);
        }
        if (all_done) return true;
        if (events == before) return false;
    }
}

template <typename... P, std::size_t... I>
void invoke(void (*kernel)(P...), void** args, std::index_sequence<I...>) {
    kernel(*static_cast<std::remove_reference_t<P>*>(args[I])...);
}

// cuLaunchKernel's contract: args[i] points at the value of parameter i.
// Sizes are checked here (a GPU would read garbage instead).
template <typename... P>
int launch(void (*kernel)(P...), unsigned grid, unsigned block, void** args,
           const long long* sizes, int nargs) {
    const long long expected[] = {(long long)sizeof(P)...};
    if (nargs != int(sizeof...(P))) return -1;
    for (int i = 0; i < nargs; ++i)
        if (sizes[i] != expected[i]) return -2 - i;
    if (block == 0 || block % 32 || block > 1024) return -100;
    gridDim.x = grid;
    blockDim.x = block;
    std::vector<Fiber> fibers(block);
    for (unsigned t = 0; t < block; ++t) {
        fibers[t].thread = t;
        fibers[t].stack.resize(1 << 16);
    }
    body = [=] { invoke(kernel, args, std::index_sequence_for<P...>{}); };
    for (unsigned b = 0; b < grid; ++b) {
        blockIdx.x = b;
        block_barrier.reset(block);
        for (Barrier& w : warp_barrier) w.reset(32);
        if (!run_block(fibers)) return -200;  // threads wait at barriers forever
    }
    return 0;
}
"""


def _pack(arg: Any) -> ctypes.Array:
    """One kernel argument's bytes, as CuPy packs it for cuLaunchKernel."""
    if isinstance(arg, np.ndarray):
        arg = np.uintp(arg.ctypes.data)  # the "device" pointer
    elif isinstance(arg, bool):
        arg = np.bool_(arg)
    elif isinstance(arg, int):
        arg = np.int64(arg)
    elif isinstance(arg, float):
        arg = np.float64(arg)
    if not isinstance(arg, np.generic):
        raise TypeError(f"CuPy cannot pass {type(arg)} to a kernel")
    return ctypes.create_string_buffer(arg.tobytes(), arg.itemsize)


class _EmulatedModule:
    """Stands in for ``cupy.RawModule``: ``get_function(name)(grid, block, args)``."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self._lib = lib

    def get_function(self, name: str) -> Callable[..., None]:
        entry = getattr(self._lib, f"emu_{_cupy.KERNEL_NAMES.index(name)}")

        def launch(grid: tuple[int], block: tuple[int], args: tuple[Any, ...]) -> None:
            buffers = [_pack(a) for a in args]
            pointers = (ctypes.c_void_p * len(buffers))(
                *(ctypes.cast(b, ctypes.c_void_p) for b in buffers)
            )
            sizes = (ctypes.c_longlong * len(buffers))(*(ctypes.sizeof(b) for b in buffers))
            rc = entry(
                ctypes.c_uint(grid[0]), ctypes.c_uint(block[0]), pointers, sizes, len(buffers)
            )
            assert rc == 0, f"{name}: bad launch or deadlock (code {rc}, see _LAUNCHER)"

        return launch


@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> _EmulatedModule:
    compiler = shutil.which("g++") or shutil.which("clang++")
    if compiler is None:
        pytest.skip("no host C++ compiler (g++ or clang++) to emulate the kernels")
    entries = "".join(
        f'extern "C" int emu_{i}(unsigned g, unsigned b, void** a, const long long* s, int n)'
        f" {{ return launch(&{name}, g, b, a, s, n); }}\n"
        for i, name in enumerate(_cupy.KERNEL_NAMES)
    )
    build = tmp_path_factory.mktemp("emulated_kernels")
    source = build / "kernels.cpp"
    # The package's own kernels.cu, included as it ships, not a copy.
    kernels_cu = importlib.resources.files("portable_softmax._native._cupy") / "kernels.cu"
    include = f'#include "{kernels_cu}"\n'
    source.write_text(_SHIM + include + _LAUNCHER + entries)
    lib = build / "kernels.so"
    cmd = [compiler, "-std=c++17", "-O2", "-fPIC", "-shared",
           "-Wall", "-Wno-unknown-pragmas", "-o", str(lib), str(source)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"the CUDA source does not compile as C++:\n{done.stderr}"
    assert "warning" not in done.stderr, done.stderr
    return _EmulatedModule(ctypes.CDLL(str(lib)))


# Every array the emulated kernels see sits between guard zones: inputs between
# 0xFF bytes (NaN as a float, -1 as an index), so a read out of bounds spoils
# the values; outputs between 0xA5 bytes, checked after each call, so a write
# out of bounds fails the test.
_GUARD = 4096
_READ_GUARD, _WRITE_GUARD = 0xFF, 0xA5


class _GuardedNumPy:
    """NumPy as ``cupy`` for ``_cupy``, allocating outputs between guard zones."""

    def __init__(self) -> None:
        self.buffers: list[tuple[np.ndarray, int]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)

    def guarded(self, shape: Any, dtype: Any, fill: int) -> np.ndarray:
        dtype = np.dtype(dtype)
        nbytes = math.prod(np.atleast_1d(shape)) * dtype.itemsize
        buf = np.full(nbytes + 2 * _GUARD, fill, dtype=np.uint8)
        self.buffers.append((buf, fill))
        return buf[_GUARD : _GUARD + nbytes].view(dtype).reshape(shape)

    def empty(self, shape: Any, dtype: Any = float) -> np.ndarray:
        return self.guarded(shape, dtype, _WRITE_GUARD)

    def empty_like(self, a: np.ndarray) -> np.ndarray:
        return self.empty(a.shape, a.dtype)

    def check_guards(self) -> None:
        for buf, fill in self.buffers:
            for zone in (buf[:_GUARD], buf[-_GUARD:]):
                assert (zone == fill).all(), "a kernel wrote outside its arrays"


class _Kernels:
    """The four ``_cupy`` entry points through ``self._call`` (NumPy in, NumPy out)."""

    def _call(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def softmax(self, x: np.ndarray) -> np.ndarray:
        return self._call(_cupy.softmax_rows, x)

    def log_softmax(self, x: np.ndarray) -> np.ndarray:
        return self._call(_cupy.log_softmax_rows, x)

    def logsumexp(self, x: np.ndarray) -> np.ndarray:
        return self._call(_cupy.logsumexp_rows, x)

    def cross_entropy(self, x: np.ndarray, y: np.ndarray, **kwargs: Any) -> Any:
        return self._call(_cupy.cross_entropy_rows, x, y, **kwargs)


class Emulated(_Kernels):
    """The public ``_cupy`` functions, NumPy arrays standing in for CuPy's."""

    name = "emulated"

    def __init__(self, module: _EmulatedModule, monkeypatch: pytest.MonkeyPatch) -> None:
        self.np = _GuardedNumPy()
        monkeypatch.setitem(sys.modules, "cupy", self.np)
        monkeypatch.setattr(_cupy, "_module", lambda: module)

    def _call(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        def guard(a: Any) -> Any:
            if not isinstance(a, np.ndarray):
                return a
            out = self.np.guarded(a.shape, a.dtype, _READ_GUARD)
            out[...] = a
            return out

        out = func(*map(guard, args), **{k: guard(v) for k, v in kwargs.items()})
        self.np.check_guards()
        return out


class Device(_Kernels):
    """The kernels on the GPU: NumPy in, NumPy out."""

    name = "cupy"

    def __init__(self) -> None:
        self.cupy = pytest.importorskip("cupy", reason="cupy is not installed")
        try:
            count = self.cupy.cuda.runtime.getDeviceCount()
        except Exception as exc:  # noqa: BLE001 - any CUDA runtime failure means no GPU
            pytest.skip(f"cupy: no usable CUDA device ({type(exc).__name__})")
        if count < 1:
            pytest.skip("cupy: no CUDA device on this machine")

    def _call(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        cp = self.cupy
        moved = [cp.asarray(a) if isinstance(a, np.ndarray) else a for a in args]
        kw = {k: cp.asarray(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}
        out = func(*moved, **kw)
        if isinstance(out, tuple):
            return tuple(None if o is None else o.get() for o in out)
        return out.get()


@pytest.fixture(params=["model", "emulated", "cupy"])
def impl(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The implementation under test: NumPy in, NumPy out (see the module docstring)."""
    if request.param == "model":
        return Model()
    if request.param == "emulated":
        return Emulated(request.getfixturevalue("emulator"), monkeypatch)
    return Device()


# A row goes to a warp up to _WARP_ROW_MAX entries, else to a block; "warp"
# and "block" force one kind for every length, so each kernel variant meets
# rows shorter and longer than its threads.
LAYOUTS = {"auto": None, "warp": 1 << 62, "block": -1}


@pytest.fixture(params=list(LAYOUTS))
def layout(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Force warp-rows or block-rows for every length ("auto": the kernels' choice)."""
    if LAYOUTS[request.param] is not None:
        monkeypatch.setattr(_cupy, "_WARP_ROW_MAX", LAYOUTS[request.param])
    return request.param


# --------------------------------------------------------------------------- checks

DTYPES = ["float32", "float64"]
# float32: SciPy's own error on these rows is 1.3e-6 (the rounding of x - max).
RTOL = {"float32": 4e-6, "float64": 1e-13}
# Rows per length: a partial last block of warp-rows, and few long rows (the
# emulator runs a fiber per GPU thread).
LENGTHS = {1: 9, 7: 9, 32: 9, 1000: 6, 4096: 3, 32000: 2}


def random_rows(rows: int, n: int, dtype: str, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed + n)
    return (3.0 * rng.standard_normal((rows, n))).astype(dtype)


def assert_rows(actual: Any, desired: np.ndarray, dtype: str, *, atol: float = 0.0) -> None:
    """Values, dtype and shape; NaN must meet NaN and infinities match exactly."""
    actual = np.asarray(actual)
    assert actual.dtype == np.dtype(dtype), actual.dtype
    assert actual.shape == desired.shape, (actual.shape, desired.shape)
    np.testing.assert_allclose(actual.astype(LD), desired.astype(LD), rtol=RTOL[dtype], atol=atol)


@pytest.mark.parametrize("n", list(LENGTHS))
@pytest.mark.parametrize("dtype", DTYPES)
def test_random_rows(impl: Any, n: int, dtype: str) -> None:
    x = random_rows(LENGTHS[n], n, dtype)
    assert_rows(impl.softmax(x), ref_softmax(x), dtype)
    # log-probabilities reach -30 here: their absolute error follows x - max.
    atol = 4 * np.finfo(dtype).eps * float(np.abs(x).max())
    assert_rows(impl.log_softmax(x), ref_log_softmax(x), dtype, atol=atol)
    assert_rows(impl.logsumexp(x), ref_logsumexp(x), dtype, atol=atol)


SPECIAL_ROWS = [
    [1.0, NAN, 2.0, 3.0, -INF],
    [NAN, INF, -INF, 0.0, 0.0],
    [INF, 1.0, 2.0, 3.0, 4.0],
    [INF, INF, 1.0, 2.0, -INF],
    [INF, INF, INF, -INF, 0.0],
    [-INF, -INF, -INF, -INF, -INF],
    [-INF, 0.0, 1.0, -INF, 2.0],
    [1e30, -1e30, 0.0, 5.0, 5.0],
    [2.0, 2.0, 2.0, 2.0, 2.0],
    [-INF, NAN, -INF, -INF, -INF],
    [NAN, NAN, NAN, NAN, NAN],
]


def special_rows(n: int) -> np.ndarray:
    """SPECIAL_ROWS stretched to length ``n``: the special entries land in
    different threads and warps, the rest are finite or -inf as in the row."""
    if n == 5:
        return np.asarray(SPECIAL_ROWS)
    rng = np.random.default_rng(n)
    out = np.empty((len(SPECIAL_ROWS), n))
    spots = np.linspace(3, n - 1, 5).astype(int)  # entry k of the short row goes here
    for i, row in enumerate(SPECIAL_ROWS):
        finite = [v for v in row if np.isfinite(v)]
        out[i] = rng.normal(size=n) - 5 if finite else -INF
        if (np.asarray(row) == -INF).all():
            continue
        out[i, spots] = row
    return out


@pytest.mark.parametrize("n", [5, 3000])
@pytest.mark.parametrize("dtype", DTYPES)
def test_special_rows(impl: Any, layout: str, n: int, dtype: str) -> None:
    x = special_rows(n).astype(dtype)
    assert_rows(impl.softmax(x), ref_softmax(x), dtype)
    assert_rows(impl.log_softmax(x), ref_log_softmax(x), dtype, atol=1e-5)
    assert_rows(impl.logsumexp(x), ref_logsumexp(x), dtype, atol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("gap", [30.0, 60.0])
@pytest.mark.parametrize("n", [2, 4096])
def test_log_softmax_near_zero_keeps_relative_accuracy(
    impl: Any, gap: float, n: int, dtype: str
) -> None:
    mpmath = pytest.importorskip("mpmath")
    x = np.full((1, n), -gap, dtype=dtype)
    x[0, 0] = 0.0
    with mpmath.workdps(50):
        exact = -float(mpmath.log1p((n - 1) * mpmath.exp(-gap)))
    got = float(impl.log_softmax(x)[0, 0])
    # log(sum) would give 0 or an error of 1e-3 relative; log1p keeps a few ulp.
    assert abs(got - exact) <= 8 * np.finfo(dtype).eps * abs(exact), (got, exact)
    assert float(impl.softmax(x)[0, 1]) == pytest.approx(math.exp(-gap - (-exact)), rel=1e-5)


def test_empty(impl: Any) -> None:
    for shape in [(0, 5), (3, 0), (0, 0)]:
        x = np.zeros(shape)
        assert impl.softmax(x).shape == shape
        assert impl.log_softmax(x).shape == shape
        np.testing.assert_array_equal(impl.logsumexp(x), np.full(shape[0], -INF))
        loss, grad = impl.cross_entropy(x, np.zeros(shape[0], np.int64))
        np.testing.assert_array_equal(loss, np.zeros(shape[0]))
        np.testing.assert_array_equal(grad, np.zeros(shape))


# ----------------------------------------------------------------- cross-entropy

CE_CASES = {
    # name: (weighted, ignore, smoothing, factor: a float, a 0-d array or one per row)
    "plain-mean": (False, False, 0.0, "float"),
    "weighted-ignored": (True, True, 0.0, "array0d"),
    "smoothed": (False, False, 0.2, "float"),
    "all-options": (True, True, 0.3, "array0d"),
    "per-row-factor": (True, True, 0.3, "per-row"),
    "zero-weights": (True, True, 1.0, "float"),
}


def ce_problem(
    rows: int, n: int, dtype: str, case: str, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    weighted, ignore, smoothing, factor_kind = CE_CASES[case]
    rng = np.random.default_rng(seed)
    x = random_rows(rows, n, dtype, seed)
    y = rng.integers(0, n, size=rows).astype(np.int64)
    kwargs: dict[str, Any] = {"smoothing": smoothing}
    if weighted:
        weight = rng.uniform(0.2, 2.0, size=n)
        if case == "zero-weights":
            weight[::2] = 0.0
        kwargs["weight"] = weight.astype(dtype)
    if ignore:
        counted = np.ones(rows, bool)
        counted[1::3] = False
        kwargs["counted"] = counted
    w_y = target_weights(y, kwargs.get("counted"), kwargs.get("weight"))
    mean = 1.0 / w_y.sum() if w_y.sum() else 0.0
    kwargs["factor"] = {
        "float": mean,
        "array0d": np.asarray(mean, dtype),
        "per-row": rng.uniform(0.5, 2.0, size=rows).astype(dtype),
    }[factor_kind]
    return x, y, kwargs


def ref_args(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {**kwargs, "factor": np.asarray(kwargs["factor"], np.float64)}


def assert_ce(impl: Any, x: np.ndarray, y: np.ndarray, kwargs: dict[str, Any], dtype: str) -> None:
    loss, grad = impl.cross_entropy(x, y, **kwargs)
    want_loss, want_grad = ref_cross_entropy(x, y, **ref_args(kwargs))
    rtol = 1e-5 if dtype == "float32" else 1e-12
    atol = rtol * float(np.nanmax(np.abs(np.where(np.isfinite(want_grad), want_grad, 0))))
    assert loss.dtype == grad.dtype == np.dtype(dtype)
    np.testing.assert_allclose(loss.astype(LD), want_loss, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(grad.astype(LD), want_grad, rtol=rtol, atol=atol)
    # Only one of the two asked for: the same values.
    only_loss = impl.cross_entropy(x, y, **kwargs, grad=False)
    only_grad = impl.cross_entropy(x, y, **kwargs, loss=False)
    assert only_loss[1] is None and only_grad[0] is None
    np.testing.assert_array_equal(only_loss[0], loss)
    np.testing.assert_array_equal(only_grad[1], grad)


@pytest.mark.parametrize("case", list(CE_CASES))
@pytest.mark.parametrize("n", [10, 1000, 4096])
@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy(impl: Any, case: str, n: int, dtype: str) -> None:
    x, y, kwargs = ce_problem(9 if n <= 1000 else 3, n, dtype, case)
    assert_ce(impl, x, y, kwargs, dtype)


@pytest.mark.parametrize("n", [5, 3000])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ["all-options", "plain-mean", "zero-weights"])
def test_cross_entropy_special_rows(impl: Any, n: int, dtype: str, case: str) -> None:
    x = special_rows(n).astype(dtype)
    _, _, kwargs = ce_problem(len(x), n, dtype, case)
    y = np.arange(len(x), dtype=np.int64) % n  # targets on inf, NaN and -inf entries alike
    assert_ce(impl, x, y, kwargs, dtype)


@pytest.mark.parametrize("layout", ["warp", "block"], indirect=True)
@pytest.mark.parametrize("n", [7, 1000, 4096])
@pytest.mark.parametrize("dtype", DTYPES)
def test_forced_layout(impl: Any, layout: str, n: int, dtype: str) -> None:
    test_random_rows(impl, n, dtype)
    x, y, kwargs = ce_problem(LENGTHS[n], n, dtype, "all-options")
    assert_ce(impl, x, y, kwargs, dtype)


def test_w_y_given_equals_w_y_computed(impl: Any) -> None:
    x, y, kwargs = ce_problem(9, 10, "float64", "all-options")
    w_y = target_weights(y, kwargs["counted"], kwargs["weight"])
    given = impl.cross_entropy(x, y, w_y=w_y, **kwargs)
    computed = impl.cross_entropy(x, y, **kwargs)
    for a, b in zip(given, computed, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("special", [False, True], ids=["random", "special"])
@pytest.mark.parametrize("case", [c for c in CE_CASES if CE_CASES[c][3] != "per-row"])
def test_oracle_is_the_generic_path(case: str, special: bool) -> None:
    """``ref_cross_entropy`` means what ``ps.cross_entropy`` (torch's semantics) means."""
    x, y, kwargs = ce_problem(len(SPECIAL_ROWS), 5, "float64", case)
    if special:
        x = special_rows(5)
        y = np.arange(len(x), dtype=np.int64) % 5
    args: dict[str, Any] = {"label_smoothing": kwargs["smoothing"], "weight": kwargs.get("weight")}
    target = y.copy()
    if "counted" in kwargs:
        target[~kwargs["counted"]] = -1
        args["ignore_index"] = -1
    loss, grad = ref_cross_entropy(x, y, **{**ref_args(kwargs), "factor": 1.0})
    with ps.native_kernels(False):
        np.testing.assert_allclose(
            ps.cross_entropy(x, target, reduction="none", **args), loss, rtol=1e-13
        )
        np.testing.assert_allclose(
            ps.cross_entropy_grad(x, target, reduction="sum", **args), grad, atol=1e-15
        )


# ----------------------------------------------------------------------- NVRTC


@pytest.fixture(scope="module")
def nvrtc() -> Any:
    pytest.importorskip("cupy", reason="cupy is not installed")
    try:
        from cupy_backends.cuda.libs import nvrtc

        nvrtc.getVersion()
    except Exception as exc:  # noqa: BLE001 - a missing libnvrtc raises various errors
        pytest.skip(f"NVRTC is not available ({exc}); pip install nvidia-cuda-nvrtc-cu12")
    return nvrtc


@contextlib.contextmanager
def nvrtc_program(nvrtc: Any) -> Iterator[Any]:
    prog = nvrtc.createProgram(_cupy.CUDA_SOURCE, "portable_softmax.cu", [], [])
    try:
        yield prog
    finally:
        nvrtc.destroyProgram(prog)


@pytest.mark.parametrize("arch", ["sm_75", "sm_80", "sm_90"])
def test_nvrtc_compiles(nvrtc: Any, arch: str) -> None:
    """Every kernel variant compiles to machine code, warning-free, without a GPU."""
    if int(arch[3:]) not in nvrtc.getSupportedArchs():
        pytest.skip(f"this NVRTC does not know {arch}")
    with nvrtc_program(nvrtc) as prog:
        for name in _cupy.KERNEL_NAMES:
            nvrtc.addNameExpression(prog, name)
        try:
            nvrtc.compileProgram(prog, [*_cupy.NVRTC_OPTIONS, f"--gpu-architecture={arch}"])
        except nvrtc.NVRTCError:
            pytest.fail(nvrtc.getProgramLog(prog))
        assert nvrtc.getProgramLog(prog).strip("\x00\n ") == ""
        assert nvrtc.getCUBIN(prog)
        lowered = {nvrtc.getLoweredName(prog, name) for name in _cupy.KERNEL_NAMES}
        assert len(lowered) == len(_cupy.KERNEL_NAMES)


def test_importing_the_module_does_not_import_cupy() -> None:
    code = "import sys, portable_softmax._native._cupy; assert 'cupy' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    "x", [np.zeros((2, 3), np.int64), np.zeros((2, 3, 4)), np.zeros((3, 2)).T], ids=str
)
def test_wrong_layout_is_refused_before_cupy_is_needed(x: np.ndarray) -> None:
    with pytest.raises(ValueError, match="C-contiguous 2-D"):
        _cupy.softmax_rows(x)


# --------------------------------------------------------------------------- dispatch
# How the public functions reach the kernels (``CupyBackend``): axes moved last and
# flattened into rows, the loss's options mapped onto the kernel's arguments,
# shapes restored.  Emulated, so it runs here; on a GPU the xp fixture runs
# the public functions on CuPy arrays through the same code.


@pytest.fixture
def emulated(emulator: _EmulatedModule, monkeypatch: pytest.MonkeyPatch) -> Emulated:
    return Emulated(emulator, monkeypatch)


@pytest.mark.parametrize(
    ("shape", "axes"), [((5, 7), (1,)), ((5, 7), (0,)), ((3, 4, 6), (1,)), ((3, 4, 6), (0, 2))]
)
@pytest.mark.parametrize("name", ["softmax", "log_softmax", "logsumexp"])
def test_dispatch_moves_axes(emulated: Emulated, name: str, shape: tuple, axes: tuple) -> None:
    x = random_rows(1, math.prod(shape), "float64").reshape(shape)
    x[(0,) * len(shape)] = -math.inf
    backend = CupyBackend()
    if name == "logsumexp":
        got = backend.logsumexp(x, axes)
    else:
        got = (backend.softmax if name == "softmax" else backend.log_softmax)(x, axes, None)
    with ps.native_kernels(False):
        want = getattr(ps, name)(
            x, axis=axes, **({"keepdims": True} if name == "logsumexp" else {})
        )
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-300)


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize(
    "options",
    [{}, {"weight": True, "ignore_index": 2, "label_smoothing": 0.2}, {"ignore_index": 2}],
    ids=["plain", "all-options", "ignore"],
)
@pytest.mark.parametrize("axis", [-1, 1])
def test_dispatch_cross_entropy(
    emulated: Emulated, reduction: str, options: dict, axis: int
) -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(4, 5, 3)) if axis == 1 else rng.normal(size=(6, 5))
    y = rng.integers(0, 5, size=(4, 3) if axis == 1 else 6)
    y.flat[0] = 2  # an ignored sample when ignore_index is 2
    kwargs = dict(options, reduction=reduction)
    if kwargs.pop("weight", False):
        kwargs["weight"] = rng.uniform(0.5, 2.0, size=5)
    p = cross_entropy_problem(
        x,
        y,
        axis=axis,
        reduction=reduction,
        weight=kwargs.get("weight"),
        ignore_index=kwargs.get("ignore_index"),
        label_smoothing=kwargs.get("label_smoothing", 0.0),
    )
    loss, grad = CupyBackend().cross_entropy(p, loss=True, grad=True)
    with ps.native_kernels(False):
        want_loss = ps.cross_entropy(x, y, axis, **kwargs)
        want_grad = ps.cross_entropy_grad(x, y, axis, **kwargs)
    np.testing.assert_allclose(np.asarray(loss), want_loss, rtol=1e-13)
    assert grad.shape == x.shape
    np.testing.assert_allclose(grad, want_grad, rtol=1e-12, atol=1e-15)
