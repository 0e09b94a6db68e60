"""The IDX reader and ``load_mnist`` (SPEC §5): embedded MNIST, directories, damaged files."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest

import portable_softmax as ps
from files import fake_dataset, idx_bytes, peak_bytes, write
from portable_softmax.datasets import load_mnist, mnist_files, read_idx
from support import assert_namespace_dtype, to_numpy

# From /work/shared/datasets/mnist/README.md and SHA256SUMS.
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
SHA256 = {  # file name prefix -> SHA-256 of the gzip file
    "t10k-images": "5634745efa576a17e7d4cf5cd9d09123c75e6538e5114267c2d156edaf519341",
    "t10k-labels": "ae18e77e031ccde52407f794d123116439864147d33ac992975f85dd4dc42af6",
    "train-images": "71524e2cd1ad2968737f7f2f2ff69cbfc32df8ccddff51593f7cb2d4e0eb5b64",
    "train-labels": "fe03b8bd7915f70bf5aa08be480aa413fbd85afcaa58b35d230d335f284fd88e",
}


# --------------------------------------------------------------------------- embedded MNIST


def test_embedded_files_are_byte_for_byte_the_originals():
    for f in mnist_files("train") + mnist_files("test"):
        assert hashlib.sha256(f.read_bytes()).hexdigest() == SHA256[f.name.split("-idx")[0]], f.name
    root = mnist_files("train")[0].parent
    assert "CC BY-SA 3.0" in (root / "LICENSE").read_text()
    assert "LeCun" in (root / "README.md").read_text()


def test_embedded_training_set():
    X, y = load_mnist()
    assert X.shape == (60000, 784) and X.dtype == np.float32
    assert y.shape == (60000,) and y.dtype == np.int64
    assert y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert np.bincount(y).tolist() == TRAIN_COUNTS
    assert X.min() == 0.0 and X.max() == 1.0
    raw = read_idx(mnist_files("train")[0])
    np.testing.assert_array_equal(X[:100], raw[:100].reshape(100, 784).astype(np.float32) / 255)


def test_attribute_access_after_top_level_import():
    X, y = ps.datasets.load_mnist("test")
    assert np.bincount(y).tolist() == TEST_COUNTS


def test_test_set_on_every_backend(xp, library):
    X, y = load_mnist("test", xp=xp)
    assert_namespace_dtype(X, xp, xp.float32, (10000, 784))
    assert y.shape == (10000,) and xp.isdtype(y.dtype, "integral")
    assert np.bincount(to_numpy(y)).tolist() == TEST_COUNTS
    reference, _ = load_mnist("test")
    np.testing.assert_array_equal(to_numpy(X), reference)


def test_dtype_argument(xp):
    X, _ = load_mnist("test", xp=xp, dtype=xp.float64)
    assert X.dtype == xp.float64
    reference = read_idx(mnist_files("test")[0]).reshape(10000, 784) / 255.0
    np.testing.assert_array_equal(to_numpy(X), reference)


def test_bad_split():
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        load_mnist("validation")


def test_results_are_independent_copies():
    X1, y1 = load_mnist("test")
    X1[0] = 5.0
    y1[0] = 3
    X2, y2 = load_mnist("test")
    assert X2[0].max() <= 1.0 and y2[0] == 7


# --------------------------------------------------------------------------- directories


@pytest.mark.parametrize("compress", [True, False], ids=["gzip", "raw"])
def test_data_dir(tmp_path, compress):
    arrays = fake_dataset(tmp_path, compress=compress)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        X, y = load_mnist(split, data_dir=tmp_path)
        images, labels = arrays[prefix]
        np.testing.assert_array_equal(X, images.reshape(len(images), 6).astype(np.float32) / 255)
        np.testing.assert_array_equal(y, labels)


def test_data_dir_dotted_names(tmp_path):
    images = np.arange(2 * 4, dtype=np.uint8).reshape(2, 2, 2)
    write(tmp_path / "t10k-images.idx3-ubyte", idx_bytes(images))
    write(tmp_path / "t10k-labels.idx1-ubyte", idx_bytes(np.asarray([3, 4], dtype=np.uint8)))
    X, y = load_mnist("test", data_dir=str(tmp_path))
    assert X.shape == (2, 4) and y.tolist() == [3, 4]


def test_data_dir_missing_file_is_named(tmp_path):
    fake_dataset(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    load_mnist("train", data_dir=tmp_path)  # the training files are all there
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        load_mnist("test", data_dir=tmp_path)


def test_data_dir_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_mnist(data_dir=tmp_path / "nowhere")


def test_data_dir_counts_disagree(tmp_path):
    fake_dataset(tmp_path)
    labels = np.zeros(4, dtype=np.uint8)
    write(tmp_path / "train-labels-idx1-ubyte.gz", idx_bytes(labels), compress=True)
    with pytest.raises(ValueError, match="5 images but .*train-labels.* 4 labels"):
        load_mnist(data_dir=tmp_path)


def test_data_dir_labels_file_as_images(tmp_path):
    fake_dataset(tmp_path)
    labels = (tmp_path / "train-labels-idx1-ubyte.gz").read_bytes()
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(labels)
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz.*1 dimensions, expected 3"):
        load_mnist(data_dir=tmp_path)


# --------------------------------------------------------------------------- the reader


@pytest.mark.parametrize(
    ("dtype", "code"),
    [("u1", 0x08), ("i1", 0x09), ("i2", 0x0B), ("i4", 0x0C), ("f4", 0x0D), ("f8", 0x0E)],
)
@pytest.mark.parametrize("compress", [True, False], ids=["gzip", "raw"])
def test_read_idx_good_files(tmp_path, dtype, code, compress):
    data = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    path = write(tmp_path / "data-idx", idx_bytes(data, code), compress)
    got = read_idx(path)
    assert got.dtype == np.dtype(dtype) and got.dtype.isnative
    np.testing.assert_array_equal(got, data)
    assert not got.flags.writeable


def test_read_idx_empty_and_zero_dimensional(tmp_path):
    empty = read_idx(write(tmp_path / "a", idx_bytes(np.zeros((0, 28, 28), np.uint8))))
    assert empty.shape == (0, 28, 28)
    scalar = read_idx(write(tmp_path / "b", bytes([0, 0, 8, 0, 42])))
    assert scalar.shape == () and scalar == 42


def test_read_idx_checks_declared_rank_and_type(tmp_path):
    path = write(tmp_path / "labels", idx_bytes(np.arange(3, dtype=np.uint8)))
    assert read_idx(path, ndim=1, dtype=np.uint8).tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match=r"labels: magic number 0x00000801 declares 1 dim"):
        read_idx(path, ndim=3)
    with pytest.raises(ValueError, match="declares uint8 data, expected float32"):
        read_idx(path, dtype=np.float32)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="IDX file not found: .*absent-idx1-ubyte"):
        read_idx(tmp_path / "absent-idx1-ubyte")


GOOD = idx_bytes(np.arange(60, dtype=np.uint8).reshape(3, 4, 5))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "truncated: 0 bytes"),
        (b"\0\0", "truncated: 2 bytes"),
        (b"\x89PNG\r\n\x1a\n" + bytes(20), "not an IDX file: magic number 0x89504E47"),
        (b"\0\0\x07\x01" + bytes(8), "not an IDX file: magic number 0x00000701"),
        (b"\x01\0\x08\x01" + bytes(8), "not an IDX file"),
        (GOOD[:10], "truncated header: 3 dimensions need 16 bytes, file has 10"),
        (GOOD[:-1], "truncated: .* need 60 bytes of data, the file has 59"),
        (GOOD[:16], "truncated: .* the file has 0"),
        (GOOD + b"\0", "trailing bytes: .* need 60 bytes of data, the file has 61"),
    ],
    ids=["empty", "short", "png", "bad-type", "nonzero-magic", "header", "data", "no-data", "long"],
)
@pytest.mark.parametrize("compress", [True, False], ids=["gzip", "raw"])
def test_read_idx_damaged(tmp_path, content, message, compress):
    path = write(tmp_path / "damaged-idx3-ubyte", content, compress)
    with pytest.raises(ValueError, match=message) as info:
        read_idx(path)
    assert "damaged-idx3-ubyte" in str(info.value)


def test_read_idx_truncated_gzip_stream(tmp_path):
    packed = gzip.compress(GOOD)
    path = write(tmp_path / "cut-idx3-ubyte.gz", packed[: len(packed) // 2])
    with pytest.raises(ValueError, match="cut-idx3-ubyte.gz: truncated gzip stream"):
        read_idx(path)


def test_read_idx_corrupt_gzip_stream(tmp_path):
    packed = bytearray(gzip.compress(GOOD))
    packed[12:20] = b"\xff" * 8  # inside the deflate data
    path = write(tmp_path / "bad-idx3-ubyte.gz", bytes(packed))
    with pytest.raises(ValueError, match="bad-idx3-ubyte.gz: corrupt gzip stream"):
        read_idx(path)


def test_read_idx_corrupt_gzip_checksum(tmp_path):
    packed = bytearray(gzip.compress(GOOD))
    packed[-8] ^= 0xFF  # the CRC-32 of the trailer
    path = write(tmp_path / "crc-idx3-ubyte.gz", bytes(packed))
    with pytest.raises(ValueError, match="crc-idx3-ubyte.gz: corrupt gzip stream"):
        read_idx(path)


def test_load_mnist_names_a_damaged_embedded_style_file(tmp_path):
    fake_dataset(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz"):
        load_mnist(data_dir=tmp_path)


def test_datasets_do_not_import_the_model():
    """The data layer sits below the model: no import of portable_softmax.model."""
    import ast

    root = Path(ps.datasets.__file__).parent
    for source in root.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert not (node.module or "").startswith("portable_softmax.model"), source
                assert "model" not in [a.name for a in node.names], source


# ------------------------------------------------------------------- hostile files (issue 15)


def sparse_file(path: Path, head: bytes, size: int) -> Path:
    """A file of ``size`` bytes that starts with ``head`` (sparse: costs no disk)."""
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(size)
    return path


@pytest.mark.parametrize(
    ("head", "message"),
    [
        (b"\x89PNG" + bytes(12), "not an IDX file: magic number 0x89504E47"),
        (bytes([0, 0, 8, 3]) + b"".join(n.to_bytes(4, "big") for n in (60000, 28, 28)),
         "trailing bytes: .* need 47040000 bytes of data, the file has 268435440"),
        (bytes([0, 0, 8, 3]) + b"".join(n.to_bytes(4, "big") for n in (600000, 28, 28)),
         "truncated: .* need 470400000 bytes of data, the file has 268435440"),
    ],
    ids=["bad-magic", "too-long", "too-short"],
)  # fmt: skip
def test_raw_header_is_checked_before_the_body_is_read(tmp_path, head, message):
    """A 256 MiB raw file whose header is wrong costs no memory (issue 15.5)."""
    path = sparse_file(tmp_path / "big-idx3-ubyte", head, 256 << 20)
    errors = []

    def read():
        with pytest.raises(ValueError, match=message) as info:
            read_idx(path)
        errors.append(info)

    assert peak_bytes(read) < 1 << 20 and errors


def test_gzip_bomb_stops_at_the_declared_size(tmp_path):
    """64 MiB of zeros behind a header declaring 60 bytes: stopped a few KiB past it (15.6)."""
    header = bytes([0, 0, 8, 3]) + b"".join(n.to_bytes(4, "big") for n in (3, 4, 5))
    body = gzip.compress(header + bytes(64 << 20), compresslevel=9)
    path = write(tmp_path / "bomb-idx3-ubyte.gz", body)
    assert len(body) < 1 << 20
    errors = []

    def read():
        with pytest.raises(ValueError, match="bomb-idx3-ubyte.gz: trailing bytes: .* has more"):
            read_idx(path)
        errors.append(1)

    assert peak_bytes(read) < 2 << 20 and errors


def test_gzip_header_declaring_more_than_the_file_can_hold(tmp_path):
    header = bytes([0, 0, 8, 3]) + b"".join(n.to_bytes(4, "big") for n in (10**6, 28, 28))
    path = write(tmp_path / "liar-idx3-ubyte.gz", header + bytes(100), compress=True)
    with pytest.raises(ValueError, match="liar-idx3-ubyte.gz: .* more than a gzip file of"):
        read_idx(path)


def test_memory_error_names_the_file(tmp_path, monkeypatch):
    import portable_softmax.datasets._idx as idx

    path = write(tmp_path / "x-idx3-ubyte", GOOD)

    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(idx.np, "empty", no_memory)
    with pytest.raises(MemoryError, match="x-idx3-ubyte: .* need 60 bytes of data"):
        read_idx(path)


def test_empty_split_loads_as_an_empty_array(tmp_path):
    fake_dataset(tmp_path, n_train=4, n_test=0)
    X, y = load_mnist("test", data_dir=tmp_path)
    assert X.shape == (0, 6) and y.shape == (0,)


def test_read_idx_header(tmp_path):
    from portable_softmax.datasets import read_idx_header

    path = write(tmp_path / "h-idx3-ubyte.gz", GOOD, compress=True)
    assert read_idx_header(path) == (np.dtype("u1"), (3, 4, 5))
    with pytest.raises(ValueError, match="h2: not an IDX file"):
        read_idx_header(write(tmp_path / "h2", b"\x89PNG" + bytes(20)))
