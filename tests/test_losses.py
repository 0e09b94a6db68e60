"""cross_entropy and one_hot (SPEC §1, §2, §4) on every backend of the ``xp`` fixture.

The reference is ``torch.nn.functional.cross_entropy`` in float64 with the
class axis moved to 1.  The grid of options is shared with
``test_derivatives.py`` (which checks ``cross_entropy_grad`` on it) through
``cases.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from array_api_extra.testing import lazy_xp_function

from backends import is_lazy
from cases import REDUCTIONS, make_data, ref_kwargs, to_xp, torch_reference, xp_case
from portable_softmax import cross_entropy, cross_entropy_grad, cross_entropy_with_grad, one_hot
from support import assert_close, assert_namespace_dtype, to_numpy

torch = pytest.importorskip("torch")
F = torch.nn.functional

for _f in (cross_entropy, cross_entropy_grad, cross_entropy_with_grad, one_hot):
    lazy_xp_function(_f)


# ----------------------------------------------------------------------------------- against torch


def test_cross_entropy_matches_torch(xp, case):
    data = make_data(case)
    logits, target, kwargs = xp_case(xp, data)
    expected, _ = torch_reference(data["logits"], data["target"], data["axis"], **ref_kwargs(data))
    assert np.all(np.isfinite(expected))
    loss = cross_entropy(logits, target, data["axis"], **kwargs)
    assert_close(loss, expected, xp=xp, dtype=xp.float64, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype", ["int64", "int32", "uint8"])
@pytest.mark.parametrize(("ignore_index", "reduction"), [(None, "mean"), (2, "mean"), (2, "none")])
def test_cross_entropy_index_dtypes(xp, dtype, ignore_index, reduction):
    rng = np.random.default_rng(7)
    logits = rng.normal(size=(3, 5, 2))
    target = rng.integers(0, 5, size=(3, 2))
    target[0, 0] = 2
    weight = rng.uniform(0.5, 1.5, size=5)
    kwargs = {"reduction": reduction, "ignore_index": ignore_index, "label_smoothing": 0.1}
    expected, expected_grad = torch_reference(logits, target, 1, weight=weight, **kwargs)
    x, w = to_xp(xp, logits), to_xp(xp, weight)
    y = xp.asarray(target, dtype=getattr(xp, dtype))
    assert y.dtype == getattr(xp, dtype)
    assert_close(
        cross_entropy(x, y, 1, weight=w, **kwargs), expected, xp=xp, dtype=xp.float64, atol=1e-14
    )
    assert_close(
        cross_entropy_grad(x, y, 1, weight=w, **kwargs),
        expected_grad,
        xp=xp,
        dtype=xp.float64,
        atol=1e-14,
    )


def test_in_range_ignore_index_matches_torch(xp):
    """ignore_index may be a real class: its samples drop out, other samples keep it as a class."""
    logits = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0], [2.0, 2.0, 2.0], [0.3, 0.1, -0.2]])
    target = np.array([0, 1, 1, 2])
    weight = np.array([0.5, 2.0, 1.5])
    for red in REDUCTIONS:
        expected, _ = torch_reference(
            logits, target, -1, reduction=red, weight=weight, ignore_index=1, label_smoothing=0.3
        )
        got = cross_entropy(
            to_xp(xp, logits),
            to_xp(xp, target),
            reduction=red,
            weight=to_xp(xp, weight),
            ignore_index=1,
            label_smoothing=0.3,
        )
        assert_close(got, expected, xp=xp, dtype=xp.float64, atol=1e-14)


def test_list_inputs_give_numpy_float64():
    loss = cross_entropy([[2.0, 3.0, 4.0]], [1])
    assert isinstance(loss, np.ndarray) and loss.dtype == np.float64 and loss.shape == ()
    np.testing.assert_allclose(loss, 4.407605964444380 - 3.0, rtol=1e-14)


# -------------------------------------------------------------------------- deliberate differences


def _zero_mean_cases(xp):
    x = to_xp(xp, [[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]])
    yield "all-ignored", (x, to_xp(xp, np.array([-1, -1])), -1), {"ignore_index": -1}
    yield (
        "all-ignored-smoothed",
        (x, to_xp(xp, np.array([-1, -1])), -1),
        {"ignore_index": -1, "label_smoothing": 0.2},
    )
    yield (
        "all-ignored-weighted",
        (x, to_xp(xp, np.array([-1, -1])), -1),
        {"ignore_index": -1, "weight": to_xp(xp, [1.0, 2.0, 3.0])},
    )
    w0 = to_xp(xp, [0.0, 1.0, 0.0])
    yield "zero-weights", (x, to_xp(xp, np.array([0, 2])), -1), {"weight": w0}
    yield (
        "zero-weights-smoothed",
        (x, to_xp(xp, np.array([0, 2])), -1),
        {"weight": w0, "label_smoothing": 0.5},
    )
    empty = xp.zeros((0, 3), dtype=xp.float64)
    yield "empty-index", (empty, xp.zeros((0,), dtype=xp.int64), -1), {}
    yield (
        "empty-index-weighted",
        (empty, xp.zeros((0,), dtype=xp.int64), -1),
        {"weight": to_xp(xp, [1.0, 2.0, 3.0])},
    )
    yield "empty-prob", (empty, xp.zeros((0, 3), dtype=xp.float64), -1), {}
    yield (
        "empty-3d-middle",
        (xp.zeros((2, 3, 0), dtype=xp.float64), xp.zeros((2, 0), dtype=xp.int64), 1),
        {},
    )


@pytest.mark.parametrize(
    "name", ["all-ignored", "all-ignored-smoothed", "all-ignored-weighted", "zero-weights",
             "zero-weights-smoothed", "empty-index", "empty-index-weighted", "empty-prob",
             "empty-3d-middle"]
)  # fmt: skip
def test_mean_of_nothing_is_zero_with_zero_gradient(xp, name):
    (logits, target, axis), kwargs = dict((n, (a, k)) for n, a, k in _zero_mean_cases(xp))[name]
    loss = cross_entropy(logits, target, axis, reduction="mean", **kwargs)
    assert_close(loss, 0.0, xp=xp, dtype=xp.float64)
    grad = cross_entropy_grad(logits, target, axis, reduction="mean", **kwargs)
    assert_close(grad, np.zeros(tuple(logits.shape)), xp=xp, dtype=xp.float64)
    loss2, grad2 = cross_entropy_with_grad(logits, target, axis, reduction="mean", **kwargs)
    assert_close(loss2, 0.0, xp=xp, dtype=xp.float64)
    assert_close(grad2, np.zeros(tuple(logits.shape)), xp=xp, dtype=xp.float64)
    if "label_smoothing" not in kwargs:  # smoothing terms of other classes still add up in "sum"
        # "sum" of nothing is 0 as well (torch agrees there)
        assert_close(
            cross_entropy(logits, target, axis, reduction="sum", **kwargs),
            0.0,
            xp=xp,
            dtype=xp.float64,
        )


def test_torch_gives_nan_where_we_give_zero():
    """The difference is real: torch's mean over nothing is NaN."""
    loss, _ = torch_reference(np.ones((2, 3)), np.array([-1, -1]), -1, ignore_index=-1)
    assert np.isnan(loss)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_zero_probability_at_minus_inf_contributes_zero(xp, reduction):
    logits = np.array([[0.0, -np.inf, 1.0], [-np.inf, 2.0, -np.inf]])
    target = np.array([[0.5, 0.0, 0.5], [0.0, 1.0, 0.0]])
    # reference on the finite part: log_softmax over the finite entries
    logp0 = np.array([0.0, 1.0]) - np.logaddexp(0.0, 1.0)
    per_sample = np.array([-(0.5 * logp0[0] + 0.5 * logp0[1]), 0.0])
    expected = {"none": per_sample, "sum": per_sample.sum(), "mean": per_sample.mean()}[reduction]
    x, t = to_xp(xp, logits), to_xp(xp, target)
    assert_close(
        cross_entropy(x, t, reduction=reduction), expected, xp=xp, dtype=xp.float64, rtol=1e-14
    )
    grad = to_numpy(cross_entropy_grad(x, t, reduction=reduction))
    s0 = np.exp(logp0)
    expected_grad = np.array([[s0[0] - 0.5, 0.0, s0[1] - 0.5], [0.0, 0.0, 0.0]])
    if reduction == "mean":
        expected_grad /= 2
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-14, atol=1e-16)


