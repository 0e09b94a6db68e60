"""Checkpoints: a model, its optimizer and a JSON-able state in one ``.npz`` file."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from portable_softmax._compat import Array, to_numpy
from portable_softmax.model import SoftmaxRegression
from portable_softmax.optim import SGD

__all__ = ["load_checkpoint", "save_checkpoint"]


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
    new one, never half of one.

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
    if optimizer is not None:
        opt = optimizer.state_dict()
        velocity = opt.pop("velocity")
        opt["has_velocity"] = velocity is not None
        for i, v in enumerate(velocity or ()):
            arrays[f"velocity_{i}"] = to_numpy(v)
        meta["optimizer"] = opt
    arrays["meta"] = np.asarray(json.dumps(meta))
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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


def load_checkpoint(
    path: str | os.PathLike[str],
    model: SoftmaxRegression,
    optimizer: SGD | None = None,
) -> dict[str, Any]:
    """Restore :func:`save_checkpoint`'s file into ``model`` (and ``optimizer``).

    Arrays are moved to the model's library, device and dtype.  Returns the
    saved ``state`` dictionary.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If it is not a checkpoint, is damaged, or holds parameters of other
        shapes than the model's; the message names the file.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        meta = json.loads(str(arrays.pop("meta")))
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint not found: {path}") from None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path}: not a portable_softmax checkpoint or damaged ({exc})") from None
    xp, dev, dtype = model.xp, model.device, model.dtype

    def restore(name: str, like: Array) -> Array:
        if name not in arrays:
            raise ValueError(f"{path}: not a portable_softmax checkpoint (no {name!r})")
        value = arrays[name]
        if value.shape != tuple(like.shape):
            raise ValueError(
                f"{path}: {name} has shape {value.shape}, the model's is {tuple(like.shape)}"
            )
        return xp.astype(xp.asarray(value, device=dev), dtype)

    params = [restore("W", model.W), restore("b", model.b)]
    opt = meta.pop("optimizer", None)
    if optimizer is not None and opt is not None:
        has_velocity = opt.pop("has_velocity")
        opt["velocity"] = (
            [restore(f"velocity_{i}", p) for i, p in enumerate(params)] if has_velocity else None
        )
        optimizer.load_state_dict(opt)
    model.parameters = params
    return meta
