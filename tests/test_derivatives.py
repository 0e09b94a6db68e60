"""cross_entropy_grad, softmax_jacobian and softmax_jvp (SPEC §2, §3's gradient sentence).

References: torch.autograd / torch.func, jax.grad / jax.jacrev, central
finite differences in float64.
"""

from __future__ import annotations

import numpy as np
import pytest
from array_api_extra.testing import lazy_xp_function

from cases import CASES, REDUCTIONS, make_data, ref_kwargs, to_xp, torch_reference, xp_case
from portable_softmax import (
    cross_entropy,
    cross_entropy_grad,
    cross_entropy_with_grad,
    softmax,
    softmax_jacobian,
    softmax_jvp,
)
from support import assert_close, assert_namespace_dtype, to_numpy

torch = pytest.importorskip("torch")

for _f in (
    cross_entropy,
    cross_entropy_grad,
    cross_entropy_with_grad,
    softmax,
    softmax_jacobian,
    softmax_jvp,
):
    lazy_xp_function(_f)


# ------------------------------------------------------------------------------ cross_entropy_grad


def test_cross_entropy_grad_matches_torch_autograd(xp, case):
    data = make_data(case)
    logits, target, kwargs = xp_case(xp, data)
    _, expected = torch_reference(data["logits"], data["target"], data["axis"], **ref_kwargs(data))
    grad = cross_entropy_grad(logits, target, data["axis"], **kwargs)
    assert_close(grad, expected, xp=xp, dtype=xp.float64, rtol=1e-12, atol=1e-15)


@pytest.mark.case_grid(CASES[::7], stride=3)
def test_cross_entropy_with_grad_equals_loss_and_grad(xp, case):
    data = make_data(case)
    logits, target, kwargs = xp_case(xp, data)
    loss, grad = cross_entropy_with_grad(logits, target, data["axis"], **kwargs)
    assert_close(
        loss,
        to_numpy(cross_entropy(logits, target, data["axis"], **kwargs)),
        xp=xp,
        dtype=xp.float64,
        rtol=1e-14,
        atol=1e-15,
    )
    assert_close(
        grad,
        to_numpy(cross_entropy_grad(logits, target, data["axis"], **kwargs)),
        xp=xp,
        dtype=xp.float64,
        rtol=1e-14,
        atol=1e-16,
    )


def _central_difference(f, x: np.ndarray, h: float = 1e-3) -> np.ndarray:
    """Fourth-order central difference of scalar ``f`` at ``x``."""
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        vals = []
        for k in (-2, -1, 1, 2):
            xk = x.copy()
            xk[i] += k * h
            vals.append(f(xk))
        g[i] = (vals[0] - 8 * vals[1] + 8 * vals[2] - vals[3]) / (12 * h)
    return g


@pytest.mark.parametrize(
    "kwargs",
    [
        {"reduction": "mean"},
        {"reduction": "sum", "label_smoothing": 0.3},
        {"reduction": "mean", "ignore_index": 0, "weighted": True, "label_smoothing": 0.1},
        {"reduction": "none", "weighted": True},
        {"reduction": "mean", "prob": True, "weighted": True, "label_smoothing": 0.2},
    ],
    ids=["mean", "sum-smooth", "mean-ignore-weight-smooth", "none-weight", "prob-weight-smooth"],
)
def test_cross_entropy_grad_matches_finite_differences(xp, library, kwargs):
    if library not in ("numpy", "array_api_strict", "torch"):
        pytest.skip("64 loss evaluations per case: eager CPU backends only")
    kwargs = dict(kwargs)
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(2, 4, 2))  # class axis 1
    if kwargs.pop("prob", False):
        target_np = np.moveaxis(rng.dirichlet(np.ones(4), size=(2, 2)), -1, 1)
    else:
        target_np = np.array([[0, 3], [2, 1]])
    if kwargs.pop("weighted", False):
        kwargs["weight"] = to_xp(xp, [0.5, 1.0, 2.0, 1.5])
    target = to_xp(xp, target_np)

    def f(z: np.ndarray) -> float:
        return float(np.sum(to_numpy(cross_entropy(to_xp(xp, z), target, 1, **kwargs))))

    expected = _central_difference(f, logits)
    grad = cross_entropy_grad(to_xp(xp, logits), target, 1, **kwargs)
    assert_close(grad, expected, xp=xp, dtype=xp.float64, rtol=1e-8, atol=1e-10)


