"""Checkpoints: a model, its optimizer and a JSON-able state in one ``.npz`` file.

The file is an ordinary NumPy ``.npz`` archive with the members ``W``, ``b``,
``velocity_0``, ``velocity_1`` (momentum buffers, when there are any) and
``meta`` (the JSON state, UTF-8 bytes).  Loading reads only those members,
after checking the sizes the archive declares for them and the shape and dtype
each one's ``.npy`` header declares, so a damaged or hostile file is refused
before it is read into memory.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import time
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from portable_softmax._compat import Array, to_numpy
from portable_softmax.model import SoftmaxRegression
from portable_softmax.optim import SGD, check_hyperparameter

__all__ = ["check_output_path", "load_checkpoint", "read_checkpoint_state", "save_checkpoint"]

# The JSON state holds the loss of every step (about 25 bytes each): 64 MiB is
# two million steps.  The .npy header of a member is a few hundred bytes.
_MAX_META_BYTES = 64 << 20
_MAX_NPY_HEADER = 1 << 16
# A temporary file of another process that is this old is stale whatever its owner.
_STALE_AFTER_S = 24 * 3600


def check_output_path(path: str | os.PathLike[str], what: str = "output") -> Path:
    """Check that a file can be written at ``path`` before any work is done.

    ``what`` names the path in the messages (``"checkpoint"``, ``"--plot"``).
    Returns the path (``~`` expanded).

    Raises
    ------
    ValueError
        For an empty path, or one that is a directory.
    FileNotFoundError
        If its directory does not exist.
    NotADirectoryError
        If a file stands where its directory should be.
    PermissionError
        If its directory is not writable.

    Examples
    --------
    >>> from portable_softmax.checkpoint import check_output_path
    >>> check_output_path("/nonexistent/run.npz", "checkpoint")
    Traceback (most recent call last):
    ...
    FileNotFoundError: checkpoint /nonexistent/run.npz: directory /nonexistent does not exist
    """
    text = os.fspath(path)
    if not text:
        raise ValueError(f"{what}: the path is empty")
    target = Path(text).expanduser()
    if target.is_dir():
        raise ValueError(f"{what} {text}: is a directory; name a file in it")
    parent = target.parent
    if not parent.is_dir():
        existing = next((p for p in parent.parents if p.exists()), None)
        if parent.exists() or (existing is not None and not existing.is_dir()):
            blocker = parent if parent.exists() else existing
            raise NotADirectoryError(f"{what} {text}: {blocker} is a file, not a directory")
        raise FileNotFoundError(f"{what} {text}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f"{what} {text}: directory {parent} is not writable")
    return target


def save_checkpoint(
    path: str | os.PathLike[str],
    model: SoftmaxRegression,
    optimizer: SGD | None = None,
    *,
    state: dict[str, Any] | None = None,
) -> None:
    """Write the model, the optimizer and a JSON-able ``state`` to an ``.npz`` file.

    The file is written to a temporary name in the same directory and renamed
    over ``path``, so a crash leaves either the previous checkpoint or the
    new one, never half of one.  Temporaries that an earlier save of the same
    checkpoint left behind (killed with ``kill -9`` while writing) are removed.
    bfloat16 parameters are stored as float32 (exactly) and the model's dtype
    is recorded.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> import portable_softmax as ps
    >>> from portable_softmax.checkpoint import load_checkpoint, save_checkpoint
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "model.npz"
    >>> model = ps.SoftmaxRegression(3, 2)
    >>> model.b = model.b + 1
    >>> save_checkpoint(path, model, state={"step": 7})
    >>> fresh = ps.SoftmaxRegression(3, 2)
    >>> load_checkpoint(path, fresh)["step"], fresh.b
    (7, array([1., 1.], dtype=float32))
    """
    arrays = {"W": to_numpy(model.W), "b": to_numpy(model.b)}
    meta: dict[str, Any] = dict(state or {})
    meta["dtype"] = dtype_name(model.dtype)
    if optimizer is not None:
        opt = optimizer.state_dict()
        velocity = opt.pop("velocity")
        opt["has_velocity"] = velocity is not None
        for i, v in enumerate(velocity or ()):
            arrays[f"velocity_{i}"] = to_numpy(v)
        meta["optimizer"] = opt
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    _write_atomically(check_output_path(path, "checkpoint"), arrays)


def dtype_name(dtype: Any) -> str:
    """``"float32"`` for NumPy's, PyTorch's, JAX's or array_api_strict's float32."""
    return str(dtype).rsplit(".", 1)[-1]


def _write_atomically(path: Path, arrays: dict[str, np.ndarray]) -> None:
    _remove_stale_temporaries(path)
    prefix = f".{path.name}.{os.getpid()}-"
    try:
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise type(exc)(f"checkpoint {path}: cannot write there ({exc.strerror})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _remove_stale_temporaries(path: Path) -> None:
    """Delete ``.NAME.*.tmp`` files of this checkpoint whose writer is gone."""
    head = f".{path.name}."
    for name in os.listdir(path.parent):
        if not (name.startswith(head) and name.endswith(".tmp")):
            continue
        owner = name[len(head) :].split("-", 1)[0]
        tmp = path.parent / name
        with contextlib.suppress(OSError):
            if not owner.isdigit() or not _alive(int(owner)) or _old(tmp):
                tmp.unlink()


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # ours, from an earlier save that was interrupted
    if os.name != "posix":
        return True  # no safe probe (os.kill(pid, 0) would signal it): age decides
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _old(tmp: Path) -> bool:
    return time.time() - tmp.stat().st_mtime > _STALE_AFTER_S


def load_checkpoint(
    path: str | os.PathLike[str],
    model: SoftmaxRegression,
    optimizer: SGD | None = None,
) -> dict[str, Any]:
    """Restore :func:`save_checkpoint`'s file into ``model`` (and ``optimizer``).

    Arrays are moved to the model's library, device and dtype.  Returns the
    saved ``state`` dictionary (without the ``dtype`` and ``optimizer``
    entries this module adds).  Nothing is changed unless the whole file is
    valid.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If it is not a checkpoint, is damaged, holds parameters of other
        shapes than the model's, non-finite or non-real parameters, or
        optimizer settings that are not finite numbers >= 0; the message
        names the file.
    """
    with _archive(path) as archive:
        meta = _read_meta(archive, path)
        params = [
            _read_param(archive, path, "W", model.W),
            _read_param(archive, path, "b", model.b),
        ]
        opt = _read_optimizer(archive, path, meta, params) if optimizer is not None else None
    meta.pop("dtype", None)
    meta.pop("optimizer", None)
    xp, dev, dtype = model.xp, model.device, model.dtype

    def to_model(value: np.ndarray) -> Array:
        return xp.astype(xp.asarray(value, device=dev), dtype)

    if opt is not None:
        velocity = opt["velocity"]
        opt["velocity"] = None if velocity is None else [to_model(v) for v in velocity]
        optimizer.load_state_dict(opt)
    model.parameters = [to_model(p) for p in params]
    return meta


def read_checkpoint_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON state of a checkpoint, with its ``dtype`` and ``optimizer`` entries.

    Reads no arrays: for deciding what to resume before building a model.
    Raises as :func:`load_checkpoint` does.
    """
    with _archive(path) as archive:
        meta = _read_meta(archive, path)
    if "optimizer" in meta:
        _check_optimizer_meta(meta["optimizer"], path)
    return meta