def test_index_target_with_minus_inf_elsewhere_is_finite(xp):
    logits = np.array([[0.0, -np.inf, 1.0], [3.0, -np.inf, -np.inf]])
    target = np.array([2, 0])
    x, t = to_xp(xp, logits), to_xp(xp, target)
    expected = np.array([np.logaddexp(0.0, 1.0) - 1.0, 0.0])
    assert_close(
        cross_entropy(x, t, reduction="none"), expected, xp=xp, dtype=xp.float64, rtol=1e-14
    )
    grad = to_numpy(cross_entropy_grad(x, t, reduction="none"))
    assert not np.isnan(grad).any()
    np.testing.assert_allclose(grad[1], [0.0, 0.0, 0.0], atol=1e-16)


def test_ignore_index_with_probability_targets_raises(xp):
    x = to_xp(xp, [[1.0, 2.0, 3.0]])
    t = to_xp(xp, [[0.2, 0.3, 0.5]])
    for f in (cross_entropy, cross_entropy_grad, cross_entropy_with_grad):
        with pytest.raises(ValueError, match="ignore_index"):
            f(x, t, ignore_index=-1)


# ---------------------------------------------------------------------------------- SPEC §4 errors


@pytest.mark.parametrize(
    ("logits_shape", "axis", "target_shape", "target_kind"),
    [
        ((3, 4), -1, (4,), "index"),
        ((3, 4), -1, (3, 1), "index"),
        ((3, 4), -1, (3, 4), "index"),  # integer target of the probability shape
        ((3, 4), -1, (4, 3), "prob"),
        ((3, 4), -1, (3,), "prob"),  # float target of the index shape
        ((2, 3, 4), 1, (2, 3), "index"),
        ((4,), 0, (1,), "index"),
    ],
)
def test_target_shape_of_neither_form_raises(xp, logits_shape, axis, target_shape, target_kind):
    x = xp.zeros(logits_shape, dtype=xp.float64)
    t = xp.zeros(target_shape, dtype=xp.int64 if target_kind == "index" else xp.float64)
    for f in (cross_entropy, cross_entropy_grad, cross_entropy_with_grad):
        with pytest.raises(ValueError, match="matches neither form"):
            f(x, t, axis)


