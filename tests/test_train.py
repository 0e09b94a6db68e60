"""``train``, its batches, callbacks, checkpoints and exact resume (SPEC §5)."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest

import portable_softmax as ps
from files import members_of, peak_bytes, write_npz
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
    sampler = _Batches.start(n, batch, seed=5)
    for want in reference_batches(n, 20, batch, 5):
        got, sampler = sampler.draw()
        np.testing.assert_array_equal(got, want)


def test_batches_restore_mid_epoch():
    a = _Batches.start(10, 3, seed=1)
    for _ in range(4):
        _, a = a.draw()
    state = json.loads(json.dumps(a.state()))
    b = _Batches.start(10, 3, seed=1).restored(state)
    for _ in range(10):
        (got_a, a), (got_b, b) = a.draw(), b.draw()
        np.testing.assert_array_equal(got_a, got_b)


def test_drawing_a_batch_changes_nothing():
    """The sampler is a value: a step that is not committed leaves no trace in it."""
    a = _Batches.start(10, 3, seed=1)
    first, _ = a.draw()
    again, _ = a.draw()
    np.testing.assert_array_equal(first, again)


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
        meta = json.loads(data["meta"].tobytes())
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
    rest = ps.train(resumed, X, y, checkpoint=path, resume=True, **kwargs)  # its optimizer
    np.testing.assert_array_equal(resumed.W, whole.W)
    np.testing.assert_array_equal(resumed.b, whole.b)
    assert rest.loss == full.loss
    assert rest.eval_step == full.eval_step and rest.eval_accuracy == full.eval_accuracy


def test_resume_checks_the_run(tmp_path):
    X, y = blobs()
    X = X.astype(np.float32)
    path = tmp_path / "run.npz"
    ps.train(ps.SoftmaxRegression(4, 3), X, y, steps=3, batch_size=6, checkpoint=path)
    with pytest.raises(ValueError, match=r"these differ: seed=1 \(checkpoint: 0\)"):
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


# --------------------------------------------------------------------------- robustness (issue 15)


def small_mnist(mnist, n=600, n_test=300):
    (X, y), (X_test, y_test) = mnist
    return X[:n], y[:n], (X_test[:n_test], y_test[:n_test])


RUN = {"batch_size": 50, "steps": 37, "seed": 3, "eval_every": 5}


def momentum():
    return ps.SGD(0.5, momentum=0.9, weight_decay=1e-4)


class InterruptingSGD(ps.SGD):
    """An SGD whose ``at``-th update raises KeyboardInterrupt (as Ctrl-C inside the step)."""

    def __init__(self, at):
        super().__init__(0.5, momentum=0.9, weight_decay=1e-4)
        self.at, self.calls = at, 0

    def _tick(self):
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt

    def step(self, params, grads):  # the update of the first release
        self._tick()
        return super().step(params, grads)

    def update(self, params, grads, velocity):
        self._tick()
        return super().update(params, grads, velocity)


def raising_at(method, at):
    """``method`` that raises KeyboardInterrupt on its ``at``-th call."""
    calls = []

    def wrapped(*args, **kwargs):
        calls.append(1)
        if len(calls) == at:
            raise KeyboardInterrupt
        return method(*args, **kwargs)

    return wrapped


def assert_same_run(model, history, whole, full):
    np.testing.assert_array_equal(to_numpy(model.W), to_numpy(whole.W))
    np.testing.assert_array_equal(to_numpy(model.b), to_numpy(whole.b))
    assert history.loss == full.loss
    assert history.eval_step == full.eval_step
    assert history.eval_accuracy == full.eval_accuracy


@pytest.mark.parametrize("where", ["gradients", "optimizer", "evaluation", "callback"])
@pytest.mark.parametrize("at", [1, 18, 20])
def test_interrupt_inside_a_step_resumes_exactly(tmp_path, mnist, where, at):
    """Ctrl-C anywhere in step ``at``: the checkpoint is one consistent state (issue 15.1)."""
    X, y, eval_data = small_mnist(mnist)
    whole = ps.SoftmaxRegression(784, 10)
    full = ps.train(whole, X, y, optimizer=momentum(), eval_data=eval_data, **RUN)

    path = tmp_path / "run.npz"
    first = ps.SoftmaxRegression(784, 10)
    optimizer, callbacks = momentum(), []
    if where == "gradients":
        first.gradients = raising_at(first.gradients, at)
    elif where == "optimizer":
        optimizer = InterruptingSGD(at)
    elif where == "evaluation":  # evaluations at steps 5, 10, ...: the (at // 5)-th
        first.accuracy = raising_at(first.accuracy, max(at // 5, 1))
    else:
        callbacks = [raising_at(lambda step: False, at)]
    with pytest.raises(KeyboardInterrupt):
        ps.train(first, X, y, optimizer=optimizer, eval_data=eval_data, checkpoint=path,
                 checkpoint_every=4, callbacks=callbacks, **RUN)  # fmt: skip

    resumed = ps.SoftmaxRegression(784, 10)
    rest = ps.train(resumed, X, y, eval_data=eval_data, checkpoint=path, resume=True, **RUN)
    assert_same_run(resumed, rest, whole, full)
    assert rest.resumed_from < RUN["steps"] and rest.steps_run == RUN["steps"] - rest.resumed_from


def test_interrupt_while_copying_losses_resumes_exactly(tmp_path, mnist, monkeypatch):
    """An interrupt inside the block copy of the losses neither loses nor repeats one."""
    import portable_softmax.training as training

    X, y, eval_data = small_mnist(mnist)
    run = dict(RUN, steps=230)
    whole = ps.SoftmaxRegression(784, 10)
    full = ps.train(whole, X, y, optimizer=momentum(), eval_data=eval_data, **run)
    path = tmp_path / "run.npz"
    copies = []

    def interrupted_copy(a):
        if tuple(a.shape) == (100,):  # a block of 100 losses
            copies.append(a)
            if len(copies) == 2:
                raise KeyboardInterrupt
        return to_numpy(a)

    monkeypatch.setattr(training, "to_numpy", interrupted_copy)
    with pytest.raises(KeyboardInterrupt):
        ps.train(ps.SoftmaxRegression(784, 10), X, y, optimizer=momentum(),
                 eval_data=eval_data, checkpoint=path, **run)  # fmt: skip
    monkeypatch.undo()
    resumed = ps.SoftmaxRegression(784, 10)
    rest = ps.train(resumed, X, y, eval_data=eval_data, checkpoint=path, resume=True, **run)
    assert_same_run(resumed, rest, whole, full)


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda d: d / "missing" / "run.npz", FileNotFoundError, "directory .*missing does not"),
        (lambda d: d / "file.txt" / "run.npz", NotADirectoryError, "file.txt is a file"),
        (lambda d: d / "file.txt" / "sub" / "run.npz", NotADirectoryError, "file.txt is a file"),
        (lambda d: d, ValueError, "is a directory"),
        (lambda d: "", ValueError, "checkpoint: the path is empty"),
    ],
    ids=["missing-dir", "under-a-file", "deep-under-a-file", "a-directory", "empty"],
)
def test_checkpoint_path_is_checked_before_the_first_step(tmp_path, make, error, message):
    (tmp_path / "file.txt").write_text("data")
    X, y = blobs()
    steps = []
    with pytest.raises(error, match=message) as info:
        ps.train(ps.SoftmaxRegression(4, 3, dtype=np.float64), X, y, batch_size=6, steps=5,
                 checkpoint=make(tmp_path), callbacks=[steps.append])  # fmt: skip
    assert steps == []  # no step was run
    assert ".tmp" not in str(info.value)


def test_bfloat16_torch_checkpoint_and_exact_resume(tmp_path):
    torch = pytest.importorskip("torch")
    X, y = blobs()
    Xt, yt = torch.asarray(X, dtype=torch.bfloat16), torch.asarray(y)
    run = {"batch_size": 6, "steps": 12, "seed": 1}
    whole = ps.SoftmaxRegression(4, 3, xp=torch, dtype=torch.bfloat16)
    full = ps.train(whole, Xt, yt, optimizer=momentum(), **run)
    path = tmp_path / "bf16.npz"
    half = ps.SoftmaxRegression(4, 3, xp=torch, dtype=torch.bfloat16)
    ps.train(half, Xt, yt, optimizer=momentum(), checkpoint=path, **dict(run, steps=5))
    loaded = ps.SoftmaxRegression(4, 3, xp=torch, dtype=torch.bfloat16)
    load_checkpoint(path, loaded)
    assert loaded.W.dtype == torch.bfloat16 and torch.equal(loaded.W, half.W)
    resumed = ps.SoftmaxRegression(4, 3, xp=torch, dtype=torch.bfloat16)
    rest = ps.train(resumed, Xt, yt, checkpoint=path, resume=True, **run)
    assert torch.equal(resumed.W, whole.W) and torch.equal(resumed.b, whole.b)
    assert rest.loss == full.loss


def dead_pid():
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_temporaries_are_removed_on_the_next_save(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "run.npz"
    model = ps.SoftmaxRegression(2, 2)
    save_checkpoint(path, model)
    stale = [tmp_path / f".run.npz.{dead_pid()}-x1y2z3.tmp", tmp_path / ".run.npz.k3j2h1.tmp"]
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]) as live:
        busy = tmp_path / f".run.npz.{live.pid}-a1b2c3.tmp"  # another process is writing
        other = tmp_path / f".other.npz.{dead_pid()}-q1w2e3.tmp"  # another checkpoint's
        for f in (*stale, busy, other):
            f.write_bytes(b"PK half a zip")
        save_checkpoint(path, model)
        live.kill()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["run.npz", busy.name, other.name])


def test_extra_checkpoint_members_are_not_read(tmp_path):
    """A 64 MiB member (64 KiB deflated) beside the real ones costs no memory (issue 15.6)."""
    model = ps.SoftmaxRegression(2, 2)
    save_checkpoint(tmp_path / "good.npz", model, state={"step": 1})
    members = members_of(tmp_path / "good.npz")
    members["bomb"] = np.zeros(8 << 20)
    path = write_npz(tmp_path / "bomb.npz", members, compression=True)
    assert path.stat().st_size < 1 << 20
    peak = peak_bytes(lambda: load_checkpoint(path, ps.SoftmaxRegression(2, 2)))
    assert peak < 4 << 20


def test_oversized_checkpoint_member_is_refused_before_reading(tmp_path):
    model = ps.SoftmaxRegression(2, 2)
    save_checkpoint(tmp_path / "good.npz", model, state={"step": 1})
    members = members_of(tmp_path / "good.npz")
    members["W"] = np.zeros((8 << 20, 2))  # 128 MiB declared, 128 KiB deflated
    path = write_npz(tmp_path / "big.npz", members, compression=True)
    errors = []

    def load():
        with pytest.raises(ValueError, match="big.npz: W") as info:
            load_checkpoint(path, ps.SoftmaxRegression(2, 2))
        errors.append(str(info.value))

    assert peak_bytes(load) < 4 << 20 and errors


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"lr": float("nan")}, "lr must be a finite number >= 0, got nan"),
        ({"lr": -0.5}, "lr must be a finite number >= 0, got -0.5"),
        ({"momentum": float("inf")}, "momentum must be a finite number >= 0"),
        ({"weight_decay": -1}, "weight_decay must be a finite number >= 0"),
        ({"lr": "0.5"}, "lr must be a finite number >= 0, got '0.5'"),
    ],
)
def test_checkpoint_optimizer_settings_are_validated(tmp_path, change, message):
    model = ps.SoftmaxRegression(2, 2)
    path = tmp_path / "c.npz"
    save_checkpoint(path, model, ps.SGD(0.5), state={"step": 0})
    members = members_of(path)
    meta = json.loads(members["meta"].tobytes())
    meta["optimizer"].update(change)
    members["meta"] = np.asarray(json.dumps(meta))
    write_npz(path, members)
    opt = ps.SGD(0.1)
    with pytest.raises(ValueError, match=f"c.npz: {re.escape(message)}"):
        load_checkpoint(path, model, opt)
    assert opt.lr == 0.1  # untouched


@pytest.mark.parametrize(
    ("W", "message"),
    [
        (np.asarray([[1.0, np.nan], [0.0, 0.0]]), "W holds non-finite values"),
        (np.asarray([[1.0, np.inf], [0.0, 0.0]]), "W holds non-finite values"),
        (np.asarray([[1 + 2j, 0], [0, 0]]), "W holds complex128 values"),
        (np.asarray([["a", "b"], ["c", "d"]]), "W holds <U1 values"),
        (np.asarray([[1, 2], [3, 4]]), "W holds int64 values"),
    ],
)
def test_checkpoint_weights_are_validated(tmp_path, W, message):
    path = tmp_path / "c.npz"
    save_checkpoint(path, ps.SoftmaxRegression(2, 2))
    members = members_of(path)
    members["W"] = W
    write_npz(path, members)
    model = ps.SoftmaxRegression(2, 2)
    with pytest.raises(ValueError, match=f"c.npz: {re.escape(message)}"):
        load_checkpoint(path, model)
    assert not np.any(model.W)  # untouched


def checkpoint_with_meta(path, meta_text):
    save_checkpoint(path, ps.SoftmaxRegression(4, 3))
    members = members_of(path)
    members["meta"] = np.asarray(meta_text)
    return write_npz(path, members)


def good_meta(tmp_path):
    X, y = blobs()
    path = tmp_path / "good.npz"
    ps.train(ps.SoftmaxRegression(4, 3), X, y, batch_size=6, steps=3, checkpoint=path)
    return json.loads(members_of(path)["meta"].tobytes())


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: "[]", "meta is a JSON list, not an object"),
        (lambda m: "42", "meta is a JSON int, not an object"),
        (lambda m: "{not json", "meta is not JSON"),
        (lambda m: "[" * 100000, "meta is not JSON"),
        (lambda m: {k: v for k, v in m.items() if k != "step"}, "no 'step'"),
        (lambda m: dict(m, step="3"), "step is '3'"),
        (lambda m: dict(m, history=dict(m["history"], loss="abc")), "history.loss is not 3"),
        (lambda m: dict(m, history=dict(m["history"], loss=[1, 2])), "history.loss is not 3"),
        (lambda m: dict(m, sampler={"pos": 6}), "sampler state"),
        (lambda m: dict(m, sampler=dict(m["sampler"], epoch_state={"x": 1})), "PCG64"),
        (lambda m: dict(m, sampler=dict(m["sampler"], pos=-1)), "sampler position"),
        (lambda m: dict(m, optimizer=[]), "optimizer is not a JSON object"),
        (lambda m: dict(m, optimizer={"lr": 0.5}), "the optimizer has no 'momentum'"),
    ],
)
def test_malformed_checkpoint_state_is_a_value_error(tmp_path, edit, message):
    meta = edit(good_meta(tmp_path))
    text = meta if isinstance(meta, str) else json.dumps(meta)
    path = checkpoint_with_meta(tmp_path / "bad.npz", text)
    X, y = blobs()
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        ps.train(ps.SoftmaxRegression(4, 3), X, y, batch_size=6, steps=5, checkpoint=path,
                 resume=True)  # fmt: skip
    assert "bad.npz" in str(info.value)


def test_a_plain_npy_file_is_not_a_checkpoint(tmp_path):
    np.save(tmp_path / "weights.npy", np.zeros((2, 2)))
    with pytest.raises(ValueError, match="weights.npy: not a portable_softmax checkpoint"):
        load_checkpoint(tmp_path / "weights.npy", ps.SoftmaxRegression(2, 2))


def test_resume_refuses_other_settings_naming_each(tmp_path):
    X, y = blobs()
    path = tmp_path / "run.npz"
    ps.train(ps.SoftmaxRegression(4, 3), X, y, optimizer=ps.SGD(0.3), batch_size=6, steps=3,
             checkpoint=path)  # fmt: skip
    with pytest.raises(ValueError, match=r"lr=0.01 \(checkpoint: 0.3\); momentum=0.9 \(chec"):
        ps.train(ps.SoftmaxRegression(4, 3), X, y, optimizer=ps.SGD(0.01, momentum=0.9),
                 batch_size=6, steps=6, checkpoint=path, resume=True)  # fmt: skip
    with pytest.raises(ValueError, match=r"dtype='float64' \(checkpoint: 'float32'\)"):
        ps.train(ps.SoftmaxRegression(4, 3, dtype=np.float64), X, y, batch_size=6, steps=6,
                 checkpoint=path, resume=True)  # fmt: skip
    other = np.roll(y, 1)  # the same size, other labels
    with pytest.raises(ValueError, match="the training data"):
        ps.train(ps.SoftmaxRegression(4, 3), X, other, batch_size=6, steps=6, checkpoint=path,
                 resume=True)  # fmt: skip
    with pytest.raises(ValueError, match="is at step 3, beyond steps=2"):
        ps.train(ps.SoftmaxRegression(4, 3), X, y, batch_size=6, steps=2, checkpoint=path,
                 resume=True)  # fmt: skip
    same = ps.train(ps.SoftmaxRegression(4, 3), X, y, optimizer=ps.SGD(0.3), batch_size=6,
                    steps=6, checkpoint=path, resume=True)  # fmt: skip
    assert same.resumed_from == 3 and same.steps_run == 3


@pytest.mark.parametrize(
    ("labels", "message"),
    [([0, 1, 5], "y holds label 5, outside the model's 3 classes 0..2"),
     ([0, -1, 2], "y holds label -1, outside")],
)  # fmt: skip
def test_labels_outside_the_class_range_fail_before_the_first_step(labels, message):
    X, _ = blobs(n=3)
    steps = []
    with pytest.raises(ValueError, match=re.escape(message)):
        ps.train(ps.SoftmaxRegression(4, 3), X, np.asarray(labels), batch_size=3, steps=2,
                 callbacks=[steps.append])  # fmt: skip
    assert steps == []


def test_eval_data_is_checked_before_the_first_step():
    X, y = blobs()
    model = ps.SoftmaxRegression(4, 3)
    steps = []
    bad = [
        ((X[:, :3], y), r"eval_data\[0\] must have shape \(N, 4\)"),
        ((X[:0], y[:0]), r"eval_data\[0\] is empty"),
        ((X, y + 5), r"eval_data\[1\] holds label"),
        ((X, y.astype(np.float32)), r"eval_data\[1\] must hold integer class labels"),
    ]
    for eval_data, message in bad:
        with pytest.raises((ValueError, TypeError), match=message):
            ps.train(model, X, y, batch_size=6, steps=2, eval_data=eval_data,
                     callbacks=[steps.append])  # fmt: skip
    assert steps == []


@EAGER_ONLY
def test_data_are_cast_to_the_model_dtype(xp, library):
    """One rule on every backend: float64 data train a float32 model as float32 (15.11)."""
    X, y = blobs()
    model = ps.SoftmaxRegression(4, 3, xp=xp)
    ps.train(model, xp.asarray(X), xp.asarray(y), batch_size=6, steps=4)
    assert_namespace_dtype(model.W, xp, xp.float32, (4, 3))
    assert_namespace_dtype(model.b, xp, xp.float32, (3,))
    reference = ps.SoftmaxRegression(4, 3, xp=xp)
    ps.train(reference, xp.asarray(X.astype(np.float32)), xp.asarray(y), batch_size=6, steps=4)
    np.testing.assert_array_equal(to_numpy(model.W), to_numpy(reference.W))
    assert_namespace_dtype(model.logits(xp.asarray(X)), xp, xp.float32, (60, 3))


def first_nonfinite_step(X, y, lr, momentum_=0.0, batch=6, steps=400):
    """The plain-NumPy loop with momentum: the first step whose loss is not finite."""
    W, b = np.zeros((X.shape[1], 3), np.float32), np.zeros(3, np.float32)
    vW = vb = None
    with np.errstate(all="ignore"):
        for step, idx in enumerate(reference_batches(len(X), steps, batch, 0), start=1):
            model = ps.SoftmaxRegression(X.shape[1], 3)
            model.W, model.b = W, b
            loss, (dW, db) = model.gradients(X[idx], y[idx])
            if not np.isfinite(float(loss)):
                return step
            vW = dW if vW is None or not momentum_ else momentum_ * vW + dW
            vb = db if vb is None or not momentum_ else momentum_ * vb + db
            W, b = W - lr * vW, b - lr * vb
    return None


@pytest.mark.parametrize(("lr", "mom"), [(1e308, 0.0), (0.5, 2.0)], ids=["lr-1e308", "momentum-2"])
def test_divergence_stops_with_a_message_and_keeps_the_finite_checkpoint(tmp_path, lr, mom):
    import warnings

    from portable_softmax.training import TrainingDiverged

    X, y = blobs()
    X = (X * 100).astype(np.float32)
    k = first_nonfinite_step(X, y, lr, mom)
    assert k is not None and k > 1
    path = tmp_path / "run.npz"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no NumPy overflow warnings on the way
        with pytest.raises(FloatingPointError, match=rf"training diverged at step {k} \(loss "):
            ps.train(ps.SoftmaxRegression(4, 3), X, y, optimizer=ps.SGD(lr, momentum=mom),
                     batch_size=6, steps=400, checkpoint=path, checkpoint_every=1)  # fmt: skip
    with pytest.raises(TrainingDiverged, match="lower the learning rate") as info:
        ps.train(ps.SoftmaxRegression(4, 3), X, y, optimizer=ps.SGD(lr, momentum=mom),
                 batch_size=6, steps=400)  # fmt: skip
    assert info.value.step == k and len(info.value.history.loss) == k - 1
    if k == 2:  # the weights after step 1 were already not finite: never saved
        assert not path.exists()
        return
    kept = ps.SoftmaxRegression(4, 3)
    state = load_checkpoint(path, kept)
    assert 0 < state["step"] < k and np.all(np.isfinite(kept.W))


# --------------------------------------------------------------------------- numbers (issue 14)


def test_accuracy_is_a_count_over_a_count():
    """7 right out of 10 is 0.7, not float32's 0.699999988 (issue 14.3)."""
    model = ps.SoftmaxRegression(1, 2)
    model.b = np.asarray([1.0, 0.0], dtype=np.float32)  # predicts class 0 everywhere
    X = np.zeros((10, 1), dtype=np.float32)
    y = np.asarray([0] * 7 + [1] * 3)
    assert float(model.accuracy(X, y)) == 0.7
    X, y = blobs()
    history = ps.train(ps.SoftmaxRegression(4, 3), X, y, batch_size=6, steps=10,
                       eval_data=(X[:7], y[:7]), eval_every=5)  # fmt: skip
    assert all(round(a * 7) / 7 == a for a in history.eval_accuracy)


def test_readme_python_block_prints_what_its_comment_says(capsys):
    """The MNIST block of README.md, run as written (issue 14.3)."""
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    block = next(b for b in blocks if "load_mnist" in b)
    exec(compile(block, "README.md", "exec"), {})
    printed = capsys.readouterr().out.strip()
    comment = block.strip().splitlines()[-1].split("#")[-1].strip()
    assert printed == comment == "0.9177"
