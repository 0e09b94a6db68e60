"""The fast paths agree with the generic Array API path, special values included."""

from __future__ import annotations

import math

import numpy as np
import pytest

import portable_softmax as ps
from portable_softmax import _native, log_softmax, logsumexp, native_kernels, softmax
from support import to_numpy

INF, NAN = math.inf, math.nan

SPECIAL_ROWS = [
    [1.0, NAN, 2.0],
    [INF, 1.0, 2.0],
    [INF, INF, 1.0],
    [-INF, -INF, -INF],
    [-INF, 0.0, 1.0],
    [1e30, -1e30, 0.0],
]


def _inputs(xp, dtype):
    rng = np.random.default_rng(7)
    yield xp.asarray(rng.normal(size=(6, 9)) * 5, dtype=dtype), -1
    yield xp.asarray(rng.normal(size=(4, 5, 3)), dtype=dtype), 1
    yield xp.asarray(rng.normal(size=(4, 5, 3)), dtype=dtype), (0, 2)
    yield xp.asarray(rng.normal(size=(700, 600)), dtype=dtype), -1  # blocked, threaded
    yield xp.asarray(np.asarray(SPECIAL_ROWS), dtype=dtype), -1
    yield xp.asarray(np.asarray(SPECIAL_ROWS).T.copy(), dtype=dtype), 0


@pytest.mark.parametrize("func", [softmax, log_softmax, logsumexp])
@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
def test_native_agrees_with_generic(xp, library, func, dtype_name):
    dtype = getattr(xp, dtype_name)
    rtol = 1e-5 if dtype_name == "float32" else 1e-13
    for x, axis in _inputs(xp, dtype):
        fast = func(x, axis=axis)
        with native_kernels(False):
            generic = func(x, axis=axis)
        assert fast.dtype == generic.dtype == dtype
        assert tuple(fast.shape) == tuple(generic.shape)
        np.testing.assert_allclose(
            to_numpy(fast), to_numpy(generic), rtol=rtol, atol=rtol * 1e-3, equal_nan=True
        )


def test_native_path_is_taken_on_numpy_and_torch():
    x = np.random.default_rng(0).normal(size=(3, 4))
    assert _native.backend_for(x).softmax(x, (1,), None) is not None
    torch = pytest.importorskip("torch")
    t = torch.asarray(x)
    assert _native.backend_for(t).log_softmax(t, (1,), None) is not None
    with native_kernels(False):
        assert _native.backend_for(x) is None


def test_native_hands_special_rows_back():
    x = np.asarray([[INF, 1.0], [0.0, 1.0]])
    with np.errstate(invalid="ignore"):
        assert _native.backend_for(x).softmax(x, (1,), None) is None
    np.testing.assert_array_equal(softmax(x)[0], [1.0, 0.0])