@pytest.mark.parametrize("reduction", ["avg", "MEAN", "", None, "batchmean"])
def test_unknown_reduction_raises(xp, reduction):
    x, t = to_xp(xp, [[1.0, 2.0]]), to_xp(xp, np.array([0]))
    for f in (cross_entropy, cross_entropy_grad):
        with pytest.raises(ValueError, match="reduction"):
            f(x, t, reduction=reduction)


@pytest.mark.parametrize("smoothing", [-0.1, 1.5, -1e-12, math.nan, math.inf])
def test_label_smoothing_outside_unit_interval_raises(xp, smoothing):
    x, t = to_xp(xp, [[1.0, 2.0]]), to_xp(xp, np.array([0]))
    for f in (cross_entropy, cross_entropy_grad):
        with pytest.raises(ValueError, match="label_smoothing"):
            f(x, t, label_smoothing=smoothing)


@pytest.mark.parametrize("weight_shape", [(2,), (4,), (1, 3), ()])
def test_weight_not_of_length_c_raises(xp, weight_shape):
    x, t = to_xp(xp, [[1.0, 2.0, 3.0]]), to_xp(xp, np.array([0]))
    w = xp.ones(weight_shape, dtype=xp.float64)
    for f in (cross_entropy, cross_entropy_grad):
        with pytest.raises(ValueError, match="weight"):
            f(x, t, weight=w)


OUT_OF_RANGE = [(3, None), (-1, None), (-2, -1)]


