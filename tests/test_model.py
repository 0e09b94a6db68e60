"""SoftmaxRegression and SGD (SPEC §5) on every backend of the ``xp`` fixture."""

from __future__ import annotations

import math

import numpy as np
import pytest

import portable_softmax as ps
from support import assert_close, assert_namespace_dtype, to_numpy

pytestmark = pytest.mark.skip_xp_backend("jax_jit", reason="eager model code: jax covers it")


def problem(xp, n=7, d=5, c=4, seed=0):
    """Random float64 data, labels and parameters: NumPy copies and ``xp`` arrays."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = rng.integers(0, c, size=n)
    W = rng.normal(size=(d, c))
    b = rng.normal(size=c)
    model = ps.SoftmaxRegression(d, c, xp=xp, dtype=xp.float64)
    model.W, model.b = xp.asarray(W), xp.asarray(b)
    return model, xp.asarray(X), xp.asarray(y), (X, y, W, b)


def np_loss(X, y, W, b):
    z = X @ W + b
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return -logp[np.arange(len(y)), y].mean()


def test_zero_initialised(xp):
    model = ps.SoftmaxRegression(784, 10, xp=xp)
    assert_namespace_dtype(model.W, xp, xp.float32, (784, 10))
    assert_namespace_dtype(model.b, xp, xp.float32, (10,))
    assert not np.any(to_numpy(model.W)) and not np.any(to_numpy(model.b))
    assert model.dtype == xp.float32
    assert "SoftmaxRegression(784, 10" in repr(model)


def test_default_library_is_numpy():
    model = ps.SoftmaxRegression(3, 2)
    assert isinstance(model.W, np.ndarray) and model.W.dtype == np.float32


@pytest.mark.parametrize("shape", [(0, 10), (784, 0)])
def test_bad_sizes(shape):
    with pytest.raises(ValueError, match="must be positive"):
        ps.SoftmaxRegression(*shape)


def test_predictions_at_zero_weights(xp):
    model = ps.SoftmaxRegression(3, 4, xp=xp)
    X = xp.asarray(np.ones((2, 3), dtype=np.float32))
    y = xp.asarray(np.asarray([1, 3]))
    assert_close(model.predict_proba(X), np.full((2, 4), 0.25), xp=xp, rtol=1e-6)
    assert_close(model.loss(X, y), math.log(4), xp=xp, rtol=1e-6)
    assert to_numpy(model.predict(X)).tolist() == [0, 0]  # ties: the first class


def test_predict_loss_accuracy(xp):
    model, X, y, (Xn, yn, W, b) = problem(xp)
    z = Xn @ W + b
    assert_close(model.logits(X), z, xp=xp, rtol=1e-12)
    assert to_numpy(model.predict(X)).tolist() == z.argmax(axis=1).tolist()
    assert_close(model.loss(X, y), np_loss(Xn, yn, W, b), xp=xp, rtol=1e-12)
    accuracy = model.accuracy(X, y)
    assert_namespace_dtype(accuracy, xp, xp.float64, ())
    assert float(to_numpy(accuracy)) == pytest.approx(np.mean(z.argmax(axis=1) == yn))


def test_gradients_closed_form(xp):
    model, X, y, (Xn, yn, W, b) = problem(xp)
    loss, (dW, db) = model.gradients(X, y)
    z = Xn @ W + b
    s = np.exp(z - z.max(axis=1, keepdims=True))
    s /= s.sum(axis=1, keepdims=True)
    G = (s - np.eye(W.shape[1])[yn]) / len(yn)
    assert_close(loss, np_loss(Xn, yn, W, b), xp=xp, dtype=xp.float64, rtol=1e-12)
    assert_close(dW, Xn.T @ G, xp=xp, dtype=xp.float64, rtol=1e-10, atol=1e-14)
    assert_close(db, G.sum(axis=0), xp=xp, dtype=xp.float64, rtol=1e-10, atol=1e-14)


def test_gradients_against_finite_differences(xp):
    model, X, y, (Xn, yn, W, b) = problem(xp, seed=3)
    _, (dW, db) = model.gradients(X, y)
    h = 1e-6
    fd_W = np.zeros_like(W)
    for i, j in np.ndindex(W.shape):
        E = np.zeros_like(W)
        E[i, j] = h
        fd_W[i, j] = (np_loss(Xn, yn, W + E, b) - np_loss(Xn, yn, W - E, b)) / (2 * h)
    fd_b = np.zeros_like(b)
    for j in range(b.size):
        e = np.zeros_like(b)
        e[j] = h
        fd_b[j] = (np_loss(Xn, yn, W, b + e) - np_loss(Xn, yn, W, b - e)) / (2 * h)
    np.testing.assert_allclose(to_numpy(dW), fd_W, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(to_numpy(db), fd_b, rtol=1e-6, atol=1e-9)


def test_gradients_float32(xp):
    model, _, _, (Xn, yn, W, b) = problem(xp)
    model = ps.SoftmaxRegression(*W.shape, xp=xp)
    X32 = xp.asarray(Xn.astype(np.float32))
    loss, (dW, db) = model.gradients(X32, xp.asarray(yn))
    assert_namespace_dtype(loss, xp, xp.float32, ())
    assert_namespace_dtype(dW, xp, xp.float32, W.shape)
    assert_namespace_dtype(db, xp, xp.float32, b.shape)
    assert_close(loss, math.log(W.shape[1]), xp=xp, rtol=1e-6)


def test_parameters_property(xp):
    model = ps.SoftmaxRegression(2, 3, xp=xp)
    W, b = model.parameters
    assert W is model.W and b is model.b
    model.parameters = [W + 1, b - 1]
    assert_close(model.W, np.ones((2, 3)), xp=xp)
    assert_close(model.b, -np.ones(3), xp=xp)


# --------------------------------------------------------------------------- SGD


def test_sgd_plain(xp):
    opt = ps.SGD(lr=0.5)
    p = [xp.asarray([1.0, -2.0], dtype=xp.float64)]
    p = opt.step(p, [xp.asarray([0.5, 1.0], dtype=xp.float64)])
    assert_close(p[0], [0.75, -2.5], xp=xp)
    assert opt.velocity is None


def test_sgd_momentum_and_weight_decay_by_hand(xp):
    """Three steps of torch.optim.SGD's rule, worked out on paper.

    lr 0.1, momentum 0.9, weight decay 0.01, p0 = 1, gradients 1, 2, -1:

    step 1: g = 1 + 0.01*1 = 1.01;        v = 1.01;                 p = 1 - 0.101 = 0.899
    step 2: g = 2 + 0.00899 = 2.00899;    v = 0.909 + 2.00899 = 2.91799;    p = 0.6072010
    step 3: g = -1 + 0.00607201 = -0.99392799; v = 2.626191 - 0.99392799 = 1.63226301;
            p = 0.6072010 - 0.163226301 = 0.443974699
    """
    opt = ps.SGD(lr=0.1, momentum=0.9, weight_decay=0.01)
    f64 = xp.float64
    params = [xp.asarray([1.0], dtype=f64), xp.asarray([[1.0, 0.0]], dtype=f64)]
    expected = [0.899, 0.607201, 0.443974699]
    velocity = [1.01, 2.91799, 1.63226301]
    for g, p_want, v_want in zip((1.0, 2.0, -1.0), expected, velocity, strict=True):
        grads = [xp.asarray([g], dtype=f64), xp.asarray([[g, 0.0]], dtype=f64)]
        params = opt.step(params, grads)
        assert_close(params[0], [p_want], xp=xp, rtol=1e-12)
        assert_close(params[1], [[p_want, 0.0]], xp=xp, rtol=1e-12)
        assert_close(opt.velocity[0], [v_want], xp=xp, rtol=1e-12)


def test_sgd_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    p0 = rng.normal(size=(3, 2))
    grads = rng.normal(size=(4, 3, 2))
    opt = ps.SGD(lr=0.3, momentum=0.8, weight_decay=0.05)
    t = torch.tensor(p0, requires_grad=True)
    topt = torch.optim.SGD([t], lr=0.3, momentum=0.8, weight_decay=0.05)
    params = [p0]
    for g in grads:
        params = opt.step(params, [g])
        t.grad = torch.tensor(g)
        topt.step()
    np.testing.assert_allclose(params[0], t.detach().numpy(), rtol=1e-13)


@pytest.mark.parametrize(
    "kwargs",
    [{"lr": -0.1}, {"lr": math.nan}, {"momentum": -1}, {"weight_decay": math.inf}, {"lr": "1"}],
)
def test_sgd_bad_hyperparameters(kwargs):
    with pytest.raises(ValueError, match="must be a finite number >= 0"):
        ps.SGD(**kwargs)


def test_sgd_mismatched_lists():
    with pytest.raises(ValueError, match="2 parameters but 1 gradients"):
        ps.SGD().step([np.zeros(1), np.zeros(1)], [np.zeros(1)])


def test_sgd_state_dict_round_trip():
    opt = ps.SGD(lr=0.2, momentum=0.5)
    opt.step([np.zeros(2)], [np.ones(2)])
    state = opt.state_dict()
    other = ps.SGD()
    other.load_state_dict(state)
    assert repr(other) == "SGD(lr=0.2, momentum=0.5, weight_decay=0.0)"
    a = opt.step([np.zeros(2)], [np.ones(2)])
    b = other.step([np.zeros(2)], [np.ones(2)])
    np.testing.assert_array_equal(a[0], b[0])
