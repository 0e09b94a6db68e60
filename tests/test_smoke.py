from array_api_extra.testing import lazy_xp_function

from portable_softmax import cross_entropy, cross_entropy_grad, log_softmax, logsumexp, softmax
from support import assert_close

for _f in (softmax, log_softmax, logsumexp, cross_entropy, cross_entropy_grad):
    lazy_xp_function(_f)


def test_all(xp):
    x = xp.asarray([[2.0, 3.0, 4.0]], dtype=xp.float64)
    assert_close(
        softmax(x),
        [[0.09003057317038046, 0.24472847105479767, 0.6652409557748219]],
        xp=xp,
        rtol=1e-14,
    )
    y = xp.asarray([1])
    assert_close(
        cross_entropy_grad(x, y),
        [[0.09003057317038046, -0.7552715289452023, 0.6652409557748219]],
        xp=xp,
        rtol=1e-14,
    )
    assert_close(logsumexp(x), [4.407605964444380], xp=xp, rtol=1e-14)