@pytest.mark.parametrize(("bad", "ignore_index"), OUT_OF_RANGE)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_out_of_range_class_index(xp, library, bad, ignore_index, reduction):
    """Eager backends raise; JAX and Dask give NaN for that sample, never a wrong number."""
    x = to_xp(xp, [[1.0, 2.0, 3.0], [0.5, 0.1, -2.0], [0.0, 0.0, 1.0]])
    t = to_xp(xp, np.array([1, bad, 2]))
    kwargs = {"reduction": reduction, "ignore_index": ignore_index}
    if not is_lazy(library):
        for f in (cross_entropy, cross_entropy_grad, cross_entropy_with_grad):
            with pytest.raises(ValueError, match=r"class indices must lie in \[0, 3\)"):
                f(x, t, **kwargs)
        return
    loss = to_numpy(cross_entropy(x, t, **kwargs))
    grad = to_numpy(cross_entropy_grad(x, t, **kwargs))
    if reduction == "none":
        assert np.isnan(loss[1])
        assert np.isfinite(loss[[0, 2]]).all()
    else:
        assert np.isnan(loss)
    assert np.isnan(grad[1]).all()
    if reduction == "none":
        assert np.isfinite(grad[[0, 2]]).all()


def test_out_of_range_with_uint8_raises_on_eager(xp, library):
    x = xp.zeros((2, 3), dtype=xp.float64)
    t = xp.asarray(np.array([0, 200], dtype=np.uint8))
    if is_lazy(library):
        assert np.isnan(to_numpy(cross_entropy(x, t, reduction="none"))[1])
    else:
        with pytest.raises(ValueError, match="class indices"):
            cross_entropy(x, t)


@pytest.mark.parametrize("dtype", ["int64", "int32", "bool", "complex128"])
def test_non_floating_logits_raise_type_error(xp, dtype):
    x = xp.asarray(np.array([[1, 0, 1]]).astype(dtype), dtype=getattr(xp, dtype))
    t = to_xp(xp, np.array([0]))
    kind = {"int64": "integer", "int32": "integer", "bool": "boolean", "complex128": "complex"}[
        dtype
    ]
    for f in (cross_entropy, cross_entropy_grad, cross_entropy_with_grad):
        with pytest.raises(TypeError, match=kind):
            f(x, t)


def test_non_numeric_target_dtype_raises(xp):
    x = to_xp(xp, [[1.0, 2.0]])
    t = xp.asarray(np.array([True]))
    with pytest.raises((TypeError, ValueError)):
        cross_entropy(x, t)


@pytest.mark.skip_xp_backend("numpy", reason="mixing needs a second library")
@pytest.mark.skip_xp_backend("jax_jit", reason="jit turns a NumPy argument into a tracer")
def test_mixing_libraries_raises(xp):
    x = to_xp(xp, [[1.0, 2.0, 3.0]])
    t = to_xp(xp, np.array([0]))
    with pytest.raises(TypeError, match="same array library"):
        cross_entropy(x, np.array([0]))
    with pytest.raises(TypeError, match="same array library"):
        cross_entropy(np.array([[1.0, 2.0, 3.0]]), t)
    with pytest.raises(TypeError, match="same array library"):
        cross_entropy_grad(x, t, weight=np.ones(3))


def test_mixing_numpy_logits_torch_target_raises():
    with pytest.raises(TypeError, match="same array library"):
        cross_entropy(np.array([[1.0, 2.0, 3.0]]), torch.tensor([0]))
    with pytest.raises(TypeError, match="same array library"):
        cross_entropy_grad(torch.tensor([[1.0, 2.0, 3.0]]), np.array([0]))


# ----------------------------------------------------------------------- dtype / namespace / shape


