"""Compiled and transformed code (SPEC §8): torch.compile(fullgraph=True), torch.func, jax.jit.

Every public function of §2 and §7 traces with no graph break, forward and
backward, with the fast paths on and off, and gives the eager values,
special rows included.  Compiled code cannot raise from values: a bad class
index gives a NaN loss for its sample, as on the lazy backends.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import portable_softmax as ps

torch = pytest.importorskip("torch")
pytestmark = [
    pytest.mark.slow,
    # array_api_compat's predicates are lru_cache-wrapped; Dynamo traces through
    # the cache wrapper, which is right for these pure functions of a type.
    pytest.mark.filterwarnings("ignore:Dynamo detected a call to a `functools.lru_cache`"),
]

INF, NAN = math.inf, math.nan
X = [[2.0, 3.0, 4.0, -1.0], [INF, 1.0, 0.0, 2.0], [-INF, -INF, -INF, -INF], [NAN, 0.0, 1.0, 2.0]]
FINITE = [[2.0, 3.0, 4.0, -1.0], [0.5, 1.0, 0.0, 2.0], [-3.0, 0.0, 3.0, 1.0]]


def _x(rows=X, grad=False):
    return torch.tensor(rows, dtype=torch.float64, requires_grad=grad)


Y = torch.tensor([2, 0, 3])
Q = torch.tensor([[0.1, 0.2, 0.3, 0.4], [1.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]])
W = torch.tensor([1.0, 2.0, 0.5, 1.5], dtype=torch.float64)
MASK = torch.tensor(
    [[True, True, True, False], [True, True, True, True], [True, False, True, True]]
)

CALLS = {
    "softmax": (lambda x: ps.softmax(x), X),
    "softmax-where": (lambda x: ps.softmax(x, where=MASK[:1]), X),
    "softmax-axis0": (lambda x: ps.softmax(x, axis=0), FINITE),
    "log_softmax": (lambda x: ps.log_softmax(x), X),
    "log_softmax-all": (lambda x: ps.log_softmax(x, axis=None), FINITE),
    "logsumexp": (lambda x: ps.logsumexp(x), X),
    "logsumexp-b": (lambda x: ps.logsumexp(x, b=W, return_sign=True)[0], FINITE),
    "jacobian": (lambda x: ps.softmax_jacobian(x), X),
    "jvp": (lambda x: ps.softmax_jvp(x, torch.ones(4, dtype=torch.float64)), X),
    "cross_entropy": (lambda x: ps.cross_entropy(x, Y), FINITE),
    "cross_entropy-options": (
        lambda x: ps.cross_entropy(
            x, Y, weight=W, ignore_index=0, label_smoothing=0.1, reduction="none"
        ),
        FINITE,
    ),
    "cross_entropy-prob": (lambda x: ps.cross_entropy(x, Q.double(), label_smoothing=0.2), FINITE),
    "cross_entropy-where": (lambda x: ps.cross_entropy(x, Y, where=MASK), FINITE),
    "cross_entropy_grad": (lambda x: ps.cross_entropy_grad(x, Y, weight=W), FINITE),
    "cross_entropy_with_grad": (lambda x: ps.cross_entropy_with_grad(x, Y)[1], FINITE),
    "one_hot": (lambda x: ps.one_hot(Y, 4, dtype=x.dtype) * x, FINITE),
}


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("native", [True, False], ids=["native", "generic"])
@pytest.mark.parametrize("name", list(CALLS))
def test_compiles_without_graph_breaks_and_gives_eager_values(name, native):
    f, rows = CALLS[name]
    x = _x(rows)
    with ps.native_kernels(native):
        explained = torch._dynamo.explain(f)(x)
        assert explained.graph_break_count == 0, explained.break_reasons
        eager = f(x)
        # aot_eager traces as inductor does (Dynamo, then AOTAutograd) without
        # generating C++: the inductor run is test_inductor_end_to_end.
        compiled = torch.compile(f, fullgraph=True, backend="aot_eager")(x)
    np.testing.assert_allclose(compiled.numpy(), eager.numpy(), rtol=1e-12, atol=1e-300)


def test_inductor_end_to_end():
    """The default compiler, forward and backward, on a few functions in one graph."""

    def f(x):
        return (
            ps.softmax(x).sum()
            + ps.log_softmax(x, axis=0)[0].sum()
            + ps.logsumexp(x).sum()
            + ps.cross_entropy(x, Y, label_smoothing=0.1)
        )

    x = _x(FINITE, grad=True)
    f(x).backward()
    eager = x.grad.clone()
    x.grad = None
    value = torch.compile(f, fullgraph=True)(x)
    value.backward()
    np.testing.assert_allclose(value.item(), f(x).item(), rtol=1e-12)
    np.testing.assert_allclose(x.grad.numpy(), eager.numpy(), rtol=1e-10, atol=1e-14)


BACKWARD = ["softmax", "log_softmax", "logsumexp", "cross_entropy", "cross_entropy-options",
            "cross_entropy-prob", "cross_entropy-where", "jvp"]  # fmt: skip


@pytest.mark.parametrize("native", [True, False], ids=["native", "generic"])
@pytest.mark.parametrize("name", BACKWARD)
def test_backward_through_the_compiled_function(name, native):
    f, _ = CALLS[name]

    def loss(x):
        out = f(x)
        return (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)).sum()

    with ps.native_kernels(native):
        x = _x(FINITE, grad=True)
        loss(x).backward()
        eager = x.grad.clone()
        x.grad = None
        torch.compile(loss, fullgraph=True, backend="aot_eager")(x).backward()
    np.testing.assert_allclose(x.grad.numpy(), eager.numpy(), rtol=1e-10, atol=1e-14)


def test_a_bad_class_index_gives_nan_for_its_sample_when_compiled():
    """Compiled code cannot raise from values: the lazy-backend rule, never a finite loss."""
    x = _x(FINITE)
    y = torch.tensor([2, 7, 3])
    f = torch.compile(lambda x, y: ps.cross_entropy(x, y, reduction="none"), fullgraph=True)
    loss = f(x, y).numpy()
    assert np.isnan(loss[1]) and np.isfinite(loss[[0, 2]]).all()
    mean = torch.compile(lambda x, y: ps.cross_entropy(x, y), fullgraph=True, backend="aot_eager")
    assert math.isnan(mean(x, y))
    with pytest.raises(ValueError, match="must lie in"):
        ps.cross_entropy(x, y)  # eager still raises


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "cross_entropy"])
def test_torch_func_transforms_agree_with_autograd(name):
    f = {
        "softmax": lambda x: ps.softmax(x)[..., 0].sum(),
        "log_softmax": lambda x: ps.log_softmax(x)[..., 1].sum(),
        "cross_entropy": lambda x: ps.cross_entropy(x, Y[: x.shape[0]] if x.ndim == 2 else Y[0]),
    }[name]
    x = _x(FINITE, grad=True)
    f(x).backward()
    np.testing.assert_allclose(torch.func.grad(f)(x.detach()).numpy(), x.grad.numpy(), rtol=1e-12)
    # vmap over rows: each row on its own equals the batched call's row.
    rows = torch.func.vmap(lambda r: ps.softmax(r) if name == "softmax" else ps.log_softmax(r))
    want = ps.softmax(x.detach()) if name == "softmax" else ps.log_softmax(x.detach())
    np.testing.assert_allclose(rows(x.detach()).numpy(), want.numpy(), rtol=1e-12)
    jac = torch.func.jacrev(lambda r: ps.softmax(r))(x.detach()[0])
    np.testing.assert_allclose(jac.numpy(), ps.softmax_jacobian(x.detach()[0]).numpy(), rtol=1e-12)


SPECIAL = [
    [2.0, 3.0, 4.0, -1.0],
    [INF, 1.0, 0.0, 2.0],
    [INF, INF, 0.0, -INF],
    [-INF, -INF, -INF, -INF],
    [0.0, 0.0, -INF, 1.0],
]


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "logsumexp"])
def test_traced_backward_gives_the_eager_gradient_at_special_rows(name):
    """The closed-form backwards of the traced fast path against eager autograd.

    Eager, the special rows go to the generic code, and autograd through it
    defines their gradient (+inf entries tied, a row of -inf): compiled and
    under torch.func.grad the same numbers come back, without NaN.
    """
    f = {
        "softmax": ps.softmax,
        "log_softmax": ps.log_softmax,
        "logsumexp": lambda x: ps.logsumexp(x, keepdims=True),
    }[name]
    weights = torch.linspace(-1, 1, 4, dtype=torch.float64) * torch.arange(1, 6)[:, None]

    def loss(x):
        out = f(x)
        return (torch.where(torch.isfinite(out), out, 0.0) * weights[:, : out.shape[1]]).sum()

    x = _x(SPECIAL, grad=True)
    loss(x).backward()
    eager = x.grad.clone()
    assert torch.isfinite(eager).all()
    x.grad = None
    torch.compile(loss, fullgraph=True, backend="aot_eager")(x).backward()
    np.testing.assert_allclose(x.grad.numpy(), eager.numpy(), rtol=1e-12, atol=1e-15)
    grad = torch.func.grad(loss)(x.detach())
    np.testing.assert_allclose(grad.numpy(), eager.numpy(), rtol=1e-12, atol=1e-15)
