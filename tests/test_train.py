"""``train``, its batches, callbacks, checkpoints and exact resume (SPEC §5)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import portable_softmax as ps
from portable_softmax._compat import xp_namespace
from portable_softmax.checkpoint import load_checkpoint, save_checkpoint
from portable_softmax.datasets import load_mnist
from portable_softmax.training import History, Step, _Batches
from support import assert_namespace_dtype, to_numpy

EAGER_ONLY = pytest.mark.skip_xp_backend("jax_jit", reason="train runs eagerly: jax covers it")


@pytest.fixture(scope="module")
def mnist():
    return load_mnist("train"), load_mnist("test")


def blobs(n=60, d=4, c=3, seed=0):
    """A small, nearly separable float64 problem."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(c, d))
    y = rng.integers(0, c, size=n)
    X = centres[y] + rng.normal(size=(n, d))
    return X, y


def reference_batches(n, steps, batch, seed):
    """asv_bench's generator: one default_rng, a new permutation per epoch."""
    rng = np.random.default_rng(seed)
    perm, pos = rng.permutation(n), 0
    for _ in range(steps):
        if pos + batch > n:
            perm, pos = rng.permutation(n), 0
        yield perm[pos : pos + batch]
        pos += batch


def numpy_training(X, y, steps, batch, seed, lr, c):
    """The tutorial's loop in plain NumPy, the same arithmetic as ps.train."""
    W = np.zeros((X.shape[1], c), X.dtype)
    b = np.zeros(c, X.dtype)
    for idx in reference_batches(len(X), steps, batch, seed):
        Xb, yb = X[idx], y[idx]
        z = Xb @ W + b
        e = np.exp(z - z.max(axis=1, keepdims=True))
        g = e / e.sum(axis=1, keepdims=True)
        g[np.arange(len(idx)), yb] -= 1
        g /= len(idx)
        W = W - lr * (Xb.T @ g)
        b = b - lr * g.sum(axis=0)
    return W, b


# --------------------------------------------------------------------------- batches


@pytest.mark.parametrize(("n", "batch"), [(10, 3), (12, 4), (7, 7)])
def test_batches_are_the_reference_ones(n, batch):
    sampler = _Batches(n, batch, seed=5)
    for want in reference_batches(n, 20, batch, 5):
        np.testing.assert_array_equal(sampler.next(), want)


def test_batches_restore_mid_epoch():
    a = _Batches(10, 3, seed=1)
    for _ in range(4):
        a.next()
    state = json.loads(json.dumps(a.state()))
    b = _Batches(10, 3, seed=1)
    b.restore(state)
    for _ in range(10):
        np.testing.assert_array_equal(a.next(), b.next())


# --------------------------------------------------------------------------- train on every backend


