"""Dask at scale (SPEC §10): one tree reduction, any chunking, lazy, on dask.distributed.

The eager NumPy result is the reference: every chunking of the same values
gives it to rounding.  ``scheduler`` runs each test on Dask's threaded
scheduler and on an in-process ``dask.distributed`` LocalCluster; one slow
test uses worker processes.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")

import portable_softmax as ps  # noqa: E402
from cases import CASES, make_data  # noqa: E402
from portable_softmax._native import backend_for  # noqa: E402

INF, NAN = np.inf, np.nan

# Chunkings of a (7, 13) array: one block, classes split unevenly, one class
# per block, rows split too.
CHUNKINGS = [(7, 13), (3, 4), (7, (5, 1, 7)), (2, 1), (4, 6)]


@pytest.fixture(params=["threads", "distributed"])
def scheduler(request: pytest.FixtureRequest) -> Iterator[str]:
    """Compute on the threaded scheduler, or on the session's LocalCluster."""
    if request.param == "threads":
        with dask.config.set(scheduler="threads"):
            yield request.param
    else:
        client = request.getfixturevalue("dask_client")
        with dask.config.set(scheduler=client):
            yield request.param


@contextlib.contextmanager
def no_compute() -> Iterator[None]:
    """Fail on any ``compute`` or ``persist`` inside the block."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a Dask graph was computed before the caller asked")

    with dask.config.set(scheduler=refuse):
        yield


def chunked(a: np.ndarray, chunks: Any) -> Any:
    return da.from_array(a, chunks=chunks)


def special_logits() -> np.ndarray:
    """Rows whose special values sit in one block, or span blocks, of the chunkings."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(7, 13)) * 3
    x[0, :4] = -INF  # a block of -inf in a finite row
    x[1, 7] = INF  # +inf in one block only
    x[2, 3] = NAN
    x[3, :] = -INF  # a row of -inf across every block
    x[4, 1], x[4, 11] = INF, INF  # two +inf in different blocks: 1/2 each
    x[5, 2] = 40.0  # one dominant entry: tiny log-probability elsewhere
    return x


def test_dask_arrays_take_the_dask_backend():
    assert backend_for(da.zeros((2, 3))).name == "dask"
    with ps.native_kernels(False):
        assert backend_for(da.zeros((2, 3))) is None


# ------------------------------------------------ chunking independence, values


@pytest.mark.parametrize("chunks", CHUNKINGS, ids=str)
@pytest.mark.parametrize("func", [ps.softmax, ps.log_softmax, ps.logsumexp])
def test_normalisers_match_numpy_whatever_the_chunks(scheduler, func, chunks):
    x = special_logits()
    with np.errstate(all="ignore"):
        ref = func(x)
    with no_compute():
        out = func(chunked(x, chunks))
    assert isinstance(out, da.Array)
    np.testing.assert_allclose(out.compute(), ref, rtol=1e-13, atol=0)


@pytest.mark.parametrize("func", [ps.softmax, ps.log_softmax, ps.logsumexp])
@pytest.mark.parametrize("axis", [0, (0, 2), (1, 2), (0, 1, 2)], ids=str)
def test_tuple_axes_and_where_match_numpy(func, axis):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(6, 5, 4)) * 4
    x[0, :, :2] = -INF
    mask = rng.random(x.shape) > 0.3
    for where in (None, mask):
        ref = func(x, axis=axis, where=where)
        dwhere = None if where is None else chunked(where, (3, 2, 3))
        out = func(chunked(x, (4, 2, 3)), axis=axis, where=dwhere)
        np.testing.assert_allclose(out.compute(), ref, rtol=1e-13)


def test_float32_stays_float32_and_accurate():
    rng = np.random.default_rng(2)
    x = (rng.normal(size=(40, 300)) * 10).astype(np.float32)
    dx = chunked(x, (16, 64))
    for func in (ps.softmax, ps.log_softmax, ps.logsumexp):
        out = func(dx)
        assert out.dtype == np.float32
        np.testing.assert_allclose(out.compute(), func(x.astype(np.float64)), rtol=2e-5, atol=1e-6)


