"""Builders of data and checkpoint files for the tests of the application layer.

IDX datasets in the MNIST layout, ``.npz`` archives of chosen members, and a
peak-memory probe; shared by ``test_datasets``, ``test_train`` and ``test_cli``.
"""

from __future__ import annotations

import gzip
import io
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np


def idx_bytes(data: np.ndarray, code: int = 0x08) -> bytes:
    """An IDX file: magic 0x0000TTDD, big-endian dimensions, big-endian data."""
    header = bytes([0, 0, code, data.ndim]) + b"".join(n.to_bytes(4, "big") for n in data.shape)
    return header + data.astype(data.dtype.newbyteorder(">")).tobytes()


def write(path: Path, content: bytes, compress: bool = False) -> Path:
    path.write_bytes(gzip.compress(content) if compress else content)
    return path


def fake_dataset(root: Path, n_train: int = 5, n_test: int = 3, *, compress: bool = True) -> dict:
    """A four-file MNIST-style directory with 2x3 images; returns the arrays."""
    rng = np.random.default_rng(1)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 2, 3), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        ext = ".gz" if compress else ""
        write(root / f"{prefix}-images-idx3-ubyte{ext}", idx_bytes(images), compress)
        write(root / f"{prefix}-labels-idx1-ubyte{ext}", idx_bytes(labels), compress)
        arrays[prefix] = (images, labels)
    return arrays


def peak_bytes(func):
    tracemalloc.start()
    try:
        func()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def write_npz(path, members, compression=None):
    """An .npz archive of ``members`` (name -> array), deflated if asked."""
    mode = zipfile.ZIP_DEFLATED if compression else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", mode) as archive:
        for name, value in members.items():
            buffer = io.BytesIO()
            np.save(buffer, value, allow_pickle=False)
            archive.writestr(f"{name}.npy", buffer.getvalue())
    return path


def members_of(path):
    with np.load(path) as data:
        return {k: data[k] for k in data.files}
