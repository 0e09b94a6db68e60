"""linear_cross_entropy and its gradients (SPEC §9) on every backend of the ``xp`` fixture.

The reference is the materialised computation in float64 PyTorch:
``F.cross_entropy(softcap(x @ W.T + b), t, ...)`` plus the z-loss, and its
autograd gradients.  The option grid covers every reduction, class weights,
``ignore_index``, label smoothing, z-loss, softcap, a bias, leading shapes
of ``input`` and chunk sizes 1, odd and above V, with the fast paths on and
off.
"""

from __future__ import annotations

import itertools
import math
import tracemalloc
from typing import Any, NamedTuple

import numpy as np
import pytest
from array_api_extra.testing import lazy_xp_function

import portable_softmax as ps
import portable_softmax._linear_problem as linear_problem
from backends import is_lazy
from cases import to_xp
from support import assert_close, to_numpy

torch = pytest.importorskip("torch")
F = torch.nn.functional

for _f in (
    ps.linear_cross_entropy,
    ps.linear_cross_entropy_grad,
    ps.linear_cross_entropy_with_grad,
):
    lazy_xp_function(_f)

V, H = 11, 5
IGNORE = -1


class LinearCase(NamedTuple):
    reduction: str
    weighted: bool
    ignore: bool
    chunk: int | None
    smoothing: float
    z_loss: float
    softcap: float | None
    bias: bool
    lead: tuple[int, ...]

    @property
    def id(self) -> str:
        return (
            f"{self.reduction}-{'w' if self.weighted else 'now'}"
            f"-{'ign' if self.ignore else 'noign'}"
            f"-c{self.chunk}-ls{self.smoothing}-z{self.z_loss}-cap{self.softcap}"
            f"-{'b' if self.bias else 'nob'}-{'x'.join(map(str, self.lead)) or 'scalar'}"
        )


