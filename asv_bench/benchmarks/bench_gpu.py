"""The fused CuPy kernels of ``portable_softmax._cupy`` beside a device copy (GPU only).

A row softmax is memory-bound: it reads the logits and writes as many
probabilities.  A device-to-device copy (``x.copy()``) reads and writes the
same number of bytes, so its time is the floor, and

    fraction of copy bandwidth = copy time / kernel time

says how close a kernel comes to it (1.0: as fast as the copy).  The
``track_*`` benchmarks report that fraction, timed with CUDA events around
back-to-back launches (no host synchronisation between them).  The fused
kernels read each row twice (statistics, then output), the second time
mostly from L2; the loss-and-gradient kernel also writes one loss per row.
Beside them: ``torch.softmax`` and ``Tensor.clone`` (torch's copy) where
PyTorch has CUDA.  Everything is skipped without a CUDA device.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from .common import SkipNotImplemented, get_backend, random_labels, random_logits

# Rows of a large classifier head (4096 classes) and of a language model's
# vocabulary (32000 tokens), float32, as training sees them.
SHAPES = [(8192, 4096), (1024, 32000)]


def _timed(backend: Any, func: Callable[..., Any], *args: Any) -> Callable[[], Any]:
    """A zero-argument call that synchronises the device, warmed up once."""
    call = functools.partial(backend.prepare(func), *args)
    call()  # NVRTC compilation, module load, allocator warm-up
    return call


def _device_seconds(cupy: Any, func: Callable[[], Any], number: int = 20) -> float:
    """Seconds per call of ``func`` on the device's clock, launches back to back."""
    start, end = cupy.cuda.Event(), cupy.cuda.Event()
    func()
    start.record()
    for _ in range(number):
        func()
    end.record()
    end.synchronize()
    return cupy.cuda.get_elapsed_time(start, end) / 1e3 / number


class FusedRows:
    """Copy, softmax and cross-entropy loss+gradient over float32 rows."""

    params = [SHAPES]
    param_names = ["shape"]
    timeout = 300

    def setup(self, shape: tuple[int, int]) -> None:
        from portable_softmax import _cupy

        gpu = get_backend("cupy")  # SkipNotImplemented without cupy or a device
        cupy = self.cupy = gpu.xp
        x = gpu.asarray(random_logits(shape, "float32"))
        y = gpu.asarray(random_labels(*shape))
        factor = cupy.asarray(1.0 / shape[0], dtype=cupy.float32)  # "mean", on the device
        self.raw = {
            "copy": lambda: x.copy(),
            "softmax": lambda: _cupy.softmax_rows(x),
            "cross_entropy": lambda: _cupy.cross_entropy_rows(x, y, factor=factor),
        }
        self.calls = {name: _timed(gpu, f) for name, f in self.raw.items()}
        try:
            torch_gpu = get_backend("torch:cuda")
        except SkipNotImplemented:
            self.torch_calls = None
        else:
            import torch

            tx = torch_gpu.asarray(random_logits(shape, "float32"))
            self.torch_calls = {
                "copy": _timed(torch_gpu, torch.Tensor.clone, tx),
                "softmax": _timed(torch_gpu, lambda t: torch.softmax(t, dim=-1), tx),
            }

    def _torch(self, name: str) -> None:
        if self.torch_calls is None:
            raise SkipNotImplemented("PyTorch has no CUDA device here")
        self.torch_calls[name]()

    def time_copy(self, shape: tuple[int, int]) -> None:
        """``x.copy()``: the bandwidth reference."""
        self.calls["copy"]()

    def time_softmax_rows(self, shape: tuple[int, int]) -> None:
        self.calls["softmax"]()

    def time_cross_entropy_rows(self, shape: tuple[int, int]) -> None:
        """Per-sample loss and the gradient of the mean, one launch."""
        self.calls["cross_entropy"]()

    def time_torch_copy(self, shape: tuple[int, int]) -> None:
        self._torch("copy")

    def time_torch_softmax(self, shape: tuple[int, int]) -> None:
        self._torch("softmax")

    def track_softmax_fraction_of_copy(self, shape: tuple[int, int]) -> float:
        return _device_seconds(self.cupy, self.raw["copy"]) / _device_seconds(
            self.cupy, self.raw["softmax"]
        )

    track_softmax_fraction_of_copy.unit = "copy time / softmax time"

    def track_cross_entropy_fraction_of_copy(self, shape: tuple[int, int]) -> float:
        return _device_seconds(self.cupy, self.raw["copy"]) / _device_seconds(
            self.cupy, self.raw["cross_entropy"]
        )

    track_cross_entropy_fraction_of_copy.unit = "copy time / loss+grad time"
