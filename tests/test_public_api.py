"""The public namespace: ``__all__``, top-level imports and ``__version__``."""

from __future__ import annotations

import importlib.metadata
import inspect

import portable_softmax as ps

SPEC_NAMES = {
    "softmax", "log_softmax", "logsumexp", "softmax_jacobian", "softmax_jvp",
    "cross_entropy", "cross_entropy_grad", "one_hot",
}  # fmt: skip


def test_all_is_sorted_and_unique():
    assert list(ps.__all__) == sorted(ps.__all__)
    assert len(set(ps.__all__)) == len(ps.__all__)


def test_all_names_importable_from_top_level():
    for name in ps.__all__:
        assert hasattr(ps, name), name
        exec(f"from portable_softmax import {name}", {})  # noqa: S102


def test_all_contains_the_spec_functions():
    assert SPEC_NAMES <= set(ps.__all__)
    assert "cross_entropy_with_grad" in ps.__all__


def test_all_is_complete():
    """Every public callable defined by the package is listed."""
    public = {
        n for n, obj in vars(ps).items()
        if not n.startswith("_") and not inspect.ismodule(obj)
    }  # fmt: skip
    assert public <= set(ps.__all__), public - set(ps.__all__)


def test_version_matches_metadata():
    assert isinstance(ps.__version__, str) and ps.__version__
    assert ps.__version__ == importlib.metadata.version("portable_softmax")


def test_signatures_of_spec():
    sig = inspect.signature(ps.cross_entropy)
    assert list(sig.parameters) == [
        "logits",
        "target",
        "axis",
        "reduction",
        "weight",
        "ignore_index",
        "label_smoothing",
        "where",
    ]
    assert sig.parameters["logits"].kind is inspect.Parameter.POSITIONAL_ONLY
    assert sig.parameters["reduction"].kind is inspect.Parameter.KEYWORD_ONLY
    assert sig.parameters["reduction"].default == "mean"
    assert sig.parameters["label_smoothing"].default == 0.0
    assert list(inspect.signature(ps.cross_entropy_grad).parameters) == list(sig.parameters)
    assert list(inspect.signature(ps.softmax_jacobian).parameters) == ["x", "axis"]
    assert list(inspect.signature(ps.softmax_jvp).parameters) == ["x", "v", "axis"]
    one_hot = inspect.signature(ps.one_hot)
    assert list(one_hot.parameters) == ["labels", "num_classes", "dtype", "axis"]
    assert one_hot.parameters["axis"].default == -1
    assert one_hot.parameters["dtype"].kind is inspect.Parameter.KEYWORD_ONLY


def test_signatures_of_the_linear_cross_entropy():
    """SPEC §9: one signature for the loss, its gradients and both."""
    names = ["input", "linear_weight", "target", "linear_bias", "weight", "reduction",
             "ignore_index", "label_smoothing", "z_loss", "softcap", "chunk_size"]  # fmt: skip
    linear = (ps.linear_cross_entropy, ps.linear_cross_entropy_grad)
    for f in (*linear, ps.linear_cross_entropy_with_grad):
        assert f.__name__ in ps.__all__
        sig = inspect.signature(f)
        assert list(sig.parameters) == names
        assert sig.parameters["target"].kind is inspect.Parameter.POSITIONAL_ONLY
        assert sig.parameters["linear_bias"].kind is inspect.Parameter.KEYWORD_ONLY
        assert sig.parameters["chunk_size"].default is None