_MAIN = list(
    itertools.product(("mean", "sum", "none"), (False, True), (False, True), (1, 3, 64, None))
)
_EXTRAS = list(itertools.product((0.0, 0.3, 1.0), (0.0, 0.01), (None, 2.5), (False, True)))
_LEADS = ((6,), (2, 3), ())
# Every option of the main grid meets two settings of the others; every
# setting of the others (and every leading shape) appears.
CASES = [
    LinearCase(*_MAIN[i % len(_MAIN)], *_EXTRAS[i % len(_EXTRAS)], _LEADS[(i // 7) % 3])
    for i in range(2 * len(_MAIN))
]


def make_data(case: LinearCase, seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed + (CASES.index(case) if case in CASES else 0))
    x = rng.normal(size=(*case.lead, H))
    w = rng.normal(scale=0.8, size=(V, H))
    target = rng.integers(0, V, size=case.lead).astype(np.int64)
    if case.ignore and target.ndim:
        target.reshape(-1)[1::3] = IGNORE
    kwargs: dict[str, Any] = {
        "reduction": case.reduction,
        "label_smoothing": case.smoothing,
        "z_loss": case.z_loss,
        "softcap": case.softcap,
        "chunk_size": case.chunk,
    }
    if case.ignore:
        kwargs["ignore_index"] = IGNORE
    return {
        "x": x,
        "w": w,
        "target": target,
        "bias": rng.normal(size=V) if case.bias else None,
        "weight": rng.uniform(0.2, 2.0, size=V) if case.weighted else None,
        "kwargs": kwargs,
    }


def torch_reference(data: dict[str, Any], cotangent: np.ndarray | None = None) -> tuple[Any, ...]:
    """(loss, d_input, d_linear_weight, d_linear_bias) of the materialised loss, float64 torch.

    For ``reduction="none"`` the gradients are those of ``sum(loss * cotangent)``
    (of the summed loss without a cotangent).
    """
    kw = data["kwargs"]
    x = torch.tensor(data["x"], requires_grad=True)
    w = torch.tensor(data["w"], requires_grad=True)
    b = None if data["bias"] is None else torch.tensor(data["bias"], requires_grad=True)
    t = torch.tensor(data["target"]).reshape(-1)
    z = (x @ w.T if b is None else x @ w.T + b).reshape(-1, w.shape[0])
    if kw["softcap"] is not None:
        z = kw["softcap"] * torch.tanh(z / kw["softcap"])
    cw = None if data["weight"] is None else torch.tensor(data["weight"])
    ignore = kw.get("ignore_index")
    per = F.cross_entropy(
        z, t, weight=cw, reduction="none", label_smoothing=kw["label_smoothing"],
        ignore_index=-100 if ignore is None else ignore,
    )  # fmt: skip
    counted = t != (-100 if ignore is None else ignore)
    w_y = counted.double() if cw is None else torch.where(counted, cw[t.clamp(0, V - 1)], 0.0)
    per = per + kw["z_loss"] * w_y * torch.logsumexp(z, 1) ** 2
    if kw["reduction"] == "none":
        loss = per.reshape(data["target"].shape)
        c = torch.ones_like(loss) if cotangent is None else torch.tensor(cotangent)
        objective = (loss * c).sum()
    elif kw["reduction"] == "sum":
        loss = objective = per.sum()
    else:
        loss = objective = per.sum() / w_y.sum() if w_y.sum() > 0 else per.sum() * 0.0
    objective.backward()
    grads = (x.grad, w.grad, None if b is None else b.grad)
    return loss.detach().numpy(), *(None if g is None else g.numpy() for g in grads)


def xp_args(xp: Any, data: dict[str, Any], dtype: Any = None) -> tuple[tuple[Any, ...], dict]:
    kwargs = dict(data["kwargs"])
    kwargs["linear_bias"] = to_xp(xp, data["bias"], dtype)
    kwargs["weight"] = to_xp(xp, data["weight"], dtype)
    return (
        to_xp(xp, data["x"], dtype),
        to_xp(xp, data["w"], dtype),
        to_xp(xp, data["target"]),
    ), kwargs


def _check_grads(grads: tuple[Any, ...], expected: tuple[Any, ...], xp: Any, **tol: float) -> None:
    assert len(grads) == 3
    for got, want in zip(grads, expected, strict=True):
        if want is None:
            assert got is None
        else:
            assert_close(got, want, xp=xp, dtype=xp.float64, **tol)


# --------------------------------------------------------------------------- against the reference


@pytest.mark.case_grid(CASES, stride=7)
def test_matches_the_materialised_torch_reference(xp, native, case):
    data = make_data(case)
    loss_ref, *grads_ref = torch_reference(data)
    assert np.all(np.isfinite(loss_ref))
    args, kwargs = xp_args(xp, data)
    with ps.native_kernels(native):
        loss = ps.linear_cross_entropy(*args, **kwargs)
        grads = ps.linear_cross_entropy_grad(*args, **kwargs)
        loss2, grads2 = ps.linear_cross_entropy_with_grad(*args, **kwargs)
    tol = {"rtol": 1e-11, "atol": 1e-13}
    assert_close(loss, loss_ref, xp=xp, dtype=xp.float64, **tol)
    assert_close(loss2, loss_ref, xp=xp, dtype=xp.float64, **tol)
    _check_grads(grads, grads_ref, xp, **tol)
    _check_grads(grads2, grads_ref, xp, **tol)


@pytest.mark.case_grid([c for c in CASES if c.z_loss == 0], stride=7)
def test_matches_cross_entropy_of_the_logits(xp, native, case):
    """The value is ``ps.cross_entropy`` of the materialised (softcapped) logits."""
    data = make_data(case)
    args, kwargs = xp_args(xp, data)
    x, w, t = args
    z = x @ w.T if kwargs["linear_bias"] is None else x @ w.T + kwargs["linear_bias"]
    if case.softcap is not None:
        z = case.softcap * xp.tanh(z / case.softcap)
    options = {k: kwargs[k] for k in ("reduction", "weight", "label_smoothing")}
    with ps.native_kernels(native):
        expected = ps.cross_entropy(z, t, ignore_index=kwargs.get("ignore_index"), **options)
        loss = ps.linear_cross_entropy(*args, **kwargs)
    assert_close(loss, to_numpy(expected), xp=xp, dtype=xp.float64, rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_results_do_not_depend_on_the_blocks(xp, library, native, reduction, monkeypatch):
    """Chunk sizes from 1 to above V, ``None``, and the one-pass path with several row blocks.

    Fewer classes on the lazy backends, which build (or trace) every block.
    """
    rng = np.random.default_rng(3)
    n, v = (40, 37) if not is_lazy(library) else (20, 9)
    chunks = (1, 2, 5, v - 1, v, v + 1, 1000, None) if not is_lazy(library) else (1, 4, v, None)
    x, w, b = rng.normal(size=(n, 6)), rng.normal(size=(v, 6)), rng.normal(size=v)
    t = rng.integers(0, v, size=n)
    args = (to_xp(xp, x), to_xp(xp, w), to_xp(xp, t))
    kw = {
        "linear_bias": to_xp(xp, b),
        "label_smoothing": 0.1,
        "z_loss": 1e-3,
        "reduction": reduction,
    }
    data = {"x": x, "w": w, "target": t, "bias": b, "weight": None}
    data["kwargs"] = {**kw, "linear_bias": None, "softcap": None, "chunk_size": None}
    loss_ref, *grads_ref = torch_reference(data)
    # Blocks of every class for a few samples at a time (the one-pass path).
    monkeypatch.setattr(linear_problem, "MIN_ONE_PASS_ROWS", 1)
    with ps.native_kernels(native):
        for chunk in chunks:
            loss, grads = ps.linear_cross_entropy_with_grad(*args, chunk_size=chunk, **kw)
            assert_close(loss, loss_ref, xp=xp, dtype=xp.float64, rtol=1e-12, atol=1e-14)
            _check_grads(grads, grads_ref, xp, rtol=1e-12, atol=1e-14)
        # chunk_size=None with a small block budget: blocks of classes and of samples.
        monkeypatch.setattr(linear_problem, "TILE_ELEMENTS", 64)
        monkeypatch.setattr(linear_problem, "MIN_BLOCK_CLASSES", 4)
        p = linear_problem.linear_problem(
            *args, weight=None, ignore_index=None, softcap=None, chunk_size=None, **kw
        )
        assert p.blocks.rows < n and p.blocks.classes < v
        for f in (ps.linear_cross_entropy_with_grad, ps.linear_cross_entropy):
            out = f(*args, **kw)
            loss = out[0] if isinstance(out, tuple) else out
            assert_close(loss, loss_ref, xp=xp, dtype=xp.float64, rtol=1e-12, atol=1e-14)


def test_in_range_ignore_index_and_integer_dtypes(xp, native):
    rng = np.random.default_rng(5)
    x, w = rng.normal(size=(9, 4)), rng.normal(size=(6, 4))
    t = rng.integers(0, 6, size=9)
    t[[0, 4]] = 2
    data = {"x": x, "w": w, "target": t, "bias": None, "weight": rng.uniform(0.5, 1.5, size=6)}
    data["kwargs"] = {"reduction": "mean", "label_smoothing": 0.2, "z_loss": 0.0, "softcap": None,
                      "chunk_size": 4, "ignore_index": 2}  # fmt: skip
    loss_ref, *grads_ref = torch_reference(data)
    for dtype in ("int64", "int32", "uint8"):
        args, kwargs = xp_args(xp, {**data, "target": t.astype(dtype)})
        with ps.native_kernels(native):
            loss, grads = ps.linear_cross_entropy_with_grad(*args, **kwargs)
        assert_close(loss, loss_ref, xp=xp, dtype=xp.float64, rtol=1e-12)
        _check_grads(grads, grads_ref, xp, rtol=1e-12, atol=1e-15)


def test_list_inputs_give_numpy_float64():
    loss = ps.linear_cross_entropy([[1.0, 2.0]], [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], [1])
    assert isinstance(loss, np.ndarray) and loss.dtype == np.float64 and loss.shape == ()
    np.testing.assert_allclose(loss, float(ps.cross_entropy([[1.0, 2.0, 3.0]], [1])), rtol=1e-14)


# --------------------------------------------------------------------------- dtypes


def test_dtypes_are_promoted_and_gradients_keep_their_arrays_dtypes(xp):
    rng = np.random.default_rng(1)
    x = to_xp(xp, rng.normal(size=(4, 3)), xp.float32)
    w = to_xp(xp, rng.normal(size=(7, 3)))
    b = to_xp(xp, rng.normal(size=7), xp.float32)
    t = to_xp(xp, rng.integers(0, 7, size=4))
    loss, (dx, dw, db) = ps.linear_cross_entropy_with_grad(x, w, t, linear_bias=b)
    assert loss.dtype == xp.float64
    assert (dx.dtype, dw.dtype, db.dtype) == (xp.float32, xp.float64, xp.float32)
    assert tuple(dx.shape) == (4, 3) and tuple(dw.shape) == (7, 3) and tuple(db.shape) == (7,)


HALF = [("float16", ("numpy", "torch", "torch_cuda", "jax", "jax_jit", "cupy")),
        ("bfloat16", ("torch", "torch_cuda", "jax", "jax_jit"))]  # fmt: skip


@pytest.mark.parametrize(("dtype", "backends"), HALF, ids=[h[0] for h in HALF])
@pytest.mark.parametrize("chunk", [7, None])
def test_half_precision_accumulates_in_float32(xp, library, native, dtype, backends, chunk):
    """Hundreds of blocks, and the result still within the output's own rounding."""
    if library not in backends:
        pytest.skip(f"{dtype} is not a dtype of {library}")
    rng = np.random.default_rng(2)
    n, h, v = 48, 32, 1500
    half = getattr(xp, dtype)
    x = xp.astype(to_xp(xp, rng.normal(size=(n, h))), half)
    w = xp.astype(to_xp(xp, rng.normal(scale=0.3, size=(v, h))), half)
    b = xp.astype(to_xp(xp, rng.normal(size=v)), half)
    t = rng.integers(0, v, size=n)
    data = {"x": to_numpy(x).astype(np.float64), "w": to_numpy(w).astype(np.float64),
            "target": t, "bias": to_numpy(b).astype(np.float64), "weight": None,
            "kwargs": {"reduction": "sum", "label_smoothing": 0.1, "z_loss": 1e-3,
                       "softcap": None, "chunk_size": chunk}}  # fmt: skip
    loss_ref, *grads_ref = torch_reference(data)
    with ps.native_kernels(native):
        loss, grads = ps.linear_cross_entropy_with_grad(x, w, to_xp(xp, t), linear_bias=b,
                                                        **data["kwargs"])  # fmt: skip
    eps = 2.0**-8 if dtype == "bfloat16" else 2.0**-11  # the output's own rounding
    assert loss.dtype == half
    np.testing.assert_allclose(to_numpy(loss).astype(np.float64), loss_ref, rtol=eps)
    for got, want in zip(grads, grads_ref, strict=True):
        assert got.dtype == half
        scale = np.abs(want).max()
        np.testing.assert_allclose(
            to_numpy(got).astype(np.float64), want, rtol=eps, atol=eps * scale
        )


# --------------------------------------------------------------------------- special cases


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_empty_batch(xp, native, reduction):
    x, w = xp.zeros((0, 3), dtype=xp.float64), to_xp(xp, np.ones((4, 3)))
    t = xp.zeros((0,), dtype=xp.int64)
    with ps.native_kernels(native):
        loss, (dx, dw, db) = ps.linear_cross_entropy_with_grad(
            x, w, t, linear_bias=w[:, 0], reduction=reduction
        )
    assert_close(loss, np.zeros(0) if reduction == "none" else 0.0, xp=xp, dtype=xp.float64)
    assert_close(dx, np.zeros((0, 3)), xp=xp)
    assert_close(dw, np.zeros((4, 3)), xp=xp)
    assert_close(db, np.zeros(4), xp=xp)


def test_everything_ignored_gives_zero_mean(xp, native):
    rng = np.random.default_rng(0)
    x, w = to_xp(xp, rng.normal(size=(3, 2))), to_xp(xp, rng.normal(size=(5, 2)))
    t = to_xp(xp, np.array([-1, -1, -1]))
    with ps.native_kernels(native):
        loss, (dx, dw, _) = ps.linear_cross_entropy_with_grad(
            x, w, t, ignore_index=-1, label_smoothing=0.3, z_loss=0.1
        )
    assert_close(loss, 0.0, xp=xp)
    assert_close(dx, np.zeros((3, 2)), xp=xp)
    assert_close(dw, np.zeros((5, 2)), xp=xp)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_out_of_range_index(xp, library, native, reduction):
    x, w = to_xp(xp, np.ones((3, 2))), to_xp(xp, np.ones((4, 2)))
    t = to_xp(xp, np.array([0, 7, 1]))
    if not is_lazy(library):
        with pytest.raises(ValueError, match=r"\[0, 4\).*got 7"):
            ps.linear_cross_entropy(x, w, t, reduction=reduction)
        return
    with ps.native_kernels(native):
        loss = to_numpy(ps.linear_cross_entropy(x, w, t, reduction=reduction))
        d_x, _, _ = ps.linear_cross_entropy_grad(x, w, t, reduction=reduction)
    if reduction == "none":
        assert np.isnan(loss[1]) and np.all(np.isfinite(loss[[0, 2]]))
        assert np.all(np.isnan(to_numpy(d_x)[1])) and np.all(np.isfinite(to_numpy(d_x)[[0, 2]]))
    else:
        assert np.isnan(loss)


def test_a_dominant_class_keeps_its_tiny_loss_accurate(xp, native):
    """log1p of the sum without the maximum: the loss 1e-20 is not rounded to 0."""
    x = to_xp(xp, np.array([[1.0]]))
    w = to_xp(xp, np.array([[0.0], [-46.0], [-46.0 - math.log(2)]]))
    t = to_xp(xp, np.array([0]))
    with ps.native_kernels(native):
        loss = ps.linear_cross_entropy(x, w, t, chunk_size=1)
    expected = math.log1p(math.exp(-46.0) * 1.5)
    assert_close(loss, expected, xp=xp, dtype=xp.float64, rtol=1e-14)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"softcap": 0.0}, "softcap"),
        ({"softcap": -1.0}, "softcap"),
        ({"z_loss": -0.1}, "z_loss"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"label_smoothing": 1.5}, "label_smoothing"),
        ({"reduction": "avg"}, "reduction"),
        ({"linear_bias": "wrong-length"}, "linear_bias"),
        ({"linear_bias": "2-d"}, "linear_bias"),
        ({"weight": "wrong-length"}, "weight"),
    ],
)
def test_bad_options_raise_value_error(xp, kwargs, match):
    x, w, t = to_xp(xp, np.ones((2, 3))), to_xp(xp, np.ones((4, 3))), to_xp(xp, np.array([0, 1]))
    bad = {"wrong-length": to_xp(xp, np.ones(5)), "2-d": to_xp(xp, np.ones((4, 1)))}
    kwargs = {
        k: bad.get(v, v) if isinstance(v, str) and k != "reduction" else v
        for k, v in kwargs.items()
    }
    with pytest.raises(ValueError, match=match):
        ps.linear_cross_entropy(x, w, t, **kwargs)
    with pytest.raises(ValueError, match=match):
        ps.linear_cross_entropy_grad(x, w, t, **kwargs)


