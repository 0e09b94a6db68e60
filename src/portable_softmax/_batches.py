"""The batch order of :func:`~portable_softmax.train`: a seeded shuffle per epoch."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

__all__ = ["Batches"]


class Batches(NamedTuple):
    """Index batches: a fresh permutation per epoch, drawn from one generator.

    An epoch ends when fewer than ``batch_size`` unseen indices remain (the
    remainder is skipped, as a ``drop_last`` loader does).  The object is a
    value: :meth:`draw` returns the batch and the sampler after it, and
    changes nothing, so a training step can commit its batch together with
    its parameters or not at all.  (A named tuple: a step makes one, and a
    tuple is the cheapest immutable value to make.)  :meth:`state` -- the generator's state
    before the current epoch's draw and the position in it -- is all a
    checkpoint needs to continue with the same batches.
    """

    n: int
    batch_size: int
    next_epoch: dict[str, Any]  # the generator's state for the next permutation
    epoch_state: dict[str, Any] | None = None  # its state before the current one
    perm: np.ndarray | None = None
    pos: int = 0

    @classmethod
    def start(cls, n: int, batch_size: int, seed: int) -> Batches:
        """The batches of ``numpy.random.default_rng(seed)`` from the first epoch."""
        return cls(n, batch_size, np.random.default_rng(seed).bit_generator.state)

    def draw(self) -> tuple[np.ndarray, Batches]:
        """The next batch of row indices, and the sampler that follows it."""
        if self.perm is None or self.pos + self.batch_size > self.n:
            rng = _generator(self.next_epoch)
            perm = rng.permutation(self.n)
            after = Batches(
                self.n,
                self.batch_size,
                rng.bit_generator.state,
                self.next_epoch,
                perm,
                self.batch_size,
            )
            return perm[: self.batch_size], after
        end = self.pos + self.batch_size
        after = Batches(self.n, self.batch_size, self.next_epoch, self.epoch_state, self.perm, end)
        return self.perm[self.pos : end], after

    def state(self) -> dict[str, Any]:
        """JSON-able: ``{"epoch_state": ..., "pos": ...}``."""
        return {"epoch_state": self.epoch_state, "pos": self.pos}

    def restored(self, state: Any) -> Batches:
        """This sampler moved to a saved :meth:`state`.

        Raises ``ValueError`` (naming what is wrong) for a state that is not
        one this class writes.
        """
        if not isinstance(state, dict) or set(state) != {"epoch_state", "pos"}:
            raise ValueError(f"the sampler state is {state!r}, not {{epoch_state, pos}}")
        epoch_state, pos = state["epoch_state"], state["pos"]
        if isinstance(pos, bool) or not isinstance(pos, int) or not 0 <= pos <= self.n:
            raise ValueError(f"the sampler position is {pos!r}, not an integer in [0, {self.n}]")
        if epoch_state is None:
            if pos:
                raise ValueError(f"the sampler position is {pos} before the first epoch")
            return self
        rng = _generator(epoch_state)
        perm = rng.permutation(self.n)
        return Batches(self.n, self.batch_size, rng.bit_generator.state, epoch_state, perm, pos)


def _generator(state: Any) -> np.random.Generator:
    """A generator in ``state`` (``default_rng``'s PCG64), or ``ValueError``."""
    bits = np.random.PCG64(0)  # a seed: no entropy from the OS for a state about to go
    try:
        bits.state = state
    except (TypeError, ValueError, KeyError, OverflowError) as exc:
        raise ValueError(f"the sampler's generator state is not a PCG64 state ({exc})") from None
    return np.random.Generator(bits)