@EAGER_ONLY
def test_same_weights_as_plain_numpy_on_every_backend(xp, library):
    X, y = blobs()
    steps = 6 if library == "dask" else 25
    model = ps.SoftmaxRegression(4, 3, xp=xp, dtype=xp.float64)
    history = ps.train(model, xp.asarray(X), xp.asarray(y), batch_size=8, steps=steps, seed=3)
    W, b = numpy_training(X, y, steps, 8, 3, 0.5, 3)
    assert_namespace_dtype(model.W, xp, xp.float64, (4, 3))
    np.testing.assert_allclose(to_numpy(model.W), W, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(to_numpy(model.b), b, rtol=1e-10, atol=1e-12)
    assert len(history.loss) == steps and all(isinstance(v, float) for v in history.loss)
    assert history.loss[0] == pytest.approx(np.log(3))
    assert history.seconds > 0 and not history.stopped_early


@EAGER_ONLY
def test_eval_data_and_callbacks(xp, library):
    X, y = (xp.asarray(a) for a in blobs(seed=1))
    model = ps.SoftmaxRegression(4, 3, xp=xp, dtype=xp.float64)
    seen = []

    def log(step: Step) -> None:
        seen.append((step.step, float(step.loss)))
        assert step.model is model and isinstance(step.history, History)

    history = ps.train(
        model, X, y, batch_size=10, steps=7, eval_data=(X, y), eval_every=3, callbacks=[log]
    )
    assert [s for s, _ in seen] == list(range(1, 8))
    assert [v for _, v in seen] == pytest.approx(history.loss)
    assert history.eval_step == [3, 6, 7]
    assert history.eval_accuracy[-1] == pytest.approx(float(model.accuracy(X, y)))
    assert history.eval_accuracy[-1] >= 0.8


def test_callback_stops_early():
    X, y = blobs()
    history = ps.train(
        ps.SoftmaxRegression(4, 3, dtype=np.float64),
        X,
        y,
        batch_size=10,
        steps=50,
        eval_data=(X, y),
        eval_every=100,
        callbacks=[lambda s: s.step == 12],
    )
    assert history.steps == 12 and history.stopped_early
    assert history.eval_step == []  # as in the uninterrupted run, whose first is at 100


def test_zero_steps_leaves_the_model_alone():
    X, y = blobs()
    model = ps.SoftmaxRegression(4, 3)
    history = ps.train(model, X.astype(np.float32), y, steps=0, batch_size=5)
    assert history.loss == [] and not np.any(model.W)


def test_loss_is_recorded_in_blocks_beyond_the_sync_interval():
    X, y = blobs(n=30)
    history = ps.train(ps.SoftmaxRegression(4, 3), X.astype(np.float32), y, steps=230, batch_size=5)
    assert len(history.loss) == 230 and history.loss[-1] < 0.2


def test_momentum_and_weight_decay_reach_the_optimizer():
    X, y = blobs()
    a = ps.SoftmaxRegression(4, 3, dtype=np.float64)
    ps.train(a, X, y, optimizer=ps.SGD(0.1, momentum=0.9, weight_decay=1e-3), steps=5, batch_size=6)
    b = ps.SoftmaxRegression(4, 3, dtype=np.float64)
    ps.train(b, X, y, optimizer=ps.SGD(0.1), steps=5, batch_size=6)
    assert not np.allclose(a.W, b.W)


def test_progress_bar(capsys):
    pytest.importorskip("tqdm")
    X, y = blobs()
    ps.train(
        ps.SoftmaxRegression(4, 3, dtype=np.float64), X, y, steps=3, batch_size=5, progress=True
    )
    assert "train" in capsys.readouterr().err
    ps.train(ps.SoftmaxRegression(4, 3, dtype=np.float64), X, y, steps=3, batch_size=5)
    assert capsys.readouterr().err == ""  # not a terminal: silent


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"batch_size": 0}, ValueError, "batch_size must be an integer >= 1"),
        ({"batch_size": 61}, ValueError, "batch_size 61 exceeds the 60 training samples"),
        ({"steps": -1}, ValueError, "steps must be an integer >= 0"),
        ({"steps": 2.5}, ValueError, "steps must be an integer"),
        ({"eval_every": 0}, ValueError, "eval_every"),
        ({"checkpoint_every": 0}, ValueError, "checkpoint_every"),
        ({"resume": True, "batch_size": 5}, ValueError, "resume=True needs the checkpoint path"),
    ],
)
def test_bad_arguments(kwargs, error, message):
    X, y = blobs()
    with pytest.raises(error, match=message):
        ps.train(ps.SoftmaxRegression(4, 3, dtype=np.float64), X, y, **kwargs)


def test_bad_data():
    X, y = blobs()
    model = ps.SoftmaxRegression(4, 3, dtype=np.float64)
    with pytest.raises(ValueError, match=r"X must have shape \(N, 4\)"):
        ps.train(model, X[:, :3], y)
    with pytest.raises(ValueError, match=r"y must have shape \(60,\)"):
        ps.train(model, X, y[:10])


def test_data_of_another_library():
    torch = pytest.importorskip("torch")
    X, y = blobs()
    with pytest.raises(TypeError, match="create the model with xp="):
        ps.train(ps.SoftmaxRegression(4, 3), torch.asarray(X), torch.asarray(y))


# --------------------------------------------------------------------------- checkpoints