@pytest.mark.parametrize(
    ("x_shape", "w_shape", "t_shape", "match"),
    [
        ((2, 3), (4, 2), (2,), "linear_weight"),
        ((2, 3), (4,), (2,), "linear_weight"),
        ((2, 3), (0, 3), (2,), "linear_weight"),
        ((2, 3), (4, 3), (3,), "target"),
        ((2, 3), (4, 3), (2, 1), "target"),
        ((), (4, 3), (), "input"),
    ],
)
def test_shapes_that_do_not_fit_raise(xp, x_shape, w_shape, t_shape, match):
    x, w = to_xp(xp, np.ones(x_shape)), to_xp(xp, np.ones(w_shape))
    t = to_xp(xp, np.zeros(t_shape, dtype=np.int64))
    with pytest.raises(ValueError, match=match):
        ps.linear_cross_entropy(x, w, t)


def test_probability_targets_are_a_type_error_pointing_to_cross_entropy(xp):
    x, w = to_xp(xp, np.ones((2, 3))), to_xp(xp, np.ones((4, 3)))
    q = to_xp(xp, np.full((2, 4), 0.25))
    for f in (
        ps.linear_cross_entropy,
        ps.linear_cross_entropy_grad,
        ps.linear_cross_entropy_with_grad,
    ):
        with pytest.raises(TypeError, match="cross_entropy"):
            f(x, w, q)