def test_backend_lookup_is_by_type_and_never_imports_a_library():
    """Each array type has one backend (or none); finding it imports nothing new."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np; from portable_softmax import _native; "
        "b = _native.backend_for(np.zeros(2)); assert b.name == 'numpy', b; "
        "assert _native.backend_for(np.ma.zeros(2)) is None; "
        "bad = {'torch', 'jax', 'cupy', 'dask'} & set(sys.modules); assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert _native.backend_for(np.zeros(1)) is _native.backend_for(np.ones((2, 2)))


@pytest.mark.parametrize(
    "method, args",
    [
        ("softmax", ((0,), None)),
        ("log_softmax", ((0,), None)),
        ("logsumexp", ((0,),)),
        ("mean_cross_entropy_with_grad", (np.zeros(1),)),
    ],
)
def test_the_contract_answers_none_by_default(method, args):
    """A backend that defines nothing hands every call to the generic code."""
    base = _native.Backend()
    assert getattr(base, method)(np.zeros(3), *args) is None


def test_torch_long_float32_rows_stay_accurate():
    torch = pytest.importorskip("torch")
    n = 200_000  # past the row length where torch's float32 sum drifts
    x = torch.asarray(np.random.default_rng(3).normal(size=n) * 3, dtype=torch.float32)
    exact = torch.softmax(x.double(), 0)
    got = softmax(x).double()
    assert got.dtype == torch.float64 or softmax(x).dtype == torch.float32
    rel = ((got - exact).abs() / exact).max().item()
    assert rel < 2e-6
    assert abs(got.sum().item() - 1.0) < 1e-5


@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
@pytest.mark.parametrize("dim", [-1, 0])
@pytest.mark.parametrize("grad", [False, True], ids=["plain", "autograd"])
def test_torch_log_softmax_dominant_rows(dtype_name, dim, grad):
    """torch.log_softmax's -log(sum) at a dominant entry is fixed, row by row.

    Rows where one entry holds almost all the mass sit beside ordinary rows:
    the dominant entries keep their relative accuracy (mpmath), the ordinary
    rows are torch's own, and autograd gives log_softmax's closed form.
    """
    torch = pytest.importorskip("torch")
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 50
    rows = [[0.0, -30.0, -31.0, -40.0], [0.0, -1.0, -2.0, -3.0], [3.0, -25.0, 3.0 - 20, 1.0 - 30]]
    rows += [[0.5, -12.0, -9.0, -16.0], [1.0, 1.0, 0.0, -5.0]]
    xn = np.asarray(rows)
    want = np.asarray(
        [[float(v - mpmath.log(mpmath.fsum(mpmath.exp(u) for u in r))) for v in r] for r in rows]
    )
    dtype = getattr(torch, dtype_name)
    x = torch.asarray(xn if dim == -1 else xn.T.copy(), dtype=dtype).requires_grad_(grad)
    out = log_softmax(x, axis=dim)
    got = out.detach().double().numpy()
    got = got if dim == -1 else got.T
    eps = np.finfo(dtype_name).eps
    np.testing.assert_allclose(got, want, rtol=4 * eps, atol=0)
    if grad:
        v = torch.asarray(np.linspace(-1.0, 1.0, out.numel()).reshape(out.shape), dtype=dtype)
        (out * v).sum().backward()
        s = torch.softmax(x.detach().double(), dim)
        closed = v.double() - s * v.double().sum(dim, keepdim=True)
        np.testing.assert_allclose(x.grad.double().numpy(), closed.numpy(), rtol=1e-4, atol=1e-6)


def test_native_kernels_restores_state():
    with native_kernels(False):
        with native_kernels(True):
            assert _native.backend_for(np.zeros(1)) is not None
        assert _native.backend_for(np.zeros(1)) is None
    assert _native.backend_for(np.zeros(1)) is not None


@pytest.mark.parametrize(
    "logits",
    [
        [[2.0, 3.0, 4.0], [0.0, 0.0, 0.0], [-1.0, 5.0, 2.0]],
        [[INF, 0.0, 1.0], [0.0, 1.0, 2.0], [1.0, 1.0, 1.0]],
        [[-INF, -INF, -INF], [0.0, 1.0, 2.0], [1.0, 1.0, 1.0]],
        [[NAN, 0.0, 1.0], [0.0, 1.0, 2.0], [1.0, 1.0, 1.0]],
        [[-INF, 0.0, 1.0], [0.0, 1.0, 2.0], [1.0, 1.0, 1.0]],
    ],
    ids=["plain", "posinf", "all-neginf", "nan", "target-neginf"],
)
@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
def test_training_step_path_agrees_with_generic(xp, library, logits, dtype_name):
    """The lean mean cross-entropy + gradient of the training step, special rows included."""
    from portable_softmax import cross_entropy_with_grad

    x = xp.asarray(logits, dtype=getattr(xp, dtype_name))
    y = xp.asarray([0, 2, 1])
    loss, grad = cross_entropy_with_grad(x, y)
    with native_kernels(False):
        loss_g, grad_g = cross_entropy_with_grad(x, y)
    assert loss.dtype == loss_g.dtype == x.dtype and tuple(loss.shape) == ()
    rtol = 1e-6 if dtype_name == "float32" else 1e-14
    np.testing.assert_allclose(to_numpy(loss), to_numpy(loss_g), rtol=rtol, equal_nan=True)
    np.testing.assert_allclose(
        to_numpy(grad), to_numpy(grad_g), rtol=rtol, atol=1e-7, equal_nan=True
    )


def test_numpy_smoothing_with_zero_weight_on_a_neginf_class():
    """A zero class weight hides that class's -inf logit in the smoothing term too."""
    x = np.asarray([[0.0, -INF, 1.0], [2.0, 0.5, -1.0]])
    kwargs = {"weight": np.asarray([1.0, 0.0, 1.0]), "label_smoothing": 0.1}
    for func in (ps.cross_entropy, ps.cross_entropy_grad):
        fast = func(x, np.asarray([0, 2]), **kwargs)
        with native_kernels(False):
            generic = func(x, np.asarray([0, 2]), **kwargs)
        assert np.isfinite(fast).all()
        np.testing.assert_allclose(fast, generic, rtol=1e-14)


@pytest.mark.parametrize("func_name, budget", [("cross_entropy", 1), ("cross_entropy_grad", 2)])
@pytest.mark.parametrize("options", [{}, {"label_smoothing": 0.1, "ignore_index": 3}])
def test_numpy_loss_memory(func_name, budget, options):
    """Class-index targets: at most one (loss) or two (gradient) logits-sized buffers."""
    import tracemalloc

    func = getattr(ps, func_name)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 1000))
    y = rng.integers(0, 1000, size=2000)
    weight = rng.uniform(0.5, 2.0, size=1000)
    func(x, y, weight=weight, **options)  # warm caches outside the measurement
    tracemalloc.start()
    try:
        func(x, y, weight=weight, **options)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= budget * x.nbytes + 2**20, (peak / x.nbytes, func_name)