@EAGER_ONLY
def test_checkpoint_round_trip(xp, tmp_path):
    X, y = (xp.asarray(a) for a in blobs())
    model = ps.SoftmaxRegression(4, 3, xp=xp, dtype=xp.float64)
    opt = ps.SGD(0.2, momentum=0.9, weight_decay=0.01)
    ps.train(model, X, y, optimizer=opt, steps=4, batch_size=7)
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, model, opt, state={"step": 4, "note": "hello"})
    other = ps.SoftmaxRegression(4, 3, xp=xp, dtype=xp.float64)
    other_opt = ps.SGD()
    state = load_checkpoint(path, other, other_opt)
    assert state == {"step": 4, "note": "hello"}
    np.testing.assert_array_equal(to_numpy(other.W), to_numpy(model.W))
    np.testing.assert_array_equal(to_numpy(other.b), to_numpy(model.b))
    assert_namespace_dtype(other.W, xp, xp.float64, (4, 3))
    assert repr(other_opt) == repr(opt)
    for mine, theirs in zip(opt.velocity, other_opt.velocity, strict=True):
        assert_namespace_dtype(theirs, xp, xp.float64)
        np.testing.assert_array_equal(to_numpy(theirs), to_numpy(mine))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.npz"]  # no temporary left


def test_checkpoint_into_another_dtype_and_without_optimizer(tmp_path):
    model = ps.SoftmaxRegression(2, 2, dtype=np.float64)
    model.W = model.W + 0.25
    save_checkpoint(tmp_path / "c.npz", model)
    other = ps.SoftmaxRegression(2, 2)
    opt = ps.SGD(0.3)
    assert load_checkpoint(tmp_path / "c.npz", other, opt) == {}
    assert other.W.dtype == np.float32 and np.all(other.W == 0.25)
    assert opt.lr == 0.3  # nothing saved for it: untouched


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.npz"
    model = ps.SoftmaxRegression(2, 2)
    save_checkpoint(path, model, state={"step": 1})
    before = path.read_bytes()

    def crash(file, **arrays):
        file.write(b"PK half a zip file")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crash)
    model.W = model.W + 1
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model, state={"step": 2})
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["ckpt.npz"]


def test_load_checkpoint_errors(tmp_path):
    model = ps.SoftmaxRegression(2, 2)
    with pytest.raises(FileNotFoundError, match="checkpoint not found: .*absent.npz"):
        load_checkpoint(tmp_path / "absent.npz", model)
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="junk.npz: not a portable_softmax checkpoint"):
        load_checkpoint(tmp_path / "junk.npz", model)
    np.savez(tmp_path / "other.npz", x=np.zeros(2))
    with pytest.raises(ValueError, match="other.npz: not a portable_softmax checkpoint"):
        load_checkpoint(tmp_path / "other.npz", model)
    save_checkpoint(tmp_path / "big.npz", ps.SoftmaxRegression(3, 2))
    with pytest.raises(ValueError, match=r"big.npz: W has shape \(3, 2\), the model's is \(2, 2\)"):
        load_checkpoint(tmp_path / "big.npz", model)


def test_checkpoint_file_holds_json_state(tmp_path):
    X, y = blobs()
    path = tmp_path / "run.npz"
    ps.train(
        ps.SoftmaxRegression(4, 3), X.astype(np.float32), y, steps=3, batch_size=7, checkpoint=path
    )
    with np.load(path) as data:
        meta = json.loads(str(data["meta"]))
        assert set(data.files) == {"W", "b", "meta"}
    assert meta["step"] == 3 and meta["seed"] == 0 and meta["batch_size"] == 7
    assert len(meta["history"]["loss"]) == 3