WORKED = [0.09003057317038046, -0.7552715289452023, 0.6652409557748219]


def test_worked_example(xp):
    x = to_xp(xp, [[2.0, 3.0, 4.0]])
    grad = cross_entropy_grad(x, xp.asarray(np.array([1])))
    assert_close(grad, [WORKED], xp=xp, dtype=xp.float64, rtol=1e-14)
    g = to_numpy(grad)
    np.testing.assert_array_equal(np.round(g, 4), [[0.0900, -0.7553, 0.6652]])
    assert abs(g.sum()) < 1e-15
    # unbatched: 1-d logits and a 0-d class index
    grad1 = cross_entropy_grad(to_xp(xp, [2.0, 3.0, 4.0]), xp.asarray(np.array(1)))
    assert_close(grad1, WORKED, xp=xp, dtype=xp.float64, rtol=1e-14)


def test_worked_example_from_lists():
    np.testing.assert_allclose(cross_entropy_grad([[2.0, 3.0, 4.0]], [1]), [WORKED], rtol=1e-14)


@pytest.mark.parametrize("form", ["index", "prob"])
def test_reduction_none_grad_is_grad_of_sum(xp, form):
    rng = np.random.default_rng(9)
    x = to_xp(xp, rng.normal(size=(5, 3)))
    t = (
        xp.asarray(np.array([0, 2, 1, -1, 2]))
        if form == "index"
        else to_xp(xp, rng.dirichlet(np.ones(3), size=5))
    )
    kwargs = {"label_smoothing": 0.1, "weight": to_xp(xp, [1.0, 2.0, 0.5])}
    if form == "index":
        kwargs["ignore_index"] = -1
    g_none = cross_entropy_grad(x, t, reduction="none", **kwargs)
    g_sum = cross_entropy_grad(x, t, reduction="sum", **kwargs)
    assert_close(g_none, to_numpy(g_sum), xp=xp, dtype=xp.float64, rtol=1e-15)


# -------------------------------------------------------------------- autodiff through the library


def _autodiff_cases():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(4, 5))
    yield (
        "index",
        x,
        np.array([0, 4, -1, 2]),
        {"ignore_index": -1, "label_smoothing": 0.2, "weight": np.linspace(0.5, 2, 5)},
    )
    yield "prob", x, rng.dirichlet(np.ones(5), size=4), {"label_smoothing": 0.1}
    xm = x.copy()
    xm[0, 1] = xm[1, 2] = xm[1, 3] = -np.inf
    yield "index-minus-inf", xm, np.array([0, 4, 1, 2]), {}
    q = rng.dirichlet(np.ones(5), size=4)
    q[0, 1] = q[1, 2] = q[1, 3] = 0.0
    q /= q.sum(-1, keepdims=True)
    yield "prob-minus-inf", xm, q, {}


