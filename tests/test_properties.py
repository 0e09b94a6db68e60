"""Property tests (hypothesis) for softmax, log_softmax and logsumexp.

Run on NumPy and PyTorch only, with few examples, to stay fast.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from backends import selected
from portable_softmax import log_softmax, logsumexp, softmax
from support import to_numpy

EPS = float(np.finfo(np.float64).eps)
# numpy and torch only, of the selected backends: JAX eager costs ~0.5 s an example here.
PROPERTY_BACKENDS = tuple(n for n in selected() if n in ("numpy", "torch"))
SETTINGS = settings(max_examples=60, deadline=None, derandomize=True)


@pytest.fixture(params=PROPERTY_BACKENDS, scope="module")
def pxp(request):
    """A namespace for the property tests (a subset of the ``xp`` backends)."""
    name = request.param
    if name == "numpy":
        import array_api_compat.numpy as ns
    elif name == "torch":
        pytest.importorskip("torch")
        import array_api_compat.torch as ns
    else:
        ns = pytest.importorskip("jax.numpy")
    return ns


def rows(lo=-1e3, hi=1e3, max_len=20):
    return arrays(
        np.float64,
        st.tuples(st.integers(1, 4), st.integers(1, max_len)),
        elements=st.floats(lo, hi, allow_nan=False, allow_infinity=False),
    )


def host(a):
    return to_numpy(a).astype(np.float64)


@SETTINGS
@given(x=rows(), c=st.floats(-1e3, 1e3))
def test_shift_invariance(pxp, x, c):
    a = host(softmax(pxp.asarray(x)))
    b = host(softmax(pxp.asarray(x + c)))
    # x + c rounds by up to ulp(|x| + |c|) ~ 2e3 * eps on each logit
    np.testing.assert_allclose(b, a, rtol=1e-11, atol=1e-300)


@SETTINGS
@given(x=rows(-1e300, 1e300))
def test_rows_sum_to_one_and_lie_in_unit_interval(pxp, x):
    s = host(softmax(pxp.asarray(x)))
    assert np.all((s >= 0) & (s <= 1))
    n = x.shape[-1]
    np.testing.assert_allclose(s.sum(axis=-1), 1.0, rtol=0, atol=(n + 4) * EPS)


@SETTINGS
@given(x=rows())
def test_log_softmax_is_log_of_softmax(pxp, x):
    xa = pxp.asarray(x)
    s = host(softmax(xa))
    ls = host(log_softmax(xa))
    assert np.all(ls <= 0)
    big = s > 1e-200
    shift = np.abs(x - x.max(axis=-1, keepdims=True))
    tol = 4 * EPS * (shift + np.abs(ls) + 4)
    np.testing.assert_array_less(np.abs(np.log(s[big]) - ls[big]), tol[big] + 1e-300)


@SETTINGS
@given(x=rows(-50, 50))
def test_exp_logsumexp_is_sum_exp(pxp, x):
    lse = host(logsumexp(pxp.asarray(x)))
    np.testing.assert_allclose(np.exp(lse), np.exp(x).sum(axis=-1), rtol=64 * EPS)


@SETTINGS
@given(x=rows(-1e300, 1e300), i=st.integers(0, 100), d=st.floats(0, 1e3))
def test_logsumexp_bounds_and_monotone(pxp, x, i, d):
    lse = host(logsumexp(pxp.asarray(x)))
    m = x.max(axis=-1)
    n = x.shape[-1]
    assert np.all(lse >= m)
    # max <= lse <= max + log(n), up to the rounding of the sum
    assert np.all(lse <= m + math.log(n) + 8 * EPS * np.maximum(np.abs(m), 1.0))
    # raising one entry never lowers logsumexp
    y = x.copy()
    y[:, i % n] += d
    lse_y = host(logsumexp(pxp.asarray(y)))
    assert np.all(lse_y >= lse * (1 - 4 * EPS * np.sign(lse)) - 4 * EPS)


@SETTINGS
@given(x=rows(-100, 100))
def test_float32_matches_float64(pxp, x):
    x32 = x.astype(np.float32)
    s32 = host(softmax(pxp.asarray(x32)))
    s64 = host(softmax(pxp.asarray(x32.astype(np.float64))))
    shift = np.abs(x32 - x32.max(axis=-1, keepdims=True)).astype(np.float64)
    tol = (2e-6 + shift * 2.0**-24) * s64 + 1e-38
    np.testing.assert_array_less(np.abs(s32 - s64), tol + 1e-45)


@SETTINGS
@given(
    x=arrays(np.float64, (3, 5), elements=st.floats(-30, 30)),
    b=arrays(np.float64, (3, 5), elements=st.floats(0.0, 10.0)),
)
def test_logsumexp_b_matches_mpmath(pxp, x, b):
    """log(sum(b * exp(x))) to 50 digits; SciPy itself errs by 1e-13 where a tiny
    weight sits on the largest x (it shifts by that x), so it only checks the sign."""
    import mpmath
    import scipy.special

    with mpmath.workdps(50):
        exact = [mpmath.fsum(bj * mpmath.exp(xj) for xj, bj in zip(xr, br, strict=True))
                 for xr, br in zip(x.tolist(), b.tolist(), strict=True)]  # fmt: skip
        want = np.array([float(mpmath.log(t)) if t else -math.inf for t in exact])
    value, sign = logsumexp(pxp.asarray(x), b=pxp.asarray(b), return_sign=True)
    np.testing.assert_allclose(host(value), want, rtol=1e-13, atol=64 * EPS)
    with np.errstate(divide="ignore"):
        _, wsign = scipy.special.logsumexp(x, axis=-1, b=b, return_sign=True)
    np.testing.assert_array_equal(host(sign), np.where(np.isneginf(want), 0.0, wsign))
