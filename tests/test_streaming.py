"""Out-of-core training (SPEC §10): Dask row blocks streamed into a NumPy or PyTorch model."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")

import portable_softmax as ps  # noqa: E402
from portable_softmax.streaming import (  # noqa: E402
    BlockBatches,
    StreamedData,
    accuracy,
    open_arrays,
    streams,
)


def toy(n: int = 600, features: int = 5, classes: int = 3, seed: int = 0) -> tuple[Any, Any]:
    """Separable-ish data: labels from a fixed linear map of the features."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, features)).astype(np.float32)
    y = np.argmax(X @ rng.normal(size=(features, classes)), axis=1)
    return X, y


# ---------------------------------------------------------------- the sampler


def test_block_batches_shuffle_blocks_then_rows_within_each():
    sampler = BlockBatches.start((30, 30, 20), 10, seed=1)
    draws = []
    for _ in range(8):  # one epoch: 3 + 3 + 2 batches
        rows, sampler = sampler.draw()
        draws.append(rows)
    blocks = [r.block for r in draws]
    order = BlockBatches.start((30, 30, 20), 10, seed=1).order(0)
    runs = [blocks[0]] + [b for a, b in zip(blocks, blocks[1:], strict=False) if b != a]
    assert runs == list(order)  # each block once, in the epoch's order
    for block in set(blocks):
        used = np.concatenate([r.rows for r in draws if r.block == block])
        assert sorted(used) == list(range((30, 30, 20)[block]))  # every row of it, once
    assert sampler.state()["epoch"] == 0
    assert sampler.draw()[1].state()["epoch"] == 1  # then the next epoch


def test_block_batches_are_a_function_of_the_seed():
    def stream(seed: int) -> list[tuple[int, tuple[int, ...]]]:
        sampler, out = BlockBatches.start((50, 40, 40), 20, seed=seed), []
        for _ in range(15):
            rows, sampler = sampler.draw()
            out.append((rows.block, tuple(rows.rows)))
        return out

    assert stream(0) == stream(0)
    assert stream(0) != stream(1)


def test_rows_past_the_last_whole_batch_and_small_blocks_wait():
    sampler = BlockBatches.start((25, 5, 10), 10, seed=0)
    seen = set()
    for _ in range(30):
        rows, sampler = sampler.draw()
        assert len(rows.rows) == 10
        seen.add(rows.block)
    assert seen == {0, 2}  # the block of 5 rows never makes a batch
    with pytest.raises(ValueError, match="rechunk X"):
        BlockBatches.start((5, 8), 10, seed=0)


def test_the_state_restores_the_same_stream():
    sampler = BlockBatches.start((30, 30, 20), 10, seed=4)
    for _ in range(11):
        _, sampler = sampler.draw()
    restored = BlockBatches.start((30, 30, 20), 10, seed=4).restored(sampler.state())
    for _ in range(10):
        (a, sampler), (b, restored) = sampler.draw(), restored.draw()
        assert a.block == b.block and np.array_equal(a.rows, b.rows)


@pytest.mark.parametrize(
    "bad",
    [None, {"epoch": 0}, {"epoch_state": None, "pos": 0}, {"epoch": -1, "block": 0, "pos": 0},
     {"epoch": 0, "block": 9, "pos": 0}, {"epoch": 0, "block": True, "pos": 0}],
)  # fmt: skip
def test_a_foreign_state_is_refused(bad):
    with pytest.raises(ValueError, match="sampler state"):
        BlockBatches.start((30, 30), 10, seed=0).restored(bad)


def test_upcoming_lists_the_blocks_in_the_order_they_are_read():
    sampler = BlockBatches.start((30, 5, 20, 30), 10, seed=2)
    upcoming = sampler.upcoming()
    expected = []
    for _ in range(20):
        rows, sampler = sampler.draw()
        if not expected or expected[-1] != (rows.visit, rows.block):
            expected.append((rows.visit, rows.block))
    assert [next(upcoming) for _ in expected] == expected
    assert 1 not in {block for _, block in expected}  # 5 rows: never a batch of 10


# -------------------------------------------------------------- the data


def test_streamed_batches_hold_the_rows_of_the_block():
    X, y = toy(400)
    dX, dy = da.from_array(X, chunks=(90, 3)), da.from_array(y, chunks=90)
    model = ps.SoftmaxRegression(5, 3)
    data = StreamedData(model, dX, dy.rechunk((dX.chunks[0],)))
    sampler = BlockBatches.start(dX.chunks[0], 30, seed=0)
    starts = np.cumsum((0, *dX.chunks[0]))
    try:
        for _ in range(25):
            rows, sampler = sampler.draw()
            Xb, yb = data.batch(rows)
            np.testing.assert_array_equal(Xb, X[starts[rows.block] + rows.rows])
            np.testing.assert_array_equal(yb, y[starts[rows.block] + rows.rows])
    finally:
        data.close()


