"""Regressions from the peers' own test suites (SciPy, JAX, optax, PyTorch), and SPEC §7.

Each bug of the correctness issue has a test here that failed before its fix,
run on every backend of the matrix where it applies; each §7 feature is
checked against the peer library that has it (SciPy, torch, JAX).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.special
from array_api_extra.testing import lazy_xp_function

import portable_softmax as ps
from backends import is_lazy
from support import assert_close, to_numpy

torch = pytest.importorskip("torch")
F = torch.nn.functional

for _f in (ps.softmax, ps.log_softmax, ps.logsumexp, ps.cross_entropy, ps.cross_entropy_grad):
    lazy_xp_function(_f)

INF, NAN = math.inf, math.nan
LOGITS = [[10.0, 1.0, -2.0], [1.0, 4.0, 0.2]]
ONE_HOT = [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]


# --------------------------------------------------------- 1. d loss / d target


@pytest.mark.parametrize("native", [True, False], ids=["native", "generic"])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_gradient_with_respect_to_probability_targets_torch(native, smoothing):
    x = torch.tensor(LOGITS, dtype=torch.float64)
    weight = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    ours = torch.tensor(ONE_HOT, dtype=torch.float64, requires_grad=True)
    theirs = torch.tensor(ONE_HOT, dtype=torch.float64, requires_grad=True)
    with ps.native_kernels(native):
        ps.cross_entropy(x, ours, weight=weight, label_smoothing=smoothing).backward()
    F.cross_entropy(x, theirs, weight=weight, label_smoothing=smoothing).backward()
    np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy(), rtol=1e-12)
    # The figures: -log_softmax of the logits, for the summed loss.
    t = torch.tensor(ONE_HOT, dtype=torch.float64, requires_grad=True)
    ps.cross_entropy(x, t, reduction="sum").backward()
    want = [[1.3e-4, 9.0001, 12.0001], [3.0697, 0.0697, 3.8697]]
    np.testing.assert_allclose(t.grad.numpy(), want, rtol=5e-3)


def test_gradient_with_respect_to_probability_targets_jax():
    jax = pytest.importorskip("jax")
    x = jax.numpy.asarray(LOGITS)
    g = jax.grad(lambda t: ps.cross_entropy(x, t, reduction="sum"))(jax.numpy.asarray(ONE_HOT))
    want = -np.asarray(scipy.special.log_softmax(np.asarray(LOGITS), axis=-1))
    np.testing.assert_allclose(np.asarray(g), want, rtol=1e-12)


def test_zero_target_at_minus_inf_still_contributes_zero():
    x = torch.tensor([[0.0, -INF, 1.0]], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([[0.5, 0.0, 0.5]], dtype=torch.float64, requires_grad=True)
    loss = ps.cross_entropy(x, t)
    loss.backward()
    assert math.isfinite(loss.item())
    assert not torch.isnan(x.grad).any() and not torch.isnan(t.grad).any()
    assert t.grad[0, 1] == 0.0


# --------------------------------------------------------- 2. x and b broadcast

BROADCAST = [
    ((4, 1, 2, 1), (3, 1, 5), -1),
    ((4, 1, 2, 1), (3, 1, 5), (1, 3)),
    ((3, 1), (1, 4), -1),
    ((2, 1, 4), (2, 3, 4), 1),
    ((4,), (3, 4), -2),
    ((4,), (3, 4), None),
]


@pytest.mark.parametrize(("x_shape", "b_shape", "axis"), BROADCAST, ids=str)
@pytest.mark.parametrize("return_sign", [False, True])
def test_logsumexp_broadcasts_x_and_b_as_scipy(xp, x_shape, b_shape, axis, return_sign):
    rng = np.random.default_rng(1)
    x, b = rng.normal(size=x_shape), rng.normal(size=b_shape)
    want = scipy.special.logsumexp(x, axis=axis, b=b, return_sign=return_sign)
    got = ps.logsumexp(xp.asarray(x), axis=axis, b=xp.asarray(b), return_sign=return_sign)
    if not return_sign:
        want, got = (want,), (got,)
    for g, w in zip(got, want, strict=True):
        assert_close(g, np.asarray(w), xp=xp, dtype=xp.float64, rtol=1e-12)


def test_logsumexp_b_that_does_not_broadcast_names_both_shapes():
    with pytest.raises(ValueError, match=r"b of shape \(3,\) .* x of shape \(2, 4\)"):
        ps.logsumexp(np.zeros((2, 4)), b=np.ones(3))


# --------------------------------------------------------- 3. empty mean stays connected


@pytest.mark.parametrize("native", [True, False], ids=["native", "generic"])
@pytest.mark.parametrize("form", ["index", "prob"])
def test_empty_batch_mean_has_a_zero_gradient_torch(native, form):
    x = torch.rand(0, 3, requires_grad=True)
    t = torch.zeros(0, dtype=torch.long) if form == "index" else torch.rand(0, 3)
    with ps.native_kernels(native):
        loss = ps.cross_entropy(x, t, axis=1)
    loss.backward()
    assert loss.item() == 0.0 and x.grad.shape == (0, 3)


def test_empty_batch_mean_has_a_zero_gradient_jax():
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    g = jax.grad(lambda z: ps.cross_entropy(z, jnp.zeros((0,), dtype=jnp.int32)))(jnp.zeros((0, 3)))
    assert g.shape == (0, 3)


# --------------------------------------------------------- 4, 5. JAX's strict modes


def _jax_calls(jnp):
    x = jnp.asarray([[0.5, -1.0, 2.0], [1.0, 1.0, 0.0]])
    y = jnp.asarray([2, 0])
    q = jnp.asarray([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]])
    w = jnp.asarray([1.0, 2.0, 0.5])
    mask = jnp.asarray([[True, True, True], [True, False, True]])
    yield "softmax", lambda: ps.softmax(x)
    yield "softmax-where", lambda: ps.softmax(x, where=mask)
    yield "log_softmax", lambda: ps.log_softmax(x, axis=None)
    yield "logsumexp", lambda: ps.logsumexp(x, axis=0)
    yield "logsumexp-b", lambda: ps.logsumexp(jnp.float64(1.0), b=jnp.float64(1.0), axis=None)
    yield "logsumexp-b-sign", lambda: ps.logsumexp(x, b=w, return_sign=True)
    yield "jacobian", lambda: ps.softmax_jacobian(x)
    yield "jvp", lambda: ps.softmax_jvp(x, q)
    yield "ce-index", lambda: ps.cross_entropy(x, y)
    yield (
        "ce-options",
        lambda: ps.cross_entropy(
            x, y, weight=w, ignore_index=0, label_smoothing=0.1, reduction="none"
        ),
    )
    yield "ce-prob", lambda: ps.cross_entropy(x, q, label_smoothing=0.1)
    yield "ce-where", lambda: ps.cross_entropy_with_grad(x, y, where=mask, label_smoothing=0.2)
    yield "ce-grad", lambda: ps.cross_entropy_grad(x, y, weight=w)
    yield "one_hot", lambda: ps.one_hot(y, 3)
    yield "one_hot-axis", lambda: ps.one_hot(jnp.asarray([[0, 2]]), 3, axis=0)


@pytest.mark.parametrize("mode", ["rank_promotion", "debug_nans"])
def test_jax_strict_modes(mode):
    """No implicit rank promotion; no NaN built (and thrown away) on finite input."""
    jax = pytest.importorskip("jax")
    for name, call in _jax_calls(jax.numpy):
        if mode == "rank_promotion":
            with jax.numpy_rank_promotion("raise"):
                call()
                jax.jit(call)()
        else:
            with jax.debug_nans(True), jax.disable_jit():
                try:
                    call()
                except FloatingPointError as exc:  # pragma: no cover - the failure
                    pytest.fail(f"{name}: {exc}")


# --------------------------------------------------------- 6. logsumexp's sign at +inf and NaN


@pytest.mark.parametrize(
    ("x", "b"),
    [
        ([INF, INF, 1.0], [2.0, -1.0, 1.0]),
        ([INF, 0.0], [-1.0, 1.0]),
        ([INF, INF], [1.0, 1.0]),
        ([NAN, 1.0], [2.0, -1.0]),
        ([1.0, 1.0], [1.0, -1.0]),
    ],
    ids=["mixed-inf", "neg-inf-weight", "pos-infs", "nan", "cancel"],
)
def test_logsumexp_sign_matches_scipy(xp, x, b):
    want = scipy.special.logsumexp(x, b=b, return_sign=True)
    value, sign = ps.logsumexp(
        xp.asarray(x, dtype=xp.float64), b=xp.asarray(b, dtype=xp.float64), return_sign=True
    )
    assert_close(value, np.asarray(want[0]), xp=xp, dtype=xp.float64)
    assert_close(sign, np.asarray(want[1]), xp=xp, dtype=xp.float64)


# --------------------------------------------------------- 7. zero summed weights on torch


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_mean_over_zero_weights_is_zero(xp, smoothing):
    x = xp.asarray([[1.0, 2.0, 3.0], [0.5, 0.1, -2.0]], dtype=xp.float64)
    weight = xp.asarray([0.0, 0.0, 1.0], dtype=xp.float64)
    loss = ps.cross_entropy(x, xp.asarray([0, 1]), weight=weight, label_smoothing=smoothing)
    assert_close(loss, np.asarray(0.0), xp=xp, dtype=xp.float64)


# --------------------------------------------------------- 8, 10. torch 1-D and meta tensors


@pytest.mark.parametrize("native", [True, False], ids=["native", "generic"])
def test_torch_1d_tensors_with_requires_grad(native):
    a = torch.tensor([1.0, 2.0, 3.0], requires_grad=True, dtype=torch.float64)
    with ps.native_kernels(native):
        out = ps.log_softmax(a)
        loss = ps.cross_entropy(a, torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64))
    np.testing.assert_allclose(out.detach().numpy(), torch.log_softmax(a, 0).detach().numpy())
    loss.backward()
    b = a.detach().clone().requires_grad_()
    F.cross_entropy(b, torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)).backward()
    np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-12)


@pytest.mark.parametrize("native", [True, False], ids=["native", "generic"])
def test_torch_meta_tensors_give_meta_results(native):
    x = torch.empty(4, 5, device="meta")
    y = torch.empty(4, dtype=torch.long, device="meta")
    with ps.native_kernels(native):
        outs = [
            ps.softmax(x),
            ps.log_softmax(x),
            ps.logsumexp(x),
            ps.cross_entropy(x, y),
            ps.cross_entropy_grad(x, y, label_smoothing=0.1),
            *ps.cross_entropy_with_grad(x, y),
        ]
    assert all(o.is_meta for o in outs)
    assert [tuple(o.shape) for o in outs] == [(4, 5), (4, 5), (4,), (), (4, 5), (), (4, 5)]


# --------------------------------------------------------- 9. Dask shapes


def test_dask_empty_batch_with_every_option():
    da = pytest.importorskip("dask.array")
    x, y = da.zeros((2, 0, 4)), da.zeros((2, 0), dtype=np.int64)
    kwargs = {"weight": da.ones(4), "ignore_index": 1, "label_smoothing": 0.1}
    assert float(ps.cross_entropy(x, y, **kwargs).compute()) == 0.0
    assert ps.cross_entropy_grad(x, y, **kwargs).compute().shape == (2, 0, 4)


def test_dask_unknown_chunk_sizes_say_what_to_do():
    da = pytest.importorskip("dask.array")
    x = da.from_array(np.random.default_rng(0).random((10, 4)), chunks=5)
    keep = x[:, 0] > 0.5
    with pytest.raises(ValueError, match=r"compute_chunk_sizes\(\)"):
        ps.cross_entropy(x[keep], da.zeros(10, dtype=np.int64, chunks=5)[keep])


# --------------------------------------------------------- 11. refused arguments


@pytest.mark.parametrize("bad", [True, False, 1.5, "1"])
def test_ignore_index_must_be_an_integer(bad):
    with pytest.raises(TypeError, match="ignore_index must be an integer"):
        ps.cross_entropy(np.zeros((2, 3)), np.array([0, 1]), ignore_index=bad)


@pytest.mark.parametrize(
    "call",
    [
        lambda m: ps.softmax(m),
        lambda m: ps.logsumexp(m),
        lambda m: ps.logsumexp(np.zeros(2), b=m),
        lambda m: ps.cross_entropy(m, np.array([0])),
    ],
    ids=["softmax", "logsumexp", "logsumexp-b", "cross_entropy"],
)
def test_masked_arrays_are_refused(call):
    m = np.ma.array([[1.0, 2.0]], mask=[[False, True]])
    with pytest.raises(TypeError, match="masked arrays are not supported.*where="):
        call(m)


# --------------------------------------------------------- §7: axis=None


@pytest.mark.parametrize("shape", [(), (5,), (2, 3), (2, 3, 4)], ids=str)
@pytest.mark.parametrize("name", ["softmax", "log_softmax", "logsumexp"])
def test_axis_none_is_every_axis_as_scipy(xp, shape, name):
    x = np.random.default_rng(2).normal(size=shape) * 3
    want = np.asarray(getattr(scipy.special, name)(x, axis=None))
    got = getattr(ps, name)(xp.asarray(x), axis=None)
    assert_close(got, want, xp=xp, dtype=xp.float64, rtol=1e-13)


def test_softmax_of_a_scalar_with_axis_none_is_one():
    assert float(ps.softmax(1000.0, axis=None)) == 1.0
    assert ps.softmax(1000.0, axis=None).shape == ()
    with pytest.raises(ValueError, match="axis -1 is out of bounds"):
        ps.softmax(1000.0)


# --------------------------------------------------------- §7: where= in the losses


def _reference_over_kept(logits, target, mask, **kwargs):
    """F.cross_entropy per sample over the classes ``mask`` keeps (float64), and its gradient."""
    losses, grads = [], np.zeros_like(logits)
    reduction = kwargs.pop("reduction", "mean")
    weight = kwargs.pop("weight", None)
    for i, keep in enumerate(mask):
        cols = np.flatnonzero(keep)
        x = torch.tensor(logits[i, cols][None], requires_grad=True)
        w = None if weight is None else torch.tensor(weight[cols])
        if np.issubdtype(target.dtype, np.integer):
            t = torch.tensor([int(np.flatnonzero(cols == target[i])[0])])
        else:
            t = torch.tensor(target[i, cols][None])
        loss = F.cross_entropy(x, t, weight=w, reduction="sum", **kwargs)
        loss.backward()
        losses.append(loss.item())
        grads[i, cols] = x.grad.numpy()[0]
    losses = np.asarray(losses)
    if reduction == "none":
        return losses, grads
    if reduction == "sum":
        return losses.sum(), grads
    if np.issubdtype(target.dtype, np.integer):
        n = len(target) if weight is None else weight[target].sum()
    else:
        n = len(target)
    return losses.sum() / n, grads / n


@pytest.mark.parametrize("form", ["index", "prob"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("options", [{}, {"label_smoothing": 0.2, "weight": True}])
def test_where_in_the_losses_matches_torch_on_the_kept_classes(xp, form, reduction, options):
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(5, 6))
    mask = rng.random((5, 6)) > 0.4
    mask[:, 2] = True
    if form == "index":
        target = np.array([np.flatnonzero(row)[i % row.sum()] for i, row in enumerate(mask)])
    else:
        raw = rng.random((5, 6)) * mask
        target = raw / raw.sum(axis=1, keepdims=True)
    kwargs = dict(options, reduction=reduction)
    weight = rng.uniform(0.5, 2.0, size=6) if kwargs.pop("weight", False) else None
    want_loss, want_grad = _reference_over_kept(logits, target, mask, weight=weight, **kwargs)
    args = (xp.asarray(logits), xp.asarray(target))
    kw = dict(kwargs, where=xp.asarray(mask), weight=None if weight is None else xp.asarray(weight))
    loss, grad = ps.cross_entropy_with_grad(*args, **kw)
    assert_close(loss, np.asarray(want_loss), xp=xp, dtype=xp.float64, rtol=1e-12)
    assert_close(grad, want_grad, xp=xp, dtype=xp.float64, rtol=1e-12, atol=1e-15)
    assert_close(ps.cross_entropy(*args, **kw), np.asarray(want_loss), xp=xp, rtol=1e-12)
    assert_close(ps.cross_entropy_grad(*args, **kw), want_grad, xp=xp, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("form", ["index", "prob"])
def test_where_target_on_a_masked_class(xp, library, form):
    mask = xp.asarray([[True, False, True], [True, True, True]])
    x = xp.asarray([[0.0, 1.0, 2.0], [1.0, 1.0, 1.0]], dtype=xp.float64)
    probs = xp.asarray([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]], dtype=xp.float64)
    t = xp.asarray([1, 0]) if form == "index" else probs
    if not is_lazy(library):
        with pytest.raises(ValueError, match="masked by where"):
            ps.cross_entropy(x, t, where=mask)
        return
    loss = to_numpy(ps.cross_entropy(x, t, where=mask, reduction="none"))
    assert np.isnan(loss[0]) and np.isfinite(loss[1])


# --------------------------------------------------------- §7: one_hot's axis


@pytest.mark.parametrize("axis", [-1, 0, 1, -2])
def test_one_hot_axis_as_jax(axis):
    jax = pytest.importorskip("jax")
    labels = np.array([[0, 2, 1], [1, 1, 0]])
    want = np.asarray(jax.nn.one_hot(labels, 3, axis=axis))
    np.testing.assert_array_equal(ps.one_hot(labels, 3, axis=axis), want)


def test_one_hot_refuses_float_labels():
    with pytest.raises(TypeError, match="integer dtype"):
        ps.one_hot(np.array([0.0, 1.0]), 2)
