"""Softmax regression: a linear layer and a softmax, with closed-form gradients."""

from __future__ import annotations

from typing import Any

import numpy as np

from portable_softmax._compat import (
    Array,
    is_torch_namespace,
    to_numpy,
    xp_default_dtype,
    xp_device,
    xp_namespace,
)
from portable_softmax._losses import cross_entropy, cross_entropy_with_grad
from portable_softmax._softmax import softmax

__all__ = ["SoftmaxRegression"]


class SoftmaxRegression:
    """Multinomial logistic regression, ``softmax(X @ W + b)``.

    Parameters
    ----------
    n_features, n_classes : int
        Input width (784 for MNIST) and number of classes (10).
    xp : array namespace or module, optional
        Library of the parameters; default NumPy.
    device : optional
        Device of the parameters, as ``xp.zeros`` takes it.
    dtype : dtype, optional
        Floating dtype of the parameters; default ``xp.float32``, the dtype of
        :func:`portable_softmax.datasets.load_mnist`.

    Attributes
    ----------
    W : array, shape (n_features, n_classes)
    b : array, shape (n_classes,)
        Zero-initialised, as in the TensorFlow tutorial: a convex problem
        needs no symmetry breaking.

    Examples
    --------
    >>> import numpy as np
    >>> import portable_softmax as ps
    >>> model = ps.SoftmaxRegression(2, 3)
    >>> X = np.asarray([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    >>> model.predict_proba(X)
    array([[0.33333334, 0.33333334, 0.33333334],
           [0.33333334, 0.33333334, 0.33333334]], dtype=float32)
    >>> loss, (dW, db) = model.gradients(X, np.asarray([0, 2]))
    >>> round(float(loss), 4), db.round(4)
    (1.0986, array([-0.1667,  0.3333, -0.1667], dtype=float32))
    """

    def __init__(
        self,
        n_features: int,
        n_classes: int,
        *,
        xp: Any = None,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        if int(n_features) < 1 or int(n_classes) < 1:
            raise ValueError(
                f"n_features and n_classes must be positive, got {n_features} and {n_classes}"
            )
        self.xp = xp_namespace(xp)
        # PyTorch's CPU matmul is faster for these shapes (batch x 784 by
        # 784 x 10) written as transposes of the other product; NumPy's is
        # faster as written (docs/benchmarks.md has the figures).
        self._transposed_matmul = is_torch_namespace(self.xp)
        dtype = self.xp.float32 if dtype is None else dtype
        self.W = self.xp.zeros((int(n_features), int(n_classes)), dtype=dtype, device=device)
        self.b = self.xp.zeros((int(n_classes),), dtype=dtype, device=device)

    def __repr__(self) -> str:
        n_features, n_classes = self.W.shape
        return (
            f"SoftmaxRegression({n_features}, {n_classes}, xp={self.xp.__name__}, "
            f"device={self.device!r}, dtype={self.dtype})"
        )

    @property
    def device(self) -> Any:
        """The device of the parameters."""
        return xp_device(self.W)

    @property
    def dtype(self) -> Any:
        """The dtype of the parameters."""
        return self.W.dtype

    @property
    def parameters(self) -> list[Array]:
        """``[W, b]``, in the order of :meth:`gradients`."""
        return [self.W, self.b]

    @parameters.setter
    def parameters(self, values: list[Array]) -> None:
        self.W, self.b = values

    def to(self, xp: Any = None, device: Any = None, dtype: Any = None) -> SoftmaxRegression:
        """A copy of the model in another library, device or dtype.

        ``xp`` is a module (``torch``, ``dask.array``) or an Array API
        namespace; what is not given stays as it is (a new library gets its
        default device).  The parameters are copied, never shared: a model
        trained on PyTorch, then ``to(dask.array)``, evaluates lazily on Dask
        arrays of any number of rows while the original trains on.

        Examples
        --------
        >>> import dask.array as da
        >>> import portable_softmax as ps
        >>> lazy = ps.SoftmaxRegression(784, 10).to(da)
        >>> type(lazy.W).__module__, str(lazy.dtype)
        ('dask.array.core', 'float32')
        """
        target = self.xp if xp is None else xp_namespace(xp)
        if target is self.xp:
            device = self.device if device is None else device
            dtype = self.dtype if dtype is None else dtype
        # Through a host copy: the new parameters never share the old ones' memory.
        W, b = (
            target.asarray(np.array(to_numpy(a)), dtype=dtype, device=device)
            for a in self.parameters
        )
        n_features, n_classes = W.shape
        model = SoftmaxRegression(
            n_features, n_classes, xp=target, device=xp_device(W), dtype=W.dtype
        )
        model.parameters = [W, b]
        return model

    def as_input(self, X: Array) -> Array:
        """``X`` in the parameters' dtype (cast when it differs), as every method takes it.

        One rule on every backend: the data follow the model, so a float32
        model stays float32 (NumPy would otherwise promote it to float64 at
        the first step; PyTorch would refuse the matmul).
        """
        return X if X.dtype == self.dtype else self.xp.astype(X, self.dtype)

    def logits(self, X: Array) -> Array:
        """``X @ W + b``, shape ``(N, n_classes)``; ``X`` is cast to the model's dtype."""
        X = self.as_input(X)
        if self._transposed_matmul:
            return (self.W.T @ X.T).T + self.b
        return X @ self.W + self.b

    def predict_proba(self, X: Array) -> Array:
        """Class probabilities, ``softmax(X @ W + b)``."""
        return softmax(self.logits(X), axis=-1)

    def predict(self, X: Array) -> Array:
        """The most probable class of each row (the arg max of the logits)."""
        return self.xp.argmax(self.logits(X), axis=-1)

    def loss(self, X: Array, y: Array) -> Array:
        """Mean cross-entropy of integer labels (or probability rows) ``y``, a 0-d array."""
        return cross_entropy(self.logits(X), y)

    def accuracy(self, X: Array, y: Array) -> Array:
        """Fraction of rows whose predicted class is the integer label ``y``.

        The count of correct rows over the count of rows, divided once in
        float64 where the device has it (else float32): ``float(...)`` of
        9177 right out of 10000 is ``0.9177``, whatever the model's dtype.  A
        0-d array, so that it stays on the device and works under
        ``jax.jit``.
        """
        xp = self.xp
        hits = xp.astype(self.predict(X) == y, xp_default_dtype(xp, "integral", self.device))
        count = xp.astype(xp.sum(hits), _statistic_dtype(xp, self.device))
        return count / y.shape[0]

    def gradients(self, X: Array, y: Array) -> tuple[Array, list[Array]]:
        """The mean cross-entropy and its gradients with respect to ``[W, b]``.

        With ``G = (softmax(X @ W + b) - Y) / N`` -- one softmax, from
        :func:`portable_softmax.cross_entropy_with_grad`, never a one-hot
        ``Y`` for integer labels -- the gradients are ``X.T @ G`` and the
        column sums of ``G``.

        Returns
        -------
        (loss, [dW, db])
            A 0-d array and arrays shaped like ``W`` and ``b``.
        """
        X = self.as_input(X)
        loss, G = cross_entropy_with_grad(self.logits(X), y)
        dW = (G.T @ X).T if self._transposed_matmul else X.T @ G
        return loss, [dW, self.xp.sum(G, axis=0)]


def _statistic_dtype(xp: Any, device: Any) -> Any:
    """float64 where ``device`` has it (not JAX without x64, not Apple's MPS), else float32."""
    floats = xp.__array_namespace_info__().dtypes(device=device, kind="real floating")
    return floats.get("float64", xp.float32)