def test_blocks_are_computed_ahead_a_few_at_a_time():
    X, y = toy(1000)
    computed = []

    def record(block: np.ndarray, block_info: Any = None) -> np.ndarray:
        computed.append(block_info[None]["chunk-location"][0])
        return block

    dX = da.from_array(X, chunks=(100, 5)).map_blocks(record, dtype=np.float32)
    dy = da.from_array(y, chunks=100)
    model = ps.SoftmaxRegression(5, 3)
    data = StreamedData(model, dX, dy, ahead=2)
    sampler = BlockBatches.start(dX.chunks[0], 50, seed=0)
    rows, sampler = sampler.draw()
    data.batch(rows)
    threading.Event().wait(0.5)  # the thread fills its queue, then waits
    # The block in use, two ready, one computed and waiting for room.
    assert 1 <= len(computed) <= 4, computed
    data.close()


def test_an_error_in_a_block_reaches_the_step_loop():
    X, y = toy(300)
    dX = da.from_array(X, chunks=(100, 5)).map_blocks(_fail_on_second_block, dtype=np.float32)
    model = ps.SoftmaxRegression(5, 3)
    data = StreamedData(model, dX, da.from_array(y, chunks=100))
    sampler = BlockBatches.start(dX.chunks[0], 100, seed=0)
    with pytest.raises(RuntimeError, match="disk on fire"):
        for _ in range(3):
            rows, sampler = sampler.draw()
            data.batch(rows)
    data.close()


def _fail_on_second_block(block: np.ndarray, block_info: Any = None) -> np.ndarray:
    if block_info[None]["chunk-location"][0] == 1:
        raise RuntimeError("disk on fire")
    return block


def test_streamed_accuracy_equals_the_in_memory_one():
    X, y = toy(500)
    model = ps.SoftmaxRegression(5, 3)
    ps.train(model, X, y, batch_size=50, steps=30)
    exact = float(model.accuracy(X, y))
    assert accuracy(model, da.from_array(X, chunks=(120, 5)), da.from_array(y, chunks=77)) == exact
    assert accuracy(model, X, y) == exact


def test_streams_only_dask_data_into_a_model_of_another_library():
    assert streams(ps.SoftmaxRegression(2, 2), da.zeros((4, 2)))
    assert not streams(ps.SoftmaxRegression(2, 2), np.zeros((4, 2)))
    assert not streams(ps.SoftmaxRegression(2, 2, xp=da), da.zeros((4, 2)))


# ----------------------------------------------------------- ps.train streams


@pytest.fixture
def chunked_toy() -> tuple[Any, Any, Any, Any]:
    X, y = toy(900)
    return X, y, da.from_array(X, chunks=(150, 5)), da.from_array(y, chunks=150)


def test_train_streams_dask_data_into_a_numpy_model(chunked_toy):
    X, y, dX, dy = chunked_toy
    model = ps.SoftmaxRegression(5, 3)
    history = ps.train(model, dX, dy, batch_size=30, steps=120, eval_data=(dX, dy), eval_every=40)
    assert isinstance(model.W, np.ndarray) and model.W.dtype == np.float32
    assert len(history.loss) == 120 and history.loss[-1] < history.loss[0]
    assert history.eval_step == [40, 80, 120]
    assert history.eval_accuracy[-1] == float(model.accuracy(X, y)) > 0.8


def test_the_stream_is_the_same_whatever_the_model_library(chunked_toy):
    torch = pytest.importorskip("torch")
    _, _, dX, dy = chunked_toy
    a = ps.SoftmaxRegression(5, 3, dtype=np.float64)
    b = ps.SoftmaxRegression(5, 3, xp=torch, dtype=torch.float64)
    ha = ps.train(a, dX, dy, batch_size=30, steps=50, seed=7)
    hb = ps.train(b, dX, dy, batch_size=30, steps=50, seed=7)
    assert isinstance(b.W, torch.Tensor)
    np.testing.assert_allclose(ha.loss, hb.loss, rtol=1e-10)
    np.testing.assert_allclose(b.W.numpy(), a.W, rtol=1e-9, atol=1e-12)


