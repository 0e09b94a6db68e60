"""The option grid of the loss tests and its torch reference, shared by the loss test modules.

``conftest.py`` parametrizes a test's ``case`` argument with ``CASES`` (or
the cases of its ``case_grid`` marker), jointly with the backend.
"""

from __future__ import annotations

import itertools
from typing import Any, NamedTuple

import numpy as np
import torch

F = torch.nn.functional


class Layout(NamedTuple):
    shape: tuple[int, ...]
    axis: int


LAYOUTS = {
    "1d": Layout((4,), 0),
    "2d-last": Layout((6, 4), -1),
    "2d-first": Layout((4, 6), 0),
    "3d-first": Layout((4, 3, 2), 0),
    "3d-middle": Layout((3, 4, 2), 1),
    "3d-last": Layout((3, 2, 4), 2),
}
REDUCTIONS = ("mean", "sum", "none")
SMOOTHINGS = (0.0, 0.25, 1.0)
IGNORE = -1


class Case(NamedTuple):
    layout: str
    form: str  # "index" or "prob"
    reduction: str
    weighted: bool
    ignore: bool
    smoothing: float

    @property
    def id(self) -> str:
        return (
            f"{self.layout}-{self.form}-{self.reduction}-"
            f"{'w' if self.weighted else 'now'}-{'ign' if self.ignore else 'noign'}-"
            f"ls{self.smoothing}"
        )


CASES = [
    Case(lay, form, red, w, ign, ls)
    for lay, form, red, w, ign, ls in itertools.product(
        LAYOUTS, ("index", "prob"), REDUCTIONS, (False, True), (False, True), SMOOTHINGS
    )
    if not (form == "prob" and ign)
]
CASE_IDS = [c.id for c in CASES]


def make_data(case: Case, seed: int | None = None) -> dict[str, Any]:
    """NumPy inputs of one case: logits (float64), target, weight, kwargs."""
    rng = np.random.default_rng(CASES.index(case) if seed is None else seed)
    shape, axis = LAYOUTS[case.layout]
    ax = axis % len(shape)
    n = shape[ax]
    sample_shape = shape[:ax] + shape[ax + 1 :]
    logits = rng.normal(scale=2.0, size=shape)
    if case.form == "index":
        target = rng.integers(0, n, size=sample_shape).astype(np.int64)
        if case.ignore and target.ndim:
            flat = target.reshape(-1)
            flat[1::3] = IGNORE  # about a third ignored, the first sample counted
    else:
        raw = rng.random(shape)
        raw[raw < 0.2] = 0.0  # exact zero probabilities
        raw = np.moveaxis(raw, ax, -1)
        raw[..., 0] += 0.1  # no all-zero row
        target = np.moveaxis(raw / raw.sum(-1, keepdims=True), -1, ax)
    weight = rng.uniform(0.2, 2.0, size=n) if case.weighted else None
    kwargs: dict[str, Any] = {"reduction": case.reduction, "label_smoothing": case.smoothing}
    if case.ignore:
        kwargs["ignore_index"] = IGNORE
    return {"logits": logits, "target": target, "weight": weight, "axis": axis, "kwargs": kwargs}


def torch_reference(
    logits: np.ndarray,
    target: np.ndarray,
    axis: int,
    *,
    reduction: str = "mean",
    weight: np.ndarray | None = None,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """(loss, d loss / d logits) of F.cross_entropy in float64, class axis at ``axis``.

    For ``reduction="none"`` the gradient is that of the summed loss.
    """
    ax = axis % logits.ndim
    x = torch.tensor(
        np.moveaxis(logits, ax, min(1, logits.ndim - 1)), dtype=torch.float64, requires_grad=True
    )
    if np.issubdtype(target.dtype, np.integer):
        t = torch.tensor(target.astype(np.int64))
    else:
        t = torch.tensor(np.moveaxis(target, ax, min(1, logits.ndim - 1)), dtype=torch.float64)
    w = None if weight is None else torch.tensor(weight, dtype=torch.float64)
    loss = F.cross_entropy(
        x, t, weight=w, reduction=reduction,
        ignore_index=-100 if ignore_index is None else ignore_index,
        label_smoothing=label_smoothing,
    )  # fmt: skip
    (loss.sum() if reduction == "none" else loss).backward()
    grad = np.moveaxis(x.grad.numpy(), min(1, logits.ndim - 1), ax)
    return loss.detach().numpy(), grad


def to_xp(xp: Any, a: Any, dtype: Any = None) -> Any:
    """``a`` (NumPy or None) as an array of ``xp``; float64 unless ``dtype`` is given."""
    if a is None:
        return None
    a = np.asarray(a)
    if dtype is None:
        dtype = xp.float64 if np.issubdtype(a.dtype, np.floating) else getattr(xp, a.dtype.name)
    return xp.asarray(a, dtype=dtype)


def xp_case(xp: Any, data: dict[str, Any]) -> tuple[Any, Any, dict[str, Any]]:
    kwargs = dict(data["kwargs"])
    if data["weight"] is not None:
        kwargs["weight"] = to_xp(xp, data["weight"])
    return to_xp(xp, data["logits"]), to_xp(xp, data["target"]), kwargs


def ref_kwargs(data: dict[str, Any]) -> dict[str, Any]:
    return {**data["kwargs"], "weight": data["weight"]}
