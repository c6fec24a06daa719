"""Loss functions as ``torch.nn`` defines them: each value with its gradient beside it.

Like the activations, they are meant to run under ``np.errstate(all="ignore")``.
``value(a, y, reduction)`` is the loss of the network output ``a`` against targets
``y``; ``gradient(a, y, reduction)`` is ``dE/da``, the notebook's ``dE_df``.
``reduction="mean"`` divides by the number of elements for the element-wise losses
(``N x outputs`` for MSE, L1 and both BCEs) and by the number of rows for
cross-entropy with class-probability targets, as torch does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from nnparity.activations import sigmoid

Array = np.ndarray

BCE_LOG_FLOOR = -100.0  # torch clamps BCELoss's logarithms at -100
# and its gradient's denominator at 1e-12, a float32 constant in torch's kernel even in float64.
BCE_EPSILON = float(np.float32(1e-12))


class Loss(NamedTuple):
    name: str
    value: Callable[[Array, Array, str], float]
    gradient: Callable[[Array, Array, str], Array]


def _reduce(per_item: Array, reduction: str) -> float:
    # sum / count is what ndarray.mean computes, bit for bit, without its Python overhead.
    total = np.add.reduce(per_item, axis=None)
    return float(total / per_item.size if reduction == "mean" else total)


def _norm(count: int, reduction: str, factor: float = 1.0) -> float:
    """The constant torch multiplies a loss gradient by: ``factor / count`` for the mean."""
    return factor / count if reduction == "mean" else factor


# Mean squared error: E = (f - y)^2, dE/df = 2 (f - y).
def mse(a: Array, y: Array, reduction: str) -> float:
    return _reduce(np.square(a - y), reduction)


def d_mse(a: Array, y: Array, reduction: str) -> Array:
    # torch: (input - target) * (2 / numel); the notebook's 0.5 * (f - ground_truth) for 4 rows.
    return (a - y) * _norm(a.size, reduction, 2.0)


# Mean absolute error: E = |f - y|, dE/df = sign(f - y) (0 where they are equal).
def l1(a: Array, y: Array, reduction: str) -> float:
    return _reduce(np.abs(a - y), reduction)


def d_l1(a: Array, y: Array, reduction: str) -> Array:
    return np.sign(a - y) * _norm(a.size, reduction)


# Binary cross-entropy on probabilities: E = -(y log f + (1 - y) log(1 - f)).
def bce(a: Array, y: Array, reduction: str) -> float:
    log_a = np.maximum(np.log(a), BCE_LOG_FLOOR)  # log(0) = -inf, clamped
    log_1ma = np.maximum(np.log1p(-a), BCE_LOG_FLOOR)
    return _reduce((y - 1.0) * log_1ma - y * log_a, reduction)


def d_bce(a: Array, y: Array, reduction: str) -> Array:
    # dE/df = (f - y) / (f (1 - f)), the denominator clamped as torch clamps it.
    grad = (a - y) / np.maximum((1.0 - a) * a, BCE_EPSILON)
    return grad / a.size if reduction == "mean" else grad


# Binary cross-entropy on logits: E = (1 - y) x - log(sigmoid(x)), dE/dx = sigmoid(x) - y.
def bce_with_logits(a: Array, y: Array, reduction: str) -> float:
    log_sigmoid = np.minimum(a, 0.0) - np.log1p(np.exp(-np.abs(a)))
    return _reduce((1.0 - y) * a - log_sigmoid, reduction)


def d_bce_with_logits(a: Array, y: Array, reduction: str) -> Array:
    return (sigmoid(a) - y) * _norm(a.size, reduction)


# Cross-entropy on logits with class-probability targets, one row per sample:
# E = -sum_c y_c log_softmax(x)_c, dE/dx = softmax(x) * sum_c y_c - y.
def _log_softmax(a: Array) -> Array:
    shifted = a - a.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def cross_entropy(a: Array, y: Array, reduction: str) -> float:
    return _reduce(-(_log_softmax(a) * y).sum(axis=1), reduction)


def d_cross_entropy(a: Array, y: Array, reduction: str) -> Array:
    # Back through the mean and the sum first, then through log_softmax, as autograd does.
    dE_dlogp = -y * _norm(a.shape[0], reduction)
    return dE_dlogp - np.exp(_log_softmax(a)) * dE_dlogp.sum(axis=1, keepdims=True)


LOSSES: dict[str, Loss] = {
    loss.name: loss
    for loss in (
        Loss("mse", mse, d_mse),
        Loss("l1", l1, d_l1),
        Loss("bce", bce, d_bce),
        Loss("bce_with_logits", bce_with_logits, d_bce_with_logits),
        Loss("cross_entropy", cross_entropy, d_cross_entropy),
    )
}
REDUCTIONS = ("mean", "sum")