def test_other_type_errors(xp):
    x, w, t = to_xp(xp, np.ones((2, 3))), to_xp(xp, np.ones((4, 3))), to_xp(xp, np.array([0, 1]))
    with pytest.raises(TypeError, match="input"):
        ps.linear_cross_entropy(xp.astype(x, xp.int64), w, t)
    with pytest.raises(TypeError, match="linear_weight"):
        ps.linear_cross_entropy(x, xp.astype(w, xp.int64), t)
    for bad in (True, 1.5, "1"):
        with pytest.raises(TypeError, match="ignore_index must be an integer"):
            ps.linear_cross_entropy(x, w, t, ignore_index=bad)
    with pytest.raises(TypeError, match="target"):
        ps.linear_cross_entropy(x, w, t > 0)


def test_mixing_libraries_raises():
    with pytest.raises(TypeError, match="same array library"):
        ps.linear_cross_entropy(
            np.ones((2, 3)), torch.ones(4, 3, dtype=torch.float64), np.array([0, 1])
        )


# --------------------------------------------------------------------------- memory


@pytest.mark.parametrize("native", [True, False], ids=["native", "generic"])
@pytest.mark.parametrize("chunk", [32, None])
def test_numpy_never_allocates_the_logits(native, chunk):
    """tracemalloc's peak stays far below one N x V array, gradients included.

    The in-place kernel holds one block of logits (``chunk_size=None``: 2**23
    elements, here an eighth of the logits); the generic code a few
    temporaries of a block's size at a time.
    """
    rng = np.random.default_rng(0)
    n, h, v = (512, 16, 4096) if chunk else (4096, 8, 16384)
    x = rng.normal(size=(n, h)).astype(np.float32)
    w = rng.normal(size=(v, h)).astype(np.float32)
    t = rng.integers(0, v, size=n)
    logits_bytes = n * v * 4
    with ps.native_kernels(native):
        ps.linear_cross_entropy_with_grad(x[:8], w, t[:8], chunk_size=chunk)  # warm caches
        tracemalloc.start()
        try:
            ps.linear_cross_entropy_with_grad(x, w, t, chunk_size=chunk, label_smoothing=0.1)
            ps.linear_cross_entropy(x, w, t, chunk_size=chunk, z_loss=1e-4)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    outputs = x.nbytes + w.nbytes
    blocks = logits_bytes // (8 if chunk else 4) if native else logits_bytes * 3 // 4
    assert peak < outputs + blocks, (peak, outputs + blocks, logits_bytes)