def test_dominant_entry_keeps_relative_accuracy():
    # logsumexp = 30 + log1p(e^-60 + ...): the log1p form keeps the tiny term.
    x = np.array([[30.0, -30.0, -40.0, -35.0, -31.0, -50.0]])
    for chunks in [(1, 1), (1, 2), (1, 6)]:
        lp = ps.log_softmax(chunked(x, chunks)).compute()
        np.testing.assert_allclose(lp, ps.log_softmax(x), rtol=1e-14)
        assert lp[0, 0] < 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rows_on_either_side_of_the_direct_exponential_match_mpmath(dtype):
    """Blocks take exp(x) * exp(-max) where the row maximum lies in [0, 60] and
    exp(x - max) elsewhere: both give the exact values to rounding."""
    mpmath = pytest.importorskip("mpmath")
    rng = np.random.default_rng(8)
    tops = [0.0, 0.5, 3.0, 59.9, 60.0, 60.5, 200.0, -0.25, -70.0]
    x = rng.normal(size=(len(tops), 40)) * 3
    x += (np.array(tops) - x.max(axis=1))[:, None]  # each row's maximum is its top
    x[4] = -80.0  # a dominant entry: the loss of class 0 is about 39 e^-140
    x[4, 0] = 60.0
    x = x.astype(dtype)
    y = np.array([0, 5, 9, 3, 0, 1, 2, 3, 4])
    with mpmath.workdps(40):
        lse = np.array([float(mpmath.log(sum(mpmath.exp(mpmath.mpf(float(v))) for v in row)))
                        for row in x])  # fmt: skip
        loss_4 = float(mpmath.log1p(39 * mpmath.exp(mpmath.mpf(-140))))
    want = lse - x[np.arange(len(y)), y]
    rtol = 2e-6 if dtype == np.float32 else 1e-13
    for chunks in [(3, 40), (9, 7)]:
        dx, dy = chunked(x, chunks), chunked(y, chunks[0])
        np.testing.assert_allclose(ps.logsumexp(dx).compute(), lse, rtol=rtol)
        got = ps.cross_entropy(dx, dy, reduction="none").compute()
        np.testing.assert_allclose(np.delete(got, 4), np.delete(want, 4), rtol=rtol, atol=1e-6)
        if dtype == np.float64:
            np.testing.assert_allclose(got[4], loss_4, rtol=1e-12)


def test_unknown_row_chunks_work_for_the_normalisers():
    x = chunked(np.random.default_rng(3).random((10, 4)), 5)
    kept = x[x[:, 0] > 0.5]
    assert np.isnan(kept.shape[0])
    for func in (ps.softmax, ps.log_softmax, ps.logsumexp):
        np.testing.assert_allclose(func(kept).compute(), func(kept.compute()), rtol=1e-14)


# ------------------------------------------------------------------ the losses

GRID = CASES[::5]  # every value of every option (5 is coprime with the factors' sizes)


