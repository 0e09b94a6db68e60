"""Reader for the IDX format of MNIST-style datasets, gzip-compressed or raw.

An IDX file is a big-endian header -- two zero bytes, a type code, the number
of dimensions ``d``, then ``d`` unsigned 32-bit sizes -- followed by the data
in C order.  Every check names the file, because the usual failure is a
download that stopped half-way or a file that is something else entirely.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["read_idx"]

_TYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


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
        raw = source.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"IDX file not found: {label}") from None
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except EOFError:
            raise ValueError(f"{label}: truncated gzip stream (the file is incomplete)") from None
        except (OSError, zlib.error) as exc:
            raise ValueError(f"{label}: corrupt gzip stream ({exc})") from None
    return _parse(raw, label, ndim, dtype)


def _parse(raw: bytes, label: str, ndim: int | None, dtype: Any) -> np.ndarray:
    if len(raw) < 4:
        raise ValueError(f"{label}: truncated: {len(raw)} bytes, shorter than an IDX magic number")
    magic = int.from_bytes(raw[:4], "big")
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
    if len(raw) < start:
        raise ValueError(
            f"{label}: truncated header: {rank} dimensions need {start} bytes, file has {len(raw)}"
        )
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(rank))
    expected = math.prod(shape) * kind.itemsize
    actual = len(raw) - start
    if actual != expected:
        problem = "truncated" if actual < expected else "trailing bytes"
        raise ValueError(
            f"{label}: {problem}: the header's dimensions {shape} of {kind.newbyteorder('=')} "
            f"need {expected} bytes of data, the file has {actual}"
        )
    data = np.frombuffer(raw, dtype=kind, offset=start).reshape(shape)
    if not kind.isnative:
        data = data.astype(kind.newbyteorder("="))
        data.flags.writeable = False
    return data