@contextlib.contextmanager
def _archive(path: str | os.PathLike[str]) -> Iterator[zipfile.ZipFile]:
    try:
        archive = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint not found: {path}") from None
    except IsADirectoryError:
        raise ValueError(f"{path}: is a directory, not a checkpoint") from None
    except (OSError, zipfile.BadZipFile, ValueError) as exc:
        raise ValueError(
            f"{path}: not a portable_softmax checkpoint (not an .npz archive: {exc})"
        ) from None
    try:
        with archive:
            yield archive
    except (
        OSError,
        EOFError,
        RuntimeError,
        NotImplementedError,
        zipfile.BadZipFile,
        zlib.error,
    ) as exc:
        raise ValueError(f"{path}: damaged checkpoint ({exc})") from None


def _read_meta(archive: zipfile.ZipFile, path: Any) -> dict[str, Any]:
    raw = _read_npy(archive, path, "meta", _MAX_META_BYTES, "uU")
    if raw.dtype == np.uint8 and raw.ndim == 1:
        text = raw.tobytes().decode("utf-8", errors="replace")
    elif raw.dtype.kind == "U" and raw.ndim == 0:
        text = str(raw)  # the first release's format: one unicode string
    else:
        raise ValueError(f"{path}: damaged checkpoint: meta holds {raw.dtype} data")
    try:
        meta = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"{path}: damaged checkpoint: meta is not JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise ValueError(
            f"{path}: damaged checkpoint: meta is a JSON {type(meta).__name__}, not an object"
        )
    return meta