def _chunks_for(shape: tuple[int, ...], axis: int) -> tuple[Any, ...]:
    """Several blocks along the class axis (never one), two along the others."""
    ax = axis % len(shape)
    return tuple(max(1, n // 3) if i == ax else max(1, (n + 1) // 2) for i, n in enumerate(shape))


@pytest.mark.parametrize("case", GRID, ids=[c.id for c in GRID])
def test_every_loss_option_matches_numpy(case):
    data = make_data(case)
    x, t, axis = data["logits"], data["target"], data["axis"]
    chunks = _chunks_for(x.shape, axis)
    kwargs = {**data["kwargs"], "weight": data["weight"]}
    dkw = dict(kwargs)
    if data["weight"] is not None:
        dkw["weight"] = chunked(data["weight"], 2)
    ax = axis % x.ndim
    sample_chunks = tuple(c for i, c in enumerate(chunks) if i != ax)
    dt = chunked(t, chunks if t.ndim == x.ndim else sample_chunks)
    dx = chunked(x, chunks)
    ref_loss, ref_grad = ps.cross_entropy_with_grad(x, t, axis, **kwargs)
    with no_compute():
        loss = ps.cross_entropy(dx, dt, axis, **dkw)
        grad = ps.cross_entropy_grad(dx, dt, axis, **dkw)
        both = ps.cross_entropy_with_grad(dx, dt, axis, **dkw)
    np.testing.assert_allclose(loss.compute(), ref_loss, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(grad.compute(), ref_grad, rtol=1e-12, atol=1e-14)
    computed = dask.compute(*both)
    np.testing.assert_allclose(computed[0], ref_loss, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(computed[1], ref_grad, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("chunks", CHUNKINGS, ids=str)
@pytest.mark.parametrize("form", ["index", "prob"])
@pytest.mark.parametrize(
    "options",
    [{}, {"weight": True}, {"label_smoothing": 0.3}, {"weight": True, "label_smoothing": 0.3}],
    ids=["plain", "weight", "smoothing", "weight-smoothing"],
)
def test_losses_with_special_logits_match_numpy(scheduler, chunks, form, options):
    rng = np.random.default_rng(4)
    x = special_logits()
    if form == "index":
        t = rng.integers(0, 13, size=7)
        t[1] = 7  # on the +inf
        dt = chunked(t, chunks[0])
    else:
        t = rng.random((7, 13))
        t[t < 0.3] = 0.0
        t /= t.sum(axis=1, keepdims=True)
        dt = chunked(t, chunks)
    w = rng.uniform(0.5, 2.0, size=13)
    kw = {k: (w if k == "weight" else v) for k, v in options.items()}
    dkw = {k: (chunked(w, 5) if k == "weight" else v) for k, v in options.items()}
    with np.errstate(all="ignore"):
        ref = ps.cross_entropy(x, t, reduction="none", **kw)
        ref_grad = ps.cross_entropy_grad(x, t, reduction="none", **kw)
    dx = chunked(x, chunks)
    loss = ps.cross_entropy(dx, dt, reduction="none", **dkw).compute()
    grad = ps.cross_entropy_grad(dx, dt, reduction="none", **dkw).compute()
    np.testing.assert_allclose(loss, ref, rtol=1e-12)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("form", ["index", "prob"])
def test_losses_with_where_match_numpy(form):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(9, 11))
    mask = rng.random((9, 11)) > 0.3
    mask[:, 0] = True
    if form == "index":
        t, dt = np.zeros(9, dtype=np.int64), chunked(np.zeros(9, dtype=np.int64), 4)
    else:
        t = np.where(mask, rng.random((9, 11)), 0.0)
        t /= t.sum(axis=1, keepdims=True)
        dt = chunked(t, (4, 3))
    w = rng.uniform(0.5, 2.0, size=11)
    for kw in ({}, {"label_smoothing": 0.2}, {"label_smoothing": 0.2, "weight": w}):
        dkw = {k: (chunked(v, 5) if k == "weight" else v) for k, v in kw.items()}
        ref = ps.cross_entropy_with_grad(x, t, where=mask, **kw)
        got = ps.cross_entropy_with_grad(chunked(x, (4, 3)), dt, where=chunked(mask, (4, 3)), **dkw)
        for a, b in zip(dask.compute(*got), ref, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


def test_out_of_range_index_gives_nan_for_that_sample_only():
    x = np.random.default_rng(6).normal(size=(6, 10))
    t = np.array([0, 10, 2, -3, 4, 5])
    dx, dt = chunked(x, (4, 3)), chunked(t, 4)
    good = np.array([True, False, True, False, True, True])
    with no_compute():
        loss = ps.cross_entropy(dx, dt, reduction="none")
        grad = ps.cross_entropy_grad(dx, dt)
        mean = ps.cross_entropy(dx, dt)
    loss, grad, mean = dask.compute(loss, grad, mean)
    assert np.isnan(loss[~good]).all() and np.isnan(grad[~good]).all() and np.isnan(mean)
    ref = ps.cross_entropy(x[good], t[good], reduction="none")
    np.testing.assert_allclose(loss[good], ref, rtol=1e-13)
    assert np.isfinite(grad[good]).all()


def test_chunking_of_targets_and_weights_may_differ_from_the_logits():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(12, 20))
    t = rng.random((12, 20))
    t /= t.sum(axis=1, keepdims=True)
    w = rng.uniform(0.5, 2.0, size=20)
    ref = ps.cross_entropy(x, t, weight=w, label_smoothing=0.1)
    got = ps.cross_entropy(
        chunked(x, (5, 7)), chunked(t, (3, 11)), weight=chunked(w, 6), label_smoothing=0.1
    )
    np.testing.assert_allclose(got.compute(), ref, rtol=1e-13)


# ------------------------------------------------------------ graph structure


def _graph(a: Any) -> dict:
    return dict(a.__dask_graph__())


def _dependents(graph: dict, keys: set) -> dict:
    """How many tasks of ``graph`` read each of ``keys``."""
    from dask.core import get_dependencies

    counts = dict.fromkeys(keys, 0)
    for key in graph:
        for dep in get_dependencies(graph, key):
            if dep in counts:
                counts[dep] += 1
    return counts


def _lazy_array(n: int = 600, chunk: int = 100) -> Any:
    return da.random.default_rng(0).standard_normal((n, n), chunks=(chunk, chunk))


def _loss_calls() -> dict[str, Any]:
    x = _lazy_array()
    n = x.shape[1]
    y = da.random.default_rng(1).integers(0, n, size=n, chunks=100)
    p = da.random.default_rng(2).random(x.shape, chunks=x.chunks)
    w = da.random.default_rng(3).random(n, chunks=100)
    return {
        "logsumexp": (x, lambda: ps.logsumexp(x)),
        "ce-index": (x, lambda: ps.cross_entropy(x, y)),
        "ce-index-options": (
            x,
            lambda: ps.cross_entropy(x, y, weight=w, ignore_index=3, label_smoothing=0.1),
        ),
        "ce-prob": (x, lambda: ps.cross_entropy(x, p)),
        "ce-prob-options": (x, lambda: ps.cross_entropy(x, p, weight=w, label_smoothing=0.1)),
        "ce-where": (x, lambda: ps.cross_entropy(x, y, where=p > 0.1, label_smoothing=0.1)),
    }


@pytest.mark.parametrize("name", list(_loss_calls()))
def test_each_block_of_logits_is_read_once(name):
    x, call = _loss_calls()[name]
    out = call()
    counts = _dependents(_graph(out), set(_flatten(x.__dask_keys__())))
    # One consumer per block: one pass, and never a rechunk of the logits.
    assert set(counts.values()) == {1}, counts


def _flatten(keys: Any) -> list:
    if isinstance(keys, list):
        return [k for item in keys for k in _flatten(item)]
    return [keys]


@pytest.mark.parametrize("func", [ps.softmax, ps.log_softmax, ps.cross_entropy_grad])
def test_normalisers_are_the_reduction_plus_one_elementwise_pass(func):
    x = _lazy_array()
    if func is ps.cross_entropy_grad:
        out = func(x, da.zeros(x.shape[0], dtype=np.int64, chunks=100))
    else:
        out = func(x)
    counts = _dependents(_graph(out), set(_flatten(x.__dask_keys__())))
    assert set(counts.values()) == {2}, counts


@pytest.mark.parametrize("name", list(_loss_calls()))
def test_task_count_is_of_the_order_of_the_blocks(name):
    x, call = _loss_calls()[name]
    n_blocks = x.npartitions  # 36
    sum_tasks = len(x.sum(axis=-1).__dask_graph__())
    tasks = len(call().__dask_graph__())
    with ps.native_kernels(False):
        generic_tasks = len(call().__dask_graph__())
    assert tasks < generic_tasks
    if name != "ce-where":  # checking where= (a target on a masked class) is a pass of its own
        assert tasks <= sum_tasks + 4 * n_blocks, (tasks, sum_tasks)


def test_logsumexp_graph_is_as_small_as_a_sum():
    x = _lazy_array(1200, 100)  # 144 blocks
    sum_tasks = len(x.sum(axis=-1).__dask_graph__())
    lse_tasks = len(ps.logsumexp(x).__dask_graph__())
    assert lse_tasks <= sum_tasks + x.numblocks[0]  # + the squeeze of the kept axis


# ------------------------------------------------------------------- laziness


def test_nothing_is_computed_until_asked():
    x = _lazy_array()
    y = da.random.default_rng(1).integers(0, 600, size=600, chunks=100)
    with no_compute():
        outs = [
            ps.softmax(x),
            ps.log_softmax(x),
            ps.logsumexp(x, axis=(0, 1)),
            ps.cross_entropy(x, y, label_smoothing=0.2, ignore_index=5),
            *ps.cross_entropy_with_grad(x, ps.softmax(x)),
        ]
    assert all(isinstance(o, da.Array) for o in outs)


# ------------------------------------------------------------------ distributed


def test_distributed_results_equal_threaded_ones(dask_client):
    x = _lazy_array(300, 70)
    y = da.random.default_rng(1).integers(0, 300, size=300, chunks=70)
    outs = [ps.logsumexp(x), ps.cross_entropy(x, y, label_smoothing=0.1), ps.softmax(x)]
    threaded = dask.compute(*outs, scheduler="threads")
    futures = dask_client.compute(outs)
    for a, b in zip(dask_client.gather(futures), threaded, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-13)


@pytest.mark.slow
def test_on_a_cluster_of_worker_processes(monkeypatch):
    distributed = pytest.importorskip("distributed")
    rng = np.random.default_rng(8)
    x = rng.normal(size=(400, 300)).astype(np.float32)
    y = rng.integers(0, 300, size=400)
    # The nanny leaves OMP/OPENBLAS/MKL_NUM_THREADS=1 in this process's
    # environment, which later subprocesses (the CLI tests) would inherit.
    for name in (
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "MKL_NUM_THREADS",
        "MALLOC_TRIM_THRESHOLD_",
    ):
        if name in os.environ:
            monkeypatch.setenv(name, os.environ[name])  # restored as it was
        else:
            monkeypatch.setenv(name, "")
            monkeypatch.delenv(name)  # removed again afterwards
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        dx, dy = chunked(x, (150, 80)), chunked(y, 150)
        outs = [ps.logsumexp(dx), *ps.cross_entropy_with_grad(dx, dy, label_smoothing=0.1)]
        got = client.gather(client.compute(outs))
    ref = [ps.logsumexp(x), *ps.cross_entropy_with_grad(x, y, label_smoothing=0.1)]
    for a, b in zip(got, ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-7)


# ------------------------------------------------- SoftmaxRegression.to(...)


def test_a_numpy_model_evaluates_lazily_on_dask():
    rng = np.random.default_rng(9)
    model = ps.SoftmaxRegression(6, 4)
    model.W = rng.normal(size=(6, 4)).astype(np.float32)
    model.b = rng.normal(size=4).astype(np.float32)
    X = rng.normal(size=(50, 6)).astype(np.float32)
    y = rng.integers(0, 4, size=50)
    lazy = model.to(da)
    assert isinstance(lazy.W, da.Array) and lazy.W.dtype == np.float32
    dX, dy = chunked(X, 20), chunked(y, 20)
    with no_compute():
        outs = [lazy.logits(dX), lazy.predict_proba(dX), lazy.predict(dX), lazy.loss(dX, dy)]
    got = dask.compute(*outs)
    ref = [model.logits(X), model.predict_proba(X), model.predict(X), model.loss(X, y)]
    for a, b in zip(got, ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    assert float(lazy.accuracy(dX, dy)) == pytest.approx(float(model.accuracy(X, y)))


def test_a_torch_model_evaluates_on_dask_and_comes_back():
    torch = pytest.importorskip("torch")
    model = ps.SoftmaxRegression(5, 3, xp=torch, dtype=torch.float64)
    model.W = torch.arange(15, dtype=torch.float64).reshape(5, 3) / 10
    lazy = model.to(xp=da)
    assert isinstance(lazy.W, da.Array) and lazy.W.dtype == np.float64
    back = lazy.to(torch, dtype=torch.float32)
    assert isinstance(back.W, torch.Tensor) and back.W.dtype == torch.float32
    np.testing.assert_allclose(back.W.numpy(), model.W.numpy(), rtol=1e-7)
    assert model.to() is not model  # a copy, even with nothing to change
    assert model.to(dtype=torch.float32).W.dtype == torch.float32


def test_the_loss_grid_visits_every_option():
    for field in ("layout", "form", "reduction", "weighted", "ignore", "smoothing"):
        assert {getattr(c, field) for c in GRID} == {getattr(c, field) for c in CASES}, field