@pytest.mark.parametrize("form", ["index", "prob"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_float32_stays_float32(xp, form, reduction):
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(4, 5)).astype(np.float32)
    target = rng.integers(0, 5, size=4) if form == "index" else rng.dirichlet(np.ones(5), size=4)
    x = xp.asarray(logits, dtype=xp.float32)
    t = to_xp(xp, target, None if form == "index" else xp.float32)
    w = xp.asarray(np.linspace(0.5, 1.5, 5), dtype=xp.float32)
    expected, expected_grad = torch_reference(
        logits.astype(np.float64),
        np.asarray(to_numpy(t)),
        -1,
        reduction=reduction,
        weight=np.linspace(0.5, 1.5, 5).astype(np.float32).astype(np.float64),
    )
    shape = (4,) if reduction == "none" else ()
    loss = cross_entropy(x, t, reduction=reduction, weight=w)
    assert_namespace_dtype(loss, xp, xp.float32, shape)
    assert_close(loss, expected, xp=xp, dtype=xp.float32, rtol=1e-5)
    grad = cross_entropy_grad(x, t, reduction=reduction, weight=w)
    assert_close(grad, expected_grad, xp=xp, dtype=xp.float32, rtol=1e-5, atol=1e-7)


HALF = [
    (
        "float16",
        ("numpy", "torch", "torch_cuda", "jax", "jax_jit", "dask", "dask_distributed", "cupy"),
    ),
    ("bfloat16", ("torch", "torch_cuda", "jax", "jax_jit")),
]


@pytest.mark.parametrize(("dtype", "backends"), HALF, ids=[h[0] for h in HALF])
@pytest.mark.parametrize("form", ["index", "prob"])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_half_precision_computed_in_float32(xp, library, dtype, backends, form, reduction):
    if library not in backends or not hasattr(xp, dtype):
        pytest.skip(f"{library} has no {dtype}")
    rng = np.random.default_rng(11)
    half = getattr(xp, dtype)
    x = xp.astype(xp.asarray(rng.normal(scale=3.0, size=(6, 5)), dtype=xp.float32), half)
    if form == "index":
        t = xp.asarray(rng.integers(0, 5, size=6))
        t32 = t
    else:
        t = xp.astype(xp.asarray(rng.dirichlet(np.ones(5), size=6), dtype=xp.float32), half)
        t32 = xp.astype(t, xp.float32)
    w = xp.astype(xp.asarray(np.linspace(0.5, 1.5, 5), dtype=xp.float32), half)
    kwargs = {"reduction": reduction, "label_smoothing": 0.1}
    x32, w32 = xp.astype(x, xp.float32), xp.astype(w, xp.float32)
    for f in (cross_entropy, cross_entropy_grad):
        got = f(x, t, weight=w, **kwargs)
        assert got.dtype == half
        ref = f(x32, t32, weight=w32, **kwargs)
        assert ref.dtype == xp.float32
        np.testing.assert_array_equal(to_numpy(got), to_numpy(xp.astype(ref, half)))
    loss, grad = cross_entropy_with_grad(x, t, weight=w, **kwargs)
    assert loss.dtype == half and grad.dtype == half


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_output_shapes_and_namespace(xp, reduction):
    x = xp.zeros((2, 5, 3), dtype=xp.float64)
    t = xp.zeros((2, 3), dtype=xp.int64)
    loss = cross_entropy(x, t, 1, reduction=reduction)
    assert_namespace_dtype(loss, xp, xp.float64, (2, 3) if reduction == "none" else ())
    assert_close(
        loss,
        np.full((2, 3), math.log(5))
        if reduction == "none"
        else math.log(5) * (6 if reduction == "sum" else 1),
        xp=xp,
        rtol=1e-14,
    )
    grad = cross_entropy_grad(x, t, 1, reduction=reduction)
    assert_namespace_dtype(grad, xp, xp.float64, (2, 5, 3))


def test_dask_stays_lazy(xp, library):
    if not library.startswith("dask"):
        pytest.skip("Dask only")
    import dask.array as da

    x = da.from_array(np.random.default_rng(0).normal(size=(8, 4)), chunks=(3, 4))
    t = da.from_array(np.array([0, 1, 2, 3, 0, 1, 2, 3]), chunks=3)
    # the fixture forbids compute inside the tagged functions
    loss = cross_entropy(x, t, ignore_index=2)
    grad = cross_entropy_grad(x, t, ignore_index=2)
    pair = cross_entropy_with_grad(x, t, ignore_index=2)
    oh = one_hot(t, 4)
    for a in (loss, grad, *pair, oh):
        assert isinstance(a, da.Array)
    expected, expected_grad = torch_reference(x.compute(), t.compute(), -1, ignore_index=2)
    np.testing.assert_allclose(loss.compute(), expected, rtol=1e-12)
    np.testing.assert_allclose(grad.compute(), expected_grad, rtol=1e-12, atol=1e-15)


# ----------------------------------------------------------------------------------------- one_hot


def expected_default_float(xp, library):
    if library in ("torch", "torch_cuda"):
        return torch.get_default_dtype()
    return xp.float64  # numpy, array_api_strict, dask, cupy; jax with x64 enabled


@pytest.mark.parametrize("labels_shape", [(), (5,), (2, 3)])
@pytest.mark.parametrize("num_classes", [1, 4])
def test_one_hot_shape_values_default_dtype(xp, library, labels_shape, num_classes):
    labels = np.random.default_rng(1).integers(0, num_classes, size=labels_shape)
    out = one_hot(xp.asarray(labels), num_classes)
    dtype = expected_default_float(xp, library)
    assert_namespace_dtype(out, xp, dtype, labels_shape + (num_classes,))
    np.testing.assert_array_equal(to_numpy(out), np.eye(num_classes)[labels])


@pytest.mark.parametrize("label_dtype", ["int64", "int32", "uint8"])
@pytest.mark.parametrize("dtype", ["float32", "float64", "int32"])
def test_one_hot_explicit_dtype(xp, label_dtype, dtype):
    labels = xp.asarray(np.array([2, 0, 1, 2]), dtype=getattr(xp, label_dtype))
    out = one_hot(labels, 3, dtype=getattr(xp, dtype))
    assert_namespace_dtype(out, xp, getattr(xp, dtype), (4, 3))
    np.testing.assert_array_equal(to_numpy(out), np.eye(3)[[2, 0, 1, 2]])


def test_one_hot_list_gives_numpy():
    out = one_hot([0, 2], 3)
    assert isinstance(out, np.ndarray) and out.dtype == np.float64
    np.testing.assert_array_equal(out, [[1, 0, 0], [0, 0, 1]])


@pytest.mark.parametrize("dtype", ["float64", "float32", "bool"])
def test_one_hot_non_integer_labels_raise(xp, dtype):
    labels = xp.asarray(np.array([0, 1]).astype(dtype), dtype=getattr(xp, dtype))
    with pytest.raises(TypeError, match="integer"):
        one_hot(labels, 3)


@pytest.mark.parametrize("num_classes", [0, -1])
def test_one_hot_num_classes_below_one_raises(xp, num_classes):
    with pytest.raises(ValueError, match="num_classes"):
        one_hot(xp.asarray(np.array([0, 0])), num_classes)


@pytest.mark.parametrize("bad", [-1, 3, 100])
def test_one_hot_out_of_range(xp, library, bad):
    labels = xp.asarray(np.array([0, bad, 2]))
    if not is_lazy(library):
        with pytest.raises(ValueError, match=r"\[0, 3\)"):
            one_hot(labels, 3)
        return
    out = to_numpy(one_hot(labels, 3))
    np.testing.assert_array_equal(out, [[1, 0, 0], [0, 0, 0], [0, 0, 1]])


def test_one_hot_targets_equal_probability_targets(xp):
    """Class indices and their one-hot probabilities give the same loss and gradient."""
    rng = np.random.default_rng(5)
    x = to_xp(xp, rng.normal(size=(5, 4)))
    y = xp.asarray(np.array([0, 3, 1, 1, 2]))
    q = one_hot(y, 4, dtype=xp.float64)
    w = to_xp(xp, [1.0, 0.5, 2.0, 1.5])
    for red in ("sum", "none"):
        a = to_numpy(cross_entropy(x, y, reduction=red, weight=w, label_smoothing=0.2))
        b = to_numpy(cross_entropy(x, q, reduction=red, weight=w, label_smoothing=0.2))
        np.testing.assert_allclose(a, b, rtol=1e-13)
        a = to_numpy(cross_entropy_grad(x, y, reduction=red, weight=w, label_smoothing=0.2))
        b = to_numpy(cross_entropy_grad(x, q, reduction=red, weight=w, label_smoothing=0.2))
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)
    a = to_numpy(cross_entropy_grad(x, y, reduction="sum"))
    b = to_numpy(cross_entropy_grad(x, q, reduction="sum"))
    np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(
        to_numpy(cross_entropy(x, y, reduction="none")),
        to_numpy(cross_entropy(x, q, reduction="none")),
        rtol=1e-13,
    )