@pytest.mark.parametrize("interrupt", ["callback", "keyboard"])
def test_resume_is_exact(tmp_path, mnist, interrupt):
    """Interrupted mid-epoch and resumed: bit for bit the uninterrupted run (NumPy)."""
    (X, y), (X_test, y_test) = mnist
    X, y = X[:1000], y[:1000]  # epochs of 10 batches: the run crosses several
    kwargs = {
        "batch_size": 100,
        "steps": 47,
        "seed": 7,
        "eval_data": (X_test[:500], y_test[:500]),
        "eval_every": 10,
    }

    def optimizer():
        return ps.SGD(0.5, momentum=0.9, weight_decay=1e-4)

    whole = ps.SoftmaxRegression(784, 10)
    full = ps.train(whole, X, y, optimizer=optimizer(), **kwargs)

    path = tmp_path / "run.npz"
    first = ps.SoftmaxRegression(784, 10)

    def stop(step: Step) -> bool:
        if step.step == 23:
            if interrupt == "keyboard":
                raise KeyboardInterrupt
            return True
        return False

    run = lambda: ps.train(  # noqa: E731
        first, X, y, optimizer=optimizer(), checkpoint=path, checkpoint_every=5,
        callbacks=[stop], **kwargs,
    )  # fmt: skip
    if interrupt == "keyboard":
        with pytest.raises(KeyboardInterrupt):
            run()
    else:
        assert run().stopped_early
    assert load_checkpoint(path, ps.SoftmaxRegression(784, 10))["step"] == 23

    resumed = ps.SoftmaxRegression(784, 10)
    rest = ps.train(resumed, X, y, optimizer=ps.SGD(), checkpoint=path, resume=True, **kwargs)
    np.testing.assert_array_equal(resumed.W, whole.W)
    np.testing.assert_array_equal(resumed.b, whole.b)
    assert rest.loss == full.loss
    assert rest.eval_step == full.eval_step and rest.eval_accuracy == full.eval_accuracy


def test_resume_checks_the_run(tmp_path):
    X, y = blobs()
    X = X.astype(np.float32)
    path = tmp_path / "run.npz"
    ps.train(ps.SoftmaxRegression(4, 3), X, y, steps=3, batch_size=6, checkpoint=path)
    with pytest.raises(ValueError, match="its batches would differ"):
        ps.train(ps.SoftmaxRegression(4, 3), X, y, steps=6, batch_size=6, seed=1,
                 checkpoint=path, resume=True)  # fmt: skip
    with pytest.raises(FileNotFoundError, match="absent.npz"):
        ps.train(ps.SoftmaxRegression(4, 3), X, y, batch_size=6,
                 checkpoint=tmp_path / "absent.npz", resume=True)  # fmt: skip


# --------------------------------------------------------------------------- the tutorial on MNIST


def test_tutorial_accuracy_numpy(mnist):
    (X, y), (X_test, y_test) = mnist
    model = ps.SoftmaxRegression(784, 10)
    history = ps.train(model, X, y)
    assert len(history.loss) == 1000
    assert history.loss[0] == pytest.approx(np.log(10), rel=1e-6)
    assert float(model.accuracy(X_test, y_test)) >= 0.915


@pytest.mark.slow
def test_tutorial_agrees_across_backends(mnist):
    """numpy, torch, array_api_strict and jax: the same seed, the same result."""
    (X, y), (X_test, y_test) = mnist
    results = {}
    for name in ("numpy", "torch", "array_api_strict", "jax.numpy"):
        try:
            lib = __import__(name, fromlist=["_"])
        except ImportError:
            continue
        xp = xp_namespace(lib)
        model = ps.SoftmaxRegression(784, 10, xp=xp)
        ps.train(model, xp.asarray(X), xp.asarray(y))
        accuracy = float(model.accuracy(xp.asarray(X_test), xp.asarray(y_test)))
        results[name] = (accuracy, to_numpy(model.W), to_numpy(model.b))
    assert len(results) >= 2
    accuracies = [a for a, _, _ in results.values()]
    assert min(accuracies) >= 0.915, results
    assert max(accuracies) - min(accuracies) <= 0.003
    _, W0, b0 = results["numpy"]
    for _, W, b in results.values():
        np.testing.assert_allclose(W, W0, atol=1e-3)
        np.testing.assert_allclose(b, b0, atol=1e-3)


def test_old_import_paths_still_work():
    """SGD and the checkpoint functions moved to their own modules; training re-exports them."""
    from portable_softmax import checkpoint, optim, training

    assert training.SGD is optim.SGD is ps.SGD
    assert training.save_checkpoint is checkpoint.save_checkpoint
    assert training.load_checkpoint is checkpoint.load_checkpoint
