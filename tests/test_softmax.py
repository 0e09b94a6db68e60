"""The test matrix for softmax, log_softmax and logsumexp (SPEC §1–§3).

Every test that takes ``xp`` runs on every backend of the fixture; on
``jax_jit`` the three functions run under ``jax.jit`` and on ``dask`` with
computation forbidden (they are tagged with ``lazy_xp_function`` below).
References come from mpmath at 50 digits, SciPy, or closed forms.
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
import scipy.special
from array_api_compat import device as xp_device
from array_api_extra.testing import lazy_xp_function

import portable_softmax as ps
from backends import REGISTRY
from portable_softmax import log_softmax, logsumexp, softmax
from support import assert_close, assert_namespace_dtype, to_numpy

for _f in (softmax, log_softmax, logsumexp):
    lazy_xp_function(_f)

INF = math.inf
NAN = math.nan
EPS64 = float(np.finfo(np.float64).eps)
EPS32 = float(np.finfo(np.float32).eps)


# ----------------------------------------------------------------------------------------- helpers


def get_dtype(xp, library, name):
    """The dtype called ``name`` in ``xp``; skip where the backend has none."""
    if name == "bfloat16":
        if library.startswith("torch"):
            import torch

            return torch.bfloat16
        if library.startswith("jax"):
            import jax.numpy as jnp

            return jnp.bfloat16
        pytest.skip(f"{library} has no bfloat16")
    if name == "float16" and library.startswith("dask"):
        return np.float16
    dt = getattr(xp, name, None)
    if dt is None:
        pytest.skip(f"{library} has no {name}")
    return dt


def arr(xp, values, dtype=None):
    """An ``xp`` array from anything NumPy reads (float64 unless ``dtype``)."""
    a = np.asarray(values, dtype=np.float64)
    return xp.asarray(a, dtype=xp.float64 if dtype is None else dtype)


def host(a):
    return to_numpy(a).astype(np.float64)


def assert_same_device(out, x):
    assert xp_device(out) == xp_device(x), (xp_device(out), xp_device(x))


def mp_reference(row):
    """(softmax, log_softmax, logsumexp) of one row of exact doubles at 50 digits."""
    with mpmath.workdps(50):
        xs = [mpmath.mpf(float(v)) for v in row]
        m = max(xs)
        if m == -mpmath.inf or m != m:
            return np.array([float(m)] * len(xs)), np.array([float(m)] * len(xs)), float(m)
        es = [mpmath.exp(v - m) for v in xs]
        z = mpmath.fsum(es)
        # log1p keeps the tiny logsumexp([0, -700]) = 1e-304 that 1 + e**-700 would lose
        n_top = sum(1 for v in xs if v == m)
        rest = mpmath.fsum(e for v, e in zip(xs, es, strict=True) if v != m)
        logz = mpmath.log1p(rest + (n_top - 1))
        s = [float(e / z) for e in es]
        ls = [float(v - m - logz) for v in xs]
        return np.array(s), np.array(ls), float(m + logz)


def mp_reference_rows(x2d):
    refs = [mp_reference(r) for r in x2d]
    return (
        np.stack([r[0] for r in refs]),
        np.stack([r[1] for r in refs]),
        np.array([r[2] for r in refs]),
    )


def assert_within(actual, desired, tol, what=""):
    """|actual - desired| <= tol elementwise; infinities must match exactly."""
    actual = np.asarray(actual, dtype=np.float64)
    desired = np.asarray(desired, dtype=np.float64)
    assert actual.shape == desired.shape, (actual.shape, desired.shape)
    assert not np.isnan(actual).any(), f"{what}: NaN in result"
    inf = np.isinf(desired)
    np.testing.assert_array_equal(actual[inf], desired[inf], err_msg=what)
    err = np.abs(actual[~inf] - desired[~inf])
    tol = np.broadcast_to(tol, desired.shape)[~inf]
    bad = err > tol
    if bad.any():
        i = int(np.argmax(err / np.maximum(tol, 1e-320)))
        msg = (
            f"{what}: {int(bad.sum())} of {bad.size} entries out of tolerance; worst: "
            f"actual={actual[~inf][i]!r} desired={desired[~inf][i]!r} "
            f"err={err[i]:.3e} tol={tol[i]:.3e}"
        )
        raise AssertionError(msg)


# ------------------------------------------------------------------------- SPEC §3: special values

# (row, softmax, log_softmax, logsumexp) for rows of length 4.
_L3 = math.log(1 / 3)
SPECIAL_ROWS = {
    "nan": ([1.0, NAN, 2.0, 3.0], [NAN] * 4, [NAN] * 4, NAN),
    "nan_only": ([NAN, NAN, NAN, NAN], [NAN] * 4, [NAN] * 4, NAN),
    "nan_and_posinf": ([INF, NAN, -INF, 0.0], [NAN] * 4, [NAN] * 4, NAN),
    "nan_and_neginf": ([-INF, -INF, NAN, -INF], [NAN] * 4, [NAN] * 4, NAN),
    "one_posinf": ([1.0, INF, -INF, 3.0], [0, 1, 0, 0], [-INF, 0, -INF, -INF], INF),
    "one_posinf_rest_neginf": ([-INF, -INF, -INF, INF], [0, 0, 0, 1], [-INF, -INF, -INF, 0], INF),
    "three_posinf": ([INF, 1.0, INF, INF], [1 / 3, 0, 1 / 3, 1 / 3], [_L3, -INF, _L3, _L3], INF),
    "all_posinf": ([INF] * 4, [0.25] * 4, [math.log(0.25)] * 4, INF),
    "all_neginf": ([-INF] * 4, [0.0] * 4, [-INF] * 4, -INF),
    "some_neginf": (
        [-INF, 0.0, 0.0, -INF],
        [0, 0.5, 0.5, 0],
        [-INF, -math.log(2), -math.log(2), -INF],
        math.log(2),
    ),
}
ORDINARY_ROW = [0.5, -1.0, 2.0, 0.0]


def _ordinary_expected():
    s, ls, lse = mp_reference(ORDINARY_ROW)
    return ORDINARY_ROW, s, ls, lse


def _check_special(xp, x, exp_s, exp_ls, exp_lse, *, axis, rtol):
    s = softmax(x, axis=axis)
    ls = log_softmax(x, axis=axis)
    lse = logsumexp(x, axis=axis)
    for name, got, want in (
        ("softmax", s, exp_s),
        ("log_softmax", ls, exp_ls),
        ("logsumexp", lse, exp_lse),
    ):
        try:
            assert_close(got, want, xp=xp, dtype=x.dtype, rtol=rtol, atol=0)
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from None


@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
def test_special_values_single_row(xp, library, dtype_name, native):
    """Each row of the table alone (a fast path sees only that row)."""
    dt = get_dtype(xp, library, dtype_name)
    rtol = 1e-6 if dtype_name == "float32" else 1e-14
    failures = []
    for case in sorted(SPECIAL_ROWS):
        row, exp_s, exp_ls, exp_lse = SPECIAL_ROWS[case]
        try:
            with ps.native_kernels(native):
                _check_special(xp, arr(xp, row, dt), exp_s, exp_ls, exp_lse, axis=-1, rtol=rtol)
        except AssertionError as exc:
            failures.append(f"{case} {row}: {exc}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
@pytest.mark.parametrize("axis", [-1, 0], ids=["last_axis", "first_axis"])
def test_special_values_all_rows_together(xp, library, dtype_name, axis, native):
    """Every special row stacked with ordinary rows: each row keeps its own answer."""
    cases = [
        _ordinary_expected(),
        *(SPECIAL_ROWS[k] for k in sorted(SPECIAL_ROWS)),
        _ordinary_expected(),
    ]
    x = np.array([c[0] for c in cases], dtype=np.float64)
    es = np.array([c[1] for c in cases], dtype=np.float64)
    els = np.array([c[2] for c in cases], dtype=np.float64)
    else_ = np.array([c[3] for c in cases], dtype=np.float64)
    if axis == 0:
        x, es, els = x.T, es.T, els.T
    dt = get_dtype(xp, library, dtype_name)
    rtol = 1e-6 if dtype_name == "float32" else 1e-14
    with ps.native_kernels(native):
        _check_special(xp, arr(xp, x, dt), es, els, else_, axis=axis, rtol=rtol)


@pytest.mark.parametrize("shape", [(0,), (3, 0), (0, 4)])
def test_special_values_empty(xp, shape):
    x = xp.zeros(shape, dtype=xp.float64)
    s = softmax(x)
    ls = log_softmax(x)
    assert_namespace_dtype(s, xp, xp.float64, shape)
    assert_namespace_dtype(ls, xp, xp.float64, shape)
    lse = logsumexp(x)
    assert_close(lse, np.full(shape[:-1], -INF), xp=xp, dtype=xp.float64)
    value, sign = logsumexp(x, return_sign=True)
    assert_close(value, np.full(shape[:-1], -INF), xp=xp, dtype=xp.float64)
    # Deliberately 0 (SciPy says -1): the empty sum is 0, whose sign is 0.
    assert_close(sign, np.zeros(shape[:-1]), xp=xp, dtype=xp.float64)
    lse_k = logsumexp(x, keepdims=True)
    assert_close(lse_k, np.full((*shape[:-1], 1), -INF), xp=xp, dtype=xp.float64)


def test_special_values_empty_other_axis(xp):
    """Length 0 along a non-reduced axis gives empty results of the right shape."""
    x = xp.zeros((0, 3), dtype=xp.float32)
    assert_namespace_dtype(softmax(x), xp, xp.float32, (0, 3))
    assert_namespace_dtype(log_softmax(x), xp, xp.float32, (0, 3))
    assert_namespace_dtype(logsumexp(x), xp, xp.float32, (0,))
    assert_close(logsumexp(x, axis=0), [-INF] * 3, xp=xp, dtype=xp.float32)


# ------------------------------------------------------------------------------------------- where


def test_where_fully_masked_rows(xp, native):
    x = arr(xp, [[1.0, 2.0, 3.0], [NAN, INF, -INF], [0.0, 0.0, 0.0]])
    where = xp.asarray([[False], [False], [True]])
    with ps.native_kernels(native):
        assert_close(
            softmax(x, where=where), [[0, 0, 0], [0, 0, 0], [1 / 3] * 3], xp=xp, rtol=1e-15
        )
        assert_close(
            log_softmax(x, where=where),
            [[-INF] * 3, [-INF] * 3, [-math.log(3)] * 3],
            xp=xp,
            rtol=1e-15,
        )
        assert_close(logsumexp(x, where=where), [-INF, -INF, math.log(3)], xp=xp, rtol=1e-15)


def test_where_masks_nan_and_inf(xp):
    """Masked entries take no part even when they hold NaN or ±inf."""
    x = arr(xp, [[NAN, 1.0, INF, 2.0], [-INF, 3.0, NAN, INF]])
    where = xp.asarray([[False, True, False, True], [True, True, False, False]])
    s_ref, ls_ref, lse_ref = mp_reference([1.0, 2.0])
    exp_s = [[0, s_ref[0], 0, s_ref[1]], [0, 1, 0, 0]]
    exp_ls = [[-INF, ls_ref[0], -INF, ls_ref[1]], [-INF, 0, -INF, -INF]]
    exp_lse = [lse_ref, 3.0]
    assert_close(softmax(x, where=where), exp_s, xp=xp, rtol=1e-15)
    assert_close(log_softmax(x, where=where), exp_ls, xp=xp, rtol=1e-15)
    assert_close(logsumexp(x, where=where), exp_lse, xp=xp, rtol=1e-15)


def test_where_broadcasts_and_matches_subset(xp):
    rng = np.random.default_rng(1)
    xn = rng.standard_normal((3, 6))
    mask = np.array([True, False, True, True, False, True])
    x = arr(xp, xn)
    where = xp.asarray(mask)
    sub = xn[:, mask]
    exp_s = np.zeros_like(xn)
    exp_s[:, mask] = scipy.special.softmax(sub, axis=-1)
    exp_ls = np.full_like(xn, -INF)
    exp_ls[:, mask] = scipy.special.log_softmax(sub, axis=-1)
    assert_close(softmax(x, where=where), exp_s, xp=xp, rtol=1e-13)
    assert_close(log_softmax(x, where=where), exp_ls, xp=xp, rtol=1e-13)
    assert_close(
        logsumexp(x, where=where), scipy.special.logsumexp(sub, axis=-1), xp=xp, rtol=1e-13
    )
    # along axis 0 with a column mask of shape (3, 1)
    col = np.array([[True], [False], [True]])
    exp0 = np.zeros_like(xn)
    exp0[[0, 2]] = scipy.special.softmax(xn[[0, 2]], axis=0)
    assert_close(softmax(x, axis=0, where=xp.asarray(col)), exp0, xp=xp, rtol=1e-13)


def test_where_with_tuple_axes_and_keepdims(xp):
    rng = np.random.default_rng(2)
    xn = rng.standard_normal((2, 3, 4))
    mask = rng.random((2, 3, 4)) > 0.3
    x = arr(xp, xn)
    where = xp.asarray(mask)
    ref = scipy.special.logsumexp(np.where(mask, xn, -INF), axis=(0, 2), keepdims=True)
    assert_close(logsumexp(x, axis=(0, 2), keepdims=True, where=where), ref, xp=xp, rtol=1e-13)
    s = softmax(x, axis=(0, 2), where=where)
    exp_s = np.where(mask, np.exp(np.where(mask, xn, -INF) - ref), 0.0)
    assert_close(s, exp_s, xp=xp, rtol=1e-13, atol=1e-300)


def test_where_must_be_boolean(xp):
    x = arr(xp, [[1.0, 2.0, 3.0]])
    for bad in (xp.asarray([1, 0, 1]), arr(xp, [1.0, 0.0, 1.0])):
        for f in (softmax, log_softmax, logsumexp):
            with pytest.raises(TypeError, match="where"):
                f(x, where=bad)


def test_where_not_broadcastable(xp):
    x = arr(xp, np.zeros((3, 4)))
    bad = xp.asarray([True, False, True])
    for f in (softmax, log_softmax, logsumexp):
        with pytest.raises(ValueError, match="where"):
            f(x, where=bad)


# ------------------------------------------------------------------------------- axes and keepdims


@pytest.mark.parametrize(
    ("shape", "axis"),
    [
        ((7,), -1),
        ((7,), 0),
        ((3, 5), -1),
        ((3, 5), 0),
        ((3, 5), -2),
        ((2, 3, 4), 1),
        ((2, 3, 4), (0, 2)),
        ((2, 3, 4), (-1, -2)),
        ((2, 3, 4), (0, 1, 2)),
        ((2, 3, 4, 2), (1, 3)),
    ],
)
def test_axes_against_scipy(xp, shape, axis, native):
    rng = np.random.default_rng(3)
    xn = rng.standard_normal(shape) * 5
    x = arr(xp, xn)
    with ps.native_kernels(native):
        s = softmax(x, axis=axis)
        ls = log_softmax(x, axis=axis)
        lse = logsumexp(x, axis=axis)
        lsek = logsumexp(x, axis=axis, keepdims=True)
    assert_close(s, scipy.special.softmax(xn, axis=axis), xp=xp, dtype=xp.float64, rtol=1e-13)
    # SciPy's log_softmax is itself off by an ulp of the O(1) terms near 0
    assert_close(
        ls,
        scipy.special.log_softmax(xn, axis=axis),
        xp=xp,
        dtype=xp.float64,
        rtol=1e-13,
        atol=4 * EPS64,
    )
    assert_close(lse, scipy.special.logsumexp(xn, axis=axis), xp=xp, dtype=xp.float64, rtol=1e-13)
    assert_close(
        lsek,
        scipy.special.logsumexp(xn, axis=axis, keepdims=True),
        xp=xp,
        dtype=xp.float64,
        rtol=1e-13,
    )
    # a tuple of axes normalises jointly: the probabilities over them sum to 1
    axes = axis if isinstance(axis, tuple) else (axis,)
    np.testing.assert_allclose(host(s).sum(axis=axes), 1.0, rtol=1e-13)


@pytest.mark.parametrize("bad_axis", [2, -3, 5, (0, 2), (-3, 1)])
def test_axis_out_of_bounds(xp, bad_axis):
    x = arr(xp, np.zeros((2, 3)))
    for f in (softmax, log_softmax, logsumexp):
        with pytest.raises(ValueError, match=r"axis -?\d.*ndim 2"):
            f(x, axis=bad_axis)


# ------------------------------------------------------------------------------------- logsumexp b


def _b_cases():
    return {
        "positive": ([[0.5, 1.0, -2.0], [3.0, 0.0, 1.0]], [[1.0, 2.0, 0.5], [0.1, 3.0, 1.0]]),
        "negative_total": ([[1.0, 2.0, 0.0]], [[1.0, -1.0, 0.5]]),
        "positive_total_with_negative_b": ([[3.0, 2.0, 0.0]], [[1.0, -1.0, 0.5]]),
        "zero_total": ([[1.0, 1.0, 5.0]], [[1.0, -1.0, 0.0]]),
        "zero_hides_posinf": ([[1.0, INF, 2.0]], [[1.0, 0.0, 1.0]]),
        "zero_hides_nan": ([[1.0, NAN, 2.0]], [[1.0, 0.0, 1.0]]),
        "zero_hides_neginf_and_inf": ([[-INF, INF, 2.0, NAN]], [[0.0, 0.0, -3.0, 0.0]]),
        "all_zero_b": ([[1.0, 2.0, 3.0]], [[0.0, 0.0, 0.0]]),
        "posinf_with_weight": ([[1.0, INF, 2.0]], [[1.0, 2.0, 1.0]]),
        "large_magnitude": ([[1e300, 1e300, -1e300]], [[2.0, -0.5, 7.0]]),
        "tiny_weights": ([[700.0, 690.0]], [[1e-300, 1e-300]]),
    }


@pytest.mark.parametrize("case", sorted(_b_cases()))
def test_logsumexp_b_against_scipy(xp, case):
    xn, bn = (np.array(v, dtype=np.float64) for v in _b_cases()[case])
    with np.errstate(all="ignore"):
        ref = scipy.special.logsumexp(xn, axis=-1, b=bn)
        ref_v, ref_s = scipy.special.logsumexp(xn, axis=-1, b=bn, return_sign=True)
    x, b = arr(xp, xn), arr(xp, bn)
    # max + log|total| cancels: allow a few ulp of the larger of the two terms
    finite = np.abs(xn[np.isfinite(xn)])
    atol = 8 * EPS64 * max(finite.max(initial=0.0), 700.0 if case == "tiny_weights" else 0.0)
    assert_close(logsumexp(x, b=b), ref, xp=xp, dtype=xp.float64, rtol=1e-14, atol=atol)
    value, sign = logsumexp(x, b=b, return_sign=True)
    assert_close(value, ref_v, xp=xp, dtype=xp.float64, rtol=1e-14, atol=atol)
    assert_close(sign, ref_s, xp=xp, dtype=xp.float64)


def test_logsumexp_b_negative_gives_nan_or_sign(xp):
    x = arr(xp, [1.0, 2.0])
    b = arr(xp, [1.0, -1.0])
    true = math.log(math.exp(2.0) - math.exp(1.0))
    assert_close(logsumexp(x, b=b), NAN, xp=xp)
    value, sign = logsumexp(x, b=b, return_sign=True)
    assert_close(value, true, xp=xp, rtol=1e-14)
    assert_close(sign, -1.0, xp=xp)


def test_logsumexp_b_broadcasts_and_keepdims(xp):
    rng = np.random.default_rng(4)
    xn = rng.standard_normal((2, 3, 4))
    bn = rng.random(4) + 0.1
    x, b = arr(xp, xn), arr(xp, bn)
    for axis in (-1, (0, 2), 1):
        for keepdims in (False, True):
            ref = scipy.special.logsumexp(xn, axis=axis, b=bn, keepdims=keepdims)
            assert_close(logsumexp(x, axis=axis, b=b, keepdims=keepdims), ref, xp=xp, rtol=1e-13)
    # b as a 0-d scale adds log(b)
    ref = scipy.special.logsumexp(xn, axis=-1) + math.log(2.5)
    assert_close(logsumexp(x, b=arr(xp, 2.5)), ref, xp=xp, rtol=1e-13)


def test_logsumexp_b_not_broadcastable(xp):
    x = arr(xp, np.zeros((3, 4)))
    with pytest.raises(ValueError, match="b"):
        logsumexp(x, b=arr(xp, [1.0, 2.0, 3.0]))


def test_logsumexp_b_with_where(xp):
    xn = np.array([[1.0, NAN, 2.0, 0.5]])
    bn = np.array([[2.0, 1.0, -1.0, 3.0]])
    mask = np.array([[True, False, True, False]])
    ref_v, ref_s = scipy.special.logsumexp(xn[mask], b=bn[mask], return_sign=True)
    value, sign = logsumexp(arr(xp, xn), b=arr(xp, bn), where=xp.asarray(mask), return_sign=True)
    assert_close(value, [ref_v], xp=xp, rtol=1e-14)
    assert_close(sign, [ref_s], xp=xp)


def test_logsumexp_return_sign_without_b(xp):
    x = arr(xp, [[1.0, 2.0], [-INF, -INF], [NAN, 1.0], [INF, 0.0]])
    value, sign = logsumexp(x, return_sign=True)
    assert_close(
        value, [math.log(math.e + math.e**2), -INF, NAN, INF], xp=xp, dtype=xp.float64, rtol=1e-14
    )
    assert_close(sign, [1.0, 0.0, NAN, 1.0], xp=xp, dtype=xp.float64)
    value_k, sign_k = logsumexp(x, return_sign=True, keepdims=True)
    assert_namespace_dtype(value_k, xp, xp.float64, (4, 1))
    assert_namespace_dtype(sign_k, xp, xp.float64, (4, 1))


@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
def test_logsumexp_b_dtype(xp, library, dtype_name):
    dt = get_dtype(xp, library, dtype_name)
    x = arr(xp, [1.0, 2.0, 3.0], dt)
    out = logsumexp(x, b=arr(xp, [1.0, 1.0, 1.0], dt))
    assert_close(out, scipy.special.logsumexp([1.0, 2.0, 3.0]), xp=xp, dtype=dt, rtol=1e-6)
    # integer weights keep x's dtype
    out = logsumexp(x, b=xp.asarray([1, 2, 0]))
    assert_close(
        out, scipy.special.logsumexp([1.0, 2.0, 3.0], b=[1, 2, 0]), xp=xp, dtype=dt, rtol=1e-6
    )


# --------------------------------------------------------------------------------------- §1 errors


@pytest.mark.parametrize("kind", ["int64", "int32", "uint8", "bool", "complex128"])
def test_non_floating_arrays_raise_type_error(xp, library, kind):
    if kind == "bool":
        x = xp.asarray([True, False])
        pattern = r"bool"
    elif kind.startswith("complex"):
        x = xp.asarray([1.0 + 1.0j, 2.0])
        pattern = r"complex"
    else:
        x = xp.asarray([1, 2, 3], dtype=getattr(xp, kind))
        pattern = kind
    for f in (softmax, log_softmax, logsumexp):
        with pytest.raises(TypeError, match=pattern) as info:
            f(x)
        assert "cast" in str(info.value)


def test_scalar_input_raises_value_error(xp):
    for f in (softmax, log_softmax, logsumexp):
        with pytest.raises(ValueError, match="ndim 0"):
            f(3.0)
        with pytest.raises(ValueError, match="ndim 0"):
            f(xp.asarray(3.0, dtype=xp.float64))


def test_lists_give_numpy_float64():
    out = softmax([1, 2, 3])
    assert type(out) is np.ndarray
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, scipy.special.softmax([1.0, 2.0, 3.0]), rtol=1e-15)
    out = log_softmax([[1, 2], [3, 5]], axis=0)
    assert type(out) is np.ndarray and out.dtype == np.float64
    np.testing.assert_allclose(
        out, scipy.special.log_softmax([[1.0, 2.0], [3.0, 5.0]], axis=0), rtol=1e-15, atol=4 * EPS64
    )
    out = logsumexp([0.0, 0.0])
    assert isinstance(out, np.ndarray | np.floating) and out.dtype == np.float64
    assert float(out) == pytest.approx(math.log(2), rel=1e-15)
    out = logsumexp((1.0, 2.0), b=[1, -1], return_sign=True)
    assert out[1] == -1.0


def test_seed_example_lists():
    out = softmax([1000, 2000, 3000, 4000, 5000])
    assert type(out) is np.ndarray and out.dtype == np.float64
    np.testing.assert_array_equal(out, [0.0, 0.0, 0.0, 0.0, 1.0])


def _make(name, values, **kw):
    values = np.asarray(values, **kw)
    if name == "numpy":
        return values
    if name == "torch":
        import torch

        return torch.asarray(values)
    if name == "jax":
        import jax.numpy as jnp

        return jnp.asarray(values)
    if name == "array_api_strict":
        import array_api_strict

        return array_api_strict.asarray(values)
    if name == "dask":
        import dask.array as da

        return da.from_array(values)
    raise AssertionError(name)


@pytest.mark.parametrize(
    ("lib_x", "lib_other"),
    [
        ("numpy", "torch"),
        ("torch", "numpy"),
        ("torch", "jax"),
        ("jax", "torch"),
        ("numpy", "jax"),
        ("numpy", "array_api_strict"),
        ("array_api_strict", "numpy"),
        ("dask", "torch"),
    ],
)
def test_mixing_libraries_raises_type_error(lib_x, lib_other):
    x = _make(lib_x, [[1.0, 2.0, 3.0]])
    where = _make(lib_other, [[True, False, True]])
    b = _make(lib_other, [[1.0, 2.0, 3.0]])
    for f in (softmax, log_softmax, logsumexp):
        with pytest.raises(TypeError, match="same array library"):
            f(x, where=where)
    with pytest.raises(TypeError, match="same array library"):
        logsumexp(x, b=b)


# ----------------------------------------------------------------- namespace, dtype, shape, device


@pytest.mark.parametrize("dtype_name", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize("shape", [(1,), (2, 3, 4)])
def test_output_namespace_dtype_shape_device(xp, library, dtype_name, shape):
    dt = get_dtype(xp, library, dtype_name)
    rng = np.random.default_rng(5)
    x = arr(xp, rng.standard_normal(shape), dt)
    for f in (softmax, log_softmax):
        out = f(x)
        assert_namespace_dtype(out, xp, dt, shape)
        assert_same_device(out, x)
    out = logsumexp(x)
    assert_namespace_dtype(out, xp, dt, shape[:-1])
    assert_same_device(out, x)
    out = logsumexp(x, keepdims=True)
    assert_namespace_dtype(out, xp, dt, (*shape[:-1], 1))
    value, sign = logsumexp(x, return_sign=True)
    assert_namespace_dtype(value, xp, dt, shape[:-1])
    assert_namespace_dtype(sign, xp, dt, shape[:-1])
    assert_same_device(sign, x)
    where = xp.asarray(np.ones(shape, dtype=bool))
    out = softmax(x, where=where)
    assert_namespace_dtype(out, xp, dt, shape)
    assert_same_device(out, x)


def test_results_stay_lazy_on_dask(xp, library):
    x = arr(xp, np.random.default_rng(6).standard_normal((4, 5)))
    outs = [
        softmax(x),
        log_softmax(x),
        logsumexp(x),
        *logsumexp(x, b=arr(xp, np.ones(5)), return_sign=True),
        softmax(x, where=xp.asarray(np.arange(5) > 1)),
        softmax(x, axis=(0, 1)),
    ]
    if library.startswith("dask"):
        import dask.array as da

        for out in outs:
            assert isinstance(out, da.Array), type(out)
    if library in ("jax", "jax_jit"):
        import jax

        for out in outs:
            assert isinstance(out, jax.Array), type(out)
    assert_close(outs[0], scipy.special.softmax(host(x), axis=-1), xp=xp, rtol=1e-13)


# --------------------------------------------------------------------------------------- stability


@pytest.mark.parametrize("dtype_name", ["float16", "bfloat16", "float32", "float64"])
def test_seed_example_is_exact(xp, library, dtype_name):
    dt = get_dtype(xp, library, dtype_name)
    # (in bfloat16 3000 and 5000 round to neighbours; the answer is the same)
    x = arr(xp, [1000.0, 2000.0, 3000.0, 4000.0, 5000.0], dt)
    out = softmax(x)
    assert_namespace_dtype(out, xp, dt, (5,))
    np.testing.assert_array_equal(host(out), [0.0, 0.0, 0.0, 0.0, 1.0])
    ls = host(log_softmax(x))
    assert ls[-1] == 0.0 and np.all(np.isfinite(ls[:-1])) and np.all(ls[:-1] < -900)
    lse = host(logsumexp(x))
    assert lse == host(x)[-1]


def _extreme_rows(dtype_np_max):
    big = dtype_np_max
    rows = [
        [big, big, -big, 0.0],
        [big, big / 2, -big / 2, -big],
        [-big, -big, -big, -big],
        [big, big, big, big],
        [-big, -big / 2, 0.0, 1.0],
        [big / 2, big / 2, 0.0, -1.0],
    ]
    return np.array(rows, dtype=np.float64)


def _reference_in(xp_ref_x, axis=-1):
    """float64 (long double for the row sums is unnecessary) references via SciPy."""
    return (
        scipy.special.softmax(xp_ref_x, axis=axis),
        scipy.special.log_softmax(xp_ref_x, axis=axis),
        scipy.special.logsumexp(xp_ref_x, axis=axis),
    )


@pytest.mark.parametrize("dtype_name", ["float16", "bfloat16", "float32", "float64"])
def test_stability_finfo_max_rows(xp, library, dtype_name, native):
    dt = get_dtype(xp, library, dtype_name)
    big = float(np.finfo(np.float16).max) if dtype_name == "float16" else float(xp.finfo(dt).max)
    xn = _extreme_rows(big)
    x = arr(xp, xn, dt)
    xh = host(x)  # the values actually held in dt
    with ps.native_kernels(native), np.errstate(all="ignore"):
        s, ls, lse = host(softmax(x)), host(log_softmax(x)), host(logsumexp(x))
        rs, rls, rlse = _reference_in(xh)
    assert not np.isnan(s).any() and not np.isnan(ls).any() and not np.isnan(lse).any()
    np.testing.assert_allclose(
        s, rs, rtol=1e-2 if dtype_name in ("float16", "bfloat16") else 1e-6, atol=0
    )
    np.testing.assert_allclose(s.sum(axis=-1), 1.0, rtol=1e-2)
    # the maximum is returned finite: lse = max + log(k) rounds back to max
    assert np.all(np.isfinite(lse)), lse
    np.testing.assert_allclose(
        lse, rlse, rtol=1e-2 if dtype_name in ("float16", "bfloat16") else 1e-6
    )
    # log_softmax: 0 or log(1/k) at the maxima, never NaN, never +inf
    assert np.all(ls <= 0.0)
    top = xh == xh.max(axis=-1, keepdims=True)
    np.testing.assert_allclose(ls[top], rls[top], rtol=1e-2)


@pytest.mark.parametrize("dtype_name", ["float16", "bfloat16", "float32", "float64"])
def test_stability_random_magnitudes(xp, library, dtype_name):
    dt = get_dtype(xp, library, dtype_name)
    big = float(np.finfo(np.float16).max) if dtype_name == "float16" else float(xp.finfo(dt).max)
    top_exp = int(math.floor(math.log10(big)))
    rng = np.random.default_rng(7)
    exps = list(range(0, top_exp + 1, max(1, top_exp // 8)))
    rows = [np.clip(rng.standard_normal(64) * 10.0**k, -big, big) for k in exps]
    rows.append(np.clip(rng.standard_normal(64) * big / 3, -big, big))
    xn = np.array(rows)
    x = arr(xp, xn, dt)
    xh = host(x)
    s, ls, lse = host(softmax(x)), host(log_softmax(x)), host(logsumexp(x))
    with np.errstate(all="ignore"):
        rs, rls, rlse = _reference_in(xh)
    for name, a in (("softmax", s), ("log_softmax", ls), ("logsumexp", lse)):
        assert not np.isnan(a).any(), name
    assert np.all(np.isfinite(lse))
    assert np.all((s >= 0) & (s <= 1))
    half = dtype_name in ("float16", "bfloat16")
    tol = 1e-2 if half else (4e-6 if dtype_name == "float32" else 1e-12)
    np.testing.assert_allclose(s.sum(axis=-1), 1.0, rtol=tol)
    np.testing.assert_allclose(lse, rlse, rtol=tol)
    # log_softmax where the reference is finite in the input dtype
    ok = np.isfinite(rls) & (np.abs(rls) < big)
    np.testing.assert_allclose(ls[ok], rls[ok], rtol=tol, atol=tol)


@pytest.mark.parametrize("n", [1, 7, 1000, 100_000])
@pytest.mark.parametrize("dtype_name", ["float16", "bfloat16", "float32", "float64"])
def test_stability_row_lengths(xp, library, dtype_name, n):
    dt = get_dtype(xp, library, dtype_name)
    rng = np.random.default_rng(8)
    xn = rng.standard_normal((2, n)) * 20
    xn[1] += 3e4 if dtype_name != "float16" else 3e3
    x = arr(xp, xn, dt)
    xh = host(x)
    s, ls, lse = host(softmax(x)), host(log_softmax(x)), host(logsumexp(x))
    rs, rls, rlse = _reference_in(xh)
    half = dtype_name in ("float16", "bfloat16")
    if n == 1:
        np.testing.assert_array_equal(s, 1.0)
        np.testing.assert_array_equal(ls, 0.0)
        np.testing.assert_array_equal(lse, xh[:, 0])
        return
    tol = 8e-3 if half else (4e-6 if dtype_name == "float32" else 1e-12)
    np.testing.assert_allclose(s.sum(axis=-1), 1.0, rtol=tol)
    np.testing.assert_allclose(s, rs, rtol=tol, atol=1e-6 if half else 1e-30)
    np.testing.assert_allclose(lse, rlse, rtol=tol)
    big = rs > 1e-3
    np.testing.assert_allclose(ls[big], rls[big], rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype_name", ["float16", "bfloat16"])
def test_half_precision_computed_in_float32(xp, library, dtype_name):
    """Half inputs give exactly the float32 computation cast down."""
    dt = get_dtype(xp, library, dtype_name)
    rng = np.random.default_rng(9)
    xn = rng.standard_normal((4, 300)) * 8
    xn[0, :3] = [60000.0, 60000.0, -60000.0] if dtype_name == "float16" else [3e38, 3e38, -3e38]
    x = arr(xp, xn, dt)
    x32 = xp.astype(x, xp.float32)
    for f in (softmax, log_softmax, logsumexp):
        out = f(x)
        assert out.dtype == dt
        want = xp.astype(f(x32), dt)
        np.testing.assert_array_equal(host(out), host(want), err_msg=f.__name__)
    # ... which beats naive half arithmetic: the row sums are 1 to half's rounding
    s = host(softmax(x))
    np.testing.assert_allclose(s.sum(axis=-1), 1.0, rtol=4e-3 if dtype_name == "float16" else 2e-2)


# ------------------------------------------------------------------------------- accuracy (mpmath)


@pytest.mark.parametrize("n", [3, 50, 500])
def test_accuracy_float64_vs_mpmath(xp, n, native):
    rng = np.random.default_rng(n)
    # rows at scales 1, 30 and 300; the last row with ties at its maximum
    xn = rng.standard_normal((4, n)) * np.array([[1.0], [30.0], [300.0], [5.0]])
    xn[3, : n // 3 + 1] = np.abs(xn[3]).max() + 1.0
    rs, rls, rlse = mp_reference_rows(xn)
    x = arr(xp, xn)
    with ps.native_kernels(native):
        s, ls, lse = host(softmax(x)), host(log_softmax(x)), host(logsumexp(x))
    shift = np.abs(xn - xn.max(axis=-1, keepdims=True))
    # a few ulp, plus the unavoidable rounding of x - max, plus a floor for subnormals
    assert_within(s, rs, (8 * EPS64 + shift * EPS64) * rs + 1e-300, "softmax")
    assert_within(ls, rls, 8 * EPS64 * (np.abs(rls) + 1.0), "log_softmax")
    assert_within(lse, rlse, 8 * EPS64 * np.abs(rlse) + 1e-300, "logsumexp")


@pytest.mark.parametrize("n", [5, 300, 100_000])
def test_accuracy_float32(xp, n, native):
    """float32: ~2e-6 relative on probabilities above 1e-30, plus |x - max| 2**-24."""
    rng = np.random.default_rng(n)
    scales = np.array([[1.0], [10.0], [60.0]])
    xn = (rng.standard_normal((3, n)) * scales).astype(np.float32).astype(np.float64)
    if n <= 300:
        rs, rls, rlse = mp_reference_rows(xn)
    else:  # float64 is exact enough to judge float32 on long rows
        rs, rls, rlse = _reference_in(xn)
    x = arr(xp, xn, xp.float32)
    with ps.native_kernels(native):
        s, ls, lse = host(softmax(x)), host(log_softmax(x)), host(logsumexp(x))
    shift = np.abs(xn - xn.max(axis=-1, keepdims=True))
    sel = rs > 1e-30
    tol = (2e-6 + shift * 2.0**-24) * rs
    assert_within(s[sel], rs[sel], tol[sel], "softmax")
    assert_within(
        ls[sel],
        rls[sel],
        2e-6 * np.abs(rls[sel]) + 4 * EPS32 + shift[sel] * 2.0**-24,
        "log_softmax",
    )
    assert_within(lse, rlse, 2 * EPS32 * np.abs(rlse) + 2e-6, "logsumexp")


def _large_offset_rows():
    rng = np.random.default_rng(11)
    xn = 1e4 + rng.uniform(-3, 3, size=(4, 16))
    xn[1] = -1e4 + rng.uniform(-3, 3, size=16)
    xn[2, :] = 1e4 + np.arange(16) * 0.125
    return xn


def _log_softmax_tol(rls, dtype_eps):
    # 8 ulp of the (O(1)) result; x - max is exact here (Sterbenz), so no shift term
    return 8 * dtype_eps * np.abs(rls) + 2 * dtype_eps


@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
def test_log_softmax_accurate_at_large_offset(xp, library, dtype_name, native):
    """(x - max) - log(sum) keeps full accuracy at |x| ~ 1e4; x - logsumexp(x) would not."""
    dt = get_dtype(xp, library, dtype_name)
    npdt = np.float32 if dtype_name == "float32" else np.float64
    xn = _large_offset_rows().astype(npdt).astype(np.float64)
    _, rls, _ = mp_reference_rows(xn)
    with ps.native_kernels(native):
        ls = host(log_softmax(arr(xp, xn, dt)))
    assert_within(ls, rls, _log_softmax_tol(rls, float(np.finfo(npdt).eps)), "log_softmax")


@pytest.mark.parametrize("npdt", [np.float32, np.float64])
def test_naive_log_softmax_would_fail_the_large_offset_test(npdt):
    """The tolerance above has teeth: the naive x - logsumexp(x) misses it."""
    xn = _large_offset_rows().astype(npdt)
    _, rls, _ = mp_reference_rows(xn.astype(np.float64))
    naive = (xn - scipy.special.logsumexp(xn, axis=-1, keepdims=True).astype(npdt)).astype(
        np.float64
    )
    with pytest.raises(AssertionError):
        assert_within(naive, rls, _log_softmax_tol(rls, float(np.finfo(npdt).eps)), "naive")


@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
def test_logsumexp_tiny_result_one_dominant_entry(xp, library, dtype_name, native):
    """logsumexp([0, -gap]) = log1p(exp(-gap)): relative error of a few ulp."""
    dt = get_dtype(xp, library, dtype_name)
    eps = EPS32 if dtype_name == "float32" else EPS64
    gaps = [20.0, 30.0, 60.0] + ([700.0] if dtype_name == "float64" else [])
    xn = np.array([row for g in gaps for row in ([0.0, -g], [-g, 0.0], [0.0, -g - 1.0])])
    _, rls, rlse = mp_reference_rows(xn)
    x = arr(xp, xn, dt)
    with ps.native_kernels(native):
        lse = host(logsumexp(x))
        ls = host(log_softmax(x))
    assert_within(lse, rlse, 4 * eps * np.abs(rlse), "logsumexp")
    # the same holds for the log-probability of the dominant entry
    top = xn == xn.max(axis=-1, keepdims=True)
    assert_within(ls[top], rls[top], 4 * eps * np.abs(rls[top]), "log_softmax")


def test_logsumexp_tiny_result_with_ties_and_keepdims(xp):
    xn = np.array([[0.0, 0.0, -40.0], [5.0, -30.0, 5.0]])
    _, _, rlse = mp_reference_rows(xn)
    out = host(logsumexp(arr(xp, xn), keepdims=True))
    assert_within(out[:, 0], rlse, 4 * EPS64 * np.abs(rlse), "logsumexp")


# ------------------------------------------------------------------------ native and generic agree


@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
@pytest.mark.parametrize(
    ("shape", "axis"), [((5, 33), -1), ((4, 6, 5), 1), ((300, 1000), -1), ((3, 4, 5), (0, 2))]
)
def test_native_and_generic_paths_agree(xp, library, dtype_name, shape, axis):
    if not REGISTRY[library].native:
        pytest.skip("no native fast path")
    dt = get_dtype(xp, library, dtype_name)
    rng = np.random.default_rng(12)
    x = arr(xp, rng.standard_normal(shape) * 10, dt)
    eps = EPS32 if dtype_name == "float32" else EPS64
    for f in (softmax, log_softmax, logsumexp):
        with ps.native_kernels(True):
            a = host(f(x, axis=axis))
        with ps.native_kernels(False):
            b = host(f(x, axis=axis))
        np.testing.assert_allclose(a, b, rtol=64 * eps, atol=64 * eps * 10, err_msg=f.__name__)


# ---------------------------------------------------------------------------------------- autodiff
# Closed forms: d/dx sum(softmax(x) * v) = s * (v - sum(s v));
# d/dx sum(log_softmax(x) * v) = v - s * sum(v); d/dx sum(w * logsumexp(x)) = w * s.

GRAD_POINTS = {
    "random": [[0.3, -1.2, 2.0, 0.7], [5.0, 1.0, -3.0, 0.0]],
    "ties_all_zero": [[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]],
    "ties_partial": [[1.0, 1.0, 0.0, -2.0], [3.0, -1.0, 3.0, 3.0]],
    "one_dominant": [[0.0, -30.0, -40.0, -50.0], [100.0, 0.0, 0.0, 0.0]],
}
GRAD_V = np.array([[1.0, 2.0, -3.0, 0.5], [-1.0, 4.0, 0.25, 2.0]])
GRAD_W = np.array([1.5, -2.0])


def _closed_form_grads(xn, mask=None):
    xm = xn if mask is None else np.where(mask, xn, -INF)
    with np.errstate(all="ignore"):
        s = np.nan_to_num(scipy.special.softmax(xm, axis=-1), nan=0.0)
        if mask is not None:
            s = np.where(mask, s, 0.0)
    v = GRAD_V if mask is None else np.where(mask, GRAD_V, 0.0)
    g_s = s * (v - (s * v).sum(axis=-1, keepdims=True))
    g_ls = v - s * v.sum(axis=-1, keepdims=True)
    g_lse = GRAD_W[:, None] * s
    return g_s, g_ls, g_lse


def _torch_grads(xn, native, where=None):
    import torch

    out = []
    for f, wrap in (
        (softmax, lambda y: (y * torch.asarray(GRAD_V)).sum()),
        (
            log_softmax,
            lambda y: (torch.where(torch.isinf(y), 0.0, y) * torch.asarray(GRAD_V)).sum(),
        ),
        (logsumexp, lambda y: (y * torch.asarray(GRAD_W)).sum()),
    ):
        x = torch.asarray(xn, dtype=torch.float64).requires_grad_(True)
        with ps.native_kernels(native):
            y = f(x) if where is None else f(x, where=torch.asarray(where))
        wrap(y).backward()
        out.append(x.grad.numpy())
    return out


@pytest.mark.parametrize("native", [True, False], ids=["native", "generic"])
@pytest.mark.parametrize("point", sorted(GRAD_POINTS))
def test_torch_autograd_closed_form(point, native):
    pytest.importorskip("torch")
    xn = np.array(GRAD_POINTS[point])
    g_s, g_ls, g_lse = _torch_grads(xn, native)
    want_s, want_ls, want_lse = _closed_form_grads(xn)
    np.testing.assert_allclose(g_s, want_s, rtol=1e-12, atol=1e-15, err_msg="softmax")
    np.testing.assert_allclose(g_ls, want_ls, rtol=1e-12, atol=1e-15, err_msg="log_softmax")
    np.testing.assert_allclose(g_lse, want_lse, rtol=1e-12, atol=1e-15, err_msg="logsumexp")


SPECIAL_GRAD_ROWS = {
    "all_neginf": [[-INF, -INF, -INF, -INF], [0.0, 1.0, 2.0, 3.0]],
    "one_posinf": [[1.0, INF, 2.0, -INF], [0.0, 1.0, 2.0, 3.0]],
    "two_posinf": [[INF, INF, 2.0, -INF], [0.0, 1.0, 2.0, 3.0]],
    "some_neginf": [[-INF, 0.0, 1.0, -INF], [0.0, 1.0, 2.0, 3.0]],
}


def _expected_special_grads(xn):
    """Closed forms with the forward values of SPEC §3 (s of an inf row is one-hot/1/k)."""
    s = np.zeros_like(xn)
    for i, row in enumerate(xn):
        if np.isposinf(row).any():
            s[i] = np.isposinf(row) / np.isposinf(row).sum()
        elif np.isneginf(row).all():
            s[i] = 0.0
        else:
            s[i] = scipy.special.softmax(row)
    v = GRAD_V
    g_s = s * (v - (s * v).sum(axis=-1, keepdims=True))
    return g_s, GRAD_W[:, None] * s


@pytest.mark.parametrize("native", [True, False], ids=["native", "generic"])
@pytest.mark.parametrize("case", sorted(SPECIAL_GRAD_ROWS))
def test_torch_autograd_special_points_no_nan(case, native):
    pytest.importorskip("torch")
    xn = np.array(SPECIAL_GRAD_ROWS[case])
    g_s, g_ls, g_lse = _torch_grads(xn, native)
    _check_special_grads(case, xn, g_s, g_ls, g_lse)


def _check_special_grads(case, xn, g_s, g_ls, g_lse):
    """No NaN (SPEC §3); the ordinary second row has the closed-form gradient.

    On the special first row only finiteness is asserted: at an infinite input
    both 0 (an infinite entry does not move) and the closed form on the forward
    values (the limit) are defensible, and SPEC only rules out NaN.
    """
    for name, g in (("softmax", g_s), ("log_softmax", g_ls), ("logsumexp", g_lse)):
        assert np.isfinite(g).all(), f"{name} gradient not finite at {case}: {g}"
    want_s, want_lse = _expected_special_grads(xn)
    np.testing.assert_allclose(g_s[1], want_s[1], rtol=1e-12, atol=1e-15, err_msg="softmax")
    np.testing.assert_allclose(g_lse[1], want_lse[1], rtol=1e-12, atol=1e-15, err_msg="logsumexp")


def test_torch_autograd_masked_rows():
    pytest.importorskip("torch")
    xn = np.array([[NAN, 1.0, INF, 2.0], [3.0, -1.0, 0.0, 0.5]])
    mask = np.array([[False, True, False, True], [False, False, False, False]])
    g_s, g_ls, g_lse = _torch_grads(xn, True, where=mask)
    want_s, want_ls, want_lse = _closed_form_grads(np.where(mask, xn, 0.0), mask)
    for name, g, w in (
        ("softmax", g_s, want_s),
        ("log_softmax", g_ls, want_ls),
        ("logsumexp", g_lse, want_lse),
    ):
        assert not np.isnan(g).any(), f"{name} gradient has NaN: {g}"
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-15, err_msg=name)


def _jax_grads(xn, transform=None, where=None):
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    v, w = jnp.asarray(GRAD_V), jnp.asarray(GRAD_W)
    kw = {} if where is None else {"where": jnp.asarray(where)}
    fns = (
        lambda x: jnp.sum(softmax(x, **kw) * v),
        lambda x: jnp.sum(jnp.where(jnp.isinf(y := log_softmax(x, **kw)), 0.0, y) * v),
        lambda x: jnp.sum(logsumexp(x, **kw) * w),
    )
    out = []
    for f in fns:
        g = jax.grad(f)
        if transform is not None:
            g = transform(g)
        out.append(np.asarray(g(jnp.asarray(xn))))
    return out


@pytest.mark.parametrize("transform", ["none", "jit"])
@pytest.mark.parametrize("point", sorted(GRAD_POINTS))
def test_jax_grad_closed_form(point, transform):
    jax = pytest.importorskip("jax")
    xn = np.array(GRAD_POINTS[point])
    g_s, g_ls, g_lse = _jax_grads(xn, jax.jit if transform == "jit" else None)
    want_s, want_ls, want_lse = _closed_form_grads(xn)
    np.testing.assert_allclose(g_s, want_s, rtol=1e-12, atol=1e-15, err_msg="softmax")
    np.testing.assert_allclose(g_ls, want_ls, rtol=1e-12, atol=1e-15, err_msg="log_softmax")
    np.testing.assert_allclose(g_lse, want_lse, rtol=1e-12, atol=1e-15, err_msg="logsumexp")


@pytest.mark.parametrize("case", sorted(SPECIAL_GRAD_ROWS))
def test_jax_grad_special_points_no_nan(case):
    xn = np.array(SPECIAL_GRAD_ROWS[case])
    g_s, g_ls, g_lse = _jax_grads(xn)
    _check_special_grads(case, xn, g_s, g_ls, g_lse)


def test_jax_grad_masked_rows():
    xn = np.array([[NAN, 1.0, INF, 2.0], [3.0, -1.0, 0.0, 0.5]])
    mask = np.array([[False, True, False, True], [False, False, False, False]])
    g_s, g_ls, g_lse = _jax_grads(xn, where=mask)
    want_s, want_ls, want_lse = _closed_form_grads(np.where(mask, xn, 0.0), mask)
    for name, g, w in (
        ("softmax", g_s, want_s),
        ("log_softmax", g_ls, want_ls),
        ("logsumexp", g_lse, want_lse),
    ):
        assert not np.isnan(g).any(), f"{name} gradient has NaN: {g}"
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-15, err_msg=name)


def test_jax_vmap_and_grad_of_vmap():
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    xn = np.array(GRAD_POINTS["random"] + GRAD_POINTS["ties_partial"])
    x = jnp.asarray(xn)
    np.testing.assert_allclose(
        np.asarray(jax.vmap(softmax)(x)), scipy.special.softmax(xn, axis=-1), rtol=1e-14
    )
    np.testing.assert_allclose(
        np.asarray(jax.jit(jax.vmap(log_softmax))(x)),
        scipy.special.log_softmax(xn, axis=-1),
        rtol=1e-13,
        atol=4 * EPS64,
    )
    np.testing.assert_allclose(
        np.asarray(jax.vmap(logsumexp)(x)), scipy.special.logsumexp(xn, axis=-1), rtol=1e-14
    )
    # vmap over the rows of the per-row gradient of logsumexp is softmax
    g = jax.jit(jax.vmap(jax.grad(logsumexp)))(x)
    np.testing.assert_allclose(
        np.asarray(g), scipy.special.softmax(xn, axis=-1), rtol=1e-13, atol=1e-16
    )
    # vmap with in_axes=1 normalises along the other axis
    np.testing.assert_allclose(
        np.asarray(jax.vmap(softmax, in_axes=1, out_axes=1)(x)),
        scipy.special.softmax(xn, axis=0),
        rtol=1e-14,
    )
    # VJP of softmax is s * (v - sum(s v)) on every vmapped row
    v = jnp.asarray(np.tile(GRAD_V, (2, 1)))
    vjp = jax.vmap(lambda r, vr: jax.vjp(softmax, r)[1](vr)[0])(x, v)
    s = scipy.special.softmax(xn, axis=-1)
    vn = np.asarray(v)
    np.testing.assert_allclose(
        np.asarray(vjp), s * (vn - (s * vn).sum(-1, keepdims=True)), rtol=1e-12, atol=1e-15
    )