# --------------------------------------------------------------------------- autodiff: PyTorch


def _torch_data(reduction: str = "mean", bias: bool = True, seed: int = 0) -> dict[str, Any]:
    case = LinearCase(reduction, True, True, 3, 0.2, 0.01, 2.0, bias, (2, 3))
    return make_data(case, seed=seed) | {"case": case}


@pytest.mark.parametrize("native", [True, False], ids=["native", "generic"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_torch_backward_matches_the_reference(native, reduction):
    data = _torch_data(reduction)
    cot = np.random.default_rng(9).normal(size=data["target"].shape)
    _, *expected = torch_reference(data, cot if reduction == "none" else None)
    (x, w, t), kwargs = xp_args(torch, data)
    x.requires_grad_()
    w.requires_grad_()
    kwargs["linear_bias"].requires_grad_()
    with ps.native_kernels(native):
        loss = ps.linear_cross_entropy(x, w, t, **kwargs)
    assert loss.requires_grad
    (loss * torch.tensor(cot) if reduction == "none" else loss).sum().backward()
    for got, want in zip((x.grad, w.grad, kwargs["linear_bias"].grad), expected, strict=True):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_torch_autograd_saves_the_gradients_or_one_value_per_sample(reduction):
    """A reduced loss keeps its gradients (computed in the forward pass); ``"none"``
    keeps the inputs and one value per sample: never a block of logits."""
    n, h, v = 64, 8, 500
    x = torch.randn(n, h, dtype=torch.float64, requires_grad=True)
    w = torch.randn(v, h, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, v, (n,))
    cot = torch.rand(n, dtype=torch.float64) if reduction == "none" else torch.tensor(0.7)
    saved: list[torch.Tensor] = []

    def pack(a: torch.Tensor) -> torch.Tensor:
        saved.append(a)
        return a

    kwargs = {"chunk_size": 16, "label_smoothing": 0.1}
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda a: a):
        loss = ps.linear_cross_entropy(x, w, t, reduction=reduction, **kwargs)
    new = [a for a in saved if a.data_ptr() not in (x.data_ptr(), w.data_ptr())]
    allowed = 4 * n + (0 if reduction == "none" else x.numel() + w.numel())
    assert sum(a.numel() for a in new) <= allowed, [tuple(a.shape) for a in new]
    (loss * cot).sum().backward()
    xr, wr = x.detach().requires_grad_(), w.detach().requires_grad_()
    ref = F.cross_entropy(xr @ wr.T, t, reduction=reduction, label_smoothing=0.1)
    (ref * cot).sum().backward()
    torch.testing.assert_close(x.grad, xr.grad)
    torch.testing.assert_close(w.grad, wr.grad)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_torch_second_backward_of_a_retained_graph_gives_the_same_gradients(reduction):
    x = torch.randn(40, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(300, 6, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, 300, (40,))
    loss = ps.linear_cross_entropy(x, w, t, reduction=reduction, chunk_size=64).sum()
    loss.backward(retain_graph=True)
    first = (x.grad.clone(), w.grad.clone())
    loss.backward()
    xr, wr = x.detach().requires_grad_(), w.detach().requires_grad_()
    F.cross_entropy(xr @ wr.T, t, reduction=reduction).sum().backward()
    for got, once, want in zip((x.grad, w.grad), first, (xr.grad, wr.grad), strict=True):
        torch.testing.assert_close(once, want)
        torch.testing.assert_close(got, 2 * want)


def test_torch_empty_batch_is_connected_to_autograd():
    x = torch.zeros(0, 3, dtype=torch.float64, requires_grad=True)
    w = torch.ones(4, 3, dtype=torch.float64, requires_grad=True)
    loss = ps.linear_cross_entropy(x, w, torch.zeros(0, dtype=torch.int64))
    loss.backward()
    assert float(loss.detach()) == 0.0 and torch.all(w.grad == 0) and x.grad.shape == (0, 3)


def test_torch_func_grad_vmap_and_jacrev():
    data = _torch_data("sum", bias=False)
    (x, w, t), kwargs = xp_args(torch, data)
    kwargs.pop("linear_bias")
    d_x, d_w, _ = ps.linear_cross_entropy_grad(x, w, t, **kwargs)
    g = torch.func.grad(lambda w: ps.linear_cross_entropy(x, w, t, **kwargs))(w)
    torch.testing.assert_close(g, d_w)
    xb = torch.stack([x, 2 * x])
    gb = torch.func.vmap(torch.func.grad(lambda x: ps.linear_cross_entropy(x, w, t, **kwargs)))(xb)
    torch.testing.assert_close(gb[0], d_x)
    none = {**kwargs, "reduction": "none"}
    jac = torch.func.jacrev(lambda x: ps.linear_cross_entropy(x, w, t, **none))(x)
    torch.testing.assert_close(jac.sum(dim=(0, 1)), d_x)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Dynamo detected a call to a `functools.lru_cache`")
@pytest.mark.parametrize("native", [True, False], ids=["native", "generic"])
def test_torch_compile_fullgraph_forward_and_backward(native):
    torch._dynamo.reset()
    data = _torch_data("mean")
    (x, w, t), kwargs = xp_args(torch, data)
    b = kwargs.pop("linear_bias")
    _, *expected = torch_reference(data)

    def step(x: Any, w: Any, b: Any) -> Any:
        return ps.linear_cross_entropy(x, w, t, linear_bias=b, **kwargs)

    leaves = [a.clone().requires_grad_() for a in (x, w, b)]
    with ps.native_kernels(native):
        loss = torch.compile(step, fullgraph=True)(*leaves)
    loss.backward()
    torch.testing.assert_close(
        loss, torch.tensor(float(torch_reference(data)[0]), dtype=loss.dtype)
    )
    for leaf, want in zip(leaves, expected, strict=True):
        np.testing.assert_allclose(leaf.grad.numpy(), want, rtol=1e-10, atol=1e-12)
    torch._dynamo.reset()


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Dynamo detected a call to a `functools.lru_cache`")
def test_torch_compile_gives_nan_for_a_bad_index():
    torch._dynamo.reset()
    x, w = torch.ones(3, 2, dtype=torch.float64), torch.ones(4, 2, dtype=torch.float64)
    f = torch.compile(
        lambda x, t: ps.linear_cross_entropy(x, w, t, reduction="none"), fullgraph=True
    )
    loss = f(x, torch.tensor([0, 9, 1]))
    assert torch.isnan(loss[1]) and torch.isfinite(loss[[0, 2]]).all()
    torch._dynamo.reset()


# --------------------------------------------------------------------------- autodiff: JAX


@pytest.fixture
def jnp():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    return jax.numpy


@pytest.mark.parametrize("native", [True, False], ids=["native", "generic"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_jax_grad_matches_the_reference(jnp, native, reduction, jit):
    import jax

    data = _torch_data(reduction, seed=4)
    cot = np.random.default_rng(9).normal(size=data["target"].shape)
    loss_ref, *expected = torch_reference(data, cot if reduction == "none" else None)
    (x, w, t), kwargs = xp_args(jnp, data)
    b = kwargs.pop("linear_bias")

    def objective(x: Any, w: Any, b: Any) -> Any:
        loss = ps.linear_cross_entropy(x, w, t, linear_bias=b, **kwargs)
        return jnp.sum(loss * cot) if reduction == "none" else loss

    f = jax.value_and_grad(objective, argnums=(0, 1, 2))
    with ps.native_kernels(native):
        value, grads = (jax.jit(f) if jit else f)(x, w, b)
    if reduction != "none":
        np.testing.assert_allclose(float(value), loss_ref, rtol=1e-12)
    for got, want in zip(grads, expected, strict=True):
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-11, atol=1e-13)


def test_jax_vmap_and_empty_batch(jnp):
    import jax

    data = _torch_data("mean", bias=False, seed=6)
    (x, w, t), kwargs = xp_args(jnp, data)
    kwargs.pop("linear_bias")
    xb = jnp.stack([x, -x])
    batched = jax.vmap(lambda x: ps.linear_cross_entropy(x, w, t, **kwargs))(xb)
    one = ps.linear_cross_entropy(-x, w, t, **kwargs)
    np.testing.assert_allclose(np.asarray(batched[1]), np.asarray(one), rtol=1e-13)
    g = jax.grad(lambda w: ps.linear_cross_entropy(jnp.zeros((0, H)), w, jnp.zeros(0, dtype=int)))(
        w
    )
    assert np.all(np.asarray(g) == 0)


def test_jax_debug_nans_stays_quiet(jnp):
    import jax

    data = _torch_data("none", seed=7)
    (x, w, t), kwargs = xp_args(jnp, data)
    with jax.debug_nans(True):
        loss = ps.linear_cross_entropy(x, w, t, **kwargs)
        jax.grad(lambda x: jnp.sum(ps.linear_cross_entropy(x, w, t, **kwargs)))(x)
    assert np.all(np.isfinite(np.asarray(loss)))