AUTODIFF = list(_autodiff_cases())


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(
    ("name", "logits", "target", "kwargs"), AUTODIFF, ids=[c[0] for c in AUTODIFF]
)
def test_torch_autograd_through_cross_entropy(name, logits, target, kwargs, reduction):
    x = torch.tensor(logits, requires_grad=True)
    t = torch.tensor(target)
    kw = {k: torch.tensor(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}
    loss = cross_entropy(x, t, reduction=reduction, **kw)
    assert torch.isfinite(loss).all()
    (loss.sum() if reduction == "none" else loss).backward()
    assert not torch.isnan(x.grad).any(), x.grad
    expected = cross_entropy_grad(x.detach(), t, reduction=reduction, **kw)
    np.testing.assert_allclose(x.grad.numpy(), expected.numpy(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(
    ("name", "logits", "target", "kwargs"), AUTODIFF, ids=[c[0] for c in AUTODIFF]
)
def test_jax_grad_through_cross_entropy(name, logits, target, kwargs, reduction):
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    kw = {k: jnp.asarray(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}
    t = jnp.asarray(target)

    def f(z):
        return jnp.sum(cross_entropy(z, t, reduction=reduction, **kw))

    x = jnp.asarray(logits)
    assert np.isfinite(float(f(x)))
    g = np.asarray(jax.grad(f)(x))
    assert not np.isnan(g).any(), g
    np.testing.assert_allclose(
        g, np.asarray(cross_entropy_grad(x, t, reduction=reduction, **kw)), rtol=1e-12, atol=1e-15
    )
    g_jit = np.asarray(jax.jit(jax.grad(f))(x))
    np.testing.assert_allclose(g_jit, g, rtol=1e-13, atol=1e-15)


def _jax_reference_loss(jnp, jax, x, t, axis, reduction, weight, ignore_index, smoothing):
    """A plain JAX cross-entropy (no optax), torch semantics, class axis ``axis``."""
    logp = jax.nn.log_softmax(x, axis=axis)
    n = x.shape[axis]
    shape = [1] * x.ndim
    shape[axis] = n
    w = jnp.ones(n) if weight is None else weight
    wv = jnp.reshape(w, shape)
    if jnp.issubdtype(t.dtype, jnp.integer):
        counted = jnp.ones(t.shape, bool) if ignore_index is None else t != ignore_index
        ts = jnp.where(counted, t, 0)
        onehot = jnp.moveaxis(jax.nn.one_hot(ts, n), -1, axis)
        w_y = jnp.where(counted, w[ts], 0.0)
        nll = -jnp.sum(onehot * logp, axis=axis) * w_y
        smooth = jnp.where(counted, -jnp.sum(wv * logp, axis=axis), 0.0)
        if reduction == "mean":
            return (
                1 - smoothing
            ) * nll.sum() / w_y.sum() + smoothing / n * smooth.sum() / w_y.sum()
        per = (1 - smoothing) * nll + smoothing / n * smooth
        return per.sum()
    q = t * (1 - smoothing) + smoothing / n
    per = -jnp.sum(wv * q * logp, axis=axis)
    return per.sum() / (per.size if reduction == "mean" else 1)


@pytest.mark.parametrize("case", CASES[::13], ids=lambda c: c.id)
def test_grad_matches_jax_grad_of_reference_and_of_ours(case):
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    data = make_data(case)
    axis = data["axis"] % data["logits"].ndim
    kw = data["kwargs"]
    w = None if data["weight"] is None else jnp.asarray(data["weight"])
    t = jnp.asarray(data["target"])
    x = jnp.asarray(data["logits"])
    ours = np.asarray(cross_entropy_grad(x, t, axis, weight=w, **kw))
    ref = jax.grad(_jax_reference_loss, argnums=2)(
        jnp, jax, x, t, axis, kw["reduction"], w, kw.get("ignore_index"), kw["label_smoothing"]
    )
    np.testing.assert_allclose(ours, np.asarray(ref), rtol=1e-12, atol=1e-15)
    through = jax.grad(lambda z: jnp.sum(cross_entropy(z, t, axis, weight=w, **kw)))(x)
    np.testing.assert_allclose(ours, np.asarray(through), rtol=1e-12, atol=1e-15)


# -------------------------------------------------------------------------------- Jacobian and JVP

JAC_LAYOUTS = [
    ((5,), 0),
    ((5,), -1),
    ((3, 4), 0),
    ((3, 4), 1),
    ((3, 4), -1),
    ((2, 3, 4), 0),
    ((2, 3, 4), 1),
    ((2, 3, 4), -1),
]
JAC_IDS = [f"{len(s)}d-axis{a}" for s, a in JAC_LAYOUTS]


def _block_jacobian(full: np.ndarray, shape: tuple[int, ...], axis: int) -> np.ndarray:
    """From a full Jacobian (shape + shape), the per-slice blocks in our layout."""
    nd = len(shape)
    ax = axis % nd
    moved = np.moveaxis(full, [ax, nd + ax], [nd - 1, 2 * nd - 1])
    other = tuple(s for i, s in enumerate(shape) if i != ax)
    m, n = int(np.prod(other, dtype=int)), shape[ax]
    r = moved.reshape(m, n, m, n)
    blocks = r[np.arange(m), :, np.arange(m), :]
    # off-block entries are zero: softmax slices are independent
    off = r.copy()
    off[np.arange(m), :, np.arange(m), :] = 0.0
    assert np.all(off == 0.0)
    return blocks.reshape(other + (n, n))


@pytest.mark.parametrize(("shape", "axis"), JAC_LAYOUTS, ids=JAC_IDS)
def test_softmax_jacobian_matches_torch_jacrev(xp, shape, axis):
    x = np.random.default_rng(len(shape) * 10 + axis).normal(scale=2.0, size=shape)
    full = torch.func.jacrev(lambda t: torch.softmax(t, dim=axis))(torch.tensor(x)).numpy()
    expected = _block_jacobian(full, shape, axis)
    jac = softmax_jacobian(to_xp(xp, x), axis)
    ax = axis % len(shape)
    assert_namespace_dtype(
        jac, xp, xp.float64, shape[:ax] + shape[ax + 1 :] + (shape[ax], shape[ax])
    )
    assert_close(jac, expected, xp=xp, dtype=xp.float64, rtol=1e-12, atol=1e-16)
    j = to_numpy(jac)
    np.testing.assert_array_equal(j, np.swapaxes(j, -1, -2))  # symmetric


@pytest.mark.parametrize(("shape", "axis"), JAC_LAYOUTS[::2], ids=JAC_IDS[::2])
def test_softmax_jacobian_matches_jax_jacrev(shape, axis):
    jax = pytest.importorskip("jax")
    x = np.random.default_rng(1).normal(size=shape)
    full = np.asarray(jax.jacrev(lambda t: jax.nn.softmax(t, axis=axis))(jax.numpy.asarray(x)))
    np.testing.assert_allclose(
        np.asarray(softmax_jacobian(jax.numpy.asarray(x), axis)),
        _block_jacobian(full, shape, axis),
        rtol=1e-12,
        atol=1e-16,
    )


@pytest.mark.parametrize(("shape", "axis"), JAC_LAYOUTS, ids=JAC_IDS)
def test_softmax_jvp_matches_jacobian_and_torch_func(xp, shape, axis):
    rng = np.random.default_rng(3)
    x, v = rng.normal(size=shape), rng.normal(size=shape)
    ax = axis % len(shape)
    jvp = softmax_jvp(to_xp(xp, x), to_xp(xp, v), axis)
    assert_namespace_dtype(jvp, xp, xp.float64, shape)
    # J @ v with our own Jacobian
    jac = to_numpy(softmax_jacobian(to_xp(xp, x), axis))
    jv = np.moveaxis(np.einsum("...ij,...j->...i", jac, np.moveaxis(v, ax, -1)), -1, ax)
    assert_close(jvp, jv, xp=xp, dtype=xp.float64, rtol=1e-12, atol=1e-16)
    sm = lambda t: torch.softmax(t, dim=axis)  # noqa: E731
    _, tangent = torch.func.jvp(sm, (torch.tensor(x),), (torch.tensor(v),))
    assert_close(jvp, tangent.numpy(), xp=xp, dtype=xp.float64, rtol=1e-12, atol=1e-16)
    _, vjp_fn = torch.func.vjp(sm, torch.tensor(x))
    (cotangent,) = vjp_fn(torch.tensor(v))
    assert_close(jvp, cotangent.numpy(), xp=xp, dtype=xp.float64, rtol=1e-12, atol=1e-16)


def test_softmax_jvp_tuple_axis_matches_torch(xp):
    rng = np.random.default_rng(6)
    x, v = rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 3, 4))

    def sm(t):
        return torch.softmax(t.reshape(2, 12), dim=-1).reshape(2, 3, 4)

    _, expected = torch.func.jvp(sm, (torch.tensor(x),), (torch.tensor(v),))
    assert_close(
        softmax_jvp(to_xp(xp, x), to_xp(xp, v), (1, 2)),
        expected.numpy(),
        xp=xp,
        dtype=xp.float64,
        rtol=1e-12,
        atol=1e-16,
    )


def test_softmax_jvp_matches_jax_jvp():
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    rng = np.random.default_rng(8)
    x, v = jnp.asarray(rng.normal(size=(3, 4))), jnp.asarray(rng.normal(size=(3, 4)))
    _, expected = jax.jvp(lambda t: jax.nn.softmax(t, axis=0), (x,), (v,))
    np.testing.assert_allclose(
        np.asarray(softmax_jvp(x, v, 0)), np.asarray(expected), rtol=1e-12, atol=1e-16
    )


SPECIAL_ROWS = {
    "all-minus-inf": [-np.inf, -np.inf, -np.inf, -np.inf],
    "one-plus-inf": [1.0, np.inf, 0.0, -np.inf],
    "two-plus-inf": [np.inf, 2.0, np.inf, -np.inf],
    "some-minus-inf": [-np.inf, 1.0, -np.inf, 3.0],
    "huge": [1000.0, 2000.0, 3000.0, 5000.0],
}


@pytest.mark.parametrize("name", list(SPECIAL_ROWS))
def test_jacobian_and_jvp_at_special_points_have_no_nan(xp, name):
    x = np.array([SPECIAL_ROWS[name], [0.5, 1.0, -1.0, 2.0]])
    s = to_numpy(softmax(to_xp(xp, x)))
    assert not np.isnan(s).any()
    expected_j = s[:, :, None] * (np.eye(4) - s[:, None, :])
    jac = softmax_jacobian(to_xp(xp, x))
    assert_close(jac, expected_j, xp=xp, dtype=xp.float64, rtol=1e-14, atol=1e-300)
    v = np.array([[1.0, -2.0, 0.5, 3.0], [0.0, 1.0, 2.0, -1.0]])
    jvp = softmax_jvp(to_xp(xp, x), to_xp(xp, v))
    assert_close(
        jvp, np.einsum("bij,bj->bi", expected_j, v), xp=xp, dtype=xp.float64, rtol=1e-13, atol=1e-15
    )


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_jacobian_and_jvp_keep_dtype(xp, library, dtype):
    if not hasattr(xp, dtype) or (dtype != "float32" and library == "array_api_strict"):
        pytest.skip(f"{library} has no {dtype}")
    d = getattr(xp, dtype)
    x = xp.astype(xp.asarray([[0.0, 1.0, 2.0], [3.0, -1.0, 0.5]], dtype=xp.float32), d)
    v = xp.astype(xp.asarray([[1.0, 0.0, -1.0], [0.5, 0.5, 2.0]], dtype=xp.float32), d)
    jac = softmax_jacobian(x)
    assert_namespace_dtype(jac, xp, d, (2, 3, 3))
    jvp = softmax_jvp(x, v)
    assert_namespace_dtype(jvp, xp, d, (2, 3))
    x32, v32 = xp.astype(x, xp.float32), xp.astype(v, xp.float32)
    np.testing.assert_array_equal(to_numpy(jac), to_numpy(xp.astype(softmax_jacobian(x32), d)))
    np.testing.assert_array_equal(to_numpy(jvp), to_numpy(xp.astype(softmax_jvp(x32, v32), d)))