def test_streaming_equals_training_on_the_blocks_in_the_streams_order(chunked_toy):
    X, y, dX, dy = chunked_toy
    streamed = ps.SoftmaxRegression(5, 3, dtype=np.float64)
    ps.train(streamed, dX, dy, batch_size=30, steps=40, seed=3)
    # The same batches by hand, from the sampler's arithmetic.
    sampler, starts = BlockBatches.start(dX.chunks[0], 30, seed=3), np.cumsum((0, *dX.chunks[0]))
    order = []
    for _ in range(40):
        rows, sampler = sampler.draw()
        order.append(starts[rows.block] + rows.rows)
    manual = ps.SoftmaxRegression(5, 3, dtype=np.float64)
    optimizer = ps.SGD()
    for rows in order:
        _, grads = manual.gradients(X[rows].astype(np.float64), y[rows])
        manual.parameters, optimizer.velocity = optimizer.update(
            manual.parameters, grads, optimizer.velocity
        )
    np.testing.assert_allclose(streamed.W, manual.W, rtol=1e-12, atol=1e-15)


def test_resume_continues_the_stream_exactly(chunked_toy, tmp_path):
    _, _, dX, dy = chunked_toy
    path = tmp_path / "run.npz"
    whole = ps.SoftmaxRegression(5, 3)
    h_whole = ps.train(whole, dX, dy, batch_size=30, steps=70, seed=5)

    def stop_at_33(info: Any) -> bool:
        return info.step == 33

    part = ps.SoftmaxRegression(5, 3)
    ps.train(part, dX, dy, batch_size=30, steps=70, seed=5, checkpoint=path, callbacks=[stop_at_33])
    resumed = ps.SoftmaxRegression(5, 3)
    h = ps.train(resumed, dX, dy, batch_size=30, steps=70, seed=5, checkpoint=path, resume=True)
    assert h.resumed_from == 33
    assert h.loss == h_whole.loss
    np.testing.assert_array_equal(resumed.W, whole.W)


def test_resume_refuses_other_streamed_data(chunked_toy, tmp_path):
    X, y, dX, dy = chunked_toy
    path = tmp_path / "run.npz"
    ps.train(ps.SoftmaxRegression(5, 3), dX, dy, batch_size=30, steps=10, checkpoint=path)
    other = da.from_array(X[::-1].copy(), chunks=(150, 5))
    with pytest.raises(ValueError, match="training data"):
        ps.train(
            ps.SoftmaxRegression(5, 3), other, dy, batch_size=30, steps=20, checkpoint=path,
            resume=True,
        )  # fmt: skip
    with pytest.raises(ValueError, match="sampler state"):
        ps.train(
            ps.SoftmaxRegression(5, 3), X, y, batch_size=30, steps=20, checkpoint=path,
            resume=True,
        )  # fmt: skip


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda X, y: (X[:, :4], y), ValueError, r"shape \(N, 5\)"),
        (lambda X, y: (X, y[:-1]), ValueError, r"shape \(900,\)"),
        (lambda X, y: (X, y + 5), ValueError, "outside the model's"),
        (lambda X, y: (X, y.astype(np.float32)), TypeError, "integer class labels"),
        (lambda X, y: (X[X[:, 0] > 0], y[X[:, 0] > 0]), ValueError, "compute_chunk_sizes"),
        (lambda X, y: (X, y.compute()), TypeError, "both be Dask arrays"),
    ],
    ids=["features", "labels-length", "labels-range", "labels-float", "unknown-chunks", "mixed"],
)
def test_bad_streamed_data_is_refused_before_the_first_step(chunked_toy, make, error, match):
    _, _, dX, dy = chunked_toy
    X, y = make(dX, dy)
    with pytest.raises(error, match=match):
        ps.train(ps.SoftmaxRegression(5, 3), X, y, batch_size=30, steps=5)


def test_batch_size_larger_than_the_blocks_is_refused(chunked_toy):
    _, _, dX, dy = chunked_toy
    with pytest.raises(ValueError, match="rechunk X"):
        ps.train(ps.SoftmaxRegression(5, 3), dX, dy, batch_size=200, steps=5)


def test_memory_holds_a_few_blocks_not_all_of_x():
    """A lazily generated X of 200 blocks: only the blocks read (plus those ahead) exist."""
    n_blocks, rows = 200, 500
    made: list[int] = []

    def block(block_info: Any = None) -> np.ndarray:
        row_block = block_info[None]["chunk-location"][0]
        made.append(row_block)  # whatever Dask names the (fused) task
        return np.random.default_rng(row_block).standard_normal((rows, 8), dtype=np.float32)

    X = da.map_blocks(block, chunks=((rows,) * n_blocks, (8,)), dtype=np.float32)
    labels = np.random.default_rng(1).integers(0, 2, n_blocks * rows)
    y = da.from_array(labels, chunks=rows)  # not from X: the label check reads all of y
    model = ps.SoftmaxRegression(8, 2)
    ps.train(model, X, y, batch_size=100, steps=12)  # 12 batches: 3 blocks
    assert 3 <= len(set(made)) <= 3 + 2 + 1 + 1  # read, ahead, in hand, the fingerprint's
    assert len(made) == len(set(made))  # and each once


