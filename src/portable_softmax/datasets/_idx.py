"""Reader for the IDX format of MNIST-style datasets, gzip-compressed or raw.

An IDX file is a big-endian header -- two zero bytes, a type code, the number
of dimensions ``d``, then ``d`` unsigned 32-bit sizes -- followed by the data
in C order.  Every check names the file, because the usual failure is a
download that stopped half-way or a file that is something else entirely.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import math
import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

__all__ = ["read_idx", "read_idx_header"]

_TYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"
# Deflate expands at most about 1032-fold: a header declaring more data than
# that is a truncated or hostile file, refused before anything is allocated.
_MAX_DEFLATE_RATIO = 1032
_BLOCK = 4 << 20
# Bytes read past the declared data to report how many trailing bytes there are.
_TRAILING_PROBE = 1 << 16


def read_idx(
    path: str | os.PathLike[str] | Any,
    *,
    ndim: int | None = None,
    dtype: Any = None,
    name: str | None = None,
) -> np.ndarray:
    """Read one IDX file into a read-only NumPy array.

    Parameters
    ----------
    path : path-like or importlib.resources.abc.Traversable
        The file; gzip compression is recognised from its content, not its
        name.
    ndim : int, optional
        The number of dimensions the header must declare.
    dtype : dtype, optional
        The element type the header must declare (e.g. ``numpy.uint8``).
    name : str, optional
        How errors name the file; default ``str(path)``.

    Returns
    -------
    numpy.ndarray
        Shape from the header, dtype from the type code (native byte order).

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If the gzip stream is corrupt or truncated, the magic number is not an
        IDX one, the header disagrees with ``ndim`` or ``dtype``, or the data
        is shorter or longer than the header's dimensions say.
    MemoryError
        If the header declares more data than can be allocated (named, with
        the size).

    Notes
    -----
    The header is read and checked first, then exactly the declared number of
    bytes: an uncompressed file of the wrong size is refused before its body is
    read, and a gzip stream is decompressed as it is read, so a file that
    expands beyond its header's size (a decompression bomb) is stopped a few
    kilobytes past it.

    Examples
    --------
    >>> import gzip, pathlib, tempfile
    >>> import numpy as np
    >>> from portable_softmax.datasets import read_idx
    >>> header = bytes([0, 0, 0x08, 1]) + (3).to_bytes(4, "big")
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "labels-idx1-ubyte.gz"
    >>> _ = path.write_bytes(gzip.compress(header + bytes([7, 2, 1])))
    >>> read_idx(path)
    array([7, 2, 1], dtype=uint8)
    """
    label = str(path) if name is None else name
    source = Path(path) if isinstance(path, (str, os.PathLike)) else path
    try:
        with _open(source, label) as (stream, compressed):
            return _read(stream, compressed, label, ndim, dtype)
    except EOFError:
        raise ValueError(f"{label}: truncated gzip stream (the file is incomplete)") from None
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise ValueError(f"{label}: corrupt gzip stream ({exc})") from None


def read_idx_header(
    path: str | os.PathLike[str] | Any, *, name: str | None = None
) -> tuple[np.dtype, tuple[int, ...]]:
    """The element type and shape an IDX file declares, reading only its header.

    Examples
    --------
    >>> from portable_softmax.datasets import mnist_files, read_idx_header
    >>> read_idx_header(mnist_files("test")[0])
    (dtype('uint8'), (10000, 28, 28))
    """
    label = str(path) if name is None else name
    source = Path(path) if isinstance(path, (str, os.PathLike)) else path
    try:
        with _open(source, label) as (stream, _):
            kind, shape, _ = _header(stream, label, None, None)
    except EOFError:
        raise ValueError(f"{label}: truncated gzip stream (the file is incomplete)") from None
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise ValueError(f"{label}: corrupt gzip stream ({exc})") from None
    return kind.newbyteorder("="), shape


@contextlib.contextmanager
def _open(source: Any, label: str) -> Iterator[tuple[BinaryIO, int | None]]:
    """The file's decompressed content as a stream, and its compressed size (None if raw).

    Nothing is read beyond what the caller asks for: a gzip stream is
    decompressed as it is read.
    """
    try:
        raw = source.open("rb")
    except FileNotFoundError:
        raise FileNotFoundError(f"IDX file not found: {label}") from None
    except IsADirectoryError:
        raise ValueError(f"{label}: is a directory, not an IDX file") from None
    with raw:
        magic = raw.read(2)
        raw.seek(0)
        if magic != _GZIP_MAGIC:
            yield raw, None
            return
        size = _size(raw)
        with gzip.GzipFile(fileobj=raw, mode="rb") as unpacked:
            yield unpacked, size


def _size(stream: Any) -> int | None:
    try:
        return os.fstat(stream.fileno()).st_size
    except (AttributeError, OSError, io.UnsupportedOperation):
        return None


def _read(
    stream: BinaryIO, compressed: int | None, label: str, ndim: int | None, dtype: Any
) -> np.ndarray:
    kind, shape, start = _header(stream, label, ndim, dtype)
    expected = math.prod(shape) * kind.itemsize
    need = (
        f"the header's dimensions {shape} of {kind.newbyteorder('=')} need {expected} bytes of data"
    )
    if compressed is None:
        _check_raw_size(stream, start, expected, need, label)
    elif expected > _MAX_DEFLATE_RATIO * compressed:
        raise ValueError(
            f"{label}: truncated or not an IDX file: {need}, more than a gzip file of "
            f"{compressed} bytes can hold"
        )
    body = _body(stream, expected, label, need)
    extra = stream.read(_TRAILING_PROBE)
    if extra:
        more = f"{expected + len(extra)}" if len(extra) < _TRAILING_PROBE else "more"
        raise ValueError(f"{label}: trailing bytes: {need}, the file has {more}")
    data = body.view(kind).reshape(shape)
    if not kind.isnative:
        data = data.byteswap(inplace=True).view(kind.newbyteorder("="))
    data.flags.writeable = False
    return data


def _header(
    stream: BinaryIO, label: str, ndim: int | None, dtype: Any
) -> tuple[np.dtype, tuple[int, ...], int]:
    """Read and check the magic number and dimensions: ``(type, shape, header size)``."""
    raw = stream.read(4)
    if len(raw) < 4:
        raise ValueError(f"{label}: truncated: {len(raw)} bytes, shorter than an IDX magic number")
    magic = int.from_bytes(raw, "big")
    code, rank = raw[2], raw[3]
    if raw[:2] != b"\0\0" or code not in _TYPES:
        raise ValueError(
            f"{label}: not an IDX file: magic number 0x{magic:08X} "
            f"(expected 0x0000TTDD, type code TT in {sorted(f'{t:02X}' for t in _TYPES)})"
        )
    kind = _TYPES[code]
    if ndim is not None and rank != ndim:
        raise ValueError(
            f"{label}: magic number 0x{magic:08X} declares {rank} dimensions, expected {ndim}"
        )
    if dtype is not None and kind.newbyteorder("=") != np.dtype(dtype):
        raise ValueError(
            f"{label}: magic number 0x{magic:08X} declares {kind.newbyteorder('=')} data, "
            f"expected {np.dtype(dtype)}"
        )
    start = 4 + 4 * rank
    dims = stream.read(4 * rank)
    if len(dims) < 4 * rank:
        raise ValueError(
            f"{label}: truncated header: {rank} dimensions need {start} bytes, "
            f"file has {4 + len(dims)}"
        )
    shape = tuple(int.from_bytes(dims[4 * i : 4 * i + 4], "big") for i in range(rank))
    return kind, shape, start


def _check_raw_size(stream: BinaryIO, start: int, expected: int, need: str, label: str) -> None:
    """An uncompressed file's size must be the header's: checked before reading the body."""
    size = _size(stream)
    if size is None:
        return
    actual = size - start
    if actual != expected:
        problem = "truncated" if actual < expected else "trailing bytes"
        raise ValueError(f"{label}: {problem}: {need}, the file has {actual}")


def _body(stream: BinaryIO, expected: int, label: str, need: str) -> np.ndarray:
    """Exactly ``expected`` bytes, read into one buffer of that size."""
    try:
        body = np.empty(expected, dtype=np.uint8)
    except (MemoryError, ValueError):
        raise MemoryError(f"{label}: {need}, more memory than this machine can give") from None
    view = memoryview(body)
    got = 0
    while got < expected:
        # In blocks: a gzip stream's readinto reads into a temporary of the size asked.
        n = stream.readinto(view[got : got + _BLOCK])
        if not n:
            raise ValueError(f"{label}: truncated: {need}, the file has {got}")
        got += n
    return body