def _read_param(archive: zipfile.ZipFile, path: Any, name: str, like: Array) -> np.ndarray:
    shape = tuple(like.shape)
    value = _read_npy(archive, path, name, 8 * math.prod(shape), "f", shape=shape)
    if not np.all(np.isfinite(value)):
        raise ValueError(f"{path}: {name} holds non-finite values (inf or NaN)")
    return value


def _read_optimizer(
    archive: zipfile.ZipFile, path: Any, meta: dict[str, Any], params: list[np.ndarray]
) -> dict[str, Any] | None:
    """The optimizer's saved state with its momentum buffers, or None if none was saved."""
    opt = meta.get("optimizer")
    if opt is None:
        return None
    opt = _check_optimizer_meta(opt, path)
    velocity = None
    if opt.pop("has_velocity"):
        velocity = [_read_param(archive, path, f"velocity_{i}", p) for i, p in enumerate(params)]
    return {**opt, "velocity": velocity}


def _check_optimizer_meta(opt: Any, path: Any) -> dict[str, Any]:
    if not isinstance(opt, dict):
        raise ValueError(f"{path}: damaged checkpoint: optimizer is not a JSON object")
    checked: dict[str, Any] = {}
    for name in ("lr", "momentum", "weight_decay"):
        if name not in opt:
            raise ValueError(f"{path}: damaged checkpoint: the optimizer has no {name!r}")
        try:
            checked[name] = check_hyperparameter(name, opt[name])
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
    has_velocity = opt.get("has_velocity", False)
    if not isinstance(has_velocity, bool):
        raise ValueError(f"{path}: damaged checkpoint: has_velocity is {has_velocity!r}")
    checked["has_velocity"] = has_velocity
    return checked


def _read_npy(
    archive: zipfile.ZipFile,
    path: Any,
    name: str,
    max_data: int,
    kinds: str,
    *,
    shape: tuple[int, ...] | None = None,
) -> np.ndarray:
    """One ``.npy`` member, its declared dtype (of ``kinds``) and sizes checked first."""
    try:
        info = archive.getinfo(f"{name}.npy")
    except KeyError:
        raise ValueError(f"{path}: not a portable_softmax checkpoint (no {name!r})") from None
    if info.file_size > _MAX_NPY_HEADER + max_data:
        raise ValueError(
            f"{path}: {name} declares {info.file_size} bytes, more than a checkpoint "
            f"of this model holds ({max_data} bytes of data)"
        )
    with archive.open(info) as f:
        stored_shape, dtype, fortran = _npy_header(f, path, name)
        if dtype.kind not in kinds:
            raise ValueError(f"{path}: {name} holds {dtype} values; a checkpoint holds reals")
        if shape is not None and stored_shape != shape:
            raise ValueError(f"{path}: {name} has shape {stored_shape}, the model's is {shape}")
        nbytes = math.prod(stored_shape) * dtype.itemsize
        if nbytes > max_data:
            raise ValueError(f"{path}: {name} declares {nbytes} bytes of data, at most {max_data}")
        data = np.empty(nbytes, dtype=np.uint8)
        got = _read_into(f, memoryview(data))
    if got != nbytes:
        raise ValueError(f"{path}: damaged checkpoint: {name} is truncated")
    order = "F" if fortran else "C"
    return data.view(dtype).reshape(stored_shape, order=order)


def _read_into(f: IO[bytes], buffer: memoryview) -> int:
    got = 0
    while got < len(buffer):
        n = f.readinto(buffer[got:])  # type: ignore[attr-defined]
        if not n:
            break
        got += n
    return got


def _npy_header(f: IO[bytes], path: Any, name: str) -> tuple[tuple[int, ...], np.dtype, bool]:
    fmt = np.lib.format
    try:
        version = fmt.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(f, max_header_size=_MAX_NPY_HEADER)
        else:
            shape, fortran, dtype = fmt.read_array_header_2_0(f, max_header_size=_MAX_NPY_HEADER)
    except (ValueError, SyntaxError, OSError) as exc:
        raise ValueError(f"{path}: damaged checkpoint: {name} is not an array ({exc})") from None
    if dtype.hasobject:
        raise ValueError(f"{path}: {name} holds Python objects; a checkpoint holds numbers")
    return tuple(shape), dtype, fortran
