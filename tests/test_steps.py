"""The training step as one compiled computation on JAX (SPEC §8), the same batches as NumPy."""

from __future__ import annotations

import logging

import numpy as np
import pytest

import portable_softmax as ps
from portable_softmax._steps import make_step

jax = pytest.importorskip("jax")
jnp = jax.numpy


def _data(n=300, d=20, c=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    y = (X[:, :c].argmax(axis=1) + (rng.random(n) < 0.1)) % c
    return X, y


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_jax_training_matches_numpy(momentum):
    X, y = _data()
    opt = {"lr": 0.1, "momentum": momentum, "weight_decay": 1e-3}
    m_np = ps.SoftmaxRegression(20, 4)
    h_np = ps.train(m_np, X, y, optimizer=ps.SGD(**opt), batch_size=32, steps=60, seed=3)
    m_jx = ps.SoftmaxRegression(20, 4, xp=jnp)
    h_jx = ps.train(
        m_jx, jnp.asarray(X), jnp.asarray(y), optimizer=ps.SGD(**opt), batch_size=32, steps=60,
        seed=3,
    )  # fmt: skip
    np.testing.assert_allclose(np.asarray(m_jx.W), m_np.W, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(m_jx.b), m_np.b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h_jx.loss, h_np.loss, rtol=1e-5)


def _compilations(run, caplog):
    """The compilations of the step and of runs of steps that ``run()`` triggers."""
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="jax"), jax.log_compiles(True):
        run()
    messages = [r.getMessage() for r in caplog.records]
    return [m for m in messages if "Compiling jit(step)" in m or "Compiling jit(run)" in m]


def test_jax_step_compiles_once(caplog):
    """A few compilations for the whole run (one per run length), none for a second run."""
    X, y = _data()
    Xj, yj = jnp.asarray(X), jnp.asarray(y)

    def run(lr=0.5):
        model = ps.SoftmaxRegression(20, 4, xp=jnp)
        ps.train(model, Xj, yj, optimizer=ps.SGD(lr), batch_size=32, steps=40)
        return model

    assert 1 <= len(_compilations(lambda: run(0.3), caplog)) <= 3
    assert _compilations(lambda: run(0.3), caplog) == []
    # Other hyperparameters are another computation, not the cached one.
    assert _compilations(lambda: run(0.05), caplog)
    m_np = ps.SoftmaxRegression(20, 4)
    ps.train(m_np, X, y, optimizer=ps.SGD(0.05), batch_size=32, steps=40)
    np.testing.assert_allclose(np.asarray(run(0.05).W), m_np.W, rtol=1e-5, atol=1e-6)


class _Data:
    """The slice of the trainer's data object that a step reads."""

    def __init__(self, xp, X, y):
        self.xp, self.X, self.y = xp, X, y

    def batch(self, rows):
        idx = self.xp.asarray(rows)
        return self.xp.take(self.X, idx, axis=0), self.xp.take(self.y, idx, axis=0)


def test_the_step_is_pure():
    """Neither the model nor the optimizer changes: the loop commits the result."""
    X, y = _data()
    for xp, X_, y_ in ((None, X, y), (jnp, jnp.asarray(X), jnp.asarray(y))):
        model = ps.SoftmaxRegression(20, 4, xp=xp)
        opt = ps.SGD(0.1, momentum=0.9)
        step = make_step(model, opt, _Data(model.xp, X_, y_))
        loss, params, velocity = step(model.parameters, None, np.arange(10))
        assert float(np.abs(np.asarray(model.W)).max()) == 0.0 and opt.velocity is None
        assert np.isfinite(float(loss)) and velocity is not None
        assert float(np.abs(np.asarray(params[0])).max()) > 0


def test_jax_runs_of_steps_match_numpy_with_evaluations_checkpoints_and_resume(tmp_path):
    """Runs of steps (one lax.scan each) end where an evaluation or a checkpoint is due."""
    X, y = _data()
    Xj, yj = jnp.asarray(X), jnp.asarray(y)
    opt = {"lr": 0.1, "momentum": 0.9}
    args = {"batch_size": 32, "steps": 253, "seed": 5, "eval_every": 30}
    m_np = ps.SoftmaxRegression(20, 4)
    h_np = ps.train(m_np, X, y, optimizer=ps.SGD(**opt), eval_data=(X, y), **args)
    path = tmp_path / "run.npz"
    m_jx = ps.SoftmaxRegression(20, 4, xp=jnp)
    h_jx = ps.train(
        m_jx, Xj, yj, optimizer=ps.SGD(**opt), eval_data=(Xj, yj), checkpoint=path,
        checkpoint_every=47, **args,
    )  # fmt: skip
    np.testing.assert_allclose(np.asarray(m_jx.W), m_np.W, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h_jx.loss, h_np.loss, rtol=1e-5)
    assert h_jx.eval_step == h_np.eval_step == [*range(30, 253, 30), 253]
    np.testing.assert_allclose(h_jx.eval_accuracy, h_np.eval_accuracy)
    # A run cut at step 141 (a checkpoint), resumed: the same weights and losses.
    part = ps.SoftmaxRegression(20, 4, xp=jnp)
    ps.train(part, Xj, yj, optimizer=ps.SGD(**opt), checkpoint=path, checkpoint_every=47,
             **{**args, "steps": 141})  # fmt: skip
    resumed = ps.SoftmaxRegression(20, 4, xp=jnp)
    h_re = ps.train(resumed, Xj, yj, optimizer=ps.SGD(**opt), checkpoint=path, resume=True,
                    **{k: v for k, v in args.items() if k != "eval_every"})  # fmt: skip
    np.testing.assert_array_equal(np.asarray(resumed.W), np.asarray(m_jx.W))
    np.testing.assert_array_equal(h_re.loss, h_jx.loss)
