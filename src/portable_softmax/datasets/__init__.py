"""Datasets: MNIST embedded in the package, and any directory of MNIST-style IDX files.

``load_mnist()`` reads the copy of MNIST shipped with the package (the four
original gzip files, byte for byte; CC BY-SA 3.0, LeCun, Cortes and Burges).
``load_mnist(data_dir=...)`` reads the same four file names from a directory,
gzip-compressed or raw, so Fashion-MNIST (Zalando Research, MIT license;
Debian: ``dataset-fashion-mnist``) loads the same way.
"""

from __future__ import annotations

import functools
import importlib.resources
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from portable_softmax._compat import Array, xp_default_dtype, xp_namespace
from portable_softmax.datasets._idx import read_idx, read_idx_header

__all__ = ["load_mnist", "mnist_files", "read_idx", "read_idx_header"]

_PREFIX = {"train": "train", "test": "t10k"}


def mnist_files(split: str = "train", data_dir: str | os.PathLike[str] | None = None) -> tuple:
    """The images file and the labels file of ``split``.

    Parameters
    ----------
    split : {"train", "test"}
        The training set (``train-*``, 60000 images in MNIST) or the test set
        (``t10k-*``, 10000 images).
    data_dir : path-like, optional
        A directory holding ``{train,t10k}-{images-idx3,labels-idx1}-ubyte``,
        each with or without ``.gz`` (the dotted spelling
        ``train-images.idx3-ubyte`` of some mirrors is accepted too).  Default:
        the MNIST copy embedded in the package.

    Returns
    -------
    (images, labels)
        Paths (``importlib.resources`` traversables for the embedded copy).

    Raises
    ------
    ValueError
        For an unknown ``split``.
    FileNotFoundError
        If ``data_dir`` lacks one of the two files; the message names it.

    Examples
    --------
    >>> from portable_softmax.datasets import mnist_files
    >>> [f.name for f in mnist_files("test")]
    ['t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz']
    """
    if split not in _PREFIX:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    prefix = _PREFIX[split]
    if data_dir is None:
        root: Any = importlib.resources.files(__name__) / "mnist"
        return (
            root / f"{prefix}-images-idx3-ubyte.gz",
            root / f"{prefix}-labels-idx1-ubyte.gz",
        )
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"MNIST data directory not found: {root}")
    found = []
    for kind, rank in (("images", 3), ("labels", 1)):
        stems = (f"{prefix}-{kind}-idx{rank}-ubyte", f"{prefix}-{kind}.idx{rank}-ubyte")
        candidates = [root / (stem + ext) for stem in stems for ext in (".gz", "")]
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            others = ", ".join(c.name for c in candidates[1:])
            raise FileNotFoundError(f"IDX file not found: {candidates[0]} (nor {others})")
        found.append(path)
    return tuple(found)


def load_mnist(
    split: str = "train",
    *,
    xp: Any = None,
    device: Any = None,
    dtype: Any = None,
    data_dir: str | os.PathLike[str] | None = None,
) -> tuple[Array, Array]:
    """Load MNIST (or any dataset in its format) as arrays of any library.

    Parameters
    ----------
    split : {"train", "test"}
        60000 training or 10000 test images for MNIST.
    xp : array namespace or module, optional
        The library of the result (``numpy``, ``torch``, ``jax.numpy``,
        ``cupy``, ``array_api_strict``, ...); default NumPy.
    device : optional
        Where the arrays live, as ``xp.asarray`` takes it (``"cuda"`` for
        PyTorch, a ``jax.Device`` for JAX).
    dtype : dtype, optional
        Floating dtype of the images; default ``xp.float32``.
    data_dir : path-like, optional
        A directory of the four standard IDX files (see :func:`mnist_files`);
        default the copy of MNIST embedded in the package.

    Returns
    -------
    (X, y)
        ``X`` of shape ``(N, rows * cols)`` (``(N, 784)`` for MNIST), pixels
        divided by 255 into ``[0, 1]``; ``y`` the labels, shape ``(N,)``, in
        the namespace's default integer dtype.

    Raises
    ------
    FileNotFoundError, ValueError
        For a missing, truncated or corrupt file (the message names it), or
        image and label files of different lengths.

    Examples
    --------
    >>> import portable_softmax as ps
    >>> X, y = ps.datasets.load_mnist("test")
    >>> X.shape, X.dtype, y[:5]
    ((10000, 784), dtype('float32'), array([7, 2, 1, 0, 4]))
    """
    xp = xp_namespace(xp)
    images_file, labels_file = mnist_files(split, data_dir)
    images = _read(images_file, 3)
    labels = _read(labels_file, 1)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{images_file} holds {images.shape[0]} images but {labels_file} "
            f"holds {labels.shape[0]} labels"
        )
    dtype = xp.float32 if dtype is None else dtype
    # Divide on the host, where NumPy rounds value/255 correctly; XLA, for one,
    # multiplies by the reciprocal, and the data would differ by an ulp
    # between backends.  In place: a second image-sized allocation costs more
    # than the division (page faults on 188 MB).
    pixels = images.reshape(images.shape[0], math.prod(images.shape[1:])).astype(
        np.float64 if xp.finfo(dtype).bits > 32 else np.float32
    )
    pixels /= 255
    X = xp.astype(xp.asarray(pixels, device=device), dtype, copy=False)
    codes = xp.asarray(labels, copy=True, device=device)
    y = xp.astype(codes, xp_default_dtype(xp, "integral", device))
    return X, y


def _read(file: Any, ndim: int) -> np.ndarray:
    if isinstance(file, Path):
        stat = file.stat()
        return _read_cached(str(file), stat.st_mtime_ns, stat.st_size, ndim)
    return read_idx(file, ndim=ndim, dtype=np.uint8)


@functools.lru_cache(maxsize=4)
def _read_cached(path: str, mtime_ns: int, size: int, ndim: int) -> np.ndarray:
    # Keyed on the modification time and size, so a replaced file is re-read;
    # the arrays are read-only, so sharing them between callers is safe.
    return read_idx(path, ndim=ndim, dtype=np.uint8)
