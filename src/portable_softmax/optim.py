"""The optimizer of :func:`~portable_softmax.train`: SGD with PyTorch's update rule."""

from __future__ import annotations

import math
from typing import Any

from portable_softmax._compat import Array

__all__ = ["SGD", "check_hyperparameter"]


def check_hyperparameter(name: str, value: Any) -> float:
    """``value`` as a float, or ``ValueError`` unless it is a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


class SGD:
    """Stochastic gradient descent with the update rule of ``torch.optim.SGD``.

    For each parameter ``p`` with gradient ``g`` (dampening 0, no Nesterov)::

        g = g + weight_decay * p
        v = g                      on the first step
        v = momentum * v + g       afterwards
        p = p - lr * v             (v = g when momentum is 0)

    Parameters
    ----------
    lr : float
        Learning rate; 0.5 is the TensorFlow tutorial's.
    momentum : float
        Momentum factor, at least 0.
    weight_decay : float
        L2 penalty factor, at least 0.

    Examples
    --------
    >>> import numpy as np
    >>> import portable_softmax as ps
    >>> opt = ps.SGD(lr=0.1, momentum=0.9)
    >>> p = [np.asarray([1.0])]
    >>> p = opt.step(p, [np.asarray([1.0])]); p       # v = 1
    [array([0.9])]
    >>> p = opt.step(p, [np.asarray([1.0])]); p       # v = 0.9 * 1 + 1
    [array([0.71])]
    """

    def __init__(self, lr: float = 0.5, *, momentum: float = 0.0, weight_decay: float = 0.0):
        self.lr = check_hyperparameter("lr", lr)
        self.momentum = check_hyperparameter("momentum", momentum)
        self.weight_decay = check_hyperparameter("weight_decay", weight_decay)
        self.velocity: list[Array] | None = None

    def __repr__(self) -> str:
        return f"SGD(lr={self.lr}, momentum={self.momentum}, weight_decay={self.weight_decay})"

    @property
    def hyperparameters(self) -> dict[str, float]:
        """``{"lr": ..., "momentum": ..., "weight_decay": ...}``."""
        return {"lr": self.lr, "momentum": self.momentum, "weight_decay": self.weight_decay}

    def update(
        self, params: list[Array], grads: list[Array], velocity: list[Array] | None
    ) -> tuple[list[Array], list[Array] | None]:
        """One step as a pure function: ``(new parameters, new velocity)``.

        Neither the arguments nor ``self`` change, so a caller can commit the
        step (or drop it) as one assignment.
        """
        if len(params) != len(grads):
            raise ValueError(f"{len(params)} parameters but {len(grads)} gradients")
        new_velocity = []
        updated = []
        for i, (p, g) in enumerate(zip(params, grads, strict=True)):
            if self.weight_decay:
                g = g + self.weight_decay * p
            if self.momentum:
                if velocity is not None:
                    g = self.momentum * velocity[i] + g
                new_velocity.append(g)
            updated.append(p - self.lr * g)
        return updated, (new_velocity if self.momentum else velocity)

    def step(self, params: list[Array], grads: list[Array]) -> list[Array]:
        """Return the updated parameters (new arrays: JAX arrays are immutable)."""
        updated, self.velocity = self.update(params, grads, self.velocity)
        return updated

    def state_dict(self) -> dict[str, Any]:
        """Hyperparameters and momentum buffers (``None`` before the first step)."""
        velocity = None if self.velocity is None else list(self.velocity)
        return {**self.hyperparameters, "velocity": velocity}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output; hyperparameters included, as in PyTorch."""
        self.lr = float(state["lr"])
        self.momentum = float(state["momentum"])
        self.weight_decay = float(state["weight_decay"])
        velocity = state.get("velocity")
        self.velocity = None if velocity is None else list(velocity)
