"""Compiled code: ``torch.compile``d ps functions beside the compiled torch ones.

``time_ours`` and ``time_reference`` compile the same kind of call with
``fullgraph=True`` in ``setup`` (warmed, so the timing excludes compilation)
and time one call, forward or forward + backward.  ``compare.py`` and
``asv compare`` read the ratio from one run.
"""

from __future__ import annotations

from typing import Any

import portable_softmax as ps

from .common import SkipNotImplemented, random_labels, random_logits

SHAPES = [(4096, 4096), (256, 32000)]
KINDS = ["softmax", "log_softmax", "cross_entropy"]


def _calls(kind: str) -> tuple[Any, Any]:
    """(ours, torch's) as functions of ``(x, y)``."""
    import torch
    import torch.nn.functional as F

    return {
        "softmax": (lambda x, y: ps.softmax(x), lambda x, y: torch.softmax(x, -1)),
        "log_softmax": (lambda x, y: ps.log_softmax(x), lambda x, y: torch.log_softmax(x, -1)),
        "cross_entropy": (lambda x, y: ps.cross_entropy(x, y), F.cross_entropy),
    }[kind]


class CompiledTorch:
    """Forward, and forward + backward, of compiled functions on PyTorch's CPU."""

    params = [KINDS, SHAPES, [False, True]]
    param_names = ["kind", "shape", "backward"]
    timeout = 600

    def setup(self, kind: str, shape: tuple[int, int], backward: bool) -> None:
        try:
            import torch
        except ImportError as exc:
            raise SkipNotImplemented("torch is not installed") from exc
        x = torch.asarray(random_logits(shape, "float32"))
        self.x = x.requires_grad_(backward)
        self.y = torch.asarray(random_labels(shape[0], shape[1]))
        self.runs = {}
        for name, f in zip(("ours", "reference"), _calls(kind), strict=True):
            compiled = torch.compile(f, fullgraph=True)

            def run(compiled: Any = compiled) -> None:
                out = compiled(self.x, self.y)
                if backward:
                    (out if out.ndim == 0 else out[..., 0].sum()).backward()
                    self.x.grad = None

            run()  # compile and warm outside the timing
            run()
            self.runs[name] = run

    def time_ours(self, kind: str, shape: tuple[int, int], backward: bool) -> None:
        self.runs["ours"]()

    def time_reference(self, kind: str, shape: tuple[int, int], backward: bool) -> None:
        self.runs["reference"]()