# ------------------------------------------------------------ on-disk stores


def test_open_arrays_memory_maps_npy_files(tmp_path):
    X, y = toy(250)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    arrays = open_arrays(tmp_path, chunk_rows=100)
    assert set(arrays) == {"X", "y"}
    assert arrays["X"].chunks == ((100, 100, 50), (5,))
    np.testing.assert_array_equal(arrays["X"].compute(), X)
    model = ps.SoftmaxRegression(5, 3)
    history = ps.train(model, arrays["X"], arrays["y"], batch_size=25, steps=20)
    assert len(history.loss) == 20


def test_open_arrays_names_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such directory"):
        open_arrays(tmp_path / "nowhere", 10)
    np.save(tmp_path / "X.npy", np.zeros((3, 2), np.float32))
    with pytest.raises(FileNotFoundError, match="y.npy"):
        open_arrays(tmp_path, 10)
    np.save(tmp_path / "y.npy", np.zeros(3, np.int64))
    np.save(tmp_path / "X_test.npy", np.zeros((3, 2), np.float32))
    with pytest.raises(ValueError, match="go together"):
        open_arrays(tmp_path, 10)


def test_open_arrays_reads_a_zarr_group(tmp_path):
    zarr = pytest.importorskip("zarr")
    X, y = toy(120)
    group = zarr.open_group(tmp_path / "data.zarr", mode="w")
    for name, a in (("X", X), ("y", y), ("X_test", X[:40]), ("y_test", y[:40])):
        group.create_array(name, data=a) if hasattr(group, "create_array") else group.array(name, a)
    arrays = open_arrays(tmp_path / "data.zarr", chunk_rows=50)
    assert set(arrays) == {"X", "y", "X_test", "y_test"}
    np.testing.assert_array_equal(arrays["y_test"].compute(), y[:40])


# ------------------------------------------------------------- the command line


@pytest.fixture
def npy_store(tmp_path: Any) -> Any:
    X, y = toy(1200, features=6)
    for name, a in (("X", X[:1000]), ("y", y[:1000]), ("X_test", X[1000:]), ("y_test", y[1000:])):
        np.save(tmp_path / f"{name}.npy", a)
    return tmp_path


def _cli_json(capsys: Any, *argv: str) -> dict[str, Any]:
    import json

    from portable_softmax.cli import main

    assert main(["train", "--json", "--no-progress", *argv]) == 0
    return json.loads(capsys.readouterr().out)


def test_cli_trains_from_an_npy_store_and_resumes_exactly(npy_store, tmp_path, capsys):
    store, ckpt = str(npy_store), str(tmp_path / "run.npz")
    common = ["--data", store, "--chunk-rows", "300", "--batch-size", "50", "--classes", "3"]
    whole = _cli_json(capsys, *common, "--steps", "60")
    assert whole["data"] == store and whole["steps"] == 60 and whole["test_accuracy"] > 0.8
    _cli_json(capsys, *common, "--steps", "25", "--checkpoint", ckpt)
    resumed = _cli_json(capsys, *common, "--steps", "60", "--checkpoint", ckpt, "--resume")
    assert resumed["resumed_from"] == 25
    assert resumed["final_loss"] == whole["final_loss"]
    assert resumed["test_accuracy"] == whole["test_accuracy"]


def test_cli_store_without_a_test_split_or_with_data_dir_is_refused(npy_store, capsys):
    from portable_softmax.cli import main

    (npy_store / "X_test.npy").unlink()
    (npy_store / "y_test.npy").unlink()
    assert main(["train", "--data", str(npy_store), "--classes", "3"]) == 1
    assert "X_test" in capsys.readouterr().err
    assert main(["train", "--data", str(npy_store), "--data-dir", str(npy_store)]) == 2
    assert "give one" in capsys.readouterr().err


def test_train_streams_from_a_distributed_cluster(chunked_toy, dask_client):
    X, y, dX, dy = chunked_toy
    local = ps.SoftmaxRegression(5, 3)
    h_local = ps.train(local, dX, dy, batch_size=30, steps=40)

    from distributed import get_task_stream

    with dask.config.set(scheduler=dask_client), get_task_stream(client=dask_client) as stream:
        remote = ps.SoftmaxRegression(5, 3)
        h_remote = ps.train(remote, dX, dy, batch_size=30, steps=40)
    assert stream.data  # the blocks were computed on the cluster
    assert h_remote.loss == h_local.loss
    np.testing.assert_array_equal(remote.W, local.W)
