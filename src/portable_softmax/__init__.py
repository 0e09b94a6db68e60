"""Softmax, its derivatives and the cross-entropy loss on every array library.

Every function takes arrays of any Array-API-compatible library (NumPy,
PyTorch, CuPy, JAX, Dask, array_api_strict) and returns arrays of the same
library, on the same device, with the same dtype.
"""

from portable_softmax import datasets
from portable_softmax._derivatives import softmax_jacobian, softmax_jvp
from portable_softmax._linear import (
    linear_cross_entropy,
    linear_cross_entropy_grad,
    linear_cross_entropy_with_grad,
)
from portable_softmax._losses import (
    cross_entropy,
    cross_entropy_grad,
    cross_entropy_with_grad,
    one_hot,
)
from portable_softmax._native import native_kernels
from portable_softmax._softmax import log_softmax, logsumexp, softmax
from portable_softmax.model import SoftmaxRegression
from portable_softmax.training import SGD, train

__version__ = "0.1.0"

__all__ = [
    "SGD",
    "SoftmaxRegression",
    "__version__",
    "cross_entropy",
    "cross_entropy_grad",
    "cross_entropy_with_grad",
    "datasets",
    "linear_cross_entropy",
    "linear_cross_entropy_grad",
    "linear_cross_entropy_with_grad",
    "log_softmax",
    "logsumexp",
    "native_kernels",
    "one_hot",
    "softmax",
    "softmax_jacobian",
    "softmax_jvp",
    "train",
]
